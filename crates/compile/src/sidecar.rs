//! The Sidecar resource's scope for a node (`pilot/pkg/model/sidecar.go`):
//! which services, VirtualServices and DestinationRules the node imports,
//! its egress listeners, and its outbound traffic policy.

use std::sync::Arc;

use weir_api::protocol::Protocol;
use weir_api::types::{IstioEgressListener, OutboundMode as SidecarOutboundMode, Sidecar};

use crate::fast_hash::FastMap;
use crate::host;
use crate::mesh::{MeshConfig, OutboundMode};
use crate::message::{Messages, code};
use crate::model::Str;
use crate::node::Node;
use crate::registry::{Registry, Service, Visibility};
use crate::store::{Cfg, ConfigStore};

/// The namespace part of an egress `hosts` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportNamespace {
    /// `*/host`: any namespace.
    Any,
    /// `ns/host` (and `./host`, resolved to the namespace of the workload the
    /// scope is for: the Sidecar's own namespace, or — for the mesh-wide
    /// root-namespace Sidecar — the workload's namespace, as in Istio).
    Named(Str),
    /// `~ns/host` or `~/host`: exclude (nothing imported from there).
    /// `None` is every namespace (`~/host`, `~*/host`).
    Excluded(Option<Str>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportHost {
    pub namespace: ImportNamespace,
    /// FQDN, `*.suffix` or `*`.
    pub host: Str,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EgressListener {
    /// `None`: the catch-all listener (all ports).
    pub port: Option<u16>,
    pub protocol: Option<Protocol>,
    pub bind: Option<Str>,
    pub hosts: Vec<ImportHost>,
}

/// The effective Sidecar configuration of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct SidecarScope {
    /// `Sidecar ns/name` that applies, or `None` for the implicit default (import everything).
    pub object: Option<Str>,
    pub egress: Vec<EgressListener>,
    pub outbound_mode: OutboundMode,
}

impl ImportHost {
    /// Parses an egress `hosts` entry (`ns/host`); `.` is `config_namespace`.
    /// `None` for entries without exactly one `/` (Istio ignores them; validation rejects them).
    pub fn parse(entry: &str, config_namespace: &str) -> Option<ImportHost> {
        let (ns, name) = entry.split_once('/')?;
        if name.contains('/') {
            return None;
        }
        let resolve = |ns: &str| Str::from(if ns == "." { config_namespace } else { ns });
        let namespace = match ns.strip_prefix('~') {
            Some("" | "*") => ImportNamespace::Excluded(None),
            Some(ns) => ImportNamespace::Excluded(Some(resolve(ns))),
            None if ns == "*" => ImportNamespace::Any,
            None => ImportNamespace::Named(resolve(ns)),
        };
        Some(ImportHost { namespace, host: name.to_ascii_lowercase().into() })
    }
}

impl EgressListener {
    /// Istio `needsPortMatch`: a listener with a port imports only the
    /// services that have that port, unless it is an HTTP_PROXY listener.
    pub fn matches_port(&self) -> bool {
        self.port.is_some_and(|p| p != 0) && self.protocol != Some(Protocol::HttpProxy)
    }

    /// Whether a `~` entry for `namespace` (or for every namespace) covers `host` (`hostClassification.Excluded`).
    fn excluded(&self, namespace: &str, host: &str) -> bool {
        self.hosts.iter().any(|h| match &h.namespace {
            ImportNamespace::Excluded(None) => host::subset_of(host, &h.host),
            ImportNamespace::Excluded(Some(ns)) => &**ns == namespace && host::subset_of(host, &h.host),
            _ => false,
        })
    }

    /// The import hosts that apply to objects in `namespace` (`ns/…` and `*/…`).
    fn imported_hosts<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.hosts.iter().filter_map(move |h| match &h.namespace {
            ImportNamespace::Any => Some(&*h.host),
            ImportNamespace::Named(ns) if &**ns == namespace => Some(&*h.host),
            _ => None,
        })
    }

    /// Service semantics (`hostClassification.Matches`): the service host
    /// must be a subset of an imported host (`a.foo.com` by `*.foo.com`, but
    /// not `*.foo.com` by `a.foo.com`), and not excluded.
    pub fn imports_service_host(&self, namespace: &str, host: &str) -> bool {
        !self.excluded(namespace, host) && self.imported_hosts(namespace).any(|h| host::subset_of(host, h))
    }

    /// VirtualService semantics (`hostClassification.VSMatches`): the VS host
    /// and an imported host overlap either way, and the VS host is not excluded.
    pub fn imports_virtual_service_host(&self, namespace: &str, host: &str) -> bool {
        !self.excluded(namespace, host) && self.imported_hosts(namespace).any(|h| host::matches(host, h))
    }

    /// Whether this listener imports `service`, on any of its ports.
    fn imports_service(&self, service: &Service) -> bool {
        self.imports_service_host(&service.namespace, &service.hostname)
            && (!self.matches_port() || self.port.is_some_and(|p| service.port(p).is_some()))
    }

    /// Whether this listener imports `service` on `port`.
    fn imports_service_port(&self, service: &Service, port: u16) -> bool {
        self.imports_service_host(&service.namespace, &service.hostname)
            && service.port(port).is_some()
            && (!self.matches_port() || self.port == Some(port))
    }

    fn from_config(e: &IstioEgressListener, config_namespace: &str) -> Option<EgressListener> {
        let port = match &e.port {
            Some(p) => Some(u16::try_from(p.number).ok()?),
            None => None,
        };
        Some(EgressListener {
            port,
            protocol: e.port.as_ref().and_then(|p| Protocol::parse(&p.protocol)),
            bind: (!e.bind.is_empty()).then(|| Str::from(e.bind.as_str())),
            hosts: e.hosts.iter().filter_map(|h| ImportHost::parse(h, config_namespace)).collect(),
        })
    }
}

impl SidecarScope {
    /// The default scope: import `*/*`, mesh outbound mode.
    pub fn default_for(mesh: &MeshConfig) -> SidecarScope {
        SidecarScope {
            object: None,
            egress: vec![EgressListener {
                port: None,
                protocol: None,
                bind: None,
                hosts: vec![ImportHost { namespace: ImportNamespace::Any, host: "*".into() }],
            }],
            outbound_mode: mesh.outbound_traffic_policy.mode,
        }
    }

    /// Picks the Sidecar for `node` (selector match in its namespace, oldest
    /// first; else the namespace's selector-less Sidecar; else the root
    /// namespace's selector-less Sidecar; else the default). Gateways-only
    /// nodes always get the default scope.
    ///
    /// A `workloadSelector` with no labels selects every workload (and, as
    /// in Istio, still ranks with the selector Sidecars). Ambiguity is
    /// reported as `istioctl analyze` does: IST0110 when several selector
    /// Sidecars match the node, IST0111 when a namespace that matters here
    /// has several Sidecars without selector.
    pub fn select(config: &ConfigStore, mesh: &MeshConfig, node: &Node, messages: &mut Messages) -> SidecarScope {
        if !node.role.sidecar() {
            return SidecarScope::default_for(mesh);
        }
        let namespace = node.namespace.as_str();
        let in_namespace: Vec<&Arc<Cfg<Sidecar>>> =
            config.sidecars.iter().filter(|s| &*s.namespace == namespace).collect();

        let selecting: Vec<&Arc<Cfg<Sidecar>>> = in_namespace
            .iter()
            .copied()
            .filter(|s| s.spec.workload_selector.as_ref().is_some_and(|sel| node.selected_by(&sel.labels)))
            .collect();
        report_conflicting_selectors(&selecting, node, messages);
        report_multiple_without_selector(&in_namespace, namespace, messages);

        let chosen = selecting
            .first()
            .copied()
            .or_else(|| in_namespace.iter().copied().find(|s| s.spec.workload_selector.is_none()));
        let chosen = chosen.or_else(|| {
            let root = mesh.root_namespace.as_str();
            let in_root: Vec<&Arc<Cfg<Sidecar>>> = config.sidecars.iter().filter(|s| &*s.namespace == root).collect();
            if root != namespace {
                report_multiple_without_selector(&in_root, root, messages);
            }
            in_root.into_iter().find(|s| s.spec.workload_selector.is_none())
        });
        match chosen {
            Some(cfg) => SidecarScope::from_sidecar(cfg, mesh, namespace),
            None => SidecarScope::default_for(mesh),
        }
    }

    /// `convertToSidecarScope` for a workload in `config_namespace`.
    fn from_sidecar(cfg: &Cfg<Sidecar>, mesh: &MeshConfig, config_namespace: &str) -> SidecarScope {
        let spec = &cfg.spec;
        let egress: Vec<EgressListener> = if spec.egress.is_empty() {
            SidecarScope::default_for(mesh).egress
        } else {
            spec.egress.iter().filter_map(|e| EgressListener::from_config(e, config_namespace)).collect()
        };
        let outbound_mode = match &spec.outbound_traffic_policy {
            Some(p) => match p.mode {
                SidecarOutboundMode::RegistryOnly => OutboundMode::RegistryOnly,
                // ALLOW_ANY_DYNAMIC_DNS is rejected in Sidecars by validation.
                SidecarOutboundMode::AllowAny | SidecarOutboundMode::AllowAnyDynamicDns => OutboundMode::AllowAny,
            },
            None => mesh.outbound_traffic_policy.mode,
        };
        SidecarScope { object: Some(format!("Sidecar {}", cfg.key()).into()), egress, outbound_mode }
    }

    /// Whether something declared in `namespace` with host `host` is imported
    /// by any egress listener (Istio's `egress.hosts` rules, bidirectional host matching).
    ///
    /// These are VirtualService semantics (`VSMatches`): `*.foo.com` is
    /// imported by `ns/a.foo.com` and the other way round. For services,
    /// whose host must be a subset of an import, use [`Self::imports_service`].
    pub fn imports(&self, namespace: &str, host: &str) -> bool {
        self.egress.iter().any(|l| l.imports_virtual_service_host(namespace, host))
    }

    /// Same, for the egress listener that serves `port` (the port's own listener, else the catch-all).
    pub fn imports_on_port(&self, port: u16, namespace: &str, host: &str) -> bool {
        self.listener_for_port(port).is_some_and(|l| l.imports_virtual_service_host(namespace, host))
    }

    /// The egress listener that serves `port` (Istio `GetEgressListenerForRDS`):
    /// the first listener that is either the catch-all or has that port.
    pub fn listener_for_port(&self, port: u16) -> Option<&EgressListener> {
        self.egress.iter().find(|l| l.port.is_none() || l.port == Some(port))
    }

    /// Whether a service host in `namespace` is imported by any listener
    /// (service semantics: `a.foo.com` by `*.foo.com`, not the reverse), ports not considered.
    pub fn imports_service_host(&self, namespace: &str, host: &str) -> bool {
        self.egress.iter().any(|l| l.imports_service_host(namespace, host))
    }

    /// Whether the scope imports `service` at all (Istio `selectServices`
    /// over every listener): a listener with a port imports only services
    /// that have that port.
    pub fn imports_service(&self, service: &Service) -> bool {
        self.egress.iter().any(|l| l.imports_service(service))
    }

    /// The ports of `service` the scope imports (clusters exist for these):
    /// all of them through a port-less (or HTTP_PROXY) listener, else the
    /// ports of the listeners that import it. In service port order.
    pub fn imported_ports(&self, service: &Service) -> Vec<u16> {
        service
            .ports
            .iter()
            .map(|p| p.port)
            .filter(|&p| self.egress.iter().any(|l| l.imports_service_port(service, p)))
            .collect()
    }

    /// The services of `registry` this scope gives a proxy in `namespace`
    /// (Istio `selectServices` over `servicesExportedToNamespace`): visible
    /// from `namespace`, imported ([`Self::imports_service`]), and one
    /// namespace per hostname — the proxy's own, else the first seen.
    /// Services of that namespace sharing the hostname are all kept (they
    /// share instances; the first is the one that defines ports and policy).
    /// Order: services exported to `namespace` by name, then public ones,
    /// each in registry order.
    pub fn services<'a>(&self, registry: &'a Registry, namespace: &str) -> Vec<&'a Arc<Service>> {
        let exported = registry
            .services
            .iter()
            .filter(|s| s.visibility != Visibility::Public && s.visibility.visible_to(&s.namespace, namespace));
        let public = registry.services.iter().filter(|s| s.visibility == Visibility::Public);
        let imported: Vec<&Arc<Service>> = exported.chain(public).filter(|s| self.imports_service(s)).collect();
        // Hostname -> the namespace whose services are kept (looked up only, never iterated).
        let mut chosen: FastMap<&str, &str> = crate::fast_hash::map_with_capacity(imported.len());
        for s in &imported {
            let entry = chosen.entry(&*s.hostname).or_insert(&*s.namespace);
            if &*s.namespace == namespace {
                *entry = &*s.namespace;
            }
        }
        imported.into_iter().filter(|s| chosen.get(&*s.hostname) == Some(&&*s.namespace)).collect()
    }

    /// Whether `service` is served on outbound port `port`: the listener for
    /// that port (see [`Self::listener_for_port`]) imports it and the service has the port.
    pub fn imports_service_on_port(&self, service: &Service, port: u16) -> bool {
        self.listener_for_port(port).is_some_and(|l| l.imports_service_port(service, port))
    }
}

fn sidecar_names(list: &[&Arc<Cfg<Sidecar>>]) -> String {
    let mut names: Vec<&str> = list.iter().map(|s| &*s.name).collect();
    names.sort_unstable();
    format!("[{}]", names.join(" "))
}

/// IST0110: several Sidecars with a (non-empty) selector select this node.
fn report_conflicting_selectors(selecting: &[&Arc<Cfg<Sidecar>>], node: &Node, messages: &mut Messages) {
    let with_labels: Vec<&Arc<Cfg<Sidecar>>> = selecting
        .iter()
        .copied()
        .filter(|s| s.spec.workload_selector.as_ref().is_some_and(|sel| !sel.labels.is_empty()))
        .collect();
    if with_labels.len() < 2 {
        return;
    }
    let labels: Vec<String> = node.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let text = format!(
        "The Sidecars {} in namespace {:?} select the same workload (labels {}), which can lead to undefined behavior.",
        sidecar_names(&with_labels),
        node.namespace,
        labels.join(","),
    );
    for s in with_labels {
        messages.error(
            code::CONFLICTING_SIDECAR_WORKLOAD_SELECTORS,
            format!("Sidecar {}", s.key()),
            Some(s.origin_at("metadata.name")),
            text.clone(),
        );
    }
}

/// IST0111: several Sidecars in `namespace` without a selector (or with an empty one).
fn report_multiple_without_selector(in_namespace: &[&Arc<Cfg<Sidecar>>], namespace: &str, messages: &mut Messages) {
    let unselective: Vec<&Arc<Cfg<Sidecar>>> = in_namespace
        .iter()
        .copied()
        .filter(|s| s.spec.workload_selector.as_ref().is_none_or(|sel| sel.labels.is_empty()))
        .collect();
    if unselective.len() < 2 {
        return;
    }
    let text = format!(
        "The Sidecars {} in namespace {namespace:?} have no workload selector, which can lead to undefined behavior.",
        sidecar_names(&unselective),
    );
    for s in unselective {
        messages.error(
            code::MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS,
            format!("Sidecar {}", s.key()),
            Some(s.origin_at("metadata.name")),
            text.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::message::Message;
    use crate::node::Role;
    use crate::registry::{Location, ServicePort};

    fn store(yaml: &str) -> ConfigStore {
        crate::store::from_yaml(yaml, "test.yaml")
    }

    fn sidecar(name: &str, ns: &str, created: &str, spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: '{created}'}}\nspec:\n{spec}---\n"
        )
    }

    fn node(ns: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            namespace: ns.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            role: Role::Sidecar,
            ..Node::default()
        }
    }

    fn select(yaml: &str, node: &Node) -> (SidecarScope, Vec<Message>) {
        let mut messages = Messages::default();
        let scope = SidecarScope::select(&store(yaml), &MeshConfig::default(), node, &mut messages);
        (scope, messages.into_vec())
    }

    fn listener(port: Option<u16>, protocol: Option<Protocol>, hosts: &[&str], ns: &str) -> EgressListener {
        EgressListener {
            port,
            protocol,
            bind: None,
            hosts: hosts.iter().map(|h| ImportHost::parse(h, ns).unwrap()).collect(),
        }
    }

    fn scope(listeners: Vec<EgressListener>) -> SidecarScope {
        SidecarScope { object: None, egress: listeners, outbound_mode: OutboundMode::AllowAny }
    }

    fn service(ns: &str, host: &str, ports: &[u16]) -> Service {
        Service {
            hostname: host.into(),
            namespace: ns.into(),
            origin: "ServiceEntry x/y".into(),
            origin_file: "f".into(),
            origin_line: 1,
            addresses: vec![],
            ports: ports
                .iter()
                .map(|p| ServicePort { name: format!("p{p}").into(), port: *p, protocol: None, target_port: None })
                .collect(),
            discovery: crate::model::Discovery::Static,
            location: Location::MeshExternal,
            visibility: Visibility::Public,
            kubernetes_style: false,
            subject_alt_names: vec![],
            endpoints: Box::default(),
        }
    }

    const ALL: &str = "  egress: [{hosts: ['*/*']}]\n";

    #[test]
    fn parse_egress_hosts() {
        let p = |h: &str| ImportHost::parse(h, "app").unwrap();
        assert_eq!(p("*/*"), ImportHost { namespace: ImportNamespace::Any, host: "*".into() });
        assert_eq!(p("./Foo.com").namespace, ImportNamespace::Named("app".into()));
        assert_eq!(p("./Foo.com").host, "foo.com".into());
        assert_eq!(p("prod/a.com").namespace, ImportNamespace::Named("prod".into()));
        assert_eq!(p("~/*").namespace, ImportNamespace::Excluded(None));
        assert_eq!(p("~*/a.com").namespace, ImportNamespace::Excluded(None));
        assert_eq!(p("~prod/a.com").namespace, ImportNamespace::Excluded(Some("prod".into())));
        assert_eq!(p("~./a.com").namespace, ImportNamespace::Excluded(Some("app".into())));
        assert_eq!(ImportHost::parse("a.com", "app"), None);
        assert_eq!(ImportHost::parse("a/b/c", "app"), None);
    }

    #[test]
    fn no_sidecar_gives_the_default() {
        let (s, msgs) = select("", &node("app", &[]));
        assert_eq!(s, SidecarScope::default_for(&MeshConfig::default()));
        assert!(msgs.is_empty());
        assert!(s.imports("any", "anything.com"));
    }

    #[test]
    fn selector_match_beats_namespace_default_oldest_first() {
        let yaml = sidecar("ns-default", "app", "2020-01-01T00:00:00Z", ALL)
            + &sidecar(
                "newer",
                "app",
                "2022-01-01T00:00:00Z",
                "  workloadSelector: {labels: {app: web}}\n  egress: [{hosts: ['./*']}]\n",
            )
            + &sidecar(
                "older",
                "app",
                "2021-01-01T00:00:00Z",
                "  workloadSelector: {labels: {app: web}}\n  egress: [{hosts: ['./*']}]\n",
            )
            + &sidecar(
                "other",
                "app",
                "2019-01-01T00:00:00Z",
                "  workloadSelector: {labels: {app: db}}\n  egress: [{hosts: ['./*']}]\n",
            );
        let (s, msgs) = select(&yaml, &node("app", &[("app", "web"), ("v", "1")]));
        assert_eq!(s.object.as_deref(), Some("Sidecar app/older"));
        // Both selecting Sidecars are reported.
        let objs: Vec<(&str, &str)> = msgs.iter().map(|m| (m.code, &*m.object)).collect();
        assert_eq!(
            objs,
            vec![
                (code::CONFLICTING_SIDECAR_WORKLOAD_SELECTORS, "Sidecar app/newer"),
                (code::CONFLICTING_SIDECAR_WORKLOAD_SELECTORS, "Sidecar app/older")
            ]
        );
        assert!(msgs[0].text.starts_with("The Sidecars [newer older] in namespace \"app\" select the same workload"));
        // Not selected: the namespace default.
        let (s, msgs) = select(&yaml, &node("app", &[("app", "api")]));
        assert_eq!(s.object.as_deref(), Some("Sidecar app/ns-default"));
        assert!(msgs.is_empty());
    }

    #[test]
    fn root_namespace_sidecar_is_the_mesh_default() {
        let yaml =
            sidecar("mesh", "istio-system", "2020-01-01T00:00:00Z", "  egress: [{hosts: ['./*', 'istio-system/*']}]\n")
                + &sidecar(
                    "selective",
                    "istio-system",
                    "2019-01-01T00:00:00Z",
                    "  workloadSelector: {labels: {app: web}}\n",
                );
        let (s, _) = select(&yaml, &node("app", &[("app", "web")]));
        assert_eq!(s.object.as_deref(), Some("Sidecar istio-system/mesh"));
        // `.` is the workload's namespace, not the root namespace.
        assert_eq!(s.egress[0].hosts[0].namespace, ImportNamespace::Named("app".into()));
        assert!(s.imports_service_host("app", "a.app.svc.cluster.local"));
        assert!(s.imports_service_host("istio-system", "x"));
        assert!(!s.imports_service_host("other", "x"));
        // A namespace Sidecar wins over the root one.
        let yaml = yaml + &sidecar("local", "app", "2021-01-01T00:00:00Z", ALL);
        let (s, _) = select(&yaml, &node("app", &[]));
        assert_eq!(s.object.as_deref(), Some("Sidecar app/local"));
    }

    #[test]
    fn root_namespace_selector_sidecars_apply_only_in_root() {
        let yaml = sidecar("sel", "istio-system", "2020-01-01T00:00:00Z", "  workloadSelector: {labels: {app: web}}\n");
        let (s, _) = select(&yaml, &node("app", &[("app", "web")]));
        assert_eq!(s.object, None);
        let (s, _) = select(&yaml, &node("istio-system", &[("app", "web")]));
        assert_eq!(s.object.as_deref(), Some("Sidecar istio-system/sel"));
    }

    #[test]
    fn multiple_sidecars_without_selector_are_reported() {
        let yaml = sidecar("b", "app", "2020-01-01T00:00:00Z", ALL)
            + &sidecar("a", "app", "2021-01-01T00:00:00Z", ALL)
            + &sidecar(
                "empty-selector",
                "app",
                "2022-01-01T00:00:00Z",
                "  workloadSelector: {}\n  egress: [{hosts: ['./*']}]\n",
            );
        let (s, msgs) = select(&yaml, &node("app", &[("app", "web")]));
        // An empty selector selects everything and ranks with the selector Sidecars.
        assert_eq!(s.object.as_deref(), Some("Sidecar app/empty-selector"));
        assert_eq!(msgs.len(), 3);
        assert!(msgs.iter().all(|m| m.code == code::MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS));
        assert_eq!(
            msgs[0].text,
            "The Sidecars [a b empty-selector] in namespace \"app\" have no workload selector, which can lead to undefined behavior."
        );
        // Root-namespace ambiguity matters only when the root Sidecar is the fallback.
        let yaml = sidecar("r1", "istio-system", "2020-01-01T00:00:00Z", ALL)
            + &sidecar("r2", "istio-system", "2021-01-01T00:00:00Z", ALL);
        let (s, msgs) = select(&yaml, &node("app", &[]));
        assert_eq!(s.object.as_deref(), Some("Sidecar istio-system/r1"));
        assert_eq!(msgs.len(), 2);
        let (_, msgs) = select(&(yaml + &sidecar("local", "app", "2021-01-01T00:00:00Z", ALL)), &node("app", &[]));
        assert!(msgs.is_empty());
    }

    #[test]
    fn gateways_get_the_default_scope() {
        let yaml = sidecar("local", "app", "2021-01-01T00:00:00Z", "  egress: [{hosts: ['./*']}]\n");
        let gw = Node { role: Role::Gateway, ..node("app", &[]) };
        let (s, _) = select(&yaml, &gw);
        assert_eq!(s.object, None);
        let both = Node { role: Role::Both, ..node("app", &[]) };
        assert_eq!(select(&yaml, &both).0.object.as_deref(), Some("Sidecar app/local"));
    }

    #[test]
    fn outbound_mode_from_sidecar_else_mesh() {
        let yaml = sidecar("s", "app", "2021-01-01T00:00:00Z", "  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n");
        let (s, _) = select(&yaml, &node("app", &[]));
        assert_eq!(s.outbound_mode, OutboundMode::RegistryOnly);
        // No egress: import everything.
        assert_eq!(s.egress, SidecarScope::default_for(&MeshConfig::default()).egress);
        let yaml = sidecar("s", "app", "2021-01-01T00:00:00Z", "  outboundTrafficPolicy: {}\n");
        assert_eq!(select(&yaml, &node("app", &[])).0.outbound_mode, OutboundMode::RegistryOnly);
        let yaml = sidecar("s", "app", "2021-01-01T00:00:00Z", ALL);
        let mut messages = Messages::default();
        let mesh = MeshConfig {
            outbound_traffic_policy: crate::mesh::OutboundTrafficPolicy { mode: OutboundMode::RegistryOnly },
            ..MeshConfig::default()
        };
        let s = SidecarScope::select(&store(&yaml), &mesh, &node("app", &[]), &mut messages);
        assert_eq!(s.outbound_mode, OutboundMode::RegistryOnly);
        let yaml = sidecar("s", "app", "2021-01-01T00:00:00Z", "  outboundTrafficPolicy: {mode: ALLOW_ANY}\n");
        let s = SidecarScope::select(&store(&yaml), &mesh, &node("app", &[]), &mut messages);
        assert_eq!(s.outbound_mode, OutboundMode::AllowAny);
    }

    #[test]
    fn egress_listeners_are_converted() {
        let yaml = sidecar(
            "s",
            "app",
            "2021-01-01T00:00:00Z",
            "  egress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    bind: 127.0.0.1\n    hosts: [prod/reviews.prod.svc.cluster.local]\n  - hosts: ['./*', '~istio-system/*']\n",
        );
        let (s, _) = select(&yaml, &node("app", &[]));
        assert_eq!(s.egress.len(), 2);
        assert_eq!(s.egress[0].port, Some(9080));
        assert_eq!(s.egress[0].protocol, Some(Protocol::Http));
        assert_eq!(s.egress[0].bind.as_deref(), Some("127.0.0.1"));
        assert!(s.egress[0].matches_port());
        assert_eq!(s.egress[1].port, None);
        assert_eq!(s.egress[1].hosts[1].namespace, ImportNamespace::Excluded(Some("istio-system".into())));
    }

    #[test]
    fn namespace_scoping_of_imports() {
        let s = scope(vec![listener(None, None, &["prod/*", "./a.com", "*/shared.com"], "app")]);
        assert!(s.imports_service_host("prod", "anything.prod.svc.cluster.local"));
        assert!(s.imports_service_host("app", "a.com"));
        assert!(!s.imports_service_host("app", "b.com"));
        assert!(!s.imports_service_host("other", "a.com"));
        assert!(s.imports_service_host("other", "shared.com"));
    }

    #[test]
    fn service_vs_virtual_service_host_matching() {
        let s = scope(vec![listener(None, None, &["*/a.foo.com", "*/*.bar.com"], "app")]);
        // Services: host must be a subset of an import.
        assert!(s.imports_service_host("ns", "a.foo.com"));
        assert!(!s.imports_service_host("ns", "*.foo.com"));
        assert!(s.imports_service_host("ns", "x.bar.com"));
        assert!(s.imports_service_host("ns", "*.x.bar.com"));
        assert!(!s.imports_service_host("ns", "*.com"));
        // VirtualServices: overlap either way.
        assert!(s.imports("ns", "*.foo.com"));
        assert!(s.imports("ns", "*.com"));
        assert!(s.imports("ns", "x.bar.com"));
        assert!(!s.imports("ns", "b.foo.com"));
        assert!(!s.imports("ns", "bar.com"));
    }

    #[test]
    fn exclusions_win_in_their_namespace() {
        let s = scope(vec![listener(None, None, &["*/*", "~prod/secret.com", "~*/*.internal"], "app")]);
        assert!(!s.imports_service_host("prod", "secret.com"));
        assert!(s.imports_service_host("dev", "secret.com"));
        assert!(!s.imports_service_host("dev", "db.internal"));
        assert!(!s.imports("dev", "db.internal"));
        assert!(s.imports("dev", "ok.com"));
        // A VS wildcard that only overlaps an exclusion is still imported.
        assert!(s.imports("dev", "*"));
        let none = scope(vec![listener(None, None, &["~/*"], "app")]);
        assert!(!none.imports("app", "a.com"));
        assert!(!none.imports_service_host("app", "a.com"));
        // Exclusions cover subsets only: `~ns/a.com` does not exclude `*.com`.
        let s = scope(vec![listener(None, None, &["*/*", "~*/a.com"], "app")]);
        assert!(s.imports_service_host("x", "*.com"));
        assert!(!s.imports_service_host("x", "a.com"));
    }

    #[test]
    fn port_listeners_import_only_services_with_that_port() {
        let s = scope(vec![
            listener(Some(9080), Some(Protocol::Http), &["prod/*"], "app"),
            listener(None, None, &["./*"], "app"),
        ]);
        let reviews = service("prod", "reviews.prod.svc.cluster.local", &[9080, 9090]);
        let ratings = service("prod", "ratings.prod.svc.cluster.local", &[8080]);
        let local = service("app", "local.app.svc.cluster.local", &[9080, 7000]);
        assert!(s.imports_service(&reviews));
        assert!(!s.imports_service(&ratings));
        assert!(s.imports_service(&local));
        assert_eq!(s.imported_ports(&reviews), vec![9080]);
        assert_eq!(s.imported_ports(&ratings), Vec::<u16>::new());
        assert_eq!(s.imported_ports(&local), vec![9080, 7000]);
        // Port 9080 is served by its own listener; other ports by the catch-all.
        assert!(s.imports_service_on_port(&reviews, 9080));
        assert!(!s.imports_service_on_port(&local, 9080));
        assert!(s.imports_service_on_port(&local, 7000));
        assert!(!s.imports_service_on_port(&reviews, 9090));
        assert_eq!(s.listener_for_port(9080).and_then(|l| l.port), Some(9080));
        assert_eq!(s.listener_for_port(1).and_then(|l| l.port), None);
        assert!(s.imports_on_port(9080, "prod", "reviews.prod.svc.cluster.local"));
        assert!(!s.imports_on_port(7000, "prod", "reviews.prod.svc.cluster.local"));
        assert!(s.imports("prod", "ratings.prod.svc.cluster.local"));
    }

    #[test]
    fn http_proxy_listeners_do_not_match_ports() {
        let s = scope(vec![listener(Some(3128), Some(Protocol::HttpProxy), &["*/*"], "app")]);
        assert!(!s.egress[0].matches_port());
        let svc = service("x", "a.com", &[443]);
        assert!(s.imports_service(&svc));
        assert_eq!(s.imported_ports(&svc), vec![443]);
        // Only port 3128 has a listener.
        assert!(s.listener_for_port(443).is_none());
        assert!(!s.imports_on_port(443, "x", "a.com"));
    }

    #[test]
    fn services_pick_one_namespace_per_hostname() {
        let mk = |ns: &str, host: &str, vis: Visibility, origin: &str| {
            Arc::new(Service { visibility: vis, origin: origin.into(), ..service(ns, host, &[80]) })
        };
        let registry = Registry::new(vec![
            mk("other", "dup.com", Visibility::Public, "1"),
            mk("app", "dup.com", Visibility::Public, "2"),
            mk("app", "dup.com", Visibility::Public, "3"),
            mk("x", "x.com", Visibility::Public, "4"),
            mk("y", "x.com", Visibility::Namespaces(vec!["app".into()]), "5"),
            mk("z", "private.com", Visibility::Namespaces(vec![]), "6"),
            mk("z", "hidden.com", Visibility::None, "7"),
            mk("excluded", "e.com", Visibility::Public, "8"),
        ]);
        let s = scope(vec![listener(None, None, &["*/*", "~excluded/*"], "app")]);
        let picked: Vec<&str> = s.services(&registry, "app").iter().map(|s| &*s.origin).collect();
        // Exported-to-namespace first; own namespace wins; otherwise the first seen.
        assert_eq!(picked, vec!["5", "2", "3"]);
        let picked: Vec<&str> = s.services(&registry, "z").iter().map(|s| &*s.origin).collect();
        assert_eq!(picked, vec!["6", "1", "4"]);
    }
}
