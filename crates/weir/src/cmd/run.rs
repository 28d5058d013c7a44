//! `weir run`: flags -> `weir_proxy::Options`, then serve until SIGTERM/SIGINT.
//!
//! Exit status: 0 after a clean shutdown, 1 when it cannot start (invalid
//! config, a port that cannot be bound), 2 for unusable flags.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use weir_proxy::{AccessLogFormat, Options};

use crate::cmd::config::NodeArgs;

#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Config directory (or file); watched for changes, reloaded on SIGHUP.
    #[arg(long, value_name = "DIR")]
    pub config: PathBuf,
    /// Admin server address (/ready, /stats/prometheus, /config_dump, /clusters).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,
    /// Address of gateway listeners.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Address of sidecar outbound listeners and the explicit HTTP proxy.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub mesh_bind: IpAddr,
    /// Explicit HTTP proxy port (requests in absolute form are routed by authority); 0 disables it.
    #[arg(long, value_name = "PORT", default_value_t = 15001)]
    pub proxy_port: u16,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Worker threads for traffic [default: number of CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: Option<u32>,
    /// Access log format, written to stdout.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json", "off"])]
    pub access_log: String,
    /// Add `x-weir-reason` to locally generated responses at gateway listeners too
    /// (sidecar listeners always add it).
    #[arg(long)]
    pub reason_header: bool,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT (`5s`, `500ms`, `1m`).
    #[arg(long, value_name = "DUR", default_value = "5s")]
    pub drain_timeout: String,
    /// DNS server for ServiceEntry `resolution: DNS`/`DNS_ROUND_ROBIN` hosts (`IP` or `IP:PORT`,
    /// repeatable); default: the system's resolv.conf and /etc/hosts.
    #[arg(long = "dns-server", value_name = "ADDR", value_parser = parse_dns_server)]
    pub dns_servers: Vec<std::net::SocketAddr>,
    /// Serve HTTP/1.0 requests (Istio's `HTTP10: "1"` proxy metadata); without it they get
    /// `426 Upgrade Required`, as from Istio's Envoy.
    #[arg(long)]
    pub http10: bool,
}

fn parse_dns_server(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

impl RunArgs {
    pub fn options(&self) -> anyhow::Result<Options> {
        let mut o = Options::new(self.config.clone());
        o.node = self.node.node()?;
        o.admin = self.admin;
        o.bind = self.bind;
        o.mesh_bind = self.mesh_bind;
        o.proxy_port = self.proxy_port;
        if let Some(n) = self.concurrency {
            o.concurrency = n as usize;
        }
        o.access_log = match self.access_log.as_str() {
            "json" => AccessLogFormat::Json,
            "off" => AccessLogFormat::Off,
            _ => AccessLogFormat::Text,
        };
        o.reason_header_gateway = self.reason_header;
        o.drain_timeout = parse_duration(&self.drain_timeout).context("--drain-timeout")?;
        o.dns_servers = self.dns_servers.clone();
        o.accept_http10 = self.http10;
        Ok(o)
    }
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let d = weir_api::types::Duration::parse(s).map_err(anyhow::Error::msg)?;
    if d.is_negative() {
        bail!("duration {s:?} is negative");
    }
    Ok(d.to_std())
}

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let options = args.options()?;
    match weir_proxy::run::run(options) {
        Ok(()) => Ok(0),
        Err(e) => {
            eprintln!("weir: {e}");
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn options(args: &[&str]) -> anyhow::Result<Options> {
        let cli = Cli::try_parse_from(std::iter::once("weir-run").chain(args.iter().copied()))?;
        cli.run.options()
    }

    #[test]
    fn defaults() {
        let o = options(&["--config", "cfg"]).unwrap();
        let d = Options::new(PathBuf::from("cfg"));
        assert_eq!(o.admin, d.admin);
        assert_eq!(o.admin.to_string(), "127.0.0.1:15000");
        assert_eq!(o.bind.to_string(), "0.0.0.0");
        assert_eq!(o.mesh_bind.to_string(), "127.0.0.1");
        assert_eq!(o.proxy_port, 15001);
        assert_eq!(o.concurrency, d.concurrency);
        assert_eq!(o.access_log, AccessLogFormat::Text);
        assert!(!o.reason_header_gateway && o.reason_header_sidecar);
        assert_eq!(o.drain_timeout, Duration::from_secs(5));
        assert_eq!(o.node, weir_compile::Node::default());
        assert!(!o.accept_http10, "HTTP/1.0 is refused by default, as by Istio's Envoy");
    }

    #[test]
    fn flags() {
        let o = options(&[
            "--config",
            "cfg",
            "--admin",
            "127.0.0.1:9901",
            "--bind",
            "127.0.0.1",
            "--mesh-bind",
            "::1",
            "--proxy-port",
            "0",
            "--namespace",
            "shop",
            "--labels",
            "app=gw, version=v2",
            "--role",
            "gateway",
            "--concurrency",
            "3",
            "--access-log",
            "json",
            "--reason-header",
            "--drain-timeout",
            "1500ms",
            "--http10",
        ])
        .unwrap();
        assert_eq!(o.admin.port(), 9901);
        assert_eq!(o.mesh_bind.to_string(), "::1");
        assert_eq!(o.proxy_port, 0);
        assert_eq!(o.node.namespace, "shop");
        assert_eq!(o.node.labels.get("version").map(String::as_str), Some("v2"));
        assert_eq!(o.node.role, weir_compile::Role::Gateway);
        assert_eq!(o.concurrency, 3);
        assert_eq!(o.access_log, AccessLogFormat::Json);
        assert!(o.reason_header_gateway);
        assert_eq!(o.drain_timeout, Duration::from_millis(1500));
        assert!(o.accept_http10);
    }

    #[test]
    fn bad_flags_are_rejected() {
        assert!(options(&["--config", "c", "--concurrency", "0"]).is_err());
        assert!(options(&["--config", "c", "--access-log", "xml"]).is_err());
        assert!(options(&["--config", "c", "--drain-timeout", "5"]).is_err());
        assert!(options(&["--config", "c", "--drain-timeout", "-1s"]).is_err());
        assert!(options(&["--config", "c", "--labels", "novalue"]).is_err());
        assert!(options(&["--config", "c", "--admin", "localhost"]).is_err());
        assert!(options(&[]).is_err());
    }

    #[test]
    fn locality_flag() {
        let o = options(&["--config", "c", "--locality", "us-east/zone-a/rack1"]).unwrap();
        assert_eq!(o.node.locality.as_deref(), Some("us-east/zone-a/rack1"));
        assert_eq!(options(&["--config", "c", "--locality", "eu"]).unwrap().node.locality.as_deref(), Some("eu"));
        assert!(options(&["--config", "c", "--locality", "a//c"]).is_err());
        assert!(options(&["--config", "c", "--locality", "a/b/c/d"]).is_err());
    }

    #[test]
    fn dns_servers() {
        let o = options(&["--config", "c", "--dns-server", "127.0.0.1:5353", "--dns-server", "10.0.0.2"]).unwrap();
        let got: Vec<String> = o.dns_servers.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["127.0.0.1:5353", "10.0.0.2:53"]);
        assert!(options(&["--config", "c"]).unwrap().dns_servers.is_empty());
        assert!(options(&["--config", "c", "--dns-server", "dns.example"]).is_err());
    }
}
