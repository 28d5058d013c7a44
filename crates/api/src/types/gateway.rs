//! `networking.istio.io` Gateway: the ports, hosts and TLS a gateway proxy serves.

use serde::Deserialize;

use super::common::{Labels, Port, ServerTlsSettings};

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Gateway {
    pub servers: Vec<Server>,
    /// `None` selects every workload; `Some(empty)` is written but selects all too.
    pub selector: Option<Labels>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Server {
    pub port: Option<Port>,
    pub bind: String,
    pub hosts: Vec<String>,
    pub tls: Option<ServerTlsSettings>,
    /// Not implemented by Istio either.
    #[serde(alias = "default_endpoint")]
    pub default_endpoint: String,
    pub name: String,
}
