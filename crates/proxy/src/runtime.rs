//! The executable form of a snapshot: the compiled model plus what the data
//! path needs precomputed (compiled regexes, per-cluster balancer state).
//!
//! Built once per applied configuration, off the request path; a request
//! loads the current `Arc<Runtime>` once and uses it to the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use weir_compile::Snapshot;
use weir_compile::listener::PASSTHROUGH_CLUSTER;
use weir_compile::model::{
    BindScope, ChainAction, ChainMatch, FilterChain, ListenerRole, RouteAction, RouteTable, Str, TcpRoute, Transport,
    VirtualHost,
};

use crate::router::{Clusters, Table};
use crate::upstream::ClusterState;

pub struct Runtime {
    pub version: u64,
    pub snapshot: Arc<Snapshot>,
    /// The Secrets and TLS files this runtime's listeners and clusters were built with.
    pub credentials: Arc<crate::tls::Credentials>,
    /// Unique per built runtime in this process (versions may repeat, e.g. in tests).
    pub(crate) id: u64,
    pub(crate) clusters: Clusters,
    tables: Vec<Table>,
    table_index: HashMap<Str, usize>,
    /// Listener name -> the listeners of that name (one per bind scope).
    listeners: HashMap<Str, Vec<RtListener>>,
    /// Service port -> the HTTP route table of the mesh listener on it (explicit proxy).
    mesh_ports: HashMap<u16, usize>,
    /// Where the explicit proxy sends hosts of ports without a mesh listener:
    /// `allow_any` (PassthroughCluster) or `block_all`.
    proxy_fallback: Table,
}

/// A listener as the accept loop needs it.
pub(crate) struct RtListener {
    pub scope: BindScope,
    pub role: ListenerRole,
    pub chains: Vec<RtChain>,
    /// Whether choosing a chain needs the first bytes of the connection (TLS detection).
    pub needs_peek: bool,
}

pub(crate) struct RtChain {
    pub name: Str,
    subnets: Vec<(std::net::IpAddr, u8)>,
    transport: Option<Transport>,
    server_names: bool,
    pub terminates_tls: bool,
    pub action: ChainAction,
}

impl RtChain {
    fn compile(c: &FilterChain) -> RtChain {
        RtChain {
            name: c.name.clone(),
            subnets: parse_subnets(&c.matcher),
            transport: c.matcher.transport,
            server_names: !c.matcher.server_names.is_empty(),
            terminates_tls: c.tls.is_some(),
            action: c.action.clone(),
        }
    }

    /// Whether a connection to `local` (`tls`: it starts with a TLS handshake) fits this chain.
    /// SNI is not inspected: chains matching server names only take TLS connections.
    pub fn fits(&self, local: std::net::IpAddr, tls: bool) -> bool {
        if !self.subnets.is_empty() && !self.subnets.iter().any(|(net, len)| in_subnet(local, *net, *len)) {
            return false;
        }
        match self.transport {
            Some(Transport::Tls) => tls,
            Some(Transport::RawBuffer) => !tls,
            None => !self.server_names || tls,
        }
    }
}

/// TCP route selection by destination subnet (first fit; a route without subnets fits all).
pub(crate) fn tcp_route(routes: &[TcpRoute], local: std::net::IpAddr) -> Option<&TcpRoute> {
    routes.iter().find(|r| {
        r.destination_subnets.is_empty()
            || r.destination_subnets.iter().filter_map(|s| parse_subnet(s)).any(|(n, l)| in_subnet(local, n, l))
    })
}

fn parse_subnet(s: &str) -> Option<(std::net::IpAddr, u8)> {
    match s.split_once('/') {
        Some((a, l)) => Some((a.parse().ok()?, l.parse().ok()?)),
        None => {
            let ip: std::net::IpAddr = s.parse().ok()?;
            Some((ip, if ip.is_ipv4() { 32 } else { 128 }))
        }
    }
}

fn parse_subnets(m: &ChainMatch) -> Vec<(std::net::IpAddr, u8)> {
    m.destination_subnets.iter().filter_map(|s| parse_subnet(s)).collect()
}

fn in_subnet(ip: std::net::IpAddr, net: std::net::IpAddr, len: u8) -> bool {
    use std::net::IpAddr::{V4, V6};
    match (ip, net) {
        (V4(a), V4(b)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (V6(a), V6(b)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        (V4(a), V6(b)) => b.to_ipv4_mapped().is_some_and(|b| in_subnet(V4(a), V4(b), len.saturating_sub(96))),
        (V6(a), V4(_)) => a.to_ipv4_mapped().is_some_and(|a| in_subnet(V4(a), net, len)),
    }
}

/// Runtime ids start at 1 (0 marks an empty per-connection cache) and stay below 2^40.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Runtime {
    /// Builds a runtime; cluster state (connection pools, balancer counters)
    /// is carried over from `previous` for clusters that did not change.
    pub fn new(snapshot: Snapshot, version: u64, previous: Option<&Runtime>) -> Runtime {
        Runtime::with_credentials(snapshot, version, previous, crate::tls::Credentials::empty())
    }

    /// [`Runtime::new`] with the TLS material the snapshot's listeners and clusters need.
    pub fn with_credentials(
        snapshot: Snapshot,
        version: u64,
        previous: Option<&Runtime>,
        credentials: crate::tls::Credentials,
    ) -> Runtime {
        let credentials = Arc::new(credentials);
        let mut clusters: Clusters = HashMap::with_capacity(snapshot.clusters.len());
        for c in &snapshot.clusters {
            let old = previous.and_then(|p| p.clusters.get(&c.name));
            let state = match old {
                Some(o) if o.same_as(c) => Arc::clone(o),
                _ => Arc::new(ClusterState::new(c, old.map(|o| &**o))),
            };
            clusters.insert(c.name.clone(), state);
        }
        let tables: Vec<Table> = snapshot.route_tables.iter().map(|t| Table::compile(t, &clusters)).collect();
        let table_index = tables.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();

        let mut listeners: HashMap<Str, Vec<RtListener>> = HashMap::new();
        let mut mesh_ports: HashMap<u16, usize> = HashMap::new();
        for l in &snapshot.listeners {
            let chains: Vec<RtChain> = l.filter_chains.iter().map(RtChain::compile).collect();
            let needs_peek = chains.iter().any(|c| c.transport.is_some() || c.server_names || c.terminates_tls);
            if l.bind == BindScope::Mesh {
                let http = chains.iter().find_map(|c| match &c.action {
                    ChainAction::Http { route_table } if c.subnets.is_empty() && !c.server_names => {
                        tables.iter().position(|t| t.name == *route_table)
                    }
                    _ => None,
                });
                if let Some(t) = http {
                    mesh_ports.entry(l.port).or_insert(t);
                }
            }
            listeners.entry(l.name.clone()).or_default().push(RtListener {
                scope: l.bind,
                role: l.role,
                chains,
                needs_peek,
            });
        }
        let proxy_fallback = Table::compile(&fallback_table(&snapshot), &clusters);
        Runtime {
            version,
            snapshot: Arc::new(snapshot),
            credentials,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            clusters,
            tables,
            table_index,
            listeners,
            mesh_ports,
            proxy_fallback,
        }
    }

    pub(crate) fn listener(&self, scope: BindScope, name: &str) -> Option<&RtListener> {
        self.listeners.get(name)?.iter().find(|l| l.scope == scope)
    }

    pub(crate) fn table_index(&self, name: &str) -> Option<(usize, &Table)> {
        self.table_index.get(name).map(|i| (*i, &self.tables[*i]))
    }

    pub(crate) fn table_at(&self, i: usize) -> Option<&Table> {
        self.tables.get(i)
    }

    /// The route table the explicit proxy uses for a request to `port`.
    pub(crate) fn proxy_table(&self, port: u16) -> &Table {
        self.mesh_ports.get(&port).map_or(&self.proxy_fallback, |i| &self.tables[*i])
    }

    pub(crate) fn cluster(&self, name: &str) -> Option<&Arc<ClusterState>> {
        self.clusters.get(name)
    }
}

/// Istio's catch-all virtual host for unknown hosts: `allow_any` when the
/// snapshot has `PassthroughCluster`, else `block_all` (502).
fn fallback_table(s: &Snapshot) -> RouteTable {
    use weir_compile::listener::{catch_all_route, single_cluster};
    let (name, action) = if s.cluster(PASSTHROUGH_CLUSTER).is_some() {
        ("allow_any", RouteAction::Forward { clusters: single_cluster(PASSTHROUGH_CLUSTER.into()), rewrite: None })
    } else {
        ("block_all", RouteAction::DirectResponse { status: 502, body: None })
    };
    RouteTable {
        name: "explicit_proxy".into(),
        virtual_hosts: vec![VirtualHost {
            name: name.into(),
            domains: vec!["*".into()],
            routes: vec![catch_all_route(name, action)],
            require_tls: false,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_compile::model::{Cluster, Discovery, Endpoint, UpstreamProtocol};

    fn cluster(name: &str, endpoints: &[(&str, u16)]) -> Cluster {
        Cluster {
            name: name.into(),
            service: "a.default.svc.cluster.local".into(),
            port: 80,
            subset: None,
            discovery: Discovery::Static,
            protocol: UpstreamProtocol::Http1,
            endpoints: endpoints
                .iter()
                .map(|(a, p)| Endpoint {
                    address: (*a).into(),
                    port: *p,
                    weight: 1,
                    locality: None,
                    network: None,
                    labels: Arc::new(vec![]),
                })
                .collect(),
            policy: Arc::new(Default::default()),
            destination_rules: vec![],
        }
    }

    #[test]
    fn cluster_state_survives_reloads() {
        let snap = |eps: &[(&str, u16)]| Snapshot {
            clusters: vec![cluster("a", eps), cluster("b", &[("10.0.0.9", 80)])],
            ..Snapshot::default()
        };
        let first = Runtime::new(snap(&[("10.0.0.1", 80), ("10.0.0.2", 80)]), 1, None);
        let same = Runtime::new(snap(&[("10.0.0.1", 80), ("10.0.0.2", 80)]), 2, Some(&first));
        assert!(Arc::ptr_eq(&first.clusters["a"], &same.clusters["a"]), "unchanged cluster: same state");
        let changed = Runtime::new(snap(&[("10.0.0.2", 80), ("10.0.0.3", 80)]), 3, Some(&same));
        assert!(!Arc::ptr_eq(&same.clusters["a"], &changed.clusters["a"]));
        assert!(
            Arc::ptr_eq(&same.clusters["a"].endpoints[1], &changed.clusters["a"].endpoints[0]),
            "an endpoint that stays keeps its pool"
        );
        assert!(Arc::ptr_eq(&first.clusters["b"], &changed.clusters["b"]));
        assert_ne!(first.id, same.id);
    }

    #[test]
    fn subnets() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(in_subnet(ip("10.1.2.3"), ip("10.0.0.0"), 8));
        assert!(!in_subnet(ip("11.1.2.3"), ip("10.0.0.0"), 8));
        assert!(in_subnet(ip("10.1.2.3"), ip("0.0.0.0"), 0));
        assert!(in_subnet(ip("::ffff:10.1.2.3"), ip("10.1.2.3"), 32));
        assert_eq!(parse_subnet("10.0.0.1"), Some((ip("10.0.0.1"), 32)));
    }
}
