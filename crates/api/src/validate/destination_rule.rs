//! DestinationRule validation (`ValidateDestinationRule` in istio/istio `pkg/config/validation`).

use crate::types::{ConnectionPoolSettings, DestinationRule, ObjectMeta};

use super::{P, Report};

pub(super) fn validate(_meta: &ObjectMeta, _spec: &DestinationRule, _p: &P, _r: &mut Report) {}

/// `validateConnectionPool`; also used by Sidecar (`inboundConnectionPool`, ingress `connectionPool`).
pub(super) fn connection_pool(_cp: &ConnectionPoolSettings, _p: &P, _r: &mut Report) {}
