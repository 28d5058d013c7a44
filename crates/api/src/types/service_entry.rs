//! `networking.istio.io` ServiceEntry: services added to the registry by hand.

use serde::Deserialize;

use super::common::WorkloadSelector;
use super::scalar::{int, proto_enum};
use super::workload_entry::WorkloadEntry;

proto_enum!(
    /// `ServiceEntry.Location`.
    Location { MeshExternal = 0 => "MESH_EXTERNAL", MeshInternal = 1 => "MESH_INTERNAL" }
);

proto_enum!(
    /// `ServiceEntry.Resolution`.
    Resolution { None = 0 => "NONE", Static = 1 => "STATIC", Dns = 2 => "DNS", DnsRoundRobin = 3 => "DNS_ROUND_ROBIN", DynamicDns = 4 => "DYNAMIC_DNS" }
);

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceEntry {
    pub hosts: Vec<String>,
    pub addresses: Vec<String>,
    pub ports: Vec<ServicePort>,
    pub location: Location,
    pub resolution: Resolution,
    #[serde(deserialize_with = "endpoints_sharing_ports")]
    pub endpoints: Vec<WorkloadEntry>,
    #[serde(alias = "workload_selector")]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(alias = "export_to")]
    pub export_to: Vec<String>,
    #[serde(alias = "subject_alt_names")]
    pub subject_alt_names: Vec<String>,
}

/// Endpoints, where consecutive endpoints that name the same ports share one port map (most
/// do: one small allocation per ServiceEntry instead of one per endpoint).
fn endpoints_sharing_ports<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<WorkloadEntry>, D::Error> {
    let mut endpoints = Vec::<WorkloadEntry>::deserialize(d)?;
    super::sorted_map::SortedMap::share_consecutive(&mut endpoints, |e| &mut e.ports);
    Ok(endpoints)
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServicePort {
    #[serde(deserialize_with = "int::plain")]
    pub number: u32,
    pub protocol: String,
    pub name: String,
    #[serde(deserialize_with = "int::plain")]
    #[serde(alias = "target_port")]
    pub target_port: u32,
}
