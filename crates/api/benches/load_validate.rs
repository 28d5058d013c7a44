//! Load and validate 10,000 objects (VirtualServices, DestinationRules,
//! ServiceEntries and Gateways in realistic shapes) from one YAML stream.
//! Goal (issue 2): under 0.3 s on one core.

use criterion::{Criterion, criterion_group, criterion_main};
use weir_api::{LoadOptions, load_str, validate};

/// `n` objects as multi-document YAML, four kinds in rotation.
pub fn corpus(n: usize) -> String {
    let mut s = String::with_capacity(n * 600);
    for i in 0..n {
        let svc = format!("svc-{}", i / 4);
        match i % 4 {
            0 => s.push_str(&format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {svc}\n  namespace: ns-{ns}\nspec:\n  hosts: [{svc}]\n  http:\n  - match:\n    - headers:\n        end-user:\n          exact: jason\n      uri:\n        prefix: /api\n    route:\n    - destination: {{host: {svc}, subset: v2}}\n    timeout: 2s\n    retries: {{attempts: 3, perTryTimeout: 500ms, retryOn: \"5xx,connect-failure\"}}\n  - route:\n    - destination: {{host: {svc}, subset: v1}}\n      weight: 90\n    - destination: {{host: {svc}, subset: v3}}\n      weight: 10\n---\n",
                ns = i % 50
            )),
            1 => s.push_str(&format!(
                "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {svc}\n  namespace: ns-{ns}\nspec:\n  host: {svc}\n  trafficPolicy:\n    connectionPool:\n      http: {{http1MaxPendingRequests: 100, maxRequestsPerConnection: 10}}\n    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n  - {{name: v3, labels: {{version: v3}}}}\n---\n",
                ns = i % 50
            )),
            2 => s.push_str(&format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {svc}\n  namespace: ns-{ns}\nspec:\n  hosts: [{svc}.ns-{ns}.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 9080, name: http, protocol: HTTP}}\n  - {{number: 9443, name: grpc, protocol: GRPC}}\n  endpoints:\n  - {{address: 10.0.{a}.1, labels: {{version: v1}}}}\n  - {{address: 10.0.{a}.2, labels: {{version: v2}}}}\n  - {{address: 10.0.{a}.3, labels: {{version: v3}}}}\n---\n",
                ns = i % 50,
                a = i % 250
            )),
            _ => s.push_str(&format!(
                "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw-{i}\n  namespace: ns-{ns}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"ns-{ns}/{svc}.example.com\"]\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [\"{svc}.example.com\"]\n    tls: {{mode: SIMPLE, credentialName: {svc}-cert}}\n---\n",
                ns = i % 50
            )),
        }
    }
    s
}

fn bench(c: &mut Criterion) {
    let text = corpus(10_000);
    let opts = LoadOptions::default();
    let mut g = c.benchmark_group("load_validate");
    g.sample_size(10);
    g.bench_function("10k_objects", |b| {
        b.iter(|| {
            let loaded = load_str(&text, "bench.yaml", &opts);
            assert_eq!(loaded.objects.len(), 10_000);
            let mut errors = 0;
            for o in &loaded.objects {
                errors += validate(o).errors().count();
            }
            assert_eq!(errors, 0);
        })
    });
    g.bench_function("10k_objects_load_only", |b| b.iter(|| load_str(&text, "bench.yaml", &opts)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
