//! Istio's task 13, Egress TLS Origination (`../shared/spec/tasks.md`),
//! reproduced with the real `weir run` binary as the client's sidecar.
//!
//! How the task is adapted (and only that):
//! - `edition.cnn.com` is played by two local servers on 127.0.0.2: plain
//!   HTTP answering `301 Moved Permanently` to `https://edition.cnn.com/...`,
//!   and HTTPS (certificate for `edition.cnn.com` from a CA made here)
//!   answering 200. Ports 80 and 443 become free ports (also weir's sidecar
//!   listener ports on 127.0.0.1), and the ServiceEntry gets one endpoint,
//!   127.0.0.2, instead of public DNS (resolution stays `DNS`).
//! - The DestinationRule has no `caCertificates`, so weir verifies with the
//!   system CA bundle (Istio's default); `SSL_CERT_FILE` points weir at the
//!   test CA, as a system bundle that includes it would.
//! - `curl http://edition.cnn.com/politics` from the sleep pod becomes a GET to
//!   the sidecar listener with `Host: edition.cnn.com`.
#![allow(clippy::unwrap_used)] // test helpers

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// A site on 127.0.0.2:`port` answering every request with `response` (after the request head),
/// over TLS when `tls` is set.
fn site(port: u16, tls: Option<Arc<rustls::ServerConfig>>, response: &'static str) {
    let listener = TcpListener::bind(("127.0.0.2", port)).unwrap();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            let tls = tls.clone();
            std::thread::spawn(move || {
                let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
                match tls {
                    Some(cfg) => {
                        let Ok(conn) = rustls::ServerConnection::new(cfg) else { return };
                        serve(rustls::StreamOwned::new(conn, sock), response);
                    }
                    None => serve(sock, response),
                }
            });
        }
    });
}

fn serve<S: std::io::Read + Write>(s: S, response: &str) {
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => {
                if r.get_mut().write_all(response.as_bytes()).is_err() || r.get_mut().flush().is_err() {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}

const MOVED: &str =
    "HTTP/1.1 301 Moved Permanently\r\nlocation: https://edition.cnn.com/politics\r\ncontent-length: 0\r\n\r\n";
const OK: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 15\r\n\r\n<html>ok</html>";

fn tls_config(ca_pem_out: &std::path::Path) -> Arc<rustls::ServerConfig> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    std::fs::write(ca_pem_out, ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["edition.cnn.com".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

fn service_entry(http: u16, https: u16, target_port: Option<u16>) -> String {
    let target = target_port.map(|p| format!("\n    targetPort: {p}")).unwrap_or_default();
    format!(
        "apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: edition-cnn-com
spec:
  hosts:
  - edition.cnn.com
  ports:
  - number: {http}
    name: http-port
    protocol: HTTP{target}
  - number: {https}
    name: https-port
    protocol: HTTPS
  resolution: DNS
  endpoints:
  - address: 127.0.0.2
"
    )
}

#[test]
fn task_13_egress_tls_origination() {
    let dir = TempDir::new("egress-tls");
    let config = dir.config_dir();
    let ca = dir.path().join("ca.pem");
    let (http, https) = (free_port(), free_port());
    site(http, None, MOVED);
    site(https, Some(tls_config(&ca)), OK);

    // Step 1: the ServiceEntry alone; plain HTTP to the site answers 301 (to https).
    write_objects(&config, &service_entry(http, https, None));
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = weir_run(&config, admin, &["--role", "sidecar", "--concurrency", "2"]);
    cmd.env("SSL_CERT_FILE", &ca);
    let weir = Weir::start(cmd, admin, weir_log(&config));
    let sidecar: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let r = request(sidecar, "edition.cnn.com", "/politics", &[]);
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), Some("https://edition.cnn.com/politics"));

    // Step 2: targetPort 443 + DestinationRule port-level `tls.mode: SIMPLE`: the sidecar originates
    // TLS, and the first and only response is 200.
    write_objects(
        &config,
        &format!(
            "{}---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: edition-cnn-com
spec:
  host: edition.cnn.com
  trafficPolicy:
    portLevelSettings:
    - port:
        number: {http}
      tls:
        mode: SIMPLE # initiates HTTPS when accessing edition.cnn.com
",
            service_entry(http, https, Some(https))
        ),
    );
    let mut last = None;
    wait_for("TLS origination to serve", Duration::from_secs(10), || {
        let r = request(sidecar, "edition.cnn.com", "/politics", &[]);
        let ok = r.status == 200;
        last = Some(r);
        ok
    });
    let r = last.unwrap();
    assert_eq!(r.body, "<html>ok</html>", "{r:?}");
    assert!(r.header("location").is_none());
    drop(weir);
}

#[test]
fn istio_mutual_sample_says_it_needs_mesh_identity() {
    // Istio's destination-rule-all-mtls.yaml: valid Istio, but weir has no mesh identity yet.
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/spec/samples/bookinfo/networking/destination-rule-all-mtls.yaml"
    );
    if !std::path::Path::new(sample).exists() {
        eprintln!("skipped: {sample} not present");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_weir")).args(["validate", sample]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "a warning, not an error: {text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("needs mesh identity")).collect();
    assert_eq!(lines.len(), 4, "one warning per DestinationRule of the sample: {text}");
    assert!(lines[0].starts_with("warning: ") && lines[0].contains("spec.trafficPolicy.tls.mode"), "{text}");
}
