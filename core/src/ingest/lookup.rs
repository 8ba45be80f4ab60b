//! Lookup-table CSV rules: RFC 4180, a header of unique names, at least two columns, the first
//! column the key (unique, non-blank). Values are typed as Mixpanel types them: numbers,
//! RFC 3339 datetimes, `true`/`false`, `["a","b"]` lists, empty = undefined, else strings.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::{Map, Value};

use super::limits::{MAX_LOOKUP_BYTES, MAX_LOOKUP_ERRORS_REPORTED};

/// A parsed, valid lookup table. Each row maps column name → typed value; undefined cells are
/// absent. `rows[i]` keeps the CSV's order.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct LookupTable {
    pub columns: Vec<String>,
    pub rows: Vec<Map<String, Value>>,
}

/// One refused data row. `index` counts data rows from 0 (the header is not a data row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    pub index: usize,
    pub message: String,
}

/// Why a CSV was refused. `rows` holds at most the first ten bad rows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("lookup table exceeds max limit of {MAX_LOOKUP_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    Header(String),
    #[error("{count} rows failed validation", count = .total)]
    Rows { rows: Vec<RowError>, total: usize },
}

/// Types one CSV cell. `None` is an empty cell (undefined).
pub fn type_cell(cell: &str) -> Option<Value> {
    if cell.is_empty() {
        return None;
    }
    if cell == "true" || cell == "false" {
        return Some(Value::Bool(cell == "true"));
    }
    let numeric = cell
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if numeric {
        if let Ok(i) = cell.parse::<i64>() {
            return Some(Value::from(i));
        }
        if let Some(n) = cell
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Some(Value::Number(n));
        }
    }
    if cell.starts_with('[') {
        if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(cell) {
            if items.iter().all(Value::is_string) {
                return Some(Value::Array(items));
            }
        }
    }
    // RFC 3339 datetimes stay strings on the wire; they are recognised so callers can tell.
    Some(Value::String(cell.to_owned()))
}

/// True when a cell holds an RFC 3339 datetime.
pub fn is_datetime(cell: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(cell).is_ok()
}

/// Parses and validates a whole replacement, all or nothing.
pub fn parse_lookup_csv(body: &[u8]) -> Result<LookupTable, LookupError> {
    if body.len() > MAX_LOOKUP_BYTES {
        return Err(LookupError::TooLarge);
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut records = reader.records();
    let header = match records.next() {
        None => {
            return Err(LookupError::Header(
                "the CSV is empty: a header row is required".into(),
            ))
        }
        Some(Err(e)) => {
            return Err(LookupError::Header(format!(
                "the header row is not valid CSV: {e}"
            )))
        }
        Some(Ok(h)) => h,
    };
    let columns: Vec<String> = header
        .iter()
        .map(|c| c.trim_start_matches('\u{feff}').to_owned())
        .collect();
    if columns.len() < 2 {
        return Err(LookupError::Header(format!(
            "a lookup table needs at least 2 columns, the header has {}",
            columns.len()
        )));
    }
    let mut seen = HashSet::new();
    for (i, name) in columns.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(LookupError::Header(format!(
                "column {} of the header has no name",
                i + 1
            )));
        }
        if !seen.insert(name.as_str()) {
            return Err(LookupError::Header(format!(
                "the header names column '{name}' twice"
            )));
        }
    }

    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut total_bad = 0;
    let mut keys = HashSet::new();
    for (index, record) in records.enumerate() {
        let mut fail = |message: String| {
            total_bad += 1;
            if errors.len() < MAX_LOOKUP_ERRORS_REPORTED {
                errors.push(RowError { index, message });
            }
        };
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                fail(format!("not valid CSV: {e}"));
                continue;
            }
        };
        if record.len() != columns.len() {
            fail(format!(
                "has {} fields, the header has {}",
                record.len(),
                columns.len()
            ));
            continue;
        }
        let key = &record[0];
        if key.trim().is_empty() {
            fail(format!("the key column '{}' is blank", columns[0]));
            continue;
        }
        if !keys.insert(key.to_owned()) {
            fail(format!("duplicate key '{key}' in column '{}'", columns[0]));
            continue;
        }
        let mut row = Map::new();
        // The key is always kept as a string: it is matched against event property values.
        row.insert(columns[0].clone(), Value::String(key.to_owned()));
        for (name, cell) in columns.iter().zip(record.iter()).skip(1) {
            if let Some(v) = type_cell(cell) {
                row.insert(name.clone(), v);
            }
        }
        rows.push(row);
    }
    if total_bad > 0 {
        return Err(LookupError::Rows {
            rows: errors,
            total: total_bad,
        });
    }
    Ok(LookupTable { columns, rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_cells() {
        assert_eq!(type_cell(""), None);
        assert_eq!(type_cell("42"), Some(json!(42)));
        assert_eq!(type_cell("-1.5"), Some(json!(-1.5)));
        assert_eq!(type_cell("true"), Some(json!(true)));
        assert_eq!(type_cell("True"), Some(json!("True")));
        assert_eq!(type_cell(r#"["a","b"]"#), Some(json!(["a", "b"])));
        assert_eq!(type_cell("[1,2]"), Some(json!("[1,2]")));
        assert_eq!(
            type_cell("2024-01-02T03:04:05Z"),
            Some(json!("2024-01-02T03:04:05Z"))
        );
        assert!(is_datetime("2024-01-02T03:04:05+02:00"));
        assert_eq!(type_cell("12-34"), Some(json!("12-34")));
    }

    #[test]
    fn parses_a_valid_table() {
        let t = parse_lookup_csv(b"id,name,score\n1,\"Acme, Inc\",3.5\n2,,7\n").unwrap();
        assert_eq!(t.columns, ["id", "name", "score"]);
        assert_eq!(
            t.rows[0],
            *json!({"id": "1", "name": "Acme, Inc", "score": 3.5})
                .as_object()
                .unwrap()
        );
        assert_eq!(
            t.rows[1],
            *json!({"id": "2", "score": 7}).as_object().unwrap()
        );
    }

    #[test]
    fn refuses_bad_headers() {
        assert!(matches!(parse_lookup_csv(b""), Err(LookupError::Header(_))));
        assert!(
            matches!(parse_lookup_csv(b"id\n1\n"), Err(LookupError::Header(m)) if m.contains("at least 2"))
        );
        assert!(
            matches!(parse_lookup_csv(b"id,id\n1,2\n"), Err(LookupError::Header(m)) if m.contains("twice"))
        );
    }

    #[test]
    fn lists_at_most_ten_bad_rows_and_counts_all() {
        let mut csv = String::from("id,v\n");
        for _ in 0..12 {
            csv.push_str(",x\n");
        }
        csv.push_str("a,1\na,2\nb,1,extra\n");
        let Err(LookupError::Rows { rows, total }) = parse_lookup_csv(csv.as_bytes()) else {
            panic!("expected row errors")
        };
        assert_eq!(total, 14);
        assert_eq!(rows.len(), 10);
        assert_eq!(
            rows[0],
            RowError {
                index: 0,
                message: "the key column 'id' is blank".into()
            }
        );
    }
}
