//! Outlier detection (passive health checking) as Istio configures Envoy:
//! consecutive errors eject an endpoint for `baseEjectionTime` x its number
//! of ejections, within `maxEjectionPercent` of the cluster.
//!
//! What counts (one classifier, [`Observed`], also used by retries and metrics):
//!
//! - An upstream response counts as an error when it is a 5xx, or one of
//!   `outlierDetectionHttpErrorCodes` when set; for gRPC a trailers-only
//!   response's `grpc-status` is mapped to its HTTP status first (Envoy's
//!   `grpcToHttpStatus`). 502, 503 and 504 are also gateway errors. Any other
//!   response resets the counters.
//! - Locally originated failures: connect failures and timeouts. Without
//!   `splitExternalLocalOriginErrors` they count as 503 and 504 responses
//!   (Envoy's mapping); with it they only count towards
//!   `consecutiveLocalOriginFailures`, and an upstream response (or a
//!   successful TCP connect) resets that counter.
//! - An upstream reset before response headers counts as a 503.
//!
//! Detectors: `consecutive5xxErrors` (default 5; 0 disables it),
//! `consecutiveGatewayErrors` (default 0 = off), `consecutiveLocalOriginFailures`
//! (with the split; default 5). An endpoint is ejected only while
//! `100 * (ejected + 1) / endpoints <= maxEjectionPercent` (Envoy without
//! `always_eject_one_host`, which Istio does not set); otherwise
//! `ejections_overflow` counts the refusal.
//!
//! Time: ejection lasts `min(baseEjectionTime * n, max(baseEjectionTime, 300s))`
//! for the n-th ejection and ends at the next `interval` tick after that, as
//! Envoy's interval timer returns hosts; each interval an endpoint stays
//! healthy lowers n by one. There is no timer task: the state is evaluated
//! when the endpoint is next looked at (a balancer's `is_available`, admin).
//! An endpoint's state stays with it across reloads (as Envoy keeps a host's);
//! removing `outlierDetection` returns every endpoint.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use weir_compile::policy::OutlierDetection;

use crate::pool::ClusterStats;

/// Envoy's default `max_ejection_time` (Istio does not set it).
const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// What one attempt (or TCP connect) ended with, for outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Observed {
    /// An upstream response with this HTTP status (gRPC statuses mapped).
    Response(u16),
    /// The upstream reset the stream or closed the connection before headers.
    Reset,
    ConnectFailed,
    /// A per-try or route timeout.
    Timeout,
    /// A TCP connection was established (TCP proxying).
    Connected,
}

impl Observed {
    /// The status of a response, with a trailers-only gRPC response's `grpc-status` mapped to HTTP.
    pub fn response(status: u16, headers: &http::HeaderMap) -> Observed {
        if status == 200
            && let Some(code) =
                headers.get(crate::local_reply::GRPC_STATUS).and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
        {
            return Observed::Response(grpc_to_http(code));
        }
        Observed::Response(status)
    }
}

/// Envoy's `Grpc::Utility::grpcToHttpStatus`.
pub(crate) fn grpc_to_http(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// Outlier statistics of a cluster, Envoy-named (`outlier_detection.*`).
#[derive(Debug, Default)]
pub(crate) struct OutlierStats {
    pub ejections_enforced_total: AtomicU64,
    pub ejections_enforced_consecutive_5xx: AtomicU64,
    pub ejections_enforced_consecutive_gateway_failure: AtomicU64,
    pub ejections_enforced_consecutive_local_origin_failure: AtomicU64,
    pub ejections_overflow: AtomicU64,
}

/// The outlier state of one endpoint; it stays with the endpoint across reloads.
#[derive(Debug, Default)]
pub(crate) struct HostState {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// Ejected until this many ms after the process epoch (an interval tick); 0: not ejected.
    until: AtomicU64,
    /// Ejection-time multiplier.
    multiplier: AtomicU32,
    /// The interval tick the endpoint last came back on (ms after the epoch).
    returned: AtomicU64,
    ejections: AtomicU64,
}

/// Milliseconds since the first use, shared by every detector so host state survives reloads.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl HostState {
    /// Whether the endpoint may receive traffic; an ejection whose time is up ends here.
    /// One atomic load unless the endpoint is ejected.
    pub fn is_available(&self) -> bool {
        let until = self.until.load(Ordering::Relaxed);
        until == 0 || self.try_return(until, now_ms())
    }

    /// Ejections so far.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Forgets everything (outlier detection was turned off).
    pub fn reset(&self) {
        for c in [&self.consecutive_5xx, &self.consecutive_gateway, &self.consecutive_local, &self.multiplier] {
            c.store(0, Ordering::Relaxed);
        }
        self.until.store(0, Ordering::Relaxed);
    }

    fn try_return(&self, until: u64, now: u64) -> bool {
        if now < until {
            return false;
        }
        if self.until.compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            // Returned on the interval tick at `until` (Envoy's timer), whenever this is noticed.
            self.returned.store(until, Ordering::Relaxed);
            for c in [&self.consecutive_5xx, &self.consecutive_gateway, &self.consecutive_local] {
                c.store(0, Ordering::Relaxed);
            }
        }
        true
    }
}

/// Outlier detection of one cluster: its settings and its endpoints' states.
#[derive(Debug)]
pub(crate) struct Detector {
    cfg: OutlierDetection,
    hosts: Box<[Arc<HostState>]>,
    stats: Arc<ClusterStats>,
}

#[derive(Clone, Copy)]
enum Kind {
    Consecutive5xx,
    Gateway,
    LocalOrigin,
}

impl Detector {
    pub fn new(cfg: &OutlierDetection, hosts: Vec<Arc<HostState>>, stats: Arc<ClusterStats>) -> Detector {
        Detector { cfg: cfg.clone(), hosts: hosts.into_boxed_slice(), stats }
    }

    /// Endpoints ejected now.
    pub fn ejected(&self) -> usize {
        self.hosts.iter().filter(|h| !h.is_available()).count()
    }

    /// Records what an attempt to endpoint `h` (one of this cluster's) ended with.
    pub fn observe(&self, h: &HostState, what: Observed) {
        let split = self.cfg.consecutive_local_origin_failures.is_some();
        let status = match what {
            Observed::Response(s) => {
                if split {
                    h.consecutive_local.store(0, Ordering::Relaxed);
                }
                s
            }
            Observed::Reset => 503,
            Observed::Connected if split => {
                h.consecutive_local.store(0, Ordering::Relaxed);
                return;
            }
            Observed::Connected => 200,
            Observed::ConnectFailed | Observed::Timeout if split => {
                let n = h.consecutive_local.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(max) = self.cfg.consecutive_local_origin_failures
                    && n == max
                {
                    self.eject(h, Kind::LocalOrigin);
                }
                return;
            }
            Observed::ConnectFailed => 503,
            Observed::Timeout => 504,
        };
        let error = if self.cfg.http_error_codes.is_empty() {
            (500..600).contains(&status)
        } else {
            self.cfg.http_error_codes.contains(&u32::from(status))
        };
        let gateway = matches!(status, 502..=504);
        if !error && !gateway {
            h.consecutive_5xx.store(0, Ordering::Relaxed);
            h.consecutive_gateway.store(0, Ordering::Relaxed);
            return;
        }
        if gateway {
            let n = h.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1;
            if self.cfg.consecutive_gateway_errors > 0 && n == self.cfg.consecutive_gateway_errors {
                self.eject(h, Kind::Gateway);
                return;
            }
        } else {
            h.consecutive_gateway.store(0, Ordering::Relaxed);
        }
        if error {
            let n = h.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
            if self.cfg.consecutive_5xx_errors > 0 && n == self.cfg.consecutive_5xx_errors {
                self.eject(h, Kind::Consecutive5xx);
            }
        }
    }

    fn eject(&self, h: &HostState, kind: Kind) {
        let now = now_ms();
        // Endpoints whose time is up return first (in `ejected`), so the percentage is current.
        let ejected = self.ejected() as u64;
        let total = self.hosts.len() as u64;
        if 100 * (ejected + 1) > u64::from(self.cfg.max_ejection_percent) * total {
            self.stats.outlier.ejections_overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let interval = u64::try_from(self.cfg.interval.as_millis()).unwrap_or(u64::MAX).max(1);
        // Each interval tick passed healthy since the last return lowers the multiplier by one.
        let healthy_intervals = (now / interval).saturating_sub(h.returned.load(Ordering::Relaxed) / interval);
        let before = u64::from(h.multiplier.load(Ordering::Relaxed));
        let n = before.saturating_sub(healthy_intervals) + 1;
        let base = self.cfg.base_ejection_time;
        let cap = base.max(MAX_EJECTION_TIME);
        let time = base.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)).min(cap);
        let end = now.saturating_add(u64::try_from(time.as_millis()).unwrap_or(u64::MAX));
        // Envoy returns hosts on its interval timer: the first tick at or after `end`.
        let until = end.div_ceil(interval).saturating_mul(interval).max(1);
        if h.until.compare_exchange(0, until, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return; // already ejected by a concurrent failure
        }
        h.multiplier.store(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed);
        h.ejections.fetch_add(1, Ordering::Relaxed);
        let s = &self.stats.outlier;
        s.ejections_enforced_total.fetch_add(1, Ordering::Relaxed);
        let (counter, name) = match kind {
            Kind::Consecutive5xx => (&s.ejections_enforced_consecutive_5xx, "consecutive_5xx"),
            Kind::Gateway => (&s.ejections_enforced_consecutive_gateway_failure, "consecutive_gateway_failure"),
            Kind::LocalOrigin => {
                (&s.ejections_enforced_consecutive_local_origin_failure, "consecutive_local_origin_failure")
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(ejection = n, ms = until - now, detector = name, "outlier ejected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn od(yaml: &str) -> OutlierDetection {
        let mut o = OutlierDetection {
            consecutive_5xx_errors: 5,
            consecutive_gateway_errors: 0,
            consecutive_local_origin_failures: None,
            interval: Duration::from_millis(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 100,
            min_health_percent: 0,
            http_error_codes: Vec::new(),
        };
        for kv in yaml.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap();
            let v: u32 = v.parse().unwrap();
            match k {
                "5xx" => o.consecutive_5xx_errors = v,
                "gw" => o.consecutive_gateway_errors = v,
                "local" => o.consecutive_local_origin_failures = Some(v),
                "max" => o.max_ejection_percent = v,
                _ => panic!("{k}"),
            }
        }
        o
    }

    fn detector(cfg: &str, n: usize) -> (Detector, Vec<Arc<HostState>>) {
        let hosts: Vec<Arc<HostState>> = (0..n).map(|_| Arc::default()).collect();
        (Detector::new(&od(cfg), hosts.clone(), Arc::default()), hosts)
    }

    #[test]
    fn consecutive_5xx_ejects_and_success_resets() {
        let (d, h) = detector("5xx=3", 2);
        d.observe(&h[0], Observed::Response(500));
        d.observe(&h[0], Observed::Response(502));
        d.observe(&h[0], Observed::Response(200));
        d.observe(&h[0], Observed::Response(500));
        d.observe(&h[0], Observed::Response(500));
        assert!(h[0].is_available());
        d.observe(&h[0], Observed::Response(503));
        assert!(!h[0].is_available());
        assert!(h[1].is_available());
        assert_eq!(d.stats.outlier.ejections_enforced_consecutive_5xx.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn gateway_errors_and_disabled_5xx() {
        let (d, h) = detector("5xx=0,gw=2", 1);
        for _ in 0..5 {
            d.observe(&h[0], Observed::Response(500));
        }
        assert!(h[0].is_available(), "5xx detector disabled, 500 is no gateway error");
        d.observe(&h[0], Observed::ConnectFailed);
        d.observe(&h[0], Observed::Timeout);
        assert!(!h[0].is_available(), "unsplit local failures count as 503/504");
    }

    #[test]
    fn split_local_origin_failures() {
        let (d, h) = detector("5xx=2,local=2", 1);
        d.observe(&h[0], Observed::ConnectFailed);
        d.observe(&h[0], Observed::Response(200));
        d.observe(&h[0], Observed::ConnectFailed);
        d.observe(&h[0], Observed::Response(500));
        assert!(h[0].is_available());
        d.observe(&h[0], Observed::Timeout);
        d.observe(&h[0], Observed::ConnectFailed);
        assert!(!h[0].is_available());
    }

    #[test]
    fn max_ejection_percent_is_respected() {
        let (d, h) = detector("5xx=1,max=50", 4);
        for host in &h {
            d.observe(host, Observed::Response(500));
        }
        assert_eq!(d.ejected(), 2);
        assert_eq!(d.stats.outlier.ejections_overflow.load(Ordering::Relaxed), 2);
        let (d, h) = detector("5xx=1,max=10", 5);
        d.observe(&h[0], Observed::Response(500));
        assert!(h[0].is_available(), "10% of 5 endpoints rounds to none (Envoy)");
    }

    #[test]
    fn grpc_statuses_map_to_http() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(Observed::response(200, &h), Observed::Response(503));
        assert_eq!(Observed::response(200, &http::HeaderMap::new()), Observed::Response(200));
        assert_eq!(grpc_to_http(4), 504);
    }
}
