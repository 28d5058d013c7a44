//! Helpers shared by the two listener builders (`gateway`, `outbound`):
//! filter-chain match comparison (Istio's `filterChainOpts.conflictsWith`),
//! the order chains are tried in, and the catch-all pieces (passthrough and
//! black-hole clusters and routes).

use std::net::IpAddr;
use std::sync::Arc;

use crate::model::{
    ChainMatch, Cluster, Discovery, FilterChain, PathMatch, Route, RouteAction, RouteMatch, Str, TcpRoute,
    UpstreamProtocol, WeightedCluster,
};

/// Istio's cluster for ALLOW_ANY traffic: forward to the address the client dialed.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Istio's cluster for REGISTRY_ONLY TCP traffic to unknown destinations: no endpoints.
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// Name of the filter chain that takes connections no other chain matched.
pub const PASSTHROUGH_CHAIN: &str = "PassthroughFilterChain";

/// `0.0.0.0_8080` or `<bind>_8080` (Istio `getListenerName`).
pub fn listener_name(bind: Option<&str>, port: u16) -> Str {
    format!("{}_{port}", bind.filter(|b| !b.is_empty()).unwrap_or("0.0.0.0")).into()
}

/// The server names a chain matches for `sni` hosts: empty (any) when one of them is `*`.
pub fn server_names(sni: &[Str]) -> Vec<Str> {
    if sni.iter().any(|h| &**h == "*") {
        return Vec::new();
    }
    let mut out = sni.to_vec();
    out.sort();
    out.dedup();
    out
}

/// A CIDR or IP normalized for comparison (`10.1.2.3` -> `10.1.2.3/32`,
/// `10.1.2.3/8` -> `10.0.0.0/8`); `None` for unparsable text and unspecified addresses.
pub fn normalize_cidr(s: &str) -> Option<String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, Some(l.parse::<u8>().ok()?)),
        None => (s.parse::<IpAddr>().ok()?, None),
    };
    if addr.is_unspecified() {
        return None;
    }
    Some(match addr {
        IpAddr::V4(v4) => {
            let len = len.unwrap_or(32).min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            format!("{}/{len}", std::net::Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let len = len.unwrap_or(128).min(128);
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            format!("{}/{len}", std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
    })
}

/// `normalize_cidr(s).is_some()` without formatting the normalized text.
pub fn is_cidr(s: &str) -> bool {
    let addr = match s.split_once('/') {
        Some((a, l)) => a.parse::<IpAddr>().ok().filter(|_| l.parse::<u8>().is_ok()),
        None => s.parse::<IpAddr>().ok(),
    };
    addr.is_some_and(|a| !a.is_unspecified())
}

/// The prefix length of a CIDR or IP (`32`/`128` for a plain address), for ordering.
fn prefix_len(s: &str) -> u8 {
    match s.split_once('/') {
        Some((_, l)) => l.parse().unwrap_or(0),
        None if s.contains(':') => 128,
        None => 32,
    }
}

/// What makes two chain matches select exactly the same connections (Istio
/// `conflictsWith`): the transport, the SNI set ignoring `*`, and the
/// destination prefixes after masking. Envoy rejects chains with equal keys;
/// weir keeps the first and reports the later one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MatchKey {
    /// 0: any, 1: TLS, 2: raw bytes (`Transport` is not `Hash`).
    transport: u8,
    server_names: Vec<Str>,
    prefixes: Vec<String>,
}

impl MatchKey {
    pub fn of(m: &ChainMatch) -> MatchKey {
        let mut server_names: Vec<Str> = m.server_names.iter().filter(|s| &***s != "*").cloned().collect();
        server_names.sort_unstable();
        server_names.dedup();
        let mut prefixes: Vec<String> = m.destination_subnets.iter().filter_map(|s| normalize_cidr(s)).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        let transport = match m.transport {
            None => 0,
            Some(crate::model::Transport::Tls) => 1,
            Some(crate::model::Transport::RawBuffer) => 2,
        };
        MatchKey { transport, server_names, prefixes }
    }
}

/// Whether two chain matches select exactly the same connections (see [`MatchKey`]).
pub fn matches_conflict(a: &ChainMatch, b: &ChainMatch) -> bool {
    MatchKey::of(a) == MatchKey::of(b)
}

/// Orders filter chains so that trying them in order and taking the first
/// that fits gives Envoy's answer, which picks the most specific match:
/// destination prefix first (longest wins), then server name (exact names
/// before wildcards, longer wildcards first), then transport protocol.
/// Chains that tie keep their relative order.
pub fn order_chains(chains: &mut [FilterChain]) {
    chains.sort_by_key(|c| specificity(&c.matcher));
}

/// Sort key: smaller is more specific.
fn specificity(m: &ChainMatch) -> (bool, std::cmp::Reverse<u8>, bool, bool, std::cmp::Reverse<usize>, bool) {
    let longest_prefix = m.destination_subnets.iter().map(|s| prefix_len(s)).max().unwrap_or(0);
    let has_wildcard = m.server_names.iter().any(|n| n.starts_with('*'));
    // Among chains with wildcard names, the one whose shortest wildcard is longest goes first.
    let wildcard_len = m.server_names.iter().filter(|n| n.starts_with('*')).map(|n| n.len()).min().unwrap_or(0);
    (
        m.destination_subnets.is_empty(),
        std::cmp::Reverse(longest_prefix),
        m.server_names.is_empty(),
        has_wildcard,
        std::cmp::Reverse(wildcard_len),
        m.transport.is_none(),
    )
}

/// A catch-all prefix `/` route named `name` with `action`, no timeout and no retries.
pub fn catch_all_route(name: &str, action: RouteAction) -> Route {
    Route {
        name: name.into(),
        matcher: RouteMatch { path: Some(PathMatch::Prefix("/".into())), ..RouteMatch::default() },
        action,
        timeout: None,
        retries: None,
        fault: None,
        mirrors: Vec::new(),
        cors: None,
        request_headers: Default::default(),
        response_headers: Default::default(),
        origin: None,
    }
}

/// A single-cluster weighted destination.
pub fn single_cluster(cluster: Str) -> Vec<WeightedCluster> {
    vec![WeightedCluster {
        cluster,
        weight: 100,
        request_headers: Default::default(),
        response_headers: Default::default(),
    }]
}

/// A TCP route to one cluster, for every destination.
pub fn tcp_route_to(cluster: Str) -> TcpRoute {
    TcpRoute { destination_subnets: Vec::new(), clusters: single_cluster(cluster), origin: None }
}

/// Istio's `PassthroughCluster` (ORIGINAL_DST) or `BlackHoleCluster` (no endpoints).
pub fn special_cluster(name: &str, mesh: &crate::mesh::MeshConfig) -> Cluster {
    let passthrough = name == PASSTHROUGH_CLUSTER;
    Cluster {
        name: name.into(),
        service: name.into(),
        port: 0,
        subset: None,
        discovery: if passthrough { Discovery::OriginalDst } else { Discovery::Static },
        protocol: if passthrough { UpstreamProtocol::Auto } else { UpstreamProtocol::Tcp },
        endpoints: Arc::from(Vec::new()),
        policy: Arc::new(crate::policy::ClusterPolicy::default_for(mesh)),
        destination_rules: Vec::new(),
    }
}

/// Test helpers shared by the gateway and outbound tests: compile YAML for a node and find things.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeMap;

    use crate::message::Messages;
    use crate::model::{ChainAction, Listener, Route, RouteAction, RouteTable, Snapshot, VirtualHost};
    use crate::{ConfigStore, Input, MeshConfig, Node, Registry, Role};

    /// Compiles `yaml` (objects must load and validate cleanly) for `node`; registry messages are included.
    pub fn compile_with(yaml: &str, node: &Node, mesh: &MeshConfig) -> Snapshot {
        let loaded = weir_api::load_str(yaml, "test.yaml", &weir_api::LoadOptions::default());
        assert!(loaded.errors.is_empty() && loaded.problems.is_empty(), "{:?} {:?}", loaded.errors, loaded.problems);
        for o in &loaded.objects {
            let report = weir_api::validate(o);
            assert!(!report.has_errors(), "{} is invalid: {:?}", o.key(), report.findings);
        }
        let store = ConfigStore::new(loaded.objects);
        let mut messages = Messages::default();
        let registry = Registry::from_config(&store, mesh, node, &mut messages);
        let mut snap = crate::compile(Input { config: &store, registry: &registry, mesh }, node);
        snap.messages.extend(messages.into_vec());
        snap
    }

    pub fn compile(yaml: &str, node: &Node) -> Snapshot {
        compile_with(yaml, node, &MeshConfig::default())
    }

    /// A gateway workload in `istio-system` labelled `istio: ingressgateway`.
    pub fn gateway_node() -> Node {
        Node { namespace: "istio-system".into(), role: Role::Gateway, ..Node::default() }
    }

    /// A sidecar workload in `namespace` labelled `app: sleep`.
    pub fn sidecar_node(namespace: &str) -> Node {
        Node {
            namespace: namespace.into(),
            labels: BTreeMap::from([("app".to_string(), "sleep".to_string())]),
            role: Role::Sidecar,
            ..Node::default()
        }
    }

    pub fn listener<'s>(snap: &'s Snapshot, name: &str) -> &'s Listener {
        snap.listeners.iter().find(|l| &*l.name == name).unwrap_or_else(|| {
            panic!("no listener {name}: {:?}", snap.listeners.iter().map(|l| &l.name).collect::<Vec<_>>())
        })
    }

    pub fn table<'s>(snap: &'s Snapshot, name: &str) -> &'s RouteTable {
        snap.route_table(name).unwrap_or_else(|| {
            panic!("no route table {name}: {:?}", snap.route_tables.iter().map(|t| &t.name).collect::<Vec<_>>())
        })
    }

    pub fn vhost<'t>(table: &'t RouteTable, name: &str) -> &'t VirtualHost {
        table.virtual_hosts.iter().find(|v| &*v.name == name).unwrap_or_else(|| {
            panic!(
                "no virtual host {name} in {}: {:?}",
                table.name,
                table.virtual_hosts.iter().map(|v| &v.name).collect::<Vec<_>>()
            )
        })
    }

    pub fn vhost_names(table: &RouteTable) -> Vec<&str> {
        table.virtual_hosts.iter().map(|v| &*v.name).collect()
    }

    /// The clusters a route forwards to (empty for redirects and direct responses).
    pub fn clusters_of(route: &Route) -> Vec<&str> {
        match &route.action {
            RouteAction::Forward { clusters, .. } => clusters.iter().map(|c| &*c.cluster).collect(),
            _ => Vec::new(),
        }
    }

    /// The clusters of a TCP chain's routes.
    pub fn tcp_clusters(action: &ChainAction) -> Vec<&str> {
        match action {
            ChainAction::Tcp { routes } => routes.iter().flat_map(|r| r.clusters.iter().map(|c| &*c.cluster)).collect(),
            _ => Vec::new(),
        }
    }

    pub fn codes(snap: &Snapshot) -> Vec<&str> {
        snap.messages.iter().map(|m| m.code).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChainAction, Transport};

    fn chain(name: &str, subnets: &[&str], sni: &[&str], transport: Option<Transport>) -> FilterChain {
        FilterChain {
            name: name.into(),
            matcher: ChainMatch {
                server_names: sni.iter().map(|s| Str::from(*s)).collect(),
                destination_subnets: subnets.iter().map(|s| Str::from(*s)).collect(),
                transport,
            },
            tls: None,
            action: ChainAction::AutoPassthrough,
        }
    }

    #[test]
    fn is_cidr_agrees_with_normalize_cidr() {
        for s in [
            "10.1.2.3",
            "10.1.2.3/8",
            "10.1.2.3/33",
            "10.1.2.3/300",
            "10.1.2.3/",
            "10.1.2.3/x",
            "0.0.0.0",
            "0.0.0.0/0",
            "::",
            "::1",
            "2001:db8::1/32",
            "2001:db8::1/129",
            "fe80::1%eth0",
            "foo.com",
            "",
            "/8",
            "1.2.3.4/8/9",
        ] {
            assert_eq!(is_cidr(s), normalize_cidr(s).is_some(), "{s}");
        }
    }

    #[test]
    fn cidrs_normalize_and_compare() {
        assert_eq!(normalize_cidr("10.1.2.3").as_deref(), Some("10.1.2.3/32"));
        assert_eq!(normalize_cidr("10.1.2.3/8").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(normalize_cidr("2001:db8::1/32").as_deref(), Some("2001:db8::/32"));
        assert_eq!(normalize_cidr("0.0.0.0"), None);
        assert_eq!(normalize_cidr("x"), None);
        let a = chain("a", &["1.2.3.4/8"], &[], None).matcher;
        let b = chain("b", &["1.5.6.7/8"], &[], None).matcher;
        assert!(matches_conflict(&a, &b));
        let c = chain("c", &[], &["a.com", "*"], None).matcher;
        let d = chain("d", &[], &["a.com"], None).matcher;
        assert!(matches_conflict(&c, &d));
        assert!(!matches_conflict(&d, &chain("e", &[], &["a.com"], Some(Transport::Tls)).matcher));
        assert!(!matches_conflict(&a, &d));
    }

    #[test]
    fn chains_are_ordered_most_specific_first() {
        let mut v = vec![
            chain("any", &[], &[], None),
            chain("wild-short", &[], &["*.com"], Some(Transport::Tls)),
            chain("tls-any", &[], &[], Some(Transport::Tls)),
            chain("wild-long", &[], &["*.foo.com"], Some(Transport::Tls)),
            chain("exact", &[], &["a.foo.com"], Some(Transport::Tls)),
            chain("vip16", &["10.0.0.0/16"], &[], None),
            chain("vip", &["10.0.0.1"], &[], None),
        ];
        order_chains(&mut v);
        let names: Vec<&str> = v.iter().map(|c| &*c.name).collect();
        assert_eq!(names, ["vip", "vip16", "exact", "wild-long", "wild-short", "tls-any", "any"]);
    }

    #[test]
    fn names_and_server_names() {
        assert_eq!(&*listener_name(None, 80), "0.0.0.0_80");
        assert_eq!(&*listener_name(Some(""), 80), "0.0.0.0_80");
        assert_eq!(&*listener_name(Some("10.0.0.1"), 443), "10.0.0.1_443");
        assert!(server_names(&["a.com".into(), "*".into()]).is_empty());
        assert_eq!(server_names(&["b.com".into(), "a.com".into()]), vec![Str::from("a.com"), Str::from("b.com")]);
    }
}
