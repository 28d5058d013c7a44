//! `weir validate PATH...`: findings as `PATH:LINE: Kind ns/name: field: message`.

use std::io::Write;
use std::path::PathBuf;

use weir_api::LoadOptions;
use weir_api::check::{Checked, check};
use weir_api::validate::Severity;

use crate::Output;

pub fn run(paths: &[PathBuf], output: Output, namespace: &str, quiet: bool) -> anyhow::Result<u8> {
    let opts = LoadOptions { default_namespace: namespace.to_string() };
    let loaded = weir_api::load_paths(paths, &opts);
    let checked = check(&loaded);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &checked)?;
            writeln!(out)?;
        }
        Output::Text => print_text(&checked, quiet, &mut out)?,
    }
    Ok(checked.exit_code() as u8)
}

fn print_text(c: &Checked, quiet: bool, out: &mut impl Write) -> anyhow::Result<()> {
    for e in &c.errors {
        eprintln!("error: {e}");
    }
    if !quiet {
        for s in &c.skipped {
            eprintln!(
                "notice: {}:{}: skipping {} {} {}/{} ({})",
                s.file,
                s.line,
                s.api_version,
                s.kind,
                if s.namespace.is_empty() { "-" } else { &s.namespace },
                s.name,
                s.reason()
            );
        }
    }
    for r in &c.findings {
        let prefix = if r.severity == Severity::Warning { "warning: " } else { "" };
        let path = if r.path.is_empty() { String::new() } else { format!("{}: ", r.path) };
        writeln!(out, "{prefix}{}:{}: {} {}/{}: {path}{}", r.file, r.line, r.kind, r.namespace, r.name, r.message)?;
    }
    let s = &c.summary;
    writeln!(out, "{} objects: {} valid, {} invalid, {} warnings", s.objects, s.valid, s.invalid, s.warnings)?;
    Ok(())
}
