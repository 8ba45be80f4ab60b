//! `ferry quickstart`: everything on one machine in under a minute. It builds a demo SQLite
//! warehouse (events, users, companies, a lookup table), starts a receiver and an embedded node,
//! syncs each table type with visible progress, prints what arrived, and leaves the data, the
//! receiver's store and a ready-to-edit config in a folder it names.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use ferry_receiver::config::{LookupTableDecl, ProjectConfig, ServiceAccountConfig, StoreMode};
use ferry_receiver::ReceiverConfig;
use indicatif::MultiProgress;
use serde_json::Value as Json;

use crate::config::NodeConfig;
use crate::runs::{embedded_runner, failed, print_errors, run_with_progress};

#[derive(Args)]
pub struct QuickstartArgs {
    /// Folder for the demo warehouse, the receiver's data and the node's state (replaced).
    #[arg(long, default_value = "ferry-quickstart")]
    dir: PathBuf,
    /// Rows in the demo events table.
    #[arg(long, default_value_t = 20_000)]
    events: u32,
}

const PROJECT: &str = "1";
const TOKEN: &str = "quickstart-token";
const SA_USER: &str = "quickstart";
const SA_SECRET: &str = "quickstart-secret";

pub async fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    for old in ["warehouse.sqlite", "receiver", "state"] {
        let p = dir.join(old);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).with_context(|| format!("clearing {}", p.display()))?;
        } else if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("clearing {}", p.display()))?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let warehouse = dir.join("warehouse.sqlite");
    println!("1/4  demo warehouse: {}", warehouse.display());
    let events = args.events;
    let wh = warehouse.clone();
    tokio::task::spawn_blocking(move || build_demo_warehouse(&wh, events))
        .await
        .context("building the demo warehouse")??;

    println!("2/4  receiver (Ferry's local Mixpanel-compatible destination)");
    let receiver_cfg = receiver_config(&dir);
    std::fs::write(dir.join("receiver.toml"), receiver_toml(&dir))
        .context("writing receiver.toml")?;
    let receiver = ferry_receiver::start(receiver_cfg)
        .await
        .context("starting the receiver")?;
    let base_url = receiver.base_url();
    println!("     listening on {base_url}");

    println!(
        "3/4  syncs (embedded node, state in {})",
        dir.join("state").display()
    );
    let written = node_toml(&dir, &warehouse, "http://127.0.0.1:8787");
    std::fs::write(dir.join("ferry.toml"), &written).context("writing ferry.toml")?;
    // This run talks to the receiver started above, on its own port.
    let cfg: NodeConfig =
        toml::from_str(&node_toml(&dir, &warehouse, &base_url)).context("the quickstart config")?;
    let jobs = cfg.jobs(&dir.join("ferry.toml"))?;
    let runner = embedded_runner(&cfg.node, &dir.join("state")).await?;
    let bars = MultiProgress::new();
    let mut any_failed = false;
    for job in &jobs {
        let run = run_with_progress(&runner, job, &bars).await?;
        print_errors(&run, 5);
        any_failed |= failed(&run);
    }

    println!("4/4  what arrived in project {PROJECT}:");
    let state: Json = reqwest::get(format!("{base_url}/ferry/v1/projects/{PROJECT}/state"))
        .await
        .context("reading what the receiver stored")?
        .json()
        .await
        .context("the receiver's state is JSON")?;
    let count = |v: &Json| {
        v.as_array()
            .map(Vec::len)
            .or_else(|| v.as_object().map(|o| o.len()))
            .unwrap_or(0)
    };
    println!("     events:          {}", state["event_count"]);
    println!("     user profiles:   {}", count(&state["profiles"]));
    println!("     group profiles:  {}", count(&state["groups"]));
    let plans = &state["lookup_tables"]["plans"]["table"]["rows"];
    println!("     lookup table 'plans': {} rows", count(plans));
    if let Some(first) = state["events"].as_array().and_then(|e| e.first()) {
        println!(
            "     one event, as the destination received it:\n{}",
            indent(&serde_json::to_string_pretty(first)?, 7)
        );
    }
    receiver.shutdown().await;
    println!(
        "\nDone. Everything is in {d}:\n  warehouse.sqlite  the demo warehouse\n  receiver/         what the destination stored (receiver.toml configures it)\n  state/            the node's cursors and run history\n  ferry.toml        the syncs; run them again with:\n      ferry receiver --config {d}/receiver.toml &\n      ferry node --config {d}/ferry.toml --once",
        d = dir.display()
    );
    if any_failed {
        anyhow::bail!("a quickstart sync failed (see above)");
    }
    Ok(())
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn receiver_config(dir: &Path) -> ReceiverConfig {
    let mut cfg = ReceiverConfig::from_toml("listen = \"127.0.0.1:0\"").expect("static config");
    cfg.store = StoreMode::Disk;
    cfg.data_dir = Some(dir.join("receiver"));
    cfg.projects = vec![ProjectConfig {
        id: PROJECT.into(),
        token: TOKEN.into(),
        secret: None,
        group_keys: Some(vec!["company_id".into()]),
        lookup_tables: vec![LookupTableDecl {
            id: "plans".into(),
            name: "Plans".into(),
        }],
        rate_limit: Default::default(),
    }];
    cfg.service_accounts = vec![ServiceAccountConfig {
        user: SA_USER.into(),
        secret: SA_SECRET.into(),
        projects: None,
    }];
    cfg
}

fn receiver_toml(dir: &Path) -> String {
    format!(
        r#"# The quickstart's destination: ferry receiver --config {dir}/receiver.toml
listen = "127.0.0.1:8787"
data_dir = "{dir}/receiver"
store = "disk"

[[projects]]
id = "{PROJECT}"
token = "{TOKEN}"
group_keys = ["company_id"]
lookup_tables = [{{ id = "plans", name = "Plans" }}]

[[service_accounts]]
user = "{SA_USER}"
secret = "{SA_SECRET}"
"#,
        dir = dir.display()
    )
}

/// The node config the quickstart runs, written to `ferry.toml` as a starting point.
fn node_toml(dir: &Path, warehouse: &Path, receiver_url: &str) -> String {
    format!(
        r#"# Ferry node configuration written by `ferry quickstart`. Run: ferry node --config ferry.toml --once
[node]
id = "quickstart"
data_dir = "{dir}/state"
page_size = 5000
receiver_extensions = true   # the destination is Ferry's receiver

[[tenants]]
id = "demo"
name = "Demo project"
project_id = {PROJECT}
project_token = "{TOKEN}"
[tenants.destination]
base_url = "{receiver_url}"   # for Mixpanel itself: region = "us" (or "eu", "in")
[tenants.auth.service_account]
user = "{SA_USER}"
secret = "{SA_SECRET}"

[[sources]]
id = "demo-sqlite"
tenant = "demo"
[sources.kind.sqlite]
path = "{warehouse}"

[[syncs]]
id = "events"
tenant = "demo"
source = "demo-sqlite"
table = "events"
table_type = "events"
mode = "append"
cursor_column = "inserted_at"
schedule = "hourly"
[syncs.mapping]
event_name_column = "event_name"
time_column = "ts"
distinct_id_column = "user_id"
properties_column = "properties"
key_columns = ["id"]
excludes = ["inserted_at"]

[[syncs]]
id = "users"
tenant = "demo"
source = "demo-sqlite"
table = "users"
table_type = "user_profiles"
mode = "full"
schedule = "daily"
[syncs.mapping]
distinct_id_column = "user_id"
renames = {{ email = "$email", name = "$name" }}

[[syncs]]
id = "companies"
tenant = "demo"
source = "demo-sqlite"
table = "companies"
table_type = "group_profiles"
mode = "full"
schedule = "daily"
[syncs.mapping]
group_key = "company_id"
group_id_column = "company_id"

[[syncs]]
id = "plans"
tenant = "demo"
source = "demo-sqlite"
table = "plans"
table_type = "lookup_table"
mode = "full"
schedule = "daily"
[syncs.mapping]
lookup_table_id = "plans"
key_column = "plan_id"
"#,
        dir = dir.display(),
        warehouse = warehouse.display()
    )
}

/// A small but realistic warehouse. Deterministic: the same rows every time.
fn build_demo_warehouse(path: &Path, events: u32) -> anyhow::Result<()> {
    let mut db =
        rusqlite::Connection::open(path).with_context(|| format!("creating {}", path.display()))?;
    db.execute_batch(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, event_name TEXT NOT NULL, ts TIMESTAMP NOT NULL, amount REAL, plan TEXT, properties JSON, inserted_at TIMESTAMP NOT NULL);
         CREATE TABLE users (user_id TEXT PRIMARY KEY, name TEXT, email TEXT, plan TEXT, company_id TEXT, signed_up DATE);
         CREATE TABLE companies (company_id TEXT PRIMARY KEY, name TEXT, industry TEXT, employees INTEGER);
         CREATE TABLE plans (plan_id TEXT PRIMARY KEY, label TEXT, price REAL, tier INTEGER);",
    )?;
    let plans = ["free", "starter", "growth", "enterprise"];
    let names = [
        "Page Viewed",
        "Signed Up",
        "Item Added",
        "Checkout Started",
        "Purchase",
    ];
    let pages = ["/", "/pricing", "/docs", "/blog", "/checkout"];
    let industries = ["retail", "media", "fintech", "health", "travel"];
    let tx = db.transaction()?;
    {
        let mut ins = tx.prepare("INSERT INTO plans VALUES (?1, ?2, ?3, ?4)")?;
        for (i, p) in plans.iter().enumerate() {
            ins.execute(rusqlite::params![
                p,
                format!("{} plan", p.to_uppercase()),
                [0.0, 19.0, 99.0, 499.0][i],
                i as i64
            ])?;
        }
        let mut ins = tx.prepare("INSERT INTO companies VALUES (?1, ?2, ?3, ?4)")?;
        for c in 0..25u32 {
            ins.execute(rusqlite::params![
                format!("c{c:03}"),
                format!("Company {c}"),
                industries[c as usize % 5],
                (c as i64 + 1) * 37
            ])?;
        }
        let mut ins = tx.prepare("INSERT INTO users VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for u in 0..500u32 {
            let plan: Option<&str> = if u % 7 == 0 {
                None
            } else {
                Some(plans[u as usize % 4])
            };
            ins.execute(rusqlite::params![
                format!("user-{u:04}"),
                format!("User {u}"),
                format!("user{u}@example.com"),
                plan,
                format!("c{:03}", u % 25),
                format!("2024-{:02}-{:02}", u % 12 + 1, u % 28 + 1)
            ])?;
        }
        let mut ins = tx.prepare("INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?;
        let start = chrono::NaiveDate::from_ymd_opt(2025, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .context("demo start date")?;
        for e in 0..events {
            let n = e as i64;
            let at = start + chrono::Duration::seconds(n * 97);
            let name = names[(n * 7 % 5) as usize];
            let amount: Option<f64> =
                (name == "Purchase").then_some(((n * 37) % 20_000) as f64 / 100.0);
            let props = serde_json::json!({"page": pages[(n % 5) as usize], "session": format!("s{}", n / 20), "mobile": n % 3 == 0});
            ins.execute(rusqlite::params![
                n + 1,
                format!("user-{:04}", (n * 31) % 500),
                name,
                at.format("%Y-%m-%d %H:%M:%S").to_string(),
                amount,
                plans[(n % 4) as usize],
                props.to_string(),
                at.format("%Y-%m-%d %H:%M:%S").to_string()
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}
