//! Launch preparation: a task definition (resolved, checked against the
//! launch type, overrides applied) and the scheduler's request, built once
//! for RunTask, StartTask, CreateService and the service controller.

use crate::taskdefs::{parse_reference, resolve};
use crate::{Control, ControlError};
use berth_domain::instance::ContainerInstance;
use berth_domain::task::{self, DesiredStatus, Task, TaskNetwork};
use berth_domain::{capacity, tags, EcsError, Scope};
use berth_scheduler as sched;
use berth_wire::ecs as w;
use std::collections::HashMap;

/// Constraints (the task definition's included) and strategies per request.
const MAX_CONSTRAINTS: usize = 10;
const MAX_STRATEGIES: usize = 5;

/// A placement constraint's (type, expression) or a strategy's (type, field).
type Asked = (String, Option<String>);

/// A validated task definition, ready to become tasks.
pub struct Launch {
    pub(crate) def: w::TaskDefinition,
    pub(crate) family: String,
    pub(crate) arn: String,
    pub(crate) overrides: Option<w::TaskOverride>,
    pub(crate) group: String,
    pub(crate) started_by: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) tags: Vec<w::Tag>,
    pub(crate) launch_type: String,
    /// The capacity-provider strategy that splits its tasks, if any.
    pub(crate) strategy: Vec<w::CapacityProviderStrategyItem>,
    /// Tasks each capacity provider already holds for this launch's owner
    /// (a service's running tasks), which the split counts in.
    pub held: HashMap<String, usize>,
    pub(crate) enable_execute_command: bool,
    /// awsvpc: the subnets and security groups its interface may use.
    pub(crate) awsvpc: Option<berth_domain::network::AwsVpc>,
    /// The constraints and strategies as given, for tasks that wait for
    /// capacity and are placed later.
    pub(crate) asked: (Vec<Asked>, Vec<Asked>),
    pub request: sched::Request,
}

#[derive(Default)]
pub struct LaunchInput<'a> {
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

pub async fn prepare(
    st: &Control,
    scope: &Scope,
    i: LaunchInput<'_>,
) -> Result<Launch, ControlError> {
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
    let mut asked_constraints = vec![];
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
        asked_constraints.push((c.0.unwrap_or_default().to_string(), c.1.map(String::from)));
    }
    let strategies_given = i.strategies.unwrap_or_default();
    if strategies_given.len() > MAX_STRATEGIES {
        return Err(EcsError::invalid(format!(
            "placementStrategy: at most {MAX_STRATEGIES} strategies."
        ))
        .into());
    }
    let asked_strategies = strategies_given
        .iter()
        .map(|s| (s.r#type.clone().unwrap_or_default(), s.field.clone()))
        .collect();
    let mut strategies = strategies_given
        .iter()
        .map(|s| {
            sched::Strategy::parse(s.r#type.as_deref().unwrap_or_default(), s.field.as_deref())
                .map_err(|e| EcsError::invalid(format!("placementStrategy: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if fargate {
        strategies = fargate_strategies();
    }
    let network = st.networks.current();
    let awsvpc = network.awsvpc(
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
            .filter_map(|id| network.subnet(id))
            .map(|s| s.availability_zone.clone())
            .collect();
        let zone_rule = format!("attribute:ecs.availability-zone in [{}]", zones.join(", "));
        constraints.push(
            sched::Constraint::parse("memberOf", Some(&zone_rule))
                .map_err(|e| EcsError::invalid(format!("networkConfiguration: {e}")))?,
        );
        asked_constraints.push(("memberOf".into(), Some(zone_rule)));
    }
    let group = i
        .group
        .map(String::from)
        .unwrap_or_else(|| format!("family:{family}"));
    let request = request_of(&def, group.clone(), i.count, constraints, strategies);
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
        asked: (asked_constraints, asked_strategies),
        request,
    })
}

/// Fargate spreads a launch's tasks across zones, then hosts.
pub(crate) fn fargate_strategies() -> Vec<sched::Strategy> {
    ["attribute:ecs.availability-zone", "instanceId"]
        .iter()
        .filter_map(|f| sched::Strategy::parse("spread", Some(f)).ok())
        .collect()
}

/// The scheduler's request for `count` tasks of `def` in `group`.
fn request_of(
    def: &w::TaskDefinition,
    group: String,
    count: usize,
    constraints: Vec<sched::Constraint>,
    strategies: Vec<sched::Strategy>,
) -> sched::Request {
    let reservation = task::reservation(def);
    sched::Request {
        group,
        count,
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
    }
}

/// The request that places a task waiting for capacity, as it was asked
/// for; None if what it asked no longer parses (it never should: it was
/// checked when asked).
pub(crate) fn waiting_request(t: &Task, w: &capacity::Waiting) -> Option<sched::Request> {
    let constraints = w
        .constraints
        .iter()
        .map(|(kind, expr)| sched::Constraint::parse(kind, expr.as_deref()).ok())
        .collect::<Option<Vec<_>>>()?;
    let strategies = w
        .strategies
        .iter()
        .map(|(kind, field)| sched::Strategy::parse(kind, field.as_deref()).ok())
        .collect::<Option<Vec<_>>>()?;
    Some(request_of(
        &t.definition,
        t.group.clone(),
        1,
        constraints,
        strategies,
    ))
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
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The task definition its tasks run, overrides applied.
    pub fn definition(&self) -> &w::TaskDefinition {
        &self.def
    }

    /// What a task of this launch waiting for `provider`'s capacity needs
    /// to be placed later.
    pub(crate) fn waiting(&self, provider: &str, now: f64) -> capacity::Waiting {
        capacity::Waiting {
            provider: provider.to_string(),
            constraints: self.asked.0.clone(),
            strategies: self.asked.1.clone(),
            subnets: self
                .awsvpc
                .as_ref()
                .map(|a| a.subnets.clone())
                .unwrap_or_default(),
            security_groups: self
                .awsvpc
                .as_ref()
                .map(|a| a.security_groups.clone())
                .unwrap_or_default(),
            awsvpc: self.awsvpc.is_some(),
            since: now,
        }
    }

    /// A new task of this launch on `ci` (None: waiting for capacity),
    /// with its interface when awsvpc.
    pub(crate) fn task(
        &self,
        now: f64,
        cluster: &str,
        ci: Option<&ContainerInstance>,
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
            container_instance: ci.map(|c| c.id.clone()).unwrap_or_default(),
            capacity_provider,
            availability_zone: ci
                .and_then(|c| c.attribute("ecs.availability-zone"))
                .and_then(|a| a.value.clone()),
            launch_type: self.launch_type.clone(),
            group: self.group.clone(),
            started_by: self.started_by.clone(),
            service: self.service.clone(),
            tags: self.tags.clone(),
            created_at: now,
            desired_status: DesiredStatus::Running,
            stop: None,
            reservation: task::reservation(&self.def),
            enable_execute_command: self.enable_execute_command,
            protected_until: None,
            network,
            deactivation: None,
            version: 1,
        }
    }
}

/// Where a launch runs: its launch type and, when a capacity-provider
/// strategy chose it (given, or the cluster's default), the strategy that
/// splits its tasks between providers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaunchCapacity {
    pub launch_type: String,
    pub strategy: Vec<w::CapacityProviderStrategyItem>,
}

/// The capacity a RunTask or CreateService asks for: `launchType`, a
/// `capacityProviderStrategy`, the cluster's default strategy, or EC2. A
/// strategy of the Fargate providers (FARGATE, FARGATE_SPOT) means the
/// FARGATE launch type; one of Auto Scaling group providers the EC2 one,
/// placing on those groups' instances.
pub fn launch_type(
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
    let strategy = strategy
        .or_else(|| (!cluster_default.is_empty() && given.is_none()).then_some(cluster_default));
    if let Some(s) = strategy {
        capacity::validate_strategy(s, "capacityProviderStrategy")?;
        // Auto Scaling group providers place on their groups' instances
        // (the EC2 launch type); the Fargate ones on Fargate.
        let custom = s
            .iter()
            .filter(|i| {
                !capacity::BUILT_IN.contains(&i.capacity_provider.as_deref().unwrap_or_default())
            })
            .count();
        if custom > 0 && custom < s.len() {
            return Err(EcsError::invalid(
                "The capacity provider strategy cannot contain a mix of capacity providers using Auto Scaling groups and Fargate providers. Specify one or the other and try again.",
            ));
        }
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
            launch_type: if custom > 0 { "EC2" } else { "FARGATE" }.into(),
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
        None => Ok(LaunchCapacity {
            launch_type: "EC2".into(),
            strategy: vec![],
        }),
    }
}
