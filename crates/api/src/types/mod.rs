//! The Istio networking API as users write it: one Rust type per proto
//! message, field for field, plus the Kubernetes envelope (metadata, origin).

pub mod common;
pub mod destination_rule;
pub mod gateway;
pub mod scalar;
pub mod service_entry;
pub mod sidecar;
pub mod sorted_map;
pub mod virtual_service;
pub mod workload_entry;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;

pub use common::*;
pub use destination_rule::*;
pub use gateway::*;
pub use scalar::Duration;
pub use service_entry::*;
pub use sidecar::*;
pub use sorted_map::SortedMap;
pub use virtual_service::*;
pub use workload_entry::*;

/// The API group all weir-native kinds belong to.
pub const NETWORKING_GROUP: &str = "networking.istio.io";
/// apiVersions served for every networking kind; they share one schema.
pub const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];

/// Kubernetes object metadata: the fields weir reads, plus the ones Kubernetes writes, which are
/// accepted so that `kubectl get -o yaml` output loads, and dropped (they take no memory).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Istio's processing order: oldest first (absent sorts first).
    pub creation_timestamp: Option<String>,
    pub generate_name: IgnoredAny,
    pub uid: IgnoredAny,
    pub resource_version: IgnoredAny,
    pub generation: IgnoredAny,
    pub deletion_timestamp: IgnoredAny,
    pub deletion_grace_period_seconds: IgnoredAny,
    pub finalizers: IgnoredAny,
    pub owner_references: IgnoredAny,
    pub managed_fields: IgnoredAny,
    pub self_link: IgnoredAny,
}

/// Where an object came from: the file and the line of its document, plus
/// the line of every field so messages can point at the exact spot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: u32,
    pub field_lines: FieldLines,
}

impl Origin {
    /// The line of `path` (as `spec.http[0].route`), or of its nearest
    /// ancestor that was written, or of the document.
    pub fn line_of(&self, path: &str) -> u32 {
        let mut p = path;
        loop {
            if let Some(l) = self.field_lines.get(p) {
                return l;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.line,
            }
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Field path (`spec.http[0].route`) to 1-based line number. Paths are kept
/// as hashes: building this table is on the loading hot path, lookups
/// happen only when a message is printed. Each entry is one `u64`: the top
/// 40 bits of the path's hash, then the line (24 bits; later lines read as
/// the last one that fits). Shared by the clones of an object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldLines(Arc<[u64]>);

const LINE_BITS: u32 = 24;
const LINE_MASK: u64 = (1 << LINE_BITS) - 1;

impl FieldLines {
    /// Entries are `(path_hash(path), line)`.
    pub fn new(entries: Vec<(u64, u32)>) -> Self {
        let mut packed: Vec<u64> =
            entries.into_iter().map(|(h, line)| (h & !LINE_MASK) | u64::from(line).min(LINE_MASK)).collect();
        packed.sort_unstable();
        FieldLines(packed.into())
    }
    pub fn get(&self, path: &str) -> Option<u32> {
        let h = path_hash(path) & !LINE_MASK;
        let i = self.0.partition_point(|e| e & !LINE_MASK < h);
        let e = *self.0.get(i).filter(|e| *e & !LINE_MASK == h)?;
        u32::try_from(e & LINE_MASK).ok()
    }
}

/// FNV-1a over the path text: the key of [`FieldLines`].
pub fn path_hash(path: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The seven networking kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
    WorkloadGroup,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::WorkloadGroup => "WorkloadGroup",
        }
    }
    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The typed spec of one networking object.
// Objects are loaded once and then borrowed, not moved around on hot paths, so the
// size difference between variants costs nothing worth an extra allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    VirtualService(VirtualService),
    DestinationRule(DestinationRule),
    Gateway(Gateway),
    ServiceEntry(ServiceEntry),
    Sidecar(Sidecar),
    WorkloadEntry(WorkloadEntry),
    WorkloadGroup(WorkloadGroup),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::VirtualService(_) => Kind::VirtualService,
            Spec::DestinationRule(_) => Kind::DestinationRule,
            Spec::Gateway(_) => Kind::Gateway,
            Spec::ServiceEntry(_) => Kind::ServiceEntry,
            Spec::Sidecar(_) => Kind::Sidecar,
            Spec::WorkloadEntry(_) => Kind::WorkloadEntry,
            Spec::WorkloadGroup(_) => Kind::WorkloadGroup,
        }
    }
}

/// One Istio networking object: envelope, typed spec and origin.
#[derive(Clone, Debug, PartialEq)]
pub struct IstioObject {
    pub api_version: String,
    pub meta: ObjectMeta,
    pub spec: Spec,
    pub origin: Origin,
}

impl IstioObject {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }
    /// `namespace/name`, as messages print it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.meta.namespace, self.meta.name)
    }
}

/// A Kubernetes object of another kind (Service, Secret, Deployment, ...),
/// kept raw so that later stages can read Services, EndpointSlices and
/// Secrets without changing the loader.
#[derive(Clone, Debug, PartialEq)]
pub struct OtherObject {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub raw: serde_json::Value,
    pub origin: Origin,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lines_find_each_path_and_saturate_huge_lines() {
        let paths = ["spec", "spec.hosts", "spec.hosts[0]", "spec.ports[0].number", "metadata.name"];
        let entries = paths.iter().enumerate().map(|(i, p)| (path_hash(p), 10 * i as u32 + 1)).collect();
        let lines = FieldLines::new(entries);
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(lines.get(p), Some(10 * i as u32 + 1), "{p}");
        }
        assert_eq!(lines.get("spec.http"), None);
        let big = FieldLines::new(vec![(path_hash("spec"), u32::MAX)]);
        assert_eq!(big.get("spec"), Some((1 << 24) - 1));
    }
}
