//! The config watcher on a real directory: valid edits apply within a
//! second, invalid ones are rejected whole while the last good snapshot
//! keeps serving (SIGHUP is in `ops_sighup.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_proxy::{AccessLogFormat, Options, Runtime, State, reload};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("weir-ops-reload-{name}-{}", std::process::id()));
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

#[test]
fn watcher_applies_valid_edits_and_rejects_invalid_ones() {
    let d = TempDir::new("watch");
    d.write("gw.yaml", &gateway(8080));
    let (state, fp) = start(&d.0);
    let watcher = reload::spawn_watcher(state.clone(), fp, reload::POLL_INTERVAL).unwrap();

    let edited = Instant::now();
    d.write("gw.yaml", &gateway(8081));
    assert!(eventually(Duration::from_secs(1), || port(&state) == 8081), "valid edit not applied within 1s");
    eprintln!("applied after {:?}", edited.elapsed());
    assert_eq!(state.current.load().version, 2);

    let bad = d.write(
        "gw.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers: 3\n",
    );
    assert!(
        eventually(Duration::from_secs(2), || state.status.lock().unwrap().rejected_reloads == 1),
        "invalid edit not reported"
    );
    assert_eq!(port(&state), 8081, "the last good snapshot keeps serving");
    assert_eq!(state.current.load().version, 2);
    let errors = state.status.lock().unwrap().last_rejected.clone().unwrap().errors;
    assert!(errors[0].starts_with(&format!("{}:5: Gateway default/gw: spec.servers", bad.display())), "{errors:?}");

    d.write("gw.yaml", &gateway(8082));
    assert!(eventually(Duration::from_secs(1), || port(&state) == 8082), "fixed config not applied within 1s");
    assert_eq!(state.current.load().version, 3);
    let status = state.status.lock().unwrap().clone();
    assert_eq!((status.applied_version, status.reloads, status.rejected_reloads), (3, 2, 1));
    watcher.stop();
}
