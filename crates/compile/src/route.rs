//! Route translation (`pilot/pkg/networking/core/route/route.go`): Istio
//! HTTP/TCP/TLS rules into model routes, config-time filters applied,
//! default retry policy and timeouts, and the default route of a service.

use weir_api::types::Destination;

use crate::destination_rule::DrIndex;
use crate::message::Messages;
use crate::mesh::MeshConfig;
use crate::model::{Route, Str, TcpRoute};
use crate::node::Node;
use crate::registry::Registry;
use crate::virtual_service::ResolvedVs;

/// What a route is being built for.
#[derive(Clone, Copy, Debug)]
pub struct RouteEnv<'a> {
    pub node: &'a Node,
    pub mesh: &'a MeshConfig,
    pub registry: &'a Registry,
    pub drs: &'a DrIndex,
    /// The listener (service or gateway server) port.
    pub port: u16,
    /// `Some("ns/name")` when building for a gateway server, `None` for the sidecar (`mesh`).
    pub gateway: Option<&'a str>,
}

/// The HTTP routes of `vs` for `env`, in order; stops after the first catch-all.
pub fn http_routes(vs: &ResolvedVs, env: &RouteEnv<'_>, messages: &mut Messages) -> Vec<Route> {
    let _ = (vs, env, messages);
    todo!("route::http_routes")
}

/// The route of a service without VirtualService: catch-all to `cluster`
/// with the mesh default retry policy and no timeout.
pub fn default_http_route(cluster: Str, env: &RouteEnv<'_>) -> Route {
    let _ = (cluster, env);
    todo!("route::default_http_route")
}

/// The TCP routes of `vs` that apply to `env` (port and gateway filters), in order.
pub fn tcp_routes(vs: &ResolvedVs, env: &RouteEnv<'_>, messages: &mut Messages) -> Vec<TcpRoute> {
    let _ = (vs, env, messages);
    todo!("route::tcp_routes")
}

/// The TLS routes of `vs` that apply to `env`: (SNI hosts, route) pairs, in order.
pub fn tls_routes(vs: &ResolvedVs, env: &RouteEnv<'_>, messages: &mut Messages) -> Vec<(Vec<Str>, TcpRoute)> {
    let _ = (vs, env, messages);
    todo!("route::tls_routes")
}

/// The cluster a destination names: `outbound|PORT|SUBSET|HOST`, with the
/// port from the destination, else the service's only port, else the listener port.
pub fn destination_cluster(dest: &Destination, vs_namespace: &str, env: &RouteEnv<'_>) -> Str {
    let _ = (dest, vs_namespace, env);
    todo!("route::destination_cluster")
}
