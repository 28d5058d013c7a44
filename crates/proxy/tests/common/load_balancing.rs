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
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weir_proxy::State;

use super::{Proxy, options, runtime_for, serve_http, static_service};

/// A proxy serving `yaml` for a node in `locality` (`region/zone/subzone`).
pub async fn start_at(locality: &str, yaml: &str) -> Proxy {
    let mut o = options(0);
    o.node.locality = Some(locality.to_string());
    let node = o.node.clone();
    Proxy::serve(State::new(o, runtime_for(yaml, &node, 1, None))).await
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
    static_service(host, port, "HTTP", &eps)
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
        let task = serve_http(listener, move || {
            let (name, s) = (name.clone(), s.clone());
            hyper::service::service_fn(move |_req| {
                let (name, s) = (name.clone(), s.clone());
                async move {
                    tokio::time::sleep(delay).await;
                    s.fetch_add(1, Ordering::SeqCst);
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                    resp.headers_mut().insert("x-backend", name.parse().unwrap());
                    Ok::<_, Infallible>(resp)
                }
            })
        });
        SlowBackend { port, served, task }
    }
}
