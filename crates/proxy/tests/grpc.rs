//! End to end with a real gRPC client and server (tonic): unary and
//! server-streaming calls through weir over h2c, trailers, gRPC fault aborts,
//! upstream error codes, `retryOn` gRPC conditions and the gRPC labels of the
//! request metrics.
//!
//! The server is `grpc.health.v1.Health` from `tonic-health` (its generated
//! code ships in the crate, so no protoc): the crate's own service, and a
//! scripted implementation of the same trait for failures and retries.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tokio::task::JoinHandle;
use tonic::codegen::tokio_stream::{self, Stream};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthReporter;

const CHECK: &str = "/grpc.health.v1.Health/Check";
/// The service name the health servers report on.
const SVC: &str = "weir.test.Echo";

/// Bounds every network wait of these tests.
async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A tonic server on a free loopback port, stopped on drop.
struct GrpcServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcServer {
    async fn start<T: Health>(svc: HealthServer<T>) -> GrpcServer {
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        let task = tokio::spawn(async move {
            Server::builder().serve_with_incoming(svc, incoming).await.unwrap();
        });
        GrpcServer { addr, task }
    }

    /// tonic-health's own service, with `SVC` serving.
    async fn health() -> (GrpcServer, HealthReporter) {
        let (reporter, svc) = tonic_health::server::health_reporter();
        reporter.set_service_status(SVC, tonic_health::ServingStatus::Serving).await;
        (GrpcServer::start(svc).await, reporter)
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// A scripted `Health`: `Check` fails with `fail_code` while `failures` lasts and records
/// each call's `x-envoy-attempt-count`; `Watch` sends three statuses, then ends with
/// `ABORTED` and a custom trailer.
struct Scripted {
    failures: AtomicU32,
    fail_code: Mutex<Code>,
    attempts: Mutex<Vec<String>>,
}

impl Scripted {
    fn new() -> Arc<Scripted> {
        Arc::new(Scripted {
            failures: AtomicU32::new(0),
            fail_code: Mutex::new(Code::Unavailable),
            attempts: Mutex::default(),
        })
    }

    /// The next `n` Checks fail with `code`.
    fn fail(&self, n: u32, code: Code) {
        *self.fail_code.lock().unwrap() = code;
        self.failures.store(n, Ordering::SeqCst);
    }

    /// `x-envoy-attempt-count` of each Check since the last call.
    fn take_attempts(&self) -> Vec<String> {
        std::mem::take(&mut *self.attempts.lock().unwrap())
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

#[tonic::async_trait]
impl Health for Scripted {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        let attempt = request
            .metadata()
            .get("x-envoy-attempt-count")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        self.attempts.lock().unwrap().push(attempt.clone());
        if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(Status::new(*self.fail_code.lock().unwrap(), "scripted failure"));
        }
        let mut resp = tonic::Response::new(response(ServingStatus::Serving));
        if let Ok(v) = attempt.parse() {
            resp.metadata_mut().insert("x-seen-attempt-count", v);
        }
        Ok(resp)
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        let mut end = Status::aborted("stream over");
        end.metadata_mut().insert("x-weir-test-trailer", "kept".parse().unwrap());
        let items = vec![
            Ok(response(ServingStatus::Serving)),
            Ok(response(ServingStatus::NotServing)),
            Ok(response(ServingStatus::Serving)),
            Err(end),
        ];
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(items))))
    }
}

/// A gRPC client connected to weir's listener on `port` (h2c), with `host:port` as `:authority`.
async fn client(port: u16, host: &str) -> HealthClient<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .origin(format!("http://{host}:{port}").parse().unwrap())
        .connect_timeout(Duration::from_secs(5));
    HealthClient::new(within("connect", endpoint.connect()).await.unwrap())
}

fn check_req(service: &str) -> HealthCheckRequest {
    HealthCheckRequest { service: service.to_string() }
}

/// A `GRPC` ServiceEntry for `host` on `port` with one endpoint, and a VirtualService route to it.
fn grpc_route(host: &str, port: u16, upstream: u16, extra: &str) -> String {
    format!(
        "{}{}",
        service(host, port, "GRPC", &[(upstream, "v1")]),
        vs(host, &format!("  - route: [{{destination: {{host: {host}}}}}]\n{extra}"))
    )
}

/// What a raw HTTP/2 client saw of one gRPC call.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: HeaderMap,
    /// The response was a single HEADERS frame (END_STREAM on the headers).
    headers_only: bool,
    data: Bytes,
    trailers: Option<HeaderMap>,
}

/// One unary gRPC call with hyper (prior-knowledge HTTP/2), to see frames and trailers as sent.
async fn raw_call(port: u16, host: &str, path: &str, msg: &impl Message) -> Raw {
    let sock = within("connect", tokio::net::TcpStream::connect(("127.0.0.1", port))).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(sock)).await.unwrap();
    tokio::spawn(conn);
    let encoded = msg.encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + encoded.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(encoded.len()).unwrap());
    framed.put_slice(&encoded);
    let req = Request::builder()
        .method("POST")
        .uri(format!("http://{host}:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(framed.freeze()))
        .unwrap();
    let resp = within("response", send.send_request(req)).await.unwrap();
    let headers_only = resp.body().is_end_stream();
    let (parts, mut body) = resp.into_parts();
    let mut data = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = within("body", body.frame()).await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(d) => data.put(d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    Raw { status: parts.status.as_u16(), headers: parts.headers, headers_only, data: data.freeze(), trailers }
}

/// The value of `istio_requests_total` for the series whose labels include all of `labels`.
fn requests_total(proxy: &Proxy, labels: &[&str]) -> u64 {
    proxy
        .state
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{") && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits (bounded) until the request metrics show `n` requests with `labels`.
async fn wait_requests(proxy: &Proxy, labels: &[&str], n: u64) {
    let what = format!("{n} requests with {labels:?}");
    wait_for(&what, || requests_total(proxy, labels) == n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_call_through_weir_keeps_status_and_trailers() {
    let (upstream, _reporter) = GrpcServer::health().await;
    let port = free_port();
    let proxy = Proxy::start(&grpc_route("hc", port, upstream.port(), "")).await;

    let mut c = client(port, "hc").await;
    for _ in 0..3 {
        let resp = within("Check", c.check(check_req(SVC))).await.unwrap();
        assert_eq!(resp.get_ref().status(), ServingStatus::Serving);
        let md = resp.metadata();
        assert!(md.get("x-envoy-upstream-service-time").is_some(), "weir answered: {md:?}");
        assert_eq!(md.get("grpc-status").map(|v| v.to_str().unwrap()), Some("0"), "trailers merged: {md:?}");
    }

    // The same call with a raw HTTP/2 client: headers, one message, then `grpc-status` in trailers.
    let raw = raw_call(port, "hc", CHECK, &check_req(SVC)).await;
    assert_eq!(raw.status, 200, "{raw:?}");
    assert!(!raw.headers_only);
    assert_eq!(raw.headers["content-type"], "application/grpc");
    assert!(raw.headers.get("grpc-status").is_none(), "status is in the trailers, not the headers: {raw:?}");
    assert_eq!(raw.data[0], 0, "uncompressed message");
    let len = u32::from_be_bytes(raw.data[1..5].try_into().unwrap()) as usize;
    assert_eq!(raw.data.len(), 5 + len, "one length-prefixed message");
    let msg = HealthCheckResponse::decode(&raw.data[5..]).unwrap();
    assert_eq!(msg.status(), ServingStatus::Serving);
    let trailers = raw.trailers.expect("trailers arrive");
    assert_eq!(trailers["grpc-status"], "0");

    let ok = ["destination_service_name=\"hc\"", "request_protocol=\"grpc\"", "grpc_response_status=\"0\""];
    wait_requests(&proxy, &ok, 4).await;
    assert_eq!(requests_total(&proxy, &["response_code=\"200\"", "grpc_response_status=\"0\""]), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_watch_streams_each_status_change() {
    let (upstream, reporter) = GrpcServer::health().await;
    let port = free_port();
    let proxy = Proxy::start(&grpc_route("watch", port, upstream.port(), "")).await;

    let mut c = client(port, "watch").await;
    let mut stream = within("Watch", c.watch(check_req(SVC))).await.unwrap().into_inner();
    let first = within("first message", stream.message()).await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    // While the stream is open, unary calls share the same client connection.
    for _ in 0..3 {
        let r = within("Check beside Watch", c.check(check_req(SVC))).await.unwrap();
        assert_eq!(r.get_ref().status(), ServingStatus::Serving);
    }

    // Each status change reaches the client as its own message, while the call stays open.
    for next in [tonic_health::ServingStatus::NotServing, tonic_health::ServingStatus::Serving] {
        reporter.set_service_status(SVC, next).await;
        let want = match next {
            tonic_health::ServingStatus::NotServing => ServingStatus::NotServing,
            _ => ServingStatus::Serving,
        };
        let got = within("status change", stream.message()).await.unwrap().unwrap();
        assert_eq!(got.status(), want);
    }
    drop(stream);
    // The cancelled stream is recorded when weir drops it: downstream disconnect (`DC`), and no
    // `grpc-status` seen, so Istio's label is inferred from HTTP 200: UNKNOWN.
    let cancelled = ["request_protocol=\"grpc\"", "response_flags=\"DC\"", "grpc_response_status=\"2\""];
    wait_requests(&proxy, &cancelled, 1).await;
    wait_requests(&proxy, &["request_protocol=\"grpc\"", "grpc_response_status=\"0\""], 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ending_in_an_error_keeps_its_trailers() {
    let scripted = Scripted::new();
    let upstream = GrpcServer::start(HealthServer::from_arc(scripted.clone())).await;
    let port = free_port();
    let proxy = Proxy::start(&grpc_route("ends", port, upstream.port(), "")).await;

    let mut c = client(port, "ends").await;
    let mut stream = within("Watch", c.watch(check_req(SVC))).await.unwrap().into_inner();
    let mut seen = Vec::new();
    let end = loop {
        match within("stream", stream.message()).await {
            Ok(Some(m)) => seen.push(m.status()),
            Ok(None) => panic!("the stream ended without the server's status"),
            Err(status) => break status,
        }
    };
    assert_eq!(seen, [ServingStatus::Serving, ServingStatus::NotServing, ServingStatus::Serving]);
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    assert_eq!(end.message(), "stream over");
    assert_eq!(end.metadata().get("x-weir-test-trailer").map(|v| v.to_str().unwrap()), Some("kept"));

    wait_requests(&proxy, &["request_protocol=\"grpc\"", "grpc_response_status=\"10\"", "response_code=\"200\""], 1)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_grpc_status_is_a_trailers_only_unavailable() {
    let scripted = Scripted::new();
    let upstream = GrpcServer::start(HealthServer::from_arc(scripted.clone())).await;
    let port = free_port();
    let fault = "    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}\n";
    let proxy = Proxy::start(&grpc_route("faulty", port, upstream.port(), fault)).await;

    let mut c = client(port, "faulty").await;
    let err = within("Check", c.check(check_req(SVC))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(err.message(), "fault filter abort");
    assert_eq!(
        err.metadata().get("x-weir-reason").map(|v| v.to_str().unwrap()),
        Some("FI VirtualService default/faulty")
    );
    let err = within("Watch", c.watch(check_req(SVC))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "streaming calls are aborted too: {err:?}");

    // On the wire: HTTP 200, `grpc-status` in the headers, and nothing after them.
    let raw = raw_call(port, "faulty", CHECK, &check_req(SVC)).await;
    assert_eq!(raw.status, 200, "{raw:?}");
    assert!(raw.headers_only, "trailers-only: one HEADERS frame with END_STREAM: {raw:?}");
    assert_eq!(raw.headers["grpc-status"], "14");
    assert_eq!(raw.headers["content-type"], "application/grpc");
    assert!(raw.data.is_empty() && raw.trailers.is_none());

    assert!(scripted.take_attempts().is_empty(), "the upstream never saw an aborted call");
    let labels = ["request_protocol=\"grpc\"", "grpc_response_status=\"14\"", "response_flags=\"FI\""];
    wait_requests(&proxy, &labels, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_codes_pass_through() {
    let (upstream, _reporter) = GrpcServer::health().await;
    let port = free_port();
    let proxy = Proxy::start(&grpc_route("nf", port, upstream.port(), "")).await;

    let mut c = client(port, "nf").await;
    let err = within("Check", c.check(check_req("no.such.Service"))).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "service not registered");
    let err = within("Watch", c.watch(check_req("no.such.Service"))).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // tonic answers an error before any message as trailers-only; weir keeps that shape.
    let raw = raw_call(port, "nf", CHECK, &check_req("no.such.Service")).await;
    assert_eq!(raw.status, 200, "{raw:?}");
    assert!(raw.headers_only, "{raw:?}");
    assert_eq!(raw.headers["grpc-status"], "5");
    assert!(raw.headers.get("x-envoy-upstream-service-time").is_some());

    // The connection stays usable for successful calls.
    assert_eq!(within("Check", c.check(check_req(SVC))).await.unwrap().get_ref().status(), ServingStatus::Serving);

    wait_requests(&proxy, &["request_protocol=\"grpc\"", "grpc_response_status=\"5\"", "response_flags=\"-\""], 3)
        .await;
    wait_requests(&proxy, &["request_protocol=\"grpc\"", "grpc_response_status=\"0\""], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_unavailable_count_attempts() {
    let scripted = Scripted::new();
    let upstream = GrpcServer::start(HealthServer::from_arc(scripted.clone())).await;
    let port = free_port();
    let retries = "    retries: {attempts: 3, retryOn: unavailable, perTryTimeout: 5s}\n";
    let proxy = Proxy::start(&grpc_route("flaky", port, upstream.port(), retries)).await;
    let mut c = client(port, "flaky").await;

    // UNAVAILABLE twice, then success on the third attempt.
    scripted.fail(2, Code::Unavailable);
    let resp = within("Check", c.check(check_req(SVC))).await.unwrap();
    assert_eq!(resp.get_ref().status(), ServingStatus::Serving);
    assert_eq!(scripted.take_attempts(), ["1", "2", "3"]);
    assert_eq!(resp.metadata().get("x-seen-attempt-count").map(|v| v.to_str().unwrap()), Some("3"));
    wait_requests(&proxy, &["request_protocol=\"grpc\"", "grpc_response_status=\"0\""], 1).await;

    // Always UNAVAILABLE: 1 + 3 attempts, then the upstream's own status, flagged URX.
    scripted.fail(100, Code::Unavailable);
    let err = within("Check", c.check(check_req(SVC))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "scripted failure", "the upstream's status, not a local reply");
    assert_eq!(scripted.take_attempts(), ["1", "2", "3", "4"]);
    wait_requests(&proxy, &["grpc_response_status=\"14\"", "response_flags=\"URX\""], 1).await;

    // Another code is not retried on `retryOn: unavailable`.
    scripted.fail(1, Code::Internal);
    let err = within("Check", c.check(check_req(SVC))).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(scripted.take_attempts(), ["1"]);
    wait_requests(&proxy, &["grpc_response_status=\"13\"", "response_flags=\"-\""], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_label_grpc_requests() {
    let (upstream, _reporter) = GrpcServer::health().await;
    let port = free_port();
    let proxy = Proxy::start(&grpc_route("m", port, upstream.port(), "")).await;
    let mut c = client(port, "m").await;
    within("Check", c.check(check_req(SVC))).await.unwrap();
    within("Check", c.check(check_req("unknown"))).await.unwrap_err();
    // A plain HTTP request to the same port is labelled `http` with no gRPC status, although
    // tonic answers it with `grpc-status: 12` (UNIMPLEMENTED) in the headers.
    let r = Client::h2(port).await.get("m", "/", &[]).await;
    assert_eq!(r.header("grpc-status").as_deref(), Some("12"), "{r:?}");

    let base = "destination_service=\"m.default.svc.cluster.local\"";
    wait_requests(&proxy, &[base, "request_protocol=\"grpc\"", "grpc_response_status=\"0\""], 1).await;
    wait_requests(&proxy, &[base, "request_protocol=\"grpc\"", "grpc_response_status=\"5\""], 1).await;
    wait_requests(&proxy, &[base, "request_protocol=\"http\"", "grpc_response_status=\"\""], 1).await;
    let text = proxy.state.metrics.encode();
    let grpc_lines: Vec<&str> =
        text.lines().filter(|l| l.starts_with("istio_requests_total{") && l.contains("\"grpc\"")).collect();
    assert_eq!(grpc_lines.len(), 2, "{text}");
}

/// Envoy answers a gRPC request (`content-type: application/grpc*`) it cannot route or forward
/// with a trailers-only gRPC response: HTTP 200, `grpc-status` mapped from the HTTP status of
/// the local reply, its body as `grpc-message` (`Http::Utility::sendLocalReply`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_to_grpc_requests_are_trailers_only() {
    let (port, picky_port) = (free_port(), free_port());
    let picky = vs("picky", "  - match: [{uri: {prefix: /only/this}}]\n    route: [{destination: {host: picky}}]");
    let yaml =
        format!("{}{}{picky}", service("down", port, "GRPC", &[]), service("picky", picky_port, "GRPC", &[(1, "v1")]));
    let proxy = Proxy::start(&yaml).await;

    // No endpoints: 503 `UH` becomes UNAVAILABLE with Envoy's body as the message.
    let raw = raw_call(port, "down", CHECK, &check_req(SVC)).await;
    assert_eq!(raw.status, 200, "{raw:?}");
    assert!(raw.headers_only, "{raw:?}");
    assert_eq!(raw.headers["content-type"], "application/grpc");
    assert_eq!(raw.headers["grpc-status"], "14");
    assert_eq!(raw.headers["grpc-message"], "no healthy upstream");
    assert_eq!(raw.headers["x-weir-reason"], format!("UH outbound|{port}||down.default.svc.cluster.local"));
    let mut c = client(port, "down").await;
    let err = within("Check", c.check(check_req(SVC))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(err.message(), "no healthy upstream");

    // No route for the path: 404 `NR` becomes UNIMPLEMENTED.
    let mut other = client(picky_port, "picky").await;
    let err = within("Check", other.check(check_req(SVC))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");

    // Plain HTTP requests still get the plain local reply.
    let r = get(port, "down", "/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"));

    let uh =
        ["request_protocol=\"grpc\"", "response_code=\"200\"", "response_flags=\"UH\"", "grpc_response_status=\"14\""];
    wait_requests(&proxy, &uh, 2).await;
    let nr = ["request_protocol=\"grpc\"", "response_flags=\"NR\"", "grpc_response_status=\"12\""];
    wait_requests(&proxy, &nr, 1).await;
    wait_requests(&proxy, &["request_protocol=\"http\"", "response_code=\"503\"", "grpc_response_status=\"\""], 1)
        .await;
}
