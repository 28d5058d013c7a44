//! The Sidecar resource's scope for a node (`pilot/pkg/model/sidecar.go`):
//! which services, VirtualServices and DestinationRules the node imports,
//! its egress listeners, and its outbound traffic policy.

use weir_api::protocol::Protocol;

use crate::message::Messages;
use crate::mesh::{MeshConfig, OutboundMode};
use crate::model::Str;
use crate::node::Node;
use crate::store::ConfigStore;

/// The namespace part of an egress `hosts` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportNamespace {
    /// `*/host`: any namespace.
    Any,
    /// `ns/host` (and `./host`, resolved to the Sidecar's namespace).
    Named(Str),
    /// `~ns/host` or `~/host`: exclude (nothing imported from there).
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
    pub fn select(config: &ConfigStore, mesh: &MeshConfig, node: &Node, messages: &mut Messages) -> SidecarScope {
        let _ = (config, node, messages);
        todo!("SidecarScope::select {}", mesh.root_namespace)
    }

    /// Whether something declared in `namespace` with host `host` is imported
    /// by any egress listener (Istio's `egress.hosts` rules, bidirectional host matching).
    pub fn imports(&self, namespace: &str, host: &str) -> bool {
        todo!("SidecarScope::imports {namespace} {host}")
    }

    /// Same, for the egress listener that serves `port` (the port's own listener, else the catch-all).
    pub fn imports_on_port(&self, port: u16, namespace: &str, host: &str) -> bool {
        todo!("SidecarScope::imports_on_port {port} {namespace} {host}")
    }
}
