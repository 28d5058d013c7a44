//! Maglev consistent hashing (Eisenbud et al., 2016) as Envoy's `MAGLEV`
//! builds it: every endpoint walks its own permutation of a prime-sized table
//! (offset and skip from xxHash64 of its address with seeds 0 and 1) and claims
//! the next free slot on its turn; heavier endpoints take turns more often. A
//! pick is one table read (`hash % size`). Removing an endpoint moves its keys
//! and, by design, a small share of others (measured in the tests).

use super::hash::xxh64;

#[derive(Debug, Default)]
pub(crate) struct Maglev {
    /// Member (position in the pool) of each slot.
    table: Box<[u32]>,
}

impl Maglev {
    /// Builds a table of `size` slots (a prime, validated by the API) over `hosts` with `weights`.
    pub fn build(hosts: &[&str], weights: &[u64], size: u64) -> Maglev {
        let size = size.max(1);
        let live: Vec<usize> = (0..hosts.len()).filter(|i| weights[*i] > 0).collect();
        if live.is_empty() {
            return Maglev::default();
        }
        let max_w = live.iter().map(|i| weights[*i]).max().unwrap_or(1) as f64;
        struct Entry {
            member: u32,
            offset: u64,
            skip: u64,
            next: u64,
            weight: f64,
            target: f64,
        }
        let mut entries: Vec<Entry> = live
            .iter()
            .map(|i| {
                let h = hosts[*i].as_bytes();
                Entry {
                    member: *i as u32,
                    offset: xxh64(h, 0) % size,
                    skip: if size > 1 { xxh64(h, 1) % (size - 1) + 1 } else { 1 },
                    next: 0,
                    weight: weights[*i] as f64 / max_w,
                    target: 0.0,
                }
            })
            .collect();
        let mut table = vec![u32::MAX; size as usize];
        let mut filled = 0u64;
        let mut iteration = 1u64;
        while filled < size {
            for e in entries.iter_mut() {
                if filled == size {
                    break;
                }
                // An endpoint of weight max/k takes a turn every k iterations.
                if (iteration as f64) * e.weight < e.target {
                    continue;
                }
                e.target += 1.0;
                loop {
                    let slot = ((e.offset + e.skip.wrapping_mul(e.next) % size) % size) as usize;
                    e.next += 1;
                    if table[slot] == u32::MAX {
                        table[slot] = e.member;
                        filled += 1;
                        break;
                    }
                }
            }
            iteration += 1;
        }
        Maglev { table: table.into_boxed_slice() }
    }

    /// The member owning `hash`.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[(hash % self.table.len() as u64) as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.{}.{}:80", i / 250, i % 250)).collect()
    }

    #[test]
    fn fills_evenly_and_honours_weights() {
        let h = hosts(4);
        let all: Vec<&str> = h.iter().map(String::as_str).collect();
        let m = Maglev::build(&all, &[1, 1, 1, 1], 65537);
        let mut counts = [0usize; 4];
        m.table.iter().for_each(|s| counts[*s as usize] += 1);
        assert!(counts.iter().all(|c| (16_000..=16_800).contains(c)), "{counts:?}");
        let m = Maglev::build(&all, &[2, 1, 1, 0], 65537);
        let mut counts = [0usize; 4];
        m.table.iter().for_each(|s| counts[*s as usize] += 1);
        assert_eq!(counts[3], 0);
        assert!((counts[0] as f64 / 65537.0 - 0.5).abs() < 0.01, "{counts:?}");
    }

    #[test]
    fn removing_a_host_moves_few_other_keys() {
        let h = hosts(100);
        let all: Vec<&str> = h.iter().map(String::as_str).collect();
        let before = Maglev::build(&all, &[1; 100], 65537);
        let rest: Vec<&str> = all.iter().copied().filter(|x| *x != all[7]).collect();
        let after = Maglev::build(&rest, &[1; 99], 65537);
        let mut moved_others = 0;
        let n = 100_000u64;
        for k in 0..n {
            let key = xxh64(&k.to_le_bytes(), 0);
            let b = all[before.lookup(key).unwrap() as usize];
            let a = rest[after.lookup(key).unwrap() as usize];
            if b != all[7] && a != b {
                moved_others += 1;
            }
        }
        println!("maglev, 100 endpoints, one removed: {moved_others} of {n} keys of other endpoints moved");
        // Maglev's paper bounds disruption to a few percent of the table.
        assert!((moved_others as f64) < n as f64 * 0.03, "{moved_others} keys of other endpoints moved");
    }
}
