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

use crate::router::Table;
use crate::upstream::{BuildContext, ClusterState, Clusters};

pub struct Runtime {
    pub version: u64,
    pub snapshot: Arc<Snapshot>,
    /// The Secrets and TLS files this runtime's listeners and clusters were built with.
    pub credentials: Arc<crate::tls::Credentials>,
    /// Unique per built runtime in this process (versions may repeat, e.g. in tests).
    pub(crate) id: u64,
    /// The resolver of host-name endpoints (shared by the runtimes of a process).
    pub(crate) dns: Arc<crate::resolve::Dns>,
    /// DNS answers the DNS clusters were expanded with (see `resolve`).
    pub(crate) resolved: Arc<crate::resolve::Resolved>,
    pub(crate) clusters: Arc<Clusters>,
    tables: Vec<Table>,
    table_index: HashMap<Str, usize>,
    /// Listener name -> the listeners of that name (one per bind scope).
    listeners: HashMap<Str, Vec<RtListener>>,
    /// Service port -> the HTTP route table of the mesh listener on it (explicit proxy).
    mesh_ports: HashMap<u16, usize>,
    /// TCP proxy connections open per cluster (`connectionPool.tcp.maxConnections`), carried over
    /// reloads; only clusters TCP proxying can reach have one.
    tcp_connections: HashMap<Str, Arc<std::sync::atomic::AtomicU32>>,
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
    /// Lower-cased SNI names (exact or `*.suffix`); empty = any.
    server_names: Vec<Str>,
    /// TLS termination: the rustls configuration, or why it could not be built (handshakes are reset).
    pub tls: Option<Result<Arc<rustls::ServerConfig>, crate::tls::server::ServerTlsError>>,
    pub action: ChainAction,
}

impl RtChain {
    fn compile(c: &FilterChain, credentials: &crate::tls::Credentials) -> RtChain {
        let http = matches!(c.action, ChainAction::Http { .. });
        RtChain {
            name: c.name.clone(),
            subnets: parse_subnets(&c.matcher),
            transport: c.matcher.transport,
            server_names: c.matcher.server_names.iter().map(|n| Str::from(n.to_ascii_lowercase())).collect(),
            tls: c.tls.as_ref().map(|t| crate::tls::server::server_config(t, credentials, http)),
            action: c.action.clone(),
        }
    }

    /// Whether the chain terminates TLS.
    pub fn terminates_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether a connection to `local` fits this chain. `tls`: the connection starts with a TLS
    /// handshake; `sni`: the server name of its ClientHello. Chains with server names only take
    /// TLS connections whose SNI matches one of them (exact, or `*.suffix` for any deeper name).
    pub fn fits(&self, local: std::net::IpAddr, tls: bool, sni: Option<&str>) -> bool {
        if !self.subnets.is_empty() && !self.subnets.iter().any(|(net, len)| in_subnet(local, *net, *len)) {
            return false;
        }
        if !self.server_names.is_empty() {
            let Some(sni) = sni.filter(|_| tls) else { return false };
            if !self.server_names.iter().any(|n| server_name_matches(n, sni)) {
                return false;
            }
        }
        match self.transport {
            Some(Transport::Tls) => tls,
            Some(Transport::RawBuffer) => !tls,
            None => true,
        }
    }
}

/// Envoy's `server_names` match: `*.example.com` matches any name below `example.com`.
pub(crate) fn server_name_matches(pattern: &str, sni: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => sni.len() > suffix.len() && sni.ends_with(suffix),
        Some("") => true,
        _ => pattern == sni,
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
        let dns = previous.map_or_else(crate::resolve::Dns::system, |p| p.dns.clone());
        Runtime::with_dns(snapshot, version, previous, credentials, dns)
    }

    /// [`Runtime::with_credentials`] resolving host-name endpoints with `dns`
    /// (DNS answers already known to `previous` are used at once).
    pub fn with_dns(
        snapshot: Snapshot,
        version: u64,
        previous: Option<&Runtime>,
        credentials: crate::tls::Credentials,
        dns: Arc<crate::resolve::Dns>,
    ) -> Runtime {
        let resolved = previous.map(|p| p.resolved.clone()).unwrap_or_default();
        Runtime::build(Arc::new(snapshot), version, previous, Arc::new(credentials), dns, resolved)
    }

    /// This runtime again with new DNS answers: clusters whose endpoints did not change keep their state.
    pub(crate) fn with_resolved(&self, resolved: Arc<crate::resolve::Resolved>) -> Runtime {
        let (snapshot, credentials, dns) = (self.snapshot.clone(), self.credentials.clone(), self.dns.clone());
        Runtime::build(snapshot, self.version, Some(self), credentials, dns, resolved)
    }

    fn build(
        snapshot: Arc<Snapshot>,
        version: u64,
        previous: Option<&Runtime>,
        credentials: Arc<crate::tls::Credentials>,
        dns: Arc<crate::resolve::Dns>,
        resolved: Arc<crate::resolve::Resolved>,
    ) -> Runtime {
        let ctx = Arc::new(BuildContext {
            snapshot: snapshot.clone(),
            credentials: credentials.clone(),
            dns: dns.clone(),
            resolved: resolved.clone(),
        });
        // State in use is carried over now (kept as it is, or rebuilt keeping its statistics,
        // breakers and pools). Built now as well: clusters with TLS origination, so that
        // certificate problems are reported when the configuration is applied, and clusters
        // with slow start, whose endpoints ramp up from when they joined, not from first use.
        let clusters = Arc::new(Clusters::new(ctx.clone(), |c| {
            let old = previous.and_then(|p| p.clusters.built(&c.name));
            let eager = old.is_some() || c.policy.tls.is_some() || c.policy.load_balancer.warmup.is_some();
            eager.then(|| ctx.build(c, old))
        }));
        let tables: Vec<Table> =
            (0..snapshot.route_tables.len()).map(|i| Table::compile(&snapshot, i, &clusters)).collect();
        let table_index = tables.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();

        let mut listeners: HashMap<Str, Vec<RtListener>> = HashMap::new();
        let mut mesh_ports: HashMap<u16, usize> = HashMap::new();
        for l in &snapshot.listeners {
            let chains: Vec<RtChain> = l.filter_chains.iter().map(|c| RtChain::compile(c, &credentials)).collect();
            for c in &chains {
                if let Some(Err(e)) = &c.tls {
                    tracing::warn!(listener = %l.name, chain = %c.name, error = %e, "TLS chain cannot terminate; its handshakes are reset");
                }
            }
            let needs_peek =
                chains.iter().any(|c| c.transport.is_some() || !c.server_names.is_empty() || c.terminates_tls());
            if l.bind == BindScope::Mesh {
                let http = chains.iter().find_map(|c| match &c.action {
                    ChainAction::Http { route_table }
                        if c.subnets.is_empty() && c.server_names.is_empty() && c.tls.is_none() =>
                    {
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
        let proxy_fallback = Table::own(fallback_table(&snapshot), &clusters);
        // Counters only for the clusters TCP proxying can reach (those of TCP routes, or all of them
        // behind AUTO_PASSTHROUGH; most configs have none), kept while a cluster of that name exists
        // (a connection accepted before this reload may still look its cluster up here).
        let chains = || snapshot.listeners.iter().flat_map(|l| &l.filter_chains);
        let tcp_all = chains().any(|c| matches!(c.action, ChainAction::AutoPassthrough));
        let tcp_named: std::collections::HashSet<&str> = chains()
            .filter_map(|c| match &c.action {
                ChainAction::Tcp { routes } => Some(routes),
                _ => None,
            })
            .flatten()
            .flat_map(|r| &r.clusters)
            .map(|w| &*w.cluster)
            .collect();
        let tcp_connections = snapshot
            .clusters
            .iter()
            .filter_map(|c| {
                let old = previous.and_then(|p| p.tcp_connections.get(&c.name));
                let wanted = tcp_all || tcp_named.contains(&*c.name) || old.is_some();
                wanted.then(|| (c.name.clone(), old.cloned().unwrap_or_default()))
            })
            .collect();
        Runtime {
            version,
            snapshot,
            credentials,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            dns,
            resolved,
            clusters,
            tables,
            table_index,
            listeners,
            mesh_ports,
            tcp_connections,
            proxy_fallback,
        }
    }

    /// The count of open TCP proxy connections to `cluster` (shared with the runtimes before and after).
    pub(crate) fn tcp_connections(&self, cluster: &str) -> Option<&Arc<std::sync::atomic::AtomicU32>> {
        self.tcp_connections.get(cluster)
    }

    /// Terminating chains whose TLS configuration could not be built: (listener, chain, error).
    pub fn tls_errors(&self) -> Vec<TlsChainError> {
        let mut out: Vec<TlsChainError> = self
            .listeners
            .iter()
            .flat_map(|(name, ls)| {
                ls.iter().flat_map(move |l| {
                    l.chains.iter().filter_map(move |c| match &c.tls {
                        Some(Err(e)) => {
                            Some(TlsChainError { listener: name.clone(), chain: c.name.clone(), error: e.to_string() })
                        }
                        _ => None,
                    })
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.listener, &a.chain).cmp(&(&b.listener, &b.chain)));
        out
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

    /// The state of cluster `name` for reading, without making it if nothing used it yet
    /// (see [`Clusters::view`]).
    pub(crate) fn cluster_view(&self, name: &str) -> Option<Arc<ClusterState>> {
        self.clusters.view(name)
    }
}

/// A terminating filter chain that resets its handshakes, and why (`/config_dump`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TlsChainError {
    pub listener: Str,
    pub chain: Str,
    pub error: String,
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
    use weir_compile::model::{Cluster, Endpoint};

    fn cluster(name: &str, endpoints: &[(&str, u16)]) -> Cluster {
        let endpoints: Vec<Endpoint> = endpoints.iter().map(|(a, p)| Endpoint::new(*a, *p, 1)).collect();
        Cluster::new_static(name, "a.default.svc.cluster.local", 80, endpoints, Default::default())
    }

    #[test]
    fn cluster_state_survives_reloads() {
        let snap = |eps: &[(&str, u16)]| Snapshot {
            clusters: vec![cluster("a", eps), cluster("b", &[("10.0.0.9", 80)])],
            ..Snapshot::default()
        };
        let first = Runtime::new(snap(&[("10.0.0.1", 80), ("10.0.0.2", 80)]), 1, None);
        let (a1, b1) = (first.cluster("a").unwrap().clone(), first.cluster("b").unwrap().clone());
        let same = Runtime::new(snap(&[("10.0.0.1", 80), ("10.0.0.2", 80)]), 2, Some(&first));
        let a2 = same.clusters.built("a").expect("state in use is carried over at once").clone();
        assert!(Arc::ptr_eq(&a1, &a2), "unchanged cluster: same state");
        let changed = Runtime::new(snap(&[("10.0.0.2", 80), ("10.0.0.3", 80)]), 3, Some(&same));
        let a3 = changed.clusters.built("a").unwrap();
        assert!(!Arc::ptr_eq(&a2, a3));
        assert!(Arc::ptr_eq(&a2.endpoints[1], &a3.endpoints[0]), "an endpoint that stays keeps its pool");
        assert!(Arc::ptr_eq(&b1, changed.cluster("b").unwrap()));
        assert_ne!(first.id, same.id);
    }

    #[test]
    fn cluster_state_is_made_on_first_use() {
        let snap = || Snapshot { clusters: vec![cluster("a", &[("10.0.0.1", 80)])], ..Snapshot::default() };
        let first = Runtime::new(snap(), 1, None);
        assert!(first.clusters.built("a").is_none(), "nothing used the cluster yet");
        let view = first.cluster_view("a").unwrap();
        assert_eq!(view.endpoints.len(), 1);
        assert!(first.clusters.built("a").is_none(), "looking does not keep a state");
        let next = Runtime::new(snap(), 2, Some(&first));
        assert!(next.clusters.built("a").is_none(), "an unused cluster stays unmade across reloads");
        let used = next.cluster("a").unwrap().clone();
        assert!(Arc::ptr_eq(&used, next.cluster("a").unwrap()), "made once");
        assert!(first.cluster("x").is_none());
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
