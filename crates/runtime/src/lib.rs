//! Container runtimes behind one trait: [`ContainerRuntime`]. The Docker
//! Engine driver ([`docker::DockerRuntime`], on bollard) is the first; a
//! [`fake::FakeRuntime`] records calls for unit tests; a microVM driver
//! comes with the Fargate isolation work.
//!
//! The trait speaks in containers, not tasks: the agent turns a task into
//! container specs, and labels every container it creates, so it can find
//! its own containers again after a restart ([`ContainerRuntime::list`]).
//!
//! This crate is the only home of bollard.

pub mod cgroup;
pub mod docker;
pub mod endpoint;
pub mod fake;
pub mod firewall;
pub mod gvisor;
pub mod overlay;
pub mod pause;
mod pull;

pub use cgroup::TaskLimits;
pub use pull::PullBehavior;

use async_trait::async_trait;
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The image could not be pulled and no usable copy is cached; the
    /// message is what ECS puts in a task's stoppedReason.
    #[error("CannotPullContainerError: {0}")]
    CannotPull(String),
    #[error("No such container: {0}")]
    NotFound(String),
    /// The runtime refused the request (a bad spec, a name in use, ...).
    #[error("{0}")]
    Rejected(String),
    /// The runtime could not be reached or failed.
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
}

/// Everything a container is created with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entry_point: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Relative CPU weight (Docker CPU shares; ECS cpu units).
    pub cpu_shares: Option<i64>,
    /// Hard memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// Soft memory limit in bytes.
    pub memory_reservation_bytes: Option<i64>,
    /// Hard CPU limit in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    pub network_mode: NetworkMode,
    pub ports: Vec<PortSpec>,
    /// `host:ip` entries for /etc/hosts.
    pub extra_hosts: Vec<(String, String)>,
    pub dns_servers: Vec<String>,
    pub dns_search: Vec<String>,
    /// `container[:alias]`.
    pub links: Vec<String>,
    pub ulimits: Vec<Ulimit>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Runs an init process as PID 1 that reaps zombies and forwards signals.
    pub init: bool,
    /// Mount path -> mount options.
    pub tmpfs: Vec<(String, String)>,
    pub shm_size_bytes: Option<i64>,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    pub mounts: Vec<MountSpec>,
    /// `container[:ro]`.
    pub volumes_from: Vec<String>,
    pub health_check: Option<HealthCheck>,
    /// How long a stop waits after SIGTERM before SIGKILL.
    pub stop_timeout: Option<Duration>,
    pub security_opts: Vec<String>,
    /// The task cgroup to create the container under
    /// ([`ContainerRuntime::task_cgroup`]).
    pub cgroup_parent: Option<String>,
    /// The engine's logging driver for the container and its options;
    /// the engine's default when `None`.
    pub log_driver: Option<(String, BTreeMap<String, String>)>,
    /// Kernel parameters set in the container's namespaces.
    pub sysctls: BTreeMap<String, String>,
    /// The process namespace: `host`, or `container:<id>` to share one.
    pub pid_mode: Option<String>,
    /// The IPC namespace: `host`, `none`, `shareable` (others may join it)
    /// or `container:<id>`.
    pub ipc_mode: Option<String>,
    /// Keep standard input open (`docker run -i`).
    pub open_stdin: bool,
    /// Allocate a terminal (`docker run -t`).
    pub tty: bool,
    /// No network at all, not even loopback's outside reach.
    pub network_disabled: bool,
    /// Runs the container on a kernel of its task's own rather than the
    /// host's ([`gvisor`]).
    pub sandbox: Option<Sandbox>,
}

/// Where a container runs when its task has a kernel of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// Boots the task's sandbox: its pause container.
    Root,
    /// Joins the sandbox that this container (the task's pause) booted.
    Join(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkMode {
    #[default]
    Bridge,
    Host,
    None,
    /// Another container's network namespace.
    Container(String),
    /// A network of the runtime ([`ContainerRuntime::ensure_network`]),
    /// at a fixed address: how a task's pause container gets its own
    /// namespace and IP (awsvpc).
    Attached {
        network: String,
        ip: String,
    },
}

/// A bridge network for one subnet: where awsvpc tasks get their own
/// network namespace and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    /// `a.b.c.d/n`.
    pub cidr: String,
    /// The address the host takes on the bridge.
    pub gateway: String,
    pub labels: BTreeMap<String, String>,
}

/// One network a container is attached to, as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub network: String,
    pub ip: String,
    pub mac: String,
    /// The network's prefix length and the host's address on it.
    pub prefix_len: u8,
    pub gateway: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub container_port: u16,
    /// `None` takes a port from the host's ephemeral range.
    pub host_port: Option<u16>,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: MountSource,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A directory of the host, made (as the engine's `-v` makes it) when
    /// it does not exist.
    HostPath(String),
    /// A named volume of the runtime, created on first use.
    Volume(VolumeSpec),
}

/// A named volume and how to make it when it does not exist yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    /// The volume driver; the engine's default (`local`) when `None`.
    pub driver: Option<String>,
    pub driver_options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Whether the volume must exist already rather than be made (a shared
    /// volume without autoprovision).
    pub must_exist: bool,
}

impl VolumeSpec {
    /// A volume made with the engine's defaults.
    pub fn named(name: impl Into<String>) -> VolumeSpec {
        VolumeSpec {
            name: name.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// What the runtime knows about one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    /// The image's id (`sha256:...`).
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// Seconds since the epoch.
    pub created_at: Option<f64>,
    /// Seconds since the epoch; `None` before the container first started.
    pub started_at: Option<f64>,
    /// Seconds since the epoch; `None` while it has not exited.
    pub finished_at: Option<f64>,
    pub exit_code: Option<i64>,
    pub health: Option<Health>,
    pub oom_killed: bool,
    /// Why the runtime could not start it, if it could not.
    pub error: Option<String>,
    pub ports: Vec<Binding>,
    /// Networks it is attached to by name (not host or none).
    pub networks: Vec<Attachment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    /// Paused, restarting, being removed: transient states the agent waits out.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub container_port: u16,
    pub host_port: u16,
    pub host_ip: String,
    pub protocol: Protocol,
}

/// A container found by label.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
}

/// A change the runtime reports about one container.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub kind: EventKind,
    /// Seconds since the epoch.
    pub at: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Started,
    Died { exit_code: Option<i64> },
    Health(Health),
    OutOfMemory,
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub stream: LogStream,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One sample of a running container's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub cpu_total_ns: u64,
    /// In use, not counting the page cache the kernel can drop (as
    /// `docker stats` and ECS count it).
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Bytes received and sent on the container's own interfaces; None
    /// when it has none of its own (it shares another's namespace).
    pub network: Option<(u64, u64)>,
}

/// Whether an image came from the registry or the local cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pulled {
    Fetched,
    Cached,
}

/// The engine's own version and the API version spoken with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub engine: String,
    /// `major.minor`, e.g. `1.41`.
    pub api: String,
    /// The logging drivers the engine has (`json-file`, `syslog`, ...).
    pub log_drivers: Vec<String>,
}

/// Credentials for a private registry.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

/// The password stays out of logs and debug output.
impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryAuth({})", self.username)
    }
}

#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    async fn version(&self) -> Result<Version, RuntimeError>;
    /// Makes `image` available under `behavior`.
    async fn pull(&self, image: &str, behavior: PullBehavior) -> Result<Pulled, RuntimeError> {
        self.pull_with(image, behavior, None).await
    }
    /// [`ContainerRuntime::pull`], signing in to the image's registry with
    /// `auth` (a private registry's `repositoryCredentials`).
    async fn pull_with(
        &self,
        image: &str,
        behavior: PullBehavior,
        auth: Option<&RegistryAuth>,
    ) -> Result<Pulled, RuntimeError>;
    /// Creates a container and returns its id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// SIGTERM, then SIGKILL after `timeout`. Stopping a stopped container
    /// is not an error.
    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError>;
    /// Removes a container and its anonymous volumes; a missing one is not
    /// an error.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// `None` if there is no such container.
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError>;
    /// Containers, running or not, carrying `label=value`.
    async fn list(&self, label: &str, value: &str) -> Result<Vec<ContainerSummary>, RuntimeError>;
    /// Changes to containers carrying `label=value`, from now on.
    fn events(&self, label: &str, value: &str) -> BoxStream<'static, Result<Event, RuntimeError>>;
    /// A container's output so far, then (with `follow`) as it comes.
    fn logs(&self, id: &str, follow: bool) -> BoxStream<'static, Result<LogChunk, RuntimeError>>;
    async fn stats(&self, id: &str) -> Result<Stats, RuntimeError>;
    /// A running container's usage as the engine's API documents it
    /// (Docker's stats object, with the previous sample in `precpu_stats`),
    /// for what expects exactly that (the task metadata endpoint).
    async fn stats_document(&self, id: &str) -> Result<serde_json::Value, RuntimeError>;
    /// Creates (or updates) the cgroup a task's containers share, with the
    /// task's limits, and returns the cgroup parent to create them under;
    /// `Ok(None)` when this runtime cannot give tasks a cgroup, so each
    /// container has to carry the limits itself.
    async fn task_cgroup(
        &self,
        task_id: &str,
        limits: TaskLimits,
    ) -> Result<Option<String>, RuntimeError>;
    /// Removes a task's cgroup once its containers are gone.
    async fn remove_task_cgroup(&self, task_id: &str) -> Result<(), RuntimeError>;
    /// Creates the network if there is none of that name; one that exists
    /// with another subnet is an error.
    async fn ensure_network(&self, spec: &NetworkSpec) -> Result<(), RuntimeError>;
    /// Removes a network; a missing one is not an error.
    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError>;
    /// Makes the pause image ([`pause::IMAGE`]) available, without a
    /// registry.
    async fn ensure_pause_image(&self) -> Result<(), RuntimeError>;
    /// Makes containers with a [`Sandbox`] runnable: registers the
    /// own-kernel runtime (gVisor's `runsc` at `runsc`, run through
    /// `shim`, this program) with the engine unless it has it. An error
    /// says why this host cannot give tasks their own kernel.
    async fn ensure_sandboxes(
        &self,
        runsc: &std::path::Path,
        shim: &std::path::Path,
    ) -> Result<(), RuntimeError> {
        let _ = (runsc, shim);
        Err(RuntimeError::Rejected(
            "this container runtime cannot give tasks a kernel of their own".into(),
        ))
    }
    /// Makes this host's VPC tunnel on its address `local`
    /// (docs/adr/0007); subnets made from then on take its MTU.
    async fn vpc_tunnel(&self, local: std::net::Ipv4Addr) -> Result<overlay::Tunnel, RuntimeError> {
        let _ = local;
        Err(RuntimeError::Rejected(
            "this container runtime has no VPC tunnel".into(),
        ))
    }
    /// Routes this host's subnets to other hosts' awsvpc tasks: exactly
    /// `routes`, through the tunnel [`ContainerRuntime::vpc_tunnel`] made.
    async fn vpc_routes(&self, routes: &[overlay::Route]) -> Result<(), RuntimeError> {
        let _ = routes;
        Ok(())
    }
    /// Lets into and out of the network namespace of running container
    /// `id` what `filter` allows and nothing else (replies to its own
    /// connections and loopback aside); applying it again replaces the
    /// last one.
    async fn apply_filter(&self, id: &str, filter: &firewall::Filter) -> Result<(), RuntimeError>;
    /// Sends what `source`, a task's address on `network`, opens to the
    /// task endpoint ([`endpoint::ADDRESS`]) to 127.0.0.1:`port`, where its
    /// agent listens, in place of any earlier rule for that address.
    async fn route_endpoint(
        &self,
        network: &str,
        source: std::net::Ipv4Addr,
        port: u16,
    ) -> Result<(), RuntimeError>;
    /// Sends the host's own connections to the task endpoint (those of
    /// host-network tasks) to 127.0.0.1:`port`, in place of another
    /// agent's rule.
    async fn route_host_endpoint(&self, port: u16) -> Result<(), RuntimeError>;
    /// Takes back [`ContainerRuntime::route_endpoint`]'s rule for `source`
    /// to `port`, if it is still there (another agent's rule for a new
    /// task at the address stays).
    async fn unroute_endpoint(
        &self,
        source: std::net::Ipv4Addr,
        port: u16,
    ) -> Result<(), RuntimeError>;
}
