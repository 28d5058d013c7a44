//! Istio's task 8, Locality Load Balancing (`../shared/spec/tasks.md`):
//! failover and weighted distribution, reproduced with the real `weir run`.
//!
//! How the task is adapted (and only that):
//! - `helloworld` in four localities becomes four small HTTP servers in this
//!   process answering `Hello version: <locality>, instance: ...`; the Kubernetes
//!   Service becomes a ServiceEntry `helloworld.sample.svc.cluster.local` whose
//!   endpoints carry the localities, on a free port instead of 5000.
//! - The `sleep` pod in `region1.zone1` is weir started with
//!   `--namespace sample --locality region1/zone1`.
//! - "Draining" a pod's sidecar (`POST /drain_listeners`) becomes closing that
//!   server's listener: connections to it are refused, as to a drained listener.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use support::*;

/// The task's localities (`region.zone`), as the helloworld pods report them.
const LOCALITIES: [&str; 4] = ["region1.zone1", "region1.zone2", "region2.zone3", "region3.zone4"];

/// `kubectl apply` of the failover DestinationRule (verbatim from the task, plus
/// `maxEjectionPercent: 100`: in Kubernetes a drained pod also turns NotReady and
/// leaves the endpoints istiod sends, so the task never needs more than one outlier
/// ejection; here outlier detection is the only health signal, and with Envoy's
/// default of 10% it would eject none of four endpoints).
const FAILOVER: &str = "\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: helloworld
  namespace: sample
spec:
  host: helloworld.sample.svc.cluster.local
  trafficPolicy:
    connectionPool:
      http:
        maxRequestsPerConnection: 1
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        enabled: true
        failover:
          - from: region1
            to: region2
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 1m
      maxEjectionPercent: 100
";

/// The weighted distribution DestinationRule (verbatim from the task).
const DISTRIBUTE: &str = "\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: helloworld
  namespace: sample
spec:
  host: helloworld.sample.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        enabled: true
        distribute:
        - from: region1/zone1/*
          to:
            \"region1/zone1/*\": 70
            \"region1/zone2/*\": 20
            \"region3/zone4/*\": 10
    outlierDetection:
      consecutive5xxErrors: 100
      interval: 1s
      baseEjectionTime: 1m
";

/// One helloworld pod: answers every request with its locality until drained.
struct Helloworld {
    port: u16,
    drained: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Helloworld {
    fn start(locality: &'static str) -> Helloworld {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let drained = Arc::new(AtomicBool::new(false));
        let d = drained.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if d.load(Ordering::SeqCst) {
                    // Dropping the listener: later connections are refused.
                    return;
                }
                let Ok(mut s) = conn else { continue };
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = format!("Hello version: {locality}, instance: helloworld-{locality}\n");
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Helloworld { port, drained, thread: Some(thread) }
    }

    /// Closes the listener (a drained sidecar) and waits until it is closed.
    fn drain(&mut self) {
        self.drained.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Helloworld {
    fn drop(&mut self) {
        self.drain();
    }
}

/// The four pods, weir as the `sleep` pod's sidecar in region1/zone1, and the config dir.
struct Task {
    pods: Vec<Helloworld>,
    weir: Weir,
    listener: SocketAddr,
    admin: SocketAddr,
    config: std::path::PathBuf,
    _dir: TempDir,
}

impl Task {
    fn start(name: &str, rule: &str) -> Task {
        let pods: Vec<Helloworld> = LOCALITIES.iter().map(|l| Helloworld::start(l)).collect();
        let port = free_port();
        let listener = SocketAddr::from(([127, 0, 0, 1], port));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dir = TempDir::new(name);
        let config = dir.config_dir();
        let mut endpoints = String::new();
        for (pod, locality) in pods.iter().zip(LOCALITIES) {
            endpoints.push_str(&format!(
                "  - address: 127.0.0.1\n    ports: {{http: {}}}\n    locality: {}\n    labels: {{app: helloworld}}\n",
                pod.port,
                locality.replace('.', "/")
            ));
        }
        let service = format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: helloworld
  namespace: sample
spec:
  hosts: [helloworld.sample.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints:
{endpoints}"
        );
        write_objects(&config, &service);
        write_objects(&config, rule);
        let args = ["--role", "sidecar", "--namespace", "sample", "--locality", "region1/zone1", "--concurrency", "2"];
        let weir = Weir::run(&config, admin, &args);
        Task { pods, weir, listener, admin, config, _dir: dir }
    }

    /// `curl helloworld.sample:5000/hello` from the sleep pod.
    fn hello(&self) -> Reply {
        request(self.listener, &format!("helloworld.sample:{}", self.listener.port()), "/hello", &[])
    }

    /// The locality that answered, or the status weir answered with.
    fn who(&self) -> String {
        let r = self.hello();
        if r.status != 200 {
            return format!("status {}", r.status);
        }
        r.body.split(',').next().and_then(|v| v.strip_prefix("Hello version: ")).unwrap_or(&r.body).to_string()
    }

    /// Calls until `locality` answers (the first calls after a drain fail, which
    /// triggers the failover), then checks that it keeps answering.
    fn fails_over_to(&self, locality: &str) {
        let mut seen = Vec::new();
        while seen.last().is_none_or(|w| w != locality) {
            assert!(seen.len() < 20, "no failover to {locality}: {seen:?}\n{}", self.weir.log());
            seen.push(self.who());
        }
        assert!(seen.len() <= 3, "failover to {locality} took {} calls: {seen:?}", seen.len());
        for _ in 0..10 {
            assert_eq!(self.who(), locality);
        }
    }
}

#[test]
fn task_8a_locality_failover() {
    let mut t = Task::start("locality-failover", FAILOVER);
    let _ = (&t.admin, &t.config);
    // "always Hello version: region1.zone1"
    for _ in 0..10 {
        assert_eq!(t.who(), "region1.zone1", "{}", t.weir.log());
    }
    // Drain zone1: "The first call will fail, which triggers the failover", then region1.zone2.
    t.pods[0].drain();
    t.fails_over_to("region1.zone2");
    // Drain zone2: the failover region region2 (priority 3 before region3's 4).
    t.pods[1].drain();
    t.fails_over_to("region2.zone3");
    // Drain region2: only region3 is left.
    t.pods[2].drain();
    t.fails_over_to("region3.zone4");
}

#[test]
fn task_8b_weighted_distribution() {
    let t = Task::start("locality-distribute", DISTRIBUTE);
    let n = 1000;
    let mut counts = std::collections::HashMap::new();
    for _ in 0..n {
        *counts.entry(t.who()).or_insert(0usize) += 1;
    }
    let share = |l: &str| counts.get(l).copied().unwrap_or(0) as f64 / n as f64;
    // "region1/zone1 70%, region1/zone2 20%, region2/zone3 0%, region3/zone4 10%"
    assert!((share("region1.zone1") - 0.7).abs() < 0.06, "{counts:?}");
    assert!((share("region1.zone2") - 0.2).abs() < 0.05, "{counts:?}");
    assert_eq!(share("region2.zone3"), 0.0, "{counts:?}");
    assert!((share("region3.zone4") - 0.1).abs() < 0.04, "{counts:?}");
}
