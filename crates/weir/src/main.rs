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
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Validate { paths, output, namespace, quiet } => {
            cmd::validate::run(&paths, output, &namespace, quiet)
        }
    };
    match code {
        Ok(c) => ExitCode::from(c),
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::from(2)
        }
    }
}
