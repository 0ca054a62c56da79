//! A task's containers as runtime specs: the pure mapping from ECS
//! container definitions (with the task's overrides already applied) to
//! what the engine is asked to create.

use berth_runtime::{
    ContainerSpec, HealthCheck, MountSource, MountSpec, NetworkMode, PortSpec, Protocol,
    TaskLimits, Ulimit, VolumeSpec,
};
use berth_wire::agent::{DesiredNetwork, DesiredTask};
use berth_wire::ecs as w;
use std::collections::BTreeMap;
use std::time::Duration;

/// Label naming the agent (container instance id) that owns a container.
pub const OWNER_LABEL: &str = "berth.instance";
pub const TASK_LABEL: &str = "com.amazonaws.ecs.task-arn";
pub const CONTAINER_LABEL: &str = "com.amazonaws.ecs.container-name";

/// ECS_CONTAINER_STOP_TIMEOUT's default.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The agent turns 0 or unset CPU into 2 shares (the engine's minimum).
const MIN_CPU_SHARES: i64 = 2;
const MIB: i64 = 1024 * 1024;

/// The last part of a task ARN.
pub fn task_id(task_arn: &str) -> &str {
    task_arn.rsplit('/').next().unwrap_or(task_arn)
}

/// The cluster of `arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID`.
pub fn task_cluster(task_arn: &str) -> &str {
    task_arn
        .split(":task/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
}

/// The engine's name for a container: `ecs-<family>-<revision>-<name>-<task id>`,
/// as the ECS agent names them (unique per task).
pub fn docker_name(task: &DesiredTask, container: &str) -> String {
    let def = &task.definition;
    format!(
        "ecs-{}-{}-{}-{}",
        def.family.as_deref().unwrap_or("task"),
        def.revision.unwrap_or(0),
        container,
        task_id(&task.task_arn)
    )
}

pub fn containers(task: &DesiredTask) -> &[w::ContainerDefinition] {
    task.definition
        .container_definitions
        .as_deref()
        .unwrap_or_default()
}

pub fn essential(c: &w::ContainerDefinition) -> bool {
    c.essential.unwrap_or(true)
}

pub fn stop_timeout(c: &w::ContainerDefinition) -> Duration {
    c.stop_timeout
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_STOP_TIMEOUT)
}

fn volume_source(task: &DesiredTask, name: &str) -> Option<MountSource> {
    let v = task
        .definition
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name.as_deref() == Some(name))?;
    if let Some(path) = v.host.as_ref().and_then(|h| h.source_path.clone()) {
        return Some(MountSource::HostPath(path));
    }
    let config = v.docker_volume_configuration.as_ref();
    let shared = config.is_some_and(|d| d.scope.as_deref() == Some("shared"));
    Some(MountSource::Volume(VolumeSpec {
        name: if shared {
            name.to_string()
        } else {
            // Task-scoped volumes (and bind volumes without a source path)
            // live and die with the task.
            format!("ecs-{}-{}", name, task_id(&task.task_arn))
        },
        driver: config.and_then(|d| d.driver.clone()),
        driver_options: config
            .and_then(|d| d.driver_opts.clone())
            .unwrap_or_default(),
        labels: config.and_then(|d| d.labels.clone()).unwrap_or_default(),
        // ECS makes a shared volume only when asked to (autoprovision).
        must_exist: shared && config.and_then(|d| d.autoprovision) != Some(true),
    }))
}

/// The task-level limits (units and MiB, as the server sends them).
pub fn task_limits(task: &DesiredTask) -> TaskLimits {
    let def = &task.definition;
    TaskLimits {
        cpu_units: def.cpu.as_deref().and_then(|c| c.parse::<i64>().ok()),
        memory_mib: def.memory.as_deref().and_then(|m| m.parse::<i64>().ok()),
    }
}

/// The spec for container `c` of `task`, owned by `instance`, created
/// under the task's cgroup when it has one (`cgroup_parent`).
/// The container-name label of an awsvpc task's pause container (the
/// name the ECS agent gives its own).
pub const PAUSE_NAME: &str = "~internal~ecs~pause";

/// The pause container of an awsvpc task: it holds the task's network
/// namespace at the task's address on its subnet's network, and the
/// task's containers join it.
pub fn pause_spec(task: &DesiredTask, net: &DesiredNetwork, instance: &str) -> ContainerSpec {
    task_pause(
        task,
        instance,
        NetworkMode::Attached {
            network: net.name.clone(),
            ip: net.ip.clone(),
        },
    )
}

/// A task's pause container on `network_mode`.
fn task_pause(task: &DesiredTask, instance: &str, network_mode: NetworkMode) -> ContainerSpec {
    let labels = BTreeMap::from([
        (OWNER_LABEL.to_string(), instance.to_string()),
        (TASK_LABEL.to_string(), task.task_arn.clone()),
        (CONTAINER_LABEL.to_string(), PAUSE_NAME.to_string()),
        (
            "com.amazonaws.ecs.cluster".to_string(),
            task.cluster.clone(),
        ),
    ]);
    ContainerSpec {
        name: docker_name(task, "internalecspause"),
        image: berth_runtime::pause::IMAGE.to_string(),
        // Containers of a task with ipcMode `task` join its namespace.
        ipc_mode: Some("shareable".into()),
        labels,
        network_mode,
        cpu_shares: Some(MIN_CPU_SHARES),
        ..Default::default()
    }
}

/// Makes a task's pause container the one that boots its sandbox (a
/// kernel of its own). The sandbox's processes live in the pause
/// container's cgroup, so that cgroup goes under the task's, with no
/// weight of its own to hold the task back.
pub fn sandbox_root(pause: &mut ContainerSpec, task_cgroup: Option<&str>) {
    pause.sandbox = Some(berth_runtime::Sandbox::Root);
    pause.cgroup_parent = task_cgroup.map(String::from);
    pause.cpu_shares = None;
}

/// Whether the task's containers share a process or IPC namespace
/// (`pidMode` or `ipcMode` `task`): its pause container holds them.
pub fn shares_namespaces(task: &DesiredTask) -> bool {
    let def = &task.definition;
    def.pid_mode.as_deref() == Some("task") || def.ipc_mode.as_deref() == Some("task")
}

/// The pause container of a task that is not awsvpc but shares its
/// process or IPC namespace: it holds them, on no network.
pub fn namespace_pause_spec(task: &DesiredTask, instance: &str) -> ContainerSpec {
    task_pause(task, instance, NetworkMode::None)
}

/// Marks a pause container made ahead of any task, at a warm address (the
/// label's value); a task placed at that address takes it over.
pub const WARM_LABEL: &str = "berth.warm-address";

/// A pause container at a warm address: a namespace ready for the next
/// awsvpc task placed at it, its filter denying everything until then.
pub fn warm_pause_spec(net: &DesiredNetwork, instance: &str, cluster: &str) -> ContainerSpec {
    ContainerSpec {
        name: format!("berth-warm-{instance}-{}", net.ip),
        image: berth_runtime::pause::IMAGE.to_string(),
        labels: BTreeMap::from([
            (OWNER_LABEL.to_string(), instance.to_string()),
            (WARM_LABEL.to_string(), net.ip.clone()),
            ("com.amazonaws.ecs.cluster".to_string(), cluster.to_string()),
        ]),
        network_mode: NetworkMode::Attached {
            network: net.name.clone(),
            ip: net.ip.clone(),
        },
        cpu_shares: Some(MIN_CPU_SHARES),
        ipc_mode: Some("shareable".into()),
        ..Default::default()
    }
}

/// On a warm sandbox: the name of the cgroup it was booted in, which the
/// task that takes it gets its limits written on.
pub const WARM_CGROUP_LABEL: &str = "berth.warm-cgroup";

/// A warm pause container that boots a sandbox ahead of its task (hosts
/// that give tasks a kernel of their own), in cgroup `cgroup` (its parent
/// and the name of it) when the runtime gives tasks cgroups.
pub fn warm_sandbox_spec(
    net: &DesiredNetwork,
    instance: &str,
    cluster: &str,
    cgroup: Option<(&str, &str)>,
) -> ContainerSpec {
    let mut s = warm_pause_spec(net, instance, cluster);
    sandbox_root(&mut s, cgroup.map(|(parent, _)| parent));
    if let Some((_, name)) = cgroup {
        s.labels
            .insert(WARM_CGROUP_LABEL.to_string(), name.to_string());
    }
    s
}

/// The bridge network of an awsvpc task's subnet on this host.
pub fn network_spec(net: &DesiredNetwork) -> berth_runtime::NetworkSpec {
    berth_runtime::NetworkSpec {
        name: net.name.clone(),
        cidr: net.cidr.clone(),
        gateway: net.gateway.clone(),
        labels: BTreeMap::from([("berth.subnet".to_string(), net.subnet_id.clone())]),
    }
}

/// `pause`: the id of the task's pause container, for awsvpc tasks.
pub fn container_spec(
    task: &DesiredTask,
    c: &w::ContainerDefinition,
    instance: &str,
    region: &str,
    cgroup_parent: Option<&str>,
    pause: Option<&str>,
) -> ContainerSpec {
    let def = &task.definition;
    let name = c.name.clone().unwrap_or_default();
    let mode = def.network_mode.as_deref().unwrap_or("bridge");
    let mut labels: BTreeMap<String, String> = c.docker_labels.clone().unwrap_or_default();
    labels.insert(OWNER_LABEL.into(), instance.into());
    labels.insert(TASK_LABEL.into(), task.task_arn.clone());
    labels.insert(CONTAINER_LABEL.into(), name.clone());
    labels.insert("com.amazonaws.ecs.cluster".into(), task.cluster.clone());
    labels.insert(
        "com.amazonaws.ecs.task-definition-family".into(),
        def.family.clone().unwrap_or_default(),
    );
    labels.insert(
        "com.amazonaws.ecs.task-definition-version".into(),
        def.revision.unwrap_or(0).to_string(),
    );
    let fargate = task.launch_type == "FARGATE";
    let mut env: Vec<(String, String)> = vec![
        (
            "AWS_EXECUTION_ENV".into(),
            if fargate {
                "AWS_ECS_FARGATE"
            } else {
                "AWS_ECS_EC2"
            }
            .into(),
        ),
        ("AWS_REGION".into(), region.into()),
        ("AWS_DEFAULT_REGION".into(), region.into()),
    ];
    for kv in c.environment.iter().flatten() {
        if let Some(k) = &kv.name {
            env.retain(|(e, _)| e != k);
            env.push((k.clone(), kv.value.clone().unwrap_or_default()));
        }
    }
    // The task's cgroup bounds its containers together; without one, a
    // container without limits of its own gets the task's.
    let carried = if cgroup_parent.is_some() {
        TaskLimits::default()
    } else {
        task_limits(task)
    };
    let memory = c.memory.map(i64::from).or(carried.memory_mib);
    let ports = match mode {
        "bridge" => c
            .port_mappings
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(PortSpec {
                    container_port: u16::try_from(p.container_port?).ok()?,
                    host_port: p
                        .host_port
                        .filter(|h| *h > 0)
                        .and_then(|h| u16::try_from(h).ok()),
                    protocol: if p.protocol.as_deref() == Some("udp") {
                        Protocol::Udp
                    } else {
                        Protocol::Tcp
                    },
                })
            })
            .collect(),
        _ => vec![],
    };
    let linux = c.linux_parameters.clone().unwrap_or_default();
    let caps = linux.capabilities.clone().unwrap_or_default();
    let mounts = c
        .mount_points
        .iter()
        .flatten()
        .filter_map(|m| {
            Some(MountSpec {
                source: volume_source(task, m.source_volume.as_deref()?)?,
                target: m.container_path.clone()?,
                read_only: m.read_only.unwrap_or(false),
            })
        })
        .collect();
    let sibling = |n: &str| docker_name(task, n);
    let spec = ContainerSpec {
        name: docker_name(task, &name),
        image: c.image.clone().unwrap_or_default(),
        command: c.command.clone().filter(|v| !v.is_empty()),
        entry_point: c.entry_point.clone().filter(|v| !v.is_empty()),
        env,
        working_dir: c.working_directory.clone(),
        user: c.user.clone(),
        hostname: c.hostname.clone(),
        labels,
        cpu_shares: Some(
            c.cpu
                .map(i64::from)
                .filter(|s| *s >= MIN_CPU_SHARES)
                .unwrap_or(MIN_CPU_SHARES),
        ),
        memory_bytes: memory.map(|m| m * MIB),
        memory_reservation_bytes: c.memory_reservation.map(|m| i64::from(m) * MIB),
        nano_cpus: carried.cpu_units.map(|u| u * 1_000_000_000 / 1024),
        network_mode: match (mode, pause) {
            ("host", _) => NetworkMode::Host,
            ("none", _) => NetworkMode::None,
            ("awsvpc", Some(p)) => NetworkMode::Container(p.to_string()),
            // An awsvpc task without its namespace must not reach any
            // network; the driver does not get here without one.
            ("awsvpc", None) => NetworkMode::None,
            _ => NetworkMode::Bridge,
        },
        ports,
        extra_hosts: c
            .extra_hosts
            .iter()
            .flatten()
            .filter(|_| mode != "awsvpc")
            .filter_map(|h| Some((h.hostname.clone()?, h.ip_address.clone()?)))
            .collect(),
        // A container in another's namespace takes its DNS from it.
        dns_servers: if mode == "awsvpc" {
            vec![]
        } else {
            c.dns_servers.clone().unwrap_or_default()
        },
        dns_search: if mode == "awsvpc" {
            vec![]
        } else {
            c.dns_search_domains.clone().unwrap_or_default()
        },
        links: c
            .links
            .iter()
            .flatten()
            .map(|l| match l.split_once(':') {
                Some((n, alias)) => format!("{}:{alias}", sibling(n)),
                None => format!("{}:{l}", sibling(l)),
            })
            .collect(),
        ulimits: c
            .ulimits
            .iter()
            .flatten()
            .filter_map(|u| {
                Some(Ulimit {
                    name: u.name.clone()?,
                    soft: i64::from(u.soft_limit?),
                    hard: i64::from(u.hard_limit?),
                })
            })
            .collect(),
        cap_add: caps.add.unwrap_or_default(),
        cap_drop: caps.drop.unwrap_or_default(),
        init: linux.init_process_enabled.unwrap_or(false),
        tmpfs: linux
            .tmpfs
            .iter()
            .flatten()
            .filter_map(|t| {
                let mut opts = vec![format!("size={}m", t.size?)];
                opts.extend(t.mount_options.clone().unwrap_or_default());
                Some((t.container_path.clone()?, opts.join(",")))
            })
            .collect(),
        shm_size_bytes: linux.shared_memory_size.map(|m| i64::from(m) * MIB),
        readonly_rootfs: c.readonly_root_filesystem.unwrap_or(false),
        privileged: c.privileged.unwrap_or(false),
        mounts,
        volumes_from: c
            .volumes_from
            .iter()
            .flatten()
            .filter_map(|v| {
                let n = sibling(v.source_container.as_deref()?);
                Some(if v.read_only.unwrap_or(false) {
                    format!("{n}:ro")
                } else {
                    n
                })
            })
            .collect(),
        health_check: c.health_check.as_ref().map(|h| HealthCheck {
            test: h.command.clone().unwrap_or_default(),
            interval: secs(h.interval, 30),
            timeout: secs(h.timeout, 5),
            retries: h.retries.and_then(|r| u32::try_from(r).ok()).unwrap_or(3),
            start_period: secs(h.start_period, 0),
        }),
        stop_timeout: Some(stop_timeout(c)),
        security_opts: c.docker_security_options.clone().unwrap_or_default(),
        cgroup_parent: cgroup_parent.map(str::to_string),
        // The engine runs the driver. Placement sends a container here only
        // when this host advertises its driver (requiresAttributes), which
        // it does for the engine's drivers that ECS allows.
        sysctls: c
            .system_controls
            .iter()
            .flatten()
            .filter_map(|s| Some((s.namespace.clone()?, s.value.clone()?)))
            .collect(),
        open_stdin: c.interactive == Some(true),
        tty: c.pseudo_terminal == Some(true),
        network_disabled: c.disable_networking == Some(true),
        sandbox: None,
        pid_mode: namespace(def.pid_mode.as_deref(), pause),
        ipc_mode: namespace(def.ipc_mode.as_deref(), pause),
        // awslogs is the agent's to do (`awslogs`): the engine keeps the
        // output locally, where the agent's copy reads it.
        log_driver: c
            .log_configuration
            .as_ref()
            .filter(|l| l.log_driver.as_deref() != Some("awslogs"))
            .and_then(|l| Some((l.log_driver.clone()?, l.options.clone().unwrap_or_default()))),
    };
    if fargate {
        fargate_hardened(spec)
    } else {
        spec
    }
}

/// A task's `pidMode` or `ipcMode` as the engine takes it: `task` joins
/// the pause container's namespace.
fn namespace(mode: Option<&str>, pause: Option<&str>) -> Option<String> {
    match (mode?, pause) {
        ("task", Some(p)) => Some(format!("container:{p}")),
        // The driver makes the pause container before any other; without
        // one the container keeps a namespace of its own.
        ("task", None) => None,
        (other, _) => Some(other.to_string()),
    }
}

/// The only capability a Fargate container may add.
const FARGATE_ADDABLE: &str = "SYS_PTRACE";

/// A Fargate task's container as Fargate runs it, whatever its definition
/// says (the server refuses most of this already; the host does not
/// trust it to): Docker's default capabilities minus NET_RAW, so no raw
/// sockets to spoof or sniff with; no-new-privileges, so setuid binaries
/// cannot gain any; Docker's default seccomp and AppArmor profiles, never
/// unconfined; never privileged; and no mount of anything on the host,
/// only the task's own volumes.
pub fn fargate_hardened(mut spec: ContainerSpec) -> ContainerSpec {
    spec.privileged = false;
    spec.cap_add
        .retain(|c| c.trim_start_matches("CAP_") == FARGATE_ADDABLE);
    if !spec
        .cap_drop
        .iter()
        .any(|c| c.trim_start_matches("CAP_") == "NET_RAW")
    {
        spec.cap_drop.push("NET_RAW".into());
    }
    spec.security_opts.retain(|o| {
        let o = o.to_ascii_lowercase();
        !(o.contains("unconfined")
            || o.starts_with("label=disable")
            || o.starts_with("label:disable"))
    });
    if !spec
        .security_opts
        .iter()
        .any(|o| o.starts_with("no-new-privileges"))
    {
        spec.security_opts.push("no-new-privileges".into());
    }
    spec.mounts
        .retain(|m| !matches!(m.source, MountSource::HostPath(_)));
    spec
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.and_then(|s| u64::try_from(s).ok()).unwrap_or(default))
}

/// The order containers are created in: each after the containers it
/// links to, takes volumes from or depends on (the server checked there
/// is no cycle; anything left over goes last, in definition order).
pub fn creation_order(defs: &[w::ContainerDefinition]) -> Vec<usize> {
    let name = |i: usize| defs[i].name.clone().unwrap_or_default();
    let needs = |c: &w::ContainerDefinition| -> Vec<String> {
        let mut n: Vec<String> = c
            .depends_on
            .iter()
            .flatten()
            .filter_map(|d| d.container_name.clone())
            .collect();
        n.extend(
            c.links
                .iter()
                .flatten()
                .map(|l| l.split(':').next().unwrap_or(l).to_string()),
        );
        n.extend(
            c.volumes_from
                .iter()
                .flatten()
                .filter_map(|v| v.source_container.clone()),
        );
        n
    };
    let mut order: Vec<usize> = vec![];
    while order.len() < defs.len() {
        let before = order.len();
        for i in 0..defs.len() {
            if order.contains(&i) {
                continue;
            }
            let ready = needs(&defs[i]).iter().all(|n| {
                order.iter().any(|&j| &name(j) == n)
                    || !defs.iter().any(|d| d.name.as_ref() == Some(n))
            });
            if ready {
                order.push(i);
            }
        }
        if order.len() == before {
            order.extend(
                (0..defs.len())
                    .filter(|i| !order.contains(i))
                    .collect::<Vec<_>>(),
            );
        }
    }
    order
}

/// What `task` asks of this host that the agent cannot provide yet, as
/// its stopped reason. Placement keeps such tasks off hosts that do not
/// advertise the matching capability; this covers a host given one by hand
/// (PutAttributes), where leaving the feature out would start a task
/// without its secrets, its role or its logs' destination.
/// Whether any container takes secrets: environment variables, log
/// driver options, or its registry's credentials.
pub fn has_secrets(task: &DesiredTask) -> bool {
    containers(task).iter().any(|c| {
        let log = c
            .log_configuration
            .as_ref()
            .and_then(|l| l.secret_options.as_ref());
        c.repository_credentials.is_some() || c.secrets.iter().chain(log).any(|s| !s.is_empty())
    })
}

/// The credentials `image` is pulled with: those of a container of the
/// task that runs it and names `repositoryCredentials`.
pub fn registry_auth(
    task: &DesiredTask,
    image: &str,
    values: &[berth_wire::agent::SecretValue],
) -> Option<berth_runtime::RegistryAuth> {
    let container = containers(task)
        .iter()
        .find(|c| c.image.as_deref() == Some(image) && c.repository_credentials.is_some())?
        .name
        .clone()
        .unwrap_or_default();
    let value = values.iter().find(|v| {
        v.container == container && v.used_as == berth_wire::agent::SecretUse::RegistryAuth
    })?;
    let json: serde_json::Value = serde_json::from_str(&value.value).ok()?;
    Some(berth_runtime::RegistryAuth {
        username: json["username"].as_str()?.to_string(),
        password: json["password"].as_str()?.to_string(),
    })
}

/// Sets a container's secrets: environment variables (over any variable
/// of the same name) and log driver options.
pub fn add_secrets(
    spec: &mut ContainerSpec,
    container: &str,
    values: &[berth_wire::agent::SecretValue],
) {
    use berth_wire::agent::SecretUse;
    for v in values.iter().filter(|v| v.container == container) {
        match v.used_as {
            SecretUse::LogOption => {
                if let Some((_, options)) = spec.log_driver.as_mut() {
                    options.insert(v.name.clone(), v.value.clone());
                }
            }
            SecretUse::Env => {
                spec.env.retain(|(k, _)| k != &v.name);
                spec.env.push((v.name.clone(), v.value.clone()));
            }
            SecretUse::RegistryAuth => {}
        }
    }
}

/// What a container of a task with a role gets, as ECS's agent sets it:
/// where its credentials are (`credentials_id` is the task's), and, unless
/// the definition says otherwise, Berth's APIs as the endpoint of every
/// AWS service and the task's region, so an SDK with no configuration
/// calls Berth with the task's role.
pub fn add_task_role(spec: &mut ContainerSpec, credentials_id: &str, region: &str) {
    let set = |spec: &ContainerSpec, k: &str| spec.env.iter().any(|(n, _)| n == k);
    spec.env
        .retain(|(k, _)| k != "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    spec.env.push((
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI".into(),
        format!("/v2/credentials/{credentials_id}"),
    ));
    if !set(spec, "AWS_ENDPOINT_URL") {
        spec.env
            .push(("AWS_ENDPOINT_URL".into(), crate::endpoint::API_URL.into()));
    }
    if !set(spec, "AWS_REGION") && !set(spec, "AWS_DEFAULT_REGION") {
        spec.env.push(("AWS_REGION".into(), region.into()));
        spec.env.push(("AWS_DEFAULT_REGION".into(), region.into()));
    }
}

/// What every container of a task with an address of its own gets, as
/// ECS's agent sets it: its task metadata endpoints (`metadata_id` is the
/// container's) and the execution environment SDKs report.
pub fn add_metadata(spec: &mut ContainerSpec, metadata_id: &str, launch_type: &str) {
    let base = crate::endpoint::API_URL;
    spec.env.retain(|(k, _)| {
        !matches!(
            k.as_str(),
            "ECS_CONTAINER_METADATA_URI_V4"
                | "ECS_CONTAINER_METADATA_URI"
                | "ECS_AGENT_URI"
                | "AWS_EXECUTION_ENV"
        )
    });
    spec.env.push((
        "ECS_CONTAINER_METADATA_URI_V4".into(),
        format!("{base}/v4/{metadata_id}"),
    ));
    spec.env.push((
        "ECS_CONTAINER_METADATA_URI".into(),
        format!("{base}/v3/{metadata_id}"),
    ));
    // Where the task asks the agent for ECS (task scale-in protection).
    spec.env
        .push(("ECS_AGENT_URI".into(), format!("{base}/api/{metadata_id}")));
    let env = if launch_type == "FARGATE" {
        "AWS_ECS_FARGATE"
    } else {
        "AWS_ECS_EC2"
    };
    spec.env.push(("AWS_EXECUTION_ENV".into(), env.into()));
}

pub fn unsupported(task: &DesiredTask) -> Option<String> {
    let def = &task.definition;
    let refuse = |what: &str| {
        Some(format!(
            "ResourceInitializationError: this host cannot provide {what}, which the task definition asks for"
        ))
    };

    if def
        .volumes
        .iter()
        .flatten()
        .any(|v| v.efs_volume_configuration.is_some())
    {
        return refuse("an EFS volume");
    }
    if def.proxy_configuration.is_some() {
        return refuse("proxyConfiguration");
    }
    if def
        .inference_accelerators
        .as_ref()
        .is_some_and(|a| !a.is_empty())
    {
        return refuse("inferenceAccelerators");
    }
    for c in def.container_definitions.iter().flatten() {
        let name = c.name.as_deref().unwrap_or_default();
        let what = if c.environment_files.as_ref().is_some_and(|f| !f.is_empty()) {
            "environmentFiles"
        } else if c
            .resource_requirements
            .as_ref()
            .is_some_and(|r| !r.is_empty())
        {
            "resourceRequirements (GPUs, accelerators)"
        } else if c.credential_specs.as_ref().is_some_and(|s| !s.is_empty()) {
            "credentialSpecs"
        } else {
            continue;
        };
        return refuse(&format!("{what} (container {name})"));
    }
    crate::firelens::unsupported(task)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn features_the_agent_lacks_stop_the_task_instead_of_being_left_out() {
        let plain = w::ContainerDefinition {
            name: Some("app".into()),
            ..Default::default()
        };
        assert_eq!(unsupported(&task(vec![plain.clone()])), None);
        let with_secret = w::ContainerDefinition {
            secrets: Some(vec![w::Secret {
                name: Some("A".into()),
                value_from: Some("/p/a".into()),
            }]),
            ..plain.clone()
        };
        let secret_task = task(vec![plain.clone(), with_secret.clone()]);
        assert_eq!(unsupported(&secret_task), None);
        assert!(has_secrets(&secret_task) && !has_secrets(&task(vec![plain.clone()])));
        let in_logs = w::ContainerDefinition {
            log_configuration: Some(w::LogConfiguration {
                log_driver: Some("json-file".into()),
                secret_options: with_secret.secrets.clone(),
                ..Default::default()
            }),
            ..plain.clone()
        };
        assert_eq!(unsupported(&task(vec![in_logs.clone()])), None);
        assert!(has_secrets(&task(vec![in_logs])));
        let env_files = w::ContainerDefinition {
            environment_files: Some(vec![w::EnvironmentFile::default()]),
            ..plain.clone()
        };
        let reason = unsupported(&task(vec![env_files])).expect("refused");
        assert!(
            reason.starts_with("ResourceInitializationError: ")
                && reason.contains("environmentFiles (container app)"),
            "{reason}"
        );
        let firelens = w::ContainerDefinition {
            log_configuration: Some(w::LogConfiguration {
                log_driver: Some("awsfirelens".into()),
                ..Default::default()
            }),
            ..plain.clone()
        };
        // awsfirelens without a router in the task.
        assert!(unsupported(&task(vec![firelens]))
            .expect("refused")
            .contains("firelensConfiguration"));
        let json_file = w::ContainerDefinition {
            log_configuration: Some(w::LogConfiguration {
                log_driver: Some("json-file".into()),
                ..Default::default()
            }),
            ..plain.clone()
        };
        assert_eq!(unsupported(&task(vec![json_file])), None);
        let mut role = task(vec![plain]);
        role.definition.task_role_arn = Some("arn:aws:iam::1:role/r".into());
        assert_eq!(unsupported(&role), None);

        role.definition.task_role_arn = None;
        role.definition.proxy_configuration = Some(w::ProxyConfiguration::default());
        assert!(unsupported(&role)
            .expect("refused")
            .contains("proxyConfiguration"));
    }

    #[test]
    fn secrets_become_their_containers_variables_over_plain_ones() {
        let c = w::ContainerDefinition {
            name: Some("app".into()),
            environment: Some(vec![w::KeyValuePair {
                name: Some("DB".into()),
                value: Some("plain".into()),
            }]),
            ..Default::default()
        };
        let t = task(vec![c.clone()]);
        let mut s = container_spec(&t, &c, "i-1", "r", None, None);
        let values = [
            berth_wire::agent::SecretValue {
                container: "app".into(),
                name: "DB".into(),
                value: "secret".into(),
                used_as: berth_wire::agent::SecretUse::Env,
            },
            berth_wire::agent::SecretValue {
                container: "other".into(),
                name: "X".into(),
                value: "no".into(),
                used_as: berth_wire::agent::SecretUse::Env,
            },
            berth_wire::agent::SecretValue {
                container: "app".into(),
                name: "max-size".into(),
                value: "10m".into(),
                used_as: berth_wire::agent::SecretUse::LogOption,
            },
        ];
        s.log_driver = Some(("json-file".into(), BTreeMap::new()));
        add_secrets(&mut s, "app", &values);
        assert!(s.env.contains(&("DB".into(), "secret".into())));
        assert_eq!(
            s.log_driver
                .as_ref()
                .map(|(_, o)| o.get("max-size").cloned()),
            Some(Some("10m".into()))
        );
        assert!(!s.env.iter().any(|(k, _)| k == "max-size"));
        assert!(!s.env.iter().any(|(k, v)| k == "X" || v == "plain"));
        assert!(!format!("{:?}", values).contains("secret\""));
    }

    pub(crate) fn task(containers: Vec<w::ContainerDefinition>) -> DesiredTask {
        DesiredTask {
            task_arn: "arn:aws:ecs:us-east-1:0:task/c/abc123".into(),
            cluster: "c".into(),
            desired_status: berth_wire::agent::DesiredStatus::Running,
            definition: w::TaskDefinition {
                family: Some("web".into()),
                revision: Some(3),
                cpu: Some("512".into()),
                memory: Some("256".into()),
                container_definitions: Some(containers),
                volumes: Some(vec![
                    w::Volume {
                        name: Some("data".into()),
                        host: Some(w::HostVolumeProperties {
                            source_path: Some("/srv/data".into()),
                        }),
                        ..Default::default()
                    },
                    w::Volume {
                        name: Some("scratch".into()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            },
            container_arns: vec![],
            stop_code: None,
            stopped_reason: None,
            availability_zone: None,
            network: None,
            launch_type: "EC2".into(),
            service_name: None,
        }
    }

    #[test]
    fn fargate_containers_run_hardened_whatever_the_definition_says() {
        let c = w::ContainerDefinition {
            name: Some("app".into()),
            image: Some("busybox".into()),
            privileged: Some(true),
            linux_parameters: Some(w::LinuxParameters {
                capabilities: Some(w::KernelCapabilities {
                    add: Some(vec!["SYS_ADMIN".into(), "SYS_PTRACE".into()]),
                    drop: None,
                }),
                ..Default::default()
            }),
            docker_security_options: Some(vec!["seccomp=unconfined".into()]),
            mount_points: Some(vec![
                w::MountPoint {
                    source_volume: Some("data".into()),
                    container_path: Some("/data".into()),
                    read_only: None,
                },
                w::MountPoint {
                    source_volume: Some("scratch".into()),
                    container_path: Some("/scratch".into()),
                    read_only: None,
                },
            ]),
            ..Default::default()
        };
        let mut t = task(vec![c.clone()]);
        let ec2 = container_spec(&t, &c, "i", "r", None, None);
        assert!(ec2.privileged && ec2.cap_add.len() == 2 && ec2.mounts.len() == 2);
        t.launch_type = "FARGATE".into();
        let s = container_spec(&t, &c, "i", "r", None, None);
        assert!(!s.privileged);
        assert_eq!(s.cap_add, vec!["SYS_PTRACE".to_string()]);
        assert_eq!(s.cap_drop, vec!["NET_RAW".to_string()]);
        assert_eq!(s.security_opts, vec!["no-new-privileges".to_string()]);
        assert_eq!(s.mounts.len(), 1, "the host path is not mounted");
        assert!(matches!(s.mounts[0].source, MountSource::Volume(_)));
        assert!(s
            .env
            .contains(&("AWS_EXECUTION_ENV".into(), "AWS_ECS_FARGATE".into())));
    }

    #[test]
    fn a_definition_becomes_a_spec_with_ecs_labels_limits_and_ports() {
        let c = w::ContainerDefinition {
            name: Some("app".into()),
            image: Some("busybox".into()),
            cpu: Some(0),
            memory_reservation: Some(64),
            environment: Some(vec![w::KeyValuePair {
                name: Some("AWS_REGION".into()),
                value: Some("mine".into()),
            }]),
            port_mappings: Some(vec![
                w::PortMapping {
                    container_port: Some(80),
                    host_port: Some(0),
                    ..Default::default()
                },
                w::PortMapping {
                    container_port: Some(53),
                    host_port: Some(5353),
                    protocol: Some("udp".into()),
                    ..Default::default()
                },
            ]),
            mount_points: Some(vec![
                w::MountPoint {
                    source_volume: Some("data".into()),
                    container_path: Some("/data".into()),
                    read_only: Some(true),
                },
                w::MountPoint {
                    source_volume: Some("scratch".into()),
                    container_path: Some("/scratch".into()),
                    read_only: None,
                },
            ]),
            links: Some(vec!["db:database".into()]),
            stop_timeout: Some(5),
            privileged: Some(true),
            ..Default::default()
        };
        let t = task(vec![c.clone()]);
        let s = container_spec(&t, &c, "inst1", "eu-west-1", None, None);
        assert_eq!(s.name, "ecs-web-3-app-abc123");
        assert_eq!(s.labels[OWNER_LABEL], "inst1");
        assert_eq!(s.labels[TASK_LABEL], t.task_arn);
        assert_eq!(s.labels["com.amazonaws.ecs.task-definition-version"], "3");
        assert_eq!(s.cpu_shares, Some(2));
        assert_eq!(
            s.memory_bytes,
            Some(256 * MIB),
            "the task's memory, lacking the container's"
        );
        assert_eq!(s.memory_reservation_bytes, Some(64 * MIB));
        assert_eq!(s.nano_cpus, Some(500_000_000));
        assert!(s.env.contains(&("AWS_REGION".into(), "mine".into())));
        assert_eq!(s.ports[0].host_port, None);
        assert_eq!(s.ports[1].protocol, Protocol::Udp);
        assert_eq!(
            s.mounts[0].source,
            MountSource::HostPath("/srv/data".into())
        );
        assert_eq!(
            s.mounts[1].source,
            MountSource::Volume(VolumeSpec::named("ecs-scratch-abc123"))
        );
        assert_eq!(s.links, ["ecs-web-3-db-abc123:database"]);
        assert_eq!(s.stop_timeout, Some(Duration::from_secs(5)));
        // This sandbox's runc cannot start privileged containers, so the
        // end-to-end tests stop at the spec for this one.
        assert!(s.privileged);
        assert_eq!(s.cgroup_parent, None);

        // Under a task cgroup the kernel bounds the task as a whole, so the
        // container keeps only its own limits.
        let s = container_spec(&t, &c, "inst1", "eu-west-1", Some("/berth/abc123"), None);
        assert_eq!(s.cgroup_parent.as_deref(), Some("/berth/abc123"));
        assert_eq!(s.memory_bytes, None);
        assert_eq!(s.nano_cpus, None);
        assert_eq!(s.memory_reservation_bytes, Some(64 * MIB));
        assert_eq!(
            task_limits(&t),
            TaskLimits {
                cpu_units: Some(512),
                memory_mib: Some(256)
            }
        );
    }

    #[test]
    fn containers_are_created_after_what_they_need() {
        let c = |n: &str, dep: Option<&str>| w::ContainerDefinition {
            name: Some(n.into()),
            depends_on: dep.map(|d| {
                vec![w::ContainerDependency {
                    container_name: Some(d.into()),
                    condition: Some("START".into()),
                }]
            }),
            ..Default::default()
        };
        let defs = vec![c("app", Some("init")), c("init", Some("db")), c("db", None)];
        assert_eq!(creation_order(&defs), [2, 1, 0]);
        let cycle = vec![c("a", Some("b")), c("b", Some("a"))];
        assert_eq!(creation_order(&cycle), [0, 1]);
    }
}
