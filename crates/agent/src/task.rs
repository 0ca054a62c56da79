//! One task on this host, driven through ECS's lifecycle: PENDING (pull,
//! create), ACTIVATING, RUNNING, then DEACTIVATING, STOPPING (SIGTERM, then
//! SIGKILL after each container's stopTimeout), DEPROVISIONING, STOPPED.
//! Each change is published as a whole [`TaskReport`].
//!
//! A driver can start from scratch or adopt a task whose containers already
//! exist (after an agent restart): it inspects them and carries on from
//! what it finds, so containers that exited while the agent was away stop
//! the task as they would have with the agent watching.

use crate::logs::Logs;
use crate::report::Reporter;
use crate::spec::{self, container_spec, creation_order, essential, stop_timeout};
use berth_runtime::{
    ContainerRuntime, ContainerState, EventKind, Health, PullBehavior, TaskLimits,
};
use berth_wire::agent::{
    ContainerReport, ContainerStatus, DesiredStatus, DesiredTask, HealthStatus, StopCode,
    TaskReport, TaskStatus,
};
use berth_wire::ecs as w;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the runner tells a task's driver.
#[derive(Debug)]
pub enum Input {
    /// The server's latest wish for the task.
    Desired(Box<DesiredTask>),
    /// The runtime saw something happen to one of its containers.
    Event(berth_runtime::Event),
    /// Events may have been missed: look at every container again.
    Resync,
    /// The server is done with the task: remove its containers and end.
    Forget,
}

/// What a driver needs from the agent.
#[derive(Clone)]
pub struct Ctx {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub instance: String,
    /// The cluster the host belongs to (the Fargate pool for Fargate hosts).
    pub cluster: String,
    pub region: String,
    pub pull: PullBehavior,
    pub reporter: Reporter,
    pub logs: Logs,
    /// Where a task asks the server for its secrets.
    pub asks: tokio::sync::mpsc::UnboundedSender<crate::ServerAsk>,
    /// The task endpoint: role credentials and the API for containers.
    pub endpoint: crate::endpoint::Endpoint,
    /// Where awslogs output goes.
    pub shipping: Arc<crate::awslogs::Shipping>,
    /// This host's tasks on their way to RUNNING.
    pub starts: crate::starts::Starts,
    /// The agent's data directory (FireLens configurations live there).
    pub data_dir: std::path::PathBuf,
    /// What keeps this host's Fargate tasks apart.
    pub isolation: crate::Isolation,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Running,
    Stopped,
}

struct Container {
    def: w::ContainerDefinition,
    name: String,
    id: Option<String>,
    status: Status,
    /// Started at least once.
    started: bool,
    exit_code: Option<i32>,
    reason: Option<String>,
    health: Option<Health>,
    bindings: Vec<w::NetworkBinding>,
    last_start: Option<Instant>,
    restarts: u32,
    /// Copies its output into the task's logs until its stream ends.
    follower: Option<tokio::task::JoinHandle<()>>,
    /// awslogs: sends that copy to the Logs API, for the task's life.
    shipper: Option<crate::awslogs::Shipper>,
    /// Bridge mode: its address on the bridge since it last started,
    /// learnt once per start for its task's filters.
    bridge: Option<(std::net::Ipv4Addr, berth_runtime::Attachment)>,
}

impl Container {
    fn report(&self) -> ContainerReport {
        ContainerReport {
            name: self.name.clone(),
            runtime_id: self.id.clone(),
            last_status: match self.status {
                Status::Pending => ContainerStatus::Pending,
                Status::Running => ContainerStatus::Running,
                Status::Stopped => ContainerStatus::Stopped,
            },
            exit_code: self.exit_code,
            reason: self.reason.clone(),
            network_bindings: self.bindings.clone(),
            health_status: self.def.health_check.as_ref().map(|_| match self.health {
                Some(Health::Healthy) => HealthStatus::Healthy,
                Some(Health::Unhealthy) => HealthStatus::Unhealthy,
                _ => HealthStatus::Unknown,
            }),
        }
    }
}

/// A warm pause container being made (or made): its id, or None if it
/// could not be.
pub type WarmPause = futures::future::Shared<futures::future::BoxFuture<'static, Option<String>>>;

pub struct Driver {
    ctx: Ctx,
    desired: DesiredTask,
    report: TaskReport,
    containers: Vec<Container>,
    /// awsvpc: the container holding the task's network namespace.
    pause: Option<String>,
    /// awsvpc: the ingress its namespace's filter lets in now, once set.
    filtered: Option<(
        Vec<berth_wire::agent::AllowedIngress>,
        Option<Vec<berth_wire::agent::AllowedIngress>>,
    )>,
    /// awsvpc: a warm namespace still being made at the task's address.
    warm: Option<WarmPause>,
    /// The cgroup the task's limits go on, when not one named after the
    /// task: the one its warm sandbox was booted in.
    cgroup_name: Option<String>,
    rx: mpsc::UnboundedReceiver<Input>,
    forget: bool,
    /// The task's secrets once fetched; in memory only.
    secrets: Option<Vec<berth_wire::agent::SecretValue>>,
    /// It came with a saved report or containers (an agent restart, a
    /// warm namespace): the agent has touched it before.
    adopted: bool,
    /// Held from the start of a new task until it runs or stops.
    starting: Option<crate::starts::Starting>,
    /// The task's cpu limit is on its cgroup: a sandboxed task's goes on
    /// once it runs (also after an agent restart mid-start).
    cpu_limited: bool,
}

/// How a task came to stop, when the agent decided it.
struct Stop {
    code: StopCode,
    reason: String,
}

impl Driver {
    /// `saved`: the last report published before a restart; `existing`:
    /// container name to id, for containers the runtime still has.
    pub fn new(
        ctx: Ctx,
        desired: DesiredTask,
        saved: Option<TaskReport>,
        existing: HashMap<String, String>,
        warm: Option<WarmPause>,
        rx: mpsc::UnboundedReceiver<Input>,
    ) -> Driver {
        // Containers that log through a FireLens router start after it
        // (and stop before it), as ECS orders them.
        let router = crate::firelens::router(&desired).map(|(name, ..)| name);
        let containers = spec::containers(&desired)
            .iter()
            .map(|d| {
                let mut d = d.clone();
                if let Some(router) = router.as_ref().filter(|_| crate::firelens::routed(&d)) {
                    let deps = d.depends_on.get_or_insert_with(Vec::new);
                    if !deps
                        .iter()
                        .any(|x| x.container_name.as_ref() == Some(router))
                    {
                        deps.push(w::ContainerDependency {
                            container_name: Some(router.clone()),
                            condition: Some("START".into()),
                        });
                    }
                }
                d
            })
            .collect::<Vec<_>>()
            .iter()
            .map(|d| {
                let name = d.name.clone().unwrap_or_default();
                let old = saved
                    .as_ref()
                    .and_then(|s| s.containers.iter().find(|c| c.name == name));
                Container {
                    id: existing.get(&name).cloned(),
                    def: d.clone(),
                    status: Status::Pending,
                    started: old.is_some_and(|c| c.last_status != ContainerStatus::Pending),
                    exit_code: old.and_then(|c| c.exit_code),
                    reason: old.and_then(|c| c.reason.clone()),
                    health: None,
                    bindings: old.map(|c| c.network_bindings.clone()).unwrap_or_default(),
                    last_start: None,
                    restarts: 0,
                    follower: None,
                    shipper: None,
                    bridge: None,
                    name,
                }
            })
            .collect();
        let adopted = saved.is_some() || !existing.is_empty();
        let isolation = if desired.launch_type == "FARGATE" {
            ctx.isolation.name()
        } else {
            crate::Isolation::Container.name()
        };
        let report = saved.unwrap_or_else(|| TaskReport {
            task_arn: desired.task_arn.clone(),
            last_status: TaskStatus::Pending,
            isolation: Some(isolation.to_string()),
            ..Default::default()
        });
        Driver {
            ctx,
            pause: existing.get(spec::PAUSE_NAME).cloned(),
            filtered: None,
            warm,
            cgroup_name: None,
            desired,
            report,
            containers,
            rx,
            forget: false,
            secrets: None,
            adopted,
            starting: None,
            cpu_limited: false,
        }
    }

    fn publish(&mut self) {
        if matches!(self.report.last_status.as_str(), "RUNNING" | "STOPPED") {
            self.starting = None;
        }
        self.report.containers = self.containers.iter().map(Container::report).collect();
        self.report.health_status = Some(self.task_health());
        self.ctx.reporter.publish(self.report.clone());
        self.describe();
    }

    /// Gives the task endpoint the task as it is now, for its metadata.
    fn describe(&self) {
        if self.endpoint_reaches() && !self.stopped() {
            self.ctx.endpoint.describe(crate::metadata::Snapshot {
                desired: self.desired.clone(),
                report: self.report.clone(),
                cluster: spec::task_cluster(&self.desired.task_arn).to_string(),
            });
        }
    }

    /// Whether the task's containers reach the task endpoint
    /// (169.254.170.2): bridge and awsvpc tasks by their addresses,
    /// host-network ones by the host's rule; not `none`.
    fn endpoint_reaches(&self) -> bool {
        self.desired.definition.network_mode.as_deref() != Some("none")
    }

    /// Whether the task runs on a kernel of its own: a Fargate task on a
    /// host that gives them one. A task taken over after a restart keeps
    /// what it started with.
    fn sandboxed(&self) -> bool {
        self.report.isolation.as_deref() == Some(crate::Isolation::GVISOR)
    }

    fn host_network(&self) -> bool {
        self.desired.definition.network_mode.as_deref() == Some("host")
    }

    fn set_status(&mut self, s: TaskStatus) {
        if self.note_status(s) {
            self.publish();
        }
    }

    /// The status changes without a report of its own: the next one says
    /// it. True if it changed.
    fn note_status(&mut self, s: TaskStatus) -> bool {
        if self.report.last_status == s {
            return false;
        }
        tracing::info!(task = %self.desired.task_arn, status = s.as_str(), "task");
        self.report.last_status = s;
        true
    }

    fn task_health(&self) -> HealthStatus {
        let checked: Vec<&Container> = self
            .containers
            .iter()
            .filter(|c| essential(&c.def) && c.def.health_check.is_some())
            .collect();
        if checked.is_empty() {
            HealthStatus::Unknown
        } else if checked.iter().any(|c| c.health == Some(Health::Unhealthy)) {
            HealthStatus::Unhealthy
        } else if checked.iter().all(|c| c.health == Some(Health::Healthy)) {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unknown
        }
    }

    fn stopped(&self) -> bool {
        self.report.last_status == TaskStatus::Stopped
    }

    fn wants_stop(&self) -> bool {
        self.desired.desired_status == DesiredStatus::Stopped
    }

    /// Applies what came in without waiting; false once the runner is gone.
    fn drain(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(input) => self.apply(input),
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.forget = true;
                    return false;
                }
            }
        }
    }

    fn apply(&mut self, input: Input) {
        match input {
            Input::Desired(d) => self.desired = *d,
            Input::Forget => self.forget = true,
            Input::Resync => {}
            Input::Event(e) => {
                let Some(c) = self
                    .containers
                    .iter_mut()
                    .find(|c| c.id.as_deref() == Some(e.id.as_str()))
                else {
                    return;
                };
                match e.kind {
                    EventKind::Died { exit_code } => {
                        c.status = Status::Stopped;
                        c.exit_code = exit_code.and_then(|x| i32::try_from(x).ok());
                    }
                    EventKind::Health(h) => c.health = Some(h),
                    EventKind::OutOfMemory => {
                        c.reason =
                            Some("OutOfMemoryError: Container killed due to memory usage".into())
                    }
                    EventKind::Started | EventKind::Removed => {}
                }
            }
        }
    }

    /// Looks at every container the runtime has for this task.
    async fn inspect_all(&mut self) {
        for i in 0..self.containers.len() {
            let Some(id) = self.containers[i].id.clone() else {
                continue;
            };
            match self.ctx.runtime.inspect(&id).await {
                Ok(Some(info)) => {
                    let c = &mut self.containers[i];
                    match info.state {
                        ContainerState::Running => {
                            c.status = Status::Running;
                            c.started = true;
                            c.last_start.get_or_insert_with(Instant::now);
                        }
                        ContainerState::Exited if info.started_at.is_some() => {
                            c.status = Status::Stopped;
                            c.started = true;
                            c.exit_code = info.exit_code.and_then(|x| i32::try_from(x).ok());
                            if info.oom_killed {
                                c.reason = Some(
                                    "OutOfMemoryError: Container killed due to memory usage".into(),
                                );
                            }
                        }
                        _ => {}
                    }
                    c.health = info.health.or(c.health);
                    if c.bindings.is_empty() {
                        c.bindings = bindings(&info.ports);
                    }
                }
                Ok(None) => {
                    let c = &mut self.containers[i];
                    c.id = None;
                    if c.started {
                        c.status = Status::Stopped;
                        c.reason.get_or_insert_with(|| {
                            "The container was removed outside the agent.".into()
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "inspect failed"),
            }
        }
    }

    pub async fn run(mut self) {
        self.inspect_all().await;
        if !self.stopped() {
            // A task new to this agent is PENDING on the server already: a
            // report saying so would only cost a store commit while the
            // engine creates its containers.
            if self.adopted {
                self.publish();
            }
            if matches!(self.report.last_status.as_str(), "PENDING" | "PROVISIONING") {
                self.starting = Some(self.ctx.starts.begin());
            }
            if let Err(stop) = self.start().await {
                self.stop(Some(stop)).await;
            }
            self.supervise().await;
        }
        // Its containers have exited: nothing of it may use its role now.
        self.ctx.endpoint.forget(&self.desired.task_arn).await;
        // Done: report again whenever asked until the server lets go.
        while !self.forget {
            match self.rx.recv().await {
                Some(i) => self.apply(i),
                None => break,
            }
        }
        self.remove().await;
    }

    /// The task-level limits, if the task has any (and so a cgroup).
    fn task_limits(&self) -> Option<TaskLimits> {
        Some(spec::task_limits(&self.desired)).filter(|l| *l != TaskLimits::default())
    }

    /// The task's cgroup, when it has task-level limits and the runtime
    /// can give it one; without, its containers carry the limits.
    ///
    /// A sandboxed task's cpu limit waits until it runs: the sandbox's
    /// kernel does the work of starting the task's containers (joining
    /// them, loading their programs under ptrace) inside the task's cgroup,
    /// and under a quarter of a CPU that work took longer than everything
    /// else on the way to RUNNING. The limit is for the task's own
    /// processes, as with runc, whose work to start a container is not
    /// counted against it; memory bounds the sandbox from the start.
    async fn task_cgroup(&mut self) -> Option<String> {
        let mut limits = self.task_limits()?;
        if self.sandboxed() && !self.cpu_limited {
            limits.cpu_units = None;
        }
        let name = self.cgroup_name();
        match self.ctx.runtime.task_cgroup(name, limits).await {
            Ok(parent) => parent,
            Err(e) => {
                tracing::warn!(task = %self.desired.task_arn, error = %e, "no task cgroup: each container carries the task's limits");
                None
            }
        }
    }

    /// Puts a sandboxed task's cpu limit on its cgroup, once it runs.
    async fn limit_cpu(&mut self) {
        if std::mem::replace(&mut self.cpu_limited, true) || !self.sandboxed() {
            return;
        }
        let Some(limits) = self.task_limits().filter(|l| l.cpu_units.is_some()) else {
            return;
        };
        if let Err(e) = self
            .ctx
            .runtime
            .task_cgroup(self.cgroup_name(), limits)
            .await
        {
            tracing::warn!(task = %self.desired.task_arn, error = %e, "the task's cpu limit could not be set");
        }
    }

    fn cgroup_name(&self) -> &str {
        self.cgroup_name
            .as_deref()
            .unwrap_or_else(|| spec::task_id(&self.desired.task_arn))
    }

    /// A sandboxed task takes the sandbox booted ahead at its address, and
    /// with it the cgroup it was booted in, which gets the task's limits
    /// (found again from the sandbox's label after an agent restart). A
    /// warm namespace that is no sandbox is no use to it and goes.
    async fn take_warm_sandbox(&mut self) {
        if self.pause.is_none() {
            if let Some(w) = self.warm.take() {
                self.pause = w.await;
            }
        }
        if self.cgroup_name.is_some() {
            return;
        }
        let Some(id) = self.pause.clone() else { return };
        let rt = &self.ctx.runtime;
        let labels = match rt.inspect(&id).await {
            Ok(Some(info)) => info.labels,
            _ => return,
        };
        if let Some(name) = labels.get(spec::WARM_CGROUP_LABEL) {
            self.cgroup_name = Some(name.clone());
        } else if labels.contains_key(spec::WARM_LABEL) {
            crate::runner::remove_warm(&**rt, &id).await;
            self.pause = None;
        }
    }

    /// Pulls and creates, unless the task is past that already.
    async fn start(&mut self) -> Result<(), Stop> {
        let fresh = matches!(self.report.last_status.as_str(), "PENDING" | "PROVISIONING");
        // With prefer-cached, a cached image needs no registry and no
        // look first: create, as `docker run` does, and pull only when the
        // engine says the image is missing.
        let lazy = self.ctx.pull == PullBehavior::PreferCached;
        if fresh {
            if let Some(reason) = spec::unsupported(&self.desired) {
                for c in &mut self.containers {
                    c.status = Status::Stopped;
                    c.reason = Some(reason.clone());
                }
                return Err(Stop {
                    code: StopCode::TaskFailedToStart,
                    reason,
                });
            }
        }
        // Registry credentials are secrets too: fetched before the pull.
        if fresh && !self.wants_stop() {
            self.secrets().await?;
        }
        if fresh && !self.wants_stop() {
            self.report.pull_started_at.get_or_insert_with(now);
            // Nothing is pulled here with prefer-cached: the times go with
            // the next report instead of costing a report (and a store
            // commit) of their own while the engine creates the container.
            if !lazy {
                self.publish();
            }
            let mut images: Vec<String> = self
                .containers
                .iter()
                .filter(|c| c.id.is_none() && !lazy)
                .filter_map(|c| c.def.image.clone())
                .collect();
            images.dedup();
            for image in images {
                self.pull(&image).await?;
                if !self.drain() || self.wants_stop() {
                    break;
                }
            }
            self.report.pull_stopped_at = Some(now());
            if !lazy {
                self.publish();
            }
        }
        if self.wants_stop() {
            return Ok(());
        }
        let defs: Vec<w::ContainerDefinition> =
            self.containers.iter().map(|c| c.def.clone()).collect();
        if self.sandboxed() {
            self.take_warm_sandbox().await;
        }
        let cgroup = if self.containers.iter().any(|c| c.id.is_none()) {
            self.task_cgroup().await
        } else {
            None
        };
        if self.has_role() {
            if let Err(reason) = self.ctx.endpoint.credentials(&self.desired.task_arn).await {
                if fresh {
                    return Err(self.failed_to_start(reason));
                }
                tracing::warn!(task = %self.desired.task_arn, %reason, "no task role credentials for a task the agent took over");
            }
        }
        if let Err(reason) = self.network(cgroup.as_deref()).await {
            return Err(self.failed_to_start(reason));
        }
        if let Err(reason) = self.namespaces().await {
            return Err(self.failed_to_start(reason));
        }
        // Its containers may ask for their metadata as soon as they run.
        self.describe();
        let to_create = self.containers.iter().any(|c| c.id.is_none() && !c.started);
        let secrets = if to_create {
            self.secrets().await?
        } else {
            vec![]
        };
        for i in creation_order(&defs) {
            if self.containers[i].id.is_some() || self.containers[i].started {
                continue;
            }
            let mut s = container_spec(
                &self.desired,
                &self.containers[i].def,
                &self.ctx.instance,
                &self.ctx.region,
                cgroup.as_deref(),
                self.pause.as_deref(),
            );
            if self.sandboxed() {
                s.sandbox = self.pause.clone().map(berth_runtime::Sandbox::Join);
            }
            spec::add_secrets(&mut s, &self.containers[i].name, &secrets);
            let task_id = spec::task_id(&self.desired.task_arn).to_string();
            if let Err(reason) =
                crate::awslogs::target(&self.containers[i].def, &task_id, &self.ctx.region)
            {
                self.containers[i].status = Status::Stopped;
                self.containers[i].reason = Some(reason.clone());
                return Err(Stop {
                    code: StopCode::TaskFailedToStart,
                    reason,
                });
            }
            if self.has_role() {
                let id = self.ctx.endpoint.credentials_id(&self.desired.task_arn);
                spec::add_task_role(&mut s, &id, &self.ctx.region);
            }
            if self.endpoint_reaches() {
                let id = self
                    .ctx
                    .endpoint
                    .metadata_id(&self.desired.task_arn, &self.containers[i].name);
                spec::add_metadata(&mut s, &id, &self.desired.launch_type);
            }
            if let Err(reason) = self.firelens(i, &mut s) {
                self.containers[i].status = Status::Stopped;
                self.containers[i].reason = Some(reason.clone());
                return Err(Stop {
                    code: StopCode::TaskFailedToStart,
                    reason,
                });
            }
            let created = match self.ctx.runtime.create(&s).await {
                Ok(id) => Ok(id),
                Err(berth_runtime::RuntimeError::NotFound(m))
                    if lazy && m.contains("No such image") =>
                {
                    self.publish();
                    self.pull(&s.image).await?;
                    self.report.pull_stopped_at = Some(now());
                    self.ctx.runtime.create(&s).await
                }
                // A container left over from a create the agent did not see
                // finish: remove it and try once more.
                Err(berth_runtime::RuntimeError::Rejected(m)) if m.contains("already in use") => {
                    let _ = self.ctx.runtime.remove(&s.name).await;
                    self.ctx.runtime.create(&s).await
                }
                Err(e) => Err(e),
            };
            let failed = match created {
                Ok(id) => {
                    self.containers[i].id = Some(id.clone());
                    // The group and stream exist before anything is written.
                    match self.awslogs_job(i, &id) {
                        Some(job) => self.ctx.shipping.prepare(&job).await.err(),
                        None => None,
                    }
                }
                Err(e) => Some(format!("CannotCreateContainerError: {e}")),
            };
            if let Some(reason) = failed {
                self.containers[i].status = Status::Stopped;
                self.containers[i].reason = Some(reason.clone());
                return Err(Stop {
                    code: StopCode::TaskFailedToStart,
                    reason,
                });
            }
        }
        // Containers left running by the agent before a restart: their
        // output is copied (and shipped) again from where it was, and their
        // addresses are routed to this agent's (new) port.
        for i in 0..self.containers.len() {
            let c = &self.containers[i];
            if c.status != Status::Running {
                continue;
            }
            let Some(id) = c.id.clone() else { continue };
            if c.follower.is_none() {
                let task_id = spec::task_id(&self.desired.task_arn).to_string();
                let f = self
                    .ctx
                    .logs
                    .follow(&self.ctx.runtime, &task_id, &c.name, &id);
                self.containers[i].follower = f;
            }
            self.ship(i, &id);
            self.route_container(&id, None).await;
        }
        Ok(())
    }

    /// Container `i`'s awslogs shipping, if it logs with awslogs (`id`:
    /// its container id, the stream's name when no prefix names one).
    fn awslogs_job(&self, i: usize, id: &str) -> Option<crate::awslogs::Job> {
        let c = &self.containers[i];
        let task_id = spec::task_id(&self.desired.task_arn);
        let target = crate::awslogs::target(&c.def, task_id, &self.ctx.region).ok()??;
        Some(crate::awslogs::Job {
            task_arn: self.desired.task_arn.clone(),
            execution_role: self.desired.definition.execution_role_arn.is_some(),
            stream: target.stream.clone().unwrap_or_else(|| id.to_string()),
            target,
            file: self.ctx.logs.file(task_id, &c.name)?,
        })
    }

    /// Starts shipping container `i`'s output, unless it already is.
    fn ship(&mut self, i: usize, id: &str) {
        if self.containers[i].shipper.is_some() {
            return;
        }
        if let Some(job) = self.awslogs_job(i, id) {
            self.containers[i].shipper = Some(self.ctx.shipping.start(job));
        }
    }

    /// FireLens: the router gets its configuration (written now) and the
    /// socket's directory; a container logging through it, the engine's
    /// fluentd driver pointed at that socket.
    fn firelens(&self, i: usize, s: &mut berth_runtime::ContainerSpec) -> Result<(), String> {
        let Some((router, kind, options)) = crate::firelens::router(&self.desired) else {
            return Ok(());
        };
        let task_id = spec::task_id(&self.desired.task_arn);
        let dir = crate::firelens::dir(&self.ctx.data_dir, task_id);
        let c = &self.containers[i];
        if c.name == router {
            let mounts = crate::firelens::prepare(&dir, &self.desired, kind, &options)
                .map_err(|e| format!("CannotCreateContainerError: FireLens configuration: {e}"))?;
            s.mounts.extend(mounts);
        } else if crate::firelens::routed(&c.def) {
            s.log_driver = Some(crate::firelens::driver(&dir, &c.name, task_id));
        }
        Ok(())
    }

    fn has_role(&self) -> bool {
        self.desired.definition.task_role_arn.is_some()
    }

    /// Routes the task endpoint for a bridge-mode container's address to
    /// this agent (awsvpc tasks are routed by their namespace's address,
    /// host-mode ones have none of their own). `info`: the container as
    /// just inspected, if it was.
    async fn route_container(&self, id: &str, info: Option<&berth_runtime::ContainerInfo>) {
        if !self.endpoint_reaches() || self.desired.network.is_some() {
            return;
        }
        if self.host_network() {
            if let Err(e) = self
                .ctx
                .endpoint
                .route_host(&self.desired.task_arn, id)
                .await
            {
                tracing::warn!(task = %self.desired.task_arn, error = %e, "task endpoint not routed");
            }
            return;
        }
        let looked;
        let info = match info {
            Some(i) => i,
            None => match self.ctx.runtime.inspect(id).await {
                Ok(Some(i)) => {
                    looked = i;
                    &looked
                }
                _ => return,
            },
        };
        for a in &info.networks {
            let Ok(ip) = a.ip.parse::<std::net::Ipv4Addr>() else {
                continue;
            };
            if let Err(e) = self
                .ctx
                .endpoint
                .route(&self.desired.task_arn, &a.network, ip)
                .await
            {
                tracing::warn!(task = %self.desired.task_arn, error = %e, "task endpoint not routed");
            }
        }
    }

    /// Stops the containers not yet created, for `reason`: the task's stop.
    fn failed_to_start(&mut self, reason: String) -> Stop {
        for c in self.containers.iter_mut().filter(|c| c.id.is_none()) {
            c.status = Status::Stopped;
            c.reason = Some(reason.clone());
        }
        Stop {
            code: StopCode::TaskFailedToStart,
            reason,
        }
    }

    /// The task's secrets (none when it takes none), fetched once; a
    /// failure stops the task.
    async fn secrets(&mut self) -> Result<Vec<berth_wire::agent::SecretValue>, Stop> {
        if let Some(values) = &self.secrets {
            return Ok(values.clone());
        }
        if !spec::has_secrets(&self.desired) {
            return Ok(vec![]);
        }
        match self.fetch_secrets().await {
            Ok(values) => Ok(self.secrets.insert(values).clone()),
            Err(reason) => Err(self.failed_to_start(reason)),
        }
    }

    /// The task's secrets, which the server fetches with its execution
    /// role. An answer lost with the connection is asked for again on the
    /// next one.
    async fn fetch_secrets(&self) -> Result<Vec<berth_wire::agent::SecretValue>, String> {
        loop {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let ask = crate::ServerAsk::Secrets {
                task_arn: self.desired.task_arn.clone(),
                reply,
            };
            if self.ctx.asks.send(ask).is_err() {
                return Err("ResourceInitializationError: unable to pull secrets or registry auth: the agent is stopping".into());
            }
            match answer.await {
                Ok(result) => return result,
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// Pulls `image` as the host's pull behavior says; on failure, every
    /// container of the image is stopped with the reason.
    async fn pull(&mut self, image: &str) -> Result<(), Stop> {
        let auth = spec::registry_auth(
            &self.desired,
            image,
            self.secrets.as_deref().unwrap_or_default(),
        );
        let Err(e) = self
            .ctx
            .runtime
            .pull_with(image, self.ctx.pull, auth.as_ref())
            .await
        else {
            return Ok(());
        };
        let reason = e.to_string();
        for c in self
            .containers
            .iter_mut()
            .filter(|c| c.def.image.as_deref() == Some(image))
        {
            c.status = Status::Stopped;
            c.reason = Some(reason.clone());
        }
        self.report.pull_stopped_at = Some(now());
        Err(Stop {
            code: StopCode::TaskFailedToStart,
            reason,
        })
    }

    /// awsvpc: makes the task's network namespace, a pause container at
    /// the task's address on its subnet's network, before any of its
    /// containers; records the interface's MAC address.
    async fn network(&mut self, cgroup: Option<&str>) -> Result<(), String> {
        let Some(net) = self.desired.network.clone() else {
            return Ok(());
        };
        let failed = |e: berth_runtime::RuntimeError| {
            format!("CannotCreateContainerError: task network: {e}")
        };
        if self.pause.is_none() {
            if let Some(w) = self.warm.take() {
                self.pause = w.await;
            }
        }
        let mut s = spec::pause_spec(&self.desired, &net, &self.ctx.instance);
        if self.sandboxed() {
            spec::sandbox_root(&mut s, cgroup);
        }
        let sandboxed = self.sandboxed();
        let id = self
            .running_pause(&s, Some(&net))
            .await
            .map_err(|e| {
                if sandboxed {
                    // Said plainly: the task was promised a kernel of its
                    // own, and does not get the host's instead.
                    format!(
                        "CannotStartContainerError: the task's gVisor sandbox (its own kernel) could not start, and the task does not run on the host's kernel instead: {e}"
                    )
                } else {
                    failed(e)
                }
            })?;
        if sandboxed {
            self.report.sandbox = Some(id.clone());
        }
        let rt = &self.ctx.runtime;
        if let Some(info) = rt.inspect(&id).await.map_err(failed)? {
            self.report.mac_address = info
                .networks
                .iter()
                .find(|a| a.network == net.name)
                .map(|a| a.mac.clone())
                .filter(|m| !m.is_empty());
        }
        // Deny by default before any of the task's containers listens.
        self.filter().await.map_err(failed)?;
        {
            let ip = net
                .ip
                .parse::<std::net::Ipv4Addr>()
                .map_err(|e| format!("CannotCreateContainerError: task address {}: {e}", net.ip))?;
            self.ctx
                .endpoint
                .route(&self.desired.task_arn, &net.name, ip)
                .await
                .map_err(failed)?;
        }
        Ok(())
    }

    /// The task's pause container, made from `spec` (on `net`) unless it
    /// has one, and started unless it runs: its id.
    async fn running_pause(
        &mut self,
        spec: &berth_runtime::ContainerSpec,
        net: Option<&berth_wire::agent::DesiredNetwork>,
    ) -> Result<String, berth_runtime::RuntimeError> {
        let rt = &self.ctx.runtime;
        let id = match &self.pause {
            Some(id) => id.clone(),
            None => self
                .pause
                .insert(create_pause(&**rt, net, spec).await?)
                .clone(),
        };
        let running = rt
            .inspect(&id)
            .await?
            .is_some_and(|i| i.state == ContainerState::Running);
        if !running {
            rt.start(&id).await?;
        }
        Ok(id)
    }

    /// A task sharing its process or IPC namespace (`task` mode) that is
    /// not awsvpc gets a pause container to hold them, as awsvpc tasks
    /// have one already.
    async fn namespaces(&mut self) -> Result<(), String> {
        if self.desired.network.is_some() || !spec::shares_namespaces(&self.desired) {
            return Ok(());
        }
        let failed = |e: berth_runtime::RuntimeError| {
            format!("CannotCreateContainerError: task namespaces: {e}")
        };
        let s = spec::namespace_pause_spec(&self.desired, &self.ctx.instance);
        self.running_pause(&s, None)
            .await
            .map(|_| ())
            .map_err(failed)
    }

    /// Brings the namespace's packet filter to what the task's security
    /// groups let in now, when that changed (members come and go).
    async fn filter(&mut self) -> Result<(), berth_runtime::RuntimeError> {
        let (Some(net), Some(pause)) = (&self.desired.network, &self.pause) else {
            return Ok(());
        };
        let wanted = (net.ingress.clone(), net.egress.clone());
        if self.filtered.as_ref() == Some(&wanted) {
            return Ok(());
        }
        let rules = |list: &[berth_wire::agent::AllowedIngress]| {
            list.iter()
                .map(|a| berth_runtime::firewall::Rule {
                    protocol: a.protocol.clone(),
                    from_port: a.from_port,
                    to_port: a.to_port,
                    peer: a.source.clone(),
                })
                .collect::<Vec<_>>()
        };
        let filter = berth_runtime::firewall::Filter {
            ingress: rules(&net.ingress),
            egress: net.egress.as_deref().map(rules),
        };
        self.ctx.runtime.apply_filter(pause, &filter).await?;
        tracing::debug!(task = %self.desired.task_arn, ingress = filter.ingress.len(), egress = ?filter.egress.as_ref().map(Vec::len), "security group filter set");
        self.filtered = Some(wanted);
        Ok(())
    }

    /// Bridge mode: keeps each running container of the task to what ECS's
    /// model publishes (docs/networking.md), brought up to date whenever
    /// one starts, since each lets in the others' addresses.
    async fn isolate(&mut self) -> Result<(), berth_runtime::RuntimeError> {
        let mode = self.desired.definition.network_mode.as_deref();
        if self.desired.network.is_some() || !matches!(mode, None | Some("bridge")) {
            return Ok(());
        }
        let live = |c: &Container| c.started && c.status != Status::Stopped;
        // Those whose start did not show their address (or that the agent
        // took over) are asked once.
        for i in 0..self.containers.len() {
            let c = &self.containers[i];
            let Some(id) = c.id.clone().filter(|_| live(c) && c.bridge.is_none()) else {
                continue;
            };
            if let Some(info) = self.ctx.runtime.inspect(&id).await? {
                if info.state == ContainerState::Running {
                    self.containers[i].bridge = bridge_address(info.networks);
                }
            }
        }
        let mut members = vec![];
        for c in self.containers.iter().filter(|c| live(c)) {
            let (Some(id), Some((ip, a))) = (&c.id, &c.bridge) else {
                continue;
            };
            let ports: Vec<(u16, String)> = c
                .def
                .port_mappings
                .iter()
                .flatten()
                .filter_map(|m| {
                    let port = u16::try_from(m.container_port?).ok()?;
                    let protocol = m.protocol.as_deref().unwrap_or("tcp").to_ascii_lowercase();
                    Some((port, protocol))
                })
                .collect();
            members.push((id, *ip, a, ports));
        }
        let peers: Vec<std::net::Ipv4Addr> = members.iter().map(|m| m.1).collect();
        for (id, ip, a, ports) in &members {
            let filter = berth_runtime::firewall::bridge_filter(
                *ip,
                a.prefix_len,
                &a.gateway,
                &peers,
                ports,
            );
            self.ctx.runtime.apply_filter(id, &filter).await?;
        }
        Ok(())
    }

    /// Whether container `i`'s dependencies allow it to start: Some(true)
    /// yes, Some(false) not yet, None never.
    fn ready(&self, i: usize) -> Option<bool> {
        let mut ok = true;
        for d in self.containers[i].def.depends_on.iter().flatten() {
            let Some(dep) = self
                .containers
                .iter()
                .find(|c| c.def.name == d.container_name)
            else {
                continue;
            };
            let met = match d.condition.as_deref().unwrap_or("START") {
                "START" => Some(dep.started),
                "COMPLETE" => Some(dep.status == Status::Stopped && dep.started),
                "SUCCESS" => match (dep.status, dep.exit_code) {
                    (Status::Stopped, Some(0)) => Some(true),
                    (Status::Stopped, _) if dep.started => None,
                    _ => Some(false),
                },
                "HEALTHY" => match (dep.status, dep.health) {
                    (_, Some(Health::Healthy)) => Some(true),
                    (Status::Stopped, _) if dep.started => None,
                    _ => Some(false),
                },
                _ => Some(true),
            };
            match met {
                None => return None,
                Some(false) => ok = false,
                Some(true) => {}
            }
        }
        // The engine links only to a running container: a linked one
        // starts first, as ECS starts it.
        for link in self.containers[i].def.links.iter().flatten() {
            let target = link.split(':').next().unwrap_or(link);
            let Some(dep) = self
                .containers
                .iter()
                .find(|c| c.def.name.as_deref() == Some(target))
            else {
                continue;
            };
            if !dep.started {
                if dep.status == Status::Stopped {
                    return None;
                }
                ok = false;
            }
        }
        Some(ok)
    }

    /// Starts every container whose dependencies are met. Err when the
    /// task cannot go on.
    async fn start_ready(&mut self) -> Result<(), Stop> {
        loop {
            let mut progressed = false;
            for i in 0..self.containers.len() {
                let c = &self.containers[i];
                if c.started || c.status != Status::Pending {
                    continue;
                }
                let Some(id) = c.id.clone() else { continue };
                match self.ready(i) {
                    Some(false) => continue,
                    None => {
                        let reason = format!(
                            "Container {} could not start: a container it depends on did not meet its condition.",
                            c.name
                        );
                        let c = &mut self.containers[i];
                        c.status = Status::Stopped;
                        c.reason = Some(reason.clone());
                        if essential(&c.def) {
                            return Err(Stop {
                                code: StopCode::TaskFailedToStart,
                                reason,
                            });
                        }
                        continue;
                    }
                    Some(true) => {}
                }
                if let Err(e) = self.ctx.runtime.start(&id).await {
                    let reason = format!("CannotStartContainerError: {e}");
                    let c = &mut self.containers[i];
                    c.status = Status::Stopped;
                    c.reason = Some(reason.clone());
                    return Err(Stop {
                        code: StopCode::TaskFailedToStart,
                        reason,
                    });
                }
                self.note_started(i, &id).await;
                if let Err(e) = self.isolate().await {
                    let reason = format!(
                        "CannotStartContainerError: cannot keep the task's containers from other tasks' unpublished ports: {e}"
                    );
                    self.containers[i].reason = Some(reason.clone());
                    return Err(Stop {
                        code: StopCode::TaskFailedToStart,
                        reason,
                    });
                }
                progressed = true;
            }
            if !progressed {
                return Ok(());
            }
            // Containers that wait on these show the progress meanwhile;
            // with none waiting, the caller's report says it all at once.
            if self
                .containers
                .iter()
                .any(|c| !c.started && c.status == Status::Pending)
            {
                self.publish();
            }
        }
    }

    /// Restarts a container that exited if its restart policy says so.
    async fn maybe_restart(&mut self, i: usize) -> bool {
        let c = &self.containers[i];
        let Some(policy) = c
            .def
            .restart_policy
            .as_ref()
            .filter(|p| p.enabled == Some(true))
        else {
            return false;
        };
        let ignored = policy
            .ignored_exit_codes
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|x| Some(*x) == c.exit_code);
        let period =
            Duration::from_secs(policy.restart_attempt_period.unwrap_or(300).max(0) as u64);
        let ran_long_enough = c.last_start.is_none_or(|t| t.elapsed() >= period);
        if ignored || !ran_long_enough || self.wants_stop() {
            return false;
        }
        let Some(id) = c.id.clone() else { return false };
        if self.ctx.runtime.start(&id).await.is_err() {
            return false;
        }
        let c = &mut self.containers[i];
        c.exit_code = None;
        c.restarts += 1;
        self.note_started(i, &id).await;
        // A restarted container may have a new address on the bridge.
        if let Err(e) = self.isolate().await {
            tracing::warn!(task = %self.desired.task_arn, error = %e, "a restarted container's filter could not be set");
        }
        let c = &self.containers[i];
        tracing::info!(task = %self.desired.task_arn, container = %c.name, restarts = c.restarts, "container restarted");
        true
    }

    /// Records a container the engine has just started (first time or
    /// restart): its ports as published (dynamic ones change on every
    /// start) and whether it has already exited, when it publishes any
    /// (else its exit comes as an event), and a log follower. The
    /// engine's log stream ends with each exit; a new one starts from the
    /// container's first line and rewrites the file.
    async fn note_started(&mut self, i: usize, id: &str) {
        let host_mode = self.desired.definition.network_mode.as_deref() == Some("host");
        // Only the engine knows the host ports it picked for a bridge-mode
        // container's mappings; with none to learn, the start's answer is
        // enough to report RUNNING, and an early exit arrives as an event.
        let published = !host_mode
            && self.desired.network.is_none()
            && self.containers[i]
                .def
                .port_mappings
                .as_ref()
                .is_some_and(|m| !m.is_empty());
        let routed = self.endpoint_reaches() && self.desired.network.is_none() && !host_mode;
        let info = if published || routed {
            self.ctx.runtime.inspect(id).await.ok().flatten()
        } else {
            None
        };
        if routed {
            if let Some(info) = &info {
                self.route_container(id, Some(info)).await;
            }
        } else if host_mode {
            self.route_container(id, None).await;
        }
        let task_id = spec::task_id(&self.desired.task_arn).to_string();
        let c = &mut self.containers[i];
        c.started = true;
        c.status = Status::Running;
        c.last_start = Some(Instant::now());
        c.bridge = None;
        if let Some(info) = info {
            c.bindings = bindings(&info.ports);
            if info.state == ContainerState::Running {
                c.bridge = bridge_address(info.networks);
            }
            if info.state == ContainerState::Exited {
                c.status = Status::Stopped;
                c.exit_code = info.exit_code.and_then(|x| i32::try_from(x).ok());
            }
        }
        if host_mode {
            c.bindings = host_bindings(&c.def);
        }
        c.follower = self
            .ctx
            .logs
            .follow(&self.ctx.runtime, &task_id, &c.name, id);
        self.ship(i, id);
    }

    /// Watches the task until it stops.
    async fn supervise(&mut self) {
        while !self.stopped() {
            if self.wants_stop() {
                self.stop(None).await;
                return;
            }
            if let Err(stop) = self.start_ready().await {
                self.stop(Some(stop)).await;
                return;
            }
            for i in 0..self.containers.len() {
                if self.containers[i].status == Status::Stopped
                    && self.containers[i].started
                    && self.containers[i].def.restart_policy.is_some()
                    && self.maybe_restart(i).await
                {
                    self.publish();
                }
            }
            if let Some(c) = self
                .containers
                .iter()
                .find(|c| essential(&c.def) && c.started && c.status == Status::Stopped)
            {
                tracing::info!(task = %self.desired.task_arn, container = %c.name, exit = ?c.exit_code, "essential container exited");
                self.stop(Some(Stop {
                    code: StopCode::EssentialContainerExited,
                    reason: "Essential container in task exited".into(),
                }))
                .await;
                return;
            }
            let all_up = self
                .containers
                .iter()
                .all(|c| c.started || c.status == Status::Stopped);
            if all_up {
                if self.report.last_status != TaskStatus::Running {
                    // ACTIVATING passes within this step: one report (and
                    // one save) says RUNNING.
                    self.note_status(TaskStatus::Activating);
                    self.report.started_at.get_or_insert_with(now);
                    self.note_status(TaskStatus::Running);
                }
            } else if self.report.last_status == TaskStatus::Pending {
                self.note_status(TaskStatus::Activating);
            }
            self.publish();
            if self.report.last_status == TaskStatus::Running {
                self.limit_cpu().await;
            }
            match self.rx.recv().await {
                Some(Input::Resync) => self.inspect_all().await,
                Some(i) => self.apply(i),
                None => {
                    self.forget = true;
                    return;
                }
            }
            if !self.drain() {
                return;
            }
            if let Err(e) = self.filter().await {
                // The last filter stays; the next change or resync retries.
                tracing::warn!(task = %self.desired.task_arn, error = %e, "ingress filter not updated");
            }
        }
    }

    /// Stops every container that runs, dependents first, and reports the
    /// task STOPPED.
    async fn stop(&mut self, why: Option<Stop>) {
        if let Some(s) = why {
            self.report.stop_code.get_or_insert(s.code);
            self.report.stopped_reason.get_or_insert(s.reason);
        }
        self.report.stopping_at.get_or_insert_with(now);
        if self.report.last_status == TaskStatus::Running {
            self.set_status(TaskStatus::Deactivating);
        }
        self.set_status(TaskStatus::Stopping);
        let defs: Vec<w::ContainerDefinition> =
            self.containers.iter().map(|c| c.def.clone()).collect();
        let mut order = creation_order(&defs);
        order.reverse();
        for i in order {
            let c = &self.containers[i];
            let Some(id) = c.id.clone() else { continue };
            if c.status != Status::Running {
                continue;
            }
            if let Err(e) = self.ctx.runtime.stop(&id, stop_timeout(&c.def)).await {
                tracing::warn!(error = %e, container = %c.name, "stop failed");
            }
            let info = self.ctx.runtime.inspect(&id).await.ok().flatten();
            let c = &mut self.containers[i];
            c.status = Status::Stopped;
            if let Some(info) = info {
                c.exit_code = info
                    .exit_code
                    .and_then(|x| i32::try_from(x).ok())
                    .or(c.exit_code);
            }
        }
        for c in self.containers.iter_mut() {
            if c.status != Status::Stopped {
                c.status = Status::Stopped;
            }
        }
        self.report.execution_stopped_at.get_or_insert_with(now);
        self.set_status(TaskStatus::Deprovisioning);
        // What the containers wrote is stored before the task is STOPPED,
        // so that reading its logs then finds all of it. A stream ends
        // with its container's exit; a stuck one does not hold the stop.
        // A container's awslogs shipper ends once its copy has (whenever
        // that is), and it has sent the whole file.
        let followers: Vec<_> = self
            .containers
            .iter_mut()
            .filter_map(|c| {
                let done = c.shipper.as_ref().map(|s| s.done.clone());
                match c.follower.take() {
                    Some(f) => Some(tokio::spawn(async move {
                        let _ = f.await;
                        if let Some(d) = done {
                            let _ = d.send(true);
                        }
                    })),
                    None => {
                        if let Some(d) = done {
                            let _ = d.send(true);
                        }
                        None
                    }
                }
            })
            .collect();
        let _ = tokio::time::timeout(Duration::from_secs(2), futures::future::join_all(followers))
            .await;
        // awslogs: the last lines reach the Logs API before STOPPED when the
        // server takes them promptly; the rest follow (remove waits).
        let shipping = self
            .containers
            .iter_mut()
            .filter_map(|c| c.shipper.as_mut().map(|s| &mut s.handle));
        let _ =
            tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(shipping)).await;
        // The interface goes before the task is STOPPED, as an ENI is
        // detached first: the server hands the address out again once it
        // hears STOPPED, and the next task's pause container must find it
        // free.
        self.release_network().await;
        self.report.stopped_at.get_or_insert_with(now);
        self.set_status(TaskStatus::Stopped);
    }

    /// Removes the pause container, and with it the task's namespace. A
    /// warm namespace the task was handed but never took holds its
    /// address too (a task can stop before its network is made), so it
    /// goes as well.
    async fn release_network(&mut self) {
        if let Some(w) = self.warm.take() {
            if let Some(id) = w.await {
                crate::runner::remove_warm(&*self.ctx.runtime, &id).await;
            }
        }
        if let Some(id) = self.pause.take() {
            let _ = self.ctx.runtime.stop(&id, Duration::ZERO).await;
            if let Err(e) = self.ctx.runtime.remove(&id).await {
                tracing::warn!(error = %e, "pause container remove failed");
            }
        }
    }

    /// The server has recorded the task STOPPED: its containers go.
    async fn remove(&mut self) {
        // Nothing of a container's awslogs output is left behind.
        for c in self.containers.iter_mut() {
            let Some(s) = c.shipper.take() else { continue };
            // Not stopped by this driver (the runner let go first): the
            // copy ends now, if it has not.
            if let Some(f) = c.follower.take() {
                let _ = tokio::time::timeout(Duration::from_secs(5), f).await;
                let _ = s.done.send(true);
            }
            if tokio::time::timeout(Duration::from_secs(60), s.handle)
                .await
                .is_err()
            {
                tracing::warn!(task = %self.desired.task_arn, container = %c.name, "awslogs: output not all shipped; it stays in the agent's log file");
            }
        }
        for c in &self.containers {
            if let Some(id) = &c.id {
                if c.status == Status::Running {
                    let _ = self.ctx.runtime.stop(id, stop_timeout(&c.def)).await;
                }
                if let Err(e) = self.ctx.runtime.remove(id).await {
                    tracing::warn!(error = %e, container = %c.name, "remove failed");
                }
            }
        }
        self.release_network().await;
        // The FireLens router's configuration and socket go with it.
        if crate::firelens::router(&self.desired).is_some() {
            let task_id = spec::task_id(&self.desired.task_arn);
            let _ = std::fs::remove_dir_all(crate::firelens::dir(&self.ctx.data_dir, task_id));
        }
        if self.task_limits().is_some() || self.cgroup_name.is_some() {
            if let Err(e) = self
                .ctx
                .runtime
                .remove_task_cgroup(self.cgroup_name())
                .await
            {
                tracing::warn!(error = %e, task = %self.desired.task_arn, "task cgroup left behind");
            }
        }
        self.ctx.reporter.forget(&self.desired.task_arn);
    }
}

/// Creates a pause container (`spec`), on `net`'s subnet network when it
/// has one, making the network and the pause image first if the host has
/// none; its id. A
/// container of that name left over from a create the agent did not see
/// finish is removed first.
pub(crate) async fn create_pause(
    rt: &dyn berth_runtime::ContainerRuntime,
    net: Option<&berth_wire::agent::DesiredNetwork>,
    spec: &berth_runtime::ContainerSpec,
) -> Result<String, berth_runtime::RuntimeError> {
    if let Some(net) = net {
        rt.ensure_network(&spec::network_spec(net)).await?;
    }
    rt.ensure_pause_image().await?;
    match rt.create(spec).await {
        Err(berth_runtime::RuntimeError::Rejected(m)) if m.contains("already in use") => {
            let _ = rt.remove(&spec.name).await;
            rt.create(spec).await
        }
        other => other,
    }
}

/// A bridge-mode container's address: the first network that gave it one.
fn bridge_address(
    networks: Vec<berth_runtime::Attachment>,
) -> Option<(std::net::Ipv4Addr, berth_runtime::Attachment)> {
    let a = networks.into_iter().find(|a| !a.ip.is_empty())?;
    Some((a.ip.parse().ok()?, a))
}

fn bindings(ports: &[berth_runtime::Binding]) -> Vec<w::NetworkBinding> {
    ports
        .iter()
        .map(|b| w::NetworkBinding {
            bind_ip: Some(if b.host_ip.is_empty() {
                "0.0.0.0".into()
            } else {
                b.host_ip.clone()
            }),
            container_port: Some(i32::from(b.container_port)),
            host_port: Some(i32::from(b.host_port)),
            protocol: Some(b.protocol.as_str().into()),
            ..Default::default()
        })
        .collect()
}

fn host_bindings(def: &w::ContainerDefinition) -> Vec<w::NetworkBinding> {
    def.port_mappings
        .iter()
        .flatten()
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0).or(p.container_port)?;
            Some(w::NetworkBinding {
                bind_ip: Some("0.0.0.0".into()),
                container_port: p.container_port,
                host_port: Some(port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "tcp".into())),
                ..Default::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_runtime::fake::{Call, FakeRuntime};
    use berth_wire::agent::DesiredNetwork;
    use futures::FutureExt;

    async fn ctx(rt: Arc<FakeRuntime>, dir: &std::path::Path) -> Ctx {
        let (reporter, _) = Reporter::open(dir.join("reports.json")).expect("reporter");
        let (asks, _) = tokio::sync::mpsc::unbounded_channel();
        let endpoint = crate::endpoint::Endpoint::start(dir, 0, vec![], asks.clone(), rt.clone())
            .await
            .expect("endpoint");
        Ctx {
            runtime: rt,
            instance: "i-1".into(),
            cluster: "pool".into(),
            region: "us-east-1".into(),
            pull: PullBehavior::Always,
            reporter,
            logs: Logs::new(dir.join("logs")),
            shipping: Arc::new(crate::awslogs::Shipping {
                servers: vec![],
                own: None,
                asks: asks.clone(),
            }),
            asks,
            endpoint,
            starts: Default::default(),
            isolation: crate::Isolation::Container,
            data_dir: dir.to_path_buf(),
        }
    }

    /// A sandbox's kernel starts the task's containers inside the task's
    /// cgroup: memory bounds it from the start, the cpu limit goes on once
    /// the task runs.
    #[tokio::test]
    async fn a_sandboxed_task_gets_its_cpu_limit_once_it_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = Arc::new(FakeRuntime::new());
        rt.publish("app:1");
        let mut c = ctx(rt.clone(), dir.path()).await;
        c.isolation = crate::Isolation::Gvisor {
            runsc: "runsc".into(),
        };
        let mut desired = DesiredTask {
            launch_type: "FARGATE".into(),
            ..spec::tests::task(vec![w::ContainerDefinition {
                name: Some("app".into()),
                image: Some("app:1".into()),
                essential: Some(true),
                ..Default::default()
            }])
        };
        desired.definition.volumes = None;
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = Driver::new(c, desired, None, HashMap::new(), None, rx);
        let run = tokio::spawn(driver.run());
        let limits = || -> Vec<TaskLimits> {
            rt.calls()
                .into_iter()
                .filter_map(|c| match c {
                    Call::TaskCgroup(_, l) => Some(l),
                    _ => None,
                })
                .collect()
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while limits().len() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the cpu limit is set");
        let started = rt
            .calls()
            .iter()
            .position(|c| matches!(c, Call::Start(_)))
            .expect("the container started");
        let second = rt
            .calls()
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, Call::TaskCgroup(..)))
            .nth(1)
            .map(|(i, _)| i)
            .expect("two cgroup calls");
        assert!(second > started, "the cpu limit comes after the start");
        assert_eq!(
            limits(),
            vec![
                TaskLimits {
                    cpu_units: None,
                    memory_mib: Some(256)
                },
                TaskLimits {
                    cpu_units: Some(512),
                    memory_mib: Some(256)
                },
            ]
        );
        tx.send(Input::Forget).expect("driver listens");
        drop(tx);
        run.abort();
    }

    /// A task stopped before it made its network still owns the warm
    /// namespace it was handed: the server frees the address when it hears
    /// STOPPED, so the namespace must not outlive the report.
    #[tokio::test]
    async fn a_task_stopped_before_its_network_releases_the_warm_namespace_it_was_handed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = Arc::new(FakeRuntime::new());
        let net = DesiredNetwork {
            name: "berth-subnet-a".into(),
            subnet_id: "subnet-a".into(),
            cidr: "10.0.0.0/24".into(),
            gateway: "10.0.0.1".into(),
            ip: "10.0.0.9".into(),
            ingress: vec![],
            egress: None,
        };
        rt.ensure_pause_image().await.expect("pause image");
        let warm_id = rt
            .create(&spec::warm_pause_spec(&net, "i-1", "pool"))
            .await
            .expect("warm pause");
        rt.start(&warm_id).await.expect("start");
        let (made, gate) = tokio::sync::oneshot::channel::<()>();
        let id = warm_id.clone();
        // Still being made when the task arrives.
        let warm: WarmPause = async move {
            let _ = gate.await;
            Some(id)
        }
        .boxed()
        .shared();
        let desired = DesiredTask {
            network: Some(net),
            launch_type: "FARGATE".into(),
            ..spec::tests::task(vec![w::ContainerDefinition {
                name: Some("app".into()),
                image: Some("missing:latest".into()),
                essential: Some(true),
                ..Default::default()
            }])
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = Driver::new(
            ctx(rt.clone(), dir.path()).await,
            desired,
            None,
            HashMap::new(),
            Some(warm),
            rx,
        );
        let run = tokio::spawn(driver.run());
        drop(made);
        // The image cannot be pulled: the task stops before its network.
        tokio::time::timeout(Duration::from_secs(10), async {
            while !rt.calls().contains(&Call::Remove(warm_id.clone())) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the warm namespace is removed");
        tx.send(Input::Forget).expect("driver listens");
        run.await.expect("driver ends");
    }
}
