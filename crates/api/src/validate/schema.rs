//! The Kubernetes API server's messages for CRD schema (OpenAPI) and CEL
//! (`x-kubernetes-validations`) violations, which it reports before Istio's
//! webhook runs: `Required value`, `Too many: …`, `Invalid value: …`.

use std::fmt::Display;

use crate::types::Labels;

use super::gofmt;
use super::{P, Report};

/// The CEL rule on every port number of the networking CRDs.
const PORT_RULE: &str = "port must be between 1-65535";

/// A missing required field.
pub(super) fn required(r: &mut Report, p: &P) {
    r.error(p, "Required value");
}

/// A failed `x-kubernetes-validations` rule on a value of schema type `ty`.
pub(super) fn cel(r: &mut Report, p: &P, ty: &str, msg: &str) {
    r.error(p, format!("Invalid value: \"{ty}\": {msg}"));
}

/// An OpenAPI violation reported as `Invalid value: <value>: <message>`.
pub(super) fn invalid(r: &mut Report, p: &P, value: impl Display, msg: &str) {
    r.error(p, format!("Invalid value: {value}: {msg}"));
}

/// A value outside an `enum`.
pub(super) fn unsupported(r: &mut Report, p: &P, value: &str, supported: &[&str]) {
    let supported: Vec<String> = supported.iter().map(|s| gofmt::quote(s)).collect();
    r.error(p, format!("Unsupported value: {}: supported values: {}", gofmt::quote(value), supported.join(", ")));
}

/// The `maxItems` / `maxProperties` message.
pub(super) fn too_many(n: usize, max: usize) -> String {
    format!("Too many: {n}: must have at most {max} items")
}

pub(super) fn max_items(r: &mut Report, p: &P, n: usize, max: usize) {
    if n > max {
        r.error(p, too_many(n, max));
    }
}

pub(super) fn max_properties(r: &mut Report, p: &P, n: usize, max: usize) {
    max_items(r, p, n, max);
}

pub(super) fn max_length(r: &mut Report, p: &P, s: &str, max: usize) {
    if s.len() > max {
        r.error(p, format!("Too long: may not be more than {max} bytes"));
    }
}

/// A `minimum` violation.
pub(super) fn below_minimum(r: &mut Report, p: &P, value: impl Display, min: impl Display) {
    r.error(p, format!("Invalid value: {value}: {p} in body should be greater than or equal to {min}"));
}

/// A `maximum` violation.
pub(super) fn above_maximum(r: &mut Report, p: &P, value: impl Display, max: impl Display) {
    r.error(p, format!("Invalid value: {value}: {p} in body should be less than or equal to {max}"));
}

/// An integer `minimum`.
pub(super) fn minimum(r: &mut Report, p: &P, v: i64, min: i64) {
    if v < min {
        below_minimum(r, p, v, min);
    }
}

/// A `double` with `minimum` and `maximum`, printed as Go prints floats.
pub(super) fn range_f64(r: &mut Report, p: &P, v: f64, min: f64, max: f64) {
    if v < min {
        below_minimum(r, p, gofmt::float_v(v), gofmt::float_v(min));
    } else if v > max {
        above_maximum(r, p, gofmt::float_v(v), gofmt::float_v(max));
    }
}

/// A `pattern` violation.
pub(super) fn pattern(r: &mut Report, p: &P, v: &str, pattern: &str) {
    r.error(p, format!("Invalid value: {}: {p} in body should match '{pattern}'", gofmt::quote(v)));
}

/// More than one alternative of a proto oneof set (schema `oneOf`), given
/// whether each alternative is set.
pub(super) fn one_of(r: &mut Report, p: &P, set: &[bool]) {
    let n = set.iter().filter(|s| **s).count();
    if n > 1 {
        r.error(p, format!("must validate one and only one schema (oneOf). Found {n} valid alternatives"));
    }
}

/// A oneof whose alternatives `fields` are set together, worded with their names.
pub(super) fn one_of_fields(r: &mut Report, p: &P, fields: &[&str]) {
    let msg = format!("must validate one and only one schema (oneOf): only one of {} can be set", fields.join(", "));
    cel(r, p, "object", &msg);
}

/// A port number with the CRD's `port must be between 1-65535` rule.
pub(super) fn port_rule(r: &mut Report, p: &P) {
    cel(r, p, "integer", PORT_RULE);
}

/// A required port number (0 reads as unset) with the 1-65535 rule.
pub(super) fn required_port(r: &mut Report, p: &P, port: u32) {
    if port == 0 {
        required(r, p);
    } else if port > 65535 {
        port_rule(r, p);
    }
}

/// A `matchLabels`-style selector: at most `max` entries, values at most 63 bytes.
pub(super) fn selector_labels(r: &mut Report, p: &P, labels: &Labels, max: usize) {
    max_properties(r, p, labels.len(), max);
    for (k, v) in labels {
        max_length(r, &p.k(k), v, 63);
    }
}
