//! Harness of the end-to-end task tests: the real `weir run` binary as the
//! sidecar of bookinfo's services (from `weir_proxy::demo`) in this process,
//! a watched config directory, plain HTTP/1.1 requests and bounded waits.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_proxy::demo::{AppTimeouts, BOOKINFO, Bookinfo, BookinfoOptions};

pub fn bookinfo() -> Vec<(&'static str, &'static str)> {
    BOOKINFO.to_vec()
}

/// Bookinfo's services in this process, and `weir run` as their sidecar.
pub struct Mesh {
    // Dropped in this order: weir, the backends, the files.
    pub weir: Weir,
    pub apps: Bookinfo,
    /// The services' port: weir's sidecar outbound listener.
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub _dir: TempDir,
}

impl Mesh {
    /// Starts `services`, then `weir run --role sidecar` on their
    /// ServiceEntries plus `yaml` (each document written as its own file).
    pub fn start(name: &str, services: &[(&str, &str)], timeouts: AppTimeouts, yaml: &[&str]) -> Mesh {
        let port = free_port();
        let listener = SocketAddr::from(([127, 0, 0, 1], port));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let apps = Bookinfo::start(&BookinfoOptions {
            mesh: Some(listener),
            timeouts,
            services: services.iter().map(|(s, v)| (s.to_string(), v.to_string())).collect(),
            ..BookinfoOptions::default()
        })
        .expect("start the backends");
        let dir = TempDir::new(name);
        let config = dir.config_dir();
        std::fs::write(config.join("services.yaml"), apps.service_entries(port)).expect("write services");
        for y in yaml {
            write_objects(&config, y);
        }
        let weir = Weir::run(&config, admin, &["--role", "sidecar", "--concurrency", "1"]);
        Mesh { weir, apps, listener, admin, config, _dir: dir }
    }

    /// `kubectl apply -f`: every object of `yaml` replaces its namesake;
    /// returns once weir serves the change.
    pub fn apply(&self, yaml: &str) {
        let before = self.applied_version();
        write_objects(&self.config, yaml);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let dump = self.config_dump();
            if dump["applied_version"].as_u64().unwrap_or(0) > before {
                return;
            }
            if let Some(rejected) = dump["status"]["last_rejected"].as_object() {
                panic!("weir rejected the change: {rejected:?}");
            }
            assert!(Instant::now() < deadline, "weir did not apply the change in 15s:\n{}", self.weir.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn applied_version(&self) -> u64 {
        self.config_dump()["applied_version"].as_u64().expect("applied_version")
    }

    pub fn config_dump(&self) -> Value {
        let r = request(self.admin, "admin", "/config_dump", &[]);
        assert_eq!(r.status, 200, "{r:?}");
        r.json()
    }

    /// A request "from a pod" to `service`, through weir's sidecar listener.
    pub fn get(&self, service: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        try_request(self.listener, service, path, headers).unwrap_or_else(|e| {
            // A failure to connect is rare and timing-dependent: keep what weir said about it.
            let pid = self.weir.child.id();
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let state =
                state.as_deref().and_then(|s| s.rsplit(')').next()?.split_whitespace().next()).unwrap_or("gone");
            panic!(
                "GET http://{service}{path} via {}: {e} (weir pid {pid}, state {state}); its log:\n{}",
                self.listener,
                self.weir.log()
            )
        })
    }

    /// The product page (JSON), through weir.
    pub fn productpage(&self, headers: &[(&str, &str)]) -> Reply {
        let mut h = headers.to_vec();
        h.push(("accept", "application/json"));
        let r = self.get("productpage", "/productpage", &h);
        assert_eq!((r.status, r.version()), (200, "v1".into()), "{r:?}");
        r
    }
}

/// One object per file, named after its kind and name, so that writing an
/// object again replaces it (as `kubectl apply` does). Files are written
/// beside the config and renamed in, so weir never reads half a file.
pub fn write_objects(dir: &Path, yaml: &str) {
    for doc in yaml.split("\n---\n").map(str::trim).filter(|d| !d.is_empty()) {
        let kind = doc.lines().find_map(|l| l.strip_prefix("kind: ")).expect("kind");
        let name = doc
            .lines()
            .skip_while(|l| !l.starts_with("metadata:"))
            .find_map(|l| l.strip_prefix("  name: "))
            .expect("metadata.name");
        let file = dir.join(format!("{}-{}.yaml", kind.to_lowercase(), name.trim()));
        let tmp = dir.parent().expect("parent").join(format!("{}.tmp", kind.to_lowercase()));
        std::fs::write(&tmp, format!("{doc}\n")).expect("write");
        std::fs::rename(&tmp, &file).expect("rename");
    }
}

/// `weir.log` beside the config directory `config`.
pub fn weir_log(config: &Path) -> PathBuf {
    config.parent().unwrap_or(config).join("weir.log")
}

/// A `weir` child process, killed on drop.
pub struct Weir {
    pub child: Child,
    pub stderr: PathBuf,
}

/// `weir run --config <config> --admin <admin> --proxy-port 0 --access-log off
/// --drain-timeout 100ms <args>`, stdin and stdout closed.
pub fn weir_run(config: &Path, admin: SocketAddr, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .args(["--admin", &admin.to_string(), "--proxy-port", "0", "--access-log", "off"])
        .args(["--drain-timeout", "100ms"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

impl Weir {
    /// [`weir_run`] with its log in `weir.log` beside `config`; returns once ready.
    pub fn run(config: &Path, admin: SocketAddr, args: &[&str]) -> Weir {
        Weir::start(weir_run(config, admin, args), admin, weir_log(config))
    }

    /// Spawns `cmd` (a `weir` command) with stderr to `log`, then waits until
    /// it is ready on `admin`.
    pub fn start(mut cmd: Command, admin: SocketAddr, log: PathBuf) -> Weir {
        let child = cmd.stderr(std::fs::File::create(&log).expect("log file")).spawn().expect("spawn weir");
        let mut weir = Weir { child, stderr: log };
        weir.wait_ready(admin);
        weir
    }

    /// Polls `/ready` until it answers 200 (bounded), failing early if weir exits.
    pub fn wait_ready(&mut self, admin: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("weir exited ({status}) before it was ready:\n{}", self.log());
            }
            if try_request(admin, "admin", "/ready", &[]).is_ok_and(|r| r.status == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "weir was not ready in 30s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Weir {
    /// SIGTERM (so `weir demo` removes its temporary config), then SIGKILL
    /// if it has not exited within 5s.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let termed =
            Command::new("kill").args(["-TERM", &pid]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        let deadline = Instant::now() + Duration::from_secs(5);
        while termed && Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` until it holds; fails after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub elapsed: Duration,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The demo backend version that answered (`-` when weir answered itself).
    pub fn version(&self) -> String {
        self.header("x-demo-version").unwrap_or("-").to_string()
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// `GET path` with `Host: host`, HTTP/1.1, one connection.
pub fn request(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    try_request(addr, host, path, headers).unwrap_or_else(|e| panic!("GET http://{host}{path} via {addr}: {e}"))
}

pub fn try_request(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Reply> {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    try_request_raw(addr, &head)
}

pub fn request_raw(addr: SocketAddr, head: &str) -> Reply {
    try_request_raw(addr, head).unwrap_or_else(|e| panic!("{head:?} to {addr}: {e}"))
}

pub fn try_request_raw(addr: SocketAddr, head: &str) -> std::io::Result<Reply> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let elapsed = start.elapsed();
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {raw:?}"));
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status =
        lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).ok_or_else(|| bad("no status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned(), elapsed })
}

pub fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Ports for weir's listeners and admin server: free, outside the kernel's ephemeral range
/// (see `weir_proxy::testing`).
pub use weir_proxy::testing::free_port;

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let d = std::env::temp_dir().join(format!("weir-tasks-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        TempDir(d)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// Writes `text` to `<dir>/<name>`; returns the file's path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write config");
        p
    }
    /// `<dir>/config`, created.
    pub fn config_dir(&self) -> PathBuf {
        let config = self.0.join("config");
        std::fs::create_dir_all(&config).expect("mkdir config");
        config
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
