//! Harness of the config-watcher tests (`ops_reload.rs`, `ops_sighup.rs`): a
//! temporary config directory, a Gateway document, a `State` loaded from the
//! directory, and bounded polling.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_proxy::{AccessLogFormat, Options, Runtime, State, reload};

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("weir-ops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        TempDir(d)
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write config");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn gateway(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: [\"*\"]
"
    )
}

pub fn start(dir: &Path) -> (Arc<State>, reload::Fingerprint) {
    let fp = reload::fingerprint(dir);
    let compiled = reload::load(dir, &Default::default()).expect("valid config");
    let options = Options { access_log: AccessLogFormat::Off, ..Options::new(dir.to_path_buf()) };
    (State::new(options, Runtime::new(compiled.snapshot, 1, None)), fp)
}

/// Polls `f` until it holds or `within` passes.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn port(state: &State) -> u16 {
    state.current.load().snapshot.listeners[0].port
}
