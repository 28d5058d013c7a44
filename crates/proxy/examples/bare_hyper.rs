//! The floor of weir's HTTP stack: a reverse proxy with nothing but the crates weir is built on
//! (tokio on one thread, hyper-util's server for HTTP/1.1 and HTTP/2, hyper-util's pooling
//! client for HTTP/1.1 upstreams, tokio-rustls with aws-lc-rs, mimalloc). It forwards every
//! request to one upstream: no routing, no header handling, no metrics, no logs.
//!
//! `bench/run.sh` and `bench/ab.sh --hyper` run it beside weir, so that what weir adds to its
//! stack, and what the stack itself costs against nginx and HAProxy, are both same-pass ratios
//! (the issue's anchor: "a bare hyper reverse proxy reached only about 0.76x nginx's
//! throughput per core"). It is a benchmark subject, not a product.
//!
//! ```sh
//! cargo build --release -p weir-proxy --example bare_hyper
//! target/release/examples/bare_hyper --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 \
//!     [--tls-listen 127.0.0.1:8443 --cert cert.pem --key key.pem]
//! ```

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Body = Either<Incoming, Empty<Bytes>>;

struct Args {
    listen: SocketAddr,
    upstream: Authority,
    tls: Option<(SocketAddr, String, String)>,
}

fn args() -> Result<Args, String> {
    const USAGE: &str = "usage: bare_hyper --listen ADDR --upstream HOST:PORT [--tls-listen ADDR --cert PEM --key PEM]";
    let (mut listen, mut upstream, mut tls_listen, mut cert, mut key) = (None, None, None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value; {USAGE}"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().map_err(|e| format!("--listen {value}: {e}"))?),
            "--upstream" => upstream = Some(value.parse().map_err(|e| format!("--upstream {value}: {e}"))?),
            "--tls-listen" => tls_listen = Some(value.parse().map_err(|e| format!("--tls-listen {value}: {e}"))?),
            "--cert" => cert = Some(value),
            "--key" => key = Some(value),
            _ => return Err(format!("unknown argument {flag}; {USAGE}")),
        }
    }
    let tls = match (tls_listen, cert, key) {
        (Some(addr), Some(cert), Some(key)) => Some((addr, cert, key)),
        (None, None, None) => None,
        _ => return Err(format!("--tls-listen, --cert and --key go together; {USAGE}")),
    };
    Ok(Args {
        listen: listen.ok_or(format!("--listen is missing; {USAGE}"))?,
        upstream: upstream.ok_or(format!("--upstream is missing; {USAGE}"))?,
        tls,
    })
}

fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, Box<dyn Error>> {
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = args()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(None)
            .pool_max_idle_per_host(usize::MAX)
            .build(connector);
        let plain = TcpListener::bind(args.listen).await?;
        let tls = match &args.tls {
            Some((addr, cert, key)) => Some((TcpListener::bind(addr).await?, acceptor(cert, key)?)),
            None => None,
        };
        let upstream = args.upstream;
        if let Some((listener, acceptor)) = tls {
            tokio::spawn(accept(listener, Some(acceptor), client.clone(), upstream.clone()));
        }
        accept(plain, None, client, upstream).await;
        Ok(())
    })
}

async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    client: Client<HttpConnector, Incoming>,
    upstream: Authority,
) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            // Usually out of file descriptors: wait instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = sock.set_nodelay(true);
        let (client, upstream, tls) = (client.clone(), upstream.clone(), tls.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(client.clone(), upstream.clone(), req));
            let builder = auto::Builder::new(TokioExecutor::new());
            let _ = match tls {
                Some(acceptor) => match acceptor.accept(sock).await {
                    Ok(s) => builder.serve_connection(TokioIo::new(s), service).await,
                    Err(_) => return,
                },
                None => builder.serve_connection(TokioIo::new(sock), service).await,
            };
        });
    }
}

/// The request goes to the upstream over HTTP/1.1 with its path; any failure is a 502.
async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Authority,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(upstream);
    parts.path_and_query = Some(path);
    let Ok(uri) = Uri::from_parts(parts) else { return Ok(bad_gateway()) };
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    match client.request(req).await {
        Ok(resp) => Ok(resp.map(Either::Left)),
        Err(_) => Ok(bad_gateway()),
    }
}

fn bad_gateway() -> Response<Body> {
    let mut resp = Response::new(Either::Right(Empty::new()));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}
