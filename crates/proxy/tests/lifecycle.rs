//! End to end: protocols, connection reuse, reloads, listener changes,
//! graceful shutdown, bind errors and TCP proxying.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use http::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn vs_to(host: &str, subset: &str) -> String {
    vs(host, &format!("  - route: [{{destination: {{host: {host}, subset: {subset}}}}}]"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_downstream_to_http1_upstream() {
    let b = Backend::start("b").await;
    let port = free_port();
    let _proxy = Proxy::start(&service("web", port, "HTTP", &[(b.port(), "v1")])).await;
    let mut c = Client::h2(port).await;
    for i in 0..3 {
        let r = c.get("web", &format!("/h2/{i}"), &[]).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.version, Version::HTTP_2);
        let j = r.json();
        assert_eq!(j["version"], "HTTP/1.1");
        assert_eq!(j["authority"], "web");
        assert_eq!(j["path"], format!("/h2/{i}"));
    }
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
}

/// Many streams answered together on one HTTP/2 connection, with bodies larger than the
/// write buffer and than the flow-control windows: weir holds an HTTP/2 connection's writes back
/// until the end of a pass (`coalesce`), and no frame, WINDOW_UPDATE included, may stay behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_concurrent_streams_with_large_bodies_arrive_whole() {
    let b = Backend::start("b").await;
    let port = free_port();
    let _proxy = Proxy::start(&service("web", port, "HTTP", &[(b.port(), "v1")])).await;
    let Client::H2(send) = Client::h2(port).await else { unreachable!("Client::h2 gives HTTP/2") };
    // 0 to 96 KiB: small frames, frames that fill the buffer, bodies beyond a 64 KiB window.
    echo_concurrently(send, "http://web", "/big/", 64, 1536).await;
}

/// Many HTTP/1.1 clients at once, sent upstream over one multiplexed HTTP/2 connection: every
/// request (bodies beyond h2's write buffer and the flow-control windows) and its answer arrive
/// whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_over_one_http2_upstream_arrive_whole() {
    let b = Backend::start("b").await;
    let port = free_port();
    let _proxy = Proxy::start(&service("web", port, "HTTP2", &[(b.port(), "v1")])).await;
    let calls: Vec<_> = (0..48)
        .map(|i| {
            tokio::spawn(async move {
                let body = "x".repeat(i * 2048);
                let r = Client::h1(port).await.send("POST", "web", &format!("/big/{i}"), &[], &body).await;
                (i, r)
            })
        })
        .collect();
    for call in calls {
        let (i, r) = tokio::time::timeout(Duration::from_secs(10), call).await.unwrap().unwrap();
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        let j = r.json();
        assert_eq!(j["version"], "HTTP/2.0");
        assert_eq!(j["body"].as_str().map(str::len), Some(i * 2048), "request {i} arrived whole");
    }
    assert_eq!(b.connections.load(Ordering::SeqCst), 1, "one multiplexed HTTP/2 connection upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstream_for_grpc_and_http2_ports() {
    let b = Backend::start("b").await;
    let port = free_port();
    let _proxy = Proxy::start(&service("grpc", port, "GRPC", &[(b.port(), "v1")])).await;
    let mut c = Client::h1(port).await;
    for _ in 0..3 {
        let r = c.get("grpc", "/pkg.Svc/Method", &[]).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.version, Version::HTTP_11);
        let j = r.json();
        assert_eq!(j["version"], "HTTP/2.0");
        assert_eq!(j["authority"], "grpc", "the :authority is the request's host, not the endpoint address");
    }
    assert_eq!(b.connections.load(Ordering::SeqCst), 1, "one multiplexed HTTP/2 connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let b = Backend::start("b").await;
    let port = free_port();
    let _proxy = Proxy::start(&service("ka", port, "HTTP", &[(b.port(), "v1")])).await;
    for _ in 0..5 {
        // A new downstream connection each time: the upstream pool is per endpoint, not per client.
        assert_eq!(get(port, "ka", "/", &[]).await.status, 200);
    }
    let mut c = Client::h1(port).await;
    for _ in 0..20 {
        assert_eq!(c.get("ka", "/", &[]).await.status, 200);
    }
    assert_eq!(b.count(), 25);
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_to_new_requests_on_existing_connections() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let port = free_port();
    let base = format!(
        "{}{}",
        service("rl", port, "HTTP", &[(v1.port(), "v1"), (v2.port(), "v2")]),
        subsets("rl", &["v1", "v2"])
    );
    let proxy = Proxy::start(&format!("{base}{}", vs_to("rl", "v1"))).await;
    let mut h1 = Client::h1(port).await;
    let mut h2 = Client::h2(port).await;
    assert_eq!(h1.get("rl", "/", &[]).await.backend(), "v1");
    assert_eq!(h2.get("rl", "/", &[]).await.backend(), "v1");
    proxy.publish(&format!("{base}{}", vs_to("rl", "v2")));
    assert_eq!(h1.get("rl", "/", &[]).await.backend(), "v2", "same HTTP/1.1 connection, new route");
    assert_eq!(h2.get("rl", "/", &[]).await.backend(), "v2", "same HTTP/2 connection, new route");
    assert_eq!(proxy.state.current.load().version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_binds_new_listeners_and_drains_removed_ones() {
    let b = Backend::start("b").await;
    let (p1, p2) = (free_port(), free_port());
    let one = service("one", p1, "HTTP", &[(b.port(), "v1")]);
    let two = service("two", p2, "HTTP", &[(b.port(), "v1")]);
    let proxy = Proxy::start(&one).await;
    let mut kept = Client::h1(p1).await;
    assert_eq!(kept.get("one", "/", &[]).await.status, 200);
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", p2)).await.is_err());

    proxy.publish(&format!("{one}{two}"));
    wait_for_connect(p2).await;
    assert_eq!(get(p2, "two", "/", &[]).await.status, 200);
    assert_eq!(kept.get("one", "/", &[]).await.status, 200, "unchanged listeners keep their connections");

    proxy.publish(&two);
    wait_for_refused(p1).await;
    assert_eq!(get(p2, "two", "/", &[]).await.status, 200);
}

async fn wait_for_connect(port: u16) {
    for _ in 0..1000 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("port {port} never opened");
}

async fn wait_for_refused(port: u16) {
    for _ in 0..1000 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("port {port} never closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let b = Backend::start("b").await;
    let port = free_port();
    let proxy = Proxy::start(&service("gs", port, "HTTP", &[(b.port(), "v1")])).await;
    let mut idle = Client::h1(port).await;
    assert_eq!(idle.get("gs", "/", &[]).await.status, 200);
    let in_flight = tokio::spawn(async move { get(port, "gs", "/slow", &[("x-test-delay-ms", "500")]).await });
    wait_for("the slow request upstream", || b.seen().iter().any(|s| s.path == "/slow")).await;
    proxy.shutdown();
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request completes");
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), proxy.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "serve returns after draining: {result:?}");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "no longer accepting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_closes_idle_connections_at_once_and_sends_http2_goaway() {
    let b = Backend::start("b").await;
    let port = free_port();
    let proxy = Proxy::start(&service("gd", port, "HTTP", &[(b.port(), "v1")])).await;
    let request = |path: &str, delay: &str| {
        let req = http::Request::get(format!("http://gd{path}")).header("host", "gd").header("x-test-delay-ms", delay);
        req.body(http_body_util::Full::<bytes::Bytes>::default()).unwrap()
    };
    // An idle HTTP/1.1 keep-alive connection that has served one request.
    let sock = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut h1, h1_conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(sock)).await.unwrap();
    let h1_conn = tokio::spawn(h1_conn);
    assert_eq!(h1.send_request(request("/", "0")).await.unwrap().status(), 200);
    // An HTTP/2 connection with a slow request in flight.
    let sock = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(sock);
    let (h2, h2_conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    let h2_conn = tokio::spawn(h2_conn);
    let mut send = h2.clone();
    let slow = tokio::spawn(async move { send.send_request(request("/slow", "1000")).await.map(|r| r.status()) });
    wait_for("the slow request upstream", || b.seen().iter().any(|s| s.path == "/slow")).await;

    proxy.shutdown();
    // The idle connection is closed by weir at once, not after the drain.
    tokio::time::timeout(Duration::from_secs(5), h1_conn).await.expect("idle HTTP/1.1 connection closed").unwrap().ok();
    assert!(!slow.is_finished(), "the idle connection closed before the in-flight request ended");
    // The request in flight on the HTTP/2 connection completes; the connection then ends (GOAWAY).
    assert_eq!(slow.await.unwrap().unwrap(), 200);
    tokio::time::timeout(Duration::from_secs(5), h2_conn).await.expect("HTTP/2 connection ended").unwrap().ok();
    let mut late = h2.clone();
    assert!(late.send_request(request("/late", "0")).await.is_err(), "no new stream after GOAWAY");
    let result = tokio::time::timeout(Duration::from_secs(5), proxy.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "serve returns after draining: {result:?}");
    assert!(!b.seen().iter().any(|s| s.path == "/late"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_bounds_shutdown() {
    let b = Backend::start("b").await;
    let port = free_port();
    let mut options = options(0);
    options.drain_timeout = std::time::Duration::from_millis(200);
    let proxy = Proxy::start_with(options, &service("dt", port, "HTTP", &[(b.port(), "v1")])).await;
    let stuck = tokio::spawn(async move { get(port, "dt", "/", &[("x-test-delay-ms", "10000")]).await });
    wait_for("the request upstream", || b.count() == 1).await;
    let started = std::time::Instant::now();
    proxy.shutdown();
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), proxy.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    stuck.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_a_bind_error_naming_the_objects() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let state = weir_proxy::State::new(options(0), runtime(&service("busy", port, "HTTP", &[(1, "v1")]), 1, None));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let err = weir_proxy::server::serve(state.clone(), rx).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("ServiceEntry default/busy"), "{text}");
    assert!(!state.ready.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_ports_are_proxied() {
    let echo_port = tcp_echo_server().await;
    let port = free_port();
    let _proxy = Proxy::start(&service("echo", port, "TCP", &[(echo_port, "v1")])).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_keeps_tcp_connections_until_its_timeout_then_closes_them() {
    let echo_port = tcp_echo_server().await;
    let port = free_port();
    let mut options = options(0);
    options.drain_timeout = Duration::from_millis(300);
    let proxy = Proxy::start_with(options, &service("echo", port, "TCP", &[(echo_port, "v1")])).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buf = [0u8; 4];
    s.write_all(b"ping").await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
    let started = std::time::Instant::now();
    proxy.shutdown();
    // Still proxied while the drain waits for it...
    s.write_all(b"pong").await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    // ...and closed by weir once the drain timeout passes.
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed").unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(250), "closed after {:?}", started.elapsed());
    let result = tokio::time::timeout(Duration::from_secs(5), proxy.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_moving_to_another_address_is_rebound() {
    let b = Backend::start("b").await;
    let (gw_port, svc_port) = (free_port(), free_port());
    let gateway = |bind: &str| {
        format!(
            "{}
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gw_port}, name: http, protocol: HTTP}}
    hosts: ['*']
{bind}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: gw, namespace: default}}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - route: [{{destination: {{host: svc, port: {{number: {svc_port}}}}}}}]
",
            service("svc", svc_port, "HTTP", &[(b.port(), "v1")])
        )
    };
    let mut options = options(0);
    options.bind = "0.0.0.0".parse().unwrap();
    let proxy = Proxy::start_with(options, &gateway("")).await;
    assert_eq!(get(gw_port, "any", "/", &[]).await.status, 200);
    // 0.0.0.0:P -> 127.0.0.2:P: the wildcard socket must close before the new one can bind.
    proxy.publish(&gateway("    bind: 127.0.0.2"));
    // Until the old wildcard socket is closed a connection may still land on it and be reset
    // as it drains; the new listener must answer within the bounded wait.
    let mut answered = None;
    for _ in 0..1000 {
        if let Ok(sock) = tokio::net::TcpStream::connect(("127.0.0.2", gw_port)).await {
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(sock)).await.unwrap();
            tokio::spawn(conn);
            let req = http::Request::builder()
                .uri("/")
                .header("host", "any")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            if let Ok(resp) = send.send_request(req).await {
                answered = Some(resp.status());
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(answered, Some(http::StatusCode::OK));
    wait_for_refused(gw_port).await;
}

/// A rough throughput figure, not a benchmark: `cargo test --release -p weir-proxy --test lifecycle
/// throughput -- --ignored --nocapture`. Backend, proxy and clients share one process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn throughput_smoke() {
    let b = Backend::start("b").await;
    let port = free_port();
    let _proxy = Proxy::start(&service("tp", port, "HTTP", &[(b.port(), "v1")])).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        tasks.push(tokio::spawn(async move {
            let mut c = Client::h1(port).await;
            let mut n = 0u64;
            while std::time::Instant::now() < deadline {
                assert_eq!(c.get("tp", "/", &[]).await.status, 200);
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    println!("{} requests/s through the proxy (32 connections, HTTP/1.1)", total / 3);
}
