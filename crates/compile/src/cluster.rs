//! Clusters: one per (service, port) plus one per DestinationRule subset,
//! named `outbound|PORT|SUBSET|FQDN`, with endpoints and effective policy
//! (`cluster.go buildOutboundClusters`, `cluster_builder.go applyDestinationRule`,
//! `buildSubsetCluster`, `buildCluster`, `setUpstreamProtocol`).
//!
//! Istio details kept: UDP ports get no cluster; a DNS cluster without
//! endpoints is not built (neither are its subsets); a `PASSTHROUGH` load
//! balancer turns the cluster into ORIGINAL_DST; DYNAMIC_DNS wildcard
//! services get one cluster per HTTP/HTTP2/GRPC/TLS port and no subsets;
//! SIMPLE/MUTUAL TLS to a ServiceEntry without `subjectAltNames` in the DR
//! verifies the ServiceEntry's `subjectAltNames`.
//!
//! Memory: identical policies share one `Arc`, and subset clusters that
//! select every endpoint share the default cluster's endpoint list.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use weir_api::protocol::Protocol;
use weir_api::types::{ClientTlsMode, H2UpgradePolicy, Subset};

use crate::destination_rule::DrIndex;
use crate::mesh::MeshConfig;
use crate::message::{Messages, code};
use crate::model::{Cluster, Discovery, Endpoint, Str, UpstreamProtocol};
use crate::policy::{ClusterPolicy, ConnectionPool, LbAlgorithm, PolicyParts};
use crate::registry::{Service, ServicePort};
use crate::str_util::{Digits, concat_str};

/// `outbound|9080|v1|reviews.default.svc.cluster.local` (`outbound|9080||...` without subset).
pub fn cluster_name(port: u16, subset: Option<&str>, host: &str) -> Str {
    // Route building names a cluster per destination: one allocation each.
    let port = Digits::new(port);
    concat_str(&["outbound|", port.as_str(), "|", subset.unwrap_or(""), "|", host])
}

/// Writes the cluster name into `buf` (cleared first): lets `build` reuse one buffer.
fn write_cluster_name(buf: &mut String, port: u16, subset: Option<&str>, host: &str) {
    let subset = subset.unwrap_or("");
    buf.clear();
    buf.reserve(16 + subset.len() + host.len());
    buf.push_str("outbound|");
    let mut digits = [0u8; 5];
    let mut n = port;
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[start..] {
        buf.push(char::from(d));
    }
    buf.push('|');
    buf.push_str(subset);
    buf.push('|');
    buf.push_str(host);
}

/// Parses a cluster name back into (port, subset, host).
pub fn parse_cluster_name(name: &str) -> Option<(u16, Option<&str>, &str)> {
    let mut parts = name.splitn(4, '|');
    if parts.next()? != "outbound" {
        return None;
    }
    let port = parts.next()?.parse().ok()?;
    let subset = parts.next()?;
    let host = parts.next()?;
    Some((port, (!subset.is_empty()).then_some(subset), host))
}

/// The upstream protocol of a service port (`setUpstreamProtocol`), adjusted
/// by the DR's HTTP settings: `useClientProtocol` makes HTTP clusters follow
/// the client; `h2UpgradePolicy: UPGRADE` makes HTTP/1.1 ports speak HTTP/2.
/// Undeclared (sniffed) ports follow the client and are not upgraded (the
/// sidecar behaviour); non-HTTP ports stay TCP.
pub fn upstream_protocol(protocol: Option<Protocol>, pool: &ConnectionPool) -> UpstreamProtocol {
    let base = match protocol {
        None => UpstreamProtocol::Auto,
        Some(p) if p.is_http2() => UpstreamProtocol::Http2,
        Some(p) if p.is_http() => UpstreamProtocol::Http1,
        Some(_) => return UpstreamProtocol::Tcp,
    };
    if pool.use_client_protocol {
        return UpstreamProtocol::Auto;
    }
    if base == UpstreamProtocol::Http1 && pool.h2_upgrade_policy == H2UpgradePolicy::Upgrade {
        return UpstreamProtocol::Http2;
    }
    base
}

type AddrMap<K, V> = crate::fast_hash::FastMap<K, V>;

/// Effective policies, computed once per set of DR components and shared by value.
struct Policies<'a> {
    mesh: &'a MeshConfig,
    by_parts: AddrMap<[usize; 7], Arc<ClusterPolicy>>,
    by_value: crate::fast_hash::FastSet<Arc<ClusterPolicy>>,
}

impl<'a> Policies<'a> {
    fn new(mesh: &'a MeshConfig) -> Self {
        Policies { mesh, by_parts: AddrMap::default(), by_value: HashSet::default() }
    }

    fn intern(&mut self, p: ClusterPolicy) -> Arc<ClusterPolicy> {
        if let Some(a) = self.by_value.get(&p) {
            return a.clone();
        }
        let a = Arc::new(p);
        self.by_value.insert(a.clone());
        a
    }

    fn get(&mut self, parts: &PolicyParts<'_>) -> Arc<ClusterPolicy> {
        let id = parts.identity();
        if let Some(p) = self.by_parts.get(&id) {
            return p.clone();
        }
        let p = self.intern(ClusterPolicy::from_parts(parts, self.mesh));
        self.by_parts.insert(id, p.clone());
        p
    }

    /// `constructUpstreamTLS`: a ServiceEntry's `subjectAltNames` stand in for
    /// the DR's when it lists none (SIMPLE/MUTUAL).
    fn for_service(&mut self, p: Arc<ClusterPolicy>, svc: &Service) -> Arc<ClusterPolicy> {
        let needs = p.tls.as_ref().is_some_and(|t| {
            matches!(t.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) && t.subject_alt_names.is_empty()
        });
        if !needs || svc.subject_alt_names.is_empty() || !svc.origin.starts_with("ServiceEntry ") {
            return p;
        }
        let mut q = (*p).clone();
        if let Some(t) = q.tls.as_mut() {
            t.subject_alt_names = svc.subject_alt_names.clone();
        }
        self.intern(q)
    }
}

/// Whether `inst` carries all of the subset's labels (an empty set selects all).
fn selects(labels: &BTreeMap<String, String>, inst: &Endpoint) -> bool {
    labels.iter().all(|(k, v)| inst.meta.labels.iter().any(|(lk, lv)| **lk == **k && **lv == **v))
}

fn is_dns(d: Discovery) -> bool {
    matches!(d, Discovery::StrictDns | Discovery::LogicalDns)
}

/// Reusable state of one `build`: policies, interned subset names, the name buffer.
struct Scratch<'a> {
    policies: Policies<'a>,
    subset_names: HashMap<&'a str, Str>,
    name: String,
}

impl<'a> Scratch<'a> {
    fn cluster(
        &mut self,
        svc: &Service,
        port: &ServicePort,
        subset: Option<&'a str>,
        endpoints: Arc<[Endpoint]>,
        policy: Arc<ClusterPolicy>,
        keys: &[Str],
    ) -> Cluster {
        let discovery = if policy.load_balancer.algorithm == LbAlgorithm::Passthrough {
            Discovery::OriginalDst
        } else {
            svc.discovery
        };
        write_cluster_name(&mut self.name, port.port, subset, &svc.hostname);
        let subset = subset.map(|s| self.subset_names.entry(s).or_insert_with(|| Str::from(s)).clone());
        Cluster {
            name: Str::from(self.name.as_str()),
            service: svc.hostname.clone(),
            port: port.port,
            subset,
            discovery,
            protocol: upstream_protocol(port.protocol, &policy.connection_pool),
            endpoints,
            policy,
            destination_rules: keys.to_vec(),
        }
    }
}

/// Builds the clusters of `services` for a client in `client_namespace`,
/// sorted by name.
pub fn build(
    services: &[&Arc<Service>],
    drs: &DrIndex,
    client_namespace: &str,
    mesh: &MeshConfig,
    messages: &mut Messages,
) -> Vec<Cluster> {
    let mut scratch = Scratch { policies: Policies::new(mesh), subset_names: HashMap::new(), name: String::new() };
    let mut out = Buckets::default();
    // Two services with one hostname would give clusters with one name: the first service wins.
    let mut seen: HashSet<&str> = HashSet::with_capacity(services.len());
    // In hostname order (stable: among equal hostnames the first service is kept).
    let mut services: Vec<&Arc<Service>> = services.to_vec();
    services.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    for svc in services {
        if !seen.insert(&svc.hostname) {
            continue;
        }
        let rule = drs.lookup_index(client_namespace, &svc.namespace, &svc.hostname);
        let dr = rule.and_then(|i| drs.rules.get(i));
        let keys: &[Str] = rule.map_or(&[], |i| drs.keys(i));
        let dfp = svc.discovery == Discovery::DynamicDns && crate::host::is_wildcard(&svc.hostname);
        let subsets: &[Subset] = match dr {
            Some(d) if !dfp => &d.subsets,
            _ => &[],
        };
        // Instances selected by each subset (`None`: all of them), shared by the ports.
        let instances = svc.instances();
        let members: Vec<Option<Vec<usize>>> = subsets
            .iter()
            .map(|s| {
                if s.labels.is_empty() {
                    return None;
                }
                let m: Vec<usize> = (0..instances.len()).filter(|&i| selects(&s.labels, &instances[i])).collect();
                (m.len() != instances.len()).then_some(m)
            })
            .collect();
        for (index, port) in svc.ports.iter().enumerate() {
            if port.protocol == Some(Protocol::Udp) {
                continue;
            }
            if dfp && !matches!(port.protocol, Some(Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::Tls))
            {
                continue;
            }
            // The registry's list: shared, not copied, by every snapshot that has this cluster.
            let all = svc.endpoints.get(index).cloned().unwrap_or_default();
            if is_dns(svc.discovery) && all.is_empty() {
                continue;
            }
            let top = dr.map(|d| d.parts(port.port, None)).unwrap_or_default();
            let policy = scratch.policies.get(&top);
            let policy = scratch.policies.for_service(policy, svc);
            out.push(scratch.cluster(svc, port, None, all.clone(), policy, keys));
            let Some(d) = dr else { continue };
            for (si, subset) in subsets.iter().enumerate() {
                let endpoints: Arc<[Endpoint]> = match &members[si] {
                    None => all.clone(),
                    // Indices come from `svc.instances()`, which every port's list mirrors.
                    Some(m) => m.iter().map(|&i| all[i].clone()).collect(),
                };
                let parts =
                    PolicyParts::effective(d.traffic_policy.as_ref(), subset.traffic_policy.as_ref(), port.port);
                let policy = scratch.policies.get(&parts);
                let policy = scratch.policies.for_service(policy, svc);
                let passthrough = policy.load_balancer.algorithm == LbAlgorithm::Passthrough;
                if endpoints.is_empty()
                    && !passthrough
                    && matches!(svc.discovery, Discovery::Static | Discovery::StrictDns | Discovery::LogicalDns)
                {
                    let (object, origin) = match rule.and_then(|i| drs.subset_origin(i, si)) {
                        Some((o, l)) => (o, Some(l)),
                        None => (Str::from("DestinationRule"), None),
                    };
                    // Istio builds no DNS cluster without endpoints (routes to it then get 503 NC).
                    let dns = is_dns(svc.discovery);
                    let effect = if dns {
                        "No cluster is built for it, which leads to 503 NC (cluster not found)"
                    } else {
                        "Which may lead to 503 UH (NoHealthyUpstream)"
                    };
                    messages.error(
                        code::DR_SUBSET_SELECTS_NO_ENDPOINTS,
                        object,
                        origin,
                        format!(
                            "The Subset {} defined in the DestinationRule does not select any endpoints of {}. {effect}.",
                            subset.name, svc.hostname
                        ),
                    );
                    if dns {
                        continue;
                    }
                }
                out.push(scratch.cluster(svc, port, Some(&subset.name), endpoints, policy, keys));
            }
        }
    }
    out.into_sorted()
}

/// Clusters grouped by name prefix `outbound|PORT|SUBSET|`. Services are
/// visited in hostname order, so each group is already sorted; as a prefix
/// can never be a proper prefix of another (ports and subset names hold no
/// `|`), sorting the groups sorts the clusters without comparing 40,000 names.
#[derive(Default)]
struct Buckets {
    /// By (port, address of the interned subset name; 0 without subset).
    index: AddrMap<(u16, usize), usize>,
    groups: Vec<Vec<Cluster>>,
    /// A subset name with `|` (invalid, but not impossible) breaks the prefix rule.
    needs_sort: bool,
}

impl Buckets {
    fn push(&mut self, c: Cluster) {
        self.needs_sort |= c.subset.as_ref().is_some_and(|s| s.contains('|'));
        let key = (c.port, c.subset.as_ref().map_or(0, |s| s.as_ptr() as usize));
        let i = *self.index.entry(key).or_insert_with(|| {
            self.groups.push(Vec::new());
            self.groups.len() - 1
        });
        self.groups[i].push(c);
    }

    fn into_sorted(mut self) -> Vec<Cluster> {
        self.groups.sort_unstable_by(|a, b| match (a.first(), b.first()) {
            (Some(a), Some(b)) => a.name.cmp(&b.name),
            _ => std::cmp::Ordering::Equal,
        });
        let mut out: Vec<Cluster> = Vec::with_capacity(self.groups.iter().map(Vec::len).sum());
        for g in self.groups {
            out.extend(g);
        }
        // Names are unique (one service per hostname), so an unstable sort is deterministic.
        if self.needs_sort {
            out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::message::Message;
    use crate::node::Node;
    use crate::registry::{Location, Visibility};
    use crate::store::ConfigStore;

    fn store(yaml: &str) -> ConfigStore {
        crate::store::from_yaml(yaml, "t.yaml")
    }

    fn dr(name: &str, ns: &str, host: &str, spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{host: {host}, {spec}}}\n---\n"
        )
    }

    fn port(name: &str, number: u16, protocol: Option<Protocol>) -> ServicePort {
        ServicePort { name: name.into(), port: number, protocol, target_port: None }
    }

    fn inst(address: &str, labels: &[(&str, &str)]) -> crate::registry::Instance {
        crate::registry::Instance {
            address: address.into(),
            ports: weir_api::types::SortedMap::new(),
            weight: 0,
            meta: Arc::new(crate::model::EndpointMeta {
                labels: labels.iter().map(|(k, v)| (Str::from(*k), Str::from(*v))).collect(),
                ..Default::default()
            }),
        }
    }

    fn service(
        host: &str,
        ns: &str,
        ports: Vec<ServicePort>,
        instances: Vec<crate::registry::Instance>,
    ) -> Arc<Service> {
        Arc::new(Service {
            hostname: host.into(),
            namespace: ns.into(),
            origin: format!("ServiceEntry {ns}/x").into(),
            origin_file: "t.yaml".into(),
            origin_line: 1,
            addresses: Vec::new(),
            discovery: Discovery::Static,
            location: Location::MeshInternal,
            visibility: Visibility::Public,
            kubernetes_style: false,
            subject_alt_names: Vec::new(),
            endpoints: crate::registry::endpoints_by_port(&ports, &instances),
            ports,
        })
    }

    fn reviews() -> Arc<Service> {
        let mut v1 = inst("10.0.0.1", &[("version", "v1")]);
        v1.ports.insert("http".into(), 9081);
        v1.weight = 3;
        service(
            "reviews.default.svc.cluster.local",
            "default",
            vec![
                ServicePort { target_port: Some(7000), ..port("http", 9080, Some(Protocol::Http)) },
                port("grpc", 9090, Some(Protocol::Grpc)),
            ],
            vec![v1, inst("10.0.0.2", &[("version", "v2")]), inst("10.0.0.3", &[("version", "v2"), ("canary", "yes")])],
        )
    }

    fn run(services: &[Arc<Service>], yaml: &str, client: &str) -> (Vec<Cluster>, Vec<Message>) {
        let mesh = MeshConfig::default();
        let node = Node { namespace: client.into(), labels: BTreeMap::new(), ..Node::default() };
        let mut messages = Messages::default();
        let drs = DrIndex::build(&store(yaml), &mesh, &node, &mut messages);
        let refs: Vec<&Arc<Service>> = services.iter().collect();
        let clusters = build(&refs, &drs, client, &mesh, &mut messages);
        (clusters, messages.into_vec())
    }

    fn find<'a>(cs: &'a [Cluster], name: &str) -> &'a Cluster {
        cs.iter().find(|c| &*c.name == name).unwrap_or_else(|| panic!("no cluster {name}"))
    }

    fn names(cs: &[Cluster]) -> Vec<&str> {
        cs.iter().map(|c| &*c.name).collect()
    }

    fn addrs(c: &Cluster) -> Vec<(&str, u16)> {
        c.endpoints.iter().map(|e| (&*e.address, e.port)).collect()
    }

    #[test]
    fn names_round_trip() {
        let n = cluster_name(9080, Some("v1"), "reviews.default.svc.cluster.local");
        assert_eq!(&*n, "outbound|9080|v1|reviews.default.svc.cluster.local");
        assert_eq!(parse_cluster_name(&n), Some((9080, Some("v1"), "reviews.default.svc.cluster.local")));
        assert_eq!(parse_cluster_name("outbound|80||a.com"), Some((80, None, "a.com")));
        assert_eq!(parse_cluster_name("inbound|80||a.com"), None);
    }

    #[test]
    fn default_cluster_per_port_with_all_endpoints() {
        let (cs, msgs) = run(&[reviews()], "", "default");
        assert!(msgs.is_empty(), "{msgs:?}");
        assert_eq!(
            names(&cs),
            ["outbound|9080||reviews.default.svc.cluster.local", "outbound|9090||reviews.default.svc.cluster.local"]
        );
        let http = &cs[0];
        assert_eq!(http.service.as_ref(), "reviews.default.svc.cluster.local");
        assert_eq!((http.port, http.subset.as_deref()), (9080, None));
        // Endpoint port: the instance's own, else targetPort, else the service port.
        assert_eq!(addrs(http), [("10.0.0.1", 9081), ("10.0.0.2", 7000), ("10.0.0.3", 7000)]);
        assert_eq!(addrs(&cs[1]), [("10.0.0.1", 9090), ("10.0.0.2", 9090), ("10.0.0.3", 9090)]);
        assert_eq!(http.endpoints.iter().map(|e| e.weight).collect::<Vec<_>>(), [3, 1, 1], "weight 0 means 1");
        assert_eq!(http.discovery, Discovery::Static);
        assert!(http.destination_rules.is_empty());
        assert_eq!(*http.policy, ClusterPolicy::default_for(&MeshConfig::default()));
        assert!(Arc::ptr_eq(&http.policy, &cs[1].policy), "default policy shared");
    }

    #[test]
    fn subset_clusters_filter_endpoints_by_labels() {
        let yaml = dr(
            "reviews",
            "default",
            "reviews",
            "subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}, {name: canary, labels: {version: v2, canary: 'yes'}}, {name: all}]",
        );
        let (cs, msgs) = run(&[reviews()], &yaml, "default");
        assert!(msgs.is_empty(), "{msgs:?}");
        assert_eq!(cs.len(), 10);
        let host = "reviews.default.svc.cluster.local";
        assert_eq!(addrs(find(&cs, &format!("outbound|9080|v1|{host}"))), [("10.0.0.1", 9081)]);
        assert_eq!(addrs(find(&cs, &format!("outbound|9080|v2|{host}"))), [("10.0.0.2", 7000), ("10.0.0.3", 7000)]);
        assert_eq!(addrs(find(&cs, &format!("outbound|9090|canary|{host}"))), [("10.0.0.3", 9090)]);
        let all = find(&cs, &format!("outbound|9080|all|{host}"));
        let default = find(&cs, &format!("outbound|9080||{host}"));
        assert!(Arc::ptr_eq(&all.endpoints, &default.endpoints), "empty labels select all: endpoints shared");
        assert_eq!(all.subset.as_deref(), Some("all"));
        assert_eq!(all.destination_rules, [Str::from("default/reviews")]);
        assert_eq!(default.destination_rules, [Str::from("default/reviews")]);
        assert!(cs.windows(2).all(|w| w[0].name < w[1].name), "sorted by name");
    }

    #[test]
    fn subset_selecting_nothing_is_reported() {
        let yaml = dr("reviews", "default", "reviews", "subsets: [{name: v3, labels: {version: v3}}]");
        let (cs, msgs) = run(&[reviews()], &yaml, "default");
        let c = find(&cs, "outbound|9080|v3|reviews.default.svc.cluster.local");
        assert!(c.endpoints.is_empty(), "the cluster exists (503 UH), with no endpoints");
        assert_eq!(msgs.len(), 1, "one message for both ports: {msgs:?}");
        let m = &msgs[0];
        assert_eq!(
            (m.code, m.object.as_ref(), m.origin.as_deref()),
            (code::DR_SUBSET_SELECTS_NO_ENDPOINTS, "DestinationRule default/reviews", Some("t.yaml:4"))
        );
        assert!(m.text.contains("Subset v3"), "{}", m.text);
    }

    #[test]
    fn dns_clusters_without_endpoints_are_not_built() {
        let mut s = (*reviews()).clone();
        s.discovery = Discovery::StrictDns;
        let yaml = dr(
            "reviews",
            "default",
            "reviews",
            "subsets: [{name: v3, labels: {version: v3}}, {name: v1, labels: {version: v1}}]",
        );
        let (cs, msgs) = run(&[Arc::new(s.clone())], &yaml, "default");
        assert!(cs.iter().all(|c| c.subset.as_deref() != Some("v3")), "{:?}", names(&cs));
        assert_eq!(cs.iter().filter(|c| c.subset.as_deref() == Some("v1")).count(), 2);
        assert!(cs.iter().all(|c| c.discovery == Discovery::StrictDns));
        assert_eq!(msgs.len(), 1);
        s.endpoints = crate::registry::endpoints_by_port(&s.ports, &[]);
        let (cs, _) = run(&[Arc::new(s)], &yaml, "default");
        assert!(cs.is_empty(), "{:?}", names(&cs));
    }

    #[test]
    fn dr_lookup_uses_client_then_service_namespace() {
        let svc = service(
            "ratings.prod.svc.cluster.local",
            "prod",
            vec![port("http", 80, Some(Protocol::Http))],
            vec![inst("10.1.0.1", &[])],
        );
        let yaml = [
            dr("svc-ns", "prod", "ratings", "subsets: [{name: prod}]"),
            dr("client-ns", "web", "ratings.prod.svc.cluster.local", "subsets: [{name: web}]"),
        ]
        .concat();
        let (cs, _) = run(std::slice::from_ref(&svc), &yaml, "web");
        assert_eq!(
            names(&cs),
            ["outbound|80|web|ratings.prod.svc.cluster.local", "outbound|80||ratings.prod.svc.cluster.local"]
        );
        assert_eq!(cs[1].destination_rules, [Str::from("web/client-ns")]);
        let (cs, _) = run(&[svc], &yaml, "api");
        assert_eq!(
            names(&cs),
            ["outbound|80|prod|ratings.prod.svc.cluster.local", "outbound|80||ratings.prod.svc.cluster.local"]
        );
    }

    #[test]
    fn protocol_from_port_and_http_settings() {
        let ports = vec![
            port("a", 1, Some(Protocol::Http)),
            port("b", 2, Some(Protocol::Http2)),
            port("c", 3, Some(Protocol::Grpc)),
            port("d", 4, Some(Protocol::Tcp)),
            port("e", 5, Some(Protocol::Tls)),
            port("f", 6, Some(Protocol::Https)),
            port("g", 7, Some(Protocol::Mongo)),
            port("h", 8, None),
            port("i", 9, Some(Protocol::Udp)),
        ];
        let svc = service("a.com", "default", ports, vec![inst("1.1.1.1", &[])]);
        let (cs, _) = run(std::slice::from_ref(&svc), "", "default");
        let protos: Vec<(u16, UpstreamProtocol)> = cs.iter().map(|c| (c.port, c.protocol)).collect();
        use UpstreamProtocol::*;
        assert_eq!(
            protos,
            [(1, Http1), (2, Http2), (3, Http2), (4, Tcp), (5, Tcp), (6, Tcp), (7, Tcp), (8, Auto)],
            "UDP ports get no cluster"
        );
        let yaml = dr(
            "a",
            "default",
            "a.com",
            "trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}, \
             portLevelSettings: [{port: {number: 2}, connectionPool: {http: {useClientProtocol: true}}}]}, \
             subsets: [{name: old, trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE}}}}]",
        );
        let (cs, _) = run(&[svc], &yaml, "default");
        let proto = |n: &str| find(&cs, n).protocol;
        assert_eq!(proto("outbound|1||a.com"), Http2, "UPGRADE on an HTTP port");
        assert_eq!(proto("outbound|1|old|a.com"), Http1, "the subset's own policy");
        assert_eq!(proto("outbound|2||a.com"), Auto, "useClientProtocol");
        assert_eq!(proto("outbound|4||a.com"), Tcp, "TCP ports are never upgraded");
        assert_eq!(proto("outbound|8||a.com"), Auto, "sniffed ports follow the client");
    }

    #[test]
    fn passthrough_load_balancer_means_original_dst() {
        let yaml = dr(
            "reviews",
            "default",
            "reviews",
            "subsets: [{name: pt, labels: {version: v9}, trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}}, {name: v1, labels: {version: v1}}]",
        );
        let (cs, msgs) = run(&[reviews()], &yaml, "default");
        assert!(msgs.is_empty(), "no IST0173 for a passthrough subset: {msgs:?}");
        assert_eq!(find(&cs, "outbound|9080|pt|reviews.default.svc.cluster.local").discovery, Discovery::OriginalDst);
        assert_eq!(find(&cs, "outbound|9080|v1|reviews.default.svc.cluster.local").discovery, Discovery::Static);
    }

    #[test]
    fn dynamic_dns_wildcards_get_no_subsets() {
        let mut s = (*service(
            "*.example.com",
            "default",
            vec![
                port("http", 80, Some(Protocol::Http)),
                port("tls", 443, Some(Protocol::Tls)),
                port("tcp", 9000, Some(Protocol::Tcp)),
            ],
            Vec::new(),
        ))
        .clone();
        s.discovery = Discovery::DynamicDns;
        let yaml = dr("ex", "default", "'*.example.com'", "subsets: [{name: v1, labels: {a: b}}]");
        let (cs, msgs) = run(&[Arc::new(s)], &yaml, "default");
        assert_eq!(names(&cs), ["outbound|443||*.example.com", "outbound|80||*.example.com"]);
        assert!(msgs.is_empty());
        assert_eq!(cs[0].destination_rules, [Str::from("default/ex")]);
    }

    #[test]
    fn policy_per_port_and_subset_and_shared_by_value() {
        let a = service(
            "a.com",
            "default",
            vec![port("http", 80, Some(Protocol::Http)), port("tcp", 81, Some(Protocol::Tcp))],
            vec![inst("1.1.1.1", &[("v", "1")])],
        );
        let b = service(
            "b.com",
            "default",
            vec![port("http", 80, Some(Protocol::Http))],
            vec![inst("1.1.1.2", &[("v", "1")])],
        );
        let policy = "trafficPolicy: {connectionPool: {tcp: {connectTimeout: 1s}}, portLevelSettings: [{port: {number: 81}, loadBalancer: {simple: RANDOM}}]}";
        let yaml = [
            dr(
                "a",
                "default",
                "a.com",
                &format!(
                    "{policy}, subsets: [{{name: v1, labels: {{v: '1'}}, trafficPolicy: {{outlierDetection: {{}}}}}}]"
                ),
            ),
            dr("b", "default", "b.com", policy),
        ]
        .concat();
        let (cs, _) = run(&[a, b], &yaml, "default");
        let p = |n: &str| find(&cs, n).policy.clone();
        assert_eq!(p("outbound|80||a.com").connection_pool.connect_timeout, Duration::from_secs(1));
        assert_eq!(
            p("outbound|81||a.com").connection_pool.connect_timeout,
            Duration::from_secs(10),
            "port level replaces"
        );
        assert_eq!(p("outbound|81||a.com").load_balancer.algorithm, LbAlgorithm::Random);
        let v1 = p("outbound|80|v1|a.com");
        assert!(v1.outlier_detection.is_some());
        assert_eq!(v1.connection_pool.connect_timeout, Duration::from_secs(1), "inherited from the DR");
        let v1_81 = p("outbound|81|v1|a.com");
        assert!(v1_81.outlier_detection.is_some() && v1_81.load_balancer.algorithm == LbAlgorithm::Random);
        assert!(
            Arc::ptr_eq(&p("outbound|80||a.com"), &p("outbound|80||b.com")),
            "equal policies of two DRs share one Arc"
        );
    }

    #[test]
    fn service_entry_sans_stand_in_for_missing_dr_sans() {
        let mut s =
            (*service("a.com", "default", vec![port("https", 443, Some(Protocol::Http))], vec![inst("1.1.1.1", &[])]))
                .clone();
        s.subject_alt_names = vec!["spiffe://a".into()];
        let yaml = dr("a", "default", "a.com", "trafficPolicy: {tls: {mode: SIMPLE}}");
        let (cs, _) = run(&[Arc::new(s)], &yaml, "default");
        let tls = cs[0].policy.tls.as_ref().expect("tls");
        assert_eq!(tls.subject_alt_names, [Str::from("spiffe://a")]);
    }

    #[test]
    fn order_is_a_plain_name_sort() {
        let ports =
            || vec![port("a", 80, Some(Protocol::Http)), port("b", 8080, Some(Protocol::Http)), port("c", 9, None)];
        let services: Vec<Arc<Service>> = ["b.com", "a.com", "a.co", "ab.com", "z.org"]
            .iter()
            .map(|h| service(h, "default", ports(), vec![inst("1.1.1.1", &[("v", "1")])]))
            .collect();
        let subsets = "subsets: [{name: v1, labels: {v: '1'}}, {name: v10}, {name: a}, {name: v1-x}]";
        let yaml = ["b.com", "a.com", "a.co", "z.org"].iter().map(|h| dr(h, "default", h, subsets)).collect::<String>();
        let (cs, _) = run(&services, &yaml, "default");
        let mut want: Vec<&str> = names(&cs);
        want.sort_unstable();
        assert_eq!(names(&cs), want);
        assert_eq!(cs.len(), 5 * 3 + 4 * 3 * 4);
        // Duplicate hostnames: the first service wins.
        let dup = service("a.com", "other", vec![port("x", 80, Some(Protocol::Tcp))], Vec::new());
        let (cs, _) = run(&[services[1].clone(), dup], "", "default");
        assert_eq!(names(&cs), ["outbound|8080||a.com", "outbound|80||a.com", "outbound|9||a.com"]);
        assert_eq!(cs[1].protocol, UpstreamProtocol::Http1);
    }

    /// 5,000 services x 2 ports x 3 subsets x 10 endpoints; run with
    /// `cargo test --release -p weir-compile --lib cluster::tests::large -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn large() {
        let mut services = Vec::new();
        let mut yaml = String::new();
        for i in 0..5000 {
            let ns = format!("ns-{}", i % 100);
            let host = format!("svc-{i}.{ns}.svc.cluster.local");
            let instances = (0..10)
                .map(|e| inst(&format!("172.16.{}.{e}", i % 250), &[("version", ["v1", "v2", "v3"][e % 3])]))
                .collect();
            services.push(service(
                &host,
                &ns,
                vec![port("http", 8080, Some(Protocol::Http)), port("grpc", 9090, Some(Protocol::Grpc))],
                instances,
            ));
            yaml.push_str(&dr(
                &format!("svc-{i}"),
                &ns,
                &host,
                "trafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: 100}}}, subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}, {name: v3, labels: {version: v3}}]",
            ));
        }
        let config = store(&yaml);
        let mesh = MeshConfig::default();
        let node = Node { namespace: "ns-0".into(), labels: BTreeMap::new(), ..Node::default() };
        let refs: Vec<&Arc<Service>> = services.iter().collect();
        let mut cs = Vec::new();
        for _ in 0..std::env::var("ITER").ok().and_then(|v| v.parse().ok()).unwrap_or(5) {
            drop(cs);
            let t = std::time::Instant::now();
            let mut messages = Messages::default();
            let drs = DrIndex::build(&config, &mesh, &node, &mut messages);
            let t_index = t.elapsed();
            cs = build(&refs, &drs, "ns-0", &mesh, &mut messages);
            let t_all = t.elapsed();
            eprintln!("index {t_index:?}, index + {} clusters {t_all:?}", cs.len());
        }
        assert_eq!(cs.len(), 40_000);
        let policies: HashSet<*const ClusterPolicy> = cs.iter().map(|c| Arc::as_ptr(&c.policy)).collect();
        assert_eq!(policies.len(), 1);
    }
}
