//! Shared by the commands that compile: read a config directory into a
//! store, mesh config and registry, and build the node from flags.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use weir_api::LoadOptions;
use weir_compile::message::Messages;
use weir_compile::{ConfigStore, MeshConfig, Node, Registry, Role};

/// Node identity flags shared by `proxy-config`, `explain` and (later) `run`.
#[derive(clap::Args, Clone, Debug)]
pub struct NodeArgs {
    /// Namespace of the proxy's workload.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Workload labels, `k=v,k2=v2` (Gateway and Sidecar selectors match these).
    #[arg(long, default_value = "istio=ingressgateway")]
    pub labels: String,
    /// What the node serves: Gateways, sidecar outbound traffic, or both.
    #[arg(long, default_value = "both", value_parser = ["gateway", "sidecar", "both"])]
    pub role: String,
    /// Kubernetes cluster domain used to expand short names.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Locality of the node, `region/zone/subzone` (zone and subzone optional), for
    /// locality load balancing (failover priorities and `distribute`).
    #[arg(long)]
    pub locality: Option<String>,
}

impl NodeArgs {
    pub fn node(&self) -> anyhow::Result<Node> {
        let mut labels = BTreeMap::new();
        for kv in self.labels.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((k, v)) = kv.split_once('=') else { bail!("--labels: {kv:?} is not key=value") };
            labels.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(Node {
            namespace: self.namespace.clone(),
            labels,
            role: Role::parse(&self.role).unwrap_or_default(),
            cluster_domain: self.cluster_domain.clone(),
            locality: match self.locality.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(l) if l.split('/').count() > 3 || l.split('/').any(str::is_empty) => {
                    bail!("--locality: {l:?} is not region/zone/subzone")
                }
                Some(l) => Some(l.to_string()),
            },
        })
    }
}

/// A config directory, loaded.
pub struct Config {
    pub store: ConfigStore,
    pub mesh: MeshConfig,
    pub registry: Registry,
}

/// Loads `dir`; unreadable or unparsable files are an error, invalid
/// objects are reported on stderr and left out (as Kubernetes would refuse them).
pub fn load(dir: &Path, node: &Node) -> anyhow::Result<Config> {
    let loaded = weir_api::load_paths(&[dir], &LoadOptions { default_namespace: "default".into() });
    if let Some(e) = loaded.errors.first() {
        bail!("{e}");
    }
    let checked = weir_api::check::check(&loaded);
    for r in checked.findings.iter().filter(|r| r.severity == weir_api::Severity::Error) {
        eprintln!(
            "warning: ignoring invalid {} {}/{}: {}:{}: {}: {}",
            r.kind, r.namespace, r.name, r.file, r.line, r.path, r.message
        );
    }
    let mesh = if dir.is_dir() { MeshConfig::from_dir(dir).context("mesh config")? } else { MeshConfig::default() };
    let store = ConfigStore::from_loaded(&loaded);
    let registry = Registry::from_config(&store, &mesh, node, &mut Messages::default());
    Ok(Config { store, mesh, registry })
}
