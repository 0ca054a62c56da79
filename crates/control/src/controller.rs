//! The service controller: keeps every service at its desired count, moves
//! its deployments on, and replaces the tasks of hosts that are lost.
//!
//! Level-triggered: a change to anything a cluster's services depend on
//! (services, tasks, task states, container instances, agent connections)
//! marks the cluster dirty, and one reconcile of the cluster reads
//! everything again, decides with the pure `berth_domain::service::plan`,
//! and writes with compare-and-swap. One reconcile per cluster runs at a
//! time; a change during a run makes it run again. Reconciles also run on
//! a timer, for what time alone changes (a task settling, a grace period
//! ending, a host staying away).

use crate::cas::{compare_and_swap, Attempt};
use crate::launch::{prepare, Launch, LaunchInput};
use crate::placement::{
    connected_agents, index_key, place, subnet_addresses, ClusterTasks, Occupancy,
};
use crate::runtime::{self, Action, Backoff, Queue, Reason, Reconciler};
use crate::service_lb::ServiceTargets;
use crate::services::deployment_digits;
use crate::tasks::request_stop;
use crate::{Control, ControlError};
use berth_domain::deployment::Scheduling;
use berth_domain::instance::{ContainerInstance, InstanceStatus, FARGATE_POOL};
use berth_domain::service::{self, LbHealth, Member, Service, ServiceStatus, Tuning};
use berth_domain::task::ObservedTask;
use berth_domain::task::{ContainerStatus, DesiredStatus, StopCode, StopRequest, Task, TaskStatus};
use berth_domain::Scope;
use berth_store::keys::Keys;
use berth_store::{typed, Op, RangeRequest, Txn};
use berth_wire::ecs as w;
use futures::future::BoxFuture;
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Deleted services stay describable (INACTIVE) this long.
const INACTIVE_RETENTION: Duration = Duration::from_secs(3600);
/// A service that cannot place its tasks says so at most this often.
const UNPLACEABLE_EVENT_EVERY: f64 = 60.0;
/// Record kinds whose changes can matter to a cluster's services.
const WATCHED: &[&str] = &[
    "services",
    "tasks",
    "task-states",
    "container-instances",
    "agent-connections",
    // A placement took a warm address: the host's pool needs topping up.
    "warm-ips",
    // Tasks waiting in PROVISIONING for a capacity provider's hosts.
    "waiting-tasks",
];

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// A RUNNING task without container health checks counts as healthy
    /// after this long.
    pub settle: Duration,
    /// An instance whose agent stays disconnected this long is lost: its
    /// tasks are marked STOPPED and their services replace them.
    pub host_loss_grace: Duration,
    /// Every cluster is reconciled at least this often.
    pub resync: Duration,
    /// STOPPED tasks stay describable this long, then their records go
    /// (ECS keeps them at least an hour).
    pub stopped_retention: Duration,
    /// Addresses kept warm per awsvpc-capable host and subnet of its zone.
    pub warm_addresses: usize,
    /// How long a capacity provider's reservation stays under its target
    /// before managed scaling removes spare instances.
    pub managed_scale_in_after: Duration,
    /// How often each service's task counts go to CloudWatch (Container
    /// Insights' RunningTaskCount, PendingTaskCount, DesiredTaskCount).
    pub metrics_interval: Duration,
    /// How Auto Scaling groups get machines, and what their controller
    /// keeps between rounds.
    pub groups: Arc<crate::groups::GroupRuntime>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            settle: Duration::from_secs(5),
            host_loss_grace: Duration::from_secs(3),
            resync: Duration::from_secs(10),
            stopped_retention: Duration::from_secs_f64(berth_domain::task::STOPPED_RETENTION_SECS),
            warm_addresses: 2,
            managed_scale_in_after: Duration::from_secs(150),
            metrics_interval: Duration::from_secs(10),
            groups: Arc::new(crate::groups::GroupRuntime::new(
                None,
                Duration::from_secs(600),
            )),
        }
    }
}

/// A cluster of one account and region.
type ClusterKey = (Scope, String);

/// The account, region and cluster a store key belongs to, if it is one of
/// the kinds the controller watches.
fn cluster_of(key: &str) -> Option<ClusterKey> {
    let rest = key.strip_prefix("/berth/v1/")?;
    let mut parts = rest.splitn(6, '/');
    let (account, region, service, kind, cluster) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (service == "ecs" && WATCHED.contains(&kind) && parts.next().is_some())
        .then(|| (Scope::new(account, region), cluster.to_string()))
}

struct Controller {
    st: Control,
    config: ControllerConfig,
    /// When each instance was first seen disconnected with tasks on it.
    /// Kept in memory: after a restart the grace period starts again,
    /// which only ever waits longer.
    away_since: Mutex<HashMap<(ClusterKey, String), Instant>>,
}

/// Runs the controller until `shutdown`, on the controller runtime: one
/// key per cluster, enqueued by the store's watch and the runtime's resync.
pub async fn run(st: Control, config: ControllerConfig, shutdown: CancellationToken) {
    let resync = config.resync;
    let c = Arc::new(Controller {
        st,
        config,
        away_since: Mutex::new(HashMap::new()),
    });
    // The revision first, then the listing, then the watch from that
    // revision: nothing that changes in between is missed.
    let Some(from) = next_revision(&c.st, &shutdown).await else {
        return;
    };
    let known = match clusters(&c.st).await {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "service controller could not list clusters");
            Known::default()
        }
    };
    let initial: Vec<ClusterKey> = known.clusters.iter().cloned().collect();
    let regions = match crate::alarms::regions(&c.st).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the alarm evaluator could not list regions");
            vec![]
        }
    };
    let alarms = runtime::start(
        Arc::new(Alarms(
            c.clone(),
            crate::alarms::Evaluated::default(),
            crate::elb::Traffic::default(),
        )),
        regions,
        resync,
        Backoff::default(),
        shutdown.clone(),
        &c.st.metrics,
    );
    let all_groups = match crate::groups::all_groups(&c.st).await {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "the group controller could not list groups");
            vec![]
        }
    };
    let groups = runtime::start(
        Arc::new(Groups(c.clone())),
        all_groups,
        resync,
        Backoff::default(),
        shutdown.clone(),
        &c.st.metrics,
    );
    let mut tasks = vec![];
    let mut start = |r: Arc<dyn ErasedStart>, resync: Duration| {
        let (queue, task) = r.start(initial.clone(), resync, &shutdown, &c.st.metrics);
        tasks.push(task);
        queue
    };
    let queues = Queues {
        alarms: alarms.queue,
        groups: groups.queue,
        services: start(Arc::new(Services(c.clone())), resync),
        host_loss: start(Arc::new(HostLoss(c.clone())), resync),
        warm: start(Arc::new(WarmAddresses(c.clone())), resync),
        capacity: start(
            Arc::new(ManagedScaling(c.clone(), Default::default())),
            resync,
        ),
        // It schedules its own next look; its resync is only a backstop,
        // and each one reads every report of the cluster.
        cleanup: start(
            Arc::new(StoppedTasks(c.clone())),
            resync.max(c.config.stopped_retention),
        ),
        // It schedules its own next round.
        metrics: start(
            Arc::new(ServiceMetrics(c.clone())),
            resync.max(c.config.metrics_interval),
        ),
    };
    tasks.push(alarms.task);
    tasks.push(groups.task);
    watch(c, &queues, known, from, shutdown).await;
    for t in tasks {
        t.await.ok();
    }
}

/// A controller's queue, and the task that runs it.
type OnRuntime = (Queue<ClusterKey>, tokio::task::JoinHandle<()>);

/// Starts one of the cluster-keyed controllers on the runtime.
trait ErasedStart {
    fn start(
        self: Arc<Self>,
        initial: Vec<ClusterKey>,
        resync: Duration,
        shutdown: &CancellationToken,
        metrics: &crate::ControlMetrics,
    ) -> OnRuntime;
}

impl<R: Reconciler<Key = ClusterKey>> ErasedStart for R {
    fn start(
        self: Arc<Self>,
        initial: Vec<ClusterKey>,
        resync: Duration,
        shutdown: &CancellationToken,
        metrics: &crate::ControlMetrics,
    ) -> OnRuntime {
        let running = runtime::start(
            self,
            initial,
            resync,
            Backoff::default(),
            shutdown.clone(),
            metrics,
        );
        (running.queue, running.task)
    }
}

/// Where the watch sends each cluster whose records change.
struct Queues {
    services: Queue<ClusterKey>,
    capacity: Queue<ClusterKey>,
    host_loss: Queue<ClusterKey>,
    warm: Queue<ClusterKey>,
    cleanup: Queue<ClusterKey>,
    metrics: Queue<ClusterKey>,
    alarms: Queue<Scope>,
    groups: Queue<(Scope, String)>,
}

/// The revision after the store's current one; None on shutdown.
async fn next_revision(st: &Control, shutdown: &CancellationToken) -> Option<i64> {
    loop {
        match st.store.current_revision().await {
            Ok(r) => return Some(r + 1),
            Err(e) => {
                tracing::warn!(error = %e, "service controller cannot read the store");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// The service controller: keeps each service of a cluster at its
/// desired count and moves its deployments on.
struct Services(Arc<Controller>);

/// Marks the tasks of hosts whose agents stayed away past the grace
/// period STOPPED, so that their services replace them.
struct HostLoss(Arc<Controller>);

/// Keeps addresses warm for the awsvpc-capable hosts of a cluster.
struct WarmAddresses(Arc<Controller>);

/// Removes the records of tasks STOPPED longer than the retention.
struct StoppedTasks(Arc<Controller>);

/// Places tasks waiting for Auto Scaling group capacity providers' hosts
/// and scales those providers' groups (ECS managed scaling).
struct ManagedScaling(Arc<Controller>, crate::managed_scaling::Spare);

impl Reconciler for ManagedScaling {
    type Key = ClusterKey;

    fn name(&self) -> &'static str {
        "managed-scaling"
    }

    fn reconcile<'a>(&'a self, key: &'a ClusterKey) -> BoxFuture<'a, Result<Action, ControlError>> {
        Box::pin(async move {
            let (scope, cluster) = key;
            if cluster == FARGATE_POOL {
                let every = self.0.config.metrics_interval;
                let next = crate::managed_scaling::pool(&self.0.st, scope, &self.1, every).await?;
                return Ok(action(next));
            }
            let timing = crate::managed_scaling::Timing {
                every: self.0.config.metrics_interval,
                scale_in_after: self.0.config.managed_scale_in_after,
            };
            let next =
                crate::managed_scaling::reconcile(&self.0.st, scope, cluster, &self.1, timing)
                    .await?;
            Ok(action(next))
        })
    }
}

/// Publishes each service's task counts to CloudWatch, whether or not
/// tasks run (scaling out from zero reads them).
struct ServiceMetrics(Arc<Controller>);

/// Judges a region's CloudWatch alarms as their periods end, after
/// publishing its queues' depths and running its scheduled scaling.
struct Alarms(
    Arc<Controller>,
    crate::alarms::Evaluated,
    crate::elb::Traffic,
);

/// Makes each Auto Scaling group's instances follow its desired capacity.
struct Groups(Arc<Controller>);

impl Reconciler for Groups {
    type Key = (Scope, String);

    fn name(&self) -> &'static str {
        "autoscaling-groups"
    }

    fn reconcile<'a>(
        &'a self,
        key: &'a (Scope, String),
    ) -> BoxFuture<'a, Result<Action, ControlError>> {
        Box::pin(async move {
            let rt = &self.0.config.groups;
            match crate::groups::reconcile(&self.0.st, rt, &key.0, &key.1).await {
                Ok(next) => Ok(action(next)),
                Err(crate::groups::GroupFailure::Control(e)) => Err(e),
                Err(e) => {
                    tracing::warn!(group = %key.1, error = %e, "group reconcile failed");
                    Ok(Action::RequeueAfter(Duration::from_secs(5)))
                }
            }
        })
    }
}

/// How often the alarm evaluator looks: the shortest alarm period.
const ALARM_ROUND: Duration = Duration::from_secs(10);

impl Reconciler for Alarms {
    type Key = Scope;

    fn name(&self) -> &'static str {
        "alarms"
    }

    fn reconcile<'a>(&'a self, key: &'a Scope) -> BoxFuture<'a, Result<Action, ControlError>> {
        Box::pin(async move {
            let runner: crate::alarms::ActionRunner = std::sync::Arc::new(|ctl, scope, call| {
                Box::pin(crate::scaling::run_action(ctl, scope, call))
            });
            // Scheduled scaling goes first: an alarm's action then sees
            // the bounds in force.
            match crate::scaling::run_scheduled(&self.0.st, key).await {
                Ok(_) => {}
                Err(crate::scaling::ScalingFailure::Control(e)) => return Err(e),
                Err(crate::scaling::ScalingFailure::Aas(e)) => {
                    tracing::warn!(error = %e, "scheduled scaling failed");
                }
            }
            // Load balancer traffic and queue depths next, so that alarms
            // on them judge this look.
            crate::elb::publish_metrics(&self.0.st, key, &self.2).await?;
            match crate::sqs::publish_metrics(&self.0.st, key).await {
                Ok(()) => {}
                Err(crate::sqs::SqsFailure::Control(e)) => return Err(e),
                Err(crate::sqs::SqsFailure::Sqs(e)) => {
                    tracing::warn!(error = %e, "queue metrics failed");
                }
            }
            match crate::alarms::evaluate_region(&self.0.st, key, &self.1, Some(&runner)).await {
                Ok(_) => {}
                Err(crate::alarms::AlarmFailure::Control(e)) => return Err(e),
                Err(crate::alarms::AlarmFailure::Cw(e)) => {
                    tracing::warn!(error = %e, "alarm evaluation failed");
                }
            }
            // The next period end of the shortest period.
            let now = self.0.st.clock.now();
            let step = ALARM_ROUND.as_secs_f64();
            let wait = step - now.rem_euclid(step) + 0.5;
            Ok(Action::RequeueAfter(Duration::from_secs_f64(wait)))
        })
    }
}

fn action(recheck: Option<Duration>) -> Action {
    match recheck {
        Some(after) => Action::RequeueAfter(after),
        None => Action::AwaitChange,
    }
}

impl Reconciler for Services {
    type Key = ClusterKey;

    fn name(&self) -> &'static str {
        "services"
    }

    fn reconcile<'a>(&'a self, key: &'a ClusterKey) -> BoxFuture<'a, Result<Action, ControlError>> {
        Box::pin(async move { Ok(action(self.0.reconcile(&key.0, &key.1).await?)) })
    }
}

impl Reconciler for HostLoss {
    type Key = ClusterKey;

    fn name(&self) -> &'static str {
        "host-loss"
    }

    fn reconcile<'a>(&'a self, key: &'a ClusterKey) -> BoxFuture<'a, Result<Action, ControlError>> {
        Box::pin(async move { Ok(action(self.0.lost_hosts(&key.0, &key.1).await?)) })
    }
}

impl Reconciler for WarmAddresses {
    type Key = ClusterKey;

    fn name(&self) -> &'static str {
        "warm-addresses"
    }

    fn reconcile<'a>(&'a self, key: &'a ClusterKey) -> BoxFuture<'a, Result<Action, ControlError>> {
        Box::pin(async move {
            let (scope, cluster) = key;
            let instances: Vec<ContainerInstance> =
                typed::list::<ContainerInstance>(&*self.0.st.store, &scope.instances_of(cluster))
                    .await?
                    .into_iter()
                    .map(|(_, v)| v.value)
                    .collect();
            self.0.warm(scope, cluster, &instances).await?;
            Ok(Action::AwaitChange)
        })
    }
}

impl Reconciler for ServiceMetrics {
    type Key = ClusterKey;

    fn name(&self) -> &'static str {
        "service-metrics"
    }

    fn reconcile<'a>(&'a self, key: &'a ClusterKey) -> BoxFuture<'a, Result<Action, ControlError>> {
        Box::pin(async move {
            let (scope, cluster) = key;
            let every = self.0.config.metrics_interval;
            if self.0.st.metric_store.is_none() || cluster == FARGATE_POOL {
                return Ok(Action::AwaitChange);
            }
            let st = &self.0.st;
            let services = typed::list::<Service>(&*st.store, &scope.services_of(cluster)).await?;
            if services.is_empty() {
                return Ok(Action::RequeueAfter(every));
            }
            let tasks = ClusterTasks::load(st, scope, cluster).await?;
            let at = st.clock.now() as i64;
            let mut data = vec![];
            for (_, svc) in &services {
                let svc = &svc.value;
                if svc.status != berth_domain::service::ServiceStatus::Active {
                    continue;
                }
                let counts = crate::services::counts_of(&tasks, svc);
                let (running, pending) = counts
                    .by_deployment
                    .values()
                    .fold((0, 0), |(r, p), c| (r + c.running, p + c.pending));
                data.extend(
                    berth_domain::usage_metrics::service_counts(
                        cluster,
                        &svc.name,
                        running,
                        pending,
                        i64::from(svc.desired_count),
                        at,
                    )
                    .into_iter()
                    .map(|d| crate::cloudwatch::stored(berth_domain::usage_metrics::INSIGHTS, d)),
                );
            }
            crate::cloudwatch::publish(st, scope, data).await;
            Ok(Action::RequeueAfter(every))
        })
    }
}

impl Reconciler for StoppedTasks {
    type Key = ClusterKey;

    fn name(&self) -> &'static str {
        "stopped-tasks"
    }

    fn reconcile<'a>(&'a self, key: &'a ClusterKey) -> BoxFuture<'a, Result<Action, ControlError>> {
        Box::pin(async move {
            let (scope, cluster) = key;
            // Nothing wakes it when a retention runs out: it looks again
            // when the next one does. A task that stops after this look
            // runs out no sooner than a whole retention from now.
            let next = self.0.forget_stopped(scope, cluster).await?;
            let retention = self.0.config.stopped_retention;
            Ok(Action::RequeueAfter(
                next.map_or(retention, |n| n.min(retention)),
            ))
        })
    }
}

/// What the watch knows: every cluster with services or tasks, and the
/// tasks that belong to services.
#[derive(Default)]
struct Known {
    clusters: HashSet<ClusterKey>,
    service_tasks: HashSet<(ClusterKey, String)>,
}

/// The kind of record a watched key holds, and the id after its cluster.
fn kind_and_id(key: &str) -> Option<(&str, &str)> {
    let mut parts = key.strip_prefix("/berth/v1/")?.splitn(7, '/');
    let kind = parts.nth(3)?;
    let id = parts.nth(1)?;
    Some((kind, id))
}

/// Whether a change can matter to the cluster's services. A task of no
/// service (RunTask's, StartTask's) and its reports do not: reconciling
/// every service of the cluster on each of them made the controller's
/// work grow with every task placed. Hosts coming and going, and the
/// stopped-task cleanup, have their own events and timers.
fn matters(
    service_tasks: &mut HashSet<(ClusterKey, String)>,
    cluster: &ClusterKey,
    ev: &berth_store::Event,
) -> bool {
    let Some((kind, id)) = kind_and_id(&ev.kv.key) else {
        return true;
    };
    let key = (cluster.clone(), id.to_string());
    match kind {
        "tasks" if ev.kind == berth_store::EventKind::Put => match typed::decode::<Task>(&ev.kv) {
            Ok(t) if t.value.service.is_none() => false,
            _ => {
                service_tasks.insert(key);
                true
            }
        },
        "tasks" => service_tasks.remove(&key),
        "task-states" => service_tasks.contains(&key),
        // A task's role sessions are no service's business.
        "task-credentials" => false,
        _ => true,
    }
}

/// Every cluster with services or tasks, and the tasks of services, found
/// by walking the keys once.
async fn clusters(st: &Control) -> Result<Known, ControlError> {
    let mut out = Known::default();
    let mut after = None;
    loop {
        let page = st
            .store
            .range(RangeRequest {
                prefix: "/berth/v1/".into(),
                start_after: after.clone(),
                limit: Some(1000),
            })
            .await?;
        for kv in &page.kvs {
            if let Some(k) = cluster_of(&kv.key) {
                if kind_and_id(&kv.key).is_some_and(|(kind, _)| kind == "tasks") {
                    let ev = berth_store::Event {
                        kind: berth_store::EventKind::Put,
                        kv: kv.clone(),
                    };
                    matters(&mut out.service_tasks, &k, &ev);
                }
                out.clusters.insert(k);
            }
        }
        match page.kvs.last() {
            Some(kv) if page.kvs.len() == 1000 => after = Some(kv.key.clone()),
            _ => return Ok(out),
        }
    }
}

/// The region whose alarms a key's change concerns: a region's first
/// alarm, or an alarm written or changed (judged at once, not at the next
/// period end).
fn alarm_region(key: &str) -> Option<Scope> {
    let rest = key.strip_prefix("/berth/v1/")?;
    let (account, rest) = rest.split_once('/')?;
    if let Some(region) = rest.strip_prefix("global/cloudwatch-regions/") {
        return Some(Scope::new(account, region));
    }
    let (region, rest) = rest.split_once('/')?;
    rest.starts_with("cloudwatch/alarms/")
        .then(|| Scope::new(account, region))
}

/// The scope whose Fargate pool a key's change concerns, if it is one of
/// the pool's hosts coming, going or losing its agent: any cluster may
/// have tasks there.
fn pool_host_change(key: &str) -> Option<Scope> {
    let (scope, cluster) = cluster_of(key)?;
    let kind = key.split('/').nth(6)?;
    (cluster == FARGATE_POOL && (kind == "container-instances" || kind == "agent-connections"))
        .then_some(scope)
}

/// The scope whose target health a key's change concerns: any service
/// behind a load balancer may count its tasks differently now.
fn target_health_change(key: &str) -> Option<Scope> {
    let rest = key.strip_prefix("/berth/v1/")?;
    let mut parts = rest.splitn(5, '/');
    let (account, region, service, kind) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (service == "elbv2" && kind == "target-health").then(|| Scope::new(account, region))
}

/// Enqueues the clusters whose records change; a change to the Fargate
/// pool's hosts or to target health enqueues every known cluster of its
/// scope, since any of them may have tasks there.
async fn watch(
    c: Arc<Controller>,
    queues: &Queues,
    Known {
        clusters: mut known,
        mut service_tasks,
    }: Known,
    mut from: i64,
    shutdown: CancellationToken,
) {
    loop {
        let mut events = c.st.store.watch("/berth/v1/", from);
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = events.next() => e,
            };
            match ev {
                Some(Ok(ev)) => {
                    if let Some(scope) = alarm_region(&ev.kv.key) {
                        queues.alarms.enqueue(scope, Reason::Changed).await;
                    }
                    if let Some(key) = crate::groups::group_of_key(&ev.kv.key) {
                        queues.groups.enqueue(key, Reason::Changed).await;
                        if let Some(k) = crate::groups::cluster_of_instance_event(&ev) {
                            queues.capacity.enqueue(k, Reason::Changed).await;
                        }
                    }
                    let kind = kind_and_id(&ev.kv.key).map(|(k, _)| k);
                    if let Some(scope) = pool_host_change(&ev.kv.key) {
                        // Any cluster may have tasks on the pool's hosts.
                        for k in known.iter().filter(|o| o.0 == scope && o.1 != FARGATE_POOL) {
                            queues.services.enqueue(k.clone(), Reason::Changed).await;
                            queues.host_loss.enqueue(k.clone(), Reason::Changed).await;
                        }
                    } else if let Some(scope) = target_health_change(&ev.kv.key) {
                        for k in known.iter().filter(|o| o.0 == scope && o.1 != FARGATE_POOL) {
                            queues.services.enqueue(k.clone(), Reason::Changed).await;
                        }
                    }
                    if let Some(k) = cluster_of(&ev.kv.key) {
                        let new = known.insert(k.clone());
                        if matters(&mut service_tasks, &k, &ev) {
                            queues.services.enqueue(k.clone(), Reason::Changed).await;
                        }
                        if matches!(kind, Some("agent-connections" | "container-instances")) {
                            queues.host_loss.enqueue(k.clone(), Reason::Changed).await;
                        }
                        if matches!(kind, Some("container-instances")) {
                            // A launched instance's agent registering makes
                            // it InService in its group.
                            if let Ok(names) = crate::groups::group_names(&c.st, &k.0).await {
                                for g in names {
                                    queues
                                        .groups
                                        .enqueue((k.0.clone(), g), Reason::Changed)
                                        .await;
                                }
                            }
                        }
                        if matches!(
                            kind,
                            Some("waiting-tasks" | "container-instances" | "agent-connections")
                        ) {
                            queues.capacity.enqueue(k.clone(), Reason::Changed).await;
                        }
                        if matches!(kind, Some("warm-ips" | "container-instances")) {
                            queues.warm.enqueue(k.clone(), Reason::Changed).await;
                        }
                        if new {
                            queues.metrics.enqueue(k.clone(), Reason::Changed).await;
                            // The cleanup schedules its own next look from
                            // then on: waking it on every task written made
                            // it read the whole cluster as often.
                            queues.cleanup.enqueue(k, Reason::Changed).await;
                        }
                    }
                }
                // Behind compaction or failed: start again from now; the
                // periodic resync covers what was skipped.
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "service controller watch restarts");
                    break;
                }
                None => break,
            }
        }
        match next_revision(&c.st, &shutdown).await {
            Some(r) => from = r,
            None => return,
        }
    }
}

fn min_recheck(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a cluster's services are reconciled against, read once per reconcile.
struct ClusterView<'a> {
    tasks: &'a ClusterTasks,
    instances: &'a [ContainerInstance],
    /// The instances and, when some of its tasks run there, the Fargate
    /// pool's hosts.
    hosts: &'a [ContainerInstance],
}

/// What one reconcile of a service does, besides writing its record.
struct Work<'a> {
    stops: &'a [service::Stop],
    /// How many tasks to start, and on which instance if one is chosen.
    starts: &'a [(u32, Option<&'a str>)],
    lb: Option<&'a ServiceTargets>,
    members: &'a [Member<'a>],
    /// The hosts its tasks run on (for instance targets).
    hosts: &'a [ContainerInstance],
}

/// What a service's plan (REPLICA or DAEMON) asks of one reconcile.
struct Decided {
    stop: Vec<service::Stop>,
    /// How many tasks to start, and on which instance if one is chosen.
    starts: Vec<(u32, Option<String>)>,
    update: Option<Service>,
    recheck_after: Option<f64>,
}

/// What an attempt to start a service's tasks came to.
struct Started {
    ids: Vec<String>,
    /// Why the rest could not be placed, in ECS's event wording.
    unplaceable: Option<String>,
}

impl Controller {
    async fn reconcile(
        &self,
        scope: &Scope,
        cluster: &str,
    ) -> Result<Option<Duration>, ControlError> {
        let st = &self.st;
        let services = typed::list::<Service>(&*st.store, &scope.services_of(cluster)).await?;
        if services.is_empty() {
            return Ok(None);
        }
        let instances = self.instances(scope, cluster).await?;
        let tasks = ClusterTasks::load(st, scope, cluster).await?;
        // Fargate tasks run on the pool's hosts.
        let mut hosts = instances.clone();
        if tasks.tasks.iter().any(|t| t.value.fargate()) {
            hosts.extend(self.instances(scope, FARGATE_POOL).await?);
        }
        let view = ClusterView {
            tasks: &tasks,
            instances: &instances,
            hosts: &hosts,
        };
        let mut recheck = None;
        for (key, svc) in services {
            let r = match svc.value.scheduling {
                Scheduling::Replica => self.replica(scope, cluster, &key, svc, &view).await?,
                Scheduling::Daemon => self.daemon(scope, cluster, &key, svc, &view).await?,
            };
            recheck = min_recheck(recheck, r);
        }
        Ok(recheck)
    }

    async fn instances(
        &self,
        scope: &Scope,
        cluster: &str,
    ) -> Result<Vec<ContainerInstance>, ControlError> {
        Ok(
            typed::list::<ContainerInstance>(&*self.st.store, &scope.instances_of(cluster))
                .await?
                .into_iter()
                .map(|(_, v)| v.value)
                .collect(),
        )
    }

    /// The host-loss controller's reconcile of a cluster: its hosts, and
    /// the Fargate pool's for the cluster's tasks there. Only the tasks of
    /// hosts that are away are read, from their instances' index: reading
    /// every task of a cluster of 100,000 took seconds of the leader's CPU
    /// each time any host dropped.
    async fn lost_hosts(
        &self,
        scope: &Scope,
        cluster: &str,
    ) -> Result<Option<Duration>, ControlError> {
        let st = &self.st;
        let mut away = vec![];
        for host_cluster in [cluster, FARGATE_POOL] {
            let reachable = connected_agents(st, scope, host_cluster).await?;
            away.extend(
                self.instances(scope, host_cluster)
                    .await?
                    .into_iter()
                    .filter(|ci| !reachable.contains(&ci.id))
                    .map(|ci| (host_cluster, ci.id)),
            );
        }
        let mut on: HashMap<String, Vec<typed::Versioned<Task>>> = HashMap::new();
        let in_pool = format!("{cluster}/");
        for (host_cluster, instance) in away {
            for entry in typed::names(
                &*st.store,
                &scope.instance_tasks_of(host_cluster, &instance),
            )
            .await?
            {
                // The pool's hosts hold every cluster's tasks.
                let id = if host_cluster == FARGATE_POOL {
                    match entry.strip_prefix(&in_pool) {
                        Some(id) => id,
                        None => continue,
                    }
                } else {
                    entry.as_str()
                };
                if let Some(t) = typed::get::<Task>(&*st.store, &scope.task(cluster, id)).await? {
                    on.entry(instance.clone()).or_default().push(t);
                }
            }
        }
        self.host_loss(scope, cluster, &on).await
    }

    /// Keeps `warm_addresses` addresses per awsvpc-capable host and subnet
    /// of its zone held for it, so its agent can make their namespaces
    /// before any task needs one; releases those of hosts that are gone.
    /// A compare that fails (a placement took the address meanwhile) is
    /// left for the next round.
    async fn warm(
        &self,
        scope: &Scope,
        host_cluster: &str,
        instances: &[ContainerInstance],
    ) -> Result<(), ControlError> {
        use berth_domain::network::{allocate, Cidr, WarmAddress, WARM_HOLDER};
        let st = &self.st;
        let want = self.config.warm_addresses;
        let prefix = scope.warm_ips_all(host_cluster);
        let hosts: HashMap<&str, &ContainerInstance> = instances
            .iter()
            .filter(|ci| ci.status == InstanceStatus::Active)
            .filter(|ci| ci.attribute("ecs.capability.task-eni").is_some())
            .map(|ci| (ci.id.as_str(), ci))
            .collect();
        let mut have: HashMap<(String, String), usize> = HashMap::new();
        for (key, w) in typed::list::<WarmAddress>(&*st.store, &prefix).await? {
            let host = key
                .strip_prefix(&prefix)
                .and_then(|r| r.split('/').next())
                .unwrap_or_default();
            if want > 0 && hosts.contains_key(host) {
                *have
                    .entry((host.to_string(), w.value.subnet_id.clone()))
                    .or_default() += 1;
                continue;
            }
            let txn = Txn::when(
                vec![typed::unchanged(&key, w.mod_revision)],
                vec![
                    Op::delete(key.clone()),
                    Op::delete(scope.subnet_ip(&w.value.subnet_id, &w.value.ip)),
                ],
            );
            st.store.txn(txn).await?;
        }
        if want == 0 {
            return Ok(());
        }
        for (host, ci) in &hosts {
            let zone = ci
                .attribute("ecs.availability-zone")
                .and_then(|a| a.value.clone())
                .unwrap_or_default();
            for subnet in st
                .config
                .network
                .subnets
                .iter()
                .filter(|s| s.availability_zone == zone)
            {
                let held = have
                    .get(&(host.to_string(), subnet.id.clone()))
                    .copied()
                    .unwrap_or(0);
                let (Some(cidr), true) = (Cidr::parse(&subnet.cidr), held < want) else {
                    continue;
                };
                let mut taken = subnet_addresses(st, scope, &subnet.id).await?;
                let (mut compares, mut ops) = (vec![], vec![]);
                for _ in held..want {
                    let Some(ip) = allocate(&cidr, &taken) else {
                        break;
                    };
                    taken.insert(ip);
                    let key = scope.subnet_ip(&subnet.id, &ip.to_string());
                    compares.push(typed::unchanged(&key, 0));
                    ops.push(Op::put(
                        key,
                        format!("{WARM_HOLDER}{host_cluster}/{host}").into_bytes(),
                    ));
                    ops.push(typed::put(
                        &scope.warm_ip(host_cluster, host, &subnet.id, &ip.to_string()),
                        &WarmAddress {
                            subnet_id: subnet.id.clone(),
                            ip: ip.to_string(),
                        },
                    ));
                }
                if !ops.is_empty() {
                    st.store.txn(Txn::when(compares, ops)).await?;
                }
            }
        }
        Ok(())
    }

    /// Marks the tasks of instances whose agents stayed away past the grace
    /// period STOPPED, so that their resources are free and their services
    /// replace them. `on`: the tasks of each instance that is away. The
    /// host's containers are stopped when its agent comes back: the tasks
    /// are no longer in its desired set.
    async fn host_loss(
        &self,
        scope: &Scope,
        cluster: &str,
        on: &HashMap<String, Vec<typed::Versioned<Task>>>,
    ) -> Result<Option<Duration>, ControlError> {
        let grace = self.config.host_loss_grace;
        let ck: ClusterKey = (scope.clone(), cluster.to_string());
        let mut lost = vec![];
        let mut recheck = None;
        {
            let mut away = self.away_since.lock();
            away.retain(|(k, id), _| k != &ck || on.contains_key(id.as_str()));
            for id in on.keys() {
                let since = *away
                    .entry((ck.clone(), id.clone()))
                    .or_insert_with(Instant::now);
                let waited = since.elapsed();
                if waited >= grace {
                    lost.push((id.clone(), waited));
                } else {
                    recheck = min_recheck(recheck, Some(grace - waited));
                }
            }
        }
        for (instance, waited) in lost {
            for t in on.get(instance.as_str()).into_iter().flatten() {
                self.mark_lost(scope, cluster, t, waited).await?;
            }
            tracing::warn!(cluster = %cluster, instance = %instance, "host lost: its tasks are marked STOPPED");
        }
        Ok(recheck)
    }

    /// Removes the records of tasks that stopped longer ago than the
    /// retention, so that listings and counts do not grow without end.
    /// A record that changed since it was read stays for the next round.
    /// Reads only what agents reported, and a task's record only once it
    /// is due. How long until the next one is due, if any is STOPPED.
    async fn forget_stopped(
        &self,
        scope: &Scope,
        cluster: &str,
    ) -> Result<Option<Duration>, ControlError> {
        let now = self.st.now();
        let retention = self.config.stopped_retention.as_secs_f64();
        let mut next: Option<Duration> = None;
        let reports =
            typed::list::<ObservedTask>(&*self.st.store, &scope.task_states_of(cluster)).await?;
        for (state_key, report) in reports {
            if Task::last_status(Some(&report.value)) != TaskStatus::Stopped {
                continue;
            }
            // The gateway ends a task's role sessions when it records it
            // STOPPED; this catches a server that went down in between.
            if let Some(id) = state_key.rsplit('/').next() {
                crate::task_role::revoke(&self.st, scope, cluster, id).await?;
            }
            let Some(at) = report.value.stopped_at else {
                continue;
            };
            let due = at + retention - now;
            if due > 0.0 {
                next = min_recheck(next, Some(Duration::from_secs_f64(due)));
                continue;
            }
            let Some(id) = state_key.rsplit('/').next().map(str::to_string) else {
                continue;
            };
            let id = id.as_str();
            let Some(t) = typed::get::<Task>(&*self.st.store, &scope.task(cluster, id)).await?
            else {
                continue;
            };
            let mut compares = vec![
                typed::unchanged(&scope.task(cluster, id), t.mod_revision),
                typed::unchanged(&state_key, report.mod_revision),
            ];
            let mut ops = vec![
                Op::delete(scope.task(cluster, id)),
                Op::delete(state_key),
                Op::delete(index_key(scope, &t.value)),
            ];
            // Its address was freed when it was recorded STOPPED and may
            // be another task's (or a host's warm one) by now: it goes only
            // if it is still this task's.
            if let Some(n) = &t.value.network {
                let ip_key = scope.subnet_ip(&n.subnet_id, &n.ip);
                let mine = scope.task(cluster, id).into_bytes();
                if let Some(kv) = self.st.store.get(&ip_key).await? {
                    if kv.value == mine {
                        compares.push(berth_store::Compare::Value {
                            key: ip_key.clone(),
                            value: mine,
                        });
                        ops.push(Op::delete(ip_key));
                    }
                }
            }
            let txn = Txn::when(compares, ops);
            if !self.st.store.txn(txn).await?.succeeded {
                // It changed since it was read: another look soon.
                next = min_recheck(next, Some(Duration::from_secs(1)));
            }
        }
        Ok(next)
    }

    /// Records a task of a lost host as STOPPED: the observed record (no
    /// agent will report it any more), the stop on the desired record, and
    /// its removal from the instance's index, in one transaction.
    async fn mark_lost(
        &self,
        scope: &Scope,
        cluster: &str,
        t: &typed::Versioned<Task>,
        waited: Duration,
    ) -> Result<(), ControlError> {
        let st = &self.st;
        let id = &t.value.id;
        let state_key = scope.task_state(cluster, id);
        let current = typed::get::<ObservedTask>(&*st.store, &state_key).await?;
        if Task::last_status(current.as_ref().map(|r| &r.value)) == TaskStatus::Stopped {
            return Ok(());
        }
        let at = self.st.now();
        let reason = if t.value.fargate() {
            format!(
                "Host lost: the Fargate host running the task was disconnected for {} s",
                waited.as_secs()
            )
        } else {
            format!(
                "Host lost: the agent of container instance {} was disconnected for {} s",
                t.value.container_instance,
                waited.as_secs()
            )
        };
        let mut report = current
            .as_ref()
            .map(|r| r.value.clone())
            .unwrap_or_else(|| ObservedTask {
                task_arn: t.value.arn(scope),
                ..Default::default()
            });
        report.last_status = TaskStatus::Stopped;
        report.stopping_at.get_or_insert(at);
        report.execution_stopped_at.get_or_insert(at);
        report.stopped_at = Some(at);
        for c in &mut report.containers {
            if c.last_status != ContainerStatus::Stopped {
                c.last_status = ContainerStatus::Stopped;
                c.reason = Some("Host lost".into());
            }
        }
        let mut task = t.value.clone();
        if task.stop.is_none() {
            task.stop = Some(StopRequest {
                code: if task.service.is_some() {
                    StopCode::ServiceSchedulerInitiated
                } else {
                    StopCode::TerminationNotice
                },
                reason,
                at,
                failure: false,
            });
        }
        task.desired_status = DesiredStatus::Stopped;
        task.version += 1;
        let txn = Txn::when(
            vec![
                typed::unchanged(&scope.task(cluster, id), t.mod_revision),
                typed::unchanged(&state_key, current.as_ref().map_or(0, |r| r.mod_revision)),
            ],
            [
                typed::put(&scope.task(cluster, id), &task),
                typed::put(&state_key, &report),
                Op::delete(index_key(scope, &task)),
                // Billed up to when the host was given up for lost.
                typed::put(&scope.usage(cluster, id), &task.usage(Some(&report))),
            ]
            .into_iter()
            .chain(
                task.network
                    .iter()
                    .map(|n| Op::delete(scope.subnet_ip(&n.subnet_id, &n.ip))),
            )
            .collect(),
        );
        // A lost race means the agent or a user got there first; the next
        // reconcile looks again.
        st.store.txn(txn).await?;
        Ok(())
    }

    fn members<'a>(
        &self,
        svc: &Service,
        tasks: &'a ClusterTasks,
        instances: &[ContainerInstance],
        lb: &'a HashMap<String, LbHealth>,
    ) -> Vec<Member<'a>> {
        let draining: HashSet<&str> = instances
            .iter()
            .filter(|ci| ci.status == InstanceStatus::Draining)
            .map(|ci| ci.id.as_str())
            .collect();
        let mut members = crate::services::members(tasks, svc, &draining);
        for m in &mut members {
            m.lb = lb.get(&m.task.id);
        }
        members
    }

    /// A service's target groups and how each of its tasks' targets stand.
    async fn targets(
        &self,
        scope: &Scope,
        svc: &Service,
        tasks: &ClusterTasks,
        hosts: &[ContainerInstance],
    ) -> Result<(Option<ServiceTargets>, HashMap<String, LbHealth>), ControlError> {
        let Some(targets) = ServiceTargets::load(&self.st, scope, svc).await? else {
            return Ok((None, HashMap::new()));
        };
        let health = tasks
            .tasks
            .iter()
            .filter(|t| t.value.service.as_deref() == Some(svc.name.as_str()))
            .map(|t| {
                let h = targets.health(&t.value, tasks.report(&t.value.id), hosts);
                (t.value.id.clone(), h)
            })
            .collect();
        Ok((Some(targets), health))
    }

    /// Stops the tasks whose targets have drained; says when the next
    /// drain ends.
    async fn finish_draining(
        &self,
        scope: &Scope,
        cluster: &str,
        members: &[Member<'_>],
    ) -> Result<Option<Duration>, ControlError> {
        let at = self.st.now();
        let mut recheck = None;
        for m in members {
            let Some(d) = &m.task.deactivation else {
                continue;
            };
            if m.task.desired_status == DesiredStatus::Stopped {
                continue;
            }
            if at < d.until {
                recheck = min_recheck(recheck, Some(Duration::from_secs_f64(d.until - at)));
                continue;
            }
            request_stop(
                &self.st,
                scope,
                cluster,
                &m.task.id,
                d.stop.code,
                &d.stop.reason,
                d.stop.failure,
            )
            .await?;
        }
        Ok(recheck)
    }

    fn tuning(&self) -> Tuning {
        Tuning {
            settle_secs: self.config.settle.as_secs_f64(),
        }
    }

    async fn replica(
        &self,
        scope: &Scope,
        cluster: &str,
        key: &str,
        svc: typed::Versioned<Service>,
        view: &ClusterView<'_>,
    ) -> Result<Option<Duration>, ControlError> {
        self.reconcile_with(scope, cluster, key, &svc, view, |members| {
            let plan = service::plan(&svc.value, members, self.tuning(), self.st.now(), || {
                (uuid::Uuid::new_v4().to_string(), deployment_digits())
            });
            Decided {
                stop: plan.stop,
                starts: (plan.start > 0)
                    .then_some((plan.start, None))
                    .into_iter()
                    .collect(),
                update: plan.update,
                recheck_after: plan.recheck_after,
            }
        })
        .await
    }

    /// DAEMON: which instances should run a task is decided here, with
    /// the scheduler's feasibility rules; the rest by `plan_daemon`.
    async fn daemon(
        &self,
        scope: &Scope,
        cluster: &str,
        key: &str,
        svc: typed::Versioned<Service>,
        view: &ClusterView<'_>,
    ) -> Result<Option<Duration>, ControlError> {
        let s = &svc.value;
        let eligible = if s.status == ServiceStatus::Active {
            self.daemon_instances(scope, s, view.instances).await?
        } else {
            BTreeSet::new()
        };
        self.reconcile_with(scope, cluster, key, &svc, view, |members| {
            let plan =
                service::plan_daemon(s, members, &eligible, self.tuning(), self.st.now(), || {
                    (uuid::Uuid::new_v4().to_string(), deployment_digits())
                });
            Decided {
                stop: plan.stop,
                starts: plan.start_on.into_iter().map(|i| (1, Some(i))).collect(),
                update: plan.update,
                recheck_after: plan.recheck_after,
            }
        })
        .await
    }

    /// One reconcile of either kind of service: observe its tasks and
    /// their targets, end the drains that are due, let `decide` plan, and
    /// carry the plan out. Returns when to look again.
    async fn reconcile_with(
        &self,
        scope: &Scope,
        cluster: &str,
        key: &str,
        svc: &typed::Versioned<Service>,
        view: &ClusterView<'_>,
        decide: impl FnOnce(&[Member<'_>]) -> Decided,
    ) -> Result<Option<Duration>, ControlError> {
        let (tasks, instances, hosts) = (view.tasks, view.instances, view.hosts);
        let (lb, lb_health) = self.targets(scope, &svc.value, tasks, hosts).await?;
        let members = self.members(&svc.value, tasks, instances, &lb_health);
        let draining = self.finish_draining(scope, cluster, &members).await?;
        let decided = decide(&members);
        let starts: Vec<(u32, Option<&str>)> = decided
            .starts
            .iter()
            .map(|(n, on)| (*n, on.as_deref()))
            .collect();
        let work = Work {
            stops: &decided.stop,
            starts: &starts,
            lb: lb.as_ref(),
            members: &members,
            hosts,
        };
        self.carry_out(scope, cluster, key, svc, decided.update, work)
            .await?;
        Ok(min_recheck(
            decided.recheck_after.map(Duration::from_secs_f64),
            draining,
        ))
    }

    /// The ACTIVE instances a DAEMON service belongs on: those whose
    /// attributes satisfy its task definition and memberOf constraints.
    /// Resources and what already runs there do not decide whether an
    /// instance is meant to run one (placing it does).
    async fn daemon_instances(
        &self,
        scope: &Scope,
        s: &Service,
        instances: &[ContainerInstance],
    ) -> Result<BTreeSet<String>, ControlError> {
        let launch = match self.launch(scope, s, 1).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(service = %s.name, error = %e, "daemon service cannot launch");
                return Ok(BTreeSet::new());
            }
        };
        // Only attributes matter here, so an empty view of what runs will do.
        let nothing = Occupancy::default();
        Ok(instances
            .iter()
            .filter(|ci| ci.status == InstanceStatus::Active)
            .filter(|ci| {
                let mut view = nothing.placeable(scope, ci);
                view.cpu_free = i64::MAX / 4;
                view.memory_free = i64::MAX / 4;
                view.tcp_ports_taken.clear();
                view.udp_ports_taken.clear();
                view.agent_connected = true;
                view.groups.clear();
                let snap = berth_scheduler::Snapshot::new(vec![view]);
                !snap.place(&launch.request, 0).placements.is_empty()
            })
            .map(|ci| ci.id.clone())
            .collect())
    }

    /// Carries out a reconcile's decision: the stops, then the starts
    /// (`count` tasks, on one instance when named), then the record with
    /// the events they make.
    #[allow(clippy::too_many_arguments)]
    async fn carry_out(
        &self,
        scope: &Scope,
        cluster: &str,
        key: &str,
        read: &typed::Versioned<Service>,
        update: Option<Service>,
        work: Work<'_>,
    ) -> Result<(), ControlError> {
        let mut next = update.unwrap_or_else(|| read.value.clone());
        let mut said = vec![];
        if let Some(lb) = work.lb {
            let (done, refused) = lb.sync(&self.st, work.members, work.hosts).await?;
            said.extend(done);
            // A role that may not change the targets is told like a task
            // that cannot be placed: at most once a minute.
            self.unplaceable(&mut next, refused, &mut said);
        }
        let (stopped, draining) = self.stop(scope, cluster, work.stops, work.lb).await?;
        if !draining.is_empty() {
            said.push(format!(
                "has begun draining connections on {} tasks.",
                draining.len()
            ));
        }
        if !stopped.is_empty() {
            said.push(stopped_event(&stopped));
        }
        let (mut ids, mut unplaceable) = (vec![], None);
        for (count, only) in work.starts {
            let started = self.start(scope, cluster, &next, *count, *only).await?;
            ids.extend(started.ids);
            unplaceable = unplaceable.or(started.unplaceable);
        }
        if !ids.is_empty() {
            said.push(started_event(&ids));
        }
        self.unplaceable(&mut next, unplaceable, &mut said);
        self.write(scope, cluster, key, read, next, said).await
    }

    /// A service's launch of `count` tasks of its PRIMARY deployment.
    async fn launch(
        &self,
        scope: &Scope,
        svc: &Service,
        count: usize,
    ) -> Result<Launch, ControlError> {
        let group = svc.group();
        let strategies =
            if svc.placement_strategy.is_empty() && svc.scheduling == Scheduling::Replica {
                default_strategy()
            } else {
                svc.placement_strategy.clone()
            };
        let tags = (svc.propagate_tags == "SERVICE").then_some(svc.tags.as_slice());
        prepare(
            &self.st,
            scope,
            LaunchInput {
                task_definition: Some(&svc.primary().task_definition_arn),
                group: Some(&group),
                started_by: Some(&svc.primary().id),
                service: Some(&svc.name),
                tags,
                definition_tags: svc.propagate_tags == "TASK_DEFINITION",
                constraints: Some(&svc.placement_constraints),
                // Fargate places by itself and refuses strategies.
                strategies: (svc.launch_type != "FARGATE").then_some(strategies.as_slice()),
                launch_type: &svc.launch_type,
                strategy: &svc.capacity_provider_strategy,
                count,
                enable_execute_command: svc.enable_execute_command,
                network_configuration: svc.network_configuration.as_ref(),
                ..Default::default()
            },
        )
        .await
    }

    /// Places and records `count` new tasks of the service's PRIMARY
    /// deployment (on `only`, for a DAEMON service).
    async fn start(
        &self,
        scope: &Scope,
        cluster: &str,
        svc: &Service,
        count: u32,
        only: Option<&str>,
    ) -> Result<Started, ControlError> {
        let st = &self.st;
        let mut launch = match self.launch(scope, svc, count as usize).await {
            Ok(l) => l,
            Err(ControlError::Ecs(e)) => {
                return Ok(Started {
                    ids: vec![],
                    unplaceable: Some(format!("was unable to place a task: {e}")),
                })
            }
            Err(e) => return Err(e),
        };
        if !svc.capacity_provider_strategy.is_empty() {
            // The split counts the providers of the tasks it keeps.
            let tasks = ClusterTasks::load(st, scope, cluster).await?;
            for t in &tasks.tasks {
                let t = &t.value;
                let live = t.desired_status == DesiredStatus::Running
                    && Task::last_status(tasks.report(&t.id)) != TaskStatus::Stopped;
                if live && t.service.as_deref() == Some(svc.name.as_str()) {
                    if let Some(p) = &t.capacity_provider {
                        *launch.held.entry(p.clone()).or_default() += 1;
                    }
                }
            }
        }
        let launch = &launch;
        let _turn = crate::placement::turn(st, scope, cluster, launch).await?;
        let (ids, failures, none) = compare_and_swap::<_, ControlError, _>(
            st,
            || "Tasks are being placed in this cluster by other requests.".into(),
            move || async move {
                let placed = place(st, scope, cluster, launch, only).await?;
                let ids = placed.tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
                let answer = (ids, placed.failures, placed.no_instances);
                if answer.0.is_empty() {
                    return Ok(Attempt::Done(answer));
                }
                Ok(Attempt::Write(
                    Txn::when(placed.compares, placed.ops),
                    answer,
                ))
            },
        )
        .await?;
        if !ids.is_empty() {
            tracing::info!(cluster = %cluster, service = %svc.name, tasks = ids.len(), "service tasks placed");
        }
        let unplaceable = (ids.len() < count as usize).then(|| unplaceable_event(none, &failures));
        Ok(Started { ids, unplaceable })
    }

    /// Stops tasks; those with targets in a load balancer drain first.
    /// Returns the stopped and the draining ones.
    async fn stop(
        &self,
        scope: &Scope,
        cluster: &str,
        stops: &[service::Stop],
        lb: Option<&ServiceTargets>,
    ) -> Result<(Vec<String>, Vec<String>), ControlError> {
        let (mut done, mut draining) = (vec![], vec![]);
        for s in stops {
            if let Some(lb) = lb {
                if lb
                    .deactivate(&self.st, &s.task, &s.reason, s.failure)
                    .await?
                {
                    draining.push(s.task.clone());
                    continue;
                }
            }
            let t = request_stop(
                &self.st,
                scope,
                cluster,
                &s.task,
                StopCode::ServiceSchedulerInitiated,
                &s.reason,
                s.failure,
            )
            .await?;
            if t.is_some() {
                done.push(s.task.clone());
            }
        }
        Ok((done, draining))
    }

    /// Adds the "unable to place" event, at most once a minute.
    fn unplaceable(&self, next: &mut Service, why: Option<String>, said: &mut Vec<String>) {
        let Some(why) = why else {
            return;
        };
        let at = self.st.now();
        if next
            .unplaceable_reported_at
            .is_some_and(|t| at - t < UNPLACEABLE_EVENT_EVERY)
        {
            return;
        }
        next.unplaceable_reported_at = Some(at);
        said.push(why);
    }

    /// Writes the service record the reconcile computed, with its events.
    /// If a user changed the service meanwhile, only the events are added
    /// to what they wrote, and the next reconcile decides again.
    async fn write(
        &self,
        scope: &Scope,
        cluster: &str,
        key: &str,
        read: &typed::Versioned<Service>,
        mut next: Service,
        said: Vec<String>,
    ) -> Result<(), ControlError> {
        if said.is_empty() && next == read.value {
            return Ok(());
        }
        let at = self.st.now();
        for m in &said {
            next.say(at, uuid::Uuid::new_v4().to_string(), m);
        }
        if next.version == read.value.version {
            next.version += 1;
        }
        let st = &self.st;
        if next.status == ServiceStatus::Inactive {
            let lease = st.store.lease_grant(INACTIVE_RETENTION).await?;
            let gone = scope.inactive_service(cluster, &next.name);
            let txn = Txn::when(
                vec![typed::unchanged(key, read.mod_revision)],
                vec![
                    Op::delete(key.to_string()),
                    Op::Put {
                        key: gone,
                        value: typed::encode(&next),
                        lease: Some(lease.id),
                    },
                ],
            );
            if st.store.txn(txn).await?.succeeded {
                tracing::info!(cluster = %cluster, service = %next.name, "service INACTIVE");
            }
            return Ok(());
        }
        let txn = Txn::when(
            vec![typed::unchanged(key, read.mod_revision)],
            vec![typed::put(key, &next)],
        );
        if st.store.txn(txn).await?.succeeded || said.is_empty() {
            return Ok(());
        }
        // Lost to a user's update: keep what happened (the events).
        let (said, key) = (&said, key);
        compare_and_swap::<_, ControlError, _>(
            st,
            || "The service keeps changing.".into(),
            move || async move {
                let Some(current) = typed::get::<Service>(&*st.store, key).await? else {
                    return Ok(Attempt::Done(()));
                };
                let mut s = current.value;
                for m in said {
                    s.say(at, uuid::Uuid::new_v4().to_string(), m);
                }
                s.version += 1;
                Ok(Attempt::Write(
                    Txn::when(
                        vec![typed::unchanged(key, current.mod_revision)],
                        vec![typed::put(key, &s)],
                    ),
                    (),
                ))
            },
        )
        .await
    }
}

/// A REPLICA service's placement when it names none: spread over
/// availability zones, then over instances.
fn default_strategy() -> Vec<w::PlacementStrategy> {
    vec![
        w::PlacementStrategy {
            r#type: Some("spread".into()),
            field: Some("attribute:ecs.availability-zone".into()),
        },
        w::PlacementStrategy {
            r#type: Some("spread".into()),
            field: Some("instanceId".into()),
        },
    ]
}

fn task_list(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("(task {id})"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn started_event(ids: &[String]) -> String {
    format!("has started {} tasks: {}.", ids.len(), task_list(ids))
}

fn stopped_event(ids: &[String]) -> String {
    format!(
        "has stopped {} running tasks: {}.",
        ids.len(),
        task_list(ids)
    )
}

/// ECS's "unable to place" event, naming the closest instance's problem.
fn unplaceable_event(no_instances: bool, failures: &[w::Failure]) -> String {
    let lead =
        "was unable to place a task because no container instance met all of its requirements.";
    if no_instances {
        return format!("{lead} Reason: No Container Instances were found in your cluster.");
    }
    let Some(f) = failures.first() else {
        return lead.to_string();
    };
    let detail = f
        .detail
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    // Fargate names no host.
    if f.arn.is_none() {
        let reason = f.reason.as_deref().unwrap_or_default();
        return format!("{lead} Reason: {reason}{detail}.");
    }
    let id = f
        .arn
        .as_deref()
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or_default();
    let what = match f.reason.as_deref().unwrap_or_default() {
        "RESOURCE:CPU" => "has insufficient CPU units available".to_string(),
        "RESOURCE:MEMORY" => "has insufficient memory available".to_string(),
        "RESOURCE:PORTS" => "is already using a port required by your task".to_string(),
        "AGENT" => "is not connected (its agent is disconnected)".to_string(),
        "ATTRIBUTE" => format!("is missing an attribute required by your task{detail}"),
        other => format!("does not qualify: {other}"),
    };
    format!(
        "{lead} The closest matching (container-instance {id}) {what}. For more information, see the Troubleshooting section."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_cluster() {
        let s = Scope::new("000000000000", "us-east-1");
        let k = s.task_state("web", "abc");
        assert_eq!(cluster_of(&k), Some((s.clone(), "web".into())));
        assert_eq!(
            cluster_of(&s.service("prod", "api")),
            Some((s.clone(), "prod".into()))
        );
        assert_eq!(cluster_of(&s.placement("web")), None);
        assert_eq!(cluster_of(&s.cluster("web")), None);
        assert_eq!(
            pool_host_change(&s.agent_connection(FARGATE_POOL, "h")),
            Some(s.clone())
        );
        assert_eq!(
            pool_host_change(&s.warm_ip(FARGATE_POOL, "h", "subnet-a", "10.0.0.4")),
            None
        );
        assert_eq!(pool_host_change(&s.agent_connection("web", "h")), None);
        assert_eq!(kind_and_id(&k), Some(("task-states", "abc")));
    }

    #[test]
    fn only_changes_to_service_tasks_wake_the_services() {
        let s = Scope::new("000000000000", "us-east-1");
        let c: ClusterKey = (s.clone(), "web".into());
        let mut known = HashSet::new();
        let event = |kind, key: String, value: &str| berth_store::Event {
            kind,
            kv: berth_store::KeyValue {
                key,
                value: value.as_bytes().to_vec(),
                create_revision: 1,
                mod_revision: 1,
                version: 1,
                lease: None,
            },
        };
        let put = berth_store::EventKind::Put;
        // A record that cannot be read wakes them, to be safe.
        assert!(matters(
            &mut known,
            &c,
            &event(put, s.task("web", "a"), "{")
        ));
        assert!(known.contains(&(c.clone(), "a".to_string())));
        assert!(matters(
            &mut known,
            &c,
            &event(put, s.task_state("web", "a"), "{}")
        ));
        // Reports of tasks of no service do not.
        assert!(!matters(
            &mut known,
            &c,
            &event(put, s.task_state("web", "b"), "{}")
        ));
        assert!(matters(
            &mut known,
            &c,
            &event(put, s.service("web", "api"), "{}")
        ));
        let delete = berth_store::EventKind::Delete;
        assert!(matters(
            &mut known,
            &c,
            &event(delete, s.task("web", "a"), "")
        ));
        assert!(!known.contains(&(c.clone(), "a".to_string())));
    }

    #[test]
    fn unplaceable_events_name_the_closest_instance() {
        let f = w::Failure {
            arn: Some("arn:aws:ecs:r:1:container-instance/c/abc".into()),
            reason: Some("RESOURCE:MEMORY".into()),
            detail: None,
        };
        let m = unplaceable_event(false, &[f]);
        assert!(
            m.contains("(container-instance abc) has insufficient memory available"),
            "{m}"
        );
        assert!(unplaceable_event(true, &[]).contains("No Container Instances were found"));
        let f = w::Failure {
            arn: Some("arn:aws:ecs:r:1:container-instance/c/abc".into()),
            reason: Some("ATTRIBUTE".into()),
            detail: Some("MISSING ATTRIBUTE: ecs.capability.x".into()),
        };
        let m = unplaceable_event(false, &[f]);
        assert!(
            m.contains("is missing an attribute required by your task (MISSING ATTRIBUTE: ecs.capability.x)"),
            "{m}"
        );
    }
}
