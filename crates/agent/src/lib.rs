//! `berth agent`: makes a host a container instance. It registers through
//! the ECS API, as the stock ECS agent does, remembers its instance in a
//! state file so a restart is the same instance, and holds one WebSocket to
//! the server's gateway (`berth_wire::agent`), reconnecting with backoff.
//! The gateway pushes the instance's desired task set; the runner drives
//! each task's containers towards it (`task`) and the latest report of
//! every task goes back on the connection (`report`). Task logs are copied
//! to files and served over HTTP (`logs`).
//!
//! Containers are touched only through `berth_runtime::ContainerRuntime`,
//! and only those labelled with this agent's instance id, so several
//! agents can share one engine.

pub mod awslogs;
mod ecs_client;
pub mod endpoint;
pub mod firelens;
mod host;
pub mod logs;
pub mod metadata;
mod report;
mod runner;
pub mod spec;
mod starts;
mod task;
mod usage;

pub use ecs_client::{EcsClient, EcsError};

use berth_runtime::ContainerRuntime;
use berth_wire::agent::{AgentMessage, DesiredNetwork, DesiredTask, ServerMessage, CONNECT_PATH};
use berth_wire::ecs as w;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Capabilities this agent's task runner implements (health checks,
/// dependsOn and start/stop timeouts, task-level cpu and memory).
pub const CAPABILITIES: [&str; 18] = [
    "ecs.capability.container-health-check",
    "ecs.capability.container-ordering",
    "ecs.capability.task-cpu-mem-limit",
    // awsvpc: a task of its own network namespace at a subnet's address.
    "ecs.capability.task-eni",
    // `secrets` as environment variables, fetched through the server with
    // the task's execution role when the task starts.
    "ecs.capability.secrets.ssm.environment-variables",
    "ecs.capability.secrets.asm.environment-variables",
    // ...and as log driver options, read before the container exists.
    "ecs.capability.secrets.ssm.bootstrap.log-driver",
    "ecs.capability.secrets.asm.bootstrap.log-driver",
    // repositoryCredentials: a Secrets Manager secret signs the pull.
    "com.amazonaws.ecs.capability.private-registry-authentication.secretsmanager",
    // pidMode and ipcMode: host, or shared by the task's containers.
    "ecs.capability.pid-ipc-namespace-sharing",
    // taskRoleArn: the role's credentials at 169.254.170.2, for bridge
    // and awsvpc tasks by their addresses, and for host-network ones by
    // the process behind each connection.
    "com.amazonaws.ecs.capability.task-iam-role",
    "com.amazonaws.ecs.capability.task-iam-role-network-host",
    // awslogs: each container's output shipped to the Logs API, signed
    // with the execution role when the task has one.
    "com.amazonaws.ecs.capability.logging-driver.awslogs",
    "ecs.capability.execution-role-awslogs",
    // FireLens: the router's configuration written and mounted, the other
    // containers' output sent to it (a file of the image may be included;
    // S3 cannot be read).
    "com.amazonaws.ecs.capability.logging-driver.awsfirelens",
    "ecs.capability.firelens.fluentbit",
    "ecs.capability.firelens.fluentd",
    "ecs.capability.firelens.options.config.file",
];

/// A task runner's question for the server, carried on the gateway
/// connection; the reply is dropped if the connection ends first.
pub enum ServerAsk {
    /// A task's secrets, fetched with its execution role.
    Secrets {
        task_arn: String,
        reply: tokio::sync::oneshot::Sender<Result<Vec<berth_wire::agent::SecretValue>, String>>,
    },
    /// New credentials of a task's role (`execution`: its execution
    /// role's).
    Credentials {
        task_arn: String,
        execution: bool,
        reply: tokio::sync::oneshot::Sender<Result<berth_wire::agent::RoleCredentials, String>>,
    },
}

impl ServerAsk {
    fn message(&self, request: u64) -> AgentMessage {
        match self {
            ServerAsk::Secrets { task_arn, .. } => AgentMessage::Secrets {
                request,
                task_arn: task_arn.clone(),
            },
            ServerAsk::Credentials {
                task_arn,
                execution,
                ..
            } => AgentMessage::Credentials {
                request,
                task_arn: task_arn.clone(),
                execution: *execution,
            },
        }
    }
}

/// Ports the stock agent reserves: ssh, the Docker API, its own.
pub const DEFAULT_RESERVED_PORTS: [u16; 5] = [22, 2375, 2376, 51678, 51679];

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The servers' APIs, e.g. `http://127.0.0.1:8750`: any of them will
    /// do, since they share one store. The agent holds a connection to one
    /// and moves to the next when it goes.
    pub servers: Vec<String>,
    pub cluster: String,
    pub region: String,
    /// The EC2-style id; one is made up and kept in the state file if none is given.
    pub instance_id: Option<String>,
    pub instance_type: String,
    pub availability_zone: String,
    /// Custom attributes (`name`, optional value).
    pub attributes: Vec<(String, Option<String>)>,
    /// MiB kept from tasks.
    pub reserved_memory_mib: i64,
    /// Host ports kept from tasks, besides [`DEFAULT_RESERVED_PORTS`].
    pub reserved_ports: Vec<u16>,
    /// Where the state file, task states and logs live.
    pub data_dir: PathBuf,
    /// When to pull images (ECS_IMAGE_PULL_BEHAVIOR).
    pub pull_behavior: berth_runtime::PullBehavior,
    /// What the agent signs its calls to the server with until it has
    /// joined (or always, when it joins with no token).
    pub credentials: Option<berth_wire::sigv4::Credentials>,
    /// A join token (`berth token create`): traded once for credentials of
    /// the host's own, which are kept in the data dir for its restarts.
    pub join_token: Option<String>,
    /// What `https://` servers are trusted by (`--ca`); None: the AWS CA
    /// bundle or the system's roots.
    pub tls: Option<Arc<berth_tls::ClientConfig>>,
    /// The port on 127.0.0.1 the task endpoint (169.254.170.2) is routed
    /// to; 0: any free one.
    pub endpoint_port: u16,
    /// How often running tasks' CPU, memory and network use is sampled
    /// and sent (CloudWatch's metrics are made of it).
    pub stats_interval: Duration,
    /// What keeps Fargate tasks apart on this host (Fargate hosts only).
    pub isolation: Isolation,
    /// The address other hosts reach this one at for VPC traffic
    /// (docs/adr/0007); None: the one its connection to the server
    /// leaves from.
    pub vpc_address: Option<std::net::Ipv4Addr>,
}

/// How a Fargate host keeps its tasks apart (docs/adr/0004).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// Hardened containers on the host's kernel.
    Container,
    /// Each task on a gVisor kernel of its own, run by this `runsc`.
    Gvisor { runsc: PathBuf },
}

impl Isolation {
    pub const GVISOR: &'static str = "gvisor";
    pub const CONTAINER: &'static str = "container";

    /// What tasks report (the `berth.isolation` task attribute).
    pub fn name(&self) -> &'static str {
        match self {
            Isolation::Container => Self::CONTAINER,
            Isolation::Gvisor { .. } => Self::GVISOR,
        }
    }
}

/// A client of `server` trusting what the agent is told to trust.
fn client(config: &AgentConfig, server: &str) -> EcsClient {
    EcsClient::new(server, &config.region).with_tls(config.tls.clone())
}

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("registration failed: {0}")]
    Register(#[from] EcsError),
    #[error("state file {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("container runtime: {0}")]
    Runtime(#[from] berth_runtime::RuntimeError),
    #[error("{0}")]
    Host(String),
}

/// What the agent remembers across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    cluster: String,
    instance_id: String,
    container_instance_arn: Option<String>,
}

fn state_path(config: &AgentConfig) -> PathBuf {
    config.data_dir.join("agent-state.json")
}

fn load_state(config: &AgentConfig) -> Result<Option<State>, AgentError> {
    let path = state_path(config);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AgentError::State {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::State {
            path,
            reason: e.to_string(),
        }),
    }
}

/// Written to a temporary file and renamed, so a crash leaves the old
/// state or the new one, never half of either.
fn save_state(config: &AgentConfig, state: &State) -> Result<(), AgentError> {
    let path = state_path(config);
    let fail = |e: std::io::Error| AgentError::State {
        path: path.clone(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(&config.data_dir).map_err(fail)?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(fail)?;
        f.write_all(&bytes).map_err(fail)?;
        f.sync_all().map_err(fail)?;
    }
    std::fs::rename(&tmp, &path).map_err(fail)
}

fn attribute(name: &str, value: Option<&str>) -> w::Attribute {
    w::Attribute {
        name: Some(name.into()),
        value: value.map(String::from),
        ..Default::default()
    }
}

/// Registers this host (again, if the state file names an instance) and
/// returns its container instance ARN.
/// The state to register with: the remembered one if it is of this
/// cluster, with the instance id given or remembered or made up.
fn current_state(config: &AgentConfig) -> Result<State, AgentError> {
    let mut state = load_state(config)?
        .filter(|s| s.cluster == config.cluster)
        .unwrap_or_default();
    state.cluster = config.cluster.clone();
    if let Some(id) = &config.instance_id {
        state.instance_id = id.clone();
    }
    if state.instance_id.is_empty() {
        state.instance_id = format!("i-{}", &uuid::Uuid::new_v4().simple().to_string()[..17]);
    }
    Ok(state)
}

/// Credentials a host got by joining, as kept in its data dir.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Joined {
    cluster: String,
    instance_id: String,
    access_key_id: String,
    secret_access_key: String,
}

impl Joined {
    fn credentials(&self) -> berth_wire::sigv4::Credentials {
        berth_wire::sigv4::Credentials {
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: None,
        }
    }
}

fn joined_path(config: &AgentConfig) -> PathBuf {
    config.data_dir.join("credentials.json")
}

/// The kept credentials, if they are this host's in this cluster.
fn load_joined(config: &AgentConfig, state: &State) -> Option<Joined> {
    let bytes = std::fs::read(joined_path(config)).ok()?;
    let j: Joined = serde_json::from_slice(&bytes).ok()?;
    (j.cluster == state.cluster && j.instance_id == state.instance_id).then_some(j)
}

fn save_joined(config: &AgentConfig, joined: &Joined) -> Result<(), AgentError> {
    let path = joined_path(config);
    write_private(&path, &serde_json::to_vec(joined).unwrap_or_default()).map_err(|e| {
        AgentError::State {
            path: path.clone(),
            reason: e.to_string(),
        }
    })
}

/// Writes `bytes` to `path` readable by the agent's user only, whole or
/// not at all.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Trades the join token for credentials of this host's own.
async fn join(
    config: &AgentConfig,
    server: &str,
    token: &str,
    state: &State,
) -> Result<Joined, AgentError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        access_key_id: String,
        secret_access_key: String,
    }
    let body = serde_json::json!({
        "token": token,
        "cluster": state.cluster,
        "instanceId": state.instance_id,
    });
    let answer: Answer = client(config, server)
        .own_route("POST", "/berth/v1/join", Some(&body))
        .await?;
    let joined = Joined {
        cluster: state.cluster.clone(),
        instance_id: state.instance_id.clone(),
        access_key_id: answer.access_key_id,
        secret_access_key: answer.secret_access_key,
    };
    save_joined(config, &joined)?;
    tracing::info!(cluster = %state.cluster, instance = %state.instance_id, "joined with the token");
    Ok(joined)
}

/// Registers through `server` with the host's own credentials, joining
/// first when it has none (or its kept ones are no longer known: the
/// server's store was reset, or the host joined again elsewhere).
async fn join_and_register(
    config: &AgentConfig,
    server: &str,
    runtime: &dyn ContainerRuntime,
) -> Result<(String, Option<berth_wire::sigv4::Credentials>), AgentError> {
    let Some(token) = &config.join_token else {
        let ecs = client(config, server).with_credentials(config.credentials.clone());
        return Ok((
            register(config, &ecs, runtime).await?,
            config.credentials.clone(),
        ));
    };
    let state = current_state(config)?;
    save_state(config, &state)?;
    let kept = load_joined(config, &state);
    let fresh = kept.is_none();
    let joined = match kept {
        Some(j) => j,
        None => join(config, server, token, &state).await?,
    };
    let ecs = client(config, server).with_credentials(Some(joined.credentials()));
    match register(config, &ecs, runtime).await {
        Err(AgentError::Register(EcsError::Api { code, .. }))
            if !fresh && code == "UnrecognizedClientException" =>
        {
            tracing::warn!("the kept credentials are not known to the server; joining again");
            let joined = join(config, server, token, &state).await?;
            let ecs = ecs.with_credentials(Some(joined.credentials()));
            Ok((
                register(config, &ecs, runtime).await?,
                Some(joined.credentials()),
            ))
        }
        other => Ok((other?, Some(joined.credentials()))),
    }
}

pub async fn register(
    config: &AgentConfig,
    ecs: &EcsClient,
    runtime: &dyn ContainerRuntime,
) -> Result<String, AgentError> {
    let mut state = current_state(config)?;
    let facts = host::facts().map_err(AgentError::Host)?;
    let version = runtime.version().await?;
    let mut ports: Vec<u16> = DEFAULT_RESERVED_PORTS.to_vec();
    ports.extend(&config.reserved_ports);
    ports.sort_unstable();
    ports.dedup();
    let resources = vec![
        w::Resource {
            name: Some("CPU".into()),
            r#type: Some("INTEGER".into()),
            integer_value: Some(facts.cpus * 1024),
            ..Default::default()
        },
        w::Resource {
            name: Some("MEMORY".into()),
            r#type: Some("INTEGER".into()),
            integer_value: Some(
                i32::try_from((facts.memory_mib - config.reserved_memory_mib).max(0))
                    .unwrap_or(i32::MAX),
            ),
            ..Default::default()
        },
        w::Resource {
            name: Some("PORTS".into()),
            r#type: Some("STRINGSET".into()),
            string_set_value: Some(ports.iter().map(u16::to_string).collect()),
            ..Default::default()
        },
        w::Resource {
            name: Some("PORTS_UDP".into()),
            r#type: Some("STRINGSET".into()),
            string_set_value: Some(vec![]),
            ..Default::default()
        },
    ];
    let mut attributes = vec![
        attribute("ecs.os-type", Some("linux")),
        attribute("ecs.os-family", Some("LINUX")),
        attribute("ecs.cpu-architecture", Some(facts.architecture)),
    ];
    // What the task runner implements, so task definitions that need it
    // (requiresAttributes) can be placed here and others cannot.
    for capability in CAPABILITIES {
        attributes.push(attribute(capability, None));
    }
    // The logging drivers ECS allows that the engine runs itself; awslogs
    // and awsfirelens are Berth's to implement, not the engine's to send
    // to AWS.
    for driver in w::enums::LOG_DRIVER {
        if !matches!(*driver, "awslogs" | "awsfirelens")
            && version.log_drivers.iter().any(|d| d == driver)
        {
            attributes.push(attribute(
                &format!("com.amazonaws.ecs.capability.logging-driver.{driver}"),
                None,
            ));
        }
    }
    // The Docker API versions this engine speaks, as the stock agent
    // advertises them for requiresAttributes.
    if let Some(max) = version
        .api
        .strip_prefix("1.")
        .and_then(|m| m.parse::<u32>().ok())
    {
        for minor in 17..=max {
            attributes.push(attribute(
                &format!("com.amazonaws.ecs.capability.docker-remote-api.1.{minor}"),
                None,
            ));
        }
    }
    for (name, value) in &config.attributes {
        attributes.push(attribute(name, value.as_deref()));
    }
    let identity = serde_json::json!({
        "instanceId": state.instance_id,
        "instanceType": config.instance_type,
        "availabilityZone": config.availability_zone,
        "region": config.region,
        "architecture": facts.architecture,
    });
    let mut req = w::RegisterContainerInstanceRequest {
        cluster: Some(config.cluster.clone()),
        instance_identity_document: Some(identity.to_string()),
        total_resources: Some(resources),
        attributes: Some(attributes),
        version_info: Some(w::VersionInfo {
            agent_version: Some(VERSION.into()),
            agent_hash: None,
            docker_version: Some(version.engine.clone()),
        }),
        container_instance_arn: state.container_instance_arn.clone(),
        ..Default::default()
    };
    let answer: w::RegisterContainerInstanceResponse =
        match ecs.call("RegisterContainerInstance", &req).await {
            Err(EcsError::Api { code, message })
                if code == "InvalidParameterException" && message.contains("is not registered") =>
            {
                // Deregistered while the agent was away: start over as a new instance.
                tracing::warn!(%message, "the remembered instance is gone; registering anew");
                req.container_instance_arn = None;
                ecs.call("RegisterContainerInstance", &req).await?
            }
            other => other?,
        };
    let arn = answer
        .container_instance
        .and_then(|c| c.container_instance_arn)
        .ok_or_else(|| EcsError::Protocol("no containerInstanceArn in the answer".into()))?;
    state.container_instance_arn = Some(arn.clone());
    save_state(config, &state)?;
    Ok(arn)
}

/// The gateway URL for an API URL (`http://h:p` -> `ws://h:p/agent/v1/connect`).
fn gateway_url(server: &str) -> String {
    let base = server.trim_end_matches('/');
    let ws = match base.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", base.trim_start_matches("http://")),
    };
    format!("{ws}{CONNECT_PATH}")
}

/// How long to wait before trying again after `failures` failures in a
/// row: doubling from 100 ms to 5 s, with up to 100 ms of jitter so that
/// agents cut off together do not all come back at the same instant.
fn retry_delay(failures: u32) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1 << failures.min(6));
    base.min(Duration::from_secs(5)) + Duration::from_millis(rand::random::<u64>() % 100)
}

/// Registers through the first server that answers, trying each in turn
/// and retrying with backoff while none does; an answer that is an error
/// (the cluster does not exist, say) ends it.
#[allow(clippy::type_complexity)]
async fn register_anywhere(
    config: &AgentConfig,
    runtime: &dyn ContainerRuntime,
    shutdown: &CancellationToken,
) -> Result<Option<(usize, String, Option<berth_wire::sigv4::Credentials>)>, AgentError> {
    if config.servers.is_empty() {
        return Err(AgentError::Host("no server to connect to".into()));
    }
    let mut failures = 0u32;
    loop {
        for (i, server) in config.servers.iter().enumerate() {
            match join_and_register(config, server, runtime).await {
                Ok((arn, creds)) => return Ok(Some((i, arn, creds))),
                Err(AgentError::Register(EcsError::Unreachable(why))) => {
                    tracing::warn!(server = %server, error = %why, "cannot register through this server");
                }
                Err(e) => return Err(e),
            }
        }
        let delay = retry_delay(failures);
        failures = failures.saturating_add(1);
        tracing::warn!(servers = ?config.servers, retry_in = ?delay, "no server answers; retrying");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The address this host's connection to the server leaves from: where
/// other hosts that reach the server reach it too. None when it is a
/// loopback address (then no other machine reaches it).
fn address_towards(server: &str) -> Option<std::net::Ipv4Addr> {
    let uri: hyper::Uri = server.parse().ok()?;
    let host = uri.host()?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let target = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()?
        .find(|a| a.is_ipv4())?;
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    probe.connect(target).ok()?;
    match probe.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// Makes the host's VPC tunnel (docs/adr/0007) and adds what other hosts
/// need of it to the attributes it registers with. A host without one
/// still runs awsvpc tasks; only tasks on other hosts cannot reach them.
async fn vpc_tunnel(config: &mut AgentConfig, runtime: &dyn ContainerRuntime) {
    let Some(address) = config
        .vpc_address
        .or_else(|| config.servers.iter().find_map(|s| address_towards(s)))
    else {
        tracing::info!(
            "no VPC tunnel: the server is on this machine's loopback, so no other host is"
        );
        return;
    };
    match runtime.vpc_tunnel(address).await {
        Ok(berth_runtime::overlay::Tunnel { mac, mtu }) => {
            tracing::info!(%address, %mac, mtu, "VPC tunnel ready");
            config.attributes.retain(|(n, _)| {
                n != berth_wire::agent::VPC_ADDRESS_ATTRIBUTE
                    && n != berth_wire::agent::VPC_MAC_ATTRIBUTE
            });
            config.attributes.push((
                berth_wire::agent::VPC_ADDRESS_ATTRIBUTE.into(),
                Some(address.to_string()),
            ));
            config
                .attributes
                .push((berth_wire::agent::VPC_MAC_ATTRIBUTE.into(), Some(mac)));
        }
        Err(e) => {
            tracing::warn!(%address, error = %e, "no VPC tunnel: tasks on other hosts cannot reach this host's")
        }
    }
}

/// Registers, then runs tasks and keeps a connection to a gateway until
/// `shutdown`. Containers keep running when the agent stops.
pub async fn run(
    mut config: AgentConfig,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    // A Fargate host promises tasks a kernel of their own unless its
    // operator said otherwise: one that cannot keep the promise does not
    // join the pool.
    if config.cluster == berth_domain::instance::FARGATE_POOL {
        if let Isolation::Gvisor { runsc } = &config.isolation {
            let shim = std::env::current_exe()
                .map_err(|e| AgentError::Host(format!("this program's path: {e}")))?;
            runtime.ensure_sandboxes(runsc, &shim).await.map_err(|e| {
                AgentError::Host(format!(
                    "this Fargate host cannot give tasks a kernel of their own: {e}. \
                     Install gVisor (Debian's runsc package; scripts/setup.sh does), \
                     or pass --isolation container to run Fargate tasks as hardened \
                     containers on the host's kernel"
                ))
            })?;
            tracing::info!(runsc = %runsc.display(), "Fargate tasks run on kernels of their own (gVisor)");
        }
    }
    vpc_tunnel(&mut config, &*runtime).await;
    let Some((mut at, arn, creds)) = register_anywhere(&config, &*runtime, &shutdown).await? else {
        return Ok(());
    };
    // From here on the host signs as itself.
    config.credentials = creds;
    tracing::info!(cluster = %config.cluster, instance = %arn, server = %config.servers[at], "registered");
    let instance = arn.rsplit('/').next().unwrap_or_default().to_string();
    let (reporter, mut changed) = report::Reporter::open(config.data_dir.join("tasks.json"))
        .map_err(|reason| AgentError::State {
            path: config.data_dir.join("tasks.json"),
            reason,
        })?;
    let logs = logs::Logs::new(config.data_dir.join("logs"));
    let (asks_tx, mut asks_rx) = tokio::sync::mpsc::unbounded_channel::<ServerAsk>();
    let endpoint = endpoint::Endpoint::start(
        &config.data_dir,
        config.endpoint_port,
        config.servers.iter().map(|s| client(&config, s)).collect(),
        asks_tx.clone(),
        runtime.clone(),
    )
    .await
    .map_err(|e| AgentError::Host(format!("task endpoint: {e}")))?;
    let shipping = Arc::new(awslogs::Shipping {
        servers: config.servers.iter().map(|s| client(&config, s)).collect(),
        own: config.credentials.clone(),
        asks: asks_tx.clone(),
    });
    let ctx = task::Ctx {
        runtime,
        instance,
        cluster: config.cluster.clone(),
        region: config.region.clone(),
        pull: config.pull_behavior,
        reporter: reporter.clone(),
        logs: logs.clone(),
        asks: asks_tx,
        endpoint,
        shipping,
        starts: Default::default(),
        data_dir: config.data_dir.clone(),
        isolation: config.isolation.clone(),
    };
    let sampled_runtime = ctx.runtime.clone();
    let (desired_tx, desired_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(runner::run(ctx, desired_rx));
    // Usage rounds wait for the connection in a short queue; while the
    // server is away, rounds beyond it are dropped (metrics are of now).
    let (usage_tx, mut usage_rx) = tokio::sync::mpsc::channel::<AgentMessage>(6);
    {
        let reporter = reporter.clone();
        let interval = config.stats_interval.max(Duration::from_secs(1));
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut sampler = usage::Sampler::default();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let tasks = sampler.round(&*sampled_runtime, &reporter.all()).await;
                if tasks.is_empty() {
                    continue;
                }
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let _ = usage_tx.try_send(AgentMessage::Usage { at, tasks });
            }
        });
    }
    let mut failures = 0u32;
    loop {
        let server = &config.servers[at];
        let link = Link {
            config: &config,
            ecs: &client(&config, server).with_credentials(config.credentials.clone()),
            url: &gateway_url(server),
            arn: &arn,
            logs: &logs,
            desired: &desired_tx,
            reporter: &reporter,
        };
        match link
            .connect_once(&mut changed, &mut asks_rx, &mut usage_rx, &shutdown)
            .await
        {
            Ok(_) if shutdown.is_cancelled() => return Ok(()),
            Ok(true) => {
                tracing::warn!(server = %server, "the gateway closed the connection");
                failures = 0;
            }
            Ok(false) => {
                tracing::warn!(server = %server, "the gateway closed the connection before welcoming");
                failures = failures.saturating_add(1);
            }
            Err(e) => {
                tracing::warn!(server = %server, error = %e, "gateway connection failed");
                failures = failures.saturating_add(1);
            }
        }
        // The next server: the one that went may be down for good, and
        // any server can carry the connection.
        at = (at + 1) % config.servers.len();
        // A whole round of servers failing backs off; moving on from one
        // that served for a while does not.
        let delay = if failures == 0 {
            Duration::from_millis(rand::random::<u64>() % 100)
        } else {
            retry_delay(failures / config.servers.len() as u32)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// What a connection to the gateway needs.
struct Link<'a> {
    config: &'a AgentConfig,
    ecs: &'a EcsClient,
    url: &'a str,
    arn: &'a str,
    logs: &'a logs::Logs,
    desired: &'a tokio::sync::mpsc::UnboundedSender<runner::Desired>,
    reporter: &'a report::Reporter,
}

/// The log readers of one connection by request; aborted when it ends.
#[derive(Default)]
struct ReaderSet(std::collections::HashMap<u64, tokio::task::JoinHandle<()>>);

impl ReaderSet {
    fn start(
        &mut self,
        logs: &logs::Logs,
        request: u64,
        task_id: String,
        follow: bool,
        out: tokio::sync::mpsc::Sender<AgentMessage>,
    ) {
        let mut chunks = logs::output(logs.clone(), task_id, follow);
        let reader = tokio::spawn(async move {
            while let Some(bytes) = chunks.next().await {
                let data = String::from_utf8_lossy(&bytes).into_owned();
                let chunk = AgentMessage::Logs {
                    request,
                    data,
                    end: false,
                };
                if out.send(chunk).await.is_err() {
                    return;
                }
            }
            let _ = out
                .send(AgentMessage::Logs {
                    request,
                    data: String::new(),
                    end: true,
                })
                .await;
        });
        self.0.insert(request, reader);
    }
}

impl Drop for ReaderSet {
    fn drop(&mut self) {
        for r in self.0.values() {
            r.abort();
        }
    }
}

/// Task ARN -> desired task, and the warm addresses.
/// The desired tasks, the warm addresses, and the routes to other hosts'
/// tasks (kept from the last whole push).
type DesiredSet = (
    BTreeMap<String, DesiredTask>,
    Vec<DesiredNetwork>,
    Option<Vec<berth_wire::agent::VpcRoute>>,
);

fn encode(m: &AgentMessage) -> Message {
    Message::text(serde_json::to_string(m).unwrap_or_default())
}

impl Link<'_> {
    /// Gives the runner the whole set, which it converges to.
    fn hand_over(&self, set: &DesiredSet) -> Result<(), String> {
        let desired = runner::Desired {
            tasks: set.0.values().cloned().collect(),
            warm: set.1.clone(),
            routes: set.2.clone(),
        };
        self.desired
            .send(desired)
            .map_err(|_| "the task runner stopped".to_string())
    }

    /// One connection: hello, every task's report, then heartbeats and
    /// reports as they change, and desired sets as they come. Ok says
    /// whether the server had welcomed the agent before the end.
    async fn connect_once(
        &self,
        changed: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
        asks: &mut tokio::sync::mpsc::UnboundedReceiver<ServerAsk>,
        usage: &mut tokio::sync::mpsc::Receiver<AgentMessage>,
        shutdown: &CancellationToken,
    ) -> Result<bool, String> {
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                self.url,
            )
            .map_err(|e| e.to_string())?;
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        for (k, v) in self.ecs.auth_headers("GET", &path, &[], b"") {
            if let Ok(v) = v.parse() {
                request.headers_mut().insert(k, v);
            }
        }
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(berth_wire::agent::SOCKET_READ_BUFFER);
        let tls = tokio_tungstenite::Connector::Rustls(self.ecs.tls());
        let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            false,
            Some(tls),
        )
        .await
        .map_err(|e| e.to_string())?;
        let hello = AgentMessage::Hello {
            cluster: self.config.cluster.clone(),
            container_instance_arn: self.arn.to_string(),
            agent_version: VERSION.into(),
        };
        ws.send(encode(&hello)).await.map_err(|e| e.to_string())?;
        // Logs the server asked for, each read by a task of its own and
        // sent from here; all stop with the connection.
        let (logs_tx, mut logs_rx) = tokio::sync::mpsc::channel::<AgentMessage>(16);
        let mut readers = ReaderSet::default();
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        let mut welcomed = false;
        // The desired set as the server last described it on this
        // connection: whole, then changed piece by piece.
        let mut current: Option<DesiredSet> = None;
        // Questions asked on this connection, by request number.
        let mut asked: HashMap<u64, ServerAsk> = HashMap::new();
        let mut next_request = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = ws.close(None).await;
                    return Ok(welcomed);
                }
                Some(ask) = asks.recv(), if welcomed => {
                    next_request += 1;
                    let m = ask.message(next_request);
                    asked.insert(next_request, ask);
                    ws.send(encode(&m)).await.map_err(|e| e.to_string())?;
                }
                Some(m) = logs_rx.recv() => {
                    if let AgentMessage::Logs { request, end: true, .. } = &m {
                        readers.0.remove(request);
                    }
                    ws.send(encode(&m)).await.map_err(|e| e.to_string())?;
                }
                _ = beat.tick(), if welcomed => {
                    ws.send(encode(&AgentMessage::Heartbeat)).await.map_err(|e| e.to_string())?;
                }
                Some(m) = usage.recv(), if welcomed => {
                    ws.send(encode(&m)).await.map_err(|e| e.to_string())?;
                }
                arn = changed.recv(), if welcomed => {
                    let Some(arn) = arn else { return Ok(welcomed) };
                    // A task that changed several times since the last
                    // send is sent once, as it is now.
                    let mut arns = std::collections::BTreeSet::from([arn]);
                    while let Ok(more) = changed.try_recv() {
                        arns.insert(more);
                    }
                    for arn in arns {
                        if let Some(r) = self.reporter.get(&arn) {
                            ws.send(encode(&AgentMessage::TaskState(r))).await.map_err(|e| e.to_string())?;
                        }
                    }
                }
                frame = ws.next() => {
                    let text = match frame {
                        None => return Ok(welcomed),
                        Some(Err(e)) => return Err(e.to_string()),
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) => return Ok(welcomed),
                        Some(Ok(_)) => continue,
                    };
                    match serde_json::from_str::<ServerMessage>(text.as_str()) {
                        Ok(ServerMessage::Welcome { heartbeat_interval_ms, .. }) => {
                            beat = tokio::time::interval(Duration::from_millis(heartbeat_interval_ms.max(50)));
                            welcomed = true;
                            tracing::info!("connected to the gateway");
                            // Level-based: whatever the server missed while
                            // the connection was down, it gets now.
                            for r in self.reporter.all() {
                                ws.send(encode(&AgentMessage::TaskState(r))).await.map_err(|e| e.to_string())?;
                            }
                        }
                        Ok(ServerMessage::Desired { revision, tasks, warm, routes }) => {
                            tracing::debug!(revision, tasks = tasks.len(), warm = warm.len(), "desired tasks");
                            let set = current.insert((BTreeMap::new(), warm, routes));
                            set.0.extend(tasks.into_iter().map(|t| (t.task_arn.clone(), t)));
                            self.hand_over(set)?;
                        }
                        Ok(ServerMessage::DesiredChanges { revision, tasks, removed, warm }) => {
                            tracing::debug!(revision, changed = tasks.len(), removed = removed.len(), "desired changes");
                            let Some(set) = current.as_mut() else {
                                return Err("changes to a desired set the server never sent".into());
                            };
                            for arn in &removed {
                                set.0.remove(arn);
                            }
                            set.0.extend(tasks.into_iter().map(|t| (t.task_arn.clone(), t)));
                            set.1 = warm;
                            self.hand_over(set)?;
                        }
                        Ok(ServerMessage::Logs { request, task_id, follow }) => {
                            readers.start(self.logs, request, task_id, follow, logs_tx.clone());
                        }
                        Ok(ServerMessage::LogsDone { request }) => {
                            if let Some(r) = readers.0.remove(&request) {
                                r.abort();
                            }
                        }
                        Ok(ServerMessage::Secrets { request, values, error }) => {
                            if let Some(ServerAsk::Secrets { reply, .. }) = asked.remove(&request) {
                                let _ = reply.send(match error {
                                    Some(e) => Err(e),
                                    None => Ok(values),
                                });
                            }
                        }
                        Ok(ServerMessage::Credentials { request, credentials, error }) => {
                            if let Some(ServerAsk::Credentials { reply, .. }) = asked.remove(&request) {
                                let _ = reply.send(match (credentials, error) {
                                    (Some(c), None) => Ok(c),
                                    (_, e) => Err(e.unwrap_or_else(|| "the server sent no credentials".into())),
                                });
                            }
                        }
                        Ok(ServerMessage::Refused { message }) => return Err(format!("refused: {message}")),
                        Err(e) => return Err(format!("bad message from the server: {e}")),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_follow_the_api_url() {
        assert_eq!(
            gateway_url("http://127.0.0.1:8750/"),
            "ws://127.0.0.1:8750/agent/v1/connect"
        );
        assert_eq!(
            gateway_url("https://ecs.example"),
            "wss://ecs.example/agent/v1/connect"
        );
    }

    #[test]
    fn state_survives_a_round_trip_and_a_bad_file_is_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = AgentConfig {
            servers: vec![],
            cluster: "c".into(),
            region: "us-east-1".into(),
            instance_id: None,
            instance_type: "t".into(),
            availability_zone: "a".into(),
            attributes: vec![],
            reserved_memory_mib: 0,
            reserved_ports: vec![],
            data_dir: dir.path().to_path_buf(),
            pull_behavior: berth_runtime::PullBehavior::Default,
            credentials: None,
            join_token: None,
            tls: None,
            endpoint_port: 0,
            stats_interval: Duration::from_secs(10),
            isolation: Isolation::Container,
            vpc_address: None,
        };
        assert_eq!(load_state(&config).expect("no file"), None);
        let s = State {
            cluster: "c".into(),
            instance_id: "i-1".into(),
            container_instance_arn: Some("arn".into()),
        };
        save_state(&config, &s).expect("save");
        assert_eq!(load_state(&config).expect("load"), Some(s));
        std::fs::write(state_path(&config), b"{oops").expect("write");
        assert!(matches!(load_state(&config), Err(AgentError::State { .. })));
    }
}
