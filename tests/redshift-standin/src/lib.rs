//! A stand-in for the Amazon Redshift Data API, for Ferry's tests: it speaks the real wire
//! protocol (AWS JSON 1.1 over `POST /`, `x-amz-target: RedshiftData.<Operation>`), so the
//! unchanged `aws-sdk-redshiftdata` client talks to it through `endpoint_url`, and it runs every
//! statement for real on a PostgreSQL server.
//!
//! Operations: `ExecuteStatement`, `BatchExecuteStatement`, `DescribeStatement`,
//! `GetStatementResult`, `CancelStatement`, `ListStatements`, `ListTables`.
//!
//! What it reproduces: asynchronous statements (SUBMITTED → PICKED → STARTED → FINISHED /
//! FAILED / ABORTED, so clients must poll); `:name` parameters bound as values; `ClientToken`
//! idempotency; epoch-second timestamps and nanosecond durations; batch sub-statement ids
//! `<uuid>:<n>` run in one transaction; results paged with `NextToken`; the `Field` shapes and
//! `ColumnMetadata` with Redshift's type names; errors as HTTP 400 with `__type`
//! (`ValidationException`, `ResourceNotFoundException`, `ThrottlingException` on demand,
//! `UnrecognizedClientException` / `AccessDeniedException` for unknown keys and denied
//! operations); clusters vs serverless workgroups (exactly one of them), and logins through a
//! Secrets Manager ARN, `DbUser` or the IAM identity, each mapped to a PostgreSQL login so a wrong
//! secret fails at login as it would on Redshift.
//!
//! Translation: none, except the two Redshift-only constructs Ferry's Mirror SQL needs
//! (`DISTKEY`/`SORTKEY`/`DISTSTYLE` table attributes are dropped, `JSON_SERIALIZE(x)` becomes a
//! cast to text; see [`sql::translate`]). Everything else the connector sends is SQL valid on both
//! Redshift and PostgreSQL, and runs unchanged.
//!
//! What it cannot prove (see `README.md` beside this crate):
//! - **SigV4 signatures are not verified**: the `Authorization` header must be present and
//!   well-formed for the `redshift-data` service, but no secret key is checked.
//! - The SQL runs on PostgreSQL, not Redshift: SQL that only Redshift accepts fails here, and SQL
//!   that only PostgreSQL accepts passes here. `jsonb` plays SUPER and `bytea` plays VARBYTE.
//! - Redshift's result-size limit (100 MB), its page sizes, sessions (`SessionId`), IAM policy
//!   evaluation, `GetClusterCredentials` and Secrets Manager itself are not emulated; error
//!   messages are modelled on Redshift's, not copied from a live service.

pub mod auth;
pub mod config;
pub mod pg;
pub mod protocol;
pub mod server;
pub mod sql;
pub mod statements;

pub use config::{AccessKey, Endpoint, Login, StandinConfig, Timing};
pub use server::{start, RunningStandin, StatementRecord};
