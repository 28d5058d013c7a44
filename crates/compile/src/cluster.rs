//! Clusters: one per (service, port) plus one per DestinationRule subset,
//! named `outbound|PORT|SUBSET|FQDN`, with endpoints and effective policy.

use std::sync::Arc;

use crate::destination_rule::DrIndex;
use crate::message::Messages;
use crate::mesh::MeshConfig;
use crate::model::{Cluster, Str};
use crate::registry::Service;

/// `outbound|9080|v1|reviews.default.svc.cluster.local` (`outbound|9080||...` without subset).
pub fn cluster_name(port: u16, subset: Option<&str>, host: &str) -> Str {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or("")).into()
}

/// Parses a cluster name back into (port, subset, host).
pub fn parse_cluster_name(name: &str) -> Option<(u16, Option<&str>, &str)> {
    let mut parts = name.splitn(4, '|');
    if parts.next()? != "outbound" {
        return None;
    }
    let port = parts.next()?.parse().ok()?;
    let subset = parts.next()?;
    let host = parts.next()?;
    Some((port, (!subset.is_empty()).then_some(subset), host))
}

/// Builds the clusters of `services` for a client in `client_namespace`,
/// sorted by name.
pub fn build(
    services: &[&Arc<Service>],
    drs: &DrIndex,
    client_namespace: &str,
    mesh: &MeshConfig,
    messages: &mut Messages,
) -> Vec<Cluster> {
    let _ = (services, drs, client_namespace, mesh, messages);
    todo!("cluster::build")
}
