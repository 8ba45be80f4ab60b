//! The JSON 1.1 wire shapes of the Redshift Data API: errors, result fields, column metadata,
//! and the small readers for request members.

use base64::Engine as _;
use serde_json::{json, Map, Value as Json};

/// An error answer: HTTP 400 with `{"__type": kind, "Message": …}` (plus extra members some
/// exceptions require, e.g. `ResourceId`).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: &'static str,
    pub message: String,
    pub status: u16,
    pub extra: Map<String, Json>,
}

impl ApiError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            status: 400,
            extra: Map::new(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationException", message)
    }

    pub fn not_found(id: &str) -> Self {
        let mut e = Self::new(
            "ResourceNotFoundException",
            format!("Query does not exist: {id}"),
        );
        e.extra.insert("ResourceId".into(), Json::String(id.into()));
        e
    }

    pub fn with(mut self, key: &str, value: Json) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    pub fn body(&self) -> Json {
        let mut body = self.extra.clone();
        body.insert("__type".into(), Json::String(self.kind.into()));
        body.insert("Message".into(), Json::String(self.message.clone()));
        Json::Object(body)
    }
}

/// One result cell, as `GetStatementResult` sends it.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Null,
    Long(i64),
    Double(f64),
    Text(String),
    Bool(bool),
    Blob(Vec<u8>),
}

impl Field {
    pub fn to_json(&self) -> Json {
        match self {
            Field::Null => json!({"isNull": true}),
            Field::Long(v) => json!({"longValue": v}),
            // JSON has no NaN or infinities; AWS JSON protocols send them as these strings.
            Field::Double(v) if v.is_nan() => json!({"doubleValue": "NaN"}),
            Field::Double(v) if v.is_infinite() && *v > 0.0 => json!({"doubleValue": "Infinity"}),
            Field::Double(v) if v.is_infinite() => json!({"doubleValue": "-Infinity"}),
            Field::Double(v) => json!({"doubleValue": v}),
            Field::Text(s) => json!({"stringValue": s}),
            Field::Bool(b) => json!({"booleanValue": b}),
            Field::Blob(b) => {
                json!({"blobValue": base64::engine::general_purpose::STANDARD.encode(b)})
            }
        }
    }

    /// Bytes this cell counts for in `ResultSize`.
    pub fn size(&self) -> usize {
        match self {
            Field::Null => 1,
            Field::Long(_) | Field::Double(_) => 8,
            Field::Bool(_) => 1,
            Field::Text(s) => s.len(),
            Field::Blob(b) => b.len(),
        }
    }
}

/// One entry of `ColumnMetadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMeta {
    pub name: String,
    /// Redshift's type name (`int8`, `varchar`, `timestamptz`, `super`, `varbyte`, …).
    pub type_name: String,
    pub is_signed: bool,
}

impl ColumnMeta {
    pub fn to_json(&self) -> Json {
        json!({
            "name": self.name,
            "label": self.name,
            "typeName": self.type_name,
            "nullable": 1,
            "isSigned": self.is_signed,
            "isCaseSensitive": matches!(self.type_name.as_str(), "varchar" | "bpchar" | "super"),
            "isCurrency": false,
            "precision": 0,
            "scale": 0,
            "length": 0,
            "schemaName": "",
            "tableName": "",
            "columnDefault": null,
        })
    }
}

/// Request member readers that name the member in their errors.
pub struct Input<'a>(pub &'a Json);

impl<'a> Input<'a> {
    pub fn str(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        match self.0.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(ApiError::validation(format!("{key} must be a string"))),
        }
    }

    pub fn required_str(&self, key: &str) -> Result<&'a str, ApiError> {
        self.str(key)?
            .ok_or_else(|| ApiError::validation(format!("{key} is required")))
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.0.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::validation(format!("{key} must be an integer"))),
            Some(_) => Err(ApiError::validation(format!("{key} must be an integer"))),
        }
    }

    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.0.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ApiError::validation(format!("{key} must hold strings")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(ApiError::validation(format!("{key} must be a list"))),
        }
    }

    /// `Parameters: [{"name": …, "value": …}]`.
    pub fn parameters(&self) -> Result<Vec<(String, String)>, ApiError> {
        let Some(list) = self.0.get("Parameters") else {
            return Ok(Vec::new());
        };
        let Some(list) = list.as_array() else {
            return Err(ApiError::validation("Parameters must be a list"));
        };
        list.iter()
            .map(|p| {
                let name = p.get("name").and_then(Json::as_str);
                let value = p.get("value").and_then(Json::as_str);
                match (name, value) {
                    (Some(n), Some(v)) if !n.is_empty() => Ok((n.to_owned(), v.to_owned())),
                    _ => Err(ApiError::validation(
                        "each parameter needs a non-empty name and a string value",
                    )),
                }
            })
            .collect()
    }
}

/// Seconds since the epoch, with fractions, as the Data API's timestamps are sent.
pub fn epoch_seconds(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}
