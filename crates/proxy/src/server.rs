//! Listener manager and HTTP serving: binds one socket per snapshot
//! listener, serves HTTP/1.1 and h2c on each, routes every request, and
//! rebinds only listeners whose address changed after a reload.
//!
//! Phase `accept`: a connection picks the first filter chain of its listener
//! that fits (destination address; TLS or plain, by peeking at the first
//! byte, and for TLS the server name of the ClientHello, read by `sni` and
//! replayed afterwards; only when the listener has chains that tell them
//! apart). A TLS connection no chain takes is reset (Envoy's `NFCF`).
//!
//! - HTTP chains are served by hyper-util's auto builder (HTTP/1.1 with
//!   upgrades, for WebSocket (`websocket`), and HTTP/2 with prior knowledge
//!   or by ALPN `h2`); an HTTP/2 connection's writes are batched, one per
//!   pass of the connection (`coalesce`).
//! - Terminating chains (gateway SIMPLE/MUTUAL/OPTIONAL_MUTUAL) run the
//!   rustls handshake with the chain's configuration (`tls::server`, built
//!   once per runtime), then serve HTTP or proxy the decrypted bytes; a chain
//!   whose certificates could not be loaded resets its handshakes.
//! - TCP chains (opaque TCP, SNI passthrough) and AUTO_PASSTHROUGH (cluster
//!   from the SNI) are proxied by `tcp`, with the ClientHello replayed to
//!   the upstream.
//!
//! Every accepted connection counts in `weir_active_connections` until it
//! closes (an upgraded one until its tunnel closes).
//!
//! Reloads: listeners are keyed by socket address. After a change, new
//! addresses are bound, vanished ones stop accepting and drain, and kept ones
//! continue untouched (their connections route with the new snapshot from the
//! next request on).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_compile::model::{BindScope, ChainAction, ListenerRole, Str};

use crate::coalesce::Coalesce;
use crate::drain::{Drain, Guard, Phase};
use crate::request::{Conn, ConnTarget};
use crate::runtime::Runtime;
use crate::{Options, State};

/// How long the accept phase waits for the first byte when it must tell TLS from plain text
/// (Envoy's `listener_filters_timeout`); on expiry the connection is taken as plain text.
const PEEK_TIMEOUT: Duration = Duration::from_secs(15);

/// Serves traffic until `shutdown` turns true, then drains for
/// `options.drain_timeout`. Fails when a listener cannot be bound at start
/// (the error names the port and the objects that asked for it).
pub async fn serve(state: Arc<State>, mut shutdown: watch::Receiver<bool>) -> Result<(), ServeError> {
    let mut changes = state.changes.subscribe();
    let rt = state.current.load_full();
    let mut listeners: HashMap<SocketAddr, Handle> = HashMap::new();
    for want in wanted(&rt, &state.options)? {
        let socket = bind(&want).map_err(|e| ServeError::Bind {
            address: want.addr.to_string(),
            requested_by: want.origins.clone(),
            message: e.to_string(),
        })?;
        listeners.insert(want.addr, Handle::spawn(state.clone(), socket, want));
    }
    state.ready.store(true, Ordering::SeqCst);
    tracing::info!(listeners = listeners.len(), version = rt.version, "serving");
    drop(rt);

    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        tokio::select! {
            r = shutdown.changed() => {
                if r.is_err() {
                    break;
                }
            }
            r = changes.changed() => {
                if r.is_ok() {
                    let rt = state.current.load_full();
                    reconcile(&state, &rt, &mut listeners).await;
                }
            }
        }
    }

    tracing::info!(drain = ?state.options.drain_timeout, "shutting down: draining listeners");
    let handles: Vec<Handle> = listeners.into_values().collect();
    for h in &handles {
        let _ = h.stop.send(true);
    }
    for h in handles {
        let _ = h.task.await;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address} (requested by {requested_by}): {message}")]
    Bind { address: String, requested_by: String, message: String },
}

/// Which listener of the snapshot a socket serves.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    Listener { scope: BindScope, name: Str },
    Proxy,
}

/// A socket the snapshot asks for.
#[derive(Debug)]
struct Want {
    addr: SocketAddr,
    key: Key,
    origins: String,
}

/// The sockets `rt` needs: one per listener, plus the explicit proxy.
fn wanted(rt: &Runtime, options: &Options) -> Result<Vec<Want>, ServeError> {
    let mut out: Vec<Want> = Vec::new();
    let mut push = |want: Want| -> Result<(), ServeError> {
        if let Some(other) = out.iter().find(|w| w.addr == want.addr) {
            return Err(ServeError::Bind {
                address: want.addr.to_string(),
                requested_by: format!("{} and {}", other.origins, want.origins),
                message: "two listeners need the same address".into(),
            });
        }
        out.push(want);
        Ok(())
    };
    for l in &rt.snapshot.listeners {
        let origins = if l.origins.is_empty() { l.name.to_string() } else { l.origins.join(", ") };
        let ip: IpAddr = match &l.address {
            Some(a) => a.parse().map_err(|_| ServeError::Bind {
                address: format!("{a}:{}", l.port),
                requested_by: origins.clone(),
                message: "the bind address is not an IP address".into(),
            })?,
            None => match l.bind {
                BindScope::Gateway => options.bind,
                BindScope::Mesh => options.mesh_bind,
            },
        };
        push(Want {
            addr: SocketAddr::new(ip, l.port),
            key: Key::Listener { scope: l.bind, name: l.name.clone() },
            origins,
        })?;
    }
    if options.proxy_port != 0 {
        push(Want {
            addr: SocketAddr::new(options.mesh_bind, options.proxy_port),
            key: Key::Proxy,
            origins: "the explicit HTTP proxy (--proxy-port)".into(),
        })?;
    }
    Ok(out)
}

fn bind(want: &Want) -> std::io::Result<TcpListener> {
    let socket = match want.addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(want.addr)?;
    socket.listen(1024)
}

/// Applies a new snapshot's listener set: bind new addresses, drain removed ones.
async fn reconcile(state: &Arc<State>, rt: &Runtime, listeners: &mut HashMap<SocketAddr, Handle>) {
    let wants = match wanted(rt, &state.options) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "listeners of the new snapshot conflict; keeping the current listeners");
            return;
        }
    };
    let keep: std::collections::HashSet<SocketAddr> = wants.iter().map(|w| w.addr).collect();
    let gone: Vec<SocketAddr> = listeners.keys().filter(|a| !keep.contains(a)).copied().collect();
    let mut closing = Vec::new();
    for addr in gone {
        if let Some(h) = listeners.remove(&addr) {
            tracing::info!(%addr, "listener removed: draining");
            let _ = h.stop.send(true);
            closing.push(h.closed);
        }
    }
    // A port moving to another address (127.0.0.1:80 -> 0.0.0.0:80) can only be bound once
    // the old socket is closed; the accept loops close it right away, then drain in the background.
    for closed in closing {
        let _ = tokio::time::timeout(Duration::from_secs(1), closed).await;
    }
    for want in wants {
        match listeners.get(&want.addr) {
            Some(h) => {
                h.key.send_if_modified(|k| {
                    let changed = *k != want.key;
                    *k = want.key.clone();
                    changed
                });
            }
            None => match bind(&want) {
                Ok(socket) => {
                    tracing::info!(addr = %want.addr, "listener added");
                    listeners.insert(want.addr, Handle::spawn(state.clone(), socket, want));
                }
                Err(e) => tracing::error!(
                    addr = %want.addr,
                    requested_by = %want.origins,
                    error = %e,
                    "cannot listen; the listener is skipped until the next change"
                ),
            },
        }
    }
}

/// A running listener.
struct Handle {
    key: watch::Sender<Key>,
    stop: watch::Sender<bool>,
    /// Resolves once the listening socket is closed (draining may continue).
    closed: tokio::sync::oneshot::Receiver<()>,
    task: JoinHandle<()>,
}

/// Things logged once per listener.
#[derive(Default)]
pub(crate) struct Warned {
    tls: AtomicBool,
    pub(crate) tcp_passthrough: AtomicBool,
}

impl Handle {
    fn spawn(state: Arc<State>, socket: TcpListener, want: Want) -> Handle {
        let (key_tx, key_rx) = watch::channel(want.key);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (closed_tx, closed) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(accept_loop(state, socket, key_rx, stop_rx, closed_tx));
        Handle { key: key_tx, stop: stop_tx, closed, task }
    }
}

/// Spawns what hyper hands over (an HTTP/2 stream, with the request future inside) on tokio,
/// boxed first: the future is then moved once into its box, and tokio's spawn path moves a
/// pointer instead of the 2.5 KB future through each of its layers.
#[derive(Clone, Copy, Debug, Default)]
struct BoxingExecutor;

impl<F> hyper::rt::Executor<F> for BoxingExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Box::pin(fut));
    }
}

/// Envoy's default `max_request_headers_kb` (60) in bytes.
pub(crate) const MAX_REQUEST_HEADERS: usize = 60 * 1024;
/// Envoy's default `max_headers_count`.
const MAX_HEADER_FIELDS: usize = 100;

fn http_builder() -> auto::Builder<BoxingExecutor> {
    let mut b = auto::Builder::new(BoxingExecutor);
    // No timeout on reading a request head, as Envoy by default (`request_headers_timeout`
    // unset); hyper's 30 s default also cost a timer per request. Request heads are read up to
    // a little more than Envoy's `max_request_headers_kb` (60 KiB of names, values and path;
    // request handling then applies the exact limit, see `request`), at most 100 fields
    // (`max_headers_count`, hyper's limit too). The allowances cover what Envoy does not count:
    // `: ` and CRLF per field and the request line in HTTP/1.1, 32 bytes per field in HTTP/2's
    // header-list size (RFC 9113 §6.5.2). Without them hyper would stop HTTP/2 heads at 16 KiB
    // and let HTTP/1.1 heads grow to 400 KiB.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_REQUEST_HEADERS + MAX_HEADER_FIELDS * 4 + 8 * 1024);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_REQUEST_HEADERS + MAX_HEADER_FIELDS * 32).unwrap_or(u32::MAX));
    b
}

async fn accept_loop(
    state: Arc<State>,
    socket: TcpListener,
    key: watch::Receiver<Key>,
    mut stop: watch::Receiver<bool>,
    closed: tokio::sync::oneshot::Sender<()>,
) {
    let drain = Drain::new();
    let builder = Arc::new(http_builder());
    let warned = Arc::new(Warned::default());
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = socket.accept() => match r {
                Ok((sock, peer)) => {
                    let key = key.borrow().clone();
                    let guards = (drain.guard(), drain.guard());
                    tokio::spawn(connection(state.clone(), sock, peer, key, guards, builder.clone(), warned.clone()));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(socket);
    let _ = closed.send(());
    drain.set(Phase::Draining);
    if tokio::time::timeout(state.options.drain_timeout, drain.idle()).await.is_err() {
        tracing::info!("drain timeout: closing the remaining connections");
        drain.set(Phase::Closing);
    }
}

async fn connection(
    state: Arc<State>,
    mut sock: TcpStream,
    peer: SocketAddr,
    key: Key,
    (guard, tunnel_guard): (Guard, Guard),
    builder: Arc<auto::Builder<BoxingExecutor>>,
    warned: Arc<Warned>,
) {
    // Counted from the accept on, whatever happens next (the guard decrements on every return).
    let open = OpenConnection::new(&state);
    let _ = sock.set_nodelay(true);
    let Ok(local) = sock.local_addr() else { return };
    let http = Http { state: state.clone(), peer, local, open, guard, tunnel_guard, builder };
    let (scope, name) = match key {
        Key::Proxy => return http.serve(sock, ConnTarget::Proxy, ListenerRole::SidecarOutbound, false).await,
        Key::Listener { scope, name } => (scope, name),
    };
    let rt = state.current.load_full();
    let Some(listener) = rt.listener(scope, &name) else { return crate::tcp::reset(sock) };
    let tls = listener.needs_peek && starts_with_tls(&sock).await;
    // TLS: the ClientHello is read (and replayed later) to match server names.
    let mut hello_bytes = Vec::new();
    let hello = if tls {
        match tokio::time::timeout(PEEK_TIMEOUT, crate::sni::read_client_hello(&mut sock, &mut hello_bytes)).await {
            Ok(Ok(h)) => Some(h),
            Ok(Err(e)) => {
                tracing::debug!(listener = %name, %peer, error = %e, "bad TLS ClientHello; resetting");
                return crate::tcp::reset(sock);
            }
            Err(_) => {
                tracing::debug!(listener = %name, %peer, "no complete ClientHello in time; resetting");
                return crate::tcp::reset(sock);
            }
        }
    } else {
        None
    };
    let sni = hello.as_ref().and_then(|h| h.server_name.as_deref());
    let Some(chain) = listener.chains.iter().find(|c| c.fits(local.ip(), tls, sni)) else {
        tracing::debug!(listener = %name, sni = sni.unwrap_or("-"), "no filter chain matches the connection (NFCF); resetting");
        return crate::tcp::reset(sock);
    };
    let role = listener.role;
    let target = ConnTarget::Chain { scope, listener: name.clone(), chain: chain.name.clone() };
    let accepted =
        |warned: &Arc<Warned>| crate::tcp::Accepted { listener: name.clone(), peer, local, warned: warned.clone() };

    // TLS termination.
    if let Some(config) = &chain.tls {
        let config = match config {
            Ok(c) => c.clone(),
            Err(e) => {
                crate::tcp::warn_once(&warned.tls, &name, &format!("TLS chain {} cannot terminate: {e}", chain.name));
                tracing::debug!(listener = %name, chain = %chain.name, error = %e, "TLS chain has no usable configuration; resetting");
                return crate::tcp::reset(sock);
            }
        };
        let action = chain.action.clone();
        drop(rt);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let stream = crate::sni::Prefixed::new(hello_bytes, sock);
        let stream = match tokio::time::timeout(PEEK_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(listener = %name, %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(listener = %name, %peer, "TLS handshake timed out");
                return;
            }
        };
        return match action {
            ChainAction::Http { .. } => http.serve(stream, target, role, true).await,
            ChainAction::Tcp { routes } => {
                let rt = state.current.load_full();
                let a = accepted(&warned);
                http.tcp(crate::tcp::proxy(rt, crate::tcp::Destination::Routes(&routes), a, stream, &state.metrics))
                    .await
            }
            ChainAction::AutoPassthrough => {
                tracing::debug!(listener = %name, "AUTO_PASSTHROUGH chain with TLS settings; resetting");
            }
        };
    }

    match &chain.action {
        ChainAction::Http { .. } => {
            drop(rt);
            if tls {
                http.serve(crate::sni::Prefixed::new(hello_bytes, sock), target, role, false).await
            } else {
                http.serve(sock, target, role, false).await
            }
        }
        ChainAction::Tcp { routes } => {
            let routes = routes.clone();
            let dest = crate::tcp::Destination::Routes(&routes);
            if tls {
                let stream = crate::sni::Prefixed::new(hello_bytes, sock);
                http.tcp(crate::tcp::proxy(rt, dest, accepted(&warned), stream, &state.metrics)).await
            } else {
                http.tcp(crate::tcp::proxy(rt, dest, accepted(&warned), sock, &state.metrics)).await
            }
        }
        ChainAction::AutoPassthrough => {
            let Some(cluster) = sni.and_then(crate::tcp::auto_passthrough_cluster) else {
                tracing::debug!(listener = %name, sni = sni.unwrap_or("-"), "AUTO_PASSTHROUGH needs SNI outbound_.PORT_.SUBSET_.HOST (NFCF); resetting");
                return crate::tcp::reset(sock);
            };
            let stream = crate::sni::Prefixed::new(hello_bytes, sock);
            let dest = crate::tcp::Destination::Cluster(cluster);
            http.tcp(crate::tcp::proxy(rt, dest, accepted(&warned), stream, &state.metrics)).await
        }
    }
}

/// What serving a connection needs once its chain is chosen.
struct Http {
    state: Arc<State>,
    peer: SocketAddr,
    local: SocketAddr,
    open: OpenConnection,
    /// Keeps the listener's drain waiting, and tells the connection when to end.
    guard: Guard,
    /// Moves into `Lifetime`, for a WebSocket tunnel that outlives hyper's connection.
    tunnel_guard: Guard,
    builder: Arc<auto::Builder<BoxingExecutor>>,
}

impl Http {
    /// Runs a TCP proxy future until it ends or the drain timeout passes.
    async fn tcp(self, proxy: impl std::future::Future<Output = ()>) {
        tokio::select! {
            biased;
            _ = proxy => {}
            _ = self.guard.closing() => {}
        }
    }

    /// Serves HTTP/1.1 and HTTP/2 on `io`; `tls`: the connection was TLS-terminated here.
    async fn serve<I>(self, io: I, target: ConnTarget, role: ListenerRole, tls: bool)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Http { state, peer, local, open, guard, tunnel_guard, builder } = self;
        let reason = match role {
            ListenerRole::Gateway => state.options.reason_header_gateway,
            ListenerRole::SidecarOutbound => state.options.reason_header_sidecar,
        };
        // The connection's count and drain guard move into `Conn`: an upgraded (WebSocket) connection
        // outlives hyper's connection future, and its tunnel holds `Conn` until it closes.
        let lifetime = Lifetime { _open: open, drain: tunnel_guard, tls };
        let conn = Arc::new(Conn {
            state,
            target,
            role,
            peer,
            peer_ip: crate::request::ip_value(peer.ip()),
            local,
            reason,
            table_cache: AtomicU64::new(0),
            last_authority: Mutex::default(),
            lifetime,
        });
        let service = hyper::service::service_fn(move |req| crate::request::handle(conn.clone(), req));
        let serving = builder.serve_connection_with_upgrades(TokioIo::new(Coalesce::new(io)), service).into_owned();
        let serving = std::pin::pin!(serving);
        let ended = crate::drain::serve(serving, guard.signal(), |c| c.graceful_shutdown()).await;
        if let Some(Err(e)) = ended {
            tracing::debug!(%peer, error = %e, "downstream connection ended with an error");
        }
    }
}

/// What keeps a downstream HTTP connection counted (`weir_active_connections`) and waited for
/// by a drain, for as long as anything uses it: hyper's connection, or a WebSocket tunnel that
/// continues after hyper handed the socket over.
pub(crate) struct Lifetime {
    _open: OpenConnection,
    /// Keeps the listener's drain waiting; `closing()` resolves when its timeout passes
    /// (tunnels close then).
    pub drain: Guard,
    /// The connection was TLS-terminated by this listener (`x-forwarded-proto: https`).
    #[allow(dead_code)] // read by request handling for x-forwarded-proto
    pub tls: bool,
}

/// Counts a downstream connection in `weir_active_connections` while alive.
struct OpenConnection(Arc<State>);

impl OpenConnection {
    fn new(state: &Arc<State>) -> OpenConnection {
        state.metrics.connection_opened();
        OpenConnection(state.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.metrics.connection_closed();
    }
}

/// Whether the connection starts with a TLS handshake record.
async fn starts_with_tls(sock: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(tokio::time::timeout(PEEK_TIMEOUT, sock.peek(&mut first)).await, Ok(Ok(1)) if first[0] == 0x16)
}
