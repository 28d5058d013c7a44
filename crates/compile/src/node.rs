//! The identity of the proxy a snapshot is compiled for.

use std::collections::BTreeMap;

use serde::Serialize;

/// Which jobs the node does: serve Gateways, act as a sidecar for local clients, or both
/// (the standalone `weir run` default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Gateway,
    Sidecar,
    #[default]
    Both,
}

impl Role {
    pub fn gateway(&self) -> bool {
        matches!(self, Role::Gateway | Role::Both)
    }
    pub fn sidecar(&self) -> bool {
        matches!(self, Role::Sidecar | Role::Both)
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "gateway" => Some(Role::Gateway),
            "sidecar" => Some(Role::Sidecar),
            "both" => Some(Role::Both),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The namespace the proxy's workload runs in (decides visibility and short names).
    pub namespace: String,
    /// The workload's labels (Gateway selectors, Sidecar selectors, `sourceLabels`).
    pub labels: BTreeMap<String, String>,
    pub role: Role,
    /// Kubernetes cluster domain: `reviews` expands to `reviews.<ns>.svc.<cluster_domain>`.
    pub cluster_domain: String,
    /// `region/zone/subzone` of the proxy, for locality load balancing.
    pub locality: Option<String>,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            namespace: "default".into(),
            labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
            role: Role::Both,
            cluster_domain: "cluster.local".into(),
            locality: None,
        }
    }
}

impl Node {
    /// Whether `selector` (all key/values) is satisfied by the node's labels.
    pub fn selected_by(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}
