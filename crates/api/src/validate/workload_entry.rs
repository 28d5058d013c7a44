//! WorkloadEntry and WorkloadGroup validation (`ValidateWorkloadEntry`, `ValidateWorkloadGroup`).

use crate::types::{ObjectMeta, WorkloadEntry, WorkloadGroup};

use super::{P, Report};

pub(super) fn validate_entry(_meta: &ObjectMeta, _spec: &WorkloadEntry, _p: &P, _r: &mut Report) {}

pub(super) fn validate_group(_meta: &ObjectMeta, _spec: &WorkloadGroup, _p: &P, _r: &mut Report) {}
