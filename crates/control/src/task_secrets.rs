//! A task's `secrets` resolved as ECS's agent resolves them: with the task
//! definition's execution role, which `ecs-tasks.amazonaws.com` must be
//! trusted to assume, and whose policies must allow `ssm:GetParameters` on
//! each parameter and `secretsmanager:GetSecretValue` on each secret. What
//! goes wrong becomes the task's stopped reason, in ECS's words.

use crate::Control;
use berth_domain::secrets::SecretId;
use berth_domain::ssm as ssm_rules;
use berth_domain::{Scope, Timestamp};
use berth_iam::policy::{evaluate, Caller, Context, Decision, Policy, PolicyKind, Request};
use berth_iam::Principal;
use std::sync::Arc;

/// The service that assumes execution and task roles.
pub const ECS_TASKS: &str = "ecs-tasks.amazonaws.com";

/// One secret a container asks for: the variable and where its value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub container: String,
    pub name: String,
    pub value_from: String,
    /// What the container does with it.
    pub used_as: berth_wire::agent::SecretUse,
}

/// One resolved: what was asked for, and its value.
pub type Resolved = (Wanted, String);

const PREFIX: &str = "ResourceInitializationError: unable to pull secrets or registry auth";

fn failure(why: impl std::fmt::Display) -> String {
    format!("{PREFIX}: {why}")
}

/// The execution role as a principal with its policies, once its trust
/// policy lets ECS's tasks assume it.
async fn execution_role(
    ctl: &Control,
    scope: &Scope,
    role_arn: &str,
    task_id: &str,
) -> Result<(Principal, Arc<Vec<Policy>>), String> {
    let role = assumable(ctl, scope, role_arn, "execution role")
        .await
        .map_err(failure)?;
    let principal = Principal::AssumedRole {
        account: scope.account.clone(),
        role: role.name.clone(),
        role_id: role.id.clone(),
        session: task_id.to_string(),
    };
    let policies = ctl
        .identity
        .policies(&principal)
        .await
        .map_err(|e| failure(format!("cannot read the execution role's policies: {e}")))?;
    Ok((principal, policies))
}

/// The role `role_arn` names (`what`: "execution role", "task role"), if
/// it is this account's and its trust policy lets ECS's tasks assume it;
/// otherwise why not.
pub(crate) async fn assumable(
    ctl: &Control,
    scope: &Scope,
    role_arn: &str,
    what: &str,
) -> Result<berth_iam::records::Role, String> {
    let own = format!("arn:aws:iam::{}:role/", scope.account);
    let name = role_arn
        .strip_prefix(&own)
        .map(|rest| rest.rsplit('/').next().unwrap_or(rest))
        .ok_or_else(|| format!("{what} {role_arn} is not a role of this account"))?;
    let role = crate::iam::role(ctl, name)
        .await
        .map_err(|_| format!("{what} {role_arn} does not exist"))?
        .value;
    if role.arn(&scope.account) != role_arn {
        return Err(format!("{what} {role_arn} does not exist"));
    }
    let trust = Policy::parse(&role.trust, PolicyKind::Trust)
        .map_err(|e| format!("{what} {role_arn} has a trust policy that cannot be read: {e}"))?;
    let context = Context::default();
    let trusted = evaluate(
        &[&trust],
        &[],
        &Request {
            action: "sts:AssumeRole",
            resource: role_arn,
            caller: Some(Caller::Service(ECS_TASKS)),
            context: &context,
        },
    );
    if trusted != Decision::Allow {
        return Err(format!(
            "the trust policy of {what} {role_arn} does not let {ECS_TASKS} assume it"
        ));
    }
    Ok(role)
}

/// Whether the role may take `action` on `resource`, or the denial in IAM's words.
fn allowed(
    principal: &Principal,
    policies: &[Policy],
    scope: &Scope,
    action: &str,
    resource: &str,
) -> Result<(), String> {
    let refs: Vec<&Policy> = policies.iter().collect();
    let mut context = Context::over(Arc::new(principal.context(&[])));
    context.set_known("aws:requestedregion", scope.region.clone());
    let decision = evaluate(
        &refs,
        &[],
        &Request {
            action,
            resource,
            caller: None,
            context: &context,
        },
    );
    if decision == Decision::Allow {
        return Ok(());
    }
    Err(failure(format!(
        "AccessDeniedException: User: {} is not authorized to perform: {action} on resource: {resource}",
        principal.arn()
    )))
}

/// Resolves `wanted` with `role_arn`'s permissions: every value, or the
/// stopped reason.
pub async fn resolve(
    ctl: &Control,
    scope: &Scope,
    role_arn: Option<&str>,
    task_id: &str,
    wanted: &[Wanted],
    now: Timestamp,
) -> Result<Vec<Resolved>, String> {
    if wanted.is_empty() {
        return Ok(vec![]);
    }
    let Some(role_arn) = role_arn else {
        return Err(failure(
            "the task definition has no executionRoleArn to fetch secrets with",
        ));
    };
    let (principal, policies) = execution_role(ctl, scope, role_arn, task_id).await?;
    let mut out = Vec::with_capacity(wanted.len());
    let mut missing = vec![];
    for w in wanted {
        let value = if w.used_as == berth_wire::agent::SecretUse::RegistryAuth {
            // A name of the same region, or an ARN (full or partial).
            let arn = if w.value_from.starts_with("arn:") {
                w.value_from.clone()
            } else {
                format!(
                    "arn:aws:secretsmanager:{}:{}:secret:{}",
                    scope.region, scope.account, w.value_from
                )
            };
            registry_auth(&secret_value(ctl, scope, &principal, &policies, &arn, now).await?)?
        } else if w.value_from.starts_with("arn:aws:secretsmanager:") {
            secret_value(ctl, scope, &principal, &policies, &w.value_from, now).await?
        } else {
            match parameter_value(ctl, scope, &principal, &policies, &w.value_from).await? {
                Some(v) => v,
                None => {
                    missing.push(w.value_from.clone());
                    continue;
                }
            }
        };
        out.push((w.clone(), value));
    }
    if !missing.is_empty() {
        return Err(failure(format!(
            "unable to retrieve secrets from ssm: invalid parameters: {}",
            missing.join(", ")
        )));
    }
    Ok(out)
}

/// A private registry's credentials as the secret holds them: a JSON
/// object with a non-empty `username` and `password`, kept as it is.
fn registry_auth(value: &str) -> Result<String, String> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(value)
        .map_err(|_| failure("unable to unmarshal secret value, invalid schema"))?;
    for field in ["username", "password"] {
        if object
            .get(field)
            .and_then(serde_json::Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(failure(format!(
                "asm fetching {field}: AuthorizationData is malformed, empty field"
            )));
        }
    }
    Ok(value.to_string())
}

/// A parameter by name (this region) or ARN, decrypted; `None` when it
/// does not exist.
async fn parameter_value(
    ctl: &Control,
    scope: &Scope,
    principal: &Principal,
    policies: &[Policy],
    value_from: &str,
) -> Result<Option<String>, String> {
    let (given, selector) =
        ssm_rules::parse_selector(value_from).map_err(|e| failure(e.message))?;
    let Some(name) = ssm_rules::name_of(given, &scope.region, &scope.account) else {
        return Err(failure(format!(
            "parameter {value_from} is not in this account and region"
        )));
    };
    let arn = ssm_rules::arn(&scope.region, &scope.account, name);
    allowed(principal, policies, scope, "ssm:GetParameters", &arn)?;
    let Some(record) = crate::ssm::get(ctl, scope, name)
        .await
        .map_err(|e| failure(format!("cannot read parameter {name}: {e}")))?
    else {
        return Ok(None);
    };
    let record = record.value;
    let Some(version) = record.select(&selector) else {
        return Ok(None);
    };
    crate::ssm::value(ctl, scope, &record, version, true)
        .map(Some)
        .map_err(|e| failure(format!("cannot decrypt parameter {name}: {e}")))
}

/// A Secrets Manager reference, `arn:...:secret:name-XXXXXX[:json-key:version-stage:version-id]`.
async fn secret_value(
    ctl: &Control,
    scope: &Scope,
    principal: &Principal,
    policies: &[Policy],
    value_from: &str,
    now: Timestamp,
) -> Result<String, String> {
    // The ARN has six parts before the secret's name; what follows the
    // name are the optional json key, stage and version id.
    let mut parts = value_from.splitn(8, ':');
    let head: Vec<&str> = parts.by_ref().take(7).collect();
    let rest: Vec<&str> = parts
        .next()
        .map(|r| r.split(':').collect())
        .unwrap_or_default();
    let arn = head.join(":");
    let pick = |i: usize| rest.get(i).copied().filter(|s| !s.is_empty());
    let (json_key, stage, version) = (pick(0), pick(1), pick(2));
    let Some(id) = SecretId::parse(&arn, &scope.region, &scope.account) else {
        return Err(failure(format!(
            "secret {arn} is not in this account and region"
        )));
    };
    let record = crate::secrets::find(ctl, scope, &id, now).await.map_err(|_| {
        failure(format!(
            "unable to retrieve secret from asm: ResourceNotFoundException: Secrets Manager can't find the specified secret ({arn})"
        ))
    })?;
    let record = record.value;
    let full = record.arn(&scope.region, &scope.account);
    allowed(
        principal,
        policies,
        scope,
        "secretsmanager:GetSecretValue",
        &full,
    )?;
    if record.deleted.is_some() {
        return Err(failure(format!(
            "unable to retrieve secret from asm: secret {full} is marked for deletion"
        )));
    }
    let v = record.version(version, stage).map_err(|e| {
        failure(format!(
            "unable to retrieve secret from asm: {}: {}",
            e.code, e.message
        ))
    })?;
    let (string, binary) = crate::secrets::value(ctl, scope, &record, v)
        .map_err(|e| failure(format!("cannot decrypt secret {full}: {e}")))?;
    let Some(key) = json_key else {
        return string
            .or(binary)
            .ok_or_else(|| failure(format!("secret {full} has no value")));
    };
    let text = string.ok_or_else(|| {
        failure(format!(
            "secret {full} holds a binary value; json key {key} needs a JSON string"
        ))
    })?;
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|_| {
            failure(format!(
                "unable to unmarshal secret value of {full}: invalid schema, not a JSON object"
            ))
        })?;
    match object.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(failure(format!(
            "retrieved secret from Secrets Manager did not contain json key {key}"
        ))),
    }
}
