//! Building [`Str`]s without a throw-away `String`: `Str::from(String)`
//! copies into a new allocation, which doubles the allocations of every
//! built name, and `format!` machinery costs more than the copy itself. A
//! compile of a large mesh builds tens of thousands of names (clusters,
//! virtual hosts, field paths): short ones are joined on the stack.

use crate::model::Str;

/// Results up to this many bytes are joined on the stack.
const STACK: usize = 256;

/// Calls `f` with the concatenation of `parts`, joined on the stack when short enough.
pub(crate) fn with_concat<R>(parts: &[&str], f: impl FnOnce(&str) -> R) -> R {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len <= STACK {
        let mut buf = [0u8; STACK];
        let mut at = 0;
        for p in parts {
            buf[at..at + p.len()].copy_from_slice(p.as_bytes());
            at += p.len();
        }
        // Always valid (whole UTF-8 strings joined); checked because this crate has no `unsafe`.
        if let Ok(s) = std::str::from_utf8(&buf[..len]) {
            return f(s);
        }
    }
    f(&parts.concat())
}

/// The concatenation of `parts` as a [`Str`], in one allocation when short.
pub(crate) fn concat_str(parts: &[&str]) -> Str {
    with_concat(parts, |s: &str| Str::from(s))
}

/// `s` ASCII-lower-cased: the same `Str` (no allocation) when already lower-case.
pub(crate) fn lowercased(s: &Str) -> Str {
    if s.bytes().any(|b| b.is_ascii_uppercase()) { Str::from(s.to_ascii_lowercase()) } else { s.clone() }
}

/// `s` ASCII-lower-cased as a [`Str`] (one allocation when already lower-case).
pub(crate) fn lower_str(s: &str) -> Str {
    if s.bytes().any(|b| b.is_ascii_uppercase()) { Str::from(s.to_ascii_lowercase()) } else { Str::from(s) }
}

/// The decimal text of a number, on the stack.
pub(crate) struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    pub(crate) fn new(n: impl Into<u64>) -> Digits {
        let mut n: u64 = n.into();
        let mut buf = [0u8; 20];
        let mut start = buf.len();
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Digits { buf, start }
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_like_concat() {
        assert_eq!(&*concat_str(&["a", "1", "b"]), "a1b");
        assert_eq!(&*concat_str(&[]), "");
        let long = "x".repeat(STACK + 10);
        assert_eq!(&*concat_str(&[&long, ":80"]), format!("{long}:80"));
        let exact = "y".repeat(STACK);
        assert_eq!(&*concat_str(&[&exact]), exact);
        assert_eq!(with_concat(&["é", "ü"], str::len), "éü".len());
    }

    #[test]
    fn digits_and_case() {
        for n in [0u64, 7, 10, 80, 9080, 65535, u64::MAX] {
            assert_eq!(Digits::new(n).as_str(), n.to_string());
        }
        assert_eq!(&*lower_str("Foo.COM"), "foo.com");
        assert_eq!(&*lower_str("foo"), "foo");
        assert_eq!(&*lowercased(&Str::from("A.b")), "a.b");
    }
}
