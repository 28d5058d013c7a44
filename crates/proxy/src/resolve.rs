//! DNS for ServiceEntry `resolution: DNS` and `DNS_ROUND_ROBIN` (Envoy
//! `STRICT_DNS` and `LOGICAL_DNS` clusters).
//!
//! [`Dns`] wraps hickory's async resolver (the system's `/etc/resolv.conf`
//! and `/etc/hosts`, or the servers given with `weir run --dns-server`) and a
//! cache of answers with the time each must be refreshed: the records' TTL,
//! at least [`MIN_REFRESH`] (Envoy's `dns_min_refresh_rate`; Istio sets
//! `respect_dns_ttl`). A failed query keeps the last answer and is retried
//! after [`MIN_REFRESH`]; a name without records (NXDOMAIN, no A/AAAA) has no
//! addresses, so its cluster answers 503 `UH` until it resolves again.
//!
//! The [`refresher`] task owns the refreshing: it resolves every host name
//! the serving snapshot's DNS clusters name, and when an answer changes it
//! rebuilds the runtime with the new addresses (only the affected clusters
//! get new state; the others, and endpoints whose address stayed, keep their
//! pools). A `STRICT_DNS` cluster then has one balancer entry per address; a
//! `LOGICAL_DNS` cluster one entry, the first address of the latest answer.
//! Until a name's first answer arrives its endpoint resolves per new
//! connection (through the same cache).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::time::Instant;
use weir_compile::Snapshot;
use weir_compile::model::{Discovery, Str};

use crate::State;

/// The shortest time an answer is used before it is asked again (Envoy's `dns_min_refresh_rate`).
pub const MIN_REFRESH: Duration = Duration::from_secs(5);

/// Resolved addresses per host name, as a runtime was built with them.
pub type Resolved = BTreeMap<Str, Arc<[IpAddr]>>;

/// A resolver with a TTL cache, shared by the runtimes of one process.
pub struct Dns {
    servers: Vec<SocketAddr>,
    min_refresh: Duration,
    resolver: OnceLock<Result<TokioResolver, String>>,
    cache: Mutex<HashMap<Str, Answer>>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").field("servers", &self.servers).finish_non_exhaustive()
    }
}

/// One resolver is equal only to itself (clusters keep their pools while the resolver stays).
impl PartialEq for Dns {
    fn eq(&self, other: &Dns) -> bool {
        std::ptr::eq(self, other)
    }
}

#[derive(Clone, Debug)]
struct Answer {
    addrs: Arc<[IpAddr]>,
    /// When to ask again.
    refresh_at: Instant,
}

impl Dns {
    /// The system's resolver configuration.
    pub fn system() -> Arc<Dns> {
        Dns::new(Vec::new())
    }

    /// Queries `servers` (UDP, then TCP); none: the system configuration.
    pub fn new(servers: Vec<SocketAddr>) -> Arc<Dns> {
        Dns::with_min_refresh(servers, MIN_REFRESH)
    }

    /// [`Dns::new`] with another minimum refresh interval (tests).
    pub fn with_min_refresh(servers: Vec<SocketAddr>, min_refresh: Duration) -> Arc<Dns> {
        Arc::new(Dns { servers, min_refresh, resolver: OnceLock::new(), cache: Mutex::new(HashMap::new()) })
    }

    /// Built on first use (needs no runtime, reads `/etc/resolv.conf` once).
    fn resolver(&self) -> Result<&TokioResolver, String> {
        self.resolver
            .get_or_init(|| {
                let builder = if self.servers.is_empty() {
                    TokioResolver::builder_tokio()
                        .map_err(|e| format!("cannot read the system DNS configuration: {e}"))?
                } else {
                    let servers = self
                        .servers
                        .iter()
                        .map(|s| {
                            let mut udp = ConnectionConfig::udp();
                            udp.port = s.port();
                            let mut tcp = ConnectionConfig::tcp();
                            tcp.port = s.port();
                            NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                        })
                        .collect();
                    TokioResolver::builder_with_config(
                        ResolverConfig::from_name_servers(servers),
                        TokioRuntimeProvider::default(),
                    )
                };
                builder.build().map_err(|e| format!("cannot build the DNS resolver: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The addresses of `name` for a new connection: the cached answer while fresh, else a query.
    pub async fn lookup(&self, name: &str) -> std::io::Result<Arc<[IpAddr]>> {
        if let Some(a) = self.cached(name).filter(|a| a.refresh_at > Instant::now()) {
            return Ok(a.addrs);
        }
        match self.query(name).await {
            Ok(a) => {
                let addrs = a.addrs.clone();
                self.store(name, a);
                Ok(addrs)
            }
            Err(e) => match self.cached(name) {
                Some(old) => Ok(old.addrs),
                None => Err(std::io::Error::new(std::io::ErrorKind::NotFound, e)),
            },
        }
    }

    /// Queries `name` now and caches the answer (a failure keeps the previous one).
    pub async fn refresh(&self, name: &str) {
        match self.query(name).await {
            Ok(a) => {
                let old = self.cached(name).map(|o| o.addrs);
                if old.as_deref() != Some(&*a.addrs) {
                    tracing::info!(host = name, addresses = ?a.addrs, "DNS answer changed");
                }
                self.store(name, a);
            }
            Err(e) => {
                tracing::warn!(host = name, "DNS resolution failed (keeping the last answer): {e}");
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                let entry = cache
                    .entry(name.into())
                    .or_insert_with(|| Answer { addrs: Arc::from(Vec::new()), refresh_at: Instant::now() });
                entry.refresh_at = Instant::now() + self.min_refresh;
            }
        }
    }

    async fn query(&self, name: &str) -> Result<Answer, String> {
        let resolver = self.resolver()?;
        match resolver.lookup_ip(name).await {
            Ok(l) => {
                let now = Instant::now();
                let ttl = l.valid_until().saturating_duration_since(std::time::Instant::now());
                let addrs: Arc<[IpAddr]> = l.iter().collect();
                Ok(Answer { addrs, refresh_at: now + ttl.max(self.min_refresh) })
            }
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                Ok(Answer { addrs: Arc::from(Vec::new()), refresh_at: Instant::now() + self.min_refresh })
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn cached(&self, name: &str) -> Option<Answer> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    fn store(&self, name: &str, a: Answer) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(name.into(), a);
    }

    /// Whether `name` has no answer yet or its answer is due for a refresh.
    fn due(&self, name: &str, now: Instant) -> bool {
        self.cached(name).is_none_or(|a| a.refresh_at <= now)
    }

    /// The earliest refresh among `names`.
    fn next_refresh(&self, names: &BTreeSet<Str>) -> Option<Instant> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        names.iter().filter_map(|n| cache.get(n).map(|a| a.refresh_at)).min()
    }

    /// The cached answers for `names` (names never answered are left out).
    fn table(&self, names: &BTreeSet<Str>) -> Resolved {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        names.iter().filter_map(|n| cache.get(n).map(|a| (n.clone(), a.addrs.clone()))).collect()
    }
}

/// Whether an endpoint address is a host name to resolve (not an IP or a `unix://` path).
pub(crate) fn is_name(address: &str) -> bool {
    !address.is_empty() && address.parse::<IpAddr>().is_err() && !address.starts_with("unix://")
}

/// Host names of the snapshot's DNS clusters.
pub fn dns_names(snapshot: &Snapshot) -> BTreeSet<Str> {
    snapshot
        .clusters
        .iter()
        .filter(|c| matches!(c.discovery, Discovery::StrictDns | Discovery::LogicalDns))
        .flat_map(|c| c.endpoints.iter())
        .filter(|e| is_name(&e.address))
        .map(|e| Str::from(e.address.as_str()))
        .collect()
}

/// A DNS cluster's endpoints with resolved names replaced by their addresses:
/// every address for `STRICT_DNS`, the first one for `LOGICAL_DNS`. `None`
/// when nothing changes (not a DNS cluster, or no name answered yet).
pub(crate) fn expand(c: &weir_compile::model::Cluster, resolved: &Resolved) -> Option<weir_compile::model::Cluster> {
    let logical = match c.discovery {
        Discovery::StrictDns => false,
        Discovery::LogicalDns => true,
        _ => return None,
    };
    if !c.endpoints.iter().any(|e| resolved.contains_key(e.address.as_str())) {
        return None;
    }
    let mut out = Vec::with_capacity(c.endpoints.len());
    for e in c.endpoints.iter() {
        match resolved.get(e.address.as_str()) {
            Some(addrs) => {
                let take = if logical { 1 } else { addrs.len() };
                for a in addrs.iter().take(take) {
                    let mut r = e.clone();
                    r.address = a.to_string().into();
                    out.push(r);
                }
            }
            None => out.push(e.clone()),
        }
        if logical {
            break;
        }
    }
    let mut c = c.clone();
    c.endpoints = out.into();
    Some(c)
}

/// Starts the refresher of `state` on the current tokio runtime.
pub fn spawn_refresher(state: Arc<State>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(refresher(state))
}

/// Keeps the DNS answers of the serving runtime fresh (see the module docs); runs forever.
pub async fn refresher(state: Arc<State>) {
    let mut changes = state.changes.subscribe();
    loop {
        let rt = state.current.load_full();
        let dns = rt.dns.clone();
        let names = dns_names(&rt.snapshot);
        let now = Instant::now();
        let due: Vec<Str> = names.iter().filter(|n| dns.due(n, now)).cloned().collect();
        if !due.is_empty() {
            let queries: Vec<_> = due
                .into_iter()
                .map(|n| {
                    let dns = dns.clone();
                    tokio::spawn(async move { dns.refresh(&n).await })
                })
                .collect();
            for q in queries {
                let _ = q.await;
            }
        }
        let table = dns.table(&names);
        if table != *rt.resolved {
            let next = Arc::new(rt.with_resolved(Arc::new(table)));
            let prev = state.current.compare_and_swap(&rt, next);
            if !Arc::ptr_eq(&*prev, &rt) {
                // A config change was published meanwhile: start over with it.
                continue;
            }
        }
        let wake = dns.next_refresh(&names).unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_compile::model::{Cluster, Endpoint};

    fn cluster(discovery: Discovery, addrs: &[&str]) -> Cluster {
        let endpoints: Vec<Endpoint> = addrs.iter().map(|a| Endpoint::new(*a, 8080, 1)).collect();
        Cluster { discovery, ..Cluster::new_static("c", "s", 80, endpoints, Default::default()) }
    }

    #[test]
    fn expansion_per_discovery() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut r = Resolved::new();
        r.insert("a.example".into(), Arc::from(vec![ip("10.0.0.1"), ip("10.0.0.2")]));
        let strict = expand(&cluster(Discovery::StrictDns, &["a.example", "b.example", "10.9.9.9"]), &r).unwrap();
        let got: Vec<&str> = strict.endpoints.iter().map(|e| &*e.address).collect();
        assert_eq!(got, ["10.0.0.1", "10.0.0.2", "b.example", "10.9.9.9"]);
        assert!(strict.endpoints.iter().all(|e| e.port == 8080));
        let logical = expand(&cluster(Discovery::LogicalDns, &["a.example"]), &r).unwrap();
        assert_eq!(logical.endpoints.len(), 1);
        assert_eq!(&*logical.endpoints[0].address, "10.0.0.1");
        assert!(expand(&cluster(Discovery::Static, &["a.example"]), &r).is_none());
        assert!(expand(&cluster(Discovery::StrictDns, &["c.example"]), &r).is_none());
        r.insert("c.example".into(), Arc::from(Vec::new()));
        assert!(expand(&cluster(Discovery::StrictDns, &["c.example"]), &r).unwrap().endpoints.is_empty());
    }

    #[test]
    fn names() {
        assert!(is_name("api.example.com"));
        assert!(!is_name("10.0.0.1") && !is_name("::1") && !is_name("unix:///tmp/s") && !is_name(""));
    }
}
