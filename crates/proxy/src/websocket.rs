//! WebSocket pass-through, as Envoy does it with Istio's default
//! `upgrade_configs: [{upgrade_type: websocket}]`.
//!
//! An HTTP/1.1 request with `Connection: upgrade` and `Upgrade: websocket`
//! goes through the usual phases (`request`): virtual host, route, CORS,
//! faults, header operations, circuit breaker and endpoint choice, so local
//! replies (`NR`, `NC`, `UH`, `UO`, fault aborts, direct responses,
//! redirects) answer it before anything is upgraded. It is then sent to the
//! endpoint over HTTP/1.1, whatever the cluster's protocol, with its
//! `Connection: upgrade` and `Upgrade` headers kept (other hop-by-hop headers
//! are removed as usual). The route timeout and retries apply until the
//! upstream answers:
//!
//! * `101 Switching Protocols`: the 101 (with `Connection: upgrade`, the
//!   upstream's `Upgrade`, and response header operations) goes back to the
//!   client, and once both sides have switched, bytes are copied both ways
//!   until either side closes. No timeout cuts an established tunnel; a
//!   drain waits for it until `--drain-timeout`, then closes it. The request
//!   is recorded (metrics, access log) when the tunnel closes, with status
//!   101, the tunnel's duration, and the bytes each way (`DC` when the client
//!   side failed, `UC` when the upstream side did).
//! * anything else is relayed as a normal response.
//!
//! Not supported: upgrades over HTTP/2 (extended CONNECT, RFC 8441) on
//! either side; upgrade types other than `websocket` (their `Upgrade` header
//! is removed and the request forwarded as a plain request); mirroring
//! upgrade requests (they are not mirrored).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Version, request::Parts};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::Replay;
use crate::local_reply::Flags;
use crate::record::Exchange;

/// The downstream side of a WebSocket upgrade request.
pub(crate) struct Upgrade {
    /// The `Upgrade` value the client sent (`websocket`, in any case).
    pub protocol: HeaderValue,
    /// Resolves to the client's connection once the 101 is written.
    pub downstream: OnUpgrade,
}

/// Whether the header `name` lists `token` (comma-separated, case-insensitive).
fn lists(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|list| list.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Takes the upgrade of a WebSocket upgrade request; `None` for any other request.
pub(crate) fn take_upgrade(parts: &mut Parts) -> Option<Upgrade> {
    if parts.version != Version::HTTP_11 || !lists(&parts.headers, header::CONNECTION, "upgrade") {
        return None;
    }
    let protocol = parts.headers.get(header::UPGRADE)?;
    if !protocol.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket") {
        return None;
    }
    let protocol = protocol.clone();
    let downstream = parts.extensions.remove::<OnUpgrade>()?;
    Some(Upgrade { protocol, downstream })
}

/// Puts back the upgrade headers that hop-by-hop stripping removed.
pub(crate) fn set_upgrade_headers(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Splices the client's and the upstream's upgraded connections, then records `x`.
pub(crate) async fn splice(mut x: Box<Exchange>, downstream: OnUpgrade, upstream: OnUpgrade) {
    let conn = x.conn.clone();
    let (down, up) = tokio::join!(downstream, upstream);
    let (down, up) = match (down, up) {
        (Ok(d), Ok(u)) => (d, u),
        (d, u) => {
            let flags = if d.is_err() { Flags::DC } else { Flags::UC };
            let error = d.err().or(u.err()).map(|e| e.to_string()).unwrap_or_default();
            tracing::debug!(%error, "WebSocket upgrade did not complete");
            x.finish(0, flags, None);
            return;
        }
    };
    let mut down = Counted::new(TokioIo::new(down));
    let mut up = Counted::new(TokioIo::new(up));
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut down, &mut up) => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "WebSocket tunnel ended with an error");
            }
        }
        _ = conn.lifetime.drain.closing() => {
            tracing::debug!("drain timeout: closing a WebSocket tunnel");
        }
    }
    let flags = if down.failed {
        Flags::DC
    } else if up.failed {
        Flags::UC
    } else {
        Flags::NONE
    };
    x.request_body = Some(Replay::forwarded(down.read));
    x.finish(up.read, flags, None);
}

/// An upgraded connection that counts the bytes read from it and notes I/O errors.
struct Counted<T> {
    io: T,
    read: u64,
    failed: bool,
}

impl<T> Counted<T> {
    fn new(io: T) -> Counted<T> {
        Counted { io, read: 0, failed: false }
    }

    fn note<R>(&mut self, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if let Poll::Ready(Err(_)) = &r {
            self.failed = true;
        }
        r
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.read += (buf.filled().len() - before) as u64;
        }
        this.note(r)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.note(r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.note(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().version(version).uri("/chat");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn upgrade_headers_are_recognised() {
        let yes = [("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")];
        assert!(lists(&parts(Version::HTTP_11, &yes).headers, header::CONNECTION, "upgrade"));
        // Without hyper's upgrade handle (not served by hyper) there is nothing to take.
        assert!(take_upgrade(&mut parts(Version::HTTP_11, &yes)).is_none());
        assert!(!lists(
            &parts(Version::HTTP_11, &[("connection", "keep-alive")]).headers,
            header::CONNECTION,
            "upgrade"
        ));
        for (version, headers) in [
            (Version::HTTP_11, &[("connection", "upgrade"), ("upgrade", "h2c")][..]),
            (Version::HTTP_11, &[("upgrade", "websocket")][..]),
            (Version::HTTP_10, &[("connection", "upgrade"), ("upgrade", "websocket")][..]),
        ] {
            assert!(take_upgrade(&mut parts(version, headers)).is_none(), "{version:?} {headers:?}");
        }
    }

    #[test]
    fn upgrade_headers_are_put_back() {
        let mut h = HeaderMap::new();
        h.insert("connection", "upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
        crate::headers::strip_hop_by_hop(&mut h, false);
        set_upgrade_headers(&mut h, HeaderValue::from_static("websocket"));
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
    }
}
