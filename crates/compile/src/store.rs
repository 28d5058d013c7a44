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
        sort(&mut self.virtual_services);
        sort(&mut self.destination_rules);
        sort(&mut self.gateways);
        sort(&mut self.service_entries);
        sort(&mut self.sidecars);
        sort(&mut self.workload_entries);
        sort(&mut self.workload_groups);
    }

    /// The objects of `stores` (each sorted, as [`ConfigStore::new`] leaves it) in one sorted
    /// store; among equal keys, earlier stores' objects first.
    ///
    /// A reload assembles its store from the cached stores of every file. Sorting the
    /// concatenation compared most objects again (each comparison reading three strings of
    /// objects spread over the heap: 7–10 ms for 10,000 objects); lists that follow each other
    /// are appended after one comparison, and a few objects that do not are inserted by binary
    /// search. Only when many objects are out of place is the concatenation sorted.
    pub fn merged<'a>(stores: impl Iterator<Item = &'a ConfigStore> + Clone) -> ConfigStore {
        fn merge<'a, T: 'a>(lists: impl Iterator<Item = &'a [Arc<Cfg<T>>]> + Clone) -> Vec<Arc<Cfg<T>>> {
            /// Objects inserted one by one before sorting the rest is cheaper.
            const MAX_INSERTED: usize = 64;
            let mut out: Vec<Arc<Cfg<T>>> = Vec::with_capacity(lists.clone().map(<[_]>::len).sum());
            let mut inserted = 0;
            let mut sorted = true;
            for list in lists {
                let (Some(first), Some(last)) = (list.first(), out.last()) else {
                    out.extend(list.iter().cloned());
                    continue;
                };
                if !sorted || last.order_key() <= first.order_key() {
                    out.extend(list.iter().cloned());
                } else if inserted + list.len() <= MAX_INSERTED {
                    inserted += list.len();
                    for o in list {
                        let at = out.partition_point(|x| x.order_key() <= o.order_key());
                        out.insert(at, o.clone());
                    }
                } else {
                    sorted = false;
                    out.extend(list.iter().cloned());
                }
            }
            if !sorted {
                sort(&mut out);
            }
            out
        }
        ConfigStore {
            virtual_services: merge(stores.clone().map(|s| &s.virtual_services[..])),
            destination_rules: merge(stores.clone().map(|s| &s.destination_rules[..])),
            gateways: merge(stores.clone().map(|s| &s.gateways[..])),
            service_entries: merge(stores.clone().map(|s| &s.service_entries[..])),
            sidecars: merge(stores.clone().map(|s| &s.sidecars[..])),
            workload_entries: merge(stores.clone().map(|s| &s.workload_entries[..])),
            workload_groups: merge(stores.map(|s| &s.workload_groups[..])),
        }
    }

    /// Loads, validates and stores: objects with validation errors are left
    /// out (as the Kubernetes API server would refuse them).
    pub fn from_loaded(loaded: &weir_api::Loaded) -> ConfigStore {
        ConfigStore::new(loaded.objects.iter().filter(|o| !weir_api::validate(o).has_errors()).cloned())
    }
}

/// Sorts `v` in Istio's processing order (stable: equal keys keep their order).
fn sort<T>(v: &mut [Arc<Cfg<T>>]) {
    v.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
}

/// Test helper: a store from YAML that must load cleanly; `file` names it in origins.
#[cfg(test)]
pub(crate) fn from_yaml(yaml: &str, file: &str) -> ConfigStore {
    let loaded = weir_api::load_str(yaml, file, &weir_api::LoadOptions::default());
    assert!(loaded.errors.is_empty() && loaded.problems.is_empty(), "{:?} {:?}", loaded.errors, loaded.problems);
    ConfigStore::new(loaded.objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store of VirtualServices named `(created, name, file index)`, sorted as `new` leaves it.
    fn file(objects: &[(&str, &str)], index: u32) -> ConfigStore {
        let mut s = ConfigStore::default();
        for (created, name) in objects {
            s.virtual_services.push(Arc::new(Cfg {
                name: Str::from(*name),
                namespace: Str::from("ns"),
                labels: BTreeMap::new(),
                created: (!created.is_empty()).then(|| created.to_string()),
                spec: VirtualService::default(),
                origin: Origin { line: index, ..Origin::default() },
            }));
        }
        s.sort();
        s
    }

    fn order(s: &ConfigStore) -> Vec<(String, u32)> {
        s.virtual_services.iter().map(|v| (v.name.to_string(), v.origin.line)).collect()
    }

    /// `merged` equals sorting the concatenation (stable: earlier files first among equals).
    fn check(files: &[ConfigStore]) {
        let mut all = ConfigStore::default();
        for f in files {
            all.virtual_services.extend(f.virtual_services.iter().cloned());
        }
        all.sort();
        assert_eq!(order(&ConfigStore::merged(files.iter())), order(&all));
    }

    #[test]
    fn merged_equals_a_stable_sort_of_the_files() {
        let many: Vec<String> = (0..200).map(|i| format!("svc-{i}")).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|n| ("", n.as_str())).collect();
        // Appended in order; one edited object among many (inserted); equal keys in two files.
        check(&[file(&[("", "a"), ("", "b")], 1), file(&[("", "c")], 2)]);
        check(&[file(&many, 1), file(&[("", "svc-150")], 2), file(&[("", "aaa"), ("", "zzz")], 3)]);
        check(&[file(&[("", "x"), ("", "y")], 1), file(&[("", "x")], 2), file(&[("", "x")], 3)]);
        // Creation time first; many objects out of place (sorted at the end).
        check(&[file(&[("2024-01-02", "a"), ("", "z")], 1), file(&[("2024-01-01", "b")], 2)]);
        let files: Vec<ConfigStore> = many.iter().rev().enumerate().map(|(i, o)| file(&[*o], i as u32)).collect();
        check(&files);
        check(&[]);
    }
}
