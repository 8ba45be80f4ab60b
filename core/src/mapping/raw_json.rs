//! JSON text written into a record as serde_json would write its parsed tree, without the tree.
//!
//! A JSON cell kept as text ([`JsonText`](crate::value::JsonText)) may have any whitespace and
//! key order (PostgreSQL's `jsonb` prints `{"b": 1, "aa": 2}`, shorter keys first). The record
//! must hold the bytes `serde_json::to_vec(&parsed)` gives: compact, object keys in byte order,
//! the last of two equal keys kept, numbers as serde_json prints what it parsed, strings with
//! its escaping. This walks the text once with serde_json's own parser (so numbers and strings
//! are read exactly as the tree would hold them), writing as it goes; only objects gather their
//! entries to sort them. It also applies the checks `direct::fits_json` makes on a tree.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;

use super::direct::write_str;
use crate::ingest::limits::{
    ARRAY_ELEMENTS_EXCLUSIVE, MAX_OBJECT_DEPTH, MAX_STRING_CHARS, OBJECT_KEYS_EXCLUSIVE,
};

/// Writes `text` (valid JSON) as serde_json writes its tree. With `check`, `Ok(false)` as soon
/// as a value is met that validation would refuse or change (the output then unfinished):
/// the same answer `fits_json(&parsed, depth)` gives.
pub(super) fn write_raw(
    out: &mut Vec<u8>,
    text: &str,
    depth: usize,
    check: bool,
) -> serde_json::Result<bool> {
    let refused = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Canonical {
        out,
        depth,
        check,
        refused: &refused,
    };
    match seed.deserialize(&mut de).and_then(|()| de.end()) {
        Ok(()) => Ok(true),
        Err(_) if refused.get() => Ok(false),
        Err(e) => Err(e),
    }
}

/// One value's writer.
struct Canonical<'o, 'r> {
    out: &'o mut Vec<u8>,
    /// Objects around this value (what `fits_json` calls depth).
    depth: usize,
    check: bool,
    refused: &'r Cell<bool>,
}

impl Canonical<'_, '_> {
    fn refuse<E: serde::de::Error>(&self) -> E {
        self.refused.set(true);
        E::custom("value outside the property limits")
    }

    fn string<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        if self.check && !(s.len() <= MAX_STRING_CHARS || s.chars().count() <= MAX_STRING_CHARS) {
            return Err(self.refuse());
        }
        write_str(self.out, s).map_err(E::custom)
    }

    fn number<E: serde::de::Error, N: serde::Serialize>(self, n: N) -> Result<(), E> {
        serde_json::to_writer(&mut *self.out, &n).map_err(E::custom)
    }
}

impl<'de> DeserializeSeed<'de> for Canonical<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canonical<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<(), E> {
        self.out
            .extend_from_slice(if b { b"true" } else { b"false" });
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<(), E> {
        self.number(n)
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<(), E> {
        self.number(n)
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<(), E> {
        // serde_json's tree holds a parsed float as a Number, and prints it the same way.
        self.number(n)
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        self.string(s)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Canonical {
            out,
            depth,
            check,
            refused,
        } = self;
        out.push(b'[');
        let mut count = 0usize;
        loop {
            if count > 0 {
                out.push(b',');
            }
            let item = Canonical {
                out: &mut *out,
                depth,
                check,
                refused,
            };
            if seq.next_element_seed(item)?.is_none() {
                if count > 0 {
                    out.pop();
                }
                break;
            }
            count += 1;
            if check && count >= ARRAY_ELEMENTS_EXCLUSIVE {
                refused.set(true);
                return Err(A::Error::custom("too many array elements"));
            }
        }
        out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.check && self.depth >= MAX_OBJECT_DEPTH {
            return Err(self.refuse());
        }
        // Values are written here at their end; the entries are then sorted by key.
        let mut values = Vec::new();
        let mut entries: Vec<(Cow<'de, str>, usize, usize)> = Vec::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let start = values.len();
            map.next_value_seed(Canonical {
                out: &mut values,
                depth: self.depth + 1,
                check: self.check,
                refused: self.refused,
            })?;
            entries.push((key, start, values.len()));
        }
        // Stable: of equal keys the last one parsed comes last, and is the one a map keeps.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let kept = |i: usize| i + 1 == entries.len() || entries[i + 1].0 != entries[i].0;
        if self.check {
            let count = (0..entries.len()).filter(|&i| kept(i)).count();
            if count >= OBJECT_KEYS_EXCLUSIVE {
                return Err(self.refuse());
            }
        }
        let out = self.out;
        out.push(b'{');
        let mut first = true;
        for (i, (key, start, end)) in entries.iter().enumerate() {
            if !kept(i) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(out, key).map_err(A::Error::custom)?;
            out.push(b':');
            out.extend_from_slice(&values[*start..*end]);
        }
        out.push(b'}');
        Ok(())
    }
}

/// An object key, borrowed from the text when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}

/// The entries of a JSON object text, each value as its text, in the order written; `None`
/// when the text is not an object or a key has escapes (the caller then parses the tree).
pub(super) fn object_entries(text: &str) -> Option<Vec<(&str, &str)>> {
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<(&'de str, &'de str)>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
            while let Some(key) = map.next_key::<&'de str>()? {
                let value: &'de serde_json::value::RawValue = map.next_value()?;
                entries.push((key, value.get()));
            }
            Ok(entries)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let entries = de.deserialize_map(Entries).ok()?;
    de.end().ok()?;
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::direct::{fits_json, write_json_fitting};
    use serde_json::Value as Json;

    fn canonical(text: &str, check: bool) -> (bool, String) {
        let mut out = Vec::new();
        let fits = write_raw(&mut out, text, 0, check).unwrap();
        (fits, String::from_utf8(out).unwrap())
    }

    /// For every text, the raw writer gives serde_json's bytes for the parsed tree, and refuses
    /// exactly what the tree check refuses.
    #[test]
    fn raw_text_is_written_as_its_tree() {
        let long = "é".repeat(MAX_STRING_CHARS + 1);
        let texts = vec![
            // PostgreSQL jsonb's print form: spaces, shorter keys first.
            r#"{"b": 1, "aa": [1, 2.50, -0.0, 1e3, 12345678901234567890, -9223372036854775808], "a": {"y": null, "x": true}}"#.to_owned(),
            r#"  {"dup": 1, "z": "\u00e9\n\"q\"\\", "dup": {"k": 2}, "\u0041": "escaped key"}  "#.to_owned(),
            r#"[1, "x", {"b": [], "a": {}}, [[["deep array"]]], 0.1, 2.5e-8, 1.7976931348623157e308]"#.to_owned(),
            r#""just a string with / and \/ and \ud83d\ude80""#.to_owned(),
            "null".to_owned(),
            "-12".to_owned(),
            r#"{"a":{"b":{"c":{"d":1}}}}"#.to_owned(),
            r#"{"a":{"b":{"c":1}},"list":[{"x":{"y":2}}]}"#.to_owned(),
            format!(r#"{{"long": "{long}"}}"#),
            format!(r#"{{"short_keys_are_fine": {{"{long}": 1}}}}"#),
            format!("[{}]", vec!["1"; ARRAY_ELEMENTS_EXCLUSIVE].join(",")),
            format!("[{}]", vec!["1"; ARRAY_ELEMENTS_EXCLUSIVE - 1].join(",")),
            format!(
                "{{{}}}",
                (0..OBJECT_KEYS_EXCLUSIVE)
                    .map(|i| format!(r#""k{i}": {i}"#))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "{{{}, \"k0\": 0}}",
                (0..OBJECT_KEYS_EXCLUSIVE - 1)
                    .map(|i| format!(r#""k{i}": {i}"#))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ];
        let mut refused = 0;
        for text in &texts {
            let tree: Json = serde_json::from_str(text).unwrap();
            let expected = serde_json::to_string(&tree).unwrap();
            assert_eq!(canonical(text, false), (true, expected.clone()), "{text}");
            let fits = fits_json(&tree, 0);
            assert_eq!(canonical(text, true).0, fits, "{text}");
            assert_eq!(
                write_json_fitting(&mut Vec::new(), &tree, 0).unwrap(),
                fits,
                "{text}"
            );
            if fits {
                assert_eq!(canonical(text, true).1, expected, "{text}");
            } else {
                refused += 1;
            }
        }
        // Deep object, long string, too many elements, too many keys.
        assert_eq!(refused, 4);
    }

    #[test]
    fn object_entries_split_only_plain_objects() {
        let entries = object_entries(r#"{"b": [1, {"x": 2}], "a": "s", "b": null}"#).unwrap();
        assert_eq!(
            entries,
            vec![("b", r#"[1, {"x": 2}]"#), ("a", r#""s""#), ("b", "null")]
        );
        assert_eq!(object_entries("[1]"), None);
        assert_eq!(object_entries(r#"{"\u0041": 1}"#), None);
        assert_eq!(object_entries("{} 1"), None);
    }
}
