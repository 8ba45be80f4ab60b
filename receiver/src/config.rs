//! The receiver's configuration: from `ferry receiver` flags or a TOML file (unknown keys are
//! rejected so a typo never silently changes behaviour).

use std::net::SocketAddr;
use std::path::PathBuf;

use ferry_core::ingest::event::EventRules;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the durable store lives (`store = "disk"`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub store: StoreMode,
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
    #[serde(default)]
    pub service_accounts: Vec<ServiceAccountConfig>,
    #[serde(default)]
    pub rules: RulesConfig,
    #[serde(default)]
    pub faults: FaultConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8787))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreMode {
    /// Everything kept, journaled to `data_dir` before it is acknowledged.
    #[default]
    Disk,
    /// Full validation, but only counts and dedup keys are kept, in memory. For benchmarks.
    Memory,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub id: String,
    pub token: String,
    /// The legacy project secret (deprecated by Mixpanel, retiring 2027-03-03).
    #[serde(default)]
    pub secret: Option<String>,
    /// Group keys configured in the project; `None` accepts any key.
    #[serde(default)]
    pub group_keys: Option<Vec<String>>,
    /// Lookup tables that exist in the project (in Mixpanel they are created in the UI).
    #[serde(default)]
    pub lookup_tables: Vec<LookupTableDecl>,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LookupTableDecl {
    pub id: String,
    pub name: String,
}

/// Per-project ingestion limits on rolling windows. `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub events_per_second: Option<u64>,
    pub bytes_per_minute: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountConfig {
    pub user: String,
    pub secret: String,
    /// Projects this account may use; `None` means all of them.
    #[serde(default)]
    pub projects: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    pub require_insert_id: bool,
    /// Accept `$user_id` / `$device_id` in place of a missing `distinct_id`.
    pub identity_fallback: bool,
    pub future_tolerance_secs: i64,
    pub accept_project_secret: bool,
}

impl Default for RulesConfig {
    fn default() -> Self {
        let rules = EventRules::default();
        Self {
            require_insert_id: rules.require_insert_id,
            identity_fallback: rules.identity_fallback,
            future_tolerance_secs: rules.future_tolerance_ms / 1000,
            accept_project_secret: true,
        }
    }
}

impl RulesConfig {
    pub fn event_rules(&self) -> EventRules {
        EventRules {
            require_insert_id: self.require_insert_id,
            identity_fallback: self.identity_fallback,
            future_tolerance_ms: self.future_tolerance_secs.saturating_mul(1000),
            ..EventRules::default()
        }
    }
}

/// Faults injected on ingestion and export requests, drawn from a seeded generator so a failing
/// test can be replayed. Shares are probabilities in `[0, 1]`; their sum must not exceed 1.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    pub seed: u64,
    pub error_429: f64,
    pub error_502: f64,
    pub error_503: f64,
    /// Answer normally, but only after `slow_ms`.
    pub slow: f64,
    pub slow_ms: u64,
    /// Hold the request for `timeout_ms` without storing anything, then close the connection.
    pub timeout: f64,
    pub timeout_ms: u64,
    /// Close the connection without an answer, before storing anything.
    pub drop: f64,
    /// Store the request, then close the connection without an answer (the client cannot know
    /// that it landed: a retry must be harmless).
    pub drop_after_store: f64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            error_429: 0.0,
            error_502: 0.0,
            error_503: 0.0,
            slow: 0.0,
            slow_ms: 500,
            timeout: 0.0,
            timeout_ms: 30_000,
            drop: 0.0,
            drop_after_store: 0.0,
        }
    }
}

impl FaultConfig {
    pub fn shares(&self) -> [f64; 7] {
        [
            self.error_429,
            self.error_502,
            self.error_503,
            self.slow,
            self.timeout,
            self.drop,
            self.drop_after_store,
        ]
    }

    pub fn validate(&self) -> Result<(), String> {
        for share in self.shares() {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!(
                    "faults: every share must be between 0 and 1, got {share}"
                ));
            }
        }
        let total: f64 = self.shares().iter().sum();
        if total > 1.0 + 1e-9 {
            return Err(format!("faults: the shares add up to {total}, more than 1"));
        }
        Ok(())
    }
}

impl ReceiverConfig {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks the whole configuration, naming the bad part.
    pub fn validate(&self) -> Result<(), String> {
        if self.projects.is_empty() {
            return Err("at least one project is required (--project ID:TOKEN)".into());
        }
        let mut ids = std::collections::HashSet::new();
        let mut tokens = std::collections::HashSet::new();
        for (i, p) in self.projects.iter().enumerate() {
            if p.id.trim().is_empty() || p.token.trim().is_empty() {
                return Err(format!("projects[{i}]: id and token must not be empty"));
            }
            if !ids.insert(&p.id) {
                return Err(format!(
                    "projects[{i}]: project id '{}' is declared twice",
                    p.id
                ));
            }
            if !tokens.insert(&p.token) {
                return Err(format!(
                    "projects[{i}]: token of project '{}' is used by another project",
                    p.id
                ));
            }
        }
        for (i, sa) in self.service_accounts.iter().enumerate() {
            if sa.user.is_empty() || sa.secret.is_empty() {
                return Err(format!(
                    "service_accounts[{i}]: user and secret must not be empty"
                ));
            }
            for pid in sa.projects.iter().flatten() {
                if !ids.contains(pid) {
                    return Err(format!("service_accounts[{i}]: unknown project '{pid}'"));
                }
            }
        }
        if self.store == StoreMode::Disk && self.data_dir.is_none() {
            return Err(
                "store = \"disk\" needs a data directory (--data DIR), or use --store memory"
                    .into(),
            );
        }
        self.faults.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_rejects_unknown_keys_and_bad_faults() {
        let ok = ReceiverConfig::from_toml(
            "store = \"memory\"\n[[projects]]\nid = \"1\"\ntoken = \"t\"\n[faults]\nerror_429 = 0.5\n",
        )
        .unwrap();
        ok.validate().unwrap();
        assert!(ReceiverConfig::from_toml("stor = \"memory\"")
            .unwrap_err()
            .contains("unknown field"));
        let mut bad = ok.clone();
        bad.faults.error_503 = 0.6;
        assert!(bad.validate().unwrap_err().contains("add up"));
        let mut disk = ok;
        disk.store = StoreMode::Disk;
        assert!(disk.validate().unwrap_err().contains("--data"));
    }
}
