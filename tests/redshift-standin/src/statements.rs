//! Statements and their life: SUBMITTED → PICKED → STARTED → FINISHED / FAILED / ABORTED,
//! run in the background on PostgreSQL so clients have to poll, as with Redshift.
//!
//! One `ExecuteStatement` runs in a session of its own; a `BatchExecuteStatement` runs its SQL
//! in order in one transaction (a failure rolls back all of it), each with a sub-statement id
//! `<uuid>:<n>`. Results stay in memory until the stand-in stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde_json::{json, Value as Json};
use tokio::task::AbortHandle;

use crate::config::{Login, StandinConfig};
use crate::pg::{self, Output};
use crate::protocol::{epoch_seconds, ApiError};
use crate::sql::Bound;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Submitted,
    Picked,
    Started,
    Finished,
    Failed,
    Aborted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "SUBMITTED",
            Status::Picked => "PICKED",
            Status::Started => "STARTED",
            Status::Finished => "FINISHED",
            Status::Failed => "FAILED",
            Status::Aborted => "ABORTED",
        }
    }

    pub fn is_done(self) -> bool {
        matches!(self, Status::Finished | Status::Failed | Status::Aborted)
    }
}

/// Which cluster or workgroup, database and identity a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub cluster: Option<String>,
    pub workgroup: Option<String>,
    pub database: String,
    pub db_user: Option<String>,
    pub secret_arn: Option<String>,
}

impl Target {
    fn echo(&self, out: &mut serde_json::Map<String, Json>) {
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                out.insert(k.into(), Json::String(v.clone()));
            }
        };
        put("ClusterIdentifier", &self.cluster);
        put("WorkgroupName", &self.workgroup);
        put("DbUser", &self.db_user);
        put("SecretArn", &self.secret_arn);
        out.insert("Database".into(), Json::String(self.database.clone()));
    }
}

#[derive(Debug, Clone)]
struct Sub {
    status: Status,
    error: Option<String>,
    output: Option<Arc<Output>>,
    started: Option<Instant>,
    duration: Option<Duration>,
    updated_at: DateTime<Utc>,
}

struct State {
    status: Status,
    error: Option<String>,
    updated_at: DateTime<Utc>,
    started: Option<Instant>,
    duration: Option<Duration>,
    subs: Vec<Sub>,
    cancel: Option<tokio_postgres::CancelToken>,
    task: Option<AbortHandle>,
    pid: i64,
    describe_calls: u64,
}

/// One submitted statement (or batch).
pub struct Entry {
    pub id: String,
    pub batch: bool,
    pub sqls: Vec<String>,
    pub parameters: Vec<(String, String)>,
    pub target: Target,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    bound: Vec<Bound>,
    state: Mutex<State>,
}

/// What a `ClientToken` was first used for: a retry with the same token gets the same answer.
struct TokenUse {
    fingerprint: Json,
    id: String,
}

/// Every statement the stand-in has seen.
#[derive(Default)]
pub struct Statements {
    by_id: Mutex<HashMap<String, Arc<Entry>>>,
    order: Mutex<Vec<String>>,
    tokens: Mutex<HashMap<String, TokenUse>>,
}

/// A new statement id (a random UUID, as Redshift's are).
fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

pub struct Submission {
    pub batch: bool,
    pub sqls: Vec<String>,
    pub bound: Vec<Bound>,
    pub parameters: Vec<(String, String)>,
    pub target: Target,
    pub name: Option<String>,
    pub client_token: Option<String>,
    /// The request members that must match when a `ClientToken` is reused.
    pub fingerprint: Json,
}

impl Statements {
    /// Registers a statement and starts running it; with a reused `ClientToken`, returns the
    /// statement that token first started instead.
    pub fn submit(
        &self,
        config: &Arc<StandinConfig>,
        submission: Submission,
        login: Login,
    ) -> Result<Arc<Entry>, ApiError> {
        let mut tokens = self.tokens.lock();
        if let Some(token) = &submission.client_token {
            if let Some(used) = tokens.get(token) {
                if used.fingerprint != submission.fingerprint {
                    return Err(ApiError::validation(
                        "ClientToken was already used with different parameters",
                    ));
                }
                if let Some(entry) = self.get(&used.id) {
                    return Ok(entry);
                }
            }
        }
        let now = Utc::now();
        let sub = Sub {
            status: Status::Submitted,
            error: None,
            output: None,
            started: None,
            duration: None,
            updated_at: now,
        };
        let entry = Arc::new(Entry {
            id: new_id(),
            batch: submission.batch,
            sqls: submission.sqls,
            parameters: submission.parameters,
            target: submission.target,
            name: submission.name,
            created_at: now,
            state: Mutex::new(State {
                status: Status::Submitted,
                error: None,
                updated_at: now,
                started: None,
                duration: None,
                subs: vec![sub; submission.bound.len()],
                cancel: None,
                task: None,
                pid: 0,
                describe_calls: 0,
            }),
            bound: submission.bound,
        });
        if let Some(token) = submission.client_token {
            tokens.insert(
                token,
                TokenUse {
                    fingerprint: submission.fingerprint,
                    id: entry.id.clone(),
                },
            );
        }
        self.by_id.lock().insert(entry.id.clone(), entry.clone());
        self.order.lock().push(entry.id.clone());
        drop(tokens);
        let task = tokio::spawn(execute(entry.clone(), config.clone(), login));
        let mut state = entry.state.lock();
        if !state.status.is_done() {
            state.task = Some(task.abort_handle());
        }
        drop(state);
        Ok(entry)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.by_id.lock().get(id).cloned()
    }

    /// The statement and, for `<uuid>:<n>`, the sub-statement index `n - 1`.
    pub fn find(&self, id: &str) -> Result<(Arc<Entry>, Option<usize>), ApiError> {
        if let Some(entry) = self.get(id) {
            return Ok((entry, None));
        }
        if let Some((parent, n)) = id.rsplit_once(':') {
            if let (Some(entry), Ok(n)) = (self.get(parent), n.parse::<usize>()) {
                if entry.batch && n >= 1 && n <= entry.sqls.len() {
                    return Ok((entry, Some(n - 1)));
                }
            }
        }
        Err(ApiError::not_found(id))
    }

    /// All statements, newest first.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        let order = self.order.lock().clone();
        order.iter().rev().filter_map(|id| self.get(id)).collect()
    }
}

impl Entry {
    pub fn status(&self) -> Status {
        self.state.lock().status
    }

    pub fn describe_calls(&self) -> u64 {
        self.state.lock().describe_calls
    }

    /// The `ExecuteStatement` / `BatchExecuteStatement` answer.
    pub fn submitted_json(&self) -> Json {
        let mut out = serde_json::Map::new();
        out.insert("Id".into(), Json::String(self.id.clone()));
        out.insert("CreatedAt".into(), json!(epoch_seconds(self.created_at)));
        self.target.echo(&mut out);
        Json::Object(out)
    }

    fn query_parameters(&self) -> Json {
        Json::Array(
            self.parameters
                .iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect(),
        )
    }

    /// The `DescribeStatement` answer, for the statement or one of its sub-statements.
    pub fn describe(&self, sub: Option<usize>) -> Json {
        let mut state = self.state.lock();
        state.describe_calls += 1;
        let mut out = serde_json::Map::new();
        self.target.echo(&mut out);
        out.insert("CreatedAt".into(), json!(epoch_seconds(self.created_at)));
        out.insert("RedshiftPid".into(), json!(state.pid));
        out.insert("QueryParameters".into(), self.query_parameters());
        if let Some(name) = &self.name {
            out.insert("StatementName".into(), json!(name));
        }
        let sub_json = |k: usize, s: &Sub| {
            let mut o = serde_json::Map::new();
            o.insert("Id".into(), json!(format!("{}:{}", self.id, k + 1)));
            o.insert("Status".into(), json!(s.status.as_str()));
            o.insert("QueryString".into(), json!(self.sqls[k]));
            o.insert("CreatedAt".into(), json!(epoch_seconds(self.created_at)));
            o.insert("UpdatedAt".into(), json!(epoch_seconds(s.updated_at)));
            o.insert("Duration".into(), json!(nanos(s.duration)));
            o.insert(
                "HasResultSet".into(),
                json!(s.output.as_ref().is_some_and(|r| r.columns.is_some())),
            );
            o.insert(
                "ResultRows".into(),
                json!(s.output.as_ref().map_or(-1, |r| r.row_count)),
            );
            o.insert(
                "ResultSize".into(),
                json!(s.output.as_ref().map_or(-1, |r| r.size)),
            );
            o.insert("RedshiftQueryId".into(), json!(k as i64 + 1));
            if let Some(e) = &s.error {
                o.insert("Error".into(), json!(e));
            }
            o
        };
        match sub {
            Some(k) => {
                for (key, value) in sub_json(k, &state.subs[k]) {
                    out.insert(key, value);
                }
            }
            None => {
                out.insert("Id".into(), json!(self.id));
                out.insert("Status".into(), json!(state.status.as_str()));
                out.insert("UpdatedAt".into(), json!(epoch_seconds(state.updated_at)));
                out.insert("Duration".into(), json!(nanos(state.duration)));
                if let Some(e) = &state.error {
                    out.insert("Error".into(), json!(e));
                }
                if self.batch {
                    out.insert(
                        "SubStatements".into(),
                        Json::Array(
                            state
                                .subs
                                .iter()
                                .enumerate()
                                .map(|(k, s)| Json::Object(sub_json(k, s)))
                                .collect(),
                        ),
                    );
                    out.insert("HasResultSet".into(), json!(false));
                    out.insert("ResultRows".into(), json!(-1));
                    out.insert("ResultSize".into(), json!(-1));
                    out.insert("QueryString".into(), json!(self.sqls.join("; ")));
                } else {
                    let only = sub_json(0, &state.subs[0]);
                    for key in ["HasResultSet", "ResultRows", "ResultSize", "QueryString"] {
                        if let Some(v) = only.get(key) {
                            out.insert(key.into(), v.clone());
                        }
                    }
                    out.insert("RedshiftQueryId".into(), json!(1));
                }
            }
        }
        Json::Object(out)
    }

    /// The `ListStatements` entry.
    pub fn summary(&self) -> Json {
        let state = self.state.lock();
        let mut o = serde_json::Map::new();
        o.insert("Id".into(), json!(self.id));
        o.insert("Status".into(), json!(state.status.as_str()));
        o.insert("CreatedAt".into(), json!(epoch_seconds(self.created_at)));
        o.insert("UpdatedAt".into(), json!(epoch_seconds(state.updated_at)));
        o.insert("IsBatchStatement".into(), json!(self.batch));
        o.insert("QueryParameters".into(), self.query_parameters());
        if self.batch {
            o.insert("QueryStrings".into(), json!(self.sqls));
        } else {
            o.insert("QueryString".into(), json!(self.sqls[0]));
        }
        if let Some(name) = &self.name {
            o.insert("StatementName".into(), json!(name));
        }
        if let Some(arn) = &self.target.secret_arn {
            o.insert("SecretArn".into(), json!(arn));
        }
        Json::Object(o)
    }

    /// The result of a finished statement (or sub-statement) that returned rows.
    pub fn result(&self, sub: Option<usize>) -> Result<Arc<Output>, ApiError> {
        let state = self.state.lock();
        let k = match sub {
            Some(k) => k,
            None if self.batch => {
                return Err(ApiError::validation(format!(
                    "{} is a batch statement: ask for the result of a sub-statement ({}:1, …)",
                    self.id, self.id
                )))
            }
            None => 0,
        };
        let s = &state.subs[k];
        match (&s.status, &s.output) {
            (Status::Finished, Some(output)) if output.columns.is_some() => Ok(output.clone()),
            _ => Err(ApiError::validation(
                "Query does not have result. Please check query status with DescribeStatement.",
            )),
        }
    }

    /// Cancels a statement that has not finished.
    pub fn cancel(&self) -> Result<(), ApiError> {
        let mut state = self.state.lock();
        if state.status.is_done() {
            return Err(ApiError::validation(format!(
                "Could not cancel a query that is already in {} state with ID: {}",
                state.status.as_str(),
                self.id
            )));
        }
        if let Some(task) = state.task.take() {
            task.abort();
        }
        if let Some(token) = state.cancel.take() {
            tokio::spawn(async move {
                let _ = token.cancel_query(tokio_postgres::NoTls).await;
            });
        }
        let now = Utc::now();
        state.status = Status::Aborted;
        state.updated_at = now;
        state.duration = state.started.map(|s| s.elapsed());
        for sub in state.subs.iter_mut().filter(|s| !s.status.is_done()) {
            sub.status = Status::Aborted;
            sub.updated_at = now;
        }
        Ok(())
    }

    /// Applies `f` unless the statement already ended (e.g. was cancelled meanwhile).
    fn update(&self, f: impl FnOnce(&mut State)) -> bool {
        let mut state = self.state.lock();
        if state.status.is_done() {
            return false;
        }
        f(&mut state);
        state.updated_at = Utc::now();
        true
    }
}

fn nanos(d: Option<Duration>) -> i64 {
    d.map_or(-1, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

async fn execute(entry: Arc<Entry>, config: Arc<StandinConfig>, login: Login) {
    let timing = &config.timing;
    tokio::time::sleep(timing.queue_delay / 2).await;
    entry.update(|s| s.status = Status::Picked);
    tokio::time::sleep(timing.queue_delay / 2).await;
    let started = Instant::now();
    if !entry.update(|s| {
        s.status = Status::Started;
        s.started = Some(started);
    }) {
        return;
    }
    let fail = |k: Option<usize>, message: String| {
        entry.update(|s| {
            let now = Utc::now();
            s.status = Status::Failed;
            s.error = Some(message.clone());
            s.duration = Some(started.elapsed());
            for (i, sub) in s.subs.iter_mut().enumerate() {
                if Some(i) == k {
                    sub.status = Status::Failed;
                    sub.error = Some(message.clone());
                    sub.duration = sub.started.map(|t| t.elapsed());
                } else if !sub.status.is_done() {
                    sub.status = Status::Aborted;
                }
                sub.updated_at = now;
            }
        });
    };
    let client = match pg::connect(&config.postgres, &entry.target.database, &login).await {
        Ok(client) => client,
        Err(message) => return fail((!entry.batch).then_some(0), message),
    };
    let pid = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ok()
        .and_then(|r| r.try_get::<_, i32>(0).ok())
        .unwrap_or(0);
    entry.update(|s| {
        s.cancel = Some(client.cancel_token());
        s.pid = pid.into();
    });
    if entry.batch {
        if let Err(e) = client.batch_execute("BEGIN").await {
            return fail(None, pg::describe_error(&e));
        }
    }
    for (k, bound) in entry.bound.iter().enumerate() {
        let sub_started = Instant::now();
        entry.update(|s| {
            s.subs[k].status = Status::Started;
            s.subs[k].started = Some(sub_started);
            s.subs[k].updated_at = Utc::now();
        });
        match pg::run(&client, &bound.sql, &bound.values).await {
            Ok(output) => {
                let last = k + 1 == entry.bound.len();
                if last {
                    if entry.batch {
                        if let Err(e) = client.batch_execute("COMMIT").await {
                            return fail(Some(k), pg::describe_error(&e));
                        }
                    }
                    // Fast SQL is held back so clients see a running statement and poll.
                    if let Some(rest) = timing.min_run.checked_sub(started.elapsed()) {
                        tokio::time::sleep(rest).await;
                    }
                }
                entry.update(|s| {
                    let now = Utc::now();
                    let sub = &mut s.subs[k];
                    sub.status = Status::Finished;
                    sub.output = Some(Arc::new(output));
                    sub.duration = Some(sub_started.elapsed());
                    sub.updated_at = now;
                    if last {
                        s.status = Status::Finished;
                        s.duration = Some(started.elapsed());
                        s.cancel = None;
                        s.task = None;
                    }
                });
            }
            Err(message) => {
                if entry.batch {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
                return fail(Some(k), message);
            }
        }
    }
}
