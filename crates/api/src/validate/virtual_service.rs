//! VirtualService validation (`ValidateVirtualService` in istio/istio `pkg/config/validation`).

use crate::types::{ObjectMeta, VirtualService};

use super::{P, Report};

pub(super) fn validate(_meta: &ObjectMeta, _spec: &VirtualService, _p: &P, _r: &mut Report) {}
