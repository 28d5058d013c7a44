//! The `weir` command line. Parsing only; each command lives in `cmd/`.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "weir", version, about = "Istio traffic management in one fast binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check Istio networking YAML the way Istio's admission webhook would.
    ///
    /// Exit status: 0 when every object is valid (warnings allowed), 1 when any
    /// object is invalid, 2 when an input cannot be read or parsed.
    Validate {
        /// Files or directories (searched recursively for *.yaml, *.yml, *.json); `-` reads stdin.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Namespace of objects that do not name one.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Do not print notices about skipped (non-Istio) objects.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show the compiled listeners, routes, clusters and endpoints for one node.
    #[command(name = "proxy-config")]
    ProxyConfig {
        /// Which part of the snapshot.
        #[arg(value_enum)]
        section: cmd::proxy_config::Section,
        /// Config directory (or file).
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        #[command(flatten)]
        node: cmd::config::NodeArgs,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = cmd::proxy_config::Format::Table)]
        output: cmd::proxy_config::Format,
    },
    /// Simulate a request: which listener, virtual host, route, action and endpoints handle it.
    ///
    /// Exit status: 0 when the request is routed, 1 when it is not (the output says why).
    Explain {
        /// Config directory (or file).
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        #[command(flatten)]
        node: cmd::config::NodeArgs,
        /// Request method.
        #[arg(short = 'X', long = "request", default_value = "GET")]
        method: String,
        /// Request header, `name: value` (repeatable).
        #[arg(short = 'H', long = "header", value_name = "HEADER")]
        headers: Vec<String>,
        /// `http://host[:port]/path?query`; the host and port pick the listener and virtual host.
        url: String,
    },
    /// Serve the Gateways and mesh routes of a config directory (the data path).
    Run(cmd::run::RunArgs),
    /// Run Istio's bookinfo demo in-process: backends, a weir node and a bundled config.
    Demo(cmd::demo::DemoArgs),
    /// Report cross-object problems (missing hosts/subsets/gateways, conflicts), like `istioctl analyze`.
    ///
    /// Exit status: 0 when there are no errors (warnings allowed), 1 with errors, 2 when input is unreadable.
    Analyze {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Kubernetes cluster domain used to expand short names.
        #[arg(long, default_value = "cluster.local")]
        cluster_domain: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[global_allocator]
static GLOBAL: weir_proxy::alloc::SplitAlloc = weir_proxy::alloc::SplitAlloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Validate { paths, output, namespace, quiet } => cmd::validate::run(&paths, output, &namespace, quiet),
        Command::ProxyConfig { section, config, node, output } => {
            cmd::proxy_config::run(section, &config, &node, output)
        }
        Command::Explain { config, node, method, headers, url } => {
            cmd::explain::run(&config, &node, &method, &headers, &url)
        }
        Command::Analyze { paths, cluster_domain } => cmd::analyze::run(&paths, &cluster_domain),
        Command::Run(args) => cmd::run::run(args),
        Command::Demo(args) => cmd::demo::run(args),
    };
    match code {
        Ok(c) => ExitCode::from(c),
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::from(2)
        }
    }
}
