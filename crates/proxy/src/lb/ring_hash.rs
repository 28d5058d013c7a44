//! Ketama-style ring hash, as Envoy's `RING_HASH` builds it: every endpoint
//! puts `weight`-proportional points on a 64-bit ring (the xxHash64 of
//! `"<address>_<n>"`), the ring is sorted once, and a request goes to the
//! first point at or after its hash (wrapping around). A pick is one binary
//! search. Points per weight unit are a power of two, so removing an endpoint
//! usually removes only its points and only the keys that were on it move
//! (Envoy rescales every endpoint's point count to the new set instead).

use super::hash::xxh64;

/// Envoy's default `maximum_ring_size`.
pub(crate) const MAXIMUM_RING_SIZE: u64 = 8 * 1024 * 1024;

#[derive(Debug, Default)]
pub(crate) struct Ring {
    hashes: Box<[u64]>,
    /// Member (position in the pool) of each point, parallel to `hashes`.
    members: Box<[u32]>,
}

impl Ring {
    /// Builds a ring over `hosts` (the key hashed for each) with `weights`: `weight × k`
    /// points each, `k` the power of two (possibly below 1 for large weights) that gives
    /// `minimum` to `2 × minimum` points in all (at most [`MAXIMUM_RING_SIZE`]). Because
    /// `k` moves in powers of two, adding or removing an endpoint usually leaves the other
    /// endpoints' points, and so their keys, exactly where they were.
    pub fn build(hosts: &[&str], weights: &[u64], minimum: u64) -> Ring {
        let total: u64 = weights.iter().sum();
        if hosts.is_empty() || total == 0 {
            return Ring::default();
        }
        let minimum = minimum.clamp(1, MAXIMUM_RING_SIZE);
        let lightest = weights.iter().copied().filter(|w| *w > 0).min().unwrap_or(1);
        let scale = if total < minimum {
            minimum.div_ceil(total).next_power_of_two() as f64
        } else {
            // Large weights (e.g. `distribute` shares): halve the points per weight unit
            // while the ring keeps `minimum` points and the lightest endpoint one.
            let halvings = (total / minimum).ilog2().min(lightest.ilog2());
            1.0 / (1u64 << halvings) as f64
        };
        let scale = scale.min(MAXIMUM_RING_SIZE as f64 / total as f64);
        let mut points: Vec<(u64, u32)> = Vec::new();
        let mut key = String::new();
        for (m, (host, w)) in hosts.iter().zip(weights).enumerate() {
            if *w == 0 {
                continue;
            }
            let count = ((*w as f64 * scale).round() as u64).max(1);
            for n in 0..count {
                key.clear();
                key.push_str(host);
                key.push('_');
                key.push_str(itoa(n, &mut [0u8; 20]));
                points.push((xxh64(key.as_bytes(), 0), m as u32));
            }
        }
        points.sort_unstable();
        Ring { hashes: points.iter().map(|p| p.0).collect(), members: points.iter().map(|p| p.1).collect() }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The member owning `hash`: the first point at or after it, wrapping to the start.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u32> {
        if self.hashes.is_empty() {
            return None;
        }
        let i = self.hashes.partition_point(|h| *h < hash);
        Some(self.members[if i == self.hashes.len() { 0 } else { i }])
    }
}

fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_minimum_and_weights() {
        let r = Ring::build(&["a:1", "b:1"], &[1, 1], 1024);
        assert_eq!(r.len(), 1024);
        let r = Ring::build(&["a:1", "b:1"], &[3, 1], 1024);
        let a = (0..r.len()).filter(|i| r.members[*i] == 0).count();
        assert!((a as f64 / r.len() as f64 - 0.75).abs() < 0.01, "{a} of {}", r.len());
        assert_eq!(itoa(1234, &mut [0; 20]), "1234");
        // `distribute`-sized weights do not blow the ring up.
        let r = Ring::build(&["a:1", "b:1", "c:1"], &[70_000, 20_000, 10_000], 1024);
        assert!((1024..=2048).contains(&r.len()), "{}", r.len());
        // Every endpoint keeps at least one point.
        let hosts: Vec<String> = (0..5000).map(|i| format!("h{i}")).collect();
        let all: Vec<&str> = hosts.iter().map(String::as_str).collect();
        assert_eq!(Ring::build(&all, &[1; 5000], 1024).len(), 5000);
    }

    #[test]
    fn removing_a_host_moves_only_its_keys() {
        let hosts: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}:80")).collect();
        let all: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let before = Ring::build(&all, &[1; 10], 1024);
        let rest: Vec<&str> = all.iter().copied().filter(|h| *h != "10.0.0.3:80").collect();
        let after = Ring::build(&rest, &[1; 9], 1024);
        for k in 0..10_000u64 {
            let h = xxh64(&k.to_le_bytes(), 0);
            let b = all[before.lookup(h).unwrap() as usize];
            let a = rest[after.lookup(h).unwrap() as usize];
            if b != "10.0.0.3:80" {
                assert_eq!(a, b);
            }
        }
    }
}
