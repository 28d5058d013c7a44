//! VirtualService selection (`push_context.go initVirtualServices`,
//! `virtualservice.go SelectVirtualServices`): short names resolved, gateway
//! references resolved, visibility, Istio's ordering, and delegate
//! VirtualServices merged into their roots.
//!
//! Delegates (`virtualservice_controller.go mergeVirtualServices`,
//! `virtualservice.go MergeHTTPRoutes`): a VirtualService without `hosts` is a
//! delegate. A root rule with `delegate` is replaced by the delegate's rules,
//! each merged with the root rule (root match fields fill the gaps, route-level
//! settings inherited when absent). A delegate rule whose matches are not
//! compatible with the root's is dropped (`WEIR102`); a delegate that does not
//! exist or is not exported to the root's namespace drops the root rule
//! (`WEIR104`). The delegate's destination hosts and match gateways are
//! resolved in the delegate's namespace, before merging.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use weir_api::types::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};

use crate::mesh::MeshConfig;
use crate::message::{Messages, code};
use crate::model::Str;
use crate::node::Node;
use crate::registry::Visibility;
use crate::store::{Cfg, ConfigStore};

/// The reserved gateway name binding a VirtualService to every sidecar.
pub const MESH_GATEWAY: &str = "mesh";

/// A VirtualService ready for route building.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedVs {
    pub cfg: Arc<Cfg<VirtualService>>,
    /// `VirtualService ns/name`.
    pub object: Str,
    /// Lower-case hosts with short names expanded in the VS's namespace.
    pub hosts: Vec<Str>,
    /// `mesh` or `ns/name` (empty `gateways` resolved to `[mesh]`).
    pub gateways: Vec<Str>,
    /// HTTP rules with delegates merged in (root rules replaced by their delegate's rules).
    /// Match `gateways` are resolved to `mesh`/`ns/name`; destination hosts of
    /// rules taken from a delegate are resolved in the delegate's namespace,
    /// the root's own are resolved when routes are built.
    pub http: HttpRules,
    pub visibility: Visibility,
    /// Where each entry of `http` was written (same length as `http`). A
    /// shorter list (empty when every rule is the VirtualService's own, or
    /// hand-built values) means "rule `i` of `cfg`".
    pub rule_sources: Vec<RuleSource>,
}

/// The HTTP rules of a [`ResolvedVs`], as a slice of `HttpRoute`. Most
/// VirtualServices need no rewriting (no delegates, no match gateways to
/// resolve): their rules are read from `cfg` instead of being copied, which
/// would cost a deep clone of every rule in each compile.
#[derive(Clone, Debug)]
pub enum HttpRules {
    /// `spec.http` of this VirtualService, as written.
    Spec(Arc<Cfg<VirtualService>>),
    /// Rewritten rules.
    Owned(Vec<HttpRoute>),
}

impl std::ops::Deref for HttpRules {
    type Target = [HttpRoute];

    fn deref(&self) -> &[HttpRoute] {
        match self {
            HttpRules::Spec(cfg) => &cfg.spec.http,
            HttpRules::Owned(rules) => rules,
        }
    }
}

impl PartialEq for HttpRules {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl From<Vec<HttpRoute>> for HttpRules {
    fn from(rules: Vec<HttpRoute>) -> Self {
        HttpRules::Owned(rules)
    }
}

/// The object and rule an HTTP rule of a [`ResolvedVs`] came from: the root
/// itself, or the delegate whose rule was merged in.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSource {
    pub cfg: Arc<Cfg<VirtualService>>,
    /// `VirtualService ns/name`.
    pub object: Str,
    /// Index in that object's `spec.http`.
    pub rule: usize,
}

impl RuleSource {
    /// `file:line` of `spec.http[rule]` followed by `suffix` (`""`, `.route[0].destination`).
    pub fn origin_at(&self, suffix: &str) -> Str {
        self.cfg.origin_at(&format!("spec.http[{}]{suffix}", self.rule))
    }
}

impl ResolvedVs {
    /// Resolves one VirtualService without delegates (its `http` kept as
    /// written, match gateways resolved). Used by [`VsIndex::build`] and tests.
    pub fn new(cfg: Arc<Cfg<VirtualService>>, mesh: &MeshConfig, node: &Node) -> ResolvedVs {
        let ns = &*cfg.namespace;
        let hosts =
            cfg.spec.hosts.iter().map(|h| crate::host::resolve_short_name(h, ns, &node.cluster_domain)).collect();
        let gateways = if cfg.spec.gateways.is_empty() {
            vec![Str::from(MESH_GATEWAY)]
        } else {
            let mut g: Vec<Str> = cfg.spec.gateways.iter().map(|g| resolve_gateway_name(g, ns)).collect();
            dedup_keep_order(&mut g);
            g
        };
        let visibility = Visibility::from_export_to(&cfg.spec.export_to, ns, &mesh.default_virtual_service_export_to);
        let resolved = |g: &String| *resolve_gateway_name(g, ns) == **g;
        let http = if cfg.spec.http.iter().flat_map(|r| &r.matches).flat_map(|m| &m.gateways).all(resolved) {
            HttpRules::Spec(cfg.clone())
        } else {
            let mut http = cfg.spec.http.clone();
            for rule in &mut http {
                resolve_match_gateways(rule, ns);
            }
            HttpRules::Owned(http)
        };
        let object = vs_object(&cfg);
        // Every rule is this VirtualService's own: `rule_source` derives them.
        let rule_sources = Vec::new();
        ResolvedVs { object, hosts, gateways, http, visibility, rule_sources, cfg }
    }

    /// The source of `http[i]`.
    pub fn rule_source(&self, i: usize) -> RuleSource {
        match self.rule_sources.get(i) {
            Some(s) => s.clone(),
            None => RuleSource { cfg: self.cfg.clone(), object: self.object.clone(), rule: i },
        }
    }

    /// Whether the VS is bound to `gateway` (`mesh` or `ns/name`).
    pub fn bound_to(&self, gateway: &str) -> bool {
        self.gateways.iter().any(|g| &**g == gateway)
    }
}

#[derive(Clone, Debug, Default)]
pub struct VsIndex {
    /// Root (non-delegate) VirtualServices in creation order.
    pub all: Vec<Arc<ResolvedVs>>,
}

/// A delegate VirtualService, its rules resolved in its own namespace.
struct Delegate<'a> {
    cfg: &'a Arc<Cfg<VirtualService>>,
    object: Str,
    http: Vec<HttpRoute>,
    visibility: Visibility,
}

impl VsIndex {
    pub fn build(config: &ConfigStore, mesh: &MeshConfig, node: &Node, messages: &mut Messages) -> VsIndex {
        let domain = node.cluster_domain.as_str();
        let mut delegates: HashMap<(&str, &str), Delegate<'_>> = HashMap::new();
        for cfg in config.virtual_services.iter().filter(|c| c.spec.hosts.is_empty()) {
            let ns = &*cfg.namespace;
            let mut http = cfg.spec.http.clone();
            for rule in &mut http {
                resolve_match_gateways(rule, ns);
                resolve_destination_hosts(rule, ns, domain);
            }
            let visibility =
                Visibility::from_export_to(&cfg.spec.export_to, ns, &mesh.default_virtual_service_export_to);
            delegates.insert((&*cfg.namespace, &*cfg.name), Delegate { cfg, object: vs_object(cfg), http, visibility });
        }

        let mut all = Vec::new();
        for cfg in config.virtual_services.iter().filter(|c| !c.spec.hosts.is_empty()) {
            check_gateways(cfg, config, messages);
            let mut vs = ResolvedVs::new(cfg.clone(), mesh, node);
            if vs.http.iter().any(|r| r.delegate.is_some()) {
                let (http, sources) = merge_delegates(&vs, &delegates, messages);
                vs.http = HttpRules::Owned(http);
                vs.rule_sources = sources;
            }
            all.push(Arc::new(vs));
        }
        VsIndex { all }
    }

    /// VirtualServices bound to `mesh` visible from `namespace`, in Istio's
    /// order: private to the namespace, then exported to it, then public
    /// (each by creation time, name, namespace).
    pub fn for_mesh(&self, namespace: &str) -> Vec<&Arc<ResolvedVs>> {
        self.for_gateway(MESH_GATEWAY, namespace)
    }

    /// VirtualServices bound to gateway `gateway` (`ns/name`) visible from `namespace`, same order.
    pub fn for_gateway(&self, gateway: &str, namespace: &str) -> Vec<&Arc<ResolvedVs>> {
        let bound: Vec<&Arc<ResolvedVs>> = self.all.iter().filter(|v| v.bound_to(gateway)).collect();
        let mut out = Vec::with_capacity(bound.len());
        // Private: exported to its own namespace (`.` or the namespace's name), seen from there.
        out.extend(bound.iter().copied().filter(|v| {
            &*v.cfg.namespace == namespace
                && match &v.visibility {
                    Visibility::Namespaces(list) => list.is_empty() || list.iter().any(|n| &**n == namespace),
                    _ => false,
                }
        }));
        // Exported to `namespace` from elsewhere.
        out.extend(bound.iter().copied().filter(|v| {
            &*v.cfg.namespace != namespace
                && matches!(&v.visibility, Visibility::Namespaces(list) if list.iter().any(|n| &**n == namespace))
        }));
        // Public.
        out.extend(bound.iter().copied().filter(|v| v.visibility == Visibility::Public));
        out
    }
}

/// `VirtualService ns/name`.
fn vs_object(cfg: &Cfg<VirtualService>) -> Str {
    crate::str_util::concat_str(&["VirtualService ", &cfg.namespace, "/", &cfg.name])
}

fn dedup_keep_order(v: &mut Vec<Str>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
}

/// Istio `resolveGatewayName`: `mesh` kept; `name` and `./name` become
/// `<namespace>/name`; `ns/name` kept; legacy `name.ns[.svc.cluster.local]` becomes `ns/name`.
pub fn resolve_gateway_name(gateway: &str, namespace: &str) -> Str {
    if gateway == MESH_GATEWAY {
        return gateway.into();
    }
    match gateway.split_once('/') {
        Some((".", name)) => format!("{namespace}/{name}").into(),
        Some(_) => gateway.into(),
        None => match gateway.split_once('.') {
            None => format!("{namespace}/{gateway}").into(),
            Some((name, rest)) => {
                let ns = rest.split_once('.').map_or(rest, |(ns, _)| ns);
                format!("{ns}/{name}").into()
            }
        },
    }
}

fn resolve_match_gateways(rule: &mut HttpRoute, namespace: &str) {
    for m in &mut rule.matches {
        for g in &mut m.gateways {
            *g = resolve_gateway_name(g, namespace).to_string();
        }
    }
}

/// Expands short destination and mirror hosts of `rule` in `namespace`
/// (`ResolveVirtualServiceShortnames`); FQDNs are unchanged, so resolving again later is harmless.
fn resolve_destination_hosts(rule: &mut HttpRoute, namespace: &str, domain: &str) {
    let resolve = |h: &mut String| *h = crate::host::resolve_short_name(h, namespace, domain).to_string();
    for d in rule.route.iter_mut().filter_map(|d| d.destination.as_mut()) {
        resolve(&mut d.host);
    }
    if let Some(m) = &mut rule.mirror {
        resolve(&mut m.host);
    }
    for m in rule.mirrors.iter_mut().filter_map(|m| m.destination.as_mut()) {
        resolve(&mut m.host);
    }
}

/// IST0101 for every `gateways` entry naming a Gateway that is not in the store.
fn check_gateways(cfg: &Cfg<VirtualService>, config: &ConfigStore, messages: &mut Messages) {
    for (i, g) in cfg.spec.gateways.iter().enumerate() {
        if g == MESH_GATEWAY {
            continue;
        }
        let resolved = resolve_gateway_name(g, &cfg.namespace);
        let Some((ns, name)) = resolved.split_once('/') else { continue };
        if !config.gateways.iter().any(|gw| &*gw.namespace == ns && &*gw.name == name) {
            messages.error(
                code::REFERENCED_RESOURCE_NOT_FOUND,
                vs_object(cfg),
                Some(cfg.origin_at(&format!("spec.gateways[{i}]"))),
                format!("Referenced gateway not found: {g:?}"),
            );
        }
    }
}

/// Replaces the delegating rules of `root` by their delegates' rules.
fn merge_delegates(
    root: &ResolvedVs,
    delegates: &HashMap<(&str, &str), Delegate<'_>>,
    messages: &mut Messages,
) -> (Vec<HttpRoute>, Vec<RuleSource>) {
    let root_ns = &*root.cfg.namespace;
    let mut http = Vec::new();
    let mut sources = Vec::new();
    for (i, rule) in root.http.iter().enumerate() {
        let Some(d) = &rule.delegate else {
            http.push(rule.clone());
            sources.push(root.rule_source(i));
            continue;
        };
        let ns = if d.namespace.is_empty() { root_ns } else { d.namespace.as_str() };
        let origin = Some(root.cfg.origin_at(&format!("spec.http[{i}].delegate")));
        let Some(delegate) = delegates.get(&(ns, d.name.as_str())) else {
            messages.warn(
                code::DELEGATE_NOT_FOUND,
                root.object.clone(),
                origin,
                format!("delegate VirtualService {ns}/{} not found; rule http[{i}] skipped", d.name),
            );
            continue;
        };
        if !delegate.visibility.visible_to(&delegate.cfg.namespace, root_ns) {
            messages.warn(
                code::DELEGATE_NOT_FOUND,
                root.object.clone(),
                origin,
                format!(
                    "delegate VirtualService {ns}/{} is not exported to namespace {root_ns}; rule http[{i}] skipped",
                    d.name
                ),
            );
            continue;
        }
        for (j, sub) in delegate.http.iter().enumerate() {
            match merge_http_route(rule, sub) {
                Some(merged) => {
                    http.push(merged);
                    sources.push(RuleSource { cfg: delegate.cfg.clone(), object: delegate.object.clone(), rule: j });
                }
                None => messages.warn(
                    code::CONFLICTING_DELEGATE,
                    delegate.object.clone(),
                    Some(delegate.cfg.origin_at(&format!("spec.http[{j}]"))),
                    format!(
                        "rule http[{j}] conflicts with the match of rule http[{i}] of its root {}; dropped",
                        root.object
                    ),
                ),
            }
        }
    }
    (http, sources)
}

/// Istio `mergeHTTPRoute`: `None` when the delegate's matches conflict with the root's.
pub fn merge_http_route(root: &HttpRoute, delegate: &HttpRoute) -> Option<HttpRoute> {
    let matches = merge_http_match_requests(&root.matches, &delegate.matches)?;
    let mut out = delegate.clone();
    out.matches = matches;
    out.name = join_names(&root.name, &delegate.name);
    macro_rules! inherit {
        ($($f:ident),*) => {$(
            if out.$f.is_none() {
                out.$f = root.$f.clone();
            }
        )*};
    }
    inherit!(rewrite, direct_response, timeout, retries, fault, mirror, mirror_percent, mirror_percentage, cors_policy);
    inherit!(headers);
    if out.mirrors.is_empty() {
        out.mirrors = root.mirrors.clone();
    }
    Some(out)
}

/// `root-delegate`, or whichever is set.
fn join_names(root: &str, delegate: &str) -> String {
    match (root.is_empty(), delegate.is_empty()) {
        (_, true) => root.to_string(),
        (true, false) => delegate.to_string(),
        (false, false) => format!("{root}-{delegate}"),
    }
}

/// Istio `mergeHTTPMatchRequests`: every delegate match must be compatible
/// with at least one root match; the result is each compatible pair merged.
fn merge_http_match_requests(
    root: &[HttpMatchRequest],
    delegate: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(delegate.to_vec());
    }
    if delegate.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for sub in delegate {
        let before = out.len();
        for r in root {
            if !has_conflict(r, sub) {
                out.push(merge_http_match_request(r, sub));
            }
        }
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

fn merge_maps<V: Clone>(root: &BTreeMap<String, V>, delegate: &BTreeMap<String, V>) -> BTreeMap<String, V> {
    let mut out = root.clone();
    out.extend(delegate.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

fn merge_http_match_request(root: &HttpMatchRequest, delegate: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = delegate.clone();
    out.name = join_names(&root.name, &delegate.name);
    if out.uri.is_none() {
        out.uri = root.uri.clone();
    }
    if out.scheme.is_none() {
        out.scheme = root.scheme.clone();
    }
    if out.method.is_none() {
        out.method = root.method.clone();
    }
    if out.authority.is_none() {
        out.authority = root.authority.clone();
    }
    out.headers = merge_maps(&root.headers, &delegate.headers);
    out.without_headers = merge_maps(&root.without_headers, &delegate.without_headers);
    out.query_params = merge_maps(&root.query_params, &delegate.query_params);
    if out.port == 0 {
        out.port = root.port;
    }
    out.source_labels = merge_maps(&root.source_labels, &delegate.source_labels);
    if out.source_namespace.is_empty() {
        out.source_namespace = root.source_namespace.clone();
    }
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    if out.stat_prefix.is_empty() {
        out.stat_prefix = root.stat_prefix.clone();
    }
    out
}

/// Istio `hasConflict`: whether `leaf` (delegate) is not a refinement of `root`.
fn has_conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs.iter().any(|(r, l)| string_match_conflict(r.as_ref(), l.as_ref())) {
        return true;
    }
    let map_conflict = |r: &BTreeMap<String, StringMatch>, l: &BTreeMap<String, StringMatch>| {
        l.iter().any(|(k, lv)| string_match_conflict(r.get(k), Some(lv)))
    };
    if map_conflict(&root.headers, &leaf.headers)
        || map_conflict(&root.without_headers, &leaf.without_headers)
        || map_conflict(&root.query_params, &leaf.query_params)
    {
        return true;
    }
    if root.ignore_uri_case != leaf.ignore_uri_case {
        return true;
    }
    if root.port > 0 && leaf.port > 0 && root.port != leaf.port {
        return true;
    }
    if !root.source_namespace.is_empty() && leaf.source_namespace != root.source_namespace {
        return true;
    }
    if leaf.source_labels.iter().any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v)) {
        return true;
    }
    if !root.gateways.is_empty() && !leaf.gateways.is_empty() {
        if root.gateways.len() < leaf.gateways.len() {
            return true;
        }
        if leaf.gateways.iter().any(|g| !root.gateways.contains(g)) {
            return true;
        }
    }
    false
}

/// Istio `stringMatchConflict` (an empty string counts as unset, like the Go getters).
fn string_match_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else { return false };
    let get = |o: &Option<String>| o.as_deref().unwrap_or("").to_string();
    let (r_exact, r_prefix, r_regex) = (get(&root.exact), get(&root.prefix), get(&root.regex));
    let (l_exact, l_prefix, l_regex) = (get(&leaf.exact), get(&leaf.prefix), get(&leaf.regex));
    if !r_regex.is_empty() && (!l_regex.is_empty() || !l_prefix.is_empty() || !l_exact.is_empty()) {
        return true;
    }
    if !l_regex.is_empty() && (!r_regex.is_empty() || !r_prefix.is_empty() || !r_exact.is_empty()) {
        return true;
    }
    if !r_exact.is_empty() {
        return !l_prefix.is_empty() || l_exact != r_exact;
    }
    if !r_prefix.is_empty() {
        if !l_prefix.is_empty() {
            return !l_prefix.starts_with(&r_prefix);
        }
        if !l_exact.is_empty() {
            return !l_exact.starts_with(&r_prefix);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Level;

    fn store(yaml: &str) -> ConfigStore {
        crate::store::from_yaml(yaml, "vs.yaml")
    }

    fn build(yaml: &str) -> (VsIndex, Vec<crate::message::Message>) {
        let mut messages = Messages::default();
        let idx = VsIndex::build(&store(yaml), &MeshConfig::default(), &Node::default(), &mut messages);
        (idx, messages.into_vec())
    }

    fn names(list: &[&Arc<ResolvedVs>]) -> Vec<String> {
        list.iter().map(|v| v.cfg.key()).collect()
    }

    fn vs(ns: &str, name: &str, ts: &str, spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}, \
             creationTimestamp: \"{ts}\"}}\nspec: {spec}\n---\n"
        )
    }

    #[test]
    fn gateway_names_resolve_like_istio() {
        assert_eq!(&*resolve_gateway_name("mesh", "ns1"), "mesh");
        assert_eq!(&*resolve_gateway_name("gw", "ns1"), "ns1/gw");
        assert_eq!(&*resolve_gateway_name("./gw", "ns1"), "ns1/gw");
        assert_eq!(&*resolve_gateway_name("other/gw", "ns1"), "other/gw");
        assert_eq!(&*resolve_gateway_name("gw.other.svc.cluster.local", "ns1"), "other/gw");
        assert_eq!(&*resolve_gateway_name("gw.other", "ns1"), "other/gw");
    }

    #[test]
    fn hosts_and_gateways_are_resolved() {
        let (idx, _) = build(&vs(
            "ns1",
            "a",
            "2020-01-01T00:00:00Z",
            "{hosts: [Reviews, foo.example.com, '*'], gateways: [gw, ./gw2, mesh], http: [{match: [{gateways: [gw3]}], route: [{destination: {host: r}}]}]}",
        ));
        let v = &idx.all[0];
        assert_eq!(v.hosts, vec![Str::from("reviews.ns1.svc.cluster.local"), "foo.example.com".into(), "*".into()]);
        assert_eq!(v.gateways, vec![Str::from("ns1/gw"), "ns1/gw2".into(), "mesh".into()]);
        assert_eq!(v.http[0].matches[0].gateways, vec!["ns1/gw3".to_string()]);
        // Root destinations stay as written; route.rs resolves them in the VS namespace.
        assert_eq!(v.http[0].route[0].destination.as_ref().unwrap().host, "r");
        assert_eq!(&*v.object, "VirtualService ns1/a");
        assert_eq!(v.rule_source(0).rule, 0);
    }

    #[test]
    fn empty_gateways_bind_to_mesh_only() {
        let (idx, _) = build(&format!(
            "{}{}",
            vs("default", "a", "2020-01-01T00:00:00Z", "{hosts: [a], http: [{route: [{destination: {host: a}}]}]}"),
            vs(
                "default",
                "b",
                "2020-01-02T00:00:00Z",
                "{hosts: [b], gateways: [gw], http: [{route: [{destination: {host: b}}]}]}"
            ),
        ));
        assert_eq!(idx.all[0].gateways, vec![Str::from("mesh")]);
        assert_eq!(names(&idx.for_mesh("default")), vec!["default/a"]);
        assert_eq!(names(&idx.for_gateway("default/gw", "default")), vec!["default/b"]);
        assert!(idx.for_gateway("other/gw", "default").is_empty());
    }

    #[test]
    fn ordering_private_then_exported_then_public_by_creation_time() {
        let spec = |h: &str, export: &str| {
            format!("{{hosts: [{h}], exportTo: [{export}], http: [{{route: [{{destination: {{host: {h}}}}}]}}]}}")
        };
        let yaml = [
            vs("ns2", "pub-old", "2020-01-01T00:00:00Z", &spec("a", "'*'")),
            vs("ns1", "priv-new", "2020-01-05T00:00:00Z", &spec("b", "'.'")),
            vs("ns3", "exp", "2020-01-03T00:00:00Z", &spec("c", "ns1")),
            vs("ns1", "priv-old", "2020-01-02T00:00:00Z", &spec("d", "ns1")),
            vs("ns4", "pub-tie-b", "2020-01-04T00:00:00Z", &spec("e", "'*'")),
            vs("ns0", "pub-tie-b", "2020-01-04T00:00:00Z", &spec("f", "'*'")),
            vs("ns4", "pub-tie-a", "2020-01-04T00:00:00Z", &spec("g", "'*'")),
            vs("ns2", "hidden", "2020-01-01T00:00:00Z", &spec("h", "'.'")),
            vs("ns3", "nobody", "2020-01-01T00:00:00Z", &spec("i", "'~'")),
        ]
        .concat();
        let (idx, _) = build(&yaml);
        assert_eq!(
            names(&idx.for_mesh("ns1")),
            vec![
                "ns1/priv-old",
                "ns1/priv-new",
                "ns3/exp",
                "ns2/pub-old",
                "ns4/pub-tie-a",
                "ns0/pub-tie-b",
                "ns4/pub-tie-b"
            ]
        );
        assert_eq!(
            names(&idx.for_mesh("ns2")),
            vec!["ns2/hidden", "ns2/pub-old", "ns4/pub-tie-a", "ns0/pub-tie-b", "ns4/pub-tie-b"]
        );
        // `~` is visible to nobody, not even its own namespace.
        assert!(!names(&idx.for_mesh("ns3")).contains(&"ns3/nobody".to_string()));
    }

    #[test]
    fn mesh_default_export_to_applies_when_export_to_is_empty() {
        let mesh = MeshConfig { default_virtual_service_export_to: vec![".".into()], ..MeshConfig::default() };
        let cfg =
            store(&vs("ns1", "a", "2020-01-01T00:00:00Z", "{hosts: [a], http: [{route: [{destination: {host: a}}]}]}"));
        let idx = VsIndex::build(&cfg, &mesh, &Node::default(), &mut Messages::default());
        assert_eq!(idx.for_mesh("ns1").len(), 1);
        assert!(idx.for_mesh("ns2").is_empty());
    }

    #[test]
    fn missing_gateway_is_reported() {
        let yaml = format!(
            "{}{}",
            vs(
                "default",
                "a",
                "2020-01-01T00:00:00Z",
                "{hosts: [a], gateways: [mesh, gw, missing, other/gw], http: [{route: [{destination: {host: a}}]}]}"
            ),
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\n\
             spec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}\n",
        );
        let (_, messages) = build(&yaml);
        let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(
            texts,
            vec!["Referenced gateway not found: \"missing\"", "Referenced gateway not found: \"other/gw\""]
        );
        assert!(messages.iter().all(|m| m.code == code::REFERENCED_RESOURCE_NOT_FOUND && m.level == Level::Error));
        assert_eq!(&*messages[0].object, "VirtualService default/a");
        assert!(messages[0].origin.as_deref().is_some_and(|o| o.starts_with("vs.yaml:")));
    }

    const ROOT_TS: &str = "2020-01-01T00:00:00Z";

    #[test]
    fn delegates_replace_root_rules_and_inherit() {
        let yaml = [
            vs(
                "default",
                "root",
                ROOT_TS,
                "{hosts: [bookinfo.com], http: [\
                 {name: first, match: [{uri: {prefix: /a}}], route: [{destination: {host: a}}]},\
                 {name: r, match: [{uri: {prefix: /productpage}, name: m}], delegate: {name: d, namespace: ns2}, \
                  timeout: 5s, headers: {request: {set: {x: y}}}},\
                 {route: [{destination: {host: last}}]}]}",
            ),
            vs(
                "ns2",
                "d",
                ROOT_TS,
                "{http: [\
                 {name: v2, match: [{uri: {prefix: /productpage/v2}, headers: {u: {exact: j}}}], route: [{destination: {host: pp, subset: v2}}], timeout: 1s},\
                 {route: [{destination: {host: pp}}]}]}",
            ),
        ]
        .concat();
        let (idx, messages) = build(&yaml);
        assert!(messages.is_empty(), "{messages:?}");
        assert_eq!(idx.all.len(), 1, "delegates are not roots");
        let v = &idx.all[0];
        assert_eq!(v.http.len(), 4);
        assert_eq!(v.http[0].name, "first");
        let d0 = &v.http[1];
        assert_eq!(d0.name, "r-v2");
        assert_eq!(d0.matches.len(), 1);
        assert_eq!(d0.matches[0].name, "m");
        assert_eq!(d0.matches[0].uri.as_ref().unwrap().prefix.as_deref(), Some("/productpage/v2"));
        assert!(d0.matches[0].headers.contains_key("u"));
        assert_eq!(d0.timeout, Some(weir_api::types::Duration::from_secs(1)), "delegate's own timeout wins");
        assert!(d0.headers.is_some(), "headers inherited");
        // Resolved in the delegate's namespace, not the root's.
        assert_eq!(d0.route[0].destination.as_ref().unwrap().host, "pp.ns2.svc.cluster.local");
        let d1 = &v.http[2];
        assert_eq!(d1.name, "r");
        assert_eq!(d1.matches[0].uri.as_ref().unwrap().prefix.as_deref(), Some("/productpage"), "root match inherited");
        assert_eq!(d1.timeout, Some(weir_api::types::Duration::from_secs(5)));
        assert!(d1.delegate.is_none());
        assert_eq!(v.http[3].route[0].destination.as_ref().unwrap().host, "last");
        // Sources point at the delegate's rules.
        assert_eq!(&*v.rule_source(1).object, "VirtualService ns2/d");
        assert_eq!(v.rule_source(1).rule, 0);
        assert_eq!(v.rule_source(2).rule, 1);
        assert_eq!(&*v.rule_source(3).object, "VirtualService default/root");
        assert_eq!(v.rule_source(3).rule, 2);
    }

    #[test]
    fn delegate_namespace_defaults_to_root_namespace() {
        let yaml = [
            vs("default", "root", ROOT_TS, "{hosts: [h.com], http: [{delegate: {name: d}}]}"),
            vs("default", "d", ROOT_TS, "{http: [{route: [{destination: {host: x}}]}]}"),
        ]
        .concat();
        let (idx, messages) = build(&yaml);
        assert!(messages.is_empty(), "{messages:?}");
        assert_eq!(idx.all[0].http.len(), 1);
        assert_eq!(idx.all[0].http[0].route[0].destination.as_ref().unwrap().host, "x.default.svc.cluster.local");
    }

    #[test]
    fn missing_or_hidden_delegates_skip_the_rule() {
        let yaml = [
            vs(
                "default",
                "root",
                ROOT_TS,
                "{hosts: [h.com], http: [{match: [{uri: {prefix: /a}}], delegate: {name: nope}}, \
                 {match: [{uri: {prefix: /b}}], delegate: {name: private, namespace: ns2}}, \
                 {match: [{uri: {prefix: /c}}], delegate: {name: has-hosts}}, \
                 {route: [{destination: {host: x}}]}]}",
            ),
            vs("ns2", "private", ROOT_TS, "{exportTo: ['.'], http: [{route: [{destination: {host: y}}]}]}"),
            vs("default", "has-hosts", ROOT_TS, "{hosts: [other.com], http: [{route: [{destination: {host: z}}]}]}"),
        ]
        .concat();
        let (idx, messages) = build(&yaml);
        let root = idx.all.iter().find(|v| &*v.cfg.name == "root").unwrap();
        assert_eq!(root.http.len(), 1);
        assert_eq!(root.http[0].route[0].destination.as_ref().unwrap().host, "x");
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages.iter().all(|m| m.code == code::DELEGATE_NOT_FOUND && m.level == Level::Warning));
        assert!(messages.iter().any(|m| m.text.contains("ns2/private is not exported to namespace default")));
        assert!(messages.iter().any(|m| m.text.contains("default/nope not found")));
        assert!(messages.iter().any(|m| m.text.contains("default/has-hosts not found")));
    }

    #[test]
    fn delegate_exported_to_root_namespace_is_used() {
        let yaml = [
            vs("default", "root", ROOT_TS, "{hosts: [h.com], http: [{delegate: {name: d, namespace: ns2}}]}"),
            vs("ns2", "d", ROOT_TS, "{exportTo: [default], http: [{route: [{destination: {host: y}}]}]}"),
        ]
        .concat();
        let (idx, messages) = build(&yaml);
        assert!(messages.is_empty());
        assert_eq!(idx.all[0].http.len(), 1);
    }

    #[test]
    fn conflicting_delegate_routes_are_dropped() {
        let yaml = [
            vs(
                "default",
                "root",
                ROOT_TS,
                "{hosts: [h.com], http: [{match: [{uri: {prefix: /api}}], delegate: {name: d}}]}",
            ),
            vs(
                "default",
                "d",
                ROOT_TS,
                "{http: [{match: [{uri: {prefix: /other}}], route: [{destination: {host: a}}]},\
                 {match: [{uri: {exact: /api/v1}}], route: [{destination: {host: b}}]}]}",
            ),
        ]
        .concat();
        let (idx, messages) = build(&yaml);
        let v = &idx.all[0];
        assert_eq!(v.http.len(), 1);
        assert_eq!(v.http[0].matches[0].uri.as_ref().unwrap().exact.as_deref(), Some("/api/v1"));
        assert_eq!(v.rule_source(0).rule, 1);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].code, code::CONFLICTING_DELEGATE);
        assert_eq!(&*messages[0].object, "VirtualService default/d");
    }

    fn sm(kind: &str, v: &str) -> StringMatch {
        let v = Some(v.to_string());
        match kind {
            "exact" => StringMatch { exact: v, ..Default::default() },
            "prefix" => StringMatch { prefix: v, ..Default::default() },
            _ => StringMatch { regex: v, ..Default::default() },
        }
    }

    #[test]
    fn string_match_conflicts_follow_istio() {
        let c = |r: &StringMatch, l: &StringMatch| string_match_conflict(Some(r), Some(l));
        assert!(!string_match_conflict(None, Some(&sm("exact", "/a"))));
        assert!(!string_match_conflict(Some(&sm("exact", "/a")), None));
        assert!(!c(&sm("exact", "/a"), &sm("exact", "/a")));
        assert!(c(&sm("exact", "/a"), &sm("exact", "/b")));
        assert!(c(&sm("exact", "/a"), &sm("prefix", "/a")));
        assert!(!c(&sm("prefix", "/a"), &sm("prefix", "/a/b")));
        assert!(c(&sm("prefix", "/a/b"), &sm("prefix", "/a")));
        assert!(!c(&sm("prefix", "/a"), &sm("exact", "/a/x")));
        assert!(c(&sm("prefix", "/a"), &sm("exact", "/b")));
        assert!(c(&sm("regex", "/a.*"), &sm("regex", "/a.*")));
        assert!(c(&sm("regex", "/a.*"), &sm("prefix", "/a")));
        assert!(c(&sm("prefix", "/a"), &sm("regex", "/a.*")));
        assert!(c(&StringMatch::default(), &sm("prefix", "/a")), "an empty root match conflicts");
    }

    #[test]
    fn match_conflicts_on_other_fields() {
        let m = |y: &str| -> HttpMatchRequest { serde_json::from_str(y).unwrap() };
        assert!(!has_conflict(&m(r#"{"port": 80}"#), &m(r#"{}"#)));
        assert!(has_conflict(&m(r#"{"port": 80}"#), &m(r#"{"port": 81}"#)));
        assert!(has_conflict(&m(r#"{"ignoreUriCase": true}"#), &m(r#"{}"#)));
        assert!(has_conflict(&m(r#"{"sourceNamespace": "a"}"#), &m(r#"{}"#)));
        assert!(!has_conflict(&m(r#"{}"#), &m(r#"{"sourceNamespace": "a"}"#)));
        assert!(has_conflict(&m(r#"{"sourceLabels": {"a": "1"}}"#), &m(r#"{"sourceLabels": {"a": "2"}}"#)));
        assert!(!has_conflict(&m(r#"{"sourceLabels": {"a": "1"}}"#), &m(r#"{"sourceLabels": {"b": "2"}}"#)));
        assert!(has_conflict(&m(r#"{"gateways": ["a/g"]}"#), &m(r#"{"gateways": ["a/h"]}"#)));
        assert!(!has_conflict(&m(r#"{"gateways": ["a/g", "a/h"]}"#), &m(r#"{"gateways": ["a/h"]}"#)));
        assert!(has_conflict(&m(r#"{"headers": {"x": {"exact": "1"}}}"#), &m(r#"{"headers": {"x": {"exact": "2"}}}"#)));
        assert!(!has_conflict(
            &m(r#"{"headers": {"x": {"exact": "1"}}}"#),
            &m(r#"{"headers": {"y": {"exact": "2"}}}"#)
        ));
    }

    #[test]
    fn match_merge_pairs_every_compatible_root_match() {
        let m = |y: &str| -> HttpMatchRequest { serde_json::from_str(y).unwrap() };
        let root =
            vec![m(r#"{"uri": {"prefix": "/a"}, "name": "ra"}"#), m(r#"{"uri": {"prefix": "/"}, "port": 8080}"#)];
        let sub = vec![m(r#"{"uri": {"prefix": "/a/b"}, "headers": {"h": {"exact": "v"}}}"#)];
        let merged = merge_http_match_requests(&root, &sub).unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].name, "ra");
        assert_eq!(merged[1].port, 8080);
        assert!(
            merge_http_match_requests(&root, &[m(r#"{"uri": {"exact": "/"}}"#), m(r#"{"uri": {"prefix": "/a/c"}}"#)])
                .is_some()
        );
        assert!(merge_http_match_requests(&[root[0].clone()], &[m(r#"{"uri": {"prefix": "/z"}}"#)]).is_none());
        assert_eq!(merge_http_match_requests(&root, &[]).unwrap(), root);
        assert_eq!(merge_http_match_requests(&[], &sub).unwrap(), sub);
    }
}
