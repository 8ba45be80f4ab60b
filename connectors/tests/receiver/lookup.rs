//! `PUT /lookup-tables/{id}`: replace all or nothing.

use ferry_connectors::mixpanel::{Auth, MixpanelError, RetryReason, Secret};
use ferry_core::{Classify, ErrorClass};
use ferry_receiver::config::FaultConfig;

use crate::common::*;

const PLANS: &str = "plan_id,name,price\n1,Free,0\n2,Pro,49.5\n3,Enterprise,\n";

#[tokio::test]
async fn a_lookup_table_is_replaced() {
    let rx = start_receiver().await;
    let outcome = client(&rx)
        .replace_lookup_table(LOOKUP_TABLE, PLANS)
        .await
        .expect("replace");
    assert_eq!(outcome.rows, Some(3));
    assert_eq!(outcome.attempts, 1);
    let table = state(&rx).await["lookup_tables"][LOOKUP_TABLE].clone();
    assert_eq!(table["name"], "Plans");
    assert!(table["table"].to_string().contains("Enterprise"), "{table}");
}

#[tokio::test]
async fn an_unknown_table_is_a_fatal_error_naming_it() {
    let rx = start_receiver().await;
    let err = client(&rx)
        .replace_lookup_table("no-such-table", PLANS)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MixpanelError::LookupTableNotFound { table_id } if table_id == "no-such-table"),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-table"));
    assert_eq!(err.class(), ErrorClass::Fatal);
}

#[tokio::test]
async fn bad_rows_refuse_the_whole_table_and_are_listed() {
    let rx = start_receiver().await;
    let client = client(&rx);
    client
        .replace_lookup_table(LOOKUP_TABLE, PLANS)
        .await
        .expect("first version");
    let duplicate_keys = "plan_id,name\n1,Free\n1,Again\n,Blank\n";
    let err = client
        .replace_lookup_table(LOOKUP_TABLE, duplicate_keys)
        .await
        .unwrap_err();
    let MixpanelError::LookupRejected { table_id, rows, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(table_id, LOOKUP_TABLE);
    assert!(!rows.is_empty(), "{err}");
    assert!(rows.iter().all(|r| r.index.is_some()), "{rows:?}");
    assert_eq!(err.class(), ErrorClass::Fatal);
    let table = state(&rx).await["lookup_tables"][LOOKUP_TABLE]["table"].to_string();
    assert!(
        table.contains("Enterprise"),
        "the previous contents stay: {table}"
    );
}

#[tokio::test]
async fn rate_limits_are_waited_out_and_tokens_are_refused_before_sending() {
    let rx = start_receiver().await;
    set_faults(
        &rx,
        &FaultConfig {
            seed: 5,
            error_429: 0.7,
            ..FaultConfig::default()
        },
    )
    .await;
    let outcome = client(&rx)
        .replace_lookup_table(LOOKUP_TABLE, PLANS)
        .await
        .expect("replace after backoff");
    set_faults(&rx, &FaultConfig::default()).await;
    assert_eq!(outcome.rows, Some(3));
    assert!(outcome
        .retried_reasons
        .iter()
        .all(|r| *r == RetryReason::RateLimited));
    assert_eq!(outcome.attempts as usize, outcome.retried_reasons.len() + 1);

    let by_token = client_with(&rx, Auth::ProjectToken(Secret::new(TOKEN)), fast_settings());
    let err = by_token
        .replace_lookup_table(LOOKUP_TABLE, PLANS)
        .await
        .unwrap_err();
    assert!(
        matches!(err, MixpanelError::ServiceAccountRequired { .. }),
        "{err:?}"
    );
}
