//! `weir demo`: Istio's bookinfo on loopback with a bundled config.

#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {}

pub fn run(args: DemoArgs) -> anyhow::Result<u8> {
    let _ = args;
    anyhow::bail!("weir demo is not implemented yet")
}
