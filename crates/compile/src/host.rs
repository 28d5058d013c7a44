//! Host names as Istio compares them (`pkg/config/host`): wildcard suffix
//! matching, "most specific" ordering, short-name expansion and the
//! alternate domains a Kubernetes service is reachable by.

use crate::model::Str;

/// Whether `h` is a wildcard host (starts with `*`).
pub fn is_wildcard(h: &str) -> bool {
    h.starts_with('*')
}

/// Istio `Name.Matches`: symmetric overlap (`*.com` ~ `foo.com`, `*.foo.bar` ~ `*.bar`).
pub fn matches(a: &str, b: &str) -> bool {
    todo!("host::matches {a} {b}")
}

/// Istio `Name.SubsetOf`: every name `a` matches is matched by `b`.
pub fn subset_of(a: &str, b: &str) -> bool {
    todo!("host::subset_of {a} {b}")
}

/// Istio `MoreSpecific` as an ordering: exact names before wildcards, longer
/// before shorter, then alphabetical. `Less` means `a` is more specific.
pub fn more_specific(a: &str, b: &str) -> std::cmp::Ordering {
    todo!("host::more_specific {a} {b}")
}

/// Istio `ResolveShortnameToFQDN`: a host without a dot (and not `*` or an IP)
/// becomes `host.<namespace>.svc.<cluster_domain>`; everything else is kept
/// (lower-cased).
pub fn resolve_short_name(host: &str, namespace: &str, cluster_domain: &str) -> Str {
    todo!("host::resolve_short_name {host} {namespace} {cluster_domain}")
}

/// The virtual-host domains for a service as seen from a proxy in
/// `proxy_namespace` (Istio `GenerateAltVirtualHosts`): for a Kubernetes-style
/// `name.ns.svc.<domain>` host, `name` (same namespace only), `name.ns`,
/// `name.ns.svc` and the FQDN; other hosts only themselves. `port` is not
/// appended (weir ignores the Host header port when matching, like Istio's
/// `ignore_port_in_host_matching`).
pub fn alt_domains(hostname: &str, proxy_namespace: &str, cluster_domain: &str) -> Vec<Str> {
    todo!("host::alt_domains {hostname} {proxy_namespace} {cluster_domain}")
}

/// The most specific of `candidates` that matches `host` (Istio
/// `MostSpecificHostMatch`): an exact match, else the longest wildcard
/// whose suffix matches. Returns the index into `candidates`.
pub fn most_specific_match<S: AsRef<str>>(host: &str, candidates: &[S]) -> Option<usize> {
    todo!("host::most_specific_match {host} {}", candidates.len())
}
