//! Istio's gateway tasks (tasks.md 4, 9, 10 and 11) reproduced end to end
//! with the real `weir run --role gateway` binary, the task's YAML, and the
//! task's own client commands where they exist (`curl --resolve`, certificates
//! made with `openssl`, `openssl s_server` standing in for NGINX).
//!
//! How the tasks are adapted (and only that):
//! - Kubernetes Services become ServiceEntries for backends in this process;
//!   gateway ports are free ports instead of 80/443/31400.
//! - `kubectl create secret tls` becomes a Secret YAML file in the config directory.
//! - Tests that need `curl` or `openssl` are skipped (with a message) when they are not installed.

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// `weir run --role gateway` on a config directory.
struct Gateway {
    weir: Weir,
    admin: SocketAddr,
    config: PathBuf,
    dir: TempDir,
}

impl Gateway {
    fn start(name: &str, yaml: &[&str]) -> Gateway {
        let dir = TempDir::new(name);
        let config = dir.config_dir();
        for y in yaml {
            write_objects(&config, y);
        }
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let args = ["--role", "gateway", "--bind", "127.0.0.1", "--namespace", "istio-system", "--concurrency", "2"];
        let weir = Weir::run(&config, admin, &args);
        Gateway { weir, admin, config, dir }
    }

    fn version(&self) -> u64 {
        request(self.admin, "admin", "/config_dump", &[]).json()["applied_version"].as_u64().expect("version")
    }

    /// `kubectl apply -f`, then wait until weir serves it.
    fn apply(&self, yaml: &str) {
        let before = self.version();
        write_objects(&self.config, yaml);
        wait_for("the change to apply", Duration::from_secs(15), || self.version() > before);
    }
}

fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
        || Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !ok {
        eprintln!("{tool} is not installed: test skipped");
    }
    ok
}

/// A ServiceEntry for `host` on `port` with one endpoint per `(address, version)`.
fn service_entry(host: &str, port: u16, protocol: &str, endpoints: &[(SocketAddr, &str)]) -> String {
    let mut eps = String::new();
    for (a, v) in endpoints {
        eps.push_str(&format!(
            "  - {{address: {}, ports: {{p: {}}}, labels: {{app: {host}, version: {v}}}}}\n",
            a.ip(),
            a.port()
        ));
    }
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {host}\n  namespace: default\nspec:\n  \
         hosts: [{host}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  \
         - {{number: {port}, name: p, protocol: {protocol}}}\n  endpoints:\n{eps}"
    )
}

/// httpbin's `/status/N` (answers N) and `/hello`; other paths 200 with the path.
fn httpbin_lite(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut s = s;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    let _ = r.read_exact(&mut body);
                    let status: u16 = path.strip_prefix("/status/").and_then(|c| c.parse().ok()).unwrap_or(200);
                    let text = if status == 418 { "-=[ teapot ]=-\n".to_string() } else { format!("{name} {path}\n") };
                    let resp =
                        format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nx-app: {name}\r\n\r\n{text}", text.len());
                    if s.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Istio's tcp-echo: answers each line with `<prefix> <line>`.
fn tcp_echo(prefix: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = s.try_clone().expect("clone");
                for line in BufReader::new(s).lines() {
                    let Ok(line) = line else { return };
                    if w.write_all(format!("{prefix} {line}\n").as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// `(date; sleep 1) | nc $INGRESS_HOST $TCP_INGRESS_PORT`, without the sleep.
fn nc(port: u16, line: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(format!("{line}\n").as_bytes()).expect("write");
    let mut out = String::new();
    BufReader::new(s).read_line(&mut out).expect("read");
    out.trim_end().to_string()
}

// ---------------------------------------------------------------------------
// Task 4: TCP traffic shifting.

/// `tcp-echo-all-v1.yaml` but its VirtualService ([`tcp_echo_vs`]).
const TCP_ECHO_ALL_V1: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: tcp-echo-gateway
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: PORT
      name: tcp
      protocol: TCP
    hosts:
    - \"*\"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: tcp-echo-destination
  namespace: default
spec:
  host: tcp-echo
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
";

/// tcp-echo's VirtualService on gateway port `port` with `routes` (its `route:` items, see
/// [`tcp_echo_destination`]): the last document of `tcp-echo-all-v1.yaml`, and `tcp-echo-20-v2.yaml`.
fn tcp_echo_vs(port: u16, routes: &[String]) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: tcp-echo
  namespace: default
spec:
  hosts:
  - \"*\"
  gateways:
  - tcp-echo-gateway
  tcp:
  - match:
    - port: {port}
    route:
{}",
        routes.concat()
    )
}

/// One `route:` item of [`tcp_echo_vs`]: subset `subset` of tcp-echo, with `weight` if given.
fn tcp_echo_destination(subset: &str, weight: Option<u32>) -> String {
    let weight = weight.map(|w| format!("      weight: {w}\n")).unwrap_or_default();
    format!(
        "    - destination:\n        host: tcp-echo\n        port:\n          number: 9000\n        subset: {subset}\n{weight}"
    )
}

#[test]
fn task4_tcp_traffic_shifting() {
    let (one, two) = (tcp_echo("one"), tcp_echo("two"));
    let port = free_port();
    let services = service_entry("tcp-echo", 9000, "TCP", &[(one, "v1"), (two, "v2")]);
    let all_v1 = tcp_echo_vs(port, &[tcp_echo_destination("v1", None)]);
    let gw = Gateway::start("task4", &[&services, &TCP_ECHO_ALL_V1.replace("PORT", &port.to_string()), &all_v1]);
    // "all the timestamps have a prefix of one"
    for i in 0..20 {
        assert_eq!(nc(port, &format!("t{i}")), format!("one t{i}"));
    }
    gw.apply(&tcp_echo_vs(port, &[tcp_echo_destination("v1", Some(80)), tcp_echo_destination("v2", Some(20))]));
    // "about 20% of the timestamps have a prefix of two" (per connection). 200 connections:
    // a 99.99% binomial band around 40 is about 18..66.
    let n = 200;
    let twos = (0..n).filter(|i| nc(port, &format!("t{i}")).starts_with("two ")).count();
    assert!((18..=66).contains(&twos), "v2 got {twos} of {n}:\n{}", gw.weir.log());
}

// ---------------------------------------------------------------------------
// Task 9: ingress gateway (HTTP).

/// The ingress task's Gateway (its VirtualService: [`httpbin_vs`]).
const HTTPBIN_GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: httpbin-gateway
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: PORT
      name: http
      protocol: HTTP
    hosts:
    - \"httpbin.example.com\"
";

/// httpbin's VirtualService for `httpbin.example.com` through `gateway`: `/status` and `/delay` only.
fn httpbin_vs(gateway: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
  namespace: default
spec:
  hosts:
  - \"httpbin.example.com\"
  gateways:
  - {gateway}
  http:
  - match:
    - uri:
        prefix: /status
    - uri:
        prefix: /delay
    route:
    - destination:
        port:
          number: 8000
        host: httpbin
"
    )
}

#[test]
fn task9_ingress_gateway() {
    let httpbin = httpbin_lite("httpbin");
    let port = free_port();
    let gw = Gateway::start(
        "task9",
        &[
            &service_entry("httpbin", 8000, "HTTP", &[(httpbin, "v1")]),
            &HTTPBIN_GATEWAY.replace("PORT", &port.to_string()),
            &httpbin_vs("httpbin-gateway"),
        ],
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let r = request(addr, "httpbin.example.com", "/status/200", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("x-envoy-upstream-service-time").is_some(), "{r:?}");
    let r = request(addr, "httpbin.example.com", "/headers", &[]);
    assert_eq!(r.status, 404, "not exposed: {r:?}");
    let r = request(addr, "other.example.com", "/status/200", &[]);
    assert_eq!(r.status, 404, "other hosts: {r:?}");
    drop(gw);
}

// ---------------------------------------------------------------------------
// Tasks 10 and 11: certificates as the tasks make them (plus subjectAltName, which rustls
// and modern curl require; the tasks' certificates carry only a CN).

struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(dir: &Path, name: &str) -> Certs {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir certs");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-sha256",
                "-nodes",
                "-days",
                "365",
                "-newkey",
                "rsa:2048",
                "-subj",
                "/O=example Inc./CN=example.com",
                "-keyout",
                "example.com.key",
                "-out",
                "example.com.crt",
            ],
        );
        Certs { dir }
    }

    /// `<host>.crt` and `<host>.key`, signed by this CA (`client`: extendedKeyUsage clientAuth).
    fn issue(&self, host: &str, client: bool) {
        openssl(
            &self.dir,
            &[
                "req",
                "-out",
                &format!("{host}.csr"),
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{host}.key"),
                "-subj",
                &format!("/CN={host}/O={host} organization"),
            ],
        );
        let ext = self.dir.join(format!("{host}.ext"));
        let usage = if client { "clientAuth" } else { "serverAuth" };
        std::fs::write(&ext, format!("subjectAltName=DNS:{host}\nextendedKeyUsage={usage}\n")).expect("ext");
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-sha256",
                "-days",
                "365",
                "-CA",
                "example.com.crt",
                "-CAkey",
                "example.com.key",
                "-set_serial",
                "0",
                "-in",
                &format!("{host}.csr"),
                "-out",
                &format!("{host}.crt"),
                "-extfile",
                &ext.display().to_string(),
            ],
        );
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).expect("read cert")
    }

    /// `kubectl create -n istio-system secret tls NAME --key=host.key --cert=host.crt` (and `ca.crt`).
    fn secret(&self, name: &str, host: &str, with_ca: bool) -> String {
        let indent = |s: String| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
        let mut out = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: istio-system\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(self.read(&format!("{host}.crt"))),
            indent(self.read(&format!("{host}.key")))
        );
        if with_ca {
            out.push_str(&format!("  ca.crt: |\n{}", indent(self.read("example.com.crt"))));
        }
        out
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `curl -s -o body -w '%{http_code} %{http_version}' --resolve host:port:127.0.0.1 --cacert CA URL`;
/// returns (exit code, "code version", body).
fn curl(host: &str, port: u16, path: &str, cacert: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code} %{http_version}", "--max-time", "10", "--cacert", cacert])
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (out.status.code().unwrap_or(-1), status.to_string(), body.to_string())
}

const MYGATEWAY_SIMPLE: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: PORT
      name: https
      protocol: HTTPS
    tls:
      mode: SIMPLE
      credentialName: httpbin-credential
    hosts:
    - httpbin.example.com
";

const MYGATEWAY_TWO_HOSTS: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: PORT
      name: https-httpbin
      protocol: HTTPS
    tls:
      mode: SIMPLE
      credentialName: httpbin-credential
    hosts:
    - httpbin.example.com
  - port:
      number: PORT
      name: https-helloworld
      protocol: HTTPS
    tls:
      mode: SIMPLE
      credentialName: helloworld-credential
    hosts:
    - helloworld.example.com
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: helloworld
  namespace: default
spec:
  hosts:
  - helloworld.example.com
  gateways:
  - mygateway
  http:
  - match:
    - uri:
        exact: /hello
    route:
    - destination:
        host: helloworld
        port:
          number: 5000
";

#[test]
fn task10_secure_gateways() {
    if !have("curl") || !have("openssl") {
        return;
    }
    let (httpbin, helloworld) = (httpbin_lite("httpbin"), httpbin_lite("helloworld"));
    let port = free_port();
    let gw = Gateway::start(
        "task10",
        &[
            &service_entry("httpbin", 8000, "HTTP", &[(httpbin, "v1")]),
            &service_entry("helloworld", 5000, "HTTP", &[(helloworld, "v1")]),
        ],
    );
    let certs1 = Certs::new(gw.dir.path(), "example_certs1");
    certs1.issue("httpbin.example.com", false);
    certs1.issue("helloworld.example.com", false);
    certs1.issue("client.example.com", true);
    let ca1 = certs1.path("example.com.crt");

    // 10a: SIMPLE, one host. "HTTP/2 418" and the teapot.
    gw.apply(&certs1.secret("httpbin-credential", "httpbin.example.com", false));
    gw.apply(&format!("{}---\n{}", MYGATEWAY_SIMPLE.replace("PORT", &port.to_string()), httpbin_vs("mygateway")));
    let (code, status, body) = curl("httpbin.example.com", port, "/status/418", &ca1, &[]);
    assert_eq!((code, status.as_str()), (0, "418 2"), "{body}\n{}", gw.weir.log());
    assert!(body.contains("teapot"), "{body}");

    // Rotation: new certificates from another CA; the old CA now fails the handshake.
    let certs2 = Certs::new(gw.dir.path(), "example_certs2");
    certs2.issue("httpbin.example.com", false);
    let started = Instant::now();
    gw.apply(&certs2.secret("httpbin-credential", "httpbin.example.com", false));
    let (code, status, _) = curl("httpbin.example.com", port, "/status/418", &certs2.path("example.com.crt"), &[]);
    assert_eq!((code, status.as_str()), (0, "418 2"), "with the new CA");
    eprintln!("rotation served after {:?}", started.elapsed());
    let (code, _, _) = curl("httpbin.example.com", port, "/status/418", &ca1, &[]);
    assert_ne!(code, 0, "the old CA must fail");

    // 10b: two hosts on one port, certificates by SNI.
    gw.apply(&certs1.secret("httpbin-credential", "httpbin.example.com", false));
    gw.apply(&certs1.secret("helloworld-credential", "helloworld.example.com", false));
    gw.apply(&MYGATEWAY_TWO_HOSTS.replace("PORT", &port.to_string()));
    let (code, status, body) = curl("helloworld.example.com", port, "/hello", &ca1, &[]);
    assert_eq!((code, status.as_str()), (0, "200 2"), "{body}");
    assert!(body.starts_with("helloworld /hello"), "{body}");
    let (code, status, body) = curl("httpbin.example.com", port, "/status/418", &ca1, &[]);
    assert_eq!((code, status.as_str()), (0, "418 2"), "{body}");

    // 10c: MUTUAL with ca.crt in the Secret.
    gw.apply(&certs1.secret("httpbin-credential", "httpbin.example.com", true));
    gw.apply(&MYGATEWAY_SIMPLE.replace("PORT", &port.to_string()).replace("mode: SIMPLE", "mode: MUTUAL"));
    let (code, _, _) = curl("httpbin.example.com", port, "/status/418", &ca1, &[]);
    assert_ne!(code, 0, "no client certificate: the handshake fails");
    let (cert, key) = (certs1.path("client.example.com.crt"), certs1.path("client.example.com.key"));
    let (code, status, body) =
        curl("httpbin.example.com", port, "/status/418", &ca1, &["--cert", &cert, "--key", &key]);
    assert_eq!((code, status.as_str()), (0, "418 2"), "{body}");
}

const PASSTHROUGH: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: PORT
      name: https
      protocol: HTTPS
    tls:
      mode: PASSTHROUGH
    hosts:
    - nginx.example.com
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: nginx
  namespace: default
spec:
  hosts:
  - nginx.example.com
  gateways:
  - mygateway
  tls:
  - match:
    - port: PORT
      sniHosts:
      - nginx.example.com
    route:
    - destination:
        host: my-nginx
        port:
          number: 443
";

/// `openssl s_server -www` (serving its own certificate) killed on drop.
struct SServer(std::process::Child);

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn task11_sni_passthrough() {
    if !have("curl") || !have("openssl") {
        return;
    }
    let port = free_port();
    let nginx_port = free_port();
    let gw = Gateway::start("task11", &[]);
    let certs = Certs::new(gw.dir.path(), "example_certs1");
    certs.issue("nginx.example.com", false);
    let server = SServer(
        Command::new("openssl")
            .args(["s_server", "-accept", &nginx_port.to_string(), "-www", "-cert"])
            .arg(certs.path("nginx.example.com.crt"))
            .arg("-key")
            .arg(certs.path("nginx.example.com.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server"),
    );
    wait_for("s_server", Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", nginx_port)).is_ok());
    let backend = SocketAddr::from(([127, 0, 0, 1], nginx_port));
    gw.apply(&service_entry("my-nginx", 443, "TLS", &[(backend, "v1")]));
    gw.apply(&PASSTHROUGH.replace("PORT", &port.to_string()));
    // The task's outcome: NGINX's own certificate and page, through the gateway.
    let (code, status, body) = curl("nginx.example.com", port, "/", &certs.path("example.com.crt"), &[]);
    assert_eq!(code, 0, "{status} {body}\n{}", gw.weir.log());
    assert!(body.contains("s_server"), "{body}");
    // Another SNI: no filter chain, reset.
    let (code, _, _) = curl("other.example.com", port, "/", &certs.path("example.com.crt"), &["-k"]);
    assert_ne!(code, 0);
    drop(server);
}
