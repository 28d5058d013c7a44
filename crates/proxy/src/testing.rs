//! Support for tests that start weir on ports named in its config (listeners, the admin
//! server), shared by this crate's and the `weir` binary's integration tests.
//!
//! A port taken from the kernel (`bind` to port 0, then closed) comes from the ephemeral range,
//! the same range the kernel draws from for the local end of every outgoing connection. Between
//! the moment a test closes it and the moment weir binds it, a connection made by another test
//! can take it, and weir then fails with "Address already in use". The ports here come from
//! below the ephemeral range instead, each handed out once per process (starting at a random
//! point, so that test processes running side by side rarely meet) and checked free.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const LOW: u16 = 10_000;

/// `[LOW, first ephemeral port)`, and where this process starts in it.
struct Range {
    high: u16,
    start: u32,
}

fn range() -> &'static Range {
    static RANGE: OnceLock<Range> = OnceLock::new();
    RANGE.get_or_init(|| {
        // "32768\t60999" on Linux by default.
        let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32_768);
        let span = u32::from(high.saturating_sub(LOW)).max(1);
        Range { high, start: fastrand::u32(..span) }
    })
}

/// A port nothing listens on, not handed out before by this process, outside the kernel's
/// ephemeral range.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive ports as [`free_port`] gives them.
///
/// # Panics
/// When no such block is free (the tests cannot run then).
pub fn free_ports(n: u16) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    free_ports_from(range(), &NEXT, n)
}

fn free_ports_from(r: &Range, next: &AtomicU32, n: u16) -> u16 {
    if r.high < LOW + 1_000 {
        // An unusual ephemeral range: fall back to the kernel's choice (one port only).
        assert_eq!(n, 1, "no room below the ephemeral range ({}) for {n} ports", r.high);
        return TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
    }
    let span = u32::from(r.high - LOW);
    for _ in 0..span / u32::from(n.max(1)) {
        let offset = (r.start + next.fetch_add(u32::from(n), Ordering::Relaxed)) % span;
        let Ok(base) = u16::try_from(u32::from(LOW) + offset) else { continue };
        if base.checked_add(n).is_none_or(|end| end > r.high) {
            continue;
        }
        // Held together while checked, so the block is free as a whole.
        let held: Vec<TcpListener> = (0..n).filter_map(|i| TcpListener::bind(("127.0.0.1", base + i)).ok()).collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
    panic!("no block of {n} free ports between {LOW} and {}", r.high);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_outside_the_ephemeral_range() {
        let high = range().high;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let p = free_port();
            assert!((LOW..high).contains(&p), "{p} not in {LOW}..{high}");
            assert!(seen.insert(p), "{p} handed out twice");
            TcpListener::bind(("127.0.0.1", p)).expect("the port is free");
        }
        let base = free_ports(5);
        for p in base..base + 5 {
            assert!(seen.insert(p), "{p} handed out twice");
            TcpListener::bind(("127.0.0.1", p)).expect("the block is free");
        }
    }

    #[test]
    fn ports_in_use_are_skipped() {
        // A range of its own, starting where a port (or a block) is already taken.
        let taken = free_port();
        let _held = TcpListener::bind(("127.0.0.1", taken)).expect("bind");
        let r = Range { high: range().high, start: u32::from(taken - LOW) };
        let p = free_ports_from(&r, &AtomicU32::new(0), 1);
        assert_ne!(p, taken);
        TcpListener::bind(("127.0.0.1", p)).expect("the port is free");
        // A block that would include the taken port is not handed out.
        let r = Range { high: range().high, start: u32::from(taken - LOW).saturating_sub(2) };
        let base = free_ports_from(&r, &AtomicU32::new(0), 4);
        assert!(!(base..base + 4).contains(&taken), "block {base}.. includes {taken}");
    }
}
