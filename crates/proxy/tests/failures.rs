//! End to end: what a client sees when things go wrong (semantics §10):
//! timeouts, retries, fault injection and every local reply with its body,
//! flag and `x-weir-reason`.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_gives_504_ut() {
    let b = Backend::start("slow").await;
    let port = free_port();
    let yaml = format!(
        "{}{}",
        service("slow", port, "HTTP", &[(b.port(), "v1")]),
        vs("slow", "  - route: [{destination: {host: slow}}]\n    timeout: 300ms"),
    );
    let _proxy = Proxy::start(&yaml).await;
    let mut c = Client::h1(port).await;
    let fast = c.get("slow", "/", &[]).await;
    assert_eq!(fast.status, 200);
    let expected: u64 = fast.upstream_header("x-envoy-expected-rq-timeout-ms").unwrap().parse().unwrap();
    assert!((1..=300).contains(&expected), "{expected}");
    let started = Instant::now();
    let r = c.get("slow", "/", &[("x-test-delay-ms", "3000")]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.body, "upstream request timeout");
    assert_eq!(r.header("x-weir-reason"), Some(format!("UT outbound|{port}||slow.default.svc.cluster.local")));
    assert!(took >= Duration::from_millis(290) && took < Duration::from_millis(2500), "{took:?}");
    // The connection stays usable.
    assert_eq!(c.get("slow", "/", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_count_attempts_and_exhaust_with_urx() {
    let b = Backend::start("flaky").await;
    let port = free_port();
    let yaml = format!(
        "{}{}",
        service("flaky", port, "HTTP", &[(b.port(), "v1")]),
        vs(
            "flaky",
            "  - route: [{destination: {host: flaky}}]\n    retries: {attempts: 3, retryOn: 5xx, perTryTimeout: 2s}"
        ),
    );
    let _proxy = Proxy::start(&yaml).await;
    b.fail_first.store(2, std::sync::atomic::Ordering::SeqCst);
    let r = get(port, "flaky", "/", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let attempts: Vec<String> =
        b.seen().iter().map(|s| s.headers["x-envoy-attempt-count"].to_str().unwrap().to_string()).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert_eq!(r.upstream_header("x-envoy-attempt-count").as_deref(), Some("3"));
    // Always failing: 1 + 3 attempts, then the last upstream answer.
    b.fail_first.store(100, std::sync::atomic::Ordering::SeqCst);
    let before = b.count();
    let r = get(port, "flaky", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.backend(), "flaky", "the upstream's own response is returned");
    assert_eq!(b.count() - before, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_replay_request_bodies() {
    let b = Backend::start("flaky").await;
    let port = free_port();
    let yaml = format!(
        "{}{}",
        service("flaky", port, "HTTP", &[(b.port(), "v1")]),
        vs("flaky", "  - route: [{destination: {host: flaky}}]\n    retries: {attempts: 2, retryOn: gateway-error}"),
    );
    let _proxy = Proxy::start(&yaml).await;
    b.fail_first.store(1, std::sync::atomic::Ordering::SeqCst);
    let r = Client::h2(port).await.send("POST", "flaky", "/upload", &[], "the body").await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = b.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| &s.body[..] == b"the body"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_and_delay() {
    let b = Backend::start("b").await;
    let port = free_port();
    let yaml = format!(
        "{}{}",
        service("f", port, "HTTP", &[(b.port(), "v1")]),
        vs(
            "f",
            "  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: f}}]
  - match: [{uri: {prefix: /grpc}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: f}}]
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}
    route: [{destination: {host: f}}]
  - match: [{uri: {prefix: /never}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 0}}}
    route: [{destination: {host: f}}]"
        ),
    );
    let _proxy = Proxy::start(&yaml).await;
    let mut c = Client::h1(port).await;
    let r = c.get("f", "/abort", &[]).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.body, "fault filter abort");
    assert_eq!(r.header("x-weir-reason").as_deref(), Some("FI VirtualService default/f"));
    let r = c.get("f", "/grpc", &[("content-type", "application/grpc")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status").as_deref(), Some("14"));
    assert_eq!(r.header("grpc-message").as_deref(), Some("fault filter abort"));
    let started = Instant::now();
    let r = c.get("f", "/delay", &[]).await;
    assert!(started.elapsed() >= Duration::from_millis(290));
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "b");
    assert_eq!(c.get("f", "/never", &[]).await.status, 200);
    assert_eq!(b.count(), 2, "aborted requests never reach the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_nr_nc_uh_uf() {
    let b = Backend::start("b").await;
    let (port, dead_port, closed) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "{}{}{}{}",
        service("svc", port, "HTTP", &[(b.port(), "v1")]),
        subsets("svc", &["v1", "empty"]),
        service("dead", dead_port, "HTTP", &[(closed, "v1")]),
        vs(
            "svc",
            "  - match: [{uri: {prefix: /nc}}]
    route: [{destination: {host: svc, subset: v9}}]
  - match: [{uri: {prefix: /uh}}]
    route: [{destination: {host: svc, subset: empty}}]
  - match: [{uri: {prefix: /ok}}]
    route: [{destination: {host: svc, subset: v1}}]"
        ),
    );
    let _proxy = Proxy::start(&yaml).await;
    let mut c = Client::h1(port).await;
    let cluster = |subset: &str, host: &str, p: u16| format!("outbound|{p}|{subset}|{host}.default.svc.cluster.local");

    let r = c.get("svc", "/nothing", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (404, ""));
    assert_eq!(r.header("x-weir-reason").as_deref(), Some("NR VirtualService default/svc"));

    let r = c.get("svc", "/nc", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, ""));
    assert_eq!(r.header("x-weir-reason"), Some(format!("NC {}", cluster("v9", "svc", port))));

    let r = c.get("svc", "/uh", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"));
    assert_eq!(r.header("x-weir-reason"), Some(format!("UH {}", cluster("empty", "svc", port))));

    assert_eq!(c.get("svc", "/ok", &[]).await.status, 200);

    // No VirtualService: Istio's default route, whose retry policy retries connect failures twice.
    let r = get(dead_port, "dead", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "upstream connect error or disconnect/reset before headers. reset reason: connection failure");
    assert_eq!(r.header("x-weir-reason"), Some(format!("UF,URX {}", cluster("", "dead", dead_port))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_blocks_unknown_hosts_with_502() {
    let b = Backend::start("b").await;
    let port = free_port();
    let yaml = format!(
        "{}
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec:
  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
",
        service("known", port, "HTTP", &[(b.port(), "v1")]),
    );
    let _proxy = Proxy::start(&yaml).await;
    assert_eq!(get(port, "known", "/", &[]).await.status, 200);
    let r = get(port, "unknown.example.com", "/", &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-weir-reason").as_deref(), Some("block_all unknown.example.com"));
}

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_recorded_in_metrics_and_the_access_log() {
    let b = Backend::start("b").await;
    let port = free_port();
    let yaml = format!(
        "{}{}{}",
        service("rec", port, "HTTP", &[(b.port(), "v1")]),
        subsets("rec", &["v1"]),
        vs(
            "rec",
            "  - name: main
    match: [{uri: {prefix: /ok}}]
    route: [{destination: {host: rec, subset: v1}}]"
        ),
    );
    let lines = Lines::default();
    let mut state = weir_proxy::State::new(options(0), runtime(&yaml, 1, None));
    std::sync::Arc::get_mut(&mut state).unwrap().access_log =
        weir_proxy::access_log::AccessLog::with_writer(weir_proxy::AccessLogFormat::Json, Box::new(lines.clone()));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(weir_proxy::server::serve(state.clone(), rx));
    let s = state.clone();
    wait_for("listeners", || s.ready.load(std::sync::atomic::Ordering::SeqCst)).await;

    let mut c = Client::h1(port).await;
    let ok = c.send("POST", "rec", "/ok?x=1", &[("user-agent", "t/1"), ("x-request-id", "rid-1")], "12345").await;
    assert_eq!(ok.status, 200);
    let nr = c.get("rec", "/nope", &[]).await;
    assert_eq!(nr.status, 404);
    wait_for("two log lines", || {
        state.access_log.flush(Duration::from_secs(1));
        lines.0.lock().unwrap().iter().filter(|b| **b == b'\n').count() == 2
    })
    .await;
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let entries: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let e = &entries[0];
    assert_eq!(e["method"], "POST");
    assert_eq!(e["path"], "/ok?x=1");
    assert_eq!(e["protocol"], "HTTP/1.1");
    assert_eq!(e["response_code"], 200);
    assert_eq!(e["response_flags"], "-");
    assert_eq!(e["bytes_received"], 5);
    assert_eq!(e["bytes_sent"], ok.body.len());
    assert_eq!(e["user_agent"], "t/1");
    assert_eq!(e["request_id"], "rid-1");
    assert_eq!(e["authority"], "rec");
    assert_eq!(e["upstream_host"], format!("127.0.0.1:{}", b.port()));
    assert_eq!(e["upstream_cluster"], format!("outbound|{port}|v1|rec.default.svc.cluster.local"));
    assert_eq!(e["route_name"], "main");
    assert!(e["upstream_service_time"].is_u64());
    let e = &entries[1];
    assert_eq!(e["response_code"], 404);
    assert_eq!(e["response_flags"], "NR");

    let metrics = state.metrics.encode();
    let ok_line = metrics
        .lines()
        .find(|l| l.starts_with("istio_requests_total") && l.contains("response_code=\"200\""))
        .unwrap_or_else(|| panic!("{metrics}"));
    for label in [
        "destination_service=\"rec.default.svc.cluster.local\"",
        "destination_service_name=\"rec\"",
        "destination_service_namespace=\"default\"",
        "destination_version=\"v1\"",
        "response_flags=\"-\"",
        "request_protocol=\"http\"",
        "reporter=\"source\"",
    ] {
        assert!(ok_line.contains(label), "{label} missing in {ok_line}");
    }
    assert!(metrics.lines().any(|l| l.starts_with("istio_requests_total")
        && l.contains("response_code=\"404\"")
        && l.contains("response_flags=\"NR\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeouts_are_retried_then_504_ut_urx() {
    let b = Backend::start("slow").await;
    let port = free_port();
    let yaml = format!(
        "{}{}",
        service("pt", port, "HTTP", &[(b.port(), "v1")]),
        vs(
            "pt",
            "  - route: [{destination: {host: pt}}]\n    retries: {attempts: 2, perTryTimeout: 100ms, retryOn: reset}"
        ),
    );
    let _proxy = Proxy::start(&yaml).await;
    let r = get(port, "pt", "/", &[("x-test-delay-ms", "2000")]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.body, "upstream request timeout");
    assert!(r.header("x-weir-reason").unwrap().starts_with("UT,URX "), "{r:?}");
    assert_eq!(b.count(), 3);
    let expected: Vec<u64> = b
        .seen()
        .iter()
        .map(|s| s.headers["x-envoy-expected-rq-timeout-ms"].to_str().unwrap().parse().unwrap())
        .collect();
    assert!(expected.iter().all(|ms| (1..=100).contains(ms)), "{expected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_https_redirect() {
    let gw_port = free_port();
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gw_port}, name: http, protocol: HTTP}}
    hosts: ['secure.example.com']
    tls: {{httpsRedirect: true}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: s, namespace: default}}
spec:
  hosts: ['secure.example.com']
  gateways: [gw]
  http:
  - directResponse: {{status: 200}}
"
    );
    let _proxy = Proxy::start(&yaml).await;
    let r = get(gw_port, "secure.example.com", "/login?next=/", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location").as_deref(), Some("https://secure.example.com/login?next=/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_before_the_response_is_recorded_as_dc() {
    let b = Backend::start("slow").await;
    let port = free_port();
    let proxy = Proxy::start(&service("dc", port, "HTTP", &[(b.port(), "v1")])).await;
    let client = tokio::spawn(async move { get(port, "dc", "/", &[("x-test-delay-ms", "5000")]).await });
    wait_for("the request upstream", || b.count() == 1).await;
    client.abort();
    let state = proxy.state.clone();
    wait_for("a DC record", || {
        state.metrics.encode().lines().any(|l| {
            l.starts_with("istio_requests_total")
                && l.contains("response_code=\"0\"")
                && l.contains("response_flags=\"DC\"")
        })
    })
    .await;
}
