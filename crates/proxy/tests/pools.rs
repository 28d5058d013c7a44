//! Connection pools and circuit breakers end to end: each DestinationRule
//! limit against a real backend, with the overflow counted in `/stats` and
//! `/stats/prometheus`.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::pools::{cluster, stat};
use common::*;

const OVERFLOW_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: overflow";

fn config(host: &str, port: u16, protocol: &str, backend: u16, policy: &str) -> String {
    format!(
        "{}{}{}",
        service(host, port, protocol, &[(backend, "v1")]),
        dr(host, policy),
        vs(host, &format!("  - route: [{{destination: {{host: {host}}}}}]"))
    )
}

fn assert_overflow(r: &Reply, limit: &str) {
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body, OVERFLOW_BODY);
    assert_eq!(r.header("x-envoy-overloaded").as_deref(), Some("true"));
    let reason = r.header("x-weir-reason").unwrap();
    assert!(reason.starts_with("UO outbound|") && reason.contains(limit), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_queues_and_pending_overflows() {
    let b = Backend::start("b").await;
    let port = free_port();
    let policy = "    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1}";
    let proxy = Proxy::start(&config("cb", port, "HTTP", b.port(), policy)).await;
    let c = cluster("cb", port);
    let slow = move || async move { get(port, "cb", "/", &[("x-test-delay-ms", "600")]).await };
    let first = tokio::spawn(slow());
    wait_for("one request at the backend", || b.count() == 1).await;
    let second = tokio::spawn(slow());
    wait_for("one request pending", || stat(&proxy.state, &c, "upstream_rq_pending_active") == 1).await;
    assert_eq!(b.count(), 1, "maxConnections 1: the second request waits for the connection");
    assert_eq!(stat(&proxy.state, &c, "circuit_breakers.default.rq_pending_open"), 1);
    assert_eq!(stat(&proxy.state, &c, "circuit_breakers.default.cx_open"), 1);

    let r = get(port, "cb", "/", &[]).await;
    assert_overflow(&r, "max_pending_requests (http.http1MaxPendingRequests)");
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(second.await.unwrap().status, 200);
    assert_eq!(get(port, "cb", "/", &[]).await.status, 200, "slots are released");
    // One connection served every request (it was handed to the waiting request).
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
    assert_eq!(stat(&proxy.state, &c, "upstream_rq_pending_overflow"), 1);
    assert_eq!(stat(&proxy.state, &c, "weir.overflow.max_pending_requests"), 1);
    // The first request waited for the connection to be established, the second for it to be free.
    assert_eq!(stat(&proxy.state, &c, "upstream_rq_pending_total"), 2);
    assert_eq!(stat(&proxy.state, &c, "upstream_cx_total"), 1);
    assert!(stat(&proxy.state, &c, "upstream_cx_overflow") >= 1);

    // Visible in Prometheus form too, with Envoy's names, and in Istio's request metric.
    let prom = proxy.state.metrics.encode();
    assert!(prom.contains("response_flags=\"UO\""), "{prom}");
    let admin = weir_proxy::admin::handle(&proxy.state, false, &http::Method::GET, "/stats/prometheus");
    let body = http_body_util::BodyExt::collect(admin.into_body()).await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    let line = format!("envoy_cluster_upstream_rq_pending_overflow{{cluster_name=\"{c}\"}} 1");
    assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    assert!(text.contains("# TYPE envoy_cluster_upstream_rq_pending_overflow counter"), "{text}");
    let line = format!("weir_upstream_overflow_total{{cluster_name=\"{c}\",limit=\"max_pending_requests\"}} 1");
    assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_overflows_for_http1_and_http2() {
    for protocol in ["HTTP", "HTTP2"] {
        let b = Backend::start("b").await;
        let port = free_port();
        let policy = "    connectionPool:\n      http: {http2MaxRequests: 1}";
        let proxy = Proxy::start(&config("mr", port, protocol, b.port(), policy)).await;
        let slow = tokio::spawn(async move { get(port, "mr", "/", &[("x-test-delay-ms", "400")]).await });
        wait_for("one request at the backend", || b.count() == 1).await;
        let r = get(port, "mr", "/", &[]).await;
        assert_overflow(&r, "max_requests (http.http2MaxRequests)");
        assert_eq!(slow.await.unwrap().status, 200);
        assert_eq!(get(port, "mr", "/", &[]).await.status, 200, "{protocol}: slot released");
        let c = cluster("mr", port);
        assert_eq!(stat(&proxy.state, &c, "weir.overflow.max_requests"), 1, "{protocol}");
        // Envoy counts a max_requests overflow as a pending overflow too.
        assert_eq!(stat(&proxy.state, &c, "upstream_rq_pending_overflow"), 1, "{protocol}");
        assert_eq!(stat(&proxy.state, &c, "circuit_breakers.default.rq_open"), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_one_connection_keep_their_own_authority_upstream() {
    // weir shares the upstream authority between the requests of a downstream connection
    // while they name the same host: a request naming another must not get the last one's.
    for protocol in ["HTTP", "HTTP2"] {
        let b = Backend::start("b").await;
        let port = free_port();
        let _proxy = Proxy::start(&config("au", port, protocol, b.port(), "    tls: {mode: DISABLE}")).await;
        let mut c = Client::h1(port).await;
        let hosts = ["au", "au", "au.default", "au.default.svc.cluster.local", "au"];
        for host in hosts {
            assert_eq!(c.get(host, "/", &[]).await.status, 200, "{protocol} {host}");
        }
        let seen: Vec<String> = b.seen().into_iter().map(|s| s.authority).collect();
        assert_eq!(seen, hosts, "{protocol}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_closes_connections() {
    let b = Backend::start("b").await;
    let port = free_port();
    let policy = "    connectionPool:\n      http: {maxRequestsPerConnection: 2}";
    let proxy = Proxy::start(&config("rpc", port, "HTTP", b.port(), policy)).await;
    for _ in 0..6 {
        assert_eq!(get(port, "rpc", "/", &[]).await.status, 200);
    }
    wait_for("3 connections closed after 2 requests each", || {
        stat(&proxy.state, &cluster("rpc", port), "upstream_cx_max_requests") == 3
    })
    .await;
    assert_eq!(b.connections.load(Ordering::SeqCst), 3);

    // HTTP/2: the same limit counts streams per connection.
    let b2 = Backend::start("b2").await;
    let port2 = free_port();
    let _p2 = Proxy::start(&config("rpc2", port2, "HTTP2", b2.port(), policy)).await;
    for _ in 0..4 {
        let r = get(port2, "rpc2", "/", &[]).await;
        assert_eq!((r.status, r.json()["version"].as_str()), (200, Some("HTTP/2.0")));
    }
    assert_eq!(b2.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_opens_another_connection_at_max_concurrent_streams() {
    let b = Backend::start("b").await;
    let port = free_port();
    let policy = "    connectionPool:\n      http: {maxConcurrentStreams: 2}";
    let proxy = Proxy::start(&config("h2s", port, "HTTP2", b.port(), policy)).await;
    let calls: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { get(port, "h2s", "/", &[("x-test-delay-ms", "300")]).await }))
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().status, 200);
    }
    // 5 concurrent streams, 2 per connection: 3 connections.
    assert_eq!(b.connections.load(Ordering::SeqCst), 3);
    assert_eq!(stat(&proxy.state, &cluster("h2s", port), "upstream_cx_total"), 3);

    // Without the setting, one connection multiplexes every stream.
    let b2 = Backend::start("b2").await;
    let port2 = free_port();
    let _p2 = Proxy::start(&config("h2m", port2, "HTTP2", b2.port(), "    loadBalancer: {simple: ROUND_ROBIN}")).await;
    let calls: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { get(port2, "h2m", "/", &[("x-test-delay-ms", "300")]).await }))
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().status, 200);
    }
    assert_eq!(b2.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_and_max_connection_duration_close_connections() {
    let b = Backend::start("b").await;
    let port = free_port();
    let policy = "    connectionPool:\n      http: {idleTimeout: 200ms}";
    let proxy = Proxy::start(&config("idle", port, "HTTP", b.port(), policy)).await;
    let c = cluster("idle", port);
    assert_eq!(get(port, "idle", "/", &[]).await.status, 200);
    assert_eq!(get(port, "idle", "/", &[]).await.status, 200);
    assert_eq!(b.connections.load(Ordering::SeqCst), 1, "kept alive within the idle timeout");
    wait_for("the idle connection closed", || stat(&proxy.state, &c, "upstream_cx_idle_timeout") == 1).await;
    wait_for("no connection open", || stat(&proxy.state, &c, "upstream_cx_active") == 0).await;
    assert_eq!(get(port, "idle", "/", &[]).await.status, 200);
    assert_eq!(b.connections.load(Ordering::SeqCst), 2);

    let b2 = Backend::start("b2").await;
    let port2 = free_port();
    let policy = "    connectionPool:\n      tcp: {maxConnectionDuration: 300ms}";
    let p2 = Proxy::start(&config("dur", port2, "HTTP", b2.port(), policy)).await;
    let c2 = cluster("dur", port2);
    // A request in progress when the duration ends finishes; the connection closes after it.
    let r = get(port2, "dur", "/", &[("x-test-delay-ms", "500")]).await;
    assert_eq!(r.status, 200);
    wait_for("the connection closed", || stat(&p2.state, &c2, "upstream_cx_max_duration_reached") == 1).await;
    assert_eq!(get(port2, "dur", "/", &[]).await.status, 200);
    assert_eq!(b2.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_counted() {
    let port = free_port();
    let closed = free_port();
    let policy = "    connectionPool:\n      tcp: {connectTimeout: 200ms}";
    let proxy = Proxy::start(&config("down", port, "HTTP", closed, policy)).await;
    let started = Instant::now();
    let r = get(port, "down", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.header("x-weir-reason").unwrap().starts_with("UF"), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Istio's default retry policy retries connect failures twice.
    assert_eq!(stat(&proxy.state, &cluster("down", port), "upstream_cx_connect_fail"), 3);
    assert_eq!(stat(&proxy.state, &cluster("down", port), "upstream_cx_active"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_retries_bounds_concurrent_retries() {
    let b = Backend::start("b").await;
    let port = free_port();
    let yaml = format!(
        "{}{}{}",
        service("rt", port, "HTTP", &[(b.port(), "v1")]),
        dr("rt", "    connectionPool:\n      http: {maxRetries: 1}"),
        vs("rt", "  - route: [{destination: {host: rt}}]\n    retries: {attempts: 2, retryOn: 5xx}")
    );
    let proxy = Proxy::start(&yaml).await;
    let c = cluster("rt", port);
    // The first request's retry holds the only retry slot for a second.
    let slow =
        tokio::spawn(
            async move { get(port, "rt", "/", &[("x-test-status", "500"), ("x-test-delay-ms", "1000")]).await },
        );
    wait_for("the first request's retry", || b.count() == 2).await;
    let r = get(port, "rt", "/", &[("x-test-status", "500")]).await;
    // No retry slot: the upstream's answer stands (not a local reply).
    assert_eq!(r.status, 500);
    assert_eq!(r.backend(), "b");
    assert_eq!(b.count(), 3, "the second request was not retried");
    assert_eq!(stat(&proxy.state, &c, "upstream_rq_retry_overflow"), 1);
    assert_eq!(stat(&proxy.state, &c, "weir.overflow.max_retries"), 1);
    assert_eq!(slow.await.unwrap().status, 500);
    assert_eq!(b.count(), 4, "the first request's second retry needs no second slot");
    assert_eq!(stat(&proxy.state, &c, "circuit_breakers.default.remaining_retries"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_counts_and_pools_when_limits_stay() {
    let b = Backend::start("b").await;
    let port = free_port();
    let policy = "    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1}";
    let yaml = config("rl", port, "HTTP", b.port(), policy);
    let proxy = Proxy::start(&yaml).await;
    assert_eq!(get(port, "rl", "/", &[]).await.status, 200);
    // Same limits, another balancer: the cluster changes, its pool (and connection) carries over.
    proxy.publish(&config("rl", port, "HTTP", b.port(), &format!("{policy}\n    loadBalancer: {{simple: RANDOM}}")));
    assert_eq!(get(port, "rl", "/", &[]).await.status, 200);
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
    assert_eq!(stat(&proxy.state, &cluster("rl", port), "upstream_cx_total"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_upgrade_policy_and_use_client_protocol_choose_the_upstream_protocol() {
    let b = Backend::start("b").await;
    let port = free_port();
    let policy = "    connectionPool:\n      http: {h2UpgradePolicy: UPGRADE}";
    let _p = Proxy::start(&config("up", port, "HTTP", b.port(), policy)).await;
    let r = get(port, "up", "/", &[]).await;
    assert_eq!((r.status, r.json()["version"].as_str()), (200, Some("HTTP/2.0")));

    let b2 = Backend::start("b2").await;
    let port2 = free_port();
    let policy = "    connectionPool:\n      http: {useClientProtocol: true}";
    let _p2 = Proxy::start(&config("ucp", port2, "HTTP", b2.port(), policy)).await;
    let r = Client::h1(port2).await.get("ucp", "/", &[]).await;
    assert_eq!(r.json()["version"].as_str(), Some("HTTP/1.1"));
    let r = Client::h2(port2).await.get("ucp", "/", &[]).await;
    assert_eq!(r.json()["version"].as_str(), Some("HTTP/2.0"));
    // One pool per endpoint holds both kinds of connection.
    assert_eq!(b2.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_times_out_while_pending_gets_504_and_frees_its_slot() {
    let b = Backend::start("b").await;
    let port = free_port();
    let yaml = format!(
        "{}{}{}",
        service("pt", port, "HTTP", &[(b.port(), "v1")]),
        dr("pt", "    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1}"),
        vs("pt", "  - route: [{destination: {host: pt}}]\n    timeout: 200ms")
    );
    let proxy = Proxy::start(&yaml).await;
    let c = cluster("pt", port);
    let slow = tokio::spawn(async move {
        get(port, "pt", "/", &[("x-test-delay-ms", "800"), ("x-envoy-upstream-rq-timeout-ms", "5000")]).await
    });
    wait_for("the slow request at the backend", || b.count() == 1).await;
    let started = Instant::now();
    let r = get(port, "pt", "/", &[]).await;
    assert_eq!(r.status, 504, "{r:?}");
    assert!(r.header("x-weir-reason").unwrap().starts_with("UT "), "{r:?}");
    assert!(started.elapsed() < Duration::from_millis(700));
    assert_eq!(stat(&proxy.state, &c, "upstream_rq_pending_active"), 0, "the slot is free again");
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(b.count(), 1, "the timed-out request never reached the backend");
    assert_eq!(get(port, "pt", "/", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_covers_a_handshake_that_never_ends() {
    // Accepts connections and never answers: the TLS handshake hangs.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let port = free_port();
    let policy =
        "    connectionPool:\n      tcp: {connectTimeout: 200ms}\n    tls: {mode: SIMPLE, insecureSkipVerify: true}";
    let proxy = Proxy::start(&config("hang", port, "HTTP", silent_port, policy)).await;
    let started = Instant::now();
    let r = get(port, "hang", "/", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.header("x-weir-reason").unwrap().starts_with("UF"), "{r:?}");
    // Three attempts (Istio's default retries on connect failure), 200 ms each.
    assert!(started.elapsed() >= Duration::from_millis(600), "{:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let c = cluster("hang", port);
    assert_eq!(stat(&proxy.state, &c, "upstream_cx_connect_timeout"), 3);
    assert_eq!(stat(&proxy.state, &c, "upstream_cx_connect_fail"), 3);
    hold.abort();
}
