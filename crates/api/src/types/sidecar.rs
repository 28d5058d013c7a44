//! `networking.istio.io` Sidecar: what a sidecar proxy sees and listens on.

use serde::Deserialize;

use super::common::{ConnectionPoolSettings, Destination, Port, ServerTlsSettings, WorkloadSelector};
use super::scalar::proto_enum;

proto_enum!(
    /// `CaptureMode`.
    CaptureMode { Default = 0 => "DEFAULT", Iptables = 1 => "IPTABLES", None = 2 => "NONE" }
);

proto_enum!(
    /// `OutboundTrafficPolicy.Mode` (ALLOW_ANY_DYNAMIC_DNS is MeshConfig-only and rejected here).
    OutboundMode { RegistryOnly = 0 => "REGISTRY_ONLY", AllowAny = 1 => "ALLOW_ANY", AllowAnyDynamicDns = 3 => "ALLOW_ANY_DYNAMIC_DNS" }
);

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Sidecar {
    #[serde(alias = "workload_selector")]
    pub workload_selector: Option<WorkloadSelector>,
    pub ingress: Vec<IstioIngressListener>,
    pub egress: Vec<IstioEgressListener>,
    #[serde(alias = "inbound_connection_pool")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    #[serde(alias = "outbound_traffic_policy")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IstioIngressListener {
    pub port: Option<Port>,
    pub bind: String,
    #[serde(alias = "capture_mode")]
    pub capture_mode: CaptureMode,
    #[serde(alias = "default_endpoint")]
    pub default_endpoint: String,
    pub tls: Option<ServerTlsSettings>,
    #[serde(alias = "connection_pool")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IstioEgressListener {
    pub port: Option<Port>,
    pub bind: String,
    #[serde(alias = "capture_mode")]
    pub capture_mode: CaptureMode,
    pub hosts: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutboundTrafficPolicy {
    pub mode: OutboundMode,
    #[serde(alias = "egress_proxy")]
    pub egress_proxy: Option<Destination>,
}
