//! Gateway TLS end to end: termination (SIMPLE with SNI-selected
//! certificates, MUTUAL, OPTIONAL_MUTUAL), rotation, httpsRedirect, broken
//! credentials, PASSTHROUGH and AUTO_PASSTHROUGH, TLS-terminated TCP, and curl.
#![allow(clippy::unwrap_used)]

mod common;

use common::tls::{ClientOpts, Dir, Pki, TcpEcho, TlsEcho, TlsProxy, connect, https_get, metric, secret, tls_ask};
use common::{Backend, echo_concurrently, free_port, get, service, wait_for};

fn gateway(servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  servers:
{servers}---
"
    )
}

fn http_vs(name: &str, host: &str, svc: &str, port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: ['{host}']
  gateways: [gw]
  http:
  - route: [{{destination: {{host: {svc}, port: {{number: {port}}}}}}}]
---
"
    )
}

/// Two HTTPS servers on one port, certificates from a Secret and from files, chosen by SNI.
#[tokio::test]
async fn simple_termination_picks_the_certificate_by_sni() {
    let pki = Pki::new("ca");
    let a_cert = pki.server(&["a.example.com"]);
    let b_cert = pki.server_rsa(&["b.example.com"]);
    let dir = Dir::new("simple");
    let b_crt = dir.write("b.crt", &b_cert.cert);
    let b_key = dir.write("b.key", &b_cert.key);
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let port = free_port();
    let yaml = format!(
        "{}{}{}{}{}{}",
        secret("a-cert", "default", &a_cert, None),
        gateway(&format!(
            "  - port: {{number: {port}, name: https-a, protocol: HTTPS}}
    hosts: [a.example.com]
    tls: {{mode: SIMPLE, credentialName: a-cert}}
  - port: {{number: {port}, name: https-b, protocol: HTTPS}}
    hosts: [b.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {b_crt}, privateKey: {b_key}}}
"
        )),
        service("a", 8001, "HTTP", &[(a.port(), "v1")]),
        service("b", 8002, "HTTP", &[(b.port(), "v1")]),
        http_vs("a", "a.example.com", "a", 8001),
        http_vs("b", "b.example.com", "b", 8002),
    );
    let proxy = TlsProxy::start(dir, &yaml).await;
    assert!(proxy.state.current.load().tls_errors().is_empty(), "{:?}", proxy.state.current.load().tls_errors());
    let opts = ClientOpts::trusting(&pki.ca);

    // The client verifies the certificate against the SNI name: success means the right one was served.
    let r = https_get(port, "a.example.com", "a.example.com", "/x", &opts).await.unwrap();
    assert_eq!((r.status, r.backend(), r.version), (200, "a".to_string(), http::Version::HTTP_2), "{r:?}");
    assert_eq!(r.upstream_header("x-forwarded-proto").as_deref(), Some("https"), "terminated TLS: scheme https");
    let mut h1 = opts.clone();
    h1.alpn = vec![b"http/1.1".to_vec()];
    let r = https_get(port, "b.example.com", "b.example.com", "/y", &h1).await.unwrap();
    assert_eq!((r.status, r.backend(), r.version), (200, "b".to_string(), http::Version::HTTP_11), "{r:?}");
    let mut none = opts.clone();
    none.alpn.clear();
    let r = https_get(port, "b.example.com", "b.example.com", "/y", &none).await.unwrap();
    assert_eq!(r.status, 200, "no ALPN: HTTP/1.1");

    // SNI a, Host b: routed by the chain of SNI a, whose route table has no b.example.com.
    let r = https_get(port, "a.example.com", "b.example.com", "/", &opts).await.unwrap();
    assert_eq!(r.status, 404, "{r:?}");

    // Unknown SNI: no filter chain, the handshake is reset.
    let Err(e) = connect(port, "c.example.com", &opts).await else { panic!("unknown SNI must fail") };
    assert!(matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof), "{e:?}");
}

/// HTTP/2 over TLS with many streams at once and bodies beyond the write buffer and the
/// flow-control windows: the batched writes of an HTTP/2 connection (`coalesce`) sit above TLS,
/// so every record must still reach the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_carries_concurrent_streams_with_large_bodies() {
    let pki = Pki::new("ca");
    let cert = pki.server(&["a.example.com"]);
    let dir = Dir::new("h2-streams");
    let a = Backend::start("a").await;
    let port = free_port();
    let yaml = format!(
        "{}{}{}{}",
        secret("a-cert", "default", &cert, None),
        gateway(&format!(
            "  - port: {{number: {port}, name: https-a, protocol: HTTPS}}
    hosts: [a.example.com]
    tls: {{mode: SIMPLE, credentialName: a-cert}}
"
        )),
        service("a", 8001, "HTTP", &[(a.port(), "v1")]),
        http_vs("a", "a.example.com", "a", 8001),
    );
    let _proxy = TlsProxy::start(dir, &yaml).await;
    let tls = connect(port, "a.example.com", &ClientOpts::trusting(&pki.ca)).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    echo_concurrently(send, "https://a.example.com", "/s/", 32, 3072).await;
}

/// MUTUAL: a client certificate from the CA (and with an allowed SAN) is required.
#[tokio::test]
async fn mutual_requires_a_valid_client_certificate() {
    let pki = Pki::new("ca");
    let other = Pki::new("other");
    let server_cert = pki.server(&["m.example.com"]);
    let dir = Dir::new("mutual");
    let backend = Backend::start("m").await;
    let (port, port_opt) = (free_port(), free_port());
    let yaml = format!(
        "{}{}{}{}",
        secret("m-cert", "default", &server_cert, Some(&pki.ca)),
        gateway(&format!(
            "  - port: {{number: {port}, name: https, protocol: HTTPS}}
    hosts: [m.example.com]
    tls: {{mode: MUTUAL, credentialName: m-cert, subjectAltNames: [good.client]}}
  - port: {{number: {port_opt}, name: https-opt, protocol: HTTPS}}
    hosts: [m.example.com]
    tls: {{mode: OPTIONAL_MUTUAL, credentialName: m-cert}}
"
        )),
        service("m", 8003, "HTTP", &[(backend.port(), "v1")]),
        http_vs("m", "m.example.com", "m", 8003),
    );
    let _proxy = TlsProxy::start(dir, &yaml).await;
    let base = ClientOpts::trusting(&pki.ca);

    let good = base.clone().with_cert(&pki.client("good.client"));
    let r = https_get(port, "m.example.com", "m.example.com", "/", &good).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    for (what, opts) in [
        ("no client certificate", base.clone()),
        ("a certificate from another CA", base.clone().with_cert(&other.client("good.client"))),
        ("a SAN not in subjectAltNames", base.clone().with_cert(&pki.client("bad.client"))),
    ] {
        let r = https_get(port, "m.example.com", "m.example.com", "/", &opts).await;
        assert!(r.is_err(), "{what}: {r:?}");
    }

    // OPTIONAL_MUTUAL: no certificate is fine, a bad one is not.
    let r = https_get(port_opt, "m.example.com", "m.example.com", "/", &base).await.unwrap();
    assert_eq!(r.status, 200);
    let r =
        https_get(port_opt, "m.example.com", "m.example.com", "/", &base.clone().with_cert(&other.client("x"))).await;
    assert!(r.is_err(), "{r:?}");
}

/// A rotated certificate is served to new handshakes; an open connection keeps working.
#[tokio::test]
async fn rotation_serves_the_new_certificate_to_new_handshakes() {
    let (old_ca, new_ca) = (Pki::new("old"), Pki::new("new"));
    let dir = Dir::new("rotate");
    let crt = dir.write("r.crt", &old_ca.server(&["r.example.com"]).cert);
    let backend = Backend::start("r").await;
    let port = free_port();
    let first = old_ca.server(&["r.example.com"]);
    dir.write("r.crt", &first.cert);
    let key = dir.write("r.key", &first.key);
    let yaml = format!(
        "{}{}{}",
        gateway(&format!(
            "  - port: {{number: {port}, name: https, protocol: HTTPS}}
    hosts: [r.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {crt}, privateKey: {key}}}
"
        )),
        service("r", 8004, "HTTP", &[(backend.port(), "v1")]),
        http_vs("r", "r.example.com", "r", 8004),
    );
    let proxy = TlsProxy::start(dir, &yaml).await;
    let old_opts = ClientOpts::trusting(&old_ca.ca);
    let new_opts = ClientOpts::trusting(&new_ca.ca);
    let mut h1 = old_opts.clone();
    h1.alpn = vec![b"http/1.1".to_vec()];
    let kept = connect(port, "r.example.com", &h1).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(kept)).await.unwrap();
    tokio::spawn(conn);
    assert!(https_get(port, "r.example.com", "r.example.com", "/", &new_opts).await.is_err());

    let second = new_ca.server(&["r.example.com"]);
    proxy.dir.write("r.crt", &second.cert);
    proxy.dir.write("r.key", &second.key);
    proxy.publish(&yaml);
    let r = https_get(port, "r.example.com", "r.example.com", "/", &new_opts).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(https_get(port, "r.example.com", "r.example.com", "/", &old_opts).await.is_err());
    // The connection opened before the rotation still serves requests.
    let req = http::Request::builder()
        .uri("/")
        .header("host", "r.example.com")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
}

/// httpsRedirect: plain HTTP gets a 301 to https; the HTTPS server serves.
#[tokio::test]
async fn https_redirect_answers_301() {
    let pki = Pki::new("ca");
    let dir = Dir::new("redirect");
    let backend = Backend::start("h").await;
    let (http_port, https_port) = (free_port(), free_port());
    let yaml = format!(
        "{}{}{}{}",
        secret("h-cert", "default", &pki.server(&["h.example.com"]), None),
        gateway(&format!(
            "  - port: {{number: {http_port}, name: http, protocol: HTTP}}
    hosts: [h.example.com]
    tls: {{httpsRedirect: true}}
  - port: {{number: {https_port}, name: https, protocol: HTTPS}}
    hosts: [h.example.com]
    tls: {{mode: SIMPLE, credentialName: h-cert}}
"
        )),
        service("h", 8005, "HTTP", &[(backend.port(), "v1")]),
        http_vs("h", "h.example.com", "h", 8005),
    );
    let _proxy = TlsProxy::start(dir, &yaml).await;
    let r = get(http_port, "h.example.com", "/a?b=c", &[]).await;
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location").as_deref(), Some("https://h.example.com/a?b=c"));
    assert_eq!(backend.count(), 0);
    let r =
        https_get(https_port, "h.example.com", "h.example.com", "/a", &ClientOpts::trusting(&pki.ca)).await.unwrap();
    assert_eq!(r.status, 200);
}

/// A chain whose Secret is missing resets its handshakes, says why in the config dump, and
/// the other chains of the port keep serving.
#[tokio::test]
async fn a_missing_secret_resets_only_its_chain() {
    let pki = Pki::new("ca");
    let dir = Dir::new("missing");
    let backend = Backend::start("ok").await;
    let port = free_port();
    let yaml = format!(
        "{}{}{}{}{}",
        secret("ok-cert", "default", &pki.server(&["ok.example.com"]), None),
        gateway(&format!(
            "  - port: {{number: {port}, name: https-ok, protocol: HTTPS}}
    hosts: [ok.example.com]
    tls: {{mode: SIMPLE, credentialName: ok-cert}}
  - port: {{number: {port}, name: https-bad, protocol: HTTPS}}
    hosts: [bad.example.com]
    tls: {{mode: SIMPLE, credentialName: nope}}
"
        )),
        service("ok", 8006, "HTTP", &[(backend.port(), "v1")]),
        http_vs("ok", "ok.example.com", "ok", 8006),
        http_vs("bad", "bad.example.com", "ok", 8006),
    );
    let proxy = TlsProxy::start(dir, &yaml).await;
    let opts = ClientOpts::trusting(&pki.ca);
    assert!(connect(port, "bad.example.com", &opts).await.is_err());
    assert_eq!(https_get(port, "ok.example.com", "ok.example.com", "/", &opts).await.unwrap().status, 200);
    let dump = String::from_utf8(weir_proxy::admin::config_dump(&proxy.state).unwrap()).unwrap();
    assert!(dump.contains("\"tls_errors\"") && dump.contains("credentialName \\\"nope\\\": no Secret"), "{dump}");
}

/// PASSTHROUGH: the upstream terminates TLS; routes by SNI (exact and wildcard).
#[tokio::test]
async fn passthrough_routes_by_sni_without_terminating() {
    let pki = Pki::new("backend-ca");
    let exact = TlsEcho::start("exact", &pki.server(&["nginx.example.com"])).await;
    let wild = TlsEcho::start("wild", &pki.server(&["*.wild.example.com", "a.b.wild.example.com"])).await;
    let port = free_port();
    let yaml = format!(
        "{}{}{}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pass, namespace: default}}
spec:
  hosts: [nginx.example.com, '*.wild.example.com']
  gateways: [gw]
  tls:
  - match: [{{port: {port}, sniHosts: [nginx.example.com]}}]
    route: [{{destination: {{host: exact, port: {{number: 443}}}}}}]
  - match: [{{port: {port}, sniHosts: ['*.wild.example.com']}}]
    route: [{{destination: {{host: wild, port: {{number: 443}}}}}}]
",
        gateway(&format!(
            "  - port: {{number: {port}, name: tls, protocol: TLS}}
    hosts: [nginx.example.com, '*.wild.example.com']
    tls: {{mode: PASSTHROUGH}}
"
        )),
        service("exact", 443, "TLS", &[(exact.port, "v1")]),
        service("wild", 443, "TLS", &[(wild.port, "v1")]),
    );
    let _proxy = TlsProxy::start(Dir::new("pass"), &yaml).await;
    let mut opts = ClientOpts::trusting(&pki.ca);
    opts.alpn.clear();
    assert_eq!(tls_ask(port, "nginx.example.com", &opts, "hi").await.unwrap(), "exact hi");
    assert_eq!(tls_ask(port, "a.b.wild.example.com", &opts, "hi").await.unwrap(), "wild hi");
    assert!(tls_ask(port, "other.example.com", &opts, "hi").await.is_err(), "unknown SNI is reset");
}

/// AUTO_PASSTHROUGH: SNI `outbound_.PORT_.SUBSET_.HOST` picks the cluster, no VirtualService.
#[tokio::test]
async fn auto_passthrough_routes_by_the_cluster_in_the_sni() {
    let pki = Pki::new("mesh-ca");
    let host = "db.default.svc.cluster.local";
    let v1 = TlsEcho::start("v1", &pki.server(&[&format!("outbound_.9443_._.{host}")])).await;
    let v2 = TlsEcho::start("v2", &pki.server(&[&format!("outbound_.9443_.v2_.{host}")])).await;
    let port = free_port();
    let yaml = format!(
        "{}{}
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: db, namespace: default}}
spec:
  host: db
  subsets:
  - {{name: v2, labels: {{version: v2}}}}
",
        gateway(&format!(
            "  - port: {{number: {port}, name: tls, protocol: TLS}}
    hosts: ['*.local']
    tls: {{mode: AUTO_PASSTHROUGH}}
"
        )),
        service("db", 9443, "TLS", &[(v1.port, "v1"), (v2.port, "v2")]),
    );
    let _proxy = TlsProxy::start(Dir::new("auto"), &yaml).await;
    let mut opts = ClientOpts::trusting(&pki.ca);
    opts.alpn.clear();
    // The subset's name: only the v2 endpoint, whose certificate is for exactly that SNI.
    let sni = format!("outbound_.9443_.v2_.{host}");
    for _ in 0..5 {
        assert_eq!(tls_ask(port, &sni, &opts, "hello").await.unwrap(), "v2 hello");
    }
    // Without a subset both endpoints serve; the client only accepts v1's certificate for this name.
    let sni = format!("outbound_.9443_._.{host}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        if let Ok(r) = tls_ask(port, &sni, &opts, "hello").await {
            seen.insert(r);
        }
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["v1 hello"]);
    assert!(tls_ask(port, "outbound_.1_._.nothing.local", &opts, "x").await.is_err());
    assert!(tls_ask(port, "plain.example.com", &opts, "x").await.is_err());
}

/// A TLS server with mode SIMPLE and a `tcp` route: the proxy decrypts and forwards bytes.
#[tokio::test]
async fn terminated_tls_forwards_plain_tcp() {
    let pki = Pki::new("ca");
    let echo = TcpEcho::start("db").await;
    let port = free_port();
    let yaml = format!(
        "{}{}{}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db.example.com]
  gateways: [gw]
  tcp:
  - route: [{{destination: {{host: db, port: {{number: 5432}}}}}}]
",
        secret("db-cert", "default", &pki.server(&["db.example.com"]), None),
        gateway(&format!(
            "  - port: {{number: {port}, name: tls-db, protocol: TLS}}
    hosts: [db.example.com]
    tls: {{mode: SIMPLE, credentialName: db-cert}}
"
        )),
        service("db", 5432, "TCP", &[(echo.port, "v1")]),
    );
    let proxy = TlsProxy::start(Dir::new("tls-tcp"), &yaml).await;
    let mut opts = ClientOpts::trusting(&pki.ca);
    opts.alpn.clear();
    let mut s = connect(port, "db.example.com", &opts).await.unwrap();
    assert_eq!(common::tls::ask(&mut s, "select 1").await.unwrap(), "db select 1");
    assert_eq!(common::tls::ask(&mut s, "select 2").await.unwrap(), "db select 2");
    drop(s);
    let p = proxy.state.clone();
    wait_for("closed metric", || metric(&p.metrics.encode(), "istio_tcp_connections_closed_total{") >= 1.0).await;
    let text = proxy.metrics();
    assert_eq!(metric(&text, "istio_tcp_received_bytes_total{"), 18.0, "{text}");
    assert_eq!(metric(&text, "istio_tcp_sent_bytes_total{"), 24.0, "{text}");
}

/// curl, when installed: SIMPLE with `--resolve`, HTTP/2 by ALPN.
#[tokio::test]
async fn curl_reaches_a_simple_gateway() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl not installed; skipped");
        return;
    }
    let pki = Pki::new("ca");
    let dir = Dir::new("curl");
    let ca = dir.write("ca.crt", &pki.ca);
    let backend = Backend::start("c").await;
    let port = free_port();
    let yaml = format!(
        "{}{}{}{}",
        secret("c-cert", "default", &pki.server(&["curl.example.com"]), None),
        gateway(&format!(
            "  - port: {{number: {port}, name: https, protocol: HTTPS}}
    hosts: [curl.example.com]
    tls: {{mode: SIMPLE, credentialName: c-cert}}
"
        )),
        service("c", 8007, "HTTP", &[(backend.port(), "v1")]),
        http_vs("c", "curl.example.com", "c", 8007),
    );
    let _proxy = TlsProxy::start(dir, &yaml).await;
    let args: Vec<String> = [
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        "--cacert",
        &ca,
        "--resolve",
        &format!("curl.example.com:{port}:127.0.0.1"),
        &format!("https://curl.example.com:{port}/status/200"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || std::process::Command::new("curl").args(args).output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, "200 2", "stderr: {}", String::from_utf8_lossy(&out.stderr));
}
