//! Placement: what a cluster's hosts hold now, a plan from the pure
//! scheduler, and the transaction that commits it (the tasks, their index
//! entries, their awsvpc addresses and a bump of the placement key that
//! every concurrent placement compares).

use crate::launch::Launch;
use crate::live::Only;
use crate::{Control, ControlError};
use berth_domain::instance::{ContainerInstance, InstanceStatus, FARGATE_POOL};
use berth_domain::task::ObservedTask;
use berth_domain::task::{Task, TaskNetwork, TaskStatus, Usage};
use berth_domain::{capacity, Scope};
use berth_scheduler as sched;
use berth_store::keys::Keys;
use berth_store::{typed, Op, RangeRequest};
use berth_wire::ecs as w;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Ports Docker hands out for hostPort 0: its default ephemeral range.
const DYNAMIC_PORTS: u32 = 65535 - 49153 + 1;

/// One cluster's tasks: desired records with their mod revisions, and
/// what agents reported of them.
pub struct ClusterTasks {
    pub tasks: Vec<typed::Versioned<Task>>,
    pub reports: HashMap<String, ObservedTask>,
}

impl ClusterTasks {
    pub async fn load(
        st: &Control,
        scope: &Scope,
        cluster: &str,
    ) -> Result<ClusterTasks, ControlError> {
        let tasks = typed::list::<Task>(&*st.store, &scope.tasks_of(cluster))
            .await?
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let reports = typed::list::<ObservedTask>(&*st.store, &scope.task_states_of(cluster))
            .await?
            .into_iter()
            .filter_map(|(k, r)| {
                let id = k.rsplit('/').next()?.to_string();
                Some((id, r.value))
            })
            .collect();
        Ok(ClusterTasks { tasks, reports })
    }

    pub fn report(&self, id: &str) -> Option<&ObservedTask> {
        self.reports.get(id)
    }

    /// What the tasks that are not STOPPED hold, per instance id.
    pub fn usage(&self) -> HashMap<String, Usage> {
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
pub async fn connected_agents(
    st: &Control,
    scope: &Scope,
    cluster: &str,
) -> Result<HashSet<String>, ControlError> {
    let ids = typed::names(&*st.store, &scope.agent_connections_of(cluster)).await?;
    Ok(ids.into_iter().collect())
}

/// What a cluster's instances hold now, read once per request: which
/// agents are connected, and what the not-STOPPED tasks on each reserve.
#[derive(Default)]
pub struct Occupancy {
    connected: HashSet<String>,
    usage: HashMap<String, Usage>,
}

impl Occupancy {
    pub async fn load(
        st: &Control,
        scope: &Scope,
        cluster: &str,
    ) -> Result<Occupancy, ControlError> {
        Ok(Occupancy {
            connected: connected_agents(st, scope, cluster).await?,
            usage: ClusterTasks::load(st, scope, cluster).await?.usage(),
        })
    }

    /// The Fargate pool's hosts: which agents are connected, and what the
    /// tasks of every cluster that are placed there and not STOPPED hold
    /// (the pool's task index names them).
    pub async fn load_pool(st: &Control, scope: &Scope) -> Result<Occupancy, ControlError> {
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
            let report = typed::get::<ObservedTask>(&*st.store, &scope.task_state(cluster, id))
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
    pub fn connected(&self, instance: &str) -> bool {
        self.connected.contains(instance)
    }

    pub fn usage(&self, instance: &str) -> Option<&Usage> {
        self.usage.get(instance)
    }

    /// Placement's view of `ci`: what it is and what it has left.
    pub fn placeable(&self, scope: &Scope, ci: &ContainerInstance) -> sched::Instance {
        let empty = Usage::default();
        let used = self.usage(&ci.id).unwrap_or(&empty);
        placeable(scope, ci, used, self.connected(&ci.id))
    }
}

/// Placement's view of `ci`, given what its tasks hold and whether its
/// agent is connected.
pub(crate) fn placeable(
    scope: &Scope,
    ci: &ContainerInstance,
    used: &Usage,
    connected: bool,
) -> sched::Instance {
    let mut tcp: std::collections::BTreeSet<u16> = ci.reserved_ports(false).into_iter().collect();
    tcp.extend(&used.tcp_ports);
    let mut udp: std::collections::BTreeSet<u16> = ci.reserved_ports(true).into_iter().collect();
    udp.extend(&used.udp_ports);
    sched::Instance {
        arn: Arc::from(ci.arn(scope)),
        ec2_instance_id: ci.ec2_instance_id.clone(),
        status: match ci.status {
            InstanceStatus::Active => sched::InstanceStatus::Active,
            InstanceStatus::Draining => sched::InstanceStatus::Draining,
            InstanceStatus::Inactive => sched::InstanceStatus::Inactive,
        },
        agent_connected: connected,
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

/// Waits for this process's turn to place tasks of `launch` in `cluster`
/// (on its instances; Fargate's pool orders on the store alone): held
/// until the placement is committed, so that concurrent placements queue
/// on the live snapshot instead of conflicting in the store.
pub async fn turn(
    st: &Control,
    scope: &Scope,
    cluster: &str,
    launch: &Launch,
) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, ControlError> {
    if launch.launch_type == "FARGATE" {
        return Ok(None);
    }
    let live = st.live.cluster(st, scope, cluster).await?;
    Ok(Some(live.turn.clone().lock_owned().await))
}

/// The ops that store a task: its record and its place in the instance's
/// index (a task waiting for capacity has none yet).
pub fn write_task(scope: &Scope, t: &Task) -> Vec<Op> {
    let mut ops = vec![typed::put(&scope.task(&t.cluster, &t.id), t)];
    if t.placed() {
        ops.push(Op::put(
            index_key(scope, t),
            t.desired_status.as_str().as_bytes().to_vec(),
        ));
    }
    ops
}

/// Where a task waiting for capacity is listed: under its cluster, or a
/// FARGATE task under the Fargate pool (as `cluster/id`), whose scaler
/// places every cluster's.
pub fn waiting_key(scope: &Scope, t: &Task) -> String {
    scope.waiting_task(t.host_cluster(), &t.index_entry())
}

/// Where a task sits in its host's task index, which its agent watches.
pub fn index_key(scope: &Scope, t: &Task) -> String {
    scope.instance_task(t.host_cluster(), &t.container_instance, &t.index_entry())
}

/// One placement, ready to commit: the transaction's compares and ops,
/// the records of the tasks it writes, and why instances were passed over.
pub struct Placed {
    pub compares: Vec<berth_store::Compare>,
    pub ops: Vec<Op>,
    pub tasks: Vec<Task>,
    pub failures: Vec<w::Failure>,
    /// The cluster has no container instance at all.
    pub no_instances: bool,
}

/// One request of a placement on a cluster's own instances: its launch,
/// and the only instance it may use (a DAEMON service's), if any.
pub struct Want<'a> {
    pub launch: &'a Launch,
    pub only: Option<&'a str>,
}

/// What a placement placed for one of its requests.
pub struct Outcome {
    /// The records of the tasks it writes.
    pub tasks: Vec<Task>,
    pub failures: Vec<w::Failure>,
    /// The cluster has no container instance at all.
    pub no_instances: bool,
}

/// Plans `launch.request.count` tasks on the cluster's instances as they
/// are now. Committing the result fails if any other placement in the
/// cluster committed in between (the placement key), so the caller
/// re-plans instead of overcommitting an instance.
pub async fn place(
    st: &Control,
    scope: &Scope,
    cluster: &str,
    launch: &Launch,
    only: Option<&str>,
) -> Result<Placed, ControlError> {
    if launch.launch_type != "FARGATE" {
        let (compares, ops, mut outcomes) =
            place_many(st, scope, cluster, &[Want { launch, only }]).await?;
        let Outcome {
            tasks,
            failures,
            no_instances,
        } = outcomes.pop().unwrap_or(Outcome {
            tasks: vec![],
            failures: vec![],
            no_instances: true,
        });
        return Ok(Placed {
            compares,
            ops,
            tasks,
            failures,
            no_instances,
        });
    }
    // Fargate tasks go to the hidden pool's hosts, which hold tasks of
    // every cluster; the pool's placement key orders their placements.
    let hosts = FARGATE_POOL;
    // Begun before anything is read, so that the plan is never newer
    // than what its transaction compares.
    let mut placing = Placing::begin(st, scope, cluster, hosts).await?;
    let instances: Vec<ContainerInstance> =
        typed::list::<ContainerInstance>(&*st.store, &scope.instances_of(hosts))
            .await?
            .into_iter()
            .map(|(_, ci)| ci.value)
            .filter(|ci| only.is_none_or(|id| ci.id == id))
            .collect();
    let instances_empty = instances.is_empty();
    let occupancy = Occupancy::load_pool(st, scope).await?;
    let views = instances
        .iter()
        .map(|ci| occupancy.placeable(scope, ci))
        .collect();
    let plan = sched::Snapshot::new(views).place(&launch.request, rand::random());
    let by_arn: HashMap<Arc<str>, ContainerInstance> = instances
        .into_iter()
        .map(|ci| (Arc::from(ci.arn(scope)), ci))
        .collect();
    let mut providers = capacity::assign(&launch.strategy, &launch.held, launch.request.count)
        .into_iter()
        .map(Some)
        .chain(std::iter::repeat(None));
    let mut tasks = vec![];
    for p in &plan.placements {
        let Some(ci) = by_arn.get(&p.instance) else {
            continue;
        };
        let provider = providers.next().flatten();
        tasks.extend(placing.add(launch, ci, provider, &p.instance).await?);
    }
    let lacks_attribute = !plan.failures.is_empty()
        && plan.failures.iter().all(|f| f.missing.is_some())
        && !instances_empty;
    if st.config.fargate_pool.on() && !lacks_attribute {
        // The pool grows for them: they wait in PROVISIONING.
        while tasks.len() < launch.request.count {
            let provider = providers.next().flatten();
            tasks.push(placing.wait(launch, provider));
        }
    }
    let (compares, ops, _) = placing.finish();
    // Fargate's hosts stay hidden: a shortfall is capacity, as on AWS,
    // unless no host could take the task for what it asks of the host (a
    // capability none has). Then more capacity would not help, and the
    // failure says what is missing.
    let failures = if tasks.len() < launch.request.count {
        let missing = if plan.failures.iter().all(|f| f.missing.is_some()) {
            plan.failures.first().and_then(|f| f.missing.as_deref())
        } else {
            None
        };
        vec![match missing {
            Some(attribute) => w::Failure {
                arn: None,
                reason: Some(sched::Reason::Attribute.as_str().into()),
                detail: Some(format!(
                    "{MISSING_ATTRIBUTE}: {attribute} (no Fargate capacity provides it)"
                )),
            },
            None => w::Failure {
                arn: None,
                reason: Some(FARGATE_CAPACITY_UNAVAILABLE.into()),
                detail: None,
            },
        }]
    } else {
        vec![]
    };
    Ok(Placed {
        compares,
        ops,
        tasks,
        failures,
        no_instances: false,
    })
}

/// Plans several requests on the cluster's own instances as the live
/// snapshot has them, each seeing what the ones before it placed, in one
/// transaction: its compares and ops, and each request's outcome in order.
/// Committing it fails if any other placement in the cluster committed in
/// between (the placement key), so the caller re-plans them all.
pub async fn place_many(
    st: &Control,
    scope: &Scope,
    cluster: &str,
    wants: &[Want<'_>],
) -> Result<(Vec<berth_store::Compare>, Vec<Op>, Vec<Outcome>), ControlError> {
    // Begun before anything is read, so that the plan is never newer
    // than what its transaction compares.
    let mut placing = Placing::begin(st, scope, cluster, cluster).await?;
    // Everything placed before the placement key's revision is in the
    // snapshot once it has caught up with it; catching up with the
    // store's revision as of now also shows what stopped before this
    // call (a StopTask then a RunTask finds the room freed).
    let live = st.live.cluster(st, scope, cluster).await?;
    let now = st.store.current_revision().await?;
    live.caught_up(placing.lock_revision.max(now)).await?;
    // Each want is one ask, or one per Auto Scaling group provider of its
    // strategy: (want, provider, tasks, the provider's hosts).
    let mut split: Vec<(usize, Option<String>, usize)> = vec![];
    let mut hosts: HashMap<String, crate::capacity_providers::Hosts> = HashMap::new();
    for (i, want) in wants.iter().enumerate() {
        let launch = want.launch;
        if !on_groups(launch) {
            split.push((i, None, launch.request.count));
            continue;
        }
        let mut per: Vec<(String, usize)> = vec![];
        for p in capacity::assign(&launch.strategy, &launch.held, launch.request.count) {
            match per.iter_mut().find(|(n, _)| *n == p) {
                Some((_, k)) => *k += 1,
                None => per.push((p, 1)),
            }
        }
        for (p, k) in per {
            if !hosts.contains_key(&p) {
                let h = crate::capacity_providers::hosts(st, scope, &p).await?;
                hosts.insert(p.clone(), h);
            }
            split.push((i, Some(p), k));
        }
    }
    let requests: Vec<sched::Request> = split
        .iter()
        .map(|(i, _, k)| sched::Request {
            count: *k,
            ..wants[*i].launch.request.clone()
        })
        .collect();
    let asks: Vec<_> = split
        .iter()
        .zip(&requests)
        .map(|((i, p, _), r)| {
            let only = match (p, wants[*i].only) {
                (Some(p), _) => Only::Ec2(&hosts[p].ec2),
                (None, Some(id)) => Only::Instance(id),
                (None, None) => Only::Any,
            };
            (only, r, rand::random())
        })
        .collect();
    let (no_instances, plans) = live.plan_many(scope, &asks);
    let mut outcomes: Vec<Outcome> = wants
        .iter()
        .map(|_| Outcome {
            tasks: vec![],
            failures: vec![],
            no_instances,
        })
        .collect();
    for ((i, group_provider, asked), (plan, by_arn)) in split.iter().zip(plans) {
        let launch = wants[*i].launch;
        let out = &mut outcomes[*i];
        let assigned: Vec<String> = match group_provider {
            Some(p) => vec![p.clone(); plan.placements.len()],
            None => capacity::assign(&launch.strategy, &launch.held, plan.placements.len()),
        };
        let mut providers = assigned
            .into_iter()
            .map(Some)
            .chain(std::iter::repeat(None));
        let mut placed = 0;
        for p in &plan.placements {
            let Some(ci) = by_arn.get(&p.instance) else {
                continue;
            };
            let provider = providers.next().flatten();
            if let Some(t) = placing.add(launch, ci, provider, &p.instance).await? {
                out.tasks.push(t);
                placed += 1;
            }
        }
        out.failures.extend(placing.take_failures());
        match group_provider {
            // The provider's group grows for them: they wait in
            // PROVISIONING, and the cluster has capacity coming.
            Some(p) if hosts[p].managed => {
                for _ in placed..*asked {
                    out.tasks.push(placing.wait(launch, Some(p.clone())));
                }
                out.no_instances = false;
                out.failures.clear();
            }
            _ => out
                .failures
                .extend(plan.failures.iter().map(placement_failure)),
        }
    }
    let (compares, ops, _) = placing.finish();
    Ok((compares, ops, outcomes))
}

/// Whether a launch's tasks go to Auto Scaling group capacity providers.
fn on_groups(launch: &Launch) -> bool {
    launch.launch_type == "EC2" && !launch.strategy.is_empty()
}

/// How a failure's `detail` names the attribute a task requires and a
/// host lacks. ECS says only `ATTRIBUTE`, and its users are left to guess.
pub const MISSING_ATTRIBUTE: &str = "MISSING ATTRIBUTE";

/// A host's refusal as RunTask reports it.
fn placement_failure(f: &sched::Failure) -> w::Failure {
    w::Failure {
        arn: Some(f.arn.to_string()),
        reason: Some(f.reason.as_str().into()),
        detail: f
            .missing
            .as_ref()
            .map(|a| format!("{MISSING_ATTRIBUTE}: {a}")),
    }
}

/// RunTask's failure reason when Fargate capacity runs short, in AWS's words.
pub const FARGATE_CAPACITY_UNAVAILABLE: &str =
    "Capacity is unavailable at this time. Please try again later or in a different availability zone";

/// A placement's transaction as it is built. It orders on the hosts'
/// placement key, read when it begins, so that a concurrent placement on
/// the same hosts makes it fail and re-plan; it compares the cluster
/// record ACTIVE as read and puts the cluster's placement key, so that
/// it neither lands in a deleted cluster nor slips past a DeleteCluster
/// that counted the cluster empty; and it adds each new task with its
/// records and, for awsvpc, the address it claims.
pub(crate) struct Placing<'a> {
    st: &'a Control,
    scope: &'a Scope,
    cluster: &'a str,
    /// The hosts' placement key's revision when the placement began.
    pub(crate) lock_revision: i64,
    compares: Vec<berth_store::Compare>,
    ops: Vec<Op>,
    addresses: Addresses,
    failures: Vec<w::Failure>,
}

impl<'a> Placing<'a> {
    /// A placement of `launch`'s tasks for `cluster` on the hosts of
    /// `hosts` (the cluster itself, or the Fargate pool).
    pub(crate) async fn begin(
        st: &'a Control,
        scope: &'a Scope,
        cluster: &'a str,
        hosts: &str,
    ) -> Result<Placing<'a>, ControlError> {
        let lock = scope.placement(hosts);
        let lock_rev = st.store.get(&lock).await?.map_or(0, |kv| kv.mod_revision);
        let mut ops = vec![Op::put(lock.clone(), vec![])];
        if hosts != cluster {
            ops.push(Op::put(scope.placement(cluster), vec![]));
        }
        Ok(Placing {
            compares: vec![
                typed::unchanged(&lock, lock_rev),
                crate::clusters::still_active(st, scope, cluster).await?,
            ],
            ops,
            lock_revision: lock_rev,
            st,
            scope,
            cluster,
            addresses: Addresses::default(),
            failures: vec![],
        })
    }

    /// Adds a new task of `launch` on `ci`: its record, or None and a failure
    /// naming `arn` when its subnets in the instance's zone are full.
    pub(crate) async fn add(
        &mut self,
        launch: &Launch,
        ci: &ContainerInstance,
        provider: Option<String>,
        arn: &str,
    ) -> Result<Option<Task>, ControlError> {
        let (st, scope) = (self.st, self.scope);
        let (network, warm) = match &launch.awsvpc {
            Some(a) => match self.addresses.take(st, scope, a, ci).await? {
                Some((n, warm)) => (Some(n), warm),
                None => {
                    self.fail(arn, "RESOURCE:ENI");
                    return Ok(None);
                }
            },
            None => (None, None),
        };
        let t = launch.task(st.now(), self.cluster, Some(ci), network, provider);
        if let Some(n) = &t.network {
            self.claim(n, warm, &t.id);
        }
        self.ops.extend(write_task(scope, &t));
        Ok(Some(t))
    }

    /// Claims interface `n`'s address for task `id`: a host's warm address
    /// (its key and revision) becomes the task's, with the host's
    /// namespace at it; any other must still be free.
    fn claim(&mut self, n: &TaskNetwork, warm: Option<(String, i64)>, id: &str) {
        let key = self.scope.subnet_ip(&n.subnet_id, &n.ip);
        match warm {
            Some((warm_key, rev)) => {
                self.compares.push(typed::unchanged(&warm_key, rev));
                self.ops.push(Op::delete(warm_key));
            }
            None => self.compares.push(typed::unchanged(&key, 0)),
        }
        self.ops
            .push(Op::put(key, self.scope.task(self.cluster, id).into_bytes()));
    }

    /// Adds a new task of `launch` that waits in PROVISIONING for
    /// `provider`'s capacity: its record, and what placing it later needs.
    pub(crate) fn wait(&mut self, launch: &Launch, provider: Option<String>) -> Task {
        let now = self.st.now();
        let waits_for = provider.clone().unwrap_or_else(|| "FARGATE".into());
        let t = launch.task(now, self.cluster, None, None, provider);
        self.ops.extend(write_task(self.scope, &t));
        self.ops.push(typed::put(
            &waiting_key(self.scope, &t),
            &launch.waiting(&waits_for, now),
        ));
        t
    }

    /// Places task `t`, which waited for capacity as `w` says, on `ci`:
    /// its record with its host (and interface), its place in the
    /// host's index, its waiting entry gone. False when its subnets in
    /// the instance's zone are full.
    pub(crate) async fn settle(
        &mut self,
        t: &typed::Versioned<Task>,
        w: &capacity::Waiting,
        ci: &ContainerInstance,
        arn: &str,
    ) -> Result<bool, ControlError> {
        let (st, scope) = (self.st, self.scope);
        let mut task = t.value.clone();
        if w.awsvpc {
            let asked = berth_domain::network::AwsVpc {
                subnets: w.subnets.clone(),
                security_groups: w.security_groups.clone(),
                assign_public_ip: false,
            };
            let Some((network, warm)) = self.addresses.take(st, scope, &asked, ci).await? else {
                self.fail(arn, "RESOURCE:ENI");
                return Ok(false);
            };
            self.claim(&network, warm, &task.id);
            task.network = Some(network);
        }
        task.container_instance = ci.id.clone();
        task.availability_zone = ci
            .attribute("ecs.availability-zone")
            .and_then(|a| a.value.clone());
        task.version += 1;
        self.compares.push(typed::unchanged(
            &scope.task(self.cluster, &task.id),
            t.mod_revision,
        ));
        self.ops.extend(write_task(scope, &task));
        self.ops.push(Op::delete(waiting_key(scope, &task)));
        Ok(true)
    }

    /// Records why an instance was passed over.
    pub(crate) fn fail(&mut self, arn: &str, reason: &str) {
        self.failures.push(failure(arn, reason));
    }

    /// The failures recorded since the last call.
    fn take_failures(&mut self) -> Vec<w::Failure> {
        std::mem::take(&mut self.failures)
    }

    /// The transaction's compares and ops, and the failures recorded.
    pub(crate) fn finish(self) -> (Vec<berth_store::Compare>, Vec<Op>, Vec<w::Failure>) {
        (self.compares, self.ops, self.failures)
    }
}

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
    /// An interface for a task on `ci`: in the first of the task's subnets
    /// in the instance's zone, at one of the host's warm addresses there
    /// (with its key and revision), else at the subnet's lowest free
    /// address. None when those subnets are full.
    async fn take(
        &mut self,
        st: &Control,
        scope: &Scope,
        awsvpc: &berth_domain::network::AwsVpc,
        ci: &ContainerInstance,
    ) -> Result<Option<(TaskNetwork, Option<(String, i64)>)>, ControlError> {
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
        let network = st.networks.current();
        for id in &awsvpc.subnets {
            let Some(subnet) = network.subnet(id) else {
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
pub async fn subnet_addresses(
    st: &Control,
    scope: &Scope,
    subnet: &str,
) -> Result<std::collections::BTreeSet<std::net::Ipv4Addr>, ControlError> {
    let ips = typed::names(&*st.store, &scope.subnet_ips_of(subnet)).await?;
    Ok(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
}

pub fn failure(arn: impl Into<String>, reason: impl Into<String>) -> w::Failure {
    w::Failure {
        arn: Some(arn.into()),
        reason: Some(reason.into()),
        detail: None,
    }
}

/// The tasks listed under `prefix` as waiting for capacity and still
/// wanted, each with its cluster and what it waits as. On the way, a task
/// asked to stop meanwhile is recorded STOPPED (no agent ever had it), and
/// an entry whose task is gone or placed is dropped. Entries are `id`
/// under a cluster, `cluster/id` under the Fargate pool.
async fn waiting_entries(
    st: &Control,
    scope: &Scope,
    prefix: &str,
    cluster: Option<&str>,
) -> Result<Vec<(String, typed::Versioned<Task>, capacity::Waiting)>, ControlError> {
    use berth_domain::task::DesiredStatus;
    let mut out = vec![];
    for (key, w) in typed::list::<capacity::Waiting>(&*st.store, prefix).await? {
        let rest = key.strip_prefix(prefix).unwrap_or_default();
        let (cluster, id) = match cluster {
            Some(c) => (c, rest),
            None => match rest.split_once('/') {
                Some(pair) => pair,
                None => continue,
            },
        };
        let task_key = scope.task(cluster, id);
        match typed::get::<Task>(&*st.store, &task_key).await? {
            Some(t) if !t.value.placed() && t.value.desired_status == DesiredStatus::Running => {
                out.push((cluster.to_string(), t, w.value));
            }
            Some(t) if !t.value.placed() => {
                let ops = crate::tasks::stop_waiting(scope, &t.value, st.now());
                let txn =
                    berth_store::Txn::when(vec![typed::unchanged(&task_key, t.mod_revision)], ops);
                st.store.txn(txn).await?;
            }
            _ => {
                let txn = berth_store::Txn::when(
                    vec![typed::unchanged(&key, w.mod_revision)],
                    vec![Op::delete(key.clone())],
                );
                st.store.txn(txn).await?;
            }
        }
    }
    Ok(out)
}

/// Places the cluster's tasks waiting in PROVISIONING on their capacity
/// providers' instances as those join, and records the ones asked to stop
/// meanwhile as STOPPED. The tasks still waiting afterwards, with what
/// each reserves and its provider, for managed scaling to count.
pub async fn place_waiting(
    st: &Control,
    scope: &Scope,
    cluster: &str,
) -> Result<Vec<(Task, String)>, ControlError> {
    let mut waiting: Vec<(typed::Versioned<Task>, capacity::Waiting)> =
        waiting_entries(st, scope, &scope.waiting_tasks_of(cluster), Some(cluster))
            .await?
            .into_iter()
            .map(|(_, t, w)| (t, w))
            .collect();
    if waiting.is_empty() {
        return Ok(vec![]);
    }
    waiting.sort_by(|a, b| a.1.since.total_cmp(&b.1.since));
    let mut hosts: HashMap<String, crate::capacity_providers::Hosts> = HashMap::new();
    for (_, w) in &waiting {
        if !hosts.contains_key(&w.provider) {
            let h = crate::capacity_providers::hosts(st, scope, &w.provider).await?;
            hosts.insert(w.provider.clone(), h);
        }
    }
    let requests: Vec<Option<sched::Request>> = waiting
        .iter()
        .map(|(t, w)| crate::launch::waiting_request(&t.value, w))
        .collect();
    let mut placing = Placing::begin(st, scope, cluster, cluster).await?;
    let live = st.live.cluster(st, scope, cluster).await?;
    let now = st.store.current_revision().await?;
    live.caught_up(placing.lock_revision.max(now)).await?;
    let asks: Vec<_> = waiting
        .iter()
        .zip(&requests)
        .filter_map(|((_, w), r)| Some((Only::Ec2(&hosts[&w.provider].ec2), r.as_ref()?, 0)))
        .collect();
    let (_, plans) = live.plan_many(scope, &asks);
    let mut plans = plans.into_iter();
    let mut still = vec![];
    let mut placed_any = false;
    for ((t, w), r) in waiting.iter().zip(&requests) {
        let plan = if r.is_some() { plans.next() } else { None };
        let target = plan.as_ref().and_then(|(plan, by_arn)| {
            let p = plan.placements.first()?;
            Some((by_arn.get(&p.instance)?, p.instance.clone()))
        });
        let Some((ci, arn)) = target else {
            still.push((t.value.clone(), w.provider.clone()));
            continue;
        };
        if placing.settle(t, w, ci, &arn).await? {
            placed_any = true;
        } else {
            still.push((t.value.clone(), w.provider.clone()));
        }
    }
    if placed_any {
        let (compares, ops, _) = placing.finish();
        if !st
            .store
            .txn(berth_store::Txn::when(compares, ops))
            .await?
            .succeeded
        {
            // Another placement went first: all of them wait for the next round.
            return Ok(waiting
                .into_iter()
                .map(|(t, w)| (t.value, w.provider))
                .collect());
        }
    }
    Ok(still)
}

/// Places the FARGATE tasks of every cluster waiting in PROVISIONING for
/// the pool to grow, each on its own (a placement per task, ordered on
/// the pool's placement key), and records those asked to stop meanwhile
/// as STOPPED. The tasks still waiting afterwards, with what they wait as.
pub async fn place_waiting_in_pool(
    st: &Control,
    scope: &Scope,
) -> Result<Vec<(Task, capacity::Waiting)>, ControlError> {
    let prefix = scope.waiting_tasks_of(FARGATE_POOL);
    let mut still = vec![];
    for (cluster, t, w) in waiting_entries(st, scope, &prefix, None).await? {
        if !place_in_pool(st, scope, &cluster, &t, &w).await? {
            still.push((t.value, w));
        }
    }
    Ok(still)
}

/// One waiting FARGATE task placed on the pool's hosts as they are now;
/// whether it was.
async fn place_in_pool(
    st: &Control,
    scope: &Scope,
    cluster: &str,
    t: &typed::Versioned<Task>,
    w: &capacity::Waiting,
) -> Result<bool, ControlError> {
    let Some(mut request) = crate::launch::waiting_request(&t.value, w) else {
        return Ok(false);
    };
    request.strategies = crate::launch::fargate_strategies();
    let mut placing = Placing::begin(st, scope, cluster, FARGATE_POOL).await?;
    let instances: Vec<ContainerInstance> =
        typed::list::<ContainerInstance>(&*st.store, &scope.instances_of(FARGATE_POOL))
            .await?
            .into_iter()
            .map(|(_, ci)| ci.value)
            .collect();
    let occupancy = Occupancy::load_pool(st, scope).await?;
    let views = instances
        .iter()
        .map(|ci| occupancy.placeable(scope, ci))
        .collect();
    let plan = sched::Snapshot::new(views).place(&request, rand::random());
    let Some(p) = plan.placements.first() else {
        return Ok(false);
    };
    let Some(ci) = instances.iter().find(|ci| *ci.arn(scope) == *p.instance) else {
        return Ok(false);
    };
    if !placing.settle(t, w, ci, &p.instance).await? {
        return Ok(false);
    }
    let (compares, ops, _) = placing.finish();
    Ok(st
        .store
        .txn(berth_store::Txn::when(compares, ops))
        .await?
        .succeeded)
}
