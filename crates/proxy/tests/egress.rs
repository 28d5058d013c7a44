//! End to end: a MESH_EXTERNAL service reached through an egress gateway, as
//! in Istio's "Egress gateways with TLS origination" task: the sidecar role
//! sends plain HTTP for the external host to the egress gateway's service,
//! the gateway role (the same process here) routes it to the external
//! service and originates TLS (DestinationRule `tls: SIMPLE`).
#![allow(clippy::unwrap_used)] // test helpers

mod common;

use common::origination::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_external_service_through_the_egress_gateway_with_tls_origination() {
    let ca = Ca::new("egress-ca");
    let leaf = ca.leaf(&["api.example.com"], 7);
    let external = TlsBackend::https("external", server_config(&leaf, None, &["http/1.1"])).await;
    // The egress gateway's Service port (svc_port) targets its listener port (gw_port), as
    // Istio's egress gateway Service maps 80 to 8080; sidecar and gateway share this process.
    let (ext_port, svc_port, gw_port) = (free_port(), free_port(), free_port());

    let dir = ConfigDir::new("egress");
    let ca_path = dir.write("ca.pem", &ca.pem).display().to_string();
    let config = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api-example, namespace: default}}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {ext_port}, name: http, protocol: HTTP}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {backend}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  hosts: [istio-egressgateway.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {svc_port}, name: http, protocol: HTTP}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {gw_port}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: istio-egressgateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gw_port}, name: http, protocol: HTTP}}
    hosts: [api.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: direct-api-through-egress-gateway, namespace: default}}
spec:
  hosts: [api.example.com]
  gateways: [istio-egressgateway, mesh]
  http:
  - match: [{{gateways: [mesh], port: {ext_port}}}]
    route:
    - destination: {{host: istio-egressgateway.istio-system.svc.cluster.local, port: {{number: {svc_port}}}}}
  - match: [{{gateways: [istio-egressgateway], port: {gw_port}}}]
    route:
    - destination: {{host: api.example.com, port: {{number: {ext_port}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: originate-tls-for-api, namespace: default}}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca_path}, sni: api.example.com}}
",
        backend = external.port(),
    );
    dir.write("egress.yaml", &config);
    let proxy = DirProxy::start(dir, None).await;

    // The application sends plain HTTP to the external host's port (the sidecar listener).
    let r = get(ext_port, "api.example.com", "/headers", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["host"], "api.example.com");
    let hs = external.handshakes();
    assert_eq!(hs.len(), 1, "one TLS connection to the external service: {hs:?}");
    assert_eq!(hs[0].sni.as_deref(), Some("api.example.com"));

    // Both hops happened: the sidecar connected to the gateway, the gateway to the site.
    let stats = weir_proxy::admin::cluster_stats_text(&proxy.state);
    let connections = |cluster: &str| {
        stats
            .lines()
            .find(|l| l.starts_with(&format!("cluster.{cluster}.upstream_cx_total:")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no upstream_cx_total for {cluster} in:\n{stats}"))
    };
    assert_eq!(connections(&format!("outbound|{svc_port}||istio-egressgateway.istio-system.svc.cluster.local")), 1);
    assert_eq!(connections(&format!("outbound|{ext_port}||api.example.com")), 1);

    // Going straight to the gateway with another host finds no route there (404 NR).
    let r = get(gw_port, "other.example.com", "/", &[]).await;
    assert_eq!(r.status, 404, "{r:?}");
}
