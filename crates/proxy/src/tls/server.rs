//! TLS termination for gateway servers (`tls.mode` SIMPLE, MUTUAL and
//! OPTIONAL_MUTUAL): one rustls `ServerConfig` per terminating filter chain,
//! built once per runtime from the chain's [`ServerTls`] and the runtime's
//! [`Credentials`].
//!
//! - Certificates: every `credentialName`/`credentialNames` Secret and every
//!   `serverCertificate`/`privateKey` or `tlsCertificates` pair. With several
//!   (an RSA and an ECDSA certificate side by side) the handshake uses the
//!   first whose key can sign with a scheme the client offers.
//! - Client certificates (MUTUAL: required; OPTIONAL_MUTUAL: verified when
//!   sent) are verified against the CA (`caCertificates`, the Secret's
//!   `ca.crt`, or the Secret `<name>-cacert`) and its CRL, then against
//!   `subjectAltNames` (any SAN equal to one listed), `verifyCertificateSpki`
//!   (base64 SHA-256 of the SubjectPublicKeyInfo) and `verifyCertificateHash`
//!   (hex SHA-256 of the certificate, colons optional), as Envoy does.
//! - Versions: rustls speaks TLS 1.2 and 1.3 only; `minProtocolVersion`
//!   TLSV1_0/TLSV1_1 therefore mean TLS 1.2, and a maximum below 1.2 is an
//!   error. Default: 1.2 to 1.3 (Istio's gateway default).
//! - `cipherSuites` (OpenSSL names, as Envoy takes them) restrict the TLS 1.2
//!   suites; TLS 1.3 suites are not configurable (as in Envoy).
//! - ALPN: `h2` and `http/1.1` on HTTP chains, none on TCP chains.
//!
//! A chain whose material cannot be used gets a [`ServerTlsError`]; its
//! handshakes are reset and the error is shown in `/config_dump`.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use weir_compile::model::ServerTls;

use super::{Credentials, TlsError};

/// Why a chain cannot terminate TLS. Shown in logs and `/config_dump`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServerTlsError {
    #[error(transparent)]
    Material(#[from] TlsError),
    #[error(
        "no server certificate: set credentialName (a kubernetes.io/tls Secret), credentialNames, \
         serverCertificate and privateKey, or tlsCertificates"
    )]
    NoCertificate,
    #[error("{source_name}: {message}")]
    Certificate { source_name: String, message: String },
    #[error(
        "tls.mode {mode} needs a CA to verify client certificates: set caCertificates, add ca.crt to the Secret \
         {credential:?}, or add the Secret {credential:?}-cacert"
    )]
    NoCa { mode: String, credential: String },
    #[error("CA certificates {source_name}: {message}")]
    Ca { source_name: String, message: String },
    #[error("tls.mode {0} cannot terminate TLS at a weir gateway (ISTIO_MUTUAL needs workload certificates)")]
    Mode(String),
    #[error(
        "maxProtocolVersion {0} is below TLS 1.2; weir (rustls) only speaks TLS 1.2 and 1.3: use TLSV1_2 or TLSV1_3"
    )]
    Version(String),
    #[error("minProtocolVersion {min} is above maxProtocolVersion {max}")]
    VersionOrder { min: String, max: String },
    #[error(
        "cipherSuites: none of {0} is supported; supported: ECDHE-ECDSA-AES128-GCM-SHA256, \
         ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, \
         ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-CHACHA20-POLY1305"
    )]
    Ciphers(String),
    #[error("building the TLS configuration: {0}")]
    Rustls(String),
}

fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Builds the rustls configuration of a terminating chain. `http`: offer ALPN `h2` and `http/1.1`.
pub fn server_config(tls: &ServerTls, creds: &Credentials, http: bool) -> Result<Arc<ServerConfig>, ServerTlsError> {
    let mode = &*tls.mode;
    let (verify_client, mandatory) = match mode {
        "" | "SIMPLE" => (false, false),
        "MUTUAL" => (true, true),
        "OPTIONAL_MUTUAL" => (true, false),
        other => return Err(ServerTlsError::Mode(other.to_string())),
    };
    let mut provider = provider();
    if !tls.cipher_suites.is_empty() {
        let wanted: Vec<&str> = tls
            .cipher_suites
            .iter()
            .flat_map(|s| s.trim_matches(|c| c == '[' || c == ']').split('|'))
            .map(str::trim)
            .collect();
        let suites = &provider.cipher_suites;
        let mut kept: Vec<rustls::SupportedCipherSuite> =
            suites.iter().filter(|s| s.version() == &rustls::version::TLS13).copied().collect();
        let tls12: Vec<rustls::SupportedCipherSuite> = wanted
            .iter()
            .filter_map(|name| openssl_suite(name))
            .filter_map(|id| suites.iter().find(|s| s.suite() == id).copied())
            .collect();
        if tls12.is_empty() {
            return Err(ServerTlsError::Ciphers(tls.cipher_suites.join(", ")));
        }
        kept.extend(tls12);
        provider.cipher_suites = kept;
    }
    let provider = Arc::new(provider);
    let versions = versions(&tls.min_protocol_version, &tls.max_protocol_version)?;

    let keys = certified_keys(tls, creds, &provider)?;
    let resolver = Arc::new(Certificates(keys));

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| ServerTlsError::Rustls(e.to_string()))?;
    let builder = if verify_client {
        let verifier = client_verifier(tls, creds, &provider, mandatory)?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(resolver);
    if http {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    Ok(Arc::new(config))
}

/// TLS 1.2 cipher suites by their OpenSSL (Envoy) names.
fn openssl_suite(name: &str) -> Option<rustls::CipherSuite> {
    use rustls::CipherSuite as C;
    Some(match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256" => C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES256-GCM-SHA384" => C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305" => C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        _ => return None,
    })
}

fn versions(min: &str, max: &str) -> Result<&'static [&'static rustls::SupportedProtocolVersion], ServerTlsError> {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static ONLY12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    // 0: below 1.2 (served as 1.2), 2: TLS 1.2, 3: TLS 1.3.
    let rank = |v: &str| match v {
        "TLSV1_0" | "TLSV1_1" => Some(0),
        "TLSV1_2" => Some(2),
        "TLSV1_3" => Some(3),
        _ => None, // TLS_AUTO or unset
    };
    let lo = rank(min).unwrap_or(2).max(2);
    let hi = match rank(max) {
        Some(0) => return Err(ServerTlsError::Version(max.to_string())),
        Some(h) => h,
        None => 3,
    };
    match (lo, hi) {
        (2, 3) => Ok(&BOTH),
        (3, 3) => Ok(&ONLY13),
        (2, 2) => Ok(&ONLY12),
        _ => Err(ServerTlsError::VersionOrder { min: min.to_string(), max: max.to_string() }),
    }
}

fn certified_keys(
    tls: &ServerTls,
    creds: &Credentials,
    provider: &CryptoProvider,
) -> Result<Vec<Arc<CertifiedKey>>, ServerTlsError> {
    let mut out = Vec::new();
    for name in &tls.credential_names {
        let secret = creds.secret(name)?;
        let source = format!("credentialName {name:?}");
        out.push(certified_key(&source, secret.cert()?, secret.key()?, provider)?);
    }
    for files in &tls.certificates {
        let source = format!("serverCertificate {} / privateKey {}", files.certificate, files.private_key);
        out.push(certified_key(&source, creds.file(&files.certificate)?, creds.file(&files.private_key)?, provider)?);
    }
    if out.is_empty() {
        return Err(ServerTlsError::NoCertificate);
    }
    Ok(out)
}

fn certified_key(
    source: &str,
    cert: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, ServerTlsError> {
    let err = |message: String| ServerTlsError::Certificate { source_name: source.to_string(), message };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("the certificate is not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(err("no CERTIFICATE block in the certificate PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| err(format!("the private key is not valid PEM: {e}")))?;
    let ck = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| err(format!("the private key cannot be used with the certificate: {e}")))?;
    Ok(Arc::new(ck))
}

/// The chain's certificates; the first whose key fits the client's signature schemes wins.
#[derive(Debug)]
struct Certificates(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0.iter().find(|k| k.key.choose_scheme(schemes).is_some()).or_else(|| self.0.first()).cloned()
    }
}

fn client_verifier(
    tls: &ServerTls,
    creds: &Credentials,
    provider: &Arc<CryptoProvider>,
    mandatory: bool,
) -> Result<Arc<dyn ClientCertVerifier>, ServerTlsError> {
    let first = tls.credential_names.first();
    let (source, ca) = match (&tls.ca_certificates, first) {
        (Some(path), _) => (format!("caCertificates {path}"), creds.file(path)?.clone()),
        (None, Some(name)) => match creds.secret_ca(name) {
            Some(ca) => (format!("credentialName {name:?}"), ca.clone()),
            None => return Err(ServerTlsError::NoCa { mode: tls.mode.to_string(), credential: name.to_string() }),
        },
        (None, None) => {
            return Err(ServerTlsError::NoCa { mode: tls.mode.to_string(), credential: "(none)".into() });
        }
    };
    let ca_err = |message: String| ServerTlsError::Ca { source_name: source.clone(), message };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        let cert = cert.map_err(|e| ca_err(format!("not valid PEM: {e}")))?;
        roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_err("no CERTIFICATE block".into()));
    }
    let crl = match (&tls.ca_crl, first) {
        (Some(path), _) => Some(creds.file(path)?.clone()),
        (None, Some(name)) => creds.secret_crl(name).cloned(),
        (None, None) => None,
    };
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(crl) = crl {
        let crls: Vec<CertificateRevocationListDer<'static>> = CertificateRevocationListDer::pem_slice_iter(&crl)
            .collect::<Result<_, _>>()
            .map_err(|e| ServerTlsError::Ca { source_name: source.clone(), message: format!("CRL: {e}") })?;
        builder = builder.with_crls(crls).allow_unknown_revocation_status();
    }
    if !mandatory {
        builder = builder.allow_unauthenticated();
    }
    let inner = builder.build().map_err(|e| ca_err(e.to_string()))?;
    if tls.subject_alt_names.is_empty()
        && tls.verify_certificate_spki.is_empty()
        && tls.verify_certificate_hash.is_empty()
    {
        return Ok(inner);
    }
    let hashes = tls
        .verify_certificate_hash
        .iter()
        .map(|h| h.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase())
        .collect();
    Ok(Arc::new(Pinned {
        inner,
        sans: tls.subject_alt_names.iter().map(|s| s.to_string()).collect(),
        spki: tls.verify_certificate_spki.iter().map(|s| s.to_string()).collect(),
        hashes,
    }))
}

/// Envoy's extra client-certificate checks on top of chain verification.
#[derive(Debug)]
struct Pinned {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<String>,
    spki: Vec<String>,
    /// Lower-case hex without colons.
    hashes: Vec<String>,
}

/// SHA-256 through rustls's provider (the hash of a TLS 1.3 SHA-256 suite).
fn sha256(data: &[u8]) -> Vec<u8> {
    match rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256.tls13() {
        Some(suite) => suite.common.hash_provider.hash(data).as_ref().to_vec(),
        None => Vec::new(),
    }
}

impl Pinned {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), String> {
        let info = der::parse_certificate(cert).ok_or("the client certificate cannot be parsed")?;
        if !self.sans.is_empty() && !info.sans.iter().any(|s| self.sans.contains(s)) {
            return Err(format!("no subject alt name of the client certificate is one of {}", self.sans.join(", ")));
        }
        // Envoy: the certificate passes when it matches either list (when both are set).
        if !self.spki.is_empty() || !self.hashes.is_empty() {
            use base64::Engine;
            let spki = base64::engine::general_purpose::STANDARD.encode(sha256(info.spki));
            let hash: String = sha256(cert.as_ref()).iter().map(|b| format!("{b:02x}")).collect();
            if !self.spki.contains(&spki) && !self.hashes.contains(&hash) {
                return Err("the client certificate matches no verifyCertificateSpki or verifyCertificateHash".into());
            }
        }
        Ok(())
    }
}

impl ClientCertVerifier for Pinned {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        self.check(end_entity).map_err(|message| {
            tracing::debug!(reason = %message, "client certificate rejected");
            rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
        })?;
        Ok(ok)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Just enough DER to read a certificate's SubjectPublicKeyInfo and subject alt names.
mod der {
    pub struct CertInfo<'a> {
        /// The whole SubjectPublicKeyInfo element (tag and length included).
        pub spki: &'a [u8],
        /// DNS names, URIs, e-mail addresses and IP addresses (as text).
        pub sans: Vec<String>,
    }

    /// One DER element: its tag, the whole element and its contents.
    #[derive(Clone, Copy)]
    struct Tlv<'a> {
        tag: u8,
        whole: &'a [u8],
        inner: &'a [u8],
    }

    /// The first element of `input` and what follows it.
    fn tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
        let tag = *input.first()?;
        let first = *input.get(1)?;
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | usize::from(*input.get(2 + i)?);
            }
            (len, 2 + n)
        };
        let end = header.checked_add(len)?;
        if input.len() < end {
            return None;
        }
        Some((Tlv { tag, whole: &input[..end], inner: &input[header..end] }, &input[end..]))
    }

    /// The elements of a SEQUENCE's contents.
    fn items(mut contents: &[u8]) -> Option<Vec<Tlv<'_>>> {
        let mut out = Vec::new();
        while !contents.is_empty() {
            let (t, rest) = tlv(contents)?;
            out.push(t);
            contents = rest;
        }
        Some(out)
    }

    const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];

    pub fn parse_certificate(der: &[u8]) -> Option<CertInfo<'_>> {
        let cert = tlv(der)?.0.inner;
        let tbs = tlv(cert)?.0.inner;
        let fields = items(tbs)?;
        // [0] version is optional; then serial, signature, issuer, validity, subject, spki.
        let skip = usize::from(fields.first()?.tag == 0xa0);
        let spki = fields.get(skip + 5)?.whole;
        let mut sans = Vec::new();
        if let Some(exts) = fields.iter().find(|f| f.tag == 0xa3) {
            let list = tlv(exts.inner)?.0.inner;
            for ext in items(list)? {
                let parts = items(ext.inner)?;
                if parts.first()?.inner != SAN_OID {
                    continue;
                }
                let names = tlv(parts.last()?.inner)?.0.inner;
                for name in items(names)? {
                    let v = name.inner;
                    match name.tag {
                        0x81 | 0x82 | 0x86 => sans.push(String::from_utf8_lossy(v).into_owned()),
                        0x87 => match v.len() {
                            4 => sans.push(std::net::Ipv4Addr::new(v[0], v[1], v[2], v[3]).to_string()),
                            16 => {
                                let mut b = [0u8; 16];
                                b.copy_from_slice(v);
                                sans.push(std::net::Ipv6Addr::from(b).to_string());
                            }
                            _ => {}
                        },
                        _ => {}
                    }
                }
            }
        }
        Some(CertInfo { spki, sans })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_compile::model::CertificateFiles;

    fn ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (rcgen::Issuer::new(params, key), cert.pem())
    }

    #[test]
    fn der_reads_sans_and_spki() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".to_string()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI("spiffe://cluster.local/ns/a/sa/b".try_into().unwrap()));
        params.subject_alt_names.push(rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap()));
        let cert = params.self_signed(&key).unwrap();
        let info = der::parse_certificate(cert.der()).unwrap();
        assert_eq!(info.sans, ["a.example.com", "spiffe://cluster.local/ns/a/sa/b", "10.1.2.3"]);
        assert_eq!(info.spki, rcgen::PublicKeyData::subject_public_key_info(&key));
    }

    #[test]
    fn configs_build_and_errors_say_what_to_fix() {
        let (issuer, ca_pem) = ca();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.com".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
        let dir = std::env::temp_dir().join(format!("weir-tls-server-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("a.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
        let mut tls = ServerTls {
            mode: "SIMPLE".into(),
            certificates: vec![CertificateFiles { certificate: "a.crt".into(), private_key: "a.key".into() }],
            ..ServerTls::default()
        };
        let mut l = weir_compile::model::Listener {
            name: "l".into(),
            role: weir_compile::model::ListenerRole::Gateway,
            bind: weir_compile::model::BindScope::Gateway,
            address: None,
            port: 443,
            filter_chains: vec![weir_compile::model::FilterChain {
                name: "c".into(),
                matcher: Default::default(),
                tls: Some(ServerTls { ca_certificates: Some("ca.crt".into()), ..tls.clone() }),
                action: weir_compile::model::ChainAction::AutoPassthrough,
            }],
            origins: vec![],
        };
        l.filter_chains[0].tls.as_mut().unwrap().mode = "MUTUAL".into();
        let snap = weir_compile::Snapshot { listeners: vec![l], ..Default::default() };
        let (creds, warnings) = Credentials::load(&[], &snap, "default", &dir);
        assert!(warnings.is_empty(), "{warnings:?}");
        let c = server_config(&tls, &creds, true).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        tls.mode = "MUTUAL".into();
        let e = server_config(&tls, &creds, false).unwrap_err();
        assert!(e.to_string().contains("needs a CA"), "{e}");
        tls.ca_certificates = Some("ca.crt".into());
        tls.subject_alt_names = vec!["client.a.com".into()];
        server_config(&tls, &creds, false).unwrap();
        tls.max_protocol_version = "TLSV1_1".into();
        assert!(matches!(server_config(&tls, &creds, false), Err(ServerTlsError::Version(_))));
        tls.max_protocol_version = "".into();
        tls.cipher_suites = vec!["AES128-SHA".into()];
        assert!(matches!(server_config(&tls, &creds, false), Err(ServerTlsError::Ciphers(_))));
        tls.cipher_suites = vec!["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]".into()];
        server_config(&tls, &creds, false).unwrap();
        let none = ServerTls { mode: "SIMPLE".into(), ..ServerTls::default() };
        assert_eq!(server_config(&none, &creds, true).unwrap_err(), ServerTlsError::NoCertificate);
        let missing =
            ServerTls { mode: "SIMPLE".into(), credential_names: vec!["nope".into()], ..ServerTls::default() };
        assert!(server_config(&missing, &creds, true).unwrap_err().to_string().contains("no Secret"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
