//! Checks shared by several kinds: host names, ports, durations, labels,
//! exportTo, header names and values. Ported from istio/istio
//! `pkg/config/validation/{validation.go,agent/validation.go}` and
//! `pkg/config/labels`; messages are Istio's.

use std::net::IpAddr;

use crate::protocol::Protocol;
use crate::types::{Destination, Duration, Labels, Percent};

use super::{P, Report, gofmt};

pub const UNIX_ADDRESS_PREFIX: &str = "unix://";
const DNS1123_LABEL_MAX: usize = 63;

/// `ValidateDuration`: at least 1ms, millisecond precision.
pub fn duration(d: &Duration) -> Result<(), String> {
    if d.as_nanos() < 1_000_000 {
        return Err("duration must be greater than 1ms".into());
    }
    if d.as_nanos() % 1_000_000 != 0 {
        return Err("only durations to ms precision are supported".into());
    }
    Ok(())
}

/// `ValidatePort`.
pub fn port(port: i64) -> Result<(), String> {
    if (1..=65535).contains(&port) { Ok(()) } else { Err(format!("port number {port} must be in the range 1..65535")) }
}

/// `labels.IsDNS1123Label`: `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`, at most 63 bytes.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= DNS1123_LABEL_MAX && is_dns1123_label_unbounded(s)
}

/// `labels.IsWildcardDNS1123Label`: `*`, or a label optionally prefixed by `*` or `*-`.
pub fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s.len() > DNS1123_LABEL_MAX {
        return false;
    }
    if s == "*" {
        return true;
    }
    let rest = s.strip_prefix("*-").or_else(|| s.strip_prefix('*')).unwrap_or(s);
    is_dns1123_label(rest)
}

/// `CheckDNS1123Preconditions`.
fn dns1123_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {} too long (max 255)", gofmt::quote(name)));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

/// `ValidateDNS1123Labels`.
pub fn dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts[parts.len() - 1];
    // Go's Atoi: all digits with an optional sign, and within 64 bits (a longer run of digits is accepted as a label, as by Istio).
    if super::gofmt::atoi(tld).is_ok() {
        return Err(format!(
            "domain name {} invalid (top level domain {} cannot be all-numeric)",
            gofmt::quote(domain),
            gofmt::quote(tld)
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {} invalid (label {} invalid)",
                gofmt::quote(domain),
                gofmt::quote(label)
            ));
        }
    }
    Ok(())
}

/// `ValidateFQDN`.
pub fn fqdn(name: &str) -> Result<(), String> {
    dns1123_preconditions(name)?;
    dns1123_labels(name)
}

/// `ValidateWildcardDomain`: an FQDN whose first label may be a wildcard.
pub fn wildcard_domain(domain: &str) -> Result<(), String> {
    dns1123_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!("domain name {} invalid (label {} invalid)", gofmt::quote(domain), gofmt::quote(first)));
    }
    match rest {
        Some(r) => dns1123_labels(r),
        None => Ok(()),
    }
}

/// `ValidateWildcardDomainForVirtualServiceBoundToGateway`: also allows the
/// `outbound_.<port>_._.<host>` SNI names of AUTO_PASSTHROUGH when `sni`.
pub fn wildcard_domain_for_gateway_vs(sni: bool, domain: &str) -> Result<(), String> {
    dns1123_preconditions(domain)?;
    if sni && domain.starts_with("outbound_") {
        const FORMAT: &str = "outbound_.<port>_._.<hostname>";
        let parts: Vec<&str> = domain.split('_').collect();
        if parts.len() < 4 {
            return Err(format!("domain name {domain} invalid, should follow '{FORMAT}' format"));
        }
        let (dir, port, host) = (parts[0], parts[1].trim_matches('.'), parts[3].trim_matches('.'));
        if dir != "outbound" {
            return Err(format!("domain name {} invalid (label {} invalid)", gofmt::quote(domain), gofmt::quote(dir)));
        }
        if !port.bytes().any(|c| c.is_ascii_digit()) {
            return Err(format!(
                "domain name {} invalid (label {} invalid). should follow {FORMAT} format",
                gofmt::quote(domain),
                gofmt::quote(port)
            ));
        }
        if !host.bytes().any(|c| c.is_ascii_alphabetic()) {
            return Err(format!(
                "domain name {} invalid (label {} invalid). should follow {FORMAT} format",
                gofmt::quote(domain),
                gofmt::quote(host)
            ));
        }
        return Ok(());
    }
    wildcard_domain(domain)
}

/// `ValidateIPAddress`.
pub fn ip_address(addr: &str) -> Result<(), String> {
    if is_ip(addr) { Ok(()) } else { Err(format!("{addr} is not a valid IP")) }
}

/// Go's `netip.ParseAddr` (IPv6 zones allowed) / `netutil.IsValidIPAddress`.
pub fn is_ip(addr: &str) -> bool {
    let bare = match addr.split_once('%') {
        Some((a, zone)) if !zone.is_empty() && a.contains(':') => a,
        _ => addr,
    };
    bare.parse::<IpAddr>().is_ok()
}

/// A CIDR prefix as `netip.ParsePrefix` accepts it: `addr/bits`, no zone.
pub fn is_cidr(s: &str) -> bool {
    let Some((addr, bits)) = s.split_once('/') else { return false };
    let Ok(ip) = addr.parse::<IpAddr>() else { return false };
    if bits.is_empty() || !bits.bytes().all(|c| c.is_ascii_digit()) || (bits.len() > 1 && bits.starts_with('0')) {
        return false;
    }
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.parse::<u32>().is_ok_and(|b| b <= max)
}

/// `ValidateIPSubnet`: a CIDR block or a plain address.
pub fn ip_subnet(subnet: &str) -> Result<(), String> {
    if subnet.matches('/').count() == 1 {
        if is_cidr(subnet) { Ok(()) } else { Err(format!("{subnet} is not a valid CIDR block")) }
    } else {
        ip_address(subnet)
    }
}

/// `ValidatePartialWildCard`.
pub fn partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
        return Err(format!("partial wildcard {} not allowed", gofmt::quote(host)));
    }
    Ok(())
}

/// `validateSidecarOrGatewayHostnamePart`.
fn sidecar_or_gateway_hostname_part(hostname: &str, is_gateway: bool, out: &mut Vec<String>) {
    if hostname != "*" && !hostname.contains('.') {
        out.push("short names (non FQDN) are not allowed".into());
    }
    if let Err(e) = wildcard_domain(hostname) {
        if !is_gateway {
            out.push(e.clone());
        }
        if !is_ip(hostname) {
            out.push(e);
        }
    }
    if let Err(e) = partial_wildcard(hostname) {
        out.push(e);
    }
}

/// `ValidateNamespaceSlashWildcardHostname`: `ns/host` entries of Gateway
/// servers and Sidecar egress listeners. Returns every error found.
pub fn namespace_slash_wildcard_hostname(hostname: &str, is_gateway: bool, gateway_semantics: bool) -> Vec<String> {
    let mut errs = Vec::new();
    let Some((ns, host)) = hostname.split_once('/') else {
        if is_gateway {
            sidecar_or_gateway_hostname_part(hostname, true, &mut errs);
        } else {
            errs.push("host must be of form namespace/dnsName".into());
        }
        return errs;
    };
    if ns.is_empty() || host.is_empty() {
        errs.push("config namespace and dnsName in host entry cannot be empty".into());
    }
    if !is_gateway {
        let bare = ns.strip_prefix('~').unwrap_or(ns);
        if !bare.is_empty() && bare != "*" && bare != "." && !is_dns1123_label(bare) {
            errs.push(format!("invalid namespace value {} in sidecar", gofmt::quote(ns)));
        }
    } else if ns != "*" && ns != "." && (ns != "~" || !gateway_semantics) && !is_dns1123_label(ns) {
        errs.push(format!("invalid namespace value {} in gateway", gofmt::quote(ns)));
    }
    sidecar_or_gateway_hostname_part(host, is_gateway, &mut errs);
    errs
}

/// `ValidateUnixAddress` (the part after `unix://`).
pub fn unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

/// `ValidatePortName`.
pub fn port_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) { Ok(()) } else { Err(format!("invalid port name: {name}")) }
}

/// `ValidateProtocol`: empty means "sniff" and is allowed.
pub fn protocol(p: &str) -> Result<(), String> {
    if !p.is_empty() && Protocol::parse(p).is_none() {
        return Err(format!("unsupported protocol: {p}"));
    }
    Ok(())
}

/// `ValidatePercent`.
pub fn percent(v: i64) -> Result<(), String> {
    if (0..=100).contains(&v) { Ok(()) } else { Err(format!("percentage {v} is not in range 0..100")) }
}

/// `validatePercentage`: 0, or within [0.0001, 100].
pub fn percentage(p: Option<&Percent>) -> Result<(), String> {
    if let Some(p) = p {
        let v = p.value;
        if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) || v.is_nan() {
            return Err(format!("percentage {} is neither 0.0, nor in range [0.0001, 100.0]", gofmt::float_v(v)));
        }
    }
    Ok(())
}

/// `validateWeight`.
pub fn weight(w: i32) -> Result<(), String> {
    if w < 0 { Err(format!("weight {w} < 0")) } else { Ok(()) }
}

/// `labels.Instance.Validate`: Kubernetes label keys and values.
pub fn labels(l: &Labels, p: &P, r: &mut Report) {
    for (k, v) in l {
        if let Err(e) = label_key(k) {
            r.error(&p.k(k), e);
        }
        if !is_label_value(v) {
            r.error(&p.k(k), format!("invalid tag value: {}", gofmt::quote(v)));
        }
    }
}

/// Kubernetes qualified name: `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_label_value(v: &str) -> bool {
    v.is_empty() || is_qualified_name(v)
}

/// `validateTagKey`: `[dns-prefix/]name`.
fn label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let invalid = || format!("invalid tag key: {}", gofmt::quote(k));
    if let Some(prefix) = prefix {
        if !prefix.split('.').all(is_dns1123_label_unbounded) {
            return Err(invalid());
        }
        if prefix.len() > 253 {
            return Err(format!("invalid tag key: {} (DNS prefix is too long)", gofmt::quote(k)));
        }
    }
    if !is_qualified_name(name) {
        return Err(invalid());
    }
    if name.len() > DNS1123_LABEL_MAX {
        return Err(format!("invalid tag key: {} (name is too long)", gofmt::quote(k)));
    }
    Ok(())
}

/// The DNS label pattern without the length bound (the key regex has none).
fn is_dns1123_label_unbounded(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// `visibility.Instance.Validate`.
fn visibility(v: &str) -> Result<(), String> {
    match v {
        "." | "*" => Ok(()),
        "~" => Err("exportTo ~ (none) is not allowed for Istio configuration objects".into()),
        _ if is_dns1123_label(v) => Ok(()),
        _ => Err("only .,*, or a valid DNS 1123 label is allowed as exportTo entry".into()),
    }
}

/// `validateExportTo`.
pub fn export_to(
    namespace: &str,
    export_to: &[String],
    is_service_entry: bool,
    is_dr_with_selector: bool,
    p: &P,
    r: &mut Report,
) {
    if export_to.is_empty() {
        return;
    }
    let mut set: Vec<&str> = Vec::new();
    for (i, e) in export_to.iter().enumerate() {
        let key = if e == "." { namespace } else { e.as_str() };
        if set.contains(&key) {
            if key != e {
                r.error(&p.i(i), format!("duplicate entries in exportTo: . and current namespace {namespace}"));
            } else {
                r.error(&p.i(i), format!("duplicate entries in exportTo for entry {e}"));
            }
        } else if is_service_entry && e == "~" {
            set.push(key);
        } else {
            match visibility(key) {
                Ok(()) => set.push(key),
                Err(m) => r.error(&p.i(i), m),
            }
        }
    }
    if is_dr_with_selector && !set.is_empty() {
        if set.contains(&namespace) {
            if set.len() > 1 {
                r.error(p, "destination rule with workload selector cannot have multiple entries in exportTo");
            }
        } else {
            r.error(p, "destination rule with workload selector cannot have exportTo beyond current namespace");
        }
    }
    if set.contains(&"*") && export_to.len() > 1 {
        r.error(p, "cannot have both public (*) and non-public exportTo values for a resource");
    }
    if set.contains(&"~") && export_to.len() > 1 {
        r.error(p, "cannot export service entry to no one (~) and someone");
    }
}

/// RFC 7230 token characters, Istio's `validHeaderNameRegex`.
pub fn is_header_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_header_token_byte)
}

fn is_header_token_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

const PSEUDO_HEADERS: &[&str] = &[":method", ":scheme", ":authority", ":path", ":status"];

/// `ValidateHTTPHeaderNameOrJwtClaimRoute` (match keys).
pub fn header_name_or_jwt_claim(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_jwt_claim_route(name) || PSEUDO_HEADERS.contains(&name) {
        return Ok(());
    }
    if !is_header_token(name) {
        return Err(format!("header name {name} is not a valid header name"));
    }
    Ok(())
}

const JWT_CLAIM_HEADER: &str = "@request.auth.claims";

/// The `@request.auth.claims.<claim>` / `@request.auth.claims[a][b]` form
/// (`jwt.ToRoutingClaim(name).Match`): the prefix is matched case-insensitively.
pub fn is_jwt_claim_route(name: &str) -> bool {
    // Go lower-cases the whole name before the prefix test. The only rune
    // outside ASCII that lower-cases into the prefix (`İ` to `i`) is a byte
    // longer, so Go's tail then starts at the `s` and never matches: ASCII
    // case folding gives the same answers.
    let n = JWT_CLAIM_HEADER.len();
    if !name.get(..n).is_some_and(|prefix| prefix.eq_ignore_ascii_case(JWT_CLAIM_HEADER)) {
        return false;
    }
    let rest = &name[n..];
    (rest.starts_with('.') && rest.len() > 1) || (rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
}

/// A non-empty header name whose bytes all satisfy `allowed`.
fn header_name_of(name: &str, allowed: impl Fn(u8) -> bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.bytes().all(allowed) { Ok(()) } else { Err(format!("header name {name} is not a valid header name")) }
}

/// `ValidateHTTPHeaderName` family: strict RFC token, used for CORS too (with `*`).
pub fn cors_header_name(name: &str) -> Result<(), String> {
    if name == "*" {
        return Ok(());
    }
    header_name_of(name, is_header_token_byte)
}

/// `ValidateProbeHeaderName`: `[-A-Za-z0-9]+`.
pub fn probe_header_name(name: &str) -> Result<(), String> {
    header_name_of(name, |c| c.is_ascii_alphanumeric() || c == b'-')
}

/// `ValidateStrictHTTPHeaderName`: `[-_A-Za-z0-9]+`.
pub fn strict_header_name(name: &str) -> Result<(), String> {
    header_name_of(name, |c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

fn is_internal_header(name: &str) -> bool {
    name.starts_with(':')
}

/// `:authority` or `Host`, in any case.
pub(super) fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// `ValidateHTTPHeaderWithAuthorityOperationName` (request `set`/`add`).
pub fn header_with_authority_operation_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_internal_header(name) && !is_authority_header(name) {
        return Err(format!("invalid header {}: header cannot have \":\" prefix", gofmt::quote(name)));
    }
    Ok(())
}

/// `ValidateHTTPHeaderOperationName` (request `remove`, all response operations).
pub fn header_operation_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {}: cannot set Host header", gofmt::quote(name)));
    }
    if is_internal_header(name) {
        return Err(format!("invalid header {}: header cannot have \":\" prefix", gofmt::quote(name)));
    }
    Ok(())
}

/// `validateDestination`: a VirtualService route's or mirror's destination,
/// or a Sidecar's egress proxy.
pub fn destination(d: &Destination, p: &P, r: &mut Report) {
    let hp = p.f("host");
    if d.host == "*" {
        r.error(&hp, format!("invalid destination host {}", d.host));
    } else {
        r.check(&hp, wildcard_domain(&d.host));
    }
    if !d.subset.is_empty() && !is_dns1123_label(&d.subset) {
        r.error(&p.f("subset"), format!("subset name is invalid: {}", d.subset));
    }
    if let Some(selector) = &d.port {
        r.check(&p.f("port").f("number"), port(i64::from(selector.number)));
    }
}

/// `validateWorkloadSelector` for `matchLabels`/`labels` selectors: no empty
/// keys, no wildcards; an empty selector is a warning.
pub fn workload_selector(labels: &Labels, p: &P, r: &mut Report) {
    for (k, v) in labels {
        if k.is_empty() {
            r.error(&p.k(k), format!("empty key is not supported in selector: {}", gofmt::quote(&format!("{k}={v}"))));
        }
        if k.contains('*') || v.contains('*') {
            r.error(&p.k(k), format!("wildcard is not supported in selector: {}", gofmt::quote(&format!("{k}={v}"))));
        }
    }
    if labels.is_empty() {
        r.warn(p, "workload selector specified without labels");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_domains() {
        for ok in ["*", "*.bar.com", "foo.bar", "*-foo.bar", "foo", "istio.io."] {
            assert!(wildcard_domain(ok).is_ok(), "{ok}");
        }
        for bad in ["", "*foo.*.bar", "foo.*.bar", "foo..bar", "foo.123", "-foo.bar", &"a".repeat(256)] {
            assert!(wildcard_domain(bad).is_err(), "{bad}");
        }
        assert_eq!(wildcard_domain("foo.*.bar").unwrap_err(), "domain name \"*.bar\" invalid (label \"*\" invalid)");
    }

    #[test]
    fn gateway_sni_domains() {
        assert!(wildcard_domain_for_gateway_vs(true, "outbound_.80_._.e2e.foobar.mesh").is_ok());
        assert!(wildcard_domain_for_gateway_vs(true, "outbound_.80_.e2e.foobar.mesh").is_err());
        assert!(wildcard_domain_for_gateway_vs(false, "outbound_.80_._.e2e.foobar.mesh").is_err());
    }

    #[test]
    fn ips_and_subnets() {
        assert!(ip_subnet("10.0.0.0/8").is_ok());
        assert!(ip_subnet("2001:1::1/64").is_ok());
        assert!(ip_subnet("1.2.3.4").is_ok());
        assert!(ip_subnet("1.2.3.4/33").is_err());
        assert!(ip_subnet("foo").is_err());
        assert!(is_ip("fe80::1%eth0"));
    }

    #[test]
    fn label_keys_and_values() {
        let mut r = Report::default();
        let l: Labels = [("app.kubernetes.io/name", "x"), ("version", "v1"), ("bad key", "v"), ("k", "-bad")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        labels(&l, &P::root("l"), &mut r);
        assert_eq!(r.findings.len(), 2, "{:?}", r.findings);
    }

    #[test]
    fn export_to_rules() {
        let run = |v: &[&str], se: bool, dr_sel: bool| {
            let mut r = Report::default();
            let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            export_to("ns", &v, se, dr_sel, &P::root("e"), &mut r);
            r.findings.into_iter().map(|f| f.message).collect::<Vec<_>>()
        };
        assert!(run(&[".", "ns2"], false, false).is_empty());
        assert!(run(&["~"], false, false)[0].contains("exportTo ~ (none) is not allowed"));
        assert!(run(&["~"], true, false).is_empty());
        assert!(run(&["~", "*"], true, false).iter().any(|m| m.contains("no one (~) and someone")));
        assert!(
            run(&["ns", "."], false, false)[0].contains("duplicate entries in exportTo: . and current namespace ns")
        );
        assert!(run(&["*", "a"], false, false)[0].contains("both public"));
        assert!(run(&["other"], false, true)[0].contains("beyond current namespace"));
    }

    #[test]
    fn header_names() {
        assert!(header_name_or_jwt_claim(":authority").is_ok());
        assert!(header_name_or_jwt_claim("@request.auth.claims.groups").is_ok());
        assert!(header_name_or_jwt_claim("a b").is_err());
        assert!(is_jwt_claim_route("@Request.Auth.CLAIMS[a][b]"));
        assert!(!is_jwt_claim_route("@request.auth.claims."));
        assert!(!is_jwt_claim_route("@request.auth.claims[]"));
        assert!(!is_jwt_claim_route("@request.auth.cla\u{130}ms.x"));
        assert!(!is_jwt_claim_route("@request.auth.cl\u{e9}"));
        assert!(header_operation_name("Host").is_err());
        assert!(header_with_authority_operation_name(":authority").is_ok());
        assert!(header_with_authority_operation_name(":path").is_err());
    }
}
