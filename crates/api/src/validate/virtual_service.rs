//! VirtualService validation (`ValidateVirtualService` in istio/istio `pkg/config/validation`).
//!
//! Three layers, in this order: the CRD schema (oneofs, byte fields) and its
//! CEL duration rules; the webhook's semantic checks (`validation.go`,
//! `virtualservice.go`, `agent.ValidateHTTPRetry`); and the unreachable-rule
//! analysis, which only produces warnings.

use base64::Engine as _;

use crate::types::{
    CorsPolicy, FaultAbort, FaultDelay, HeaderOperations, Headers, HttpDirectResponse, HttpFaultInjection,
    HttpMatchRequest, HttpMirrorPolicy, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, HttpRouteDestination,
    L4MatchAttributes, ObjectMeta, RegexRewrite, RouteDestination, StringMatch, TcpRoute, TlsMatchAttributes, TlsRoute,
    VirtualService,
};

use super::common;
use super::{P, Report, gofmt, schema};

/// The gateway name that means "all sidecars".
const MESH_GATEWAY: &str = "mesh";
/// Set by istiod on VirtualServices it generates from Gateway API routes.
const ROUTE_SEMANTICS_ANNOTATION: &str = "internal.istio.io/route-semantics";
const ROUTE_SEMANTICS_GATEWAY: &str = "gateway";
const CEL_DURATION: &str = "must be a valid duration greater than 1ms";
const KB: usize = 1024;
const MB: usize = 1024 * KB;

pub(super) fn validate(meta: &ObjectMeta, spec: &VirtualService, p: &P, r: &mut Report) {
    crd(spec, p, r);

    let vs = spec;
    if vs.hosts.is_empty() {
        if !vs.gateways.is_empty() {
            r.error(&p.f("gateways"), "delegate virtual service must have no gateways specified");
        }
        if !vs.tls.is_empty() {
            r.error(&p.f("tls"), "delegate virtual service must have no tls route specified");
        }
        if !vs.tcp.is_empty() {
            r.error(&p.f("tcp"), "delegate virtual service must have no tcp route specified");
        }
    }
    let gateway_semantics =
        meta.annotations.get(ROUTE_SEMANTICS_ANNOTATION).is_some_and(|v| v == ROUTE_SEMANTICS_GATEWAY);

    let (applies_to_mesh, applies_to_gateway) = if vs.gateways.is_empty() {
        (true, false)
    } else {
        gateway_names(&vs.gateways, gateway_semantics, &p.f("gateways"), r);
        let gw = is_gateway(vs);
        (!gw, gw)
    };

    if !applies_to_gateway {
        for (i, http) in vs.http.iter().enumerate() {
            for (j, m) in http.matches.iter().enumerate() {
                let mp = p.f("http").i(i).f("match").i(j);
                for (field, map) in [("headers", &m.headers), ("withoutHeaders", &m.without_headers)] {
                    for key in map.keys().filter(|k| common::is_jwt_claim_route(k)) {
                        r.error(
                            &mp.f(field).k(key),
                            format!(
                                "JWT claim based routing (key: {key}) is only supported for gateway, found no gateways: {}",
                                gofmt::strings_v(&vs.gateways)
                            ),
                        );
                    }
                }
            }
        }
    }

    let mut all_hosts_valid = true;
    for (i, host) in vs.hosts.iter().enumerate() {
        let res = if applies_to_gateway {
            common::wildcard_domain_for_gateway_vs(is_sni_host(vs), host)
        } else {
            common::wildcard_domain(host)
        };
        match res {
            Err(e) => {
                if !common::is_ip(host) {
                    r.error(&p.f("hosts").i(i), e);
                    all_hosts_valid = false;
                }
            }
            Ok(()) if applies_to_mesh && host == "*" => {
                r.error(
                    &p.f("hosts").i(i),
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                all_hosts_valid = false;
            }
            Ok(()) => {}
        }
    }
    if all_hosts_valid {
        for (i, a) in vs.hosts.iter().enumerate() {
            for (j, b) in vs.hosts.iter().enumerate().skip(i + 1) {
                if host_matches(a, b) {
                    r.error(&p.f("hosts").i(j), format!("duplicate hosts in virtual service: {a} & {b}"));
                }
            }
        }
    }

    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        r.error(p, "http, tcp or tls must be provided in virtual service");
    }
    for (i, http) in vs.http.iter().enumerate() {
        http_route(http, vs.hosts.is_empty(), gateway_semantics, &p.f("http").i(i), r);
    }
    for (i, tls) in vs.tls.iter().enumerate() {
        tls_route(tls, vs, gateway_semantics, &p.f("tls").i(i), r);
    }
    for (i, tcp) in vs.tcp.iter().enumerate() {
        tcp_route(tcp, gateway_semantics, &p.f("tcp").i(i), r);
    }

    common::export_to(&meta.namespace, &vs.export_to, false, false, &p.f("exportTo"), r);

    unreachable_http_rules(&vs.http, &p.f("http"), r);
    unreachable_l4_rules(vs.tcp.iter().map(|t| &t.matches), &p.f("tcp"), r);
    unreachable_l4_rules(vs.tls.iter().map(|t| &t.matches), &p.f("tls"), r);
}

// ---------------------------------------------------------------------------
// CRD schema and CEL rules
// ---------------------------------------------------------------------------

/// What the API server checks before the webhook runs: each proto oneof is a
/// schema `oneOf`, `bytes` must be base64, durations carry a CEL minimum.
fn crd(vs: &VirtualService, p: &P, r: &mut Report) {
    for (i, h) in vs.http.iter().enumerate() {
        let hp = p.f("http").i(i);
        for (j, m) in h.matches.iter().enumerate() {
            let mp = hp.f("match").i(j);
            for (field, sm) in
                [("uri", &m.uri), ("scheme", &m.scheme), ("method", &m.method), ("authority", &m.authority)]
            {
                if let Some(sm) = sm {
                    string_match_oneof(sm, &mp.f(field), r);
                }
            }
            for (field, map) in
                [("headers", &m.headers), ("queryParams", &m.query_params), ("withoutHeaders", &m.without_headers)]
            {
                for (k, sm) in map {
                    string_match_oneof(sm, &mp.f(field).k(k), r);
                }
            }
        }
        if let Some(rd) = &h.redirect {
            schema::one_of(r, &hp.f("redirect"), &[rd.port.is_some(), rd.derive_port.is_some()]);
        }
        if let Some(body) = h.direct_response.as_ref().and_then(|d| d.body.as_ref()) {
            let bp = hp.f("directResponse").f("body");
            schema::one_of(r, &bp, &[body.string.is_some(), body.bytes.is_some()]);
            if let Some(b) = &body.bytes
                && decode_base64(b).is_none()
            {
                r.error(&bp.f("bytes"), format!("in body must be of type byte: {}", gofmt::quote(b)));
            }
        }
        if let Some(f) = &h.fault {
            if let Some(a) = &f.abort {
                schema::one_of(
                    r,
                    &hp.f("fault").f("abort"),
                    &[a.http_status.is_some(), a.grpc_status.is_some(), a.http2_error.is_some()],
                );
            }
            if let Some(d) = &f.delay {
                let dp = hp.f("fault").f("delay");
                schema::one_of(r, &dp, &[d.fixed_delay.is_some(), d.exponential_delay.is_some()]);
                cel_duration(d.fixed_delay.as_ref(), &dp.f("fixedDelay"), r);
                cel_duration(d.exponential_delay.as_ref(), &dp.f("exponentialDelay"), r);
            }
        }
        if let Some(c) = &h.cors_policy {
            for (k, o) in c.allow_origins.iter().enumerate() {
                string_match_oneof(o, &hp.f("corsPolicy").f("allowOrigins").i(k), r);
            }
            cel_duration(c.max_age.as_ref(), &hp.f("corsPolicy").f("maxAge"), r);
        }
        if let Some(rt) = &h.retries {
            cel_duration(rt.per_try_timeout.as_ref(), &hp.f("retries").f("perTryTimeout"), r);
            cel_duration(rt.backoff.as_ref(), &hp.f("retries").f("backoff"), r);
        }
        cel_duration(h.timeout.as_ref(), &hp.f("timeout"), r);
    }
}

fn string_match_oneof(sm: &StringMatch, p: &P, r: &mut Report) {
    schema::one_of(r, p, &[sm.exact.is_some(), sm.prefix.is_some(), sm.regex.is_some()]);
}

fn cel_duration(d: Option<&crate::types::Duration>, p: &P, r: &mut Report) {
    if d.is_some_and(|d| d.as_nanos() < 1_000_000) {
        r.error(p, CEL_DURATION);
    }
}

/// protojson reads `bytes` in standard or URL-safe base64, padded or not,
/// with Go's leniency (line breaks skipped, trailing bits ignored).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::alphabet::{STANDARD, URL_SAFE};
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let alphabet = if s.contains(['-', '_']) { &URL_SAFE } else { &STANDARD };
    let cleaned: String = s.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    GeneralPurpose::new(alphabet, config).decode(cleaned).ok()
}

// ---------------------------------------------------------------------------
// Gateways and hosts
// ---------------------------------------------------------------------------

/// `validateGatewayNames`. A name without `/` ends the check of the list, as in Istio.
fn gateway_names(names: &[String], gateway_semantics: bool, p: &P, r: &mut Report) {
    for (i, name) in names.iter().enumerate() {
        let ip = p.i(i);
        let Some((ns, gw)) = name.split_once('/') else {
            if name.contains('.') {
                let parts: Vec<&str> = name.split('.').collect();
                let recommended = format!("{}/{}", parts[1], parts[0]);
                r.warn(
                    &ip,
                    format!(
                        "using legacy gatewayName format {}; prefer the <namespace>/<name> format: {}",
                        gofmt::quote(name),
                        gofmt::quote(&recommended)
                    ),
                );
            }
            r.check(&ip, common::fqdn(name));
            return;
        };
        if ns.is_empty() || gw.is_empty() {
            r.error(&ip, "config namespace and gateway name cannot be empty");
        }
        if !common::is_dns1123_label(ns) {
            r.error(&ip, format!("invalid value for namespace: {}", gofmt::quote(ns)));
        }
        if !common::is_dns1123_label(gw) && !gateway_semantics {
            r.error(&ip, format!("invalid value for gateway name: {}", gofmt::quote(gw)));
        }
    }
}

/// `isGateway`: anything not listing `mesh` (including no gateways at all).
fn is_gateway(vs: &VirtualService) -> bool {
    !vs.gateways.iter().any(|g| g == MESH_GATEWAY)
}

fn is_sni_host(vs: &VirtualService) -> bool {
    vs.tls.iter().flat_map(|t| &t.matches).any(|m| !m.sni_hosts.is_empty())
}

fn is_wildcarded(h: &str) -> bool {
    h.starts_with('*')
}

/// `host.Name.Matches`: the two names overlap.
fn host_matches(n: &str, o: &str) -> bool {
    match (is_wildcarded(n), is_wildcarded(o)) {
        (true, true) => {
            if n.len() < o.len() {
                o[1..].ends_with(&n[1..])
            } else {
                n[1..].ends_with(&o[1..])
            }
        }
        (true, false) => o.ends_with(&n[1..]),
        (false, true) => n.ends_with(&o[1..]),
        (false, false) => n == o,
    }
}

/// `host.Name.SubsetOf`: `n` is covered by `o`.
fn host_subset_of(n: &str, o: &str) -> bool {
    match (is_wildcarded(n), is_wildcarded(o)) {
        (true, true) => n.len() >= o.len() && n[1..].ends_with(&o[1..]),
        (true, false) => false,
        (false, true) => n.ends_with(&o[1..]),
        (false, false) => n == o,
    }
}

// ---------------------------------------------------------------------------
// HTTP routes
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RouteType {
    Independent,
    Root,
    Delegate,
}

/// `validateHTTPRoute`.
fn http_route(http: &HttpRoute, delegate: bool, gateway_semantics: bool, p: &P, r: &mut Report) {
    let route_type = if delegate {
        RouteType::Delegate
    } else if http.delegate.is_some() {
        RouteType::Root
    } else {
        RouteType::Independent
    };
    http_route_conflict(http, route_type, p, r);
    http_match_requests(http, p, r);
    header_operations(http.headers.as_ref(), &p.f("headers"), r);
    cors_policy(http.cors_policy.as_ref(), &p.f("corsPolicy"), r);
    fault_injection(http.fault.as_ref(), &p.f("fault"), r);

    if let Some(v) = http.mirror_percent {
        let mp = p.f("mirrorPercent");
        if v > 100 {
            r.error(&mp, format!("mirror_percent must have a max value of 100 (it has {v})"));
        }
        r.warn(&mp, "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead");
    }
    if let Some(pct) = &http.mirror_percentage {
        let mp = p.f("mirrorPercentage");
        if pct.value > 100.0 {
            r.error(
                &mp,
                format!("mirror_percentage must have a max value of 100 (it has {})", gofmt::float_f(pct.value)),
            );
        }
        if pct.value < 0.0 {
            r.error(
                &mp,
                format!("mirror_percentage must have a min value of 0 (it has {})", gofmt::float_f(pct.value)),
            );
        }
    }

    if let Some(m) = &http.mirror {
        common::destination(m, &p.f("mirror"), r);
    }
    mirrors(&http.mirrors, &p.f("mirrors"), r);
    redirect(http.redirect.as_ref(), &http.matches, &p.f("redirect"), r);
    direct_response(http.direct_response.as_ref(), &p.f("directResponse"), r);
    if let Some(rt) = &http.retries {
        http_retry(rt, &p.f("retries"), r);
    }
    rewrite(http.rewrite.as_ref(), &p.f("rewrite"), r);
    authority_rewrite(http.rewrite.as_ref(), http.headers.as_ref(), p, r);
    http_route_destinations(&http.route, gateway_semantics, &p.f("route"), r);
    if let Some(t) = &http.timeout {
        r.check(&p.f("timeout"), common::duration(t));
    }
}

/// `validateHTTPRouteConflict`: which actions a route may combine.
fn http_route_conflict(http: &HttpRoute, route_type: RouteType, p: &P, r: &mut Report) {
    if route_type == RouteType::Root {
        if http.redirect.is_some() {
            r.error(&p.f("redirect"), format!("root HTTP route {} must not specify redirect", http.name));
        }
        if !http.route.is_empty() {
            r.error(&p.f("route"), format!("root HTTP route {} must not specify route", http.name));
        }
        return;
    }
    if route_type == RouteType::Delegate && http.delegate.is_some() {
        r.error(&p.f("delegate"), "delegate HTTP route cannot contain delegate");
    }
    if http.redirect.is_some() {
        if !http.route.is_empty() {
            r.error(&p.f("route"), "HTTP route cannot contain both route and redirect");
        }
        if http.fault.is_some() {
            r.error(&p.f("fault"), "HTTP route cannot contain both fault and redirect");
        }
        if http.rewrite.is_some() {
            r.error(&p.f("rewrite"), "HTTP route rule cannot contain both rewrite and redirect");
        }
        if http.direct_response.is_some() {
            r.error(&p.f("directResponse"), "HTTP route rule cannot contain both direct_response and redirect");
        }
    } else if http.direct_response.is_some() {
        if !http.route.is_empty() {
            r.error(&p.f("route"), "HTTP route cannot contain both route and direct_response");
        }
        if http.fault.is_some() {
            r.error(&p.f("fault"), "HTTP route cannot contain both fault and direct_response");
        }
        if http.rewrite.is_some() {
            r.error(&p.f("rewrite"), "HTTP route rule cannot contain both rewrite and direct_response");
        }
    } else if http.route.is_empty() {
        r.error(p, "HTTP route, redirect or direct_response is required");
    }
    if http.mirror.is_some() && !http.mirrors.is_empty() {
        r.error(&p.f("mirrors"), "HTTP route cannot contain both mirror and mirrors");
    }
}

/// `validateHTTPRouteMatchRequest`.
fn http_match_requests(http: &HttpRoute, p: &P, r: &mut Report) {
    let mp = |j: usize| p.f("match").i(j);
    for (j, m) in http.matches.iter().enumerate() {
        let mp = mp(j);
        for (name, sm) in &m.headers {
            let hp = mp.f("headers").k(name);
            r.check(&hp, common::header_name_or_jwt_claim(name));
            r.check(&hp, string_match(Some(sm), "headers"));
        }
        for (name, sm) in &m.without_headers {
            let hp = mp.f("withoutHeaders").k(name);
            r.check(&hp, common::header_name_or_jwt_claim(name));
            // `*` is not a regex here: it means "header present".
            if sm.regex.as_deref() != Some("*") {
                r.check(&hp, string_match(Some(sm), "withoutHeaders"));
            }
        }
        // An empty URI prefix is allowed; the other matchers need a value.
        r.check(&mp.f("uri"), string_match_regexp(m.uri.as_ref(), "uri"));
        r.check(&mp.f("scheme"), string_match(m.scheme.as_ref(), "scheme"));
        r.check(&mp.f("method"), string_match(m.method.as_ref(), "method"));
        r.check(&mp.f("authority"), string_match(m.authority.as_ref(), "authority"));
        for (k, qp) in &m.query_params {
            r.check(&mp.f("queryParams").k(k), string_match(Some(qp), "queryParams"));
        }
    }
    for (j, m) in http.matches.iter().enumerate() {
        let mp = mp(j);
        if m.port != 0 {
            r.check(&mp.f("port"), common::port(i64::from(m.port)));
        }
        common::labels(&m.source_labels, &mp.f("sourceLabels"), r);
        gateway_names(&m.gateways, false, &mp.f("gateways"), r);
        if !m.source_namespace.is_empty() && !common::is_dns1123_label(&m.source_namespace) {
            r.error(&mp.f("sourceNamespace"), format!("sourceNamespace match {} is invalid", m.source_namespace));
        }
    }
}

/// The oneof arm of a `StringMatch` (the first one set, if several are).
enum MatchType<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
    Unset,
}

fn match_type(sm: &StringMatch) -> MatchType<'_> {
    if let Some(e) = &sm.exact {
        MatchType::Exact(e)
    } else if let Some(pf) = &sm.prefix {
        MatchType::Prefix(pf)
    } else if let Some(re) = &sm.regex {
        MatchType::Regex(re)
    } else {
        MatchType::Unset
    }
}

/// `validateStringMatch`.
fn string_match(sm: Option<&StringMatch>, where_: &str) -> Result<(), String> {
    match sm.map(match_type) {
        Some(MatchType::Prefix("")) => {
            Err(format!("{}: prefix string match should not be empty", gofmt::quote(where_)))
        }
        Some(MatchType::Regex(_)) => string_match_regexp(sm, where_),
        _ => Ok(()),
    }
}

/// `validateStringMatchRegexp`.
fn string_match_regexp(sm: Option<&StringMatch>, where_: &str) -> Result<(), String> {
    match sm.map(match_type) {
        Some(MatchType::Regex("")) => Err(format!("{}: regex string match should not be empty", gofmt::quote(where_))),
        Some(MatchType::Regex(re)) => string_regexp(re, where_),
        _ => Ok(()),
    }
}

/// `validateStringRegexp`: at most 1024 bytes and valid RE2 as Go parses it.
fn string_regexp(re: &str, where_: &str) -> Result<(), String> {
    if re.len() > 1024 {
        return Err(format!("{}: regex is too large, max length allowed is 1024", gofmt::quote(where_)));
    }
    goregexp::check(re).map_err(|e| {
        format!(
            "{}: {e}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)",
            gofmt::quote(where_)
        )
    })
}

/// Header manipulation of a route or of one destination.
fn header_operations(headers: Option<&Headers>, p: &P, r: &mut Report) {
    let Some(h) = headers else { return };
    if let Some(req) = &h.request {
        let rp = p.f("request");
        header_ops(req, &rp, common::header_with_authority_operation_name, r);
    }
    if let Some(resp) = &h.response {
        let rp = p.f("response");
        header_ops(resp, &rp, common::header_operation_name, r);
    }
}

fn header_ops(ops: &HeaderOperations, p: &P, set_name: fn(&str) -> Result<(), String>, r: &mut Report) {
    for (field, map) in [("add", &ops.add), ("set", &ops.set)] {
        for (name, val) in map {
            let hp = p.f(field).k(name);
            r.check(&hp, set_name(name));
            r.check(&hp, header_value(val));
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        r.check(&p.f("remove").i(i), common::header_operation_name(name));
    }
}

/// `ValidateHTTPHeaderValue`: no control characters (tab is fine), and a
/// well-formed Envoy formatter.
fn header_value(value: &str) -> Result<(), String> {
    if value.chars().any(|c| matches!(c, '\u{0}'..='\u{8}' | '\u{a}'..='\u{1f}' | '\u{7f}')) {
        return Err(format!("header value configuration {value} is invalid"));
    }
    envoy_header_format(value).map_err(|e| format!("header value configuration: {e}"))
}

/// Port of Envoy's header formatter parser (`header_parser.cc`), as Istio's
/// `validateHeaderValue`: `%VAR%`, `%VAR(args)%`, `%VAR(["a", "b"])%`, `%%`.
fn envoy_header_format(v: &str) -> Result<(), String> {
    #[derive(PartialEq)]
    enum S {
        Literal,
        VariableName,
        ExpectArray,
        ExpectString,
        String,
        ExpectArrayDelimiterOrEnd,
        ExpectArgsEnd,
        ExpectVariableEnd,
    }
    let b = v.as_bytes();
    let mut pos = 0;
    let mut state = S::Literal;
    while pos < b.len() {
        let ch = b[pos];
        let has_next = pos + 1 < b.len();
        match state {
            S::Literal => {
                if ch == b'%' {
                    if !has_next {
                        return Err("invalid header configuration. Un-escaped %".into());
                    }
                    if b[pos + 1] == b'%' {
                        pos += 1;
                    } else {
                        state = S::VariableName;
                    }
                }
            }
            S::VariableName => {
                if ch == b'%' {
                    state = S::Literal;
                } else if ch == b'(' {
                    state = S::ExpectArray;
                }
            }
            S::ExpectArray => {
                if ch == b'[' {
                    state = S::ExpectString;
                } else if ch != b' ' {
                    state = S::String;
                }
            }
            S::ExpectArrayDelimiterOrEnd => {
                if ch == b',' {
                    state = S::ExpectString;
                } else if ch == b']' {
                    state = S::ExpectArgsEnd;
                } else if ch != b' ' {
                    return Err("invalid header configuration. Expecting ',', ']', or whitespace".into());
                }
            }
            S::ExpectString => {
                if ch == b'"' {
                    state = S::String;
                } else if ch != b' ' {
                    return Err("invalid header configuration. Expecting '\"'".into());
                }
            }
            S::String => {
                if ch == b'\\' {
                    if !has_next {
                        return Err("invalid header configuration. Un-terminated backslash in JSON string".into());
                    }
                    pos += 1;
                } else if ch == b')' {
                    state = S::ExpectVariableEnd;
                } else if ch == b'"' {
                    state = S::ExpectArrayDelimiterOrEnd;
                }
            }
            S::ExpectArgsEnd => {
                if ch == b')' {
                    state = S::ExpectVariableEnd;
                } else if ch != b' ' {
                    return Err(
                        "invalid header configuration. Expecting ')' or whitespace after '{}', but found '{}'".into()
                    );
                }
            }
            S::ExpectVariableEnd => {
                if ch == b'%' {
                    state = S::Literal;
                } else if ch != b' ' {
                    return Err("invalid header configuration. Expecting '%' or whitespace after".into());
                }
            }
        }
        pos += 1;
    }
    if state != S::Literal {
        return Err(format!("invalid header configuration. Un-terminated variable expression '{v}'"));
    }
    Ok(())
}

const CORS_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"];

/// `validateCORSPolicy`.
fn cors_policy(policy: Option<&CorsPolicy>, p: &P, r: &mut Report) {
    let Some(c) = policy else { return };
    for (i, o) in c.allow_origins.iter().enumerate() {
        let op = p.f("allowOrigins").i(i);
        let value = match match_type(o) {
            MatchType::Exact(v) | MatchType::Prefix(v) | MatchType::Regex(v) => v,
            MatchType::Unset => "",
        };
        if value.is_empty() {
            r.error(&op, format!("'{value}' is not a valid match type for CORS allow origins"));
        } else {
            r.check(&op, string_match_regexp(Some(o), "corsPolicy.allowOrigins"));
        }
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !CORS_METHODS.contains(&m.as_str()) {
            r.error(&p.f("allowMethods").i(i), format!("{} is not a supported HTTP method", gofmt::quote(m)));
        }
    }
    for (field, names) in [("allowHeaders", &c.allow_headers), ("exposeHeaders", &c.expose_headers)] {
        for (i, n) in names.iter().enumerate() {
            r.check(&p.f(field).i(i), common::cors_header_name(n));
        }
    }
    if let Some(d) = &c.max_age {
        let ap = p.f("maxAge");
        r.check(&ap, common::duration(d));
        if d.seconds_and_nanos().1 > 0 {
            r.error(&ap, "max_age duration is accurate only to seconds precision");
        }
    }
}

/// `validateHTTPFaultInjection`.
fn fault_injection(fault: Option<&HttpFaultInjection>, p: &P, r: &mut Report) {
    let Some(f) = fault else { return };
    if f.abort.is_none() && f.delay.is_none() {
        r.error(p, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(a) = &f.abort {
        fault_abort(a, &p.f("abort"), r);
    }
    if let Some(d) = &f.delay {
        fault_delay(d, &p.f("delay"), r);
    }
}

/// gRPC status code names, indexed by code number (Istio's `grpc.SupportedGRPCStatus`).
pub const GRPC_STATUS: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The number of a gRPC status code name (`UNAVAILABLE` -> 14), as fault aborts use it.
pub fn grpc_status_code(name: &str) -> Option<u32> {
    GRPC_STATUS.iter().position(|c| *c == name).and_then(|i| u32::try_from(i).ok())
}

/// `validateHTTPFaultInjectionAbort`.
fn fault_abort(a: &FaultAbort, p: &P, r: &mut Report) {
    r.check(&p.f("percentage"), common::percentage(a.percentage.as_ref()));
    if let Some(g) = &a.grpc_status {
        if !GRPC_STATUS.contains(&g.as_str()) {
            r.error(
                &p.f("grpcStatus"),
                format!(
                    "gRPC status {} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md \
                     for a list of supported codes, for example 'NOT_FOUND'",
                    gofmt::quote(g)
                ),
            );
        }
    } else if a.http2_error.is_some() {
        r.error(&p.f("http2Error"), "HTTP/2 abort fault injection not supported yet");
    } else if let Some(s) = a.http_status {
        r.check(&p.f("httpStatus"), http_status(s));
    } else {
        r.warn(p, "abort configured, but error type not set");
    }
}

/// `validateHTTPStatus` (600 itself passes, as in Istio).
fn http_status(status: i32) -> Result<(), String> {
    if !(200..=600).contains(&status) {
        return Err(format!("HTTP status {status} is not in range 200-599"));
    }
    Ok(())
}

/// `validateHTTPFaultInjectionDelay`.
fn fault_delay(d: &FaultDelay, p: &P, r: &mut Report) {
    r.check(&p.f("percentage"), common::percentage(d.percentage.as_ref()));
    if let Some(fd) = &d.fixed_delay {
        r.check(&p.f("fixedDelay"), common::duration(fd));
    } else if let Some(ed) = &d.exponential_delay {
        let ep = p.f("exponentialDelay");
        r.check(&ep, common::duration(ed));
        r.error(&ep, "exponentialDelay not supported yet");
    }
}

/// `validateHTTPMirrors`.
fn mirrors(mirrors: &[HttpMirrorPolicy], p: &P, r: &mut Report) {
    for (i, m) in mirrors.iter().enumerate() {
        let mp = p.i(i);
        let Some(d) = &m.destination else {
            r.error(&mp.f("destination"), "destination is required for mirrors");
            continue;
        };
        common::destination(d, &mp.f("destination"), r);
        if let Some(pct) = &m.percentage {
            let pp = mp.f("percentage");
            if pct.value > 100.0 {
                r.error(
                    &pp,
                    format!("mirror percentage must have a max value of 100 (it has {})", gofmt::float_f(pct.value)),
                );
            }
            if pct.value < 0.0 {
                r.error(
                    &pp,
                    format!("mirror percentage must have a min value of 0 (it has {})", gofmt::float_f(pct.value)),
                );
            }
        }
    }
}

/// `validateHTTPRedirect`: reports the first problem only, as Istio does.
fn redirect(rd: Option<&HttpRedirect>, matches: &[HttpMatchRequest], p: &P, r: &mut Report) {
    let Some(rd) = rd else { return };
    if let Err((field, msg)) = redirect_check(rd, matches) {
        r.error(&if field.is_empty() { p.clone() } else { p.f(field) }, msg);
    }
}

fn redirect_check(rd: &HttpRedirect, matches: &[HttpMatchRequest]) -> Result<(), (&'static str, String)> {
    if !rd.uri.is_empty() && !rd.prefix_rewrite.is_empty() {
        return Err(("prefixRewrite", "redirect may only specify one of uri or prefix_rewrite".into()));
    }
    if !rd.prefix_rewrite.is_empty()
        && matches.iter().any(|m| m.uri.as_ref().is_some_and(|u| !matches!(match_type(u), MatchType::Prefix(_))))
    {
        return Err((
            "prefixRewrite",
            "redirect prefix_rewrite requires all URI matches to use prefix match type".into(),
        ));
    }
    if rd.uri.is_empty()
        && rd.prefix_rewrite.is_empty()
        && rd.authority.is_empty()
        && rd.port.is_none()
        && rd.derive_port.is_none()
        && rd.scheme.is_empty()
    {
        return Err(("", "redirect must specify URI, authority, scheme, or port".into()));
    }
    if rd.redirect_code != 0 && !(300..=399).contains(&rd.redirect_code) {
        return Err(("redirectCode", format!("{} is not a valid redirect code, must be 3xx", rd.redirect_code)));
    }
    if !rd.scheme.is_empty() && rd.scheme != "http" && rd.scheme != "https" {
        return Err(("scheme", "invalid redirect scheme, must be \"http\" or \"https\"".into()));
    }
    if let Some(port) = rd.port.filter(|p| *p > 0) {
        common::port(i64::from(port)).map_err(|e| ("port", e))?;
    }
    Ok(())
}

/// `validateHTTPDirectResponse`.
fn direct_response(dr: Option<&HttpDirectResponse>, p: &P, r: &mut Report) {
    let Some(dr) = dr else { return };
    if let Some(body) = &dr.body {
        let size = if let Some(s) = &body.string {
            s.len()
        } else if let Some(b) = &body.bytes {
            decode_base64(b).map_or(0, |d| d.len())
        } else {
            0
        };
        let bp = p.f("body");
        if size > MB {
            r.error(&bp, "large direct_responses may impact control plane performance, must be less than 1MB");
        } else if size > 100 * KB {
            r.warn(&bp, "large direct_responses may impact control plane performance");
        }
    }
    // Istio converts the uint32 to int32 before checking it.
    r.check(&p.f("status"), http_status(dr.status as i32));
}

const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Status codes Go's `net/http.StatusText` knows: the codes Istio accepts in
/// `retryOn` (shared with the compiler, which turns them into retriable codes).
pub fn is_known_http_status(code: i64) -> bool {
    matches!(
        code,
        100..=103
            | 200..=208
            | 226
            | 300..=305
            | 307
            | 308
            | 400..=418
            | 421..=426
            | 428
            | 429
            | 431
            | 451
            | 500..=508
            | 510
            | 511
    )
}

/// `agent.ValidateHTTPRetry`.
fn http_retry(rt: &HttpRetry, p: &P, r: &mut Report) {
    if rt.attempts < 0 {
        r.error(&p.f("attempts"), "attempts cannot be negative");
    }
    if rt.attempts == 0
        && (rt.per_try_timeout.is_some() || !rt.retry_on.is_empty() || rt.retry_remote_localities.is_some())
    {
        r.error(p, "http retry policy configured when attempts are set to 0 (disabled)");
    }
    if let Some(d) = &rt.per_try_timeout {
        r.check(&p.f("perTryTimeout"), common::duration(d));
    }
    if !rt.retry_on.is_empty() {
        for policy in rt.retry_on.split(',') {
            // Istio ignores Atoi's error and looks up whatever number it returned.
            if !is_known_http_status(gofmt::atoi_value(policy)) && !RETRY_ON_POLICIES.contains(&policy) {
                r.error(&p.f("retryOn"), format!("{} is not a valid retryOn policy", gofmt::quote(policy)));
            }
        }
    }
    if let Some(d) = &rt.backoff {
        r.check(&p.f("backoff"), common::duration(d));
    }
}

/// `validateHTTPRewrite`: reports the first problem only.
fn rewrite(rw: Option<&HttpRewrite>, p: &P, r: &mut Report) {
    let Some(rw) = rw else { return };
    if !rw.uri.is_empty() && rw.uri_regex_rewrite.is_some() {
        r.error(p, "rewrite may only contain one of URI or UriRegexRewrite");
        return;
    }
    if rw.uri.is_empty() && rw.uri_regex_rewrite.is_none() && rw.authority.is_empty() {
        r.error(
            p,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. \
             Only one of URI or UriRegexRewrite may be specified",
        );
        return;
    }
    if let Some(rr) = &rw.uri_regex_rewrite
        && let Err(e) = uri_regex_rewrite(rr)
    {
        r.error(&p.f("uriRegexRewrite"), format!("UriRegexRewrite has errors\n{e}"));
    }
}

/// `validateURIRegexRewrite`.
fn uri_regex_rewrite(rr: &RegexRewrite) -> Result<(), String> {
    if rr.match_.is_empty() || rr.rewrite.is_empty() {
        return Err("UriRegexRewrite requires both Rewrite and Match fields to be specified".into());
    }
    string_regexp(&rr.match_, "HTTPRewrite.UriRegexRewrite.Match")
}

/// `validateAuthorityRewrite`: the authority may be rewritten in one place only.
fn authority_rewrite(rw: Option<&HttpRewrite>, headers: Option<&Headers>, p: &P, r: &mut Report) {
    let mut current = rw.map_or("", |rw| rw.authority.as_str());
    let Some(req) = headers.and_then(|h| h.request.as_ref()) else { return };
    for (field, map) in [("set", &req.set), ("add", &req.add)] {
        for (k, v) in map.iter().filter(|(k, _)| common::is_authority_header(k)) {
            if !current.is_empty() {
                r.error(
                    &p.f("headers").f("request").f(field).k(k),
                    format!(
                        "authority header cannot be set multiple times: have {}, attempting to set {}",
                        gofmt::quote(current),
                        gofmt::quote(v)
                    ),
                );
                return;
            }
            current = v;
        }
    }
}

/// `validateHTTPRouteDestinations`.
fn http_route_destinations(routes: &[HttpRouteDestination], gateway_semantics: bool, p: &P, r: &mut Report) {
    let mut total: i32 = 0;
    for (i, rd) in routes.iter().enumerate() {
        let rp = p.i(i);
        if rd.destination.is_none() {
            r.error(&rp.f("destination"), "destination is required");
        }
        header_operations(rd.headers.as_ref(), &rp.f("headers"), r);
        if !gateway_semantics && let Some(d) = &rd.destination {
            common::destination(d, &rp.f("destination"), r);
        }
        r.check(&rp.f("weight"), common::weight(rd.weight));
        total = total.wrapping_add(rd.weight);
    }
    if routes.len() > 1 && total == 0 {
        r.error(p, "total destination weight = 0");
    }
}

/// `validateRouteDestinations` (TCP and TLS).
fn route_destinations(routes: &[RouteDestination], gateway_semantics: bool, p: &P, r: &mut Report) {
    let mut total: i32 = 0;
    for (i, rd) in routes.iter().enumerate() {
        let rp = p.i(i);
        match &rd.destination {
            None => r.error(&rp.f("destination"), "destination is required"),
            Some(d) if !gateway_semantics => common::destination(d, &rp.f("destination"), r),
            Some(_) => {}
        }
        r.check(&rp.f("weight"), common::weight(rd.weight));
        total = total.wrapping_add(rd.weight);
    }
    if routes.len() > 1 && total == 0 {
        r.error(p, "total destination weight = 0");
    }
}

// ---------------------------------------------------------------------------
// TLS and TCP routes
// ---------------------------------------------------------------------------

/// `validateTLSRoute`.
fn tls_route(tls: &TlsRoute, vs: &VirtualService, gateway_semantics: bool, p: &P, r: &mut Report) {
    if tls.matches.is_empty() {
        r.error(&p.f("match"), "TLS route must have at least one match condition");
    }
    for (i, m) in tls.matches.iter().enumerate() {
        tls_match(m, vs, &p.f("match").i(i), r);
    }
    if tls.route.is_empty() {
        r.error(&p.f("route"), "TLS route is required");
    }
    route_destinations(&tls.route, gateway_semantics, &p.f("route"), r);
}

/// `validateTLSMatch`.
fn tls_match(m: &TlsMatchAttributes, vs: &VirtualService, p: &P, r: &mut Report) {
    if m.sni_hosts.is_empty() {
        r.error(&p.f("sniHosts"), "TLS match must have at least one SNI host");
    } else {
        for (i, sni) in m.sni_hosts.iter().enumerate() {
            sni_host(sni, vs, &p.f("sniHosts").i(i), r);
        }
    }
    for (i, s) in m.destination_subnets.iter().enumerate() {
        r.check(&p.f("destinationSubnets").i(i), common::ip_subnet(s));
    }
    if m.port != 0 {
        r.check(&p.f("port"), common::port(i64::from(m.port)));
    }
    common::labels(&m.source_labels, &p.f("sourceLabels"), r);
    gateway_names(&m.gateways, false, &p.f("gateways"), r);
}

/// `validateSniHost`: a valid name (an IP is only a warning) covered by one of the VS hosts.
fn sni_host(sni: &str, vs: &VirtualService, p: &P, r: &mut Report) {
    let res =
        if is_gateway(vs) { common::wildcard_domain_for_gateway_vs(true, sni) } else { common::wildcard_domain(sni) };
    if let Err(e) = res {
        if common::is_ip(sni) {
            r.warn(
                p,
                format!(
                    "using an IP address ({}) goes against SNI spec and most clients do not support this",
                    gofmt::quote(sni)
                ),
            );
        } else {
            r.error(p, e);
        }
        return;
    }
    if vs.hosts.iter().any(|h| host_subset_of(sni, h)) {
        return;
    }
    r.error(
        p,
        format!(
            "SNI host {} is not a compatible subset of any of the virtual service hosts: [{}]",
            gofmt::quote(sni),
            vs.hosts.join(", ")
        ),
    );
}

/// `validateTCPRoute`.
fn tcp_route(tcp: &TcpRoute, gateway_semantics: bool, p: &P, r: &mut Report) {
    for (i, m) in tcp.matches.iter().enumerate() {
        tcp_match(m, &p.f("match").i(i), r);
    }
    if tcp.route.is_empty() {
        r.error(&p.f("route"), "TCP route is required");
    }
    route_destinations(&tcp.route, gateway_semantics, &p.f("route"), r);
}

/// `validateTCPMatch`.
fn tcp_match(m: &L4MatchAttributes, p: &P, r: &mut Report) {
    for (i, s) in m.destination_subnets.iter().enumerate() {
        r.check(&p.f("destinationSubnets").i(i), common::ip_subnet(s));
    }
    if m.port != 0 {
        r.check(&p.f("port"), common::port(i64::from(m.port)));
    }
    common::labels(&m.source_labels, &p.f("sourceLabels"), r);
    gateway_names(&m.gateways, false, &p.f("gateways"), r);
}

// ---------------------------------------------------------------------------
// Unreachable rules (warnings)
// ---------------------------------------------------------------------------

fn warn_unused(r: &mut Report, p: &P, rule: &str, reason: &str) {
    r.warn(p, format!("virtualService rule {rule} not used ({reason})"));
}

fn warn_ineffective(r: &mut Report, p: &P, rule: &str, matchn: &str, dup: &str) {
    r.warn(
        p,
        format!("virtualService rule {rule} match {matchn} is not used (duplicate/overlapping match in rule {dup})"),
    );
}

fn http_route_name(route: &HttpRoute, n: usize) -> String {
    if route.name.is_empty() { format!("#{n}") } else { gofmt::quote(&route.name) }
}

fn http_request_name(m: &HttpMatchRequest, n: usize) -> String {
    if m.name.is_empty() { format!("#{n}") } else { gofmt::quote(&m.name) }
}

/// A prefix URI match reduced to what the overlap analysis compares.
struct PrefixMatch {
    rule: usize,
    matchn: usize,
    route_str: String,
    match_str: String,
    prefix: String,
    port: u32,
    method: String,
    authority: String,
    headers: Vec<(String, String)>,
    query_params: Vec<(String, String)>,
    without_headers: Vec<(String, String)>,
}

/// `assignExactOrPrefix`.
fn exact_or_prefix(sm: Option<&StringMatch>) -> String {
    match sm.map(match_type) {
        Some(MatchType::Exact(e)) if !e.is_empty() => format!("exact:{e}"),
        Some(MatchType::Prefix(pf)) if !pf.is_empty() => format!("prefix:{pf}"),
        _ => String::new(),
    }
}

fn prefix_match(route: &HttpRoute, m: &HttpMatchRequest, rule: usize, matchn: usize) -> Option<PrefixMatch> {
    let prefix = match m.uri.as_ref().map(match_type) {
        Some(MatchType::Prefix(pf)) if !pf.is_empty() => pf.to_string(),
        _ => return None,
    };
    let mut method = exact_or_prefix(m.method.as_ref());
    if method.is_empty() {
        method = "exact:GET".into();
    }
    let reduce = |map: &std::collections::BTreeMap<String, StringMatch>| {
        map.iter().map(|(k, v)| (k.clone(), exact_or_prefix(Some(v)))).collect::<Vec<_>>()
    };
    Some(PrefixMatch {
        rule,
        matchn,
        route_str: http_route_name(route, rule),
        match_str: http_request_name(m, matchn),
        prefix,
        port: m.port,
        method,
        authority: exact_or_prefix(m.authority.as_ref()),
        headers: reduce(&m.headers),
        query_params: reduce(&m.query_params),
        without_headers: reduce(&m.without_headers),
    })
}

/// `coveredValidation`: every request `b` matches is also matched by the earlier `a`.
fn covered(a: &PrefixMatch, b: &PrefixMatch) -> bool {
    let value_covered = |va: &str, vb: &str| va == vb || va.starts_with(vb);
    let map_covered = |ma: &[(String, String)], mb: &[(String, String)]| {
        ma.len() == mb.len()
            && ma.iter().all(|(k, va)| mb.iter().find(|(kb, _)| kb == k).is_some_and(|(_, vb)| value_covered(va, vb)))
    };
    b.prefix.starts_with(&a.prefix)
        && a.port == b.port
        && value_covered(&a.method, &b.method)
        && value_covered(&a.authority, &b.authority)
        && map_covered(&a.headers, &b.headers)
        && map_covered(&a.query_params, &b.query_params)
        && map_covered(&a.without_headers, &b.without_headers)
}

/// `analyzeUnreachableHTTPRules`.
fn unreachable_http_rules(routes: &[HttpRoute], p: &P, r: &mut Report) {
    let mut seen: Vec<(HttpMatchRequest, usize)> = Vec::new();
    let mut empty_match_seen = false;
    let mut prefixes: Vec<PrefixMatch> = Vec::new();
    for (rule, route) in routes.iter().enumerate() {
        let rp = p.i(rule);
        let name = http_route_name(route, rule);
        if route.matches.is_empty() {
            if empty_match_seen {
                warn_unused(r, &rp, &name, "only the last rule can have no matches");
            }
            empty_match_seen = true;
            continue;
        }
        let mut duplicates = 0;
        for (matchn, m) in route.matches.iter().enumerate() {
            if empty_match_seen {
                warn_unused(r, &rp, &name, "route without matches defined before");
                continue;
            }
            let mut key = m.clone();
            key.name.clear();
            if let Some((_, dup)) = seen.iter().find(|(k, _)| *k == key) {
                let dup_name = http_route_name(&routes[*dup], *dup);
                warn_ineffective(r, &rp.f("match").i(matchn), &name, &http_request_name(m, matchn), &dup_name);
                duplicates += 1;
                continue;
            }
            seen.push((key, rule));
            if let Some(pm) = prefix_match(route, m, rule, matchn) {
                prefixes.push(pm);
            }
        }
        if duplicates == route.matches.len() {
            warn_unused(r, &rp, &name, "all matches used by prior rules");
        }
    }
    for (i, a) in prefixes.iter().enumerate() {
        for b in &prefixes[i + 1..] {
            if a.prefix != b.prefix && covered(a, b) {
                warn_ineffective(
                    r,
                    &p.i(b.rule).f("match").i(b.matchn),
                    &b.route_str,
                    &format!("{} of prefix {}", b.match_str, b.prefix),
                    &format!("{} of prefix {} on {}", a.match_str, a.prefix, a.route_str),
                );
            }
        }
    }
}

/// `analyzeUnreachableTCPRules` / `analyzeUnreachableTLSRules`: routes and matches have no names.
fn unreachable_l4_rules<'a, M: PartialEq + 'a>(routes: impl Iterator<Item = &'a Vec<M>>, p: &P, r: &mut Report) {
    let mut seen: Vec<(&M, usize)> = Vec::new();
    let mut empty_match_seen = false;
    for (rule, matches) in routes.enumerate() {
        let rp = p.i(rule);
        let name = format!("#{rule}");
        if matches.is_empty() {
            if empty_match_seen {
                warn_unused(r, &rp, &name, "only the last rule can have no matches");
            }
            empty_match_seen = true;
            continue;
        }
        let mut duplicates = 0;
        for (matchn, m) in matches.iter().enumerate() {
            if empty_match_seen {
                warn_unused(r, &rp, &name, "route without matches defined before");
                continue;
            }
            if let Some((_, dup)) = seen.iter().find(|(k, _)| *k == m) {
                warn_ineffective(r, &rp.f("match").i(matchn), &name, &format!("#{matchn}"), &format!("#{dup}"));
                duplicates += 1;
            } else {
                seen.push((m, rule));
            }
        }
        if duplicates == matches.len() {
            warn_unused(r, &rp, &name, "all matches used by prior rules");
        }
    }
}

// ---------------------------------------------------------------------------
// Go regexp syntax check
// ---------------------------------------------------------------------------

/// Whether Go's `regexp.Compile` (RE2 syntax, Perl flags) accepts a pattern,
/// with Go's error text. Only the parts of the parser that can fail are
/// modelled: the parse stack keeps, per expression, the largest product of
/// counted repetitions along any path (Go's `repeatIsValid` limit of 1000).
mod goregexp {
    use std::fmt;

    const MAX_REPEAT: i64 = 1000;

    #[derive(Debug, PartialEq, Eq)]
    pub struct Error {
        code: &'static str,
        expr: String,
    }

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "error parsing regexp: {}: `{}`", self.code, self.expr)
        }
    }

    const INVALID_CHAR_RANGE: &str = "invalid character class range";
    const INVALID_ESCAPE: &str = "invalid escape sequence";
    const INVALID_NAMED_CAPTURE: &str = "invalid named capture";
    const INVALID_PERL_OP: &str = "invalid or unsupported Perl syntax";
    const INVALID_REPEAT_OP: &str = "invalid nested repetition operator";
    const INVALID_REPEAT_SIZE: &str = "invalid repeat count";
    const MISSING_BRACKET: &str = "missing closing ]";
    const MISSING_PAREN: &str = "missing closing )";
    const MISSING_REPEAT_ARGUMENT: &str = "missing argument to repetition operator";
    const TRAILING_BACKSLASH: &str = "trailing backslash at end of expression";
    const UNEXPECTED_PAREN: &str = "unexpected )";

    fn err<T>(code: &'static str, expr: &str) -> Result<T, Error> {
        Err(Error { code, expr: expr.to_string() })
    }

    /// An open group (or the whole pattern): completed alternatives and the
    /// expressions of the current one, each as its repeat product.
    #[derive(Default)]
    struct Frame {
        alternatives: u64,
        current: Vec<u64>,
    }

    impl Frame {
        fn value(&self) -> u64 {
            self.alternatives.max(self.current.iter().copied().max().unwrap_or(1))
        }
    }

    struct Parser {
        frames: Vec<Frame>,
    }

    impl Parser {
        fn push(&mut self) {
            if let Some(f) = self.frames.last_mut() {
                f.current.push(1);
            }
        }
        fn open(&mut self) {
            self.frames.push(Frame::default());
        }
        fn bar(&mut self) {
            if let Some(f) = self.frames.last_mut() {
                f.alternatives = f.value();
                f.current.clear();
            }
        }
        /// Closes a group; false if none is open.
        fn close(&mut self) -> bool {
            if self.frames.len() < 2 {
                return false;
            }
            let v = self.frames.pop().map_or(1, |f| f.value());
            if let Some(f) = self.frames.last_mut() {
                f.current.push(v);
            }
            true
        }
        /// Applies a repetition operator to the last expression. `before` starts at the
        /// operator, `after` follows it; `counted` is `{min,max}` (max -1 = unbounded).
        fn repeat<'a>(
            &mut self,
            s: &str,
            counted: Option<(i64, i64)>,
            before: &'a str,
            mut after: &'a str,
            last_repeat: Option<usize>,
        ) -> Result<&'a str, Error> {
            if let Some(rest) = after.strip_prefix('?') {
                after = rest;
            }
            if let Some(lr) = last_repeat {
                return err(INVALID_REPEAT_OP, &s[lr..s.len() - after.len()]);
            }
            let op_text = &before[..before.len() - after.len()];
            let Some(top) = self.frames.last_mut().and_then(|f| f.current.last_mut()) else {
                return err(MISSING_REPEAT_ARGUMENT, op_text);
            };
            if let Some((min, max)) = counted {
                let m = if max == -1 { min } else { max };
                if max == 0 {
                    *top = 1;
                } else if m > 0 {
                    *top = top.saturating_mul(m as u64);
                }
                if (min >= 2 || max >= 2) && max != 0 && *top > MAX_REPEAT as u64 {
                    return err(INVALID_REPEAT_SIZE, op_text);
                }
            }
            Ok(after)
        }
    }

    pub fn check(s: &str) -> Result<(), Error> {
        let mut p = Parser { frames: vec![Frame::default()] };
        let mut t = s;
        let mut last_repeat: Option<usize> = None;
        while let Some(c) = t.chars().next() {
            let pos = s.len() - t.len();
            let mut repeat = None;
            match c {
                '(' if t[1..].starts_with('?') => t = perl_flags(&mut p, t)?,
                '(' => {
                    p.open();
                    t = &t[1..];
                }
                '|' => {
                    p.bar();
                    t = &t[1..];
                }
                ')' => {
                    if !p.close() {
                        return err(UNEXPECTED_PAREN, s);
                    }
                    t = &t[1..];
                }
                '^' | '$' | '.' => {
                    p.push();
                    t = &t[1..];
                }
                '[' => {
                    t = class(t)?;
                    p.push();
                }
                '*' | '+' | '?' => {
                    t = p.repeat(s, None, t, &t[1..], last_repeat)?;
                    repeat = Some(pos);
                }
                '{' => match parse_repeat(t) {
                    None => {
                        p.push();
                        t = &t[1..];
                    }
                    Some((min, max, after)) => {
                        if !(0..=MAX_REPEAT).contains(&min) || max > MAX_REPEAT || (max >= 0 && min > max) {
                            return err(INVALID_REPEAT_SIZE, &t[..t.len() - after.len()]);
                        }
                        t = p.repeat(s, Some((min, max)), t, after, last_repeat)?;
                        repeat = Some(pos);
                    }
                },
                '\\' => t = escape(&mut p, t)?,
                c => {
                    p.push();
                    t = &t[c.len_utf8()..];
                }
            }
            last_repeat = repeat;
        }
        if p.frames.len() != 1 {
            return err(MISSING_PAREN, s);
        }
        Ok(())
    }

    /// A backslash outside a class.
    fn escape<'a>(p: &mut Parser, t: &'a str) -> Result<&'a str, Error> {
        match t.as_bytes().get(1) {
            Some(b'A' | b'b' | b'B' | b'z') => {
                p.push();
                return Ok(&t[2..]);
            }
            Some(b'C') => return err(INVALID_ESCAPE, &t[..2]),
            Some(b'Q') => {
                let rest = &t[2..];
                let (lit, after) = match rest.find("\\E") {
                    Some(i) => (&rest[..i], &rest[i + 2..]),
                    None => (rest, ""),
                };
                for _ in lit.chars() {
                    p.push();
                }
                return Ok(after);
            }
            _ => {}
        }
        if let Some(rest) = unicode_class(t)? {
            p.push();
            return Ok(rest);
        }
        if let Some(rest) = perl_class(t) {
            p.push();
            return Ok(rest);
        }
        let (_, rest) = parse_escape(t)?;
        p.push();
        Ok(rest)
    }

    /// `(?flags)`, `(?flags:`, `(?P<name>` and `(?<name>`.
    fn perl_flags<'a>(p: &mut Parser, s: &'a str) -> Result<&'a str, Error> {
        let b = s.as_bytes();
        let starts_with_p = b.len() > 4 && b[2] == b'P' && b[3] == b'<';
        let starts_with_name = b.len() > 3 && b[2] == b'<';
        if starts_with_p || starts_with_name {
            let start = if starts_with_name { 3 } else { 4 };
            let Some(end) = s.find('>') else { return err(INVALID_NAMED_CAPTURE, s) };
            let name = &s[start..end];
            if name.is_empty() || !name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
                return err(INVALID_NAMED_CAPTURE, &s[..=end]);
            }
            p.open();
            return Ok(&s[end + 1..]);
        }
        let mut t = &s[2..];
        let mut negated = false;
        let mut saw_flag = false;
        while let Some(c) = t.chars().next() {
            t = &t[c.len_utf8()..];
            match c {
                'i' | 'm' | 's' | 'U' => saw_flag = true,
                '-' if !negated => {
                    negated = true;
                    saw_flag = false;
                }
                ':' | ')' if !negated || saw_flag => {
                    if c == ':' {
                        p.open();
                    }
                    return Ok(t);
                }
                _ => break,
            }
        }
        err(INVALID_PERL_OP, &s[..s.len() - t.len()])
    }

    /// `{n}`, `{n,}` or `{n,m}`; min is -1 when a number is too large.
    fn parse_repeat(s: &str) -> Option<(i64, i64, &str)> {
        let s = s.strip_prefix('{')?;
        let (mut min, s) = parse_int(s)?;
        let max;
        let mut s = s;
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
            if s.starts_with('}') {
                max = -1;
            } else {
                let (m, rest) = parse_int(s)?;
                s = rest;
                max = m;
                if max < 0 {
                    min = -1;
                }
            }
        } else {
            if s.is_empty() {
                return None;
            }
            max = min;
        }
        let rest = s.strip_prefix('}')?;
        Some((min, max, rest))
    }

    /// A decimal without leading zeros; -1 when it has too many digits.
    fn parse_int(s: &str) -> Option<(i64, &str)> {
        let b = s.as_bytes();
        if b.first().is_none_or(|c| !c.is_ascii_digit()) {
            return None;
        }
        if b.len() >= 2 && b[0] == b'0' && b[1].is_ascii_digit() {
            return None;
        }
        let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut v: i64 = 0;
        for d in &b[..n] {
            if v >= 100_000_000 {
                v = -1;
                break;
            }
            v = v * 10 + i64::from(d - b'0');
        }
        Some((v, &s[n..]))
    }

    /// `[...]`; returns the text after the closing bracket.
    fn class(s: &str) -> Result<&str, Error> {
        let mut t = &s[1..];
        if let Some(rest) = t.strip_prefix('^') {
            t = rest;
        }
        let mut first = true;
        while t.is_empty() || !t.starts_with(']') || first {
            first = false;
            if t.len() > 2
                && t.starts_with("[:")
                && let Some(rest) = named_class(t)?
            {
                t = rest;
                continue;
            }
            if let Some(rest) = unicode_class(t)? {
                t = rest;
                continue;
            }
            if let Some(rest) = perl_class(t) {
                t = rest;
                continue;
            }
            let rng = t;
            let (lo, rest) = class_char(t, s)?;
            t = rest;
            let b = t.as_bytes();
            if b.len() >= 2 && b[0] == b'-' && b[1] != b']' {
                let (hi, rest) = class_char(&t[1..], s)?;
                t = rest;
                if hi < lo {
                    return err(INVALID_CHAR_RANGE, &rng[..rng.len() - t.len()]);
                }
            }
        }
        Ok(&t[1..])
    }

    fn class_char<'a>(t: &'a str, whole: &str) -> Result<(u32, &'a str), Error> {
        match t.chars().next() {
            None => err(MISSING_BRACKET, whole),
            Some('\\') => parse_escape(t),
            Some(c) => Ok((c as u32, &t[c.len_utf8()..])),
        }
    }

    const POSIX_CLASSES: &[&str] = &[
        "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space", "upper",
        "word", "xdigit",
    ];

    /// `[:alpha:]` inside a class; `None` when `:]` never follows.
    fn named_class(t: &str) -> Result<Option<&str>, Error> {
        let Some(i) = t[2..].find(":]") else { return Ok(None) };
        let name = &t[..i + 4];
        let inner = &name[2..name.len() - 2];
        if !POSIX_CLASSES.contains(&inner.strip_prefix('^').unwrap_or(inner)) {
            return err(INVALID_CHAR_RANGE, name);
        }
        Ok(Some(&t[i + 4..]))
    }

    fn perl_class(t: &str) -> Option<&str> {
        let b = t.as_bytes();
        (b.len() >= 2 && b[0] == b'\\' && matches!(b[1], b'd' | b'D' | b's' | b'S' | b'w' | b'W')).then(|| &t[2..])
    }

    /// `\pL`, `\p{Greek}`, `\P{^Lu}`; `None` when `t` is not one.
    fn unicode_class(s: &str) -> Result<Option<&str>, Error> {
        let b = s.as_bytes();
        if b.len() < 2 || b[0] != b'\\' || (b[1] != b'p' && b[1] != b'P') {
            return Ok(None);
        }
        let (seq, name, rest) = match s[2..].chars().next() {
            Some('{') => {
                let Some(end) = s.find('}') else { return err(INVALID_CHAR_RANGE, s) };
                (&s[..=end], &s[3..end], &s[end + 1..])
            }
            Some(c) => {
                let l = 2 + c.len_utf8();
                (&s[..l], &s[2..l], &s[l..])
            }
            None => (s, "", ""),
        };
        let name = name.strip_prefix('^').unwrap_or(name);
        if !is_unicode_table(name) {
            return err(INVALID_CHAR_RANGE, seq);
        }
        Ok(Some(rest))
    }

    const CATEGORIES: &[&str] = &[
        "C", "Cc", "Cf", "Cn", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N", "Nd", "Nl",
        "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So", "Z", "Zl", "Zp", "Zs",
    ];

    const CATEGORY_ALIASES: &[&str] = &[
        "Casedletter",
        "Closepunctuation",
        "Combiningmark",
        "Connectorpunctuation",
        "Control",
        "Currencysymbol",
        "Dashpunctuation",
        "Decimalnumber",
        "Enclosingmark",
        "Finalpunctuation",
        "Format",
        "Initialpunctuation",
        "Letter",
        "Letternumber",
        "Lineseparator",
        "Lowercaseletter",
        "Mark",
        "Mathsymbol",
        "Modifierletter",
        "Modifiersymbol",
        "Nonspacingmark",
        "Number",
        "Openpunctuation",
        "Other",
        "Otherletter",
        "Othernumber",
        "Otherpunctuation",
        "Othersymbol",
        "Paragraphseparator",
        "Privateuse",
        "Punctuation",
        "Separator",
        "Spaceseparator",
        "Spacingmark",
        "Surrogate",
        "Symbol",
        "Titlecaseletter",
        "Unassigned",
        "Uppercaseletter",
        "Cntrl",
        "Digit",
        "Punct",
    ];

    /// Go's `canonicalName`: first letter upper, rest lower, no `_`, `-` or spaces.
    fn canonical_name(name: &str) -> String {
        let mut out = String::with_capacity(name.len());
        for c in name.chars().filter(|c| !matches!(c, '_' | '-' | ' ')) {
            if out.is_empty() {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c.to_ascii_lowercase());
            }
        }
        out
    }

    /// Go's `unicodeTable`: categories, their long aliases, scripts, Any/Assigned/ASCII.
    fn is_unicode_table(name: &str) -> bool {
        let canon = canonical_name(name);
        if matches!(canon.as_str(), "Any" | "Assigned" | "Ascii" | "Lc") {
            return true;
        }
        if CATEGORIES.contains(&canon.as_str()) || CATEGORY_ALIASES.contains(&canon.as_str()) {
            return true;
        }
        // Scripts: the Unicode script names, which the regex crate knows.
        !canon.is_empty()
            && canon.chars().all(|c| c.is_ascii_alphanumeric())
            && regex::Regex::new(&format!(r"\p{{sc={canon}}}")).is_ok()
    }

    /// `parseEscape`: one escaped character; returns its value and the rest.
    fn parse_escape(s: &str) -> Result<(u32, &str), Error> {
        let Some(c) = s[1..].chars().next() else { return err(TRAILING_BACKSLASH, "") };
        let mut t = &s[1 + c.len_utf8()..];
        let invalid = |t: &str| err(INVALID_ESCAPE, &s[..s.len() - t.len()]);
        let is_octal = |t: &str| t.as_bytes().first().is_some_and(|b| (b'0'..=b'7').contains(b));
        match c {
            '1'..='7' if !is_octal(t) => invalid(t),
            '0'..='7' => {
                let mut r = c as u32 - '0' as u32;
                for _ in 1..3 {
                    if !is_octal(t) {
                        break;
                    }
                    r = r * 8 + u32::from(t.as_bytes()[0] - b'0');
                    t = &t[1..];
                }
                Ok((r, t))
            }
            'x' => {
                let Some(c) = t.chars().next() else { return invalid(t) };
                t = &t[c.len_utf8()..];
                if c == '{' {
                    let mut r: u32 = 0;
                    let mut nhex = 0;
                    loop {
                        let Some(c) = t.chars().next() else { return invalid(t) };
                        t = &t[c.len_utf8()..];
                        if c == '}' {
                            break;
                        }
                        let Some(v) = c.to_digit(16) else { return invalid(t) };
                        r = r * 16 + v;
                        if r > 0x10FFFF {
                            return invalid(t);
                        }
                        nhex += 1;
                    }
                    if nhex == 0 {
                        return invalid(t);
                    }
                    return Ok((r, t));
                }
                let x = c.to_digit(16);
                let c2 = t.chars().next();
                if let Some(c2) = c2 {
                    t = &t[c2.len_utf8()..];
                }
                match (x, c2.and_then(|c| c.to_digit(16))) {
                    (Some(x), Some(y)) => Ok((x * 16 + y, t)),
                    _ => invalid(t),
                }
            }
            'a' => Ok((7, t)),
            'f' => Ok((12, t)),
            'n' => Ok((10, t)),
            'r' => Ok((13, t)),
            't' => Ok((9, t)),
            'v' => Ok((11, t)),
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((c as u32, t)),
            _ => invalid(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::validate::validate as validate_object;
    use crate::{LoadOptions, load_str};

    /// Loads `spec` (flow YAML) as a VirtualService and validates it.
    fn run(spec: &str) -> Report {
        run_with_meta(spec, "{name: t}")
    }

    fn run_with_meta(spec: &str, meta: &str) -> Report {
        let doc = format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {meta}\nspec: {spec}\n");
        let loaded = load_str(&doc, "t.yaml", &LoadOptions::default());
        assert!(
            loaded.problems.is_empty() && loaded.errors.is_empty(),
            "{spec}: {:?} {:?}",
            loaded.problems,
            loaded.errors
        );
        assert_eq!(loaded.objects.len(), 1, "{spec}");
        validate_object(&loaded.objects[0])
    }

    fn messages(r: &Report) -> Vec<String> {
        r.findings.iter().map(|f| format!("{} {}: {}", f.severity, f.path, f.message)).collect()
    }

    /// `(name, spec, valid, warning)`; `warning: None` means "not asserted".
    type Case<'a> = (&'a str, String, bool, Option<bool>);

    fn table(cases: &[Case<'_>]) {
        let mut failures = Vec::new();
        for (name, spec, valid, warning) in cases {
            let r = run(spec);
            if r.has_errors() == *valid {
                failures.push(format!("{name}: want valid={valid}: {:?}", messages(&r)));
            }
            if let Some(w) = warning
                && (r.warnings().count() > 0) != *w
            {
                failures.push(format!("{name}: want warning={w}: {:?}", messages(&r)));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    fn has(r: &Report, path: &str, msg: &str) -> bool {
        r.findings.iter().any(|f| f.path == path && f.message.contains(msg))
    }

    const DEST: &str = "route: [{destination: {host: foo.baz}}]";

    /// An HTTP route in a VirtualService with hosts (`validateHTTPRoute(route, false, false)`).
    fn http(route: &str) -> String {
        format!("{{hosts: [foo.bar], http: [{route}]}}")
    }

    /// An HTTP route in a delegate VirtualService (`validateHTTPRoute(route, true, false)`).
    fn delegate_http(route: &str) -> String {
        format!("{{http: [{route}]}}")
    }

    fn c(name: &str, spec: String, valid: bool) -> Case<'_> {
        (name, spec, valid, None)
    }

    #[test]
    fn istio_validate_virtual_service() {
        let cases: Vec<Case<'_>> = vec![
            ("simple", http(&format!("{{{DEST}}}")), true, Some(false)),
            (
                "allow sni based domains",
                "{hosts: [outbound_.15010_._.istiod.istio-system.svc.cluster.local], gateways: [ns1/gateway], \
                 tls: [{match: [{sniHosts: [outbound_.15010_._.istiod.istio-system.svc.cluster.local]}], \
                 route: [{destination: {host: istio.istio-system.svc.cluster.local}}]}]}"
                    .into(),
                true,
                Some(false),
            ),
            ("duplicate hosts", format!("{{hosts: ['*.foo.bar', '*.bar'], http: [{{{DEST}}}]}}"), false, Some(false)),
            ("with no destination", "{hosts: ['*.foo.bar', '*.bar'], http: [{route: [{}]}]}".into(), false, None),
            (
                "destination with out hosts",
                "{hosts: ['*.foo.bar', '*.bar'], http: [{route: [{destination: {}}]}]}".into(),
                false,
                None,
            ),
            ("delegate with no hosts", format!("{{http: [{{{DEST}}}]}}"), true, Some(false)),
            ("bad host", format!("{{hosts: [foo.ba!r], http: [{{{DEST}}}]}}"), false, Some(false)),
            ("no tcp or http routing", "{hosts: [foo.bar]}".into(), false, Some(false)),
            (
                "bad gateway",
                format!("{{hosts: [foo.bar], gateways: [b@dgateway], http: [{{{DEST}}}]}}"),
                false,
                Some(false),
            ),
            (
                "FQDN for gateway",
                format!("{{hosts: [foo.bar], gateways: [gateway.example.com], http: [{{{DEST}}}]}}"),
                true,
                Some(true),
            ),
            (
                "namespace/name for gateway",
                format!("{{hosts: [foo.bar], gateways: [ns1/gateway], http: [{{{DEST}}}]}}"),
                true,
                Some(false),
            ),
            (
                "namespace/* for gateway",
                format!("{{hosts: [foo.bar], gateways: ['ns1/*'], http: [{{{DEST}}}]}}"),
                false,
                Some(false),
            ),
            (
                "*/name for gateway",
                format!("{{hosts: [foo.bar], gateways: ['*/gateway'], http: [{{{DEST}}}]}}"),
                false,
                Some(false),
            ),
            ("wildcard for mesh gateway", format!("{{hosts: ['*'], http: [{{{DEST}}}]}}"), false, Some(false)),
            (
                "wildcard for non-mesh gateway",
                format!("{{hosts: ['*'], gateways: [somegateway], http: [{{{DEST}}}]}}"),
                true,
                Some(false),
            ),
            ("missing tcp route", "{hosts: [foo.bar], tcp: [{match: [{port: 999}]}]}".into(), false, Some(false)),
            (
                "missing tls route",
                "{hosts: [foo.bar], tls: [{match: [{port: 999, sniHosts: [foo.bar]}]}]}".into(),
                false,
                Some(false),
            ),
            (
                "deprecated mirror",
                format!("{{hosts: [foo.bar], gateways: [ns1/gateway], http: [{{mirrorPercent: 5, {DEST}}}]}}"),
                true,
                Some(true),
            ),
            (
                "set authority",
                http(&format!("{{headers: {{request: {{set: {{':authority': foo}}}}}}, {DEST}}}")),
                true,
                Some(false),
            ),
            (
                "set authority in destination",
                http("{route: [{destination: {host: foo.baz}, headers: {request: {set: {':authority': foo}}}}]}"),
                true,
                Some(false),
            ),
            (
                "set authority in rewrite and header",
                http(&format!("{{headers: {{request: {{set: {{':authority': foo}}}}}}, rewrite: {{authority: bar}}, {DEST}}}")),
                false,
                Some(false),
            ),
            (
                "non-method-get",
                http(&format!(
                    "{{{DEST}, match: [{{uri: {{prefix: /api/v1/product}}}}, \
                     {{uri: {{prefix: /api/v1/products}}, method: {{exact: GET}}}}]}}"
                )),
                true,
                Some(true),
            ),
            (
                "uri-with-prefix-exact",
                http(&format!("{{{DEST}, match: [{{uri: {{prefix: /}}}}, {{uri: {{exact: /}}, method: {{exact: GET}}}}]}}")),
                true,
                Some(false),
            ),
            (
                "jwt claim route without gateway",
                format!(
                    "{{hosts: [foo.bar], gateways: [mesh], http: [{{{DEST}, match: [{{uri: {{prefix: /}}, \
                     headers: {{'@request.auth.claims.foo': {{exact: bar}}}}}}]}}]}}"
                ),
                false,
                Some(false),
            ),
            (
                "ip address as sni host",
                "{hosts: [foo.bar], tls: [{route: [{destination: {host: foo.baz}}], match: [{port: 999, sniHosts: [1.1.1.1]}]}]}"
                    .into(),
                true,
                Some(true),
            ),
            (
                "invalid wildcard as sni host",
                "{hosts: [foo.bar], tls: [{route: [{destination: {host: foo.baz}}], match: [{port: 999, sniHosts: ['foo.*.com']}]}]}"
                    .into(),
                false,
                Some(false),
            ),
        ];
        table(&cases);
    }

    #[test]
    fn istio_chaining_virtual_service() {
        let dlg = "delegate: {name: test, namespace: test}";
        table(&[
            c("root simple", format!("{{hosts: [foo.bar], gateways: [test-gateway], http: [{{{dlg}}}]}}"), true),
            c("root applies to sidecar with delegate", format!("{{hosts: [foo.bar], http: [{{{dlg}}}]}}"), true),
            c("root with delegate and destination", format!("{{hosts: [foo.bar], http: [{{{dlg}, {DEST}}}]}}"), false),
            c("delegate with no destination", "{hosts: [], http: [{}]}".into(), false),
            c("delegate with delegate", format!("{{hosts: [], http: [{{{dlg}}}]}}"), false),
            c("delegate with TCP route", format!("{{hosts: [], tcp: [{{{DEST}}}]}}"), false),
            c("delegate with gateway", format!("{{hosts: [], gateways: [test], http: [{{{DEST}}}]}}"), false),
            c(
                "delegate with sourceNamespace",
                format!("{{hosts: [], http: [{{match: [{{sourceNamespace: test}}], {DEST}}}]}}"),
                true,
            ),
        ]);
    }

    /// Routes shared by `TestValidateHTTPRoute` and `TestValidateDelegateHTTPRoute`.
    fn common_route_cases() -> Vec<(&'static str, String, bool)> {
        let headers = |h: &str| format!("{{route: [{{destination: {{host: foo.baz}}, headers: {h}}}]}}");
        let m = "match: [{}]";
        let r = "route: [{destination: {host: foo.bar}}]";
        vec![
            ("empty", "{}".into(), false),
            ("simple", format!("{{{DEST}}}"), true),
            ("no destination", "{route: [{}]}".into(), false),
            (
                "weighted",
                "{route: [{destination: {host: foo.baz.south}, weight: 25}, {destination: {host: foo.baz.east}, weight: 75}]}"
                    .into(),
                true,
            ),
            (
                "total weight > 100",
                "{route: [{destination: {host: foo.baz.south}, weight: 550}, {destination: {host: foo.baz.east}, weight: 500}]}"
                    .into(),
                true,
            ),
            (
                "total weight < 100",
                "{route: [{destination: {host: foo.baz.south}, weight: 49}, {destination: {host: foo.baz.east}, weight: 50}]}"
                    .into(),
                true,
            ),
            ("simple redirect", "{redirect: {uri: /lerp, authority: foo.biz}}".into(), true),
            ("conflicting redirect and route", format!("{{{DEST}, redirect: {{uri: /lerp, authority: foo.biz}}}}"), false),
            (
                "valid headers",
                headers(
                    "{request: {add: {name: ''}, set: {name: ''}, remove: [name]}, \
                     response: {add: {name: ''}, set: {name: ''}, remove: [name]}}",
                ),
                true,
            ),
            ("empty header name - request add", headers("{request: {add: {'': value}}}"), false),
            ("empty header name - request set", headers("{request: {set: {'': value}}}"), false),
            ("empty header name - request remove", headers("{request: {remove: ['']}}"), false),
            ("empty header name - response add", headers("{response: {add: {'': value}}}"), false),
            ("empty header name - response set", headers("{response: {set: {'': value}}}"), false),
            ("empty header name - response remove", headers("{response: {remove: ['']}}"), false),
            ("nil match", format!("{{{r}}}"), true),
            ("match with empty element", format!("{{{r}, {m}}}"), true),
            ("invalid mirror percent", format!("{{mirrorPercent: 101, {r}, {m}}}"), false),
            ("invalid mirror percentage", format!("{{mirrorPercentage: {{value: 101}}, {r}}}"), false),
            ("valid mirror percentage", format!("{{mirrorPercentage: {{value: 1}}, {r}}}"), true),
            ("negative mirror percentage", format!("{{mirrorPercentage: {{value: -1}}, {r}}}"), false),
        ]
    }

    #[test]
    fn istio_validate_http_route() {
        let headers = |h: &str| http(&format!("{{route: [{{destination: {{host: foo.baz}}, headers: {h}}}]}}"));
        let r = "route: [{destination: {host: foo.bar}}]";
        let mut cases: Vec<Case<'_>> =
            common_route_cases().into_iter().map(|(n, s, v)| (n, http(&s), v, None)).collect();
        cases.extend([
            c(
                "prefix_rewrite redirect with prefix URI match",
                http("{match: [{uri: {prefix: /foo}}], redirect: {prefixRewrite: /bar}}"),
                true,
            ),
            c(
                "prefix_rewrite redirect with exact URI match is invalid",
                http("{match: [{uri: {exact: /foo}}], redirect: {prefixRewrite: /bar}}"),
                false,
            ),
            c(
                "prefix_rewrite redirect with regex URI match is invalid",
                http("{match: [{uri: {regex: '/foo.*'}}], redirect: {prefixRewrite: /bar}}"),
                false,
            ),
            c(
                "prefix_rewrite redirect with no URI match (wildcard) is valid",
                http("{match: [{headers: {x-foo: {exact: bar}}}], redirect: {prefixRewrite: /bar}}"),
                true,
            ),
            c("envoy escaped % set", headers("{response: {set: {i-love-istio: '100%%'}}}"), true),
            c("envoy variable set", headers("{response: {set: {name: '%HOSTNAME%'}}}"), true),
            c("envoy unescaped % set", headers("{response: {set: {name: 'abcd%oijasodifj'}}}"), false),
            c("envoy escaped % add", headers("{response: {add: {i-love-istio: '100%% and more'}}}"), true),
            c("envoy variable add", headers("{response: {add: {name: 'hello %HOSTNAME%'}}}"), true),
            c("envoy unescaped % add", headers("{response: {add: {name: 'abcd%oijasodifj'}}}"), false),
            c("empty prefix header match", http(&format!("{{{r}, match: [{{headers: {{emptyprefix: {{prefix: ''}}}}}}]}}")), false),
            c("mirrors without destination", http(&format!("{{mirrors: [{{}}], {r}}}")), false),
            c(
                "mirrors invalid mirror percentage",
                http(&format!(
                    "{{mirrors: [{{destination: {{host: foo.baz}}}}, {{destination: {{host: foo.baz}}, percentage: {{value: 101}}}}], {r}}}"
                )),
                false,
            ),
            c(
                "mirrors valid mirror percentage",
                http(&format!(
                    "{{mirrors: [{{destination: {{host: foo.baz}}, percentage: {{value: 1}}}}, \
                     {{destination: {{host: foo.baz}}, percentage: {{value: 50}}}}], {r}}}"
                )),
                true,
            ),
            c(
                "mirrors negative mirror percentage",
                http(&format!("{{mirrors: [{{destination: {{host: foo.baz}}, percentage: {{value: -1}}}}], {r}}}")),
                false,
            ),
            c(
                "conflicting mirror and mirrors",
                http(&format!("{{mirror: {{host: foo.baz}}, mirrors: [{{destination: {{host: foo.bar}}}}], {DEST}}}")),
                false,
            ),
        ]);
        table(&cases);
    }

    #[test]
    fn istio_validate_delegate_http_route() {
        let mut cases: Vec<Case<'_>> =
            common_route_cases().into_iter().map(|(n, s, v)| (n, delegate_http(&s), v, None)).collect();
        cases.push(c(
            "delegate route with delegate",
            delegate_http("{delegate: {name: test, namespace: test}}"),
            false,
        ));
        table(&cases);
    }

    #[test]
    fn istio_validate_root_http_route() {
        let dlg = "delegate: {name: test, namespace: test}";
        let rd = "redirect: {uri: /, authority: foo.biz}";
        let hm = |m: &str| http(&format!("{{{dlg}, match: [{m}]}}"));
        let rm = |m: &str| http(&format!("{{{rd}, match: [{m}]}}"));
        table(&[
            c("simple", http(&format!("{{{dlg}}}")), true),
            c("route and delegate conflict", http(&format!("{{{DEST}, {dlg}}}")), false),
            c(
                "redirect and delegate conflict",
                http(&format!("{{redirect: {{uri: /lerp, authority: foo.biz}}, {dlg}}}")),
                false,
            ),
            c("prefix header match", hm("{headers: {header: {prefix: test}}}"), true),
            c("empty prefix header match (delegate)", hm("{headers: {header: {prefix: ''}}}"), false),
            c("exact header match", hm("{headers: {header: {exact: test}}}"), true),
            c("regex header match", hm("{headers: {header: {regex: test}}}"), true),
            c("exact without headers match", rm("{withoutHeaders: {header: {exact: test}}}"), true),
            c("regex without headers match", rm("{withoutHeaders: {header: {regex: test}}}"), true),
            c("regex without headers match ?", rm("{withoutHeaders: {header: {regex: '?'}}}"), false),
            c("regex without headers match *", rm("{withoutHeaders: {header: {regex: '*'}}}"), true),
            c("regex uri match", hm("{uri: {regex: test}}"), true),
            c("prefix uri match", hm("{uri: {prefix: test}}"), true),
            c("exact uri match", hm("{uri: {exact: test}}"), true),
            c("prefix queryParams match", hm("{queryParams: {q: {prefix: test}}}"), true),
            c("exact queryParams match", hm("{queryParams: {q: {exact: test}}}"), true),
            c("regex queryParams match", hm("{headers: {q: {regex: test}}}"), true),
            c("empty prefix match in method", rm("{method: {prefix: ''}}"), false),
            c("empty regex match in method", rm("{method: {regex: ''}}"), false),
            c("empty prefix match in uri", rm("{uri: {prefix: ''}}"), true),
            c("empty regex match in uri", rm("{uri: {regex: ''}}"), false),
            c("empty regex match in query", rm("{queryParams: {q: {regex: ''}}}"), false),
            c("empty regex match in scheme", rm("{scheme: {regex: ''}}"), false),
            c("empty prefix match in scheme", rm("{scheme: {prefix: ''}}"), false),
            c("empty prefix header match", http("{match: [{headers: {header: {prefix: ''}}}]}"), false),
        ]);
    }

    #[test]
    fn istio_validate_route_and_destination() {
        let tcp = |routes: &str| format!("{{hosts: [foo.bar], tcp: [{{route: {routes}}}]}}");
        let two = |a: i32, b: i32| {
            tcp(&format!(
                "[{{destination: {{host: foo.baz.south}}, weight: {a}}}, {{destination: {{host: foo.baz.east}}, weight: {b}}}]"
            ))
        };
        let dest = |d: &str| http(&format!("{{route: [{{destination: {d}}}]}}"));
        table(&[
            c("simple", tcp("[{destination: {host: foo.baz}}]"), true),
            c("wildcard dash", tcp("[{destination: {host: '*-foo.baz'}}]"), true),
            c("wildcard prefix", tcp("[{destination: {host: '*foo.baz'}}]"), true),
            c("wildcard", tcp("[{destination: {host: '*'}}]"), false),
            c("bad wildcard", tcp("[{destination: {host: 'foo.*'}}]"), false),
            c("bad fqdn", tcp("[{destination: {host: default/baz}}]"), false),
            c("no destination", tcp("[{}]"), false),
            c("weighted", two(25, 75), true),
            c("weight < 0", two(5, -1), false),
            c("total weight > 100", two(550, 500), true),
            c("total weight < 100", two(49, 50), true),
            c("total weight = 100", two(100, 0), true),
            c("weight = 0", tcp("[{destination: {host: foo.baz.south}, weight: 0}]"), true),
            c("total weight = 0 with multi RouteDestination", two(0, 0), false),
            c("destination empty", dest("{}"), false),
            c("destination simple", dest("{host: foo.bar}"), true),
            c("destination full", dest("{host: foo.bar, subset: shiny, port: {number: 5000}}"), true),
            c("destination unnumbered-selector", dest("{host: foo.bar, subset: shiny, port: {}}"), false),
        ]);
    }

    #[test]
    fn istio_validate_redirect_rewrite() {
        let rd = |x: &str| http(&format!("{{redirect: {x}}}"));
        let rw = |x: &str| http(&format!("{{{DEST}, rewrite: {x}}}"));
        let rx = "uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}";
        table(&[
            c("empty uri and authority", rd("{uri: '', authority: ''}"), false),
            c("too small redirect code", rd("{uri: t, authority: '', redirectCode: 299}"), false),
            c("too large redirect code", rd("{uri: t, authority: '', redirectCode: 400}"), false),
            c("empty authority", rd("{uri: t, authority: ''}"), true),
            c("empty uri", rd("{uri: '', authority: t}"), true),
            c("empty redirect code", rd("{uri: t, authority: t, redirectCode: 0}"), true),
            c("normal redirect", rd("{uri: t, authority: t, redirectCode: 308}"), true),
            c("prefix_rewrite alone", rd("{prefixRewrite: /bar}"), true),
            c("prefix_rewrite with authority", rd("{authority: foo.example.com, prefixRewrite: /}"), true),
            c("uri and prefix_rewrite mutually exclusive", rd("{uri: /old, prefixRewrite: /new}"), false),
            c("redirect port only", rd("{port: 8080}"), true),
            c("redirect derive port only", rd("{derivePort: FROM_REQUEST_PORT}"), true),
            c("redirect bad port", rd("{port: 70000}"), false),
            c("redirect bad scheme", rd("{scheme: ftp}"), false),
            c("uri and authority", rw("{uri: /path/to/resource, authority: foobar.org}"), true),
            c("uri", rw("{uri: /path/to/resource}"), true),
            c("authority", rw("{authority: foobar.org}"), true),
            c("uriRegexRewrite", rw(&format!("{{{rx}}}")), true),
            c("uriRegexRewrite and authority", rw(&format!("{{authority: foobar.org, {rx}}}")), true),
            c("uriRegexRewrite and uri", rw(&format!("{{uri: /path/to/resource, {rx}}}")), false),
            c("no uri, uriRegexRewrite, or authority", rw("{}"), false),
            c("uriRegexRewrite missing match", rw("{uriRegexRewrite: {rewrite: '\\2/instance/\\1'}}"), false),
            c("uriRegexRewrite missing rewrite", rw("{uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$'}}"), false),
            c("uriRegexRewrite invalid regex patterns", rw("{uriRegexRewrite: {match: '[', rewrite: '['}}"), false),
        ]);
    }

    #[test]
    fn istio_validate_direct_response() {
        let dr = |x: &str| http(&format!("{{directResponse: {x}}}"));
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode("a".repeat(n));
        let cases: Vec<Case<'_>> = vec![
            ("status 200", dr("{status: 200}"), true, Some(false)),
            ("status 100", dr("{status: 199}"), false, Some(false)),
            ("status 600", dr("{status: 601}"), false, Some(false)),
            ("with string body", dr("{status: 200, body: {string: hello}}"), true, Some(false)),
            (
                "with string body over 100kb",
                dr(&format!("{{status: 200, body: {{string: {}}}}}", "a".repeat(101 * KB))),
                true,
                Some(true),
            ),
            (
                "with string body over 1mb",
                dr(&format!("{{status: 200, body: {{string: {}}}}}", "a".repeat(2 * MB))),
                false,
                Some(false),
            ),
            ("with bytes body", dr("{status: 200, body: {bytes: aGVsbG8=}}"), true, Some(false)),
            (
                "with bytes body over 100kb",
                dr(&format!("{{status: 200, body: {{bytes: '{}'}}}}", b64(100 * KB + 1))),
                true,
                Some(true),
            ),
            (
                "with bytes body over 1mb",
                dr(&format!("{{status: 200, body: {{bytes: '{}'}}}}", b64(MB + 1))),
                false,
                Some(false),
            ),
            ("bad base64", dr("{status: 200, body: {bytes: '!!!'}}"), false, None),
            ("both bodies", dr("{status: 200, body: {bytes: aGVsbG8=, string: hello}}"), false, None),
        ];
        table(&cases);
    }

    #[test]
    fn istio_validate_fault_injection() {
        let f = |x: &str| http(&format!("{{{DEST}, fault: {x}}}"));
        table(&[
            c("empty fault", f("{}"), false),
            c("abort valid", f("{abort: {percentage: {value: 20}, httpStatus: 200}}"), true),
            c("abort valid default", f("{abort: {httpStatus: 200}}"), true),
            c("abort invalid http status", f("{abort: {percentage: {value: 20}, httpStatus: 9000}}"), false),
            c("abort invalid low http status", f("{abort: {percentage: {value: 20}, httpStatus: 100}}"), false),
            c("abort valid percentage", f("{abort: {percentage: {value: 0.001}, httpStatus: 200}}"), true),
            c("abort invalid fractional percent", f("{abort: {percentage: {value: -10.0}, httpStatus: 200}}"), false),
            c("grpc valid", f("{abort: {percentage: {value: 20}, grpcStatus: DEADLINE_EXCEEDED}}"), true),
            c("grpc valid default", f("{abort: {grpcStatus: DEADLINE_EXCEEDED}}"), true),
            c("grpc invalid status", f("{abort: {percentage: {value: 20}, grpcStatus: BAD_STATUS}}"), false),
            c("grpc valid percentage", f("{abort: {percentage: {value: 0.001}, grpcStatus: INTERNAL}}"), true),
            c(
                "grpc invalid fractional",
                f("{abort: {percentage: {value: -10.0}, grpcStatus: DEADLINE_EXCEEDED}}"),
                false,
            ),
            c("http2 abort", f("{abort: {http2Error: FOO}}"), false),
            c("abort two types", f("{abort: {httpStatus: 503, grpcStatus: INTERNAL}}"), false),
            c("delay valid fixed", f("{delay: {percentage: {value: 20}, fixedDelay: 3s}}"), true),
            c("delay valid default", f("{delay: {fixedDelay: 3s}}"), true),
            c("delay invalid percent", f("{delay: {percentage: {value: 101}, fixedDelay: 3s}}"), false),
            c("delay invalid delay", f("{delay: {percentage: {value: 20}, fixedDelay: 3.000000042s}}"), false),
            c("delay valid fractional", f("{delay: {percentage: {value: 0.001}, fixedDelay: 3s}}"), true),
            c("delay invalid fractional", f("{delay: {percentage: {value: -10.0}, fixedDelay: 3s}}"), false),
            c("delay exponential", f("{delay: {exponentialDelay: 3s}}"), false),
        ]);
        let r = run(&f("{abort: {percentage: {value: 10}}}"));
        assert!(!r.has_errors() && has(&r, "spec.http[0].fault.abort", "abort configured, but error type not set"));
    }

    #[test]
    fn istio_validate_retry_and_cors() {
        let rt = |x: &str| http(&format!("{{{DEST}, retries: {x}}}"));
        let cors = |x: &str| http(&format!("{{{DEST}, corsPolicy: {x}}}"));
        let base = "allowMethods: [GET, POST], allowHeaders: [header1, header2], exposeHeaders: [header3], maxAge: 2s";
        table(&[
            c("valid", rt("{attempts: 10, perTryTimeout: 2s, retryOn: '5xx,gateway-error'}"), true),
            c("disable retries", rt("{attempts: 0}"), true),
            c(
                "retry policy but zero attempts",
                rt("{attempts: 0, perTryTimeout: 2s, retryOn: '5xx,gateway-error'}"),
                false,
            ),
            c("valid default", rt("{attempts: 10}"), true),
            c(
                "valid http status retryOn",
                rt("{attempts: 10, perTryTimeout: 2s, retryOn: '503,connect-failure'}"),
                true,
            ),
            c("invalid attempts", rt("{attempts: -1, perTryTimeout: 2s}"), false),
            c("invalid timeout", rt("{attempts: 10, perTryTimeout: 2.000000001s}"), false),
            c("timeout too small", rt("{attempts: 10, perTryTimeout: 0.000000999s}"), false),
            c("invalid backoff", rt("{attempts: 10, backoff: 0.000000999s}"), false),
            c("invalid policy retryOn", rt("{attempts: 10, perTryTimeout: 2s, retryOn: '5xx,invalid policy'}"), false),
            c(
                "invalid http status retryOn",
                rt("{attempts: 10, perTryTimeout: 2s, retryOn: '600,connect-failure'}"),
                false,
            ),
            c("retryRemoteLocalities with zero attempts", rt("{attempts: 0, retryRemoteLocalities: false}"), false),
            c("cors valid", cors(&format!("{{{base}}}")), true),
            c("cors bad method", cors("{allowMethods: [GET, PUTT], maxAge: 2s}"), false),
            c("cors bad header", cors("{allowMethods: [GET, POST], exposeHeaders: ['']}"), false),
            c("cors bad max age", cors("{maxAge: 2.000000042s}"), false),
            c(
                "cors empty matchType AllowOrigins",
                cors(&format!("{{allowOrigins: [{{exact: ''}}, {{prefix: ''}}, {{regex: ''}}], {base}}}")),
                false,
            ),
            c(
                "cors non empty matchType AllowOrigins",
                cors(&format!("{{allowOrigins: [{{exact: exact}}, {{prefix: prefix}}, {{regex: regex}}], {base}}}")),
                true,
            ),
            c("cors bad origin regex", cors("{allowOrigins: [{regex: '('}]}"), false),
        ]);
    }

    #[test]
    fn istio_validate_header_names_and_values() {
        let value = |v: &str| {
            http(&format!(
                "{{route: [{{destination: {{host: foo.baz}}, headers: {{request: {{set: {{x: '{v}'}}}}}}}}]}}"
            ))
        };
        let name = |n: &str| http(&format!("{{{DEST}, match: [{{headers: {{'{n}': {{exact: v}}}}}}]}}"));
        table(&[
            c("foo", value("foo"), true),
            c("%HOSTNAME%", value("%HOSTNAME%"), true),
            c("100%%", value("100%%"), true),
            c("prefix %HOSTNAME% suffix", value("prefix %HOSTNAME% suffix"), true),
            c("cert time", value("%DOWNSTREAM_PEER_CERT_V_END(%b %d %H:%M:%S %Y %Z)%"), true),
            c("dynamic metadata", value("%DYNAMIC_METADATA(com.test.my_filter)%"), true),
            c("%START_TIME%%", value("%START_TIME%%"), false),
            c("abc%123", value("abc%123"), false),
            c("header1", name("header1"), true),
            c("X-Requested-With", name("X-Requested-With"), true),
            c(":authority", name(":authority"), true),
            c("funky!$#_", name("funky!$#_"), true),
            c("empty name", name(""), false),
            c("::", name("::"), false),
            c("illegal\"char", name("illegal\"char"), false),
        ]);
    }

    #[test]
    fn header_value_parser() {
        assert_eq!(
            header_value("abc%123").unwrap_err(),
            "header value configuration: invalid header configuration. Un-terminated variable expression 'abc%123'"
        );
        assert_eq!(
            header_value("%START_TIME%%").unwrap_err(),
            "header value configuration: invalid header configuration. Un-escaped %"
        );
        assert_eq!(header_value("a\nb").unwrap_err(), "header value configuration a\nb is invalid");
        assert!(header_value("tab\tok").is_ok());
        assert!(header_value("%REQ([\"a\", \"b\"])%").is_ok());
        assert!(header_value("%REQ([\"a\" x])%").unwrap_err().contains("Expecting ',', ']', or whitespace"));
        assert!(header_value("%REQ([x])%").unwrap_err().contains("Expecting '\"'"));
        assert!(header_value("%REQ([\"a\"] x)%").unwrap_err().contains("Expecting ')' or whitespace after"));
        assert!(header_value("%REQ(a) x%").unwrap_err().contains("Expecting '%' or whitespace after"));
        assert!(header_value("%REQ(a\\").unwrap_err().contains("Un-terminated backslash"));
    }

    #[test]
    fn messages_and_paths() {
        let r = run("{hosts: ['*.foo.bar', '*.bar'], http: [{route: [{destination: {}}]}]}");
        assert!(has(&r, "spec.hosts[1]", "duplicate hosts in virtual service: *.foo.bar & *.bar"));
        assert!(has(&r, "spec.http[0].route[0].destination.host", "empty domain name not allowed"));

        let r = run("{hosts: [foo.bar], gateways: [b@dgateway], http: [{route: [{destination: {host: foo.baz}}]}]}");
        assert!(has(&r, "spec.gateways[0]", "domain name \"b@dgateway\" invalid (label \"b@dgateway\" invalid)"));

        let r = run(
            "{hosts: [foo.bar], gateways: ['ns1/*', '*/gw', gateway.example.com], http: [{route: [{destination: {host: foo.baz}}]}]}",
        );
        assert!(has(&r, "spec.gateways[0]", "invalid value for gateway name: \"*\""));
        assert!(has(&r, "spec.gateways[1]", "invalid value for namespace: \"*\""));
        assert!(r.warnings().any(|w| w.message
            == "using legacy gatewayName format \"gateway.example.com\"; prefer the <namespace>/<name> format: \"example/gateway\""));

        let r = run("{hosts: [foo.bar], gateways: [mesh], http: [{route: [{destination: {host: foo.baz}}], \
             match: [{headers: {'@request.auth.claims.foo': {exact: bar}}}]}]}");
        assert!(has(
            &r,
            "spec.http[0].match[0].headers.@request.auth.claims.foo",
            "JWT claim based routing (key: @request.auth.claims.foo) is only supported for gateway, found no gateways: [mesh]"
        ));
        // Bound to a real gateway, claims are fine.
        let r = run("{hosts: [foo.bar], gateways: [ns/gw], http: [{route: [{destination: {host: foo.baz}}], \
             match: [{headers: {'@request.auth.claims[a][b]': {exact: bar}}}]}]}");
        assert!(!r.has_errors(), "{:?}", messages(&r));

        let r = run(
            "{hosts: [foo.bar], http: [{headers: {request: {set: {':authority': foo}}}, rewrite: {authority: bar}, \
             route: [{destination: {host: foo.baz}}]}]}",
        );
        assert!(has(
            &r,
            "spec.http[0].headers.request.set.:authority",
            "authority header cannot be set multiple times: have \"bar\", attempting to set \"foo\""
        ));

        let r = run("{hosts: ['*'], http: [{route: [{destination: {host: foo.baz}}]}]}");
        assert!(has(
            &r,
            "spec.hosts[0]",
            "wildcard host * is not allowed for virtual services bound to the mesh gateway"
        ));

        let r =
            run("{hosts: [foo.bar], tls: [{match: [{sniHosts: [bar.com]}], route: [{destination: {host: foo.baz}}]}]}");
        assert!(has(
            &r,
            "spec.tls[0].match[0].sniHosts[0]",
            "SNI host \"bar.com\" is not compatible subset of any of the virtual service hosts: [foo.bar]"
                .replace("not compatible", "not a compatible")
                .as_str()
        ));
        let r = run(
            "{hosts: ['*.bar.com'], tls: [{match: [{sniHosts: [a.bar.com, '*.x.bar.com']}], route: [{destination: {host: foo.baz}}]}]}",
        );
        assert!(!r.has_errors(), "{:?}", messages(&r));
        let r = run("{hosts: [foo.bar], tls: [{match: [{}], route: [{destination: {host: foo.baz}}]}]}");
        assert!(has(&r, "spec.tls[0].match[0].sniHosts", "TLS match must have at least one SNI host"));
        let r = run("{hosts: [foo.bar], tls: [{route: [{destination: {host: foo.baz}}]}]}");
        assert!(has(&r, "spec.tls[0].match", "TLS route must have at least one match condition"));

        let r = run(
            "{hosts: [foo.bar], http: [{mirrorPercentage: {value: 101}, route: [{destination: {host: foo.baz}}]}]}",
        );
        assert!(has(
            &r,
            "spec.http[0].mirrorPercentage",
            "mirror_percentage must have a max value of 100 (it has 101.000000)"
        ));
        let r = run("{hosts: [foo.bar], http: [{mirrorPercent: 101, route: [{destination: {host: foo.baz}}]}]}");
        assert!(has(&r, "spec.http[0].mirrorPercent", "mirror_percent must have a max value of 100 (it has 101)"));
        assert!(r.warnings().any(|w| w.message.contains("using deprecated setting \"mirrorPercent\"")));

        let r = run("{hosts: [foo.bar], http: [{directResponse: {status: 700}}]}");
        assert!(has(&r, "spec.http[0].directResponse.status", "HTTP status 700 is not in range 200-599"));

        let r = run(
            "{hosts: [foo.bar], http: [{route: [{destination: {host: foo.baz}}], retries: {attempts: 3, retryOn: 'foo,5xx,503'}}]}",
        );
        assert_eq!(
            r.errors().map(|f| f.message.as_str()).collect::<Vec<_>>(),
            ["\"foo\" is not a valid retryOn policy"]
        );

        let r = run(
            "{hosts: [foo.bar], http: [{route: [{destination: {host: foo.baz, subset: Bad_Subset}, weight: -1}]}]}",
        );
        assert!(has(&r, "spec.http[0].route[0].destination.subset", "subset name is invalid: Bad_Subset"));
        assert!(has(&r, "spec.http[0].route[0].weight", "weight -1 < 0"));

        let r = run(
            "{hosts: [foo.bar], http: [{route: [{destination: {host: foo.baz}}], fault: {abort: {grpcStatus: NOPE}}}]}",
        );
        assert!(has(
            &r,
            "spec.http[0].fault.abort.grpcStatus",
            "gRPC status \"NOPE\" is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"
        ));

        let r = run(
            "{hosts: [foo.bar], http: [{route: [{destination: {host: foo.baz}}], corsPolicy: {allowMethods: [PUTT], allowOrigins: [{exact: ''}]}}]}",
        );
        assert!(has(&r, "spec.http[0].corsPolicy.allowMethods[0]", "\"PUTT\" is not a supported HTTP method"));
        assert!(has(
            &r,
            "spec.http[0].corsPolicy.allowOrigins[0]",
            "'' is not a valid match type for CORS allow origins"
        ));

        let r = run(
            "{hosts: [foo.bar], http: [{route: [{destination: {host: foo.baz}}], match: [{sourceNamespace: Bad_NS, port: 70000, sourceLabels: {'bad key': v}}]}]}",
        );
        assert!(has(&r, "spec.http[0].match[0].sourceNamespace", "sourceNamespace match Bad_NS is invalid"));
        assert!(has(&r, "spec.http[0].match[0].port", "port number 70000 must be in the range 1..65535"));
        assert!(has(&r, "spec.http[0].match[0].sourceLabels.bad key", "invalid tag key"));

        let r = run(
            "{hosts: [foo.bar], tcp: [{match: [{destinationSubnets: [1.2.3.4/33], port: 70000}], route: [{destination: {host: foo.baz}}]}]}",
        );
        assert!(has(&r, "spec.tcp[0].match[0].destinationSubnets[0]", "1.2.3.4/33 is not a valid CIDR block"));
        assert!(has(&r, "spec.tcp[0].match[0].port", "port number 70000"));

        let r = run("{hosts: [foo.bar], http: [{route: [{destination: {host: foo.baz}}]}], exportTo: ['~']}");
        assert!(has(&r, "spec.exportTo[0]", "exportTo ~ (none) is not allowed for Istio configuration objects"));

        let r = run("{}");
        assert!(has(&r, "spec", "http, tcp or tls must be provided in virtual service"));
        let r = run("{gateways: [gw], tls: [{}], tcp: [{}]}");
        assert!(has(&r, "spec.gateways", "delegate virtual service must have no gateways specified"));
        assert!(has(&r, "spec.tls", "delegate virtual service must have no tls route specified"));
        assert!(has(&r, "spec.tcp", "delegate virtual service must have no tcp route specified"));

        let r = run(
            "{hosts: [foo.bar], http: [{redirect: {uri: /a}, route: [{destination: {host: a.b}}], fault: {abort: {httpStatus: 500}}, rewrite: {uri: /b}, directResponse: {status: 200}}]}",
        );
        for m in [
            "both route and redirect",
            "both fault and redirect",
            "both rewrite and redirect",
            "both direct_response and redirect",
        ] {
            assert!(r.errors().any(|f| f.message.contains(m)), "{m}: {:?}", messages(&r));
        }
        let r = run(
            "{hosts: [foo.bar], http: [{route: [{destination: {host: a.b}}], fault: {abort: {httpStatus: 500}}, rewrite: {uri: /b}, directResponse: {status: 200}}]}",
        );
        for m in
            ["both route and direct_response", "both fault and direct_response", "both rewrite and direct_response"]
        {
            assert!(r.errors().any(|f| f.message.contains(m)), "{m}: {:?}", messages(&r));
        }
        let r = run(
            "{hosts: [foo.bar], http: [{name: top, delegate: {name: a}, redirect: {uri: /a}, route: [{destination: {host: a.b}}]}]}",
        );
        assert!(has(&r, "spec.http[0].redirect", "root HTTP route top must not specify redirect"));
        assert!(has(&r, "spec.http[0].route", "root HTTP route top must not specify route"));
    }

    #[test]
    fn gateway_semantics_skips_destination_checks() {
        let spec = "{hosts: [foo.bar], gateways: [ns/gw.x], http: [{route: [{destination: {host: 'bad host!'}}]}]}";
        let r = run(spec);
        assert!(has(&r, "spec.gateways[0]", "invalid value for gateway name: \"gw.x\""));
        assert!(r.errors().any(|f| f.path == "spec.http[0].route[0].destination.host"));
        let meta = "{name: t, annotations: {internal.istio.io/route-semantics: gateway}}";
        let r = run_with_meta(spec, meta);
        assert!(!r.has_errors(), "{:?}", messages(&r));
    }

    #[test]
    fn schema_oneofs_and_durations() {
        let r = run(
            "{hosts: [foo.bar], http: [{route: [{destination: {host: foo.baz}}], match: [{uri: {exact: /a, prefix: /b}}], timeout: 0.0005s}]}",
        );
        assert!(has(
            &r,
            "spec.http[0].match[0].uri",
            "must validate one and only one schema (oneOf). Found 2 valid alternatives"
        ));
        assert!(has(&r, "spec.http[0].timeout", "must be a valid duration greater than 1ms"));
        assert!(has(&r, "spec.http[0].timeout", "duration must be greater than 1ms"));
        let r = run("{hosts: [foo.bar], http: [{redirect: {port: 80, derivePort: FROM_REQUEST_PORT}}]}");
        assert!(has(&r, "spec.http[0].redirect", "must validate one and only one schema (oneOf)"));
        let r = run(
            "{hosts: [foo.bar], http: [{route: [{destination: {host: foo.baz}}], fault: {delay: {fixedDelay: 1s, exponentialDelay: 1s}}}]}",
        );
        assert!(has(&r, "spec.http[0].fault.delay", "must validate one and only one schema (oneOf)"));
    }

    #[test]
    fn unreachable_rules_warnings() {
        let d = "route: [{destination: {host: foo.baz}}]";
        let r = run(&format!(
            "{{hosts: [foo.bar], http: [{{{d}}}, {{{d}}}, {{name: named, {d}, match: [{{uri: {{exact: /a}}}}]}}]}}"
        ));
        assert!(!r.has_errors(), "{:?}", messages(&r));
        let w: Vec<_> = r.warnings().map(|f| (f.path.as_str(), f.message.as_str())).collect();
        assert_eq!(
            w,
            [
                ("spec.http[1]", "virtualService rule #1 not used (only the last rule can have no matches)"),
                ("spec.http[2]", "virtualService rule \"named\" not used (route without matches defined before)"),
            ]
        );

        let r = run(&format!(
            "{{hosts: [foo.bar], http: [{{{d}, match: [{{name: x, uri: {{exact: /a}}}}]}}, \
             {{{d}, match: [{{name: y, uri: {{exact: /a}}}}, {{uri: {{exact: /b}}}}]}}, {{{d}, match: [{{uri: {{exact: /b}}}}]}}]}}"
        ));
        let w: Vec<_> = r.warnings().map(|f| (f.path.as_str(), f.message.as_str())).collect();
        assert_eq!(
            w,
            [
                (
                    "spec.http[1].match[0]",
                    "virtualService rule #1 match \"y\" is not used (duplicate/overlapping match in rule #0)"
                ),
                (
                    "spec.http[2].match[0]",
                    "virtualService rule #2 match #0 is not used (duplicate/overlapping match in rule #1)"
                ),
                ("spec.http[2]", "virtualService rule #2 not used (all matches used by prior rules)"),
            ]
        );

        let r = run(&format!(
            "{{hosts: [foo.bar], http: [{{{d}, match: [{{uri: {{prefix: /api/v1/product}}}}, \
             {{uri: {{prefix: /api/v1/products}}, method: {{exact: GET}}}}]}}]}}"
        ));
        let w: Vec<_> = r.warnings().map(|f| f.message.as_str()).collect();
        assert_eq!(
            w,
            ["virtualService rule #0 match #1 of prefix /api/v1/products is not used \
              (duplicate/overlapping match in rule #0 of prefix /api/v1/product on #0)"]
        );
        // A different header set or port means no overlap.
        let r = run(&format!(
            "{{hosts: [foo.bar], http: [{{{d}, match: [{{uri: {{prefix: /a}}, port: 80}}, {{uri: {{prefix: /ab}}, port: 81}}]}}]}}"
        ));
        assert_eq!(r.warnings().count(), 0, "{:?}", messages(&r));

        let r = run("{hosts: [foo.bar], tcp: [{match: [{port: 80}], route: [{destination: {host: a.b}}]}, \
             {match: [{port: 80}], route: [{destination: {host: a.b}}]}, {route: [{destination: {host: a.b}}]}, \
             {route: [{destination: {host: a.b}}]}]}");
        let w: Vec<_> = r.warnings().map(|f| f.message.as_str()).collect();
        assert_eq!(
            w,
            [
                "virtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0)",
                "virtualService rule #1 not used (all matches used by prior rules)",
                "virtualService rule #3 not used (only the last rule can have no matches)",
            ]
        );
    }

    #[test]
    fn go_regexp_errors() {
        let e = |re: &str| goregexp::check(re).map_err(|e| e.to_string());
        for ok in [
            "test",
            "/foo.*",
            "^/service/([^/]+)(/.*)$",
            "a{2,5}b{3}c{2,}",
            "(?i)abc",
            "(?i:a|b)",
            "(?P<name>x)(?<n2>y)(?P<name>z)",
            "[[:alpha:][:^digit:]\\d\\pL\\p{Greek}\\p{Lu}]",
            "\\pN\\p{^L}\\PL\\p{Old_Italic}",
            "\\x41\\x{1F600}\\101\\0\\Qa.b\\E\\A\\z\\b\\B",
            "{foo}",
            "a{,5}",
            "x{01}",
            "^*",
            "(?)",
            "a*?",
            "[]a]",
            "[a-]",
            "(a{500}){2}",
            "\\_",
        ] {
            assert_eq!(e(ok), Ok(()), "{ok}");
        }
        for (bad, msg) in [
            ("?", "error parsing regexp: missing argument to repetition operator: `?`"),
            ("*", "error parsing regexp: missing argument to repetition operator: `*`"),
            ("a|*", "error parsing regexp: missing argument to repetition operator: `*`"),
            ("(?i)*", "error parsing regexp: missing argument to repetition operator: `*`"),
            ("[", "error parsing regexp: missing closing ]: `[`"),
            ("[a", "error parsing regexp: missing closing ]: `[a`"),
            ("(", "error parsing regexp: missing closing ): `(`"),
            ("a)", "error parsing regexp: unexpected ): `a)`"),
            ("a**", "error parsing regexp: invalid nested repetition operator: `**`"),
            ("a*??", "error parsing regexp: invalid nested repetition operator: `*??`"),
            ("a{2}{3}", "error parsing regexp: invalid nested repetition operator: `{2}{3}`"),
            ("a{1001}", "error parsing regexp: invalid repeat count: `{1001}`"),
            ("a{3,2}", "error parsing regexp: invalid repeat count: `{3,2}`"),
            ("(a{500}){3}", "error parsing regexp: invalid repeat count: `{3}`"),
            ("\\", "error parsing regexp: trailing backslash at end of expression: ``"),
            ("\\1", "error parsing regexp: invalid escape sequence: `\\1`"),
            ("\\8", "error parsing regexp: invalid escape sequence: `\\8`"),
            ("\\C", "error parsing regexp: invalid escape sequence: `\\C`"),
            ("\\xZ1", "error parsing regexp: invalid escape sequence: `\\xZ1`"),
            ("\\x{}", "error parsing regexp: invalid escape sequence: `\\x{}`"),
            ("\\x{110000}", "error parsing regexp: invalid escape sequence: `\\x{110000`"),
            ("[\\b]", "error parsing regexp: invalid escape sequence: `\\b`"),
            ("[z-a]", "error parsing regexp: invalid character class range: `z-a`"),
            ("[[:foo:]]", "error parsing regexp: invalid character class range: `[:foo:]`"),
            ("\\p{Foo}", "error parsing regexp: invalid character class range: `\\p{Foo}`"),
            ("\\pX", "error parsing regexp: invalid character class range: `\\pX`"),
            ("\\p{L", "error parsing regexp: invalid character class range: `\\p{L`"),
            ("(?P<n", "error parsing regexp: invalid named capture: `(?P<n`"),
            ("(?P<a-b>x)", "error parsing regexp: invalid named capture: `(?P<a-b>`"),
            ("(?P=n)", "error parsing regexp: invalid or unsupported Perl syntax: `(?P`"),
            ("(?i-)", "error parsing regexp: invalid or unsupported Perl syntax: `(?i-)`"),
            ("(?x)", "error parsing regexp: invalid or unsupported Perl syntax: `(?x`"),
            ("(?", "error parsing regexp: invalid or unsupported Perl syntax: `(?`"),
        ] {
            assert_eq!(e(bad), Err(msg.to_string()), "{bad}");
        }
        let r =
            run("{hosts: [foo.bar], http: [{redirect: {uri: /}, match: [{withoutHeaders: {header: {regex: '?'}}}]}]}");
        assert!(has(
            &r,
            "spec.http[0].match[0].withoutHeaders.header",
            "\"withoutHeaders\": error parsing regexp: missing argument to repetition operator: `?`; \
             Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
        ));
        let long = "a".repeat(1025);
        let r = run(&format!(
            "{{hosts: [foo.bar], http: [{{redirect: {{uri: /}}, match: [{{uri: {{regex: {long}}}}}]}}]}}"
        ));
        assert!(has(&r, "spec.http[0].match[0].uri", "\"uri\": regex is too large, max length allowed is 1024"));
        let r = run(
            "{hosts: [foo.bar], http: [{route: [{destination: {host: a.b}}], rewrite: {uriRegexRewrite: {match: '[', rewrite: x}}}]}",
        );
        assert!(has(
            &r,
            "spec.http[0].rewrite.uriRegexRewrite",
            "UriRegexRewrite has errors\n\"HTTPRewrite.UriRegexRewrite.Match\": error parsing regexp: missing closing ]: `[`"
        ));
    }

    #[test]
    fn go_formatting() {
        assert_eq!(gofmt::quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\x01é\"");
        assert_eq!(gofmt::strings_v(Vec::<String>::new()), "[]");
        assert_eq!(gofmt::strings_v(["a".to_string(), "b".to_string()]), "[a b]");
        assert_eq!(gofmt::float_f(-1.0), "-1.000000");
        assert!(
            host_matches("*.foo.bar", "*.bar") && host_matches("foo.bar", "*") && !host_matches("*.foo.com", "foo.com")
        );
        assert!(host_subset_of("a.foo.com", "*.foo.com") && !host_subset_of("*.com", "*.foo.com"));
        assert!(
            common::is_jwt_claim_route("@Request.Auth.Claims.x")
                && !common::is_jwt_claim_route("@request.auth.claims.")
                && !common::is_jwt_claim_route("@request.auth.claims[]")
        );
        assert_eq!(gofmt::atoi_value("+503"), 503);
        assert_eq!(gofmt::atoi_value("5x"), 0);
    }
}
