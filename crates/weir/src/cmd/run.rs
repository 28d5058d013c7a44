//! `weir run`: flags -> `weir_proxy::Options`, then serve until SIGTERM/SIGINT.

#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {}

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let _ = args;
    anyhow::bail!("weir run is not implemented yet")
}
