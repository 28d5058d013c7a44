//! Per-route HTTP filters, named after Envoy's: fault injection, CORS,
//! request mirroring (shadowing) and the router's retry policy.

pub mod cors;
pub mod fault;
pub mod mirror;
pub mod retry;
