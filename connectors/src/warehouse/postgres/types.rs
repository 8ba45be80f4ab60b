//! PostgreSQL types → Ferry's [`ColumnKind`] and [`Value`]s.
//!
//! Read natively (binary protocol): `bool`, `int2/4/8`, `float4/8`, `text`, `varchar`, `bpchar`,
//! `name`, `bytea`, `uuid`, `date`, `timestamp`, `timestamptz`, `json`, `jsonb`, and 1-D arrays
//! of those. `numeric` (and `numeric[]`) is selected as `::text` (`::text[]`) and kept exact as
//! [`Value::Decimal`]. Every other type (intervals, network types, enums, domains, ranges, …)
//! is selected as `::text` (arrays as `::text[]`), so an unknown type never fails a read; its
//! column kind is `Other(<type name>)`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use ferry_core::value::{ColumnKind, JsonText, Value};
use tokio_postgres::types::{FromSql, Kind, Type};

/// How a column is selected and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// As the server sends it.
    Native,
    /// `::text`, then text → `Decimal`.
    DecimalText,
    /// `::text[]`, then each element → `Decimal`.
    DecimalArray,
    /// `::text`.
    Text,
    /// `::text[]`.
    TextArray,
}

fn native(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::BOOL
            | Type::INT2
            | Type::INT4
            | Type::INT8
            | Type::FLOAT4
            | Type::FLOAT8
            | Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::BYTEA
            | Type::UUID
            | Type::DATE
            | Type::TIMESTAMP
            | Type::TIMESTAMPTZ
            | Type::JSON
            | Type::JSONB
    )
}

/// The kind of a column of type `ty` and how to read it.
pub fn plan(ty: &Type) -> (ColumnKind, Read) {
    if let Kind::Array(member) = ty.kind() {
        let read = if native(member) {
            Read::Native
        } else if *member == Type::NUMERIC {
            Read::DecimalArray
        } else {
            Read::TextArray
        };
        return (ColumnKind::Array, read);
    }
    let kind = match *ty {
        Type::BOOL => ColumnKind::Bool,
        Type::INT2 | Type::INT4 | Type::INT8 => ColumnKind::Int,
        Type::FLOAT4 | Type::FLOAT8 => ColumnKind::Float,
        Type::NUMERIC => return (ColumnKind::Decimal, Read::DecimalText),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => ColumnKind::Text,
        Type::BYTEA => ColumnKind::Bytes,
        Type::UUID => ColumnKind::Uuid,
        Type::DATE => ColumnKind::Date,
        Type::TIMESTAMP => ColumnKind::TimestampNaive,
        Type::TIMESTAMPTZ => ColumnKind::Timestamp,
        Type::JSON | Type::JSONB => ColumnKind::Json,
        _ => return (ColumnKind::Other(ty.name().to_owned()), Read::Text),
    };
    (kind, Read::Native)
}

/// The SQL cast a read needs after the column, if any.
pub fn cast(read: &Read) -> &'static str {
    match read {
        Read::Native => "",
        Read::DecimalText | Read::Text => "::text",
        Read::DecimalArray | Read::TextArray => "::text[]",
    }
}

/// Applies the read's post-processing to a decoded cell.
pub fn finish(read: &Read, value: Value) -> Value {
    fn decimal(v: Value) -> Value {
        match v {
            Value::Text(s) => Value::Decimal(s),
            other => other,
        }
    }
    match (read, value) {
        (Read::DecimalText, v) => decimal(v),
        (Read::DecimalArray, Value::Array(items)) => {
            Value::Array(items.into_iter().map(decimal).collect())
        }
        (_, v) => v,
    }
}

/// One decoded cell; accepts whatever the generated SELECT returns.
pub struct Cell(pub Value);

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// A `json`/`jsonb` cell's text, syntax checked but not parsed into a tree (the encoder writes
/// it from the text). Binary `jsonb` is a version byte (1) and the text.
fn json_text(ty: &Type, raw: &[u8]) -> Result<JsonText, BoxError> {
    let text = match (ty, raw.split_first()) {
        (&Type::JSONB, Some((1, text))) => text,
        (&Type::JSONB, _) => return Err("unsupported jsonb encoding version".into()),
        _ => raw,
    };
    Ok(JsonText::new(std::str::from_utf8(text)?.to_owned())?)
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        if let Kind::Array(_) = ty.kind() {
            let items = Vec::<Cell>::from_sql(ty, raw)?;
            return Ok(Cell(Value::Array(items.into_iter().map(|c| c.0).collect())));
        }
        let value = match *ty {
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Float(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Float(f64::from_sql(ty, raw)?),
            Type::BYTEA => Value::Bytes(<&[u8]>::from_sql(ty, raw)?.to_vec()),
            Type::UUID => Value::Uuid(uuid::Uuid::from_sql(ty, raw)?),
            Type::DATE => Value::Date(NaiveDate::from_sql(ty, raw)?),
            Type::TIMESTAMP => Value::TimestampNaive(NaiveDateTime::from_sql(ty, raw)?),
            Type::TIMESTAMPTZ => Value::Timestamp(DateTime::<Utc>::from_sql(ty, raw)?),
            Type::JSON | Type::JSONB => Value::JsonText(json_text(ty, raw)?),
            // Text and everything the SELECT cast to text.
            _ => Value::Text(std::str::from_utf8(raw)?.to_owned()),
        };
        Ok(Cell(value))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A cursor value as PostgreSQL text input, to be bound as `$1::text` and cast to the cursor
/// column's type on the server.
pub fn cursor_text(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null | Value::Array(_) => return None,
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Decimal(s) | Value::Text(s) => s.clone(),
        Value::Bytes(b) => {
            let mut s = String::from("\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s
        }
        Value::Uuid(u) => u.hyphenated().to_string(),
        Value::Date(d) => d.format("%Y-%m-%d").to_string(),
        Value::Timestamp(t) => t.format("%Y-%m-%d %H:%M:%S%.f+00").to_string(),
        Value::TimestampNaive(t) => t.format("%Y-%m-%d %H:%M:%S%.f").to_string(),
        Value::Json(j) => j.to_string(),
        Value::JsonText(t) => t.as_str().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// json arrives as its text, binary jsonb as version 1 and its text; both are kept as the
    /// text (checked), equal to the parsed value.
    #[test]
    fn json_cells_are_kept_as_checked_text() {
        let jsonb = b"\x01{\"b\": [1, 2], \"aa\": null}";
        let Cell(value) = Cell::from_sql(&Type::JSONB, jsonb).unwrap();
        let Value::JsonText(text) = &value else {
            panic!("{value:?}")
        };
        assert_eq!(text.as_str(), r#"{"b": [1, 2], "aa": null}"#);
        assert_eq!(value, Value::Json(json!({"aa": null, "b": [1, 2]})));
        let Cell(value) = Cell::from_sql(&Type::JSON, br#"{"x" : 1.50}"#).unwrap();
        assert_eq!(value, Value::Json(json!({"x": 1.5})));
        assert!(Cell::from_sql(&Type::JSONB, b"\x02{}").is_err());
        assert!(Cell::from_sql(&Type::JSON, b"{oops").is_err());
        assert!(Cell::from_sql(&Type::JSON, b"\xff").is_err());
    }
}
