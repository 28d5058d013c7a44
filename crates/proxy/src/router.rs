//! Route tables compiled for serving: Envoy's virtual host selection over a
//! domain index, route matchers with their regexes compiled once, weighted
//! destinations resolved to cluster states, and the path/authority rewrites
//! and redirects of each route.
//!
//! Matching follows `weir_compile::matcher` (what `weir explain` uses) rule
//! for rule; that module compiles regexes per call, which is fine for a CLI
//! but not for a data path, hence this compiled twin. The unit tests below
//! compare both on the same cases.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use regex::Regex;
use weir_compile::model::{
    Fault, PathMatch, Redirect, RedirectPort, Rewrite, Route, RouteAction, RouteMatch, RouteTable, Snapshot, Str,
    StringMatcher, VirtualHost,
};

use crate::filters::{cors, retry};
use crate::headers::{Fmt, Ops};
use crate::upstream::{ClusterSlot, Clusters};

/// The parts of a request routing looks at.
pub(crate) struct ReqView<'a> {
    pub method: &'a Method,
    pub scheme: &'a str,
    /// Host header / `:authority`, port included when sent.
    pub authority: &'a str,
    /// Path with query string.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

impl ReqView<'_> {
    fn path_only(&self) -> &str {
        self.path.split_once('?').map_or(self.path, |(p, _)| p)
    }

    fn query_param(&self, name: &str) -> Option<&str> {
        let (_, q) = self.path.split_once('?')?;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }
}

/// A compiled string matcher (header values, query parameters, CORS origins).
#[derive(Debug)]
pub(crate) enum Text {
    Exact(Str),
    Prefix(Str),
    /// `None`: an invalid pattern, which matches nothing.
    Regex(Option<Regex>),
    Present,
}

impl Text {
    pub fn compile(m: &StringMatcher) -> Text {
        match m {
            StringMatcher::Exact(e) => Text::Exact(e.clone()),
            StringMatcher::Prefix(p) => Text::Prefix(p.clone()),
            StringMatcher::Regex(r) => Text::Regex(full_regex(r)),
            StringMatcher::Present => Text::Present,
        }
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            Text::Exact(e) => v == &**e,
            Text::Prefix(p) => v.starts_with(&**p),
            Text::Regex(r) => r.as_ref().is_some_and(|r| r.is_match(v)),
            Text::Present => true,
        }
    }
}

/// RE2-style full match.
fn full_regex(pattern: &str) -> Option<Regex> {
    match Regex::new(&format!("^(?:{pattern})$")) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(pattern, error = %e, "regex does not compile; it matches nothing");
            None
        }
    }
}

#[derive(Debug)]
enum HeaderKey {
    Method,
    Authority,
    Scheme,
    Path,
    Name(HeaderName),
    /// A name no request can carry (JWT claims, invalid names).
    Never,
}

#[derive(Debug)]
struct HeaderCond {
    key: HeaderKey,
    text: Text,
    invert: bool,
}

#[derive(Debug)]
enum PathCond {
    Exact(Str),
    Prefix(Str),
    Regex(Option<Regex>),
}

#[derive(Debug)]
struct Matcher {
    path: Option<PathCond>,
    ignore_case: bool,
    headers: Vec<HeaderCond>,
    query: Vec<(Str, Text)>,
}

impl Matcher {
    fn compile(m: &RouteMatch) -> Matcher {
        Matcher {
            path: m.path.as_ref().map(|p| match p {
                PathMatch::Exact(e) => PathCond::Exact(e.clone()),
                PathMatch::Prefix(p) => PathCond::Prefix(p.clone()),
                PathMatch::Regex(r) => PathCond::Regex(full_regex(r)),
            }),
            ignore_case: m.ignore_case,
            headers: m
                .headers
                .iter()
                .map(|h| HeaderCond {
                    key: match &*h.name {
                        ":method" => HeaderKey::Method,
                        ":authority" | "host" => HeaderKey::Authority,
                        ":scheme" => HeaderKey::Scheme,
                        ":path" => HeaderKey::Path,
                        n => HeaderName::from_bytes(n.as_bytes()).map_or(HeaderKey::Never, HeaderKey::Name),
                    },
                    text: Text::compile(&h.matcher),
                    invert: h.invert,
                })
                .collect(),
            query: m.query_params.iter().map(|q| (q.name.clone(), Text::compile(&q.matcher))).collect(),
        }
    }

    fn matches(&self, req: &ReqView<'_>) -> bool {
        if let Some(p) = &self.path {
            let path = req.path_only();
            let ok = match p {
                PathCond::Exact(e) => {
                    if self.ignore_case {
                        path.eq_ignore_ascii_case(e)
                    } else {
                        path == &**e
                    }
                }
                PathCond::Prefix(pre) => starts_with(path, pre, self.ignore_case),
                PathCond::Regex(r) => r.as_ref().is_some_and(|r| r.is_match(path)),
            };
            if !ok {
                return false;
            }
        }
        for h in &self.headers {
            let value = header_value(&h.key, req);
            let hit = match (&h.text, value) {
                (Text::Present, v) => v.is_some(),
                // Inverted matchers treat a missing header as empty (`treat_missing_header_as_empty`).
                (t, None) if h.invert => t.matches(""),
                (_, None) => false,
                (t, Some(v)) => t.matches(&v),
            };
            if hit == h.invert {
                return false;
            }
        }
        self.query.iter().all(|(name, t)| req.query_param(name).is_some_and(|v| t.matches(v)))
    }
}

fn starts_with(s: &str, prefix: &str, ignore_case: bool) -> bool {
    if ignore_case {
        s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    } else {
        s.starts_with(prefix)
    }
}

/// A header's value as Envoy matches it: repeated headers joined with `,`.
fn header_value<'a>(key: &HeaderKey, req: &'a ReqView<'_>) -> Option<Cow<'a, str>> {
    match key {
        HeaderKey::Method => Some(Cow::Borrowed(req.method.as_str())),
        HeaderKey::Authority => Some(Cow::Borrowed(req.authority)),
        HeaderKey::Scheme => Some(Cow::Borrowed(req.scheme)),
        HeaderKey::Path => Some(Cow::Borrowed(req.path)),
        HeaderKey::Never => None,
        HeaderKey::Name(n) => {
            let mut values = req.headers.get_all(n).iter();
            let first = String::from_utf8_lossy(values.next()?.as_bytes());
            match values.next() {
                None => Some(first),
                Some(second) => {
                    let mut joined = first.into_owned();
                    joined.push(',');
                    joined.push_str(&String::from_utf8_lossy(second.as_bytes()));
                    for v in values {
                        joined.push(',');
                        joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
                    }
                    Some(Cow::Owned(joined))
                }
            }
        }
    }
}

/// One weighted destination of a forwarding route.
#[derive(Debug)]
pub(crate) struct Destination {
    pub name: Str,
    /// `None`: the cluster is not in the snapshot (503 `NC`).
    pub cluster: Option<ClusterSlot>,
    cumulative: u64,
    pub request_ops: Ops,
    pub response_ops: Ops,
}

/// A path/authority rewrite.
#[derive(Debug)]
pub(crate) struct PathRewrite {
    /// Prefix rewrite: (matched prefix or `None` for "the whole path", replacement).
    prefix: Option<(Option<Str>, Str)>,
    /// Regex rewrite with the substitution in `regex` crate syntax.
    regex: Option<(Regex, String)>,
    pub authority: Option<Fmt>,
}

#[derive(Debug)]
pub(crate) enum Action {
    Forward { destinations: Vec<Destination>, rewrite: Option<PathRewrite> },
    Redirect(Redirect),
    Direct { status: StatusCode, body: Bytes },
}

#[derive(Debug)]
pub(crate) struct CompiledRoute {
    /// Route name for logs (`default` for generated routes).
    pub name: Str,
    /// `VirtualService ns/name`, when the route came from one.
    pub object: Option<Str>,
    matcher: Matcher,
    /// The matched prefix of a prefix-match route (for prefix rewrites and redirects).
    matched_prefix: Option<Str>,
    ignore_case: bool,
    pub action: Action,
    pub timeout: Option<Duration>,
    pub retry: Option<retry::Policy>,
    pub fault: Option<Fault>,
    pub mirrors: Vec<(Str, Option<ClusterSlot>, f64)>,
    pub cors: Option<cors::Policy>,
    pub request_ops: Ops,
    pub response_ops: Ops,
    /// Response operations read request headers (`%REQ()%`), which must then be kept.
    pub response_reads_request: bool,
}

impl CompiledRoute {
    fn compile(r: &Route, clusters: &Arc<Clusters>) -> CompiledRoute {
        let action = match &r.action {
            RouteAction::Forward { clusters: dests, rewrite } => {
                let mut cumulative = 0u64;
                let destinations = dests
                    .iter()
                    .map(|d| {
                        cumulative += u64::from(d.weight);
                        Destination {
                            name: d.cluster.clone(),
                            cluster: clusters.slot(&d.cluster),
                            cumulative,
                            request_ops: Ops::compile(&d.request_headers),
                            response_ops: Ops::compile(&d.response_headers),
                        }
                    })
                    .collect();
                Action::Forward { destinations, rewrite: rewrite.as_ref().map(|rw| compile_rewrite(rw, &r.matcher)) }
            }
            RouteAction::Redirect(rd) => Action::Redirect(rd.clone()),
            RouteAction::DirectResponse { status, body } => Action::Direct {
                status: StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body: body.as_ref().map_or_else(Bytes::new, |b| Bytes::copy_from_slice(b.as_bytes())),
            },
        };
        let response_ops = Ops::compile(&r.response_headers);
        CompiledRoute {
            name: if r.name.is_empty() { "-".into() } else { r.name.clone() },
            object: r.origin.as_ref().map(|o| o.object.clone()),
            matcher: Matcher::compile(&r.matcher),
            matched_prefix: match &r.matcher.path {
                Some(PathMatch::Prefix(p)) => Some(p.clone()),
                _ => None,
            },
            ignore_case: r.matcher.ignore_case,
            action,
            timeout: r.timeout,
            retry: r.retries.as_ref().map(retry::Policy::compile),
            fault: r.fault.clone(),
            mirrors: r.mirrors.iter().map(|m| (m.cluster.clone(), clusters.slot(&m.cluster), m.percentage)).collect(),
            cors: r.cors.as_ref().map(cors::Policy::compile),
            request_ops: Ops::compile(&r.request_headers),
            response_reads_request: response_ops.uses_request_headers(),
            response_ops,
        }
    }

    /// A weighted choice among the destinations (weights relative).
    pub fn pick_destination<'d>(&self, destinations: &'d [Destination]) -> Option<&'d Destination> {
        match destinations {
            [] => None,
            [one] => Some(one),
            _ => {
                let total = destinations.last().map_or(0, |d| d.cumulative);
                if total == 0 {
                    return destinations.first();
                }
                let r = fastrand::u64(..total);
                destinations.iter().find(|d| d.cumulative > r)
            }
        }
    }

    /// The rewritten path (with query), `None` when the route does not rewrite it.
    pub fn rewrite_path(&self, rw: &PathRewrite, path: &str) -> Option<String> {
        let (p, q) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let new_path = if let Some((matched, replacement)) = &rw.prefix {
            match matched {
                Some(m) if starts_with(p, m, self.ignore_case) => format!("{replacement}{}", &p[m.len()..]),
                _ => replacement.to_string(),
            }
        } else if let Some((re, sub)) = &rw.regex {
            re.replace_all(p, sub.as_str()).into_owned()
        } else {
            return None;
        };
        Some(match q {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        })
    }

    /// The `location` of a redirect for a request.
    pub fn redirect_location(&self, rd: &Redirect, req: &ReqView<'_>, listener_port: u16) -> String {
        let scheme: &str = rd.scheme.as_deref().unwrap_or(req.scheme);
        let authority: &str = rd.authority.as_deref().unwrap_or(req.authority);
        let (host, port) = split_host_port(authority);
        let port = match rd.port {
            Some(RedirectPort::Explicit(p)) => Some(p),
            Some(RedirectPort::FromRequestPort) => Some(listener_port),
            Some(RedirectPort::FromProtocolDefault) => None,
            None => port,
        };
        let port = port.filter(|p| !is_default_port(scheme, *p));
        let path = if let Some(p) = &rd.path {
            if p.contains('?') {
                p.to_string()
            } else {
                match req.path.split_once('?') {
                    Some((_, q)) => format!("{p}?{q}"),
                    None => p.to_string(),
                }
            }
        } else if let Some(prefix) = &rd.prefix_rewrite {
            let rw = PathRewrite {
                prefix: Some((self.matched_prefix.clone(), prefix.clone())),
                regex: None,
                authority: None,
            };
            self.rewrite_path(&rw, req.path).unwrap_or_else(|| req.path.to_string())
        } else {
            req.path.to_string()
        };
        match port {
            Some(p) => format!("{scheme}://{host}:{p}{path}"),
            None => format!("{scheme}://{host}{path}"),
        }
    }
}

fn is_default_port(scheme: &str, port: u16) -> bool {
    (scheme.eq_ignore_ascii_case("http") && port == 80) || (scheme.eq_ignore_ascii_case("https") && port == 443)
}

/// `host:port` -> (host, port); IPv6 literals keep their brackets.
pub(crate) fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(i) => (&authority[..=i], authority[i + 1..].strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) => (h, p.parse().ok()),
        _ => (authority, None),
    }
}

fn compile_rewrite(rw: &Rewrite, m: &RouteMatch) -> PathRewrite {
    let matched = match &m.path {
        Some(PathMatch::Prefix(p)) => Some(p.clone()),
        _ => None,
    };
    PathRewrite {
        prefix: rw.prefix.as_ref().map(|p| (matched, p.clone())),
        regex: rw.regex.as_ref().and_then(|(pattern, sub)| match Regex::new(pattern) {
            Ok(re) => Some((re, re2_substitution(sub))),
            Err(e) => {
                tracing::warn!(pattern = %pattern, error = %e, "uriRegexRewrite pattern does not compile; not rewriting");
                None
            }
        }),
        authority: rw.authority.as_ref().map(|a| Fmt::parse(a)),
    }
}

/// RE2's `\1` substitution syntax in the `regex` crate's (`${1}`, `$` escaped).
fn re2_substitution(sub: &str) -> String {
    let mut out = String::with_capacity(sub.len() + 8);
    let mut chars = sub.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str("${");
                    out.push(*d);
                    out.push('}');
                    chars.next();
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug)]
pub(crate) struct CompiledVhost {
    pub name: Str,
    pub routes: Vec<CompiledRoute>,
    pub require_tls: bool,
    /// What `x-weir-reason` names when no route matches: the VirtualService, else the virtual host.
    pub subject: String,
    /// Istio's REGISTRY_ONLY catch-all (`block_all`).
    pub block_all: bool,
}

impl CompiledVhost {
    fn compile(vh: &VirtualHost, clusters: &Arc<Clusters>) -> CompiledVhost {
        let object = vh.routes.iter().find_map(|r| r.origin.as_ref().map(|o| o.object.clone()));
        CompiledVhost {
            name: vh.name.clone(),
            routes: vh.routes.iter().map(|r| CompiledRoute::compile(r, clusters)).collect(),
            require_tls: vh.require_tls,
            subject: match object {
                Some(o) => o.to_string(),
                None => format!("virtual host {}", vh.name),
            },
            block_all: &*vh.name == "block_all",
        }
    }

    /// The first route whose conditions all hold.
    pub fn route(&self, req: &ReqView<'_>) -> Option<&CompiledRoute> {
        self.routes.iter().find(|r| r.matcher.matches(req))
    }
}

/// Where a table's virtual hosts are described: in the snapshot (shared), or in a table the
/// runtime made itself.
#[derive(Debug)]
enum Model {
    Snapshot(Arc<Snapshot>, usize),
    Own(RouteTable),
}

impl Model {
    fn table(&self) -> &RouteTable {
        match self {
            Model::Snapshot(s, i) => &s.route_tables[*i],
            Model::Own(t) => t,
        }
    }
}

/// A route table with its domain index. A virtual host's routes are compiled when a request
/// first selects it: a gateway with thousands of virtual hosts builds (and, at the next reload,
/// frees) only the ones that get traffic.
#[derive(Debug)]
pub(crate) struct Table {
    pub name: Str,
    model: Model,
    clusters: Arc<Clusters>,
    /// One per virtual host of the model, in its order.
    vhosts: Box<[OnceLock<CompiledVhost>]>,
    /// Lower-case domain -> virtual host (the snapshot's string when it is lower-case already).
    exact: HashMap<Str, usize>,
    /// `*suffix` domains (suffix without `*`), longest first.
    suffix: Vec<(Box<str>, usize)>,
    /// `prefix*` domains, longest first.
    prefix: Vec<(Box<str>, usize)>,
    any: Option<usize>,
}

impl Table {
    /// The table `snapshot.route_tables[index]`.
    pub fn compile(snapshot: &Arc<Snapshot>, index: usize, clusters: &Arc<Clusters>) -> Table {
        Table::new(Model::Snapshot(snapshot.clone(), index), clusters)
    }

    /// A table the runtime made (not in the snapshot).
    pub fn own(t: RouteTable, clusters: &Arc<Clusters>) -> Table {
        Table::new(Model::Own(t), clusters)
    }

    fn new(model: Model, clusters: &Arc<Clusters>) -> Table {
        let t = model.table();
        let mut exact = HashMap::with_capacity(t.virtual_hosts.iter().map(|v| v.domains.len()).sum());
        let mut suffix: Vec<(Box<str>, usize)> = Vec::new();
        let mut prefix: Vec<(Box<str>, usize)> = Vec::new();
        let mut any = None;
        for (i, vh) in t.virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                if &**d == "*" {
                    any = any.or(Some(i));
                } else if let Some(s) = d.strip_prefix('*') {
                    suffix.push((Box::from(s.to_ascii_lowercase()), i));
                } else if let Some(p) = d.strip_suffix('*') {
                    prefix.push((Box::from(p.to_ascii_lowercase()), i));
                } else {
                    let d = if d.bytes().any(|b| b.is_ascii_uppercase()) {
                        Str::from(d.to_ascii_lowercase())
                    } else {
                        d.clone()
                    };
                    exact.entry(d).or_insert(i);
                }
            }
        }
        // Stable sorts keep the first virtual host among equally long wildcards.
        suffix.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        prefix.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let vhosts = t.virtual_hosts.iter().map(|_| OnceLock::new()).collect();
        let name = t.name.clone();
        Table { name, model, clusters: clusters.clone(), vhosts, exact, suffix, prefix, any }
    }

    /// Virtual hosts compiled so far.
    #[cfg(test)]
    fn compiled(&self) -> usize {
        self.vhosts.iter().filter(|v| v.get().is_some()).count()
    }

    /// Envoy's virtual host selection (port ignored): exact, longest `*suffix`, longest `prefix*`, `*`.
    pub fn select(&self, authority: &str) -> Option<&CompiledVhost> {
        let (host, _) = split_host_port(authority);
        let host: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        let i = self
            .exact
            .get(&*host)
            .copied()
            .or_else(|| self.suffix.iter().find(|(s, _)| host.len() > s.len() && host.ends_with(&**s)).map(|(_, i)| *i))
            .or_else(|| {
                self.prefix.iter().find(|(p, _)| host.len() > p.len() && host.starts_with(&**p)).map(|(_, i)| *i)
            })
            .or(self.any)?;
        let cell = self.vhosts.get(i)?;
        if let Some(compiled) = cell.get() {
            return Some(compiled);
        }
        let model = self.model.table().virtual_hosts.get(i)?;
        Some(cell.get_or_init(|| CompiledVhost::compile(model, &self.clusters)))
    }
}

/// A response header value for a redirect `location`.
pub(crate) fn location_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_compile::matcher::{self, RequestView};
    use weir_compile::model::{HeaderMatch, QueryMatch};

    fn route(m: RouteMatch) -> Route {
        Route {
            name: "".into(),
            matcher: m,
            action: RouteAction::DirectResponse { status: 200, body: None },
            timeout: None,
            retries: None,
            fault: None,
            mirrors: vec![],
            cors: None,
            request_headers: Default::default(),
            response_headers: Default::default(),
            origin: None,
        }
    }

    fn vh(name: &str, domains: &[&str]) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| Str::from(*d)).collect(),
            routes: vec![],
            require_tls: false,
        }
    }

    #[test]
    fn virtual_host_selection_agrees_with_the_explain_matcher() {
        let t = RouteTable {
            name: "80".into(),
            virtual_hosts: vec![
                vh("any", &["*"]),
                vh("prefix", &["foo.*"]),
                vh("short", &["*.com"]),
                vh("long", &["*.example.com"]),
                vh("exact", &["www.example.com", "10.0.0.1"]),
                vh("v6", &["[::1]"]),
            ],
        };
        let c = Table::own(t.clone(), &Arc::default());
        assert_eq!(c.compiled(), 0, "virtual hosts are compiled on first use");
        assert_eq!(c.select("www.example.com").map(|v| &*v.name), Some("exact"));
        assert_eq!(c.compiled(), 1);
        assert!(std::ptr::eq(c.select("10.0.0.1").unwrap(), c.select("www.example.com").unwrap()), "compiled once");
        assert_eq!(c.compiled(), 1);
        for host in [
            "www.example.com:8080",
            "WWW.Example.com",
            "api.example.com",
            "x.com",
            "foo.org",
            "bar.org",
            "10.0.0.1:80",
            "[::1]:80",
            ".com",
            "",
        ] {
            let want = matcher::select_virtual_host(&t, host).map(|v| v.name.to_string());
            let got = c.select(host).map(|v| v.name.to_string());
            assert_eq!(got, want, "{host}");
        }
    }

    #[test]
    fn route_matching_agrees_with_the_explain_matcher() {
        let hm = |name: &str, m: StringMatcher, invert: bool| HeaderMatch { name: name.into(), matcher: m, invert };
        let matches = vec![
            RouteMatch { path: Some(PathMatch::Exact("/Login".into())), ignore_case: true, ..Default::default() },
            RouteMatch { path: Some(PathMatch::Prefix("/api".into())), ..Default::default() },
            RouteMatch { path: Some(PathMatch::Regex("/v[0-9]+/.*".into())), ..Default::default() },
            RouteMatch {
                headers: vec![hm("end-user", StringMatcher::Exact("jason".into()), false)],
                ..Default::default()
            },
            RouteMatch { headers: vec![hm("x", StringMatcher::Regex("a.c".into()), true)], ..Default::default() },
            RouteMatch { headers: vec![hm("x", StringMatcher::Present, false)], ..Default::default() },
            RouteMatch {
                headers: vec![hm(":method", StringMatcher::Exact("POST".into()), false)],
                ..Default::default()
            },
            RouteMatch {
                query_params: vec![QueryMatch { name: "v".into(), matcher: StringMatcher::Prefix("2".into()) }],
                ..Default::default()
            },
        ];
        type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
        let requests: Vec<Case> = vec![
            ("GET", "/login", vec![]),
            ("GET", "/api/x?v=2", vec![("end-user", "jason")]),
            ("POST", "/v12/abc", vec![("x", "abc")]),
            ("GET", "/other?v=3", vec![("x", "zzz"), ("x", "abc")]),
            ("GET", "/", vec![("end-user", "bob")]),
        ];
        for m in &matches {
            let compiled = Matcher::compile(m);
            for (method, path, headers) in &requests {
                let owned: Vec<(String, String)> =
                    headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                let view = RequestView { method, scheme: "http", authority: "a", path, headers: &owned };
                let mut map = HeaderMap::new();
                for (k, v) in headers {
                    map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
                }
                let method: Method = method.parse().unwrap();
                let ours = ReqView { method: &method, scheme: "http", authority: "a", path, headers: &map };
                assert_eq!(compiled.matches(&ours), matcher::matches(m, &view), "{m:?} vs {path} {headers:?}");
            }
        }
        let _ = route(RouteMatch::default());
    }

    #[test]
    fn rewrites() {
        let mut r = route(RouteMatch { path: Some(PathMatch::Prefix("/api".into())), ..Default::default() });
        r.action = RouteAction::Forward {
            clusters: vec![],
            rewrite: Some(Rewrite { prefix: Some("/v2".into()), regex: None, authority: None }),
        };
        let c = CompiledRoute::compile(&r, &Arc::default());
        let Action::Forward { rewrite: Some(rw), .. } = &c.action else { panic!() };
        assert_eq!(c.rewrite_path(rw, "/api/x?q=1").as_deref(), Some("/v2/x?q=1"));
        r.matcher.path = Some(PathMatch::Exact("/old".into()));
        r.action = RouteAction::Forward {
            clusters: vec![],
            rewrite: Some(Rewrite { prefix: Some("/new".into()), regex: None, authority: None }),
        };
        let c = CompiledRoute::compile(&r, &Arc::default());
        let Action::Forward { rewrite: Some(rw), .. } = &c.action else { panic!() };
        assert_eq!(c.rewrite_path(rw, "/old?a").as_deref(), Some("/new?a"));
        r.action = RouteAction::Forward {
            clusters: vec![],
            rewrite: Some(Rewrite {
                prefix: None,
                regex: Some(("^/svc/([^/]+)/(.*)$".into(), "/\\2/\\1".into())),
                authority: None,
            }),
        };
        let c = CompiledRoute::compile(&r, &Arc::default());
        let Action::Forward { rewrite: Some(rw), .. } = &c.action else { panic!() };
        assert_eq!(c.rewrite_path(rw, "/svc/a/b/c").as_deref(), Some("/b/c/a"));
        assert_eq!(re2_substitution("$x\\1\\\\"), "$$x${1}\\");
    }

    #[test]
    fn redirect_locations() {
        let r = route(RouteMatch { path: Some(PathMatch::Prefix("/old".into())), ..Default::default() });
        let c = CompiledRoute::compile(&r, &Arc::default());
        let h = HeaderMap::new();
        let req =
            ReqView { method: &Method::GET, scheme: "http", authority: "a.com:8080", path: "/old/x?y=1", headers: &h };
        let rd = |f: fn(&mut Redirect)| {
            let mut rd =
                Redirect { code: 301, scheme: None, authority: None, port: None, path: None, prefix_rewrite: None };
            f(&mut rd);
            rd
        };
        assert_eq!(c.redirect_location(&rd(|_| {}), &req, 8080), "http://a.com:8080/old/x?y=1");
        assert_eq!(c.redirect_location(&rd(|r| r.path = Some("/new".into())), &req, 8080), "http://a.com:8080/new?y=1");
        assert_eq!(
            c.redirect_location(&rd(|r| r.prefix_rewrite = Some("/n".into())), &req, 8080),
            "http://a.com:8080/n/x?y=1"
        );
        assert_eq!(
            c.redirect_location(
                &rd(|r| {
                    r.scheme = Some("https".into());
                    r.authority = Some("b.com".into());
                    r.port = Some(RedirectPort::Explicit(443));
                }),
                &req,
                8080
            ),
            "https://b.com/old/x?y=1"
        );
        assert_eq!(
            c.redirect_location(&rd(|r| r.port = Some(RedirectPort::FromRequestPort)), &req, 80),
            "http://a.com/old/x?y=1"
        );
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("a:80"), ("a", Some(80)));
        assert_eq!(split_host_port("a"), ("a", None));
        assert_eq!(split_host_port("[::1]:9"), ("[::1]", Some(9)));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
    }
}
