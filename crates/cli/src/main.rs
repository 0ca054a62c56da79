//! The `berth` binary: a thin adapter that parses flags, opens the store,
//! and runs the components. Behaviour lives in the library crates.

use anyhow::{bail, Context};
use berth_apiserver::{ApiConfig, AppState};
use berth_store::{EtcdStore, MemStore, SqliteStore, Store};
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod billing;
mod creds;
mod service;
mod token;

// glibc's malloc spent about a quarter of the server's CPU under write load
// (bench/, docs/benchmarks.md); request handling allocates many small,
// short-lived buffers across threads, which mimalloc serves from per-thread
// pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "berth", version, about = "A self-hosted Amazon ECS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane (the ECS API and everything behind it).
    Server(Box<ServerArgs>),
    /// Run everything on this machine: the control plane on an embedded
    /// store, the `default` cluster, and this host as its container instance.
    Up(Box<UpArgs>),
    /// Make this host a container instance of a cluster and run its tasks.
    Agent(Box<AgentArgs>),
    /// Run the load balancer's data path on its own, on the store of a
    /// `berth server` (which then runs with `--lb false`): an etcd store,
    /// since only etcd is shared by several processes.
    Lb(LbArgs),
    /// Show a task's container logs.
    Logs(LogsArgs),
    /// List services, show their events, deploy new task definitions.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// What Fargate tasks and container instances have cost, per task,
    /// service and cluster.
    Billing(BillingArgs),
    /// Join tokens, with which new hosts' agents join a cluster or the
    /// Fargate pool.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Make a self-signed certificate and key for --tls-cert/--tls-key
    /// (agents and clients trust it with --ca or AWS_CA_BUNDLE).
    Cert(CertArgs),
    /// Print the version.
    Version,
    /// What the container engine runs in place of runc for tasks on their
    /// own kernel (registered by the agent; not for people).
    #[command(hide = true, name = "oci-runsc")]
    OciRunsc(OciRunscArgs),
}

#[derive(clap::Args, Clone)]
struct OciRunscArgs {
    /// gVisor's runsc.
    #[arg(long)]
    runsc: PathBuf,
    /// Be the waiter of the container joining a sandbox (the last
    /// argument), with runsc's global flags before it.
    #[arg(long)]
    wait: bool,
    /// runc's command line as the engine gives it.
    #[arg(last = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(clap::Args, Clone)]
struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    host: HostArgs,
    /// Also make this host Fargate capacity, so tasks with launchType
    /// FARGATE (or the FARGATE and FARGATE_SPOT capacity providers) run
    /// here without a container instance of theirs.
    #[arg(long, env = "BERTH_UP_FARGATE", default_value_t = true, action = clap::ArgAction::Set)]
    fargate: bool,
}

/// What kind of capacity an agent's host is.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Capacity {
    /// A container instance of `--cluster`, visible and managed by users.
    Ec2,
    /// A host of the hidden Fargate pool: it runs FARGATE tasks of every
    /// cluster and never appears as a container instance.
    Fargate,
}

/// What a container instance says about itself and how it runs tasks.
#[derive(clap::Args, Clone)]
struct HostArgs {
    /// Custom attribute, NAME or NAME=VALUE (repeatable).
    #[arg(long = "attribute", env = "BERTH_ATTRIBUTES", value_delimiter = ',')]
    attributes: Vec<String>,
    /// The ecs.availability-zone attribute.
    #[arg(long, env = "BERTH_AVAILABILITY_ZONE", default_value = "local-1a")]
    availability_zone: String,
    /// The EC2-style instance id (default: made up once and kept).
    #[arg(long, env = "BERTH_INSTANCE_ID")]
    instance_id: Option<String>,
    /// The ecs.instance-type attribute.
    #[arg(long, env = "BERTH_INSTANCE_TYPE", default_value = "berth.host")]
    instance_type: String,
    /// MiB of memory kept from tasks (ECS_RESERVED_MEMORY).
    #[arg(long, env = "BERTH_RESERVED_MEMORY", default_value_t = 0)]
    reserved_memory: i64,
    /// Host ports kept from tasks, besides 22, 2375, 2376, 51678, 51679.
    #[arg(long, env = "BERTH_RESERVED_PORTS", value_delimiter = ',')]
    reserved_ports: Vec<u16>,
    /// When to pull images: default, always, once or prefer-cached
    /// (ECS_IMAGE_PULL_BEHAVIOR).
    #[arg(long, env = "BERTH_IMAGE_PULL_BEHAVIOR", default_value = "default")]
    image_pull_behavior: String,
    /// The Docker Engine's socket.
    #[arg(
        long,
        env = "BERTH_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    docker_socket: String,
    /// The address this host's published ports are reached at, which load
    /// balancers send instance targets' traffic to.
    #[arg(long, env = "BERTH_HOST_ADDRESS", default_value = "127.0.0.1")]
    host_address: std::net::IpAddr,
    /// The port on 127.0.0.1 that tasks' 169.254.170.2 (role credentials,
    /// Berth's APIs) is routed to; 0: any free port, chosen at each start.
    #[arg(long, env = "BERTH_ENDPOINT_PORT", default_value_t = 0)]
    endpoint_port: u16,
    /// Seconds between samples of the running tasks' CPU, memory and
    /// network use, which CloudWatch's AWS/ECS and Container Insights
    /// metrics are made of (1 to 60).
    #[arg(long, env = "BERTH_STATS_INTERVAL", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    stats_interval: u64,
    /// What keeps Fargate tasks apart on a Fargate host: gvisor, a kernel
    /// of its own per task (gVisor's runsc), or container, hardened
    /// containers on the host's kernel. A Fargate host that cannot run
    /// gVisor refuses to start unless this says container.
    #[arg(long, env = "BERTH_ISOLATION", value_enum)]
    isolation: Option<IsolationArg>,
    /// gVisor's runsc (a path, or a name looked up on PATH; default runsc).
    #[arg(long, env = "BERTH_RUNSC")]
    runsc: Option<PathBuf>,
    /// The address other hosts reach this one at for traffic between
    /// awsvpc tasks (its VXLAN tunnel, docs/adr/0007); default: the
    /// address its connection to the server leaves from (none when the
    /// server is on loopback).
    #[arg(long, env = "BERTH_VPC_ADDRESS")]
    vpc_address: Option<std::net::Ipv4Addr>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum IsolationArg {
    Gvisor,
    Container,
}

impl HostArgs {
    fn isolation(&self) -> berth_agent::Isolation {
        match self.isolation.unwrap_or(IsolationArg::Gvisor) {
            IsolationArg::Container => berth_agent::Isolation::Container,
            IsolationArg::Gvisor => berth_agent::Isolation::Gvisor {
                runsc: on_path(
                    self.runsc
                        .as_deref()
                        .unwrap_or(std::path::Path::new("runsc")),
                ),
            },
        }
    }

    /// Refuses the isolation flags where they would change nothing: on a
    /// host that is no Fargate capacity, and --runsc without gVisor.
    fn check_isolation(&self, fargate: bool) -> anyhow::Result<()> {
        if !fargate && self.isolation.is_some() {
            bail!("--isolation applies to Fargate capacity only (--capacity fargate, or berth up with --fargate true): EC2 tasks always run as containers");
        }
        if self.runsc.is_some() && (!fargate || self.isolation == Some(IsolationArg::Container)) {
            bail!("--runsc applies to Fargate capacity with --isolation gvisor only");
        }
        Ok(())
    }
}

/// `program` as an absolute path when it is a name found on PATH: the
/// container engine runs it with an environment of its own.
fn on_path(program: &std::path::Path) -> PathBuf {
    if program.components().count() > 1 {
        return program.to_path_buf();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| program.to_path_buf())
}

#[derive(clap::Args, Clone)]
struct AgentArgs {
    /// The servers' API URLs, comma-separated: any of the servers sharing
    /// one store. The agent moves to the next when its server goes.
    #[arg(
        long = "server",
        env = "BERTH_SERVER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8750"
    )]
    servers: Vec<String>,
    /// The cluster to join (EC2 capacity only).
    #[arg(long, env = "BERTH_CLUSTER", default_value = "default")]
    cluster: String,
    /// ec2: a container instance of the cluster; fargate: capacity for the
    /// FARGATE launch type of every cluster, hidden from users.
    #[arg(long, env = "BERTH_CAPACITY", value_enum, default_value = "ec2")]
    capacity: Capacity,
    /// Region of the cluster.
    #[arg(long, env = "BERTH_REGION", default_value = "us-east-1")]
    region: String,
    /// Directory for the agent's state and task logs. Defaults to
    /// $XDG_DATA_HOME/berth-agent or ~/.local/share/berth-agent.
    #[arg(long, env = "BERTH_AGENT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    host: HostArgs,
    /// A join token (`berth token create`): the host joins with it once
    /// and signs as itself from then on. Without one the agent signs with
    /// the AWS environment or profile, which a server with authentication
    /// on refuses at its gateway.
    #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificate(s) that https:// servers' certificates are
    /// checked against (default: AWS_CA_BUNDLE, else the system's roots).
    #[arg(long, env = "BERTH_CA")]
    ca: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    log: String,
}

#[derive(clap::Args, Clone)]
struct LbArgs {
    /// The server's store: etcd://HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "BERTH_STORE")]
    store: String,
    #[command(flatten)]
    data_path: DataPathArgs,
    /// Log format.
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    log: String,
}

/// How the load balancer's data path serves its listeners.
#[derive(clap::Args, Clone)]
struct DataPathArgs {
    /// The address load balancer listeners are bound on.
    #[arg(long, env = "BERTH_LB_BIND", default_value = "0.0.0.0")]
    lb_bind: std::net::IpAddr,
    /// Threads serving load balancer connections (default: one per CPU).
    #[arg(long, env = "BERTH_LB_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    lb_threads: Option<u16>,
}

impl DataPathArgs {
    fn config(&self) -> berth_lb::LbConfig {
        let default = berth_lb::LbConfig::default();
        berth_lb::LbConfig {
            bind: self.lb_bind,
            threads: self.lb_threads.map_or(default.threads, usize::from),
            ..default
        }
    }
}

#[derive(clap::Args, Clone)]
struct LogsArgs {
    /// The task: its id or ARN.
    task: String,
    /// The task's cluster.
    #[arg(long, env = "BERTH_CLUSTER", default_value = "default")]
    cluster: String,
    /// The server's API URL.
    #[arg(long, env = "BERTH_SERVER", default_value = "http://127.0.0.1:8750")]
    server: String,
    /// Keep printing new output as it comes.
    #[arg(long, short)]
    follow: bool,
    /// Region of the cluster.
    #[arg(long, env = "BERTH_REGION", default_value = "us-east-1")]
    region: String,
}

#[derive(clap::Args, Clone)]
struct CertArgs {
    /// Host names and addresses the certificate is for (repeat or
    /// comma-separate): every name agents and clients reach the servers by.
    #[arg(long = "name", value_delimiter = ',', default_values = ["localhost", "127.0.0.1"])]
    names: Vec<String>,
    /// Where to write cert.pem and key.pem.
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
}

/// Writes a self-signed pair: the key readable by its owner only, and
/// never over an existing file.
fn cert(args: CertArgs) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pair = berth_tls::self_signed(&args.names)?;
    std::fs::create_dir_all(&args.out_dir)?;
    for (name, text, mode) in [
        ("cert.pem", &pair.cert_pem, 0o644),
        ("key.pem", &pair.key_pem, 0o600),
    ] {
        let path = args.out_dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        f.write_all(text.as_bytes())?;
    }
    let dir = args.out_dir.display();
    println!(
        "wrote {dir}/cert.pem and {dir}/key.pem for {}",
        args.names.join(", ")
    );
    println!("  berth server --tls-cert {dir}/cert.pem --tls-key {dir}/key.pem");
    println!("  berth agent --server https://... --ca {dir}/cert.pem   (clients: AWS_CA_BUNDLE={dir}/cert.pem)");
    Ok(())
}

/// Where the token commands find the API.
#[derive(clap::Args, Clone)]
struct ServerAt {
    /// The server's API URL.
    #[arg(long, env = "BERTH_SERVER", default_value = "http://127.0.0.1:8750")]
    server: String,
    #[arg(long, env = "BERTH_REGION", default_value = "us-east-1")]
    region: String,
}

#[derive(clap::Subcommand, Clone)]
enum TokenCommand {
    /// Issue a join token and print it.
    Create {
        /// The cluster hosts join with it.
        #[arg(
            long,
            conflicts_with = "capacity",
            required_unless_present = "capacity"
        )]
        cluster: Option<String>,
        /// `fargate`: hosts join the hidden Fargate pool with it.
        #[arg(long, value_enum)]
        capacity: Option<Capacity>,
        /// How long it can be used, in seconds.
        #[arg(long, default_value_t = 86400.0)]
        expires_in: f64,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        at: ServerAt,
    },
    /// List join tokens (never their secrets).
    Ls {
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: ServerAt,
    },
    /// Revoke a join token: no host can join with it any more; hosts that
    /// joined keep their credentials.
    Revoke {
        /// The token's id (the part before the dot).
        id: String,
        #[command(flatten)]
        at: ServerAt,
    },
}

#[derive(clap::Args, Clone)]
struct BillingArgs {
    /// Only this cluster (default: every cluster).
    #[arg(long)]
    cluster: Option<String>,
    /// The server's API URL.
    #[arg(long, env = "BERTH_SERVER", default_value = "http://127.0.0.1:8750")]
    server: String,
    #[arg(long, env = "BERTH_REGION", default_value = "us-east-1")]
    region: String,
    /// Print the server's JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Where the service commands find the API.
#[derive(clap::Args, Clone)]
struct ApiArgs {
    /// The cluster.
    #[arg(long, env = "BERTH_CLUSTER", default_value = "default")]
    cluster: String,
    /// The server's API URL.
    #[arg(long, env = "BERTH_SERVER", default_value = "http://127.0.0.1:8750")]
    server: String,
    /// Region of the cluster.
    #[arg(long, env = "BERTH_REGION", default_value = "us-east-1")]
    region: String,
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// The cluster's services: counts, task definition, rollout state.
    Ls {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A service's events, oldest first.
    Events {
        /// The service's name or ARN.
        name: String,
        /// At most this many of the latest events.
        #[arg(long, short = 'n', default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Deploy a task definition to a service and follow the rollout until
    /// it completes (exit 0), fails or rolls back (exit 1) or times out (exit 2).
    Deploy {
        /// The service's name or ARN.
        name: String,
        /// family, family:revision or ARN; without it, a new deployment of
        /// the current one (forceNewDeployment).
        #[arg(long)]
        task_definition: Option<String>,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600.0, value_parser = parse_timeout)]
        timeout: f64,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Clone)]
struct ServerArgs {
    /// Address of the API (ECS, STS, later ELBv2...), /health and /metrics.
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:8750")]
    listen: SocketAddr,
    /// A PEM certificate chain: the API and the agent gateway speak TLS
    /// (https://, wss://) with it. `berth cert` makes a self-signed one.
    #[arg(long, env = "BERTH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "BERTH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Directory for Berth's state. Defaults to $XDG_DATA_HOME/berth or ~/.local/share/berth.
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Store URL: sqlite://PATH (default: berth.db in the data dir),
    /// etcd://HOST:PORT[,HOST:PORT...] (shared, e.g. with `berth lb`) or
    /// memory:// (lost on exit).
    #[arg(long, env = "BERTH_STORE")]
    store: Option<String>,
    /// Account id of every resource and ARN.
    #[arg(long, env = "BERTH_ACCOUNT_ID", default_value = "000000000000")]
    account_id: String,
    /// Region of unsigned requests; a signed request's credential scope wins.
    #[arg(long, env = "BERTH_REGION", default_value = "us-east-1")]
    region: String,
    /// Log format.
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. info or berth_apiserver=debug.
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    log: String,
    /// Largest accepted request body, in bytes: a PutLogEvents batch at
    /// Logs' own limit (1 MiB of events) is larger than 1 MiB as JSON.
    #[arg(long, env = "BERTH_BODY_LIMIT", default_value_t = 2 * 1024 * 1024)]
    body_limit: usize,
    /// Ceiling for Fargate containers' stopTimeout, in seconds (AWS: 120).
    #[arg(long, env = "BERTH_FARGATE_MAX_STOP_TIMEOUT", default_value_t = 120)]
    fargate_max_stop_timeout: i32,
    /// Store history kept for watchers, in revisions; older history is compacted.
    #[arg(long, env = "BERTH_HISTORY_REVISIONS", default_value_t = 100_000)]
    history_revisions: i64,
    /// Seconds without a heartbeat after which an agent counts as
    /// disconnected (agentConnected false).
    #[arg(long, env = "BERTH_AGENT_TIMEOUT", default_value_t = 5.0, value_parser = parse_timeout)]
    agent_timeout: f64,
    /// Seconds a task role's credentials last (AWS STS allows 900 to
    /// 43200); agents fetch new ones halfway through.
    #[arg(long, env = "BERTH_TASK_CREDENTIALS_LIFETIME", default_value_t = 21600, value_parser = clap::value_parser!(u32).range(900..=43200))]
    task_credentials_lifetime: u32,
    /// Seconds per period at which target tracking policies watch ECS's
    /// predefined metrics (their alarms: 3 periods above the target to
    /// scale out, 15 below 90% of it to scale in). 60 is AWS's timing;
    /// 10 matches the agents' default sampling.
    #[arg(long, env = "BERTH_TARGET_TRACKING_PERIOD", default_value_t = 10, value_parser = parse_tracking_period)]
    target_tracking_period: i32,
    /// Seconds a capacity provider's CapacityProviderReservation stays
    /// under its target capacity before managed scaling lowers its Auto
    /// Scaling group's desired capacity (ECS: 15 one-minute datapoints;
    /// Berth: 15 target-tracking periods).
    #[arg(long, env = "BERTH_MANAGED_SCALE_IN_AFTER", value_parser = clap::value_parser!(u16).range(1..=3600))]
    managed_scale_in_after: Option<u16>,
    /// Grow the hidden Fargate pool through --launcher, up to this many
    /// launched hosts, when FARGATE tasks cannot be placed (they wait in
    /// PROVISIONING meanwhile). 0 (the default): the pool is the hosts
    /// that join it, and a shortfall fails RunTask as on AWS.
    #[arg(long, env = "BERTH_FARGATE_POOL_MAX", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1000))]
    fargate_pool_max: u16,
    /// Seconds a launched Fargate pool host stays without tasks before it
    /// is retired.
    #[arg(long, env = "BERTH_FARGATE_POOL_IDLE", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=86400))]
    fargate_pool_idle: u32,
    /// How Auto Scaling groups get machines: `none` (launches fail and say
    /// so), `netns` (a `berth agent` in a new network namespace of this
    /// machine, reaching this server through a veth pair; needs root), or
    /// `exec:PATH` (PATH is run as `PATH launch` / `PATH terminate` with the
    /// details in BERTH_* variables; see docs/autoscaling.md).
    #[arg(long, env = "BERTH_LAUNCHER", default_value = "none", value_parser = parse_launcher)]
    launcher: String,
    /// Seconds a launched instance has to register its agent before the
    /// launch fails and the instance is terminated (also how long an exec
    /// launcher's script may run).
    #[arg(long, env = "BERTH_LAUNCH_TIMEOUT", default_value_t = 600, value_parser = clap::value_parser!(u32).range(5..=7200))]
    launch_timeout: u32,
    /// Arguments added to the command line of every agent the netns
    /// launcher starts (for example `--stats-interval 2`).
    #[arg(long, env = "BERTH_LAUNCHED_AGENT_ARGS", default_value = "")]
    launched_agent_args: String,
    /// Seconds a service task without container health checks must run
    /// before it counts as healthy in a deployment (ECS uses about 40).
    #[arg(long, env = "BERTH_SERVICE_SETTLE", default_value_t = 5.0, value_parser = parse_timeout)]
    service_settle: f64,
    /// Seconds an instance's agent may stay disconnected before its tasks
    /// are marked STOPPED and their services replace them elsewhere.
    #[arg(long, env = "BERTH_HOST_LOSS_GRACE", default_value_t = 3.0, value_parser = parse_timeout)]
    host_loss_grace: f64,
    /// Seconds the leader's lease lasts without a renewal, when several
    /// servers share an etcd store: a leader that dies is replaced within
    /// about this long. Only the leader runs the controllers.
    #[arg(long, env = "BERTH_LEADER_LEASE", default_value_t = 3.0, value_parser = parse_timeout)]
    leader_lease: f64,
    /// Seconds a STOPPED task stays describable before its records are
    /// removed (ECS: at least an hour).
    #[arg(long, env = "BERTH_STOPPED_TASK_RETENTION", default_value_t = 3600.0, value_parser = parse_retention)]
    stopped_task_retention: f64,
    /// A JSON file with the VPCs, subnets and security groups a new store
    /// starts with (docs/networking.md); later, the EC2 API changes them.
    /// Default: the VPC vpc-local with one /20 subnet per local zone
    /// (subnet-local-1a, -1b, -1c), sg-default and sg-allow-all.
    #[arg(long, env = "BERTH_NETWORK_CONFIG")]
    network_config: Option<PathBuf>,
    /// Threads serving HTTP connections (default: one per CPU).
    #[arg(long, env = "BERTH_HTTP_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    http_threads: Option<u16>,
    /// Addresses kept warm per awsvpc-capable host and subnet of its zone:
    /// the host keeps a network namespace ready at each, so that many
    /// awsvpc (and Fargate) tasks start without making one. 0 turns it off.
    #[arg(long, env = "BERTH_WARM_ADDRESSES", default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=64))]
    warm_addresses: u16,
    /// Run the load balancer's data path (listeners of the ELBv2 API) in
    /// this process; false when `berth lb` runs it.
    #[arg(long, env = "BERTH_LB", default_value_t = true, action = clap::ArgAction::Set)]
    lb: bool,
    #[command(flatten)]
    data_path: DataPathArgs,
    /// The host name load balancers report as their DNSName.
    #[arg(long, env = "BERTH_LB_HOSTNAME", default_value = "localhost")]
    lb_hostname: String,
    /// The URL other servers sharing the store reach this one's API at
    /// (for the logs of agents connected here). Defaults to the listen
    /// address, with 127.0.0.1 for an unspecified one.
    #[arg(long, env = "BERTH_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Metering: USD per vCPU-hour of a Fargate task.
    #[arg(long, env = "BERTH_PRICE_FARGATE_VCPU_HOUR", default_value_t = 0.04045, value_parser = parse_price)]
    price_fargate_vcpu_hour: f64,
    /// Metering: USD per GB-hour of a Fargate task.
    #[arg(long, env = "BERTH_PRICE_FARGATE_GB_HOUR", default_value_t = 0.00442, value_parser = parse_price)]
    price_fargate_gb_hour: f64,
    /// Metering: FARGATE_SPOT's price as a share of FARGATE's.
    #[arg(long, env = "BERTH_PRICE_FARGATE_SPOT_RATIO", default_value_t = 0.3, value_parser = parse_price)]
    price_fargate_spot_ratio: f64,
    /// Metering: USD per hour an EC2-mode container instance is registered.
    #[arg(long, env = "BERTH_PRICE_INSTANCE_HOUR", default_value_t = 0.0856, value_parser = parse_price)]
    price_instance_hour: f64,
    /// iam: every request must be signed (SigV4) by a known access key.
    /// off: nobody is asked who they are, so anyone who reaches the port
    /// can run containers on the hosts; for throwaway setups only.
    #[arg(long, env = "BERTH_AUTH", value_enum, default_value = "iam")]
    auth: Auth,
    /// The key that seals secrets (access keys) in the store: 64 hex
    /// digits in a file, made on first start. Servers sharing a store must
    /// share it. Default: secrets.key in the data dir.
    #[arg(long, env = "BERTH_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// The account root's access key id to create on first start, instead
    /// of a random one (with --root-secret-access-key).
    #[arg(
        long,
        env = "BERTH_ROOT_ACCESS_KEY_ID",
        requires = "root_secret_access_key"
    )]
    root_access_key_id: Option<String>,
    /// Its secret.
    #[arg(
        long,
        env = "BERTH_ROOT_SECRET_ACCESS_KEY",
        hide_env_values = true,
        requires = "root_access_key_id"
    )]
    root_secret_access_key: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Auth {
    Iam,
    Off,
}

fn parse_price(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s} is not a price: a number, 0 or more")),
    }
}

fn parse_retention(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (1.0..=30.0 * 86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s} is not a number of seconds between 1 and 2592000"
        )),
    }
}

fn parse_launcher(s: &str) -> Result<String, String> {
    match s {
        "none" | "netns" => Ok(s.to_string()),
        _ if s.strip_prefix("exec:").is_some_and(|p| !p.is_empty()) => Ok(s.to_string()),
        _ => Err(format!("{s}: expected none, netns or exec:PATH")),
    }
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.5..=600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s} is not a number of seconds between 0.5 and 600"
        )),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::OciRunsc(a) => {
            let code = if a.wait {
                let (id, global) = a
                    .args
                    .split_last()
                    .context("the waiter needs a container id")?;
                berth_runtime::gvisor::waiter(&a.runsc, global, id)
            } else {
                berth_runtime::gvisor::shim_main(&a.runsc, &a.args)
            };
            std::process::exit(code)
        }
        Command::Version => {
            println!("berth {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Server(args) => run(*args, None),
        Command::Up(args) => {
            let UpArgs {
                server,
                host,
                fargate,
            } = *args;
            host.check_isolation(fargate)?;
            run(server, Some((host, fargate)))
        }
        Command::Agent(args) => {
            commit_lazily();
            agent(*args)
        }
        Command::Lb(args) => lb(args),
        Command::Logs(args) => logs(args),
        Command::Service(cmd) => service_command(cmd),
        Command::Billing(args) => billing::show(
            &args.server,
            &args.region,
            args.cluster.as_deref(),
            args.json,
        ),
        Command::Cert(args) => cert(args),
        Command::Token(cmd) => match cmd {
            TokenCommand::Create {
                cluster,
                capacity,
                expires_in,
                description,
                at,
            } => {
                let target = match (&cluster, capacity) {
                    (_, Some(Capacity::Fargate)) => ("capacity", "fargate"),
                    (Some(c), _) => ("cluster", c.as_str()),
                    (None, _) => anyhow::bail!("--cluster NAME or --capacity fargate"),
                };
                token::create(&at.server, &at.region, target, expires_in, &description)
            }
            TokenCommand::Ls { json, at } => token::list(&at.server, &at.region, json),
            TokenCommand::Revoke { id, at } => token::revoke(&at.server, &at.region, &id),
        },
    }
}

fn service_command(cmd: ServiceCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cmd {
            ServiceCommand::Ls { api } => service::ls(&api.server, &api.region, &api.cluster).await,
            ServiceCommand::Events { name, limit, api } => {
                service::events(&api.server, &api.region, &api.cluster, &name, limit).await
            }
            ServiceCommand::Deploy {
                name,
                task_definition,
                timeout,
                api,
            } => {
                let outcome = service::deploy(
                    &api.server,
                    &api.region,
                    &api.cluster,
                    &name,
                    task_definition.as_deref(),
                    Duration::from_secs_f64(timeout),
                )
                .await?;
                match outcome {
                    service::Outcome::Completed => Ok(()),
                    service::Outcome::Failed(why) => {
                        eprintln!("deployment failed: {why}");
                        std::process::exit(1)
                    }
                    service::Outcome::TimedOut => {
                        eprintln!("deployment still in progress after {timeout} s");
                        std::process::exit(2)
                    }
                }
            }
        }
    })
}

/// mimalloc commits its first arena eagerly on Linux, and the pages it
/// frees there stay resident. The agent sits on every host beside the
/// workloads it runs, so it asks for lazy commit, which keeps it at about
/// 12 MiB with 50 tasks instead of 20 (bench/tasks.sh, docs/benchmarks.md).
/// mimalloc reads its options before `main`, hence the re-exec; the PID
/// stays the same. If the exec fails the agent runs on the defaults.
fn commit_lazily() {
    use std::os::unix::process::CommandExt;
    const OPTION: &str = "MIMALLOC_ARENA_EAGER_COMMIT";
    if std::env::var_os(OPTION).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut argv = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = argv.next() {
        command.arg0(arg0);
    }
    let error = command.args(argv).env(OPTION, "0").exec();
    eprintln!(
        "berth agent: cannot re-exec with {OPTION}=0 ({error}); running with mimalloc's defaults"
    );
}

fn init_logs(log: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(log).context("invalid --log filter")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

fn data_dir(args: &ServerArgs) -> anyhow::Result<PathBuf> {
    given_or_default_dir(args.data_dir.as_ref(), "berth", "BERTH_DATA_DIR")
}

/// `given`, else `$XDG_DATA_HOME/<name>`, else `~/.local/share/<name>`.
fn given_or_default_dir(given: Option<&PathBuf>, name: &str, env: &str) -> anyhow::Result<PathBuf> {
    if let Some(d) = given {
        return Ok(d.clone());
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(x).join(name));
    }
    match std::env::var_os("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".local/share").join(name)),
        None => bail!("no data directory: set --data-dir or {env}"),
    }
}

async fn open_store(args: &ServerArgs) -> anyhow::Result<(Arc<dyn Store>, String)> {
    let url = match &args.store {
        Some(u) => u.clone(),
        None => {
            let dir = data_dir(args)?;
            format!("sqlite://{}", dir.join("berth.db").display())
        }
    };
    if url == "memory://" {
        return Ok((Arc::new(MemStore::new()), url));
    }
    if let Some(endpoints) = url.strip_prefix("etcd://") {
        return Ok((Arc::new(open_etcd(endpoints).await?), url));
    }
    let Some(path) = url.strip_prefix("sqlite://") else {
        bail!("unsupported --store {url:?}: use sqlite://PATH, etcd://HOST:PORT or memory://");
    };
    let path = PathBuf::from(path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let store = SqliteStore::open(&path)
        .with_context(|| format!("cannot open store {}", path.display()))?;
    Ok((Arc::new(store), url))
}

async fn open_etcd(endpoints: &str) -> anyhow::Result<EtcdStore> {
    EtcdStore::connect(endpoints)
        .await
        .with_context(|| format!("cannot open store etcd://{endpoints}"))
}

/// `berth lb`: the data path alone, until a signal.
fn lb(args: LbArgs) -> anyhow::Result<()> {
    init_logs(&args.log, args.log_format)?;
    let Some(endpoints) = args.store.strip_prefix("etcd://") else {
        bail!(
            "--store {:?}: berth lb shares the server's store, which must be etcd://HOST:PORT \
             (sqlite:// and memory:// belong to one process)",
            args.store
        );
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store: Arc<dyn Store> = Arc::new(open_etcd(endpoints).await?);
        let shutdown = cancel_on_signal("shutting down");
        tracing::info!(store = %args.store, bind = %args.data_path.lb_bind, "berth lb ready");
        berth_lb::run(store, args.data_path.config(), shutdown).await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// The account root's credentials as this server knows them: made now (on
/// a store without a root key: printed once and saved in the data dir), or
/// saved by an earlier start. `None` when another server made them.
async fn root_credentials(
    args: &ServerArgs,
    state: &AppState,
) -> anyhow::Result<Option<berth_wire::sigv4::Credentials>> {
    let given = args
        .root_access_key_id
        .clone()
        .zip(args.root_secret_access_key.clone())
        .map(
            |(access_key_id, secret_access_key)| berth_control::identity::NewCredentials {
                access_key_id,
                secret_access_key,
            },
        );
    let was_given = given.is_some();
    let made = state
        .ctl
        .identity
        .bootstrap_root(given, state.ctl.now())
        .await
        .context("cannot make the account root's access key")?;
    let dir = data_dir(args)?;
    let Some(made) = made else {
        return Ok(creds::saved_root_credentials(&dir));
    };
    let c = berth_wire::sigv4::Credentials {
        access_key_id: made.access_key_id,
        secret_access_key: made.secret_access_key,
        session_token: None,
    };
    let path = creds::save_root_credentials(&dir, &c)?;
    if was_given {
        eprintln!(
            "berth: the account root's access key is {} (as given); saved in {}",
            c.access_key_id,
            path.display()
        );
    } else {
        // Shown once: the store keeps the secret sealed, the file is 0600.
        eprintln!(
            "berth: made the account root's access key (shown once; also saved in {}, mode 0600):\n  \
             aws_access_key_id = {}\n  aws_secret_access_key = {}",
            path.display(),
            c.access_key_id,
            c.secret_access_key
        );
    }
    Ok(Some(c))
}

fn run(args: ServerArgs, up: Option<(HostArgs, bool)>) -> anyhow::Result<()> {
    init_logs(&args.log, args.log_format)?;
    if args.account_id.len() != 12 || !args.account_id.bytes().all(|b| b.is_ascii_digit()) {
        bail!("--account-id must be 12 digits, got {:?}", args.account_id);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args, up))
}

async fn serve(args: ServerArgs, up: Option<(HostArgs, bool)>) -> anyhow::Result<()> {
    let (store, url) = open_store(&args).await?;
    let network = match &args.network_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --network-config {}", path.display()))?;
            let n: berth_domain::network::NetworkConfig = serde_json::from_str(&text)
                .with_context(|| format!("--network-config {}", path.display()))?;
            n.validate()
                .map_err(|e| anyhow::anyhow!("--network-config {}: {e}", path.display()))?;
            n
        }
        None => berth_domain::network::NetworkConfig::local_default(),
    };
    // Bound first: the address peers are told is the one really bound.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(berth_tls::server_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let advertise_url = args.advertise_url.clone().unwrap_or_else(|| {
        let mut a = addr;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("{scheme}://{a}")
    });
    // Peers are trusted as this server's own certificate is: servers
    // sharing a store share a certificate or its CA.
    let peer_tls = match &args.tls_cert {
        Some(cert) => Some(berth_tls::client_config(Some(cert))?),
        None => None,
    };
    if args.fargate_pool_max > 0 && args.launcher == "none" {
        anyhow::bail!("--fargate-pool-max needs a --launcher to start the pool's hosts with");
    }
    let config = ApiConfig {
        fargate_pool: berth_control::PoolScaling {
            max: usize::from(args.fargate_pool_max),
            idle: Duration::from_secs(u64::from(args.fargate_pool_idle)),
        },
        advertise_url: Some(advertise_url.clone()),
        peer_tls,
        network,
        account_id: args.account_id.clone(),
        default_region: args.region.clone(),
        body_limit: args.body_limit,
        fargate_max_stop_timeout: args.fargate_max_stop_timeout,
        agent_timeout: Duration::from_secs_f64(args.agent_timeout),
        task_credentials_lifetime: Duration::from_secs(u64::from(args.task_credentials_lifetime)),
        target_tracking_period: args.target_tracking_period,
        prices: berth_domain::billing::Prices {
            fargate_vcpu_hour: args.price_fargate_vcpu_hour,
            fargate_gb_hour: args.price_fargate_gb_hour,
            spot_ratio: args.price_fargate_spot_ratio,
            instance_hour: args.price_instance_hour,
        },
        lb_hostname: args.lb_hostname.clone(),
        auth: match args.auth {
            Auth::Iam => berth_apiserver::AuthMode::Iam,
            Auth::Off => berth_apiserver::AuthMode::Off,
        },
        secrets_key: creds::secrets_key(
            &args
                .secrets_key_file
                .clone()
                .map_or_else(|| data_dir(&args).map(|d| d.join("secrets.key")), Ok)?,
        )?,
    };
    let log_dir = data_dir(&args)?.join("cwlogs");
    let logs = Arc::new(
        berth_logstore::LogStore::open(&log_dir)
            .with_context(|| format!("cannot open the log store in {}", log_dir.display()))?,
    );
    let metrics_dir = data_dir(&args)?.join("metrics");
    let metric_store = Arc::new(
        berth_metricstore::MetricStore::open(&metrics_dir).with_context(|| {
            format!("cannot open the metric store in {}", metrics_dir.display())
        })?,
    );
    let mut state = AppState::new(store.clone(), config).with_logs(logs.clone());
    state.ctl = state.ctl.clone().with_metric_store(metric_store.clone());
    if args.auth == Auth::Off {
        tracing::warn!(
            "authentication is off (--auth off): anyone who can reach {} can run containers on this cluster's hosts",
            args.listen
        );
    }
    let root = root_credentials(&args, &state).await?;
    // The first start of a store puts its network there; later ones use
    // what the EC2 API made of it.
    let wrote = state
        .ctl
        .networks
        .bootstrap()
        .await
        .context("cannot put the network in the store")?;
    if !wrote && args.network_config.is_some() {
        tracing::warn!(
            "--network-config is only read by a store's first start; this store's VPCs, subnets and security groups are changed with the EC2 API"
        );
    }
    state.ctl = state
        .ctl
        .clone()
        .with_placement_thread()
        .context("cannot start the placement thread")?;
    let app = berth_apiserver::router(state.clone());
    tracing::info!(listen = %addr, store = %url, "berth server ready");

    let shutdown = cancel_on_signal("shutting down");
    tokio::spawn(state.ctl.identity.clone().follow(shutdown.clone()));
    tokio::spawn(state.ctl.networks.clone().follow(shutdown.clone()));
    // Log groups' retention, enforced once a minute.
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let logs = logs.clone();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let _ = tokio::task::spawn_blocking(move || logs.expire(now)).await;
        }
    });
    // Metrics: memory sealed into blocks, retention and merging, once a
    // minute (what memory holds is in the write-ahead log meanwhile).
    {
        let metric_store = metric_store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let store = metric_store.clone();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let done = tokio::task::spawn_blocking(move || store.maintain(now, false)).await;
                if let Ok(Err(e)) = done {
                    tracing::warn!(error = %e, "metric store maintenance failed");
                }
            }
        });
    }
    let mut local_agents = vec![];
    if let Some((host, fargate)) = up {
        // The local agents reach this server as clients do, trusting its
        // own certificate when it has one.
        let server = format!("{scheme}://{addr}");
        let runtime: Arc<dyn berth_runtime::ContainerRuntime> = Arc::new(
            berth_runtime::docker::DockerRuntime::connect(Some(&host.docker_socket))
                .await
                .with_context(|| {
                    format!(
                        "berth up needs a Docker Engine on {}; start one (scripts/docker.sh does)",
                        host.docker_socket
                    )
                })?,
        );
        // The local agents join as any host does, with tokens this server
        // issues itself (short-lived: each start issues new ones); the
        // root's key only makes the default cluster.
        let local_token = |cluster: &'static str| {
            let ctl = state.ctl.clone();
            async move {
                berth_control::join::create_token(&ctl, cluster, "berth up: this host", 600.0)
                    .await
                    .map(|(_, token)| token)
                    .map_err(|e| anyhow::anyhow!("cannot issue the local agent's join token: {e}"))
            }
        };
        let mut ec2 = agent_config(
            std::slice::from_ref(&server),
            "default",
            &args.region,
            data_dir(&args)?.join("agent"),
            &host,
        )?;
        ec2.credentials = root.clone();
        ec2.join_token = Some(local_token("default").await?);
        let local_tls = match &args.tls_cert {
            Some(cert) => Some(berth_tls::client_config(Some(cert))?),
            None => None,
        };
        ec2.tls = local_tls.clone();
        let (region, stop, rt) = (args.region.clone(), shutdown.clone(), runtime.clone());
        let api = server.clone();
        local_agents.push(tokio::spawn(async move {
            // The API is served below; wait for it, then make sure the
            // default cluster exists before the agent registers in it.
            let ecs = berth_agent::EcsClient::new(&api, &region)
                .with_tls(ec2.tls.clone())
                .with_credentials(ec2.credentials.clone());
            for _ in 0..100 {
                let made: Result<serde_json::Value, _> = ecs
                    .call(
                        "CreateCluster",
                        &serde_json::json!({"clusterName": "default"}),
                    )
                    .await;
                if made.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Err(e) = berth_agent::run(ec2, rt, stop).await {
                tracing::error!(error = %e, "the local agent stopped");
            }
        }));
        if fargate {
            // The same host, again, as the Fargate pool's one host. Its own
            // instance and log listener; the agents share the engine, each
            // touching only the containers labelled as its own.
            let mut config = agent_config(
                std::slice::from_ref(&server),
                berth_domain::instance::FARGATE_POOL,
                &args.region,
                data_dir(&args)?.join("agent-fargate"),
                &host,
            )?;
            config.instance_id = config.instance_id.map(|i| format!("{i}-fargate"));
            // The EC2 agent's port, when one is set, is taken.
            config.endpoint_port = 0;
            config.join_token = Some(local_token(berth_domain::instance::FARGATE_POOL).await?);
            config.tls = local_tls.clone();
            let stop = shutdown.clone();
            local_agents.push(tokio::spawn(async move {
                // Registration retries until the API answers.
                for _ in 0..100 {
                    match berth_agent::run(config.clone(), runtime.clone(), stop.clone()).await {
                        Ok(()) => return,
                        Err(berth_agent::AgentError::Register(e)) => {
                            tracing::debug!(error = %e, "Fargate capacity waits for the API");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the local Fargate capacity stopped");
                            return;
                        }
                    }
                }
            }));
        }
        let profile = match &root {
            Some(c) => match creds::write_profile(&server, &args.region, c) {
                Ok(files) => format!(
                    "The '{}' profile ({}) signs as the account root:\n  export AWS_PROFILE={}",
                    creds::PROFILE,
                    files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    creds::PROFILE
                ),
                Err(e) => format!("cannot write the AWS CLI's 'berth' profile: {e:#}"),
            },
            None => "the account root's key was made by another server; sign with it".into(),
        };
        eprintln!(
            "Berth is up: ECS API on http://{addr} (store {url}); this host runs the tasks of cluster 'default'{}.\n  \
             {profile}\n  \
             aws ecs register-task-definition --family hello --container-definitions '[{{\"name\":\"hello\",\"image\":\"berth-test/busybox:latest\",\"memory\":32,\"command\":[\"echo\",\"hello from Berth\"]}}]'\n  \
             aws ecs run-task --task-definition hello     # then: berth logs <task id> --server http://{addr}",
            if fargate { " and is Fargate capacity" } else { "" },
        );
    }
    // The controllers and history compaction run on one server at a time:
    // the leader, elected through the store when it is shared (etcd), or
    // this one when the store is its own.
    let launch_timeout = Duration::from_secs(u64::from(args.launch_timeout));
    let launcher: Option<Arc<dyn berth_control::launcher::Launcher>> = match args.launcher.as_str()
    {
        "netns" => {
            let runtime: Arc<dyn berth_runtime::ContainerRuntime> = Arc::new(
                berth_runtime::docker::DockerRuntime::connect(None)
                    .await
                    .context("the netns launcher needs the Docker Engine its agents use")?,
            );
            Some(Arc::new(berth_launch::NetnsLauncher::new(
                std::env::current_exe().context("cannot find the berth binary")?,
                (addr.ip(), addr.port()),
                tls.is_some(),
                data_dir(&args)?.join("launched"),
                runtime,
                args.launched_agent_args
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
            )))
        }
        other => other.strip_prefix("exec:").map(|path| {
            Arc::new(berth_launch::ExecLauncher::new(
                PathBuf::from(path),
                advertise_url.clone(),
                launch_timeout,
            )) as Arc<dyn berth_control::launcher::Launcher>
        }),
    };
    let controllers = berth_control::controller::ControllerConfig {
        groups: Arc::new(berth_control::groups::GroupRuntime::new(
            launcher,
            launch_timeout,
        )),
        settle: Duration::from_secs_f64(args.service_settle),
        host_loss_grace: Duration::from_secs_f64(args.host_loss_grace),
        stopped_retention: Duration::from_secs_f64(args.stopped_task_retention),
        warm_addresses: usize::from(args.warm_addresses),
        managed_scale_in_after: Duration::from_secs(
            args.managed_scale_in_after
                .map_or(15 * args.target_tracking_period as u64, u64::from),
        ),
        ..Default::default()
    };
    let (ctl, keep) = (state.ctl.clone(), args.history_revisions);
    let lead = move |term: CancellationToken| {
        let (ctl, controllers) = (ctl.clone(), controllers.clone());
        async move {
            let compactor = tokio::spawn(compact_history(ctl.store.clone(), keep, term.clone()));
            berth_control::controller::run(ctl, controllers, term).await;
            compactor.await.ok();
        }
    };
    let leadership = if url.starts_with("etcd://") {
        let election = berth_control::leader::Election {
            id: format!("{addr} pid {}", std::process::id()),
            ttl: Duration::from_secs_f64(args.leader_lease),
        };
        tokio::spawn(berth_control::leader::run(
            state.ctl.clone(),
            election,
            shutdown.clone(),
            lead,
        ))
    } else {
        tokio::spawn(berth_control::leader::sole(
            state.ctl.clone(),
            shutdown.clone(),
            lead,
        ))
    };
    let lb = args.lb.then(|| {
        tokio::spawn(berth_lb::run(
            store.clone(),
            args.data_path.config(),
            shutdown.clone(),
        ))
    });
    let stop = shutdown.clone();
    let threads = args.http_threads.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    berth_apiserver::serve_tls(listener, app, threads, stop, tls).await?;
    shutdown.cancel();
    leadership.await.ok();
    if let Some(lb) = lb {
        lb.await.ok();
    }
    for a in local_agents {
        a.await.ok();
    }
    tracing::info!("stopped");
    Ok(())
}

/// A target tracking period: one CloudWatch alarms take.
fn parse_tracking_period(s: &str) -> Result<i32, String> {
    match s.parse::<i32>() {
        Ok(p @ (10 | 20 | 30 | 60)) => Ok(p),
        _ => Err(format!("{s}: one of 10, 20, 30 or 60 seconds")),
    }
}

fn agent_config(
    servers: &[String],
    cluster: &str,
    region: &str,
    data_dir: PathBuf,
    host: &HostArgs,
) -> anyhow::Result<berth_agent::AgentConfig> {
    let pull_behavior = host
        .image_pull_behavior
        .parse()
        .map_err(|e| anyhow::anyhow!("--image-pull-behavior: {e}"))?;
    Ok(berth_agent::AgentConfig {
        servers: servers.to_vec(),
        cluster: cluster.to_string(),
        region: region.to_string(),
        instance_id: host.instance_id.clone(),
        instance_type: host.instance_type.clone(),
        availability_zone: host.availability_zone.clone(),
        attributes: host
            .attributes
            .iter()
            .filter(|a| !a.is_empty())
            .map(|a| match a.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (a.clone(), None),
            })
            .chain([(
                berth_domain::instance::HOST_ADDRESS.to_string(),
                Some(host.host_address.to_string()),
            )])
            .collect(),
        reserved_memory_mib: host.reserved_memory,
        credentials: creds::client_credentials(),
        join_token: None,
        tls: None,
        reserved_ports: host.reserved_ports.clone(),
        data_dir,
        pull_behavior,
        endpoint_port: host.endpoint_port,
        stats_interval: Duration::from_secs(host.stats_interval),
        isolation: host.isolation(),
        vpc_address: host.vpc_address,
    })
}

fn agent(args: AgentArgs) -> anyhow::Result<()> {
    init_logs(&args.log, args.log_format)?;
    let data = given_or_default_dir(
        args.data_dir.as_ref(),
        "berth-agent",
        "BERTH_AGENT_DATA_DIR",
    )?;
    let cluster = match args.capacity {
        Capacity::Ec2 => args.cluster.as_str(),
        Capacity::Fargate => berth_domain::instance::FARGATE_POOL,
    };
    args.host
        .check_isolation(args.capacity == Capacity::Fargate)?;
    let mut config = agent_config(&args.servers, cluster, &args.region, data, &args.host)?;
    config.join_token = args.token.clone();
    if let Some(ca) = &args.ca {
        config.tls = Some(berth_tls::client_config(Some(ca))?);
    }
    // One thread: the agent waits on the engine and the server, and a
    // small footprint matters more than parallelism.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let runtime = berth_runtime::docker::DockerRuntime::connect(Some(&args.host.docker_socket))
            .await
            .with_context(|| format!("no Docker Engine on {}", args.host.docker_socket))?;
        let shutdown = cancel_on_signal("agent stopping; its containers keep running");
        berth_agent::run(config, Arc::new(runtime), shutdown)
            .await
            .map_err(anyhow::Error::from)
    })
}

fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ecs = berth_agent::EcsClient::new(&args.server, &args.region)
        .with_credentials(creds::client_credentials());
    rt.block_on(berth_agent::logs::print(
        &ecs,
        &args.server,
        &args.cluster,
        &args.task,
        args.follow,
    ))
    .map_err(|e| anyhow::anyhow!(e))
}

/// A token cancelled at SIGINT or SIGTERM, logging `message` then.
fn cancel_on_signal(message: &'static str) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("{message}");
        signal.cancel();
    });
    shutdown
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Keeps the watch history bounded: compacts everything older than the
/// newest `keep` revisions, once a minute.
async fn compact_history(store: Arc<dyn Store>, keep: i64, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.current_revision().await {
            Ok(rev) if rev > keep => {
                if let Err(e) = store.compact(rev - keep).await {
                    tracing::warn!(error = %e, "history compaction failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the store revision"),
        }
    }
}
