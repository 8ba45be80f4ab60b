//! Credentials at rest. Warehouse passwords, SSH keys and destination secrets are sealed with
//! AES-256-GCM before they reach the state store, under a key that never leaves the node's
//! environment: `FERRY_SECRET_KEY` (base64 of 32 random bytes) or the file named by
//! `FERRY_SECRET_KEY_FILE` (a mounted Kubernetes Secret). Each sealed value carries the id of
//! its key, so a node started with another key says so instead of failing obscurely, and the
//! object it belongs to as associated data, so a sealed value copied onto another object does
//! not open.
//!
//! A [`SecretBox`]'s `Debug` shows the key id only; opened values come back as
//! [`ferry_core::spec::Secret`]-bearing specs, whose `Debug` redacts them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const KEY_ENV: &str = "FERRY_SECRET_KEY";
pub const KEY_FILE_ENV: &str = "FERRY_SECRET_KEY_FILE";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "no secret key: set {KEY_ENV} to a base64-encoded 32-byte key, or {KEY_FILE_ENV} to a \
         file holding one (`ferry secret-key` prints a new one)"
    )]
    Missing,
    #[error("the secret key from {source_name} is not usable: {reason} (`ferry secret-key` prints a valid one)")]
    Malformed { source_name: String, reason: String },
    #[error(
        "credentials of {object} were sealed with key {sealed_with}, but this node has key \
         {ours}: start it with the key the data was written with"
    )]
    WrongKey {
        object: String,
        sealed_with: String,
        ours: String,
    },
    #[error("credentials of {object} cannot be opened: {reason}")]
    Corrupt { object: String, reason: String },
    #[error("sealing credentials failed: {0}")]
    Seal(String),
}

/// The node's credential key. Cheap to clone.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
    key_id: String,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Sealed credentials as stored: which of the object's fields are set (not secret) and their
/// values, encrypted together.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Sealed {
    /// The key that sealed them (empty when nothing is sealed).
    #[serde(default)]
    pub key_id: String,
    /// The credential fields present, as JSON pointers into the object's spec.
    #[serde(default)]
    pub fields: Vec<String>,
    #[serde(default)]
    pub nonce: String,
    #[serde(default)]
    pub ciphertext: String,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl Sealed {
    pub fn has(&self, field: &str) -> bool {
        self.fields.iter().any(|f| f == field)
    }
}

/// Credential values by field (JSON pointer). Its `Debug` shows the fields, not the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Plain(pub BTreeMap<String, String>);

impl fmt::Debug for Plain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl SecretBox {
    /// The key from `FERRY_SECRET_KEY`, else from the file `FERRY_SECRET_KEY_FILE` names.
    pub fn from_env() -> Result<Self, SecretError> {
        if let Ok(text) = std::env::var(KEY_ENV) {
            return Self::from_base64(&text, KEY_ENV);
        }
        if let Ok(path) = std::env::var(KEY_FILE_ENV) {
            return Self::from_file(Path::new(&path));
        }
        Err(SecretError::Missing)
    }

    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|e| SecretError::Malformed {
            source_name: path.display().to_string(),
            reason: format!("cannot read it: {e}"),
        })?;
        Self::from_base64(&text, &path.display().to_string())
    }

    /// A key written as base64 (standard alphabet, padding optional; surrounding white space,
    /// such as a file's final newline, is ignored).
    pub fn from_base64(text: &str, source_name: &str) -> Result<Self, SecretError> {
        let malformed = |reason: String| SecretError::Malformed {
            source_name: source_name.to_string(),
            reason,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(malformed("it is empty".into()));
        }
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed.trim_end_matches('='))
            .map_err(|e| malformed(format!("not base64 ({e})")))?;
        Self::from_bytes(&bytes)
            .map_err(|_| malformed(format!("it decodes to {} bytes, not 32", bytes.len())))
    }

    pub fn from_bytes(key: &[u8]) -> Result<Self, SecretError> {
        let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| SecretError::Malformed {
            source_name: "the key".into(),
            reason: format!("{} bytes, not 32", key.len()),
        })?;
        // The id names the key without revealing it: a hash prefix, long enough to tell keys
        // apart, far too short to help guess one.
        let digest = Sha256::digest([b"ferry secret key id\0".as_slice(), key].concat());
        let key_id = format!("k-{}", hex(&digest[..6]));
        Ok(Self { cipher, key_id })
    }

    /// A fresh random key, base64-encoded, for `ferry secret-key`.
    pub fn generate_base64() -> String {
        let key = aes_gcm::Key::<Aes256Gcm>::generate();
        B64.encode(key.as_slice())
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `plain` as the credentials of `object` (e.g. `source:acme/pg`).
    pub fn seal(&self, object: &str, plain: &Plain) -> Result<Sealed, SecretError> {
        if plain.0.is_empty() {
            return Ok(Sealed::default());
        }
        let json = serde_json::to_vec(&plain.0).map_err(|e| SecretError::Seal(e.to_string()))?;
        let nonce = Nonce::generate();
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &json,
                    aad: object.as_bytes(),
                },
            )
            .map_err(|e| SecretError::Seal(e.to_string()))?;
        Ok(Sealed {
            key_id: self.key_id.clone(),
            fields: plain.0.keys().cloned().collect(),
            nonce: B64.encode(nonce.as_slice()),
            ciphertext: B64.encode(ciphertext),
        })
    }

    /// Opens the credentials of `object`.
    pub fn open(&self, object: &str, sealed: &Sealed) -> Result<Plain, SecretError> {
        if sealed.fields.is_empty() {
            return Ok(Plain::default());
        }
        if sealed.key_id != self.key_id {
            return Err(SecretError::WrongKey {
                object: object.to_string(),
                sealed_with: sealed.key_id.clone(),
                ours: self.key_id.clone(),
            });
        }
        let corrupt = |reason: &str| SecretError::Corrupt {
            object: object.to_string(),
            reason: reason.to_string(),
        };
        let nonce_bytes = B64
            .decode(&sealed.nonce)
            .map_err(|_| corrupt("the nonce is not base64"))?;
        let nonce = Nonce::try_from(nonce_bytes.as_slice())
            .map_err(|_| corrupt("the nonce has the wrong length"))?;
        let ciphertext = B64
            .decode(&sealed.ciphertext)
            .map_err(|_| corrupt("the ciphertext is not base64"))?;
        let json = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &ciphertext,
                    aad: object.as_bytes(),
                },
            )
            .map_err(|_| {
                corrupt("authentication failed (altered, or sealed for another object)")
            })?;
        let map: BTreeMap<String, String> =
            serde_json::from_slice(&json).map_err(|_| corrupt("not a credential map"))?;
        Ok(Plain(map))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Moves the string values at `fields` (JSON pointers) out of `spec` into a [`Plain`]. Empty
/// strings count as absent.
pub fn extract(spec: &mut serde_json::Value, fields: &[&str]) -> Plain {
    let mut plain = Plain::default();
    for field in fields {
        if let Some(slot) = spec.pointer_mut(field) {
            if let Some(text) = slot.as_str().filter(|t| !t.is_empty()) {
                plain.0.insert((*field).to_string(), text.to_string());
            }
            *slot = serde_json::Value::Null;
        }
        remove_nulls_at(spec, field);
    }
    plain
}

/// Puts the values of `plain` back into `spec` at their pointers (creating nothing: the parent
/// objects must exist, as they do in a spec the credentials were extracted from).
pub fn insert(spec: &mut serde_json::Value, plain: &Plain) {
    for (field, value) in &plain.0 {
        set_at(spec, field, serde_json::Value::String(value.clone()));
    }
}

/// Sets the value at `pointer`; the parent object must exist.
pub fn set_at(spec: &mut serde_json::Value, pointer: &str, value: serde_json::Value) {
    if let Some((parent, name)) = pointer.rsplit_once('/') {
        if let Some(serde_json::Value::Object(map)) = spec.pointer_mut(parent) {
            map.insert(name.to_string(), value);
        }
    }
}

fn remove_nulls_at(spec: &mut serde_json::Value, pointer: &str) {
    if let Some((parent, name)) = pointer.rsplit_once('/') {
        if let Some(serde_json::Value::Object(map)) = spec.pointer_mut(parent) {
            if map.get(name).is_some_and(serde_json::Value::is_null) {
                map.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretBox {
        SecretBox::from_base64(&SecretBox::generate_base64(), "test").unwrap()
    }

    #[test]
    fn sealed_credentials_open_only_with_their_key_and_object() {
        let sb = key();
        let plain = Plain(BTreeMap::from([(
            "/kind/postgres/password".to_string(),
            "hunter2-very-secret".to_string(),
        )]));
        let sealed = sb.seal("source:acme/pg", &plain).unwrap();
        let stored = serde_json::to_string(&sealed).unwrap();
        assert!(!stored.contains("hunter2"), "{stored}");
        assert!(
            stored.contains("/kind/postgres/password"),
            "fields are listed"
        );
        assert_eq!(sb.open("source:acme/pg", &sealed).unwrap(), plain);

        // Moved onto another object: refused.
        let err = sb.open("source:evil/pg", &sealed).unwrap_err();
        assert!(matches!(err, SecretError::Corrupt { .. }), "{err}");
        // Tampered: refused.
        let mut bent = sealed.clone();
        let mut bytes = B64.decode(&bent.ciphertext).unwrap();
        bytes[0] ^= 1;
        bent.ciphertext = B64.encode(bytes);
        assert!(sb.open("source:acme/pg", &bent).is_err());
        // Another key: named as such.
        let other = key();
        let err = other.open("source:acme/pg", &sealed).unwrap_err();
        assert!(err.to_string().contains(sb.key_id()), "{err}");
        // Nothing leaks through Debug.
        let shown = format!("{sb:?} {sealed:?} {plain:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn keys_are_checked_with_clear_errors() {
        let err = SecretBox::from_base64("not base64!!", "FERRY_SECRET_KEY").unwrap_err();
        assert!(err.to_string().contains("FERRY_SECRET_KEY"), "{err}");
        assert!(err.to_string().contains("not base64"), "{err}");
        let short = B64.encode([7u8; 16]);
        let err = SecretBox::from_base64(&short, "f").unwrap_err();
        assert!(err.to_string().contains("16 bytes, not 32"), "{err}");
        let err = SecretBox::from_base64("  \n", "f").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        // A key file's trailing newline is fine, and the same key has the same id.
        let text = SecretBox::generate_base64();
        let a = SecretBox::from_base64(&format!("{text}\n"), "f").unwrap();
        let b = SecretBox::from_base64(text.trim_end_matches('='), "f").unwrap();
        assert_eq!(a.key_id(), b.key_id());
        assert!(SecretError::Missing
            .to_string()
            .contains("ferry secret-key"));
    }

    #[test]
    fn credentials_move_out_of_a_spec_and_back() {
        let mut spec = serde_json::json!({
            "id": "pg", "kind": {"postgres": {"host": "db", "password": "pw", "ssh_tunnel": {"private_key": ""}}}
        });
        let original = spec.clone();
        let plain = extract(
            &mut spec,
            &[
                "/kind/postgres/password",
                "/kind/postgres/ssh_tunnel/private_key",
                "/absent/x",
            ],
        );
        assert_eq!(plain.0.len(), 1, "empty values are absent");
        assert!(!spec.to_string().contains("pw"), "{spec}");
        insert(&mut spec, &plain);
        let mut expected = original;
        expected["kind"]["postgres"]["ssh_tunnel"]
            .as_object_mut()
            .unwrap()
            .remove("private_key");
        assert_eq!(spec, expected);
    }
}
