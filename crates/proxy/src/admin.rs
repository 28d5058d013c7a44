//! The admin server, on its own small runtime so it never adds latency to
//! traffic: `/ready`, `/stats/prometheus`, `/config_dump`, `/clusters`.
//!
//! It runs on a dedicated thread with a current-thread tokio runtime and
//! serves HTTP/1.1 only. Endpoints (GET or HEAD):
//!
//! - `/ready` (also `/healthz/ready`): `200 LIVE` once the first snapshot
//!   serves, `503 PRE_INITIALIZING` before, `503 DRAINING` after SIGTERM.
//! - `/stats/prometheus`: every metric, Prometheus text format, then the
//!   cluster statistics as Envoy exports them
//!   (`envoy_cluster_upstream_rq_pending_overflow{cluster_name="..."}`).
//! - `/stats`: the cluster statistics in Envoy's text form
//!   (`cluster.outbound|8000||httpbin.default.svc.cluster.local.upstream_rq_pending_overflow: 21`):
//!   connections, pending requests, overflows, circuit-breaker state, outlier ejections.
//! - `/config_dump`: JSON with the applied version, the node, the reload
//!   status (including the last rejected change and its errors) and the
//!   compiled snapshot being served.
//! - `/clusters`: Envoy-style `cluster::host:port::field::value` lines: the
//!   circuit-breaker limits per cluster; per endpoint weight, locality,
//!   active connections and requests, health (`/failed_outlier_check` while
//!   outlier detection ejects it) and its ejection count.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::State;

/// A running admin server. Dropping it stops the server.
pub struct Admin {
    addr: SocketAddr,
    draining: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Binds `state.options.admin` now (so a busy port fails at startup) and
/// serves on a new thread.
pub fn spawn(state: Arc<State>) -> std::io::Result<Admin> {
    let addr = state.options.admin;
    spawn_on(state, addr)
}

/// [`spawn`] on another address (`127.0.0.1:0` picks a free port).
pub fn spawn_on(state: Arc<State>, addr: SocketAddr) -> std::io::Result<Admin> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let draining = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let d = draining.clone();
    let thread = std::thread::Builder::new()
        .name("weir-admin".into())
        .spawn(move || rt.block_on(accept_loop(listener, state, d, stop_rx)))?;
    Ok(Admin { addr: local, draining, stop: Some(stop_tx), thread: Some(thread) })
}

impl Admin {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `/ready` answers `503 DRAINING` from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Stops accepting, closes open admin connections and joins the thread.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop_now();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    draining: Arc<AtomicBool>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("admin: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let draining = draining.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = handle(&state, draining.load(Ordering::SeqCst), req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("admin connection: {e}");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.into())
}

fn respond(status: StatusCode, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache, max-age=0"));
    r
}

const INDEX: &str = "weir admin\n  /ready             200 LIVE when serving\n  /stats/prometheus  metrics\n  \
                     /config_dump       applied version, node, reload status, snapshot (JSON)\n  \
                     /clusters          upstream clusters and endpoints\n  \
                     /stats             cluster statistics (Envoy names)\n";

/// Answers one admin request.
pub fn handle(state: &State, draining: bool, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    match path {
        "/" => text(StatusCode::OK, INDEX),
        "/ready" | "/healthz/ready" => {
            if draining {
                text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n")
            } else if state.ready.load(Ordering::SeqCst) {
                text(StatusCode::OK, "LIVE\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING\n")
            }
        }
        "/stats/prometheus" => {
            let mut body = state.metrics.encode();
            cluster_stats_prometheus(state, &mut body);
            respond(StatusCode::OK, crate::metrics::CONTENT_TYPE, body.into())
        }
        "/stats" => text(StatusCode::OK, cluster_stats_text(state)),
        "/config_dump" => match config_dump(state) {
            Ok(body) => respond(StatusCode::OK, "application/json", body.into()),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode config dump: {e}\n")),
        },
        "/clusters" => text(StatusCode::OK, clusters(state)),
        _ => text(StatusCode::NOT_FOUND, format!("no admin endpoint {path}\n{INDEX}")),
    }
}

#[derive(serde::Serialize)]
struct NodeDump<'a> {
    namespace: &'a str,
    labels: &'a std::collections::BTreeMap<String, String>,
    role: weir_compile::Role,
    cluster_domain: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    locality: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct ConfigDump<'a> {
    /// Version of the snapshot below (the one new requests use).
    applied_version: u64,
    config_dir: String,
    node: NodeDump<'a>,
    status: crate::ConfigStatus,
    /// Terminating TLS chains whose certificates could not be loaded (their handshakes are reset).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tls_errors: Vec<crate::runtime::TlsChainError>,
    snapshot: &'a weir_compile::Snapshot,
}

/// `/config_dump`'s JSON.
pub fn config_dump(state: &State) -> serde_json::Result<Vec<u8>> {
    let runtime = state.current.load_full();
    let status = state.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let node = &state.options.node;
    let dump = ConfigDump {
        applied_version: runtime.version,
        config_dir: state.options.config_dir.display().to_string(),
        node: NodeDump {
            namespace: &node.namespace,
            labels: &node.labels,
            role: node.role,
            cluster_domain: &node.cluster_domain,
            locality: node.locality.as_deref(),
        },
        status,
        tls_errors: runtime.tls_errors(),
        snapshot: &runtime.snapshot,
    };
    let mut out = serde_json::to_vec_pretty(&dump)?;
    out.push(b'\n');
    Ok(out)
}

/// `/clusters`: per cluster its observability name and circuit-breaker
/// limits, and per endpoint its weight, locality, activity and health, as
/// Envoy's admin prints them.
pub fn clusters(state: &State) -> String {
    let runtime = state.current.load_full();
    let mut out = String::with_capacity(256 * runtime.snapshot.clusters.len());
    for c in &runtime.snapshot.clusters {
        let name = &c.name;
        let _ = writeln!(out, "{name}::observability_name::{name}");
        let cs = runtime.cluster_view(name);
        let cs = cs.as_ref();
        if let Some(cs) = cs {
            let b = &cs.breakers;
            for (limit, v) in [
                ("max_connections", b.max_connections),
                ("max_pending_requests", b.max_pending),
                ("max_requests", b.max_requests),
                ("max_retries", b.max_retries),
            ] {
                let _ = writeln!(out, "{name}::default_priority::{limit}::{v}");
            }
        }
        for (i, e) in c.endpoints.iter().enumerate() {
            let host = if e.address.contains(':') && !e.address.starts_with('[') && !e.address.contains("://") {
                format!("[{}]:{}", e.address, e.port)
            } else {
                format!("{}:{}", e.address, e.port)
            };
            let (region, zone, sub_zone) = match e.meta.locality.as_deref() {
                Some(l) => {
                    let mut parts = l.splitn(3, '/');
                    (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""))
                }
                None => ("", "", ""),
            };
            let state = cs.and_then(|cs| cs.endpoints.get(i));
            if let Some(s) = state {
                let _ = writeln!(out, "{name}::{host}::cx_active::{}", s.open_connections());
                let _ = writeln!(out, "{name}::{host}::rq_active::{}", s.active.load(Ordering::Relaxed));
            }
            let _ = writeln!(out, "{name}::{host}::weight::{}", e.weight);
            let _ = writeln!(out, "{name}::{host}::region::{region}");
            let _ = writeln!(out, "{name}::{host}::zone::{zone}");
            let _ = writeln!(out, "{name}::{host}::sub_zone::{sub_zone}");
            let healthy = state.is_none_or(|s| s.is_available());
            let flags = if healthy { "healthy" } else { "/failed_outlier_check" };
            let _ = writeln!(out, "{name}::{host}::health_flags::{flags}");
            if let Some(s) = state.filter(|_| cs.is_some_and(|cs| cs.outlier.is_some())) {
                let _ = writeln!(out, "{name}::{host}::outlier::ejections::{}", s.ejections());
            }
        }
    }
    out
}

/// `/stats`: `cluster.<name>.<stat>: <value>` lines.
pub fn cluster_stats_text(state: &State) -> String {
    let runtime = state.current.load_full();
    let mut out = String::with_capacity(2048 * runtime.snapshot.clusters.len());
    for c in &runtime.snapshot.clusters {
        let Some(cs) = runtime.cluster_view(&c.name) else { continue };
        for (stat, v, _) in cs.stats() {
            let _ = writeln!(out, "cluster.{}.{stat}: {v}", c.name);
        }
    }
    out
}

/// Appends the cluster statistics in Prometheus text form (0.0.4), named as Envoy exports them.
fn cluster_stats_prometheus(state: &State, out: &mut String) {
    let runtime = state.current.load_full();
    let mut families: Vec<(String, crate::upstream::StatKind, String)> = Vec::new();
    // weir's overflow counts by limit: one family, `limit` label.
    let mut overflow = String::new();
    for c in &runtime.snapshot.clusters {
        let Some(cs) = runtime.cluster_view(&c.name) else { continue };
        let label = c.name.replace('\\', "\\\\").replace('"', "\\\"");
        for (i, (stat, v, kind)) in cs.stats().into_iter().enumerate() {
            if let Some(limit) = stat.strip_prefix("weir.overflow.") {
                let _ = writeln!(
                    overflow,
                    "weir_upstream_overflow_total{{cluster_name=\"{label}\",limit=\"{limit}\"}} {v}"
                );
                continue;
            }
            if families.len() <= i {
                let metric = format!("envoy_cluster_{}", stat.replace('.', "_"));
                families.push((metric, kind, String::new()));
            }
            let (metric, _, samples) = &mut families[i];
            let _ = writeln!(samples, "{metric}{{cluster_name=\"{label}\"}} {v}");
        }
    }
    for (metric, kind, samples) in families {
        let kind = match kind {
            crate::upstream::StatKind::Counter => "counter",
            crate::upstream::StatKind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# TYPE {metric} {kind}");
        out.push_str(&samples);
    }
    if !overflow.is_empty() {
        out.push_str("# HELP weir_upstream_overflow_total Requests (and TCP connections) refused by a circuit breaker, by limit.\n");
        out.push_str("# TYPE weir_upstream_overflow_total counter\n");
        out.push_str(&overflow);
    }
}
