//! Scalar encodings shared by every Istio type: proto-JSON durations, enums
//! that arrive by name or by number, and integers that arrive as numbers or
//! as decimal strings (protojson accepts both).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A `google.protobuf.Duration`, kept signed and exact so validation can
/// reject what Istio rejects (negative values, sub-millisecond precision).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    nanos: i128,
}

impl Duration {
    pub const ZERO: Duration = Duration { nanos: 0 };

    pub const fn from_nanos(nanos: i128) -> Self {
        Duration { nanos }
    }
    pub const fn from_millis(ms: i64) -> Self {
        Duration { nanos: ms as i128 * 1_000_000 }
    }
    pub const fn from_secs(s: i64) -> Self {
        Duration { nanos: s as i128 * 1_000_000_000 }
    }
    pub const fn as_nanos(&self) -> i128 {
        self.nanos
    }
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }
    /// Whole seconds (truncated toward zero) and the remaining nanoseconds, as proto stores them.
    pub fn seconds_and_nanos(&self) -> (i64, i32) {
        let s = self.nanos / 1_000_000_000;
        let n = self.nanos % 1_000_000_000;
        (s as i64, n as i32)
    }
    /// A non-negative duration as `std::time::Duration`; negative ones clamp to zero.
    pub fn to_std(&self) -> std::time::Duration {
        if self.nanos <= 0 {
            return std::time::Duration::ZERO;
        }
        let secs = (self.nanos / 1_000_000_000).min(u64::MAX as i128) as u64;
        std::time::Duration::new(secs, (self.nanos % 1_000_000_000) as u32)
    }

    /// Parses proto-JSON (`"1.5s"`) and the Go/Kubernetes forms Istio users also
    /// write (`"100ms"`, `"1m30s"`, `"1h"`).
    pub fn parse(input: &str) -> Result<Duration, String> {
        let s = input.trim();
        if s.is_empty() {
            return Err("empty duration".into());
        }
        let (neg, mut rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        if rest == "0" {
            return Ok(Duration::ZERO);
        }
        let mut total: i128 = 0;
        let mut any = false;
        while !rest.is_empty() {
            let num_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| format!("duration {input:?} is missing a unit (use s, ms, m or h)"))?;
            let (num, tail) = rest.split_at(num_end);
            if num.is_empty() || num == "." {
                return Err(format!("invalid duration {input:?}"));
            }
            let unit_end = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
            let (unit, next) = tail.split_at(unit_end);
            let scale: i128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(format!("invalid unit {unit:?} in duration {input:?}")),
            };
            total = total
                .checked_add(scaled(num, scale).ok_or_else(|| format!("invalid duration {input:?}"))?)
                .ok_or_else(|| format!("duration {input:?} is out of range"))?;
            any = true;
            rest = next;
        }
        if !any {
            return Err(format!("invalid duration {input:?}"));
        }
        // google.protobuf.Duration spans about +-10,000 years.
        if total > 315_576_000_000 * 1_000_000_000 {
            return Err(format!("duration {input:?} is out of range"));
        }
        Ok(Duration { nanos: if neg { -total } else { total } })
    }
}

/// `num` (decimal, optional fraction) times `scale` nanoseconds, exactly.
fn scaled(num: &str, scale: i128) -> Option<i128> {
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if frac.contains('.') {
        return None;
    }
    let int_v: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut v = int_v.checked_mul(scale)?;
    let mut unit = scale;
    for d in frac.chars() {
        unit /= 10;
        if unit == 0 {
            // Finer than a nanosecond: protobuf cannot hold it.
            if d != '0' {
                return None;
            }
            continue;
        }
        v = v.checked_add(unit * d.to_digit(10)? as i128)?;
    }
    Some(v)
}

impl fmt::Display for Duration {
    /// Proto-JSON form: seconds with up to nine fractional digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let (s, n) = (abs / 1_000_000_000, abs % 1_000_000_000);
        if n == 0 {
            write!(f, "{sign}{s}s")
        } else {
            let frac = format!("{n:09}");
            write!(f, "{sign}{s}.{}s", frac.trim_end_matches('0'))
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"5s\", \"0.5s\" or \"100ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Duration, E> {
                Err(E::custom("a duration needs a unit: write \"5s\", not 5"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Duration, E> {
                Err(E::custom("a duration needs a unit: write \"5s\", not 5"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Duration, E> {
                Err(E::custom("a duration needs a unit: write \"0.5s\", not 0.5"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Integers as protojson reads them: a JSON number or a decimal string.
pub(crate) mod lenient_int {
    use super::*;

    pub(crate) struct IntVisitor<T>(std::marker::PhantomData<T>);

    impl<T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr> Visitor<'_> for IntVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an integer in the range of {}", std::any::type_name::<T>())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range for {}", std::any::type_name::<T>())))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range for {}", std::any::type_name::<T>())))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            if v.fract() == 0.0 && v.abs() < 9.0e15 {
                self.visit_i64(v as i64)
            } else {
                Err(E::custom(format!("{v} is not an integer")))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.trim().parse::<T>().map_err(|_| E::custom(format!("{v:?} is not an integer")))
        }
    }

    pub(crate) fn visitor<T>() -> IntVisitor<T> {
        IntVisitor(std::marker::PhantomData)
    }
}

/// An integer field (proto int32/uint32/int64/uint64) that also accepts decimal strings.
pub trait ProtoInt: Sized {
    fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}
macro_rules! proto_int {
    ($($t:ty),*) => {$(
        impl ProtoInt for $t {
            fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(lenient_int::visitor::<$t>())
            }
        }
    )*};
}
proto_int!(i32, u32, i64, u64);

/// serde `deserialize_with` helpers for optional and repeated proto integers.
pub mod int {
    use super::*;

    pub fn opt<'de, D: Deserializer<'de>, T: ProtoInt>(d: D) -> Result<Option<T>, D::Error> {
        struct W<T>(T);
        impl<'de, T: ProtoInt> Deserialize<'de> for W<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                T::de(d).map(W)
            }
        }
        Ok(Option::<W<T>>::deserialize(d)?.map(|w| w.0))
    }

    pub fn plain<'de, D: Deserializer<'de>, T: ProtoInt + Default>(d: D) -> Result<T, D::Error> {
        Ok(opt(d)?.unwrap_or_default())
    }

    pub fn vec<'de, D: Deserializer<'de>, T: ProtoInt>(d: D) -> Result<Vec<T>, D::Error> {
        struct W<T>(T);
        impl<'de, T: ProtoInt> Deserialize<'de> for W<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                T::de(d).map(W)
            }
        }
        Ok(Option::<Vec<W<T>>>::deserialize(d)?.unwrap_or_default().into_iter().map(|w| w.0).collect())
    }

    pub fn map<'de, D: Deserializer<'de>, T: ProtoInt, M: FromIterator<(String, T)>>(d: D) -> Result<M, D::Error> {
        struct W<T>(T);
        impl<'de, T: ProtoInt> Deserialize<'de> for W<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                T::de(d).map(W)
            }
        }
        Ok(Option::<std::collections::BTreeMap<String, W<T>>>::deserialize(d)?
            .unwrap_or_default()
            .into_iter()
            .map(|(k, w)| (k, w.0))
            .collect())
    }
}

/// Defines a proto enum that deserializes from its name or its number and
/// displays as its name. The first variant is the proto default (0).
macro_rules! proto_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $num:literal => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub enum $name {
            #[default]
            $($(#[$vm])* $var),+
        }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$var => $text),+ }
            }
            pub fn number(&self) -> i32 {
                match self { $($name::$var => $num),+ }
            }
            pub fn from_number(n: i64) -> Option<Self> {
                match n { $($num => Some($name::$var),)+ _ => None }
            }
            pub fn from_name(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$var),)+ _ => None }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("one of ", $($text, " "),+))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::from_name(v).ok_or_else(|| E::custom(format!(
                            "invalid value {:?} for {}: expected one of {}",
                            v, stringify!($name), [$($text),+].join(", "))))
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$name, E> {
                        $name::from_number(v).ok_or_else(|| E::custom(format!(
                            "invalid number {} for {}", v, stringify!($name))))
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$name, E> {
                        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}
pub(crate) use proto_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_proto_and_go_forms() {
        assert_eq!(Duration::parse("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(Duration::parse("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(Duration::parse("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(Duration::parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(Duration::parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(Duration::parse("2.000000005s").unwrap().as_nanos(), 2_000_000_005);
        assert_eq!(Duration::parse("-1s").unwrap(), Duration::from_secs(-1));
        assert_eq!(Duration::parse("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "s", "1x", "1.2.3s", "abc"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_print_as_proto_json() {
        assert_eq!(Duration::from_millis(1500).to_string(), "1.5s");
        assert_eq!(Duration::from_secs(10).to_string(), "10s");
        assert_eq!(Duration::from_nanos(-5).to_string(), "-0.000000005s");
    }

    // Only deserialization is exercised here, so `ALL` and `number` go unused.
    #[allow(dead_code)]
    mod color {
        proto_enum!(Color { Red = 0 => "RED", Blue = 2 => "BLUE" });
    }
    use color::Color;

    #[test]
    fn enums_by_name_or_number() {
        let c: Color = serde_json::from_str("\"BLUE\"").unwrap();
        assert_eq!(c, Color::Blue);
        let c: Color = serde_json::from_str("2").unwrap();
        assert_eq!(c, Color::Blue);
        assert!(serde_json::from_str::<Color>("\"GREEN\"").is_err());
        assert!(serde_json::from_str::<Color>("1").is_err());
    }
}
