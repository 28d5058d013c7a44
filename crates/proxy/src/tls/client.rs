//! Upstream TLS origination: the rustls client side of a cluster whose
//! DestinationRule sets `tls.mode: SIMPLE` or `MUTUAL`.
//!
//! [`ClientTls::build`] turns the compiled [`UpstreamTls`] and the runtime's
//! [`Credentials`] into three rustls configs (ALPN `http/1.1`, ALPN `h2`, and
//! none for TCP), once per runtime; handshakes only pick one. What Istio and
//! Envoy do, and what this module does:
//!
//! | Setting | Behaviour |
//! |---|---|
//! | `caCertificates` / `credentialName` CA (`ca.crt`, or the Secret `NAME-cacert`) | trust anchors; without any, the system bundle (`SSL_CERT_FILE`, else the usual distribution paths), as Istio's `system` default |
//! | `caCrl` / the Secret's `ca.crl` | revocation: a CRL must cover every CA of the chain (as Envoy) |
//! | `subjectAltNames` | the server certificate must carry one of them (DNS, with wildcard certificates, or IP SANs) |
//! | no `sni`, no SANs | `auto_sni` + `auto_san_validation`: SNI is the request's host and the certificate must match it |
//! | `sni` without SANs | that SNI; only the chain is verified (no name check, as Envoy) |
//! | `insecureSkipVerify` | no chain or name verification |
//! | `MUTUAL` | client certificate from `clientCertificate`/`privateKey` or the Secret's `tls.crt`/`tls.key` |
//! | HTTP/2 cluster | ALPN `h2` (HTTP/1.1: `http/1.1`; TCP: none) |
//!
//! TCP connections (no request host) send `sni` if set, else no SNI, and verify
//! only the chain unless `subjectAltNames` is set.
//!
//! Material that cannot be loaded (a missing Secret, an unreadable key) and
//! `ISTIO_MUTUAL` (which needs mesh identity weir does not have yet) do not
//! fall back to plaintext: every connection of the cluster fails with the
//! reason, which is logged once per runtime.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime};
use weir_api::types::ClientTlsMode;
use weir_compile::policy::UpstreamTls;

use super::{Credentials, Pem, TlsError};

/// Which wire protocol a handshake is for (selects the ALPN list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alpn {
    Http1,
    Http2,
    Tcp,
}

/// The TLS client of one cluster.
#[derive(Debug)]
pub(crate) struct ClientTls {
    /// What the configs were built from: equal sources build equal configs.
    source: Source,
    built: Result<Built, String>,
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &ClientTls) -> bool {
        self.source == other.source
    }
}

#[derive(Debug, PartialEq)]
struct Source {
    settings: UpstreamTls,
    /// The PEM bytes read for it (files or Secret entries), in a fixed order.
    material: Vec<Option<Pem>>,
}

#[derive(Debug)]
struct Built {
    h1: Arc<ClientConfig>,
    h2: Arc<ClientConfig>,
    tcp: Arc<ClientConfig>,
}

impl ClientTls {
    /// The TLS client for `tls`, or `None` when connections stay plaintext (`DISABLE`).
    pub(crate) fn build(tls: Option<&UpstreamTls>, credentials: &Credentials) -> Option<ClientTls> {
        let tls = tls.filter(|t| t.mode != ClientTlsMode::Disable)?;
        let mut material = Vec::new();
        let built = build(tls, credentials, &mut material).map_err(|e| e.to_string());
        Some(ClientTls { source: Source { settings: tls.clone(), material }, built })
    }

    /// Why this cluster cannot originate TLS, if it cannot.
    pub(crate) fn error(&self) -> Option<&str> {
        self.built.as_ref().err().map(String::as_str)
    }

    /// The config for a handshake on `alpn`, or the reason there is none.
    pub(crate) fn config(&self, alpn: Alpn) -> Result<&Arc<ClientConfig>, &str> {
        match &self.built {
            Ok(b) => Ok(match alpn {
                Alpn::Http1 => &b.h1,
                Alpn::Http2 => &b.h2,
                Alpn::Tcp => &b.tcp,
            }),
            Err(e) => Err(e),
        }
    }

    /// The server name for a handshake: `sni` if set; else (auto SNI) the request's host;
    /// else the peer's address (no SNI is sent for an address).
    pub(crate) fn server_name(&self, request_host: Option<&str>, peer: std::net::IpAddr) -> ServerName<'static> {
        let s = &self.source.settings;
        let name = s.sni.as_deref().or(if s.auto_sni { request_host } else { None });
        name.and_then(|n| {
            let n = n.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(n);
            ServerName::try_from(n.to_string()).ok()
        })
        .unwrap_or(ServerName::IpAddress(peer.into()))
    }
}

fn build(tls: &UpstreamTls, creds: &Credentials, material: &mut Vec<Option<Pem>>) -> Result<Built, TlsError> {
    let invalid = |what: &str, message: String| TlsError::Invalid { what: what.to_string(), message };
    if tls.mode == ClientTlsMode::IstioMutual {
        return Err(invalid("DestinationRule tls", weir_api::validate::ISTIO_MUTUAL_UNSUPPORTED.to_string()));
    }
    // Every input, read first so that the source records it even when building fails.
    let secret = tls.credential_name.as_deref().map(|n| creds.secret(n));
    let (cert, key) = match (&secret, tls.mode) {
        (Some(Ok(s)), ClientTlsMode::Mutual) => (Some(s.cert().cloned()), Some(s.key().cloned())),
        (Some(Err(e)), ClientTlsMode::Mutual) => (Some(Err(e.clone())), None),
        (None, ClientTlsMode::Mutual) => (
            Some(file(creds, tls.client_certificate.as_deref(), "clientCertificate")),
            Some(file(creds, tls.private_key.as_deref(), "privateKey")),
        ),
        _ => (None, None),
    };
    let ca = match (&tls.credential_name, &tls.ca_certificates) {
        (Some(name), _) => creds.secret_ca(name).cloned().map(Ok),
        (None, Some(path)) => Some(creds.file(path).cloned()),
        (None, None) => None,
    };
    let crl = match (&tls.ca_crl, &tls.credential_name) {
        (Some(path), _) => Some(creds.file(path).cloned()),
        (None, Some(name)) => creds.secret_crl(name).cloned().map(Ok),
        (None, None) => None,
    };
    for m in [&cert, &key, &ca, &crl] {
        material.push(m.as_ref().and_then(|r| r.as_ref().ok().cloned()));
    }
    if let (Some(Err(e)), ClientTlsMode::Simple) = (&secret, tls.mode)
        && ca.is_none()
    {
        // SIMPLE only needs the Secret for its CA; a missing Secret is still an error (as Istio's SDS).
        return Err(e.clone());
    }

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let (chain, names) = if tls.insecure_skip_verify {
        (None, Names::None)
    } else {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(pem) => {
                let pem = pem?;
                for c in certs(&pem, "caCertificates")? {
                    roots.add(c).map_err(|e| invalid("caCertificates", e.to_string()))?;
                }
            }
            None => roots = system_roots()?,
        }
        let mut builder = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if let Some(crl) = crl {
            let crl = crl?;
            let crls = CertificateRevocationListDer::pem_slice_iter(&crl)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid("caCrl", format!("not a PEM CRL: {e}")))?;
            if crls.is_empty() {
                return Err(invalid("caCrl", "no X509 CRL in the PEM data".into()));
            }
            builder = builder.with_crls(crls);
        }
        let chain = builder.build().map_err(|e| invalid("caCertificates", e.to_string()))?;
        let names = if !tls.subject_alt_names.is_empty() {
            let mut list = Vec::new();
            for san in &tls.subject_alt_names {
                match ServerName::try_from(san.to_string()) {
                    Ok(n) => list.push(n),
                    Err(_) => {
                        return Err(invalid(
                            "subjectAltNames",
                            format!(
                                "{san:?}: only DNS names and IP addresses can be verified (URI SANs are not supported)"
                            ),
                        ));
                    }
                }
            }
            Names::List(list)
        } else if tls.auto_san_validation {
            Names::ServerName
        } else {
            Names::None
        };
        (Some(chain), names)
    };
    // TCP has no request host: without SANs only the chain is verified.
    let tcp_names = match &names {
        Names::List(l) => Names::List(l.clone()),
        _ => Names::None,
    };
    let verifier: Arc<dyn ServerCertVerifier> =
        Arc::new(Verifier { chain: chain.clone(), names, provider: provider.clone() });
    let tcp_verifier: Arc<dyn ServerCertVerifier> =
        Arc::new(Verifier { chain, names: tcp_names, provider: provider.clone() });

    let client_auth = match (cert, key) {
        (Some(cert), Some(key)) => {
            let cert = cert?;
            let key = key?;
            let chain = certs(&cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| invalid("client private key", format!("not a PEM private key: {e}")))?;
            Some((chain, key))
        }
        (Some(cert), None) => {
            cert?;
            None
        }
        _ => None,
    };
    let make = |alpn: &[&[u8]], verifier: &Arc<dyn ServerCertVerifier>| -> Result<Arc<ClientConfig>, TlsError> {
        let b = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS versions", e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let mut c = match &client_auth {
            Some((chain, key)) => b
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| invalid("client certificate", e.to_string()))?,
            None => b.with_no_client_auth(),
        };
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(c))
    };
    Ok(Built { h1: make(&[b"http/1.1"], &verifier)?, h2: make(&[b"h2"], &verifier)?, tcp: make(&[], &tcp_verifier)? })
}

fn file(creds: &Credentials, path: Option<&str>, field: &'static str) -> Result<Pem, TlsError> {
    match path {
        Some(p) => creds.file(p).cloned(),
        None => Err(TlsError::Invalid {
            what: field.into(),
            message: "MUTUAL needs clientCertificate and privateKey (or credentialName)".into(),
        }),
    }
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid { what: what.into(), message: format!("not PEM certificates: {e}") })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid { what: what.into(), message: "no certificate in the PEM data".into() });
    }
    Ok(certs)
}

/// Where distributions keep the CA bundle (after `SSL_CERT_FILE`).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
];

/// The system's trust anchors (read once per process).
fn system_roots() -> Result<RootCertStore, TlsError> {
    static ROOTS: std::sync::OnceLock<Result<RootCertStore, String>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
            let candidates = env.into_iter().chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from));
            for path in candidates {
                let Ok(pem) = std::fs::read(&path) else { continue };
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).flatten());
                if added > 0 {
                    return Ok(roots);
                }
            }
            Err("no caCertificates given and no system CA bundle found (set SSL_CERT_FILE or give caCertificates)"
                .to_string())
        })
        .clone()
        .map_err(|message| TlsError::Invalid { what: "caCertificates".into(), message })
}

/// Which names the server certificate must carry.
#[derive(Debug)]
enum Names {
    /// The server name of the handshake (auto SAN validation).
    ServerName,
    /// Any of these (`subjectAltNames`).
    List(Vec<ServerName<'static>>),
    /// No name check (explicit `sni` without SANs, TCP).
    None,
}

#[derive(Debug)]
struct Verifier {
    /// Chain (and CRL) verification; `None`: `insecureSkipVerify`.
    chain: Option<Arc<WebPkiServerVerifier>>,
    names: Names,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        // The WebPKI verifier checks chain and revocation first, then the name: a name
        // mismatch alone means the chain is good, and the name is checked here instead.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(_) => {}
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        let cert = ParsedCertificate::try_from(end_entity)?;
        match &self.names {
            Names::None => {}
            Names::ServerName => verify_server_name(&cert, server_name)?,
            Names::List(list) => {
                if !list.iter().any(|n| verify_server_name(&cert, n).is_ok()) {
                    return Err(Error::InvalidCertificate(CertificateError::NotValidForName));
                }
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
