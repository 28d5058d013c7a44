//! WorkloadEntry and WorkloadGroup validation (`ValidateWorkloadEntry`, `ValidateWorkloadGroup`).
//!
//! Two layers apply to every object: the CRD schema and CEL rules the API
//! server enforces (Kubernetes-style messages such as `Required value` or
//! `Invalid value: "object": Address is required`) and istiod's webhook
//! (`pkg/config/validation`). The entry checks are shared with ServiceEntry
//! endpoints.

use std::collections::BTreeSet;

use crate::types::{ObjectMeta, ReadinessProbe, WorkloadEntry, WorkloadGroup};

use super::common::{self, UNIX_ADDRESS_PREFIX};
use super::{P, Report, gofmt, schema};

pub(super) fn validate_entry(_meta: &ObjectMeta, spec: &WorkloadEntry, p: &P, r: &mut Report) {
    crd_entry(spec, p, r, false);
    entry(spec, None, true, p, r);
}

pub(super) fn validate_group(_meta: &ObjectMeta, spec: &WorkloadGroup, p: &P, r: &mut Report) {
    crd_group(spec, p, r);
    webhook_group(spec, p, r);
}

/// `validateWorkloadEntry`: a WorkloadEntry, or a ServiceEntry endpoint when
/// `service_ports` holds the names of the ServiceEntry's ports.
pub(super) fn entry(
    we: &WorkloadEntry,
    service_ports: Option<&BTreeSet<&str>>,
    allow_fqdn: bool,
    p: &P,
    r: &mut Report,
) {
    let addr = &*we.address;
    let addr_path = p.f("address");
    if addr.is_empty() {
        if we.network().is_empty() {
            r.error(&addr_path, "address is required");
            return;
        }
        r.warn(&addr_path, format!("address is unset with network {}", gofmt::quote(we.network())));
    }

    let unix = addr.starts_with(UNIX_ADDRESS_PREFIX);
    if let Some(path) = addr.strip_prefix(UNIX_ADDRESS_PREFIX) {
        r.check(&addr_path, common::unix_address(path));
        if !we.ports.is_empty() {
            r.error(&p.f("ports"), format!("unix endpoint {addr} must not include ports"));
        }
    } else if !addr.is_empty() && !common::is_ip(addr) {
        if !allow_fqdn {
            r.error(&addr_path, format!("endpoint address {} is not a valid IP address", gofmt::quote(addr)));
        } else if common::fqdn(addr).is_err() {
            r.error(
                &addr_path,
                format!("endpoint address {} is not a valid FQDN or an IP address", gofmt::quote(addr)),
            );
        }
    }

    endpoint_ports(we, service_ports, p, r);
    common::labels(we.labels(), &p.f("labels"), r);
    if unix && service_ports.is_some_and(|s| s.len() != 1) {
        r.error(p, "exactly 1 service port required for unix endpoints");
    }
}

/// The port checks of an endpoint: names defined by the ServiceEntry (when
/// given), DNS-label names and valid numbers.
pub(super) fn endpoint_ports(we: &WorkloadEntry, service_ports: Option<&BTreeSet<&str>>, p: &P, r: &mut Report) {
    for (name, &port) in &we.ports {
        let pp = p.f("ports").k(name);
        if service_ports.is_some_and(|s| !s.contains(name.as_str())) {
            r.error(&pp, format!("endpoint port {port} is not defined by the service entry"));
        }
        r.check(&pp, common::port_name(name));
        r.check(&pp, common::port(i64::from(port)));
    }
}

/// The CRD schema of a WorkloadEntry (`is_template` for a WorkloadGroup
/// template, which need not carry an address). Also used for ServiceEntry endpoints.
pub(super) fn crd_entry(we: &WorkloadEntry, p: &P, r: &mut Report, is_template: bool) {
    if !is_template && we.address.is_empty() && we.network().is_empty() {
        schema::cel(r, p, "object", "Address is required");
    }
    let unix = we.address.starts_with(UNIX_ADDRESS_PREFIX);
    if unix && !we.ports.is_empty() {
        schema::cel(r, p, "object", "UDS may not include ports");
    }

    let addr_path = p.f("address");
    schema::max_length(r, &addr_path, &we.address, 256);
    if let Some(rest) = we.address.strip_prefix(UNIX_ADDRESS_PREFIX) {
        if !rest.starts_with('/') && !rest.starts_with('@') {
            schema::cel(r, &addr_path, "string", "UDS must be an absolute path or abstract socket");
        }
        if rest.ends_with('/') {
            schema::cel(r, &addr_path, "string", "UDS may not be a dir");
        }
    }

    schema::max_properties(r, &p.f("labels"), we.labels().len(), 256);
    schema::max_length(r, &p.f("locality"), we.locality(), 2048);
    schema::max_length(r, &p.f("network"), we.network(), 2048);
    schema::max_length(r, &p.f("serviceAccount"), we.service_account(), 253);

    let ports = p.f("ports");
    schema::max_properties(r, &ports, we.ports.len(), 128);
    for (name, &port) in &we.ports {
        if !(1..=65535).contains(&port) {
            schema::port_rule(r, &ports.k(name));
        }
    }
    if !we.ports.keys().all(|k| k.len() < 63 && common::is_dns1123_label(k)) {
        schema::cel(r, &ports, "object", "port name must be valid");
    }
}

/// The CRD schema of a WorkloadGroup.
fn crd_group(wg: &WorkloadGroup, p: &P, r: &mut Report) {
    if let Some(m) = &wg.metadata {
        let mp = p.f("metadata");
        schema::max_properties(r, &mp.f("labels"), m.labels.len(), 256);
        schema::max_properties(r, &mp.f("annotations"), m.annotations.len(), 256);
    }
    match &wg.template {
        Some(t) => crd_entry(t, &p.f("template"), r, true),
        None => schema::required(r, &p.f("template")),
    }
    let Some(probe) = &wg.probe else { return };
    let pp = p.f("probe");
    let methods = [probe.http_get.is_some(), probe.tcp_socket.is_some(), probe.exec.is_some(), probe.grpc.is_some()];
    if methods.iter().filter(|&&m| m).count() > 1 {
        schema::invalid(r, &pp, "\"object\"", &format!("{pp} in body must validate one and only one schema (oneOf)"));
    }
    for (field, v) in [
        ("failureThreshold", probe.failure_threshold),
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("timeoutSeconds", probe.timeout_seconds),
    ] {
        schema::minimum(r, &pp.f(field), i64::from(v), 0);
    }
    if let Some(h) = &probe.http_get {
        let hp = pp.f("httpGet");
        schema::required_port(r, &hp.f("port"), h.port);
        if !matches!(h.scheme.as_str(), "" | "HTTP" | "HTTPS") {
            schema::cel(r, &hp.f("scheme"), "string", "scheme must be one of [HTTP, HTTPS]");
        }
        for (i, header) in h.http_headers.iter().enumerate() {
            let name = &header.name;
            if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
                schema::pattern(r, &hp.f("httpHeaders").i(i).f("name"), name, "^[-_A-Za-z0-9]+$");
            }
        }
    }
    if let Some(t) = &probe.tcp_socket {
        schema::required_port(r, &pp.f("tcpSocket").f("port"), t.port);
    }
    if let Some(e) = &probe.exec {
        let cp = pp.f("exec").f("command");
        if e.command.is_empty() {
            schema::required(r, &cp);
        }
        for (i, c) in e.command.iter().enumerate() {
            if c.is_empty() {
                let ip = cp.i(i);
                schema::invalid(r, &ip, "\"\"", &format!("{ip} in body should be at least 1 chars long"));
            }
        }
    }
    if let Some(g) = &probe.grpc
        && g.port > 65535
    {
        schema::port_rule(r, &pp.f("grpc").f("port"));
    }
}

/// `ValidateWorkloadGroup`.
fn webhook_group(wg: &WorkloadGroup, p: &P, r: &mut Report) {
    if wg.template.is_none() {
        r.error(&p.f("template"), "template is required");
        return;
    }
    if let Some(m) = &wg.metadata {
        let mut labels = Report::default();
        common::labels(&m.labels, &p.f("metadata").f("labels"), &mut labels);
        if labels.has_errors() {
            for f in labels.errors() {
                r.error(&P::root(&f.path), format!("invalid labels: {}", f.message));
            }
            return;
        }
    }
    if let Some(probe) = &wg.probe {
        readiness_probe(probe, &p.f("probe"), r);
    }
}

/// `validateReadinessProbe`.
fn readiness_probe(probe: &ReadinessProbe, p: &P, r: &mut Report) {
    for (field, v) in [
        ("periodSeconds", probe.period_seconds),
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if v < 0 {
            r.error(&p.f(field), format!("{field} must be non-negative"));
        }
    }
    let mut any = false;
    if let Some(h) = &probe.http_get {
        any = true;
        let hp = p.f("httpGet");
        r.check(&hp.f("port"), common::port(i64::from(h.port)));
        if !matches!(h.scheme.as_str(), "" | "HTTP" | "HTTPS") {
            r.error(&hp.f("scheme"), r#"httpGet.scheme must be one of "HTTPS", "HTTP""#);
        }
        for (i, header) in h.http_headers.iter().enumerate() {
            r.check(&hp.f("httpHeaders").i(i).f("name"), common::probe_header_name(&header.name));
        }
    }
    if let Some(t) = &probe.tcp_socket {
        any = true;
        r.check(&p.f("tcpSocket").f("port"), common::port(i64::from(t.port)));
    }
    if let Some(e) = &probe.exec {
        any = true;
        if e.command.is_empty() {
            r.error(&p.f("exec").f("command"), "exec.command is required");
        }
    }
    if probe.grpc.is_some() {
        // istiod's probe switch has no gRPC case, so it rejects gRPC probes.
        any = true;
        r.error(&p.f("grpc"), "unknown health check method *v1alpha3.ReadinessProbe_Grpc");
    }
    if !any {
        r.error(p, "unknown health check method <nil>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ExecHealthCheckConfig, GrpcHealthCheckConfig, HttpHeader, HttpHealthCheckConfig};
    use crate::types::{GroupMetadata, TcpHealthCheckConfig};
    use crate::validate::Severity;

    fn we(addr: &str, ports: &[(&str, u32)]) -> WorkloadEntry {
        let mut w = WorkloadEntry::default();
        w.address = addr.into();
        w.ports = ports.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        w
    }

    fn run_entry(w: &WorkloadEntry) -> Report {
        let mut r = Report::default();
        validate_entry(&ObjectMeta::default(), w, &P::root("spec"), &mut r);
        r
    }

    fn run_group(g: &WorkloadGroup) -> Report {
        let mut r = Report::default();
        validate_group(&ObjectMeta::default(), g, &P::root("spec"), &mut r);
        r
    }

    fn has(r: &Report, sev: Severity, s: &str) -> bool {
        r.findings.iter().any(|f| f.severity == sev && format!("{}: {}", f.path, f.message).contains(s))
    }

    fn err(r: &Report, s: &str) -> bool {
        has(r, Severity::Error, s)
    }

    #[test]
    fn entry_addresses() {
        assert!(!run_entry(&we("1.2.3.4", &[])).has_errors());
        assert!(!run_entry(&we("validdns.com", &[("7777", 7777)])).has_errors());
        assert!(!run_entry(&we("172.16.1.1", &[("7777", 7777)])).has_errors());
        assert!(!run_entry(&we("unix:///lon/google/com", &[])).has_errors());
        assert!(!run_entry(&we("unix://@foo", &[])).has_errors());
        let r = run_entry(&we("invaliddns.com:9443", &[("7777", 7777)]));
        assert!(err(&r, "endpoint address \"invaliddns.com:9443\" is not a valid FQDN or an IP address"));
    }

    #[test]
    fn entry_missing_address() {
        let r = run_entry(&WorkloadEntry::default());
        assert!(err(&r, "address is required"));
        assert!(err(&r, "spec: Invalid value: \"object\": Address is required"));
        let mut w = WorkloadEntry::default();
        w.more_mut().network = "network-2".into();
        let r = run_entry(&w);
        assert!(!r.has_errors(), "{:?}", r.findings);
        assert!(has(&r, Severity::Warning, "address is unset with network \"network-2\""));
    }

    #[test]
    fn entry_unix_rules() {
        let r = run_entry(&we("unix:///lon/google/com", &[("7777", 7777)]));
        assert!(err(&r, "unix endpoint unix:///lon/google/com must not include ports"));
        assert!(err(&r, "UDS may not include ports"));
        let r = run_entry(&we("unix:///dir/", &[]));
        assert!(err(&r, "UDS may not be a dir"));
        assert!(err(&r, "/dir/ is not an absolute path to a file"));
        let r = run_entry(&we("unix://relative", &[]));
        assert!(err(&r, "UDS must be an absolute path or abstract socket"));
    }

    #[test]
    fn entry_ports_and_labels() {
        let r = run_entry(&we("1.1.1.1", &[("http", 99999)]));
        assert!(err(&r, "spec.ports.http: Invalid value: \"integer\": port must be between 1-65535"));
        assert!(err(&r, "port number 99999 must be in the range 1..65535"));
        let r = run_entry(&we("1.1.1.1", &[("@", 80)]));
        assert!(err(&r, "spec.ports: Invalid value"));
        assert!(err(&r, "invalid port name: @"));
        let mut w = we("1.1.1.1", &[]);
        w.more_mut().labels.insert("bad key".into(), "v".into());
        assert!(err(&run_entry(&w), "invalid tag key"));
        w.more_mut().labels.clear();
        w.more_mut().service_account = "a".repeat(254);
        assert!(err(&run_entry(&w), "spec.serviceAccount: Too long"));
    }

    #[test]
    fn entry_as_service_entry_endpoint() {
        let ports: BTreeSet<&str> = ["http"].into_iter().collect();
        let mut r = Report::default();
        entry(&we("google.com", &[("dne", 9080)]), Some(&ports), false, &P::root("e"), &mut r);
        assert!(err(&r, "endpoint address \"google.com\" is not a valid IP address"));
        assert!(err(&r, "endpoint port 9080 is not defined by the service entry"));
        let two: BTreeSet<&str> = ["a", "b"].into_iter().collect();
        let mut r = Report::default();
        entry(&we("unix:///s", &[]), Some(&two), false, &P::root("e"), &mut r);
        assert!(err(&r, "exactly 1 service port required for unix endpoints"));
    }

    fn group(probe: Option<ReadinessProbe>) -> WorkloadGroup {
        WorkloadGroup { template: Some(WorkloadEntry::default()), probe, ..Default::default() }
    }

    #[test]
    fn group_template_and_labels() {
        assert!(!run_group(&group(None)).has_errors());
        let r = run_group(&WorkloadGroup::default());
        assert!(err(&r, "template is required"));
        assert!(err(&r, "spec.template: Required value"));
        let mut g = group(None);
        let mut m = GroupMetadata::default();
        m.labels.insert(".".into(), "~".into());
        g.metadata = Some(m);
        let r = run_group(&g);
        assert!(err(&r, "invalid labels: invalid tag key: \".\""));
        assert!(err(&r, "invalid labels: invalid tag value: \"~\""));
        let mut g = group(None);
        g.template = Some(we("unix://@foo", &[("http", 80)]));
        assert!(err(&run_group(&g), "spec.template: Invalid value: \"object\": UDS may not include ports"));
    }

    #[test]
    fn group_probes() {
        let r = run_group(&group(Some(ReadinessProbe::default())));
        assert!(err(&r, "unknown health check method <nil>"));

        let http = |port, scheme: &str, header: &str| ReadinessProbe {
            http_get: Some(HttpHealthCheckConfig {
                port,
                scheme: scheme.into(),
                http_headers: vec![HttpHeader { name: header.into(), value: "v".into() }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!run_group(&group(Some(http(5, "HTTPS", "foo")))).has_errors());
        let r = run_group(&group(Some(http(0, "", "foo"))));
        assert!(err(&r, "port number 0 must be in the range 1..65535"));
        assert!(err(&r, "spec.probe.httpGet.port: Required value"));
        let r = run_group(&group(Some(http(80, "FTP", "**"))));
        assert!(err(&r, "httpGet.scheme must be one of \"HTTPS\", \"HTTP\""));
        assert!(err(&r, "scheme must be one of [HTTP, HTTPS]"));
        assert!(err(&r, "spec.probe.httpGet.httpHeaders[0].name in body should match"));
        assert!(err(&r, "header name ** is not a valid header name"));

        let tcp = |port| ReadinessProbe {
            tcp_socket: Some(TcpHealthCheckConfig { port, ..Default::default() }),
            ..Default::default()
        };
        assert!(!run_group(&group(Some(tcp(5)))).has_errors());
        assert!(err(&run_group(&group(Some(tcp(0)))), "port number 0 must be in the range 1..65535"));
        assert!(err(&run_group(&group(Some(tcp(65536)))), "port must be between 1-65535"));

        let exec = |cmd: &[&str]| ReadinessProbe {
            exec: Some(ExecHealthCheckConfig { command: cmd.iter().map(|s| s.to_string()).collect() }),
            ..Default::default()
        };
        assert!(!run_group(&group(Some(exec(&["true"])))).has_errors());
        assert!(err(&run_group(&group(Some(exec(&[])))), "exec.command is required"));

        let grpc =
            ReadinessProbe { grpc: Some(GrpcHealthCheckConfig { port: 5, service: None }), ..Default::default() };
        assert!(err(&run_group(&group(Some(grpc))), "unknown health check method *v1alpha3.ReadinessProbe_Grpc"));

        let mut both = tcp(5);
        both.exec = Some(ExecHealthCheckConfig { command: vec!["x".into()] });
        assert!(err(&run_group(&group(Some(both))), "must validate one and only one schema (oneOf)"));

        let mut neg = tcp(5);
        neg.period_seconds = -1;
        let r = run_group(&group(Some(neg)));
        assert!(err(&r, "periodSeconds must be non-negative"));
        assert!(err(&r, "spec.probe.periodSeconds in body should be greater than or equal to 0"));
    }

    #[test]
    fn go_quoting() {
        assert_eq!(gofmt::quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(gofmt::quote("x\ny\u{1}"), r#""x\ny\x01""#);
        assert_eq!(gofmt::quote("é'"), "\"é'\"");
        assert_eq!(gofmt::quote("\u{200b}"), r#""\u200b""#);
    }
}
