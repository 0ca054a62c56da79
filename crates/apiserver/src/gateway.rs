//! The agent gateway: each agent holds one WebSocket here
//! (`berth_wire::agent`). While its heartbeats keep coming, a key under a
//! lease says the agent is connected; when they stop, the lease runs out
//! and the key goes, so `agentConnected` turns false without anyone having
//! to notice the silence.

use crate::hub::Route;
use crate::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_domain::instance::{ContainerInstance, FARGATE_POOL};
use berth_domain::network::WarmAddress;
use berth_domain::task::{ObservedTask, Task, TaskStatus};
use berth_domain::taskdef::{parse_cpu, parse_memory};
use berth_domain::{arn, Scope};
use berth_store::keys::{ElbKeys, Keys};
use berth_store::{typed, Op, RangeRequest, Txn};
use berth_wire::agent::{AgentMessage, DesiredNetwork, DesiredTask, ServerMessage, TaskReport};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// The observed record of a connected agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AgentConnection {
    pub connected_at: f64,
    pub agent_version: String,
    /// The URL of the server that holds the connection (its
    /// `--advertise-url`), where other servers send requests for the
    /// agent's logs. Written by that server, never by the agent.
    #[serde(default)]
    pub server: Option<String>,
}

/// A request for a task's logs, for the session that holds its agent's
/// connection: each chunk of output goes to `out`, which closes when the
/// output ends.
pub(crate) struct LogAsk {
    pub task_id: String,
    pub follow: bool,
    pub out: tokio::sync::mpsc::UnboundedSender<String>,
}

/// A session's link: its number and where its log requests go.
type Link = (u64, tokio::sync::mpsc::UnboundedSender<LogAsk>);

/// The agents connected to this server, by cluster and instance id: where
/// requests for their logs go.
#[derive(Default)]
pub(crate) struct Links {
    held: parking_lot::Mutex<HashMap<(String, String), Link>>,
    next: std::sync::atomic::AtomicU64,
}

impl Links {
    /// A session takes the instance's link (a newer connection of the same
    /// agent replaces an older one's).
    fn attach(
        &self,
        cluster: &str,
        instance: &str,
    ) -> (u64, tokio::sync::mpsc::UnboundedReceiver<LogAsk>) {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.held
            .lock()
            .insert((cluster.to_string(), instance.to_string()), (id, tx));
        (id, rx)
    }

    /// The session `id` ends: its link goes, unless a newer one took it.
    fn detach(&self, cluster: &str, instance: &str, id: u64) {
        let mut held = self.held.lock();
        let key = (cluster.to_string(), instance.to_string());
        if held.get(&key).is_some_and(|(own, _)| *own == id) {
            held.remove(&key);
        }
    }

    /// Hands `ask` to the instance's session on this server; gives it back
    /// when the agent is not connected here.
    pub(crate) fn ask(&self, cluster: &str, instance: &str, ask: LogAsk) -> Result<(), LogAsk> {
        let held = self.held.lock();
        match held.get(&(cluster.to_string(), instance.to_string())) {
            Some((_, tx)) => tx.send(ask).map_err(|e| e.0),
            None => Err(ask),
        }
    }
}

pub(crate) async fn connect(
    State(st): State<AppState>,
    req: crate::auth::OwnRequest,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Who is asking comes first: a stranger learns nothing, not even
    // whether it spoke WebSocket correctly.
    let ctx = match crate::auth::own_route(&st, &req, "ecs:Poll").await {
        Ok(ctx) => ctx,
        Err(refused) => return refused,
    };
    // With authentication on, only a joined host's own credentials open a
    // connection, and it carries that host and no other.
    let bound = match ctx.caller.as_ref().map(|c| &c.principal) {
        None => None,
        Some(berth_iam::Principal::Instance {
            cluster, instance, ..
        }) => Some((cluster.clone(), instance.clone())),
        Some(other) => {
            return (
                axum::http::StatusCode::FORBIDDEN,
                [("content-type", berth_wire::json::CONTENT_TYPE)],
                berth_wire::json::encode_error(
                    "AccessDeniedException",
                    &format!(
                        "User: {} is not a container instance: the gateway takes only agents \
                         signing with the credentials they got when they joined",
                        other.arn()
                    ),
                ),
            )
                .into_response()
        }
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let ws = ws.read_buffer_size(berth_wire::agent::SOCKET_READ_BUFFER);
    ws.on_upgrade(move |socket| async move {
        let mut socket = socket;
        if let Err(why) = session(&st, &ctx.scope, bound, &mut socket).await {
            tracing::info!(reason = %why, "agent connection ended");
            let refused = ServerMessage::Refused { message: why };
            let _ = socket.send(text(&refused)).await;
        }
    })
}

fn text(m: &ServerMessage) -> Message {
    Message::Text(serde_json::to_string(m).unwrap_or_default().into())
}

/// Waits for the agent's next message, or None on close or silence.
async fn next(socket: &mut WebSocket, within: Duration) -> Result<Option<AgentMessage>, String> {
    loop {
        let frame = match tokio::time::timeout(within, socket.recv()).await {
            Err(_) => return Err(format!("no heartbeat for {within:?}")),
            Ok(None) | Ok(Some(Err(_))) => return Ok(None),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame {
            Message::Text(t) => {
                return serde_json::from_str(t.as_str())
                    .map(Some)
                    .map_err(|e| format!("bad message from the agent: {e}"))
            }
            Message::Close(_) => return Ok(None),
            // Pings are answered by the WebSocket layer.
            _ => continue,
        }
    }
}

/// Which instance `arn` names, if it is a live instance of `cluster` and,
/// when the connection is `bound` to a host, that host's.
async fn instance(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    arn: &str,
    bound: Option<(String, String)>,
) -> Result<(String, String), String> {
    let unknown = || format!("container instance {arn} is not registered in cluster {cluster}");
    let name = arn::cluster_name(scope, Some(cluster)).ok_or_else(unknown)?;
    let id = arn::container_instance_id(scope, &name, arn).ok_or_else(unknown)?;
    let found = typed::get::<ContainerInstance>(&*st.store, &scope.instance(&name, &id))
        .await
        .map_err(|e| e.to_string())?;
    let found = found.ok_or_else(unknown)?;
    if let Some((own_cluster, host)) = bound {
        if own_cluster != name || found.value.ec2_instance_id != host {
            return Err(format!(
                "the connection's credentials are those of host {host} in {own_cluster}, not of container instance {arn}"
            ));
        }
    }
    Ok((name, id))
}

/// The desired set of an instance: every task placed on it that the
/// server has not yet recorded STOPPED.
/// What one push needs of the account's awsvpc address holders: read at
/// most once, and only when a task's rules or the host's tunnel routes
/// need them.
#[derive(Default)]
struct Holders {
    held: Option<Vec<(String, Task)>>,
    /// Security group -> member addresses.
    members: Option<HashMap<String, Vec<std::net::Ipv4Addr>>>,
}

impl Holders {
    async fn held(&mut self, st: &AppState, scope: &Scope) -> Result<&[(String, Task)], String> {
        if self.held.is_none() {
            let held = berth_control::network::interfaces(&st.ctl, scope)
                .await
                .map_err(|e| e.to_string())?;
            self.held = Some(held);
        }
        Ok(self.held.as_deref().unwrap_or_default())
    }

    async fn members(
        &mut self,
        st: &AppState,
        scope: &Scope,
    ) -> Result<&HashMap<String, Vec<std::net::Ipv4Addr>>, String> {
        if self.members.is_none() {
            let held = self.held(st, scope).await?;
            let members = berth_control::network::members_of(&st.ctl, scope, held)
                .await
                .map_err(|e| e.to_string())?;
            self.members = Some(members);
        }
        Ok(self.members.get_or_insert_with(HashMap::new))
    }
}

/// The instance's whole desired set, and the warm addresses it carries
/// (kept for the pushes of changes that follow).
async fn desired(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    instance: &str,
) -> Result<(ServerMessage, Vec<DesiredNetwork>), String> {
    let prefix = scope.instance_tasks_of(cluster, instance);
    let listed = st
        .store
        .range(RangeRequest::prefix(prefix.as_str()))
        .await
        .map_err(|e| e.to_string())?;
    let mut tasks = vec![];
    let mut holders = Holders::default();
    for kv in &listed.kvs {
        let Some(entry) = kv.key.strip_prefix(&prefix) else {
            continue;
        };
        if let Some(t) = desired_task(st, scope, cluster, entry, &mut holders, true).await? {
            tasks.push(t);
        }
    }
    let warm = warm_addresses(st, scope, cluster, instance).await?;
    let tunnel = berth_control::network::tunnel_address(&st.ctl, scope, cluster, instance)
        .await
        .map_err(|e| e.to_string())?;
    let routes = match tunnel {
        Some(own) => {
            let held = holders.held(st, scope).await?;
            let routes = berth_control::network::routes_from(&st.ctl, scope, &own, held)
                .await
                .map_err(|e| e.to_string())?;
            Some(routes)
        }
        None => None,
    };
    let message = ServerMessage::Desired {
        revision: listed.revision,
        tasks,
        warm: warm.clone(),
        routes,
    };
    Ok((message, warm))
}

/// The addresses held warm for the instance, as the agent needs them.
async fn warm_addresses(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    instance: &str,
) -> Result<Vec<DesiredNetwork>, String> {
    let network = st.ctl.networks.current();
    Ok(
        typed::list::<WarmAddress>(&*st.store, &scope.warm_ips_of(cluster, instance))
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|(_, w)| {
                // Only while its subnet is still there.
                let subnet = network.subnet(&w.value.subnet_id)?;
                Some(desired_network(
                    &network.namespace,
                    &subnet.id,
                    &subnet.cidr,
                    &w.value.ip,
                    vec![],
                    Some(vec![]),
                ))
            })
            .collect(),
    )
}

/// What changed for the agent when only entries of its task index did:
/// each changed entry read again, the ones gone removed. The warm
/// addresses are the last whole set's: a change to them makes the next
/// push whole.
async fn desired_changes(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    entries: &[(String, bool)],
    revision: i64,
    warm: Vec<DesiredNetwork>,
) -> Result<ServerMessage, String> {
    let (mut tasks, mut removed) = (vec![], vec![]);
    let mut holders = Holders::default();
    for (entry, put) in entries {
        // An entry is put only for a task that has not reported STOPPED
        // (placement, or a stop request, which compares the report), and
        // the report that says STOPPED deletes it in the same write.
        let task = match put {
            true => desired_task(st, scope, cluster, entry, &mut holders, false).await?,
            false => None,
        };
        match task {
            Some(t) => tasks.push(t),
            None => {
                let (c, id) = entry.split_once('/').unwrap_or((cluster, entry));
                removed.push(scope.task_arn(c, id));
            }
        }
    }
    Ok(ServerMessage::DesiredChanges {
        revision,
        tasks,
        removed,
        warm,
    })
}

/// One entry of an instance's task index as the agent gets it; None when
/// it is not to run there (its record is gone, or, when `check_report`,
/// it reported STOPPED).
async fn desired_task(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    entry: &str,
    holders: &mut Holders,
    check_report: bool,
) -> Result<Option<DesiredTask>, String> {
    // The Fargate pool's entries name the task's cluster too.
    let (cluster, id) = entry.split_once('/').unwrap_or((cluster, entry));
    let Some(t) = typed::get::<Task>(&*st.store, &scope.task(cluster, id))
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    if check_report {
        let report = typed::get::<ObservedTask>(&*st.store, &scope.task_state(cluster, id))
            .await
            .map_err(|e| e.to_string())?;
        // Stores written before STOPPED tasks left the index still hold
        // some there; pushing one would start it again.
        if Task::last_status(report.as_ref().map(|r| &r.value)) == TaskStatus::Stopped {
            return Ok(None);
        }
    }
    let t = t.value;
    let network = match &t.network {
        Some(n) => {
            let m = holders.members(st, scope).await?;
            let network = st.ctl.networks.current();
            let ingress = network.ingress_of(&n.security_groups, m);
            let egress = network.egress_of(&n.security_groups, m);
            Some(desired_network(
                &network.namespace,
                &n.subnet_id,
                &n.cidr,
                &n.ip,
                ingress,
                Some(egress),
            ))
        }
        None => None,
    };
    let mut desired = DesiredTask {
        task_arn: t.arn(scope),
        cluster: cluster.to_string(),
        desired_status: t.desired_status,
        container_arns: t
            .containers
            .iter()
            .map(|(name, uuid)| (name.clone(), t.container_arn(scope, uuid)))
            .collect(),
        stop_code: t.stop.as_ref().map(|s| s.code),
        stopped_reason: t.stop.as_ref().map(|s| s.reason.clone()),
        availability_zone: t.availability_zone.clone(),
        launch_type: t.launch_type.clone(),
        service_name: t.service.clone(),
        network,
        definition: t.definition,
    };
    // The agent gets task cpu and memory in units and MiB, however an
    // override spelt them ("1 vCPU", "2 GB"); only the domain parses them.
    let def = &mut desired.definition;
    def.cpu = def
        .cpu
        .as_deref()
        .and_then(parse_cpu)
        .map(|c| c.to_string());
    def.memory = def
        .memory
        .as_deref()
        .and_then(parse_memory)
        .map(|m| m.to_string());
    Ok(Some(desired))
}

/// A task placed on this instance, with its cluster, id, and its entry in
/// the instance's index (the key and its revision); an agent may ask only
/// about its own tasks.
struct Placed {
    task: Task,
    cluster: String,
    id: String,
    entry: (String, i64),
}

async fn placed_task(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    instance: &str,
    task_arn: &str,
) -> Result<Placed, String> {
    let not_here = || format!("task {task_arn} is not placed on this instance");
    let tail = task_arn
        .strip_prefix(&format!(
            "arn:aws:ecs:{}:{}:task/",
            scope.region, scope.account
        ))
        .ok_or_else(not_here)?;
    let (task_cluster, task_id) = tail.split_once('/').ok_or_else(not_here)?;
    let entry = if cluster == FARGATE_POOL {
        format!("{task_cluster}/{task_id}")
    } else if task_cluster == cluster {
        task_id.to_string()
    } else {
        return Err(not_here());
    };
    let entry = scope.instance_task(cluster, instance, &entry);
    let placed = st
        .store
        .get(&entry)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(not_here)?;
    let task = typed::get::<Task>(&*st.store, &scope.task(task_cluster, task_id))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(not_here)?
        .value;
    Ok(Placed {
        task,
        cluster: task_cluster.to_string(),
        id: task_id.to_string(),
        entry: (entry, placed.mod_revision),
    })
}

/// What an agent sampled of its tasks' use, as CloudWatch metrics: only
/// tasks placed on that instance count.
async fn record_usage(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    instance: &str,
    at: f64,
    tasks: Vec<berth_wire::agent::TaskUsage>,
) {
    use berth_domain::usage_metrics as um;
    let at = at.floor() as i64;
    let mut data = vec![];
    let mut host = um::HostUse {
        cluster: cluster.to_string(),
        registered_cpu: 0.0,
        registered_memory: 0.0,
        reserved_cpu: 0.0,
        reserved_memory: 0.0,
        used_cpu: 0.0,
        used_memory: 0.0,
    };
    for u in tasks {
        let Ok(placed) = placed_task(st, scope, cluster, instance, &u.task_arn).await else {
            continue;
        };
        let t = &placed.task;
        let facts = um::TaskFacts {
            cluster: placed.cluster.clone(),
            service: t.service.clone(),
            family: t.family.clone(),
            task_id: placed.id.clone(),
            cpu: t.reservation.cpu as f64,
            memory: t.reservation.memory as f64,
        };
        let used = um::Used {
            cpu_units: u.cpu_units,
            memory_mib: u.memory_mib,
            network: u.network,
            seconds: u.seconds,
        };
        host.reserved_cpu += facts.cpu;
        host.reserved_memory += facts.memory;
        host.used_cpu += u.cpu_units;
        host.used_memory += u.memory_mib;
        data.extend(
            um::task_datapoints(&facts, &used, at)
                .into_iter()
                .map(|(ns, d)| berth_control::cloudwatch::stored(ns, d)),
        );
    }
    // A cluster's own metrics count its EC2 hosts, not Fargate's pool.
    if cluster != FARGATE_POOL && !data.is_empty() {
        if let Ok(Some(ci)) = typed::get::<berth_domain::instance::ContainerInstance>(
            &*st.store,
            &scope.instance(cluster, instance),
        )
        .await
        {
            host.registered_cpu = f64::from(ci.value.cpu());
            host.registered_memory = f64::from(ci.value.memory());
            data.extend(
                um::host_datapoints(&host, at)
                    .into_iter()
                    .map(|d| berth_control::cloudwatch::stored(um::ECS, d)),
            );
        }
    }
    berth_control::cloudwatch::publish(st, scope, data).await;
}

/// Credentials of the role of a task placed on this instance.
async fn task_credentials(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    instance: &str,
    task_arn: &str,
    execution: bool,
) -> Result<berth_wire::agent::RoleCredentials, String> {
    let placed = placed_task(st, scope, cluster, instance, task_arn).await?;
    let issued = if execution {
        let role = placed
            .task
            .definition
            .execution_role_arn
            .as_deref()
            .ok_or_else(|| format!("task {task_arn} has no executionRoleArn"))?;
        // An hour, renewed halfway: enough for the last lines of a task
        // that stopped, no longer.
        berth_control::task_role::issue_execution(&st.ctl, scope, &placed.id, role, 3600).await?
    } else {
        task_role_credentials(st, scope, &placed, task_arn).await?
    };
    Ok(berth_wire::agent::RoleCredentials {
        role_arn: issued.role_arn,
        access_key_id: issued.access_key_id,
        secret_access_key: issued.secret_access_key,
        session_token: issued.session_token,
        expiration: issued.expires as i64,
    })
}

async fn task_role_credentials(
    st: &AppState,
    scope: &Scope,
    placed: &Placed,
    task_arn: &str,
) -> Result<berth_control::task_role::Issued, String> {
    let role = placed
        .task
        .definition
        .task_role_arn
        .as_deref()
        .ok_or_else(|| format!("task {task_arn} has no taskRoleArn"))?;
    berth_control::task_role::issue(
        &st.ctl,
        scope,
        &placed.cluster,
        &placed.id,
        role,
        u32::try_from(st.config.task_credentials_lifetime.as_secs()).unwrap_or(u32::MAX),
        (&placed.entry.0, placed.entry.1),
    )
    .await
}

/// The secrets of a task placed on this instance, fetched with its
/// execution role; an agent gets no other task's.
async fn task_secrets(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    instance: &str,
    task_arn: &str,
) -> Result<Vec<berth_wire::agent::SecretValue>, String> {
    let Placed { task, id, .. } = placed_task(st, scope, cluster, instance, task_arn).await?;
    let task_id = id.as_str();
    let def = &task.definition;
    let wanted: Vec<berth_control::task_secrets::Wanted> = def
        .container_definitions
        .iter()
        .flatten()
        .flat_map(|c| {
            let container = c.name.clone().unwrap_or_default();
            use berth_wire::agent::SecretUse;
            let env = c
                .secrets
                .iter()
                .flatten()
                .map(|s| (s.name.clone(), s.value_from.clone(), SecretUse::Env));
            let log = c
                .log_configuration
                .iter()
                .flat_map(|l| l.secret_options.iter().flatten())
                .map(|s| (s.name.clone(), s.value_from.clone(), SecretUse::LogOption));
            let registry = c.repository_credentials.iter().map(|r| {
                (
                    None,
                    r.credentials_parameter.clone(),
                    SecretUse::RegistryAuth,
                )
            });
            env.chain(log)
                .chain(registry)
                .map(
                    move |(name, value_from, used_as)| berth_control::task_secrets::Wanted {
                        container: container.clone(),
                        name: name.unwrap_or_default(),
                        value_from: value_from.unwrap_or_default(),
                        used_as,
                    },
                )
        })
        .collect();
    let resolved = berth_control::task_secrets::resolve(
        &st.ctl,
        scope,
        def.execution_role_arn.as_deref(),
        task_id,
        &wanted,
        st.now(),
    )
    .await?;
    Ok(resolved
        .into_iter()
        .map(|(w, value)| berth_wire::agent::SecretValue {
            container: w.container,
            name: w.name,
            value,
            used_as: w.used_as,
        })
        .collect())
}

/// An address on a subnet as the agent needs it: the host's bridge
/// network for the subnet (the host takes the subnet's first address).
fn desired_network(
    namespace: &str,
    subnet: &str,
    cidr: &str,
    ip: &str,
    ingress: Vec<berth_wire::agent::AllowedIngress>,
    egress: Option<Vec<berth_wire::agent::AllowedIngress>>,
) -> DesiredNetwork {
    DesiredNetwork {
        name: berth_domain::network::bridge_name(namespace, subnet),
        subnet_id: subnet.to_string(),
        cidr: cidr.to_string(),
        gateway: berth_domain::network::Cidr::parse(cidr)
            .map(|c| c.gateway().to_string())
            .unwrap_or_default(),
        ip: ip.to_string(),
        ingress,
        egress,
    }
}

/// Records what the agent observed of one of its tasks. Reports for tasks
/// that are not on this instance are dropped, and a STOPPED task never
/// comes back to life.
async fn record(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    instance: &str,
    report: TaskReport,
) -> Result<(), String> {
    // Kept as the server's own record of what was observed.
    let report = ObservedTask::from(report);
    // A Fargate host reports tasks of every cluster.
    let (cluster, id, index) = if cluster == FARGATE_POOL {
        let Some((c, id)) = arn::task_cluster_and_id(scope, &report.task_arn) else {
            return Ok(());
        };
        let index = scope.instance_task(FARGATE_POOL, instance, &format!("{c}/{id}"));
        (c, id, index)
    } else {
        let Some(id) = arn::task_id(scope, cluster, &report.task_arn) else {
            return Ok(());
        };
        let index = scope.instance_task(cluster, instance, &id);
        (cluster.to_string(), id, index)
    };
    let cluster = cluster.as_str();
    let placed = st.store.get(&index).await.map_err(|e| e.to_string())?;
    if placed.is_none() {
        tracing::debug!(task = %id, "report for a task not on this instance dropped");
        return Ok(());
    }
    let next = report.last_status;
    let key = scope.task_state(cluster, &id);
    let current = typed::get::<ObservedTask>(&*st.store, &key)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(c) = &current {
        if !Task::last_status(Some(&c.value)).can_become(next) {
            return Ok(());
        }
        if c.value == report {
            return Ok(());
        }
    }
    let mut ops = vec![typed::put(&key, &report)];
    if next == TaskStatus::Stopped {
        // A STOPPED task leaves its instance's desired set for good; taking
        // it out of the index keeps every later push as small as what runs,
        // and the watch on the index pushes the set without it, which tells
        // the agent it may remove the task's containers.
        ops.push(Op::delete(index));
        let task = typed::get::<Task>(&*st.store, &scope.task(cluster, &id))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(t) = task {
            // What it ran is metered for good; its address goes back to
            // the subnet.
            ops.push(typed::put(
                &scope.usage(cluster, &id),
                &t.value.usage(Some(&report)),
            ));
            if let Some(n) = &t.value.network {
                ops.push(Op::delete(scope.subnet_ip(&n.subnet_id, &n.ip)));
            }
        }
    }
    st.store
        .txn(Txn::when(vec![], ops))
        .await
        .map_err(|e| e.to_string())?;
    if next == TaskStatus::Stopped {
        // Its role's credentials end with it.
        if let Err(e) = berth_control::task_role::revoke(&st.ctl, scope, cluster, &id).await {
            tracing::warn!(task = %id, error = %e, "task role credentials not revoked; the stopped-task sweep will");
        }
    }
    tracing::info!(cluster = %cluster, task = %id, status = report.last_status.as_str(), "task state");
    Ok(())
}

async fn send(socket: &mut WebSocket, m: &ServerMessage) -> Result<(), String> {
    socket
        .send(text(m))
        .await
        .map_err(|_| "the agent went away".to_string())
}

async fn session(
    st: &AppState,
    scope: &Scope,
    bound: Option<(String, String)>,
    socket: &mut WebSocket,
) -> Result<(), String> {
    let timeout = st.config.agent_timeout;
    let (cluster, arn, agent_version) = match next(socket, timeout).await? {
        Some(AgentMessage::Hello {
            cluster,
            container_instance_arn,
            agent_version,
        }) => (cluster, container_instance_arn, agent_version),
        Some(other) => return Err(format!("expected hello first, got {other:?}")),
        None => return Ok(()),
    };
    let (cluster, id) = instance(st, scope, &cluster, &arn, bound).await?;
    let key = scope.agent_connection(&cluster, &id);
    let lease = st
        .store
        .lease_grant(timeout)
        .await
        .map_err(|e| e.to_string())?;
    let connection = AgentConnection {
        connected_at: st.now(),
        agent_version,
        server: st.config.advertise_url.clone(),
    };
    st.store
        .txn(Txn::when(
            vec![],
            vec![Op::Put {
                key: key.clone(),
                value: typed::encode(&connection),
                lease: Some(lease.id),
            }],
        ))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(cluster = %cluster, instance = %id, "agent connected");
    let (link, mut asks) = st.links.attach(&cluster, &id);
    let result = converse(st, scope, socket, &cluster, &id, lease.id, &mut asks).await;
    st.links.detach(&cluster, &id, link);
    // A clean goodbye or a broken connection: the agent is gone now, not
    // when the lease would have run out. A newer connection of the same
    // agent holds its own lease, which this does not touch.
    if let Err(e) = st.store.lease_revoke(lease.id).await {
        tracing::warn!(error = %e, "could not revoke an agent connection's lease");
    }
    tracing::info!(cluster = %cluster, instance = %id, "agent disconnected");
    result
}

/// Ends the lease keeper with the connection, however it ends.
struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The connected part of a session: pushes the desired set whenever the
/// instance's task index changes, records reports, keeps the lease alive.
async fn converse(
    st: &AppState,
    scope: &Scope,
    socket: &mut WebSocket,
    cluster: &str,
    id: &str,
    lease: berth_store::LeaseId,
    asks: &mut tokio::sync::mpsc::UnboundedReceiver<LogAsk>,
) -> Result<(), String> {
    // Log requests in flight on this connection, by request number.
    let mut pending: HashMap<u64, tokio::sync::mpsc::UnboundedSender<String>> = HashMap::new();
    let mut next_request = 0u64;
    let timeout = st.config.agent_timeout;
    let interval = (timeout / 4).max(Duration::from_millis(100));
    send(
        socket,
        &ServerMessage::Welcome {
            heartbeat_interval_ms: interval.as_millis() as u64,
            timeout_ms: timeout.as_millis() as u64,
        },
    )
    .await?;
    // The desired set changes with the instance's index, and its tasks'
    // security groups with the addresses other tasks take and free.
    let mut changes = st
        .hub
        .subscribe(
            &st.store,
            vec![
                (scope.instance_tasks_of(cluster, id), Route::Entries),
                (scope.subnet_ips(), Route::Any),
                (scope.warm_ips_of(cluster, id), Route::Any),
            ],
        )
        .await;
    // And with the network's rules and the load balancers' groups,
    // watched apart: a change's revision then says which network the push
    // must be made from, which the server's copy may not have reached
    // when the watch fires.
    let mut rules = st
        .hub
        .subscribe(
            &st.store,
            vec![
                (
                    berth_store::keys::ec2::network_prefix(&st.config.account_id),
                    Route::Any,
                ),
                // A load balancer's groups stand for its address in rules.
                (scope.load_balancers(), Route::Any),
            ],
        )
        .await;
    // The lease is renewed on its own clock for as long as this loop
    // runs: renewing inside the loop lost live hosts whenever a push or a
    // burst of durable report writes held it past the lease, and a loaded
    // server then marked a healthy host's tasks lost. A silent agent still
    // ends the connection through the loop's deadline, which revokes the
    // lease.
    let mut keeper = KeepAlive(tokio::spawn({
        let store = st.store.clone();
        async move {
            let mut tick = tokio::time::interval(interval / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if store.lease_keep_alive(lease).await.is_err() {
                    return;
                }
            }
        }
    }));
    let (first, mut warm) = desired(st, scope, cluster, id).await?;
    send(socket, &first).await?;
    let mut deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            _ = &mut keeper.0 => return Err("the connection's lease ran out".into()),
            change = changes.next() => {
                let Some(change) = change else {
                    return Err("the gateway's watch ended".into());
                };
                // Only its own index changed: send what changed. Anything
                // else (addresses taken or freed, warm ones), or falling
                // behind, may change every task's network: the whole set.
                let message = if change.whole {
                    let (whole, now_warm) = desired(st, scope, cluster, id).await?;
                    warm = now_warm;
                    whole
                } else if change.entries.is_empty() {
                    continue;
                } else {
                    // Level-based: the last word on each entry is what counts.
                    let mut own = change.entries;
                    let mut seen = HashSet::new();
                    own.reverse();
                    own.retain(|(e, _)| seen.insert(e.clone()));
                    desired_changes(st, scope, cluster, &own, change.revision, warm.clone()).await?
                };
                send(socket, &message).await?;
            }
            change = rules.next() => {
                let Some(change) = change else {
                    return Err("the gateway's watch ended".into());
                };
                st.ctl
                    .networks
                    .catch_up(change.revision)
                    .await
                    .map_err(|e| e.to_string())?;
                let (whole, now_warm) = desired(st, scope, cluster, id).await?;
                warm = now_warm;
                send(socket, &whole).await?;
            }
            Some(ask) = asks.recv() => {
                next_request += 1;
                pending.insert(next_request, ask.out);
                let m = ServerMessage::Logs { request: next_request, task_id: ask.task_id, follow: ask.follow };
                send(socket, &m).await?;
            }
            message = next(socket, deadline.saturating_duration_since(tokio::time::Instant::now())) => {
                deadline = tokio::time::Instant::now() + timeout;
                let message = message?;
                // Any message shows the agent is there: a busy agent's
                // heartbeat can wait behind hundreds of reports that take
                // a durable write each.
                // Whoever stopped listening to a log stream: the agent stops reading it.
                let gone: Vec<u64> = pending.iter().filter(|(_, out)| out.is_closed()).map(|(r, _)| *r).collect();
                for request in gone {
                    pending.remove(&request);
                    send(socket, &ServerMessage::LogsDone { request }).await?;
                }
                match message {
                    Some(AgentMessage::Heartbeat) => {}
                    Some(AgentMessage::TaskState(report)) => {
                        record(st, scope, cluster, id, report).await?;
                    }
                    Some(AgentMessage::Logs { request, data, end }) => {
                        if let Some(out) = pending.get(&request) {
                            if !data.is_empty() && out.send(data).is_err() {
                                pending.remove(&request);
                                send(socket, &ServerMessage::LogsDone { request }).await?;
                            } else if end {
                                pending.remove(&request);
                            }
                        }
                    }
                    Some(AgentMessage::Secrets { request, task_arn }) => {
                        let m = match task_secrets(st, scope, cluster, id, &task_arn).await {
                            Ok(values) => ServerMessage::Secrets { request, values, error: None },
                            Err(error) => ServerMessage::Secrets { request, values: vec![], error: Some(error) },
                        };
                        send(socket, &m).await?;
                    }
                    Some(AgentMessage::Credentials { request, task_arn, execution }) => {
                        let m = match task_credentials(st, scope, cluster, id, &task_arn, execution).await {
                            Ok(c) => ServerMessage::Credentials { request, credentials: Some(c), error: None },
                            Err(error) => ServerMessage::Credentials { request, credentials: None, error: Some(error) },
                        };
                        send(socket, &m).await?;
                    }
                    Some(AgentMessage::Usage { at, tasks }) => {
                        // Stored apart: a slow disk must not hold up the
                        // agent's reports.
                        let (st, scope, cluster, id) = (st.clone(), scope.clone(), cluster.to_string(), id.to_string());
                        tokio::spawn(async move { record_usage(&st, &scope, &cluster, &id, at, tasks).await });
                    }
                    Some(other) => return Err(format!("unexpected message {other:?}")),
                    None => return Ok(()),
                }
            }
        }
    }
}
