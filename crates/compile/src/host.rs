//! Host names as Istio compares them (`pkg/config/host`): wildcard suffix
//! matching, "most specific" ordering, short-name expansion and the
//! alternate domains a Kubernetes service is reachable by.
//!
//! Wildcard semantics are Istio's: a host is wildcarded iff it starts with
//! `*`, and the wildcard stands for any string (so `*foo.com` matches
//! `barfoo.com` and `*` matches everything). Comparisons are byte-wise on
//! the names as given; callers lower-case hosts before comparing.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::fast_hash::FastMap;
use crate::model::Str;

/// Whether `h` is a wildcard host (starts with `*`).
pub fn is_wildcard(h: &str) -> bool {
    h.starts_with('*')
}

/// The part of a wildcard after the `*` (the suffix every match ends with).
fn suffix(h: &str) -> &str {
    h.strip_prefix('*').unwrap_or(h)
}

/// Istio `Name.Matches`: symmetric overlap (`*.com` ~ `foo.com`, `*.foo.bar` ~ `*.bar`).
pub fn matches(a: &str, b: &str) -> bool {
    match (is_wildcard(a), is_wildcard(b)) {
        // Two wildcards overlap when one's suffix ends with the other's.
        (true, true) => {
            let (sa, sb) = (suffix(a), suffix(b));
            if sa.len() < sb.len() { sb.ends_with(sa) } else { sa.ends_with(sb) }
        }
        (true, false) => b.ends_with(suffix(a)),
        (false, true) => a.ends_with(suffix(b)),
        (false, false) => a == b,
    }
}

/// Istio `Name.SubsetOf`: every name `a` matches is matched by `b`.
pub fn subset_of(a: &str, b: &str) -> bool {
    match (is_wildcard(a), is_wildcard(b)) {
        (true, true) => a.len() >= b.len() && suffix(a).ends_with(suffix(b)),
        // A wildcard is never a subset of a single name.
        (true, false) => false,
        (false, true) => a.ends_with(suffix(b)),
        (false, false) => a == b,
    }
}

/// Istio `MoreSpecific` as an ordering: exact names before wildcards, longer
/// before shorter, then alphabetical. `Less` means `a` is more specific.
pub fn more_specific(a: &str, b: &str) -> Ordering {
    is_wildcard(a).cmp(&is_wildcard(b)).then_with(|| b.len().cmp(&a.len())).then_with(|| a.cmp(b))
}

/// Whether `h` is an IP address (v4, or v6 with an optional `%zone`), as Go's `netip.ParseAddr` accepts.
pub(crate) fn is_ip(h: &str) -> bool {
    if h.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let without_zone = match h.split_once('%') {
        Some((addr, zone)) if !zone.is_empty() => addr,
        Some(_) => return false,
        None => h,
    };
    without_zone.parse::<std::net::Ipv6Addr>().is_ok()
}

/// Istio `ResolveShortnameToFQDN`: a host without a dot (and not `*` or an IP)
/// becomes `host.<namespace>.svc.<cluster_domain>`; everything else is kept
/// (lower-cased).
pub fn resolve_short_name(host: &str, namespace: &str, cluster_domain: &str) -> Str {
    match resolve_short_name_cow(host, namespace, cluster_domain) {
        Cow::Borrowed(h) => Str::from(h),
        Cow::Owned(h) => Str::from(h),
    }
}

/// [`resolve_short_name`] without allocating when `host` stays as it is
/// (already lower-case and not a short name), as most hosts do: route
/// building resolves every destination host.
pub fn resolve_short_name_cow<'a>(host: &'a str, namespace: &str, cluster_domain: &str) -> Cow<'a, str> {
    let kept = |h: &str| h.is_empty() || h == "*" || h.contains('.') || is_ip(h);
    if !host.bytes().any(|b| b.is_ascii_uppercase()) && kept(host) {
        return Cow::Borrowed(host);
    }
    let lower = host.to_ascii_lowercase();
    if kept(&lower) {
        return Cow::Owned(lower);
    }
    let mut out = lower;
    // Istio skips the parts it does not know rather than producing `name..svc.`.
    if !namespace.is_empty() {
        out.push('.');
        out.push_str(&namespace.to_ascii_lowercase());
    }
    if !cluster_domain.is_empty() {
        out.push_str(".svc.");
        out.push_str(&cluster_domain.to_ascii_lowercase());
    }
    Cow::Owned(out)
}

/// The virtual-host domains for a service as seen from a proxy in
/// `proxy_namespace` (Istio `GenerateAltVirtualHosts`): for a Kubernetes-style
/// `name.ns.svc.<domain>` host, `name` (same namespace only), `name.ns`,
/// `name.ns.svc` and the FQDN; other hosts only themselves. `port` is not
/// appended (weir ignores the Host header port when matching, like Istio's
/// `ignore_port_in_host_matching`).
///
/// Like Istio, the namespace part is whatever lies between the first dot and
/// the first `.svc.` (so `a.b.c.svc.<domain>` yields `a.b.c` and `a.b.c.svc`).
/// One deliberate difference: a same-namespace wildcard host
/// (`*.ns.svc.<domain>`) does not get the bare `*` domain, which would
/// capture every request on the port.
pub fn alt_domains(hostname: &str, proxy_namespace: &str, cluster_domain: &str) -> Vec<Str> {
    let own = || Str::from(hostname);
    // Ends with `.svc.<cluster_domain>`.
    let kubernetes = hostname.strip_suffix(cluster_domain).is_some_and(|h| h.ends_with(".svc."));
    if cluster_domain.is_empty() || !kubernetes {
        return vec![own()];
    }
    let (Some(ih), Some(first_dot)) = (hostname.find(".svc."), hostname.find('.')) else {
        return vec![own()];
    };
    // `name.svc.<domain>` or `.ns.svc...`: no namespace part, nothing to shorten.
    if ih == 0 || first_dot == 0 || first_dot + 1 > ih {
        return vec![own()];
    }
    let name = &hostname[..first_dot];
    let namespace = &hostname[first_dot + 1..ih];
    let name_ns = &hostname[..ih];
    let mut out = Vec::with_capacity(4);
    if namespace == proxy_namespace && name != "*" {
        out.push(Str::from(name));
    }
    out.push(Str::from(name_ns));
    out.push(crate::str_util::concat_str(&[name_ns, ".svc"]));
    out.push(own());
    out
}

/// The most specific of `candidates` that matches `host` (Istio
/// `MostSpecificHostMatch`): an exact match, else the longest wildcard
/// whose suffix matches. Returns the index into `candidates`.
///
/// For a wildcard `host`, only wildcard candidates are considered: an equal
/// one, else one whose suffix `host`'s suffix ends with (`*.com` for
/// `*.foo.com`). Among equal candidates the first wins.
pub fn most_specific_match<S: AsRef<str>>(host: &str, candidates: &[S]) -> Option<usize> {
    if let Some(i) = candidates.iter().position(|c| c.as_ref() == host) {
        return Some(i);
    }
    let needle = suffix(host);
    let mut best: Option<usize> = None;
    for (i, c) in candidates.iter().enumerate() {
        let c = c.as_ref();
        if !is_wildcard(c) || !needle.ends_with(suffix(c)) {
            continue;
        }
        match best {
            Some(b) if more_specific(c, candidates[b].as_ref()) != Ordering::Less => {}
            _ => best = Some(i),
        }
    }
    best
}

/// [`most_specific_match`] over a fixed list of candidates, for many
/// lookups: exact names are hashed (first occurrence kept) and only the
/// wildcards are scanned. Same answers as [`most_specific_match`].
#[derive(Debug, Default)]
pub struct HostMatcher<'a> {
    /// Every candidate (wildcards too: a wildcard host equals a wildcard candidate) -> first index.
    exact: FastMap<&'a str, usize>,
    /// The wildcard candidates with their indices, in order.
    wildcards: Vec<(usize, &'a str)>,
}

impl<'a> HostMatcher<'a> {
    pub fn new(candidates: impl IntoIterator<Item = &'a str>) -> Self {
        let mut m = HostMatcher::default();
        for (i, c) in candidates.into_iter().enumerate() {
            m.exact.entry(c).or_insert(i);
            if is_wildcard(c) {
                m.wildcards.push((i, c));
            }
        }
        m
    }

    /// The index of the most specific candidate matching `host` (see [`most_specific_match`]).
    pub fn most_specific_match(&self, host: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        let needle = suffix(host);
        let mut best: Option<(usize, &str)> = None;
        for &(i, c) in &self.wildcards {
            if !needle.ends_with(suffix(c)) {
                continue;
            }
            match best {
                Some((_, b)) if more_specific(c, b) != Ordering::Less => {}
                _ => best = Some((i, c)),
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_follows_istio_examples() {
        assert!(matches("foo.com", "foo.com"));
        assert!(!matches("foo.com", "bar.com"));
        assert!(matches("*.com", "foo.com"));
        assert!(matches("bar.com", "*.com"));
        assert!(!matches("*.foo.com", "foo.com"));
        assert!(matches("*", "foo.com"));
        assert!(matches("*", "*.com"));
        assert!(matches("*.foo.bar", "*.bar"));
        assert!(matches("*.bar", "*.foo.bar"));
        assert!(!matches("*.foo.bar", "*.baz"));
        // Partial wildcards are raw suffix matches.
        assert!(matches("*foo.com", "barfoo.com"));
        assert!(!matches("*foo.com", "bar.com"));
    }

    #[test]
    fn subset_of_is_one_directional() {
        assert!(subset_of("a.foo.com", "*.foo.com"));
        assert!(!subset_of("*.foo.com", "a.foo.com"));
        assert!(subset_of("*.foo.com", "*.com"));
        assert!(!subset_of("*.com", "*.foo.com"));
        assert!(subset_of("*.com", "*"));
        assert!(subset_of("*", "*"));
        assert!(!subset_of("*", "foo.com"));
        assert!(subset_of("foo.com", "foo.com"));
        assert!(!subset_of("foo.com", "bar.com"));
        assert!(!subset_of("foo.com", "*.foo.com"));
    }

    #[test]
    fn more_specific_orders_exact_longest_alphabetical() {
        let mut hosts = vec!["*", "*.com", "a.com", "*.foo.com", "bb.com", "aa.com", "foo.bar.com"];
        hosts.sort_by(|a, b| more_specific(a, b));
        assert_eq!(hosts, vec!["foo.bar.com", "aa.com", "bb.com", "a.com", "*.foo.com", "*.com", "*"]);
        assert_eq!(more_specific("a.com", "a.com"), Ordering::Equal);
        assert_eq!(more_specific("a.com", "*.com"), Ordering::Less);
    }

    #[test]
    fn short_names_expand_in_the_given_namespace() {
        assert_eq!(&*resolve_short_name("reviews", "default", "cluster.local"), "reviews.default.svc.cluster.local");
        assert_eq!(&*resolve_short_name("Reviews", "default", "cluster.local"), "reviews.default.svc.cluster.local");
        assert_eq!(&*resolve_short_name("reviews.prod", "default", "cluster.local"), "reviews.prod");
        assert_eq!(&*resolve_short_name("Foo.COM", "default", "cluster.local"), "foo.com");
        assert_eq!(&*resolve_short_name("*", "default", "cluster.local"), "*");
        assert_eq!(&*resolve_short_name("*.foo.com", "default", "cluster.local"), "*.foo.com");
        assert_eq!(&*resolve_short_name("10.0.0.1", "default", "cluster.local"), "10.0.0.1");
        assert_eq!(&*resolve_short_name("::1", "default", "cluster.local"), "::1");
        assert_eq!(&*resolve_short_name("fe80::1%eth0", "default", "cluster.local"), "fe80::1%eth0");
        assert_eq!(&*resolve_short_name("", "default", "cluster.local"), "");
        assert_eq!(&*resolve_short_name("svc", "", "cluster.local"), "svc.svc.cluster.local");
        assert_eq!(&*resolve_short_name("svc", "ns", ""), "svc.ns");
        assert_eq!(&*resolve_short_name("reviews", "default", "corp.example"), "reviews.default.svc.corp.example");
    }

    fn strs(v: &[Str]) -> Vec<&str> {
        v.iter().map(|s| &**s).collect()
    }

    #[test]
    fn alt_domains_for_kubernetes_hosts() {
        let h = "reviews.default.svc.cluster.local";
        assert_eq!(
            strs(&alt_domains(h, "default", "cluster.local")),
            vec!["reviews", "reviews.default", "reviews.default.svc", h]
        );
        assert_eq!(strs(&alt_domains(h, "other", "cluster.local")), vec!["reviews.default", "reviews.default.svc", h]);
        // Another cluster domain: not a Kubernetes host for this proxy.
        assert_eq!(strs(&alt_domains(h, "default", "corp.example")), vec![h]);
        assert_eq!(
            strs(&alt_domains("r.ns.svc.corp.example", "ns", "corp.example")),
            vec!["r", "r.ns", "r.ns.svc", "r.ns.svc.corp.example"]
        );
    }

    #[test]
    fn alt_domains_leave_other_hosts_alone() {
        assert_eq!(strs(&alt_domains("foo.com", "default", "cluster.local")), vec!["foo.com"]);
        assert_eq!(strs(&alt_domains("*.foo.com", "default", "cluster.local")), vec!["*.foo.com"]);
        assert_eq!(strs(&alt_domains("10.1.2.3", "default", "cluster.local")), vec!["10.1.2.3"]);
        // No namespace part.
        assert_eq!(strs(&alt_domains("foo.svc.cluster.local", "foo", "cluster.local")), vec!["foo.svc.cluster.local"]);
        assert_eq!(strs(&alt_domains(".ns.svc.cluster.local", "ns", "cluster.local")), vec![".ns.svc.cluster.local"]);
    }

    #[test]
    fn alt_domains_edge_cases() {
        // Multi-label "namespace", as Istio computes it.
        assert_eq!(
            strs(&alt_domains("a.b.c.svc.cluster.local", "b", "cluster.local")),
            vec!["a.b.c", "a.b.c.svc", "a.b.c.svc.cluster.local"]
        );
        // A wildcard in its own namespace does not get a bare `*`.
        assert_eq!(
            strs(&alt_domains("*.ns.svc.cluster.local", "ns", "cluster.local")),
            vec!["*.ns", "*.ns.svc", "*.ns.svc.cluster.local"]
        );
    }

    #[test]
    fn most_specific_match_prefers_exact_then_longest_wildcard() {
        let c = ["*", "*.com", "*.foo.com", "a.foo.com"];
        assert_eq!(most_specific_match("a.foo.com", &c), Some(3));
        assert_eq!(most_specific_match("b.foo.com", &c), Some(2));
        assert_eq!(most_specific_match("bar.com", &c), Some(1));
        assert_eq!(most_specific_match("bar.org", &c), Some(0));
        assert_eq!(most_specific_match("bar.org", &c[1..]), None);
        // Wildcard needles: equal wildcard, else a broader wildcard.
        assert_eq!(most_specific_match("*.foo.com", &c), Some(2));
        assert_eq!(most_specific_match("*.bar.com", &c), Some(1));
        assert_eq!(most_specific_match("*.foo.com", &["a.foo.com"]), None);
        // First of duplicates wins.
        assert_eq!(most_specific_match("x.com", &["*.com", "*.com"]), Some(0));
        assert_eq!(most_specific_match("x.com", &[] as &[&str]), None);
        let owned: Vec<String> = vec!["*.com".into()];
        assert_eq!(most_specific_match("x.com", &owned), Some(0));
    }

    fn host() -> impl Strategy<Value = String> {
        let label = prop::sample::select(vec!["a", "b", "foo", "bar", "com", "x-y"]);
        (prop::sample::select(vec!["", "*", "*.", "*a", "*-"]), prop::collection::vec(label, 0..4)).prop_map(
            |(prefix, labels)| {
                let body = labels.join(".");
                let h = format!("{prefix}{body}");
                if h.is_empty() { "a".to_string() } else { h }
            },
        )
    }

    proptest! {
        #[test]
        fn matches_is_symmetric(a in host(), b in host()) {
            prop_assert_eq!(matches(&a, &b), matches(&b, &a));
        }

        #[test]
        fn subset_implies_matches(a in host(), b in host()) {
            if subset_of(&a, &b) {
                prop_assert!(matches(&a, &b), "{} ⊂ {} but no match", a, b);
            }
        }

        #[test]
        fn matches_and_subset_are_reflexive(a in host()) {
            prop_assert!(matches(&a, &a));
            prop_assert!(subset_of(&a, &a));
        }

        #[test]
        fn subset_is_transitive(a in host(), b in host(), c in host()) {
            if subset_of(&a, &b) && subset_of(&b, &c) {
                prop_assert!(subset_of(&a, &c));
            }
        }

        #[test]
        fn more_specific_is_a_total_order(a in host(), b in host(), c in host()) {
            prop_assert_eq!(more_specific(&a, &b), more_specific(&b, &a).reverse());
            prop_assert_eq!(more_specific(&a, &b) == Ordering::Equal, a == b);
            if more_specific(&a, &b) == Ordering::Less && more_specific(&b, &c) == Ordering::Less {
                prop_assert_eq!(more_specific(&a, &c), Ordering::Less);
            }
        }

        #[test]
        fn exact_names_are_more_specific_than_wildcards(a in host(), b in host()) {
            if !is_wildcard(&a) && is_wildcard(&b) {
                prop_assert_eq!(more_specific(&a, &b), Ordering::Less);
            }
            if is_wildcard(&a) == is_wildcard(&b) && a.len() > b.len() {
                prop_assert_eq!(more_specific(&a, &b), Ordering::Less);
            }
        }

        #[test]
        fn most_specific_match_matches_and_is_minimal(h in host(), cands in prop::collection::vec(host(), 0..6)) {
            match most_specific_match(&h, &cands) {
                Some(i) => {
                    let best = &cands[i];
                    prop_assert!(best == &h || subset_of(&h, best), "{} picked for {}", best, h);
                    for c in &cands {
                        if c != best && is_wildcard(c) && subset_of(&h, c) && best != &h {
                            prop_assert_ne!(more_specific(c, best), Ordering::Less);
                        }
                    }
                }
                None => {
                    for c in &cands {
                        prop_assert!(c != &h && !(is_wildcard(c) && subset_of(&h, c)));
                    }
                }
            }
        }

        #[test]
        fn host_matcher_agrees_with_most_specific_match(h in host(), cands in prop::collection::vec(host(), 0..6)) {
            let m = HostMatcher::new(cands.iter().map(String::as_str));
            prop_assert_eq!(m.most_specific_match(&h), most_specific_match(&h, &cands));
        }

        #[test]
        fn resolve_short_name_agrees_with_the_allocating_version(h in host(), upper in any::<bool>(), ns in prop::sample::select(vec!["", "ns", "NS"])) {
            // The straightforward implementation the borrowing one replaced.
            fn reference(host: &str, namespace: &str, cluster_domain: &str) -> String {
                let lower = host.to_ascii_lowercase();
                if lower.is_empty() || lower == "*" || lower.contains('.') || is_ip(&lower) {
                    return lower;
                }
                let mut out = lower;
                if !namespace.is_empty() {
                    out.push('.');
                    out.push_str(&namespace.to_ascii_lowercase());
                }
                if !cluster_domain.is_empty() {
                    out.push_str(".svc.");
                    out.push_str(&cluster_domain.to_ascii_lowercase());
                }
                out
            }
            let h = if upper { h.to_ascii_uppercase() } else { h };
            let want = reference(&h, ns, "cluster.local");
            prop_assert_eq!(&*resolve_short_name_cow(&h, ns, "cluster.local"), want.as_str());
            prop_assert_eq!(&*resolve_short_name(&h, ns, "cluster.local"), want.as_str());
        }

        #[test]
        fn resolve_short_name_is_idempotent(h in host()) {
            let once = resolve_short_name(&h, "ns", "cluster.local");
            prop_assert_eq!(resolve_short_name(&once, "ns", "cluster.local"), once);
        }
    }
}
