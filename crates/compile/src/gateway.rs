//! Gateway role (`pilot/pkg/networking/core/gateway.go`, `model/gateway.go`):
//! the Gateways selecting this node merged per port, listeners and filter
//! chains per server, one shared route table per HTTP port, TLS servers by SNI.

use crate::compile::{Builder, Context};

/// Adds the gateway listeners, route tables and their messages to `out`.
pub fn build(cx: &Context<'_>, out: &mut Builder) {
    let _ = (cx, out);
    todo!("gateway::build")
}
