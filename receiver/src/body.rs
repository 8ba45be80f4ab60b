//! Request bodies: gzip, and the record framings Mixpanel accepts (JSON array, NDJSON, form).

use std::io::Read;

use axum::http::{header, HeaderMap};
use ferry_core::ingest::FieldError;
use serde_json::value::RawValue;
use serde_json::Value;

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Uncompressed size above the endpoint's limit (413).
    TooLarge,
    /// Anything else wrong with the body as a whole (400).
    Invalid(String),
}

/// True when the request declares a gzip body.
pub fn is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().eq_ignore_ascii_case("gzip")))
}

/// Returns the uncompressed body, refusing more than `limit` uncompressed bytes.
pub fn decode(headers: &HeaderMap, body: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    if !is_gzip(headers) {
        if body.len() > limit {
            return Err(BodyError::TooLarge);
        }
        return Ok(body.to_vec());
    }
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit + 1));
    let mut decoder = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Invalid(format!("body is not valid gzip: {e}")))?;
    if out.len() > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(out)
}

/// One record as framed in the body: its parsed JSON and its size, or why it could not be read.
pub type Framed = Result<(Value, usize), FieldError>;

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// One record as framed in the body, not parsed yet: its JSON text, or why it cannot be read.
pub type RawFramed<'a> = Result<&'a str, FieldError>;

/// Splits a JSON-array or NDJSON body into records and parses each.
pub fn frame_records(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Framed>, BodyError> {
    Ok(split_records(headers, body)?
        .into_iter()
        .map(parse_record)
        .collect())
}

/// Splits a JSON-array or NDJSON body into records, without parsing them: a caller that parses
/// each record just before using it holds one parsed record at a time, not the whole body's.
/// A JSON array must be well-formed as a whole; in NDJSON each line stands alone, so one bad
/// line fails only its own record.
pub fn split_records<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
) -> Result<Vec<RawFramed<'a>>, BodyError> {
    let ctype = content_type(headers);
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let ndjson = ctype.contains("ndjson") || ctype.contains("jsonl") || first == Some(b'{');
    if ndjson {
        return Ok(split_ndjson(body));
    }
    if first.is_none() {
        return Err(BodyError::Invalid("the request body is empty".into()));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        BodyError::Invalid(format!(
            "the request body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
        BodyError::Invalid(format!(
            "the request body is not a JSON array of events: {e}"
        ))
    })?;
    Ok(items.into_iter().map(|raw| Ok(raw.get())).collect())
}

/// Parses one record framed by [`split_records`].
pub fn parse_record(raw: RawFramed<'_>) -> Framed {
    parse_one(raw?)
}

fn split_ndjson(body: &[u8]) -> Vec<RawFramed<'_>> {
    body.split(|b| *b == b'\n')
        .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
        .map(|line| {
            std::str::from_utf8(line).map_err(|e| {
                FieldError::new(
                    "event",
                    format!("the line is not valid UTF-8 (at byte {})", e.valid_up_to()),
                )
            })
        })
        .collect()
}

fn parse_one(text: &str) -> Framed {
    serde_json::from_str::<Value>(text)
        .map(|v| (v, text.trim().len()))
        .map_err(|e| FieldError::new("event", format!("not valid JSON: {e}")))
}

/// Profile bodies: a JSON array (or one object), or a form whose `data` field holds JSON or
/// base64-encoded JSON.
pub fn frame_updates(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Framed>, BodyError> {
    if content_type(headers).starts_with("application/x-www-form-urlencoded") {
        let data = form_urlencoded_data(body)?;
        let json = data_field_json(&data)?;
        return frame_value_list(json.as_bytes());
    }
    frame_value_list(body)
}

fn frame_value_list(body: &[u8]) -> Result<Vec<Framed>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        BodyError::Invalid(format!(
            "the request body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return Ok(vec![parse_one(trimmed)]);
    }
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
        BodyError::Invalid(format!(
            "the request body is not a JSON array of updates: {e}"
        ))
    })?;
    Ok(items.into_iter().map(|raw| parse_one(raw.get())).collect())
}

fn form_urlencoded_data(body: &[u8]) -> Result<String, BodyError> {
    #[derive(serde::Deserialize)]
    struct Form {
        data: Option<String>,
    }
    let form: Form = serde_urlencoded::from_bytes(body)
        .map_err(|e| BodyError::Invalid(format!("the form is not valid: {e}")))?;
    form.data
        .ok_or_else(|| BodyError::Invalid("the form has no 'data' field".into()))
}

fn data_field_json(data: &str) -> Result<String, BodyError> {
    let trimmed = data.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        return Ok(data.to_owned());
    }
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(data.trim()))
        .map_err(|_| BodyError::Invalid("'data' is neither JSON nor base64-encoded JSON".into()))?;
    String::from_utf8(bytes)
        .map_err(|_| BodyError::Invalid("'data' decodes to invalid UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(ctype: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::CONTENT_TYPE, ctype.parse().unwrap());
        m
    }

    #[test]
    fn ndjson_lines_fail_alone() {
        let body = b"{\"a\":1}\n\n{bad\n{\"b\":\xff}\n";
        let recs = frame_records(&h("application/x-ndjson"), body).unwrap();
        assert_eq!(recs.len(), 3);
        assert!(recs[0].is_ok());
        assert!(recs[1]
            .as_ref()
            .unwrap_err()
            .message
            .contains("not valid JSON"));
        assert!(recs[2].as_ref().unwrap_err().message.contains("UTF-8"));
    }

    #[test]
    fn arrays_parse_whole() {
        assert_eq!(
            frame_records(&h("application/json"), b"[{\"a\":1},{\"b\":2}]")
                .unwrap()
                .len(),
            2
        );
        assert!(matches!(
            frame_records(&h("application/json"), b"[{\"a\":1},"),
            Err(BodyError::Invalid(_))
        ));
        assert!(
            matches!(frame_records(&h("application/json"), b"[\"\xff\"]"), Err(BodyError::Invalid(m)) if m.contains("UTF-8"))
        );
    }

    #[test]
    fn forms_carry_json_or_base64() {
        let json = frame_updates(
            &h("application/x-www-form-urlencoded"),
            b"data=%5B%7B%22a%22%3A1%7D%5D",
        )
        .unwrap();
        assert_eq!(json.len(), 1);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(r#"[{"a":1},{"a":2}]"#);
        let body = format!(
            "data={}",
            b64.replace('+', "%2B")
                .replace('=', "%3D")
                .replace('/', "%2F")
        );
        assert_eq!(
            frame_updates(&h("application/x-www-form-urlencoded"), body.as_bytes())
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn gzip_limit_is_on_uncompressed_bytes() {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vec![b' '; 5000]).unwrap();
        let gz = enc.finish().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(decode(&headers, &gz, 5000).unwrap().len(), 5000);
        assert_eq!(decode(&headers, &gz, 4999), Err(BodyError::TooLarge));
        assert!(matches!(
            decode(&headers, b"nope", 10),
            Err(BodyError::Invalid(_))
        ));
    }
}
