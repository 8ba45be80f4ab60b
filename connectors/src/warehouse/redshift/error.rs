//! Sorting Data API failures into [`WarehouseError`]s: the AWS side (credentials, IAM,
//! throttling, unknown cluster or workgroup) answers requests with error codes; the database side
//! (login, privileges, missing objects, bad SQL) shows up as a FAILED statement's `Error` text.

use aws_sdk_redshiftdata::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::warehouse::WarehouseError;

/// Error codes of throttling and of limits on concurrent work: retry later.
const THROTTLING: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ActiveStatementsExceededException",
    "ActiveSessionsExceededException",
    "ActiveWaitingRequestsExceededException",
];

/// Error codes of credentials AWS does not accept.
const BAD_CREDENTIALS: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignatureException",
    "MissingAuthenticationTokenException",
    "ExpiredTokenException",
    "ExpiredToken",
];

/// What a failure was about, for messages.
#[derive(Debug, Clone)]
pub struct Context {
    /// `cluster 'x'` / `workgroup 'y'`.
    pub endpoint: String,
    /// The Data API URL (or the region's default).
    pub target: String,
}

/// An error of a Data API call.
pub fn from_sdk<E, R>(e: SdkError<E, R>, context: &Context) -> WarehouseError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let unreachable = |message: String| WarehouseError::Unreachable {
        target: context.target.clone(),
        message,
    };
    match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or("Unknown");
            let message = err.message().unwrap_or("").to_owned();
            from_code(code, &message, context)
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            unreachable(DisplayErrorContext(&e).to_string())
        }
        // Construction failures include credentials that could not be loaded at all.
        _ => {
            let message = DisplayErrorContext(&e).to_string();
            if message.contains("credentials") || message.contains("identity") {
                WarehouseError::Authentication(format!(
                    "no usable AWS credentials (static keys, profile or default chain): {message}"
                ))
            } else {
                WarehouseError::Config(message)
            }
        }
    }
}

/// A service error by its code and message.
pub fn from_code(code: &str, message: &str, context: &Context) -> WarehouseError {
    let full = format!("{code}: {message}");
    if THROTTLING.contains(&code) {
        return WarehouseError::Throttled(full);
    }
    if BAD_CREDENTIALS.contains(&code) {
        return WarehouseError::Authentication(format!("AWS refused the access key ({full})"));
    }
    match code {
        "AccessDeniedException" | "AccessDenied" => WarehouseError::Privilege(format!(
            "the AWS identity may not use the Redshift Data API here ({full})"
        )),
        "InternalServerException"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "QueryTimeoutException" => WarehouseError::Unreachable {
            target: context.target.clone(),
            message: full,
        },
        "DatabaseConnectionException" => from_statement_error(message, context),
        "ResourceNotFoundException" if message.to_ascii_lowercase().contains("workgroup") => {
            WarehouseError::NotFound {
                object: context.endpoint.clone(),
                message: full,
            }
        }
        "ResourceNotFoundException" => WarehouseError::NotFound {
            object: "statement".into(),
            message: full,
        },
        "ValidationException" => {
            let lower = message.to_ascii_lowercase();
            if lower.contains("endpoint doesn't exist")
                || lower.contains("endpoint does not exist")
                || ((lower.contains("cluster") || lower.contains("workgroup"))
                    && (lower.contains("not found")
                        || lower.contains("doesn't exist")
                        || lower.contains("does not exist")))
            {
                WarehouseError::NotFound {
                    object: context.endpoint.clone(),
                    message: full,
                }
            } else if lower.contains("secret") {
                WarehouseError::Authentication(format!(
                    "the database secret cannot be used ({full})"
                ))
            } else {
                WarehouseError::Config(full)
            }
        }
        _ => WarehouseError::Query(full),
    }
}

/// The `Error` text of a FAILED statement (Redshift's `ERROR: …` / `FATAL: …`).
pub fn from_statement_error(message: &str, context: &Context) -> WarehouseError {
    let lower = message.to_ascii_lowercase();
    let not_found = |object: &str| WarehouseError::NotFound {
        object: object.into(),
        message: message.to_owned(),
    };
    if lower.contains("password authentication failed")
        || lower.contains("authentication failed")
        || lower.contains("iam authentication")
        || (lower.contains("role") && lower.contains("does not exist") && lower.contains("fatal"))
    {
        WarehouseError::Authentication(format!(
            "{} refused the database login: {message}",
            context.endpoint
        ))
    } else if lower.contains("permission denied") || lower.contains("must be owner") {
        WarehouseError::Privilege(message.to_owned())
    } else if lower.contains("database") && lower.contains("does not exist") {
        not_found("database")
    } else if lower.contains("schema") && lower.contains("does not exist") {
        not_found("schema")
    } else if lower.contains("relation") && lower.contains("does not exist") {
        not_found("table")
    } else if lower.contains("column") && lower.contains("does not exist") {
        not_found("column")
    } else if lower.contains("connection")
        && (lower.contains("terminated") || lower.contains("reset") || lower.contains("closed"))
    {
        WarehouseError::ConnectionLost(message.to_owned())
    } else {
        WarehouseError::Query(message.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::error::{Classify, ErrorClass};

    fn ctx() -> Context {
        Context {
            endpoint: "cluster 'c1'".into(),
            target: "https://redshift-data.us-east-1.amazonaws.com".into(),
        }
    }

    #[test]
    fn service_codes_are_classified() {
        let e = from_code("ThrottlingException", "Rate exceeded", &ctx());
        assert!(matches!(e, WarehouseError::Throttled(_)), "{e:?}");
        assert_eq!(e.class(), ErrorClass::Retryable);
        let e = from_code("ActiveStatementsExceededException", "too many", &ctx());
        assert_eq!(e.class(), ErrorClass::Retryable);
        let e = from_code("InternalServerException", "oops", &ctx());
        assert_eq!(e.class(), ErrorClass::Retryable);
        let e = from_code("UnrecognizedClientException", "bad token", &ctx());
        assert!(matches!(e, WarehouseError::Authentication(_)), "{e:?}");
        assert_eq!(e.class(), ErrorClass::Fatal);
        let e = from_code("AccessDeniedException", "not authorized", &ctx());
        assert!(matches!(e, WarehouseError::Privilege(_)), "{e:?}");
        let e = from_code(
            "ValidationException",
            "Redshift endpoint doesn't exist in this region.",
            &ctx(),
        );
        assert!(
            matches!(e, WarehouseError::NotFound { ref object, .. } if object == "cluster 'c1'"),
            "{e:?}"
        );
        let e = from_code(
            "ValidationException",
            "Secrets Manager can't find the specified secret.",
            &ctx(),
        );
        assert!(matches!(e, WarehouseError::Authentication(_)), "{e:?}");
    }

    #[test]
    fn statement_errors_are_classified() {
        let c = ctx();
        let e = from_statement_error(
            "FATAL: password authentication failed for user \"ferry\"",
            &c,
        );
        assert!(matches!(e, WarehouseError::Authentication(_)), "{e:?}");
        let e = from_statement_error("ERROR: permission denied for table orders", &c);
        assert!(matches!(e, WarehouseError::Privilege(_)), "{e:?}");
        let e = from_statement_error("ERROR: relation \"public.nope\" does not exist", &c);
        assert!(
            matches!(e, WarehouseError::NotFound { ref object, .. } if object == "table"),
            "{e:?}"
        );
        let e = from_statement_error("FATAL: database \"nope\" does not exist", &c);
        assert!(
            matches!(e, WarehouseError::NotFound { ref object, .. } if object == "database"),
            "{e:?}"
        );
        let e = from_statement_error("ERROR: syntax error at or near \"SELEC\"", &c);
        assert!(matches!(e, WarehouseError::Query(_)), "{e:?}");
    }
}
