//! SIGHUP makes the config watcher reload at once. In its own test binary:
//! the signal goes to the whole process, so it must not reach other tests' watchers.

mod ops_support;

use std::time::Duration;

use ops_support::{TempDir, eventually, gateway, port, start};
use weir_proxy::reload;

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
