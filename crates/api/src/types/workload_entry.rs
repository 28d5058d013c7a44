//! `networking.istio.io` WorkloadEntry and WorkloadGroup: non-Kubernetes workloads.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::Labels;
use super::scalar::int;
use super::sorted_map::SortedMap;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadEntry {
    /// Shared, not copied, by the registry and the snapshot built from it.
    pub address: std::sync::Arc<str>,
    #[serde(deserialize_with = "int::map")]
    /// Port name -> number (a `SortedMap`: one small allocation per endpoint).
    pub ports: SortedMap<String, u32>,
    pub labels: Labels,
    /// `Box<str>`, not `String`: these are kept for every endpoint (8 bytes less each).
    pub network: Box<str>,
    pub locality: Box<str>,
    #[serde(deserialize_with = "int::plain")]
    pub weight: u32,
    #[serde(alias = "service_account")]
    pub service_account: Box<str>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadGroup {
    pub metadata: Option<GroupMetadata>,
    pub template: Option<WorkloadEntry>,
    pub probe: Option<ReadinessProbe>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GroupMetadata {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReadinessProbe {
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "initial_delay_seconds")]
    pub initial_delay_seconds: i32,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "timeout_seconds")]
    pub timeout_seconds: i32,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "period_seconds")]
    pub period_seconds: i32,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "success_threshold")]
    pub success_threshold: i32,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "failure_threshold")]
    pub failure_threshold: i32,
    /// oneof `health_check_method`.
    #[serde(alias = "http_get")]
    pub http_get: Option<HttpHealthCheckConfig>,
    #[serde(alias = "tcp_socket")]
    pub tcp_socket: Option<TcpHealthCheckConfig>,
    pub exec: Option<ExecHealthCheckConfig>,
    pub grpc: Option<GrpcHealthCheckConfig>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpHealthCheckConfig {
    pub path: String,
    #[serde(deserialize_with = "int::plain")]
    pub port: u32,
    pub host: String,
    pub scheme: String,
    #[serde(alias = "http_headers")]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpHealthCheckConfig {
    pub host: String,
    #[serde(deserialize_with = "int::plain")]
    pub port: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ExecHealthCheckConfig {
    pub command: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GrpcHealthCheckConfig {
    #[serde(deserialize_with = "int::plain")]
    pub port: u32,
    pub service: Option<String>,
}
