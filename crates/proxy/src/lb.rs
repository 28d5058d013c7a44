//! Load balancers: which endpoint of a cluster takes the next request.
//!
//! * `ROUND_ROBIN`: a shared counter over a smooth weighted schedule (equal
//!   weights: plain rotation).
//! * `LEAST_REQUEST` (Istio's default): power of two choices on active
//!   requests, candidates drawn by weight, compared by `active / weight`.
//! * `RANDOM`: weighted random.
//! * Consistent hash (`ringHash`, `maglev`): rendezvous (highest random
//!   weight) hashing on the configured key; the same key keeps its endpoint
//!   while the endpoint set is unchanged, and only keys of a removed endpoint
//!   move. A request without the key gets a random endpoint, like Envoy.
//!
//! All state is atomics on the cluster and its endpoints: no locks.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::HeaderMap;
use weir_compile::policy::{HashKey, LbAlgorithm};

use crate::upstream::EndpointState;

/// Envoy's `host_selection_retry_max_attempts` as Istio sets it.
const HOST_SELECTION_ATTEMPTS: usize = 5;
/// Largest weighted round-robin schedule precomputed (in slots).
const MAX_SCHEDULE: u64 = 4096;

#[derive(Debug)]
enum Kind {
    RoundRobin,
    LeastRequest,
    Random,
    Hash(Option<HashKey>),
}

/// The balancer of one cluster, built with its endpoint list.
#[derive(Debug)]
pub(crate) struct Balancer {
    kind: Kind,
    weights: Box<[u32]>,
    /// Running sums of `weights`, for weighted draws.
    cumulative: Box<[u64]>,
    uniform: bool,
    /// Weighted round-robin order (endpoint indices); empty: plain rotation or weighted draw.
    schedule: Box<[u32]>,
    next: AtomicUsize,
    /// Per-endpoint seeds for rendezvous hashing.
    seeds: Box<[u64]>,
}

/// What a balancer may look at in a request.
pub(crate) struct PickInput<'a> {
    pub headers: &'a HeaderMap,
    /// Path with query string.
    pub path: &'a str,
    pub peer: IpAddr,
}

impl Balancer {
    pub fn new(algorithm: &LbAlgorithm, endpoints: &[Arc<EndpointState>]) -> Balancer {
        let weights: Box<[u32]> = endpoints.iter().map(|e| e.weight.max(1)).collect();
        let mut sum = 0u64;
        let cumulative: Box<[u64]> = weights
            .iter()
            .map(|w| {
                sum += u64::from(*w);
                sum
            })
            .collect();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let kind = match algorithm {
            LbAlgorithm::RoundRobin => Kind::RoundRobin,
            LbAlgorithm::Random => Kind::Random,
            // ORIGINAL_DST load balancing needs the address the client dialed, which weir
            // does not see without traffic capture: spread over the endpoints instead.
            LbAlgorithm::Passthrough => Kind::Random,
            LbAlgorithm::LeastRequest => Kind::LeastRequest,
            LbAlgorithm::RingHash { hash_key, .. } | LbAlgorithm::Maglev { hash_key, .. } => {
                Kind::Hash(hash_key.clone())
            }
        };
        let schedule = match kind {
            Kind::RoundRobin if !uniform => smooth_schedule(&weights),
            _ => Box::default(),
        };
        let seeds = endpoints.iter().map(|e| mix(fnv(e.host.as_bytes()))).collect();
        // Start rotations at a random point so that many proxies do not all hit endpoint 0 first.
        let next = AtomicUsize::new(fastrand::usize(..usize::MAX / 2));
        Balancer { kind, weights, cumulative, uniform, schedule, next, seeds }
    }

    /// The endpoint for a request; `tried` are endpoints of earlier attempts to avoid.
    pub fn pick(&self, endpoints: &[Arc<EndpointState>], input: &PickInput<'_>, tried: &[usize]) -> Option<usize> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return Some(0);
        }
        let mut choice = self.pick_once(endpoints, input);
        for _ in 1..HOST_SELECTION_ATTEMPTS {
            if !tried.contains(&choice) {
                break;
            }
            choice = match self.kind {
                // A hash always gives the same answer: step to the next endpoint instead.
                Kind::Hash(_) => (choice + 1) % n,
                _ => self.pick_once(endpoints, input),
            };
        }
        Some(choice)
    }

    fn pick_once(&self, endpoints: &[Arc<EndpointState>], input: &PickInput<'_>) -> usize {
        let n = endpoints.len();
        match &self.kind {
            Kind::RoundRobin => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                if self.schedule.is_empty() {
                    if self.uniform { i % n } else { self.weighted_draw() }
                } else {
                    self.schedule[i % self.schedule.len()] as usize
                }
            }
            Kind::Random => self.draw(n),
            Kind::LeastRequest => {
                let a = self.draw(n);
                let mut b = self.draw(n);
                if b == a {
                    b = (a + 1 + fastrand::usize(..n - 1)) % n;
                }
                let load = |i: usize| {
                    let active = u64::from(endpoints[i].active.load(Ordering::Relaxed)) + 1;
                    // Compare active/weight without division: a/wa < b/wb  <=>  a*wb < b*wa.
                    (active, u64::from(self.weights[i]))
                };
                let ((la, wa), (lb, wb)) = (load(a), load(b));
                if la * wb <= lb * wa { a } else { b }
            }
            Kind::Hash(key) => match key.as_ref().and_then(|k| hash_of(k, input)) {
                Some(h) => self.rendezvous(h),
                None => self.draw(n),
            },
        }
    }

    fn draw(&self, n: usize) -> usize {
        if self.uniform { fastrand::usize(..n) } else { self.weighted_draw() }
    }

    fn weighted_draw(&self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1);
        let r = fastrand::u64(..total);
        self.cumulative.partition_point(|c| *c <= r)
    }

    fn rendezvous(&self, key: u64) -> usize {
        let mut best = 0;
        let mut best_score = f64::MIN;
        for (i, seed) in self.seeds.iter().enumerate() {
            let h = mix(key ^ seed);
            let score = if self.uniform {
                h as f64
            } else {
                // Weighted rendezvous: -w / ln(u), u uniform in (0, 1).
                let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                -f64::from(self.weights[i]) / u.ln()
            };
            if score > best_score {
                best_score = score;
                best = i;
            }
        }
        best
    }
}

/// Nginx's smooth weighted round robin, one full cycle (weights reduced by their gcd).
fn smooth_schedule(weights: &[u32]) -> Box<[u32]> {
    let g = weights.iter().fold(0u64, |g, w| gcd(g, u64::from(*w)));
    let w: Vec<i64> = weights.iter().map(|x| (u64::from(*x) / g.max(1)) as i64).collect();
    let total: i64 = w.iter().sum();
    if total as u64 > MAX_SCHEDULE {
        return Box::default();
    }
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out.into_boxed_slice()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The hash of a request's key, `None` when the request does not carry it.
fn hash_of(key: &HashKey, input: &PickInput<'_>) -> Option<u64> {
    match key {
        HashKey::Header(name) => {
            let mut it = input.headers.get_all(&**name).iter();
            let first = it.next()?;
            let mut h = fnv(first.as_bytes());
            for v in it {
                h = fnv(&[h.to_le_bytes().as_slice(), v.as_bytes()].concat());
            }
            Some(h)
        }
        HashKey::Cookie(c) => {
            for header in input.headers.get_all(http::header::COOKIE) {
                let Ok(text) = header.to_str() else { continue };
                for pair in text.split(';') {
                    if let Some((k, v)) = pair.trim().split_once('=')
                        && k == &*c.name
                    {
                        return Some(fnv(v.as_bytes()));
                    }
                }
            }
            None
        }
        HashKey::SourceIp => Some(match input.peer {
            IpAddr::V4(v4) => fnv(&v4.octets()),
            IpAddr::V6(v6) => fnv(&v6.octets()),
        }),
        HashKey::QueryParameter(name) => {
            let (_, q) = input.path.split_once('?')?;
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == &**name).then(|| fnv(v.as_bytes()))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::EndpointState;

    fn eps(weights: &[u32]) -> Vec<Arc<EndpointState>> {
        weights.iter().enumerate().map(|(i, w)| EndpointState::for_test(&format!("10.0.0.{i}:80"), *w)).collect()
    }

    fn input(headers: &HeaderMap) -> PickInput<'_> {
        PickInput { headers, path: "/", peer: IpAddr::from([127, 0, 0, 1]) }
    }

    #[test]
    fn round_robin_rotates_and_honours_weights() {
        let h = HeaderMap::new();
        let e = eps(&[1, 1, 1]);
        let b = Balancer::new(&LbAlgorithm::RoundRobin, &e);
        let picks: Vec<usize> = (0..6).map(|_| b.pick(&e, &input(&h), &[]).unwrap()).collect();
        let mut counts = [0; 3];
        picks.iter().for_each(|p| counts[*p] += 1);
        assert_eq!(counts, [2, 2, 2]);
        let e = eps(&[3, 1]);
        let b = Balancer::new(&LbAlgorithm::RoundRobin, &e);
        let mut counts = [0; 2];
        (0..400).for_each(|_| counts[b.pick(&e, &input(&h), &[]).unwrap()] += 1);
        assert_eq!(counts, [300, 100]);
    }

    #[test]
    fn smooth_schedule_interleaves() {
        assert_eq!(&*smooth_schedule(&[5, 1, 1]), &[0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(&*smooth_schedule(&[20, 10]), &[0, 1, 0]);
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let h = HeaderMap::new();
        let e = eps(&[1, 1]);
        e[0].active.store(10, Ordering::Relaxed);
        let b = Balancer::new(&LbAlgorithm::LeastRequest, &e);
        for _ in 0..50 {
            assert_eq!(b.pick(&e, &input(&h), &[]), Some(1));
        }
    }

    #[test]
    fn consistent_hash_is_sticky_and_avoids_tried_hosts() {
        let e = eps(&[1, 1, 1, 1]);
        let algo = LbAlgorithm::RingHash { hash_key: Some(HashKey::Header("x-user".into())), minimum_ring_size: 1024 };
        let b = Balancer::new(&algo, &e);
        let mut h = HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        let first = b.pick(&e, &input(&h), &[]).unwrap();
        for _ in 0..20 {
            assert_eq!(b.pick(&e, &input(&h), &[]), Some(first));
        }
        assert_ne!(b.pick(&e, &input(&h), &[first]), Some(first));
    }

    #[test]
    fn previous_hosts_are_avoided() {
        let h = HeaderMap::new();
        let e = eps(&[1, 1]);
        let b = Balancer::new(&LbAlgorithm::RoundRobin, &e);
        for _ in 0..10 {
            assert_eq!(b.pick(&e, &input(&h), &[0]), Some(1));
        }
    }
}
