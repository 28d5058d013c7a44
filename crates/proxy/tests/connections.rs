//! End to end: `weir_active_connections` follows downstream connections
//! (HTTP keep-alive, HTTP/2, the explicit proxy, TCP chains), as
//! `/stats/prometheus` shows it.
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
