//! End to end: ServiceEntry resolution through a DNS server of the test
//! (hickory-proto on loopback, chosen addresses and TTLs): DNS (every
//! address, refreshed by TTL), DNS_ROUND_ROBIN (the first address), names
//! that do not resolve, and NONE (the destination the client asked for).
#![allow(clippy::unwrap_used)] // test helpers

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::origination::*;
use common::*;
use weir_proxy::resolve::Dns;

fn se(host: &str, port: u16, resolution: &str, target_port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext, namespace: default}}
spec:
  hosts: [{host}]
  location: MESH_EXTERNAL
  resolution: {resolution}
  ports: [{{number: {port}, name: http, protocol: HTTP, targetPort: {target_port}}}]
"
    )
}

/// Two backends on 127.0.0.1 and 127.0.0.2, same port.
async fn pair() -> (PlainBackend, PlainBackend, u16) {
    loop {
        let a = PlainBackend::bind("a", "127.0.0.1:0".parse().unwrap()).await;
        let port = a.addr.port();
        if let Ok(b) = tokio::net::TcpListener::bind(("127.0.0.2", port)).await {
            drop(b);
            let b = PlainBackend::bind("b", SocketAddr::from(([127, 0, 0, 2], port))).await;
            return (a, b, port);
        }
    }
}

async fn start(dns: &DnsServer, yaml: &str) -> DirProxy {
    let dir = ConfigDir::new("dns");
    dir.write("c.yaml", yaml);
    DirProxy::start(dir, Some(Dns::with_min_refresh(vec![dns.addr], Duration::from_millis(100)))).await
}

/// Which backends answer `n` requests.
async fn answering(port: u16, host: &str, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let r = get(port, host, "/", &[]).await;
        seen.insert(if r.status == 200 { r.backend() } else { format!("status {}", r.status) });
    }
    seen
}

/// Polls until `n` requests are answered by exactly `want` (bounded: 10 s).
async fn wait_answering(port: u16, host: &str, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let mut last = BTreeSet::new();
    for _ in 0..200 {
        last = answering(port, host, 12).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {want:?} to answer, got {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_balances_over_every_address_and_follows_the_ttl() {
    let (_a, _b, backend_port) = pair().await;
    let dns = DnsServer::start().await;
    dns.set("ext.test", &["127.0.0.1", "127.0.0.2"], 1);
    let port = free_port();
    let p = start(&dns, &se("ext.test", port, "DNS", backend_port)).await;
    wait_answering(port, "ext.test", &["a", "b"]).await;
    let q = dns.queries.load(Ordering::SeqCst);

    // The answer changes: once the TTL runs out, only the remaining address gets traffic.
    dns.set("ext.test", &["127.0.0.2"], 1);
    wait_answering(port, "ext.test", &["b"]).await;
    assert!(dns.queries.load(Ordering::SeqCst) > q, "the name was asked again");
    // The runtime was rebuilt with one endpoint per address, without a config change.
    assert_eq!(p.state.current.load().version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_round_robin_uses_one_address_at_a_time() {
    let (_a, _b, backend_port) = pair().await;
    let dns = DnsServer::start().await;
    dns.set("rr.test", &["127.0.0.1", "127.0.0.2"], 1);
    let port = free_port();
    let _p = start(&dns, &se("rr.test", port, "DNS_ROUND_ROBIN", backend_port)).await;
    wait_answering(port, "rr.test", &["a"]).await;
    dns.set("rr.test", &["127.0.0.2", "127.0.0.1"], 1);
    wait_answering(port, "rr.test", &["b"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_without_records_gets_503_until_it_resolves() {
    let (_a, _b, backend_port) = pair().await;
    let dns = DnsServer::start().await;
    let port = free_port();
    let _p = start(&dns, &se("later.test", port, "DNS", backend_port)).await;
    let r = get(port, "later.test", "/", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    dns.set("later.test", &["127.0.0.2"], 1);
    wait_answering(port, "later.test", &["b"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_forwards_to_the_destination_the_client_asked_for() {
    // The listener takes 127.0.0.1:PORT; the destination is 127.0.0.2:PORT (by name through the test DNS).
    let port = free_port();
    let b = PlainBackend::bind("dest", SocketAddr::from(([127, 0, 0, 2], port))).await;
    let dns = DnsServer::start().await;
    dns.set("dest.test", &["127.0.0.2"], 30);
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext, namespace: default}}
spec:
  hosts: [dest.test]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
"
    );
    let _p = start(&dns, &yaml).await;
    let r = get(port, &format!("dest.test:{port}"), "/", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), "dest");
    assert_eq!(b.hits.load(Ordering::SeqCst), 1);
}
