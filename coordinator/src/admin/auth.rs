//! Who is calling. Every admin RPC carries `authorization: Bearer <token>`:
//!
//! - the **operator token** (`FERRY_OPERATOR_TOKEN`, or a file such as a mounted Kubernetes
//!   Secret) reaches every tenant;
//! - a **tenant token** (`fy.<tenant>.<id>.<secret>`, made by `CreateToken`) reaches its own
//!   tenant only. The catalog keeps its SHA-256, never the token; the secret part is 32 random
//!   bytes, so a plain hash is enough (there is nothing to brute-force), and the comparison
//!   runs in constant time.
//!
//! A missing, malformed, unknown or revoked token is UNAUTHENTICATED; a tenant token naming
//! another tenant is PERMISSION_DENIED before anything is looked up, so the answer is the same
//! whether or not the other tenant's object exists.

use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Utc;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::catalog::{Catalog, TokenRecord};
use crate::trigger_http::{Caller, TokenVerifier};

/// Tenant tokens start with this.
pub const TOKEN_PREFIX: &str = "fy";
/// The shortest operator token accepted.
pub const MIN_OPERATOR_TOKEN: usize = 16;

/// The caller of an RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator,
    Tenant(String),
}

impl Principal {
    /// The tenant a request is about: `requested`, which a tenant token may leave empty (its
    /// own) and may not set to another tenant.
    pub fn tenant_scope(&self, requested: &str) -> Result<String, Status> {
        match self {
            Principal::Operator if requested.is_empty() => Err(super::errors::invalid_field(
                "tenant",
                "name the tenant (the operator token is not tied to one)",
            )),
            Principal::Operator => Ok(requested.to_string()),
            Principal::Tenant(own) if requested.is_empty() || requested == own => Ok(own.clone()),
            Principal::Tenant(own) => Err(Status::permission_denied(format!(
                "this token belongs to tenant '{own}' and cannot reach tenant '{requested}'"
            ))),
        }
    }

    pub fn require_operator(&self, what: &str) -> Result<(), Status> {
        match self {
            Principal::Operator => Ok(()),
            Principal::Tenant(_) => Err(Status::permission_denied(format!(
                "{what} needs the operator token"
            ))),
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self, Principal::Operator)
    }
}

/// A freshly made tenant token: the record to store and the bearer token to show once.
pub struct MintedToken {
    pub record: TokenRecord,
    pub bearer: String,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], Status> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Status::internal(format!("no randomness for a token: {e}")))?;
    Ok(bytes)
}

/// The public part of a tenant token (`fy.<tenant>.<id>`), safe to show.
pub fn token_prefix(tenant: &str, id: &str) -> String {
    format!("{TOKEN_PREFIX}.{tenant}.{id}")
}

/// Makes a tenant token.
pub fn mint_token(tenant: &str, name: &str) -> Result<MintedToken, Status> {
    let id: String = random_bytes::<6>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let bearer = format!("{}.{secret}", token_prefix(tenant, &id));
    Ok(MintedToken {
        record: TokenRecord {
            tenant: tenant.to_string(),
            id,
            name: name.to_string(),
            sha256: sha256_hex(&bearer),
            created_at: Utc::now(),
        },
        bearer,
    })
}

/// `fy.<tenant>.<id>.<secret>` → (tenant, id).
fn parse_tenant_token(token: &str) -> Option<(&str, &str)> {
    let mut parts = token.split('.');
    let (prefix, tenant, id, secret) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (prefix == TOKEN_PREFIX
        && parts.next().is_none()
        && !tenant.is_empty()
        && !id.is_empty()
        && !secret.is_empty())
    .then_some((tenant, id))
}

/// Checks bearer tokens against the operator token and the catalog's tenant tokens.
#[derive(Clone)]
pub struct Authenticator {
    operator_sha256: Option<[u8; 32]>,
    catalog: Arc<dyn Catalog>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("operator_token", &self.operator_sha256.map(|_| "***"))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorTokenError {
    #[error("the operator token is {0} characters long; use at least {MIN_OPERATOR_TOKEN} random characters")]
    TooShort(usize),
}

impl Authenticator {
    /// `operator_token`: None serves tenant tokens only.
    pub fn new(
        operator_token: Option<&str>,
        catalog: Arc<dyn Catalog>,
    ) -> Result<Self, OperatorTokenError> {
        let operator_sha256 = match operator_token.map(str::trim) {
            Some(t) if t.chars().count() < MIN_OPERATOR_TOKEN => {
                return Err(OperatorTokenError::TooShort(t.chars().count()))
            }
            Some(t) => Some(Sha256::digest(t.as_bytes()).into()),
            None => None,
        };
        Ok(Self {
            operator_sha256,
            catalog,
        })
    }

    /// The bearer token of a request's metadata.
    pub fn bearer(metadata: &MetadataMap) -> Result<&str, Status> {
        let value = metadata.get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing 'authorization: Bearer <token>' metadata")
        })?;
        let text = value.to_str().map_err(|_| {
            Status::unauthenticated("the authorization metadata is not readable text")
        })?;
        let (scheme, token) = text.trim().split_once(' ').ok_or_else(|| {
            Status::unauthenticated("the authorization metadata must be 'Bearer <token>'")
        })?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(Status::unauthenticated(
                "the authorization metadata must be 'Bearer <token>'",
            ));
        }
        Ok(token.trim())
    }

    /// Who the token belongs to; UNAUTHENTICATED when nobody.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, Status> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(operator) = &self.operator_sha256 {
            if bool::from(operator.ct_eq(&digest)) {
                return Ok(Principal::Operator);
            }
        }
        let unknown = || Status::unauthenticated("the token is not valid (unknown or revoked)");
        let Some((tenant, id)) = parse_tenant_token(token) else {
            return Err(unknown());
        };
        let record = self
            .catalog
            .get_token(tenant, id)
            .await
            .map_err(|e| Status::unavailable(format!("checking the token: {e}")))?
            .ok_or_else(unknown)?;
        let stored: Vec<u8> = (0..record.sha256.len() / 2)
            .filter_map(|i| u8::from_str_radix(record.sha256.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        if stored.len() == 32
            && bool::from(stored.as_slice().ct_eq(&digest))
            && record.tenant == tenant
        {
            Ok(Principal::Tenant(record.tenant))
        } else {
            Err(unknown())
        }
    }

    /// Authenticates a request by its metadata.
    pub async fn authenticate_request<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<Principal, Status> {
        let token = Self::bearer(request.metadata())?;
        self.authenticate(token).await
    }
}

#[async_trait]
impl TokenVerifier for Authenticator {
    async fn verify(&self, bearer_token: &str) -> Result<Option<Caller>, String> {
        match self.authenticate(bearer_token).await {
            Ok(Principal::Operator) => Ok(Some(Caller::Operator)),
            Ok(Principal::Tenant(t)) => Ok(Some(Caller::Tenant(t))),
            Err(s) if s.code() == tonic::Code::Unauthenticated => Ok(None),
            Err(s) => Err(s.message().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::TenantRecord;
    use crate::embedded::{EmbeddedSettings, EmbeddedStore};
    use tonic::Code;

    #[tokio::test]
    async fn operator_and_tenant_tokens_and_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(EmbeddedStore::open_in(dir.path(), EmbeddedSettings::default()).unwrap());
        for id in ["acme", "other"] {
            store
                .create_tenant(&TenantRecord {
                    id: id.into(),
                    spec: serde_json::json!({}),
                    credentials: Default::default(),
                    receiver_extensions: false,
                    created_at: Utc::now(),
                    updated_at: Utc::now(),
                })
                .await
                .unwrap();
        }
        assert!(matches!(
            Authenticator::new(Some("short"), store.clone()),
            Err(OperatorTokenError::TooShort(5))
        ));
        let auth = Authenticator::new(Some("operator-token-0123456789"), store.clone()).unwrap();
        assert_eq!(
            auth.authenticate("operator-token-0123456789")
                .await
                .unwrap(),
            Principal::Operator
        );

        let minted = mint_token("acme", "ci").unwrap();
        assert!(minted.bearer.starts_with("fy.acme."));
        assert!(!format!("{minted:?}").contains(&minted.bearer));
        assert_ne!(
            minted.record.sha256, minted.bearer,
            "only the hash is stored"
        );
        store.create_token(&minted.record).await.unwrap();
        assert_eq!(
            auth.authenticate(&minted.bearer).await.unwrap(),
            Principal::Tenant("acme".into())
        );

        // A token whose tenant part was changed to another tenant is not that tenant's.
        let forged = minted.bearer.replacen("fy.acme.", "fy.other.", 1);
        for bad in [
            forged.as_str(),
            "operator-token-012345678",
            "fy.acme",
            "",
            &format!("{}x", minted.bearer),
        ] {
            let err = auth.authenticate(bad).await.unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{bad}");
        }

        store.delete_token("acme", &minted.record.id).await.unwrap();
        let err = auth.authenticate(&minted.bearer).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "revoked");
    }

    #[test]
    fn scopes_and_metadata() {
        let tenant = Principal::Tenant("acme".into());
        assert_eq!(tenant.tenant_scope("").unwrap(), "acme");
        assert_eq!(
            tenant.tenant_scope("other").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            Principal::Operator.tenant_scope("").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            tenant.require_operator("CreateTenant").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );

        let mut md = MetadataMap::new();
        assert_eq!(
            Authenticator::bearer(&md).unwrap_err().code(),
            Code::Unauthenticated
        );
        md.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(
            Authenticator::bearer(&md).unwrap_err().code(),
            Code::Unauthenticated
        );
        md.insert("authorization", "Bearer  tok ".parse().unwrap());
        assert_eq!(Authenticator::bearer(&md).unwrap(), "tok");
    }
}
