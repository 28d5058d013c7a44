//! Upstream connection pools and circuit breakers: one admission model for
//! HTTP/1.1 and HTTP/2, after Envoy's `ConnPoolImplBase` (docs/connection-pools.md).
//!
//! Each endpoint has one [`Pool`]; the cluster's [`Breakers`] are shared by
//! the pools of its endpoints. A request goes through these steps:
//!
//! 1. **Ready connection.** HTTP/1.1 takes an idle connection (most recently
//!    used first); HTTP/2 takes a stream on the first connection with
//!    capacity (`maxConcurrentStreams`, `maxRequestsPerConnection`; streams
//!    beyond the peer's `SETTINGS_MAX_CONCURRENT_STREAMS` wait on the connection).
//! 2. **Pending.** Without one, the request waits for a connection and holds
//!    a pending slot (`http1MaxPendingRequests`, for both protocols as in
//!    Envoy); no slot left: 503 `UO`, counted in `upstream_rq_pending_overflow`.
//!    A new connection is dialled when the connections being established
//!    cannot serve every waiter, unless the cluster has `maxConnections`
//!    open (`upstream_cx_overflow`; a host without any connection still gets
//!    one, as in Envoy, so every endpoint stays usable). Connections freed
//!    by other requests go to waiters first-come first-served; a failed
//!    dial fails the waiters it was meant to serve (`UF`).
//! 3. **Attach.** The request takes a request slot (`http2MaxRequests`, for
//!    both protocols); none left: 503 `UO` (Envoy counts this in
//!    `upstream_rq_pending_overflow` too). The slot, and an HTTP/2 stream,
//!    are held by the returned [`Lease`] until the response is complete.
//!
//! Connections close after `idleTimeout` unused, after
//! `maxConnectionDuration` (HTTP/1.1 once the exchange in progress ends,
//! HTTP/2 by draining), and after `maxRequestsPerConnection` requests. An
//! HTTP/1.1 request that a reused connection closed before sending is sent
//! again on another connection (it never reached the upstream).
//!
//! The pool's state is behind one mutex per endpoint, held only for
//! bookkeeping (never across I/O); the request path takes it once to check
//! out a connection and once to give it back.
//!
//! HTTP/1.1 connections have no task of their own: the request's task drives
//! the exchange ([`h1`]) and the response body returns the connection when
//! its last byte is read. Idle ones are checked when taken (closed by the
//! upstream: dropped) and closed by one reaper task per pool when they idle
//! out. HTTP/2 connections, and HTTP/1.1 ones that carry an upgrade, run on
//! hyper's client in a task each.

mod h1;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;
use tokio::time::Instant;
use weir_compile::policy::{ConnectionPool, UNLIMITED};

use crate::body::{BoxError, ReqBody};
use crate::connect::Connector;
pub(crate) use h1::H1Body;

/// A circuit-breaker limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    Connections,
    PendingRequests,
    Requests,
    Retries,
}

impl Limit {
    pub const ALL: [Limit; 4] = [Limit::Connections, Limit::PendingRequests, Limit::Requests, Limit::Retries];

    /// Envoy's circuit-breaker name.
    pub fn envoy_name(self) -> &'static str {
        match self {
            Limit::Connections => "max_connections",
            Limit::PendingRequests => "max_pending_requests",
            Limit::Requests => "max_requests",
            Limit::Retries => "max_retries",
        }
    }

    /// The DestinationRule field that sets it.
    pub fn istio_field(self) -> &'static str {
        match self {
            Limit::Connections => "tcp.maxConnections",
            Limit::PendingRequests => "http.http1MaxPendingRequests",
            Limit::Requests => "http.http2MaxRequests",
            Limit::Retries => "http.maxRetries",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Envoy-named cluster statistics (`/stats`, `/stats/prometheus`); kept
/// across reloads for as long as the cluster exists.
#[derive(Debug, Default)]
pub(crate) struct ClusterStats {
    pub upstream_cx_total: AtomicU64,
    pub upstream_cx_connect_fail: AtomicU64,
    pub upstream_cx_connect_timeout: AtomicU64,
    pub upstream_cx_overflow: AtomicU64,
    pub upstream_cx_idle_timeout: AtomicU64,
    pub upstream_cx_max_requests: AtomicU64,
    pub upstream_cx_max_duration_reached: AtomicU64,
    pub upstream_rq_pending_total: AtomicU64,
    pub upstream_rq_pending_overflow: AtomicU64,
    pub upstream_rq_retry: AtomicU64,
    pub upstream_rq_retry_overflow: AtomicU64,
    /// Local `UO` replies (and reset TCP connections) by the limit that tripped ([`Limit`] order).
    pub overflow_by_limit: [AtomicU64; 4],
    pub outlier: crate::outlier::OutlierStats,
}

impl ClusterStats {
    pub fn overflowed(&self, limit: Limit) {
        self.overflow_by_limit[limit.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn overflow_count(&self, limit: Limit) -> u64 {
        self.overflow_by_limit[limit.index()].load(Ordering::Relaxed)
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The cluster-wide circuit breakers (Envoy's default priority).
#[derive(Debug)]
pub(crate) struct Breakers {
    pub max_connections: u32,
    pub max_pending: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    budget: Option<(f64, u32)>,
    /// Upstream connections open or being established (HTTP and TCP).
    pub connections: AtomicU32,
    /// Requests waiting for a connection.
    pub pending: AtomicU32,
    /// Requests attached to a connection; only counted when a limit or budget needs it.
    pub requests: AtomicU32,
    /// Retries in progress.
    pub retries: AtomicU32,
    pub stats: Arc<ClusterStats>,
}

impl Breakers {
    pub fn new(p: &ConnectionPool, stats: Arc<ClusterStats>) -> Breakers {
        Breakers {
            max_connections: p.max_connections,
            max_pending: p.max_pending_requests,
            max_requests: p.max_requests,
            max_retries: p.max_retries,
            budget: p.retry_budget.as_ref().map(|b| (b.percent.0, b.min_retry_concurrency)),
            connections: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            stats,
        }
    }

    /// Whether the limits equal `p`'s (pools and counters can then be kept across a reload).
    pub fn same_limits(&self, p: &ConnectionPool) -> bool {
        self.max_connections == p.max_connections
            && self.max_pending == p.max_pending_requests
            && self.max_requests == p.max_requests
            && self.max_retries == p.max_retries
            && self.budget == p.retry_budget.as_ref().map(|b| (b.percent.0, b.min_retry_concurrency))
    }

    fn take(counter: &AtomicU32, limit: u32) -> bool {
        let before = counter.fetch_add(1, Ordering::Relaxed);
        if limit != UNLIMITED && before >= limit {
            counter.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn counts_requests(&self) -> bool {
        self.max_requests != UNLIMITED || self.budget.is_some()
    }

    /// A connection slot (TCP proxying; HTTP pools take theirs when dialling).
    pub fn try_connection(&self) -> bool {
        Breakers::take(&self.connections, self.max_connections)
    }

    pub fn release_connection(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// A retry slot: `maxRetries` concurrent retries, or the retry budget
    /// (`percent` of active and pending requests, at least `minRetryConcurrency`).
    pub fn try_retry(self: &Arc<Breakers>) -> Option<RetrySlot> {
        let limit = match self.budget {
            Some((percent, min)) => {
                let active = self.requests.load(Ordering::Relaxed) + self.pending.load(Ordering::Relaxed);
                ((percent / 100.0 * f64::from(active)) as u32).max(min)
            }
            None => self.max_retries,
        };
        if Breakers::take(&self.retries, limit) {
            inc(&self.stats.upstream_rq_retry);
            Some(RetrySlot(self.clone()))
        } else {
            inc(&self.stats.upstream_rq_retry_overflow);
            self.stats.overflowed(Limit::Retries);
            None
        }
    }
}

/// A retry in progress, until dropped.
#[derive(Debug)]
pub(crate) struct RetrySlot(Arc<Breakers>);

impl Drop for RetrySlot {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connection settings of a pool, from the cluster's connection-pool policy.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConnSettings {
    pub idle_timeout: Duration,
    pub max_duration: Option<Duration>,
    /// 0: unlimited.
    pub max_requests_per_connection: u32,
    /// Streams per HTTP/2 connection (also bounded by the peer's setting).
    pub max_streams: u32,
    pub h2_keepalive_interval: Option<Duration>,
    pub h2_keepalive_timeout: Option<Duration>,
}

impl ConnSettings {
    pub fn of(p: &ConnectionPool) -> ConnSettings {
        ConnSettings {
            idle_timeout: p.idle_timeout,
            max_duration: p.max_connection_duration.filter(|d| !d.is_zero()),
            max_requests_per_connection: p.max_requests_per_connection.unwrap_or(0),
            max_streams: p.max_concurrent_streams.unwrap_or(UNLIMITED),
            h2_keepalive_interval: p.http2_keepalive.as_ref().and_then(|k| k.interval),
            h2_keepalive_timeout: p.http2_keepalive.as_ref().and_then(|k| k.timeout),
        }
    }
}

/// Why a request could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// A circuit breaker is open.
    Overflow(Limit),
    /// No connection could be established (includes the connect timeout).
    Connect(std::io::Error),
    /// The connection failed or the upstream reset the stream before response headers.
    Upstream(BoxError),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Overflow(l) => write!(f, "circuit breaker {} ({}) open", l.envoy_name(), l.istio_field()),
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Upstream(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Overflow(_) => None,
            SendError::Connect(e) => Some(e),
            SendError::Upstream(e) => Some(&**e),
        }
    }
}

/// A connection's place in its pool's and cluster's counts, given back when
/// the connection ends (this is dropped).
pub(crate) struct ConnSlot {
    pool: Weak<Pool>,
    breakers: Arc<Breakers>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        // The cluster's count, even when the pool is gone (endpoint removed by a reload).
        self.breakers.release_connection();
        if let Some(p) = self.pool.upgrade() {
            p.closed();
        }
    }
}

/// A response body from an upstream.
pub(crate) enum UpBody {
    /// HTTP/2, or an HTTP/1.1 upgrade answer.
    Hyper(Incoming),
    H1(H1Body),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::Hyper(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpBody::H1(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Hyper(b) => b.is_end_stream(),
            UpBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Hyper(b) => b.size_hint(),
            UpBody::H1(b) => b.size_hint(),
        }
    }
}

struct IdleH1 {
    conn: Box<h1::H1Conn>,
    since: Instant,
}

#[derive(Debug)]
pub(crate) struct H2Conn {
    tx: http2::SendRequest<ReqBody>,
    id: u64,
    created: Instant,
    /// Streams open (changed under the pool lock).
    streams: AtomicU32,
    used: AtomicU32,
    /// No new streams (max requests or duration reached); closes when the last stream ends.
    draining: AtomicBool,
    /// When `streams` last dropped to zero, in ms since the pool's epoch.
    idle_since: AtomicU64,
}

enum Conn {
    /// Boxed: it moves between the pool, waiters and response bodies.
    H1(Box<h1::H1Conn>),
    H2(Arc<H2Conn>),
}

enum Handoff {
    Conn(Conn),
    Failed(std::io::ErrorKind, String),
}

#[derive(Default)]
struct Inner {
    idle: Vec<IdleH1>,
    h2: Vec<Arc<H2Conn>>,
    /// Connections of this endpoint, open or being established.
    open: u32,
    connecting: [u32; 2],
    waiters: [VecDeque<oneshot::Sender<Handoff>>; 2],
    /// The URI of the last request that waited (what a dial for waiters connects to).
    dial_uri: Option<Uri>,
    /// The idle HTTP/1.1 reaper: when it wakes next (None: not running) and its generation.
    reaper_at: Option<Instant>,
    reaper_gen: u64,
}

/// The connection pool of one endpoint (or, for ORIGINAL_DST, one destination).
pub(crate) struct Pool {
    /// HTTP/1.1 and HTTP/2 (they differ in the ALPN offered over TLS).
    connectors: [Connector; 2],
    settings: ConnSettings,
    breakers: Arc<Breakers>,
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("connector", &self.connectors[0]).field("settings", &self.settings).finish()
    }
}

/// What a request holds from the pool until its response is complete: the
/// request slot and, for HTTP/2, the stream.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    request: Option<Arc<Breakers>>,
    stream: Option<(Weak<Pool>, Arc<H2Conn>)>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(b) = self.request.take() {
            b.requests.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some((pool, conn)) = self.stream.take() {
            match pool.upgrade() {
                Some(p) => p.release_stream(conn),
                None => {
                    conn.streams.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Counts a request as pending until dropped.
struct PendingGuard<'a>(&'a Breakers);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

const H1: usize = 0;
const H2: usize = 1;
/// Times an unsent request is moved to another connection.
const UNSENT_RETRIES: u32 = 3;

thread_local! {
    /// HTTP/1.1 upstream requests this thread has begun and not yet got an answer head for. Each
    /// thread's counter lives for the process, so a guard that moves to another thread with its
    /// task still decrements the counter it incremented.
    static SENDING: &'static AtomicU32 = Box::leak(Box::new(AtomicU32::new(0)));
}

/// Counts one HTTP/1.1 upstream request in its thread's `SENDING` until dropped.
struct Sending(&'static AtomicU32);

impl Sending {
    /// Counts the caller; whether another request of this thread was already on its way.
    fn start() -> (Sending, bool) {
        let counter = SENDING.with(|c| *c);
        let others = counter.fetch_add(1, Ordering::Relaxed);
        (Sending(counter), others > 0)
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    pub fn new(connectors: [Connector; 2], settings: ConnSettings, breakers: Arc<Breakers>) -> Pool {
        Pool {
            connectors,
            settings,
            breakers,
            inner: Mutex::new(Inner::default()),
            next_id: AtomicU64::new(1),
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections of this pool, open or being established.
    pub fn open_connections(&self) -> u32 {
        self.lock().open
    }

    /// Sends `req` (an absolute URI naming the authority) over HTTP/2 or HTTP/1.1.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<ReqBody>,
        http2: bool,
    ) -> Result<(Response<UpBody>, Lease), SendError> {
        let dial_uri = req.uri().clone();
        if !http2 && !req.headers().contains_key(http::header::UPGRADE) {
            let (parts, body) = req.into_parts();
            return self.send_h1(&parts.method, &dial_uri, &parts.headers, body).await;
        }
        if !http2 {
            // HTTP/1.1 sends the origin form; the authority travels in `Host`.
            let origin = dial_uri.path_and_query().cloned().map_or_else(|| Uri::from_static("/"), Uri::from);
            *req.uri_mut() = origin;
        }
        let mut unsent = 0;
        loop {
            let conn = self.checkout(if http2 { H2 } else { H1 }, &dial_uri).await?;
            let (conn, mut lease) = self.request_slot(conn)?;
            let result = match conn {
                Conn::H1(c) => {
                    // An upgrade: hyper's client takes the connection over for good.
                    let mut tx = self.hand_to_hyper(c).await?;
                    tx.try_send_request(req).await
                }
                Conn::H2(c) => {
                    let mut tx = c.tx.clone();
                    lease.stream = Some((Arc::downgrade(self), c));
                    tx.try_send_request(req).await
                }
            };
            match result {
                Ok(resp) => return Ok((resp.map(UpBody::Hyper), lease)),
                Err(mut e) => match e.take_message() {
                    Some(r) if unsent < UNSENT_RETRIES => {
                        unsent += 1;
                        req = r;
                    }
                    _ => return Err(SendError::Upstream(Box::new(e.into_error()))),
                },
            }
        }
    }

    /// HTTP/1.1 on a pooled connection, driven by this task ([`h1`]): `method` and `headers`
    /// to the absolute `uri` (sent in origin form; its authority fills in a missing `Host`).
    pub async fn send_h1(
        self: &Arc<Self>,
        method: &http::Method,
        uri: &Uri,
        headers: &http::HeaderMap,
        body: ReqBody,
    ) -> Result<(Response<UpBody>, Lease), SendError> {
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = uri.authority().map(|a| a.as_str());
        let mut upload = h1::Upload::new(method, target, headers, authority, body);
        let mut unsent = 0;
        let (_sending, others) = Sending::start();
        loop {
            let conn = self.checkout(H1, uri).await?;
            let (conn, lease) = self.request_slot(conn)?;
            let Conn::H1(mut c) = conn else {
                return Err(SendError::Connect(std::io::Error::other("HTTP/2 connection for an HTTP/1.1 request")));
            };
            c.used += 1;
            // Let the other requests that are ready reach this point first, so their writes
            // go out together: each upstream wake-up then serves a batch (BENCHMARKS.md). Alone,
            // there is nothing to batch, and a yielded task waits behind whatever the scheduler's
            // next check for events brings in.
            if others {
                tokio::task::yield_now().await;
            }
            match h1::exchange(Arc::downgrade(self), c, upload, method).await {
                Ok(resp) => return Ok((resp.map(UpBody::H1), lease)),
                Err(h1::ExchangeError::Unsent(u)) if unsent < UNSENT_RETRIES => {
                    unsent += 1;
                    upload = u;
                }
                Err(h1::ExchangeError::Unsent(_)) => {
                    return Err(SendError::Upstream(Box::new(h1::H1Error::ClosedBeforeHead)));
                }
                Err(h1::ExchangeError::Failed(e)) => return Err(SendError::Upstream(Box::new(e))),
            }
        }
    }

    /// The request slot (`http2MaxRequests`) for a request about to go out on `conn`.
    /// Without one the connection (or stream) goes back to the pool.
    fn request_slot(self: &Arc<Self>, conn: Conn) -> Result<(Conn, Lease), SendError> {
        let mut lease = Lease::default();
        if self.breakers.counts_requests() {
            if !Breakers::take(&self.breakers.requests, self.breakers.max_requests) {
                inc(&self.breakers.stats.upstream_rq_pending_overflow);
                match conn {
                    Conn::H1(c) => self.give_h1(c),
                    Conn::H2(c) => self.release_stream(c),
                }
                return Err(SendError::Overflow(Limit::Requests));
            }
            lease.request = Some(self.breakers.clone());
        }
        Ok((conn, lease))
    }

    /// Runs an HTTP/1.1 connection on hyper's client from now on (upgrades).
    async fn hand_to_hyper(&self, c: Box<h1::H1Conn>) -> Result<http1::SendRequest<ReqBody>, SendError> {
        let h1::H1Conn { io, id, created, slot, .. } = *c;
        let (tx, conn) = http1::Builder::new()
            .handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| SendError::Upstream(Box::new(e)))?;
        tokio::spawn(drive(slot, id, created, conn.with_upgrades()));
        Ok(tx)
    }

    /// A connection (HTTP/1.1) or a stream (HTTP/2), waiting as a pending request if needed.
    async fn checkout(self: &Arc<Self>, p: usize, dial_uri: &Uri) -> Result<Conn, SendError> {
        let (rx, dial) = loop {
            // Connections found closed; dropped outside the lock (that gives their slots back).
            let mut stale = Vec::new();
            let mut inner = self.lock();
            if let Some(c) = self.ready(&mut inner, p, &mut stale) {
                drop(inner);
                return Ok(c);
            }
            if !stale.is_empty() {
                drop(inner);
                drop(stale);
                continue;
            }
            if !Breakers::take(&self.breakers.pending, self.breakers.max_pending) {
                inc(&self.breakers.stats.upstream_rq_pending_overflow);
                return Err(SendError::Overflow(Limit::PendingRequests));
            }
            inc(&self.breakers.stats.upstream_rq_pending_total);
            let (tx, rx) = oneshot::channel();
            // Requests that gave up waiting (timeouts) leave closed senders behind; sweep them
            // now and then so a queue that is never served cannot grow without bound.
            if inner.waiters[p].len() >= 64 && inner.waiters[p].len().is_power_of_two() {
                inner.waiters[p].retain(|w| !w.is_closed());
            }
            inner.waiters[p].push_back(tx);
            if inner.dial_uri.as_ref() != Some(dial_uri) {
                inner.dial_uri = Some(dial_uri.clone());
            }
            break (rx, self.should_dial(&mut inner, p));
        };
        let _pending = PendingGuard(&self.breakers);
        if dial {
            self.spawn_dial(p, dial_uri.clone());
        }
        match rx.await {
            Ok(Handoff::Conn(c)) => Ok(c),
            Ok(Handoff::Failed(kind, msg)) => Err(SendError::Connect(std::io::Error::new(kind, msg))),
            Err(_) => Err(SendError::Connect(std::io::Error::other("connection pool closed"))),
        }
    }

    fn expired(&self, created: Instant, now: Instant) -> bool {
        self.settings.max_duration.is_some_and(|d| now.saturating_duration_since(created) >= d)
    }

    /// Streams a connection takes (`maxConcurrentStreams`); beyond the peer's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` hyper queues them on the connection.
    fn stream_capacity(&self, _c: &H2Conn) -> u32 {
        self.settings.max_streams.max(1)
    }

    /// A ready connection or stream, under the lock.
    /// Idle HTTP/1.1 connections found unusable go to `stale` (to be dropped after the lock).
    fn ready(&self, inner: &mut Inner, p: usize, stale: &mut Vec<IdleH1>) -> Option<Conn> {
        let now = Instant::now();
        if p == H1 {
            while let Some(mut idle) = inner.idle.pop() {
                if self.expired(idle.conn.created, now) {
                    inc(&self.breakers.stats.upstream_cx_max_duration_reached);
                } else if now.saturating_duration_since(idle.since) >= self.settings.idle_timeout {
                    inc(&self.breakers.stats.upstream_cx_idle_timeout);
                } else if idle.conn.idle_usable() {
                    return Some(Conn::H1(idle.conn));
                }
                stale.push(idle);
            }
            return None;
        }
        inner.h2.retain(|c| !c.tx.is_closed() && !c.draining.load(Ordering::Relaxed));
        let i = inner.h2.iter().position(|c| c.streams.load(Ordering::Relaxed) < self.stream_capacity(c))?;
        let c = inner.h2[i].clone();
        if self.expired(c.created, now) {
            inc(&self.breakers.stats.upstream_cx_max_duration_reached);
            c.draining.store(true, Ordering::Relaxed);
            inner.h2.remove(i);
            return self.ready(inner, p, stale);
        }
        self.reserve_stream(inner, &c);
        Some(Conn::H2(c))
    }

    fn reserve_stream(&self, inner: &mut Inner, c: &Arc<H2Conn>) {
        c.streams.fetch_add(1, Ordering::Relaxed);
        let used = c.used.fetch_add(1, Ordering::Relaxed) + 1;
        let max = self.settings.max_requests_per_connection;
        if max != 0 && used >= max {
            inc(&self.breakers.stats.upstream_cx_max_requests);
            c.draining.store(true, Ordering::Relaxed);
            inner.h2.retain(|o| !Arc::ptr_eq(o, c));
        }
    }

    /// Whether a waiter needs a new connection, taking its connection slot if so.
    fn should_dial(&self, inner: &mut Inner, p: usize) -> bool {
        let per_conn = if p == H2 { u64::from(self.settings.max_streams) } else { 1 };
        let capacity = u64::from(inner.connecting[p]) * per_conn;
        let waiting = inner.waiters[p].iter().filter(|w| !w.is_closed()).count() as u64;
        if waiting <= capacity {
            return false;
        }
        if !self.breakers.try_connection() {
            inc(&self.breakers.stats.upstream_cx_overflow);
            if inner.open > 0 {
                return false;
            }
            // No connection to this endpoint at all: open one anyway (Envoy), so it can drain its waiters.
            self.breakers.connections.fetch_add(1, Ordering::Relaxed);
        }
        inner.connecting[p] += 1;
        inner.open += 1;
        inc(&self.breakers.stats.upstream_cx_total);
        true
    }

    fn spawn_dial(self: &Arc<Self>, p: usize, uri: Uri) {
        let pool = self.clone();
        tokio::spawn(async move {
            let r = pool.dial(p, uri).await;
            let mut inner = pool.lock();
            inner.connecting[p] = inner.connecting[p].saturating_sub(1);
            match r {
                Ok(Conn::H1(c)) => {
                    drop(inner);
                    pool.give_h1(c);
                }
                Ok(Conn::H2(c)) => {
                    inner.h2.push(c.clone());
                    pool.serve_h2_waiters(&mut inner, &c);
                }
                Err(e) => {
                    inner.open = inner.open.saturating_sub(1);
                    pool.breakers.release_connection();
                    inc(&pool.breakers.stats.upstream_cx_connect_fail);
                    if e.kind() == std::io::ErrorKind::TimedOut {
                        inc(&pool.breakers.stats.upstream_cx_connect_timeout);
                    }
                    tracing::debug!(error = %e, "upstream connect failed");
                    // Fail the waiters this connection was for: all of them when no other dial is under way.
                    let fail_all = inner.connecting[p] == 0;
                    while let Some(w) = inner.waiters[p].pop_front() {
                        let delivered = w.send(Handoff::Failed(e.kind(), e.to_string())).is_ok();
                        if delivered && !fail_all {
                            break;
                        }
                    }
                }
            }
        });
    }

    async fn dial(self: &Arc<Self>, p: usize, uri: Uri) -> std::io::Result<Conn> {
        let mut connector = self.connectors[p].clone();
        let io = tower_service::Service::call(&mut connector, uri).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let created = Instant::now();
        let slot = ConnSlot { pool: Arc::downgrade(self), breakers: self.breakers.clone() };
        if p == H2 {
            let mut b = http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new());
            if let Some(i) = self.settings.h2_keepalive_interval {
                b.keep_alive_interval(i);
                if let Some(t) = self.settings.h2_keepalive_timeout {
                    b.keep_alive_timeout(t);
                }
            }
            let (tx, conn) = b.handshake(io).await.map_err(std::io::Error::other)?;
            let c = Arc::new(H2Conn {
                tx,
                id,
                created,
                streams: AtomicU32::new(0),
                used: AtomicU32::new(0),
                draining: AtomicBool::new(false),
                idle_since: AtomicU64::new(self.millis(created)),
            });
            tokio::spawn(drive(slot, id, created, conn));
            Ok(Conn::H2(c))
        } else {
            let io = io.into_inner();
            Ok(Conn::H1(Box::new(h1::H1Conn { io, rbuf: bytes::BytesMut::new(), id, created, used: 0, slot })))
        }
    }

    fn millis(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Gives waiting requests streams of a new (or freed-up) HTTP/2 connection.
    fn serve_h2_waiters(&self, inner: &mut Inner, c: &Arc<H2Conn>) {
        while c.streams.load(Ordering::Relaxed) < self.stream_capacity(c) && !c.draining.load(Ordering::Relaxed) {
            let Some(w) = inner.waiters[H2].pop_front() else { return };
            if w.is_closed() {
                continue;
            }
            self.reserve_stream(inner, c);
            if let Err(Handoff::Conn(Conn::H2(c))) = w.send(Handoff::Conn(Conn::H2(c.clone()))) {
                c.streams.fetch_sub(1, Ordering::Relaxed);
                c.used.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// A stream ended: hand it to a waiter or count it free.
    fn release_stream(&self, c: Arc<H2Conn>) {
        let mut inner = self.lock();
        let left = c.streams.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        if c.draining.load(Ordering::Relaxed) || c.tx.is_closed() {
            return;
        }
        if left == 0 {
            c.idle_since.store(self.millis(Instant::now()), Ordering::Relaxed);
        }
        self.serve_h2_waiters(&mut inner, &c);
    }

    /// A connection free for a request: to the first waiter, else idle (or closed when used up).
    fn give_h1(self: &Arc<Self>, mut c: Box<h1::H1Conn>) {
        let max = self.settings.max_requests_per_connection;
        if max != 0 && c.used >= max {
            inc(&self.breakers.stats.upstream_cx_max_requests);
            return;
        }
        let now = Instant::now();
        if self.expired(c.created, now) {
            inc(&self.breakers.stats.upstream_cx_max_duration_reached);
            return;
        }
        let mut inner = self.lock();
        while let Some(w) = inner.waiters[H1].pop_front() {
            match w.send(Handoff::Conn(Conn::H1(c))) {
                Ok(()) => return,
                Err(Handoff::Conn(Conn::H1(back))) => c = back,
                Err(other) => {
                    drop(inner);
                    drop(other);
                    return;
                }
            }
        }
        let mut due = now + self.settings.idle_timeout;
        if let Some(d) = self.settings.max_duration {
            due = due.min(c.created + d);
        }
        inner.idle.push(IdleH1 { conn: c, since: now });
        if inner.reaper_at.is_none_or(|at| due < at) {
            inner.reaper_at = Some(due);
            inner.reaper_gen += 1;
            let generation = inner.reaper_gen;
            drop(inner);
            self.spawn_reaper(generation, due);
        }
    }

    /// One task per pool closes idle HTTP/1.1 connections when they idle out or
    /// outlive `maxConnectionDuration`; a newer reaper (an earlier deadline) replaces it.
    fn spawn_reaper(self: &Arc<Self>, generation: u64, first: Instant) {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut at = first;
            loop {
                tokio::time::sleep_until(at).await;
                let Some(p) = pool.upgrade() else { return };
                match p.reap_idle(generation) {
                    Some(next) => at = next,
                    None => return,
                }
            }
        });
    }

    /// Closes the idle HTTP/1.1 connections that are due; when to look again (None: stop).
    fn reap_idle(&self, generation: u64) -> Option<Instant> {
        let now = Instant::now();
        let mut closing = Vec::new();
        let next = {
            let mut inner = self.lock();
            if inner.reaper_gen != generation {
                return None;
            }
            let mut next: Option<Instant> = None;
            let mut i = 0;
            while i < inner.idle.len() {
                let c = &inner.idle[i];
                let idle_until = c.since + self.settings.idle_timeout;
                let expires = self.settings.max_duration.map(|d| c.conn.created + d);
                if expires.is_some_and(|e| e <= now) {
                    inc(&self.breakers.stats.upstream_cx_max_duration_reached);
                } else if idle_until <= now {
                    inc(&self.breakers.stats.upstream_cx_idle_timeout);
                } else {
                    let due = expires.map_or(idle_until, |e| e.min(idle_until));
                    next = Some(next.map_or(due, |n| n.min(due)));
                    i += 1;
                    continue;
                }
                closing.push(inner.idle.swap_remove(i));
            }
            inner.reaper_at = next;
            next
        };
        drop(closing);
        next
    }

    /// Closes connection `id` if it idled out or outlived `maxConnectionDuration`;
    /// else when to check again.
    fn reap(&self, id: u64, created: Instant) -> Option<Instant> {
        let now = Instant::now();
        let mut inner = self.lock();
        let expired = self.expired(created, now);
        let mut next = now + self.settings.idle_timeout;
        if let Some(i) = inner.h2.iter().position(|c| c.id == id) {
            let c = &inner.h2[i];
            let idle = c.streams.load(Ordering::Relaxed) == 0;
            let since = self.epoch + Duration::from_millis(c.idle_since.load(Ordering::Relaxed));
            let idled_out = idle && since + self.settings.idle_timeout <= now;
            if expired || idled_out {
                c.draining.store(true, Ordering::Relaxed);
                inner.h2.swap_remove(i);
                inc(if expired {
                    &self.breakers.stats.upstream_cx_max_duration_reached
                } else {
                    &self.breakers.stats.upstream_cx_idle_timeout
                });
                return None;
            }
            if idle {
                next = since + self.settings.idle_timeout;
            }
        }
        if let Some(d) = self.settings.max_duration {
            next = next.min(created + d);
        }
        Some(next.max(now + Duration::from_millis(1)))
    }

    /// A connection ended: requests still waiting get a new one if the limits allow (Envoy's
    /// `tryCreateNewConnections` on close).
    fn closed(self: &Arc<Self>) {
        let mut dials = [false; 2];
        let uri = {
            let mut inner = self.lock();
            inner.open = inner.open.saturating_sub(1);
            for p in [H1, H2] {
                dials[p] = !inner.waiters[p].is_empty() && self.should_dial(&mut inner, p);
            }
            inner.dial_uri.clone()
        };
        for p in [H1, H2] {
            if dials[p] {
                match &uri {
                    Some(u) => self.spawn_dial(p, u.clone()),
                    None => {
                        // Unreachable (a waiter always sets the URI); give the slot back.
                        let mut inner = self.lock();
                        inner.connecting[p] = inner.connecting[p].saturating_sub(1);
                        inner.open = inner.open.saturating_sub(1);
                        self.breakers.release_connection();
                    }
                }
            }
        }
    }
}

/// Runs one hyper client connection (HTTP/2, or an upgraded HTTP/1.1 one) until it ends,
/// closing an HTTP/2 connection when it idles out or expires.
async fn drive<F, E>(slot: ConnSlot, id: u64, created: Instant, conn: F)
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let pool = slot.pool.clone();
    let mut conn = std::pin::pin!(conn);
    let first = pool.upgrade().map(|p| {
        let mut d = p.settings.idle_timeout;
        if let Some(m) = p.settings.max_duration {
            d = d.min(m);
        }
        created + d
    });
    let mut wake = first;
    loop {
        let sleep = async {
            match wake {
                Some(w) => tokio::time::sleep_until(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut conn => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
                break;
            }
            _ = sleep => {
                // Removing the connection from the pool drops its sender, which closes it.
                wake = pool.upgrade().and_then(|p| p.reap(id, created));
            }
        }
    }
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_compile::policy::{F64, RetryBudget};

    #[test]
    fn sending_counts_this_threads_requests_until_they_are_answered() {
        let (a, others) = Sending::start();
        assert!(!others, "the first request has nothing to wait for");
        let (b, others) = Sending::start();
        assert!(others);
        drop(a);
        let (c, others) = Sending::start();
        assert!(others, "b is still on its way");
        drop((b, c));
        let other_thread = std::thread::spawn(|| Sending::start().1).join().unwrap();
        assert!(!other_thread, "each thread counts its own");
        assert!(!Sending::start().1);
    }

    #[tokio::test]
    async fn an_idle_http1_connection_holds_no_read_buffer() {
        use http_body_util::BodyExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").await.unwrap();
            // Stays open, as a keep-alive upstream does.
            let _ = sock.read(&mut byte).await;
        });
        let connector = || Connector {
            target: crate::connect::Target::Addr(addr),
            timeout: Duration::from_secs(5),
            tls: None,
            keepalive: None,
        };
        let pool = Arc::new(Pool::new(
            [connector(), connector()],
            ConnSettings::of(&ConnectionPool::default()),
            breakers(|_| {}),
        ));
        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        let (resp, _lease) =
            pool.send_h1(&http::Method::GET, &uri, &http::HeaderMap::new(), ReqBody::Empty).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
        let inner = pool.lock();
        assert_eq!(inner.idle.len(), 1, "the connection is back in the pool");
        assert_eq!(inner.idle[0].conn.rbuf.capacity(), 0, "its read buffer went back to the allocator");
    }

    fn breakers(f: impl FnOnce(&mut ConnectionPool)) -> Arc<Breakers> {
        let mut p = ConnectionPool::default();
        f(&mut p);
        Arc::new(Breakers::new(&p, Arc::default()))
    }

    #[test]
    fn limits_admit_up_to_the_limit() {
        let b = breakers(|p| p.max_connections = 2);
        assert!(b.try_connection() && b.try_connection());
        assert!(!b.try_connection());
        b.release_connection();
        assert!(b.try_connection());
        let unlimited = breakers(|_| {});
        assert!((0..1000).all(|_| unlimited.try_connection()));
        assert!(!unlimited.counts_requests());
    }

    #[test]
    fn retries_by_max_retries_or_budget() {
        let b = breakers(|p| p.max_retries = 1);
        let slot = b.try_retry().expect("one retry");
        assert!(b.try_retry().is_none());
        assert_eq!(b.stats.upstream_rq_retry_overflow.load(Ordering::Relaxed), 1);
        assert_eq!(b.stats.overflow_count(Limit::Retries), 1);
        drop(slot);
        assert!(b.try_retry().is_some());

        // Budget: 50% of 10 active requests = 5, at least 3.
        let b = breakers(|p| {
            p.retry_budget =
                Some(RetryBudget { percent: F64(50.0), min_retry_concurrency: 3, interval: Duration::from_secs(10) })
        });
        assert!(b.counts_requests());
        let few: Vec<_> = (0..3).filter_map(|_| b.try_retry()).collect();
        assert_eq!(few.len(), 3);
        assert!(b.try_retry().is_none(), "min_retry_concurrency when idle");
        b.requests.store(10, Ordering::Relaxed);
        let more: Vec<_> = (0..5).filter_map(|_| b.try_retry()).collect();
        assert_eq!(few.len() + more.len(), 5);
    }

    #[test]
    fn same_limits_compares_every_limit() {
        let p = ConnectionPool::default();
        let b = Breakers::new(&p, Arc::default());
        assert!(b.same_limits(&p));
        assert!(!b.same_limits(&ConnectionPool { max_pending_requests: 1, ..p.clone() }));
    }
}
