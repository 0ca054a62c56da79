//! RegisterTaskDefinition: ECS's validation rules and the normalised,
//! computed fields (`compatibilities`, `requiresAttributes`, defaults).
//!
//! A task definition is a user document returned as registered, so it is
//! kept as the wire shape; this module decides what is accepted and fills in
//! what ECS fills in.

use crate::{tags, valid_name, EcsError, Scope, Timestamp};
use berth_wire::ecs as w;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Containers per task definition (ECS quota).
pub const MAX_CONTAINERS: usize = 10;
/// Default ceiling for Fargate's stopTimeout, in seconds.
pub const FARGATE_MAX_STOP_TIMEOUT: i32 = 120;

/// A stored revision: the definition as DescribeTaskDefinition returns it, and its tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTaskDefinition {
    pub def: w::TaskDefinition,
    #[serde(default)]
    pub tags: Vec<w::Tag>,
}

/// Per-family bookkeeping kept next to the revisions: the last revision ever
/// issued (so revisions are never reused, even after deletion).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    pub name: String,
    pub last_revision: i64,
}

/// A request that passed validation, waiting for its revision number.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub family: String,
    def: w::TaskDefinition,
    pub tags: Vec<w::Tag>,
}

impl Prepared {
    /// The definition as revision `revision`, registered at `now` by `principal`.
    pub fn finish(
        &self,
        scope: &Scope,
        revision: i64,
        now: Timestamp,
        principal: &str,
    ) -> StoredTaskDefinition {
        let mut def = self.def.clone();
        def.task_definition_arn = Some(scope.task_definition_arn(&self.family, revision));
        def.revision = Some(revision as i32);
        def.status = Some("ACTIVE".into());
        def.registered_at = Some(now);
        def.registered_by = Some(principal.to_string());
        StoredTaskDefinition {
            def,
            tags: self.tags.clone(),
        }
    }
}

fn client(msg: impl Into<String>) -> EcsError {
    EcsError::client(msg)
}

/// Parses a task-level `cpu` ("1024", "1 vCPU", "0.25 vcpu") into CPU units.
pub fn parse_cpu(s: &str) -> Option<i64> {
    parse_units(s, &["vcpu"], 1024)
}

/// Parses a task-level `memory` ("2048", "2 GB", "0.5gb") into MiB.
pub fn parse_memory(s: &str) -> Option<i64> {
    parse_units(s, &["gb"], 1024)
}

fn parse_units(s: &str, suffixes: &[&str], factor: i64) -> Option<i64> {
    let lower = s.trim().to_ascii_lowercase();
    for suffix in suffixes {
        if let Some(num) = lower.strip_suffix(suffix) {
            let n: f64 = num.trim().parse().ok()?;
            let v = n * factor as f64;
            return (n.is_finite() && n > 0.0 && v.fract() == 0.0).then_some(v as i64);
        }
    }
    lower.parse::<i64>().ok().filter(|v| *v > 0)
}

/// Whether (cpu units, memory MiB) is a Fargate task size (ecs-reference §3.2).
pub fn fargate_size_ok(cpu: i64, memory: i64) -> bool {
    let (lo, hi, step) = match cpu {
        256 => return [512, 1024, 2048].contains(&memory),
        512 => (1024, 4096, 1024),
        1024 => (2048, 8192, 1024),
        2048 => (4096, 16384, 1024),
        4096 => (8192, 30720, 1024),
        8192 => (16384, 61440, 4096),
        16384 => (32768, 122880, 8192),
        _ => return false,
    };
    (lo..=hi).contains(&memory) && (memory - lo) % step == 0
}

fn check_enum(value: &str, allowed: &[&str], field: &str) -> Result<(), EcsError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(client(format!(
            "Invalid value '{value}' for {field}. Valid values: {}",
            allowed.join(", ")
        )))
    }
}

/// Validates a RegisterTaskDefinition request and normalises it.
/// `fargate_max_stop_timeout` is the ceiling for Fargate containers' stopTimeout.
pub fn prepare(
    req: &w::RegisterTaskDefinitionRequest,
    fargate_max_stop_timeout: i32,
) -> Result<Prepared, EcsError> {
    let family = req.family.clone().unwrap_or_default();
    if family.is_empty() {
        return Err(client("Family must not be empty."));
    }
    if !valid_name(&family) {
        return Err(client(format!(
            "Invalid family '{family}'. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed."
        )));
    }
    if req.trusted_execution_configuration.is_some() {
        return Err(EcsError::UnsupportedFeature(
            "trustedExecutionConfiguration: Berth's hosts offer no trusted execution environments."
                .into(),
        ));
    }
    let containers = req.container_definitions.clone().unwrap_or_default();
    if containers.is_empty() {
        return Err(client("Container list cannot be empty."));
    }
    if containers.len() > MAX_CONTAINERS {
        return Err(client(format!(
            "Too many containers: a task definition can have at most {MAX_CONTAINERS} container definitions."
        )));
    }
    let tag_list = req.tags.clone().unwrap_or_default();
    tags::validate(&tag_list)?;

    let compat_req = req.requires_compatibilities.clone().unwrap_or_default();
    for c in &compat_req {
        check_enum(c, w::enums::COMPATIBILITY, "requiresCompatibilities")?;
    }
    let fargate = compat_req.iter().any(|c| c == "FARGATE");

    let network_mode = req.network_mode.clone();
    if let Some(m) = &network_mode {
        check_enum(m, w::enums::NETWORK_MODE, "networkMode")?;
    }
    let mode = network_mode.as_deref().unwrap_or("bridge");
    if let Some(p) = &req.pid_mode {
        check_enum(p, &["host", "task"], "pidMode")?;
    }
    if let Some(p) = &req.ipc_mode {
        check_enum(p, &["host", "task", "none"], "ipcMode")?;
    }
    if let Some(arch) = req
        .runtime_platform
        .as_ref()
        .and_then(|p| p.cpu_architecture.as_deref())
    {
        check_enum(
            arch,
            w::enums::CPU_ARCHITECTURE,
            "runtimePlatform.cpuArchitecture",
        )?;
    }
    if let Some(os) = req
        .runtime_platform
        .as_ref()
        .and_then(|p| p.operating_system_family.as_deref())
    {
        check_enum(
            os,
            w::enums::OS_FAMILY,
            "runtimePlatform.operatingSystemFamily",
        )?;
    }

    let task_cpu = match &req.cpu {
        Some(s) => Some(parse_cpu(s).ok_or_else(|| {
            client(format!("Invalid 'cpu' setting for task: '{s}'. Use CPU units (e.g. 1024) or vCPUs (e.g. 1 vCPU)."))
        })?),
        None => None,
    };
    let task_memory = match &req.memory {
        Some(s) => Some(parse_memory(s).ok_or_else(|| {
            client(format!(
                "Invalid 'memory' setting for task: '{s}'. Use MiB (e.g. 2048) or GB (e.g. 2 GB)."
            ))
        })?),
        None => None,
    };
    if let Some(c) = task_cpu {
        if !(128..=196_608).contains(&c) {
            return Err(client(format!(
                "Invalid 'cpu' setting for task. The task cpu must be between 128 and 196608 CPU units; got {c}."
            )));
        }
    }
    if let Some(m) = task_memory {
        if m < 6 {
            return Err(client(format!(
                "Invalid 'memory' setting for task. The minimum is 6 MiB; got {m}."
            )));
        }
    }

    let volumes = req.volumes.clone().unwrap_or_default();
    let mut volume_names = HashSet::new();
    for v in &volumes {
        let name = v.name.as_deref().unwrap_or_default();
        if !valid_name(name) {
            return Err(client(format!(
                "Invalid volume name '{name}'. Up to 255 letters, numbers, hyphens, and underscores are allowed."
            )));
        }
        if !volume_names.insert(name.to_string()) {
            return Err(client(format!("Duplicate volume name '{name}'.")));
        }
        if let Some(d) = &v.docker_volume_configuration {
            if let Some(scope) = &d.scope {
                check_enum(
                    scope,
                    &["task", "shared"],
                    "volumes.dockerVolumeConfiguration.scope",
                )?;
            }
            if d.autoprovision == Some(true) && d.scope.as_deref() != Some("shared") {
                return Err(client(format!(
                    "Invalid volume '{name}': autoprovision is only supported for shared-scope Docker volumes."
                )));
            }
        }
    }
    for pc in req.placement_constraints.clone().unwrap_or_default() {
        if pc.r#type.as_deref() != Some("memberOf") {
            return Err(client(
                "Task definition placement constraints support only type 'memberOf'.",
            ));
        }
        if pc.expression.as_deref().unwrap_or_default().is_empty() {
            return Err(client(
                "A memberOf placement constraint requires an expression.",
            ));
        }
    }
    if let Some(es) = &req.ephemeral_storage {
        let size = es.size_in_gi_b.unwrap_or(0);
        if !(21..=200).contains(&size) {
            return Err(client(format!(
                "Invalid 'ephemeralStorage.sizeInGiB' value {size}. It must be between 21 and 200 GiB."
            )));
        }
    }

    let mut names = HashSet::new();
    let mut by_name: HashMap<String, w::ContainerDefinition> = HashMap::new();
    let mut normalised = Vec::with_capacity(containers.len());
    let mut cpu_sum: i64 = 0;
    let mut host_ports: HashSet<(i32, String)> = HashSet::new();
    for c in &containers {
        let name = c.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(client("Container.name should not be null or empty."));
        }
        if !valid_name(&name) {
            return Err(client(format!(
                "Invalid container name '{name}'. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed."
            )));
        }
        if !names.insert(name.clone()) {
            return Err(client(format!(
                "Duplicate container name '{name}' in task definition."
            )));
        }
        let image = c.image.clone().unwrap_or_default();
        if image.trim().is_empty() {
            return Err(client("Container.image should not be null or empty."));
        }
        if image.len() > 255
            || image
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            return Err(client("Container.image contains invalid characters."));
        }
        let memory = c.memory;
        let reservation = c.memory_reservation;
        if task_memory.is_none() && memory.is_none() && reservation.is_none() {
            return Err(client(format!(
                "Invalid setting for container '{name}'. At least one of 'memory' or 'memoryReservation' must be specified."
            )));
        }
        for (field, value) in [("memory", memory), ("memoryReservation", reservation)] {
            if let Some(v) = value {
                if v < 6 {
                    return Err(client(format!(
                        "Invalid '{field}' setting for container '{name}'. The minimum is 6 MiB; got {v}."
                    )));
                }
                if let Some(tm) = task_memory {
                    if i64::from(v) > tm {
                        return Err(client(format!(
                            "Invalid '{field}' setting for container '{name}'. It must not exceed the task memory ({tm} MiB)."
                        )));
                    }
                }
            }
        }
        if let (Some(m), Some(r)) = (memory, reservation) {
            if m < r {
                return Err(client(format!(
                    "Invalid setting for container '{name}'. 'memory' must be greater than or equal to 'memoryReservation'."
                )));
            }
        }
        let cpu = c.cpu.unwrap_or(0);
        if !(0..=262_144).contains(&cpu) {
            return Err(client(format!(
                "Invalid 'cpu' setting for container '{name}'. It must be between 0 and 262144 CPU units."
            )));
        }
        cpu_sum += i64::from(cpu);

        let mut port_mappings = c.port_mappings.clone().unwrap_or_default();
        if mode == "none" && !port_mappings.is_empty() {
            return Err(client(format!(
                "Invalid setting for container '{name}'. Port mappings are not supported when networkMode=none."
            )));
        }
        for pm in &mut port_mappings {
            let protocol = pm.protocol.clone().unwrap_or_else(|| "tcp".into());
            check_enum(&protocol, &["tcp", "udp"], "portMappings.protocol")?;
            pm.protocol = Some(protocol.clone());
            if let Some(ap) = &pm.app_protocol {
                check_enum(ap, &["http", "http2", "grpc"], "portMappings.appProtocol")?;
            }
            let container_port = match (pm.container_port, &pm.container_port_range) {
                (Some(p), _) => p,
                (None, Some(_)) => continue,
                (None, None) => {
                    return Err(client(format!(
                    "Invalid setting for container '{name}'. portMappings require a containerPort."
                )))
                }
            };
            if !(1..=65535).contains(&container_port) {
                return Err(client(format!(
                    "Invalid 'containerPort' setting for container '{name}': {container_port}. Ports must be between 1 and 65535."
                )));
            }
            if let Some(hp) = pm.host_port {
                if !(0..=65535).contains(&hp) {
                    return Err(client(format!(
                        "Invalid 'hostPort' setting for container '{name}': {hp}. Ports must be between 0 and 65535."
                    )));
                }
            }
            if mode == "host" || mode == "awsvpc" {
                match pm.host_port {
                    Some(hp) if hp != container_port && hp != 0 => {
                        return Err(client(format!(
                            "When networkMode={mode}, the host ports and container ports in port mappings must match."
                        )))
                    }
                    _ => pm.host_port = Some(container_port),
                }
            }
            if let Some(hp) = pm.host_port.filter(|p| *p != 0) {
                if !host_ports.insert((hp, protocol.clone())) {
                    return Err(client(format!(
                        "Host port {hp}/{protocol} is used by more than one port mapping in the task definition."
                    )));
                }
            }
        }

        if let Some(hc) = &c.health_check {
            check_health(&name, hc)?;
        }
        if let Some(st) = c.stop_timeout {
            let max = if fargate {
                fargate_max_stop_timeout
            } else {
                i32::MAX
            };
            if st < 0 || st > max {
                return Err(client(format!(
                    "Invalid 'stopTimeout' setting for container '{name}': {st}. It must be between 0 and {max} seconds."
                )));
            }
        }
        if let Some(st) = c.start_timeout {
            if st < 0 {
                return Err(client(format!(
                    "Invalid 'startTimeout' setting for container '{name}': must not be negative."
                )));
            }
        }
        if let Some(rp) = &c.restart_policy {
            if let Some(period) = rp.restart_attempt_period {
                if !(60..=1800).contains(&period) {
                    return Err(client(format!(
                        "Invalid 'restartPolicy' setting for container '{name}': restartAttemptPeriod {period} must be between 60 and 1800 seconds."
                    )));
                }
            }
            if rp.ignored_exit_codes.as_ref().is_some_and(|c| c.len() > 50) {
                return Err(client(format!(
                    "Invalid 'restartPolicy' setting for container '{name}': ignoredExitCodes can hold at most 50 exit codes."
                )));
            }
        }
        if let Some(lc) = &c.log_configuration {
            check_enum(
                lc.log_driver.as_deref().unwrap_or_default(),
                w::enums::LOG_DRIVER,
                "logConfiguration.logDriver",
            )?;
        }
        for u in c.ulimits.clone().unwrap_or_default() {
            check_enum(
                u.name.as_deref().unwrap_or_default(),
                w::enums::ULIMIT_NAME,
                "ulimits.name",
            )?;
            if u.soft_limit.unwrap_or(0) > u.hard_limit.unwrap_or(0) {
                return Err(client(format!(
                    "Invalid 'ulimits' setting for container '{name}': softLimit must not exceed hardLimit."
                )));
            }
        }
        for mp in c.mount_points.clone().unwrap_or_default() {
            let src = mp.source_volume.unwrap_or_default();
            if !volume_names.contains(&src) {
                return Err(client(format!(
                    "Invalid 'mountPoints' setting for container '{name}': sourceVolume '{src}' is not a volume of the task definition."
                )));
            }
            if mp.container_path.unwrap_or_default().is_empty() {
                return Err(client(format!("Invalid 'mountPoints' setting for container '{name}': containerPath is required.")));
            }
        }
        if c.links.as_ref().is_some_and(|l| !l.is_empty()) && mode != "bridge" {
            return Err(client(format!(
                "Links are not supported when networkMode={mode}."
            )));
        }
        if c.hostname.is_some() && (mode == "awsvpc" || mode == "host") {
            return Err(client(format!(
                "The hostname parameter is not supported when networkMode={mode}."
            )));
        }
        for e in c.environment.clone().unwrap_or_default() {
            if e.name.unwrap_or_default().is_empty() {
                return Err(client(format!("Invalid 'environment' setting for container '{name}': variable names must not be empty.")));
            }
        }

        let mut n = c.clone();
        n.essential = Some(c.essential.unwrap_or(true));
        n.cpu = Some(cpu);
        n.port_mappings = Some(port_mappings);
        n.environment = Some(c.environment.clone().unwrap_or_default());
        n.mount_points = Some(c.mount_points.clone().unwrap_or_default());
        n.volumes_from = Some(c.volumes_from.clone().unwrap_or_default());
        n.system_controls = Some(c.system_controls.clone().unwrap_or_default());
        by_name.insert(name, n.clone());
        normalised.push(n);
    }

    if !normalised.iter().any(|c| c.essential == Some(true)) {
        return Err(client("Task definition does not have any essential container. At least one container must be essential."));
    }
    if let Some(tc) = task_cpu {
        if cpu_sum > tc {
            return Err(client(format!(
                "Invalid 'cpu' setting for task. The sum of the containers' cpu ({cpu_sum}) must not exceed the task cpu ({tc})."
            )));
        }
    }
    check_dependencies(&normalised, &by_name)?;
    for c in &normalised {
        for vf in c.volumes_from.clone().unwrap_or_default() {
            let src = vf.source_container.unwrap_or_default();
            if !by_name.contains_key(&src) || c.name.as_deref() == Some(src.as_str()) {
                return Err(client(format!(
                    "Invalid 'volumesFrom' setting for container '{}': sourceContainer '{src}' is not another container of the task definition.",
                    c.name.as_deref().unwrap_or_default()
                )));
            }
        }
    }

    let fargate_problem = fargate_problem(
        req,
        mode,
        task_cpu,
        task_memory,
        &normalised,
        &volumes,
        fargate_max_stop_timeout,
    );
    if fargate {
        if let Some(p) = fargate_problem.clone() {
            return Err(client(p));
        }
    }

    let mut compatibilities = vec!["EC2".to_string()];
    if fargate_problem.is_none() {
        compatibilities.push("FARGATE".into());
    }
    if mode != "awsvpc" {
        compatibilities.push("EXTERNAL".into());
    }
    for c in &compat_req {
        if !compatibilities.contains(c) {
            return Err(client(format!(
                "Task definition is not compatible with requiresCompatibilities '{c}'."
            )));
        }
    }

    let def = w::TaskDefinition {
        family: Some(family.clone()),
        container_definitions: Some(normalised.clone()),
        task_role_arn: req.task_role_arn.clone(),
        execution_role_arn: req.execution_role_arn.clone(),
        network_mode: network_mode.clone(),
        volumes: Some(volumes.clone()),
        placement_constraints: Some(req.placement_constraints.clone().unwrap_or_default()),
        requires_compatibilities: req.requires_compatibilities.clone(),
        compatibilities: Some(compatibilities),
        requires_attributes: Some(requires_attributes(req, mode, &normalised)),
        cpu: task_cpu.map(|c| c.to_string()),
        memory: task_memory.map(|m| m.to_string()),
        pid_mode: req.pid_mode.clone(),
        ipc_mode: req.ipc_mode.clone(),
        proxy_configuration: req.proxy_configuration.clone(),
        inference_accelerators: req.inference_accelerators.clone(),
        ephemeral_storage: req.ephemeral_storage.clone(),
        runtime_platform: req.runtime_platform.clone(),
        enable_fault_injection: req.enable_fault_injection,
        ..Default::default()
    };
    Ok(Prepared {
        family,
        def,
        tags: tag_list,
    })
}

fn check_health(name: &str, hc: &w::HealthCheck) -> Result<(), EcsError> {
    let cmd = hc.command.clone().unwrap_or_default();
    let ok_cmd = match cmd.first().map(String::as_str) {
        Some("CMD") | Some("CMD-SHELL") => cmd.len() > 1,
        Some("NONE") => true,
        _ => false,
    };
    if !ok_cmd {
        return Err(client(format!(
            "Invalid 'healthCheck' setting for container '{name}': command must start with CMD, CMD-SHELL or NONE followed by the command."
        )));
    }
    for (field, value, lo, hi) in [
        ("interval", hc.interval, 5, 300),
        ("timeout", hc.timeout, 2, 60),
        ("retries", hc.retries, 1, 10),
        ("startPeriod", hc.start_period, 0, 300),
    ] {
        if let Some(v) = value {
            if !(lo..=hi).contains(&v) {
                return Err(client(format!(
                    "Invalid 'healthCheck.{field}' setting for container '{name}': {v}. It must be between {lo} and {hi}."
                )));
            }
        }
    }
    Ok(())
}

fn check_dependencies(
    containers: &[w::ContainerDefinition],
    by_name: &HashMap<String, w::ContainerDefinition>,
) -> Result<(), EcsError> {
    let mut edges: HashMap<String, Vec<String>> = HashMap::new();
    for c in containers {
        let name = c.name.clone().unwrap_or_default();
        for d in c.depends_on.clone().unwrap_or_default() {
            let target = d.container_name.clone().unwrap_or_default();
            let condition = d.condition.clone().unwrap_or_default();
            check_enum(
                &condition,
                &["START", "COMPLETE", "SUCCESS", "HEALTHY"],
                "dependsOn.condition",
            )?;
            let Some(t) = by_name.get(&target).filter(|_| target != name) else {
                return Err(client(format!(
                    "Invalid 'dependsOn' setting for container '{name}': '{target}' is not another container of the task definition."
                )));
            };
            if (condition == "COMPLETE" || condition == "SUCCESS") && t.essential == Some(true) {
                return Err(client(format!(
                    "Invalid 'dependsOn' setting for container '{name}': dependency condition {condition} is not allowed on essential container '{target}'."
                )));
            }
            if condition == "HEALTHY" && t.health_check.is_none() {
                return Err(client(format!(
                    "Invalid 'dependsOn' setting for container '{name}': dependency condition HEALTHY requires container '{target}' to have a healthCheck."
                )));
            }
            edges.entry(name.clone()).or_default().push(target);
        }
    }
    // Cycle check by depth-first search.
    fn visit(
        n: &str,
        edges: &HashMap<String, Vec<String>>,
        state: &mut HashMap<String, u8>,
    ) -> bool {
        match state.get(n) {
            Some(1) => return false,
            Some(2) => return true,
            _ => {}
        }
        state.insert(n.to_string(), 1);
        for m in edges.get(n).into_iter().flatten() {
            if !visit(m, edges, state) {
                return false;
            }
        }
        state.insert(n.to_string(), 2);
        true
    }
    let mut state = HashMap::new();
    for n in edges.keys() {
        if !visit(n, &edges, &mut state) {
            return Err(client(
                "Invalid 'dependsOn' settings: container dependencies must not form a cycle.",
            ));
        }
    }
    Ok(())
}

/// The first Fargate rule the request breaks, worded as ECS words it.
fn fargate_problem(
    req: &w::RegisterTaskDefinitionRequest,
    mode: &str,
    cpu: Option<i64>,
    memory: Option<i64>,
    containers: &[w::ContainerDefinition],
    volumes: &[w::Volume],
    max_stop_timeout: i32,
) -> Option<String> {
    if mode != "awsvpc" {
        return Some("Fargate only supports network mode \u{2018}awsvpc\u{2019}.".into());
    }
    let Some(cpu) = cpu else {
        return Some("Fargate requires that 'cpu' be defined at the task level.".into());
    };
    let Some(memory) = memory else {
        return Some("Fargate requires that 'memory' be defined at the task level.".into());
    };
    if !fargate_size_ok(cpu, memory) {
        return Some(format!(
            "No Fargate configuration exists for given values: {cpu} CPU, {memory} memory. See the Amazon ECS documentation for the valid values."
        ));
    }
    if req.pid_mode.as_deref() == Some("host") {
        return Some(
            "Tasks using the Fargate launch type do not support pidMode 'host'. The supported value for pidMode is 'task'.".into(),
        );
    }
    if req.ipc_mode.is_some() {
        return Some("Tasks using the Fargate launch type do not support ipcMode.".into());
    }
    for c in containers {
        let name = c.name.as_deref().unwrap_or_default();
        let driver = c
            .log_configuration
            .as_ref()
            .and_then(|l| l.log_driver.as_deref());
        if driver == Some("awslogs") && req.execution_role_arn.is_none() {
            return Some(
                "Fargate requires task definition to have execution role ARN to support log driver awslogs.".into(),
            );
        }
        if c.privileged == Some(true) {
            return Some(format!(
                "Invalid setting for container '{name}'. Tasks using the Fargate launch type do not support privileged containers."
            ));
        }
        if c.links.as_ref().is_some_and(|l| !l.is_empty()) {
            return Some("Links are not supported when networkMode=awsvpc.".into());
        }
        let linux = c.linux_parameters.as_ref();
        let added = linux
            .and_then(|l| l.capabilities.as_ref())
            .and_then(|k| k.add.as_ref());
        if let Some(cap) = added
            .into_iter()
            .flatten()
            .find(|k| k.trim_start_matches("CAP_") != "SYS_PTRACE")
        {
            return Some(format!(
                "Invalid setting for container '{name}'. Tasks using the Fargate launch type can only add the SYS_PTRACE kernel capability, not {cap}."
            ));
        }
        if linux
            .and_then(|l| l.devices.as_ref())
            .is_some_and(|d| !d.is_empty())
        {
            return Some(format!(
                "Invalid setting for container '{name}'. Tasks using the Fargate launch type do not support devices."
            ));
        }
        if c.stop_timeout.is_some_and(|s| s > max_stop_timeout) {
            return Some(format!(
                "Invalid 'stopTimeout' setting for container '{name}'. Fargate supports at most {max_stop_timeout} seconds."
            ));
        }
    }
    for v in volumes {
        let name = v.name.as_deref().unwrap_or_default();
        if v.host.as_ref().is_some_and(|h| h.source_path.is_some()) {
            return Some(format!(
                "Invalid volume '{name}'. Tasks using the Fargate launch type do not support host volumes with a sourcePath."
            ));
        }
        if v.docker_volume_configuration.is_some() {
            return Some(format!(
                "Invalid volume '{name}'. Tasks using the Fargate launch type do not support dockerVolumeConfiguration."
            ));
        }
    }
    None
}

/// The agent capabilities an instance needs to run this definition, as ECS computes them.
fn requires_attributes(
    req: &w::RegisterTaskDefinitionRequest,
    mode: &str,
    containers: &[w::ContainerDefinition],
) -> Vec<w::Attribute> {
    let mut names = BTreeSet::new();
    let remote_api = |v: &str| format!("com.amazonaws.ecs.capability.docker-remote-api.{v}");
    if mode == "awsvpc" {
        names.insert("ecs.capability.task-eni".to_string());
    }
    if req.network_mode.is_some() {
        names.insert(remote_api("1.18"));
    }
    if req.task_role_arn.is_some() {
        names.insert("com.amazonaws.ecs.capability.task-iam-role".into());
        if mode == "host" {
            names.insert("com.amazonaws.ecs.capability.task-iam-role-network-host".into());
        }
    }
    if req.cpu.is_some() || req.memory.is_some() {
        names.insert("ecs.capability.task-cpu-mem-limit".into());
    }
    if req.pid_mode.is_some() || req.ipc_mode.is_some() {
        names.insert("ecs.capability.pid-ipc-namespace-sharing".into());
    }
    for c in containers {
        if c.health_check.is_some() {
            names.insert("ecs.capability.container-health-check".into());
            names.insert(remote_api("1.24"));
        }
        if c.depends_on.as_ref().is_some_and(|d| !d.is_empty()) {
            names.insert("ecs.capability.container-ordering".into());
        }
        if c.docker_labels.as_ref().is_some_and(|d| !d.is_empty()) {
            names.insert(remote_api("1.18"));
        }
        if let Some(driver) = c
            .log_configuration
            .as_ref()
            .and_then(|l| l.log_driver.clone())
        {
            names.insert(format!(
                "com.amazonaws.ecs.capability.logging-driver.{driver}"
            ));
            if driver == "awslogs" && req.execution_role_arn.is_some() {
                names.insert("ecs.capability.execution-role-awslogs".into());
            }
        }
        if c.memory_reservation.is_some() {
            names.insert(remote_api("1.21"));
        }
        if c.linux_parameters
            .as_ref()
            .is_some_and(|l| l.init_process_enabled == Some(true))
        {
            names.insert(remote_api("1.25"));
        }
        // Secrets come from Parameter Store or Secrets Manager, each a
        // capability of its own; in log options they are read before the
        // container exists ("bootstrap").
        let store = |value_from: Option<&str>| {
            if value_from.is_some_and(|v| v.starts_with("arn:") && v.contains(":secretsmanager:")) {
                "asm"
            } else {
                "ssm"
            }
        };
        for secret in c.secrets.iter().flatten() {
            names.insert(format!(
                "ecs.capability.secrets.{}.environment-variables",
                store(secret.value_from.as_deref())
            ));
        }
        let log_secrets = c
            .log_configuration
            .as_ref()
            .and_then(|l| l.secret_options.as_ref());
        for secret in log_secrets.into_iter().flatten() {
            names.insert(format!(
                "ecs.capability.secrets.{}.bootstrap.log-driver",
                store(secret.value_from.as_deref())
            ));
        }
        if c.environment_files.as_ref().is_some_and(|f| !f.is_empty()) {
            names.insert("ecs.capability.env-files.s3".into());
        }
        if c.repository_credentials.is_some() {
            names.insert(
                "com.amazonaws.ecs.capability.private-registry-authentication.secretsmanager"
                    .into(),
            );
        }
        if let Some(kind) = c
            .firelens_configuration
            .as_ref()
            .and_then(|f| f.r#type.as_deref())
        {
            names.insert(format!("ecs.capability.firelens.{kind}"));
            let config = c
                .firelens_configuration
                .as_ref()
                .and_then(|f| f.options.as_ref())
                .and_then(|o| o.get("config-file-type"));
            if let Some(t @ ("file" | "s3")) = config.map(String::as_str) {
                names.insert(format!("ecs.capability.firelens.options.config.{t}"));
            }
        }
        if c.image.as_deref().is_some_and(|i| i.contains(".dkr.ecr.")) {
            names.insert("com.amazonaws.ecs.capability.ecr-auth".into());
            if req.execution_role_arn.is_some() {
                names.insert("ecs.capability.execution-role-ecr-pull".into());
            }
        }
        if c.stop_timeout.is_some() || c.start_timeout.is_some() {
            names.insert("ecs.capability.container-ordering".into());
        }
    }
    for v in req.volumes.iter().flatten() {
        if let Some(efs) = &v.efs_volume_configuration {
            names.insert("ecs.capability.efs".into());
            if efs.authorization_config.is_some() {
                names.insert("ecs.capability.efsAuth".into());
            }
        }
    }
    let mut attributes: Vec<w::Attribute> = names
        .into_iter()
        .map(|n| w::Attribute {
            name: Some(n),
            ..Default::default()
        })
        .collect();
    // A definition built for one CPU architecture or operating system
    // runs only on hosts of it; hosts advertise theirs (the architecture
    // as EC2 names it).
    let platform = req.runtime_platform.as_ref();
    let wanted = [
        (
            CPU_ARCHITECTURE,
            platform
                .and_then(|p| p.cpu_architecture.as_deref())
                .map(str::to_ascii_lowercase),
        ),
        (
            OS_FAMILY,
            platform.and_then(|p| p.operating_system_family.clone()),
        ),
    ];
    for (name, value) in wanted {
        if let Some(value) = value {
            attributes.push(w::Attribute {
                name: Some(name.into()),
                value: Some(value),
                ..Default::default()
            });
        }
    }
    attributes
}

/// The attribute naming a host's operating system family (`LINUX`).
pub const OS_FAMILY: &str = "ecs.os-family";

/// The attribute naming a host's CPU architecture: `x86_64` or `arm64`.
pub const CPU_ARCHITECTURE: &str = "ecs.cpu-architecture";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: serde_json::Value) -> w::RegisterTaskDefinitionRequest {
        serde_json::from_value(v).expect("request")
    }

    fn err(v: serde_json::Value) -> String {
        prepare(&req(v), FARGATE_MAX_STOP_TIMEOUT)
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn trusted_execution_is_refused_not_ignored() {
        let e = err(
            json!({"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":64}],
            "trustedExecutionConfiguration":{}}),
        );
        assert!(e.contains("trustedExecutionConfiguration"), "{e}");
    }

    #[test]
    fn units_parse_like_ecs() {
        assert_eq!(parse_cpu("1024"), Some(1024));
        assert_eq!(parse_cpu("1 vCPU"), Some(1024));
        assert_eq!(parse_cpu("0.25 vcpu"), Some(256));
        assert_eq!(parse_cpu("abc"), None);
        assert_eq!(parse_memory("2 GB"), Some(2048));
        assert_eq!(parse_memory("0.5GB"), Some(512));
        assert_eq!(parse_memory("-5"), None);
    }

    #[test]
    fn restart_policy_bounds_are_ecs_bounds() {
        let with = |rp: serde_json::Value| json!({"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":64,"restartPolicy":rp}]});
        assert!(err(with(json!({"enabled":true,"restartAttemptPeriod":59})))
            .contains("restartAttemptPeriod 59 must be between 60 and 1800"));
        assert!(
            err(with(json!({"enabled":true,"restartAttemptPeriod":1801})))
                .contains("restartAttemptPeriod")
        );
        let codes: Vec<i32> = (0..51).collect();
        assert!(err(with(json!({"enabled":true,"ignoredExitCodes":codes}))).contains("at most 50"));
        for ok in [
            json!({"enabled":true,"restartAttemptPeriod":60,"ignoredExitCodes":[0]}),
            json!({"enabled":false}),
        ] {
            assert!(prepare(&req(with(ok)), 120).is_ok());
        }
    }

    #[test]
    fn fargate_table() {
        assert!(fargate_size_ok(256, 512));
        assert!(!fargate_size_ok(256, 4096));
        assert!(fargate_size_ok(4096, 30720));
        assert!(!fargate_size_ok(4096, 4096));
        assert!(fargate_size_ok(8192, 20480));
        assert!(!fargate_size_ok(8192, 18432));
        assert!(!fargate_size_ok(300, 1024));
    }

    #[test]
    fn minimal_definition_is_normalised() {
        let p = prepare(
            &req(json!({"family":"web","containerDefinitions":[{"name":"app","image":"busybox","memory":64,
                "portMappings":[{"containerPort":80}]}]})),
            120,
        )
        .expect("valid");
        let s = p.finish(&Scope::new("1", "us-east-1"), 3, 1.5, "arn:aws:iam::1:root");
        let c = &s.def.container_definitions.as_ref().expect("containers")[0];
        assert_eq!(c.essential, Some(true));
        assert_eq!(c.cpu, Some(0));
        assert_eq!(
            c.port_mappings.as_ref().expect("ports")[0]
                .protocol
                .as_deref(),
            Some("tcp")
        );
        assert_eq!(
            s.def.task_definition_arn.as_deref(),
            Some("arn:aws:ecs:us-east-1:1:task-definition/web:3")
        );
        assert_eq!(
            s.def.compatibilities,
            Some(vec!["EC2".into(), "EXTERNAL".into()])
        );
    }

    #[test]
    fn names_and_memory_rules() {
        assert!(err(json!({"family":"bad name","containerDefinitions":[{"name":"a","image":"i","memory":6}]})).contains("Invalid family"));
        assert!(err(json!({"family":"f","containerDefinitions":[]}))
            .contains("Container list cannot be empty"));
        assert_eq!(
            err(json!({"family":"f","containerDefinitions":[{"name":"a","image":"i"}]})),
            "Invalid setting for container 'a'. At least one of 'memory' or 'memoryReservation' must be specified."
        );
        assert!(err(json!({"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":64,"memoryReservation":128}]}))
            .contains("'memory' must be greater than or equal to 'memoryReservation'"));
        assert!(
            err(json!({"family":"f","containerDefinitions":[{"image":"i","memory":64}]}))
                .contains("Container.name")
        );
        assert!(
            err(json!({"family":"f","containerDefinitions":[{"name":"a","memory":64}]}))
                .contains("Container.image")
        );
        assert!(err(json!({"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":64,"essential":false}]}))
            .contains("essential"));
        // Task-level memory makes container memory optional.
        assert!(prepare(&req(json!({"family":"f","memory":"1 GB","containerDefinitions":[{"name":"a","image":"i"}]})), 120).is_ok());
    }

    #[test]
    fn ports_per_network_mode() {
        assert!(err(json!({"family":"f","networkMode":"host","containerDefinitions":[{"name":"a","image":"i","memory":64,
            "portMappings":[{"containerPort":80,"hostPort":8080}]}]})).contains("must match"));
        assert!(err(json!({"family":"f","networkMode":"none","containerDefinitions":[{"name":"a","image":"i","memory":64,
            "portMappings":[{"containerPort":80}]}]})).contains("networkMode=none"));
        assert!(err(
            json!({"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":64,
            "portMappings":[{"containerPort":70000}]}]})
        )
        .contains("containerPort"));
        assert!(err(json!({"family":"f","networkMode":"weird","containerDefinitions":[{"name":"a","image":"i","memory":64}]}))
            .contains("networkMode"));
    }

    #[test]
    fn depends_on_and_health_rules() {
        let base = |deps: serde_json::Value, hc: serde_json::Value| {
            json!({"family":"f","containerDefinitions":[
                {"name":"a","image":"i","memory":64,"dependsOn":deps},
                {"name":"b","image":"i","memory":64,"essential":true,"healthCheck":hc}]})
        };
        assert!(err(base(
            json!([{"containerName":"b","condition":"COMPLETE"}]),
            json!({"command":["CMD","true"]})
        ))
        .contains("not allowed on essential"));
        assert!(err(base(
            json!([{"containerName":"zz","condition":"START"}]),
            json!({"command":["CMD","true"]})
        ))
        .contains("not another container"));
        assert!(err(base(
            json!([{"containerName":"b","condition":"START"}]),
            json!({"command":["CMD","true"],"interval":2})
        ))
        .contains("healthCheck.interval"));
        assert!(prepare(
            &req(base(
                json!([{"containerName":"b","condition":"HEALTHY"}]),
                json!({"command":["CMD","true"]})
            )),
            120
        )
        .is_ok());
        let cycle = json!({"family":"f","containerDefinitions":[
            {"name":"a","image":"i","memory":64,"dependsOn":[{"containerName":"b","condition":"START"}]},
            {"name":"b","image":"i","memory":64,"dependsOn":[{"containerName":"a","condition":"START"}]}]});
        assert!(err(cycle).contains("cycle"));
    }

    #[test]
    fn fargate_rules() {
        let fg = |extra: serde_json::Value| {
            let mut v = json!({"family":"f","requiresCompatibilities":["FARGATE"],"networkMode":"awsvpc","cpu":"256","memory":"512",
                "containerDefinitions":[{"name":"a","image":"i"}]});
            for (k, val) in extra.as_object().expect("obj") {
                v[k] = val.clone();
            }
            v
        };
        let ok = prepare(&req(fg(json!({}))), 120).expect("valid fargate");
        let s = ok.finish(&Scope::new("1", "r"), 1, 0.0, "p");
        assert_eq!(
            s.def.compatibilities,
            Some(vec!["EC2".into(), "FARGATE".into()])
        );
        assert!(s
            .def
            .requires_attributes
            .expect("attrs")
            .iter()
            .any(|a| a.name.as_deref() == Some("ecs.capability.task-eni")));
        assert_eq!(
            err(fg(json!({"networkMode":"bridge"}))),
            "Fargate only supports network mode \u{2018}awsvpc\u{2019}."
        );
        assert!(err(fg(json!({"memory":"4096"})))
            .starts_with("No Fargate configuration exists for given values"));
        assert_eq!(
            err(fg(json!({"cpu":null}))),
            "Fargate requires that 'cpu' be defined at the task level."
        );
        assert!(err(fg(json!({"pidMode":"host"}))).contains("pidMode 'host'"));
        assert!(err(fg(
            json!({"volumes":[{"name":"v","host":{"sourcePath":"/x"}}]})
        ))
        .contains("host volumes"));
        assert!(err(fg(
            json!({"containerDefinitions":[{"name":"a","image":"i","privileged":true}]})
        ))
        .contains("privileged"));
        assert!(err(fg(
            json!({"containerDefinitions":[{"name":"a","image":"i","stopTimeout":121}]})
        ))
        .contains("stopTimeout"));
        assert!(prepare(
            &req(fg(
                json!({"containerDefinitions":[{"name":"a","image":"i","stopTimeout":300}]})
            )),
            600
        )
        .is_ok());
        let awslogs = json!([{"name":"a","image":"i",
            "logConfiguration":{"logDriver":"awslogs","options":{"awslogs-group":"g"}}}]);
        assert_eq!(
            err(fg(json!({"containerDefinitions": awslogs.clone()}))),
            "Fargate requires task definition to have execution role ARN to support log driver awslogs."
        );
        let with_role = fg(json!({"containerDefinitions": awslogs,
            "executionRoleArn": "arn:aws:iam::1:role/exec"}));
        assert!(prepare(&req(with_role), 120).is_ok());
    }

    /// The attributes a valid definition requires of hosts.
    fn required(r: &w::RegisterTaskDefinitionRequest) -> Vec<w::Attribute> {
        prepare(r, 120)
            .expect("valid")
            .finish(&Scope::new("1", "r"), 1, 0.0, "p")
            .def
            .requires_attributes
            .expect("attrs")
    }

    #[test]
    fn what_a_definition_asks_of_hosts_is_required_of_them() {
        let v = json!({"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":64,
            "secrets":[{"name":"A","valueFrom":"/p/a"},
                       {"name":"B","valueFrom":"arn:aws:secretsmanager:us-east-1:1:secret:b-AbCdEf"}],
            "environmentFiles":[{"value":"arn:aws:s3:::bucket/a.env","type":"s3"}],
            "repositoryCredentials":{"credentialsParameter":"arn:aws:secretsmanager:us-east-1:1:secret:r-AbCdEf"},
            "logConfiguration":{"logDriver":"splunk","options":{},
                "secretOptions":[{"name":"splunk-token","valueFrom":"/p/token"}]}},
            {"name":"router","image":"i","memory":64,"firelensConfiguration":{"type":"fluentbit"}}],
            "volumes":[{"name":"e","efsVolumeConfiguration":{"fileSystemId":"fs-1",
                "authorizationConfig":{"iam":"ENABLED"},"transitEncryption":"ENABLED"}}]});
        let names: Vec<String> = required(&req(v))
            .into_iter()
            .filter_map(|a| a.name)
            .collect();
        for wanted in [
            "ecs.capability.secrets.ssm.environment-variables",
            "ecs.capability.secrets.asm.environment-variables",
            "ecs.capability.secrets.ssm.bootstrap.log-driver",
            "ecs.capability.env-files.s3",
            "com.amazonaws.ecs.capability.private-registry-authentication.secretsmanager",
            "com.amazonaws.ecs.capability.logging-driver.splunk",
            "ecs.capability.firelens.fluentbit",
            "ecs.capability.efs",
            "ecs.capability.efsAuth",
        ] {
            assert!(
                names.iter().any(|n| n == wanted),
                "{wanted} not in {names:?}"
            );
        }
    }

    #[test]
    fn a_cpu_architecture_is_required_of_the_host() {
        let def = |arch: &str| {
            req(
                json!({"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":64}],
                "runtimePlatform":{"cpuArchitecture": arch, "operatingSystemFamily":"LINUX"}}),
            )
        };
        let attributes = required(&def("ARM64"));
        let value_of = |name: &str| -> Vec<Option<String>> {
            attributes
                .iter()
                .filter(|a| a.name.as_deref() == Some(name))
                .map(|a| a.value.clone())
                .collect()
        };
        assert_eq!(value_of(CPU_ARCHITECTURE), [Some("arm64".to_string())]);
        let os = value_of(OS_FAMILY);
        assert_eq!(os, [Some("LINUX".to_string())]);
        let windows = req(
            json!({"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":64}],
            "runtimePlatform":{"operatingSystemFamily":"BEOS"}}),
        );
        let Err(e) = prepare(&windows, 120) else {
            panic!("an unknown operating system is accepted");
        };
        assert!(e
            .to_string()
            .contains("runtimePlatform.operatingSystemFamily"));
        let Err(e) = prepare(&def("SPARC"), 120) else {
            panic!("an unknown architecture is accepted");
        };
        let e = e.to_string();
        assert!(e.contains("runtimePlatform.cpuArchitecture"), "{e}");
    }
}
