//! Endpoint picking per algorithm with 10, 1,000 and 100,000 endpoints
//! (uniform and weighted 1..=4), through the same `Balancer::pick` the data
//! path calls. Before measuring, each case is checked to allocate nothing per
//! pick (a counting allocator wraps the system one).
//!
//! `cargo bench -p weir-proxy --bench lb`

// The only unsafe code here: a counting wrapper around the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use weir_proxy::lb::bench;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarding the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as `GlobalAlloc::realloc`, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const ALGORITHMS: [&str; 5] = ["round_robin", "least_request", "random", "ring_hash", "maglev"];
const SIZES: [usize; 3] = [10, 1_000, 100_000];

fn picks(c: &mut Criterion) {
    for algorithm in ALGORITHMS {
        let mut group = c.benchmark_group(format!("pick/{algorithm}"));
        for n in SIZES {
            for weighted in [false, true] {
                let started = Instant::now();
                let cluster = bench::cluster(algorithm, n, weighted);
                let build = started.elapsed();
                // No allocation per pick.
                let before = ALLOCATIONS.load(Ordering::Relaxed);
                let mut key = 0u32;
                for _ in 0..10_000 {
                    key = key.wrapping_add(0x9E37_79B9);
                    black_box(cluster.pick(key));
                }
                let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
                assert_eq!(allocated, 0, "{algorithm} with {n} endpoints allocated {allocated} times in 10,000 picks");
                let label = format!("{n}{}", if weighted { "-weighted" } else { "" });
                println!("{algorithm}/{label}: cluster built in {build:?}, 0 allocations in 10,000 picks");
                group.bench_function(label, |b| {
                    let mut key = 0u32;
                    b.iter(|| {
                        key = key.wrapping_add(0x9E37_79B9);
                        black_box(cluster.pick(key))
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = picks
}
criterion_main!(benches);
