//! Istio's circuit-breaking task (tasks.md §6) against the real `weir run`
//! binary: httpbin behind a DestinationRule with `maxConnections: 1`,
//! `http1MaxPendingRequests: 1`, `maxRequestsPerConnection: 1`; a small
//! concurrent client stands in for fortio (`-c 2 -n 20`, `-c 3 -n 30`,
//! `-qps 0`), and the task's stats check reads weir's `/stats`.

mod support;

use std::time::Duration;

use support::*;
use weir_proxy::demo::AppTimeouts;

/// The task's DestinationRule, verbatim.
const CIRCUIT_BREAKER: &str = "apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
";

const OVERFLOW: &str = "upstream connect error or disconnect/reset before headers. reset reason: overflow";

/// `fortio load -c <connections> -qps 0 -n <requests>`: (200s, 503s).
fn load(mesh: &Mesh, connections: usize, requests: usize) -> (usize, usize) {
    let per = requests / connections;
    let listener = mesh.listener;
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            std::thread::spawn(move || {
                (0..per).map(|_| request(listener, "httpbin", "/get", &[])).collect::<Vec<Reply>>()
            })
        })
        .collect();
    let replies: Vec<Reply> = workers.into_iter().flat_map(|w| w.join().expect("client thread")).collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let overflow: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(ok + overflow.len(), requests, "only 200 and 503: {replies:?}");
    for r in &overflow {
        // The 503s are local overflow replies (`UO`), not upstream errors.
        assert_eq!(r.body, OVERFLOW, "{r:?}");
        assert_eq!(r.header("x-envoy-overloaded"), Some("true"), "{r:?}");
        let reason = r.header("x-weir-reason").unwrap_or_default();
        assert!(reason.starts_with("UO outbound|") && reason.contains("max_pending_requests"), "{r:?}");
    }
    (ok, overflow.len())
}

/// `pilot-agent request GET stats | grep httpbin | grep pending`.
fn pending_stats(mesh: &Mesh) -> Vec<(String, u64)> {
    let r = request(mesh.admin, "admin", "/stats", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    r.body
        .lines()
        .filter(|l| l.contains("httpbin") && l.contains("pending"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(": ")?;
            let name = k.rsplit_once(".svc.cluster.local.")?.1;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn stat(stats: &[(String, u64)], name: &str) -> u64 {
    stats.iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no {name} in {stats:?}")).1
}

#[test]
fn task6_circuit_breaking() {
    let mesh = Mesh::start("circuit-breaking", &[("httpbin", "v1")], AppTimeouts::default(), &[CIRCUIT_BREAKER]);

    // `fortio curl -quiet http://httpbin:8000/get`: 200 with Envoy's upstream service time.
    let r = mesh.get("httpbin", "/get", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("x-envoy-upstream-service-time").is_some(), "{r:?}");

    // One connection at a time never trips the breaker.
    let (ok, overflow) = load(&mesh, 1, 10);
    assert_eq!((ok, overflow), (10, 0));

    // "Tripping the circuit breaker": 2 connections. With one upstream connection, one request
    // in flight and one pending, a client whose answer came back finds the queue full while
    // the other's request waits for the next connection: some 503s (the docs show 15%,
    // "the istio-proxy does allow for some leeway"; weir measured 20-50%).
    let (ok2, overflow2) = load(&mesh, 2, 20);
    eprintln!("-c 2 -n 20: Code 200: {ok2}, Code 503: {overflow2}");
    assert!(ok2 >= 2, "requests get through: {ok2}");
    // 3 connections: the third client's requests overflow whenever the other two fill the
    // connection and the queue (the docs show 63%; weir measured 53-63%).
    let (ok3, overflow3) = load(&mesh, 3, 30);
    eprintln!("-c 3 -n 30: Code 200: {ok3}, Code 503: {overflow3}");
    assert!(overflow3 >= 1 && ok3 >= 2, "some 503s, some 200s: {ok3}/{overflow3}");

    // "21 calls so far have been flagged for circuit breaking": every 503 is counted.
    let stats = pending_stats(&mesh);
    eprintln!("{stats:?}");
    assert_eq!(stat(&stats, "upstream_rq_pending_overflow"), (overflow2 + overflow3) as u64);
    assert!(stat(&stats, "upstream_rq_pending_total") >= (ok2 + ok3) as u64 / 2, "{stats:?}");
    // At rest: the queue is empty and open again.
    support::wait_for("the pending queue drains", Duration::from_secs(5), || {
        let s = pending_stats(&mesh);
        stat(&s, "circuit_breakers.default.rq_pending_open") == 0
            && stat(&s, "circuit_breakers.default.remaining_pending") == 1
    });
    // maxRequestsPerConnection: 1 — every request had its own upstream connection.
    let r = request(mesh.admin, "admin", "/stats", &[]);
    let cx_total: u64 = r
        .body
        .lines()
        .find(|l| l.contains("httpbin") && l.contains(".upstream_cx_total: "))
        .and_then(|l| l.rsplit_once(": ")?.1.parse().ok())
        .expect("upstream_cx_total");
    assert_eq!(cx_total, (1 + 10 + ok2 + ok3) as u64, "one upstream connection per request served");
    // Overflow replies are local: the outlier detector (consecutive5xxErrors: 1) ejected nothing.
    assert_eq!(mesh.get("httpbin", "/get", &[]).status, 200);
}
