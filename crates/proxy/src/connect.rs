//! Dialing upstream endpoints: the connector behind every HTTP client pool
//! and TCP proxy connection (address or name resolution, connect timeout,
//! socket options).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where a connector dials.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Addr(SocketAddr),
    /// A DNS name, resolved on every new connection.
    Name(Arc<str>, u16),
    /// The request URI's authority (ORIGINAL_DST).
    FromUri,
}

/// A connector for the legacy client: plain TCP to a fixed endpoint (or the URI's authority),
/// with the cluster's connect timeout and `TCP_NODELAY`.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    pub(crate) target: Target,
    pub(crate) timeout: Duration,
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, std::io::Error>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let target = self.target.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let connect = async {
                match target {
                    Target::Addr(a) => TcpStream::connect(a).await,
                    Target::Name(host, port) => TcpStream::connect((&*host, port)).await,
                    Target::FromUri => {
                        let host = uri.host().unwrap_or_default();
                        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
                        if host.is_empty() {
                            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no destination host"));
                        }
                        TcpStream::connect((host, uri.port_u16().unwrap_or(80))).await
                    }
                }
            };
            let stream = tokio::time::timeout(timeout, connect)
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
            let _ = stream.set_nodelay(true);
            Ok(TokioIo::new(stream))
        })
    }
}

/// A plain TCP connection to a fixed target (not [`Target::FromUri`]), within `timeout`, with `TCP_NODELAY`.
pub(crate) async fn tcp(target: &Target, timeout: Duration) -> std::io::Result<TcpStream> {
    let connect = async {
        match target {
            Target::Addr(a) => TcpStream::connect(*a).await,
            Target::Name(host, port) => TcpStream::connect((&**host, *port)).await,
            Target::FromUri => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no destination")),
        }
    };
    let stream = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
