//! Recording one finished request in Istio's standard metrics (`istio_requests_total` and the
//! three histograms), as the data path does at the end of every request: the label values are
//! joined into a key, the key finds its series, five counters move. With 1 and with 1,000
//! series already present (the lookup then searches a larger table).
//!
//! `cargo bench -p weir-proxy --bench metrics`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use weir_proxy::metrics::{Metrics, RequestView};

fn view<'a>(service: &'a str, name: &'a str) -> RequestView<'a> {
    RequestView {
        reporter: "destination",
        destination_service: service,
        destination_service_name: name,
        destination_service_namespace: "bench",
        destination_version: "v1",
        response_code: 200,
        response_flags: "-",
        request_protocol: "http",
        grpc_response_status: "",
        duration: Duration::from_micros(180),
        request_bytes: 0,
        response_bytes: 1024,
    }
}

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics_record");
    for series in [1usize, 1_000] {
        let m = Metrics::new();
        let names: Vec<(String, String)> =
            (0..series).map(|i| (format!("svc-{i}.bench.svc.cluster.local"), format!("svc-{i}"))).collect();
        for (s, n) in &names {
            m.record(&view(s, n));
        }
        let (s, n) = &names[series / 2];
        g.bench_function(format!("{series}_series"), |b| b.iter(|| m.record(black_box(&view(s, n)))));
    }
    g.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
