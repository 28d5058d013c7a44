//! Gateway validation (`ValidateGateway` in istio/istio `pkg/config/validation`),
//! plus the server TLS checks shared with Sidecar ingress listeners and the
//! CRD schema / CEL rules of `Gateway` and `ServerTLSSettings`.

use std::collections::{BTreeSet, HashSet};

use crate::protocol::Protocol;
use crate::types::{Gateway, ObjectMeta, Port, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol};

use super::common::{self, UNIX_ADDRESS_PREFIX};
use super::{P, Report, gofmt, schema};

/// Annotation istiod sets on Gateways converted from the Kubernetes Gateway API.
const GATEWAY_SEMANTICS_ANNOTATION: &str = "internal.istio.io/gateway-semantics";
const GATEWAY_SEMANTICS_GATEWAY: &str = "gateway";

/// Cipher names Envoy (BoringSSL) accepts in `cipherSuites`
/// (Istio's `security.ValidCipherSuites`).
const VALID_CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

/// Most certificates a server may list (`credentialNames`, `tlsCertificates` `maxItems`).
const MAX_SERVER_CERTS: usize = 2;

pub(super) fn validate(meta: &ObjectMeta, spec: &Gateway, p: &P, r: &mut Report) {
    let gateway_semantics =
        meta.annotations.get(GATEWAY_SEMANTICS_ANNOTATION).is_some_and(|v| v == GATEWAY_SEMANTICS_GATEWAY);

    if !gateway_semantics && !common::is_dns1123_label(&meta.name) {
        r.error(&P::root("metadata.name"), format!("invalid gateway name: {}", gofmt::quote(&meta.name)));
    }

    let servers = p.f("servers");
    if spec.servers.is_empty() {
        r.error(&servers, "gateway must have at least one server");
    }
    for (i, server) in spec.servers.iter().enumerate() {
        validate_server(server, gateway_semantics, &servers.i(i), r);
    }

    let mut port_names: HashSet<&str> = HashSet::new();
    for (i, server) in spec.servers.iter().enumerate() {
        let Some(port) = &server.port else { continue };
        let sp = servers.i(i);
        if !port_names.insert(port.name.as_str()) {
            r.error(
                &sp.f("port").f("name"),
                format!("port names in servers must be unique: duplicate name {}", port.name),
            );
        }
        let is_http = Protocol::parse(&port.protocol).is_some_and(|pr| pr.is_http());
        if !is_http && server.tls.as_ref().is_some_and(|t| t.https_redirect) {
            r.warn(&sp.f("tls").f("httpsRedirect"), "tls.httpsRedirect should only be used with http servers");
        }
    }
}

/// `validateServer`.
fn validate_server(server: &Server, gateway_semantics: bool, p: &P, r: &mut Report) {
    let hosts = p.f("hosts");
    if server.hosts.is_empty() {
        r.error(&hosts, "server config must contain at least one host");
    }
    for (i, host) in server.hosts.iter().enumerate() {
        for e in common::namespace_slash_wildcard_hostname(host, true, gateway_semantics) {
            r.error(&hosts.i(i), e);
        }
    }

    let port_ok = server_port(server.port.as_ref(), &server.bind, &p.f("port"), r);
    server_bind(server.port.as_ref(), &server.bind, p, r);
    if let Some(tls) = &server.tls {
        tls_options(tls, &p.f("tls"), r);
    }

    let Some(port) = server.port.as_ref().filter(|_| port_ok) else { return };
    let protocol = Protocol::parse(&port.protocol);
    let is_tls = protocol.is_some_and(|pr| pr.is_tls());
    let is_http = protocol.is_some_and(|pr| pr.is_http());
    match &server.tls {
        None if is_tls => r.error(&p.f("tls"), "server must have TLS settings for HTTPS/TLS protocols"),
        Some(tls) if !is_tls => {
            if is_http {
                let passthrough = matches!(tls.mode, ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough);
                if !passthrough
                    || !tls.ca_certificates.is_empty()
                    || !tls.private_key.is_empty()
                    || !tls.server_certificate.is_empty()
                {
                    r.error(&p.f("tls"), "server cannot have TLS settings for plain text HTTP ports");
                }
            } else {
                r.error(&p.f("tls"), "server cannot have TLS settings for non HTTPS/TLS ports");
            }
        }
        _ => {}
    }
}

/// `validateServerPort`; returns whether the port produced no error.
fn server_port(port: Option<&Port>, bind: &str, p: &P, r: &mut Report) -> bool {
    let Some(port) = port else {
        schema::required(r, p);
        r.error(p, "port is required");
        return false;
    };
    let before = r.findings.len();
    if Protocol::parse(&port.protocol).is_none() {
        r.error(
            &p.f("protocol"),
            format!(
                "invalid protocol {}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
                gofmt::quote(&port.protocol)
            ),
        );
    }
    if port.number > 0 || !bind.starts_with(UNIX_ADDRESS_PREFIX) {
        r.check(&p.f("number"), common::port(i64::from(port.number)));
    }
    if port.target_port > 0 {
        r.error(&p.f("targetPort"), "targetPort has no impact on Gateways");
    }
    if port.name.is_empty() {
        r.error(&p.f("name"), format!("port name must be set: {}", port_text(port)));
    }
    r.findings.len() == before
}

/// `validateServerBind`.
fn server_bind(port: Option<&Port>, bind: &str, p: &P, r: &mut Report) {
    if let Some(path) = bind.strip_prefix(UNIX_ADDRESS_PREFIX) {
        r.check(&p.f("bind"), common::unix_address(path));
        if let Some(port) = port.filter(|port| port.number != 0) {
            r.error(
                &p.f("port").f("number"),
                format!("port number must be 0 for unix domain socket: {}", port_text(port)),
            );
        }
    } else if !bind.is_empty() {
        r.check(&p.f("bind"), common::ip_address(bind));
    }
}

/// `validateTLSOptions` for Gateway servers and Sidecar ingress listeners,
/// together with the CRD schema rules of `ServerTLSSettings`. `p` is the `tls` field.
pub(super) fn tls_options(tls: &ServerTlsSettings, p: &P, r: &mut Report) {
    tls_schema(tls, p, r);

    if matches!(tls.min_protocol_version, TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1) && tls.cipher_suites.is_empty() {
        r.warn(
            &p.f("minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include \
             compatible ciphers.",
        );
    }

    let mut invalid: BTreeSet<&str> = BTreeSet::new();
    let mut valid: HashSet<&str> = HashSet::new();
    let mut duplicate: BTreeSet<&str> = BTreeSet::new();
    for cs in &tls.cipher_suites {
        if !is_valid_cipher_suite(cs) {
            invalid.insert(cs);
        } else if !valid.insert(cs) {
            duplicate.insert(cs);
        }
    }
    if !invalid.is_empty() {
        r.warn(&p.f("cipherSuites"), format!("ignoring invalid cipher suites: {}", gofmt::strings_v(&invalid)));
    }
    if !duplicate.is_empty() {
        r.warn(&p.f("cipherSuites"), format!("ignoring duplicate cipher suites: {}", gofmt::strings_v(&duplicate)));
    }

    if tls.mode == ServerTlsMode::IstioMutual {
        let checks: [(bool, &str, &str); 6] = [
            (!tls.server_certificate.is_empty(), "serverCertificate", "server certificate"),
            (!tls.private_key.is_empty(), "privateKey", "private key"),
            (!tls.ca_certificates.is_empty(), "caCertificates", "CA bundle"),
            (!tls.tls_certificates.is_empty(), "tlsCertificates", "tlsCertificates"),
            (!tls.credential_name.is_empty(), "credentialName", "credentialName"),
            (!tls.credential_names.is_empty(), "credentialNames", "credentialNames"),
        ];
        for (set, field, what) in checks {
            if set {
                r.error(&p.f(field), format!("ISTIO_MUTUAL TLS cannot have associated {what}"));
            }
        }
        return;
    }

    if matches!(tls.mode, ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
        && (!tls.ca_crl.is_empty()
            || !tls.server_certificate.is_empty()
            || !tls.private_key.is_empty()
            || !tls.ca_certificates.is_empty()
            || !tls.tls_certificates.is_empty()
            || !tls.credential_name.is_empty()
            || !tls.credential_names.is_empty())
    {
        r.warn(&p.f("mode"), format!("{} mode does not use certificates, they will be ignored", tls.mode));
    }

    let sources = [
        !tls.server_certificate.is_empty() && !tls.private_key.is_empty(),
        !tls.credential_name.is_empty(),
        !tls.credential_names.is_empty(),
        !tls.tls_certificates.is_empty(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        r.error(
            p,
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should \
             be specified",
        );
    }

    let terminating = matches!(tls.mode, ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual);
    if terminating && (!tls.credential_name.is_empty() || !tls.credential_names.is_empty()) {
        return;
    }

    if terminating {
        let prefix = if tls.mode == ServerTlsMode::Simple { "SIMPLE TLS" } else { "MUTUAL TLS" };
        if tls.mode != ServerTlsMode::Simple && tls.ca_certificates.is_empty() {
            r.error(&p.f("caCertificates"), format!("{prefix} requires a client CA bundle"));
        }
        if tls.tls_certificates.len() > MAX_SERVER_CERTS {
            r.warn(&p.f("tlsCertificates"), format!("{prefix} can support up to 2 server certificates"));
        }
        if tls.tls_certificates.is_empty() {
            if tls.server_certificate.is_empty() {
                r.error(&p.f("serverCertificate"), format!("{prefix} requires a server certificate"));
            }
            if tls.private_key.is_empty() {
                r.error(&p.f("privateKey"), format!("{prefix} requires a private key"));
            }
        } else {
            let certs = p.f("tlsCertificates");
            for (i, cert) in tls.tls_certificates.iter().enumerate() {
                if cert.server_certificate.is_empty() {
                    r.error(&certs.i(i).f("serverCertificate"), format!("{prefix} requires a server certificate"));
                }
                if cert.private_key.is_empty() {
                    r.error(&certs.i(i).f("privateKey"), format!("{prefix} requires a private key"));
                }
            }
        }
    }

    if !tls.ca_crl.is_empty() {
        if !tls.credential_name.is_empty() {
            r.error(
                &p.f("caCrl"),
                "CRL is not supported with credentialName. CRL has to be specified in the credential",
            );
        }
        if tls.mode == ServerTlsMode::Simple {
            r.error(&p.f("caCrl"), "CRL is not supported with SIMPLE TLS");
        }
    }
}

/// The CRD schema of `ServerTLSSettings`: at most two `credentialNames` /
/// `tlsCertificates` and the three CEL rules, with the API server's messages.
///
/// Istio's webhook accepts more than two `tlsCertificates` with a warning (its
/// own test table expects that), so that `maxItems` is reported as a warning.
fn tls_schema(tls: &ServerTlsSettings, p: &P, r: &mut Report) {
    schema::max_items(r, &p.f("credentialNames"), tls.credential_names.len(), MAX_SERVER_CERTS);
    if tls.tls_certificates.len() > MAX_SERVER_CERTS {
        r.warn(&p.f("tlsCertificates"), schema::too_many(tls.tls_certificates.len(), MAX_SERVER_CERTS));
    }
    let has_name = !tls.credential_name.is_empty();
    let has_names = !tls.credential_names.is_empty();
    let has_certs = !tls.tls_certificates.is_empty();
    // The third rule's message names credentialName but its expression tests
    // credentialNames, exactly as in the published CRD.
    let rules = [
        (has_certs && has_names, "only one of credentialNames or tlsCertificates can be set"),
        (has_name && has_names, "only one of credentialName or credentialNames can be set"),
        (has_names && has_certs, "only one of credentialName or tlsCertificates can be set"),
    ];
    for (violated, msg) in rules {
        if violated {
            schema::cel(r, p, "object", msg);
        }
    }
}

/// `security.IsValidCipherSuite`: known names, plus anything that does not
/// start with a letter or digit (BoringSSL operators such as `-NAME`, `+NAME`).
fn is_valid_cipher_suite(cs: &str) -> bool {
    if cs.is_empty() || cs == "ALL" {
        return true;
    }
    // Go looks at the first byte as a Latin-1 code point.
    let first = char::from(cs.as_bytes()[0]);
    if !first.is_alphanumeric() {
        return true;
    }
    VALID_CIPHER_SUITES.contains(&cs)
}

/// A `Port` as Go's `%v` prints the proto message (text format, zero fields omitted).
pub(super) fn port_text(port: &Port) -> String {
    let mut parts = Vec::new();
    if port.number != 0 {
        parts.push(format!("number:{}", port.number));
    }
    if !port.protocol.is_empty() {
        parts.push(format!("protocol:{}", gofmt::quote(&port.protocol)));
    }
    if !port.name.is_empty() {
        parts.push(format!("name:{}", gofmt::quote(&port.name)));
    }
    if port.target_port != 0 {
        parts.push(format!("target_port:{}", port.target_port));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Spec, TlsCertificate};
    use crate::validate::Severity;
    use crate::{LoadOptions, load_str};

    fn port(name: &str, number: u32, protocol: &str) -> Option<Port> {
        Some(Port { name: name.into(), number, protocol: protocol.into(), target_port: 0 })
    }

    fn server(hosts: &[&str], port: Option<Port>) -> Server {
        Server { hosts: hosts.iter().map(|h| h.to_string()).collect(), port, ..Server::default() }
    }

    fn run_named(name: &str, annotations: &[(&str, &str)], gw: &Gateway) -> Report {
        let meta = ObjectMeta {
            name: name.into(),
            namespace: "bar".into(),
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..ObjectMeta::default()
        };
        let mut r = Report::default();
        validate(&meta, gw, &P::root("spec"), &mut r);
        r
    }

    fn run(gw: &Gateway) -> Report {
        run_named("foo", &[], gw)
    }

    fn errors(r: &Report) -> Vec<String> {
        r.errors().map(|f| format!("{}: {}", f.path, f.message)).collect()
    }

    fn warnings(r: &Report) -> Vec<String> {
        r.warnings().map(|f| format!("{}: {}", f.path, f.message)).collect()
    }

    fn has(list: &[String], needle: &str) -> bool {
        list.iter().any(|m| m.contains(needle))
    }

    fn one(s: Server) -> Gateway {
        Gateway { servers: vec![s], selector: None }
    }

    fn tls_run(tls: ServerTlsSettings) -> Report {
        let mut s = server(&["foo.bar.com"], port("https", 443, "HTTPS"));
        s.tls = Some(tls);
        run(&one(s))
    }

    fn certs(pairs: &[(&str, &str)]) -> Vec<TlsCertificate> {
        pairs
            .iter()
            .map(|(c, k)| TlsCertificate {
                server_certificate: c.to_string(),
                private_key: k.to_string(),
                ca_certificates: String::new(),
            })
            .collect()
    }

    #[test]
    fn gateway_level_rules() {
        let r = run(&Gateway::default());
        assert!(has(&errors(&r), "spec.servers: gateway must have at least one server"), "{:?}", errors(&r));

        let r = run_named("foo.bar", &[], &one(server(&["foo.bar.com"], port("http", 80, "http"))));
        assert_eq!(errors(&r), vec!["metadata.name: invalid gateway name: \"foo.bar\"".to_string()]);
        let semantics = [(GATEWAY_SEMANTICS_ANNOTATION, GATEWAY_SEMANTICS_GATEWAY)];
        let r = run_named("foo.bar", &semantics, &one(server(&["~/foo.bar.com"], port("http", 80, "http"))));
        assert!(errors(&r).is_empty(), "{:?}", errors(&r));
        let r = run(&one(server(&["~/foo.bar.com"], port("http", 80, "http"))));
        assert!(has(&errors(&r), "invalid namespace value \"~\" in gateway"));

        let gw = Gateway {
            servers: vec![
                server(&["foo.bar.com"], port("foo", 80, "http")),
                server(&["scooby.doo.com"], port("foo", 8080, "http")),
            ],
            selector: None,
        };
        let r = run(&gw);
        assert_eq!(
            errors(&r),
            vec!["spec.servers[1].port.name: port names in servers must be unique: duplicate name foo".to_string()]
        );

        let mut s = server(&["bar.com"], port("https", 80, "https"));
        s.tls = Some(ServerTlsSettings { https_redirect: true, ..ServerTlsSettings::default() });
        let r = run(&one(s));
        assert!(errors(&r).is_empty(), "{:?}", errors(&r));
        assert!(has(&warnings(&r), "spec.servers[0].tls.httpsRedirect: tls.httpsRedirect should only be used"));

        let mut s = server(&["bar.com"], port("http", 80, "http"));
        s.tls = Some(ServerTlsSettings { https_redirect: true, ..ServerTlsSettings::default() });
        let r = run(&one(s));
        assert!(r.findings.is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn server_hosts() {
        let ok = ["foo.bar.com", "1.1.1.1", "ns1/foo.bar.com", "*/foo.bar.com", "./foo.bar.com", "*"];
        for h in ok {
            let r = run(&one(server(&[h], port("http", 7, "http"))));
            assert!(r.findings.is_empty(), "{h}: {:?}", r.findings);
        }
        let bad = [
            ("~/foo.bar.com", "namespace"),
            ("ns1/foo.*.bar.com", "domain"),
            ("foo.*.bar.com", "domain name \"*.bar.com\" invalid (label \"*\" invalid)"),
            ("foo", "short names (non FQDN) are not allowed"),
            ("*bar.com", "partial wildcard \"*bar.com\" not allowed"),
        ];
        for (h, want) in bad {
            let r = run(&one(server(&[h], port("http", 7, "http"))));
            assert!(has(&errors(&r), want), "{h}: {:?}", errors(&r));
            assert!(has(&errors(&r), "spec.servers[0].hosts[0]: "), "{h}: {:?}", errors(&r));
        }
        let r = run(&one(server(&[], port("http", 7, "http"))));
        assert!(has(&errors(&r), "spec.servers[0].hosts: server config must contain at least one host"));
    }

    #[test]
    fn server_ports_and_binds() {
        let r = run(&one(server(&["foo.bar.com"], None)));
        assert!(has(&errors(&r), "spec.servers[0].port: port is required"));
        assert!(has(&errors(&r), "spec.servers[0].port: Required value"));

        let r = run(&one(server(&["foo.bar.com"], port("", 0, ""))));
        let e = errors(&r);
        assert!(has(&e, "invalid protocol \"\", supported protocols are HTTP"), "{e:?}");
        assert!(has(&e, "port number 0 must be in the range 1..65535"), "{e:?}");
        assert!(has(&e, "spec.servers[0].port.name: port name must be set: "), "{e:?}");

        let r = run(&one(server(&["foo.bar.com"], port("http", 66000, "http"))));
        assert!(has(&errors(&r), "spec.servers[0].port.number: port number 66000 must be in the range 1..65535"));
        let r = run(&one(server(&["foo.bar.com"], port("Henry", 1, "kafka"))));
        assert!(has(&errors(&r), "invalid protocol \"kafka\""));

        let mut s = server(&["foo.bar.com"], port("http", 7, "http"));
        if let Some(p) = s.port.as_mut() {
            p.target_port = 8080;
        }
        assert!(has(&errors(&run(&one(s))), "targetPort has no impact on Gateways"));

        let mut s = server(&["foo.bar.com"], port("http", 7, "http"));
        s.bind = "127.0.0.1".into();
        assert!(run(&one(s.clone())).findings.is_empty());
        s.bind = "unix://@foobar".into();
        assert_eq!(
            errors(&run(&one(s.clone()))),
            vec![
                "spec.servers[0].port.number: port number must be 0 for unix domain socket: number:7 \
                 protocol:\"http\" name:\"http\""
                    .to_string()
            ]
        );
        if let Some(p) = s.port.as_mut() {
            p.number = 0;
        }
        assert!(run(&one(s.clone())).findings.is_empty());
        s.bind = "unix://relative".into();
        assert!(has(&errors(&run(&one(s.clone()))), "relative is not an absolute path to a file"));
        s.bind = "foo.bar".into();
        assert!(has(&errors(&run(&one(s.clone()))), "spec.servers[0].bind: foo.bar is not a valid IP"));
        s.bind = "uds:///tmp".into();
        assert!(has(&errors(&run(&one(s))), "port number 0 must be in the range"));
    }

    #[test]
    fn server_tls_vs_protocol() {
        let r = run(&one(server(&["foo.bar.com"], port("https", 10000, "https"))));
        assert!(has(&errors(&r), "spec.servers[0].tls: server must have TLS settings for HTTPS/TLS protocols"));

        let mut s = server(&["foo.bar.com"], port("http", 10000, "http"));
        s.tls = Some(ServerTlsSettings { mode: ServerTlsMode::Simple, ..ServerTlsSettings::default() });
        let e = errors(&run(&one(s)));
        assert!(has(&e, "server cannot have TLS settings for plain text HTTP ports"), "{e:?}");
        assert!(has(&e, "SIMPLE TLS requires a server certificate"), "{e:?}");

        let mut s = server(&["foo.bar.com"], port("http", 80, "http"));
        s.tls = Some(ServerTlsSettings { server_certificate: "c".into(), ..ServerTlsSettings::default() });
        assert!(has(&errors(&run(&one(s))), "plain text HTTP ports"));

        let mut s = server(&["foo.bar.com"], port("tcp", 80, "tcp"));
        s.tls = Some(ServerTlsSettings::default());
        assert!(has(&errors(&run(&one(s))), "server cannot have TLS settings for non HTTPS/TLS ports"));

        // A bad port suppresses the protocol/TLS consistency check.
        let mut s = server(&["foo.bar.com"], port("https", 0, "https"));
        s.tls = None;
        let e = errors(&run(&one(s)));
        assert!(!has(&e, "must have TLS settings"), "{e:?}");
    }

    #[test]
    fn tls_istio_mutual() {
        let r = tls_run(ServerTlsSettings { mode: ServerTlsMode::IstioMutual, ..ServerTlsSettings::default() });
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        let r = tls_run(ServerTlsSettings {
            mode: ServerTlsMode::IstioMutual,
            server_certificate: "a".into(),
            private_key: "b".into(),
            ca_certificates: "c".into(),
            credential_name: "d".into(),
            ..ServerTlsSettings::default()
        });
        let e = errors(&r);
        for want in [
            "tls.serverCertificate: ISTIO_MUTUAL TLS cannot have associated server certificate",
            "tls.privateKey: ISTIO_MUTUAL TLS cannot have associated private key",
            "tls.caCertificates: ISTIO_MUTUAL TLS cannot have associated CA bundle",
            "tls.credentialName: ISTIO_MUTUAL TLS cannot have associated credentialName",
        ] {
            assert!(has(&e, want), "{want}: {e:?}");
        }
        assert_eq!(e.len(), 4, "{e:?}");
    }

    #[test]
    fn tls_certificate_sources() {
        let base = ServerTlsSettings { mode: ServerTlsMode::Simple, ..ServerTlsSettings::default() };
        let ok = [
            ServerTlsSettings { server_certificate: "c".into(), private_key: "k".into(), ..base.clone() },
            ServerTlsSettings { credential_name: "sds".into(), ..base.clone() },
            ServerTlsSettings { credential_name: "sds".into(), private_key: "k".into(), ..base.clone() },
            ServerTlsSettings { credential_name: "sds".into(), ca_crl: "crl".into(), ..base.clone() },
            ServerTlsSettings {
                mode: ServerTlsMode::Mutual,
                credential_names: vec!["a".into(), "b".into()],
                ..base.clone()
            },
            ServerTlsSettings {
                mode: ServerTlsMode::Mutual,
                ca_certificates: "ca".into(),
                tls_certificates: certs(&[("c", "k")]),
                ..base.clone()
            },
        ];
        for t in ok {
            let r = tls_run(t.clone());
            assert!(r.findings.is_empty(), "{t:?}: {:?}", r.findings);
        }

        let only_one =
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates";
        let bad = [
            (
                ServerTlsSettings {
                    server_certificate: "c".into(),
                    private_key: "k".into(),
                    credential_name: "sds".into(),
                    ..base.clone()
                },
                only_one,
            ),
            (
                ServerTlsSettings {
                    server_certificate: "c".into(),
                    private_key: "k".into(),
                    tls_certificates: certs(&[("c", "k"), ("d", "e")]),
                    ..base.clone()
                },
                only_one,
            ),
            (
                ServerTlsSettings { private_key: "k".into(), ..base.clone() },
                "tls.serverCertificate: SIMPLE TLS requires",
            ),
            (ServerTlsSettings { server_certificate: "c".into(), ..base.clone() }, "SIMPLE TLS requires a private key"),
            (
                ServerTlsSettings { tls_certificates: certs(&[("", "k"), ("c", "k")]), ..base.clone() },
                "tls.tlsCertificates[0].serverCertificate: SIMPLE TLS requires a server certificate",
            ),
            (
                ServerTlsSettings { tls_certificates: certs(&[("c", ""), ("c", "k")]), ..base.clone() },
                "tls.tlsCertificates[0].privateKey: SIMPLE TLS requires a private key",
            ),
            (
                ServerTlsSettings {
                    mode: ServerTlsMode::Mutual,
                    server_certificate: "c".into(),
                    private_key: "k".into(),
                    ..base.clone()
                },
                "tls.caCertificates: MUTUAL TLS requires a client CA bundle",
            ),
            (
                ServerTlsSettings { mode: ServerTlsMode::OptionalMutual, ..base.clone() },
                "MUTUAL TLS requires a server certificate",
            ),
            (
                ServerTlsSettings { ca_crl: "crl".into(), ..base.clone() },
                "tls.caCrl: CRL is not supported with SIMPLE TLS",
            ),
        ];
        for (t, want) in bad {
            let e = errors(&tls_run(t.clone()));
            assert!(has(&e, want), "{t:?}: want {want}, got {e:?}");
        }

        // Terminating modes with a credential return before the CRL checks.
        let crl = ServerTlsSettings { credential_name: "x".into(), ca_crl: "crl".into(), ..base.clone() };
        assert!(tls_run(crl.clone()).findings.is_empty());
        let r = tls_run(ServerTlsSettings { mode: ServerTlsMode::Passthrough, ..crl });
        assert!(has(&errors(&r), "tls.caCrl: CRL is not supported with credentialName"));

        let mode_none = tls_run(ServerTlsSettings { mode: ServerTlsMode::Mutual, ..base });
        let e = errors(&mode_none);
        for want in ["requires a server certificate", "requires a private key", "client CA bundle"] {
            assert!(has(&e, want), "{want}: {e:?}");
        }
    }

    #[test]
    fn tls_warnings() {
        let three = certs(&[("a", "a"), ("b", "b"), ("c", "c")]);
        let r = tls_run(ServerTlsSettings {
            mode: ServerTlsMode::Simple,
            tls_certificates: three.clone(),
            ..ServerTlsSettings::default()
        });
        assert!(errors(&r).is_empty(), "{:?}", errors(&r));
        assert!(has(&warnings(&r), "SIMPLE TLS can support up to 2 server certificates"));
        assert!(has(&warnings(&r), "tls.tlsCertificates: Too many: 3: must have at most 2 items"));
        let r = tls_run(ServerTlsSettings {
            mode: ServerTlsMode::Mutual,
            ca_certificates: "ca".into(),
            tls_certificates: three,
            ..ServerTlsSettings::default()
        });
        assert!(has(&warnings(&r), "MUTUAL TLS can support up to 2 server certificates"));

        for t in [
            ServerTlsSettings { credential_name: "sds".into(), ..ServerTlsSettings::default() },
            ServerTlsSettings { ca_crl: "crl".into(), ..ServerTlsSettings::default() },
        ] {
            let r = tls_run(t);
            assert!(errors(&r).is_empty());
            assert!(has(&warnings(&r), "tls.mode: PASSTHROUGH mode does not use certificates, they will be ignored"));
        }
        let r = tls_run(ServerTlsSettings {
            mode: ServerTlsMode::AutoPassthrough,
            credential_name: "sds".into(),
            ..ServerTlsSettings::default()
        });
        assert!(has(&warnings(&r), "AUTO_PASSTHROUGH mode does not use certificates"));

        let sds = ServerTlsSettings {
            mode: ServerTlsMode::Simple,
            credential_name: "sds".into(),
            ..ServerTlsSettings::default()
        };
        let with_ciphers = |cs: &[&str]| {
            tls_run(ServerTlsSettings { cipher_suites: cs.iter().map(|c| c.to_string()).collect(), ..sds.clone() })
        };
        assert!(with_ciphers(&["ECDHE-ECDSA-AES128-SHA", "-ECDHE-RSA-AES128-SHA", "ALL", "[A|B]"]).findings.is_empty());
        let w = warnings(&with_ciphers(&["not-a-cipher-suite", "b", "not-a-cipher-suite", "AES128-SHA"]));
        assert_eq!(
            w,
            vec![
                "spec.servers[0].tls.cipherSuites: ignoring invalid cipher suites: [b not-a-cipher-suite]".to_string()
            ]
        );
        let w = warnings(&with_ciphers(&["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA"]));
        assert_eq!(
            w,
            vec!["spec.servers[0].tls.cipherSuites: ignoring duplicate cipher suites: [ECDHE-ECDSA-AES128-SHA]"]
        );

        let r = tls_run(ServerTlsSettings { min_protocol_version: TlsProtocol::TlsV1_1, ..sds.clone() });
        assert!(has(&warnings(&r), "tls.minProtocolVersion: TLS version below TLSV1_2 require setting compatible"));
        let r = tls_run(ServerTlsSettings {
            min_protocol_version: TlsProtocol::TlsV1_0,
            cipher_suites: vec!["AES128-SHA".into()],
            ..sds
        });
        assert!(r.findings.is_empty(), "{:?}", r.findings);

        let r = tls_run(ServerTlsSettings {
            mode: ServerTlsMode::Simple,
            cipher_suites: vec!["not-a-cipher-suite".into()],
            ..ServerTlsSettings::default()
        });
        assert!(has(&errors(&r), "requires a private key"));
        assert!(has(&warnings(&r), "not-a-cipher-suite"));
    }

    #[test]
    fn tls_crd_rules() {
        let r = tls_run(ServerTlsSettings {
            mode: ServerTlsMode::Mutual,
            credential_names: vec!["a".into(), "b".into(), "c".into()],
            ..ServerTlsSettings::default()
        });
        assert_eq!(errors(&r), vec!["spec.servers[0].tls.credentialNames: Too many: 3: must have at most 2 items"]);

        let r = tls_run(ServerTlsSettings {
            mode: ServerTlsMode::Simple,
            credential_name: "a".into(),
            credential_names: vec!["b".into()],
            ..ServerTlsSettings::default()
        });
        assert!(has(
            &errors(&r),
            "tls: Invalid value: \"object\": only one of credentialName or credentialNames can be set"
        ));

        let r = tls_run(ServerTlsSettings {
            mode: ServerTlsMode::Mutual,
            credential_names: vec!["b".into()],
            tls_certificates: certs(&[("c", "k")]),
            ..ServerTlsSettings::default()
        });
        let e = errors(&r);
        assert!(has(&e, "only one of credentialNames or tlsCertificates can be set"), "{e:?}");
        assert!(has(&e, "only one of credentialName or tlsCertificates can be set"), "{e:?}");
        assert!(has(&e, "only one of credential_name, credential_names"), "{e:?}");
    }

    #[test]
    fn helpers() {
        assert_eq!(gofmt::quote("a\"b\\c\n\u{1}é\u{200b}"), "\"a\\\"b\\\\c\\n\\x01é\\u200b\"");
        assert!(is_valid_cipher_suite("+AES128-SHA"));
        assert!(!is_valid_cipher_suite("aes128-sha"));
        assert!(!is_valid_cipher_suite("Élan"));
    }

    #[test]
    fn loads_from_yaml() {
        let text = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: ns\n\
                    spec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    \
                    tls: {mode: SIMPLE, credentialName: cert, cipherSuites: [nope]}\n";
        let loaded = load_str(text, "gw.yaml", &LoadOptions::default());
        let obj = loaded.objects.first().expect("one object");
        assert!(matches!(obj.spec, Spec::Gateway(_)));
        let report = crate::validate::validate(obj);
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        assert_eq!(report.findings[0].severity, Severity::Warning);
        assert_eq!(report.findings[0].path, "spec.servers[0].tls.cipherSuites");
    }
}
