//! ECS managed scaling of Auto Scaling group capacity providers: per
//! cluster, tasks waiting in PROVISIONING are placed as their providers'
//! instances join; each provider's CapacityProviderReservation (M needed
//! instances over N running, as ECS defines it) is published and drives
//! its group's desired capacity; and with managed termination protection
//! only instances without non-daemon tasks may be scaled in.
//!
//! ECS does this through a target-tracking policy on the group and two
//! alarms; Berth computes the same target directly (the metric is still
//! published, so it can be graphed and alarmed on).

use crate::{Control, ControlError};
use berth_domain::asg::{state, GroupRecord};
use berth_domain::capacity::{self, ProviderRecord};
use berth_domain::cluster::Cluster;
use berth_domain::deployment::Scheduling;
use berth_domain::instance::ContainerInstance;
use berth_domain::service::Service;
use berth_domain::task::{Task, TaskStatus};
use berth_domain::Scope;
use berth_store::keys::autoscaling as akeys;
use berth_store::keys::Keys;
use berth_store::{typed, Txn};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// What managed scaling remembers between rounds: since when each
/// provider has had spare instances (scale-in waits for it to last).
#[derive(Default)]
pub struct Spare(Mutex<HashMap<(Scope, String), f64>>);

/// How managed scaling is timed.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often each provider's reservation is computed and published.
    pub every: Duration,
    /// How long it stays under the target before spare instances go
    /// (ECS: its low alarm's 15 one-minute datapoints).
    pub scale_in_after: Duration,
}

/// One cluster's round. When to look again (None: nothing is managed).
pub async fn reconcile(
    st: &Control,
    scope: &Scope,
    cluster: &str,
    spare: &Spare,
    timing: Timing,
) -> Result<Option<Duration>, ControlError> {
    let every = timing.every;
    let waiting = crate::placement::place_waiting(st, scope, cluster).await?;
    let Some(record) = typed::get::<Cluster>(&*st.store, &scope.cluster(cluster)).await? else {
        return Ok(None);
    };
    let mut managed = vec![];
    for name in &record.value.capacity_providers {
        if capacity::BUILT_IN.contains(&name.as_str()) {
            continue;
        }
        if let Some(p) = crate::capacity_providers::get(st, scope, name).await? {
            if p.managed_scaling() || p.managed_draining() {
                managed.push(p);
            }
        }
    }
    if managed.is_empty() {
        return Ok((!waiting.is_empty()).then_some(every));
    }
    let busy = busy_instances(st, scope, cluster).await?;
    let registered = by_ec2(st, scope, cluster).await?;
    let now = st.now();
    let mut data = vec![];
    let mut next = every;
    for p in &managed {
        let of_provider: Vec<&Task> = waiting
            .iter()
            .filter(|(_, name)| *name == p.name)
            .map(|(t, _)| t)
            .collect();
        let value = provider_round(
            st,
            scope,
            cluster,
            p,
            &of_provider,
            &busy,
            &registered,
            spare,
            timing.scale_in_after,
        )
        .await?;
        if let Some((v, due)) = value {
            if let Some(d) = due {
                next = next.min(d);
            }
            data.push(crate::cloudwatch::stored(
                berth_domain::usage_metrics::MANAGED_SCALING,
                berth_domain::usage_metrics::provider_reservation(cluster, &p.name, v, now as i64),
            ));
        }
    }
    crate::cloudwatch::publish(st, scope, data).await;
    Ok(Some(next.max(Duration::from_millis(200))))
}

/// The cluster's instances running tasks other than daemon services'
/// (the ones scale-in must spare), by container instance id.
async fn busy_instances(
    st: &Control,
    scope: &Scope,
    cluster: &str,
) -> Result<HashSet<String>, ControlError> {
    let daemons: HashSet<String> = typed::list::<Service>(&*st.store, &scope.services_of(cluster))
        .await?
        .into_iter()
        .filter(|(_, s)| s.value.scheduling == Scheduling::Daemon)
        .map(|(_, s)| s.value.name)
        .collect();
    let tasks = crate::placement::ClusterTasks::load(st, scope, cluster).await?;
    Ok(tasks
        .tasks
        .iter()
        .filter(|t| t.value.placed())
        .filter(|t| Task::last_status(tasks.report(&t.value.id)) != TaskStatus::Stopped)
        .filter(|t| {
            t.value
                .service
                .as_ref()
                .is_none_or(|s| !daemons.contains(s))
        })
        .map(|t| t.value.container_instance.clone())
        .collect())
}

/// One provider: its reservation metric, its group's new desired
/// capacity, and its instances' protection. The metric's value and when
/// a pending scale-in is due, or None when its group is gone.
#[allow(clippy::too_many_arguments)]
async fn provider_round(
    st: &Control,
    scope: &Scope,
    cluster: &str,
    p: &ProviderRecord,
    waiting: &[&Task],
    busy: &HashSet<String>,
    registered: &HashMap<String, ContainerInstance>,
    spare: &Spare,
    scale_in_after: Duration,
) -> Result<Option<(f64, Option<Duration>)>, ControlError> {
    let Some(group) = typed::get::<GroupRecord>(&*st.store, &akeys::group(scope, &p.group)).await?
    else {
        return Ok(None);
    };
    let g = group.value;
    let list = crate::groups::instances(st, scope, &p.group)
        .await
        .map_err(crate::groups::GroupFailure::into_control)?;
    if p.managed_draining() {
        drain(st, scope, cluster, p, &list, busy, registered).await?;
    }
    if !p.managed_scaling() {
        return Ok(None);
    }
    let counted: Vec<_> = list.iter().filter(|(i, _)| i.value.counted()).collect();
    let scaling = p.provider.managed_scaling.clone().unwrap_or_default();
    let warmup = f64::from(scaling.instance_warmup_period.unwrap_or(300));
    let now = st.now();
    // Instances still booting or warming up are not counted (ECS), and
    // while any is, the group is not grown again: they will take what
    // waits.
    let warming = counted.iter().any(|(i, _)| {
        i.value.lifecycle == state::PENDING
            || i.value.in_service_at.is_some_and(|at| now - at < warmup)
    });
    let running = counted
        .iter()
        .filter(|(i, _)| i.value.lifecycle == state::IN_SERVICE)
        .count();
    let in_use: Vec<&ContainerInstance> = counted
        .iter()
        .filter_map(|(i, _)| registered.get(&i.value.id))
        .filter(|ci| busy.contains(&ci.id))
        .collect();
    // ECS's lower bound of instances to add for what waits: the waiting
    // tasks packed onto instances like the group's largest (one each
    // while none has registered to show its size).
    let largest = counted
        .iter()
        .filter_map(|(i, _)| registered.get(&i.value.id))
        .map(|ci| (i64::from(ci.cpu()), i64::from(ci.memory())))
        .max();
    let asks: Vec<(i64, i64)> = waiting
        .iter()
        .map(|t| (t.reservation.cpu, t.reservation.memory))
        .collect();
    let needed = in_use.len() + packed(asks, largest);
    let value = capacity::reservation(needed, running);
    let target = scaling.target_capacity.unwrap_or(100);
    let desired = capacity::managed_desired(
        needed,
        counted.len(),
        target,
        scaling.minimum_scaling_step_size.unwrap_or(1),
        scaling.maximum_scaling_step_size.unwrap_or(10000),
        g.min,
        g.max,
    );
    let key = (scope.clone(), format!("{cluster}/{}", p.name));
    let mut change = None;
    let mut due = None;
    if desired > g.desired && !warming {
        spare.0.lock().remove(&key);
        change = Some(desired);
    } else if desired < g.desired {
        // Spare instances go once the reservation has stayed under the
        // target long enough.
        let since = *spare.0.lock().entry(key.clone()).or_insert(now);
        let left = scale_in_after.as_secs_f64() - (now - since);
        if left <= 0.0 {
            spare.0.lock().remove(&key);
            change = Some(desired);
        } else {
            due = Some(Duration::from_secs_f64(left));
        }
    } else {
        spare.0.lock().remove(&key);
    }
    if let Some(d) = change {
        let why = format!(
            "the capacity provider {} of cluster {cluster} (managed scaling) found a CapacityProviderReservation of {value:.0} against its target of {target} and changed the desired capacity from {} to {d}",
            p.name, g.desired
        );
        set_group_desired(st, scope, &p.group, d, why).await?;
    }
    if p.managed_termination_protection() {
        // ECS protects the instances running tasks and unprotects the
        // empty ones, so that scale-in takes only empty ones.
        protect_busy(st, scope, &p.group, &counted, |ec2| {
            registered.get(ec2).is_some_and(|ci| busy.contains(&ci.id))
        })
        .await?;
    }
    Ok(Some((value, due)))
}

/// The Fargate pool's own scaling, keyed like a cluster: FARGATE tasks
/// that waited for the pool placed as hosts join; more hosts launched
/// through the server's launcher (its hidden group) while tasks still
/// wait; busy launched hosts protected, and idle ones retired after the
/// configured idle time. When to look again (None: nothing to watch).
pub async fn pool(
    st: &Control,
    scope: &Scope,
    spare: &Spare,
    every: Duration,
) -> Result<Option<Duration>, ControlError> {
    use crate::groups::POOL_GROUP;
    use berth_domain::instance::FARGATE_POOL;
    let cfg = st.config.fargate_pool;
    if !cfg.on() {
        return Ok(None);
    }
    let still = crate::placement::place_waiting_in_pool(st, scope).await?;
    let gkey = akeys::group(scope, POOL_GROUP);
    let g = match typed::get::<GroupRecord>(&*st.store, &gkey).await? {
        Some(g) => g.value,
        None if still.is_empty() => return Ok(None),
        None => {
            let g = pool_group(st, scope);
            let made = st
                .store
                .txn(Txn::when(
                    vec![typed::unchanged(&gkey, 0)],
                    vec![typed::put(&gkey, &g)],
                ))
                .await?;
            if !made.succeeded {
                return Ok(Some(Duration::from_millis(200)));
            }
            g
        }
    };
    let list = crate::groups::instances(st, scope, POOL_GROUP)
        .await
        .map_err(crate::groups::GroupFailure::into_control)?;
    let counted: Vec<_> = list.iter().filter(|(i, _)| i.value.counted()).collect();
    let hosts = by_ec2(st, scope, FARGATE_POOL).await?;
    let occupancy = crate::placement::Occupancy::load_pool(st, scope).await?;
    let busy = |ec2: &str| {
        hosts
            .get(ec2)
            .and_then(|ci| occupancy.usage(&ci.id))
            .is_some_and(|u| u.running + u.pending > 0)
    };
    let busy_launched = counted.iter().filter(|(i, _)| busy(&i.value.id)).count();
    let warming = counted
        .iter()
        .any(|(i, _)| i.value.lifecycle == state::PENDING);
    let largest = hosts
        .values()
        .map(|ci| (i64::from(ci.cpu()), i64::from(ci.memory())))
        .max();
    let asks: Vec<(i64, i64)> = still
        .iter()
        .map(|(t, _)| (t.reservation.cpu, t.reservation.memory))
        .collect();
    let bins = packed(asks, largest);
    // New hosts go where the waiting tasks' subnets are.
    let network = st.networks.current();
    let mut zones: Vec<String> = still
        .iter()
        .flat_map(|(_, w)| w.subnets.iter())
        .filter_map(|id| network.subnet(id))
        .map(|s| s.availability_zone.clone())
        .collect();
    zones.sort();
    zones.dedup();
    if !zones.is_empty() && zones != g.zones {
        crate::groups::change_group(st, scope, POOL_GROUP, |g| {
            g.zones = zones.clone();
            Ok(())
        })
        .await
        .map_err(crate::groups::GroupFailure::into_control)?;
        return Ok(Some(Duration::from_millis(100)));
    }
    // Launched hosts with nothing on them in those zones take what waits
    // as soon as their agents connect: only the rest needs new hosts.
    let idle_there = counted
        .iter()
        .filter(|(i, _)| !busy(&i.value.id) && g.zones.contains(&i.value.zone))
        .count();
    let extra = bins.saturating_sub(idle_there);
    let now = st.now();
    let key = (scope.clone(), format!("{FARGATE_POOL}/pool"));
    let mut change = None;
    let mut next = every;
    if bins > 0 {
        spare.0.lock().remove(&key);
        let want = (counted.len() + extra).min(cfg.max) as i32;
        if extra > 0 && want > g.desired && !warming {
            change = Some((
                want,
                format!("{} FARGATE tasks waited for capacity", still.len()),
            ));
        }
        next = next.min(Duration::from_secs(1));
    } else if (busy_launched as i32) < g.desired {
        let since = *spare.0.lock().entry(key.clone()).or_insert(now);
        let left = cfg.idle.as_secs_f64() - (now - since);
        if left <= 0.0 {
            spare.0.lock().remove(&key);
            change = Some((busy_launched as i32, "launched hosts were idle".to_string()));
        } else {
            next = next.min(Duration::from_secs_f64(left));
        }
    } else {
        spare.0.lock().remove(&key);
    }
    if let Some((d, why)) = change {
        let why = format!("the Fargate pool grew or shrank: {why}");
        set_group_desired(st, scope, POOL_GROUP, d, why).await?;
    }
    // Busy launched hosts are protected, so that a shrink takes idle ones.
    protect_busy(st, scope, POOL_GROUP, &counted, busy).await?;
    Ok(Some(next.max(Duration::from_millis(200))))
}

/// A cluster's (or the pool's) container instances by EC2 instance id.
async fn by_ec2(
    st: &Control,
    scope: &Scope,
    cluster: &str,
) -> Result<HashMap<String, ContainerInstance>, ControlError> {
    Ok(
        typed::list::<ContainerInstance>(&*st.store, &scope.instances_of(cluster))
            .await?
            .into_iter()
            .map(|(_, v)| (v.value.ec2_instance_id.clone(), v.value))
            .collect(),
    )
}

/// Sets a group's desired capacity, saying why in its next activity.
async fn set_group_desired(
    st: &Control,
    scope: &Scope,
    group: &str,
    desired: i32,
    why: String,
) -> Result<(), ControlError> {
    crate::groups::change_group(st, scope, group, |g| {
        crate::groups::set_desired(g, desired, why.clone());
        Ok(())
    })
    .await
    .map_err(crate::groups::GroupFailure::into_control)?;
    Ok(())
}

/// Protects a group's in-service instances that are busy (by EC2
/// instance id) from scale-in and unprotects the others, writing only
/// what changes.
async fn protect_busy(
    st: &Control,
    scope: &Scope,
    group: &str,
    counted: &[&(typed::Versioned<berth_domain::asg::InstanceRecord>, bool)],
    busy: impl Fn(&str) -> bool,
) -> Result<(), ControlError> {
    let ops: Vec<_> = counted
        .iter()
        .filter(|(i, protected)| {
            i.value.lifecycle == state::IN_SERVICE && busy(&i.value.id) != *protected
        })
        .map(|(i, protected)| {
            typed::put(&akeys::protection(scope, group, &i.value.id), &!protected)
        })
        .collect();
    if !ops.is_empty() {
        st.store.txn(Txn::when(vec![], ops)).await?;
    }
    Ok(())
}

/// The pool's hidden group: as many hosts as the operator allows, over
/// the zones of the configured subnets, new ones protected until they
/// have run a task and gone idle.
fn pool_group(st: &Control, scope: &Scope) -> GroupRecord {
    let mut zones: Vec<String> = st
        .config
        .network
        .subnets
        .iter()
        .map(|s| s.availability_zone.clone())
        .collect();
    zones.sort();
    zones.dedup();
    GroupRecord {
        name: crate::groups::POOL_GROUP.into(),
        arn: berth_domain::asg::group_arn(
            &scope.region,
            &scope.account,
            &uuid::Uuid::new_v4().to_string(),
            crate::groups::POOL_GROUP,
        ),
        min: 0,
        max: st.config.fargate_pool.max as i32,
        desired: 0,
        desired_cause: String::new(),
        template: Default::default(),
        zones,
        vpc_zone_identifier: None,
        protect_new: true,
        tags: vec![],
        default_cooldown: 0,
        health_check_type: "EC2".into(),
        health_check_grace: 0,
        termination_policies: vec!["Default".into()],
        default_instance_warmup: None,
        suspended: vec![],
        created: st.now(),
        deleting: false,
        service_linked_role_arn: None,
        max_instance_lifetime: None,
        capacity_rebalance: false,
    }
}

/// Managed draining: a provider's instance held by its termination hook
/// is set DRAINING (its services move their tasks elsewhere), and let go
/// once it runs nothing but daemon tasks.
async fn drain(
    st: &Control,
    scope: &Scope,
    cluster: &str,
    p: &ProviderRecord,
    list: &[(typed::Versioned<berth_domain::asg::InstanceRecord>, bool)],
    busy: &HashSet<String>,
    registered: &HashMap<String, ContainerInstance>,
) -> Result<(), ControlError> {
    use berth_domain::instance::InstanceStatus;
    for (i, _) in list {
        if i.value.lifecycle != state::TERMINATING_WAIT {
            continue;
        }
        let Some(ci) = registered.get(&i.value.id) else {
            continue;
        };
        if busy.contains(&ci.id) {
            if ci.status == InstanceStatus::Active {
                let key = scope.instance(cluster, &ci.id);
                if let Some(read) = typed::get::<ContainerInstance>(&*st.store, &key).await? {
                    let mut next = read.value.clone();
                    next.status = InstanceStatus::Draining;
                    next.version += 1;
                    st.store
                        .txn(Txn::when(
                            vec![typed::unchanged(&key, read.mod_revision)],
                            vec![typed::put(&key, &next)],
                        ))
                        .await?;
                }
            }
            continue;
        }
        crate::groups::lifecycle_action(
            st,
            scope,
            &p.group,
            crate::capacity_providers::MANAGED_DRAINING_HOOK,
            &i.value.id,
            Some("CONTINUE".into()),
        )
        .await
        .or_else(|e| match e {
            // The user removed the hook meanwhile: the instance is not held.
            crate::groups::GroupFailure::Control(c) => Err(c),
            _ => Ok(()),
        })?;
    }
    Ok(())
}

/// How many instances of `size` (cpu, memory) the waiting tasks' asks
/// fill, first fit by decreasing size; one when no size is known yet.
fn packed(mut asks: Vec<(i64, i64)>, size: Option<(i64, i64)>) -> usize {
    let Some((cpu, memory)) = size else {
        return asks.len().min(1);
    };
    asks.sort_by(|a, b| b.cmp(a));
    let mut bins: Vec<(i64, i64)> = vec![];
    for (c, m) in asks {
        match bins.iter_mut().find(|(bc, bm)| *bc >= c && *bm >= m) {
            Some(b) => {
                b.0 -= c;
                b.1 -= m;
            }
            None => bins.push((cpu - c, memory - m)),
        }
    }
    bins.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_tasks_pack_onto_instances_of_the_largest_size() {
        let asks = vec![(512, 256), (512, 256), (1024, 256), (256, 900)];
        assert_eq!(packed(asks.clone(), Some((1024, 1024))), 3);
        assert_eq!(packed(asks.clone(), Some((4096, 4096))), 1);
        // Nothing has registered yet: one instance, then its size is known.
        assert_eq!(packed(asks, None), 1);
        assert_eq!(packed(vec![], None), 0);
    }
}
