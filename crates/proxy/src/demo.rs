//! Istio's bookinfo as tiny in-process HTTP services, for `weir demo` and
//! the end-to-end tests.
//!
//! Each backend answers every request with its service name and version:
//! plain text for curl, JSON when the client sends `Accept:
//! application/json` (or `?format=json`). Every answer carries
//! `x-demo-service`, `x-demo-version` and `x-demo-instance` headers.
//!
//! When a backend is given a mesh address (weir's sidecar outbound
//! listener), it calls the other services through weir the way bookinfo
//! does, so weir's routes apply to those calls:
//!
//! - `productpage` calls `details` and `reviews` (per try timeout 3s, one
//!   retry on errors and 5xx, as bookinfo's productpage);
//! - `reviews` v2 (black stars) and v3 (red stars) call `ratings` (timeouts
//!   10s and 2.5s); v1 shows no stars and calls nothing;
//! - every other service (`details`, `ratings`, or any name such as
//!   `httpbin`) only answers, echoing the request headers.
//!
//! Calls forward the headers bookinfo forwards (`end-user`, tracing
//! headers, `cookie`, `user-agent`) plus the demo's `x-fault`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Bookinfo's services and versions, in the order `weir demo` assigns ports
/// (`--port-base` + index).
pub const BOOKINFO: [(&str, &str); 6] = [
    ("productpage", "v1"),
    ("details", "v1"),
    ("reviews", "v1"),
    ("reviews", "v2"),
    ("reviews", "v3"),
    ("ratings", "v1"),
];

/// Headers a demo service copies from its request onto the calls it makes
/// (bookinfo's list, plus the demo's `x-fault`).
pub const FORWARDED_HEADERS: [&str; 14] = [
    "end-user",
    "x-fault",
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-ot-span-context",
    "cookie",
    "user-agent",
];

/// Application-level timeouts of bookinfo's services (what the tasks'
/// documented outcomes depend on).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AppTimeouts {
    /// productpage -> details and reviews, per try (bookinfo: 3s).
    pub productpage: Duration,
    /// Extra tries productpage makes after an error or a 5xx (bookinfo: 1).
    pub productpage_retries: u32,
    /// reviews v2 -> ratings (bookinfo: 10s).
    pub reviews_v2: Duration,
    /// reviews v3 -> ratings (bookinfo: 2.5s).
    pub reviews_v3: Duration,
}

impl Default for AppTimeouts {
    fn default() -> AppTimeouts {
        AppTimeouts {
            productpage: Duration::from_secs(3),
            productpage_retries: 1,
            reviews_v2: Duration::from_secs(10),
            reviews_v3: Duration::from_millis(2500),
        }
    }
}

impl AppTimeouts {
    /// Bookinfo's timeouts multiplied by `factor` (tests use 0.1 to keep the
    /// documented proportions at a tenth of the wait).
    pub fn scaled(factor: f64) -> AppTimeouts {
        let d = AppTimeouts::default();
        AppTimeouts {
            productpage: d.productpage.mul_f64(factor),
            productpage_retries: d.productpage_retries,
            reviews_v2: d.reviews_v2.mul_f64(factor),
            reviews_v3: d.reviews_v3.mul_f64(factor),
        }
    }
}

/// What one backend is.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    pub service: String,
    pub version: String,
    /// weir's sidecar outbound listener: calls to other services go there
    /// with `Host: <service>:<port of this address>`. `None`: no calls.
    pub mesh: Option<SocketAddr>,
    pub timeouts: AppTimeouts,
}

impl BackendConfig {
    pub fn new(service: &str, version: &str) -> BackendConfig {
        BackendConfig {
            service: service.to_string(),
            version: version.to_string(),
            mesh: None,
            timeouts: AppTimeouts::default(),
        }
    }
}

/// One request a backend received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// `Host` header (or the URI authority of an HTTP/2 request).
    pub host: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// How many recent requests a backend keeps for [`Backend::seen`].
const SEEN_KEPT: usize = 1000;

#[derive(Default)]
struct Log {
    count: AtomicU64,
    recent: Mutex<std::collections::VecDeque<Seen>>,
}

impl Log {
    fn record(&self, seen: Seen) {
        self.count.fetch_add(1, Ordering::SeqCst);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == SEEN_KEPT {
            recent.pop_front();
        }
        recent.push_back(seen);
    }
}

struct Shared {
    config: BackendConfig,
    addr: SocketAddr,
    log: Log,
}

/// A running backend. Dropping it (or [`Backend::stop`]) closes its
/// listener and its open connections.
pub struct Backend {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Binds `addr` (port 0 picks a free port) and serves on the current
    /// tokio runtime.
    pub async fn bind(addr: SocketAddr, config: BackendConfig) -> io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        Backend::serve(listener, config)
    }

    /// Serves on an already bound listener (current tokio runtime).
    pub fn serve(listener: TcpListener, config: BackendConfig) -> io::Result<Backend> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared { config, addr, log: Log::default() });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Backend { shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }
    pub fn service(&self) -> &str {
        &self.shared.config.service
    }
    pub fn version(&self) -> &str {
        &self.shared.config.version
    }
    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.log.count.load(Ordering::SeqCst)
    }
    /// The most recent requests (up to 1000), oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.log.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
    /// Stops accepting and closes open connections.
    pub fn stop(self) {}
}

impl Drop for Backend {
    fn drop(&mut self) {
        // The accept loop owns the connection tasks (a JoinSet): aborting it
        // drops them all.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors and the like: back off briefly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    // Drain the request body (bounded); demo services do not look at it.
    let _ = Limited::new(body, 1 << 20).collect().await;
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let path = parts.uri.path_and_query().map_or_else(|| "/".to_string(), |p| p.to_string());
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    shared.log.record(Seen { method: parts.method.to_string(), path: path.clone(), host, headers: headers.clone() });

    let config = &shared.config;
    let forward = forwarded(&parts.headers);
    let mut answer = json!({
        "service": config.service,
        "version": config.version,
        "instance": shared.addr.to_string(),
        "method": parts.method.as_str(),
        "path": path,
        "headers": headers.iter().cloned().collect::<BTreeMap<String, String>>(),
    });
    match (config.service.as_str(), config.version.as_str()) {
        ("productpage", _) => {
            let t = config.timeouts;
            let details =
                call(config.mesh, "details", "/details/0", &forward, t.productpage, 1 + t.productpage_retries);
            let reviews =
                call(config.mesh, "reviews", "/reviews/0", &forward, t.productpage, 1 + t.productpage_retries);
            let (details, reviews) = tokio::join!(details, reviews);
            answer["details"] = details_summary(details);
            answer["reviews"] = reviews_summary(reviews);
        }
        ("details", _) => answer["book"] = book(),
        ("reviews", version) => {
            let (stars, timeout) = match version {
                "v2" => ("black", Some(config.timeouts.reviews_v2)),
                "v3" => ("red", Some(config.timeouts.reviews_v3)),
                _ => ("none", None),
            };
            answer["stars"] = json!(stars);
            answer["review"] =
                json!("An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!");
            if let Some(timeout) = timeout {
                let ratings = call(config.mesh, "ratings", "/ratings/0", &forward, timeout, 1).await;
                answer["ratings"] = ratings_summary(ratings);
            }
        }
        ("ratings", _) => answer["rating"] = json!(5),
        _ => {}
    }

    let wants_json = parts
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
        || parts.uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "format=json"));
    let (body, content_type) = if wants_json {
        {
            let mut body = serde_json::to_vec_pretty(&answer).unwrap_or_default();
            body.push(b'\n');
            (body, "application/json")
        }
    } else {
        (render_text(&answer).into_bytes(), "text/plain; charset=utf-8")
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let h = response.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in [
        ("x-demo-service", config.service.as_str()),
        ("x-demo-version", config.version.as_str()),
        ("x-demo-instance", &shared.addr.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    Ok(response)
}

fn forwarded(headers: &HeaderMap) -> Vec<(&'static str, HeaderValue)> {
    FORWARDED_HEADERS.iter().filter_map(|&name| headers.get(name).map(|v| (name, v.clone()))).collect()
}

/// The outcome of a call to another service through the mesh.
#[derive(Debug)]
struct Call {
    status: Option<u16>,
    /// `x-demo-version` of the answer (absent when weir answered locally).
    version: Option<String>,
    body: Value,
    tries: u32,
    elapsed: Duration,
    error: Option<String>,
}

impl Call {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
    /// Why the call failed, in a few words.
    fn failure(&self) -> String {
        match (&self.error, self.status) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) => {
                let text = self.body.as_str().map(str::trim).unwrap_or_default();
                if text.is_empty() { format!("{s}") } else { format!("{s} {text}") }
            }
            (None, None) => "no answer".to_string(),
        }
    }
    fn json(&self) -> Value {
        json!({
            "status": self.status,
            "version": self.version,
            "tries": self.tries,
            "elapsed_ms": self.elapsed.as_millis() as u64,
            "error": if self.ok() { None } else { Some(self.failure()) },
        })
    }
}

async fn call(
    mesh: Option<SocketAddr>,
    service: &str,
    path: &str,
    forward: &[(&'static str, HeaderValue)],
    timeout: Duration,
    tries: u32,
) -> Call {
    let start = Instant::now();
    let Some(mesh) = mesh else {
        return Call {
            status: None,
            version: None,
            body: Value::Null,
            tries: 0,
            elapsed: Duration::ZERO,
            error: Some("no mesh address configured".to_string()),
        };
    };
    let authority = format!("{service}:{}", mesh.port());
    let mut last = None;
    for attempt in 1..=tries.max(1) {
        let result = tokio::time::timeout(timeout, request_once(mesh, &authority, path, forward)).await;
        let mut outcome = match result {
            Ok(Ok((status, version, body))) => {
                Call { status: Some(status), version, body, tries: attempt, elapsed: start.elapsed(), error: None }
            }
            Ok(Err(e)) => Call {
                status: None,
                version: None,
                body: Value::Null,
                tries: attempt,
                elapsed: start.elapsed(),
                error: Some(e),
            },
            Err(_) => Call {
                status: None,
                version: None,
                body: Value::Null,
                tries: attempt,
                elapsed: start.elapsed(),
                error: Some(format!("timed out after {}", seconds(timeout))),
            },
        };
        outcome.elapsed = start.elapsed();
        let retry = outcome.status.is_none_or(|s| s >= 500);
        last = Some(outcome);
        if !retry {
            break;
        }
    }
    last.unwrap_or(Call {
        status: None,
        version: None,
        body: Value::Null,
        tries: 0,
        elapsed: start.elapsed(),
        error: Some("not attempted".to_string()),
    })
}

async fn request_once(
    mesh: SocketAddr,
    authority: &str,
    path: &str,
    forward: &[(&'static str, HeaderValue)],
) -> Result<(u16, Option<String>, Value), String> {
    let stream = TcpStream::connect(mesh).await.map_err(|e| format!("connect {mesh}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let mut builder =
        Request::get(path).header(http::header::HOST, authority).header(http::header::ACCEPT, "application/json");
    for (name, value) in forward {
        builder = builder.header(*name, value.clone());
    }
    let request = builder.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let version = response.headers().get("x-demo-version").and_then(|v| v.to_str().ok()).map(str::to_string);
        let is_json = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
        let bytes = Limited::new(response.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        let body = if is_json {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        } else {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        };
        Ok((status, version, body))
    }
    .await;
    driver.abort();
    result
}

fn book() -> Value {
    json!({
        "id": 0,
        "title": "The Comedy of Errors",
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "language": "English",
    })
}

fn details_summary(call: Call) -> Value {
    let mut v = call.json();
    v["message"] = if call.ok() {
        let b = &call.body["book"];
        json!(format!(
            "{}, {}, {} pages, {}",
            b["title"].as_str().unwrap_or("?"),
            b["type"].as_str().unwrap_or("?"),
            b["pages"].as_u64().unwrap_or(0),
            b["language"].as_str().unwrap_or("?")
        ))
    } else {
        json!("Error fetching product details! Sorry, product details are currently unavailable for this book.")
    };
    v
}

fn reviews_summary(call: Call) -> Value {
    let mut v = call.json();
    if call.ok() {
        let stars = call.body["stars"].as_str().unwrap_or("none").to_string();
        let ratings = &call.body["ratings"];
        v["stars"] = json!(stars);
        v["ratings"] = ratings.clone();
        v["message"] = if stars == "none" {
            json!("no stars")
        } else if ratings["error"].is_null() {
            json!(format!("{} {stars} stars", "★".repeat(ratings["rating"].as_u64().unwrap_or(0) as usize)))
        } else {
            json!("Ratings service is currently unavailable")
        };
    } else {
        v["message"] =
            json!("Error fetching product reviews! Sorry, product reviews are currently unavailable for this book.");
    }
    v
}

fn ratings_summary(call: Call) -> Value {
    let mut v = call.json();
    if call.ok() {
        v["rating"] = call.body["rating"].clone();
    }
    v
}

fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// The plain-text form of an answer.
fn render_text(a: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut out = format!(
        "{} {} ({}) {} {}",
        s(&a["service"]),
        s(&a["version"]),
        s(&a["instance"]),
        s(&a["method"]),
        s(&a["path"])
    );
    if let Some(user) = a["headers"]["end-user"].as_str() {
        out.push_str(&format!("  end-user: {user}"));
    }
    out.push('\n');
    let line = |name: &str, call: &Value| {
        let who = match call["version"].as_str() {
            Some(v) => format!("{name} {v}"),
            None => name.to_string(),
        };
        let mut l = format!("  {who:<12} {}", s(&call["message"]));
        if let Some(e) = call["error"].as_str() {
            l.push_str(&format!("  [{e}; {} tries, {}ms]", call["tries"], call["elapsed_ms"]));
        } else if let Some(e) = call["ratings"]["error"].as_str() {
            l.push_str(&format!("  [ratings: {e}; {}ms]", call["ratings"]["elapsed_ms"]));
        }
        l.push('\n');
        l
    };
    match s(&a["service"]).as_str() {
        "productpage" => {
            out.push_str(&line("details", &a["details"]));
            out.push_str(&line("reviews", &a["reviews"]));
        }
        "details" => out.push_str(&format!("  {}\n", details_text(&a["book"]))),
        "reviews" => {
            out.push_str(&format!("  stars: {}\n", s(&a["stars"])));
            if a["ratings"].is_object() {
                let r = &a["ratings"];
                let mut with = r.clone();
                with["message"] = match r["rating"].as_u64() {
                    Some(n) => json!("★".repeat(n as usize)),
                    None => json!("Ratings service is currently unavailable"),
                };
                out.push_str(&line("ratings", &with));
            }
        }
        "ratings" => out.push_str(&format!("  rating: {}\n", a["rating"])),
        _ => {
            if let Some(headers) = a["headers"].as_object() {
                for (k, v) in headers {
                    out.push_str(&format!("  {k}: {}\n", v.as_str().unwrap_or_default()));
                }
            }
        }
    }
    out
}

fn details_text(b: &Value) -> String {
    format!(
        "{} by {} ({}), {}, {} pages, {}",
        b["title"].as_str().unwrap_or("?"),
        b["author"].as_str().unwrap_or("?"),
        b["year"],
        b["type"].as_str().unwrap_or("?"),
        b["pages"],
        b["language"].as_str().unwrap_or("?")
    )
}

/// Where and how to start a set of backends.
#[derive(Clone, Debug)]
pub struct BookinfoOptions {
    pub ip: IpAddr,
    /// Service `i` of `services` binds `port_base + i`; 0 picks free ports.
    pub port_base: u16,
    /// weir's sidecar outbound listener, for calls between services.
    pub mesh: Option<SocketAddr>,
    pub timeouts: AppTimeouts,
    /// `(service, version)` pairs; [`BOOKINFO`] by default.
    pub services: Vec<(String, String)>,
}

impl Default for BookinfoOptions {
    fn default() -> BookinfoOptions {
        BookinfoOptions {
            ip: IpAddr::from([127, 0, 0, 1]),
            port_base: 0,
            mesh: None,
            timeouts: AppTimeouts::default(),
            services: BOOKINFO.iter().map(|(s, v)| (s.to_string(), v.to_string())).collect(),
        }
    }
}

/// A set of running backends, with their own small tokio runtime when
/// started with [`Bookinfo::start`] (so callers need no runtime).
pub struct Bookinfo {
    backends: Vec<Backend>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Bookinfo {
    /// Starts the backends on a runtime of their own (two worker threads).
    /// Must not be called from inside a tokio runtime; use [`Bookinfo::spawn`] there.
    pub fn start(options: &BookinfoOptions) -> io::Result<Bookinfo> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-demo")
            .enable_all()
            .build()?;
        let mut bookinfo = runtime.block_on(Bookinfo::spawn(options))?;
        bookinfo.runtime = Some(runtime);
        Ok(bookinfo)
    }

    /// Starts the backends on the current tokio runtime.
    pub async fn spawn(options: &BookinfoOptions) -> io::Result<Bookinfo> {
        let mut backends = Vec::with_capacity(options.services.len());
        for (i, (service, version)) in options.services.iter().enumerate() {
            let port = if options.port_base == 0 {
                0
            } else {
                u16::try_from(usize::from(options.port_base) + i).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "--port-base leaves no room for the backends")
                })?
            };
            let addr = SocketAddr::new(options.ip, port);
            let config = BackendConfig {
                service: service.clone(),
                version: version.clone(),
                mesh: options.mesh,
                timeouts: options.timeouts,
            };
            let backend = Backend::bind(addr, config)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("{service} {version} on {addr}: {e}")))?;
            backends.push(backend);
        }
        Ok(Bookinfo { backends, runtime: None })
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The backend of `service` `version`.
    pub fn get(&self, service: &str, version: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.service() == service && b.version() == version)
    }

    /// ServiceEntries registering every service of this set on `port` (HTTP),
    /// with one STATIC endpoint per backend labelled `app` and `version`:
    /// what `weir demo` and the tests put beside the Istio YAML.
    pub fn service_entries(&self, port: u16) -> String {
        let endpoints: Vec<(String, String, SocketAddr)> =
            self.backends.iter().map(|b| (b.service().to_string(), b.version().to_string(), b.addr())).collect();
        service_entries_yaml(&endpoints, port)
    }
}

impl Drop for Bookinfo {
    fn drop(&mut self) {
        // Abort the servers, then let the runtime go without waiting.
        self.backends.clear();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// ServiceEntry YAML for `(service, version, address)` endpoints, one
/// ServiceEntry per service (in first-seen order), each on `port` named `http`.
pub fn service_entries_yaml(endpoints: &[(String, String, SocketAddr)], port: u16) -> String {
    let mut services: Vec<&str> = Vec::new();
    for (s, _, _) in endpoints {
        if !services.contains(&s.as_str()) {
            services.push(s);
        }
    }
    let mut out = String::new();
    for (i, service) in services.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {service}\nspec:\n  hosts: [{service}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: {port}, name: http, protocol: HTTP}}\n  endpoints:\n"
        ));
        for (_, version, addr) in endpoints.iter().filter(|(s, _, _)| s == service) {
            out.push_str(&format!(
                "  - {{address: {}, ports: {{http: {}}}, labels: {{app: {service}, version: {version}}}}}\n",
                addr.ip(),
                addr.port()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        let mut lines = head.lines();
        let status = lines.next().expect("status").split(' ').nth(1).expect("code").parse().expect("number");
        let mut map = HeaderMap::new();
        for l in lines {
            let (k, v) = l.split_once(':').expect("header");
            map.append(
                http::HeaderName::from_bytes(k.trim().as_bytes()).expect("name"),
                v.trim().parse().expect("value"),
            );
        }
        (status, map, body.to_string())
    }

    #[test]
    fn backends_answer_with_name_and_version_and_call_through_the_mesh() {
        // The mesh address points straight at ratings (standing in for
        // weir): reviews v2's calls land there.
        let ratings = Bookinfo::start(&BookinfoOptions {
            services: vec![("ratings".into(), "v1".into())],
            ..BookinfoOptions::default()
        })
        .expect("ratings");
        let ratings_addr = ratings.backends()[0].addr();
        let set = Bookinfo::start(&BookinfoOptions {
            mesh: Some(ratings_addr),
            services: vec![("reviews".into(), "v2".into()), ("httpbin".into(), "v1".into())],
            ..BookinfoOptions::default()
        })
        .expect("start");
        let reviews = set.get("reviews", "v2").expect("reviews");

        let (status, headers, body) = get(reviews.addr(), "/reviews/0", &[("end-user", "jason")]);
        assert_eq!(status, 200);
        assert_eq!(headers["x-demo-version"], "v2");
        assert!(body.starts_with("reviews v2 ("), "{body}");
        assert!(body.contains("end-user: jason"), "{body}");
        assert!(body.contains("ratings v1"), "{body}");

        let (_, _, body) = get(reviews.addr(), "/reviews/0?format=json", &[("end-user", "jason")]);
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["stars"], "black");
        assert_eq!(v["ratings"]["rating"], 5);
        assert_eq!(v["ratings"]["version"], "v1");
        let seen = ratings.backends()[0].seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].header("end-user"), Some("jason"));
        assert_eq!(seen[0].host, format!("ratings:{}", ratings_addr.port()));

        let httpbin = set.get("httpbin", "v1").expect("httpbin");
        let (_, _, body) = get(httpbin.addr(), "/headers", &[("x-test", "1")]);
        assert!(body.contains("  x-test: 1"), "{body}");
        assert_eq!(httpbin.requests(), 1);
    }

    #[test]
    fn productpage_reports_unavailable_reviews() {
        let set = Bookinfo::start(&BookinfoOptions {
            // Nothing listens on port 1: calls fail at once.
            mesh: Some(SocketAddr::from(([127, 0, 0, 1], 1))),
            timeouts: AppTimeouts::scaled(0.1),
            services: vec![("productpage".into(), "v1".into())],
            ..BookinfoOptions::default()
        })
        .expect("start");
        let (status, _, body) = get(set.backends()[0].addr(), "/productpage", &[("accept", "application/json")]);
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["reviews"]["tries"], 2);
        assert!(
            v["reviews"]["message"].as_str().expect("message").contains("product reviews are currently unavailable")
        );
    }

    #[test]
    fn service_entries_list_endpoints_per_service() {
        let a = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let yaml = service_entries_yaml(
            &[
                ("reviews".into(), "v1".into(), a(1001)),
                ("ratings".into(), "v1".into(), a(1002)),
                ("reviews".into(), "v2".into(), a(1003)),
            ],
            9080,
        );
        assert_eq!(yaml.matches("kind: ServiceEntry").count(), 2);
        assert!(yaml.contains("  - {address: 127.0.0.1, ports: {http: 1003}, labels: {app: reviews, version: v2}}\n"));
        assert!(yaml.contains("  - {number: 9080, name: http, protocol: HTTP}\n"));
    }
}
