//! Placement on a live snapshot: each cluster's placement state (its
//! instances, which agents are connected, what every task that is not
//! STOPPED holds on which instance) is loaded once and then kept up to date
//! from the store's watch, instead of being re-read for every RunTask. A
//! placement still orders on the cluster's placement key: it reads the
//! key's revision, waits until the snapshot has applied at least that
//! revision (so every placement committed before is in it), plans, and
//! commits comparing the key; a conflict re-plans. The snapshot can only
//! be behind in ways that under-use hosts (a task that stopped, an instance
//! that registered), never in ways that oversubscribe them.
//!
//! Placements of one cluster also take turns within the process, so that
//! concurrent RunTasks queue on the snapshot rather than conflict in the
//! store and re-plan.

use crate::placement::placeable;
use crate::{Control, ControlError};
use berth_domain::instance::ContainerInstance;
use berth_domain::task::ObservedTask;
use berth_domain::task::{Claim, Task, TaskStatus, Usage};
use berth_domain::Scope;
use berth_scheduler as sched;
use berth_store::keys::Keys;
use berth_store::{typed, Event, EventKind, RangeRequest, Store};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a placement waits for the snapshot to catch up with the
/// placement key before it gives up (the store's watch is stuck).
const CATCH_UP: Duration = Duration::from_secs(10);

/// Every cluster's live placement state in this process.
pub struct Live {
    clusters: parking_lot::Mutex<HashMap<(Scope, String), Arc<ClusterLive>>>,
    stop: CancellationToken,
    /// The runtime of the placement thread, when there is one.
    thread: Option<tokio::runtime::Handle>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            clusters: parking_lot::Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
            thread: None,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Live {
    /// Snapshots whose followers and placement turns run on a thread of
    /// their own, until this is dropped. A turn is serial: the cluster's
    /// placement rate is one turn's plan, commit and catch-up after
    /// another. On a thread that also serves connections, each step of a
    /// turn waits behind every connection task that the last commit woke
    /// (a push to each host it placed on); on its own thread it runs as
    /// soon as the operating system gives it a core.
    pub fn on_own_thread() -> std::io::Result<Live> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut live = Live::default();
        live.thread = Some(runtime.handle().clone());
        let stop = live.stop.clone();
        std::thread::Builder::new()
            .name("berth-placement".into())
            .spawn(move || runtime.block_on(stop.cancelled()))?;
        Ok(live)
    }

    /// Runs `work` where placement runs: the placement thread, or the
    /// caller's runtime when there is none (component tests, so that
    /// paused time covers it).
    pub(crate) fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let runtime = self
            .thread
            .clone()
            .unwrap_or_else(tokio::runtime::Handle::current);
        runtime.spawn(work);
    }

    /// The cluster's live state, loaded and watched from its first use.
    pub(crate) async fn cluster(
        &self,
        st: &Control,
        scope: &Scope,
        cluster: &str,
    ) -> Result<Arc<ClusterLive>, ControlError> {
        let key = (scope.clone(), cluster.to_string());
        if let Some(c) = self.clusters.lock().get(&key) {
            return Ok(c.clone());
        }
        let made = Arc::new(ClusterLive::new(scope, cluster));
        let c = self
            .clusters
            .lock()
            .entry(key)
            .or_insert_with(|| made.clone())
            .clone();
        if Arc::ptr_eq(&c, &made) {
            self.spawn(follow(st.store.clone(), made, self.stop.child_token()));
        }
        Ok(c)
    }

    /// How many clusters have a live snapshot (for tests).
    pub fn clusters(&self) -> usize {
        self.clusters.lock().len()
    }
}

/// A plan, with the records of the instances it places on by ARN.
pub(crate) type PlanOn = (sched::Plan, HashMap<Arc<str>, ContainerInstance>);

/// One cluster's live placement state.
pub(crate) struct ClusterLive {
    /// Held while a placement plans and commits.
    pub(crate) turn: Arc<tokio::sync::Mutex<()>>,
    /// RunTasks waiting for the next turn, which places them together.
    pub(crate) runs: parking_lot::Mutex<crate::tasks::Runs>,
    state: parking_lot::Mutex<State>,
    /// The store revision the state reflects, complete (0: not loaded).
    applied: tokio::sync::watch::Sender<i64>,
}

impl ClusterLive {
    fn new(scope: &Scope, cluster: &str) -> Self {
        ClusterLive {
            turn: Arc::new(tokio::sync::Mutex::new(())),
            runs: parking_lot::Mutex::new(Default::default()),
            state: parking_lot::Mutex::new(State::new(scope, cluster)),
            applied: tokio::sync::watch::channel(0).0,
        }
    }

    /// Waits until the state reflects every change up to `revision`.
    pub(crate) async fn caught_up(&self, revision: i64) -> Result<(), ControlError> {
        let mut rx = self.applied.subscribe();
        let reached = tokio::time::timeout(CATCH_UP, async {
            rx.wait_for(|r| *r >= revision.max(1)).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(ControlError::Internal(format!(
                "the placement snapshot did not reach revision {revision} within {CATCH_UP:?}"
            ))),
        }
    }

    /// Plans each request on the cluster's hosts as the snapshot has them
    /// (only on its instance, when it names one), each seeing what the
    /// ones before it placed: whether the cluster has no instance at all,
    /// and each plan with the records of the instances it placed on.
    pub(crate) fn plan_many(
        &self,
        scope: &Scope,
        asks: &[(Only<'_>, &sched::Request, u64)],
    ) -> (bool, Vec<PlanOn>) {
        let mut s = self.state.lock();
        s.refresh(scope);
        let mut plans = Vec::with_capacity(asks.len());
        let mut touched = HashSet::new();
        for (i, &(only, req, seed)) in asks.iter().enumerate() {
            let plan = match only {
                Only::Any => s.snapshot.place(req, seed),
                Only::Instance(id) => {
                    let one = s
                        .arns
                        .get(id)
                        .and_then(|arn| s.snapshot.get(arn))
                        .cloned()
                        .into_iter()
                        .collect();
                    sched::Snapshot::new(one).place(req, seed)
                }
                Only::Ec2(ids) => {
                    let some = s
                        .instances
                        .values()
                        .filter(|ci| ids.contains(&ci.ec2_instance_id))
                        .filter_map(|ci| s.arns.get(&ci.id))
                        .filter_map(|arn| s.snapshot.get(arn))
                        .cloned()
                        .collect();
                    sched::Snapshot::new(some).place(req, seed)
                }
            };
            let on: HashMap<Arc<str>, ContainerInstance> = plan
                .placements
                .iter()
                .filter_map(|p| {
                    let id = p.instance.rsplit('/').next()?;
                    Some((p.instance.clone(), s.instances.get(id)?.clone()))
                })
                .collect();
            // The next request sees this one's tasks; the instances are
            // rebuilt from what the store holds before the next turn,
            // whether or not this placement commits.
            if i + 1 < asks.len() {
                s.snapshot.commit(req, &plan);
                touched.extend(on.values().map(|ci| ci.id.clone()));
            }
            plans.push((plan, on));
        }
        s.dirty.extend(touched);
        (s.instances.is_empty(), plans)
    }
}

/// Which of a cluster's instances a request may use.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Only<'a> {
    Any,
    /// A DAEMON service's task: its instance.
    Instance(&'a str),
    /// An Auto Scaling group capacity provider's task: its group's
    /// instances, by EC2 instance id.
    Ec2(&'a HashSet<String>),
}

/// A task that is not STOPPED: what it claims, what its agent reported,
/// and what it holds on its instance.
struct Counted {
    claim: Claim,
    report: Option<ObservedTask>,
    held: Usage,
}

/// What a cluster's placement needs to know, kept from the watch.
struct State {
    instances_prefix: String,
    connections_prefix: String,
    tasks_prefix: String,
    states_prefix: String,
    instances: BTreeMap<String, ContainerInstance>,
    connected: HashSet<String>,
    /// Tasks that are not STOPPED. Boxed so that the table holds a key
    /// and a pointer: growing a table of 100,000 entries of 450 bytes
    /// allocated and first touched over 100 MiB at once, with the state
    /// locked, and RunTask's slowest answers waited 150-300 ms on it.
    tasks: HashMap<String, Box<Counted>>,
    /// What the tasks on each instance hold, kept as tasks come and go.
    used: HashMap<String, Usage>,
    /// Reports of tasks not seen yet (loading reads reports first).
    early: HashMap<String, ObservedTask>,
    /// Tasks known STOPPED, so that a later write of their record does
    /// not count them again; forgotten with their records.
    stopped: HashSet<String>,
    /// The scheduler's view of the instances, kept as they change.
    snapshot: sched::Snapshot,
    /// Each instance's ARN in the snapshot, by id.
    arns: HashMap<String, Arc<str>>,
    dirty: HashSet<String>,
}

impl State {
    fn new(scope: &Scope, cluster: &str) -> Self {
        State {
            instances_prefix: scope.instances_of(cluster),
            connections_prefix: scope.agent_connections_of(cluster),
            tasks_prefix: scope.tasks_of(cluster),
            states_prefix: scope.task_states_of(cluster),
            instances: BTreeMap::new(),
            connected: HashSet::new(),
            tasks: HashMap::new(),
            used: HashMap::new(),
            early: HashMap::new(),
            stopped: HashSet::new(),
            snapshot: sched::Snapshot::default(),
            arns: HashMap::new(),
            dirty: HashSet::new(),
        }
    }

    fn clear(&mut self) {
        self.instances.clear();
        self.connected.clear();
        self.tasks.clear();
        self.used.clear();
        self.early.clear();
        self.stopped.clear();
        self.snapshot = sched::Snapshot::default();
        self.arns.clear();
        self.dirty.clear();
    }

    fn apply(&mut self, ev: &Event) {
        let key = ev.kv.key.as_str();
        let put = ev.kind == EventKind::Put;
        if let Some(id) = key.strip_prefix(&self.instances_prefix) {
            let id = id.to_string();
            match put
                .then(|| typed::decode::<ContainerInstance>(&ev.kv).ok())
                .flatten()
            {
                Some(ci) => {
                    self.instances.insert(id.clone(), ci.value);
                }
                None => {
                    self.instances.remove(&id);
                }
            }
            self.dirty.insert(id);
        } else if let Some(id) = key.strip_prefix(&self.connections_prefix) {
            if put {
                self.connected.insert(id.to_string());
            } else {
                self.connected.remove(id);
            }
            self.dirty.insert(id.to_string());
        } else if let Some(id) = key.strip_prefix(&self.tasks_prefix) {
            let id = id.to_string();
            match put.then(|| typed::decode::<Claim>(&ev.kv).ok()).flatten() {
                Some(t) => self.task(id, t.value),
                None => {
                    self.forget(&id);
                    self.stopped.remove(&id);
                    self.early.remove(&id);
                }
            }
        } else if let Some(id) = key.strip_prefix(&self.states_prefix) {
            if let Some(r) = put
                .then(|| typed::decode::<ObservedTask>(&ev.kv).ok())
                .flatten()
            {
                self.report(id.to_string(), r.value);
            }
        }
    }

    fn task(&mut self, id: String, t: Claim) {
        if self.stopped.contains(&id) {
            return;
        }
        let report = match self.forget(&id) {
            Some(report) => report,
            None => self.early.remove(&id),
        };
        if Task::last_status(report.as_ref()) == TaskStatus::Stopped {
            self.stopped.insert(id);
            return;
        }
        self.hold(id, t, report);
    }

    fn report(&mut self, id: String, r: ObservedTask) {
        let stopped = Task::last_status(Some(&r)) == TaskStatus::Stopped;
        match self.tasks.remove(&id) {
            Some(c) => {
                self.give_back(&c.claim.container_instance, &c.held);
                if stopped {
                    self.stopped.insert(id);
                } else {
                    self.hold(id, c.claim, Some(r));
                }
            }
            None if stopped => {
                self.stopped.insert(id);
            }
            None => {
                self.early.insert(id, r);
            }
        }
    }

    /// Counts a task that is not STOPPED on its instance.
    fn hold(&mut self, id: String, t: Claim, report: Option<ObservedTask>) {
        let mut held = Usage::default();
        held.add_claim(&t, report.as_ref());
        let on = t.container_instance.clone();
        self.used.entry(on.clone()).or_default().absorb(&held);
        self.dirty.insert(on);
        self.tasks.insert(
            id,
            Box::new(Counted {
                claim: t,
                report,
                held,
            }),
        );
    }

    /// Stops counting a task; its report, if it was counted.
    fn forget(&mut self, id: &str) -> Option<Option<ObservedTask>> {
        let c = self.tasks.remove(id)?;
        self.give_back(&c.claim.container_instance, &c.held);
        Some(c.report)
    }

    fn give_back(&mut self, instance: &str, held: &Usage) {
        if let Some(u) = self.used.get_mut(instance) {
            u.release(held);
        }
        self.dirty.insert(instance.to_string());
    }

    /// Brings the scheduler's view of the instances that changed up to date.
    fn refresh(&mut self, scope: &Scope) {
        for id in std::mem::take(&mut self.dirty) {
            let Some(ci) = self.instances.get(&id) else {
                if let Some(arn) = self.arns.remove(&id) {
                    self.snapshot.remove(&arn);
                }
                continue;
            };
            let empty = Usage::default();
            let used = self.used.get(&id).unwrap_or(&empty);
            let view = placeable(scope, ci, used, self.connected.contains(&id));
            self.arns.insert(id, view.arn.clone());
            self.snapshot.upsert(view);
        }
    }
}

/// Loads the cluster's state, then applies the store's changes until
/// `stop`; loads again when the watch falls behind compaction or fails.
async fn follow(store: Arc<dyn Store>, live: Arc<ClusterLive>, stop: CancellationToken) {
    // Every key Berth writes is under /berth/, so every revision the
    // store makes shows up here: a placement can wait for the store's
    // current revision, not only for the placement key's.
    let prefix = "/berth/";
    loop {
        let from = match load(&*store, &live).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "placement snapshot cannot load; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        let mut events = store.watch(prefix, from + 1);
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                b = berth_store::next_batch(&mut events) => b,
            };
            // A revision counts as applied once all of its events are:
            // the batch holds every event ready, and a transaction's come
            // together.
            let Some((batch, broken)) = next else {
                tracing::warn!("placement snapshot's watch ended; loading again");
                break;
            };
            let last = batch.last().map_or(0, |e| e.kv.mod_revision);
            {
                let mut s = live.state.lock();
                for ev in &batch {
                    s.apply(ev);
                }
            }
            live.applied.send_if_modified(|r| {
                let grew = last > *r;
                *r = (*r).max(last);
                grew
            });
            if broken {
                break;
            }
        }
    }
}

/// Reads the cluster's state as of now; the revision it reflects.
async fn load(store: &dyn Store, live: &ClusterLive) -> Result<i64, berth_store::StoreError> {
    let revision = store.current_revision().await?;
    let (instances, connections, tasks, states) = {
        let s = live.state.lock();
        (
            s.instances_prefix.clone(),
            s.connections_prefix.clone(),
            s.tasks_prefix.clone(),
            s.states_prefix.clone(),
        )
    };
    let mut kvs = vec![];
    // Reports before tasks, so that each task meets its report.
    for prefix in [&instances, &connections, &states, &tasks] {
        kvs.extend(
            store
                .range(RangeRequest::prefix(prefix.as_str()))
                .await?
                .kvs,
        );
    }
    let mut s = live.state.lock();
    s.clear();
    for kv in kvs {
        s.apply(&Event {
            kind: EventKind::Put,
            kv,
        });
    }
    drop(s);
    // What was read is at least as new as `revision`; the watch from the
    // next revision replays what changed since, which applies again
    // harmlessly (every change is an upsert or a removal).
    live.applied.send_modify(|r| *r = (*r).max(revision));
    Ok(revision)
}
