//! `weir run` as operators run it: the real binary on a temporary config
//! directory, free ports, the admin server, live edits and signals.
//!
//! Every wait is bounded (polling with a deadline); a failure prints the
//! process's stderr. The traffic checks need the data path (`server::serve`).

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{TempDir, free_port, try_request};

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

/// A VirtualService answering every request at the gateway with `body`.
fn direct(body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: hello
  namespace: default
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
  - directResponse:
      status: 200
      body: {{string: \"{body}\"}}
"
    )
}

/// Line 11 (`timeout: 0s`) is invalid.
const INVALID_VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: hello
  namespace: default
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
  - directResponse: {status: 200, body: {string: broken}}
    timeout: 0s
";

/// A running `weir run`; killed on drop if still running.
struct Weir {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    admin: SocketAddr,
}

fn drain_into(mut r: impl Read + Send + 'static, buf: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.lock().expect("buffer").push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
}

impl Weir {
    fn start(dir: &Path, admin: SocketAddr, extra: &[&str]) -> Weir {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
        cmd.args(["run", "--config"])
            .arg(dir)
            .args(["--admin", &admin.to_string(), "--bind", "127.0.0.1", "--mesh-bind", "127.0.0.1"])
            .args(["--proxy-port", "0", "--concurrency", "2", "--drain-timeout", "1s"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start weir run");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        drain_into(child.stdout.take().expect("stdout"), stdout.clone());
        drain_into(child.stderr.take().expect("stderr"), stderr.clone());
        Weir { child, stdout, stderr, admin }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout").clone()
    }

    /// Panics (with the logs) if the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.wait_output();
            panic!("weir run exited early ({status}):\n{}", self.stderr());
        }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.admin, "admin", path)
    }

    /// Waits until `/ready` answers 200.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.assert_running();
            if let Some((200, body)) = self.get("/ready") {
                assert_eq!(body, "LIVE\n");
                return;
            }
            assert!(Instant::now() < deadline, "/ready not 200 within 15s; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn config_dump(&self) -> serde_json::Value {
        let (status, body) = self.get("/config_dump").expect("config_dump answers");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("config_dump is JSON")
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// After exit: waits (bounded) until the reader threads have collected the last output
    /// (each holds a clone of its buffer until its pipe closes).
    fn wait_output(&self) {
        let _ = wait_for(Duration::from_secs(2), || {
            (Arc::strong_count(&self.stdout) == 1 && Arc::strong_count(&self.stderr) == 1).then_some(())
        });
    }

    /// Waits for the process to exit; returns its exit code.
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.wait_output();
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("weir run did not exit within {within:?}; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some` or `within` passes.
fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 GET with `connection: close`; `None` when the connection fails.
fn http_get(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    try_request(addr, host, path, &[("user-agent", "weir-test")]).ok().map(|r| (r.status, r.body))
}

#[test]
fn serves_rejects_invalid_edits_applies_valid_ones_and_stops_on_sigterm() {
    let dir = TempDir::new("lifecycle");
    let port = free_port();
    let traffic = SocketAddr::from(([127, 0, 0, 1], port));
    dir.write("gateway.yaml", &gateway(port));
    let vs = dir.write("vs.yaml", &direct("v1"));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut weir = Weir::start(dir.path(), admin, &["--access-log", "text"]);
    weir.wait_ready();

    let body = || http_get(traffic, "example.com", "/hello");
    assert_eq!(body(), Some((200, "v1".to_string())), "stderr:\n{}", weir.stderr());
    let dump = weir.config_dump();
    assert_eq!(dump["applied_version"], 1);

    // An invalid edit: rejected with file:line, version 1 keeps serving.
    std::fs::write(&vs, INVALID_VS).expect("edit");
    let want = format!("{}:11: VirtualService default/hello: spec.http[0].timeout:", vs.display());
    let rejected = wait_for(Duration::from_secs(3), || {
        let d = weir.config_dump();
        let errors = d["status"]["last_rejected"]["errors"].as_array()?.clone();
        errors.iter().any(|e| e.as_str().is_some_and(|e| e.starts_with(&want))).then_some(d)
    });
    let dump = rejected.unwrap_or_else(|| panic!("no rejection with {want:?}; stderr:\n{}", weir.stderr()));
    assert_eq!(dump["applied_version"], 1);
    assert_eq!(dump["status"]["rejected_reloads"], 1);
    assert_eq!(body(), Some((200, "v1".to_string())), "the last good config keeps serving");
    assert!(weir.stderr().contains(&want), "rejection not logged:\n{}", weir.stderr());

    // A valid edit serves within one second.
    let edited = Instant::now();
    std::fs::write(&vs, direct("v2")).expect("edit");
    let served = wait_for(Duration::from_secs(1), || (body()? == (200, "v2".to_string())).then_some(()));
    assert!(served.is_some(), "valid edit not served within 1s ({:?}); stderr:\n{}", edited.elapsed(), weir.stderr());
    let dump = weir.config_dump();
    assert_eq!(dump["applied_version"], 2);
    assert_eq!(dump["status"]["reloads"], 1);

    let (status, stats) = weir.get("/stats/prometheus").expect("stats");
    assert_eq!(status, 200);
    for want in [
        "istio_requests_total{",
        "weir_config_version 2\n",
        "weir_config_reloads_total 1\n",
        "weir_config_rejected_total 1\n",
    ] {
        assert!(stats.contains(want), "{want:?} missing in:\n{stats}");
    }

    weir.signal("TERM");
    assert_eq!(weir.wait_exit(Duration::from_secs(10)), Some(0), "stderr:\n{}", weir.stderr());
    let log = weir.stdout();
    assert!(
        log.lines().any(|l| l.contains("\"GET /hello HTTP/1.1\" 200 ")
            && l.contains("\"weir-test\"")
            && l.contains("\"example.com\"")),
        "no access log line in stdout:\n{log}"
    );
}

#[test]
fn invalid_config_fails_at_startup_with_file_and_line() {
    let dir = TempDir::new("invalid");
    dir.write("gateway.yaml", &gateway(free_port()));
    let vs = dir.write("vs.yaml", INVALID_VS);
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut weir = Weir::start(dir.path(), admin, &[]);
    assert_eq!(weir.wait_exit(Duration::from_secs(10)), Some(1));
    let err = weir.stderr();
    assert!(err.contains("invalid configuration"), "{err}");
    assert!(
        err.contains(&format!("{}:11: VirtualService default/hello: spec.http[0].timeout:", vs.display())),
        "{err}"
    );
}

#[test]
fn busy_admin_port_fails_at_startup() {
    let dir = TempDir::new("busy-admin");
    dir.write("gateway.yaml", &gateway(free_port()));
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let admin = taken.local_addr().expect("addr");
    let mut weir = Weir::start(dir.path(), admin, &[]);
    assert_eq!(weir.wait_exit(Duration::from_secs(10)), Some(1));
    let err = weir.stderr();
    assert!(err.contains(&format!("cannot listen on admin address {admin}")), "{err}");
}

#[test]
fn busy_listener_port_fails_at_startup_naming_port_and_gateway() {
    let dir = TempDir::new("busy-listener");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    dir.write("gateway.yaml", &gateway(port));
    dir.write("vs.yaml", &direct("v1"));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut weir = Weir::start(dir.path(), admin, &[]);
    assert_eq!(weir.wait_exit(Duration::from_secs(10)), Some(1), "stderr:\n{}", weir.stderr());
    let err = weir.stderr();
    assert!(err.contains(&format!(":{port}")), "port {port} not named:\n{err}");
    assert!(err.contains("Gateway default/gw"), "Gateway not named:\n{err}");
}
