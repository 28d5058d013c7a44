//! Sidecar validation (`ValidateSidecar` in istio/istio `pkg/config/validation`).

use crate::types::{ObjectMeta, Sidecar};

use super::{P, Report};

pub(super) fn validate(_meta: &ObjectMeta, _spec: &Sidecar, _p: &P, _r: &mut Report) {}
