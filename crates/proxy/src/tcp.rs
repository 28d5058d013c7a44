//! TCP proxying for `tcp` filter chains (Envoy `tcp_proxy`): the first route
//! whose destination subnets contain the listener address, a weighted
//! cluster, an endpoint from the cluster's balancer, then bytes both ways.
//!
//! Failures close the downstream connection with a reset, as Envoy does:
//! unknown cluster (`NC`), no endpoint (`UH`, also `BlackHoleCluster`),
//! connect failure (`UF`). `PassthroughCluster` needs the destination the
//! client originally dialed, which weir does not see without traffic capture:
//! such connections are reset with a warning (once per listener).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderMap;
use tokio::net::TcpStream;
use weir_compile::model::{Str, TcpRoute};

use crate::lb::PickInput;
use crate::runtime::{Runtime, tcp_route};

/// Closes with a TCP reset.
pub(crate) fn reset(sock: TcpStream) {
    let _ = sock.set_zero_linger();
    drop(sock);
}

/// Logs `message` the first time `flag` is seen unset.
pub(crate) fn warn_once(flag: &AtomicBool, listener: &str, message: &str) {
    if !flag.swap(true, Ordering::Relaxed) {
        tracing::warn!(listener, "{message}");
    }
}

pub(crate) async fn proxy(
    rt: Arc<Runtime>,
    routes: &[TcpRoute],
    listener: &Str,
    peer: SocketAddr,
    local: SocketAddr,
    mut sock: TcpStream,
    passthrough_warned: &AtomicBool,
) {
    let Some(route) = tcp_route(routes, local.ip()) else {
        tracing::debug!(%listener, "no TCP route for this destination; closing");
        return reset(sock);
    };
    let dest = match route.clusters.as_slice() {
        [one] => Some(one),
        all => {
            let total: u64 = all.iter().map(|c| u64::from(c.weight)).sum();
            if total == 0 {
                all.first()
            } else {
                let mut r = fastrand::u64(..total);
                all.iter().find(|c| {
                    let w = u64::from(c.weight);
                    if r < w {
                        true
                    } else {
                        r -= w;
                        false
                    }
                })
            }
        }
    };
    let Some(dest) = dest else { return reset(sock) };
    let Some(cluster) = rt.cluster(&dest.cluster).cloned() else {
        tracing::debug!(%listener, cluster = %dest.cluster, "TCP route to a cluster not in the snapshot (NC); resetting");
        return reset(sock);
    };
    if cluster.original_dst {
        warn_once(
            passthrough_warned,
            listener,
            "TCP passthrough (PassthroughCluster) is not supported yet: weir cannot see the original destination \
             without traffic capture; connections are reset",
        );
        return reset(sock);
    }
    let headers = HeaderMap::new();
    let input = PickInput { headers: &headers, path: "", peer: peer.ip() };
    let Some(i) = cluster.balancer.pick(&cluster.endpoints, &input, &[]) else {
        tracing::debug!(%listener, cluster = %cluster.name, "no healthy upstream (UH); resetting");
        return reset(sock);
    };
    let endpoint = cluster.endpoints[i].clone();
    // Long-lived connections must not keep old snapshots alive.
    drop(rt);
    let Some(mut guard) = cluster.try_acquire(false) else {
        tracing::debug!(%listener, cluster = %cluster.name, "circuit breaker open (UO); resetting");
        return reset(sock);
    };
    guard.set_endpoint(&endpoint);
    let mut upstream = match endpoint.connect_tcp().await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%listener, upstream = %endpoint.host, error = %e, "upstream connect failed (UF); resetting");
            return reset(sock);
        }
    };
    match tokio::io::copy_bidirectional(&mut sock, &mut upstream).await {
        Ok((up, down)) => tracing::debug!(%listener, upstream = %endpoint.host, up, down, "TCP connection closed"),
        Err(e) => tracing::debug!(%listener, upstream = %endpoint.host, error = %e, "TCP connection ended"),
    }
    drop(guard);
}
