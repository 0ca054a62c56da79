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

/// The global condition keys of every request.
pub(crate) fn base_context(ctx: &RequestContext, principal: &Principal, now: f64) -> Context {
    let mut c = Context::default();
    c.set("aws:PrincipalArn", principal.arn());
    c.set("aws:PrincipalAccount", principal.account());
    c.set("aws:userid", principal.user_id());
    match principal {
        Principal::User { name, .. } => {
            c.set("aws:username", name.clone());
            c.set("aws:PrincipalType", "User");
        }
        Principal::AssumedRole { .. } | Principal::Instance { .. } => {
            c.set("aws:PrincipalType", "AssumedRole")
        }
        Principal::Root { .. } => c.set("aws:PrincipalType", "Account"),
    }
    if let Some(caller) = &ctx.caller {
        for t in caller.tags.iter() {
            c.set(&format!("aws:PrincipalTag/{}", t.key), t.value.clone());
        }
    }
    c.set("aws:RequestedRegion", ctx.scope.region.clone());
    if let Some(ip) = ctx.source_ip {
        c.set("aws:SourceIp", ip.to_string());
    }
    c.set(
        "aws:SecureTransport",
        if ctx.secure { "true" } else { "false" },
    );
    c.set("aws:CurrentTime", berth_domain::elb::iso8601(now));
    c.set("aws:EpochTime", format!("{}", now as i64));
    c
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

fn texts<'a>(body: &'a Value, field: &str) -> Vec<&'a str> {
    body.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
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

fn request_tags(c: &mut Context, tags: Option<&Value>, key: &str, value: &str) {
    let Some(list) = tags.and_then(Value::as_array) else {
        return;
    };
    let mut keys = vec![];
    for t in list {
        if let (Some(k), Some(v)) = (
            t.get(key).and_then(Value::as_str),
            t.get(value).and_then(Value::as_str),
        ) {
            c.set(&format!("aws:RequestTag/{k}"), v.to_string());
            keys.push(k.to_string());
        }
    }
    c.set_many("aws:TagKeys", keys);
}

/// An ECS request (JSON 1.1) as IAM sees it.
pub(crate) fn ecs(
    ctx: &RequestContext,
    principal: &Principal,
    now: f64,
    op: &str,
    body: &[u8],
) -> Ask {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let scope = &ctx.scope;
    let mut c = base_context(ctx, principal, now);
    let cluster =
        arn::cluster_name(scope, text(&body, "cluster")).unwrap_or_else(|| "default".into());
    let cluster_arn = scope.cluster_arn(&cluster);
    let takes_cluster = body.get("cluster").is_some()
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
    if takes_cluster {
        c.set("ecs:cluster", cluster_arn.clone());
    }
    request_tags(&mut c, body.get("tags"), "key", "value");
    let one = |r: String| vec![r];
    let resources = match op {
        "CreateCluster" => one(scope.cluster_arn(text(&body, "clusterName").unwrap_or("default"))),
        "DeleteCluster"
        | "UpdateCluster"
        | "UpdateClusterSettings"
        | "PutClusterCapacityProviders"
        | "RegisterContainerInstance"
        | "ListContainerInstances"
        | "DeregisterContainerInstance"
        | "PutAttributes"
        | "DeleteAttributes"
        | "ListAttributes" => one(cluster_arn.clone()),
        "DescribeClusters" => {
            let names = texts(&body, "clusters");
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
            let td = task_definition_arn(scope, text(&body, "taskDefinition").unwrap_or_default());
            c.set("ecs:task-definition", td.clone());
            if op == "StartTask" {
                let instances = texts(&body, "containerInstances")
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
            text(&body, "task").unwrap_or_default(),
        )),
        "DescribeTasks" => texts(&body, "tasks")
            .iter()
            .map(|t| in_cluster_arn(scope, "task", &cluster, t))
            .collect(),
        "CreateService" => {
            let name = text(&body, "serviceName").unwrap_or_default();
            if let Some(td) = text(&body, "taskDefinition") {
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
                text(&body, "service").unwrap_or_default(),
            );
            if let Some(td) = text(&body, "taskDefinition") {
                c.set("ecs:task-definition", task_definition_arn(scope, td));
            }
            c.set("ecs:service", s.clone());
            one(s)
        }
        "DescribeServices" => texts(&body, "services")
            .iter()
            .map(|s| in_cluster_arn(scope, "service", &cluster, s))
            .collect(),
        "DescribeContainerInstances" | "UpdateContainerInstancesState" => {
            let list: Vec<String> = texts(&body, "containerInstances")
                .iter()
                .map(|i| in_cluster_arn(scope, "container-instance", &cluster, i))
                .collect();
            c.set_many("ecs:container-instances", list.clone());
            list
        }
        "TagResource" | "UntagResource" | "ListTagsForResource" => {
            one(text(&body, "resourceArn").unwrap_or("*").to_string())
        }
        "DescribeTaskDefinition" | "DeregisterTaskDefinition" => one(task_definition_arn(
            scope,
            text(&body, "taskDefinition").unwrap_or_default(),
        )),
        _ => vec![],
    };
    Ask {
        action: format!("ecs:{op}"),
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

/// `iam:PassRole` for every role a RunTask, StartTask, CreateService or
/// UpdateService hands to ECS, as AWS checks it.
pub(crate) async fn check_pass_role(
    st: &AppState,
    ctx: &RequestContext,
    op: &str,
    body: &[u8],
) -> Result<(), crate::ApiError> {
    if !matches!(
        op,
        "RunTask" | "StartTask" | "CreateService" | "UpdateService"
    ) {
        return Ok(());
    }
    let Some(caller) = ctx.caller.as_ref().filter(|c| limited(c)) else {
        return Ok(());
    };
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
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
