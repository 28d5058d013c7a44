//! HTTP/1.1 to upstreams, driven by the request's own task.
//!
//! A pooled HTTP/1.1 connection is a bare stream plus its read buffer. The
//! task that serves the downstream request writes the request head (and any
//! body) and parses the response head itself; the response body it hands
//! downstream reads straight from the upstream socket and gives the
//! connection back to the pool the moment the last byte is read. There is no
//! connection task, no channel and no extra wake-up between a request and its
//! upstream, which is where a proxy on hyper's client spends much of its time
//! (BENCHMARKS.md). Upgrades (WebSocket) still go through hyper's client,
//! which owns the connection from then on.
//!
//! Semantics follow RFC 9112 as Envoy applies them to upstream responses:
//! 1xx responses other than 101 are skipped; HEAD, 204 and 304 have no body;
//! `Transfer-Encoding` wins over `Content-Length` and a response without
//! either runs until the upstream closes; a connection is reused only when the
//! response was complete, the request body was sent in full, and the upstream
//! kept the connection alive (`Connection: close`, HTTP/1.0 without
//! `keep-alive` and close-delimited bodies end it).

use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::{ConnSlot, Pool};
use crate::body::{BoxError, ReqBody};
use crate::connect::Stream;

/// Largest response head accepted (Envoy's default `max_response_headers_kb` is 60).
const MAX_HEAD: usize = 64 * 1024;
/// Most response header fields accepted (Envoy's default is 100).
const MAX_HEADERS: usize = 128;
/// Response header fields whose positions are noted on the stack while a head is parsed.
const FEW_HEADERS: usize = 24;
/// Longest chunk-size line accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Read buffer growth per read.
const READ_SIZE: usize = 16 * 1024;
/// Request body bytes buffered before they are written.
const WRITE_HIGH: usize = 64 * 1024;

/// Why an HTTP/1.1 exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    #[error("upstream connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream connection closed before the response was complete (reset before headers)")]
    ClosedBeforeHead,
    #[error("upstream connection closed in the middle of the response body")]
    Incomplete,
    #[error("upstream sent an invalid HTTP/1.1 response: {0}")]
    Parse(#[from] httparse::Error),
    #[error("upstream sent an invalid HTTP/1.1 response: {0}")]
    Invalid(&'static str),
    #[error("upstream response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("reading the request body: {0}")]
    RequestBody(BoxError),
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

impl Framing {
    /// The framing of a request body.
    fn of_request(body: &ReqBody) -> Framing {
        if body.is_end_stream() {
            return Framing::Empty;
        }
        match body.size_hint().exact() {
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        }
    }
}

/// Methods whose requests carry `Content-Length: 0` when they have no body (RFC 9110 §8.6).
fn expects_body(m: &Method) -> bool {
    *m == Method::POST || *m == Method::PUT || *m == Method::PATCH
}

/// The request head in HTTP/1.1 wire form: origin-form target, every header
/// but the framing ones, then the framing `body` calls for. `authority` fills
/// in `Host` when the headers have none.
fn encode_head(method: &Method, target: &str, headers: &HeaderMap, authority: Option<&str>, framing: Framing) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + target.len() + headers.len() * 40);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(if target.is_empty() { b"/" } else { target.as_bytes() });
    out.put_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(HOST)
        && let Some(a) = authority
    {
        out.put_slice(b"host: ");
        out.put_slice(a.as_bytes());
        out.put_slice(b"\r\n");
    }
    for (name, value) in headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty if expects_body(method) => out.put_slice(b"content-length: 0\r\n"),
        Framing::Empty | Framing::Close => {}
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The upstream keeps the connection open after this response.
    pub keep_alive: bool,
}

/// Parses a response head from the front of `buf`, consuming it; `None` until it is complete.
pub(crate) fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, H1Error> {
    // Left uninitialised: filling 128 empty slots cost more than parsing a short head.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(H1Error::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let version = if resp.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let status = StatusCode::from_u16(resp.code.unwrap_or(0)).map_err(|_| H1Error::Invalid("status code"))?;
    // Where each field sits in the buffer, so values can share the head's bytes.
    // Room on the stack for the usual number of fields; a longer head takes a vector.
    let base = buf.as_ptr() as usize;
    let n = resp.headers.len();
    let mut few = [(0usize, 0usize, 0usize, 0usize); FEW_HEADERS];
    let mut many = Vec::new();
    let spans = if n <= FEW_HEADERS {
        &mut few[..n]
    } else {
        many.resize(n, (0, 0, 0, 0));
        &mut many[..]
    };
    for (span, h) in spans.iter_mut().zip(resp.headers.iter()) {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        *span = (name, name + h.name.len(), value, value + h.value.len());
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(n);
    // Which framing headers are present, noted while the map is built (a comparison with a
    // standard name is cheap; a lookup afterwards would hash the name again).
    let mut present = Present::default();
    for &(ns, ne, vs, ve) in spans.iter() {
        let name = HeaderName::from_bytes(&head[ns..ne]).map_err(|_| H1Error::Invalid("header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve)).map_err(|_| H1Error::Invalid("header value"))?;
        present.transfer_encoding |= name == TRANSFER_ENCODING;
        present.content_length |= name == CONTENT_LENGTH;
        present.connection |= name == CONNECTION;
        headers.append(name, value);
    }
    let (framing, delimited) = response_framing(method, status, &headers, present)?;
    let keep_alive = delimited && keeps_alive(version, &headers, present);
    Ok(Some(Head { status, version, headers, framing, keep_alive }))
}

/// Which of the headers that decide framing and reuse a response head has.
#[derive(Clone, Copy, Debug, Default)]
struct Present {
    transfer_encoding: bool,
    content_length: bool,
    connection: bool,
}

/// The response body's framing, and whether it ends without closing the connection.
fn response_framing(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
    present: Present,
) -> Result<(Framing, bool), H1Error> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, true));
    }
    if present.transfer_encoding
        && let Some(te) = headers.get_all(TRANSFER_ENCODING).iter().next_back()
    {
        let last = te.as_bytes().rsplit(|b| *b == b',').next().unwrap_or_default();
        return Ok(if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            // Both framings present: Transfer-Encoding wins, and the connection is not reused.
            (Framing::Chunked, !headers.contains_key(CONTENT_LENGTH))
        } else {
            (Framing::Close, false)
        });
    }
    let mut length: Option<u64> = None;
    let lengths = present.content_length.then(|| headers.get_all(CONTENT_LENGTH));
    for v in lengths.iter().flat_map(|all| all.iter()) {
        for part in v.as_bytes().split(|b| *b == b',') {
            let n = std::str::from_utf8(part.trim_ascii())
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(H1Error::Invalid("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Invalid("content-length (differing values)"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Empty, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

fn keeps_alive(version: Version, headers: &HeaderMap, present: Present) -> bool {
    let has = |token: &[u8]| {
        present.connection
            && headers
                .get_all(CONNECTION)
                .iter()
                .any(|v| v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token)))
    };
    if version == Version::HTTP_10 { has(b"keep-alive") } else { !has(b"close") }
}

/// What the body decoder found in the buffer.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is complete.
    End,
    /// More bytes are needed.
    More,
}

/// Reads a response body out of the connection's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoder {
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk, this many bytes left.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer fields and the final CRLF.
    Trailers,
    Close,
    Done,
}

impl Decoder {
    pub(crate) fn new(framing: Framing) -> Decoder {
        match framing {
            Framing::Empty | Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::ChunkSize,
            Framing::Close => Decoder::Close,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// Takes the next piece of the body from `buf`; `eof`: the connection has no more bytes.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Decoded, H1Error> {
        loop {
            match *self {
                Decoder::Done => return Ok(Decoded::End),
                Decoder::Length(n) | Decoder::ChunkData(n) => {
                    if buf.is_empty() {
                        return if eof { Err(H1Error::Incomplete) } else { Ok(Decoded::More) };
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = n - take as u64;
                    *self = match (*self, left) {
                        (Decoder::Length(_), 0) => Decoder::Done,
                        (Decoder::Length(_), l) => Decoder::Length(l),
                        (_, 0) => Decoder::ChunkEnd,
                        (_, l) => Decoder::ChunkData(l),
                    };
                    return Ok(Decoded::Data(data));
                }
                Decoder::Close => {
                    if !buf.is_empty() {
                        return Ok(Decoded::Data(buf.split().freeze()));
                    }
                    if eof {
                        *self = Decoder::Done;
                        return Ok(Decoded::End);
                    }
                    return Ok(Decoded::More);
                }
                Decoder::ChunkSize => {
                    let Some(nl) = buf.iter().position(|b| *b == b'\n') else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(H1Error::Invalid("chunk size line too long"));
                        }
                        return if eof { Err(H1Error::Incomplete) } else { Ok(Decoded::More) };
                    };
                    let size = chunk_size(&buf[..nl])?;
                    buf.advance(nl + 1);
                    *self = if size == 0 { Decoder::Trailers } else { Decoder::ChunkData(size) };
                }
                Decoder::ChunkEnd => {
                    let need = if buf.first() == Some(&b'\r') { 2 } else { 1 };
                    if buf.len() < need {
                        return if eof { Err(H1Error::Incomplete) } else { Ok(Decoded::More) };
                    }
                    if buf[need - 1] != b'\n' {
                        return Err(H1Error::Invalid("chunk not followed by CRLF"));
                    }
                    buf.advance(need);
                    *self = Decoder::ChunkSize;
                }
                Decoder::Trailers => {
                    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let (len, fields) = match httparse::parse_headers(buf, &mut slots)? {
                        httparse::Status::Complete((len, fields)) => (len, fields),
                        httparse::Status::Partial if buf.len() > MAX_HEAD => return Err(H1Error::HeadTooLarge),
                        httparse::Status::Partial => {
                            return if eof { Err(H1Error::Incomplete) } else { Ok(Decoded::More) };
                        }
                    };
                    let mut trailers = HeaderMap::with_capacity(fields.len());
                    for f in fields.iter() {
                        if let (Ok(n), Ok(v)) =
                            (HeaderName::from_bytes(f.name.as_bytes()), HeaderValue::from_bytes(f.value))
                        {
                            trailers.append(n, v);
                        }
                    }
                    buf.advance(len);
                    *self = Decoder::Done;
                    return Ok(if trailers.is_empty() { Decoded::End } else { Decoded::Trailers(trailers) });
                }
            }
        }
    }

    /// Body bytes still to come, when known.
    fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }
}

/// The size in a chunk-size line (hex digits, optional extensions after `;`).
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
    if digits.is_empty() || digits.len() > 16 {
        return Err(H1Error::Invalid("chunk size"));
    }
    let mut n: u64 = 0;
    for d in digits {
        let v = (*d as char).to_digit(16).ok_or(H1Error::Invalid("chunk size"))?;
        n = (n << 4) | u64::from(v);
    }
    Ok(n)
}

/// An idle or busy HTTP/1.1 connection of a pool.
pub(crate) struct H1Conn {
    pub io: Stream,
    /// Bytes read but not yet consumed; empty whenever the connection is idle.
    pub rbuf: BytesMut,
    pub id: u64,
    pub created: Instant,
    pub used: u32,
    pub slot: ConnSlot,
}

impl H1Conn {
    /// Whether the connection is still usable while idle: the upstream has not
    /// closed it or sent anything unasked. Never blocks: a read that would
    /// wait means the connection is fine (and tokio answers that from its
    /// readiness cache without a system call once it has seen it once).
    pub fn idle_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 32];
        let mut rb = ReadBuf::new(&mut probe);
        matches!(Pin::new(&mut self.io).poll_read(&mut cx, &mut rb), Poll::Pending)
    }
}

/// The request still to be written upstream: its head, then its body.
pub(crate) struct Upload {
    /// The head, or what is left of it.
    head: Bytes,
    body: ReqBody,
    chunked: bool,
    /// Encoded body bytes not yet written.
    out: BytesMut,
    /// The body has been read to its end (its last bytes may still be in `out`).
    read_all: bool,
    /// Some bytes of this request reached the connection.
    wrote_any: bool,
}

impl Upload {
    /// The request to write: its head ([`encode_head`]) with the framing its body calls for.
    pub(crate) fn new(
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        authority: Option<&str>,
        body: ReqBody,
    ) -> Upload {
        let framing = Framing::of_request(&body);
        Upload {
            head: encode_head(method, target, headers, authority, framing),
            body,
            chunked: framing == Framing::Chunked,
            out: BytesMut::new(),
            read_all: framing == Framing::Empty,
            wrote_any: false,
        }
    }

    /// Writes what it can; `Ready(Ok)` once everything is written and flushed.
    fn poll<W: AsyncWrite + Unpin>(&mut self, io: &mut W, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        loop {
            // Gather the body frames that are ready (up to a limit), so the head and the first
            // bytes of the body go out in one write.
            while !self.read_all && self.out.len() < WRITE_HIGH {
                let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(f))) => f,
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(H1Error::RequestBody(e))),
                    Poll::Ready(None) => {
                        if self.chunked {
                            self.out.put_slice(b"0\r\n\r\n");
                        }
                        self.read_all = true;
                        break;
                    }
                    Poll::Pending => break,
                };
                self.encode(frame);
            }
            if self.head.is_empty() && self.out.is_empty() {
                if !self.read_all {
                    // The body has nothing ready; its waker is registered.
                    return Poll::Pending;
                }
                ready!(Pin::new(&mut *io).poll_flush(cx))?;
                return Poll::Ready(Ok(()));
            }
            let n = if self.head.is_empty() {
                ready!(Pin::new(&mut *io).poll_write(cx, &self.out))?
            } else if self.out.is_empty() {
                ready!(Pin::new(&mut *io).poll_write(cx, &self.head))?
            } else {
                let bufs = [std::io::IoSlice::new(&self.head), std::io::IoSlice::new(&self.out)];
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &bufs))?
            };
            if n == 0 {
                return Poll::Ready(Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()));
            }
            self.wrote_any = true;
            let from_head = n.min(self.head.len());
            self.head.advance(from_head);
            self.out.advance(n - from_head);
        }
    }

    fn encode(&mut self, frame: Frame<Bytes>) {
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) if self.chunked => {
                let _ = write!(self.out, "{:x}\r\n", data.len());
                self.out.put_slice(&data);
                self.out.put_slice(b"\r\n");
            }
            Ok(data) => self.out.put_slice(&data),
            Err(frame) => {
                // Trailers travel only in a chunked body; without one they are dropped (as Envoy does).
                if let (true, Ok(trailers)) = (self.chunked, frame.into_trailers()) {
                    self.out.put_slice(b"0\r\n");
                    for (name, value) in &trailers {
                        self.out.put_slice(name.as_str().as_bytes());
                        self.out.put_slice(b": ");
                        self.out.put_slice(value.as_bytes());
                        self.out.put_slice(b"\r\n");
                    }
                    self.out.put_slice(b"\r\n");
                    self.chunked = false;
                }
            }
        }
    }
}

/// How an exchange failed.
pub(crate) enum ExchangeError {
    /// Nothing reached the upstream: the connection was dead. The upload comes back whole (its
    /// head, and any body bytes already taken from the body), to be sent on another connection.
    Unsent(Upload),
    Failed(H1Error),
}

/// Sends one request (`upload`: its head and body) on `conn` and reads the response head.
pub(crate) async fn exchange(
    pool: Weak<Pool>,
    mut conn: Box<H1Conn>,
    upload: Upload,
    method: &Method,
) -> Result<Response<H1Body>, ExchangeError> {
    let mut up = Some(upload);
    let mut upload_failed: Option<H1Error> = None;
    let mut eof = false;
    let head = std::future::poll_fn(|cx| {
        if let Some(u) = up.as_mut() {
            match u.poll(&mut conn.io, cx) {
                Poll::Ready(Ok(())) => up = None,
                Poll::Ready(Err(e)) => {
                    if !u.wrote_any && conn.used > 1 && !matches!(e, H1Error::RequestBody(_)) {
                        // A reused connection the upstream had closed: try another one.
                        if let Some(u) = up.take() {
                            return Poll::Ready(Err(ExchangeError::Unsent(u)));
                        }
                    }
                    if matches!(e, H1Error::RequestBody(_)) {
                        return Poll::Ready(Err(ExchangeError::Failed(e)));
                    }
                    // The upstream may still have answered (e.g. 413 before closing): read on.
                    upload_failed = Some(e);
                    up = None;
                }
                Poll::Pending => {}
            }
        }
        loop {
            match parse_head(&mut conn.rbuf, method) {
                Ok(Some(h)) if h.status.is_informational() && h.status != StatusCode::SWITCHING_PROTOCOLS => continue,
                Ok(Some(h)) => return Poll::Ready(Ok(h)),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(ExchangeError::Failed(e))),
            }
            if eof {
                let e = upload_failed.take().unwrap_or(H1Error::ClosedBeforeHead);
                return Poll::Ready(Err(ExchangeError::Failed(e)));
            }
            match ready!(poll_read_buf(&mut conn.io, &mut conn.rbuf, cx)) {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) => {
                    let e = upload_failed.take().unwrap_or(H1Error::Io(e));
                    return Poll::Ready(Err(ExchangeError::Failed(e)));
                }
            }
        }
    })
    .await?;
    let reusable = head.keep_alive && upload_failed.is_none();
    let mut body = H1Body {
        conn: Some(conn),
        pool,
        decoder: Decoder::new(head.framing),
        upload: up.map(Box::new),
        reusable,
        eof,
        ahead: None,
        trailers: None,
    };
    if body.decoder.is_done() {
        body.finish();
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    Ok(resp)
}

/// Reads into the spare capacity of `buf`.
fn poll_read_buf(io: &mut Stream, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_SIZE);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// A response body read from an HTTP/1.1 upstream connection; gives the
/// connection back to the pool when complete, closes it when dropped early.
pub(crate) struct H1Body {
    conn: Option<Box<H1Conn>>,
    pool: Weak<Pool>,
    decoder: Decoder,
    /// The request body, when the response started before it was sent in full.
    upload: Option<Box<Upload>>,
    reusable: bool,
    eof: bool,
    /// Data decoded ahead (look_ahead), returned by the next poll.
    ahead: Option<Bytes>,
    trailers: Option<Box<HeaderMap>>,
}

impl H1Body {
    /// The response is complete: the connection goes back to the pool or closes.
    fn finish(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        let clean = self.reusable && self.upload.is_none() && conn.rbuf.is_empty() && !self.eof;
        self.upload = None;
        if clean && let Some(p) = self.pool.upgrade() {
            // An idle connection holds no read buffer: the block goes back to the allocator
            // once the response's bytes are written, and the next read on any connection
            // takes the most recently freed one, still in the cache.
            conn.rbuf = BytesMut::new();
            p.give_h1(conn);
        }
    }
}

impl H1Body {
    /// After a data frame: decodes what is already buffered, so the end of the body (and the
    /// connection's return to the pool) is known with the last data, not one poll later.
    fn look_ahead(&mut self) {
        if self.decoder.is_done() {
            self.finish();
            return;
        }
        let Some(conn) = self.conn.as_mut() else { return };
        if conn.rbuf.is_empty() || self.decoder == Decoder::Close {
            return;
        }
        // An error here recurs on the next poll, which reports it.
        match self.decoder.decode(&mut conn.rbuf, false) {
            Ok(Decoded::End) => self.finish(),
            Ok(Decoded::Trailers(t)) => {
                self.trailers = Some(Box::new(t));
                self.finish();
            }
            Ok(Decoded::Data(d)) => self.ahead = Some(d),
            Ok(Decoded::More) | Err(_) => {}
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(d) = this.ahead.take() {
            this.look_ahead();
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if let Some(t) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(*t))));
        }
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            if let Some(u) = this.upload.as_mut() {
                match u.poll(&mut conn.io, cx) {
                    Poll::Ready(Ok(())) => this.upload = None,
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "request body not sent in full; the connection will close");
                        this.upload = None;
                        this.reusable = false;
                    }
                    Poll::Pending => {}
                }
            }
            match this.decoder.decode(&mut conn.rbuf, this.eof) {
                Ok(Decoded::Data(d)) => {
                    this.look_ahead();
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Ok(Decoded::Trailers(t)) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::More) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
            match ready!(poll_read_buf(&mut conn.io, &mut conn.rbuf, cx)) {
                Ok(0) => this.eof = true,
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(H1Error::Io(e)))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() && self.ahead.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) if self.trailers.is_none() => {
                SizeHint::with_exact(n + self.ahead.as_ref().map_or(0, |d| d.len() as u64))
            }
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, method: &Method) -> Result<Option<Head>, H1Error> {
        parse_head(&mut BytesMut::from(raw.as_bytes()), method)
    }

    fn framing(raw: &str) -> (Framing, bool) {
        let h = head(raw, &Method::GET).expect("valid").expect("complete");
        (h.framing, h.keep_alive)
    }

    /// Decodes all of `wire` fed `step` bytes at a time: the data, the trailers, and the bytes left over.
    fn decode_all(mut d: Decoder, wire: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>, usize), H1Error> {
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match d.decode(&mut buf, fed == wire.len())? {
                Decoded::Data(b) => data.extend_from_slice(&b),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => return Ok((data, trailers, buf.len())),
                Decoded::More => {
                    let n = step.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn request_heads_carry_the_framing_of_their_body() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("svc"));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("99"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let get = encode_head(&Method::GET, "/p?q=1", &h, None, Framing::Empty);
        assert_eq!(&get[..], &b"GET /p?q=1 HTTP/1.1\r\nhost: svc\r\nx-a: 1\r\nx-a: 2\r\n\r\n"[..]);
        let post = encode_head(&Method::POST, "/", &HeaderMap::new(), Some("a:80"), Framing::Empty);
        assert_eq!(&post[..], &b"POST / HTTP/1.1\r\nhost: a:80\r\ncontent-length: 0\r\n\r\n"[..]);
        let sized = encode_head(&Method::PUT, "", &HeaderMap::new(), None, Framing::Length(5));
        assert_eq!(&sized[..], &b"PUT / HTTP/1.1\r\ncontent-length: 5\r\n\r\n"[..]);
        let chunked = encode_head(&Method::POST, "/", &HeaderMap::new(), None, Framing::Chunked);
        assert!(chunked.ends_with(b"transfer-encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn response_heads_parse_incrementally_and_share_their_bytes() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Multi: a\r\nx-multi: b\r\n\r\nabc";
        for cut in 0..raw.len() - 3 {
            assert!(head(&raw[..cut], &Method::GET).expect("valid prefix").is_none(), "cut {cut}");
        }
        let mut buf = BytesMut::from(raw.as_bytes());
        let h = parse_head(&mut buf, &Method::GET).expect("valid").expect("complete");
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.headers.get_all("x-multi").iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(h.framing, Framing::Length(3));
        assert!(h.keep_alive);
        assert_eq!(&buf[..], b"abc", "the body stays in the buffer");
    }

    #[test]
    fn long_response_heads_keep_every_field_up_to_the_limit() {
        for fields in [FEW_HEADERS - 1, FEW_HEADERS, FEW_HEADERS + 1, MAX_HEADERS - 1] {
            let mut raw = String::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n");
            for i in 1..=fields {
                raw.push_str(&format!("x-f{i}: v{i}\r\n"));
            }
            raw.push_str("\r\nok");
            let mut buf = BytesMut::from(raw.as_bytes());
            let h = parse_head(&mut buf, &Method::GET).expect("valid").expect("complete");
            assert_eq!(h.headers.len(), fields + 1, "{fields}");
            for i in 1..=fields {
                assert_eq!(h.headers[format!("x-f{i}").as_str()], format!("v{i}").as_str(), "{fields}");
            }
            assert_eq!(h.framing, Framing::Length(2));
            assert_eq!(&buf[..], b"ok");
        }
        let mut raw = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_HEADERS {
            raw.push_str(&format!("x-f{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert!(head(&raw, &Method::GET).is_err(), "more than {MAX_HEADERS} fields");
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        assert_eq!(framing("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), (Framing::Empty, true));
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n"), (Framing::Empty, true));
        assert_eq!(framing("HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n"), (Framing::Empty, true));
        assert_eq!(framing("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"), (Framing::Chunked, true));
        assert_eq!(framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"), (Framing::Chunked, true));
        // Both: chunked wins and the connection is not reused (request smuggling defence).
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n"),
            (Framing::Chunked, false)
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"), (Framing::Close, false));
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), (Framing::Close, false));
        assert_eq!(framing("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n"), (Framing::Length(7), true));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n"),
            (Framing::Length(1), false)
        );
        assert_eq!(framing("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"), (Framing::Length(1), false));
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 1\r\n\r\n"),
            (Framing::Length(1), true)
        );
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", &Method::HEAD).unwrap().unwrap();
        assert_eq!(h.framing, Framing::Empty);
    }

    #[test]
    fn invalid_response_heads_are_errors() {
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(head(raw, &Method::GET).is_err(), "{raw:?}");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD + 1));
        assert!(matches!(head(&huge, &Method::GET), Err(H1Error::HeadTooLarge)));
    }

    #[test]
    fn bodies_decode_whatever_the_read_sizes() {
        let chunked = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 64] {
            let (data, trailers, left) = decode_all(Decoder::ChunkSize, chunked, step).expect("valid");
            assert_eq!(data, b"hello world", "step {step}");
            assert_eq!(trailers.expect("trailers").get("x-trailer").unwrap(), "t");
            assert!(left <= 4, "bytes after the body are not consumed");
            let (data, _, left) = decode_all(Decoder::Length(5), b"helloNEXT", step).expect("valid");
            assert_eq!((data.as_slice(), left.min(4)), (&b"hello"[..], left.min(4)));
            let (data, _, _) = decode_all(Decoder::Close, b"until close", step).expect("valid");
            assert_eq!(data, b"until close");
        }
        let (data, trailers, _) = decode_all(Decoder::ChunkSize, b"0\r\n\r\n", 1).expect("empty chunked body");
        assert!(data.is_empty() && trailers.is_none());
    }

    #[test]
    fn truncated_or_malformed_bodies_are_errors() {
        assert!(matches!(decode_all(Decoder::Length(10), b"short", 4), Err(H1Error::Incomplete)));
        assert!(matches!(decode_all(Decoder::ChunkSize, b"5\r\nhel", 4), Err(H1Error::Incomplete)));
        assert!(matches!(decode_all(Decoder::ChunkSize, b"5\r\nhello\r\n", 4), Err(H1Error::Incomplete)));
        assert!(decode_all(Decoder::ChunkSize, b"zz\r\n", 4).is_err());
        assert!(decode_all(Decoder::ChunkSize, b"5\r\nhelloXX0\r\n\r\n", 4).is_err());
        assert!(decode_all(Decoder::ChunkSize, b"11111111111111111\r\n", 64).is_err(), "more than 64 bits");
        let long_line = vec![b'1'; MAX_CHUNK_LINE + 2];
        assert!(decode_all(Decoder::ChunkSize, &long_line, 64).is_err());
    }

    /// A writer that fails its first write, as a connection the upstream has reset.
    struct ResetOnce {
        failed: bool,
        written: Vec<u8>,
    }

    impl AsyncWrite for ResetOnce {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            if !self.failed {
                self.failed = true;
                return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
            }
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn an_upload_that_reached_no_connection_resumes_whole() {
        // The body's first frames are taken before the first write (head and body go out
        // together); when that write fails they must still be sent on the next connection.
        let frames = [&b"hello "[..], &b"world"[..]].into_iter().map(Bytes::from_static).collect();
        let mut upload = Upload::new(&Method::POST, "/", &HeaderMap::new(), Some("up"), ReqBody::Frames(frames));
        let head = upload.head.clone();
        let mut io = ResetOnce { failed: false, written: Vec::new() };
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(upload.poll(&mut io, &mut cx), Poll::Ready(Err(H1Error::Io(_)))));
        assert!(!upload.wrote_any, "nothing reached the connection");
        assert!(matches!(upload.poll(&mut io, &mut cx), Poll::Ready(Ok(()))));
        let mut want = head.to_vec();
        want.extend_from_slice(b"hello world");
        assert_eq!(String::from_utf8_lossy(&io.written), String::from_utf8_lossy(&want));
        assert!(head.ends_with(b"content-length: 11\r\n\r\n"));
    }
}
