//! DestinationRule lookup and merging (`push_context.go destinationRule`,
//! `destination_rule.go mergeDestinationRule`) and the effective policy per
//! (port, subset) (`util.go GetPortLevelTrafficPolicy`, `MergeSubsetTrafficPolicy`).
//!
//! Istio's index, reproduced here (`setDestinationRules`): DRs are sorted
//! selector-first, then by creation time, name and namespace, and merged per
//! host into three kinds of pool:
//!
//! * the namespace-local pool of their namespace (DRs whose `exportTo` is
//!   empty or contains `*`, `.` or the namespace itself): what proxies of
//!   that namespace look at first;
//! * the exported pool of their namespace (DRs not private to it): what
//!   other namespaces see, filtered by `exportTo` at lookup;
//! * the root namespace's private pool (private DRs of the root namespace):
//!   what proxies *in* the root namespace look at first.
//!
//! A DR without `exportTo` is private when the mesh
//! `defaultDestinationRuleExportTo` contains `.`, else public (Istio honours
//! only `.` and `*` there). The index is built for one node: only the pools
//! that node can consult are kept (its own namespace's local pool, or the
//! root private pool for a node in the root namespace, and all exported pools).
//!
//! Merging (`mergeDestinationRule`, with `ENABLE_ENHANCED_DESTINATIONRULE_MERGE`):
//! a DR joins an existing entry for the same host when their raw `exportTo`
//! sets are equal (or the new one's is a strict superset) and their
//! workload selectors agree (both absent, or equal; a selector-less DR is
//! merged into the selector DRs before it, which inherit its subsets).
//! Joining appends the subsets whose names are new and adopts the top-level
//! `trafficPolicy` only if the entry has none. Whether the DR is also kept
//! as an entry of its own is, as in Istio's loop, decided by the last entry
//! examined (so a DR after an entry with a different `exportTo` is both
//! merged and kept on its own). A DR with a `workloadSelector` is private to
//! its namespace and only applies to matching proxies there.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_api::types::{DestinationRule, Subset, TrafficPolicy};

use crate::fast_hash::FastMap;
use crate::host;
use crate::mesh::MeshConfig;
use crate::message::Messages;
use crate::model::Str;
use crate::node::Node;
use crate::policy::{ClusterPolicy, PolicyParts};
use crate::store::{Cfg, ConfigStore};

/// The DestinationRules for one host, merged as Istio merges several DRs
/// from one namespace (subsets concatenated, first top-level policy wins).
#[derive(Clone, Debug, PartialEq)]
pub struct MergedDr {
    /// The DR host as resolved (FQDN or wildcard).
    pub host: Str,
    pub namespace: Str,
    pub traffic_policy: Option<TrafficPolicy>,
    /// Derefs to `[Subset]` (`dr.subsets.iter()`, `dr.subsets[0]`).
    pub subsets: Subsets,
    /// `DestinationRule ns/name` of each contributor, in merge order.
    pub origins: Vec<Str>,
}

/// The subsets of a merged rule. A rule usually comes from one DR, whose
/// subset list is then shared instead of copied; merging copies it.
#[derive(Clone, Default)]
pub struct Subsets(SubsetsRepr);

#[derive(Clone)]
enum SubsetsRepr {
    /// `spec.subsets` of this DR.
    Shared(Arc<Cfg<DestinationRule>>),
    Owned(Vec<Subset>),
}

impl Default for SubsetsRepr {
    fn default() -> Self {
        SubsetsRepr::Owned(Vec::new())
    }
}

impl Subsets {
    fn shared(cfg: &Arc<Cfg<DestinationRule>>) -> Subsets {
        Subsets(SubsetsRepr::Shared(cfg.clone()))
    }

    fn push(&mut self, subset: Subset) {
        if let SubsetsRepr::Shared(cfg) = &self.0 {
            let mut v = Vec::with_capacity(cfg.spec.subsets.len() + 1);
            v.extend_from_slice(&cfg.spec.subsets);
            self.0 = SubsetsRepr::Owned(v);
        }
        if let SubsetsRepr::Owned(v) = &mut self.0 {
            v.push(subset);
        }
    }
}

impl From<Vec<Subset>> for Subsets {
    fn from(v: Vec<Subset>) -> Self {
        Subsets(SubsetsRepr::Owned(v))
    }
}

impl std::ops::Deref for Subsets {
    type Target = [Subset];
    fn deref(&self) -> &[Subset] {
        match &self.0 {
            SubsetsRepr::Shared(cfg) => &cfg.spec.subsets,
            SubsetsRepr::Owned(v) => v,
        }
    }
}

impl<'a> IntoIterator for &'a Subsets {
    type Item = &'a Subset;
    type IntoIter = std::slice::Iter<'a, Subset>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for Subsets {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Subsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl MergedDr {
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }

    /// The DestinationRule components that reach traffic to `port` (and
    /// `subset`): port-level settings replace the top level, the subset's
    /// policy overrides component by component. An unknown subset counts as
    /// one without policy.
    pub fn parts(&self, port: u16, subset: Option<&str>) -> PolicyParts<'_> {
        let subset_policy = subset.and_then(|s| self.subset(s)).and_then(|s| s.traffic_policy.as_ref());
        PolicyParts::effective(self.traffic_policy.as_ref(), subset_policy, port)
    }

    /// The effective policy for traffic to `port` (and `subset`), Istio's
    /// defaults filled in for everything not set.
    pub fn policy(&self, port: u16, subset: Option<&str>, mesh: &MeshConfig) -> ClusterPolicy {
        ClusterPolicy::from_parts(&self.parts(port, subset), mesh)
    }
}

/// Per-rule facts the lookup needs, parallel to `DrIndex::rules`.
#[derive(Clone, Debug)]
struct RuleMeta {
    /// The raw `exportTo` set of the first contributor (sorted, deduplicated;
    /// `["."]` for DRs with a workload selector).
    export_to: Vec<Str>,
    /// The workload selector of the first contributor.
    selector: Option<BTreeMap<String, String>>,
    /// Selector-less, or a selector in the node's namespace matching the node's labels.
    applies: bool,
    /// `ns/name` of each contributor, in merge order.
    keys: Vec<Str>,
    /// Contributors, in merge order.
    sources: Vec<Arc<Cfg<DestinationRule>>>,
    /// For each merged subset: (contributor index, index in its `subsets`).
    subset_sources: Vec<(usize, usize)>,
}

/// One pool of merged rules, by host (Istio's `consolidatedDestRules`).
#[derive(Clone, Debug, Default)]
struct Pool {
    specific: FastMap<Str, Vec<usize>>,
    wildcard_hosts: Vec<Str>,
    wildcard: Vec<Vec<usize>>,
}

impl Pool {
    fn entries(&self, host: &str) -> Option<&Vec<usize>> {
        if host::is_wildcard(host) {
            self.wildcard_hosts.iter().position(|h| &**h == host).map(|i| &self.wildcard[i])
        } else {
            self.specific.get(host)
        }
    }

    fn push(&mut self, host: &Str, rule: usize) {
        if host::is_wildcard(host) {
            match self.wildcard_hosts.iter().position(|h| h == host) {
                Some(i) => self.wildcard[i].push(rule),
                None => {
                    self.wildcard_hosts.push(host.clone());
                    self.wildcard.push(vec![rule]);
                }
            }
        } else {
            self.specific.entry(host.clone()).or_default().push(rule);
        }
    }

    /// Istio `MostSpecificHostMatch`: the exact host, else the most specific matching wildcard.
    fn find(&self, host: &str) -> Option<&[usize]> {
        if !host::is_wildcard(host)
            && let Some(list) = self.specific.get(host)
        {
            return Some(list);
        }
        host::most_specific_match(host, &self.wildcard_hosts).map(|i| self.wildcard[i].as_slice())
    }
}

/// The pool of `ns`, created on first use (without allocating the key again).
fn pool_in<'a>(pools: &'a mut FastMap<Str, Pool>, ns: &str) -> &'a mut Pool {
    let key = pools.get_key_value(ns).map_or_else(|| Str::from(ns), |(k, _)| k.clone());
    pools.entry(key).or_default()
}

/// All DestinationRules, indexed for lookup.
#[derive(Clone, Debug, Default)]
pub struct DrIndex {
    /// Every merged rule this node can look up: those of its own namespace
    /// and those exported by any namespace (a DR can appear twice, merged
    /// differently). Empty when no lookup can find anything.
    pub rules: Vec<MergedDr>,
    meta: Vec<RuleMeta>,
    local: FastMap<Str, Pool>,
    exported: FastMap<Str, Pool>,
    root_local: Pool,
    root_namespace: Str,
}

/// Which pool a DR is being merged into.
#[derive(Clone, Copy)]
enum PoolId<'a> {
    Local(&'a str),
    Exported(&'a str),
    RootLocal,
}

impl DrIndex {
    pub fn build(config: &ConfigStore, mesh: &MeshConfig, node: &Node, messages: &mut Messages) -> DrIndex {
        let _ = messages;
        let mut index = DrIndex { root_namespace: mesh.root_namespace.as_str().into(), ..DrIndex::default() };
        let default_private = mesh.default_destination_rule_export_to.iter().any(|e| e == ".");
        let node_in_root = node.namespace == mesh.root_namespace;
        // The store is in creation order; selector DRs go first (stable).
        let mut configs: Vec<&Arc<Cfg<DestinationRule>>> = config.destination_rules.iter().collect();
        configs.sort_by_key(|c| c.spec.workload_selector.is_none());
        for cfg in configs {
            let ns: &str = &cfg.namespace;
            let host = host::resolve_short_name(&cfg.spec.host, ns, &node.cluster_domain);
            let export_to: Vec<Str> = if cfg.spec.workload_selector.is_some() {
                vec![Str::from(".")]
            } else {
                let mut v: Vec<Str> = cfg.spec.export_to.iter().map(|e| Str::from(e.as_str())).collect();
                v.sort();
                v.dedup();
                v
            };
            let has = |e: &str| export_to.iter().any(|x| &**x == e);
            // Only the pools this node can look at: its own namespace's local
            // pool (the root namespace's private pool for a node in the root
            // namespace) and every namespace's exported pool.
            if ns == node.namespace && !node_in_root && (export_to.is_empty() || has("*") || has(".") || has(ns)) {
                index.merge(PoolId::Local(ns), cfg, &host, &export_to, node);
            }
            let private_only =
                (export_to.is_empty() && default_private) || (export_to.len() == 1 && (has(".") || has(ns)));
            if !private_only {
                index.merge(PoolId::Exported(ns), cfg, &host, &export_to, node);
            } else if ns == mesh.root_namespace && node_in_root {
                index.merge(PoolId::RootLocal, cfg, &host, &export_to, node);
            }
        }
        index
    }

    fn pool_mut(&mut self, id: PoolId<'_>) -> &mut Pool {
        match id {
            PoolId::Local(ns) => pool_in(&mut self.local, ns),
            PoolId::Exported(ns) => pool_in(&mut self.exported, ns),
            PoolId::RootLocal => &mut self.root_local,
        }
    }

    fn pool(&self, id: PoolId<'_>) -> Option<&Pool> {
        match id {
            PoolId::Local(ns) => self.local.get(ns),
            PoolId::Exported(ns) => self.exported.get(ns),
            PoolId::RootLocal => Some(&self.root_local),
        }
    }

    /// Istio `mergeDestinationRule` for one pool.
    fn merge(&mut self, id: PoolId<'_>, cfg: &Arc<Cfg<DestinationRule>>, host: &Str, export_to: &[Str], node: &Node) {
        let selector = cfg.spec.workload_selector.as_ref().map(|s| &s.match_labels);
        let existing = self.pool(id).and_then(|p| p.entries(host)).cloned().unwrap_or_default();
        let mut append = true;
        for i in existing {
            let m = &self.meta[i];
            if export_to == m.export_to.as_slice() {
                append = false;
            } else if !m.export_to.is_empty() && m.export_to.iter().all(|e| export_to.contains(e)) {
                // A wider exportTo: merged into the narrower entry too (kept on its own unless reset below).
                append = true;
            } else {
                append = true;
                continue;
            }
            let both_without = selector.is_none() && m.selector.is_none();
            let both_with = selector.is_some() && m.selector.is_some();
            if both_with && selector != m.selector.as_ref() {
                append = true;
                continue;
            }
            if both_without || both_with {
                append = false;
            }
            self.join(i, cfg);
        }
        if append {
            let rule = self.rules.len();
            self.rules.push(MergedDr {
                host: host.clone(),
                namespace: cfg.namespace.clone(),
                traffic_policy: cfg.spec.traffic_policy.clone(),
                subsets: Subsets::default(),
                origins: Vec::new(),
            });
            let applies = match selector {
                None => true,
                Some(sel) => *cfg.namespace == *node.namespace && node.selected_by(sel),
            };
            self.meta.push(RuleMeta {
                export_to: export_to.to_vec(),
                selector: selector.cloned(),
                applies,
                keys: Vec::new(),
                sources: Vec::new(),
                subset_sources: Vec::new(),
            });
            self.add_contributor(rule, cfg);
            self.pool_mut(id).push(host, rule);
        }
    }

    /// Merges `cfg` into rule `i`: new subsets appended, top-level policy adopted if none.
    fn join(&mut self, i: usize, cfg: &Arc<Cfg<DestinationRule>>) {
        if self.rules[i].traffic_policy.is_none() && cfg.spec.traffic_policy.is_some() {
            self.rules[i].traffic_policy = cfg.spec.traffic_policy.clone();
        }
        self.add_contributor(i, cfg);
    }

    fn add_contributor(&mut self, i: usize, cfg: &Arc<Cfg<DestinationRule>>) {
        let (rule, meta) = (&mut self.rules[i], &mut self.meta[i]);
        let source = meta.sources.len();
        if source == 0 {
            // The first DR's subsets are taken as they are (shared, not copied).
            rule.subsets = Subsets::shared(cfg);
            meta.subset_sources = (0..rule.subsets.len()).map(|j| (0, j)).collect();
        } else {
            // Later DRs add the subsets whose names the merged rule does not have yet.
            let existing = rule.subsets.len();
            for (j, s) in cfg.spec.subsets.iter().enumerate() {
                if rule.subsets[..existing].iter().all(|e| e.name != s.name) {
                    rule.subsets.push(s.clone());
                    meta.subset_sources.push((source, j));
                }
            }
        }
        let mut key = String::with_capacity(cfg.namespace.len() + cfg.name.len() + 1);
        key.push_str(&cfg.namespace);
        key.push('/');
        key.push_str(&cfg.name);
        rule.origins.push(Str::from(format!("DestinationRule {key}")));
        meta.keys.push(key.into());
        meta.sources.push(cfg.clone());
    }

    /// The rule that applies to `host` for a client in `client_namespace`
    /// (the namespace of the node the index was built for):
    /// DRs in the client's namespace, then the host's service namespace
    /// (exported to the client), then the root namespace; within one
    /// namespace an exact host beats the longest matching wildcard.
    ///
    /// As in Istio: a proxy in the root namespace looks at the root
    /// namespace's private DRs first; the first namespace with a host match
    /// decides even when none of its rules applies to this node (workload
    /// selectors); DRs with a workload selector only apply to the node the
    /// index was built for.
    pub fn lookup(&self, client_namespace: &str, service_namespace: &str, host: &str) -> Option<&MergedDr> {
        self.lookup_index(client_namespace, service_namespace, host).map(|i| &self.rules[i])
    }

    /// [`DrIndex::lookup`] as an index into `rules`.
    pub fn lookup_index(&self, client_namespace: &str, service_namespace: &str, host: &str) -> Option<usize> {
        let local = if client_namespace != &*self.root_namespace {
            self.local.get(client_namespace)
        } else {
            Some(&self.root_local)
        };
        if let Some(list) = local.and_then(|p| p.find(host)) {
            return self.select(list.iter().copied());
        }
        if !service_namespace.is_empty()
            && let Some(i) = self.exported_from(service_namespace, host, client_namespace)
        {
            return Some(i);
        }
        self.exported_from(&self.root_namespace, host, client_namespace)
    }

    /// Istio `getExportedDestinationRuleFromNamespace` then `SidecarScope.DestinationRule`.
    fn exported_from(&self, owner: &str, host: &str, client: &str) -> Option<usize> {
        let list = self.exported.get(owner)?.find(host)?;
        self.select(list.iter().copied().filter(|&i| {
            let e = &self.meta[i].export_to;
            e.is_empty() || e.iter().any(|x| &**x == "*" || &**x == client)
        }))
    }

    /// `SidecarScope.DestinationRule`: the first selector rule that applies to
    /// the node, else the last selector-less one.
    fn select(&self, list: impl Iterator<Item = usize>) -> Option<usize> {
        let mut catch_all = None;
        for i in list {
            let m = &self.meta[i];
            if m.selector.is_none() {
                catch_all = Some(i);
            } else if m.applies {
                return Some(i);
            }
        }
        catch_all
    }

    /// `ns/name` of the contributors of rule `i`, in merge order.
    pub fn keys(&self, i: usize) -> &[Str] {
        self.meta.get(i).map_or(&[], |m| m.keys.as_slice())
    }

    /// The DR that defined subset `subset` (an index into `rules[i].subsets`):
    /// `DestinationRule ns/name` and `file:line` of the subset.
    pub fn subset_origin(&self, i: usize, subset: usize) -> Option<(Str, Str)> {
        let m = self.meta.get(i)?;
        let &(source, j) = m.subset_sources.get(subset)?;
        let rule = self.rules.get(i)?;
        Some((rule.origins.get(source)?.clone(), m.sources.get(source)?.origin_at(&format!("spec.subsets[{j}]"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::LbAlgorithm;

    fn store(yaml: &str) -> ConfigStore {
        crate::store::from_yaml(yaml, "t.yaml")
    }

    /// A DR document; `extra` is appended to the spec (YAML flow entries).
    fn dr(name: &str, ns: &str, host: &str, extra: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{host: {host:?}{extra}}}\n---\n"
        )
    }

    fn subsets(names: &[&str]) -> String {
        let s: Vec<String> = names.iter().map(|n| format!("{{name: {n}}}")).collect();
        format!(", subsets: [{}]", s.join(", "))
    }

    fn node(ns: &str) -> Node {
        Node { namespace: ns.into(), labels: BTreeMap::new(), ..Node::default() }
    }

    fn index(yaml: &str, node: &Node) -> DrIndex {
        DrIndex::build(&store(yaml), &MeshConfig::default(), node, &mut Messages::default())
    }

    /// Subsets of the rule a proxy in `client` gets for `host` of a service in `svc_ns`.
    fn look(yaml: &str, client: &str, svc_ns: &str, host: &str) -> Vec<String> {
        subset_names(index(yaml, &node(client)).lookup(client, svc_ns, host))
    }

    fn strs(v: &[Str]) -> Vec<&str> {
        v.iter().map(|s| &**s).collect()
    }

    fn subset_names(d: Option<&MergedDr>) -> Vec<String> {
        d.map(|d| d.subsets.iter().map(|s| s.name.clone()).collect()).unwrap_or_default()
    }

    /// Istio `TestSetDestinationRuleWithExportTo`, case by case.
    #[test]
    fn lookup_precedence_across_namespaces() {
        let h = "httpbin.org";
        let yaml = [
            dr("rule1", "test1", h, &format!(", exportTo: ['.', ns1]{}", subsets(&["subset1", "subset2"]))),
            dr(
                "rule2",
                "test2",
                h,
                &format!(", exportTo: [test2, ns1, test1, newNS]{}", subsets(&["subset3", "subset4"])),
            ),
            dr("rule3", "test3", h, &format!(", exportTo: [test1, test2, '*']{}", subsets(&["subset5", "subset6"]))),
            dr("rule4-local", "test4", h, &format!(", exportTo: [test4]{}", subsets(&["subset15", "subset16"]))),
            dr("rule4", "istio-system", h, &subsets(&["subset7", "subset8"])),
            dr("rule1", "istio-system", h, &format!(", exportTo: ['.']{}", subsets(&["subset9", "subset10"]))),
            dr("rule2", "istio-system", "*.org", &format!(", exportTo: ['.']{}", subsets(&["subset11", "subset12"]))),
            dr(
                "rule3",
                "istio-system",
                "*.app.org",
                &format!(", exportTo: ['.']{}", subsets(&["subset13", "subset14"])),
            ),
            dr(
                "rule5",
                "test5",
                "api.test.com",
                &format!(", exportTo: [istio-system]{}", subsets(&["subset5-0", "subset5-1"])),
            ),
            dr(
                "rule6",
                "test6",
                "api.test.com",
                &format!(", exportTo: [istio-system]{}", subsets(&["subset6-0", "subset6-1"])),
            ),
        ]
        .concat();
        let cases: &[(&str, &str, &str, &[&str])] = &[
            ("test1", "test1", h, &["subset1", "subset2"]),
            ("test1", "test2", h, &["subset1", "subset2"]),
            ("test2", "test1", h, &["subset3", "subset4"]),
            ("newNS", "test2", h, &["subset3", "subset4"]),
            ("test3", "test1", h, &["subset5", "subset6"]),
            ("test5", "test4", h, &["subset7", "subset8"]),
            ("ns1", "test1", h, &["subset1", "subset2"]),
            ("ns1", "random", h, &["subset7", "subset8"]),
            ("random", "random", h, &["subset7", "subset8"]),
            ("test3", "random", h, &["subset5", "subset6"]),
            ("istio-system", "random", h, &["subset9", "subset10"]),
            ("istio-system", "istio-system", h, &["subset9", "subset10"]),
            ("istio-system", "istio-system", "foo.app.org", &["subset13", "subset14"]),
            ("istio-system", "test5", "api.test.com", &["subset5-0", "subset5-1"]),
            ("istio-system", "test6", "api.test.com", &["subset6-0", "subset6-1"]),
            ("istio-system", "test7", "api.test.com", &[]),
        ];
        for (client, svc_ns, host, want) in cases {
            let idx = index(&yaml, &node(client));
            let got = subset_names(idx.lookup(client, svc_ns, host));
            assert_eq!(got, *want, "client {client}, service ns {svc_ns}, host {host}");
        }
    }

    #[test]
    fn client_namespace_beats_service_namespace_beats_root() {
        let h = "reviews.prod.svc.cluster.local";
        let yaml = [
            dr("root", "istio-system", h, &subsets(&["root"])),
            dr("svc", "prod", h, &subsets(&["svc"])),
            dr("client", "web", h, &subsets(&["client"])),
            dr("other", "ns3", h, &subsets(&["other"])),
        ]
        .concat();
        let idx = index(&yaml, &node("web"));
        assert_eq!(subset_names(idx.lookup("web", "prod", h)), ["client"]);
        assert_eq!(look(&yaml, "api", "prod", h), ["svc"]);
        // A DR in an unrelated namespace is never used, even if exported.
        assert_eq!(look(&yaml, "api", "dev", h), ["root"]);
        assert!(look(&yaml, "api", "dev", "details.prod.svc.cluster.local").is_empty());
    }

    #[test]
    fn exact_host_beats_longest_wildcard_within_a_namespace() {
        let yaml = [
            dr("star", "default", "*", &subsets(&["star"])),
            dr("com", "default", "*.com", &subsets(&["com"])),
            dr("foo", "default", "*.foo.com", &subsets(&["foo"])),
            dr("exact", "default", "a.foo.com", &subsets(&["exact"])),
        ]
        .concat();
        let idx = index(&yaml, &node("default"));
        assert_eq!(subset_names(idx.lookup("default", "default", "a.foo.com")), ["exact"]);
        assert_eq!(subset_names(idx.lookup("default", "default", "b.foo.com")), ["foo"]);
        assert_eq!(subset_names(idx.lookup("default", "default", "b.com")), ["com"]);
        assert_eq!(subset_names(idx.lookup("default", "default", "b.org")), ["star"]);
        // A wildcard service host: the equal wildcard, else a wider one.
        assert_eq!(subset_names(idx.lookup("default", "default", "*.foo.com")), ["foo"]);
        assert_eq!(subset_names(idx.lookup("default", "default", "*.bar.com")), ["com"]);
    }

    #[test]
    fn short_hosts_resolve_in_the_dr_namespace() {
        let yaml = dr("r", "prod", "reviews", &subsets(&["v1"]));
        let idx = index(&yaml, &node("web"));
        assert_eq!(idx.rules[0].host.as_ref(), "reviews.prod.svc.cluster.local");
        assert_eq!(subset_names(idx.lookup("web", "prod", "reviews.prod.svc.cluster.local")), ["v1"]);
        let custom = Node { cluster_domain: "corp.local".into(), ..node("web") };
        let idx = index(&yaml, &custom);
        assert_eq!(idx.rules[0].host.as_ref(), "reviews.prod.svc.corp.local");
    }

    /// Istio `TestSetDestinationRuleMerging`.
    #[test]
    fn same_namespace_rules_merge_subsets_and_keep_first_policy() {
        let h = "httpbin.org";
        let yaml = [
            dr("rule1", "test", h, &subsets(&["subset1", "subset2"])),
            dr(
                "rule2",
                "test",
                h,
                &format!(", trafficPolicy: {{loadBalancer: {{simple: RANDOM}}}}{}", subsets(&["subset3", "subset1"])),
            ),
            dr("rule4", "test", h, ", trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}, subsets: [{name: subset4, labels: {v: '4'}}]"),
            dr(
                "rule9",
                "test",
                h,
                &format!(", exportTo: [istio-system], trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}{}", subsets(&["subset5", "subset6"])),
            ),
        ]
        .concat();
        let idx = index(&yaml, &node("test"));
        let local = idx.lookup("test", "test", h).expect("local rule");
        assert_eq!(
            subset_names(Some(local)),
            ["subset1", "subset2", "subset3", "subset4"],
            "duplicate subset1: first wins"
        );
        assert_eq!(
            strs(&local.origins),
            ["DestinationRule test/rule1", "DestinationRule test/rule2", "DestinationRule test/rule4"]
        );
        // rule1 had no policy: rule2's is adopted; rule4's is ignored.
        assert_eq!(local.policy(80, None, &MeshConfig::default()).load_balancer.algorithm, LbAlgorithm::Random);
        let i = idx.lookup_index("test", "test", h).expect("index");
        assert_eq!(strs(idx.keys(i)), ["test/rule1", "test/rule2", "test/rule4"]);
        let (object, origin) = idx.subset_origin(i, 3).expect("origin");
        assert_eq!((object.as_ref(), origin.as_ref()), ("DestinationRule test/rule4", "t.yaml:14"));
        // The exportTo=[istio-system] rule stays separate and is what istio-system sees.
        assert_eq!(look(&yaml, "istio-system", "test", h), ["subset5", "subset6"]);
        assert_eq!(look(&yaml, "other", "test", h), ["subset1", "subset2", "subset3", "subset4"]);
    }

    #[test]
    fn rule_after_a_differently_exported_entry_is_also_kept_on_its_own() {
        // Istio's merge loop keeps the decision of the last entry it looked
        // at: rule3 merges into rule1's entry, but the last entry (rule2,
        // exportTo [istio-system]) says "append", so rule3 also stands alone
        // in the exported pool, where it is the last selector-less match.
        let h = "httpbin.org";
        let yaml = [
            dr("rule1", "test", h, &subsets(&["subset1"])),
            dr("rule2", "test", h, &format!(", exportTo: [istio-system]{}", subsets(&["subset2"]))),
            dr("rule3", "test", h, &subsets(&["subset3"])),
        ]
        .concat();
        let look = |client: &str| subset_names(index(&yaml, &node(client)).lookup(client, "test", h));
        assert_eq!(look("test"), ["subset1", "subset3"]);
        assert_eq!(look("other"), ["subset3"]);
        assert_eq!(look("istio-system"), ["subset3"]);
    }

    #[test]
    fn rules_with_different_export_to_are_kept_apart() {
        let h = "httpbin.org";
        // The later, private rule is a separate entry: for the namespace's own
        // proxies the last selector-less entry wins; others only see the public one.
        let yaml = [
            dr("a-public", "test", h, &format!(", exportTo: ['*']{}", subsets(&["a"]))),
            dr("b-private", "test", h, &format!(", exportTo: ['.']{}", subsets(&["b"]))),
        ]
        .concat();
        let idx = index(&yaml, &node("test"));
        assert_eq!(subset_names(idx.lookup("test", "test", h)), ["b"]);
        assert_eq!(look(&yaml, "other", "test", h), ["a"]);
        // A wider exportTo is merged into the narrower entry (which gains its subsets).
        let yaml = [
            dr("narrow", "test", h, &format!(", exportTo: [x]{}", subsets(&["a"]))),
            dr("wide", "test", h, &format!(", exportTo: [x, y]{}", subsets(&["b"]))),
        ]
        .concat();
        let idx = index(&yaml, &node("x"));
        assert_eq!(subset_names(idx.lookup("x", "test", h)), ["a", "b"]);
    }

    /// Istio `TestSetDestinationRuleWithWorkloadSelector`.
    #[test]
    fn workload_selector_rules_apply_only_to_matching_nodes_in_their_namespace() {
        let h = "httpbin.org";
        let yaml = [
            dr("nsRule4", "test", h, &format!(", exportTo: ['.', test2]{}", subsets(&["all"]))),
            dr(
                "nsRule1",
                "test",
                h,
                ", exportTo: [test2, '.'], workloadSelector: {matchLabels: {app: app1}}, subsets: [{name: app1}], trafficPolicy: {loadBalancer: {simple: RANDOM}}",
            ),
            dr("nsRule2", "test", h, ", workloadSelector: {matchLabels: {app: app2}}, subsets: [{name: app2}]"),
            dr("nsRule3", "test", h, ", workloadSelector: {matchLabels: {app: app2}}, subsets: [{name: app2b}]"),
        ]
        .concat();
        let labelled =
            |app: &str| Node { labels: BTreeMap::from([("app".to_string(), app.to_string())]), ..node("test") };
        // app1: its own rule, which inherited the namespace rule's subsets (exportTo [., test2] ⊇ [.]).
        let idx = index(&yaml, &labelled("app1"));
        let d = idx.lookup("test", "test", h).expect("app1 rule");
        assert_eq!(subset_names(Some(d)), ["app1", "all"]);
        assert_eq!(strs(&d.origins), ["DestinationRule test/nsRule1", "DestinationRule test/nsRule4"]);
        assert_eq!(d.policy(80, None, &MeshConfig::default()).load_balancer.algorithm, LbAlgorithm::Random);
        // app2: the two app2 rules merged (same selector), plus the namespace rule.
        let idx = index(&yaml, &labelled("app2"));
        let d = idx.lookup("test", "test", h).expect("app2 rule");
        assert_eq!(subset_names(Some(d)), ["app2", "app2b", "all"]);
        // Other workloads get the selector-less rule.
        let idx = index(&yaml, &labelled("app3"));
        assert_eq!(subset_names(idx.lookup("test", "test", h)), ["all"]);
        // Never exported: test2 sees only the namespace rule, even for a matching node.
        let other = Node { labels: BTreeMap::from([("app".to_string(), "app1".to_string())]), ..node("test2") };
        let idx = index(&yaml, &other);
        assert_eq!(subset_names(idx.lookup("test2", "test", h)), ["all"]);
    }

    #[test]
    fn non_matching_selector_rule_still_shadows_other_namespaces() {
        // Istio stops at the first namespace with a host match, even when none of its rules applies.
        let h = "httpbin.org";
        let yaml = [
            dr("sel", "web", h, ", workloadSelector: {matchLabels: {app: x}}, subsets: [{name: sel}]"),
            dr("svc", "prod", h, &subsets(&["svc"])),
        ]
        .concat();
        let idx = index(&yaml, &node("web"));
        assert!(idx.lookup("web", "prod", h).is_none());
        assert_eq!(look(&yaml, "api", "prod", h), ["svc"]);
    }

    #[test]
    fn mesh_default_export_to_private() {
        let h = "httpbin.org";
        let yaml = dr("r", "prod", h, &subsets(&["v1"]));
        let mesh = MeshConfig { default_destination_rule_export_to: vec![".".into()], ..MeshConfig::default() };
        let idx = DrIndex::build(&store(&yaml), &mesh, &node("web"), &mut Messages::default());
        assert!(idx.lookup("web", "prod", h).is_none());
        assert!(idx.rules.is_empty(), "nothing this node could look up");
        let idx = DrIndex::build(&store(&yaml), &mesh, &node("prod"), &mut Messages::default());
        assert_eq!(subset_names(idx.lookup("prod", "prod", h)), ["v1"]);
        // An explicit exportTo still exports it.
        let yaml = dr("r", "prod", h, &format!(", exportTo: [web]{}", subsets(&["v1"])));
        let idx = DrIndex::build(&store(&yaml), &mesh, &node("web"), &mut Messages::default());
        assert_eq!(subset_names(idx.lookup("web", "prod", h)), ["v1"]);
        let idx = DrIndex::build(&store(&yaml), &mesh, &node("api"), &mut Messages::default());
        assert!(idx.lookup("api", "prod", h).is_none());
    }

    #[test]
    fn policy_per_port_and_subset() {
        let h = "reviews.default.svc.cluster.local";
        let yaml = dr(
            "r",
            "default",
            h,
            ", trafficPolicy: {loadBalancer: {simple: RANDOM}, portLevelSettings: [{port: {number: 9080}, outlierDetection: {}}]}, \
             subsets: [{name: v1, trafficPolicy: {connectionPool: {tcp: {maxConnections: 3}}}}, {name: v2}]",
        );
        let idx = index(&yaml, &node("default"));
        let d = idx.lookup("default", "default", h).expect("rule");
        let mesh = MeshConfig::default();
        let p = d.policy(9080, None, &mesh);
        assert_eq!(p.load_balancer.algorithm, LbAlgorithm::LeastRequest, "port level replaced the lb");
        assert!(p.outlier_detection.is_some());
        let p = d.policy(9080, Some("v1"), &mesh);
        assert!(p.outlier_detection.is_some(), "port-level outlier kept under the subset");
        assert_eq!(p.connection_pool.max_connections, 3);
        let p = d.policy(8080, Some("v2"), &mesh);
        assert_eq!(p.load_balancer.algorithm, LbAlgorithm::Random);
        assert!(p.outlier_detection.is_none());
        assert_eq!(d.policy(8080, Some("nope"), &mesh), d.policy(8080, None, &mesh));
    }
}
