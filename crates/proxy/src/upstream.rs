//! Clusters as the data path holds them: endpoints with their connection
//! pools and outlier state, the balancer, and the circuit breakers.
//!
//! Each endpoint has its own [`Pool`] (HTTP/1.1 and HTTP/2 connections to
//! that address, see `pool`), whose connector always dials that endpoint.
//! The request URI carries the authority the upstream should see
//! (`reviews:9080`), sent as `Host` / `:authority`. `PassthroughCluster`
//! (ORIGINAL_DST) has one pool per destination authority, whose connector
//! dials the request's authority itself.
//!
//! The cluster's [`Breakers`] (circuit breakers) are shared by its endpoint
//! pools. Its [`ClusterStats`] (Envoy-named counters, `/stats`) live as long
//! as a cluster of that name does. A cluster whose definition did not
//! change across a reload keeps its state; a changed cluster keeps its
//! statistics, and its breakers and the pools of endpoints whose address and
//! connection settings are unchanged when its limits are unchanged too.
//!
//! Outlier detection (`outlier`) is fed by [`ClusterState::observe`] (the
//! request path) and [`ClusterState::report_connect`] (TCP proxying); the
//! balancers ask [`EndpointState::is_available`]. An endpoint's outlier state
//! stays with it across reloads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_compile::model::{Cluster, Discovery, NodeSummary, Str, UpstreamProtocol};

use crate::connect::{Connector, Stream, Target};
use crate::lb::Balancer;
use crate::outlier::{Detector, HostState, Observed};
use crate::pool::{Breakers, ClusterStats, ConnSettings, Pool};
use crate::resolve::Dns;
use crate::tls::Credentials;
use crate::tls::client::{Alpn, ClientTls};

/// Connection settings shared by the pools of one cluster.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PoolSettings {
    connect_timeout: Duration,
    conn: ConnSettings,
    dns: Arc<Dns>,
    /// TLS origination (`None`: plaintext).
    tls: Option<Arc<ClientTls>>,
    keepalive: Option<weir_compile::policy::TcpKeepalive>,
}

impl PoolSettings {
    /// The settings of cluster `c`: its connection pool policy, TLS origination from `credentials`.
    pub(crate) fn of(c: &Cluster, credentials: &Credentials, dns: &Arc<Dns>) -> PoolSettings {
        let tls = ClientTls::build(c.policy.tls.as_deref(), credentials).map(Arc::new);
        if let Some(e) = tls.as_ref().and_then(|t| t.error()) {
            tracing::warn!(cluster = %c.name, "upstream TLS unavailable, connections will fail: {e}");
        }
        PoolSettings {
            connect_timeout: c.policy.connection_pool.connect_timeout,
            conn: ConnSettings::of(&c.policy.connection_pool),
            dns: dns.clone(),
            tls,
            keepalive: c.policy.connection_pool.tcp_keepalive.clone(),
        }
    }

    /// The connector of a pool dialling `target` for HTTP/2 or HTTP/1.1 (the ALPN offered).
    fn connector(&self, target: Target, http2: bool) -> Connector {
        let alpn = if http2 { Alpn::Http2 } else { Alpn::Http1 };
        Connector {
            target,
            timeout: self.connect_timeout,
            tls: self.tls.clone().map(|t| (t, alpn)),
            keepalive: self.keepalive.clone(),
        }
    }

    fn pool(&self, target: Target, breakers: &Arc<Breakers>) -> Arc<Pool> {
        let connectors = [self.connector(target.clone(), false), self.connector(target, true)];
        Arc::new(Pool::new(connectors, self.conn.clone(), breakers.clone()))
    }
}

/// The process's resolver (one instance, so pools compare equal across reloads).
fn system_dns() -> Arc<Dns> {
    static DNS: std::sync::OnceLock<Arc<Dns>> = std::sync::OnceLock::new();
    DNS.get_or_init(Dns::system).clone()
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
    pub created: std::time::Instant,
    target: Target,
    /// The cluster's connection settings, shared by its endpoints.
    settings: Arc<PoolSettings>,
    /// Made on first use: most endpoints of a large config never carry a request, and a pool
    /// is several times the size of the rest of the endpoint.
    pool: std::sync::OnceLock<Arc<Pool>>,
    /// The cluster's circuit breakers, for the pool.
    breakers: Arc<Breakers>,
    /// Outlier detection state (ejection, consecutive errors), kept across reloads.
    health: Arc<HostState>,
}

impl EndpointState {
    fn new(
        address: &str,
        port: u16,
        weight: u32,
        settings: Arc<PoolSettings>,
        breakers: &Arc<Breakers>,
    ) -> EndpointState {
        let (target, host) = match address.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                let a = SocketAddr::new(ip, port);
                (Target::Addr(a), a.to_string())
            }
            Err(_) => (Target::Name(address.into(), port, settings.dns.clone()), format!("{address}:{port}")),
        };
        EndpointState {
            host: host.into(),
            weight,
            active: AtomicU32::new(0),
            created: std::time::Instant::now(),
            target,
            settings,
            pool: std::sync::OnceLock::new(),
            breakers: breakers.clone(),
            health: Arc::default(),
        }
    }

    #[cfg(test)]
    pub fn for_test(host: &str, weight: u32) -> Arc<EndpointState> {
        let (a, p) = host.rsplit_once(':').unwrap();
        let policy = weir_compile::policy::ClusterPolicy::default();
        let settings = PoolSettings {
            connect_timeout: Duration::from_secs(1),
            conn: ConnSettings::of(&policy.connection_pool),
            dns: system_dns(),
            tls: None,
            keepalive: None,
        };
        let breakers = Arc::new(Breakers::new(&policy.connection_pool, Arc::default()));
        Arc::new(EndpointState::new(a, p.parse().unwrap(), weight, Arc::new(settings), &breakers))
    }

    /// The connection pool to this endpoint (made on first use).
    pub fn pool(&self) -> &Arc<Pool> {
        self.pool.get_or_init(|| self.settings.pool(self.target.clone(), &self.breakers))
    }

    /// Connections to this endpoint, open or being established (0 before its pool is made).
    pub fn open_connections(&self) -> u32 {
        self.pool.get().map_or(0, |p| p.open_connections())
    }

    /// Whether balancers may pick this endpoint (false while outlier detection ejects it).
    /// One atomic load while it is not ejected.
    pub fn is_available(&self) -> bool {
        self.health.is_available()
    }

    /// Ejections of this endpoint so far.
    pub fn ejections(&self) -> u64 {
        self.health.ejections()
    }

    /// A connection to this endpoint for TCP proxying, within the connect timeout.
    pub async fn connect_tcp(&self) -> std::io::Result<Stream> {
        let s = &self.settings;
        crate::connect::tcp(&self.target, s.connect_timeout, s.tls.as_ref(), s.keepalive.as_ref()).await
    }
}

/// What the clusters of one runtime are built from.
#[derive(Debug)]
pub(crate) struct BuildContext {
    pub snapshot: Arc<weir_compile::Snapshot>,
    pub credentials: Arc<Credentials>,
    pub dns: Arc<Dns>,
    /// DNS answers the DNS clusters are expanded with (see `resolve`).
    pub resolved: Arc<crate::resolve::Resolved>,
}

impl BuildContext {
    /// The state of `c`: `previous` itself when nothing changed, else a new state that keeps
    /// what `previous` allows (see [`ClusterState::with_settings`]).
    pub fn build(&self, c: &Cluster, previous: Option<&Arc<ClusterState>>) -> Arc<ClusterState> {
        // DNS clusters balance over the addresses their names resolved to.
        let expanded = crate::resolve::expand(c, &self.resolved);
        let c = expanded.as_ref().unwrap_or(c);
        let settings = PoolSettings::of(c, &self.credentials, &self.dns);
        match previous {
            Some(old) if old.same_as(c, &settings) => Arc::clone(old),
            _ => Arc::new(ClusterState::with_settings(c, previous.map(|o| &**o), &self.snapshot.node, settings)),
        }
    }
}

/// The clusters of a runtime, in the snapshot's order (by name). The state of each (endpoints,
/// balancer, breakers, statistics) is made when a request or connection first needs it: a
/// gateway or sidecar that sees thousands of services usually sends traffic to a few, and the
/// state of a cluster is several times the size of its model. State in use is carried over
/// reloads (see `Runtime::build`).
#[derive(Debug, Default)]
pub(crate) struct Clusters {
    /// `None`: no clusters (tests).
    ctx: Option<Arc<BuildContext>>,
    /// One per `ctx.snapshot.clusters`, same order.
    states: Vec<std::sync::OnceLock<Arc<ClusterState>>>,
}

impl Clusters {
    /// All of `ctx.snapshot`'s clusters; `state` gives the state of those that have one now.
    pub fn new(ctx: Arc<BuildContext>, mut state: impl FnMut(&Cluster) -> Option<Arc<ClusterState>>) -> Clusters {
        let states =
            ctx.snapshot.clusters.iter().map(|c| state(c).map(std::sync::OnceLock::from).unwrap_or_default()).collect();
        Clusters { ctx: Some(ctx), states }
    }

    fn position(&self, name: &str) -> Option<(&Arc<BuildContext>, usize)> {
        let ctx = self.ctx.as_ref()?;
        let i = ctx.snapshot.clusters.binary_search_by(|c| (*c.name).cmp(name)).ok()?;
        Some((ctx, i))
    }

    /// The state of the cluster at `i` of `ctx.snapshot`, made now if this is its first use.
    fn made(&self, ctx: &BuildContext, i: usize) -> &Arc<ClusterState> {
        self.states[i].get_or_init(|| ctx.build(&ctx.snapshot.clusters[i], None))
    }

    /// Cluster `name`, for routes to hold.
    pub fn slot(self: &Arc<Self>, name: &str) -> Option<ClusterSlot> {
        let (_, index) = self.position(name)?;
        Some(ClusterSlot { all: self.clone(), index })
    }

    /// The state of cluster `name`, made now if this is its first use.
    pub fn get(&self, name: &str) -> Option<&Arc<ClusterState>> {
        let (ctx, i) = self.position(name)?;
        Some(self.made(ctx, i))
    }

    /// The state of cluster `name` if something used it already.
    pub fn built(&self, name: &str) -> Option<&Arc<ClusterState>> {
        let (_, i) = self.position(name)?;
        self.states[i].get()
    }

    /// The state of cluster `name` for reading (admin pages): before its first use, a fresh
    /// state that is not kept (zero counters, idle endpoints), so looking does not cost the
    /// memory of using.
    pub fn view(&self, name: &str) -> Option<Arc<ClusterState>> {
        let (ctx, i) = self.position(name)?;
        Some(match self.states[i].get() {
            Some(s) => s.clone(),
            None => ctx.build(&ctx.snapshot.clusters[i], None),
        })
    }
}

/// One cluster of a runtime's [`Clusters`], as a route holds it.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSlot {
    all: Arc<Clusters>,
    index: usize,
}

impl ClusterSlot {
    /// The cluster's state, made now if this is its first use.
    pub fn get(&self) -> &Arc<ClusterState> {
        match &self.all.ctx {
            Some(ctx) => self.all.made(ctx, self.index),
            // Slots are made by `Clusters::slot`, which needs a snapshot.
            None => unreachable!("a cluster slot without a snapshot"),
        }
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
    pub breakers: Arc<Breakers>,
    pub stats: Arc<ClusterStats>,
    pub outlier: Option<Arc<Detector>>,
    model: Cluster,
    settings: PoolSettings,
    /// ORIGINAL_DST: one pool per destination authority.
    passthrough: Mutex<HashMap<Str, Arc<Pool>>>,
}

/// Destinations an ORIGINAL_DST cluster keeps pools for; beyond it the map starts over.
const MAX_PASSTHROUGH_POOLS: usize = 1024;

impl ClusterState {
    /// Builds the state of `c`, reusing the statistics of `previous`, and its
    /// breakers and endpoint pools where the limits, the endpoint and its
    /// connection settings are unchanged.
    #[allow(dead_code)] // tests and benchmarks
    pub fn new(c: &Cluster, previous: Option<&ClusterState>, node: &NodeSummary) -> ClusterState {
        let settings = PoolSettings::of(c, &Credentials::empty(), &system_dns());
        ClusterState::with_settings(c, previous, node, settings)
    }

    /// [`ClusterState::new`] with the cluster's connection settings (TLS material, resolver) given.
    pub fn with_settings(
        c: &Cluster,
        previous: Option<&ClusterState>,
        node: &NodeSummary,
        settings: PoolSettings,
    ) -> ClusterState {
        let pool_policy = &c.policy.connection_pool;
        let stats = previous.map(|p| p.stats.clone()).unwrap_or_default();
        let reuse = previous.filter(|p| p.settings == settings && p.breakers.same_limits(pool_policy));
        let breakers = match reuse {
            Some(p) => p.breakers.clone(),
            None => Arc::new(Breakers::new(pool_policy, stats.clone())),
        };
        let mut old: HashMap<(&str, u16), &Arc<EndpointState>> = HashMap::new();
        if let Some(p) = reuse {
            for (e, m) in p.endpoints.iter().zip(p.model.endpoints.iter()) {
                old.insert((&m.address, m.port), e);
            }
        }
        let shared = Arc::new(settings.clone());
        let endpoints: Vec<Arc<EndpointState>> = c
            .endpoints
            .iter()
            .map(|e| match old.get(&(&*e.address, e.port)) {
                Some(prev) if prev.weight == e.weight => Arc::clone(prev),
                _ => Arc::new(EndpointState::new(&e.address, e.port, e.weight, shared.clone(), &breakers)),
            })
            .collect();
        let outlier =
            c.policy.outlier_detection.as_ref().map(|o| {
                Arc::new(Detector::new(o, endpoints.iter().map(|e| e.health.clone()).collect(), stats.clone()))
            });
        if outlier.is_none() {
            for e in &endpoints {
                e.health.reset();
            }
        }
        let balancer = Balancer::new(c, node, &endpoints);
        let (service_name, service_namespace) = split_service(&c.service);
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
            breakers,
            stats,
            outlier,
            model: c.clone(),
            settings,
            passthrough: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this state can serve `c` with `settings` unchanged.
    pub fn same_as(&self, c: &Cluster, settings: &PoolSettings) -> bool {
        self.model == *c && self.settings == *settings
    }

    /// Feeds outlier detection with how an attempt to `endpoint` (one of ours) ended.
    pub fn observe(&self, endpoint: &EndpointState, what: Observed) {
        if let Some(d) = &self.outlier {
            d.observe(&endpoint.health, what);
        }
    }

    /// Outlier detection for TCP proxying: whether a connection to `endpoint` was established
    /// (a failure is a locally originated error; a success resets that count).
    pub fn report_connect(&self, endpoint: &EndpointState, ok: bool) {
        self.observe(endpoint, if ok { Observed::Connected } else { Observed::ConnectFailed });
    }

    /// Counts a TCP proxy connection refused by `tcp.maxConnections` (`upstream_cx_overflow`,
    /// `weir.overflow.max_connections`).
    pub fn tcp_overflowed(&self) {
        self.stats.upstream_cx_overflow.fetch_add(1, Ordering::Relaxed);
        self.stats.overflowed(crate::pool::Limit::Connections);
    }

    /// The pool of an ORIGINAL_DST cluster for `authority`.
    pub fn passthrough_pool(&self, authority: &str) -> Arc<Pool> {
        let mut pools = self.passthrough.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pools.get(authority) {
            return p.clone();
        }
        if pools.len() >= MAX_PASSTHROUGH_POOLS {
            pools.clear();
        }
        let p = self.settings.pool(Target::FromUri(self.settings.dns.clone()), &self.breakers);
        pools.insert(authority.into(), p.clone());
        p
    }

    /// A guard counting a request or connection as active (on its endpoint once set).
    pub fn guard(&self) -> ActiveGuard {
        ActiveGuard::default()
    }

    /// The guard of a TCP proxy connection. `maxConnections` for TCP proxying is
    /// enforced by the TCP proxy itself, so this never refuses.
    pub fn try_acquire(self: &Arc<ClusterState>, _http2: bool) -> Option<ActiveGuard> {
        Some(self.guard())
    }
}

/// Whether a statistic is a counter or a gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatKind {
    Counter,
    Gauge,
}

impl ClusterState {
    /// The cluster's statistics with Envoy's names (`upstream_rq_pending_overflow`,
    /// `circuit_breakers.default.rq_pending_open`, `outlier_detection.ejections_active`, ...)
    /// and weir's overflow counts by limit (`weir.overflow.max_pending_requests`).
    pub fn stats(&self) -> Vec<(String, u64, StatKind)> {
        use StatKind::{Counter, Gauge};
        let s = &*self.stats;
        let b = &*self.breakers;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let cx = u64::from(b.connections.load(Ordering::Relaxed));
        let pending = u64::from(b.pending.load(Ordering::Relaxed));
        let requests = u64::from(b.requests.load(Ordering::Relaxed));
        let retries = u64::from(b.retries.load(Ordering::Relaxed));
        let mut rows: Vec<(String, u64, StatKind)> = Vec::with_capacity(40);
        let mut row = |name: &str, v: u64, k: StatKind| rows.push((name.to_string(), v, k));
        row("upstream_cx_total", get(&s.upstream_cx_total), Counter);
        row("upstream_cx_active", cx, Gauge);
        row("upstream_cx_connect_fail", get(&s.upstream_cx_connect_fail), Counter);
        row("upstream_cx_connect_timeout", get(&s.upstream_cx_connect_timeout), Counter);
        row("upstream_cx_overflow", get(&s.upstream_cx_overflow), Counter);
        row("upstream_cx_idle_timeout", get(&s.upstream_cx_idle_timeout), Counter);
        row("upstream_cx_max_requests", get(&s.upstream_cx_max_requests), Counter);
        row("upstream_cx_max_duration_reached", get(&s.upstream_cx_max_duration_reached), Counter);
        row("upstream_rq_pending_total", get(&s.upstream_rq_pending_total), Counter);
        row("upstream_rq_pending_active", pending, Gauge);
        row("upstream_rq_pending_overflow", get(&s.upstream_rq_pending_overflow), Counter);
        row("upstream_rq_retry", get(&s.upstream_rq_retry), Counter);
        row("upstream_rq_retry_overflow", get(&s.upstream_rq_retry_overflow), Counter);
        for (name, used, limit) in [
            ("cx", cx, b.max_connections),
            ("rq_pending", pending, b.max_pending),
            ("rq", requests, b.max_requests),
            ("rq_retry", retries, b.max_retries),
        ] {
            let limit = u64::from(limit);
            row(&format!("circuit_breakers.default.{name}_open"), u64::from(used >= limit), Gauge);
            let remaining = match name {
                "cx" => "remaining_cx",
                "rq_pending" => "remaining_pending",
                "rq" => "remaining_rq",
                _ => "remaining_retries",
            };
            row(&format!("circuit_breakers.default.{remaining}"), limit.saturating_sub(used), Gauge);
        }
        let o = &s.outlier;
        let active = self.outlier.as_ref().map_or(0, |d| d.ejected() as u64);
        row("outlier_detection.ejections_active", active, Gauge);
        row("outlier_detection.ejections_enforced_total", get(&o.ejections_enforced_total), Counter);
        row(
            "outlier_detection.ejections_enforced_consecutive_5xx",
            get(&o.ejections_enforced_consecutive_5xx),
            Counter,
        );
        row(
            "outlier_detection.ejections_enforced_consecutive_gateway_failure",
            get(&o.ejections_enforced_consecutive_gateway_failure),
            Counter,
        );
        row(
            "outlier_detection.ejections_enforced_consecutive_local_origin_failure",
            get(&o.ejections_enforced_consecutive_local_origin_failure),
            Counter,
        );
        row("outlier_detection.ejections_overflow", get(&o.ejections_overflow), Counter);
        for limit in crate::pool::Limit::ALL {
            row(&format!("weir.overflow.{}", limit.envoy_name()), s.overflow_count(limit), Counter);
        }
        rows
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

/// Counts a request as active on its endpoint, and holds its pool lease and
/// retry slot, until dropped (when the response is complete).
#[derive(Debug, Default)]
pub(crate) struct ActiveGuard {
    endpoint: Option<Arc<EndpointState>>,
    lease: Option<crate::pool::Lease>,
    retry: Option<crate::pool::RetrySlot>,
}

impl ActiveGuard {
    /// Also counts the request on `endpoint` (replacing an earlier attempt's endpoint).
    pub fn set_endpoint(&mut self, endpoint: &Arc<EndpointState>) {
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = self.endpoint.replace(endpoint.clone()) {
            old.active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Holds the pool lease of the attempt whose response is being forwarded.
    pub fn set_lease(&mut self, lease: crate::pool::Lease) {
        self.lease = Some(lease);
    }

    /// Holds a retry slot (`maxRetries`) for the rest of the request.
    pub fn set_retry(&mut self, slot: crate::pool::RetrySlot) {
        self.retry = Some(slot);
    }

    /// Whether a retry slot is held already.
    pub fn has_retry(&self) -> bool {
        self.retry.is_some()
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
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
