//! Load balancers: which endpoint of a cluster takes the next request.
//!
//! Algorithms (`DestinationRule.trafficPolicy.loadBalancer`):
//!
//! * `ROUND_ROBIN`: a shared counter over a smooth weighted schedule (equal
//!   weights: plain rotation; weights summing past 4096 slots: weighted draw).
//! * `LEAST_REQUEST` (Istio's default, also `LEAST_CONN` and `UNSPECIFIED`):
//!   as Envoy, power of two choices on active requests when all weights are
//!   equal; with unequal weights, shares of `weight / (active + 1)` (a weighted
//!   draw accepted with probability `1 / (active + 1)`).
//! * `RANDOM`: weighted random.
//! * `PASSTHROUGH`: Istio makes the cluster ORIGINAL_DST (the address the
//!   client connected to). weir captures no traffic, so it does not know that
//!   address: a passthrough cluster with endpoints spreads over them at random;
//!   one without endpoints forwards to the request's authority
//!   (`ClusterState::original_dst`).
//! * `consistentHash` with `ringHash` ([`ring_hash`]: binary search on a
//!   sorted ring of `minimumRingSize` to 8M points) or `maglev` ([`maglev`]: a
//!   lookup table of `tableSize` slots), keyed by a header, a cookie (generated
//!   with `ttl` when absent: see [`Balancer::set_cookie`]), the source IP or a
//!   query parameter, all hashed with xxHash64 and fixed seeds so every weir
//!   process maps a key to the same endpoint. A request without the key gets a
//!   weighted random endpoint, like Envoy.
//!
//! Locality ([`locality`]): every endpoint gets a priority level and weight
//! for this node (its `--locality` and labels), as istiod would write them into
//! the node's EDS. A request goes to a level by Envoy's priority load: each
//! level's health is `min(100, 1.4 × healthy% )`, levels are filled in order
//! until 100% (scaled up when the total is under 100%), so a partly unhealthy
//! level spills proportionally to the next. A level whose healthy share is
//! under `outlierDetection.minHealthPercent` is in panic and balances over all
//! its endpoints (Istio writes 0: panic disabled).
//!
//! Health: a pick that lands on an endpoint that is not
//! [`EndpointState::is_available`] (ejected) rebuilds the table of healthy
//! endpoints at once and picks again; while some endpoint is out, the table is
//! rechecked every 500 ms so returning endpoints come back.
//!
//! Slow start (`warmup`, ROUND_ROBIN and LEAST_REQUEST): an endpoint younger
//! than the window is accepted with probability `max(minimumPercent,
//! (age/window)^(1/aggression))`, otherwise the pick is drawn again (up to 8
//! times), which scales its share of traffic like Envoy's weight factor.
//!
//! A pick reads one `ArcSwap` guard, atomics and the thread-local RNG: no locks
//! and no allocation; it is O(1) (rotation, uniform draw, Maglev) or O(log n)
//! (weighted draw, ring lookup).

mod hash;
mod locality;
mod maglev;
mod ring_hash;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue};
use weir_compile::model::{Cluster, NodeSummary};
use weir_compile::policy::{HashCookie, HashKey, LbAlgorithm};

use self::hash::xxh64;
use self::locality::Placement;
use self::maglev::Maglev;
use self::ring_hash::Ring;
use crate::upstream::EndpointState;

/// Envoy's `host_selection_retry_max_attempts` as Istio sets it.
const HOST_SELECTION_ATTEMPTS: usize = 5;
/// Largest weighted round-robin schedule precomputed (in slots).
const MAX_SCHEDULE: u64 = 4096;
/// Envoy's default overprovisioning factor (1.4), in percent.
const OVERPROVISIONING: u64 = 140;
/// How often the healthy set is rechecked while some endpoint is out.
const RECHECK: Duration = Duration::from_millis(500);
/// Draws per pick while slow start rejects young endpoints.
const SLOW_START_TRIES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    RoundRobin,
    LeastRequest,
    Random,
    RingHash(u64),
    Maglev(u64),
}

impl Kind {
    fn is_hash(self) -> bool {
        matches!(self, Kind::RingHash(_) | Kind::Maglev(_))
    }
}

/// The balancer of one cluster, built with its endpoint list.
#[derive(Debug)]
pub(crate) struct Balancer {
    kind: Kind,
    hash_key: Option<HashKey>,
    /// Per endpoint: priority level and weight for this node.
    placement: Box<[Placement]>,
    levels: usize,
    /// `outlierDetection.minHealthPercent` (0: panic mode disabled).
    panic_threshold: u64,
    slow_start: Option<SlowStart>,
    table: ArcSwap<Table>,
    next: AtomicUsize,
    epoch: Instant,
    /// Nanoseconds after `epoch` when an unhealthy table is next rechecked.
    recheck_at: AtomicU64,
    rebuilding: Mutex<()>,
}

#[derive(Debug)]
struct SlowStart {
    window: Duration,
    aggression: f64,
    /// `minimumPercent` as a fraction.
    minimum: f64,
    /// After this instant no endpoint of the cluster is in its window (`None`: far future).
    until: Option<Instant>,
}

/// The healthy endpoints per priority level and the load each level takes.
#[derive(Debug, Default)]
struct Table {
    /// Availability of each endpoint when this table was built.
    available: Box<[bool]>,
    unhealthy: bool,
    /// Cumulative percentage of requests per level (last = 100).
    load: Box<[u32]>,
    pools: Box<[Pool]>,
}

/// The endpoints one level balances over.
#[derive(Debug, Default)]
struct Pool {
    /// Endpoint indices.
    members: Box<[u32]>,
    /// Running sums of member weights, for weighted draws (empty when `uniform`).
    cumulative: Box<[u64]>,
    uniform: bool,
    /// Smooth weighted round-robin order (member positions); empty: rotation or weighted draw.
    schedule: Box<[u32]>,
    ring: Option<Ring>,
    maglev: Option<Maglev>,
}

/// What a balancer may look at in a request.
pub(crate) struct PickInput<'a> {
    pub headers: &'a HeaderMap,
    /// Path with query string.
    pub path: &'a str,
    pub peer: IpAddr,
}

impl Balancer {
    /// The balancer of cluster `c` as node `node` sees it; `endpoints` are the
    /// cluster's endpoint states, in the order of `c.endpoints`.
    pub fn new(c: &Cluster, node: &NodeSummary, endpoints: &[Arc<EndpointState>]) -> Balancer {
        let lb = &c.policy.load_balancer;
        let (kind, hash_key) = match &lb.algorithm {
            LbAlgorithm::RoundRobin => (Kind::RoundRobin, None),
            LbAlgorithm::Random => (Kind::Random, None),
            // Without traffic capture the original destination is unknown: spread at random.
            LbAlgorithm::Passthrough => (Kind::Random, None),
            LbAlgorithm::LeastRequest => (Kind::LeastRequest, None),
            LbAlgorithm::RingHash { hash_key, minimum_ring_size } => {
                (Kind::RingHash(*minimum_ring_size), hash_key.clone())
            }
            LbAlgorithm::Maglev { hash_key, table_size } => (Kind::Maglev(*table_size), hash_key.clone()),
        };
        let mut placement =
            locality::place(&c.endpoints, node, lb.locality.as_ref(), c.policy.outlier_detection.is_some());
        // Endpoint states follow the model one to one; guard against a mismatch all the same.
        placement.resize(endpoints.len(), Placement { priority: 0, weight: 1 });
        let levels = placement.iter().map(|p| p.priority as usize + 1).max().unwrap_or(1);
        let slow_start = match (&lb.warmup, kind) {
            (Some(w), Kind::RoundRobin | Kind::LeastRequest) if !w.duration.is_zero() => {
                let newest = endpoints.iter().map(|e| e.created).max().unwrap_or_else(Instant::now);
                Some(SlowStart {
                    window: w.duration,
                    aggression: if w.aggression.0 > 0.0 { w.aggression.0 } else { 1.0 },
                    minimum: (w.minimum_percent.0 / 100.0).clamp(0.0, 1.0),
                    until: newest.checked_add(w.duration),
                })
            }
            _ => None,
        };
        let mut b = Balancer {
            kind,
            hash_key,
            placement: placement.into_boxed_slice(),
            levels,
            panic_threshold: c.policy.outlier_detection.as_ref().map_or(0, |o| u64::from(o.min_health_percent)),
            slow_start,
            table: ArcSwap::from_pointee(Table::default()),
            // Start rotations at a random point so that many proxies do not all hit endpoint 0 first.
            next: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
            epoch: Instant::now(),
            recheck_at: AtomicU64::new(0),
            rebuilding: Mutex::new(()),
        };
        let available: Box<[bool]> = endpoints.iter().map(|e| e.is_available()).collect();
        b.table = ArcSwap::from_pointee(b.build(endpoints, available));
        b
    }

    /// The endpoint for a request; `tried` are endpoints of earlier attempts to avoid.
    /// `None`: no healthy endpoint (503 `UH`).
    pub fn pick(&self, endpoints: &[Arc<EndpointState>], input: &PickInput<'_>, tried: &[usize]) -> Option<usize> {
        if endpoints.is_empty() {
            return None;
        }
        let mut table = self.table.load();
        if table.unhealthy && self.recheck_due() {
            self.rebuild(endpoints);
            table = self.table.load();
        }
        let mut hash = match &self.hash_key {
            Some(k) if self.kind.is_hash() => hash_of(k, input),
            _ => None,
        };
        let mut choice = self.pick_in(&table, endpoints, hash)?;
        for attempt in 1..HOST_SELECTION_ATTEMPTS {
            if choice >= endpoints.len() {
                return None;
            }
            if !endpoints[choice].is_available() {
                // Ejected since the table was built: rebuild now and pick again with the same key.
                self.rebuild(endpoints);
                table = self.table.load();
            } else if tried.contains(&choice) {
                // A hash always gives the same answer: derive another key for the retry.
                hash = hash.map(|h| mix(h.wrapping_add(attempt as u64)));
            } else {
                break;
            }
            choice = self.pick_in(&table, endpoints, hash)?;
        }
        Some(choice)
    }

    fn pick_in(&self, table: &Table, endpoints: &[Arc<EndpointState>], hash: Option<u64>) -> Option<usize> {
        let r = match hash {
            Some(h) => (h % 100) as u32,
            None => fastrand::u32(..100),
        };
        let level = table.load.partition_point(|c| *c <= r).min(table.pools.len().saturating_sub(1));
        let pool = table.pools.get(level)?;
        if pool.members.is_empty() {
            return None;
        }
        let pos = match self.kind {
            Kind::RingHash(_) | Kind::Maglev(_) => match hash {
                Some(h) => {
                    pool.ring.as_ref().and_then(|r| r.lookup(h)).or_else(|| pool.maglev.as_ref()?.lookup(h))? as usize
                }
                None => pool.draw(),
            },
            Kind::Random => pool.draw(),
            Kind::RoundRobin => self.slow_start_pick(pool, endpoints, || self.round_robin(pool)),
            Kind::LeastRequest if !pool.uniform => self.weighted_least_request(pool, endpoints),
            Kind::LeastRequest => {
                let a = self.slow_start_pick(pool, endpoints, || pool.draw());
                if pool.members.len() == 1 {
                    a
                } else {
                    let mut b = self.slow_start_pick(pool, endpoints, || pool.draw());
                    if b == a {
                        b = (a + 1 + fastrand::usize(..pool.members.len() - 1)) % pool.members.len();
                    }
                    let load = |pos: usize| {
                        let i = pool.members[pos] as usize;
                        let active = u64::from(endpoints[i].active.load(Ordering::Relaxed)) + 1;
                        (active, self.placement[i].weight.max(1))
                    };
                    // Compare active/weight without division: a/wa <= b/wb  <=>  a*wb <= b*wa.
                    let ((la, wa), (lb, wb)) = (load(a), load(b));
                    if u128::from(la) * u128::from(wb) <= u128::from(lb) * u128::from(wa) { a } else { b }
                }
            }
        };
        pool.members.get(pos).map(|m| *m as usize)
    }

    /// Envoy's least request with unequal weights picks by `weight / (active + 1)`: drawn
    /// by weight and accepted with probability `1 / (active + 1)`, which gives the same
    /// shares; after a few rejections the least loaded candidate (by `active / weight`) wins.
    fn weighted_least_request(&self, pool: &Pool, endpoints: &[Arc<EndpointState>]) -> usize {
        let mut best: Option<(usize, u64, u64)> = None;
        for _ in 0..SLOW_START_TRIES {
            let pos = self.slow_start_pick(pool, endpoints, || pool.draw());
            let i = pool.members[pos] as usize;
            let active = u64::from(endpoints[i].active.load(Ordering::Relaxed)) + 1;
            if active == 1 || fastrand::u64(..active) == 0 {
                return pos;
            }
            let w = self.placement[i].weight.max(1);
            if best.is_none_or(|(_, ba, bw)| u128::from(active) * u128::from(bw) < u128::from(ba) * u128::from(w)) {
                best = Some((pos, active, w));
            }
        }
        best.map_or(0, |b| b.0)
    }

    fn round_robin(&self, pool: &Pool) -> usize {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if !pool.schedule.is_empty() {
            pool.schedule[i % pool.schedule.len()] as usize
        } else if pool.uniform {
            i % pool.members.len()
        } else {
            pool.draw()
        }
    }

    /// Draws with `draw` until slow start accepts the endpoint (bounded).
    fn slow_start_pick(&self, pool: &Pool, endpoints: &[Arc<EndpointState>], draw: impl Fn() -> usize) -> usize {
        let pos = draw();
        let Some(s) = &self.slow_start else { return pos };
        let now = Instant::now();
        if s.until.is_some_and(|u| now >= u) {
            return pos;
        }
        let mut pos = pos;
        for _ in 1..SLOW_START_TRIES {
            let created = endpoints[pool.members[pos] as usize].created;
            let f = s.factor(now.saturating_duration_since(created));
            if f >= 1.0 || fastrand::f64() < f {
                break;
            }
            pos = draw();
        }
        pos
    }

    /// Whether an unhealthy table is due for a recheck (returning endpoints).
    fn recheck_due(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        now >= self.recheck_at.load(Ordering::Relaxed)
    }

    /// Rebuilds the table if endpoint health changed (one thread at a time; others keep the old table).
    fn rebuild(&self, endpoints: &[Arc<EndpointState>]) {
        let Ok(_guard) = self.rebuilding.try_lock() else { return };
        let next = self.epoch.elapsed().saturating_add(RECHECK);
        self.recheck_at.store(u64::try_from(next.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        let current = self.table.load();
        let changed = endpoints.len() != current.available.len()
            || endpoints.iter().zip(current.available.iter()).any(|(e, was)| e.is_available() != *was);
        if !changed {
            return;
        }
        let available: Box<[bool]> = endpoints.iter().map(|e| e.is_available()).collect();
        self.table.store(Arc::new(self.build(endpoints, available)));
    }

    /// Envoy's priority load and per-level pools for the given availability.
    fn build(&self, endpoints: &[Arc<EndpointState>], available: Box<[bool]>) -> Table {
        let n = self.levels;
        let mut total = vec![0u64; n];
        let mut healthy = vec![0u64; n];
        for (i, p) in self.placement.iter().enumerate().take(endpoints.len()) {
            if p.weight == 0 {
                continue;
            }
            total[p.priority as usize] += 1;
            if available[i] {
                healthy[p.priority as usize] += 1;
            }
        }
        let health: Vec<u64> =
            (0..n).map(|l| (OVERPROVISIONING * healthy[l]).checked_div(total[l]).unwrap_or(0).min(100)).collect();
        let sum: u64 = health.iter().sum::<u64>().min(100);
        let mut load = vec![0u64; n];
        if sum == 0 {
            load[0] = 100;
        } else {
            let mut left = 100u64;
            for l in 0..n {
                load[l] = (health[l] * 100).checked_div(sum).unwrap_or(0).min(left);
                left -= load[l];
            }
            if let Some(first) = (0..n).find(|l| health[*l] > 0) {
                load[first] += left;
            }
        }
        let mut cumulative = Vec::with_capacity(n);
        let mut acc = 0u32;
        for l in &load {
            acc += *l as u32;
            cumulative.push(acc);
        }
        let pools = (0..n)
            .map(|l| {
                if load[l] == 0 {
                    return Pool::default();
                }
                let panic = healthy[l] * 100 < self.panic_threshold * total[l];
                let members: Vec<u32> = (0..endpoints.len())
                    .filter(|i| {
                        let p = self.placement[*i];
                        p.priority as usize == l && p.weight > 0 && (panic || available[*i])
                    })
                    .map(|i| i as u32)
                    .collect();
                Pool::build(self.kind, members, &self.placement, endpoints)
            })
            .collect();
        let unhealthy = available.iter().any(|a| !a);
        Table { available, unhealthy, load: cumulative.into_boxed_slice(), pools }
    }

    /// The `Set-Cookie` value to add to the response when the hash key is a
    /// cookie with a `ttl` and the request did not carry it (Envoy generates
    /// it then; the value is derived from the client address, so the pick
    /// already used it).
    pub fn set_cookie(&self, headers: &HeaderMap, peer: IpAddr) -> Option<HeaderValue> {
        let Some(HashKey::Cookie(c)) = &self.hash_key else { return None };
        let ttl = c.ttl?;
        if cookie_value(headers, &c.name).is_some() {
            return None;
        }
        let mut buf = [0u8; 16];
        let value = generated_cookie(peer, &mut buf);
        let mut s = format!("{}=\"{}\"", c.name, value);
        if ttl.as_secs() > 0 {
            s.push_str(&format!("; Max-Age={}", ttl.as_secs()));
        }
        if let Some(p) = &c.path {
            s.push_str("; Path=");
            s.push_str(p);
        }
        for (k, v) in &c.attributes {
            s.push_str("; ");
            s.push_str(k);
            if !v.is_empty() {
                s.push('=');
                s.push_str(v);
            }
        }
        s.push_str("; HttpOnly");
        HeaderValue::from_str(&s).ok()
    }
}

impl SlowStart {
    /// Envoy's slow-start weight factor for an endpoint of age `age`.
    fn factor(&self, age: Duration) -> f64 {
        if age >= self.window {
            return 1.0;
        }
        let t = (age.as_millis().max(1) as f64) / (self.window.as_millis().max(1) as f64);
        let f = if self.aggression == 1.0 { t } else { t.powf(1.0 / self.aggression) };
        f.max(self.minimum)
    }
}

impl Pool {
    fn build(kind: Kind, members: Vec<u32>, placement: &[Placement], endpoints: &[Arc<EndpointState>]) -> Pool {
        let weights: Vec<u64> = members.iter().map(|m| placement[*m as usize].weight.max(1)).collect();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let mut sum = 0u64;
        // Equal weights draw uniformly: no running sums needed (8 bytes an endpoint saved).
        let cumulative: Box<[u64]> = if uniform {
            Box::default()
        } else {
            weights
                .iter()
                .map(|w| {
                    sum += *w;
                    sum
                })
                .collect()
        };
        let schedule = match kind {
            Kind::RoundRobin if !uniform => smooth_schedule(&weights),
            _ => Box::default(),
        };
        let hosts = || members.iter().map(|m| &*endpoints[*m as usize].host).collect::<Vec<&str>>();
        let (ring, maglev) = match kind {
            Kind::RingHash(min) => (Some(Ring::build(&hosts(), &weights, min)), None),
            Kind::Maglev(size) => (None, Some(Maglev::build(&hosts(), &weights, size))),
            _ => (None, None),
        };
        Pool { members: members.into_boxed_slice(), cumulative, uniform, schedule, ring, maglev }
    }

    /// A member position drawn by weight.
    fn draw(&self) -> usize {
        let n = self.members.len();
        if self.uniform || n < 2 {
            return fastrand::usize(..n.max(1));
        }
        let total = self.cumulative.last().copied().unwrap_or(1).max(1);
        let r = fastrand::u64(..total);
        self.cumulative.partition_point(|c| *c <= r).min(n - 1)
    }
}

/// Nginx's smooth weighted round robin, one full cycle (weights reduced by their gcd).
fn smooth_schedule(weights: &[u64]) -> Box<[u32]> {
    let g = weights.iter().fold(0u64, |g, w| gcd(g, *w));
    let w: Vec<i64> = weights.iter().map(|x| (*x / g.max(1)) as i64).collect();
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

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The value of cookie `name` in the request (quotes removed).
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    for header in headers.get_all(http::header::COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k.trim() == name
            {
                let v = v.trim();
                return Some(v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v));
            }
        }
    }
    None
}

/// The cookie value weir generates for a client: 16 hex digits of a hash of its address.
fn generated_cookie(peer: IpAddr, buf: &mut [u8; 16]) -> &str {
    let h = match peer {
        IpAddr::V4(v4) => xxh64(&v4.octets(), 0),
        IpAddr::V6(v6) => xxh64(&v6.octets(), 0),
    };
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
    }
    std::str::from_utf8(buf).unwrap_or("0")
}

/// The hash of a request's key, `None` when the request does not carry it.
fn hash_of(key: &HashKey, input: &PickInput<'_>) -> Option<u64> {
    match key {
        HashKey::Header(name) => {
            let mut it = input.headers.get_all(&**name).iter();
            let mut h = xxh64(it.next()?.as_bytes(), 0);
            for v in it {
                h = xxh64(v.as_bytes(), h);
            }
            Some(h)
        }
        HashKey::Cookie(c) => cookie_hash(c, input),
        HashKey::SourceIp => Some(match input.peer {
            IpAddr::V4(v4) => xxh64(&v4.octets(), 0),
            IpAddr::V6(v6) => xxh64(&v6.octets(), 0),
        }),
        HashKey::QueryParameter(name) => {
            let (_, q) = input.path.split_once('?')?;
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == &**name).then(|| xxh64(v.as_bytes(), 0))
            })
        }
    }
}

fn cookie_hash(c: &HashCookie, input: &PickInput<'_>) -> Option<u64> {
    if let Some(v) = cookie_value(input.headers, &c.name) {
        return Some(xxh64(v.as_bytes(), 0));
    }
    // Absent: with a ttl the response will set the generated value, so hash that already.
    c.ttl?;
    let mut buf = [0u8; 16];
    Some(xxh64(generated_cookie(input.peer, &mut buf).as_bytes(), 0))
}

/// Entry points for the criterion benchmarks (`benches/lb.rs`); not a stable API.
#[doc(hidden)]
pub mod bench {
    use std::net::IpAddr;

    use http::HeaderMap;
    use weir_compile::model::{Cluster, Endpoint, NodeSummary};
    use weir_compile::policy::{ClusterPolicy, HashKey, LbAlgorithm};

    use super::PickInput;
    use crate::resolve::Dns;
    use crate::tls::Credentials;
    use crate::upstream::{ClusterState, PoolSettings};

    /// A cluster of `n` endpoints balanced by one algorithm.
    pub struct Cluster1 {
        state: ClusterState,
        headers: HeaderMap,
    }

    /// `algorithm`: `round_robin`, `least_request`, `random`, `ring_hash` or `maglev`
    /// (hash algorithms key on the source IP); `weighted`: endpoint weights 1..=4.
    pub fn cluster(algorithm: &str, n: usize, weighted: bool) -> Cluster1 {
        let mut policy = ClusterPolicy::default();
        policy.load_balancer.algorithm = match algorithm {
            "round_robin" => LbAlgorithm::RoundRobin,
            "random" => LbAlgorithm::Random,
            "ring_hash" => LbAlgorithm::RingHash { hash_key: Some(HashKey::SourceIp), minimum_ring_size: 1024 },
            "maglev" => LbAlgorithm::Maglev { hash_key: Some(HashKey::SourceIp), table_size: 65537 },
            _ => LbAlgorithm::LeastRequest,
        };
        let endpoints: Vec<Endpoint> = (0..n)
            .map(|i| {
                let address = format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255);
                Endpoint::new(address, 8080, if weighted { (i % 4) as u32 + 1 } else { 1 })
            })
            .collect();
        let c = Cluster::new_static("outbound|80||bench", "bench.default.svc.cluster.local", 80, endpoints, policy);
        let settings = PoolSettings::of(&c, &Credentials::empty(), &Dns::system());
        let state = ClusterState::with_settings(&c, None, &NodeSummary::default(), settings);
        Cluster1 { state, headers: HeaderMap::new() }
    }

    impl Cluster1 {
        /// One pick; `key` varies the client address (the hash key).
        pub fn pick(&self, key: u32) -> usize {
            let input = PickInput { headers: &self.headers, path: "/", peer: IpAddr::from(key.to_be_bytes()) };
            self.state.balancer.pick(&self.state.endpoints, &input, &[]).unwrap_or(usize::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_compile::model::Endpoint;
    use weir_compile::policy::{ClusterPolicy, F64, Warmup};

    fn cluster(weights: &[u32], algorithm: LbAlgorithm) -> (Cluster, Vec<Arc<EndpointState>>) {
        let mut policy = ClusterPolicy::default();
        policy.load_balancer.algorithm = algorithm;
        let endpoints: Vec<Endpoint> =
            weights.iter().enumerate().map(|(i, w)| Endpoint::new(format!("10.0.0.{i}"), 80, *w)).collect();
        let states =
            weights.iter().enumerate().map(|(i, w)| EndpointState::for_test(&format!("10.0.0.{i}:80"), *w)).collect();
        (Cluster::new_static("c", "s", 80, endpoints, policy), states)
    }

    fn balancer(weights: &[u32], algorithm: LbAlgorithm) -> (Balancer, Vec<Arc<EndpointState>>) {
        let (c, e) = cluster(weights, algorithm);
        (Balancer::new(&c, &NodeSummary::default(), &e), e)
    }

    fn input(headers: &HeaderMap) -> PickInput<'_> {
        PickInput { headers, path: "/", peer: IpAddr::from([127, 0, 0, 1]) }
    }

    #[test]
    fn round_robin_rotates_and_honours_weights() {
        let h = HeaderMap::new();
        let (b, e) = balancer(&[1, 1, 1], LbAlgorithm::RoundRobin);
        let mut counts = [0; 3];
        (0..6).for_each(|_| counts[b.pick(&e, &input(&h), &[]).unwrap()] += 1);
        assert_eq!(counts, [2, 2, 2]);
        let (b, e) = balancer(&[3, 1], LbAlgorithm::RoundRobin);
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
        let (b, e) = balancer(&[1, 1], LbAlgorithm::LeastRequest);
        e[0].active.store(10, Ordering::Relaxed);
        for _ in 0..50 {
            assert_eq!(b.pick(&e, &input(&h), &[]), Some(1));
        }
    }

    #[test]
    fn weighted_least_request_follows_weights_when_idle_and_load_when_busy() {
        let h = HeaderMap::new();
        let (b, e) = balancer(&[7, 2, 1], LbAlgorithm::LeastRequest);
        let mut counts = [0usize; 3];
        (0..10_000).for_each(|_| counts[b.pick(&e, &input(&h), &[]).unwrap()] += 1);
        assert!(counts[0].abs_diff(7000) < 300 && counts[2].abs_diff(1000) < 200, "{counts:?}");
        // Endpoint 0 busy with 20 requests: weight/(active+1) = 7/21 against 2 and 1.
        e[0].active.store(20, Ordering::Relaxed);
        let mut counts = [0; 3];
        (0..10_000).for_each(|_| counts[b.pick(&e, &input(&h), &[]).unwrap()] += 1);
        assert!(counts[0] < 1500, "{counts:?}");
    }

    #[test]
    fn consistent_hash_is_sticky_and_avoids_tried_hosts() {
        for algo in [
            LbAlgorithm::RingHash { hash_key: Some(HashKey::Header("x-user".into())), minimum_ring_size: 1024 },
            LbAlgorithm::Maglev { hash_key: Some(HashKey::Header("x-user".into())), table_size: 65537 },
        ] {
            let (b, e) = balancer(&[1, 1, 1, 1], algo);
            let mut h = HeaderMap::new();
            h.insert("x-user", "alice".parse().unwrap());
            let first = b.pick(&e, &input(&h), &[]).unwrap();
            for _ in 0..20 {
                assert_eq!(b.pick(&e, &input(&h), &[]), Some(first));
            }
            assert_ne!(b.pick(&e, &input(&h), &[first]), Some(first));
            // Another balancer over the same endpoints (another process) agrees.
            let (b2, e2) = balancer(&[1, 1, 1, 1], b_algo(&b));
            assert_eq!(b2.pick(&e2, &input(&h), &[]), Some(first));
        }
    }

    fn b_algo(b: &Balancer) -> LbAlgorithm {
        match b.kind {
            Kind::RingHash(m) => LbAlgorithm::RingHash { hash_key: b.hash_key.clone(), minimum_ring_size: m },
            Kind::Maglev(t) => LbAlgorithm::Maglev { hash_key: b.hash_key.clone(), table_size: t },
            _ => LbAlgorithm::Random,
        }
    }

    #[test]
    fn previous_hosts_are_avoided() {
        let h = HeaderMap::new();
        let (b, e) = balancer(&[1, 1], LbAlgorithm::RoundRobin);
        for _ in 0..10 {
            assert_eq!(b.pick(&e, &input(&h), &[0]), Some(1));
        }
    }

    #[test]
    fn priority_load_spills_with_overprovisioning() {
        let (b, e) = balancer(&[1; 10], LbAlgorithm::Random);
        // Two levels of 5 endpoints; 3 of 5 healthy in level 0: health min(100, 1.4*60) = 84.
        let b = Balancer {
            placement: (0..10).map(|i| Placement { priority: (i / 5) as u32, weight: 1 }).collect(),
            levels: 2,
            ..b
        };
        let avail: Box<[bool]> = (0..10).map(|i| !(i == 0 || i == 1)).collect();
        let t = b.build(&e, avail);
        assert_eq!(&*t.load, &[84, 100]);
        assert_eq!(t.pools[0].members.len(), 3);
        // All of level 0 healthy: everything stays there.
        let t = b.build(&e, vec![true; 10].into());
        assert_eq!(&*t.load, &[100, 100]);
        // Nothing healthy anywhere, panic disabled: no endpoint.
        let t = b.build(&e, vec![false; 10].into());
        assert!(t.pools[0].members.is_empty());
        // Panic threshold 50%: a level with 2 of 5 healthy balances over all 5.
        let b = Balancer { panic_threshold: 50, ..b };
        let t = b.build(&e, (0..10).map(|i| i >= 3).collect());
        assert_eq!(t.pools[0].members.len(), 5);
    }

    #[test]
    fn slow_start_factor() {
        let s = SlowStart { window: Duration::from_secs(10), aggression: 1.0, minimum: 0.1, until: None };
        assert_eq!(s.factor(Duration::from_secs(0)), 0.1);
        assert!((s.factor(Duration::from_secs(5)) - 0.5).abs() < 1e-9);
        assert_eq!(s.factor(Duration::from_secs(10)), 1.0);
        let s = SlowStart { aggression: 2.0, ..s };
        assert!((s.factor(Duration::from_millis(2500)) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn slow_start_scales_new_endpoints() {
        let (mut c, e) = cluster(&[1, 1], LbAlgorithm::RoundRobin);
        let mut p = (*c.policy).clone();
        p.load_balancer.warmup =
            Some(Warmup { duration: Duration::from_secs(3600), aggression: F64(1.0), minimum_percent: F64(10.0) });
        c.policy = Arc::new(p);
        // Endpoint 0 is old: its window has passed.
        let mut old = EndpointState::for_test("10.0.0.0:80", 1);
        Arc::get_mut(&mut old).unwrap().created = Instant::now() - Duration::from_secs(7200);
        let e = vec![old, e[1].clone()];
        let b = Balancer::new(&c, &NodeSummary::default(), &e);
        let h = HeaderMap::new();
        let mut counts = [0; 2];
        (0..10_000).for_each(|_| counts[b.pick(&e, &input(&h), &[]).unwrap()] += 1);
        // The new endpoint is at the 10% floor: about 1 in 11 picks, bounded by the retries.
        assert!(counts[1] < 1_500, "{counts:?}");
        assert!(counts[1] > 400, "{counts:?}");
    }

    #[test]
    fn cookie_is_generated_when_absent() {
        let key = HashKey::Cookie(Box::new(HashCookie {
            name: "session".into(),
            path: Some("/".into()),
            ttl: Some(Duration::from_secs(60)),
            attributes: vec![("SameSite".into(), "Strict".into())],
        }));
        let (b, e) = balancer(&[1, 1, 1], LbAlgorithm::RingHash { hash_key: Some(key), minimum_ring_size: 64 });
        let h = HeaderMap::new();
        let set = b.set_cookie(&h, IpAddr::from([127, 0, 0, 1])).unwrap();
        let text = set.to_str().unwrap();
        assert!(text.starts_with("session=\""), "{text}");
        assert!(text.ends_with("; Max-Age=60; Path=/; SameSite=Strict; HttpOnly"), "{text}");
        // The request that got the cookie and a later one carrying it land on the same endpoint.
        let first = b.pick(&e, &input(&h), &[]).unwrap();
        let value = text.split(';').next().unwrap();
        let mut h2 = HeaderMap::new();
        h2.insert(http::header::COOKIE, value.parse().unwrap());
        assert!(b.set_cookie(&h2, IpAddr::from([127, 0, 0, 1])).is_none());
        assert_eq!(b.pick(&e, &PickInput { peer: IpAddr::from([10, 9, 9, 9]), ..input(&h2) }, &[]), Some(first));
    }
}
