//! Normalizing a request path before routing (MeshConfig `pathNormalization: BASE`), as the data
//! path does for every request: a path that is already normal (the common case, one pass over
//! its bytes and no allocation) and one with dot segments and escapes that is rebuilt.
//!
//! `cargo bench -p weir-proxy --bench path`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use weir_compile::model::PathNormalization;
use weir_proxy::path::normalize;

fn paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("path_normalize");
    for (name, path) in [
        ("normal", "/api/v1/products/42/reviews?sort=newest&page=2"),
        ("dot_segments", "/static/../api/v1/%70roducts/./42/reviews?sort=newest&page=2"),
    ] {
        g.bench_function(name, |b| b.iter(|| normalize(black_box(path), PathNormalization::Base)));
    }
    g.finish();
}

criterion_group!(benches, paths);
criterion_main!(benches);
