//! Dialing upstream endpoints: the connector behind every HTTP client pool
//! and TCP proxy connection (address or name resolution, connect timeout,
//! socket options, TLS origination).
//!
//! A [`Connector`] dials one [`Target`]: a fixed address, a host name
//! resolved through the process's [`Dns`] (cache with TTLs) on each new
//! connection, or the request's authority (ORIGINAL_DST). With a cluster
//! [`ClientTls`] it then runs the TLS handshake: SNI is the DestinationRule's
//! `sni`, else the request's host (the URI authority hyper keys its pool by),
//! and ALPN follows the client's protocol; a connection that negotiated `h2`
//! reports it to hyper-util (`Connected::negotiated_h2`). The connect timeout
//! covers name resolution, TCP connect and the handshake (as Envoy's
//! `connect_timeout` does for TLS clusters).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use weir_compile::policy::TcpKeepalive;

use crate::resolve::Dns;
use crate::tls::client::{Alpn, ClientTls};

/// Where a connector dials.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Addr(SocketAddr),
    /// A DNS name, resolved (through the TTL cache) on every new connection.
    Name(Arc<str>, u16, Arc<Dns>),
    /// The request URI's authority (ORIGINAL_DST).
    FromUri(Arc<Dns>),
}

/// A connector for the legacy client: TCP to a fixed endpoint (or the URI's
/// authority) with the cluster's connect timeout and `TCP_NODELAY`, then TLS
/// when the cluster originates it.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    pub(crate) target: Target,
    pub(crate) timeout: Duration,
    /// TLS origination and the ALPN to offer.
    pub(crate) tls: Option<(Arc<ClientTls>, Alpn)>,
    /// `SO_KEEPALIVE` settings (DestinationRule `connectionPool.tcp.tcpKeepalive`).
    pub(crate) keepalive: Option<TcpKeepalive>,
}

/// An upstream connection: plain TCP or TLS over TCP.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether TLS negotiated ALPN `h2`.
    pub(crate) fn negotiated_h2(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        if self.negotiated_h2() { c.negotiated_h2() } else { c }
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<Stream>, std::io::Error>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let this = self.clone();
        Box::pin(async move { this.connect(uri.host(), uri.port_u16()).await.map(TokioIo::new) })
    }
}

impl Connector {
    /// Dials the target (for [`Target::FromUri`]: `host:port`), then TLS with the SNI for `host`.
    pub(crate) async fn connect(&self, host: Option<&str>, port: Option<u16>) -> std::io::Result<Stream> {
        let host = host.map(|h| h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h));
        // TLS that cannot be set up (ISTIO_MUTUAL, missing material) fails before dialing.
        if let Some(e) = self.tls.as_ref().and_then(|(t, _)| t.error()) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()));
        }
        let work = async {
            let tcp = match &self.target {
                Target::Addr(a) => TcpStream::connect(*a).await?,
                Target::Name(name, port, dns) => dial_name(dns, name, *port).await?,
                Target::FromUri(dns) => {
                    let host = host
                        .filter(|h| !h.is_empty())
                        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no destination host"))?;
                    match host.parse::<std::net::IpAddr>() {
                        Ok(ip) => TcpStream::connect((ip, port.unwrap_or(80))).await?,
                        Err(_) => dial_name(dns, host, port.unwrap_or(80)).await?,
                    }
                }
            };
            let _ = tcp.set_nodelay(true);
            if let Some(ka) = &self.keepalive
                && let Err(e) = set_keepalive(&tcp, ka)
            {
                tracing::debug!(error = %e, "cannot set TCP keep-alive on an upstream connection");
            }
            match &self.tls {
                None => Ok(Stream::Plain(tcp)),
                Some((tls, alpn)) => handshake(tls, *alpn, host, tcp).await,
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))?
    }
}

async fn dial_name(dns: &Dns, name: &str, port: u16) -> std::io::Result<TcpStream> {
    let addrs = dns.lookup(name).await?;
    if addrs.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{name}: no addresses")));
    }
    let mut last = None;
    for ip in addrs.iter() {
        match TcpStream::connect((*ip, port)).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}

async fn handshake(tls: &ClientTls, alpn: Alpn, host: Option<&str>, tcp: TcpStream) -> std::io::Result<Stream> {
    let config = tls.config(alpn).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let peer = tcp.peer_addr()?;
    let name = tls.server_name(host, peer.ip());
    match tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await {
        Ok(s) => Ok(Stream::Tls(Box::new(s))),
        Err(e) => {
            tracing::debug!(upstream = %peer, error = %e, "upstream TLS handshake failed");
            Err(std::io::Error::new(e.kind(), format!("TLS handshake with {peer} failed: {e}")))
        }
    }
}

/// A connection to a fixed target (not [`Target::FromUri`]) for TCP proxying, within
/// `timeout`, with `TCP_NODELAY`, over TLS when `tls` is set (no ALPN; SNI from `sni` only).
pub(crate) async fn tcp(
    target: &Target,
    timeout: Duration,
    tls: Option<&Arc<ClientTls>>,
    keepalive: Option<&TcpKeepalive>,
) -> std::io::Result<Stream> {
    if let Target::FromUri(_) = target {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no destination"));
    }
    let c = Connector {
        target: target.clone(),
        timeout,
        tls: tls.map(|t| (t.clone(), Alpn::Tcp)),
        keepalive: keepalive.cloned(),
    };
    c.connect(None, None).await
}

/// Turns on `SO_KEEPALIVE` with the configured idle time, probe interval and probe count
/// (unset ones keep the system defaults, as Envoy does).
fn set_keepalive(tcp: &TcpStream, ka: &TcpKeepalive) -> std::io::Result<()> {
    let mut k = socket2::TcpKeepalive::new();
    if let Some(t) = ka.time {
        k = k.with_time(t);
    }
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos", target_os = "freebsd"))]
    {
        if let Some(i) = ka.interval {
            k = k.with_interval(i);
        }
        if let Some(p) = ka.probes {
            k = k.with_retries(p);
        }
    }
    socket2::SockRef::from(tcp).set_tcp_keepalive(&k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_keepalive_settings_reach_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target::Addr(listener.local_addr().unwrap());
        let ka = TcpKeepalive {
            probes: Some(4),
            time: Some(Duration::from_secs(30)),
            interval: Some(Duration::from_secs(7)),
        };
        let Stream::Plain(s) = tcp(&target, Duration::from_secs(1), None, Some(&ka)).await.unwrap() else {
            panic!("plain TCP expected")
        };
        let sock = socket2::SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(7));
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);

        let Stream::Plain(s) = tcp(&target, Duration::from_secs(1), None, None).await.unwrap() else {
            panic!("plain TCP expected")
        };
        assert!(!socket2::SockRef::from(&s).keepalive().unwrap(), "off unless configured");
    }
}
