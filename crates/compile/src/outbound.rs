//! Sidecar role, outbound (`pilot/pkg/networking/core/httproute.go
//! BuildSidecarOutboundVirtualHosts`, `listener.go`): one listener per
//! service port, route tables named by port with a virtual host per
//! service (alternate domains included), TCP/TLS filter chains, and the
//! passthrough / block-all behaviour for unknown hosts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use weir_api::protocol::Protocol;

use crate::cluster::cluster_name;
use crate::compile::{Builder, Context};
use crate::fast_hash::{FastMap, FastSet, map_with_capacity, set_with_capacity};
use crate::listener::{
    BLACKHOLE_CLUSTER, MatchKey, PASSTHROUGH_CHAIN, PASSTHROUGH_CLUSTER, catch_all_route, is_cidr, listener_name,
    normalize_cidr, order_chains, server_names, single_cluster, special_cluster, tcp_route_to,
};
use crate::mesh::OutboundMode;
use crate::message::{Messages, code};
use crate::model::{
    BindScope, ChainAction, ChainMatch, Discovery, FilterChain, Listener, ListenerRole, Route, RouteAction, RouteTable,
    Str, TcpRoute, Transport, VirtualHost,
};
use crate::registry::{Service, ServicePort};
use crate::route::{RouteEnv, RouteStrings};
use crate::str_util::Digits;
use crate::virtual_service::ResolvedVs;

/// Adds the sidecar outbound listeners and route tables to `out`.
pub fn build(cx: &Context<'_>, out: &mut Builder) {
    // The sidecar's own view, also when the node is a gateway too (which sees every visible service).
    let services = cx.scope.services(cx.input.registry, &cx.node.namespace);
    let mesh_vss = cx.vss.for_mesh(&cx.node.namespace);
    // Service port -> the (service, port) pairs the node's Sidecar scope imports on it.
    let mut ports: BTreeMap<u16, Vec<(&Arc<Service>, &ServicePort)>> = BTreeMap::new();
    for svc in &services {
        for sp in &svc.ports {
            if cx.scope.imports_service_on_port(svc, sp.port) {
                ports.entry(sp.port).or_default().push((svc, sp));
            }
        }
    }
    let strings = RouteStrings::default();
    for (port, entries) in ports {
        build_port(cx, port, dedup_hosts(entries, &cx.node.namespace), &mesh_vss, &strings, out);
    }
    let catch_all = match cx.scope.outbound_mode {
        OutboundMode::AllowAny => PASSTHROUGH_CLUSTER,
        OutboundMode::RegistryOnly => BLACKHOLE_CLUSTER,
    };
    out.clusters.push(special_cluster(catch_all, cx.input.mesh));
}

/// One service per hostname on a port: the one in the node's namespace, else the first
/// (the Sidecar scope keeps several services of one namespace sharing a hostname).
fn dedup_hosts<'s>(
    entries: Vec<(&'s Arc<Service>, &'s ServicePort)>,
    namespace: &str,
) -> Vec<(&'s Arc<Service>, &'s ServicePort)> {
    let mut out: Vec<(&Arc<Service>, &ServicePort)> = Vec::with_capacity(entries.len());
    let mut index: FastMap<&str, usize> = map_with_capacity(entries.len());
    for (svc, sp) in entries {
        match index.get(&*svc.hostname) {
            Some(&i) => {
                if out[i].0.namespace.as_ref() != namespace && svc.namespace.as_ref() == namespace {
                    out[i] = (svc, sp);
                }
            }
            None => {
                index.insert(&svc.hostname, out.len());
                out.push((svc, sp));
            }
        }
    }
    out
}

/// How a port is served (semantics §16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortKind {
    /// HTTP family, or undeclared (Istio sniffs; weir serves HTTP): `http` rules, route table `<port>`.
    Http,
    /// HTTPS/TLS: `tls` rules by SNI, else opaque TCP to the service.
    Tls,
    /// Everything else: `tcp` rules.
    Tcp,
    /// UDP is not proxied.
    Skip,
}

fn port_kind(protocol: Option<Protocol>) -> PortKind {
    match protocol {
        None => PortKind::Http,
        Some(Protocol::Udp) => PortKind::Skip,
        Some(p) if p.is_http() => PortKind::Http,
        Some(p) if p.is_tls() => PortKind::Tls,
        Some(_) => PortKind::Tcp,
    }
}

/// The listener of one port: an HTTP chain for the HTTP services (route
/// table `<port>`), TCP/TLS chains per service, and a fall-through chain.
fn build_port(
    cx: &Context<'_>,
    port: u16,
    entries: Vec<(&Arc<Service>, &ServicePort)>,
    mesh_vss: &[&Arc<ResolvedVs>],
    strings: &RouteStrings,
    out: &mut Builder,
) {
    // The egress listener serving this port gives its bind address; one declared for this very
    // port also its protocol.
    let egress = cx.scope.listener_for_port(port);
    let protocol_override = egress.filter(|e| e.port == Some(port)).and_then(|e| e.protocol);
    let bind = egress.and_then(|e| e.bind.clone()).filter(|b| !b.is_empty());
    let kinds: Vec<PortKind> = entries.iter().map(|(_, sp)| port_kind(protocol_override.or(sp.protocol))).collect();
    // VirtualServices imported on this port (Istio `SelectVirtualServices` with the port's egress listener).
    let vss: Vec<&Arc<ResolvedVs>> = mesh_vss
        .iter()
        .copied()
        .filter(|vs| vs.hosts.iter().any(|h| cx.scope.imports_on_port(port, &vs.cfg.namespace, h)))
        .collect();
    let vss = PortVss::new(vss);
    let env = cx.route_env(port, None);
    let lname = listener_name(bind.as_deref(), port);

    let mut chains: Vec<FilterChain> = Vec::new();
    // The match of every chain so far -> who owns it, for conflicts.
    let mut taken: HashMap<MatchKey, Str> = HashMap::new();
    let mut origins = Origins::default();
    if kinds.contains(&PortKind::Http) {
        let table = http_route_table(cx, &env, &entries, &kinds, &vss.list, strings, &mut out.messages);
        chains.push(FilterChain {
            name: table.name.clone(),
            matcher: ChainMatch::default(),
            tls: None,
            action: ChainAction::Http { route_table: table.name.clone() },
        });
        taken.insert(MatchKey::of(&ChainMatch::default()), "the HTTP services of this port".into());
        out.route_tables.push(table);
        for ((svc, _), _) in entries.iter().zip(&kinds).filter(|(_, k)| **k == PortKind::Http) {
            origins.push(&svc.origin);
        }
    }
    for ((svc, sp), kind) in entries.iter().zip(&kinds) {
        let own = match kind {
            PortKind::Tls => tls_chains(&env, svc, &vss.for_service(svc), &mut out.messages),
            PortKind::Tcp => tcp_chains(&env, svc, &vss.for_service(svc), &mut out.messages),
            PortKind::Http | PortKind::Skip => continue,
        };
        let mut accepted: Vec<FilterChain> = Vec::new();
        let mut own_keys: HashSet<MatchKey> = HashSet::new();
        let mut conflict: Option<Str> = None;
        for c in own {
            let key = MatchKey::of(&c.matcher);
            if let Some(other) = taken.get(&key) {
                conflict.get_or_insert_with(|| other.clone());
                continue;
            }
            // A service's own chains that coincide (a VirtualService subnet equal to the VIP) keep the first.
            if own_keys.insert(key) {
                accepted.push(c);
            }
        }
        if let Some(other) = conflict {
            out.messages.warn(
                code::PORT_CONFLICT,
                svc.origin.clone(),
                Some(svc.origin_location()),
                format!(
                    "{} port {port} ({}) cannot share listener {lname} with {other}: the connections would \
                     match the same filter chain; its traffic on this port goes to {other}",
                    svc.hostname,
                    protocol_name(protocol_override.or(sp.protocol))
                ),
            );
        }
        if !accepted.is_empty() {
            origins.push(&svc.origin);
        }
        for k in own_keys {
            taken.entry(k).or_insert_with(|| svc.hostname.clone());
        }
        chains.extend(accepted);
    }
    if chains.is_empty() {
        return;
    }
    // Connections no chain takes: to the address they were sent to (ALLOW_ANY) or nowhere (REGISTRY_ONLY).
    if !chains.iter().any(|c| is_match_all(&c.matcher)) {
        let cluster = match cx.scope.outbound_mode {
            OutboundMode::AllowAny => PASSTHROUGH_CLUSTER,
            OutboundMode::RegistryOnly => BLACKHOLE_CLUSTER,
        };
        chains.push(FilterChain {
            name: PASSTHROUGH_CHAIN.into(),
            matcher: ChainMatch::default(),
            tls: None,
            action: ChainAction::Tcp { routes: vec![tcp_route_to(cluster.into())] },
        });
    }
    order_chains(&mut chains);
    out.listeners.push(Listener {
        name: lname,
        role: ListenerRole::SidecarOutbound,
        bind: BindScope::Mesh,
        address: bind,
        port,
        filter_chains: chains,
        origins: origins.list,
    });
}

fn protocol_name(p: Option<Protocol>) -> &'static str {
    p.map_or("undeclared", |p| p.as_str())
}

/// A listener's origins: first-seen order, each once. The set makes a
/// port with thousands of services linear rather than quadratic.
#[derive(Default)]
struct Origins {
    list: Vec<Str>,
    seen: FastSet<Str>,
}

impl Origins {
    fn push(&mut self, s: &Str) {
        if self.seen.insert(s.clone()) {
            self.list.push(s.clone());
        }
    }
}

fn is_match_all(m: &ChainMatch) -> bool {
    m.destination_subnets.is_empty() && m.server_names.is_empty() && m.transport.is_none()
}

/// The destinations a service's TCP/TLS chains match: its addresses, or for
/// a NONE-resolution service without addresses its endpoint IPs (Istio builds
/// a listener per endpoint there); empty means any destination.
fn service_subnets(svc: &Service) -> Vec<Str> {
    let mut out: Vec<Str> = svc.addresses.iter().filter(|a| is_cidr(a)).cloned().collect();
    if out.is_empty() && svc.discovery == Discovery::OriginalDst {
        for i in svc.instances() {
            if i.address.parse::<std::net::IpAddr>().is_ok_and(|ip| !ip.is_unspecified())
                && !out.iter().any(|o| **o == *i.address)
            {
                out.push(Str::from(i.address.as_str()));
            }
        }
    }
    out
}

/// The VirtualServices imported on one port, in Istio's order, indexed by
/// host. A port can carry thousands of services and VirtualServices; finding
/// each service's VirtualServices by scanning them all was quadratic.
struct PortVss<'v> {
    list: Vec<&'v Arc<ResolvedVs>>,
    /// Non-wildcard host -> positions in `list` of the VirtualServices naming it, ascending.
    exact: FastMap<&'v str, Vec<usize>>,
    /// Positions of the VirtualServices with a wildcard host, ascending.
    wildcard: Vec<usize>,
}

impl<'v> PortVss<'v> {
    fn new(list: Vec<&'v Arc<ResolvedVs>>) -> Self {
        let mut exact: FastMap<&'v str, Vec<usize>> = map_with_capacity(list.len());
        let mut wildcard = Vec::new();
        for (i, vs) in list.iter().enumerate() {
            let mut has_wildcard = false;
            for h in &vs.hosts {
                if crate::host::is_wildcard(h) {
                    has_wildcard = true;
                } else {
                    let at = exact.entry(&**h).or_default();
                    if at.last() != Some(&i) {
                        at.push(i);
                    }
                }
            }
            if has_wildcard {
                wildcard.push(i);
            }
        }
        PortVss { list, exact, wildcard }
    }

    /// The VirtualServices with a host overlapping `svc` (Istio `getConfigsForHost`), in order.
    fn for_service(&self, svc: &Service) -> Vec<&'v Arc<ResolvedVs>> {
        let overlaps = |vs: &ResolvedVs| vs.hosts.iter().any(|h| crate::host::matches(h, &svc.hostname));
        if crate::host::is_wildcard(&svc.hostname) {
            // A wildcard service overlaps exact hosts under it: no index for that.
            return self.list.iter().copied().filter(|vs| overlaps(vs)).collect();
        }
        // An exact service name overlaps only that exact host or a wildcard host.
        let mut at: Vec<usize> = self.exact.get(&*svc.hostname).cloned().unwrap_or_default();
        at.extend(self.wildcard.iter().copied().filter(|&i| overlaps(self.list[i])));
        at.sort_unstable();
        at.dedup();
        at.into_iter().map(|i| self.list[i]).collect()
    }
}

fn chain_name(route: &TcpRoute, section: &str, fallback: &Str) -> Str {
    match &route.origin {
        Some(o) => format!("{} {section}[{}]", o.object, o.rule).into(),
        None => fallback.clone(),
    }
}

/// Istio `buildSidecarOutboundTCPFilterChainOpts`: a chain per VirtualService
/// TCP route (its destination subnets, or the service's addresses for a route
/// without any, which ends the list), else one to the service's cluster.
/// `vss`: the VirtualServices with a host overlapping the service, in order.
fn tcp_chains(
    env: &RouteEnv<'_>,
    svc: &Service,
    vss: &[&Arc<ResolvedVs>],
    messages: &mut Messages,
) -> Vec<FilterChain> {
    let subnets = service_subnets(svc);
    let cluster = cluster_name(env.port, None, &svc.hostname);
    let normalized = |v: &[Str]| {
        let mut n: Vec<String> = v.iter().filter_map(|s| normalize_cidr(s)).collect();
        n.sort();
        n
    };
    let chain = |name: Str, subnets: Vec<Str>, route: TcpRoute| FilterChain {
        name,
        matcher: ChainMatch { destination_subnets: subnets, ..ChainMatch::default() },
        tls: None,
        action: ChainAction::Tcp { routes: vec![route] },
    };
    let mut out = Vec::new();
    let mut default_added = false;
    'vs: for vs in vss.iter().copied() {
        for r in crate::route::tcp_routes(vs, env, messages) {
            let name = chain_name(&r, "tcp", &cluster);
            if r.destination_subnets.is_empty() {
                out.push(chain(name, subnets.clone(), r));
                default_added = true;
                break 'vs;
            }
            // Subnets equal to the service's own: this route already is the service's chain.
            default_added |= !subnets.is_empty() && normalized(&r.destination_subnets) == normalized(&subnets);
            out.push(chain(name, r.destination_subnets.clone(), r));
        }
    }
    if !default_added {
        out.push(chain(cluster.clone(), subnets, tcp_route_to(cluster)));
    }
    out
}

/// Istio `buildSidecarOutboundTLSFilterChainOpts`: a chain per VirtualService
/// TLS match by SNI (duplicate SNI/subnet predicates generated once), else
/// opaque TCP to the service, matched by SNI when its address cannot tell it apart.
/// `vss`: the VirtualServices with a host overlapping the service, in order.
fn tls_chains(
    env: &RouteEnv<'_>,
    svc: &Service,
    vss: &[&Arc<ResolvedVs>],
    messages: &mut Messages,
) -> Vec<FilterChain> {
    let subnets = service_subnets(svc);
    let cluster = cluster_name(env.port, None, &svc.hostname);
    let mut out = Vec::new();
    let mut seen: HashSet<(Vec<Str>, Vec<Str>)> = HashSet::new();
    for vs in vss.iter().copied() {
        for (sni, r) in crate::route::tls_routes(vs, env, messages) {
            if !seen.insert((sni.clone(), r.destination_subnets.clone())) {
                continue;
            }
            let destination_subnets =
                if r.destination_subnets.is_empty() { subnets.clone() } else { r.destination_subnets.clone() };
            out.push(FilterChain {
                name: chain_name(&r, "tls", &cluster),
                matcher: ChainMatch {
                    server_names: server_names(&sni),
                    destination_subnets,
                    transport: Some(Transport::Tls),
                },
                tls: None,
                action: ChainAction::Tcp { routes: vec![r] },
            });
        }
    }
    if out.is_empty() {
        let by_sni = subnets.is_empty() || svc.addresses.iter().any(|a| a.contains('/'));
        let sni: Vec<Str> = if by_sni { vec![svc.hostname.clone()] } else { Vec::new() };
        out.push(FilterChain {
            name: cluster.clone(),
            matcher: ChainMatch {
                transport: (!sni.is_empty()).then_some(Transport::Tls),
                server_names: sni,
                destination_subnets: subnets,
            },
            tls: None,
            action: ChainAction::Tcp { routes: vec![tcp_route_to(cluster)] },
        });
    }
    out
}

/// A group of virtual hosts sharing routes (Istio `VirtualHostWrapper`).
struct Wrapper<'s> {
    /// The VirtualService the routes come from; `None` for a service's default route.
    vs: Option<&'s ResolvedVs>,
    /// VirtualService hosts that are not registry services (each gets a virtual host of its own).
    vs_hosts: Vec<Str>,
    services: Vec<&'s Arc<Service>>,
    routes: Vec<Route>,
}

/// Istio `BuildSidecarOutboundVirtualHosts` for one port: the first
/// VirtualService (in Istio's order) claiming a host routes it; services
/// without one get the default route; then the catch-all virtual host.
fn http_route_table<'s>(
    cx: &Context<'_>,
    env: &RouteEnv<'_>,
    entries: &[(&'s Arc<Service>, &ServicePort)],
    kinds: &[PortKind],
    vss: &[&'s Arc<ResolvedVs>],
    strings: &RouteStrings,
    messages: &mut Messages,
) -> RouteTable {
    let port = env.port;
    // Every service on the port counts as a registry host; only HTTP ones get virtual hosts.
    let services: Vec<(&Arc<Service>, bool)> =
        entries.iter().zip(kinds).map(|((svc, _), k)| (*svc, *k == PortKind::Http)).collect();
    let names = PortServices::new(&services);
    // Istio keeps, on ports other than 80, only VirtualServices with a host matching a service here.
    let selected: Vec<&Arc<ResolvedVs>> = if port == 80 {
        vss.to_vec()
    } else {
        vss.iter().copied().filter(|vs| vs.hosts.iter().any(|h| names.any_matches(h))).collect()
    };
    // Only consulted for wildcard VirtualService hosts (see `separate_hosts`).
    let wildcard_owner = if vss.iter().any(|vs| vs.hosts.iter().any(|h| crate::host::is_wildcard(h))) {
        most_specific_vs_index(vss, &services)
    } else {
        FastMap::default()
    };

    let mut wrappers: Vec<Wrapper<'s>> = Vec::new();
    for vs in selected {
        let routes = crate::route::http_routes_with(vs, env, strings, messages);
        if routes.is_empty() {
            continue;
        }
        let (vs_hosts, matched) = separate_hosts(vs, &names, &wildcard_owner);
        let matched: Vec<&Arc<Service>> = matched.into_iter().filter(|(_, http)| *http).map(|(s, _)| s).collect();
        // Without an HTTP service here, the VirtualService's own hosts are only served on port 80 (Istio's rule).
        if matched.is_empty() && port != 80 {
            continue;
        }
        wrappers.push(Wrapper { vs: Some(vs), vs_hosts, services: matched, routes });
    }
    let mut with_vs: FastSet<&'s str> = set_with_capacity(services.len());
    with_vs.extend(wrappers.iter().flat_map(|w| w.services.iter().map(|&s| -> &'s str { &s.hostname })));
    let defaults: Vec<Wrapper<'s>> = services
        .iter()
        .filter(|(s, http)| *http && !with_vs.contains(&*s.hostname))
        .map(|(s, _)| Wrapper {
            vs: None,
            vs_hosts: Vec::new(),
            services: vec![*s],
            routes: vec![crate::route::default_http_route_with(cluster_name(port, None, &s.hostname), env, strings)],
        })
        .collect();
    // Now the hostnames of every wrapper's services.
    let mut known = with_vs;
    known.extend(defaults.iter().flat_map(|w| w.services.iter().map(|&s| -> &'s str { &s.hostname })));
    wrappers.extend(defaults);

    let mut vhosts = build_virtual_hosts(cx, port, wrappers, &known, messages);
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    if !vhosts.iter().any(|v| v.domains.iter().any(|d| &**d == "*")) {
        vhosts.push(catch_all_vhost(cx.scope.outbound_mode));
    }
    RouteTable { name: port.to_string().into(), virtual_hosts: vhosts }
}

/// Istio `allow_any` (to `PassthroughCluster`, no timeout) or `block_all` (502) virtual host.
fn catch_all_vhost(mode: OutboundMode) -> VirtualHost {
    let (name, action) = match mode {
        OutboundMode::AllowAny => {
            ("allow_any", RouteAction::Forward { clusters: single_cluster(PASSTHROUGH_CLUSTER.into()), rewrite: None })
        }
        OutboundMode::RegistryOnly => ("block_all", RouteAction::DirectResponse { status: 502, body: None }),
    };
    VirtualHost {
        name: name.into(),
        domains: vec!["*".into()],
        routes: vec![catch_all_route(name, action)],
        require_tls: false,
    }
}

/// The services of one port (with whether each is served as HTTP) and their
/// hostnames hashed: every VirtualService host is looked up among them, and
/// scanning the services for each was quadratic on ports with many of both.
struct PortServices<'a, 's> {
    services: &'a [(&'s Arc<Service>, bool)],
    /// Non-wildcard hostname -> position of the first service with it.
    exact: FastMap<&'s str, usize>,
    /// Positions of the services with a wildcard hostname.
    wildcard: Vec<usize>,
}

impl<'a, 's> PortServices<'a, 's> {
    fn new(services: &'a [(&'s Arc<Service>, bool)]) -> Self {
        let mut exact = map_with_capacity(services.len());
        let mut wildcard = Vec::new();
        for (i, (s, _)) in services.iter().enumerate() {
            let s: &'s Service = s;
            if crate::host::is_wildcard(&s.hostname) {
                wildcard.push(i);
            } else {
                exact.entry(&*s.hostname).or_insert(i);
            }
        }
        PortServices { services, exact, wildcard }
    }

    /// Whether VirtualService host `h` overlaps any service here (`host::matches`).
    fn any_matches(&self, h: &str) -> bool {
        let overlaps = |&(s, _): &(&Arc<Service>, bool)| crate::host::matches(h, &s.hostname);
        if crate::host::is_wildcard(h) {
            // A wildcard overlaps the exact names under it: no index for that.
            return self.services.iter().any(overlaps);
        }
        // An exact name overlaps only the same name or a wildcard service.
        self.exact.contains_key(h) || self.wildcard.iter().any(|&i| overlaps(&self.services[i]))
    }

    /// The first service named exactly `h` (not a wildcard).
    fn named(&self, h: &str) -> Option<(&'s Arc<Service>, bool)> {
        self.exact.get(h).map(|&i| self.services[i])
    }
}

/// Istio `computeWildcardHostVirtualServiceIndex`: for each service host,
/// the VirtualService (`object`) with that exact host, else with the most
/// specific wildcard matching it; the first VirtualService wins a shared host.
fn most_specific_vs_index<'s>(
    vss: &[&'s Arc<ResolvedVs>],
    services: &[(&'s Arc<Service>, bool)],
) -> FastMap<&'s str, &'s str> {
    let mut hosts: Vec<&str> = Vec::new();
    let mut owners: Vec<&str> = Vec::new();
    let mut seen: FastSet<&str> = FastSet::default();
    for vs in vss {
        let vs: &'s ResolvedVs = vs;
        for h in &vs.hosts {
            if seen.insert(h) {
                hosts.push(h);
                owners.push(&vs.object);
            }
        }
    }
    let hosts = crate::host::HostMatcher::new(hosts);
    let mut out = map_with_capacity(services.len());
    for (svc, _) in services {
        let svc: &'s Service = svc;
        if let Some(i) = hosts.most_specific_match(&svc.hostname) {
            out.insert(&*svc.hostname, owners[i]);
        }
    }
    out
}

/// Istio `separateVSHostsAndServices`: a VirtualService's hosts split into
/// registry services on this port (exact names, or services whose most
/// specific wildcard VirtualService is this one) and other hostnames.
fn separate_hosts<'s>(
    vs: &ResolvedVs,
    names: &PortServices<'_, 's>,
    wildcard_owner: &FastMap<&str, &str>,
) -> (Vec<Str>, Vec<(&'s Arc<Service>, bool)>) {
    let mut other_hosts: Vec<Str> = Vec::new();
    let mut matched: Vec<(&Arc<Service>, bool)> = Vec::new();
    fn add<'s>(m: &mut Vec<(&'s Arc<Service>, bool)>, s: (&'s Arc<Service>, bool)) {
        if !m.iter().any(|(x, _)| Arc::ptr_eq(x, s.0)) {
            m.push(s);
        }
    }
    for h in vs.hosts.iter().filter(|h| !crate::host::is_wildcard(h)) {
        match names.named(h) {
            Some(s) => add(&mut matched, s),
            None => other_hosts.push(h.clone()),
        }
    }
    for h in vs.hosts.iter().filter(|h| crate::host::is_wildcard(h)) {
        let mut found = false;
        for &(s, http) in names.services {
            if !crate::host::matches(&s.hostname, h) {
                continue;
            }
            found = true;
            if wildcard_owner.get(&*s.hostname) == Some(&&*vs.object) {
                add(&mut matched, (s, http));
            }
        }
        if !found {
            other_hosts.push(h.clone());
        }
    }
    (other_hosts, matched)
}

/// The domains of a service's virtual host: its name, the alternate names a
/// client in the node's namespace may use, and its addresses. Also returns
/// the alternate names alone (they yield to real hostnames).
fn service_domains(cx: &Context<'_>, svc: &Service) -> (Vec<Str>, Vec<Str>) {
    let mut domains = vec![svc.hostname.clone()];
    let mut alternates = Vec::new();
    for d in crate::host::alt_domains(&svc.hostname, &cx.node.namespace, &cx.node.cluster_domain) {
        if d != svc.hostname && !domains.contains(&d) {
            domains.push(d.clone());
            alternates.push(d);
        }
    }
    for a in &svc.addresses {
        // CIDRs cannot appear in a Host header.
        if !a.contains('/') && is_cidr(a) && !domains.contains(a) {
            domains.push(a.clone());
        }
    }
    (domains, alternates)
}

/// Istio's `buildVirtualHost` loop: virtual host names and domains are
/// unique in a route table; the first claim wins and later ones are
/// reported (IST0109 when two VirtualServices claim one host).
///
/// `known`: the hostnames of the wrappers' services. They are real names: an
/// alternate name equal to one of them yields.
fn build_virtual_hosts(
    cx: &Context<'_>,
    port: u16,
    wrappers: Vec<Wrapper<'_>>,
    known: &FastSet<&str>,
    messages: &mut Messages,
) -> Vec<VirtualHost> {
    // Virtual host name -> who claimed it.
    let mut claimed: FastMap<Str, Str> = map_with_capacity(wrappers.len());
    // Lower-cased domain -> who claimed it (a service has a few: its name, alternate names, address).
    let mut used_domains: FastMap<Str, Str> = map_with_capacity(wrappers.len() * 4);
    // One virtual host per wrapper is typical; +1 for the catch-all added after.
    let mut out = Vec::with_capacity(wrappers.len() + 1);
    for Wrapper { vs, vs_hosts, services, mut routes } in wrappers {
        let owner: Str = match vs {
            Some(vs) => vs.object.clone(),
            None => services.first().map_or_else(|| Str::from(""), |s| s.origin.clone()),
        };
        let location = |svc: Option<&Service>| match (vs, svc) {
            (Some(vs), _) => Some(vs.cfg.origin_at("spec.hosts")),
            (None, Some(s)) => Some(s.origin_location()),
            (None, None) => None,
        };
        let candidates: Vec<(Str, Option<&Service>)> = vs_hosts
            .iter()
            .map(|h| (crate::str_util::lowercased(h), None))
            .chain(services.iter().map(|&s| (s.hostname.clone(), Some(&**s))))
            .collect();
        let last = candidates.len().saturating_sub(1);
        for (k, (hostname, svc)) in candidates.into_iter().enumerate() {
            let name: Str = crate::str_util::concat_str(&[&hostname, ":", Digits::new(port).as_str()]);
            if let Some(first) = claimed.get(&name) {
                if *first == owner {
                    // The same object naming a host twice.
                    continue;
                }
                let (msg_code, level_error) = if vs.is_some() && first.starts_with("VirtualService ") {
                    (code::CONFLICTING_MESH_GATEWAY_VS_HOSTS, true)
                } else {
                    (code::DUPLICATE_DOMAIN, false)
                };
                let text = if level_error {
                    format!(
                        "host {hostname} is also defined by {first}, which sidecars use; this VirtualService's \
                         rules for it are ignored (merge the VirtualServices into one)"
                    )
                } else {
                    format!("virtual host {name} in route table {port} is already defined by {first}; dropped")
                };
                if level_error {
                    messages.error(msg_code, owner.clone(), location(svc), text);
                } else {
                    messages.warn(msg_code, owner.clone(), location(svc), text);
                }
                continue;
            }
            claimed.insert(name.clone(), owner.clone());
            let (domains, alternates) = match svc {
                Some(s) => service_domains(cx, s),
                None => (vec![hostname.clone()], Vec::new()),
            };
            let mut kept = Vec::with_capacity(domains.len());
            let mut dropped: Vec<String> = Vec::new();
            for d in domains {
                let key = crate::str_util::lowercased(&d);
                if let Some(by) = used_domains.get(&key) {
                    dropped.push(format!("{d} (claimed by {by})"));
                    continue;
                }
                // `foo.com` as a short name of `foo.com.<domain>` must not shadow the service `foo.com`.
                if alternates.contains(&d) && known.contains(&*d) {
                    dropped.push(format!("{d} (the name of another service)"));
                    continue;
                }
                used_domains.insert(key, owner.clone());
                kept.push(d);
            }
            if !dropped.is_empty() {
                messages.warn(
                    code::DUPLICATE_DOMAIN,
                    owner.clone(),
                    location(svc),
                    format!("route table {port}, virtual host {name}: domain {} dropped", dropped.join(", ")),
                );
            }
            if !kept.is_empty() {
                // The wrapper's last virtual host takes its routes (without spare capacity: the
                // snapshot holds them); earlier ones get copies.
                let routes = if k == last {
                    routes.shrink_to_fit();
                    std::mem::take(&mut routes)
                } else {
                    routes.clone()
                };
                out.push(VirtualHost { name, domains: kept, routes, require_tls: false });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::{SimRequest, explain};
    use crate::listener::testing::*;
    use crate::mesh::MeshConfig;
    use crate::node::Role;

    /// A MESH_INTERNAL Kubernetes-style service `name.ns.svc.cluster.local`.
    fn service(name: &str, ns: &str, port: u16, protocol: &str, address: Option<&str>) -> String {
        let addresses = address.map(|a| format!("  addresses: [{a}]\n")).unwrap_or_default();
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  hosts: [{name}.{ns}.svc.cluster.local]\n{addresses}  location: MESH_INTERNAL\n\
             \x20 ports: [{{number: {port}, name: p, protocol: {protocol}}}]\n  resolution: STATIC\n\
             \x20 endpoints: [{{address: 10.1.0.1}}]\n"
        )
    }

    const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";

    #[test]
    fn http_port_has_a_route_table_with_a_virtual_host_per_service() {
        let yaml = format!(
            "{}{}",
            service("reviews", "default", 9080, "HTTP", Some("10.0.0.5")),
            service("ratings", "other", 9080, "HTTP", None)
        );
        let snap = compile(&yaml, &sidecar_node("default"));
        let l = listener(&snap, "0.0.0.0_9080");
        assert_eq!((l.role, l.bind, l.port), (ListenerRole::SidecarOutbound, BindScope::Mesh, 9080));
        // Registry order: creation time, then name.
        assert_eq!(l.origins, ["ServiceEntry other/ratings", "ServiceEntry default/reviews"].map(Str::from));
        assert_eq!(l.filter_chains.len(), 1);
        assert_eq!(l.filter_chains[0].action, ChainAction::Http { route_table: "9080".into() });

        let t = table(&snap, "9080");
        assert_eq!(
            vhost_names(t),
            ["ratings.other.svc.cluster.local:9080", "reviews.default.svc.cluster.local:9080", "allow_any"]
        );
        // Seen from `default`: the bare name only for the service in `default`.
        let reviews = vhost(t, "reviews.default.svc.cluster.local:9080");
        assert_eq!(
            reviews.domains,
            ["reviews.default.svc.cluster.local", "reviews", "reviews.default", "reviews.default.svc", "10.0.0.5"]
                .map(Str::from)
        );
        let ratings = vhost(t, "ratings.other.svc.cluster.local:9080");
        assert_eq!(
            ratings.domains,
            ["ratings.other.svc.cluster.local", "ratings.other", "ratings.other.svc"].map(Str::from)
        );
        assert_eq!(reviews.routes.len(), 1);
        assert_eq!(clusters_of(&reviews.routes[0]), [REVIEWS]);
        assert!(reviews.routes[0].origin.is_none() && reviews.routes[0].timeout.is_none());

        // Unknown hosts: ALLOW_ANY forwards to the original destination.
        let any = vhost(t, "allow_any");
        assert_eq!(any.domains, vec![Str::from("*")]);
        assert_eq!(clusters_of(&any.routes[0]), [PASSTHROUGH_CLUSTER]);
        let pt = snap.cluster(PASSTHROUGH_CLUSTER).expect("PassthroughCluster");
        assert_eq!(pt.discovery, Discovery::OriginalDst);

        let get = |url: &str| explain(&snap, &SimRequest::from_url("GET", url, vec![]).unwrap());
        assert!(get("http://reviews:9080/").text.contains(REVIEWS));
        assert!(get("http://unknown.example:9080/").text.contains(PASSTHROUGH_CLUSTER));
    }

    #[test]
    fn registry_only_blocks_unknown_hosts() {
        let mesh = MeshConfig::parse("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n", "mesh.yaml").unwrap();
        let yaml = format!(
            "{}{}",
            service("reviews", "default", 9080, "HTTP", None),
            service("db", "default", 3306, "TCP", Some("10.0.0.7"))
        );
        let snap = compile_with(&yaml, &sidecar_node("default"), &mesh);
        let t = table(&snap, "9080");
        let block = vhost(t, "block_all");
        assert_eq!(block.routes[0].action, RouteAction::DirectResponse { status: 502, body: None });
        assert!(snap.cluster(PASSTHROUGH_CLUSTER).is_none());
        // TCP connections to other addresses on the port go to the black hole.
        let l = listener(&snap, "0.0.0.0_3306");
        let last = l.filter_chains.last().unwrap();
        assert_eq!((&*last.name, tcp_clusters(&last.action)), (PASSTHROUGH_CHAIN, vec![BLACKHOLE_CLUSTER]));
        let bh = snap.cluster(BLACKHOLE_CLUSTER).expect("BlackHoleCluster");
        assert!(bh.endpoints.is_empty());
        let e = explain(&snap, &SimRequest::from_url("GET", "http://example.com:9080/", vec![]).unwrap());
        assert!(e.text.contains("502"), "{}", e.text);
    }

    const TWO_VS: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-v1, namespace: default, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-v2, namespace: default, creationTimestamp: '2024-01-02T00:00:00Z'}
spec:
  hosts: [reviews, bookinfo.example.com]
  http: [{route: [{destination: {host: reviews, subset: v2}}]}]
"#;

    #[test]
    fn the_first_virtual_service_of_a_host_wins() {
        let yaml = format!("{}{TWO_VS}", service("reviews", "default", 9080, "HTTP", None));
        let snap = compile(&yaml, &sidecar_node("default"));
        let t = table(&snap, "9080");
        let reviews = vhost(t, "reviews.default.svc.cluster.local:9080");
        assert_eq!(clusters_of(&reviews.routes[0]), ["outbound|9080|v1|reviews.default.svc.cluster.local"]);
        // reviews-v2 still serves its host outside the registry on this port (it matches a service here).
        let other = vhost(t, "bookinfo.example.com:9080");
        assert_eq!(other.domains, vec![Str::from("bookinfo.example.com")]);
        assert_eq!(clusters_of(&other.routes[0]), ["outbound|9080|v2|reviews.default.svc.cluster.local"]);
        let conflict: Vec<&crate::message::Message> =
            snap.messages.iter().filter(|m| m.code == code::CONFLICTING_MESH_GATEWAY_VS_HOSTS).collect();
        assert_eq!(conflict.len(), 1, "{:?}", snap.messages);
        assert_eq!(&*conflict[0].object, "VirtualService default/reviews-v2");
        assert!(conflict[0].text.contains("reviews-v1"), "{}", conflict[0].text);
    }

    #[test]
    fn a_domain_already_claimed_is_dropped_from_later_virtual_hosts() {
        let yaml = format!(
            "{}{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web, reviews.default]
  http: [{{route: [{{destination: {{host: web}}}}]}}]
",
            service("reviews", "default", 9080, "HTTP", None),
            service("web", "default", 9080, "HTTP", None)
        );
        let snap = compile(&yaml, &sidecar_node("default"));
        let t = table(&snap, "9080");
        // VirtualService virtual hosts are built first: `reviews.default` (a literal host there) wins.
        assert_eq!(vhost(t, "reviews.default:9080").domains, vec![Str::from("reviews.default")]);
        let reviews = vhost(t, "reviews.default.svc.cluster.local:9080");
        assert!(!reviews.domains.contains(&Str::from("reviews.default")), "{:?}", reviews.domains);
        let dup: Vec<&crate::message::Message> =
            snap.messages.iter().filter(|m| m.code == code::DUPLICATE_DOMAIN).collect();
        assert_eq!(dup.len(), 1, "{:?}", snap.messages);
        assert_eq!(&*dup[0].object, "ServiceEntry default/reviews");
        assert!(dup[0].text.contains("VirtualService default/web"), "{}", dup[0].text);
    }

    #[test]
    fn virtual_service_hosts_outside_the_registry_live_on_port_80() {
        let yaml = format!(
            "{}{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: external, namespace: default}}
spec:
  hosts: [api.example.com]
  http: [{{route: [{{destination: {{host: web, port: {{number: 80}}}}}}]}}]
",
            service("reviews", "default", 9080, "HTTP", None),
            service("web", "default", 80, "HTTP", None)
        );
        let snap = compile(&yaml, &sidecar_node("default"));
        assert!(vhost_names(table(&snap, "9080")).iter().all(|n| !n.starts_with("api.")));
        let api = vhost(table(&snap, "80"), "api.example.com:80");
        assert_eq!(clusters_of(&api.routes[0]), ["outbound|80||web.default.svc.cluster.local"]);
    }

    #[test]
    fn wildcard_virtual_services_attach_to_the_most_specific_match() {
        let yaml = format!(
            "{}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext, namespace: default}}
spec:
  hosts: [a.foo.example.com, b.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: broad, namespace: default, creationTimestamp: '2024-01-01T00:00:00Z'}}
spec:
  hosts: [\"*.example.com\"]
  http: [{{route: [{{destination: {{host: b.example.com}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: narrow, namespace: default, creationTimestamp: '2024-01-02T00:00:00Z'}}
spec:
  hosts: [\"*.foo.example.com\"]
  http: [{{route: [{{destination: {{host: a.foo.example.com}}}}]}}]
",
            service("web", "default", 80, "HTTP", None)
        );
        let snap = compile(&yaml, &sidecar_node("default"));
        let t = table(&snap, "80");
        assert_eq!(
            clusters_of(&vhost(t, "a.foo.example.com:80").routes[0]),
            ["outbound|80||a.foo.example.com"],
            "a.foo.example.com takes the routes of *.foo.example.com"
        );
        assert_eq!(clusters_of(&vhost(t, "b.example.com:80").routes[0]), ["outbound|80||b.example.com"]);
        // Non-Kubernetes hosts get no alternate names.
        assert_eq!(vhost(t, "b.example.com:80").domains, vec![Str::from("b.example.com")]);
        assert!(snap.messages.iter().all(|m| m.code != code::CONFLICTING_MESH_GATEWAY_VS_HOSTS));
    }

    #[test]
    fn tcp_services_are_told_apart_by_address_and_conflicts_are_reported() {
        let yaml = format!(
            "{}{}{}{}",
            service("mysql-a", "default", 3306, "TCP", Some("10.0.0.1")),
            service("mysql-b", "default", 3306, "TCP", Some("10.0.0.2")),
            service("mongo-a", "default", 27017, "MONGO", None),
            service("mongo-b", "default", 27017, "MONGO", None)
        );
        let snap = compile(&yaml, &sidecar_node("default"));
        let l = listener(&snap, "0.0.0.0_3306");
        let chains: Vec<(Vec<&str>, Vec<&str>)> = l
            .filter_chains
            .iter()
            .map(|c| (c.matcher.destination_subnets.iter().map(|s| &**s).collect(), tcp_clusters(&c.action)))
            .collect();
        assert_eq!(
            chains,
            [
                (vec!["10.0.0.1"], vec!["outbound|3306||mysql-a.default.svc.cluster.local"]),
                (vec!["10.0.0.2"], vec!["outbound|3306||mysql-b.default.svc.cluster.local"]),
                (vec![], vec![PASSTHROUGH_CLUSTER]),
            ]
        );
        // Without addresses the two services would match the same connections: the first keeps the port.
        let l = listener(&snap, "0.0.0.0_27017");
        assert_eq!(l.filter_chains.len(), 1);
        assert_eq!(tcp_clusters(&l.filter_chains[0].action), ["outbound|27017||mongo-a.default.svc.cluster.local"]);
        assert_eq!(l.origins, vec![Str::from("ServiceEntry default/mongo-a")]);
        let conflict: Vec<&crate::message::Message> =
            snap.messages.iter().filter(|m| m.code == code::PORT_CONFLICT).collect();
        assert_eq!(conflict.len(), 1, "{:?}", snap.messages);
        assert_eq!(&*conflict[0].object, "ServiceEntry default/mongo-b");
    }

    #[test]
    fn tcp_virtual_service_routes_become_chains() {
        let yaml = format!(
            "{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db]
  tcp:
  - match: [{{destinationSubnets: [10.5.0.0/16]}}]
    route: [{{destination: {{host: db, subset: replica}}}}]
  - route:
    - {{destination: {{host: db, subset: v1}}, weight: 90}}
    - {{destination: {{host: db, subset: v2}}, weight: 10}}
",
            service("db", "default", 5432, "TCP", Some("10.0.0.9"))
        );
        let snap = compile(&yaml, &sidecar_node("default"));
        let l = listener(&snap, "0.0.0.0_5432");
        let chains: Vec<(Vec<&str>, Vec<&str>)> = l
            .filter_chains
            .iter()
            .map(|c| (c.matcher.destination_subnets.iter().map(|s| &**s).collect(), tcp_clusters(&c.action)))
            .collect();
        assert_eq!(
            chains,
            [
                (
                    vec!["10.0.0.9"],
                    vec![
                        "outbound|5432|v1|db.default.svc.cluster.local",
                        "outbound|5432|v2|db.default.svc.cluster.local"
                    ]
                ),
                (vec!["10.5.0.0/16"], vec!["outbound|5432|replica|db.default.svc.cluster.local"]),
                (vec![], vec![PASSTHROUGH_CLUSTER]),
            ]
        );
        assert_eq!(&*l.filter_chains[0].name, "VirtualService default/db tcp[1]");
    }

    #[test]
    fn tls_ports_route_by_sni() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: google, namespace: default}
spec:
  hosts: [www.google.com, maps.google.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vip, namespace: default}
spec:
  hosts: [secure.example.com]
  addresses: [192.168.0.1]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: maps, namespace: default}
spec:
  hosts: [maps.google.com]
  tls:
  - match: [{sniHosts: [maps.google.com]}]
    route: [{destination: {host: www.google.com}}]
"#;
        let snap = compile(yaml, &sidecar_node("default"));
        let l = listener(&snap, "0.0.0.0_443");
        let chains: Vec<(Vec<&str>, Vec<&str>, Vec<&str>)> = l
            .filter_chains
            .iter()
            .map(|c| {
                (
                    c.matcher.destination_subnets.iter().map(|s| &**s).collect(),
                    c.matcher.server_names.iter().map(|s| &**s).collect(),
                    tcp_clusters(&c.action),
                )
            })
            .collect();
        assert_eq!(
            chains,
            [
                (vec!["192.168.0.1"], vec![], vec!["outbound|443||secure.example.com"]),
                (vec![], vec!["www.google.com"], vec!["outbound|443||www.google.com"]),
                (vec![], vec!["maps.google.com"], vec!["outbound|443||www.google.com"]),
                (vec![], vec![], vec![PASSTHROUGH_CLUSTER]),
            ]
        );
        assert!(snap.route_tables.is_empty());
    }

    #[test]
    fn the_sidecar_scope_limits_listeners_and_virtual_hosts() {
        let yaml = format!(
            "{}{}{}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec:
  egress: [{{hosts: [\"./*\"]}}]
",
            service("reviews", "default", 9080, "HTTP", None),
            service("ratings", "other", 9080, "HTTP", None),
            service("db", "other", 3306, "TCP", None)
        );
        let snap = compile(&yaml, &sidecar_node("default"));
        let ports: Vec<u16> = snap.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [9080]);
        assert_eq!(vhost_names(table(&snap, "9080")), ["reviews.default.svc.cluster.local:9080", "allow_any"]);
    }

    #[test]
    fn an_egress_listener_with_a_port_decides_protocol_bind_and_imports() {
        let yaml = format!(
            "{}{}{}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec:
  egress:
  - port: {{number: 9080, protocol: HTTP, name: http}}
    bind: 127.0.0.2
    hosts: [\"./*\"]
  - hosts: [\"*/*\"]
",
            service("reviews", "default", 9080, "TCP", None),
            service("ratings", "other", 9080, "HTTP", None),
            service("db", "other", 3306, "TCP", None)
        );
        let snap = compile(&yaml, &sidecar_node("default"));
        let names: Vec<&str> = snap.listeners.iter().map(|l| &*l.name).collect();
        assert_eq!(names, ["0.0.0.0_3306", "127.0.0.2_9080"]);
        let l = listener(&snap, "127.0.0.2_9080");
        assert_eq!(l.address.as_deref(), Some("127.0.0.2"));
        // Served as HTTP (the listener's protocol), with only the services its hosts import.
        assert_eq!(vhost_names(table(&snap, "9080")), ["reviews.default.svc.cluster.local:9080", "allow_any"]);
    }

    #[test]
    fn protocols_decide_how_a_port_is_served() {
        let yaml = format!(
            "{}{}",
            service("sniffed", "default", 7000, "\"\"", None),
            service("dns", "default", 53, "UDP", None)
        );
        let snap = compile(&yaml, &sidecar_node("default"));
        // Undeclared protocol: served as HTTP. UDP: not proxied.
        let ports: Vec<u16> = snap.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [7000]);
        assert!(snap.route_table("7000").is_some());
    }

    #[test]
    fn an_http_port_keeps_tcp_services_with_addresses_apart() {
        let yaml = format!(
            "{}{}{}",
            service("web", "default", 8080, "HTTP", None),
            service("raw", "default", 8080, "TCP", Some("10.0.0.3")),
            service("raw-any", "default", 8080, "TCP", None)
        );
        let snap = compile(&yaml, &sidecar_node("default"));
        let l = listener(&snap, "0.0.0.0_8080");
        let names: Vec<&str> = l.filter_chains.iter().map(|c| &*c.name).collect();
        assert_eq!(names, ["outbound|8080||raw.default.svc.cluster.local", "8080"]);
        let conflict: Vec<&crate::message::Message> =
            snap.messages.iter().filter(|m| m.code == code::PORT_CONFLICT).collect();
        assert_eq!(conflict.len(), 1, "{:?}", snap.messages);
        assert!(conflict[0].text.contains("HTTP services"), "{}", conflict[0].text);
    }

    #[test]
    fn gateway_and_sidecar_listeners_coexist_on_a_node_with_both_roles() {
        let yaml = format!(
            "{}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{app: sleep}}
  servers: [{{port: {{number: 9080, name: http, protocol: HTTP}}, hosts: [\"*\"]}}]
",
            service("reviews", "default", 9080, "HTTP", None)
        );
        let node = crate::Node { role: Role::Both, ..sidecar_node("default") };
        let snap = compile(&yaml, &node);
        let scopes: Vec<(BindScope, ListenerRole)> = snap.listeners.iter().map(|l| (l.bind, l.role)).collect();
        assert_eq!(
            scopes,
            [(BindScope::Gateway, ListenerRole::Gateway), (BindScope::Mesh, ListenerRole::SidecarOutbound)]
        );
        assert!(snap.route_table("http.9080").is_some() && snap.route_table("9080").is_some());
    }
}
