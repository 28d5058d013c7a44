//! Clusters as the data path holds them: endpoints with their connection
//! pools, the balancer, and the circuit-breaker count.
//!
//! Each endpoint has its own hyper-util legacy `Client` per protocol
//! (HTTP/1.1, HTTP/2 prior knowledge), created on first use, whose connector
//! always dials that endpoint. The request URI then carries the authority the
//! upstream should see (`reviews:9080`), which hyper sends as `Host` /
//! `:authority`, while the pool keeps idle connections per endpoint.
//! `PassthroughCluster` (ORIGINAL_DST) has one client that dials the
//! request's authority itself.
//!
//! A cluster whose definition did not change across a reload keeps its
//! state (pools, counters); a changed cluster keeps the pools of endpoints
//! whose address and connection settings are unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;
use weir_compile::model::{Cluster, Discovery, Str, UpstreamProtocol};
use weir_compile::policy::{ClusterPolicy, UNLIMITED};

use crate::body::ReqBody;
use crate::connect::{Connector, Target};
use crate::lb::Balancer;

pub(crate) type HttpClient = Client<Connector, ReqBody>;

/// Connection settings shared by the clients of one cluster.
#[derive(Clone, Debug, PartialEq)]
struct PoolSettings {
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl PoolSettings {
    fn of(policy: &ClusterPolicy) -> PoolSettings {
        PoolSettings {
            connect_timeout: policy.connection_pool.connect_timeout,
            idle_timeout: policy.connection_pool.idle_timeout,
        }
    }

    fn client(&self, target: Target, http2: bool) -> HttpClient {
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_timer(TokioTimer::new()).timer(TokioTimer::new()).pool_idle_timeout(self.idle_timeout);
        if http2 {
            b.http2_only(true);
        }
        b.build(Connector { target, timeout: self.connect_timeout })
    }
}

/// A pair of lazily built clients (HTTP/1.1 and HTTP/2).
#[derive(Debug, Default)]
struct Clients {
    h1: OnceLock<HttpClient>,
    h2: OnceLock<HttpClient>,
}

impl Clients {
    fn get(&self, settings: &PoolSettings, target: impl FnOnce() -> Target, http2: bool) -> &HttpClient {
        let cell = if http2 { &self.h2 } else { &self.h1 };
        cell.get_or_init(|| settings.client(target(), http2))
    }
}

/// One upstream address of a cluster.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// `ip:port` (`[v6]:port`), as access logs print it.
    pub host: Str,
    pub weight: u32,
    /// Requests in flight, for least-request balancing.
    pub active: AtomicU32,
    /// When this endpoint joined the cluster (slow start).
    #[allow(dead_code)] // read by slow start (lb)
    pub created: std::time::Instant,
    target: Target,
    settings: PoolSettings,
    clients: Clients,
}

impl EndpointState {
    fn new(address: &str, port: u16, weight: u32, settings: PoolSettings) -> EndpointState {
        let (target, host) = match address.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                let a = SocketAddr::new(ip, port);
                (Target::Addr(a), a.to_string())
            }
            Err(_) => (Target::Name(address.into(), port), format!("{address}:{port}")),
        };
        EndpointState {
            host: host.into(),
            weight,
            active: AtomicU32::new(0),
            created: std::time::Instant::now(),
            target,
            settings,
            clients: Clients::default(),
        }
    }

    #[cfg(test)]
    pub fn for_test(host: &str, weight: u32) -> Arc<EndpointState> {
        let (a, p) = host.rsplit_once(':').unwrap();
        let settings = PoolSettings { connect_timeout: Duration::from_secs(1), idle_timeout: Duration::from_secs(60) };
        Arc::new(EndpointState::new(a, p.parse().unwrap(), weight, settings))
    }

    pub fn client(&self, http2: bool) -> &HttpClient {
        self.clients.get(&self.settings, || self.target.clone(), http2)
    }

    /// Whether balancers may pick this endpoint (false while outlier detection ejects it).
    #[allow(dead_code)] // read by the balancers once outlier detection lands
    pub fn is_available(&self) -> bool {
        true
    }

    /// A plain TCP connection to this endpoint (TCP proxying), within the connect timeout.
    pub async fn connect_tcp(&self) -> std::io::Result<TcpStream> {
        crate::connect::tcp(&self.target, self.settings.connect_timeout).await
    }
}

/// A cluster of the snapshot with its runtime state.
#[derive(Debug)]
pub(crate) struct ClusterState {
    pub name: Str,
    /// The service FQDN, its short name and namespace (`reviews`, `default` from
    /// `reviews.default.svc.cluster.local`), and the subset, for metrics.
    pub service: Str,
    pub service_name: Str,
    pub service_namespace: Str,
    pub subset: Str,
    pub protocol: UpstreamProtocol,
    /// Forward to the request's authority (`PassthroughCluster`, NONE resolution without endpoints).
    pub original_dst: bool,
    pub endpoints: Vec<Arc<EndpointState>>,
    pub balancer: Balancer,
    /// Requests in flight, for the circuit breaker (only counted when a limit is set).
    pub active: AtomicU32,
    /// Concurrent requests allowed before `UO`, for HTTP/1.1 and HTTP/2 upstreams.
    limit_h1: u32,
    limit_h2: u32,
    model: Cluster,
    settings: PoolSettings,
    passthrough: Clients,
}

impl ClusterState {
    /// Builds the state of `c`, reusing endpoint pools of `previous` where the
    /// endpoint and its connection settings are unchanged.
    pub fn new(c: &Cluster, previous: Option<&ClusterState>) -> ClusterState {
        let settings = PoolSettings::of(&c.policy);
        let mut old: HashMap<(&str, u16), &Arc<EndpointState>> = HashMap::new();
        if let Some(p) = previous.filter(|p| p.settings == settings) {
            for (e, m) in p.endpoints.iter().zip(p.model.endpoints.iter()) {
                old.insert((&m.address, m.port), e);
            }
        }
        let endpoints: Vec<Arc<EndpointState>> = c
            .endpoints
            .iter()
            .map(|e| match old.get(&(&*e.address, e.port)) {
                Some(prev) if prev.weight == e.weight => Arc::clone(prev),
                _ => Arc::new(EndpointState::new(&e.address, e.port, e.weight, settings.clone())),
            })
            .collect();
        let balancer = Balancer::new(&c.policy.load_balancer.algorithm, &endpoints);
        let (service_name, service_namespace) = split_service(&c.service);
        let pool = &c.policy.connection_pool;
        let limit_h1 = pool.max_requests.min(pool.max_connections.saturating_add(pool.max_pending_requests));
        ClusterState {
            name: c.name.clone(),
            service: c.service.clone(),
            service_name,
            service_namespace,
            subset: c.subset.clone().unwrap_or_else(|| "unknown".into()),
            protocol: c.protocol,
            original_dst: c.discovery == Discovery::OriginalDst && c.endpoints.is_empty(),
            endpoints,
            balancer,
            active: AtomicU32::new(0),
            limit_h1,
            limit_h2: pool.max_requests,
            model: c.clone(),
            settings,
            passthrough: Clients::default(),
        }
    }

    /// Whether this state can serve `c` unchanged.
    pub fn same_as(&self, c: &Cluster) -> bool {
        self.model == *c
    }

    /// The client of an ORIGINAL_DST cluster.
    pub fn passthrough_client(&self, http2: bool) -> &HttpClient {
        self.passthrough.get(&self.settings, || Target::FromUri, http2)
    }

    /// Takes a circuit-breaker slot for a request on `http2`/HTTP/1.1 connections.
    pub fn try_acquire(self: &Arc<ClusterState>, http2: bool) -> Option<ActiveGuard> {
        let limit = if http2 { self.limit_h2 } else { self.limit_h1 };
        if limit == UNLIMITED {
            // Istio's default: no breaker, so no shared counter to bump on every request.
            return Some(ActiveGuard { cluster: None, endpoint: None });
        }
        let before = self.active.fetch_add(1, Ordering::Relaxed);
        if before >= limit {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ActiveGuard { cluster: Some(self.clone()), endpoint: None })
    }
}

/// `reviews.default.svc.cluster.local` -> (`reviews`, `default`); other hosts keep their name, namespace `unknown`.
fn split_service(fqdn: &str) -> (Str, Str) {
    let mut parts = fqdn.splitn(4, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(ns), Some("svc")) => (name.into(), ns.into()),
        _ => (fqdn.into(), "unknown".into()),
    }
}

/// Counts a request as active on its cluster and endpoint until dropped.
#[derive(Debug)]
pub(crate) struct ActiveGuard {
    cluster: Option<Arc<ClusterState>>,
    endpoint: Option<Arc<EndpointState>>,
}

impl ActiveGuard {
    /// Also counts the request on `endpoint` (replacing an earlier attempt's endpoint).
    pub fn set_endpoint(&mut self, endpoint: &Arc<EndpointState>) {
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = self.endpoint.replace(endpoint.clone()) {
            old.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if let Some(c) = &self.cluster {
            c.active.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(e) = &self.endpoint {
            e.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_split() {
        assert_eq!(split_service("reviews.default.svc.cluster.local"), ("reviews".into(), "default".into()));
        assert_eq!(split_service("api.example.com"), ("api.example.com".into(), "unknown".into()));
    }
}
