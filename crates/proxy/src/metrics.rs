//! Istio's standard metrics (`istio_requests_total`, ...) and weir's own.
//!
//! Names, labels and buckets follow Istio's telemetry (the `istio.stats`
//! Envoy filter), so dashboards built for Istio keep working:
//!
//! - `istio_requests_total` (counter)
//! - `istio_request_duration_milliseconds` (histogram, Istio's default buckets)
//! - `istio_request_bytes`, `istio_response_bytes` (histograms, Istio's byte buckets)
//!
//! - `istio_tcp_connections_opened_total`, `istio_tcp_connections_closed_total`,
//!   `istio_tcp_sent_bytes_total` (to the client), `istio_tcp_received_bytes_total`
//!   (from the client): TCP proxy connections, with the request labels minus
//!   `response_code` and `grpc_response_status` (`request_protocol="tcp"`).
//!   Byte counters grow while a connection is open.
//!
//! weir adds `weir_config_version`, `weir_config_reloads_total`,
//! `weir_config_rejected_total` and `weir_active_connections`.
//!
//! Recording runs once per request, so it avoids allocation and global
//! locks on the hot path: the label values of a request are joined into a
//! thread-local key, looked up in a read-locked map of series, and the
//! series' counter and histograms are updated with atomic adds only (the
//! histograms here are lock-free, unlike prometheus-client's). Only the
//! first request of a new label combination takes the write lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Istio's default duration buckets, in milliseconds.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// Istio's byte-size buckets.
pub const BYTES_BUCKETS: [f64; 10] =
    [1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0, 10000000.0, 100000000.0, 1000000000.0];

/// At most this many label combinations are kept; requests beyond it are
/// counted in one series whose `destination_service` is `overflow`, so a
/// flood of distinct hosts cannot exhaust memory.
pub const MAX_SERIES: usize = 10_000;

/// `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// One finished request, as metrics see it.
#[derive(Clone, Debug, Default)]
pub struct RequestRecord {
    pub reporter: &'static str,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    /// The subset (`destination_version`).
    pub destination_version: String,
    pub response_code: u16,
    pub response_flags: String,
    /// `http`, `grpc` (or `http2`).
    pub request_protocol: &'static str,
    pub grpc_response_status: String,
    pub duration: std::time::Duration,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// A finished request with borrowed label values: [`Metrics::record`]
/// records it without allocating (once its label combination has been seen).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestView<'a> {
    pub reporter: &'a str,
    pub destination_service: &'a str,
    pub destination_service_name: &'a str,
    pub destination_service_namespace: &'a str,
    pub destination_version: &'a str,
    pub response_code: u16,
    pub response_flags: &'a str,
    pub request_protocol: &'a str,
    pub grpc_response_status: &'a str,
    pub duration: std::time::Duration,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

impl RequestRecord {
    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            reporter: self.reporter,
            destination_service: &self.destination_service,
            destination_service_name: &self.destination_service_name,
            destination_service_namespace: &self.destination_service_namespace,
            destination_version: &self.destination_version,
            response_code: self.response_code,
            response_flags: &self.response_flags,
            request_protocol: self.request_protocol,
            grpc_response_status: &self.grpc_response_status,
            duration: self.duration,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
        }
    }
}

/// The labels of Istio's request metrics (a subset of Istio's: weir has no
/// workload identities, so the `source_*` labels are left out).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    reporter: String,
    destination_service: String,
    destination_service_name: String,
    destination_service_namespace: String,
    destination_version: String,
    response_code: u16,
    response_flags: String,
    request_protocol: String,
    grpc_response_status: String,
}

fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

impl RequestLabels {
    /// Istio's conventions for missing values: `unknown` for destination
    /// labels, `-` for no response flags, `source` as the reporter of an
    /// outbound proxy or gateway.
    fn of(r: &RequestView<'_>) -> RequestLabels {
        RequestLabels {
            reporter: or(r.reporter, "source").to_string(),
            destination_service: or(r.destination_service, "unknown").to_string(),
            destination_service_name: or(r.destination_service_name, "unknown").to_string(),
            destination_service_namespace: or(r.destination_service_namespace, "unknown").to_string(),
            destination_version: or(r.destination_version, "unknown").to_string(),
            response_code: r.response_code,
            response_flags: or(r.response_flags, "-").to_string(),
            request_protocol: or(r.request_protocol, "http").to_string(),
            grpc_response_status: r.grpc_response_status.to_string(),
        }
    }

    fn overflow(r: &RequestView<'_>) -> RequestLabels {
        RequestLabels {
            reporter: or(r.reporter, "source").to_string(),
            destination_service: "overflow".into(),
            destination_service_name: "overflow".into(),
            destination_service_namespace: "overflow".into(),
            destination_version: "overflow".into(),
            response_code: 0,
            response_flags: "-".into(),
            request_protocol: "overflow".into(),
            grpc_response_status: String::new(),
        }
    }
}

/// A lock-free histogram over integer observations: one atomic add for the
/// bucket and one for the sum. Values are observed in a base unit
/// (nanoseconds, bytes) and bucket bounds and the sum are reported divided
/// by `scale` (nanoseconds -> milliseconds).
#[derive(Clone, Debug)]
struct AtomicHistogram(Arc<HistogramCells>);

#[derive(Debug)]
struct HistogramCells {
    /// Upper bounds in the reported unit.
    bounds: &'static [f64],
    /// Upper bounds in the observed unit (`bounds * scale`, rounded down).
    raw_bounds: Box<[u64]>,
    scale: f64,
    /// One per bound, plus the `+Inf` bucket; not cumulative.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64], scale: f64) -> AtomicHistogram {
        AtomicHistogram(Arc::new(HistogramCells {
            bounds,
            raw_bounds: bounds.iter().map(|b| (b * scale) as u64).collect(),
            scale,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }))
    }

    fn observe(&self, raw: u64) {
        let c = &self.0;
        // `le` semantics: the first bucket whose bound is >= the value.
        let i = c.raw_bounds.partition_point(|b| *b < raw);
        c.counts[i].fetch_add(1, Ordering::Relaxed);
        c.sum.fetch_add(raw, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.0;
        let mut buckets = Vec::with_capacity(c.counts.len());
        let mut count = 0;
        for (i, n) in c.counts.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            count += n;
            buckets.push((c.bounds.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        let sum = c.sum.load(Ordering::Relaxed) as f64 / c.scale;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

type HistogramFamily = Family<RequestLabels, AtomicHistogram, fn() -> AtomicHistogram>;

const NANOS_PER_MS: f64 = 1_000_000.0;

fn duration_histogram() -> AtomicHistogram {
    AtomicHistogram::new(&DURATION_BUCKETS_MS, NANOS_PER_MS)
}

fn bytes_histogram() -> AtomicHistogram {
    AtomicHistogram::new(&BYTES_BUCKETS, 1.0)
}

/// The metric handles of one label combination (clones share their values
/// with the registered families).
struct Series {
    requests: Counter,
    duration: AtomicHistogram,
    request_bytes: AtomicHistogram,
    response_bytes: AtomicHistogram,
}

thread_local! {
    static KEY: RefCell<String> = RefCell::new(String::with_capacity(256));
}

/// Joins the label values of `r` into `key` (unit separator between values).
fn write_key(key: &mut String, r: &RequestView<'_>) {
    key.clear();
    for part in [
        r.reporter,
        r.destination_service,
        r.destination_service_name,
        r.destination_service_namespace,
        r.destination_version,
        r.response_flags,
        r.request_protocol,
        r.grpc_response_status,
    ] {
        key.push_str(part);
        key.push('\u{1f}');
    }
    let _ = write!(key, "{}", r.response_code);
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    request_bytes: HistogramFamily,
    response_bytes: HistogramFamily,
    series: RwLock<HashMap<Box<str>, Series>>,
    config_version: Gauge,
    config_reloads: Counter,
    config_rejected: Counter,
    active_connections: Gauge,
    tcp_opened: Family<TcpLabels, Counter>,
    tcp_closed: Family<TcpLabels, Counter>,
    tcp_sent: Family<TcpLabels, Counter>,
    tcp_received: Family<TcpLabels, Counter>,
}

/// The labels of Istio's TCP metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TcpLabels {
    reporter: String,
    destination_service: String,
    destination_service_name: String,
    destination_service_namespace: String,
    destination_version: String,
    request_protocol: String,
    response_flags: String,
}

/// The destination of a proxied TCP connection, for its metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpView<'a> {
    pub reporter: &'a str,
    pub destination_service: &'a str,
    pub destination_service_name: &'a str,
    pub destination_service_namespace: &'a str,
    pub destination_version: &'a str,
    pub response_flags: &'a str,
}

/// The counters of one TCP connection's series (cheap to increment while bytes flow).
#[derive(Clone, Debug)]
pub struct TcpSeries {
    closed: Counter,
    /// Bytes sent to the client.
    pub sent: Counter,
    /// Bytes received from the client.
    pub received: Counter,
}

impl TcpSeries {
    /// Counts the connection as closed.
    pub fn close(&self) {
        self.closed.inc();
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let request_bytes: HistogramFamily = Family::new_with_constructor(bytes_histogram);
        let response_bytes: HistogramFamily = Family::new_with_constructor(bytes_histogram);
        let config_version = Gauge::default();
        let config_reloads = Counter::default();
        let config_rejected = Counter::default();
        let active_connections = Gauge::default();
        let tcp_opened = Family::<TcpLabels, Counter>::default();
        let tcp_closed = Family::<TcpLabels, Counter>::default();
        let tcp_sent = Family::<TcpLabels, Counter>::default();
        let tcp_received = Family::<TcpLabels, Counter>::default();
        // Counters get `_total` appended by the encoder.
        registry.register("istio_requests", "Requests handled, by destination and response.", requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds, from the first request byte to the last response byte.",
            duration.clone(),
        );
        registry.register("istio_request_bytes", "Request sizes in bytes (headers and body).", request_bytes.clone());
        registry.register(
            "istio_response_bytes",
            "Response sizes in bytes (headers and body).",
            response_bytes.clone(),
        );
        registry.register("weir_config_version", "Version of the configuration being served.", config_version.clone());
        registry.register(
            "weir_config_reloads",
            "Configuration changes applied after the first load.",
            config_reloads.clone(),
        );
        registry.register(
            "weir_config_rejected",
            "Configuration changes rejected (invalid); the previous configuration keeps serving.",
            config_rejected.clone(),
        );
        registry.register(
            "weir_active_connections",
            "Downstream connections currently open.",
            active_connections.clone(),
        );
        registry.register("istio_tcp_connections_opened", "TCP connections opened.", tcp_opened.clone());
        registry.register("istio_tcp_connections_closed", "TCP connections closed.", tcp_closed.clone());
        registry.register("istio_tcp_sent_bytes", "Bytes sent to the client on TCP connections.", tcp_sent.clone());
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the client on TCP connections.",
            tcp_received.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            request_bytes,
            response_bytes,
            series: RwLock::new(HashMap::new()),
            config_version,
            config_reloads,
            config_rejected,
            active_connections,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
        }
    }

    /// Counts a TCP proxy connection as opened and returns the counters to update while it
    /// lives (call [`TcpSeries::close`] when it ends).
    pub fn tcp_opened(&self, v: &TcpView<'_>) -> TcpSeries {
        let labels = TcpLabels {
            reporter: or(v.reporter, "source").to_string(),
            destination_service: or(v.destination_service, "unknown").to_string(),
            destination_service_name: or(v.destination_service_name, "unknown").to_string(),
            destination_service_namespace: or(v.destination_service_namespace, "unknown").to_string(),
            destination_version: or(v.destination_version, "unknown").to_string(),
            request_protocol: "tcp".to_string(),
            response_flags: or(v.response_flags, "-").to_string(),
        };
        self.tcp_opened.get_or_create(&labels).inc();
        TcpSeries {
            closed: self.tcp_closed.get_or_create_owned(&labels),
            sent: self.tcp_sent.get_or_create_owned(&labels),
            received: self.tcp_received.get_or_create_owned(&labels),
        }
    }

    /// Records one finished request.
    pub fn record_request(&self, r: &RequestRecord) {
        self.record(&r.view());
    }

    /// Records one finished request, from borrowed label values.
    pub fn record(&self, r: &RequestView<'_>) {
        KEY.with(|key| match key.try_borrow_mut() {
            Ok(mut key) => {
                write_key(&mut key, r);
                self.record_keyed(&key, r);
            }
            // Only reachable if recording re-entered itself; fall back to a fresh key.
            Err(_) => {
                let mut key = String::new();
                write_key(&mut key, r);
                self.record_keyed(&key, r);
            }
        });
    }

    fn record_keyed(&self, key: &str, r: &RequestView<'_>) {
        {
            let series = self.series.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = series.get(key) {
                observe(s, r);
                return;
            }
        }
        let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
        if !series.contains_key(key) {
            if series.len() >= MAX_SERIES {
                let overflow = RequestLabels::overflow(r);
                let key = format!("\u{0}overflow\u{1f}{}", overflow.reporter);
                let s = series.entry(key.into_boxed_str()).or_insert_with(|| self.new_series(&overflow));
                observe(s, r);
                return;
            }
            let labels = RequestLabels::of(r);
            let s = self.new_series(&labels);
            series.insert(key.into(), s);
        }
        if let Some(s) = series.get(key) {
            observe(s, r);
        }
    }

    fn new_series(&self, labels: &RequestLabels) -> Series {
        Series {
            requests: self.requests.get_or_create_owned(labels),
            duration: self.duration.get_or_create_owned(labels),
            request_bytes: self.request_bytes.get_or_create_owned(labels),
            response_bytes: self.response_bytes.get_or_create_owned(labels),
        }
    }

    /// Sets `weir_config_version` (after the first load and every applied change).
    pub fn set_config_version(&self, version: u64) {
        self.config_version.set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// Counts an applied configuration change.
    pub fn config_reloaded(&self) {
        self.config_reloads.inc();
    }

    /// Counts a rejected configuration change.
    pub fn config_rejected(&self) {
        self.config_rejected.inc();
    }

    /// A downstream connection was accepted.
    pub fn connection_opened(&self) {
        self.active_connections.inc();
    }

    /// A downstream connection was closed.
    pub fn connection_closed(&self) {
        self.active_connections.dec();
    }

    /// Downstream connections currently open.
    pub fn active_connections(&self) -> i64 {
        self.active_connections.get()
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail; a label encoding error would only truncate the output.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry) {
            tracing::warn!("encoding metrics: {e}");
        }
        out
    }
}

fn observe(s: &Series, r: &RequestView<'_>) {
    s.requests.inc();
    s.duration.observe(u64::try_from(r.duration.as_nanos()).unwrap_or(u64::MAX));
    s.request_bytes.observe(r.request_bytes);
    s.response_bytes.observe(r.response_bytes);
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(code: u16) -> RequestRecord {
        RequestRecord {
            reporter: "source",
            destination_service: "reviews.default.svc.cluster.local".into(),
            destination_service_name: "reviews".into(),
            destination_service_namespace: "default".into(),
            destination_version: "v2".into(),
            response_code: code,
            response_flags: String::new(),
            request_protocol: "http",
            grpc_response_status: String::new(),
            duration: Duration::from_millis(7),
            request_bytes: 120,
            response_bytes: 5000,
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line {prefix:?} in:\n{text}"))
    }

    const LABELS: &str = "reporter=\"source\",destination_service=\"reviews.default.svc.cluster.local\",\
        destination_service_name=\"reviews\",destination_service_namespace=\"default\",\
        destination_version=\"v2\",response_code=\"200\",response_flags=\"-\",request_protocol=\"http\",\
        grpc_response_status=\"\"";

    #[test]
    fn request_metrics_have_istio_names_labels_and_values() {
        let m = Metrics::new();
        m.record_request(&record(200));
        m.record_request(&record(200));
        m.record_request(&record(503));
        let text = m.encode();
        assert!(text.contains("# TYPE istio_requests_total counter\n"), "{text}");
        assert!(text.contains("# TYPE istio_request_duration_milliseconds histogram\n"), "{text}");
        assert!(text.contains("# TYPE istio_request_bytes histogram\n"), "{text}");
        assert!(text.contains("# TYPE istio_response_bytes histogram\n"), "{text}");
        assert_eq!(line(&text, &format!("istio_requests_total{{{LABELS}}}")).rsplit(' ').next(), Some("2"));
        assert!(text.contains("response_code=\"503\""), "{text}");
        assert_eq!(
            line(&text, &format!("istio_request_duration_milliseconds_count{{{LABELS}}}")).rsplit(' ').next(),
            Some("2")
        );
        let sum = line(&text, &format!("istio_request_duration_milliseconds_sum{{{LABELS}}}"));
        let sum: f64 = sum.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((sum - 14.0).abs() < 1e-9, "{sum}");
        // 7 ms falls in the le=10 bucket, not le=5.
        let bucket = |le: &str| {
            line(&text, &format!("istio_request_duration_milliseconds_bucket{{{LABELS},le=\"{le}\"}}"))
                .rsplit(' ')
                .next()
                .map(str::to_string)
        };
        assert_eq!(bucket("5").as_deref(), Some("0"));
        assert_eq!(bucket("10").as_deref(), Some("2"));
        assert_eq!(bucket("+Inf").as_deref(), Some("2"));
    }

    #[test]
    fn buckets_are_istios() {
        let m = Metrics::new();
        m.record_request(&record(200));
        let text = m.encode();
        let les = |name: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
                .filter(|l| l.contains("response_code=\"200\""))
                .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next().map(str::to_string))
                .collect()
        };
        // Bounds are written as Go's client writes them (`1`, `1.8e+06`); compare values.
        let parse = |les: Vec<String>| -> Vec<f64> { les.iter().map(|s| s.parse::<f64>().unwrap()).collect() };
        let want = |b: &[f64]| -> Vec<f64> { b.iter().copied().chain(std::iter::once(f64::INFINITY)).collect() };
        assert_eq!(parse(les("istio_request_duration_milliseconds")), want(&DURATION_BUCKETS_MS));
        assert_eq!(parse(les("istio_request_bytes")), want(&BYTES_BUCKETS));
        assert_eq!(parse(les("istio_response_bytes")), want(&BYTES_BUCKETS));
    }

    #[test]
    fn missing_values_follow_istio_conventions() {
        let m = Metrics::new();
        m.record_request(&RequestRecord { response_code: 404, response_flags: "NR".into(), ..Default::default() });
        let text = m.encode();
        let l = line(&text, "istio_requests_total{");
        for want in [
            "reporter=\"source\"",
            "destination_service=\"unknown\"",
            "destination_version=\"unknown\"",
            "response_flags=\"NR\"",
            "request_protocol=\"http\"",
            "response_code=\"404\"",
        ] {
            assert!(l.contains(want), "{want} missing in {l}");
        }
    }

    #[test]
    fn weir_metrics() {
        let m = Metrics::new();
        m.set_config_version(3);
        m.config_reloaded();
        m.config_reloaded();
        m.config_rejected();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        assert_eq!(m.active_connections(), 1);
        let text = m.encode();
        for want in [
            "# TYPE weir_config_version gauge\nweir_config_version 3\n",
            "# TYPE weir_config_reloads_total counter\nweir_config_reloads_total 2\n",
            "# TYPE weir_config_rejected_total counter\nweir_config_rejected_total 1\n",
            "# TYPE weir_active_connections gauge\nweir_active_connections 1\n",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
    }

    #[test]
    fn series_are_capped() {
        let m = Metrics::new();
        for i in 0..MAX_SERIES + 5 {
            m.record_request(&RequestRecord { destination_service: format!("h{i}"), ..Default::default() });
        }
        let text = m.encode();
        let l = line(&text, "istio_requests_total{reporter=\"source\",destination_service=\"overflow\"");
        assert!(l.ends_with(" 5"), "{l}");
        assert_eq!(text.lines().filter(|l| l.starts_with("istio_requests_total{")).count(), MAX_SERIES + 1);
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.record_request(&RequestRecord { destination_service: "a\"b\nc".into(), ..Default::default() });
        let text = m.encode();
        assert!(text.contains("destination_service=\"a\\\"b\\nc\""), "{text}");
    }

    #[test]
    fn histogram_buckets_are_upper_inclusive() {
        let h = AtomicHistogram::new(&DURATION_BUCKETS_MS, NANOS_PER_MS);
        h.observe(500_000); // 0.5 ms: le=0.5
        h.observe(500_001); // just above: le=1
        h.observe(u64::MAX); // beyond the last bound: +Inf only
        let counts: Vec<u64> = h.0.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(&counts[..2], &[1, 1]);
        assert_eq!(counts[DURATION_BUCKETS_MS.len()], 1);
        assert_eq!(counts.iter().sum::<u64>(), 3);
    }

    #[test]
    fn borrowed_and_owned_records_share_series() {
        let m = Metrics::new();
        let owned = record(200);
        m.record_request(&owned);
        m.record(&RequestView { duration: Duration::from_millis(1), ..owned.view() });
        let text = m.encode();
        assert!(line(&text, &format!("istio_requests_total{{{LABELS}}}")).ends_with(" 2"), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("istio_requests_total{")).count(), 1);
    }

    #[test]
    fn recording_from_many_threads() {
        let m = std::sync::Arc::new(Metrics::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        m.record_request(&record(200));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = m.encode();
        assert!(line(&text, &format!("istio_requests_total{{{LABELS}}}")).ends_with(" 4000"), "{text}");
    }
}
