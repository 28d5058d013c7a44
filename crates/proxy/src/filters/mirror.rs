//! Request mirroring (Envoy `request_mirror_policies`): a copy of a share of
//! requests goes to another cluster, fire-and-forget; its response and
//! failures are ignored and never delay the real request.
//!
//! The copy is the request as forwarded (after rewrites and header
//! operations). Its `Host` keeps the original authority: current istiod sets
//! `disable_shadow_host_suffix_append` (`DISABLE_SHADOW_HOST_SUFFIX`, default
//! true). Setting the environment variable `DISABLE_SHADOW_HOST_SUFFIX=false`
//! restores Envoy's classic `-shadow` suffix (`httpbin:8000` ->
//! `httpbin-shadow:8000`). A request body is mirrored while it is within the
//! replay buffer; a longer body ends the copy early.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use crate::router::split_host_port;

/// Whether mirrored requests get the `-shadow` host suffix.
pub(crate) fn shadow_suffix() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("DISABLE_SHADOW_HOST_SUFFIX").is_ok_and(|v| v.eq_ignore_ascii_case("false") || v == "0")
    })
}

/// `host:port` -> `host-shadow:port`.
pub(crate) fn shadow_authority(authority: &str) -> String {
    match split_host_port(authority) {
        (host, Some(port)) => format!("{host}-shadow:{port}"),
        (host, None) => format!("{host}-shadow"),
    }
}

/// Sends a mirrored request in the background, bounded by `timeout`.
pub(crate) fn spawn<F, T, E>(send: F, timeout: Option<Duration>, cluster: &str)
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    E: std::fmt::Display,
    T: Send + 'static,
{
    let cluster = cluster.to_string();
    tokio::spawn(async move {
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, send).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!(%cluster, "mirrored request timed out");
                    return;
                }
            },
            None => send.await,
        };
        if let Err(e) = result {
            tracing::debug!(%cluster, error = %e, "mirrored request failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_names() {
        assert_eq!(shadow_authority("httpbin:8000"), "httpbin-shadow:8000");
        assert_eq!(shadow_authority("httpbin"), "httpbin-shadow");
    }
}
