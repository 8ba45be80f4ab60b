//! The HTTP side: `POST /` with `x-amz-target: RedshiftData.<Operation>` and a JSON 1.1 body,
//! answered with JSON 1.1 (errors as HTTP 400 with `__type`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;
use serde_json::{json, Value as Json};
use tokio::sync::oneshot;

use crate::auth::{self, SignedBy};
use crate::config::{Endpoint, Login, StandinConfig};
use crate::pg;
use crate::protocol::{ApiError, Input};
use crate::sql;
use crate::statements::{Entry, Statements, Status, Submission, Target};

struct Shared {
    config: Arc<StandinConfig>,
    statements: Statements,
    throttle_next: AtomicU32,
    calls: Mutex<BTreeMap<String, u64>>,
}

/// A running stand-in; it stops when dropped.
pub struct RunningStandin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a test can learn about one statement the stand-in ran.
#[derive(Debug, Clone)]
pub struct StatementRecord {
    pub id: String,
    pub sqls: Vec<String>,
    pub parameters: Vec<(String, String)>,
    pub status: &'static str,
    pub describe_calls: u64,
    pub batch: bool,
}

impl RunningStandin {
    /// `http://127.0.0.1:<port>`: the SDK's `endpoint_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the next `n` requests with `ThrottlingException`, as the Data API does when its
    /// request rate is exceeded.
    pub fn throttle_next(&self, n: u32) {
        self.shared.throttle_next.store(n, Ordering::SeqCst);
    }

    /// Requests received per operation (throttled and refused ones included).
    pub fn calls(&self, operation: &str) -> u64 {
        self.shared
            .calls
            .lock()
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Every statement submitted so far, oldest first.
    pub fn statements(&self) -> Vec<StatementRecord> {
        let mut all: Vec<StatementRecord> = self
            .shared
            .statements
            .all()
            .iter()
            .map(|e| StatementRecord {
                id: e.id.clone(),
                sqls: e.sqls.clone(),
                parameters: e.parameters.clone(),
                status: e.status().as_str(),
                describe_calls: e.describe_calls(),
                batch: e.batch,
            })
            .collect();
        all.reverse();
        all
    }
}

impl Drop for RunningStandin {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

/// Starts serving on `config.listen`.
pub async fn start(config: StandinConfig) -> std::io::Result<RunningStandin> {
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        config: Arc::new(config),
        statements: Statements::default(),
        throttle_next: AtomicU32::new(0),
        calls: Mutex::new(BTreeMap::new()),
    });
    let app = Router::new()
        .route("/", post(handle))
        .with_state(shared.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = rx.await;
        });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "redshift stand-in stopped");
        }
    });
    Ok(RunningStandin {
        addr,
        shared,
        shutdown: Some(tx),
        task,
    })
}

const JSON_11: &str = "application/x-amz-json-1.1";

fn answer(status: StatusCode, body: Json) -> Response {
    let request_id = uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .to_string();
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(JSON_11));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    response
}

fn error_response(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = answer(status, e.body());
    if let Ok(v) = HeaderValue::from_str(e.kind) {
        response.headers_mut().insert("x-amzn-errortype", v);
    }
    response
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let operation = match header("x-amz-target").and_then(|t| t.strip_prefix("RedshiftData.")) {
        Some(op) => op.to_owned(),
        None => {
            return error_response(ApiError::new(
                "UnknownOperationException",
                "x-amz-target must be RedshiftData.<Operation>",
            ))
        }
    };
    *shared.calls.lock().entry(operation.clone()).or_default() += 1;
    match dispatch(&shared, &operation, &headers, &body).await {
        Ok(json) => answer(StatusCode::OK, json),
        Err(e) => error_response(e),
    }
}

async fn dispatch(
    shared: &Arc<Shared>,
    operation: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !header("content-type").is_some_and(|c| c.starts_with(JSON_11)) {
        return Err(ApiError::new(
            "SerializationException",
            format!("Content-Type must be {JSON_11}"),
        ));
    }
    let signed = auth::check(header("authorization"), header("x-amz-date"))?;
    authorize(shared, &signed, operation)?;
    let throttled = shared
        .throttle_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if throttled {
        return Err(ApiError::new("ThrottlingException", "Rate exceeded"));
    }
    let input: Json = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::new("SerializationException", e.to_string()))?
    };
    if !input.is_object() {
        return Err(ApiError::new(
            "SerializationException",
            "the body must be a JSON object",
        ));
    }
    let input = Input(&input);
    match operation {
        "ExecuteStatement" => execute(shared, &input, &signed, false),
        "BatchExecuteStatement" => execute(shared, &input, &signed, true),
        "DescribeStatement" => {
            let (entry, sub) = shared.statements.find(input.required_str("Id")?)?;
            Ok(entry.describe(sub))
        }
        "GetStatementResult" => result_page(shared, &input),
        "CancelStatement" => {
            let (entry, _) = shared.statements.find(input.required_str("Id")?)?;
            entry.cancel()?;
            Ok(json!({"Status": true}))
        }
        "ListStatements" => list_statements(shared, &input),
        "ListTables" => list_tables(shared, &input, &signed).await,
        other => Err(ApiError::new(
            "UnknownOperationException",
            format!("the Redshift Data API stand-in does not implement {other}"),
        )),
    }
}

/// Access keys: unknown ones are refused as AWS refuses them, and denied operations answer as
/// IAM would. With no keys configured, any key passes.
fn authorize(shared: &Shared, signed: &SignedBy, operation: &str) -> Result<(), ApiError> {
    let keys = &shared.config.access_keys;
    if keys.is_empty() {
        return Ok(());
    }
    let Some(key) = keys.get(&signed.access_key_id) else {
        return Err(ApiError::new(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    };
    if key
        .denied_operations
        .iter()
        .any(|d| d == "*" || d == operation)
    {
        return Err(ApiError::new(
            "AccessDeniedException",
            format!(
                "User: arn:aws:iam::000000000000:user/{} is not authorized to perform: redshift-data:{operation} because no identity-based policy allows the redshift-data:{operation} action",
                signed.access_key_id
            ),
        ));
    }
    Ok(())
}

/// The cluster or workgroup, database and PostgreSQL login a request resolves to.
fn resolve(
    shared: &Shared,
    input: &Input<'_>,
    signed: &SignedBy,
) -> Result<(Target, Login), ApiError> {
    let config = &shared.config;
    let cluster = input.str("ClusterIdentifier")?;
    let workgroup = input.str("WorkgroupName")?;
    let endpoint: &Endpoint = match (cluster, workgroup) {
        (None, None) => {
            return Err(ApiError::validation(
                "Either ClusterIdentifier or WorkgroupName needs to be specified.",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::validation(
                "ClusterIdentifier and WorkgroupName cannot both be specified.",
            ))
        }
        (Some(c), None) => config
            .clusters
            .iter()
            .find(|e| e.name == c)
            .ok_or_else(|| {
                ApiError::validation("Redshift endpoint doesn't exist in this region.")
            })?,
        (None, Some(w)) => config
            .workgroups
            .iter()
            .find(|e| e.name == w)
            .ok_or_else(|| {
                ApiError::new(
                    "ResourceNotFoundException",
                    format!("Workgroup {w} does not exist."),
                )
                .with("ResourceId", json!(w))
            })?,
    };
    let database = input
        .str("Database")?
        .or(input.str("ConnectedDatabase")?)
        .ok_or_else(|| ApiError::validation("Database is required."))?;
    let db_user = input.str("DbUser")?;
    let secret_arn = input.str("SecretArn")?;
    let login = match (db_user, secret_arn) {
        (Some(_), Some(_)) => {
            return Err(ApiError::validation(
                "DbUser and SecretArn cannot both be specified.",
            ))
        }
        (None, Some(arn)) => config.secrets.get(arn).cloned().ok_or_else(|| {
            ApiError::validation(format!(
                "Secrets Manager can't find the specified secret: {arn}"
            ))
        })?,
        (Some(_), None) if workgroup.is_some() => return Err(ApiError::validation(
            "DbUser is not supported for serverless workgroups; use a secret or your IAM identity.",
        )),
        // Redshift would issue temporary credentials for the user; an unknown user fails at
        // login, like a user GetClusterCredentials cannot create.
        (Some(user), None) => Login {
            username: user.to_owned(),
            password: endpoint.db_users.get(user).cloned().unwrap_or_default(),
        },
        (None, None) => endpoint.iam_login.clone().unwrap_or(Login {
            username: format!("IAM:{}", signed.access_key_id),
            password: String::new(),
        }),
    };
    Ok((
        Target {
            cluster: cluster.map(str::to_owned),
            workgroup: workgroup.map(str::to_owned),
            database: database.to_owned(),
            db_user: db_user.map(str::to_owned),
            secret_arn: secret_arn.map(str::to_owned),
        },
        login,
    ))
}

fn execute(
    shared: &Arc<Shared>,
    input: &Input<'_>,
    signed: &SignedBy,
    batch: bool,
) -> Result<Json, ApiError> {
    if input.str("SessionId")?.is_some() || input.int("SessionKeepAliveSeconds")?.is_some() {
        return Err(ApiError::validation(
            "the stand-in does not implement sessions (SessionId, SessionKeepAliveSeconds)",
        ));
    }
    let (target, login) = resolve(shared, input, signed)?;
    let sqls = if batch {
        let sqls = input
            .strings("Sqls")?
            .ok_or_else(|| ApiError::validation("Sqls is required."))?;
        if sqls.is_empty() || sqls.len() > 40 {
            return Err(ApiError::validation("Sqls must hold 1 to 40 statements."));
        }
        sqls
    } else {
        vec![input.required_str("Sql")?.to_owned()]
    };
    if sqls.iter().any(|s| s.trim().is_empty()) {
        return Err(ApiError::validation("SQL statements must not be empty."));
    }
    let parameters = input.parameters()?;
    if batch && !parameters.is_empty() {
        return Err(ApiError::validation(
            "BatchExecuteStatement does not take Parameters.",
        ));
    }
    let bound = sqls
        .iter()
        .map(|s| sql::bind(&sql::translate(s), &parameters))
        .collect::<Result<Vec<_>, _>>()?;
    let fingerprint = json!({
        "batch": batch,
        "sqls": sqls,
        "parameters": parameters,
        "target": format!("{target:?}"),
    });
    let entry = shared.statements.submit(
        &shared.config,
        Submission {
            batch,
            sqls,
            bound,
            parameters,
            target,
            name: input.str("StatementName")?.map(str::to_owned),
            client_token: input.str("ClientToken")?.map(str::to_owned),
            fingerprint,
        },
        login,
    )?;
    Ok(entry.submitted_json())
}

fn offset_token(input: &Input<'_>) -> Result<usize, ApiError> {
    match input.str("NextToken")? {
        None | Some("") => Ok(0),
        Some(t) => t
            .strip_prefix("ferry-standin-offset-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ApiError::validation("Invalid NextToken.")),
    }
}

fn next_token(offset: usize, total: usize) -> Option<String> {
    (offset < total).then(|| format!("ferry-standin-offset-{offset}"))
}

fn result_page(shared: &Shared, input: &Input<'_>) -> Result<Json, ApiError> {
    let (entry, sub) = shared.statements.find(input.required_str("Id")?)?;
    let output = entry.result(sub)?;
    let start = offset_token(input)?;
    let end = (start + shared.config.page_rows.max(1)).min(output.rows.len());
    let start = start.min(end);
    let records: Vec<Json> = output.rows[start..end]
        .iter()
        .map(|row| Json::Array(row.iter().map(|f| f.to_json()).collect()))
        .collect();
    let columns: Vec<Json> = output
        .columns
        .iter()
        .flatten()
        .map(|c| c.to_json())
        .collect();
    let mut out = json!({
        "Records": records,
        "ColumnMetadata": columns,
        "TotalNumRows": output.rows.len(),
    });
    if let Some(token) = next_token(end, output.rows.len()) {
        out["NextToken"] = json!(token);
    }
    Ok(out)
}

fn list_statements(shared: &Shared, input: &Input<'_>) -> Result<Json, ApiError> {
    let status = input.str("Status")?.unwrap_or("ALL");
    let name = input.str("StatementName")?;
    let max = input.int("MaxResults")?.unwrap_or(100).clamp(1, 100) as usize;
    let matching: Vec<Arc<Entry>> = shared
        .statements
        .all()
        .into_iter()
        .filter(|e| status == "ALL" || e.status().as_str() == status)
        .filter(|e| name.is_none_or(|n| e.name.as_deref().is_some_and(|s| s.starts_with(n))))
        .collect();
    let start = offset_token(input)?.min(matching.len());
    let end = (start + max).min(matching.len());
    let mut out = json!({
        "Statements": matching[start..end].iter().map(|e| e.summary()).collect::<Vec<_>>(),
    });
    if let Some(token) = next_token(end, matching.len()) {
        out["NextToken"] = json!(token);
    }
    Ok(out)
}

/// `ListTables` runs synchronously, as Redshift's does; a failed login is a
/// `DatabaseConnectionException`.
async fn list_tables(
    shared: &Shared,
    input: &Input<'_>,
    signed: &SignedBy,
) -> Result<Json, ApiError> {
    let (target, login) = resolve(shared, input, signed)?;
    let schema = input.str("SchemaPattern")?.unwrap_or("%");
    let table = input.str("TablePattern")?.unwrap_or("%");
    let max = input.int("MaxResults")?.unwrap_or(1000).clamp(1, 1000) as usize;
    let client = pg::connect(&shared.config.postgres, &target.database, &login)
        .await
        .map_err(|m| ApiError::new("DatabaseConnectionException", m))?;
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, \
                    CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
               AND n.nspname NOT IN ('information_schema', 'pg_catalog', 'pg_toast') \
               AND n.nspname NOT LIKE 'pg\\_temp%' \
               AND n.nspname LIKE $1 AND c.relname LIKE $2 \
             ORDER BY 1, 2",
            &[&schema, &table],
        )
        .await
        .map_err(|e| ApiError::new("InternalServerException", pg::describe_error(&e)))?;
    let start = offset_token(input)?.min(rows.len());
    let end = (start + max).min(rows.len());
    let tables: Vec<Json> = rows[start..end]
        .iter()
        .map(|r| {
            json!({
                "schema": r.get::<_, String>(0),
                "name": r.get::<_, String>(1),
                "type": r.get::<_, String>(2),
            })
        })
        .collect();
    let mut out = json!({ "Tables": tables });
    if let Some(token) = next_token(end, rows.len()) {
        out["NextToken"] = json!(token);
    }
    Ok(out)
}

/// The status names, for tests that wait on a statement.
pub fn is_done(status: &str) -> bool {
    [Status::Finished, Status::Failed, Status::Aborted]
        .iter()
        .any(|s| s.as_str() == status)
}
