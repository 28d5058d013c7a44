//! Request simulation (`weir explain`): walks a request through a compiled
//! snapshot exactly as the data path would — listener, filter chain, route
//! table, virtual host, route — and reports each decision, or why the
//! request was not routed.

use std::fmt::Write;

use crate::matcher::{RequestView, host_without_port, match_route, select_virtual_host};
use crate::model::{ChainAction, Cluster, Listener, Route, RouteAction, RouteTable, Snapshot, VirtualHost};

/// A request to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct SimRequest {
    pub method: String,
    pub scheme: String,
    /// Host as written in the URL (no port).
    pub host: String,
    pub port: u16,
    /// Path and query.
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
}

impl SimRequest {
    /// Parses `http://host[:port]/path?query` (scheme defaults to http).
    pub fn from_url(method: &str, url: &str, headers: Vec<(String, String)>) -> Result<SimRequest, String> {
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("http".to_string(), url),
        };
        if scheme != "http" && scheme != "https" {
            return Err(format!("unsupported scheme {scheme:?}: use http:// or https://"));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() {
            return Err(format!("URL {url:?} has no host"));
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse::<u16>() {
                Ok(p) if !h.is_empty() => (h.to_string(), p),
                _ => return Err(format!("invalid port in URL {url:?}")),
            },
            _ => (authority.to_string(), default_port),
        };
        let headers = headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        Ok(SimRequest { method: method.to_ascii_uppercase(), scheme, host, port, path, headers })
    }

    fn authority(&self) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        if self.port == default { self.host.clone() } else { format!("{}:{}", self.host, self.port) }
    }
}

/// The outcome of a simulation.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// Whether a route took the request.
    pub routed: bool,
    /// Human-readable report, one decision per line.
    pub text: String,
}

/// Simulates `req` against `snap`.
pub fn explain(snap: &Snapshot, req: &SimRequest) -> Explanation {
    let mut out = String::new();
    let authority = req.authority();
    let _ = writeln!(out, "request:       {} {}://{}{}", req.method, req.scheme, authority, req.path);
    let listeners: Vec<&Listener> = snap.listeners_on_port(req.port).collect();
    if listeners.is_empty() {
        let ports: Vec<String> = snap.listeners.iter().map(|l| l.port.to_string()).collect();
        let _ = writeln!(
            out,
            "not routed:    no listener on port {} (listeners: {})",
            req.port,
            if ports.is_empty() { "none".into() } else { ports.join(", ") }
        );
        return Explanation { routed: false, text: out };
    }
    let headers = req.headers.clone();
    let view = RequestView {
        method: &req.method,
        scheme: &req.scheme,
        authority: &authority,
        path: &req.path,
        headers: &headers,
    };
    let sni = host_without_port(&req.host);
    // The destination address the client connects to: the URL host when it
    // is an IP, else whatever the name resolves to (unknown here), so chains
    // that match only specific service VIPs are skipped.
    let dest_ip: Option<std::net::IpAddr> = sni.trim_matches(['[', ']']).parse().ok();
    // Gateway listeners first, then sidecar ones: the first that has a virtual host decides.
    let mut last_failure = String::new();
    for l in listeners {
        let chain = l.filter_chains.iter().find(|c| {
            let sni_ok =
                c.matcher.server_names.is_empty() || c.matcher.server_names.iter().any(|n| sni_matches(n, &sni));
            let tls_ok = match c.matcher.transport {
                Some(crate::model::Transport::Tls) => req.scheme == "https",
                Some(crate::model::Transport::RawBuffer) => req.scheme == "http",
                None => true,
            };
            let dest_ok = c.matcher.destination_subnets.is_empty()
                || dest_ip.is_some_and(|ip| c.matcher.destination_subnets.iter().any(|n| in_subnet(ip, n)));
            sni_ok && tls_ok && dest_ok
        });
        let origins = if l.origins.is_empty() { String::new() } else { format!(", from {}", join(&l.origins)) };
        let _ = writeln!(out, "listener:      {} ({:?} role{origins})", l.name, l.role);
        let Some(chain) = chain else {
            last_failure = format!(
                "no filter chain of {} accepts {} with SNI {sni:?} (connection reset, flag NFCF)",
                l.name, req.scheme
            );
            let _ = writeln!(out, "               {last_failure}");
            continue;
        };
        let _ = writeln!(out, "filter chain:  {}", chain.name);
        match &chain.action {
            ChainAction::Http { route_table } => {
                let Some(table) = snap.route_table(route_table) else {
                    last_failure = format!("route table {route_table} is missing");
                    continue;
                };
                return explain_http(snap, table, &view, out);
            }
            ChainAction::Tcp { routes } => {
                let _ = writeln!(out, "action:        TCP proxy (not HTTP-routed)");
                if let Some(r) = routes.first() {
                    let _ = writeln!(out, "               to {}", weights(&r.clusters));
                    endpoints(snap, r.clusters.iter().map(|c| &*c.cluster), &mut out);
                }
                return Explanation { routed: !routes.is_empty(), text: out };
            }
            ChainAction::AutoPassthrough => {
                let _ = writeln!(out, "action:        AUTO_PASSTHROUGH: SNI names the cluster");
                return Explanation { routed: true, text: out };
            }
        }
    }
    let _ = writeln!(out, "not routed:    {last_failure}");
    Explanation { routed: false, text: out }
}

/// Whether `ip` is `subnet` (an address or a CIDR block).
fn in_subnet(ip: std::net::IpAddr, subnet: &str) -> bool {
    let (addr, bits) = match subnet.split_once('/') {
        Some((a, b)) => (a, b.parse::<u32>().ok()),
        None => (subnet, None),
    };
    let Ok(net) = addr.parse::<std::net::IpAddr>() else { return false };
    match (ip, net) {
        (std::net::IpAddr::V4(a), std::net::IpAddr::V4(n)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (std::net::IpAddr::V6(a), std::net::IpAddr::V6(n)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn sni_matches(name: &str, sni: &str) -> bool {
    match name.strip_prefix('*') {
        Some(suffix) => sni.ends_with(suffix) && sni.len() > suffix.len(),
        None => name.eq_ignore_ascii_case(sni),
    }
}

fn explain_http(snap: &Snapshot, table: &RouteTable, req: &RequestView<'_>, mut out: String) -> Explanation {
    let _ = writeln!(out, "route table:   {}", table.name);
    let Some(vh) = select_virtual_host(table, req.authority) else {
        let domains: Vec<String> =
            table.virtual_hosts.iter().flat_map(|v| v.domains.iter().map(|d| d.to_string())).take(20).collect();
        let _ = writeln!(
            out,
            "not routed:    no virtual host for host {:?} -> 404 NR (domains here: {})",
            host_without_port(req.authority),
            domains.join(", ")
        );
        return Explanation { routed: false, text: out };
    };
    let _ = writeln!(out, "virtual host:  {} (domains: {})", vh.name, join(&vh.domains));
    if vh.require_tls && req.scheme == "http" {
        let _ = writeln!(out, "action:        301 redirect to https (httpsRedirect)");
        return Explanation { routed: true, text: out };
    }
    match match_route(vh, req) {
        Ok((i, r)) => {
            describe_route(snap, vh, i, r, &mut out);
            Explanation { routed: true, text: out }
        }
        Err(misses) => {
            if misses.is_empty() {
                let _ = writeln!(out, "not routed:    virtual host {} has no routes -> 404 NR", vh.name);
            } else {
                let _ = writeln!(out, "not routed:    no route matched -> 404 NR");
                if let Some(best) = misses.iter().max_by_key(|m| (m.conditions_met, std::cmp::Reverse(m.route))) {
                    let r = &vh.routes[best.route];
                    let _ = writeln!(out, "closest:       route #{}{}", best.route, origin(r));
                    let _ = writeln!(out, "               {}", best.reason);
                }
            }
            Explanation { routed: false, text: out }
        }
    }
}

fn origin(r: &Route) -> String {
    match &r.origin {
        Some(o) => {
            let m = o.matcher.map(|m| format!(" match {m}")).unwrap_or_default();
            format!(" ({} http[{}]{m}, {}:{})", o.object, o.rule, o.file, o.line)
        }
        None => " (default route)".into(),
    }
}

fn describe_route(snap: &Snapshot, _vh: &VirtualHost, i: usize, r: &Route, out: &mut String) {
    let name = if r.name.is_empty() { String::new() } else { format!(" {:?}", r.name) };
    let _ = writeln!(out, "route:         #{i}{name}{}", origin(r));
    match &r.action {
        RouteAction::Forward { clusters, rewrite } => {
            let _ = writeln!(out, "action:        forward to {}", weights(clusters));
            if let Some(rw) = rewrite {
                let _ = writeln!(out, "rewrite:       {rw:?}");
            }
        }
        RouteAction::Redirect(rd) => {
            let _ = writeln!(out, "action:        redirect {} {rd:?}", rd.code);
        }
        RouteAction::DirectResponse { status, body } => {
            let _ = writeln!(
                out,
                "action:        direct response {status}{}",
                body.as_ref().map(|b| format!(" {b:?}")).unwrap_or_default()
            );
        }
    }
    if let Some(f) = &r.fault {
        if let Some(d) = &f.delay {
            let _ =
                writeln!(out, "fault:         delay {:?} for {}% of requests (flag DI)", d.fixed_delay, d.percentage);
        }
        if let Some(a) = &f.abort {
            let _ = writeln!(out, "fault:         abort {:?} for {}% of requests (flag FI)", a.status, a.percentage);
        }
    }
    let _ = writeln!(out, "timeout:       {}", r.timeout.map_or("none".into(), |t| format!("{t:?}")));
    match &r.retries {
        Some(rp) => {
            let per_try = rp.per_try_timeout.map(|t| format!(", per try {t:?}")).unwrap_or_default();
            let _ = writeln!(out, "retries:       {} on {}{per_try}", rp.attempts, join(&rp.retry_on));
        }
        None => {
            let _ = writeln!(out, "retries:       none");
        }
    }
    for m in &r.mirrors {
        let _ = writeln!(out, "mirror:        {} ({}% of requests)", m.cluster, m.percentage);
    }
    if let RouteAction::Forward { clusters, .. } = &r.action {
        endpoints(snap, clusters.iter().map(|c| &*c.cluster), out);
    }
}

fn weights(clusters: &[crate::model::WeightedCluster]) -> String {
    let total: u64 = clusters.iter().map(|c| c.weight as u64).sum();
    clusters
        .iter()
        .map(|c| {
            if clusters.len() == 1 || total == 0 {
                c.cluster.to_string()
            } else {
                format!("{} ({}%)", c.cluster, (c.weight as f64 * 100.0 / total as f64).round())
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn endpoints<'a>(snap: &Snapshot, clusters: impl Iterator<Item = &'a str>, out: &mut String) {
    for name in clusters {
        match snap.cluster(name) {
            None => {
                let _ = writeln!(out, "endpoints:     {name}: cluster not found -> 503 NC");
            }
            Some(Cluster { endpoints, .. }) if endpoints.is_empty() => {
                let _ = writeln!(out, "endpoints:     {name}: none -> 503 UH (no healthy upstream)");
            }
            Some(c) => {
                let list: Vec<String> = c.endpoints.iter().map(|e| format!("{}:{}", e.address, e.port)).collect();
                let _ = writeln!(out, "endpoints:     {name}: {}", list.join(", "));
            }
        }
    }
}

fn join(items: &[crate::model::Str]) -> String {
    items.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let r = SimRequest::from_url("get", "http://reviews:9080/a?b=1", vec![]).unwrap();
        assert_eq!((r.host.as_str(), r.port, r.path.as_str(), r.method.as_str()), ("reviews", 9080, "/a?b=1", "GET"));
        let r = SimRequest::from_url("GET", "https://x.example.com", vec![]).unwrap();
        assert_eq!((r.port, r.path.as_str()), (443, "/"));
        let r = SimRequest::from_url("GET", "productpage", vec![]).unwrap();
        assert_eq!((r.scheme.as_str(), r.port), ("http", 80));
        assert!(SimRequest::from_url("GET", "ftp://x", vec![]).is_err());
        assert!(SimRequest::from_url("GET", "http://x:99999/", vec![]).is_err());
    }

    #[test]
    fn subnets() {
        let ip = |s: &str| s.parse().unwrap();
        assert!(in_subnet(ip("10.1.2.3"), "10.0.0.0/8"));
        assert!(!in_subnet(ip("11.1.2.3"), "10.0.0.0/8"));
        assert!(in_subnet(ip("10.1.2.3"), "10.1.2.3"));
        assert!(in_subnet(ip("::1"), "::/0"));
        assert!(!in_subnet(ip("::1"), "10.0.0.0/8"));
    }

    #[test]
    fn no_listener_is_explained() {
        let e = explain(&Snapshot::default(), &SimRequest::from_url("GET", "http://a:81/", vec![]).unwrap());
        assert!(!e.routed);
        assert!(e.text.contains("no listener on port 81"), "{}", e.text);
    }
}
