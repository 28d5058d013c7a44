//! Header manipulation: VirtualService `headers` operations with Envoy's
//! `%VAR%` formatter, hop-by-hop stripping, and request ids.
//!
//! Header values are compiled once per runtime: a value without variables
//! becomes a ready `HeaderValue` (cloning it is a reference-count bump).
//! Supported variables:
//! `%HOSTNAME%`, `%REQ(name)%` / `%REQ(name?alt)%` (request headers and
//! `:authority`, `:path`, `:method`, `:scheme`), `%DOWNSTREAM_REMOTE_ADDRESS%`,
//! `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%` (and the `DIRECT_` variants),
//! `%DOWNSTREAM_LOCAL_ADDRESS%`, `%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%`,
//! `%DOWNSTREAM_LOCAL_PORT%`, `%PROTOCOL%`, `%UPSTREAM_CLUSTER%`,
//! `%UPSTREAM_REMOTE_ADDRESS%` and `%UPSTREAM_HOST%` (response headers only),
//! `%ROUTE_NAME%`, `%REQUEST_ID%`. Anything else is sent literally; `%%` is `%`.
//! An operation whose value formats to the empty string is skipped, as in Envoy.

use std::net::SocketAddr;
use std::sync::OnceLock;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use weir_compile::model::HeaderOps;

/// What a formatted value may refer to.
pub(crate) struct FmtCtx<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub scheme: &'a str,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub protocol: &'static str,
    pub upstream_host: Option<&'a str>,
    pub cluster: Option<&'a str>,
    pub route: &'a str,
}

#[derive(Clone, Debug)]
enum ReqName {
    Header(HeaderName),
    Method,
    Authority,
    Path,
    Scheme,
}

#[derive(Clone, Debug)]
enum Piece {
    Lit(Box<str>),
    Hostname,
    Req(ReqName, Option<ReqName>),
    RemoteAddr,
    RemoteIp,
    LocalAddr,
    LocalIp,
    LocalPort,
    Protocol,
    UpstreamHost,
    Cluster,
    Route,
    RequestId,
}

/// A compiled header value.
#[derive(Clone, Debug)]
pub(crate) struct Fmt {
    fixed: Option<HeaderValue>,
    pieces: Box<[Piece]>,
}

impl Fmt {
    pub fn parse(text: &str) -> Fmt {
        let pieces = parse_pieces(text);
        let fixed = match pieces.as_slice() {
            [] => HeaderValue::from_static("").into(),
            [Piece::Lit(s)] => HeaderValue::from_str(s).ok(),
            _ => None,
        };
        Fmt { fixed, pieces: pieces.into_boxed_slice() }
    }

    pub fn uses_request_headers(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Req(..) | Piece::RequestId))
    }

    /// The value; `headers` are the request headers for `%REQ(...)%`.
    pub fn eval(&self, ctx: &FmtCtx<'_>, headers: Option<&HeaderMap>) -> Option<HeaderValue> {
        if let Some(v) = &self.fixed {
            return Some(v.clone());
        }
        let mut out = String::new();
        for p in self.pieces.iter() {
            use std::fmt::Write as _;
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Hostname => out.push_str(hostname()),
                Piece::Req(a, b) => {
                    let v = req_value(a, ctx, headers).or_else(|| b.as_ref().and_then(|b| req_value(b, ctx, headers)));
                    if let Some(v) = v {
                        out.push_str(&v);
                    }
                }
                Piece::RemoteAddr => {
                    let _ = write!(out, "{}", ctx.peer);
                }
                Piece::RemoteIp => {
                    let _ = write!(out, "{}", ctx.peer.ip());
                }
                Piece::LocalAddr => {
                    let _ = write!(out, "{}", ctx.local);
                }
                Piece::LocalIp => {
                    let _ = write!(out, "{}", ctx.local.ip());
                }
                Piece::LocalPort => {
                    let _ = write!(out, "{}", ctx.local.port());
                }
                Piece::Protocol => out.push_str(ctx.protocol),
                Piece::UpstreamHost => out.push_str(ctx.upstream_host.unwrap_or("-")),
                Piece::Cluster => out.push_str(ctx.cluster.unwrap_or("-")),
                Piece::Route => out.push_str(ctx.route),
                Piece::RequestId => {
                    if let Some(v) = headers.and_then(|h| h.get(&REQUEST_ID)).and_then(|v| v.to_str().ok()) {
                        out.push_str(v);
                    }
                }
            }
        }
        HeaderValue::from_str(&out).ok()
    }
}

fn req_value<'a>(
    name: &ReqName,
    ctx: &'a FmtCtx<'_>,
    headers: Option<&'a HeaderMap>,
) -> Option<std::borrow::Cow<'a, str>> {
    match name {
        ReqName::Method => Some(ctx.method.into()),
        ReqName::Authority => Some(ctx.authority.into()),
        ReqName::Path => Some(ctx.path.into()),
        ReqName::Scheme => Some(ctx.scheme.into()),
        ReqName::Header(h) => headers?.get(h).map(|v| String::from_utf8_lossy(v.as_bytes())),
    }
}

fn parse_req_name(s: &str) -> Option<ReqName> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        ":method" => ReqName::Method,
        ":authority" | "host" => ReqName::Authority,
        ":path" => ReqName::Path,
        ":scheme" => ReqName::Scheme,
        other => ReqName::Header(HeaderName::from_bytes(other.as_bytes()).ok()?),
    })
}

fn variable(name: &str) -> Option<Piece> {
    if let Some(arg) = name.strip_prefix("REQ(") {
        // `REQ(a?b)` optionally followed by `:N` (length limit, ignored).
        let (arg, _) = arg.split_once(')')?;
        let (a, b) = match arg.split_once('?') {
            Some((a, b)) => (a, Some(b)),
            None => (arg, None),
        };
        return Some(Piece::Req(parse_req_name(a)?, b.and_then(parse_req_name)));
    }
    Some(match name {
        "HOSTNAME" => Piece::Hostname,
        "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => Piece::RemoteAddr,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => Piece::RemoteIp,
        "DOWNSTREAM_LOCAL_ADDRESS" => Piece::LocalAddr,
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Piece::LocalIp,
        "DOWNSTREAM_LOCAL_PORT" => Piece::LocalPort,
        "PROTOCOL" => Piece::Protocol,
        "UPSTREAM_REMOTE_ADDRESS" | "UPSTREAM_HOST" => Piece::UpstreamHost,
        "UPSTREAM_CLUSTER" => Piece::Cluster,
        "ROUTE_NAME" => Piece::Route,
        "REQUEST_ID" => Piece::RequestId,
        _ => return None,
    })
}

fn parse_pieces(text: &str) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        lit.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            lit.push('%');
            rest = tail;
            continue;
        }
        let known = after.find('%').and_then(|j| variable(&after[..j]).map(|p| (p, j)));
        match known {
            Some((piece, j)) => {
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit).into()));
                }
                out.push(piece);
                rest = &after[j + 1..];
            }
            None => {
                // Unsupported variable or a lone `%`: literal text.
                lit.push('%');
                rest = after;
            }
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Piece::Lit(lit.into()));
    }
    out
}

/// `HOSTNAME` of this machine.
pub fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into())
    })
}

/// A VirtualService header operation list, compiled.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ops {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Fmt)>,
    add: Vec<(HeaderName, Fmt)>,
    /// A `set` (or `add`) of `:authority`/`host`: a host rewrite.
    pub authority: Option<Fmt>,
    dynamic: bool,
}

impl Ops {
    pub fn compile(ops: &HeaderOps) -> Ops {
        let mut out = Ops::default();
        // At their final size: one pushed operation would leave room for four.
        out.remove.reserve_exact(ops.remove.len());
        out.set.reserve_exact(ops.set.len());
        out.add.reserve_exact(ops.add.len());
        let name = |n: &str| -> Option<HeaderName> { HeaderName::from_bytes(n.trim().as_bytes()).ok() };
        let is_authority = |n: &str| n.eq_ignore_ascii_case(":authority") || n.eq_ignore_ascii_case("host");
        for n in &ops.remove {
            if let Some(h) = name(n) {
                out.remove.push(h);
            }
        }
        for (list, target) in [(&ops.set, true), (&ops.add, false)] {
            for (n, v) in list.iter() {
                let f = Fmt::parse(v);
                if is_authority(n) {
                    if target || out.authority.is_none() {
                        out.authority = Some(f);
                    }
                    continue;
                }
                let Some(h) = name(n) else {
                    tracing::debug!(header = %n, "header operation on an invalid or pseudo header name ignored");
                    continue;
                };
                out.dynamic |= f.fixed.is_none();
                if target { out.set.push((h, f)) } else { out.add.push((h, f)) }
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty() && self.authority.is_none()
    }

    pub fn uses_request_headers(&self) -> bool {
        self.set.iter().chain(&self.add).any(|(_, f)| f.uses_request_headers())
    }

    /// Applies to `headers`: removals, then sets, then appends. `request` are the
    /// request headers for `%REQ()%` in response operations (`None`: `headers` themselves).
    pub fn apply(&self, headers: &mut HeaderMap, ctx: &FmtCtx<'_>, request: Option<&HeaderMap>) {
        for h in &self.remove {
            headers.remove(h);
        }
        if !self.dynamic {
            for (h, f) in &self.set {
                if let Some(v) = f.fixed.as_ref().filter(|v| !v.is_empty()) {
                    headers.insert(h.clone(), v.clone());
                }
            }
            for (h, f) in &self.add {
                if let Some(v) = f.fixed.as_ref().filter(|v| !v.is_empty()) {
                    headers.append(h.clone(), v.clone());
                }
            }
            return;
        }
        // Evaluate first: `%REQ()%` of a request operation reads the headers being changed.
        let eval = |f: &Fmt, headers: &HeaderMap| f.eval(ctx, Some(request.unwrap_or(headers)));
        let sets: Vec<Option<HeaderValue>> = self.set.iter().map(|(_, f)| eval(f, headers)).collect();
        let adds: Vec<Option<HeaderValue>> = self.add.iter().map(|(_, f)| eval(f, headers)).collect();
        for ((h, _), v) in self.set.iter().zip(sets) {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                headers.insert(h.clone(), v);
            }
        }
        for ((h, _), v) in self.add.iter().zip(adds) {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                headers.append(h.clone(), v);
            }
        }
    }
}

/// The decimal digits of 0 to 999 back to back ("0123456789101112..."): header values of
/// small numbers point into it instead of allocating.
static DIGITS: [u8; DIGITS_LEN] = digits();
/// Where the two- and three-digit numbers start in [`DIGITS`], and its length.
const TWO_DIGITS_AT: usize = 10;
const THREE_DIGITS_AT: usize = TWO_DIGITS_AT + 90 * 2;
const DIGITS_LEN: usize = THREE_DIGITS_AT + 900 * 3;

const fn digits() -> [u8; DIGITS_LEN] {
    let mut out = [0u8; DIGITS_LEN];
    let (mut n, mut at) = (0u32, 0usize);
    while n < 1000 {
        if n >= 100 {
            out[at] = b'0' + (n / 100) as u8;
            at += 1;
        }
        if n >= 10 {
            out[at] = b'0' + (n / 10 % 10) as u8;
            at += 1;
        }
        out[at] = b'0' + (n % 10) as u8;
        at += 1;
        n += 1;
    }
    out
}

/// `n` as a header value (`x-envoy-upstream-service-time`, `x-envoy-attempt-count`,
/// `x-envoy-expected-rq-timeout-ms`); below 1000 without an allocation.
pub fn number(n: u64) -> HeaderValue {
    let (at, len) = match n {
        0..=9 => (n as usize, 1),
        10..=99 => (TWO_DIGITS_AT + (n as usize - 10) * 2, 2),
        100..=999 => (THREE_DIGITS_AT + (n as usize - 100) * 3, 3),
        _ => return HeaderValue::from(n),
    };
    HeaderValue::from_maybe_shared(bytes::Bytes::from_static(&DIGITS[at..at + len]))
        .unwrap_or_else(|_| HeaderValue::from(n))
}

/// Envoy's request id header, set on every request that arrives without one.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A random (version 4) UUID, as Envoy generates for `x-request-id`.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = fastrand::u128(..);
    bits = (bits & !(0xf << 76)) | (0x4 << 76);
    bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let mut out = [0u8; 36];
    let mut j = 0;
    for i in 0..16 {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[j] = b'-';
            j += 1;
        }
        let byte = (bits >> (120 - 8 * i)) as u8;
        out[j] = HEX[usize::from(byte >> 4)];
        out[j + 1] = HEX[usize::from(byte & 0xf)];
        j += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-4000-8000-000000000000"))
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Whether `name` is a connection-specific header (RFC 9110 §7.6.1; `proxy-connection` and
/// `http2-settings` as Envoy removes them too).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
    name == CONNECTION
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == TE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == HTTP2_SETTINGS
}

/// Removes connection-specific headers (RFC 9110 §7.6.1) before a message is forwarded.
///
/// One pass over the names decides what there is to do: most messages carry no such header,
/// or only `Connection: keep-alive` (what most HTTP/1.1 servers send), and every lookup by name
/// hashes the name.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    use http::header::{CONNECTION, Entry, TE, TRANSFER_ENCODING, UPGRADE};
    let (mut found, mut keep_alive_header) = (false, false);
    for name in headers.keys() {
        if is_hop_by_hop(name) {
            found = true;
            keep_alive_header |= name == KEEP_ALIVE;
        }
    }
    if !found {
        return;
    }
    if let Entry::Occupied(e) = headers.entry(CONNECTION) {
        // `Connection` and every header it names go; `close` and `keep-alive` name no header
        // unless one by that name is present.
        let (_, mut values) = e.remove_entry_mult();
        let first = values.next();
        let rest: Vec<HeaderValue> = values.collect();
        for list in first.iter().chain(&rest).filter_map(|v| v.to_str().ok()) {
            for name in list.split(',').map(str::trim) {
                let keep = name.is_empty()
                    || name.eq_ignore_ascii_case("close")
                    || (!keep_alive_header && name.eq_ignore_ascii_case("keep-alive"))
                    || (keep_te_trailers && name.eq_ignore_ascii_case("te"));
                if !keep {
                    headers.remove(name);
                }
            }
        }
        if !headers.keys().any(is_hop_by_hop) {
            return;
        }
    }
    for name in [KEEP_ALIVE, PROXY_CONNECTION, TRANSFER_ENCODING, UPGRADE, HTTP2_SETTINGS] {
        headers.remove(name);
    }
    if headers.get(TE).is_some_and(|v| !(keep_te_trailers && v.as_bytes().eq_ignore_ascii_case(b"trailers"))) {
        headers.remove(TE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_their_decimal_form() {
        for n in (0..=1100).chain([9_999, u64::MAX]) {
            assert_eq!(number(n), HeaderValue::from(n), "{n}");
        }
    }

    fn ctx() -> FmtCtx<'static> {
        FmtCtx {
            method: "GET",
            authority: "reviews:9080",
            path: "/a?b=1",
            scheme: "http",
            peer: "10.1.2.3:5555".parse().unwrap(),
            local: "127.0.0.1:9080".parse().unwrap(),
            protocol: "HTTP/1.1",
            upstream_host: Some("10.0.0.1:80"),
            cluster: Some("outbound|9080||reviews"),
            route: "r1",
        }
    }

    #[test]
    fn formatter_variables_and_escapes() {
        let mut h = HeaderMap::new();
        h.insert("x-user", "jason".parse().unwrap());
        let f = |s: &str| Fmt::parse(s).eval(&ctx(), Some(&h)).unwrap();
        assert_eq!(f("100%%"), "100%");
        assert_eq!(f("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"), "10.1.2.3");
        assert_eq!(f("u=%REQ(x-user)% h=%REQ(:authority)%"), "u=jason h=reviews:9080");
        assert_eq!(f("%REQ(x-none?x-user)%"), "jason");
        assert_eq!(f("%UNKNOWN_THING% 5%"), "%UNKNOWN_THING% 5%");
        assert_eq!(f("%UPSTREAM_CLUSTER%/%PROTOCOL%"), "outbound|9080||reviews/HTTP/1.1");
        assert!(Fmt::parse("plain").fixed.is_some());
    }

    #[test]
    fn operations_remove_set_add_and_authority() {
        let ops = HeaderOps {
            set: vec![("x-set".into(), "1".into()), (":authority".into(), "new".into())],
            add: vec![("x-add".into(), "a".into()), ("x-dyn".into(), "%REQ(x-in)%".into())],
            remove: vec!["x-gone".into()],
        };
        let c = Ops::compile(&ops);
        assert!(c.authority.is_some());
        // Kept per route in the runtime: no room for more than was compiled (:authority aside).
        assert_eq!((c.set.len(), c.set.capacity(), c.add.capacity(), c.remove.capacity()), (1, 2, 2, 1));
        let mut h = HeaderMap::new();
        h.insert("x-gone", "1".parse().unwrap());
        h.insert("x-set", "old".parse().unwrap());
        h.insert("x-add", "first".parse().unwrap());
        h.insert("x-in", "v".parse().unwrap());
        c.apply(&mut h, &ctx(), None);
        assert!(h.get("x-gone").is_none());
        assert_eq!(h["x-set"], "1");
        assert_eq!(h.get_all("x-add").iter().count(), 2);
        assert_eq!(h["x-dyn"], "v");
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = new_request_id();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(new_request_id(), id);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 2, "{h:?}");
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);

        // Without `Connection`: every connection-specific header still goes.
        let mut h = HeaderMap::new();
        for name in ["keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "http2-settings", "te"] {
            h.insert(name, "x".parse().unwrap());
        }
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-keep"], "te other than trailers goes too");
        // Several Connection values, mixed case; `close` names nothing.
        let mut h = HeaderMap::new();
        h.append("connection", "close, X-One".parse().unwrap());
        h.append("connection", "x-two".parse().unwrap());
        for name in ["x-one", "x-two", "close", "x-keep"] {
            h.insert(name, "1".parse().unwrap());
        }
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["close", "x-keep"]);
        // Nothing to strip: the map is left as it was.
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
    }
}
