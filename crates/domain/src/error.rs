//! ECS exceptions. Every domain failure is one of these; the apiserver maps
//! each to its `__type` and HTTP status in one exhaustive match.

/// An ECS client or server fault, carrying the message as ECS words it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EcsError {
    #[error("Cluster not found.")]
    ClusterNotFound,
    /// ECS's answer for an unknown family or revision.
    #[error("Unable to describe task definition.")]
    TaskDefinitionNotFound,
    #[error("The Cluster cannot be deleted while Services are active.")]
    ClusterContainsServices,
    #[error("The Cluster cannot be deleted while Tasks are active.")]
    ClusterContainsTasks,
    #[error("The Cluster cannot be deleted while Container Instances are active or draining.")]
    ClusterContainsContainerInstances,
    #[error("Service not found.")]
    ServiceNotFound,
    #[error("Service was not ACTIVE.")]
    ServiceNotActive,
    /// `ServiceDeploymentNotFoundException`.
    #[error("{0}")]
    ServiceDeploymentNotFound(String),
    /// `ClientException`: the request is wrong in a way ECS reports generically.
    #[error("{0}")]
    Client(String),
    /// `InvalidParameterException`: a parameter is malformed or inconsistent.
    #[error("{0}")]
    InvalidParameter(String),
    /// `ResourceNotFoundException`.
    #[error("{0}")]
    ResourceNotFound(String),
    /// `LimitExceededException`.
    #[error("{0}")]
    LimitExceeded(String),
    /// `UpdateInProgressException`: a concurrent writer kept winning.
    #[error("{0}")]
    UpdateInProgress(String),
    /// `TargetNotFoundException`: an attribute's target does not exist.
    #[error("{0}")]
    TargetNotFound(String),
    /// `AttributeLimitExceededException`: more than 10 custom attributes.
    #[error("{0}")]
    AttributeLimitExceeded(String),
    /// `ConflictException`: a clientToken reused with other parameters.
    #[error("{0}")]
    Conflict(String),
    /// `UnsupportedFeatureException`: valid, but not available here (yet).
    #[error("{0}")]
    UnsupportedFeature(String),
}

impl EcsError {
    pub fn client(msg: impl Into<String>) -> Self {
        EcsError::Client(msg.into())
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        EcsError::InvalidParameter(msg.into())
    }

    /// The exception name clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            EcsError::ClusterNotFound => "ClusterNotFoundException",
            EcsError::TaskDefinitionNotFound | EcsError::Client(_) => "ClientException",
            EcsError::ClusterContainsServices => "ClusterContainsServicesException",
            EcsError::ClusterContainsTasks => "ClusterContainsTasksException",
            EcsError::ClusterContainsContainerInstances => {
                "ClusterContainsContainerInstancesException"
            }
            EcsError::ServiceNotFound => "ServiceNotFoundException",
            EcsError::ServiceNotActive => "ServiceNotActiveException",
            EcsError::ServiceDeploymentNotFound(_) => "ServiceDeploymentNotFoundException",
            EcsError::InvalidParameter(_) => "InvalidParameterException",
            EcsError::ResourceNotFound(_) => "ResourceNotFoundException",
            EcsError::LimitExceeded(_) => "LimitExceededException",
            EcsError::UpdateInProgress(_) => "UpdateInProgressException",
            EcsError::TargetNotFound(_) => "TargetNotFoundException",
            EcsError::AttributeLimitExceeded(_) => "AttributeLimitExceededException",
            EcsError::Conflict(_) => "ConflictException",
            EcsError::UnsupportedFeature(_) => "UnsupportedFeatureException",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_a_modeled_ecs_exception() {
        let all = [
            EcsError::ClusterNotFound,
            EcsError::TaskDefinitionNotFound,
            EcsError::ClusterContainsServices,
            EcsError::ClusterContainsTasks,
            EcsError::ClusterContainsContainerInstances,
            EcsError::ServiceNotFound,
            EcsError::ServiceNotActive,
            EcsError::ServiceDeploymentNotFound("x".into()),
            EcsError::client("x"),
            EcsError::invalid("x"),
            EcsError::ResourceNotFound("x".into()),
            EcsError::LimitExceeded("x".into()),
            EcsError::UpdateInProgress("x".into()),
            EcsError::TargetNotFound("x".into()),
            EcsError::AttributeLimitExceeded("x".into()),
            EcsError::Conflict("x".into()),
            EcsError::UnsupportedFeature("x".into()),
        ];
        for e in all {
            assert!(
                berth_wire::ecs::EXCEPTIONS.contains(&e.code()),
                "{} is not modeled",
                e.code()
            );
        }
    }
}
