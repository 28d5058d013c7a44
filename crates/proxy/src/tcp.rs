//! TCP proxying (Envoy `tcp_proxy`) for `tcp` filter chains, SNI
//! passthrough, AUTO_PASSTHROUGH and TLS-terminated TCP: the first route
//! whose destination subnets contain the listener address, a weighted pick
//! among its clusters, an endpoint from the cluster's balancer, then bytes
//! both ways.
//!
//! - Between two plain TCP sockets on Linux bytes move with `splice(2)`
//!   through a pipe per direction, never entering user space
//!   ([`crate::zero_copy`]). Otherwise (TLS on either side, replayed
//!   ClientHello bytes) they are copied by two loops (one per direction) with
//!   buffers that start at 8 KiB and double, up to 256 KiB, while reads fill
//!   them. When one side ends its stream, the other side's write half is shut
//!   down (half close) and the opposite direction continues until it ends too.
//! - Idle timeout: `connectionPool.tcp.idleTimeout` of the cluster's
//!   DestinationRule (Envoy's default 1h): no byte either way for that long
//!   closes both sides.
//! - `connectionPool.tcp.maxConnections`: connections to a cluster beyond the
//!   limit are reset (`UO`); the count survives reloads.
//! - Metrics: `istio_tcp_connections_opened_total`/`_closed_total`,
//!   `istio_tcp_sent_bytes_total`/`_received_bytes_total`.
//!
//! Failures close the downstream connection with a reset, as Envoy does:
//! unknown cluster (`NC`), no endpoint (`UH`, also `BlackHoleCluster`),
//! too many connections (`UO`), connect failure (`UF`). `PassthroughCluster`
//! needs the destination the client originally dialed, which weir does not
//! see without traffic capture: such connections are reset with a warning
//! (once per listener).
//!
//! Upstream connections are made by `EndpointState::connect_tcp` (the hook for
//! upstream TLS origination); the copy is generic over both streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_compile::model::{Str, TcpRoute, WeightedCluster};

use crate::lb::PickInput;
use crate::metrics::{TcpSeries, TcpView};
use crate::runtime::{Runtime, tcp_route};
use crate::sni::Prefixed;

/// First and largest copy buffer.
const MIN_BUF: usize = 8 * 1024;
const MAX_BUF: usize = 256 * 1024;

/// A downstream connection in any of its forms (plain, with replayed bytes, TLS-terminated).
pub(crate) trait Downstream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath (for resets).
    fn tcp(&self) -> &TcpStream;
    /// The socket, when its bytes can be moved without passing through user space (no TLS,
    /// nothing buffered).
    fn plain(&self) -> Option<&TcpStream> {
        None
    }
}

impl Downstream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
    fn plain(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Downstream for Prefixed<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.inner
    }
    fn plain(&self) -> Option<&TcpStream> {
        (!self.has_prefix()).then_some(&self.inner)
    }
}

impl<S: Downstream> Downstream for tokio_rustls::server::TlsStream<S> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0.tcp()
    }
}

/// Closes with a TCP reset.
pub(crate) fn reset<S: Downstream>(sock: S) {
    let _ = sock.tcp().set_zero_linger();
    drop(sock);
}

/// Logs `message` the first time `flag` is seen unset.
pub(crate) fn warn_once(flag: &AtomicBool, listener: &str, message: &str) {
    if !flag.swap(true, Ordering::Relaxed) {
        tracing::warn!(listener, "{message}");
    }
}

/// Where a TCP connection goes.
pub(crate) enum Destination<'a> {
    /// The routes of a `tcp` chain.
    Routes(&'a [TcpRoute]),
    /// A cluster named by the connection (AUTO_PASSTHROUGH SNI).
    Cluster(Str),
}

/// The cluster AUTO_PASSTHROUGH SNI `outbound_.PORT_.SUBSET_.HOST` names
/// (`outbound|PORT|SUBSET|HOST`; subset `_` means none).
pub(crate) fn auto_passthrough_cluster(sni: &str) -> Option<Str> {
    let rest = sni.strip_prefix("outbound_.")?;
    let (port, rest) = rest.split_once("_.")?;
    let (subset, host) = rest.split_once("_.")?;
    let port: u16 = port.parse().ok()?;
    if host.is_empty() {
        return None;
    }
    let subset = if subset == "_" { "" } else { subset };
    Some(format!("outbound|{port}|{subset}|{host}").into())
}

/// Picks one of `clusters` by weight (a single cluster ignores its weight).
fn pick_weighted(clusters: &[WeightedCluster]) -> Option<&WeightedCluster> {
    match clusters {
        [one] => Some(one),
        all => {
            let total: u64 = all.iter().map(|c| u64::from(c.weight)).sum();
            if total == 0 {
                return all.first();
            }
            let mut r = fastrand::u64(..total);
            all.iter().find(|c| {
                let w = u64::from(c.weight);
                if r < w {
                    true
                } else {
                    r -= w;
                    false
                }
            })
        }
    }
}

/// What a proxied connection needs from its listener.
pub(crate) struct Accepted {
    pub listener: Str,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub warned: Arc<crate::server::Warned>,
}

/// Proxies `sock` to `dest` until either side closes, the idle timeout passes, or the caller drops
/// this future (drain).
pub(crate) async fn proxy<S: Downstream>(
    rt: Arc<Runtime>,
    dest: Destination<'_>,
    a: Accepted,
    sock: S,
    metrics: &crate::metrics::Metrics,
) {
    let listener = &a.listener;
    let name = match dest {
        Destination::Routes(routes) => {
            let Some(route) = tcp_route(routes, a.local.ip()) else {
                tracing::debug!(%listener, "no TCP route for this destination; closing");
                return reset(sock);
            };
            let Some(dest) = pick_weighted(&route.clusters) else { return reset(sock) };
            dest.cluster.clone()
        }
        Destination::Cluster(name) => name,
    };
    let fail = |flag: &str, sock: S| {
        let view = TcpView { destination_service: &name, response_flags: flag, ..TcpView::default() };
        metrics.tcp_opened(&view).close();
        reset(sock)
    };
    let Some(cluster) = rt.cluster(&name).cloned() else {
        tracing::debug!(%listener, cluster = %name, "TCP route to a cluster not in the snapshot (NC); resetting");
        return fail("NC", sock);
    };
    let view = TcpView {
        reporter: "source",
        destination_service: &cluster.service,
        destination_service_name: &cluster.service_name,
        destination_service_namespace: &cluster.service_namespace,
        destination_version: &cluster.subset,
        response_flags: "",
    };
    let fail = |flag: &str, sock: S| {
        metrics.tcp_opened(&TcpView { response_flags: flag, ..view }).close();
        reset(sock)
    };
    if cluster.original_dst {
        warn_once(
            &a.warned.tcp_passthrough,
            listener,
            "TCP passthrough (PassthroughCluster) is not supported yet: weir cannot see the original destination \
             without traffic capture; connections are reset",
        );
        return fail("UH", sock);
    }
    let (idle, max_connections) = match rt.snapshot.cluster(&name) {
        Some(c) => (c.policy.connection_pool.tcp_idle_timeout, c.policy.connection_pool.max_connections),
        None => (Duration::from_secs(3600), u32::MAX),
    };
    let open = rt.tcp_connections(&name).cloned().unwrap_or_default();
    let _slot = match Slot::take(open, max_connections) {
        Some(s) => s,
        None => {
            tracing::debug!(%listener, cluster = %cluster.name, "maxConnections reached (UO); resetting");
            cluster.tcp_overflowed();
            return fail("UO", sock);
        }
    };
    let headers = HeaderMap::new();
    let input = PickInput { headers: &headers, path: "", peer: a.peer.ip() };
    let Some(i) = cluster.balancer.pick(&cluster.endpoints, &input, &[]) else {
        tracing::debug!(%listener, cluster = %cluster.name, "no healthy upstream (UH); resetting");
        return fail("UH", sock);
    };
    let endpoint = cluster.endpoints[i].clone();
    // Long-lived connections must not keep old snapshots alive.
    drop(rt);
    let Some(mut guard) = cluster.try_acquire(false) else {
        tracing::debug!(%listener, cluster = %cluster.name, "circuit breaker open (UO); resetting");
        return fail("UO", sock);
    };
    guard.set_endpoint(&endpoint);
    let connected = endpoint.connect_tcp().await;
    cluster.report_connect(&endpoint, connected.is_ok());
    let upstream = match connected {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%listener, upstream = %endpoint.host, error = %e, "upstream connect failed (UF); resetting");
            return fail("UF", sock);
        }
    };
    let series = metrics.tcp_opened(&view);
    let result = match zero_copy(sock.plain(), &upstream, idle, &series).await {
        Some(r) => r,
        None => splice(sock, upstream, idle, &series).await,
    };
    match result {
        Ok((up, down)) => tracing::debug!(%listener, upstream = %endpoint.host, up, down, "TCP connection closed"),
        Err(e) => tracing::debug!(%listener, upstream = %endpoint.host, error = %e, "TCP connection ended"),
    }
    series.close();
    drop(guard);
}

/// Both sides plain TCP on Linux: `splice(2)` ([`crate::zero_copy`]); None: copy instead.
async fn zero_copy(
    down: Option<&TcpStream>,
    up: &crate::connect::Stream,
    idle: Duration,
    series: &TcpSeries,
) -> Option<Result<(u64, u64), SpliceError>> {
    #[cfg(target_os = "linux")]
    if let (Some(down), crate::connect::Stream::Plain(up)) = (down, up) {
        match crate::zero_copy::proxy(down, up, idle, series).await {
            Ok(r) => return Some(r),
            Err(e) => tracing::debug!(error = %e, "no pipes for splice(2); copying"),
        }
    }
    let _ = (down, up, idle, series);
    None
}

/// One open connection counted against `maxConnections`.
struct Slot(Arc<std::sync::atomic::AtomicU32>);

impl Slot {
    fn take(count: Arc<std::sync::atomic::AtomicU32>, max: u32) -> Option<Slot> {
        let before = count.fetch_add(1, Ordering::Relaxed);
        if before >= max {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot(count))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Idle timeout or an I/O error ended a splice.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpliceError {
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Copies both ways until both directions ended (half-closes are passed on), an error, or `idle`
/// without traffic. Returns (bytes client -> upstream, bytes upstream -> client).
pub(crate) async fn splice<A, B>(a: A, b: B, idle: Duration, series: &TcpSeries) -> Result<(u64, u64), SpliceError>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = tokio::time::Instant::now();
    let last = AtomicU64::new(0);
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let copy = async {
        tokio::try_join!(
            pipe(&mut ar, &mut bw, &last, start, &series.received),
            pipe(&mut br, &mut aw, &last, start, &series.sent)
        )
    };
    tokio::select! {
        r = copy => Ok(r?),
        _ = idle_watchdog(&last, start, idle) => Err(SpliceError::Idle(idle)),
    }
}

/// Returns once `idle` has passed since the last transfer (`last`: milliseconds after `start`).
pub(crate) async fn idle_watchdog(last: &AtomicU64, start: tokio::time::Instant, idle: Duration) {
    loop {
        let since = Duration::from_millis(last.load(Ordering::Relaxed));
        let deadline = start + since + idle;
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Records a transfer of `n` bytes: the counter and the idle watchdog's clock.
pub(crate) fn transferred(
    n: u64,
    counter: &prometheus_client::metrics::counter::Counter,
    last: &AtomicU64,
    start: tokio::time::Instant,
) {
    counter.inc_by(n);
    last.store(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

async fn pipe<R, W>(
    r: &mut R,
    w: &mut W,
    last: &AtomicU64,
    start: tokio::time::Instant,
    counter: &prometheus_client::metrics::counter::Counter,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; MIN_BUF];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            // Half close: the peer will read EOF; the other direction goes on.
            let _ = w.shutdown().await;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        total += n as u64;
        transferred(n as u64, counter, last, start);
        if n == buf.len() && buf.len() < MAX_BUF {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// Checks shared by the tests of both proxying paths (copying here, splice(2) in `zero_copy`).
#[cfg(test)]
pub(crate) mod checks {
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::SpliceError;

    /// `sent` from `client` followed by its half close reaches `server` whole, then EOF; the
    /// server's reply after that still reaches the client.
    pub async fn exchange_with_half_close<C, S>(client: C, server: S, sent: &[u8])
    where
        C: AsyncRead + AsyncWrite,
        S: AsyncRead + AsyncWrite,
    {
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        let send = async {
            cw.write_all(sent).await.unwrap();
            cw.shutdown().await.unwrap();
        };
        let receive = async {
            let mut got = Vec::new();
            sr.read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(send, receive);
        assert!(got == sent, "the server sees every byte, then EOF after the client's half close");
        sw.write_all(b"reply after half close").await.unwrap();
        sw.shutdown().await.unwrap();
        let mut reply = Vec::new();
        cr.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply after half close");
    }

    /// Traffic from `client` keeps the proxying `task` (idle timeout 300 ms) open; then silence
    /// ends it with [`SpliceError::Idle`].
    pub async fn ends_when_idle<T: std::fmt::Debug>(
        client: &mut (impl AsyncWrite + Unpin),
        task: tokio::task::JoinHandle<Result<T, SpliceError>>,
    ) {
        for _ in 0..3 {
            client.write_all(b"x").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let started = std::time::Instant::now();
        let r = task.await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
        assert!(matches!(r, Err(SpliceError::Idle(_))), "{r:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_passthrough_names() {
        assert_eq!(
            auto_passthrough_cluster("outbound_.9080_._.reviews.default.svc.cluster.local").as_deref(),
            Some("outbound|9080||reviews.default.svc.cluster.local")
        );
        assert_eq!(
            auto_passthrough_cluster("outbound_.9080_.v1_.reviews.default.svc.cluster.local").as_deref(),
            Some("outbound|9080|v1|reviews.default.svc.cluster.local")
        );
        assert_eq!(auto_passthrough_cluster("reviews.default.svc.cluster.local"), None);
        assert_eq!(auto_passthrough_cluster("outbound_.x_._.a"), None);
    }

    fn series() -> TcpSeries {
        crate::metrics::Metrics::new().tcp_opened(&TcpView::default())
    }

    #[tokio::test]
    async fn splice_passes_half_close_and_counts_bytes() {
        let (client, proxy_down) = tokio::io::duplex(1024);
        let (proxy_up, server) = tokio::io::duplex(1024);
        let s = series();
        let task = tokio::spawn({
            let s = s.clone();
            async move { splice(proxy_down, proxy_up, Duration::from_secs(5), &s).await.unwrap() }
        });
        checks::exchange_with_half_close(client, server, &[7u8; 100_000]).await;
        assert_eq!(task.await.unwrap(), (100_000, 22));
        assert_eq!((s.received.get(), s.sent.get()), (100_000, 22));
    }

    #[tokio::test]
    async fn splice_ends_when_idle() {
        let (mut client, proxy_down) = tokio::io::duplex(64);
        let (proxy_up, _server) = tokio::io::duplex(64);
        let t = tokio::spawn(async move {
            let s = series();
            splice(proxy_down, proxy_up, Duration::from_millis(300), &s).await
        });
        checks::ends_when_idle(&mut client, t).await;
    }
}
