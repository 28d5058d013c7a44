//! Helpers of the connection-pool and outlier-detection tests: cluster
//! statistics and `/clusters` lines from the admin handlers.
#![allow(dead_code)]

use weir_proxy::State;

/// The cluster of service `host` (short name in `default`) on `port`.
pub fn cluster(host: &str, port: u16) -> String {
    format!("outbound|{port}||{host}.default.svc.cluster.local")
}

/// Statistic `stat` of `cluster` from `/stats` (panics when missing).
pub fn stat(state: &State, cluster: &str, stat: &str) -> u64 {
    let text = weir_proxy::admin::cluster_stats_text(state);
    let key = format!("cluster.{cluster}.{stat}: ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key} in /stats:\n{text}"))
        .parse()
        .unwrap()
}

/// `/clusters` lines of `cluster` for `field` (`health_flags`, ...), by endpoint `host:port`.
pub fn clusters_field(state: &State, cluster: &str, field: &str) -> Vec<(String, String)> {
    let text = weir_proxy::admin::clusters(state);
    let prefix = format!("{cluster}::");
    let suffix = format!("::{field}::");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| {
            let (host, value) = l.split_once(&suffix)?;
            Some((host.to_string(), value.to_string()))
        })
        .collect()
}

/// Endpoints of `cluster` that outlier detection ejects now.
pub fn ejected(state: &State, cluster: &str) -> Vec<String> {
    clusters_field(state, cluster, "health_flags")
        .into_iter()
        .filter(|(_, v)| v.contains("failed_outlier_check"))
        .map(|(h, _)| h)
        .collect()
}
