//! End to end: load-balancing algorithms, endpoint weights, consistent hashing
//! (stickiness, determinism across proxies, minimal remapping), generated
//! cookies, locality `distribute`, slow start.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::load_balancing::*;
use common::*;

/// Sends `n` requests on one connection and counts answers per backend.
async fn spread(port: u16, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut c = Client::h1(port).await;
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = c.get("svc", "/", headers).await;
        assert_eq!(r.status, 200, "{r:?}");
        *counts.entry(r.backend()).or_insert(0) += 1;
    }
    counts
}

async fn backends(names: &[&str]) -> Vec<Backend> {
    let mut out = Vec::new();
    for n in names {
        out.push(Backend::start(n).await);
    }
    out
}

fn eps(b: &[Backend]) -> Vec<Ep<'static>> {
    b.iter().map(|b| Ep { port: b.port(), weight: 1, locality: "" }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_rotates_evenly_and_honours_weights() {
    let b = backends(&["a", "b", "c"]).await;
    let port = free_port();
    let lb = "    loadBalancer: {simple: ROUND_ROBIN}";
    let proxy = Proxy::start(&format!("{}{}", service_with("svc", port, &eps(&b)), rule("svc", lb))).await;
    let counts = spread(port, 300, &[]).await;
    assert_eq!((counts["a"], counts["b"], counts["c"]), (100, 100, 100), "{counts:?}");
    // Endpoint weights 3:1:1: one full smooth cycle per 5 requests.
    let weighted = [
        Ep { port: b[0].port(), weight: 3, locality: "" },
        Ep { port: b[1].port(), weight: 1, locality: "" },
        Ep { port: b[2].port(), weight: 1, locality: "" },
    ];
    proxy.publish(&format!("{}{}", service_with("svc", port, &weighted), rule("svc", lb)));
    let counts = spread(port, 500, &[]).await;
    assert_eq!((counts["a"], counts["b"], counts["c"]), (300, 100, 100), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_is_within_statistical_bounds() {
    let b = backends(&["a", "b", "c"]).await;
    let port = free_port();
    let weighted = [
        Ep { port: b[0].port(), weight: 2, locality: "" },
        Ep { port: b[1].port(), weight: 1, locality: "" },
        Ep { port: b[2].port(), weight: 1, locality: "" },
    ];
    let _proxy = Proxy::start(&format!(
        "{}{}",
        service_with("svc", port, &weighted),
        rule("svc", "    loadBalancer: {simple: RANDOM}")
    ))
    .await;
    let n = 2000;
    let counts = spread(port, n, &[]).await;
    // Expected 1000/500/500; binomial sd <= 23: allow 6 sd.
    assert!(counts["a"].abs_diff(1000) < 140, "{counts:?}");
    assert!(counts["b"].abs_diff(500) < 120, "{counts:?}");
    assert!(counts["c"].abs_diff(500) < 120, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_the_busy_endpoint() {
    let slow = SlowBackend::start("slow", Duration::from_millis(300)).await;
    let fast = SlowBackend::start("fast", Duration::from_millis(1)).await;
    let port = free_port();
    let endpoints = [Ep { port: slow.port, weight: 1, locality: "" }, Ep { port: fast.port, weight: 1, locality: "" }];
    // No DestinationRule: Istio's default is LEAST_REQUEST.
    let _proxy = Proxy::start(&service_with("svc", port, &endpoints)).await;
    let mut tasks = Vec::new();
    for _ in 0..60 {
        tasks.push(tokio::spawn(async move { get(port, "svc", "/", &[]).await.backend() }));
        // Spread the arrivals so that in-flight counts differ between picks.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut to_slow = 0;
    for t in tasks {
        if t.await.unwrap() == "slow" {
            to_slow += 1;
        }
    }
    // Random would send ~30 of 60 to the slow endpoint; P2C only when both are equally busy.
    assert!(to_slow <= 12, "{to_slow} of 60 went to the slow endpoint");
}

fn hash_rule(kind: &str, key: &str) -> String {
    rule("svc", &format!("    loadBalancer:\n      consistentHash:\n        {key}\n        {kind}"))
}

/// The backend of each of `users` (header `x-user`), asked `times` times each.
async fn owners(port: u16, users: usize, times: usize) -> Vec<String> {
    let mut c = Client::h1(port).await;
    let mut out = Vec::new();
    for u in 0..users {
        let user = format!("user-{u}");
        let first = c.get("svc", "/", &[("x-user", &user)]).await.backend();
        for _ in 1..times {
            assert_eq!(c.get("svc", "/", &[("x-user", &user)]).await.backend(), first, "{user} moved");
        }
        out.push(first);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_is_sticky_deterministic_and_remaps_minimally() {
    hash_stickiness("ringHash: {minimumRingSize: 1024}", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maglev_is_sticky_deterministic_and_remaps_little() {
    hash_stickiness("maglev: {tableSize: 65537}", 0.05).await;
}

/// Stickiness per user, the same answers from a second proxy, and after removing one
/// endpoint at most `allowed` of the other users move.
async fn hash_stickiness(kind: &str, allowed: f64) {
    let b = backends(&["a", "b", "c", "d", "e"]).await;
    let (p1, p2) = (free_port(), free_port());
    let config = |port: u16, ports: &[u16]| {
        let e: Vec<Ep<'_>> = ports.iter().map(|p| Ep { port: *p, weight: 1, locality: "" }).collect();
        format!("{}{}", service_with("svc", port, &e), hash_rule(kind, "httpHeaderName: x-user"))
    };
    let all: Vec<u16> = b.iter().map(Backend::port).collect();
    let proxy1 = Proxy::start(&config(p1, &all)).await;
    let _proxy2 = Proxy::start(&config(p2, &all)).await;
    let users = 200;
    let before = owners(p1, users, 3).await;
    for name in ["a", "b", "c", "d", "e"] {
        let n = before.iter().filter(|o| *o == name).count();
        assert!(n >= 15, "{name} owns only {n} of {users} users: {before:?}");
    }
    assert_eq!(owners(p2, users, 1).await, before, "another proxy maps users differently");
    // Remove endpoint "c".
    proxy1.publish(&config(p1, &[all[0], all[1], all[3], all[4]]));
    let after = owners(p1, users, 2).await;
    let mut moved = 0;
    let mut others = 0;
    for (was, is) in before.iter().zip(&after) {
        assert_ne!(is, "c");
        if was != "c" {
            others += 1;
            if was != is {
                moved += 1;
            }
        }
    }
    let share = moved as f64 / others as f64;
    println!("{kind}: {moved} of {others} users of the remaining endpoints moved ({:.1}%)", share * 100.0);
    assert!(share <= allowed, "{moved} of {others} users moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_is_generated_once_and_keeps_the_client_on_its_endpoint() {
    let b = backends(&["a", "b", "c", "d"]).await;
    let port = free_port();
    let key = "httpCookie: {name: user-session, ttl: 3600s, path: /, attributes: [{name: SameSite, value: Lax}]}";
    let _proxy =
        Proxy::start(&format!("{}{}", service_with("svc", port, &eps(&b)), hash_rule("ringHash: {}", key))).await;
    let mut c = Client::h1(port).await;
    let first = c.get("svc", "/", &[]).await;
    let set = first.header("set-cookie").expect("a generated cookie");
    assert!(set.starts_with("user-session=\""), "{set}");
    assert!(set.ends_with("; Max-Age=3600; Path=/; SameSite=Lax; HttpOnly"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    for _ in 0..10 {
        let r = c.get("svc", "/", &[("cookie", &cookie)]).await;
        assert_eq!(r.backend(), first.backend());
        assert_eq!(r.header("set-cookie"), None, "a request carrying the cookie gets no new one");
    }
    // Clients with their own cookies spread over the endpoints.
    let mut seen = std::collections::HashSet::new();
    for i in 0..100 {
        let r = c.get("svc", "/", &[("cookie", &format!("other=1; user-session={i}"))]).await;
        seen.insert(r.backend());
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_without_ttl_is_not_generated() {
    let b = backends(&["a", "b"]).await;
    let port = free_port();
    let key = "httpCookie: {name: user-session}";
    let _proxy =
        Proxy::start(&format!("{}{}", service_with("svc", port, &eps(&b)), hash_rule("ringHash: {}", key))).await;
    let r = get(port, "svc", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("set-cookie"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_and_query_parameter_keys() {
    let b = backends(&["a", "b", "c", "d"]).await;
    let port = free_port();
    let proxy = Proxy::start(&format!(
        "{}{}",
        service_with("svc", port, &eps(&b)),
        hash_rule("maglev: {tableSize: 65537}", "useSourceIp: true")
    ))
    .await;
    // Every connection comes from 127.0.0.1: one endpoint for all of them.
    let first = get(port, "svc", "/", &[]).await.backend();
    for _ in 0..20 {
        assert_eq!(get(port, "svc", "/", &[]).await.backend(), first);
    }
    proxy.publish(&format!(
        "{}{}",
        service_with("svc", port, &eps(&b)),
        hash_rule("ringHash: {minimumRingSize: 64}", "httpQueryParameterName: user")
    ));
    let mut c = Client::h1(port).await;
    let mut seen = std::collections::HashSet::new();
    for u in 0..40 {
        let path = format!("/?x=1&user=u{u}");
        let owner = c.get("svc", &path, &[]).await.backend();
        assert_eq!(c.get("svc", &path, &[]).await.backend(), owner);
        seen.insert(owner);
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_distribute_splits_by_the_configured_shares() {
    let b = backends(&["r1z1", "r1z2", "r2z3", "r3z4"]).await;
    let port = free_port();
    let endpoints = [
        Ep { port: b[0].port(), weight: 1, locality: "region1/zone1" },
        Ep { port: b[1].port(), weight: 1, locality: "region1/zone2" },
        Ep { port: b[2].port(), weight: 1, locality: "region2/zone3" },
        Ep { port: b[3].port(), weight: 1, locality: "region3/zone4" },
    ];
    let lb = r#"    loadBalancer:
      simple: RANDOM
      localityLbSetting:
        enabled: true
        distribute:
        - from: region1/zone1/*
          to: {"region1/zone1/*": 70, "region1/zone2/*": 20, "region3/zone4/*": 10}"#;
    let _proxy =
        start_at("region1/zone1", &format!("{}{}", service_with("svc", port, &endpoints), rule("svc", lb))).await;
    let n = 2000;
    let counts = spread(port, n, &[]).await;
    let share = |k: &str| counts.get(k).copied().unwrap_or(0) as f64 / n as f64;
    assert!((share("r1z1") - 0.7).abs() < 0.05, "{counts:?}");
    assert!((share("r1z2") - 0.2).abs() < 0.04, "{counts:?}");
    assert_eq!(share("r2z3"), 0.0, "{counts:?}");
    assert!((share("r3z4") - 0.1).abs() < 0.03, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_priorities_need_outlier_detection() {
    let b = backends(&["near", "zone", "far"]).await;
    let port = free_port();
    let endpoints = [
        Ep { port: b[0].port(), weight: 1, locality: "us/east/a" },
        Ep { port: b[1].port(), weight: 1, locality: "us/west/a" },
        Ep { port: b[2].port(), weight: 1, locality: "eu/west/a" },
    ];
    let lb = "    loadBalancer: {simple: ROUND_ROBIN, localityLbSetting: {enabled: true}}";
    // Without outlier detection: every locality is equal.
    let proxy = start_at("us/east/a", &format!("{}{}", service_with("svc", port, &endpoints), rule("svc", lb))).await;
    let counts = spread(port, 90, &[]).await;
    assert_eq!((counts["near"], counts["zone"], counts["far"]), (30, 30, 30), "{counts:?}");
    // With it: the node's own zone takes everything while healthy.
    let with_od = format!(
        "{lb}
    outlierDetection: {{consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}}"
    );
    publish_for(&proxy, &format!("{}{}", service_with("svc", port, &endpoints), rule("svc", &with_od)));
    let counts = spread(port, 50, &[]).await;
    assert_eq!(counts.get("near"), Some(&50), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_new_endpoint() {
    let b = backends(&["old", "new"]).await;
    let port = free_port();
    let window = Duration::from_secs(2);
    let lb = "    loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 2s, minimumPercent: 10, aggression: 1}}";
    let old = [Ep { port: b[0].port(), weight: 1, locality: "" }];
    let proxy = Proxy::start(&format!("{}{}", service_with("svc", port, &old), rule("svc", lb))).await;
    // Let the first endpoint age past its window (the feature under test is time-based).
    tokio::time::sleep(window + Duration::from_millis(100)).await;
    let both = [old[0].clone_ep(), Ep { port: b[1].port(), weight: 1, locality: "" }];
    proxy.publish(&format!("{}{}", service_with("svc", port, &both), rule("svc", lb)));
    let added = Instant::now();
    // During the first quarter of the window the new endpoint's factor is at most 0.25
    // (age/window, floor 0.1): at most 20% of the picks on average, against 50% without.
    let mut c = Client::h1(port).await;
    let (mut total, mut early) = (0, 0);
    while added.elapsed() < window / 4 && total < 400 {
        let r = c.get("svc", "/", &[]).await;
        assert_eq!(r.status, 200);
        total += 1;
        if r.backend() == "new" {
            early += 1;
        }
    }
    assert!(total >= 40, "only {total} requests in the first quarter of the window");
    assert!(early * 100 < total * 32, "{early} of {total} to the new endpoint");
    // After the window both take equal turns.
    let left = window.saturating_sub(added.elapsed()) + Duration::from_millis(50);
    tokio::time::sleep(left).await;
    let counts = spread(port, 400, &[]).await;
    assert_eq!(counts.get("new"), Some(&200), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_ejected_priority_spills_with_the_overprovisioning_factor() {
    let b = backends(&["near1", "near2", "zone"]).await;
    // near2 fails every request: one 5xx ejects it.
    b[1].fail_first.store(u32::MAX, std::sync::atomic::Ordering::SeqCst);
    let port = free_port();
    let endpoints = [
        Ep { port: b[0].port(), weight: 1, locality: "us/east/a" },
        Ep { port: b[1].port(), weight: 1, locality: "us/east/a" },
        Ep { port: b[2].port(), weight: 1, locality: "us/west/a" },
    ];
    let lb = "    loadBalancer: {simple: RANDOM, localityLbSetting: {enabled: true}}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m, maxEjectionPercent: 100}";
    let _proxy = start_at("us/east/a", &format!("{}{}", service_with("svc", port, &endpoints), rule("svc", lb))).await;
    let mut c = Client::h1(port).await;
    let mut failed = 0;
    for _ in 0..100 {
        if c.get("svc", "/", &[]).await.status != 200 {
            failed += 1;
        }
    }
    assert!(failed <= 1, "{failed} failures before near2 was ejected");
    // Priority 0 is half healthy: health min(100, 1.4 x 50%) = 70%, the other 30% spill to priority 1.
    let n = 2000;
    let counts = spread(port, n, &[]).await;
    let share = |k: &str| counts.get(k).copied().unwrap_or(0) as f64 / n as f64;
    assert_eq!(share("near2"), 0.0, "{counts:?}");
    assert!((share("near1") - 0.7).abs() < 0.05, "{counts:?}");
    assert!((share("zone") - 0.3).abs() < 0.05, "{counts:?}");
}
