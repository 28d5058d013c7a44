//! TCP and TLS routing end to end: gateway TCP servers with weighted routes,
//! sidecar `tcp` and `tls` routes, half close, idle timeout, maxConnections,
//! and Istio's TCP metrics.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::tls::{ClientOpts, Dir, Pki, TcpEcho, TlsEcho, TlsProxy, ask, metric, tcp_ask, tls_ask};
use common::{free_port, service, subsets, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Istio's tcp-echo at a gateway TCP server, 80/20 across v1 and v2.
#[tokio::test]
async fn gateway_tcp_routes_split_by_weight() {
    let (v1, v2) = (TcpEcho::start("one").await, TcpEcho::start("two").await);
    let port = free_port();
    let yaml = format!(
        "{}{}
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tcp-echo-gateway, namespace: default}}
spec:
  servers:
  - port: {{number: {port}, name: tcp, protocol: TCP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-echo, namespace: default}}
spec:
  hosts: ['*']
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{{port: {port}}}]
    route:
    - {{destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v1}}, weight: 80}}
    - {{destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v2}}, weight: 20}}
",
        service("tcp-echo", 9000, "TCP", &[(v1.port, "v1"), (v2.port, "v2")]),
        subsets("tcp-echo", &["v1", "v2"]),
    );
    let proxy = TlsProxy::start(Dir::new("tcp-split"), &yaml).await;
    let n = 200;
    let mut two = 0;
    for i in 0..n {
        let r = tcp_ask(port, &format!("hello {i}")).await.unwrap();
        if r.starts_with("two ") {
            two += 1;
        } else {
            assert!(r.starts_with("one "), "{r}");
        }
    }
    // 20% of 200 = 40; a binomial 99.99% band is roughly 18..66.
    assert!((18..=66).contains(&two), "v2 got {two} of {n}");
    let p = proxy.state.clone();
    wait_for("all closed", || metric(&p.metrics.encode(), "istio_tcp_connections_closed_total{") >= f64::from(n)).await;
    let text = proxy.metrics();
    assert_eq!(metric(&text, "istio_tcp_connections_opened_total{"), f64::from(n));
    let line = text.lines().find(|l| l.starts_with("istio_tcp_connections_opened_total{")).unwrap();
    for label in [
        "reporter=\"source\"",
        "destination_service=\"tcp-echo.default.svc.cluster.local\"",
        "destination_service_name=\"tcp-echo\"",
        "destination_service_namespace=\"default\"",
        "request_protocol=\"tcp\"",
        "response_flags=\"-\"",
    ] {
        assert!(line.contains(label), "{label} missing: {line}");
    }
    assert!(text.contains("destination_version=\"v2\""), "{text}");
}

/// Sidecar outbound: `tcp` routes on a TCP port (weights) and `tls` routes by SNI on a TLS port.
#[tokio::test]
async fn sidecar_tcp_and_tls_routes() {
    let (v1, v2) = (TcpEcho::start("one").await, TcpEcho::start("two").await);
    let pki = Pki::new("ca");
    let a = TlsEcho::start("a", &pki.server(&["a.tls.example.com"])).await;
    let b = TlsEcho::start("b", &pki.server(&["b.tls.example.com"])).await;
    let (tcp_port, tls_port, b_svc) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "{}{}{}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo]
  tcp:
  - route:
    - {{destination: {{host: echo, subset: v2}}, weight: 100}}
    - {{destination: {{host: echo, subset: v1}}, weight: 0}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure, namespace: default}}
spec:
  hosts: [a.tls.example.com, b.tls.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {tls_port}, name: tls, protocol: TLS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {a_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: sni, namespace: default}}
spec:
  hosts: [a.tls.example.com, b.tls.example.com]
  tls:
  - match: [{{port: {tls_port}, sniHosts: [b.tls.example.com]}}]
    route: [{{destination: {{host: tlsb, port: {{number: {b_svc}}}}}}}]
  - match: [{{port: {tls_port}, sniHosts: [a.tls.example.com]}}]
    route: [{{destination: {{host: a.tls.example.com, port: {{number: {tls_port}}}}}}}]
",
        service("echo", tcp_port, "TCP", &[(v1.port, "v1"), (v2.port, "v2")]),
        subsets("echo", &["v1", "v2"]),
        service("tlsb", b_svc, "TLS", &[(b.port, "v1")]),
        a_port = a.port,
    );
    let _proxy = TlsProxy::start(Dir::new("sidecar"), &yaml).await;
    for _ in 0..5 {
        assert_eq!(tcp_ask(tcp_port, "x").await.unwrap(), "two x");
    }
    let mut opts = ClientOpts::trusting(&pki.ca);
    opts.alpn.clear();
    assert_eq!(tls_ask(tls_port, "a.tls.example.com", &opts, "hi").await.unwrap(), "a hi");
    assert_eq!(tls_ask(tls_port, "b.tls.example.com", &opts, "hi").await.unwrap(), "b hi");
}

fn tcp_service_with_policy(port: u16, backend: u16, policy: &str) -> String {
    format!(
        "{}
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: echo
  trafficPolicy:
    connectionPool:
      tcp: {{{policy}}}
",
        service("echo", port, "TCP", &[(backend, "v1")])
    )
}

/// A client's half close reaches the upstream; the upstream's answer still comes back.
#[tokio::test]
async fn half_close_is_passed_on() {
    let echo = TcpEcho::start("e").await;
    let port = free_port();
    let _proxy = TlsProxy::start(Dir::new("half"), &service("echo", port, "TCP", &[(echo.port, "v1")])).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"last words\n").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, "e last words\n");
}

/// `connectionPool.tcp.idleTimeout` closes a silent connection.
#[tokio::test]
async fn idle_timeout_closes_silent_connections() {
    let echo = TcpEcho::start("e").await;
    let port = free_port();
    let yaml = tcp_service_with_policy(port, echo.port, "idleTimeout: 300ms");
    let _proxy = TlsProxy::start(Dir::new("idle"), &yaml).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(ask(&mut s, "ping").await.unwrap(), "e ping");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "closed by the proxy");
    assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
}

/// `connectionPool.tcp.maxConnections`: connections over the limit are reset (UO).
#[tokio::test]
async fn max_connections_resets_the_overflow() {
    let echo = TcpEcho::start("e").await;
    let port = free_port();
    let yaml = tcp_service_with_policy(port, echo.port, "maxConnections: 1");
    let proxy = TlsProxy::start(Dir::new("maxconn"), &yaml).await;
    let mut first = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(ask(&mut first, "one").await.unwrap(), "e one");
    assert!(tcp_ask(port, "two").await.is_err(), "over the limit");
    assert!(proxy.metrics().contains("response_flags=\"UO\""));
    drop(first);
    let mut ok = false;
    for _ in 0..100 {
        if tcp_ask(port, "three").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "a slot frees when the first connection closes");
}

/// No endpoint and unknown destinations reset the connection.
#[tokio::test]
async fn failures_reset() {
    let port = free_port();
    let proxy = TlsProxy::start(Dir::new("fail"), &service("echo", port, "TCP", &[(free_port(), "v1")])).await;
    assert!(tcp_ask(port, "x").await.is_err());
    let p = proxy.state.clone();
    wait_for("UF", || p.metrics.encode().contains("response_flags=\"UF\"")).await;
}
