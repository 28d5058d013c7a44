//! `weir run` as a library call: load the config, start the admin server and
//! the config watcher, serve traffic on a multi-thread runtime until
//! SIGTERM/SIGINT, then drain and return.
//!
//! Threads: `weir-worker-*` (traffic, `options.concurrency` of them; with one, the
//! traffic runtime is a current-thread runtime on the calling thread),
//! `weir-admin` (admin server, its own current-thread runtime),
//! `weir-reload` (config watcher and compiler), `weir-access-log` (writer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::server::{self, ServeError};
use crate::{Options, Runtime, State, admin, reload};

/// Why `weir run` could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The first load of the config directory failed; nothing was served.
    #[error("invalid configuration in {dir}, not serving ({} error{}):\n  {}",
        errors.len(), if errors.len() == 1 { "" } else { "s" }, errors.join("\n  "))]
    Config { dir: String, errors: Vec<String> },
    #[error("cannot listen on admin address {address}: {message}")]
    Admin { address: SocketAddr, message: String },
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("cannot start {what}: {message}")]
    Start { what: &'static str, message: String },
}

/// Logs to stderr; `RUST_LOG` filters (default `info`). Does nothing when a
/// subscriber is already installed.
pub fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_env_filter(filter)
        .try_init();
}

/// How long serving may overrun `drain_timeout` before `run` gives up waiting.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Runs until SIGTERM/SIGINT and a drain; returns `Ok` after a clean shutdown.
pub fn run(options: Options) -> Result<(), RunError> {
    init_tracing();
    // One worker: a current-thread runtime on this thread, without the work-stealing
    // scheduler's cross-thread bookkeeping (about 10% less CPU per request, BENCHMARKS.md).
    let on_this_thread = options.concurrency <= 1;
    let rt = if on_this_thread {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.concurrency)
            .thread_name("weir-worker")
            .on_thread_start(crate::alloc::serve_traffic_on_this_thread)
            .enable_all()
            .build()
    }
    .map_err(|e| RunError::Start { what: "the traffic runtime", message: e.to_string() })?;
    // Installed first, so a signal during startup is handled (queued) instead of killing the process.
    let signals = {
        let _guard = rt.enter();
        Signals::new()?
    };
    let dir = options.config_dir.clone();
    // Fingerprint before loading, so an edit made during the load is seen by the watcher.
    let fingerprint = reload::fingerprint(&dir);
    let compiled = reload::load(&dir, &options.node)
        .map_err(|errors| RunError::Config { dir: dir.display().to_string(), errors })?;
    for w in &compiled.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(
        config = %dir.display(),
        objects = compiled.objects,
        listeners = compiled.snapshot.listeners.len(),
        clusters = compiled.snapshot.clusters.len(),
        "config loaded (version 1)"
    );
    let dns = crate::resolve::Dns::new(options.dns_servers.clone());
    let state = State::new(options, Runtime::with_dns(compiled.snapshot, 1, None, compiled.credentials, dns));
    state.metrics.set_config_version(1);

    let admin = admin::spawn(state.clone())
        .map_err(|e| RunError::Admin { address: state.options.admin, message: e.to_string() })?;
    tracing::info!(address = %admin.local_addr(), "admin server listening");
    let watcher = reload::spawn_watcher(state.clone(), fingerprint, reload::POLL_INTERVAL)
        .map_err(|e| RunError::Start { what: "the config watcher", message: e.to_string() })?;

    // DNS clusters: resolve their names now and keep the answers fresh (see `resolve`).
    let refresher = {
        let _guard = rt.enter();
        crate::resolve::spawn_refresher(state.clone())
    };
    // With one worker this thread serves traffic from here on (the first load is done).
    if on_this_thread {
        crate::alloc::serve_traffic_on_this_thread();
    }
    let result = rt.block_on(serve_until_signal(state.clone(), &admin, signals));
    refresher.abort();

    watcher.stop();
    admin.stop();
    if !state.access_log.flush(Duration::from_secs(1)) {
        tracing::warn!("access log: some lines may not have been written");
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    if result.is_ok() {
        tracing::info!("stopped");
    }
    result
}

async fn serve_until_signal(state: Arc<State>, admin: &admin::Admin, mut signals: Signals) -> Result<(), RunError> {
    let drain_timeout = state.options.drain_timeout;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let serve = server::serve(state, shutdown_rx);
    tokio::pin!(serve);
    tokio::select! {
        r = &mut serve => {
            r?;
            tracing::warn!("the server stopped without a shutdown signal");
            return Ok(());
        }
        name = signals.next() => {
            tracing::info!("{name} received: draining (up to {})", weir_compile::model::duration::text(&drain_timeout));
        }
    }
    admin.set_draining();
    let _ = shutdown_tx.send(true);
    tokio::select! {
        r = &mut serve => r?,
        _ = tokio::time::sleep(drain_timeout + DRAIN_GRACE) => {
            tracing::warn!("drain did not finish in time; exiting");
        }
        name = signals.next() => {
            tracing::warn!("{name} received again: exiting without waiting for the drain");
        }
    }
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C); also holds a SIGHUP handler so that a
/// SIGHUP before the watcher starts does not terminate the process.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    _hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, RunError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let err = |e: std::io::Error| RunError::Start { what: "signal handling", message: e.to_string() };
            Ok(Signals {
                term: signal(SignalKind::terminate()).map_err(err)?,
                int: signal(SignalKind::interrupt()).map_err(err)?,
                _hangup: signal(SignalKind::hangup()).map_err(err)?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
