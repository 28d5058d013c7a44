//! End to end: `weir_active_connections` follows downstream connections
//! (HTTP keep-alive, HTTP/2, the explicit proxy, TCP chains), as
//! `/stats/prometheus` shows it; HTTP/1.0 requests are refused with 426 as Envoy refuses them.
#![allow(clippy::unwrap_used)] // test helpers

mod common;

use std::sync::Arc;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_proxy::State;

/// `weir_active_connections` as the Prometheus text shows it.
fn gauge(state: &State) -> i64 {
    let text = state.metrics.encode();
    let line = text.lines().find(|l| l.starts_with("weir_active_connections ")).expect("the gauge is exported");
    line["weir_active_connections ".len()..].trim().parse().unwrap()
}

async fn wait_gauge(state: &Arc<State>, want: i64) {
    wait_for(&format!("weir_active_connections {want}"), || gauge(state) == want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_connections_follow_http_connections() {
    let b = Backend::start("b").await;
    let (port, proxy_port) = (free_port(), free_port());
    let yaml = format!(
        "{}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc, namespace: default}}
spec:
  hosts: [svc]
  http:
  - route: [{{destination: {{host: svc}}}}]
",
        service("svc", port, "HTTP", &[(b.port(), "v1")])
    );
    let proxy = Proxy::start_with(options(proxy_port), &yaml).await;
    let state = proxy.state.clone();
    assert_eq!(gauge(&state), 0);

    // A keep-alive connection counts once, however many requests it carries.
    let mut h1 = Client::h1(port).await;
    for _ in 0..3 {
        assert_eq!(h1.get("svc", "/", &[]).await.status, 200);
    }
    assert_eq!(gauge(&state), 1);

    let mut h2 = Client::h2(port).await;
    assert_eq!(h2.get("svc", "/", &[]).await.status, 200);
    let mut via_proxy = Client::h1(proxy_port).await;
    let r = via_proxy.get(&format!("svc:{port}"), &format!("http://svc:{port}/"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gauge(&state), 3);

    // Each one leaves the count when the client closes it.
    drop(h1);
    wait_gauge(&state, 2).await;
    drop(h2);
    wait_gauge(&state, 1).await;
    drop(via_proxy);
    wait_gauge(&state, 0).await;

    // A connection that sends nothing and one that sends garbage are counted too, until closed.
    let idle = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    wait_gauge(&state, 1).await;
    let mut garbage = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    garbage.write_all(b"\x01\x02 not http\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    // weir answers 400 and closes.
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), garbage.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "weir closes a connection that does not speak HTTP");
    wait_gauge(&state, 1).await;
    drop(idle);
    wait_gauge(&state, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_connections_follow_tcp_connections() {
    let echo_port = tcp_echo_server().await;
    let port = free_port();
    let proxy = Proxy::start(&service("echo", port, "TCP", &[(echo_port, "v1")])).await;
    let state = proxy.state.clone();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(gauge(&state), 1);
    drop(s);
    wait_gauge(&state, 0).await;
}

/// One HTTP service `host` on a free port, routed to `backend`: its port and YAML.
fn routed(host: &str, backend: &Backend) -> (u16, String) {
    let port = free_port();
    let route = format!("  - route: [{{destination: {{host: {host}}}}}]");
    (port, format!("{}{}", service(host, port, "HTTP", &[(backend.port(), "v1")]), vs(host, &route)))
}

/// Sends `request` on a new connection and reads until weir closes it (bounded).
async fn exchange_until_close(port: u16, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "weir did not close the connection: {}", String::from_utf8_lossy(&out));
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_requests_get_426_as_from_envoy_unless_accepted() {
    let b = Backend::start("b").await;
    let (port, yaml) = routed("old", &b);
    let proxy = Proxy::start(&yaml).await;
    // Keep-alive asked for, but Envoy closes after a protocol error.
    let resp = exchange_until_close(port, "GET / HTTP/1.0\r\nHost: old\r\nConnection: keep-alive\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.0 426 Upgrade Required\r\n"), "{resp}");
    assert!(resp.contains("\r\nconnection: close\r\n"), "{resp}");
    assert!(resp.ends_with("\r\n\r\nUpgrade Required"), "{resp}");
    assert_eq!(b.count(), 0, "the upstream is not asked");
    let metrics = proxy.state.metrics.encode();
    assert!(
        metrics.lines().any(|l| l.starts_with("istio_requests_total")
            && l.contains("response_code=\"426\"")
            && l.contains("response_flags=\"DPE\"")),
        "{metrics}"
    );
    // HTTP/1.1 on the same listener is served.
    assert_eq!(get(port, "old", "/", &[]).await.status, 200);
    drop(proxy);

    // `--http10`: served (and closed after the response, as HTTP/1.0 without keep-alive asks).
    let (port, yaml) = routed("old", &b);
    let mut o = options(0);
    o.accept_http10 = true;
    let _proxy = Proxy::start_with(o, &yaml).await;
    let resp = exchange_until_close(port, "GET / HTTP/1.0\r\nHost: old\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.0 200 OK\r\n"), "{resp}");
    assert_eq!(b.count(), 2, "the HTTP/1.1 request and this one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_up_to_envoys_60_kib_are_read_larger_ones_get_431() {
    let b = Backend::start("b").await;
    let (port, yaml) = routed("big", &b);
    let _proxy = Proxy::start(&yaml).await;
    let (fits, too_big) = ("c".repeat(50 * 1024), "c".repeat(62 * 1024));
    let mut h1 = Client::h1(port).await;
    assert_eq!(h1.get("big", "/", &[("cookie", &fits)]).await.status, 200);
    let r = Client::h1(port).await.get("big", "/", &[("cookie", &too_big)]).await;
    assert_eq!((r.status, r.body.as_str()), (431, "Request Header Fields Too Large"));
    // Envoy's count: names, values and the path; 60 KiB exactly still passes.
    let exact = "c".repeat(60 * 1024 - "cookie".len() - "host".len() - "big".len() - "/".len());
    assert_eq!(Client::h1(port).await.get("big", "/", &[("cookie", &exact)]).await.status, 200);
    let over = format!("{exact}c");
    assert_eq!(Client::h1(port).await.get("big", "/", &[("cookie", &over)]).await.status, 431);
    // HTTP/2 too (hyper's own limit there would be 16 KiB).
    let mut h2 = Client::h2(port).await;
    assert_eq!(h2.get("big", "/", &[("cookie", &"c".repeat(30 * 1024))]).await.status, 200);
    assert_eq!(h2.get("big", "/", &[("cookie", &fits)]).await.status, 200);
    assert_eq!(Client::h2(port).await.get("big", "/", &[("cookie", &"c".repeat(70 * 1024))]).await.status, 431);
    assert_eq!(b.count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_host_gets_400_as_from_envoy() {
    let b = Backend::start("b").await;
    let (port, yaml) = routed("nohost", &b);
    let _proxy = Proxy::start(&yaml).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: nohost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection was not closed");
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    // The connection stays usable: the next request on it is served.
    assert!(out.contains("HTTP/1.1 200 OK\r\n"), "{out}");
    assert_eq!(b.count(), 1);
}
