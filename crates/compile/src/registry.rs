//! The service registry: services and their endpoints, independent of where
//! they came from. ServiceEntries and WorkloadEntries feed it today;
//! Kubernetes Services and EndpointSlices will feed the same types.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use weir_api::protocol::Protocol;
use weir_api::types::{Address, Location as SeLocation, Resolution, ServiceEntry, SortedMap, WorkloadEntry};

use crate::host;
use crate::mesh::MeshConfig;
use crate::message::{Messages, code};
use crate::model::{Discovery, Endpoint, EndpointMeta, Str};
use crate::node::Node;
use crate::store::{Cfg, ConfigStore};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    MeshExternal,
    MeshInternal,
}

/// Who may see a service (resolved `exportTo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// `*`
    Public,
    /// `~`: nobody (only the service's own proxies).
    None,
    /// Exactly these namespaces (`.` already replaced by the object's namespace).
    Namespaces(Vec<Str>),
}

impl Visibility {
    /// Resolves an `exportTo` list written in `namespace`, falling back to `default` when empty.
    pub fn from_export_to(export_to: &[String], namespace: &str, default: &[String]) -> Visibility {
        let list = if export_to.is_empty() { default } else { export_to };
        if list.iter().any(|e| e == "*") {
            return Visibility::Public;
        }
        if list.iter().all(|e| e == "~") && !list.is_empty() {
            return Visibility::None;
        }
        let mut ns: Vec<Str> = list
            .iter()
            .filter(|e| *e != "~")
            .map(|e| Str::from(if e == "." { namespace } else { e.as_str() }))
            .collect();
        ns.sort();
        ns.dedup();
        Visibility::Namespaces(ns)
    }

    /// Whether an object with this visibility, living in `owner_namespace`, is visible from `namespace`.
    pub fn visible_to(&self, owner_namespace: &str, namespace: &str) -> bool {
        match self {
            Visibility::Public => true,
            Visibility::None => false,
            Visibility::Namespaces(list) => {
                list.iter().any(|n| &**n == namespace) || (list.is_empty() && owner_namespace == namespace)
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServicePort {
    pub name: Str,
    pub port: u16,
    /// `None`: not declared (Istio sniffs; weir treats the port as HTTP when serving it).
    pub protocol: Option<Protocol>,
    /// Endpoint port when the endpoint does not name one (ServiceEntry `targetPort`).
    pub target_port: Option<u16>,
}

/// One workload instance behind a service (a ServiceEntry endpoint, a
/// selected WorkloadEntry, later a Kubernetes endpoint), while the registry is
/// built: services keep their instances as one [`Endpoint`] list per port.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// IP, host name (DNS resolution) or `unix://` path.
    pub address: Address,
    /// Service port name -> endpoint port.
    pub ports: SortedMap<Str, u16>,
    /// LB weight (0 means "unset": treated as 1).
    pub weight: u32,
    /// Labels, locality, network, identity (shared with the snapshot's endpoints).
    pub meta: Arc<EndpointMeta>,
}

impl Instance {
    /// Whether all of `selector`'s key/values are on this instance.
    pub fn has_labels(&self, selector: &[(Str, Str)]) -> bool {
        self.meta.has_labels(selector)
    }

    /// This instance as an endpoint of `port`: its own port for that port name, else
    /// `targetPort`, else the service port; weight 0 ("unset") becomes 1.
    pub fn endpoint(&self, port: &ServicePort) -> Endpoint {
        Endpoint {
            address: self.address.clone(),
            port: self.ports.get(&port.name).copied().or(port.target_port).unwrap_or(port.port),
            weight: self.weight.max(1),
            meta: self.meta.clone(),
        }
    }
}

/// The endpoint list of each of `ports` (same order) for `instances`.
pub fn endpoints_by_port(ports: &[ServicePort], instances: &[Instance]) -> Box<[Arc<[Endpoint]>]> {
    ports.iter().map(|p| instances.iter().map(|i| i.endpoint(p)).collect()).collect()
}

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// Lower-case FQDN (or wildcard) host.
    pub hostname: Str,
    /// Namespace of the object that declared it.
    pub namespace: Str,
    /// `ServiceEntry ns/name` (or `Service ns/name` later).
    pub origin: Str,
    /// File and line of the declaring object (see [`Service::origin_location`]); the file name is
    /// shared with the object, not copied per service.
    pub origin_file: Str,
    pub origin_line: u32,
    /// VIPs / CIDRs.
    pub addresses: Vec<Str>,
    pub ports: Vec<ServicePort>,
    pub discovery: Discovery,
    pub location: Location,
    pub visibility: Visibility,
    /// Kubernetes-style `name.ns.svc.<domain>` host: gets short alternate domains.
    pub kubernetes_style: bool,
    pub subject_alt_names: Vec<Str>,
    /// The endpoints of each of `ports` (same order; every list holds the same instances in the
    /// same order). The clusters of a port share its list, so the registry and the snapshots
    /// built from it keep each endpoint once (build with [`endpoints_by_port`]).
    pub endpoints: Box<[Arc<[Endpoint]>]>,
}

impl Service {
    /// `file:line` of the declaring object.
    pub fn origin_location(&self) -> Str {
        format!("{}:{}", self.origin_file, self.origin_line).into()
    }

    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }

    /// The service's instances (as the endpoints of its first port: addresses, weights and
    /// metadata are the same in every port's list); empty for a service without ports.
    pub fn instances(&self) -> &[Endpoint] {
        self.endpoints.first().map_or(&[], |l| &l[..])
    }
}

/// All services, in registry order (the declaring objects' order).
///
/// Build it with [`Registry::from_config`] or [`Registry::new`] and leave
/// `services` alone afterwards: the hostname index is derived from it.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub services: Vec<Arc<Service>>,
    /// Indices into `services`, sorted by hostname and, within a hostname, in
    /// registry order. Route building looks up every destination host;
    /// scanning `services` made that quadratic in the number of services.
    /// Keeping each host's services in registry order preserves "the first
    /// visible one wins". (A sorted list: 4 bytes per service, against about
    /// 100 for a hash map of lists.)
    by_host: Vec<u32>,
}

impl Registry {
    /// Builds the registry from ServiceEntries (inline endpoints, or
    /// WorkloadEntries/WorkloadGroups chosen by `workloadSelector` in the same
    /// namespace). Hosts are resolved to FQDN with `node.cluster_domain`.
    ///
    /// One [`Service`] per (ServiceEntry, host), in the store's order. Like
    /// Istio's endpoint index, the instances of services that share a
    /// (namespace, hostname) are merged: each such service carries the
    /// instances of all of them (oldest ServiceEntry first).
    pub fn from_config(config: &ConfigStore, mesh: &MeshConfig, node: &Node, messages: &mut Messages) -> Registry {
        let domain = node.cluster_domain.as_str();
        let mut drafts: Vec<Draft> = Vec::new();
        for se in &config.service_entries {
            drafts.extend(convert_service_entry(se, config, mesh, domain));
        }
        conflicting_protocols(&drafts, messages);
        addresses_required(&drafts, messages);
        Registry::new(merge_instances(drafts))
    }

    /// A registry of `services`, in the given (registry) order.
    pub fn new(services: Vec<Arc<Service>>) -> Registry {
        let mut by_host: Vec<u32> = (0..services.len()).filter_map(|i| u32::try_from(i).ok()).collect();
        // Stable: services of one hostname stay in registry order.
        by_host.sort_by(|a, b| services[*a as usize].hostname.cmp(&services[*b as usize].hostname));
        Registry { services, by_host }
    }

    /// Services visible from `namespace` (exportTo), in registry order.
    pub fn visible_from<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Arc<Service>> + 'a {
        self.services.iter().filter(move |s| s.visibility.visible_to(&s.namespace, namespace))
    }

    /// The first service with exactly `hostname` visible from `namespace`.
    pub fn lookup(&self, hostname: &str, namespace: &str) -> Option<&Arc<Service>> {
        let host = |i: &u32| &*self.services[*i as usize].hostname;
        let start = self.by_host.partition_point(|i| host(i) < hostname);
        self.by_host[start..]
            .iter()
            .take_while(|i| host(i) == hostname)
            .map(|i| &self.services[*i as usize])
            .find(|s| s.visibility.visible_to(&s.namespace, namespace))
    }
}

/// A service before the instances of services sharing its (namespace, hostname) are merged in.
struct Draft {
    cfg: Arc<Cfg<ServiceEntry>>,
    /// Everything but `instances`.
    service: Service,
    /// The instances this ServiceEntry itself contributes.
    own: Vec<Instance>,
}

/// `convertServices` + `convertServiceEntryToInstances`: one draft per (distinct) host.
fn convert_service_entry(
    se: &Arc<Cfg<ServiceEntry>>,
    config: &ConfigStore,
    mesh: &MeshConfig,
    domain: &str,
) -> Vec<Draft> {
    let spec = &se.spec;
    let namespace = &*se.namespace;
    let ports: Vec<ServicePort> = spec.ports.iter().filter_map(convert_port).collect();
    let discovery = match spec.resolution {
        Resolution::None => Discovery::OriginalDst,
        Resolution::Static => Discovery::Static,
        Resolution::Dns => Discovery::StrictDns,
        Resolution::DnsRoundRobin => Discovery::LogicalDns,
        Resolution::DynamicDns => Discovery::DynamicDns,
    };
    let dns = matches!(spec.resolution, Resolution::Dns | Resolution::DnsRoundRobin);
    let location = match spec.location {
        SeLocation::MeshExternal => Location::MeshExternal,
        SeLocation::MeshInternal => Location::MeshInternal,
    };
    let visibility = Visibility::from_export_to(&spec.export_to, namespace, &mesh.default_service_export_to);
    let addresses: Vec<Str> = spec.addresses.iter().filter_map(|a| normalize_address(a)).collect();
    let subject_alt_names: Vec<Str> = spec.subject_alt_names.iter().map(|s| Str::from(s.as_str())).collect();
    // A selector takes the endpoints' place (validation forbids setting both).
    let mut shared: Vec<Instance> = match &spec.workload_selector {
        Some(sel) => select_workload_entries(config, namespace, &sel.labels, dns, mesh),
        None => spec.endpoints.iter().filter_map(|we| workload_instance(we, None, namespace, &ports, mesh)).collect(),
    };
    // Endpoints usually name the same ports: one map for all of them.
    SortedMap::share_consecutive(&mut shared, |i| &mut i.ports);
    // DNS without endpoints: the host itself is resolved.
    let host_is_endpoint = spec.endpoints.is_empty() && spec.workload_selector.is_none() && dns;
    let svc_suffix = format!(".svc.{domain}");
    let origin: Str = format!("ServiceEntry {}", se.key()).into();

    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(spec.hosts.len());
    for (i, h) in spec.hosts.iter().enumerate() {
        let hostname = host::resolve_short_name(h, namespace, domain);
        if !seen.insert(hostname.clone()) {
            continue;
        }
        let own = if host_is_endpoint {
            vec![Instance {
                address: Address::from(&*hostname),
                ports: SortedMap::new(),
                weight: 0,
                meta: EndpointMeta::none(),
            }]
        } else if i + 1 == spec.hosts.len() {
            std::mem::take(&mut shared)
        } else {
            shared.clone()
        };
        let service = Service {
            kubernetes_style: !domain.is_empty() && hostname.ends_with(&svc_suffix),
            hostname,
            namespace: se.namespace.clone(),
            origin: origin.clone(),
            origin_file: se.origin.file.clone(),
            origin_line: se.origin.line,
            addresses: addresses.clone(),
            ports: ports.clone(),
            discovery,
            location,
            visibility: visibility.clone(),
            subject_alt_names: subject_alt_names.clone(),
            endpoints: Box::default(),
        };
        out.push(Draft { cfg: se.clone(), service, own });
    }
    out
}

/// Port number and protocol: the `protocol` field, else the port name's prefix (`http-web`), else unset.
fn convert_port(p: &weir_api::types::ServicePort) -> Option<ServicePort> {
    let port = u16::try_from(p.number).ok().filter(|n| *n != 0)?;
    Some(ServicePort {
        name: p.name.as_str().into(),
        port,
        protocol: Protocol::parse(&p.protocol).or_else(|| Protocol::from_port_name(&p.name)),
        target_port: u16::try_from(p.target_port).ok().filter(|n| *n != 0),
    })
}

/// An IP stays as written; a CIDR covering one address becomes that address
/// (Istio drops the `/32`); other CIDRs stay; anything else is dropped.
fn normalize_address(a: &str) -> Option<Str> {
    if host::is_ip(a) {
        return Some(a.into());
    }
    let (ip, bits) = a.split_once('/')?;
    let ip: std::net::IpAddr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match bits {
        b if b == max => Some(ip.to_string().into()),
        b if b < max => Some(a.into()),
        _ => None,
    }
}

const LOCALITY_LABEL: &str = "topology.istio.io/locality";
const LEGACY_LOCALITY_LABEL: &str = "istio-locality";
const NETWORK_LABEL: &str = "topology.istio.io/network";
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const SUBZONE_LABEL: &str = "topology.istio.io/subzone";

/// `convertWorkloadEntryToWorkloadInstance`: one workload as an instance.
/// `meta_labels` (a WorkloadEntry object's `metadata.labels`) win over the
/// spec's labels. Entries without an address (reachable only through a
/// network gateway) are left out: weir has no cross-network routing.
fn workload_instance(
    we: &WorkloadEntry,
    meta_labels: Option<&BTreeMap<String, String>>,
    namespace: &str,
    service_ports: &[ServicePort],
    mesh: &MeshConfig,
) -> Option<Instance> {
    if we.address.is_empty() {
        return None;
    }
    let mut labels = we.labels().clone();
    if let Some(meta) = meta_labels {
        labels.extend(meta.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let locality = if !we.locality().is_empty() {
        Some(we.locality().to_string())
    } else {
        labels
            .get(LOCALITY_LABEL)
            .or_else(|| labels.get(LEGACY_LOCALITY_LABEL))
            .filter(|l| !l.is_empty())
            .map(|l| if l.contains('/') { l.clone() } else { l.replace('.', "/") })
    };
    // `AugmentLabels`: topology labels subsets can select on.
    if let Some(loc) = &locality {
        let mut parts = loc.splitn(3, '/');
        for key in [REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL] {
            match parts.next() {
                Some(v) if !v.is_empty() => {
                    labels.insert(key.to_string(), v.to_string());
                }
                _ => {}
            }
        }
    }
    if !we.network().is_empty() && labels.get(NETWORK_LABEL).is_none_or(|v| v.is_empty()) {
        labels.insert(NETWORK_LABEL.to_string(), we.network().to_string());
    }
    // Port names shared with the service's ports where they match (no string per endpoint).
    let name = |n: &str| service_ports.iter().find(|p| &*p.name == n).map_or_else(|| Str::from(n), |p| p.name.clone());
    let ports =
        we.ports.iter().filter_map(|(n, p)| u16::try_from(*p).ok().filter(|p| *p != 0).map(|p| (name(n), p))).collect();
    let meta = EndpointMeta {
        labels: labels.into_iter().map(|(k, v)| (Str::from(k), Str::from(v))).collect(),
        locality: locality.map(Str::from),
        network: (!we.network().is_empty()).then(|| Str::from(we.network())),
        service_account: (!we.service_account().is_empty())
            .then(|| format!("spiffe://{}/ns/{namespace}/sa/{}", mesh.trust_domain, we.service_account()).into()),
    };
    Some(Instance { address: we.address.clone(), ports, weight: we.weight, meta: EndpointMeta::shared(meta) })
}

/// Whether a workload address can only serve DNS-resolved ServiceEntries (a host name or `unix://` path).
fn dns_only(address: &str) -> bool {
    address.starts_with("unix://") || (!address.is_empty() && !host::is_ip(address))
}

/// The WorkloadEntries in `namespace` whose labels include `selector`, by
/// name (Istio sorts the selected workloads by kind, namespace, name).
/// WorkloadGroups are templates, not workloads, and are never selected.
fn select_workload_entries(
    config: &ConfigStore,
    namespace: &str,
    selector: &BTreeMap<String, String>,
    dns: bool,
    mesh: &MeshConfig,
) -> Vec<Instance> {
    let selector: Vec<(Str, Str)> =
        selector.iter().map(|(k, v)| (Str::from(k.as_str()), Str::from(v.as_str()))).collect();
    let mut selected: Vec<(&Str, Instance)> = config
        .workload_entries
        .iter()
        .filter(|we| &*we.namespace == namespace)
        .filter(|we| dns || !dns_only(&we.spec.address))
        .filter_map(|we| workload_instance(&we.spec, Some(&we.labels), namespace, &[], mesh).map(|i| (&we.name, i)))
        .filter(|(_, i)| i.has_labels(&selector))
        .collect();
    selected.sort_by(|a, b| a.0.cmp(b.0));
    selected.into_iter().map(|(_, i)| i).collect()
}

/// Gives every service the instances of all services with its (namespace,
/// hostname), oldest first (`mergeServicesInstancesByNamespaceHost`). Only
/// one DNS_ROUND_ROBIN endpoint is kept per port. Instances from another
/// ServiceEntry get explicit endpoint ports for this service's port names
/// (matched by name, else by number, as Istio's endpoint index does).
fn merge_instances(drafts: Vec<Draft>) -> Vec<Arc<Service>> {
    let mut groups: BTreeMap<(Str, Str), Vec<usize>> = BTreeMap::new();
    for (i, d) in drafts.iter().enumerate() {
        groups.entry((d.service.namespace.clone(), d.service.hostname.clone())).or_default().push(i);
    }
    let mut drafts = drafts;
    for members in groups.values() {
        // (source draft, index of the instance in its `own`) in merge order.
        let mut kept: Vec<(usize, usize)> = Vec::new();
        let mut covered: BTreeSet<u16> = BTreeSet::new();
        for &m in members {
            let d = &drafts[m];
            let round_robin = d.service.discovery == Discovery::LogicalDns;
            for i in 0..d.own.len() {
                if round_robin
                    && !d.service.ports.is_empty()
                    && d.service.ports.iter().all(|p| covered.contains(&p.port))
                {
                    continue;
                }
                covered.extend(d.service.ports.iter().map(|p| p.port));
                kept.push((m, i));
            }
        }
        // Each group's instances become endpoint lists at once and are freed: the next group's
        // lists then reuse their memory (converting them all at the end left a hole of 48 bytes
        // per endpoint between the lists).
        if let [only] = members[..] {
            // The usual case, one declaration: nothing to copy or translate.
            let d = &mut drafts[only];
            let own = std::mem::take(&mut d.own);
            let list: Vec<Instance> =
                if kept.len() == own.len() { own } else { kept.iter().map(|&(_, i)| own[i].clone()).collect() };
            d.service.endpoints = endpoints_by_port(&d.service.ports, &list);
            continue;
        }
        let lists: Vec<Box<[Arc<[Endpoint]>]>> = members
            .iter()
            .map(|&r| {
                let to = &drafts[r].service.ports;
                let list: Vec<Instance> = kept
                    .iter()
                    .map(|&(src, i)| {
                        let (inst, from) = (&drafts[src].own[i], &drafts[src].service.ports);
                        if src == r || from == to { inst.clone() } else { translate_ports(inst, from, to) }
                    })
                    .collect();
                endpoints_by_port(to, &list)
            })
            .collect();
        for (&r, endpoints) in members.iter().zip(lists) {
            drafts[r].service.endpoints = endpoints;
            drafts[r].own = Vec::new();
        }
    }
    // Not `collect()`: it would reuse the drafts' allocation (27 times the size of the result).
    let mut services = Vec::with_capacity(drafts.len());
    services.extend(drafts.into_iter().map(|d| Arc::new(d.service)));
    services
}

/// `inst` (declared against ports `from`) with explicit endpoint ports for the port names of `to`.
fn translate_ports(inst: &Instance, from: &[ServicePort], to: &[ServicePort]) -> Instance {
    let mut ports = SortedMap::new();
    for p in to {
        let source = from
            .iter()
            .find(|q| q.name == p.name)
            .or_else(|| from.iter().find(|q| q.port == p.port && !to.iter().any(|t| t.name == q.name)));
        if let Some(q) = source {
            let endpoint = inst.ports.get(&q.name).copied().or(q.target_port).unwrap_or(q.port);
            ports.insert(p.name.clone(), endpoint);
        }
    }
    Instance { ports, ..inst.clone() }
}

/// The `exportTo` scopes the analyzer compares within: `*` (also for an empty list) or the namespaces.
fn export_scopes(export_to: &[String], namespace: &str) -> BTreeSet<Str> {
    if export_to.is_empty() || export_to.iter().any(|e| e == "*") {
        return BTreeSet::from([Str::from("*")]);
    }
    export_to.iter().map(|e| Str::from(if e == "." { namespace } else { e.as_str() })).collect()
}

fn protocol_label(p: Option<Protocol>) -> &'static str {
    p.map_or("UNSET", |p| p.as_str())
}

/// IST0177 (`ConflictingServiceEntryProtocolAnalyzer`): ServiceEntries
/// visible in one scope declare the same host and port with different
/// protocols. Each ServiceEntry is reported once. weir compares the
/// effective protocols (the port-name prefix counts), `UNSET` for none.
fn conflicting_protocols(drafts: &[Draft], messages: &mut Messages) {
    type Key = (Str, Str, u16);
    let mut index: BTreeMap<Key, Vec<(&'static str, usize)>> = BTreeMap::new();
    for (i, d) in drafts.iter().enumerate() {
        for scope in export_scopes(&d.cfg.spec.export_to, &d.cfg.namespace) {
            for p in &d.service.ports {
                index
                    .entry((scope.clone(), d.service.hostname.clone(), p.port))
                    .or_default()
                    .push((protocol_label(p.protocol), i));
            }
        }
    }
    let mut reported: BTreeSet<String> = BTreeSet::new();
    for ((scope, host, port), entries) in &index {
        let mut all = entries.clone();
        if &**scope != "*"
            && let Some(public) = index.get(&(Str::from("*"), host.clone(), *port))
        {
            all.extend(public.iter().copied());
        }
        let protocols: BTreeSet<&str> = all.iter().map(|(p, _)| *p).collect();
        if protocols.len() < 2 {
            continue;
        }
        let names: BTreeSet<String> = all.iter().map(|(_, i)| drafts[*i].cfg.key()).collect();
        let text = format!(
            "Multiple ServiceEntries ({}) define the same host {:?} and port {} with conflicting protocols ({}).",
            names.into_iter().collect::<Vec<_>>().join(", "),
            &**host,
            port,
            protocols.into_iter().collect::<Vec<_>>().join(", "),
        );
        for (_, i) in &all {
            let cfg = &drafts[*i].cfg;
            if reported.insert(cfg.key()) {
                messages.warn(
                    code::CONFLICTING_SERVICE_ENTRY_PROTOCOL,
                    format!("ServiceEntry {}", cfg.key()),
                    Some(cfg.origin_at("metadata.name")),
                    text.clone(),
                );
            }
        }
    }
}

/// IST0134, narrowed to the case that breaks traffic in weir: opaque TCP
/// ports (TCP, Mongo, Redis, MySQL) of services without addresses are
/// matched by port alone, so two such hosts on one port cannot both be
/// served. (Validation already warns about every address-less TCP port.)
fn addresses_required(drafts: &[Draft], messages: &mut Messages) {
    let mut by_port: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, d) in drafts.iter().enumerate() {
        if !d.service.addresses.is_empty() {
            continue;
        }
        for p in &d.service.ports {
            if p.protocol.is_some_and(|p| p.is_tcp() && !p.is_tls()) {
                by_port.entry(p.port).or_default().push(i);
            }
        }
    }
    for (port, users) in by_port {
        let hosts: BTreeSet<&str> = users.iter().map(|i| &*drafts[*i].service.hostname).collect();
        if hosts.len() < 2 {
            continue;
        }
        let listed = hosts.into_iter().collect::<Vec<_>>().join(", ");
        for i in users {
            let d = &drafts[i];
            let index = d.cfg.spec.ports.iter().position(|p| p.number == u32::from(port)).unwrap_or(0);
            messages.warn(
                code::SERVICE_ENTRY_ADDRESSES_REQUIRED,
                format!("ServiceEntry {}", d.cfg.key()),
                Some(d.cfg.origin_at(&format!("spec.ports[{index}]"))),
                format!(
                    "ServiceEntry addresses are required for this protocol: port {port} is declared without addresses \
                     by several hosts ({listed}) and is matched by port alone."
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn store(yaml: &str) -> ConfigStore {
        crate::store::from_yaml(yaml, "test.yaml")
    }

    fn build(yaml: &str) -> (Registry, Vec<Message>) {
        build_with(yaml, &MeshConfig::default())
    }

    fn build_with(yaml: &str, mesh: &MeshConfig) -> (Registry, Vec<Message>) {
        let mut messages = Messages::default();
        let r = Registry::from_config(&store(yaml), mesh, &Node::default(), &mut messages);
        (r, messages.into_vec())
    }

    fn se(name: &str, ns: &str, spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}---\n"
        )
    }

    fn we(name: &str, ns: &str, meta_labels: &str, spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{meta_labels}}}}}\nspec:\n{spec}---\n"
        )
    }

    fn addrs(s: &Service) -> Vec<&str> {
        s.instances().iter().map(|i| &*i.address).collect()
    }

    #[test]
    fn one_service_per_host_with_resolved_names() {
        let (r, msgs) = build(&se(
            "ext",
            "prod",
            "  hosts: [API.example.com, reviews, '*.wild.com']\n  ports: [{number: 443, name: https, protocol: TLS}]\n  resolution: NONE\n",
        ));
        assert!(msgs.is_empty(), "{msgs:?}");
        let hosts: Vec<&str> = r.services.iter().map(|s| &*s.hostname).collect();
        assert_eq!(hosts, vec!["api.example.com", "reviews.prod.svc.cluster.local", "*.wild.com"]);
        let s = &r.services[1];
        assert!(s.kubernetes_style);
        assert!(!r.services[0].kubernetes_style);
        assert_eq!(&*s.namespace, "prod");
        assert_eq!(&*s.origin, "ServiceEntry prod/ext");
        assert_eq!(&*s.origin_location(), "test.yaml:1");
        assert_eq!(s.discovery, Discovery::OriginalDst);
        assert_eq!(s.location, Location::MeshExternal);
        assert_eq!(s.visibility, Visibility::Public);
        assert!(s.instances().is_empty());
    }

    #[test]
    fn ports_protocol_from_field_then_name() {
        let (r, _) = build(&se(
            "p",
            "default",
            "  hosts: [a.com]\n  addresses: [10.0.0.1]\n  ports:\n  - {number: 80, name: web, protocol: http}\n  - {number: 81, name: grpc-x}\n  - {number: 82, name: other}\n  - {number: 83, name: tcp-db, protocol: MONGO, targetPort: 9083}\n  resolution: STATIC\n",
        ));
        let ports = &r.services[0].ports;
        assert_eq!(ports.len(), 4);
        assert_eq!((ports[0].port, ports[0].protocol, ports[0].target_port), (80, Some(Protocol::Http), None));
        assert_eq!(ports[1].protocol, Some(Protocol::Grpc));
        assert_eq!(ports[2].protocol, None);
        assert_eq!((ports[3].protocol, ports[3].target_port), (Some(Protocol::Mongo), Some(9083)));
        assert_eq!(&*ports[3].name, "tcp-db");
    }

    #[test]
    fn resolution_and_location_map_to_discovery() {
        for (res, d) in [
            ("NONE", Discovery::OriginalDst),
            ("STATIC", Discovery::Static),
            ("DNS", Discovery::StrictDns),
            ("DNS_ROUND_ROBIN", Discovery::LogicalDns),
            ("DYNAMIC_DNS", Discovery::DynamicDns),
        ] {
            let (r, _) = build(&se(
                "x",
                "default",
                &format!(
                    "  hosts: ['*.a.com']\n  ports: [{{number: 80, name: http}}]\n  resolution: {res}\n  location: MESH_INTERNAL\n"
                ),
            ));
            assert_eq!(r.services[0].discovery, d, "{res}");
            assert_eq!(r.services[0].location, Location::MeshInternal);
        }
    }

    #[test]
    fn addresses_are_normalized() {
        let (r, _) = build(&se(
            "x",
            "default",
            "  hosts: [a.com]\n  addresses: [10.0.0.1, 10.1.0.0/16, 10.2.0.9/32, '2001:db8::/128', bogus]\n  ports: [{number: 80, name: http}]\n",
        ));
        let a: Vec<&str> = r.services[0].addresses.iter().map(|s| &**s).collect();
        assert_eq!(a, vec!["10.0.0.1", "10.1.0.0/16", "10.2.0.9", "2001:db8::"]);
    }

    #[test]
    fn visibility_from_export_to_and_mesh_default() {
        let yaml = se("a", "ns1", "  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n  exportTo: ['.', ns2]\n")
            + &se("b", "ns1", "  hosts: [b.com]\n  ports: [{number: 80, name: http}]\n  exportTo: ['~']\n")
            + &se("c", "ns1", "  hosts: [c.com]\n  ports: [{number: 80, name: http}]\n");
        let mesh = MeshConfig { default_service_export_to: vec![".".into()], ..MeshConfig::default() };
        let (r, _) = build_with(&yaml, &mesh);
        assert_eq!(r.services[0].visibility, Visibility::Namespaces(vec!["ns1".into(), "ns2".into()]));
        assert_eq!(r.services[1].visibility, Visibility::None);
        assert_eq!(r.services[2].visibility, Visibility::Namespaces(vec!["ns1".into()]));
        let from_ns2: Vec<&str> = r.visible_from("ns2").map(|s| &*s.hostname).collect();
        assert_eq!(from_ns2, vec!["a.com"]);
        assert!(r.lookup("c.com", "ns1").is_some());
        assert!(r.lookup("c.com", "ns2").is_none());
    }

    #[test]
    fn inline_endpoints_become_instances() {
        let (r, _) = build(&se(
            "x",
            "shop",
            "  hosts: [a.com]\n  ports: [{number: 80, name: http, targetPort: 8080}, {number: 90, name: admin}]\n  resolution: STATIC\n  endpoints:\n  - {address: 10.0.0.1, ports: {http: 9080}, labels: {v: '1'}, locality: us/east/a, network: n1, weight: 3, serviceAccount: sa1}\n  - {address: 10.0.0.2}\n",
        ));
        let s = &r.services[0];
        assert_eq!(addrs(s), vec!["10.0.0.1", "10.0.0.2"]);
        let (a, b) = (&s.instances()[0], &s.instances()[1]);
        assert_eq!(a.weight, 3);
        assert_eq!(b.weight, 1, "0 (unset) means 1");
        assert_eq!(a.meta.locality.as_deref(), Some("us/east/a"));
        assert_eq!(a.meta.network.as_deref(), Some("n1"));
        assert_eq!(a.meta.service_account.as_deref(), Some("spiffe://cluster.local/ns/shop/sa/sa1"));
        assert_eq!(b.meta.service_account, None);
        assert!(a.meta.has_labels(&[("v".into(), "1".into())]));
        assert!(a.meta.has_labels(&[(ZONE_LABEL.into(), "east".into()), (NETWORK_LABEL.into(), "n1".into())]));
        // Endpoint port precedence: endpoint map > targetPort > port.
        assert_eq!(s.endpoints[0][0].port, 9080);
        assert_eq!(s.endpoints[0][1].port, 8080);
        assert_eq!(s.endpoints[1][1].port, 90);
        assert_eq!(s.endpoints[1][0].port, 90);
        assert!(Arc::ptr_eq(&s.endpoints[0][0].meta, &s.endpoints[1][0].meta), "ports share an instance's meta");
    }

    #[test]
    fn locality_falls_back_to_labels() {
        let (r, _) = build(&se(
            "x",
            "default",
            "  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n  resolution: STATIC\n  endpoints:\n  - {address: 10.0.0.1, labels: {istio-locality: r1.z1}}\n  - {address: 10.0.0.2, labels: {topology.istio.io/locality: r2/z2/s2}}\n",
        ));
        let loc: Vec<Option<&str>> = r.services[0].instances().iter().map(|i| i.meta.locality.as_deref()).collect();
        assert_eq!(loc, vec![Some("r1/z1"), Some("r2/z2/s2")]);
        assert!(r.services[0].instances()[1].meta.has_labels(&[(SUBZONE_LABEL.into(), "s2".into())]));
    }

    #[test]
    fn dns_without_endpoints_resolves_the_host() {
        let yaml = se("d", "default", "  hosts: [a.com, b]\n  ports: [{number: 80, name: http}]\n  resolution: DNS\n")
            + &se("s", "default", "  hosts: [c.com]\n  ports: [{number: 80, name: http}]\n  resolution: STATIC\n")
            + &se("n", "default", "  hosts: [d.com]\n  ports: [{number: 80, name: http}]\n  resolution: NONE\n");
        let (r, _) = build(&yaml);
        assert_eq!(addrs(&r.services[0]), vec!["a.com"]);
        assert_eq!(addrs(&r.services[1]), vec!["b.default.svc.cluster.local"]);
        assert!(r.services[2].instances().is_empty());
        assert!(r.services[3].instances().is_empty());
        let i = &r.services[0].instances()[0];
        assert_eq!((i.port, i.weight, i.meta.labels.len()), (80, 1, 0));
    }

    #[test]
    fn workload_selector_picks_workload_entries_in_namespace() {
        let yaml = se(
            "sel",
            "vm",
            "  hosts: [svc.vm.internal]\n  ports: [{number: 80, name: http}]\n  resolution: STATIC\n  location: MESH_INTERNAL\n  workloadSelector: {labels: {app: db}}\n",
        ) + &we("z-b", "vm", "", "  address: 10.0.0.2\n  labels: {app: db}\n")
            + &we("a-a", "vm", "app: db", "  address: 10.0.0.1\n")
            + &we("other-label", "vm", "", "  address: 10.0.0.3\n  labels: {app: web}\n")
            + &we("overridden", "vm", "app: web", "  address: 10.0.0.4\n  labels: {app: db}\n")
            + &we("other-ns", "default", "", "  address: 10.0.0.5\n  labels: {app: db}\n")
            + &we("by-name", "vm", "", "  address: db.example.com\n  labels: {app: db}\n")
            + "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: grp, namespace: vm}\nspec:\n  metadata: {labels: {app: db}}\n  template: {serviceAccount: sa}\n";
        let (r, _) = build(&yaml);
        // Ordered by WorkloadEntry name; hostname addresses only for DNS services; groups are not instances.
        assert_eq!(addrs(&r.services[0]), vec!["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn dns_selector_accepts_hostname_workloads() {
        let yaml = se(
            "sel",
            "vm",
            "  hosts: [svc.vm.internal]\n  ports: [{number: 80, name: http}]\n  resolution: DNS\n  workloadSelector: {labels: {app: db}}\n",
        ) + &we("a", "vm", "", "  address: db.example.com\n  labels: {app: db}\n  ports: {http: 8080}\n")
            + &we("b", "vm", "", "  address: unix:///var/run/db.sock\n  labels: {app: db}\n");
        let (r, _) = build(&yaml);
        let s = &r.services[0];
        assert_eq!(addrs(s), vec!["db.example.com", "unix:///var/run/db.sock"]);
        assert_eq!(s.endpoints[0][0].port, 8080);
    }

    #[test]
    fn empty_selector_selects_whole_namespace() {
        let yaml = se(
            "sel",
            "vm",
            "  hosts: [svc.vm.internal]\n  ports: [{number: 80, name: http}]\n  resolution: STATIC\n  workloadSelector: {}\n",
        ) + &we("a", "vm", "", "  address: 10.0.0.1\n")
            + &we("b", "vm", "", "  address: ''\n  network: remote\n");
        let (r, _) = build(&yaml);
        // The address-less (network gateway) entry is left out.
        assert_eq!(addrs(&r.services[0]), vec!["10.0.0.1"]);
    }

    #[test]
    fn same_host_services_share_instances() {
        let yaml = se(
            "first",
            "default",
            "  hosts: [a.com]\n  ports: [{number: 80, name: http, targetPort: 8080}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.1}]\n",
        ) + &se(
            "second",
            "default",
            "  hosts: [a.com]\n  ports: [{number: 80, name: web}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.2, ports: {web: 9090}}]\n",
        ) + &se(
            "elsewhere",
            "other",
            "  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.3}]\n",
        );
        let (r, _) = build(&yaml);
        assert_eq!(r.services.len(), 3);
        // Store order: no creation time, so by name (`elsewhere`, `first`, `second`).
        let (first, second) = (&r.services[1], &r.services[2]);
        assert_eq!(addrs(first), vec!["10.0.0.1", "10.0.0.2"]);
        assert_eq!(addrs(second), vec!["10.0.0.1", "10.0.0.2"]);
        // Ports are translated to the receiving service's names (matched by number here).
        assert_eq!(first.endpoints[0][1].port, 9090);
        assert_eq!(second.endpoints[0][0].port, 8080);
        assert_eq!(first.endpoints[0][0].port, 8080);
        // Another namespace is another service.
        assert_eq!(addrs(&r.services[0]), vec!["10.0.0.3"]);
        assert_eq!(&*r.lookup("a.com", "default").map(|s| s.origin.clone()).unwrap(), "ServiceEntry other/elsewhere");
    }

    #[test]
    fn round_robin_keeps_one_endpoint_per_port() {
        let yaml = se(
            "a",
            "default",
            "  hosts: [rr.com]\n  ports: [{number: 80, name: http}]\n  resolution: DNS_ROUND_ROBIN\n  endpoints: [{address: one.rr.com}]\n",
        ) + &se(
            "b",
            "default",
            "  hosts: [rr.com]\n  ports: [{number: 80, name: http}]\n  resolution: DNS_ROUND_ROBIN\n  endpoints: [{address: two.rr.com}]\n",
        );
        let (r, _) = build(&yaml);
        assert_eq!(addrs(&r.services[0]), vec!["one.rr.com"]);
        assert_eq!(addrs(&r.services[1]), vec!["one.rr.com"]);
    }

    #[test]
    fn order_is_the_store_order() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: new, namespace: default, creationTimestamp: '2024-02-01T00:00:00Z'}\nspec: {hosts: [new.com], ports: [{number: 80, name: http}]}\n---\n".to_string()
            + "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: old, namespace: default, creationTimestamp: '2024-01-01T00:00:00Z'}\nspec: {hosts: [old2.com, old1.com], ports: [{number: 80, name: http}]}\n";
        let (r, _) = build(&yaml);
        let hosts: Vec<&str> = r.services.iter().map(|s| &*s.hostname).collect();
        assert_eq!(hosts, vec!["old2.com", "old1.com", "new.com"]);
    }

    #[test]
    fn conflicting_protocols_are_reported_once_per_service_entry() {
        let yaml = se(
            "se-https",
            "default",
            "  hosts: [example.com]\n  ports: [{number: 13835, name: https-13835, protocol: HTTPS}]\n  resolution: DNS\n",
        ) + &se(
            "se-http",
            "default",
            "  hosts: [example.com]\n  ports: [{number: 13835, name: http-13835, protocol: HTTP}]\n  resolution: DNS\n",
        ) + &se(
            "se-no-conflict",
            "default",
            "  hosts: [other.com]\n  ports: [{number: 443, name: https-443, protocol: HTTPS}]\n  resolution: DNS\n",
        );
        let (_, msgs) = build(&yaml);
        let objects: Vec<&str> = msgs.iter().map(|m| &*m.object).collect();
        assert_eq!(objects, vec!["ServiceEntry default/se-http", "ServiceEntry default/se-https"]);
        assert!(
            msgs.iter().all(
                |m| m.code == code::CONFLICTING_SERVICE_ENTRY_PROTOCOL && m.level == crate::message::Level::Warning
            )
        );
        assert_eq!(
            msgs[0].text,
            "Multiple ServiceEntries (default/se-http, default/se-https) define the same host \"example.com\" and port 13835 with conflicting protocols (HTTP, HTTPS)."
        );
    }

    #[test]
    fn conflicting_protocols_respect_export_scopes() {
        let disjoint = se(
            "se-ns1",
            "ns1",
            "  hosts: [example.com]\n  ports: [{number: 8080, name: a, protocol: HTTP}]\n  exportTo: ['.']\n",
        ) + &se(
            "se-ns2",
            "ns2",
            "  hosts: [example.com]\n  ports: [{number: 8080, name: b, protocol: HTTPS}]\n  exportTo: ['.']\n",
        );
        assert!(build(&disjoint).1.is_empty());
        let overlapping =
            se(
                "se-ns1",
                "ns1",
                "  hosts: [example.com]\n  ports: [{number: 8080, name: a, protocol: HTTP}]\n  exportTo: ['.']\n",
            ) + &se("se-pub", "ns2", "  hosts: [example.com]\n  ports: [{number: 8080, name: b, protocol: TCP}]\n");
        assert_eq!(build(&overlapping).1.len(), 2);
        // Same effective protocol (from the port name) is no conflict.
        let same = se("a", "ns1", "  hosts: [example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n")
            + &se("b", "ns1", "  hosts: [example.com]\n  ports: [{number: 80, name: http-x}]\n");
        assert!(build(&same).1.is_empty());
    }

    #[test]
    fn tcp_ports_without_addresses_sharing_a_port_warn() {
        let yaml = se(
            "db1",
            "default",
            "  hosts: [db1.com]\n  ports: [{number: 5432, name: tcp, protocol: TCP}]\n  resolution: DNS\n",
        ) + &se(
            "db2",
            "default",
            "  hosts: [db2.com]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n  resolution: DNS\n",
        ) + &se(
            "db3",
            "default",
            "  hosts: [db3.com]\n  addresses: [10.0.0.3]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n  resolution: DNS\n",
        ) + &se(
            "tls",
            "default",
            "  hosts: [t1.com]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: DNS\n",
        ) + &se(
            "tls2",
            "default",
            "  hosts: [t2.com]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: DNS\n",
        );
        let (_, msgs) = build(&yaml);
        let objects: Vec<&str> = msgs.iter().map(|m| &*m.object).collect();
        assert_eq!(objects, vec!["ServiceEntry default/db1", "ServiceEntry default/db2"]);
        assert!(msgs.iter().all(|m| m.code == code::SERVICE_ENTRY_ADDRESSES_REQUIRED));
        assert!(msgs[0].text.contains("db1.com, db2.com"), "{}", msgs[0].text);
        // A lone address-less TCP service is fine.
        let (_, msgs) = build(&se(
            "db1",
            "default",
            "  hosts: [db1.com]\n  ports: [{number: 5432, name: tcp, protocol: TCP}]\n  resolution: DNS\n",
        ));
        assert!(msgs.is_empty());
    }

    #[test]
    fn cluster_domain_comes_from_the_node() {
        let node = Node { cluster_domain: "corp.example".into(), ..Node::default() };
        let mut messages = Messages::default();
        let r = Registry::from_config(
            &store(&se("x", "ns", "  hosts: [svc]\n  ports: [{number: 80, name: http}]\n")),
            &MeshConfig::default(),
            &node,
            &mut messages,
        );
        assert_eq!(&*r.services[0].hostname, "svc.ns.svc.corp.example");
        assert!(r.services[0].kubernetes_style);
    }

    #[test]
    fn subject_alt_names_are_kept() {
        let (r, _) = build(&se(
            "x",
            "ns",
            "  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n  subjectAltNames: ['spiffe://td/ns/a/sa/b']\n",
        ));
        assert_eq!(r.services[0].subject_alt_names, vec![Str::from("spiffe://td/ns/a/sa/b")]);
    }
}
