//! Tenants never see each other: a tenant token that names another tenant — existing or not —
//! gets PERMISSION_DENIED from every RPC, before anything is looked up; a missing, malformed,
//! unknown or revoked token gets UNAUTHENTICATED from every RPC; the operator reaches all.

mod admin_common;

use admin_common::*;
use ferry_proto::admin::v1 as pb;
use ferry_tests::postgres::PgConfig;
use tonic::{Code, Request};

/// How a call is authorized.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Bearer(&'a str),
    Raw(&'a str),
    None,
}

fn with<T>(auth: Auth<'_>, msg: T) -> Request<T> {
    match auth {
        Auth::Bearer(token) => req(token, msg),
        Auth::Raw(value) => {
            let mut r = Request::new(msg);
            r.metadata_mut()
                .insert("authorization", value.parse().unwrap());
            r
        }
        Auth::None => Request::new(msg),
    }
}

/// Calls every tenant-scoped RPC about `tenant`'s objects (sync `orders`, source `pg`, run
/// `run_id`, token `token_id`) and returns each answer's code by RPC name.
async fn every_rpc(
    w: &World,
    auth: Auth<'_>,
    tenant: &str,
    run_id: &str,
    token_id: &str,
) -> Vec<(&'static str, Code)> {
    let t = tenant.to_string();
    let mut source = w.postgres("pg");
    source.tenant = t.clone();
    let mut sync = orders_sync("orders", "pg");
    sync.tenant = t.clone();
    let mut other_sync = orders_sync("mine-now", "pg");
    other_sync.tenant = t.clone();
    let mut tenant_msg = w.tenant(tenant);
    tenant_msg.name = "taken over".into();
    let target = orders_sync("x", "pg").target;
    let (mut tenants, mut sources, mut syncs, mut runs) =
        (w.tenants(), w.sources(), w.syncs(), w.runs());
    vec![
        (
            "GetTenant",
            code(
                tenants
                    .get_tenant(with(auth, pb::GetTenantRequest { tenant: t.clone() }))
                    .await,
            ),
        ),
        (
            "UpdateTenant",
            code(
                tenants
                    .update_tenant(with(
                        auth,
                        pb::UpdateTenantRequest {
                            tenant: Some(tenant_msg),
                            expected_version: 0,
                        },
                    ))
                    .await,
            ),
        ),
        (
            "CreateToken",
            code(
                tenants
                    .create_token(with(
                        auth,
                        pb::CreateTokenRequest {
                            tenant: t.clone(),
                            name: "stolen".into(),
                        },
                    ))
                    .await,
            ),
        ),
        (
            "ListTokens",
            code(
                tenants
                    .list_tokens(with(auth, pb::ListTokensRequest { tenant: t.clone() }))
                    .await,
            ),
        ),
        (
            "RevokeToken",
            code(
                tenants
                    .revoke_token(with(
                        auth,
                        pb::RevokeTokenRequest {
                            tenant: t.clone(),
                            id: token_id.into(),
                        },
                    ))
                    .await,
            ),
        ),
        (
            "CreateSource",
            code(
                sources
                    .create_source(with(
                        auth,
                        pb::CreateSourceRequest {
                            source: Some(pb::Source {
                                id: "another".into(),
                                ..source.clone()
                            }),
                        },
                    ))
                    .await,
            ),
        ),
        (
            "GetSource",
            code(
                sources
                    .get_source(with(
                        auth,
                        pb::GetSourceRequest {
                            tenant: t.clone(),
                            id: "pg".into(),
                        },
                    ))
                    .await,
            ),
        ),
        (
            "ListSources",
            code(
                sources
                    .list_sources(with(auth, pb::ListSourcesRequest { tenant: t.clone() }))
                    .await,
            ),
        ),
        (
            "UpdateSource",
            code(
                sources
                    .update_source(with(
                        auth,
                        pb::UpdateSourceRequest {
                            source: Some(source.clone()),
                            expected_version: 0,
                        },
                    ))
                    .await,
            ),
        ),
        (
            "TestSource",
            code(
                sources
                    .test_source(with(
                        auth,
                        pb::TestSourceRequest {
                            tenant: t.clone(),
                            id: "pg".into(),
                        },
                    ))
                    .await,
            ),
        ),
        (
            "ListTables",
            code(
                sources
                    .list_tables(with(
                        auth,
                        pb::ListTablesRequest {
                            tenant: t.clone(),
                            source: "pg".into(),
                        },
                    ))
                    .await,
            ),
        ),
        (
            "GetColumns",
            code(
                sources
                    .get_columns(with(
                        auth,
                        pb::GetColumnsRequest {
                            tenant: t.clone(),
                            source: "pg".into(),
                            target,
                        },
                    ))
                    .await,
            ),
        ),
        (
            "PreviewRows",
            code(
                sources
                    .preview_rows(with(
                        auth,
                        pb::PreviewRowsRequest {
                            tenant: t.clone(),
                            what: Some(pb::preview_rows_request::What::Sync("orders".into())),
                            limit: 1,
                        },
                    ))
                    .await,
            ),
        ),
        (
            "CreateSync",
            code(
                syncs
                    .create_sync(with(
                        auth,
                        pb::CreateSyncRequest {
                            sync: Some(other_sync),
                        },
                    ))
                    .await,
            ),
        ),
        (
            "GetSync",
            code(
                syncs
                    .get_sync(with(
                        auth,
                        pb::GetSyncRequest {
                            tenant: t.clone(),
                            id: "orders".into(),
                        },
                    ))
                    .await,
            ),
        ),
        (
            "ListSyncs",
            code(
                syncs
                    .list_syncs(with(
                        auth,
                        pb::ListSyncsRequest {
                            tenant: t.clone(),
                            source: String::new(),
                        },
                    ))
                    .await,
            ),
        ),
        (
            "UpdateSync",
            code(
                syncs
                    .update_sync(with(
                        auth,
                        pb::UpdateSyncRequest {
                            sync: Some(sync),
                            expected_version: 0,
                        },
                    ))
                    .await,
            ),
        ),
        (
            "PauseSync",
            code(
                syncs
                    .pause_sync(with(
                        auth,
                        pb::PauseSyncRequest {
                            tenant: t.clone(),
                            id: "orders".into(),
                        },
                    ))
                    .await,
            ),
        ),
        (
            "ResumeSync",
            code(
                syncs
                    .resume_sync(with(
                        auth,
                        pb::ResumeSyncRequest {
                            tenant: t.clone(),
                            id: "orders".into(),
                        },
                    ))
                    .await,
            ),
        ),
        (
            "TriggerSync",
            code(
                syncs
                    .trigger_sync(with(
                        auth,
                        pb::TriggerSyncRequest {
                            tenant: t.clone(),
                            id: "orders".into(),
                        },
                    ))
                    .await,
            ),
        ),
        (
            "DryRun",
            code(
                syncs
                    .dry_run(with(
                        auth,
                        pb::DryRunRequest {
                            tenant: t.clone(),
                            id: "orders".into(),
                            samples: 1,
                            max_rows: 1,
                        },
                    ))
                    .await,
            ),
        ),
        (
            "ListRuns",
            code(
                runs.list_runs(with(
                    auth,
                    pb::ListRunsRequest {
                        tenant: t.clone(),
                        sync: "orders".into(),
                        limit: 5,
                    },
                ))
                .await,
            ),
        ),
        (
            "GetRun",
            code(
                runs.get_run(with(
                    auth,
                    pb::GetRunRequest {
                        tenant: t.clone(),
                        sync: "orders".into(),
                        run_id: run_id.into(),
                        include_errors: true,
                    },
                ))
                .await,
            ),
        ),
        (
            "CancelRun",
            code(
                runs.cancel_run(with(
                    auth,
                    pb::CancelRunRequest {
                        tenant: t.clone(),
                        sync: "orders".into(),
                        run_id: run_id.into(),
                    },
                ))
                .await,
            ),
        ),
        (
            "WatchRun",
            code(
                runs.watch_run(with(
                    auth,
                    pb::WatchRunRequest {
                        tenant: t.clone(),
                        sync: "orders".into(),
                        run_id: run_id.into(),
                    },
                ))
                .await,
            ),
        ),
        (
            "DeleteSync",
            code(
                syncs
                    .delete_sync(with(
                        auth,
                        pb::DeleteSyncRequest {
                            tenant: t.clone(),
                            id: "orders".into(),
                            delete_imported_data: true,
                        },
                    ))
                    .await,
            ),
        ),
        (
            "DeleteSource",
            code(
                sources
                    .delete_source(with(
                        auth,
                        pb::DeleteSourceRequest {
                            tenant: t.clone(),
                            id: "pg".into(),
                        },
                    ))
                    .await,
            ),
        ),
        (
            "DeleteTenant",
            code(
                tenants
                    .delete_tenant(with(
                        auth,
                        pb::DeleteTenantRequest {
                            tenant: t.clone(),
                            cascade: true,
                        },
                    ))
                    .await,
            ),
        ),
    ]
}

/// The RPCs that name no tenant.
async fn unscoped_rpcs(w: &World, auth: Auth<'_>) -> Vec<(&'static str, Code)> {
    vec![
        (
            "CreateTenant",
            code(
                w.tenants()
                    .create_tenant(with(
                        auth,
                        pb::CreateTenantRequest {
                            tenant: Some(w.tenant("intruder")),
                        },
                    ))
                    .await,
            ),
        ),
        (
            "ListTenants",
            code(
                w.tenants()
                    .list_tenants(with(auth, pb::ListTenantsRequest {}))
                    .await,
            ),
        ),
    ]
}

#[track_caller]
fn all_are(answers: &[(&str, Code)], expected: Code) {
    let wrong: Vec<_> = answers.iter().filter(|(_, c)| *c != expected).collect();
    assert!(
        wrong.is_empty(),
        "expected {expected:?} from every RPC; these differ: {wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_reach_another_tenants_anything() {
    let Some(mut w) = world(PgConfig::default()).await else {
        return;
    };
    w.pg.sql(ORDERS).unwrap();
    insert_orders(&w.pg, 1, 10);
    let a = w.tenant_with_token("alpha").await;
    let b = w.tenant_with_token("beta").await;
    for token in [&a, &b] {
        w.create_source(token, w.postgres("pg")).await;
        w.create_sync(token, orders_sync("orders", "pg")).await;
    }
    let b_run = w
        .syncs()
        .trigger_sync(req(
            &b,
            pb::TriggerSyncRequest {
                id: "orders".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .run_id;
    let seen = w.follow(&b, "beta", "orders", &b_run).await;
    assert_eq!(seen.last().unwrap().state(), pb::RunState::Succeeded);
    let b_token_id = w
        .tenants()
        .list_tokens(req(&b, pb::ListTokensRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .tokens[0]
        .id
        .clone();
    let events_before = w.event_count().await;

    // Tenant A naming tenant B, or a tenant that does not exist: the same answer everywhere.
    all_are(
        &every_rpc(&w, Auth::Bearer(&a), "beta", &b_run, &b_token_id).await,
        Code::PermissionDenied,
    );
    all_are(
        &every_rpc(&w, Auth::Bearer(&a), "ghost", "no-run", "no-token").await,
        Code::PermissionDenied,
    );
    // Operator-only RPCs, even for a tenant's own tenant.
    let own = unscoped_rpcs(&w, Auth::Bearer(&a)).await;
    assert_eq!(own[0], ("CreateTenant", Code::PermissionDenied));
    let status = refused(
        w.tenants()
            .delete_tenant(req(
                &a,
                pb::DeleteTenantRequest {
                    tenant: "alpha".into(),
                    cascade: true,
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("operator"));
    // Listing shows only one's own.
    let listed = w
        .tenants()
        .list_tenants(req(&a, pb::ListTenantsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .tenants;
    assert_eq!(
        listed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["alpha"]
    );

    // Nothing of B's changed: its sync, source, run, token and data are all there.
    let b_sync = w
        .syncs()
        .get_sync(req(
            &b,
            pb::GetSyncRequest {
                id: "orders".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!b_sync.paused);
    let b_tenant = w
        .tenants()
        .get_tenant(req(&b, pb::GetTenantRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b_tenant.name, "Tenant beta");
    assert_eq!(
        w.runs()
            .list_runs(req(
                &b,
                pb::ListRunsRequest {
                    sync: "orders".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .runs
            .len(),
        1
    );
    assert_eq!(w.event_count().await, events_before);
    // B's run id under A's own sync name is simply not A's run.
    refused(
        w.runs()
            .get_run(req(
                &a,
                pb::GetRunRequest {
                    sync: "orders".into(),
                    run_id: b_run.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
    );

    // No token, a malformed one, an unknown one, a revoked one: UNAUTHENTICATED everywhere.
    let revoked = w
        .tenants()
        .create_token(req(
            &a,
            pb::CreateTokenRequest {
                name: "short-lived".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    w.tenants()
        .revoke_token(req(
            &a,
            pb::RevokeTokenRequest {
                id: revoked.token.unwrap().id,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let forged = a.replacen("fy.alpha.", "fy.beta.", 1);
    for auth in [
        Auth::None,
        Auth::Raw("Basic b3BlcmF0b3I6eA=="),
        Auth::Raw("Bearer"),
        Auth::Bearer("operator-token-for-the-admin-test"),
        Auth::Bearer(&forged),
        Auth::Bearer(&revoked.secret),
    ] {
        all_are(
            &every_rpc(&w, auth, "alpha", "r", "t").await,
            Code::Unauthenticated,
        );
        all_are(&unscoped_rpcs(&w, auth).await, Code::Unauthenticated);
    }

    // The operator reaches every tenant; the HTTP trigger keeps the same boundary.
    w.tenants()
        .get_tenant(req(
            OPERATOR,
            pb::GetTenantRequest {
                tenant: "beta".into(),
            },
        ))
        .await
        .expect("the operator sees beta");
    let addr = w.server.as_ref().unwrap().addr;
    let http = reqwest::Client::new();
    let put = |tenant: &str, token: &str| {
        http.put(format!(
            "http://{addr}/v1/tenants/{tenant}/syncs/orders/trigger"
        ))
        .bearer_auth(token)
        .send()
    };
    assert_eq!(put("beta", &a).await.unwrap().status(), 403);
    assert_eq!(put("alpha", "nobody").await.unwrap().status(), 401);
    let started = put("alpha", &a).await.unwrap();
    assert_eq!(started.status(), 202);
    let body: serde_json::Value = started.json().await.unwrap();
    let run = body["run_id"].as_str().unwrap().to_string();
    let seen = w.follow(&a, "alpha", "orders", &run).await;
    assert_eq!(seen.last().unwrap().trigger, "http");
    w.stop().await;
}
