//! Deprecated fields: accepted and honoured, with a warning naming the
//! replacement. (Istio's webhook warns for some of these; weir warns for all
//! fields istio/api marks deprecated.)

use crate::types::{DestinationRule, LoadBalancerSettings, SimpleLb, Spec, TrafficPolicy, VirtualService};

use super::{P, Report};

pub(super) fn check(spec: &Spec, p: &P, r: &mut Report) {
    match spec {
        Spec::VirtualService(vs) => virtual_service(vs, p, r),
        Spec::DestinationRule(dr) => destination_rule(dr, p, r),
        _ => {}
    }
}

fn virtual_service(vs: &VirtualService, p: &P, r: &mut Report) {
    for (i, h) in vs.http.iter().enumerate() {
        let hp = p.f("http").i(i);
        if let Some(delay) = h.fault.as_ref().and_then(|f| f.delay.as_ref())
            && delay.percent != 0
        {
            r.warn(
                &hp.f("fault").f("delay").f("percent"),
                "fault.delay.percent is deprecated; use fault.delay.percentage",
            );
        }
        if let Some(c) = &h.cors_policy
            && !c.allow_origin.is_empty()
        {
            r.warn(&hp.f("corsPolicy").f("allowOrigin"), "corsPolicy.allowOrigin is deprecated; use allowOrigins");
        }
    }
}

fn destination_rule(dr: &DestinationRule, p: &P, r: &mut Report) {
    let tp = p.f("trafficPolicy");
    if let Some(t) = &dr.traffic_policy {
        traffic_policy(t, &tp, r);
    }
    for (i, s) in dr.subsets.iter().enumerate() {
        if let Some(t) = &s.traffic_policy {
            traffic_policy(t, &p.f("subsets").i(i).f("trafficPolicy"), r);
        }
    }
}

fn traffic_policy(t: &TrafficPolicy, p: &P, r: &mut Report) {
    if let Some(lb) = &t.load_balancer {
        load_balancer(lb, &p.f("loadBalancer"), r);
    }
    for (i, pl) in t.port_level_settings.iter().enumerate() {
        if let Some(lb) = &pl.load_balancer {
            load_balancer(lb, &p.f("portLevelSettings").i(i).f("loadBalancer"), r);
        }
    }
}

fn load_balancer(lb: &LoadBalancerSettings, p: &P, r: &mut Report) {
    if lb.simple == Some(SimpleLb::LeastConn) {
        r.warn(&p.f("simple"), "LEAST_CONN is deprecated; use LEAST_REQUEST (same behaviour)");
    }
    if lb.warmup_duration_secs.is_some() {
        r.warn(&p.f("warmupDurationSecs"), "warmupDurationSecs is deprecated; use warmup.duration");
    }
}

#[cfg(test)]
mod tests {
    use crate::{LoadOptions, load_str, validate};

    fn warnings(yaml: &str) -> Vec<String> {
        let l = load_str(yaml, "t.yaml", &LoadOptions::default());
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        validate(&l.objects[0]).warnings().map(|w| format!("{}: {}", w.path, w.message)).collect()
    }

    #[test]
    fn deprecated_fields_warn() {
        let w = warnings(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  http:\n  - route: [{destination: {host: a}}]\n    fault: {delay: {percent: 10, fixedDelay: 1s}}\n    corsPolicy: {allowOrigin: [x.com]}\n",
        );
        assert!(
            w.iter().any(|m| m.starts_with("spec.http[0].fault.delay.percent: fault.delay.percent is deprecated")),
            "{w:?}"
        );
        assert!(w.iter().any(|m| m.contains("allowOrigin is deprecated")), "{w:?}");
        let w = warnings(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec:\n  host: a\n  trafficPolicy:\n    loadBalancer: {simple: LEAST_CONN, warmupDurationSecs: 10s}\n",
        );
        assert!(w.iter().any(|m| m.contains("LEAST_CONN is deprecated")), "{w:?}");
        assert!(w.iter().any(|m| m.contains("warmupDurationSecs is deprecated")), "{w:?}");
    }
}
