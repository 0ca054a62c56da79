//! Tasks: RunTask and StartTask place and record them, StopTask asks for
//! their stop, DescribeTasks and ListTasks read them. Handlers write only
//! the desired record; what the agents observed comes from the gateway.

use super::clusters::active_cluster;
use super::instances::references;
use super::taskdefs::{parse_reference, resolve};
use super::{compare_and_swap, Attempt};
use crate::{context::RequestContext, error::ApiError, now, AppState};
use berth_domain::arn::{self, container_instance_id as instance_id};
use berth_domain::instance::{ContainerInstance, InstanceStatus, FARGATE_POOL};
use berth_domain::task::{
    self, DesiredStatus, StopCode, StopRequest, Task, TaskNetwork, TaskStatus, Usage, MAX_RUN_COUNT,
};
use berth_domain::{capacity, paging, tags, EcsError, Scope};
use berth_scheduler as sched;
use berth_store::keys::Keys;
use berth_store::{typed, Op, RangeRequest, Txn};
use berth_wire::agent::TaskReport;
use berth_wire::ecs as w;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Ports Docker hands out for hostPort 0: its default ephemeral range.
const DYNAMIC_PORTS: u32 = 65535 - 49153 + 1;
/// How long a RunTask clientToken is remembered.
const TOKEN_RETENTION: Duration = Duration::from_secs(3600);
/// Constraints (the task definition's included) and strategies per request.
const MAX_CONSTRAINTS: usize = 10;
const MAX_STRATEGIES: usize = 5;

/// One cluster's tasks: desired records with their mod revisions, and
/// what agents reported of them.
pub(crate) struct ClusterTasks {
    pub tasks: Vec<typed::Versioned<Task>>,
    pub reports: HashMap<String, TaskReport>,
}

impl ClusterTasks {
    pub(crate) async fn load(
        st: &AppState,
        scope: &Scope,
        cluster: &str,
    ) -> Result<ClusterTasks, ApiError> {
        let tasks = typed::list::<Task>(&*st.store, &scope.tasks_of(cluster))
            .await?
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let reports = typed::list::<TaskReport>(&*st.store, &scope.task_states_of(cluster))
            .await?
            .into_iter()
            .filter_map(|(k, r)| {
                let id = k.rsplit('/').next()?.to_string();
                Some((id, r.value))
            })
            .collect();
        Ok(ClusterTasks { tasks, reports })
    }

    pub(crate) fn report(&self, id: &str) -> Option<&TaskReport> {
        self.reports.get(id)
    }

    /// What the tasks that are not STOPPED hold, per instance id.
    pub(crate) fn usage(&self) -> HashMap<String, Usage> {
        let mut out: HashMap<String, Usage> = HashMap::new();
        for t in &self.tasks {
            let report = self.report(&t.value.id);
            if Task::last_status(report) != TaskStatus::Stopped {
                out.entry(t.value.container_instance.clone())
                    .or_default()
                    .add(&t.value, report);
            }
        }
        out
    }
}

/// The instance ids of `cluster` whose agents are connected now (the
/// gateway's lease-bound connection keys).
pub(crate) async fn connected_agents(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
) -> Result<HashSet<String>, ApiError> {
    let ids = typed::names(&*st.store, &scope.agent_connections_of(cluster)).await?;
    Ok(ids.into_iter().collect())
}

/// What a cluster's instances hold now, read once per request: which
/// agents are connected, and what the not-STOPPED tasks on each reserve.
#[derive(Default)]
pub(crate) struct Occupancy {
    connected: HashSet<String>,
    usage: HashMap<String, Usage>,
}

impl Occupancy {
    pub(crate) async fn load(
        st: &AppState,
        scope: &Scope,
        cluster: &str,
    ) -> Result<Occupancy, ApiError> {
        Ok(Occupancy {
            connected: connected_agents(st, scope, cluster).await?,
            usage: ClusterTasks::load(st, scope, cluster).await?.usage(),
        })
    }

    /// The Fargate pool's hosts: which agents are connected, and what the
    /// tasks of every cluster that are placed there and not STOPPED hold
    /// (the pool's task index names them).
    pub(crate) async fn load_pool(st: &AppState, scope: &Scope) -> Result<Occupancy, ApiError> {
        let prefix = scope.instance_tasks_all(FARGATE_POOL);
        let index = st
            .store
            .range(RangeRequest::prefix(prefix.as_str()))
            .await?;
        let mut usage: HashMap<String, Usage> = HashMap::new();
        for kv in &index.kvs {
            let Some(rest) = kv.key.strip_prefix(&prefix) else {
                continue;
            };
            let mut parts = rest.splitn(3, '/');
            let (Some(host), Some(cluster), Some(id)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some(t) = typed::get::<Task>(&*st.store, &scope.task(cluster, id)).await? else {
                continue;
            };
            let report = typed::get::<TaskReport>(&*st.store, &scope.task_state(cluster, id))
                .await?
                .map(|r| r.value);
            if Task::last_status(report.as_ref()) != TaskStatus::Stopped {
                usage
                    .entry(host.to_string())
                    .or_default()
                    .add(&t.value, report.as_ref());
            }
        }
        Ok(Occupancy {
            connected: connected_agents(st, scope, FARGATE_POOL).await?,
            usage,
        })
    }

    /// Whether the instance's agent holds a connection to the gateway.
    pub(crate) fn connected(&self, instance: &str) -> bool {
        self.connected.contains(instance)
    }

    pub(crate) fn usage(&self, instance: &str) -> Option<&Usage> {
        self.usage.get(instance)
    }

    /// Placement's view of `ci`: what it is and what it has left.
    pub(crate) fn placeable(&self, scope: &Scope, ci: &ContainerInstance) -> sched::Instance {
        let empty = Usage::default();
        let used = self.usage(&ci.id).unwrap_or(&empty);
        let mut tcp: std::collections::BTreeSet<u16> =
            ci.reserved_ports(false).into_iter().collect();
        tcp.extend(&used.tcp_ports);
        let mut udp: std::collections::BTreeSet<u16> =
            ci.reserved_ports(true).into_iter().collect();
        udp.extend(&used.udp_ports);
        sched::Instance {
            arn: Arc::from(ci.arn(scope)),
            ec2_instance_id: ci.ec2_instance_id.clone(),
            status: match ci.status {
                InstanceStatus::Active => sched::InstanceStatus::Active,
                InstanceStatus::Draining => sched::InstanceStatus::Draining,
                InstanceStatus::Inactive => sched::InstanceStatus::Inactive,
            },
            agent_connected: self.connected(&ci.id),
            agent_version: ci
                .version_info
                .as_ref()
                .and_then(|v| v.agent_version.clone())
                .unwrap_or_default(),
            registered_at: ci.registered_at as i64,
            attributes: ci
                .attributes
                .iter()
                .filter_map(|a| Some((a.name.clone()?, a.value.clone())))
                .collect(),
            cpu_free: i64::from(ci.cpu()) - used.cpu,
            memory_free: i64::from(ci.memory()) - used.memory,
            tcp_ports_taken: tcp,
            udp_ports_taken: udp,
            dynamic_ports_free: DYNAMIC_PORTS.saturating_sub(used.dynamic_ports),
            running_tasks: used.running + used.pending,
            groups: used.groups.clone(),
        }
    }
}

/// A validated task definition, ready to become tasks.
pub(crate) struct Launch {
    def: w::TaskDefinition,
    family: String,
    arn: String,
    overrides: Option<w::TaskOverride>,
    group: String,
    started_by: Option<String>,
    service: Option<String>,
    tags: Vec<w::Tag>,
    launch_type: String,
    /// The capacity-provider strategy that splits its tasks, if any.
    strategy: Vec<w::CapacityProviderStrategyItem>,
    /// Tasks each capacity provider already holds for this launch's owner
    /// (a service's running tasks), which the split counts in.
    pub held: HashMap<String, usize>,
    enable_execute_command: bool,
    /// awsvpc: the subnets and security groups its interface may use.
    awsvpc: Option<berth_domain::network::AwsVpc>,
    pub request: sched::Request,
}

#[derive(Default)]
pub(crate) struct LaunchInput<'a> {
    pub task_definition: Option<&'a str>,
    pub overrides: Option<&'a w::TaskOverride>,
    pub group: Option<&'a str>,
    pub started_by: Option<&'a str>,
    /// The service whose task this is; it may run an INACTIVE revision,
    /// as ECS lets services keep running deregistered ones.
    pub service: Option<&'a str>,
    pub tags: Option<&'a [w::Tag]>,
    /// Without `tags`, the tasks get the task definition's (propagateTags
    /// TASK_DEFINITION).
    pub definition_tags: bool,
    pub constraints: Option<&'a [w::PlacementConstraint]>,
    pub strategies: Option<&'a [w::PlacementStrategy]>,
    pub launch_type: &'a str,
    /// With launch type FARGATE: the strategy splitting its tasks.
    pub strategy: &'a [w::CapacityProviderStrategyItem],
    pub count: usize,
    pub enable_execute_command: bool,
    pub network_configuration: Option<&'a w::NetworkConfiguration>,
}

pub(crate) async fn prepare(
    st: &AppState,
    scope: &Scope,
    i: LaunchInput<'_>,
) -> Result<Launch, ApiError> {
    let reference = parse_reference(
        scope,
        i.task_definition.ok_or_else(|| {
            EcsError::invalid("taskDefinition is required: name a family, family:revision or ARN.")
        })?,
        "taskDefinition",
    )?;
    let record = resolve(st, scope, &reference).await?.value;
    let stored = record.def;
    let status = stored.status.as_deref().unwrap_or("ACTIVE");
    let runnable = status == "ACTIVE" || (i.service.is_some() && status == "INACTIVE");
    if !runnable {
        return Err(EcsError::client(format!(
            "TaskDefinition is {status}: register a new revision or run an ACTIVE one."
        ))
        .into());
    }
    let compatible = stored
        .compatibilities
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|c| c == i.launch_type);
    if !compatible {
        return Err(EcsError::invalid(format!(
            "Task definition does not support launch_type {}.",
            i.launch_type
        ))
        .into());
    }
    let def = task::apply_overrides(&stored, i.overrides)?;
    let fargate = i.launch_type == "FARGATE";
    if fargate {
        fargate_launch_rules(&def, i.constraints, i.strategies)?;
    }
    let family = def.family.clone().unwrap_or_default();
    task::validate_labels(i.group, i.started_by)?;
    let tag_list = match i.tags {
        Some(t) => t.to_vec(),
        None if i.definition_tags => record.tags,
        None => vec![],
    };
    tags::validate(&tag_list)?;

    let mut constraints = vec![];
    let from_def = def.placement_constraints.as_deref().unwrap_or_default();
    let given = i.constraints.unwrap_or_default();
    if from_def.len() + given.len() > MAX_CONSTRAINTS {
        return Err(EcsError::invalid(format!(
            "placementConstraints: at most {MAX_CONSTRAINTS} constraints per task, the task definition's included."
        ))
        .into());
    }
    for c in from_def
        .iter()
        .map(|c| (c.r#type.as_deref(), c.expression.as_deref()))
        .chain(
            given
                .iter()
                .map(|c| (c.r#type.as_deref(), c.expression.as_deref())),
        )
    {
        constraints.push(
            sched::Constraint::parse(c.0.unwrap_or_default(), c.1)
                .map_err(|e| EcsError::invalid(format!("placementConstraints: {e}")))?,
        );
    }
    let strategies_given = i.strategies.unwrap_or_default();
    if strategies_given.len() > MAX_STRATEGIES {
        return Err(EcsError::invalid(format!(
            "placementStrategy: at most {MAX_STRATEGIES} strategies."
        ))
        .into());
    }
    let mut strategies = strategies_given
        .iter()
        .map(|s| {
            sched::Strategy::parse(s.r#type.as_deref().unwrap_or_default(), s.field.as_deref())
                .map_err(|e| EcsError::invalid(format!("placementStrategy: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if fargate {
        // Fargate spreads a launch's tasks across zones, then hosts.
        strategies = ["attribute:ecs.availability-zone", "instanceId"]
            .iter()
            .filter_map(|f| sched::Strategy::parse("spread", Some(f)).ok())
            .collect();
    }
    let awsvpc = st.config.network.awsvpc(
        def.network_mode.as_deref() == Some("awsvpc"),
        i.network_configuration,
        i.launch_type,
    )?;
    if let Some(a) = &awsvpc {
        // An interface lives in its subnet's zone: only instances there
        // can hold the task.
        let zones: Vec<String> = a
            .subnets
            .iter()
            .filter_map(|id| st.config.network.subnet(id))
            .map(|s| s.availability_zone.clone())
            .collect();
        constraints.push(
            sched::Constraint::parse(
                "memberOf",
                Some(&format!(
                    "attribute:ecs.availability-zone in [{}]",
                    zones.join(", ")
                )),
            )
            .map_err(|e| EcsError::invalid(format!("networkConfiguration: {e}")))?,
        );
    }
    let reservation = task::reservation(&def);
    let group = i
        .group
        .map(String::from)
        .unwrap_or_else(|| format!("family:{family}"));
    let request = sched::Request {
        group: group.clone(),
        count: i.count,
        cpu: reservation.cpu,
        memory: reservation.memory,
        tcp_ports: reservation.tcp_ports.clone(),
        udp_ports: reservation.udp_ports.clone(),
        dynamic_ports: reservation.dynamic_ports,
        requires_attributes: def
            .requires_attributes
            .iter()
            .flatten()
            .filter_map(|a| Some((a.name.clone()?, a.value.clone())))
            .collect(),
        constraints,
        strategies,
    };
    Ok(Launch {
        arn: def.task_definition_arn.clone().unwrap_or_default(),
        def,
        family,
        overrides: i.overrides.cloned(),
        group,
        started_by: i.started_by.map(String::from),
        service: i.service.map(String::from),
        tags: tag_list,
        launch_type: i.launch_type.to_string(),
        strategy: i.strategy.to_vec(),
        held: HashMap::new(),
        enable_execute_command: i.enable_execute_command,
        awsvpc,
        request,
    })
}

/// What a FARGATE launch may not ask for: placement (Fargate places tasks
/// itself) and, after overrides, a task size outside Fargate's table.
fn fargate_launch_rules(
    def: &w::TaskDefinition,
    constraints: Option<&[w::PlacementConstraint]>,
    strategies: Option<&[w::PlacementStrategy]>,
) -> Result<(), EcsError> {
    let from_def = def.placement_constraints.as_deref().unwrap_or_default();
    if !from_def.is_empty() || constraints.is_some_and(|c| !c.is_empty()) {
        return Err(EcsError::invalid(
            "Placement constraints are not supported with FARGATE launch type.",
        ));
    }
    if strategies.is_some_and(|s| !s.is_empty()) {
        return Err(EcsError::invalid(
            "Placement strategies are not supported with FARGATE launch type.",
        ));
    }
    let cpu = def
        .cpu
        .as_deref()
        .and_then(berth_domain::taskdef::parse_cpu);
    let memory = def
        .memory
        .as_deref()
        .and_then(berth_domain::taskdef::parse_memory);
    match (cpu, memory) {
        (Some(c), Some(m)) if berth_domain::taskdef::fargate_size_ok(c, m) => Ok(()),
        (c, m) => Err(EcsError::client(format!(
            "No Fargate configuration exists for given values: {} CPU, {} memory. See the Amazon ECS documentation for the valid values.",
            c.map_or("no".into(), |c| c.to_string()),
            m.map_or("no".into(), |m| m.to_string()),
        ))),
    }
}

impl Launch {
    /// The task definition revision's ARN.
    pub(crate) fn arn(&self) -> &str {
        &self.arn
    }

    /// The task definition its tasks run, overrides applied.
    pub(crate) fn definition(&self) -> &w::TaskDefinition {
        &self.def
    }

    /// A new task of this launch on `ci`, with its interface when awsvpc.
    fn task(
        &self,
        cluster: &str,
        ci: &ContainerInstance,
        network: Option<TaskNetwork>,
        capacity_provider: Option<String>,
    ) -> Task {
        let containers = self
            .def
            .container_definitions
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.name.clone().unwrap_or_default(),
                    uuid::Uuid::new_v4().to_string(),
                )
            })
            .collect();
        Task {
            id: uuid::Uuid::new_v4().simple().to_string(),
            cluster: cluster.to_string(),
            task_definition_arn: self.arn.clone(),
            family: self.family.clone(),
            definition: self.def.clone(),
            containers,
            overrides: self.overrides.clone(),
            container_instance: ci.id.clone(),
            capacity_provider,
            availability_zone: ci
                .attribute("ecs.availability-zone")
                .and_then(|a| a.value.clone()),
            launch_type: self.launch_type.clone(),
            group: self.group.clone(),
            started_by: self.started_by.clone(),
            service: self.service.clone(),
            tags: self.tags.clone(),
            created_at: now(),
            desired_status: DesiredStatus::Running,
            stop: None,
            reservation: task::reservation(&self.def),
            enable_execute_command: self.enable_execute_command,
            network,
            deactivation: None,
            version: 1,
        }
    }
}

/// The ops that store a task: its record and its place in the instance's index.
pub(crate) fn write_task(scope: &Scope, t: &Task) -> [Op; 2] {
    [
        typed::put(&scope.task(&t.cluster, &t.id), t),
        Op::put(
            index_key(scope, t),
            t.desired_status.as_str().as_bytes().to_vec(),
        ),
    ]
}

/// Where a task sits in its host's task index, which its agent watches.
pub(crate) fn index_key(scope: &Scope, t: &Task) -> String {
    scope.instance_task(t.host_cluster(), &t.container_instance, &t.index_entry())
}

/// Where a launch runs: its launch type and, when a capacity-provider
/// strategy chose it (given, or the cluster's default), the strategy that
/// splits its tasks between providers.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LaunchCapacity {
    pub launch_type: String,
    pub strategy: Vec<w::CapacityProviderStrategyItem>,
}

/// The capacity a RunTask or CreateService asks for: `launchType`, a
/// `capacityProviderStrategy`, the cluster's default strategy, or EC2.
/// Every provider there is is a Fargate one (FARGATE, FARGATE_SPOT), so a
/// strategy means the FARGATE launch type.
pub(crate) fn launch_type(
    given: Option<&str>,
    strategy: Option<&[w::CapacityProviderStrategyItem]>,
    providers: &[String],
    cluster_default: &[w::CapacityProviderStrategyItem],
) -> Result<LaunchCapacity, EcsError> {
    let strategy = strategy.filter(|s| !s.is_empty());
    if given.is_some() && strategy.is_some() {
        return Err(EcsError::invalid(
            "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.",
        ));
    }
    if let Some(s) = strategy {
        capacity::validate_strategy(s, "capacityProviderStrategy")?;
        for item in s {
            let name = item.capacity_provider.as_deref().unwrap_or_default();
            if !providers.iter().any(|p| p == name) {
                return Err(EcsError::invalid(
                    "The specified capacity provider strategy cannot contain a capacity provider that is not \
                     associated with the cluster. Associate the capacity provider with the cluster or specify a \
                     valid capacity provider and try again.",
                ));
            }
        }
        // Stored as ECS shows it: base and weight spelt out.
        let strategy = s
            .iter()
            .map(|i| w::CapacityProviderStrategyItem {
                capacity_provider: i.capacity_provider.clone(),
                weight: Some(i.weight.unwrap_or(0)),
                base: Some(i.base.unwrap_or(0)),
            })
            .collect();
        return Ok(LaunchCapacity {
            launch_type: "FARGATE".into(),
            strategy,
        });
    }
    match given {
        Some("MANAGED_INSTANCES") => Err(EcsError::UnsupportedFeature(
            "launchType MANAGED_INSTANCES: Berth has no managed instances; use EC2, EXTERNAL or FARGATE."
                .into(),
        )),
        Some(lt) => {
            berth_domain::one_of(lt, berth_domain::task::LAUNCH_TYPES, "launchType")?;
            Ok(LaunchCapacity {
                launch_type: lt.to_string(),
                strategy: vec![],
            })
        }
        None if !cluster_default.is_empty() => Ok(LaunchCapacity {
            launch_type: "FARGATE".into(),
            strategy: cluster_default.to_vec(),
        }),
        None => Ok(LaunchCapacity {
            launch_type: "EC2".into(),
            strategy: vec![],
        }),
    }
}

/// One placement, ready to commit: the transaction's compares and ops,
/// the ids of the tasks it writes, and why instances were passed over.
pub(crate) struct Placed {
    pub compares: Vec<berth_store::Compare>,
    pub ops: Vec<Op>,
    pub ids: Vec<String>,
    pub failures: Vec<w::Failure>,
    /// The cluster has no container instance at all.
    pub no_instances: bool,
}

/// Plans `launch.request.count` tasks on the cluster's instances as they
/// are now. Committing the result fails if any other placement in the
/// cluster committed in between (the placement key), so the caller
/// re-plans instead of overcommitting an instance.
pub(crate) async fn place(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    launch: &Launch,
    only: Option<&str>,
) -> Result<Placed, ApiError> {
    // Fargate tasks go to the hidden pool's hosts, which hold tasks of
    // every cluster; the pool's placement key orders their placements.
    let fargate = launch.launch_type == "FARGATE";
    let hosts = if fargate { FARGATE_POOL } else { cluster };
    let lock = scope.placement(hosts);
    let lock_rev = st.store.get(&lock).await?.map_or(0, |kv| kv.mod_revision);
    let mut instances =
        typed::list::<ContainerInstance>(&*st.store, &scope.instances_of(hosts)).await?;
    let no_instances = instances.is_empty() && !fargate;
    if let Some(id) = only {
        instances.retain(|(_, ci)| ci.value.id == id);
    }
    let occupancy = if fargate {
        Occupancy::load_pool(st, scope).await?
    } else {
        Occupancy::load(st, scope, cluster).await?
    };
    let snapshot = sched::Snapshot::new(
        instances
            .iter()
            .map(|(_, ci)| occupancy.placeable(scope, &ci.value))
            .collect(),
    );
    let plan = snapshot.place(&launch.request, rand::random());
    let by_arn: HashMap<String, &ContainerInstance> = instances
        .iter()
        .map(|(_, ci)| (ci.value.arn(scope), &ci.value))
        .collect();
    let mut providers = capacity::assign(&launch.strategy, &launch.held, plan.placements.len())
        .into_iter()
        .map(Some)
        .chain(std::iter::repeat(None));
    let mut ops = vec![Op::put(lock.clone(), vec![])];
    let mut compares = vec![typed::unchanged(&lock, lock_rev)];
    let mut ids = vec![];
    let mut failures: Vec<w::Failure> = vec![];
    let mut addresses = Addresses::default();
    for p in &plan.placements {
        let Some(ci) = by_arn.get(&*p.instance) else {
            continue;
        };
        let provider = providers.next().flatten();
        match addresses
            .new_task(
                st,
                scope,
                cluster,
                launch,
                ci,
                provider,
                &mut compares,
                &mut ops,
            )
            .await?
        {
            Some(id) => ids.push(id),
            None => failures.push(failure(&*p.instance, "RESOURCE:ENI")),
        }
    }
    failures.extend(
        plan.failures
            .iter()
            .map(|f| failure(&*f.arn, f.reason.as_str())),
    );
    if fargate {
        // Fargate's hosts stay hidden: a shortfall is capacity, as on AWS.
        failures = if ids.len() < launch.request.count {
            vec![w::Failure {
                arn: None,
                reason: Some(FARGATE_CAPACITY_UNAVAILABLE.into()),
                detail: None,
            }]
        } else {
            vec![]
        };
    }
    Ok(Placed {
        compares,
        ops,
        ids,
        failures,
        no_instances,
    })
}

/// RunTask's failure reason when Fargate capacity runs short, in AWS's words.
pub(crate) const FARGATE_CAPACITY_UNAVAILABLE: &str =
    "Capacity is unavailable at this time. Please try again later or in a different availability zone";

/// The addresses of the subnets a placement uses, read once per subnet,
/// and the ones it hands out.
#[derive(Default)]
struct Addresses {
    taken: HashMap<String, std::collections::BTreeSet<std::net::Ipv4Addr>>,
    /// Per host: its warm addresses (subnet, address, key, mod revision)
    /// not handed out by this placement yet.
    warm: HashMap<String, Vec<(String, String, String, i64)>>,
}

impl Addresses {
    /// Adds a new task of `launch` on `ci` to a placement's transaction:
    /// its records and, for awsvpc, the address it claims (compared
    /// absent). None when its subnets in the instance's zone are full.
    #[allow(clippy::too_many_arguments)]
    async fn new_task(
        &mut self,
        st: &AppState,
        scope: &Scope,
        cluster: &str,
        launch: &Launch,
        ci: &ContainerInstance,
        provider: Option<String>,
        compares: &mut Vec<berth_store::Compare>,
        ops: &mut Vec<Op>,
    ) -> Result<Option<String>, ApiError> {
        let (network, warm) = match &launch.awsvpc {
            Some(a) => match self.take(st, scope, a, ci).await? {
                Some((n, warm)) => (Some(n), warm),
                None => return Ok(None),
            },
            None => (None, None),
        };
        let t = launch.task(cluster, ci, network, provider);
        if let Some(n) = &t.network {
            let key = scope.subnet_ip(&n.subnet_id, &n.ip);
            match warm {
                // The host's warm address: it is the task's now, and the
                // host's namespace at it becomes the task's.
                Some((warm_key, rev)) => {
                    compares.push(typed::unchanged(&warm_key, rev));
                    ops.push(Op::delete(warm_key));
                }
                None => compares.push(typed::unchanged(&key, 0)),
            }
            ops.push(Op::put(key, scope.task(cluster, &t.id).into_bytes()));
        }
        ops.extend(write_task(scope, &t));
        Ok(Some(t.id))
    }

    /// An interface for a task on `ci`: in the first of the task's subnets
    /// in the instance's zone, at one of the host's warm addresses there
    /// (with its key and revision), else at the subnet's lowest free
    /// address. None when those subnets are full.
    async fn take(
        &mut self,
        st: &AppState,
        scope: &Scope,
        awsvpc: &berth_domain::network::AwsVpc,
        ci: &ContainerInstance,
    ) -> Result<Option<(TaskNetwork, Option<(String, i64)>)>, ApiError> {
        use berth_domain::network::{allocate, Cidr, WarmAddress};
        if !self.warm.contains_key(&ci.id) {
            let held =
                typed::list::<WarmAddress>(&*st.store, &scope.warm_ips_of(&ci.cluster, &ci.id))
                    .await?
                    .into_iter()
                    .map(|(k, w)| (w.value.subnet_id, w.value.ip, k, w.mod_revision))
                    .collect();
            self.warm.insert(ci.id.clone(), held);
        }
        let zone = ci
            .attribute("ecs.availability-zone")
            .and_then(|a| a.value.clone())
            .unwrap_or_default();
        for id in &awsvpc.subnets {
            let Some(subnet) = st.config.network.subnet(id) else {
                continue;
            };
            let Some(cidr) = Cidr::parse(&subnet.cidr) else {
                continue;
            };
            if subnet.availability_zone != zone {
                continue;
            }
            let interface = |ip: String| {
                let hex = uuid::Uuid::new_v4().simple().to_string();
                TaskNetwork {
                    attachment_id: uuid::Uuid::new_v4().to_string(),
                    eni_id: format!("eni-{}", &hex[..17]),
                    subnet_id: id.clone(),
                    cidr: subnet.cidr.clone(),
                    ip,
                    security_groups: awsvpc.security_groups.clone(),
                }
            };
            let warm = self.warm.entry(ci.id.clone()).or_default();
            if let Some(i) = warm.iter().position(|w| &w.0 == id) {
                let (_, ip, key, rev) = warm.remove(i);
                return Ok(Some((interface(ip), Some((key, rev)))));
            }
            if !self.taken.contains_key(id) {
                let held = subnet_addresses(st, scope, id).await?;
                self.taken.insert(id.clone(), held);
            }
            let taken = self.taken.entry(id.clone()).or_default();
            let Some(ip) = allocate(&cidr, taken) else {
                continue;
            };
            taken.insert(ip);
            return Ok(Some((interface(ip.to_string()), None)));
        }
        Ok(None)
    }
}

/// The addresses held in a subnet now, by tasks and as warm addresses.
pub(crate) async fn subnet_addresses(
    st: &AppState,
    scope: &Scope,
    subnet: &str,
) -> Result<std::collections::BTreeSet<std::net::Ipv4Addr>, ApiError> {
    let ips = typed::names(&*st.store, &scope.subnet_ips_of(subnet)).await?;
    Ok(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
}

/// What a clientToken remembers: the request it came with and its tasks.
#[derive(serde::Serialize, serde::Deserialize)]
struct RunToken {
    fingerprint: String,
    tasks: Vec<String>,
}

fn fingerprint(req: &w::RunTaskRequest) -> String {
    let mut r = req.clone();
    r.client_token = None;
    serde_json::to_string(&r).unwrap_or_default()
}

async fn views(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    ids: &[String],
    include_tags: bool,
) -> Result<Vec<w::Task>, ApiError> {
    let mut out = vec![];
    for id in ids {
        if let Some(t) = typed::get::<Task>(&*st.store, &scope.task(cluster, id)).await? {
            let report = typed::get::<TaskReport>(&*st.store, &scope.task_state(cluster, id))
                .await?
                .map(|r| r.value);
            out.push(t.value.view(scope, report.as_ref(), include_tags));
        }
    }
    Ok(out)
}

pub(crate) fn failure(arn: impl Into<String>, reason: impl Into<String>) -> w::Failure {
    w::Failure {
        arn: Some(arn.into()),
        reason: Some(reason.into()),
        detail: None,
    }
}

pub async fn run_task(
    st: &AppState,
    ctx: &RequestContext,
    req: w::RunTaskRequest,
) -> Result<w::RunTaskResponse, ApiError> {
    let (cluster, record) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    let count = req.count.unwrap_or(1);
    if !(1..=MAX_RUN_COUNT).contains(&count) {
        return Err(EcsError::invalid(format!(
            "count must be between 1 and {MAX_RUN_COUNT}; got {count}."
        ))
        .into());
    }
    let capacity = launch_type(
        req.launch_type.as_deref(),
        req.capacity_provider_strategy.as_deref(),
        &record.value.capacity_providers,
        &record.value.default_strategy,
    )?;
    if let Some(t) = &req.client_token {
        if t.is_empty() || t.len() > 64 {
            return Err(EcsError::invalid("clientToken must be 1 to 64 characters.").into());
        }
    }
    let launch = prepare(
        st,
        &ctx.scope,
        LaunchInput {
            task_definition: req.task_definition.as_deref(),
            overrides: req.overrides.as_ref(),
            group: req.group.as_deref(),
            started_by: req.started_by.as_deref(),
            service: None,
            tags: req.tags.as_deref(),
            definition_tags: false,
            constraints: req.placement_constraints.as_deref(),
            strategies: req.placement_strategy.as_deref(),
            launch_type: &capacity.launch_type,
            strategy: &capacity.strategy,
            count: count as usize,
            enable_execute_command: req.enable_execute_command.unwrap_or(false),
            network_configuration: req.network_configuration.as_ref(),
        },
    )
    .await?;
    let token_key = req
        .client_token
        .as_deref()
        .map(|t| ctx.scope.run_token(&cluster, t));
    let token_lease = match &token_key {
        Some(_) => Some(st.store.lease_grant(TOKEN_RETENTION).await?),
        None => None,
    };
    let print = fingerprint(&req);
    let (scope, cluster, launch, token_key, print) =
        (&ctx.scope, &cluster, &launch, &token_key, &print);
    let (ids, failures) = compare_and_swap(
        st,
        || "Tasks are being placed in this cluster by other requests; try again.".into(),
        move || async move {
            let mut compares = vec![];
            if let Some(k) = token_key {
                if let Some(kv) = st.store.get(k).await? {
                    let seen: RunToken = typed::decode(&kv)?.value;
                    if &seen.fingerprint != print {
                        return Err(EcsError::Conflict(
                            "The clientToken was used before with different parameters.".into(),
                        )
                        .into());
                    }
                    return Ok(Attempt::Done((seen.tasks, vec![])));
                }
                compares.push(typed::unchanged(k, 0));
            }
            let mut placed = place(st, scope, cluster, launch, None).await?;
            if placed.no_instances {
                return Err(EcsError::invalid(
                    "No Container Instances were found in your cluster.",
                )
                .into());
            }
            compares.append(&mut placed.compares);
            let mut ops = placed.ops;
            let ids = placed.ids;
            let failures = if ids.len() < launch.request.count {
                placed.failures
            } else {
                vec![]
            };
            if let (Some(k), Some(lease)) = (token_key, &token_lease) {
                ops.push(Op::Put {
                    key: k.clone(),
                    value: typed::encode(&RunToken {
                        fingerprint: print.clone(),
                        tasks: ids.clone(),
                    }),
                    lease: Some(lease.id),
                });
            }
            Ok(Attempt::Write(Txn::when(compares, ops), (ids, failures)))
        },
    )
    .await?;
    if !ids.is_empty() {
        tracing::info!(cluster = %cluster, tasks = ids.len(), family = %launch.family, "tasks placed");
    }
    Ok(w::RunTaskResponse {
        tasks: Some(views(st, scope, cluster, &ids, true).await?),
        failures: Some(failures),
    })
}

pub async fn start_task(
    st: &AppState,
    ctx: &RequestContext,
    req: w::StartTaskRequest,
) -> Result<w::StartTaskResponse, ApiError> {
    let (cluster, _) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    let given = references(req.container_instances.as_deref(), 10)?;
    let launch = prepare(
        st,
        &ctx.scope,
        LaunchInput {
            task_definition: req.task_definition.as_deref(),
            overrides: req.overrides.as_ref(),
            group: req.group.as_deref(),
            started_by: req.started_by.as_deref(),
            service: None,
            tags: req.tags.as_deref(),
            definition_tags: false,
            constraints: None,
            strategies: None,
            launch_type: "EC2",
            strategy: &[],
            count: 1,
            enable_execute_command: req.enable_execute_command.unwrap_or(false),
            network_configuration: req.network_configuration.as_ref(),
        },
    )
    .await?;
    let (scope, cluster, launch, given) = (&ctx.scope, &cluster, &launch, &given);
    let (ids, failures) = compare_and_swap(
        st,
        || "Tasks are being placed in this cluster by other requests; try again.".into(),
        move || async move {
            let lock = scope.placement(cluster);
            let lock_rev = st.store.get(&lock).await?.map_or(0, |kv| kv.mod_revision);
            let occupancy = Occupancy::load(st, scope, cluster).await?;
            let mut ops = vec![Op::put(lock.clone(), vec![])];
            let mut compares = vec![typed::unchanged(&lock, lock_rev)];
            let mut addresses = Addresses::default();
            let (mut ids, mut failures) = (vec![], vec![]);
            // Each named instance gets one task if it can hold it; what
            // this request already put on it counts.
            let mut chosen: HashMap<String, (ContainerInstance, sched::Snapshot)> = HashMap::new();
            for g in given {
                let missing = || failure(g.clone(), "MISSING");
                let Some(id) = instance_id(scope, cluster, g) else {
                    failures.push(missing());
                    continue;
                };
                if !chosen.contains_key(&id) {
                    let Some(ci) =
                        typed::get::<ContainerInstance>(&*st.store, &scope.instance(cluster, &id))
                            .await?
                    else {
                        failures.push(missing());
                        continue;
                    };
                    let snap = sched::Snapshot::new(vec![occupancy.placeable(scope, &ci.value)]);
                    chosen.insert(id.clone(), (ci.value, snap));
                }
                let Some((ci, snap)) = chosen.get_mut(&id) else {
                    continue;
                };
                let plan = snap.place(&launch.request, 0);
                if plan.placements.is_empty() {
                    for f in &plan.failures {
                        failures.push(failure(&*f.arn, f.reason.as_str()));
                    }
                    continue;
                }
                snap.commit(&launch.request, &plan);
                match addresses
                    .new_task(
                        st,
                        scope,
                        cluster,
                        launch,
                        ci,
                        None,
                        &mut compares,
                        &mut ops,
                    )
                    .await?
                {
                    Some(id) => ids.push(id),
                    None => failures.push(failure(g.clone(), "RESOURCE:ENI")),
                }
            }
            let txn = Txn::when(compares, ops);
            Ok(Attempt::Write(txn, (ids, failures)))
        },
    )
    .await?;
    Ok(w::StartTaskResponse {
        tasks: Some(views(st, scope, cluster, &ids, true).await?),
        failures: Some(failures),
    })
}

/// Asks for tasks to stop: desired STOPPED with the stop's code and
/// reason; the agent does the rest. Tasks already asked keep their first
/// reason. Used by StopTask and forced deregistration.
pub(crate) async fn request_stop(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    id: &str,
    code: StopCode,
    reason: &str,
    failure: bool,
) -> Result<Option<Task>, ApiError> {
    let key = scope.task(cluster, id);
    let (key, reason) = (&key, reason);
    compare_and_swap(
        st,
        || "The task is being changed by another request; try again.".into(),
        move || async move {
            let Some(current) = typed::get::<Task>(&*st.store, key).await? else {
                return Ok(Attempt::Done(None));
            };
            let mut t = current.value;
            // A task already reported STOPPED keeps the stop it had: its
            // own stopCode and reason, and no place in its instance's index
            // (the gateway took it out).
            let state_key = scope.task_state(cluster, id);
            let state = typed::get::<TaskReport>(&*st.store, &state_key).await?;
            let observed = Task::last_status(state.as_ref().map(|r| &r.value));
            if t.desired_status == DesiredStatus::Stopped || observed == TaskStatus::Stopped {
                return Ok(Attempt::Done(Some(t)));
            }
            t.desired_status = DesiredStatus::Stopped;
            t.stop = Some(StopRequest {
                code,
                reason: reason.to_string(),
                at: now(),
                failure,
            });
            t.version += 1;
            let compares = vec![
                typed::unchanged(key, current.mod_revision),
                typed::unchanged(&state_key, state.as_ref().map_or(0, |r| r.mod_revision)),
            ];
            Ok(Attempt::Write(
                Txn::when(compares, write_task(scope, &t).to_vec()),
                Some(t),
            ))
        },
    )
    .await
}

pub async fn stop_task(
    st: &AppState,
    ctx: &RequestContext,
    req: w::StopTaskRequest,
) -> Result<w::StopTaskResponse, ApiError> {
    let (cluster, _) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    let given = req.task.as_deref().unwrap_or_default();
    let not_found = || EcsError::invalid("The referenced task was not found.");
    let id = arn::task_id(&ctx.scope, &cluster, given).ok_or_else(not_found)?;
    let reason = req
        .reason
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or("Task stopped by user");
    if reason.len() > 255 {
        return Err(EcsError::invalid("reason must be at most 255 characters.").into());
    }
    let t = request_stop(
        st,
        &ctx.scope,
        &cluster,
        &id,
        StopCode::UserInitiated,
        reason,
        false,
    )
    .await?
    .ok_or_else(not_found)?;
    tracing::info!(cluster = %cluster, task = %id, "task stop requested");
    let report = typed::get::<TaskReport>(&*st.store, &ctx.scope.task_state(&cluster, &id))
        .await?
        .map(|r| r.value);
    Ok(w::StopTaskResponse {
        task: Some(t.view(&ctx.scope, report.as_ref(), false)),
    })
}

pub async fn describe_tasks(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeTasksRequest,
) -> Result<w::DescribeTasksResponse, ApiError> {
    let (cluster, _) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    let given = req.tasks.clone().unwrap_or_default();
    if given.is_empty() {
        return Err(EcsError::invalid("Tasks cannot be empty.").into());
    }
    if given.len() > 100 {
        return Err(EcsError::invalid("tasks: at most 100 tasks per request.").into());
    }
    let mut include_tags = false;
    for i in req.include.iter().flatten() {
        berth_domain::one_of(i, &["TAGS"], "include")?;
        include_tags = true;
    }
    let mut found = vec![];
    let mut failures = vec![];
    for g in &given {
        let id = arn::task_id(&ctx.scope, &cluster, g);
        let record = match &id {
            Some(id) => typed::get::<Task>(&*st.store, &ctx.scope.task(&cluster, id)).await?,
            None => None,
        };
        match (record, id) {
            (Some(t), Some(id)) => {
                let report =
                    typed::get::<TaskReport>(&*st.store, &ctx.scope.task_state(&cluster, &id))
                        .await?
                        .map(|r| r.value);
                found.push(t.value.view(&ctx.scope, report.as_ref(), include_tags));
            }
            _ => {
                let arn = if g.starts_with("arn:") {
                    g.clone()
                } else {
                    ctx.scope.task_arn(&cluster, g)
                };
                failures.push(failure(arn, "MISSING"));
            }
        }
    }
    Ok(w::DescribeTasksResponse {
        tasks: Some(found),
        failures: Some(failures),
    })
}

pub async fn list_tasks(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ListTasksRequest,
) -> Result<w::ListTasksResponse, ApiError> {
    let (cluster, _) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    let limit = paging::max_results(req.max_results, 100)?;
    let desired = req.desired_status.as_deref().unwrap_or("RUNNING");
    berth_domain::one_of(desired, &["RUNNING", "PENDING", "STOPPED"], "desiredStatus")?;
    if let Some(lt) = req.launch_type.as_deref() {
        berth_domain::one_of(lt, berth_domain::task::LAUNCH_TYPES, "launchType")?;
    }
    if req.family.is_some() && req.service_name.is_some() {
        return Err(EcsError::invalid(
            "family and serviceName cannot be used together; choose one.",
        )
        .into());
    }
    let instance = match req.container_instance.as_deref() {
        Some(g) => Some(instance_id(&ctx.scope, &cluster, g).ok_or_else(|| {
            EcsError::invalid(format!(
                "containerInstance '{g}' does not name a container instance of cluster {cluster}."
            ))
        })?),
        None => None,
    };
    let service_group = req.service_name.as_deref().map(|s| format!("service:{s}"));
    let listing = format!("ListTasks/{cluster}");
    let after = paging::resume(&listing, req.next_token.as_deref())?;
    let all = ClusterTasks::load(st, &ctx.scope, &cluster).await?;
    let chosen = all
        .tasks
        .iter()
        .map(|t| &t.value)
        .filter(|t| {
            let report = all.report(&t.id);
            let want = t.effective_desired(report);
            match desired {
                "STOPPED" => want == DesiredStatus::Stopped,
                "PENDING" => {
                    want == DesiredStatus::Running && Task::last_status(report).is_pending()
                }
                _ => want == DesiredStatus::Running,
            }
        })
        .filter(|t| req.family.as_ref().is_none_or(|f| &t.family == f))
        .filter(|t| {
            instance
                .as_ref()
                .is_none_or(|i| &t.container_instance == i && !t.fargate())
        })
        .filter(|t| {
            req.started_by
                .as_ref()
                .is_none_or(|s| t.started_by.as_ref() == Some(s))
        })
        .filter(|t| service_group.as_ref().is_none_or(|g| &t.group == g))
        .filter(|t| req.launch_type.as_ref().is_none_or(|l| &t.launch_type == l))
        .map(|t| (t.id.clone(), t.arn(&ctx.scope)))
        .collect();
    let (arns, next_token) = paging::page(&listing, chosen, after.as_deref(), limit);
    Ok(w::ListTasksResponse {
        task_arns: Some(arns),
        next_token,
    })
}
