//! Compile benchmark (issue 3): 5,000 services (2 ports, 3 subsets, 10
//! endpoints each), 5,000 VirtualServices and 5,000 DestinationRules,
//! compiled for one sidecar node. Goals: under 300 ms on one core; snapshot
//! memory under 2 KB per cluster and 150 bytes per endpoint reference.
//!
//! `cargo bench -p weir-compile --bench compile` also prints the memory
//! figures: bytes the snapshot keeps allocated (counted by a wrapping
//! allocator), split into endpoint storage and everything else.

// The only unsafe code in the workspace: a counting wrapper around the system
// allocator, so the benchmark can report the snapshot's live heap exactly.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarding the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as `GlobalAlloc::realloc`, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

use criterion::{Criterion, criterion_group, criterion_main};
use weir_api::{LoadOptions, load_str};
use weir_compile::message::Messages;
use weir_compile::{ConfigStore, Input, MeshConfig, Node, Registry, Role, compile};

/// The benchmark config as YAML.
pub fn corpus(services: usize) -> String {
    let mut s = String::new();
    for i in 0..services {
        let ns = format!("ns-{}", i % 100);
        let host = format!("svc-{i}.{ns}.svc.cluster.local");
        s.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc-{i}, namespace: {ns}}}\nspec:\n  hosts: [{host}]\n  addresses: [10.{}.{}.{}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 8080, name: http, protocol: HTTP}}\n  - {{number: 9090, name: grpc, protocol: GRPC}}\n  endpoints:\n",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        ));
        for e in 0..10 {
            s.push_str(&format!(
                "  - {{address: 172.{}.{}.{e}, labels: {{version: v{}}}}}\n",
                (i >> 8) & 255,
                i & 255,
                e % 3 + 1
            ));
        }
        s.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc-{i}, namespace: {ns}}}\nspec:\n  host: {host}\n  trafficPolicy:\n    connectionPool: {{http: {{http1MaxPendingRequests: 100}}}}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n  - {{name: v3, labels: {{version: v3}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{i}, namespace: {ns}}}\nspec:\n  hosts: [{host}]\n  http:\n  - match:\n    - headers: {{end-user: {{exact: jason}}}}\n    route:\n    - destination: {{host: {host}, subset: v2, port: {{number: 8080}}}}\n  - route:\n    - destination: {{host: {host}, subset: v1, port: {{number: 8080}}}}\n      weight: 90\n    - destination: {{host: {host}, subset: v3, port: {{number: 8080}}}}\n      weight: 10\n    timeout: 5s\n---\n"
        ));
    }
    s
}

pub struct Fixture {
    pub store: ConfigStore,
    pub registry: Registry,
    pub mesh: MeshConfig,
    pub node: Node,
}

pub fn fixture(services: usize) -> Fixture {
    let loaded = load_str(&corpus(services), "bench.yaml", &LoadOptions::default());
    assert!(loaded.errors.is_empty() && loaded.problems.is_empty());
    let store = ConfigStore::new(loaded.objects);
    let mesh = MeshConfig::default();
    let node = Node { namespace: "ns-0".into(), labels: Default::default(), role: Role::Sidecar, ..Node::default() };
    let registry = Registry::from_config(&store, &mesh, &node, &mut Messages::default());
    Fixture { store, registry, mesh, node }
}

fn bench(c: &mut Criterion) {
    let f = fixture(5_000);
    let input = Input { config: &f.store, registry: &f.registry, mesh: &f.mesh };

    let before = LIVE.load(Ordering::Relaxed);
    let snap = compile(input, &f.node);
    let kept = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    let endpoint_refs: usize = snap.clusters.iter().map(|c| c.endpoints.len()).sum();
    // Endpoint storage: each distinct endpoint slice once (clusters may share one).
    let mut seen = std::collections::HashSet::new();
    let endpoint_bytes: usize = snap
        .clusters
        .iter()
        .filter(|c| seen.insert(c.endpoints.as_ptr()))
        .map(|c| c.endpoints.len() * std::mem::size_of::<weir_compile::model::Endpoint>() + 16)
        .sum();
    let clusters = snap.clusters.len().max(1);
    eprintln!(
        "snapshot: {} listeners, {} route tables, {} clusters, {} endpoint refs; live heap {} KB: \
         endpoints {:.0} B/endpoint-ref, everything else {:.0} B/cluster (routes, listeners, clusters, policies)",
        snap.listeners.len(),
        snap.route_tables.len(),
        snap.clusters.len(),
        endpoint_refs,
        kept / 1024,
        endpoint_bytes as f64 / endpoint_refs.max(1) as f64,
        kept.saturating_sub(endpoint_bytes) as f64 / clusters as f64,
    );
    drop(snap);

    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("5k_services_sidecar", |b| b.iter(|| compile(input, &f.node)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
