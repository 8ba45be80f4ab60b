//! Applying profile operations, in order, as Mixpanel documents them.

use ferry_core::ingest::profile::ProfileOp;
use serde::Serialize;
use serde_json::{Map, Value};

/// A user or group profile as the receiver keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Profile {
    pub properties: Map<String, Value>,
    /// "Last seen", in ms: moved by every update that does not set `$ignore_time`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<i64>,
}

/// What an operation did to a profile slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Kept,
    Deleted,
}

/// Applies `op` to `profile` (created empty when absent). `$delete` removes the profile.
pub fn apply(profile: &mut Profile, op: &ProfileOp) -> Applied {
    let props = &mut profile.properties;
    match op {
        ProfileOp::Set(values) => {
            for (k, v) in values {
                props.insert(k.clone(), v.clone());
            }
        }
        ProfileOp::SetOnce(values) => {
            for (k, v) in values {
                props.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        ProfileOp::Add(values) => {
            for (k, v) in values {
                let current = props.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                props.insert(k.clone(), add_numbers(current, v));
            }
        }
        ProfileOp::Union(values) => {
            for (k, v) in values {
                let list = list_slot(props, k);
                for item in v.as_array().into_iter().flatten() {
                    if !list.contains(item) {
                        list.push(item.clone());
                    }
                }
            }
        }
        ProfileOp::Append(values) => {
            for (k, v) in values {
                list_slot(props, k).push(v.clone());
            }
        }
        ProfileOp::Remove(values) => {
            for (k, v) in values {
                if let Some(Value::Array(list)) = props.get_mut(k) {
                    list.retain(|item| item != v);
                }
            }
        }
        ProfileOp::Unset(names) => {
            for name in names {
                props.remove(name);
            }
        }
        ProfileOp::Delete => return Applied::Deleted,
    }
    Applied::Kept
}

/// Adds keeping integers integral when both sides are.
fn add_numbers(current: f64, delta: &Value) -> Value {
    let sum = current + delta.as_f64().unwrap_or(0.0);
    if sum.fract() == 0.0 && sum.abs() < 9.0e15 {
        Value::from(sum as i64)
    } else {
        serde_json::Number::from_f64(sum)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// The list stored under `key`, replacing a non-list value (as Mixpanel does for list ops).
fn list_slot<'a>(props: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let slot = props
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    match slot {
        Value::Array(list) => list,
        _ => unreachable!("slot was just made a list"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn operations_apply_in_order() {
        let mut p = Profile::default();
        apply(&mut p, &ProfileOp::Set(obj(json!({"a": 1, "l": ["x"]}))));
        apply(&mut p, &ProfileOp::SetOnce(obj(json!({"a": 2, "b": 3}))));
        apply(&mut p, &ProfileOp::Add(obj(json!({"a": 4, "n": 1.5}))));
        apply(&mut p, &ProfileOp::Union(obj(json!({"l": ["x", "y"]}))));
        apply(&mut p, &ProfileOp::Append(obj(json!({"l": "x"}))));
        apply(&mut p, &ProfileOp::Remove(obj(json!({"l": "y"}))));
        apply(&mut p, &ProfileOp::Unset(vec!["b".into()]));
        assert_eq!(
            Value::Object(p.properties.clone()),
            json!({"a": 5, "n": 1.5, "l": ["x", "x"]})
        );
        assert_eq!(apply(&mut p, &ProfileOp::Delete), Applied::Deleted);
    }
}
