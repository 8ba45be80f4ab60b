//! What the stand-in serves: the PostgreSQL server behind it, the clusters and serverless
//! workgroups it pretends to be, the Secrets Manager secrets and access keys it knows, and how
//! slowly statements move through their states.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// A PostgreSQL login the stand-in connects with on a caller's behalf.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({}, ***)", self.username)
    }
}

/// A provisioned cluster or a serverless workgroup. Both run their SQL on the one PostgreSQL
/// server; what differs is who may connect and how.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The cluster identifier or the workgroup name.
    pub name: String,
    /// Database users reachable with `DbUser` (Redshift would issue temporary credentials for
    /// them through `GetClusterCredentials`): user name → PostgreSQL password.
    #[serde(default)]
    pub db_users: BTreeMap<String, String>,
    /// The login an IAM identity maps to when neither `SecretArn` nor `DbUser` is given.
    #[serde(default)]
    pub iam_login: Option<Login>,
}

/// An AWS access key the stand-in accepts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    /// Operations this key's identity is not allowed to call (`ExecuteStatement`, …, or `*`):
    /// they answer `AccessDeniedException` as IAM would.
    #[serde(default)]
    pub denied_operations: Vec<String>,
}

/// How long statements take to move through their states, so clients have to poll.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// Time a statement stays SUBMITTED, then PICKED, before it STARTs.
    #[serde(with = "millis")]
    pub queue_delay: Duration,
    /// The least time a statement stays STARTED (SQL that runs faster is held back).
    #[serde(with = "millis")]
    pub min_run: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            queue_delay: Duration::from_millis(5),
            min_run: Duration::from_millis(20),
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Where PostgreSQL listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTarget {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandinConfig {
    /// `127.0.0.1:0` picks a free port.
    #[serde(default = "default_listen")]
    pub listen: String,
    pub postgres: PostgresTarget,
    #[serde(default)]
    pub clusters: Vec<Endpoint>,
    #[serde(default)]
    pub workgroups: Vec<Endpoint>,
    /// Secrets Manager secrets by ARN (or name): the login each holds.
    #[serde(default)]
    pub secrets: BTreeMap<String, Login>,
    /// Access keys by id. Empty: any well-formed key is accepted.
    #[serde(default)]
    pub access_keys: BTreeMap<String, AccessKey>,
    #[serde(default)]
    pub timing: Timing,
    /// Rows per `GetStatementResult` page.
    #[serde(default = "default_page_rows")]
    pub page_rows: usize,
}

fn default_listen() -> String {
    "127.0.0.1:0".into()
}

fn default_page_rows() -> usize {
    1000
}

impl StandinConfig {
    /// A stand-in in front of `host:port` with no clusters, workgroups, secrets or keys yet.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            listen: default_listen(),
            postgres: PostgresTarget {
                host: host.into(),
                port,
            },
            clusters: Vec::new(),
            workgroups: Vec::new(),
            secrets: BTreeMap::new(),
            access_keys: BTreeMap::new(),
            timing: Timing::default(),
            page_rows: default_page_rows(),
        }
    }
}
