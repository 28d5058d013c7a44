//! Message bodies of the data path.
//!
//! * [`ReqBody`]: what goes upstream. A downstream body is read through a
//!   [`Replay`] that forwards frames as they arrive (never holding a stream
//!   back) while keeping a copy up to a limit, so a retry or a mirror can send
//!   the same bytes again. Past the limit the copy is dropped and the request
//!   can no longer be retried (Envoy's buffer-limit rule).
//! * [`RespBody`]: what goes downstream. It counts bytes, watches the route
//!   deadline while the upstream body streams, and records the finished
//!   request (metrics, access log) when the body ends or is dropped.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::local_reply::Flags;
use crate::pool::UpBody;
use crate::record::Exchange;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How much of a request body is kept for retries and mirrors.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// The downstream request body, shared by every attempt and mirror of one request.
pub struct Replay {
    state: Mutex<ReplayState>,
    limit: usize,
    content_length: Option<u64>,
}

struct ReplayState {
    source: Option<Incoming>,
    /// Data frames read so far (all of them while `recording`).
    chunks: Vec<Bytes>,
    /// Number of data frames read from the source.
    seq: usize,
    recording: bool,
    kept: usize,
    bytes: u64,
    trailers: Option<HeaderMap>,
    /// The source ended (or failed).
    ended: bool,
    failed: bool,
    /// Readers waiting for the next frame of the source.
    waiters: Vec<Waker>,
}

impl Replay {
    /// Wraps `source`; `limit` bytes are kept for replays (0: forward only).
    pub fn new(source: Incoming, limit: usize, content_length: Option<u64>) -> Arc<Replay> {
        Arc::new(Replay {
            state: Mutex::new(ReplayState {
                source: Some(source),
                chunks: Vec::new(),
                seq: 0,
                recording: true,
                kept: 0,
                bytes: 0,
                trailers: None,
                ended: false,
                failed: false,
                waiters: Vec::new(),
            }),
            limit,
            content_length,
        })
    }

    fn lock(&self) -> MutexGuard<'_, ReplayState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A body that went upstream by other means, kept only for its size (`bytes`): what a
    /// client sent through an upgraded (WebSocket) connection.
    pub(crate) fn forwarded(bytes: u64) -> Arc<Replay> {
        Arc::new(Replay {
            state: Mutex::new(ReplayState {
                source: None,
                chunks: Vec::new(),
                seq: 0,
                recording: false,
                kept: 0,
                bytes,
                trailers: None,
                ended: true,
                failed: false,
                waiters: Vec::new(),
            }),
            limit: 0,
            content_length: Some(bytes),
        })
    }

    /// A reader from the first byte.
    pub fn reader(self: &Arc<Replay>) -> ReqBody {
        ReqBody::Replay(ReplayReader { shared: self.clone(), next: 0, sent: 0, trailers_sent: false })
    }

    /// Whether a new reader can still get the whole body.
    pub fn replayable(&self) -> bool {
        let st = self.lock();
        st.recording && !st.failed
    }

    /// Bytes read from the downstream so far.
    pub fn bytes_read(&self) -> u64 {
        self.lock().bytes
    }
}

/// One reader of a [`Replay`].
pub struct ReplayReader {
    shared: Arc<Replay>,
    /// The sequence number of the next data frame this reader needs.
    next: usize,
    sent: u64,
    trailers_sent: bool,
}

#[derive(Debug)]
struct BodyError(&'static str);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for BodyError {}

impl ReplayReader {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let ReplayReader { shared, next, sent, trailers_sent } = self;
        let mut st = shared.lock();
        if *next < st.seq {
            if !st.recording {
                return Poll::Ready(Some(Err(Box::new(BodyError("request body is no longer buffered")))));
            }
            let b = st.chunks[*next].clone();
            *next += 1;
            *sent += b.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if st.ended {
            if st.failed {
                return Poll::Ready(Some(Err(Box::new(BodyError("downstream request body failed")))));
            }
            if !*trailers_sent && let Some(t) = &st.trailers {
                *trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
            }
            return Poll::Ready(None);
        }
        let Some(source) = st.source.as_mut() else { return Poll::Ready(None) };
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => {
                if !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    st.waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
            Poll::Ready(polled) => {
                let out = match polled {
                    None => {
                        st.ended = true;
                        st.source = None;
                        None
                    }
                    Some(Err(e)) => {
                        st.ended = true;
                        st.failed = true;
                        st.source = None;
                        Some(Err(Box::new(e) as BoxError))
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            st.seq += 1;
                            st.bytes += data.len() as u64;
                            if st.recording {
                                if st.kept + data.len() > shared.limit {
                                    st.recording = false;
                                    st.chunks = Vec::new();
                                } else {
                                    st.kept += data.len();
                                    st.chunks.push(data.clone());
                                }
                            }
                            *next = st.seq;
                            *sent += data.len() as u64;
                            Some(Ok(Frame::data(data)))
                        }
                        Err(frame) => match frame.into_trailers() {
                            Ok(t) => {
                                st.trailers = Some(t.clone());
                                st.ended = true;
                                st.source = None;
                                *trailers_sent = true;
                                Some(Ok(Frame::trailers(t)))
                            }
                            // Unknown frame kinds are dropped.
                            Err(_) => {
                                cx.waker().wake_by_ref();
                                return Poll::Pending;
                            }
                        },
                    },
                };
                for w in st.waiters.drain(..) {
                    if !w.will_wake(cx.waker()) {
                        w.wake();
                    }
                }
                Poll::Ready(out)
            }
        }
    }

    fn is_end(&self) -> bool {
        let st = self.shared.lock();
        st.ended && self.next >= st.seq && (self.trailers_sent || st.trailers.is_none())
    }
}

/// A request body sent upstream.
pub enum ReqBody {
    Empty,
    Replay(ReplayReader),
    /// Data frames given up front (unit tests of the upstream clients).
    #[cfg(test)]
    Frames(std::collections::VecDeque<Bytes>),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Replay(r) => r.poll(cx),
            #[cfg(test)]
            ReqBody::Frames(f) => Poll::Ready(f.pop_front().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Replay(r) => r.is_end(),
            #[cfg(test)]
            ReqBody::Frames(f) => f.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            #[cfg(test)]
            ReqBody::Frames(f) => SizeHint::with_exact(f.iter().map(|b| b.len() as u64).sum()),
            ReqBody::Replay(r) => match r.shared.content_length {
                Some(len) => SizeHint::with_exact(len.saturating_sub(r.sent)),
                None => SizeHint::default(),
            },
        }
    }
}

enum RespInner {
    Empty,
    Full(Option<Bytes>),
    Upstream(UpBody),
}

/// A response body sent downstream.
pub struct RespBody {
    inner: RespInner,
    bytes: u64,
    exchange: Option<Box<Exchange>>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl RespBody {
    pub fn empty() -> RespBody {
        RespBody { inner: RespInner::Empty, bytes: 0, exchange: None, deadline: None }
    }
    pub fn full(b: Bytes) -> RespBody {
        if b.is_empty() {
            return RespBody::empty();
        }
        RespBody { inner: RespInner::Full(Some(b)), bytes: 0, exchange: None, deadline: None }
    }
    pub(crate) fn upstream(b: UpBody) -> RespBody {
        RespBody { inner: RespInner::Upstream(b), bytes: 0, exchange: None, deadline: None }
    }

    /// Records `exchange` when this body ends.
    pub(crate) fn attach(&mut self, exchange: Box<Exchange>) {
        self.exchange = Some(exchange);
    }

    /// Fails the body (a reset downstream) when `deadline` passes first.
    pub(crate) fn set_deadline(&mut self, deadline: tokio::time::Instant) {
        self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline)));
    }

    fn finish(&mut self, flags: Flags, grpc_status: Option<&HeaderMap>) {
        if let Some(x) = self.exchange.take() {
            x.finish(self.bytes, flags, grpc_status);
        }
    }

    fn inner_end(&self) -> bool {
        match &self.inner {
            RespInner::Empty => true,
            RespInner::Full(b) => b.is_none(),
            RespInner::Upstream(b) => b.is_end_stream(),
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(d) = this.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            this.deadline = None;
            this.inner = RespInner::Empty;
            this.finish(Flags::UT, None);
            return Poll::Ready(Some(Err(Box::new(BodyError("upstream request timeout")))));
        }
        let out = match &mut this.inner {
            RespInner::Empty => None,
            RespInner::Full(b) => b.take().map(|b| Ok(Frame::data(b))),
            RespInner::Upstream(b) => match Pin::new(b).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => None,
                Poll::Ready(Some(Ok(f))) => {
                    if let Some(t) = f.trailers_ref() {
                        let t = t.clone();
                        this.finish(Flags::NONE, Some(&t));
                    }
                    Some(Ok(f))
                }
                Poll::Ready(Some(Err(e))) => {
                    this.inner = RespInner::Empty;
                    this.finish(Flags::UR, None);
                    return Poll::Ready(Some(Err(e)));
                }
            },
        };
        match &out {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if this.inner_end() {
                    this.finish(Flags::NONE, None);
                }
            }
            Some(Err(_)) => {}
            None => this.finish(Flags::NONE, None),
        }
        Poll::Ready(out)
    }

    fn is_end_stream(&self) -> bool {
        self.inner_end()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            RespInner::Empty => SizeHint::with_exact(0),
            RespInner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RespInner::Upstream(b) => b.size_hint(),
        }
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        if self.exchange.is_some() {
            // Dropped before the end: the client went away (or the body was never read, e.g. HEAD).
            let flags = if self.inner_end() { Flags::NONE } else { Flags::DC };
            self.finish(flags, None);
        }
    }
}
