//! Write coalescing for downstream HTTP/2 connections.
//!
//! h2 writes every DATA frame of 256 bytes or more with a `writev` of its own (it chains the
//! payload behind the frame head instead of copying it, and takes no further frame until that
//! write is done), so a connection answering 30 streams in one pass made 30 system calls.
//! [`Coalesce`] copies what an HTTP/2 connection writes into one buffer and sends it with one
//! write per pass of the connection, as nginx and HAProxy do with their output buffers.
//!
//! When the buffered bytes go out: h2 flushes after each frame it chains and once more at the
//! end of a pass, and the two cannot be told apart. So a flush only schedules the send (it wakes
//! the connection's task), and the bytes go out at the start of the connection's next pass, on
//! its first read, which every pass of an open h2 connection makes; a full buffer and a shutdown
//! send at once. HTTP/1.1 connections (hyper already writes a response with one `writev`) and
//! anything that is not the HTTP/2 client preface pass straight through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes held back before a write is forced; also the size from which a write goes straight to
/// the socket. h2's own write buffer has the same size.
const CAPACITY: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Reading the connection's first bytes; this many matched the HTTP/2 preface so far.
    Sniffing(u8),
    /// Not HTTP/2 (or not yet known): every call goes to the inner stream.
    Direct,
    /// HTTP/2: writes are copied into `out` and sent once per pass.
    Batch,
}

/// A downstream connection's byte stream, coalescing writes once it is known to carry HTTP/2.
pub(crate) struct Coalesce<I> {
    io: I,
    mode: Mode,
    /// Bytes accepted from the writer and not yet sent; `sent` of them from the front are.
    out: Vec<u8>,
    sent: usize,
    /// A flush scheduled the send of `out` (the task was woken once for it).
    scheduled: bool,
}

impl<I> Coalesce<I> {
    pub(crate) fn new(io: I) -> Coalesce<I> {
        Coalesce { io, mode: Mode::Sniffing(0), out: Vec::new(), sent: 0, scheduled: false }
    }

    /// Follows the HTTP/2 preface through the connection's first bytes.
    fn sniff(&mut self, new: &[u8]) {
        let Mode::Sniffing(seen) = self.mode else { return };
        if new.is_empty() {
            self.mode = Mode::Direct;
            return;
        }
        let seen = usize::from(seen);
        let n = new.len().min(PREFACE.len() - seen);
        self.mode = if new[..n] != PREFACE[seen..seen + n] {
            Mode::Direct
        } else if seen + n == PREFACE.len() {
            Mode::Batch
        } else {
            // n < 24 - seen here, so the sum fits a u8.
            Mode::Sniffing((seen + n) as u8)
        };
    }
}

impl<I: AsyncWrite + Unpin> Coalesce<I> {
    /// Sends everything held back, then flushes the inner stream (a TLS stream may keep records).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        self.scheduled = false;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Makes room for `len` more bytes: sends what is held back when they would not fit.
    /// `Ready(true)`: the bytes are to be copied; `Ready(false)`: they are large enough to be
    /// written directly (nothing is held back then).
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if !self.out.is_empty() && self.out.len() + len > CAPACITY {
            ready!(self.poll_send(cx))?;
        }
        Poll::Ready(Ok(!(self.out.is_empty() && len >= CAPACITY)))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.out.is_empty() {
            // A new pass: what the last one wrote goes out first. A full socket does not hold up
            // reading; its waker is registered and the next pass continues the send.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if matches!(this.mode, Mode::Sniffing(_)) {
            let filled = buf.filled();
            this.sniff(&filled[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Coalesce<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.mode != Mode::Batch || !ready!(this.poll_room(cx, buf.len()))? {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        if this.mode != Mode::Batch || !ready!(this.poll_room(cx, len))? {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        this.out.reserve(len);
        for b in bufs {
            this.out.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        // Copying makes vectored writes as cheap as any; h2 then chains payloads of 256 bytes
        // and more instead of copying them into its own buffer first.
        self.mode == Mode::Batch || self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.out.is_empty() {
            return Pin::new(&mut this.io).poll_flush(cx);
        }
        if !this.scheduled {
            // The send happens on the connection's next pass, which this wake-up guarantees.
            this.scheduled = true;
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::*;

    /// An inner stream that records each write it is given.
    #[derive(Default)]
    struct Recorder {
        input: Vec<u8>,
        writes: Vec<Vec<u8>>,
        /// Writes return `Pending` while set.
        full: bool,
        shut: bool,
    }

    impl AsyncRead for Recorder {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if this.input.is_empty() {
                return Poll::Pending;
            }
            let n = this.input.len().min(buf.remaining());
            buf.put_slice(&this.input[..n]);
            this.input.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.full {
                return Poll::Pending;
            }
            this.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    struct Harness {
        io: Coalesce<Recorder>,
        wakes: Arc<CountingWaker>,
        waker: Waker,
    }

    impl Harness {
        /// A stream whose peer first sent `first`.
        fn new(first: &[u8]) -> Harness {
            let wakes = Arc::new(CountingWaker::default());
            let waker = Waker::from(wakes.clone());
            let io = Coalesce::new(Recorder { input: first.to_vec(), ..Recorder::default() });
            let mut h = Harness { io, wakes, waker };
            while !h.io.io.input.is_empty() {
                assert!(h.read().is_ready(), "the first bytes are read at once");
            }
            h
        }
        fn read(&mut self) -> Poll<io::Result<Vec<u8>>> {
            let mut space = [0u8; 5];
            let mut buf = ReadBuf::new(&mut space);
            let waker = self.waker.clone();
            let mut cx = Context::from_waker(&waker);
            Pin::new(&mut self.io).poll_read(&mut cx, &mut buf).map_ok(|()| buf.filled().to_vec())
        }
        fn write(&mut self, data: &[u8]) -> Poll<io::Result<usize>> {
            let waker = self.waker.clone();
            Pin::new(&mut self.io).poll_write(&mut Context::from_waker(&waker), data)
        }
        fn flush(&mut self) -> Poll<io::Result<()>> {
            let waker = self.waker.clone();
            Pin::new(&mut self.io).poll_flush(&mut Context::from_waker(&waker))
        }
        fn writes(&self) -> Vec<usize> {
            self.io.io.writes.iter().map(Vec::len).collect()
        }
        fn wakes(&self) -> usize {
            self.wakes.0.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn http1_connections_write_straight_through() {
        let mut h = Harness::new(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(h.io.mode, Mode::Direct);
        assert!(matches!(h.write(&[b'a'; 300]), Poll::Ready(Ok(300))));
        assert!(matches!(h.write(&[b'b'; 300]), Poll::Ready(Ok(300))));
        assert_eq!(h.writes(), [300, 300]);
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        assert_eq!(h.wakes(), 0);
    }

    #[test]
    fn a_prefix_of_the_preface_that_then_differs_is_not_http2() {
        // "PRI * HTTP/1.1": a method named PRI, read in pieces of five bytes.
        let h = Harness::new(b"PRI * HTTP/1.1\r\n\r\n");
        assert_eq!(h.io.mode, Mode::Direct);
    }

    #[test]
    fn http2_writes_of_one_pass_go_out_in_one_write_on_the_next_pass() {
        // The preface arrives in pieces of five bytes (the harness reads that much at a time).
        let mut h = Harness::new(PREFACE);
        assert_eq!(h.io.mode, Mode::Batch);
        for _ in 0..3 {
            assert!(matches!(h.write(&[b'x'; 1033]), Poll::Ready(Ok(1033))));
            assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        }
        assert!(h.writes().is_empty(), "nothing is sent during the pass");
        assert_eq!(h.wakes(), 1, "the first flush schedules one more pass");
        // The next pass starts with a read: the three frames go out together.
        assert!(h.read().is_pending());
        assert_eq!(h.writes(), [3 * 1033]);
        assert!(h.io.out.is_empty());
        // A later pass schedules itself again.
        assert!(matches!(h.write(b"y"), Poll::Ready(Ok(1))));
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        assert_eq!(h.wakes(), 2);
    }

    #[test]
    fn a_full_buffer_is_sent_before_more_is_taken_and_large_writes_go_straight() {
        let mut h = Harness::new(PREFACE);
        let chunk = [b'x'; 6000];
        for _ in 0..3 {
            assert!(matches!(h.write(&chunk), Poll::Ready(Ok(6000))));
        }
        // 18,000 > CAPACITY: the first two chunks went out when the third arrived.
        assert_eq!(h.writes(), [12000]);
        assert!(h.read().is_pending());
        assert_eq!(h.writes(), [12000, 6000]);
        let big = vec![b'z'; CAPACITY];
        assert!(matches!(h.write(&big), Poll::Ready(Ok(n)) if n == CAPACITY));
        assert_eq!(h.writes(), [12000, 6000, CAPACITY], "a write of CAPACITY bytes is not copied");
    }

    #[test]
    fn a_full_socket_holds_back_writes_but_not_reads() {
        let mut h = Harness::new(PREFACE);
        assert!(matches!(h.write(&[b'x'; 10_000]), Poll::Ready(Ok(10_000))));
        h.io.io.full = true;
        // The buffer cannot take 10,000 more while the socket takes nothing.
        assert!(h.write(&[b'y'; 10_000]).is_pending());
        h.io.io.input = b"hello".to_vec();
        assert!(matches!(h.read(), Poll::Ready(Ok(ref d)) if d == b"hello"));
        h.io.io.full = false;
        assert!(matches!(h.write(&[b'y'; 10_000]), Poll::Ready(Ok(10_000))));
        assert_eq!(h.writes(), [10_000]);
    }

    #[test]
    fn shutdown_sends_what_is_held_back_first() {
        let mut h = Harness::new(PREFACE);
        assert!(matches!(h.write(b"goaway"), Poll::Ready(Ok(6))));
        let waker = h.waker.clone();
        assert!(matches!(Pin::new(&mut h.io).poll_shutdown(&mut Context::from_waker(&waker)), Poll::Ready(Ok(()))));
        assert_eq!(h.writes(), [6]);
        assert!(h.io.io.shut);
    }
}
