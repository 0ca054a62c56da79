//! Tasks: the stored desired record, the lifecycle statuses, overrides,
//! what a task reserves on its instance, and the wire view that merges the
//! desired record with what the agent observed.
//!
//! Two records per task, with separate writers: [`Task`] (desired state:
//! RunTask, StopTask, later the service controllers) and
//! [`berth_wire::agent::ObservedTask`] (observed state, written only by the
//! agent gateway from agent reports).

use crate::{EcsError, Scope, Timestamp};
use berth_wire::agent::TaskReport;
use berth_wire::ecs as w;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The launch types the API knows (`launchType`).
pub const LAUNCH_TYPES: &[&str] = &["EC2", "FARGATE", "EXTERNAL", "MANAGED_INSTANCES"];
/// Tasks per RunTask call.
pub const MAX_RUN_COUNT: i32 = 10;
/// Stopped tasks stay describable at least this long (seconds).
pub const STOPPED_RETENTION_SECS: f64 = 3600.0;

// The status vocabulary is the agent protocol's too, so it lives in the
// wire crate, below both.
pub use berth_wire::agent::{ContainerStatus, DesiredStatus, HealthStatus, StopCode, TaskStatus};

/// A task's observed state as the server keeps it (`task-states/`): the
/// agent's last report as recorded. Its own type, not the protocol's
/// message, so that either can change without the other; its JSON is the
/// report's, so stored records read the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedTask {
    pub task_arn: String,
    pub last_status: TaskStatus,
    #[serde(default)]
    pub containers: Vec<ObservedContainer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Timestamp>,
    /// Set when the agent decided the stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<StopCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
}

/// The task attribute that says what isolates a task on its host.
pub const ISOLATION_ATTRIBUTE: &str = "berth.isolation";

/// One container's observed state, as the server keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedContainer {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    pub last_status: ContainerStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub network_bindings: Vec<w::NetworkBinding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
}

impl From<TaskReport> for ObservedTask {
    fn from(r: TaskReport) -> Self {
        ObservedTask {
            task_arn: r.task_arn,
            last_status: r.last_status,
            containers: r
                .containers
                .into_iter()
                .map(|c| ObservedContainer {
                    name: c.name,
                    runtime_id: c.runtime_id,
                    last_status: c.last_status,
                    exit_code: c.exit_code,
                    reason: c.reason,
                    network_bindings: c.network_bindings,
                    health_status: c.health_status,
                })
                .collect(),
            health_status: r.health_status,
            pull_started_at: r.pull_started_at,
            pull_stopped_at: r.pull_stopped_at,
            started_at: r.started_at,
            stopping_at: r.stopping_at,
            execution_stopped_at: r.execution_stopped_at,
            stopped_at: r.stopped_at,
            stop_code: r.stop_code,
            stopped_reason: r.stopped_reason,
            mac_address: r.mac_address,
            isolation: r.isolation,
        }
    }
}

/// A request to stop, as the desired side records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopRequest {
    pub code: StopCode,
    pub reason: String,
    pub at: Timestamp,
    /// The task failed (its health checks), which a service's deployment
    /// circuit breaker counts; stops for scale-in, deployments, draining or
    /// users do not count.
    #[serde(default)]
    pub failure: bool,
}

/// What a task holds on its instance while it is not STOPPED.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// CPU units: the task-level cpu, else the sum of the containers' cpu.
    pub cpu: i64,
    /// MiB: the task-level memory, else per container memoryReservation or memory.
    pub memory: i64,
    /// Fixed host ports (bridge and host mode).
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    /// Host ports taken from the ephemeral range (bridge, hostPort 0).
    pub dynamic_ports: u32,
}

/// A task's own network interface (awsvpc): chosen by the server at
/// placement, so addresses are unique across hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskNetwork {
    pub attachment_id: String,
    /// `eni-` and 17 hex digits, as EC2 names interfaces.
    pub eni_id: String,
    pub subnet_id: String,
    pub cidr: String,
    pub ip: String,
    #[serde(default)]
    pub security_groups: Vec<String>,
}

/// What a task holds on its host, read from its record without the rest
/// (its definition above all): what placement keeps of every task, so
/// that a hundred thousand of them cost little to read and to keep.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Claim {
    pub container_instance: String,
    pub group: String,
    pub reservation: Reservation,
}

/// The desired record of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// 32 hex digits, the last part of the ARN.
    pub id: String,
    pub cluster: String,
    pub task_definition_arn: String,
    pub family: String,
    /// The definition with the overrides applied: what the agent runs.
    pub definition: w::TaskDefinition,
    /// Container name and the uuid of its ARN, in definition order.
    pub containers: Vec<(String, String)>,
    #[serde(default)]
    pub overrides: Option<w::TaskOverride>,
    /// The id of the host it runs on: a container instance of its cluster,
    /// or for FARGATE a host of the hidden pool (`instance::FARGATE_POOL`).
    pub container_instance: String,
    /// The capacity provider it was placed through (FARGATE, FARGATE_SPOT),
    /// when a strategy chose one.
    #[serde(default)]
    pub capacity_provider: Option<String>,
    #[serde(default)]
    pub availability_zone: Option<String>,
    pub launch_type: String,
    pub group: String,
    /// For service tasks, the deployment id (`ecs-svc/...`).
    #[serde(default)]
    pub started_by: Option<String>,
    /// The service that started it, if one did.
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub tags: Vec<w::Tag>,
    pub created_at: Timestamp,
    pub desired_status: DesiredStatus,
    #[serde(default)]
    pub stop: Option<StopRequest>,
    pub reservation: Reservation,
    #[serde(default)]
    pub enable_execute_command: bool,
    /// Scale-in protection (UpdateTaskProtection): until when, epoch
    /// seconds. Neither service scale-in nor a deployment stops it before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_until: Option<Timestamp>,
    /// awsvpc tasks: their interface.
    #[serde(default)]
    pub network: Option<TaskNetwork>,
    /// A service task being taken out of its load balancers: it keeps
    /// running while its targets drain, then gets this stop.
    #[serde(default)]
    pub deactivation: Option<Deactivation>,
    /// Bumped by every desired-side change.
    pub version: i64,
}

/// The wait between deregistering a service task's targets and stopping it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deactivation {
    /// When its targets have drained.
    pub until: Timestamp,
    pub stop: StopRequest,
}

/// What DescribeTasks says a Fargate task runs on (LATEST on Linux).
pub const FARGATE_PLATFORM_VERSION: &str = "1.4.0";

/// A `platformVersion` as RunTask, CreateService and UpdateService take
/// it: only for FARGATE, and only Berth's one version (or LATEST).
pub fn check_platform_version(given: Option<&str>, launch_type: &str) -> Result<(), EcsError> {
    let Some(v) = given else {
        return Ok(());
    };
    if launch_type != "FARGATE" {
        return Err(EcsError::invalid(format!(
            "The platform version must be null when specifying an {launch_type} launch type."
        )));
    }
    if v != "LATEST" && v != FARGATE_PLATFORM_VERSION {
        return Err(EcsError::invalid(format!(
            "platformVersion {v}: Berth's Fargate runs platform version {FARGATE_PLATFORM_VERSION} (LATEST) only."
        )));
    }
    Ok(())
}
/// GiB of ephemeral storage a Fargate task has unless it asks for more.
pub const FARGATE_DEFAULT_EPHEMERAL_GIB: i32 = 20;

impl Task {
    pub fn arn(&self, scope: &Scope) -> String {
        scope.task_arn(&self.cluster, &self.id)
    }

    /// What metering keeps of it, as of `report`. Its size is what it
    /// reserved: the task-level cpu and memory, which Fargate requires.
    pub fn usage(&self, report: Option<&ObservedTask>) -> crate::billing::TaskUsage {
        crate::billing::TaskUsage {
            id: self.id.clone(),
            cluster: self.cluster.clone(),
            family: self.family.clone(),
            service: self.service.clone(),
            launch_type: self.launch_type.clone(),
            capacity_provider: self.capacity_provider.clone(),
            cpu_units: self.reservation.cpu,
            memory_mib: self.reservation.memory,
            started_at: report.and_then(|r| r.pull_started_at.or(r.started_at)),
            stopped_at: report.and_then(|r| r.stopped_at),
        }
    }

    /// Whether it has a host: a task of an Auto Scaling group capacity
    /// provider waits in PROVISIONING without one until capacity joins.
    pub fn placed(&self) -> bool {
        !self.container_instance.is_empty()
    }

    /// Whether it runs on Fargate capacity, hidden from the user.
    pub fn fargate(&self) -> bool {
        self.launch_type == "FARGATE"
    }

    /// The cluster whose hosts it runs on: its own, or the Fargate pool.
    pub fn host_cluster(&self) -> &str {
        if self.fargate() {
            crate::instance::FARGATE_POOL
        } else {
            &self.cluster
        }
    }

    /// Its entry in its host's task index: its id, or for the Fargate pool,
    /// whose hosts run tasks of every cluster, `{cluster}/{id}` (cluster
    /// names never contain `/`).
    pub fn index_entry(&self) -> String {
        if self.fargate() {
            format!("{}/{}", self.cluster, self.id)
        } else {
            self.id.clone()
        }
    }

    pub fn container_arn(&self, scope: &Scope, uuid: &str) -> String {
        scope.container_arn(&self.cluster, &self.id, uuid)
    }

    /// The status the task is in as far as anyone knows: the agent's
    /// report, or PROVISIONING before the first one.
    pub fn last_status(report: Option<&ObservedTask>) -> TaskStatus {
        report.map_or(TaskStatus::Provisioning, |r| r.last_status)
    }

    /// The desired status as ECS shows it: a task that stopped by itself
    /// (its essential container exited, its image could not be pulled) is
    /// STOPPED in both.
    pub fn effective_desired(&self, report: Option<&ObservedTask>) -> DesiredStatus {
        if Task::last_status(report) == TaskStatus::Stopped || self.deactivation.is_some() {
            DesiredStatus::Stopped
        } else {
            self.desired_status
        }
    }

    /// Whether scale-in protection holds at `now`.
    pub fn protected(&self, now: Timestamp) -> bool {
        self.protected_until.is_some_and(|t| t > now)
    }

    /// On its way out: to be stopped, or draining from its load balancers first.
    pub fn leaving(&self) -> bool {
        self.desired_status == DesiredStatus::Stopped || self.deactivation.is_some()
    }

    /// The wire view: the desired record, completed by the agent's report.
    pub fn view(
        &self,
        scope: &Scope,
        report: Option<&ObservedTask>,
        include_tags: bool,
    ) -> w::Task {
        let mut last = Task::last_status(report);
        // Running, but its targets are draining before it is stopped.
        if self.deactivation.is_some() && last == TaskStatus::Running {
            last = TaskStatus::Deactivating;
        }
        let arn = self.arn(scope);
        let defs = self
            .definition
            .container_definitions
            .as_deref()
            .unwrap_or_default();
        let containers = self
            .containers
            .iter()
            .map(|(name, uuid)| {
                let def = defs.iter().find(|d| d.name.as_deref() == Some(name));
                let seen = report.and_then(|r| r.containers.iter().find(|c| &c.name == name));
                let container_status = match seen {
                    Some(c) => c.last_status,
                    None if last == TaskStatus::Stopped => ContainerStatus::Stopped,
                    None => ContainerStatus::Pending,
                };
                w::Container {
                    container_arn: Some(self.container_arn(scope, uuid)),
                    task_arn: Some(arn.clone()),
                    name: Some(name.clone()),
                    image: def.and_then(|d| d.image.clone()),
                    last_status: Some(container_status.as_str().into()),
                    exit_code: seen.and_then(|c| c.exit_code),
                    reason: seen.and_then(|c| c.reason.clone()),
                    runtime_id: seen.and_then(|c| c.runtime_id.clone()),
                    network_bindings: Some(
                        seen.map(|c| c.network_bindings.clone()).unwrap_or_default(),
                    ),
                    network_interfaces: Some(
                        self.network
                            .iter()
                            .map(|n| w::NetworkInterface {
                                attachment_id: Some(n.attachment_id.clone()),
                                private_ipv4_address: Some(n.ip.clone()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    health_status: Some(
                        seen.and_then(|c| c.health_status)
                            .unwrap_or(HealthStatus::Unknown)
                            .as_str()
                            .into(),
                    ),
                    cpu: Some(def.and_then(|d| d.cpu).unwrap_or(0).to_string()),
                    memory: def.and_then(|d| d.memory).map(|m| m.to_string()),
                    memory_reservation: def
                        .and_then(|d| d.memory_reservation)
                        .map(|m| m.to_string()),
                    ..Default::default()
                }
            })
            .collect();
        // A stop the server asked for names the reason; otherwise the
        // agent's (an essential container exited, a pull failed).
        let asked = self
            .stop
            .as_ref()
            .or(self.deactivation.as_ref().map(|d| &d.stop));
        let (stop_code, stopped_reason) = match asked {
            Some(s) => (Some(s.code.as_str().to_string()), Some(s.reason.clone())),
            None => (
                report.and_then(|r| r.stop_code.map(|c| c.as_str().to_string())),
                report.and_then(|r| r.stopped_reason.clone()),
            ),
        };
        let stopping_at = match (asked, report.and_then(|r| r.stopping_at)) {
            (Some(s), Some(r)) => Some(s.at.min(r)),
            (Some(s), None) => Some(s.at),
            (None, r) => r,
        };
        w::Task {
            task_arn: Some(arn),
            cluster_arn: Some(scope.cluster_arn(&self.cluster)),
            task_definition_arn: Some(self.task_definition_arn.clone()),
            // Fargate users never see the host a task runs on.
            container_instance_arn: (!self.fargate() && self.placed())
                .then(|| scope.container_instance_arn(&self.cluster, &self.container_instance)),
            capacity_provider_name: self.capacity_provider.clone(),
            platform_version: self.fargate().then(|| FARGATE_PLATFORM_VERSION.into()),
            platform_family: self.fargate().then(|| "Linux".into()),
            ephemeral_storage: self.fargate().then(|| w::EphemeralStorage {
                size_in_gi_b: Some(
                    self.definition
                        .ephemeral_storage
                        .as_ref()
                        .and_then(|e| e.size_in_gi_b)
                        .unwrap_or(FARGATE_DEFAULT_EPHEMERAL_GIB),
                ),
            }),
            availability_zone: self.availability_zone.clone(),
            launch_type: Some(self.launch_type.clone()),
            group: Some(self.group.clone()),
            started_by: self.started_by.clone(),
            containers: Some(containers),
            cpu: self.definition.cpu.clone(),
            memory: self.definition.memory.clone(),
            overrides: Some(self.overrides.clone().unwrap_or_else(|| w::TaskOverride {
                container_overrides: Some(vec![]),
                ..Default::default()
            })),
            created_at: Some(self.created_at),
            desired_status: Some(self.effective_desired(report).as_str().into()),
            last_status: Some(last.as_str().into()),
            health_status: Some(
                report
                    .and_then(|r| r.health_status)
                    .unwrap_or(HealthStatus::Unknown)
                    .as_str()
                    .into(),
            ),
            connectivity: report.map(|_| "CONNECTED".into()),
            connectivity_at: report
                .and_then(|r| r.pull_started_at)
                .or(report.map(|_| self.created_at)),
            pull_started_at: report.and_then(|r| r.pull_started_at),
            pull_stopped_at: report.and_then(|r| r.pull_stopped_at),
            started_at: report.and_then(|r| r.started_at),
            stopping_at,
            execution_stopped_at: report.and_then(|r| r.execution_stopped_at),
            stopped_at: report.and_then(|r| r.stopped_at),
            stop_code,
            stopped_reason,
            enable_execute_command: Some(self.enable_execute_command),
            attachments: Some(
                self.network
                    .iter()
                    .map(|n| self.eni(scope, n, last, report))
                    .collect(),
            ),
            // Which isolation the task got, once its host said: ECS has no
            // field for it, and task attributes are where ECS puts what
            // the host decided about a task.
            attributes: Some(
                report
                    .and_then(|r| r.isolation.clone())
                    .map(|i| w::Attribute {
                        name: Some(ISOLATION_ATTRIBUTE.into()),
                        value: Some(i),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
            ),
            // Every reported status change counts once, in lifecycle order.
            version: Some(self.version + last as i64),
            tags: include_tags.then(|| self.tags.clone()),
            ..Default::default()
        }
    }
}

impl Task {
    /// The ElasticNetworkInterface attachment ECS shows for an awsvpc task:
    /// PRECREATED until the task runs, ATTACHED while it does, DELETED
    /// once it stopped.
    fn eni(
        &self,
        scope: &Scope,
        n: &TaskNetwork,
        last: TaskStatus,
        report: Option<&ObservedTask>,
    ) -> w::Attachment {
        let kv = |k: &str, v: String| w::KeyValuePair {
            name: Some(k.into()),
            value: Some(v),
        };
        let status = match last {
            TaskStatus::Stopped => "DELETED",
            s if s >= TaskStatus::Running => "ATTACHED",
            _ => "PRECREATED",
        };
        let mut details = vec![
            kv("subnetId", n.subnet_id.clone()),
            kv("networkInterfaceId", n.eni_id.clone()),
        ];
        if let Some(mac) = report.and_then(|r| r.mac_address.clone()) {
            details.push(kv("macAddress", mac));
        }
        details.push(kv(
            "privateDnsName",
            format!(
                "ip-{}.{}.compute.internal",
                n.ip.replace('.', "-"),
                scope.region
            ),
        ));
        details.push(kv("privateIPv4Address", n.ip.clone()));
        w::Attachment {
            id: Some(n.attachment_id.clone()),
            r#type: Some("ElasticNetworkInterface".into()),
            status: Some(status.into()),
            details: Some(details),
        }
    }
}

/// Applies RunTask/StartTask `overrides` to a task definition: the
/// containers' command, environment, cpu and memory, and the task-level
/// cpu, memory and roles. Naming a container the definition does not have
/// is an error.
pub fn apply_overrides(
    def: &w::TaskDefinition,
    overrides: Option<&w::TaskOverride>,
) -> Result<w::TaskDefinition, EcsError> {
    let mut def = def.clone();
    let Some(o) = overrides else {
        return Ok(def);
    };
    let containers = def.container_definitions.get_or_insert_with(Vec::new);
    let mut seen = HashSet::new();
    for co in o.container_overrides.iter().flatten() {
        let name = co.name.as_deref().unwrap_or_default();
        if name.is_empty() {
            return Err(EcsError::invalid(
                "overrides.containerOverrides: every override needs the container's name.",
            ));
        }
        if !seen.insert(name) {
            return Err(EcsError::invalid(format!(
                "overrides.containerOverrides: container {name} is overridden more than once."
            )));
        }
        let Some(c) = containers
            .iter_mut()
            .find(|c| c.name.as_deref() == Some(name))
        else {
            return Err(EcsError::invalid(format!(
                "Override for container named {name} is not a container in the TaskDefinition."
            )));
        };
        if let Some(cmd) = &co.command {
            c.command = Some(cmd.clone());
        }
        if let Some(env) = &co.environment {
            // Overrides add to the definition's environment and win on a clash.
            let mut merged: Vec<w::KeyValuePair> = c
                .environment
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|kv| !env.iter().any(|o| o.name == kv.name))
                .collect();
            merged.extend(env.iter().cloned());
            c.environment = Some(merged);
        }
        if let Some(cpu) = co.cpu {
            if cpu < 0 {
                return Err(EcsError::invalid(format!(
                    "overrides.containerOverrides[{name}].cpu must be 0 or more."
                )));
            }
            c.cpu = Some(cpu);
        }
        if let Some(m) = co.memory {
            if m < 6 {
                return Err(EcsError::invalid(format!(
                    "overrides.containerOverrides[{name}].memory must be at least 6 MiB."
                )));
            }
            c.memory = Some(m);
        }
        if let Some(m) = co.memory_reservation {
            if m < 6 {
                return Err(EcsError::invalid(format!(
                    "overrides.containerOverrides[{name}].memoryReservation must be at least 6 MiB."
                )));
            }
            c.memory_reservation = Some(m);
        }
        if let (Some(hard), Some(soft)) = (c.memory, c.memory_reservation) {
            if soft > hard {
                return Err(EcsError::invalid(format!(
                    "Invalid setting for container '{name}'. The memory value must be greater than the memoryReservation value."
                )));
            }
        }
    }
    if let Some(cpu) = &o.cpu {
        crate::taskdef::parse_cpu(cpu).ok_or_else(|| {
            EcsError::invalid(format!("overrides.cpu: '{cpu}' is not a CPU value."))
        })?;
        def.cpu = Some(cpu.clone());
    }
    if let Some(memory) = &o.memory {
        crate::taskdef::parse_memory(memory).ok_or_else(|| {
            EcsError::invalid(format!(
                "overrides.memory: '{memory}' is not a memory value."
            ))
        })?;
        def.memory = Some(memory.clone());
    }
    if o.task_role_arn.is_some() {
        def.task_role_arn = o.task_role_arn.clone();
    }
    if o.execution_role_arn.is_some() {
        def.execution_role_arn = o.execution_role_arn.clone();
    }
    Ok(def)
}

/// What a task of `def` reserves on an instance.
pub fn reservation(def: &w::TaskDefinition) -> Reservation {
    let containers = def.container_definitions.as_deref().unwrap_or_default();
    let task_cpu = def.cpu.as_deref().and_then(crate::taskdef::parse_cpu);
    let task_memory = def.memory.as_deref().and_then(crate::taskdef::parse_memory);
    let cpu = task_cpu.unwrap_or_else(|| {
        containers
            .iter()
            .map(|c| i64::from(c.cpu.unwrap_or(0)))
            .sum()
    });
    let memory = task_memory.unwrap_or_else(|| {
        containers
            .iter()
            .map(|c| i64::from(c.memory_reservation.or(c.memory).unwrap_or(0)))
            .sum()
    });
    let mode = def.network_mode.as_deref().unwrap_or("bridge");
    let mut r = Reservation {
        cpu,
        memory,
        ..Default::default()
    };
    if mode == "none" || mode == "awsvpc" {
        return r;
    }
    for c in containers {
        for p in c.port_mappings.iter().flatten() {
            let udp = p.protocol.as_deref() == Some("udp");
            let host = match mode {
                "host" => p.host_port.or(p.container_port),
                _ => p.host_port.filter(|h| *h > 0),
            };
            match host.and_then(|h| u16::try_from(h).ok()) {
                Some(h) if udp => r.udp_ports.push(h),
                Some(h) => r.tcp_ports.push(h),
                None => r.dynamic_ports += 1,
            }
        }
    }
    r
}

/// What the tasks on one instance hold, counted from the tasks that are
/// not STOPPED.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu: i64,
    pub memory: i64,
    pub tcp_ports: std::collections::BTreeSet<u16>,
    pub udp_ports: std::collections::BTreeSet<u16>,
    /// Ports from the ephemeral range, reserved (not yet bound) or bound.
    pub dynamic_ports: u32,
    pub running: u32,
    pub pending: u32,
    pub groups: std::collections::HashMap<String, u32>,
}

impl Usage {
    /// Adds a task that is not STOPPED, with what its agent reported.
    pub fn add(&mut self, task: &Task, report: Option<&ObservedTask>) {
        self.add_held(&task.reservation, &task.group, report);
    }

    /// Adds a task that is not STOPPED by its claim.
    pub fn add_claim(&mut self, claim: &Claim, report: Option<&ObservedTask>) {
        self.add_held(&claim.reservation, &claim.group, report);
    }

    fn add_held(&mut self, r: &Reservation, group: &str, report: Option<&ObservedTask>) {
        self.cpu += r.cpu;
        self.memory += r.memory;
        self.tcp_ports.extend(&r.tcp_ports);
        self.udp_ports.extend(&r.udp_ports);
        // Bound dynamic ports are known exactly once reported; until then
        // the reservation stands for them.
        let bound: Vec<(u16, bool)> = report
            .into_iter()
            .flat_map(|rep| &rep.containers)
            .flat_map(|c| &c.network_bindings)
            .filter_map(|b| {
                let port = u16::try_from(b.host_port?).ok()?;
                Some((port, b.protocol.as_deref() == Some("udp")))
            })
            .filter(|(p, udp)| {
                if *udp {
                    !r.udp_ports.contains(p)
                } else {
                    !r.tcp_ports.contains(p)
                }
            })
            .collect();
        if bound.is_empty() {
            self.dynamic_ports += r.dynamic_ports;
        } else {
            self.dynamic_ports += bound.len() as u32;
            for (p, udp) in bound {
                if udp {
                    self.udp_ports.insert(p);
                } else {
                    self.tcp_ports.insert(p);
                }
            }
        }
        if Task::last_status(report).is_pending() {
            self.pending += 1;
        } else {
            self.running += 1;
        }
        *self.groups.entry(group.to_string()).or_default() += 1;
    }

    /// Adds what another usage holds (one task's, say) to this one.
    pub fn absorb(&mut self, other: &Usage) {
        self.cpu += other.cpu;
        self.memory += other.memory;
        self.tcp_ports.extend(&other.tcp_ports);
        self.udp_ports.extend(&other.udp_ports);
        self.dynamic_ports += other.dynamic_ports;
        self.running += other.running;
        self.pending += other.pending;
        for (g, n) in &other.groups {
            *self.groups.entry(g.clone()).or_default() += n;
        }
    }

    /// Takes away what `other` added with [`Usage::absorb`]. A host port
    /// is held by one task at a time, so its removal frees it.
    pub fn release(&mut self, other: &Usage) {
        self.cpu -= other.cpu;
        self.memory -= other.memory;
        for p in &other.tcp_ports {
            self.tcp_ports.remove(p);
        }
        for p in &other.udp_ports {
            self.udp_ports.remove(p);
        }
        self.dynamic_ports = self.dynamic_ports.saturating_sub(other.dynamic_ports);
        self.running = self.running.saturating_sub(other.running);
        self.pending = self.pending.saturating_sub(other.pending);
        for (g, n) in &other.groups {
            if let Some(have) = self.groups.get_mut(g) {
                *have = have.saturating_sub(*n);
                if *have == 0 {
                    self.groups.remove(g);
                }
            }
        }
    }
}

/// Checks RunTask's `group` and `startedBy`.
pub fn validate_labels(group: Option<&str>, started_by: Option<&str>) -> Result<(), EcsError> {
    if let Some(g) = group {
        let ok = !g.is_empty()
            && g.len() <= 255
            && g.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_:".contains(c));
        if !ok {
            return Err(EcsError::invalid(format!(
                "group '{g}' is invalid: up to 255 letters, numbers, hyphens, underscores and colons."
            )));
        }
    }
    if let Some(s) = started_by {
        let ok = s.len() <= 128
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_/:.".contains(c));
        if !ok {
            return Err(EcsError::invalid(format!(
                "startedBy '{s}' is invalid: up to 128 letters, numbers, hyphens, underscores, slashes, colons and periods."
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn observed_state_is_stored_as_the_report_was_and_reads_old_records() {
        let report = TaskReport {
            task_arn: "arn:t".into(),
            last_status: TaskStatus::Stopped,
            containers: vec![berth_wire::agent::ContainerReport {
                name: "c".into(),
                runtime_id: Some("abc".into()),
                last_status: ContainerStatus::Stopped,
                exit_code: Some(1),
                health_status: Some(HealthStatus::Unhealthy),
                ..Default::default()
            }],
            health_status: Some(HealthStatus::Unknown),
            started_at: Some(1.0),
            stopped_at: Some(2.0),
            stop_code: Some(StopCode::EssentialContainerExited),
            stopped_reason: Some("Essential container in task exited".into()),
            ..Default::default()
        };
        let wire = serde_json::to_value(&report).expect("report");
        let observed = ObservedTask::from(report);
        assert_eq!(serde_json::to_value(&observed).expect("observed"), wire);
        // A record written before the types were split.
        let old = r#"{"taskArn":"arn:t","lastStatus":"RUNNING","containers":[{"name":"c","lastStatus":"RUNNING","networkBindings":[]}]}"#;
        let read: ObservedTask = serde_json::from_str(old).expect("old record");
        assert_eq!(read.last_status, TaskStatus::Running);
        assert_eq!(read.containers[0].last_status, ContainerStatus::Running);
        assert!(
            serde_json::from_str::<ObservedTask>(r#"{"taskArn":"t","lastStatus":"NAPPING"}"#)
                .is_err()
        );
    }

    #[test]
    fn released_usage_gives_back_exactly_what_was_absorbed() {
        let one = Usage {
            cpu: 256,
            memory: 512,
            tcp_ports: [8080].into(),
            udp_ports: [53].into(),
            dynamic_ports: 2,
            running: 1,
            pending: 0,
            groups: [("service:web".to_string(), 1)].into(),
        };
        let other = Usage {
            cpu: 128,
            memory: 64,
            tcp_ports: [9090].into(),
            pending: 1,
            groups: [("service:web".to_string(), 1)].into(),
            ..Usage::default()
        };
        let mut host = Usage::default();
        host.absorb(&one);
        host.absorb(&other);
        assert_eq!(
            (host.cpu, host.memory, host.running, host.pending),
            (384, 576, 1, 1)
        );
        assert_eq!(host.groups["service:web"], 2);
        host.release(&one);
        assert_eq!(host, other);
        host.release(&other);
        assert_eq!(host, Usage::default());
    }
    use super::*;

    fn container(name: &str) -> w::ContainerDefinition {
        w::ContainerDefinition {
            name: Some(name.into()),
            image: Some("busybox".into()),
            memory: Some(64),
            cpu: Some(128),
            environment: Some(vec![w::KeyValuePair {
                name: Some("A".into()),
                value: Some("1".into()),
            }]),
            ..Default::default()
        }
    }

    fn def(containers: Vec<w::ContainerDefinition>) -> w::TaskDefinition {
        w::TaskDefinition {
            family: Some("f".into()),
            container_definitions: Some(containers),
            ..Default::default()
        }
    }

    #[test]
    fn statuses_only_move_forwards() {
        assert!(TaskStatus::Pending.can_become(TaskStatus::Running));
        assert!(TaskStatus::Pending.can_become(TaskStatus::Stopped));
        assert!(!TaskStatus::Stopped.can_become(TaskStatus::Running));
        assert!(!TaskStatus::Running.can_become(TaskStatus::Pending));
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskStatus::parse("DELETED"), None);
    }

    #[test]
    fn overrides_replace_command_and_merge_environment() {
        let d = def(vec![container("web"), container("side")]);
        let o = w::TaskOverride {
            container_overrides: Some(vec![w::ContainerOverride {
                name: Some("web".into()),
                command: Some(vec!["echo".into(), "hi".into()]),
                environment: Some(vec![
                    w::KeyValuePair {
                        name: Some("A".into()),
                        value: Some("2".into()),
                    },
                    w::KeyValuePair {
                        name: Some("B".into()),
                        value: Some("3".into()),
                    },
                ]),
                memory: Some(128),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let out = apply_overrides(&d, Some(&o)).expect("valid");
        let web = &out.container_definitions.as_ref().expect("containers")[0];
        assert_eq!(
            web.command.as_deref(),
            Some(&["echo".to_string(), "hi".to_string()][..])
        );
        let env: Vec<_> = web
            .environment
            .iter()
            .flatten()
            .map(|kv| {
                (
                    kv.name.clone().unwrap_or_default(),
                    kv.value.clone().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(env, [("A".into(), "2".into()), ("B".into(), "3".into())]);
        assert_eq!(web.memory, Some(128));
        let unknown = w::TaskOverride {
            container_overrides: Some(vec![w::ContainerOverride {
                name: Some("nope".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let e = apply_overrides(&d, Some(&unknown)).expect_err("unknown container");
        assert_eq!(e.code(), "InvalidParameterException");
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn reservations_follow_ecs_accounting() {
        let mut a = container("a");
        a.memory_reservation = Some(32);
        a.port_mappings = Some(vec![
            w::PortMapping {
                container_port: Some(80),
                host_port: Some(8080),
                ..Default::default()
            },
            w::PortMapping {
                container_port: Some(81),
                ..Default::default()
            },
            w::PortMapping {
                container_port: Some(53),
                host_port: Some(5353),
                protocol: Some("udp".into()),
                ..Default::default()
            },
        ]);
        let d = def(vec![a.clone(), container("b")]);
        let r = reservation(&d);
        assert_eq!(r.cpu, 256);
        assert_eq!(r.memory, 32 + 64);
        assert_eq!(r.tcp_ports, [8080]);
        assert_eq!(r.udp_ports, [5353]);
        assert_eq!(r.dynamic_ports, 1);
        let mut host = def(vec![a]);
        host.network_mode = Some("host".into());
        host.cpu = Some("1024".into());
        host.memory = Some("512".into());
        let r = reservation(&host);
        assert_eq!((r.cpu, r.memory), (1024, 512));
        assert_eq!(r.tcp_ports, [8080, 81]);
        assert_eq!(r.dynamic_ports, 0);
    }

    #[test]
    fn labels_are_checked() {
        assert!(validate_labels(Some("family:web"), Some("me")).is_ok());
        assert!(validate_labels(Some("bad group"), None).is_err());
        assert!(validate_labels(None, Some(&"x".repeat(129))).is_err());
    }
}
