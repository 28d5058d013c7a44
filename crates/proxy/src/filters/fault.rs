//! Fault injection (Envoy `envoy.filters.http.fault` as Istio configures it):
//! a fixed delay and/or an abort, each applied to a percentage of requests.
//! An abort answers locally with the configured HTTP status and body
//! `fault filter abort` (flag `FI`), or for a gRPC status with a trailers-only
//! response; a delay adds flag `DI`. The `x-envoy-fault-*` override headers
//! are not honoured.

use std::time::Duration;

use weir_compile::model::{AbortStatus, Fault};

/// Whether an event with `percentage` (0 to 100) happens to this request.
pub(crate) fn hit(percentage: f64) -> bool {
    if percentage >= 100.0 {
        return true;
    }
    // Envoy rounds to a fraction of a million.
    percentage > 0.0 && fastrand::u32(..1_000_000) < (percentage * 10_000.0) as u32
}

/// The delay and abort this request gets.
pub(crate) fn decide(f: &Fault) -> (Option<Duration>, Option<&AbortStatus>) {
    let delay = f.delay.as_ref().filter(|d| hit(d.percentage)).map(|d| d.fixed_delay);
    let abort = f.abort.as_ref().filter(|a| hit(a.percentage)).map(|a| &a.status);
    (delay, abort)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert!(hit(100.0));
        assert!(!hit(0.0));
        let n = (0..10_000).filter(|_| hit(25.0)).count();
        assert!((2_000..3_000).contains(&n), "{n}");
    }
}
