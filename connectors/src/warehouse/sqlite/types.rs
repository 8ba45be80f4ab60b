//! SQLite's declared column types → Ferry's [`ColumnKind`] and cell [`Value`]s.
//!
//! SQLite stores each cell as NULL, INTEGER, REAL, TEXT or BLOB whatever the column says, so a
//! column's *declared* type is a hint. The rules, applied to the declared type upper-cased and
//! without its `(...)` arguments:
//!
//! | declared type | kind | cells |
//! |---|---|---|
//! | `BOOLEAN`, `BOOL` | Bool | integer 0/1 and text `true`/`false`/`0`/`1` → Bool |
//! | `DATE` | Date | text `YYYY-MM-DD` → Date |
//! | `DATETIME`, `TIMESTAMP` | TimestampNaive | text `YYYY-MM-DD[ T]HH:MM[:SS[.f]]` → TimestampNaive; with a `Z` or `±HH:MM` zone → Timestamp (UTC) |
//! | `TIMESTAMPTZ`, `TIMESTAMP WITH TIME ZONE` | Timestamp | the same texts, a zone-less one read as UTC |
//! | `JSON`, `JSONB` | Json | text that parses as JSON → Json |
//! | `UUID` | Uuid | text in a UUID form, or a 16-byte blob → Uuid |
//! | `DECIMAL…`, `NUMERIC…` | Decimal | integer, real and numeric text → Decimal (its text) |
//! | else, by SQLite's affinity rules: contains `INT` | Int | integer → Int |
//! | contains `CHAR`, `CLOB` or `TEXT` | Text | text → Text |
//! | contains `REAL`, `FLOA` or `DOUB` | Float | real or integer → Float |
//! | contains `BLOB` | Bytes | blob → Bytes |
//! | none (an expression, or an untyped column) | `Other("any")` | as stored |
//! | anything else (NUMERIC affinity) | Decimal | as for `DECIMAL` |
//!
//! A cell that does not fit its column's rule (SQLite allows `'abc'` in an INTEGER column, or an
//! integer timestamp, which could be seconds or milliseconds) is never guessed at: it is read as
//! stored (INTEGER → Int, REAL → Float, TEXT → Text, BLOB → Bytes). Text that is not UTF-8 is a
//! [`WarehouseError::Value`].

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use ferry_core::value::{ColumnKind, JsonText, Value};
use rusqlite::types::ValueRef;

use crate::warehouse::WarehouseError;

/// The kind of a column from its declared type (`None` for expressions).
pub fn column_kind(decl: Option<&str>) -> ColumnKind {
    let Some(decl) = decl else {
        return ColumnKind::Other("any".into());
    };
    let upper = decl.to_ascii_uppercase();
    let base = upper.split('(').next().unwrap_or("").trim();
    if base.is_empty() {
        return ColumnKind::Other("any".into());
    }
    match base {
        "BOOLEAN" | "BOOL" => return ColumnKind::Bool,
        "DATE" => return ColumnKind::Date,
        "DATETIME" | "TIMESTAMP" | "TIMESTAMP WITHOUT TIME ZONE" => {
            return ColumnKind::TimestampNaive
        }
        "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => return ColumnKind::Timestamp,
        "JSON" | "JSONB" => return ColumnKind::Json,
        "UUID" => return ColumnKind::Uuid,
        _ => {}
    }
    if base.contains("INT") {
        ColumnKind::Int
    } else if base.contains("CHAR") || base.contains("CLOB") || base.contains("TEXT") {
        ColumnKind::Text
    } else if base.contains("BLOB") {
        ColumnKind::Bytes
    } else if base.contains("REAL") || base.contains("FLOA") || base.contains("DOUB") {
        ColumnKind::Float
    } else {
        ColumnKind::Decimal
    }
}

/// One cell of a column of `kind`.
pub fn cell(kind: &ColumnKind, column: &str, raw: ValueRef<'_>) -> Result<Value, WarehouseError> {
    let text = |bytes: &[u8]| -> Result<String, WarehouseError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| WarehouseError::Value {
            column: column.to_owned(),
            message: "text that is not valid UTF-8".into(),
        })
    };
    let natural = |raw: ValueRef<'_>| -> Result<Value, WarehouseError> {
        Ok(match raw {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Float(f),
            ValueRef::Text(t) => Value::Text(text(t)?),
            ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
        })
    };
    let value = match (kind, raw) {
        (_, ValueRef::Null) => Value::Null,
        (ColumnKind::Bool, ValueRef::Integer(i @ (0 | 1))) => Value::Bool(i == 1),
        (ColumnKind::Bool, ValueRef::Text(t)) => {
            match text(t)?.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => natural(raw)?,
            }
        }
        (ColumnKind::Date, ValueRef::Text(t)) => {
            let s = text(t)?;
            match NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
                Ok(d) => Value::Date(d),
                Err(_) => Value::Text(s),
            }
        }
        (ColumnKind::TimestampNaive | ColumnKind::Timestamp, ValueRef::Text(t)) => {
            let s = text(t)?;
            match parse_timestamp(s.trim()) {
                Some(Stamp::Zoned(z)) => Value::Timestamp(z),
                Some(Stamp::Naive(n)) if *kind == ColumnKind::Timestamp => {
                    Value::Timestamp(n.and_utc())
                }
                Some(Stamp::Naive(n)) => Value::TimestampNaive(n),
                None => Value::Text(s),
            }
        }
        (ColumnKind::Json, ValueRef::Text(t)) => {
            // Kept as checked text (parsed only where something looks inside); text that is
            // not JSON stays text.
            match JsonText::new_or_text(text(t)?) {
                Ok(json) => Value::JsonText(json),
                Err(s) => Value::Text(s),
            }
        }
        (ColumnKind::Uuid, ValueRef::Text(t)) => {
            let s = text(t)?;
            match uuid::Uuid::try_parse(s.trim()) {
                Ok(u) => Value::Uuid(u),
                Err(_) => Value::Text(s),
            }
        }
        (ColumnKind::Uuid, ValueRef::Blob(b)) if b.len() == 16 => match uuid::Uuid::from_slice(b) {
            Ok(u) => Value::Uuid(u),
            Err(_) => Value::Bytes(b.to_vec()),
        },
        (ColumnKind::Decimal, ValueRef::Integer(i)) => Value::Decimal(i.to_string()),
        (ColumnKind::Decimal, ValueRef::Real(f)) if f.is_finite() => Value::Decimal(f.to_string()),
        (ColumnKind::Decimal, ValueRef::Text(t)) => {
            let s = text(t)?;
            if is_decimal_text(s.trim()) {
                Value::Decimal(s.trim().to_owned())
            } else {
                Value::Text(s)
            }
        }
        (ColumnKind::Float, ValueRef::Integer(i)) => Value::Float(i as f64),
        _ => natural(raw)?,
    };
    Ok(value)
}

enum Stamp {
    Zoned(DateTime<Utc>),
    Naive(NaiveDateTime),
}

/// SQLite's date-time texts (its `datetime()` output, ISO 8601 with `T`, optional fraction,
/// optional zone).
fn parse_timestamp(s: &str) -> Option<Stamp> {
    if let Ok(z) = DateTime::parse_from_rfc3339(s) {
        return Some(Stamp::Zoned(z.with_timezone(&Utc)));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(z) = DateTime::parse_from_str(s, fmt) {
            return Some(Stamp::Zoned(z.with_timezone(&Utc)));
        }
    }
    if let Some(body) = s.strip_suffix('Z') {
        return parse_naive(body).map(|n| Stamp::Zoned(n.and_utc()));
    }
    parse_naive(s).map(Stamp::Naive)
}

fn parse_naive(s: &str) -> Option<NaiveDateTime> {
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|fmt| NaiveDateTime::parse_from_str(s, fmt).ok())
}

/// `[-+]digits[.digits]` (what SQLite's NUMERIC affinity keeps as text only when it is not a
/// number, so mostly for big values that overflow).
fn is_decimal_text(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    !(int.is_empty() && frac.is_empty())
        && int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_follow_affinity() {
        assert_eq!(column_kind(Some("integer")), ColumnKind::Int);
        assert_eq!(column_kind(Some("BIGINT")), ColumnKind::Int);
        assert_eq!(column_kind(Some("varchar(20)")), ColumnKind::Text);
        assert_eq!(column_kind(Some("double precision")), ColumnKind::Float);
        assert_eq!(column_kind(Some("blob")), ColumnKind::Bytes);
        assert_eq!(column_kind(Some("decimal(10,2)")), ColumnKind::Decimal);
        assert_eq!(column_kind(Some("Boolean")), ColumnKind::Bool);
        assert_eq!(column_kind(Some("datetime")), ColumnKind::TimestampNaive);
        assert_eq!(column_kind(Some("json")), ColumnKind::Json);
        assert_eq!(column_kind(None), ColumnKind::Other("any".into()));
        assert_eq!(column_kind(Some("")), ColumnKind::Other("any".into()));
    }

    #[test]
    fn cells_that_do_not_fit_stay_as_stored() {
        let c = |k: ColumnKind, raw| cell(&k, "c", raw).unwrap();
        assert_eq!(c(ColumnKind::Bool, ValueRef::Integer(2)), Value::Int(2));
        assert_eq!(
            c(ColumnKind::Date, ValueRef::Text(b"soon")),
            Value::Text("soon".into())
        );
        assert_eq!(
            c(ColumnKind::TimestampNaive, ValueRef::Integer(1700000000)),
            Value::Int(1700000000)
        );
        assert_eq!(
            c(ColumnKind::Json, ValueRef::Text(b"{oops")),
            Value::Text("{oops".into())
        );
        assert_eq!(
            c(ColumnKind::Int, ValueRef::Text(b"abc")),
            Value::Text("abc".into())
        );
        assert!(matches!(
            cell(&ColumnKind::Text, "c", ValueRef::Text(b"\xff")),
            Err(WarehouseError::Value { .. })
        ));
    }

    #[test]
    fn timestamps_with_and_without_zones() {
        let c = |k: ColumnKind, raw: &'static str| {
            cell(&k, "c", ValueRef::Text(raw.as_bytes())).unwrap()
        };
        let naive =
            NaiveDateTime::parse_from_str("2024-01-02 03:04:05.250", "%Y-%m-%d %H:%M:%S%.f")
                .unwrap();
        assert_eq!(
            c(ColumnKind::TimestampNaive, "2024-01-02 03:04:05.250"),
            Value::TimestampNaive(naive)
        );
        assert_eq!(
            c(ColumnKind::TimestampNaive, "2024-01-02T03:04:05.25"),
            Value::TimestampNaive(naive)
        );
        assert_eq!(
            c(ColumnKind::Timestamp, "2024-01-02 03:04:05.25"),
            Value::Timestamp(naive.and_utc())
        );
        assert_eq!(
            c(ColumnKind::TimestampNaive, "2024-01-02T03:04:05.25Z"),
            Value::Timestamp(naive.and_utc())
        );
        assert_eq!(
            c(ColumnKind::TimestampNaive, "2024-01-02 05:04:05.25+02:00"),
            Value::Timestamp(naive.and_utc())
        );
    }
}
