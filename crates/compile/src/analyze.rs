//! Cross-object analysis (`weir analyze`, like `istioctl analyze`): schema
//! errors of each object plus the problems found by compiling the config for
//! every kind of node it describes — a sidecar in each namespace that has
//! config, and each Gateway's workloads.

use std::collections::BTreeSet;

use weir_api::Loaded;
use weir_api::validate::Severity;

use crate::mesh::MeshConfig;
use crate::message::{Level, Message, Messages};
use crate::node::{Node, Role};
use crate::registry::Registry;
use crate::store::ConfigStore;

/// Istio's code for schema validation errors.
pub const SCHEMA_VALIDATION_ERROR: &str = "IST0106";
/// Istio's code for schema validation warnings.
pub const SCHEMA_WARNING: &str = "IST0133";

/// Analyzes loaded config; messages sorted by level, code and object.
pub fn analyze(loaded: &Loaded, mesh: &MeshConfig, cluster_domain: &str) -> Vec<Message> {
    let mut messages = Messages::default();
    for obj in &loaded.objects {
        let object = format!("{} {}", obj.kind(), obj.key());
        for f in weir_api::validate(obj).findings {
            let origin = Some(format!("{}:{}", obj.origin.file, obj.origin.line_of(&f.path)).into());
            let text = format!("{}: {}", f.path, f.message);
            match f.severity {
                Severity::Error => messages.error(
                    SCHEMA_VALIDATION_ERROR,
                    object.as_str(),
                    origin,
                    format!("Schema validation error: {text}"),
                ),
                Severity::Warning => {
                    messages.warn(SCHEMA_WARNING, object.as_str(), origin, format!("Schema validation warning: {text}"))
                }
            }
        }
    }
    for p in &loaded.problems {
        let object = format!("{} {}/{}", p.kind, p.namespace, p.name);
        let origin = Some(format!("{}:{}", p.origin.file, p.line).into());
        messages.error(
            SCHEMA_VALIDATION_ERROR,
            object.as_str(),
            origin,
            format!("Schema validation error: {}: {}", p.path, p.message),
        );
    }
    let store = ConfigStore::from_loaded(loaded);
    let base = Node { cluster_domain: cluster_domain.to_string(), ..Node::default() };
    let registry = Registry::from_config(&store, mesh, &base, &mut messages);
    for dr in &store.destination_rules {
        let host = crate::host::resolve_short_name(&dr.spec.host, &dr.namespace, cluster_domain);
        if !registry.services.iter().any(|s| crate::host::matches(&host, &s.hostname)) {
            messages.warn(
                crate::message::code::UNKNOWN_DESTINATION_RULE_HOST,
                format!("DestinationRule {}", dr.key()),
                Some(dr.origin_at("spec.host")),
                format!("The host {host} defined in the DestinationRule does not match any services in the mesh."),
            );
        }
    }
    for node in nodes(&store, &base) {
        // Destinations of every VirtualService this node sees, even when no listener uses it.
        let drs = crate::destination_rule::DrIndex::build(&store, mesh, &node, &mut messages);
        let vss = crate::virtual_service::VsIndex::build(&store, mesh, &node, &mut messages);
        let env = crate::route::RouteEnv { node: &node, mesh, registry: &registry, drs: &drs, port: 0, gateway: None };
        for vs in vss.all.iter().filter(|v| v.visibility.visible_to(&v.cfg.namespace, &node.namespace)) {
            crate::route::check_references(vs, &env, &mut messages);
        }
        let snap = crate::compile(crate::Input { config: &store, registry: &registry, mesh }, &node);
        for m in snap.messages {
            messages.push(m);
        }
    }
    let mut out = messages.into_vec();
    out.sort_by(|a, b| (a.level, a.code, &a.object, &a.text).cmp(&(b.level, b.code, &b.object, &b.text)));
    out
}

/// The nodes worth compiling for: a sidecar in every namespace that holds
/// config, and the workloads of every Gateway (its selector as labels).
fn nodes(store: &ConfigStore, base: &Node) -> Vec<Node> {
    let mut namespaces: BTreeSet<String> = BTreeSet::new();
    namespaces.extend(store.virtual_services.iter().map(|c| c.namespace.to_string()));
    namespaces.extend(store.destination_rules.iter().map(|c| c.namespace.to_string()));
    namespaces.extend(store.service_entries.iter().map(|c| c.namespace.to_string()));
    namespaces.extend(store.sidecars.iter().map(|c| c.namespace.to_string()));
    let mut out: Vec<Node> = namespaces
        .into_iter()
        .map(|ns| Node { namespace: ns, labels: Default::default(), role: Role::Sidecar, ..base.clone() })
        .collect();
    let mut seen = BTreeSet::new();
    for gw in &store.gateways {
        let labels = gw.spec.selector.clone().unwrap_or_default();
        if seen.insert((gw.namespace.to_string(), labels.clone())) {
            out.push(Node { namespace: gw.namespace.to_string(), labels, role: Role::Gateway, ..base.clone() });
        }
    }
    out
}

/// Whether any message is an error (`weir analyze` exits 1 then).
pub fn has_errors(messages: &[Message]) -> bool {
    messages.iter().any(|m| m.level == Level::Error)
}
