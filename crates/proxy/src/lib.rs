//! weir's data path: one process that serves the Gateways and mesh routes of
//! a config directory, as Istio's Envoy would.
//!
//! Request phases, named as they appear in logs: `accept` (listener,
//! filter chain) -> `route` (virtual host, route, faults) -> `balance`
//! (cluster, endpoint) -> `connect` (pool, upstream request, retries).
//!
//! The compiled snapshot lives in a [`Runtime`] behind an `ArcSwap`: a
//! request keeps the runtime it started with; a reload swaps in a new one
//! and notifies the listener manager, which only rebinds changed listeners.

pub mod access_log;
pub mod admin;
pub mod alloc;
pub mod body;
mod coalesce;
mod connect;
pub mod demo;
mod drain;
pub mod filters;
pub mod headers;
pub mod lb;
pub mod local_reply;
pub mod metrics;
mod outlier;
pub mod path;
mod pool;
mod record;
pub mod reload;
mod request;
pub mod resolve;
pub mod router;
pub mod run;
pub mod runtime;
pub mod server;
mod sni;
mod tcp;
#[doc(hidden)]
pub mod testing;
pub mod tls;
pub mod upstream;
mod websocket;
#[cfg(target_os = "linux")]
mod zero_copy;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use weir_compile::Node;

pub use runtime::Runtime;

/// How access logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// Envoy's default text format.
    Text,
    Json,
    Off,
}

/// `weir run`'s settings.
#[derive(Clone, Debug)]
pub struct Options {
    pub config_dir: PathBuf,
    pub node: Node,
    /// Admin server address (`/ready`, `/stats/prometheus`, `/config_dump`, `/clusters`).
    pub admin: SocketAddr,
    /// Address of gateway listeners.
    pub bind: IpAddr,
    /// Address of sidecar outbound listeners and the explicit HTTP proxy.
    pub mesh_bind: IpAddr,
    /// Explicit HTTP proxy port (absolute-form requests routed by authority); 0 disables it.
    pub proxy_port: u16,
    /// Worker threads for the traffic runtime.
    pub concurrency: usize,
    pub access_log: AccessLogFormat,
    /// Add `x-weir-reason` to locally generated responses at gateway listeners
    /// (always on at sidecar listeners unless `reason_header_sidecar` is false).
    pub reason_header_gateway: bool,
    pub reason_header_sidecar: bool,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub drain_timeout: Duration,
    /// DNS servers for host-name endpoints (`--dns-server`); empty: the system configuration.
    pub dns_servers: Vec<SocketAddr>,
    /// Serve HTTP/1.0 requests (Istio's `HTTP10` node metadata); else they get 426, as from Envoy.
    pub accept_http10: bool,
}

impl Options {
    /// Defaults of `weir run` for a config directory.
    pub fn new(config_dir: PathBuf) -> Options {
        Options {
            config_dir,
            node: Node::default(),
            admin: SocketAddr::from(([127, 0, 0, 1], 15000)),
            bind: IpAddr::from([0, 0, 0, 0]),
            mesh_bind: IpAddr::from([127, 0, 0, 1]),
            proxy_port: 15001,
            concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            access_log: AccessLogFormat::Text,
            reason_header_gateway: false,
            reason_header_sidecar: true,
            drain_timeout: Duration::from_secs(5),
            dns_servers: Vec::new(),
            accept_http10: false,
        }
    }
}

/// What `/config_dump` reports about configuration changes.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ConfigStatus {
    /// Version of the snapshot being served (increments per applied change).
    pub applied_version: u64,
    /// The last change that was rejected, with its errors (file:line: message).
    pub last_rejected: Option<RejectedChange>,
    pub reloads: u64,
    pub rejected_reloads: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RejectedChange {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub errors: Vec<String>,
}

/// State shared by the traffic runtime, the admin server and the reloader.
pub struct State {
    /// The runtime new requests use.
    pub current: ArcSwap<Runtime>,
    /// Bumped with the runtime version after every swap; the listener manager watches it.
    pub changes: watch::Sender<u64>,
    pub status: Mutex<ConfigStatus>,
    pub metrics: metrics::Metrics,
    pub access_log: access_log::AccessLog,
    pub options: Options,
    /// Set once the first snapshot serves (`/ready`).
    pub ready: std::sync::atomic::AtomicBool,
}

impl State {
    pub fn new(options: Options, first: Runtime) -> Arc<State> {
        let version = first.version;
        Arc::new(State {
            current: ArcSwap::from_pointee(first),
            changes: watch::channel(version).0,
            status: Mutex::new(ConfigStatus { applied_version: version, ..ConfigStatus::default() }),
            metrics: metrics::Metrics::new(),
            access_log: access_log::AccessLog::new(options.access_log),
            options,
            ready: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Swaps in `next` and notifies listeners.
    pub fn publish(&self, next: Runtime) {
        let v = next.version;
        self.current.store(Arc::new(next));
        let _ = self.changes.send(v);
    }
}
