//! End to end: weir's HTTP/1.1 upstream client (crates/proxy/src/pool/h1.rs)
//! against a scripted upstream that writes raw HTTP/1.1: connection reuse and
//! its limits, every response framing, 1xx, request bodies of every framing,
//! early responses, truncated and invalid responses.
#![allow(clippy::unwrap_used)] // test helpers

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream saw of one request.
#[derive(Clone, Debug)]
struct Got {
    framing: &'static str,
    body: Vec<u8>,
}

struct Upstream {
    port: u16,
    got: Arc<std::sync::Mutex<Vec<Got>>>,
    /// Connections closed by the upstream.
    closed: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let (g, c) = (got.clone(), closed.clone());
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                n += 1;
                let (g, c) = (g.clone(), c.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, n, g).await;
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Upstream { port, got, closed }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn last(&self) -> Got {
        self.got().pop().expect("a request reached the upstream")
    }
}

/// Reads until `buf` holds a complete request head; its length, or None at end of stream.
async fn read_head(sock: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        if let Ok(httparse::Status::Complete(n)) = httparse::Request::new(&mut headers).parse(buf) {
            return Some(n);
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn fill(sock: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> bool {
    while buf.len() < want {
        let mut chunk = [0u8; 65536];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// Reads a chunked body from the front of `buf` (reading more as needed).
async fn read_chunked(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if !fill(sock, buf, buf.len() + 1).await {
                return None;
            }
        };
        let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // No trailers from weir's encoder here: the final CRLF.
            if !fill(sock, buf, 2).await {
                return None;
            }
            buf.drain(..2);
            return Some(body);
        }
        if !fill(sock, buf, size + 2).await {
            return None;
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

async fn serve(mut sock: TcpStream, conn: usize, got: Arc<std::sync::Mutex<Vec<Got>>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some(head_len) = read_head(&mut sock, &mut buf).await else { return Ok(()) };
        let (path, length, chunked) = {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            req.parse(&buf).unwrap();
            let length = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse::<usize>().unwrap());
            let chunked = req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
            (req.path.unwrap().to_string(), length, chunked)
        };
        buf.drain(..head_len);
        if path == "/early" {
            // Answer before reading the body, then drain it.
            sock.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!")
                .await?;
        }
        let (framing, body) = if chunked {
            ("chunked", read_chunked(&mut sock, &mut buf).await.unwrap_or_default())
        } else if let Some(n) = length {
            fill(&mut sock, &mut buf, n).await;
            ("length", buf.drain(..n.min(buf.len())).collect())
        } else {
            ("none", Vec::new())
        };
        got.lock().unwrap().push(Got { framing, body: body.clone() });
        // Responses after which the upstream closes the connection.
        let last: Option<&[u8]> = match path.as_str() {
            "/early" => Some(b""),
            "/until-close" => Some(b"HTTP/1.1 200 OK\r\n\r\nuntil close"),
            "/http10" => Some(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            "/close" => Some(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"),
            // Keep-alive by the headers, closed right after: the proxy finds out when idle.
            "/quietly-close" => Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            "/truncated" => Some(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"),
            "/garbage" => Some(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
            _ => None,
        };
        if let Some(last) = last {
            sock.write_all(last).await?;
            return Ok(());
        }
        let reply: Vec<u8> = match path.as_str() {
            "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n".to_vec(),
            "/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            "/no-content" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            _ => {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-conn: {conn}\r\nx-framing: {framing}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(&body);
                r
            }
        };
        sock.write_all(&reply).await?;
    }
}

/// `svc` on `port` with the scripted upstream as its one endpoint, no retries, and a
/// DestinationRule with `traffic_policy` when one is given.
fn config(port: u16, upstream: u16, traffic_policy: Option<&str>) -> String {
    let mut yaml = service("svc", port, "HTTP", &[(upstream, "v1")]);
    yaml += &vs("svc", "  - route: [{destination: {host: svc}}]\n    retries: {attempts: 0}");
    if let Some(policy) = traffic_policy {
        yaml += &dr("svc", policy);
    }
    yaml
}

/// One raw HTTP/1.1 exchange with the proxy: the status line and whatever else arrives
/// until the response is complete or the proxy closes the connection.
async fn raw(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_until_the_upstream_ends_them() {
    let up = Upstream::start().await;
    let port = free_port();
    let _proxy = Proxy::start(&config(port, up.port, None)).await;
    let mut c = Client::h1(port).await;
    let conns: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let r = c.get("svc", "/echo", &[]).await;
            assert_eq!(r.status, 200);
            v.push(r.header("x-conn").unwrap());
        }
        v
    };
    assert!(conns.iter().all(|x| *x == conns[0]), "one upstream connection: {conns:?}");

    // `Connection: close`, HTTP/1.0 and a body delimited by the close each end the connection.
    for path in ["/close", "/http10", "/until-close"] {
        let r = c.get("svc", path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        let next = c.get("svc", "/echo", &[]).await;
        assert_eq!(next.status, 200, "{path}");
        assert_ne!(next.header("x-conn").unwrap(), conns[0], "{path} ended the connection");
    }
    assert_eq!(c.get("svc", "/until-close", &[]).await.body, "until close");

    // An idle connection the upstream closed is noticed before it is used again.
    let before = up.closed.load(Ordering::SeqCst);
    assert_eq!(c.get("svc", "/quietly-close", &[]).await.status, 200);
    wait_for("the upstream to close", || up.closed.load(Ordering::SeqCst) > before).await;
    let used = up.got().len();
    let r = c.get("svc", "/echo", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.got().len(), used + 1, "sent once, on a new connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_framings_and_interim_responses() {
    let up = Upstream::start().await;
    let port = free_port();
    let _proxy = Proxy::start(&config(port, up.port, None)).await;
    let mut c = Client::h1(port).await;
    let r = c.get("svc", "/chunked", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "hello world"));
    let r = c.get("svc", "/continue", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "1xx before the response are skipped");
    let r = c.get("svc", "/no-content", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    // The connection survived all three.
    let a = c.get("svc", "/echo", &[]).await.header("x-conn");
    let b = c.get("svc", "/echo", &[]).await.header("x-conn");
    assert_eq!(a, b);
    // The same chunked response to an HTTP/2 client.
    let mut h2 = Client::h2(port).await;
    assert_eq!(h2.get("svc", "/chunked", &[]).await.body, "hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_of_every_framing_arrive_intact() {
    let up = Upstream::start().await;
    let port = free_port();
    let _proxy = Proxy::start(&config(port, up.port, None)).await;

    // Content-Length, large enough for partial writes.
    let big: String = (0..200_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let r = Client::h1(port).await.send("POST", "svc", "/echo", &[], &big).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), big.len());
    let got = up.last();
    assert_eq!((got.framing, got.body.len()), ("length", big.len()));
    assert_eq!(got.body, big.as_bytes());

    // Chunked downstream: chunked upstream (the length is not known up front).
    let out = raw(
        port,
        b"POST /echo HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("x-framing: chunked") && out.ends_with("abcdefg"), "{out}");
    assert_eq!(up.last().body, b"abcdefg");

    // No body: no framing header on GET, `content-length: 0` on POST.
    assert_eq!(Client::h1(port).await.get("svc", "/echo", &[]).await.header("x-framing").unwrap(), "none");
    let r = Client::h1(port).await.send("POST", "svc", "/echo", &[], "").await;
    assert_eq!(r.header("x-framing").unwrap(), "length");

    // HTTP/2 downstream with a body and no content-length: chunked upstream.
    let r = Client::h2(port).await.send("PUT", "svc", "/echo", &[], "from h2").await;
    assert_eq!((r.status, r.body.as_str()), (200, "from h2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_truncated_and_invalid_responses() {
    let up = Upstream::start().await;
    let port = free_port();
    let _proxy = Proxy::start(&config(port, up.port, None)).await;

    // An answer before the request body was sent is relayed (the client is still sending).
    let mut req = b"POST /early HTTP/1.1\r\nhost: svc\r\ncontent-length: 4194304\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'x'; 1000]);
    let out = raw(port, &req).await;
    assert!(out.starts_with("HTTP/1.1 413") && out.ends_with("big!"), "{out}");

    // A body cut short: the client gets what came and a closed connection, never a full reply.
    let out = raw(port, b"GET /truncated HTTP/1.1\r\nhost: svc\r\n\r\n").await;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(body.len() < 10, "{out}");
    assert_eq!(Client::h1(port).await.get("svc", "/echo", &[]).await.status, 200);

    // Not HTTP at all: 503, reset before headers (UC), as Envoy answers a protocol error.
    let r = Client::h1(port).await.get("svc", "/garbage", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("reset"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_after_idle_timeout_and_max_requests() {
    let up = Upstream::start().await;
    let port = free_port();
    let policy = "    connectionPool:\n      http: {idleTimeout: 200ms, maxRequestsPerConnection: 2}";
    let _proxy = Proxy::start(&config(port, up.port, Some(policy))).await;
    let mut c = Client::h1(port).await;
    let a = c.get("svc", "/echo", &[]).await.header("x-conn");
    let b = c.get("svc", "/echo", &[]).await.header("x-conn");
    let third = c.get("svc", "/echo", &[]).await.header("x-conn");
    assert_eq!(a, b);
    assert_ne!(b, third, "maxRequestsPerConnection: 2");
    // The reaper closes the idle connection after 200 ms, with nothing else happening.
    let closed = up.closed.load(Ordering::SeqCst);
    wait_for("the idle connection to be closed", || up.closed.load(Ordering::SeqCst) > closed).await;
}
