//! DestinationRule validation (`ValidateDestinationRule` in istio/istio `pkg/config/validation`).

use crate::types::{DestinationRule, ObjectMeta};

use super::{P, Report};

pub(super) fn validate(_meta: &ObjectMeta, _spec: &DestinationRule, _p: &P, _r: &mut Report) {}
