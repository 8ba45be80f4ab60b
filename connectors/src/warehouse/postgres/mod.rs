//! PostgreSQL through `tokio-postgres`, with TLS by rustls ([`tls`]).
//!
//! Every call opens its own session (a [`Warehouse`] holds only settings). A read is one
//! prepared `SELECT` run with `query_raw`: rows come off the socket as the consumer pulls them,
//! and tokio-postgres stops reading the socket while its response buffer is full, so the page
//! channel's bound is what bounds memory. Columns are read as [`types`] describes; types Ferry
//! does not know are cast to text in the generated SELECT.
//!
//! Append reads are `WHERE "col" IS NOT NULL AND "col" > CAST($1::text AS <the column's type>)
//! ORDER BY "col"`: the cursor is bound as text and converted by the server, so any orderable
//! type works as a cursor and no value is spliced into SQL.
//!
//! With `ssh_tunnel` set, each session runs over its own SSH session to the bastion ([`ssh`]):
//! the tokio-postgres protocol (and TLS inside it) goes over a `direct-tcpip` channel, and the
//! SSH session is closed when the Postgres session ends.

pub mod mirror;
pub mod ssh;
pub mod tls;
pub mod types;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::spec::{PostgresOptions, SshTunnel};
use ferry_core::value::{column_index, Column, RowBatch, Value};
use futures_util::TryStreamExt;
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Row, Statement};

use super::{
    Page, Pager, ReadRequest, ReadSource, ReadSummary, TableInfo, Warehouse, WarehouseError,
};
use types::{Cell, Read};

/// Quotes a PostgreSQL identifier: wrapped in double quotes, inner double quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresWarehouse {
    options: PostgresOptions,
    connect_timeout: Duration,
}

impl PostgresWarehouse {
    pub fn new(options: PostgresOptions) -> Self {
        Self {
            options,
            connect_timeout: Duration::from_secs(15),
        }
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    fn target(&self) -> String {
        format!("{}:{}", self.options.host, self.options.port)
    }

    /// Opens a session; its connection task runs until the returned client is dropped (and
    /// then closes the SSH tunnel, if the session runs through one).
    async fn connect(&self) -> Result<Client, WarehouseError> {
        let o = &self.options;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&o.host)
            .port(o.port)
            .dbname(&o.database)
            .user(&o.user)
            .application_name("ferry")
            .connect_timeout(self.connect_timeout);
        if let Some(password) = &o.password {
            config.password(password.expose());
        }
        let tls = tls::client_config(o.ssl_mode, o.ca_cert.as_ref())?;
        config.ssl_mode(match tls {
            None => tokio_postgres::config::SslMode::Disable,
            Some(_) => tokio_postgres::config::SslMode::Require,
        });
        if let Some(spec) = &o.ssh_tunnel {
            return self.connect_tunnelled(spec, &config, tls).await;
        }
        let target = self.target();
        match tls {
            None => {
                let (client, conn) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| connect_error(e, &target))?;
                drive(conn, None);
                Ok(client)
            }
            Some(tls) => {
                let (client, conn) = config
                    .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                    .await
                    .map_err(|e| connect_error(e, &target))?;
                drive(conn, None);
                Ok(client)
            }
        }
    }

    /// A session over a `direct-tcpip` channel through the bastion. TLS (when on) runs inside
    /// the channel and is checked against the database's own host name, as without a tunnel.
    async fn connect_tunnelled(
        &self,
        spec: &SshTunnel,
        config: &tokio_postgres::Config,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Client, WarehouseError> {
        let o = &self.options;
        let tunnel = ssh::Tunnel::open(spec, self.connect_timeout).await?;
        let stream = match tunnel.forward(&o.host, o.port).await {
            Ok(stream) => stream,
            Err(e) => {
                tunnel.close().await;
                return Err(e);
            }
        };
        let target = format!(
            "{} (via SSH bastion {}:{})",
            self.target(),
            spec.host,
            spec.port
        );
        // `connect_raw` has no timeout of its own (the tokio-postgres one covers only the TCP
        // connect, which the tunnel replaced), so the handshake gets the same budget here.
        let timed_out = || WarehouseError::Unreachable {
            target: target.clone(),
            message: format!(
                "no PostgreSQL handshake within {} s",
                self.connect_timeout.as_secs()
            ),
        };
        let result = match tls {
            None => {
                match tokio::time::timeout(
                    self.connect_timeout,
                    config.connect_raw(stream, tokio_postgres::NoTls),
                )
                .await
                {
                    Err(_) => Err(timed_out()),
                    Ok(Err(e)) => Err(connect_error(e, &target)),
                    Ok(Ok((client, conn))) => Ok((client, Box::pin(conn) as BoxedConnection)),
                }
            }
            Some(tls) => {
                let mut make = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                match MakeTlsConnect::<ssh::TunnelStream>::make_tls_connect(&mut make, &o.host) {
                    Err(e) => Err(WarehouseError::Tls(format!(
                        "'{}' is not a valid TLS server name: {e}",
                        o.host
                    ))),
                    Ok(connector) => {
                        match tokio::time::timeout(
                            self.connect_timeout,
                            config.connect_raw(stream, connector),
                        )
                        .await
                        {
                            Err(_) => Err(timed_out()),
                            Ok(Err(e)) => Err(connect_error(e, &target)),
                            Ok(Ok((client, conn))) => {
                                Ok((client, Box::pin(conn) as BoxedConnection))
                            }
                        }
                    }
                }
            }
        };
        match result {
            Ok((client, conn)) => {
                drive(conn, Some(tunnel));
                Ok(client)
            }
            Err(e) => {
                tunnel.close().await;
                Err(e)
            }
        }
    }
}

/// A tokio-postgres connection future, whatever stream and TLS it runs on.
type BoxedConnection =
    std::pin::Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// Runs a session's connection until its client is dropped or the socket fails, then closes
/// its tunnel explicitly, so the SSH session ends with the Postgres session that used it.
fn drive<F>(conn: F, tunnel: Option<ssh::Tunnel>)
where
    F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
        if let Some(tunnel) = tunnel {
            tunnel.close().await;
        }
    });
}

/// The plan for reading `source`: its columns, what to select and how to decode each column.
struct Plan {
    columns: Arc<[Column]>,
    reads: Vec<Read>,
    from: String,
    select_list: String,
    /// The source's columns as the server typed them (before casts).
    source_types: Vec<tokio_postgres::types::Type>,
}

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

async fn plan(client: &Client, source: &ReadSource) -> Result<Plan, WarehouseError> {
    let from = from_clause(source)?;
    let probe = client
        .prepare(&format!("SELECT * FROM {from}"))
        .await
        .map_err(query_error)?;
    let mut columns = Vec::new();
    let mut reads = Vec::new();
    let mut list = Vec::new();
    let mut source_types = Vec::new();
    for c in probe.columns() {
        let (kind, read) = types::plan(c.type_());
        let q = quote_ident(c.name());
        list.push(format!("ferry_src.{q}{} AS {q}", types::cast(&read)));
        columns.push(Column::new(c.name(), kind));
        reads.push(read);
        source_types.push(c.type_().clone());
    }
    Ok(Plan {
        columns: columns.into(),
        reads,
        from,
        select_list: if list.is_empty() {
            "*".into()
        } else {
            list.join(", ")
        },
        source_types,
    })
}

fn decode(row: &Row, plan: &Plan) -> Result<Vec<Value>, WarehouseError> {
    plan.reads
        .iter()
        .enumerate()
        .map(|(i, read)| {
            let cell: Cell = row.try_get(i).map_err(|e| WarehouseError::Value {
                column: plan.columns[i].name.clone(),
                message: e.to_string(),
            })?;
            Ok(types::finish(read, cell.0))
        })
        .collect()
}

fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                message.push_str(": ");
                message.push_str(&s.to_string());
                source = s.source();
            }
            message
        }
    }
}

fn is_tls_failure(e: &tokio_postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return true;
            }
        }
        source = s.source();
    }
    // tokio-postgres' own TLS errors, e.g. "server does not support TLS".
    e.to_string().contains("TLS")
}

/// An error while opening a session.
fn connect_error(e: tokio_postgres::Error, target: &str) -> WarehouseError {
    let message = db_message(&e);
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        return if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            WarehouseError::Authentication(message)
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            WarehouseError::NotFound {
                object: "database".into(),
                message,
            }
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            WarehouseError::Privilege(message)
        } else if *code == SqlState::TOO_MANY_CONNECTIONS || *code == SqlState::CANNOT_CONNECT_NOW {
            WarehouseError::Unreachable {
                target: target.to_owned(),
                message,
            }
        } else {
            WarehouseError::Query(message)
        };
    }
    if is_tls_failure(&e) {
        return WarehouseError::Tls(message);
    }
    WarehouseError::Unreachable {
        target: target.to_owned(),
        message,
    }
}

/// An error on an open session.
fn query_error(e: tokio_postgres::Error) -> WarehouseError {
    let message = db_message(&e);
    let Some(db) = e.as_db_error() else {
        // No server error: the socket closed or failed.
        return WarehouseError::ConnectionLost(message);
    };
    let code = db.code();
    let not_found = |object: &str| WarehouseError::NotFound {
        object: object.into(),
        message: message.clone(),
    };
    if *code == SqlState::UNDEFINED_TABLE {
        not_found("table")
    } else if *code == SqlState::INVALID_SCHEMA_NAME {
        not_found("schema")
    } else if *code == SqlState::UNDEFINED_COLUMN {
        not_found("column")
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        WarehouseError::Privilege(message)
    } else if *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || code.code().starts_with("08")
    {
        WarehouseError::ConnectionLost(message)
    } else {
        WarehouseError::Query(message)
    }
}

async fn fetch_all(
    client: &Client,
    statement: &Statement,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Row>, WarehouseError> {
    client.query(statement, params).await.map_err(query_error)
}

#[async_trait]
impl Warehouse for PostgresWarehouse {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn test_connection(&self) -> Result<(), WarehouseError> {
        let client = self.connect().await?;
        client.simple_query("SELECT 1").await.map_err(query_error)?;
        Ok(())
    }

    async fn list_tables(&self) -> Result<Vec<TableInfo>, WarehouseError> {
        let client = self.connect().await?;
        let statement = client
            .prepare(
                "SELECT n.nspname::text, c.relname::text, c.relkind::text \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                   AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
                 ORDER BY 1, 2",
            )
            .await
            .map_err(query_error)?;
        let rows = fetch_all(&client, &statement, &[]).await?;
        rows.iter()
            .map(|r| {
                let get = |i| -> Result<String, WarehouseError> {
                    r.try_get(i)
                        .map_err(|e| WarehouseError::Query(e.to_string()))
                };
                let kind = match get(2)?.as_str() {
                    "r" => "table",
                    "p" => "partitioned table",
                    "v" => "view",
                    "m" => "materialized view",
                    "f" => "foreign table",
                    _ => "other",
                };
                Ok(TableInfo {
                    schema: Some(get(0)?),
                    name: get(1)?,
                    kind: kind.into(),
                })
            })
            .collect()
    }

    async fn columns(&self, source: &ReadSource) -> Result<Vec<Column>, WarehouseError> {
        let client = self.connect().await?;
        Ok(plan(&client, source).await?.columns.to_vec())
    }

    async fn preview(&self, source: &ReadSource, limit: usize) -> Result<RowBatch, WarehouseError> {
        let client = self.connect().await?;
        let plan = plan(&client, source).await?;
        let sql = format!(
            "SELECT {} FROM {} LIMIT $1::int8",
            plan.select_list, plan.from
        );
        let statement = client.prepare(&sql).await.map_err(query_error)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = fetch_all(&client, &statement, &[&limit]).await?;
        let rows = rows
            .iter()
            .map(|r| decode(r, &plan))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RowBatch::new(plan.columns.clone(), rows))
    }

    async fn read(
        &self,
        request: &ReadRequest,
        out: mpsc::Sender<Page>,
    ) -> Result<ReadSummary, WarehouseError> {
        let client = self.connect().await?;
        let plan = plan(&client, &request.source).await?;
        let mut sql = format!("SELECT {} FROM {}", plan.select_list, plan.from);
        let mut params = Vec::new();
        let mut cursor_index = None;
        if let Some(cursor) = &request.cursor {
            let index = column_index(&plan.columns, &cursor.column).ok_or_else(|| {
                WarehouseError::NotFound {
                    object: format!("cursor column '{}'", cursor.column),
                    message: "the source has no such column".into(),
                }
            })?;
            cursor_index = Some(index);
            let col = format!("ferry_src.{}", quote_ident(&cursor.column));
            sql.push_str(&format!(" WHERE {col} IS NOT NULL"));
            if let Some(after) = &cursor.after {
                let text = types::cursor_text(after).ok_or_else(|| {
                    WarehouseError::Config(format!("{after:?} cannot be a cursor value"))
                })?;
                let ty = &plan.source_types[index];
                sql.push_str(&format!(
                    " AND {col} > CAST($1::text AS {}.{})",
                    quote_ident(ty.schema()),
                    quote_ident(ty.name())
                ));
                params.push(text);
            }
            sql.push_str(&format!(" ORDER BY {col}"));
        }
        let statement = client.prepare(&sql).await.map_err(query_error)?;
        let stream = client
            .query_raw(&statement, params.iter())
            .await
            .map_err(query_error)?;
        let mut stream = std::pin::pin!(stream);
        let mut pager = Pager::new(plan.columns.clone(), cursor_index, request.page_size);
        let mut summary = ReadSummary::default();
        while let Some(row) = stream.try_next().await.map_err(query_error)? {
            if let Some(page) = pager.push(decode(&row, &plan)?) {
                summary.rows += page.batch.len() as u64;
                summary.pages += 1;
                out.send(page).await.map_err(|_| WarehouseError::Stopped)?;
            }
        }
        if let Some(page) = pager.finish() {
            summary.rows += page.batch.len() as u64;
            summary.pages += 1;
            out.send(page).await.map_err(|_| WarehouseError::Stopped)?;
        }
        Ok(summary)
    }
}

impl From<&PostgresOptions> for PostgresWarehouse {
    fn from(options: &PostgresOptions) -> Self {
        Self::new(options.clone())
    }
}
