//! TLS material for the data path: certificates, private keys, CA bundles
//! and CRLs, from files the config names and from Kubernetes `Secret`
//! objects in the config directory (`credentialName`).
//!
//! [`Credentials`] is read when the config is loaded (never on the request
//! path) and kept with the runtime it was loaded for. The reload watcher also
//! watches every file named here, so a rotated certificate builds a new
//! runtime: new handshakes use it, open connections keep theirs.
//!
//! Secret lookup (`credentialName: NAME`): the Secret `NAME` in the node's
//! namespace, else the only Secret called `NAME` in any namespace. Keys read:
//! `tls.crt`/`cert`, `tls.key`/`key`, `ca.crt`/`cacert`, `ca.crl`/`crl`, from
//! `data` (base64) or `stringData`. A CA can also come from the Secret
//! `NAME-cacert`, as in Istio. Relative file paths are relative to the config
//! directory.

pub mod client;
pub mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use weir_api::types::OtherObject;
use weir_compile::Snapshot;

/// Bytes of one PEM file or Secret entry.
pub type Pem = Arc<[u8]>;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error(
        "credentialName {name:?}: no Secret of that name in namespace {namespace:?} (add a kubernetes.io/tls Secret \
         with tls.crt and tls.key to the config directory)"
    )]
    NoSecret { name: String, namespace: String },
    #[error(
        "credentialName {name:?}: Secrets of that name exist in several namespaces ({namespaces}) but not in {namespace:?}"
    )]
    AmbiguousSecret { name: String, namespace: String, namespaces: String },
    #[error("credentialName {name:?}: the Secret has no {what} (expected key {keys})")]
    MissingKey { name: String, what: &'static str, keys: &'static str },
    #[error("cannot read {path}: {message}")]
    File { path: String, message: String },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

/// One Kubernetes Secret as TLS material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secret {
    pub namespace: String,
    pub name: String,
    pub cert: Option<Pem>,
    pub key: Option<Pem>,
    pub ca: Option<Pem>,
    pub crl: Option<Pem>,
}

impl Secret {
    /// The certificate chain, or an error naming the missing key.
    pub fn cert(&self) -> Result<&Pem, TlsError> {
        self.cert.as_ref().ok_or_else(|| TlsError::MissingKey {
            name: self.name.clone(),
            what: "certificate",
            keys: "tls.crt or cert",
        })
    }
    /// The private key, or an error naming the missing key.
    pub fn key(&self) -> Result<&Pem, TlsError> {
        self.key.as_ref().ok_or_else(|| TlsError::MissingKey {
            name: self.name.clone(),
            what: "private key",
            keys: "tls.key or key",
        })
    }
}

/// Every Secret of the config and every TLS file the snapshot names, read at load time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The node's namespace (Secrets there win).
    namespace: String,
    /// (name, namespace) -> Secret.
    secrets: BTreeMap<(String, String), Arc<Secret>>,
    /// Path as written in the config -> contents or the read error.
    files: BTreeMap<String, Result<Pem, String>>,
    /// Where relative paths point.
    base: PathBuf,
}

impl Credentials {
    /// Reads the Secrets among `others` and every certificate, key, CA and CRL
    /// file `snapshot` names. Problems are returned as warnings (the listener or
    /// cluster that needs the material fails its handshakes and says why).
    pub fn load(
        others: &[OtherObject],
        snapshot: &Snapshot,
        namespace: &str,
        config_dir: &Path,
    ) -> (Credentials, Vec<String>) {
        let mut warnings = Vec::new();
        let base = if config_dir.is_dir() {
            config_dir.to_path_buf()
        } else {
            config_dir.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let mut creds = Credentials { namespace: namespace.to_string(), base, ..Credentials::default() };
        for o in others.iter().filter(|o| o.kind == "Secret") {
            match decode_secret(o) {
                Ok(s) => {
                    creds.secrets.insert((s.name.clone(), s.namespace.clone()), Arc::new(s));
                }
                Err(e) => warnings.push(format!("{}: Secret {}/{}: {e}", o.origin, o.namespace, o.name)),
            }
        }
        for path in referenced_files(snapshot) {
            let full = creds.resolve(&path);
            let read = std::fs::read(&full).map(Pem::from).map_err(|e| e.to_string());
            if let Err(e) = &read {
                warnings.push(format!("cannot read TLS file {}: {e}", full.display()));
            }
            creds.files.insert(path, read);
        }
        (creds, warnings)
    }

    /// An empty set (no Secrets, no files).
    pub fn empty() -> Credentials {
        Credentials::default()
    }

    /// The Secret for `credentialName: name` (see the module docs for the lookup).
    pub fn secret(&self, name: &str) -> Result<&Arc<Secret>, TlsError> {
        if let Some(s) = self.secrets.get(&(name.to_string(), self.namespace.clone())) {
            return Ok(s);
        }
        let mut same_name = self.secrets.range((name.to_string(), String::new())..).take_while(|((n, _), _)| n == name);
        match (same_name.next(), same_name.next()) {
            (Some((_, s)), None) => Ok(s),
            (None, _) => Err(TlsError::NoSecret { name: name.into(), namespace: self.namespace.clone() }),
            (Some(_), Some(_)) => Err(TlsError::AmbiguousSecret {
                name: name.into(),
                namespace: self.namespace.clone(),
                namespaces: self
                    .secrets
                    .keys()
                    .filter(|(n, _)| n == name)
                    .map(|(_, ns)| ns.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The CA bundle for `credentialName: name`: the Secret's own `ca.crt`, else the
    /// Secret `name-cacert` (Istio's convention); `None` when neither has one.
    pub fn secret_ca(&self, name: &str) -> Option<&Pem> {
        if let Some(ca) = self.secret(name).ok().and_then(|s| s.ca.as_ref()) {
            return Some(ca);
        }
        let cacert = format!("{name}-cacert");
        self.secret(&cacert).ok().and_then(|s| s.ca.as_ref().or(s.cert.as_ref()))
    }

    /// The CRL for `credentialName: name`, if its Secret has one.
    pub fn secret_crl(&self, name: &str) -> Option<&Pem> {
        self.secret(name).ok().and_then(|s| s.crl.as_ref())
    }

    /// The contents of a file named in the config (as written there).
    pub fn file(&self, path: &str) -> Result<&Pem, TlsError> {
        match self.files.get(path) {
            Some(Ok(b)) => Ok(b),
            Some(Err(message)) => {
                Err(TlsError::File { path: self.resolve(path).display().to_string(), message: message.clone() })
            }
            None => Err(TlsError::File {
                path: self.resolve(path).display().to_string(),
                message: "not loaded (the file is not named by the compiled config)".into(),
            }),
        }
    }

    /// Every file read (resolved paths), for the reload watcher.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.files.keys().map(|p| self.resolve(p)).collect()
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() { p.to_path_buf() } else { self.base.join(p) }
    }
}

/// Every TLS file path the snapshot names (gateway servers and DestinationRule `tls`).
fn referenced_files(snapshot: &Snapshot) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |p: &Option<weir_compile::model::Str>| {
        if let Some(p) = p.as_deref().filter(|p| !p.is_empty()) {
            out.insert(p.to_string());
        }
    };
    for l in &snapshot.listeners {
        for c in &l.filter_chains {
            if let Some(t) = &c.tls {
                for cert in &t.certificates {
                    add(&Some(cert.certificate.clone()));
                    add(&Some(cert.private_key.clone()));
                }
                add(&t.ca_certificates);
                add(&t.ca_crl);
            }
        }
    }
    for c in &snapshot.clusters {
        if let Some(t) = &c.policy.tls {
            add(&t.client_certificate);
            add(&t.private_key);
            add(&t.ca_certificates);
            add(&t.ca_crl);
        }
    }
    out
}

/// Reads the TLS entries of a Secret object (`data` base64, `stringData` plain).
fn decode_secret(o: &OtherObject) -> Result<Secret, String> {
    let mut entries: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    if let Some(data) = o.raw.get("data").and_then(|d| d.as_object()) {
        for (k, v) in data {
            let text = v.as_str().ok_or_else(|| format!("data.{k}: expected a base64 string"))?;
            let compact: String = text.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(|e| format!("data.{k}: not valid base64: {e}"))?;
            entries.insert(k, bytes);
        }
    }
    if let Some(data) = o.raw.get("stringData").and_then(|d| d.as_object()) {
        for (k, v) in data {
            let text = v.as_str().ok_or_else(|| format!("stringData.{k}: expected a string"))?;
            entries.insert(k, text.as_bytes().to_vec());
        }
    }
    let pick = |keys: &[&str]| keys.iter().find_map(|k| entries.get(k)).map(|b| Pem::from(b.as_slice()));
    Ok(Secret {
        namespace: o.namespace.clone(),
        name: o.name.clone(),
        cert: pick(&["tls.crt", "cert"]),
        key: pick(&["tls.key", "key"]),
        ca: pick(&["ca.crt", "cacert"]),
        crl: pick(&["ca.crl", "crl"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::types::Origin;

    fn secret(ns: &str, name: &str, raw: serde_json::Value) -> OtherObject {
        OtherObject {
            api_version: "v1".into(),
            kind: "Secret".into(),
            name: name.into(),
            namespace: ns.into(),
            raw,
            origin: Origin::default(),
        }
    }

    #[test]
    fn secrets_decode_and_resolve_by_namespace() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let others = vec![
            secret("istio-system", "gw", serde_json::json!({"data": {"tls.crt": b64("CERT"), "tls.key": b64("KEY")}})),
            secret("istio-system", "gw-cacert", serde_json::json!({"stringData": {"ca.crt": "CA"}})),
            secret("a", "dup", serde_json::json!({"stringData": {"cert": "A"}})),
            secret("b", "dup", serde_json::json!({"stringData": {"cert": "B"}})),
        ];
        let (c, warnings) = Credentials::load(&others, &Snapshot::default(), "default", Path::new("."));
        assert!(warnings.is_empty(), "{warnings:?}");
        let gw = c.secret("gw").unwrap();
        assert_eq!(&**gw.cert().unwrap(), b"CERT");
        assert_eq!(&**gw.key().unwrap(), b"KEY");
        assert_eq!(c.secret_ca("gw").map(|b| &**b), Some(&b"CA"[..]));
        assert!(matches!(c.secret("nope"), Err(TlsError::NoSecret { .. })));
        assert!(matches!(c.secret("dup"), Err(TlsError::AmbiguousSecret { .. })));
        let (c, _) = Credentials::load(&others, &Snapshot::default(), "a", Path::new("."));
        assert_eq!(&**c.secret("dup").unwrap().cert().unwrap(), b"A");
    }

    #[test]
    fn bad_base64_is_a_warning() {
        let others = vec![secret("default", "x", serde_json::json!({"data": {"tls.crt": "%%%"}}))];
        let (c, warnings) = Credentials::load(&others, &Snapshot::default(), "default", Path::new("."));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("data.tls.crt: not valid base64"), "{warnings:?}");
        assert!(c.secret("x").is_err());
    }
}
