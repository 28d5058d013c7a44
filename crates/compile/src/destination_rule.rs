//! DestinationRule lookup and merging (`push_context.go destinationRule`,
//! `destination_rule.go mergeDestinationRule`) and the effective policy per
//! (port, subset) (`util.go GetPortLevelTrafficPolicy`, `MergeSubsetTrafficPolicy`).

use weir_api::types::{Subset, TrafficPolicy};

use crate::message::Messages;
use crate::mesh::MeshConfig;
use crate::model::Str;
use crate::node::Node;
use crate::policy::ClusterPolicy;
use crate::store::ConfigStore;

/// The DestinationRules for one host, merged as Istio merges several DRs
/// from one namespace (subsets concatenated, first top-level policy wins).
#[derive(Clone, Debug, PartialEq)]
pub struct MergedDr {
    /// The DR host as resolved (FQDN or wildcard).
    pub host: Str,
    pub namespace: Str,
    pub traffic_policy: Option<TrafficPolicy>,
    pub subsets: Vec<Subset>,
    /// `DestinationRule ns/name` of each contributor, in merge order.
    pub origins: Vec<Str>,
}

impl MergedDr {
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }

    /// The effective policy for traffic to `port` (and `subset`), Istio's
    /// defaults filled in for everything not set.
    pub fn policy(&self, port: u16, subset: Option<&str>, mesh: &MeshConfig) -> ClusterPolicy {
        let _ = (port, subset, mesh);
        todo!("MergedDr::policy")
    }
}

/// All DestinationRules, indexed for lookup.
#[derive(Clone, Debug, Default)]
pub struct DrIndex {
    pub rules: Vec<MergedDr>,
}

impl DrIndex {
    pub fn build(config: &ConfigStore, mesh: &MeshConfig, node: &Node, messages: &mut Messages) -> DrIndex {
        let _ = (config, mesh, node, messages);
        todo!("DrIndex::build")
    }

    /// The rule that applies to `host` for a client in `client_namespace`:
    /// DRs in the client's namespace, then the host's service namespace
    /// (exported to the client), then the root namespace; within one
    /// namespace an exact host beats the longest matching wildcard.
    pub fn lookup(&self, client_namespace: &str, service_namespace: &str, host: &str) -> Option<&MergedDr> {
        let _ = (client_namespace, service_namespace, host);
        todo!("DrIndex::lookup")
    }
}
