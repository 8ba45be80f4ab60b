//! A Redshift source through the gRPC admin API: the node's API server in-process, the Redshift
//! Data API stand-in (`tests/redshift-standin`) in front of the same real PostgreSQL, reached by
//! the unchanged AWS SDK through `endpoint_url`. Creation tests the connection (a stale secret
//! is refused with what failed), the tables are listed through the Data API, and the secret
//! access key never comes back. The stand-in does not verify SigV4 signatures, so a wrong
//! secret access key cannot be told apart here (see its README).

mod admin_common;
mod redshift_rig;

use std::collections::BTreeMap;

use admin_common::*;
use ferry_coordinator::catalog::Catalog;
use ferry_proto::admin::v1 as pb;
use ferry_redshift_standin::{AccessKey, Endpoint, Login, RunningStandin, StandinConfig};
use ferry_tests::postgres::PgConfig;
use prost::Message;
use redshift_rig::{CLUSTER, KEY_ID, REGION, SECRET, STALE_SECRET};
use tonic::Code;

const SECRET_KEY: &str = "ferry-admin-redshift-secret-access-key-5150";

/// The stand-in in front of the world's PostgreSQL: one cluster, a good and a stale secret,
/// one access key.
async fn standin(w: &World) -> RunningStandin {
    let login = Login {
        username: w.pg.user.clone(),
        password: w.pg.password.clone(),
    };
    let mut config = StandinConfig::new(w.pg.host.clone(), w.pg.port);
    config.clusters = vec![Endpoint {
        name: CLUSTER.into(),
        db_users: BTreeMap::new(),
        iam_login: None,
    }];
    config.secrets = BTreeMap::from([
        (SECRET.to_string(), login.clone()),
        (
            STALE_SECRET.to_string(),
            Login {
                password: "an-old-password".into(),
                ..login
            },
        ),
    ]);
    config.access_keys = BTreeMap::from([(KEY_ID.to_string(), AccessKey::default())]);
    ferry_redshift_standin::start(config)
        .await
        .expect("stand-in starts")
}

fn redshift_source(w: &World, standin: &RunningStandin, id: &str) -> pb::Source {
    pb::Source {
        id: id.into(),
        kind: Some(pb::source::Kind::Redshift(pb::RedshiftSource {
            cluster_identifier: CLUSTER.into(),
            database: w.pg.database.clone(),
            secret_arn: SECRET.into(),
            region: REGION.into(),
            endpoint_url: standin.url(),
            access_key_id: KEY_ID.into(),
            secret_access_key: SECRET_KEY.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn redshift_of(source: &mut pb::Source) -> &mut pb::RedshiftSource {
    match source.kind.as_mut() {
        Some(pb::source::Kind::Redshift(rs)) => rs,
        other => panic!("redshift expected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redshift_source_is_tested_listed_and_never_shows_its_secret_key() {
    let Some(w) = world(PgConfig::default()).await else {
        return;
    };
    w.pg.sql(ORDERS).unwrap();
    let standin = standin(&w).await;
    let token = w.tenant_with_token("acme").await;

    // A stale secret: refused before anything is stored, saying what failed.
    let mut stale = redshift_source(&w, &standin, "stale");
    redshift_of(&mut stale).secret_arn = STALE_SECRET.into();
    let status = refused(
        w.sources()
            .create_source(req(
                &token,
                pb::CreateSourceRequest {
                    source: Some(stale),
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("source 'stale': connection test failed")
            && status.message().contains("password authentication failed"),
        "{}",
        status.message()
    );
    let problem = pb::ConnectionProblem::decode(status.details()).unwrap();
    assert_eq!(
        problem.kind(),
        pb::connection_problem::Kind::Authentication,
        "{problem:?}"
    );

    // Without an access key the node's own AWS identity would sign: not for a tenant.
    let mut node_identity = redshift_source(&w, &standin, "node-identity");
    {
        let rs = redshift_of(&mut node_identity);
        rs.access_key_id.clear();
        rs.secret_access_key.clear();
    }
    let status = refused(
        w.sources()
            .create_source(req(
                &token,
                pb::CreateSourceRequest {
                    source: Some(node_identity),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert!(
        status.message().contains("access_key_id"),
        "{}",
        status.message()
    );

    // The good one: stored, its key shown only as set.
    let mut created = w
        .create_source(&token, redshift_source(&w, &standin, "rs"))
        .await;
    {
        let rs = redshift_of(&mut created);
        assert!(
            rs.secret_access_key.is_empty() && rs.secret_access_key_set,
            "{rs:?}"
        );
        assert!(!rs.session_token_set);
        assert_eq!(rs.cluster_identifier, CLUSTER);
        assert_eq!(rs.secret_arn, SECRET);
        assert_eq!(rs.endpoint_url, standin.url());
    }
    let listed = w
        .sources()
        .list_sources(req(&token, pb::ListSourcesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sources.len(), 1, "the refused sources were not stored");
    let got = w
        .sources()
        .get_source(req(
            &token,
            pb::GetSourceRequest {
                id: "rs".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);
    for answer in [
        format!("{created:?}"),
        format!("{listed:?}"),
        format!("{got:?}"),
    ] {
        assert!(!answer.contains(SECRET_KEY), "{answer}");
    }
    // The catalog holds it sealed only.
    let record = w
        .store
        .get_source("acme", "rs")
        .await
        .unwrap()
        .expect("stored")
        .value;
    assert_eq!(
        record.credentials.fields,
        vec!["/kind/redshift/secret_access_key".to_string()]
    );
    let stored = format!("{record:?} {}", record.spec);
    assert!(!stored.contains(SECRET_KEY), "{stored}");

    // Its tables, through the Data API's ListTables.
    let tables = w
        .sources()
        .list_tables(req(
            &token,
            pb::ListTablesRequest {
                source: "rs".into(),
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

    // An update that leaves the key empty keeps the stored one (the connection test passes
    // again with it); a stale secret on update is refused and the source stays as it was.
    let mut update = got.clone();
    redshift_of(&mut update).database = w.pg.database.clone();
    let updated = w
        .sources()
        .update_source(req(
            &token,
            pb::UpdateSourceRequest {
                source: Some(update.clone()),
                expected_version: got.version,
            },
        ))
        .await
        .expect("updated with the stored key")
        .into_inner();
    assert!(updated.version > got.version);
    let mut stale_update = updated.clone();
    redshift_of(&mut stale_update).secret_arn = STALE_SECRET.into();
    refused(
        w.sources()
            .update_source(req(
                &token,
                pb::UpdateSourceRequest {
                    source: Some(stale_update),
                    expected_version: 0,
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    let tested = w
        .sources()
        .test_source(req(
            &token,
            pb::TestSourceRequest {
                id: "rs".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(tested.ok, "{tested:?}");
}
