//! `weir explain`: simulate one request against a node's compiled snapshot.

use std::path::Path;

use anyhow::bail;
use weir_compile::explain::{SimRequest, explain};

use super::config::{self, NodeArgs};

pub fn run(dir: &Path, node: &NodeArgs, method: &str, headers: &[String], url: &str) -> anyhow::Result<u8> {
    let node = node.node()?;
    let mut hs = Vec::new();
    for h in headers {
        let Some((k, v)) = h.split_once(':') else { bail!("-H {h:?}: expected 'name: value'") };
        hs.push((k.trim().to_string(), v.trim().to_string()));
    }
    let req = SimRequest::from_url(method, url, hs).map_err(anyhow::Error::msg)?;
    let cfg = config::load(dir, &node)?;
    let snap = weir_compile::compile(
        weir_compile::Input { config: &cfg.store, registry: &cfg.registry, mesh: &cfg.mesh },
        &node,
    );
    let e = explain(&snap, &req);
    print!("{}", e.text);
    Ok(if e.routed { 0 } else { 1 })
}
