//! Where records go and how Ferry proves who it is: the ingestion host (a Mixpanel region or a
//! custom base URL such as the bundled receiver), the project, the credentials, and whether the
//! destination speaks Ferry's `/ferry/v1/` extensions.

use ferry_core::spec::{Auth, Region, TenantSpec};
use reqwest::Url;

use super::error::MixpanelError;

/// The ingestion API's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestionHost {
    /// One of Mixpanel's data-residency regions; always https.
    Region(Region),
    /// Any base URL (the bundled receiver, a proxy). `http://` is allowed here so tests and dry
    /// runs can reach a receiver on loopback; real Mixpanel hosts are only reached over https.
    Custom(String),
}

impl IngestionHost {
    /// The base URL of `/import`, `/engage`, `/groups` and `/lookup-tables`.
    pub fn base_url(&self) -> Result<Url, MixpanelError> {
        let text = match self {
            IngestionHost::Region(Region::Us) => "https://api.mixpanel.com",
            IngestionHost::Region(Region::Eu) => "https://api-eu.mixpanel.com",
            IngestionHost::Region(Region::In) => "https://api-in.mixpanel.com",
            IngestionHost::Custom(url) => url.as_str(),
        };
        let url = Url::parse(text.trim_end_matches('/')).map_err(|e| {
            MixpanelError::InvalidConfig(format!("destination base URL '{text}' is not a URL: {e}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(MixpanelError::InvalidConfig(format!(
                "destination base URL '{text}' must be http(s)://host[:port][/path]"
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(MixpanelError::InvalidConfig(format!(
                "destination base URL '{text}' must not carry a query or fragment"
            )));
        }
        if url.scheme() == "http" && is_mixpanel_host(&url) {
            return Err(MixpanelError::InvalidConfig(format!(
                "Mixpanel is only reachable over https, not '{text}'"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // Credentials in a URL end up in logs and error messages; they belong in `auth`.
            return Err(MixpanelError::InvalidConfig(
                "destination base URL must not embed credentials; use the auth settings".into(),
            ));
        }
        Ok(url)
    }

    fn is_mixpanel(&self) -> bool {
        match self {
            IngestionHost::Region(_) => true,
            IngestionHost::Custom(_) => self.base_url().is_ok_and(|u| is_mixpanel_host(&u)),
        }
    }
}

fn is_mixpanel_host(url: &Url) -> bool {
    url.host_str().is_some_and(|h| {
        let h = h.trim_end_matches('.').to_ascii_lowercase();
        h == "mixpanel.com" || h.ends_with(".mixpanel.com")
    })
}

/// One project's ingestion destination.
///
/// `Debug` never shows secrets: the credentials hold [`ferry_core::spec::Secret`]s, which print
/// as `***`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationConfig {
    pub host: IngestionHost,
    /// The project's id, sent as `?project_id=` (required with a service account, checked by
    /// the server when sent with a project token).
    pub project_id: String,
    pub credentials: Auth,
    /// Capability flag: the destination is Ferry's bundled receiver and serves the
    /// `/ferry/v1/` extensions (event deletes for Mirror). Off for Mixpanel, which has no
    /// public per-event delete; [`DestinationConfig::validate`] refuses it for Mixpanel hosts.
    pub receiver_extensions: bool,
}

impl DestinationConfig {
    /// A destination without Ferry's extensions (Mixpanel, or anything speaking only its API).
    pub fn new(host: IngestionHost, project_id: impl Into<String>, credentials: Auth) -> Self {
        Self {
            host,
            project_id: project_id.into(),
            credentials,
            receiver_extensions: false,
        }
    }

    /// The bundled receiver at `base_url`, with its extensions enabled.
    pub fn bundled_receiver(
        base_url: impl Into<String>,
        project_id: impl Into<String>,
        credentials: Auth,
    ) -> Self {
        Self {
            receiver_extensions: true,
            ..Self::new(
                IngestionHost::Custom(base_url.into()),
                project_id,
                credentials,
            )
        }
    }

    /// A tenant's destination. Extensions stay off: a tenant spec cannot yet say that its base
    /// URL is a receiver, and assuming it could send deletes to a proxy in front of Mixpanel.
    pub fn from_tenant(tenant: &TenantSpec) -> Result<Self, MixpanelError> {
        let host = match (&tenant.destination.base_url, tenant.destination.region) {
            (Some(url), _) => IngestionHost::Custom(url.clone()),
            (None, region) => IngestionHost::Region(region.unwrap_or(Region::Us)),
        };
        let config = Self::new(host, tenant.project_id.to_string(), tenant.auth.clone());
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that can be checked without a request.
    pub fn validate(&self) -> Result<(), MixpanelError> {
        self.host.base_url()?;
        if self.project_id.trim().is_empty() {
            return Err(MixpanelError::InvalidConfig(
                "destination project_id must not be empty".into(),
            ));
        }
        match &self.credentials {
            Auth::ServiceAccount { user, secret } => {
                if user.trim().is_empty() || secret.expose().is_empty() {
                    return Err(MixpanelError::InvalidConfig(
                        "service account user and secret must not be empty".into(),
                    ));
                }
            }
            Auth::ProjectToken(token) => {
                if token.expose().trim().is_empty() {
                    return Err(MixpanelError::InvalidConfig(
                        "project token must not be empty".into(),
                    ));
                }
            }
        }
        if self.receiver_extensions && self.host.is_mixpanel() {
            return Err(MixpanelError::InvalidConfig(
                "receiver_extensions is only for Ferry's bundled receiver; Mixpanel hosts do not serve /ferry/v1/".into(),
            ));
        }
        Ok(())
    }

    /// `base/path` with `project_id` and the given extra query parameters.
    pub(crate) fn url(
        &self,
        path_segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Url, MixpanelError> {
        let mut url = self.host.base_url()?;
        {
            let mut segments = url.path_segments_mut().map_err(|()| {
                MixpanelError::InvalidConfig("destination base URL cannot take a path".into())
            })?;
            segments.pop_if_empty();
            // `push` percent-encodes, so a lookup table id cannot escape its path segment.
            for segment in path_segments {
                segments.push(segment);
            }
        }
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("project_id", &self.project_id);
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        Ok(url)
    }

    /// The HTTP Basic user and password.
    pub(crate) fn basic_auth(&self) -> (&str, &str) {
        match &self.credentials {
            Auth::ServiceAccount { user, secret } => (user.as_str(), secret.expose()),
            // Mixpanel's documented form: the token as user name, an empty password.
            Auth::ProjectToken(token) => (token.expose(), ""),
        }
    }

    pub(crate) fn is_service_account(&self) -> bool {
        matches!(self.credentials, Auth::ServiceAccount { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::spec::Secret;

    fn sa() -> Auth {
        Auth::ServiceAccount {
            user: "svc.user".into(),
            secret: Secret::new("hunter2-secret"),
        }
    }

    #[test]
    fn regions_map_to_their_https_ingestion_hosts() {
        for (region, expected) in [
            (
                Region::Us,
                "https://api.mixpanel.com/import?project_id=42&strict=1",
            ),
            (
                Region::Eu,
                "https://api-eu.mixpanel.com/import?project_id=42&strict=1",
            ),
            (
                Region::In,
                "https://api-in.mixpanel.com/import?project_id=42&strict=1",
            ),
        ] {
            let d = DestinationConfig::new(IngestionHost::Region(region), "42", sa());
            d.validate().unwrap();
            assert_eq!(
                d.url(&["import"], &[("strict", "1")]).unwrap().as_str(),
                expected
            );
        }
    }

    #[test]
    fn custom_base_urls_keep_their_path_and_may_be_http() {
        let d = DestinationConfig::bundled_receiver("http://127.0.0.1:8787/prefix/", "7", sa());
        d.validate().unwrap();
        assert_eq!(
            d.url(&["lookup-tables", "a b/c"], &[]).unwrap().as_str(),
            "http://127.0.0.1:8787/prefix/lookup-tables/a%20b%2Fc?project_id=7"
        );
        let d = DestinationConfig::new(
            IngestionHost::Custom("https://proxy.example/".into()),
            "7",
            sa(),
        );
        assert_eq!(
            d.url(&["engage"], &[]).unwrap().as_str(),
            "https://proxy.example/engage?project_id=7"
        );
    }

    #[test]
    fn bad_hosts_and_misplaced_capabilities_are_refused() {
        for bad in [
            "ftp://x",
            "not a url",
            "http://api.mixpanel.com",
            "https://h/?q=1",
            "https://u:p@h",
        ] {
            let d = DestinationConfig::new(IngestionHost::Custom(bad.into()), "1", sa());
            assert!(
                matches!(d.validate(), Err(MixpanelError::InvalidConfig(_))),
                "{bad}"
            );
        }
        let mut d = DestinationConfig::new(IngestionHost::Region(Region::Eu), "1", sa());
        d.receiver_extensions = true;
        assert!(d
            .validate()
            .unwrap_err()
            .to_string()
            .contains("bundled receiver"));
        let d = DestinationConfig::bundled_receiver("https://api-eu.mixpanel.com", "1", sa());
        assert!(d.validate().is_err());
        let d = DestinationConfig::new(IngestionHost::Region(Region::Us), " ", sa());
        assert!(d.validate().is_err());
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let d = DestinationConfig::new(IngestionHost::Region(Region::Us), "1", sa());
        let shown = format!("{d:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("svc.user"));
        let t = DestinationConfig::new(
            IngestionHost::Region(Region::Us),
            "1",
            Auth::ProjectToken(Secret::new("tok-very-secret")),
        );
        assert!(!format!("{t:?}").contains("tok-very-secret"));
        assert_eq!(t.basic_auth(), ("tok-very-secret", ""));
    }
}
