//! Amazon Redshift through the Redshift Data API (`aws-sdk-redshiftdata`), for provisioned
//! clusters and Serverless workgroups.
//!
//! No database connection is held: every operation submits SQL with `ExecuteStatement`, polls
//! `DescribeStatement` with backoff ([`statement::PollPolicy`]: fast first polls, capped), and
//! pages through `GetStatementResult`. A read keeps one result page in memory at a time and
//! hands rows to the bounded page channel, so memory stays bounded; reads with a cursor are split
//! into statements of bounded size ([`reader`]); a read whose consumer went away cancels its
//! statement. Values that come from outside (cursor values) are bound as Data API
//! parameters (`:name`), never spliced; identifiers are quoted by [`quote_ident`].
//!
//! AWS credentials: the static keys of the source spec, else its `profile`, else the default
//! chain (environment, shared files, web identity, container and instance roles). The SDK
//! retries throttling and transient failures itself (standard retry mode, bounded attempts);
//! what remains is classified ([`error`]): throttling and 5xx are retryable, bad credentials,
//! missing privileges and unknown clusters or workgroups are fatal with a message that says so.
//!
//! The SQL Ferry sends is valid on both Redshift and PostgreSQL, so the stand-in used in tests
//! (`tests/redshift-standin`) runs it unchanged.

pub mod error;
pub mod mirror;
mod reader;
pub mod statement;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_redshiftdata::types::ColumnMetadata;
use aws_sdk_redshiftdata::Client;
use ferry_core::spec::RedshiftOptions;
use ferry_core::value::{Column, RowBatch, Value};
use tokio::sync::{mpsc, OnceCell};

use super::{Page, ReadRequest, ReadSource, ReadSummary, TableInfo, Warehouse, WarehouseError};
use error::Context;
use statement::{PollPolicy, ResultPages};

/// Quotes a Redshift identifier: wrapped in double quotes, inner double quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Tuning that is not part of a source spec.
#[derive(Debug, Clone)]
pub struct RedshiftSettings {
    pub poll: PollPolicy,
    /// Attempts per Data API call (the SDK's standard retry: throttling, 5xx, I/O errors).
    pub max_attempts: u32,
    /// The first retry's backoff; it grows exponentially with jitter.
    pub initial_backoff: Duration,
    pub connect_timeout: Duration,
    /// One attempt of one API call (not the statement, which is polled).
    pub call_timeout: Duration,
    /// Rows per statement of a read with a cursor (a Data API result is capped at 100 MB).
    pub chunk_rows: usize,
}

impl Default for RedshiftSettings {
    fn default() -> Self {
        Self {
            poll: PollPolicy::default(),
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(60),
            chunk_rows: 100_000,
        }
    }
}

/// A Redshift cluster or workgroup.
#[derive(Clone)]
pub struct RedshiftWarehouse {
    options: Arc<RedshiftOptions>,
    settings: RedshiftSettings,
    client: Arc<OnceCell<Client>>,
    context: Context,
}

impl std::fmt::Debug for RedshiftWarehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedshiftWarehouse")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RedshiftWarehouse {
    pub fn new(options: RedshiftOptions) -> Self {
        let endpoint = match (&options.cluster_identifier, &options.workgroup_name) {
            (Some(c), _) => format!("cluster '{c}'"),
            (None, Some(w)) => format!("workgroup '{w}'"),
            (None, None) => "the Redshift endpoint".into(),
        };
        let target = options
            .endpoint_url
            .clone()
            .unwrap_or_else(|| format!("the Redshift Data API in {}", options.region));
        Self {
            options: Arc::new(options),
            settings: RedshiftSettings::default(),
            client: Arc::new(OnceCell::new()),
            context: Context { endpoint, target },
        }
    }

    pub fn with_settings(mut self, settings: RedshiftSettings) -> Self {
        self.settings = settings;
        self.client = Arc::new(OnceCell::new());
        self
    }

    pub fn options(&self) -> &RedshiftOptions {
        &self.options
    }

    /// The SDK client, built once (loading credentials and settings) on first use.
    pub async fn client(&self) -> Result<&Client, WarehouseError> {
        self.client
            .get_or_try_init(|| build_client(&self.options, &self.settings))
            .await
    }

    /// Runs one statement to its end.
    pub async fn run_statement(
        &self,
        sql: &str,
        parameters: &[(String, String)],
    ) -> Result<statement::Finished, WarehouseError> {
        let client = self.client().await?;
        statement::run(
            client,
            &self.options,
            &self.context,
            &self.settings.poll,
            sql,
            parameters,
        )
        .await
    }

    /// Runs a query and returns every row: only for small results.
    pub async fn query_all(
        &self,
        sql: &str,
        parameters: &[(String, String)],
    ) -> Result<RowBatch, WarehouseError> {
        let finished = self.run_statement(sql, parameters).await?;
        let client = self.client().await?;
        let mut pages = ResultPages::new(client, &self.context, &finished);
        let mut columns: Option<Arc<[Column]>> = None;
        let mut rows = Vec::new();
        if !finished.has_result_set {
            return Err(WarehouseError::Query(format!(
                "statement {} returned no result set",
                finished.id
            )));
        }
        while let Some(page) = pages.next().await? {
            let cols = match &columns {
                Some(c) => c.clone(),
                None => {
                    let c = columns_of(page.columns.as_deref(), &finished.id)?;
                    columns = Some(c.clone());
                    c
                }
            };
            for record in &page.records {
                rows.push(decode(record, &cols)?);
            }
        }
        let columns = columns.unwrap_or_else(|| Vec::new().into());
        Ok(RowBatch::new(columns, rows))
    }
}

async fn build_client(
    options: &RedshiftOptions,
    settings: &RedshiftSettings,
) -> Result<Client, WarehouseError> {
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    use aws_config::{BehaviorVersion, Region};
    use aws_smithy_http_client::tls;

    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(options.region.clone()))
        .http_client(http)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(settings.max_attempts.max(1))
                .with_initial_backoff(settings.initial_backoff),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(settings.connect_timeout)
                .operation_attempt_timeout(settings.call_timeout)
                .build(),
        );
    if let Some(url) = &options.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(profile) = &options.profile {
        loader = loader.profile_name(profile);
    }
    match (&options.access_key_id, &options.secret_access_key) {
        (Some(id), Some(secret)) => {
            loader = loader.credentials_provider(aws_sdk_redshiftdata::config::Credentials::new(
                id,
                secret.expose(),
                options
                    .session_token
                    .as_ref()
                    .map(|t| t.expose().to_owned()),
                None,
                "ferry-source-spec",
            ));
        }
        (None, None) => {}
        _ => {
            return Err(WarehouseError::Config(
                "access_key_id and secret_access_key go together".into(),
            ))
        }
    }
    Ok(Client::new(&loader.load().await))
}

/// The `FROM` item of a read of `source`.
fn from_clause(source: &ReadSource) -> Result<String, WarehouseError> {
    Ok(match source {
        ReadSource::Table { schema, name } => match schema {
            Some(schema) => format!("{}.{} AS ferry_src", quote_ident(schema), quote_ident(name)),
            None => format!("{} AS ferry_src", quote_ident(name)),
        },
        ReadSource::Sql(sql) => {
            let sql = sql.trim().trim_end_matches(';').trim();
            if sql.is_empty() {
                return Err(WarehouseError::Config("the SQL query is empty".into()));
            }
            format!("({sql}) AS ferry_src")
        }
    })
}

fn columns_of(
    metadata: Option<&[ColumnMetadata]>,
    statement: &str,
) -> Result<Arc<[Column]>, WarehouseError> {
    let metadata = metadata.ok_or_else(|| {
        WarehouseError::Query(format!(
            "statement {statement}: the result came without column metadata"
        ))
    })?;
    Ok(metadata
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let name = m
                .name()
                .or(m.label())
                .map(str::to_owned)
                .unwrap_or_else(|| format!("column_{}", i + 1));
            Column::new(name, types::kind_of(m.type_name().unwrap_or("varchar")))
        })
        .collect::<Vec<_>>()
        .into())
}

fn decode(
    record: &[aws_sdk_redshiftdata::types::Field],
    columns: &[Column],
) -> Result<Vec<Value>, WarehouseError> {
    if record.len() != columns.len() {
        return Err(WarehouseError::Query(format!(
            "a result row has {} fields for {} columns",
            record.len(),
            columns.len()
        )));
    }
    record
        .iter()
        .zip(columns)
        .map(|(field, column)| {
            types::value_of(field, &column.kind).map_err(|message| WarehouseError::Value {
                column: column.name.clone(),
                message,
            })
        })
        .collect()
}

/// Redshift's table types as Ferry lists them; system objects are left out.
fn table_kind(redshift_type: &str) -> Option<String> {
    let t = redshift_type.to_ascii_uppercase();
    if t.contains("SYSTEM") || t.contains("TEMPORARY") {
        return None;
    }
    Some(t.to_ascii_lowercase())
}

#[async_trait]
impl Warehouse for RedshiftWarehouse {
    fn kind(&self) -> &'static str {
        "redshift"
    }

    async fn test_connection(&self) -> Result<(), WarehouseError> {
        self.run_statement("SELECT 1", &[]).await.map(|_| ())
    }

    async fn list_tables(&self) -> Result<Vec<TableInfo>, WarehouseError> {
        let client = self.client().await?;
        let mut tables = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let out = statement::targeted!(client.list_tables(), self.options)
                .max_results(1000)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| error::from_sdk(e, &self.context))?;
            for t in out.tables() {
                let (Some(schema), Some(name)) = (t.schema(), t.name()) else {
                    continue;
                };
                if matches!(schema, "information_schema" | "pg_catalog" | "pg_internal")
                    || schema.starts_with("pg_")
                {
                    continue;
                }
                if let Some(kind) = table_kind(t.r#type().unwrap_or("TABLE")) {
                    tables.push(TableInfo {
                        schema: Some(schema.to_owned()),
                        name: name.to_owned(),
                        kind,
                    });
                }
            }
            match out.next_token() {
                Some(token) if !token.is_empty() => next = Some(token.to_owned()),
                _ => break,
            }
        }
        tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        Ok(tables)
    }

    async fn columns(&self, source: &ReadSource) -> Result<Vec<Column>, WarehouseError> {
        let sql = format!("SELECT * FROM {} LIMIT 0", from_clause(source)?);
        Ok(self.query_all(&sql, &[]).await?.columns.to_vec())
    }

    async fn preview(&self, source: &ReadSource, limit: usize) -> Result<RowBatch, WarehouseError> {
        // The limit is a number Ferry chose, printed as one: nothing from outside is spliced.
        let sql = format!("SELECT * FROM {} LIMIT {limit}", from_clause(source)?);
        self.query_all(&sql, &[]).await
    }

    async fn read(
        &self,
        request: &ReadRequest,
        out: mpsc::Sender<Page>,
    ) -> Result<ReadSummary, WarehouseError> {
        reader::read(self, request, out).await
    }
}
