//! Services behind load balancers: the checks CreateService and
//! UpdateService make of `loadBalancers`, and what the service controller
//! does with them: register each running task's target, count a task
//! healthy once its targets are, and drain a task's targets before it is
//! stopped, so that no request is sent to a stopping container.

use crate::elb::{self, all_listeners, group_users, target_group};
use crate::{Control, ControlError};
use berth_domain::elb::{HealthRecord, Registration, TargetGroup};
use berth_domain::instance::ContainerInstance;
use berth_domain::service::{LbHealth, Member, Service};
use berth_domain::task::ObservedTask;
use berth_domain::task::{Deactivation, StopCode, StopRequest, Task, TaskStatus};
use berth_domain::{EcsError, Scope};
use berth_store::keys::{ElbKeys, Keys};
use berth_store::typed::{self, Versioned};
use berth_store::Txn;
use berth_wire::ecs as w;
use std::collections::HashMap;

/// ECS's limit of target groups per service.
const MAX_LOAD_BALANCERS: usize = 5;

/// The session name ECS's service scheduler acts under.
pub const SCHEDULER_SESSION: &str = "ecs-service-scheduler";

/// Why the service role `role_arn` may not register and deregister
/// targets of `group` (its policies as a session of the role decide, as
/// they decide ECS's calls in AWS), or None when it may. A service
/// without a role (made before services had one) acts as the cluster
/// manager.
async fn role_denies(
    st: &Control,
    scope: &Scope,
    role_arn: Option<&str>,
    group: &str,
) -> Result<Option<String>, ControlError> {
    let Some(role_arn) = role_arn else {
        return Ok(None);
    };
    let name = role_arn.rsplit('/').next().unwrap_or(role_arn);
    let role = match crate::iam::role(st, name).await {
        Ok(r) => r.value,
        Err(crate::iam::IamFailure::Iam(_)) => {
            return Ok(Some(format!("The role {role_arn} does not exist.")))
        }
        Err(crate::iam::IamFailure::Control(e)) => return Err(e),
    };
    let principal = berth_iam::Principal::AssumedRole {
        account: scope.account.clone(),
        role: role.name.clone(),
        role_id: role.id.clone(),
        session: SCHEDULER_SESSION.into(),
    };
    let policies = st.identity.policies(&principal).await?;
    let refs: Vec<&berth_iam::policy::Policy> = policies.iter().collect();
    let mut context =
        berth_iam::policy::Context::over(std::sync::Arc::new(principal.context(&role.tags)));
    context.set_known("aws:requestedregion", scope.region.clone());
    for action in [
        "elasticloadbalancing:RegisterTargets",
        "elasticloadbalancing:DeregisterTargets",
    ] {
        let decision = berth_iam::policy::evaluate(
            &refs,
            &[],
            &berth_iam::policy::Request {
                action,
                resource: group,
                caller: None,
                context: &context,
            },
        );
        if decision != berth_iam::policy::Decision::Allow {
            return Ok(Some(format!(
                "AccessDenied: User: {} is not authorized to perform: {action} on resource: {group}",
                principal.arn()
            )));
        }
    }
    Ok(None)
}

/// The role a service with load balancers acts with: the one CreateService
/// names (by name or ARN), which must exist and let ecs.amazonaws.com
/// assume it, or else ECS's service-linked role, made if the account has
/// none yet (as ECS makes it).
pub async fn service_role(
    st: &Control,
    scope: &Scope,
    given: Option<&str>,
    uses_load_balancers: bool,
) -> Result<Option<String>, ControlError> {
    let given = given.filter(|g| !g.is_empty());
    if !uses_load_balancers {
        if given.is_some() {
            return Err(EcsError::invalid(
                "role can only be given to a service with loadBalancers.",
            )
            .into());
        }
        return Ok(None);
    }
    let unusable = || {
        EcsError::invalid(
            "Unable to assume role and validate the specified targetGroupArn. Please verify that the ECS service role being passed has the proper permissions.",
        )
    };
    let Some(given) = given else {
        let slr = berth_iam::managed::SERVICE_LINKED_ROLES
            .iter()
            .find(|s| s.service == "ecs.amazonaws.com")
            .ok_or_else(|| ControlError::Internal("no ECS service-linked role".into()))?;
        let role = match crate::iam::role(st, slr.role).await {
            Ok(r) => r.value,
            Err(crate::iam::IamFailure::Control(e)) => return Err(e),
            Err(crate::iam::IamFailure::Iam(_)) => {
                match crate::iam::create_service_linked_role(st, slr.service, None, None).await {
                    Ok(r) => r,
                    // Another request made it first.
                    Err(crate::iam::IamFailure::Iam(_)) => {
                        crate::iam::role(st, slr.role)
                            .await
                            .map_err(|_| unusable())?
                            .value
                    }
                    Err(crate::iam::IamFailure::Control(e)) => return Err(e),
                }
            }
        };
        return Ok(Some(role.arn(&scope.account)));
    };
    let name = given.rsplit('/').next().unwrap_or(given);
    let role = crate::iam::role(st, name)
        .await
        .map_err(|_| unusable())?
        .value;
    if given.starts_with("arn:") && role.arn(&scope.account) != given {
        return Err(unusable().into());
    }
    let trust = berth_iam::policy::Policy::parse(&role.trust, berth_iam::policy::PolicyKind::Trust)
        .map_err(|_| unusable())?;
    let ctx = berth_iam::policy::Context::default();
    let arn = role.arn(&scope.account);
    let trusted = berth_iam::policy::evaluate(
        &[&trust],
        &[],
        &berth_iam::policy::Request {
            action: "sts:AssumeRole",
            resource: &arn,
            caller: Some(berth_iam::policy::Caller::Service("ecs.amazonaws.com")),
            context: &ctx,
        },
    );
    if trusted != berth_iam::policy::Decision::Allow {
        return Err(unusable().into());
    }
    Ok(Some(arn))
}

/// Checks a service's `loadBalancers` against its task definition.
pub async fn validate(
    st: &Control,
    scope: &Scope,
    def: &w::TaskDefinition,
    lbs: &[w::LoadBalancer],
) -> Result<(), ControlError> {
    if lbs.len() > MAX_LOAD_BALANCERS {
        return Err(EcsError::invalid(format!(
            "A service can have at most {MAX_LOAD_BALANCERS} load balancers (target groups)."
        ))
        .into());
    }
    let (_, listeners) = all_listeners(st, scope).await?;
    let used = group_users(scope, &listeners);
    let awsvpc = def.network_mode.as_deref() == Some("awsvpc");
    let mode = def.network_mode.as_deref().unwrap_or("bridge");
    let mut seen = vec![];
    for lb in lbs {
        let Some(arn) = lb.target_group_arn.as_deref().filter(|a| !a.is_empty()) else {
            return Err(if lb.load_balancer_name.is_some() {
                EcsError::UnsupportedFeature(
                    "loadBalancerName: Classic Load Balancers are not supported; give the targetGroupArn of an application load balancer's target group.".into(),
                )
            } else {
                EcsError::invalid("targetGroupArn is required for each load balancer.")
            }
            .into());
        };
        let tg = target_group(st, scope, arn).await.map_err(|_| {
            EcsError::invalid(format!(
                "The target group with targetGroupArn {arn} does not exist."
            ))
        })?;
        if !used.contains_key(arn) {
            return Err(EcsError::invalid(format!(
                "The target group with targetGroupArn {arn} does not have an associated load balancer."
            ))
            .into());
        }
        let expected = if awsvpc { "ip" } else { "instance" };
        if tg.value.target_type != expected {
            return Err(EcsError::invalid(format!(
                "The provided target group {arn} has target type {}, which is incompatible with the {mode} network mode specified in the task definition.",
                tg.value.target_type
            ))
            .into());
        }
        let name = lb.container_name.as_deref().unwrap_or_default();
        let port = lb.container_port.unwrap_or_default();
        let container = def
            .container_definitions
            .iter()
            .flatten()
            .find(|c| c.name.as_deref() == Some(name))
            .ok_or_else(|| {
                EcsError::invalid(format!(
                    "The container {name} does not exist in the task definition."
                ))
            })?;
        let mapped = container
            .port_mappings
            .iter()
            .flatten()
            .any(|m| m.container_port == Some(port));
        if !mapped {
            return Err(EcsError::invalid(format!(
                "The container {name} did not have a container port {port} defined."
            ))
            .into());
        }
        let entry = (arn, name, port);
        if seen.contains(&entry) {
            return Err(EcsError::invalid(format!(
                "The load balancer {arn} with container {name} and port {port} is given twice."
            ))
            .into());
        }
        seen.push(entry);
    }
    Ok(())
}

/// A target group's records under `prefix`, by `{id}:{port}`.
async fn by_target<T: serde::de::DeserializeOwned>(
    st: &Control,
    prefix: &str,
) -> Result<HashMap<String, Versioned<T>>, ControlError> {
    Ok(typed::list::<T>(&*st.store, prefix)
        .await?
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v)))
        .collect())
}

/// One of a service's target groups, as read for a reconcile.
struct Group {
    arn: String,
    container: String,
    port: i32,
    tg: TargetGroup,
    /// By `{id}:{port}`.
    regs: HashMap<String, Versioned<Registration>>,
    health: HashMap<String, HealthRecord>,
    /// Why the service's role may not change the group's targets, if it may not.
    denied: Option<String>,
}

/// A service's target groups and their targets.
pub struct ServiceTargets {
    groups: Vec<Group>,
    scope: Scope,
    cluster: String,
}

impl ServiceTargets {
    /// None for a service without load balancers. A target group deleted
    /// behind the service's back is left out.
    pub async fn load(
        st: &Control,
        scope: &Scope,
        svc: &Service,
    ) -> Result<Option<ServiceTargets>, ControlError> {
        if svc.load_balancers.is_empty() {
            return Ok(None);
        }
        let mut groups = vec![];
        for lb in &svc.load_balancers {
            let arn = lb.target_group_arn.clone().unwrap_or_default();
            let tg = match target_group(st, scope, &arn).await {
                Ok(tg) => tg.value,
                Err(ControlError::Elb(_)) => {
                    tracing::warn!(service = %svc.name, target_group = %arn, "a service's target group is gone");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let regs = by_target::<Registration>(st, &scope.targets_of(&tg.id)).await?;
            let health = by_target::<HealthRecord>(st, &scope.target_healths_of(&tg.id))
                .await?
                .into_iter()
                .map(|(k, v)| (k, v.value))
                .collect();
            let denied = role_denies(st, scope, svc.role_arn.as_deref(), &arn).await?;
            groups.push(Group {
                arn,
                container: lb.container_name.clone().unwrap_or_default(),
                port: lb.container_port.unwrap_or_default(),
                tg,
                regs,
                health,
                denied,
            });
        }
        Ok(Some(ServiceTargets {
            groups,
            scope: scope.clone(),
            cluster: svc.cluster.clone(),
        }))
    }

    /// Where a running task is reached in each group: its own address in
    /// awsvpc, else its host's instance id and the published port.
    fn targets(
        &self,
        task: &Task,
        report: Option<&ObservedTask>,
        instances: &[ContainerInstance],
    ) -> Option<Vec<(usize, String, i32)>> {
        if Task::last_status(report) != TaskStatus::Running {
            return None;
        }
        let mut out = vec![];
        for (i, g) in self.groups.iter().enumerate() {
            let (id, port) = match &task.network {
                Some(n) => (n.ip.clone(), g.port),
                None => {
                    let host = instances
                        .iter()
                        .find(|ci| ci.id == task.container_instance)?;
                    let bound = report?
                        .containers
                        .iter()
                        .filter(|c| c.name == g.container)
                        .flat_map(|c| c.network_bindings.iter())
                        // The IPv4 binding: the engine's IPv6 one can be
                        // on another port.
                        .find(|b| {
                            b.container_port == Some(g.port)
                                && !b.bind_ip.as_deref().unwrap_or_default().contains(':')
                        })?;
                    (host.ec2_instance_id.clone(), bound.host_port?)
                }
            };
            out.push((i, id, port));
        }
        Some(out)
    }

    /// The task's registrations that are not draining: (group, key segment).
    fn live_of(&self, task: &Task) -> Vec<(usize, String)> {
        let arn = self.scope.task_arn(&self.cluster, &task.id);
        self.groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| {
                g.regs
                    .iter()
                    .filter(|(_, r)| {
                        r.value.task.as_deref() == Some(arn.as_str()) && !r.value.draining()
                    })
                    .map(move |(k, _)| (i, k.clone()))
            })
            .collect()
    }

    /// How a task's targets stand.
    pub fn health(
        &self,
        task: &Task,
        report: Option<&ObservedTask>,
        instances: &[ContainerInstance],
    ) -> LbHealth {
        let Some(targets) = self.targets(task, report, instances) else {
            return LbHealth::Pending;
        };
        let mut all = true;
        for (i, id, port) in targets {
            let g = &self.groups[i];
            let key = Registration::key(&id, port);
            if g.regs.get(&key).is_none_or(|r| r.value.draining()) {
                all = false;
                continue;
            }
            // Without health checks a registered target takes traffic at once.
            if !g.tg.health.enabled {
                continue;
            }
            match g.health.get(&key).map(|h| h.state.as_str()) {
                Some("healthy") => {}
                Some("unhealthy") => {
                    return LbHealth::Unhealthy {
                        target_group: g.arn.clone(),
                    }
                }
                _ => all = false,
            }
        }
        if all {
            LbHealth::Healthy
        } else {
            LbHealth::Pending
        }
    }

    /// Registers the targets of running tasks that are not registered yet
    /// and drains those of tasks that stopped or are being stopped, in the
    /// groups the service's role may change. Returns ECS's events for what
    /// it did, and why it could not, when its role may not.
    pub async fn sync(
        &self,
        st: &Control,
        members: &[Member<'_>],
        instances: &[ContainerInstance],
    ) -> Result<(Vec<String>, Option<String>), ControlError> {
        let mut said = vec![];
        let refused = self.groups.iter().find_map(|g| {
            g.denied.as_ref().map(|why| {
                format!(
                    "failed to register targets in (target-group {}) with (error {why})",
                    g.arn
                )
            })
        });
        let mut registered = vec![0usize; self.groups.len()];
        let mut drain: Vec<Vec<String>> = vec![vec![]; self.groups.len()];
        for m in members {
            let gone = Task::last_status(m.report) == TaskStatus::Stopped
                || m.task.desired_status == berth_domain::task::DesiredStatus::Stopped;
            if gone {
                for (i, key) in self.live_of(m.task) {
                    drain[i].push(key);
                }
                continue;
            }
            if m.task.deactivation.is_some() {
                continue;
            }
            let task = self.scope.task_arn(&self.cluster, &m.task.id);
            for (i, id, port) in self
                .targets(m.task, m.report, instances)
                .unwrap_or_default()
            {
                let g = &self.groups[i];
                if g.denied.is_some() {
                    continue;
                }
                let key = Registration::key(&id, port);
                if g.regs.get(&key).is_some_and(|r| !r.value.draining()) {
                    continue;
                }
                // Instance targets take their zone from the instance.
                let zone = (g.tg.target_type == "ip")
                    .then(|| m.task.availability_zone.clone())
                    .flatten();
                // Registrations carry their task: one write per task.
                elb::write_registrations(st, &self.scope, &g.tg, &[(id, port, zone)], Some(&task))
                    .await?;
                registered[i] += 1;
            }
        }
        for (g, n) in self.groups.iter().zip(registered) {
            if n > 0 {
                said.push(format!(
                    "registered {n} targets in (target-group {})",
                    g.arn
                ));
            }
        }
        for (g, keys) in self.groups.iter().zip(drain) {
            if keys.is_empty() || g.denied.is_some() {
                continue;
            }
            elb::drain(st, &self.scope, &g.tg, &keys).await?;
            said.push(format!(
                "deregistered {} targets in (target-group {})",
                keys.len(),
                g.arn
            ));
        }
        Ok((said, refused))
    }

    /// Starts taking a task out of its target groups before it is stopped:
    /// its targets drain and the task records the stop it gets once they
    /// have. False when it has no target to drain (stop it at once).
    pub async fn deactivate(
        &self,
        st: &Control,
        task: &str,
        reason: &str,
        failure: bool,
    ) -> Result<bool, ControlError> {
        let key = self.scope.task(&self.cluster, task);
        let Some(current) = typed::get::<Task>(&*st.store, &key).await? else {
            return Ok(false);
        };
        if current.value.deactivation.is_some() {
            return Ok(true);
        }
        let live = self.live_of(&current.value);
        if live.is_empty() {
            return Ok(false);
        }
        let mut delay = 0;
        for (i, g) in self.groups.iter().enumerate() {
            let keys: Vec<String> = live
                .iter()
                .filter(|(j, _)| *j == i)
                .map(|(_, k)| k.clone())
                .collect();
            if keys.is_empty() {
                continue;
            }
            elb::drain(st, &self.scope, &g.tg, &keys).await?;
            delay = delay.max(g.tg.deregistration_delay());
        }
        let at = st.now();
        let mut next = current.value.clone();
        next.deactivation = Some(Deactivation {
            until: at + delay as f64,
            stop: StopRequest {
                code: StopCode::ServiceSchedulerInitiated,
                reason: reason.to_string(),
                at,
                failure,
            },
        });
        next.version += 1;
        let txn = Txn::when(
            vec![typed::unchanged(&key, current.mod_revision)],
            vec![typed::put(&key, &next)],
        );
        // A lost race (the agent or a user changed the task) is looked at
        // again by the next reconcile.
        Ok(st.store.txn(txn).await?.succeeded)
    }
}
