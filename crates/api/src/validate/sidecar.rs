//! Sidecar validation (`ValidateSidecar` in istio/istio `pkg/config/validation`)
//! plus the CRD schema rules of `Sidecar`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::protocol::Protocol;
use crate::types::{
    CaptureMode, IstioEgressListener, IstioIngressListener, ObjectMeta, OutboundMode, OutboundTrafficPolicy, Port,
    ServerTlsMode, Sidecar,
};

use super::common::{self, UNIX_ADDRESS_PREFIX};
use super::destination_rule::connection_pool;
use super::gateway::tls_options;
use super::{P, Report, gofmt, schema};

/// Addresses a `defaultEndpoint` may use (besides `unix://`).
const DEFAULT_ENDPOINT_HOSTS: &[&str] = &["127.0.0.1", "0.0.0.0", "::1", "::"];
/// CRD bound on `workloadSelector.labels`.
const MAX_SELECTOR_LABELS: usize = 256;

pub(super) fn validate(meta: &ObjectMeta, spec: &Sidecar, p: &P, r: &mut Report) {
    let mut selector_warnings = Vec::new();
    if let Some(ws) = &spec.workload_selector {
        let sp = p.f("workloadSelector").f("labels");
        schema::selector_labels(r, &sp, &ws.labels, MAX_SELECTOR_LABELS);
        let mut sub = Report::default();
        common::workload_selector(&ws.labels, &sp, &mut sub);
        if sub.has_errors() {
            r.findings.extend(sub.findings.into_iter().filter(|f| f.severity == super::Severity::Error));
            return;
        }
        selector_warnings = sub.findings;
    }

    if spec.egress.is_empty()
        && spec.ingress.is_empty()
        && spec.outbound_traffic_policy.is_none()
        && spec.inbound_connection_pool.is_none()
    {
        r.error(p, "sidecar: empty configuration provided");
        return;
    }
    for w in selector_warnings {
        r.warn(&P::root(&w.path), format!("sidecar: {}, will be applied to all services in namespace", w.message));
    }

    let mut ingress_ports: HashSet<u32> = HashSet::new();
    for (i, listener) in spec.ingress.iter().enumerate() {
        ingress(listener, &mut ingress_ports, &p.f("ingress").i(i), r);
    }

    if let Some(cp) = &spec.inbound_connection_pool {
        connection_pool(cp, &p.f("inboundConnectionPool"), r);
    }

    let mut egress_ports: HashSet<u32> = HashSet::new();
    let mut uds_binds: HashSet<&str> = HashSet::new();
    let mut catch_all_found = false;
    let last = spec.egress.len().saturating_sub(1);
    for (i, listener) in spec.egress.iter().enumerate() {
        let ep = p.f("egress").i(i);
        match &listener.port {
            None => {
                if catch_all_found {
                    r.error(&ep, "sidecar: egress can have only one listener with empty port");
                    continue;
                }
                if i == last {
                    catch_all_found = true;
                } else {
                    r.error(
                        &ep,
                        "sidecar: the egress listener with empty port should be the last listener in the list",
                    );
                }
            }
            Some(port) => {
                if port.target_port > 0 {
                    r.error(&ep.f("port").f("targetPort"), "targetPort has no impact on Sidecars");
                }
                egress_port_bind_and_capture_mode(listener, port, &ep, r);
                if port.number == 0 {
                    if !uds_binds.insert(listener.bind.as_str()) {
                        r.error(&ep.f("bind"), "sidecar: unix domain socket values for listeners must be unique");
                    }
                } else if !egress_ports.insert(port.number) {
                    r.error(&ep.f("port").f("number"), "sidecar: ports on IP bound listeners must be unique");
                }
            }
        }
        egress_hosts(listener, &meta.namespace, &ep.f("hosts"), r);
    }

    if let Some(tp) = &spec.outbound_traffic_policy {
        outbound_traffic_policy(tp, &p.f("outboundTrafficPolicy"), r);
    }
}

/// One `ingress` listener.
fn ingress(listener: &IstioIngressListener, seen_ports: &mut HashSet<u32>, p: &P, r: &mut Report) {
    let Some(port) = &listener.port else {
        schema::required(r, &p.f("port"));
        r.error(&p.f("port"), "sidecar: port is required for ingress listeners");
        return;
    };
    let pp = p.f("port");
    if port.target_port > 0 {
        r.error(&pp.f("targetPort"), "targetPort has no impact on Sidecars");
    }
    sidecar_port_name(port, &pp, r);
    r.check(&pp.f("protocol"), common::protocol(&port.protocol));
    r.check(&pp.f("number"), common::port(i64::from(port.number)));
    if !listener.bind.is_empty() {
        r.check(&p.f("bind"), common::ip_address(&listener.bind));
    }

    if !seen_ports.insert(port.number) {
        r.error(&pp.f("number"), "sidecar: ports on IP bound listeners must be unique");
    }

    if !listener.default_endpoint.is_empty() {
        default_endpoint(&listener.default_endpoint, &p.f("defaultEndpoint"), r);
    }

    let protocol = Protocol::parse(&port.protocol);
    if let Some(tls) = &listener.tls {
        let tp = p.f("tls");
        if !tls.subject_alt_names.is_empty() {
            r.error(&tp.f("subjectAltNames"), "sidecar: subjectAltNames is not supported in ingress tls");
        }
        if tls.https_redirect {
            r.error(&tp.f("httpsRedirect"), "sidecar: httpsRedirect is not supported");
        }
        if !tls.credential_name.is_empty() {
            r.error(&tp.f("credentialName"), "sidecar: credentialName is not currently supported");
        }
        if !tls.credential_names.is_empty() {
            r.error(&tp.f("credentialNames"), "sidecar: credentialNames is not currently supported");
        }
        if !tls.tls_certificates.is_empty() {
            r.error(&tp.f("tlsCertificates"), "sidecar: tls_certificates is not currently supported");
        }
        if matches!(tls.mode, ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough) {
            r.error(
                &tp.f("mode"),
                format!("configuration is invalid: cannot set mode to {} in sidecar ingress tls", tls.mode),
            );
        }
        if !protocol.is_some_and(|pr| pr.is_tls()) {
            r.error(&tp, "server cannot have TLS settings for non HTTPS/TLS ports");
        }
        tls_options(tls, &tp, r);
    }

    if let Some(cp) = &listener.connection_pool {
        let cpp = p.f("connectionPool");
        connection_pool(cp, &cpp, r);
        if cp.http.is_some() && !protocol.is_some_and(|pr| pr.is_http()) {
            r.warn(
                &cpp.f("http"),
                format!(
                    "sidecar: HTTP connection pool settings are configured for port {} ({}) but its protocol is not \
                     HTTP ({}); only TCP settings will apply",
                    port.number,
                    gofmt::quote(&port.name),
                    port.protocol
                ),
            );
        }
    }
}

/// A listener port's optional name.
fn sidecar_port_name(port: &Port, p: &P, r: &mut Report) {
    if !port.name.is_empty() {
        r.check(&p.f("name"), common::port_name(&port.name));
    }
}

/// `defaultEndpoint`: `unix://path`, or `host:port` with a loopback/unspecified host.
fn default_endpoint(endpoint: &str, p: &P, r: &mut Report) {
    if let Some(path) = endpoint.strip_prefix(UNIX_ADDRESS_PREFIX) {
        r.check(p, common::unix_address(path));
        return;
    }
    let (host, port) = match split_host_port(endpoint) {
        Ok(hp) => hp,
        Err(e) => {
            r.error(p, e);
            ("", "")
        }
    };
    if !host.is_empty() && !DEFAULT_ENDPOINT_HOSTS.contains(&host) {
        r.error(
            p,
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,\
             unix://filepath or unset",
        );
    }
    match gofmt::atoi(port) {
        Ok(n) => r.check(p, common::port(n)),
        Err(e) => r.error(p, format!("sidecar: defaultEndpoint port ({port}) is not a number: {e}")),
    }
}

/// `validateSidecarEgressPortBindAndCaptureMode`.
fn egress_port_bind_and_capture_mode(listener: &IstioEgressListener, port: &Port, p: &P, r: &mut Report) {
    let pp = p.f("port");
    sidecar_port_name(port, &pp, r);
    r.check(&pp.f("protocol"), common::protocol(&port.protocol));
    let bind = listener.bind.as_str();
    if port.number == 0 {
        match bind.strip_prefix(UNIX_ADDRESS_PREFIX) {
            Some(path) => r.check(&p.f("bind"), common::unix_address(path)),
            None => r.error(&p.f("bind"), "sidecar: ports with 0 value must have a unix domain socket bind address"),
        }
        if !matches!(listener.capture_mode, CaptureMode::Default | CaptureMode::None) {
            r.error(&p.f("captureMode"), "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners");
        }
    } else {
        r.check(&pp.f("number"), common::port(i64::from(port.number)));
        if !bind.is_empty() {
            r.check(&p.f("bind"), common::ip_address(bind));
        }
    }
}

/// An egress listener's `hosts`: `namespace/dnsName` entries, with warnings
/// for imports another entry already covers.
fn egress_hosts(listener: &IstioEgressListener, config_namespace: &str, p: &P, r: &mut Report) {
    if listener.hosts.is_empty() {
        r.error(p, "sidecar: egress listener must contain at least one host");
        return;
    }
    let mut imports: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (j, host) in listener.hosts.iter().enumerate() {
        let hp = p.i(j);
        if let Some((ns, svc)) = host.split_once('/').filter(|(ns, _)| !ns.starts_with('~')) {
            let ns = if ns == "." { config_namespace } else { ns };
            let services = imports.entry(ns).or_default();
            let duplicate =
                if svc == "*" { !services.is_empty() } else { services.contains(svc) || services.contains("*") };
            if duplicate {
                r.warn(&hp, format!("duplicated egress host: {host}"));
            }
            services.insert(svc);
        }
        for e in common::namespace_slash_wildcard_hostname(host, false, false) {
            r.error(&hp, e);
        }
    }
    if imports.get("*").is_some_and(|s| s.contains("*")) && imports.len() != 1 {
        r.warn(p, "`*/*` host select all resources, no other hosts can be added");
    }
}

/// `validateSidecarOutboundTrafficPolicy`, plus the CRD's `mode` enum and required `egressProxy.host`.
fn outbound_traffic_policy(tp: &OutboundTrafficPolicy, p: &P, r: &mut Report) {
    if tp.mode == OutboundMode::AllowAnyDynamicDns {
        schema::unsupported(r, &p.f("mode"), tp.mode.as_str(), &["REGISTRY_ONLY", "ALLOW_ANY"]);
        r.error(
            &p.f("mode"),
            "sidecar: ALLOW_ANY_DYNAMIC_DNS mode is only supported in MeshConfig, not in Sidecar resource",
        );
        return;
    }
    let Some(proxy) = &tp.egress_proxy else { return };
    let pp = p.f("egressProxy");
    if proxy.host.is_empty() {
        schema::required(r, &pp.f("host"));
    }
    if tp.mode != OutboundMode::AllowAny {
        r.error(&pp, "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode");
        return;
    }
    r.check(&pp.f("host"), common::fqdn(&proxy.host));
    if proxy.port.is_none() {
        r.error(&pp.f("port"), "sidecar: egress_proxy port must be non-nil");
        return;
    }
    common::destination(proxy, &pp, r);
}

/// Go's `net.SplitHostPort`, with its error texts.
fn split_host_port(hostport: &str) -> Result<(&str, &str), String> {
    let err = |why: &str| Err(format!("address {hostport}: {why}"));
    const MISSING_PORT: &str = "missing port in address";
    const TOO_MANY_COLONS: &str = "too many colons in address";
    let Some(i) = hostport.rfind(':') else { return err(MISSING_PORT) };
    let (host, j, k);
    if hostport.starts_with('[') {
        let Some(end) = hostport.find(']') else { return err("missing ']' in address") };
        if end + 1 == hostport.len() {
            return err(MISSING_PORT);
        } else if end + 1 != i {
            if hostport.as_bytes()[end + 1] == b':' {
                return err(TOO_MANY_COLONS);
            }
            return err(MISSING_PORT);
        }
        host = &hostport[1..end];
        (j, k) = (1, end + 1);
    } else {
        host = &hostport[..i];
        if host.contains(':') {
            return err(TOO_MANY_COLONS);
        }
        (j, k) = (0, 0);
    }
    if hostport[j..].contains('[') {
        return err("unexpected '[' in address");
    }
    if hostport[k..].contains(']') {
        return err("unexpected ']' in address");
    }
    Ok((host, &hostport[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{
        ConnectionPoolSettings, Destination, HttpSettings, PortSelector, ServerTlsSettings, Spec, TlsCertificate,
        WorkloadSelector,
    };
    use crate::validate::Finding;
    use crate::{LoadOptions, load_str};

    fn sidecar_port(name: &str, number: u32, protocol: &str) -> Option<Port> {
        Some(Port { name: name.into(), number, protocol: protocol.into(), target_port: 0 })
    }

    fn egress(hosts: &[&str]) -> IstioEgressListener {
        IstioEgressListener { hosts: hosts.iter().map(|h| h.to_string()).collect(), ..Default::default() }
    }

    fn egress_port(port: Option<Port>, bind: &str, hosts: &[&str]) -> IstioEgressListener {
        IstioEgressListener { port, bind: bind.into(), ..egress(hosts) }
    }

    fn ingress_l(port: Option<Port>, default_endpoint: &str) -> IstioIngressListener {
        IstioIngressListener { port, default_endpoint: default_endpoint.into(), ..Default::default() }
    }

    fn run(sc: &Sidecar) -> Vec<Finding> {
        let meta = ObjectMeta { name: "foo".into(), namespace: "bar".into(), ..ObjectMeta::default() };
        let mut r = Report::default();
        validate(&meta, sc, &P::root("spec"), &mut r);
        r.findings
    }

    fn msgs(f: &[Finding], sev: crate::validate::Severity) -> Vec<String> {
        f.iter().filter(|f| f.severity == sev).map(|f| format!("{}: {}", f.path, f.message)).collect()
    }

    fn errors(f: &[Finding]) -> Vec<String> {
        msgs(f, crate::validate::Severity::Error)
    }

    fn warnings(f: &[Finding]) -> Vec<String> {
        msgs(f, crate::validate::Severity::Warning)
    }

    fn has(list: &[String], needle: &str) -> bool {
        list.iter().any(|m| m.contains(needle))
    }

    fn with_egress(e: Vec<IstioEgressListener>) -> Sidecar {
        Sidecar { egress: e, ..Sidecar::default() }
    }

    fn with_ingress(i: Vec<IstioIngressListener>) -> Sidecar {
        Sidecar { ingress: i, egress: vec![egress(&["*/*"])], ..Sidecar::default() }
    }

    #[test]
    fn empty_and_selector() {
        assert_eq!(errors(&run(&Sidecar::default())), vec!["spec: sidecar: empty configuration provided"]);

        let sc =
            Sidecar { workload_selector: Some(WorkloadSelector::default()), ..with_egress(vec![egress(&["*/*"])]) };
        let f = run(&sc);
        assert!(errors(&f).is_empty());
        assert_eq!(
            warnings(&f),
            vec![
                "spec.workloadSelector.labels: sidecar: workload selector specified without labels, will be applied \
                 to all services in namespace"
            ]
        );

        let labels = [("app".to_string(), "*".to_string())].into_iter().collect();
        let sc = Sidecar {
            workload_selector: Some(WorkloadSelector { labels }),
            ..with_egress(vec![egress(&["*"]), egress(&["*/*"])])
        };
        let e = errors(&run(&sc));
        assert_eq!(e, vec!["spec.workloadSelector.labels.app: wildcard is not supported in selector: \"app=*\""]);

        let labels = [("app".to_string(), "x".repeat(64))].into_iter().collect();
        let sc =
            Sidecar { workload_selector: Some(WorkloadSelector { labels }), ..with_egress(vec![egress(&["*/*"])]) };
        assert!(has(&errors(&run(&sc)), "Too long: may not be more than 63 bytes"));
    }

    #[test]
    fn egress_hosts_rules() {
        let ok = [
            vec!["*/*"],
            vec!["./*"],
            vec!["./foo.com"],
            vec!["~/*"],
            vec!["*/*", "~ns1/*"],
            vec!["*/*", "~/foo.com"],
            vec!["*/b.com", "test/a.com"],
            vec!["abc/*"],
        ];
        for hosts in ok {
            let f = run(&with_egress(vec![egress(&hosts)]));
            assert!(f.is_empty(), "{hosts:?}: {f:?}");
        }
        let bad = [
            (vec!["*/*", "~Invalid_NS/*"], "invalid namespace value \"~Invalid_NS\" in sidecar"),
            (vec!["*"], "spec.egress[0].hosts[0]: host must be of form namespace/dnsName"),
            (vec!["/"], "config namespace and dnsName in host entry cannot be empty"),
            (vec![], "spec.egress[0].hosts: sidecar: egress listener must contain at least one host"),
            (vec!["test/*a.com"], "partial wildcard \"*a.com\" not allowed"),
        ];
        for (hosts, want) in bad {
            let e = errors(&run(&with_egress(vec![egress(&hosts)])));
            assert!(has(&e, want), "{hosts:?}: {e:?}");
        }
        let warn = [
            (vec!["*/*", "test/a.com"], "spec.egress[0].hosts: `*/*` host select all resources"),
            (vec!["test/*", "test/a.com"], "spec.egress[0].hosts[1]: duplicated egress host: test/a.com"),
            (vec!["./*", "bar/a.com"], "duplicated egress host: bar/a.com"),
            (vec!["ns/a.com", "ns/a.com"], "duplicated egress host: ns/a.com"),
            (vec!["ns/a.com", "ns/*"], "duplicated egress host: ns/*"),
        ];
        for (hosts, want) in warn {
            let f = run(&with_egress(vec![egress(&hosts)]));
            assert!(errors(&f).is_empty(), "{hosts:?}: {f:?}");
            assert!(has(&warnings(&f), want), "{hosts:?}: {f:?}");
        }
    }

    #[test]
    fn egress_listeners() {
        let e = errors(&run(&with_egress(vec![egress(&["*/foo.com"]), egress(&["ns1/bar.com"])])));
        assert!(has(&e, "spec.egress[0]: sidecar: the egress listener with empty port should be the last"), "{e:?}");
        let e = errors(&run(&with_egress(vec![
            egress(&["*/foo.com"]),
            egress_port(sidecar_port("h8080", 8080, "http"), "", &["ns1/bar.com"]),
        ])));
        assert!(has(&e, "should be the last listener in the list"), "{e:?}");
        let e = errors(&run(&with_egress(vec![egress(&["*/foo.com"]), egress(&["*/foo.com"]), egress(&["x/y.com"])])));
        assert!(has(&e, "spec.egress[1]: sidecar: the egress listener with empty port should be the last"), "{e:?}");
        assert_eq!(e.len(), 2, "{e:?}");

        let e = errors(&run(&with_egress(vec![egress_port(sidecar_port("", 1000000, "http1"), "", &["ns1/bar.com"])])));
        assert!(has(&e, "spec.egress[0].port.protocol: unsupported protocol: http1"), "{e:?}");
        assert!(has(&e, "spec.egress[0].port.number: port number 1000000 must be in the range 1..65535"), "{e:?}");
        let e = errors(&run(&with_egress(vec![egress_port(sidecar_port("Bad_Name", 80, "http"), "", &["a/b.com"])])));
        assert!(has(&e, "invalid port name: Bad_Name"), "{e:?}");
        let f = run(&with_egress(vec![egress_port(sidecar_port("", 8080, "http"), "", &["ns1/bar.com"])]));
        assert!(f.is_empty(), "{f:?}");
        let f = run(&with_egress(vec![egress_port(sidecar_port("h", 8080, "http"), "1.2.3.4", &["ns1/bar.com"])]));
        assert!(f.is_empty(), "{f:?}");
        let e = errors(&run(&with_egress(vec![egress_port(sidecar_port("h", 8080, ""), "bad", &["ns1/bar.com"])])));
        assert!(has(&e, "spec.egress[0].bind: bad is not a valid IP"), "{e:?}");

        for bind in ["unix:///@foo/bar/com", "unix:///foo/bar/com"] {
            let f = run(&with_egress(vec![egress_port(sidecar_port("uds", 0, "http"), bind, &["ns1/bar.com"])]));
            assert!(f.is_empty(), "{bind}: {f:?}");
        }
        let e = errors(&run(&with_egress(vec![egress_port(
            sidecar_port("uds", 0, "http"),
            "foobar:///@foo/bar/com",
            &["ns1/bar.com"],
        )])));
        assert!(has(&e, "spec.egress[0].bind: sidecar: ports with 0 value must have a unix domain socket bind"));
        let mut l = egress_port(sidecar_port("uds", 0, "http"), "unix:///@foo/bar/com", &["ns1/bar.com"]);
        l.capture_mode = CaptureMode::Iptables;
        let e = errors(&run(&with_egress(vec![l])));
        assert!(has(&e, "spec.egress[0].captureMode: sidecar: captureMode must be DEFAULT/NONE"), "{e:?}");

        let uds = egress_port(sidecar_port("uds", 0, "http"), "unix:///@foo/bar/com", &["ns1/bar.com"]);
        let e = errors(&run(&with_egress(vec![uds.clone(), uds])));
        assert_eq!(e, vec!["spec.egress[1].bind: sidecar: unix domain socket values for listeners must be unique"]);
        let e = errors(&run(&with_egress(vec![
            egress_port(sidecar_port("foo", 90, "http"), "", &["ns1/bar.com"]),
            egress_port(sidecar_port("tcp", 90, "tcp"), "", &["ns2/bar.com"]),
        ])));
        assert_eq!(e, vec!["spec.egress[1].port.number: sidecar: ports on IP bound listeners must be unique"]);

        let mut l = egress_port(sidecar_port("h", 80, "http"), "", &["a/b.com"]);
        l.port.as_mut().iter_mut().for_each(|p| p.target_port = 8080);
        assert!(has(&errors(&run(&with_egress(vec![l]))), "targetPort has no impact on Sidecars"));
    }

    #[test]
    fn ingress_listeners() {
        let e = errors(&run(&with_ingress(vec![ingress_l(None, "127.0.0.1:110")])));
        assert_eq!(
            e,
            vec![
                "spec.ingress[0].port: Required value",
                "spec.ingress[0].port: sidecar: port is required for ingress listeners"
            ]
        );

        let e = errors(&run(&with_ingress(vec![
            ingress_l(sidecar_port("foo", 90, "http"), "[::1]:110"),
            ingress_l(sidecar_port("bar", 90, "tcp"), "[::1]:110"),
        ])));
        assert_eq!(e, vec!["spec.ingress[1].port.number: sidecar: ports on IP bound listeners must be unique"]);

        let mut l = ingress_l(sidecar_port("uds", 0, "http"), "127.0.0.1:9999");
        l.bind = "unix:///@foo/bar/com".into();
        let e = errors(&run(&with_ingress(vec![l])));
        assert!(has(&e, "port number 0 must be in the range"), "{e:?}");
        assert!(has(&e, "spec.ingress[0].bind: unix:///@foo/bar/com is not a valid IP"), "{e:?}");

        for ok in ["", "127.0.0.1:9999", "[::1]:9999", "0.0.0.0:80", "[::]:80", ":80", "unix:///var/run/x.sock"] {
            let f = run(&with_ingress(vec![ingress_l(sidecar_port("foo", 90, "http"), ok)]));
            assert!(f.is_empty(), "{ok}: {f:?}");
        }
        let f = run(&with_ingress(vec![ingress_l(sidecar_port("foo", 90, ""), "127.0.0.1:9999")]));
        assert!(f.is_empty(), "{f:?}");
        let bad = [
            ("1.1.1.1:90", "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>"),
            ("[1:1:1:1:1:1:1:1]:90", "sidecar: defaultEndpoint must be of form"),
            ("unix:///", "/ is not an absolute path to a file"),
            (
                "127.0.0.1:hi",
                "sidecar: defaultEndpoint port (hi) is not a number: strconv.Atoi: parsing \"hi\": invalid syntax",
            ),
            ("[::1]:hi", "sidecar: defaultEndpoint port (hi) is not a number"),
            ("127.0.0.1", "address 127.0.0.1: missing port in address"),
            ("::1:80", "address ::1:80: too many colons in address"),
            ("127.0.0.1:0", "port number 0 must be in the range 1..65535"),
            ("127.0.0.1:99999999999999999999", "value out of range"),
        ];
        for (ep, want) in bad {
            let e = errors(&run(&with_ingress(vec![ingress_l(sidecar_port("foo", 90, "http"), ep)])));
            assert!(has(&e, want), "{ep}: {e:?}");
            assert!(has(&e, "spec.ingress[0].defaultEndpoint: "), "{ep}: {e:?}");
        }
    }

    #[test]
    fn ingress_tls() {
        let tls_listener = |protocol: &str, tls: ServerTlsSettings| IstioIngressListener {
            tls: Some(tls),
            ..ingress_l(sidecar_port("foo", 90, protocol), "127.0.0.1:9999")
        };
        let simple = ServerTlsSettings {
            mode: ServerTlsMode::Simple,
            server_certificate: "c".into(),
            private_key: "k".into(),
            ..ServerTlsSettings::default()
        };
        let f = run(&with_ingress(vec![tls_listener("https", simple.clone())]));
        assert!(f.is_empty(), "{f:?}");

        let cases = [
            (
                ServerTlsSettings { mode: ServerTlsMode::IstioMutual, ..ServerTlsSettings::default() },
                "configuration is invalid: cannot set mode to ISTIO_MUTUAL in sidecar ingress tls",
            ),
            (
                ServerTlsSettings { mode: ServerTlsMode::AutoPassthrough, ..ServerTlsSettings::default() },
                "cannot set mode to AUTO_PASSTHROUGH",
            ),
            (ServerTlsSettings { https_redirect: true, ..simple.clone() }, "sidecar: httpsRedirect is not supported"),
            (
                ServerTlsSettings { subject_alt_names: vec!["httpbin.com".into()], ..simple.clone() },
                "sidecar: subjectAltNames is not supported in ingress tls",
            ),
            (
                ServerTlsSettings { credential_name: "s".into(), ..ServerTlsSettings::default() },
                "sidecar: credentialName is not currently supported",
            ),
            (
                ServerTlsSettings { credential_names: vec!["s".into()], ..ServerTlsSettings::default() },
                "sidecar: credentialNames is not currently supported",
            ),
            (
                ServerTlsSettings {
                    mode: ServerTlsMode::Simple,
                    tls_certificates: vec![TlsCertificate {
                        server_certificate: "c".into(),
                        private_key: "k".into(),
                        ca_certificates: String::new(),
                    }],
                    ..ServerTlsSettings::default()
                },
                "sidecar: tls_certificates is not currently supported",
            ),
            (
                ServerTlsSettings { mode: ServerTlsMode::Simple, ..ServerTlsSettings::default() },
                "requires a private key",
            ),
        ];
        for (tls, want) in cases {
            let e = errors(&run(&with_ingress(vec![tls_listener("https", tls.clone())])));
            assert!(has(&e, want), "{tls:?}: {e:?}");
        }
        let e = errors(&run(&with_ingress(vec![tls_listener("tcp", simple)])));
        assert_eq!(e, vec!["spec.ingress[0].tls: server cannot have TLS settings for non HTTPS/TLS ports"]);
    }

    #[test]
    fn connection_pool_warnings() {
        let http_pool = ConnectionPoolSettings {
            http: Some(HttpSettings { http1_max_pending_requests: 1024, ..HttpSettings::default() }),
            tcp: None,
        };
        let listener = |protocol: &str| IstioIngressListener {
            connection_pool: Some(http_pool.clone()),
            ..ingress_l(sidecar_port("foo", 90, protocol), "")
        };
        let f = run(&Sidecar { ingress: vec![listener("http")], ..Sidecar::default() });
        assert!(warnings(&f).is_empty(), "{f:?}");
        let f = run(&Sidecar { ingress: vec![listener("tcp")], ..Sidecar::default() });
        assert_eq!(
            warnings(&f),
            vec![
                "spec.ingress[0].connectionPool.http: sidecar: HTTP connection pool settings are configured for port \
                 90 (\"foo\") but its protocol is not HTTP (tcp); only TCP settings will apply"
            ]
        );
        let f = run(&Sidecar { inbound_connection_pool: Some(http_pool), ..Sidecar::default() });
        assert!(!has(&errors(&f), "empty configuration"), "{f:?}");
    }

    #[test]
    fn outbound_policy() {
        let proxy = |host: &str, port: Option<u32>| {
            Some(Destination {
                host: host.into(),
                subset: "shiny".into(),
                port: port.map(|number| PortSelector { number }),
            })
        };
        let policy = |mode, egress_proxy| Sidecar {
            outbound_traffic_policy: Some(OutboundTrafficPolicy { mode, egress_proxy }),
            ..Sidecar::default()
        };
        assert!(run(&policy(OutboundMode::AllowAny, None)).is_empty());
        assert!(run(&policy(OutboundMode::AllowAny, proxy("foo.bar", Some(5000)))).is_empty());
        let cases = [
            (
                policy(OutboundMode::RegistryOnly, proxy("foo.bar", Some(5000))),
                "spec.outboundTrafficPolicy.egressProxy: sidecar: egress_proxy must be set only with ALLOW_ANY",
            ),
            (
                policy(OutboundMode::AllowAny, proxy("foobar*123", Some(5000))),
                "egressProxy.host: domain name \"foobar*123\" invalid",
            ),
            (policy(OutboundMode::AllowAny, proxy("foo.bar", None)), "sidecar: egress_proxy port must be non-nil"),
            (policy(OutboundMode::AllowAny, proxy("*", Some(1))), "invalid destination host *"),
            (policy(OutboundMode::AllowAny, proxy("foo.bar", Some(0))), "port number 0 must be in the range"),
            (policy(OutboundMode::RegistryOnly, proxy("", Some(1))), "egressProxy.host: Required value"),
            (
                policy(OutboundMode::AllowAnyDynamicDns, None),
                "sidecar: ALLOW_ANY_DYNAMIC_DNS mode is only supported in MeshConfig, not in Sidecar resource",
            ),
            (
                policy(OutboundMode::AllowAnyDynamicDns, None),
                "mode: Unsupported value: \"ALLOW_ANY_DYNAMIC_DNS\": supported values: \"REGISTRY_ONLY\", \"ALLOW_ANY\"",
            ),
        ];
        for (sc, want) in cases {
            let e = errors(&run(&sc));
            assert!(has(&e, want), "{want}: {e:?}");
        }
        let mut sc = policy(OutboundMode::AllowAny, proxy("foo.bar", Some(1)));
        if let Some(d) = sc.outbound_traffic_policy.as_mut().and_then(|t| t.egress_proxy.as_mut()) {
            d.subset = "Not_Valid".into();
        }
        assert!(has(&errors(&run(&sc)), "subset name is invalid: Not_Valid"));
    }

    #[test]
    fn go_parsers() {
        assert_eq!(split_host_port("[::1]:80"), Ok(("::1", "80")));
        assert_eq!(split_host_port(":80"), Ok(("", "80")));
        assert_eq!(split_host_port(""), Err("address : missing port in address".to_string()));
        assert_eq!(split_host_port("[::1]"), Err("address [::1]: missing port in address".to_string()));
        assert_eq!(split_host_port("[::1"), Err("address [::1: missing ']' in address".to_string()));
        assert_eq!(split_host_port("[::1]:80:1"), Err("address [::1]:80:1: too many colons in address".to_string()));
        assert_eq!(split_host_port("a]:80"), Err("address a]:80: unexpected ']' in address".to_string()));
        assert_eq!(gofmt::atoi("+42"), Ok(42));
        assert_eq!(gofmt::atoi("-9223372036854775808"), Ok(i64::MIN));
        assert!(gofmt::atoi("9223372036854775808").is_err_and(|e| e.ends_with("value out of range")));
        assert!(gofmt::atoi("").is_err_and(|e| e == "strconv.Atoi: parsing \"\": invalid syntax"));
        assert!(gofmt::atoi("1_000").is_err_and(|e| e.ends_with("invalid syntax")));
    }

    #[test]
    fn loads_from_yaml() {
        let text = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: s\n  namespace: ns\nspec:\n  \
                    egress:\n  - hosts: [\"./*\", \"ns/a.com\"]\n";
        let loaded = load_str(text, "s.yaml", &LoadOptions::default());
        let obj = loaded.objects.first().expect("one object");
        assert!(matches!(obj.spec, Spec::Sidecar(_)));
        let report = crate::validate::validate(obj);
        let w = warnings(&report.findings);
        assert_eq!(w, vec!["spec.egress[0].hosts[1]: duplicated egress host: ns/a.com"]);
    }
}
