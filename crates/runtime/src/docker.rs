//! The Docker Engine driver, over the engine's unix socket.

use crate::cgroup::Layout;
use crate::pull::Plan;
use crate::{
    Binding, ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, ContainerSummary,
    Event, EventKind, Health, LogChunk, LogStream, MountSource, NetworkMode, Protocol,
    PullBehavior, Pulled, RegistryAuth, RuntimeError, Stats, TaskLimits,
};
use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, EndpointIpamConfig, EndpointSettings,
    HealthConfig, HealthStatusEnum, HostConfig, HostConfigLogConfig, Ipam, IpamConfig, Mount,
    MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig, NetworkCreateRequest,
    NetworkingConfig, PortBinding, ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

/// Requests that get no answer in this long fail (a pull's answer is the
/// start of its progress stream, so slow pulls are not cut off).
const REQUEST_TIMEOUT_SECS: u64 = 120;

pub struct DockerRuntime {
    docker: Docker,
    /// Images this process pulled, for [`PullBehavior::Once`].
    pulled: Mutex<HashSet<String>>,
    /// The engine's cgroups, when they are ones Berth can give tasks.
    cgroups: Option<Layout>,
    /// The engine's logging drivers, as it listed them at start.
    log_drivers: Vec<String>,
    /// The task endpoint's rules are read, then changed: one change at a
    /// time in this process (iptables' own lock covers single commands).
    /// Holds the bridges already let route to loopback, and whether the
    /// chain, its jump and the guards were seen in place: set up once per
    /// process, they cost each task no more iptables runs.
    endpoint_lock: tokio::sync::Mutex<EndpointSetup>,
    /// Sandboxes' host chains whose jumps this process put in place, with
    /// the sandbox they are marked with: a task taking a warm sandbox then
    /// costs one `iptables-restore`, not a look at the hooks too.
    host_jumps: Mutex<HashMap<String, String>>,
    /// The VPC tunnel's MTU, which subnets' bridges take; 0 without one.
    subnet_mtu: std::sync::atomic::AtomicU32,
    /// Containers whose addresses were cleared of any sandbox's host chain.
    cleared: Mutex<HashSet<String>>,
}

/// Where the kernel's cgroup hierarchies are mounted, for the engine and
/// the agent alike (they share a host).
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn unavailable(e: DockerError) -> RuntimeError {
    RuntimeError::Unavailable(e.to_string())
}

/// The engine's own message for a refused request, without bollard's
/// wrapping.
fn refused(e: DockerError) -> RuntimeError {
    match e {
        DockerError::DockerResponseServerError {
            status_code: 404,
            message,
        } => RuntimeError::NotFound(message),
        DockerError::DockerResponseServerError { message, .. } => RuntimeError::Rejected(message),
        other => unavailable(other),
    }
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The bridge driver's option for its bridge's and interfaces' MTU.
const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// The label on the bridge networks Berth makes for subnets.
const SUBNET_LABEL: &str = "berth.subnet";

/// Whether two `a.b.c.d/n` ranges share an address: the engine's own
/// networks' ranges come as text, and this crate depends on none of
/// Berth's others (so not on `berth_domain::network::Cidr`).
fn overlap(a: &str, b: &str) -> bool {
    let range = |c: &str| -> Option<(u32, u32)> {
        let (ip, len) = c.split_once('/')?;
        let ip = u32::from(ip.parse::<std::net::Ipv4Addr>().ok()?);
        let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
        Some((ip & mask, (ip & mask) | !mask))
    };
    match (range(a), range(b)) {
        (Some((a0, a1)), Some((b0, b1))) => a0 <= b1 && b0 <= a1,
        _ => false,
    }
}

impl DockerRuntime {
    /// Removes the idle subnet bridges whose ranges overlap `spec`'s (left
    /// by an installation of Berth that is gone, or by this one under an
    /// older name); refuses, saying whose it is, if one is in use.
    async fn clear_overlaps(&self, spec: &crate::NetworkSpec) -> Result<(), RuntimeError> {
        let nets = self
            .docker
            .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
            .await
            .map_err(unavailable)?;
        let subnet = spec.labels.get(SUBNET_LABEL).unwrap_or(&spec.name);
        for n in nets {
            let name = n.name.clone().unwrap_or_default();
            // This subnet's own bridge, made meanwhile, is no obstacle.
            if name == spec.name {
                continue;
            }
            let Some(cidr) = n
                .ipam
                .as_ref()
                .and_then(|i| i.config.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| c.subnet.clone())
                .find(|c| overlap(c, &spec.cidr))
            else {
                continue;
            };
            let berths = n
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(SUBNET_LABEL));
            if !berths {
                return Err(RuntimeError::Rejected(format!(
                    "subnet {subnet} ({}) overlaps Docker network {name} ({cidr}) on this host, which Berth did not make: remove it, or use subnets that do not overlap it",
                    spec.cidr
                )));
            }
            let inspected = self
                .docker
                .inspect_network(&name, None)
                .await
                .map_err(unavailable)?;
            let busy = inspected.containers.as_ref().is_some_and(|c| !c.is_empty());
            if busy {
                return Err(RuntimeError::Rejected(format!(
                    "subnet {subnet} ({}) overlaps bridge {name} ({cidr}) on this host's Docker engine, which tasks of another Berth network use (another installation of Berth, or another account, sharing this engine): each needs subnets of its own on one engine; give this host an engine of its own, or create subnets that do not overlap (aws ec2 create-subnet)",
                    spec.cidr
                )));
            }
            tracing::info!(network = %name, %cidr, "removing an idle subnet bridge in the way of {}", spec.name);
            self.remove_network(&name).await?;
        }
        Ok(())
    }

    /// The MTU subnets' bridges are made with: the VPC tunnel's, if the
    /// host has one (the engine's default otherwise).
    fn wanted_mtu(&self) -> Option<String> {
        match self.subnet_mtu.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            mtu => Some(mtu.to_string()),
        }
    }

    /// One stats sample of container `id`; `one_shot` skips the engine's
    /// second sample (and so `precpu_stats`).
    async fn sample(
        &self,
        id: &str,
        one_shot: bool,
    ) -> Result<bollard::models::ContainerStatsResponse, RuntimeError> {
        let options = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(one_shot)
            .build();
        self.docker
            .stats(id, Some(options))
            .next()
            .await
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?
            .map_err(refused)
    }

    /// Connects to the engine at `socket` (default `/var/run/docker.sock`)
    /// and settles on an API version both sides speak.
    pub async fn connect(socket: Option<&str>) -> Result<DockerRuntime, RuntimeError> {
        let path = socket.unwrap_or("/var/run/docker.sock");
        let docker = Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            .map_err(unavailable)?
            .negotiate_version()
            .await
            .map_err(unavailable)?;
        docker.ping().await.map_err(unavailable)?;
        let info = docker.info().await.map_err(unavailable)?;
        let driver = info
            .cgroup_driver
            .map(|d| d.to_string())
            .unwrap_or_default();
        let version = info
            .cgroup_version
            .map(|v| v.to_string())
            .unwrap_or_default();
        let cgroups = Layout::detect(std::path::Path::new(CGROUP_ROOT), &driver, &version);
        if cgroups.is_none() {
            tracing::warn!(driver = %driver, version = %version, "task-level limits need an engine on the cgroupfs or systemd cgroup driver with cgroup v1 or v2; on this one each container carries its task's limits on its own");
        } else {
            tracing::info!(driver = %driver, version = %version, "task cgroups on this engine");
        }
        let log_drivers = info.plugins.and_then(|p| p.log).unwrap_or_default();
        Ok(DockerRuntime {
            docker,
            pulled: Mutex::default(),
            cgroups,
            log_drivers,
            endpoint_lock: tokio::sync::Mutex::default(),
            host_jumps: Mutex::default(),
            subnet_mtu: Default::default(),
            cleared: Mutex::default(),
        })
    }

    async fn fetch(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<(), String> {
        let (from, tag) = split_reference(image);
        let mut options = CreateImageOptionsBuilder::new().from_image(from);
        if let Some(tag) = tag {
            options = options.tag(tag);
        }
        let credentials = auth.map(|a| bollard::auth::DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(registry_of(from).to_string()),
            ..Default::default()
        });
        let mut progress = self
            .docker
            .create_image(Some(options.build()), None, credentials);
        while let Some(step) = progress.next().await {
            match step {
                Ok(info) => {
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        return Err(detail);
                    }
                }
                Err(DockerError::DockerResponseServerError { message, .. }) => {
                    return Err(format!("Error response from daemon: {message}"))
                }
                Err(DockerError::DockerStreamError { error }) => return Err(error),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

/// The registry an image reference names: its first part when that
/// looks like a host (has a `.` or `:`, or is `localhost`), else Docker Hub.
fn registry_of(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((host, _)) if host.contains('.') || host.contains(':') || host == "localhost" => host,
        _ => "docker.io",
    }
}

/// `repo[:tag]` or `repo@digest` -> (what to ask for, tag). Without a tag
/// the engine would pull every tag of the repository.
fn split_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(i) => (&image[..name_start + i], Some(&image[name_start + i + 1..])),
        None => (image, Some("latest")),
    }
}

/// RFC 3339 as the engine writes it, to seconds since the epoch; the
/// engine's zero time ("0001-01-01T00:00:00Z") means "never".
fn timestamp(s: Option<&str>) -> Option<f64> {
    let t = time::OffsetDateTime::parse(s?, &time::format_description::well_known::Rfc3339).ok()?;
    (t.year() > 1970).then(|| t.unix_timestamp_nanos() as f64 / 1e9)
}

fn protocol(s: &str) -> Option<Protocol> {
    match s {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        _ => None,
    }
}

fn health(s: Option<HealthStatusEnum>) -> Option<Health> {
    match s? {
        HealthStatusEnum::STARTING => Some(Health::Starting),
        HealthStatusEnum::HEALTHY => Some(Health::Healthy),
        HealthStatusEnum::UNHEALTHY => Some(Health::Unhealthy),
        _ => None,
    }
}

fn state(s: &str) -> ContainerState {
    match s {
        "created" => ContainerState::Created,
        "running" => ContainerState::Running,
        "exited" | "dead" => ContainerState::Exited,
        _ => ContainerState::Other,
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// The engine's create request for a spec.
fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let key = |p: &crate::PortSpec| format!("{}/{}", p.container_port, p.protocol.as_str());
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &spec.ports {
        port_bindings
            .entry(key(p))
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: None,
                // An empty host port asks the engine for one from the ephemeral range.
                host_port: Some(p.host_port.map(|h| h.to_string()).unwrap_or_default()),
            });
    }
    let mounts = spec
        .mounts
        .iter()
        .map(|m| {
            let (typ, source, volume_options) = match &m.source {
                MountSource::HostPath(p) => (MountType::BIND, p.clone(), None),
                MountSource::Volume(v) => (
                    MountType::VOLUME,
                    v.name.clone(),
                    // Applied when the engine makes the volume on first use.
                    (v.driver.is_some() || !v.driver_options.is_empty() || !v.labels.is_empty())
                        .then(|| MountVolumeOptions {
                            labels: (!v.labels.is_empty())
                                .then(|| v.labels.clone().into_iter().collect()),
                            driver_config: Some(MountVolumeOptionsDriverConfig {
                                name: v.driver.clone(),
                                options: (!v.driver_options.is_empty())
                                    .then(|| v.driver_options.clone().into_iter().collect()),
                            }),
                            ..Default::default()
                        }),
                ),
            };
            Mount {
                target: Some(m.target.clone()),
                source: Some(source),
                typ: Some(typ),
                read_only: Some(m.read_only),
                volume_options,
                ..Default::default()
            }
        })
        .collect();
    let host_config = HostConfig {
        sysctls: (!spec.sysctls.is_empty()).then(|| spec.sysctls.clone().into_iter().collect()),
        pid_mode: spec.pid_mode.clone(),
        ipc_mode: spec.ipc_mode.clone(),
        log_config: spec
            .log_driver
            .as_ref()
            .map(|(driver, options)| HostConfigLogConfig {
                typ: Some(driver.clone()),
                config: (!options.is_empty()).then(|| options.clone().into_iter().collect()),
            }),
        cpu_shares: spec.cpu_shares,
        memory: spec.memory_bytes,
        memory_reservation: spec.memory_reservation_bytes,
        nano_cpus: spec.nano_cpus,
        network_mode: Some(match &spec.network_mode {
            NetworkMode::Bridge => "bridge".to_string(),
            NetworkMode::Host => "host".to_string(),
            NetworkMode::None => "none".to_string(),
            NetworkMode::Container(id) => format!("container:{id}"),
            NetworkMode::Attached { network, .. } => network.clone(),
        }),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        extra_hosts: non_empty(
            spec.extra_hosts
                .iter()
                .map(|(h, ip)| format!("{h}:{ip}"))
                .collect(),
        ),
        dns: non_empty(spec.dns_servers.clone()),
        dns_search: non_empty(spec.dns_search.clone()),
        links: non_empty(spec.links.clone()),
        ulimits: non_empty(
            spec.ulimits
                .iter()
                .map(|u| ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect(),
        ),
        cap_add: non_empty(spec.cap_add.clone()),
        cap_drop: non_empty(spec.cap_drop.clone()),
        init: spec.init.then_some(true),
        tmpfs: (!spec.tmpfs.is_empty()).then(|| spec.tmpfs.iter().cloned().collect()),
        shm_size: spec.shm_size_bytes,
        readonly_rootfs: Some(spec.readonly_rootfs),
        privileged: Some(spec.privileged),
        mounts: non_empty(mounts),
        volumes_from: non_empty(spec.volumes_from.clone()),
        security_opt: non_empty(spec.security_opts.clone()),
        cgroup_parent: spec.cgroup_parent.clone(),
        runtime: spec
            .sandbox
            .as_ref()
            .map(|_| crate::gvisor::RUNTIME.to_string()),
        ..Default::default()
    };
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    match &spec.sandbox {
        Some(crate::Sandbox::Root) => env.push(format!(
            "{}={}",
            crate::gvisor::MARK_ENV,
            crate::gvisor::ROOT
        )),
        Some(crate::Sandbox::Join(id)) => env.push(format!("{}={id}", crate::gvisor::MARK_ENV)),
        None => {}
    }
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entry_point.clone(),
        env: non_empty(env),
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        labels: Some(spec.labels.clone().into_iter().collect()),
        exposed_ports: non_empty(spec.ports.iter().map(key).collect()),
        healthcheck: spec.health_check.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: Some(nanos(h.interval)),
            timeout: Some(nanos(h.timeout)),
            retries: Some(i64::from(h.retries)),
            start_period: Some(nanos(h.start_period)),
            ..Default::default()
        }),
        stop_timeout: spec.stop_timeout.map(|d| d.as_secs() as i64),
        open_stdin: spec.open_stdin.then_some(true),
        tty: spec.tty.then_some(true),
        network_disabled: spec.network_disabled.then_some(true),
        host_config: Some(host_config),
        networking_config: match &spec.network_mode {
            NetworkMode::Attached { network, ip } => Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.clone(),
                    EndpointSettings {
                        ipam_config: Some(EndpointIpamConfig {
                            ipv4_address: Some(ip.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )])),
            }),
            _ => None,
        },
        ..Default::default()
    }
}

fn label_filter(label: &str, value: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{label}={value}")])])
}

/// A container's addresses on the networks it is attached to.
fn addresses(c: &bollard::models::ContainerInspectResponse) -> Vec<std::net::Ipv4Addr> {
    c.network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|n| {
            n.values()
                .filter_map(|e| e.ip_address.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The address of a container that boots a task's sandbox, which holds
/// the task's network stack: its filter is the host's to keep.
fn sandbox_address(c: &bollard::models::ContainerInspectResponse) -> Option<std::net::Ipv4Addr> {
    let host = c.host_config.as_ref()?;
    if host.runtime.as_deref() != Some(crate::gvisor::RUNTIME) {
        return None;
    }
    c.network_settings
        .as_ref()?
        .networks
        .as_ref()?
        .values()
        .filter_map(|n| n.ip_address.as_deref()?.parse().ok())
        .next()
}

/// The rules of `hook` that jump to `chain`, as `iptables -S` prints them.
async fn jumps_to(hook: &str, chain: &str) -> Result<Vec<String>, RuntimeError> {
    Ok(iptables_ok(&["-S", hook])
        .await?
        .lines()
        .filter(|l| l.ends_with(&format!("-j {chain}")))
        .map(String::from)
        .collect())
}

/// Deletes a rule `iptables -S` printed.
async fn delete_rule(rule: &str) -> Result<(), RuntimeError> {
    let Some(rest) = rule.strip_prefix("-A ") else {
        return Ok(());
    };
    let mut args = vec!["-D"];
    args.extend(rest.split_whitespace());
    iptables_ok(&args).await.map(|_| ())
}

/// The jumps to a sandboxed task's host chains: (hook, chain, and how the
/// jump matches the task's address). Ingress by destination from every
/// hook that sees traffic to the task, egress by source.
fn host_jumps_at(ip: std::net::Ipv4Addr) -> Vec<(&'static str, String, &'static str)> {
    let mut out: Vec<(&'static str, String, &'static str)> = crate::firewall::HOST_HOOKS
        .iter()
        .map(|h| (*h, crate::firewall::host_chain(ip), "-d"))
        .collect();
    out.push((
        crate::firewall::HOST_EGRESS_HOOK,
        crate::firewall::host_egress_chain(ip),
        "-s",
    ));
    out
}

/// Sets the host-side filter of sandbox `id` at `ip` to `filter`, its
/// chains' jumps marked with the sandbox, so that a later task at the
/// address takes them over and the removal of this one leaves them be.
async fn host_filter(
    id: &str,
    ip: std::net::Ipv4Addr,
    filter: &crate::firewall::Filter,
    known: &Mutex<HashMap<String, String>>,
) -> Result<(), RuntimeError> {
    // Bridged packets reach the host's filter only through br_netfilter.
    for f in ["/proc/sys/net/bridge/bridge-nf-call-iptables"] {
        if !std::path::Path::new(f).exists() {
            let _ = tokio::process::Command::new("modprobe")
                .arg("br_netfilter")
                .status()
                .await;
        }
        std::fs::write(f, "1").map_err(|e| {
            RuntimeError::Unavailable(format!("{f}: {e}: bridged traffic would pass unfiltered"))
        })?;
    }
    let chain = crate::firewall::host_chain(ip);
    let egress = crate::firewall::host_egress_chain(ip);
    feed(
        tokio::process::Command::new("iptables-restore").args(["-w", "--noflush"]),
        &crate::firewall::host_table(&chain, &egress, filter),
        &format!("of {chain} and {egress}"),
    )
    .await?;
    let mark = format!("berth-sandbox-{}", &id[..id.len().min(12)]);
    let placed = known
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&chain)
        .cloned();
    if placed.as_ref() == Some(&mark) {
        return Ok(());
    }
    let address = format!("{ip}/32");
    for (hook, target, side) in host_jumps_at(ip) {
        let have = jumps_to(hook, &target).await?;
        if have.len() == 1 && have[0].contains(&mark) {
            continue;
        }
        for rule in &have {
            delete_rule(rule).await?;
        }
        iptables_ok(&[
            "-I",
            hook,
            "1",
            side,
            &address,
            "-m",
            "comment",
            "--comment",
            &mark,
            "-j",
            &target,
        ])
        .await?;
    }
    known
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(chain, mark);
    Ok(())
}

/// Takes sandbox `id`'s host-side filter away, unless a later sandbox at
/// its address holds it now.
async fn drop_host_filter(
    id: &str,
    ip: std::net::Ipv4Addr,
    known: &Mutex<HashMap<String, String>>,
) -> Result<(), RuntimeError> {
    let chain = crate::firewall::host_chain(ip);
    let mark = format!("berth-sandbox-{}", &id[..id.len().min(12)]);
    {
        let mut k = known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if k.get(&chain) == Some(&mark) {
            k.remove(&chain);
        }
    }
    let mut others = false;
    for (hook, target, _) in host_jumps_at(ip) {
        for rule in jumps_to(hook, &target).await? {
            if rule.contains(&mark) {
                delete_rule(&rule).await?;
            } else {
                others = true;
            }
        }
    }
    if !others {
        for target in [chain, crate::firewall::host_egress_chain(ip)] {
            let _ = iptables(&["-F", &target]).await?;
            let _ = iptables(&["-X", &target]).await?;
        }
    }
    Ok(())
}

/// The sandbox and address a host-side filter's jump was placed for, from
/// its line in `iptables -S`.
fn sandbox_jump(rule: &str) -> Option<(String, std::net::Ipv4Addr)> {
    let words: Vec<&str> = rule.split_whitespace().collect();
    let mark = words
        .iter()
        .find_map(|w| w.strip_prefix("berth-sandbox-"))
        .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_hexdigit()))?;
    let address = words
        .windows(2)
        .find(|w| w[0] == "-d" || w[0] == "-s")
        .map(|w| w[1])?;
    let ip = address
        .strip_suffix("/32")
        .unwrap_or(address)
        .parse()
        .ok()?;
    Some((mark.to_string(), ip))
}

impl DockerRuntime {
    /// Takes away the host-side filters of sandboxes that are gone:
    /// removed behind an agent's back (`docker rm -f`) or while none ran.
    /// Their jumps would go on filtering whichever task next holds the
    /// address on this engine, sandboxed or not, by rules that are nobody's.
    async fn sweep_host_filters(&self) -> Result<(), RuntimeError> {
        let mut placed = BTreeSet::new();
        let hooks: BTreeSet<&str> = crate::firewall::HOST_HOOKS
            .into_iter()
            .chain([crate::firewall::HOST_EGRESS_HOOK])
            .collect();
        for hook in hooks {
            placed.extend(
                iptables_ok(&["-S", hook])
                    .await?
                    .lines()
                    .filter_map(sandbox_jump),
            );
        }
        if placed.is_empty() {
            return Ok(());
        }
        // Listed after the jumps: a sandbox is made before its jumps, so
        // one placed meanwhile is among these.
        let options = ListContainersOptionsBuilder::new().all(true).build();
        let ids: Vec<String> = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter_map(|c| c.id)
            .collect();
        for (mark, ip) in placed {
            if !ids.iter().any(|id| id.starts_with(&mark)) {
                tracing::info!(sandbox = %mark, %ip, "removing the host filter of a sandbox that is gone");
                drop_host_filter(&mark, ip, &self.host_jumps).await?;
            }
        }
        Ok(())
    }

    /// Whether the engine runs containers with [`crate::gvisor::RUNTIME`]
    /// through Berth's script.
    async fn has_runtime(&self) -> Result<bool, RuntimeError> {
        let info = self.docker.info().await.map_err(unavailable)?;
        Ok(info
            .runtimes
            .and_then(|r| r.get(crate::gvisor::RUNTIME).cloned())
            .and_then(|r| r.path)
            .is_some_and(|p| p == crate::gvisor::SCRIPT))
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn version(&self) -> Result<crate::Version, RuntimeError> {
        let v = self.docker.version().await.map_err(unavailable)?;
        Ok(crate::Version {
            engine: v.version.unwrap_or_default(),
            api: self.docker.client_version().to_string(),
            log_drivers: self.log_drivers.clone(),
        })
    }

    async fn ensure_sandboxes(
        &self,
        runsc: &std::path::Path,
        shim: &std::path::Path,
    ) -> Result<(), RuntimeError> {
        let (runsc, shim) = (runsc.to_path_buf(), shim.to_path_buf());
        tokio::task::spawn_blocking(move || crate::gvisor::install_script(&runsc, &shim))
            .await
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))?
            .map_err(RuntimeError::Rejected)?;
        // Another agent on the engine may sweep at the same time.
        if let Err(e) = self.sweep_host_filters().await {
            tracing::warn!(error = %e, "could not remove the host filters of sandboxes that are gone");
        }
        if self.has_runtime().await? {
            return Ok(());
        }
        tokio::task::spawn_blocking(crate::gvisor::register_with_engine)
            .await
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))?
            .map_err(RuntimeError::Rejected)?;
        // The engine reloads its runtimes on SIGHUP, in the background.
        for _ in 0..100 {
            if self.has_runtime().await? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(RuntimeError::Rejected(format!(
            "the engine did not take the {} runtime from {}; restart it to load its configuration",
            crate::gvisor::RUNTIME,
            crate::gvisor::DAEMON_JSON
        )))
    }

    async fn pull_with(
        &self,
        image: &str,
        behavior: PullBehavior,
        auth: Option<&RegistryAuth>,
    ) -> Result<Pulled, RuntimeError> {
        let cached = match self.docker.inspect_image(image).await {
            Ok(_) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(unavailable(e)),
        };
        let before = self
            .pulled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(image);
        match behavior.plan(cached, before) {
            Plan::UseCache => Ok(Pulled::Cached),
            Plan::Pull { fallback_to_cache } => match self.fetch(image, auth).await {
                Ok(()) => {
                    self.pulled
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(image.to_string());
                    Ok(Pulled::Fetched)
                }
                Err(why) if fallback_to_cache => {
                    tracing::warn!(image, error = %why, "pull failed; using the cached image");
                    Ok(Pulled::Cached)
                }
                Err(why) => Err(RuntimeError::CannotPull(why)),
            },
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        // The engine's `-v` makes a missing host directory; its mounts API
        // (which Berth uses) refuses one, and task definitions count on
        // the former. The engine listens on a local socket, so its host
        // is this one.
        for m in &spec.mounts {
            match &m.source {
                MountSource::HostPath(p) => {
                    if std::fs::metadata(p).is_err() {
                        std::fs::create_dir_all(p).map_err(|e| {
                            RuntimeError::Rejected(format!(
                                "cannot make the host directory {p} of a bind mount: {e}"
                            ))
                        })?;
                    }
                }
                // The engine would make it on first use.
                MountSource::Volume(v) if v.must_exist => {
                    match self.docker.inspect_volume(&v.name).await {
                        Ok(_) => {}
                        Err(DockerError::DockerResponseServerError {
                            status_code: 404, ..
                        }) => {
                            return Err(RuntimeError::Rejected(format!(
                                "the shared volume {} does not exist, and autoprovision is not set",
                                v.name
                            )))
                        }
                        Err(e) => return Err(unavailable(e)),
                    }
                }
                MountSource::Volume(_) => {}
            }
        }
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        self.docker
            .create_container(Some(options), create_body(spec))
            .await
            .map(|r| r.id)
            .map_err(refused)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker.start_container(id, None).await.map_err(refused)
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let secs = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(secs).build();
        match self.docker.stop_container(id, Some(options)).await {
            // 304: already stopped.
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(refused(e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        // A sandbox's filter lives on the host: it goes with the sandbox.
        if let Ok(c) = self.docker.inspect_container(id, None).await {
            if let Some(ip) = sandbox_address(&c) {
                drop_host_filter(id, ip, &self.host_jumps).await?;
            }
        }
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(refused(e)),
        }
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let c = match self.docker.inspect_container(id, None).await {
            Ok(c) => c,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        let st = c.state.unwrap_or_default();
        let status = st.status.map_or(ContainerState::Other, |s| match s {
            ContainerStateStatusEnum::CREATED => ContainerState::Created,
            ContainerStateStatusEnum::RUNNING => ContainerState::Running,
            ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD => {
                ContainerState::Exited
            }
            _ => ContainerState::Other,
        });
        let mut ports = Vec::new();
        let settings = c.network_settings.unwrap_or_default();
        let mut networks: Vec<crate::Attachment> = settings
            .networks
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, _)| !matches!(name.as_str(), "host" | "none"))
            .map(|(name, e)| crate::Attachment {
                network: name,
                ip: e.ip_address.unwrap_or_default(),
                mac: e.mac_address.unwrap_or_default(),
                prefix_len: e
                    .ip_prefix_len
                    .and_then(|l| u8::try_from(l).ok())
                    .unwrap_or(32),
                gateway: e.gateway.unwrap_or_default(),
            })
            .collect();
        networks.sort_by(|a, b| a.network.cmp(&b.network));
        let bound = settings.ports.unwrap_or_default();
        for (key, bindings) in bound {
            let Some((port, proto)) = key.split_once('/') else {
                continue;
            };
            let (Ok(container_port), Some(protocol)) = (port.parse(), protocol(proto)) else {
                continue;
            };
            for b in bindings.unwrap_or_default() {
                if let Some(host_port) = b.host_port.and_then(|p| p.parse().ok()) {
                    ports.push(Binding {
                        container_port,
                        host_port,
                        host_ip: b.host_ip.unwrap_or_default(),
                        protocol,
                    });
                }
            }
        }
        // IPv4 first: the engine allocates a dynamic port per address
        // family, and when another process holds a port in its range the
        // two differ; clients (and load balancers) mostly connect by IPv4.
        ports.sort_by_key(|b| {
            (
                b.container_port,
                b.host_ip.contains(':'),
                b.host_port,
                b.host_ip.clone(),
            )
        });
        let exited = status == ContainerState::Exited;
        Ok(Some(ContainerInfo {
            id: c.id.unwrap_or_default(),
            name: c
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            image: c
                .config
                .as_ref()
                .and_then(|k| k.image.clone())
                .unwrap_or_default(),
            image_id: c.image.unwrap_or_default(),
            created_at: timestamp(c.created.as_deref()),
            labels: c
                .config
                .and_then(|k| k.labels)
                .unwrap_or_default()
                .into_iter()
                .collect(),
            state: status,
            started_at: timestamp(st.started_at.as_deref()),
            finished_at: timestamp(st.finished_at.as_deref()).filter(|_| exited),
            exit_code: st.exit_code.filter(|_| exited),
            health: health(st.health.and_then(|h| h.status)),
            oom_killed: st.oom_killed.unwrap_or(false),
            error: st.error.filter(|e| !e.is_empty()),
            ports,
            networks,
        }))
    }

    async fn list(&self, label: &str, value: &str) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&label_filter(label, value))
            .build();
        let found = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(unavailable)?;
        Ok(found
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                state: state(&c.state.map(|s| s.to_string()).unwrap_or_default()),
            })
            .collect())
    }

    fn events(&self, label: &str, value: &str) -> BoxStream<'static, Result<Event, RuntimeError>> {
        let mut filters = label_filter(label, value);
        filters.insert("type".into(), vec!["container".into()]);
        // The request goes out when the stream is first polled; asking from
        // the time of this call keeps events in between from being lost.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let since = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
        let options = EventsOptionsBuilder::new()
            .since(&since)
            .filters(&filters)
            .build();
        self.docker
            .events(Some(options))
            .map_err(unavailable)
            .try_filter_map(|m| async move {
                let actor = m.actor.unwrap_or_default();
                let mut labels: BTreeMap<String, String> =
                    actor.attributes.unwrap_or_default().into_iter().collect();
                let action = m.action.unwrap_or_default();
                let kind = match action.as_str() {
                    "start" => EventKind::Started,
                    "die" => EventKind::Died {
                        exit_code: labels.get("exitCode").and_then(|c| c.parse().ok()),
                    },
                    "oom" => EventKind::OutOfMemory,
                    "destroy" => EventKind::Removed,
                    "health_status: healthy" => EventKind::Health(Health::Healthy),
                    "health_status: unhealthy" => EventKind::Health(Health::Unhealthy),
                    _ => return Ok(None),
                };
                // The engine mixes its own attributes in with the labels.
                for k in ["exitCode", "image", "name", "execDuration"] {
                    labels.remove(k);
                }
                let at = m
                    .time_nano
                    .map(|n| n as f64 / 1e9)
                    .or(m.time.map(|s| s as f64))
                    .unwrap_or_default();
                Ok(Some(Event {
                    id: actor.id.unwrap_or_default(),
                    labels,
                    kind,
                    at,
                }))
            })
            .boxed()
    }

    fn logs(&self, id: &str, follow: bool) -> BoxStream<'static, Result<LogChunk, RuntimeError>> {
        let options = LogsOptionsBuilder::new()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .build();
        self.docker
            .logs(id, Some(options))
            .map_err(refused)
            .try_filter_map(|out| async move {
                Ok(match out {
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => Some(LogChunk {
                        stream: LogStream::Stdout,
                        bytes: message.to_vec(),
                    }),
                    bollard::container::LogOutput::StdErr { message } => Some(LogChunk {
                        stream: LogStream::Stderr,
                        bytes: message.to_vec(),
                    }),
                    bollard::container::LogOutput::StdIn { .. } => None,
                })
            })
            .boxed()
    }

    async fn task_cgroup(
        &self,
        task_id: &str,
        limits: TaskLimits,
    ) -> Result<Option<String>, RuntimeError> {
        let Some(layout) = &self.cgroups else {
            return Ok(None);
        };
        layout
            .create(task_id, limits)
            .map(Some)
            .map_err(|e| RuntimeError::Rejected(format!("cannot make the task cgroup: {e}")))
    }

    async fn remove_task_cgroup(&self, task_id: &str) -> Result<(), RuntimeError> {
        let Some(layout) = &self.cgroups else {
            return Ok(());
        };
        layout
            .remove(task_id)
            .map_err(|e| RuntimeError::Rejected(format!("cannot remove the task cgroup: {e}")))
    }

    async fn ensure_network(&self, spec: &crate::NetworkSpec) -> Result<(), RuntimeError> {
        match self.docker.inspect_network(&spec.name, None).await {
            Ok(n) => {
                let subnets: Vec<String> = n
                    .ipam
                    .and_then(|i| i.config)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| c.subnet)
                    .collect();
                if !subnets.contains(&spec.cidr) {
                    return Err(RuntimeError::Rejected(format!(
                        "network {} exists with subnets {subnets:?}, not {}",
                        spec.name, spec.cidr
                    )));
                }
                // Made before this host had its tunnel (or another one):
                // made again while nothing is attached, so that its tasks'
                // packets fit the tunnel.
                let has = n
                    .options
                    .as_ref()
                    .and_then(|o| o.get(MTU_OPTION))
                    .cloned()
                    .unwrap_or_default();
                let idle = n.containers.as_ref().is_none_or(|c| c.is_empty());
                if has == self.wanted_mtu().unwrap_or_default() || !idle {
                    return Ok(());
                }
                self.remove_network(&spec.name).await?;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(unavailable(e)),
        }
        let request = NetworkCreateRequest {
            name: spec.name.clone(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                driver: Some("default".into()),
                config: Some(vec![IpamConfig {
                    subnet: Some(spec.cidr.clone()),
                    gateway: Some(spec.gateway.clone()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            labels: Some(spec.labels.clone().into_iter().collect()),
            options: self
                .wanted_mtu()
                .map(|mtu| HashMap::from([(MTU_OPTION.to_string(), mtu)])),
            ..Default::default()
        };
        let mut cleared = false;
        loop {
            match self.docker.create_network(request.clone()).await {
                Ok(made) => {
                    // Tasks on other hosts reach this subnet through the
                    // VPC tunnel, if this host has one, from now on.
                    let bridge = format!("br-{}", &made.id[..made.id.len().min(12)]);
                    return crate::overlay::prepare_bridge(&bridge, &spec.cidr).await;
                }
                // Another driver (or a concurrent call) made it first.
                Err(e) if e.to_string().contains("already exists") => return Ok(()),
                Err(e) if e.to_string().contains("overlaps") => {
                    // The engine takes the range before it records the
                    // name: another agent of this engine making this very
                    // bridge looks like an overlap until it is done.
                    for _ in 0..20 {
                        if self.docker.inspect_network(&spec.name, None).await.is_ok() {
                            return Ok(());
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    // Otherwise a bridge of the same range is in the way:
                    // made again once what is left over is gone, refused
                    // if it is in use.
                    if cleared {
                        return Err(refused(e));
                    }
                    self.clear_overlaps(spec).await?;
                    cleared = true;
                }
                Err(e) => return Err(refused(e)),
            }
        }
    }

    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(refused(e)),
        }
    }

    async fn apply_filter(
        &self,
        id: &str,
        filter: &crate::firewall::Filter,
    ) -> Result<(), RuntimeError> {
        let c = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(unavailable)?;
        if let Some(ip) = sandbox_address(&c) {
            return host_filter(id, ip, filter, &self.host_jumps).await;
        }
        // The address is this namespace's now: a sandbox's host chain left
        // at it (a sandbox removed behind the agent's back) must not filter
        // it. Looked at once per container.
        let first = self
            .cleared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_string());
        if first {
            for ip in addresses(&c) {
                clear_host_chain(ip).await?;
            }
        }
        let pid = c
            .state
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                RuntimeError::Rejected(format!("container {id} is not running: no namespace"))
            })?;
        // The engine has no API for a container's packet filter; the
        // host's iptables, run inside the namespace, is what Docker itself
        // uses for its own rules.
        feed(
            tokio::process::Command::new("nsenter").args([
                "--target",
                &pid.to_string(),
                "--net",
                "--",
                "iptables-restore",
            ]),
            &crate::firewall::filter_table(filter),
            &format!("in the namespace of {id}"),
        )
        .await
    }

    async fn vpc_tunnel(
        &self,
        local: std::net::Ipv4Addr,
    ) -> Result<crate::overlay::Tunnel, RuntimeError> {
        let tunnel = crate::overlay::ensure_device(local).await?;
        self.subnet_mtu
            .store(tunnel.mtu, std::sync::atomic::Ordering::Relaxed);
        Ok(tunnel)
    }

    async fn vpc_routes(&self, routes: &[crate::overlay::Route]) -> Result<(), RuntimeError> {
        let filters = HashMap::from([("label", vec![SUBNET_LABEL])]);
        let nets = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(unavailable)?;
        let bridges: Vec<(String, String)> = nets
            .iter()
            .filter_map(|n| {
                let bridge = n
                    .options
                    .as_ref()
                    .and_then(|o| o.get("com.docker.network.bridge.name").cloned())
                    .or_else(|| {
                        n.id.as_ref()
                            .map(|id| format!("br-{}", &id[..id.len().min(12)]))
                    })?;
                let cidr = n.ipam.as_ref()?.config.as_ref()?.first()?.subnet.clone()?;
                Some((bridge, cidr))
            })
            .collect();
        crate::overlay::apply(routes, &bridges).await
    }

    async fn route_endpoint(
        &self,
        network: &str,
        source: std::net::Ipv4Addr,
        port: u16,
    ) -> Result<(), RuntimeError> {
        use crate::endpoint;
        let net = self
            .docker
            .inspect_network(network, None)
            .await
            .map_err(unavailable)?;
        // The default bridge names its interface; others are br-<id>.
        let bridge = net
            .options
            .as_ref()
            .and_then(|o| o.get("com.docker.network.bridge.name").cloned())
            .or_else(|| {
                net.id
                    .as_ref()
                    .map(|id| format!("br-{}", &id[..id.len().min(12)]))
            })
            .ok_or_else(|| RuntimeError::Rejected(format!("network {network} has no bridge")))?;
        let mut setup = self.endpoint_lock.lock().await;
        if !setup.bridges.contains(&bridge) {
            // DNAT to loopback is dropped as martian unless the interface
            // the packet came in on may route there.
            let sysctl = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
            if std::fs::read_to_string(&sysctl)
                .map(|v| v.trim() != "1")
                .unwrap_or(true)
            {
                std::fs::write(&sysctl, "1").map_err(|e| {
                    RuntimeError::Unavailable(format!("cannot let {bridge} route to loopback: {e}"))
                })?;
            }
            setup.bridges.insert(bridge);
        }
        if !setup.chain {
            if !iptables(&["-t", "nat", "-S", endpoint::CHAIN]).await?.0 {
                iptables_ok(&["-t", "nat", "-N", endpoint::CHAIN]).await?;
            }
            ensure_rule("nat", "PREROUTING", &endpoint::jump()).await?;
            for (chain, rule) in endpoint::guards() {
                ensure_rule("filter", chain, &rule).await?;
            }
            setup.chain = true;
        }
        let listing = iptables_ok(&["-t", "nat", "-S", endpoint::CHAIN]).await?;
        let mut gone = vec![];
        for (other, rules) in endpoint::by_port(&listing) {
            let refused = other != port
                && matches!(
                    tokio::time::timeout(
                        Duration::from_millis(200),
                        tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, other)),
                    )
                    .await,
                    Ok(Err(_))
                );
            if refused {
                gone.extend(rules);
            }
        }
        for old in gone.iter().chain(&endpoint::stale(&listing, source, port)) {
            let mut args = vec!["-t", "nat", "-D", endpoint::CHAIN];
            args.extend(old.iter().map(String::as_str));
            // Gone already (its own agent took it back) is as good.
            let _ = iptables(&args).await?;
        }
        if !endpoint::present(&listing, source, port) {
            let rule = endpoint::rule(source, port);
            let mut args = vec!["-t", "nat", "-A", endpoint::CHAIN];
            args.extend(rule.iter().map(String::as_str));
            iptables_ok(&args).await?;
        }
        Ok(())
    }

    async fn route_host_endpoint(&self, port: u16) -> Result<(), RuntimeError> {
        use crate::endpoint;
        // Another agent on the host may have taken the rule since: looked
        // at every time.
        let _one_at_a_time = self.endpoint_lock.lock().await;
        let listing = iptables_ok(&["-t", "nat", "-S", "OUTPUT"]).await?;
        for old in endpoint::other_host_rules(&listing, port) {
            let mut args = vec!["-t", "nat", "-D", "OUTPUT"];
            args.extend(old.iter().map(String::as_str));
            let _ = iptables(&args).await?;
        }
        ensure_rule("nat", "OUTPUT", &endpoint::host_rule(port)).await
    }

    async fn unroute_endpoint(
        &self,
        source: std::net::Ipv4Addr,
        port: u16,
    ) -> Result<(), RuntimeError> {
        let rule = crate::endpoint::rule(source, port);
        let mut args = vec!["-t", "nat", "-D", crate::endpoint::CHAIN];
        args.extend(rule.iter().map(String::as_str));
        let _one_at_a_time = self.endpoint_lock.lock().await;
        let _ = iptables(&args).await?;
        Ok(())
    }

    async fn ensure_pause_image(&self) -> Result<(), RuntimeError> {
        match self.docker.inspect_image(crate::pause::IMAGE).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(unavailable(e)),
        }
        let (repo, tag) = crate::pause::IMAGE
            .split_once(':')
            .unwrap_or((crate::pause::IMAGE, "latest"));
        let options = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(vec![format!("CMD [\"{}\"]", crate::pause::PROGRAM)])
            .build();
        let tar = crate::pause::tar_of(crate::pause::PROGRAM, &crate::pause::program());
        let body = bollard::body_full(tar.into());
        self.docker
            .create_image(Some(options), Some(body), None)
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
            .map_err(refused)
    }

    async fn stats(&self, id: &str) -> Result<Stats, RuntimeError> {
        let s = self.sample(id, true).await?;
        let memory = s.memory_stats.unwrap_or_default();
        // cgroup v1 names it total_inactive_file, v2 inactive_file.
        let inactive = memory
            .stats
            .as_ref()
            .and_then(|m| {
                m.get("total_inactive_file")
                    .or_else(|| m.get("inactive_file"))
            })
            .copied()
            .unwrap_or(0);
        let network = s.networks.filter(|n| !n.is_empty()).map(|n| {
            n.values().fold((0, 0), |(rx, tx), i| {
                (rx + i.rx_bytes.unwrap_or(0), tx + i.tx_bytes.unwrap_or(0))
            })
        });
        Ok(Stats {
            cpu_total_ns: s
                .cpu_stats
                .and_then(|c| c.cpu_usage)
                .and_then(|u| u.total_usage)
                .unwrap_or(0),
            memory_bytes: memory.usage.unwrap_or(0).saturating_sub(inactive),
            memory_limit_bytes: memory.limit.unwrap_or(0),
            network,
        })
    }

    async fn stats_document(&self, id: &str) -> Result<serde_json::Value, RuntimeError> {
        // Not one-shot: the engine samples twice, so `precpu_stats` is the
        // earlier sample and CPU use can be computed from the two.
        let s = self.sample(id, false).await?;
        serde_json::to_value(s).map_err(|e| RuntimeError::Unavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_jump_names_its_sandbox_and_address() {
        assert_eq!(
            sandbox_jump(
                "-A FORWARD -d 10.128.0.8/32 -m comment --comment berth-sandbox-50ea225aec08 -j BERTH-SG-0A800008"
            ),
            Some(("50ea225aec08".to_string(), "10.128.0.8".parse().expect("ip")))
        );
        assert_eq!(
            sandbox_jump(
                "-A FORWARD -s 10.160.0.7/32 -m comment --comment berth-sandbox-e17094ba5a2f -j BERTH-EG-0AA00007"
            ),
            Some(("e17094ba5a2f".to_string(), "10.160.0.7".parse().expect("ip")))
        );
        // Docker's own rules, and anything not marked as a sandbox's, are
        // left alone.
        assert_eq!(sandbox_jump("-A FORWARD -o docker0 -j DOCKER"), None);
        assert_eq!(
            sandbox_jump("-A FORWARD -d 10.1.2.3/32 -m comment --comment berth-sandbox- -j X"),
            None
        );
        assert_eq!(
            sandbox_jump("-A FORWARD -m comment --comment berth-sandbox-abc -j X"),
            None
        );
    }

    #[test]
    fn ranges_overlap_when_they_share_an_address() {
        assert!(overlap("10.128.0.0/20", "10.128.0.0/20"));
        assert!(overlap("10.128.0.0/16", "10.128.16.0/20"));
        assert!(overlap("10.128.16.0/20", "10.128.0.0/16"));
        assert!(overlap("10.128.15.255/32", "10.128.0.0/20"));
        assert!(!overlap("10.128.0.0/20", "10.128.16.0/20"));
        assert!(!overlap("172.17.0.0/16", "10.128.0.0/20"));
        assert!(overlap("0.0.0.0/0", "10.1.2.3/32"));
        assert!(!overlap("not a range", "10.1.2.3/32"));
    }

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(split_reference("busybox"), ("busybox", Some("latest")));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", Some("1.36")));
        assert_eq!(
            split_reference("localhost:5000/team/app"),
            ("localhost:5000/team/app", Some("latest"))
        );
        assert_eq!(
            split_reference("localhost:5000/team/app:v2"),
            ("localhost:5000/team/app", Some("v2"))
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app@sha256:abc", None));
    }

    #[test]
    fn engine_times_become_epoch_seconds_and_zero_means_never() {
        assert_eq!(timestamp(Some("1970-01-01T00:00:10Z")), None);
        let t = timestamp(Some("2026-11-24T01:28:53.5Z")).expect("time");
        assert!((t - 1_795_483_733.5).abs() < 1e-3, "{t}");
        assert_eq!(timestamp(Some("0001-01-01T00:00:00Z")), None);
        assert_eq!(timestamp(Some("garbage")), None);
    }

    #[test]
    fn a_spec_becomes_the_engine_request() {
        let spec = ContainerSpec {
            name: "t".into(),
            image: "img".into(),
            env: vec![("A".into(), "1".into())],
            ports: vec![
                crate::PortSpec {
                    container_port: 80,
                    host_port: None,
                    protocol: Protocol::Tcp,
                },
                crate::PortSpec {
                    container_port: 53,
                    host_port: Some(5353),
                    protocol: Protocol::Udp,
                },
            ],
            network_mode: NetworkMode::Host,
            stop_timeout: Some(Duration::from_secs(7)),
            ..Default::default()
        };
        let body = create_body(&spec);
        assert_eq!(body.env, Some(vec!["A=1".to_string()]));
        assert_eq!(body.stop_timeout, Some(7));
        let host = body.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        let bindings = host.port_bindings.expect("ports");
        let dynamic = bindings["80/tcp"].as_ref().expect("80");
        assert_eq!(dynamic[0].host_port.as_deref(), Some(""));
        assert_eq!(
            bindings["53/udp"].as_ref().expect("53")[0]
                .host_port
                .as_deref(),
            Some("5353")
        );
    }
}

/// What of the task endpoint's host setup this process has done.
#[derive(Default)]
struct EndpointSetup {
    bridges: HashSet<String>,
    chain: bool,
}

/// Runs the host's iptables (waiting for its lock, which other agents and
/// the engine take too): whether it succeeded, and its output.
async fn iptables(args: &[&str]) -> Result<(bool, String), RuntimeError> {
    let out = tokio::process::Command::new("iptables")
        .arg("-w")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| RuntimeError::Unavailable(format!("cannot run iptables: {e}")))?;
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    };
    Ok((out.status.success(), text))
}

/// Runs `command` with `input` on its standard input (iptables-restore's
/// tables, `ip -batch`'s commands); an error names the program and `what`.
pub(crate) async fn feed(
    command: &mut tokio::process::Command,
    input: &str,
    what: &str,
) -> Result<(), RuntimeError> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| RuntimeError::Unavailable(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|e| RuntimeError::Unavailable(format!("{program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| RuntimeError::Unavailable(format!("{program}: {e}")))?;
    if !out.status.success() {
        return Err(RuntimeError::Rejected(format!(
            "{program} {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Takes away whatever host chains a sandbox left at `ip`, if any.
async fn clear_host_chain(ip: std::net::Ipv4Addr) -> Result<(), RuntimeError> {
    let chain = crate::firewall::host_chain(ip);
    if !iptables(&["-S", &chain]).await?.0 {
        return Ok(());
    }
    for (hook, target, _) in host_jumps_at(ip) {
        for rule in jumps_to(hook, &target).await? {
            delete_rule(&rule).await?;
        }
    }
    for target in [chain, crate::firewall::host_egress_chain(ip)] {
        let _ = iptables(&["-F", &target]).await?;
        let _ = iptables(&["-X", &target]).await?;
    }
    Ok(())
}

/// [`iptables`], where failing is an error.
async fn iptables_ok(args: &[&str]) -> Result<String, RuntimeError> {
    match iptables(args).await? {
        (true, out) => Ok(out),
        (false, err) => Err(RuntimeError::Rejected(format!(
            "iptables {}: {err}",
            args.join(" ")
        ))),
    }
}

/// Puts `rule` first in `chain` of `table` unless it is there.
pub(crate) async fn ensure_rule(
    table: &str,
    chain: &str,
    rule: &[String],
) -> Result<(), RuntimeError> {
    let mut check = vec!["-t", table, "-C", chain];
    check.extend(rule.iter().map(String::as_str));
    if iptables(&check).await?.0 {
        return Ok(());
    }
    let mut insert = vec!["-t", table, "-I", chain, "1"];
    insert.extend(rule.iter().map(String::as_str));
    iptables_ok(&insert).await.map(|_| ())
}
