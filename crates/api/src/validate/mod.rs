//! Istio's validation rules for the seven networking kinds: the CRD schema and
//! CEL rules plus the istiod webhook's semantic checks
//! (`pkg/config/validation` in istio/istio), with Istio's message texts.
//!
//! Each finding carries the field path it is about, so callers can point at
//! the file and line. Errors make an object invalid; warnings do not.

pub mod common;
mod deprecated;
mod destination_rule;
mod gateway;
mod gofmt;
mod schema;
mod service_entry;
mod sidecar;
mod virtual_service;

pub use destination_rule::ISTIO_MUTUAL_UNSUPPORTED;
pub use virtual_service::{GRPC_STATUS, grpc_status_code, is_known_http_status};
mod workload_entry;

use std::fmt;

use crate::types::{IstioObject, ObjectMeta, Spec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One validation result about one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// Field path, e.g. `spec.http[0].route[1].destination.host`.
    pub path: String,
    /// Istio's message text.
    pub message: String,
}

/// Collects findings while walking an object.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn error(&mut self, path: &P, message: impl Into<String>) {
        self.findings.push(Finding { severity: Severity::Error, path: path.0.clone(), message: message.into() });
    }
    pub fn warn(&mut self, path: &P, message: impl Into<String>) {
        self.findings.push(Finding { severity: Severity::Warning, path: path.0.clone(), message: message.into() });
    }
    /// Records `r`'s error, if any.
    pub fn check(&mut self, path: &P, r: Result<(), String>) {
        if let Err(m) = r {
            self.error(path, m);
        }
    }
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Error)
    }
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Warning)
    }
}

/// A field path under construction: `P::root("spec").f("http").i(0)` is `spec.http[0]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct P(String);

impl P {
    pub fn root(s: &str) -> P {
        P(s.to_string())
    }
    /// A struct field.
    pub fn f(&self, field: &str) -> P {
        if self.0.is_empty() { P(field.to_string()) } else { P(format!("{}.{field}", self.0)) }
    }
    /// A list element.
    pub fn i(&self, index: usize) -> P {
        P(format!("{}[{index}]", self.0))
    }
    /// A map entry.
    pub fn k(&self, key: &str) -> P {
        self.f(key)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Annotations that only istiod may set; objects carrying them are rejected.
const ALWAYS_REJECT: &str = "internal.istio.io/webhook-always-reject";
const INTERNAL_PARENT_NAMES: &str = "internal.istio.io/parents";
const INTERNAL_PARENT_NAMESPACE: &str = "internal.istio.io/parent-namespace";

/// Validates one object as Istio's webhook and CRD schema would.
pub fn validate(obj: &IstioObject) -> Report {
    let mut r = Report::default();
    validate_metadata(&obj.meta, &mut r);
    let spec = P::root("spec");
    match &obj.spec {
        Spec::VirtualService(s) => virtual_service::validate(&obj.meta, s, &spec, &mut r),
        Spec::DestinationRule(s) => destination_rule::validate(&obj.meta, s, &spec, &mut r),
        Spec::Gateway(s) => gateway::validate(&obj.meta, s, &spec, &mut r),
        Spec::ServiceEntry(s) => service_entry::validate(&obj.meta, s, &spec, &mut r),
        Spec::Sidecar(s) => sidecar::validate(&obj.meta, s, &spec, &mut r),
        Spec::WorkloadEntry(s) => workload_entry::validate_entry(&obj.meta, s, &spec, &mut r),
        Spec::WorkloadGroup(s) => workload_entry::validate_group(&obj.meta, s, &spec, &mut r),
    }
    deprecated::check(&obj.spec, &spec, &mut r);
    r
}

fn validate_metadata(meta: &ObjectMeta, r: &mut Report) {
    let p = P::root("metadata.annotations");
    if meta.annotations.contains_key(ALWAYS_REJECT) {
        r.error(&p, format!("{ALWAYS_REJECT:?} annotation found, rejecting"));
    }
    for a in [INTERNAL_PARENT_NAMESPACE, INTERNAL_PARENT_NAMES] {
        if meta.annotations.contains_key(a) {
            r.error(&p, format!("{a:?} annotation found, this may not be set by users"));
        }
    }
    if meta.annotations.contains_key("istio.io/dry-run") {
        r.error(
            &p,
            format!(
                "{}/{} has unsupported annotation istio.io/dry-run, please remove the annotation",
                meta.namespace, meta.name
            ),
        );
    }
}
