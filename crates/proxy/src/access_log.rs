//! Access log lines: Envoy's default text format, JSON, or off.

use crate::AccessLogFormat;

/// One finished request, as the access log sees it.
#[derive(Clone, Debug, Default)]
pub struct AccessEntry {
    pub start: Option<std::time::SystemTime>,
    pub method: String,
    pub path: String,
    pub protocol: String,
    pub response_code: u16,
    pub response_flags: String,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub upstream_service_time_ms: Option<u64>,
    pub x_forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: String,
    pub authority: String,
    pub upstream_host: Option<String>,
    pub upstream_cluster: String,
    pub route_name: String,
}

pub struct AccessLog {
    format: AccessLogFormat,
}

impl AccessLog {
    pub fn new(format: AccessLogFormat) -> AccessLog {
        AccessLog { format }
    }
    pub fn log(&self, e: &AccessEntry) {
        let _ = (e, self.format);
    }
}
