//! Problems found while compiling. They never abort compilation: the
//! affected piece is skipped and the rest of the snapshot is built.
//! Codes are Istio's analyzer codes where one exists (`IST0101`), else weir's own (`WEIR1xx`).

use serde::Serialize;

use crate::model::Str;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        })
    }
}

/// Message codes. Istio's analyzer codes keep their numbers and meaning.
pub mod code {
    /// Referenced host, subset or gateway not found.
    pub const REFERENCED_RESOURCE_NOT_FOUND: &str = "IST0101";
    /// Several mesh VirtualServices define the same host; only the first is used by sidecars.
    pub const CONFLICTING_MESH_GATEWAY_VS_HOSTS: &str = "IST0109";
    pub const CONFLICTING_SIDECAR_WORKLOAD_SELECTORS: &str = "IST0110";
    pub const MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS: &str = "IST0111";
    /// Destination service has several ports and the route names none.
    pub const VS_DESTINATION_PORT_SELECTOR_REQUIRED: &str = "IST0112";
    pub const VS_UNREACHABLE_RULE: &str = "IST0130";
    pub const VS_INEFFECTIVE_MATCH: &str = "IST0131";
    /// VS host not admitted by any server of a gateway it binds to.
    pub const VS_HOST_NOT_FOUND_IN_GATEWAY: &str = "IST0132";
    pub const SERVICE_ENTRY_ADDRESSES_REQUIRED: &str = "IST0134";
    /// Two gateway servers conflict on one port; the later one is skipped.
    pub const CONFLICTING_GATEWAYS: &str = "IST0145";
    pub const DR_SUBSET_SELECTS_NO_ENDPOINTS: &str = "IST0173";
    pub const UNKNOWN_DESTINATION_RULE_HOST: &str = "IST0174";
    pub const CONFLICTING_SERVICE_ENTRY_PROTOCOL: &str = "IST0177";
    /// Two virtual hosts on one route table claim the same domain; the later is dropped.
    pub const DUPLICATE_DOMAIN: &str = "WEIR101";
    /// A delegate VirtualService route conflicts with its root's match and is dropped.
    pub const CONFLICTING_DELEGATE: &str = "WEIR102";
    /// A route can never match (shadowed by an earlier catch-all).
    pub const SHADOWED_ROUTE: &str = "WEIR103";
    /// A delegate VirtualService named by a root does not exist or is not exported to it.
    pub const DELEGATE_NOT_FOUND: &str = "WEIR104";
    /// Two services want the same sidecar outbound TCP port; the later is not served.
    pub const PORT_CONFLICT: &str = "WEIR105";
}

/// One compile-time finding, about one object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Message {
    pub level: Level,
    pub code: &'static str,
    /// `Kind ns/name` of the object the message is about.
    pub object: Str,
    /// `file:line` of that object (or of the field), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Str>,
    pub text: String,
}

impl std::fmt::Display for Message {
    /// `Error [IST0101] (VirtualService default/reviews) Referenced host not found: "x"`, as `istioctl analyze`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}] ({}) {}", self.level, self.code, self.object, self.text)
    }
}

/// Collects messages without duplicates (compiling several ports may find the same problem twice).
#[derive(Clone, Debug, Default)]
pub struct Messages(std::collections::BTreeSet<Message>);

impl Messages {
    pub fn push(&mut self, m: Message) {
        self.0.insert(m);
    }
    pub fn error(&mut self, code: &'static str, object: impl Into<Str>, origin: Option<Str>, text: impl Into<String>) {
        self.push(Message { level: Level::Error, code, object: object.into(), origin, text: text.into() });
    }
    pub fn warn(&mut self, code: &'static str, object: impl Into<Str>, origin: Option<Str>, text: impl Into<String>) {
        self.push(Message { level: Level::Warning, code, object: object.into(), origin, text: text.into() });
    }
    pub fn into_vec(self) -> Vec<Message> {
        self.0.into_iter().collect()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Message> {
        self.0.iter()
    }
}
