//! Go's formatting and parsing of the values Istio's messages print, so the
//! texts match istiod's byte for byte: `%q` of a string (`strconv.Quote`),
//! `%v` and `%f` of a `float64`, `%v` of a `[]string`, and `strconv.Atoi`.

use std::fmt::Write as _;
use std::sync::LazyLock;

use regex::Regex;

/// Go's `%q` of a string (`strconv.Quote`): `"` and `\` backslashed,
/// printable runes (`strconv.IsPrint`) kept, the rest escaped as `\a`-style,
/// `\xNN`, `\uNNNN` or `\UNNNNNNNN`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if is_print(c) => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Letters, marks, numbers, punctuation and symbols of Unicode 15.0, the
/// version Go's tables carry (Go 1.26, which Istio builds with).
static GRAPHIC: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^[\p{L}\p{M}\p{N}\p{P}\p{S}&&\p{age:15.0}]$").ok());

/// Go's `strconv.IsPrint` (= `unicode.IsPrint`): letters, marks, numbers,
/// punctuation, symbols and the ASCII space.
pub fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    let mut buf = [0; 4];
    GRAPHIC.as_ref().is_some_and(|re| re.is_match(c.encode_utf8(&mut buf)))
}

/// Go's `%v` of a `float64` (`strconv.FormatFloat(v, 'g', -1, 64)`): the
/// shortest digits that read back as `v`, in exponent form (`1e-05`,
/// `1.5e+06`) when the decimal exponent is below -4 or at least 6.
pub fn float_v(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    // Rust's `{:e}` gives the same shortest digits (`1.5e-7`, `0e0`); Go
    // writes the exponent with a sign and at least two digits.
    let sci = format!("{v:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else { return sci };
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        return format!("{v}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
}

/// Go's `%f` of a `float64`: six decimals.
pub fn float_f(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v:.6}")
    }
}

/// Go's `%v` of a `[]string`: `[a b c]`.
pub fn strings_v<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let mut out = String::from("[");
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(s.as_ref());
    }
    out.push(']');
    out
}

const SYNTAX: &str = "invalid syntax";
const RANGE: &str = "value out of range";

/// Go's `strconv.Atoi` (64-bit `int`), with its error text
/// (`strconv.Atoi: parsing "x": invalid syntax`).
pub fn atoi(s: &str) -> Result<i64, String> {
    parse_int(s).map_err(|(_, why)| format!("strconv.Atoi: parsing {}: {why}", quote(s)))
}

/// The number `strconv.Atoi` returns when its error is ignored: 0 for bad
/// syntax, the nearest bound when out of range.
pub fn atoi_value(s: &str) -> i64 {
    parse_int(s).unwrap_or_else(|(v, _)| v)
}

/// `strconv.ParseInt(s, 10, 64)`: an optional sign and decimal digits. The
/// error carries Go's returned value and reason; like Go, an overflow is
/// reported as soon as it happens, before any later bad character.
fn parse_int(s: &str) -> Result<i64, (i64, &'static str)> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return Err((0, SYNTAX));
    }
    let bound = if neg { i64::MIN } else { i64::MAX };
    let mut n: u64 = 0;
    for c in digits.bytes() {
        if !c.is_ascii_digit() {
            return Err((0, SYNTAX));
        }
        n = n.checked_mul(10).and_then(|n| n.checked_add(u64::from(c - b'0'))).ok_or((bound, RANGE))?;
    }
    if neg {
        if n > 1 << 63 {
            return Err((bound, RANGE));
        }
        Ok((n as i64).wrapping_neg())
    } else {
        i64::try_from(n).map_err(|_| (bound, RANGE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_strconv_quote() {
        assert_eq!(quote(""), r#""""#);
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote("\u{7}\u{8}\u{c}\n\r\t\u{b}"), r#""\a\b\f\n\r\t\v""#);
        assert_eq!(quote("x\u{0}\u{1}\u{1f}\u{7f}"), r#""x\x00\x01\x1f\x7f""#);
        // Non-ASCII: graphic runes stay, spaces, controls, format and
        // private-use runes are escaped.
        assert_eq!(quote("é'ü日本🎉"), "\"é'ü日本🎉\"");
        assert_eq!(quote("a b"), r#""a b""#);
        assert_eq!(quote("\u{a0}\u{3000}\u{2028}"), r#""\u00a0\u3000\u2028""#);
        assert_eq!(quote("\u{85}\u{ad}\u{200b}\u{feff}"), r#""\u0085\u00ad\u200b\ufeff""#);
        assert_eq!(quote("\u{e000}\u{378}"), r#""\ue000\u0378""#);
        assert_eq!(quote("\u{e0001}\u{10ffff}"), r#""\U000e0001\U0010ffff""#);
        // Combining marks are printable.
        assert_eq!(quote("e\u{301}"), "\"e\u{301}\"");
    }

    #[test]
    fn printable_follows_unicode_15() {
        assert!(is_print(' ') && is_print('~') && is_print('€') && is_print('\u{1fae8}'));
        assert!(!is_print('\u{7f}') && !is_print('\u{a0}') && !is_print('\u{fffe}'));
        // Assigned only in Unicode 16.0, so Go does not count it as printable yet.
        assert!(!is_print('\u{1fae9}'));
    }

    #[test]
    fn floats_like_percent_v() {
        for (v, want) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (0.5, "0.5"),
            (101.0, "101"),
            (-0.1, "-0.1"),
            (150.0, "150"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000015, "1.5e-05"),
            (123456.0, "123456"),
            (999999.5, "999999.5"),
            (1000000.0, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1e21, "1e+21"),
            (1e100, "1e+100"),
            (5e-324, "5e-324"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(float_v(v), want, "{v:e}");
        }
    }

    #[test]
    fn floats_like_percent_f() {
        assert_eq!(float_f(-1.0), "-1.000000");
        assert_eq!(float_f(100.5), "100.500000");
        assert_eq!(float_f(1e-7), "0.000000");
        assert_eq!(float_f(f64::INFINITY), "+Inf");
    }

    #[test]
    fn string_slices_like_percent_v() {
        assert_eq!(strings_v(Vec::<String>::new()), "[]");
        assert_eq!(strings_v(["a", "b c"]), "[a b c]");
    }

    #[test]
    fn atoi_like_strconv() {
        assert_eq!(atoi("42"), Ok(42));
        assert_eq!(atoi("+42"), Ok(42));
        assert_eq!(atoi("-0"), Ok(0));
        assert_eq!(atoi("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(atoi("-9223372036854775808"), Ok(i64::MIN));
        for bad in ["", "+", "-", " 1", "1_000", "0x10", "1.0", "٣"] {
            assert_eq!(atoi(bad), Err(format!("strconv.Atoi: parsing {}: invalid syntax", quote(bad))), "{bad}");
        }
        for big in ["9223372036854775808", "-9223372036854775809", "99999999999999999999x"] {
            assert_eq!(atoi(big), Err(format!("strconv.Atoi: parsing \"{big}\": value out of range")), "{big}");
        }
        assert_eq!(atoi_value("503"), 503);
        assert_eq!(atoi_value("5x"), 0);
        assert_eq!(atoi_value("99999999999999999999"), i64::MAX);
        assert_eq!(atoi_value("-99999999999999999999"), i64::MIN);
    }
}
