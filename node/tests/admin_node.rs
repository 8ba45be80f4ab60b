//! `ferry node --listen` as a real process: it refuses to start without its secrets, serves
//! the admin API with gRPC reflection and health on one port, runs a full sync from a real
//! PostgreSQL into the receiver — and no credential appears in any RPC answer, in the node's
//! logs (at debug level) or in the bytes of its state file. Restarted with its key it reads
//! its sealed credentials again; with another key it says which key they need.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_proto::admin::v1 as pb;
use ferry_receiver::config::{ProjectConfig, ServiceAccountConfig, StoreMode};
use ferry_tests::postgres::{postgres_bin_dir, PgConfig, TestPostgres};
use ferry_tests::require_tool;
use tonic::transport::Channel;
use tonic::Request;

const OPERATOR: &str = "operator-token-node-test-5f8a2c91d7";
const SA_SECRET: &str = "sa-secret-node-test-7c1e9b44";
const PROJECT_TOKEN: &str = "project-token-node-test-a93f0d12";
const HOOK_SECRET: &str = "webhook-secret-node-test-2b7d61e0";
const PG_PASSWORD: &str = "pg-password-node-test-e41c8a3f";

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

fn new_key() -> String {
    let out = ferry().arg("secret-key").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A running node: its address, and its stderr in a file.
struct Node {
    child: Child,
    addr: String,
}

impl Node {
    fn start(data: &Path, log: &Path, key: &str, token_file: &Path) -> Node {
        let mut child = ferry()
            .args(["node", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--operator-token-file")
            .arg(token_file)
            .env("FERRY_SECRET_KEY", key)
            .env("FERRY_LOG", "debug")
            .env_remove("FERRY_OPERATOR_TOKEN")
            .env_remove("FERRY_CONFIG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("ferry node starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("ferry node: admin API listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; log: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .to_string();
        Node { child, addr }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// SIGTERM, as Kubernetes stops a pod; the node stops cleanly.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "the node stops cleanly on SIGTERM: {exit}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn req<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// Runs `ferry node --listen` with `env` and returns its failure message.
fn refused_start(dir: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = ferry();
    cmd.args(["node", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir)
        .env_remove("FERRY_SECRET_KEY")
        .env_remove("FERRY_SECRET_KEY_FILE")
        .env_remove("FERRY_OPERATOR_TOKEN")
        .env_remove("FERRY_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "the node must refuse to start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_node_without_its_secrets_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let key = new_key();
    let err = refused_start(dir.path(), &[("FERRY_OPERATOR_TOKEN", OPERATOR)]);
    assert!(
        err.contains("FERRY_SECRET_KEY") && err.contains("ferry secret-key"),
        "{err}"
    );
    let err = refused_start(
        dir.path(),
        &[
            ("FERRY_OPERATOR_TOKEN", OPERATOR),
            ("FERRY_SECRET_KEY", "too-short"),
        ],
    );
    assert!(
        err.contains("FERRY_SECRET_KEY") && err.contains("not usable"),
        "{err}"
    );
    let missing_file = dir.path().join("no-such-key");
    let err = refused_start(
        dir.path(),
        &[
            ("FERRY_OPERATOR_TOKEN", OPERATOR),
            ("FERRY_SECRET_KEY_FILE", missing_file.to_str().unwrap()),
        ],
    );
    assert!(
        err.contains("no-such-key") && err.contains("cannot read"),
        "{err}"
    );
    let err = refused_start(dir.path(), &[("FERRY_SECRET_KEY", &key)]);
    assert!(err.contains("FERRY_OPERATOR_TOKEN"), "{err}");
    let err = refused_start(
        dir.path(),
        &[
            ("FERRY_SECRET_KEY", &key),
            ("FERRY_OPERATOR_TOKEN", "short"),
        ],
    );
    assert!(err.contains("at least 16"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_leaves_no_credential_in_answers_logs_or_the_state_file() {
    if !require_tool("postgres", postgres_bin_dir().is_some()) {
        return;
    }
    let pg = TestPostgres::start(PgConfig::default()).expect("postgres starts");
    pg.admin_sql(&format!("ALTER ROLE {} PASSWORD '{PG_PASSWORD}';", pg.user))
        .unwrap();
    pg.sql("CREATE TABLE orders (id bigint PRIMARY KEY, user_id text, created_at timestamptz NOT NULL, inserted_at timestamptz NOT NULL);")
        .unwrap();
    pg.sql("INSERT INTO orders SELECT i, 'u' || i, now() - i * interval '1 minute', now() FROM generate_series(1, 30) i;")
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ferry_receiver::ReceiverConfig::from_toml("listen = \"127.0.0.1:0\"").unwrap();
    cfg.store = StoreMode::Disk;
    cfg.data_dir = Some(dir.path().join("receiver"));
    cfg.projects = vec![ProjectConfig {
        id: "5".into(),
        token: PROJECT_TOKEN.into(),
        secret: None,
        group_keys: None,
        lookup_tables: vec![],
        rate_limit: Default::default(),
    }];
    cfg.service_accounts = vec![ServiceAccountConfig {
        user: "sa".into(),
        secret: SA_SECRET.into(),
        projects: None,
    }];
    let rx = ferry_receiver::start(cfg).await.unwrap();

    let key = new_key();
    let token_file = dir.path().join("operator-token");
    std::fs::write(&token_file, format!("{OPERATOR}\n")).unwrap();
    let data = dir.path().join("node");
    let log = dir.path().join("node.log");
    let node = Node::start(&data, &log, &key, &token_file);
    let channel = node.channel().await;

    // Health and reflection answer on the same port, without a token.
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "ferry.admin.v1.Syncs".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let services = list_services(channel.clone()).await;
    for name in [
        "ferry.admin.v1.Tenants",
        "ferry.admin.v1.Sources",
        "ferry.admin.v1.Syncs",
        "ferry.admin.v1.Runs",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&name.to_string()), "{name}: {services:?}");
    }

    // A tenant, a token, a source, a sync, a run: every answer kept for the check below.
    let mut answers = String::new();
    let mut tenants = pb::tenants_client::TenantsClient::new(channel.clone());
    let tenant = tenants
        .create_tenant(req(
            OPERATOR,
            pb::CreateTenantRequest {
                tenant: Some(pb::Tenant {
                    id: "acme".into(),
                    name: "Acme".into(),
                    destination: Some(pb::Destination {
                        target: Some(pb::destination::Target::BaseUrl(rx.base_url())),
                        receiver_extensions: true,
                    }),
                    project_id: 5,
                    credentials: Some(pb::Credentials {
                        kind: Some(pb::credentials::Kind::ServiceAccount(pb::ServiceAccount {
                            user: "sa".into(),
                            secret: SA_SECRET.into(),
                            secret_set: false,
                        })),
                    }),
                    project_token: PROJECT_TOKEN.into(),
                    webhook: Some(pb::Webhook {
                        url: "http://127.0.0.1:9/hook".into(),
                        secret: HOOK_SECRET.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    answers.push_str(&format!("{tenant:?}"));
    assert!(tenant.project_token_set && tenant.webhook.as_ref().unwrap().secret_set);
    let minted = tenants
        .create_token(req(
            OPERATOR,
            pb::CreateTokenRequest {
                tenant: "acme".into(),
                name: "ci".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let token = minted.secret.clone();
    answers.push_str(&format!("{:?}", minted.token));

    let mut sources = pb::sources_client::SourcesClient::new(channel.clone());
    let source = sources
        .create_source(req(
            &token,
            pb::CreateSourceRequest {
                source: Some(pb::Source {
                    id: "pg".into(),
                    kind: Some(pb::source::Kind::Postgres(pb::PostgresSource {
                        host: pg.host.clone(),
                        port: u32::from(pg.port),
                        database: pg.database.clone(),
                        user: pg.user.clone(),
                        password: PG_PASSWORD.into(),
                        ssl_mode: pb::SslMode::Disable as i32,
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    answers.push_str(&format!("{source:?}"));
    let mut syncs = pb::syncs_client::SyncsClient::new(channel.clone());
    let sync = pb::Sync {
        id: "orders".into(),
        source: "pg".into(),
        target: Some(pb::ReadTarget {
            target: Some(pb::read_target::Target::Table("public.orders".into())),
        }),
        table_type: pb::TableType::Events as i32,
        mode: pb::SyncMode::Append as i32,
        cursor_column: "inserted_at".into(),
        mapping: Some(pb::Mapping {
            event_name: Some("Order".into()),
            time_column: Some("created_at".into()),
            distinct_id_column: Some("user_id".into()),
            key_columns: vec!["id".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    answers.push_str(&format!(
        "{:?}",
        syncs
            .create_sync(req(&token, pb::CreateSyncRequest { sync: Some(sync) }))
            .await
            .unwrap()
            .into_inner()
    ));
    let preview = sources
        .preview_rows(req(
            &token,
            pb::PreviewRowsRequest {
                what: Some(pb::preview_rows_request::What::Sync("orders".into())),
                limit: 2,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    answers.push_str(&format!("{preview:?}"));
    let dry = syncs
        .dry_run(req(
            &token,
            pb::DryRunRequest {
                id: "orders".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.inserts, 30);
    answers.push_str(&format!("{dry:?}"));
    let run_id = syncs
        .trigger_sync(req(
            &token,
            pb::TriggerSyncRequest {
                id: "orders".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .run_id;
    let mut runs = pb::runs_client::RunsClient::new(channel.clone());
    let mut stream = runs
        .watch_run(req(
            &token,
            pb::WatchRunRequest {
                sync: "orders".into(),
                run_id: run_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(run) = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .unwrap()
        .unwrap()
    {
        answers.push_str(&format!("{run:?}"));
        last = Some(run);
    }
    let last = last.unwrap();
    assert_eq!(last.state(), pb::RunState::Succeeded, "{last:?}");
    assert_eq!(last.counts.unwrap().records_accepted, 30);
    for listed in [
        format!(
            "{:?}",
            tenants
                .list_tenants(req(OPERATOR, pb::ListTenantsRequest {}))
                .await
                .unwrap()
        ),
        format!(
            "{:?}",
            sources
                .list_sources(req(&token, pb::ListSourcesRequest::default()))
                .await
                .unwrap()
        ),
        format!(
            "{:?}",
            syncs
                .list_syncs(req(&token, pb::ListSyncsRequest::default()))
                .await
                .unwrap()
        ),
        format!(
            "{:?}",
            runs.list_runs(req(
                &token,
                pb::ListRunsRequest {
                    sync: "orders".into(),
                    ..Default::default()
                }
            ))
            .await
            .unwrap()
        ),
    ] {
        answers.push_str(&listed);
    }
    drop((tenants, sources, syncs, runs, stream, channel));
    node.stop();

    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("run finished"), "the run was logged: {logs}");
    let state = std::fs::read(data.join("state.redb")).unwrap();
    let state_text = String::from_utf8_lossy(&state);
    assert!(
        state_text.contains("public.orders"),
        "the state file holds the catalog"
    );
    for secret in [
        PG_PASSWORD,
        SA_SECRET,
        PROJECT_TOKEN,
        HOOK_SECRET,
        OPERATOR,
        &token,
        &key,
    ] {
        assert!(!answers.contains(secret), "an RPC answer shows {secret}");
        assert!(!logs.contains(secret), "the node's log shows {secret}");
        assert!(
            !state_text.contains(secret),
            "the state file holds {secret} in the clear"
        );
    }

    // Restarted with its key, the sealed credentials open; with another key, they do not,
    // and the answer names the key they need.
    let node = Node::start(&data, &log, &key, &token_file);
    let tested = pb::sources_client::SourcesClient::new(node.channel().await)
        .test_source(req(
            &token,
            pb::TestSourceRequest {
                id: "pg".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(tested.ok, "{tested:?}");
    node.stop();
    let node = Node::start(&data, &log, &new_key(), &token_file);
    let status = pb::sources_client::SourcesClient::new(node.channel().await)
        .test_source(req(
            &token,
            pb::TestSourceRequest {
                id: "pg".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("were sealed with key k-"),
        "{}",
        status.message()
    );
    node.stop();
}

/// The services the reflection service lists.
async fn list_services(channel: Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream_once(request))
        .await
        .unwrap()
        .into_inner();
    match answers.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("{other:?}"),
    }
}

/// A request stream of one message.
fn tokio_stream_once<T: Send + 'static>(
    item: T,
) -> impl tonic::codegen::tokio_stream::Stream<Item = T> {
    tonic::codegen::tokio_stream::iter(vec![item])
}
