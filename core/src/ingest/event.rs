//! Strict-mode validation of one `/import` event.
//!
//! Choices where the public rules are open (documented in the receiver's docs too):
//! - `time` is milliseconds when it is at least 1e11, seconds otherwise; fractions are kept to the
//!   millisecond. Times before 1971-01-01 or more than `future_tolerance_ms` ahead of the server's
//!   clock are refused.
//! - With `identity_fallback` (the default) an event without `distinct_id` is accepted when it has
//!   `$user_id` or `$device_id`, as simplified identity merge does: the distinct id becomes the
//!   user id, else `$device:<device id>`. Turned off, `distinct_id` is required.
//! - `$insert_id` is required (`require_insert_id`), since it is the deduplication key.

use serde_json::{Map, Value};

use super::ids::{check_identity, check_insert_id};
use super::limits::*;
use super::FieldError;

/// Tunable parts of the event rules. `Default` is the strict reading described in the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRules {
    pub require_insert_id: bool,
    pub identity_fallback: bool,
    pub future_tolerance_ms: i64,
    /// Values at or above this are milliseconds; below, seconds.
    pub millis_threshold: f64,
}

impl Default for EventRules {
    fn default() -> Self {
        Self {
            require_insert_id: true,
            identity_fallback: true,
            future_tolerance_ms: 3_600_000,
            millis_threshold: 1e11,
        }
    }
}

/// The identity of an accepted event: the four values Mixpanel deduplicates on.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct DedupKey {
    pub event: String,
    pub distinct_id: String,
    pub time_ms: i64,
    pub insert_id: String,
}

/// What validation learned about an accepted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedEvent {
    pub key: DedupKey,
    /// How many string values were cut to 255 characters.
    pub truncated_strings: usize,
}

/// Reads the `$insert_id` of an event, if it has a string one (for error reports).
pub fn insert_id_of(event: &Value) -> Option<&str> {
    event.get("properties")?.get("$insert_id")?.as_str()
}

/// Converts an event `time` value to milliseconds since the epoch.
pub fn time_to_millis(time: &Value, rules: &EventRules) -> Result<i64, String> {
    let Some(t) = time.as_f64() else {
        return Err("must be a number: seconds or milliseconds since the epoch".into());
    };
    if !t.is_finite() {
        return Err("must be a finite number".into());
    }
    let ms = if t.abs() >= rules.millis_threshold {
        t
    } else {
        t * 1000.0
    };
    if ms.abs() > 9.0e15 {
        return Err(format!("{time} is out of range"));
    }
    Ok(ms.floor() as i64)
}

/// Validates one event in place (over-long strings are truncated) and returns its dedup key.
/// `raw_len` is the size of the event's JSON as received; `now_ms` is the server's clock.
pub fn validate_event(
    event: &mut Value,
    raw_len: usize,
    rules: &EventRules,
    now_ms: i64,
) -> Result<AcceptedEvent, FieldError> {
    if raw_len >= MAX_RECORD_BYTES {
        return Err(FieldError::new(
            "event",
            format!("event is {raw_len} bytes; it must be smaller than {MAX_RECORD_BYTES} bytes of uncompressed JSON"),
        ));
    }
    let Some(top) = event.as_object_mut() else {
        return Err(FieldError::new("event", "each event must be a JSON object"));
    };
    if let Some(extra) = top.keys().find(|k| *k != "event" && *k != "properties") {
        return Err(FieldError::new(
            extra.clone(),
            "unexpected top-level key: an event has only 'event' and 'properties'",
        ));
    }
    let name = match top.get("event") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => {
            return Err(FieldError::new("event", "event name must not be empty"))
        }
        Some(_) => return Err(FieldError::new("event", "event name must be a string")),
        None => return Err(FieldError::new("event", "'event' is required")),
    };
    if name.chars().count() > MAX_STRING_CHARS {
        return Err(FieldError::new(
            "event",
            format!("event name is longer than {MAX_STRING_CHARS} characters"),
        ));
    }
    let props = match top.get_mut("properties") {
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err(FieldError::new(
                "properties",
                "'properties' must be a JSON object",
            ))
        }
        None => return Err(FieldError::new("properties", "'properties' is required")),
    };
    if props.len() >= PROPERTIES_EXCLUSIVE {
        return Err(FieldError::new(
            "properties",
            format!(
                "event has {} properties; it must have fewer than {PROPERTIES_EXCLUSIVE}",
                props.len()
            ),
        ));
    }

    let time_ms = match props.get("time") {
        None => return Err(FieldError::new("properties.time", "'time' is required")),
        Some(t) => time_to_millis(t, rules).map_err(|m| FieldError::new("properties.time", m))?,
    };
    if time_ms < MIN_EVENT_TIME_MS {
        return Err(FieldError::new(
            "properties.time",
            "'time' is before 1971-01-01T00:00:00Z",
        ));
    }
    if time_ms > now_ms + rules.future_tolerance_ms {
        return Err(FieldError::new(
            "properties.time",
            format!(
                "'time' is more than {} seconds in the future",
                rules.future_tolerance_ms / 1000
            ),
        ));
    }

    let distinct_id = resolve_distinct_id(props, rules)?;

    let insert_id = match props.get("$insert_id") {
        Some(Value::String(id)) => {
            check_insert_id(id).map_err(|m| FieldError::new("properties.$insert_id", m))?;
            id.clone()
        }
        Some(_) => {
            return Err(FieldError::new(
                "properties.$insert_id",
                "'$insert_id' must be a string",
            ))
        }
        None if rules.require_insert_id => {
            return Err(FieldError::new(
                "properties.$insert_id",
                "'$insert_id' is required",
            ))
        }
        None => String::new(),
    };

    let mut truncated_strings = 0;
    for (key, value) in props.iter_mut() {
        if key == "distinct_id" || key == "$insert_id" {
            continue;
        }
        check_value(value, 0, &mut truncated_strings)
            .map_err(|m| FieldError::new(format!("properties.{key}"), m))?;
    }

    Ok(AcceptedEvent {
        key: DedupKey {
            event: name,
            distinct_id,
            time_ms,
            insert_id,
        },
        truncated_strings,
    })
}

fn resolve_distinct_id(
    props: &mut Map<String, Value>,
    rules: &EventRules,
) -> Result<String, FieldError> {
    match props.get("distinct_id") {
        Some(Value::String(id)) => {
            check_identity(id).map_err(|m| FieldError::new("properties.distinct_id", m))?;
            return Ok(id.clone());
        }
        Some(Value::Null) | None => {}
        Some(_) => {
            return Err(FieldError::new(
                "properties.distinct_id",
                "'distinct_id' must be a string",
            ))
        }
    }
    if !rules.identity_fallback {
        return Err(FieldError::new(
            "properties.distinct_id",
            "'distinct_id' is required",
        ));
    }
    let mut fallback = None;
    for (field, prefix) in [("$user_id", ""), ("$device_id", "$device:")] {
        match props.get(field) {
            Some(Value::String(id)) => {
                check_identity(id)
                    .map_err(|m| FieldError::new(format!("properties.{field}"), m))?;
                fallback = Some(format!("{prefix}{id}"));
                break;
            }
            Some(Value::Null) | None => {}
            Some(_) => {
                return Err(FieldError::new(
                    format!("properties.{field}"),
                    format!("'{field}' must be a string"),
                ))
            }
        }
    }
    let Some(id) = fallback else {
        return Err(FieldError::new(
            "properties.distinct_id",
            "'distinct_id' is required (or '$user_id' / '$device_id' with simplified identity)",
        ));
    };
    props.insert("distinct_id".into(), Value::String(id.clone()));
    Ok(id)
}

/// Checks nesting limits and truncates long strings of one property value.
fn check_value(value: &mut Value, depth: usize, truncated: &mut usize) -> Result<(), String> {
    match value {
        Value::String(s) => {
            // A string of at most that many bytes has at most that many characters: only
            // longer ones need their characters counted.
            if s.len() <= MAX_STRING_CHARS {
                return Ok(());
            }
            if let Some((cut, _)) = s.char_indices().nth(MAX_STRING_CHARS) {
                s.truncate(cut);
                *truncated += 1;
            }
        }
        Value::Array(items) => {
            if items.len() >= ARRAY_ELEMENTS_EXCLUSIVE {
                return Err(format!(
                    "list has {} elements; it must have fewer than {ARRAY_ELEMENTS_EXCLUSIVE}",
                    items.len()
                ));
            }
            for item in items {
                check_value(item, depth, truncated)?;
            }
        }
        Value::Object(map) => {
            if depth + 1 > MAX_OBJECT_DEPTH {
                return Err(format!(
                    "objects may nest at most {MAX_OBJECT_DEPTH} levels deep"
                ));
            }
            if map.len() >= OBJECT_KEYS_EXCLUSIVE {
                return Err(format!(
                    "object has {} keys; it must have fewer than {OBJECT_KEYS_EXCLUSIVE}",
                    map.len()
                ));
            }
            for v in map.values_mut() {
                check_value(v, depth + 1, truncated)?;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000_000;

    fn check(mut v: Value) -> Result<AcceptedEvent, FieldError> {
        let len = v.to_string().len();
        validate_event(&mut v, len, &EventRules::default(), NOW)
    }

    fn ev(props: Value) -> Value {
        json!({"event": "e", "properties": props})
    }

    #[test]
    fn accepts_a_complete_event_and_reads_its_key() {
        let ok = check(ev(
            json!({"time": 1_600_000_000, "distinct_id": "u1", "$insert_id": "a-1"}),
        ))
        .unwrap();
        assert_eq!(
            ok.key,
            DedupKey {
                event: "e".into(),
                distinct_id: "u1".into(),
                time_ms: 1_600_000_000_000,
                insert_id: "a-1".into()
            }
        );
    }

    #[test]
    fn time_unit_is_detected_at_1e11() {
        let r = EventRules::default();
        assert_eq!(
            time_to_millis(&json!(99_999_999_999i64), &r).unwrap(),
            99_999_999_999_000
        );
        assert_eq!(
            time_to_millis(&json!(100_000_000_000i64), &r).unwrap(),
            100_000_000_000
        );
        assert_eq!(
            time_to_millis(&json!(1_600_000_000.5), &r).unwrap(),
            1_600_000_000_500
        );
        assert!(time_to_millis(&json!("1600000000"), &r).is_err());
    }

    #[test]
    fn time_window() {
        let too_old = check(ev(
            json!({"time": 31_535_999, "distinct_id": "u", "$insert_id": "x1"}),
        ))
        .unwrap_err();
        assert_eq!(too_old.field, "properties.time");
        assert!(check(ev(
            json!({"time": 31_536_000, "distinct_id": "u", "$insert_id": "x1"})
        ))
        .is_ok());
        let future = check(ev(
            json!({"time": NOW + 3_600_001, "distinct_id": "u", "$insert_id": "x1"}),
        ))
        .unwrap_err();
        assert!(future.message.contains("future"));
        assert!(check(ev(
            json!({"time": NOW + 3_600_000, "distinct_id": "u", "$insert_id": "x1"})
        ))
        .is_ok());
        assert_eq!(
            check(ev(json!({"distinct_id": "u", "$insert_id": "x1"})))
                .unwrap_err()
                .field,
            "properties.time"
        );
    }

    #[test]
    fn identity_rules() {
        let bad = check(ev(
            json!({"time": 1e9, "distinct_id": "undefined", "$insert_id": "x1"}),
        ))
        .unwrap_err();
        assert_eq!(bad.field, "properties.distinct_id");
        let num = check(ev(
            json!({"time": 1e9, "distinct_id": 5, "$insert_id": "x1"}),
        ))
        .unwrap_err();
        assert!(num.message.contains("string"));
        let mut v = ev(json!({"time": 1e9, "$device_id": "d9", "$insert_id": "x1"}));
        let ok = validate_event(&mut v, 10, &EventRules::default(), NOW).unwrap();
        assert_eq!(ok.key.distinct_id, "$device:d9");
        assert_eq!(v["properties"]["distinct_id"], "$device:d9");
        let ok = check(ev(
            json!({"time": 1e9, "$user_id": "u7", "$device_id": "d9", "$insert_id": "x1"}),
        ))
        .unwrap();
        assert_eq!(ok.key.distinct_id, "u7");
        let strict = EventRules {
            identity_fallback: false,
            ..Default::default()
        };
        let mut v = ev(json!({"time": 1e9, "$user_id": "u7", "$insert_id": "x1"}));
        assert_eq!(
            validate_event(&mut v, 10, &strict, NOW).unwrap_err().field,
            "properties.distinct_id"
        );
    }

    #[test]
    fn insert_id_rules() {
        let missing = check(ev(json!({"time": 1e9, "distinct_id": "u"}))).unwrap_err();
        assert_eq!(missing.field, "properties.$insert_id");
        let bad = check(ev(
            json!({"time": 1e9, "distinct_id": "u", "$insert_id": "a b"}),
        ))
        .unwrap_err();
        assert_eq!(bad.field, "properties.$insert_id");
        let lenient = EventRules {
            require_insert_id: false,
            ..Default::default()
        };
        let mut v = ev(json!({"time": 1e9, "distinct_id": "u"}));
        assert_eq!(
            validate_event(&mut v, 10, &lenient, NOW)
                .unwrap()
                .key
                .insert_id,
            ""
        );
    }

    #[test]
    fn shape_rules() {
        assert_eq!(check(json!([1])).unwrap_err().field, "event");
        assert_eq!(
            check(json!({"event": "e", "properties": {}, "extra": 1}))
                .unwrap_err()
                .field,
            "extra"
        );
        assert_eq!(
            check(json!({"event": "", "properties": {}}))
                .unwrap_err()
                .field,
            "event"
        );
        assert_eq!(
            check(json!({"event": "e", "properties": []}))
                .unwrap_err()
                .field,
            "properties"
        );
        let mut v = ev(json!({"time": 1e9, "distinct_id": "u", "$insert_id": "x1"}));
        assert!(validate_event(&mut v, MAX_RECORD_BYTES, &EventRules::default(), NOW).is_err());
    }

    #[test]
    fn property_count_nesting_and_arrays() {
        let mut props = json!({"time": 1e9, "distinct_id": "u", "$insert_id": "x1"});
        for i in 0..251 {
            props[format!("p{i}")] = json!(i);
        }
        assert!(check(ev(props.clone())).is_ok(), "254 properties are fine");
        props["one_more"] = json!(1);
        assert!(check(ev(props))
            .unwrap_err()
            .message
            .contains("fewer than 255"));

        let base = || json!({"time": 1e9, "distinct_id": "u", "$insert_id": "x1"});
        let mut p = base();
        p["deep"] = json!({"a": {"b": {"c": 1}}});
        assert!(check(ev(p.clone())).is_ok());
        p["deep"] = json!({"a": {"b": {"c": {"d": 1}}}});
        let err = check(ev(p)).unwrap_err();
        assert_eq!(err.field, "properties.deep");
        let mut p = base();
        p["list"] = Value::Array(vec![json!(1); 255]);
        assert!(check(ev(p)).unwrap_err().message.contains("fewer than 255"));
        let mut p = base();
        p["obj"] = Value::Object((0..255).map(|i| (format!("k{i}"), json!(i))).collect());
        assert!(check(ev(p)).unwrap_err().message.contains("keys"));
    }

    #[test]
    fn long_strings_are_truncated_not_refused() {
        let long = "é".repeat(300);
        let mut v = ev(
            json!({"time": 1e9, "distinct_id": "u", "$insert_id": "x1", "s": long, "l": [long]}),
        );
        let ok = validate_event(&mut v, 10, &EventRules::default(), NOW).unwrap();
        assert_eq!(ok.truncated_strings, 2);
        assert_eq!(v["properties"]["s"].as_str().unwrap().chars().count(), 255);
        assert_eq!(
            v["properties"]["l"][0].as_str().unwrap().chars().count(),
            255
        );
    }
}
