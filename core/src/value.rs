//! Warehouse cell values and rows, as every source hands them to the pipeline.
//!
//! A source converts its driver's types into [`Value`] once; everything downstream (mapping,
//! checksums, `$insert_id`, lookup CSV) works on this one representation, so each rule is
//! written once whatever the warehouse.

use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};

mod json_text;
pub use json_text::JsonText;

/// One cell. Serializable (tagged by variant) so a cursor value can be stored exactly.
/// Equality is by value: a `JsonText` equals the `Json` its text parses to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// An exact decimal (NUMERIC/DECIMAL) kept as the warehouse printed it, e.g. `"12.50"`.
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
    Uuid(uuid::Uuid),
    Date(NaiveDate),
    /// An instant (a zoned timestamp already converted to UTC).
    Timestamp(DateTime<Utc>),
    /// A wall-clock timestamp without zone. Ferry reads it as UTC wherever an instant is needed.
    TimestampNaive(NaiveDateTime),
    Json(serde_json::Value),
    /// A JSON cell as the warehouse's text, syntax checked, parsed only where something looks
    /// inside; the same value as `Json(parsed)` everywhere.
    JsonText(JsonText),
    Array(Vec<Value>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value as V;
        match (self, other) {
            (V::Null, V::Null) => true,
            (V::Bool(a), V::Bool(b)) => a == b,
            (V::Int(a), V::Int(b)) => a == b,
            (V::Float(a), V::Float(b)) => a == b,
            (V::Decimal(a), V::Decimal(b)) | (V::Text(a), V::Text(b)) => a == b,
            (V::Bytes(a), V::Bytes(b)) => a == b,
            (V::Uuid(a), V::Uuid(b)) => a == b,
            (V::Date(a), V::Date(b)) => a == b,
            (V::Timestamp(a), V::Timestamp(b)) => a == b,
            (V::TimestampNaive(a), V::TimestampNaive(b)) => a == b,
            (V::Json(a), V::Json(b)) => a == b,
            (V::JsonText(a), V::JsonText(b)) => a == b || a.to_json() == b.to_json(),
            (V::JsonText(t), V::Json(j)) | (V::Json(j), V::JsonText(t)) => t.to_json() == *j,
            (V::Array(a), V::Array(b)) => a == b,
            _ => false,
        }
    }
}

/// The type of a column, as far as the pipeline cares. Warehouse-specific types a source does
/// not understand arrive as `Other` with the warehouse's type name and their values as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    Bool,
    Int,
    Float,
    Decimal,
    Text,
    Bytes,
    Uuid,
    Date,
    Timestamp,
    TimestampNaive,
    Json,
    Array,
    Other(String),
}

impl ColumnKind {
    /// Short lower-case name for messages.
    pub fn name(&self) -> &str {
        match self {
            ColumnKind::Bool => "bool",
            ColumnKind::Int => "integer",
            ColumnKind::Float => "float",
            ColumnKind::Decimal => "decimal",
            ColumnKind::Text => "text",
            ColumnKind::Bytes => "bytes",
            ColumnKind::Uuid => "uuid",
            ColumnKind::Date => "date",
            ColumnKind::Timestamp => "timestamp",
            ColumnKind::TimestampNaive => "timestamp without time zone",
            ColumnKind::Json => "json",
            ColumnKind::Array => "array",
            ColumnKind::Other(name) => name,
        }
    }
}

/// One column of a result set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub kind: ColumnKind,
}

impl Column {
    pub fn new(name: impl Into<String>, kind: ColumnKind) -> Self {
        Self {
            name: name.into(),
            kind,
        }
    }
}

/// A page of rows as a source streams them. Every row has one value per column, in column order;
/// the column list is shared (`Arc`) by all the pages of one query.
#[derive(Debug, Clone, PartialEq)]
pub struct RowBatch {
    pub columns: Arc<[Column]>,
    pub rows: Vec<Vec<Value>>,
}

impl RowBatch {
    pub fn new(columns: Arc<[Column]>, rows: Vec<Vec<Value>>) -> Self {
        Self { columns, rows }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Position of the column called `name` (exact, case-sensitive match).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        column_index(&self.columns, name)
    }
}

/// Position of the column called `name` (exact, case-sensitive match).
pub fn column_index(columns: &[Column], name: &str) -> Option<usize> {
    columns.iter().position(|c| c.name == name)
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The Mixpanel property value for this cell.
    ///
    /// Timestamps become ISO-8601 UTC strings (`2024-01-02T03:04:05Z`, with `.fff` when there are
    /// milliseconds: Mixpanel keeps no more); dates `YYYY-MM-DD`; decimals JSON numbers when they
    /// survive a round trip through f64 exactly, else strings (so no digit is lost silently);
    /// bytes base64; UUIDs their hyphenated lower-case form; arrays element by element.
    /// Non-finite floats have no JSON form and become `null`.
    pub fn to_property(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Decimal(text) => decimal_to_json(text),
            Value::Text(s) => J::String(s.clone()),
            Value::Bytes(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
            Value::Uuid(u) => J::String(u.hyphenated().to_string()),
            Value::Date(d) => J::String(d.format("%Y-%m-%d").to_string()),
            Value::Timestamp(t) => J::String(iso_utc(&t.naive_utc())),
            Value::TimestampNaive(t) => J::String(iso_utc(t)),
            Value::Json(j) => j.clone(),
            Value::JsonText(t) => t.to_json(),
            Value::Array(items) => J::Array(items.iter().map(Value::to_property).collect()),
        }
    }

    /// Reads a cell as text for identifiers (distinct id, group id, lookup key, event name).
    /// Only scalar values qualify; `None` for NULL, JSON, arrays and bytes.
    pub fn to_id_string(&self) -> Option<String> {
        match self {
            Value::Text(s) | Value::Decimal(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Uuid(u) => Some(u.hyphenated().to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Float(f) if f.is_finite() => Some(f.to_string()),
            Value::Date(_) | Value::Timestamp(_) | Value::TimestampNaive(_) => {
                self.to_property().as_str().map(str::to_owned)
            }
            Value::Json(serde_json::Value::String(s)) => Some(s.clone()),
            Value::Json(serde_json::Value::Number(n)) => Some(n.to_string()),
            Value::JsonText(t) => Value::Json(t.to_json()).to_id_string(),
            _ => None,
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` for a UTC wall-clock time.
pub fn iso_utc(t: &NaiveDateTime) -> String {
    let mut out = String::with_capacity(24);
    // Writing to a String cannot fail.
    let _ = write!(out, "{}", t.format("%Y-%m-%dT%H:%M:%S"));
    let millis = t.nanosecond() % 1_000_000_000 / 1_000_000;
    if millis != 0 {
        let _ = write!(out, ".{millis:03}");
    }
    out.push('Z');
    out
}

/// A decimal's JSON form: a number when parsing it as f64 and printing it back gives the same
/// value exactly (`12.50` → 12.5 is exact; `0.1` is the nearest double and prints back as
/// `0.1`), else the original text.
fn decimal_to_json(text: &str) -> serde_json::Value {
    let trimmed = text.trim();
    if let Ok(i) = trimmed.parse::<i64>() {
        return serde_json::Value::from(i);
    }
    if let Ok(f) = trimmed.parse::<f64>() {
        if f.is_finite() && same_decimal(trimmed, &f.to_string()) {
            if let Some(n) = serde_json::Number::from_f64(f) {
                return serde_json::Value::Number(n);
            }
        }
    }
    serde_json::Value::String(text.to_owned())
}

/// True when two plain decimal texts denote the same number (ignoring a `+` sign, leading zeros
/// of the integer part and trailing zeros of the fraction).
fn same_decimal(a: &str, b: &str) -> bool {
    fn normal(s: &str) -> Option<(bool, String, String)> {
        let (neg, body) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit()) {
            return None;
        }
        let int = int.trim_start_matches('0').to_owned();
        let frac = frac.trim_end_matches('0').to_owned();
        let zero = int.is_empty() && frac.is_empty();
        Some((neg && !zero, int, frac))
    }
    match (normal(a), normal(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn timestamps_dates_and_scalars_become_properties() {
        let t = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(
            Value::Timestamp(t).to_property(),
            json!("2024-01-02T03:04:05Z")
        );
        let t_ms = t + chrono::Duration::microseconds(123_456);
        assert_eq!(
            Value::Timestamp(t_ms).to_property(),
            json!("2024-01-02T03:04:05.123Z")
        );
        assert_eq!(
            Value::TimestampNaive(t_ms.naive_utc()).to_property(),
            json!("2024-01-02T03:04:05.123Z")
        );
        assert_eq!(
            Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()).to_property(),
            json!("2024-02-29")
        );
        assert_eq!(Value::Bytes(vec![0, 1, 255]).to_property(), json!("AAH/"));
        let u = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(
            Value::Uuid(u).to_property(),
            json!("01234567-89ab-cdef-0123-456789abcdef")
        );
        assert_eq!(Value::Float(f64::NAN).to_property(), json!(null));
        assert_eq!(
            Value::Array(vec![Value::Int(1), Value::Text("a".into()), Value::Null]).to_property(),
            json!([1, "a", null])
        );
    }

    #[test]
    fn decimals_are_numbers_only_when_exact() {
        assert_eq!(Value::Decimal("12.50".into()).to_property(), json!(12.5));
        assert_eq!(Value::Decimal("-0.1".into()).to_property(), json!(-0.1));
        assert_eq!(Value::Decimal("42".into()).to_property(), json!(42));
        // 17 significant digits do not survive f64.
        assert_eq!(
            Value::Decimal("12345678901234567.89".into()).to_property(),
            json!("12345678901234567.89")
        );
        assert_eq!(Value::Decimal("NaN".into()).to_property(), json!("NaN"));
    }

    #[test]
    fn batch_finds_columns_by_exact_name() {
        let batch = RowBatch::new(
            vec![
                Column::new("id", ColumnKind::Int),
                Column::new("Name", ColumnKind::Text),
            ]
            .into(),
            vec![vec![Value::Int(1), Value::Text("a".into())]],
        );
        assert_eq!(batch.column_index("Name"), Some(1));
        assert_eq!(batch.column_index("name"), None);
        assert_eq!(batch.len(), 1);
    }
}

#[cfg(test)]
mod serde_tests {
    use super::*;

    #[test]
    fn cursor_values_round_trip_exactly_through_json() {
        let values = vec![
            Value::Int(42),
            Value::Decimal("12.500".into()),
            Value::Timestamp(
                DateTime::parse_from_rfc3339("2024-05-06T07:08:09.123456Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            Value::TimestampNaive(
                NaiveDate::from_ymd_opt(2024, 1, 2)
                    .unwrap()
                    .and_hms_micro_opt(3, 4, 5, 6)
                    .unwrap(),
            ),
            Value::Text("a".into()),
            Value::Null,
        ];
        let json = serde_json::to_string(&values).unwrap();
        let back: Vec<Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, values);
        assert!(json.contains(r#"{"type":"int","value":42}"#), "{json}");
    }
}
