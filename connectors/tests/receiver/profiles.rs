//! `/engage` and `/groups`: sent uncompressed, strict, failures per update.

use bytes::Bytes;
use ferry_connectors::mixpanel::{Auth, MixpanelError, RecordEndpoint, Secret};
use ferry_receiver::config::FaultConfig;
use serde_json::{json, Value};

use crate::common::*;

fn update(value: Value, key: &str) -> (Bytes, Option<String>) {
    (Bytes::from(value.to_string()), Some(key.to_owned()))
}

#[tokio::test]
async fn user_profile_updates_apply_and_bad_ones_fail_per_row() {
    let rx = start_receiver().await;
    let client = client(&rx);
    let ok = batch_of([
        update(
            json!({"$distinct_id": "u1", "$set": {"plan": "pro", "seats": 3}}),
            "u1",
        ),
        update(
            json!({"$distinct_id": "u2", "$set": {"plan": "free"}}),
            "u2",
        ),
    ]);
    let outcome = client.update_user_profiles(ok).await.expect("engage");
    assert_eq!((outcome.accepted, outcome.failed.len()), (2, 0));

    let mixed = batch_of([
        update(json!({"$distinct_id": "u1", "$unset": ["seats"]}), "u1"),
        update(
            json!({"$distinct_id": "u3", "$add": {"logins": "many"}}),
            "u3",
        ),
        update(json!({"$set": {"plan": "x"}}), "nobody"),
    ]);
    let outcome = client
        .update_user_profiles(mixed)
        .await
        .expect("a partial success is not an error");
    assert_eq!(outcome.accepted, 1);
    assert_eq!(outcome.attempts, 1);
    let failed: Vec<_> = outcome
        .failed
        .iter()
        .map(|f| (f.index_in_batch, f.distinct_id.as_deref(), f.field.as_str()))
        .collect();
    assert_eq!(failed[0], (1, Some("u3"), "$add.logins"));
    assert_eq!(failed[1].0, 2);
    assert_eq!(
        failed[1].1,
        Some("nobody"),
        "the batch key stands in when the server names no id"
    );

    let state = state(&rx).await;
    let u1 = &state["profiles"]["u1"];
    assert_eq!(u1["properties"]["plan"], "pro", "{u1}");
    assert!(u1["properties"].get("seats").is_none(), "{u1}");
    assert!(state["profiles"].get("u3").is_none());
}

#[tokio::test]
async fn group_profile_updates_apply_and_unknown_group_keys_fail_per_row() {
    let rx = start_receiver().await;
    let outcome = client(&rx)
        .send(
            RecordEndpoint::Groups,
            batch_of([
                update(json!({"$group_key": "company_id", "$group_id": "acme", "$set": {"tier": "gold"}}), "acme"),
                update(json!({"$group_key": "team_id", "$group_id": "t1", "$set": {"x": 1}}), "t1"),
            ]),
        )
        .await
        .expect("groups");
    assert_eq!(outcome.accepted, 1);
    assert_eq!(outcome.failed.len(), 1);
    assert_eq!(outcome.failed[0].index_in_batch, 1);
    assert_eq!(outcome.failed[0].field, "$group_key");
    let groups = state(&rx).await["groups"].clone();
    assert_eq!(groups.as_array().map(Vec::len), Some(1), "{groups}");
    assert_eq!(groups[0]["group_id"], "acme");
    assert_eq!(groups[0]["properties"]["tier"], "gold");
}

#[tokio::test]
async fn profile_updates_survive_faults_and_token_auth_works() {
    let rx = start_receiver().await;
    set_faults(
        &rx,
        &FaultConfig {
            seed: 11,
            error_429: 0.3,
            drop: 0.2,
            drop_after_store: 0.2,
            ..FaultConfig::default()
        },
    )
    .await;
    let client = client_with(&rx, Auth::ProjectToken(Secret::new(TOKEN)), fast_settings());
    let mut accepted = 0;
    for chunk in 0..5 {
        let updates = (0..20).map(|i| {
            let id = format!("u{}", chunk * 20 + i);
            update(
                json!({"$token": TOKEN, "$distinct_id": id, "$set": {"n": i}}),
                &id,
            )
        });
        accepted += client
            .update_user_profiles(batch_of(updates))
            .await
            .expect("engage")
            .accepted;
    }
    set_faults(&rx, &FaultConfig::default()).await;
    assert_eq!(accepted, 100);
    assert_eq!(
        state(&rx).await["profiles"].as_object().map(|m| m.len()),
        Some(100)
    );
}

#[tokio::test]
async fn a_malformed_profile_body_is_refused_as_a_whole() {
    let rx = start_receiver().await;
    let not_json = batch_of([(Bytes::from_static(b"{not json"), None)]);
    let err = client(&rx)
        .update_user_profiles(not_json)
        .await
        .unwrap_err();
    assert!(
        matches!(err, MixpanelError::Rejected { status: 400, .. }),
        "{err:?}"
    );
}
