//! Effective upstream policy of a cluster: DestinationRule settings merged
//! per (port, subset) with Istio's defaults filled in.
//!
//! The translation follows `cluster_traffic_policy.go` (`applyTrafficPolicy`,
//! `applyConnectionPool`, `applyOutlierDetection`, `applyLoadBalancer`,
//! `ApplyRingHashLoadBalancer`), `cluster_tls.go` and
//! `loadbalancer.go GetEffectiveLbSetting`. Which DestinationRule fields reach
//! a cluster (port-level replacement, subset overrides) is decided by
//! [`PolicyParts`] (`util.go GetPortLevelTrafficPolicy`,
//! `MergeSubsetTrafficPolicy`, `destination_rule.go MergeTrafficPolicy`).
//!
//! A `ClusterPolicy` is shared through an `Arc` by every cluster with the
//! same effective settings, so it is hashable and comparable by value.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use serde::Serialize;
use weir_api::types as api;
use weir_api::types::{ClientTlsMode, H2UpgradePolicy, ProxyProtocolVersion, SimpleLb};

use crate::mesh::MeshConfig;
use crate::model::{Str, duration};

/// Envoy's circuit-breaker "unlimited" as Istio writes it (`math.MaxUint32`).
pub const UNLIMITED: u32 = u32::MAX;
/// Envoy's upstream idle timeout when nothing sets one.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Envoy's default ring-hash `minimum_ring_size` (Istio writes it for the deprecated field too).
pub const DEFAULT_MINIMUM_RING_SIZE: u64 = 1024;
/// Envoy's default Maglev table size.
pub const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65537;

/// An `f64` compared and hashed by its bits, so policies can be deduplicated.
#[derive(Clone, Copy, Debug, Default, Serialize)]
#[serde(transparent)]
pub struct F64(pub f64);

impl PartialEq for F64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for F64 {}
impl Hash for F64 {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// The effective DestinationRule policy of one cluster, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ClusterPolicy {
    pub load_balancer: LoadBalancer,
    pub connection_pool: ConnectionPool,
    /// `None`: no outlier detection (Istio's default; also disables locality failover).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS origination as configured; `None` when the DR sets no `tls` (weir does
    /// no auto-mTLS). Mode `DISABLE` is kept to record an explicit plaintext choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<UpstreamTls>>,
    /// HTTP CONNECT/POST tunnelling of TCP traffic (`trafficPolicy.tunnel`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Tunnel>,
    /// PROXY protocol header sent upstream (`trafficPolicy.proxyProtocol`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolVersion>,
}

impl Default for ClusterPolicy {
    /// Istio's defaults with the default mesh config (10s connect timeout, locality LB on).
    fn default() -> Self {
        ClusterPolicy {
            load_balancer: LoadBalancer {
                algorithm: LbAlgorithm::LeastRequest,
                locality: Some(LocalityLb::default()),
                warmup: None,
            },
            connection_pool: ConnectionPool::default(),
            outlier_detection: None,
            tls: None,
            tunnel: None,
            proxy_protocol: None,
        }
    }
}

impl ClusterPolicy {
    /// The policy of a cluster without DestinationRule: LEAST_REQUEST, the mesh
    /// connect timeout, unlimited circuit breakers, no outlier detection, the
    /// mesh locality setting.
    pub fn default_for(mesh: &MeshConfig) -> ClusterPolicy {
        ClusterPolicy::from_parts(&PolicyParts::default(), mesh)
    }

    /// Translates the selected DestinationRule components into the effective policy.
    pub fn from_parts(parts: &PolicyParts<'_>, mesh: &MeshConfig) -> ClusterPolicy {
        ClusterPolicy {
            load_balancer: LoadBalancer::from_settings(parts.load_balancer, mesh),
            connection_pool: ConnectionPool::from_settings(parts.connection_pool, parts.retry_budget, mesh),
            outlier_detection: parts.outlier_detection.map(OutlierDetection::from_settings),
            tls: parts.tls.map(|t| Box::new(UpstreamTls::from_settings(t))),
            tunnel: parts.tunnel.map(Tunnel::from_settings),
            proxy_protocol: parts.proxy_protocol.map(|p| p.version),
        }
    }

    /// Whether requests are balanced by a hash key (ring hash or Maglev); Istio
    /// then leaves out the `previous_hosts` retry predicate.
    pub fn is_consistent_hash(&self) -> bool {
        self.load_balancer.algorithm.is_hash()
    }

    /// Whether upstream connections use TLS (a `tls` block with a mode other than `DISABLE`).
    pub fn originates_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.mode != ClientTlsMode::Disable)
    }
}

// ---------------------------------------------------------------------------
// Selecting components: port-level replacement and subset overrides.

/// The components of a `TrafficPolicy` that reach one cluster, borrowed from
/// the DestinationRule. Istio's `TrafficPolicy` after `GetPortLevelTrafficPolicy`
/// and `MergeSubsetTrafficPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PolicyParts<'a> {
    pub load_balancer: Option<&'a api::LoadBalancerSettings>,
    pub connection_pool: Option<&'a api::ConnectionPoolSettings>,
    pub outlier_detection: Option<&'a api::OutlierDetection>,
    pub tls: Option<&'a api::ClientTlsSettings>,
    pub tunnel: Option<&'a api::TunnelSettings>,
    pub proxy_protocol: Option<&'a api::ProxyProtocol>,
    pub retry_budget: Option<&'a api::RetryBudget>,
}

impl<'a> PolicyParts<'a> {
    /// The top-level components of `policy` (port-level settings ignored).
    pub fn top_level(policy: &'a api::TrafficPolicy) -> PolicyParts<'a> {
        PolicyParts {
            load_balancer: policy.load_balancer.as_ref(),
            connection_pool: policy.connection_pool.as_ref(),
            outlier_detection: policy.outlier_detection.as_ref(),
            tls: policy.tls.as_ref(),
            tunnel: policy.tunnel.as_ref(),
            proxy_protocol: policy.proxy_protocol.as_ref(),
            retry_budget: policy.retry_budget.as_ref(),
        }
    }

    /// `GetPortLevelTrafficPolicy`: the first `portLevelSettings` entry for
    /// `port` replaces the four components wholesale (omitted ones fall back to
    /// defaults, and tunnel/proxyProtocol/retryBudget are dropped); else the
    /// top level. The flag says whether a port-level entry was used.
    pub fn for_port(policy: &'a api::TrafficPolicy, port: u16) -> (PolicyParts<'a>, bool) {
        match policy.port_level_settings.iter().find(|p| p.port.as_ref().is_some_and(|s| s.number == u32::from(port))) {
            Some(p) => (
                PolicyParts {
                    load_balancer: p.load_balancer.as_ref(),
                    connection_pool: p.connection_pool.as_ref(),
                    outlier_detection: p.outlier_detection.as_ref(),
                    tls: p.tls.as_ref(),
                    ..PolicyParts::default()
                },
                true,
            ),
            None => (PolicyParts::top_level(policy), false),
        }
    }

    /// `MergeSubsetTrafficPolicy`: the destination policy for `port`, overridden
    /// component by component by the subset policy for `port`. When the subset
    /// has a port-level entry, all four components come from it.
    pub fn effective(
        destination: Option<&'a api::TrafficPolicy>,
        subset: Option<&'a api::TrafficPolicy>,
        port: u16,
    ) -> PolicyParts<'a> {
        let base = destination.map(|p| PolicyParts::for_port(p, port).0);
        let Some(subset) = subset else {
            return base.unwrap_or_default();
        };
        let (over, has_port_level) = PolicyParts::for_port(subset, port);
        match base {
            None => over,
            Some(base) => base.overridden_by(&over, has_port_level),
        }
    }

    /// `MergeTrafficPolicy`: components set in `over` (or all four when
    /// `has_port_level`) replace ours; tunnel/proxyProtocol/retryBudget only when set.
    pub fn overridden_by(mut self, over: &PolicyParts<'a>, has_port_level: bool) -> PolicyParts<'a> {
        if over.connection_pool.is_some() || has_port_level {
            self.connection_pool = over.connection_pool;
        }
        if over.outlier_detection.is_some() || has_port_level {
            self.outlier_detection = over.outlier_detection;
        }
        if over.load_balancer.is_some() || has_port_level {
            self.load_balancer = over.load_balancer;
        }
        if over.tls.is_some() || has_port_level {
            self.tls = over.tls;
        }
        if over.tunnel.is_some() {
            self.tunnel = over.tunnel;
        }
        if over.proxy_protocol.is_some() {
            self.proxy_protocol = over.proxy_protocol;
        }
        if over.retry_budget.is_some() {
            self.retry_budget = over.retry_budget;
        }
        self
    }

    /// Addresses of the selected components: equal identities give equal
    /// policies (for caching while the borrowed rules are alive).
    pub fn identity(&self) -> [usize; 7] {
        fn addr<T>(r: Option<&T>) -> usize {
            r.map_or(0, |r| r as *const T as usize)
        }
        [
            addr(self.load_balancer),
            addr(self.connection_pool),
            addr(self.outlier_detection),
            addr(self.tls),
            addr(self.tunnel),
            addr(self.proxy_protocol),
            addr(self.retry_budget),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.identity() == [0; 7]
    }
}

// ---------------------------------------------------------------------------
// Load balancing.

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct LoadBalancer {
    pub algorithm: LbAlgorithm,
    /// Locality-aware load balancing; `None` when disabled (DR or mesh `enabled: false`).
    /// Failover priorities only apply when the cluster has outlier detection.
    pub locality: Option<LocalityLb>,
    /// Slow start for LEAST_REQUEST and ROUND_ROBIN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
}

impl LoadBalancer {
    fn from_settings(lb: Option<&api::LoadBalancerSettings>, mesh: &MeshConfig) -> LoadBalancer {
        let locality = locality_for(lb, mesh);
        let Some(lb) = lb else {
            return LoadBalancer { algorithm: LbAlgorithm::LeastRequest, locality, warmup: None };
        };
        let (algorithm, warmup) = match &lb.consistent_hash {
            Some(ch) => (LbAlgorithm::from_consistent_hash(ch), None),
            None => {
                let algorithm = match lb.simple.unwrap_or_default() {
                    SimpleLb::Random => LbAlgorithm::Random,
                    SimpleLb::RoundRobin => LbAlgorithm::RoundRobin,
                    SimpleLb::Passthrough => LbAlgorithm::Passthrough,
                    // LEAST_CONN is deprecated and mapped to LEAST_REQUEST; UNSPECIFIED is the default.
                    SimpleLb::LeastConn | SimpleLb::LeastRequest | SimpleLb::Unspecified => LbAlgorithm::LeastRequest,
                };
                let warmup = match algorithm {
                    LbAlgorithm::LeastRequest | LbAlgorithm::RoundRobin => Warmup::from_settings(lb),
                    _ => None,
                };
                (algorithm, warmup)
            }
        };
        LoadBalancer { algorithm, locality, warmup }
    }

    /// The hash key of a consistent-hash algorithm.
    pub fn hash_key(&self) -> Option<&HashKey> {
        match &self.algorithm {
            LbAlgorithm::RingHash { hash_key, .. } | LbAlgorithm::Maglev { hash_key, .. } => hash_key.as_ref(),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LbAlgorithm {
    /// Istio's default (also for `LEAST_CONN` and `UNSPECIFIED`).
    LeastRequest,
    RoundRobin,
    Random,
    /// Forward to the address the client asked for (the cluster becomes ORIGINAL_DST).
    Passthrough,
    RingHash {
        #[serde(skip_serializing_if = "Option::is_none")]
        hash_key: Option<HashKey>,
        minimum_ring_size: u64,
    },
    Maglev {
        #[serde(skip_serializing_if = "Option::is_none")]
        hash_key: Option<HashKey>,
        table_size: u64,
    },
}

impl LbAlgorithm {
    pub fn is_hash(&self) -> bool {
        matches!(self, LbAlgorithm::RingHash { .. } | LbAlgorithm::Maglev { .. })
    }

    fn from_consistent_hash(ch: &api::ConsistentHashLb) -> LbAlgorithm {
        let hash_key = HashKey::from_settings(ch);
        if let Some(m) = &ch.maglev {
            let table_size = if m.table_size == 0 { DEFAULT_MAGLEV_TABLE_SIZE } else { m.table_size };
            return LbAlgorithm::Maglev { hash_key, table_size };
        }
        let size = match &ch.ring_hash {
            Some(r) => r.minimum_ring_size,
            None => ch.minimum_ring_size,
        };
        let minimum_ring_size = if size == 0 { DEFAULT_MINIMUM_RING_SIZE } else { size };
        LbAlgorithm::RingHash { hash_key, minimum_ring_size }
    }
}

/// What a consistent-hash load balancer hashes (applied as the route's hash policy).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    Header(Str),
    Cookie(Box<HashCookie>),
    SourceIp,
    QueryParameter(Str),
}

impl HashKey {
    fn from_settings(ch: &api::ConsistentHashLb) -> Option<HashKey> {
        if let Some(h) = &ch.http_header_name {
            return Some(HashKey::Header(h.to_ascii_lowercase().into()));
        }
        if let Some(c) = &ch.http_cookie {
            return Some(HashKey::Cookie(Box::new(HashCookie {
                name: c.name.as_str().into(),
                path: non_empty(&c.path),
                ttl: c.ttl.map(|d| d.to_std()),
                attributes: c.attributes.iter().map(|a| (a.name.as_str().into(), a.value.as_str().into())).collect(),
            })));
        }
        if ch.use_source_ip == Some(true) {
            return Some(HashKey::SourceIp);
        }
        ch.http_query_parameter_name.as_ref().map(|q| HashKey::QueryParameter(q.as_str().into()))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct HashCookie {
    pub name: Str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<Str>,
    /// `None`: the cookie is only hashed when present, never generated.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration::opt")]
    pub ttl: Option<Duration>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<(Str, Str)>,
}

/// Envoy slow start (`warmup`, or the deprecated `warmupDurationSecs`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Warmup {
    #[serde(serialize_with = "duration::one")]
    pub duration: Duration,
    /// Default 1.0 (linear ramp).
    pub aggression: F64,
    /// Default 10 (%), Envoy's.
    pub minimum_percent: F64,
}

impl Warmup {
    fn from_settings(lb: &api::LoadBalancerSettings) -> Option<Warmup> {
        if let Some(w) = &lb.warmup {
            return Some(Warmup {
                duration: w.duration.map(|d| d.to_std()).unwrap_or_default(),
                aggression: F64(w.aggression.unwrap_or(1.0)),
                minimum_percent: F64(w.minimum_percent.unwrap_or(10.0)),
            });
        }
        lb.warmup_duration_secs.map(|d| Warmup {
            duration: d.to_std(),
            aggression: F64(1.0),
            minimum_percent: F64(10.0),
        })
    }
}

/// Locality-aware (or zone-aware) load balancing, `loadbalancer.go GetEffectiveLbSetting`:
/// the DR's setting replaces the mesh's wholesale.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct LocalityLb {
    /// From `zoneAwareLbSetting` (region-bucketed priorities; failover always on).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub zone_aware: bool,
    /// `distribute`: (from locality, [(to locality, weight)]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<(Str, Vec<(Str, u32)>)>,
    /// `failover`: (from region, to region).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<(Str, Str)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<Str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_cluster_size: Option<u64>,
}

fn locality_for(lb: Option<&api::LoadBalancerSettings>, mesh: &MeshConfig) -> Option<LocalityLb> {
    if let Some(za) = lb.and_then(|l| l.zone_aware_lb_setting.as_ref()) {
        if za.enabled == Some(false) {
            return None;
        }
        return Some(LocalityLb {
            zone_aware: true,
            distribute: Vec::new(),
            failover: za.failover.iter().map(|f| (f.from.as_str().into(), f.to.as_str().into())).collect(),
            failover_priority: za.failover_priority.iter().map(|s| s.as_str().into()).collect(),
            min_cluster_size: za.min_cluster_size,
        });
    }
    let setting = lb.and_then(|l| l.locality_lb_setting.as_ref()).or(mesh.locality_lb_setting.as_ref())?;
    if setting.enabled == Some(false) {
        return None;
    }
    Some(LocalityLb {
        zone_aware: false,
        distribute: setting
            .distribute
            .iter()
            .map(|d| (d.from.as_str().into(), d.to.iter().map(|(k, v)| (k.as_str().into(), *v)).collect()))
            .collect(),
        failover: setting.failover.iter().map(|f| (f.from.as_str().into(), f.to.as_str().into())).collect(),
        failover_priority: setting.failover_priority.iter().map(|s| s.as_str().into()).collect(),
        min_cluster_size: None,
    })
}

// ---------------------------------------------------------------------------
// Connection pool and circuit breakers.

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ConnectionPool {
    /// `tcp.connectTimeout`, else the mesh `connectTimeout`.
    #[serde(serialize_with = "duration::one")]
    pub connect_timeout: Duration,
    /// Circuit breakers (`2^32-1` = unlimited, Istio's default).
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    /// Retry budget circuit breaker (`trafficPolicy.retryBudget`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// Upstream HTTP connection idle timeout: `http.idleTimeout`, else
    /// `tcp.idleTimeout`, else 1h.
    #[serde(serialize_with = "duration::one")]
    pub idle_timeout: Duration,
    /// `tcp.idleTimeout`, else 1h (the TCP proxy's idle timeout; note Istio
    /// reads it from the DR's top-level policy for TCP listeners).
    #[serde(serialize_with = "duration::one")]
    pub tcp_idle_timeout: Duration,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration::opt")]
    pub max_connection_duration: Option<Duration>,
    /// `None`: unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// HTTP/2 upstreams only; `None`: Envoy's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_keepalive: Option<Http2Keepalive>,
    /// `None`: no SO_KEEPALIVE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `DEFAULT` follows the mesh (`DO_NOT_UPGRADE`).
    pub h2_upgrade_policy: H2UpgradePolicy,
    /// Upstream speaks whatever HTTP version the client spoke.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub use_client_protocol: bool,
}

impl Default for ConnectionPool {
    fn default() -> Self {
        ConnectionPool {
            connect_timeout: Duration::from_secs(10),
            max_connections: UNLIMITED,
            max_pending_requests: UNLIMITED,
            max_requests: UNLIMITED,
            max_retries: UNLIMITED,
            retry_budget: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            tcp_idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connection_duration: None,
            max_requests_per_connection: None,
            max_concurrent_streams: None,
            http2_keepalive: None,
            tcp_keepalive: None,
            h2_upgrade_policy: H2UpgradePolicy::Default,
            use_client_protocol: false,
        }
    }
}

/// `v > 0` as a `u32` (Istio treats zero and negative proto ints as unset).
fn positive(v: i32) -> Option<u32> {
    u32::try_from(v).ok().filter(|v| *v > 0)
}

impl ConnectionPool {
    fn from_settings(
        settings: Option<&api::ConnectionPoolSettings>,
        retry_budget: Option<&api::RetryBudget>,
        mesh: &MeshConfig,
    ) -> ConnectionPool {
        let mut p = ConnectionPool {
            connect_timeout: mesh.connect_timeout.to_std(),
            retry_budget: retry_budget.map(RetryBudget::from_settings),
            ..ConnectionPool::default()
        };
        let Some(settings) = settings else {
            return p;
        };
        let mut idle = None;
        if let Some(http) = &settings.http {
            if let Some(v) = positive(http.http2_max_requests) {
                p.max_requests = v;
            }
            if let Some(v) = positive(http.http1_max_pending_requests) {
                p.max_pending_requests = v;
            }
            if let Some(v) = positive(http.max_retries) {
                p.max_retries = v;
            }
            idle = http.idle_timeout;
            p.max_requests_per_connection = positive(http.max_requests_per_connection);
            p.max_concurrent_streams = positive(http.max_concurrent_streams);
            p.http2_keepalive = http.http2_keep_alive.as_ref().map(|k| Http2Keepalive {
                interval: k.interval.map(|d| d.to_std()),
                timeout: k.timeout.map(|d| d.to_std()),
            });
            p.h2_upgrade_policy = http.h2_upgrade_policy;
            p.use_client_protocol = http.use_client_protocol;
        }
        if let Some(tcp) = &settings.tcp {
            if let Some(t) = tcp.connect_timeout {
                p.connect_timeout = t.to_std();
            }
            if let Some(v) = positive(tcp.max_connections) {
                p.max_connections = v;
            }
            p.max_connection_duration = tcp.max_connection_duration.map(|d| d.to_std());
            if let Some(t) = tcp.idle_timeout {
                p.tcp_idle_timeout = t.to_std();
            }
            idle = idle.or(tcp.idle_timeout);
            p.tcp_keepalive = tcp.tcp_keepalive.as_ref().map(|k| TcpKeepalive {
                probes: (k.probes > 0).then_some(k.probes),
                // Envoy takes whole seconds (Istio truncates).
                time: k.time.map(|d| Duration::from_secs(d.to_std().as_secs())),
                interval: k.interval.map(|d| Duration::from_secs(d.to_std().as_secs())),
            });
        }
        if let Some(t) = idle {
            p.idle_timeout = t.to_std();
        }
        p
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct RetryBudget {
    /// Share of active requests that may be retries (default 20%).
    pub percent: F64,
    /// Retries always allowed concurrently (default 3).
    pub min_retry_concurrency: u32,
    /// Window of the budget (Envoy default 10s).
    #[serde(serialize_with = "duration::one")]
    pub interval: Duration,
}

impl RetryBudget {
    fn from_settings(r: &api::RetryBudget) -> RetryBudget {
        RetryBudget {
            percent: F64(r.percent.unwrap_or(20.0)),
            min_retry_concurrency: if r.min_retry_concurrency > 0 { r.min_retry_concurrency } else { 3 },
            interval: r.budget_interval.map_or(Duration::from_secs(10), |d| d.to_std()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Http2Keepalive {
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration::opt")]
    pub interval: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration::opt")]
    pub timeout: Option<Duration>,
}

/// SO_KEEPALIVE settings; `None` fields keep the OS defaults.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct TcpKeepalive {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration::opt")]
    pub time: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration::opt")]
    pub interval: Option<Duration>,
}

// ---------------------------------------------------------------------------
// Outlier detection.

/// Passive health checking, as Istio configures Envoy (success-rate
/// ejection off; unset fields take Envoy's defaults).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct OutlierDetection {
    /// Consecutive 5xx (or, with `http_error_codes`, listed codes) before
    /// ejection; default 5; 0 = not enforced.
    pub consecutive_5xx_errors: u32,
    /// Consecutive 502/503/504 before ejection; 0 (default) = not enforced.
    pub consecutive_gateway_errors: u32,
    /// With `splitExternalLocalOriginErrors`: consecutive locally originated
    /// failures (connect errors, timeouts) before ejection (default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// Default 10s.
    #[serde(serialize_with = "duration::one")]
    pub interval: Duration,
    /// Default 30s; an endpoint is ejected for base x number of ejections.
    #[serde(serialize_with = "duration::one")]
    pub base_ejection_time: Duration,
    /// Default 10 (%).
    pub max_ejection_percent: u32,
    /// Envoy `healthy_panic_threshold` (%): `minHealthPercent`, default 0 =
    /// panic mode disabled (Envoy's own default, 50, only for negative values).
    pub min_health_percent: u32,
    /// `outlierDetectionHttpErrorCodes`: the status codes that count as errors instead of 5xx.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_error_codes: Vec<u32>,
}

impl OutlierDetection {
    fn from_settings(o: &api::OutlierDetection) -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx_errors: o.consecutive_5xx_errors.unwrap_or(5),
            consecutive_gateway_errors: o.consecutive_gateway_errors.unwrap_or(0),
            consecutive_local_origin_failures: o
                .split_external_local_origin_errors
                .then(|| o.consecutive_local_origin_failures.filter(|v| *v > 0).unwrap_or(5)),
            interval: o.interval.map_or(Duration::from_secs(10), |d| d.to_std()),
            base_ejection_time: o.base_ejection_time.map_or(Duration::from_secs(30), |d| d.to_std()),
            max_ejection_percent: positive(o.max_ejection_percent).unwrap_or(10),
            min_health_percent: u32::try_from(o.min_health_percent).unwrap_or(50),
            http_error_codes: o.outlier_detection_http_error_codes.clone(),
        }
    }
}

// ---------------------------------------------------------------------------
// TLS origination, tunnelling.

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct UpstreamTls {
    pub mode: ClientTlsMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<Str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<Str>,
    /// `None` with SIMPLE/MUTUAL: the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<Str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<Str>,
    /// `None`: SIMPLE/MUTUAL send the request's host (`auto_sni`); ISTIO_MUTUAL the cluster name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<Str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<Str>,
    /// Skip server certificate verification (`insecureSkipVerify`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<Str>,
    /// SIMPLE/MUTUAL without `sni`: SNI from the request's host (Envoy `auto_sni`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auto_sni: bool,
    /// SIMPLE/MUTUAL without `sni` and SANs (and verification on): the
    /// certificate must match the SNI sent (Envoy `auto_san_validation`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auto_san_validation: bool,
}

impl UpstreamTls {
    fn from_settings(t: &api::ClientTlsSettings) -> UpstreamTls {
        let originating = matches!(t.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual);
        let insecure_skip_verify = t.insecure_skip_verify == Some(true);
        let auto_sni = originating && t.sni.is_empty();
        UpstreamTls {
            mode: t.mode,
            client_certificate: non_empty(&t.client_certificate),
            private_key: non_empty(&t.private_key),
            ca_certificates: non_empty(&t.ca_certificates),
            credential_name: non_empty(&t.credential_name),
            sni: non_empty(&t.sni),
            subject_alt_names: t.subject_alt_names.iter().map(|s| s.as_str().into()).collect(),
            insecure_skip_verify,
            ca_crl: non_empty(&t.ca_crl),
            auto_sni,
            auto_san_validation: auto_sni && t.subject_alt_names.is_empty() && !insecure_skip_verify,
        }
    }
}

/// `trafficPolicy.tunnel`: TCP carried over an HTTP tunnel to `target_host:target_port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Tunnel {
    /// `CONNECT` (default) or `POST`.
    pub protocol: Str,
    pub target_host: Str,
    pub target_port: u32,
}

impl Tunnel {
    fn from_settings(t: &api::TunnelSettings) -> Tunnel {
        Tunnel {
            protocol: if t.protocol.is_empty() { "CONNECT".into() } else { t.protocol.to_ascii_uppercase().into() },
            target_host: t.target_host.as_str().into(),
            target_port: t.target_port,
        }
    }
}

fn non_empty(s: &str) -> Option<Str> {
    (!s.is_empty()).then(|| Str::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::types::TrafficPolicy;

    fn tp(yaml: &str) -> TrafficPolicy {
        let v: serde_json::Value = serde_json::from_str(yaml).expect("json");
        serde_json::from_value(v).expect("traffic policy")
    }

    fn policy(t: &TrafficPolicy, port: u16) -> ClusterPolicy {
        ClusterPolicy::from_parts(&PolicyParts::effective(Some(t), None, port), &MeshConfig::default())
    }

    #[test]
    fn defaults_are_istios() {
        let p = ClusterPolicy::default_for(&MeshConfig::default());
        assert_eq!(p, ClusterPolicy::default());
        assert_eq!(p.load_balancer.algorithm, LbAlgorithm::LeastRequest);
        assert_eq!(p.connection_pool.connect_timeout, Duration::from_secs(10));
        let cp = &p.connection_pool;
        assert_eq!([cp.max_connections, cp.max_pending_requests, cp.max_requests, cp.max_retries], [u32::MAX; 4]);
        assert_eq!(cp.idle_timeout, Duration::from_secs(3600));
        assert_eq!(cp.h2_upgrade_policy, H2UpgradePolicy::Default);
        assert!(p.outlier_detection.is_none());
        assert!(p.tls.is_none());
        assert_eq!(p.load_balancer.locality, Some(LocalityLb::default()));
    }

    #[test]
    fn serializes_durations_as_proto_json() {
        let v = serde_json::to_value(ClusterPolicy::default()).expect("json");
        assert_eq!(v["connection_pool"]["connect_timeout"], "10s");
        assert_eq!(v["connection_pool"]["idle_timeout"], "3600s");
        assert_eq!(v["load_balancer"]["algorithm"], "least_request");
        assert!(v.get("outlier_detection").is_none() && v.get("tls").is_none());
        let p = policy(&tp(r#"{"outlierDetection": {"interval": "1.5s"}}"#), 80);
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(v["outlier_detection"]["interval"], "1.5s");
    }

    #[test]
    fn mesh_connect_timeout_and_locality_switch() {
        let mesh =
            MeshConfig::parse("connectTimeout: 2s\nlocalityLbSetting: {enabled: false}\n", "m.yaml").expect("mesh");
        let p = ClusterPolicy::default_for(&mesh);
        assert_eq!(p.connection_pool.connect_timeout, Duration::from_secs(2));
        assert_eq!(p.load_balancer.locality, None);
        // A DR locality setting replaces the mesh's, and can turn it back on.
        let t = tp(r#"{"loadBalancer": {"localityLbSetting": {"failover": [{"from": "us", "to": "eu"}]}}}"#);
        let p = ClusterPolicy::from_parts(&PolicyParts::top_level(&t), &mesh);
        let loc = p.load_balancer.locality.expect("locality");
        assert_eq!(loc.failover, vec![("us".into(), "eu".into())]);
    }

    #[test]
    fn connection_pool_fills_only_positive_values() {
        let t = tp(r#"{"connectionPool": {"tcp": {"maxConnections": 0, "connectTimeout": "3s", "idleTimeout": "5m",
                 "tcpKeepalive": {"time": "7.5s"}},
               "http": {"http1MaxPendingRequests": 100, "http2MaxRequests": -1, "maxRetries": 4,
                 "maxRequestsPerConnection": 1, "idleTimeout": "30s", "useClientProtocol": true}}}"#);
        let cp = policy(&t, 80).connection_pool;
        assert_eq!(cp.max_connections, u32::MAX);
        assert_eq!(cp.max_pending_requests, 100);
        assert_eq!(cp.max_requests, u32::MAX);
        assert_eq!(cp.max_retries, 4);
        assert_eq!(cp.connect_timeout, Duration::from_secs(3));
        assert_eq!(cp.idle_timeout, Duration::from_secs(30), "http.idleTimeout wins over tcp's");
        assert_eq!(cp.tcp_idle_timeout, Duration::from_secs(300));
        assert_eq!(cp.max_requests_per_connection, Some(1));
        assert!(cp.use_client_protocol);
        let ka = cp.tcp_keepalive.expect("keepalive");
        assert_eq!((ka.probes, ka.time, ka.interval), (None, Some(Duration::from_secs(7)), None));
        // tcp.idleTimeout is the HTTP idle timeout when http sets none.
        let t = tp(r#"{"connectionPool": {"tcp": {"idleTimeout": "5m"}}}"#);
        assert_eq!(policy(&t, 80).connection_pool.idle_timeout, Duration::from_secs(300));
    }

    #[test]
    fn retry_budget_defaults() {
        let t = tp(r#"{"retryBudget": {}}"#);
        let rb = policy(&t, 80).connection_pool.retry_budget.expect("budget");
        assert_eq!(rb, RetryBudget { percent: F64(20.0), min_retry_concurrency: 3, interval: Duration::from_secs(10) });
    }

    #[test]
    fn outlier_defaults_when_present() {
        let o = policy(&tp(r#"{"outlierDetection": {}}"#), 80).outlier_detection.expect("outlier");
        assert_eq!(o.consecutive_5xx_errors, 5);
        assert_eq!(o.consecutive_gateway_errors, 0);
        assert_eq!(o.interval, Duration::from_secs(10));
        assert_eq!(o.base_ejection_time, Duration::from_secs(30));
        assert_eq!(o.max_ejection_percent, 10);
        assert_eq!(o.min_health_percent, 0, "panic threshold disabled");
        assert_eq!(o.consecutive_local_origin_failures, None);
        let o = policy(
            &tp(r#"{"outlierDetection": {"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 2,
                     "interval": "1s", "baseEjectionTime": "2m", "maxEjectionPercent": 50, "minHealthPercent": 30,
                     "splitExternalLocalOriginErrors": true, "outlierDetectionHttpErrorCodes": [500, 503]}}"#),
            80,
        )
        .outlier_detection
        .expect("outlier");
        assert_eq!(o.consecutive_5xx_errors, 0, "explicit 0 disables 5xx ejection");
        assert_eq!(o.consecutive_gateway_errors, 2);
        assert_eq!(o.interval, Duration::from_secs(1));
        assert_eq!(o.base_ejection_time, Duration::from_secs(120));
        assert_eq!(o.max_ejection_percent, 50);
        assert_eq!(o.min_health_percent, 30);
        assert_eq!(o.consecutive_local_origin_failures, Some(5));
        assert_eq!(o.http_error_codes, vec![500, 503]);
    }

    #[test]
    fn load_balancer_algorithms() {
        let lb = |j: &str| policy(&tp(&format!(r#"{{"loadBalancer": {j}}}"#)), 80).load_balancer;
        assert_eq!(lb(r#"{"simple": "ROUND_ROBIN"}"#).algorithm, LbAlgorithm::RoundRobin);
        assert_eq!(lb(r#"{"simple": "LEAST_CONN"}"#).algorithm, LbAlgorithm::LeastRequest);
        assert_eq!(lb(r#"{"simple": "RANDOM"}"#).algorithm, LbAlgorithm::Random);
        assert_eq!(lb(r#"{"simple": "PASSTHROUGH"}"#).algorithm, LbAlgorithm::Passthrough);
        assert_eq!(
            lb(r#"{"consistentHash": {"httpHeaderName": "X-User"}}"#).algorithm,
            LbAlgorithm::RingHash { hash_key: Some(HashKey::Header("x-user".into())), minimum_ring_size: 1024 }
        );
        assert_eq!(
            lb(r#"{"consistentHash": {"useSourceIp": true, "maglev": {}}}"#).algorithm,
            LbAlgorithm::Maglev { hash_key: Some(HashKey::SourceIp), table_size: 65537 }
        );
        assert_eq!(
            lb(r#"{"consistentHash": {"httpQueryParameterName": "u", "ringHash": {"minimumRingSize": 64}}}"#).algorithm,
            LbAlgorithm::RingHash { hash_key: Some(HashKey::QueryParameter("u".into())), minimum_ring_size: 64 }
        );
        let cookie = lb(r#"{"consistentHash": {"httpCookie": {"name": "s", "ttl": "10s"}, "minimumRingSize": 8}}"#);
        assert!(
            matches!(&cookie.algorithm, LbAlgorithm::RingHash { minimum_ring_size: 8, hash_key: Some(HashKey::Cookie(c)) }
            if &*c.name == "s" && c.ttl == Some(Duration::from_secs(10)))
        );
        let w =
            lb(r#"{"simple": "ROUND_ROBIN", "warmup": {"duration": "60s", "aggression": 2}}"#).warmup.expect("warmup");
        assert_eq!(w, Warmup { duration: Duration::from_secs(60), aggression: F64(2.0), minimum_percent: F64(10.0) });
        let w = lb(r#"{"warmupDurationSecs": "30s"}"#).warmup.expect("deprecated warmup");
        assert_eq!(w.duration, Duration::from_secs(30));
        assert_eq!(lb(r#"{"simple": "RANDOM", "warmupDurationSecs": "30s"}"#).warmup, None);
    }

    #[test]
    fn tls_settings() {
        let p = policy(&tp(r#"{"tls": {"mode": "SIMPLE", "caCertificates": "/ca.pem"}}"#), 80);
        let t = p.tls.as_ref().expect("tls");
        assert!(p.originates_tls());
        assert_eq!(t.ca_certificates.as_deref(), Some("/ca.pem"));
        assert!(t.auto_sni && t.auto_san_validation);
        let p = policy(&tp(r#"{"tls": {"mode": "MUTUAL", "sni": "a.com", "insecureSkipVerify": true}}"#), 80);
        let t = p.tls.as_ref().expect("tls");
        assert!(!t.auto_sni && !t.auto_san_validation && t.insecure_skip_verify);
        let p = policy(&tp(r#"{"tls": {"mode": "DISABLE"}}"#), 80);
        assert!(p.tls.is_some() && !p.originates_tls());
    }

    #[test]
    fn tunnel_and_proxy_protocol() {
        let p = policy(
            &tp(r#"{"tunnel": {"targetHost": "1.2.3.4", "targetPort": 443}, "proxyProtocol": {"version": "V2"}}"#),
            80,
        );
        assert_eq!(
            p.tunnel,
            Some(Tunnel { protocol: "CONNECT".into(), target_host: "1.2.3.4".into(), target_port: 443 })
        );
        assert_eq!(p.proxy_protocol, Some(ProxyProtocolVersion::V2));
    }

    #[test]
    fn port_level_replaces_the_four_components_and_drops_the_rest() {
        let t = tp(r#"{"loadBalancer": {"simple": "RANDOM"}, "outlierDetection": {}, "tls": {"mode": "SIMPLE"},
                "connectionPool": {"tcp": {"maxConnections": 7}},
                "tunnel": {"targetHost": "h", "targetPort": 1}, "proxyProtocol": {}, "retryBudget": {},
                "portLevelSettings": [{"port": {"number": 9080}, "loadBalancer": {"simple": "ROUND_ROBIN"}},
                                      {"port": {"number": 9080}, "loadBalancer": {"simple": "RANDOM"}}]}"#);
        let p = policy(&t, 9080);
        assert_eq!(p.load_balancer.algorithm, LbAlgorithm::RoundRobin, "first entry for the port");
        assert_eq!(p.connection_pool.max_connections, u32::MAX, "omitted: default, not the top level");
        assert!(p.outlier_detection.is_none() && p.tls.is_none());
        assert!(p.tunnel.is_none() && p.proxy_protocol.is_none() && p.connection_pool.retry_budget.is_none());
        let p = policy(&t, 8080);
        assert_eq!(p.load_balancer.algorithm, LbAlgorithm::Random);
        assert_eq!(p.connection_pool.max_connections, 7);
        assert!(p.tunnel.is_some() && p.proxy_protocol.is_some() && p.connection_pool.retry_budget.is_some());
    }

    #[test]
    fn subset_overrides_component_by_component() {
        let dr = tp(r#"{"loadBalancer": {"simple": "RANDOM"}, "connectionPool": {"tcp": {"maxConnections": 7}},
                "outlierDetection": {"interval": "1s"}, "tunnel": {"targetHost": "h", "targetPort": 1}}"#);
        // Whole connectionPool replaced (no deep merge); the rest inherited.
        let sub = tp(r#"{"connectionPool": {"http": {"maxRetries": 3}}}"#);
        let p = ClusterPolicy::from_parts(&PolicyParts::effective(Some(&dr), Some(&sub), 80), &MeshConfig::default());
        assert_eq!(p.load_balancer.algorithm, LbAlgorithm::Random);
        assert_eq!(p.connection_pool.max_connections, u32::MAX);
        assert_eq!(p.connection_pool.max_retries, 3);
        assert_eq!(p.outlier_detection.expect("inherited").interval, Duration::from_secs(1));
        assert!(p.tunnel.is_some());
        // No DR policy: the subset's alone.
        let p = ClusterPolicy::from_parts(&PolicyParts::effective(None, Some(&sub), 80), &MeshConfig::default());
        assert_eq!(p.connection_pool.max_retries, 3);
    }

    #[test]
    fn subset_port_level_entry_replaces_all_four() {
        let dr = tp(
            r#"{"loadBalancer": {"simple": "RANDOM"}, "outlierDetection": {}, "tunnel": {"targetHost": "h", "targetPort": 1}}"#,
        );
        let sub = tp(r#"{"tls": {"mode": "SIMPLE"},
                "portLevelSettings": [{"port": {"number": 80}, "connectionPool": {"tcp": {"maxConnections": 2}}}]}"#);
        let p = ClusterPolicy::from_parts(&PolicyParts::effective(Some(&dr), Some(&sub), 80), &MeshConfig::default());
        assert_eq!(p.connection_pool.max_connections, 2);
        assert_eq!(p.load_balancer.algorithm, LbAlgorithm::LeastRequest, "lb reset to default");
        assert!(p.outlier_detection.is_none() && p.tls.is_none(), "outlier/tls reset, subset top-level tls ignored");
        assert!(p.tunnel.is_some(), "tunnel of the DR kept");
        // Another port: the subset's top level overrides the DR's.
        let p = ClusterPolicy::from_parts(&PolicyParts::effective(Some(&dr), Some(&sub), 81), &MeshConfig::default());
        assert!(p.tls.is_some());
        assert_eq!(p.load_balancer.algorithm, LbAlgorithm::Random);
        assert!(p.outlier_detection.is_some());
    }

    #[test]
    fn identity_tracks_the_selected_components() {
        let t = tp(r#"{"loadBalancer": {"simple": "RANDOM"}}"#);
        let a = PolicyParts::effective(Some(&t), None, 1);
        let b = PolicyParts::effective(Some(&t), None, 2);
        assert_eq!(a.identity(), b.identity());
        assert!(!a.is_empty());
        assert!(PolicyParts::default().is_empty());
    }
}
