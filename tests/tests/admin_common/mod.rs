//! What the admin API tests share: a private PostgreSQL, the receiver as the tenant's Mixpanel
//! project, and the node's API server started in-process on a loopback port with its own
//! embedded state store, spoken to over real gRPC.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ferry_actors::restart::RestartPolicy;
use ferry_connectors::mixpanel::{ClientSettings, RetryPolicy};
use ferry_coordinator::admin::server::{start, RunningServer, ServerConfig};
use ferry_coordinator::catalog::Catalog;
use ferry_coordinator::runner::RunnerSettings;
use ferry_coordinator::schedule::Clock;
use ferry_coordinator::secrets::SecretBox;
use ferry_coordinator::{EmbeddedSettings, EmbeddedStore, StateStore};
use ferry_proto::admin::v1 as pb;
use ferry_receiver::config::{ProjectConfig, ServiceAccountConfig, StoreMode};
use ferry_tests::postgres::{postgres_bin_dir, PgConfig, TestPostgres};
use ferry_tests::require_tool;
use pb::runs_client::RunsClient;
use pb::sources_client::SourcesClient;
use pb::syncs_client::SyncsClient;
use pb::tenants_client::TenantsClient;
use serde_json::Value as Json;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

pub const OPERATOR: &str = "operator-token-for-the-admin-tests";
pub const PROJECT: u64 = 77;
pub const PROJECT_TOKEN: &str = "project-token-77-for-admin-tests";
pub const SA_USER: &str = "sa-admin-tests";
pub const SA_SECRET: &str = "service-account-secret-77-admin";

pub struct World {
    pub pg: TestPostgres,
    pub rx: ferry_receiver::RunningReceiver,
    pub server: Option<RunningServer>,
    pub store: Arc<EmbeddedStore>,
    pub channel: Channel,
    pub dir: tempfile::TempDir,
}

/// Everything started, or None (with a loud message) where PostgreSQL is not installed.
pub async fn world(pg: PgConfig) -> Option<World> {
    world_with_clock(pg, None).await
}

/// [`world`] with the scheduler's clock given (None: the system's).
pub async fn world_with_clock(pg: PgConfig, clock: Option<Arc<dyn Clock>>) -> Option<World> {
    if !require_tool("postgres", postgres_bin_dir().is_some()) {
        return None;
    }
    let pg = TestPostgres::start(pg).expect("postgres starts");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ferry_receiver::ReceiverConfig::from_toml("listen = \"127.0.0.1:0\"").unwrap();
    cfg.store = StoreMode::Disk;
    cfg.data_dir = Some(dir.path().join("receiver"));
    cfg.projects = vec![ProjectConfig {
        id: PROJECT.to_string(),
        token: PROJECT_TOKEN.into(),
        secret: None,
        group_keys: Some(vec!["company_id".into()]),
        lookup_tables: vec![],
        rate_limit: Default::default(),
    }];
    cfg.service_accounts = vec![ServiceAccountConfig {
        user: SA_USER.into(),
        secret: SA_SECRET.into(),
        projects: None,
    }];
    let rx = ferry_receiver::start(cfg).await.unwrap();

    let store = Arc::new(
        EmbeddedStore::open_in(&dir.path().join("node"), EmbeddedSettings::default()).unwrap(),
    );
    let key = SecretBox::from_base64(&SecretBox::generate_base64(), "test").unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), OPERATOR.into(), key);
    config.runner = RunnerSettings {
        node_id: "test-node".into(),
        page_size: 10,
        restart: RestartPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            ..Default::default()
        },
        client: ClientSettings {
            request_timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                initial_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(50),
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    };
    config.admin.public_base_url = Some("https://ferry.example.com".into());
    if let Some(clock) = clock {
        config.clock = clock;
    }
    let state: Arc<dyn StateStore> = store.clone();
    let catalog: Arc<dyn Catalog> = store.clone();
    let server = start(config, state, catalog).await.expect("the API starts");
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .expect("the API answers");
    Some(World {
        pg,
        rx,
        server: Some(server),
        store,
        channel,
        dir,
    })
}

/// `msg` with `authorization: Bearer <token>`.
pub fn req<T>(token: &str, msg: T) -> Request<T> {
    let mut request = Request::new(msg);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub fn code<T: std::fmt::Debug>(result: Result<T, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// The error of a call that must fail, with its code checked.
#[track_caller]
pub fn refused<T: std::fmt::Debug>(result: Result<T, Status>, expected: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {expected:?}, got a success: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), expected, "{}", status.message());
            status
        }
    }
}

impl World {
    pub fn tenants(&self) -> TenantsClient<Channel> {
        TenantsClient::new(self.channel.clone())
    }

    pub fn sources(&self) -> SourcesClient<Channel> {
        SourcesClient::new(self.channel.clone())
    }

    pub fn syncs(&self) -> SyncsClient<Channel> {
        SyncsClient::new(self.channel.clone())
    }

    pub fn runs(&self) -> RunsClient<Channel> {
        RunsClient::new(self.channel.clone())
    }

    pub fn tenant(&self, id: &str) -> pb::Tenant {
        pb::Tenant {
            id: id.into(),
            name: format!("Tenant {id}"),
            destination: Some(pb::Destination {
                target: Some(pb::destination::Target::BaseUrl(self.rx.base_url())),
                receiver_extensions: true,
            }),
            project_id: PROJECT,
            credentials: Some(pb::Credentials {
                kind: Some(pb::credentials::Kind::ServiceAccount(pb::ServiceAccount {
                    user: SA_USER.into(),
                    secret: SA_SECRET.into(),
                    secret_set: false,
                })),
            }),
            project_token: PROJECT_TOKEN.into(),
            ..Default::default()
        }
    }

    /// Creates a tenant (operator) and returns a new token of it.
    pub async fn tenant_with_token(&self, id: &str) -> String {
        self.tenants()
            .create_tenant(req(
                OPERATOR,
                pb::CreateTenantRequest {
                    tenant: Some(self.tenant(id)),
                },
            ))
            .await
            .expect("tenant created");
        self.tenants()
            .create_token(req(
                OPERATOR,
                pb::CreateTokenRequest {
                    tenant: id.into(),
                    name: "tests".into(),
                },
            ))
            .await
            .expect("token created")
            .into_inner()
            .secret
    }

    pub fn postgres(&self, id: &str) -> pb::Source {
        pb::Source {
            id: id.into(),
            kind: Some(pb::source::Kind::Postgres(pb::PostgresSource {
                host: self.pg.host.clone(),
                port: u32::from(self.pg.port),
                database: self.pg.database.clone(),
                user: self.pg.user.clone(),
                password: self.pg.password.clone(),
                ssl_mode: pb::SslMode::Disable as i32,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    pub async fn create_source(&self, token: &str, source: pb::Source) -> pb::Source {
        self.sources()
            .create_source(req(
                token,
                pb::CreateSourceRequest {
                    source: Some(source),
                },
            ))
            .await
            .expect("source created")
            .into_inner()
    }

    pub async fn create_sync(&self, token: &str, sync: pb::Sync) -> pb::SyncResponse {
        self.syncs()
            .create_sync(req(token, pb::CreateSyncRequest { sync: Some(sync) }))
            .await
            .expect("sync created")
            .into_inner()
    }

    pub async fn state(&self) -> Json {
        reqwest::get(format!(
            "{}/ferry/v1/projects/{PROJECT}/state",
            self.rx.base_url()
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
    }

    pub async fn event_count(&self) -> u64 {
        self.state().await["event_count"].as_u64().unwrap_or(0)
    }

    /// Replaces the receiver's faults (`{}`: none).
    pub async fn faults(&self, faults: Json) {
        let answer = reqwest::Client::new()
            .put(format!("{}/ferry/v1/faults", self.rx.base_url()))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{:?}", answer.text().await);
    }

    /// Follows a run with WatchRun to its end; returns every snapshot.
    pub async fn follow(
        &self,
        token: &str,
        tenant: &str,
        sync: &str,
        run_id: &str,
    ) -> Vec<pb::Run> {
        let mut stream = self
            .runs()
            .watch_run(req(
                token,
                pb::WatchRunRequest {
                    tenant: tenant.into(),
                    sync: sync.into(),
                    run_id: run_id.into(),
                },
            ))
            .await
            .expect("watch starts")
            .into_inner();
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while let Some(run) = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("the run ends within a minute")
            .expect("the stream stays healthy")
        {
            seen.push(run);
        }
        seen
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
    }
}

/// An events sync of `public.orders` (see [`ORDERS`]), Append on `inserted_at`.
pub fn orders_sync(id: &str, source: &str) -> pb::Sync {
    pb::Sync {
        id: id.into(),
        source: source.into(),
        target: Some(pb::ReadTarget {
            target: Some(pb::read_target::Target::Table("public.orders".into())),
        }),
        table_type: pb::TableType::Events as i32,
        mapping: Some(pb::Mapping {
            event_name: Some("Order Placed".into()),
            time_column: Some("created_at".into()),
            distinct_id_column: Some("user_id".into()),
            key_columns: vec!["id".into()],
            excludes: vec!["inserted_at".into()],
            ..Default::default()
        }),
        mode: pb::SyncMode::Append as i32,
        cursor_column: "inserted_at".into(),
        ..Default::default()
    }
}

pub const ORDERS: &str = "CREATE TABLE orders (id bigint PRIMARY KEY, user_id text, created_at timestamptz, amount integer, meta jsonb, inserted_at timestamptz NOT NULL);";

/// Rows `from..=to`; every 25th has no `created_at` (an invalid event).
pub fn insert_orders(pg: &TestPostgres, from: i64, to: i64) {
    pg.sql(&format!(
        "INSERT INTO orders SELECT i, 'user-' || (i % 7), CASE WHEN i % 25 = 0 THEN NULL ELSE timestamptz '2024-03-01 00:00:00+00' + i * interval '1 minute' END, i * 10, jsonb_build_object('n', i), timestamptz '2024-06-01 00:00:00+00' + i * interval '1 second' FROM generate_series({from}, {to}) AS i;"
    ))
    .unwrap();
}
