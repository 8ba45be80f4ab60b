//! `ferry nodes …` and `ferry assignments list`: the cluster's nodes, their load and syncs,
//! and draining a node (operator token).

use std::time::{Duration, Instant};

use clap::Subcommand;
use ferry_proto::admin::v1 as pb;
use serde_json::{json, Value};

use super::client::Client;
use super::error::{CliError, ExitKind};
use super::output::{count, emit, fields, list, print_json_line, Format};
use super::{json, Connection};

#[derive(Subcommand)]
pub enum NodesCommand {
    /// Every live node: address, capacity, runs going, syncs assigned, state, coordinator.
    List,
    /// One node with the syncs assigned to it and their runs in progress.
    Get { node: String },
    /// Drain a node: it takes no more syncs, each of its syncs moves once its run ends (runs
    /// still going at the node's drain timeout are cancelled and resume elsewhere from their
    /// last commit), and the node exits once empty.
    Drain {
        node: String,
        /// How long its runs may still take (e.g. 90s, 10m); default: the node's own
        /// --drain-timeout.
        #[arg(long, value_parser = super::parse_duration)]
        drain_timeout: Option<Duration>,
        /// Follow the node until it holds nothing and has left the cluster.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
pub enum AssignmentsCommand {
    /// Where every placed sync is assigned, and where it runs now.
    List,
}

/// How often `drain --wait` looks at the node.
const WAIT_EVERY: Duration = Duration::from_secs(1);

pub async fn run_nodes(conn: &Connection, command: NodesCommand) -> Result<(), CliError> {
    let client = conn.connect()?;
    let out = conn.output;
    match command {
        NodesCommand::List => {
            let resp = client
                .call(
                    client
                        .cluster()
                        .list_nodes(client.request(pb::ListNodesRequest {})),
                )
                .await?;
            emit(
                out,
                json!({
                    "coordinator": resp.coordinator,
                    "nodes": resp.nodes.iter().map(node_json).collect::<Vec<_>>(),
                }),
                || nodes_table(&resp.nodes),
            );
        }
        NodesCommand::Get { node } => {
            let detail = get(&client, &node).await?;
            emit(out, detail_json(&detail), || detail_text(&detail));
        }
        NodesCommand::Drain {
            node,
            drain_timeout,
            wait,
        } => {
            let timeout_seconds = drain_timeout
                .map(|d| u32::try_from(d.as_secs().max(1)).unwrap_or(u32::MAX))
                .unwrap_or(0);
            let drained = client
                .call(
                    client
                        .cluster()
                        .drain_node(client.request(pb::DrainNodeRequest {
                            node_id: node.clone(),
                            timeout_seconds,
                        })),
                )
                .await?;
            if !wait {
                emit(out, node_json(&drained), || {
                    format!(
                        "node {} is draining ({} syncs assigned, {} runs going); it exits once empty",
                        drained.id, drained.assigned_syncs, drained.load
                    )
                });
                return Ok(());
            }
            return follow_drain(&client, out, &node).await;
        }
    }
    Ok(())
}

pub async fn run_assignments(
    conn: &Connection,
    command: AssignmentsCommand,
) -> Result<(), CliError> {
    let client = conn.connect()?;
    match command {
        AssignmentsCommand::List => {
            let resp = client
                .call(
                    client
                        .cluster()
                        .list_assignments(client.request(pb::ListAssignmentsRequest {})),
                )
                .await?;
            emit(
                conn.output,
                resp.assignments
                    .iter()
                    .map(assigned_json)
                    .collect::<Vec<_>>()
                    .into(),
                || {
                    list(
                        &["tenant", "sync", "node", "running on"],
                        resp.assignments.iter().map(|a| {
                            vec![
                                a.tenant.clone(),
                                a.sync.clone(),
                                a.node_id.clone(),
                                dash(&a.running_on),
                            ]
                        }),
                    )
                },
            );
        }
    }
    Ok(())
}

async fn get(client: &Client, node: &str) -> Result<pb::NodeDetail, CliError> {
    client
        .call(
            client
                .cluster()
                .get_node(client.request(pb::GetNodeRequest {
                    node_id: node.to_owned(),
                })),
        )
        .await
}

/// Polls the node until it is gone (NOT_FOUND: it left the cluster), printing each change: a
/// line for people, a JSON line with `-o json`.
async fn follow_drain(client: &Client, out: Format, node: &str) -> Result<(), CliError> {
    let started = Instant::now();
    let mut last: Option<(u32, u32)> = None;
    loop {
        match get(client, node).await {
            Ok(detail) => {
                let n = detail.node.unwrap_or_default();
                let now = (n.assigned_syncs, n.load);
                if last != Some(now) {
                    match out {
                        Format::Json => print_json_line(&node_json(&n)),
                        Format::Table => println!(
                            "{}: {}, {} syncs assigned, {} runs going ({} s)",
                            n.id,
                            state(n.state),
                            n.assigned_syncs,
                            n.load,
                            started.elapsed().as_secs()
                        ),
                    }
                    last = Some(now);
                }
            }
            Err(e) if e.kind == ExitKind::NotFound => {
                let secs = started.elapsed().as_secs_f64();
                match out {
                    Format::Json => print_json_line(
                        &json!({"id": node, "state": "gone", "waited_seconds": secs}),
                    ),
                    Format::Table => {
                        println!("{node}: drained and left the cluster after {secs:.1} s")
                    }
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(WAIT_EVERY).await;
    }
}

fn state(v: i32) -> String {
    json::enum_short(
        pb::NodeState::try_from(v)
            .unwrap_or(pb::NodeState::Unspecified)
            .as_str_name(),
        "NODE_STATE_",
    )
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_owned()
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn node_json(n: &pb::Node) -> Value {
    json!({
        "id": n.id,
        "address": n.address,
        "capacity": n.capacity,
        "load": n.load,
        "assigned_syncs": n.assigned_syncs,
        "coordinator": n.coordinator,
        "state": state(n.state),
        "joined_at": n.joined_at,
        "lease_ttl_seconds": n.lease_ttl_seconds,
        "drain_requested_at": n.drain_requested_at,
        "drain_timeout_seconds": n.drain_timeout_seconds,
    })
}

fn assigned_json(a: &pb::AssignedSync) -> Value {
    let mut v = json!({
        "tenant": a.tenant,
        "sync": a.sync,
        "node_id": a.node_id,
        "running_on": a.running_on,
    });
    if !a.run_id.is_empty() {
        v["run"] = json!({
            "run_id": a.run_id,
            "state": json::run_state(a.run_state),
            "rows_read": a.rows_read,
            "records_sent": a.records_sent,
            "started_at": a.run_started_at,
        });
    }
    v
}

fn detail_json(d: &pb::NodeDetail) -> Value {
    let mut v = d.node.as_ref().map(node_json).unwrap_or_default();
    v["syncs"] = d.syncs.iter().map(assigned_json).collect::<Vec<_>>().into();
    v
}

fn nodes_table(nodes: &[pb::Node]) -> String {
    list(
        &[
            "node",
            "address",
            "capacity",
            "load",
            "syncs",
            "state",
            "coordinator",
        ],
        nodes.iter().map(|n| {
            vec![
                n.id.clone(),
                n.address.clone(),
                n.capacity.to_string(),
                n.load.to_string(),
                n.assigned_syncs.to_string(),
                state(n.state),
                yes_no(n.coordinator),
            ]
        }),
    )
}

fn detail_text(d: &pb::NodeDetail) -> String {
    let n = d.node.clone().unwrap_or_default();
    let ttl = match n.lease_ttl_seconds {
        0 => String::new(),
        t if t < 0 => "expired".into(),
        t => format!("{t} s"),
    };
    let mut text = fields(&[
        ("node", n.id.clone()),
        ("address", n.address.clone()),
        ("state", state(n.state)),
        ("coordinator", yes_no(n.coordinator)),
        ("capacity", n.capacity.to_string()),
        ("load", format!("{} runs going", n.load)),
        ("joined", n.joined_at.clone()),
        ("lease ttl", ttl),
        ("drain asked", n.drain_requested_at.clone()),
    ]);
    text.push_str("\n\n");
    if d.syncs.is_empty() {
        text.push_str("no syncs assigned");
    } else {
        text.push_str(&list(
            &[
                "tenant",
                "sync",
                "run",
                "state",
                "rows read",
                "records sent",
            ],
            d.syncs.iter().map(|s| {
                let running = !s.run_id.is_empty();
                vec![
                    s.tenant.clone(),
                    s.sync.clone(),
                    dash(&s.run_id),
                    if running {
                        json::run_state(s.run_state)
                    } else {
                        "-".into()
                    },
                    if running {
                        count(s.rows_read)
                    } else {
                        "-".into()
                    },
                    if running {
                        count(s.records_sent)
                    } else {
                        "-".into()
                    },
                ]
            }),
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, state: pb::NodeState, coordinator: bool) -> pb::Node {
        pb::Node {
            id: id.into(),
            address: format!("10.0.0.1:{}", id.len()),
            capacity: 1,
            load: 2,
            assigned_syncs: 5,
            coordinator,
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn the_nodes_table_has_the_documented_columns() {
        let text = nodes_table(&[
            node("node-1", pb::NodeState::Live, true),
            node("node-2", pb::NodeState::Draining, false),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NODE",
                "ADDRESS",
                "CAPACITY",
                "LOAD",
                "SYNCS",
                "STATE",
                "COORDINATOR"
            ]
        );
        let second: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            second,
            ["node-2", "10.0.0.1:6", "1", "2", "5", "draining", "no"]
        );
        assert_eq!(
            node_json(&node("n", pb::NodeState::Live, true))["state"],
            "live"
        );
    }

    #[test]
    fn a_nodes_syncs_show_their_runs() {
        let detail = pb::NodeDetail {
            node: Some(node("node-1", pb::NodeState::Live, false)),
            syncs: vec![
                pb::AssignedSync {
                    tenant: "acme".into(),
                    sync: "orders".into(),
                    node_id: "node-1".into(),
                    running_on: "node-1".into(),
                    run_id: "r1".into(),
                    run_state: pb::RunState::Running as i32,
                    rows_read: 12_345,
                    ..Default::default()
                },
                pb::AssignedSync {
                    tenant: "acme".into(),
                    sync: "idle".into(),
                    node_id: "node-1".into(),
                    ..Default::default()
                },
            ],
        };
        let text = detail_text(&detail);
        assert!(text.contains("orders  r1   running  12,345"), "{text}");
        assert!(text.contains("idle    -"), "{text}");
        let v = detail_json(&detail);
        assert_eq!(v["syncs"][0]["run"]["rows_read"], 12_345);
        assert!(v["syncs"][1].get("run").is_none());
    }
}
