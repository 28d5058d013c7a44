//! Types shared by several Istio kinds: destinations, ports, selectors,
//! string matchers and the connection/TLS settings reused across resources.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::scalar::{Duration, int, proto_enum};

pub type Labels = BTreeMap<String, String>;

/// `istio.networking.v1alpha3.PortSelector`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PortSelector {
    #[serde(deserialize_with = "int::plain")]
    pub number: u32,
}

/// `istio.networking.v1alpha3.Destination`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Destination {
    pub host: String,
    pub subset: String,
    pub port: Option<PortSelector>,
}

/// `istio.networking.v1alpha3.Percent`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Percent {
    pub value: f64,
}

/// `istio.networking.v1alpha3.StringMatch` (a oneof: exactly one should be set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

/// `istio.networking.v1alpha3.WorkloadSelector` as used by Sidecar and ServiceEntry (`labels`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadSelector {
    pub labels: Labels,
}

/// `istio.type.v1beta1.WorkloadSelector` as used by DestinationRule (`matchLabels`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MatchLabelsSelector {
    #[serde(alias = "match_labels")]
    pub match_labels: Labels,
}

/// `istio.networking.v1alpha3.Port` (Gateway servers) and `SidecarPort`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Port {
    #[serde(deserialize_with = "int::plain")]
    pub number: u32,
    pub protocol: String,
    pub name: String,
    /// Deprecated and rejected by validation.
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "target_port")]
    pub target_port: u32,
}

/// `istio.networking.v1alpha3.ConnectionPoolSettings`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConnectionPoolSettings {
    pub tcp: Option<TcpSettings>,
    pub http: Option<HttpSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpSettings {
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "max_connections")]
    pub max_connections: i32,
    #[serde(alias = "connect_timeout")]
    pub connect_timeout: Option<Duration>,
    #[serde(alias = "tcp_keepalive")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    #[serde(alias = "max_connection_duration")]
    pub max_connection_duration: Option<Duration>,
    #[serde(alias = "idle_timeout")]
    pub idle_timeout: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpKeepalive {
    #[serde(deserialize_with = "int::plain")]
    pub probes: u32,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

proto_enum!(
    /// `ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy`.
    H2UpgradePolicy { Default = 0 => "DEFAULT", DoNotUpgrade = 1 => "DO_NOT_UPGRADE", Upgrade = 2 => "UPGRADE" }
);

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpSettings {
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "http1_max_pending_requests")]
    pub http1_max_pending_requests: i32,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "http2_max_requests")]
    pub http2_max_requests: i32,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "max_requests_per_connection")]
    pub max_requests_per_connection: i32,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "max_retries")]
    pub max_retries: i32,
    #[serde(alias = "idle_timeout")]
    pub idle_timeout: Option<Duration>,
    #[serde(alias = "h2_upgrade_policy")]
    pub h2_upgrade_policy: H2UpgradePolicy,
    #[serde(alias = "use_client_protocol")]
    pub use_client_protocol: bool,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "max_concurrent_streams")]
    pub max_concurrent_streams: i32,
    #[serde(alias = "http2_keep_alive")]
    pub http2_keep_alive: Option<ConnectionKeepalive>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConnectionKeepalive {
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
}

proto_enum!(
    /// `ServerTLSSettings.TLSmode`.
    ServerTlsMode {
        Passthrough = 0 => "PASSTHROUGH",
        Simple = 1 => "SIMPLE",
        Mutual = 2 => "MUTUAL",
        AutoPassthrough = 3 => "AUTO_PASSTHROUGH",
        IstioMutual = 4 => "ISTIO_MUTUAL",
        OptionalMutual = 5 => "OPTIONAL_MUTUAL",
    }
);

proto_enum!(
    /// `ServerTLSSettings.TLSProtocol`.
    TlsProtocol { TlsAuto = 0 => "TLS_AUTO", TlsV1_0 = 1 => "TLSV1_0", TlsV1_1 = 2 => "TLSV1_1", TlsV1_2 = 3 => "TLSV1_2", TlsV1_3 = 4 => "TLSV1_3" }
);

/// `istio.networking.v1alpha3.ServerTLSSettings` (Gateway servers, Sidecar ingress).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerTlsSettings {
    #[serde(alias = "https_redirect")]
    pub https_redirect: bool,
    pub mode: ServerTlsMode,
    #[serde(alias = "server_certificate")]
    pub server_certificate: String,
    #[serde(alias = "private_key")]
    pub private_key: String,
    #[serde(alias = "ca_certificates")]
    pub ca_certificates: String,
    #[serde(alias = "ca_crl")]
    pub ca_crl: String,
    #[serde(alias = "credential_name")]
    pub credential_name: String,
    #[serde(alias = "credential_names")]
    pub credential_names: Vec<String>,
    #[serde(alias = "ca_cert_credential_name")]
    pub ca_cert_credential_name: String,
    #[serde(alias = "tls_certificates")]
    pub tls_certificates: Vec<TlsCertificate>,
    #[serde(alias = "subject_alt_names")]
    pub subject_alt_names: Vec<String>,
    #[serde(alias = "verify_certificate_spki")]
    pub verify_certificate_spki: Vec<String>,
    #[serde(alias = "verify_certificate_hash")]
    pub verify_certificate_hash: Vec<String>,
    #[serde(alias = "min_protocol_version")]
    pub min_protocol_version: TlsProtocol,
    #[serde(alias = "max_protocol_version")]
    pub max_protocol_version: TlsProtocol,
    #[serde(alias = "cipher_suites")]
    pub cipher_suites: Vec<String>,
    #[serde(alias = "insecure_skip_verify")]
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsCertificate {
    #[serde(alias = "server_certificate")]
    pub server_certificate: String,
    #[serde(alias = "private_key")]
    pub private_key: String,
    #[serde(alias = "ca_certificates")]
    pub ca_certificates: String,
}
