//! The fast path of event encoding: an event row written straight to JSON bytes.
//!
//! [`RowMapper::encode_event`](super::RowMapper) defines an event by building it as a
//! `serde_json` object (properties in a sorted map, later steps winning a name conflict),
//! validating it with the receiver's rules and serializing it. That costs a map, a copy of every
//! value and dozens of allocations per row. This path produces the very same bytes for the rows
//! that need nothing from validation but a yes: the properties, gathered by the same
//! `gather_event` the general path builds its map from (as borrowed references), are sorted and
//! de-duplicated the way the map orders them (last insert wins), checked against the same rules,
//! and written once.
//!
//! Whenever validation would refuse the row or change it (an over-long string to truncate, a
//! missing `distinct_id` to derive from `$user_id` or `$device_id`, a too-deep object, a bad
//! time, a malformed JSON column, an oversized record), this path steps aside (`None`) and the
//! general path runs, so errors and edge cases keep exactly one definition.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Write as _;

use serde_json::Value as Json;

use super::raw_json::write_raw;
use super::{EncodedRecord, RecordKind, RowMapper};
use crate::ingest::event::time_to_millis;
use crate::ingest::ids::{check_identity, check_insert_id};
use crate::ingest::limits::{
    ARRAY_ELEMENTS_EXCLUSIVE, MAX_OBJECT_DEPTH, MAX_RECORD_BYTES, MAX_STRING_CHARS,
    MIN_EVENT_TIME_MS, OBJECT_KEYS_EXCLUSIVE, PROPERTIES_EXCLUSIVE,
};
use crate::value::{iso_utc, Value};

/// One property's value, borrowed where it can be.
pub(super) enum Prop<'a> {
    Json(&'a Json),
    /// A value inside a JSON cell kept as text: its text (valid JSON).
    Raw(&'a str),
    Cell(&'a Value),
    Int(i64),
    Str(String),
}

impl Prop<'_> {
    /// The property as the JSON value it serializes to.
    pub(super) fn into_json(self) -> Json {
        match self {
            Prop::Json(j) => j.clone(),
            Prop::Raw(text) => parse_raw(text),
            Prop::Cell(v) => v.to_property(),
            Prop::Int(i) => Json::from(i),
            Prop::Str(s) => Json::String(s),
        }
    }
}

/// A named property, in the order it was added.
pub(super) struct PropEntry<'a> {
    pub(super) key: &'a str,
    /// Insertion order: of two entries with one key, the later one is the property.
    order: u32,
    pub(super) value: Prop<'a>,
}

pub(super) fn push_prop<'a>(props: &mut Vec<PropEntry<'a>>, key: &'a str, value: Prop<'a>) {
    let order = props.len() as u32;
    props.push(PropEntry { key, order, value });
}

/// An event row's properties (in insertion order) and its name.
pub(super) struct GatheredEvent<'a> {
    pub(super) props: Vec<PropEntry<'a>>,
    pub(super) name: Cow<'a, str>,
}

thread_local! {
    /// Reused per thread: the record is written here and copied out at its exact size.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

impl RowMapper {
    /// The event of `row` as JSON bytes, or `None` when the general path must decide.
    pub(super) fn encode_event_direct(&self, row: &[Value], now_ms: i64) -> Option<EncodedRecord> {
        let mut parsed = None;
        // A row the gathering refuses is refused again, with its error, by the general path.
        let GatheredEvent { mut props, name } = self.gather_event(0, row, &mut parsed).ok()?;
        let name: &str = &name;

        // The order of a sorted map, the later of two same-named entries kept.
        props.sort_unstable_by(|a, b| a.key.cmp(b.key).then(b.order.cmp(&a.order)));
        props.dedup_by(|later, kept| later.key == kept.key);

        // validate_event's checks, as yes-or-step-aside.
        if name.trim().is_empty() || name.chars().count() > MAX_STRING_CHARS {
            return None;
        }
        if props.len() >= PROPERTIES_EXCLUSIVE {
            return None;
        }
        let find = |key: &str| {
            props
                .binary_search_by(|e| e.key.cmp(key))
                .ok()
                .map(|i| &props[i].value)
        };
        let time_ms = match find("time")? {
            Prop::Int(ms) => time_to_millis(&Json::from(*ms), &self.rules).ok()?,
            other => time_to_millis(&to_json(other), &self.rules).ok()?,
        };
        if time_ms < MIN_EVENT_TIME_MS || time_ms > now_ms + self.rules.future_tolerance_ms {
            return None;
        }
        let distinct_id = string_of(find("distinct_id")?)?;
        check_identity(&distinct_id).ok()?;
        let insert_id = string_of(find("$insert_id")?)?;
        check_insert_id(&insert_id).ok()?;

        SCRATCH.with(|scratch| {
            let mut out = scratch.borrow_mut();
            out.clear();
            // The properties are checked as they are written (one pass over each JSON tree).
            if !write_event(&mut out, name, &props).ok()? || out.len() >= MAX_RECORD_BYTES {
                return None;
            }
            Some(EncodedRecord {
                kind: RecordKind::Event,
                json: out.as_slice().to_vec(),
                route_hash: xxhash_rust::xxh3::xxh3_64(distinct_id.as_bytes()),
                insert_id: Some(insert_id),
            })
        })
    }
}

/// A raw value's tree. The text passed a syntax check; only a number beyond f64's range (which
/// serde_json cannot hold) fails to parse, and is kept as its text rather than dropped.
pub(super) fn parse_raw(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_owned()))
}

fn to_json(p: &Prop<'_>) -> Json {
    match p {
        Prop::Json(j) => (*j).clone(),
        Prop::Raw(text) => parse_raw(text),
        Prop::Cell(v) => v.to_property(),
        Prop::Int(i) => Json::from(*i),
        Prop::Str(s) => Json::String(s.clone()),
    }
}

/// The property as a string, if it serializes as one.
fn string_of(p: &Prop<'_>) -> Option<String> {
    match p {
        Prop::Str(s) => Some(s.clone()),
        Prop::Json(Json::String(s)) | Prop::Cell(Value::Text(s)) => Some(s.clone()),
        Prop::Raw(text) => match parse_raw(text) {
            Json::String(s) => Some(s),
            _ => None,
        },
        Prop::Json(_) | Prop::Int(_) => None,
        Prop::Cell(v) => match v.to_property() {
            Json::String(s) => Some(s),
            _ => None,
        },
    }
}

fn short(s: &str) -> bool {
    s.len() <= MAX_STRING_CHARS || s.chars().count() <= MAX_STRING_CHARS
}

/// True when validation would pass this property value as it is (nothing to truncate, within
/// the nesting and size limits).
fn fits(p: &Prop<'_>) -> bool {
    match p {
        Prop::Json(j) => fits_json(j, 0),
        Prop::Raw(text) => write_raw(&mut Vec::new(), text, 0, true).unwrap_or(false),
        Prop::Int(_) => true,
        Prop::Str(s) => short(s),
        Prop::Cell(v) => fits_cell(v, 0),
    }
}

pub(super) fn fits_json(j: &Json, depth: usize) -> bool {
    match j {
        Json::String(s) => short(s),
        Json::Array(items) => {
            items.len() < ARRAY_ELEMENTS_EXCLUSIVE && items.iter().all(|i| fits_json(i, depth))
        }
        Json::Object(map) => {
            depth < MAX_OBJECT_DEPTH
                && map.len() < OBJECT_KEYS_EXCLUSIVE
                && map.values().all(|v| fits_json(v, depth + 1))
        }
        Json::Null | Json::Bool(_) | Json::Number(_) => true,
    }
}

fn fits_cell(v: &Value, depth: usize) -> bool {
    match v {
        Value::Text(s) | Value::Decimal(s) => short(s),
        // Base64 of 189 bytes is 252 characters; longer ones go the general way.
        Value::Bytes(b) => b.len() <= 189,
        Value::Json(j) => fits_json(j, depth),
        Value::JsonText(t) => write_raw(&mut Vec::new(), t.as_str(), depth, true).unwrap_or(false),
        Value::Array(items) => {
            items.len() < ARRAY_ELEMENTS_EXCLUSIVE && items.iter().all(|i| fits_cell(i, depth))
        }
        Value::Null
        | Value::Bool(_)
        | Value::Int(_)
        | Value::Float(_)
        | Value::Uuid(_)
        | Value::Date(_)
        | Value::Timestamp(_)
        | Value::TimestampNaive(_) => true,
    }
}

/// `{"event":…,"properties":{…}}` with serde_json's escaping and number formats. `false` (the
/// output then unfinished) as soon as a property is found that validation would refuse or
/// change ([`fits`]; `distinct_id` and `$insert_id` were checked by their own rules).
fn write_event(out: &mut Vec<u8>, name: &str, props: &[PropEntry<'_>]) -> serde_json::Result<bool> {
    out.extend_from_slice(b"{\"event\":");
    write_str(out, name)?;
    out.extend_from_slice(b",\"properties\":{");
    for (k, e) in props.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        write_str(out, e.key)?;
        out.push(b':');
        let checked = e.key != "distinct_id" && e.key != "$insert_id";
        match &e.value {
            Prop::Json(j) if checked => {
                if !write_json_fitting(out, j, 0)? {
                    return Ok(false);
                }
            }
            Prop::Json(j) => write_json(out, j)?,
            Prop::Raw(text) => {
                if !write_raw(out, text, 0, checked)? {
                    return Ok(false);
                }
            }
            Prop::Cell(Value::JsonText(t)) => {
                if !write_raw(out, t.as_str(), 0, checked)? {
                    return Ok(false);
                }
            }
            other if checked && !fits(other) => return Ok(false),
            Prop::Int(i) => serde_json::to_writer(&mut *out, i)?,
            Prop::Str(s) => write_str(out, s)?,
            Prop::Cell(v) => write_cell(out, v)?,
        }
    }
    out.extend_from_slice(b"}}");
    Ok(true)
}

/// [`write_json`] and [`fits_json`] in one pass: writes `j` and says whether it fits.
pub(super) fn write_json_fitting(
    out: &mut Vec<u8>,
    j: &Json,
    depth: usize,
) -> serde_json::Result<bool> {
    match j {
        Json::String(s) => {
            if !short(s) {
                return Ok(false);
            }
            write_str(out, s)?;
        }
        Json::Array(items) => {
            if items.len() >= ARRAY_ELEMENTS_EXCLUSIVE {
                return Ok(false);
            }
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_json_fitting(out, item, depth)? {
                    return Ok(false);
                }
            }
            out.push(b']');
        }
        Json::Object(map) => {
            if depth >= MAX_OBJECT_DEPTH || map.len() >= OBJECT_KEYS_EXCLUSIVE {
                return Ok(false);
            }
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k)?;
                out.push(b':');
                if !write_json_fitting(out, v, depth + 1)? {
                    return Ok(false);
                }
            }
            out.push(b'}');
        }
        Json::Null | Json::Bool(_) | Json::Number(_) => write_json(out, j)?,
    }
    Ok(true)
}

/// True when serde_json writes `s` as it is between quotes: no control character, quote or
/// backslash (it escapes nothing else). Checked 16 bytes at a time without an early exit, so
/// the check compiles to vector compares; most strings of an event need no escaping.
fn needs_no_escape(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut chunks = bytes.chunks_exact(16);
    let special = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |any, &b| any | special(b)) {
            return false;
        }
    }
    !chunks.remainder().iter().any(|&b| special(b))
}

/// A JSON string exactly as serde_json writes it.
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if needs_no_escape(s) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, s)
    }
}

/// A JSON value exactly as serde_json's compact writer writes it (numbers through serde_json
/// itself), with the string fast path.
fn write_json(out: &mut Vec<u8>, j: &Json) -> serde_json::Result<()> {
    match j {
        Json::Null => out.extend_from_slice(b"null"),
        Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Json::Number(n) => serde_json::to_writer(&mut *out, n)?,
        Json::String(s) => write_str(out, s)?,
        Json::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, item)?;
            }
            out.push(b']');
        }
        Json::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k)?;
                out.push(b':');
                write_json(out, v)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// A cell as [`Value::to_property`] would serialize, without building the JSON value for the
/// common kinds.
fn write_cell(out: &mut Vec<u8>, v: &Value) -> serde_json::Result<()> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => serde_json::to_writer(&mut *out, i)?,
        Value::Text(s) => write_str(out, s)?,
        Value::Json(j) => write_json(out, j)?,
        Value::JsonText(t) => {
            write_raw(out, t.as_str(), 0, false)?;
        }
        Value::Uuid(u) => {
            let mut buf = uuid::Uuid::encode_buffer();
            out.push(b'"');
            out.extend_from_slice(u.hyphenated().encode_lower(&mut buf).as_bytes());
            out.push(b'"');
        }
        Value::Timestamp(t) => {
            out.push(b'"');
            let _ = out.write_all(iso_utc(&t.naive_utc()).as_bytes());
            out.push(b'"');
        }
        other => serde_json::to_writer(&mut *out, &other.to_property())?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The hand-written writer gives serde_json's bytes for every kind of value, and for strings
    /// whose special characters sit before, across and after the 16-byte chunks.
    #[test]
    fn json_writer_matches_serde_json() {
        let mut strings: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "é ü 日本 🚀 / <tag> & 'single'".into(),
            "tab\there".into(),
            "quote \" and backslash \\".into(),
            "\u{0}\u{1f}\u{7f}\u{2028}".into(),
        ];
        for at in [0, 1, 15, 16, 17, 31, 32, 40] {
            for special in ['"', '\\', '\n', '\u{1}'] {
                let mut s = "x".repeat(41);
                s.insert(at, special);
                strings.push(s);
            }
        }
        let value = json!({
            "strings": strings,
            "numbers": [0, -1, u64::MAX, i64::MIN, 1.5, -0.0, 1e300, 2.5e-8, 0.1],
            "nested": {"a": [true, false, null, {"b": {}}, []], "é": "x"},
        });
        let mut ours = Vec::new();
        write_json(&mut ours, &value).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            serde_json::to_string(&value).unwrap()
        );
        // Four levels of objects: one too many for validation, and the one-pass check agrees.
        assert!(!fits_json(&value, 0));
        assert!(!write_json_fitting(&mut Vec::new(), &value, 0).unwrap());
        let fitting_value = json!({"strings": value["strings"], "numbers": value["numbers"],
                                   "nested": {"a": [true, null, {"b": 1}, []]}});
        let mut fitting = Vec::new();
        assert!(fits_json(&fitting_value, 0));
        assert!(write_json_fitting(&mut fitting, &fitting_value, 0).unwrap());
        assert_eq!(fitting, serde_json::to_vec(&fitting_value).unwrap());
        let too_long = json!({"a": ["x".repeat(MAX_STRING_CHARS + 1)]});
        let too_deep = (0..=MAX_OBJECT_DEPTH).fold(json!(1), |v, _| json!({ "k": v }));
        for (refused, label) in [(too_long, "long string"), (too_deep, "deep object")] {
            assert!(!fits_json(&refused, 0), "{label}");
            assert!(
                !write_json_fitting(&mut Vec::new(), &refused, 0).unwrap(),
                "{label}"
            );
        }
        for s in &strings {
            let mut ours = Vec::new();
            write_str(&mut ours, s).unwrap();
            assert_eq!(ours, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }
}
