//! From Ferry's errors to gRPC statuses: the code says what kind of problem it is, the message
//! says what and where, and the details carry the structured form ([`pb::SpecProblems`],
//! [`pb::ConnectionProblem`]) for clients that want it.

use ferry_connectors::warehouse::WarehouseError;
use ferry_core::spec::{SpecError, SpecErrors};
use ferry_proto::admin::v1 as pb;
use prost::Message;
use tonic::{Code, Status};

use super::specs::ResolveError;
use crate::catalog::CatalogError;
use crate::schedule::TriggerError;
use crate::secrets::SecretError;
use crate::store::StoreError;

/// An invalid spec: INVALID_ARGUMENT naming every problem, with [`pb::SpecProblems`] details.
pub fn spec_errors(context: &str, errors: &SpecErrors) -> Status {
    let details = pb::SpecProblems {
        problems: errors
            .0
            .iter()
            .map(|e| pb::SpecProblem {
                field: e.field.clone(),
                message: e.message.clone(),
            })
            .collect(),
    };
    Status::with_details(
        Code::InvalidArgument,
        format!("{context}: {errors}"),
        details.encode_to_vec().into(),
    )
}

/// One invalid field.
pub fn invalid_field(field: &str, message: impl Into<String>) -> Status {
    spec_errors(
        "invalid request",
        &SpecErrors(vec![SpecError {
            field: field.to_string(),
            message: message.into(),
        }]),
    )
}

pub fn connection_kind(e: &WarehouseError) -> pb::connection_problem::Kind {
    use pb::connection_problem::Kind;
    match e {
        WarehouseError::Unreachable { .. } | WarehouseError::ConnectionLost(_) => Kind::Unreachable,
        WarehouseError::Authentication(_) => Kind::Authentication,
        WarehouseError::Tls(_) => Kind::Tls,
        WarehouseError::Privilege(_) => Kind::Privilege,
        WarehouseError::NotFound { .. } => Kind::NotFound,
        WarehouseError::Config(_) => Kind::Config,
        WarehouseError::Tunnel(_) => Kind::Tunnel,
        WarehouseError::Query(_)
        | WarehouseError::Value { .. }
        | WarehouseError::Stopped
        | WarehouseError::Throttled(_) => Kind::Query,
    }
}

/// A warehouse problem met while serving a request about `context` (e.g. "source 'pg':
/// connection test failed"). Connection problems are FAILED_PRECONDITION (the source must be
/// fixed first), a bad configuration or query INVALID_ARGUMENT, a missing table NOT_FOUND,
/// throttling UNAVAILABLE; the details carry a [`pb::ConnectionProblem`].
pub fn warehouse(context: &str, e: &WarehouseError) -> Status {
    let code = match e {
        WarehouseError::Config(_) | WarehouseError::Query(_) => Code::InvalidArgument,
        WarehouseError::NotFound { .. } => Code::NotFound,
        WarehouseError::Throttled(_) | WarehouseError::ConnectionLost(_) => Code::Unavailable,
        WarehouseError::Unreachable { .. }
        | WarehouseError::Authentication(_)
        | WarehouseError::Tls(_)
        | WarehouseError::Privilege(_)
        | WarehouseError::Tunnel(_)
        | WarehouseError::Value { .. }
        | WarehouseError::Stopped => Code::FailedPrecondition,
    };
    let message = format!("{context}: {e}");
    let details = pb::ConnectionProblem {
        kind: connection_kind(e) as i32,
        message: e.to_string(),
    };
    Status::with_details(code, message, details.encode_to_vec().into())
}

pub fn store(e: &StoreError) -> Status {
    match e {
        StoreError::Unavailable(_) | StoreError::Owned { .. } => {
            Status::unavailable(format!("state store: {e}"))
        }
        StoreError::Invalid(m) => Status::invalid_argument(m.clone()),
        _ => {
            tracing::error!(error = %e, "state store failure");
            Status::internal(format!("state store: {e}"))
        }
    }
}

pub fn catalog(e: &CatalogError) -> Status {
    match e {
        CatalogError::NotFound { .. } => Status::not_found(e.to_string()),
        CatalogError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        CatalogError::Conflict { .. } => Status::aborted(format!(
            "{e}: read it again and retry with its current version"
        )),
        CatalogError::InUse { .. } => Status::failed_precondition(e.to_string()),
        CatalogError::Store(s) => store(s),
    }
}

pub fn secret(e: &SecretError) -> Status {
    tracing::error!(error = %e, "stored credentials cannot be used");
    Status::failed_precondition(e.to_string())
}

pub fn resolve(e: &ResolveError) -> Status {
    match e {
        ResolveError::Catalog(c) => catalog(c),
        ResolveError::Secret(s) => secret(s),
        ResolveError::Spec { .. } => Status::failed_precondition(e.to_string()),
    }
}

/// On an ALREADY_EXISTS from a trigger: the metadata key holding the running run's id.
pub const RUNNING_RUN: &str = "ferry-running-run";

pub fn trigger(e: &TriggerError) -> Status {
    match e {
        TriggerError::AlreadyRunning { run_id, .. } => {
            let mut status = Status::already_exists(e.to_string());
            if let Ok(value) = run_id.parse() {
                status.metadata_mut().insert(RUNNING_RUN, value);
            }
            status
        }
        TriggerError::Paused(_) => {
            Status::failed_precondition(format!("{e}: resume it first (ResumeSync)"))
        }
        TriggerError::NotFound(_) => Status::not_found(e.to_string()),
        TriggerError::Unavailable { .. } => Status::unavailable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warehouse_problems_say_what_failed_with_fitting_codes() {
        let cases = [
            (
                WarehouseError::Unreachable {
                    target: "db:5432".into(),
                    message: "connection refused".into(),
                },
                Code::FailedPrecondition,
                pb::connection_problem::Kind::Unreachable,
                "cannot reach the warehouse at db:5432",
            ),
            (
                WarehouseError::Authentication("password authentication failed".into()),
                Code::FailedPrecondition,
                pb::connection_problem::Kind::Authentication,
                "refused the credentials",
            ),
            (
                WarehouseError::Tls("unknown issuer".into()),
                Code::FailedPrecondition,
                pb::connection_problem::Kind::Tls,
                "TLS verification failed",
            ),
            (
                WarehouseError::Privilege("permission denied for table orders".into()),
                Code::FailedPrecondition,
                pb::connection_problem::Kind::Privilege,
                "missing privilege",
            ),
            (
                WarehouseError::Config("bad CA file".into()),
                Code::InvalidArgument,
                pb::connection_problem::Kind::Config,
                "invalid source configuration",
            ),
        ];
        for (error, code, kind, words) in cases {
            let status = warehouse("source 'pg': connection test failed", &error);
            assert_eq!(status.code(), code, "{error}");
            assert!(status
                .message()
                .starts_with("source 'pg': connection test failed: "));
            assert!(status.message().contains(words), "{}", status.message());
            let details = pb::ConnectionProblem::decode(status.details()).unwrap();
            assert_eq!(details.kind(), kind);
        }
    }

    #[test]
    fn spec_errors_name_each_field_in_message_and_details() {
        let errors = SpecErrors(vec![
            SpecError {
                field: "sync.mapping.time_column".into(),
                message: "column 'ts' is not in the table".into(),
            },
            SpecError {
                field: "sync.mode".into(),
                message: "full is not available for events".into(),
            },
        ]);
        let status = spec_errors("sync 'orders'", &errors);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status
            .message()
            .contains("sync.mapping.time_column: column 'ts' is not in the table"));
        let details = pb::SpecProblems::decode(status.details()).unwrap();
        assert_eq!(details.problems.len(), 2);
        assert_eq!(details.problems[1].field, "sync.mode");
    }
}
