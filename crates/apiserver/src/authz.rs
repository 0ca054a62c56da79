//! Authorization at the front door: each operation of each service becomes
//! the IAM action and resource ARN(s) AWS's service authorization reference
//! gives it, with the condition keys Berth knows, and the caller's policies
//! decide (`berth_iam::policy::evaluate`). The account root is never asked.

use crate::context::RequestContext;
use crate::AppState;
use berth_domain::{arn, Scope};
use berth_iam::policy::{evaluate, Context, Decision, Request};
use berth_iam::Principal;
use berth_wire::query::QueryParams;
use serde_json::Value;

/// What a request asks to do: one action on one or more resources.
pub(crate) struct Ask {
    pub action: String,
    pub resources: Vec<String>,
    pub context: Context,
}

/// Why a request is refused, in AWS's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

fn denial(principal: &str, action: &str, resource: &str, decision: Decision) -> Denied {
    let why = match decision {
        Decision::ExplicitDeny => "with an explicit deny in an identity-based policy".to_string(),
        _ => format!("because no identity-based policy allows the {action} action"),
    };
    Denied(format!(
        "User: {principal} is not authorized to perform: {action} on resource: {resource} {why}"
    ))
}

/// The global condition keys of every request: the caller's own (built
/// once per access key) and the request's.
pub(crate) fn base_context(ctx: &RequestContext, principal: &Principal, now: f64) -> Context {
    let base = match &ctx.caller {
        Some(caller) => caller.context.clone(),
        None => std::sync::Arc::new(principal.context(&[])),
    };
    let mut c = Context::over(base);
    c.set_known("aws:requestedregion", ctx.scope.region.clone());
    if let Some(ip) = ctx.source_ip {
        c.set_deferred_ip("aws:sourceip", ip);
    }
    c.set_known(
        "aws:securetransport",
        if ctx.secure { "true" } else { "false" },
    );
    c.set_deferred("aws:currenttime", now, berth_domain::elb::iso8601);
    c.set_deferred("aws:epochtime", now, |t| (t as i64).to_string());
    c
}

/// A request's tags as condition keys: `aws:RequestTag/<key>` and `aws:TagKeys`.
fn request_tags<'a>(
    c: &mut Context,
    tags: impl Iterator<Item = (&'a Option<String>, &'a Option<String>)>,
) {
    let mut keys = vec![];
    for (k, v) in tags {
        if let (Some(k), Some(v)) = (k, v) {
            c.set(&format!("aws:RequestTag/{k}"), v.clone());
            keys.push(k.clone());
        }
    }
    if !keys.is_empty() {
        c.set_many("aws:TagKeys", keys);
    }
}

/// Whether policies limit this caller: everyone but the account root.
pub(crate) fn limited(caller: &berth_control::identity::Caller) -> bool {
    !matches!(caller.principal, Principal::Root { .. })
}

/// Checks `ask` against the caller's policies.
pub(crate) async fn check(
    st: &AppState,
    ctx: &RequestContext,
    ask: Ask,
) -> Result<(), crate::ApiError> {
    let Some(caller) = &ctx.caller else {
        return Ok(());
    };
    if !limited(caller) {
        return Ok(());
    }
    let policies = st.identity.policies(&caller.principal).await?;
    let refs: Vec<&berth_iam::policy::Policy> = policies.iter().collect();
    let resources = if ask.resources.is_empty() {
        vec!["*".to_string()]
    } else {
        ask.resources
    };
    let session: Vec<&berth_iam::policy::Policy> = caller
        .session_policy
        .iter()
        .flat_map(|p| p.iter())
        .collect();
    let limited_by_session = caller.session_policy.is_some();
    let limits: Vec<&[&berth_iam::policy::Policy]> = if limited_by_session {
        vec![&session]
    } else {
        vec![]
    };
    for resource in &resources {
        let decision = evaluate(
            &refs,
            &limits,
            &Request {
                action: &ask.action,
                resource,
                caller: None,
                context: &ask.context,
            },
        );
        if decision != Decision::Allow {
            return Err(crate::ApiError::Denied(denial(
                &caller.principal.arn(),
                &ask.action,
                resource,
                decision,
            )));
        }
    }
    Ok(())
}

fn text<'a>(body: &'a Value, field: &str) -> Option<&'a str> {
    body.get(field).and_then(Value::as_str)
}

/// `family`, `family:rev` or an ARN, as the ARN a policy names.
fn task_definition_arn(scope: &Scope, given: &str) -> String {
    if given.starts_with("arn:") {
        return given.to_string();
    }
    match given.rsplit_once(':') {
        Some((family, rev)) if rev.parse::<i64>().is_ok() => {
            scope.task_definition_arn(family, rev.parse().unwrap_or_default())
        }
        // The latest ACTIVE revision: a policy naming `family:*` covers it.
        _ => format!(
            "arn:aws:ecs:{}:{}:task-definition/{given}:*",
            scope.region, scope.account
        ),
    }
}

fn in_cluster_arn(scope: &Scope, kind: &str, cluster: &str, given: &str) -> String {
    if given.starts_with("arn:") {
        given.to_string()
    } else {
        format!(
            "arn:aws:ecs:{}:{}:{kind}/{cluster}/{given}",
            scope.region, scope.account
        )
    }
}

/// The members of an ECS request that authorization reads: decoded on
/// their own (the rest of the body is skipped), since every request of a
/// limited caller pays for it.
#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct EcsFields {
    cluster: Option<String>,
    cluster_name: Option<String>,
    clusters: Vec<String>,
    task_definition: Option<String>,
    container_instances: Vec<String>,
    task: Option<String>,
    tasks: Vec<String>,
    service_name: Option<String>,
    service: Option<String>,
    services: Vec<String>,
    resource_arn: Option<String>,
    tags: Vec<EcsTag>,
}

#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct EcsTag {
    key: Option<String>,
    value: Option<String>,
}

/// An ECS request (JSON 1.1) as IAM sees it.
pub(crate) fn ecs(
    ctx: &RequestContext,
    principal: &Principal,
    now: f64,
    op: &str,
    body: &[u8],
) -> Ask {
    // A body that does not decode is refused by the operation itself; asked
    // about here, it names nothing.
    let f: EcsFields = serde_json::from_slice(body).unwrap_or_default();
    let scope = &ctx.scope;
    let mut c = base_context(ctx, principal, now);
    let cluster =
        arn::cluster_name(scope, f.cluster.as_deref()).unwrap_or_else(|| "default".into());
    let takes_cluster = f.cluster.is_some()
        || matches!(
            op,
            "RunTask"
                | "StartTask"
                | "StopTask"
                | "ListTasks"
                | "ListServices"
                | "CreateService"
                | "UpdateService"
                | "DeleteService"
                | "DescribeServices"
                | "DescribeTasks"
                | "UpdateTaskProtection"
                | "GetTaskProtection"
                | "ListContainerInstances"
                | "DescribeContainerInstances"
                | "RegisterContainerInstance"
                | "DeregisterContainerInstance"
                | "UpdateContainerInstancesState"
                | "UpdateContainerAgent"
                | "PutAttributes"
                | "DeleteAttributes"
                | "ListAttributes"
        );
    let cluster_arn = || scope.cluster_arn(&cluster);
    if takes_cluster {
        c.set_known("ecs:cluster", cluster_arn());
    }
    request_tags(&mut c, f.tags.iter().map(|t| (&t.key, &t.value)));
    let one = |r: String| vec![r];
    let resources = match op {
        "CreateCluster" => one(scope.cluster_arn(f.cluster_name.as_deref().unwrap_or("default"))),
        "DeleteCluster"
        | "UpdateCluster"
        | "UpdateClusterSettings"
        | "PutClusterCapacityProviders"
        | "RegisterContainerInstance"
        | "ListContainerInstances"
        | "DeregisterContainerInstance"
        | "PutAttributes"
        | "DeleteAttributes"
        | "ListAttributes" => one(cluster_arn()),
        "DescribeClusters" => {
            let names = &f.clusters;
            if names.is_empty() {
                one(scope.cluster_arn("default"))
            } else {
                names
                    .iter()
                    .map(|n| {
                        arn::cluster_name(scope, Some(n))
                            .map_or_else(|| n.to_string(), |n| scope.cluster_arn(&n))
                    })
                    .collect()
            }
        }
        "RunTask" | "StartTask" => {
            let td = task_definition_arn(scope, f.task_definition.as_deref().unwrap_or_default());
            c.set("ecs:task-definition", td.clone());
            if op == "StartTask" {
                let instances = f
                    .container_instances
                    .iter()
                    .map(|i| in_cluster_arn(scope, "container-instance", &cluster, i))
                    .collect();
                c.set_many("ecs:container-instances", instances);
            }
            one(td)
        }
        "StopTask" => one(in_cluster_arn(
            scope,
            "task",
            &cluster,
            f.task.as_deref().unwrap_or_default(),
        )),
        "DescribeTasks" | "UpdateTaskProtection" | "GetTaskProtection" => f
            .tasks
            .iter()
            .map(|t| in_cluster_arn(scope, "task", &cluster, t))
            .collect(),
        "CreateService" => {
            let name = f.service_name.as_deref().unwrap_or_default();
            if let Some(td) = f.task_definition.as_deref() {
                c.set("ecs:task-definition", task_definition_arn(scope, td));
            }
            let s = scope.service_arn(&cluster, name);
            c.set("ecs:service", s.clone());
            one(s)
        }
        "UpdateService" | "DeleteService" => {
            let s = in_cluster_arn(
                scope,
                "service",
                &cluster,
                f.service.as_deref().unwrap_or_default(),
            );
            if let Some(td) = f.task_definition.as_deref() {
                c.set("ecs:task-definition", task_definition_arn(scope, td));
            }
            c.set("ecs:service", s.clone());
            one(s)
        }
        "DescribeServices" => f
            .services
            .iter()
            .map(|s| in_cluster_arn(scope, "service", &cluster, s))
            .collect(),
        "DescribeContainerInstances" | "UpdateContainerInstancesState" => {
            let list: Vec<String> = f
                .container_instances
                .iter()
                .map(|i| in_cluster_arn(scope, "container-instance", &cluster, i))
                .collect();
            c.set_many("ecs:container-instances", list.clone());
            list
        }
        "TagResource" | "UntagResource" | "ListTagsForResource" => {
            one(f.resource_arn.as_deref().unwrap_or("*").to_string())
        }
        "DescribeTaskDefinition" | "DeregisterTaskDefinition" => one(task_definition_arn(
            scope,
            f.task_definition.as_deref().unwrap_or_default(),
        )),
        _ => vec![],
    };
    Ask {
        action: ["ecs:", op].concat(),
        resources,
        context: c,
    }
}

/// The members of an SSM request that authorization reads.
#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct SsmFields {
    name: Option<String>,
    names: Vec<String>,
    path: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    tags: Vec<SsmTag>,
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct SsmTag {
    key: Option<String>,
    value: Option<String>,
}

/// An SSM request (JSON 1.1) as IAM sees it: parameter ARNs, as the
/// service authorization reference gives them (a version or label
/// selector is not part of the resource).
pub(crate) fn ssm(
    ctx: &RequestContext,
    principal: &Principal,
    now: f64,
    op: &str,
    body: &[u8],
) -> Ask {
    use berth_domain::ssm as s;
    let f: SsmFields = serde_json::from_slice(body).unwrap_or_default();
    let scope = &ctx.scope;
    let mut c = base_context(ctx, principal, now);
    let arn_of = |given: &str| -> String {
        let name = s::parse_selector(given).map_or(given, |(n, _)| n);
        match s::name_of(name, &scope.region, &scope.account) {
            Some(n) => s::arn(&scope.region, &scope.account, n),
            // Another account's or region's ARN: asked about as it is.
            None => name.to_string(),
        }
    };
    request_tags(&mut c, f.tags.iter().map(|t| (&t.key, &t.value)));
    let resources = match op {
        "GetParameters" | "DeleteParameters" => f.names.iter().map(|n| arn_of(n)).collect(),
        "GetParametersByPath" => {
            let path = f.path.as_deref().unwrap_or("/").trim_end_matches('/');
            let path = if path.is_empty() { "/" } else { path };
            vec![format!(
                "arn:aws:ssm:{}:{}:parameter{path}",
                scope.region, scope.account
            )]
        }
        "AddTagsToResource" | "RemoveTagsFromResource" | "ListTagsForResource"
            if f.resource_type.as_deref() == Some("Parameter") =>
        {
            vec![arn_of(f.resource_id.as_deref().unwrap_or_default())]
        }
        "DescribeParameters" => vec![],
        _ => f
            .name
            .as_deref()
            .map(|n| vec![arn_of(n)])
            .unwrap_or_default(),
    };
    Ask {
        action: ["ssm:", op].concat(),
        resources,
        context: c,
    }
}

/// An Application Auto Scaling request (JSON 1.1) as IAM sees it: on the
/// scalable target's ARN for its tags, else on `*`, with the namespace and
/// dimension as condition keys.
pub(crate) fn autoscaling(
    ctx: &RequestContext,
    principal: &Principal,
    now: f64,
    op: &str,
    body: &[u8],
) -> Ask {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut c = base_context(ctx, principal, now);
    if let Some(ns) = v["ServiceNamespace"].as_str() {
        c.set("application-autoscaling:service-namespace", ns);
    }
    if let Some(d) = v["ScalableDimension"].as_str() {
        c.set("application-autoscaling:scalable-dimension", d);
    }
    let tags: Vec<(Option<String>, Option<String>)> = v["Tags"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (Some(k.clone()), v.as_str().map(String::from)))
        .collect();
    request_tags(&mut c, tags.iter().map(|(k, v)| (k, v)));
    let resources = v["ResourceARN"]
        .as_str()
        .map(|a| vec![a.to_string()])
        .unwrap_or_default();
    Ask {
        action: ["application-autoscaling:", op].concat(),
        resources,
        context: c,
    }
}

/// A CloudWatch request (JSON 1.0) as IAM sees it.
pub(crate) fn cloudwatch(
    ctx: &RequestContext,
    principal: &Principal,
    now: f64,
    op: &str,
    body: &[u8],
) -> Ask {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    cloudwatch_ask(ctx, principal, now, op, &v)
}

/// A CloudWatch request, from either protocol's decoded input: metric
/// operations on `*` (PutMetricData with `cloudwatch:namespace`), alarm
/// operations on the alarms' ARNs, tag operations on the resource's.
fn cloudwatch_ask(
    ctx: &RequestContext,
    principal: &Principal,
    now: f64,
    op: &str,
    v: &Value,
) -> Ask {
    let mut c = base_context(ctx, principal, now);
    if op == "PutMetricData" {
        if let Some(ns) = v["Namespace"].as_str() {
            c.set("cloudwatch:namespace", ns);
        }
    }
    let tags: Vec<(Option<String>, Option<String>)> = v["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["Key"].as_str().map(String::from),
                t["Value"].as_str().map(String::from),
            )
        })
        .collect();
    request_tags(&mut c, tags.iter().map(|(k, v)| (k, v)));
    let scope = &ctx.scope;
    let alarm = |n: &str| {
        format!(
            "arn:aws:cloudwatch:{}:{}:alarm:{n}",
            scope.region, scope.account
        )
    };
    let resources = if let Some(arn) = v["ResourceARN"].as_str() {
        vec![arn.to_string()]
    } else if let Some(name) = v["AlarmName"].as_str() {
        vec![alarm(name)]
    } else if let Some(names) = v["AlarmNames"]
        .as_array()
        .filter(|_| op != "DescribeAlarms")
    {
        names.iter().filter_map(Value::as_str).map(alarm).collect()
    } else {
        vec![]
    };
    Ask {
        action: ["cloudwatch:", op].concat(),
        resources,
        context: c,
    }
}

/// The members of a Logs request that authorization reads.
#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct LogsFields {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name: Option<String>,
    resource_arn: Option<String>,
    tags: std::collections::BTreeMap<String, String>,
}

/// A Logs request (JSON 1.1) as IAM sees it: the log group's ARN, or the
/// log stream's for what reads or writes a stream's events, as the
/// service authorization reference gives them.
pub(crate) fn logs(
    ctx: &RequestContext,
    principal: &Principal,
    now: f64,
    op: &str,
    body: &[u8],
) -> Ask {
    use berth_domain::logs as l;
    let f: LogsFields = serde_json::from_slice(body).unwrap_or_default();
    let scope = &ctx.scope;
    let mut c = base_context(ctx, principal, now);
    let group = f.log_group_name.clone().or_else(|| {
        f.log_group_identifier
            .as_deref()
            .and_then(|id| l::group_of_identifier(id, &scope.region, &scope.account))
            .map(String::from)
    });
    let tags: Vec<(Option<String>, Option<String>)> = f
        .tags
        .iter()
        .map(|(k, v)| (Some(k.clone()), Some(v.clone())))
        .collect();
    request_tags(&mut c, tags.iter().map(|(k, v)| (k, v)));
    // Logs asks about a group as `log-group:NAME:*`, the `arn` that
    // DescribeLogGroups shows "for IAM", so `log-group:NAME:*` policies
    // cover the group and its streams alike.
    let group_arn = |g: &str| l::group_arn(&scope.region, &scope.account, g);
    let resources = match (op, &group, &f.log_stream_name) {
        ("DescribeLogGroups", ..) => vec![format!(
            "arn:aws:logs:{}:{}:log-group:*",
            scope.region, scope.account
        )],
        ("TagResource" | "UntagResource" | "ListTagsForResource", ..) => {
            f.resource_arn.clone().into_iter().collect()
        }
        (
            "CreateLogStream" | "DeleteLogStream" | "PutLogEvents" | "GetLogEvents",
            Some(g),
            Some(s),
        ) => vec![l::stream_arn(&scope.region, &scope.account, g, s)],
        (_, Some(g), _) => vec![group_arn(g)],
        _ => vec![],
    };
    Ask {
        action: ["logs:", op].concat(),
        resources,
        context: c,
    }
}

/// The members of a Secrets Manager request that authorization reads.
#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct SecretsFields {
    secret_id: Option<String>,
    name: Option<String>,
    tags: Vec<SsmTag>,
}

/// A Secrets Manager request (JSON 1.1) as IAM sees it: the secret's full
/// ARN, read from the store since its suffix is random, with its tags as
/// `secretsmanager:ResourceTag/*` and `aws:ResourceTag/*`. A secret that
/// does not exist is asked about by the ARN without suffix, so a caller
/// not allowed it learns nothing of which names exist.
pub(crate) fn secrets<'a>(
    st: &'a AppState,
    ctx: &'a RequestContext,
    principal: &'a Principal,
    now: f64,
    op: &'a str,
    body: &'a [u8],
) -> futures::future::BoxFuture<'a, Ask> {
    Box::pin(async move {
        use berth_domain::secrets::SecretId;
        let f: SecretsFields = serde_json::from_slice(body).unwrap_or_default();
        let scope = &ctx.scope;
        let mut c = base_context(ctx, principal, now);
        request_tags(&mut c, f.tags.iter().map(|t| (&t.key, &t.value)));
        let base = format!(
            "arn:aws:secretsmanager:{}:{}:secret:",
            scope.region, scope.account
        );
        let resources = match (op, &f.secret_id) {
            ("CreateSecret", _) => {
                let name = f.name.unwrap_or_default();
                c.set("secretsmanager:Name", name.clone());
                vec![format!("{base}{name}-??????")]
            }
            (_, Some(given)) => {
                let found = match SecretId::parse(given, &scope.region, &scope.account) {
                    Some(id) => berth_control::secrets::find(&st.ctl, scope, &id, st.now())
                        .await
                        .ok()
                        .map(|r| r.value),
                    None => None,
                };
                let arn = match &found {
                    Some(r) => {
                        for (k, v) in &r.tags {
                            c.set(&format!("secretsmanager:ResourceTag/{k}"), v.clone());
                            c.set(&format!("aws:ResourceTag/{k}"), v.clone());
                        }
                        r.arn(&scope.region, &scope.account)
                    }
                    None if given.starts_with("arn:") => given.clone(),
                    None => format!("{base}{given}"),
                };
                c.set("secretsmanager:SecretId", arn.clone());
                vec![arn]
            }
            _ => vec![],
        };
        Ask {
            action: ["secretsmanager:", op].concat(),
            resources,
            context: c,
        }
    })
}

/// An SQS request (JSON 1.0) as IAM sees it.
pub(crate) fn sqs(
    ctx: &RequestContext,
    principal: &Principal,
    now: f64,
    op: &str,
    body: &[u8],
) -> Ask {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    sqs_ask(ctx, principal, now, op, &v)
}

/// An SQS request from either protocol's decoded input: on the queue the
/// URL (or, to create or find one, the name) names; ListQueues on every
/// queue of the region.
fn sqs_ask(ctx: &RequestContext, principal: &Principal, now: f64, op: &str, v: &Value) -> Ask {
    let mut c = base_context(ctx, principal, now);
    let tags: Vec<(Option<String>, Option<String>)> = v["tags"]
        .as_object()
        .or_else(|| v["Tags"].as_object())
        .into_iter()
        .flatten()
        .map(|(k, v)| (Some(k.clone()), v.as_str().map(String::from)))
        .collect();
    request_tags(&mut c, tags.iter().map(|(k, v)| (k, v)));
    let scope = &ctx.scope;
    let arn = |name: &str| berth_domain::sqs::queue_arn(&scope.region, &scope.account, name);
    let name = v["QueueUrl"]
        .as_str()
        .and_then(berth_domain::sqs::parse_queue_url)
        .map(|(_, n)| n.to_string())
        .or_else(|| v["QueueName"].as_str().map(String::from));
    let resources = match (op, name) {
        ("ListQueues", _) | (_, None) => vec![arn("*")],
        (_, Some(n)) => vec![arn(&n)],
    };
    Ask {
        action: ["sqs:", op].concat(),
        resources,
        context: c,
    }
}

/// An awsQuery request (ELBv2, IAM, STS) as IAM sees it.
pub(crate) fn query(
    ctx: &RequestContext,
    principal: &Principal,
    now: f64,
    prefix: &str,
    action: &str,
    params: &QueryParams,
) -> Ask {
    if prefix == "cloudwatch" {
        let v: Value = berth_wire::cloudwatch::MODEL
            .decode(action, params)
            .unwrap_or(Value::Null);
        return cloudwatch_ask(ctx, principal, now, action, &v);
    }
    if prefix == "sqs" {
        let v: Value = berth_wire::sqs::MODEL
            .decode(action, params)
            .unwrap_or(Value::Null);
        return sqs_ask(ctx, principal, now, action, &v);
    }
    let mut c = base_context(ctx, principal, now);
    let get = |k: &str| params.get(k).map(str::to_string);
    let mut tag_keys = vec![];
    for i in 1.. {
        let Some(k) = get(&format!("Tags.member.{i}.Key")) else {
            break;
        };
        let v = get(&format!("Tags.member.{i}.Value")).unwrap_or_default();
        c.set(&format!("aws:RequestTag/{k}"), v);
        tag_keys.push(k);
    }
    if !tag_keys.is_empty() {
        c.set_many("aws:TagKeys", tag_keys);
    }
    let account = &ctx.scope.account;
    let resources = match prefix {
        "iam" => {
            if let Some(name) = get("InstanceProfileName") {
                let path = get("Path")
                    .filter(|_| action == "CreateInstanceProfile")
                    .unwrap_or_else(|| "/".into());
                vec![format!(
                    "arn:aws:iam::{account}:instance-profile{path}{name}"
                )]
            } else if let Some(service) = get("AWSServiceName") {
                c.set("iam:AWSServiceName", service.clone());
                let role = berth_iam::managed::SERVICE_LINKED_ROLES
                    .iter()
                    .find(|s| s.service == service)
                    .map_or("*", |s| s.role);
                vec![format!(
                    "arn:aws:iam::{account}:role/aws-service-role/{service}/{role}"
                )]
            } else if let Some(arn) = get("PolicySourceArn") {
                vec![arn]
            } else if let Some(name) = get("RoleName") {
                let path = get("Path")
                    .filter(|_| action == "CreateRole")
                    .unwrap_or_else(|| "/".into());
                vec![format!("arn:aws:iam::{account}:role{path}{name}")]
            } else if let Some(name) = get("GroupName") {
                let path = get("Path")
                    .filter(|_| action == "CreateGroup")
                    .unwrap_or_else(|| "/".into());
                vec![format!("arn:aws:iam::{account}:group{path}{name}")]
            } else if let Some(arn) = get("PolicyArn").filter(|_| get("UserName").is_none()) {
                vec![arn]
            } else if let Some(name) = get("UserName") {
                let path = get("Path").unwrap_or_else(|| "/".into());
                let path = if action == "CreateUser" {
                    path
                } else {
                    "/".into()
                };
                // IAM's user ARNs carry the path; a policy on `user/*` or
                // `user/${aws:username}` matches either way.
                vec![format!("arn:aws:iam::{account}:user{path}{name}")]
            } else if let Some(name) = get("PolicyName").filter(|_| action == "CreatePolicy") {
                let path = get("Path").unwrap_or_else(|| "/".into());
                vec![format!("arn:aws:iam::{account}:policy{path}{name}")]
            } else if matches!(
                action,
                "GetUser"
                    | "CreateAccessKey"
                    | "ListAccessKeys"
                    | "UpdateAccessKey"
                    | "DeleteAccessKey"
            ) {
                vec![principal.arn()]
            } else {
                vec![]
            }
        }
        "sts" => get("RoleArn").map(|a| vec![a]).unwrap_or_default(),
        _ => [
            "LoadBalancerArn",
            "TargetGroupArn",
            "ListenerArn",
            "RuleArn",
        ]
        .iter()
        .find_map(|k| get(k))
        .map(|a| vec![a])
        .unwrap_or_else(|| {
            (1..)
                .map_while(|i| get(&format!("ResourceArns.member.{i}")))
                .collect()
        }),
    };
    Ask {
        action: format!("{prefix}:{action}"),
        resources,
        context: c,
    }
}

/// The roles a launch hands to ECS: the task definition's task and
/// execution roles, or the ones the request's overrides name instead.
async fn passed_roles(st: &AppState, ctx: &RequestContext, op: &str, body: &Value) -> Vec<String> {
    let mut roles = vec![];
    let overrides = body.get("overrides");
    for (field, over) in [
        ("taskRoleArn", "taskRoleArn"),
        ("executionRoleArn", "executionRoleArn"),
    ] {
        if let Some(r) = overrides.and_then(|o| text(o, over)) {
            roles.push(r.to_string());
            continue;
        }
        let Some(td) = text(body, "taskDefinition") else {
            continue;
        };
        // UpdateService without a new task definition passes nothing new.
        if op == "UpdateService" && td.is_empty() {
            continue;
        }
        let Ok(reference) =
            berth_control::taskdefs::parse_reference(&ctx.scope, td, "taskDefinition")
        else {
            continue;
        };
        // A task definition that does not resolve is refused by the
        // operation itself, with ECS's error.
        if let Ok(stored) = berth_control::taskdefs::resolve(st, &ctx.scope, &reference).await {
            let def = &stored.value.def;
            let role = if field == "taskRoleArn" {
                &def.task_role_arn
            } else {
                &def.execution_role_arn
            };
            if let Some(r) = role.as_deref().filter(|r| !r.is_empty()) {
                roles.push(r.to_string());
            }
        }
    }
    roles.dedup();
    roles
}

/// Whether an ECS operation hands roles to ECS (and so asks `iam:PassRole`).
pub(crate) fn passes_roles(op: &str) -> bool {
    matches!(
        op,
        "RunTask" | "StartTask" | "CreateService" | "UpdateService"
    )
}

/// `iam:PassRole` for every role a RunTask, StartTask, CreateService or
/// UpdateService hands to ECS, as AWS checks it.
pub(crate) async fn check_pass_role(
    st: &AppState,
    ctx: &RequestContext,
    op: &str,
    body: &[u8],
) -> Result<(), crate::ApiError> {
    if !passes_roles(op) {
        return Ok(());
    }
    let Some(caller) = ctx.caller.as_ref().filter(|c| limited(c)) else {
        return Ok(());
    };
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // The service role CreateService names is passed to ECS itself.
    if let Some(role) = text(&body, "role").filter(|r| !r.is_empty() && op == "CreateService") {
        let arn = if role.starts_with("arn:") {
            role.to_string()
        } else {
            format!("arn:aws:iam::{}:role/{role}", ctx.scope.account)
        };
        let mut c = base_context(ctx, &caller.principal, st.now());
        c.set("iam:PassedToService", "ecs.amazonaws.com");
        let ask = Ask {
            action: "iam:PassRole".into(),
            resources: vec![arn],
            context: c,
        };
        check(st, ctx, ask).await?;
    }
    let roles = passed_roles(st, ctx, op, &body).await;
    if roles.is_empty() {
        return Ok(());
    }
    let mut c = base_context(ctx, &caller.principal, st.now());
    c.set("iam:PassedToService", "ecs-tasks.amazonaws.com");
    check(
        st,
        ctx,
        Ask {
            action: "iam:PassRole".into(),
            resources: roles,
            context: c,
        },
    )
    .await
}
