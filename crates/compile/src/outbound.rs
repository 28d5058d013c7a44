//! Sidecar role, outbound (`pilot/pkg/networking/core/httproute.go
//! BuildSidecarOutboundVirtualHosts`, `listener.go`): one listener per
//! service port, route tables named by port with a virtual host per
//! service (alternate domains included), TCP/TLS filter chains, and the
//! passthrough / block-all behaviour for unknown hosts.

use crate::compile::{Builder, Context};

/// Adds the sidecar outbound listeners and route tables to `out`.
pub fn build(cx: &Context<'_>, out: &mut Builder) {
    let _ = (cx, out);
    todo!("outbound::build")
}
