//! Services: the stored record (what CreateService and UpdateService ask
//! for, and the deployments and events the service controller keeps), the
//! rules CreateService and UpdateService apply, the wire views, and
//! [`plan`], the pure decision of one reconcile: which tasks to start and
//! stop, and how the deployments and events move on.

use crate::deployment::{self, Observed, Rolling, Scheduling};
use crate::task::ObservedTask;
use crate::task::{HealthStatus, Task, TaskStatus};
use crate::{EcsError, Scope, Timestamp};
use berth_wire::ecs as w;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Events a service keeps, newest first (ECS shows the latest 100).
pub const MAX_EVENTS: usize = 100;
/// Finished deployments kept for ListServiceDeployments.
pub const MAX_DEPLOYMENT_HISTORY: usize = 50;
/// Largest healthCheckGracePeriodSeconds ECS accepts.
pub const MAX_GRACE_PERIOD: i32 = 2_147_483_647;
/// A task that stops by itself within this many seconds of starting
/// counts towards launch throttling.
const SHORT_LIVED_SECS: f64 = 10.0;
/// Short-lived failures within this window throttle a service's launches.
const THROTTLE_WINDOW_SECS: f64 = 60.0;
const THROTTLE_AFTER_FAILURES: usize = 3;
/// While throttled, a service starts tasks at most this often.
const THROTTLE_INTERVAL_SECS: f64 = 5.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceStatus {
    Active,
    /// Deleted: its tasks are being stopped.
    Draining,
    /// Deleted and without tasks: describable for a while, never listed.
    Inactive,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Active => "ACTIVE",
            ServiceStatus::Draining => "DRAINING",
            ServiceStatus::Inactive => "INACTIVE",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RolloutState {
    InProgress,
    Completed,
    Failed,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::InProgress => "IN_PROGRESS",
            RolloutState::Completed => "COMPLETED",
            RolloutState::Failed => "FAILED",
        }
    }
}

/// One deployment of a service: a task definition its tasks run, from the
/// moment it became PRIMARY.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// `ecs-svc/` and 19 digits; the digits also name its service
    /// deployment and service revision.
    pub id: String,
    pub task_definition_arn: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub rollout_state: RolloutState,
    pub rollout_state_reason: String,
    /// Shown in `deployments[]`: PRIMARY, or ACTIVE while its tasks are
    /// still being replaced. False once it is INACTIVE.
    pub active: bool,
    /// When it completed, failed, or was replaced.
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    /// A newer deployment replaced it before it completed, or a user
    /// stopped it.
    #[serde(default)]
    pub stopped: bool,
    /// The deployment that rolled this one back, when one did.
    #[serde(default)]
    pub rolled_back_by: Option<String>,
    /// The failed deployment this one rolls back, when it is a rollback.
    #[serde(default)]
    pub rollback_of: Option<String>,
    /// The deployments whose tasks were running when it began.
    #[serde(default)]
    pub sources: Vec<String>,
    /// The service's load balancers when it began: its service revision's.
    #[serde(default)]
    pub load_balancers: Vec<w::LoadBalancer>,
}

impl Deployment {
    pub fn new(task_definition_arn: &str, now: Timestamp, id_digits: u64) -> Deployment {
        let id = format!("ecs-svc/{:019}", id_digits % 10_000_000_000_000_000_000);
        Deployment {
            rollout_state_reason: format!("ECS deployment {id} in progress."),
            id,
            task_definition_arn: task_definition_arn.to_string(),
            created_at: now,
            updated_at: now,
            rollout_state: RolloutState::InProgress,
            active: true,
            finished_at: None,
            stopped: false,
            rolled_back_by: None,
            rollback_of: None,
            sources: vec![],
            load_balancers: vec![],
        }
    }

    /// The 19 digits of the id.
    pub fn digits(&self) -> &str {
        self.id.strip_prefix("ecs-svc/").unwrap_or(&self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceEvent {
    pub id: String,
    pub created_at: Timestamp,
    pub message: String,
}

/// The stored record of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub cluster: String,
    pub status: ServiceStatus,
    pub scheduling: Scheduling,
    /// REPLICA: what the user asked for. DAEMON: unused (one per instance).
    pub desired_count: u32,
    pub launch_type: String,
    /// The capacity providers that split its tasks (launch type FARGATE);
    /// empty when a launch type was given.
    #[serde(default)]
    pub capacity_provider_strategy: Vec<w::CapacityProviderStrategyItem>,
    /// The PRIMARY deployment's task definition.
    pub task_definition_arn: String,
    pub rolling: Rolling,
    pub circuit_breaker: Option<CircuitBreaker>,
    /// The resolution of its CPUUtilization and MemoryUtilization metrics
    /// (`monitoring`), as given.
    #[serde(default)]
    pub monitoring: Option<w::MonitoringConfiguration>,
    #[serde(default)]
    pub placement_constraints: Vec<w::PlacementConstraint>,
    #[serde(default)]
    pub placement_strategy: Vec<w::PlacementStrategy>,
    pub health_check_grace_period_seconds: i32,
    /// The target groups its tasks are registered with, and which
    /// container port of theirs each one reaches.
    #[serde(default)]
    pub load_balancers: Vec<w::LoadBalancer>,
    /// The role the service scheduler acts with on its load balancers: the
    /// one CreateService named, or ECS's service-linked role.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// awsvpc: the subnets and security groups of its tasks' interfaces.
    #[serde(default)]
    pub network_configuration: Option<w::NetworkConfiguration>,
    #[serde(default)]
    pub propagate_tags: String,
    #[serde(default)]
    pub enable_ecs_managed_tags: bool,
    #[serde(default)]
    pub enable_execute_command: bool,
    #[serde(default)]
    pub tags: Vec<w::Tag>,
    pub created_at: Timestamp,
    pub created_by: String,
    #[serde(default)]
    pub client_token: Option<String>,
    /// Newest first: the PRIMARY one, then older ones (ACTIVE while they
    /// have tasks, then kept as history).
    pub deployments: Vec<Deployment>,
    /// Newest first.
    #[serde(default)]
    pub events: Vec<ServiceEvent>,
    /// Whether the last reconcile found the service in a steady state, so
    /// that "reached a steady state" is said once per arrival.
    #[serde(default)]
    pub steady: bool,
    /// When the service was deleted.
    #[serde(default)]
    pub deleted_at: Option<Timestamp>,
    /// DAEMON: how many instances should run one of its tasks, as the
    /// controller last counted them.
    #[serde(default)]
    pub daemon_desired: u32,
    /// When the last "unable to place" event was added, so that a service
    /// that cannot place says so once a minute, not on every reconcile.
    #[serde(default)]
    pub unplaceable_reported_at: Option<Timestamp>,
    pub version: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreaker {
    pub rollback: bool,
}

/// A service's `monitoring`: at most five metric configurations, each of
/// CPUUtilization and/or MemoryUtilization at 20 or 60 seconds, no metric
/// named twice.
pub fn check_monitoring(m: &w::MonitoringConfiguration) -> Result<(), EcsError> {
    let configs = m.metric_configurations.as_deref().unwrap_or_default();
    if configs.len() > 5 {
        return Err(EcsError::invalid(
            "monitoring.metricConfigurations: at most 5 metric configurations.",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for c in configs {
        let names = c.metric_names.as_deref().unwrap_or_default();
        if names.is_empty() {
            return Err(EcsError::invalid(
                "monitoring.metricConfigurations.metricNames must name at least one metric.",
            ));
        }
        for n in names {
            if !matches!(n.as_str(), "CPUUtilization" | "MemoryUtilization") {
                return Err(EcsError::invalid(format!(
                    "monitoring.metricConfigurations.metricNames: {n} is not supported; use CPUUtilization or MemoryUtilization."
                )));
            }
            if !seen.insert(n.clone()) {
                return Err(EcsError::invalid(format!(
                    "monitoring.metricConfigurations: {n} is configured more than once."
                )));
            }
        }
        match c.resolution_seconds {
            Some(20 | 60) => {}
            other => {
                return Err(EcsError::invalid(format!(
                    "monitoring.metricConfigurations.resolutionSeconds must be 20 or 60; got {}.",
                    other.map_or("none".into(), |r| r.to_string())
                )))
            }
        }
    }
    Ok(())
}

impl Service {
    /// The resolution, in seconds, its `monitoring` asks for `metric`
    /// (ECS's default: 60).
    pub fn resolution(&self, metric: &str) -> i32 {
        self.monitoring
            .iter()
            .flat_map(|m| m.metric_configurations.iter().flatten())
            .find(|c| c.metric_names.iter().flatten().any(|n| n == metric))
            .and_then(|c| c.resolution_seconds)
            .unwrap_or(60)
    }

    /// ECS shows either the launch type or the strategy a service was given.
    fn shown_launch_type(&self) -> Option<String> {
        self.capacity_provider_strategy
            .is_empty()
            .then(|| self.launch_type.clone())
    }

    fn shown_strategy(&self) -> Option<Vec<w::CapacityProviderStrategyItem>> {
        (!self.capacity_provider_strategy.is_empty())
            .then(|| self.capacity_provider_strategy.clone())
    }

    fn platform_version(&self) -> Option<String> {
        (self.launch_type == "FARGATE").then(|| "LATEST".into())
    }

    pub fn arn(&self, scope: &Scope) -> String {
        scope.service_arn(&self.cluster, &self.name)
    }

    /// The group its tasks carry (`service:<name>`).
    pub fn group(&self) -> String {
        format!("service:{}", self.name)
    }

    pub fn primary(&self) -> &Deployment {
        &self.deployments[0]
    }

    pub fn deployment(&self, id: &str) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.id == id)
    }

    /// Adds an event in ECS's wording (`(service <name>) ...`).
    pub fn say(&mut self, now: Timestamp, id: String, what: &str) {
        self.events.insert(
            0,
            ServiceEvent {
                id,
                created_at: now,
                message: format!("(service {}) {what}", self.name),
            },
        );
        self.events.truncate(MAX_EVENTS);
    }

    /// Makes `task_definition_arn` the PRIMARY deployment: the previous
    /// one stays ACTIVE until its tasks are gone, and is marked stopped if
    /// it had not finished.
    pub fn deploy(&mut self, task_definition_arn: &str, now: Timestamp, id_digits: u64) {
        let mut d = Deployment::new(task_definition_arn, now, id_digits);
        d.load_balancers = self.load_balancers.clone();
        d.sources = self
            .deployments
            .iter()
            .filter(|d| d.active)
            .map(|d| d.id.clone())
            .collect();
        if let Some(previous) = self.deployments.first_mut() {
            if previous.rollout_state == RolloutState::InProgress {
                previous.stopped = true;
                previous.finished_at = Some(now);
                previous.rollout_state_reason =
                    "A newer deployment replaced this one before it completed.".into();
            }
            previous.updated_at = now;
        }
        self.task_definition_arn = task_definition_arn.to_string();
        self.deployments.insert(0, d);
        self.steady = false;
        self.trim_history();
    }

    /// The latest deployment before the PRIMARY one that completed: its
    /// id and task definition.
    pub fn last_completed(&self) -> Option<(String, String)> {
        self.deployments
            .iter()
            .skip(1)
            .find(|d| d.rollout_state == RolloutState::Completed)
            .map(|d| (d.id.clone(), d.task_definition_arn.clone()))
    }

    /// Rolls `failed` back: the last completed deployment's task definition
    /// becomes PRIMARY again, as a new deployment that records what it
    /// rolls back. Returns the completed deployment's id, or None when
    /// there is none to go back to.
    pub fn roll_back(
        &mut self,
        failed: &str,
        now: Timestamp,
        id_digits: u64,
        reason: impl FnOnce(&str) -> String,
    ) -> Option<String> {
        let (good_id, good_def) = self.last_completed()?;
        self.deploy(&good_def, now, id_digits);
        let rollback = self.deployments[0].id.clone();
        self.deployments[0].rollback_of = Some(failed.to_string());
        self.deployments[0].rollout_state_reason = reason(&good_id);
        if let Some(f) = self.deployments.iter_mut().find(|d| d.id == failed) {
            // Reported by its rollback's outcome from now on.
            f.rolled_back_by = Some(rollback);
            f.rollout_state = RolloutState::Failed;
            f.finished_at.get_or_insert(now);
        }
        Some(good_id)
    }

    /// The PRIMARY deployment has all its tasks healthy and nothing else runs.
    pub fn complete_primary(&mut self, now: Timestamp, event_id: String) {
        let p = &mut self.deployments[0];
        p.rollout_state = RolloutState::Completed;
        p.rollout_state_reason = format!("ECS deployment {} completed.", p.id);
        p.finished_at = Some(now);
        p.updated_at = now;
        let id = p.id.clone();
        self.say(
            now,
            event_id,
            &format!("(deployment {id}) deployment completed."),
        );
    }

    /// After a reconcile: older deployments without tasks become INACTIVE,
    /// arriving at a steady state is announced once, and a deleted service
    /// without tasks becomes INACTIVE.
    fn settle(&mut self, members: &[Member], steady: bool, now: Timestamp, event_id: String) {
        let live: std::collections::HashSet<&str> = members
            .iter()
            .filter(|m| !m.stopped())
            .filter_map(|m| m.task.started_by.as_deref())
            .collect();
        let primary = self.primary().id.clone();
        for d in self.deployments.iter_mut() {
            if d.id != primary && d.active && !live.contains(d.id.as_str()) {
                d.active = false;
                d.updated_at = now;
                d.finished_at.get_or_insert(now);
            }
        }
        if steady && !self.steady {
            self.say(now, event_id, "has reached a steady state.");
        }
        self.steady = steady;
        if self.status == ServiceStatus::Draining && live.is_empty() {
            self.status = ServiceStatus::Inactive;
            for d in self.deployments.iter_mut() {
                d.active = false;
            }
        }
    }

    fn trim_history(&mut self) {
        let mut kept = 0;
        self.deployments.retain(|d| {
            if d.active {
                return true;
            }
            kept += 1;
            kept <= MAX_DEPLOYMENT_HISTORY
        });
    }

    /// The wire view. `counts` come from the service's tasks.
    pub fn view(&self, scope: &Scope, counts: &Counts, include_tags: bool) -> w::Service {
        let desired = counts.desired(self);
        let primary = self.primary();
        let deployments = self
            .deployments
            .iter()
            .filter(|d| d.active)
            .map(|d| {
                let c = counts.of(&d.id);
                let is_primary = d.id == primary.id;
                w::Deployment {
                    id: Some(d.id.clone()),
                    status: Some(if is_primary { "PRIMARY" } else { "ACTIVE" }.into()),
                    task_definition: Some(d.task_definition_arn.clone()),
                    desired_count: Some(if is_primary {
                        desired as i32
                    } else {
                        (c.running + c.pending) as i32
                    }),
                    pending_count: Some(c.pending as i32),
                    running_count: Some(c.running as i32),
                    failed_tasks: Some(c.failed as i32),
                    created_at: Some(d.created_at),
                    updated_at: Some(d.updated_at),
                    launch_type: self.shown_launch_type(),
                    capacity_provider_strategy: self.shown_strategy(),
                    platform_version: self.platform_version(),
                    rollout_state: Some(d.rollout_state.as_str().into()),
                    rollout_state_reason: Some(d.rollout_state_reason.clone()),
                    ..Default::default()
                }
            })
            .collect();
        let (running, pending) = counts
            .by_deployment
            .values()
            .fold((0, 0), |(r, p), c| (r + c.running, p + c.pending));
        w::Service {
            service_arn: Some(self.arn(scope)),
            service_name: Some(self.name.clone()),
            cluster_arn: Some(scope.cluster_arn(&self.cluster)),
            status: Some(self.status.as_str().into()),
            desired_count: Some(desired as i32),
            running_count: Some(running as i32),
            pending_count: Some(pending as i32),
            launch_type: self.shown_launch_type(),
            capacity_provider_strategy: self.shown_strategy(),
            platform_version: self.platform_version(),
            platform_family: (self.launch_type == "FARGATE").then(|| "Linux".into()),
            task_definition: Some(self.task_definition_arn.clone()),
            role_arn: self.role_arn.clone(),
            deployment_configuration: Some(w::DeploymentConfiguration {
                maximum_percent: Some(self.rolling.maximum_percent as i32),
                minimum_healthy_percent: Some(self.rolling.minimum_healthy_percent as i32),
                deployment_circuit_breaker: Some(w::DeploymentCircuitBreaker {
                    enable: Some(self.circuit_breaker.is_some()),
                    rollback: Some(self.circuit_breaker.is_some_and(|c| c.rollback)),
                    ..Default::default()
                }),
                strategy: Some("ROLLING".into()),
                ..Default::default()
            }),
            deployment_controller: Some(w::DeploymentController {
                r#type: Some("ECS".into()),
            }),
            deployments: Some(deployments),
            events: Some(
                self.events
                    .iter()
                    .map(|e| w::ServiceEvent {
                        id: Some(e.id.clone()),
                        created_at: Some(e.created_at),
                        message: Some(e.message.clone()),
                    })
                    .collect(),
            ),
            load_balancers: Some(self.load_balancers.clone()),
            service_registries: Some(vec![]),
            task_sets: Some(vec![]),
            placement_constraints: Some(self.placement_constraints.clone()),
            placement_strategy: Some(self.placement_strategy.clone()),
            scheduling_strategy: Some(self.scheduling.as_str().into()),
            health_check_grace_period_seconds: Some(self.health_check_grace_period_seconds),
            network_configuration: self.network_configuration.clone(),
            propagate_tags: Some(self.propagate_tags.clone()),
            enable_ecs_managed_tags: Some(self.enable_ecs_managed_tags),
            enable_execute_command: Some(self.enable_execute_command),
            created_at: Some(self.created_at),
            created_by: Some(self.created_by.clone()),
            current_service_deployment: Some(scope.service_deployment_arn(
                &self.cluster,
                &self.name,
                primary.digits(),
            )),
            tags: include_tags.then(|| self.tags.clone()),
            ..Default::default()
        }
    }

    /// The service-deployment view (DescribeServiceDeployments) of one of
    /// its deployments.
    pub fn service_deployment(
        &self,
        scope: &Scope,
        d: &Deployment,
        counts: &Counts,
    ) -> w::ServiceDeployment {
        let (status, reason) = self.deployment_status(d);
        let revision = |id: &str| {
            let c = counts.of(id);
            w::ServiceRevisionSummary {
                arn: Some(scope.service_revision_arn(
                    &self.cluster,
                    &self.name,
                    id.strip_prefix("ecs-svc/").unwrap_or(id),
                )),
                requested_task_count: Some(if id == self.primary().id {
                    counts.desired(self) as i32
                } else {
                    0
                }),
                running_task_count: Some(c.running as i32),
                pending_task_count: Some(c.pending as i32),
                ..Default::default()
            }
        };
        let rollback = d.rolled_back_by.as_ref().and_then(|by| {
            let r = self.deployment(by)?;
            Some(w::Rollback {
                reason: Some(d.rollout_state_reason.clone()),
                started_at: Some(r.created_at),
                service_revision_arn: Some(scope.service_revision_arn(
                    &self.cluster,
                    &self.name,
                    r.digits(),
                )),
            })
        });
        w::ServiceDeployment {
            service_deployment_arn: Some(scope.service_deployment_arn(
                &self.cluster,
                &self.name,
                d.digits(),
            )),
            service_arn: Some(self.arn(scope)),
            cluster_arn: Some(scope.cluster_arn(&self.cluster)),
            created_at: Some(d.created_at),
            started_at: Some(d.created_at),
            updated_at: Some(d.updated_at),
            finished_at: d.finished_at,
            stopped_at: d.stopped.then_some(d.finished_at).flatten(),
            status: Some(status.into()),
            status_reason: Some(reason),
            target_service_revision: Some(revision(&d.id)),
            source_service_revisions: Some(d.sources.iter().map(|s| revision(s)).collect()),
            deployment_configuration: Some(w::DeploymentConfiguration {
                maximum_percent: Some(self.rolling.maximum_percent as i32),
                minimum_healthy_percent: Some(self.rolling.minimum_healthy_percent as i32),
                ..Default::default()
            }),
            deployment_circuit_breaker: Some(w::ServiceDeploymentCircuitBreaker {
                status: Some(
                    match (self.circuit_breaker, d.rollout_state) {
                        (None, _) => "DISABLED",
                        (Some(_), RolloutState::Failed) => "TRIGGERED",
                        (Some(_), _) => "MONITORING",
                    }
                    .into(),
                ),
                failure_count: Some(counts.of(&d.id).failed as i32),
                threshold: Some(deployment::failure_threshold(counts.desired(self)) as i32),
            }),
            rollback,
            ..Default::default()
        }
    }

    /// The service-deployment status of `d` (PENDING never shows: a
    /// deployment starts when it is made).
    pub fn deployment_status(&self, d: &Deployment) -> (&'static str, String) {
        if let Some(by) = d.rolled_back_by.as_ref().and_then(|id| self.deployment(id)) {
            let status = match by.rollout_state {
                RolloutState::InProgress if by.stopped => "ROLLBACK_FAILED",
                RolloutState::InProgress => "ROLLBACK_IN_PROGRESS",
                RolloutState::Completed => "ROLLBACK_SUCCESSFUL",
                RolloutState::Failed => "ROLLBACK_FAILED",
            };
            return (status, d.rollout_state_reason.clone());
        }
        let status = match d.rollout_state {
            _ if d.stopped => "STOPPED",
            RolloutState::InProgress => "IN_PROGRESS",
            RolloutState::Completed => "SUCCESSFUL",
            RolloutState::Failed => "STOPPED",
        };
        (status, d.rollout_state_reason.clone())
    }
}

impl Scheduling {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduling::Replica => "REPLICA",
            Scheduling::Daemon => "DAEMON",
        }
    }
}

/// Task counts of one deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeploymentCounts {
    pub running: u32,
    pub pending: u32,
    /// Tasks that stopped by themselves or failed their health checks.
    pub failed: u32,
}

/// A service's task counts by deployment.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub by_deployment: HashMap<String, DeploymentCounts>,
}

impl Counts {
    pub fn of(&self, deployment: &str) -> DeploymentCounts {
        self.by_deployment
            .get(deployment)
            .copied()
            .unwrap_or_default()
    }

    pub fn desired(&self, s: &Service) -> u32 {
        match (s.status, s.scheduling) {
            (ServiceStatus::Active, Scheduling::Replica) => s.desired_count,
            (ServiceStatus::Active, Scheduling::Daemon) => s.daemon_desired,
            _ => 0,
        }
    }

    /// Counts `members` (the service's tasks, stopped ones included). A
    /// failure counts against a deployment only while it is in progress:
    /// a task that dies after its deployment completed is replaced, not
    /// held against the deployment.
    pub fn from_members<'a>(
        svc: &Service,
        members: impl IntoIterator<Item = &'a Member<'a>>,
    ) -> Counts {
        let mut c = Counts::default();
        for m in members {
            let Some(d) = m.task.started_by.clone() else {
                continue;
            };
            let finished = svc.deployment(&d).and_then(|d| d.finished_at);
            let e = c.by_deployment.entry(d).or_default();
            let last = Task::last_status(m.report);
            if last == TaskStatus::Stopped {
                let when = m.report.and_then(|r| r.stopped_at).unwrap_or(0.0);
                if m.failed() && finished.is_none_or(|f| when <= f) {
                    e.failed += 1;
                }
            } else if m.task.effective_desired(m.report) == crate::task::DesiredStatus::Running {
                if last == TaskStatus::Running {
                    e.running += 1;
                } else if last.is_pending() {
                    e.pending += 1;
                }
            }
        }
        c
    }
}

/// One of a service's tasks, as the reconciler sees it.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub task: &'a Task,
    pub report: Option<&'a ObservedTask>,
    /// Its instance is DRAINING: the task is to be replaced elsewhere.
    pub on_draining: bool,
    /// How its load balancer targets stand, for a service with load balancers.
    pub lb: Option<&'a LbHealth>,
}

/// How a running task's targets stand in its service's target groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbHealth {
    /// Every target passes its health checks.
    Healthy,
    /// Not registered yet, or still being checked.
    Pending,
    /// A target failed its health checks in this target group (ARN).
    Unhealthy { target_group: String },
}

impl Member<'_> {
    fn stopped(&self) -> bool {
        Task::last_status(self.report) == TaskStatus::Stopped
    }

    /// Stopped by itself (an essential container exited, it could not
    /// start) or for failing its health checks: what the circuit breaker
    /// counts. Stops the server decided for other reasons do not count.
    pub fn failed(&self) -> bool {
        match &self.task.stop {
            Some(s) => s.failure,
            None => self.stopped(),
        }
    }

    fn started_at(&self) -> Option<Timestamp> {
        self.report.and_then(|r| r.started_at)
    }
}

/// How a task of a service stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not RUNNING yet, or RUNNING but not yet proven.
    Starting,
    Healthy,
    /// Failed its health checks after the grace period: to be replaced.
    Unhealthy,
}

/// Settings of the reconciler that are not part of a service.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// A RUNNING task without container health checks counts as healthy
    /// after this many seconds.
    pub settle_secs: f64,
}

/// Whether a running task counts as healthy: behind load balancers, once
/// every target passes its health checks (a failing one after the grace
/// period is a failure); with health checks on an essential container,
/// once the task is HEALTHY (and UNHEALTHY after the grace period is a
/// failure); with neither, once it has run for the settle time.
pub fn health(m: &Member, grace_secs: f64, tuning: Tuning, now: Timestamp) -> Health {
    if Task::last_status(m.report) != TaskStatus::Running {
        return Health::Starting;
    }
    let since = m.started_at().unwrap_or(now);
    let checked = m
        .task
        .definition
        .container_definitions
        .iter()
        .flatten()
        .any(|c| c.essential.unwrap_or(true) && c.health_check.is_some());
    match m.lb {
        Some(LbHealth::Unhealthy { .. }) if now - since >= grace_secs => return Health::Unhealthy,
        Some(LbHealth::Healthy) if !checked => return Health::Healthy,
        Some(LbHealth::Healthy) | None => {}
        Some(_) => return Health::Starting,
    }
    if !checked {
        return if now - since >= tuning.settle_secs {
            Health::Healthy
        } else {
            Health::Starting
        };
    }
    match m.report.and_then(|r| r.health_status) {
        Some(HealthStatus::Healthy) => Health::Healthy,
        Some(HealthStatus::Unhealthy) if now - since >= grace_secs => Health::Unhealthy,
        _ => Health::Starting,
    }
}

/// Why the reconciler stops a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub task: String,
    pub reason: String,
    /// Counts towards the circuit breaker.
    pub failure: bool,
}

/// What one reconcile of a REPLICA service decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Tasks of the PRIMARY deployment to place now.
    pub start: u32,
    pub stop: Vec<Stop>,
    /// The record as it should be written, if it changed.
    pub update: Option<Service>,
    /// Reconcile again after this many seconds even if nothing changes
    /// (a task's settle time or grace period ends, throttling lifts).
    pub recheck_after: Option<f64>,
}

/// Decides one reconcile of a REPLICA service from its tasks (`members`,
/// stopped ones included). `new_ids` gives the ids of events and
/// deployments it adds.
pub fn plan<'a>(
    svc: &Service,
    members: &[Member<'a>],
    tuning: Tuning,
    now: Timestamp,
    mut new_ids: impl FnMut() -> (String, u64),
) -> Plan {
    let mut next = svc.clone();
    let mut out = Plan::default();
    let recheck = |secs: f64, out: &mut Plan| {
        if secs > 0.0 {
            out.recheck_after = Some(out.recheck_after.map_or(secs, |r: f64| r.min(secs)));
        }
    };
    let counts = Counts::from_members(svc, members);
    let desired = counts.desired(svc);
    let primary = svc.primary().id.clone();
    let grace = f64::from(svc.health_check_grace_period_seconds);

    // Classify what is still meant to run.
    let mut new_healthy = vec![];
    let mut new_other = vec![];
    let mut old_healthy = vec![];
    let mut old_other = vec![];
    for m in members {
        if m.stopped() || m.task.leaving() {
            continue;
        }
        let h = health(m, grace, tuning, now);
        if h == Health::Starting && Task::last_status(m.report) == TaskStatus::Running {
            let since = m.started_at().unwrap_or(now);
            recheck((since + tuning.settle_secs - now).max(0.05), &mut out);
            if grace > 0.0 {
                recheck((since + grace - now).max(0.05), &mut out);
            }
        }
        if h == Health::Unhealthy {
            let reason = match m.lb {
                Some(LbHealth::Unhealthy { target_group }) => {
                    format!("Task failed ELB health checks in (target-group {target_group})")
                }
                _ => "Task failed container health checks".into(),
            };
            out.stop.push(Stop {
                task: m.task.id.clone(),
                reason,
                failure: true,
            });
            continue;
        }
        let is_new = m.task.started_by.as_deref() == Some(primary.as_str()) && !m.on_draining;
        match (is_new, h == Health::Healthy) {
            (true, true) => new_healthy.push(*m),
            (true, false) => new_other.push(*m),
            (false, true) => old_healthy.push(*m),
            (false, false) => old_other.push(*m),
        }
    }

    let observed = Observed {
        new_healthy: new_healthy.len() as u32,
        new_other: new_other.len() as u32,
        old_healthy: old_healthy.len() as u32,
        old_other: old_other.len() as u32,
    };
    let step = deployment::step(desired, svc.rolling.bounds(desired), observed);
    let scaling_reason = "Task stopped by the service scheduler (service scale-in or deployment)";
    let mut victims = Victims::new(members, &svc.placement_strategy);
    // Protected tasks are passed over (not on a DRAINING instance, which
    // is being emptied); the service looks again when protection ends.
    let mut protection_ends: Option<f64> = None;
    let mut unprotected = |list: &[Member<'a>]| -> Vec<Member<'a>> {
        list.iter()
            .filter(|m| {
                let held = m.task.protected(now) && !m.on_draining;
                if held {
                    let until = m.task.protected_until.unwrap_or(now);
                    protection_ends = Some(protection_ends.map_or(until, |e: f64| e.min(until)));
                }
                !held
            })
            .cloned()
            .collect()
    };
    let (old_other, old_healthy, new_other, new_healthy) = (
        unprotected(&old_other),
        unprotected(&old_healthy),
        unprotected(&new_other),
        unprotected(&new_healthy),
    );
    if let Some(until) = protection_ends {
        recheck(until - now, &mut out);
    }
    for m in victims.pick(&old_other, step.stop_old_unhealthy as usize) {
        out.stop.push(Stop {
            task: m.task.id.clone(),
            reason: scaling_reason.into(),
            failure: false,
        });
    }
    for m in victims.pick(&old_healthy, step.stop_old_healthy as usize) {
        out.stop.push(Stop {
            task: m.task.id.clone(),
            reason: if m.on_draining {
                "Task stopped because its container instance is DRAINING".into()
            } else {
                scaling_reason.into()
            },
            failure: false,
        });
    }
    // Scale-in within the PRIMARY deployment: the tasks that are not yet
    // healthy go first, then the healthy ones where the service is densest.
    let new_total = observed.new_healthy + observed.new_other;
    if new_total > desired {
        let surplus = (new_total - desired) as usize;
        let mut chosen = victims.pick(&new_other, surplus);
        let rest = surplus - chosen.len();
        chosen.extend(victims.pick(&new_healthy, rest));
        for m in chosen {
            out.stop.push(Stop {
                task: m.task.id.clone(),
                reason: scaling_reason.into(),
                failure: false,
            });
        }
    }

    out.start = step.start;
    // A service whose tasks keep dying right after they start is started
    // more slowly, as ECS throttles such services.
    let recent_short_failures = members
        .iter()
        .filter(|m| m.failed())
        .filter(|m| {
            let stopped_at = m.report.and_then(|r| r.stopped_at).unwrap_or(0.0);
            let ran = m.started_at().map_or(0.0, |s| stopped_at.max(s) - s);
            now - stopped_at < THROTTLE_WINDOW_SECS && ran < SHORT_LIVED_SECS
        })
        .count();
    if out.start > 0 && recent_short_failures >= THROTTLE_AFTER_FAILURES {
        let last_start = members
            .iter()
            .map(|m| m.task.created_at)
            .fold(f64::MIN, f64::max);
        let wait = last_start + THROTTLE_INTERVAL_SECS - now;
        if wait > 0.0 {
            out.start = 0;
            recheck(wait, &mut out);
        } else {
            out.start = 1;
        }
    }

    // The deployments move on.
    let old_left = observed.old_healthy + observed.old_other;
    let failed_now = counts.of(&primary).failed;
    if next.primary().rollout_state == RolloutState::InProgress
        && svc.status == ServiceStatus::Active
    {
        let threshold = deployment::failure_threshold(desired);
        if svc.circuit_breaker.is_some() && failed_now >= threshold {
            let p = &mut next.deployments[0];
            p.rollout_state = RolloutState::Failed;
            p.rollout_state_reason = format!(
                "ECS deployment circuit breaker: tasks failed to start. ({failed_now} tasks failed, threshold {threshold})"
            );
            p.finished_at = Some(now);
            p.updated_at = now;
            next.say(
                now,
                new_ids().0,
                &format!("(deployment {primary}) deployment failed: tasks failed to start."),
            );
            if svc.circuit_breaker.is_some_and(|c| c.rollback) {
                let digits = new_ids().1;
                let rolled = next.roll_back(&primary, now, digits, |good| {
                    format!("ECS deployment circuit breaker: rolling back to deployment {good}.")
                });
                if let Some(good) = rolled {
                    next.say(
                        now,
                        new_ids().0,
                        &format!("rolling back to deployment {good}."),
                    );
                    // Nothing of the failed deployment is started any more;
                    // the next reconcile starts the rollback's tasks.
                    out.start = 0;
                }
            }
        } else if observed.new_healthy >= desired && new_total == desired && old_left == 0 {
            next.complete_primary(now, new_ids().0);
        }
    }
    let steady = svc.status == ServiceStatus::Active
        && out.start == 0
        && out.stop.is_empty()
        && old_left == 0
        && observed.new_other == 0
        && observed.new_healthy == desired
        && next.primary().id == primary;
    next.settle(members, steady, now, new_ids().0);
    if next != *svc {
        next.version += 1;
        out.update = Some(next);
    }
    out
}

/// What one reconcile of a DAEMON service decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaemonPlan {
    pub stop: Vec<Stop>,
    /// Instances to place one task of the PRIMARY deployment on.
    pub start_on: Vec<String>,
    pub update: Option<Service>,
    pub recheck_after: Option<f64>,
}

/// Decides one reconcile of a DAEMON service: one task of the PRIMARY
/// deployment on every instance in `eligible` (ACTIVE and satisfying the
/// service's constraints). A task of an older deployment, a second task on
/// one instance, or a task on an instance that no longer qualifies is
/// stopped first (DAEMON's minimumHealthyPercent is 0); the instance gets
/// its new task once nothing of the service runs there any more, since the
/// old task holds its ports and memory until it is gone.
pub fn plan_daemon(
    svc: &Service,
    members: &[Member],
    eligible: &std::collections::BTreeSet<String>,
    tuning: Tuning,
    now: Timestamp,
    mut new_ids: impl FnMut() -> (String, u64),
) -> DaemonPlan {
    let mut out = DaemonPlan::default();
    let mut next = svc.clone();
    let primary = svc.primary().id.clone();
    let grace = f64::from(svc.health_check_grace_period_seconds);
    let live: Vec<&Member> = members
        .iter()
        .filter(|m| !m.stopped() && m.task.desired_status == crate::task::DesiredStatus::Running)
        .collect();
    let active = svc.status == ServiceStatus::Active;
    let mut covered = std::collections::HashSet::new();
    for m in &live {
        let inst = m.task.container_instance.as_str();
        let current = m.task.started_by.as_deref() == Some(primary.as_str());
        let reason = if !active || !eligible.contains(inst) {
            if m.on_draining {
                "Task stopped because its container instance is DRAINING"
            } else {
                "Task stopped by the service scheduler (the instance no longer runs this daemon)"
            }
        } else if !current || !covered.insert(inst) {
            "Task stopped by the service scheduler (deployment)"
        } else {
            continue;
        };
        out.stop.push(Stop {
            task: m.task.id.clone(),
            reason: reason.into(),
            failure: false,
        });
    }
    let occupied: std::collections::HashSet<&str> = live
        .iter()
        .map(|m| m.task.container_instance.as_str())
        .collect();
    if active {
        out.start_on = eligible
            .iter()
            .filter(|id| !occupied.contains(id.as_str()))
            .cloned()
            .collect();
        next.daemon_desired = eligible.len() as u32;
    }
    let mut settled = out.stop.is_empty() && out.start_on.is_empty();
    for inst in eligible {
        let healthy = live.iter().any(|m| {
            m.task.container_instance == *inst
                && m.task.started_by.as_deref() == Some(primary.as_str())
                && health(m, grace, tuning, now) == Health::Healthy
        });
        settled &= healthy;
    }
    for m in &live {
        if health(m, grace, tuning, now) == Health::Starting
            && Task::last_status(m.report) == TaskStatus::Running
        {
            let since = m.started_at().unwrap_or(now);
            let wait = (since + tuning.settle_secs - now).max(0.05);
            out.recheck_after = Some(out.recheck_after.map_or(wait, |r: f64| r.min(wait)));
        }
    }
    if active && settled && next.primary().rollout_state == RolloutState::InProgress {
        next.complete_primary(now, new_ids().0);
    }
    next.settle(members, active && settled, now, new_ids().0);
    if next != *svc {
        next.version += 1;
        out.update = Some(next);
    }
    out
}

/// Chooses tasks to stop on scale-in, one at a time. Spread (the
/// default): where the service is densest at that moment (its most
/// crowded availability zone, then instance), so what remains stays
/// spread. Binpack first: where it is sparsest, so the instances that
/// remain stay full and the others empty. Older tasks first on a tie.
struct Victims<'a> {
    per_zone: HashMap<&'a str, usize>,
    per_instance: HashMap<&'a str, usize>,
    pack: bool,
}

impl<'a> Victims<'a> {
    fn new(all: &[Member<'a>], strategy: &[w::PlacementStrategy]) -> Self {
        let mut v = Victims {
            per_zone: HashMap::new(),
            per_instance: HashMap::new(),
            pack: strategy.first().and_then(|s| s.r#type.as_deref()) == Some("binpack"),
        };
        for m in all.iter().filter(|m| !m.stopped()) {
            *v.per_zone.entry(zone(m)).or_default() += 1;
            *v.per_instance
                .entry(m.task.container_instance.as_str())
                .or_default() += 1;
        }
        v
    }

    /// Takes `n` of `candidates`, best victim first.
    fn pick(&mut self, candidates: &[Member<'a>], n: usize) -> Vec<Member<'a>> {
        let mut left: Vec<Member<'a>> = candidates.to_vec();
        let mut out = vec![];
        while out.len() < n && !left.is_empty() {
            let key = |m: &Member<'a>| {
                let zone = self.per_zone.get(zone(m)).copied().unwrap_or(0) as i64;
                let instance = self
                    .per_instance
                    .get(m.task.container_instance.as_str())
                    .copied()
                    .unwrap_or(0) as i64;
                if self.pack {
                    (0, -instance)
                } else {
                    (zone, instance)
                }
            };
            let mut best = 0;
            for (i, m) in left.iter().enumerate() {
                let (k, b) = (key(m), key(&left[best]));
                if k > b || (k == b && m.task.created_at < left[best].task.created_at) {
                    best = i;
                }
            }
            let m = left.remove(best);
            if let Some(z) = self.per_zone.get_mut(zone(&m)) {
                *z = z.saturating_sub(1);
            }
            if let Some(c) = self
                .per_instance
                .get_mut(m.task.container_instance.as_str())
            {
                *c = c.saturating_sub(1);
            }
            out.push(m);
        }
        out
    }
}

fn zone<'a>(m: &Member<'a>) -> &'a str {
    m.task.availability_zone.as_deref().unwrap_or("")
}

/// Checks a service name (1 to 255 letters, digits, hyphens, underscores).
pub fn validate_name(name: Option<&str>) -> Result<&str, EcsError> {
    let name = name.unwrap_or_default();
    if name.is_empty() {
        return Err(EcsError::invalid("serviceName is required."));
    }
    if !crate::valid_name(name) {
        return Err(EcsError::invalid(
            "serviceName: up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
        ));
    }
    Ok(name)
}

/// A REPLICA service's desiredCount.
pub fn validate_desired_count(n: i32) -> Result<u32, EcsError> {
    if n < 0 {
        return Err(EcsError::invalid(format!(
            "desiredCount must be 0 or more, got {n}."
        )));
    }
    Ok(n as u32)
}

pub fn validate_grace_period(g: i32) -> Result<i32, EcsError> {
    if g < 0 {
        return Err(EcsError::invalid(format!(
            "healthCheckGracePeriodSeconds must be 0 or more, got {g}."
        )));
    }
    Ok(g)
}

/// Reads `deploymentConfiguration` over `current` (UpdateService keeps
/// what it leaves out): rolling bounds with ECS's defaults, and the
/// circuit breaker.
pub fn deployment_configuration(
    scheduling: Scheduling,
    given: Option<&w::DeploymentConfiguration>,
    current: Option<(Rolling, Option<CircuitBreaker>)>,
) -> Result<(Rolling, Option<CircuitBreaker>), EcsError> {
    let (min, max) = match (given, current) {
        (Some(g), Some((c, _))) => (
            Some(
                g.minimum_healthy_percent
                    .unwrap_or(c.minimum_healthy_percent as i32),
            ),
            Some(g.maximum_percent.unwrap_or(c.maximum_percent as i32)),
        ),
        (Some(g), None) => (g.minimum_healthy_percent, g.maximum_percent),
        (None, Some((c, _))) => (
            Some(c.minimum_healthy_percent as i32),
            Some(c.maximum_percent as i32),
        ),
        (None, None) => (None, None),
    };
    let rolling = Rolling::with_defaults(scheduling, min, max)?;
    if let Some(g) = given {
        if let Some(s) = g.strategy.as_deref() {
            crate::one_of(
                s,
                &["ROLLING", "BLUE_GREEN", "LINEAR", "CANARY"],
                "deploymentConfiguration.strategy",
            )?;
            if s != "ROLLING" {
                return Err(EcsError::UnsupportedFeature(format!(
                    "deploymentConfiguration.strategy {s}: Berth runs ROLLING deployments only."
                )));
            }
        }
        if g.early_success_criteria.is_some() {
            return Err(EcsError::UnsupportedFeature(
                "deploymentConfiguration.earlySuccessCriteria: Berth's rolling deployments complete when every task is healthy.".into(),
            ));
        }
        if g.deployment_circuit_breaker.as_ref().is_some_and(|cb| {
            cb.threshold_configuration.is_some() || cb.reset_on_healthy_task.is_some()
        }) {
            return Err(EcsError::UnsupportedFeature(
                "deploymentConfiguration.deploymentCircuitBreaker: Berth's circuit breaker uses ECS's default threshold (half the desired count, between 3 and 200 failed tasks); thresholdConfiguration and resetOnHealthyTask are not supported.".into(),
            ));
        }
        if g.alarms.as_ref().is_some_and(|a| a.enable == Some(true)) {
            return Err(EcsError::UnsupportedFeature(
                "deploymentConfiguration.alarms: Berth has no CloudWatch alarms to watch.".into(),
            ));
        }
    }
    let breaker = match given.and_then(|g| g.deployment_circuit_breaker.as_ref()) {
        Some(cb) => match (cb.enable, cb.rollback) {
            (Some(true), r) => Some(CircuitBreaker {
                rollback: r.unwrap_or(false),
            }),
            (Some(false), _) => None,
            (None, _) => {
                return Err(EcsError::invalid(
                    "deploymentConfiguration.deploymentCircuitBreaker.enable is required.",
                ))
            }
        },
        None => current.and_then(|(_, cb)| cb),
    };
    Ok((rolling, breaker))
}

#[cfg(test)]
mod tests;
