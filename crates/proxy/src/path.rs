//! Request path normalization, as Istio configures Envoy's connection manager
//! (MeshConfig `pathNormalization`, default `BASE`).
//!
//! `BASE` is Envoy's `normalize_path`: the path (not the query) is canonicalized the way Envoy's
//! copy of Chromium's URL canonicalizer does it. `\` separates segments like `/`; `.` and `..`
//! segments are resolved (also written `%2e`, and with `;parameters`, which are dropped); escaped
//! unreserved characters (`%41`) are decoded, other escapes are kept as written; characters that
//! must not appear raw (space, `"`, `<`, `>`, `` ` ``, `{`, `}`, controls, non-ASCII) are escaped;
//! an escaped NUL makes the path invalid (400). `MERGE_SLASHES` also collapses `//`.
//! `DECODE_AND_MERGE_SLASHES` first decodes `%2F` and `%5C`. Routing and the upstream see the
//! result. Most paths need none of it, which one pass over their bytes establishes.

use weir_compile::model::PathNormalization;

/// What normalizing a request target gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Normalized {
    /// Already normal: use it as it is.
    Unchanged,
    /// The new path and query.
    Changed(String),
    /// An escaped NUL (or a raw one): answer 400.
    Invalid,
}

/// Normalizes `target` (a path with an optional `?query`) under `mode`.
pub fn normalize(target: &str, mode: PathNormalization) -> Normalized {
    if mode == PathNormalization::None || target.is_empty() || target == "*" {
        return Normalized::Unchanged;
    }
    let (path, query) = match target.find('?') {
        Some(i) => target.split_at(i),
        None => (target, ""),
    };
    let merge = mode != PathNormalization::Base;
    if !needs_work(path.as_bytes(), merge) {
        return Normalized::Unchanged;
    }
    let decoded;
    let path = if mode == PathNormalization::DecodeAndMergeSlashes {
        decoded = decode_slashes(path);
        decoded.as_str()
    } else {
        path
    };
    let Some(mut out) = canonicalize(path) else { return Normalized::Invalid };
    if merge {
        merge_slashes(&mut out);
    }
    out.push_str(query);
    if out == target { Normalized::Unchanged } else { Normalized::Changed(out) }
}

/// Characters that are copied as they are (everything else may need work).
fn plain(b: u8) -> bool {
    PLAIN[usize::from(b)]
}

/// `plain` as a table: one load per byte on the path every request takes.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x21;
    while b < 0x7f {
        t[b] = !matches!(b as u8, b'%' | b'\\' | b'"' | b'<' | b'>' | b'`' | b'{' | b'}');
        b += 1;
    }
    t
};

/// Whether `path` could change: a character that is escaped, decoded or turned into `/`, a dot
/// segment, no leading `/`, or (`merge`) an empty segment.
fn needs_work(path: &[u8], merge: bool) -> bool {
    if path.first() != Some(&b'/') {
        return true;
    }
    let mut prev = 0u8;
    for (i, &b) in path.iter().enumerate() {
        if !plain(b) || (prev == b'/' && ((merge && b == b'/') || (b == b'.' && is_dot_segment(&path[i..])))) {
            return true;
        }
        prev = b;
    }
    false
}

/// Whether a segment starting at `seg` (up to the next `/`) is `.` or `..`, optionally followed
/// by `;parameters`.
fn is_dot_segment(seg: &[u8]) -> bool {
    let end = seg.iter().position(|&b| b == b'/').unwrap_or(seg.len());
    let name = &seg[..end];
    let name = &name[..name.iter().position(|&b| b == b';').unwrap_or(name.len())];
    name == b"." || name == b".."
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// The byte `%XX` at `s[i..]` stands for.
fn escaped(s: &[u8], i: usize) -> Option<u8> {
    let hi = hex(*s.get(i + 1)?)?;
    let lo = hex(*s.get(i + 2)?)?;
    Some(hi << 4 | lo)
}

/// `%2F` and `%5C` (any case) decoded to `/` and `\`; the rest untouched.
fn decode_slashes(path: &str) -> String {
    let s = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < s.len() {
        match escaped(s, i).filter(|_| s[i] == b'%') {
            Some(b'/') => {
                out.push('/');
                i += 3;
            }
            Some(b'\\') => {
                out.push('\\');
                i += 3;
            }
            _ => {
                let next = path[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&path[i..i + next]);
                i += next;
            }
        }
    }
    out
}

/// Chromium's path canonicalization as Envoy uses it; `None` for an escaped or raw NUL.
fn canonicalize(path: &str) -> Option<String> {
    // First the characters, segment by segment (`\` ends a segment as `/` does).
    let s = path.as_bytes();
    let mut segments: Vec<String> = Vec::new();
    let mut seg = String::new();
    let mut i = usize::from(s.first() == Some(&b'/') || s.first() == Some(&b'\\'));
    while i < s.len() {
        let b = s[i];
        match b {
            b'/' | b'\\' => segments.push(std::mem::take(&mut seg)),
            b'%' => match escaped(s, i) {
                Some(0) => return None,
                Some(v) if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                    seg.push(char::from(v));
                    i += 2;
                }
                Some(_) => {
                    // Kept as written, hex case included (servers may care).
                    seg.push_str(&path[i..i + 3]);
                    i += 2;
                }
                // Not an escape: the `%` is copied, as Chromium (and so Envoy) permits.
                None => seg.push('%'),
            },
            0 => return None,
            _ if plain(b) => seg.push(char::from(b)),
            _ => {
                // Escaped: controls, space, `"`, `<`, `>`, `` ` ``, `{`, `}` and every byte of a
                // non-ASCII character.
                use std::fmt::Write as _;
                let _ = write!(seg, "%{b:02X}");
            }
        }
        i += 1;
    }
    segments.push(seg);
    // Then the dot segments; one at the end leaves the path ending in `/`.
    let mut out: Vec<String> = Vec::with_capacity(segments.len());
    let last = segments.len() - 1;
    for (n, seg) in segments.into_iter().enumerate() {
        let name = &seg[..seg.find(';').unwrap_or(seg.len())];
        match name {
            "." | ".." => {
                if name == ".." {
                    out.pop();
                }
                if n == last {
                    out.push(String::new());
                }
            }
            _ => out.push(seg),
        }
    }
    let mut path = String::with_capacity(out.iter().map(|s| s.len() + 1).sum());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() {
        path.push('/');
    }
    Some(path)
}

/// Collapses runs of `/` into one.
fn merge_slashes(path: &mut String) {
    if path.contains("//") {
        let mut out = String::with_capacity(path.len());
        for c in path.chars() {
            if !(c == '/' && out.ends_with('/')) {
                out.push(c);
            }
        }
        *path = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(p: &str) -> String {
        match normalize(p, PathNormalization::Base) {
            Normalized::Unchanged => p.to_string(),
            Normalized::Changed(s) => s,
            Normalized::Invalid => "INVALID".to_string(),
        }
    }

    #[test]
    fn normal_paths_are_left_alone_without_allocating() {
        for p in ["/", "/xyz", "/x/y/z", "/static/app.js", "/a/.hidden", "/a/...", "/a/..b", "/a;b=c/d", "/a?x=/../y"] {
            assert_eq!(normalize(p, PathNormalization::Base), Normalized::Unchanged, "{p}");
        }
        assert_eq!(normalize("/a/../b", PathNormalization::None), Normalized::Unchanged);
    }

    /// Envoy's own expectations for `normalize_path` (its path utility tests).
    #[test]
    fn dot_segments_backslashes_and_escapes_as_envoy() {
        for (input, want) in [
            ("/a/b/../c", "/a/c"),
            ("/a/b/./c", "/a/b/c"),
            ("a/b/../c", "/a/c"),
            ("/a/b/../../../../c", "/c"),
            ("/a/..\\c", "/c"),
            ("/%c0%af", "/%c0%af"),
            ("/%5c%25", "/%5c%25"),
            ("/a/b/%2E%2E/c", "/a/c"),
            ("/a/b/%2e%2e/c", "/a/c"),
            ("/a/b/%2E./c", "/a/c"),
            ("/a/b/%2E/c", "/a/b/c"),
            ("..", "/"),
            ("/../a/b", "/a/b"),
            ("/./a/b", "/a/b"),
            ("/A/B/C", "/A/B/C"),
            ("/a/%2F%2f/c", "/a/%2F%2f/c"),
            ("/xyz/..;foo=bar/abc", "/abc"),
            ("/..;foo=bar/abc", "/abc"),
            ("/xyz/..;foo=bar", "/"),
            ("/xyz/.;foo=bar/abc", "/xyz/abc"),
            ("/.;foo=bar/abc", "/abc"),
            ("/xyz/.;foo=bar", "/xyz/"),
            ("/xyz/..;foo=bar/.;v1=2,v2=3/abc", "/abc"),
            ("/..;foo=bar/abc/.;mmm", "/abc/"),
            ("/.;aaa/..;foo=bar/abc/.;mmm", "/abc/"),
            ("/xyz/..;foo=bar/.;fff=zzz", "/"),
            ("/xyz/..;foo=bar/.;fff=zzz?blah=woops", "/?blah=woops"),
            ("/xyz/..;foo=bar/.;fff=zzz/remain;blah-bluh?query", "/remain;blah-bluh?query"),
            // Escaped unreserved characters are decoded; raw ones that must be escaped are.
            ("/%41%7e%2D", "/A~-"),
            ("/a b\"{}", "/a%20b%22%7B%7D"),
            ("/é", "/%C3%A9"),
            ("/50%", "/50%"),
            ("/a//b", "/a//b"),
        ] {
            assert_eq!(base(input), want, "{input}");
        }
    }

    #[test]
    fn an_escaped_nul_is_invalid() {
        for p in ["/xyz/.%00../abc", "/xyz/%00.%00./abc", "/xyz/AAAAA%%0000/abc"] {
            assert_eq!(normalize(p, PathNormalization::Base), Normalized::Invalid, "{p}");
        }
    }

    #[test]
    fn merging_and_decoding_slashes() {
        let merge = |p| normalize(p, PathNormalization::MergeSlashes);
        assert_eq!(merge("/a//b/c"), Normalized::Changed("/a/b/c".into()));
        assert_eq!(merge("//a/b/../c//?a=//b"), Normalized::Changed("/a/c/?a=//b".into()));
        assert_eq!(merge("/a/%2F/b"), Normalized::Unchanged);
        let decode = |p| normalize(p, PathNormalization::DecodeAndMergeSlashes);
        assert_eq!(decode("/a%2Fb%2f..%5Cc"), Normalized::Changed("/a/c".into()));
        assert_eq!(decode("/a%2F%2Fb?x=%2F"), Normalized::Changed("/a/b?x=%2F".into()));
    }

    /// Random paths from the characters that matter: no panic, and normalizing twice changes
    /// nothing more (a normalized path is routed the same if it comes back normalized).
    #[test]
    fn any_path_normalizes_once_and_for_all() {
        const PIECES: [&str; 16] =
            ["/", ".", "..", "%2e", "%2E", "%2f", "%5C", "\\", ";p=1", "a", "%41", "%00", "%", "é", "?", " "];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut changed = 0;
        for _ in 0..20_000 {
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut path = String::new();
            for _ in 0..1 + next() % 12 {
                path.push_str(PIECES[(next() % 16) as usize]);
            }
            for mode in
                [PathNormalization::Base, PathNormalization::MergeSlashes, PathNormalization::DecodeAndMergeSlashes]
            {
                if let Normalized::Changed(once) = normalize(&path, mode) {
                    changed += 1;
                    assert!(once.starts_with('/'), "{path:?} -> {once:?}");
                    assert_eq!(normalize(&once, mode), Normalized::Unchanged, "{path:?} -> {once:?} ({mode:?})");
                }
            }
        }
        assert!(changed > 10_000, "only {changed} paths needed work");
    }
}
