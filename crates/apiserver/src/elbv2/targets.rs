//! Registering targets and reporting their health.

use super::{all_listeners, group_users, target_group};
use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::elb::{drain, write_registrations};
use berth_domain::elb::{self, ElbCode, ElbError, HealthRecord, Registration, TargetGroup};
use berth_domain::instance::ContainerInstance;
use berth_domain::network::Cidr;
use berth_domain::Scope;
use berth_store::keys::{ElbKeys, Keys};
use berth_store::typed;
use berth_wire::elbv2 as w;
use std::net::Ipv4Addr;

/// The targets of a request with their ports (the group's by default).
fn targets(
    tg: &TargetGroup,
    given: &Option<Vec<w::TargetDescription>>,
) -> Result<Vec<(String, i32, Option<String>)>, ApiError> {
    let given = given.clone().unwrap_or_default();
    if given.is_empty() {
        return Err(ElbError::validation("At least one target must be specified").into());
    }
    given
        .into_iter()
        .map(|t| {
            let id =
                t.id.clone()
                    .filter(|i| !i.is_empty())
                    .ok_or_else(|| ElbError::validation("Each target must have an Id"))?;
            let port = t.port.unwrap_or(tg.port);
            elb::validate_port(port, "targets.member.port")?;
            Ok((id, port, t.availability_zone.clone()))
        })
        .collect()
}

/// The zone an ip target is in: its subnet's, or `all` for an address
/// outside every subnet (ALB's rule for targets outside the VPC).
fn ip_zone(st: &AppState, id: &str, given: Option<&str>) -> Result<String, ApiError> {
    let ip: Ipv4Addr = id.parse().map_err(|_| {
        ElbError::new(
            ElbCode::InvalidTarget,
            format!("The IP address '{id}' is not a valid IPv4 address"),
        )
    })?;
    // The network as the EC2 API keeps it: the configuration given at
    // start is only the store's first.
    let network = st.ctl.networks.current();
    let subnet = network
        .subnets
        .iter()
        .find(|s| Cidr::parse(&s.cidr).is_some_and(|c| c.contains(ip)));
    match (subnet, given) {
        (Some(s), None) => Ok(s.availability_zone.clone()),
        (Some(s), Some(z)) if z == s.availability_zone => Ok(z.to_string()),
        (None, Some("all")) => Ok("all".into()),
        (Some(s), Some(z)) => Err(ElbError::new(
            ElbCode::InvalidTarget,
            format!("The IP address '{id}' is in Availability Zone '{}', not '{z}'", s.availability_zone),
        )
        .into()),
        (None, _) => Err(ElbError::new(
            ElbCode::InvalidTarget,
            format!("The IP address '{id}' is not within a subnet of the VPC; register it with AvailabilityZone 'all'"),
        )
        .into()),
    }
}

/// Every registered container instance of the scope, by EC2 instance id.
async fn instances(st: &AppState, scope: &Scope) -> Result<Vec<ContainerInstance>, ApiError> {
    Ok(
        typed::list::<ContainerInstance>(&*st.store, &scope.instances_all())
            .await?
            .into_iter()
            .map(|(_, i)| i.value)
            .collect(),
    )
}

pub async fn register_targets(
    st: &AppState,
    ctx: &RequestContext,
    req: w::RegisterTargetsInput,
) -> Result<w::RegisterTargetsOutput, ApiError> {
    let arn = super::required(&req.target_group_arn, "targetGroupArn")?;
    let scope = &ctx.scope;
    let tg = target_group(st, scope, arn).await?.value;
    let wanted = targets(&tg, &req.targets)?;
    let mut zoned = vec![];
    if tg.target_type == "ip" {
        for (id, port, zone) in wanted {
            let zone = ip_zone(st, &id, zone.as_deref())?;
            zoned.push((id, port, Some(zone)));
        }
    } else {
        let known = instances(st, scope).await?;
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|(id, _, _)| !known.iter().any(|i| &i.ec2_instance_id == id))
            .map(|(id, _, _)| id.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(ElbError::new(
                ElbCode::InvalidTarget,
                format!(
                    "The following targets are not in a running state and cannot be registered: '{}'",
                    missing.join("', '")
                ),
            )
            .into());
        }
        zoned = wanted;
    }
    write_registrations(st, scope, &tg, &zoned, None).await?;
    Ok(w::RegisterTargetsOutput::default())
}

pub async fn deregister_targets(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DeregisterTargetsInput,
) -> Result<w::DeregisterTargetsOutput, ApiError> {
    let arn = super::required(&req.target_group_arn, "targetGroupArn")?;
    let scope = &ctx.scope;
    let tg = target_group(st, scope, arn).await?.value;
    let wanted = targets(&tg, &req.targets)?;
    let keys: Vec<String> = wanted
        .iter()
        .map(|(id, port, _)| Registration::key(id, *port))
        .collect();
    let missing = drain(st, scope, &tg, &keys).await?;
    if !missing.is_empty() {
        return Err(ElbError::new(
            ElbCode::InvalidTarget,
            format!(
                "The following targets are not registered in target group '{arn}': '{}'",
                missing.join("', '")
            ),
        )
        .into());
    }
    Ok(w::DeregisterTargetsOutput::default())
}

pub async fn describe_target_health(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeTargetHealthInput,
) -> Result<w::DescribeTargetHealthOutput, ApiError> {
    let arn = super::required(&req.target_group_arn, "targetGroupArn")?;
    let scope = &ctx.scope;
    let tg = target_group(st, scope, arn).await?.value;
    let (_, listeners) = all_listeners(st, scope).await?;
    let in_use = group_users(scope, &listeners).contains_key(&tg.arn(scope));
    let held = typed::list::<Registration>(&*st.store, &scope.targets_of(&tg.id)).await?;
    let health = typed::list::<HealthRecord>(&*st.store, &scope.target_healths_of(&tg.id)).await?;
    let now = st.now();
    let delay = tg.deregistration_delay();
    let describe = |r: &Registration| {
        let key = scope.target_health(&tg.id, &Registration::key(&r.id, r.port));
        let observed = health
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, h)| &h.value);
        w::TargetHealthDescription {
            target: Some(w::TargetDescription {
                id: Some(r.id.clone()),
                port: Some(r.port),
                availability_zone: r.availability_zone.clone(),
                ..Default::default()
            }),
            health_check_port: Some(tg.check_port(r.port).to_string()),
            target_health: Some(elb::target_health(&tg, r, in_use, observed)),
            ..Default::default()
        }
    };
    // A drained registration the data path has not removed yet is gone.
    let live: Vec<&Registration> = held
        .iter()
        .map(|(_, r)| &r.value)
        .filter(|r| !r.drained(delay, now))
        .collect();
    let out = match &req.targets {
        Some(asked) if !asked.is_empty() => asked
            .iter()
            .map(|t| {
                let id = t.id.clone().unwrap_or_default();
                let port = t.port.unwrap_or(tg.port);
                match live.iter().find(|r| r.id == id && r.port == port) {
                    Some(r) => describe(r),
                    None => w::TargetHealthDescription {
                        target: Some(w::TargetDescription {
                            id: Some(id),
                            port: Some(port),
                            ..Default::default()
                        }),
                        target_health: Some(w::TargetHealth {
                            state: Some("unused".into()),
                            reason: Some("Target.NotRegistered".into()),
                            description: Some(
                                "Target is not registered to the target group".into(),
                            ),
                        }),
                        ..Default::default()
                    },
                }
            })
            .collect(),
        _ => live.into_iter().map(describe).collect(),
    };
    Ok(w::DescribeTargetHealthOutput {
        target_health_descriptions: Some(out),
    })
}
