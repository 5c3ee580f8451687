//! Tolerant number handling for Cytube payloads.
//!
//! Cytube is JavaScript: a uid may arrive as `3` or `"3"`, a duration as `8` or
//! `8.5`, a timestamp as an integer or a float. These helpers accept every such
//! spelling and write numbers back the way the server does (integral floats as
//! integers, so `rank 1` stays `1`, not `1.0`).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A number as JSON spelled it.
#[derive(Debug, Clone, Copy)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
}

struct NumVisitor;

impl Visitor<'_> for NumVisitor {
    type Value = Num;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a numeric string")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
        Ok(Num::U(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
        Ok(Num::I(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
        Ok(Num::F(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
        let t = v.trim();
        if let Ok(u) = t.parse::<u64>() {
            return Ok(Num::U(u));
        }
        if let Ok(i) = t.parse::<i64>() {
            return Ok(Num::I(i));
        }
        match t.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Num::F(f)),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
}

fn num<'de, D: Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
    d.deserialize_any(NumVisitor)
}

/// Largest integer an f64 holds exactly (2^53); JavaScript's safe-integer bound.
const F64_EXACT: f64 = 9_007_199_254_740_992.0;

fn to_u64<E: de::Error>(n: Num) -> Result<u64, E> {
    match n {
        Num::U(u) => Ok(u),
        Num::I(i) => u64::try_from(i)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(i), &"a non-negative integer")),
        Num::F(f) if (0.0..=F64_EXACT).contains(&f) => Ok(f.trunc() as u64),
        Num::F(f) => Err(E::invalid_value(
            de::Unexpected::Float(f),
            &"a non-negative integer",
        )),
    }
}

fn to_i64<E: de::Error>(n: Num) -> Result<i64, E> {
    match n {
        Num::U(u) => i64::try_from(u)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(u), &"a 64-bit integer")),
        Num::I(i) => Ok(i),
        Num::F(f) if f.is_finite() && f.abs() <= F64_EXACT => Ok(f.trunc() as i64),
        Num::F(f) => Err(E::invalid_value(
            de::Unexpected::Float(f),
            &"a 64-bit integer",
        )),
    }
}

fn to_f64(n: Num) -> f64 {
    match n {
        Num::U(u) => u as f64,
        Num::I(i) => i as f64,
        Num::F(f) => f,
    }
}

/// Writes integral floats within the exact range as integers (`1`, not `1.0`).
pub(crate) fn ser_f64<S: Serializer>(v: f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() && v.fract() == 0.0 && v.abs() <= F64_EXACT {
        s.serialize_i64(v as i64)
    } else {
        s.serialize_f64(v)
    }
}

/// `#[serde(with = "lenient::f64")]`: any number or numeric string; written compactly.
pub(crate) mod f64 {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        num(d).map(to_f64)
    }

    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        ser_f64(*v, s)
    }
}

/// `#[serde(with = "lenient::u64")]`: a non-negative integer, float (truncated) or
/// numeric string.
pub(crate) mod u64 {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        num(d).and_then(to_u64)
    }

    pub(crate) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }
}

/// `#[serde(with = "lenient::i64")]`: an integer, float (truncated) or numeric string.
pub(crate) mod i64 {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        num(d).and_then(to_i64)
    }

    pub(crate) fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(*v)
    }
}

/// `#[serde(with = "lenient::opt_f64")]` for optional numbers (`null` is `None`).
pub(crate) mod opt_f64 {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::f64")] f64);
        Option::<W>::deserialize(d).map(|o| o.map(|W(v)| v))
    }

    pub(crate) fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => ser_f64(*v, s),
            None => s.serialize_none(),
        }
    }
}

/// A playlist item uid. Cytube numbers items from 0 per channel; the wire may
/// spell a uid as a number or a numeric string, and both decode here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Uid(pub u64);

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Uid {
    fn from(v: u64) -> Self {
        Uid(v)
    }
}

impl<'de> Deserialize<'de> for Uid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        num(d).and_then(to_u64).map(Uid)
    }
}

impl Serialize for Uid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// Deserializes a lenient number from JSON text (used by the payload trait).
pub(crate) fn f64_from_json(json: &str) -> serde_json::Result<f64> {
    let mut d = serde_json::Deserializer::from_str(json);
    let v = num(&mut d).map(to_f64)?;
    d.end()?;
    Ok(v)
}

/// Deserializes a lenient non-negative integer from JSON text.
pub(crate) fn u64_from_json(json: &str) -> serde_json::Result<u64> {
    let mut d = serde_json::Deserializer::from_str(json);
    let v = num(&mut d).and_then(to_u64)?;
    d.end()?;
    Ok(v)
}

/// Writes an f64 the way JavaScript's `JSON.stringify` would for integral values.
pub(crate) fn f64_to_json(v: f64) -> serde_json::Result<String> {
    struct C(f64);
    impl Serialize for C {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            ser_f64(self.0, s)
        }
    }
    serde_json::to_string(&C(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct T {
        #[serde(with = "super::f64")]
        f: f64,
        #[serde(with = "super::u64")]
        u: u64,
        #[serde(with = "super::i64")]
        i: i64,
        uid: Uid,
    }

    #[test]
    fn accepts_every_spelling() {
        let t: T =
            serde_json::from_str(r#"{"f":"1.5","u":8.9,"i":1795339103214.0,"uid":"7"}"#).unwrap();
        assert_eq!(
            t,
            T {
                f: 1.5,
                u: 8,
                i: 1_795_339_103_214,
                uid: Uid(7)
            }
        );
        let t: T = serde_json::from_str(r#"{"f":2,"u":"3","i":-4,"uid":5}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"f":2,"u":3,"i":-4,"uid":5}"#
        );
    }

    #[test]
    fn rejects_nonsense() {
        assert!(serde_json::from_str::<Uid>("-1").is_err());
        assert!(serde_json::from_str::<Uid>("\"abc\"").is_err());
        assert!(serde_json::from_str::<Uid>("true").is_err());
        assert!(serde_json::from_str::<Uid>("1e300").is_err());
        assert!(u64_from_json("1 2").is_err());
        assert!(f64_from_json("\"NaN\"").is_err());
    }

    #[test]
    fn compact_floats() {
        assert_eq!(f64_to_json(1.0).unwrap(), "1");
        assert_eq!(f64_to_json(1.5).unwrap(), "1.5");
        assert_eq!(f64_to_json(-3.0).unwrap(), "-3");
        assert_eq!(f64_to_json(5.002).unwrap(), "5.002");
        assert_eq!(f64_to_json(f64::NAN).unwrap(), "null");
    }
}
