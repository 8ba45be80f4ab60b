//! Authentication as Mixpanel does it: HTTP Basic with a service account (`user:secret` and
//! `?project_id=`), a project token as the username with an empty password (`project_id`
//! optional, and checked when given), or the deprecated project secret the same way.

use axum::http::HeaderMap;
use base64::Engine;

use crate::config::ReceiverConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    ServiceAccount,
    Token,
    Secret,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header at all.
    Missing,
    Invalid,
    /// A service account was used without `project_id`.
    ProjectIdRequired,
}

/// Reads `Authorization: Basic ...`, accepting the credentials base64-encoded or plain.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let rest = rest.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| s.contains(':'));
    let text = decoded.unwrap_or_else(|| rest.to_owned());
    Some(match text.split_once(':') {
        Some((u, p)) => (u.to_owned(), p.to_owned()),
        None => (text, String::new()),
    })
}

/// Resolves the project a request may act on. `allow_token` is false for endpoints that need
/// a service account or secret (lookup tables, export).
pub fn authenticate(
    cfg: &ReceiverConfig,
    headers: &HeaderMap,
    project_id: Option<&str>,
    allow_token: bool,
) -> Result<(String, Credential), AuthError> {
    let (user, password) = basic_credentials(headers).ok_or(AuthError::Missing)?;
    if let Some(sa) = cfg.service_accounts.iter().find(|sa| sa.user == user) {
        if sa.secret != password {
            return Err(AuthError::Invalid);
        }
        let pid = project_id
            .filter(|p| !p.is_empty())
            .ok_or(AuthError::ProjectIdRequired)?;
        let known = cfg.projects.iter().any(|p| p.id == pid);
        let allowed = sa
            .projects
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p == pid));
        return if known && allowed {
            Ok((pid.to_owned(), Credential::ServiceAccount))
        } else {
            Err(AuthError::Invalid)
        };
    }
    if !password.is_empty() {
        return Err(AuthError::Invalid);
    }
    let by_token = cfg
        .projects
        .iter()
        .find(|p| p.token == user)
        .map(|p| (p, Credential::Token));
    let by_secret = || {
        cfg.projects
            .iter()
            .find(|p| cfg.rules.accept_project_secret && p.secret.as_deref() == Some(user.as_str()))
            .map(|p| (p, Credential::Secret))
    };
    let (project, credential) = by_token.or_else(by_secret).ok_or(AuthError::Invalid)?;
    if credential == Credential::Token && !allow_token {
        return Err(AuthError::Invalid);
    }
    if let Some(pid) = project_id.filter(|p| !p.is_empty()) {
        if pid != project.id {
            return Err(AuthError::Invalid);
        }
    }
    Ok((project.id.clone(), credential))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProjectConfig, ServiceAccountConfig};

    fn cfg() -> ReceiverConfig {
        let mut c = ReceiverConfig::from_toml("").unwrap();
        c.projects.push(ProjectConfig {
            id: "1".into(),
            token: "tok".into(),
            secret: Some("sec".into()),
            group_keys: None,
            lookup_tables: vec![],
            rate_limit: Default::default(),
        });
        c.service_accounts.push(ServiceAccountConfig {
            user: "sa".into(),
            secret: "pw".into(),
            projects: None,
        });
        c
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", value.parse().unwrap());
        h
    }

    fn b64(s: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    #[test]
    fn every_documented_form() {
        let c = cfg();
        assert_eq!(
            authenticate(&c, &headers(&b64("sa:pw")), Some("1"), true)
                .unwrap()
                .0,
            "1"
        );
        assert_eq!(
            authenticate(&c, &headers("Basic sa:pw"), Some("1"), true)
                .unwrap()
                .0,
            "1"
        );
        assert_eq!(
            authenticate(&c, &headers(&b64("sa:pw")), None, true),
            Err(AuthError::ProjectIdRequired)
        );
        assert_eq!(
            authenticate(&c, &headers(&b64("sa:bad")), Some("1"), true),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            authenticate(&c, &headers(&b64("sa:pw")), Some("2"), true),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            authenticate(&c, &headers(&b64("tok:")), None, true)
                .unwrap()
                .1,
            Credential::Token
        );
        assert_eq!(
            authenticate(&c, &headers(&b64("tok:")), Some("1"), true)
                .unwrap()
                .0,
            "1"
        );
        assert_eq!(
            authenticate(&c, &headers(&b64("tok:")), Some("9"), true),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            authenticate(&c, &headers(&b64("tok:")), None, false),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            authenticate(&c, &headers(&b64("sec:")), None, false)
                .unwrap()
                .1,
            Credential::Secret
        );
        assert_eq!(
            authenticate(&c, &HeaderMap::new(), None, true),
            Err(AuthError::Missing)
        );
    }
}
