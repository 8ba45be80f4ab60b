//! Identifier rules shared by events and profiles.

use super::limits::MAX_INSERT_ID_BYTES;

/// Values Mixpanel refuses as `distinct_id` or `$insert_id`, compared case-insensitively.
pub const INVALID_IDS: &[&str] = &[
    "00000000-0000-0000-0000-000000000000",
    "anon",
    "anonymous",
    "nil",
    "none",
    "null",
    "n/a",
    "na",
    "undefined",
    "unknown",
    "<nil>",
    "0",
    "-1",
    "true",
    "false",
    "[]",
    "{}",
    "lmy47d",
];

/// True when `id` is one of the stand-in values (null, undefined, 0, …) that Mixpanel refuses as an id.
pub fn is_refused_id_value(id: &str) -> bool {
    let trimmed = id.trim();
    INVALID_IDS
        .iter()
        .any(|bad| bad.eq_ignore_ascii_case(trimmed))
}

/// Checks an identity value (distinct id, user id, device id, group id).
pub fn check_identity(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("must be a non-empty string".into());
    }
    if is_refused_id_value(id) {
        return Err(format!(
            "'{id}' is not a valid identifier (Mixpanel refuses it as an id value)"
        ));
    }
    if id.chars().count() > super::limits::MAX_STRING_CHARS {
        return Err(format!(
            "is longer than {} characters",
            super::limits::MAX_STRING_CHARS
        ));
    }
    Ok(())
}

/// Checks `$insert_id`: at most 36 bytes of `[A-Za-z0-9-]`, and not a refused stand-in value.
pub fn check_insert_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > MAX_INSERT_ID_BYTES {
        return Err(format!(
            "must be at most {MAX_INSERT_ID_BYTES} bytes, got {}",
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!("may contain only [A-Za-z0-9-], found {bad:?}"));
    }
    if is_refused_id_value(id) {
        return Err(format!(
            "'{id}' is not a valid identifier (Mixpanel refuses it as an id value)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_in_values_are_refused_whatever_their_case() {
        for bad in [
            "NULL",
            "Undefined",
            "00000000-0000-0000-0000-000000000000",
            "LMY47D",
            "-1",
            "{}",
        ] {
            assert!(is_refused_id_value(bad), "{bad}");
            assert!(check_identity(bad).is_err(), "{bad}");
        }
        assert!(check_identity("user-1").is_ok());
        assert!(check_identity("  ").is_err());
        assert!(check_identity(&"x".repeat(256)).is_err());
        assert!(check_identity(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn insert_id_format() {
        assert!(check_insert_id("abc-DEF-123").is_ok());
        assert!(check_insert_id(&"a".repeat(36)).is_ok());
        assert!(check_insert_id(&"a".repeat(37))
            .unwrap_err()
            .contains("36 bytes"));
        assert!(check_insert_id("has_underscore")
            .unwrap_err()
            .contains("'_'"));
        assert!(check_insert_id("nil").is_err());
        assert!(check_insert_id("").is_err());
    }
}
