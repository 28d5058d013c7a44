//! The config watcher on a real directory: valid edits apply within a
//! second, invalid ones are rejected whole while the last good snapshot
//! keeps serving (SIGHUP is in `ops_sighup.rs`).

mod ops_support;

use std::time::{Duration, Instant};

use ops_support::{TempDir, eventually, gateway, port, start};
use weir_proxy::reload;

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
