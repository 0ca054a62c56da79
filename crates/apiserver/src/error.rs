//! Every way a request can fail, and how each leaves the server.

use berth_control::identity::{
    AuthFailure, EXPIRED_TOKEN_MESSAGE, MISMATCH_MESSAGE, UNKNOWN_KEY_MESSAGE,
};
use berth_domain::elb::{ElbCode, ElbError};
use berth_domain::EcsError;
use berth_store::StoreError;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Ecs(#[from] EcsError),
    #[error(transparent)]
    Elb(#[from] ElbError),
    #[error(transparent)]
    Iam(#[from] berth_iam::records::IamError),
    #[error(transparent)]
    Ssm(#[from] berth_domain::ssm::SsmError),
    #[error(transparent)]
    Secrets(#[from] berth_domain::secrets::SecretsError),
    #[error(transparent)]
    Logs(#[from] berth_domain::logs::LogsError),
    #[error(transparent)]
    CloudWatch(#[from] berth_domain::cloudwatch::CwError),
    #[error(transparent)]
    Aas(#[from] berth_domain::scaling::AasError),
    #[error(transparent)]
    Sqs(#[from] berth_domain::sqs::SqsError),
    #[error(transparent)]
    Asg(#[from] berth_domain::asg::AsgError),
    #[error(transparent)]
    Ec2(#[from] berth_domain::asg::Ec2Error),
    /// The caller's policies do not allow the request.
    #[error(transparent)]
    Denied(#[from] crate::authz::Denied),
    /// The caller could not be authenticated.
    #[error(transparent)]
    Auth(#[from] AuthFailure),
    /// The body is not JSON, or a member has the wrong type.
    #[error("{0}")]
    Serialization(String),
    #[error("{0}")]
    UnknownOperation(String),
    /// The body is larger than the configured limit.
    #[error("Request body is larger than the limit of {0} bytes.")]
    TooLarge(usize),
    /// A store failure: the client sees ServerException, the log the cause.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The cluster manager's own failure: ServerException, the cause logged.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    /// (HTTP status, exception name, message) as the client sees them. One
    /// exhaustive match: adding an error forces a decision here.
    pub fn parts(&self) -> (u16, &'static str, String) {
        match self {
            ApiError::Ecs(e) => {
                let status = match e {
                    EcsError::ClusterNotFound
                    | EcsError::TaskDefinitionNotFound
                    | EcsError::ClusterContainsServices
                    | EcsError::ClusterContainsTasks
                    | EcsError::ClusterContainsContainerInstances
                    | EcsError::ServiceNotFound
                    | EcsError::ServiceNotActive
                    | EcsError::ServiceDeploymentNotFound(_)
                    | EcsError::Client(_)
                    | EcsError::InvalidParameter(_)
                    | EcsError::ResourceNotFound(_)
                    | EcsError::LimitExceeded(_)
                    | EcsError::UpdateInProgress(_)
                    | EcsError::TargetNotFound(_)
                    | EcsError::AttributeLimitExceeded(_)
                    | EcsError::Conflict(_)
                    | EcsError::UnsupportedFeature(_) => 400,
                };
                (status, e.code(), e.to_string())
            }
            ApiError::Elb(e) => (elb_status(e.code), e.code.as_str(), e.message.clone()),
            ApiError::Iam(e) => (iam_status(e.code()), e.code(), e.to_string()),
            ApiError::Ssm(e) => (400, e.code, e.message.clone()),
            ApiError::Logs(e) => (
                if e.code == "ServiceUnavailableException" {
                    503
                } else {
                    400
                },
                e.code,
                e.message.clone(),
            ),
            ApiError::CloudWatch(e) => (e.status, e.code, e.message.clone()),
            ApiError::Sqs(e) => (e.status, e.code, e.message.clone()),
            ApiError::Asg(e) => (e.status, e.code, e.message.clone()),
            // EC2 answers a DryRun that would have succeeded with 412.
            ApiError::Ec2(e) if e.code == "DryRunOperation" => (412, e.code, e.message.clone()),
            ApiError::Ec2(e) => (400, e.code, e.message.clone()),
            ApiError::Aas(e) => (
                if e.code == "InternalServiceException" {
                    500
                } else {
                    400
                },
                e.code,
                e.message.clone(),
            ),
            ApiError::Secrets(e) => (
                if e.code == "InternalServiceError" {
                    500
                } else {
                    400
                },
                e.code,
                e.message.clone(),
            ),
            ApiError::Denied(d) => (400, "AccessDeniedException", d.0.clone()),
            ApiError::Auth(f) => match f {
                AuthFailure::Missing => (
                    403,
                    "MissingAuthenticationTokenException",
                    "Missing Authentication Token".into(),
                ),
                AuthFailure::Incomplete(m) => (400, "IncompleteSignatureException", m.clone()),
                AuthFailure::Invalid(m) => (400, "InvalidSignatureException", m.clone()),
                AuthFailure::Mismatch => {
                    (400, "InvalidSignatureException", MISMATCH_MESSAGE.into())
                }
                AuthFailure::UnknownKey => (
                    400,
                    "UnrecognizedClientException",
                    UNKNOWN_KEY_MESSAGE.into(),
                ),
                AuthFailure::ExpiredToken => {
                    (400, "ExpiredTokenException", EXPIRED_TOKEN_MESSAGE.into())
                }
            },
            ApiError::Serialization(m) => (400, "SerializationException", m.clone()),
            ApiError::UnknownOperation(m) => (400, "UnknownOperationException", m.clone()),
            ApiError::TooLarge(_) => (413, "RequestEntityTooLargeException", self.to_string()),
            ApiError::Store(_) | ApiError::Internal(_) => {
                (500, "ServerException", "An internal error occurred.".into())
            }
        }
    }
}

impl ApiError {
    /// The same for a query (awsQuery) service, where a few failures have
    /// other names and statuses: authentication fails with 403 and the
    /// query protocol's codes, an unknown action is `InvalidAction`.
    pub fn query_parts(&self) -> (u16, &'static str, String) {
        match self {
            ApiError::Auth(f) => match f {
                AuthFailure::Missing => (
                    403,
                    "MissingAuthenticationToken",
                    "Request is missing Authentication Token".into(),
                ),
                AuthFailure::Incomplete(m) => (400, "IncompleteSignature", m.clone()),
                AuthFailure::Invalid(m) => (403, "SignatureDoesNotMatch", m.clone()),
                AuthFailure::Mismatch => (403, "SignatureDoesNotMatch", MISMATCH_MESSAGE.into()),
                AuthFailure::UnknownKey => {
                    (403, "InvalidClientTokenId", UNKNOWN_KEY_MESSAGE.into())
                }
                AuthFailure::ExpiredToken => (403, "ExpiredToken", EXPIRED_TOKEN_MESSAGE.into()),
            },
            ApiError::UnknownOperation(m) => (400, "InvalidAction", m.clone()),
            ApiError::Denied(d) => (403, "AccessDenied", d.0.clone()),
            ApiError::CloudWatch(e) => (e.status, e.query_code, e.message.clone()),
            ApiError::Sqs(e) => (e.status, e.query_code, e.message.clone()),
            ApiError::Serialization(m) => (400, "SerializationException", m.clone()),
            ApiError::Store(_) | ApiError::Internal(_) => {
                (500, "InternalFailure", "An internal error occurred.".into())
            }
            _ => self.parts(),
        }
    }
}

/// The HTTP status the IAM model gives a code.
fn iam_status(code: &str) -> u16 {
    berth_wire::iam::ERRORS
        .iter()
        .find(|(_, c, _, _)| *c == code)
        .map_or(400, |(_, _, status, _)| *status)
}

/// The HTTP status the ELBv2 model gives a code (ValidationError, the
/// protocol's own, is not in the model).
fn elb_status(code: ElbCode) -> u16 {
    berth_wire::elbv2::ERRORS
        .iter()
        .find(|(_, c, _, _)| *c == code.as_str())
        .map_or(400, |(_, _, status, _)| *status)
}

/// The one place the cluster manager's failures become the API's.
impl From<berth_control::ControlError> for ApiError {
    fn from(e: berth_control::ControlError) -> Self {
        match e {
            berth_control::ControlError::Ecs(e) => ApiError::Ecs(e),
            berth_control::ControlError::Elb(e) => ApiError::Elb(e),
            berth_control::ControlError::Store(e) => ApiError::Store(e),
            berth_control::ControlError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<berth_wire::query::DecodeError> for ApiError {
    fn from(e: berth_wire::query::DecodeError) -> Self {
        ApiError::Elb(ElbError::validation(e.to_string()))
    }
}

impl From<berth_wire::json::DecodeError> for ApiError {
    fn from(e: berth_wire::json::DecodeError) -> Self {
        ApiError::Serialization(match e {
            berth_wire::json::DecodeError::Malformed(m) => m,
            berth_wire::json::DecodeError::WrongType { path, message } => {
                format!("Invalid value for member '{path}': {message}")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_elb_code_is_modeled_or_the_protocols_own() {
        for code in ElbCode::ALL {
            let modeled = berth_wire::elbv2::ERRORS
                .iter()
                .any(|(_, c, _, _)| *c == code.as_str());
            assert!(
                modeled || *code == ElbCode::ValidationError,
                "{code:?} is not an ELBv2 error code"
            );
        }
        assert_eq!(elb_status(ElbCode::PriorRequestNotComplete), 429);
        assert_eq!(elb_status(ElbCode::ValidationError), 400);
    }
}
