//! `networking.istio.io` WorkloadEntry and WorkloadGroup: non-Kubernetes workloads.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::Labels;
use super::scalar::int;
use super::sorted_map::SortedMap;

/// An endpoint address (IP, host name or `unix://` path): stored inline when it is at most 23
/// bytes long, so an IP address costs no allocation; longer ones are one shared allocation.
pub type Address = smol_str::SmolStr;

/// A WorkloadEntry spec (also a ServiceEntry endpoint and a WorkloadGroup template).
///
/// Kept for every endpoint of every loaded ServiceEntry, so it is compact: address, ports and
/// weight inline, the fields most endpoints leave unset (labels, network, locality, service
/// account) behind one optional box (56 bytes and no allocation for an IP address, instead of
/// 112 and one).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "WorkloadEntryFields")]
pub struct WorkloadEntry {
    /// Inline up to 23 bytes (any IP address), else shared, not copied, by the registry and the
    /// snapshot built from it.
    pub address: Address,
    /// Port name -> number (a `SortedMap`: endpoints naming the same ports share one).
    pub ports: SortedMap<String, u32>,
    pub weight: u32,
    more: Option<Box<WorkloadMore>>,
}

/// The rarely set fields of a [`WorkloadEntry`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadMore {
    pub labels: Labels,
    pub network: String,
    pub locality: String,
    pub service_account: String,
}

/// The fields as written; [`WorkloadEntry`] is made from them.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct WorkloadEntryFields {
    address: Address,
    #[serde(deserialize_with = "int::map")]
    ports: SortedMap<String, u32>,
    labels: Labels,
    network: String,
    locality: String,
    #[serde(deserialize_with = "int::plain")]
    weight: u32,
    #[serde(alias = "service_account")]
    service_account: String,
}

impl From<WorkloadEntryFields> for WorkloadEntry {
    fn from(f: WorkloadEntryFields) -> WorkloadEntry {
        let more = WorkloadMore {
            labels: f.labels,
            network: f.network,
            locality: f.locality,
            service_account: f.service_account,
        };
        let more = (more != WorkloadMore::default()).then(|| Box::new(more));
        WorkloadEntry { address: f.address, ports: f.ports, weight: f.weight, more }
    }
}

static NO_LABELS: Labels = Labels::new();

impl WorkloadEntry {
    pub fn labels(&self) -> &Labels {
        self.more.as_ref().map_or(&NO_LABELS, |m| &m.labels)
    }
    pub fn network(&self) -> &str {
        self.more.as_ref().map_or("", |m| &m.network)
    }
    pub fn locality(&self) -> &str {
        self.more.as_ref().map_or("", |m| &m.locality)
    }
    pub fn service_account(&self) -> &str {
        self.more.as_ref().map_or("", |m| &m.service_account)
    }
    /// The rarely set fields, to change them (allocated on first use).
    pub fn more_mut(&mut self) -> &mut WorkloadMore {
        self.more.get_or_insert_default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadGroup {
    pub metadata: Option<GroupMetadata>,
    pub template: Option<WorkloadEntry>,
    pub probe: Option<ReadinessProbe>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GroupMetadata {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReadinessProbe {
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "initial_delay_seconds")]
    pub initial_delay_seconds: i32,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "timeout_seconds")]
    pub timeout_seconds: i32,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "period_seconds")]
    pub period_seconds: i32,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "success_threshold")]
    pub success_threshold: i32,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "failure_threshold")]
    pub failure_threshold: i32,
    /// oneof `health_check_method`.
    #[serde(alias = "http_get")]
    pub http_get: Option<HttpHealthCheckConfig>,
    #[serde(alias = "tcp_socket")]
    pub tcp_socket: Option<TcpHealthCheckConfig>,
    pub exec: Option<ExecHealthCheckConfig>,
    pub grpc: Option<GrpcHealthCheckConfig>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpHealthCheckConfig {
    pub path: String,
    #[serde(deserialize_with = "int::plain")]
    pub port: u32,
    pub host: String,
    pub scheme: String,
    #[serde(alias = "http_headers")]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpHealthCheckConfig {
    pub host: String,
    #[serde(deserialize_with = "int::plain")]
    pub port: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ExecHealthCheckConfig {
    pub command: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GrpcHealthCheckConfig {
    #[serde(deserialize_with = "int::plain")]
    pub port: u32,
    pub service: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rarely_set_fields_are_boxed_only_when_written() {
        assert!(std::mem::size_of::<WorkloadEntry>() <= 56, "kept per endpoint: keep it small");
        let plain: WorkloadEntry =
            serde_json::from_value(serde_json::json!({"address": "10.0.0.1", "ports": {"http": 80}, "weight": 2}))
                .unwrap();
        assert!(plain.more.is_none());
        assert!(!plain.address.is_heap_allocated());
        assert!(Address::from("[2001:db8:85a3::8a2e:370:7334]").is_heap_allocated(), "long: one shared allocation");
        assert_eq!((&*plain.address, plain.ports.get("http"), plain.weight), ("10.0.0.1", Some(&80), 2));
        assert_eq!((plain.labels().len(), plain.network(), plain.locality(), plain.service_account()), (0, "", "", ""));
        let full: WorkloadEntry = serde_json::from_value(serde_json::json!({
            "address": "10.0.0.2", "labels": {"app": "a"}, "network": "n", "locality": "r/z", "service_account": "sa"
        }))
        .unwrap();
        assert_eq!(full.labels().get("app").map(String::as_str), Some("a"));
        assert_eq!((full.network(), full.locality(), full.service_account()), ("n", "r/z", "sa"));
        let err = serde_json::from_value::<WorkloadEntry>(serde_json::json!({"adress": "x"})).unwrap_err();
        assert!(err.to_string().contains("unknown field `adress`"), "{err}");
    }
}
