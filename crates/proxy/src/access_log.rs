//! Access log lines: Envoy's default text format, JSON, or off.
//!
//! Text (Envoy's default format, `-` for missing values):
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS%
//! %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%"
//! "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
//! ```
//!
//! JSON: one object per line with the same fields under Istio's JSON key
//! names (`start_time`, `method`, `path`, ...; missing values are `null`),
//! plus `upstream_cluster` and `route_name`.
//!
//! A request only formats its line and hands it to a bounded channel; a
//! writer thread writes lines to stdout through a buffer and flushes when
//! the channel runs empty. When stdout cannot keep up and the channel is
//! full, lines are dropped (counted, and reported on stderr) rather than
//! slowing requests down.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::AccessLogFormat;

/// Lines that may wait for the writer before new ones are dropped.
pub const QUEUE_LINES: usize = 16 * 1024;

/// One finished request, as the access log sees it.
#[derive(Clone, Debug, Default)]
pub struct AccessEntry {
    pub start: Option<std::time::SystemTime>,
    pub method: String,
    pub path: String,
    pub protocol: String,
    pub response_code: u16,
    pub response_flags: String,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub upstream_service_time_ms: Option<u64>,
    pub x_forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: String,
    pub authority: String,
    pub upstream_host: Option<String>,
    pub upstream_cluster: String,
    pub route_name: String,
}

enum Msg {
    Line(String),
    Flush(mpsc::Sender<()>),
}

pub struct AccessLog {
    format: AccessLogFormat,
    tx: Option<SyncSender<Msg>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Writes to stdout (nothing, and no thread, for [`AccessLogFormat::Off`]).
    pub fn new(format: AccessLogFormat) -> AccessLog {
        AccessLog::with_writer(format, Box::new(std::io::stdout()))
    }

    /// Writes to `out` from a background thread.
    pub fn with_writer(format: AccessLogFormat, out: Box<dyn Write + Send>) -> AccessLog {
        let dropped = Arc::new(AtomicU64::new(0));
        if format == AccessLogFormat::Off {
            return AccessLog { format, tx: None, dropped };
        }
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        let d = dropped.clone();
        let spawned =
            std::thread::Builder::new().name("weir-access-log".into()).spawn(move || write_lines(rx, out, &d));
        match spawned {
            Ok(_) => AccessLog { format, tx: Some(tx), dropped },
            Err(e) => {
                tracing::error!("access log disabled: cannot start its writer thread: {e}");
                AccessLog { format: AccessLogFormat::Off, tx: None, dropped }
            }
        }
    }

    pub fn format(&self) -> AccessLogFormat {
        self.format
    }

    /// Whether lines are written at all (callers may skip building entries when not).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one line; never blocks.
    pub fn log(&self, e: &AccessEntry) {
        let Some(tx) = &self.tx else { return };
        let line = match self.format {
            AccessLogFormat::Text => format_text(e),
            AccessLogFormat::Json => format_json(e),
            AccessLogFormat::Off => return,
        };
        match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits (at most `timeout`) until every line queued so far is written
    /// and flushed. Returns whether it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else { return true };
        let deadline = Instant::now() + timeout;
        let (done_tx, done_rx) = mpsc::channel();
        let mut msg = Msg::Flush(done_tx);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    // The queue is full: give the writer a moment (back-off, not synchronisation).
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }
}

fn write_lines(rx: Receiver<Msg>, out: Box<dyn Write + Send>, dropped: &AtomicU64) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut reported = 0;
    let mut broken = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Line(l) if !broken => {
                    if let Err(e) = out.write_all(l.as_bytes()) {
                        tracing::error!("access log: cannot write: {e}; further lines are discarded");
                        broken = true;
                    }
                }
                Msg::Line(_) => {}
                Msg::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        if !broken && out.flush().is_err() {
            broken = true;
        }
        let d = dropped.load(Ordering::Relaxed);
        if d > reported {
            tracing::warn!("access log: {} lines dropped (output too slow)", d - reported);
            reported = d;
        }
    }
    let _ = out.flush();
}

/// Envoy's default text format, newline-terminated.
pub fn format_text(e: &AccessEntry) -> String {
    let mut s = String::with_capacity(256);
    s.push('[');
    match e.start {
        Some(t) => push_time(&mut s, t),
        None => s.push('-'),
    }
    s.push_str("] \"");
    push_field(&mut s, &e.method);
    s.push(' ');
    push_field(&mut s, &e.path);
    s.push(' ');
    push_field(&mut s, &e.protocol);
    let _ = write!(s, "\" {} ", e.response_code);
    push_field(&mut s, &e.response_flags);
    let _ = write!(s, " {} {} {} ", e.bytes_received, e.bytes_sent, e.duration_ms);
    match e.upstream_service_time_ms {
        Some(t) => {
            let _ = write!(s, "{t}");
        }
        None => s.push('-'),
    }
    for v in [
        e.x_forwarded_for.as_deref().unwrap_or(""),
        e.user_agent.as_deref().unwrap_or(""),
        &e.request_id,
        &e.authority,
        e.upstream_host.as_deref().unwrap_or(""),
    ] {
        s.push_str(" \"");
        push_field(&mut s, v);
        s.push('"');
    }
    s.push('\n');
    s
}

/// Writes `v`, `-` when empty; control characters are escaped so a value cannot forge a log line.
fn push_field(s: &mut String, v: &str) {
    if v.is_empty() {
        s.push('-');
    } else if v.chars().any(char::is_control) {
        for c in v.chars() {
            if c.is_control() {
                let _ = write!(s, "\\x{:02x}", u32::from(c));
            } else {
                s.push(c);
            }
        }
    } else {
        s.push_str(v);
    }
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    start_time: Option<String>,
    method: Option<&'a str>,
    path: Option<&'a str>,
    protocol: Option<&'a str>,
    response_code: u16,
    response_flags: Option<&'a str>,
    bytes_received: u64,
    bytes_sent: u64,
    duration: u64,
    upstream_service_time: Option<u64>,
    x_forwarded_for: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
    authority: Option<&'a str>,
    upstream_host: Option<&'a str>,
    upstream_cluster: Option<&'a str>,
    route_name: Option<&'a str>,
}

fn non_empty(s: &str) -> Option<&str> {
    if s.is_empty() { None } else { Some(s) }
}

/// One JSON object, newline-terminated.
pub fn format_json(e: &AccessEntry) -> String {
    let line = JsonLine {
        start_time: e.start.map(|t| {
            let mut s = String::with_capacity(24);
            push_time(&mut s, t);
            s
        }),
        method: non_empty(&e.method),
        path: non_empty(&e.path),
        protocol: non_empty(&e.protocol),
        response_code: e.response_code,
        response_flags: non_empty(&e.response_flags),
        bytes_received: e.bytes_received,
        bytes_sent: e.bytes_sent,
        duration: e.duration_ms,
        upstream_service_time: e.upstream_service_time_ms,
        x_forwarded_for: e.x_forwarded_for.as_deref().and_then(non_empty),
        user_agent: e.user_agent.as_deref().and_then(non_empty),
        request_id: non_empty(&e.request_id),
        authority: non_empty(&e.authority),
        upstream_host: e.upstream_host.as_deref().and_then(non_empty),
        upstream_cluster: non_empty(&e.upstream_cluster),
        route_name: non_empty(&e.route_name),
    };
    let mut s = serde_json::to_string(&line).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// `2024-05-01T12:34:56.789Z`, as Envoy's `%START_TIME%` (UTC, milliseconds).
fn push_time(s: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    let _ = write!(
        s,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    );
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn entry() -> AccessEntry {
        AccessEntry {
            start: Some(UNIX_EPOCH + Duration::from_millis(1_714_566_896_789)),
            method: "GET".into(),
            path: "/productpage".into(),
            protocol: "HTTP/1.1".into(),
            response_code: 200,
            response_flags: String::new(),
            bytes_received: 0,
            bytes_sent: 5183,
            duration_ms: 12,
            upstream_service_time_ms: Some(11),
            x_forwarded_for: Some("10.0.0.1".into()),
            user_agent: Some("curl/8.5.0".into()),
            request_id: "6f4a1c0e-0b6e-4ad5-9c1f-3d5e9c2f1a7b".into(),
            authority: "bookinfo.example.com".into(),
            upstream_host: Some("127.0.0.1:19080".into()),
            upstream_cluster: "outbound|9080||productpage.default.svc.cluster.local".into(),
            route_name: "default".into(),
        }
    }

    #[test]
    fn text_is_envoys_default_format() {
        assert_eq!(
            format_text(&entry()),
            "[2024-05-01T12:34:56.789Z] \"GET /productpage HTTP/1.1\" 200 - 0 5183 12 11 \"10.0.0.1\" \
             \"curl/8.5.0\" \"6f4a1c0e-0b6e-4ad5-9c1f-3d5e9c2f1a7b\" \"bookinfo.example.com\" \"127.0.0.1:19080\"\n"
        );
    }

    #[test]
    fn text_uses_dashes_for_missing_values() {
        let e = AccessEntry { response_code: 404, response_flags: "NR".into(), ..AccessEntry::default() };
        assert_eq!(format_text(&e), "[-] \"- - -\" 404 NR 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\"\n");
    }

    #[test]
    fn text_escapes_control_characters() {
        let e = AccessEntry { user_agent: Some("evil\n[fake] line".into()), ..entry() };
        let line = format_text(&e);
        assert!(line.contains("\"evil\\x0a[fake] line\""), "{line}");
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn json_has_the_same_fields() {
        let v: serde_json::Value = serde_json::from_str(&format_json(&entry())).unwrap();
        assert_eq!(v["start_time"], "2024-05-01T12:34:56.789Z");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/productpage");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["response_code"], 200);
        assert_eq!(v["response_flags"], serde_json::Value::Null);
        assert_eq!(v["bytes_sent"], 5183);
        assert_eq!(v["duration"], 12);
        assert_eq!(v["upstream_service_time"], 11);
        assert_eq!(v["x_forwarded_for"], "10.0.0.1");
        assert_eq!(v["user_agent"], "curl/8.5.0");
        assert_eq!(v["authority"], "bookinfo.example.com");
        assert_eq!(v["upstream_host"], "127.0.0.1:19080");
        assert_eq!(v["upstream_cluster"], "outbound|9080||productpage.default.svc.cluster.local");
        let empty: serde_json::Value = serde_json::from_str(&format_json(&AccessEntry::default())).unwrap();
        assert_eq!(empty["start_time"], serde_json::Value::Null);
        assert_eq!(empty["upstream_host"], serde_json::Value::Null);
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let mut s = String::new();
        push_time(&mut s, UNIX_EPOCH + Duration::from_secs(253_402_300_799));
        assert_eq!(s, "9999-12-31T23:59:59.000Z");
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_reach_the_writer_in_order() {
        let out = Shared::default();
        let log = AccessLog::with_writer(AccessLogFormat::Json, Box::new(out.clone()));
        for i in 0..100 {
            log.log(&AccessEntry { response_code: 200 + i, ..AccessEntry::default() });
        }
        assert!(log.flush(Duration::from_secs(5)));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let codes: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["response_code"].as_u64().unwrap())
            .collect();
        assert_eq!(codes, (200..300).collect::<Vec<_>>());
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn off_writes_nothing() {
        let out = Shared::default();
        let log = AccessLog::with_writer(AccessLogFormat::Off, Box::new(out.clone()));
        assert!(!log.enabled());
        log.log(&entry());
        assert!(log.flush(Duration::from_secs(1)));
        assert!(out.0.lock().unwrap().is_empty());
    }
}
