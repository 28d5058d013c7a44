//! End to end: WebSocket upgrades through weir, with a WebSocket echo
//! backend and client written on plain tokio (RFC 6455 handshake and
//! text/close frames, nothing more).
#![allow(clippy::unwrap_used)] // test helpers

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The handshake's magic value (RFC 6455 section 1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The key of RFC 6455's example; the server must answer `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const TEXT: u8 = 1;
const CLOSE: u8 = 8;
/// Bound on every read, so a broken tunnel fails the test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes(word.try_into().unwrap());
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (o, x) in out.chunks_mut(4).zip(h) {
        o.copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = u32::from(c[0]) << 16 | u32::from(*c.get(1).unwrap_or(&0)) << 8 | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() { char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]) } else { '=' });
        }
    }
    out
}

fn accept_key(key: &str) -> String {
    base64(&sha1(format!("{key}{GUID}").as_bytes()))
}

#[test]
fn handshake_accept_key_is_rfc_6455s() {
    assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

/// Reads an HTTP/1.1 message head (up to the blank line), byte by byte so no frame is consumed.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tokio::time::timeout(IO_TIMEOUT, s.read_u8()).await.expect("head in time").expect("head");
        head.push(b);
    }
    String::from_utf8(head).unwrap()
}

/// A header of a message head (first value, name case-insensitive).
fn head_header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

fn status_of(head: &str) -> u16 {
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {head:?}"))
}

/// Writes one final frame; clients mask, servers do not. Returns the frame's size on the wire.
async fn write_frame(s: &mut TcpStream, opcode: u8, payload: &[u8], masked: bool) -> usize {
    let mut f = vec![0x80 | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    s.write_all(&f).await.unwrap();
    f.len()
}

/// One frame: opcode, whether it was masked, payload; `None` at the end of the stream.
async fn read_frame(s: &mut TcpStream) -> Option<(u8, bool, Vec<u8>)> {
    tokio::time::timeout(IO_TIMEOUT, async {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.ok()?;
        let (opcode, masked) = (h[0] & 0x0f, h[1] & 0x80 != 0);
        let len = match h[1] & 0x7f {
            126 => usize::from(s.read_u16().await.ok()?),
            127 => usize::try_from(s.read_u64().await.ok()?).ok()?,
            n => usize::from(n),
        };
        let mut key = [0u8; 4];
        if masked {
            s.read_exact(&mut key).await.ok()?;
        }
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.ok()?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        Some((opcode, masked, payload))
    })
    .await
    .expect("frame in time")
}

/// A WebSocket echo server: answers text frames with `echo: <text>`, closes on close.
/// Requests for `/deny` get a plain `403` instead of the upgrade.
struct WsBackend {
    port: u16,
    /// Request heads as received.
    heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsBackend {
    async fn start() -> WsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(ws_echo(s, seen.clone()));
            }
        });
        WsBackend { port, heads, task }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn ws_echo(mut s: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let head = read_head(&mut s).await;
    heads.lock().unwrap().push(head.clone());
    if head.starts_with("GET /deny") {
        let _ = s.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 6\r\nx-backend: ws\r\n\r\ndenied").await;
        return;
    }
    let upgrade = head_header(&head, "upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let Some(key) = head_header(&head, "sec-websocket-key").filter(|_| upgrade) else {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
        return;
    };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-accept: {}\r\nx-backend: ws\r\n\r\n",
        accept_key(&key)
    );
    if s.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    while let Some((opcode, masked, payload)) = read_frame(&mut s).await {
        if !masked {
            return; // clients must mask (RFC 6455 5.1): fail the connection
        }
        match opcode {
            TEXT => {
                let reply = [b"echo: ", &payload[..]].concat();
                write_frame(&mut s, TEXT, &reply, false).await;
            }
            CLOSE => {
                write_frame(&mut s, CLOSE, &payload, false).await;
                return;
            }
            _ => {}
        }
    }
}

/// Connects to weir on `port` and sends a WebSocket upgrade request; returns the socket
/// and the response head.
async fn handshake(port: u16, host: &str, target: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nhost: {host}\r\nconnection: keep-alive, Upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-key: {KEY}\r\nsec-websocket-version: 13\r\nuser-agent: ws-test\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    (s, head)
}

/// Sends `text` and expects its echo; returns (bytes sent, bytes received) on the wire.
async fn exchange_text(s: &mut TcpStream, text: &str) -> (usize, usize) {
    let sent = write_frame(s, TEXT, text.as_bytes(), true).await;
    let (opcode, masked, payload) = read_frame(s).await.expect("an echo frame");
    assert_eq!((opcode, masked), (TEXT, false));
    assert_eq!(String::from_utf8(payload.clone()).unwrap(), format!("echo: {text}"));
    let header = if payload.len() < 126 { 2 } else { 4 };
    (sent, header + payload.len())
}

/// The value of the first metric line starting with `prefix` that contains `has`.
fn metric(text: &str, prefix: &str, has: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix) && l.contains(has))?.rsplit(' ').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_goes_through_weir() {
    let b = WsBackend::start().await;
    let port = free_port();
    let yaml = format!(
        "{}{}",
        service("ws", port, "HTTP", &[(b.port, "v1")]),
        vs(
            "ws",
            "  - route: [{destination: {host: ws}}]
    timeout: 300ms
    headers:
      request: {set: {x-route: chat}}
      response: {set: {x-resp: seen}}"
        ),
    );
    let proxy = Proxy::start(&yaml).await;

    let (mut s, head) = handshake(port, "ws", "/chat?room=1").await;
    assert_eq!(status_of(&head), 101, "{head}");
    assert_eq!(head_header(&head, "sec-websocket-accept").as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    assert_eq!(head_header(&head, "upgrade").as_deref(), Some("websocket"));
    assert!(head_header(&head, "connection").is_some_and(|c| c.eq_ignore_ascii_case("upgrade")), "{head}");
    assert_eq!(head_header(&head, "x-backend").as_deref(), Some("ws"));
    assert_eq!(head_header(&head, "x-resp").as_deref(), Some("seen"), "response header operations apply to the 101");
    assert_eq!(head_header(&head, "server").as_deref(), Some("envoy"), "{head}");

    let upstream = b.heads();
    assert_eq!(upstream.len(), 1);
    let up = &upstream[0];
    assert!(up.starts_with("GET /chat?room=1 HTTP/1.1\r\n"), "{up}");
    assert_eq!(head_header(up, "upgrade").as_deref(), Some("websocket"));
    assert!(head_header(up, "connection").is_some_and(|c| c.eq_ignore_ascii_case("upgrade")), "{up}");
    assert_eq!(head_header(up, "sec-websocket-key").as_deref(), Some(KEY));
    assert_eq!(head_header(up, "sec-websocket-version").as_deref(), Some("13"));
    assert_eq!(head_header(up, "x-route").as_deref(), Some("chat"));
    assert!(head_header(up, "x-request-id").is_some(), "{up}");

    let (mut sent, mut received) = (0, 0);
    for text in ["hello", "second", &"long ".repeat(40)] {
        let (s1, r1) = exchange_text(&mut s, text).await;
        sent += s1;
        received += r1;
    }
    // The tunnel is counted as an open connection (hyper is done with it by now).
    assert_eq!(metric(&proxy.state.metrics.encode(), "weir_active_connections", ""), Some(1.0));
    // The route timeout covered the wait for the 101, not the tunnel: it stays up past it.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (s1, r1) = exchange_text(&mut s, "still here").await;
    sent += s1;
    received += r1;

    sent += write_frame(&mut s, CLOSE, &1000u16.to_be_bytes(), true).await;
    let (opcode, _, payload) = read_frame(&mut s).await.expect("a close frame");
    assert_eq!((opcode, payload.as_slice()), (CLOSE, &1000u16.to_be_bytes()[..]));
    received += 2 + payload.len();
    assert!(read_frame(&mut s).await.is_none(), "the tunnel closes after the upstream closes");
    drop(s);

    // Recorded once the tunnel closed: status 101, bytes both ways.
    let state = proxy.state.clone();
    let series = "response_code=\"101\"";
    wait_for("the tunnel's record", || {
        metric(&state.metrics.encode(), "istio_requests_total{", series).is_some()
            && metric(&state.metrics.encode(), "weir_active_connections", "") == Some(0.0)
    })
    .await;
    let text = state.metrics.encode();
    assert_eq!(metric(&text, "istio_requests_total{", series), Some(1.0), "{text}");
    assert!(text.contains("destination_service=\"ws.default.svc.cluster.local\""), "{text}");
    assert_eq!(metric(&text, "istio_request_bytes_sum{", series), Some(sent as f64), "{text}");
    assert_eq!(metric(&text, "istio_response_bytes_sum{", series), Some(received as f64), "{text}");
    let ms = metric(&text, "istio_request_duration_milliseconds_sum{", series).unwrap();
    assert!(ms >= 450.0, "the duration is the tunnel's: {ms}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_local_replies_come_before_the_upgrade() {
    let b = WsBackend::start().await;
    let port = free_port();
    let yaml = format!(
        "{}{}{}",
        service("ws", port, "HTTP", &[(b.port, "v1")]),
        subsets("ws", &["v1"]),
        vs(
            "ws",
            "  - match: [{uri: {prefix: /nc}}]
    route: [{destination: {host: ws, subset: v9}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: ws}}]
  - match: [{uri: {prefix: /deny}}, {uri: {prefix: /chat}}]
    route: [{destination: {host: ws, subset: v1}}]"
        ),
    );
    let _proxy = Proxy::start(&yaml).await;

    // A route to a cluster that does not exist: 503 NC, never 101, and the backend is not asked.
    let (_s, head) = handshake(port, "ws", "/nc").await;
    assert_eq!(status_of(&head), 503, "{head}");
    assert_eq!(
        head_header(&head, "x-weir-reason"),
        Some(format!("NC outbound|{port}|v9|ws.default.svc.cluster.local"))
    );
    assert!(head_header(&head, "upgrade").is_none(), "{head}");

    let (_s, head) = handshake(port, "ws", "/nothing").await;
    assert_eq!(status_of(&head), 404, "{head}");
    assert_eq!(head_header(&head, "x-weir-reason").as_deref(), Some("NR VirtualService default/ws"));

    let (_s, head) = handshake(port, "ws", "/abort").await;
    assert_eq!(status_of(&head), 418, "{head}");
    assert!(b.heads().is_empty(), "local replies do not reach the backend: {:?}", b.heads());

    // A refusal by the upstream is relayed as a normal response.
    let (mut s, head) = handshake(port, "ws", "/deny").await;
    assert_eq!(status_of(&head), 403, "{head}");
    assert_eq!(head_header(&head, "x-backend").as_deref(), Some("ws"));
    let mut body = [0u8; 6];
    tokio::time::timeout(IO_TIMEOUT, s.read_exact(&mut body)).await.unwrap().unwrap();
    assert_eq!(&body, b"denied");

    // The same connection is still a plain HTTP/1.1 connection: an upgrade on it works.
    let req = format!(
        "GET /chat HTTP/1.1\r\nhost: ws\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-key: {KEY}\r\nsec-websocket-version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert_eq!(status_of(&head), 101, "{head}");
    exchange_text(&mut s, "after a refusal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_the_explicit_proxy() {
    let b = WsBackend::start().await;
    let (port, proxy_port) = (free_port(), free_port());
    let yaml = format!(
        "{}{}",
        service("ws", port, "HTTP", &[(b.port, "v1")]),
        vs("ws", "  - route: [{destination: {host: ws}}]")
    );
    let _proxy = Proxy::start_with(options(proxy_port), &yaml).await;
    let (mut s, head) = handshake(proxy_port, &format!("ws:{port}"), &format!("http://ws:{port}/chat")).await;
    assert_eq!(status_of(&head), 101, "{head}");
    exchange_text(&mut s, "via the proxy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_for_tunnels_then_closes_them() {
    let b = WsBackend::start().await;
    let port = free_port();
    let yaml = format!(
        "{}{}",
        service("ws", port, "HTTP", &[(b.port, "v1")]),
        vs("ws", "  - route: [{destination: {host: ws}}]")
    );
    let mut o = options(0);
    o.drain_timeout = Duration::from_millis(400);
    let proxy = Proxy::start_with(o, &yaml).await;
    let (mut s, head) = handshake(port, "ws", "/chat").await;
    assert_eq!(status_of(&head), 101, "{head}");
    let started = std::time::Instant::now();
    proxy.shutdown();
    // The tunnel keeps working while the drain lasts...
    exchange_text(&mut s, "draining").await;
    // ...and is closed when the drain timeout passes, which lets weir finish.
    assert!(read_frame(&mut s).await.is_none());
    assert!(started.elapsed() >= Duration::from_millis(350), "{:?}", started.elapsed());
    let state = proxy.state.clone();
    let done = tokio::time::timeout(IO_TIMEOUT, proxy.task).await.expect("serve ends after the drain");
    assert!(done.unwrap().is_ok());
    wait_for("the tunnel's record", || {
        metric(&state.metrics.encode(), "istio_requests_total{", "response_code=\"101\"").is_some()
    })
    .await;
}
