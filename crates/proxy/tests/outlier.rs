//! Outlier detection end to end: consecutive errors eject an endpoint (shown
//! in `/clusters`), it returns after `baseEjectionTime` x its ejection count,
//! and `maxEjectionPercent` bounds how many endpoints are out; TCP connect
//! failures eject too.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::pools::{cluster, ejected, stat};
use common::*;

fn config(host: &str, port: u16, backends: &[&Backend], policy: &str) -> String {
    let eps: Vec<(u16, &str)> = backends.iter().map(|b| (b.port(), "v1")).collect();
    format!(
        "{}{}{}",
        service(host, port, "HTTP", &eps),
        dr(host, policy),
        vs(host, &format!("  - route: [{{destination: {{host: {host}}}}}]"))
    )
}

/// Polls `cond` every few milliseconds for up to `limit`.
async fn wait_long(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_5xx_eject_and_the_endpoint_returns_after_base_times_count() {
    let bad = Backend::start("bad").await;
    let good = Backend::start("good").await;
    let port = free_port();
    let policy = "    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 2, interval: 200ms, baseEjectionTime: 400ms, maxEjectionPercent: 100}";
    let proxy = Proxy::start(&config("od", port, &[&bad, &good], policy)).await;
    let c = cluster("od", port);
    let bad_host = format!("127.0.0.1:{}", bad.port());

    for round in 1..=2u32 {
        bad.fail_first.store(1_000, Ordering::SeqCst);
        // Round robin: the bad endpoint answers every other request until its second 503 (the
        // balancer notices a returned endpoint within its recheck period).
        let mut failures = 0;
        let give_up = Instant::now() + Duration::from_secs(3);
        while ejected(&proxy.state, &c).is_empty() && Instant::now() < give_up {
            if get(port, "od", "/", &[]).await.status == 503 {
                failures += 1;
            }
        }
        let at = Instant::now();
        assert_eq!(failures, 2, "round {round}: ejected after 2 consecutive 5xx");
        assert_eq!(ejected(&proxy.state, &c), vec![bad_host.clone()]);
        // While ejected, every request goes to the good endpoint.
        let before = bad.count();
        for _ in 0..6 {
            let r = get(port, "od", "/", &[]);
            assert_eq!(r.await.backend(), "good");
        }
        assert_eq!(bad.count(), before);
        bad.fail_first.store(0, Ordering::SeqCst);
        wait_long("the endpoint returns", Duration::from_secs(5), || ejected(&proxy.state, &c).is_empty()).await;
        let out = at.elapsed();
        // The n-th ejection lasts base x n, ending at the next interval tick.
        let base = Duration::from_millis(400) * round;
        assert!(out >= base - Duration::from_millis(20), "round {round}: out for {out:?}, expected {base:?}");
        assert!(out < base + Duration::from_millis(500), "round {round}: out for {out:?}, expected {base:?}");
        let lines = common::pools::clusters_field(&proxy.state, &c, "outlier::ejections");
        assert!(lines.contains(&(bad_host.clone(), round.to_string())), "{lines:?}");
    }
    assert_eq!(stat(&proxy.state, &c, "outlier_detection.ejections_enforced_consecutive_5xx"), 2);
    assert_eq!(stat(&proxy.state, &c, "outlier_detection.ejections_active"), 0);
    // Back in rotation.
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..4 {
        names.insert(get(port, "od", "/", &[]).await.backend());
    }
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["bad", "good"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ejection_percent_is_respected() {
    let backends: Vec<Backend> =
        futures_join(["a", "b", "c", "d"].map(|n| async move { Backend::start(n).await })).await;
    for b in &backends {
        b.fail_first.store(1_000, Ordering::SeqCst);
    }
    let port = free_port();
    let policy = "    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}";
    let refs: Vec<&Backend> = backends.iter().collect();
    let proxy = Proxy::start(&config("mp", port, &refs, policy)).await;
    let c = cluster("mp", port);
    for _ in 0..12 {
        assert_eq!(get(port, "mp", "/", &[]).await.status, 503);
    }
    assert_eq!(ejected(&proxy.state, &c).len(), 2, "50% of 4 endpoints");
    assert!(stat(&proxy.state, &c, "outlier_detection.ejections_overflow") >= 1);
    assert_eq!(stat(&proxy.state, &c, "outlier_detection.ejections_active"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_local_origin_failures_eject_unreachable_endpoints() {
    let good = Backend::start("good").await;
    let dead = free_port();
    let port = free_port();
    let yaml = format!(
        "{}{}{}",
        service("lo", port, "HTTP", &[(dead, "v1"), (good.port(), "v1")]),
        dr(
            "lo",
            "    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 1,
                       consecutive5xxErrors: 0, baseEjectionTime: 30s, maxEjectionPercent: 100}"
        ),
        vs("lo", "  - route: [{destination: {host: lo}}]")
    );
    let proxy = Proxy::start(&yaml).await;
    let c = cluster("lo", port);
    // Connect failures are retried (Istio's default policy) on the other endpoint.
    for _ in 0..4 {
        assert_eq!(get(port, "lo", "/", &[]).await.backend(), "good");
    }
    assert_eq!(ejected(&proxy.state, &c), vec![format!("127.0.0.1:{dead}")]);
    assert_eq!(stat(&proxy.state, &c, "outlier_detection.ejections_enforced_consecutive_local_origin_failure"), 1);
    // 5xx do not eject here (consecutive5xxErrors: 0).
    good.fail_first.store(10, Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(get(port, "lo", "/", &[]).await.status, 503);
    }
    assert_eq!(ejected(&proxy.state, &c).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_ejected_is_503_uh_without_panic_mode() {
    let bad = Backend::start("bad").await;
    bad.fail_first.store(1_000, Ordering::SeqCst);
    let port = free_port();
    let policy = "    outlierDetection: {consecutive5xxErrors: 1, baseEjectionTime: 30s, maxEjectionPercent: 100}";
    let proxy = Proxy::start(&config("uh", port, &[&bad], policy)).await;
    assert_eq!(get(port, "uh", "/", &[]).await.status, 503);
    assert_eq!(ejected(&proxy.state, &cluster("uh", port)).len(), 1);
    let r = get(port, "uh", "/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"));
    assert!(r.header("x-weir-reason").unwrap().starts_with("UH "));
}

/// TCP proxying feeds outlier detection too: a connect failure counts as a
/// local-origin error (a 5xx when not split), so the unreachable endpoint is
/// ejected and later connections all reach the live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connect_failures_eject_the_endpoint() {
    let echo = common::tls::TcpEcho::start("live").await;
    let dead = free_port();
    let port = free_port();
    let yaml = format!(
        "{}{}",
        service("tcp-lo", port, "TCP", &[(dead, "v1"), (echo.port, "v1")]),
        dr(
            "tcp-lo",
            "    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 1, baseEjectionTime: 30s, maxEjectionPercent: 100}"
        ),
    );
    let proxy = Proxy::start(&yaml).await;
    let c = cluster("tcp-lo", port);
    let mut failed = 0;
    for i in 0..2 {
        if common::tls::tcp_ask(port, &format!("hello {i}")).await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 1, "round robin tries the dead endpoint once");
    assert_eq!(ejected(&proxy.state, &c), vec![format!("127.0.0.1:{dead}")]);
    for i in 0..10 {
        let r = common::tls::tcp_ask(port, &format!("again {i}")).await.unwrap();
        assert!(r.starts_with("live "), "{r}");
    }
}

async fn futures_join<F: std::future::Future<Output = Backend> + Send + 'static>(fs: [F; 4]) -> Vec<Backend> {
    let mut out = Vec::new();
    for f in fs {
        out.push(tokio::spawn(f).await.unwrap());
    }
    out
}
