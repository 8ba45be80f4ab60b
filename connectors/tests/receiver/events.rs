//! `/import` and the receiver's event delete.

use std::collections::BTreeSet;

use bytes::Bytes;
use ferry_connectors::mixpanel::{
    Auth, Batch, BatchBuilder, BatchRecord, DestinationConfig, MixpanelClient, MixpanelError,
    RetryPolicy, RetryReason, Secret,
};
use ferry_core::{Classify, ErrorClass};
use ferry_receiver::config::FaultConfig;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn a_valid_batch_is_stored_whole() {
    let rx = start_receiver().await;
    let outcome = client(&rx)
        .import_events(events_batch(0..50))
        .await
        .expect("import");
    assert_eq!(
        (outcome.records, outcome.accepted, outcome.attempts),
        (50, 50, 1)
    );
    assert!(outcome.failed.is_empty() && outcome.retried_reasons.is_empty());
    assert_eq!(outcome.accepted_indices().count(), 50);
    let expected: BTreeSet<String> = (0..50).map(insert_id).collect();
    assert_eq!(stored_insert_ids(&rx).await, expected);

    // Project-token auth (Basic token:, empty password) works too.
    let by_token = client_with(&rx, Auth::ProjectToken(Secret::new(TOKEN)), fast_settings());
    let outcome = by_token
        .import_events(events_batch(50..60))
        .await
        .expect("import with token");
    assert_eq!(outcome.accepted, 10);
    assert_eq!(state(&rx).await["event_count"], 60);
}

#[tokio::test]
async fn invalid_events_fail_one_by_one_and_the_rest_are_stored() {
    let rx = start_receiver().await;
    let bad: [(usize, serde_json::Value); 3] = [
        (2, json!({"time": 1000})),
        (5, json!({"distinct_id": "undefined"})),
        (8, json!({"time": "yesterday"})),
    ];
    let records = (0..10).map(|i| {
        let json = match bad.iter().find(|(b, _)| *b == i) {
            Some((_, extra)) => event_with(i, extra.clone()),
            None => event(i),
        };
        (json, Some(insert_id(i)))
    });
    let outcome = client(&rx)
        .import_events(batch_of(records))
        .await
        .expect("a 400 partial success is not an error");
    assert_eq!(outcome.accepted, 7);
    assert_eq!(outcome.attempts, 1, "a 400 is never retried");
    let failed: Vec<(usize, Option<&str>)> = outcome
        .failed
        .iter()
        .map(|f| (f.index_in_batch, f.insert_id.as_deref()))
        .collect();
    assert_eq!(
        failed,
        vec![
            (2, Some("ev-000002")),
            (5, Some("ev-000005")),
            (8, Some("ev-000008"))
        ]
    );
    for f in &outcome.failed {
        assert!(f.field.starts_with("properties."), "{f:?}");
        assert!(!f.message.is_empty());
    }
    assert_eq!(
        outcome.accepted_indices().collect::<Vec<_>>(),
        vec![0, 1, 3, 4, 6, 7, 9]
    );
    let expected: BTreeSet<String> = [0, 1, 3, 4, 6, 7, 9].into_iter().map(insert_id).collect();
    assert_eq!(stored_insert_ids(&rx).await, expected);
}

#[tokio::test]
async fn under_heavy_faults_every_record_is_stored_exactly_once() {
    let rx = start_receiver().await;
    set_faults(
        &rx,
        &FaultConfig {
            seed: 20260101,
            error_429: 0.12,
            error_502: 0.08,
            error_503: 0.08,
            slow: 0.08,
            slow_ms: 20,
            // Longer than the client's 400 ms timeout: the client gives up first and retries.
            timeout: 0.06,
            timeout_ms: 1500,
            drop: 0.1,
            drop_after_store: 0.12,
        },
    )
    .await;
    let client = client(&rx);
    let mut builder = BatchBuilder::with_limits(25, usize::MAX);
    let mut batches = Vec::new();
    for i in 0..1000 {
        batches.extend(builder.push(event(i), Some(insert_id(i))).expect("fits"));
    }
    batches.extend(builder.flush());
    assert_eq!(batches.len(), 40);
    let sends: Vec<_> = batches
        .into_iter()
        .map(|b| {
            tokio::spawn({
                let client = client.clone();
                async move { client.import_events(b).await }
            })
        })
        .collect();
    let mut accepted = 0;
    let mut retried = Vec::new();
    for send in sends {
        let outcome = send
            .await
            .expect("task")
            .expect("retries absorb the faults");
        assert!(
            outcome.failed.is_empty() && outcome.unattributed_failures.is_empty(),
            "{outcome:?}"
        );
        assert_eq!(outcome.attempts as usize, outcome.retried_reasons.len() + 1);
        accepted += outcome.accepted;
        retried.extend(outcome.retried_reasons);
    }
    set_faults(&rx, &FaultConfig::default()).await;
    assert_eq!(accepted, 1000, "each record reported accepted exactly once");
    assert!(retried.len() >= 20, "faults were hit: {retried:?}");
    for kind in [
        RetryReason::RateLimited,
        RetryReason::ServerError(502),
        RetryReason::ServerError(503),
        RetryReason::Connection,
    ] {
        assert!(retried.contains(&kind), "{kind:?} missing from {retried:?}");
    }
    let expected: BTreeSet<String> = (0..1000).map(insert_id).collect();
    assert_eq!(stored_insert_ids(&rx).await, expected);
    assert_eq!(
        state(&rx).await["event_count"],
        1000,
        "one stored event per distinct insert id"
    );
    let faults = &stats(&rx).await["faults_injected"];
    assert!(
        faults["drop_after_store"].as_u64().unwrap_or(0) > 0,
        "the stored-then-dropped case was exercised: {faults}"
    );
}

#[tokio::test]
async fn timeouts_are_retried() {
    let rx = start_receiver().await;
    set_faults(
        &rx,
        &FaultConfig {
            seed: 3,
            timeout: 0.5,
            timeout_ms: 1500,
            ..FaultConfig::default()
        },
    )
    .await;
    let client = client(&rx);
    let mut reasons = Vec::new();
    for chunk in 0..6 {
        let outcome = client
            .import_events(events_batch(chunk * 10..chunk * 10 + 10))
            .await
            .expect("import");
        assert_eq!(outcome.accepted, 10);
        reasons.extend(outcome.retried_reasons);
    }
    assert!(reasons.contains(&RetryReason::Timeout), "{reasons:?}");
    assert_eq!(state(&rx).await["event_count"], 60);
}

#[tokio::test]
async fn bad_credentials_are_fatal() {
    let rx = start_receiver().await;
    let wrong_secret = Auth::ServiceAccount {
        user: SA_USER.into(),
        secret: Secret::new("not-the-secret"),
    };
    let err = client_with(&rx, wrong_secret, fast_settings())
        .import_events(events_batch(0..3))
        .await
        .unwrap_err();
    assert!(
        matches!(err, MixpanelError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Fatal);
    assert!(!err.to_string().contains("not-the-secret"));
    assert!(err.to_string().contains("credentials"), "{err}");

    let wrong_token = client_with(
        &rx,
        Auth::ProjectToken(Secret::new("tok-nope")),
        fast_settings(),
    );
    assert!(matches!(
        wrong_token.import_events(events_batch(0..3)).await,
        Err(MixpanelError::Unauthorized { .. })
    ));

    let other_project = MixpanelClient::new(
        DestinationConfig::bundled_receiver(rx.base_url(), "9999", service_account()),
        fast_settings(),
    )
    .unwrap();
    assert!(matches!(
        other_project.import_events(events_batch(0..3)).await,
        Err(MixpanelError::Unauthorized { .. })
    ));
    assert_eq!(state(&rx).await["event_count"], 0);
}

#[tokio::test]
async fn persistent_server_errors_exhaust_retries_as_a_retryable_error() {
    let rx = start_receiver().await;
    set_faults(
        &rx,
        &FaultConfig {
            error_503: 1.0,
            ..FaultConfig::default()
        },
    )
    .await;
    let mut settings = fast_settings();
    settings.retry = RetryPolicy {
        max_attempts: 3,
        ..settings.retry
    };
    let err = client_with(&rx, service_account(), settings)
        .import_events(events_batch(0..3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MixpanelError::RetriesExhausted {
                attempts: 3,
                last: RetryReason::ServerError(503),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Retryable);
}

#[tokio::test]
async fn the_builder_splits_2001_records_into_two_requests() {
    let rx = start_receiver().await;
    let client = client(&rx);
    let mut builder = BatchBuilder::new();
    let mut sent = Vec::new();
    for i in 0..2001 {
        if let Some(batch) = builder.push(event(i), Some(insert_id(i))).expect("fits") {
            sent.push(client.import_events(batch).await.expect("import"));
        }
    }
    if let Some(batch) = builder.flush() {
        sent.push(client.import_events(batch).await.expect("import"));
    }
    assert_eq!(
        sent.iter().map(|o| o.accepted).collect::<Vec<_>>(),
        vec![2000, 1]
    );
    let stats = stats(&rx).await;
    assert_eq!(
        stats["projects"][PROJECT]["requests"]["import"]["200"], 2,
        "{stats}"
    );
    assert_eq!(state(&rx).await["event_count"], 2001);
}

#[tokio::test]
async fn records_summing_over_10_mib_are_split_by_size() {
    let rx = start_receiver().await;
    // 12 events of ~900 KB: 11 fit in 10 MiB, the 12th starts a second batch. (The receiver
    // truncates the long string, as Mixpanel does, so the store stays small.)
    let blob = "x".repeat(900_000);
    let mut builder = BatchBuilder::new();
    let mut batches = Vec::new();
    for i in 0..12 {
        batches.extend(
            builder
                .push(event_with(i, json!({"blob": blob})), Some(insert_id(i)))
                .expect("under 1 MiB"),
        );
    }
    batches.extend(builder.flush());
    assert_eq!(
        batches.iter().map(Batch::len).collect::<Vec<_>>(),
        vec![11, 1]
    );
    assert!(batches[0].body_len() <= ferry_core::ingest::limits::MAX_REQUEST_BYTES);
    let client = client(&rx);
    for batch in batches {
        let outcome = client.import_events(batch).await.expect("import");
        assert!(outcome.failed.is_empty(), "{outcome:?}");
    }
    assert_eq!(state(&rx).await["event_count"], 12);
}

#[tokio::test]
async fn a_413_splits_the_batch_in_half_and_sends_both() {
    let rx = start_receiver().await;
    // Built without the builder, so it breaks the 2000-record limit and draws a 413.
    let oversized = events_batch(0..2001);
    let outcome = client(&rx)
        .import_events(oversized)
        .await
        .expect("split and sent");
    assert_eq!((outcome.records, outcome.accepted), (2001, 2001));
    assert_eq!(
        outcome.attempts, 3,
        "the refused request and its two halves"
    );
    let stats = stats(&rx).await;
    assert_eq!(
        stats["projects"][PROJECT]["requests"]["import"]["413"], 1,
        "{stats}"
    );
    assert_eq!(state(&rx).await["event_count"], 2001);
}

#[tokio::test]
async fn mirror_deletes_go_to_the_receiver_only_when_enabled() {
    let rx = start_receiver().await;
    let client = client(&rx);
    client
        .import_events(events_batch(0..5))
        .await
        .expect("import");
    let mut deletes: Vec<(Bytes, Option<String>)> = [1, 3]
        .into_iter()
        .map(|i| (event(i), Some(insert_id(i))))
        .collect();
    deletes.push((
        Bytes::from_static(br#"{"event":"x","properties":{}}"#),
        None,
    ));
    let outcome = client
        .delete_events(batch_of(deletes))
        .await
        .expect("delete");
    assert_eq!(
        (outcome.deleted, outcome.not_found, outcome.batch.accepted),
        (2, 0, 2)
    );
    assert_eq!(outcome.batch.failed.len(), 1);
    assert_eq!(outcome.batch.failed[0].index_in_batch, 2);
    let expected: BTreeSet<String> = [0, 2, 4].into_iter().map(insert_id).collect();
    assert_eq!(stored_insert_ids(&rx).await, expected);

    let mut plain = DestinationConfig::bundled_receiver(rx.base_url(), PROJECT, service_account());
    plain.receiver_extensions = false;
    let plain = MixpanelClient::new(plain, fast_settings()).unwrap();
    let one = Batch::from_records(vec![BatchRecord {
        json: event(0),
        key: Some(insert_id(0)),
    }]);
    let err = plain.delete_events(one).await.unwrap_err();
    assert!(
        matches!(err, MixpanelError::ExtensionUnavailable { .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Fatal);
    assert_eq!(state(&rx).await["event_count"], 3);
}
