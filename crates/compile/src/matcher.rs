//! Request matching over the compiled model, as Envoy does it: virtual host
//! by domain, then the first route whose conditions all hold. Used by
//! `weir explain` (request simulation) and shared with the data path, so
//! what `explain` says is what `run` does.

use std::borrow::Cow;

use crate::model::{HeaderMatch, PathMatch, Route, RouteMatch, RouteTable, StringMatcher, VirtualHost};

/// The parts of an HTTP request that routing looks at.
#[derive(Clone, Debug, Default)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Host header / `:authority`, port included when the client sent one.
    pub authority: &'a str,
    /// Path with query string.
    pub path: &'a str,
    /// Header names lower-case, in arrival order; repeated names allowed.
    pub headers: &'a [(String, String)],
}

impl RequestView<'_> {
    /// A header's value as Envoy matches it: repeated headers joined with `,`.
    pub fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            ":method" => return Some(Cow::Borrowed(self.method)),
            ":authority" | "host" => return Some(Cow::Borrowed(self.authority)),
            ":scheme" => return Some(Cow::Borrowed(self.scheme)),
            ":path" => return Some(Cow::Borrowed(self.path)),
            _ => {}
        }
        let mut values = self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        let first = values.next()?;
        match values.next() {
            None => Some(Cow::Borrowed(first)),
            Some(second) => {
                let mut joined = format!("{first},{second}");
                for v in values {
                    joined.push(',');
                    joined.push_str(v);
                }
                Some(Cow::Owned(joined))
            }
        }
    }

    /// The path without the query string.
    pub fn path_only(&self) -> &str {
        self.path.split_once('?').map_or(self.path, |(p, _)| p)
    }

    /// The first value of query parameter `name` (percent-decoding is not applied, like Envoy).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        let (_, q) = self.path.split_once('?')?;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }
}

/// The host part of an authority, lower-cased, port dropped (`[v6]:port` kept as `[v6]`).
pub fn host_without_port(authority: &str) -> String {
    let host = if authority.starts_with('[') {
        authority.find(']').map_or(authority, |i| &authority[..=i])
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    host.to_ascii_lowercase()
}

/// Envoy's virtual host selection: an exact domain, else the longest
/// `*suffix` wildcard, else the longest `prefix*` wildcard, else `*`.
/// The port of the Host header is ignored (Istio sets `ignore_port_in_host_matching`).
pub fn select_virtual_host<'t>(table: &'t RouteTable, authority: &str) -> Option<&'t VirtualHost> {
    let host = host_without_port(authority);
    let mut best_suffix: Option<(usize, &VirtualHost)> = None;
    let mut best_prefix: Option<(usize, &VirtualHost)> = None;
    let mut any: Option<&VirtualHost> = None;
    for vh in &table.virtual_hosts {
        for d in &vh.domains {
            let d = d.to_ascii_lowercase();
            if d == host {
                return Some(vh);
            }
            if d == "*" {
                any = any.or(Some(vh));
            } else if let Some(suffix) = d.strip_prefix('*') {
                if host.len() > suffix.len()
                    && host.ends_with(suffix)
                    && best_suffix.is_none_or(|(l, _)| suffix.len() > l)
                {
                    best_suffix = Some((suffix.len(), vh));
                }
            } else if let Some(prefix) = d.strip_suffix('*')
                && host.len() > prefix.len()
                && host.starts_with(prefix)
                && best_prefix.is_none_or(|(l, _)| prefix.len() > l)
            {
                best_prefix = Some((prefix.len(), vh));
            }
        }
    }
    best_suffix.map(|(_, v)| v).or(best_prefix.map(|(_, v)| v)).or(any)
}

/// Why a route did not match a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Index of the route in the virtual host.
    pub route: usize,
    /// How many of the route's conditions held before the failing one.
    pub conditions_met: usize,
    /// The failing condition, in words.
    pub reason: String,
}

/// The first route of `vh` that matches `req`, or why none did (one entry per route).
pub fn match_route<'r>(vh: &'r VirtualHost, req: &RequestView<'_>) -> Result<(usize, &'r Route), Vec<Mismatch>> {
    let mut misses = Vec::new();
    for (i, r) in vh.routes.iter().enumerate() {
        match check(&r.matcher, req) {
            Ok(()) => return Ok((i, r)),
            Err((met, reason)) => misses.push(Mismatch { route: i, conditions_met: met, reason }),
        }
    }
    Err(misses)
}

/// Whether `m` matches `req`.
pub fn matches(m: &RouteMatch, req: &RequestView<'_>) -> bool {
    check(m, req).is_ok()
}

/// `Ok` when every condition holds, else how many held and the first that failed.
fn check(m: &RouteMatch, req: &RequestView<'_>) -> Result<(), (usize, String)> {
    let mut met = 0;
    if let Some(p) = &m.path {
        let path = req.path_only();
        let ok = match p {
            PathMatch::Exact(e) => eq(path, e, m.ignore_case),
            PathMatch::Prefix(pre) => starts_with(path, pre, m.ignore_case),
            PathMatch::Regex(r) => full_regex(r, path),
        };
        if !ok {
            return Err((met, format!("path {path:?} does not match {}", describe_path(p, m.ignore_case))));
        }
        met += 1;
    }
    for h in &m.headers {
        let value = req.header(&h.name);
        if !header_ok(h, value.as_deref()) {
            let got = value.map_or("no such header".to_string(), |v| format!("{v:?}"));
            let want = describe(&h.matcher);
            let what = if h.invert { format!("must not match {want}") } else { format!("must match {want}") };
            return Err((met, format!("header {} {what}, got {got}", h.name)));
        }
        met += 1;
    }
    for q in &m.query_params {
        let value = req.query_param(&q.name);
        let ok = value.is_some_and(|v| string_ok(&q.matcher, v));
        if !ok {
            let got = value.map_or("no such parameter".to_string(), |v| format!("{v:?}"));
            return Err((met, format!("query parameter {} must match {}, got {got}", q.name, describe(&q.matcher))));
        }
        met += 1;
    }
    Ok(())
}

fn header_ok(h: &HeaderMatch, value: Option<&str>) -> bool {
    let hit = match (&h.matcher, value) {
        (StringMatcher::Present, v) => v.is_some(),
        // Inverted matchers treat a missing header as empty (Envoy `treat_missing_header_as_empty`).
        (m, None) if h.invert => string_ok(m, ""),
        (_, None) => false,
        (m, Some(v)) => string_ok(m, v),
    };
    hit != h.invert
}

fn string_ok(m: &StringMatcher, v: &str) -> bool {
    match m {
        StringMatcher::Exact(e) => v == &**e,
        StringMatcher::Prefix(p) => v.starts_with(&**p),
        StringMatcher::Regex(r) => full_regex(r, v),
        StringMatcher::Present => true,
    }
}

fn eq(a: &str, b: &str, ignore_case: bool) -> bool {
    if ignore_case { a.eq_ignore_ascii_case(b) } else { a == b }
}

fn starts_with(s: &str, prefix: &str, ignore_case: bool) -> bool {
    if ignore_case {
        s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    } else {
        s.starts_with(prefix)
    }
}

/// RE2-style full match. An invalid pattern matches nothing (validation rejects them first).
fn full_regex(pattern: &str, v: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|re| re.is_match(v))
}

fn describe(m: &StringMatcher) -> String {
    match m {
        StringMatcher::Exact(e) => format!("exact {e:?}"),
        StringMatcher::Prefix(p) => format!("prefix {p:?}"),
        StringMatcher::Regex(r) => format!("regex {r:?}"),
        StringMatcher::Present => "present".into(),
    }
}

fn describe_path(p: &PathMatch, ignore_case: bool) -> String {
    let s = match p {
        PathMatch::Exact(e) => format!("exact {e:?}"),
        PathMatch::Prefix(pre) => format!("prefix {pre:?}"),
        PathMatch::Regex(r) => format!("regex {r:?}"),
    };
    if ignore_case { format!("{s} (ignoring case)") } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RouteAction, Str};

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
    fn virtual_host_selection_follows_envoy_order() {
        let t = RouteTable {
            name: "80".into(),
            virtual_hosts: vec![
                vh("any", &["*"]),
                vh("prefix", &["foo.*"]),
                vh("short", &["*.com"]),
                vh("long", &["*.example.com"]),
                vh("exact", &["www.example.com", "10.0.0.1"]),
            ],
        };
        let pick = |h: &str| select_virtual_host(&t, h).map(|v| v.name.to_string());
        assert_eq!(pick("www.example.com:8080").as_deref(), Some("exact"));
        assert_eq!(pick("WWW.Example.com").as_deref(), Some("exact"));
        assert_eq!(pick("api.example.com").as_deref(), Some("long"));
        assert_eq!(pick("x.com").as_deref(), Some("short"));
        assert_eq!(pick("foo.org").as_deref(), Some("prefix"));
        assert_eq!(pick("bar.org").as_deref(), Some("any"));
        assert_eq!(pick("10.0.0.1:80").as_deref(), Some("exact"));
    }

    #[test]
    fn first_matching_route_wins_and_misses_say_why() {
        let mut v = vh("r", &["r"]);
        v.routes.push(route(RouteMatch {
            headers: vec![HeaderMatch {
                name: "end-user".into(),
                matcher: StringMatcher::Exact("jason".into()),
                invert: false,
            }],
            ..Default::default()
        }));
        v.routes.push(route(RouteMatch { path: Some(PathMatch::Prefix("/api".into())), ..Default::default() }));
        let headers = vec![("end-user".to_string(), "jason".to_string())];
        let req = RequestView { method: "GET", scheme: "http", authority: "r", path: "/", headers: &headers };
        assert_eq!(match_route(&v, &req).map(|(i, _)| i), Ok(0));
        let req = RequestView { headers: &[], path: "/api/v1?x=1", ..req };
        assert_eq!(match_route(&v, &req).map(|(i, _)| i), Ok(1));
        let req = RequestView { path: "/other", ..req };
        let misses = match_route(&v, &req).unwrap_err();
        assert!(misses[0].reason.contains("header end-user must match exact \"jason\", got no such header"));
        assert!(misses[1].reason.contains("path \"/other\" does not match prefix \"/api\""));
    }

    #[test]
    fn inverted_and_presence_matchers() {
        let m = |matcher, invert| RouteMatch {
            headers: vec![HeaderMatch { name: "x".into(), matcher, invert }],
            ..Default::default()
        };
        let with = vec![("x".to_string(), "abc".to_string())];
        let req = |h: &'static [(String, String)]| RequestView { headers: h, ..Default::default() };
        let with: &'static [(String, String)] = Box::leak(with.into_boxed_slice());
        assert!(matches(&m(StringMatcher::Present, false), &req(with)));
        assert!(!matches(&m(StringMatcher::Present, false), &req(&[])));
        assert!(matches(&m(StringMatcher::Exact("zzz".into()), true), &req(with)));
        assert!(matches(&m(StringMatcher::Exact("zzz".into()), true), &req(&[])));
        assert!(!matches(&m(StringMatcher::Regex("a.c".into()), true), &req(with)));
        assert!(matches(&m(StringMatcher::Regex("a.c".into()), false), &req(with)));
        assert!(!matches(&m(StringMatcher::Regex("a".into()), false), &req(with)), "regex is a full match");
    }

    #[test]
    fn query_params_and_case_insensitive_paths() {
        let m = RouteMatch {
            path: Some(PathMatch::Exact("/Login".into())),
            ignore_case: true,
            query_params: vec![crate::model::QueryMatch {
                name: "v".into(),
                matcher: StringMatcher::Exact("2".into()),
            }],
            ..Default::default()
        };
        let req = RequestView { path: "/login?a=1&v=2", ..Default::default() };
        assert!(matches(&m, &req));
        let req = RequestView { path: "/login?v=3", ..Default::default() };
        assert!(!matches(&m, &req));
    }
}
