//! The config store: valid Istio objects by kind, each with its metadata and
//! origin, in Istio's processing order (creation time, then name, then namespace).

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_api::types::{
    DestinationRule, Gateway, IstioObject, Origin, ServiceEntry, Sidecar, Spec, VirtualService, WorkloadEntry,
    WorkloadGroup,
};

use crate::model::Str;

/// One object of kind `T`.
#[derive(Clone, Debug, PartialEq)]
pub struct Cfg<T> {
    pub name: Str,
    pub namespace: Str,
    /// `metadata.labels` (WorkloadEntries are selected by them).
    pub labels: BTreeMap<String, String>,
    /// `metadata.creationTimestamp`: Istio's processing order (absent first).
    pub created: Option<String>,
    pub spec: T,
    pub origin: Origin,
}

impl<T> Cfg<T> {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    /// `file:line` of the object, or of the field at `path` when it was written.
    pub fn origin_at(&self, path: &str) -> Str {
        format!("{}:{}", self.origin.file, self.origin.line_of(path)).into()
    }
    /// Sort key: creation timestamp (absent first), then name, then namespace.
    fn order_key(&self) -> (&str, &str, &str) {
        (self.created.as_deref().unwrap_or(""), &self.name, &self.namespace)
    }
}

#[derive(Clone, Debug, Default)]
pub struct ConfigStore {
    pub virtual_services: Vec<Arc<Cfg<VirtualService>>>,
    pub destination_rules: Vec<Arc<Cfg<DestinationRule>>>,
    pub gateways: Vec<Arc<Cfg<Gateway>>>,
    pub service_entries: Vec<Arc<Cfg<ServiceEntry>>>,
    pub sidecars: Vec<Arc<Cfg<Sidecar>>>,
    pub workload_entries: Vec<Arc<Cfg<WorkloadEntry>>>,
    pub workload_groups: Vec<Arc<Cfg<WorkloadGroup>>>,
}

impl ConfigStore {
    /// Builds the store from objects that passed validation (callers filter invalid ones).
    pub fn new(objects: impl IntoIterator<Item = IstioObject>) -> ConfigStore {
        let mut s = ConfigStore::default();
        // Objects of one namespace share its name (most of a file is in one or two namespaces).
        let mut namespaces: std::collections::HashSet<Str> = std::collections::HashSet::new();
        for o in objects {
            let name = Str::from(o.meta.name);
            let ns = o.meta.namespace;
            let namespace = match namespaces.get(ns.as_str()) {
                Some(n) => n.clone(),
                None => {
                    let n = Str::from(ns);
                    namespaces.insert(n.clone());
                    n
                }
            };
            macro_rules! push {
                ($list:ident, $spec:expr) => {
                    s.$list.push(Arc::new(Cfg {
                        name,
                        namespace,
                        labels: o.meta.labels,
                        created: o.meta.creation_timestamp,
                        spec: $spec,
                        origin: o.origin,
                    }))
                };
            }
            match o.spec {
                Spec::VirtualService(v) => push!(virtual_services, v),
                Spec::DestinationRule(v) => push!(destination_rules, v),
                Spec::Gateway(v) => push!(gateways, v),
                Spec::ServiceEntry(v) => push!(service_entries, v),
                Spec::Sidecar(v) => push!(sidecars, v),
                Spec::WorkloadEntry(v) => push!(workload_entries, v),
                Spec::WorkloadGroup(v) => push!(workload_groups, v),
            }
        }
        s.sort();
        s
    }

    /// Sorts every list in Istio's processing order (creation time, name, namespace);
    /// for stores assembled from others' lists.
    pub fn sort(&mut self) {
        fn sort<T>(v: &mut [Arc<Cfg<T>>]) {
            v.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        }
        sort(&mut self.virtual_services);
        sort(&mut self.destination_rules);
        sort(&mut self.gateways);
        sort(&mut self.service_entries);
        sort(&mut self.sidecars);
        sort(&mut self.workload_entries);
        sort(&mut self.workload_groups);
    }

    /// Loads, validates and stores: objects with validation errors are left
    /// out (as the Kubernetes API server would refuse them).
    pub fn from_loaded(loaded: &weir_api::Loaded) -> ConfigStore {
        ConfigStore::new(loaded.objects.iter().filter(|o| !weir_api::validate(o).has_errors()).cloned())
    }
}

/// Test helper: a store from YAML that must load cleanly; `file` names it in origins.
#[cfg(test)]
pub(crate) fn from_yaml(yaml: &str, file: &str) -> ConfigStore {
    let loaded = weir_api::load_str(yaml, file, &weir_api::LoadOptions::default());
    assert!(loaded.errors.is_empty() && loaded.problems.is_empty(), "{:?} {:?}", loaded.errors, loaded.problems);
    ConfigStore::new(loaded.objects)
}
