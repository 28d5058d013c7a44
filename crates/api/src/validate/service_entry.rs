//! ServiceEntry validation (`ValidateServiceEntry` in istio/istio `pkg/config/validation`).
//!
//! Both layers apply: the CRD schema and CEL rules (Kubernetes-style
//! messages) and the istiod webhook's semantic checks.

use std::collections::BTreeSet;

use crate::protocol::Protocol;
use crate::types::{Location, ObjectMeta, Resolution, ServiceEntry};

use super::common;
use super::workload_entry;
use super::{P, Report, gofmt, schema};

/// Label with which users opt a ServiceEntry out of IP auto-allocation.
const ENABLE_AUTOALLOCATE_IP: &str = "networking.istio.io/enable-autoallocate-ip";
/// Label binding a resource to a waypoint proxy.
const USE_WAYPOINT: &str = "istio.io/use-waypoint";

pub(super) fn validate(meta: &ObjectMeta, spec: &ServiceEntry, p: &P, r: &mut Report) {
    crd(spec, p, r);
    webhook(meta, spec, p, r);
}

/// The CRD schema and CEL rules.
fn crd(se: &ServiceEntry, p: &P, r: &mut Report) {
    let hosts = p.f("hosts");
    if se.hosts.is_empty() {
        schema::required(r, &hosts);
    }
    schema::max_items(r, &hosts, se.hosts.len(), 256);
    for (i, h) in se.hosts.iter().enumerate() {
        if h == "*" {
            schema::cel(r, &hosts.i(i), "string", "hostname cannot be wildcard");
        }
    }

    let addresses = p.f("addresses");
    schema::max_items(r, &addresses, se.addresses.len(), 256);
    for (i, a) in se.addresses.iter().enumerate() {
        schema::max_length(r, &addresses.i(i), a, 64);
    }

    let ports = p.f("ports");
    schema::max_items(r, &ports, se.ports.len(), 256);
    let mut names = BTreeSet::new();
    for (i, port) in se.ports.iter().enumerate() {
        let pp = ports.i(i);
        if port.name.is_empty() {
            schema::required(r, &pp.f("name"));
        } else if !names.insert(port.name.as_str()) {
            r.error(
                &pp,
                format!("Duplicate value: map[string]interface {{}}{{\"name\":{}}}", gofmt::quote(&port.name)),
            );
        }
        schema::max_length(r, &pp.f("name"), &port.name, 256);
        schema::max_length(r, &pp.f("protocol"), &port.protocol, 256);
        schema::required_port(r, &pp.f("number"), port.number);
        if port.target_port > 65535 {
            schema::port_rule(r, &pp.f("targetPort"));
        }
    }
    let mut numbers = BTreeSet::new();
    if !se.ports.iter().all(|port| numbers.insert(port.number)) {
        schema::cel(r, &ports, "array", "port number cannot be duplicated");
    }

    let endpoints = p.f("endpoints");
    schema::max_items(r, &endpoints, se.endpoints.len(), 4096);
    for (i, ep) in se.endpoints.iter().enumerate() {
        workload_entry::crd_entry(ep, &endpoints.i(i), r, false);
    }

    if let Some(sel) = &se.workload_selector {
        let lp = p.f("workloadSelector").f("labels");
        schema::max_properties(r, &lp, sel.labels.len(), 256);
        for (k, v) in &sel.labels {
            schema::max_length(r, &lp.k(k), v, 63);
            if v.contains('*') {
                schema::cel(r, &lp.k(k), "string", "wildcard is not supported in selector");
            }
        }
    }

    if se.workload_selector.is_some() && !se.endpoints.is_empty() {
        schema::cel(r, p, "object", "only one of WorkloadSelector or Endpoints can be set");
    }
    // "CIDR addresses are allowed only for NONE/STATIC resolution types" is
    // also a webhook rule with the same text; the webhook reports it.
    if se.resolution == Resolution::None && !se.endpoints.is_empty() {
        schema::cel(r, p, "object", "NONE mode cannot set endpoints");
    }
    if se.resolution == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
        schema::cel(r, p, "object", "DNS_ROUND_ROBIN mode cannot have multiple endpoints");
    }
}

/// Whether istiod would auto-allocate a virtual IP for this ServiceEntry
/// (`ShouldV2AutoAllocateIPFromConfig`, with the feature at its default: on).
fn auto_allocates(meta: &ObjectMeta, se: &ServiceEntry) -> bool {
    se.resolution != Resolution::None
        && !meta.labels.get(ENABLE_AUTOALLOCATE_IP).is_some_and(|v| v.eq_ignore_ascii_case("false"))
        && se.addresses.is_empty()
}

/// `usesWaypoint`: the `istio.io/use-waypoint` label names a waypoint.
fn uses_waypoint(meta: &ObjectMeta) -> bool {
    meta.labels.get(USE_WAYPOINT).is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("none"))
}

/// `ValidateServiceEntry`.
fn webhook(meta: &ObjectMeta, se: &ServiceEntry, p: &P, r: &mut Report) {
    if let Some(sel) = &se.workload_selector {
        let sp = p.f("workloadSelector");
        let mut found = Report::default();
        common::workload_selector(&sel.labels, &sp.f("labels"), &mut found);
        if found.has_errors() {
            // istiod stops at selector errors.
            r.findings.extend(found.errors().cloned());
            return;
        }
        for w in found.warnings() {
            r.warn(&sp, format!("service entry: {}, will be applied to all services in namespace", w.message));
        }
    }

    if se.workload_selector.is_some() && !se.endpoints.is_empty() {
        r.error(&p.f("endpoints"), "only one of WorkloadSelector or Endpoints is allowed in Service Entry");
    }

    let hosts = p.f("hosts");
    if se.hosts.is_empty() {
        r.error(&hosts, "service entry must have at least one host");
    }
    for (i, h) in se.hosts.iter().enumerate() {
        if h == "*" {
            r.error(&hosts.i(i), format!("invalid host {h}"));
            continue;
        }
        r.check(&hosts.i(i), common::wildcard_domain(h));
        if se.resolution != Resolution::DynamicDns
            && let Err(w) = common::partial_wildcard(h)
        {
            r.warn(&hosts.i(i), w);
        }
    }

    let addresses = p.f("addresses");
    for (i, a) in se.addresses.iter().enumerate() {
        r.check(&addresses.i(i), common::ip_subnet(a));
    }
    if se.addresses.iter().any(|a| a.contains('/')) && !matches!(se.resolution, Resolution::None | Resolution::Static) {
        r.error(&addresses, "CIDR addresses are allowed only for NONE/STATIC resolution types");
    }

    let auto_allocation = auto_allocates(meta, se);
    let ports = p.f("ports");
    let mut port_names: BTreeSet<&str> = BTreeSet::new();
    let mut port_numbers = BTreeSet::new();
    for (i, port) in se.ports.iter().enumerate() {
        let pp = ports.i(i);
        if !port_names.insert(port.name.as_str()) {
            r.error(&pp.f("name"), format!("service entry port name {} already defined", gofmt::quote(&port.name)));
        }
        if !port_numbers.insert(port.number) {
            r.error(&pp.f("number"), format!("service entry port {} already defined", port.number));
        }
        if port.target_port != 0 {
            r.check(&pp.f("targetPort"), common::port(i64::from(port.target_port)));
        }
        if se.addresses.is_empty() && !auto_allocation && (port.protocol.is_empty() || port.protocol == "TCP") {
            r.warn(
                &pp,
                "addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is not enabled",
            );
        }
        r.check(&pp.f("name"), common::port_name(&port.name));
        r.check(&pp.f("protocol"), common::protocol(&port.protocol));
        r.check(&pp.f("number"), common::port(i64::from(port.number)));
    }

    let endpoints = p.f("endpoints");
    let resolution = se.resolution.as_str();
    match se.resolution {
        Resolution::None => {
            if !se.endpoints.is_empty() {
                r.error(&endpoints, "no endpoints should be provided for resolution type none");
            }
            if se.workload_selector.is_some() {
                r.warn(&p.f("workloadSelector"), "workloadSelector should not be set when resolution mode is NONE");
            }
        }
        Resolution::Static => {
            for (i, ep) in se.endpoints.iter().enumerate() {
                workload_entry::entry(ep, Some(&port_names), false, &endpoints.i(i), r);
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            if se.endpoints.is_empty() {
                for (i, h) in se.hosts.iter().enumerate() {
                    if let Err(e) = common::fqdn(h) {
                        r.error(
                            &hosts.i(i),
                            format!(
                                "hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for resolution mode {resolution}, {e}"
                            ),
                        );
                        break;
                    }
                }
            }
            if se.resolution == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
                r.error(&endpoints, format!("there must only be 0 or 1 endpoint for resolution mode {resolution}"));
            }
            for (i, ep) in se.endpoints.iter().enumerate() {
                let ep_path = endpoints.i(i);
                if !common::is_ip(&ep.address) && common::fqdn(&ep.address).is_err() {
                    r.error(
                        &ep_path.f("address"),
                        format!("endpoint address {} is not a valid FQDN or an IP address", gofmt::quote(&ep.address)),
                    );
                }
                common::labels(ep.labels(), &ep_path.f("labels"), r);
                workload_entry::endpoint_ports(ep, Some(&port_names), &ep_path, r);
            }
            if !se.addresses.is_empty()
                && se.hosts.len() > 1
                && se.ports.iter().any(|port| Protocol::parse(&port.protocol).is_some_and(|p| p.is_tcp()))
            {
                r.warn(
                    &hosts,
                    "service entry can not have more than one host specified simultaneously with address and tcp port",
                );
            }
        }
        Resolution::DynamicDns => {
            for (i, h) in se.hosts.iter().enumerate() {
                if !h.starts_with('*') {
                    r.error(&hosts.i(i), format!("host must be wildcarded for resolution mode {resolution}"));
                }
            }
            if se.hosts.is_empty() {
                r.error(
                    &hosts,
                    format!("at least one wildcard host must be provided for resolution type {resolution}"),
                );
            }
            if !se.addresses.is_empty() {
                r.error(
                    &addresses,
                    format!(
                        "addresses cannot be set for resolution type {resolution}. HTTP route domains will only be generatedfrom the hosts field values"
                    ),
                );
            }
            if !se.endpoints.is_empty() {
                r.error(
                    &endpoints,
                    format!(
                        "endpoints cannot be set for resolution type {resolution}. Destination IP address determined from hostsfield values"
                    ),
                );
            }
            for (i, port) in se.ports.iter().enumerate() {
                let supported = matches!(
                    Protocol::parse(&port.protocol),
                    Some(Protocol::Http | Protocol::Tls | Protocol::Grpc | Protocol::Http2)
                );
                if !supported {
                    r.error(
                        &ports.i(i).f("protocol"),
                        format!(
                            "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type {resolution}"
                        ),
                    );
                }
            }
            if se.location == Location::MeshInternal && uses_waypoint(meta) {
                r.error(
                    &p.f("location"),
                    format!(
                        "location MESH_INTERNAL with resolution type {resolution} is not supported when using waypoints"
                    ),
                );
            }
        }
    }

    // Plain TCP cannot tell several hosts apart, unless the hosts are ignored (NONE).
    if se.resolution != Resolution::None && se.hosts.len() > 1 {
        let non_http_tls = se
            .ports
            .iter()
            .position(|port| !Protocol::parse(&port.protocol).is_some_and(|p| p.is_http() || p.is_tls()));
        if let Some(i) = non_http_tls {
            r.error(&ports.i(i), "multiple hosts provided with non-HTTP, non-TLS ports");
        }
    }

    common::export_to(&meta.namespace, &se.export_to, true, false, &p.f("exportTo"), r);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{IstioObject, Spec};
    use crate::validate::Severity;
    use crate::{LoadOptions, load_str};

    /// Loads `spec` (YAML, indented under `spec:`) as ServiceEntry `bar/foo` and validates it.
    fn run_with_labels(labels: &str, spec: &str) -> Report {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: foo\n  namespace: bar\n  labels: {{{labels}}}\nspec:\n{spec}"
        );
        let loaded = load_str(&text, "t.yaml", &LoadOptions::default());
        assert!(loaded.problems.is_empty() && loaded.errors.is_empty(), "{:?} {:?}", loaded.problems, loaded.errors);
        let obj: &IstioObject = &loaded.objects[0];
        let Spec::ServiceEntry(se) = &obj.spec else { panic!("not a ServiceEntry") };
        let mut r = Report::default();
        validate(&obj.meta, se, &P::root("spec"), &mut r);
        r
    }

    fn run(spec: &str) -> Report {
        run_with_labels("", spec)
    }

    fn has(r: &Report, sev: Severity, s: &str) -> bool {
        r.findings.iter().any(|f| f.severity == sev && format!("{}: {}", f.path, f.message).contains(s))
    }

    fn err(r: &Report, s: &str) -> bool {
        has(r, Severity::Error, s)
    }

    fn warn(r: &Report, s: &str) -> bool {
        has(r, Severity::Warning, s)
    }

    fn ok(r: &Report) -> bool {
        !r.has_errors()
    }

    const HTTP_PORTS: &str = "  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  - {number: 8080, protocol: http, name: http-valid2}\n";

    #[test]
    fn hosts() {
        let r = run("  hosts: []\n  resolution: DNS\n");
        assert!(err(&r, "service entry must have at least one host"));
        assert!(err(&r, "spec.hosts: Required value"));
        let r = run("  hosts: [foo.com, \"*\"]\n  resolution: NONE\n");
        assert!(err(&r, "invalid host *"));
        assert!(err(&r, "spec.hosts[1]: Invalid value: \"string\": hostname cannot be wildcard"));
        let r = run("  hosts: [\"-\"]\n  resolution: NONE\n");
        assert!(err(&r, "domain name \"-\" invalid (label \"-\" invalid)"));
        let r = run("  hosts: [\"*.nytimes.com\", \"*washingtonpost.com\"]\n  resolution: NONE\n");
        assert!(ok(&r) && warn(&r, "partial wildcard \"*washingtonpost.com\" not allowed"));
        let r = run(
            "  hosts: [foo, bar.com]\n  resolution: DNS\n  ports: [{number: 80, protocol: http, name: http-valid1}]\n  endpoints: [{address: in.google.com, ports: {http-valid1: 9080}}]\n",
        );
        assert!(ok(&r), "{:?}", r.findings);
    }

    #[test]
    fn missing_spec_is_rejected_by_the_loader() {
        let l = crate::load_str(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x}\n",
            "t.yaml",
            &Default::default(),
        );
        assert_eq!(l.problems.len(), 1);
        assert_eq!((l.problems[0].path.as_str(), l.problems[0].message.as_str()), ("spec", "Required value"));
    }

    #[test]
    fn addresses() {
        let r = run("  hosts: [example.com]\n  addresses: [1.2.3.4/16]\n  resolution: DNS\n");
        assert!(err(&r, "CIDR addresses are allowed only for NONE/STATIC resolution types"));
        assert!(ok(&run(&format!(
            "  hosts: [google.com]\n  addresses: [172.1.2.16/16]\n  resolution: NONE\n{HTTP_PORTS}"
        ))));
        let r = run("  hosts: [example.com]\n  addresses: [nope]\n");
        assert!(err(&r, "nope is not a valid IP"));
    }

    #[test]
    fn ports() {
        let r = run("  hosts: [example.com]\n  ports:\n  - {name: a, number: 1}\n  - {name: a, number: 12}\n");
        assert!(err(&r, "service entry port name \"a\" already defined"));
        assert!(err(&r, "spec.ports[1]: Duplicate value"));
        let r = run("  hosts: [example.com]\n  ports:\n  - {name: a, number: 1}\n  - {name: b, number: 1}\n");
        assert!(err(&r, "service entry port 1 already defined"));
        assert!(err(&r, "port number cannot be duplicated"));
        let r = run("  hosts: [example.com]\n  ports: [{name: a, number: 99999, targetPort: 65536}]\n");
        assert!(err(&r, "port number 99999 must be in the range 1..65535"));
        assert!(err(&r, "port number 65536 must be in the range 1..65535"));
        assert!(err(&r, "spec.ports[0].number: Invalid value: \"integer\": port must be between 1-65535"));
        assert!(err(&r, "spec.ports[0].targetPort: Invalid value: \"integer\": port must be between 1-65535"));
        let r = run("  hosts: [example.com]\n  ports: [{name: a_b, number: 1, protocol: foo}]\n");
        assert!(err(&r, "invalid port name: a_b") && err(&r, "unsupported protocol: foo"));
        let r = run(
            "  hosts: [google.com]\n  resolution: DNS\n  ports:\n  - {number: 80, protocol: http, name: a, targetPort: 80}\n  - {number: 81, protocol: http, name: b, targetPort: 80}\n",
        );
        assert!(ok(&r));
    }

    #[test]
    fn tcp_without_addresses_warning() {
        let r = run(
            "  hosts: [google.com]\n  resolution: NONE\n  ports:\n  - {number: 80, protocol: http, name: a}\n  - {number: 8080, name: b}\n",
        );
        assert!(ok(&r) && warn(&r, "addresses are required for ports serving TCP (or unset) protocol"));
        let r = run("  hosts: [google.com]\n  resolution: NONE\n  ports: [{number: 81, protocol: TCP, name: t}]\n");
        assert!(warn(&r, "addresses are required"));
        // Auto-allocation covers DNS entries, unless opted out.
        let dns = "  hosts: [google.com]\n  resolution: DNS\n  ports: [{number: 81, protocol: TCP, name: t}]\n";
        assert!(r.findings.len() == 1 && run(dns).findings.is_empty());
        let r = run_with_labels("networking.istio.io/enable-autoallocate-ip: \"False\"", dns);
        assert!(warn(&r, "addresses are required"));
    }

    #[test]
    fn workload_selector() {
        let r = run(
            "  hosts: [google.com]\n  workloadSelector: {labels: {foo: bar}}\n  ports: [{number: 80, protocol: http, name: a}]\n",
        );
        assert!(ok(&r) && warn(&r, "workloadSelector should not be set when resolution mode is NONE"));
        let r = run("  hosts: [google.com]\n  workloadSelector: {}\n  resolution: DNS\n");
        assert!(ok(&r));
        assert!(warn(
            &r,
            "service entry: workload selector specified without labels, will be applied to all services in namespace"
        ));
        let r = run("  hosts: [google.com]\n  workloadSelector: {labels: {\"\": bar}}\n");
        assert!(err(&r, "empty key is not supported in selector: \"=bar\""));
        let r = run("  hosts: [example.com]\n  workloadSelector: {labels: {val: \"*\"}}\n");
        assert!(err(&r, "wildcard is not supported in selector"));
        let r =
            run("  hosts: [google.com]\n  workloadSelector: {labels: {foo: bar}}\n  endpoints: [{address: 1.1.1.1}]\n");
        assert!(err(&r, "only one of WorkloadSelector or Endpoints is allowed in Service Entry"));
        assert!(err(&r, "only one of WorkloadSelector or Endpoints can be set"));
    }

    #[test]
    fn resolution_none() {
        let r = run(&format!(
            "  hosts: [google.com]\n  resolution: NONE\n{HTTP_PORTS}  endpoints: [{{address: 1.2.3.4}}]\n"
        ));
        assert!(err(&r, "no endpoints should be provided for resolution type none"));
        assert!(err(&r, "NONE mode cannot set endpoints"));
    }

    #[test]
    fn resolution_static() {
        let base = format!("  hosts: [google.com]\n  addresses: [172.1.2.16]\n  resolution: STATIC\n{HTTP_PORTS}");
        let r = run(&format!(
            "{base}  endpoints:\n  - {{address: 1.1.1.1, ports: {{http-valid1: 8080}}}}\n  - {{address: 2.2.2.2, ports: {{http-valid2: 9080}}}}\n"
        ));
        assert!(ok(&r), "{:?}", r.findings);
        let r = run(&format!("{base}  endpoints:\n  - {{address: google.com, ports: {{http-valid1: 8080}}}}\n"));
        assert!(err(&r, "endpoint address \"google.com\" is not a valid IP address"));
        let r = run(&format!("{base}  endpoints:\n  - {{address: 2.2.2.2, ports: {{http-dne: 9080}}}}\n"));
        assert!(err(&r, "spec.endpoints[0].ports.http-dne: endpoint port 9080 is not defined by the service entry"));
        let r = run(&format!("{base}  endpoints:\n  - {{network: cluster-1}}\n"));
        assert!(ok(&r) && warn(&r, "address is unset with network \"cluster-1\""));
        let r = run(&format!("{base}  endpoints:\n  - {{address: 1.1.1.1, ports: {{http-valid1: 65536}}}}\n"));
        assert!(err(&r, "port number 65536 must be in the range 1..65535"));
    }

    #[test]
    fn unix_endpoints() {
        let one = "  hosts: [uds.cluster.local]\n  resolution: STATIC\n  ports: [{number: 6553, protocol: grpc, name: grpc-service1}]\n";
        assert!(ok(&run(&format!("{one}  endpoints: [{{address: \"unix:///path/to/socket\"}}]\n"))));
        let r = run(&format!("{one}  endpoints: [{{address: \"unix://./relative/path.sock\"}}]\n"));
        assert!(err(&r, "./relative/path.sock is not an absolute path to a file"));
        let r = run(&format!(
            "{one}  endpoints: [{{address: \"unix:///path/to/socket\", ports: {{grpc-service1: 6553}}}}]\n"
        ));
        assert!(err(&r, "unix endpoint unix:///path/to/socket must not include ports"));
        let two = "  hosts: [uds.cluster.local]\n  resolution: STATIC\n  ports:\n  - {number: 6553, protocol: grpc, name: a}\n  - {number: 80, protocol: http, name: b}\n";
        let r = run(&format!("{two}  endpoints: [{{address: \"unix:///path/to/socket\"}}]\n"));
        assert!(err(&r, "exactly 1 service port required for unix endpoints"));
    }

    #[test]
    fn resolution_dns() {
        let r = run(&format!("  hosts: [\"*.google.com\"]\n  resolution: DNS\n{HTTP_PORTS}"));
        assert!(err(
            &r,
            "hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for resolution mode DNS, domain name \"*.google.com\" invalid (label \"*\" invalid)"
        ));
        assert!(ok(&run(&format!("  hosts: [google.com]\n  resolution: DNS\n{HTTP_PORTS}"))));
        let r = run(&format!(
            "  hosts: [\"*.google.com\"]\n  resolution: DNS\n{HTTP_PORTS}  endpoints:\n  - {{address: \"*.lon.google.com\", ports: {{http-valid1: 8080}}}}\n  - {{address: in.google.com, ports: {{http-dne: 9080}}}}\n"
        ));
        assert!(err(&r, "endpoint address \"*.lon.google.com\" is not a valid FQDN or an IP address"));
        assert!(err(&r, "endpoint port 9080 is not defined by the service entry"));
        let r = run(&format!(
            "  hosts: [\"*.google.com\"]\n  resolution: DNS\n{HTTP_PORTS}  endpoints:\n  - {{address: lon.google.com, labels: {{security.istio.io/tlsMode: istio}}}}\n  - {{address: 1.1.1.1}}\n"
        ));
        assert!(ok(&r), "{:?}", r.findings);
        let r = run(
            "  hosts: [google.com]\n  resolution: DNS_ROUND_ROBIN\n  ports: [{number: 8081, protocol: http, name: a}]\n  endpoints: [{address: api-v1.istio.io}, {address: 1.1.1.2}]\n",
        );
        assert!(err(&r, "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN"));
        assert!(err(&r, "DNS_ROUND_ROBIN mode cannot have multiple endpoints"));
        let r = run(
            "  hosts: [httpbin.org, wikipedia.org]\n  addresses: [10.10.10.10]\n  resolution: DNS\n  ports:\n  - {number: 80, protocol: http, name: a}\n  - {number: 443, protocol: https, name: b}\n",
        );
        assert!(ok(&r) && warn(&r, "service entry can not have more than one host specified simultaneously"));
    }

    #[test]
    fn resolution_dynamic_dns() {
        assert!(ok(&run(
            "  hosts: [\"*.svc.cluster.local\"]\n  resolution: DYNAMIC_DNS\n  ports: [{number: 9090, protocol: GRPC, name: grpc}]\n"
        )));
        let r = run(
            "  hosts: [\"*.google.com\"]\n  resolution: DYNAMIC_DNS\n  ports:\n  - {number: 80, protocol: http, name: a}\n  - {number: 81, protocol: TCP, name: b}\n",
        );
        assert!(err(&r, "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type DYNAMIC_DNS"));
        let r = run("  hosts: [google.com]\n  resolution: DYNAMIC_DNS\n");
        assert!(err(&r, "host must be wildcarded for resolution mode DYNAMIC_DNS"));
        let r = run("  hosts: []\n  resolution: DYNAMIC_DNS\n");
        assert!(err(&r, "at least one wildcard host must be provided for resolution type DYNAMIC_DNS"));
        let r = run("  hosts: [\"*.google.com\"]\n  addresses: [10.10.10.10]\n  resolution: DYNAMIC_DNS\n");
        assert!(err(&r, "addresses cannot be set for resolution type DYNAMIC_DNS"));
        let r =
            run("  hosts: [\"*.google.com\"]\n  resolution: DYNAMIC_DNS\n  endpoints: [{address: in.google.com}]\n");
        assert!(err(&r, "endpoints cannot be set for resolution type DYNAMIC_DNS"));
        let internal = "  hosts: [\"*.google.com\"]\n  resolution: DYNAMIC_DNS\n  location: MESH_INTERNAL\n  ports: [{number: 80, protocol: http, name: a}]\n";
        assert!(ok(&run(internal)));
        assert!(ok(&run_with_labels("istio.io/use-waypoint: none", internal)));
        let r = run_with_labels("istio.io/use-waypoint: my-waypoint", internal);
        assert!(err(
            &r,
            "location MESH_INTERNAL with resolution type DYNAMIC_DNS is not supported when using waypoints"
        ));
        // Partial wildcards are not warned about for DYNAMIC_DNS.
        assert!(
            run("  hosts: [\"*x.com\"]\n  resolution: DYNAMIC_DNS\n  ports: [{number: 80, protocol: http, name: a}]\n")
                .findings
                .is_empty()
        );
    }

    #[test]
    fn multiple_hosts_non_http() {
        let r = run(
            "  hosts: [a.com, b.com]\n  resolution: DNS\n  ports:\n  - {number: 80, protocol: http, name: a}\n  - {number: 81, protocol: TCP, name: b}\n",
        );
        assert!(err(&r, "spec.ports[1]: multiple hosts provided with non-HTTP, non-TLS ports"));
        let r = run(
            "  hosts: [a.com, b.com]\n  resolution: NONE\n  addresses: [1.1.1.1]\n  ports: [{number: 81, protocol: TCP, name: b}]\n",
        );
        assert!(ok(&r));
    }

    #[test]
    fn export_to() {
        assert!(ok(&run("  hosts: [a.com]\n  exportTo: [\"~\"]\n")));
        let r = run("  hosts: [a.com]\n  exportTo: [\"~\", \"*\"]\n");
        assert!(err(&r, "cannot export service entry to no one (~) and someone"));
        let r = run("  hosts: [a.com]\n  exportTo: [bar, \".\"]\n");
        assert!(err(&r, "duplicate entries in exportTo: . and current namespace bar"));
    }

    #[test]
    fn endpoint_schema() {
        let r = run("  hosts: [a.com]\n  resolution: STATIC\n  endpoints: [{address: \"unix:///dir/\"}, {}]\n");
        assert!(err(&r, "spec.endpoints[0].address: Invalid value: \"string\": UDS may not be a dir"));
        assert!(err(&r, "spec.endpoints[1]: Invalid value: \"object\": Address is required"));
        assert!(err(&r, "spec.endpoints[1].address: address is required"));
    }
}
