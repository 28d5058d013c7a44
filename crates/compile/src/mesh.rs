//! Mesh-wide defaults (Istio's MeshConfig), with Istio's default values.
//!
//! Read from `weir-mesh.yaml` at the root of a config directory: the same
//! YAML as the `mesh` key of Istio's `istio` ConfigMap, restricted to the
//! fields that affect traffic management. Unknown fields are errors.

use std::path::Path;

use serde::{Deserialize, Serialize};
use weir_api::types::{Duration, HttpRetry, LocalityLoadBalancerSetting};

/// The file name weir reads the mesh config from, in the config directory.
pub const MESH_FILE: &str = weir_api::load::MESH_CONFIG_FILE;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MeshConfig {
    /// Namespace whose DestinationRules and Sidecars apply mesh-wide.
    #[serde(alias = "root_namespace")]
    pub root_namespace: String,
    #[serde(alias = "trust_domain")]
    pub trust_domain: String,
    /// Upstream connect timeout when no DestinationRule sets one.
    #[serde(alias = "connect_timeout")]
    pub connect_timeout: Duration,
    #[serde(alias = "outbound_traffic_policy")]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Retry policy of routes that set none (Istio's built-in default when absent).
    #[serde(alias = "default_http_retry_policy")]
    pub default_http_retry_policy: Option<HttpRetry>,
    #[serde(alias = "default_service_export_to")]
    pub default_service_export_to: Vec<String>,
    #[serde(alias = "default_virtual_service_export_to")]
    pub default_virtual_service_export_to: Vec<String>,
    #[serde(alias = "default_destination_rule_export_to")]
    pub default_destination_rule_export_to: Vec<String>,
    #[serde(alias = "locality_lb_setting")]
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// Re-resolution interval for DNS services when a lookup fails.
    #[serde(alias = "dns_refresh_rate")]
    pub dns_refresh_rate: Duration,
    #[serde(alias = "enable_auto_mtls")]
    pub enable_auto_mtls: Option<bool>,
    /// How request paths are normalized before routing.
    #[serde(alias = "path_normalization")]
    pub path_normalization: ProxyPathNormalization,
}

/// MeshConfig `pathNormalization`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyPathNormalization {
    pub normalization: PathNormalizationSetting,
}

/// `pathNormalization.normalization`; `DEFAULT` is `BASE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalizationSetting {
    #[default]
    Default,
    None,
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

impl ProxyPathNormalization {
    pub fn mode(&self) -> crate::model::PathNormalization {
        use crate::model::PathNormalization as P;
        match self.normalization {
            PathNormalizationSetting::None => P::None,
            PathNormalizationSetting::Default | PathNormalizationSetting::Base => P::Base,
            PathNormalizationSetting::MergeSlashes => P::MergeSlashes,
            PathNormalizationSetting::DecodeAndMergeSlashes => P::DecodeAndMergeSlashes,
        }
    }
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            root_namespace: "istio-system".into(),
            trust_domain: "cluster.local".into(),
            connect_timeout: Duration::from_secs(10),
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
            default_http_retry_policy: None,
            default_service_export_to: vec!["*".into()],
            default_virtual_service_export_to: vec!["*".into()],
            default_destination_rule_export_to: vec!["*".into()],
            locality_lb_setting: Some(LocalityLoadBalancerSetting { enabled: Some(true), ..Default::default() }),
            dns_refresh_rate: Duration::from_secs(60),
            enable_auto_mtls: Some(true),
            path_normalization: ProxyPathNormalization::default(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutboundTrafficPolicy {
    pub mode: OutboundMode,
}

/// MeshConfig's outbound mode (its default is ALLOW_ANY, unlike the Sidecar proto's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    RegistryOnly,
    #[default]
    AllowAny,
}

#[derive(Debug, thiserror::Error)]
pub enum MeshConfigError {
    #[error("{path}: cannot read: {message}")]
    Io { path: String, message: String },
    #[error(transparent)]
    Decode(#[from] weir_api::DocumentError),
}

impl MeshConfig {
    /// Parses mesh config YAML; fields left out keep Istio's defaults.
    pub fn parse(text: &str, file: &str) -> Result<MeshConfig, MeshConfigError> {
        Ok(weir_api::decode_document::<MeshConfig>(text, file)?)
    }

    /// `DIR/weir-mesh.yaml` when it exists, else the defaults.
    pub fn from_dir(dir: &Path) -> Result<MeshConfig, MeshConfigError> {
        let path = dir.join(MESH_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => MeshConfig::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MeshConfig::default()),
            Err(e) => Err(MeshConfigError::Io { path: path.display().to_string(), message: e.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_istios() {
        let m = MeshConfig::default();
        assert_eq!(m.connect_timeout, Duration::from_secs(10));
        assert_eq!(m.outbound_traffic_policy.mode, OutboundMode::AllowAny);
        assert_eq!(m.root_namespace, "istio-system");
        assert_eq!(m.path_normalization.mode(), crate::model::PathNormalization::Base);
    }

    #[test]
    fn path_normalization_settings() {
        use crate::model::PathNormalization as P;
        for (text, want) in [
            ("DEFAULT", P::Base),
            ("NONE", P::None),
            ("BASE", P::Base),
            ("MERGE_SLASHES", P::MergeSlashes),
            ("DECODE_AND_MERGE_SLASHES", P::DecodeAndMergeSlashes),
        ] {
            let m = MeshConfig::parse(&format!("pathNormalization: {{normalization: {text}}}\n"), "m.yaml").unwrap();
            assert_eq!(m.path_normalization.mode(), want, "{text}");
        }
        assert!(MeshConfig::parse("pathNormalization: {normalization: SOMETIMES}\n", "m.yaml").is_err());
        // The setting reaches the snapshot the data path reads, and the dump names it only when
        // it is not Istio's default.
        let mesh = MeshConfig::parse("pathNormalization: {normalization: NONE}\n", "m.yaml").unwrap();
        let snap = crate::listener::testing::compile_with("", &crate::Node::default(), &mesh);
        assert_eq!(snap.path_normalization, P::None);
        assert!(serde_json::to_string(&snap).unwrap().contains(r#""path_normalization":"NONE""#));
        let snap = crate::listener::testing::compile("", &crate::Node::default());
        assert!(!serde_json::to_string(&snap).unwrap().contains("path_normalization"));
    }

    #[test]
    fn parse_overrides_and_rejects_unknown_fields() {
        let m = MeshConfig::parse(
            "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\nconnectTimeout: 2s\ndefaultHttpRetryPolicy: {attempts: 1}\n",
            "m.yaml",
        )
        .unwrap();
        assert_eq!(m.outbound_traffic_policy.mode, OutboundMode::RegistryOnly);
        assert_eq!(m.connect_timeout, Duration::from_secs(2));
        assert_eq!(m.default_http_retry_policy.unwrap().attempts, 1);
        assert_eq!(m.root_namespace, "istio-system");
        let e = MeshConfig::parse("enableTracing: true\n", "m.yaml").unwrap_err();
        assert!(e.to_string().contains("enableTracing"), "{e}");
    }
}
