//! Malformed input of any shape must give errors, never a panic: random text,
//! mutated real configs, and random object trees built from Istio's field
//! names are fed to the loader and, when they load, to the validator.

use proptest::prelude::*;
use serde_json::{Map, Value};
use weir_api::{LoadOptions, load_str, validate};

const SEEDS: &[&str] = &[
    include_str!("../../../examples/bookinfo/reviews.yaml"),
    include_str!("../../../examples/bookinfo/gateway.yaml"),
    include_str!("../../../examples/bookinfo/services.yaml"),
    include_str!("../../../examples/egress/external-api.yaml"),
    include_str!("../../../examples/tcp-canary/echo.yaml"),
];

const KINDS: &[&str] =
    &["VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "Sidecar", "WorkloadEntry", "WorkloadGroup"];

/// Field names that occur in Istio objects, so random trees reach deep into the types.
const FIELDS: &[&str] = &[
    "hosts",
    "gateways",
    "http",
    "tcp",
    "tls",
    "exportTo",
    "match",
    "route",
    "destination",
    "host",
    "subset",
    "port",
    "number",
    "name",
    "protocol",
    "weight",
    "uri",
    "exact",
    "prefix",
    "regex",
    "headers",
    "request",
    "response",
    "set",
    "add",
    "remove",
    "redirect",
    "rewrite",
    "authority",
    "timeout",
    "retries",
    "attempts",
    "perTryTimeout",
    "retryOn",
    "fault",
    "delay",
    "abort",
    "fixedDelay",
    "percentage",
    "value",
    "httpStatus",
    "grpcStatus",
    "mirror",
    "mirrors",
    "corsPolicy",
    "allowOrigins",
    "allowMethods",
    "maxAge",
    "directResponse",
    "status",
    "body",
    "string",
    "bytes",
    "delegate",
    "namespace",
    "sniHosts",
    "destinationSubnets",
    "sourceLabels",
    "trafficPolicy",
    "subsets",
    "labels",
    "loadBalancer",
    "simple",
    "consistentHash",
    "httpCookie",
    "ttl",
    "maglev",
    "tableSize",
    "ringHash",
    "minimumRingSize",
    "localityLbSetting",
    "distribute",
    "from",
    "to",
    "failover",
    "failoverPriority",
    "connectionPool",
    "http1MaxPendingRequests",
    "maxConnections",
    "connectTimeout",
    "outlierDetection",
    "consecutive5xxErrors",
    "interval",
    "baseEjectionTime",
    "maxEjectionPercent",
    "portLevelSettings",
    "mode",
    "credentialName",
    "caCertificates",
    "servers",
    "selector",
    "bind",
    "serverCertificate",
    "privateKey",
    "credentialNames",
    "tlsCertificates",
    "cipherSuites",
    "httpsRedirect",
    "addresses",
    "ports",
    "location",
    "resolution",
    "endpoints",
    "address",
    "workloadSelector",
    "targetPort",
    "egress",
    "ingress",
    "captureMode",
    "defaultEndpoint",
    "outboundTrafficPolicy",
    "egressProxy",
    "network",
    "locality",
    "serviceAccount",
    "template",
    "probe",
    "httpGet",
    "tcpSocket",
    "exec",
    "command",
    "scheme",
    "warmup",
    "duration",
    "tunnel",
    "proxyProtocol",
    "matchLabels",
    "withoutHeaders",
    "queryParams",
    "ignoreUriCase",
    "sourceNamespace",
    "uriRegexRewrite",
    "mirrorPercentage",
    "mirror_percent",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1000i64..70000).prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "*",
            "",
            "1s",
            "0.0001s",
            "-1s",
            "SIMPLE",
            "MUTUAL",
            "DNS",
            "STATIC",
            "NONE",
            "unix:///a",
            "10.0.0.0/8",
            "::1",
            "a.b.c",
            "*.x",
            "ns/a.com",
            "~",
            ".",
            "%ENV%",
            "http",
            "5xx,foo",
            "(",
            "v1",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())),
        ]
    })
}

fn load_and_validate(text: &str) {
    let loaded = load_str(text, "fuzz.yaml", &LoadOptions::default());
    for obj in &loaded.objects {
        let _ = validate(obj);
    }
    for p in &loaded.problems {
        assert!(!p.message.is_empty());
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    DuplicateLine(usize),
    SwapLines(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..8).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                ":", "- ", "[", "]", "{", "}", "\n", "  ", "*", "&a", "!!", "\"", "'", "#", "---\n", "~", "0x", "-1"
            ])
        )
            .prop_map(|(a, s)| Mutation::Insert(a, s.to_string())),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
    ]
}

fn apply(text: &str, muts: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for m in muts {
        match m {
            Mutation::Delete(at, n) if !chars.is_empty() => {
                let at = at % chars.len();
                let end = (at + n).min(chars.len());
                chars.drain(at..end);
            }
            Mutation::Insert(at, s) => {
                let at = if chars.is_empty() { 0 } else { at % (chars.len() + 1) };
                chars.splice(at..at, s.chars());
            }
            Mutation::DuplicateLine(i) | Mutation::SwapLines(i, _) => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.lines().collect();
                if lines.is_empty() {
                    continue;
                }
                let i = i % lines.len();
                match m {
                    Mutation::SwapLines(_, j) => {
                        let j = j % lines.len();
                        lines.swap(i, j);
                    }
                    _ => lines.insert(i, lines[i]),
                }
                chars = lines.join("\n").chars().collect();
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,300}") {
        load_and_validate(&text);
    }

    #[test]
    fn mutated_configs_never_panic(seed in prop::sample::select(SEEDS), muts in prop::collection::vec(mutation(), 1..6)) {
        load_and_validate(&apply(seed, &muts));
    }

    #[test]
    fn random_specs_never_panic(kind in prop::sample::select(KINDS), spec in tree(), json in any::<bool>()) {
        let doc = serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": kind,
            "metadata": {"name": "fuzz", "namespace": "ns"},
            "spec": spec,
        });
        let text = if json { doc.to_string() } else { format!("# yaml\n{doc}") };
        load_and_validate(&text);
    }
}

/// Random trees whose shape fits the schema exercise the validators rather
/// than the decoder: build a few from known-good objects by dropping fields.
#[test]
fn examples_with_fields_removed_never_panic() {
    for seed in SEEDS {
        let lines: Vec<&str> = seed.lines().collect();
        for skip in 0..lines.len() {
            let text: Vec<&str> = lines.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, l)| *l).collect();
            load_and_validate(&text.join("\n"));
        }
    }
}
