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

/// The SigV4 service a request is signed for, from what it carries: the
/// `X-Amz-Target` prefix of a JSON request, else the `Version` of an
/// awsQuery form. None for a service Berth does not serve.
pub fn signing_name(target: Option<&str>, version: Option<&str>) -> Option<&'static str> {
    const JSON: &[(&str, &str)] = &[
        (ecs::TARGET_PREFIX, ecs::SIGNING_NAME),
        (ssm::TARGET_PREFIX, ssm::SIGNING_NAME),
        (secretsmanager::TARGET_PREFIX, secretsmanager::SIGNING_NAME),
        (logs::TARGET_PREFIX, logs::SIGNING_NAME),
        (
            application_autoscaling::TARGET_PREFIX,
            application_autoscaling::SIGNING_NAME,
        ),
        (cloudwatch::TARGET_PREFIX, cloudwatch::SIGNING_NAME),
        (sqs::TARGET_PREFIX, sqs::SIGNING_NAME),
    ];
    const QUERY: &[(&str, &str)] = &[
        (cloudwatch::API_VERSION, cloudwatch::SIGNING_NAME),
        (sqs::API_VERSION, sqs::SIGNING_NAME),
        (iam::API_VERSION, iam::SIGNING_NAME),
        (autoscaling::API_VERSION, autoscaling::SIGNING_NAME),
        (ec2::API_VERSION, ec2::SIGNING_NAME),
        (elbv2::API_VERSION, elbv2::SIGNING_NAME),
        ("2011-06-15", "sts"),
    ];
    if let Some(t) = target {
        let prefix = t.split_once('.').map_or(t, |(p, _)| p);
        return JSON.iter().find(|(p, _)| *p == prefix).map(|(_, s)| *s);
    }
    let v = version?;
    QUERY.iter().find(|(q, _)| *q == v).map(|(_, s)| *s)
}
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
        ec2: EC2_PROTOCOL,
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
        ec2: EC2_PROTOCOL,
    };
}

/// Shapes of the EC2 API (`ec2/2016-11-15`, EC2's query dialect): launch
/// templates, for Auto Scaling groups.
#[allow(clippy::all)]
pub mod ec2 {
    include!(concat!(env!("OUT_DIR"), "/ec2.rs"));

    /// The model's tables, for [`crate::query::Model::decode`] and `encode`.
    pub const MODEL: crate::query::Model = crate::query::Model {
        shapes: SHAPES,
        operations: OPERATION_SHAPES,
        namespace: XML_NAMESPACE,
        ec2: EC2_PROTOCOL,
    };
}

/// Shapes of Auto Scaling (`autoscaling/2011-01-01`, awsQuery).
#[allow(clippy::all)]
pub mod autoscaling {
    include!(concat!(env!("OUT_DIR"), "/autoscaling.rs"));

    /// The model's tables, for [`crate::query::Model::decode`] and `encode`.
    pub const MODEL: crate::query::Model = crate::query::Model {
        shapes: SHAPES,
        operations: OPERATION_SHAPES,
        namespace: XML_NAMESPACE,
        ec2: EC2_PROTOCOL,
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
        ec2: EC2_PROTOCOL,
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
        ec2: EC2_PROTOCOL,
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn requests_name_the_service_they_are_signed_for() {
        use super::signing_name;
        assert_eq!(
            signing_name(Some("AmazonSQS.SendMessage"), None),
            Some("sqs")
        );
        assert_eq!(
            signing_name(Some("GraniteServiceVersion20100801.PutMetricData"), None),
            Some("monitoring")
        );
        assert_eq!(
            signing_name(Some("AnyScaleFrontendService.PutScalingPolicy"), None),
            Some("application-autoscaling")
        );
        assert_eq!(signing_name(None, Some("2012-11-05")), Some("sqs"));
        assert_eq!(signing_name(None, Some("2011-06-15")), Some("sts"));
        assert_eq!(signing_name(Some("Unknown.Op"), None), None);
        assert_eq!(signing_name(None, None), None);
    }
}
