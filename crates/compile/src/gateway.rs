//! Gateway role (`pilot/pkg/networking/core/gateway.go`, `model/gateway.go`):
//! the Gateways selecting this node merged per port, listeners and filter
//! chains per server, one shared route table per HTTP port, TLS servers by SNI.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use weir_api::protocol::Protocol;
use weir_api::types::{Gateway, Server, ServerTlsMode, ServerTlsSettings};

use crate::compile::{Builder, Context};
use crate::listener::{listener_name, order_chains, server_names};
use crate::message::{Messages, code};
use crate::model::{
    BindScope, CertificateFiles, ChainAction, ChainMatch, FilterChain, Listener, ListenerRole, Route, RouteAction,
    RouteTable, ServerTls, Str, TcpRoute, Transport, VirtualHost,
};
use crate::registry::Location;
use crate::store::Cfg;
use crate::virtual_service::ResolvedVs;

/// Adds the gateway listeners, route tables and their messages to `out`.
pub fn build(cx: &Context<'_>, out: &mut Builder) {
    let gateways: Vec<&Arc<Cfg<Gateway>>> =
        cx.input.config.gateways.iter().filter(|g| selects(&g.spec, cx.node)).collect();
    if gateways.is_empty() {
        return;
    }
    let merged = merge(&gateways, &mut out.messages);
    let mut vss = VsCache::new(cx);
    check_vs_hosts(&gateways, &mut vss, &mut out.messages);

    let mut listeners: Vec<Listener> = Vec::new();
    let mut route_names: BTreeSet<Str> = BTreeSet::new();
    // SNI hosts already claimed by passthrough chains, per listener port: host -> bind.
    let mut sni_by_port: HashMap<u16, HashMap<Str, Str>> = HashMap::new();
    for (key, ms) in &merged.ports {
        let mut chains = Vec::new();
        if Protocol::parse(key.protocol).is_some_and(|p| p.is_http()) {
            // Plain-text HTTP servers of this port share one chain and one route table.
            if let Some(route) = &ms.route_name {
                chains.push(FilterChain {
                    name: route.clone(),
                    matcher: ChainMatch::default(),
                    tls: None,
                    action: ChainAction::Http { route_table: route.clone() },
                });
                route_names.insert(route.clone());
            }
        } else {
            for &i in &ms.servers {
                let s = &merged.servers[i];
                match (&s.route_name, s.tls()) {
                    (Some(route), Some(tls)) if s.is_https_terminated() => {
                        chains.push(FilterChain {
                            name: route.clone(),
                            matcher: ChainMatch {
                                server_names: server_names(&s.sni_hosts()),
                                transport: Some(Transport::Tls),
                                ..ChainMatch::default()
                            },
                            tls: Some(server_tls(tls)),
                            action: ChainAction::Http { route_table: route.clone() },
                        });
                        route_names.insert(route.clone());
                    }
                    _ => chains.extend(tcp_chains(cx, s, &mut vss, &mut sni_by_port, &mut out.messages)),
                }
            }
        }
        let name = listener_name(Some(key.bind), key.port);
        let pos = match listeners.iter().position(|l| l.name == name && l.port == key.port) {
            Some(p) => p,
            None => {
                listeners.push(Listener {
                    name,
                    role: ListenerRole::Gateway,
                    bind: BindScope::Gateway,
                    address: (!key.bind.is_empty()).then(|| Str::from(key.bind)),
                    port: key.port,
                    filter_chains: Vec::new(),
                    origins: Vec::new(),
                });
                listeners.len() - 1
            }
        };
        let listener = &mut listeners[pos];
        listener.filter_chains.extend(chains);
        for &i in &ms.servers {
            let origin = merged.servers[i].object();
            if !listener.origins.contains(&origin) {
                listener.origins.push(origin);
            }
        }
    }
    for mut l in listeners {
        // Istio drops a listener without filter chains (e.g. a TCP server that no VirtualService routes).
        if l.filter_chains.is_empty() {
            continue;
        }
        order_chains(&mut l.filter_chains);
        out.listeners.push(l);
    }
    for name in route_names {
        let table = http_route_table(cx, &merged, &name, &mut vss, &mut out.messages);
        out.route_tables.push(table);
    }
}

/// Whether a Gateway applies to `node`: no selector (or an empty one) selects every workload.
fn selects(gw: &Gateway, node: &crate::node::Node) -> bool {
    gw.selector.as_ref().is_none_or(|sel| node.selected_by(sel))
}

/// One server of a selecting Gateway, with Istio's sanitizing applied.
struct GwServer<'a> {
    cfg: &'a Arc<Cfg<Gateway>>,
    /// `ns/name` of the Gateway.
    gateway: Str,
    index: usize,
    server: &'a Server,
    /// Lower-cased; `./h` resolved to `<gw-ns>/h`, `*/h` to `h`.
    hosts: Vec<Str>,
    port: u16,
    protocol: Option<Protocol>,
    protocol_name: &'a str,
    port_name: &'a str,
    bind: &'a str,
    /// `http.<port>` or `https.<port>.<portName>.<gw>.<ns>` (plus `.<bind>`), Istio `gatewayRDSRouteName`.
    route_name: Option<Str>,
}

impl<'a> GwServer<'a> {
    fn new(cfg: &'a Arc<Cfg<Gateway>>, index: usize, server: &'a Server) -> Option<GwServer<'a>> {
        let port = server.port.as_ref()?;
        let number = u16::try_from(port.number).ok().filter(|n| *n != 0)?;
        let mut s = GwServer {
            cfg,
            gateway: format!("{}/{}", cfg.namespace, cfg.name).into(),
            index,
            server,
            hosts: sanitize_hosts(&server.hosts, &cfg.namespace),
            port: number,
            protocol: Protocol::parse(&port.protocol),
            protocol_name: &port.protocol,
            port_name: &port.name,
            bind: &server.bind,
            route_name: None,
        };
        s.route_name = s.rds_route_name();
        Some(s)
    }

    fn tls(&self) -> Option<&'a ServerTlsSettings> {
        self.server.tls.as_ref()
    }
    fn is_http_protocol(&self) -> bool {
        self.protocol.is_some_and(|p| p.is_http())
    }
    /// Istio `IsPassThroughServer`.
    fn is_passthrough(&self) -> bool {
        self.tls().is_some_and(|t| matches!(t.mode, ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough))
    }
    /// Istio `IsTLSServer`: TLS settings on a non-HTTP port (an HTTP port's TLS block is only `httpsRedirect`).
    fn is_tls_server(&self) -> bool {
        self.tls().is_some() && !self.is_http_protocol()
    }
    /// Istio `IsHTTPServer`: HTTP family, or HTTPS that terminates TLS.
    fn is_http_server(&self) -> bool {
        self.is_http_protocol() || (self.protocol == Some(Protocol::Https) && !self.is_passthrough())
    }
    /// Istio `IsHTTPSServerWithTLSTermination`.
    fn is_https_terminated(&self) -> bool {
        self.tls().is_some() && self.protocol == Some(Protocol::Https) && !self.is_passthrough()
    }

    fn rds_route_name(&self) -> Option<Str> {
        let bind = if self.bind.is_empty() { String::new() } else { format!(".{}", self.bind) };
        if self.is_http_protocol() {
            return Some(format!("http.{}{bind}", self.port).into());
        }
        if self.protocol == Some(Protocol::Https) && !self.is_passthrough() {
            let (name, ns) = (&self.cfg.name, &self.cfg.namespace);
            return Some(format!("https.{}.{}.{name}.{ns}{bind}", self.port, self.port_name).into());
        }
        None
    }

    /// The server's hosts without namespace prefixes, deduplicated and sorted (Istio `GetSNIHostsForServer`).
    fn sni_hosts(&self) -> Vec<Str> {
        let set: BTreeSet<Str> =
            self.hosts.iter().map(|h| h.split_once('/').map_or(h.clone(), |(_, name)| Str::from(name))).collect();
        set.into_iter().collect()
    }

    /// `Gateway ns/name`.
    fn object(&self) -> Str {
        format!("Gateway {}", self.gateway).into()
    }
    fn origin(&self) -> Option<Str> {
        Some(self.cfg.origin_at(&format!("spec.servers[{}]", self.index)))
    }
    /// How messages name the server: its `name`, else its index and port name.
    fn label(&self) -> String {
        if self.server.name.is_empty() {
            format!("servers[{}] ({})", self.index, self.port_name)
        } else {
            self.server.name.clone()
        }
    }
    /// `<port>.<portName>.<gw>.<ns>`, for chain names.
    fn chain_suffix(&self) -> String {
        format!("{}.{}.{}.{}", self.port, self.port_name, self.cfg.name, self.cfg.namespace)
    }
}

/// Istio `sanitizeServerHostNamespace`: `./h` -> `<ns>/h`, `*/h` -> `h`, `*/*` -> `*`; lower-cased.
fn sanitize_hosts(hosts: &[String], namespace: &str) -> Vec<Str> {
    hosts
        .iter()
        .map(|h| {
            let h = h.to_ascii_lowercase();
            match h.split_once('/') {
                Some((".", name)) => format!("{namespace}/{name}").into(),
                Some(("*", name)) => name.into(),
                _ => h.into(),
            }
        })
        .collect()
}

/// Server hosts that admit VirtualServices from `namespace`, namespace prefix stripped (Istio `NamesForNamespace`).
fn names_for_namespace<'h>(hosts: &'h [Str], namespace: &str) -> Vec<&'h str> {
    hosts
        .iter()
        .filter_map(|h| match h.split_once('/') {
            Some((ns, name)) => (ns == namespace || ns == "*").then_some(name),
            None => Some(&**h),
        })
        .collect()
}

/// Istio `Names.Intersection`: for each overlapping pair, the more specific of the two.
fn intersection(server_hosts: &[&str], vs_hosts: &[Str]) -> Vec<Str> {
    let mut out: Vec<Str> = Vec::new();
    for sh in server_hosts {
        for vh in vs_hosts {
            let pick: Option<Str> = if crate::host::subset_of(sh, vh) {
                Some((*sh).into())
            } else if crate::host::subset_of(vh, sh) {
                Some(vh.clone())
            } else {
                None
            };
            if let Some(p) = pick
                && !out.contains(&p)
            {
                out.push(p);
            }
        }
    }
    out
}

/// Istio `pickMatchingGatewayHosts` (non-empty): some VS host overlaps a server host admitting the VS's namespace.
fn vs_matches_server(s: &GwServer<'_>, vs: &ResolvedVs) -> bool {
    let admitted = names_for_namespace(&s.hosts, &vs.cfg.namespace);
    vs.hosts.iter().any(|vh| admitted.iter().any(|sh| crate::host::matches(sh, vh)))
}

/// `(port, protocol as written, bind)`: Istio's `ServerPort`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ServerPortKey<'a> {
    port: u16,
    protocol: &'a str,
    bind: &'a str,
}

#[derive(Debug, Default)]
struct MergedServers {
    /// Indices into `Merged::servers`.
    servers: Vec<usize>,
    /// The shared route table of plain-text HTTP servers.
    route_name: Option<Str>,
}

/// Istio `MergedGateway`: the servers of all selecting Gateways, grouped by port.
struct Merged<'a> {
    servers: Vec<GwServer<'a>>,
    /// In first-seen order (Istio `ServerPorts`).
    ports: Vec<(ServerPortKey<'a>, MergedServers)>,
    /// Route table name -> servers whose virtual hosts it holds.
    by_route: BTreeMap<Str, Vec<usize>>,
}

impl<'a> Merged<'a> {
    fn find(&self, key: ServerPortKey<'a>) -> Option<usize> {
        self.ports.iter().position(|(k, _)| *k == key)
    }

    /// Appends server `idx` to the entry for `key`, creating it (with `route_name`) when new.
    fn push_server(&mut self, key: ServerPortKey<'a>, idx: usize, route_name: Option<Str>) {
        match self.find(key) {
            Some(p) => self.ports[p].1.servers.push(idx),
            None => self.ports.push((key, MergedServers { servers: vec![idx], route_name })),
        }
    }
}

/// Istio `canMergeProtocols`: only plain-text HTTP-family servers share a port.
fn can_merge(new: Option<Protocol>, current: Option<Protocol>) -> bool {
    current.is_some_and(|c| c.is_http()) && new.is_some_and(|n| n.is_http())
}

/// Istio `mergeGateways`: servers of all Gateways in order, conflicting ones skipped with a message.
fn merge<'a>(gateways: &[&'a Arc<Cfg<Gateway>>], messages: &mut Messages) -> Merged<'a> {
    let mut m = Merged { servers: Vec::new(), ports: Vec::new(), by_route: BTreeMap::new() };
    let mut gateway_ports: HashSet<u16> = HashSet::new();
    // Port -> the plain-text server that owns it (key, server index).
    let mut plain_text: HashMap<u16, (ServerPortKey<'a>, usize)> = HashMap::new();
    // Port -> TLS host -> (bind, gateway that claimed it).
    let mut tls_hosts: HashMap<u16, HashMap<Str, (&'a str, Str)>> = HashMap::new();

    for cfg in gateways {
        for (index, server) in cfg.spec.servers.iter().enumerate() {
            let Some(s) = GwServer::new(cfg, index, server) else { continue };
            let conflict = |messages: &mut Messages, s: &GwServer<'_>, text: String| {
                messages.error(
                    code::CONFLICTING_GATEWAYS,
                    s.object(),
                    s.origin(),
                    format!("server {} on port {}: {text}; the server is skipped", s.label(), s.port),
                );
            };
            if s.tls().is_some() {
                // Two TLS servers cannot claim one host on one port and bind (they would be the same SNI match).
                let known = tls_hosts.entry(s.port).or_default();
                let dups: Vec<(&Str, &Str)> = s
                    .hosts
                    .iter()
                    .filter_map(|h| known.get(h).filter(|(b, _)| *b == s.bind).map(|(_, g)| (h, g)))
                    .collect();
                if let Some((_, other)) = dups.first() {
                    let hosts: Vec<&str> = dups.iter().map(|(h, _)| &***h).collect();
                    let text = format!("host {} is already served with TLS by Gateway {other}", hosts.join(", "));
                    conflict(messages, &s, text);
                    continue;
                }
                for h in &s.hosts {
                    known.insert(h.clone(), (s.bind, s.gateway.clone()));
                }
            }
            let key = ServerPortKey { port: s.port, protocol: s.protocol_name, bind: s.bind };
            let idx = m.servers.len();
            let route_name = s.route_name.clone();
            let (is_tls_server, is_http_server, protocol) = (s.is_tls_server(), s.is_http_server(), s.protocol);

            if !gateway_ports.insert(s.port) {
                if let Some(&(current, cur_idx)) = plain_text.get(&s.port) {
                    if current.bind == s.bind && !can_merge(protocol, Protocol::parse(current.protocol)) {
                        let other = &m.servers[cur_idx];
                        let text = format!(
                            "protocol {} conflicts with the {} server {} of Gateway {} on the same port",
                            s.protocol_name,
                            current.protocol,
                            other.label(),
                            other.gateway
                        );
                        conflict(messages, &s, text);
                        continue;
                    }
                    if current.bind == s.bind && route_name.is_none() {
                        conflict(messages, &s, "no route table name can be built for it".into());
                        continue;
                    }
                    let bind = s.bind;
                    m.servers.push(s);
                    if current.bind != bind {
                        // Another bind address: a listener of its own.
                        match m.find(key) {
                            None => add_plain_text(&mut m, &mut plain_text, key, idx, route_name),
                            Some(p) => {
                                m.ports[p].1.route_name = route_name.clone();
                                m.ports[p].1.servers.push(idx);
                                if let Some(r) = route_name {
                                    m.by_route.entry(r).or_default().push(idx);
                                }
                            }
                        }
                    } else {
                        m.push_server(current, idx, None);
                        if let Some(r) = route_name {
                            m.by_route.entry(r).or_default().push(idx);
                        }
                    }
                    continue;
                }
                // Only TLS servers so far on this port: a plain-text server can still take it.
                if !is_tls_server {
                    m.servers.push(s);
                    plain_text.insert(key.port, (key, idx));
                    if is_http_server && let Some(r) = &route_name {
                        m.by_route.insert(r.clone(), vec![idx]);
                    }
                    m.push_server(key, idx, route_name);
                    continue;
                }
                if is_http_server {
                    let Some(r) = &route_name else {
                        conflict(messages, &s, "no route table name can be built for it".into());
                        continue;
                    };
                    if m.by_route.contains_key(r) {
                        conflict(messages, &s, format!("route table {r} is already used by another HTTPS server"));
                        continue;
                    }
                    m.by_route.insert(r.clone(), vec![idx]);
                }
                // (Istio's check for a TLS server without TLS settings cannot fire here: this is a TLS server.)
                m.servers.push(s);
                m.push_server(key, idx, None);
            } else {
                m.servers.push(s);
                add_plain_text(&mut m, &mut plain_text, key, idx, route_name);
            }
        }
    }
    m
}

/// Istio `addPlainTextServer`: a new port entry (the server is already in `m.servers`).
fn add_plain_text<'a>(
    m: &mut Merged<'a>,
    plain_text: &mut HashMap<u16, (ServerPortKey<'a>, usize)>,
    key: ServerPortKey<'a>,
    idx: usize,
    route_name: Option<Str>,
) {
    let s = &m.servers[idx];
    if !s.is_tls_server() {
        plain_text.insert(key.port, (key, idx));
    }
    if s.is_http_server()
        && let Some(r) = &route_name
    {
        m.by_route.insert(r.clone(), vec![idx]);
    }
    m.push_server(key, idx, route_name);
}

/// VirtualServices bound to each gateway, looked up once per compile.
struct VsCache<'c> {
    cx: &'c Context<'c>,
    by_gateway: HashMap<Str, Vec<&'c Arc<ResolvedVs>>>,
}

impl<'c> VsCache<'c> {
    fn new(cx: &'c Context<'c>) -> Self {
        VsCache { cx, by_gateway: HashMap::new() }
    }
    /// Istio `VirtualServicesForGateway(proxy namespace, gateway)`.
    fn for_gateway(&mut self, gateway: &Str) -> Vec<&'c Arc<ResolvedVs>> {
        let cx = self.cx;
        self.by_gateway
            .entry(gateway.clone())
            .or_insert_with(|| cx.vss.for_gateway(gateway, &cx.node.namespace))
            .clone()
    }
}

/// IST0132 (`istioctl analyze`'s gateway analyzer): a VirtualService bound to
/// a Gateway none of whose server hosts matches any of its hosts.
fn check_vs_hosts(gateways: &[&Arc<Cfg<Gateway>>], vss: &mut VsCache<'_>, messages: &mut Messages) {
    for g in gateways {
        let key: Str = format!("{}/{}", g.namespace, g.name).into();
        let hosts: Vec<Str> = g.spec.servers.iter().flat_map(|s| sanitize_hosts(&s.hosts, &g.namespace)).collect();
        for vs in vss.for_gateway(&key) {
            let admitted = names_for_namespace(&hosts, &vs.cfg.namespace);
            if vs.hosts.iter().any(|vh| admitted.iter().any(|gh| crate::host::matches(gh, vh))) {
                continue;
            }
            let path = match vs.gateways.iter().position(|gw| *gw == key) {
                Some(i) => format!("spec.gateways[{i}]"),
                None => "spec.gateways".into(),
            };
            let vs_hosts: Vec<&str> = vs.hosts.iter().map(|h| &**h).collect();
            messages.warn(
                code::VS_HOST_NOT_FOUND_IN_GATEWAY,
                vs.object.clone(),
                Some(vs.cfg.origin_at(&path)),
                format!(
                    "one or more host [{}] defined in {} not found in Gateway {key}.",
                    vs_hosts.join(" "),
                    vs.object
                ),
            );
        }
    }
}

/// The filter chains of a server that is not a terminated HTTPS server
/// (Istio `createGatewayTCPFilterChainOpts`): opaque TCP, TLS-terminated TCP,
/// PASSTHROUGH by SNI, or AUTO_PASSTHROUGH.
fn tcp_chains(
    cx: &Context<'_>,
    s: &GwServer<'_>,
    vss: &mut VsCache<'_>,
    sni_by_port: &mut HashMap<u16, HashMap<Str, Str>>,
    messages: &mut Messages,
) -> Vec<FilterChain> {
    match s.tls() {
        None => first_tcp_route(cx, s, vss, messages)
            .map(|r| FilterChain {
                name: format!("tcp.{}", s.chain_suffix()).into(),
                matcher: ChainMatch::default(),
                tls: None,
                action: ChainAction::Tcp { routes: vec![r] },
            })
            .into_iter()
            .collect(),
        Some(tls) if !s.is_passthrough() => first_tcp_route(cx, s, vss, messages)
            .map(|r| FilterChain {
                name: format!("tls.{}", s.chain_suffix()).into(),
                matcher: ChainMatch {
                    server_names: server_names(&s.sni_hosts()),
                    transport: Some(Transport::Tls),
                    ..ChainMatch::default()
                },
                tls: Some(server_tls(tls)),
                action: ChainAction::Tcp { routes: vec![r] },
            })
            .into_iter()
            .collect(),
        Some(tls) if tls.mode == ServerTlsMode::AutoPassthrough => auto_passthrough_chain(cx, s).into_iter().collect(),
        Some(_) => passthrough_chains(cx, s, vss, sni_by_port, messages),
    }
}

/// Istio `buildGatewayNetworkFiltersFromTCPRoutes`: the first TCP rule of the
/// first bound VirtualService whose hosts the server admits. Gateways do not
/// match destination subnets.
fn first_tcp_route(
    cx: &Context<'_>,
    s: &GwServer<'_>,
    vss: &mut VsCache<'_>,
    messages: &mut Messages,
) -> Option<TcpRoute> {
    let env = cx.route_env(s.port, Some(&s.gateway));
    for vs in vss.for_gateway(&s.gateway) {
        if !vs_matches_server(s, vs) {
            continue;
        }
        if let Some(mut r) = crate::route::tcp_routes(vs, &env, messages).into_iter().next() {
            r.destination_subnets.clear();
            return Some(r);
        }
    }
    None
}

/// Istio `buildGatewayNetworkFiltersFromTLSRoutes` (PASSTHROUGH): one chain per
/// TLS match of the bound VirtualServices, by SNI; an SNI host already claimed
/// on this port and bind is not claimed again (Envoy would reject the duplicate).
fn passthrough_chains(
    cx: &Context<'_>,
    s: &GwServer<'_>,
    vss: &mut VsCache<'_>,
    sni_by_port: &mut HashMap<u16, HashMap<Str, Str>>,
    messages: &mut Messages,
) -> Vec<FilterChain> {
    let env = cx.route_env(s.port, Some(&s.gateway));
    let known = sni_by_port.entry(s.port).or_default();
    let mut chains = Vec::new();
    for vs in vss.for_gateway(&s.gateway) {
        if !vs_matches_server(s, vs) {
            continue;
        }
        for (sni, mut route) in crate::route::tls_routes(vs, &env, messages) {
            if sni.iter().any(|h| known.get(h).is_some_and(|b| &**b == s.bind)) {
                continue;
            }
            for h in &sni {
                known.insert(h.clone(), s.bind.into());
            }
            route.destination_subnets.clear();
            chains.push(FilterChain {
                name: format!("passthrough.{}.{}", s.chain_suffix(), chains.len()).into(),
                matcher: ChainMatch {
                    server_names: server_names(&sni),
                    transport: Some(Transport::Tls),
                    ..ChainMatch::default()
                },
                tls: None,
                action: ChainAction::Tcp { routes: vec![route] },
            });
        }
    }
    chains
}

/// Istio `builtAutoPassthroughFilterChains`: the SNI names
/// `outbound_.<port>_.<subset>_.<host>` of every in-mesh service (and
/// DestinationRule subset) whose host the server admits; the data path takes
/// the cluster from the SNI.
fn auto_passthrough_chain(cx: &Context<'_>, s: &GwServer<'_>) -> Option<FilterChain> {
    let hosts = s.sni_hosts();
    let mut names: Vec<Str> = Vec::new();
    for svc in cx.reachable_services() {
        if svc.location == Location::MeshExternal || !hosts.iter().any(|h| crate::host::subset_of(&svc.hostname, h)) {
            continue;
        }
        let subsets: Vec<String> = cx
            .drs
            .lookup(&cx.node.namespace, &svc.namespace, &svc.hostname)
            .map(|dr| dr.subsets.iter().map(|ss| ss.name.clone()).collect())
            .unwrap_or_default();
        for p in svc.ports.iter().filter(|p| p.protocol != Some(Protocol::Udp)) {
            names.push(format!("outbound_.{}_._.{}", p.port, svc.hostname).into());
            for subset in &subsets {
                names.push(format!("outbound_.{}_.{subset}_.{}", p.port, svc.hostname).into());
            }
        }
    }
    if names.is_empty() {
        return None;
    }
    names.sort();
    names.dedup();
    Some(FilterChain {
        name: format!("auto_passthrough.{}", s.chain_suffix()).into(),
        matcher: ChainMatch { server_names: names, transport: Some(Transport::Tls), ..ChainMatch::default() },
        tls: None,
        action: ChainAction::AutoPassthrough,
    })
}

/// The TLS termination settings of a server, as configured.
fn server_tls(t: &ServerTlsSettings) -> ServerTls {
    let strs = |v: &[String]| v.iter().map(|s| Str::from(s.as_str())).collect::<Vec<Str>>();
    let opt = |s: &str| (!s.is_empty()).then(|| Str::from(s));
    let credential_names = if !t.credential_names.is_empty() {
        strs(&t.credential_names)
    } else {
        opt(&t.credential_name).into_iter().collect()
    };
    let mut certificates = Vec::new();
    if !t.server_certificate.is_empty() || !t.private_key.is_empty() {
        certificates.push(CertificateFiles {
            certificate: t.server_certificate.as_str().into(),
            private_key: t.private_key.as_str().into(),
        });
    }
    certificates.extend(t.tls_certificates.iter().map(|c| CertificateFiles {
        certificate: c.server_certificate.as_str().into(),
        private_key: c.private_key.as_str().into(),
    }));
    ServerTls {
        mode: t.mode.as_str().into(),
        credential_names,
        certificates,
        ca_certificates: opt(&t.ca_certificates),
        ca_crl: opt(&t.ca_crl),
        subject_alt_names: strs(&t.subject_alt_names),
        verify_certificate_spki: strs(&t.verify_certificate_spki),
        verify_certificate_hash: strs(&t.verify_certificate_hash),
        min_protocol_version: t.min_protocol_version.as_str().into(),
        max_protocol_version: t.max_protocol_version.as_str().into(),
        cipher_suites: strs(&t.cipher_suites),
    }
}

/// A virtual host being assembled for one hostname.
struct VhostDraft {
    name: Str,
    routes: Vec<Route>,
    require_tls: bool,
}

/// Istio `buildGatewayHTTPRouteConfig`: for each server of the route table,
/// every bound VirtualService whose hosts intersect the server's hosts
/// contributes its routes to one virtual host per intersecting hostname
/// (routes concatenated in VirtualService order, catch-alls moved last).
fn http_route_table(
    cx: &Context<'_>,
    merged: &Merged<'_>,
    name: &Str,
    vss: &mut VsCache<'_>,
    messages: &mut Messages,
) -> RouteTable {
    let servers: &[usize] = merged.by_route.get(name).map_or(&[], |v| v.as_slice());
    // Routes per (gateway, VirtualService), built once; each use of them by a host is
    // recorded first and applied after, so that the last use moves the routes instead of
    // copying them (usually a VirtualService's routes have one host, one use).
    let mut routes_cache: HashMap<(Str, Str), usize> = HashMap::new();
    let mut built: Vec<(Vec<Route>, usize)> = Vec::new();
    let mut uses: Vec<(usize, Str)> = Vec::new();
    let strings = crate::route::RouteStrings::default();
    let mut drafts: BTreeMap<Str, VhostDraft> = BTreeMap::new();
    for &i in servers {
        let s = &merged.servers[i];
        let redirect = s.tls().is_some_and(|t| t.https_redirect);
        let env = cx.route_env(s.port, Some(&s.gateway));
        for vs in vss.for_gateway(&s.gateway) {
            let server_hosts = names_for_namespace(&s.hosts, &vs.cfg.namespace);
            let hosts = intersection(&server_hosts, &vs.hosts);
            if hosts.is_empty() {
                continue;
            }
            let at = *routes_cache.entry((s.gateway.clone(), vs.object.clone())).or_insert_with(|| {
                built.push((crate::route::http_routes_with(vs, &env, &strings, messages), 0));
                built.len() - 1
            });
            // Istio skips a VirtualService without routes here (e.g. only `tcp` rules, or all matches filtered).
            if built[at].0.is_empty() {
                continue;
            }
            for h in hosts {
                let d = drafts.entry(h.clone()).or_insert_with(|| VhostDraft {
                    name: format!("{h}:{}", s.port).into(),
                    routes: Vec::new(),
                    require_tls: false,
                });
                d.require_tls |= redirect;
                built[at].1 += 1;
                uses.push((at, h.clone()));
            }
        }
        if redirect {
            // Every host of an httpsRedirect server redirects, VirtualService or not. Istio looks
            // `ns/host` entries up with their prefix, which never matches a Host header: skipped.
            for h in s.hosts.iter().filter(|h| !h.contains('/')) {
                drafts
                    .entry(h.clone())
                    .or_insert_with(|| VhostDraft {
                        name: format!("{h}:{}", s.port).into(),
                        routes: Vec::new(),
                        require_tls: true,
                    })
                    .require_tls = true;
            }
        }
    }
    for (at, h) in uses {
        let (routes, left) = &mut built[at];
        *left -= 1;
        let routes = if *left == 0 { std::mem::take(routes) } else { routes.clone() };
        if let Some(d) = drafts.get_mut(&h) {
            if d.routes.is_empty() {
                d.routes = routes;
            } else {
                d.routes.extend(routes);
            }
        }
    }
    let mut virtual_hosts = if drafts.is_empty() {
        let port = servers.first().map_or(0, |&i| merged.servers[i].port);
        vec![VirtualHost {
            name: format!("blackhole:{port}").into(),
            domains: vec!["*".into()],
            routes: Vec::new(),
            require_tls: false,
        }]
    } else {
        collapse(drafts)
    };
    virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
    RouteTable { name: name.clone(), virtual_hosts }
}

/// Istio `collapseDuplicateRoutes` + `SortVHostRoutes`: hostnames with
/// identical routes share one virtual host (named after the most specific
/// hostname); within a virtual host, catch-all routes go last.
fn collapse(drafts: BTreeMap<Str, VhostDraft>) -> Vec<VirtualHost> {
    let mut hosts: Vec<(Str, VhostDraft)> = drafts.into_iter().collect();
    hosts.sort_by(|a, b| crate::host::more_specific(&a.0, &b.0));
    let mut out: Vec<VirtualHost> = Vec::new();
    // Virtual hosts by a digest of what equal route lists share (names, clusters), so that
    // finding the one with the same routes compares a few candidates, not all of them.
    let mut by_digest: HashMap<u64, Vec<usize>> = HashMap::new();
    for (host, d) in hosts {
        let candidates = by_digest.entry(routes_digest(d.require_tls, &d.routes)).or_default();
        match candidates.iter().copied().find(|&i| out[i].require_tls == d.require_tls && out[i].routes == d.routes) {
            Some(i) => out[i].domains.push(host),
            None => {
                candidates.push(out.len());
                out.push(VirtualHost {
                    name: d.name,
                    domains: vec![host],
                    routes: d.routes,
                    require_tls: d.require_tls,
                });
            }
        }
    }
    for v in &mut out {
        // Stable and in place: partitioning into new lists gave every list room for four routes
        // (2.7 KB per virtual host, kept in the snapshot).
        v.routes.sort_by_key(|r| r.matcher.is_catch_all());
    }
    out
}

/// A hash of the parts of a route list that equal lists have in common: the
/// route names and the clusters they forward to (equal lists, equal digests).
fn routes_digest(require_tls: bool, routes: &[Route]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    require_tls.hash(&mut h);
    routes.len().hash(&mut h);
    for r in routes {
        r.name.hash(&mut h);
        if let RouteAction::Forward { clusters, .. } = &r.action {
            for c in clusters {
                c.cluster.hash(&mut h);
                c.weight.hash(&mut h);
            }
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::{SimRequest, explain};
    use crate::listener::testing::*;
    use crate::model::PathMatch;

    const PRODUCTPAGE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.1.0.10}]
"#;

    /// A MESH_INTERNAL service `name.ns.svc.cluster.local` with one HTTP port and one endpoint.
    fn service(name: &str, ns: &str, port: u16) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  hosts: [{name}.{ns}.svc.cluster.local]\n  location: MESH_INTERNAL\n\
             \x20 ports: [{{number: {port}, name: http, protocol: HTTP}}]\n  resolution: STATIC\n\
             \x20 endpoints: [{{address: 10.1.0.1}}]\n"
        )
    }

    fn bookinfo_gateway_yaml() -> Option<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/spec/samples/bookinfo/networking/bookinfo-gateway.yaml");
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(_) => {
                // CI always has ../shared beside the clone; elsewhere it may be absent.
                assert!(std::env::var_os("CI").is_none(), "{} is missing", path.display());
                eprintln!("skipping: {} not found", path.display());
                None
            }
        }
    }

    #[test]
    fn bookinfo_gateway_routes_productpage() {
        let Some(gw) = bookinfo_gateway_yaml() else { return };
        let snap = compile(&format!("{gw}\n---{PRODUCTPAGE}"), &gateway_node());
        assert_eq!(snap.listeners.len(), 1);
        let l = listener(&snap, "0.0.0.0_8080");
        assert_eq!(
            (l.role, l.bind, l.port, l.address.as_deref()),
            (ListenerRole::Gateway, BindScope::Gateway, 8080, None)
        );
        assert_eq!(l.origins, vec![Str::from("Gateway default/bookinfo-gateway")]);
        assert_eq!(l.filter_chains.len(), 1);
        assert_eq!(l.filter_chains[0].action, ChainAction::Http { route_table: "http.8080".into() });
        assert_eq!(l.filter_chains[0].matcher, ChainMatch::default());

        let t = table(&snap, "http.8080");
        assert_eq!(vhost_names(t), ["*:8080"]);
        let vh = &t.virtual_hosts[0];
        assert_eq!(vh.domains, vec![Str::from("*")]);
        assert!(!vh.require_tls);
        let paths: Vec<&PathMatch> = vh.routes.iter().filter_map(|r| r.matcher.path.as_ref()).collect();
        assert_eq!(
            paths,
            [
                &PathMatch::Exact("/productpage".into()),
                &PathMatch::Prefix("/static".into()),
                &PathMatch::Exact("/login".into()),
                &PathMatch::Exact("/logout".into()),
                &PathMatch::Prefix("/api/v1/products".into()),
            ]
        );
        for r in &vh.routes {
            assert_eq!(clusters_of(r), ["outbound|9080||productpage.default.svc.cluster.local"]);
        }
        assert!(snap.cluster("outbound|9080||productpage.default.svc.cluster.local").is_some());
        assert!(snap.messages.is_empty(), "{:?}", snap.messages);

        let get = |url: &str| explain(&snap, &SimRequest::from_url("GET", url, vec![]).unwrap());
        assert!(get("http://bookinfo.example:8080/productpage").routed);
        assert!(get("http://10.0.0.1:8080/static/img.png").routed);
        let miss = get("http://bookinfo.example:8080/reviews");
        assert!(!miss.routed && miss.text.contains("404"), "{}", miss.text);
    }

    #[test]
    fn gateways_apply_to_nodes_their_selector_matches() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: everyone, namespace: istio-system}
spec:
  servers: [{port: {number: 81, name: http, protocol: HTTP}, hosts: ["*"]}]
"#;
        let snap = compile(yaml, &gateway_node());
        let ports: Vec<u16> = snap.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [81], "a Gateway without selector applies to every workload; `other` to none here");
        // The port has no VirtualService: a `blackhole:<port>` virtual host without routes answers 404.
        let t = table(&snap, "http.81");
        assert_eq!(vhost_names(t), ["blackhole:81"]);
        assert_eq!(t.virtual_hosts[0].domains, vec![Str::from("*")]);
        assert!(t.virtual_hosts[0].routes.is_empty());
        // A sidecar-only node gets no gateway listeners at all.
        let snap = compile(yaml, &sidecar_node("default"));
        assert!(snap.listeners.iter().all(|l| l.role != ListenerRole::Gateway));
    }

    #[test]
    fn virtual_services_without_http_routes_add_no_virtual_host() {
        let yaml = format!(
            "{}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: [\"*\"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-only, namespace: default}}
spec:
  hosts: [a.example.com]
  gateways: [gw]
  tcp: [{{route: [{{destination: {{host: web}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: mesh-only-rules, namespace: default}}
spec:
  hosts: [b.example.com]
  gateways: [gw, mesh]
  http: [{{match: [{{gateways: [mesh]}}], route: [{{destination: {{host: web}}}}]}}]
",
            service("web", "default", 80)
        );
        let snap = compile(&yaml, &gateway_node());
        assert_eq!(vhost_names(table(&snap, "http.80")), ["blackhole:80"]);
    }

    const TWO_GATEWAYS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw-a, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["a.example.com"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw-b, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http2, protocol: HTTP2}, hosts: ["*.example.com"]}]
"#;

    #[test]
    fn http_servers_on_one_port_share_a_route_table() {
        let yaml = format!(
            "{TWO_GATEWAYS}{}{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: a, namespace: default}}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [istio-system/gw-a, istio-system/gw-b]
  http: [{{route: [{{destination: {{host: svc-a}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: c, namespace: default}}
spec:
  hosts: [c.example.com]
  gateways: [istio-system/gw-a]
  http: [{{route: [{{destination: {{host: svc-b}}}}]}}]
",
            service("svc-a", "default", 8000),
            service("svc-b", "default", 8000)
        );
        let snap = compile(&yaml, &gateway_node());
        assert_eq!(snap.listeners.len(), 1);
        let l = listener(&snap, "0.0.0.0_80");
        assert_eq!(l.origins, vec![Str::from("Gateway istio-system/gw-a"), Str::from("Gateway istio-system/gw-b")]);
        let t = table(&snap, "http.80");
        // a.example.com comes through both gateways (routes from each), b.example.com through gw-b's
        // wildcard only; c's VirtualService is bound to gw-a, whose host does not cover c.example.com.
        assert_eq!(vhost_names(t), ["a.example.com:80", "b.example.com:80"]);
        let a = vhost(t, "a.example.com:80");
        assert_eq!(a.routes.len(), 2);
        assert_eq!(vhost(t, "b.example.com:80").routes.len(), 1);
        assert!(codes(&snap).contains(&code::VS_HOST_NOT_FOUND_IN_GATEWAY), "{:?}", snap.messages);
    }

    #[test]
    fn routes_merge_per_host_with_catch_alls_last_and_identical_hosts_collapse() {
        let yaml = format!(
            "{TWO_GATEWAYS}{}{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: first, namespace: default, creationTimestamp: '2024-01-01T00:00:00Z'}}
spec:
  hosts: [x.example.com, y.example.com]
  gateways: [istio-system/gw-b]
  http: [{{route: [{{destination: {{host: svc-a}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: second, namespace: default, creationTimestamp: '2024-01-02T00:00:00Z'}}
spec:
  hosts: [x.example.com]
  gateways: [istio-system/gw-b]
  http: [{{match: [{{uri: {{prefix: /api}}}}], route: [{{destination: {{host: svc-b}}}}]}}]
",
            service("svc-a", "default", 8000),
            service("svc-b", "default", 8000)
        );
        let snap = compile(&yaml, &gateway_node());
        let t = table(&snap, "http.80");
        assert_eq!(vhost_names(t), ["x.example.com:80", "y.example.com:80"]);
        let x = vhost(t, "x.example.com:80");
        assert_eq!(x.domains, vec![Str::from("x.example.com")]);
        // `second`'s /api route is concatenated after `first`'s catch-all, then catch-alls move last.
        let clusters: Vec<Vec<&str>> = x.routes.iter().map(clusters_of).collect();
        assert_eq!(
            clusters,
            [["outbound|8000||svc-b.default.svc.cluster.local"], ["outbound|8000||svc-a.default.svc.cluster.local"]]
        );
        assert!(x.routes[1].matcher.is_catch_all());
        // Moving catch-alls last keeps the lists at their size (the snapshot keeps them).
        let y = vhost(t, "y.example.com:80");
        assert_eq!((y.routes.len(), y.routes.capacity()), (1, 1));

        // Hosts with identical routes share one virtual host, named after the most specific host.
        let yaml2 = format!(
            "{TWO_GATEWAYS}{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: many, namespace: default}}
spec:
  hosts: [long.example.com, z.example.com, b.example.com]
  gateways: [istio-system/gw-b]
  http: [{{route: [{{destination: {{host: svc-a}}}}]}}]
",
            service("svc-a", "default", 8000)
        );
        let snap = compile(&yaml2, &gateway_node());
        let t = table(&snap, "http.80");
        assert_eq!(vhost_names(t), ["long.example.com:80"]);
        assert_eq!(t.virtual_hosts[0].domains, ["long.example.com", "b.example.com", "z.example.com"].map(Str::from));
    }

    #[test]
    fn server_host_namespace_admits_only_that_namespace() {
        let yaml = format!(
            "{}{}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: prod}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [\"./*.example.com\", \"dev/dev.example.com\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: prod-vs, namespace: prod}}
spec:
  hosts: [shop.example.com]
  gateways: [prod/gw]
  http: [{{route: [{{destination: {{host: web}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: dev-vs, namespace: dev}}
spec:
  hosts: [shop.example.com, dev.example.com]
  gateways: [prod/gw]
  http: [{{route: [{{destination: {{host: web}}}}]}}]
",
            service("web", "prod", 8080),
            service("web", "dev", 8080)
        );
        let snap = compile(&yaml, &gateway_node());
        let t = table(&snap, "http.80");
        assert_eq!(vhost_names(t), ["dev.example.com:80", "shop.example.com:80"]);
        // shop.example.com is admitted for `prod` only: dev-vs contributes nothing there.
        let shop = vhost(t, "shop.example.com:80");
        assert_eq!(shop.routes.len(), 1);
        assert_eq!(clusters_of(&shop.routes[0]), ["outbound|8080||web.prod.svc.cluster.local"]);
        let dev = vhost(t, "dev.example.com:80");
        assert_eq!(clusters_of(&dev.routes[0]), ["outbound|8080||web.dev.svc.cluster.local"]);
    }

    const HTTPS_GATEWAYS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: a-cert}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls: {mode: MUTUAL, serverCertificate: /etc/b.crt, privateKey: /etc/b.key, caCertificates: /etc/ca.crt, minProtocolVersion: TLSV1_2}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: late, namespace: istio-system, creationTimestamp: '2030-01-01T00:00:00Z'}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: other-cert}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [a.example.com]
    tls: {httpsRedirect: true}
"#;

    #[test]
    fn terminated_https_servers_get_own_route_tables_selected_by_sni() {
        let yaml = format!(
            "{HTTPS_GATEWAYS}{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: a, namespace: default}}
spec:
  hosts: [a.example.com]
  gateways: [istio-system/secure, istio-system/late]
  http: [{{route: [{{destination: {{host: svc-a}}}}]}}]
",
            service("svc-a", "default", 8000)
        );
        let snap = compile(&yaml, &gateway_node());
        let l = listener(&snap, "0.0.0.0_443");
        let names: Vec<&str> = l.filter_chains.iter().map(|c| &*c.name).collect();
        // The exact SNI before the wildcard, whatever the order of the servers.
        assert_eq!(names, ["https.443.https-a.secure.istio-system", "https.443.https-b.secure.istio-system"]);
        let a = &l.filter_chains[0];
        assert_eq!(a.matcher.server_names, vec![Str::from("a.example.com")]);
        assert_eq!(a.matcher.transport, Some(Transport::Tls));
        let tls = a.tls.as_ref().unwrap();
        assert_eq!((&*tls.mode, tls.credential_names.clone()), ("SIMPLE", vec![Str::from("a-cert")]));
        let b = l.filter_chains[1].tls.as_ref().unwrap();
        assert_eq!(&*b.mode, "MUTUAL");
        assert_eq!(b.certificates[0].certificate.as_ref(), "/etc/b.crt");
        assert_eq!(b.ca_certificates.as_deref(), Some("/etc/ca.crt"));
        assert_eq!(&*b.min_protocol_version, "TLSV1_2");

        let t = table(&snap, "https.443.https-a.secure.istio-system");
        assert_eq!(vhost_names(t), ["a.example.com:443"]);
        assert_eq!(clusters_of(&t.virtual_hosts[0].routes[0]), ["outbound|8000||svc-a.default.svc.cluster.local"]);
        // The wildcard server admits a.example.com too (most specific host of the intersection).
        let t = table(&snap, "https.443.https-b.secure.istio-system");
        assert_eq!(vhost_names(t), ["a.example.com:443"]);

        // `late` claims a.example.com on 443 again: skipped as a conflict (IST0145).
        let conflict: Vec<&crate::message::Message> =
            snap.messages.iter().filter(|m| m.code == code::CONFLICTING_GATEWAYS).collect();
        assert_eq!(conflict.len(), 1, "{:?}", snap.messages);
        assert_eq!(&*conflict[0].object, "Gateway istio-system/late");
        assert!(conflict[0].text.contains("a.example.com"), "{}", conflict[0].text);
        assert!(snap.route_table("https.443.https.late.istio-system").is_none());
        assert_eq!(l.origins, vec![Str::from("Gateway istio-system/secure")]);
    }

    #[test]
    fn https_redirect_requires_tls_on_every_host_of_the_server() {
        let yaml = format!(
            "{HTTPS_GATEWAYS}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: plain, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [b.example.com]
{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: b, namespace: default}}
spec:
  hosts: [b.example.com]
  gateways: [istio-system/plain]
  http: [{{route: [{{destination: {{host: svc-a}}}}]}}]
",
            service("svc-a", "default", 8000)
        );
        let snap = compile(&yaml, &gateway_node());
        let t = table(&snap, "http.80");
        // a.example.com has no VirtualService on port 80 but still redirects; b.example.com does not.
        let a = vhost(t, "a.example.com:80");
        assert!(a.require_tls && a.routes.is_empty());
        let b = vhost(t, "b.example.com:80");
        assert!(!b.require_tls && b.routes.len() == 1);
        let e = explain(&snap, &SimRequest::from_url("GET", "http://a.example.com/x", vec![]).unwrap());
        assert!(e.text.contains("301"), "{}", e.text);
    }

    #[test]
    fn conflicting_protocols_on_a_port_skip_the_later_server() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: istio-system, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8000, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: db, namespace: istio-system, creationTimestamp: '2024-01-02T00:00:00Z'}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 8000, name: tcp, protocol: TCP}, hosts: ["*"]}
  - {port: {number: 8000, name: tcp-bound, protocol: TCP}, hosts: ["*"], bind: 10.0.0.9}
"#;
        let snap = compile(yaml, &gateway_node());
        let msgs: Vec<&crate::message::Message> =
            snap.messages.iter().filter(|m| m.code == code::CONFLICTING_GATEWAYS).collect();
        assert_eq!(msgs.len(), 1, "{:?}", snap.messages);
        assert_eq!(&*msgs[0].object, "Gateway istio-system/db");
        assert!(msgs[0].text.contains("TCP") && msgs[0].text.contains("web"), "{}", msgs[0].text);
        // The server with its own bind address does not conflict, but routes nothing (no TCP
        // VirtualService), so Istio builds no listener for it.
        let names: Vec<&str> = snap.listeners.iter().map(|l| &*l.name).collect();
        assert_eq!(names, ["0.0.0.0_8000"]);
    }

    #[test]
    fn bind_gives_an_own_listener_and_route_table() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: 80, name: http-internal, protocol: HTTP}, hosts: ["*"], bind: 10.0.0.9}
"#;
        let snap = compile(yaml, &gateway_node());
        let names: Vec<&str> = snap.listeners.iter().map(|l| &*l.name).collect();
        assert_eq!(names, ["0.0.0.0_80", "10.0.0.9_80"]);
        let bound = listener(&snap, "10.0.0.9_80");
        assert_eq!(bound.address.as_deref(), Some("10.0.0.9"));
        assert_eq!(bound.filter_chains[0].action, ChainAction::Http { route_table: "http.80.10.0.0.9".into() });
        assert!(snap.route_table("http.80").is_some() && snap.route_table("http.80.10.0.0.9").is_some());
    }

    #[test]
    fn tcp_servers_forward_by_the_first_tcp_route() {
        // Istio's tcp-echo sample.
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-echo-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo-destination, namespace: default}
spec:
  host: tcp-echo
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: ["*"]
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{port: 31400}]
    route:
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v1}, weight: 80}
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v2}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 10.1.0.7, labels: {version: v1}}, {address: 10.1.0.8, labels: {version: v2}}]
"#;
        let snap = compile(yaml, &gateway_node());
        let l = listener(&snap, "0.0.0.0_31400");
        assert_eq!(l.filter_chains.len(), 1);
        let c = &l.filter_chains[0];
        assert_eq!(
            (&*c.name, &c.matcher, c.tls.is_none()),
            ("tcp.31400.tcp.tcp-echo-gateway.default", &ChainMatch::default(), true)
        );
        let ChainAction::Tcp { routes } = &c.action else { panic!("{:?}", c.action) };
        assert_eq!(routes.len(), 1);
        let weights: Vec<(&str, u32)> = routes[0].clusters.iter().map(|w| (&*w.cluster, w.weight)).collect();
        assert_eq!(
            weights,
            [
                ("outbound|9000|v1|tcp-echo.default.svc.cluster.local", 80),
                ("outbound|9000|v2|tcp-echo.default.svc.cluster.local", 20)
            ]
        );
        assert!(snap.route_tables.is_empty());
    }

    const PASSTHROUGH: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: pass, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 15443, name: tls-mesh, protocol: TLS}
    hosts: ["*.local"]
    tls: {mode: AUTO_PASSTHROUGH}
"#;

    #[test]
    fn passthrough_servers_route_by_sni() {
        let yaml = format!(
            "{PASSTHROUGH}{}{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: sni, namespace: default}}
spec:
  hosts: [a.example.com, b.example.com, c.example.com]
  gateways: [istio-system/pass]
  tls:
  - match: [{{sniHosts: [a.example.com]}}]
    route: [{{destination: {{host: svc-a, port: {{number: 8443}}}}}}]
  - match: [{{sniHosts: [b.example.com], port: 443}}]
    route: [{{destination: {{host: svc-b, port: {{number: 8443}}}}}}]
  - match: [{{sniHosts: [c.example.com], port: 8443}}]
    route: [{{destination: {{host: svc-b, port: {{number: 8443}}}}}}]
",
            service("svc-a", "default", 8443),
            service("svc-b", "default", 8443)
        );
        let snap = compile(&yaml, &gateway_node());
        let l = listener(&snap, "0.0.0.0_443");
        let chains: Vec<(Vec<&str>, Vec<&str>)> = l
            .filter_chains
            .iter()
            .map(|c| (c.matcher.server_names.iter().map(|s| &**s).collect(), tcp_clusters(&c.action)))
            .collect();
        assert_eq!(
            chains,
            [
                (vec!["a.example.com"], vec!["outbound|8443||svc-a.default.svc.cluster.local"]),
                (vec!["b.example.com"], vec!["outbound|8443||svc-b.default.svc.cluster.local"]),
            ]
        );
        assert!(l.filter_chains.iter().all(|c| c.tls.is_none() && c.matcher.transport == Some(Transport::Tls)));
    }

    #[test]
    fn auto_passthrough_lists_the_sni_of_every_admitted_cluster() {
        let yaml = format!(
            "{PASSTHROUGH}{}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc-a, namespace: default}}
spec:
  host: svc-a
  subsets: [{{name: v1, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: external, namespace: default}}
spec:
  hosts: [api.external.local]
  location: MESH_EXTERNAL
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: DNS
",
            service("svc-a", "default", 8000)
        );
        let snap = compile(&yaml, &gateway_node());
        let l = listener(&snap, "0.0.0.0_15443");
        assert_eq!(l.filter_chains.len(), 1);
        let c = &l.filter_chains[0];
        assert_eq!(c.action, ChainAction::AutoPassthrough);
        // Mesh-external services are not reachable through AUTO_PASSTHROUGH.
        assert_eq!(
            c.matcher.server_names,
            [
                "outbound_.8000_._.svc-a.default.svc.cluster.local",
                "outbound_.8000_.v1_.svc-a.default.svc.cluster.local"
            ]
            .map(Str::from)
        );
        // No TLS VirtualService for the PASSTHROUGH server: no chain, no listener.
        assert!(snap.listeners_on_port(443).next().is_none());
    }

    #[test]
    fn tls_terminated_tcp_server_matches_its_hosts() {
        let yaml = format!(
            "{}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: db, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 5432, name: tls-db, protocol: TLS}}
    hosts: [db.example.com]
    tls: {{mode: SIMPLE, credentialName: db-cert}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db.example.com]
  gateways: [istio-system/db]
  tcp: [{{route: [{{destination: {{host: db, port: {{number: 5432}}}}}}]}}]
",
            service("db", "default", 5432)
        );
        let snap = compile(&yaml, &gateway_node());
        let c = &listener(&snap, "0.0.0.0_5432").filter_chains[0];
        assert_eq!(c.matcher.server_names, vec![Str::from("db.example.com")]);
        assert_eq!(c.tls.as_ref().map(|t| &*t.mode), Some("SIMPLE"));
        assert_eq!(tcp_clusters(&c.action), ["outbound|5432||db.default.svc.cluster.local"]);
    }

    #[test]
    fn sanitizing_and_intersection_follow_istio() {
        assert_eq!(
            sanitize_hosts(&["./A.com".into(), "*/b.com".into(), "*/*".into(), "ns/c.com".into()], "gw-ns"),
            ["gw-ns/a.com", "b.com", "*", "ns/c.com"].map(Str::from)
        );
        let hosts = ["prod/a.com", "*.b.com", "dev/c.com"].map(Str::from);
        assert_eq!(names_for_namespace(&hosts, "prod"), ["a.com", "*.b.com"]);
        assert_eq!(
            intersection(&["*.example.com", "x.org"], &["a.example.com", "*.org", "*"].map(Str::from)),
            ["a.example.com", "*.example.com", "x.org"].map(Str::from)
        );
        let m = merge(&[], &mut Messages::default());
        assert!(m.ports.is_empty());
    }

    #[test]
    fn merge_keeps_istio_port_order_and_route_names() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  servers:
  - {port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.com], tls: {mode: SIMPLE, credentialName: c}}
  - {port: {number: 443, name: tls, protocol: TLS}, hosts: [b.com], tls: {mode: PASSTHROUGH}}
  - {port: {number: 443, name: http, protocol: HTTP}, hosts: [c.com]}
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: [c.com]}
  - {port: {number: 80, name: grpc, protocol: GRPC}, hosts: [d.com]}
"#;
        let loaded = weir_api::load_str(yaml, "t.yaml", &Default::default());
        let store = crate::ConfigStore::new(loaded.objects);
        let gws: Vec<&Arc<Cfg<Gateway>>> = store.gateways.iter().collect();
        let mut messages = Messages::default();
        let m = merge(&gws, &mut messages);
        assert!(messages.iter().next().is_none());
        let keys: Vec<(u16, &str)> = m.ports.iter().map(|(k, _)| (k.port, k.protocol)).collect();
        assert_eq!(keys, [(443, "HTTPS"), (443, "TLS"), (443, "HTTP"), (80, "HTTP")]);
        let routes: Vec<&str> = m.by_route.keys().map(|k| &**k).collect();
        assert_eq!(routes, ["http.443", "http.80", "https.443.https.gw.ns"]);
        assert_eq!(m.by_route["http.80"].len(), 2);
        assert!(m.servers[1].is_passthrough() && !m.servers[1].is_http_server());
    }
}
