//! YAML as a flat list of events with lines, and a serde `Deserializer` that
//! decodes typed objects straight from those events. Skipping an intermediate
//! tree keeps loading fast; the events also yield the line of every field.
//!
//! Semantics follow what Istio sees after Kubernetes' YAML-to-JSON step:
//! YAML 1.2 core-schema scalars, `null` map values treated as absent,
//! aliases refused, and go-yaml's reading of `[2001:db8::]` as a string.

use std::borrow::Cow;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};

/// Nesting deeper than this is refused (no Istio object comes close).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Ev<'a> {
    /// Text, and whether it is a plain (unquoted, untagged) scalar subject to type resolution.
    Scalar(Cow<'a, str>, bool),
    SeqStart,
    SeqEnd,
    MapStart,
    MapEnd,
}

/// One parsed YAML stream.
#[derive(Debug, Default)]
pub struct Stream<'a> {
    pub events: Vec<Ev<'a>>,
    /// 1-based line of each event.
    pub lines: Vec<u32>,
    /// Event index ranges of the documents.
    pub docs: Vec<std::ops::Range<usize>>,
}

/// A syntax problem: line and message.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub line: u32,
    pub message: String,
}

/// Parses `text` into events.
pub fn parse(text: &str) -> Result<Stream<'_>, SyntaxError> {
    let ascii = text.is_ascii();
    let mut s = Stream::default();
    // Container kinds currently open (true = sequence) and the start of the open mapping's events.
    let mut stack: Vec<(bool, usize)> = Vec::new();
    let mut doc_start = 0;
    // Character offsets just past the last two scalars (a key and its value).
    let (mut prev_end, mut last_end) = (0usize, 0usize);
    for item in Parser::new_from_str(text) {
        let (ev, span) =
            item.map_err(|e| SyntaxError { line: e.marker().line() as u32, message: e.info().to_string() })?;
        let line = span.start.line() as u32;
        let depth_err = || SyntaxError { line, message: format!("nesting deeper than {MAX_DEPTH} levels") };
        match ev {
            Event::DocumentStart(_) => doc_start = s.events.len(),
            Event::DocumentEnd => s.docs.push(doc_start..s.events.len()),
            Event::Alias(_) => return Err(SyntaxError { line, message: "YAML aliases are not supported".into() }),
            Event::Scalar(text_v, style, _, tag) => {
                let plain = style == ScalarStyle::Plain
                    && !tag.as_ref().is_some_and(|t| t.handle == "tag:yaml.org,2002:" && t.suffix == "str");
                s.events.push(Ev::Scalar(text_v, plain));
                s.lines.push(line);
                (prev_end, last_end) = (last_end, span.end.index());
            }
            Event::SequenceStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(depth_err());
                }
                stack.push((true, s.events.len()));
                s.events.push(Ev::SeqStart);
                s.lines.push(line);
            }
            Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(depth_err());
                }
                stack.push((false, s.events.len()));
                s.events.push(Ev::MapStart);
                s.lines.push(line);
            }
            Event::SequenceEnd => {
                stack.pop();
                s.events.push(Ev::SeqEnd);
                s.lines.push(line);
            }
            Event::MappingEnd => {
                let start = stack.pop().map(|(_, i)| i).unwrap_or(0);
                let in_seq = stack.last().is_some_and(|(seq, _)| *seq);
                if in_seq && colon_item(text, ascii, &s, start, prev_end) {
                    // `{k: null}` written as `k:]`: go-yaml reads the string "k:".
                    let Ev::Scalar(k, _) = &s.events[start + 1] else { unreachable!("checked by colon_item") };
                    let joined = Ev::Scalar(Cow::Owned(format!("{k}:")), false);
                    s.events.truncate(start);
                    s.lines.truncate(start);
                    s.events.push(joined);
                    s.lines.push(line);
                } else {
                    s.events.push(Ev::MapEnd);
                    s.lines.push(line);
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
    Ok(s)
}

/// Whether the mapping whose events start at `start` is a one-entry
/// `{key: null}` whose value indicator sits right before `]` or `,` — the
/// YAML 1.2 reading of an IPv6 address like `2001:db8::` in a flow list.
fn colon_item(text: &str, ascii: bool, s: &Stream<'_>, start: usize, key_end: usize) -> bool {
    if s.events.len() != start + 3 {
        return false;
    }
    let (Ev::Scalar(k, true), Ev::Scalar(v, true)) = (&s.events[start + 1], &s.events[start + 2]) else {
        return false;
    };
    if !v.is_empty() || k.is_empty() {
        return false;
    }
    // Right after the key the text reads `:` then `]`, `,` or `}`.
    let tail: Option<(char, char)> = if ascii {
        let b = text.as_bytes();
        (key_end + 1 < b.len()).then(|| (b[key_end] as char, b[key_end + 1] as char))
    } else {
        let mut it = text.chars().skip(key_end);
        it.next().zip(it.next())
    };
    matches!(tail, Some((':', ']' | ',' | '}')))
}

/// A resolved scalar (YAML 1.2 core schema).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'s> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'s str),
}

pub fn resolve<'s>(text: &'s str, plain: bool) -> Scalar<'s> {
    if !plain {
        return Scalar::Str(text);
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Scalar::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Scalar::Str(text);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(v) = i64::from_str_radix(hex, 16)
    {
        return Scalar::Int(v);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(v) = i64::from_str_radix(oct, 8)
    {
        return Scalar::Int(v);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|c| c.is_ascii_digit())
        && let Ok(v) = text.parse::<i64>()
    {
        return Scalar::Int(v);
    }
    if is_float(digits)
        && let Ok(v) = text.parse::<f64>()
    {
        return Scalar::Float(v);
    }
    Scalar::Str(text)
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` without the sign.
fn is_float(s: &str) -> bool {
    let (mant, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mant_ok = match mant.split_once('.') {
        Some((a, b)) => {
            a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
                && (!a.is_empty() || !b.is_empty())
        }
        None => !mant.is_empty() && mant.bytes().all(|c| c.is_ascii_digit()),
    };
    let exp_ok = exp.is_none_or(|e| {
        let d = e.strip_prefix(['-', '+']).unwrap_or(e);
        !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit())
    });
    mant_ok && exp_ok
}

/// Index just past the node that starts at `i`.
pub fn skip(ev: &[Ev<'_>], mut i: usize) -> usize {
    let mut depth = 0usize;
    loop {
        match ev.get(i) {
            None => return i,
            Some(Ev::Scalar(..)) => {}
            Some(Ev::SeqStart | Ev::MapStart) => depth += 1,
            Some(Ev::SeqEnd | Ev::MapEnd) => depth = depth.saturating_sub(1),
        }
        i += 1;
        if depth == 0 {
            return i;
        }
    }
}

/// Iterates the `(key, value index)` entries of the mapping starting at `i`
/// whose keys are scalars.
pub fn entries<'e, 'a>(ev: &'e [Ev<'a>], i: usize) -> impl Iterator<Item = (&'e str, usize)> + 'e {
    let mut k = if matches!(ev.get(i), Some(Ev::MapStart)) { i + 1 } else { ev.len() };
    std::iter::from_fn(move || {
        loop {
            match ev.get(k)? {
                Ev::MapEnd => return None,
                Ev::Scalar(key, _) => {
                    let v = k + 1;
                    k = skip(ev, v);
                    return Some((key.as_ref(), v));
                }
                _ => {
                    let v = skip(ev, k);
                    k = skip(ev, v);
                }
            }
        }
    })
}

/// The scalar text at `i`, if it is a string-like scalar.
pub fn scalar_str<'e>(ev: &'e [Ev<'_>], i: usize) -> Option<&'e str> {
    match ev.get(i)? {
        Ev::Scalar(s, plain) => match resolve(s, *plain) {
            Scalar::Str(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

use crate::types::path_hash;

/// Records `(hash of field path, line)` for every node under `i`, paths
/// relative to that node (`spec.http[0].route`). Null map values are skipped
/// like the decoder skips them.
/// A key written twice in one mapping is an error, as in Kubernetes' YAML reader.
pub fn field_lines(ev: &[Ev<'_>], lines: &[u32], i: usize, out: &mut Vec<(u64, u32)>) -> Result<(), SyntaxError> {
    let mut path = String::new();
    walk(ev, lines, i, &mut path, None, out).map(|_| ())
}

/// `parent`: the line recorded for the parent path, when the parent is the path with its last
/// `.key` or `[n]` cut off (what `Origin::line_of` falls back to). A node on its parent's line
/// is not recorded: the lookup finds the same line through the parent (a flow mapping
/// `{address: 10.0.0.1, ports: {http: 80}}` costs one entry instead of four).
fn walk(
    ev: &[Ev<'_>],
    lines: &[u32],
    i: usize,
    path: &mut String,
    parent: Option<u32>,
    out: &mut Vec<(u64, u32)>,
) -> Result<usize, SyntaxError> {
    // The line a lookup of one of this node's children falls back to.
    let mut here = None;
    if !path.is_empty() {
        if parent != Some(lines[i]) {
            out.push((path_hash(path), lines[i]));
        }
        here = Some(lines[i]);
    }
    match ev.get(i) {
        Some(Ev::MapStart) => {
            let mut k = i + 1;
            let mut keys: Vec<&str> = Vec::new();
            while let Some(e) = ev.get(k) {
                match e {
                    Ev::MapEnd => return Ok(k + 1),
                    Ev::Scalar(key, _) => {
                        if keys.contains(&key.as_ref()) {
                            return Err(SyntaxError {
                                line: lines[k],
                                message: format!("mapping key {key:?} already defined"),
                            });
                        }
                        keys.push(key);
                        let len = path.len();
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(key);
                        // A key with `.` or `[` in it is not cut off whole by the lookup.
                        let parent = here.filter(|_| !key.contains(['.', '[']));
                        k = walk(ev, lines, k + 1, path, parent, out)?;
                        path.truncate(len);
                    }
                    _ => {
                        let v = skip(ev, k);
                        k = skip(ev, v);
                    }
                }
            }
            Ok(k)
        }
        Some(Ev::SeqStart) => {
            let mut k = i + 1;
            let mut n = 0;
            while let Some(e) = ev.get(k) {
                if matches!(e, Ev::SeqEnd) {
                    return Ok(k + 1);
                }
                let len = path.len();
                use std::fmt::Write;
                let _ = write!(path, "[{n}]");
                k = walk(ev, lines, k, path, here, out)?;
                path.truncate(len);
                n += 1;
            }
            Ok(k)
        }
        _ => Ok(i + 1),
    }
}

/// Decoding error; the path is added by `serde_path_to_error`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError(pub String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(msg.to_string())
    }
}

/// Deserializes the node at `pos` from the event list.
pub struct De<'e, 'a> {
    ev: &'e [Ev<'a>],
    pos: usize,
}

impl<'e, 'a> De<'e, 'a> {
    pub fn new(ev: &'e [Ev<'a>], pos: usize) -> Self {
        De { ev, pos }
    }

    fn peek(&self) -> Result<&'e Ev<'a>, DeError> {
        self.ev.get(self.pos).ok_or_else(|| DeError("unexpected end of document".into()))
    }

    fn unexpected(&self) -> de::Unexpected<'e> {
        match self.ev.get(self.pos) {
            Some(Ev::Scalar(s, plain)) => match resolve(s, *plain) {
                Scalar::Null => de::Unexpected::Unit,
                Scalar::Bool(b) => de::Unexpected::Bool(b),
                Scalar::Int(i) => de::Unexpected::Signed(i),
                Scalar::Float(f) => de::Unexpected::Float(f),
                Scalar::Str(s) => de::Unexpected::Str(s),
            },
            Some(Ev::SeqStart) => de::Unexpected::Seq,
            Some(Ev::MapStart) => de::Unexpected::Map,
            _ => de::Unexpected::Other("end of collection"),
        }
    }
}

impl<'de, 'e, 'a> Deserializer<'de> for &mut De<'e, 'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.peek()? {
            Ev::Scalar(s, plain) => {
                self.pos += 1;
                match resolve(s, *plain) {
                    Scalar::Null => v.visit_unit(),
                    Scalar::Bool(b) => v.visit_bool(b),
                    Scalar::Int(i) => v.visit_i64(i),
                    Scalar::Float(f) => v.visit_f64(f),
                    Scalar::Str(s) => v.visit_str(s),
                }
            }
            Ev::MapStart => {
                self.pos += 1;
                v.visit_map(Map { de: self })
            }
            Ev::SeqStart => {
                self.pos += 1;
                v.visit_seq(Seq::new(self))
            }
            Ev::SeqEnd | Ev::MapEnd => Err(DeError("unexpected end of collection".into())),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        if let Ev::Scalar(s, plain) = self.peek()?
            && resolve(s, *plain) == Scalar::Null
        {
            self.pos += 1;
            return v.visit_none();
        }
        v.visit_some(self)
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.peek()? {
            Ev::Scalar(s, plain) => match resolve(s, *plain) {
                Scalar::Str(s) => {
                    self.pos += 1;
                    v.visit_str(s)
                }
                _ => Err(de::Error::invalid_type(self.unexpected(), &v)),
            },
            _ => Err(de::Error::invalid_type(self.unexpected(), &v)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.peek()? {
            Ev::SeqStart => {
                self.pos += 1;
                v.visit_seq(Seq::new(self))
            }
            _ => Err(de::Error::invalid_type(self.unexpected(), &v)),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.peek()? {
            Ev::MapStart => {
                self.pos += 1;
                v.visit_map(Map { de: self })
            }
            _ => Err(de::Error::invalid_type(self.unexpected(), &v)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(v)
    }

    /// Unit variants by name (`mode: REGISTRY_ONLY`), for serde-derived enums.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match self.peek()? {
            Ev::Scalar(s, plain) => match resolve(s, *plain) {
                Scalar::Str(s) => {
                    self.pos += 1;
                    v.visit_enum(s.into_deserializer())
                }
                _ => Err(de::Error::invalid_type(self.unexpected(), &v)),
            },
            _ => Err(de::Error::invalid_type(self.unexpected(), &v)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.pos = skip(self.ev, self.pos);
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct
    }
}

struct Seq<'d, 'e, 'a> {
    de: &'d mut De<'e, 'a>,
    /// Elements not yet visited.
    left: usize,
}

impl<'d, 'e, 'a> Seq<'d, 'e, 'a> {
    /// The sequence whose first element is at `de.pos`, with its element count counted up front:
    /// `Vec`s are then allocated at their final size (no growth slack kept for as long as the
    /// config is loaded).
    fn new(de: &'d mut De<'e, 'a>) -> Self {
        let mut left = 0;
        let mut k = de.pos;
        while !matches!(de.ev.get(k), None | Some(Ev::SeqEnd)) {
            k = skip(de.ev, k);
            left += 1;
        }
        Seq { de, left }
    }
}

impl<'de> SeqAccess<'de> for Seq<'_, '_, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        if matches!(self.de.peek()?, Ev::SeqEnd) {
            self.de.pos += 1;
            return Ok(None);
        }
        self.left = self.left.saturating_sub(1);
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

struct Map<'d, 'e, 'a> {
    de: &'d mut De<'e, 'a>,
}

impl<'de> MapAccess<'de> for Map<'_, '_, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        loop {
            let ev = self.de.ev;
            match self.de.peek()? {
                Ev::MapEnd => {
                    self.de.pos += 1;
                    return Ok(None);
                }
                Ev::Scalar(k, _) => {
                    let key: &str = k.as_ref();
                    let value = self.de.pos + 1;
                    // `key: null` (or `key:`) means the field is unset.
                    if let Some(Ev::Scalar(s, plain)) = ev.get(value)
                        && resolve(s, *plain) == Scalar::Null
                    {
                        self.de.pos = value + 1;
                        continue;
                    }
                    self.de.pos = value;
                    return seed.deserialize(key.into_deserializer()).map(Some);
                }
                _ => return Err(DeError("mapping keys must be plain scalars".into())),
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        seed.deserialize(&mut *self.de)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_on_their_parents_line_are_found_through_the_parent() {
        let text = "spec:\n  endpoints:\n  - {address: 10.0.0.1, ports: {http: 80}}\n  - address: 10.0.0.2\n    \
                    ports: {http: 81}\n  labels: {app.kubernetes.io/name: x, v: {w: 1}}\n";
        let s = parse(text).unwrap();
        let mut out = Vec::new();
        field_lines(&s.events, &s.lines, s.docs[0].start, &mut out).unwrap();
        let recorded = out.len();
        let origin =
            crate::types::Origin { file: "f.yaml".into(), line: 1, field_lines: crate::types::FieldLines::new(out) };
        for (path, line) in [
            ("spec", 2),
            ("spec.endpoints[0]", 3),
            ("spec.endpoints[0].address", 3),
            ("spec.endpoints[0].ports.http", 3),
            ("spec.endpoints[1]", 4),
            ("spec.endpoints[1].address", 4),
            ("spec.endpoints[1].ports", 5),
            ("spec.endpoints[1].ports.http", 5),
            ("spec.labels.app.kubernetes.io/name", 6),
            ("spec.labels.v.w", 6),
        ] {
            assert_eq!(origin.line_of(path), line, "{path}");
        }
        // 15 fields, most of them on their parent's line.
        assert!(recorded < 10, "{recorded} entries recorded");
    }

    #[test]
    fn resolves_core_schema_scalars() {
        assert_eq!(resolve("80", true), Scalar::Int(80));
        assert_eq!(resolve("-3", true), Scalar::Int(-3));
        assert_eq!(resolve("0x1f", true), Scalar::Int(31));
        assert_eq!(resolve("1.5", true), Scalar::Float(1.5));
        assert_eq!(resolve("1e3", true), Scalar::Float(1000.0));
        assert_eq!(resolve("1.2.3.4", true), Scalar::Str("1.2.3.4"));
        assert_eq!(resolve("80", false), Scalar::Str("80"));
        assert_eq!(resolve("~", true), Scalar::Null);
        assert_eq!(resolve("yes", true), Scalar::Str("yes"));
        assert_eq!(resolve("5s", true), Scalar::Str("5s"));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = "[".repeat(10_000);
        assert!(parse(&text).is_err());
    }

    #[test]
    fn ipv6_in_flow_list() {
        let s = parse("a: [1.2.3.4, 001:db8::, {x: y}]\n").expect("parse");
        assert!(s.events.contains(&Ev::Scalar(Cow::Owned("001:db8::".into()), false)), "{:?}", s.events);
        assert!(s.events.contains(&Ev::MapStart));
    }
}
