//! End to end: TLS origination (DestinationRule `tls`) to real TLS backends
//! with certificates generated here: SIMPLE and MUTUAL (files and
//! `credentialName` Secrets), SNI, SAN and CA verification, insecureSkipVerify,
//! CRLs, ALPN h2, TCP ports, ISTIO_MUTUAL refused, and Secret rotation.
#![allow(clippy::unwrap_used)] // test helpers

mod common;

use common::origination::*;
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// A MESH_EXTERNAL ServiceEntry for `host` on `port` with one endpoint, 127.0.0.1:`backend`.
fn se(host: &str, port: u16, protocol: &str, backend: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: p, protocol: {protocol}}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{p: {backend}}}
---
",
        name = host.replace('.', "-")
    )
}

/// A DestinationRule for `host` with `tls` (a flow mapping).
fn dr(host: &str, tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {host}
  trafficPolicy:
    tls: {tls}
---
",
        name = host.replace('.', "-")
    )
}

struct Setup {
    ca: Ca,
    backend: TlsBackend,
    port: u16,
}

/// A backend with a certificate for `api.example.com` (and `sans`), and a free listener port.
async fn setup(client_ca: Option<&Ca>, alpn: &[&str]) -> Setup {
    let ca = Ca::new("test-ca");
    let leaf = ca.leaf(&["api.example.com", "alt.example.com"], 1001);
    let backend = TlsBackend::https("tls-backend", server_config(&leaf, client_ca, alpn)).await;
    Setup { ca, backend, port: free_port() }
}

async fn proxy(files: &[(&str, String)]) -> DirProxy {
    let dir = ConfigDir::new("tls");
    for (name, text) in files {
        dir.write(name, text);
    }
    DirProxy::start(dir, None).await
}

/// Writes `ca.pem` and the config into a new directory and starts a proxy on it.
async fn proxy_with_ca(ca_pem: &str, config: impl Fn(&str) -> String) -> DirProxy {
    let dir = ConfigDir::new("tls");
    let ca_path = dir.write("ca.pem", ca_pem).display().to_string();
    dir.write("config.yaml", &config(&ca_path));
    DirProxy::start(dir, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_verifies_the_server_and_sends_the_request_host_as_sni() {
    let s = setup(None, &["h2", "http/1.1"]).await;
    let (host, port, b) = ("api.example.com", s.port, s.backend.port());
    let p = proxy_with_ca(&s.ca.pem, |ca| {
        se(host, port, "HTTP", b) + &dr(host, &format!("{{mode: SIMPLE, caCertificates: {ca}}}"))
    })
    .await;
    let r = get(port, host, "/hello", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(j["path"], "/hello");
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(j["host"], "api.example.com");
    let hs = s.backend.handshakes();
    assert_eq!(hs[0].sni.as_deref(), Some("api.example.com"), "auto SNI from the request's host");
    assert_eq!(hs[0].alpn.as_deref(), Some("http/1.1"));
    assert!(!hs[0].client_cert);
    // Keep-alive: a second request reuses the TLS connection.
    let mut c = Client::h1(port).await;
    assert_eq!(c.get(host, "/", &[]).await.status, 200);
    assert_eq!(c.get(host, "/", &[]).await.status, 200);
    assert!(s.backend.handshakes().len() <= 2, "connections are pooled: {:?}", s.backend.handshakes());
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_name_must_match_the_auto_sni() {
    // The backend's certificate is for api.example.com; the request's host is another name.
    let s = setup(None, &[]).await;
    let (host, port, b) = ("other.example.com", s.port, s.backend.port());
    let _p = proxy_with_ca(&s.ca.pem, |ca| {
        se(host, port, "HTTP", b) + &dr(host, &format!("{{mode: SIMPLE, caCertificates: {ca}}}"))
    })
    .await;
    let r = get(port, host, "/", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(s.backend.handshakes().len(), 0, "no handshake completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_sni_is_sent_and_subject_alt_names_are_verified() {
    let s = setup(None, &[]).await;
    let (host, port, b) = ("svc.example.com", s.port, s.backend.port());
    let _p = proxy_with_ca(&s.ca.pem, |ca| {
        se(host, port, "HTTP", b)
            + &dr(
                host,
                &format!(
                    "{{mode: SIMPLE, caCertificates: {ca}, sni: alt.example.com, subjectAltNames: [alt.example.com]}}"
                ),
            )
    })
    .await;
    let r = get(port, host, "/", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(s.backend.handshakes()[0].sni.as_deref(), Some("alt.example.com"));
    assert_eq!(r.json()["host"], "svc.example.com", "the Host header stays the request's");

    // A SAN the certificate does not carry: rejected.
    let s = setup(None, &[]).await;
    let (port, b) = (s.port, s.backend.port());
    let _p = proxy_with_ca(&s.ca.pem, |ca| {
        se(host, port, "HTTP", b)
            + &dr(
                host,
                &format!(
                    "{{mode: SIMPLE, caCertificates: {ca}, sni: api.example.com, subjectAltNames: [nope.example.com]}}"
                ),
            )
    })
    .await;
    assert_eq!(get(port, host, "/", &[]).await.status, 503);

    // `sni` without SANs: only the chain is verified (as Envoy), the name is not.
    let s = setup(None, &[]).await;
    let (port, b) = (s.port, s.backend.port());
    let _p = proxy_with_ca(&s.ca.pem, |ca| {
        se(host, port, "HTTP", b) + &dr(host, &format!("{{mode: SIMPLE, caCertificates: {ca}, sni: whatever.example}}"))
    })
    .await;
    assert_eq!(get(port, host, "/", &[]).await.status, 200);
    assert_eq!(s.backend.handshakes()[0].sni.as_deref(), Some("whatever.example"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_is_rejected_unless_verification_is_skipped() {
    let s = setup(None, &[]).await;
    let other = Ca::new("other-ca");
    let (host, port, b) = ("api.example.com", s.port, s.backend.port());
    let _p = proxy_with_ca(&other.pem, |ca| {
        se(host, port, "HTTP", b) + &dr(host, &format!("{{mode: SIMPLE, caCertificates: {ca}}}"))
    })
    .await;
    let r = get(port, host, "/", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("x-weir-reason").map(|h| h.contains("UF") || h.contains("connect")), Some(true), "{r:?}");

    let s = setup(None, &[]).await;
    let (port, b) = (s.port, s.backend.port());
    let _p =
        proxy(&[("c.yaml", se(host, port, "HTTP", b) + &dr(host, "{mode: SIMPLE, insecureSkipVerify: true}"))]).await;
    assert_eq!(get(port, host, "/", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_presents_the_client_certificate_from_files_or_a_secret() {
    let client_ca = Ca::new("client-ca");
    let client = client_ca.leaf(&["client.example.com"], 7);
    let s = setup(Some(&client_ca), &[]).await;
    let (host, port, b) = ("api.example.com", s.port, s.backend.port());
    let dir = ConfigDir::new("mutual");
    let ca = dir.write("ca.pem", &s.ca.pem).display().to_string();
    let cert = dir.write("client.pem", &client.cert).display().to_string();
    let key = dir.write("client.key", &client.key).display().to_string();
    dir.write(
        "c.yaml",
        &(se(host, port, "HTTP", b)
            + &dr(
                host,
                &format!("{{mode: MUTUAL, caCertificates: {ca}, clientCertificate: {cert}, privateKey: {key}}}"),
            )),
    );
    let _p = DirProxy::start(dir, None).await;
    assert_eq!(get(port, host, "/", &[]).await.status, 200);
    assert!(s.backend.handshakes()[0].client_cert);

    // credentialName: tls.crt/tls.key/ca.crt from a Secret in the config directory.
    let (s, _p) = with_client_credential(&client_ca, &client, host, "MUTUAL").await;
    assert_eq!(get(s.port, host, "/", &[]).await.status, 200);
    assert!(s.backend.handshakes()[0].client_cert);

    // SIMPLE (no client certificate) to the same backend: the backend refuses the handshake.
    let (s, _p) = with_client_credential(&client_ca, &client, host, "SIMPLE").await;
    assert_eq!(get(s.port, host, "/", &[]).await.status, 503);
}

/// A backend that requires client certificates from `client_ca`, and a proxy originating TLS
/// `mode` to it with Secret `client-credential` (`client`'s certificate and the backend's CA).
async fn with_client_credential(client_ca: &Ca, client: &Leaf, host: &str, mode: &str) -> (Setup, DirProxy) {
    let s = setup(Some(client_ca), &[]).await;
    let (port, b) = (s.port, s.backend.port());
    let p = proxy(&[
        ("secret.yaml", secret("client-credential", Some(&client.cert), Some(&client.key), Some(&s.ca.pem))),
        (
            "c.yaml",
            se(host, port, "HTTP", b) + &dr(host, &format!("{{mode: {mode}, credentialName: client-credential}}")),
        ),
    ])
    .await;
    (s, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clusters_negotiate_h2_by_alpn() {
    let s = setup(None, &["h2", "http/1.1"]).await;
    let (host, port, b) = ("api.example.com", s.port, s.backend.port());
    let _p = proxy_with_ca(&s.ca.pem, |ca| {
        se(host, port, "HTTP2", b) + &dr(host, &format!("{{mode: SIMPLE, caCertificates: {ca}}}"))
    })
    .await;
    let r = get(port, host, "/h2", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["version"], "HTTP/2.0");
    assert_eq!(s.backend.handshakes()[0].alpn.as_deref(), Some("h2"));
    // An HTTP/1.1 client of the same proxy still gets HTTP/2 upstream (cluster protocol).
    let r = Client::h2(port).await.get(host, "/h2", &[]).await;
    assert_eq!(r.json()["version"], "HTTP/2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_revokes_the_server_certificate() {
    let s = setup(None, &[]).await;
    let (host, port, b) = ("api.example.com", s.port, s.backend.port());
    let dir = ConfigDir::new("crl");
    let ca = dir.write("ca.pem", &s.ca.pem).display().to_string();
    let crl = dir.write("crl.pem", &s.ca.crl(&[1001])).display().to_string();
    dir.write(
        "c.yaml",
        &(se(host, port, "HTTP", b) + &dr(host, &format!("{{mode: SIMPLE, caCertificates: {ca}, caCrl: {crl}}}"))),
    );
    let p = DirProxy::start(dir, None).await;
    assert_eq!(get(port, host, "/", &[]).await.status, 503, "serial 1001 is revoked");
    // A CRL that revokes another serial: accepted (after the file changes and reloads).
    std::fs::write(p.dir.path("crl.pem"), s.ca.crl(&[5])).unwrap();
    assert!(matches!(p.reload(), weir_proxy::reload::Outcome::Applied(_)));
    assert_eq!(get(port, host, "/", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_ports_originate_tls_too() {
    let ca = Ca::new("tcp-ca");
    let leaf = ca.leaf(&["db.example.com"], 3);
    let backend = TlsBackend::tcp("db", server_config(&leaf, None, &[])).await;
    let (host, port) = ("db.example.com", free_port());
    let _p = proxy_with_ca(&ca.pem, |c| {
        se(host, port, "TCP", backend.port())
            + &dr(
                host,
                &format!(
                    "{{mode: SIMPLE, caCertificates: {c}, sni: db.example.com, subjectAltNames: [db.example.com]}}"
                ),
            )
    })
    .await;
    let sock = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (r, mut w) = tokio::io::split(sock);
    w.write_all(b"ping\n").await.unwrap();
    let mut lines = tokio::io::BufReader::new(r).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(5), lines.next_line()).await.unwrap().unwrap();
    assert_eq!(line.as_deref(), Some("db: ping"));
    let hs = backend.handshakes();
    assert_eq!(hs[0].sni.as_deref(), Some("db.example.com"));
    assert_eq!(hs[0].alpn, None, "no ALPN on TCP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_mutual_fails_instead_of_sending_plaintext() {
    let b = Backend::start("plain").await;
    let (host, port) = ("reviews.default.svc.cluster.local", free_port());
    let _p = proxy(&[("c.yaml", se(host, port, "HTTP", b.port()) + &dr(host, "{mode: ISTIO_MUTUAL}"))]).await;
    let r = get(port, host, "/", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(b.connections.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_used_by_new_connections() {
    let s = setup(None, &[]).await;
    let (host, port, b) = ("api.example.com", s.port, s.backend.port());
    let p = proxy(&[
        ("secret.yaml", secret("upstream-ca", None, None, Some(&s.ca.pem))),
        ("c.yaml", se(host, port, "HTTP", b) + &dr(host, "{mode: SIMPLE, credentialName: upstream-ca}")),
    ])
    .await;
    let mut downstream = Client::h1(port).await;
    assert_eq!(downstream.get(host, "/", &[]).await.status, 200);

    // The backend moves to a certificate of a new CA: new connections fail until the Secret follows.
    let ca2 = Ca::new("ca-2");
    *s.backend.config.lock().unwrap() = server_config(&ca2.leaf(&["api.example.com"], 2002), None, &[]);
    std::fs::write(p.dir.0.join("secret.yaml"), secret("upstream-ca", None, None, Some(&ca2.pem))).unwrap();
    assert!(matches!(p.reload(), weir_proxy::reload::Outcome::Applied(_)));
    // The downstream connection survives the reload; the request goes out on a new upstream connection.
    let r = downstream.get(host, "/", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(s.backend.handshakes().len() >= 2);
}
