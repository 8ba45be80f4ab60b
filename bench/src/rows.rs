//! The benchmark's warehouse table: N realistic web/product-analytics event rows, the same
//! whatever they are written to (PostgreSQL through `COPY`, a SQLite file, or straight into the
//! encoder for the encode floor).
//!
//! Row `i` depends only on `(seed, i)`: any slice of the table can be generated on its own and
//! comes out identical. Values are drawn at random from realistic vocabularies (not `i % k`
//! cycles, which would make gzip look better than real data allows); some columns are NULL
//! part of the time, as real tables are. A row is about 1 KB once mapped to a Mixpanel event.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ferry_core::value::{Column, ColumnKind, JsonText, Value};
use serde_json::json;

/// The table's name in every warehouse.
pub const TABLE: &str = "events_bench";

/// `(name, PostgreSQL type, SQLite declared type, Ferry kind)` of each column, in order.
pub const COLUMNS: &[(&str, &str, &str, ColumnKind)] = &[
    ("id", "bigint", "INTEGER", ColumnKind::Int),
    ("user_id", "text", "TEXT", ColumnKind::Text),
    ("device_id", "text", "TEXT", ColumnKind::Text),
    ("event_name", "text", "TEXT", ColumnKind::Text),
    ("ts", "timestamptz", "TIMESTAMPTZ", ColumnKind::Timestamp),
    (
        "inserted_at",
        "timestamptz",
        "TIMESTAMPTZ",
        ColumnKind::Timestamp,
    ),
    ("page", "text", "TEXT", ColumnKind::Text),
    ("referrer", "text", "TEXT", ColumnKind::Text),
    ("browser", "text", "TEXT", ColumnKind::Text),
    ("browser_version", "text", "TEXT", ColumnKind::Text),
    ("os", "text", "TEXT", ColumnKind::Text),
    ("country", "text", "TEXT", ColumnKind::Text),
    ("city", "text", "TEXT", ColumnKind::Text),
    ("plan", "text", "TEXT", ColumnKind::Text),
    (
        "amount",
        "numeric(10,2)",
        "NUMERIC(10,2)",
        ColumnKind::Decimal,
    ),
    ("quantity", "integer", "INTEGER", ColumnKind::Int),
    ("is_trial", "boolean", "BOOLEAN", ColumnKind::Bool),
    ("session_id", "uuid", "UUID", ColumnKind::Uuid),
    ("utm_source", "text", "TEXT", ColumnKind::Text),
    ("utm_campaign", "text", "TEXT", ColumnKind::Text),
    ("user_agent", "text", "TEXT", ColumnKind::Text),
    ("props", "jsonb", "JSONB", ColumnKind::Json),
];

/// The table's columns as a source reports them.
pub fn columns() -> Arc<[Column]> {
    COLUMNS
        .iter()
        .map(|(name, _, _, kind)| Column::new(*name, kind.clone()))
        .collect::<Vec<_>>()
        .into()
}

/// `CREATE TABLE` for PostgreSQL, with the index an Append sync's cursor column has in practice.
pub fn postgres_ddl() -> String {
    let cols: Vec<String> = COLUMNS
        .iter()
        .map(|(name, ty, _, _)| {
            let not_null = if matches!(
                *name,
                "id" | "user_id" | "event_name" | "ts" | "inserted_at"
            ) {
                " NOT NULL"
            } else {
                ""
            };
            format!("{name} {ty}{not_null}")
        })
        .collect();
    format!(
        "CREATE TABLE {TABLE} ({}, PRIMARY KEY (id));\nCREATE INDEX {TABLE}_inserted_at ON {TABLE} (inserted_at);",
        cols.join(", ")
    )
}

const EVENTS: &[&str] = &[
    "Page Viewed",
    "Page Viewed",
    "Page Viewed",
    "Page Viewed",
    "Button Clicked",
    "Button Clicked",
    "Search",
    "Item Viewed",
    "Item Added",
    "Item Removed",
    "Checkout Started",
    "Purchase",
    "Signed Up",
    "Logged In",
    "Logged Out",
    "Video Played",
    "Video Paused",
    "Invite Sent",
    "Report Exported",
    "Settings Changed",
    "Subscription Upgraded",
    "Trial Started",
];
const PAGES: &[&str] = &[
    "/",
    "/pricing",
    "/features",
    "/features/warehouse-connectors",
    "/features/funnels",
    "/docs",
    "/docs/getting-started",
    "/docs/tracking/how-tos/identifying-users",
    "/docs/data-pipelines/warehouse-connectors",
    "/blog",
    "/blog/warehouse-sync-at-scale",
    "/blog/product-analytics-metrics",
    "/customers",
    "/customers/acme-retail",
    "/login",
    "/signup",
    "/account/settings",
    "/account/billing",
    "/reports/insights",
    "/reports/funnels",
    "/reports/retention",
    "/reports/flows",
    "/checkout",
    "/checkout/confirm",
    "/search",
    "/integrations",
    "/integrations/snowflake",
    "/integrations/bigquery",
    "/careers",
    "/contact",
];
const REFERRER_HOSTS: &[&str] = &[
    "www.google.com",
    "www.bing.com",
    "duckduckgo.com",
    "news.ycombinator.com",
    "t.co",
    "www.linkedin.com",
    "www.reddit.com",
    "github.com",
    "stackoverflow.com",
    "mail.google.com",
    "outlook.live.com",
    "www.youtube.com",
    "medium.com",
    "dev.to",
    "www.producthunt.com",
];
const SEARCH_WORDS: &[&str] = &[
    "warehouse",
    "connector",
    "snowflake",
    "bigquery",
    "sync",
    "events",
    "funnel",
    "retention",
    "cohort",
    "dashboard",
    "pricing",
    "api",
    "import",
    "export",
    "schema",
    "identity",
    "merge",
    "session",
    "replay",
    "experiment",
    "feature",
    "flag",
    "mobile",
    "sdk",
    "javascript",
];
const BROWSERS: &[(&str, u32, u32)] = &[
    ("Chrome", 118, 131),
    ("Chrome", 118, 131),
    ("Chrome", 118, 131),
    ("Safari", 15, 18),
    ("Safari", 15, 18),
    ("Firefox", 115, 133),
    ("Edge", 118, 131),
    ("Samsung Internet", 22, 27),
    ("Opera", 100, 115),
];
const OSES: &[(&str, &str)] = &[
    ("Windows", "Windows NT 10.0; Win64; x64"),
    ("Windows", "Windows NT 10.0; Win64; x64"),
    ("Mac OS X", "Macintosh; Intel Mac OS X 10_15_7"),
    ("Mac OS X", "Macintosh; Intel Mac OS X 14_6_1"),
    ("iOS", "iPhone; CPU iPhone OS 17_6 like Mac OS X"),
    ("Android", "Linux; Android 14; Pixel 8"),
    ("Android", "Linux; Android 13; SM-S911B"),
    ("Linux", "X11; Linux x86_64"),
    ("Chrome OS", "X11; CrOS x86_64 15633.69.0"),
];
const PLACES: &[(&str, &[&str])] = &[
    (
        "US",
        &[
            "New York",
            "San Francisco",
            "Austin",
            "Seattle",
            "Chicago",
            "Boston",
            "Denver",
        ],
    ),
    (
        "DE",
        &["Berlin", "Munich", "Hamburg", "Cologne", "Frankfurt"],
    ),
    ("FR", &["Paris", "Lyon", "Marseille", "Toulouse"]),
    ("GB", &["London", "Manchester", "Edinburgh", "Bristol"]),
    ("IN", &["Bengaluru", "Mumbai", "Delhi", "Hyderabad", "Pune"]),
    ("BR", &["São Paulo", "Rio de Janeiro", "Belo Horizonte"]),
    ("JP", &["Tokyo", "Osaka", "Yokohama"]),
    ("NO", &["Oslo", "Bergen", "Trondheim"]),
    ("CA", &["Toronto", "Vancouver", "Montréal"]),
    ("AU", &["Sydney", "Melbourne", "Brisbane"]),
    ("ES", &["Madrid", "Barcelona", "Valencia"]),
    ("NL", &["Amsterdam", "Rotterdam", "Utrecht"]),
];
const PLANS: &[&str] = &[
    "free",
    "free",
    "free",
    "starter",
    "starter",
    "growth",
    "enterprise",
];
const UTM_SOURCES: &[&str] = &[
    "google",
    "newsletter",
    "twitter",
    "linkedin",
    "facebook",
    "partner",
    "bing",
    "youtube",
];
const UTM_CAMPAIGNS: &[&str] = &[
    "spring_launch",
    "black_friday",
    "webinar_q3",
    "retargeting",
    "brand_search",
    "competitor_compare",
    "product_hunt",
    "onboarding_drip",
    "winback",
    "summit_2026",
];
const VARIANTS: &[&str] = &["control", "variant_a", "variant_b"];
const CURRENCIES: &[&str] = &["USD", "USD", "USD", "EUR", "GBP", "JPY", "INR", "BRL"];
const FLAGS: &[&str] = &[
    "new_nav",
    "dark_mode",
    "ai_summaries",
    "fast_export",
    "beta_reports",
    "sso_v2",
];

/// A tiny deterministic generator (SplitMix64): row `i`'s values depend only on `(seed, i)`.
struct Draw(u64);

impl Draw {
    fn new(seed: u64, row: u64) -> Self {
        let mut d = Draw(seed ^ row.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        d.next();
        d
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: u32, hi_inclusive: u32) -> u32 {
        lo + self.below((hi_inclusive - lo + 1) as u64) as u32
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, list: &[T]) -> T {
        list[self.below(list.len() as u64) as usize]
    }
}

/// Generates the rows of the benchmark table.
#[derive(Debug, Clone)]
pub struct RowGen {
    seed: u64,
    /// `ts` of row 0; events are spread over the 30 days before 2026-11-01.
    ts_base: DateTime<Utc>,
    ts_step_ms: i64,
    inserted_base: DateTime<Utc>,
}

impl RowGen {
    /// A generator for a table of `rows` rows.
    pub fn new(seed: u64, rows: u64) -> Self {
        let span_ms: i64 = 30 * 24 * 3600 * 1000;
        Self {
            seed,
            ts_base: Utc
                .with_ymd_and_hms(2026, 10, 2, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            ts_step_ms: (span_ms / rows.max(1) as i64).max(1),
            inserted_base: Utc
                .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
        }
    }

    /// Row `i` (0-based); its `id` is `i + 1`.
    pub fn row(&self, i: u64) -> Vec<Value> {
        let mut d = Draw::new(self.seed, i);
        let user = d.below(250_000);
        let device = user.wrapping_mul(2_654_435_761) ^ d.below(3);
        let event = d.pick(EVENTS);
        let jitter = d.below(1000) as i64;
        let ts = self.ts_base + Duration::milliseconds(i as i64 * self.ts_step_ms + jitter);
        // Strictly increasing: the Append cursor.
        let inserted_at = self.inserted_base + Duration::microseconds(i as i64 * 250);
        let page = d.pick(PAGES);
        let referrer = (!d.chance(35)).then(|| {
            let host = d.pick(REFERRER_HOSTS);
            let (a, b) = (d.pick(SEARCH_WORDS), d.pick(SEARCH_WORDS));
            format!(
                "https://{host}/search?q={a}+{b}&source=web&n={}",
                d.below(10_000)
            )
        });
        let (browser, lo, hi) = d.pick(BROWSERS);
        let major = d.range(lo, hi);
        let browser_version = format!("{major}.0.{}.{}", d.below(7000), d.below(250));
        let (os, os_agent) = d.pick(OSES);
        let (country, cities) = d.pick(PLACES);
        let city = d.pick(cities);
        let plan = d.pick(PLANS);
        let amount = (event == "Purchase" || d.chance(20))
            .then(|| format!("{}.{:02}", d.below(2000), d.below(100)));
        let quantity = 1 + d.below(9) as i64;
        let is_trial = d.chance(18);
        let session = uuid::Uuid::from_u64_pair(d.next(), d.next());
        let utm = d.chance(45);
        let utm_source = utm.then(|| d.pick(UTM_SOURCES).to_owned());
        let utm_campaign = utm.then(|| d.pick(UTM_CAMPAIGNS).to_owned());
        let user_agent = format!(
            "Mozilla/5.0 ({os_agent}) AppleWebKit/537.36 (KHTML, like Gecko) {browser}/{major}.0.0.0 Safari/537.36"
        );
        let width = d.pick(&[
            360u32, 390, 414, 768, 1024, 1280, 1366, 1440, 1536, 1920, 2560,
        ]);
        let mut flags = Vec::new();
        for f in FLAGS {
            if d.chance(30) {
                flags.push(*f);
            }
        }
        let workspace = d.below(20_000);
        let props = json!({
            "experiment": {"name": format!("exp-{}", d.below(40)), "variant": d.pick(VARIANTS)},
            "feature_flags": flags,
            "screen": {"width": width, "height": width * 9 / 16, "density": d.pick(&[1, 2, 3])},
            "current_url": format!(
                "https://app.example.com/workspace/{workspace}/reports/{}?view={}&range=last_{}_days",
                d.below(1_000_000), d.pick(&["table", "line", "bar"]), d.pick(&[7, 30, 90])
            ),
            "cart": {"items": d.below(6), "currency": d.pick(CURRENCIES)},
            "search_terms": format!("{} {}", d.pick(SEARCH_WORDS), d.pick(SEARCH_WORDS)),
            "app_version": format!("{}.{}.{}", 3 + d.below(3), d.below(20), d.below(10)),
            "lib": "ferry-bench",
            "latency_ms": d.below(2500) as f64 / 10.0,
        });
        let text = |s: &str| Value::Text(s.to_owned());
        let opt = |s: Option<String>| s.map_or(Value::Null, Value::Text);
        vec![
            Value::Int(i as i64 + 1),
            Value::Text(format!("user-{user:08}")),
            Value::Text(format!("dev-{device:016x}")),
            text(event),
            Value::Timestamp(ts),
            Value::Timestamp(inserted_at),
            text(page),
            opt(referrer),
            text(browser),
            Value::Text(browser_version),
            text(os),
            text(country),
            text(city),
            text(plan),
            amount.map_or(Value::Null, Value::Decimal),
            Value::Int(quantity),
            Value::Bool(is_trial),
            Value::Uuid(session),
            opt(utm_source),
            opt(utm_campaign),
            Value::Text(user_agent),
            // As the PostgreSQL and SQLite readers hand a JSON column over: checked text.
            Value::JsonText(JsonText::from_json(&props)),
        ]
    }
}

/// Writes rows `range` as PostgreSQL `COPY ... FROM STDIN` text format.
pub fn write_copy_text(
    gen: &RowGen,
    range: std::ops::Range<u64>,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut line = String::with_capacity(2048);
    for i in range {
        line.clear();
        for (c, value) in gen.row(i).iter().enumerate() {
            if c > 0 {
                line.push('\t');
            }
            copy_cell(value, &mut line);
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}

fn copy_cell(value: &Value, out: &mut String) {
    let escaped = |s: &str, out: &mut String| {
        for ch in s.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    };
    match value {
        Value::Null => out.push_str("\\N"),
        Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Decimal(s) => out.push_str(s),
        Value::Timestamp(t) => {
            let _ = write!(out, "{}", t.format("%Y-%m-%d %H:%M:%S%.6f+00"));
        }
        Value::Uuid(u) => {
            let _ = write!(out, "{}", u.hyphenated());
        }
        Value::Json(j) => escaped(&j.to_string(), out),
        Value::JsonText(t) => escaped(t.as_str(), out),
        Value::Text(s) => escaped(s, out),
        other => escaped(&format!("{other:?}"), out),
    }
}

/// The SQLite form of a cell.
pub fn sqlite_cell(value: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match value {
        Value::Null => S::Null,
        Value::Bool(b) => S::Integer(*b as i64),
        Value::Int(i) => S::Integer(*i),
        Value::Float(f) => S::Real(*f),
        Value::Decimal(s) | Value::Text(s) => S::Text(s.clone()),
        Value::Timestamp(t) => S::Text(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()),
        Value::Uuid(u) => S::Text(u.hyphenated().to_string()),
        Value::Json(j) => S::Text(j.to_string()),
        Value::JsonText(t) => S::Text(t.as_str().to_owned()),
        other => S::Text(format!("{other:?}")),
    }
}

/// Writes rows `0..rows` into a new SQLite file at `path` (replacing it).
pub fn write_sqlite(gen: &RowGen, rows: u64, path: &std::path::Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut db = rusqlite::Connection::open(path)?;
    db.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
    let cols: Vec<String> = COLUMNS
        .iter()
        .map(|(name, _, decl, _)| format!("{name} {decl}"))
        .collect();
    db.execute_batch(&format!(
        "CREATE TABLE {TABLE} ({}, PRIMARY KEY (id)); CREATE INDEX {TABLE}_inserted_at ON {TABLE} (inserted_at);",
        cols.join(", ")
    ))?;
    let marks = vec!["?"; COLUMNS.len()].join(", ");
    let tx = db.transaction()?;
    {
        let mut insert = tx.prepare(&format!("INSERT INTO {TABLE} VALUES ({marks})"))?;
        for i in 0..rows {
            let row = gen.row(i);
            insert.execute(rusqlite::params_from_iter(row.iter().map(sqlite_cell)))?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The benchmark's sync as `ferry node` is configured with it (TOML `[[syncs]]` fields).
pub fn sync_spec() -> ferry_core::spec::SyncSpec {
    // Built from the same field names as the config file, so the two cannot drift apart silently.
    serde_json::from_value(json!({
        "id": "events",
        "tenant": "bench",
        "source": "pg",
        "table": format!("public.{TABLE}"),
        "table_type": "events",
        "mode": "append",
        "cursor_column": "inserted_at",
        "mapping": {
            "event_name_column": "event_name",
            "time_column": "ts",
            "distinct_id_column": "user_id",
            "device_id_column": "device_id",
            "key_columns": ["id"],
            "properties_column": "props",
            "excludes": ["inserted_at"],
        },
    }))
    .expect("the benchmark sync spec is well-formed")
}

/// The import context of one benchmark run.
pub fn import_context() -> ferry_core::mapping::ImportContext {
    ferry_core::mapping::ImportContext {
        warehouse_type: "postgres".into(),
        table: format!("public.{TABLE}"),
        import_id: "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a".into(),
        import_job_id: Some("events".into()),
        import_run_id: Some("run-1".into()),
        token: None,
    }
}

/// The benchmark sync's row mapper over [`columns`].
pub fn row_mapper() -> anyhow::Result<ferry_core::mapping::RowMapper> {
    let sync = sync_spec();
    let valid = sync.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    ferry_core::mapping::RowMapper::new(&sync, &valid.mapping, &columns(), &import_context())
        .map_err(|e| anyhow::anyhow!("{e}"))
}
