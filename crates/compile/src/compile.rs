//! The compile driver: builds the indices once, asks each role for its
//! listeners and routes, adds the clusters they can reach, and sorts
//! everything into a deterministic snapshot. Pure: no I/O, no clock.

use std::sync::Arc;

use crate::destination_rule::DrIndex;
use crate::mesh::MeshConfig;
use crate::message::Messages;
use crate::model::{Cluster, Listener, NodeSummary, RouteTable, Snapshot};
use crate::node::Node;
use crate::registry::{Registry, Service};
use crate::route::RouteEnv;
use crate::sidecar::SidecarScope;
use crate::store::ConfigStore;
use crate::virtual_service::VsIndex;

/// Everything a compile reads.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub config: &'a ConfigStore,
    pub registry: &'a Registry,
    pub mesh: &'a MeshConfig,
}

/// Indices shared by the role builders of one compile.
pub struct Context<'a> {
    pub input: Input<'a>,
    pub node: &'a Node,
    pub scope: SidecarScope,
    pub drs: DrIndex,
    pub vss: VsIndex,
}

impl<'a> Context<'a> {
    /// The route-building environment for a listener port (`gateway`: `Some("ns/name")` at gateways).
    pub fn route_env(&'a self, port: u16, gateway: Option<&'a str>) -> RouteEnv<'a> {
        RouteEnv {
            node: self.node,
            mesh: self.input.mesh,
            registry: self.input.registry,
            drs: &self.drs,
            port,
            gateway,
        }
    }

    /// Services this node can send to: visible from its namespace and, for
    /// the sidecar role, imported by its Sidecar scope (gateways see every
    /// visible service).
    pub fn reachable_services(&self) -> Vec<&'a Arc<Service>> {
        let ns = self.node.namespace.as_str();
        if self.node.role.gateway() {
            self.input.registry.visible_from(ns).collect()
        } else {
            self.scope.services(self.input.registry, ns)
        }
    }
}

/// What the role builders produce.
#[derive(Debug, Default)]
pub struct Builder {
    pub listeners: Vec<Listener>,
    pub route_tables: Vec<RouteTable>,
    pub clusters: Vec<Cluster>,
    pub messages: Messages,
}

/// Compiles the snapshot for `node`.
pub fn compile(input: Input<'_>, node: &Node) -> Snapshot {
    let mut messages = Messages::default();
    let scope = if node.role.sidecar() {
        SidecarScope::select(input.config, input.mesh, node, &mut messages)
    } else {
        SidecarScope::default_for(input.mesh)
    };
    let drs = DrIndex::build(input.config, input.mesh, node, &mut messages);
    let vss = VsIndex::build(input.config, input.mesh, node, &mut messages);
    let cx = Context { input, node, scope, drs, vss };
    let mut out = Builder { messages, ..Builder::default() };
    if node.role.gateway() {
        crate::gateway::build(&cx, &mut out);
    }
    if node.role.sidecar() {
        crate::outbound::build(&cx, &mut out);
    }
    let services = cx.reachable_services();
    let clusters = crate::cluster::build(&services, &cx.drs, &node.namespace, input.mesh, &mut out.messages);
    out.clusters.extend(clusters);
    finish(out, node, input.mesh)
}

fn finish(mut out: Builder, node: &Node, mesh: &MeshConfig) -> Snapshot {
    out.listeners.sort_by(|a, b| (a.port, &a.name).cmp(&(b.port, &b.name)));
    out.route_tables.sort_by(|a, b| a.name.cmp(&b.name));
    out.route_tables.dedup_by(|a, b| a.name == b.name);
    out.clusters.sort_by(|a, b| a.name.cmp(&b.name));
    out.clusters.dedup_by(|a, b| a.name == b.name);
    Snapshot {
        node: NodeSummary {
            namespace: node.namespace.as_str().into(),
            labels: node.labels.iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect(),
            role: node.role,
            locality: node.locality.as_deref().map(crate::model::Str::from),
        },
        listeners: out.listeners,
        route_tables: out.route_tables,
        clusters: out.clusters,
        messages: out.messages.into_vec(),
        path_normalization: mesh.path_normalization.mode(),
    }
}
