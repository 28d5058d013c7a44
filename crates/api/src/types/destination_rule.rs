//! `networking.istio.io` DestinationRule: what happens after routing —
//! subsets, load balancing, connection pools, outlier detection, upstream TLS.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::{ConnectionPoolSettings, Labels, MatchLabelsSelector, PortSelector};
use super::scalar::{Duration, int, proto_enum};

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DestinationRule {
    pub host: String,
    #[serde(alias = "traffic_policy")]
    pub traffic_policy: Option<TrafficPolicy>,
    pub subsets: Vec<Subset>,
    #[serde(alias = "export_to")]
    pub export_to: Vec<String>,
    #[serde(alias = "workload_selector")]
    pub workload_selector: Option<MatchLabelsSelector>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TrafficPolicy {
    #[serde(alias = "load_balancer")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(alias = "connection_pool")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(alias = "outlier_detection")]
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTlsSettings>,
    #[serde(alias = "port_level_settings")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    pub tunnel: Option<TunnelSettings>,
    #[serde(alias = "proxy_protocol")]
    pub proxy_protocol: Option<ProxyProtocol>,
    #[serde(alias = "retry_budget")]
    pub retry_budget: Option<RetryBudget>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PortTrafficPolicy {
    pub port: Option<PortSelector>,
    #[serde(alias = "load_balancer")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(alias = "connection_pool")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(alias = "outlier_detection")]
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTlsSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TunnelSettings {
    pub protocol: String,
    #[serde(alias = "target_host")]
    pub target_host: String,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "target_port")]
    pub target_port: u32,
}

proto_enum!(
    /// `TrafficPolicy.ProxyProtocol.VERSION`.
    ProxyProtocolVersion { V1 = 0 => "V1", V2 = 1 => "V2" }
);

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyProtocol {
    pub version: ProxyProtocolVersion,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetryBudget {
    pub percent: Option<f64>,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "min_retry_concurrency")]
    pub min_retry_concurrency: u32,
    #[serde(alias = "budget_interval")]
    pub budget_interval: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Subset {
    pub name: String,
    pub labels: Labels,
    #[serde(alias = "traffic_policy")]
    pub traffic_policy: Option<TrafficPolicy>,
}

proto_enum!(
    /// `LoadBalancerSettings.SimpleLB`.
    SimpleLb {
        Unspecified = 0 => "UNSPECIFIED",
        LeastConn = 1 => "LEAST_CONN",
        Random = 2 => "RANDOM",
        Passthrough = 3 => "PASSTHROUGH",
        RoundRobin = 4 => "ROUND_ROBIN",
        LeastRequest = 5 => "LEAST_REQUEST",
    }
);

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LoadBalancerSettings {
    /// oneof `lb_policy`: `simple` ...
    pub simple: Option<SimpleLb>,
    /// ... or `consistentHash`.
    #[serde(alias = "consistent_hash")]
    pub consistent_hash: Option<ConsistentHashLb>,
    #[serde(alias = "locality_lb_setting")]
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    #[serde(alias = "zone_aware_lb_setting")]
    pub zone_aware_lb_setting: Option<ZoneAwareLoadBalancerSetting>,
    /// Deprecated in favour of `warmup`.
    #[serde(alias = "warmup_duration_secs")]
    pub warmup_duration_secs: Option<Duration>,
    pub warmup: Option<WarmupConfiguration>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WarmupConfiguration {
    pub duration: Option<Duration>,
    #[serde(alias = "minimum_percent")]
    pub minimum_percent: Option<f64>,
    pub aggression: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConsistentHashLb {
    /// oneof `hash_key`.
    #[serde(alias = "http_header_name")]
    pub http_header_name: Option<String>,
    #[serde(alias = "http_cookie")]
    pub http_cookie: Option<HttpCookie>,
    #[serde(alias = "use_source_ip")]
    pub use_source_ip: Option<bool>,
    #[serde(alias = "http_query_parameter_name")]
    pub http_query_parameter_name: Option<String>,
    /// oneof `hash_algorithm`.
    #[serde(alias = "ring_hash")]
    pub ring_hash: Option<RingHash>,
    pub maglev: Option<MagLev>,
    /// Deprecated in favour of `ringHash.minimumRingSize`.
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "minimum_ring_size")]
    pub minimum_ring_size: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RingHash {
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "minimum_ring_size")]
    pub minimum_ring_size: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MagLev {
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "table_size")]
    pub table_size: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpCookie {
    pub name: String,
    pub path: String,
    pub ttl: Option<Duration>,
    pub attributes: Vec<CookieAttribute>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CookieAttribute {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocalityLoadBalancerSetting {
    pub distribute: Vec<LocalityDistribute>,
    pub failover: Vec<LocalityFailover>,
    #[serde(alias = "failover_priority")]
    pub failover_priority: Vec<String>,
    pub enabled: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocalityDistribute {
    pub from: String,
    #[serde(deserialize_with = "int::map")]
    pub to: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocalityFailover {
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ZoneAwareLoadBalancerSetting {
    pub enabled: Option<bool>,
    pub failover: Vec<LocalityFailover>,
    #[serde(alias = "failover_priority")]
    pub failover_priority: Vec<String>,
    #[serde(deserialize_with = "int::opt")]
    #[serde(alias = "min_cluster_size")]
    pub min_cluster_size: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// Deprecated; ignored by Istio (warning only).
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "consecutive_errors")]
    pub consecutive_errors: i32,
    #[serde(alias = "split_external_local_origin_errors")]
    pub split_external_local_origin_errors: bool,
    #[serde(deserialize_with = "int::opt")]
    #[serde(alias = "consecutive_local_origin_failures")]
    pub consecutive_local_origin_failures: Option<u32>,
    #[serde(deserialize_with = "int::opt")]
    #[serde(alias = "consecutive_gateway_errors")]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(rename = "consecutive5xxErrors", deserialize_with = "int::opt")]
    #[serde(alias = "consecutive_5xx_errors")]
    pub consecutive_5xx_errors: Option<u32>,
    pub interval: Option<Duration>,
    #[serde(alias = "base_ejection_time")]
    pub base_ejection_time: Option<Duration>,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "max_ejection_percent")]
    pub max_ejection_percent: i32,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "min_health_percent")]
    pub min_health_percent: i32,
    #[serde(deserialize_with = "int::vec")]
    #[serde(alias = "outlier_detection_http_error_codes")]
    pub outlier_detection_http_error_codes: Vec<u32>,
}

proto_enum!(
    /// `ClientTLSSettings.TLSmode`.
    ClientTlsMode { Disable = 0 => "DISABLE", Simple = 1 => "SIMPLE", Mutual = 2 => "MUTUAL", IstioMutual = 3 => "ISTIO_MUTUAL" }
);

/// `istio.networking.v1alpha3.ClientTLSSettings`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClientTlsSettings {
    pub mode: ClientTlsMode,
    #[serde(alias = "client_certificate")]
    pub client_certificate: String,
    #[serde(alias = "private_key")]
    pub private_key: String,
    #[serde(alias = "ca_certificates")]
    pub ca_certificates: String,
    #[serde(alias = "credential_name")]
    pub credential_name: String,
    #[serde(alias = "subject_alt_names")]
    pub subject_alt_names: Vec<String>,
    pub sni: String,
    #[serde(alias = "insecure_skip_verify")]
    pub insecure_skip_verify: Option<bool>,
    #[serde(alias = "ca_crl")]
    pub ca_crl: String,
}
