//! Test helpers for TLS and TCP: a CA issuing certificates (rcgen), Secrets
//! as YAML, a proxy whose runtime carries the Secrets and certificate files
//! of a temporary config directory, rustls clients, and TCP/TLS echo backends.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_compile::Node;
use weir_proxy::server::ServeError;
use weir_proxy::{Options, Runtime, State};

use super::{Proxy, Reply, compile_for, load_checked, options};

/// A certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: String,
    pub key: String,
}

/// A CA that issues server and client certificates.
pub struct Pki {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub ca: String,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::OrganizationName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pki { issuer: rcgen::Issuer::new(params, key), ca: cert.pem() }
    }

    fn issue(&self, names: &[&str], key: rcgen::KeyPair, client: bool) -> Issued {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, names.first().copied().unwrap_or("client"));
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued { cert: cert.pem(), key: key.serialize_pem() }
    }

    /// An ECDSA P-256 server certificate for `names`.
    pub fn server(&self, names: &[&str]) -> Issued {
        self.issue(names, rcgen::KeyPair::generate().unwrap(), false)
    }

    /// An RSA 2048 server certificate for `names`.
    pub fn server_rsa(&self, names: &[&str]) -> Issued {
        self.issue(names, rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap(), false)
    }

    /// A client certificate with DNS SAN `name`.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(&[name], rcgen::KeyPair::generate().unwrap(), true)
    }
}

/// A `kubernetes.io/tls` Secret (with `ca.crt` when `ca` is set).
pub fn secret(name: &str, namespace: &str, cert: &Issued, ca: Option<&str>) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&cert.cert),
        indent(&cert.key)
    );
    if let Some(ca) = ca {
        out.push_str(&format!("  ca.crt: |\n{}", indent(ca)));
    }
    out.push_str("---\n");
    out
}

/// A temporary config directory (certificate files live here).
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        Dir(super::temp_dir(&format!("test-{tag}")))
    }
    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles `yaml` for the default node, with the Secrets in `yaml` and the files in `dir`.
pub fn runtime_in(dir: &Path, yaml: &str, version: u64, previous: Option<&Runtime>) -> Runtime {
    let loaded = load_checked(yaml);
    let node = Node::default();
    let snapshot = compile_for(loaded.objects, &node);
    let (creds, _warnings) = weir_proxy::tls::Credentials::load(&loaded.others, &snapshot, &node.namespace, dir);
    Runtime::with_credentials(snapshot, version, previous, creds)
}

/// A running `serve` over a config directory's TLS material.
pub struct TlsProxy {
    pub state: Arc<State>,
    pub dir: Dir,
    shutdown: watch::Sender<bool>,
    pub task: JoinHandle<Result<(), ServeError>>,
}

impl TlsProxy {
    pub async fn start(dir: Dir, yaml: &str) -> TlsProxy {
        TlsProxy::start_with(options(0), dir, yaml).await
    }

    pub async fn start_with(options: Options, dir: Dir, yaml: &str) -> TlsProxy {
        let Proxy { state, shutdown, task } =
            Proxy::serve(State::new(options, runtime_in(dir.path(), yaml, 1, None))).await;
        TlsProxy { state, dir, shutdown, task }
    }

    /// Publishes `yaml` (re-reading the directory's files) as the next snapshot.
    pub fn publish(&self, yaml: &str) {
        let current = self.state.current.load_full();
        let next = runtime_in(self.dir.path(), yaml, current.version + 1, Some(&current));
        self.state.publish(next);
    }

    pub fn metrics(&self) -> String {
        self.state.metrics.encode()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// How a test client connects.
#[derive(Clone, Default)]
pub struct ClientOpts {
    /// CA bundle (PEM) to trust.
    pub ca: String,
    pub client_cert: Option<Issued>,
    pub alpn: Vec<Vec<u8>>,
}

impl ClientOpts {
    pub fn trusting(ca: &str) -> ClientOpts {
        ClientOpts { ca: ca.to_string(), client_cert: None, alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()] }
    }
    pub fn with_cert(mut self, c: &Issued) -> ClientOpts {
        self.client_cert = Some(c.clone());
        self
    }
    fn config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut c = match &self.client_cert {
            Some(i) => {
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(i.cert.as_bytes()).map(|c| c.unwrap()).collect();
                b.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(i.key.as_bytes()).unwrap()).unwrap()
            }
            None => b.with_no_client_auth(),
        };
        c.alpn_protocols = self.alpn.clone();
        c
    }
}

pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to 127.0.0.1:`port` with SNI `sni`; the handshake (and, for TLS 1.3, the
/// server's verdict on a client certificate, seen on the first read) may fail.
pub async fn connect(port: u16, sni: &str, opts: &ClientOpts) -> std::io::Result<Tls> {
    let sock = TcpStream::connect(("127.0.0.1", port)).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(opts.config()));
    let name = ServerName::try_from(sni.to_string()).unwrap();
    connector.connect(name, sock).await
}

/// The common name of the certificate the server presented.
pub fn peer_names(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec()).unwrap_or_default()
}

/// A GET over TLS (HTTP/2 when ALPN picks h2, else HTTP/1.1). Errors as text.
pub async fn https_get(port: u16, sni: &str, host: &str, path: &str, opts: &ClientOpts) -> Result<Reply, String> {
    let tls = connect(port, sni, opts).await.map_err(|e| format!("handshake: {e}"))?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let req = |uri: String| {
        let mut r = Request::builder().uri(uri);
        if !h2 {
            r = r.header("host", host);
        }
        r.body(Full::new(Bytes::new())).unwrap()
    };
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| format!("h2: {e}"))?;
        tokio::spawn(conn);
        send.send_request(req(format!("https://{host}{path}"))).await
    } else {
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("h1: {e}"))?;
        tokio::spawn(conn);
        send.send_request(req(path.to_string())).await
    }
    .map_err(|e| format!("request: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Ok(Reply {
        status: parts.status.as_u16(),
        version: parts.version,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Istio's tcp-echo: answers every line with `<name> <line>`.
pub struct TcpEcho {
    pub name: String,
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
}

impl TcpEcho {
    pub async fn start(name: &str) -> TcpEcho {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let (n, c) = (name.to_string(), connections.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(echo_lines(n.clone(), sock));
            }
        });
        TcpEcho { name: name.to_string(), port, connections }
    }
}

async fn echo_lines<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(name: String, sock: S) {
    let (r, mut w) = tokio::io::split(sock);
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if w.write_all(format!("{name} {line}\n").as_bytes()).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// A TLS server (its own certificate) that echoes lines as `<name> <line>`: an upstream for
/// SNI passthrough, which must see the client's handshake untouched.
pub struct TlsEcho {
    pub port: u16,
}

impl TlsEcho {
    pub async fn start(name: &str, cert: &Issued) -> TlsEcho {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert.cert.as_bytes()).map(|c| c.unwrap()).collect();
        let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let name = name.to_string();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (acceptor, name) = (acceptor.clone(), name.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(sock).await {
                        echo_lines(name, tls).await;
                    }
                });
            }
        });
        TlsEcho { port }
    }
}

/// Sends `line` and reads one answer line over any stream.
pub async fn ask<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    sock: &mut S,
    line: &str,
) -> std::io::Result<String> {
    sock.write_all(format!("{line}\n").as_bytes()).await?;
    sock.flush().await?;
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = sock.read(&mut b).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"));
        }
        if b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        out.push(b[0]);
    }
}

/// A plain TCP round trip: connect, send `line`, read one line.
pub async fn tcp_ask(port: u16, line: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    ask(&mut s, line).await
}

/// A TLS round trip: handshake with SNI, send `line`, read one line.
pub async fn tls_ask(port: u16, sni: &str, opts: &ClientOpts, line: &str) -> std::io::Result<String> {
    let mut s = connect(port, sni, opts).await?;
    ask(&mut s, line).await
}

/// The value of the Prometheus series starting with `prefix` (0 when absent).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}
