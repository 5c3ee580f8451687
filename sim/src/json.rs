//! Ordered JSON for outgoing payloads, written the way the real (Node.js) server
//! writes them.
//!
//! Why not `serde_json::Value`: without the `preserve_order` feature its objects
//! come out with sorted keys, while Cytube's payloads have a fixed key order
//! (`{"username","msg","meta","time"}`) that the captures show. Turning that
//! feature on would change `Value` for the whole workspace, so payloads are built
//! as [`J`] trees instead. Numbers follow JavaScript: a whole `f64` is written
//! without a fraction (`2`, not `2.0`), so ranks read `1`, `1.5`, `255`.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// An outgoing JSON value with ordered object keys.
#[derive(Debug, Clone, PartialEq)]
pub enum J {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, written like JavaScript writes it.
    Num(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<J>),
    /// An object whose keys keep their insertion order.
    Obj(Vec<(String, J)>),
}

impl J {
    /// An empty object `{}`.
    pub fn empty_obj() -> J {
        J::Obj(Vec::new())
    }

    /// Looks up `key` in an object.
    pub fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Mutable lookup of `key` in an object.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut J> {
        match self {
            J::Obj(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets `key` (replacing in place, or appending) on an object; no-op otherwise.
    pub fn set(&mut self, key: &str, value: impl Into<J>) {
        if let J::Obj(entries) = self {
            let value = value.into();
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some((_, slot)) => *slot = value,
                None => entries.push((key.to_owned(), value)),
            }
        }
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            J::Num(n) => Some(*n),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            J::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to a `serde_json::Value` (for logs and assertions).
    pub fn to_value(&self) -> Value {
        match self {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Num(n) => num_value(*n),
            J::Str(s) => Value::String(s.clone()),
            J::Arr(items) => Value::Array(items.iter().map(J::to_value).collect()),
            J::Obj(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect(),
            ),
        }
    }

    /// Serializes to compact JSON text.
    pub fn to_json(&self) -> String {
        // Serializing this type cannot fail: every variant maps to plain JSON and
        // non-finite numbers are written as null.
        serde_json::to_string(self).unwrap_or_else(|_| "null".to_owned())
    }
}

/// A JavaScript-style number as a `serde_json::Value`.
pub fn num_value(n: f64) -> Value {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 9.0e15 {
        // The range check makes the cast exact.
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

impl Serialize for J {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            J::Null => s.serialize_unit(),
            J::Bool(b) => s.serialize_bool(*b),
            J::Num(n) => {
                if !n.is_finite() {
                    s.serialize_unit()
                } else if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    s.serialize_i64(*n as i64)
                } else {
                    s.serialize_f64(*n)
                }
            }
            J::Str(v) => s.serialize_str(v),
            J::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            J::Obj(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl From<bool> for J {
    fn from(v: bool) -> Self {
        J::Bool(v)
    }
}
impl From<f64> for J {
    fn from(v: f64) -> Self {
        J::Num(v)
    }
}
impl From<i64> for J {
    fn from(v: i64) -> Self {
        J::Num(v as f64)
    }
}
impl From<u64> for J {
    fn from(v: u64) -> Self {
        J::Num(v as f64)
    }
}
impl From<usize> for J {
    fn from(v: usize) -> Self {
        J::Num(v as f64)
    }
}
impl From<u32> for J {
    fn from(v: u32) -> Self {
        J::Num(f64::from(v))
    }
}
impl From<&str> for J {
    fn from(v: &str) -> Self {
        J::Str(v.to_owned())
    }
}
impl From<String> for J {
    fn from(v: String) -> Self {
        J::Str(v)
    }
}
impl From<&String> for J {
    fn from(v: &String) -> Self {
        J::Str(v.clone())
    }
}
impl From<Vec<J>> for J {
    fn from(v: Vec<J>) -> Self {
        J::Arr(v)
    }
}
impl<T: Into<J>> From<Option<T>> for J {
    fn from(v: Option<T>) -> Self {
        v.map_or(J::Null, Into::into)
    }
}
impl From<&Value> for J {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Number(n) => J::Num(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => J::Str(s.clone()),
            Value::Array(items) => J::Arr(items.iter().map(J::from).collect()),
            Value::Object(map) => {
                J::Obj(map.iter().map(|(k, v)| (k.clone(), J::from(v))).collect())
            }
        }
    }
}

/// Builds an ordered object: `obj! { "name" => name, "rank" => 1.5 }`.
macro_rules! obj {
    ($($k:literal => $v:expr),* $(,)?) => {
        $crate::json::J::Obj(vec![$(($k.to_owned(), $crate::json::J::from($v))),*])
    };
}
pub(crate) use obj;

/// The JavaScript type name json-typecheck reports for a value.
pub fn js_type(v: Option<&Value>) -> &'static str {
    match v {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

/// One key of a payload template: name, expected type, optional.
pub type Field = (&'static str, &'static str, bool);

/// Checks a payload against a template the way Cytube's typecheck does, returning
/// its error text ("Expected key msg to be of type string, instead got number").
pub fn typecheck(payload: Option<&Value>, template: &[Field]) -> Result<(), String> {
    let obj = match payload {
        Some(Value::Object(map)) => Some(map),
        _ => None,
    };
    for &(key, ty, optional) in template {
        let v = obj.and_then(|m| m.get(key));
        if v.is_none() && optional {
            continue;
        }
        let actual = js_type(v);
        if actual != ty {
            return Err(format!(
                "Expected key {key} to be of type {ty}, instead got {actual}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_like_javascript() {
        let j = obj! { "a" => 2.0, "b" => 1.5, "c" => -3.0, "d" => -0.9990000000000001 };
        assert_eq!(
            j.to_json(),
            r#"{"a":2,"b":1.5,"c":-3,"d":-0.9990000000000001}"#
        );
    }

    #[test]
    fn object_keys_keep_insertion_order() {
        let j = obj! { "username" => "x", "msg" => "m", "meta" => J::empty_obj(), "time" => 5u64 };
        assert_eq!(
            j.to_json(),
            r#"{"username":"x","msg":"m","meta":{},"time":5}"#
        );
    }

    #[test]
    fn set_replaces_in_place() {
        let mut j = obj! { "a" => 1i64, "b" => 2i64 };
        j.set("a", 3i64);
        j.set("c", true);
        assert_eq!(j.to_json(), r#"{"a":3,"b":2,"c":true}"#);
    }

    #[test]
    fn typecheck_reports_like_cytube() {
        let v: Value = serde_json::json!({"msg": 12345});
        let err = typecheck(
            Some(&v),
            &[("msg", "string", false), ("meta", "object", true)],
        );
        assert_eq!(
            err.unwrap_err(),
            "Expected key msg to be of type string, instead got number"
        );
        let ok: Value = serde_json::json!({"msg": "hi"});
        assert!(
            typecheck(
                Some(&ok),
                &[("msg", "string", false), ("meta", "object", true)]
            )
            .is_ok()
        );
        assert_eq!(
            typecheck(None, &[("to", "string", false)]).unwrap_err(),
            "Expected key to to be of type string, instead got undefined"
        );
    }
}
