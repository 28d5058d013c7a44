//! Reading a TLS ClientHello before choosing a filter chain (Envoy's
//! `tls_inspector` listener filter): the server name (SNI) and the offered
//! ALPN protocols decide which chain takes the connection.
//!
//! The bytes are read off the socket (not peeked: a ClientHello can span
//! several TCP segments and several TLS records) into a buffer that is then
//! replayed in front of the socket by [`Prefixed`], either to rustls (TLS
//! termination) or to the upstream (SNI passthrough), so neither sees a
//! difference. Reading is bounded in size ([`MAX_HELLO`]) and in time (the
//! caller's timeout); anything that is not a well-formed ClientHello is an
//! error and the connection is reset.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The largest ClientHello accepted (Envoy's tls_inspector limit is 64 KiB).
pub(crate) const MAX_HELLO: usize = 64 * 1024;

/// What the ClientHello offered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClientHello {
    /// The server name, lower-cased, without a trailing dot.
    pub server_name: Option<String>,
    /// ALPN protocol names in the client's order.
    pub alpn: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HelloError {
    #[error("the connection closed before the ClientHello was complete")]
    Eof,
    #[error("the ClientHello is larger than {MAX_HELLO} bytes")]
    TooLarge,
    #[error("not a TLS ClientHello: {0}")]
    Malformed(&'static str),
    #[error("reading the ClientHello: {0}")]
    Io(#[from] io::Error),
}

/// Reads records from `sock` into `buf` (which may already hold the first bytes) until the
/// handshake message it carries is a complete ClientHello, and parses it.
pub(crate) async fn read_client_hello<S: AsyncRead + Unpin>(
    sock: &mut S,
    buf: &mut Vec<u8>,
) -> Result<ClientHello, HelloError> {
    loop {
        match parse_records(buf) {
            Ok(Some(h)) => return Ok(h),
            Ok(None) => {}
            Err(e) => return Err(HelloError::Malformed(e)),
        }
        if buf.len() >= MAX_HELLO {
            return Err(HelloError::TooLarge);
        }
        let mut chunk = [0u8; 4096];
        let want = chunk.len().min(MAX_HELLO + 5 - buf.len());
        let n = sock.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(HelloError::Eof);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Joins the handshake records at the start of `buf`; `Ok(None)` while more bytes are needed.
fn parse_records(buf: &[u8]) -> Result<Option<ClientHello>, &'static str> {
    let mut handshake: Vec<u8> = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            return Ok(None);
        }
        if rest[0] != 0x16 {
            return Err("expected a handshake record");
        }
        if rest[1] != 3 {
            return Err("unknown record version");
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 {
            return Err("empty handshake record");
        }
        if rest.len() < 5 + len {
            return Ok(None);
        }
        handshake.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Err("the first handshake message is not a ClientHello");
            }
            let body_len =
                (usize::from(handshake[1]) << 16) | (usize::from(handshake[2]) << 8) | usize::from(handshake[3]);
            if body_len + 4 > MAX_HELLO {
                return Err("ClientHello too large");
            }
            if handshake.len() >= 4 + body_len {
                return parse_hello(&handshake[4..4 + body_len]).map(Some);
            }
        }
    }
}

/// A cursor over big-endian TLS structures.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated ClientHello");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<usize, &'static str> {
        Ok(usize::from(self.take(1)?[0]))
    }
    fn u16(&mut self) -> Result<usize, &'static str> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    /// A vector with a one- or two-byte length prefix.
    fn vec8(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn parse_hello(body: &[u8]) -> Result<ClientHello, &'static str> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut hello = ClientHello::default();
    if r.0.is_empty() {
        return Ok(hello); // no extensions (very old clients)
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let mut data = Reader(exts.vec16()?);
        match kind {
            0 => {
                let mut list = Reader(data.vec16()?);
                while !list.0.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 && hello.server_name.is_none() {
                        let name = std::str::from_utf8(name).map_err(|_| "server name is not text")?;
                        hello.server_name = Some(name.trim_end_matches('.').to_ascii_lowercase());
                    }
                }
            }
            16 => {
                let mut list = Reader(data.vec16()?);
                while !list.0.is_empty() {
                    hello.alpn.push(list.vec8()?.to_vec());
                }
            }
            _ => {}
        }
    }
    Ok(hello)
}

/// A stream that yields `prefix` before reading from `inner` (bytes read ahead of a handshake).
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    pub inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed { prefix, pos: 0, inner }
    }

    /// Whether replayed bytes are still to be read.
    pub fn has_prefix(&self) -> bool {
        self.pos < self.prefix.len()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes it, for `name` with ALPN h2 and http/1.1.
    fn real_hello(name: &str) -> Vec<u8> {
        use std::sync::Arc;
        let roots = rustls::RootCertStore::empty();
        let mut cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), server).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn parses_sni_and_alpn_of_a_real_client_hello() {
        let bytes = real_hello("Bookinfo.COM");
        let h = parse_records(&bytes).unwrap().unwrap();
        assert_eq!(h.server_name.as_deref(), Some("bookinfo.com"));
        assert_eq!(h.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        // Every strict prefix asks for more bytes.
        for cut in [0, 1, 4, 5, 40, bytes.len() - 1] {
            assert_eq!(parse_records(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn a_hello_split_over_records_is_joined() {
        let bytes = real_hello("a.example.com");
        let payload = &bytes[5..];
        let (a, b) = payload.split_at(50);
        let mut split = Vec::new();
        for part in [a, b] {
            split.extend_from_slice(&[0x16, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        let h = parse_records(&split).unwrap().unwrap();
        assert_eq!(h.server_name.as_deref(), Some("a.example.com"));
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(parse_records(b"GET / HTTP/1.1\r\n").is_err());
        assert!(parse_records(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]).is_err(), "ServerHello");
        assert!(parse_records(&[0x16, 3, 1, 0, 6, 1, 0, 0, 2, 3, 3]).is_err(), "truncated body");
    }

    proptest::proptest! {
        /// Whatever a client sends before the handshake, parsing never panics, and a real
        /// hello with bytes flipped either parses, asks for more, or is rejected.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse_records(&bytes);
            let mut tls = vec![0x16, 3, 1];
            tls.extend_from_slice(&bytes);
            let _ = parse_records(&tls);
        }

        #[test]
        fn mutated_hellos_never_panic(flips in proptest::collection::vec((0usize..2048, proptest::num::u8::ANY), 1..8)) {
            let mut bytes = real_hello("mutated.example.com");
            for (at, v) in flips {
                let n = bytes.len();
                bytes[at % n] = v;
            }
            let _ = parse_records(&bytes);
        }
    }

    #[tokio::test]
    async fn reads_from_a_stream_and_replays_the_bytes() {
        let bytes = real_hello("x.test");
        let (mut client, mut server) = tokio::io::duplex(64);
        let sent = bytes.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for c in sent.chunks(7) {
                client.write_all(c).await.unwrap();
            }
            client.write_all(b"after").await.unwrap();
            client
        });
        let mut buf = Vec::new();
        let h = read_client_hello(&mut server, &mut buf).await.unwrap();
        assert_eq!(h.server_name.as_deref(), Some("x.test"));
        let _client = writer.await.unwrap();
        let mut replay = Prefixed::new(buf, server);
        let mut got = vec![0u8; bytes.len() + 5];
        replay.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..bytes.len()], &bytes[..]);
        assert_eq!(&got[bytes.len()..], b"after");
    }
}
