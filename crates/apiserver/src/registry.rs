//! The AWS services the front door serves: one entry per service, naming
//! how its requests are recognised (signing name, protocol, target prefix
//! or actions) and where they go. A new service is one entry here and one
//! adapter folder; nothing else in the front door changes.

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_wire::query::QueryParams;
use futures::future::BoxFuture;

/// What an adapter's dispatch answers: the encoded response body.
pub(crate) type Reply<'a> = BoxFuture<'a, Result<Vec<u8>, ApiError>>;

/// AWS JSON 1.0 or 1.1: `X-Amz-Target: {prefix}.{Operation}` and a JSON
/// body.
pub(crate) struct JsonWire {
    pub target_prefix: &'static str,
    pub dispatch: JsonDispatch,
    /// What a request asks of IAM (action, resources, condition keys).
    pub ask: Asker,
    /// The content type answers carry: `application/x-amz-json-1.0` or
    /// `-1.1`, as the service's model says.
    pub content_type: &'static str,
    /// A service that also speaks awsQuery (CloudWatch, SQS): JSON errors
    /// carry the query code too, in `x-amzn-query-error`, which SDKs
    /// report.
    pub query_compatible: bool,
}

/// awsQuery: a form with `Action`, answered in XML in `namespace`.
pub(crate) struct QueryWire {
    pub namespace: &'static str,
    pub dispatch: QueryDispatch,
}

pub(crate) const JSON_1_0: &str = "application/x-amz-json-1.0";
pub(crate) const JSON_1_1: &str = berth_wire::json::CONTENT_TYPE;

/// One AWS service of the front door.
pub(crate) struct AwsService {
    /// Its name in spans and metric labels.
    pub label: &'static str,
    /// The service of its SigV4 credential scope.
    pub signing_name: &'static str,
    /// The prefix of its IAM actions (`ecs:RunTask`).
    pub action_prefix: &'static str,
    pub json: Option<JsonWire>,
    pub query: Option<QueryWire>,
    /// Whether it knows an operation: known names become metric labels,
    /// and an unsigned awsQuery request goes to the service knowing its
    /// action.
    pub knows: fn(&str) -> bool,
}

fn ecs_json<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    op: &'a str,
    body: &'a [u8],
) -> Reply<'a> {
    Box::pin(crate::ecs::dispatch(st, ctx, op, body))
}

fn sts_query<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    action: &'a str,
    params: &'a QueryParams,
) -> Reply<'a> {
    Box::pin(crate::sts::dispatch(st, ctx, action, params))
}

fn elbv2_query<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    action: &'a str,
    params: &'a QueryParams,
) -> Reply<'a> {
    Box::pin(crate::elbv2::dispatch(st, ctx, action, params))
}

fn iam_query<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    action: &'a str,
    params: &'a QueryParams,
) -> Reply<'a> {
    Box::pin(crate::iam::dispatch(st, ctx, action, params))
}

fn ssm_json<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    op: &'a str,
    body: &'a [u8],
) -> Reply<'a> {
    Box::pin(crate::ssm::dispatch(st, ctx, op, body))
}

fn logs_json<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    op: &'a str,
    body: &'a [u8],
) -> Reply<'a> {
    Box::pin(crate::cwlogs::dispatch(st, ctx, op, body))
}

fn secrets_json<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    op: &'a str,
    body: &'a [u8],
) -> Reply<'a> {
    Box::pin(crate::secretsmanager::dispatch(st, ctx, op, body))
}

fn autoscaling_json<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    op: &'a str,
    body: &'a [u8],
) -> Reply<'a> {
    Box::pin(crate::autoscaling::dispatch(st, ctx, op, body))
}

fn cloudwatch_json<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    op: &'a str,
    body: &'a [u8],
) -> Reply<'a> {
    Box::pin(crate::cloudwatch::dispatch_json(st, ctx, op, body))
}

fn cloudwatch_query<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    action: &'a str,
    params: &'a QueryParams,
) -> Reply<'a> {
    Box::pin(crate::cloudwatch::dispatch_query(st, ctx, action, params))
}

fn sqs_json<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    op: &'a str,
    body: &'a [u8],
) -> Reply<'a> {
    Box::pin(crate::sqs::dispatch_json(st, ctx, op, body))
}

fn sqs_query<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    action: &'a str,
    params: &'a QueryParams,
) -> Reply<'a> {
    Box::pin(crate::sqs::dispatch_query(st, ctx, action, params))
}

fn asg_query<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    action: &'a str,
    params: &'a QueryParams,
) -> Reply<'a> {
    Box::pin(crate::asg::dispatch(st, ctx, action, params))
}

fn ec2_query<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    action: &'a str,
    params: &'a QueryParams,
) -> Reply<'a> {
    // DryRun asks only whether the caller may: authorization, which the
    // front door did before this, has said yes.
    if params.get("DryRun") == Some("true") && crate::ec2::IMPLEMENTED.contains(&action) {
        return Box::pin(async {
            Err(berth_domain::asg::Ec2Error::new(
                "DryRunOperation",
                "Request would have succeeded, but DryRun flag is set.",
            )
            .into())
        });
    }
    Box::pin(crate::ec2::dispatch(st, ctx, action, params))
}

/// Every service, in the order an unsigned awsQuery action is matched.
pub(crate) static SERVICES: &[AwsService] = &[
    AwsService {
        label: "ecs",
        signing_name: "ecs",
        action_prefix: "ecs",
        json: Some(JsonWire {
            target_prefix: berth_wire::ecs::TARGET_PREFIX,
            dispatch: ecs_json,
            ask: Asker::Now(crate::authz::ecs),
            content_type: JSON_1_1,
            query_compatible: false,
        }),
        query: None,
        knows: |op| berth_wire::ecs::OPERATIONS.contains(&op),
    },
    AwsService {
        label: "ssm",
        signing_name: "ssm",
        action_prefix: "ssm",
        json: Some(JsonWire {
            target_prefix: berth_wire::ssm::TARGET_PREFIX,
            dispatch: ssm_json,
            ask: Asker::Now(crate::authz::ssm),
            content_type: JSON_1_1,
            query_compatible: false,
        }),
        query: None,
        knows: |op| berth_wire::ssm::OPERATIONS.contains(&op),
    },
    AwsService {
        label: "secretsmanager",
        signing_name: "secretsmanager",
        action_prefix: "secretsmanager",
        json: Some(JsonWire {
            target_prefix: berth_wire::secretsmanager::TARGET_PREFIX,
            dispatch: secrets_json,
            ask: Asker::Stored(crate::authz::secrets),
            content_type: JSON_1_1,
            query_compatible: false,
        }),
        query: None,
        knows: |op| berth_wire::secretsmanager::OPERATIONS.contains(&op),
    },
    AwsService {
        label: "logs",
        signing_name: "logs",
        action_prefix: "logs",
        json: Some(JsonWire {
            target_prefix: berth_wire::logs::TARGET_PREFIX,
            dispatch: logs_json,
            ask: Asker::Now(crate::authz::logs),
            content_type: JSON_1_1,
            query_compatible: false,
        }),
        query: None,
        knows: |op| berth_wire::logs::OPERATIONS.contains(&op),
    },
    AwsService {
        label: "application-autoscaling",
        signing_name: "application-autoscaling",
        action_prefix: "application-autoscaling",
        json: Some(JsonWire {
            target_prefix: berth_wire::application_autoscaling::TARGET_PREFIX,
            dispatch: autoscaling_json,
            ask: Asker::Now(crate::authz::autoscaling),
            content_type: JSON_1_1,
            query_compatible: false,
        }),
        query: None,
        knows: |op| berth_wire::application_autoscaling::OPERATIONS.contains(&op),
    },
    AwsService {
        label: "cloudwatch",
        signing_name: "monitoring",
        action_prefix: "cloudwatch",
        json: Some(JsonWire {
            target_prefix: berth_wire::cloudwatch::TARGET_PREFIX,
            dispatch: cloudwatch_json,
            ask: Asker::Now(crate::authz::cloudwatch),
            content_type: JSON_1_0,
            query_compatible: true,
        }),
        query: Some(QueryWire {
            namespace: berth_wire::cloudwatch::XML_NAMESPACE,
            dispatch: cloudwatch_query,
        }),
        knows: |op| berth_wire::cloudwatch::OPERATIONS.contains(&op),
    },
    AwsService {
        label: "sqs",
        signing_name: "sqs",
        action_prefix: "sqs",
        json: Some(JsonWire {
            target_prefix: berth_wire::sqs::TARGET_PREFIX,
            dispatch: sqs_json,
            ask: Asker::Now(crate::authz::sqs),
            content_type: JSON_1_0,
            query_compatible: true,
        }),
        query: Some(QueryWire {
            namespace: berth_wire::sqs::XML_NAMESPACE,
            dispatch: sqs_query,
        }),
        knows: |op| berth_wire::sqs::OPERATIONS.contains(&op),
    },
    AwsService {
        label: "autoscaling",
        signing_name: "autoscaling",
        action_prefix: "autoscaling",
        json: None,
        query: Some(QueryWire {
            namespace: berth_wire::autoscaling::XML_NAMESPACE,
            dispatch: asg_query,
        }),
        knows: |action| berth_wire::autoscaling::OPERATIONS.contains(&action),
    },
    AwsService {
        label: "ec2",
        signing_name: "ec2",
        action_prefix: "ec2",
        json: None,
        query: Some(QueryWire {
            namespace: berth_wire::ec2::XML_NAMESPACE,
            dispatch: ec2_query,
        }),
        knows: |action| berth_wire::ec2::OPERATIONS.contains(&action),
    },
    AwsService {
        label: "sts",
        signing_name: "sts",
        action_prefix: "sts",
        json: None,
        query: Some(QueryWire {
            namespace: crate::sts::NAMESPACE,
            dispatch: sts_query,
        }),
        knows: |action| crate::sts::ACTIONS.contains(&action),
    },
    AwsService {
        label: "elbv2",
        signing_name: "elasticloadbalancing",
        action_prefix: "elasticloadbalancing",
        json: None,
        query: Some(QueryWire {
            namespace: berth_wire::elbv2::XML_NAMESPACE,
            dispatch: elbv2_query,
        }),
        knows: |action| {
            berth_wire::elbv2::OPERATION_SHAPES
                .iter()
                .any(|(n, _, _)| *n == action)
        },
    },
    AwsService {
        label: "iam",
        signing_name: "iam",
        action_prefix: "iam",
        json: None,
        query: Some(QueryWire {
            namespace: berth_wire::iam::XML_NAMESPACE,
            dispatch: iam_query,
        }),
        knows: |action| berth_wire::iam::OPERATIONS.contains(&action),
    },
];

/// How a JSON service's requests are dispatched.
pub(crate) type JsonDispatch =
    for<'a> fn(&'a AppState, &'a RequestContext, &'a str, &'a [u8]) -> Reply<'a>;
/// How a JSON service's request becomes IAM's question.
#[derive(Clone, Copy)]
pub(crate) enum Asker {
    /// From the request alone.
    Now(fn(&RequestContext, &berth_iam::Principal, f64, &str, &[u8]) -> crate::authz::Ask),
    /// After reading the store: a secret's ARN ends in a suffix only the
    /// store knows, and policies name it.
    Stored(StoredAsk),
}

/// An [`Asker`] that reads the store.
pub(crate) type StoredAsk = for<'a> fn(
    &'a AppState,
    &'a RequestContext,
    &'a berth_iam::Principal,
    f64,
    &'a str,
    &'a [u8],
) -> BoxFuture<'a, crate::authz::Ask>;
/// How an awsQuery service's requests are dispatched.
pub(crate) type QueryDispatch =
    for<'a> fn(&'a AppState, &'a RequestContext, &'a str, &'a QueryParams) -> Reply<'a>;

/// The JSON service whose target prefix is `prefix`, its dispatch and
/// its authorization question.
pub(crate) fn by_target(prefix: &str) -> Option<(&'static AwsService, &'static JsonWire)> {
    SERVICES.iter().find_map(|s| match &s.json {
        Some(j) if j.target_prefix == prefix => Some((s, j)),
        _ => None,
    })
}

/// The awsQuery service of a form request, with its XML namespace and its
/// dispatch: by the signing name of its credential scope when signed,
/// else the first that knows its action.
pub(crate) fn by_query(
    signing_name: Option<&str>,
    action: &str,
) -> Option<(&'static AwsService, &'static str, QueryDispatch)> {
    SERVICES.iter().find_map(|s| match &s.query {
        Some(q) if signing_name.map_or((s.knows)(action), |n| n == s.signing_name) => {
            Some((s, q.namespace, q.dispatch))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_is_found_by_what_its_requests_carry() {
        assert_eq!(
            by_target(berth_wire::ecs::TARGET_PREFIX).map(|(s, ..)| s.label),
            Some("ecs")
        );
        assert_eq!(
            by_target(berth_wire::ssm::TARGET_PREFIX).map(|(s, ..)| s.label),
            Some("ssm")
        );
        assert_eq!(
            by_target(berth_wire::secretsmanager::TARGET_PREFIX).map(|(s, ..)| s.label),
            Some("secretsmanager")
        );
        assert_eq!(
            by_target(berth_wire::logs::TARGET_PREFIX).map(|(s, ..)| s.label),
            Some("logs")
        );
        assert_eq!(
            by_target(berth_wire::cloudwatch::TARGET_PREFIX).map(|(s, ..)| s.label),
            Some("cloudwatch")
        );
        assert_eq!(
            by_query(Some("monitoring"), "PutMetricData").map(|(s, ..)| s.label),
            Some("cloudwatch")
        );
        assert_eq!(
            by_target("AnyScaleFrontendService").map(|(s, ..)| s.label),
            Some("application-autoscaling")
        );
        assert_eq!(
            by_query(Some("sts"), "Anything").map(|(s, ..)| s.label),
            Some("sts")
        );
        assert_eq!(
            by_query(Some("elasticloadbalancing"), "GetCallerIdentity").map(|(s, ..)| s.label),
            Some("elbv2")
        );
        assert!(by_query(Some("ecs"), "CreateLoadBalancer").is_none());
        assert_eq!(
            by_query(None, "GetCallerIdentity").map(|(s, ..)| s.label),
            Some("sts")
        );
        assert_eq!(
            by_query(None, "CreateLoadBalancer").map(|(s, ..)| s.label),
            Some("elbv2")
        );
        assert_eq!(
            by_query(None, "RunInstances").map(|(s, ..)| s.label),
            Some("ec2")
        );
        assert!(by_query(None, "NoSuchAction").is_none());
    }

    #[test]
    fn signing_names_and_target_prefixes_are_unique() {
        for (i, a) in SERVICES.iter().enumerate() {
            for b in &SERVICES[i + 1..] {
                assert_ne!(a.signing_name, b.signing_name);
                assert_ne!(a.label, b.label);
            }
        }
    }
}
