//! Route translation (`pilot/pkg/networking/core/route/route.go`): Istio
//! HTTP/TCP/TLS rules into model routes, config-time filters applied,
//! default retry policy and timeouts, and the default route of a service.
//!
//! Encoding choices where the model has no direct counterpart:
//! * A per-destination authority rewrite (`route[].headers.request.set[":authority"|"host"]`)
//!   with several weighted destinations is kept as a `set` of `:authority` in that
//!   [`WeightedCluster`]'s request headers; with a single destination it becomes the
//!   route's [`Rewrite::authority`] (unless the rule sets one), as in Istio.
//! * `directResponse.body.bytes` (base64) is decoded; bytes that are not UTF-8
//!   are converted lossily (U+FFFD), since the model carries the body as text.
//!   Text that is not valid base64 is kept as written.
//! * Redirect ports: an explicit port (or `derivePort: FROM_REQUEST_PORT`, which
//!   Istio resolves to the listener port) equal to the default port of the
//!   redirect scheme is dropped, as Istio does. The scheme is the redirect's own,
//!   else `http` on sidecars; on gateways without an explicit scheme (Istio uses the
//!   server's TLS mode, which the route environment does not carry) the port is kept
//!   and `FROM_REQUEST_PORT` stays [`RedirectPort::FromRequestPort`] for the data
//!   path to resolve. `FROM_PROTOCOL_DEFAULT` means "no port rewrite" in Istio and
//!   is emitted as `None`.
//! * JWT-claim header matches (`@request.auth.claims.*`) stay header matches under
//!   that name; no request header can carry it, so they never match (Istio's
//!   metadata matchers do not match either without a JWT filter).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashSet;
use std::sync::Arc;

use weir_api::types::{
    CorsPolicy, Destination, HeaderOperations, Headers, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest,
    HttpRedirect, HttpRetry, HttpRoute, Percent, RedirectPortSelection, RouteDestination, StringMatch,
    UnmatchedPreflights, VirtualService,
};

use crate::destination_rule::{DrIndex, MergedDr};
use crate::mesh::MeshConfig;
use crate::message::{Messages, code};
use crate::model::{
    AbortStatus, Cors, Fault, FaultAbort, FaultDelay, HeaderMatch, HeaderOps, Mirror, PathMatch, QueryMatch, Redirect,
    RedirectPort, RetryPolicy, Rewrite, Route, RouteAction, RouteMatch, RouteOrigin, Str, StringMatcher, TcpRoute,
    WeightedCluster,
};
use crate::node::Node;
use crate::registry::{Registry, Service};
use crate::store::Cfg;
use crate::str_util::{Digits, concat_str, lower_str, with_concat};
use crate::virtual_service::{MESH_GATEWAY, ResolvedVs, RuleSource, resolve_gateway_name};

/// Name of the generated route of a service without VirtualService (Istio `DefaultRouteName`).
pub const DEFAULT_ROUTE_NAME: &str = "default";

/// Istio's built-in retry conditions (`retry.go defaultRetryOn`).
pub const DEFAULT_RETRY_ON: [&str; 5] =
    ["connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"];

/// Istio's built-in number of retries.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;

/// What a route is being built for.
#[derive(Clone, Copy, Debug)]
pub struct RouteEnv<'a> {
    pub node: &'a Node,
    pub mesh: &'a MeshConfig,
    pub registry: &'a Registry,
    pub drs: &'a DrIndex,
    /// The listener (service or gateway server) port.
    pub port: u16,
    /// `Some("ns/name")` when building for a gateway server, `None` for the sidecar (`mesh`).
    pub gateway: Option<&'a str>,
}

impl RouteEnv<'_> {
    /// The gateway name rules are filtered by: the gateway's `ns/name`, or `mesh`.
    pub fn gateway_name(&self) -> &str {
        self.gateway.unwrap_or(MESH_GATEWAY)
    }
}

/// Strings that many routes carry, allocated once and shared (`Str` is an
/// `Arc`) by the routes built with one `RouteStrings`: every route has the
/// default retry conditions, most have the `/` prefix. With tens of thousands
/// of routes, a copy each was a large share of a compile's allocations and of
/// the snapshot's memory. Each string is created on first use.
#[derive(Debug, Default)]
pub(crate) struct RouteStrings {
    default_retry_on: OnceCell<Vec<Str>>,
    root_prefix: OnceCell<Str>,
    empty: OnceCell<Str>,
}

impl RouteStrings {
    /// [`DEFAULT_RETRY_ON`].
    fn default_retry_on(&self) -> &[Str] {
        self.default_retry_on.get_or_init(|| DEFAULT_RETRY_ON.iter().map(|s| Str::from(*s)).collect())
    }

    /// `/`.
    fn root_prefix(&self) -> Str {
        self.root_prefix.get_or_init(|| Str::from("/")).clone()
    }

    /// `s`, shared when empty.
    fn str(&self, s: &str) -> Str {
        if s.is_empty() { self.empty.get_or_init(|| Str::from("")).clone() } else { Str::from(s) }
    }
}

/// The HTTP routes of `vs` for `env`, in order; stops after the first catch-all.
pub fn http_routes(vs: &ResolvedVs, env: &RouteEnv<'_>, messages: &mut Messages) -> Vec<Route> {
    http_routes_with(vs, env, &RouteStrings::default(), messages)
}

/// [`http_routes`], sharing `strings` with other routes.
pub(crate) fn http_routes_with(
    vs: &ResolvedVs,
    env: &RouteEnv<'_>,
    strings: &RouteStrings,
    messages: &mut Messages,
) -> Vec<Route> {
    let ns = &*vs.cfg.namespace;
    // Usually one route per rule; the snapshot keeps this vector.
    let mut out = Vec::with_capacity(vs.http.len());
    for (i, rule) in vs.http.iter().enumerate() {
        // A delegate that could not be merged (nested delegation is invalid).
        if rule.delegate.is_some() {
            continue;
        }
        let src = vs.rule_source(i);
        let mut catch_all = false;
        // Whether the catch-all holds on every listener (no config-time filter),
        // so that later rules can never match anywhere.
        let mut unconditional = false;
        if rule.matches.is_empty() {
            let matcher = catch_all_match_with(strings);
            out.extend(translate_route(&src, ns, rule, None, matcher, env, strings, messages));
            catch_all = true;
            unconditional = true;
        } else {
            for (mi, m) in rule.matches.iter().enumerate() {
                if !http_static_match(m, ns, env) {
                    continue;
                }
                let matcher = translate_match(m, strings);
                let is_catch_all = matcher.is_catch_all();
                out.extend(translate_route(&src, ns, rule, Some((mi, m)), matcher, env, strings, messages));
                if is_catch_all {
                    catch_all = true;
                    unconditional = m.port == 0
                        && m.source_labels.is_empty()
                        && m.gateways.is_empty()
                        && m.source_namespace.is_empty();
                    break;
                }
            }
        }
        if catch_all {
            // Everything after an unconditional catch-all is unreachable.
            if let Some(next) = vs.http.get(i + 1..).filter(|rest| !rest.is_empty() && unconditional) {
                let src = vs.rule_source(i + 1);
                let unreachable: Vec<String> = (i + 1..i + 1 + next.len()).map(|r| r.to_string()).collect();
                messages.warn(
                    code::SHADOWED_ROUTE,
                    src.object.clone(),
                    Some(src.origin_at("")),
                    format!(
                        "http rule(s) {} never match: rule {i} matches every request first",
                        unreachable.join(", ")
                    ),
                );
            }
            break;
        }
    }
    out
}

/// Envoy's match of a rule without `match` (and of default routes): prefix `/`.
pub fn catch_all_match() -> RouteMatch {
    catch_all_match_with(&RouteStrings::default())
}

fn catch_all_match_with(strings: &RouteStrings) -> RouteMatch {
    RouteMatch { path: Some(PathMatch::Prefix(strings.root_prefix())), ..RouteMatch::default() }
}

/// The route of a service without VirtualService: catch-all to `cluster`
/// with the mesh default retry policy and no timeout.
pub fn default_http_route(cluster: Str, env: &RouteEnv<'_>) -> Route {
    default_http_route_with(cluster, env, &RouteStrings::default())
}

/// [`default_http_route`], sharing `strings` with other routes.
pub(crate) fn default_http_route_with(cluster: Str, env: &RouteEnv<'_>, strings: &RouteStrings) -> Route {
    Route {
        name: DEFAULT_ROUTE_NAME.into(),
        matcher: catch_all_match_with(strings),
        action: RouteAction::Forward { clusters: vec![single_cluster(cluster)], rewrite: None },
        timeout: None,
        retries: retry_policy_with(env.mesh.default_http_retry_policy.as_ref(), false, strings),
        fault: None,
        mirrors: Vec::new(),
        cors: None,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
        origin: None,
    }
}

/// The TCP routes of `vs` that apply to `env` (port and gateway filters), in order.
///
/// Sidecars (`tls.go buildSidecarOutboundTCPFilterChainOpts`): a rule whose
/// static predicates match without destination subnets ends the list (its
/// route has no subnets); matching matches with subnets are collected into one
/// route per rule. Gateways (`gateway.go buildGatewayNetworkFiltersFromTCPRoutes`):
/// the first rule whose `port`/`gateways` match wins, subnets and source
/// predicates ignored.
pub fn tcp_routes(vs: &ResolvedVs, env: &RouteEnv<'_>, messages: &mut Messages) -> Vec<TcpRoute> {
    let cfg = &*vs.cfg;
    let ns = &*cfg.namespace;
    let mut out = Vec::new();
    for (i, rule) in cfg.spec.tcp.iter().enumerate() {
        if rule.route.is_empty() {
            continue;
        }
        let path = format!("spec.tcp[{i}]");
        let route = |subnets: Vec<Str>, matcher: Option<usize>, messages: &mut Messages| TcpRoute {
            destination_subnets: subnets,
            clusters: l4_clusters(&rule.route, ns, env, &vs.object, cfg, &path, messages),
            origin: Some(origin(&vs.object, cfg, i, matcher, &path)),
        };
        if env.gateway.is_some() {
            let hit = if rule.matches.is_empty() {
                Some(None)
            } else {
                rule.matches.iter().position(|m| l4_gateway_match(m.port, &m.gateways, ns, env)).map(Some)
            };
            if let Some(matcher) = hit {
                out.push(route(Vec::new(), matcher, messages));
                break;
            }
            continue;
        }
        if rule.matches.is_empty() {
            out.push(route(Vec::new(), None, messages));
            break;
        }
        let mut subnets: Vec<Str> = Vec::new();
        let mut terminal = None;
        for (mi, m) in rule.matches.iter().enumerate() {
            if !l4_sidecar_match(m.port, &m.gateways, &m.source_labels, &m.source_namespace, ns, env) {
                continue;
            }
            if m.destination_subnets.is_empty() {
                terminal = Some(mi);
                break;
            }
            subnets.extend(m.destination_subnets.iter().map(|s| Str::from(s.as_str())));
        }
        if let Some(mi) = terminal {
            out.push(route(Vec::new(), Some(mi), messages));
            break;
        }
        if !subnets.is_empty() {
            out.push(route(subnets, None, messages));
        }
    }
    out
}

/// The TLS routes of `vs` that apply to `env`: (SNI hosts, route) pairs, in order.
///
/// Each matching match block gives one pair. On sidecars the block's
/// destination subnets are kept; a block whose (SNI hosts, subnets) repeat an
/// earlier one is skipped. On gateways only `port` and `gateways` are checked,
/// subnets are not used, and a block naming an SNI host already served is skipped.
pub fn tls_routes(vs: &ResolvedVs, env: &RouteEnv<'_>, messages: &mut Messages) -> Vec<(Vec<Str>, TcpRoute)> {
    let cfg = &*vs.cfg;
    let ns = &*cfg.namespace;
    let mut out = Vec::new();
    let mut seen_predicates: HashSet<(Vec<Str>, Vec<Str>)> = HashSet::new();
    let mut seen_sni: HashSet<Str> = HashSet::new();
    for (i, rule) in cfg.spec.tls.iter().enumerate() {
        if rule.route.is_empty() {
            continue;
        }
        let path = format!("spec.tls[{i}]");
        for (mi, m) in rule.matches.iter().enumerate() {
            let sni: Vec<Str> = m.sni_hosts.iter().map(|h| Str::from(h.to_ascii_lowercase())).collect();
            let subnets: Vec<Str> = if env.gateway.is_some() {
                if !l4_gateway_match(m.port, &m.gateways, ns, env) || sni.iter().any(|h| seen_sni.contains(h)) {
                    continue;
                }
                seen_sni.extend(sni.iter().cloned());
                Vec::new()
            } else {
                if !l4_sidecar_match(m.port, &m.gateways, &m.source_labels, &m.source_namespace, ns, env) {
                    continue;
                }
                let subnets: Vec<Str> = m.destination_subnets.iter().map(|s| Str::from(s.as_str())).collect();
                if !seen_predicates.insert((sni.clone(), subnets.clone())) {
                    continue;
                }
                subnets
            };
            let route = TcpRoute {
                destination_subnets: subnets,
                clusters: l4_clusters(&rule.route, ns, env, &vs.object, cfg, &path, messages),
                origin: Some(origin(&vs.object, cfg, i, Some(mi), &path)),
            };
            out.push((sni, route));
        }
    }
    out
}

/// The cluster a destination names: `outbound|PORT|SUBSET|HOST`, with the
/// port from the destination, else the service's only port, else the listener port.
pub fn destination_cluster(dest: &Destination, vs_namespace: &str, env: &RouteEnv<'_>) -> Str {
    Target::new(dest, vs_namespace, env).cluster(env)
}

/// A destination with its host resolved in the VirtualService's namespace
/// and the registry service of exactly that name. Route building needs both
/// several times per destination (checks, cluster name, hash policy): this
/// resolves and looks up once.
struct Target<'d, 'a> {
    dest: &'d Destination,
    /// The FQDN (borrowed from the destination when it already is one).
    host: Cow<'d, str>,
    /// `Registry::lookup(host, node namespace)`.
    service: Option<&'a Arc<Service>>,
    /// The DestinationRule for `host` in `service`'s namespace (else the
    /// VirtualService's), looked up on first use.
    dr: OnceCell<Option<&'a MergedDr>>,
}

impl<'d, 'a> Target<'d, 'a> {
    fn new(dest: &'d Destination, vs_namespace: &str, env: &RouteEnv<'a>) -> Self {
        let host = crate::host::resolve_short_name_cow(&dest.host, vs_namespace, &env.node.cluster_domain);
        let service = env.registry.lookup(&host, &env.node.namespace);
        Target { dest, host, service, dr: OnceCell::new() }
    }

    /// The DestinationRule that applies to the destination (`vs_namespace`
    /// stands in for the namespace of a host the registry does not know).
    fn dr(&self, vs_namespace: &str, env: &RouteEnv<'a>) -> Option<&'a MergedDr> {
        *self.dr.get_or_init(|| {
            let svc_ns = self.service.map_or(vs_namespace, |s| &*s.namespace);
            env.drs.lookup(&env.node.namespace, svc_ns, &self.host)
        })
    }

    /// See [`destination_cluster`].
    fn cluster(&self, env: &RouteEnv<'_>) -> Str {
        let dest = self.dest;
        if dest.host.is_empty() {
            return "UnknownService".into();
        }
        let port = match dest_port(dest) {
            Some(p) => p,
            None => match self.service {
                Some(svc) if svc.ports.len() == 1 => svc.ports[0].port,
                _ => env.port,
            },
        };
        let subset = (!dest.subset.is_empty()).then_some(dest.subset.as_str());
        crate::cluster::cluster_name(port, subset, &self.host)
    }
}

/// The destination's explicit port, if it names a usable one.
fn dest_port(dest: &Destination) -> Option<u16> {
    dest.port.as_ref().and_then(|p| u16::try_from(p.number).ok()).filter(|p| *p != 0)
}

/// Istio `retry.ConvertPolicy`: `None` input is the built-in default; `attempts <= 0` disables retries.
pub fn retry_policy(input: Option<&HttpRetry>, consistent_hash: bool) -> Option<RetryPolicy> {
    retry_policy_with(input, consistent_hash, &RouteStrings::default())
}

fn retry_policy_with(input: Option<&HttpRetry>, consistent_hash: bool, strings: &RouteStrings) -> Option<RetryPolicy> {
    let mut out = RetryPolicy {
        attempts: DEFAULT_RETRY_ATTEMPTS,
        per_try_timeout: None,
        retry_on: strings.default_retry_on().to_vec(),
        retriable_status_codes: Vec::new(),
        backoff: None,
        retry_remote_localities: false,
        avoid_previous_hosts: !consistent_hash,
    };
    let Some(input) = input else { return Some(out) };
    let attempts = u32::try_from(input.attempts).ok().filter(|a| *a > 0)?;
    out.attempts = attempts;
    if !input.retry_on.is_empty() {
        let (on, codes) = parse_retry_on(&input.retry_on);
        out.retry_on = on;
        out.retriable_status_codes = codes;
        if !out.retriable_status_codes.is_empty() && !out.retry_on.iter().any(|s| s.contains("retriable-status-codes"))
        {
            out.retry_on.push("retriable-status-codes".into());
        }
    }
    out.per_try_timeout = input.per_try_timeout.filter(|d| d.as_nanos() > 0).map(|d| d.to_std());
    if let Some(avoid) = input.retry_ignore_previous_hosts {
        out.avoid_previous_hosts = avoid;
    }
    out.retry_remote_localities = input.retry_remote_localities == Some(true);
    out.backoff = input.backoff.map(|d| d.to_std());
    Some(out)
}

/// Istio `parseRetryOn`: comma list; integers that are known HTTP status codes become retriable status codes.
pub fn parse_retry_on(retry_on: &str) -> (Vec<Str>, Vec<u16>) {
    let mut on = Vec::new();
    let mut codes = Vec::new();
    for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part
            .parse::<i64>()
            .ok()
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| weir_api::validate::is_known_http_status(i64::from(*c)))
        {
            Some(c) => codes.push(c),
            None => on.push(Str::from(part)),
        }
    }
    (on, codes)
}

// ---------------------------------------------------------------------------
// HTTP translation

/// `sourceMatchHTTP` plus the port check of `TranslateRoute`.
fn http_static_match(m: &HttpMatchRequest, vs_namespace: &str, env: &RouteEnv<'_>) -> bool {
    if m.port != 0 && m.port != u32::from(env.port) {
        return false;
    }
    if !m.gateways.is_empty() {
        let gw = env.gateway_name();
        return m.gateways.iter().any(|g| &*resolve_gateway_name(g, vs_namespace) == gw);
    }
    env.node.selected_by(&m.source_labels)
        && (m.source_namespace.is_empty() || m.source_namespace == env.node.namespace)
}

/// `matchTCP`/`matchTLS` (sidecars): gateways, source labels, port and source namespace.
fn l4_sidecar_match(
    port: u32,
    gateways: &[String],
    source_labels: &weir_api::types::Labels,
    source_namespace: &str,
    vs_namespace: &str,
    env: &RouteEnv<'_>,
) -> bool {
    let gw = env.gateway_name();
    (gateways.is_empty() || gateways.iter().any(|g| &*resolve_gateway_name(g, vs_namespace) == gw))
        && env.node.selected_by(source_labels)
        && (port == 0 || port == u32::from(env.port))
        && (source_namespace.is_empty() || source_namespace == env.node.namespace)
}

/// `l4SingleMatch` (gateways): port and gateways only.
fn l4_gateway_match(port: u32, gateways: &[String], vs_namespace: &str, env: &RouteEnv<'_>) -> bool {
    let gw = env.gateway_name();
    (port == 0 || port == u32::from(env.port))
        && (gateways.is_empty() || gateways.iter().any(|g| &*resolve_gateway_name(g, vs_namespace) == gw))
}

fn origin(object: &Str, cfg: &Cfg<VirtualService>, rule: usize, matcher: Option<usize>, path: &str) -> RouteOrigin {
    RouteOrigin { object: object.clone(), rule, matcher, file: cfg.origin.file.clone(), line: cfg.origin.line_of(path) }
}

/// Istio `TranslateRoute` after the static filters: `None` when the rule
/// produces no usable route (unsupported redirect code, no destination).
#[allow(clippy::too_many_arguments)]
fn translate_route(
    src: &RuleSource,
    ns: &str,
    rule: &HttpRoute,
    m: Option<(usize, &HttpMatchRequest)>,
    matcher: RouteMatch,
    env: &RouteEnv<'_>,
    strings: &RouteStrings,
    messages: &mut Messages,
) -> Option<Route> {
    let name = match m.filter(|(_, m)| !m.name.is_empty()) {
        Some((_, m)) => concat_str(&[&rule.name, ".", &m.name]),
        None => strings.str(&rule.name),
    };
    let ops = header_operations(rule.headers.as_ref());
    let mut request_headers = ops.request;
    let mut response_headers = ops.response;
    let mut timeout = None;
    let mut retries = None;
    let mut mirrors = Vec::new();
    let action = if let Some(r) = &rule.redirect {
        RouteAction::Redirect(redirect(r, env)?)
    } else if let Some(d) = &rule.direct_response {
        direct_response(d)
    } else {
        let mut authority = ops.authority;
        let mut rw = Rewrite::default();
        if let Some(r) = &rule.rewrite {
            if let Some(rr) = &r.uri_regex_rewrite {
                rw.regex = Some((rr.match_.as_str().into(), rr.rewrite.as_str().into()));
            } else if !r.uri.is_empty() {
                rw.prefix = Some(r.uri.as_str().into());
            }
            if !r.authority.is_empty() {
                authority = Some(r.authority.as_str().into());
            }
        }
        timeout = rule.timeout.filter(|t| t.as_nanos() > 0).map(|t| t.to_std());
        for (mirror, pct, path) in mirror_targets(rule) {
            let target = Target::new(mirror, ns, env);
            check_destination(&target, ns, env, &src.object, || src.origin_at(&path), true, messages);
            mirrors.push(Mirror { cluster: target.cluster(env), percentage: pct });
        }
        let dests: Vec<(usize, &weir_api::types::HttpRouteDestination, &Destination)> = rule
            .route
            .iter()
            .enumerate()
            .filter_map(|(j, d)| d.destination.as_ref().map(|dest| (j, d, dest)))
            .collect();
        let mut consistent_hash = false;
        let clusters = if let [(j, d, dest)] = dests.as_slice() {
            let target = Target::new(dest, ns, env);
            check_destination(
                &target,
                ns,
                env,
                &src.object,
                || src.origin_at(&format!(".route[{j}].destination")),
                false,
                messages,
            );
            consistent_hash = uses_consistent_hash(&target, ns, env);
            let dst_ops = header_operations(d.headers.as_ref());
            append_ops(&mut request_headers, dst_ops.request);
            append_ops(&mut response_headers, dst_ops.response);
            if authority.is_none() {
                authority = dst_ops.authority;
            }
            vec![single_cluster(target.cluster(env))]
        } else {
            // Exact capacity: the snapshot keeps these.
            let mut clusters = Vec::with_capacity(dests.iter().filter(|(_, d, _)| d.weight > 0).count());
            for (j, d, dest) in dests.iter().filter(|(_, d, _)| d.weight > 0) {
                let target = Target::new(dest, ns, env);
                check_destination(
                    &target,
                    ns,
                    env,
                    &src.object,
                    || src.origin_at(&format!(".route[{j}].destination")),
                    false,
                    messages,
                );
                let dst_ops = header_operations(d.headers.as_ref());
                let mut req = dst_ops.request;
                if let Some(a) = dst_ops.authority {
                    req.set.push((":authority".into(), a));
                }
                clusters.push(WeightedCluster {
                    cluster: target.cluster(env),
                    weight: u32::try_from(d.weight).unwrap_or(0),
                    request_headers: req,
                    response_headers: dst_ops.response,
                });
            }
            clusters
        };
        if clusters.is_empty() {
            return None;
        }
        rw.authority = authority;
        let input = rule.retries.as_ref().or(env.mesh.default_http_retry_policy.as_ref());
        retries = retry_policy_with(input, consistent_hash, strings);
        RouteAction::Forward { clusters, rewrite: (rw != Rewrite::default()).then_some(rw) }
    };
    Some(Route {
        name,
        matcher,
        action,
        timeout,
        retries,
        fault: rule.fault.as_ref().and_then(fault),
        mirrors,
        cors: rule.cors_policy.as_ref().map(cors),
        request_headers,
        response_headers,
        origin: Some(RouteOrigin {
            object: src.object.clone(),
            rule: src.rule,
            matcher: m.map(|(i, _)| i),
            file: src.cfg.origin.file.clone(),
            line: with_concat(&["spec.http[", Digits::new(src.rule as u64).as_str(), "]"], |p| {
                src.cfg.origin.line_of(p)
            }),
        }),
    })
}

/// The rule's mirror targets with their percentages (`MirrorPercent`,
/// `MirrorPercentByPolicy`): absent percentage = 100%, explicit 0 = no mirror.
/// The third element is the field path relative to the rule, for messages.
fn mirror_targets(rule: &HttpRoute) -> Vec<(&Destination, f64, String)> {
    let mut out = Vec::new();
    if let Some(m) = &rule.mirror {
        let pct = match (&rule.mirror_percentage, rule.mirror_percent) {
            (Some(p), _) => (p.value > 0.0).then(|| percent(p)),
            (None, Some(p)) => (p > 0).then(|| f64::from(p.min(100))),
            (None, None) => Some(100.0),
        };
        if let Some(pct) = pct {
            out.push((m, pct, ".mirror".to_string()));
        }
    }
    for (k, mp) in rule.mirrors.iter().enumerate() {
        let Some(dest) = &mp.destination else { continue };
        let pct = match &mp.percentage {
            Some(p) => (p.value > 0.0).then(|| percent(p)),
            None => Some(100.0),
        };
        if let Some(pct) = pct {
            out.push((dest, pct, format!(".mirrors[{k}].destination")));
        }
    }
    out
}

/// `translatePercentToFractionalPercent`: parts per million, truncated, as a percentage.
fn percent(p: &Percent) -> f64 {
    let v = if p.value.is_finite() { p.value.clamp(0.0, 100.0) } else { 0.0 };
    (v * 10_000.0).trunc() / 10_000.0
}

fn single_cluster(cluster: Str) -> WeightedCluster {
    WeightedCluster {
        cluster,
        weight: 100,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    }
}

/// TCP/TLS destinations (`buildOutboundNetworkFilters`): one destination gets
/// all traffic; with several, weight-0 destinations are dropped.
fn l4_clusters(
    route: &[RouteDestination],
    ns: &str,
    env: &RouteEnv<'_>,
    object: &Str,
    cfg: &Cfg<VirtualService>,
    path: &str,
    messages: &mut Messages,
) -> Vec<WeightedCluster> {
    let dests: Vec<(usize, i32, &Destination)> =
        route.iter().enumerate().filter_map(|(j, d)| d.destination.as_ref().map(|dest| (j, d.weight, dest))).collect();
    let single = dests.len() == 1;
    let mut out = Vec::new();
    for (j, weight, dest) in dests {
        if !single && weight <= 0 {
            continue;
        }
        let target = Target::new(dest, ns, env);
        check_destination(
            &target,
            ns,
            env,
            object,
            || cfg.origin_at(&format!("{path}.route[{j}].destination")),
            false,
            messages,
        );
        let cluster = target.cluster(env);
        out.push(if single {
            single_cluster(cluster)
        } else {
            WeightedCluster {
                cluster,
                weight: u32::try_from(weight).unwrap_or(0),
                request_headers: HeaderOps::default(),
                response_headers: HeaderOps::default(),
            }
        });
    }
    out
}

/// Checks every destination `vs` names (routes, mirrors, TCP and TLS routes)
/// against the registry and DestinationRules, as route building does, without
/// building routes: `weir analyze` uses it so that a VirtualService that no
/// listener would ever use is still checked (like `istioctl analyze`).
pub fn check_references(vs: &ResolvedVs, env: &RouteEnv<'_>, messages: &mut Messages) {
    let ns = &*vs.cfg.namespace;
    for (i, rule) in vs.http.iter().enumerate() {
        let src = vs.rule_source(i);
        for (mirror, _, path) in mirror_targets(rule) {
            let target = Target::new(mirror, ns, env);
            check_destination(&target, ns, env, &src.object, || src.origin_at(&path), true, messages);
        }
        let dests: Vec<(usize, &weir_api::types::HttpRouteDestination)> =
            rule.route.iter().enumerate().filter(|(_, d)| d.destination.is_some()).collect();
        let single = dests.len() == 1;
        for (j, d) in dests {
            if let Some(dest) = d.destination.as_ref().filter(|_| single || d.weight > 0) {
                let origin = || src.origin_at(&format!(".route[{j}].destination"));
                check_destination(&Target::new(dest, ns, env), ns, env, &src.object, origin, false, messages);
            }
        }
    }
    let l4 = vs
        .cfg
        .spec
        .tcp
        .iter()
        .map(|r| &r.route)
        .zip(std::iter::repeat("tcp"))
        .chain(vs.cfg.spec.tls.iter().map(|r| &r.route).zip(std::iter::repeat("tls")));
    let mut index = std::collections::HashMap::new();
    for (route, section) in l4 {
        let i = index.entry(section).or_insert(0usize);
        let single = route.iter().filter(|d| d.destination.is_some()).count() == 1;
        for (j, d) in route.iter().enumerate() {
            if let Some(dest) = d.destination.as_ref().filter(|_| single || d.weight > 0) {
                let origin = || vs.cfg.origin_at(&format!("spec.{section}[{i}].route[{j}].destination"));
                check_destination(&Target::new(dest, ns, env), ns, env, &vs.object, origin, false, messages);
            }
        }
        *i += 1;
    }
}

/// The registry service a destination refers to, for messages: the
/// exact host, else a wildcard service covering it (as `istioctl analyze` looks up).
fn service_for_host<'a>(target: &Target<'_, 'a>, env: &RouteEnv<'a>) -> Option<&'a Service> {
    if let Some(s) = target.service {
        return Some(s);
    }
    let host = &*target.host;
    let bare = host.strip_prefix('*').unwrap_or(host);
    env.registry
        .visible_from(&env.node.namespace)
        .find(|s| s.hostname.strip_prefix('*').is_some_and(|suffix| bare.ends_with(suffix)))
        .map(|s| &**s)
}

/// IST0101/IST0112 for a destination: unknown host, ambiguous or unknown port, undefined subset.
/// `origin` (the field's `file:line`) is only computed for a message.
fn check_destination<'a>(
    target: &Target<'_, 'a>,
    ns: &str,
    env: &RouteEnv<'a>,
    object: &Str,
    origin: impl Fn() -> Str,
    mirror: bool,
    messages: &mut Messages,
) {
    let dest = target.dest;
    if dest.host.is_empty() {
        return;
    }
    let host = &*target.host;
    let svc = service_for_host(target, env);
    let what = if mirror { "mirror host" } else { "host" };
    match svc {
        None => messages.error(
            code::REFERENCED_RESOURCE_NOT_FOUND,
            object.clone(),
            Some(origin()),
            format!("Referenced {what} not found: {:?}", dest.host),
        ),
        Some(svc) => match dest.port.as_ref().map(|p| p.number) {
            None if svc.ports.len() > 1 => {
                let ports: Vec<String> = svc.ports.iter().map(|p| p.port.to_string()).collect();
                messages.error(
                    code::VS_DESTINATION_PORT_SELECTOR_REQUIRED,
                    object.clone(),
                    Some(origin()),
                    format!(
                        "This VirtualService routes to a service {:?} that exposes multiple ports [{}]. \
                         Specifying a port in the destination is required to disambiguate.",
                        dest.host,
                        ports.join(" ")
                    ),
                );
            }
            Some(p) if !svc.ports.iter().any(|sp| u32::from(sp.port) == p) => messages.error(
                code::REFERENCED_RESOURCE_NOT_FOUND,
                object.clone(),
                Some(origin()),
                format!("Referenced host:port not found: {:?}", format!("{}:{p}", dest.host)),
            ),
            _ => {}
        },
    }
    if !dest.subset.is_empty() {
        let dr = || match (target.service, svc) {
            // The host is a wildcard service's: look in that service's namespace.
            (None, Some(s)) => env.drs.lookup(&env.node.namespace, &s.namespace, host),
            _ => target.dr(ns, env),
        };
        let defined = !env.drs.rules.is_empty() && dr().is_some_and(|dr| dr.subset(&dest.subset).is_some());
        if !defined {
            let what = if mirror { "mirror+subset" } else { "host+subset" };
            messages.error(
                code::REFERENCED_RESOURCE_NOT_FOUND,
                object.clone(),
                Some(origin()),
                format!(
                    "Referenced {what} in destinationrule not found: {:?}",
                    format!("{}+{}", dest.host, dest.subset)
                ),
            );
        }
    }
}

/// Istio `HashForHTTPDestination`: whether the DestinationRule that applies
/// load-balances this destination by consistent hash (then retries may go
/// back to the same host).
fn uses_consistent_hash<'a>(target: &Target<'_, 'a>, ns: &str, env: &RouteEnv<'a>) -> bool {
    if env.drs.rules.is_empty() {
        return false;
    }
    let dest = target.dest;
    let Some(dr) = target.dr(ns, env) else { return false };
    let port = dest.port.as_ref().map(|p| p.number);
    let has_hash = |tp: Option<&weir_api::types::TrafficPolicy>| {
        tp.is_some_and(|tp| {
            tp.load_balancer.as_ref().is_some_and(|lb| lb.consistent_hash.is_some())
                || port.is_some_and(|port| {
                    tp.port_level_settings
                        .iter()
                        .find(|pls| pls.port.as_ref().is_some_and(|p| p.number == port))
                        .is_some_and(|pls| pls.load_balancer.as_ref().is_some_and(|lb| lb.consistent_hash.is_some()))
                })
        })
    };
    has_hash(dr.traffic_policy.as_ref())
        || dr.subsets.iter().find(|s| s.name == dest.subset).is_some_and(|s| has_hash(s.traffic_policy.as_ref()))
}

/// `TranslateRouteMatch`.
fn translate_match(m: &HttpMatchRequest, strings: &RouteStrings) -> RouteMatch {
    let pseudo = [(":method", &m.method), (":authority", &m.authority), (":scheme", &m.scheme)];
    // Exact capacity: the snapshot keeps these.
    let mut headers: Vec<HeaderMatch> = Vec::with_capacity(
        m.headers.len() + m.without_headers.len() + pseudo.iter().filter(|(_, sm)| sm.is_some()).count(),
    );
    for (name, sm) in &m.headers {
        headers.push(HeaderMatch { name: lower_str(name), matcher: header_matcher(sm), invert: false });
    }
    for (name, sm) in &m.without_headers {
        headers.push(HeaderMatch { name: lower_str(name), matcher: header_matcher(sm), invert: true });
    }
    for (name, sm) in pseudo {
        if let Some(sm) = sm {
            headers.push(HeaderMatch { name: name.into(), matcher: header_matcher(sm), invert: false });
        }
    }
    headers.sort_by(|a, b| a.name.cmp(&b.name));
    let path = match m.uri.as_ref().and_then(string_matcher) {
        Some(StringMatcher::Exact(p)) => PathMatch::Exact(p),
        Some(StringMatcher::Prefix(p)) => PathMatch::Prefix(p),
        Some(StringMatcher::Regex(p)) => PathMatch::Regex(p),
        Some(StringMatcher::Present) | None => PathMatch::Prefix(strings.root_prefix()),
    };
    RouteMatch {
        path: Some(path),
        ignore_case: m.ignore_uri_case,
        headers,
        query_params: m
            .query_params
            .iter()
            .map(|(name, sm)| QueryMatch { name: name.as_str().into(), matcher: header_matcher(sm) })
            .collect(),
    }
}

/// `ConvertToEnvoyMatch`: exact, prefix or regex; `None` for an empty match.
fn string_matcher(m: &StringMatch) -> Option<StringMatcher> {
    if let Some(e) = &m.exact {
        Some(StringMatcher::Exact(e.as_str().into()))
    } else if let Some(p) = &m.prefix {
        Some(StringMatcher::Prefix(p.as_str().into()))
    } else {
        m.regex.as_ref().map(|r| StringMatcher::Regex(r.as_str().into()))
    }
}

/// `translateHeaderMatch`/`translateQueryParamMatch`: an empty match or regex `*` is a presence match.
fn header_matcher(m: &StringMatch) -> StringMatcher {
    if m.regex.as_deref() == Some("*") {
        return StringMatcher::Present;
    }
    string_matcher(m).unwrap_or(StringMatcher::Present)
}

/// Translated `Headers` of a rule or destination.
#[derive(Default)]
struct HeaderOpsOut {
    request: HeaderOps,
    response: HeaderOps,
    /// `:authority`/`host` from `request.set` (else `request.add`): a host rewrite.
    authority: Option<Str>,
}

/// `TranslateHeadersOperations`: pseudo-headers and `host` are not header
/// operations; `:authority`/`host` in the request's `set` (preferred) or `add`
/// becomes the authority rewrite.
fn header_operations(h: Option<&Headers>) -> HeaderOpsOut {
    let Some(h) = h else { return HeaderOpsOut::default() };
    let (request, set_auth, add_auth) = ops(h.request.as_ref());
    let (response, _, _) = ops(h.response.as_ref());
    HeaderOpsOut { request, response, authority: set_auth.or(add_auth) }
}

fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

fn ops(o: Option<&HeaderOperations>) -> (HeaderOps, Option<Str>, Option<Str>) {
    let Some(o) = o else { return (HeaderOps::default(), None, None) };
    let authority = |m: &std::collections::BTreeMap<String, String>| {
        m.iter().rev().find(|(k, _)| is_authority_header(k)).map(|(_, v)| Str::from(v.as_str()))
    };
    let pairs = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .filter(|(k, _)| !is_internal_header(k))
            .map(|(k, v)| (Str::from(k.as_str()), Str::from(v.as_str())))
            .collect()
    };
    let out = HeaderOps {
        set: pairs(&o.set),
        add: pairs(&o.add),
        remove: o.remove.iter().filter(|k| !is_internal_header(k)).map(|k| Str::from(k.as_str())).collect(),
    };
    (out, authority(&o.set), authority(&o.add))
}

fn append_ops(to: &mut HeaderOps, from: HeaderOps) {
    to.set.extend(from.set);
    to.add.extend(from.add);
    to.remove.extend(from.remove);
}

/// `ApplyRedirect`: `None` for an unsupported status code (the route is dropped).
fn redirect(r: &HttpRedirect, env: &RouteEnv<'_>) -> Option<Redirect> {
    let code = match r.redirect_code {
        0 | 301 => 301,
        302 => 302,
        303 => 303,
        307 => 307,
        308 => 308,
        _ => return None,
    };
    let nonempty = |s: &str| (!s.is_empty()).then(|| Str::from(s));
    let scheme = nonempty(&r.scheme);
    // The scheme the Location will have, when known at compile time (see the module docs).
    let effective_scheme = scheme.as_deref().or(if env.gateway.is_none() { Some("http") } else { None });
    let port = match (r.port, r.derive_port) {
        (Some(p), _) => u16::try_from(p).ok().filter(|p| *p != 0).map(RedirectPort::Explicit),
        (None, Some(RedirectPortSelection::FromRequestPort)) => Some(match effective_scheme {
            Some(_) => RedirectPort::Explicit(env.port),
            None => RedirectPort::FromRequestPort,
        }),
        (None, _) => None,
    };
    let port = match (port, effective_scheme) {
        (Some(RedirectPort::Explicit(80)), Some("http")) | (Some(RedirectPort::Explicit(443)), Some("https")) => None,
        (p, _) => p,
    };
    let prefix_rewrite = nonempty(&r.prefix_rewrite);
    Some(Redirect {
        code,
        scheme,
        authority: nonempty(&r.authority),
        port,
        path: if prefix_rewrite.is_some() { None } else { nonempty(&r.uri) },
        prefix_rewrite,
    })
}

/// `ApplyDirectResponse`.
fn direct_response(d: &HttpDirectResponse) -> RouteAction {
    let body = d.body.as_ref().and_then(|b| match (&b.string, &b.bytes) {
        (Some(s), _) => Some(Str::from(s.as_str())),
        (None, Some(b64)) => Some(match decode_base64(b64) {
            Some(bytes) => Str::from(String::from_utf8_lossy(&bytes).as_ref()),
            None => Str::from(b64.as_str()),
        }),
        (None, None) => None,
    });
    RouteAction::DirectResponse { status: u16::try_from(d.status).unwrap_or(500), body }
}

/// Standard or URL-safe base64, padding optional, whitespace ignored (protojson accepts both alphabets).
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    standard.decode(&compact).or_else(|_| url_safe.decode(&compact)).ok()
}

/// `TranslateFault`: a delay needs `fixedDelay` (exponential delays are not
/// supported); an abort needs an HTTP or gRPC status (`http2Error` is not
/// supported) and fires for `percentage` of requests (none when absent).
fn fault(f: &HttpFaultInjection) -> Option<Fault> {
    let delay = f.delay.as_ref().and_then(|d| {
        let fixed = d.fixed_delay?;
        let percentage = match &d.percentage {
            Some(p) => percent(p),
            None => f64::from(d.percent.clamp(0, 100)),
        };
        Some(FaultDelay { fixed_delay: fixed.to_std(), percentage })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let status = match (a.http_status, &a.grpc_status) {
            (Some(s), _) => AbortStatus::Http(u16::try_from(s).ok()?),
            (None, Some(g)) => AbortStatus::Grpc(weir_api::validate::grpc_status_code(g)?),
            (None, None) => return None,
        };
        Some(FaultAbort { status, percentage: a.percentage.as_ref().map_or(0.0, percent) })
    });
    (delay.is_some() || abort.is_some()).then_some(Fault { delay, abort })
}

/// `TranslateCORSPolicy`: `allowOrigins` (else the deprecated exact `allowOrigin`),
/// `maxAge` in whole seconds, unmatched preflights forwarded unless `IGNORE`.
fn cors(c: &CorsPolicy) -> Cors {
    let allow_origins = if !c.allow_origins.is_empty() {
        c.allow_origins.iter().filter_map(string_matcher).collect()
    } else {
        c.allow_origin.iter().map(|o| StringMatcher::Exact(o.as_str().into())).collect()
    };
    let strs = |v: &[String]| v.iter().map(|s| Str::from(s.as_str())).collect();
    Cors {
        allow_origins,
        allow_methods: strs(&c.allow_methods),
        allow_headers: strs(&c.allow_headers),
        expose_headers: strs(&c.expose_headers),
        max_age: c.max_age.map(|d| std::time::Duration::from_secs(u64::try_from(d.seconds_and_nanos().0).unwrap_or(0))),
        allow_credentials: c.allow_credentials,
        forward_unmatched_preflights: c.unmatched_preflights != UnmatchedPreflights::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::message::Message;
    use crate::store::ConfigStore;
    use crate::virtual_service::VsIndex;

    const SERVICES: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: multi, namespace: default}
spec:
  hosts: [multi.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 8080, name: http-alt, protocol: HTTP}]
  endpoints: [{address: 10.0.0.2}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild, namespace: default}
spec:
  hosts: ['*.wild.com']
  resolution: NONE
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.0.0.3}]
---
";

    struct Fx {
        text: String,
        registry: Registry,
        drs: DrIndex,
        mesh: MeshConfig,
        node: Node,
        vss: VsIndex,
    }

    impl Fx {
        fn new(yaml: &str) -> Fx {
            Fx::with(yaml, MeshConfig::default(), Node::default())
        }

        fn with(yaml: &str, mesh: MeshConfig, node: Node) -> Fx {
            let text = format!("{SERVICES}{yaml}");
            let loaded = weir_api::load_str(&text, "r.yaml", &weir_api::LoadOptions::default());
            assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
            assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
            let config = ConfigStore::new(loaded.objects);
            let mut m = Messages::default();
            let registry = Registry::from_config(&config, &mesh, &node, &mut m);
            let drs = if config.destination_rules.is_empty() {
                DrIndex::default()
            } else {
                DrIndex::build(&config, &mesh, &node, &mut m)
            };
            let vss = VsIndex::build(&config, &mesh, &node, &mut m);
            Fx { text, registry, drs, mesh, node, vss }
        }

        /// 1-based line of the first line containing `needle`.
        fn line(&self, needle: &str) -> u32 {
            let i = self.text.lines().position(|l| l.contains(needle)).expect("needle");
            u32::try_from(i + 1).unwrap()
        }

        fn env(&self, port: u16, gateway: Option<&'static str>) -> RouteEnv<'_> {
            RouteEnv { node: &self.node, mesh: &self.mesh, registry: &self.registry, drs: &self.drs, port, gateway }
        }

        fn vs(&self, name: &str) -> &Arc<ResolvedVs> {
            self.vss.all.iter().find(|v| &*v.cfg.name == name).expect("vs")
        }

        fn http(&self, name: &str, port: u16, gateway: Option<&'static str>) -> (Vec<Route>, Vec<Message>) {
            let mut m = Messages::default();
            let r = http_routes(self.vs(name), &self.env(port, gateway), &mut m);
            (r, m.into_vec())
        }
    }

    fn vs(name: &str, spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{spec}---\n"
        )
    }

    fn clusters(r: &Route) -> Vec<(String, u32)> {
        match &r.action {
            RouteAction::Forward { clusters, .. } => {
                clusters.iter().map(|c| (c.cluster.to_string(), c.weight)).collect()
            }
            other => panic!("not a forward: {other:?}"),
        }
    }

    fn rewrite(r: &Route) -> Option<Rewrite> {
        match &r.action {
            RouteAction::Forward { rewrite, .. } => rewrite.clone(),
            other => panic!("not a forward: {other:?}"),
        }
    }

    fn names(routes: &[Route]) -> Vec<&str> {
        routes.iter().map(|r| &*r.name).collect()
    }

    const R: &str = "outbound|9080||reviews.default.svc.cluster.local";

    #[test]
    fn matches_translate_to_model_matchers() {
        let fx = Fx::new(&vs(
            "m",
            "  hosts: [reviews]
  http:
  - name: r
    match:
    - name: a
      uri: {regex: '/v[0-9]+/.*'}
      ignoreUriCase: true
      method: {exact: GET}
      authority: {prefix: rev}
      scheme: {exact: https}
      headers: {x-b: {exact: '1'}, x-a: {}, x-c: {regex: '*'}}
      withoutHeaders: {x-z: {prefix: bad}}
      queryParams: {q: {exact: ''}, p: {regex: '*'}}
    - uri: {exact: /exact}
    route: [{destination: {host: reviews}}]
",
        ));
        let (routes, msgs) = fx.http("m", 9080, None);
        assert!(msgs.is_empty(), "{msgs:?}");
        assert_eq!(names(&routes), vec!["r.a", "r"]);
        let m = &routes[0].matcher;
        assert_eq!(m.path, Some(PathMatch::Regex("/v[0-9]+/.*".into())));
        assert!(m.ignore_case);
        let hs: Vec<(&str, &StringMatcher, bool)> =
            m.headers.iter().map(|h| (&*h.name, &h.matcher, h.invert)).collect();
        assert_eq!(
            hs,
            vec![
                (":authority", &StringMatcher::Prefix("rev".into()), false),
                (":method", &StringMatcher::Exact("GET".into()), false),
                (":scheme", &StringMatcher::Exact("https".into()), false),
                ("x-a", &StringMatcher::Present, false),
                ("x-b", &StringMatcher::Exact("1".into()), false),
                ("x-c", &StringMatcher::Present, false),
                ("x-z", &StringMatcher::Prefix("bad".into()), true),
            ]
        );
        assert_eq!(
            m.query_params,
            vec![
                QueryMatch { name: "p".into(), matcher: StringMatcher::Present },
                QueryMatch { name: "q".into(), matcher: StringMatcher::Exact("".into()) },
            ]
        );
        assert_eq!(routes[1].matcher.path, Some(PathMatch::Exact("/exact".into())));
        assert!(!routes[1].matcher.ignore_case);
        assert_eq!(clusters(&routes[0]), vec![(R.to_string(), 100)]);
    }

    #[test]
    fn config_time_filters() {
        let node = Node {
            namespace: "default".into(),
            labels: [("app".to_string(), "client".to_string())].into(),
            ..Node::default()
        };
        let fx = Fx::with(
            &vs(
                "f",
                "  hosts: [reviews]
  gateways: [mesh, gw]
  http:
  - {name: port-8080, match: [{port: 8080}], route: [{destination: {host: reviews}}]}
  - {name: port-9080, match: [{port: 9080, headers: {a: {exact: b}}}], route: [{destination: {host: reviews}}]}
  - {name: canary, match: [{sourceLabels: {track: canary}}], route: [{destination: {host: reviews}}]}
  - {name: client, match: [{sourceLabels: {app: client}, headers: {a: {exact: c}}}], route: [{destination: {host: reviews}}]}
  - {name: other-ns, match: [{sourceNamespace: other}], route: [{destination: {host: reviews}}]}
  - {name: this-ns, match: [{sourceNamespace: default, headers: {a: {exact: d}}}], route: [{destination: {host: reviews}}]}
  - {name: gw-only, match: [{gateways: [gw], sourceLabels: {no: match}}], route: [{destination: {host: reviews}}]}
  - {name: mesh-only, match: [{gateways: [mesh], headers: {a: {exact: e}}}], route: [{destination: {host: reviews}}]}
  - {name: rest, route: [{destination: {host: reviews}}]}
",
            ),
            MeshConfig::default(),
            node,
        );
        let (mesh, _) = fx.http("f", 9080, None);
        assert_eq!(names(&mesh), vec!["port-9080", "client", "this-ns", "mesh-only", "rest"]);
        // At the gateway `gateways` wins over sourceLabels, and gw-only is a catch-all.
        let (gw, _) = fx.http("f", 9080, Some("default/gw"));
        assert_eq!(names(&gw), vec!["port-9080", "client", "this-ns", "gw-only"]);
        let (p8080, _) = fx.http("f", 8080, None);
        assert_eq!(names(&p8080), vec!["port-8080"], "port-8080 is a catch-all on its port");
    }

    #[test]
    fn nothing_after_the_first_catch_all() {
        let fx = Fx::new(&vs(
            "c",
            "  hosts: [reviews]
  http:
  - name: a
    match: [{uri: {prefix: /a}}, {uri: {prefix: /}}, {uri: {prefix: /never}}]
    route: [{destination: {host: reviews}}]
  - {name: b, route: [{destination: {host: reviews}}]}
",
        ));
        let (routes, _) = fx.http("c", 9080, None);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1].origin.as_ref().unwrap().matcher, Some(1));
        let fx = Fx::new(&vs(
            "c",
            "  hosts: [reviews]
  http:
  - {name: a, match: [{uri: {regex: '.*'}}], route: [{destination: {host: reviews}}]}
  - {name: b, route: [{destination: {host: reviews}}]}
",
        ));
        assert_eq!(names(&fx.http("c", 9080, None).0), vec!["a"]);
    }

    #[test]
    fn weights_single_destination_and_zero_weights() {
        let fx = Fx::new(&vs(
            "w",
            "  hosts: [reviews]
  http:
  - name: single
    match: [{uri: {prefix: /s}}]
    route: [{destination: {host: reviews, subset: v1}, weight: 10}]
  - name: split
    route:
    - {destination: {host: reviews, subset: v1}, weight: 0}
    - {destination: {host: reviews, subset: v2}, weight: 30}
    - {destination: {host: reviews, subset: v3}, weight: 10}
",
        ));
        let (routes, _) = fx.http("w", 9080, None);
        assert_eq!(clusters(&routes[0]), vec![("outbound|9080|v1|reviews.default.svc.cluster.local".into(), 100)]);
        assert_eq!(
            clusters(&routes[1]),
            vec![
                ("outbound|9080|v2|reviews.default.svc.cluster.local".into(), 30),
                ("outbound|9080|v3|reviews.default.svc.cluster.local".into(), 10)
            ]
        );
    }

    #[test]
    fn destination_ports_and_port_selector_messages() {
        let fx = Fx::new(&vs(
            "p",
            "  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: multi, port: {number: 8080}}}]
  - match: [{uri: {prefix: /b}}]
    route: [{destination: {host: multi}}]
  - match: [{uri: {prefix: /c}}]
    route: [{destination: {host: unknown.example.com}}]
  - match: [{uri: {prefix: /d}}]
    route: [{destination: {host: reviews, port: {number: 1234}}}]
  - route: [{destination: {host: api.wild.com}}]
",
        ));
        let (routes, msgs) = fx.http("p", 7000, None);
        let all: Vec<String> = routes.iter().flat_map(clusters).map(|c| c.0).collect();
        assert_eq!(
            all,
            vec![
                "outbound|8080||multi.default.svc.cluster.local",
                "outbound|7000||multi.default.svc.cluster.local",
                "outbound|7000||unknown.example.com",
                "outbound|1234||reviews.default.svc.cluster.local",
                "outbound|7000||api.wild.com",
            ]
        );
        let texts: Vec<(&str, &str)> = msgs.iter().map(|m| (m.code, m.text.as_str())).collect();
        assert_eq!(
            texts,
            vec![
                ("IST0101", "Referenced host not found: \"unknown.example.com\""),
                ("IST0101", "Referenced host:port not found: \"reviews:1234\""),
                (
                    "IST0112",
                    "This VirtualService routes to a service \"multi\" that exposes multiple ports [80 8080]. \
                     Specifying a port in the destination is required to disambiguate."
                ),
            ]
        );
        assert!(msgs.iter().all(|m| &*m.object == "VirtualService default/p"));
        assert_eq!(msgs[0].origin, Some(format!("r.yaml:{}", fx.line("unknown.example.com")).into()));
    }

    #[test]
    fn destination_cluster_rules() {
        let fx = Fx::new("");
        let env = fx.env(7000, None);
        let d = |host: &str, subset: &str, port: Option<u32>| Destination {
            host: host.into(),
            subset: subset.into(),
            port: port.map(|number| weir_api::types::PortSelector { number }),
        };
        assert_eq!(&*destination_cluster(&d("reviews", "", None), "default", &env), R);
        assert_eq!(
            &*destination_cluster(&d("reviews", "v1", None), "other", &env),
            "outbound|7000|v1|reviews.other.svc.cluster.local",
            "short names expand in the VS namespace"
        );
        assert_eq!(
            &*destination_cluster(&d("multi", "", Some(80)), "default", &env),
            "outbound|80||multi.default.svc.cluster.local"
        );
        assert_eq!(&*destination_cluster(&d("", "", None), "default", &env), "UnknownService");
    }

    #[test]
    fn subsets_must_exist_in_the_destination_rule() {
        let fx = Fx::new(&format!(
            "{}{}",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\n\
             spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}\n---\n",
            vs(
                "s",
                "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}, weight: 50}, {destination: {host: reviews, subset: v3}, weight: 50}]
    mirror: {host: reviews, subset: v9}
",
            )
        ));
        let (routes, msgs) = fx.http("s", 9080, None);
        assert_eq!(clusters(&routes[0])[1].0, "outbound|9080|v3|reviews.default.svc.cluster.local", "still referenced");
        let texts: Vec<&str> = msgs.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "Referenced host+subset in destinationrule not found: \"reviews+v3\"",
                "Referenced mirror+subset in destinationrule not found: \"reviews+v9\"",
            ]
        );
    }

    #[test]
    fn subset_without_any_destination_rule_is_reported() {
        let fx =
            Fx::new(&vs("s", "  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews, subset: v1}}]}]\n"));
        let (_, msgs) = fx.http("s", 9080, None);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].text, "Referenced host+subset in destinationrule not found: \"reviews+v1\"");
    }

    #[test]
    fn redirects() {
        let fx = Fx::new(&vs(
            "r",
            "  hosts: [reviews]
  gateways: [mesh, gw]
  http:
  - {match: [{uri: {prefix: /a}}], redirect: {uri: /new, authority: x.com}}
  - {match: [{uri: {prefix: /b}}], redirect: {prefixRewrite: /p, redirectCode: 308, scheme: https, port: 443}}
  - {match: [{uri: {prefix: /c}}], redirect: {uri: /c, port: 80}}
  - {match: [{uri: {prefix: /d}}], redirect: {uri: /d, derivePort: FROM_REQUEST_PORT}}
  - {match: [{uri: {prefix: /e}}], redirect: {uri: /e, derivePort: FROM_PROTOCOL_DEFAULT}}
  - {match: [{uri: {prefix: /f}}], redirect: {uri: /f, redirectCode: 300}}
  - {match: [{uri: {prefix: /g}}], redirect: {uri: /g, port: 8443, scheme: https}}
",
        ));
        let redirect = |r: &Route| match &r.action {
            RouteAction::Redirect(r) => r.clone(),
            other => panic!("{other:?}"),
        };
        let (routes, _) = fx.http("r", 9080, None);
        assert_eq!(routes.len(), 6, "the 300 redirect is dropped");
        let a = redirect(&routes[0]);
        assert_eq!(
            (a.code, a.path.as_deref(), a.authority.as_deref(), a.port),
            (301, Some("/new"), Some("x.com"), None)
        );
        let b = redirect(&routes[1]);
        assert_eq!(
            (b.code, b.prefix_rewrite.as_deref(), b.path.as_deref(), b.scheme.as_deref(), b.port),
            (308, Some("/p"), None, Some("https"), None)
        );
        assert_eq!(redirect(&routes[2]).port, None, ":80 omitted for http");
        assert_eq!(redirect(&routes[3]).port, Some(RedirectPort::Explicit(9080)));
        assert_eq!(redirect(&routes[4]).port, None);
        assert_eq!(redirect(&routes[5]).port, Some(RedirectPort::Explicit(8443)));
        assert!(routes.iter().all(|r| r.retries.is_none() && r.timeout.is_none()));
        // At a gateway the scheme is only known when the redirect names it.
        let (gw, _) = fx.http("r", 80, Some("default/gw"));
        assert_eq!(redirect(&gw[2]).port, Some(RedirectPort::Explicit(80)));
        assert_eq!(redirect(&gw[3]).port, Some(RedirectPort::FromRequestPort));
    }

    #[test]
    fn direct_responses() {
        let fx = Fx::new(&vs(
            "d",
            "  hosts: [reviews]
  http:
  - {match: [{uri: {prefix: /a}}], directResponse: {status: 503, body: {string: unavailable}}}
  - {match: [{uri: {prefix: /b}}], directResponse: {status: 200, body: {bytes: aGVsbG8gd29ybGQ=}}}
  - {match: [{uri: {prefix: /c}}], directResponse: {status: 204}}
",
        ));
        let (routes, _) = fx.http("d", 9080, None);
        let got: Vec<RouteAction> = routes.iter().map(|r| r.action.clone()).collect();
        assert_eq!(
            got,
            vec![
                RouteAction::DirectResponse { status: 503, body: Some("unavailable".into()) },
                RouteAction::DirectResponse { status: 200, body: Some("hello world".into()) },
                RouteAction::DirectResponse { status: 204, body: None },
            ]
        );
    }

    #[test]
    fn base64_decoding() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVs\nbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("_-8=").unwrap(), vec![0xff, 0xef]);
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("a").is_none());
        assert!(decode_base64("a=b").is_none());
        assert!(decode_base64("a!").is_none());
    }

    #[test]
    fn rewrites_and_authority_sources() {
        let fx = Fx::new(&vs(
            "rw",
            "  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /a}}]
    rewrite: {uri: /b, authority: new.host}
    headers: {request: {set: {':authority': ignored, x-set: '1'}}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /r}}]
    rewrite: {uriRegexRewrite: {match: '^/r/(.*)$', rewrite: '/\\1'}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /h}}]
    headers: {request: {set: {host: from-set}, add: {':authority': from-add}}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /d}}]
    route: [{destination: {host: reviews}, headers: {request: {set: {host: from-dest, x-d: '1'}}}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50, headers: {request: {add: {host: v1-host}}, response: {remove: [x-r]}}}
    - {destination: {host: reviews, subset: v2}, weight: 50}
",
        ));
        let (routes, _) = fx.http("rw", 9080, None);
        let rw0 = rewrite(&routes[0]).unwrap();
        assert_eq!((rw0.prefix.as_deref(), rw0.authority.as_deref()), (Some("/b"), Some("new.host")));
        assert_eq!(routes[0].request_headers.set, vec![(Str::from("x-set"), Str::from("1"))], "pseudo-headers dropped");
        assert_eq!(rewrite(&routes[1]).unwrap().regex, Some(("^/r/(.*)$".into(), "/\\1".into())));
        assert_eq!(rewrite(&routes[2]).unwrap().authority.as_deref(), Some("from-set"), "set wins over add");
        assert!(routes[2].request_headers.is_empty());
        assert_eq!(rewrite(&routes[3]).unwrap().authority.as_deref(), Some("from-dest"));
        assert_eq!(routes[3].request_headers.set, vec![(Str::from("x-d"), Str::from("1"))]);
        assert_eq!(rewrite(&routes[4]), None);
        let RouteAction::Forward { clusters, .. } = &routes[4].action else { panic!() };
        assert_eq!(clusters[0].request_headers.set, vec![(Str::from(":authority"), Str::from("v1-host"))]);
        assert_eq!(clusters[0].response_headers.remove, vec![Str::from("x-r")]);
        assert!(clusters[1].request_headers.is_empty());
    }

    #[test]
    fn header_operations_on_routes() {
        let fx = Fx::new(&vs(
            "h",
            "  hosts: [reviews]
  http:
  - headers:
      request: {set: {b: '2', a: '1'}, add: {c: '%REQ(x)%'}, remove: [d, ':path', Host]}
      response: {set: {e: '5'}, remove: [f]}
    route: [{destination: {host: reviews}}]
",
        ));
        let (routes, _) = fx.http("h", 9080, None);
        let r = &routes[0];
        assert_eq!(r.request_headers.set, vec![(Str::from("a"), Str::from("1")), (Str::from("b"), Str::from("2"))]);
        assert_eq!(r.request_headers.add, vec![(Str::from("c"), Str::from("%REQ(x)%"))]);
        assert_eq!(r.request_headers.remove, vec![Str::from("d")]);
        assert_eq!(r.response_headers.set, vec![(Str::from("e"), Str::from("5"))]);
        assert_eq!(r.response_headers.remove, vec![Str::from("f")]);
    }

    #[test]
    fn retries_defaults_and_overrides() {
        let fx = Fx::new(&vs(
            "rt",
            "  hosts: [reviews]
  http:
  - {match: [{uri: {prefix: /none}}], retries: {attempts: 0}, route: [{destination: {host: reviews}}]}
  - match: [{uri: {prefix: /codes}}]
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error, 503,connect-failure,999', retryRemoteLocalities: true, retryIgnorePreviousHosts: false, backoff: 50ms}
    route: [{destination: {host: reviews}}]
  - {match: [{uri: {prefix: /only-on}}], retries: {attempts: 1}, route: [{destination: {host: reviews}}]}
  - route: [{destination: {host: reviews}}]
",
        ));
        let (routes, _) = fx.http("rt", 9080, None);
        assert_eq!(routes[0].retries, None);
        let p = routes[1].retries.clone().unwrap();
        assert_eq!(p.attempts, 3);
        assert_eq!(
            p.retry_on,
            vec![Str::from("gateway-error"), "connect-failure".into(), "999".into(), "retriable-status-codes".into()]
        );
        assert_eq!(p.retriable_status_codes, vec![503]);
        assert_eq!(p.per_try_timeout, Some(Duration::from_secs(2)));
        assert_eq!(p.backoff, Some(Duration::from_millis(50)));
        assert!(p.retry_remote_localities);
        assert!(!p.avoid_previous_hosts);
        let p = routes[2].retries.clone().unwrap();
        assert_eq!((p.attempts, p.retry_on.len(), p.avoid_previous_hosts), (1, 5, true));
        let d = routes[3].retries.clone().unwrap();
        assert_eq!(d.attempts, 2);
        assert_eq!(d.retry_on.iter().map(|s| &**s).collect::<Vec<_>>(), DEFAULT_RETRY_ON);
        assert!(d.retriable_status_codes.is_empty());
        assert!(d.avoid_previous_hosts);
        assert_eq!(routes[3].timeout, None, "no timeout by default");
    }

    #[test]
    fn mesh_default_retry_policy_applies() {
        let mesh = MeshConfig::parse("defaultHttpRetryPolicy: {attempts: 5, retryOn: 5xx}\n", "m.yaml").unwrap();
        let fx = Fx::with(
            &vs("m", "  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews}}]}]\n"),
            mesh,
            Node::default(),
        );
        let (routes, _) = fx.http("m", 9080, None);
        let p = routes[0].retries.clone().unwrap();
        assert_eq!((p.attempts, p.retry_on.clone()), (5, vec![Str::from("5xx")]));
        let d = default_http_route("c".into(), &fx.env(9080, None));
        assert_eq!(d.retries.unwrap().attempts, 5);
    }

    #[test]
    fn consistent_hash_keeps_retries_on_the_same_host() {
        let fx = Fx::new(&format!(
            "{}{}",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\n\
             spec: {host: reviews, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}}\n---\n",
            vs("ch", "  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews}}]}]\n")
        ));
        let (routes, _) = fx.http("ch", 9080, None);
        assert!(!routes[0].retries.as_ref().unwrap().avoid_previous_hosts);
        // The default route of a service keeps the predicate (Istio passes no hash there).
        assert!(default_http_route("c".into(), &fx.env(9080, None)).retries.unwrap().avoid_previous_hosts);
    }

    #[test]
    fn retry_on_parsing() {
        let (on, codes) = parse_retry_on(" 5xx ,,404,abc,600,+502");
        assert_eq!(on, vec![Str::from("5xx"), "abc".into(), "600".into()]);
        assert_eq!(codes, vec![404, 502]);
        let p = retry_policy(Some(&HttpRetry { attempts: 2, retry_on: "503".into(), ..HttpRetry::default() }), false)
            .unwrap();
        assert_eq!(p.retry_on, vec![Str::from("retriable-status-codes")]);
        assert!(retry_policy(Some(&HttpRetry { attempts: -1, ..HttpRetry::default() }), false).is_none());
        assert!(!retry_policy(None, true).unwrap().avoid_previous_hosts);
    }

    #[test]
    fn timeouts_faults_mirrors_cors() {
        let fx = Fx::new(&vs(
            "t",
            "  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /a}}]
    timeout: 1.5s
    fault:
      delay: {fixedDelay: 2s, percentage: {value: 12.345678}}
      abort: {httpStatus: 418}
    mirror: {host: multi, port: {number: 80}}
    corsPolicy:
      allowOrigins: [{exact: 'https://a.com'}, {regex: '.*\\.b\\.com'}]
      allowMethods: [GET, POST]
      allowHeaders: [x-a]
      exposeHeaders: [x-b]
      maxAge: 90.5s
      allowCredentials: true
      unmatchedPreflights: IGNORE
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /b}}]
    timeout: 0s
    fault: {delay: {fixedDelay: 1s, percent: 30}, abort: {grpcStatus: UNAVAILABLE, percentage: {value: 50}}}
    mirror: {host: reviews}
    mirrorPercentage: {value: 0}
    mirrors:
    - {destination: {host: reviews, subset: v1}}
    - {destination: {host: reviews, subset: v2}, percentage: {value: 25.5}}
    corsPolicy: {allowOrigin: ['https://old.com']}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /c}}]
    fault: {delay: {fixedDelay: 1s}}
    mirror: {host: reviews}
    mirrorPercent: 40
    route: [{destination: {host: reviews}}]
",
        ));
        let (routes, _) = fx.http("t", 9080, None);
        let a = &routes[0];
        assert_eq!(a.timeout, Some(Duration::from_millis(1500)));
        let f = a.fault.clone().unwrap();
        assert_eq!(f.delay.unwrap(), FaultDelay { fixed_delay: Duration::from_secs(2), percentage: 12.3456 });
        assert_eq!(f.abort.unwrap(), FaultAbort { status: AbortStatus::Http(418), percentage: 0.0 });
        assert_eq!(
            a.mirrors,
            vec![Mirror { cluster: "outbound|80||multi.default.svc.cluster.local".into(), percentage: 100.0 }]
        );
        let c = a.cors.clone().unwrap();
        assert_eq!(
            c.allow_origins,
            vec![StringMatcher::Exact("https://a.com".into()), StringMatcher::Regex(".*\\.b\\.com".into())]
        );
        assert_eq!(c.allow_methods, vec![Str::from("GET"), "POST".into()]);
        assert_eq!(
            (c.max_age, c.allow_credentials, c.forward_unmatched_preflights),
            (Some(Duration::from_secs(90)), Some(true), false)
        );
        let b = &routes[1];
        assert_eq!(b.timeout, None, "0s disables the timeout");
        let f = b.fault.clone().unwrap();
        assert_eq!(f.delay.unwrap().percentage, 30.0, "deprecated percent");
        assert_eq!(f.abort.unwrap(), FaultAbort { status: AbortStatus::Grpc(14), percentage: 50.0 });
        assert_eq!(
            b.mirrors,
            vec![
                Mirror { cluster: "outbound|9080|v1|reviews.default.svc.cluster.local".into(), percentage: 100.0 },
                Mirror { cluster: "outbound|9080|v2|reviews.default.svc.cluster.local".into(), percentage: 25.5 },
            ]
        );
        let c = b.cors.clone().unwrap();
        assert_eq!(c.allow_origins, vec![StringMatcher::Exact("https://old.com".into())]);
        assert!(c.forward_unmatched_preflights);
        let c = &routes[2];
        assert_eq!(c.fault.clone().unwrap().delay.unwrap().percentage, 0.0, "no percentage at all: never delayed");
        assert_eq!(c.mirrors[0].percentage, 40.0);
    }

    #[test]
    fn unsupported_faults_are_left_out() {
        let f: HttpFaultInjection =
            serde_json::from_str(r#"{"delay": {"exponentialDelay": "1s"}, "abort": {"http2Error": "x"}}"#).unwrap();
        assert_eq!(fault(&f), None);
    }

    #[test]
    fn origins_point_at_the_rule() {
        let fx = Fx::new(&vs(
            "o",
            "  hosts: [reviews]
  http:
  - name: first
    match: [{uri: {prefix: /a}}, {uri: {prefix: /b}}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
",
        ));
        let (routes, _) = fx.http("o", 9080, None);
        let o: Vec<(usize, Option<usize>, u32)> =
            routes.iter().map(|r| r.origin.as_ref().map(|o| (o.rule, o.matcher, o.line)).unwrap()).collect();
        let (first, second) = (fx.line("- name: first"), fx.line("  - route: [{destination: {host: reviews}}]"));
        assert_eq!(o, vec![(0, Some(0), first), (0, Some(1), first), (1, None, second)]);
        assert_eq!(&*routes[0].origin.as_ref().unwrap().file, "r.yaml");
        assert_eq!(&*routes[0].origin.as_ref().unwrap().object, "VirtualService default/o");
    }

    #[test]
    fn delegated_routes_carry_the_delegate_origin_and_namespace() {
        let fx = Fx::new(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: root, namespace: default}\n\
             spec: {hosts: [reviews], http: [{match: [{uri: {prefix: /x}}], delegate: {name: d, namespace: ns2}, timeout: 3s}]}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: d, namespace: ns2}\n\
             spec: {http: [{route: [{destination: {host: api}}]}]}\n",
        );
        let (routes, msgs) = fx.http("root", 9080, None);
        assert_eq!(clusters(&routes[0]), vec![("outbound|9080||api.ns2.svc.cluster.local".into(), 100)]);
        assert_eq!(routes[0].timeout, Some(Duration::from_secs(3)));
        assert_eq!(routes[0].matcher.path, Some(PathMatch::Prefix("/x".into())));
        assert_eq!(&*routes[0].origin.as_ref().unwrap().object, "VirtualService ns2/d");
        assert_eq!(msgs.len(), 1);
        assert_eq!(&*msgs[0].object, "VirtualService ns2/d");
        assert_eq!(msgs[0].text, "Referenced host not found: \"api.ns2.svc.cluster.local\"");
    }

    #[test]
    fn default_route() {
        let fx = Fx::new("");
        let r = default_http_route(R.into(), &fx.env(9080, None));
        assert_eq!(&*r.name, "default");
        assert!(r.matcher.is_catch_all());
        assert_eq!(clusters(&r), vec![(R.to_string(), 100)]);
        assert_eq!(r.timeout, None);
        let p = r.retries.unwrap();
        assert_eq!((p.attempts, p.avoid_previous_hosts), (2, true));
        assert!(r.origin.is_none());
    }

    #[test]
    fn tcp_routes_on_sidecars_and_gateways() {
        let fx = Fx::new(&vs(
            "tcp",
            "  hosts: [db]
  gateways: [mesh, gw]
  tcp:
  - match: [{port: 1111}]
    route: [{destination: {host: db}}]
  - match: [{destinationSubnets: [10.1.0.0/16]}, {destinationSubnets: [10.2.0.0/16], sourceLabels: {no: match}}, {destinationSubnets: [10.3.0.0/16]}]
    route: [{destination: {host: db, port: {number: 5432}}, weight: 80}, {destination: {host: db, subset: b}, weight: 20}, {destination: {host: db}, weight: 0}]
  - match: [{gateways: [other]}, {sourceNamespace: default}]
    route: [{destination: {host: db}}]
  - route: [{destination: {host: db}}]
",
        ));
        let mut m = Messages::default();
        let routes = tcp_routes(fx.vs("tcp"), &fx.env(5432, None), &mut m);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].destination_subnets, vec![Str::from("10.1.0.0/16"), "10.3.0.0/16".into()]);
        let cs: Vec<(&str, u32)> = routes[0].clusters.iter().map(|c| (&*c.cluster, c.weight)).collect();
        assert_eq!(
            cs,
            vec![
                ("outbound|5432||db.default.svc.cluster.local", 80),
                ("outbound|5432|b|db.default.svc.cluster.local", 20)
            ]
        );
        assert!(routes[1].destination_subnets.is_empty());
        assert_eq!(routes[1].origin.as_ref().map(|o| (o.rule, o.matcher)), Some((2, Some(1))));
        assert_eq!(routes[1].clusters[0].weight, 100);
        // Gateways: first rule whose port/gateways match; subnets and source predicates ignored.
        let gw = tcp_routes(fx.vs("tcp"), &fx.env(1111, Some("default/gw")), &mut m);
        assert_eq!(gw.len(), 1);
        assert_eq!(gw[0].origin.as_ref().map(|o| o.rule), Some(0));
        let gw = tcp_routes(fx.vs("tcp"), &fx.env(5432, Some("default/gw")), &mut m);
        assert_eq!(gw.len(), 1);
        assert!(gw[0].destination_subnets.is_empty());
        assert_eq!(gw[0].origin.as_ref().map(|o| o.rule), Some(1));
    }

    #[test]
    fn tls_routes_on_sidecars_and_gateways() {
        let fx = Fx::new(&vs(
            "tls",
            "  hosts: ['*.wild.com']
  gateways: [mesh, gw]
  tls:
  - match: [{sniHosts: [A.wild.com], port: 443}, {sniHosts: [a.wild.com], port: 443, sourceLabels: {x: y}}]
    route: [{destination: {host: a.wild.com}}]
  - match: [{sniHosts: [a.wild.com], port: 443}, {sniHosts: [b.wild.com], destinationSubnets: [1.2.3.4/32]}, {sniHosts: [c.wild.com], gateways: [gw]}]
    route: [{destination: {host: b.wild.com}}]
",
        ));
        let mut m = Messages::default();
        let routes = tls_routes(fx.vs("tls"), &fx.env(443, None), &mut m);
        let got: Vec<(Vec<Str>, Vec<Str>, String)> = routes
            .iter()
            .map(|(sni, r)| (sni.clone(), r.destination_subnets.clone(), r.clusters[0].cluster.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![Str::from("a.wild.com")], vec![], "outbound|443||a.wild.com".to_string()),
                (vec![Str::from("b.wild.com")], vec![Str::from("1.2.3.4/32")], "outbound|443||b.wild.com".to_string()),
            ]
        );
        assert!(m.iter().next().is_none(), "wildcard services cover the hosts: {:?}", m.into_vec());
        let gw = tls_routes(fx.vs("tls"), &fx.env(443, Some("default/gw")), &mut Messages::default());
        let sni: Vec<&str> = gw.iter().map(|(s, _)| &*s[0]).collect();
        assert_eq!(sni, vec!["a.wild.com", "b.wild.com", "c.wild.com"]);
        assert!(gw.iter().all(|(_, r)| r.destination_subnets.is_empty()));
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        #[derive(Clone, Debug)]
        struct Rule {
            /// `None`: no match block (catch-all rule).
            matches: Option<Vec<u8>>,
            weights: Vec<u8>,
        }

        fn rule() -> impl Strategy<Value = Rule> {
            (prop::option::weighted(0.8, prop::collection::vec(0u8..6, 1..4)), prop::collection::vec(0u8..4, 1..4))
                .prop_map(|(matches, weights)| Rule { matches, weights })
        }

        /// Match kinds: 0 = prefix `/` (catch-all), 1 = regex `.*` (catch-all), others narrow.
        fn match_yaml(kind: u8, i: usize, j: usize) -> String {
            match kind {
                0 => "{uri: {prefix: /}}".into(),
                1 => "{uri: {regex: '.*'}}".into(),
                2 => format!("{{uri: {{prefix: /p{i}-{j}}}}}"),
                3 => format!("{{headers: {{h{i}: {{exact: v}}}}}}"),
                4 => format!("{{uri: {{exact: /e{i}-{j}}}}}"),
                _ => format!("{{queryParams: {{q{i}: {{prefix: v}}}}}}"),
            }
        }

        fn yaml(rules: &[Rule]) -> String {
            let mut spec = String::from("  hosts: [reviews]\n  http:\n");
            for (i, r) in rules.iter().enumerate() {
                spec.push_str(&format!("  - name: r{i}\n"));
                if let Some(ms) = &r.matches {
                    let ms: Vec<String> = ms.iter().enumerate().map(|(j, k)| match_yaml(*k, i, j)).collect();
                    spec.push_str(&format!("    match: [{}]\n", ms.join(", ")));
                }
                let dests: Vec<String> = r
                    .weights
                    .iter()
                    .enumerate()
                    .map(|(d, w)| format!("{{destination: {{host: reviews, subset: s{d}}}, weight: {w}}}"))
                    .collect();
                spec.push_str(&format!("    route: [{}]\n", dests.join(", ")));
            }
            vs("p", &spec)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

            #[test]
            fn route_precedence(rules in prop::collection::vec(rule(), 1..6)) {
                let fx = Fx::new(&yaml(&rules));
                let (routes, _) = fx.http("p", 9080, None);

                // The expected (rule, match) sequence: rule order, match order, cut after the first catch-all.
                let mut expected = Vec::new();
                'outer: for (i, r) in rules.iter().enumerate() {
                    match &r.matches {
                        None => {
                            expected.push((i, None));
                            break 'outer;
                        }
                        Some(ms) => {
                            for (j, k) in ms.iter().enumerate() {
                                expected.push((i, Some(j)));
                                if *k <= 1 {
                                    break 'outer;
                                }
                            }
                        }
                    }
                }
                // Rules whose destinations all weigh 0 (and are more than one) produce no route.
                expected.retain(|(i, _)| rules[*i].weights.len() == 1 || rules[*i].weights.iter().any(|w| *w > 0));
                let got: Vec<(usize, Option<usize>)> =
                    routes.iter().map(|r| r.origin.as_ref().map(|o| (o.rule, o.matcher)).unwrap()).collect();
                prop_assert_eq!(&got, &expected);

                // Only the last route may be a catch-all.
                for r in routes.iter().rev().skip(1) {
                    prop_assert!(!r.matcher.is_catch_all());
                }

                for r in &routes {
                    let rule = &rules[r.origin.as_ref().unwrap().rule];
                    let RouteAction::Forward { clusters, .. } = &r.action else { panic!("forward") };
                    if rule.weights.len() == 1 {
                        prop_assert_eq!(clusters.len(), 1);
                        prop_assert_eq!(clusters[0].weight, 100);
                    } else {
                        let want: Vec<(String, u32)> = rule
                            .weights
                            .iter()
                            .enumerate()
                            .filter(|(_, w)| **w > 0)
                            .map(|(d, w)| (format!("outbound|9080|s{d}|reviews.default.svc.cluster.local"), u32::from(*w)))
                            .collect();
                        let have: Vec<(String, u32)> = clusters.iter().map(|c| (c.cluster.to_string(), c.weight)).collect();
                        prop_assert_eq!(have, want);
                    }
                }
            }
        }
    }
}
