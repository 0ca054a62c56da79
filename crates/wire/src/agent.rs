//! Berth's own agent protocol: the messages on the WebSocket an agent holds
//! to the server's gateway (`GET /agent/v1/connect`), as JSON text frames.
//! See docs/adr/0003-agent-protocol.md.
//!
//! The agent says hello, then sends a heartbeat at the interval the server
//! asks for. The server answers the hello with a welcome and pushes the
//! whole desired task set of the instance, with a revision, whenever it
//! changes. The agent converges to it and reports each task's whole state
//! whenever it changes (level-based: the last report wins, so a report can
//! be sent again after a reconnect without harm). A task leaves the desired
//! set once the server has recorded it STOPPED; the agent then removes its
//! containers. Missing heartbeats for the server's timeout marks the agent
//! disconnected.

use crate::ecs as w;
use serde::{Deserialize, Serialize};

/// How much either end of the connection reads from its socket at a time.
/// The WebSocket library's default, 128 KiB, is zeroed before every read:
/// with a thousand agents sending small messages, the server spent a
/// quarter of its time clearing buffers, and held 128 MiB of them. Larger
/// messages (a whole desired set) still arrive, in several reads.
pub const SOCKET_READ_BUFFER: usize = 8 * 1024;

/// A task's `lastStatus`, in lifecycle order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    #[default]
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 8] = [
        TaskStatus::Provisioning,
        TaskStatus::Pending,
        TaskStatus::Activating,
        TaskStatus::Running,
        TaskStatus::Deactivating,
        TaskStatus::Stopping,
        TaskStatus::Deprovisioning,
        TaskStatus::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Activating => "ACTIVATING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Deactivating => "DEACTIVATING",
            TaskStatus::Stopping => "STOPPING",
            TaskStatus::Deprovisioning => "DEPROVISIONING",
            TaskStatus::Stopped => "STOPPED",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether a task may move from `self` to `next`: only forwards, and
    /// to STOPPED from anywhere (a failed pull skips the running states).
    pub fn can_become(self, next: TaskStatus) -> bool {
        next >= self
    }

    /// Not yet RUNNING: what `pendingTasksCount` counts.
    pub fn is_pending(self) -> bool {
        self < TaskStatus::Running
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesiredStatus {
    Running,
    Stopped,
}

impl DesiredStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredStatus::Running => "RUNNING",
            DesiredStatus::Stopped => "STOPPED",
        }
    }
}

/// Why a task stopped (`stopCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopCode {
    TaskFailedToStart,
    EssentialContainerExited,
    UserInitiated,
    ServiceSchedulerInitiated,
    TerminationNotice,
}

impl StopCode {
    pub fn as_str(self) -> &'static str {
        match self {
            StopCode::TaskFailedToStart => "TaskFailedToStart",
            StopCode::EssentialContainerExited => "EssentialContainerExited",
            StopCode::UserInitiated => "UserInitiated",
            StopCode::ServiceSchedulerInitiated => "ServiceSchedulerInitiated",
            StopCode::TerminationNotice => "TerminationNotice",
        }
    }
}

/// A container's `lastStatus` as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerStatus {
    #[default]
    Pending,
    Running,
    Stopped,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Pending => "PENDING",
            ContainerStatus::Running => "RUNNING",
            ContainerStatus::Stopped => "STOPPED",
        }
    }
}

/// A container's or a task's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
    Unknown,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Unhealthy => "UNHEALTHY",
            HealthStatus::Unknown => "UNKNOWN",
        }
    }
}

/// Path of the gateway on the API port.
pub const CONNECT_PATH: &str = "/agent/v1/connect";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AgentMessage {
    /// The first message on a connection.
    #[serde(rename_all = "camelCase")]
    Hello {
        cluster: String,
        container_instance_arn: String,
        agent_version: String,
    },
    Heartbeat,
    /// The whole observed state of one task.
    TaskState(TaskReport),
    /// Output of the task logs the server asked for with `request`: lines
    /// prefixed with their container's name, as text (bytes that are not
    /// UTF-8 are replaced); `end` says there is no more.
    #[serde(rename_all = "camelCase")]
    Logs {
        request: u64,
        data: String,
        #[serde(default)]
        end: bool,
    },
    /// The values of a task's `secrets`, which the server fetches with the
    /// task's execution role when the agent starts the task; answered by
    /// `ServerMessage::Secrets` with the same `request`.
    #[serde(rename_all = "camelCase")]
    Secrets {
        request: u64,
        task_arn: String,
    },
    /// Temporary credentials of a task's role (`taskRoleArn`), for its
    /// containers' credentials endpoint; asked for when the task starts and
    /// again before they expire. Answered by `ServerMessage::Credentials`.
    #[serde(rename_all = "camelCase")]
    Credentials {
        request: u64,
        task_arn: String,
        /// The execution role's instead (`executionRoleArn`), which the
        /// agent ships the task's awslogs output with.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        execution: bool,
    },
    /// The running tasks' use of CPU, memory and network, sampled every
    /// `--stats-interval`: what CloudWatch's AWS/ECS and Container Insights
    /// metrics are made of.
    #[serde(rename_all = "camelCase")]
    Usage {
        /// When the round was sampled, epoch seconds.
        at: f64,
        tasks: Vec<TaskUsage>,
    },
}

/// One task's use since its previous sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskUsage {
    pub task_arn: String,
    /// CPU units (1,024 a core) used on average over the interval.
    pub cpu_units: f64,
    /// Memory in use now, MiB (without the page cache).
    pub memory_mib: f64,
    /// Bytes received and sent over the interval, when the task's
    /// containers have interfaces of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<(u64, u64)>,
    /// The interval, seconds.
    pub seconds: f64,
}

/// A task role's temporary credentials, as the credentials endpoint hands
/// them to the task's containers.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleCredentials {
    pub role_arn: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Seconds since the epoch.
    pub expiration: i64,
}

/// The secret and the token stay out of logs and debug output.
impl std::fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RoleCredentials({}, {}, expires {})",
            self.role_arn, self.access_key_id, self.expiration
        )
    }
}

/// One secret as a container gets it: the variable and its value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretValue {
    pub container: String,
    pub name: String,
    pub value: String,
    #[serde(default, rename = "use")]
    pub used_as: SecretUse,
}

/// What a container does with a secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SecretUse {
    /// An environment variable (`secrets`).
    #[default]
    Env,
    /// An option of the container's log driver (`secretOptions`).
    LogOption,
    /// The credentials its image is pulled with (`repositoryCredentials`):
    /// the value is `{"username":...,"password":...}`.
    RegistryAuth,
}

/// Values stay out of logs and debug output.
impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue({}/{})", self.container, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    #[serde(rename_all = "camelCase")]
    Welcome {
        /// How often the agent must send a heartbeat.
        heartbeat_interval_ms: u64,
        /// Silence longer than this and the agent counts as disconnected.
        timeout_ms: u64,
    },
    /// Everything that should run on the instance, as of `revision`.
    #[serde(rename_all = "camelCase")]
    Desired {
        revision: i64,
        tasks: Vec<DesiredTask>,
        /// Addresses held warm for this host: it keeps a namespace ready
        /// at each, for the next awsvpc tasks placed here to take.
        #[serde(default)]
        warm: Vec<DesiredNetwork>,
        /// Where the awsvpc tasks on other hosts are (docs/adr/0007):
        /// the host routes them through its VPC tunnel. Whole pushes carry
        /// them, as they change only when addresses are taken or freed;
        /// None from a server without VPC routes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        routes: Option<Vec<VpcRoute>>,
    },
    /// What changed in the desired set since the last message, as of
    /// `revision`: tasks added or changed, and the ARNs of tasks that left
    /// it. The server sends the whole set on connecting and when what every
    /// task depends on changes (security group members, warm addresses);
    /// this otherwise, so that a push costs what changed, not what runs.
    #[serde(rename_all = "camelCase")]
    DesiredChanges {
        revision: i64,
        tasks: Vec<DesiredTask>,
        removed: Vec<String>,
        /// The host's warm addresses, all of them: a task placed at one
        /// takes it, and an agent still holding it as warm would make a
        /// second namespace at the task's address.
        #[serde(default)]
        warm: Vec<DesiredNetwork>,
    },
    /// The server ends the connection; `message` says why.
    Refused { message: String },
    /// A task's logs, asked for on the agent's own connection (the server
    /// never connects to an agent): what there is, and with `follow` what
    /// comes, until `LogsDone` or the task's logs end.
    #[serde(rename_all = "camelCase")]
    Logs {
        request: u64,
        task_id: String,
        #[serde(default)]
        follow: bool,
    },
    /// Whoever asked for `request` has gone: stop sending it.
    LogsDone { request: u64 },
    /// A task's secrets, or why they cannot be had (the task's stopped
    /// reason, in ECS's words).
    #[serde(rename_all = "camelCase")]
    Secrets {
        request: u64,
        #[serde(default)]
        values: Vec<SecretValue>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A task role's credentials, or why there are none.
    #[serde(rename_all = "camelCase")]
    Credentials {
        request: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials: Option<RoleCredentials>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// One task the instance should run, or stop.
/// Where Fargate hosts register: a pool kept like a cluster, under a name
/// no user can give a cluster (ECS names are `[A-Za-z0-9_-]`), so no
/// container-instance API ever reaches its hosts.
pub const FARGATE_POOL: &str = "berth.fargate";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredTask {
    pub task_arn: String,
    pub cluster: String,
    pub desired_status: DesiredStatus,
    /// The task definition with the task's overrides applied: what to run.
    /// Task-level `cpu` and `memory`, when set, are plain numbers of CPU
    /// units and MiB.
    pub definition: w::TaskDefinition,
    /// Container name to container ARN, in definition order.
    pub container_arns: Vec<(String, String)>,
    /// Why the server wants it stopped, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<StopCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// awsvpc: the task's own network namespace, at this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<DesiredNetwork>,
    /// `EC2`, `EXTERNAL` or `FARGATE`; a FARGATE task runs hardened.
    #[serde(default = "ec2")]
    pub launch_type: String,
    /// The service that started it, for its task metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

fn ec2() -> String {
    "EC2".into()
}

/// Where an awsvpc task's interface lives: a bridge network for its
/// subnet (`name`, made on first use) and the task's address on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredNetwork {
    pub name: String,
    pub subnet_id: String,
    pub cidr: String,
    pub gateway: String,
    pub ip: String,
    /// What its security groups let in, source groups resolved to their
    /// members' addresses; everything else is dropped.
    #[serde(default)]
    pub ingress: Vec<AllowedIngress>,
    /// What its security groups let out (`source` is then the
    /// destination); None from a server that sends no egress rules, and
    /// then everything may go out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<AllowedIngress>>,
}

/// An awsvpc task on another host, as this host reaches it: its address,
/// through the VXLAN tunnel to that host's VPC address and device MAC.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpcRoute {
    pub ip: String,
    pub host: String,
    pub mac: String,
}

/// The container instance attributes a host reports its VPC tunnel with.
pub const VPC_ADDRESS_ATTRIBUTE: &str = "berth.vpc-address";
pub const VPC_MAC_ATTRIBUTE: &str = "berth.vpc-mac";

/// One kind of traffic a task's interface lets in (or, in `egress`, out).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedIngress {
    /// `tcp`, `udp`, `icmp` (ports are then the type and the code, 65535
    /// for any), `-1` for all, or a protocol number.
    pub protocol: String,
    pub from_port: u16,
    pub to_port: u16,
    /// A CIDR block.
    pub source: String,
}

/// What an agent observed of one task. Timestamps are epoch seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReport {
    pub task_arn: String,
    pub last_status: TaskStatus,
    #[serde(default)]
    pub containers: Vec<ContainerReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f64>,
    /// Set when the agent decided the stop (an essential container exited,
    /// an image could not be pulled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<StopCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    /// awsvpc: the MAC address the task's interface got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// What keeps the task apart from others on its host: `gvisor` (a
    /// kernel of its own) or `container` (the host's kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// The runtime id of the container whose cgroup holds everything the
    /// task runs (its sandbox, on a kernel of its own): what its usage is
    /// read from, since its containers' own cgroups do not hold their
    /// processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerReport {
    pub name: String,
    /// The runtime's container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    /// PENDING, RUNNING or STOPPED.
    pub last_status: ContainerStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub network_bindings: Vec<w::NetworkBinding>,
    /// HEALTHY, UNHEALTHY or UNKNOWN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json() {
        let hello = AgentMessage::Hello {
            cluster: "c".into(),
            container_instance_arn: "arn".into(),
            agent_version: "0.1.0".into(),
        };
        let text = serde_json::to_string(&hello).expect("encode");
        assert_eq!(
            text,
            r#"{"type":"hello","cluster":"c","containerInstanceArn":"arn","agentVersion":"0.1.0"}"#
        );
        assert_eq!(
            serde_json::from_str::<AgentMessage>(&text).ok(),
            Some(hello)
        );
        assert_eq!(
            serde_json::to_string(&AgentMessage::Heartbeat).expect("encode"),
            r#"{"type":"heartbeat"}"#
        );
        let desired: ServerMessage =
            serde_json::from_str(r#"{"type":"desired","revision":7,"tasks":[]}"#).expect("decode");
        assert_eq!(
            desired,
            ServerMessage::Desired {
                revision: 7,
                tasks: vec![],
                warm: vec![],
                routes: None,
            }
        );
        let report = AgentMessage::TaskState(TaskReport {
            task_arn: "t".into(),
            last_status: TaskStatus::Running,
            ..Default::default()
        });
        let text = serde_json::to_string(&report).expect("encode");
        assert_eq!(
            text,
            r#"{"type":"taskState","taskArn":"t","lastStatus":"RUNNING","containers":[]}"#
        );
        assert_eq!(
            serde_json::from_str::<AgentMessage>(&text).ok(),
            Some(report)
        );
    }
}
