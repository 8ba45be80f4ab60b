//! A JSON cell kept as the text the warehouse sent.
//!
//! Building a `serde_json::Value` tree for every JSON cell (a map node and a string per key and
//! value) and freeing it again after the page is encoded was about a third of a sync's CPU. A
//! source that receives JSON as text checks its syntax once and keeps the text; the event
//! encoder writes it into the record in serde_json's compact form without building the tree
//! (`mapping::direct`), and only what needs to look inside (a lookup cell, a checksum, the
//! general encoding path) parses it, getting exactly the tree the source would have built.

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Syntactically valid JSON text, as the warehouse wrote it (whitespace and key order included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(Box<str>);

impl JsonText {
    /// Checks `text` is one JSON value (without building it) and keeps it.
    pub fn new(text: String) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<IgnoredAny>(&text)?;
        Ok(Self(text.into_boxed_str()))
    }

    /// As [`JsonText::new`], giving the text back when it is not JSON.
    pub fn new_or_text(text: String) -> Result<Self, String> {
        match serde_json::from_str::<IgnoredAny>(&text) {
            Ok(_) => Ok(Self(text.into_boxed_str())),
            Err(_) => Err(text),
        }
    }

    /// The text as checked.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parsed value: the tree a source parsing the text itself would have held. A syntax
    /// check cannot see a number beyond f64's range (`1e400`), which serde_json refuses to
    /// parse; such a value becomes the text itself as a string, so nothing is dropped.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.0)
            .unwrap_or_else(|_| serde_json::Value::String(self.0.to_string()))
    }

    /// The text of a parsed value (compact).
    pub fn from_json(value: &serde_json::Value) -> Self {
        Self(value.to_string().into_boxed_str())
    }
}

/// Stored (e.g. as a cursor value) as the JSON value itself.
impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(|v| Self::from_json(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_valid_text_and_refuses_invalid() {
        let text = JsonText::new(r#"{"b": [1, 2.5], "a": {"x": null}}"#.into()).unwrap();
        assert_eq!(text.as_str(), r#"{"b": [1, 2.5], "a": {"x": null}}"#);
        assert_eq!(text.to_json(), json!({"a": {"x": null}, "b": [1, 2.5]}));
        for bad in ["{oops", "", "1 2", "[1,]"] {
            assert!(JsonText::new(bad.into()).is_err(), "{bad:?}");
            assert_eq!(JsonText::new_or_text(bad.into()), Err(bad.to_owned()));
        }
        let huge = JsonText::new("[1e400]".into()).unwrap();
        assert_eq!(huge.to_json(), json!("[1e400]"));
    }
}
