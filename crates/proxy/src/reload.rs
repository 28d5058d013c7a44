//! Config loading and live reload: load + validate + compile the config
//! directory; watch it (and SIGHUP); swap in valid changes, keep the last
//! good snapshot on invalid ones and report them.
//!
//! A change is all or nothing: if any file cannot be read or parsed, or any
//! object is invalid, the whole change is rejected (errors as
//! `file:line: Kind ns/name: field: message`), the previous snapshot keeps
//! serving, and `/config_dump` shows the errors.
//!
//! Watching polls a cheap fingerprint of the directory (path, size, mtime,
//! inode and ctime of every config file) every [`POLL_INTERVAL`]; a change is
//! loaded once the fingerprint is the same on two polls in a row (so a file
//! being written is not loaded half-written), which puts a valid change in
//! service within about half a second. SIGHUP reloads at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weir_api::LoadOptions;
use weir_api::load::MESH_CONFIG_FILE;
use weir_compile::message::{Level, Messages};
use weir_compile::{ConfigStore, Input, MeshConfig, Node, Registry, Snapshot};

use crate::{RejectedChange, Runtime, State};

/// How often the config directory is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A change still being written is loaded anyway after this many polls.
const MAX_SETTLE_POLLS: u32 = 4;

/// Errors kept per rejected change (the rest are summarised in one line).
const MAX_ERRORS: usize = 100;

/// A loaded, validated and compiled config directory.
#[derive(Debug)]
pub struct Compiled {
    pub snapshot: Snapshot,
    /// Validation warnings and compile/registry messages (never fatal).
    pub warnings: Vec<String>,
    /// Istio objects loaded.
    pub objects: usize,
    /// Secrets and TLS files the snapshot needs, read now (not on the request path).
    pub credentials: crate::tls::Credentials,
}

/// Loads `dir` (a directory, or a single file) for `node`: every file must
/// parse and every object must be valid, else the errors are returned
/// (`file:line: Kind ns/name: field: message`), in file and line order.
pub fn load(dir: &Path, node: &Node) -> Result<Compiled, Vec<String>> {
    let loaded = weir_api::load_paths(&[dir], &LoadOptions { default_namespace: "default".into() });
    let checked = weir_api::check::check(&loaded);
    let mut errors: Vec<String> = checked.errors.iter().map(ToString::to_string).collect();
    let mut warnings = Vec::new();
    for r in &checked.findings {
        let field = if r.path.is_empty() { String::new() } else { format!("{}: ", r.path) };
        let line = format!("{}:{}: {} {}/{}: {field}{}", r.file, r.line, r.kind, r.namespace, r.name, r.message);
        match r.severity {
            weir_api::Severity::Error => errors.push(line),
            _ => warnings.push(line),
        }
    }
    let mesh = if dir.is_dir() {
        match MeshConfig::from_dir(dir) {
            Ok(m) => m,
            Err(e) => {
                errors.push(e.to_string());
                MeshConfig::default()
            }
        }
    } else {
        MeshConfig::default()
    };
    if !errors.is_empty() {
        if errors.len() > MAX_ERRORS {
            let more = errors.len() - MAX_ERRORS;
            errors.truncate(MAX_ERRORS);
            errors.push(format!("... and {more} more errors"));
        }
        return Err(errors);
    }
    let objects = loaded.objects.len();
    let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let store = ConfigStore::from_loaded(&loaded);
        let mut messages = Messages::default();
        let registry = Registry::from_config(&store, &mesh, node, &mut messages);
        let snapshot = weir_compile::compile(Input { config: &store, registry: &registry, mesh: &mesh }, node);
        (snapshot, messages)
    }));
    let (snapshot, messages) = match compiled {
        Ok(c) => c,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            return Err(vec![format!("{}: internal error: the compiler failed: {what}", dir.display())]);
        }
    };
    let (credentials, tls_warnings) = crate::tls::Credentials::load(&loaded.others, &snapshot, &node.namespace, dir);
    warnings.extend(tls_warnings);
    for m in messages.iter().chain(&snapshot.messages) {
        if m.level != Level::Info {
            let at = m.origin.as_deref().map(|o| format!("{o}: ")).unwrap_or_default();
            warnings.push(format!("{at}{m}"));
        }
    }
    Ok(Compiled { snapshot, warnings, objects, credentials })
}

/// Cheap identity of a config directory's contents: one stamp per config
/// file (`*.yaml`, `*.yml`, `*.json` below it, hidden entries skipped, and
/// `weir-mesh.yaml`). Equal fingerprints mean nothing was edited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<Stamp>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    /// Inode and change time: catch atomic replaces (rename over) and
    /// same-size writes within the mtime granularity.
    ino: u64,
    ctime: (i64, i64),
    /// Set when the entry could not be read (so its recovery is a change).
    error: bool,
}

impl Fingerprint {
    /// Files covered.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Fingerprints `path` (a directory or one file).
pub fn fingerprint(path: &Path) -> Fingerprint {
    let mut out = Vec::new();
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => walk(path, 0, &mut out),
        Ok(m) => out.push(stamp(path, Ok(m))),
        Err(e) => out.push(stamp(path, Err(e))),
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Fingerprint(out)
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<Stamp>) {
    // Symlink loops cannot make this run forever.
    if depth > 32 {
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return out.push(stamp(dir, Err(e))),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if name.starts_with('.') {
            continue;
        }
        // Follows symlinks (Kubernetes ConfigMap volumes are symlinks into `..data`).
        let meta = std::fs::metadata(&path);
        if meta.as_ref().is_ok_and(|m| m.is_dir()) {
            walk(&path, depth + 1, out);
        } else if is_watched(name) {
            out.push(stamp(&path, meta));
        }
    }
}

fn is_watched(name: &str) -> bool {
    name == MESH_CONFIG_FILE || [".yaml", ".yml", ".json"].iter().any(|ext| name.ends_with(ext))
}

fn stamp(path: &Path, meta: std::io::Result<std::fs::Metadata>) -> Stamp {
    let mut s = Stamp { path: path.to_path_buf(), len: 0, modified: None, ino: 0, ctime: (0, 0), error: meta.is_err() };
    if let Ok(m) = meta {
        s.len = m.len();
        s.modified = m.modified().ok();
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            s.ino = m.ino();
            s.ctime = (m.ctime(), m.ctime_nsec());
        }
    }
    s
}

/// What a reload attempt did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing changed on disk.
    Unchanged,
    /// A change was seen; waiting one more poll for it to settle.
    Settling,
    /// Loaded, but the compiled snapshot equals the one serving (nothing published).
    Same,
    /// A new snapshot serves with this version.
    Applied(u64),
    /// The change was rejected; the previous snapshot keeps serving.
    Rejected(Vec<String>),
}

/// Reloads the config directory of `state` into it.
pub struct Reloader {
    state: Arc<State>,
    /// Fingerprint of the files at the last load attempt.
    seen: Fingerprint,
    /// A change seen but not loaded yet, and for how many polls it has been moving.
    pending: Option<(Fingerprint, u32)>,
}

impl Reloader {
    /// `loaded` is the fingerprint taken just before the load that built the
    /// serving snapshot (take it before loading, so edits made during the
    /// load are seen).
    pub fn new(state: Arc<State>, loaded: Fingerprint) -> Reloader {
        Reloader { state, seen: loaded, pending: None }
    }

    /// One poll: loads when the directory changed and has settled.
    pub fn poll(&mut self) -> Outcome {
        let now = self.fingerprint_now();
        if now == self.seen {
            self.pending = None;
            return Outcome::Unchanged;
        }
        match self.pending.take() {
            Some((prev, polls)) if prev == now || polls >= MAX_SETTLE_POLLS => self.reload_with(now),
            Some((_, polls)) => {
                self.pending = Some((now, polls + 1));
                Outcome::Settling
            }
            None => {
                self.pending = Some((now, 1));
                Outcome::Settling
            }
        }
    }

    /// Loads now, changed or not (SIGHUP).
    pub fn reload(&mut self) -> Outcome {
        let now = self.fingerprint_now();
        self.pending = None;
        self.reload_with(now)
    }

    /// The directory's fingerprint plus the TLS files the serving config names
    /// (certificates may live outside the config directory).
    fn fingerprint_now(&self) -> Fingerprint {
        let mut fp = fingerprint(&self.state.options.config_dir);
        for path in self.state.current.load().credentials.watched_files() {
            let meta = std::fs::metadata(&path);
            fp.0.push(stamp(&path, meta));
        }
        fp
    }

    fn reload_with(&mut self, fp: Fingerprint) -> Outcome {
        self.seen = fp;
        let options = &self.state.options;
        match load(&options.config_dir, &options.node) {
            Ok(compiled) => apply(&self.state, compiled),
            Err(errors) => {
                reject(&self.state, &errors);
                Outcome::Rejected(errors)
            }
        }
    }
}

/// Publishes `compiled` as the next version (unless it equals the serving snapshot).
pub fn apply(state: &State, compiled: Compiled) -> Outcome {
    let previous = state.current.load_full();
    if *previous.snapshot == compiled.snapshot && *previous.credentials == compiled.credentials {
        tracing::info!(version = previous.version, "config reloaded: no change in the compiled snapshot");
        return Outcome::Same;
    }
    for w in &compiled.warnings {
        tracing::warn!("{w}");
    }
    let version = previous.version + 1;
    let listeners = compiled.snapshot.listeners.len();
    let clusters = compiled.snapshot.clusters.len();
    let next = Runtime::with_credentials(compiled.snapshot, version, Some(&previous), compiled.credentials);
    state.publish(next);
    {
        let mut status = state.status.lock().unwrap_or_else(|e| e.into_inner());
        status.applied_version = version;
        status.reloads += 1;
    }
    state.metrics.set_config_version(version);
    state.metrics.config_reloaded();
    tracing::info!(version, objects = compiled.objects, listeners, clusters, "config change applied");
    Outcome::Applied(version)
}

/// Records a rejected change: status, metric and log; the serving snapshot stays.
pub fn reject(state: &State, errors: &[String]) {
    let serving = state.current.load().version;
    tracing::error!("config change rejected ({} errors); still serving version {serving}", errors.len());
    for e in errors {
        tracing::error!("{e}");
    }
    let at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut status = state.status.lock().unwrap_or_else(|e| e.into_inner());
    status.last_rejected = Some(RejectedChange { at, errors: errors.to_vec() });
    status.rejected_reloads += 1;
    drop(status);
    state.metrics.config_rejected();
}

/// The background watcher: its own thread and current-thread runtime, so
/// compiling a change never runs on traffic threads.
pub struct Watcher {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts watching `state`'s config directory (polling every `interval`, and on SIGHUP).
/// The SIGHUP handler is installed before this returns.
pub fn spawn_watcher(state: Arc<State>, loaded: Fingerprint, interval: Duration) -> std::io::Result<Watcher> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let hangup = {
        let _guard = rt.enter();
        #[cfg(unix)]
        {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| tracing::warn!("SIGHUP reload unavailable: {e}"))
                .ok()
        }
        #[cfg(not(unix))]
        {
            None::<()>
        }
    };
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
    let mut reloader = Reloader::new(state, loaded);
    let thread = std::thread::Builder::new().name("weir-reload".into()).spawn(move || {
        #[cfg(unix)]
        let mut hangup = hangup;
        rt.block_on(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                #[cfg(unix)]
                let hup = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hup = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tick.tick() => {
                        reloader.poll();
                    }
                    Some(()) = hup => {
                        tracing::info!("SIGHUP: reloading config");
                        reloader.reload();
                    }
                }
            }
        });
    })?;
    Ok(Watcher { stop: Some(stop_tx), thread: Some(thread) })
}

impl Watcher {
    /// Stops watching and waits for an in-progress reload to finish.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> TempDir {
            let n = std::sync::atomic::AtomicU64::new(0);
            let d = std::env::temp_dir().join(format!(
                "weir-reload-{name}-{}-{:?}-{}",
                std::process::id(),
                std::thread::current().id(),
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(&p, text).unwrap();
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
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: default\nspec:\n  \
             selector:\n    istio: ingressgateway\n  servers:\n  - port:\n      number: {port}\n      name: http\n      \
             protocol: HTTP\n    hosts:\n    - \"*\"\n"
        )
    }

    const INVALID_VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bad
  namespace: default
spec:
  hosts:
  - \"*\"
  gateways:
  - gw
  http:
  - route:
    - destination:
        host: reviews
      weight: -1
";

    fn state_for(dir: &Path) -> (Arc<State>, Fingerprint) {
        let fp = fingerprint(dir);
        let compiled = load(dir, &Node::default()).unwrap();
        let state = State::new(
            Options { access_log: crate::AccessLogFormat::Off, ..Options::new(dir.to_path_buf()) },
            Runtime::new(compiled.snapshot, 1, None),
        );
        (state, fp)
    }

    #[test]
    fn fingerprint_sees_edits_additions_removals_and_ignores_other_files() {
        let d = TempDir::new("fp");
        d.write("gw.yaml", &gateway(8080));
        let a = fingerprint(&d.0);
        assert_eq!(a.len(), 1);
        assert_eq!(fingerprint(&d.0), a);
        d.write("notes.txt", "x");
        d.write(".hidden.yaml", "x");
        d.write(".git/config.yaml", "x");
        assert_eq!(fingerprint(&d.0), a, "non-config and hidden files are ignored");
        d.write("gw.yaml", &gateway(8081));
        let b = fingerprint(&d.0);
        assert_ne!(b, a, "same-size edit");
        d.write("sub/more.yml", "");
        let c = fingerprint(&d.0);
        assert_ne!(c, b);
        assert_eq!(c.len(), 2);
        d.write(MESH_CONFIG_FILE, "{}\n");
        let m = fingerprint(&d.0);
        assert_ne!(m, c, "mesh config is watched");
        std::fs::remove_file(d.0.join("sub/more.yml")).unwrap();
        assert_ne!(fingerprint(&d.0), m);
        assert_eq!(fingerprint(&d.0.join("missing")).len(), 1, "a missing path is a stamp of its own");
    }

    #[test]
    fn load_reports_errors_with_file_and_line() {
        let d = TempDir::new("load");
        d.write("gw.yaml", &gateway(8080));
        let p = d.write("vs.yaml", INVALID_VS);
        let errors = load(&d.0, &Node::default()).unwrap_err();
        let want =
            format!("{}:15: VirtualService default/bad: spec.http[0].route[0].weight: weight -1 < 0", p.display());
        assert_eq!(errors, vec![want]);
        let p = d.write("vs.yaml", "kind: [unclosed\n");
        let errors = load(&d.0, &Node::default()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with(&format!("{}:", p.display())), "{errors:?}");
        assert!(errors[0].contains("invalid YAML"), "{errors:?}");
        std::fs::remove_file(&p).unwrap();
        d.write(MESH_CONFIG_FILE, "notAField: 1\n");
        let errors = load(&d.0, &Node::default()).unwrap_err();
        assert!(errors[0].contains(MESH_CONFIG_FILE) && errors[0].contains("notAField"), "{errors:?}");
    }

    #[test]
    fn valid_changes_apply_invalid_ones_are_rejected_whole() {
        let d = TempDir::new("apply");
        d.write("gw.yaml", &gateway(8080));
        let (state, fp) = state_for(&d.0);
        let mut r = Reloader::new(state.clone(), fp);
        assert_eq!(r.poll(), Outcome::Unchanged);

        // A valid edit together with an invalid file: nothing of it applies.
        d.write("gw.yaml", &gateway(8081));
        d.write("vs.yaml", INVALID_VS);
        let Outcome::Rejected(errors) = r.reload() else { panic!("expected a rejection") };
        assert!(errors[0].contains("vs.yaml:15: VirtualService default/bad"), "{errors:?}");
        assert_eq!(state.current.load().version, 1);
        assert_eq!(state.current.load().snapshot.listeners[0].port, 8080);
        {
            let status = state.status.lock().unwrap();
            assert_eq!(status.applied_version, 1);
            assert_eq!(status.rejected_reloads, 1);
            assert_eq!(status.last_rejected.as_ref().unwrap().errors, errors);
        }
        assert!(state.metrics.encode().contains("weir_config_rejected_total 1\n"));
        assert_eq!(r.poll(), Outcome::Unchanged, "a rejected change is not retried until edited");

        // Fixed: applies as version 2 and notifies listeners.
        let mut changes = state.changes.subscribe();
        std::fs::remove_file(d.0.join("vs.yaml")).unwrap();
        assert_eq!(r.reload(), Outcome::Applied(2));
        assert_eq!(*changes.borrow_and_update(), 2);
        assert_eq!(state.current.load().snapshot.listeners[0].port, 8081);
        {
            let status = state.status.lock().unwrap();
            assert_eq!((status.applied_version, status.reloads), (2, 1));
        }
        let text = state.metrics.encode();
        assert!(text.contains("weir_config_version 2\n") && text.contains("weir_config_reloads_total 1\n"), "{text}");

        // Same content: nothing to publish.
        assert_eq!(r.reload(), Outcome::Same);
        assert_eq!(state.current.load().version, 2);
    }

    #[test]
    fn poll_waits_for_the_change_to_settle() {
        let d = TempDir::new("settle");
        d.write("gw.yaml", &gateway(8080));
        let (state, fp) = state_for(&d.0);
        let mut r = Reloader::new(state.clone(), fp);
        d.write("gw.yaml", &gateway(9090));
        assert_eq!(r.poll(), Outcome::Settling);
        assert_eq!(r.poll(), Outcome::Applied(2));
        assert_eq!(r.poll(), Outcome::Unchanged);
        // A file that keeps changing is loaded after a bounded number of polls.
        for i in 0..MAX_SETTLE_POLLS {
            d.write("gw.yaml", &gateway(9100 + i as u16));
            assert_eq!(r.poll(), Outcome::Settling, "poll {i}");
        }
        d.write("gw.yaml", &gateway(9200));
        assert_eq!(r.poll(), Outcome::Applied(3));
        assert_eq!(state.current.load().snapshot.listeners[0].port, 9200);
    }

    #[test]
    fn watcher_applies_a_change_within_a_second() {
        let d = TempDir::new("watch");
        d.write("gw.yaml", &gateway(8080));
        let (state, fp) = state_for(&d.0);
        let watcher = spawn_watcher(state.clone(), fp, POLL_INTERVAL).unwrap();
        let mut changes = state.changes.subscribe();
        d.write("gw.yaml", &gateway(8082));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let got = rt.block_on(async { tokio::time::timeout(Duration::from_secs(1), changes.changed()).await });
        assert!(matches!(got, Ok(Ok(()))), "no reload within one second");
        assert_eq!(state.current.load().snapshot.listeners[0].port, 8082);
        watcher.stop();
    }
}
