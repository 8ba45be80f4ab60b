//! The `Cluster` service on a node without etcd (embedded): it answers with itself as the one
//! node, coordinator of itself, with every active sync assigned to it; it cannot be drained;
//! and every call needs the operator token. (A real cluster's answers, and drains, are tested
//! with `ferry node --etcd` processes in node/tests/cluster_ops.rs.)

mod admin_common;

use admin_common::{orders_sync, refused, req, world, OPERATOR, ORDERS};
use ferry_proto::admin::v1 as pb;
use ferry_tests::postgres::PgConfig;
use pb::cluster_client::ClusterClient;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_node_shows_itself_refuses_a_drain_and_tenant_tokens() {
    let Some(w) = world(PgConfig::default()).await else {
        return;
    };
    w.pg.sql(ORDERS).unwrap();
    let token = w.tenant_with_token("acme").await;
    w.create_source(&token, w.postgres("wh")).await;
    w.create_sync(&token, orders_sync("orders", "wh")).await;
    w.create_sync(&token, orders_sync("paused", "wh")).await;
    w.syncs()
        .pause_sync(req(
            &token,
            pb::PauseSyncRequest {
                id: "paused".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let mut cluster = ClusterClient::new(w.channel.clone());

    let nodes = cluster
        .list_nodes(req(OPERATOR, pb::ListNodesRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(nodes.coordinator, "test-node");
    assert_eq!(nodes.nodes.len(), 1, "{nodes:?}");
    let me = &nodes.nodes[0];
    assert_eq!(
        (me.id.as_str(), me.capacity, me.assigned_syncs, me.load),
        ("test-node", 1, 1, 0),
        "the active sync is assigned here, the paused one is not: {me:?}"
    );
    assert!(me.coordinator);
    assert_eq!(me.state, pb::NodeState::Live as i32);
    assert!(!me.joined_at.is_empty());
    assert!(
        me.address.starts_with("127.0.0.1:") && !me.address.ends_with(":0"),
        "the bound address: {}",
        me.address
    );

    let detail = cluster
        .get_node(req(
            OPERATOR,
            pb::GetNodeRequest {
                node_id: "test-node".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let syncs: Vec<(&str, &str)> = detail
        .syncs
        .iter()
        .map(|s| (s.tenant.as_str(), s.sync.as_str()))
        .collect();
    assert_eq!(syncs, [("acme", "orders")]);
    assert!(detail.syncs[0].run_id.is_empty(), "nothing runs");

    let assignments = cluster
        .list_assignments(req(OPERATOR, pb::ListAssignmentsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .assignments;
    assert_eq!(assignments.len(), 1);
    assert_eq!(assignments[0].node_id, "test-node");

    refused(
        cluster
            .get_node(req(
                OPERATOR,
                pb::GetNodeRequest {
                    node_id: "elsewhere".into(),
                },
            ))
            .await,
        Code::NotFound,
    );
    let drain = refused(
        cluster
            .drain_node(req(
                OPERATOR,
                pb::DrainNodeRequest {
                    node_id: "test-node".into(),
                    timeout_seconds: 0,
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(drain.message().contains("no --etcd"), "{}", drain.message());

    // A tenant's token sees nothing of the cluster.
    refused(
        cluster.list_nodes(req(&token, pb::ListNodesRequest {})).await,
        Code::PermissionDenied,
    );
    refused(
        cluster
            .get_node(req(
                &token,
                pb::GetNodeRequest {
                    node_id: "test-node".into(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    refused(
        cluster
            .drain_node(req(
                &token,
                pb::DrainNodeRequest {
                    node_id: "test-node".into(),
                    timeout_seconds: 0,
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    refused(
        cluster
            .list_assignments(req(&token, pb::ListAssignmentsRequest {}))
            .await,
        Code::PermissionDenied,
    );
    refused(
        cluster.list_nodes(tonic::Request::new(pb::ListNodesRequest {})).await,
        Code::Unauthenticated,
    );
}
