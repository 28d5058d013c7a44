//! One HTTP request through the data path, in Envoy's phases:
//! `route` (virtual host, route, CORS, faults, direct responses and
//! redirects) -> `balance` (weighted destination, circuit breaker, endpoint)
//! -> `connect` (upstream request with timeouts and retries, mirrors).
//!
//! A request loads the current runtime once and keeps it: a reload during the
//! request does not change its route or cluster.
//!
//! WebSocket upgrades take the same path; `websocket` describes what differs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;
use weir_compile::model::{AbortStatus, BindScope, ChainAction, ListenerRole, Str, UpstreamProtocol};

use crate::State;
use crate::body::{REPLAY_LIMIT, Replay, ReqBody, RespBody};
use crate::filters::retry::Failure;
use crate::filters::{cors, fault, mirror, retry};
use crate::headers::{self, FmtCtx, REQUEST_ID};
use crate::lb::PickInput;
use crate::local_reply::{Flags, LocalReply, grpc_abort, reason_value};
use crate::outlier::Observed;
use crate::path::Normalized;
use crate::pool::{SendError, UpBody};
use crate::record::{Exchange, protocol_name};
use crate::router::{Action, CompiledRoute, Destination, ReqView, Table, location_value, split_host_port};
use crate::runtime::Runtime;
use crate::upstream::{ActiveGuard, ClusterState, EndpointState};
use crate::websocket;

const ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
const ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
const EXPECTED_TIMEOUT: HeaderName = HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
const SERVICE_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");
const RQ_TIMEOUT: HeaderName = HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
const RQ_PER_TRY_TIMEOUT: HeaderName = HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms");
const RETRIABLE_CODES: HeaderName = HeaderName::from_static("x-envoy-retriable-status-codes");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const EXTERNAL_ADDRESS: HeaderName = HeaderName::from_static("x-envoy-external-address");

const ENVOY_INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");

/// What Envoy removes from a request it does not treat as internal (its `cleanInternalHeaders`),
/// and a gateway also removes from edge requests: the client must not steer retries, timeouts,
/// tracing or how the next proxy sees the request. The first three are only for the edge.
const INTERNAL_ONLY: [HeaderName; 17] = [
    HeaderName::from_static("x-envoy-decorator-operation"),
    HeaderName::from_static("x-envoy-downstream-service-cluster"),
    HeaderName::from_static("x-envoy-downstream-service-node"),
    HeaderName::from_static("x-envoy-retriable-header-names"),
    HeaderName::from_static("x-envoy-retry-on"),
    HeaderName::from_static("x-envoy-retry-grpc-on"),
    HeaderName::from_static("x-envoy-max-retries"),
    HeaderName::from_static("x-envoy-upstream-alt-stat-name"),
    HeaderName::from_static("x-envoy-upstream-rq-timeout-alt-response"),
    EXPECTED_TIMEOUT,
    HeaderName::from_static("x-envoy-force-trace"),
    HeaderName::from_static("x-envoy-ip-tags"),
    HeaderName::from_static("x-envoy-original-url"),
    HeaderName::from_static("x-envoy-hedge-on-per-try-timeout"),
    // Honoured at sidecars (Istio documents them as per-request overrides), which remove them
    // once read (`forward`).
    RQ_TIMEOUT,
    RQ_PER_TRY_TIMEOUT,
    RETRIABLE_CODES,
];
/// Entries of `INTERNAL_ONLY` that only an edge request loses.
const EDGE_ONLY: usize = 3;
/// Entries at the end of `INTERNAL_ONLY` that sidecars read before removing them.
const HONOURED_AT_SIDECARS: usize = 3;

/// Removes the internal-only `x-envoy-*` headers (one pass over the names first; most requests
/// carry none) and `x-envoy-internal`, which Envoy sets itself and only for internal requests.
/// `edge`: the request came into the mesh through a gateway. Returns whether the request
/// carried any `x-envoy-*` header, i.e. whether a sidecar may find an override left to read.
fn clean_internal_headers(h: &mut HeaderMap, edge: bool) -> bool {
    if !h.keys().any(|k| k.as_str().starts_with("x-envoy-")) {
        return false;
    }
    h.remove(ENVOY_INTERNAL);
    let names =
        if edge { &INTERNAL_ONLY[..] } else { &INTERNAL_ONLY[EDGE_ONLY..INTERNAL_ONLY.len() - HONOURED_AT_SIDECARS] };
    for name in names {
        h.remove(name);
    }
    true
}

/// Overwrites the response's `Server` header as Istio configures Envoy to (server header
/// transformation `OVERWRITE`): `istio-envoy` at gateways, Envoy's default `envoy` on sidecar
/// outbound listeners. It comes after the route's response header operations, as Envoy's
/// connection manager sets it after its filters, so a VirtualService cannot change it.
fn set_server(headers: &mut HeaderMap, role: ListenerRole) {
    let name = match role {
        ListenerRole::Gateway => "istio-envoy",
        ListenerRole::SidecarOutbound => "envoy",
    };
    headers.insert(header::SERVER, HeaderValue::from_static(name));
}

/// Which HTTP route table a downstream connection uses.
#[derive(Clone, Debug)]
pub(crate) enum ConnTarget {
    /// The chain `chain` of listener `listener` (looked up in each request's runtime).
    Chain { scope: BindScope, listener: Str, chain: Str },
    /// The explicit HTTP proxy: the table of the mesh listener on the authority's port.
    Proxy,
}

/// A downstream HTTP connection.
pub(crate) struct Conn {
    pub state: Arc<State>,
    pub target: ConnTarget,
    pub role: ListenerRole,
    pub peer: SocketAddr,
    /// The peer's IP as a header value (`x-forwarded-for`, `x-envoy-external-address`): made
    /// once per connection rather than formatted for every request.
    pub peer_ip: HeaderValue,
    pub local: SocketAddr,
    /// Add `x-weir-reason` to local replies.
    pub reason: bool,
    /// The route table of the last runtime this connection used: `runtime id << 24 | table index + 1`.
    pub table_cache: AtomicU64,
    /// The upstream authority of this connection's last request (see [`Conn::authority_for`]).
    pub last_authority: Mutex<Option<Authority>>,
    /// Counts the connection as open and keeps a drain waiting until the last user (hyper's
    /// connection or a WebSocket tunnel) drops this `Conn`.
    pub lifetime: crate::server::Lifetime,
}

impl Conn {
    /// The upstream URI's authority for the `Host` (or rewritten authority) `value`. A keep-alive
    /// client names the same host on every request, so the last one built is shared when it
    /// matches: building one copies the value and, once cloned, promotes the copy to shared
    /// storage (two allocations per request otherwise).
    fn authority_for(&self, value: &HeaderValue) -> Option<Authority> {
        let mut last = self.last_authority.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(a) = &*last
            && a.as_str().as_bytes() == value.as_bytes()
        {
            return Some(a.clone());
        }
        let a = Authority::from_maybe_shared(Bytes::copy_from_slice(value.as_bytes())).ok()?;
        *last = Some(a.clone());
        Some(a)
    }

    /// `https` when this listener terminated TLS, else `http` (`:scheme`, `x-forwarded-proto`).
    fn scheme(&self) -> &'static str {
        if self.lifetime.tls { "https" } else { "http" }
    }
}

/// The hyper service entry point.
pub(crate) fn handle(
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<RespBody>, Infallible>> {
    let rt = conn.state.current.load_full();
    let (pipeline, body) = start(conn, req);
    async move { Ok(pipeline.route(&rt, body).await) }
}

fn header_str(v: &HeaderValue) -> &str {
    v.to_str().unwrap_or("")
}

/// The request's authority: the URI's (HTTP/2, absolute form), else `Host`.
fn authority_of(parts: &http::request::Parts) -> HeaderValue {
    if let Some(a) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        return v;
    }
    parts.headers.get(header::HOST).cloned().unwrap_or_else(|| HeaderValue::from_static(""))
}

/// Phase `request`: the headers weir sets on every request, and the exchange record.
///
/// The pipeline is boxed and each phase takes it as `Box<Self>`: an async function keeps its
/// arguments apart from its locals (rust-lang/rust#62958), so a pipeline passed by value sat in
/// the future once per phase. Boxed, the request future hyper moves into place for every
/// request is 2.3 KB instead of 5.5 KB.
fn start(conn: Arc<Conn>, req: Request<Incoming>) -> (Box<Pipeline>, Incoming) {
    let (mut parts, body) = req.into_parts();
    let upgrade = websocket::take_upgrade(&mut parts);
    let authority = authority_of(&parts);
    let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let grpc = parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // Measured as the client sent it, before weir adds its headers.
    let oversize = head_size(&parts.headers, path.as_str()) > crate::server::MAX_REQUEST_HEADERS;

    let gateway = conn.role == ListenerRole::Gateway;
    // Each header is looked up once: the values the record keeps are taken as they are set. A
    // gateway replaces the client's id, as Envoy does for an edge request (Istio leaves
    // `preserve_external_request_id` off); a sidecar keeps it.
    let request_id = match parts.headers.get(REQUEST_ID).filter(|_| !gateway) {
        Some(id) => id.clone(),
        None => {
            let id = headers::new_request_id();
            parts.headers.insert(REQUEST_ID, id.clone());
            id
        }
    };
    // From the downstream connection, as Envoy sets it.
    let proto = HeaderValue::from_static(conn.scheme());
    // Whether `forward` looks for the per-request overrides (sidecars only).
    let overrides;
    let forwarded_for = if gateway {
        // Every client of a gateway is outside the mesh: Envoy's current default trusts no
        // address as internal (`internal_address_config`), so each request is an edge request.
        clean_internal_headers(&mut parts.headers, true);
        overrides = false;
        parts.headers.insert(EXTERNAL_ADDRESS, conn.peer_ip.clone());
        let xff = append_forwarded_for(&mut parts.headers, &conn.peer_ip);
        parts.headers.insert(X_FORWARDED_PROTO, proto);
        xff
    } else {
        // An application's request carries no `x-forwarded-for`, so Envoy does not treat it as
        // internal either.
        overrides = clean_internal_headers(&mut parts.headers, false);
        if !parts.headers.contains_key(&X_FORWARDED_PROTO) {
            parts.headers.insert(X_FORWARDED_PROTO, proto);
        }
        parts.headers.get(&X_FORWARDED_FOR).cloned()
    };

    let x = Box::new(Exchange {
        conn: conn.clone(),
        start: std::time::Instant::now(),
        method: parts.method.clone(),
        path: path.clone(),
        version: parts.version,
        authority: authority.clone(),
        request_id,
        forwarded_for,
        user_agent: parts.headers.get(header::USER_AGENT).cloned(),
        grpc,
        status: 0,
        flags: Flags::NONE,
        route_name: None,
        cluster: None,
        cluster_name: None,
        upstream_host: None,
        upstream_time: None,
        request_body: None,
        grpc_status: None,
        active: None,
        written: false,
    });
    (Box::new(Pipeline { conn, x, parts, authority, path, upgrade, oversize, overrides }), body)
}

/// The size of a request head as Envoy's `max_request_headers_kb` counts it: names, values and
/// the path.
fn head_size(h: &HeaderMap, path: &str) -> usize {
    path.len() + h.iter().map(|(n, v)| n.as_str().len() + v.len()).sum::<usize>()
}

/// `ip` as a header value.
pub(crate) fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    // An IP address prints as ASCII digits, dots, colons and hex letters.
    HeaderValue::from_maybe_shared(Bytes::from(ip.to_string())).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Appends the peer to `x-forwarded-for`; returns the header's new value.
fn append_forwarded_for(h: &mut HeaderMap, peer_ip: &HeaderValue) -> Option<HeaderValue> {
    let Some(prev) = h.get(&X_FORWARDED_FOR).map(|v| v.as_bytes()).filter(|p| !p.is_empty()) else {
        // The usual case: the client sent none, and the value is the connection's own.
        h.insert(X_FORWARDED_FOR, peer_ip.clone());
        return Some(peer_ip.clone());
    };
    let mut value = bytes::BytesMut::with_capacity(prev.len() + 2 + peer_ip.len());
    value.extend_from_slice(prev);
    value.extend_from_slice(b", ");
    value.extend_from_slice(peer_ip.as_bytes());
    match HeaderValue::from_maybe_shared(value.freeze()) {
        Ok(v) => {
            h.insert(X_FORWARDED_FOR, v.clone());
            Some(v)
        }
        Err(_) => h.get(&X_FORWARDED_FOR).cloned(),
    }
}

struct Pipeline {
    conn: Arc<Conn>,
    x: Box<Exchange>,
    parts: http::request::Parts,
    authority: HeaderValue,
    path: PathAndQuery,
    /// Set for a WebSocket upgrade request (HTTP/1.1 `Connection: upgrade`, `Upgrade: websocket`).
    upgrade: Option<websocket::Upgrade>,
    /// The request head is over Envoy's `max_request_headers_kb`: answered with 431.
    oversize: bool,
    /// A sidecar's request that carried `x-envoy-*` headers, which may include the per-request
    /// overrides `forward` reads (`start` scanned the names once).
    overrides: bool,
}

/// How an upstream exchange ended without a usable response.
enum Outcome {
    Reply(LocalReply),
    Response(Response<UpBody>, Option<Arc<EndpointState>>, Duration),
}

impl Pipeline {
    /// Finishes with a local reply.
    fn local(mut self: Box<Self>, reply: LocalReply) -> Response<RespBody> {
        self.x.flags.insert(reply.flags);
        self.x.status = reply.status.as_u16();
        let resp = if self.x.grpc {
            reply.into_grpc_response(self.conn.reason)
        } else {
            reply.into_response(self.conn.reason)
        };
        self.respond(resp)
    }

    /// Attaches the exchange record to `resp`.
    fn respond(mut self: Box<Self>, mut resp: Response<RespBody>) -> Response<RespBody> {
        self.x.status = resp.status().as_u16();
        set_server(resp.headers_mut(), self.conn.role);
        // Only gRPC requests report a gRPC status (Istio's `grpc_response_status`).
        if self.x.grpc && self.x.grpc_status.is_none() {
            self.x.grpc_status = resp.headers().get(crate::local_reply::GRPC_STATUS).cloned();
        }
        resp.body_mut().attach(self.x);
        resp
    }

    fn view(&self) -> ReqView<'_> {
        ReqView {
            method: &self.parts.method,
            scheme: self.conn.scheme(),
            authority: header_str(&self.authority),
            path: self.path.as_str(),
            headers: &self.parts.headers,
        }
    }

    fn table<'r>(&self, rt: &'r Runtime) -> Result<&'r Table, String> {
        match &self.conn.target {
            ConnTarget::Proxy => Ok(rt.proxy_table(split_host_port(header_str(&self.authority)).1.unwrap_or(80))),
            ConnTarget::Chain { scope, listener, chain } => {
                let cached = self.conn.table_cache.load(Ordering::Relaxed);
                if cached >> 24 == rt.id
                    && let Some(t) = ((cached & 0xff_ffff) as usize).checked_sub(1).and_then(|i| rt.table_at(i))
                {
                    return Ok(t);
                }
                let l = rt.listener(*scope, listener).ok_or_else(|| format!("listener {listener} (removed)"))?;
                let c = l.chains.iter().find(|c| c.name == *chain).ok_or_else(|| format!("listener {listener}"))?;
                let ChainAction::Http { route_table } = &c.action else { return Err(format!("listener {listener}")) };
                let (i, t) = rt.table_index(route_table).ok_or_else(|| format!("route table {route_table}"))?;
                if i < 0xff_fffe {
                    self.conn.table_cache.store(rt.id << 24 | (i as u64 + 1), Ordering::Relaxed);
                }
                Ok(t)
            }
        }
    }

    fn fmt_ctx<'a>(&'a self, upstream: Option<&'a str>, cluster: Option<&'a str>, route: &'a str) -> FmtCtx<'a> {
        FmtCtx {
            method: self.parts.method.as_str(),
            authority: header_str(&self.authority),
            path: self.path.as_str(),
            scheme: self.conn.scheme(),
            peer: self.conn.peer,
            local: self.conn.local,
            protocol: protocol_name(self.parts.version),
            upstream_host: upstream,
            cluster,
            route,
        }
    }

    /// Phase `route`.
    async fn route(mut self: Box<Self>, rt: &Runtime, body: Incoming) -> Response<RespBody> {
        if self.parts.version == Version::HTTP_10 && !self.conn.state.options.accept_http10 {
            // Envoy answers from its codec and closes the connection. (An HTTP/1.0 response
            // without `keep-alive` is what makes hyper close it.)
            let mut resp = self.local(LocalReply::http10_refused());
            *resp.version_mut() = Version::HTTP_10;
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        if self.oversize {
            let h1 = self.parts.version != Version::HTTP_2;
            let mut resp = self.local(LocalReply::headers_too_large());
            if h1 {
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return resp;
        }
        if self.parts.uri.authority().is_none() && !self.parts.headers.contains_key(header::HOST) {
            // Envoy routes nothing without a host (RFC 9112 §3.2: an HTTP/1.1 request without one
            // gets 400).
            return self.local(LocalReply::missing_host());
        }
        // Routing, the upstream and the access log see the normalized path, as with Envoy.
        match crate::path::normalize(self.path.as_str(), rt.snapshot.path_normalization) {
            Normalized::Unchanged => {}
            Normalized::Changed(p) => match PathAndQuery::from_maybe_shared(Bytes::from(p)) {
                Ok(p) => {
                    self.x.path = p.clone();
                    self.path = p;
                }
                Err(_) => return self.local(LocalReply::invalid_path()),
            },
            Normalized::Invalid => return self.local(LocalReply::invalid_path()),
        }
        let table = match self.table(rt) {
            Ok(t) => t,
            Err(subject) => return self.local(LocalReply::no_route(subject)),
        };
        let Some(vh) = table.select(header_str(&self.authority)) else {
            return self.local(LocalReply::no_route(format!("route table {}", table.name)));
        };
        if vh.require_tls && !self.conn.lifetime.tls {
            let (host, port) = split_host_port(header_str(&self.authority));
            let location = match port.filter(|p| *p != 80) {
                Some(p) => format!("https://{host}:{p}{}", self.path),
                None => format!("https://{host}{}", self.path),
            };
            return self.redirect(StatusCode::MOVED_PERMANENTLY, &location);
        }
        let Some(route) = vh.route(&self.view()) else {
            return self.local(LocalReply::no_route(vh.subject.clone()));
        };
        self.x.route_name = Some(route.name.clone());
        tracing::trace!(table = %table.name, vhost = %vh.name, route = %route.name, "route");

        let mut cors_origin = None;
        if let Some(c) = &route.cors {
            match c.check(&self.parts.method, &self.parts.headers) {
                cors::Outcome::Continue => {}
                cors::Outcome::Allowed(o) => cors_origin = Some(o),
                cors::Outcome::Respond(resp) => return self.respond(resp),
            }
        }
        if let Some(f) = &route.fault {
            let (delay, abort) = fault::decide(f);
            if let Some(d) = delay {
                self.x.flags.insert(Flags::DI);
                tokio::time::sleep(d).await;
            }
            if let Some(a) = abort {
                let subject = route.object.as_deref().unwrap_or(&route.name).to_string();
                return match a {
                    AbortStatus::Http(code) => {
                        let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                        self.local(LocalReply::new(status, crate::local_reply::FAULT_ABORT, Flags::FI, subject))
                    }
                    AbortStatus::Grpc(code) => {
                        self.x.flags.insert(Flags::FI);
                        let resp = grpc_abort(*code, self.conn.reason.then_some(subject.as_str()));
                        self.respond(resp)
                    }
                };
            }
        }

        match &route.action {
            Action::Direct { status, body } => {
                let mut resp = Response::new(RespBody::full(body.clone()));
                *resp.status_mut() = *status;
                if !body.is_empty() {
                    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                }
                if vh.block_all && self.conn.reason {
                    let host = split_host_port(header_str(&self.authority)).0;
                    resp.headers_mut().insert(crate::local_reply::REASON_HEADER, reason_value("block_all", host));
                }
                self.apply_response_ops(route, None, resp.headers_mut(), None, None);
                self.respond(resp)
            }
            Action::Redirect(rd) => {
                let location = route.redirect_location(rd, &self.view(), self.conn.local.port());
                let status = StatusCode::from_u16(rd.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
                let mut resp = self.redirect_response(status, &location);
                self.apply_response_ops(route, None, resp.headers_mut(), None, None);
                self.respond(resp)
            }
            Action::Forward { destinations, rewrite } => {
                let Some(dest) = route.pick_destination(destinations) else {
                    return self.local(LocalReply::no_route(vh.subject.clone()));
                };
                self.forward(route, dest, rewrite.as_ref(), body, cors_origin).await
            }
        }
    }

    fn redirect_response(&self, status: StatusCode, location: &str) -> Response<RespBody> {
        let mut resp = Response::new(RespBody::empty());
        *resp.status_mut() = status;
        resp.headers_mut().insert(header::LOCATION, location_value(location));
        resp
    }

    fn redirect(self: Box<Self>, status: StatusCode, location: &str) -> Response<RespBody> {
        let resp = self.redirect_response(status, location);
        self.respond(resp)
    }

    fn apply_response_ops(
        &self,
        route: &CompiledRoute,
        dest: Option<&Destination>,
        headers: &mut HeaderMap,
        upstream: Option<&str>,
        request: Option<&HeaderMap>,
    ) {
        let dest_empty = dest.is_none_or(|d| d.response_ops.is_empty());
        if dest_empty && route.response_ops.is_empty() {
            return;
        }
        let cluster = dest.map(|d| &*d.name);
        let ctx = self.fmt_ctx(upstream, cluster, &route.name);
        let request = Some(request.unwrap_or(&self.parts.headers));
        if let Some(d) = dest {
            d.response_ops.apply(headers, &ctx, request);
        }
        route.response_ops.apply(headers, &ctx, request);
    }

    /// Phases `balance` and `connect`.
    async fn forward(
        mut self: Box<Self>,
        route: &CompiledRoute,
        dest: &Destination,
        rewrite: Option<&crate::router::PathRewrite>,
        body: Incoming,
        cors_origin: Option<HeaderValue>,
    ) -> Response<RespBody> {
        let Some(cluster) = dest.cluster.as_ref().map(|s| s.get().clone()) else {
            self.x.cluster_name = Some(dest.name.clone());
            return self.local(LocalReply::no_cluster(&dest.name));
        };
        self.x.cluster = Some(cluster.clone());
        let downstream_h2 = self.parts.version == Version::HTTP_2;
        // Upgrades go upstream over HTTP/1.1 whatever the cluster's protocol (no extended CONNECT).
        let http2 = self.upgrade.is_none()
            && match cluster.protocol {
                UpstreamProtocol::Http2 => true,
                UpstreamProtocol::Auto => downstream_h2,
                UpstreamProtocol::Http1 | UpstreamProtocol::Tcp => false,
            };
        if !cluster.original_dst && cluster.endpoints.is_empty() {
            return self.local(LocalReply::no_healthy_upstream(&cluster.name));
        }
        let mut guard = cluster.guard();

        // Per-request overrides, at sidecars only: a gateway removed them from the request in
        // `start` (an edge request, see `clean_internal_headers`).
        let mut timeout = route.timeout;
        let mut per_try = route.retry.as_ref().and_then(|r| r.per_try_timeout);
        let mut extra_codes = Vec::new();
        if self.overrides {
            if let Some(ms) = header_ms(&self.parts.headers, &RQ_TIMEOUT) {
                timeout = (ms > 0).then(|| Duration::from_millis(ms));
            }
            if let Some(ms) = header_ms(&self.parts.headers, &RQ_PER_TRY_TIMEOUT) {
                per_try = (ms > 0).then(|| Duration::from_millis(ms));
            }
            if self.parts.headers.contains_key(&RETRIABLE_CODES) {
                extra_codes = retry::header_codes(&self.parts.headers);
            }
            for h in &INTERNAL_ONLY[INTERNAL_ONLY.len() - HONOURED_AT_SIDECARS..] {
                self.parts.headers.remove(h);
            }
        }

        // The request as the upstream sees it.
        let mut upstream_path = self.path.clone();
        let mut upstream_authority = self.authority.clone();
        if let Some(rw) = rewrite {
            if let Some(p) = route.rewrite_path(rw, self.path.as_str()) {
                match PathAndQuery::from_maybe_shared(Bytes::from(p)) {
                    Ok(p) => {
                        if let Ok(v) = HeaderValue::from_str(self.path.as_str()) {
                            self.parts.headers.insert(ORIGINAL_PATH, v);
                        }
                        upstream_path = p;
                    }
                    Err(e) => tracing::debug!(error = %e, "rewritten path is not a valid URI path; not rewriting"),
                }
            }
            if let Some(a) = &rw.authority {
                let ctx = self.fmt_ctx(None, Some(&dest.name), &route.name);
                if let Some(v) = a.eval(&ctx, Some(&self.parts.headers)) {
                    upstream_authority = v;
                }
            }
        }
        if !dest.request_ops.is_empty() || !route.request_ops.is_empty() {
            let mut h = std::mem::take(&mut self.parts.headers);
            let ctx = FmtCtx {
                method: self.parts.method.as_str(),
                authority: header_str(&self.authority),
                path: self.path.as_str(),
                scheme: self.conn.scheme(),
                peer: self.conn.peer,
                local: self.conn.local,
                protocol: protocol_name(self.parts.version),
                upstream_host: None,
                cluster: Some(&dest.name),
                route: &route.name,
            };
            if let Some(a) = &dest.request_ops.authority
                && let Some(v) = a.eval(&ctx, Some(&h))
            {
                upstream_authority = v;
            }
            dest.request_ops.apply(&mut h, &ctx, None);
            route.request_ops.apply(&mut h, &ctx, None);
            if let Some(a) = &route.request_ops.authority
                && let Some(v) = a.eval(&ctx, Some(&h))
            {
                upstream_authority = v;
            }
            self.parts.headers = h;
        }
        headers::strip_hop_by_hop(&mut self.parts.headers, http2);
        if let Some(up) = &self.upgrade {
            websocket::set_upgrade_headers(&mut self.parts.headers, up.protocol.clone());
        }
        // `Expect: 100-continue` was answered downstream (hyper sends 100 when the body is read).
        self.parts.headers.remove(header::EXPECT);
        if http2 {
            self.parts.headers.remove(header::HOST);
        } else {
            self.parts.headers.insert(header::HOST, upstream_authority.clone());
        }
        let request_for_response = route.response_reads_request.then(|| self.parts.headers.clone());

        // The body: forwarded as it arrives, with a copy kept when it may have to be sent again.
        let replay = if body.is_end_stream() {
            None
        } else {
            let keep = route.retry.is_some() || !route.mirrors.is_empty();
            let length = body.size_hint().exact();
            Some(Replay::new(body, if keep { REPLAY_LIMIT } else { 0 }, length))
        };
        self.x.request_body = replay.clone();

        let authority = self.conn.authority_for(&upstream_authority);
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));

        // Upgrade requests are not mirrored (a mirror could not take part in the tunnel).
        let mirrors = if self.upgrade.is_some() { &[][..] } else { &route.mirrors[..] };
        for (name, mirror_cluster, pct) in mirrors {
            if let Some(mc) = mirror_cluster
                && fault::hit(*pct)
            {
                self.mirror(mc.get(), authority.as_ref(), &upstream_path, replay.as_ref(), timeout);
            } else if mirror_cluster.is_none() {
                tracing::debug!(cluster = %name, "mirror cluster not in the snapshot; not mirroring");
            }
        }

        // Consistent hash on a cookie with a ttl: Envoy sets the cookie it generated (lb.rs).
        let set_cookie = cluster.balancer.set_cookie(&self.parts.headers, self.conn.peer.ip());
        let outcome = self
            .attempts(
                &cluster,
                http2,
                authority,
                &upstream_path,
                replay.as_ref(),
                route,
                deadline,
                per_try,
                &extra_codes,
                &mut guard,
            )
            .await;
        self.x.active = Some(guard);
        match outcome {
            Outcome::Reply(r) => self.local(r),
            Outcome::Response(mut resp, endpoint, service_time) => {
                let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                let tunnel = match self.upgrade.take() {
                    Some(up) if switching => {
                        let protocol = resp.headers().get(header::UPGRADE).cloned().unwrap_or(up.protocol);
                        Some((up.downstream, hyper::upgrade::on(&mut resp), protocol))
                    }
                    _ => None,
                };
                if switching && tunnel.is_none() {
                    // 101 to a request that did not ask for it: a protocol error, not relayed.
                    tracing::debug!(cluster = %cluster.name, "upstream switched protocols unasked; resetting");
                    return self.local(LocalReply::connection_termination(&cluster.name, Flags::UC));
                }
                let (mut rparts, rbody) = resp.into_parts();
                headers::strip_hop_by_hop(&mut rparts.headers, false);
                if let Some((_, _, protocol)) = &tunnel {
                    websocket::set_upgrade_headers(&mut rparts.headers, protocol.clone());
                }
                rparts.version = self.parts.version;
                let ms = u64::try_from(service_time.as_millis()).unwrap_or(u64::MAX);
                rparts.headers.insert(SERVICE_TIME, headers::number(ms));
                if let Some(cookie) = set_cookie {
                    rparts.headers.append(header::SET_COOKIE, cookie);
                }
                let upstream_host = endpoint.as_ref().map(|e| &*e.host);
                self.apply_response_ops(
                    route,
                    Some(dest),
                    &mut rparts.headers,
                    upstream_host,
                    request_for_response.as_ref(),
                );
                if let (Some(c), Some(o)) = (&route.cors, cors_origin) {
                    c.decorate(&mut rparts.headers, o);
                }
                self.x.upstream_host = endpoint.map(|e| e.host.clone());
                self.x.upstream_time = Some(service_time);
                if let Some((downstream, upstream, _)) = tunnel {
                    // The route deadline ends here: it covered the wait for the 101, not the tunnel.
                    self.x.status = StatusCode::SWITCHING_PROTOCOLS.as_u16();
                    set_server(&mut rparts.headers, self.conn.role);
                    tokio::spawn(websocket::splice(self.x, downstream, upstream));
                    return Response::from_parts(rparts, RespBody::empty());
                }
                let mut body = RespBody::upstream(rbody);
                if let Some(d) = deadline {
                    body.set_deadline(d);
                }
                self.respond(Response::from_parts(rparts, body))
            }
        }
    }

    /// The upstream request for one attempt (or a mirror) to `uri`.
    fn upstream_request(&self, http2: bool, uri: Uri, body: ReqBody, headers: HeaderMap) -> Request<ReqBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.parts.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = if http2 { Version::HTTP_2 } else { Version::HTTP_11 };
        *req.headers_mut() = headers;
        req
    }

    fn mirror(
        &self,
        cluster: &Arc<ClusterState>,
        authority: Option<&Authority>,
        path: &PathAndQuery,
        replay: Option<&Arc<Replay>>,
        timeout: Option<Duration>,
    ) {
        let http2 = match cluster.protocol {
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Auto => self.parts.version == Version::HTTP_2,
            _ => false,
        };
        let input = PickInput { headers: &self.parts.headers, path: path.as_str(), peer: self.conn.peer.ip() };
        let endpoint = if cluster.original_dst {
            None
        } else {
            match cluster.balancer.pick(&cluster.endpoints, &input, &[]) {
                Some(i) => Some(&cluster.endpoints[i]),
                None => return,
            }
        };
        let mut headers = self.parts.headers.clone();
        let shadow;
        let authority = if mirror::shadow_suffix() {
            shadow = authority.and_then(|a| Authority::try_from(mirror::shadow_authority(a.as_str())).ok());
            shadow.as_ref()
        } else {
            authority
        };
        if http2 {
            headers.remove(header::HOST);
        } else if let Some(a) = authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            headers.insert(header::HOST, a);
        }
        let body = replay.map_or(ReqBody::Empty, |r| r.reader());
        let Some(uri) = upstream_uri(authority, endpoint.map(|e| &**e), path) else {
            return;
        };
        let req = self.upstream_request(http2, uri, body, headers);
        let pool = match endpoint {
            Some(e) => e.pool().clone(),
            None => cluster.passthrough_pool(req.uri().authority().map_or("", |a| a.as_str())),
        };
        let send = async move {
            let (resp, lease) = pool.send(req, http2).await?;
            let mut body = resp.into_body();
            while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
                if frame.is_err() {
                    break;
                }
            }
            drop(lease);
            Ok::<_, SendError>(())
        };
        mirror::spawn(send, timeout, &cluster.name);
    }

    /// Sends the request, retrying per the route's policy.
    ///
    /// Every attempt ends in one [`Observed`] outcome (response status with gRPC
    /// statuses mapped, reset, connect failure, timeout) that feeds outlier
    /// detection; the retry policy decides on the same outcome. A retry needs a
    /// retry slot (`maxRetries` or the retry budget); without one the outcome
    /// stands, flagged `UO` (Envoy's `upstream_rq_retry_overflow`).
    #[allow(clippy::too_many_arguments)]
    async fn attempts(
        &mut self,
        cluster: &Arc<ClusterState>,
        http2: bool,
        authority: Option<Authority>,
        path: &PathAndQuery,
        replay: Option<&Arc<Replay>>,
        route: &CompiledRoute,
        deadline: Option<Instant>,
        per_try: Option<Duration>,
        extra_codes: &[u16],
        guard: &mut ActiveGuard,
    ) -> Outcome {
        let policy = route.retry.as_ref();
        let max_attempts = policy.map_or(0, |p| p.attempts).saturating_add(1);
        // Endpoints of earlier attempts (the last few), for the previous-hosts predicate.
        let mut tried = [usize::MAX; 8];
        let mut n_tried = 0usize;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let endpoint: Option<(usize, Arc<EndpointState>)> = if cluster.original_dst {
                None
            } else {
                let input = PickInput { headers: &self.parts.headers, path: path.as_str(), peer: self.conn.peer.ip() };
                let avoid: &[usize] =
                    if policy.is_some_and(|p| p.avoid_previous_hosts) { &tried[..n_tried.min(8)] } else { &[] };
                match cluster.balancer.pick(&cluster.endpoints, &input, avoid) {
                    Some(i) => Some((i, cluster.endpoints[i].clone())),
                    None => return Outcome::Reply(LocalReply::no_healthy_upstream(&cluster.name)),
                }
            };
            if let Some((i, e)) = &endpoint {
                guard.set_endpoint(e);
                if policy.is_some() {
                    tried[n_tried % 8] = *i;
                    n_tried += 1;
                }
            }
            let now = Instant::now();
            let attempt_deadline = match (deadline, per_try.and_then(|p| now.checked_add(p))) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let body = replay.map_or(ReqBody::Empty, |r| r.reader());
            let ep = endpoint.as_ref().map(|(_, e)| e.clone());
            // The same clock read as `now` (tokio's instant wraps the standard one).
            let sent = now.into_std();
            let h = &mut self.parts.headers;
            h.insert(ATTEMPT_COUNT, headers::number(u64::from(attempt)));
            if let Some(d) = attempt_deadline {
                let ms = d.saturating_duration_since(now).as_millis().max(1);
                h.insert(EXPECTED_TIMEOUT, headers::number(u64::try_from(ms).unwrap_or(u64::MAX)));
            }
            let Some(uri) = upstream_uri(authority.as_ref(), ep.as_deref(), path) else {
                return Outcome::Reply(LocalReply::no_healthy_upstream(&cluster.name));
            };
            let passthrough;
            let pool = match &ep {
                Some(e) => e.pool(),
                None => {
                    passthrough = cluster.passthrough_pool(uri.authority().map_or("", |a| a.as_str()));
                    &passthrough
                }
            };
            let fut = async {
                if http2 || self.upgrade.is_some() {
                    // hyper's client takes a request of its own: a copy unless this is the last attempt.
                    let headers = if attempt < max_attempts {
                        self.parts.headers.clone()
                    } else {
                        std::mem::take(&mut self.parts.headers)
                    };
                    // Boxed: hyper's client future would otherwise size every request's future.
                    Box::pin(pool.send(self.upstream_request(http2, uri, body, headers), http2)).await
                } else {
                    // HTTP/1.1 writes its head from the request's headers in place: no copy per attempt.
                    pool.send_h1(&self.parts.method, &uri, &self.parts.headers, body).await
                }
            };
            let result = match attempt_deadline {
                Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
                None => Some(fut.await),
            };
            // The one classification of this attempt: outlier detection, retries and the reply follow it.
            let (observed, failure) = match &result {
                None => (Some(Observed::Timeout), Some(Failure::PerTryTimeout)),
                Some(Err(SendError::Overflow(limit))) => {
                    // Overflow is answered at once and never retried (Envoy).
                    cluster.stats.overflowed(*limit);
                    return Outcome::Reply(LocalReply::overflow(&cluster.name, *limit));
                }
                Some(Err(e)) => {
                    let f = classify(e);
                    tracing::debug!(cluster = %cluster.name, error = %error_chain(e), attempt, "upstream request failed");
                    (Some(if f == Failure::Connect { Observed::ConnectFailed } else { Observed::Reset }), Some(f))
                }
                Some(Ok((resp, _))) => (Some(Observed::response(resp.status().as_u16(), resp.headers())), None),
            };
            if let (Some(e), Some(o)) = (&ep, observed) {
                cluster.observe(e, o);
            }
            let timed_out_total = result.is_none() && deadline.is_some_and(|d| Instant::now() >= d);
            // Some(true): retry; Some(false): retriable but no attempt left; None: not retriable.
            let decision = match (&result, failure) {
                _ if timed_out_total => None,
                (Some(Ok((resp, _))), _) => policy.and_then(|p| {
                    p.retries_response(resp.status().as_u16(), resp.headers(), extra_codes)
                        .then(|| attempt < max_attempts && replay.is_none_or(|r| r.replayable()))
                }),
                (_, Some(f)) => policy.and_then(|p| {
                    p.retries_failure(f).then(|| attempt < max_attempts && replay.is_none_or(|r| r.replayable()))
                }),
                _ => None,
            };
            let mut extra = match decision {
                Some(false) => Flags::URX,
                _ => Flags::NONE,
            };
            if decision == Some(true) && !guard.has_retry() {
                match cluster.breakers.try_retry() {
                    Some(slot) => guard.set_retry(slot),
                    None => extra = Flags::UO,
                }
            }
            if decision != Some(true) || extra == Flags::UO {
                return match result {
                    None if timed_out_total || extra == Flags::NONE => {
                        Outcome::Reply(LocalReply::timeout(&cluster.name, Flags::NONE))
                    }
                    None => Outcome::Reply(LocalReply::timeout(&cluster.name, extra)),
                    Some(Err(_)) => Outcome::Reply(match failure {
                        Some(Failure::Connect) => LocalReply::connect_failure(&cluster.name, Flags::UF.with(extra)),
                        _ => LocalReply::connection_termination(&cluster.name, Flags::UC.with(extra)),
                    }),
                    Some(Ok((resp, lease))) => {
                        guard.set_lease(lease);
                        self.x.flags.insert(extra);
                        Outcome::Response(resp, ep, sent.elapsed())
                    }
                };
            }
            drop(result);
            // Back off before the next attempt, within the route deadline.
            let mut wait = policy.map_or(Duration::ZERO, |p| p.backoff(attempt));
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left <= wait {
                    tokio::time::sleep(left).await;
                    return Outcome::Reply(LocalReply::timeout(&cluster.name, Flags::NONE));
                }
                wait = wait.min(left);
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The absolute URI of an upstream request: `authority` (else the endpoint's host) and `path`.
fn upstream_uri(authority: Option<&Authority>, endpoint: Option<&EndpointState>, path: &PathAndQuery) -> Option<Uri> {
    let authority = match authority {
        Some(a) if !a.as_str().is_empty() => a.clone(),
        // No usable authority: name the endpoint itself.
        _ => Authority::from_maybe_shared(Bytes::copy_from_slice(endpoint?.host.as_bytes())).ok()?,
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority);
    uri.path_and_query = Some(path.clone());
    Uri::from_parts(uri).ok()
}

fn header_ms(h: &HeaderMap, name: &HeaderName) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Connect failure, or a reset before response headers (`refused`: HTTP/2 REFUSED_STREAM).
fn classify(e: &SendError) -> Failure {
    match e {
        SendError::Connect(_) => Failure::Connect,
        // Not retried (the caller answers at once); classified with connect failures for completeness.
        SendError::Overflow(_) => Failure::Connect,
        SendError::Upstream(_) => {
            let text = error_chain(e);
            Failure::Reset { refused: text.contains("refused stream") || text.contains("REFUSED_STREAM") }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, F, Fut>(_: F) -> usize
    where
        F: Fn(A, B) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// hyper moves the request future into place for every request (HTTP/2: into a task of
    /// its own), so its size is paid per request. It was 5.5 KB before the pipeline was boxed
    /// (BENCHMARKS.md).
    #[test]
    fn the_request_future_stays_small() {
        let size = future_size(super::handle);
        assert!(size <= 2560, "request future grew to {size} bytes");
    }
}
