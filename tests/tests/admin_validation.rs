//! Every way a definition can be wrong gets a clear answer from the admin API: the code says
//! what kind of problem, the message names the field and the column (or what failed in the
//! connection), and the details carry the same in structured form. Against a real PostgreSQL
//! serving TLS.

mod admin_common;

use admin_common::*;
use ferry_proto::admin::v1 as pb;
use ferry_tests::postgres::{PgConfig, TestCa};
use prost::Message;
use tonic::Code;

fn problems(status: &tonic::Status) -> Vec<(String, String)> {
    pb::SpecProblems::decode(status.details())
        .unwrap()
        .problems
        .into_iter()
        .map(|p| (p.field, p.message))
        .collect()
}

fn connection_problem(status: &tonic::Status) -> pb::connection_problem::Kind {
    pb::ConnectionProblem::decode(status.details())
        .unwrap()
        .kind()
}

fn pg_of(source: &mut pb::Source) -> &mut pb::PostgresSource {
    match source.kind.as_mut() {
        Some(pb::source::Kind::Postgres(pg)) => pg,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_that_cannot_connect_say_what_failed() {
    let Some(mut w) = world(PgConfig { ssl: true }).await else {
        return;
    };
    let token = w.tenant_with_token("acme").await;
    let create = |source: pb::Source| {
        let w = &w;
        let token = token.clone();
        async move {
            w.sources()
                .create_source(req(
                    &token,
                    pb::CreateSourceRequest {
                        source: Some(source),
                    },
                ))
                .await
        }
    };

    // Bad credentials.
    let mut bad_password = w.postgres("pg");
    pg_of(&mut bad_password).password = "not-the-password".into();
    let status = refused(create(bad_password).await, Code::FailedPrecondition);
    assert!(
        status.message().starts_with(
            "source 'pg': connection test failed: the warehouse refused the credentials"
        ),
        "{}",
        status.message()
    );
    assert_eq!(
        connection_problem(&status),
        pb::connection_problem::Kind::Authentication
    );

    // Nothing listening.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut unreachable = w.postgres("pg");
    pg_of(&mut unreachable).port = u32::from(closed_port);
    let status = refused(create(unreachable).await, Code::FailedPrecondition);
    assert!(
        status.message().contains("cannot reach the warehouse at"),
        "{}",
        status.message()
    );
    assert_eq!(
        connection_problem(&status),
        pb::connection_problem::Kind::Unreachable
    );

    // TLS: a certificate signed by a CA the source does not trust.
    let other_ca = TestCa::new("not the server's CA").unwrap();
    let mut wrong_ca = w.postgres("pg");
    let pg = pg_of(&mut wrong_ca);
    pg.ssl_mode = pb::SslMode::VerifyFull as i32;
    pg.ca_cert = other_ca.pem.clone();
    let status = refused(create(wrong_ca).await, Code::FailedPrecondition);
    assert!(
        status.message().contains("TLS verification failed"),
        "{}",
        status.message()
    );
    assert_eq!(
        connection_problem(&status),
        pb::connection_problem::Kind::Tls
    );

    // The right CA verifies (and a tenant may only give it inline).
    let mut right_ca = w.postgres("pg");
    let pg = pg_of(&mut right_ca);
    pg.ssl_mode = pb::SslMode::VerifyFull as i32;
    pg.ca_cert = w.pg.ca_pem.clone().unwrap();
    let created = create(right_ca)
        .await
        .expect("verified TLS connects")
        .into_inner();
    let tested = w
        .sources()
        .test_source(req(
            &token,
            pb::TestSourceRequest {
                id: created.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(tested.ok && tested.problem.is_none(), "{tested:?}");
    let mut ca_path = w.postgres("pg2");
    let pg = pg_of(&mut ca_path);
    pg.ssl_mode = pb::SslMode::VerifyFull as i32;
    pg.ca_cert = "/etc/ssl/certs/ca-certificates.crt".into();
    let status = refused(create(ca_path).await, Code::PermissionDenied);
    assert!(status.message().contains("ca_cert"), "{}", status.message());

    // Malformed definitions name the field.
    let mut blank = w.postgres("Bad Id");
    pg_of(&mut blank).host = " ".into();
    let status = refused(create(blank).await, Code::InvalidArgument);
    let fields: Vec<String> = problems(&status).into_iter().map(|p| p.0).collect();
    assert!(fields.contains(&"source.id".to_string()), "{fields:?}");
    assert!(
        fields.contains(&"source.kind.postgres.host".to_string()),
        "{fields:?}"
    );
    let status = refused(
        create(pb::Source {
            id: "lite".into(),
            kind: Some(pb::source::Kind::Sqlite(pb::SqliteSource {
                path: "/etc/passwd".into(),
            })),
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
    );
    assert!(
        status.message().contains("operator"),
        "{}",
        status.message()
    );

    // A source created twice.
    let status = refused(create(w.postgres("pg")).await, Code::AlreadyExists);
    assert!(status.message().contains("'pg'"), "{}", status.message());

    // A missing privilege shows when the table is read.
    w.pg.sql("CREATE TABLE secrets_table (id integer, note text);")
        .unwrap();
    w.pg.admin_sql_in(
        &w.pg.database,
        "CREATE ROLE limited LOGIN PASSWORD 'limited-pass'; GRANT USAGE ON SCHEMA public TO limited;",
    )
    .unwrap();
    let mut limited = w.postgres("limited");
    let pg = pg_of(&mut limited);
    pg.user = "limited".into();
    pg.password = "limited-pass".into();
    create(limited).await.expect("the login itself works");
    let status = refused(
        w.sources()
            .preview_rows(req(
                &token,
                pb::PreviewRowsRequest {
                    what: Some(pb::preview_rows_request::What::Definition(pb::Sync {
                        id: "s".into(),
                        source: "limited".into(),
                        target: Some(pb::ReadTarget {
                            target: Some(pb::read_target::Target::Table(
                                "public.secrets_table".into(),
                            )),
                        }),
                        table_type: pb::TableType::UserProfiles as i32,
                        mode: pb::SyncMode::Full as i32,
                        mapping: Some(pb::Mapping {
                            distinct_id_column: Some("id".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("missing privilege"),
        "{}",
        status.message()
    );
    assert_eq!(
        connection_problem(&status),
        pb::connection_problem::Kind::Privilege
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_are_checked_against_the_real_table_and_name_the_column() {
    let Some(mut w) = world(PgConfig::default()).await else {
        return;
    };
    w.pg.sql(ORDERS).unwrap();
    insert_orders(&w.pg, 1, 5);
    let token = w.tenant_with_token("acme").await;
    w.create_source(&token, w.postgres("pg")).await;
    let create = |sync: pb::Sync| {
        let w = &w;
        let token = token.clone();
        async move {
            w.syncs()
                .create_sync(req(&token, pb::CreateSyncRequest { sync: Some(sync) }))
                .await
        }
    };
    let with_mapping = |f: &dyn Fn(&mut pb::Mapping)| {
        let mut sync = orders_sync("orders", "pg");
        f(sync.mapping.as_mut().unwrap());
        sync
    };

    // A column that is not there.
    let status = refused(
        create(with_mapping(&|m| m.time_column = Some("created".into()))).await,
        Code::InvalidArgument,
    );
    let found = problems(&status);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "sync.mapping.time_column");
    assert!(
        found[0].1.contains("column 'created' is not in the table"),
        "{found:?}"
    );
    assert!(
        found[0].1.contains("created_at"),
        "the real columns are listed"
    );
    assert!(status.message().contains("sync.mapping.time_column"));

    // A column of the wrong kind.
    let status = refused(
        create(with_mapping(&|m| {
            m.distinct_id_column = Some("meta".into())
        }))
        .await,
        Code::InvalidArgument,
    );
    let found = problems(&status);
    assert_eq!(found[0].0, "sync.mapping.distinct_id_column");
    assert!(found[0].1.contains("column 'meta' is json"), "{found:?}");

    // The cursor column too.
    let mut sync = orders_sync("orders", "pg");
    sync.cursor_column = "inserted".into();
    let status = refused(create(sync).await, Code::InvalidArgument);
    assert_eq!(problems(&status)[0].0, "sync.cursor_column");

    // A table that does not exist; a source that does not exist.
    let mut sync = orders_sync("orders", "pg");
    sync.target = Some(pb::ReadTarget {
        target: Some(pb::read_target::Target::Table("public.nope".into())),
    });
    let status = refused(create(sync).await, Code::InvalidArgument);
    assert_eq!(problems(&status)[0].0, "sync.table", "{}", status.message());
    let status = refused(
        create(orders_sync("orders", "nope")).await,
        Code::InvalidArgument,
    );
    assert_eq!(problems(&status)[0].0, "sync.source");
    assert!(status.message().contains("no source 'nope'"));

    // Rules of the spec itself: every problem at once, each by field.
    let mut sync = orders_sync("Orders!", "pg");
    sync.mode = pb::SyncMode::Full as i32;
    sync.schedule = "every blue moon".into();
    let status = refused(create(sync).await, Code::InvalidArgument);
    let fields: Vec<String> = problems(&status).into_iter().map(|p| p.0).collect();
    for field in ["sync.id", "sync.mode", "sync.schedule"] {
        assert!(fields.contains(&field.to_string()), "{field}: {fields:?}");
    }
    let mut sync = orders_sync("orders", "pg");
    sync.schedule = "daily at 06:30".into();
    sync.timezone = "Europe/Berln".into();
    let status = refused(create(sync).await, Code::InvalidArgument);
    assert_eq!(problems(&status)[0].0, "sync.schedule_timezone");
    let status = refused(
        create(pb::Sync {
            table_type: 0,
            ..orders_sync("orders", "pg")
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(problems(&status)[0].0, "sync.table_type");

    // Nothing was stored by all of that; a valid sync is, with its schedule.
    assert!(w
        .syncs()
        .list_syncs(req(&token, pb::ListSyncsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .syncs
        .is_empty());
    let mut sync = orders_sync("orders", "pg");
    sync.schedule = "daily at 06:30".into();
    sync.timezone = "Europe/Berlin".into();
    let stored = create(sync).await.unwrap().into_inner().sync.unwrap();
    assert_eq!(
        (stored.schedule.as_str(), stored.timezone.as_str()),
        ("daily at 06:30", "Europe/Berlin")
    );

    // Updates are checked the same way, and compare versions.
    let mut update = stored.clone();
    update.mapping.as_mut().unwrap().time_column = Some("nope".into());
    let status = refused(
        w.syncs()
            .update_sync(req(
                &token,
                pb::UpdateSyncRequest {
                    sync: Some(update),
                    expected_version: stored.version,
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(problems(&status)[0].0, "sync.mapping.time_column");
    let mut update = stored.clone();
    update.schedule = "hourly".into();
    update.timezone.clear();
    let updated = w
        .syncs()
        .update_sync(req(
            &token,
            pb::UpdateSyncRequest {
                sync: Some(update.clone()),
                expected_version: stored.version,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .sync
        .unwrap();
    assert_eq!(updated.schedule, "hourly");
    let status = refused(
        w.syncs()
            .update_sync(req(
                &token,
                pb::UpdateSyncRequest {
                    sync: Some(update),
                    expected_version: stored.version,
                },
            ))
            .await,
        Code::Aborted,
    );
    assert!(status.message().contains("changed concurrently"));

    // A source in use is not deleted; the syncs using it are named.
    let status = refused(
        w.sources()
            .delete_source(req(
                &token,
                pb::DeleteSourceRequest {
                    id: "pg".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("sync 'orders'"),
        "{}",
        status.message()
    );

    // Tenants: credentials and destination checked by field.
    let mut tenant = w.tenant("beta");
    tenant.credentials = None;
    let status = refused(
        w.tenants()
            .create_tenant(req(
                OPERATOR,
                pb::CreateTenantRequest {
                    tenant: Some(tenant),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(problems(&status)[0].0, "tenant.credentials");
    let mut tenant = w.tenant("beta");
    tenant.project_id = 0;
    tenant.send_budget = Some(0);
    tenant.destination = Some(pb::Destination {
        target: Some(pb::destination::Target::BaseUrl("ftp://x".into())),
        receiver_extensions: false,
    });
    let status = refused(
        w.tenants()
            .create_tenant(req(
                OPERATOR,
                pb::CreateTenantRequest {
                    tenant: Some(tenant),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    let fields: Vec<String> = problems(&status).into_iter().map(|p| p.0).collect();
    assert!(
        fields.contains(&"tenant.project_id".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"tenant.destination.base_url".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"tenant.send_budget".to_string()),
        "{fields:?}"
    );

    // Deleting a sync's events needs a destination that can: without the receiver's
    // extensions nothing is deleted and the sync stays.
    let mut plain = w.tenant("acme");
    plain.destination.as_mut().unwrap().receiver_extensions = false;
    plain.send_budget = Some(2500);
    let updated = w
        .tenants()
        .update_tenant(req(
            OPERATOR,
            pb::UpdateTenantRequest {
                tenant: Some(plain),
                expected_version: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.send_budget, Some(2500), "a send budget is kept");
    let stored = w
        .tenants()
        .get_tenant(req(
            OPERATOR,
            pb::GetTenantRequest {
                tenant: "acme".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.send_budget, Some(2500));
    let status = refused(
        w.syncs()
            .delete_sync(req(
                &token,
                pb::DeleteSyncRequest {
                    id: "orders".into(),
                    delete_imported_data: true,
                    ..Default::default()
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("no per-event delete"),
        "{}",
        status.message()
    );
    w.syncs()
        .get_sync(req(
            &token,
            pb::GetSyncRequest {
                id: "orders".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("the sync is still there");
    w.stop().await;
}
