//! End-to-end test harness: real backends (small hyper servers that echo
//! their name, the request and its headers), a real `serve` on free ports,
//! and raw hyper client connections.
#![allow(dead_code, clippy::unwrap_used)]

pub mod origination;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_compile::message::Messages;
use weir_compile::{ConfigStore, Input, MeshConfig, Node, Registry, Snapshot};
use weir_proxy::server::ServeError;
use weir_proxy::{AccessLogFormat, Options, Runtime, State};

/// A port nothing listens on right now, outside the kernel's ephemeral range.
pub use weir_proxy::testing::free_port;

/// A new empty directory `weir-<tag>-<pid>-<n>` under the system temp dir.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d =
        std::env::temp_dir().join(format!("weir-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Polls `cond` every few milliseconds for up to 5 seconds.
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

/// What a backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub version: Version,
    /// `:authority` (HTTP/2), else `Host`.
    pub authority: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A test upstream: answers with its name, the request path, version and headers (JSON).
///
/// Request headers steer it: `x-test-delay-ms` delays the answer, `x-test-status` sets the
/// status; `fail_first` answers 503 to that many requests first.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub fail_first: Arc<AtomicU32>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fail_first = Arc::new(AtomicU32::new(0));
        let (n, c, s, f) = (name.to_string(), connections.clone(), seen.clone(), fail_first.clone());
        let task = serve_http(listener, move || {
            c.fetch_add(1, Ordering::SeqCst);
            let (n, s, f) = (n.clone(), s.clone(), f.clone());
            hyper::service::service_fn(move |req| echo(n.clone(), s.clone(), f.clone(), req))
        });
        Backend { name: name.to_string(), addr, connections, seen, fail_first, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// Serves every connection `listener` accepts (HTTP/1.1 or HTTP/2) with the service
/// `per_connection` makes for it, until the returned task is aborted.
pub fn serve_http<F, S>(listener: TcpListener, mut per_connection: F) -> JoinHandle<()>
where
    F: FnMut() -> S + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { return };
            let svc = per_connection();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    })
}

async fn echo(
    name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    fail_first: Arc<AtomicU32>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    // `:authority` (HTTP/2), else `Host`.
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| parts.headers.get("host").map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()));
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        version: parts.version,
        authority: authority.clone().unwrap_or_default(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    if let Some(ms) = parts.headers.get("x-test-delay-ms").and_then(|v| v.to_str().ok()?.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut status = parts
        .headers
        .get("x-test-status")
        .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if fail_first.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let json = serde_json::json!({
        "name": name,
        "path": path,
        "method": parts.method.as_str(),
        "version": format!("{:?}", parts.version),
        "authority": authority,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert("x-backend", name.parse().unwrap());
    resp.headers_mut().insert("x-upstream-secret", "s3cret".parse().unwrap());
    resp.headers_mut().insert("server", "test-backend".parse().unwrap());
    resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
    Ok(resp)
}

/// Loads `yaml`, which must load and validate cleanly.
pub fn load_checked(yaml: &str) -> weir_api::Loaded {
    let loaded = weir_api::load_str(yaml, "test.yaml", &weir_api::LoadOptions::default());
    assert!(loaded.errors.is_empty() && loaded.problems.is_empty(), "{:?} {:?}", loaded.errors, loaded.problems);
    for o in &loaded.objects {
        let report = weir_api::validate(o);
        assert!(!report.has_errors(), "{} is invalid: {:?}", o.key(), report.findings);
    }
    loaded
}

/// Compiles `objects` for `node`.
pub fn compile_for(objects: Vec<weir_api::IstioObject>, node: &Node) -> Snapshot {
    let store = ConfigStore::new(objects);
    let mesh = MeshConfig::default();
    let mut messages = Messages::default();
    let registry = Registry::from_config(&store, &mesh, node, &mut messages);
    weir_compile::compile(Input { config: &store, registry: &registry, mesh: &mesh }, node)
}

/// Compiles `yaml` (which must load and validate cleanly) for `node`.
pub fn runtime_for(yaml: &str, node: &Node, version: u64, previous: Option<&Runtime>) -> Runtime {
    Runtime::new(compile_for(load_checked(yaml).objects, node), version, previous)
}

/// Compiles `yaml` (which must load and validate cleanly) for the default node (role both).
pub fn runtime(yaml: &str, version: u64, previous: Option<&Runtime>) -> Runtime {
    runtime_for(yaml, &Node::default(), version, previous)
}

pub fn options(proxy_port: u16) -> Options {
    let mut o = Options::new(std::env::temp_dir());
    o.bind = "127.0.0.1".parse().unwrap();
    o.mesh_bind = "127.0.0.1".parse().unwrap();
    o.proxy_port = proxy_port;
    o.access_log = AccessLogFormat::Off;
    o.reason_header_gateway = true;
    o.reason_header_sidecar = true;
    o.drain_timeout = Duration::from_secs(5);
    o
}

/// A running `serve`.
pub struct Proxy {
    pub state: Arc<State>,
    shutdown: watch::Sender<bool>,
    pub task: JoinHandle<Result<(), ServeError>>,
}

impl Proxy {
    pub async fn start(yaml: &str) -> Proxy {
        Proxy::start_with(options(0), yaml).await
    }

    pub async fn start_with(options: Options, yaml: &str) -> Proxy {
        Proxy::serve(State::new(options, runtime(yaml, 1, None))).await
    }

    /// Runs `serve` on `state` until its listeners are up.
    pub async fn serve(state: Arc<State>) -> Proxy {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(weir_proxy::server::serve(state.clone(), rx));
        let s = state.clone();
        wait_for("listeners", || s.ready.load(Ordering::SeqCst) || task.is_finished()).await;
        if task.is_finished() {
            panic!("serve ended early: {:?}", task.await);
        }
        Proxy { state, shutdown: tx, task }
    }

    /// Publishes `yaml` as the next snapshot.
    pub fn publish(&self, yaml: &str) {
        let current = self.state.current.load_full();
        let next = runtime(yaml, current.version + 1, Some(&current));
        self.state.publish(next);
    }

    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// A response as a client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self))
    }
    /// The name of the backend that answered.
    pub fn backend(&self) -> String {
        self.header("x-backend").unwrap_or_default()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }
    /// A request header as the backend received it.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }
}

/// One client connection (HTTP/1.1 keep-alive or HTTP/2 prior knowledge).
pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Client {
    pub async fn h1(port: u16) -> Client {
        let sock = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock)).await.unwrap();
        tokio::spawn(conn);
        Client::H1(send)
    }

    pub async fn h2(port: u16) -> Client {
        let sock = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(sock)).await.unwrap();
        tokio::spawn(conn);
        Client::H2(send)
    }

    /// Sends `method` `path` for `host` with extra `headers` and `body`.
    pub async fn send(&mut self, method: &str, host: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let h2 = matches!(self, Client::H2(_));
        let uri = if h2 || path.starts_with("http://") { format!("http://{host}{path}") } else { path.to_string() };
        let uri = if path.starts_with("http://") { path.to_string() } else { uri };
        let mut req = Request::builder().method(method).uri(uri);
        if !h2 {
            req = req.header("host", host);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let resp = match self {
            Client::H1(s) => {
                s.ready().await.unwrap();
                s.send_request(req).await
            }
            Client::H2(s) => {
                s.ready().await.unwrap();
                s.send_request(req).await
            }
        }
        .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Reply {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", host, path, headers, "").await
    }
}

/// A TCP server on an ephemeral port that sends back what it reads; its port.
pub async fn tcp_echo_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Sends `streams` POSTs at once on the HTTP/2 connection `send`: request `i` goes to
/// `{origin}{path}{i}` with a body of `i * step` bytes. Each must come back within 10 s as a 200
/// from the echo backend, with its path and its whole body.
pub async fn echo_concurrently(
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    origin: &str,
    path: &str,
    streams: usize,
    step: usize,
) {
    let calls: Vec<_> = (0..streams)
        .map(|i| {
            let mut send = send.clone();
            let uri = format!("{origin}{path}{i}");
            tokio::spawn(async move {
                let req = Request::post(uri).body(Full::new(Bytes::from("x".repeat(i * step)))).unwrap();
                send.ready().await.unwrap();
                let resp = send.send_request(req).await.unwrap();
                let status = resp.status();
                (status, resp.into_body().collect().await.unwrap().to_bytes())
            })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let (status, body) = tokio::time::timeout(Duration::from_secs(10), call).await.unwrap().unwrap();
        assert_eq!(status, 200, "request {i}");
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["path"], format!("{path}{i}"));
        assert_eq!(j["body"].as_str().map(str::len), Some(i * step), "request {i} echoed whole");
    }
}

/// A GET on a new HTTP/1.1 connection.
pub async fn get(port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    Client::h1(port).await.get(host, path, headers).await
}

/// A ServiceEntry for `host` (short name in `default`) on `port` with one endpoint per
/// `(backend port, version)`.
pub fn service(host: &str, port: u16, protocol: &str, endpoints: &[(u16, &str)]) -> String {
    let mut eps = String::from(if endpoints.is_empty() { "  endpoints: []\n" } else { "  endpoints:\n" });
    for (p, v) in endpoints {
        eps.push_str(&format!("  - address: 127.0.0.1\n    ports: {{web: {p}}}\n    labels: {{version: {v}}}\n"));
    }
    static_service(host, port, protocol, &eps)
}

/// A STATIC ServiceEntry for `host` (short name in `default`) on `port` (port name `web`)
/// with `endpoints` (YAML lines from `  endpoints:` on).
pub fn static_service(host: &str, port: u16, protocol: &str, endpoints: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {host}, namespace: default}}
spec:
  hosts: [{host}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: web, protocol: {protocol}}}]
{endpoints}---
"
    )
}

/// A DestinationRule with subsets by `version` label.
pub fn subsets(host: &str, versions: &[&str]) -> String {
    let mut s = String::new();
    for v in versions {
        s.push_str(&format!("  - name: {v}\n    labels: {{version: {v}}}\n"));
    }
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}, namespace: default}}
spec:
  host: {host}
  subsets:
{s}---
"
    )
}

/// A VirtualService for `host` with `rule` (YAML lines under `http:`).
pub fn vs(host: &str, rule: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {host}, namespace: default}}
spec:
  hosts: [{host}]
  http:
{rule}
---
"
    )
}

/// A DestinationRule for `host` with `traffic_policy` (YAML lines under `trafficPolicy:`).
pub fn dr(host: &str, traffic_policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}, namespace: default}}
spec:
  host: {host}
  trafficPolicy:
{traffic_policy}
---
"
    )
}

pub mod load_balancing;
pub mod pools;
pub mod tls;
