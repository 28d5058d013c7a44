//! DestinationRule validation: the istiod webhook's rules (`ValidateDestinationRule` and the
//! traffic-policy, connection-pool, load-balancer, outlier-detection, TLS and locality checks it
//! calls in istio/istio `pkg/config/validation`) plus the DestinationRule CRD schema and CEL
//! constraints the API server enforces before the webhook runs. Messages are Istio's, or the API
//! server's (`Invalid value: ...`, `Required value`, `Too many: ...`) for schema-only rules.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::types::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb, DestinationRule, Duration,
    H2UpgradePolicy, LoadBalancerSettings, LocalityLoadBalancerSetting, ObjectMeta, OutlierDetection,
    PortTrafficPolicy, RetryBudget, Subset, TrafficPolicy, TunnelSettings, WarmupConfiguration,
    ZoneAwareLoadBalancerSetting,
};

use super::common;
use super::{P, Report, Severity, gofmt, schema};

/// `maxItems` of `portLevelSettings` in the CRD schema.
const MAX_PORT_LEVEL_SETTINGS: usize = 4096;
/// `maxProperties` of `workloadSelector.matchLabels` in the CRD schema.
const MAX_SELECTOR_LABELS: usize = 4096;
/// Envoy rejects Maglev tables this large or larger.
const MAGLEV_TABLE_SIZE_LIMIT: u64 = 5_000_011;

const TOPOLOGY_REGION: &str = "topology.kubernetes.io/region";
const TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
const TOPOLOGY_SUBZONE: &str = "topology.istio.io/subzone";
const CONFIGMAP_URI: &str = "configmap://";

pub(super) fn validate(meta: &ObjectMeta, spec: &DestinationRule, p: &P, r: &mut Report) {
    let ns = meta.namespace.as_str();
    r.check(&p.f("host"), common::wildcard_domain(&spec.host));
    if let Some(tp) = &spec.traffic_policy {
        traffic_policy(ns, tp, &p.f("trafficPolicy"), r);
    }

    let mut names = HashSet::new();
    for (i, s) in spec.subsets.iter().enumerate() {
        let sp = p.f("subsets").i(i);
        if !names.insert(s.name.as_str()) {
            r.error(&sp.f("name"), format!("duplicate subset names: {}", s.name));
        }
        // Istio keeps only the errors of subset-level policies; their warnings are dropped.
        errors_only(r, |r| subset(ns, s, &sp, r));
    }

    common::export_to(ns, &spec.export_to, false, spec.workload_selector.is_some(), &p.f("exportTo"), r);
    istio_mutual_notice(spec, p, r);

    if let Some(sel) = &spec.workload_selector {
        let lp = p.f("workloadSelector").f("matchLabels");
        common::workload_selector(&sel.match_labels, &lp, r);
        schema::selector_labels(r, &lp, &sel.match_labels, MAX_SELECTOR_LABELS);
    }
}

/// What weir says about `tls.mode: ISTIO_MUTUAL` (valid in Istio; weir has no mesh identity yet).
pub const ISTIO_MUTUAL_UNSUPPORTED: &str = "weir: tls.mode ISTIO_MUTUAL needs mesh identity (workload certificates \
     issued by istiod), which weir does not have yet; connections to this destination fail (503 UF) instead of using \
     plaintext: use SIMPLE or MUTUAL with your own certificates, or DISABLE";

/// A warning (not Istio's: weir's own) on every `ISTIO_MUTUAL` of the rule, top level,
/// port level and subsets, so that `weir validate` and `weir run` say why those connections fail.
fn istio_mutual_notice(spec: &DestinationRule, p: &P, r: &mut Report) {
    let policy = |tp: &TrafficPolicy, tp_path: &P, r: &mut Report| {
        if tp.tls.as_ref().is_some_and(|t| t.mode == ClientTlsMode::IstioMutual) {
            r.warn(&tp_path.f("tls").f("mode"), ISTIO_MUTUAL_UNSUPPORTED);
        }
        for (i, pl) in tp.port_level_settings.iter().enumerate() {
            if pl.tls.as_ref().is_some_and(|t| t.mode == ClientTlsMode::IstioMutual) {
                r.warn(&tp_path.f("portLevelSettings").i(i).f("tls").f("mode"), ISTIO_MUTUAL_UNSUPPORTED);
            }
        }
    };
    if let Some(tp) = &spec.traffic_policy {
        policy(tp, &p.f("trafficPolicy"), r);
    }
    for (i, s) in spec.subsets.iter().enumerate() {
        if let Some(tp) = &s.traffic_policy {
            policy(tp, &p.f("subsets").i(i).f("trafficPolicy"), r);
        }
    }
}

/// `validateConnectionPool`; also used by Sidecar (`inboundConnectionPool`, ingress `connectionPool`).
pub(super) fn connection_pool(cp: &ConnectionPoolSettings, p: &P, r: &mut Report) {
    if cp.http.is_none() && cp.tcp.is_none() {
        r.error(p, "connection pool must have at least one field");
        return;
    }

    if let Some(http) = &cp.http {
        let hp = p.f("http");
        let non_negative = [
            ("http1MaxPendingRequests", http.http1_max_pending_requests, "http1 max pending requests"),
            ("http2MaxRequests", http.http2_max_requests, "http2 max requests"),
            ("maxRequestsPerConnection", http.max_requests_per_connection, "max requests per connection"),
            ("maxRetries", http.max_retries, "max retries"),
        ];
        for (field, value, what) in non_negative {
            if value < 0 {
                r.error(&hp.f(field), format!("{what} must be non-negative"));
            }
        }
        if let Some(d) = &http.idle_timeout {
            duration(d, &hp.f("idleTimeout"), r);
        }
        if http.h2_upgrade_policy == H2UpgradePolicy::Upgrade && http.use_client_protocol {
            r.error(&hp.f("useClientProtocol"), "use client protocol must not be true when H2UpgradePolicy is UPGRADE");
        }
        if http.max_concurrent_streams < 0 {
            r.error(&hp.f("maxConcurrentStreams"), "max concurrent streams must be non-negative");
        }
        if let Some(ka) = &http.http2_keep_alive {
            let kp = hp.f("http2KeepAlive");
            match &ka.interval {
                Some(d) => duration(d, &kp.f("interval"), r),
                None => r.error(&kp.f("interval"), "http2 keepalive interval is required"),
            }
            match &ka.timeout {
                Some(d) => duration(d, &kp.f("timeout"), r),
                None => r.error(&kp.f("timeout"), "http2 keepalive timeout is required"),
            }
        }
    }

    if let Some(tcp) = &cp.tcp {
        let tp = p.f("tcp");
        if tcp.max_connections < 0 {
            r.error(&tp.f("maxConnections"), "max connections must be non-negative");
        }
        if let Some(d) = &tcp.connect_timeout {
            duration(d, &tp.f("connectTimeout"), r);
        }
        if let Some(d) = &tcp.max_connection_duration {
            duration(d, &tp.f("maxConnectionDuration"), r);
        }
        // A zero idle timeout (after truncation to whole milliseconds) disables it.
        if let Some(d) = tcp.idle_timeout.as_ref().filter(|d| d.as_nanos() / 1_000_000 != 0) {
            duration(d, &tp.f("idleTimeout"), r);
        }
        if let Some(ka) = &tcp.tcp_keepalive {
            let kp = tp.f("tcpKeepalive");
            if let Some(d) = &ka.time {
                duration(d, &kp.f("time"), r);
            }
            if let Some(d) = &ka.interval {
                duration(d, &kp.f("interval"), r);
            }
        }
    }
}

/// `validateSubset`.
fn subset(ns: &str, s: &Subset, p: &P, r: &mut Report) {
    if s.name.is_empty() {
        r.error(&p.f("name"), "subset name cannot be empty");
    } else if !common::is_dns1123_label(&s.name) {
        r.error(&p.f("name"), format!("subset name is invalid: {}", s.name));
    }
    common::labels(&s.labels, &p.f("labels"), r);
    if let Some(tp) = &s.traffic_policy {
        traffic_policy(ns, tp, &p.f("trafficPolicy"), r);
    }
}

/// `validateTrafficPolicy`.
fn traffic_policy(ns: &str, tp: &TrafficPolicy, p: &P, r: &mut Report) {
    if tp.outlier_detection.is_none()
        && tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        r.error(p, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        r.error(p, "tunnel and proxyProtocol must not be set together");
        return;
    }

    if let Some(od) = &tp.outlier_detection {
        outlier_detection(od, &p.f("outlierDetection"), r);
    }
    if let Some(cp) = &tp.connection_pool {
        connection_pool(cp, &p.f("connectionPool"), r);
    }
    if let Some(lb) = &tp.load_balancer {
        load_balancer(lb, tp.outlier_detection.as_ref(), &p.f("loadBalancer"), r);
    }
    if let Some(tls) = &tp.tls {
        client_tls(ns, tls, &p.f("tls"), r);
    }
    port_traffic_policies(ns, &tp.port_level_settings, &p.f("portLevelSettings"), r);
    if let Some(t) = &tp.tunnel {
        tunnel(t, &p.f("tunnel"), r);
    }
    // `proxyProtocol.version` is an enum of V1/V2 only, so Istio's version check cannot fail here.
    if let Some(rb) = &tp.retry_budget {
        retry_budget(rb, &p.f("retryBudget"), r);
    }
}

/// `validatePortTrafficPolicies`.
fn port_traffic_policies(ns: &str, pls: &[PortTrafficPolicy], p: &P, r: &mut Report) {
    schema::max_items(r, p, pls.len(), MAX_PORT_LEVEL_SETTINGS);
    for (i, pl) in pls.iter().enumerate() {
        let pp = p.i(i);
        if pl.port.is_none() {
            r.error(&pp.f("port"), "portTrafficPolicy must have valid port");
        }
        if pl.outlier_detection.is_none()
            && pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.tls.is_none()
        {
            r.error(&pp, "port traffic policy must have at least one field");
            continue;
        }
        // Istio keeps only the errors of port-level policies; their warnings are dropped.
        errors_only(r, |r| {
            if let Some(od) = &pl.outlier_detection {
                outlier_detection(od, &pp.f("outlierDetection"), r);
            }
            if let Some(cp) = &pl.connection_pool {
                connection_pool(cp, &pp.f("connectionPool"), r);
            }
            if let Some(lb) = &pl.load_balancer {
                load_balancer(lb, pl.outlier_detection.as_ref(), &pp.f("loadBalancer"), r);
            }
            if let Some(tls) = &pl.tls {
                client_tls(ns, tls, &pp.f("tls"), r);
            }
        });
    }
}

/// `validateTunnelSettings`.
fn tunnel(t: &TunnelSettings, p: &P, r: &mut Report) {
    if !t.protocol.is_empty() && t.protocol != "CONNECT" && t.protocol != "POST" {
        r.error(&p.f("protocol"), "tunnel protocol must be \"CONNECT\" or \"POST\"");
    }
    if let (Err(fqdn), Err(ip)) = (common::fqdn(&t.target_host), common::ip_address(&t.target_host)) {
        r.error(&p.f("targetHost"), format!("tunnel target host must be valid FQDN or IP address: {fqdn}; {ip}"));
    }
    if let Err(e) = common::port(i64::from(t.target_port)) {
        r.error(&p.f("targetPort"), format!("tunnel target port is invalid: {e}"));
    }
}

/// Schema bounds of `retryBudget` (the webhook does not check it).
fn retry_budget(rb: &RetryBudget, p: &P, r: &mut Report) {
    if let Some(v) = rb.percent {
        schema::range_f64(r, &p.f("percent"), v, 0.0, 100.0);
    }
}

/// `validateOutlierDetection`.
fn outlier_detection(od: &OutlierDetection, p: &P, r: &mut Report) {
    if let Some(d) = &od.base_ejection_time {
        duration(d, &p.f("baseEjectionTime"), r);
    }
    if od.consecutive_errors != 0 {
        r.warn(
            &p.f("consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    if !od.split_external_local_origin_errors && od.consecutive_local_origin_failures.unwrap_or(0) > 0 {
        r.error(
            &p.f("consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    if let Some(d) = &od.interval {
        duration(d, &p.f("interval"), r);
    }
    r.check(&p.f("maxEjectionPercent"), common::percent(i64::from(od.max_ejection_percent)));
    r.check(&p.f("minHealthPercent"), common::percent(i64::from(od.min_health_percent)));

    let cp = p.f("outlierDetectionHttpErrorCodes");
    for (i, &code) in od.outlier_detection_http_error_codes.iter().enumerate() {
        if code < 100 {
            schema::below_minimum(r, &cp.i(i), code, 100);
        } else if code > 599 {
            schema::above_maximum(r, &cp.i(i), code, 599);
        }
    }
}

/// `validateLoadBalancer`, plus the schema's oneof and warmup constraints.
fn load_balancer(lb: &LoadBalancerSettings, outlier: Option<&OutlierDetection>, p: &P, r: &mut Report) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        schema::one_of_fields(r, p, &["simple", "consistentHash"]);
    }
    if let Some(ch) = &lb.consistent_hash {
        consistent_hash(ch, &p.f("consistentHash"), r);
    }

    if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
        r.error(p, "only one of localityLbSetting and zoneAwareLbSetting can be set");
    }
    if let Some(l) = &lb.locality_lb_setting {
        locality_lb_setting(l, outlier, &p.f("localityLbSetting"), r);
    }
    if let Some(z) = &lb.zone_aware_lb_setting {
        zone_aware_lb_setting(z, outlier, &p.f("zoneAwareLbSetting"), r);
    }

    if let Some(d) = &lb.warmup_duration_secs
        && d.as_nanos() < 1_000_000
    {
        schema::cel(r, &p.f("warmupDurationSecs"), "string", "must be a valid duration greater than 1ms");
    }
    if lb.warmup_duration_secs.is_some() && lb.warmup.is_some() {
        // Istio accepts both and uses `warmup`; say so rather than reject.
        r.warn(&p.f("warmupDurationSecs"), "warmupDurationSecs is ignored because warmup is set");
    }
    if let Some(w) = &lb.warmup {
        warmup(w, &p.f("warmup"), r);
    }
}

fn consistent_hash(ch: &ConsistentHashLb, p: &P, r: &mut Report) {
    let keys = [
        ("httpHeaderName", ch.http_header_name.is_some()),
        ("httpCookie", ch.http_cookie.is_some()),
        ("useSourceIp", ch.use_source_ip.is_some()),
        ("httpQueryParameterName", ch.http_query_parameter_name.is_some()),
    ];
    let set: Vec<&str> = keys.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
    if set.len() > 1 {
        schema::one_of_fields(r, p, &set);
    }
    if ch.ring_hash.is_some() && ch.maglev.is_some() {
        schema::one_of_fields(r, p, &["ringHash", "maglev"]);
    }

    if let Some(cookie) = &ch.http_cookie {
        let cp = p.f("httpCookie");
        if cookie.name.is_empty() {
            r.error(&cp.f("name"), "name required for HttpCookie");
        }
        let mut seen = HashSet::new();
        for (i, attr) in cookie.attributes.iter().enumerate() {
            let ap = cp.f("attributes").i(i).f("name");
            if attr.name.is_empty() {
                r.error(&ap, "cookie attribute name cannot be empty");
            } else if !seen.insert(attr.name.as_str()) {
                r.error(&ap, format!("duplicate cookie attribute name: {}", attr.name));
            }
        }
    }

    if ch.minimum_ring_size != 0 {
        let mp = p.f("minimumRingSize");
        r.warn(
            &mp,
            "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
        );
        if ch.ring_hash.is_some() || ch.maglev.is_some() {
            r.error(&mp, "only one of MinimumRingSize or Maglev/Ringhash can be specified");
        }
    }

    if let Some(m) = &ch.maglev {
        let tp = p.f("maglev").f("tableSize");
        if m.table_size == 0 {
            r.error(&tp, "tableSize must be set for maglev");
        }
        if m.table_size >= MAGLEV_TABLE_SIZE_LIMIT {
            r.error(&tp, format!("tableSize must be less than {MAGLEV_TABLE_SIZE_LIMIT} for maglev"));
        }
        if !is_prime(m.table_size) {
            r.error(&tp, "tableSize must be a prime number for maglev");
        }
    }
}

/// Envoy's primality test for Maglev table sizes (treats 0 as not prime, 1..3 as prime).
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x & 1 == 0 {
        return false;
    }
    let limit = (x as f64).sqrt() as u64;
    (3..=limit).step_by(2).all(|f| !x.is_multiple_of(f))
}

/// The webhook's warmup checks merged with the schema's (`duration` required,
/// `minimumPercent` in [0, 100], `aggression` >= 0; the webhook wants it > 0).
fn warmup(w: &WarmupConfiguration, p: &P, r: &mut Report) {
    match &w.duration {
        Some(d) => duration(d, &p.f("duration"), r),
        None => r.error(&p.f("duration"), "Required value: duration is required"),
    }
    if let Some(v) = w.minimum_percent {
        let mp = p.f("minimumPercent");
        if v > 100.0 {
            schema::invalid(r, &mp, gofmt::float_v(v), "minimumPercent value should be less than or equal to 100");
        } else if v < 0.0 {
            schema::below_minimum(r, &mp, gofmt::float_v(v), 0);
        }
    }
    if let Some(v) = w.aggression
        && (v <= 0.0 || v.is_nan())
    {
        schema::invalid(r, &p.f("aggression"), gofmt::float_v(v), "aggression should be greater than 0");
    }
}

/// `ValidateLocalityLbSetting`.
fn locality_lb_setting(lb: &LocalityLoadBalancerSetting, outlier: Option<&OutlierDetection>, p: &P, r: &mut Report) {
    if !lb.distribute.is_empty() && !lb.failover.is_empty() {
        r.error(p, "can not simultaneously specify 'distribute' and 'failover'");
        return;
    }
    if !lb.failover.is_empty()
        && let Some(label) = lb.failover_priority.iter().find(|l| is_topology_label(l))
    {
        r.error(
            &p.f("failoverPriority"),
            format!("can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'"),
        );
        return;
    }

    let dp = p.f("distribute");
    let mut sources = Vec::with_capacity(lb.distribute.len());
    for (i, d) in lb.distribute.iter().enumerate() {
        let tp = dp.i(i).f("to");
        sources.push(d.from.as_str());
        if let Some((loc, _)) = d.to.iter().find(|(_, w)| **w == 0 || **w > 100) {
            r.error(&tp.k(loc), "locality weight must be in range [1, 100]");
            return;
        }
        let total: u32 = d.to.values().fold(0u32, |a, w| a.wrapping_add(*w));
        if total != 100 {
            r.error(&tp, format!("total locality weight {total} != 100"));
            return;
        }
        let dests: Vec<&str> = d.to.keys().map(String::as_str).collect();
        r.check(&tp, localities(&dests));
    }
    r.check(&dp, localities(&sources));

    if (!lb.failover.is_empty() || !lb.failover_priority.is_empty()) && outlier.is_none() {
        r.warn(p, "outlier detection policy must be provided for failover");
    }

    for (i, f) in lb.failover.iter().enumerate() {
        let fp = p.f("failover").i(i);
        if f.from == f.to {
            r.error(&fp, "locality lb failover settings must specify different regions");
        }
        if f.from.contains('/') || f.to.contains('/') {
            r.error(&fp, "locality lb failover only specify region");
        }
        if f.from.contains('*') || f.to.contains('*') {
            r.error(&fp, "locality lb failover region should not contain '*' wildcard");
        }
    }
}

/// `ValidateZoneAwareLbSetting`, plus the schema's `minClusterSize` >= 1.
fn zone_aware_lb_setting(lb: &ZoneAwareLoadBalancerSetting, outlier: Option<&OutlierDetection>, p: &P, r: &mut Report) {
    for (i, label) in lb.failover_priority.iter().enumerate() {
        if is_topology_label(label) {
            r.error(
                &p.f("failoverPriority").i(i),
                format!(
                    "'failover_priority' for zone aware lb must not use topology label '{label}'; region- and zone-level routing are handled automatically"
                ),
            );
        }
    }

    if (!lb.failover.is_empty() || !lb.failover_priority.is_empty()) && outlier.is_none() {
        r.warn(p, "outlier detection policy must be provided for failover");
    }

    for (i, f) in lb.failover.iter().enumerate() {
        let fp = p.f("failover").i(i);
        if f.from == f.to {
            r.error(&fp, "zone aware lb failover settings must specify different regions");
        }
        if f.from.contains('/') || f.to.contains('/') {
            r.error(
                &fp,
                "zone aware lb failover only specifies region; zone and subzone failover are handled automatically",
            );
        }
        if f.from.contains('*') || f.to.contains('*') {
            r.error(&fp, "zone aware lb failover region should not contain '*' wildcard");
        }
    }

    if lb.min_cluster_size == Some(0) {
        schema::below_minimum(r, &p.f("minClusterSize"), 0, 1);
    }
}

fn is_topology_label(label: &str) -> bool {
    matches!(label, TOPOLOGY_REGION | TOPOLOGY_ZONE | TOPOLOGY_SUBZONE)
}

/// `validateLocalities`: `region[/zone[/subzone]]` entries, at most one trailing `*`, no
/// entry covered by an earlier one. Returns the first problem.
fn localities(list: &[&str]) -> Result<(), String> {
    const ANY: &str = "*";
    let overlap = |loc: &str| format!("locality {loc} overlap with previous specified ones");
    // region -> zone -> subzones; "*" marks "everything below".
    let mut seen: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for &loc in list {
        let stars = loc.matches('*').count();
        if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
            return Err(format!("locality {loc} wildcard '*' number can not exceed 1 and must be in the end"));
        }
        if seen.contains_key(ANY) {
            return Err(overlap(loc));
        }
        let parts: Vec<&str> = loc.splitn(3, '/').collect();
        if parts.iter().any(|s| s.is_empty()) {
            return Err(format!("locality {loc} must not contain empty region/zone/subzone info"));
        }
        match parts[..] {
            [region] => {
                if seen.contains_key(region) {
                    return Err(overlap(loc));
                }
                seen.insert(region, BTreeMap::from([(ANY, BTreeSet::from([ANY]))]));
            }
            [region, zone] => match seen.get_mut(region) {
                Some(zones) => {
                    if zones.contains_key(ANY) || zones.contains_key(zone) {
                        return Err(overlap(loc));
                    }
                    zones.insert(zone, BTreeSet::from([ANY]));
                }
                None => {
                    seen.insert(region, BTreeMap::from([(zone, BTreeSet::from([ANY]))]));
                }
            },
            [region, zone, subzone] => match seen.get_mut(region) {
                Some(zones) => {
                    if zones.contains_key(ANY) {
                        return Err(overlap(loc));
                    }
                    match zones.get_mut(zone) {
                        Some(subzones) => {
                            if subzones.contains(ANY) || subzones.contains(subzone) {
                                return Err(overlap(loc));
                            }
                            subzones.insert(subzone);
                        }
                        None => {
                            zones.insert(zone, BTreeSet::from([subzone]));
                        }
                    }
                }
                None => {
                    seen.insert(region, BTreeMap::from([(zone, BTreeSet::from([subzone]))]));
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// `agent.ValidateTLS` for a DestinationRule's upstream TLS settings.
fn client_tls(ns: &str, tls: &ClientTlsSettings, p: &P, r: &mut Report) {
    let cred = tls.credential_name.as_str();
    if let Some(rest) = cred.strip_prefix(CONFIGMAP_URI) {
        match configmap_namespace(cred, rest) {
            Err(e) => r.error(&p.f("credentialName"), format!("invalid configmap:// credentialName: {e}")),
            Ok(cm_ns) if cm_ns != ns || ns.is_empty() => r.error(
                &p.f("credentialName"),
                format!(
                    "invalid configmap:// credentialName: namespace must match the configuration namespace {}",
                    gofmt::quote(ns)
                ),
            ),
            Ok(_) => {}
        }
    }

    if tls.insecure_skip_verify == Some(true) {
        let sans = !tls.subject_alt_names.is_empty();
        match tls.mode {
            ClientTlsMode::Simple if !tls.ca_certificates.is_empty() || !cred.is_empty() || sans => r.error(
                &p.f("insecureSkipVerify"),
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
            ),
            ClientTlsMode::Mutual if !tls.ca_certificates.is_empty() || sans => r.error(
                &p.f("insecureSkipVerify"),
                "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
            ),
            _ => {}
        }
    }

    let simple_or_mutual = matches!(tls.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual);
    if simple_or_mutual && !cred.is_empty() {
        if !tls.client_certificate.is_empty()
            || !tls.ca_certificates.is_empty()
            || !tls.private_key.is_empty()
            || !tls.ca_crl.is_empty()
        {
            r.error(
                &p.f("credentialName"),
                "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
            );
        }
        return;
    }

    if tls.mode == ClientTlsMode::Mutual {
        if tls.client_certificate.is_empty() {
            r.error(&p.f("clientCertificate"), "client certificate required for mutual tls");
        }
        if tls.private_key.is_empty() {
            r.error(&p.f("privateKey"), "private key required for mutual tls");
        }
    }
}

/// The namespace of a `configmap://<namespace>/<name>` credential (`credentials.ParseResourceName`).
fn configmap_namespace<'a>(full: &str, rest: &'a str) -> Result<&'a str, String> {
    let mut parts = rest.split('/');
    let (ns, name) = match (parts.next(), parts.next()) {
        (Some(ns), Some(name)) => (ns, name),
        _ => return Err(format!("invalid resource name {}. Expected namespace and name", gofmt::quote(full))),
    };
    if ns.is_empty() {
        return Err(format!("invalid resource name {}. Expected namespace", gofmt::quote(full)));
    }
    if name.is_empty() {
        return Err(format!("invalid resource name {}. Expected name", gofmt::quote(full)));
    }
    Ok(ns)
}

/// `agent.ValidateDuration` at `p`.
fn duration(d: &Duration, p: &P, r: &mut Report) {
    r.check(p, common::duration(d));
}

/// Runs `f` and keeps only the errors it reports, as Istio does where it
/// folds a nested validation into a plain error.
fn errors_only(r: &mut Report, f: impl FnOnce(&mut Report)) {
    let mut sub = Report::default();
    f(&mut sub);
    r.findings.extend(sub.findings.into_iter().filter(|f| f.severity == Severity::Error));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LoadOptions, load_str};

    /// Validates a DestinationRule in namespace `bar` whose spec is the YAML flow mapping `spec`.
    fn run(spec: &str) -> Report {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: foo, namespace: bar}}\nspec: {spec}\n"
        );
        let loaded = load_str(&text, "test.yaml", &LoadOptions::default());
        assert!(
            loaded.problems.is_empty() && loaded.errors.is_empty(),
            "{spec}: {:?} {:?}",
            loaded.problems,
            loaded.errors
        );
        assert_eq!(loaded.objects.len(), 1, "{spec}");
        super::super::validate(&loaded.objects[0])
    }

    fn lines(r: &Report, sev: Severity) -> Vec<String> {
        r.findings.iter().filter(|f| f.severity == sev).map(|f| format!("{}: {}", f.path, f.message)).collect()
    }

    #[track_caller]
    fn valid(spec: &str) -> Vec<String> {
        let r = run(spec);
        let errs = lines(&r, Severity::Error);
        assert!(errs.is_empty(), "{spec}: unexpected errors {errs:?}");
        lines(&r, Severity::Warning)
    }

    #[track_caller]
    fn valid_warns(spec: &str, want: &str) {
        let warns = valid(spec);
        assert!(warns.iter().any(|w| w.contains(want)), "{spec}: missing warning {want:?} in {warns:?}");
    }

    #[track_caller]
    fn invalid(spec: &str, want: &[&str]) {
        let errs = lines(&run(spec), Severity::Error);
        assert!(!errs.is_empty(), "{spec}: expected errors");
        for w in want {
            assert!(errs.iter().any(|e| e.contains(w)), "{spec}: missing error {w:?} in {errs:?}");
        }
    }

    fn tp(policy: &str) -> String {
        format!("{{host: reviews, trafficPolicy: {policy}}}")
    }

    fn cp(pool: &str) -> String {
        tp(&format!("{{connectionPool: {pool}}}"))
    }

    fn lb(settings: &str) -> String {
        tp(&format!("{{loadBalancer: {settings}}}"))
    }

    fn lb_with_outlier(settings: &str) -> String {
        tp(&format!("{{loadBalancer: {settings}, outlierDetection: {{}}}}"))
    }

    fn od(outlier: &str) -> String {
        tp(&format!("{{outlierDetection: {outlier}}}"))
    }

    fn tls(settings: &str) -> String {
        tp(&format!("{{tls: {settings}}}"))
    }

    const SUBSETS: &str = "[{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]";
    const GOOD_POLICY: &str = "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnections: 7}, http: {http2MaxRequests: 11}}, outlierDetection: {minHealthPercent: 20}}";
    const BAD_POLICY: &str =
        "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {}, outlierDetection: {minHealthPercent: 20}}";

    #[test]
    fn host_subsets_and_selector() {
        valid(&format!("{{host: reviews, subsets: {SUBSETS}}}"));
        valid_warns(
            &format!("{{host: reviews, subsets: {SUBSETS}, workloadSelector: {{}}}}"),
            "spec.workloadSelector.matchLabels: workload selector specified without labels",
        );
        invalid(&format!("{{host: '', subsets: {SUBSETS}}}"), &["spec.host: empty domain name not allowed"]);
        invalid("{host: 'foo.*.bar'}", &["spec.host: domain name \"*.bar\" invalid (label \"*\" invalid)"]);
        invalid(
            "{host: reviews, subsets: [{name: '', labels: {version: v1}}, {name: v2}]}",
            &["spec.subsets[0].name: subset name cannot be empty"],
        );
        invalid("{host: reviews, subsets: [{name: V_1}]}", &["subset name is invalid: V_1"]);
        invalid(
            "{host: reviews, subsets: [{name: foo, labels: {version: v1}}, {name: foo, labels: {version: v2}}]}",
            &["spec.subsets[1].name: duplicate subset names: foo"],
        );
        invalid("{host: reviews, subsets: [{name: v1, labels: {version: '-bad'}}]}", &["invalid tag value"]);
        invalid(
            "{host: reviews, workloadSelector: {matchLabels: {app: 'a*'}}}",
            &["wildcard is not supported in selector: \"app=a*\""],
        );
        invalid(
            &format!("{{host: reviews, workloadSelector: {{matchLabels: {{app: {}}}}}}}", "a".repeat(64)),
            &["spec.workloadSelector.matchLabels.app: Too long: may not be more than 63 bytes"],
        );
    }

    #[test]
    fn export_to_with_and_without_selector() {
        valid("{host: reviews, exportTo: ['.', ns1]}");
        valid("{host: reviews, exportTo: ['*']}");
        invalid("{host: reviews, exportTo: ['.', '*']}", &["cannot have both public (*) and non-public"]);
        invalid("{host: reviews, exportTo: ['~', ns1]}", &["exportTo ~ (none) is not allowed"]);
        invalid("{host: reviews, exportTo: [ns1_]}", &["only .,*, or a valid DNS 1123 label"]);
        invalid(
            "{host: reviews, exportTo: [bar, '.']}",
            &["spec.exportTo[1]: duplicate entries in exportTo: . and current namespace bar"],
        );
        invalid("{host: reviews, exportTo: ['.', bar]}", &["duplicate entries in exportTo for entry bar"]);
        let sel = "workloadSelector: {matchLabels: {app: a}}";
        valid(&format!("{{host: reviews, {sel}, exportTo: ['.']}}"));
        invalid(
            &format!("{{host: reviews, {sel}, exportTo: ['*']}}"),
            &["destination rule with workload selector cannot have exportTo beyond current namespace"],
        );
        invalid(
            &format!("{{host: reviews, {sel}, exportTo: [somens]}}"),
            &["destination rule with workload selector cannot have exportTo beyond current namespace"],
        );
        invalid(
            &format!("{{host: reviews, {sel}, exportTo: ['.', somens]}}"),
            &["destination rule with workload selector cannot have multiple entries in exportTo"],
        );
    }

    #[test]
    fn traffic_policy_levels() {
        valid(&format!("{{host: reviews, trafficPolicy: {GOOD_POLICY}, subsets: {SUBSETS}}}"));
        invalid(
            &format!("{{host: reviews, trafficPolicy: {BAD_POLICY}, subsets: {SUBSETS}}}"),
            &["spec.trafficPolicy.connectionPool: connection pool must have at least one field"],
        );
        valid(&format!(
            "{{host: reviews, subsets: [{{name: v1, labels: {{version: v1}}, trafficPolicy: {GOOD_POLICY}}}, {{name: v2}}]}}"
        ));
        invalid(
            &format!("{{host: reviews, subsets: [{{name: v1, trafficPolicy: {BAD_POLICY}}}, {{name: v2}}]}}"),
            &["spec.subsets[0].trafficPolicy.connectionPool: connection pool must have at least one field"],
        );
        valid(&format!(
            "{{host: reviews, trafficPolicy: {GOOD_POLICY}, subsets: [{{name: v1, trafficPolicy: {GOOD_POLICY}}}]}}"
        ));
        invalid(&tp("{}"), &["spec.trafficPolicy: traffic policy must have at least one field"]);
        invalid(
            &tp(
                "{portLevelSettings: [{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {minHealthPercent: 20}}]}",
            ),
            &["spec.trafficPolicy.portLevelSettings[0].port: portTrafficPolicy must have valid port"],
        );
        invalid(
            &tp("{portLevelSettings: [{port: {number: 80}}]}"),
            &["spec.trafficPolicy.portLevelSettings[0]: port traffic policy must have at least one field"],
        );
        invalid(
            &tp("{portLevelSettings: [{port: {number: 80}, connectionPool: {}}]}"),
            &["portLevelSettings[0].connectionPool: connection pool must have at least one field"],
        );
        invalid(
            &tp("{connectionPool: {tcp: {maxConnectionDuration: 0.0000005s}}}"),
            &["duration must be greater than 1ms"],
        );
        invalid(&tp("{outlierDetection: {minHealthPercent: -1}}"), &["percentage -1 is not in range 0..100"]);
        invalid(
            &tp("{tunnel: {targetHost: example.com, targetPort: 8080}, proxyProtocol: {version: V2}}"),
            &["spec.trafficPolicy: tunnel and proxyProtocol must not be set together"],
        );
        valid(&tp("{proxyProtocol: {version: V1}}"));
        valid(&tp("{retryBudget: {percent: 20}}"));
        invalid(
            &tp("{retryBudget: {percent: 120}}"),
            &[
                "spec.trafficPolicy.retryBudget.percent: Invalid value: 120: spec.trafficPolicy.retryBudget.percent in body should be less than or equal to 100",
            ],
        );
    }

    #[test]
    fn subset_and_port_level_warnings_are_dropped() {
        // Istio folds nested policies into plain errors, so their warnings vanish.
        let warns = valid(
            "{host: reviews, subsets: [{name: v1, trafficPolicy: {outlierDetection: {consecutiveErrors: 5}}}], trafficPolicy: {portLevelSettings: [{port: {number: 80}, outlierDetection: {consecutiveErrors: 5}}]}}",
        );
        assert!(warns.is_empty(), "{warns:?}");
        valid_warns(&od("{consecutiveErrors: 5}"), "consecutive errors is deprecated");
    }

    #[test]
    fn tunnel_settings() {
        valid(&tp("{tunnel: {protocol: CONNECT, targetHost: example.com, targetPort: 8080}}"));
        valid(&tp("{tunnel: {protocol: POST, targetHost: 10.0.0.1, targetPort: 8080}}"));
        invalid(
            &tp("{tunnel: {protocol: GET, targetHost: example.com, targetPort: 8080}}"),
            &["tunnel protocol must be \"CONNECT\" or \"POST\""],
        );
        invalid(
            &tp("{tunnel: {targetHost: 'foo_bar', targetPort: 8080}}"),
            &[
                "tunnel target host must be valid FQDN or IP address: domain name \"foo_bar\" invalid (label \"foo_bar\" invalid); foo_bar is not a valid IP",
            ],
        );
        invalid(
            &tp("{tunnel: {targetHost: example.com, targetPort: 0}}"),
            &["tunnel target port is invalid: port number 0 must be in the range 1..65535"],
        );
    }

    #[test]
    fn connection_pools() {
        valid(&cp(
            "{tcp: {maxConnections: 7, connectTimeout: 2s}, http: {http1MaxPendingRequests: 2, http2MaxRequests: 11, maxRequestsPerConnection: 5, maxRetries: 4, idleTimeout: 30s, maxConcurrentStreams: 5}}",
        ));
        valid(&cp("{tcp: {maxConnections: 7, connectTimeout: 2s}}"));
        valid(&cp("{http: {http1MaxPendingRequests: 2, maxRetries: 4, maxConcurrentStreams: 5}}"));
        valid(&cp("{http: {http2KeepAlive: {interval: 15s, timeout: 5s}}}"));
        valid(&cp("{tcp: {idleTimeout: 0s}}"));
        valid(&cp("{tcp: {tcpKeepalive: {probes: 3, time: 7200s, interval: 75s}}}"));
        invalid(&cp("{}"), &["connection pool must have at least one field"]);
        invalid(&cp("{tcp: {maxConnections: -1}}"), &["tcp.maxConnections: max connections must be non-negative"]);
        invalid(&cp("{tcp: {connectTimeout: 2.000000005s}}"), &["only durations to ms precision are supported"]);
        invalid(&cp("{http: {http1MaxPendingRequests: -1}}"), &["http1 max pending requests must be non-negative"]);
        invalid(&cp("{http: {http2MaxRequests: -1}}"), &["http2 max requests must be non-negative"]);
        invalid(&cp("{http: {maxRequestsPerConnection: -1}}"), &["max requests per connection must be non-negative"]);
        invalid(&cp("{http: {maxRetries: -1}}"), &["http.maxRetries: max retries must be non-negative"]);
        invalid(&cp("{http: {idleTimeout: 30.000000005s}}"), &["only durations to ms precision are supported"]);
        invalid(&cp("{http: {maxConcurrentStreams: -1}}"), &["max concurrent streams must be non-negative"]);
        invalid(&cp("{http: {http2KeepAlive: {timeout: 5s}}}"), &["http2 keepalive interval is required"]);
        invalid(&cp("{http: {http2KeepAlive: {interval: 15s}}}"), &["http2 keepalive timeout is required"]);
        invalid(
            &cp("{http: {http2KeepAlive: {interval: 15.000000005s, timeout: 5s}}}"),
            &["http2KeepAlive.interval: only durations to ms precision are supported"],
        );
        invalid(
            &cp("{http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}"),
            &["use client protocol must not be true when H2UpgradePolicy is UPGRADE"],
        );
        invalid(&cp("{tcp: {idleTimeout: 1.5ms}}"), &["tcp.idleTimeout: only durations to ms precision"]);
        invalid(&cp("{tcp: {tcpKeepalive: {time: 0.5ms}}}"), &["duration must be greater than 1ms"]);
    }

    #[test]
    fn connection_pool_entry_point() {
        let mut r = Report::default();
        connection_pool(&ConnectionPoolSettings::default(), &P::root("spec.inboundConnectionPool"), &mut r);
        assert_eq!(
            lines(&r, Severity::Error),
            ["spec.inboundConnectionPool: connection pool must have at least one field"]
        );
    }

    #[test]
    fn outlier_detection_rules() {
        valid(&od("{interval: 2s, baseEjectionTime: 2s, maxEjectionPercent: 50}"));
        invalid(&od("{interval: 2.000000005s}"), &["outlierDetection.interval: only durations to ms precision"]);
        invalid(&od("{baseEjectionTime: 2.000000005s}"), &["baseEjectionTime: only durations to ms precision"]);
        invalid(&od("{maxEjectionPercent: 105}"), &["percentage 105 is not in range 0..100"]);
        invalid(&od("{minHealthPercent: -1}"), &["percentage -1 is not in range 0..100"]);
        invalid(&od("{minHealthPercent: 101}"), &["percentage 101 is not in range 0..100"]);
        valid_warns(
            &od("{consecutiveErrors: 101}"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
        invalid(
            &od("{consecutiveLocalOriginFailures: 10}"),
            &[
                "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
            ],
        );
        valid(&od("{consecutiveLocalOriginFailures: 10, splitExternalLocalOriginErrors: true}"));
        valid(&od("{outlierDetectionHttpErrorCodes: [500, 503]}"));
        invalid(
            &od("{outlierDetectionHttpErrorCodes: [500, 600]}"),
            &["outlierDetectionHttpErrorCodes[1]: Invalid value: 600"],
        );
    }

    #[test]
    fn load_balancers() {
        valid(&lb("{simple: ROUND_ROBIN}"));
        valid_warns(
            &lb("{consistentHash: {minimumRingSize: 1024, httpCookie: {name: test, ttl: 3600s}}}"),
            "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
        );
        invalid(
            &lb("{consistentHash: {minimumRingSize: 1024, httpCookie: {ttl: 3600s}}}"),
            &["httpCookie.name: name required for HttpCookie"],
        );
        invalid(&lb("{consistentHash: {maglev: {tableSize: 1000}}}"), &["tableSize must be a prime number for maglev"]);
        valid(&lb("{consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}"));
        invalid(
            &lb("{consistentHash: {maglev: {}}}"),
            &["tableSize must be set for maglev", "tableSize must be a prime number for maglev"],
        );
        invalid(
            &lb("{consistentHash: {maglev: {tableSize: 5000011}}}"),
            &["tableSize must be less than 5000011 for maglev"],
        );
        invalid(
            &lb("{consistentHash: {minimumRingSize: 1024, ringHash: {minimumRingSize: 1024}}}"),
            &["only one of MinimumRingSize or Maglev/Ringhash can be specified"],
        );
        valid(&lb(
            "{consistentHash: {httpCookie: {name: test-cookie, ttl: 3600s, attributes: [{name: SameSite, value: Strict}, {name: Secure, value: 'true'}, {name: HttpOnly, value: 'true'}]}}}",
        ));
        invalid(
            &lb(
                "{consistentHash: {httpCookie: {name: test-cookie, attributes: [{name: SameSite, value: Strict}, {name: SameSite, value: Lax}, {name: Secure}]}}}",
            ),
            &["attributes[1].name: duplicate cookie attribute name: SameSite"],
        );
        invalid(
            &lb(
                "{consistentHash: {httpCookie: {name: test-cookie, attributes: [{name: SameSite}, {name: '', value: v}]}}}",
            ),
            &["cookie attribute name cannot be empty"],
        );
        invalid(
            &lb("{localityLbSetting: {}, zoneAwareLbSetting: {}}"),
            &["only one of localityLbSetting and zoneAwareLbSetting can be set"],
        );
        valid(&lb("{zoneAwareLbSetting: {failover: [{from: us-east, to: eu-west}]}}"));
        invalid(
            &lb("{simple: RANDOM, consistentHash: {useSourceIp: true}}"),
            &["only one of simple, consistentHash can be set"],
        );
        invalid(
            &lb("{consistentHash: {useSourceIp: true, httpHeaderName: x}}"),
            &["only one of httpHeaderName, useSourceIp can be set"],
        );
    }

    #[test]
    fn warmup_schema_and_webhook() {
        valid(&lb("{warmup: {duration: 300s}}"));
        valid(&lb("{warmup: {duration: 300s, minimumPercent: 5.0}}"));
        valid(&lb("{warmup: {duration: 300s, minimumPercent: 5.0, aggression: 5.0}}"));
        invalid(
            &lb("{warmup: {duration: 300s, minimumPercent: 150.0}}"),
            &[
                "spec.trafficPolicy.loadBalancer.warmup.minimumPercent: Invalid value",
                "should be less than or equal to 100",
            ],
        );
        invalid(
            &lb("{warmup: {minimumPercent: 5.0}}"),
            &["spec.trafficPolicy.loadBalancer.warmup.duration: Required value", "duration is required"],
        );
        invalid(
            &lb("{warmup: {duration: 300s, aggression: -0.1}}"),
            &[
                "spec.trafficPolicy.loadBalancer.warmup.aggression: Invalid value: -0.1",
                "aggression should be greater than 0",
            ],
        );
        invalid(&lb("{warmup: {duration: 300s, aggression: 0}}"), &["aggression should be greater than 0"]);
        invalid(&lb("{warmup: {duration: 300s, minimumPercent: -1}}"), &["minimumPercent: Invalid value: -1"]);
        invalid(&lb("{warmup: {duration: 0.5ms}}"), &["warmup.duration: duration must be greater than 1ms"]);
        valid(&lb("{warmupDurationSecs: 60s}"));
        invalid(
            &lb("{warmupDurationSecs: 0s}"),
            &["warmupDurationSecs: Invalid value: \"string\": must be a valid duration greater than 1ms"],
        );
        valid_warns(&lb("{warmupDurationSecs: 60s, warmup: {duration: 60s}}"), "warmupDurationSecs is ignored");
    }

    #[test]
    fn istio_mutual_warns_everywhere() {
        let spec = "{host: reviews, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, portLevelSettings: [{port: {number: 80}, \
                    tls: {mode: ISTIO_MUTUAL}}]}, subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {tls: {mode: \
                    ISTIO_MUTUAL}}}, {name: v2, labels: {version: v2}, trafficPolicy: {tls: {mode: SIMPLE}}}]}";
        let warns = valid(spec);
        let mtls: Vec<&String> = warns.iter().filter(|w| w.contains("needs mesh identity")).collect();
        assert_eq!(mtls.len(), 3, "{warns:?}");
        assert!(mtls.iter().any(|w| w.contains("trafficPolicy.portLevelSettings[0].tls.mode: ")), "{mtls:?}");
        assert!(mtls.iter().any(|w| w.contains("subsets[0].trafficPolicy.tls.mode: ")), "{mtls:?}");
    }

    #[test]
    fn client_tls_settings() {
        let ok = [
            "{mode: SIMPLE, caCertificates: test, subjectAltNames: [reviews.default.svc]}",
            "{mode: SIMPLE, credentialName: test, subjectAltNames: [reviews.default.svc]}",
            "{mode: SIMPLE, caCertificates: test, subjectAltNames: [reviews.default.svc], insecureSkipVerify: false}",
            "{mode: SIMPLE, credentialName: test, subjectAltNames: [reviews.default.svc], insecureSkipVerify: false}",
            "{mode: MUTUAL, caCertificates: test, privateKey: key, clientCertificate: cert, subjectAltNames: [a]}",
            "{mode: MUTUAL, credentialName: test, subjectAltNames: [reviews.default.svc]}",
            "{mode: MUTUAL, credentialName: test, subjectAltNames: [a], insecureSkipVerify: false}",
            "{mode: MUTUAL, credentialName: test, insecureSkipVerify: true}",
            "{mode: MUTUAL, privateKey: key, clientCertificate: cert, insecureSkipVerify: true}",
            "{mode: SIMPLE, credentialName: 'some credential'}",
            "{mode: MUTUAL, credentialName: 'some credential'}",
            "{mode: MUTUAL, clientCertificate: cert, privateKey: key}",
            "{mode: ISTIO_MUTUAL}",
            "{mode: SIMPLE, credentialName: 'configmap://bar/ca'}",
        ];
        for t in ok {
            valid(&tls(t));
        }
        let simple_skip =
            "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true";
        let mutual_skip = "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true";
        let cred = "cannot specify client certificates or CA certificate or CA CRL If credentialName is set";
        let bad = [
            ("{mode: SIMPLE, credentialName: test, insecureSkipVerify: true}", simple_skip),
            ("{mode: SIMPLE, caCertificates: test, insecureSkipVerify: true}", simple_skip),
            ("{mode: SIMPLE, subjectAltNames: [reviews.default.svc], insecureSkipVerify: true}", simple_skip),
            (
                "{mode: MUTUAL, caCertificates: test, privateKey: key, clientCertificate: cert, insecureSkipVerify: true}",
                mutual_skip,
            ),
            (
                "{mode: MUTUAL, privateKey: key, clientCertificate: cert, subjectAltNames: [a], insecureSkipVerify: true}",
                mutual_skip,
            ),
            ("{mode: SIMPLE, credentialName: credential, clientCertificate: cert}", cred),
            ("{mode: SIMPLE, credentialName: credential, privateKey: key}", cred),
            ("{mode: SIMPLE, credentialName: credential, caCertificates: ca}", cred),
            ("{mode: MUTUAL, credentialName: credential, clientCertificate: cert}", cred),
            ("{mode: MUTUAL, credentialName: credential, privateKey: key}", cred),
            ("{mode: MUTUAL, credentialName: credential, caCertificates: ca}", cred),
            ("{mode: MUTUAL, credentialName: credential, caCrl: ca}", cred),
            ("{mode: MUTUAL, clientCertificate: cert}", "tls.privateKey: private key required for mutual tls"),
            ("{mode: MUTUAL, privateKey: key}", "tls.clientCertificate: client certificate required for mutual tls"),
            (
                "{mode: SIMPLE, credentialName: 'configmap://other/ca'}",
                "invalid configmap:// credentialName: namespace must match the configuration namespace \"bar\"",
            ),
            (
                "{mode: SIMPLE, credentialName: 'configmap://ca'}",
                "invalid configmap:// credentialName: invalid resource name \"configmap://ca\". Expected namespace and name",
            ),
            ("{mode: SIMPLE, credentialName: 'configmap:///ca'}", "Expected namespace"),
            ("{mode: SIMPLE, credentialName: 'configmap://bar/'}", "Expected name"),
        ];
        for (t, msg) in bad {
            invalid(&tls(t), &[msg]);
        }
        // Port-level TLS is checked too.
        invalid(
            &tp("{portLevelSettings: [{port: {number: 443}, tls: {mode: MUTUAL}}]}"),
            &["portLevelSettings[0].tls.clientCertificate: client certificate required for mutual tls"],
        );
    }

    #[test]
    fn locality_lb_settings() {
        let loc = |s: &str| lb_with_outlier(&format!("{{localityLbSetting: {s}}}"));
        invalid(
            &loc("{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 25}}]}"),
            &["total locality weight 105 != 100"],
        );
        invalid(&loc("{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 15}}]}"), &["total locality weight 95 != 100"]);
        invalid(
            &loc("{distribute: [{from: a/b/c, to: {a/b/c: 0, a/b1: 100}}]}"),
            &["locality weight must be in range [1, 100]"],
        );
        invalid(
            &loc("{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 20}}], failover: [{from: region1, to: region2}]}"),
            &["can not simultaneously specify 'distribute' and 'failover'"],
        );
        valid(&loc("{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 20}}]}"));
        invalid(
            &loc("{failover: [{from: region1, to: region1}]}"),
            &["locality lb failover settings must specify different regions"],
        );
        invalid(
            &loc("{failover: [{from: '*', to: region2}]}"),
            &["locality lb failover region should not contain '*' wildcard"],
        );
        invalid(
            &loc("{failover: [{from: region1, to: '*'}]}"),
            &["locality lb failover region should not contain '*' wildcard"],
        );
        invalid(
            &loc("{failover: [{from: region1/zone1, to: region2}]}"),
            &["locality lb failover only specify region"],
        );
        invalid(
            &loc("{failover: [{from: region1, to: region2/zone1}]}"),
            &["locality lb failover only specify region"],
        );
        valid_warns(
            &lb(
                "{localityLbSetting: {failoverPriority: [topology.istio.io/network, topology.kubernetes.io/region, topology.kubernetes.io/zone, topology.istio.io/subzone]}}",
            ),
            "outlier detection policy must be provided for failover",
        );
        valid_warns(
            &lb("{localityLbSetting: {failover: [{from: us-east, to: eu-west}, {from: us-west, to: eu-east}]}}"),
            "outlier detection policy must be provided for failover",
        );
        invalid(
            &loc("{failover: [{from: region1, to: region2}], failoverPriority: [topology.kubernetes.io/region]}"),
            &[
                "can not simultaneously set 'failover' and topology label 'topology.kubernetes.io/region' in 'failover_priority'",
            ],
        );
        // Overlapping source localities.
        invalid(
            &loc("{distribute: [{from: '*', to: {a: 100}}, {from: a/b/c, to: {a: 100}}]}"),
            &["locality a/b/c overlap with previous specified ones"],
        );
        invalid(
            &loc("{distribute: [{from: '*/zone', to: {a: 100}}]}"),
            &["locality */zone wildcard '*' number can not exceed 1 and must be in the end"],
        );
        invalid(
            &loc("{distribute: [{from: 'a//c', to: {a: 100}}]}"),
            &["locality a//c must not contain empty region/zone/subzone info"],
        );
    }

    #[test]
    fn zone_aware_lb_settings() {
        let za = |s: &str| lb_with_outlier(&format!("{{zoneAwareLbSetting: {s}}}"));
        valid(&za("{enabled: true}"));
        valid(&za("{failover: [{from: us-east, to: eu-west}]}"));
        invalid(
            &za("{failover: [{from: region1, to: region1}]}"),
            &["zone aware lb failover settings must specify different regions"],
        );
        for f in ["{from: region1/zone1, to: region2}", "{from: region1, to: region2/zone1}"] {
            invalid(
                &za(&format!("{{failover: [{f}]}}")),
                &["zone aware lb failover only specifies region; zone and subzone failover are handled automatically"],
            );
        }
        for f in ["{from: '*', to: region2}", "{from: region1, to: '*'}"] {
            invalid(
                &za(&format!("{{failover: [{f}]}}")),
                &["zone aware lb failover region should not contain '*' wildcard"],
            );
        }
        for l in [TOPOLOGY_REGION, TOPOLOGY_ZONE, TOPOLOGY_SUBZONE] {
            invalid(
                &za(&format!("{{failoverPriority: [{l}]}}")),
                &[&format!(
                    "'failover_priority' for zone aware lb must not use topology label '{l}'; region- and zone-level routing are handled automatically"
                )],
            );
        }
        invalid(
            &za("{failover: [{from: region1, to: region2}], failoverPriority: [topology.kubernetes.io/region]}"),
            &["must not use topology label 'topology.kubernetes.io/region'"],
        );
        valid(&za("{failoverPriority: [version, 'app=ratings']}"));
        valid_warns(
            &lb("{zoneAwareLbSetting: {failover: [{from: us-east, to: eu-west}]}}"),
            "outlier detection policy must be provided for failover",
        );
        valid_warns(
            &lb("{zoneAwareLbSetting: {failoverPriority: [version]}}"),
            "outlier detection policy must be provided for failover",
        );
        invalid(&za("{minClusterSize: 0}"), &["minClusterSize: Invalid value: 0"]);
    }

    #[test]
    fn locality_lists() {
        let bad: &[&[&str]] = &[
            &["*/zone/*"],
            &["*/zone"],
            &["*", "a/b/c"],
            &["a", "a/b/c"],
            &["a/*", "a/b/c"],
            &["a/b", "a/b/c"],
            &["a/b/*", "a/b/c"],
            &["a/b/c", "a/b/c"],
            &[""],
        ];
        for l in bad {
            assert!(localities(l).is_err(), "{l:?}");
        }
        assert_eq!(localities(&["a1/*", "a2/*", "a3/b3/c3", "a4/b4", "a5/b5/*"]), Ok(()));
        assert_eq!(localities(&["a/b", "a/c", "a/d/e", "b"]), Ok(()));
    }

    #[test]
    fn maglev_primes() {
        assert!(!is_prime(0));
        for p in [1, 2, 3, 5, 7, 65537, 5000011] {
            assert!(is_prime(p), "{p}");
        }
        for c in [4, 9, 1000, 65535] {
            assert!(!is_prime(c), "{c}");
        }
    }

    #[test]
    fn go_formatting() {
        assert_eq!(gofmt::float_v(150.0), "150");
        assert_eq!(gofmt::float_v(-0.1), "-0.1");
        assert_eq!(gofmt::float_v(0.0001), "0.0001");
        assert_eq!(gofmt::float_v(0.00001), "1e-05");
        assert_eq!(gofmt::float_v(123456.0), "123456");
        assert_eq!(gofmt::float_v(1234567.0), "1.234567e+06");
        assert_eq!(gofmt::quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(gofmt::quote(""), "\"\"");
    }
}
