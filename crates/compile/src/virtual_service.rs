//! VirtualService selection (`push_context.go initVirtualServices`,
//! `virtualservice.go SelectVirtualServices`): short names resolved, gateway
//! references resolved, visibility, Istio's ordering, and delegate
//! VirtualServices merged into their roots.

use std::sync::Arc;

use weir_api::types::{HttpRoute, VirtualService};

use crate::message::Messages;
use crate::mesh::MeshConfig;
use crate::model::Str;
use crate::node::Node;
use crate::registry::Visibility;
use crate::store::{Cfg, ConfigStore};

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
    pub http: Vec<HttpRoute>,
    pub visibility: Visibility,
}

#[derive(Clone, Debug, Default)]
pub struct VsIndex {
    /// Root (non-delegate) VirtualServices in creation order.
    pub all: Vec<Arc<ResolvedVs>>,
}

impl VsIndex {
    pub fn build(config: &ConfigStore, mesh: &MeshConfig, node: &Node, messages: &mut Messages) -> VsIndex {
        let _ = (config, mesh, node, messages);
        todo!("VsIndex::build")
    }

    /// VirtualServices bound to `mesh` visible from `namespace`, in Istio's
    /// order: private to the namespace, then exported to it, then public
    /// (each by creation time, name, namespace).
    pub fn for_mesh(&self, namespace: &str) -> Vec<&Arc<ResolvedVs>> {
        todo!("VsIndex::for_mesh {namespace}")
    }

    /// VirtualServices bound to gateway `gateway` (`ns/name`) visible from `namespace`, same order.
    pub fn for_gateway(&self, gateway: &str, namespace: &str) -> Vec<&Arc<ResolvedVs>> {
        todo!("VsIndex::for_gateway {gateway} {namespace}")
    }
}
