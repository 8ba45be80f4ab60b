//! The whole life of a sync through the gRPC admin API, against a real PostgreSQL and the
//! receiver: tenant → token → source (connection tested) → sync (checked against the table) →
//! preview → dry run (nothing sent, no cursor) → trigger → follow → a second trigger refused →
//! cancel → history → pause → delete with the imported data.

mod admin_common;

use std::time::Duration;

use admin_common::*;
use ferry_coordinator::{StateStore, SyncId};
use ferry_proto::admin::v1 as pb;
use ferry_tests::postgres::PgConfig;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_lives_its_whole_life_through_the_api() {
    let Some(mut w) = world(PgConfig::default()).await else {
        return;
    };
    w.pg.sql(ORDERS).unwrap();
    insert_orders(&w.pg, 1, 50);

    // Tenant and token: the token is shown once, listed by prefix only.
    let token = w.tenant_with_token("acme").await;
    assert!(token.starts_with("fy.acme."), "{token}");
    let listed = w
        .tenants()
        .list_tokens(req(&token, pb::ListTokensRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(listed.len(), 1);
    assert!(token.starts_with(&listed[0].prefix) && token.len() > listed[0].prefix.len() + 20);

    // The source, tested on creation; what is in it.
    let source = w.create_source(&token, w.postgres("pg")).await;
    assert_eq!(source.tenant, "acme");
    let Some(pb::source::Kind::Postgres(pg)) = &source.kind else {
        panic!("{source:?}")
    };
    assert!(pg.password.is_empty() && pg.password_set, "{pg:?}");
    let tables = w
        .sources()
        .list_tables(req(
            &token,
            pb::ListTablesRequest {
                source: "pg".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .tables;
    assert!(
        tables
            .iter()
            .any(|t| t.name == "orders" && t.schema == "public"),
        "{tables:?}"
    );
    let columns = w
        .sources()
        .get_columns(req(
            &token,
            pb::GetColumnsRequest {
                source: "pg".into(),
                target: orders_sync("x", "pg").target,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .columns;
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "user_id",
            "created_at",
            "amount",
            "meta",
            "inserted_at"
        ]
    );

    // The sync; its trigger URL is handed out.
    let created = w.create_sync(&token, orders_sync("orders", "pg")).await;
    let sync = created.sync.unwrap();
    assert_eq!(
        sync.trigger_url,
        "https://ferry.example.com/v1/tenants/acme/syncs/orders/trigger"
    );
    assert!(!sync.paused && sync.version > 0);

    // Preview: the records that would be sent for the first rows.
    let preview = w
        .sources()
        .preview_rows(req(
            &token,
            pb::PreviewRowsRequest {
                what: Some(pb::preview_rows_request::What::Sync("orders".into())),
                limit: 3,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preview.rows.len(), 3);
    assert_eq!(preview.records.len(), 3);
    let first: serde_json::Value = serde_json::from_str(&preview.records[0].json).unwrap();
    assert_eq!(first["event"], "Order Placed");
    assert_eq!(first["properties"]["distinct_id"], "user-1");
    assert!(first["properties"]["$insert_id"].is_string(), "{first}");
    assert!(first["properties"].get("inserted_at").is_none(), "excluded");
    assert_eq!(preview.records[0].endpoint, "import");

    // Dry run: counts and samples, nothing sent, no cursor.
    let dry = w
        .syncs()
        .dry_run(req(
            &token,
            pb::DryRunRequest {
                id: "orders".into(),
                samples: 4,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            dry.rows_read,
            dry.inserts,
            dry.updates,
            dry.deletes,
            dry.invalid_rows
        ),
        (50, 48, 0, 0, 2),
        "{dry:?}"
    );
    assert_eq!(dry.records, 48);
    assert_eq!(dry.samples.len(), 4);
    assert_eq!(dry.errors.len(), 2);
    assert!(
        dry.errors.iter().all(|e| e.reason == "invalid_row"
            && (e.field.contains("time") || e.field.contains("created_at"))),
        "{:?}",
        dry.errors
    );
    assert_eq!(dry.errors[0].key, "25");
    assert!(dry.cursor.is_empty());
    assert_eq!(w.event_count().await, 0, "a dry run sends nothing");
    let id = SyncId::new("acme", "orders").unwrap();
    assert!(
        w.store.get_cursor(&id).await.unwrap().is_none(),
        "no cursor moved"
    );
    assert!(w.store.list_runs(&id, 10).await.unwrap().is_empty());

    // Trigger; a second trigger while it runs is refused and names the running run.
    w.faults(serde_json::json!({"slow": 1.0, "slow_ms": 300}))
        .await;
    let run_id = w
        .syncs()
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
    let again = refused(
        w.syncs()
            .trigger_sync(req(
                &token,
                pb::TriggerSyncRequest {
                    id: "orders".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::AlreadyExists,
    );
    assert!(again.message().contains(&run_id), "{}", again.message());

    // Follow it: live progress while running, then the final record.
    let seen = w.follow(&token, "", "orders", &run_id).await;
    let last = seen.last().unwrap();
    assert_eq!(last.state(), pb::RunState::Succeeded, "{last:?}");
    assert!(
        seen.len() >= 2,
        "progress was streamed while it ran: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|r| r.state() == pb::RunState::Running && r.progress.is_some()),
        "{seen:?}"
    );
    let counts = last.counts.unwrap();
    assert_eq!(
        (
            counts.rows_read,
            counts.records_accepted,
            counts.rows_invalid
        ),
        (50, 48, 2)
    );
    assert_eq!(last.trigger, "api");
    assert!(last.progress.as_ref().unwrap().rows_per_second > 0.0);
    assert_eq!(w.event_count().await, 48);
    let got = w
        .runs()
        .get_run(req(
            &token,
            pb::GetRunRequest {
                sync: "orders".into(),
                run_id: run_id.clone(),
                include_errors: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.errors.len(), 2, "{got:?}");
    assert_eq!(got.errors[0].row, Some(24));

    // New rows, a slow destination, and a cancel: the run ends cancelled, the cursor stays
    // at a commit, and the next run completes the job exactly.
    let cursor_before = w.store.get_cursor(&id).await.unwrap().unwrap().value;
    insert_orders(&w.pg, 51, 150);
    w.faults(serde_json::json!({"slow": 1.0, "slow_ms": 400}))
        .await;
    let slow_run = w
        .syncs()
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
    // Wait until it has read something, so the cancel lands mid-run.
    for _ in 0..100 {
        let run = w
            .runs()
            .get_run(req(
                &token,
                pb::GetRunRequest {
                    sync: "orders".into(),
                    run_id: slow_run.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        if run.counts.unwrap_or_default().rows_read > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled = w
        .runs()
        .cancel_run(req(
            &token,
            pb::CancelRunRequest {
                sync: "orders".into(),
                run_id: slow_run.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state(), pb::RunState::Cancelled, "{cancelled:?}");
    assert!(
        cancelled.counts.unwrap().records_accepted < 100,
        "{cancelled:?}"
    );
    let after_cancel = w.store.get_cursor(&id).await.unwrap().unwrap();
    assert!(
        after_cancel.value == cursor_before || after_cancel.run_id == slow_run,
        "the cursor is the last commit: {after_cancel:?}"
    );
    refused(
        w.runs()
            .cancel_run(req(
                &token,
                pb::CancelRunRequest {
                    sync: "orders".into(),
                    run_id: slow_run.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    w.faults(serde_json::json!({})).await;
    let third = w
        .syncs()
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
    let seen = w.follow(&token, "acme", "orders", &third).await;
    assert_eq!(seen.last().unwrap().state(), pb::RunState::Succeeded);
    assert_eq!(
        w.event_count().await,
        144,
        "150 rows, 6 invalid, nothing twice"
    );

    // History, newest first.
    let history = w
        .runs()
        .list_runs(req(
            &token,
            pb::ListRunsRequest {
                sync: "orders".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .runs;
    let states: Vec<(String, pb::RunState)> = history
        .iter()
        .map(|r| (r.run_id.clone(), r.state()))
        .collect();
    assert_eq!(
        states,
        vec![
            (third.clone(), pb::RunState::Succeeded),
            (slow_run.clone(), pb::RunState::Cancelled),
            (run_id.clone(), pb::RunState::Succeeded),
        ]
    );

    // Paused: not triggered; resumed: back.
    let paused = w
        .syncs()
        .pause_sync(req(
            &token,
            pb::PauseSyncRequest {
                id: "orders".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(paused.paused);
    refused(
        w.syncs()
            .trigger_sync(req(
                &token,
                pb::TriggerSyncRequest {
                    id: "orders".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    let resumed = w
        .syncs()
        .resume_sync(req(
            &token,
            pb::ResumeSyncRequest {
                id: "orders".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!resumed.paused && resumed.version > paused.version);

    // Deleted with the data it imported (the receiver can delete events).
    let deleted = w
        .syncs()
        .delete_sync(req(
            &token,
            pb::DeleteSyncRequest {
                id: "orders".into(),
                delete_imported_data: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.records_deleted, 144, "{deleted:?}");
    assert_eq!(deleted.records_not_found, 0, "{deleted:?}");
    assert_eq!(w.event_count().await, 0);
    refused(
        w.syncs()
            .get_sync(req(
                &token,
                pb::GetSyncRequest {
                    id: "orders".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
    );
    refused(
        w.runs()
            .list_runs(req(
                &token,
                pb::ListRunsRequest {
                    sync: "orders".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
    );
    assert!(w.store.get_cursor(&id).await.unwrap().is_none());
    assert!(w.store.list_runs(&id, 10).await.unwrap().is_empty());
    assert!(w.store.current_owner(&id).await.unwrap().is_none());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_dry_run_counts_inserts_updates_and_deletes_without_sending() {
    let Some(mut w) = world(PgConfig::default()).await else {
        return;
    };
    w.pg.sql("CREATE TABLE people (id text PRIMARY KEY, name text, plan text);")
        .unwrap();
    w.pg.sql(
        "INSERT INTO people SELECT 'p' || i, 'name ' || i, 'free' FROM generate_series(1, 10) i;",
    )
    .unwrap();
    let token = w.tenant_with_token("acme").await;
    w.create_source(&token, w.postgres("pg")).await;
    let sync = pb::Sync {
        id: "people".into(),
        source: "pg".into(),
        target: Some(pb::ReadTarget {
            target: Some(pb::read_target::Target::Table("public.people".into())),
        }),
        table_type: pb::TableType::UserProfiles as i32,
        mode: pb::SyncMode::Mirror as i32,
        mapping: Some(pb::Mapping {
            distinct_id_column: Some("id".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    w.create_sync(&token, sync).await;
    let dry_run = || async {
        w.syncs()
            .dry_run(req(
                &token,
                pb::DryRunRequest {
                    id: "people".into(),
                    samples: 3,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
    };
    let first = dry_run().await;
    assert_eq!(
        (first.inserts, first.updates, first.deletes),
        (10, 0, 0),
        "{first:?}"
    );
    assert_eq!(first.samples.len(), 3);
    assert!(first.samples.iter().all(|s| s.endpoint == "insert"));
    for sample in &first.samples {
        assert!(!sample.json.contains(PROJECT_TOKEN), "{}", sample.json);
        assert!(sample.json.contains("\"$set\""), "{}", sample.json);
    }
    let profiles = |state: serde_json::Value| state["profiles"].as_object().unwrap().clone();
    assert!(
        profiles(w.state().await).is_empty(),
        "a dry run sends nothing"
    );

    let run_id = w
        .syncs()
        .trigger_sync(req(
            &token,
            pb::TriggerSyncRequest {
                id: "people".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .run_id;
    let seen = w.follow(&token, "", "people", &run_id).await;
    assert_eq!(
        seen.last().unwrap().state(),
        pb::RunState::Succeeded,
        "{seen:?}"
    );
    assert_eq!(profiles(w.state().await).len(), 10);

    w.pg.sql("UPDATE people SET plan = 'paid' WHERE id = 'p1'; DELETE FROM people WHERE id = 'p2'; INSERT INTO people VALUES ('p11', 'new', 'free');")
        .unwrap();
    let second = dry_run().await;
    assert_eq!(
        (second.inserts, second.updates, second.deletes),
        (1, 1, 1),
        "{second:?}"
    );
    // The dry run changed nothing, here or there: the next one finds the same changes.
    let after = profiles(w.state().await);
    assert_eq!(after.len(), 10);
    assert!(after.contains_key("p2") && !after.contains_key("p11"));
    let again = dry_run().await;
    assert_eq!(
        (again.inserts, again.updates, again.deletes),
        (1, 1, 1),
        "{again:?}"
    );

    // Deleting the sync drops its staging tables in the warehouse.
    let staging_tables = || {
        w.pg.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'ferry_staging';")
            .unwrap()
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_ne!(staging_tables(), "0", "the run left its snapshot");
    let deleted = w
        .syncs()
        .delete_sync(req(
            &token,
            pb::DeleteSyncRequest {
                id: "people".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        deleted.message.contains("dropped Mirror staging tables"),
        "{deleted:?}"
    );
    assert_eq!(staging_tables(), "0");
    w.stop().await;
}
