//! Zero-copy TCP proxying on Linux: bytes move socket -> pipe -> socket with
//! `splice(2)` and never enter user space (HAProxy's `option splice-auto`).
//! Used by [`crate::tcp`] when both sides are plain TCP; TLS on either side
//! needs the bytes in user space and takes the copying path.
//!
//! Each direction owns a pipe; it is filled from the source socket only when
//! empty, and drained completely into the destination before the next fill,
//! so a `splice` that would block always means the socket, and tokio's
//! readiness for that socket is what the task waits on. The behaviour is the
//! copying path's: half-closes are passed on, byte counters and the idle
//! watchdog are updated per transfer.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::metrics::TcpSeries;
use crate::tcp::{SpliceError, idle_watchdog, transferred};

/// Bytes moved per `splice` call at most (the pipe is grown to this size when the system allows).
const PIPE_SIZE: usize = 256 * 1024;

/// A non-blocking pipe.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> std::io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill; on success both
        // descriptors are new and owned by nobody else, so OwnedFd may take them.
        #[allow(unsafe_code)]
        let pipe = unsafe {
            if libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Pipe { read: OwnedFd::from_raw_fd(fds[0]), write: OwnedFd::from_raw_fd(fds[1]) }
        };
        // A larger pipe means fewer calls per byte; the default (64 KiB) still works.
        // SAFETY: F_SETPIPE_SZ on a descriptor this struct owns; no pointers involved.
        #[allow(unsafe_code)]
        unsafe {
            libc::fcntl(pipe.write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int);
        }
        Ok(pipe)
    }
}

/// One `splice(2)` call between two descriptors, non-blocking.
fn splice(from: RawFd, to: RawFd, len: usize) -> std::io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (borrowed from a
    // TcpStream or a Pipe the caller holds); null offsets are allowed for sockets and pipes.
    #[allow(unsafe_code)]
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
}

/// Proxies both ways between `a` (downstream) and `b` (upstream) until both directions ended,
/// an error, or `idle` without traffic. Returns (bytes a -> b, bytes b -> a). `Err(None)`: pipes
/// could not be made (descriptor limit); the caller copies instead.
pub(crate) async fn proxy(
    a: &TcpStream,
    b: &TcpStream,
    idle: Duration,
    series: &TcpSeries,
) -> Result<Result<(u64, u64), SpliceError>, std::io::Error> {
    let (up, down) = (Pipe::new()?, Pipe::new()?);
    let start = tokio::time::Instant::now();
    let last = AtomicU64::new(0);
    let copy = async {
        tokio::try_join!(
            direction(a, b, &up, &last, start, &series.received),
            direction(b, a, &down, &last, start, &series.sent)
        )
    };
    Ok(tokio::select! {
        r = copy => r.map_err(SpliceError::Io),
        _ = idle_watchdog(&last, start, idle) => Err(SpliceError::Idle(idle)),
    })
}

/// `src` -> `pipe` -> `dst` until `src` ends; then `dst`'s write half is shut down.
async fn direction(
    src: &TcpStream,
    dst: &TcpStream,
    pipe: &Pipe,
    last: &AtomicU64,
    start: tokio::time::Instant,
    counter: &prometheus_client::metrics::counter::Counter,
) -> std::io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || splice(src.as_raw_fd(), pipe.write.as_raw_fd(), PIPE_SIZE)) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            // Half close: the peer reads EOF; the other direction goes on.
            let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
            return Ok(total);
        }
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || splice(pipe.read.as_raw_fd(), dst.as_raw_fd(), left)) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(m) => left -= m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
        transferred(n as u64, counter, last, start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        (c, l.accept().await.unwrap().0)
    }

    #[tokio::test]
    async fn moves_bytes_both_ways_passes_half_close_and_counts() {
        let (client, proxy_down) = pair().await;
        let (proxy_up, server) = pair().await;
        let s = crate::metrics::Metrics::new().tcp_opened(&crate::metrics::TcpView::default());
        let task = tokio::spawn({
            let s = s.clone();
            async move { proxy(&proxy_down, &proxy_up, Duration::from_secs(5), &s).await.unwrap().unwrap() }
        });
        // More than a pipe's worth, so the pipe is filled and drained many times.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        crate::tcp::checks::exchange_with_half_close(client, server, &big).await;
        assert_eq!(task.await.unwrap(), (3_000_000, 22));
        assert_eq!((s.received.get(), s.sent.get()), (3_000_000, 22));
    }

    #[tokio::test]
    async fn ends_when_idle() {
        let (mut client, proxy_down) = pair().await;
        let (proxy_up, _server) = pair().await;
        let t = tokio::spawn(async move {
            let s = crate::metrics::Metrics::new().tcp_opened(&crate::metrics::TcpView::default());
            proxy(&proxy_down, &proxy_up, Duration::from_millis(300), &s).await.unwrap()
        });
        crate::tcp::checks::ends_when_idle(&mut client, t).await;
    }
}
