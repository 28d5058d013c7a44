//! ServiceEntry validation (`ValidateServiceEntry` in istio/istio `pkg/config/validation`).

use crate::types::{ObjectMeta, ServiceEntry};

use super::{P, Report};

pub(super) fn validate(_meta: &ObjectMeta, _spec: &ServiceEntry, _p: &P, _r: &mut Report) {}
