//! AWS wire shapes and protocol codecs for Berth.
//!
//! The ECS shapes in [`ecs`] and the ELBv2 shapes in [`elbv2`] are generated at build time from the vendored
//! botocore model (`models/`), so member names and types match what aws-cli,
//! boto3 and the SDKs send. Every member is optional on the wire: required
//! members are checked by the domain so the error can name the field, as ECS
//! does, instead of failing in the decoder.
//!
//! This crate does no I/O and knows nothing about Berth's domain; it must not
//! depend on any other Berth crate.

pub mod agent;
pub mod json;
pub mod query;
pub mod sigv4;

/// Shapes of Amazon ECS (`ecs/2014-11-13`).
#[allow(clippy::all)]
pub mod ecs {
    include!(concat!(env!("OUT_DIR"), "/ecs.rs"));
}

/// Shapes of SSM (`ssm/2014-11-06`, JSON 1.1), for the Parameter Store
/// operations Berth serves.
#[allow(clippy::all)]
pub mod ssm {
    include!(concat!(env!("OUT_DIR"), "/ssm.rs"));
}

/// Shapes of Secrets Manager (`secretsmanager/2017-10-17`, JSON 1.1), for
/// the operations Berth serves.
#[allow(clippy::all)]
pub mod secretsmanager {
    include!(concat!(env!("OUT_DIR"), "/secretsmanager.rs"));
}

/// Shapes of CloudWatch Logs (`logs/2014-03-28`, JSON 1.1), for the
/// operations Berth serves.
#[allow(clippy::all)]
pub mod logs {
    include!(concat!(env!("OUT_DIR"), "/logs.rs"));
}

/// Shapes of Application Auto Scaling (`application-autoscaling/2016-02-06`,
/// JSON 1.1), for the operations Berth serves.
#[allow(clippy::all)]
pub mod application_autoscaling {
    include!(concat!(env!("OUT_DIR"), "/application_autoscaling.rs"));
}

/// Shapes of CloudWatch (`monitoring/2010-08-01`), for the operations
/// Berth serves: JSON 1.0 types (epoch-second timestamps) that the awsQuery
/// tables also decode into and encode from.
#[allow(clippy::all)]
pub mod cloudwatch {
    include!(concat!(env!("OUT_DIR"), "/cloudwatch.rs"));

    /// The model's tables, for [`crate::query::Model::decode`] and `encode`.
    pub const MODEL: crate::query::Model = crate::query::Model {
        shapes: SHAPES,
        operations: OPERATION_SHAPES,
        namespace: XML_NAMESPACE,
    };
}

/// Shapes of SQS (`sqs/2012-11-05`): AWS JSON 1.0 as current SDKs send it
/// and awsQuery (with the older model's flattened wire names) as Debian's
/// AWS CLI v2 does.
#[allow(clippy::all)]
pub mod sqs {
    include!(concat!(env!("OUT_DIR"), "/sqs.rs"));

    /// The model's tables, for [`crate::query::Model::decode`] and `encode`.
    pub const MODEL: crate::query::Model = crate::query::Model {
        shapes: SHAPES,
        operations: OPERATION_SHAPES,
        namespace: XML_NAMESPACE,
    };
}

/// Shapes of IAM (`iam/2010-05-08`, awsQuery), for the operations Berth
/// serves; the model's other operations are listed without shapes.
#[allow(clippy::all)]
pub mod iam {
    include!(concat!(env!("OUT_DIR"), "/iam.rs"));

    /// The model's tables, for [`crate::query::Model::decode`] and `encode`.
    pub const MODEL: crate::query::Model = crate::query::Model {
        shapes: SHAPES,
        operations: OPERATION_SHAPES,
        namespace: XML_NAMESPACE,
    };
}

/// Shapes of Elastic Load Balancing v2 (`elasticloadbalancing/2015-12-01`, awsQuery).
#[allow(clippy::all)]
pub mod elbv2 {
    include!(concat!(env!("OUT_DIR"), "/elbv2.rs"));

    /// The model's tables, for [`crate::query::Model::decode`] and `encode`.
    pub const MODEL: crate::query::Model = crate::query::Model {
        shapes: SHAPES,
        operations: OPERATION_SHAPES,
        namespace: XML_NAMESPACE,
    };
}
