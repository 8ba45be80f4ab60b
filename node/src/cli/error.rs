//! What the CLI says when something goes wrong, and the exit code that goes with it.
//!
//! Every failure ends as one [`CliError`]: a one-line message for people (printed as
//! `error: …` on stderr) and an [`ExitKind`] whose code scripts can branch on.

use std::fmt;
use std::time::Duration;

use ferry_proto::admin::v1::{connection_problem, ConnectionProblem, SpecProblems};
use prost::Message;
use tonic::{Code, Status};

/// The exit codes of the admin commands (also listed in `ferry --help` and the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// 1: the node refused the request (invalid, conflicting, failed precondition), or
    /// anything else went wrong.
    Error = 1,
    /// 2: a bad command line or input file (clap uses 2 for its own usage errors too).
    Usage = 2,
    /// 3: no token, a refused token, or a token without the right to do this.
    Auth = 3,
    /// 4: the tenant, source, sync, token or run does not exist.
    NotFound = 4,
    /// 5: the node cannot be reached or did not answer in time.
    Unavailable = 5,
    /// 6: the run that was followed ended failed or cancelled.
    RunFailed = 6,
}

#[derive(Debug)]
pub struct CliError {
    pub kind: ExitKind,
    pub message: String,
}

impl CliError {
    pub fn new(kind: ExitKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ExitKind::Usage, message)
    }

    pub fn code(&self) -> u8 {
        self.kind as u8
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// What the error messages need to know about the call.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub endpoint: String,
    pub token_given: bool,
    pub timeout: Duration,
}

impl CallContext {
    /// The node could not be reached at all (connection refused, DNS, TLS).
    pub fn unreachable(&self, detail: impl fmt::Display) -> CliError {
        CliError::new(
            ExitKind::Unavailable,
            format!("cannot reach the node at {}: {detail}", self.endpoint),
        )
    }

    pub fn timed_out(&self) -> CliError {
        CliError::new(
            ExitKind::Unavailable,
            format!(
                "no answer from the node at {} within {} s (raise --timeout for long calls)",
                self.endpoint,
                self.timeout.as_secs_f64()
            ),
        )
    }

    /// Turns a gRPC status into one line for people, with the details the node attached
    /// (the fields of an invalid spec, the kind of a failed connection test).
    pub fn status(&self, status: &Status) -> CliError {
        let msg = status.message().trim();
        let (kind, text) = match status.code() {
            Code::Unauthenticated if !self.token_given => (
                ExitKind::Auth,
                "no token was given — set FERRY_TOKEN or --token-file".to_owned(),
            ),
            Code::Unauthenticated => (
                ExitKind::Auth,
                format!("the token was refused — set FERRY_TOKEN or --token-file ({msg})"),
            ),
            Code::PermissionDenied => (
                ExitKind::Auth,
                format!("permission denied: {msg} (a tenant token acts only in its own tenant; some calls need the operator token)"),
            ),
            Code::NotFound => (ExitKind::NotFound, format!("not found: {msg}")),
            Code::InvalidArgument => (ExitKind::Error, invalid(msg, status.details())),
            Code::FailedPrecondition => (ExitKind::Error, precondition(msg, status.details())),
            Code::AlreadyExists => (ExitKind::Error, format!("already exists: {msg}")),
            Code::Aborted => (
                ExitKind::Error,
                format!("changed concurrently: {msg} (read it again and retry)"),
            ),
            Code::ResourceExhausted => (ExitKind::Error, format!("rate limited: {msg}")),
            Code::Unavailable => return self.unreachable(unavailable_detail(status)),
            Code::DeadlineExceeded => return self.timed_out(),
            Code::Unimplemented => (
                ExitKind::Error,
                format!(
                    "the node at {} does not serve this call (an older node?): {msg}",
                    self.endpoint
                ),
            ),
            Code::Cancelled => (ExitKind::Error, format!("the call was cancelled: {msg}")),
            code => (ExitKind::Error, format!("{}: {msg}", code_name(code))),
        };
        CliError::new(kind, text)
    }
}

/// tonic's message for a failed connection says little (`tcp connect error`); the error's
/// sources say what happened (`Connection refused (os error 111)`).
fn unavailable_detail(status: &Status) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !status.message().trim().is_empty() {
        parts.push(status.message().trim().to_owned());
    }
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        let text = s.to_string();
        // tonic wraps the cause in a `transport error` that adds nothing.
        if text != "transport error" && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        "the node is unavailable".to_owned()
    } else {
        parts.join(": ")
    }
}

/// The node's message, then each problem it named (`field: message`) on the same line.
fn invalid(msg: &str, details: &[u8]) -> String {
    let problems = SpecProblems::decode(details)
        .map(|p| p.problems)
        .unwrap_or_default();
    let mut text = format!("invalid: {msg}");
    for p in problems {
        // The message often repeats the first problem; do not print it twice.
        let line = format!("{}: {}", p.field, p.message);
        if !msg.contains(&line) {
            text.push_str("; ");
            text.push_str(&line);
        }
    }
    text
}

fn precondition(msg: &str, details: &[u8]) -> String {
    match ConnectionProblem::decode(details) {
        Ok(p) if p.kind != 0 || !p.message.is_empty() => {
            let kind = connection_problem_kind(p.kind);
            if p.message.is_empty() || msg.contains(&p.message) {
                format!("{msg} ({kind})")
            } else {
                format!("{msg}: {} ({kind})", p.message)
            }
        }
        _ => msg.to_owned(),
    }
}

pub fn connection_problem_kind(kind: i32) -> &'static str {
    use connection_problem::Kind;
    match Kind::try_from(kind).unwrap_or(Kind::Unspecified) {
        Kind::Unspecified => "unspecified",
        Kind::Unreachable => "unreachable",
        Kind::Authentication => "authentication",
        Kind::Tls => "tls",
        Kind::Privilege => "privilege",
        Kind::NotFound => "not_found",
        Kind::Config => "config",
        Kind::Tunnel => "tunnel",
        Kind::Query => "query",
    }
}

fn code_name(code: Code) -> String {
    // Code's Debug is the variant name (`Internal`); people know the gRPC names.
    format!("{code:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let sep = (i > 0 && c.is_ascii_uppercase()).then_some('_');
            sep.into_iter()
                .chain(std::iter::once(c.to_ascii_uppercase()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::admin::v1::SpecProblem;

    fn ctx(token_given: bool) -> CallContext {
        CallContext {
            endpoint: "http://127.0.0.1:1".into(),
            token_given,
            timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn codes_map_to_exit_kinds_and_messages() {
        let e = ctx(false).status(&Status::unauthenticated("missing"));
        assert_eq!((e.kind, e.code()), (ExitKind::Auth, 3));
        assert!(e.message.starts_with("no token was given"), "{e}");
        let e = ctx(true).status(&Status::unauthenticated("bad token"));
        assert!(
            e.message
                .starts_with("the token was refused — set FERRY_TOKEN or --token-file"),
            "{e}"
        );
        assert_eq!(
            ctx(true).status(&Status::not_found("sync x")).kind,
            ExitKind::NotFound
        );
        let e = ctx(true).status(&Status::unavailable("tcp connect error"));
        assert_eq!(e.code(), 5);
        assert_eq!(
            e.message,
            "cannot reach the node at http://127.0.0.1:1: tcp connect error"
        );
        let e = ctx(true).status(&Status::internal("boom"));
        assert_eq!((e.code(), e.message.as_str()), (1, "INTERNAL: boom"));
    }

    #[test]
    fn invalid_argument_names_every_field_from_the_details() {
        let details = SpecProblems {
            problems: vec![
                SpecProblem {
                    field: "sync.mapping.time_column".into(),
                    message: "no column 'when'".into(),
                },
                SpecProblem {
                    field: "sync.mode".into(),
                    message: "full is not for events".into(),
                },
            ],
        }
        .encode_to_vec();
        let status = Status::with_details(
            Code::InvalidArgument,
            "sync.mapping.time_column: no column 'when'",
            details.into(),
        );
        let e = ctx(true).status(&status);
        assert_eq!(
            e.message,
            "invalid: sync.mapping.time_column: no column 'when'; sync.mode: full is not for events"
        );
    }

    #[test]
    fn a_failed_connection_test_says_what_failed() {
        let details = ConnectionProblem {
            kind: connection_problem::Kind::Authentication as i32,
            message: "password authentication failed for user \"x\"".into(),
        }
        .encode_to_vec();
        let status = Status::with_details(
            Code::FailedPrecondition,
            "source 'pg': connection test failed: the warehouse refused the credentials",
            details.into(),
        );
        assert_eq!(
            ctx(true).status(&status).message,
            "source 'pg': connection test failed: the warehouse refused the credentials: password authentication failed for user \"x\" (authentication)"
        );
        // The node's message already holds the warehouse's words: they are not repeated.
        let details = ConnectionProblem {
            kind: connection_problem::Kind::Unreachable as i32,
            message: "connection refused".into(),
        }
        .encode_to_vec();
        let status = Status::with_details(
            Code::FailedPrecondition,
            "source 'pg': cannot reach db:5432: connection refused",
            details.into(),
        );
        assert_eq!(
            ctx(true).status(&status).message,
            "source 'pg': cannot reach db:5432: connection refused (unreachable)"
        );
    }
}
