//! The service registry: services and their endpoints, independent of where
//! they came from. ServiceEntries and WorkloadEntries feed it today;
//! Kubernetes Services and EndpointSlices will feed the same types.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_api::protocol::Protocol;

use crate::message::Messages;
use crate::mesh::MeshConfig;
use crate::model::{Discovery, Str};
use crate::node::Node;
use crate::store::ConfigStore;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    MeshExternal,
    MeshInternal,
}

/// Who may see a service (resolved `exportTo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// `*`
    Public,
    /// `~`: nobody (only the service's own proxies).
    None,
    /// Exactly these namespaces (`.` already replaced by the object's namespace).
    Namespaces(Vec<Str>),
}

impl Visibility {
    /// Resolves an `exportTo` list written in `namespace`, falling back to `default` when empty.
    pub fn from_export_to(export_to: &[String], namespace: &str, default: &[String]) -> Visibility {
        let list = if export_to.is_empty() { default } else { export_to };
        if list.iter().any(|e| e == "*") {
            return Visibility::Public;
        }
        if list.iter().all(|e| e == "~") && !list.is_empty() {
            return Visibility::None;
        }
        let mut ns: Vec<Str> =
            list.iter().filter(|e| *e != "~").map(|e| Str::from(if e == "." { namespace } else { e.as_str() })).collect();
        ns.sort();
        ns.dedup();
        Visibility::Namespaces(ns)
    }

    /// Whether an object with this visibility, living in `owner_namespace`, is visible from `namespace`.
    pub fn visible_to(&self, owner_namespace: &str, namespace: &str) -> bool {
        match self {
            Visibility::Public => true,
            Visibility::None => false,
            Visibility::Namespaces(list) => {
                list.iter().any(|n| &**n == namespace) || (list.is_empty() && owner_namespace == namespace)
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServicePort {
    pub name: Str,
    pub port: u16,
    /// `None`: not declared (Istio sniffs; weir treats the port as HTTP when serving it).
    pub protocol: Option<Protocol>,
    /// Endpoint port when the endpoint does not name one (ServiceEntry `targetPort`).
    pub target_port: Option<u16>,
}

/// One workload instance behind a service (a ServiceEntry endpoint, a
/// selected WorkloadEntry, later a Kubernetes endpoint).
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// IP, host name (DNS resolution) or `unix://` path.
    pub address: Str,
    /// Service port name -> endpoint port.
    pub ports: BTreeMap<Str, u16>,
    pub labels: Arc<Vec<(Str, Str)>>,
    pub locality: Option<Str>,
    pub network: Option<Str>,
    /// LB weight (0 means "unset": treated as 1).
    pub weight: u32,
    pub service_account: Option<Str>,
}

impl Instance {
    /// Whether all of `selector`'s key/values are on this instance.
    pub fn has_labels(&self, selector: &[(Str, Str)]) -> bool {
        selector.iter().all(|(k, v)| self.labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// Lower-case FQDN (or wildcard) host.
    pub hostname: Str,
    /// Namespace of the object that declared it.
    pub namespace: Str,
    /// `ServiceEntry ns/name` (or `Service ns/name` later).
    pub origin: Str,
    /// `file:line` of the declaring object.
    pub origin_location: Str,
    /// VIPs / CIDRs.
    pub addresses: Vec<Str>,
    pub ports: Vec<ServicePort>,
    pub discovery: Discovery,
    pub location: Location,
    pub visibility: Visibility,
    /// Kubernetes-style `name.ns.svc.<domain>` host: gets short alternate domains.
    pub kubernetes_style: bool,
    pub subject_alt_names: Vec<Str>,
    pub instances: Arc<[Instance]>,
}

impl Service {
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }

    /// The endpoint port of `instance` for `port`: the instance's own port
    /// for that port name, else `targetPort`, else the service port.
    pub fn endpoint_port(&self, instance: &Instance, port: &ServicePort) -> u16 {
        instance.ports.get(&port.name).copied().or(port.target_port).unwrap_or(port.port)
    }
}

/// All services, in registry order (the declaring objects' order).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub services: Vec<Arc<Service>>,
}

impl Registry {
    /// Builds the registry from ServiceEntries (inline endpoints, or
    /// WorkloadEntries/WorkloadGroups chosen by `workloadSelector` in the same
    /// namespace). Hosts are resolved to FQDN with `node.cluster_domain`.
    pub fn from_config(config: &ConfigStore, mesh: &MeshConfig, node: &Node, messages: &mut Messages) -> Registry {
        let _ = (config, mesh, node, messages);
        todo!("Registry::from_config")
    }

    /// Services visible from `namespace` (exportTo), in registry order.
    pub fn visible_from<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Arc<Service>> + 'a {
        self.services.iter().filter(move |s| s.visibility.visible_to(&s.namespace, namespace))
    }

    /// The first service with exactly `hostname` visible from `namespace`.
    pub fn lookup(&self, hostname: &str, namespace: &str) -> Option<&Arc<Service>> {
        self.services.iter().find(|s| &*s.hostname == hostname && s.visibility.visible_to(&s.namespace, namespace))
    }
}
