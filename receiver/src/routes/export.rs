//! `GET /api/2.0/export`: the project's stored events as NDJSON.
//!
//! Differences from Mixpanel, by design: the store is deduplicated, so each (event, distinct_id,
//! time, `$insert_id`) appears once (its latest copy); `where` supports a subset (see `Filter`).

use std::io::Write;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde_json::Value;

use super::{authenticated, finish, flag, inject, Before, Params, UNAUTHENTICATED};
use crate::config::StoreMode;
use crate::reply;
use crate::App;

const ENDPOINT: &str = "export";
const MAX_LIMIT: usize = 100_000;

pub async fn export(
    State(app): State<Arc<App>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    if let Before::Answer(r) = inject(&app).await {
        return finish(&app, UNAUTHENTICATED, ENDPOINT, r, false);
    }
    let project = match authenticated(&app, ENDPOINT, &params, &headers, false) {
        Ok(project) => project,
        Err(answer) => return answer,
    };
    let response = handle(&app, &project, &params, &headers)
        .unwrap_or_else(|m| reply::error(StatusCode::BAD_REQUEST, m));
    finish(&app, &project, ENDPOINT, response, false)
}

fn date_param(params: &Params, name: &str) -> Result<NaiveDate, String> {
    let raw = params
        .get(name)
        .ok_or_else(|| format!("'{name}' is required (YYYY-MM-DD)"))?;
    let well_formed = raw.len() == 10 && raw.as_bytes()[4] == b'-' && raw.as_bytes()[7] == b'-';
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .filter(|_| well_formed)
        .ok_or(())
        .map_err(|_| format!("'{name}' must be a date as YYYY-MM-DD, got '{raw}'"))
}

fn handle(
    app: &App,
    project: &str,
    params: &Params,
    headers: &HeaderMap,
) -> Result<Response, String> {
    if app.store.mode() == StoreMode::Memory {
        return Err("export needs the disk store: this receiver runs with --store memory and keeps no event contents".into());
    }
    let from = date_param(params, "from_date")?;
    let to = date_param(params, "to_date")?;
    if to < from {
        return Err("'to_date' is before 'from_date'".into());
    }
    let names: Option<Vec<String>> = match params.get("event") {
        None => None,
        Some(raw) => Some(
            serde_json::from_str(raw)
                .map_err(|_| "'event' must be a JSON array of event names".to_string())?,
        ),
    };
    let filter = match params.get("where") {
        None => None,
        Some(expr) => Some(Filter::parse(expr)?),
    };
    let limit = match params.get("limit") {
        None => MAX_LIMIT,
        Some(raw) => {
            let n: usize = raw
                .parse()
                .map_err(|_| format!("'limit' must be a number, got '{raw}'"))?;
            if n == 0 || n > MAX_LIMIT {
                return Err(format!("'limit' must be between 1 and {MAX_LIMIT}"));
            }
            n
        }
    };
    let in_ms = flag(params, "time_in_ms");
    let start_ms = from
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc().timestamp_millis())
        .unwrap_or(i64::MIN);
    let end_ms = to
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
        .unwrap_or(i64::MAX);

    let mut selected = app
        .store
        .read(project, |data| {
            data.events
                .iter()
                .filter(|(key, _)| key.time_ms >= start_ms && key.time_ms < end_ms)
                .filter(|(key, _)| names.as_ref().is_none_or(|n| n.contains(&key.event)))
                .filter(|(_, stored)| {
                    filter
                        .as_ref()
                        .is_none_or(|f| f.matches(&stored.event["properties"]))
                })
                .map(|(key, stored)| (key.clone(), stored.event.clone(), stored.ingested_ms))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    selected.sort_by(|a, b| (a.0.time_ms, &a.0.insert_id).cmp(&(b.0.time_ms, &b.0.insert_id)));
    selected.truncate(limit);

    let mut out = Vec::new();
    for (key, mut event, ingested_ms) in selected {
        if let Some(props) = event.get_mut("properties").and_then(Value::as_object_mut) {
            let time = if in_ms {
                Value::from(key.time_ms)
            } else {
                Value::from(key.time_ms.div_euclid(1000))
            };
            props.insert("time".into(), time);
            props.insert("mp_processing_time_ms".into(), Value::from(ingested_ms));
        }
        serde_json::to_writer(&mut out, &event).map_err(|e| e.to_string())?;
        out.push(b'\n');
    }
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&out).map_err(|e| e.to_string())?;
        let gz = enc.finish().map_err(|e| e.to_string())?;
        return Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/x-ndjson"),
                (header::CONTENT_ENCODING, "gzip"),
            ],
            gz,
        )
            .into_response());
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        out,
    )
        .into_response())
}

/// The supported `where` subset: clauses joined by `and` / `or` (`and` binds tighter), each
/// `properties["name"] OP literal` with OP one of `== != > >= < <=` and a string, number or
/// boolean literal, or `defined(properties["name"])` / `not defined(...)`.
#[derive(Debug, PartialEq)]
pub struct Filter {
    /// Disjunction of conjunctions.
    any_of: Vec<Vec<Clause>>,
}

#[derive(Debug, PartialEq)]
enum Clause {
    Compare {
        property: String,
        op: Op,
        value: Value,
    },
    Defined {
        property: String,
        negated: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Filter {
    pub fn parse(expr: &str) -> Result<Self, String> {
        let unsupported = |part: &str| {
            format!("unsupported 'where' clause '{}': the receiver supports properties[\"x\"] == literal (also != > >= < <=) and defined(properties[\"x\"]), joined by and / or", part.trim())
        };
        let mut any_of = Vec::new();
        for alternative in split_keyword(expr, " or ") {
            let mut all_of = Vec::new();
            for part in split_keyword(&alternative, " and ") {
                all_of.push(Clause::parse(&part).ok_or_else(|| unsupported(&part))?);
            }
            any_of.push(all_of);
        }
        Ok(Self { any_of })
    }

    pub fn matches(&self, props: &Value) -> bool {
        self.any_of
            .iter()
            .any(|all| all.iter().all(|c| c.matches(props)))
    }
}

/// Splits on a keyword outside double-quoted strings.
fn split_keyword(expr: &str, keyword: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut in_string = false;
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < expr.len() {
        let c = bytes[i];
        if c == b'"' && (i == 0 || bytes[i - 1] != b'\\') {
            in_string = !in_string;
        }
        if !in_string && expr[i..].starts_with(keyword) {
            parts.push(std::mem::take(&mut current));
            i += keyword.len();
            continue;
        }
        let ch = expr[i..].chars().next().unwrap_or(' ');
        current.push(ch);
        i += ch.len_utf8();
    }
    parts.push(current);
    parts
}

fn property_ref(text: &str) -> Option<String> {
    let inner = text.trim().strip_prefix("properties[")?.strip_suffix(']')?;
    serde_json::from_str::<String>(inner.trim()).ok()
}

impl Clause {
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (negated, rest) = match text.strip_prefix("not ") {
            Some(rest) => (true, rest.trim()),
            None => (false, text),
        };
        if let Some(inner) = rest
            .strip_prefix("defined(")
            .and_then(|r| r.strip_suffix(')'))
        {
            return Some(Clause::Defined {
                property: property_ref(inner)?,
                negated,
            });
        }
        if negated {
            return None;
        }
        for (token, op) in [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">=", Op::Ge),
            ("<=", Op::Le),
            (">", Op::Gt),
            ("<", Op::Lt),
        ] {
            if let Some((lhs, rhs)) = rest.split_once(token) {
                let value: Value = serde_json::from_str(rhs.trim()).ok()?;
                if value.is_object() || value.is_array() || value.is_null() {
                    return None;
                }
                return Some(Clause::Compare {
                    property: property_ref(lhs)?,
                    op,
                    value,
                });
            }
        }
        None
    }

    fn matches(&self, props: &Value) -> bool {
        match self {
            Clause::Defined { property, negated } => {
                props.get(property).is_some_and(|v| !v.is_null()) != *negated
            }
            Clause::Compare {
                property,
                op,
                value,
            } => {
                let Some(actual) = props.get(property) else {
                    return *op == Op::Ne;
                };
                let ordering = match (actual, value) {
                    (Value::Number(a), Value::Number(b)) => a
                        .as_f64()
                        .zip(b.as_f64())
                        .and_then(|(a, b)| a.partial_cmp(&b)),
                    (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                    (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
                    _ => None,
                };
                use std::cmp::Ordering::*;
                match (op, ordering) {
                    (Op::Eq, o) => o == Some(Equal),
                    (Op::Ne, o) => o != Some(Equal),
                    (Op::Gt, o) => o == Some(Greater),
                    (Op::Ge, o) => matches!(o, Some(Greater | Equal)),
                    (Op::Lt, o) => o == Some(Less),
                    (Op::Le, o) => matches!(o, Some(Less | Equal)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn where_subset() {
        let f = Filter::parse(r#"properties["plan"] == "pro and more" and properties["n"] >= 3 or defined(properties["vip"])"#).unwrap();
        assert!(f.matches(&json!({"plan": "pro and more", "n": 3})));
        assert!(!f.matches(&json!({"plan": "pro and more", "n": 2})));
        assert!(f.matches(&json!({"vip": true})));
        assert!(Filter::parse(r#"not defined(properties["x"])"#)
            .unwrap()
            .matches(&json!({})));
        assert!(Filter::parse("properties.x == 1")
            .unwrap_err()
            .contains("unsupported"));
        assert!(Filter::parse(r#"properties["x"] == [1]"#).is_err());
    }
}
