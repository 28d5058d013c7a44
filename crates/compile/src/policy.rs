//! Effective upstream policy of a cluster: DestinationRule settings merged
//! per (port, subset) with Istio's defaults filled in.

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClusterPolicy {}
