//! Helpers for upstream TLS origination and DNS tests: certificates made with
//! rcgen (a CA, leaves, CRLs), a TLS backend that reports the SNI, ALPN and
//! client certificate it saw, a tiny UDP DNS server (hickory-proto) answering
//! with chosen addresses and TTLs, and a proxy loaded from a config directory
//! (so Secrets and certificate files are read as `weir run` reads them).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_proxy::reload::{Outcome, Reloader};
use weir_proxy::resolve::Dns;
use weir_proxy::{Runtime, State};

/// A certificate authority for tests.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key (PEM).
#[derive(Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), issuer: Issuer::new(p, key) }
    }

    /// A leaf for `sans` (DNS names or IPs) with serial number `serial`.
    pub fn leaf(&self, sans: &[&str], serial: u64) -> Leaf {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, sans.first().copied().unwrap_or("leaf"));
        p.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert: cert.pem(), key: key.serialize_pem() }
    }

    /// A CRL revoking `serials`.
    pub fn crl(&self, serials: &[u64]) -> String {
        let now = rcgen::date_time_ymd(2024, 1, 1);
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }
}

/// What a TLS backend saw of one connection.
#[derive(Clone, Debug, Default)]
pub struct Handshake {
    pub sni: Option<String>,
    pub alpn: Option<String>,
    pub client_cert: bool,
}

/// An HTTPS (HTTP/1.1 and h2 by ALPN) or TLS echo (`tcp`) backend.
pub struct TlsBackend {
    pub addr: SocketAddr,
    pub handshakes: Arc<Mutex<Vec<Handshake>>>,
    /// Connections accepted (TCP level, before the handshake).
    pub accepted: Arc<AtomicUsize>,
    /// Replaceable server config (certificate rotation on the backend side).
    pub config: Arc<Mutex<Arc<rustls::ServerConfig>>>,
    task: JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server config for `leaf`, requiring client certificates from `client_ca` when given.
pub fn server_config(leaf: &Leaf, client_ca: Option<&Ca>, alpn: &[&str]) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert.as_bytes()).collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let b =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let b = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap()).unwrap();
            let v =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            b.with_client_cert_verifier(v)
        }
        None => b.with_no_client_auth(),
    };
    let mut c = b.with_single_cert(chain, key).unwrap();
    c.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(c)
}

impl TlsBackend {
    /// An HTTPS backend answering JSON `{name, version, host, sni, alpn}`.
    pub async fn https(name: &str, config: Arc<rustls::ServerConfig>) -> TlsBackend {
        TlsBackend::start(name, config, false).await
    }

    /// A TLS backend that echoes lines prefixed with its name.
    pub async fn tcp(name: &str, config: Arc<rustls::ServerConfig>) -> TlsBackend {
        TlsBackend::start(name, config, true).await
    }

    async fn start(name: &str, config: Arc<rustls::ServerConfig>, tcp: bool) -> TlsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let config = Arc::new(Mutex::new(config));
        let (hs, acc, cfg, name) = (handshakes.clone(), accepted.clone(), config.clone(), name.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                acc.fetch_add(1, Ordering::SeqCst);
                let acceptor = tokio_rustls::TlsAcceptor::from(cfg.lock().unwrap().clone());
                let (hs, name) = (hs.clone(), name.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(sock).await else { return };
                    let conn = tls.get_ref().1;
                    let seen = Handshake {
                        sni: conn.server_name().map(str::to_string),
                        alpn: conn.alpn_protocol().map(|a| String::from_utf8_lossy(a).into_owned()),
                        client_cert: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
                    };
                    hs.lock().unwrap().push(seen.clone());
                    if tcp {
                        let (r, mut w) = tokio::io::split(tls);
                        let mut lines = tokio::io::BufReader::new(r).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            if w.write_all(format!("{name}: {line}\n").as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                    let svc = hyper::service::service_fn(move |req| answer(name.clone(), seen.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsBackend { addr, handshakes, accepted, config, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

async fn answer(name: String, seen: Handshake, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| req.headers().get("host").map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()));
    let json = serde_json::json!({
        "name": name,
        "path": req.uri().path(),
        "version": format!("{:?}", req.version()),
        "host": host,
        "sni": seen.sni,
        "alpn": seen.alpn,
        "client_cert": seen.client_cert,
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    resp.headers_mut().insert("x-backend", name.parse().unwrap());
    Ok(resp)
}

/// Name -> (addresses, TTL in seconds).
pub type Records = Arc<Mutex<HashMap<String, (Vec<IpAddr>, u32)>>>;

/// A UDP DNS server on loopback answering A queries from a table (name -> addresses, TTL);
/// unknown names get NXDOMAIN. `queries` counts the questions asked.
pub struct DnsServer {
    pub addr: SocketAddr,
    pub records: Records,
    pub queries: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsServer {
    pub async fn start() -> DnsServer {
        use hickory_proto::op::{Message, MessageType, ResponseCode};
        use hickory_proto::rr::{RData, Record, RecordType, rdata};
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let records: Records = Arc::default();
        let queries = Arc::new(AtomicUsize::new(0));
        let (recs, q) = (records.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else { return };
                let Ok(req) = Message::from_vec(&buf[..n]) else { continue };
                let Some(query) = req.queries.first().cloned() else { continue };
                q.fetch_add(1, Ordering::SeqCst);
                let name = query.name().to_string();
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let mut resp = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
                resp.metadata.recursion_desired = req.metadata.recursion_desired;
                resp.metadata.recursion_available = true;
                resp.metadata.authoritative = true;
                resp.add_query(query.clone());
                match recs.lock().unwrap().get(&name) {
                    Some((addrs, ttl)) => {
                        for a in addrs {
                            let rdata = match (a, query.query_type()) {
                                (IpAddr::V4(v4), RecordType::A) => RData::A(rdata::A(*v4)),
                                (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(rdata::AAAA(*v6)),
                                _ => continue,
                            };
                            resp.add_answer(Record::from_rdata(query.name().clone(), *ttl, rdata));
                        }
                    }
                    None => resp.metadata.response_code = ResponseCode::NXDomain,
                }
                if let Ok(bytes) = resp.to_vec() {
                    let _ = sock.send_to(&bytes, peer).await;
                }
            }
        });
        DnsServer { addr, records, queries, task }
    }

    /// Sets the answer for `name`.
    pub fn set(&self, name: &str, addrs: &[&str], ttl: u32) {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        self.records.lock().unwrap().insert(name.to_ascii_lowercase(), (addrs, ttl));
    }
}

/// A temporary config directory.
pub struct ConfigDir(pub PathBuf);

impl ConfigDir {
    pub fn new(name: &str) -> ConfigDir {
        ConfigDir(super::temp_dir(&format!("origination-{name}")))
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Kubernetes Secret with `tls.crt`, `tls.key` and optionally `ca.crt` (stringData).
pub fn secret(name: &str, cert: Option<&str>, key: Option<&str>, ca: Option<&str>) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n"
    );
    for (k, v) in [("tls.crt", cert), ("tls.key", key), ("ca.crt", ca)] {
        if let Some(v) = v {
            s.push_str(&format!("  {k}: |\n"));
            for line in v.lines() {
                s.push_str(&format!("    {line}\n"));
            }
        }
    }
    s.push_str("---\n");
    s
}

/// A proxy serving a config directory as `weir run` loads it (Secrets, certificate files),
/// resolving names with `dns`; reloads on demand.
pub struct DirProxy {
    pub state: Arc<State>,
    pub dir: ConfigDir,
    reloader: Mutex<Reloader>,
    shutdown: watch::Sender<bool>,
    pub task: JoinHandle<Result<(), weir_proxy::server::ServeError>>,
    refresher: Option<JoinHandle<()>>,
}

impl Drop for DirProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(r) = &self.refresher {
            r.abort();
        }
    }
}

impl DirProxy {
    /// Serves `dir` (which must load); with `dns`, resolves through it and runs the DNS refresher.
    pub async fn start(dir: ConfigDir, dns: Option<Arc<Dns>>) -> DirProxy {
        let fp = weir_proxy::reload::fingerprint(&dir.0);
        let node = weir_compile::Node::default();
        let compiled = weir_proxy::reload::load(&dir.0, &node).unwrap_or_else(|e| panic!("config: {e:?}"));
        let mut options = super::options(0);
        options.config_dir = dir.0.clone();
        let refresh = dns.is_some();
        let dns = dns.unwrap_or_else(Dns::system);
        let rt = Runtime::with_dns(compiled.snapshot, 1, None, compiled.credentials, dns);
        let super::Proxy { state, shutdown, task } = super::Proxy::serve(State::new(options, rt)).await;
        let refresher = refresh.then(|| weir_proxy::resolve::spawn_refresher(state.clone()));
        let reloader = Mutex::new(Reloader::new(state.clone(), fp));
        DirProxy { state, dir, reloader, shutdown, task, refresher }
    }

    /// Reloads the directory now.
    pub fn reload(&self) -> Outcome {
        self.reloader.lock().unwrap().reload()
    }
}

/// A plain HTTP backend on a chosen address that answers with its name (`x-backend`)
/// and the authority it was asked for (body).
pub struct PlainBackend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for PlainBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PlainBackend {
    pub async fn bind(name: &str, addr: SocketAddr) -> PlainBackend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (h, name) = (hits.clone(), name.to_string());
        let task = super::serve_http(listener, move || {
            let (h, name) = (h.clone(), name.clone());
            hyper::service::service_fn(move |req: Request<Incoming>| {
                h.fetch_add(1, Ordering::SeqCst);
                let host = req.headers().get("host").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                let mut resp = Response::new(Full::new(Bytes::from(host.unwrap_or_default())));
                resp.headers_mut().insert("x-backend", name.parse().unwrap());
                async move { Ok::<_, Infallible>(resp) }
            })
        });
        PlainBackend { addr, hits, task }
    }
}
