//! End to end: routing decisions (matching, splits, redirects, direct
//! responses, rewrites, header operations, CORS, mirrors, gateways, the
//! explicit proxy).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_based_routing_picks_the_subset() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let port = free_port();
    let yaml = format!(
        "{}{}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: reviews, subset: v2}}}}]
  - route: [{{destination: {{host: reviews, subset: v1}}}}]
",
        service("reviews", port, "HTTP", &[(v1.port(), "v1"), (v2.port(), "v2")]),
        subsets("reviews", &["v1", "v2"]),
    );
    let _proxy = Proxy::start(&yaml).await;
    let mut c = Client::h1(port).await;
    for _ in 0..5 {
        assert_eq!(c.get("reviews:9080", "/r", &[("end-user", "jason")]).await.backend(), "v2");
        assert_eq!(c.get("reviews", "/r", &[]).await.backend(), "v1");
        assert_eq!(c.get("reviews.default.svc.cluster.local", "/r", &[("end-user", "bob")]).await.backend(), "v1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_is_within_statistical_bounds() {
    let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
    let port = free_port();
    let yaml = format!(
        "{}{}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route:
    - {{destination: {{host: reviews, subset: v1}}, weight: 8}}
    - {{destination: {{host: reviews, subset: v3}}, weight: 2}}
",
        service("reviews", port, "HTTP", &[(v1.port(), "v1"), (v3.port(), "v3")]),
        subsets("reviews", &["v1", "v3"]),
    );
    let _proxy = Proxy::start(&yaml).await;
    let mut c = Client::h1(port).await;
    let n = 1000;
    let mut to_v1 = 0;
    for _ in 0..n {
        let r = c.get("reviews", "/", &[]).await;
        assert_eq!(r.status, 200);
        if r.backend() == "v1" {
            to_v1 += 1;
        }
    }
    // 80% of 1000: mean 800, standard deviation ~12.6; 7 deviations either way.
    assert!((710..=890).contains(&to_v1), "v1 got {to_v1} of {n}");
    assert_eq!(v1.count() + v3.count(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_and_direct_response() {
    let port = free_port();
    let yaml = format!(
        "{}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web]
  http:
  - match: [{{uri: {{prefix: /old}}}}]
    redirect: {{uri: /new, authority: other.example.com}}
  - match: [{{uri: {{prefix: /moved}}}}]
    redirect: {{scheme: https, redirectCode: 308}}
  - match: [{{uri: {{exact: /teapot}}}}]
    directResponse: {{status: 418, body: {{string: short and stout}}}}
    headers: {{response: {{set: {{x-direct: 'yes'}}}}}}
  - route: [{{destination: {{host: web}}}}]
",
        service("web", port, "HTTP", &[(1, "v1")]),
    );
    let _proxy = Proxy::start(&yaml).await;
    let r = get(port, "web", "/old/path?q=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location").as_deref(), Some("http://other.example.com/new?q=1"));
    assert_eq!(r.body, "");
    let r = get(port, &format!("web:{port}"), "/moved/x", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some(format!("https://web:{port}/moved/x")));
    let r = get(port, "web", "/teapot", &[]).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.body, "short and stout");
    assert_eq!(r.header("x-direct").as_deref(), Some("yes"));
    assert!(r.header("x-weir-reason").is_none(), "configured responses are not local-reply errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_set_the_original_path_header() {
    let b = Backend::start("b").await;
    let port = free_port();
    let yaml = format!(
        "{}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api]
  http:
  - match: [{{uri: {{prefix: /api/}}}}]
    rewrite: {{uri: /v2/, authority: backend.internal}}
    route: [{{destination: {{host: api}}}}]
  - match: [{{uri: {{prefix: /svc/}}}}]
    rewrite: {{uriRegexRewrite: {{match: '^/svc/([^/]+)/(.*)$', rewrite: '/\\2/\\1'}}}}
    route: [{{destination: {{host: api}}}}]
  - route: [{{destination: {{host: api}}}}]
",
        service("api", port, "HTTP", &[(b.port(), "v1")]),
    );
    let _proxy = Proxy::start(&yaml).await;
    let r = get(port, "api", "/api/users?id=7", &[]).await;
    let j = r.json();
    assert_eq!(j["path"], "/v2/users?id=7");
    assert_eq!(j["authority"], "backend.internal");
    assert_eq!(r.upstream_header("x-envoy-original-path").as_deref(), Some("/api/users?id=7"));
    let r = get(port, "api", "/svc/a/b/c", &[]).await;
    assert_eq!(r.json()["path"], "/b/c/a");
    assert_eq!(r.upstream_header("x-envoy-original-path").as_deref(), Some("/svc/a/b/c"));
    let r = get(port, "api", "/plain", &[]).await;
    assert_eq!(r.json()["path"], "/plain");
    assert_eq!(r.upstream_header("x-envoy-original-path"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_operations_and_standard_headers() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let port = free_port();
    let yaml = format!(
        "{}{}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: h, namespace: default}}
spec:
  hosts: [h]
  http:
  - headers:
      request:
        set: {{x-route: r1, x-client: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%', x-pct: '100%%', x-copy: '%REQ(x-in)%'}}
        add: {{x-multi: b}}
        remove: [x-drop]
      response:
        set: {{x-resp: route, server: from-route}}
        remove: [x-upstream-secret]
    route:
    - destination: {{host: h, subset: v1}}
      weight: 50
      headers: {{request: {{set: {{x-dest: v1}}}}, response: {{add: {{x-dest-resp: v1}}}}}}
    - destination: {{host: h, subset: v2}}
      weight: 50
      headers: {{request: {{set: {{x-dest: v2}}}}, response: {{add: {{x-dest-resp: v2}}}}}}
",
        service("h", port, "HTTP", &[(v1.port(), "v1"), (v2.port(), "v2")]),
        subsets("h", &["v1", "v2"]),
    );
    let _proxy = Proxy::start(&yaml).await;
    let mut c = Client::h1(port).await;
    for _ in 0..6 {
        let r = c
            .get(
                "h",
                "/",
                &[
                    ("x-drop", "1"),
                    ("x-multi", "a"),
                    ("x-in", "copied"),
                    ("traceparent", "00-abc-def-01"),
                    ("x-envoy-internal", "true"),
                    ("x-envoy-retry-on", "5xx"),
                ],
            )
            .await;
        assert_eq!(r.status, 200);
        let backend = r.backend();
        let j = r.json();
        let h = &j["headers"];
        assert_eq!(h["x-route"], "r1");
        assert_eq!(h["x-client"], "127.0.0.1");
        assert_eq!(h["x-pct"], "100%");
        assert_eq!(h["x-copy"], "copied");
        assert_eq!(h["x-dest"], backend.as_str(), "destination-level headers follow the chosen destination");
        assert!(h.get("x-drop").is_none());
        assert_eq!(h["traceparent"], "00-abc-def-01", "tracing headers pass untouched");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(h.get("x-forwarded-for").is_none(), "sidecars do not append x-forwarded-for");
        assert!(h.get("x-envoy-internal").is_none(), "Envoy decides x-envoy-internal itself");
        assert!(h.get("x-envoy-retry-on").is_none(), "an application's request is not internal to Envoy");
        assert!(h.get("x-envoy-external-address").is_none(), "only gateways mark edge requests");
        let request_id = h["x-request-id"].as_str().unwrap();
        assert_eq!(request_id.len(), 36, "a UUID is generated: {request_id}");
        assert_eq!(h["x-envoy-attempt-count"], "1");
        assert!(h.get("x-envoy-expected-rq-timeout-ms").is_none(), "no route timeout");
        assert_eq!(r.header("x-resp").as_deref(), Some("route"));
        assert_eq!(r.header("x-dest-resp"), Some(backend.clone()));
        assert!(r.header("x-upstream-secret").is_none());
        assert!(r.header("x-envoy-upstream-service-time").is_some());
        // Istio's sidecar outbound listeners overwrite the upstream's (and the route's) Server.
        assert_eq!(r.header("server").as_deref(), Some("envoy"));
    }
    // x-request-id from the client is propagated.
    let r = c.get("h", "/", &[("x-request-id", "abc-123")]).await;
    assert_eq!(r.upstream_header("x-request-id").as_deref(), Some("abc-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_by_host_and_appends_forwarded_for() {
    let b = Backend::start("productpage").await;
    let (gw_port, svc_port) = (free_port(), free_port());
    let yaml = format!(
        "{}
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gw_port}, name: http, protocol: HTTP}}
    hosts: ['bookinfo.example.com']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo, namespace: default}}
spec:
  hosts: ['bookinfo.example.com']
  gateways: [gw]
  http:
  - match: [{{uri: {{exact: /productpage}}}}]
    route: [{{destination: {{host: productpage, port: {{number: {svc_port}}}}}}}]
",
        service("productpage", svc_port, "HTTP", &[(b.port(), "v1")]),
    );
    let _proxy = Proxy::start(&yaml).await;
    let edge = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-envoy-internal", "true"),
        ("x-envoy-retry-on", "5xx"),
        ("x-envoy-max-retries", "9"),
        ("x-envoy-expected-rq-timeout-ms", "5"),
        ("x-envoy-external-address", "10.9.9.9"),
        ("x-envoy-custom", "kept"),
        ("x-request-id", "from-the-client"),
    ];
    let r = get(gw_port, "bookinfo.example.com", "/productpage", &edge).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), "productpage");
    assert_eq!(r.upstream_header("x-forwarded-for").as_deref(), Some("203.0.113.9, 127.0.0.1"));
    // An edge request, as Envoy treats it: the client cannot pass internal x-envoy-* headers on.
    for name in ["x-envoy-internal", "x-envoy-retry-on", "x-envoy-max-retries", "x-envoy-expected-rq-timeout-ms"] {
        assert_eq!(r.upstream_header(name), None, "{name} reached the upstream");
    }
    assert_eq!(r.upstream_header("x-envoy-external-address").as_deref(), Some("127.0.0.1"));
    assert_eq!(r.upstream_header("x-envoy-custom").as_deref(), Some("kept"));
    let id = r.upstream_header("x-request-id").unwrap();
    assert_eq!(id.len(), 36, "an edge request gets a new id, as from Envoy: {id}");
    assert_eq!(r.upstream_header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(r.header("server").as_deref(), Some("istio-envoy"), "gateways name themselves istio-envoy");
    let r = get(gw_port, "bookinfo.example.com", "/other", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "");
    assert_eq!(r.header("server").as_deref(), Some("istio-envoy"), "local replies too");
    assert_eq!(r.header("x-weir-reason").as_deref(), Some("NR VirtualService default/bookinfo"));
    let r = get(gw_port, "unknown.example.com", "/productpage", &[]).await;
    assert_eq!(r.status, 404);
    assert!(r.header("x-weir-reason").unwrap().starts_with("NR "), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_proxy_routes_absolute_form_by_authority() {
    let (v1, direct) = (Backend::start("reviews-v1").await, Backend::start("direct").await);
    let (port, proxy_port) = (free_port(), free_port());
    let yaml = format!(
        "{}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route: [{{destination: {{host: reviews}}}}]
",
        service("reviews", port, "HTTP", &[(v1.port(), "v1")]),
    );
    let _proxy = Proxy::start_with(options(proxy_port), &yaml).await;
    let mut c = Client::h1(proxy_port).await;
    let r = c.get(&format!("reviews:{port}"), &format!("http://reviews:{port}/x"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), "reviews-v1");
    assert_eq!(r.json()["path"], "/x");
    // An unknown host goes to PassthroughCluster: the address in the authority.
    let target = format!("127.0.0.1:{}", direct.port());
    let r = c.get(&target, &format!("http://{target}/through"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), "direct");
    assert_eq!(r.json()["path"], "/through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_answered_locally_and_actual_requests_get_headers() {
    let b = Backend::start("b").await;
    let port = free_port();
    let yaml = format!(
        "{}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: c, namespace: default}}
spec:
  hosts: [c]
  http:
  - corsPolicy:
      allowOrigins: [{{exact: 'https://app.example.com'}}]
      allowMethods: [GET, POST]
      allowHeaders: [x-token]
      exposeHeaders: [x-backend]
      maxAge: 60s
      allowCredentials: true
    route: [{{destination: {{host: c}}}}]
",
        service("c", port, "HTTP", &[(b.port(), "v1")]),
    );
    let _proxy = Proxy::start(&yaml).await;
    let mut c = Client::h1(port).await;
    let pre = [("origin", "https://app.example.com"), ("access-control-request-method", "POST")];
    let r = c.send("OPTIONS", "c", "/x", &pre, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
    assert_eq!(r.header("access-control-allow-methods").as_deref(), Some("GET,POST"));
    assert_eq!(r.header("access-control-max-age").as_deref(), Some("60"));
    assert_eq!(b.count(), 0, "matched preflights never reach the upstream");
    // Unmatched preflight: forwarded (Istio's default).
    let r = c
        .send("OPTIONS", "c", "/x", &[("origin", "https://evil.com"), ("access-control-request-method", "POST")], "")
        .await;
    assert_eq!(r.backend(), "b");
    assert!(r.header("access-control-allow-origin").is_none());
    let r = c.get("c", "/x", &[("origin", "https://app.example.com")]).await;
    assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
    assert_eq!(r.header("access-control-allow-credentials").as_deref(), Some("true"));
    assert_eq!(r.header("access-control-expose-headers").as_deref(), Some("x-backend"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_copy_requests_fire_and_forget() {
    let (main, shadow) = (Backend::start("main").await, Backend::start("shadow").await);
    let (port, shadow_port) = (free_port(), free_port());
    let yaml = format!(
        "{}{}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: m, namespace: default}}
spec:
  hosts: [m]
  http:
  - route: [{{destination: {{host: m}}}}]
    mirror: {{host: mirror, port: {{number: {shadow_port}}}}}
",
        service("m", port, "HTTP", &[(main.port(), "v1")]),
        service("mirror", shadow_port, "HTTP", &[(shadow.port(), "v1")]),
    );
    let _proxy = Proxy::start(&yaml).await;
    let r = Client::h1(port).await.send("POST", "m", "/copy", &[("x-mark", "1")], "payload").await;
    assert_eq!(r.backend(), "main");
    wait_for("the mirrored request", || shadow.count() == 1).await;
    let seen = &shadow.seen()[0];
    assert_eq!(seen.path, "/copy");
    assert_eq!(seen.headers["host"], "m", "no -shadow suffix by default");
    assert_eq!(seen.headers["x-mark"], "1");
    assert_eq!(&seen.body[..], b"payload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalized_before_routing_as_envoy_does() {
    let (public, admin) = (Backend::start("public").await, Backend::start("admin").await);
    // `/admin...` to the admin subset, everything else to the public one.
    let app = |port: u16| {
        format!(
            "{}{}{}",
            service("app", port, "HTTP", &[(public.port(), "public"), (admin.port(), "admin")]),
            subsets("app", &["public", "admin"]),
            vs(
                "app",
                "  - match: [{uri: {prefix: /admin}}]
    route: [{destination: {host: app, subset: admin}}]
  - route: [{destination: {host: app, subset: public}}]"
            ),
        )
    };
    let port = free_port();
    let proxy = Proxy::start(&app(port)).await;
    // MeshConfig pathNormalization BASE (Istio's default): dot segments cannot skip a route.
    for (path, backend, upstream_path) in [
        ("/public/../admin/x", "admin", "/admin/x"),
        ("/public/%2e%2E/admin", "admin", "/admin"),
        ("/public/..;jsessionid=1/admin", "admin", "/admin"),
        ("/public/..\\admin", "admin", "/admin"),
        ("/a/./b?q=/../", "public", "/a/b?q=/../"),
        ("/%61dmin", "admin", "/admin"),
    ] {
        let r = get(port, "app", path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.backend(), backend, "{path}");
        assert_eq!(r.json()["path"], upstream_path, "{path}");
    }
    let r = get(port, "app", "/x/.%00./y", &[]).await;
    assert_eq!(r.status, 400, "an escaped NUL cannot be normalized: {r:?}");
    assert_eq!(admin.count() + public.count(), 6);
    drop(proxy);

    // pathNormalization NONE: routed and forwarded as received.
    let port = free_port();
    let mut snapshot = compile_for(load_checked(&app(port)).objects, &weir_compile::Node::default());
    snapshot.path_normalization = weir_compile::model::PathNormalization::None;
    let state = weir_proxy::State::new(options(0), weir_proxy::runtime::Runtime::new(snapshot, 1, None));
    let _proxy = Proxy::serve(state).await;
    let r = get(port, "app", "/public/../admin", &[]).await;
    assert_eq!(r.backend(), "public");
    assert_eq!(r.json()["path"], "/public/../admin");
}
