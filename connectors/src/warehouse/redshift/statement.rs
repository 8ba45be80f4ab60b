//! One SQL statement through the Data API: submit it, poll `DescribeStatement` with backoff until
//! it ends, then page through `GetStatementResult`. A statement dropped before it ended (its
//! reader was stopped) is cancelled, so the warehouse does not keep working for nobody.

use std::time::{Duration, Instant};

use aws_sdk_redshiftdata::types::{ColumnMetadata, Field, SqlParameter, StatusString};
use aws_sdk_redshiftdata::Client;
use ferry_core::spec::RedshiftOptions;

use super::error::{self, Context};
use crate::warehouse::WarehouseError;

/// How often a running statement is polled: quickly at first (most statements end within
/// milliseconds), then less and less often up to `max`.
#[derive(Debug, Clone, PartialEq)]
pub struct PollPolicy {
    pub first: Duration,
    pub max: Duration,
    pub factor: f64,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(25),
            max: Duration::from_secs(2),
            factor: 1.6,
        }
    }
}

impl PollPolicy {
    /// The wait before poll number `n` (0-based).
    pub fn delay(&self, n: u32) -> Duration {
        let grown = self.first.as_secs_f64() * self.factor.max(1.0).powi(n.min(64) as i32);
        Duration::from_secs_f64(grown.min(self.max.as_secs_f64()))
    }
}

/// Sets the cluster or workgroup, database and login members every targeted request has.
macro_rules! targeted {
    ($builder:expr, $options:expr) => {
        $builder
            .set_cluster_identifier($options.cluster_identifier.clone())
            .set_workgroup_name($options.workgroup_name.clone())
            .database($options.database.clone())
            .set_db_user($options.db_user.clone())
            .set_secret_arn($options.secret_arn.clone())
    };
}
pub(crate) use targeted;

/// A statement that has ended successfully.
#[derive(Debug, Clone)]
pub struct Finished {
    pub id: String,
    pub has_result_set: bool,
    /// Rows returned, or rows affected by DML (-1 when Redshift does not say).
    pub rows: i64,
}

/// A submitted statement. Dropping it before [`Running::wait`] returned cancels it.
pub struct Running {
    id: String,
    client: Client,
    context: Context,
    ended: bool,
}

/// Submits `sql` with its `:name` parameters bound.
pub async fn submit(
    client: &Client,
    options: &RedshiftOptions,
    context: &Context,
    sql: &str,
    parameters: &[(String, String)],
) -> Result<Running, WarehouseError> {
    let parameters = parameters
        .iter()
        .map(|(name, value)| {
            SqlParameter::builder()
                .name(name)
                .value(value)
                .build()
                .map_err(|e| WarehouseError::Config(format!("parameter '{name}': {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let request = targeted!(client.execute_statement(), options)
        .sql(sql)
        .statement_name("ferry")
        .set_parameters((!parameters.is_empty()).then_some(parameters));
    let out = request
        .send()
        .await
        .map_err(|e| error::from_sdk(e, context))?;
    let id = out.id().map(str::to_owned).ok_or_else(|| {
        WarehouseError::Query("ExecuteStatement answered without a statement id".into())
    })?;
    tracing::debug!(statement = %id, "redshift statement submitted");
    Ok(Running {
        id,
        client: client.clone(),
        context: context.clone(),
        ended: false,
    })
}

impl Running {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Polls until the statement ends: its summary when FINISHED, else the error its `Error`
    /// text describes.
    pub async fn wait(&mut self, poll: &PollPolicy) -> Result<Finished, WarehouseError> {
        let started = Instant::now();
        let mut n = 0;
        loop {
            tokio::time::sleep(poll.delay(n)).await;
            n = n.saturating_add(1);
            let out = self
                .client
                .describe_statement()
                .id(&self.id)
                .send()
                .await
                .map_err(|e| error::from_sdk(e, &self.context))?;
            match out.status() {
                Some(StatusString::Finished) => {
                    self.ended = true;
                    tracing::debug!(
                        statement = %self.id,
                        polls = n,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "redshift statement finished"
                    );
                    return Ok(Finished {
                        id: self.id.clone(),
                        has_result_set: out.has_result_set().unwrap_or(false),
                        rows: out.result_rows(),
                    });
                }
                Some(StatusString::Failed) => {
                    self.ended = true;
                    let message = out.error().unwrap_or("the statement failed");
                    return Err(error::from_statement_error(message, &self.context));
                }
                Some(StatusString::Aborted) => {
                    self.ended = true;
                    return Err(WarehouseError::Query(format!(
                        "statement {} was cancelled in the warehouse",
                        self.id
                    )));
                }
                _ => {}
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let id = std::mem::take(&mut self.id);
        runtime.spawn(async move {
            match client.cancel_statement().id(&id).send().await {
                Ok(_) => tracing::debug!(statement = %id, "redshift statement cancelled"),
                Err(e) => tracing::debug!(
                    statement = %id,
                    error = %aws_sdk_redshiftdata::error::DisplayErrorContext(&e),
                    "cancelling a redshift statement failed (it may have ended)"
                ),
            }
        });
    }
}

/// Runs `sql` to its end.
pub async fn run(
    client: &Client,
    options: &RedshiftOptions,
    context: &Context,
    poll: &PollPolicy,
    sql: &str,
    parameters: &[(String, String)],
) -> Result<Finished, WarehouseError> {
    let mut running = submit(client, options, context, sql, parameters).await?;
    running.wait(poll).await
}

/// One page of a result.
pub struct ResultPage {
    /// Sent with every page; `None` only if Redshift left it out.
    pub columns: Option<Vec<ColumnMetadata>>,
    pub records: Vec<Vec<Field>>,
}

/// The pages of a finished statement's result, fetched one at a time so only one page is in
/// memory here.
pub struct ResultPages {
    client: Client,
    context: Context,
    id: String,
    next: Option<String>,
    done: bool,
}

impl ResultPages {
    pub fn new(client: &Client, context: &Context, finished: &Finished) -> Self {
        Self {
            client: client.clone(),
            context: context.clone(),
            id: finished.id.clone(),
            next: None,
            done: false,
        }
    }

    /// The next page, or `None` after the last. Pagination ends when `NextToken` is absent or
    /// empty.
    pub async fn next(&mut self) -> Result<Option<ResultPage>, WarehouseError> {
        if self.done {
            return Ok(None);
        }
        let out = self
            .client
            .get_statement_result()
            .id(&self.id)
            .set_next_token(self.next.take())
            .send()
            .await
            .map_err(|e| error::from_sdk(e, &self.context))?;
        self.next = out
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        self.done = self.next.is_none();
        Ok(Some(ResultPage {
            columns: out.column_metadata,
            records: out.records,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_starts_fast_and_is_capped() {
        let p = PollPolicy {
            first: Duration::from_millis(10),
            max: Duration::from_millis(100),
            factor: 2.0,
        };
        let delays: Vec<u128> = (0..6).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 100, 100]);
        assert_eq!(p.delay(1000), Duration::from_millis(100));
    }
}
