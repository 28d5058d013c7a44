//! `weir demo`: Istio's bookinfo on loopback with a bundled config.
//!
//! Starts the bookinfo backends (`weir_proxy::demo`), writes the bundled
//! config (`examples/demo`, embedded in the binary) with the chosen ports to
//! a temporary directory, and serves it with weir's data path until Ctrl-C.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use weir_proxy::demo::{BOOKINFO, Bookinfo, BookinfoOptions, service_entries_yaml};

/// The bundled config: `examples/demo`, file by file.
const FILES: [(&str, &str); 5] = [
    ("gateway.yaml", include_str!("../../../../examples/demo/gateway.yaml")),
    ("reviews.yaml", include_str!("../../../../examples/demo/reviews.yaml")),
    ("ratings.yaml", include_str!("../../../../examples/demo/ratings.yaml")),
    ("destination-rules.yaml", include_str!("../../../../examples/demo/destination-rules.yaml")),
    ("services.yaml", include_str!("../../../../examples/demo/services.yaml")),
];

/// Ports written in the bundled files, replaced by the flags' values.
const GATEWAY_PORT: u16 = 8080;
const MESH_PORT: u16 = 9080;
const PORT_BASE: u16 = 19080;

#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    /// First backend port: productpage, details, reviews v1/v2/v3 and ratings listen on N..N+5.
    #[arg(long, default_value_t = PORT_BASE, value_name = "N")]
    pub port_base: u16,
    /// Admin server address (`/ready`, `/stats/prometheus`, `/config_dump`, `/clusters`).
    #[arg(long, default_value = "127.0.0.1:15000", value_name = "ADDR")]
    pub admin: SocketAddr,
    /// Ingress gateway port (the Gateway's server port).
    #[arg(long, default_value_t = GATEWAY_PORT, value_name = "PORT")]
    pub gateway_port: u16,
    /// Service port of every bookinfo service: weir's sidecar listener on 127.0.0.1.
    #[arg(long, default_value_t = MESH_PORT, value_name = "PORT")]
    pub mesh_port: u16,
    /// Explicit HTTP proxy port (`curl -x`, `http_proxy`); 0 disables it.
    #[arg(long, default_value_t = 15001, value_name = "PORT")]
    pub proxy_port: u16,
    /// Do not print access log lines.
    #[arg(long)]
    pub quiet: bool,
    /// Write the bundled config (with these ports) to DIR and exit, without serving.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub write_config: Option<PathBuf>,
    /// Serve DIR (for instance an edited `--write-config` copy) instead of the bundled config.
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
}

pub fn run(args: DemoArgs) -> anyhow::Result<u8> {
    if args.port_base.checked_add(BOOKINFO.len() as u16 - 1).is_none() {
        bail!("--port-base {}: the backends need {} ports below 65536", args.port_base, BOOKINFO.len());
    }
    check_ports(&args)?;
    if let Some(dir) = &args.write_config {
        write_config(dir, &args)?;
        println!("wrote the demo config to {}", dir.display());
        return Ok(0);
    }

    let loopback = IpAddr::from([127, 0, 0, 1]);
    let backends = Bookinfo::start(&BookinfoOptions {
        ip: loopback,
        port_base: args.port_base,
        mesh: Some(SocketAddr::new(loopback, args.mesh_port)),
        ..BookinfoOptions::default()
    })
    .context("starting the bookinfo backends")?;

    let (config_dir, temp) = match &args.config {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = TempDir::new()?;
            write_config(temp.path(), &args)?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };

    let mut options = weir_proxy::Options::new(config_dir.clone());
    options.admin = args.admin;
    options.bind = loopback;
    options.mesh_bind = loopback;
    options.proxy_port = args.proxy_port;
    options.access_log = if args.quiet { weir_proxy::AccessLogFormat::Off } else { weir_proxy::AccessLogFormat::Text };

    eprintln!("weir demo: bookinfo backends:");
    for b in backends.backends() {
        eprintln!("  {:<12} {:<3} {}", b.service(), b.version(), b.addr());
    }
    match &temp {
        Some(_) => {
            eprintln!("weir demo: serving the bundled config (examples/demo), written to {}", config_dir.display())
        }
        None => eprintln!("weir demo: serving {}", config_dir.display()),
    }
    let banner = banner(&args);
    let admin = args.admin;
    std::thread::spawn(move || {
        if wait_ready(admin, Duration::from_secs(30)) {
            println!("{banner}");
            let _ = std::io::stdout().flush();
        }
    });

    let code = serve(options);
    drop(backends);
    drop(temp);
    code
}

/// Rejects flags that give two listeners one port (before anything binds).
fn check_ports(args: &DemoArgs) -> anyhow::Result<()> {
    let backends = args.port_base..=args.port_base.saturating_add(BOOKINFO.len() as u16 - 1);
    let mut ours = vec![("--gateway-port", args.gateway_port), ("--mesh-port", args.mesh_port)];
    if args.proxy_port != 0 {
        ours.push(("--proxy-port", args.proxy_port));
    }
    if args.admin.ip().is_loopback() || args.admin.ip().is_unspecified() {
        ours.push(("--admin", args.admin.port()));
    }
    for (i, (flag, port)) in ours.iter().enumerate() {
        if backends.contains(port) {
            bail!(
                "{flag} {port} is one of the backends' ports {}..{} (--port-base {})",
                backends.start(),
                backends.end(),
                args.port_base
            );
        }
        if let Some((other, _)) = ours[..i].iter().find(|(_, p)| p == port) {
            bail!("{flag} and {other} are both {port}");
        }
    }
    Ok(())
}

/// Runs weir's data path until SIGINT/SIGTERM.
fn serve(options: weir_proxy::Options) -> anyhow::Result<u8> {
    match weir_proxy::run::run(options) {
        Ok(()) => Ok(0),
        Err(e) => {
            eprintln!("weir: {e}");
            Ok(1)
        }
    }
}

/// The bundled files with the ports of `args`.
pub fn render(args: &DemoArgs) -> Vec<(&'static str, String)> {
    FILES
        .iter()
        .map(|(name, text)| {
            let text = if *name == "services.yaml" {
                let ip = IpAddr::from([127, 0, 0, 1]);
                let endpoints: Vec<_> = BOOKINFO
                    .iter()
                    .enumerate()
                    .map(|(i, (s, v))| {
                        let port = args.port_base + i as u16;
                        (s.to_string(), v.to_string(), SocketAddr::new(ip, port))
                    })
                    .collect();
                let comments = leading_comments(text).replace(&MESH_PORT.to_string(), &args.mesh_port.to_string());
                format!("{comments}{}", service_entries_yaml(&endpoints, args.mesh_port))
            } else {
                // These files name no other port numbers (checked by a test).
                text.replace(&GATEWAY_PORT.to_string(), &args.gateway_port.to_string())
                    .replace(&MESH_PORT.to_string(), &args.mesh_port.to_string())
            };
            (*name, text)
        })
        .collect()
}

fn leading_comments(text: &str) -> String {
    text.lines().take_while(|l| l.starts_with('#')).map(|l| format!("{l}\n")).collect()
}

fn write_config(dir: &Path, args: &DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in render(args) {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn banner(args: &DemoArgs) -> String {
    let gw = format!("http://127.0.0.1:{}", args.gateway_port);
    let mesh = args.mesh_port;
    let proxy = if args.proxy_port == 0 {
        format!("-H 'Host: reviews' http://127.0.0.1:{mesh}")
    } else {
        format!("-x http://127.0.0.1:{} http://reviews:{mesh}", args.proxy_port)
    };
    let ratings = if args.proxy_port == 0 {
        format!("-H 'Host: ratings' http://127.0.0.1:{mesh}")
    } else {
        format!("-x http://127.0.0.1:{} http://ratings:{mesh}", args.proxy_port)
    };
    format!(
        "\
weir demo is ready: bookinfo behind weir, configured by Istio YAML (examples/demo).

Request routing: jason sees reviews v2 (black stars)
  curl -H 'end-user: jason' {gw}/productpage
Traffic shifting: everyone else gets reviews v1 (no stars) or v3 (red stars), 50/50
  for i in 1 2 3 4 5 6; do curl -s {gw}/productpage | grep reviews; done
Fault injection, abort: weir answers ratings calls with 500 (\"Ratings service is currently unavailable\")
  curl -H 'end-user: jason' -H 'x-fault: abort' {gw}/productpage
Fault injection, delay: ratings answers 2s late...
  curl -H 'x-fault: delay' {ratings}/ratings/0
Timeout: ...so reviews' 0.5s route timeout fires: 504, productpage retries once and gives up after ~1s
  curl -H 'end-user: jason' -H 'x-fault: delay' {gw}/productpage
Call a service through the mesh directly (the mesh routes apply, like a sidecar):
  curl -H 'end-user: jason' {proxy}/reviews/0
Inspect:
  weir explain --config examples/demo -H 'end-user: jason' http://reviews:{mesh}/reviews/0
  curl http://{admin}/config_dump
  curl http://{admin}/stats/prometheus | grep istio_requests_total

Press Ctrl-C to stop.",
        admin = args.admin,
    )
}

/// Polls `GET /ready` on the admin address until it answers 200 or `limit` passes.
fn wait_ready(admin: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(10);
    while Instant::now() < deadline {
        if ready(admin) {
            return true;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    false
}

fn ready(admin: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&admin, Duration::from_millis(500)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /ready HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let base = std::env::temp_dir();
        for i in 0..100u32 {
            let dir = base.join(format!("weir-demo-{}-{i}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(TempDir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
            }
        }
        bail!("cannot create a temporary directory in {}", base.display())
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> DemoArgs {
        DemoArgs {
            port_base: PORT_BASE,
            admin: SocketAddr::from(([127, 0, 0, 1], 15000)),
            gateway_port: GATEWAY_PORT,
            mesh_port: MESH_PORT,
            proxy_port: 15001,
            quiet: false,
            write_config: None,
            config: None,
        }
    }

    #[test]
    fn default_rendering_is_examples_demo() {
        // The generated ServiceEntries must stay what examples/demo ships.
        for (name, text) in render(&defaults()) {
            let shipped = FILES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).unwrap_or_default();
            assert_eq!(text, shipped, "{name} differs from examples/demo/{name}");
        }
    }

    #[test]
    fn clashing_ports_are_rejected() {
        assert!(check_ports(&defaults()).is_ok());
        let e = check_ports(&DemoArgs { proxy_port: 19081, ..defaults() }).expect_err("clash");
        assert_eq!(e.to_string(), "--proxy-port 19081 is one of the backends' ports 19080..19085 (--port-base 19080)");
        let e = check_ports(&DemoArgs { mesh_port: 8080, ..defaults() }).expect_err("clash");
        assert_eq!(e.to_string(), "--mesh-port and --gateway-port are both 8080");
        assert!(check_ports(&DemoArgs { proxy_port: 0, ..defaults() }).is_ok());
    }

    #[test]
    fn ports_are_substituted() {
        let args = DemoArgs { port_base: 30000, gateway_port: 8181, mesh_port: 9191, ..defaults() };
        let files = render(&args);
        let all: String = files.iter().map(|(_, t)| t.as_str()).collect();
        assert!(!all.contains("8080") && !all.contains("9080") && !all.contains("1908"), "{all}");
        assert!(all.contains("number: 8181") && all.contains("number: 9191") && all.contains("http: 30005"), "{all}");
    }
}
