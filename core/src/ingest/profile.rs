//! Validation of `/engage` (user) and `/groups` (group) profile updates.
//!
//! An update names its target and carries exactly one operation. Choice where the public record
//! is open: several operations in one update object are refused (send one object per operation),
//! because the order in which Mixpanel would apply them is not documented.

use serde_json::{Map, Value};

use super::ids::check_identity;
use super::limits::{MAX_PROFILE_PROPERTIES, MAX_RECORD_BYTES};
use super::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileKind {
    User,
    Group,
}

impl ProfileKind {
    /// Operations each endpoint accepts.
    pub fn operations(self) -> &'static [&'static str] {
        match self {
            ProfileKind::User => &[
                "$set",
                "$set_once",
                "$add",
                "$union",
                "$append",
                "$remove",
                "$unset",
                "$delete",
            ],
            ProfileKind::Group => &[
                "$set",
                "$set_once",
                "$unset",
                "$remove",
                "$union",
                "$delete",
            ],
        }
    }
}

/// Whose profile an update changes.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(untagged)]
pub enum ProfileTarget {
    User { distinct_id: String },
    Group { group_key: String, group_id: String },
}

/// One profile operation, with its argument already checked.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileOp {
    Set(Map<String, Value>),
    SetOnce(Map<String, Value>),
    Add(Map<String, Value>),
    Union(Map<String, Value>),
    Append(Map<String, Value>),
    Remove(Map<String, Value>),
    Unset(Vec<String>),
    Delete,
}

/// A checked update.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileUpdate {
    pub token: Option<String>,
    pub target: ProfileTarget,
    pub op: ProfileOp,
    /// `$ignore_time: true` leaves "last seen" untouched.
    pub ignore_time: bool,
    /// `$time` in milliseconds, when given.
    pub time_ms: Option<i64>,
}

const ENVELOPE_KEYS: &[&str] = &[
    "$token",
    "$distinct_id",
    "$group_key",
    "$group_id",
    "$ip",
    "$ignore_time",
    "$ignore_alias",
    "$time",
];

/// Validates one update for `kind`'s endpoint. `raw_len` is its size as received.
pub fn validate_profile_update(
    update: &Value,
    raw_len: usize,
    kind: ProfileKind,
) -> Result<ProfileUpdate, FieldError> {
    if raw_len >= MAX_RECORD_BYTES {
        return Err(FieldError::new(
            "update",
            format!("update is {raw_len} bytes; it must be smaller than {MAX_RECORD_BYTES}"),
        ));
    }
    let Some(obj) = update.as_object() else {
        return Err(FieldError::new(
            "update",
            "each update must be a JSON object",
        ));
    };
    let token = match obj.get("$token") {
        Some(Value::String(t)) => Some(t.clone()),
        None | Some(Value::Null) => None,
        Some(_) => return Err(FieldError::new("$token", "'$token' must be a string")),
    };
    let target = match kind {
        ProfileKind::User => ProfileTarget::User {
            distinct_id: required_id(obj, "$distinct_id")?,
        },
        ProfileKind::Group => {
            if obj.contains_key("$distinct_id") {
                return Err(FieldError::new(
                    "$distinct_id",
                    "'$distinct_id' is not allowed on group updates; use $group_key and $group_id",
                ));
            }
            ProfileTarget::Group {
                group_key: required_id(obj, "$group_key")?,
                group_id: required_id(obj, "$group_id")?,
            }
        }
    };
    let ignore_time = match obj.get("$ignore_time") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
        Some(_) => {
            return Err(FieldError::new(
                "$ignore_time",
                "'$ignore_time' must be true or false",
            ))
        }
    };
    let time_ms = match obj.get("$time") {
        None | Some(Value::Null) => None,
        Some(t) => Some(
            super::event::time_to_millis(t, &Default::default())
                .map_err(|m| FieldError::new("$time", m))?,
        ),
    };

    let mut ops = obj
        .iter()
        .filter(|(k, _)| !ENVELOPE_KEYS.contains(&k.as_str()));
    let Some((name, arg)) = ops.next() else {
        return Err(FieldError::new(
            "update",
            format!(
                "no operation: expected one of {}",
                kind.operations().join(", ")
            ),
        ));
    };
    if let Some((second, _)) = ops.next() {
        return Err(FieldError::new(
            second.clone(),
            format!("only one operation per update ('{name}' already given)"),
        ));
    }
    if !kind.operations().contains(&name.as_str()) {
        return Err(FieldError::new(
            name.clone(),
            format!(
                "unknown operation '{name}' for this endpoint: expected one of {}",
                kind.operations().join(", ")
            ),
        ));
    }
    let op = parse_op(name, arg)?;
    Ok(ProfileUpdate {
        token,
        target,
        op,
        ignore_time,
        time_ms,
    })
}

fn required_id(obj: &Map<String, Value>, field: &str) -> Result<String, FieldError> {
    match obj.get(field) {
        Some(Value::String(id)) => {
            check_identity(id).map_err(|m| FieldError::new(field, m))?;
            Ok(id.clone())
        }
        Some(Value::Number(n)) if field == "$group_id" => Ok(n.to_string()),
        Some(_) => Err(FieldError::new(
            field,
            format!("'{field}' must be a string"),
        )),
        None => Err(FieldError::new(field, format!("'{field}' is required"))),
    }
}

fn object_arg<'a>(name: &str, arg: &'a Value) -> Result<&'a Map<String, Value>, FieldError> {
    let map = arg
        .as_object()
        .ok_or_else(|| FieldError::new(name, format!("'{name}' takes an object of properties")))?;
    if map.len() > MAX_PROFILE_PROPERTIES {
        return Err(FieldError::new(
            name,
            format!("a profile may hold at most {MAX_PROFILE_PROPERTIES} properties"),
        ));
    }
    Ok(map)
}

fn parse_op(name: &str, arg: &Value) -> Result<ProfileOp, FieldError> {
    Ok(match name {
        "$set" => ProfileOp::Set(object_arg(name, arg)?.clone()),
        "$set_once" => ProfileOp::SetOnce(object_arg(name, arg)?.clone()),
        "$add" => {
            let map = object_arg(name, arg)?;
            if let Some((k, _)) = map.iter().find(|(_, v)| !v.is_number()) {
                return Err(FieldError::new(format!("$add.{k}"), "'$add' takes numbers"));
            }
            ProfileOp::Add(map.clone())
        }
        "$union" => {
            let map = object_arg(name, arg)?;
            if let Some((k, _)) = map.iter().find(|(_, v)| !v.is_array()) {
                return Err(FieldError::new(
                    format!("$union.{k}"),
                    "'$union' takes lists",
                ));
            }
            ProfileOp::Union(map.clone())
        }
        "$append" => ProfileOp::Append(object_arg(name, arg)?.clone()),
        "$remove" => ProfileOp::Remove(object_arg(name, arg)?.clone()),
        "$unset" => {
            let names = arg
                .as_array()
                .ok_or_else(|| FieldError::new(name, "'$unset' takes a list of property names"))?;
            let names = names
                .iter()
                .map(|n| n.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    FieldError::new(name, "'$unset' takes a list of property names (strings)")
                })?;
            ProfileOp::Unset(names)
        }
        "$delete" => ProfileOp::Delete,
        _ => unreachable!("operation names are checked against the endpoint's list first"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(v: Value) -> Result<ProfileUpdate, FieldError> {
        validate_profile_update(&v, 10, ProfileKind::User)
    }

    #[test]
    fn reads_a_set_with_its_envelope() {
        let u = user(
            json!({"$token": "t", "$distinct_id": "u1", "$ignore_time": true, "$set": {"a": 1}}),
        )
        .unwrap();
        assert_eq!(
            u.target,
            ProfileTarget::User {
                distinct_id: "u1".into()
            }
        );
        assert!(u.ignore_time);
        assert_eq!(
            u.op,
            ProfileOp::Set(json!({"a": 1}).as_object().unwrap().clone())
        );
    }

    #[test]
    fn refuses_bad_updates_naming_the_field() {
        assert_eq!(
            user(json!({"$set": {"a": 1}})).unwrap_err().field,
            "$distinct_id"
        );
        assert_eq!(
            user(json!({"$distinct_id": "null", "$set": {}}))
                .unwrap_err()
                .field,
            "$distinct_id"
        );
        assert_eq!(
            user(json!({"$distinct_id": "u"})).unwrap_err().field,
            "update"
        );
        assert_eq!(
            user(json!({"$distinct_id": "u", "$set": {}, "$unset": []}))
                .unwrap_err()
                .field,
            "$unset"
        );
        assert_eq!(
            user(json!({"$distinct_id": "u", "$bogus": {}}))
                .unwrap_err()
                .field,
            "$bogus"
        );
        assert_eq!(
            user(json!({"$distinct_id": "u", "$add": {"n": "1"}}))
                .unwrap_err()
                .field,
            "$add.n"
        );
        assert_eq!(
            user(json!({"$distinct_id": "u", "$unset": "a"}))
                .unwrap_err()
                .field,
            "$unset"
        );
        assert_eq!(
            user(json!({"$distinct_id": "u", "$union": {"l": 1}}))
                .unwrap_err()
                .field,
            "$union.l"
        );
    }

    #[test]
    fn group_updates_need_key_and_id_and_refuse_distinct_id() {
        let g = validate_profile_update(
            &json!({"$group_key": "company", "$group_id": 42, "$unset": ["a"]}),
            10,
            ProfileKind::Group,
        )
        .unwrap();
        assert_eq!(
            g.target,
            ProfileTarget::Group {
                group_key: "company".into(),
                group_id: "42".into()
            }
        );
        let err = validate_profile_update(
            &json!({"$group_key": "c", "$group_id": "1", "$distinct_id": "u", "$set": {}}),
            10,
            ProfileKind::Group,
        )
        .unwrap_err();
        assert_eq!(err.field, "$distinct_id");
        let err = validate_profile_update(
            &json!({"$group_key": "c", "$group_id": "1", "$add": {"n": 1}}),
            10,
            ProfileKind::Group,
        )
        .unwrap_err();
        assert_eq!(err.field, "$add");
    }
}
