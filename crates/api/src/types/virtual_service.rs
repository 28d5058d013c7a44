//! `networking.istio.io` VirtualService: HTTP, TLS and TCP routing rules.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::{Destination, Labels, Percent, StringMatch};
use super::scalar::{Duration, int, proto_enum};

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VirtualService {
    pub hosts: Vec<String>,
    pub gateways: Vec<String>,
    pub http: Vec<HttpRoute>,
    pub tls: Vec<TlsRoute>,
    pub tcp: Vec<TcpRoute>,
    #[serde(alias = "export_to")]
    pub export_to: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRoute {
    pub name: String,
    #[serde(rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    pub route: Vec<HttpRouteDestination>,
    pub redirect: Option<HttpRedirect>,
    #[serde(alias = "direct_response")]
    pub direct_response: Option<HttpDirectResponse>,
    pub delegate: Option<Delegate>,
    pub rewrite: Option<HttpRewrite>,
    pub timeout: Option<Duration>,
    pub retries: Option<HttpRetry>,
    pub fault: Option<HttpFaultInjection>,
    pub mirror: Option<Destination>,
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated integer mirror percentage (`mirror_percent` in the CRD).
    #[serde(deserialize_with = "int::opt")]
    #[serde(alias = "mirror_percent")]
    pub mirror_percent: Option<u32>,
    #[serde(alias = "mirror_percentage")]
    pub mirror_percentage: Option<Percent>,
    #[serde(alias = "cors_policy")]
    pub cors_policy: Option<CorsPolicy>,
    pub headers: Option<Headers>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Delegate {
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Headers {
    pub request: Option<HeaderOperations>,
    pub response: Option<HeaderOperations>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HeaderOperations {
    pub set: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpMatchRequest {
    pub name: String,
    pub uri: Option<StringMatch>,
    pub scheme: Option<StringMatch>,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(deserialize_with = "int::plain")]
    pub port: u32,
    #[serde(alias = "source_labels")]
    pub source_labels: Labels,
    pub gateways: Vec<String>,
    #[serde(alias = "query_params")]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(alias = "ignore_uri_case")]
    pub ignore_uri_case: bool,
    #[serde(alias = "without_headers")]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(alias = "source_namespace")]
    pub source_namespace: String,
    #[serde(alias = "stat_prefix")]
    pub stat_prefix: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRouteDestination {
    pub destination: Option<Destination>,
    #[serde(deserialize_with = "int::plain")]
    pub weight: i32,
    pub headers: Option<Headers>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RouteDestination {
    pub destination: Option<Destination>,
    #[serde(deserialize_with = "int::plain")]
    pub weight: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct L4MatchAttributes {
    #[serde(alias = "destination_subnets")]
    pub destination_subnets: Vec<String>,
    #[serde(deserialize_with = "int::plain")]
    pub port: u32,
    #[serde(alias = "source_subnet")]
    pub source_subnet: String,
    #[serde(alias = "source_labels")]
    pub source_labels: Labels,
    pub gateways: Vec<String>,
    #[serde(alias = "source_namespace")]
    pub source_namespace: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsMatchAttributes {
    #[serde(alias = "sni_hosts")]
    pub sni_hosts: Vec<String>,
    #[serde(alias = "destination_subnets")]
    pub destination_subnets: Vec<String>,
    #[serde(deserialize_with = "int::plain")]
    pub port: u32,
    #[serde(alias = "source_labels")]
    pub source_labels: Labels,
    pub gateways: Vec<String>,
    #[serde(alias = "source_namespace")]
    pub source_namespace: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsRoute {
    #[serde(rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    pub route: Vec<RouteDestination>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpRoute {
    #[serde(rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    pub route: Vec<RouteDestination>,
}

proto_enum!(
    /// `HTTPRedirect.RedirectPortSelection`.
    RedirectPortSelection { FromProtocolDefault = 0 => "FROM_PROTOCOL_DEFAULT", FromRequestPort = 1 => "FROM_REQUEST_PORT" }
);

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRedirect {
    pub uri: String,
    pub authority: String,
    /// oneof `redirect_port`: an explicit port ...
    #[serde(deserialize_with = "int::opt")]
    pub port: Option<u32>,
    /// ... or how to derive it.
    #[serde(alias = "derive_port")]
    pub derive_port: Option<RedirectPortSelection>,
    pub scheme: String,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "redirect_code")]
    pub redirect_code: u32,
    #[serde(alias = "prefix_rewrite")]
    pub prefix_rewrite: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpDirectResponse {
    #[serde(deserialize_with = "int::plain")]
    pub status: u32,
    pub body: Option<HttpBody>,
}

/// oneof `specifier`: inline text or base64 bytes.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpBody {
    pub string: Option<String>,
    pub bytes: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRewrite {
    pub uri: String,
    pub authority: String,
    #[serde(alias = "uri_regex_rewrite")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RegexRewrite {
    #[serde(rename = "match")]
    pub match_: String,
    pub rewrite: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRetry {
    #[serde(deserialize_with = "int::plain")]
    pub attempts: i32,
    #[serde(alias = "per_try_timeout")]
    pub per_try_timeout: Option<Duration>,
    #[serde(alias = "retry_on")]
    pub retry_on: String,
    #[serde(alias = "retry_remote_localities")]
    pub retry_remote_localities: Option<bool>,
    #[serde(alias = "retry_ignore_previous_hosts")]
    pub retry_ignore_previous_hosts: Option<bool>,
    pub backoff: Option<Duration>,
}

proto_enum!(
    /// `CorsPolicy.UnmatchedPreflights`.
    UnmatchedPreflights { Unspecified = 0 => "UNSPECIFIED", Forward = 1 => "FORWARD", Ignore = 2 => "IGNORE" }
);

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CorsPolicy {
    /// Deprecated exact origins.
    #[serde(alias = "allow_origin")]
    pub allow_origin: Vec<String>,
    #[serde(alias = "allow_origins")]
    pub allow_origins: Vec<StringMatch>,
    #[serde(alias = "allow_methods")]
    pub allow_methods: Vec<String>,
    #[serde(alias = "allow_headers")]
    pub allow_headers: Vec<String>,
    #[serde(alias = "expose_headers")]
    pub expose_headers: Vec<String>,
    #[serde(alias = "max_age")]
    pub max_age: Option<Duration>,
    #[serde(alias = "allow_credentials")]
    pub allow_credentials: Option<bool>,
    #[serde(alias = "unmatched_preflights")]
    pub unmatched_preflights: UnmatchedPreflights,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpFaultInjection {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultDelay {
    /// Deprecated integer percentage.
    #[serde(deserialize_with = "int::plain")]
    pub percent: i32,
    #[serde(alias = "fixed_delay")]
    pub fixed_delay: Option<Duration>,
    #[serde(alias = "exponential_delay")]
    pub exponential_delay: Option<Duration>,
    pub percentage: Option<Percent>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultAbort {
    #[serde(deserialize_with = "int::opt")]
    #[serde(alias = "http_status")]
    pub http_status: Option<i32>,
    #[serde(alias = "grpc_status")]
    pub grpc_status: Option<String>,
    #[serde(alias = "http2_error")]
    pub http2_error: Option<String>,
    pub percentage: Option<Percent>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpMirrorPolicy {
    pub destination: Option<Destination>,
    pub percentage: Option<Percent>,
}
