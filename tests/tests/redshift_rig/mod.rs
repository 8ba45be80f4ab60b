//! The Redshift test rig shared by `redshift_source.rs` and `redshift_mirror.rs`: a private
//! PostgreSQL, the Redshift Data API stand-in in front of it (one cluster, one serverless
//! workgroup, a few Secrets Manager secrets and access keys), and the Redshift connector pointed
//! at the stand-in through `endpoint_url` with the unchanged AWS SDK.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_connectors::warehouse::redshift::statement::PollPolicy;
use ferry_connectors::warehouse::redshift::{RedshiftSettings, RedshiftWarehouse};
use ferry_core::spec::{RedshiftOptions, Secret};
use ferry_redshift_standin::{AccessKey, Endpoint, Login, RunningStandin, StandinConfig, Timing};
use ferry_tests::postgres::{postgres_bin_dir, PgConfig, TestPostgres};
use ferry_tests::require_tool;

pub const CLUSTER: &str = "ferry-cluster";
pub const WORKGROUP: &str = "ferry-workgroup";
pub const REGION: &str = "us-east-1";
pub const SECRET: &str = "arn:aws:secretsmanager:us-east-1:000000000000:secret:ferry-reader-AbCdEf";
/// A secret whose password is out of date.
pub const STALE_SECRET: &str =
    "arn:aws:secretsmanager:us-east-1:000000000000:secret:ferry-stale-GhIjKl";
/// A secret for a login without privileges on the test tables.
pub const LIMITED_SECRET: &str =
    "arn:aws:secretsmanager:us-east-1:000000000000:secret:ferry-limited-MnOpQr";
pub const KEY_ID: &str = "AKIAFERRYTESTKEY0001";
/// A key whose identity may not call ExecuteStatement.
pub const DENIED_KEY_ID: &str = "AKIAFERRYDENIED00002";
pub const LIMITED_USER: &str = "ferry_limited";
const LIMITED_PASSWORD: &str = "limited-password";

pub struct Rig {
    pub pg: TestPostgres,
    pub standin: RunningStandin,
}

/// Polling tuned for tests: the stand-in holds statements for ~15 ms.
pub fn fast_settings() -> RedshiftSettings {
    RedshiftSettings {
        poll: PollPolicy {
            first: Duration::from_millis(2),
            max: Duration::from_millis(25),
            factor: 2.0,
        },
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        connect_timeout: Duration::from_secs(2),
        call_timeout: Duration::from_secs(20),
        chunk_rows: 100_000,
    }
}

impl Rig {
    /// `None` (after a loud skip message) when PostgreSQL is not installed.
    pub async fn start(page_rows: usize) -> Option<Rig> {
        Self::start_with(page_rows, Timing::default()).await
    }

    pub async fn start_with(page_rows: usize, timing: Timing) -> Option<Rig> {
        if !require_tool("postgres", postgres_bin_dir().is_some()) {
            return None;
        }
        let pg = TestPostgres::start(PgConfig::default()).expect("postgres starts");
        pg.admin_sql(&format!(
            "CREATE ROLE {LIMITED_USER} LOGIN PASSWORD '{LIMITED_PASSWORD}'"
        ))
        .expect("limited role");
        let login = Login {
            username: pg.user.clone(),
            password: pg.password.clone(),
        };
        let mut config = StandinConfig::new(pg.host.clone(), pg.port);
        config.page_rows = page_rows;
        config.timing = timing;
        config.clusters = vec![Endpoint {
            name: CLUSTER.into(),
            db_users: BTreeMap::from([(pg.user.clone(), pg.password.clone())]),
            iam_login: None,
        }];
        config.workgroups = vec![Endpoint {
            name: WORKGROUP.into(),
            db_users: BTreeMap::new(),
            iam_login: Some(login.clone()),
        }];
        config.secrets = BTreeMap::from([
            (SECRET.to_string(), login.clone()),
            (
                STALE_SECRET.to_string(),
                Login {
                    username: pg.user.clone(),
                    password: "an-old-password".into(),
                },
            ),
            (
                LIMITED_SECRET.to_string(),
                Login {
                    username: LIMITED_USER.into(),
                    password: LIMITED_PASSWORD.into(),
                },
            ),
        ]);
        config.access_keys = BTreeMap::from([
            (KEY_ID.to_string(), AccessKey::default()),
            (
                DENIED_KEY_ID.to_string(),
                AccessKey {
                    denied_operations: vec!["ExecuteStatement".into()],
                },
            ),
        ]);
        let standin = ferry_redshift_standin::start(config)
            .await
            .expect("stand-in starts");
        Some(Rig { pg, standin })
    }

    /// The cluster, logged in with [`SECRET`], signed with [`KEY_ID`].
    pub fn options(&self) -> RedshiftOptions {
        RedshiftOptions {
            cluster_identifier: Some(CLUSTER.into()),
            workgroup_name: None,
            database: self.pg.database.clone(),
            db_user: None,
            secret_arn: Some(SECRET.into()),
            region: REGION.into(),
            endpoint_url: Some(self.standin.url()),
            access_key_id: Some(KEY_ID.into()),
            secret_access_key: Some(Secret::new("ferry-test-secret-key")),
            session_token: None,
            profile: None,
        }
    }

    pub fn warehouse(&self) -> RedshiftWarehouse {
        self.warehouse_with(self.options())
    }

    pub fn warehouse_with(&self, options: RedshiftOptions) -> RedshiftWarehouse {
        RedshiftWarehouse::new(options).with_settings(fast_settings())
    }

    /// The source as an operator writes it (TOML), for the sync runner.
    pub fn source_toml(&self, id: &str) -> String {
        format!(
            "id='{id}'\ntenant='acme'\n[kind.redshift]\ncluster_identifier='{CLUSTER}'\ndatabase='{}'\nsecret_arn='{SECRET}'\nregion='{REGION}'\nendpoint_url='{}'\naccess_key_id='{KEY_ID}'\nsecret_access_key='ferry-test-secret-key'\n",
            self.pg.database,
            self.standin.url()
        )
    }
}
