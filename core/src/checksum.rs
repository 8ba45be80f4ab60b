//! Row checksums for Mirror's snapshot diff.
//!
//! The scheme is the one the SQL side uses on PostgreSQL and Redshift, so a checksum computed
//! here for a row equals the one the warehouse computes for the same row:
//!
//! ```sql
//! md5(rtrim(coalesce(c1::varchar || chr(30), '') || chr(31) || coalesce(c2::varchar || chr(30), '')
//!           || chr(31) || … , chr(31)))
//! ```
//!
//! Every non-NULL value ends in `chr(30)` (record separator), so trimming `chr(31)` (unit
//! separator) removes only the separators of trailing NULLs: adding a nullable column at the
//! end leaves every existing checksum unchanged, and NULL (nothing) differs from `''`
//! (`chr(30)`). Column order matters.
//!
//! Canonical text of each value (what `::varchar` prints on PostgreSQL 15 with default settings,
//! after the SQL side's normalizations):
//!
//! | value | text |
//! |---|---|
//! | bool | `t` / `f` (the SQL side writes `CASE WHEN b THEN 't' ELSE 'f' END`, as Redshift has no `bool::varchar`) |
//! | int | decimal digits, `-` sign |
//! | float | PostgreSQL's `float8out`: shortest round-trip digits, plain notation for decimal exponents −4..14, else `1.5e+20` / `1e-05`; `NaN`, `Infinity`, `-Infinity` |
//! | decimal | the text as the source delivered it (PostgreSQL's `numeric::varchar` keeps the scale: `12.50`) |
//! | text | itself |
//! | bytes | `\x` + lower-case hex (`bytea_output = hex`) |
//! | uuid | lower-case hyphenated |
//! | date | `YYYY-MM-DD` |
//! | timestamp (zoned) | normalized to UTC (`(c AT TIME ZONE 'UTC')::varchar`): `YYYY-MM-DD HH:MM:SS[.ffffff]`, microseconds with trailing zeros dropped |
//! | timestamp (naive) | the same form, as is |
//! | json | `jsonb` output: keys ordered by length then bytes, `", "` and `": "` separators |
//! | array | `array_out`: `{a,"b c",NULL}`, elements quoted when empty, `NULL`, or holding `{},"\` or white space |
//!
//! Known differences: a `real` (float4) column must be cast to `float8` on the SQL side, as the
//! sources deliver it as f64; JSON numbers are printed as serde_json prints them (a jsonb
//! `1e20` prints as `100000000000000000000` in PostgreSQL); values containing `chr(30)` or
//! `chr(31)` themselves can collide, as on the SQL side.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDateTime, Timelike};
use md5::{Digest, Md5};

use crate::value::Value;

const RECORD_SEPARATOR: u8 = 30;
const UNIT_SEPARATOR: u8 = 31;

/// An MD5 row checksum; `to_hex` prints it as PostgreSQL's `md5()` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowChecksum(pub [u8; 16]);

impl RowChecksum {
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(32);
        for b in self.0 {
            let _ = write!(out, "{b:02x}");
        }
        out
    }
}

impl std::fmt::Display for RowChecksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The checksum of a row (values in column order).
pub fn row_checksum(row: &[Value]) -> RowChecksum {
    let mut text = Vec::with_capacity(256);
    write_row_text(row.iter(), &mut text);
    RowChecksum(Md5::digest(&text).into())
}

/// The checksum of selected values of a row, in the order given (e.g. the key columns).
pub fn values_checksum<'a>(values: impl Iterator<Item = &'a Value> + Clone) -> RowChecksum {
    let mut text = Vec::with_capacity(64);
    write_row_text(values, &mut text);
    RowChecksum(Md5::digest(&text).into())
}

/// Appends the text that is hashed: each value's canonical text + `chr(30)`, NULL as nothing,
/// joined by `chr(31)`, trailing NULLs dropped.
pub fn write_row_text<'a>(values: impl Iterator<Item = &'a Value> + Clone, out: &mut Vec<u8>) {
    let Some(last) = values
        .clone()
        .enumerate()
        .filter(|(_, v)| !v.is_null())
        .map(|(i, _)| i)
        .last()
    else {
        return;
    };
    for (i, value) in values.take(last + 1).enumerate() {
        if i > 0 {
            out.push(UNIT_SEPARATOR);
        }
        if !value.is_null() {
            write_canonical(value, out);
            out.push(RECORD_SEPARATOR);
        }
    }
}

/// Appends the canonical text of one non-NULL value (see the module docs). NULL writes nothing.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    let mut text = String::new();
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Int(i) => {
            let _ = write!(text, "{i}");
        }
        Value::Float(f) => write_pg_float8(*f, &mut text),
        Value::Decimal(s) | Value::Text(s) => out.extend_from_slice(s.as_bytes()),
        Value::Bytes(b) => {
            out.extend_from_slice(b"\\x");
            for byte in b {
                let _ = write!(text, "{byte:02x}");
            }
        }
        Value::Uuid(u) => {
            let _ = write!(text, "{}", u.hyphenated());
        }
        Value::Date(d) => write_date(d, &mut text),
        Value::Timestamp(t) => write_timestamp(&t.naive_utc(), &mut text),
        Value::TimestampNaive(t) => write_timestamp(t, &mut text),
        Value::Json(j) => write_jsonb(j, &mut text),
        Value::JsonText(t) => write_jsonb(&t.to_json(), &mut text),
        Value::Array(items) => write_pg_array(items, &mut text),
    }
    out.extend_from_slice(text.as_bytes());
}

fn write_date(d: &chrono::NaiveDate, out: &mut String) {
    let _ = write!(out, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
}

fn write_timestamp(t: &NaiveDateTime, out: &mut String) {
    write_date(&t.date(), out);
    let _ = write!(out, " {:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
    // PostgreSQL keeps microseconds; finer digits a source may carry are dropped.
    let micros = t.nanosecond() % 1_000_000_000 / 1000;
    if micros != 0 {
        let digits = format!("{micros:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// PostgreSQL 12+ `float8out` (shortest round-trip, `extra_float_digits = 1`).
fn write_pg_float8(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0" } else { "0" });
        return;
    }
    // Rust's `{:e}` prints the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if negative {
        out.push('-');
    }
    if (-4..15).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    }
}

/// PostgreSQL `jsonb` output form.
fn write_jsonb(j: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match j {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => {
            let _ = write!(out, "{n}");
        }
        J::String(s) => write_json_string(s, out),
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb(item, out);
            }
            out.push(']');
        }
        J::Object(map) => {
            // jsonb stores keys ordered by length, then bytewise.
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json_string(k, out);
                out.push_str(": ");
                write_jsonb(v, out);
            }
            out.push('}');
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// PostgreSQL `array_out` form.
fn write_pg_array(items: &[Value], out: &mut String) {
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => write_pg_array(inner, out),
            other => {
                let mut buf = Vec::new();
                write_canonical(other, &mut buf);
                let text = String::from_utf8_lossy(&buf);
                let needs_quotes = text.is_empty()
                    || text.eq_ignore_ascii_case("NULL")
                    || text.chars().any(|c| {
                        matches!(c, '{' | '}' | ',' | '"' | '\\')
                            || matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{b}' | '\u{c}')
                    });
                if needs_quotes {
                    out.push('"');
                    for c in text.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                } else {
                    out.push_str(&text);
                }
            }
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, NaiveDate, TimeZone, Utc};
    use serde_json::json;

    fn text(v: Value) -> String {
        let mut out = Vec::new();
        write_canonical(&v, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn trailing_nulls_do_not_change_the_checksum() {
        let base = vec![Value::Int(1), t("a")];
        let widened = vec![Value::Int(1), t("a"), Value::Null, Value::Null];
        assert_eq!(row_checksum(&base), row_checksum(&widened));
        // A NULL in the middle still counts.
        let middle = vec![Value::Int(1), Value::Null, t("a")];
        assert_ne!(row_checksum(&middle), row_checksum(&base));
    }

    #[test]
    fn null_and_empty_string_differ() {
        assert_ne!(
            row_checksum(&[Value::Int(1), t("")]),
            row_checksum(&[Value::Int(1), Value::Null])
        );
        assert_ne!(
            row_checksum(&[t(""), Value::Int(1)]),
            row_checksum(&[Value::Null, Value::Int(1)])
        );
    }

    #[test]
    fn column_order_matters() {
        assert_ne!(
            row_checksum(&[t("a"), t("b")]),
            row_checksum(&[t("b"), t("a")])
        );
        // Concatenation does not collide either.
        assert_ne!(
            row_checksum(&[t("ab"), t("")]),
            row_checksum(&[t("a"), t("b")])
        );
    }

    #[test]
    fn zoned_timestamps_are_normalized_to_utc() {
        let from_offset: DateTime<Utc> = DateTime::parse_from_rfc3339("2024-01-01T05:00:00+02:00")
            .unwrap()
            .with_timezone(&Utc);
        let utc = Utc.with_ymd_and_hms(2024, 1, 1, 3, 0, 0).unwrap();
        assert_eq!(
            row_checksum(&[Value::Timestamp(from_offset)]),
            row_checksum(&[Value::Timestamp(utc)])
        );
        assert_eq!(text(Value::Timestamp(utc)), "2024-01-01 03:00:00");
        let later = utc + chrono::Duration::microseconds(120_000);
        assert_eq!(text(Value::Timestamp(later)), "2024-01-01 03:00:00.12");
    }

    #[test]
    fn hashes_the_documented_text() {
        // md5 of "1\x1e\x1f\x1fabc\x1e" as PostgreSQL computes it:
        // select md5(rtrim(coalesce(1::varchar||chr(30),'')||chr(31)||coalesce(NULL::varchar||chr(30),'')
        //   ||chr(31)||coalesce('abc'||chr(30),'')||chr(31)||coalesce(NULL||chr(30),''), chr(31)));
        let row = [Value::Int(1), Value::Null, t("abc"), Value::Null];
        let mut buf = Vec::new();
        write_row_text(row.iter(), &mut buf);
        assert_eq!(buf, b"1\x1e\x1f\x1fabc\x1e");
        assert_eq!(
            row_checksum(&row).to_hex(),
            format!("{:x}", Md5::digest(b"1\x1e\x1f\x1fabc\x1e"))
        );
        assert_eq!(
            row_checksum(&[]).to_hex(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(row_checksum(&[Value::Null, Value::Null]), row_checksum(&[]));
    }

    /// The same row checksummed by PostgreSQL 15.18 with the SQL in the module docs (bool as
    /// CASE, timestamptz `AT TIME ZONE 'UTC'`, jsonb, text[]), trailing NULL column included.
    #[test]
    fn equals_postgres_md5_for_a_row_of_every_type() {
        let row = vec![
            Value::Int(1),
            Value::Null,
            t("abc"),
            t(""),
            Value::Bool(true),
            Value::Float(1.5),
            Value::Float(1e20),
            Value::Float(1e-5),
            Value::Float(123456789012345678.0),
            Value::Decimal("12.50".into()),
            Value::Bytes(vec![0xde, 0xad]),
            Value::Uuid(uuid::Uuid::from_u128(
                0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
            )),
            Value::Date(NaiveDate::from_ymd_opt(2024, 3, 9).unwrap()),
            Value::Timestamp(
                DateTime::parse_from_rfc3339("2024-01-01T05:00:00.12+02:00")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            Value::TimestampNaive(
                NaiveDate::from_ymd_opt(2024, 1, 1)
                    .unwrap()
                    .and_hms_opt(3, 0, 0)
                    .unwrap(),
            ),
            Value::Json(json!({"bb": [1, "x"], "a": null, "c": true, "s": "q\"\n"})),
            Value::Array(vec![t("a"), t("b c"), Value::Null, t(""), t("q\"")]),
            Value::Float(-0.0001),
            Value::Null,
        ];
        assert_eq!(
            row_checksum(&row).to_hex(),
            "e90b77787c41a85d0e7f86aff7f3a5bc"
        );
    }

    #[test]
    fn canonical_text_per_type() {
        assert_eq!(text(Value::Bool(true)), "t");
        assert_eq!(text(Value::Int(-42)), "-42");
        assert_eq!(text(Value::Float(1.5)), "1.5");
        assert_eq!(text(Value::Float(100.0)), "100");
        assert_eq!(text(Value::Float(1e20)), "1e+20");
        assert_eq!(text(Value::Float(1e-5)), "1e-05");
        assert_eq!(text(Value::Float(0.0001)), "0.0001");
        assert_eq!(text(Value::Float(-0.5)), "-0.5");
        assert_eq!(
            text(Value::Float(123456789012345680.0)),
            "1.2345678901234568e+17"
        );
        assert_eq!(text(Value::Float(1e14)), "100000000000000");
        assert_eq!(text(Value::Float(1e15)), "1e+15");
        assert_eq!(text(Value::Float(f64::NEG_INFINITY)), "-Infinity");
        assert_eq!(text(Value::Bytes(vec![0xde, 0xad])), "\\xdead");
        assert_eq!(
            text(Value::Date(NaiveDate::from_ymd_opt(2024, 3, 9).unwrap())),
            "2024-03-09"
        );
        assert_eq!(
            text(Value::Json(json!({"bb": [1, "x"], "a": null, "c": true}))),
            r#"{"a": null, "c": true, "bb": [1, "x"]}"#
        );
        assert_eq!(
            text(Value::Array(vec![
                t("a"),
                t("b c"),
                Value::Null,
                t(""),
                t("q\"")
            ])),
            r#"{a,"b c",NULL,"","q\""}"#
        );
    }
}
