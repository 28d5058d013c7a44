//! SIGHUP makes the config watcher reload at once. In its own test binary:
//! the signal goes to the whole process, so it must not reach other tests' watchers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_proxy::{AccessLogFormat, Options, Runtime, State, reload};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("weir-ops-sighup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        TempDir(d)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
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

fn gateway(port: u16) -> String {
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

fn start(dir: &Path) -> (Arc<State>, reload::Fingerprint) {
    let fp = reload::fingerprint(dir);
    let compiled = reload::load(dir, &Default::default()).expect("valid config");
    let options = Options { access_log: AccessLogFormat::Off, ..Options::new(dir.to_path_buf()) };
    (State::new(options, Runtime::new(compiled.snapshot, 1, None)), fp)
}

/// Polls `f` until it holds or `within` passes.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
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

fn port(state: &State) -> u16 {
    state.current.load().snapshot.listeners[0].port
}

#[cfg(unix)]
#[test]
fn sighup_reloads_at_once() {
    let d = TempDir::new("hup");
    d.write("gw.yaml", &gateway(8080));
    let (state, fp) = start(&d.0);
    // Polling effectively off: only SIGHUP can pick the edit up.
    let watcher = reload::spawn_watcher(state.clone(), fp, Duration::from_secs(3600)).unwrap();
    d.write("gw.yaml", &gateway(9090));
    let status =
        std::process::Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status().expect("run kill");
    assert!(status.success());
    assert!(eventually(Duration::from_secs(2), || port(&state) == 9090), "SIGHUP did not reload");
    watcher.stop();
}
