//! The compiled snapshot: what one proxy executes. Pure data, no I/O, built
//! by `compile` and swapped atomically by the data path. Names follow Istio
//! and Envoy (`outbound|9080|v1|reviews.default.svc.cluster.local`, route
//! table `http.8080` or `9080`) so `istioctl proxy-config` habits carry over.
//!
//! Everything here serializes deterministically (vectors in a defined order)
//! so golden tests can compare snapshots byte for byte.

use std::sync::Arc;

use serde::Serialize;

/// Cheap-to-clone interned string for names in the model.
pub type Str = Arc<str>;

/// Durations serialize as proto-JSON strings (`"10s"`, `"0.5s"`), as users write them.
pub mod duration {
    use serde::Serializer;

    pub fn text(d: &std::time::Duration) -> String {
        let (s, n) = (d.as_secs(), d.subsec_nanos());
        if n == 0 {
            format!("{s}s")
        } else {
            let frac = format!("{n:09}");
            format!("{s}.{}s", frac.trim_end_matches('0'))
        }
    }
    pub fn one<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(d))
    }
    pub fn opt<S: Serializer>(d: &Option<std::time::Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&text(d)),
            None => s.serialize_none(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub node: NodeSummary,
    /// Sorted by port, then name.
    pub listeners: Vec<Listener>,
    /// Sorted by name.
    pub route_tables: Vec<RouteTable>,
    /// Sorted by name.
    pub clusters: Vec<Cluster>,
    /// Problems found while compiling; never fatal.
    pub messages: Vec<crate::message::Message>,
    /// How request paths are normalized before routing (MeshConfig `pathNormalization`); left
    /// out of the dump at Istio's default.
    #[serde(skip_serializing_if = "PathNormalization::is_default")]
    pub path_normalization: PathNormalization,
}

/// MeshConfig `pathNormalization.normalization`, as Envoy's connection manager applies it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    /// Paths are routed and forwarded as received.
    None,
    /// RFC 3986 normalization (Envoy's `normalize_path`): dot segments resolved, `\` as `/`.
    #[default]
    Base,
    /// `BASE`, then `//` merged into `/`.
    MergeSlashes,
    /// `%2F` and `%5C` decoded first, then `MERGE_SLASHES`.
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    pub fn is_default(&self) -> bool {
        *self == PathNormalization::Base
    }
}

impl Snapshot {
    pub fn route_table(&self, name: &str) -> Option<&RouteTable> {
        self.route_tables.binary_search_by(|t| (*t.name).cmp(name)).ok().map(|i| &self.route_tables[i])
    }
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.binary_search_by(|c| (*c.name).cmp(name)).ok().map(|i| &self.clusters[i])
    }
    pub fn listeners_on_port(&self, port: u16) -> impl Iterator<Item = &Listener> {
        self.listeners.iter().filter(move |l| l.port == port)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeSummary {
    pub namespace: Str,
    pub labels: Vec<(Str, Str)>,
    pub role: crate::node::Role,
    /// `region/zone/subzone` of the node, for locality load balancing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<Str>,
}

/// Which address a listener binds: the node's gateway address (`--bind`) or
/// its mesh address (`--mesh-bind`). `weir run` maps these to IPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BindScope {
    Gateway,
    Mesh,
}

/// What a listener is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerRole {
    /// A Gateway server port.
    Gateway,
    /// A sidecar outbound port (traffic from local clients to a service port).
    SidecarOutbound,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Listener {
    /// `0.0.0.0_8080` style (bind scope and port).
    pub name: Str,
    pub role: ListenerRole,
    pub bind: BindScope,
    /// An explicit bind address from the config (Gateway `bind`), overriding the scope's address.
    pub address: Option<Str>,
    pub port: u16,
    /// Tried in order; the first whose match fits the connection wins.
    pub filter_chains: Vec<FilterChain>,
    /// Which objects asked for this listener (`Gateway ns/name`, `ServiceEntry ns/name`), for messages.
    pub origins: Vec<Str>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FilterChain {
    pub name: Str,
    pub matcher: ChainMatch,
    /// TLS termination settings (gateway SIMPLE/MUTUAL/OPTIONAL_MUTUAL servers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
    pub action: ChainAction,
}

/// Connection-level match of a filter chain.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChainMatch {
    /// SNI names (exact or `*.` wildcard); empty = any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<Str>,
    /// Destination IPs/CIDRs; empty = any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<Str>,
    /// Whether the chain expects a TLS ClientHello (`tls`) or plain bytes (`raw_buffer`); `None` = either.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Tls,
    RawBuffer,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainAction {
    /// HTTP connection manager routing by the named route table.
    Http { route_table: Str },
    /// TCP proxy: the first route whose match fits wins.
    Tcp { routes: Vec<TcpRoute> },
    /// AUTO_PASSTHROUGH: SNI `outbound_.PORT_.SUBSET_.HOST` names the cluster.
    AutoPassthrough,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TcpRoute {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<Str>,
    pub clusters: Vec<WeightedCluster>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<RouteOrigin>,
}

/// Gateway TLS termination, as configured (certificates are loaded by the data path).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServerTls {
    pub mode: Str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<Str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateFiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<Str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<Str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<Str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<Str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<Str>,
    pub min_protocol_version: Str,
    pub max_protocol_version: Str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<Str>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CertificateFiles {
    pub certificate: Str,
    pub private_key: Str,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteTable {
    /// `http.8080` (gateway HTTP port), `https.443.https.gw.ns` (terminated
    /// gateway server), or `9080` (sidecar outbound port).
    pub name: Str,
    /// Domains are unique across virtual hosts; lookup follows Envoy: exact,
    /// then longest `*.suffix`, then longest `prefix.*`, then `*`.
    pub virtual_hosts: Vec<VirtualHost>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VirtualHost {
    /// `reviews.default.svc.cluster.local:9080` style.
    pub name: Str,
    pub domains: Vec<Str>,
    pub routes: Vec<Route>,
    /// Gateway `httpsRedirect`: every plain-HTTP request gets a 301 to https.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub require_tls: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Route {
    /// VS rule name, `.`-joined with the match name when both are set.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub name: Str,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    /// `None`: no route timeout (Istio's default).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration::opt")]
    pub timeout: Option<std::time::Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
    /// The VS rule this route came from; `None` for generated default routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<RouteOrigin>,
}

/// Where a route came from, for `explain` and messages.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteOrigin {
    /// `VirtualService ns/name`.
    pub object: Str,
    /// Index of the rule in `http`/`tcp`/`tls`.
    pub rule: usize,
    /// Index of the match block within the rule (`None` for a rule without matches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matcher: Option<usize>,
    pub file: Str,
    pub line: u32,
}

/// AND of all conditions; empty = match everything.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RouteMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
    /// Including `:method`, `:authority` and `:scheme`; sorted by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryMatch>,
}

impl RouteMatch {
    /// Istio's `IsCatchAllRoute`: prefix `/` (or none) or regex `.*`, no header/query match.
    pub fn is_catch_all(&self) -> bool {
        let path_all = match &self.path {
            None => true,
            Some(PathMatch::Prefix(p)) => &**p == "/",
            Some(PathMatch::Regex(r)) => &**r == ".*",
            Some(PathMatch::Exact(_)) => false,
        };
        path_all && self.headers.is_empty() && self.query_params.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Exact(Str),
    Prefix(Str),
    /// RE2 syntax, full match.
    Regex(Str),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatcher {
    Exact(Str),
    Prefix(Str),
    /// Full match.
    Regex(Str),
    /// The header/parameter is present, any value.
    Present,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeaderMatch {
    /// Lower-case header name, or a pseudo-header (`:method`).
    pub name: Str,
    pub matcher: StringMatcher,
    /// `withoutHeaders`: the route matches when this does not (a missing header counts as empty).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryMatch {
    pub name: Str,
    pub matcher: StringMatcher,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// Forward to one or more clusters (weights relative).
    Forward {
        clusters: Vec<WeightedCluster>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rewrite: Option<Rewrite>,
    },
    Redirect(Redirect),
    DirectResponse {
        status: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<Str>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeightedCluster {
    /// Cluster name; may name a cluster that does not exist (the request then gets 503 `NC`).
    pub cluster: Str,
    pub weight: u32,
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rewrite {
    /// Replaces the matched prefix (or the whole path for exact/regex matches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<Str>,
    /// `uriRegexRewrite`: (RE2 pattern, substitution with `\1` groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<(Str, Str)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<Str>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Redirect {
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<Str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<RedirectPort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<Str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<Str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedirectPort {
    Explicit(u16),
    FromProtocolDefault,
    FromRequestPort,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration::opt")]
    pub per_try_timeout: Option<std::time::Duration>,
    /// Envoy `retry_on` conditions (`connect-failure`, `5xx`, `unavailable`, ...).
    pub retry_on: Vec<Str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retriable_status_codes: Vec<u16>,
    /// Base back-off (Envoy default 25 ms; max is 10x base).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration::opt")]
    pub backoff: Option<std::time::Duration>,
    pub retry_remote_localities: bool,
    /// Avoid hosts already tried (Envoy `previous_hosts` predicate).
    pub avoid_previous_hosts: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Fault {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultDelay {
    #[serde(serialize_with = "duration::one")]
    pub fixed_delay: std::time::Duration,
    /// Share of requests, 0.0 to 100.0.
    pub percentage: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultAbort {
    pub status: AbortStatus,
    pub percentage: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortStatus {
    Http(u16),
    /// gRPC status code number.
    Grpc(u32),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mirror {
    pub cluster: Str,
    /// Share of requests mirrored, 0.0 to 100.0.
    pub percentage: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Cors {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatcher>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<Str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<Str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<Str>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration::opt")]
    pub max_age: Option<std::time::Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// Forward preflights that match no origin upstream (Istio's default) or answer them locally.
    pub forward_unmatched_preflights: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HeaderOps {
    /// Overwrite or add (name, value-with-%VAR%).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(Str, Str)>,
    /// Append.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(Str, Str)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<Str>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// How a cluster finds its endpoints (ServiceEntry `resolution`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// Endpoints listed in the registry (STATIC, WorkloadEntries, Kubernetes endpoints).
    Static,
    /// Every address the name resolves to (DNS).
    StrictDns,
    /// The first address the name resolves to (DNS_ROUND_ROBIN).
    LogicalDns,
    /// Forward to the destination the client asked for (NONE).
    OriginalDst,
    /// Resolve the request's host per request (DYNAMIC_DNS).
    DynamicDns,
}

/// Upstream wire protocol, from the service port protocol and DR settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    /// Use whatever the client used (`useClientProtocol`, or sniffed ports).
    Auto,
    Tcp,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cluster {
    /// `outbound|PORT|SUBSET|FQDN`.
    pub name: Str,
    pub service: Str,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<Str>,
    pub discovery: Discovery,
    pub protocol: UpstreamProtocol,
    /// The endpoints this cluster balances over (already filtered by subset labels).
    pub endpoints: Arc<[Endpoint]>,
    /// The effective DestinationRule policy for this (port, subset), defaults filled in.
    pub policy: Arc<crate::policy::ClusterPolicy>,
    /// The DestinationRule(s) that contributed, `ns/name`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_rules: Vec<Str>,
}

impl Cluster {
    /// A `STATIC` HTTP/1.1 cluster `name` for `service`:`port` over `endpoints` with
    /// `policy`, no subset and no DestinationRule (for tests and benchmarks).
    pub fn new_static(
        name: impl Into<Str>,
        service: impl Into<Str>,
        port: u16,
        endpoints: impl Into<Arc<[Endpoint]>>,
        policy: crate::policy::ClusterPolicy,
    ) -> Cluster {
        Cluster {
            name: name.into(),
            service: service.into(),
            port,
            subset: None,
            discovery: Discovery::Static,
            protocol: UpstreamProtocol::Http1,
            endpoints: endpoints.into(),
            policy: Arc::new(policy),
            destination_rules: Vec::new(),
        }
    }
}

/// One upstream address of a cluster.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Endpoint {
    /// IP address, host name (DNS resolution) or `unix://` path (inline when short: no
    /// allocation for an IP address).
    pub address: weir_api::types::Address,
    pub port: u16,
    pub weight: u32,
    /// Locality, network and labels, shared with the registry instance it was made from.
    #[serde(flatten)]
    pub meta: Arc<EndpointMeta>,
}

impl Endpoint {
    /// An endpoint with no locality, network or labels.
    pub fn new(address: impl Into<weir_api::types::Address>, port: u16, weight: u32) -> Endpoint {
        Endpoint { address: address.into(), port, weight, meta: EndpointMeta::none() }
    }
}

/// What a workload instance carries besides its address and ports. One allocation per instance
/// that has any, shared by the snapshot endpoints made from it; instances without share one.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EndpointMeta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<Str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Str>,
    pub labels: Vec<(Str, Str)>,
    /// SPIFFE identity of the workload (`spiffe://<trust domain>/ns/<ns>/sa/<name>`), when it
    /// names one (registry; not printed with the snapshot).
    #[serde(skip)]
    pub service_account: Option<Str>,
}

impl EndpointMeta {
    /// The meta of instances without locality, network, labels or identity: one shared allocation.
    pub fn none() -> Arc<EndpointMeta> {
        static NONE: std::sync::OnceLock<Arc<EndpointMeta>> = std::sync::OnceLock::new();
        NONE.get_or_init(Arc::default).clone()
    }

    /// Whether all of `selector`'s key/values are among the labels.
    pub fn has_labels(&self, selector: &[(Str, Str)]) -> bool {
        selector.iter().all(|(k, v)| self.labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }

    /// `meta`, shared when it is empty.
    pub fn shared(meta: EndpointMeta) -> Arc<EndpointMeta> {
        if meta == EndpointMeta::default() { EndpointMeta::none() } else { Arc::new(meta) }
    }
}
