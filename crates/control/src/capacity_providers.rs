//! ECS's custom capacity providers against the store: each over an Auto
//! Scaling group (at most one provider per group), created, changed and
//! deleted by the ECS API; refused while a service's strategy or a
//! cluster names them.

use crate::{Control, ControlError};
use berth_domain::capacity::{self as rules, ProviderRecord};
use berth_domain::cluster::Cluster;
use berth_domain::service::Service;
use berth_domain::{EcsError, Scope};
use berth_store::keys::capacity as keys;
use berth_store::keys::Keys;
use berth_store::typed;
use berth_store::{Op, Txn};
use berth_wire::ecs as w;

type Result<T> = std::result::Result<T, ControlError>;

pub async fn get(ctl: &Control, scope: &Scope, name: &str) -> Result<Option<ProviderRecord>> {
    Ok(
        typed::get::<ProviderRecord>(&*ctl.store, &keys::provider(scope, name))
            .await?
            .map(|v| v.value),
    )
}

/// Where a provider's tasks may go: the EC2 instance ids of its group's
/// instances in service, and whether tasks wait for capacity (managed
/// scaling) rather than fail.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    pub ec2: std::collections::HashSet<String>,
    pub managed: bool,
}

pub async fn hosts(ctl: &Control, scope: &Scope, name: &str) -> Result<Hosts> {
    let Some(p) = get(ctl, scope, name).await? else {
        return Ok(Hosts::default());
    };
    let ec2 = crate::groups::instances(ctl, scope, &p.group)
        .await
        .map_err(crate::groups::GroupFailure::into_control)?
        .into_iter()
        .filter(|(i, _)| i.value.counted())
        .map(|(i, _)| i.value.id)
        .collect();
    Ok(Hosts {
        ec2,
        managed: p.managed_scaling(),
    })
}

pub async fn list(ctl: &Control, scope: &Scope) -> Result<Vec<ProviderRecord>> {
    Ok(
        typed::list::<ProviderRecord>(&*ctl.store, &keys::providers(scope))
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect(),
    )
}

/// The group a provider's ARN names, if it exists in this scope.
async fn group_of(
    ctl: &Control,
    scope: &Scope,
    arn: &str,
) -> Result<Option<berth_domain::asg::GroupRecord>> {
    let Some(name) = berth_domain::asg::group_name_of_arn(arn) else {
        return Ok(None);
    };
    Ok(typed::get::<berth_domain::asg::GroupRecord>(
        &*ctl.store,
        &berth_store::keys::autoscaling::group(scope, name),
    )
    .await?
    .map(|g| g.value)
    .filter(|g| g.arn == arn && !g.deleting))
}

/// CreateCapacityProvider.
pub async fn create(
    ctl: &Control,
    scope: &Scope,
    req: &w::CreateCapacityProviderRequest,
) -> Result<ProviderRecord> {
    let name = rules::check_provider_name(req.name.as_deref())?.to_string();
    let given = rules::asg_provider(
        req.managed_instances_provider.is_some(),
        req.cluster.is_some(),
        req.auto_scaling_group_provider.as_ref(),
    )?;
    let arn = given
        .auto_scaling_group_arn
        .clone()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            EcsError::invalid("autoScalingGroupProvider.autoScalingGroupArn is required.")
        })?;
    let group = group_of(ctl, scope, &arn).await?.ok_or_else(|| {
        EcsError::invalid(format!(
            "The specified Auto Scaling group ARN {arn} does not exist. Specify a valid Auto Scaling group ARN and try again."
        ))
    })?;
    let mut provider = rules::normalize_asg_provider(
        given.managed_scaling.as_ref(),
        given.managed_termination_protection.as_deref(),
        given.managed_draining.as_deref(),
        None,
        group.protect_new,
    )?;
    provider.auto_scaling_group_arn = Some(arn.clone());
    let tags = req.tags.clone().unwrap_or_default();
    berth_domain::tags::validate(&tags)?;
    if list(ctl, scope)
        .await?
        .iter()
        .any(|p| p.provider.auto_scaling_group_arn.as_deref() == Some(arn.as_str()))
    {
        return Err(EcsError::invalid(
            "The specified Auto Scaling group is already associated with a capacity provider. Specify a different Auto Scaling group and try again.",
        )
        .into());
    }
    let record = ProviderRecord {
        name: name.clone(),
        group: group.name.clone(),
        provider,
        tags,
        update_status: None,
        created: ctl.now(),
    };
    let key = keys::provider(scope, &name);
    let txn = Txn::when(
        vec![typed::unchanged(&key, 0)],
        vec![typed::put(&key, &record), draining_hook(scope, &record)],
    );
    if !ctl.store.txn(txn).await?.succeeded {
        return Err(EcsError::invalid(format!(
            "The specified capacity provider name {name} already exists. Specify a unique name and try again."
        ))
        .into());
    }
    Ok(record)
}

/// UpdateCapacityProvider.
pub async fn update(
    ctl: &Control,
    scope: &Scope,
    name: &str,
    given: &w::AutoScalingGroupProviderUpdate,
) -> Result<ProviderRecord> {
    let key = keys::provider(scope, name);
    for _ in 0..16 {
        let Some(read) = typed::get::<ProviderRecord>(&*ctl.store, &key).await? else {
            return Err(not_found(name));
        };
        let arn = read
            .value
            .provider
            .auto_scaling_group_arn
            .clone()
            .unwrap_or_default();
        let protected = group_of(ctl, scope, &arn)
            .await?
            .is_some_and(|g| g.protect_new);
        let mut next = read.value.clone();
        next.provider = rules::normalize_asg_provider(
            given.managed_scaling.as_ref(),
            given.managed_termination_protection.as_deref(),
            given.managed_draining.as_deref(),
            Some(&read.value.provider),
            protected,
        )?;
        next.update_status = Some("UPDATE_COMPLETE".into());
        let txn = Txn::when(
            vec![typed::unchanged(&key, read.mod_revision)],
            vec![typed::put(&key, &next), draining_hook(scope, &next)],
        );
        if ctl.store.txn(txn).await?.succeeded {
            return Ok(next);
        }
    }
    Err(EcsError::UpdateInProgress(
        "The capacity provider is being changed by another request; try again.".into(),
    )
    .into())
}

fn not_found(name: &str) -> ControlError {
    EcsError::invalid(format!(
        "The specified capacity provider does not exist. Specify a valid name or ARN and try again. ({name})"
    ))
    .into()
}

/// DeleteCapacityProvider: refused while a cluster or a service's
/// strategy names it.
pub async fn delete(ctl: &Control, scope: &Scope, name: &str) -> Result<ProviderRecord> {
    let key = keys::provider(scope, name);
    let Some(read) = typed::get::<ProviderRecord>(&*ctl.store, &key).await? else {
        return Err(not_found(name));
    };
    let in_use = || {
        ControlError::from(EcsError::invalid(
            "The specified capacity provider is in use and cannot be removed.",
        ))
    };
    for (_, c) in typed::list::<Cluster>(&*ctl.store, &scope.clusters()).await? {
        if c.value.capacity_providers.iter().any(|p| p == name) {
            return Err(in_use());
        }
        for (_, s) in typed::list::<Service>(&*ctl.store, &scope.services_of(&c.value.name)).await?
        {
            if s.value
                .capacity_provider_strategy
                .iter()
                .any(|i| i.capacity_provider.as_deref() == Some(name))
            {
                return Err(in_use());
            }
        }
    }
    let txn = Txn::when(
        vec![typed::unchanged(&key, read.mod_revision)],
        vec![
            Op::delete(key.clone()),
            Op::delete(berth_store::keys::autoscaling::hook(
                scope,
                &read.value.group,
                MANAGED_DRAINING_HOOK,
            )),
        ],
    );
    if !ctl.store.txn(txn).await?.succeeded {
        return Err(in_use());
    }
    Ok(read.value)
}

/// The termination lifecycle hook ECS puts on a provider's group for
/// managed draining: a terminating instance waits in Terminating:Wait
/// while its tasks drain, and the managed-scaling controller completes it.
pub const MANAGED_DRAINING_HOOK: &str = "ecs-managed-draining-termination-hook";

/// The op that puts the group's managed draining hook, or removes it when
/// the provider has managed draining off.
fn draining_hook(scope: &Scope, p: &ProviderRecord) -> Op {
    let key = berth_store::keys::autoscaling::hook(scope, &p.group, MANAGED_DRAINING_HOOK);
    if !p.managed_draining() {
        return Op::delete(key);
    }
    typed::put(
        &key,
        &crate::groups::Hook {
            name: MANAGED_DRAINING_HOOK.into(),
            group: p.group.clone(),
            transition: "autoscaling:EC2_INSTANCE_TERMINATING".into(),
            heartbeat_timeout: 3600,
            default_result: "CONTINUE".into(),
            metadata: None,
        },
    )
}
