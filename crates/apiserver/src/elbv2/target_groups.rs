//! Target groups: create, describe, modify, delete, attributes.

use super::{
    all_listeners, attribute_changes, attribute_pairs, group_users, load_balancer, new_id, page,
    swap, target_group,
};
use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::cas::Attempt;
use berth_domain::elb::{self, attributes, health, ElbCode, ElbError, HealthCheck, TargetGroup};
use berth_store::keys::ElbKeys;
use berth_store::{typed, Op, RangeRequest, Txn};
use berth_wire::elbv2 as w;

/// The health-check members CreateTargetGroup and ModifyTargetGroup share.
struct HealthInput {
    enabled: Option<bool>,
    protocol: Option<String>,
    port: Option<String>,
    path: Option<String>,
    interval: Option<i32>,
    timeout: Option<i32>,
    healthy: Option<i32>,
    unhealthy: Option<i32>,
    matcher: Option<w::Matcher>,
}

/// The health-check members of a CreateTargetGroup or ModifyTargetGroup
/// input (two shapes with the same member names).
macro_rules! health_input {
    ($req:expr) => {
        HealthInput {
            enabled: $req.health_check_enabled,
            protocol: $req.health_check_protocol.clone(),
            port: $req.health_check_port.clone(),
            path: $req.health_check_path.clone(),
            interval: $req.health_check_interval_seconds,
            timeout: $req.health_check_timeout_seconds,
            healthy: $req.healthy_threshold_count,
            unhealthy: $req.unhealthy_threshold_count,
            matcher: $req.matcher.clone(),
        }
    };
}

impl HealthInput {
    fn apply(self, current: &HealthCheck) -> Result<HealthCheck, ElbError> {
        let h = HealthCheck {
            enabled: self.enabled.unwrap_or(current.enabled),
            protocol: self.protocol.unwrap_or_else(|| current.protocol.clone()),
            port: self.port.unwrap_or_else(|| current.port.clone()),
            path: self.path.unwrap_or_else(|| current.path.clone()),
            interval_seconds: self.interval.unwrap_or(current.interval_seconds),
            timeout_seconds: self.timeout.unwrap_or(current.timeout_seconds),
            healthy_threshold: self.healthy.unwrap_or(current.healthy_threshold),
            unhealthy_threshold: self.unhealthy.unwrap_or(current.unhealthy_threshold),
            matcher: self
                .matcher
                .and_then(|m| m.http_code)
                .unwrap_or_else(|| current.matcher.clone()),
        };
        health::validate(&h)?;
        Ok(h)
    }
}

pub async fn create_target_group(
    st: &AppState,
    ctx: &RequestContext,
    req: w::CreateTargetGroupInput,
) -> Result<w::CreateTargetGroupOutput, ApiError> {
    let name = super::required(&req.name, "name")?.to_string();
    elb::validate_name(&name, "Target group")?;
    let target_type = req.target_type.clone().unwrap_or_else(|| "instance".into());
    if target_type != "instance" && target_type != "ip" {
        return Err(ElbError::validation(format!(
            "Target type '{target_type}' is not supported; Berth's target groups take 'instance' or 'ip' targets"
        ))
        .into());
    }
    let protocol = super::required(&req.protocol, "protocol")?.to_string();
    match protocol.as_str() {
        "HTTP" => {}
        "HTTPS" => {
            return Err(ElbError::new(
                ElbCode::UnsupportedProtocol,
                "Protocol 'HTTPS' is not supported: Berth's load balancer talks to targets over HTTP",
            )
            .into())
        }
        other => {
            return Err(ElbError::validation(format!(
                "Protocol '{other}' is not valid for an application load balancer's target group; use HTTP"
            ))
            .into())
        }
    }
    let version = req
        .protocol_version
        .clone()
        .unwrap_or_else(|| "HTTP1".into());
    if version != "HTTP1" {
        return Err(ElbError::validation(format!(
            "Protocol version '{version}' is not supported; Berth speaks HTTP1 to targets"
        ))
        .into());
    }
    let port = req.port.ok_or_else(|| {
        ElbError::validation(
            "A port must be specified for a target group of instance or ip targets",
        )
    })?;
    elb::validate_port(port, "port")?;
    let vpc = super::required(&req.vpc_id, "vpcId")?;
    if !st.ctl.networks.current().vpcs.iter().any(|v| v.id == vpc) {
        return Err(ElbError::validation(format!("The VPC ID '{vpc}' is not found")).into());
    }
    let health = health_input!(req).apply(&HealthCheck::default())?;
    let tags = req.tags.clone().unwrap_or_default();
    elb::validate_tags(&tags)?;
    let scope = &ctx.scope;
    let key = scope.target_group(&name);
    let (name, key, health, tags, protocol, target_type) =
        (&name, &key, &health, &tags, &protocol, &target_type);
    let tg = swap(st, || async move {
        if let Some(e) = typed::get::<TargetGroup>(&*st.store, key).await? {
            let same = &e.value.protocol == protocol
                && e.value.port == port
                && &e.value.target_type == target_type
                && &e.value.health == health;
            if same {
                return Ok(Attempt::Done(e.value));
            }
            return Err(ElbError::new(
                ElbCode::DuplicateTargetGroupName,
                format!("A target group with the same name '{name}' exists, but with different settings"),
            )
            .into());
        }
        let tg = TargetGroup {
            name: name.clone(),
            id: new_id(),
            protocol: protocol.clone(),
            protocol_version: "HTTP1".into(),
            port,
            target_type: target_type.clone(),
            vpc_id: vpc.to_string(),
            health: health.clone(),
            created_at: st.now(),
            tags: tags.clone(),
            attributes: attributes::target_group_defaults(),
        };
        // Its region's AWS/ApplicationELB metrics are published with its alarms.
        let txn = Txn::when(
            vec![typed::unchanged(key, 0)],
            vec![
                typed::put(key, &tg),
                berth_control::alarms::watched_region(scope),
            ],
        );
        Ok(Attempt::Write(txn, tg))
    })
    .await?;
    Ok(w::CreateTargetGroupOutput {
        target_groups: Some(vec![tg.to_wire(scope, vec![])]),
    })
}

pub async fn describe_target_groups(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeTargetGroupsInput,
) -> Result<w::DescribeTargetGroupsOutput, ApiError> {
    let scope = &ctx.scope;
    let (_, listeners) = all_listeners(st, scope).await?;
    let users = group_users(scope, &listeners);
    let all: Vec<(String, TargetGroup)> =
        typed::list::<TargetGroup>(&*st.store, &scope.target_groups())
            .await?
            .into_iter()
            .map(|(_, tg)| (tg.value.name.clone(), tg.value))
            .collect();
    let arns = req.target_group_arns.clone().unwrap_or_default();
    let names = req.names.clone().unwrap_or_default();
    let wanted: Vec<(String, TargetGroup)> = if !arns.is_empty() {
        let mut out = vec![];
        for arn in &arns {
            let tg = target_group(st, scope, arn).await?;
            out.push((tg.value.name.clone(), tg.value));
        }
        out
    } else if !names.is_empty() {
        let mut out = vec![];
        for n in &names {
            match all.iter().find(|(k, _)| k == n) {
                Some(found) => out.push(found.clone()),
                None => return Err(ElbError::tg_not_found().into()),
            }
        }
        out
    } else if let Some(lb_arn) = &req.load_balancer_arn {
        let lb = load_balancer(st, scope, lb_arn).await?;
        let lb_arn = lb.value.arn(scope);
        all.into_iter()
            .filter(|(_, tg)| {
                users
                    .get(&tg.arn(scope))
                    .is_some_and(|u| u.contains(&lb_arn))
            })
            .collect()
    } else {
        all
    };
    let (items, next) = page(wanted, req.marker.as_deref(), req.page_size)?;
    Ok(w::DescribeTargetGroupsOutput {
        target_groups: Some(
            items
                .iter()
                .map(|tg| {
                    tg.to_wire(
                        scope,
                        users.get(&tg.arn(scope)).cloned().unwrap_or_default(),
                    )
                })
                .collect(),
        ),
        next_marker: next,
    })
}

pub async fn modify_target_group(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ModifyTargetGroupInput,
) -> Result<w::ModifyTargetGroupOutput, ApiError> {
    let arn = super::required(&req.target_group_arn, "targetGroupArn")?;
    let scope = &ctx.scope;
    let tg = super::update(st, scope, arn, |tg: &mut TargetGroup| {
        tg.health = health_input!(req).apply(&tg.health)?;
        Ok(())
    })
    .await?;
    let (_, listeners) = all_listeners(st, scope).await?;
    let users = group_users(scope, &listeners);
    Ok(w::ModifyTargetGroupOutput {
        target_groups: Some(vec![tg.to_wire(
            scope,
            users.get(&tg.arn(scope)).cloned().unwrap_or_default(),
        )]),
    })
}

pub async fn delete_target_group(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DeleteTargetGroupInput,
) -> Result<w::DeleteTargetGroupOutput, ApiError> {
    let arn = super::required(&req.target_group_arn, "targetGroupArn")?;
    let scope = &ctx.scope;
    swap(st, || async move {
        let tg = match target_group(st, scope, arn).await {
            Ok(tg) => tg,
            Err(berth_control::ControlError::Elb(e)) if e.code == ElbCode::TargetGroupNotFound => {
                return Ok(Attempt::Done(()))
            }
            Err(e) => return Err(e.into()),
        };
        let (routing, listeners) = all_listeners(st, scope).await?;
        if group_users(scope, &listeners).contains_key(&tg.value.arn(scope)) {
            return Err(ElbError::new(
                ElbCode::ResourceInUse,
                format!("Target group '{arn}' is currently in use by a listener or a rule"),
            )
            .into());
        }
        let key = scope.target_group(&tg.value.name);
        let mut ops = vec![Op::delete(&key)];
        for prefix in [
            scope.targets_of(&tg.value.id),
            scope.target_healths_of(&tg.value.id),
        ] {
            let held = st.store.range(RangeRequest::prefix(prefix)).await?;
            ops.extend(held.kvs.into_iter().map(|kv| Op::delete(kv.key)));
        }
        let txn = Txn::when(
            vec![
                typed::unchanged(&key, tg.mod_revision),
                typed::unchanged(&scope.elb_routing(), routing),
            ],
            ops,
        );
        Ok(Attempt::Write(txn, ()))
    })
    .await?;
    Ok(w::DeleteTargetGroupOutput::default())
}

fn tg_attributes(tg: &TargetGroup) -> Vec<w::TargetGroupAttribute> {
    attribute_pairs(&tg.attributes)
        .map(|(k, v)| w::TargetGroupAttribute {
            key: Some(k),
            value: Some(v),
        })
        .collect()
}

pub async fn describe_target_group_attributes(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeTargetGroupAttributesInput,
) -> Result<w::DescribeTargetGroupAttributesOutput, ApiError> {
    let arn = super::required(&req.target_group_arn, "targetGroupArn")?;
    let tg = target_group(st, &ctx.scope, arn).await?;
    Ok(w::DescribeTargetGroupAttributesOutput {
        attributes: Some(tg_attributes(&tg.value)),
    })
}

pub async fn modify_target_group_attributes(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ModifyTargetGroupAttributesInput,
) -> Result<w::ModifyTargetGroupAttributesOutput, ApiError> {
    let arn = super::required(&req.target_group_arn, "targetGroupArn")?;
    let changes = attribute_changes(
        req.attributes
            .map(|a| a.into_iter().map(|x| (x.key, x.value)).collect()),
    )?;
    let tg = super::update(st, &ctx.scope, arn, |tg: &mut TargetGroup| {
        tg.attributes = attributes::modify_target_group(&tg.attributes, &changes)?;
        Ok(())
    })
    .await?;
    Ok(w::ModifyTargetGroupAttributesOutput {
        attributes: Some(tg_attributes(&tg)),
    })
}
