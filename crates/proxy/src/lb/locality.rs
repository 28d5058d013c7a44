//! Locality-aware load balancing: which priority level each endpoint of a
//! cluster is in and with what weight, for one node. This is what istiod
//! writes into the node's EDS (`loadbalancer.go`): `distribute` rewrites
//! locality weights (endpoints of localities it does not name get no traffic);
//! otherwise, when the cluster has outlier detection, `failoverPriority`
//! (label equality with the node) and proximity (`region/zone/subzone`, with
//! `failover` region pairs) give priorities 0, 1, ...; without outlier
//! detection every endpoint is priority 0.

use weir_compile::model::{Endpoint, NodeSummary};
use weir_compile::policy::LocalityLb;

/// Endpoint weights are scaled by this under `distribute` so that locality shares stay exact.
const DISTRIBUTE_SCALE: u64 = 1000;
const NETWORK_LABEL: &str = "topology.istio.io/network";

/// Where one endpoint sits: its priority level and weight (0: never picked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    pub priority: u32,
    pub weight: u64,
}

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Locality<'a> {
    region: &'a str,
    zone: &'a str,
    subzone: &'a str,
}

fn split(s: &str) -> Locality<'_> {
    let mut it = s.splitn(3, '/');
    Locality { region: it.next().unwrap_or(""), zone: it.next().unwrap_or(""), subzone: it.next().unwrap_or("") }
}

/// Istio's `LocalityMatch`: `region/zone/subzone` with `*` (and missing parts) matching anything.
fn matches(l: Locality<'_>, pattern: &str) -> bool {
    let p = split(pattern);
    let part = |want: &str, have: &str, optional: bool| want == "*" || (optional && want.is_empty()) || want == have;
    part(p.region, l.region, false) && part(p.zone, l.zone, true) && part(p.subzone, l.subzone, true)
}

/// Istio's `LbPriority`: 0 same subzone, 1 same zone, 2 same region, 3 elsewhere.
fn proximity(node: Locality<'_>, ep: Locality<'_>) -> u32 {
    match (node.region == ep.region, node.zone == ep.zone, node.subzone == ep.subzone) {
        (true, true, true) => 0,
        (true, true, false) => 1,
        (true, false, _) => 2,
        _ => 3,
    }
}

fn ep_locality(e: &Endpoint) -> Locality<'_> {
    e.meta.locality.as_deref().map(split).unwrap_or_default()
}

/// Places `endpoints` for `node`; `outlier_detection` says whether failover priorities apply.
pub(crate) fn place(
    endpoints: &[Endpoint],
    node: &NodeSummary,
    setting: Option<&LocalityLb>,
    outlier_detection: bool,
) -> Vec<Placement> {
    let mut out: Vec<Placement> =
        endpoints.iter().map(|e| Placement { priority: 0, weight: u64::from(e.weight.max(1)) }).collect();
    let Some(setting) = setting else { return out };
    let node_locality = node.locality.as_deref().map(split);

    if setting.zone_aware {
        // Zone-aware setting: region-level priorities, failover always on.
        let Some(n) = node_locality else { return out };
        let mut prio: Vec<u32> = vec![0; endpoints.len()];
        if !setting.failover_priority.is_empty() {
            prio = label_priorities(endpoints, node, &setting.failover_priority);
        }
        for (i, e) in endpoints.iter().enumerate() {
            let r = ep_locality(e).region;
            let p = if r == n.region {
                0
            } else if setting.failover.iter().find(|(from, _)| **from == *n.region).is_some_and(|(_, to)| **to == *r) {
                1
            } else {
                2
            };
            prio[i] = prio[i] * 3 + p;
        }
        compact(&mut out, &prio);
        return out;
    }

    if !setting.distribute.is_empty() {
        let Some(n) = node_locality else { return out };
        let Some((_, to)) = setting.distribute.iter().find(|(from, _)| matches(n, from)) else { return out };
        // Locality weights: each locality's original weight is the sum of its endpoints'.
        let mut matched = vec![false; endpoints.len()];
        let mut new_weight: Vec<u64> = vec![0; endpoints.len()];
        for (pattern, share) in to {
            let mut localities: Vec<(&str, u64)> = Vec::new();
            for (i, e) in endpoints.iter().enumerate() {
                if matched[i] || !matches(ep_locality(e), pattern) {
                    continue;
                }
                matched[i] = true;
                let key = e.meta.locality.as_deref().unwrap_or("");
                match localities.iter_mut().find(|(l, _)| *l == key) {
                    Some((_, w)) => *w += u64::from(e.weight.max(1)),
                    None => localities.push((key, u64::from(e.weight.max(1)))),
                }
            }
            let total: u64 = localities.iter().map(|(_, w)| w).sum();
            for (loc, orig) in &localities {
                // Istio: ceil(original * share / total) per locality.
                let lw = (orig * u64::from(*share)).div_ceil(total.max(1));
                for (i, e) in endpoints.iter().enumerate() {
                    if matched[i] && e.meta.locality.as_deref().unwrap_or("") == *loc && new_weight[i] == 0 {
                        // Split the locality weight over its endpoints by their own weights.
                        new_weight[i] = (lw * DISTRIBUTE_SCALE * u64::from(e.weight.max(1))).div_ceil(*orig).max(1);
                        if lw == 0 {
                            new_weight[i] = 0;
                        }
                    }
                }
            }
        }
        for (p, w) in out.iter_mut().zip(new_weight) {
            p.weight = w;
        }
        return out;
    }

    if !outlier_detection {
        return out;
    }
    let mut prio: Vec<u32> = vec![0; endpoints.len()];
    let labels = !setting.failover_priority.is_empty();
    if labels {
        prio = label_priorities(endpoints, node, &setting.failover_priority);
    }
    if let Some(n) = node_locality
        && (!labels || !setting.failover.is_empty())
    {
        let failover_to = setting.failover.iter().find(|(from, _)| **from == *n.region).map(|(_, to)| &**to);
        for (i, e) in endpoints.iter().enumerate() {
            let l = ep_locality(e);
            let mut p = proximity(n, l);
            if p == 3 && failover_to.is_some_and(|to| e.meta.locality.is_none() || l.region != to) {
                p = 4;
            }
            prio[i] = prio[i] * 5 + p;
        }
    }
    compact(&mut out, &prio);
    out
}

/// `failoverPriority`: an endpoint's priority is how many leading labels (`label` or
/// `label=value`) it shares with the node, counted from the lowest.
fn label_priorities(endpoints: &[Endpoint], node: &NodeSummary, labels: &[weir_compile::model::Str]) -> Vec<u32> {
    if node.labels.is_empty() {
        return vec![0; endpoints.len()];
    }
    let lowest = labels.len() as u32;
    let includes_network = labels.first().is_some_and(|l| &**l == NETWORK_LABEL);
    endpoints
        .iter()
        .map(|e| {
            let (mut priority, mut adjust) = (0, 0);
            for (j, spec) in labels.iter().enumerate() {
                let (name, fixed) = match spec.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (&**spec, None),
                };
                let want = fixed.or_else(|| node.labels.iter().find(|(k, _)| &**k == name).map(|(_, v)| &**v));
                let have = e.meta.labels.iter().find(|(k, _)| &**k == name).map(|(_, v)| &**v);
                if want.unwrap_or("") != have.unwrap_or("") {
                    if j == 0 && includes_network {
                        adjust = lowest;
                        continue;
                    }
                    priority = lowest - j as u32;
                    break;
                }
            }
            priority + adjust
        })
        .collect()
}

/// Renumbers raw priorities to 0, 1, 2, ... keeping their order (Envoy needs no gaps).
fn compact(out: &mut [Placement], raw: &[u32]) {
    let mut levels: Vec<u32> = raw.to_vec();
    levels.sort_unstable();
    levels.dedup();
    for (p, r) in out.iter_mut().zip(raw) {
        p.priority = levels.partition_point(|l| l < r) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ep(locality: &str, labels: &[(&str, &str)]) -> Endpoint {
        Endpoint {
            address: "10.0.0.1".into(),
            port: 80,
            weight: 1,
            meta: Arc::new(weir_compile::model::EndpointMeta {
                locality: (!locality.is_empty()).then(|| locality.into()),
                labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
                ..Default::default()
            }),
        }
    }

    fn node(locality: &str) -> NodeSummary {
        NodeSummary { locality: Some(locality.into()), ..NodeSummary::default() }
    }

    fn prios(p: &[Placement]) -> Vec<u32> {
        p.iter().map(|p| p.priority).collect()
    }

    #[test]
    fn failover_task_priorities() {
        // Istio's locality failover task: a client in region1/zone1, failover region1 -> region2.
        let eps =
            [ep("region1/zone1", &[]), ep("region1/zone2", &[]), ep("region2/zone3", &[]), ep("region3/zone4", &[])];
        let s = LocalityLb { failover: vec![("region1".into(), "region2".into())], ..LocalityLb::default() };
        assert_eq!(prios(&place(&eps, &node("region1/zone1"), Some(&s), true)), [0, 1, 2, 3]);
        // Without outlier detection: no priorities.
        assert_eq!(prios(&place(&eps, &node("region1/zone1"), Some(&s), false)), [0, 0, 0, 0]);
        // Without failover pairs, other regions share the last level.
        let s = LocalityLb::default();
        assert_eq!(prios(&place(&eps, &node("region1/zone1"), Some(&s), true)), [0, 1, 2, 2]);
        assert_eq!(prios(&place(&eps, &node("region1/zone1"), None, true)), [0, 0, 0, 0]);
    }

    #[test]
    fn distribute_task_weights() {
        let eps =
            [ep("region1/zone1", &[]), ep("region1/zone2", &[]), ep("region2/zone3", &[]), ep("region3/zone4", &[])];
        let s = LocalityLb {
            distribute: vec![(
                "region1/zone1/*".into(),
                vec![("region1/zone1/*".into(), 70), ("region1/zone2/*".into(), 20), ("region3/zone4/*".into(), 10)],
            )],
            ..LocalityLb::default()
        };
        let p = place(&eps, &node("region1/zone1"), Some(&s), true);
        let w: Vec<u64> = p.iter().map(|p| p.weight).collect();
        assert_eq!(w, [70_000, 20_000, 0, 10_000]);
        assert_eq!(prios(&p), [0, 0, 0, 0]);
        // A node the `from` does not match keeps the endpoint weights.
        let p = place(&eps, &node("region2/zone3"), Some(&s), true);
        assert!(p.iter().all(|p| p.weight == 1));
    }

    #[test]
    fn failover_priority_labels() {
        let eps = [
            ep("", &[("topology.istio.io/network", "n1"), ("topology.kubernetes.io/region", "r1")]),
            ep("", &[("topology.istio.io/network", "n1"), ("topology.kubernetes.io/region", "r2")]),
            ep("", &[("topology.istio.io/network", "n2"), ("topology.kubernetes.io/region", "r1")]),
            ep("", &[("topology.istio.io/network", "n2"), ("topology.kubernetes.io/region", "r2")]),
        ];
        let n = NodeSummary {
            labels: vec![
                ("topology.istio.io/network".into(), "n1".into()),
                ("topology.kubernetes.io/region".into(), "r1".into()),
            ],
            ..NodeSummary::default()
        };
        let s = LocalityLb {
            failover_priority: vec!["topology.istio.io/network".into(), "topology.kubernetes.io/region".into()],
            ..LocalityLb::default()
        };
        assert_eq!(prios(&place(&eps, &n, Some(&s), true)), [0, 1, 2, 3]);
        let s =
            LocalityLb { failover_priority: vec!["topology.kubernetes.io/region=r2".into()], ..LocalityLb::default() };
        assert_eq!(prios(&place(&eps, &n, Some(&s), true)), [1, 0, 1, 0]);
    }

    #[test]
    fn locality_patterns() {
        let l = split("r1/z1/s1");
        assert!(matches(l, "r1/z1/*"));
        assert!(matches(l, "r1"));
        assert!(matches(l, "*"));
        assert!(!matches(l, "r1/z2/*"));
        assert!(!matches(l, "r2/*"));
    }
}
