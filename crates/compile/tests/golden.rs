//! Golden tests: each `testdata/<case>/` holds input YAML (`input/`, plus
//! optional `shared.txt` listing more files to load: `testdata/...` paths
//! are relative to this crate, others to `../shared/spec/`),
//! an optional `node.yaml`, the expected snapshot `expected.json`, and
//! optional `requests.yaml` simulated through the same code as `weir explain`.
//!
//! `WEIR_UPDATE_GOLDEN=1 cargo test -p weir-compile --test golden` rewrites
//! the expected snapshots; review the diff before committing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use weir_api::{LoadOptions, load_paths};
use weir_compile::explain::{SimRequest, explain};
use weir_compile::message::Messages;
use weir_compile::{ConfigStore, Input, MeshConfig, Node, Registry, Role, compile};

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct NodeSpec {
    namespace: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    role: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Requests {
    requests: Vec<Request>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Request {
    method: Option<String>,
    url: String,
    headers: BTreeMap<String, String>,
    routed: bool,
    /// Substrings the explanation must contain.
    contains: Vec<String>,
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec")
}

fn run_case(dir: &Path) -> Result<(), String> {
    let mut inputs: Vec<PathBuf> = Some(dir.join("input")).filter(|d| d.is_dir()).into_iter().collect();
    if let Ok(list) = std::fs::read_to_string(dir.join("shared.txt")) {
        for line in list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            if let Some(local) = line.strip_prefix("testdata/") {
                inputs.push(testdata().join(local));
                continue;
            }
            let base = shared();
            if !base.is_dir() {
                assert!(std::env::var_os("CI").is_none(), "../shared/spec is missing");
                return Ok(());
            }
            inputs.push(base.join(line));
        }
    }
    let loaded = load_paths(&inputs, &LoadOptions::default());
    if !loaded.errors.is_empty() || !loaded.problems.is_empty() {
        return Err(format!("input does not load: {:?} {:?}", loaded.errors, loaded.problems));
    }
    let spec: NodeSpec = match std::fs::read_to_string(dir.join("node.yaml")) {
        Ok(t) => weir_api::decode_document(&t, "node.yaml").map_err(|e| e.to_string())?,
        Err(_) => NodeSpec::default(),
    };
    let mut node = Node::default();
    if let Some(ns) = spec.namespace {
        node.namespace = ns;
    }
    if let Some(l) = spec.labels {
        node.labels = l;
    }
    if let Some(r) = spec.role {
        node.role = Role::parse(&r).ok_or(format!("bad role {r}"))?;
    }
    let mesh = MeshConfig::from_dir(&dir.join("input")).map_err(|e| e.to_string())?;
    let store = ConfigStore::from_loaded(&loaded);
    let registry = Registry::from_config(&store, &mesh, &node, &mut Messages::default());
    let snap = compile(Input { config: &store, registry: &registry, mesh: &mesh }, &node);
    // Pure and deterministic: a second compile gives the same snapshot.
    if compile(Input { config: &store, registry: &registry, mesh: &mesh }, &node) != snap {
        return Err("compiling twice gave different snapshots".into());
    }

    // Paths in origins are made relative so the golden files do not depend on the checkout location.
    let mut got = serde_json::to_string_pretty(&snap).map_err(|e| e.to_string())?;
    got = got.replace(&format!("{}/", dir.display()), "");
    got = got.replace(&format!("{}/", testdata().display()), "testdata:");
    got = got.replace(&format!("{}/", shared().display()), "shared:");
    got.push('\n');
    let expected_path = dir.join("expected.json");
    if std::env::var_os("WEIR_UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &got).map_err(|e| e.to_string())?;
    } else {
        let want = std::fs::read_to_string(&expected_path)
            .map_err(|_| "no expected.json (run with WEIR_UPDATE_GOLDEN=1 to create it)".to_string())?;
        if want != got {
            let diff = first_difference(&want, &got);
            return Err(format!("snapshot differs from expected.json (WEIR_UPDATE_GOLDEN=1 regenerates):\n{diff}"));
        }
    }

    if let Ok(text) = std::fs::read_to_string(dir.join("requests.yaml")) {
        let reqs: Requests = weir_api::decode_document(&text, "requests.yaml").map_err(|e| e.to_string())?;
        for r in reqs.requests {
            let headers = r.headers.into_iter().collect();
            let req = SimRequest::from_url(r.method.as_deref().unwrap_or("GET"), &r.url, headers)?;
            let e = explain(&snap, &req);
            if e.routed != r.routed {
                return Err(format!("{}: expected routed={}, got:\n{}", r.url, r.routed, e.text));
            }
            for c in &r.contains {
                if !e.text.contains(c.as_str()) {
                    return Err(format!("{}: explanation lacks {c:?}:\n{}", r.url, e.text));
                }
            }
        }
    }
    Ok(())
}

fn first_difference(want: &str, got: &str) -> String {
    for (i, (a, b)) in want.lines().zip(got.lines()).enumerate() {
        if a != b {
            return format!("line {}:\n  expected: {a}\n  got:      {b}", i + 1);
        }
    }
    format!("lengths differ: expected {} lines, got {}", want.lines().count(), got.lines().count())
}

#[test]
fn golden_snapshots() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("testdata")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("input").is_dir() || p.join("shared.txt").is_file())
        .collect();
    cases.sort();
    let filter = std::env::var("WEIR_GOLDEN").unwrap_or_default();
    let mut failures = Vec::new();
    let mut ran = 0;
    for c in &cases {
        let name = c.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !name.contains(&filter) {
            continue;
        }
        ran += 1;
        if let Err(e) = run_case(c) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{} of {ran} golden cases failed:\n{}", failures.len(), failures.join("\n\n"));
    eprintln!("{ran} golden cases passed");
}
