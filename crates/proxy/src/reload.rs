//! Config loading and live reload: load + validate + compile the config
//! directory; watch it (and SIGHUP); swap in valid changes, keep the last
//! good snapshot on invalid ones and report them.
//!
//! A change is all or nothing: if any file cannot be read or parsed, or any
//! object is invalid, the whole change is rejected (errors as
//! `file:line: Kind ns/name: field: message`), the previous snapshot keeps
//! serving, and `/config_dump` shows the errors.
//!
//! Watching: file events (inotify through `notify`, recursive) and a poll of a
//! cheap fingerprint of the directory (path, size, mtime, inode and ctime of
//! every config file, plus the TLS files the config names) every
//! [`POLL_INTERVAL`]. A file closed after writing, renamed over, or removed is
//! loaded at once ([`Reloader::on_events`]); a file still open for writing is
//! not read. Changes seen only by polling (no events: other systems, inotify
//! limits, network file systems, TLS files outside the directory) are loaded
//! once the fingerprint is the same on two polls in a row. SIGHUP reloads at once.
//!
//! Reloading is incremental where that is safe: [`FileCache`] keeps each file's
//! parsed and validated objects by the file's stamp (one edited file is one
//! file parsed), and the service registry is reused while its inputs are the
//! same objects. Compiling and building the runtime are done in full (the
//! runtime keeps the state of unchanged clusters). The runtime a reload
//! replaces is freed by the first watcher tick 300 ms or more later, then the memory the
//! load freed is given back to the system ([`release_free_memory`]).
//!
//! Timings of each phase are logged at debug level (`RUST_LOG=weir_proxy::reload=debug`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
///
/// The parsed files are handed to the next [`Reloader`] of the same directory
/// (see [`FileCache`]), so the first reload after `weir run` starts only parses
/// what changed.
pub fn load(dir: &Path, node: &Node) -> Result<Compiled, Vec<String>> {
    let mut cache = FileCache::default();
    let result = load_with(dir, node, &mut cache);
    *PRIMED.lock().unwrap_or_else(|e| e.into_inner()) = Some((dir.to_path_buf(), cache));
    result
}

/// The cache of the last [`load`], taken by the next [`Reloader`] of that directory.
static PRIMED: std::sync::Mutex<Option<(PathBuf, FileCache)>> = std::sync::Mutex::new(None);

fn take_primed(dir: &Path) -> FileCache {
    let mut slot = PRIMED.lock().unwrap_or_else(|e| e.into_inner());
    match slot.take() {
        Some((d, cache)) if d == dir => cache,
        other => {
            *slot = other;
            FileCache::default()
        }
    }
}

/// Parsed and validated config files by path, reused while a file's stamp
/// (size, mtime, inode, ctime: as the watcher's [`Fingerprint`]) is unchanged:
/// a reload after one edited file parses and validates that file only. A
/// file's valid objects are kept as the config store holds them (`Arc`s), so
/// the store of a reload is assembled without copying objects.
#[derive(Default)]
pub struct FileCache {
    files: HashMap<PathBuf, CachedFile>,
    /// Files parsed by the last load (the rest came from the cache).
    parsed: usize,
    /// The registry of the last load, reused while its inputs are the same objects.
    registry: Option<RegistryMemo>,
    registry_reused: bool,
}

/// A registry with what it was built from: the ServiceEntries, WorkloadEntries and
/// WorkloadGroups (the same `Arc`s: unchanged files keep theirs), the mesh config and node.
struct RegistryMemo {
    service_entries: Vec<Arc<weir_compile::store::Cfg<weir_api::types::ServiceEntry>>>,
    workload_entries: Vec<Arc<weir_compile::store::Cfg<weir_api::types::WorkloadEntry>>>,
    workload_groups: Vec<Arc<weir_compile::store::Cfg<weir_api::types::WorkloadGroup>>>,
    mesh: MeshConfig,
    node: Node,
    registry: Registry,
    messages: Messages,
}

impl RegistryMemo {
    fn fits(&self, store: &ConfigStore, mesh: &MeshConfig, node: &Node) -> bool {
        fn same<T>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
        }
        same(&self.service_entries, &store.service_entries)
            && same(&self.workload_entries, &store.workload_entries)
            && same(&self.workload_groups, &store.workload_groups)
            && self.mesh == *mesh
            && self.node == *node
    }
}

impl FileCache {
    /// Config files the cache holds.
    pub fn len(&self) -> usize {
        self.files.len()
    }
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
    /// Files that the last load had to parse (not found in the cache, or changed).
    pub fn parsed_last(&self) -> usize {
        self.parsed
    }
    /// Whether the last load reused the registry of the load before (no ServiceEntry,
    /// WorkloadEntry or WorkloadGroup changed).
    pub fn registry_reused_last(&self) -> bool {
        self.registry_reused
    }
}

/// One config file as loaded and validated.
struct CachedFile {
    stamp: Stamp,
    /// The file could not be read or parsed.
    errors: Vec<weir_api::LoadError>,
    /// Validation findings of its objects, in line order.
    findings: Vec<weir_api::check::Row>,
    /// Its objects (when none has an error: an invalid file rejects the whole change anyway).
    store: ConfigStore,
    /// Objects of other kinds (Secrets for credentials).
    others: Vec<weir_api::types::OtherObject>,
    objects: usize,
}

impl CachedFile {
    fn load(path: &Path, stamp: Stamp, opts: &LoadOptions) -> CachedFile {
        let loaded = weir_api::load::load_file(path, opts);
        let checked = weir_api::check::check(&loaded);
        let objects = loaded.objects.len();
        let valid =
            checked.errors.is_empty() && checked.findings.iter().all(|r| r.severity != weir_api::Severity::Error);
        let store = if valid { ConfigStore::new(loaded.objects) } else { ConfigStore::default() };
        CachedFile { stamp, errors: checked.errors, findings: checked.findings, store, others: loaded.others, objects }
    }
}

/// [`load`] with a cache of parsed files: files whose stamp did not change
/// since they were cached are not read again. The result is the same as
/// [`load`]'s.
pub fn load_with(dir: &Path, node: &Node, cache: &mut FileCache) -> Result<Compiled, Vec<String>> {
    load_stamped(dir, node, cache, None)
}

/// The config files of `dir` with their stamps, in the loader's order, from a fingerprint of
/// `dir` just taken (saves walking and stat-ing the directory again). `None` when the
/// fingerprint saw an unreadable entry or `dir` is a single file: the loader then walks itself,
/// so that it reports the error as it always does.
fn files_of(dir: &Path, stamps: &[Stamp]) -> Option<Vec<(PathBuf, Stamp)>> {
    if !dir.is_dir() || stamps.iter().any(|s| s.error) {
        return None;
    }
    let mut files: Vec<(PathBuf, Stamp)> = stamps
        .iter()
        .filter(|s| s.path.file_name().is_some_and(|n| n != MESH_CONFIG_FILE))
        .map(|s| (s.path.clone(), s.clone()))
        .collect();
    // `config_files`' order: in each directory its files by name, then its subdirectories by name.
    files.sort_by_cached_key(|(p, _)| walk_key(p.strip_prefix(dir).unwrap_or(p)));
    Some(files)
}

/// Sort key of depth-first order with a directory's files before its subdirectories, each by
/// name: per path component, whether it is a directory (all but the last), then its name.
fn walk_key(path: &Path) -> Vec<(bool, std::ffi::OsString)> {
    let n = path.components().count();
    path.components().enumerate().map(|(i, c)| (i + 1 < n, c.as_os_str().to_os_string())).collect()
}

/// [`load_with`], with the files and their stamps already known (see [`files_of`]).
fn load_stamped(
    dir: &Path,
    node: &Node,
    cache: &mut FileCache,
    known: Option<Vec<(PathBuf, Stamp)>>,
) -> Result<Compiled, Vec<String>> {
    let t0 = Instant::now();
    let opts = LoadOptions { default_namespace: "default".into() };
    let mut errors: Vec<String> = Vec::new();
    let mut files = HashMap::new();
    let stamped = known.unwrap_or_else(|| {
        let paths = weir_api::load::config_files(dir).unwrap_or_else(|e| {
            errors.push(e.to_string());
            Vec::new()
        });
        // The stamp is taken before reading: a write after it is a new stamp, seen by the next poll.
        paths.into_iter().map(|p| (p.clone(), stamp(&p, std::fs::metadata(&p)))).collect()
    });
    let paths: Vec<&PathBuf> = stamped.iter().map(|(p, _)| p).collect();
    cache.parsed = 0;
    for (path, stamp) in &stamped {
        let stamp = stamp.clone();
        let file = match cache.files.remove(path) {
            Some(f) if f.stamp == stamp && !stamp.error => f,
            _ => {
                cache.parsed += 1;
                CachedFile::load(path, stamp, &opts)
            }
        };
        files.insert(path.clone(), file);
    }
    cache.files = files;
    let t_parse = t0.elapsed();

    let ordered: Vec<&CachedFile> = paths.iter().filter_map(|p| cache.files.get(*p)).collect();
    let in_order = || ordered.iter().copied();
    errors.extend(in_order().flat_map(|f| &f.errors).map(ToString::to_string));
    let mut findings: Vec<&weir_api::check::Row> = in_order().flat_map(|f| &f.findings).collect();
    findings.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    let mut warnings = Vec::new();
    for r in findings {
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
    let objects = in_order().map(|f| f.objects).sum();
    let store = ConfigStore::merged(in_order().map(|f| &f.store));
    let others: Vec<weir_api::types::OtherObject> = in_order().flat_map(|f| f.others.iter().cloned()).collect();
    let t_store = t0.elapsed();
    let mut t_registry = Duration::ZERO;
    let memo = cache.registry.take().filter(|m| m.fits(&store, &mesh, node));
    let reused = memo.is_some();
    cache.registry_reused = reused;
    let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let memo = memo.unwrap_or_else(|| {
            let mut messages = Messages::default();
            let registry = Registry::from_config(&store, &mesh, node, &mut messages);
            RegistryMemo {
                service_entries: store.service_entries.clone(),
                workload_entries: store.workload_entries.clone(),
                workload_groups: store.workload_groups.clone(),
                mesh: mesh.clone(),
                node: node.clone(),
                registry,
                messages,
            }
        });
        t_registry = t0.elapsed();
        let snapshot = weir_compile::compile(Input { config: &store, registry: &memo.registry, mesh: &mesh }, node);
        (snapshot, memo)
    }));
    let t_compile = t0.elapsed();
    let (snapshot, memo) = match compiled {
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
    let (credentials, tls_warnings) = crate::tls::Credentials::load(&others, &snapshot, &node.namespace, dir);
    warnings.extend(tls_warnings);
    tracing::debug!(
        objects,
        files = paths.len(),
        parsed = cache.parsed,
        registry_reused = reused,
        parse_validate_ms = ms(t_parse),
        store_ms = ms(t_store - t_parse),
        registry_ms = ms(t_registry.saturating_sub(t_store)),
        compile_ms = ms(t_compile.saturating_sub(t_registry)),
        credentials_ms = ms(t0.elapsed() - t_compile),
        "config loaded"
    );
    for m in memo.messages.iter().chain(&snapshot.messages) {
        if m.level != Level::Info {
            let at = m.origin.as_deref().map(|o| format!("{o}: ")).unwrap_or_default();
            warnings.push(format!("{at}{m}"));
        }
    }
    cache.registry = Some(memo);
    Ok(Compiled { snapshot, warnings, objects, credentials })
}

/// Gives the memory the allocator holds free back to the system.
///
/// glibc's malloc keeps the pages a load freed (parsing and compiling a large
/// config peaks at several times what the served snapshot keeps) in its arenas;
/// `malloc_trim` releases them. Called after the first load and after each
/// reload, on the reload thread, off the request path.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` takes no pointers and has no preconditions; glibc
    // locks each arena while it returns that arena's free pages (madvise).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Milliseconds with a fraction, for timing logs.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Cheap identity of a config directory's contents: one stamp per config
/// file (`*.yaml`, `*.yml`, `*.json` below it, hidden entries skipped, and
/// `weir-mesh.yaml`). Equal fingerprints mean nothing was edited.
/// The second field counts the stamps of the directory itself (the rest: TLS files the config names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<Stamp>, usize);

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
    let n = out.len();
    Fingerprint(out, n)
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
    /// Parsed files of the last load (the first one is [`load`]'s, when it loaded this directory).
    cache: FileCache,
    /// Config files being written in place (modified, not closed yet), from file events.
    writing: std::collections::HashSet<PathBuf>,
    /// A file event reported a finished change (closed after writing, renamed, removed).
    finished: bool,
    /// Runtimes replaced by reloads, freed by [`Reloader::tidy`].
    retired: Vec<(Instant, Arc<Runtime>)>,
    /// Memory was freed since the last [`release_free_memory`].
    trim: bool,
    /// Replaced runtimes wait for [`Reloader::tidy`] (the watcher's ticks) instead of being freed at once.
    deferred_frees: bool,
    /// When the last event-driven load started, and how far apart they must be.
    last_event_load: Option<Instant>,
    min_event_gap: Duration,
}

impl Reloader {
    /// `loaded` is the fingerprint taken just before the load that built the
    /// serving snapshot (take it before loading, so edits made during the
    /// load are seen).
    pub fn new(state: Arc<State>, loaded: Fingerprint) -> Reloader {
        let cache = take_primed(&state.options.config_dir);
        Reloader {
            state,
            seen: loaded,
            pending: None,
            cache,
            writing: Default::default(),
            finished: false,
            retired: Vec::new(),
            trim: false,
            deferred_frees: false,
            last_event_load: None,
            min_event_gap: EVENT_MIN_GAP,
        }
    }

    /// The parsed files kept between reloads.
    pub fn cache(&self) -> &FileCache {
        &self.cache
    }

    /// Frees the runtimes that reloads replaced and gives the memory freed by loads back to the
    /// system (the watcher calls it on each poll tick, so never right after a swap).
    pub fn tidy(&mut self) {
        // Not in the first moments of the new version: those are for its first requests.
        if self.retired.iter().any(|(at, _)| at.elapsed() < RETIRE_AFTER) {
            return;
        }
        self.retired.clear();
        if std::mem::take(&mut self.trim) {
            release_free_memory();
        }
    }

    /// One poll: loads when the directory changed and has settled.
    pub fn poll(&mut self) -> Outcome {
        let now = self.fingerprint_now();
        if now == self.seen {
            self.pending = None;
            return Outcome::Unchanged;
        }
        match self.pending.take() {
            Some((prev, polls)) if prev == now || polls >= MAX_SETTLE_POLLS => {
                self.writing.clear();
                self.reload_with(now)
            }
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

    /// Takes note of a file event (from [`spawn_watcher`]'s inotify watch): an in-place
    /// write in progress, or a finished change (closed after writing, renamed, removed).
    pub fn note_event(&mut self, event: &notify::Event) {
        use notify::EventKind::{Access, Create, Modify, Remove};
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
        // No path: the watch lost events (queue overflow); have the directory checked.
        self.finished |= event.paths.is_empty();
        for path in &event.paths {
            let config =
                path.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.') && is_watched(n));
            match event.kind {
                Access(AccessKind::Close(AccessMode::Write)) => {
                    self.writing.remove(path);
                    self.finished |= config;
                }
                Create(CreateKind::File | CreateKind::Any) | Modify(ModifyKind::Data(_) | ModifyKind::Any)
                    if config =>
                {
                    self.writing.insert(path.clone());
                }
                // Renames of any entry count: Kubernetes swaps a hidden `..data` symlink.
                Modify(ModifyKind::Name(_)) | Remove(_) | Create(CreateKind::Folder) => {
                    self.writing.remove(path);
                    self.finished = true;
                }
                _ => {}
            }
        }
    }

    /// After file events: loads at once when a change finished and no config file is
    /// still being written in place (those wait for their close, or settle as polls see them).
    /// Event-driven loads are at least [`EVENT_MIN_GAP`] apart (a file rewritten many times a
    /// second makes one load per gap, released by a timer).
    pub fn on_events(&mut self) -> Outcome {
        if !self.writing.is_empty() {
            return Outcome::Settling;
        }
        if !self.finished {
            return Outcome::Unchanged;
        }
        if self.held_until().is_some() {
            return Outcome::Settling;
        }
        self.finished = false;
        let now = self.fingerprint_now();
        if now == self.seen {
            return Outcome::Unchanged;
        }
        self.pending = None;
        self.last_event_load = Some(Instant::now());
        self.reload_with(now)
    }

    /// When a finished change held back by [`EVENT_MIN_GAP`] may load.
    fn held_until(&self) -> Option<Instant> {
        let at = self.last_event_load? + self.min_event_gap;
        (self.finished && self.writing.is_empty() && at > Instant::now()).then_some(at)
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
        let options = &self.state.options;
        let t0 = Instant::now();
        let known = files_of(&options.config_dir, &fp.0[..fp.1.min(fp.0.len())]);
        self.seen = fp;
        let outcome = match load_stamped(&options.config_dir, &options.node, &mut self.cache, known) {
            Ok(compiled) => {
                let t_load = t0.elapsed();
                let (outcome, previous) = apply_retiring(&self.state, compiled);
                tracing::debug!(load_ms = ms(t_load), total_ms = ms(t0.elapsed()), "reload done");
                // The watcher frees it at a tick 300 ms or more later: dropping a large runtime takes as long
                // as building it, and the new one should have the CPU for its first requests.
                if self.deferred_frees {
                    self.retired.extend(previous.map(|p| (Instant::now(), p)));
                } else {
                    drop(previous);
                    release_free_memory();
                }
                outcome
            }
            Err(errors) => {
                reject(&self.state, &errors);
                Outcome::Rejected(errors)
            }
        };
        self.trim = self.deferred_frees;
        outcome
    }
}

/// Publishes `compiled` as the next version (unless it equals the serving snapshot).
pub fn apply(state: &State, compiled: Compiled) -> Outcome {
    apply_retiring(state, compiled).0
}

/// [`apply`], also returning the runtime that was serving before (when replaced), so that the
/// caller can free it later, not while the new runtime takes its first requests.
fn apply_retiring(state: &State, compiled: Compiled) -> (Outcome, Option<Arc<Runtime>>) {
    let previous = state.current.load_full();
    if *previous.snapshot == compiled.snapshot && *previous.credentials == compiled.credentials {
        tracing::info!(version = previous.version, "config reloaded: no change in the compiled snapshot");
        return (Outcome::Same, None);
    }
    for w in &compiled.warnings {
        tracing::warn!("{w}");
    }
    let version = previous.version + 1;
    let listeners = compiled.snapshot.listeners.len();
    let clusters = compiled.snapshot.clusters.len();
    let t0 = Instant::now();
    let next = Runtime::with_credentials(compiled.snapshot, version, Some(&previous), compiled.credentials);
    let t_runtime = t0.elapsed();
    state.publish(next);
    tracing::debug!(runtime_ms = ms(t_runtime), publish_ms = ms(t0.elapsed() - t_runtime), "runtime built");
    {
        let mut status = state.status.lock().unwrap_or_else(|e| e.into_inner());
        status.applied_version = version;
        status.reloads += 1;
    }
    state.metrics.set_config_version(version);
    state.metrics.config_reloaded();
    tracing::info!(version, objects = compiled.objects, listeners, clusters, "config change applied");
    (Outcome::Applied(version), Some(previous))
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
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let fs_watch = watch_files(&state.options.config_dir, events_tx);
    let mut reloader = Reloader::new(state, loaded);
    reloader.deferred_frees = true;
    // The first load's peak (parse, validate, compile) is freed by now: give it back.
    release_free_memory();
    let thread = std::thread::Builder::new().name("weir-reload".into()).spawn(move || {
        #[cfg(unix)]
        let mut hangup = hangup;
        // Kept for as long as the thread runs (dropping it ends the inotify watch).
        let _fs_watch = fs_watch;
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
                let held = reloader.held_until();
                let release = async {
                    match held {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = &mut stop_rx => break,
                    Some(event) = events.recv() => {
                        reloader.note_event(&event);
                        // Events that arrive together (a tool writing several files) make one load.
                        let until = tokio::time::Instant::now() + EVENT_COALESCE;
                        while let Ok(Some(event)) = tokio::time::timeout_at(until, events.recv()).await {
                            reloader.note_event(&event);
                        }
                        reloader.on_events();
                    }
                    () = release => {
                        reloader.on_events();
                    }
                    _ = tick.tick() => {
                        reloader.tidy();
                        // A finished change held back by the event gap, then what polling sees.
                        reloader.on_events();
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

/// Events arriving within this long of the first one are taken together.
const EVENT_COALESCE: Duration = Duration::from_millis(2);

/// How long a replaced runtime is kept before [`Reloader::tidy`] frees it.
const RETIRE_AFTER: Duration = Duration::from_millis(300);

/// Event-driven loads start at least this far apart (Istio debounces pushes by 100 ms too).
pub const EVENT_MIN_GAP: Duration = Duration::from_millis(100);

/// Watches `dir` (recursively; a single file: its directory) for file events.
/// `None` when the system cannot (no inotify, limits reached): polling alone then finds changes.
fn watch_files(
    dir: &Path,
    events: tokio::sync::mpsc::UnboundedSender<notify::Event>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(e) => {
            let _ = events.send(e);
        }
        // Overflowed queue or similar: have the directory checked.
        Err(e) => {
            tracing::debug!("file watch: {e}");
            let _ = events.send(notify::Event::new(notify::EventKind::Remove(notify::event::RemoveKind::Any)));
        }
    };
    let (path, mode) = if dir.is_dir() {
        (dir.to_path_buf(), notify::RecursiveMode::Recursive)
    } else {
        (dir.parent().map(Path::to_path_buf).unwrap_or_default(), notify::RecursiveMode::NonRecursive)
    };
    let mut watcher = notify::recommended_watcher(handler)
        .map_err(|e| tracing::warn!("file events unavailable, polling every {POLL_INTERVAL:?} only: {e}"))
        .ok()?;
    match watcher.watch(&path, mode) {
        Ok(()) => Some(watcher),
        Err(e) => {
            tracing::warn!("cannot watch {} for file events, polling only: {e}", path.display());
            None
        }
    }
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

    /// A ServiceEntry `name.example.com` (port 80, HTTP) with one endpoint.
    fn service_entry(name: &str, address: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  hosts: [{name}.example.com]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
             ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: {address}}}]\n"
        )
    }

    /// A VirtualService on `gw` for `name.example.com` that sets response header `x-v: version`.
    fn virtual_service(name: &str, version: u32) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  hosts: [{name}.example.com]\n  gateways: [gw]\n  http:\n  - route:\n    \
             - destination: {{host: {name}.example.com}}\n      headers: {{response: {{set: {{x-v: \"{version}\"}}}}}}\n"
        )
    }

    /// The `x-v` value the gateway's route for `name.example.com` sets.
    fn served_version(state: &State, name: &str) -> Option<String> {
        let rt = state.current.load();
        let host = format!("{name}.example.com");
        let vh = rt
            .snapshot
            .route_tables
            .iter()
            .filter(|t| t.name.starts_with("http."))
            .flat_map(|t| &t.virtual_hosts)
            .find(|v| v.domains.contains(&host.as_str().into()))?;
        let set = &vh.routes.first()?.response_headers.set;
        set.iter().find(|(k, _)| &**k == "x-v").map(|(_, v)| v.to_string())
    }

    /// A directory of many files: the gateway, services and routes in files of their own.
    fn many_files(d: &TempDir, n: usize) {
        d.write("gw.yaml", &gateway(8080));
        for i in 0..n {
            d.write(&format!("svc/se-{i}.yaml"), &service_entry(&format!("s{i}"), &format!("10.0.0.{}", i + 1)));
            d.write(&format!("routes/vs-{i}.yaml"), &virtual_service(&format!("s{i}"), 1));
        }
    }

    #[test]
    fn one_edited_file_is_the_only_one_parsed_and_the_result_is_a_full_loads() {
        let d = TempDir::new("cache");
        many_files(&d, 8);
        let (state, fp) = state_for(&d.0);
        let mut r = Reloader::new(state.clone(), fp);
        // Warm the cache (another test's load may have taken the primed one).
        let _ = r.reload();
        assert_eq!(r.cache().len(), 17);
        let v = state.current.load().version;

        d.write("routes/vs-3.yaml", &virtual_service("s3", 2));
        assert_eq!(r.reload(), Outcome::Applied(v + 1));
        assert_eq!(r.cache().parsed_last(), 1, "only the edited file is parsed");
        assert!(r.cache().registry_reused_last(), "a route edit keeps the registry");
        assert_eq!(served_version(&state, "s3").as_deref(), Some("2"));
        let fresh = load(&d.0, &Node::default()).unwrap();
        assert_eq!(*state.current.load().snapshot, fresh.snapshot, "cached and full loads agree");

        // A service edit rebuilds the registry: the new endpoint is served.
        d.write("svc/se-5.yaml", &service_entry("s5", "10.9.9.9"));
        assert_eq!(r.reload(), Outcome::Applied(v + 2));
        assert_eq!(r.cache().parsed_last(), 1);
        assert!(!r.cache().registry_reused_last());
        let rt = state.current.load();
        let c = rt.snapshot.clusters.iter().find(|c| c.service.as_ref() == "s5.example.com").unwrap();
        assert_eq!(&*c.endpoints[0].address, "10.9.9.9");
        assert_eq!(*rt.snapshot, load(&d.0, &Node::default()).unwrap().snapshot);

        // Nothing changed: nothing parsed.
        assert_eq!(r.reload(), Outcome::Same);
        assert_eq!(r.cache().parsed_last(), 0);
    }

    #[test]
    fn files_from_the_fingerprint_are_the_loaders_files_in_its_order() {
        let d = TempDir::new("order");
        for f in ["b.yaml", "a/z.yaml", "a/b/c.json", "a.yml", "ab.yaml", "a/a.yaml", "z/x.yaml", ".h/x.yaml"] {
            d.write(f, "");
        }
        d.write(MESH_CONFIG_FILE, "{}\n");
        d.write("a/weir-mesh.yaml", "");
        let fp = fingerprint(&d.0);
        let ours: Vec<PathBuf> = files_of(&d.0, &fp.0).unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(ours, weir_api::load::config_files(&d.0).unwrap());
        assert_eq!(files_of(&d.0.join("b.yaml"), &fp.0), None, "a single file: the loader's own way");
    }

    #[test]
    fn cached_loads_report_the_same_errors_in_the_same_order() {
        let d = TempDir::new("cache-errors");
        many_files(&d, 3);
        d.write("a/bad.yaml", INVALID_VS);
        d.write("z.yaml", "kind: [unclosed\n");
        let mut cache = FileCache::default();
        let first = load_with(&d.0, &Node::default(), &mut cache).unwrap_err();
        assert_eq!(first, load(&d.0, &Node::default()).unwrap_err());
        d.write("routes/vs-1.yaml", INVALID_VS.replace("name: bad", "name: bad2").as_str());
        let second = load_with(&d.0, &Node::default(), &mut cache).unwrap_err();
        assert_eq!(cache.parsed_last(), 1, "only the edited file");
        assert_eq!(second, load(&d.0, &Node::default()).unwrap_err());
        assert_eq!(second.len(), 3, "{second:?}");
        // The watcher's way: files and stamps from its fingerprint.
        let known = files_of(&d.0, &fingerprint(&d.0).0);
        assert!(known.is_some());
        assert_eq!(load_stamped(&d.0, &Node::default(), &mut cache, known).unwrap_err(), second);
        assert_eq!(cache.parsed_last(), 0);
    }

    #[test]
    fn a_deleted_file_is_removed() {
        let d = TempDir::new("delete");
        many_files(&d, 3);
        let (state, fp) = state_for(&d.0);
        let mut r = Reloader::new(state.clone(), fp);
        let _ = r.reload();
        assert_eq!(served_version(&state, "s2").as_deref(), Some("1"));
        std::fs::remove_file(d.0.join("routes/vs-2.yaml")).unwrap();
        assert!(matches!(r.reload(), Outcome::Applied(_)));
        assert_eq!(served_version(&state, "s2"), None, "its route is gone");
        assert_eq!(r.cache().len(), 6, "and so is its cache entry");
    }

    /// Waits (bounded) for a file event on `path` that `want` accepts, handing every event to `r`.
    fn pump_until(
        r: &mut Reloader,
        events: &mut tokio::sync::mpsc::UnboundedReceiver<notify::Event>,
        path: &Path,
        want: impl Fn(&notify::EventKind) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no such event for {}", path.display());
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let Ok(Some(e)) = rt.block_on(async { tokio::time::timeout(left, events.recv()).await }) else {
                continue;
            };
            r.note_event(&e);
            if e.paths.iter().any(|p| p == path) && want(&e.kind) {
                return;
            }
        }
    }

    #[test]
    fn an_in_place_write_loads_once_closed_and_a_rename_over_at_once() {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, ModifyKind};
        use std::io::Write;
        let d = TempDir::new("events");
        many_files(&d, 2);
        let (state, fp) = state_for(&d.0);
        let mut r = Reloader::new(state.clone(), fp);
        r.min_event_gap = Duration::ZERO;
        let _ = r.reload();
        let v = state.current.load().version;
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let _watch = watch_files(&d.0, tx).expect("inotify");

        // Half written, still open: not loaded, though the directory changed.
        let path = d.0.join("routes/vs-1.yaml");
        let text = virtual_service("s1", 7);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&text.as_bytes()[..text.len() / 2]).unwrap();
        f.flush().unwrap();
        pump_until(&mut r, &mut events, &path, |k| matches!(k, EventKind::Modify(ModifyKind::Data(_))));
        assert_eq!(r.on_events(), Outcome::Settling);
        assert_eq!(state.current.load().version, v);
        // Finished and closed: loaded at once.
        f.write_all(&text.as_bytes()[text.len() / 2..]).unwrap();
        drop(f);
        pump_until(&mut r, &mut events, &path, |k| {
            matches!(k, EventKind::Access(AccessKind::Close(AccessMode::Write)))
        });
        assert_eq!(r.on_events(), Outcome::Applied(v + 1));
        assert_eq!(served_version(&state, "s1").as_deref(), Some("7"));

        // Written elsewhere and renamed over (what editors and config tools do): loaded at once.
        let path = d.0.join("routes/vs-0.yaml");
        let tmp = d.0.join("routes/.vs-0.yaml.tmp");
        std::fs::write(&tmp, virtual_service("s0", 9)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        pump_until(&mut r, &mut events, &path, |k| matches!(k, EventKind::Modify(ModifyKind::Name(_))));
        assert_eq!(r.on_events(), Outcome::Applied(v + 2));
        assert_eq!(served_version(&state, "s0").as_deref(), Some("9"));
        assert_eq!(r.cache().parsed_last(), 1);
    }

    #[test]
    fn watcher_serves_a_renamed_over_file_without_waiting_for_a_poll() {
        let d = TempDir::new("watch-rename");
        many_files(&d, 2);
        let (state, fp) = state_for(&d.0);
        // Polls far apart: only file events can explain a quick reload.
        let watcher = spawn_watcher(state.clone(), fp, Duration::from_secs(3600)).unwrap();
        let mut changes = state.changes.subscribe();
        let tmp = d.0.join("vs-1.yaml.tmp");
        std::fs::write(&tmp, virtual_service("s1", 5)).unwrap();
        std::fs::rename(&tmp, d.0.join("routes/vs-1.yaml")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let got = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), changes.changed()).await });
        assert!(matches!(got, Ok(Ok(()))), "no reload after the rename");
        assert_eq!(served_version(&state, "s1").as_deref(), Some("5"));
        // A deleted file is seen the same way.
        std::fs::remove_file(d.0.join("routes/vs-0.yaml")).unwrap();
        let got = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), changes.changed()).await });
        assert!(matches!(got, Ok(Ok(()))), "no reload after the removal");
        assert_eq!(served_version(&state, "s0"), None);
        watcher.stop();
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
