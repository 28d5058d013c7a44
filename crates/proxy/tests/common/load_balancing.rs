//! Helpers for the load-balancing tests: a proxy compiled for a node with a
//! locality and labels, endpoints with weights and localities, and a backend
//! that is always slow.
#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_compile::message::Messages;
use weir_compile::{ConfigStore, Input, MeshConfig, Node, Registry};
use weir_proxy::{Runtime, State};

use super::{Proxy, options, wait_for};

/// Compiles `yaml` for `node`.
pub fn runtime_for(yaml: &str, node: &Node, version: u64, previous: Option<&Runtime>) -> Runtime {
    let loaded = weir_api::load_str(yaml, "test.yaml", &weir_api::LoadOptions::default());
    assert!(loaded.errors.is_empty() && loaded.problems.is_empty(), "{:?} {:?}", loaded.errors, loaded.problems);
    for o in &loaded.objects {
        let report = weir_api::validate(o);
        assert!(!report.has_errors(), "{} is invalid: {:?}", o.key(), report.findings);
    }
    let store = ConfigStore::new(loaded.objects);
    let mesh = MeshConfig::default();
    let mut messages = Messages::default();
    let registry = Registry::from_config(&store, &mesh, node, &mut messages);
    let snapshot = weir_compile::compile(Input { config: &store, registry: &registry, mesh: &mesh }, node);
    Runtime::new(snapshot, version, previous)
}

/// A proxy serving `yaml` for a node in `locality` (`region/zone/subzone`).
pub async fn start_at(locality: &str, yaml: &str) -> Proxy {
    let mut o = options(0);
    o.node.locality = Some(locality.to_string());
    let node = o.node.clone();
    let state = State::new(o, runtime_for(yaml, &node, 1, None));
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(weir_proxy::server::serve(state.clone(), rx));
    let s = state.clone();
    wait_for("listeners", || s.ready.load(Ordering::SeqCst) || task.is_finished()).await;
    assert!(!task.is_finished(), "serve ended early");
    Proxy { state, shutdown: tx, task }
}

/// Publishes `yaml` compiled for `proxy`'s node.
pub fn publish_for(proxy: &Proxy, yaml: &str) {
    let current = proxy.state.current.load_full();
    let next = runtime_for(yaml, &proxy.state.options.node, current.version + 1, Some(&current));
    proxy.state.publish(next);
}

/// One endpoint of [`service_with`]: backend port, weight, locality (may be empty).
pub struct Ep<'a> {
    pub port: u16,
    pub weight: u32,
    pub locality: &'a str,
}

impl Ep<'_> {
    pub fn clone_ep(&self) -> Ep<'_> {
        Ep { port: self.port, weight: self.weight, locality: self.locality }
    }
}

/// A STATIC ServiceEntry `host` on `port` (HTTP) with weighted, located endpoints on 127.0.0.1.
pub fn service_with(host: &str, port: u16, endpoints: &[Ep<'_>]) -> String {
    let mut eps = String::from("  endpoints:\n");
    for e in endpoints {
        eps.push_str(&format!("  - address: 127.0.0.1\n    ports: {{web: {}}}\n    weight: {}\n", e.port, e.weight));
        if !e.locality.is_empty() {
            eps.push_str(&format!("    locality: {}\n", e.locality));
        }
    }
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {host}, namespace: default}}
spec:
  hosts: [{host}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: web, protocol: HTTP}}]
{eps}---
"
    )
}

/// A DestinationRule for `host` with `traffic_policy` (YAML, indented under `trafficPolicy:`).
pub fn rule(host: &str, traffic_policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}, namespace: default}}
spec:
  host: {host}.default.svc.cluster.local
  trafficPolicy:
{traffic_policy}
---
"
    )
}

/// A backend that answers every request after `delay`, naming itself in `x-backend`.
pub struct SlowBackend {
    pub port: u16,
    pub served: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for SlowBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SlowBackend {
    pub async fn start(name: &str, delay: Duration) -> SlowBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(AtomicUsize::new(0));
        let (name, s) = (name.to_string(), served.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                let (name, s) = (name.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let (name, s) = (name.clone(), s.clone());
                        async move {
                            tokio::time::sleep(delay).await;
                            s.fetch_add(1, Ordering::SeqCst);
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                            resp.headers_mut().insert("x-backend", name.parse().unwrap());
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        SlowBackend { port, served, task }
    }
}
