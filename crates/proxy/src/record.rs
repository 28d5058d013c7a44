//! The record of one request/response exchange, written to metrics and the
//! access log when the response body ends (or is dropped).
//!
//! Values are kept in their wire form (header values, `Arc<str>` names) while
//! the request runs; strings are only made when the record is written.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue, Method, Version};

use crate::access_log::AccessEntry;
use crate::body::Replay;
use crate::local_reply::Flags;
use crate::metrics::RequestView;
use crate::request::Conn;
use crate::upstream::ActiveGuard;
use crate::upstream::ClusterState;
use weir_compile::model::Str;

/// What is known about a request when its response starts.
pub(crate) struct Exchange {
    /// The downstream connection (its reference count is per connection, not shared by all requests).
    pub conn: Arc<Conn>,
    pub start: Instant,
    pub method: Method,
    /// The path as received (before rewrites).
    pub path: http::uri::PathAndQuery,
    pub version: Version,
    pub authority: HeaderValue,
    pub request_id: HeaderValue,
    pub forwarded_for: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub grpc: bool,
    pub status: u16,
    pub flags: Flags,
    pub route_name: Option<Str>,
    pub cluster: Option<Arc<ClusterState>>,
    /// Cluster name when it is not in the snapshot (`NC`).
    pub cluster_name: Option<Str>,
    pub upstream_host: Option<Str>,
    pub upstream_time: Option<Duration>,
    pub request_body: Option<Arc<Replay>>,
    /// `grpc-status` from the response headers (trailers-only responses).
    pub grpc_status: Option<HeaderValue>,
    /// Held until the response ends: least-request and circuit-breaker counts.
    pub active: Option<ActiveGuard>,
    /// Set once written; an exchange dropped unwritten (the client left before the
    /// response started) is written with status 0 and flag `DC`, as Envoy logs it.
    pub written: bool,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.written {
            self.status = 0;
            self.write(0, Flags::DC, None);
        }
    }
}

fn text(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

impl Exchange {
    /// Writes the record: `bytes` sent downstream, `flags` learned while streaming,
    /// `trailers` of the response (for `grpc-status`).
    pub fn finish(mut self: Box<Self>, bytes: u64, flags: Flags, trailers: Option<&HeaderMap>) {
        self.write(bytes, flags, trailers);
    }

    fn write(&mut self, bytes: u64, flags: Flags, trailers: Option<&HeaderMap>) {
        self.written = true;
        self.active = None;
        let x = &*self;
        let flags = x.flags.with(flags);
        let duration = x.start.elapsed();
        let request_bytes = x.request_body.as_ref().map_or(0, |b| b.bytes_read());
        let grpc_status = trailers.and_then(|t| t.get(crate::local_reply::GRPC_STATUS)).or(x.grpc_status.as_ref());
        let flags_text = flags.text();
        let state = &x.conn.state;
        let (service, name, namespace, version) = match &x.cluster {
            Some(c) => (&*c.service, &*c.service_name, &*c.service_namespace, &*c.subset),
            None => ("unknown", "unknown", "unknown", "unknown"),
        };
        state.metrics.record(&RequestView {
            reporter: "source",
            destination_service: service,
            destination_service_name: name,
            destination_service_namespace: namespace,
            destination_version: version,
            response_code: x.status,
            response_flags: &flags_text,
            request_protocol: if x.grpc { "grpc" } else { "http" },
            grpc_response_status: grpc_label(x.grpc, grpc_status, x.status),
            duration,
            request_bytes,
            response_bytes: bytes,
        });

        if !state.access_log.enabled() {
            return;
        }
        let cluster = match (&x.cluster, &x.cluster_name) {
            (Some(c), _) => c.name.to_string(),
            (None, Some(n)) => n.to_string(),
            (None, None) => String::new(),
        };
        state.access_log.log(&AccessEntry {
            // The wall-clock start, from the end and the monotonic duration: one clock read per
            // request fewer when nothing is logged.
            start: SystemTime::now().checked_sub(duration),
            method: x.method.as_str().to_string(),
            path: x.path.as_str().to_string(),
            protocol: protocol_name(x.version).to_string(),
            response_code: x.status,
            response_flags: flags_text.into_owned(),
            bytes_received: request_bytes,
            bytes_sent: bytes,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            upstream_service_time_ms: x.upstream_time.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            x_forwarded_for: x.forwarded_for.as_ref().map(text),
            user_agent: x.user_agent.as_ref().map(text),
            request_id: text(&x.request_id),
            authority: text(&x.authority),
            upstream_host: x.upstream_host.as_ref().map(|h| h.to_string()),
            upstream_cluster: cluster,
            route_name: x.route_name.as_ref().map(|r| r.to_string()).unwrap_or_default(),
        });
    }
}

/// Istio's `grpc_response_status`: empty unless the request is gRPC; then `grpc-status` from the
/// trailers, else the headers, else inferred from the HTTP status (Envoy's `getGrpcStatus`).
fn grpc_label(grpc: bool, grpc_status: Option<&HeaderValue>, status: u16) -> &str {
    if !grpc {
        return "";
    }
    if let Some(s) = grpc_status.and_then(|v| v.to_str().ok()) {
        return s;
    }
    if status == 0 { "" } else { crate::local_reply::grpc_status_for_http(status) }
}

/// `HTTP/1.1`, `HTTP/2`, as Envoy's `%PROTOCOL%`.
pub fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}
