//! The router's retry policy (Envoy `retry_on` semantics as Istio configures
//! them, semantics §8): which outcomes are retried, and the back-off.
//!
//! * `5xx`: any 5xx response, connect failures, resets and per-try timeouts.
//! * `gateway-error`: 502/503/504, connect failures, resets and per-try timeouts.
//! * `reset`: connect failures, resets and per-try timeouts.
//! * `connect-failure`, `refused-stream` (HTTP/2 `REFUSED_STREAM`), `retriable-4xx` (409).
//! * `retriable-status-codes`: the route's codes plus the request's
//!   `x-envoy-retriable-status-codes` (honoured at sidecars only).
//! * gRPC `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`,
//!   `unavailable`: the `grpc-status` of a trailers-only response.
//!
//! Back-off: Envoy's jittered exponential, `random(0, min(base * (2^n - 1), 10 * base))`.
//! Other `retry_on` values (`envoy-ratelimited`, `retriable-headers`, ...) are ignored.

use std::time::Duration;

use http::HeaderMap;
use weir_compile::model::RetryPolicy;

const FIVE_XX: u32 = 1;
const GATEWAY_ERROR: u32 = 1 << 1;
const RESET: u32 = 1 << 2;
const CONNECT_FAILURE: u32 = 1 << 3;
const RETRIABLE_4XX: u32 = 1 << 4;
const REFUSED_STREAM: u32 = 1 << 5;
const STATUS_CODES: u32 = 1 << 6;
const GRPC_CANCELLED: u32 = 1 << 7;
const GRPC_DEADLINE_EXCEEDED: u32 = 1 << 8;
const GRPC_INTERNAL: u32 = 1 << 9;
const GRPC_RESOURCE_EXHAUSTED: u32 = 1 << 10;
const GRPC_UNAVAILABLE: u32 = 1 << 11;
const RESET_BEFORE_REQUEST: u32 = 1 << 12;

/// Envoy's default back-off base.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

/// What ended an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    Connect,
    /// The upstream reset the stream (or closed the connection) before headers.
    Reset {
        refused: bool,
    },
    PerTryTimeout,
}

#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    on: u32,
    codes: Box<[u16]>,
    base: Duration,
    pub avoid_previous_hosts: bool,
}

impl Policy {
    pub fn compile(p: &RetryPolicy) -> Policy {
        let mut on = 0;
        for cond in p.retry_on.iter().flat_map(|s| s.split(',')).map(str::trim) {
            on |= match cond {
                "5xx" => FIVE_XX,
                "gateway-error" => GATEWAY_ERROR,
                "reset" => RESET,
                "reset-before-request" => RESET_BEFORE_REQUEST,
                "connect-failure" => CONNECT_FAILURE,
                "retriable-4xx" => RETRIABLE_4XX,
                "refused-stream" => REFUSED_STREAM,
                "retriable-status-codes" => STATUS_CODES,
                "cancelled" => GRPC_CANCELLED,
                "deadline-exceeded" => GRPC_DEADLINE_EXCEEDED,
                "internal" => GRPC_INTERNAL,
                "resource-exhausted" => GRPC_RESOURCE_EXHAUSTED,
                "unavailable" => GRPC_UNAVAILABLE,
                _ => 0,
            };
        }
        Policy {
            attempts: p.attempts,
            per_try_timeout: p.per_try_timeout,
            on,
            codes: p.retriable_status_codes.clone().into_boxed_slice(),
            base: p.backoff.filter(|d| !d.is_zero()).unwrap_or(DEFAULT_BACKOFF),
            avoid_previous_hosts: p.avoid_previous_hosts,
        }
    }

    /// Whether a response with `status` (and `headers`, for `grpc-status`) is retried.
    /// `extra_codes` come from the request's `x-envoy-retriable-status-codes`.
    pub fn retries_response(&self, status: u16, headers: &HeaderMap, extra_codes: &[u16]) -> bool {
        if self.on & FIVE_XX != 0 && (500..600).contains(&status) {
            return true;
        }
        if self.on & GATEWAY_ERROR != 0 && matches!(status, 502..=504) {
            return true;
        }
        if self.on & RETRIABLE_4XX != 0 && status == 409 {
            return true;
        }
        if self.on & STATUS_CODES != 0 && (self.codes.contains(&status) || extra_codes.contains(&status)) {
            return true;
        }
        if self.on
            & (GRPC_CANCELLED | GRPC_DEADLINE_EXCEEDED | GRPC_INTERNAL | GRPC_RESOURCE_EXHAUSTED | GRPC_UNAVAILABLE)
            != 0
            && let Some(code) =
                headers.get(crate::local_reply::GRPC_STATUS).and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
        {
            let bit = match code {
                1 => GRPC_CANCELLED,
                4 => GRPC_DEADLINE_EXCEEDED,
                8 => GRPC_RESOURCE_EXHAUSTED,
                13 => GRPC_INTERNAL,
                14 => GRPC_UNAVAILABLE,
                _ => 0,
            };
            return self.on & bit != 0;
        }
        false
    }

    /// Whether an attempt that ended with `f` is retried.
    pub fn retries_failure(&self, f: Failure) -> bool {
        let any_reset = FIVE_XX | GATEWAY_ERROR | RESET;
        match f {
            Failure::Connect => self.on & (any_reset | CONNECT_FAILURE | RESET_BEFORE_REQUEST) != 0,
            Failure::Reset { refused } => self.on & any_reset != 0 || (refused && self.on & REFUSED_STREAM != 0),
            Failure::PerTryTimeout => self.on & any_reset != 0,
        }
    }

    /// The wait before retry number `n` (1 for the first retry).
    pub fn backoff(&self, n: u32) -> Duration {
        let max = self.base.saturating_mul(10);
        let factor = (1u32 << n.min(16)) - 1;
        let ceiling = self.base.saturating_mul(factor).min(max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 { Duration::ZERO } else { Duration::from_nanos(fastrand::u64(..nanos)) }
    }
}

/// `x-envoy-retriable-status-codes: 503,504`.
pub(crate) fn header_codes(headers: &HeaderMap) -> Vec<u16> {
    headers
        .get_all("x-envoy-retriable-status-codes")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|c| c.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &str, codes: &[u16]) -> Policy {
        Policy::compile(&RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            retry_on: on.split(',').map(Into::into).collect(),
            retriable_status_codes: codes.to_vec(),
            backoff: None,
            retry_remote_localities: false,
            avoid_previous_hosts: true,
        })
    }

    #[test]
    fn conditions() {
        let h = HeaderMap::new();
        let p = policy("gateway-error", &[]);
        assert!(p.retries_response(503, &h, &[]));
        assert!(!p.retries_response(500, &h, &[]));
        assert!(p.retries_failure(Failure::Connect));
        assert!(p.retries_failure(Failure::PerTryTimeout));
        let p = policy("connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", &[]);
        assert!(!p.retries_response(503, &h, &[]), "Istio's default retries no status by itself");
        assert!(p.retries_response(503, &h, &[503]));
        assert!(p.retries_failure(Failure::Connect));
        assert!(!p.retries_failure(Failure::Reset { refused: false }));
        assert!(p.retries_failure(Failure::Reset { refused: true }));
        let mut g = HeaderMap::new();
        g.insert("grpc-status", "14".parse().unwrap());
        assert!(p.retries_response(200, &g, &[]));
        g.insert("grpc-status", "13".parse().unwrap());
        assert!(!p.retries_response(200, &g, &[]));
        let p = policy("retriable-4xx", &[]);
        assert!(p.retries_response(409, &h, &[]));
    }

    #[test]
    fn backoff_is_bounded() {
        let p = policy("5xx", &[]);
        for n in 1..20 {
            let d = p.backoff(n);
            assert!(d < Duration::from_millis(250), "{d:?}");
            if n == 1 {
                assert!(d < Duration::from_millis(25));
            }
        }
    }

    #[test]
    fn retriable_codes_header() {
        let mut h = HeaderMap::new();
        h.insert("x-envoy-retriable-status-codes", "503, 418,x".parse().unwrap());
        assert_eq!(header_codes(&h), vec![503, 418]);
    }
}
