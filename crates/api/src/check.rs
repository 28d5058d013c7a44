//! Load + validate in one step, as `weir validate` reports it: one row per
//! finding with file, line, object and field, plus the counts for a summary.

use serde::Serialize;

use crate::load::{LoadError, Loaded};
use crate::validate::{Severity, validate};

/// One finding, located.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    #[serde(serialize_with = "ser_severity")]
    pub severity: Severity,
    pub file: String,
    pub line: u32,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub path: String,
    pub message: String,
}

fn ser_severity<S: serde::Serializer>(s: &Severity, ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_str(s)
}

/// An object of a kind weir does not validate, skipped with a notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub file: String,
    pub line: u32,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Skipped {
    /// Why it was skipped, in words.
    pub fn reason(&self) -> &'static str {
        if self.api_version.starts_with("networking.istio.io/") {
            "weir does not implement this Istio kind"
        } else {
            "not an Istio networking object"
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub objects: usize,
    pub valid: usize,
    pub invalid: usize,
    pub warnings: usize,
}

/// The outcome of checking a set of inputs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Checked {
    pub findings: Vec<Row>,
    pub skipped: Vec<Skipped>,
    #[serde(serialize_with = "ser_errors")]
    pub errors: Vec<LoadError>,
    pub summary: Summary,
}

fn ser_errors<S: serde::Serializer>(errs: &[LoadError], ser: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = ser.serialize_seq(Some(errs.len()))?;
    for e in errs {
        seq.serialize_element(&serde_json::json!({ "file": e.path(), "line": e.line(), "message": e.to_string() }))?;
    }
    seq.end()
}

impl Checked {
    /// `weir validate`'s exit status: 2 when an input was unusable, 1 when an object is invalid.
    pub fn exit_code(&self) -> i32 {
        if !self.errors.is_empty() {
            2
        } else if self.summary.invalid > 0 {
            1
        } else {
            0
        }
    }
}

/// Validates everything that was loaded.
pub fn check(loaded: &Loaded) -> Checked {
    let mut out = Checked { errors: loaded.errors.clone(), ..Checked::default() };
    for p in &loaded.problems {
        out.summary.objects += 1;
        out.summary.invalid += 1;
        out.findings.push(Row {
            severity: Severity::Error,
            file: p.origin.file.to_string(),
            line: p.line,
            kind: if p.kind.is_empty() { "<unknown kind>".into() } else { p.kind.clone() },
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            path: p.path.clone(),
            message: p.message.clone(),
        });
    }
    for obj in &loaded.objects {
        out.summary.objects += 1;
        let report = validate(obj);
        if report.has_errors() {
            out.summary.invalid += 1;
        } else {
            out.summary.valid += 1;
        }
        for f in report.findings {
            if f.severity == Severity::Warning {
                out.summary.warnings += 1;
            }
            out.findings.push(Row {
                severity: f.severity,
                file: obj.origin.file.to_string(),
                line: obj.origin.line_of(&f.path),
                kind: obj.kind().to_string(),
                namespace: obj.meta.namespace.clone(),
                name: obj.meta.name.clone(),
                path: f.path,
                message: f.message,
            });
        }
    }
    for o in &loaded.others {
        out.skipped.push(Skipped {
            file: o.origin.file.to_string(),
            line: o.origin.line,
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
        });
    }
    out.findings.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    out.skipped.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    out
}
