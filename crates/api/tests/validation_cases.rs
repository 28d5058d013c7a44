//! Runs Istio's own validation cases (`../shared/spec/validation-cases/`): the
//! verdict must match, and every expected error text must appear in one of
//! the reported messages. `WEIR_CASES=<prefix>` (e.g. `invalid-vs`) narrows the run.

use std::path::{Path, PathBuf};

use weir_api::{LoadOptions, Severity, load_str, validate};

fn cases_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec/validation-cases");
    dir.is_dir().then_some(dir)
}

struct Expectation {
    valid: bool,
    errors: Vec<String>,
    warnings: Vec<String>,
}

/// Pulls the first quoted string after `marker` out of `line`.
fn quoted_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let rest = rest.trim_start().strip_prefix('"')?;
    // Go-quoted: find the closing quote that is not escaped.
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

fn expectation(text: &str) -> Expectation {
    let first = text.lines().next().unwrap_or_default();
    let valid = first.contains("| expected: VALID");
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        for marker in ["expected error:", "expected error contains:", "also expected error:"] {
            if let Some(e) = quoted_after(line, marker)
                && !line.starts_with("# equivalent")
            {
                errors.push(e);
            }
        }
        for marker in ["expected warning:", "expected warning contains:"] {
            if let Some(w) = quoted_after(line, marker) {
                warnings.push(w);
            }
        }
    }
    Expectation { valid, errors, warnings }
}

#[test]
fn istio_validation_cases() {
    let Some(dir) = cases_dir() else {
        // CI always has ../shared beside the clone; elsewhere it may be absent.
        assert!(std::env::var_os("CI").is_none(), "../shared/spec/validation-cases is missing");
        eprintln!("skipping: ../shared/spec/validation-cases not found");
        return;
    };
    let filter = std::env::var("WEIR_CASES").unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read cases dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&filter)))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read case");
        let want = expectation(&text);
        let loaded = load_str(&text, &f.display().to_string(), &LoadOptions::default());
        let mut errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
        errors.extend(loaded.problems.iter().map(|p| format!("{}: {}", p.path, p.message)));
        let mut warnings = Vec::new();
        for obj in &loaded.objects {
            for finding in validate(obj).findings {
                let s = format!("{}: {}", finding.path, finding.message);
                match finding.severity {
                    Severity::Error => errors.push(s),
                    Severity::Warning => warnings.push(s),
                }
            }
        }
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if loaded.objects.is_empty() && loaded.problems.is_empty() && loaded.errors.is_empty() {
            failures.push(format!("{name}: no object loaded"));
            continue;
        }
        let got_valid = errors.is_empty();
        if got_valid != want.valid {
            failures.push(format!(
                "{name}: expected {}, got {} (errors: {errors:?})",
                if want.valid { "VALID" } else { "INVALID" },
                if got_valid { "VALID" } else { "INVALID" },
            ));
            continue;
        }
        for e in &want.errors {
            if !errors.iter().any(|g| g.contains(e.as_str())) {
                failures.push(format!("{name}: missing error {e:?}; got {errors:?}"));
            }
        }
        for w in &want.warnings {
            if !warnings.iter().any(|g| g.contains(w.as_str())) {
                failures.push(format!("{name}: missing warning {w:?}; got {warnings:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), files.len(), failures.join("\n"));
    eprintln!("{} validation cases passed", files.len());
}
