//! The `ferry` CLI end to end: the real binary against a real `ferry node --listen`, a private
//! PostgreSQL and the receiver. The whole life of a sync (tenant → token → source → sync → dry
//! run → trigger --follow → history → pause → delete with its data), then every error path with
//! its exit code and message, and the table output people read.

mod cli_common;
mod common;

use cli_common::{
    ferry_for, free_port, receiver_events, run, write, KillOnDrop, Node, OPERATOR_TOKEN,
};
use common::spawn_receiver;
use ferry_tests::postgres::{postgres_bin_dir, PgConfig, TestPostgres};
use ferry_tests::require_tool;
use serde_json::Value;

const OP: Option<&str> = Some(OPERATOR_TOKEN);
/// Rows in the orders table; one more has a NULL time and is refused before sending.
const GOOD_ROWS: u64 = 300;

fn orders_table(pg: &TestPostgres) {
    pg.sql(&format!(
        "CREATE TABLE orders (id bigint PRIMARY KEY, user_id text NOT NULL, created_at timestamptz, \
         amount numeric(10,2), inserted_at timestamptz NOT NULL);
         INSERT INTO orders SELECT i, 'user-' || (i % 7), timestamptz '2024-03-01 00:00:00+00' + i * interval '1 minute', \
         i * 1.5, timestamptz '2024-06-01 00:00:00+00' + i * interval '1 second' FROM generate_series(1, {GOOD_ROWS}) AS i;
         INSERT INTO orders VALUES (100000, 'user-x', NULL, 1, timestamptz '2024-06-02 00:00:00+00');"
    ))
    .unwrap();
}

#[test]
fn a_sync_lives_its_whole_life_through_the_cli() {
    if !require_tool("postgres", postgres_bin_dir().is_some()) {
        return;
    }
    let pg = TestPostgres::start(PgConfig::default()).expect("postgres starts");
    orders_table(&pg);
    let dir = tempfile::tempdir().unwrap();
    let (rx, rx_url) = spawn_receiver([
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.path().join("rx").to_str().unwrap(),
        "--project",
        "1:tok1",
        "--service-account",
        "sa:sa-secret",
    ]);
    let _rx = KillOnDrop(rx);
    let node = Node::start();

    // The operator creates the tenant and a token for it; the token's secret alone is on stdout.
    let sa_secret = write(dir.path(), "sa-secret", "sa-secret\n");
    let tenant = node.json(
        OP,
        &[
            "tenants",
            "create",
            "acme",
            "--name",
            "Acme",
            "--project-id",
            "1",
            "--base-url",
            &rx_url,
            "--receiver-extensions",
            "--service-account-user",
            "sa",
            "--service-account-secret-file",
            &sa_secret,
        ],
    );
    assert_eq!(tenant["id"], "acme");
    assert_eq!(tenant["credentials"]["service_account"]["secret_set"], true);
    assert!(
        !tenant.to_string().contains("sa-secret"),
        "a credential came back: {tenant}"
    );
    let created = node.cli(
        OP,
        &["tokens", "create", "--tenant", "acme", "--name", "ci"],
    );
    assert_eq!(created.code, 0, "{}", created.stderr);
    let token = created.stdout.trim().to_owned();
    assert_eq!(created.stdout.lines().count(), 1, "{}", created.stdout);
    assert!(
        created.stderr.contains("not shown again"),
        "{}",
        created.stderr
    );
    let tok = Some(token.as_str());
    let tokens = node.json(OP, &["tokens", "list", "--tenant", "acme"]);
    assert_eq!(tokens[0]["name"], "ci");
    assert!(token.starts_with(tokens[0]["prefix"].as_str().unwrap()));

    // From here on the tenant's own token, with no --tenant: its own tenant is meant.
    let tenants = node.json(tok, &["tenants", "list"]);
    assert_eq!(tenants.as_array().unwrap().len(), 1);
    let password = write(dir.path(), "pw", &format!("{}\n", pg.password));
    let source = node.json(
        tok,
        &[
            "sources",
            "create",
            "wh",
            "--host",
            &pg.host,
            "--port",
            &pg.port.to_string(),
            "--database",
            &pg.database,
            "--user",
            &pg.user,
            "--password-file",
            &password,
            "--ssl-mode",
            "disable",
        ],
    );
    assert_eq!(
        (&source["kind"], &source["postgres"]["password_set"]),
        (&Value::from("postgres"), &Value::from(true))
    );
    assert_eq!(node.json(tok, &["sources", "test", "wh"])["ok"], true);
    // A wrong password: the source is not stored, and the message says what failed.
    let wrong = write(dir.path(), "wrong-pw", "not-the-password");
    let refused = node.cli(
        tok,
        &[
            "sources",
            "create",
            "wh2",
            "--host",
            &pg.host,
            "--port",
            &pg.port.to_string(),
            "--database",
            &pg.database,
            "--user",
            &pg.user,
            "--password-file",
            &wrong,
            "--ssl-mode",
            "disable",
        ],
    );
    refused.fails_with(1, "(authentication)");
    node.cli(tok, &["sources", "get", "wh2"])
        .fails_with(4, "not found");
    let tables = node.json(tok, &["sources", "tables", "wh"]);
    assert!(
        tables
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["schema"] == "public" && t["name"] == "orders"),
        "{tables}"
    );
    let columns = node.json(
        tok,
        &["sources", "columns", "wh", "--table", "public.orders"],
    );
    let names: Vec<_> = columns
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["id", "user_id", "created_at", "amount", "inserted_at"]
    );

    let mapping = [
        "--table",
        "public.orders",
        "--type",
        "events",
        "--event-name",
        "Order Placed",
        "--time-column",
        "created_at",
        "--distinct-id-column",
        "user_id",
        "--key-columns",
        "id",
    ];
    let preview = node.json(
        tok,
        &[
            &["sources", "preview", "wh", "--limit", "3"][..],
            &mapping[..],
        ]
        .concat(),
    );
    assert_eq!(preview["rows"].as_array().unwrap().len(), 3);
    let record = &preview["records"][0];
    assert_eq!(record["endpoint"], "import");
    assert_eq!(record["record"]["event"], "Order Placed");

    let created = node.json(
        tok,
        &[
            &[
                "syncs", "create", "orders", "--source", "wh", "--mode", "append",
            ][..],
            &["--cursor-column", "inserted_at"],
            &mapping[..],
        ]
        .concat(),
    );
    assert_eq!(created["sync"]["table_type"], "events");
    assert_eq!(created["sync"]["mapping"]["key_columns"][0], "id");

    // The table people read: stable upper-case headers, one line per sync.
    let listed = node.cli(tok, &["syncs", "list"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let lines: Vec<_> = listed.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "TENANT", "SOURCE", "TARGET", "TYPE", "MODE", "SCHEDULE", "PAUSED"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [
            "orders",
            "acme",
            "wh",
            "public.orders",
            "events",
            "append",
            "-",
            "no"
        ]
    );
    assert_eq!(lines.len(), 2);

    // Update by flags changes only what they name; `get -o json` read back by `update --file`
    // round-trips.
    let updated = node.json(
        tok,
        &[
            "syncs",
            "update",
            "orders",
            "--schedule",
            "daily",
            "--timezone",
            "Europe/Berlin",
        ],
    );
    let sync = &updated["sync"];
    assert_eq!(
        (&sync["schedule"], &sync["timezone"]),
        (&Value::from("daily"), &Value::from("Europe/Berlin"))
    );
    assert_eq!(sync["mapping"], created["sync"]["mapping"]);
    assert!(sync["version"].as_u64() > created["sync"]["version"].as_u64());
    let got = node.json(tok, &["syncs", "get", "orders"]);
    let file = write(dir.path(), "orders.json", &got.to_string());
    let again = node.json(tok, &["syncs", "update", "orders", "--file", &file]);
    for field in [
        "source",
        "table",
        "table_type",
        "mode",
        "mapping",
        "schedule",
        "timezone",
        "cursor_column",
    ] {
        assert_eq!(again["sync"][field], got[field], "{field}");
    }
    // Back to trigger-only, so no schedule fires during the test.
    let cleared = node.json(
        tok,
        &[
            "syncs",
            "update",
            "orders",
            "--schedule",
            "",
            "--timezone",
            "",
        ],
    );
    assert_eq!(cleared["sync"]["schedule"], "");

    // A dry run counts what a run would send and sends nothing.
    let dry = node.json(tok, &["syncs", "dry-run", "orders", "--samples", "2"]);
    assert_eq!(dry["rows_read"], GOOD_ROWS + 1, "{dry}");
    assert_eq!(dry["inserts"], GOOD_ROWS, "{dry}");
    assert_eq!(dry["invalid_rows"], 1, "{dry}");
    assert_eq!(dry["samples"].as_array().unwrap().len(), 2);
    assert_eq!(dry["errors"][0]["field"], "created_at", "{dry}");
    assert!(
        receiver_events(&rx_url).is_empty(),
        "a dry run sent records"
    );

    // Trigger and follow: JSON lines, the final state last.
    let followed = node.cli(
        tok,
        &["syncs", "trigger", "orders", "--follow", "-o", "json"],
    );
    assert_eq!(followed.code, 0, "{}\n{}", followed.stderr, followed.stdout);
    let updates: Vec<Value> = followed
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let last = updates.last().expect("at least one update");
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["counts"]["records_accepted"], GOOD_ROWS);
    assert_eq!(last["counts"]["rows_invalid"], 1);
    let run_id = last["run_id"].as_str().unwrap().to_owned();
    let events = receiver_events(&rx_url);
    assert_eq!(events.len() as u64, GOOD_ROWS);
    assert!(events
        .iter()
        .all(|e| e["event"] == "Order Placed"
            && e["properties"]["$warehouse_import_run_id"].is_string()));

    // History.
    let runs = node.json(tok, &["runs", "list", "orders"]);
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    let got = node.json(tok, &["runs", "get", "orders", "latest"]);
    assert_eq!(
        (&got["run_id"], &got["state"]),
        (&Value::from(run_id.as_str()), &Value::from("succeeded"))
    );
    let errors = node.json(tok, &["runs", "errors", "orders", &run_id]);
    assert_eq!(errors["errors"].as_array().unwrap().len(), 1, "{errors}");
    assert_eq!(errors["errors"][0]["reason"], "invalid_row");
    assert!(errors["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("NULL"));
    let table = node.cli(tok, &["runs", "list", "orders"]);
    assert_eq!(
        table
            .stdout
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        [
            "RUN",
            "STATE",
            "TRIGGER",
            "STARTED",
            "ELAPSED",
            "READ",
            "SENT",
            "ACKNOWLEDGED",
            "INVALID",
            "REFUSED"
        ]
    );

    // A finished run cannot be cancelled.
    node.cli(tok, &["runs", "cancel", "orders", &run_id])
        .fails_with(1, "");

    // Paused: a trigger is refused.
    assert_eq!(
        node.json(tok, &["syncs", "pause", "orders"])["paused"],
        true
    );
    node.cli(tok, &["syncs", "trigger", "orders"])
        .fails_with(1, "paused");
    assert_eq!(
        node.json(tok, &["syncs", "resume", "orders"])["paused"],
        false
    );
    node.json(tok, &["syncs", "pause", "orders"]);

    // Delete with the imported data: the receiver is empty again, and the sync is gone.
    let deleted = node.json(tok, &["syncs", "delete", "orders", "--delete-data"]);
    assert_eq!(deleted["records_deleted"], GOOD_ROWS, "{deleted}");
    assert!(receiver_events(&rx_url).is_empty());
    node.cli(tok, &["syncs", "get", "orders"])
        .fails_with(4, "not found");
    node.cli(tok, &["runs", "list", "orders"])
        .fails_with(4, "not found");
}

#[test]
fn every_error_has_its_exit_code_and_one_line_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wh.sqlite");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, plan TEXT);
             INSERT INTO users VALUES (1, 'a@x', 'pro'), (2, 'b@x', 'free');",
        )
        .unwrap();
    }
    let (rx, rx_url) = spawn_receiver([
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.path().join("rx").to_str().unwrap(),
        "--project",
        "1:tok1",
        "--service-account",
        "sa:sa-secret",
    ]);
    let _rx = KillOnDrop(rx);
    let node = Node::start();
    let good_secret = write(dir.path(), "good", "sa-secret");
    let bad_secret = write(dir.path(), "bad", "not-the-secret");
    for (tenant, secret) in [("a", &good_secret), ("b", &bad_secret)] {
        node.json(
            OP,
            &[
                "tenants",
                "create",
                tenant,
                "--name",
                tenant,
                "--project-id",
                "1",
                "--base-url",
                &rx_url,
                "--service-account-user",
                "sa",
                "--service-account-secret-file",
                secret,
            ],
        );
        // SQLite reads the node's disk, so only the operator creates it: from a TOML file
        // (the id and tenant from the command line) for one tenant, from flags for the other.
        let source = if tenant == "a" {
            let file = write(
                dir.path(),
                "source.toml",
                &format!("kind = 'sqlite'\n[sqlite]\npath = '{}'\n", db.display()),
            );
            node.json(
                OP,
                &[
                    "sources", "create", "wh", "--tenant", tenant, "--file", &file,
                ],
            )
        } else {
            node.json(
                OP,
                &[
                    "sources",
                    "create",
                    "wh",
                    "--tenant",
                    tenant,
                    "--sqlite-path",
                    db.to_str().unwrap(),
                ],
            )
        };
        assert_eq!(
            (&source["tenant"], &source["sqlite"]["path"]),
            (&Value::from(tenant), &Value::from(db.to_str().unwrap()))
        );
        node.json(
            OP,
            &[
                "syncs",
                "create",
                "users",
                "--tenant",
                tenant,
                "--source",
                "wh",
                "--table",
                "users",
                "--type",
                "user_profiles",
                "--mode",
                "full",
                "--distinct-id-column",
                "id",
            ],
        );
    }
    let token_b = node.cli(OP, &["tokens", "create", "--tenant", "b", "--name", "b"]);
    let token_b = token_b.stdout.trim();
    let b = Some(token_b);

    // No token, a wrong token.
    node.cli(None, &["syncs", "list", "--tenant", "a"])
        .fails_with(3, "no token was given — set FERRY_TOKEN or --token-file");
    node.cli(Some("fy.a.nope.nope"), &["syncs", "list", "--tenant", "a"])
        .fails_with(3, "the token was refused — set FERRY_TOKEN or --token-file");
    // A token file works like FERRY_TOKEN; a missing one is a usage error.
    let token_file = write(dir.path(), "token", &format!("{token_b}\n"));
    let by_file = run(ferry_for(&node.endpoint, None)
        .args(["syncs", "get", "users", "-o", "json", "--token-file"])
        .arg(&token_file));
    assert_eq!(by_file.code, 0, "{}", by_file.stderr);
    run(ferry_for(&node.endpoint, None).args(["syncs", "list", "--token-file", "/nonexistent/t"]))
        .fails_with(2, "--token-file /nonexistent/t");

    // Another tenant's sync, whether or not it exists; the operator-only calls.
    node.cli(b, &["syncs", "get", "users", "--tenant", "a"])
        .fails_with(3, "permission denied");
    node.cli(b, &["syncs", "get", "nothing", "--tenant", "a"])
        .fails_with(3, "permission denied");
    node.cli(
        b,
        &["tenants", "create", "c", "--name", "c", "--project-id", "2"],
    )
    .fails_with(3, "permission denied");
    // Missing objects.
    node.cli(b, &["syncs", "get", "nothing"])
        .fails_with(4, "not found");
    node.cli(b, &["runs", "get", "users", "no-such-run"])
        .fails_with(4, "not found");
    node.cli(b, &["runs", "get", "users", "latest"])
        .fails_with(4, "has no runs yet");
    node.cli(OP, &["tenants", "get", "nobody"])
        .fails_with(4, "not found");

    // A mapping naming a column the table does not have: the field and the column are named.
    let bad = node.cli(
        b,
        &[
            "syncs",
            "create",
            "bad",
            "--source",
            "wh",
            "--table",
            "users",
            "--type",
            "user_profiles",
            "--mode",
            "full",
            "--distinct-id-column",
            "user_uuid",
        ],
    );
    bad.fails_with(1, "invalid:");
    assert!(
        bad.stderr.contains("mapping.distinct_id_column") && bad.stderr.contains("user_uuid"),
        "{}",
        bad.stderr
    );
    // Bad input never reaches the node.
    node.cli(b, &["syncs", "create", "x", "--mode", "sometimes"])
        .fails_with(2, "mode: 'sometimes' is not one of");
    let file = write(dir.path(), "sync.toml", "source = 'wh'\ntabel = 'users'\n");
    node.cli(b, &["syncs", "create", "x", "--file", &file])
        .fails_with(2, "sync.toml at line 2: unknown field `tabel`");
    let usage = node.cli(b, &["syncs", "frobnicate"]);
    assert_eq!(usage.code, 2, "{}", usage.stderr);

    // A run that fails (the destination refuses tenant b's secret): --follow exits 6.
    let failed = node.cli(b, &["syncs", "trigger", "users", "--follow"]);
    failed.fails_with(6, "failed");
    assert!(
        failed.stdout.contains("state:") && failed.stdout.contains("failed"),
        "{}",
        failed.stdout
    );
    // Tenant a's identical sync with the right secret succeeds, and its profiles arrived.
    let ok = node.cli(
        OP,
        &[
            "syncs", "trigger", "users", "--tenant", "a", "--follow", "-o", "json",
        ],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let stats: Value =
        reqwest::blocking::get(format!("{rx_url}/ferry/v1/projects/1/state?events=false"))
            .unwrap()
            .json()
            .unwrap();
    assert_eq!(
        stats["profiles"].as_object().map(|p| p.len()),
        Some(2),
        "{stats}"
    );

    // A revoked token is refused from then on.
    let revoked = node.cli(OP, &["tokens", "create", "--tenant", "a", "--name", "tmp"]);
    let revoked_token = revoked.stdout.trim().to_owned();
    assert_eq!(
        node.json(Some(&revoked_token), &["syncs", "list"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let tokens = node.json(OP, &["tokens", "list", "--tenant", "a"]);
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "tmp")
        .and_then(|t| t["id"].as_str())
        .unwrap()
        .to_owned();
    node.json(OP, &["tokens", "revoke", &id, "--tenant", "a"]);
    node.cli(Some(&revoked_token), &["syncs", "list"])
        .fails_with(3, "the token was refused");

    // An unreachable node.
    let closed = format!("http://127.0.0.1:{}", free_port());
    run(ferry_for(&closed, OP).args(["syncs", "list", "--tenant", "a"]))
        .fails_with(5, &format!("cannot reach the node at {closed}"));

    // Tenants: an update by flags keeps the stored secret; a tenant with objects is deleted
    // only with --cascade, and its token dies with it.
    let renamed = node.json(OP, &["tenants", "update", "b", "--name", "Tenant B"]);
    assert_eq!(renamed["name"], "Tenant B");
    assert_eq!(
        renamed["credentials"]["service_account"]["secret_set"],
        true
    );
    assert_eq!(node.json(b, &["tenants", "get"])["name"], "Tenant B");
    // A send budget: set and shown, refused when zero (naming the field), removed.
    let budgeted = node.json(OP, &["tenants", "update", "b", "--send-budget", "5000"]);
    assert_eq!(budgeted["send_budget"], 5000);
    let shown = node.cli(OP, &["tenants", "get", "b"]);
    assert!(
        shown.stdout.contains("5000 events/s across the cluster"),
        "{}",
        shown.stdout
    );
    node.cli(OP, &["tenants", "update", "b", "--send-budget", "0"])
        .fails_with(1, "tenant.send_budget");
    let unbudgeted = node.json(OP, &["tenants", "update", "b", "--no-send-budget"]);
    assert_eq!(unbudgeted["send_budget"], Value::Null);
    node.cli(OP, &["tenants", "delete", "b"]).fails_with(1, "");
    let deleted = node.json(OP, &["tenants", "delete", "b", "--cascade"]);
    assert_eq!(deleted["deleted"]["tenant"], "b");
    node.cli(OP, &["tenants", "get", "b"])
        .fails_with(4, "not found");
    node.cli(b, &["syncs", "list"])
        .fails_with(3, "the token was refused");
    let listed = node.cli(OP, &["tenants", "list"]);
    assert_eq!(
        listed
            .stdout
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        [
            "ID",
            "NAME",
            "PROJECT",
            "DESTINATION",
            "CREDENTIALS",
            "BUDGET",
            "UPDATED"
        ]
    );
    assert_eq!(listed.stdout.lines().count(), 2, "{}", listed.stdout);
}
