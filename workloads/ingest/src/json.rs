//! Reading a JSON record into a `serde_json::Value`, faster than `Value`'s own
//! `Deserialize`.
//!
//! Hand-written because of how serde_json builds objects: its visitor inserts each member
//! into the `BTreeMap` behind `Map` as it is read, and sensors write members in no sorted
//! order, so every insert searches its leaf and shifts the members after it. Here the
//! members of an object are collected first and the map is built from them in one pass
//! (`BTreeMap`'s `FromIterator` sorts, then fills its nodes in order). The result is the
//! value serde_json builds: the same members, numbers read the same way, and for a key
//! written twice the last value kept, as `Map::insert` keeps it.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses one JSON text into a [`Value`].
pub(crate) fn from_str(text: &str) -> serde_json::Result<Value> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = ValueSeed.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

#[derive(Clone, Copy)]
struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        ValueSeed.deserialize(deserializer)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(ValueSeed)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members: Vec<(String, Value)> = Vec::with_capacity(16);
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ValueSeed)?;
            members.push((key, value));
        }
        Ok(Value::Object(
            members.into_iter().collect::<Map<String, Value>>(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_what_serde_json_builds() {
        let texts = [
            r#"{"b":1,"a":{"z":[1,-2,3.5,1e300,null,true,"x\u00e9"],"y":{}},"c":[],"b":2}"#,
            r#"{"flow_id":1234567890123456789,"neg":-9223372036854775808,"big":18446744073709551615}"#,
            r#"[{"k":"v"},{"k":"w","k":"last"}]"#,
            r#""just a string""#,
            "  {\"pad\" : 0.1 }  ",
        ];
        for text in texts {
            let ours = from_str(text).unwrap();
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
            assert_eq!(ours.to_string(), theirs.to_string(), "{text}");
        }
    }

    #[test]
    fn bad_json_is_refused_as_serde_json_refuses_it() {
        for text in [r#"{"a":1"#, r#"{"a":1} x"#, "", r#"{"a" 1}"#, r#"{1:2}"#] {
            let ours = from_str(text).unwrap_err().to_string();
            let theirs = serde_json::from_str::<Value>(text).unwrap_err().to_string();
            assert_eq!(ours, theirs, "{text}");
        }
    }
}
