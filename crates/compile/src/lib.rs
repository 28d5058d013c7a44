//! weir's "pilot": a pure function from (validated Istio objects, service
//! registry, node identity) to the snapshot one proxy executes.
//!
//! `compile(Input { config, registry, mesh }, &node) -> Snapshot`. The
//! modules follow Istio's concepts: `host` (names), `registry` (services),
//! `sidecar` (Sidecar scope), `virtual_service` and `route` (routing rules),
//! `destination_rule`, `policy` and `cluster` (upstream), `gateway` and
//! `outbound` (the two roles' listeners), `model` (the snapshot).

pub mod analyze;
pub mod cluster;
pub mod compile;
pub mod destination_rule;
pub mod explain;
mod fast_hash;
pub mod gateway;
pub mod host;
pub mod listener;
pub mod matcher;
pub mod mesh;
pub mod message;
pub mod model;
pub mod node;
pub mod outbound;
pub mod policy;
pub mod registry;
pub mod route;
pub mod sidecar;
pub mod store;
mod str_util;
pub mod virtual_service;

pub use compile::{Input, compile};
pub use mesh::MeshConfig;
pub use model::Snapshot;
pub use node::{Node, Role};
pub use registry::Registry;
pub use store::ConfigStore;
