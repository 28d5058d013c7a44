//! `weir analyze`: cross-object problems, `istioctl analyze` style.

use std::path::PathBuf;

use weir_api::LoadOptions;
use weir_compile::MeshConfig;

pub fn run(paths: &[PathBuf], cluster_domain: &str) -> anyhow::Result<u8> {
    let loaded = weir_api::load_paths(paths, &LoadOptions::default());
    for e in &loaded.errors {
        eprintln!("error: {e}");
    }
    if !loaded.errors.is_empty() {
        return Ok(2);
    }
    let mesh = match paths.iter().find(|p| p.is_dir() && p.join(weir_compile::mesh::MESH_FILE).exists()) {
        Some(dir) => MeshConfig::from_dir(dir)?,
        None => MeshConfig::default(),
    };
    let messages = weir_compile::analyze::analyze(&loaded, &mesh, cluster_domain);
    if messages.is_empty() {
        println!(
            "No validation issues found when analyzing {}.",
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    for m in &messages {
        match &m.origin {
            Some(o) => println!("{m} at {o}"),
            None => println!("{m}"),
        }
    }
    Ok(if weir_compile::analyze::has_errors(&messages) { 1 } else { 0 })
}
