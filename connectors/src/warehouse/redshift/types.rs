//! Redshift types (as `ColumnMetadata.typeName` names them) → Ferry's [`ColumnKind`], and Data
//! API result fields → [`Value`]s.
//!
//! Integers arrive as `longValue`, floats as `doubleValue`, booleans as `booleanValue`; everything
//! else as `stringValue` in Redshift's text form: `numeric` is kept exact as
//! [`Value::Decimal`], `date` / `timestamp` / `timestamptz` are parsed (a zoned timestamp
//! normalised to UTC), `super` is parsed as JSON, `varbyte` arrives as `blobValue` (or hex text).
//! Types Ferry does not model (`time`, `timetz`, `geometry`, intervals, …) stay text with kind
//! `Other(<type name>)`.

use aws_sdk_redshiftdata::types::Field;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use ferry_core::value::{ColumnKind, Value};

/// The column kind of a Redshift type name.
pub fn kind_of(type_name: &str) -> ColumnKind {
    let name = type_name.trim().to_ascii_lowercase();
    // `numeric(10,2)`, `character varying(256)`: the base name decides.
    let base = name.split('(').next().unwrap_or("").trim();
    match base {
        "int2" | "int4" | "int8" | "smallint" | "integer" | "int" | "bigint" | "oid" => {
            ColumnKind::Int
        }
        "float4" | "float8" | "real" | "float" | "double precision" => ColumnKind::Float,
        "numeric" | "decimal" => ColumnKind::Decimal,
        "bool" | "boolean" => ColumnKind::Bool,
        "varchar" | "bpchar" | "char" | "character" | "character varying" | "nchar"
        | "nvarchar" | "text" | "name" => ColumnKind::Text,
        "date" => ColumnKind::Date,
        "timestamp" | "timestamp without time zone" => ColumnKind::TimestampNaive,
        "timestamptz" | "timestamp with time zone" => ColumnKind::Timestamp,
        "super" => ColumnKind::Json,
        "varbyte" | "varbinary" | "binary varying" | "bytea" => ColumnKind::Bytes,
        _ => ColumnKind::Other(base.to_owned()),
    }
}

/// One field of a column of `kind` as a value; the error says what was wrong with it.
pub fn value_of(field: &Field, kind: &ColumnKind) -> Result<Value, String> {
    Ok(match field {
        Field::IsNull(true) => Value::Null,
        Field::IsNull(false) => return Err("isNull is false but no value was sent".into()),
        Field::LongValue(v) => match kind {
            ColumnKind::Bool => Value::Bool(*v != 0),
            ColumnKind::Float => Value::Float(*v as f64),
            ColumnKind::Decimal => Value::Decimal(v.to_string()),
            _ => Value::Int(*v),
        },
        Field::DoubleValue(v) => Value::Float(*v),
        Field::BooleanValue(b) => Value::Bool(*b),
        Field::BlobValue(b) => Value::Bytes(b.as_ref().to_vec()),
        Field::StringValue(s) => text_value(s, kind)?,
        other => return Err(format!("unknown field shape {other:?}")),
    })
}

fn text_value(s: &str, kind: &ColumnKind) -> Result<Value, String> {
    Ok(match kind {
        ColumnKind::Decimal => Value::Decimal(s.to_owned()),
        ColumnKind::Int => Value::Int(
            s.trim()
                .parse()
                .map_err(|_| format!("'{s}' is not an integer"))?,
        ),
        ColumnKind::Float => Value::Float(parse_float(s)?),
        ColumnKind::Bool => match s.trim() {
            "t" | "true" | "TRUE" | "1" => Value::Bool(true),
            "f" | "false" | "FALSE" | "0" => Value::Bool(false),
            _ => return Err(format!("'{s}' is not a boolean")),
        },
        ColumnKind::Date => Value::Date(
            NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                .map_err(|e| format!("'{s}' is not a date: {e}"))?,
        ),
        ColumnKind::TimestampNaive => Value::TimestampNaive(parse_naive(s)?),
        ColumnKind::Timestamp => Value::Timestamp(parse_zoned(s)?),
        // SUPER prints JSON; a bare string that is not JSON text is kept as a string.
        ColumnKind::Json => Value::Json(
            serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.to_owned())),
        ),
        ColumnKind::Bytes => Value::Bytes(parse_hex(s)?),
        _ => Value::Text(s.to_owned()),
    })
}

fn parse_float(s: &str) -> Result<f64, String> {
    match s.trim() {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        t => t.parse().map_err(|_| format!("'{s}' is not a number")),
    }
}

/// `YYYY-MM-DD HH:MM:SS[.f…]` (a `T` separator is accepted too).
fn parse_naive(s: &str) -> Result<NaiveDateTime, String> {
    let t = s.trim();
    NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f"))
        .map_err(|e| format!("'{s}' is not a timestamp: {e}"))
}

/// A timestamp with an offset (`+00`, `+05:30`, `-0800`, `Z`), normalised to UTC. Redshift
/// prints `timestamptz` in the session's zone, UTC unless changed.
fn parse_zoned(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim().replacen('T', " ", 1);
    let bad = |e: &dyn std::fmt::Display| format!("'{s}' is not a timestamp with time zone: {e}");
    if let Some(naive) = t.strip_suffix('Z') {
        return parse_naive(naive).map(|n| n.and_utc());
    }
    // The offset starts at the last '+' or '-' after the time part.
    let split = t
        .rfind(['+', '-'])
        .filter(|&i| i > 10)
        .ok_or_else(|| bad(&"no UTC offset"))?;
    let (naive, offset) = t.split_at(split);
    let naive = parse_naive(naive)?;
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let digits: String = offset[1..].chars().filter(char::is_ascii_digit).collect();
    let (hours, minutes) = match digits.len() {
        2 => (&digits[..2], "00"),
        4 => (&digits[..2], &digits[2..]),
        _ => return Err(bad(&"bad UTC offset")),
    };
    let seconds = sign
        * (hours.parse::<i64>().map_err(|e| bad(&e))? * 3600
            + minutes.parse::<i64>().map_err(|e| bad(&e))? * 60);
    Ok((naive - chrono::Duration::seconds(seconds)).and_utc())
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let t = s.trim();
    let t = t.strip_prefix("\\x").unwrap_or(t);
    if !t.len().is_multiple_of(2) {
        return Err(format!("'{s}' is not hex bytes"));
    }
    (0..t.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&t[i..i + 2], 16).map_err(|_| format!("'{s}' is not hex bytes"))
        })
        .collect()
}

/// A cursor value as the text of a Data API parameter (Redshift converts it to the column's
/// type where it is compared).
pub fn parameter_text(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null | Value::Array(_) | Value::Json(_) | Value::JsonText(_) | Value::Bytes(_) => {
            return None
        }
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Decimal(s) | Value::Text(s) => s.clone(),
        Value::Uuid(u) => u.hyphenated().to_string(),
        Value::Date(d) => d.format("%Y-%m-%d").to_string(),
        Value::Timestamp(t) => t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
        Value::TimestampNaive(t) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_redshiftdata::primitives::Blob;
    use chrono::TimeZone;

    #[test]
    fn type_names_map_to_kinds() {
        assert_eq!(kind_of("int8"), ColumnKind::Int);
        assert_eq!(kind_of("numeric(10,2)"), ColumnKind::Decimal);
        assert_eq!(kind_of("character varying(256)"), ColumnKind::Text);
        assert_eq!(kind_of("TIMESTAMPTZ"), ColumnKind::Timestamp);
        assert_eq!(kind_of("timestamp"), ColumnKind::TimestampNaive);
        assert_eq!(kind_of("super"), ColumnKind::Json);
        assert_eq!(kind_of("varbyte"), ColumnKind::Bytes);
        assert_eq!(kind_of("bool"), ColumnKind::Bool);
        assert_eq!(kind_of("timetz"), ColumnKind::Other("timetz".into()));
    }

    #[test]
    fn fields_become_values() {
        let s = |t: &str| Field::StringValue(t.into());
        assert_eq!(
            value_of(&s("2024-01-02 03:04:05.5+02"), &ColumnKind::Timestamp).unwrap(),
            Value::Timestamp(
                Utc.with_ymd_and_hms(2024, 1, 2, 1, 4, 5).unwrap()
                    + chrono::Duration::milliseconds(500)
            )
        );
        assert_eq!(
            value_of(&s("2024-01-02 03:04:05-05:30"), &ColumnKind::Timestamp).unwrap(),
            Value::Timestamp(Utc.with_ymd_and_hms(2024, 1, 2, 8, 34, 5).unwrap())
        );
        assert_eq!(
            value_of(&s("2024-01-02 03:04:05+00"), &ColumnKind::Timestamp).unwrap(),
            Value::Timestamp(Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap())
        );
        assert_eq!(
            value_of(&s("12.50"), &ColumnKind::Decimal).unwrap(),
            Value::Decimal("12.50".into())
        );
        assert_eq!(
            value_of(&s(r#"{"a":[1,2]}"#), &ColumnKind::Json).unwrap(),
            Value::Json(serde_json::json!({"a": [1, 2]}))
        );
        assert_eq!(
            value_of(&s("\\x00ff"), &ColumnKind::Bytes).unwrap(),
            Value::Bytes(vec![0, 255])
        );
        assert_eq!(
            value_of(&Field::BlobValue(Blob::new(vec![1, 2])), &ColumnKind::Bytes).unwrap(),
            Value::Bytes(vec![1, 2])
        );
        assert_eq!(
            value_of(&Field::IsNull(true), &ColumnKind::Int).unwrap(),
            Value::Null
        );
        assert_eq!(
            value_of(&Field::LongValue(7), &ColumnKind::Int).unwrap(),
            Value::Int(7)
        );
        assert!(value_of(&s("yesterday"), &ColumnKind::Date).is_err());
        assert!(value_of(&s("2024-01-02 03:04:05"), &ColumnKind::Timestamp).is_err());
    }

    #[test]
    fn cursor_values_print_as_redshift_reads_them() {
        let t = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(
            parameter_text(&Value::Timestamp(t)).unwrap(),
            "2024-01-02 03:04:05.000000+00"
        );
        assert_eq!(parameter_text(&Value::Int(5)).unwrap(), "5");
        assert_eq!(parameter_text(&Value::Null), None);
    }
}
