//! The admin server against a real `State`: readiness, metrics, config dump
//! (including a rejected change with file:line), clusters; over real HTTP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod ops_support;

use ops_support::TempDir;
use weir_proxy::metrics::RequestRecord;
use weir_proxy::{AccessLogFormat, Options, Runtime, State, admin, reload};

const CONFIG: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local, port: {number: 9080}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  endpoints:
  - address: 127.0.0.1
    ports: {http: 19081}
    labels: {version: v1}
    locality: us-east1/us-east1-b
  - address: 127.0.0.2
    ports: {http: 19082}
    labels: {version: v2}
";

const INVALID: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: broken
  namespace: default
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local}
    timeout: 0s
";

fn state(dir: &Path) -> Arc<State> {
    let compiled = reload::load(dir, &Default::default()).expect("valid config");
    let options = Options { access_log: AccessLogFormat::Off, ..Options::new(dir.to_path_buf()) };
    State::new(options, Runtime::new(compiled.snapshot, 1, None))
}

fn start(state: &Arc<State>) -> admin::Admin {
    admin::spawn_on(state.clone(), SocketAddr::from(([127, 0, 0, 1], 0))).expect("admin binds")
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to admin");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let req = format!("{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("admin answers within 5s");
    let raw = String::from_utf8(raw).expect("utf-8 reply");
    let (head, body) = raw.split_once("\r\n\r\n").expect("complete reply");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status line");
    Reply { status, head: head.to_string(), body: body.to_string() }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path)
}

#[test]
fn ready_follows_the_state_and_draining() {
    let d = TempDir::new("ready");
    d.write("config.yaml", CONFIG);
    let state = state(&d.0);
    let admin = start(&state);
    let addr = admin.local_addr();
    let r = get(addr, "/ready");
    assert_eq!((r.status, r.body.as_str()), (503, "PRE_INITIALIZING\n"));
    state.ready.store(true, Ordering::SeqCst);
    let r = get(addr, "/ready");
    assert_eq!((r.status, r.body.as_str()), (200, "LIVE\n"));
    assert_eq!(get(addr, "/healthz/ready").status, 200);
    admin.set_draining();
    let r = get(addr, "/ready");
    assert_eq!((r.status, r.body.as_str()), (503, "DRAINING\n"));
    admin.stop();
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "stopped admin still accepts");
}

#[test]
fn prometheus_stats() {
    let d = TempDir::new("stats");
    d.write("config.yaml", CONFIG);
    let state = state(&d.0);
    state.metrics.set_config_version(1);
    state.metrics.record_request(&RequestRecord {
        reporter: "source",
        destination_service: "reviews.default.svc.cluster.local".into(),
        destination_service_name: "reviews".into(),
        destination_service_namespace: "default".into(),
        destination_version: "v1".into(),
        response_code: 200,
        request_protocol: "http",
        duration: Duration::from_millis(3),
        ..RequestRecord::default()
    });
    state.metrics.connection_opened();
    let admin = start(&state);
    let r = get(admin.local_addr(), "/stats/prometheus");
    assert_eq!(r.status, 200);
    assert!(r.head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{}", r.head);
    for want in [
        "istio_requests_total{reporter=\"source\",destination_service=\"reviews.default.svc.cluster.local\"",
        "istio_request_duration_milliseconds_bucket{",
        "istio_request_bytes_bucket{",
        "istio_response_bytes_bucket{",
        "weir_config_version 1\n",
        "weir_config_reloads_total 0\n",
        "weir_config_rejected_total 0\n",
        "weir_active_connections 1\n",
    ] {
        assert!(r.body.contains(want), "{want:?} missing in:\n{}", r.body);
    }
}

#[test]
fn config_dump_shows_version_node_snapshot_and_rejected_changes() {
    let d = TempDir::new("dump");
    d.write("config.yaml", CONFIG);
    let state = state(&d.0);
    let admin = start(&state);
    let dump = |addr| -> serde_json::Value {
        let r = get(addr, "/config_dump");
        assert_eq!(r.status, 200);
        assert!(r.head.to_ascii_lowercase().contains("content-type: application/json"), "{}", r.head);
        serde_json::from_str(&r.body).expect("config dump is JSON")
    };
    let v = dump(admin.local_addr());
    assert_eq!(v["applied_version"], 1);
    assert_eq!(v["status"]["applied_version"], 1);
    assert_eq!(v["status"]["last_rejected"], serde_json::Value::Null);
    assert_eq!(v["node"]["namespace"], "default");
    assert_eq!(v["node"]["labels"]["istio"], "ingressgateway");
    assert_eq!(v["node"]["role"], "both");
    assert_eq!(v["snapshot"]["listeners"][0]["port"], 8080);
    assert!(v["snapshot"]["clusters"].as_array().is_some_and(|c| !c.is_empty()));

    // An invalid edit is rejected; the dump still shows version 1 and the located error.
    let bad = d.write("broken.yaml", INVALID);
    let mut reloader = reload::Reloader::new(state.clone(), reload::Fingerprint::default());
    assert!(matches!(reloader.reload(), reload::Outcome::Rejected(_)));
    let v = dump(admin.local_addr());
    assert_eq!(v["applied_version"], 1);
    assert_eq!(v["status"]["rejected_reloads"], 1);
    let errors = v["status"]["last_rejected"]["errors"].as_array().expect("errors").clone();
    let want = format!("{}:12: VirtualService default/broken: spec.http[0].timeout:", bad.display());
    assert!(errors.iter().any(|e| e.as_str().is_some_and(|e| e.starts_with(&want))), "{want} not in {errors:?}");
    assert!(v["status"]["last_rejected"]["at"].as_u64().is_some_and(|t| t > 0));

    // Fixed: version 2, the rejection stays as history.
    std::fs::remove_file(&bad).unwrap();
    d.write("config.yaml", &CONFIG.replace("number: 8080", "number: 8081"));
    assert_eq!(reloader.reload(), reload::Outcome::Applied(2));
    let v = dump(admin.local_addr());
    assert_eq!(v["applied_version"], 2);
    assert_eq!(v["status"]["reloads"], 1);
    assert_eq!(v["snapshot"]["listeners"][0]["port"], 8081);
}

#[test]
fn clusters_lists_endpoints_like_envoy() {
    let d = TempDir::new("clusters");
    d.write("config.yaml", CONFIG);
    let state = state(&d.0);
    let admin = start(&state);
    let r = get(admin.local_addr(), "/clusters");
    assert_eq!(r.status, 200);
    let c = "outbound|9080||reviews.default.svc.cluster.local";
    for want in [
        format!("{c}::observability_name::{c}"),
        format!("{c}::127.0.0.1:19081::health_flags::healthy"),
        format!("{c}::127.0.0.2:19082::health_flags::healthy"),
        format!("{c}::127.0.0.1:19081::weight::1"),
        format!("{c}::127.0.0.1:19081::region::us-east1"),
        format!("{c}::127.0.0.1:19081::zone::us-east1-b"),
    ] {
        assert!(r.body.lines().any(|l| l == want), "{want:?} missing in:\n{}", r.body);
    }
}

#[test]
fn unknown_paths_and_methods() {
    let d = TempDir::new("misc");
    d.write("config.yaml", CONFIG);
    let state = state(&d.0);
    let admin = start(&state);
    let addr = admin.local_addr();
    assert_eq!(get(addr, "/nope").status, 404);
    assert_eq!(get(addr, "/").status, 200);
    assert_eq!(request(addr, "POST", "/ready").status, 405);
    let head = request(addr, "HEAD", "/stats/prometheus");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
}

#[test]
fn admin_port_in_use_fails_to_start() {
    let d = TempDir::new("busy");
    d.write("config.yaml", CONFIG);
    let state = state(&d.0);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    assert!(admin::spawn_on(state, addr).is_err());
}

#[test]
fn admin_keeps_answering_while_traffic_threads_are_busy() {
    // The admin server has its own thread: a blocked traffic runtime does not stall it.
    let d = TempDir::new("isolated");
    d.write("config.yaml", CONFIG);
    let state = state(&d.0);
    state.ready.store(true, Ordering::SeqCst);
    let admin = start(&state);
    let traffic = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    traffic.spawn(async move {
        // Hogs the only worker thread until the test ends.
        let _ = rx.recv();
    });
    assert_eq!(get(admin.local_addr(), "/ready").status, 200);
    drop(tx);
    traffic.shutdown_timeout(Duration::from_secs(1));
}
