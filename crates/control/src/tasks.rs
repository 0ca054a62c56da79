//! Task lifecycle requests: RunTask's commit with its idempotency token,
//! StartTask's on named instances, and stop requests.

use crate::cas::{compare_and_swap, Attempt};
use crate::launch::Launch;
use crate::placement::{place, place_many, write_task, Occupancy, Placing, Want};
use crate::{Control, ControlError};
use berth_domain::arn::container_instance_id as instance_id;
use berth_domain::instance::ContainerInstance;
use berth_domain::task::ObservedTask;
use berth_domain::task::{DesiredStatus, StopCode, StopRequest, Task, TaskStatus};
use berth_domain::{EcsError, Scope};
use berth_scheduler as sched;
use berth_store::keys::Keys;
use berth_store::{typed, Op, Txn};
use berth_wire::ecs as w;
use std::collections::HashMap;
use std::time::Duration;

/// How long a RunTask clientToken is remembered, at least.
const TOKEN_RETENTION: Duration = Duration::from_secs(3600);

/// How long one lease takes the clientTokens of every RunTask: a token
/// lives between TOKEN_RETENTION and this much longer.
const TOKEN_BUCKET: Duration = Duration::from_secs(60);

/// The lease for a clientToken remembered now. Every SDK sends a token
/// with each RunTask, and a lease of its own cost each one a durable write
/// before placement could start (half a millisecond of its latency) and
/// left the store a lease per RunTask to expire. A lease is shared for
/// TOKEN_BUCKET and lives TOKEN_RETENTION past that, so it cannot expire
/// while it is handed out; nothing revokes it.
async fn token_lease(st: &Control) -> Result<berth_store::LeaseId, ControlError> {
    if let Some((id, at)) = *st.token_lease.lock() {
        if at.elapsed() < TOKEN_BUCKET {
            return Ok(id);
        }
    }
    let at = tokio::time::Instant::now();
    let id = st
        .store
        .lease_grant(TOKEN_RETENTION + TOKEN_BUCKET)
        .await?
        .id;
    *st.token_lease.lock() = Some((id, at));
    Ok(id)
}

/// What a clientToken remembers: the request it came with and its tasks.
#[derive(serde::Serialize, serde::Deserialize)]
struct RunToken {
    fingerprint: String,
    tasks: Vec<String>,
}

/// A RunTask's clientToken and what identifies its request: the same
/// token with the same request answers the tasks it placed the first
/// time; with another request, a conflict.
pub struct ClientToken {
    pub token: String,
    pub fingerprint: String,
}

impl ClientToken {
    /// The token of `req`, fingerprinted by everything else it asks.
    pub fn of(req: &w::RunTaskRequest) -> Option<ClientToken> {
        let token = req.client_token.clone()?;
        let mut r = req.clone();
        r.client_token = None;
        Some(ClientToken {
            token,
            fingerprint: serde_json::to_string(&r).unwrap_or_default(),
        })
    }
}

/// What a RunTask answers: its tasks, and why the rest were not placed.
pub struct Ran {
    pub tasks: RanTasks,
    pub failures: Vec<w::Failure>,
}

/// A RunTask's tasks: the records this call placed, or the ids of the
/// tasks an earlier call with the same clientToken placed.
pub enum RanTasks {
    Placed(Vec<Task>),
    Earlier(Vec<String>),
}

impl Ran {
    /// What this call placed. As on ECS, the reasons instances were passed
    /// over are shown only when it placed fewer tasks than it asked.
    fn placed(tasks: Vec<Task>, failures: Vec<w::Failure>, count: usize) -> Ran {
        let failures = if tasks.len() < count {
            failures
        } else {
            vec![]
        };
        Ran {
            tasks: RanTasks::Placed(tasks),
            failures,
        }
    }
}

type RunAnswer = Result<Ran, ControlError>;

/// A RunTask waiting for its cluster's placement turn.
pub(crate) struct Queued {
    launch: Launch,
    token: Option<HeldToken>,
    reply: tokio::sync::oneshot::Sender<RunAnswer>,
}

/// A cluster's queued RunTasks, and whether a task is draining them.
#[derive(Default)]
pub(crate) struct Runs {
    queued: Vec<Queued>,
    draining: bool,
}

/// A clientToken's key, the lease that will expire it, and its request's
/// fingerprint.
struct HeldToken {
    key: String,
    lease: i64,
    fingerprint: String,
}

/// Places and records `launch.request.count` tasks of a RunTask in
/// `cluster`: the ids placed, and why the rest were not.
///
/// RunTasks of one cluster's own instances that arrive while another is
/// placing queue, and the next turn plans them together on the live
/// snapshot and commits them in one transaction: one store round trip and
/// one catch-up of the snapshot per turn rather than per call. The turn
/// runs in a task of its own, so that a client that goes away does not
/// cancel the placements of the others queued with it; the task runs
/// where the snapshot's follower does ([`crate::live::Live::spawn`]).
pub async fn run(
    st: &Control,
    scope: &Scope,
    cluster: &str,
    launch: Launch,
    token: Option<&ClientToken>,
) -> RunAnswer {
    let token = match token {
        Some(t) => Some(HeldToken {
            key: scope.run_token(cluster, &t.token),
            lease: token_lease(st).await?,
            fingerprint: t.fingerprint.clone(),
        }),
        None => None,
    };
    if launch.launch_type == "FARGATE" {
        return run_fargate(st, scope, cluster, &launch, token.as_ref()).await;
    }
    let live = st.live.cluster(st, scope, cluster).await?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    let start = {
        let mut runs = live.runs.lock();
        runs.queued.push(Queued {
            launch,
            token,
            reply,
        });
        !std::mem::replace(&mut runs.draining, true)
    };
    if start {
        let mut drainer = Drainer { live, done: false };
        let (st, scope, cluster) = (st.clone(), scope.clone(), cluster.to_string());
        let placement = st.live.clone();
        placement.spawn(async move { drainer.drain(&st, &scope, &cluster).await });
    }
    let ran = answer.await.map_err(|_| {
        ControlError::Internal("the placement turn ended without an answer".into())
    })??;
    if let RanTasks::Placed(tasks) = &ran.tasks {
        if !tasks.is_empty() {
            tracing::info!(cluster = %cluster, tasks = tasks.len(), "tasks placed");
        }
    }
    Ok(ran)
}

/// The one task per cluster that takes its turns while RunTasks are queued.
struct Drainer {
    live: std::sync::Arc<crate::live::ClusterLive>,
    /// It saw the queue empty and gave up draining.
    done: bool,
}

impl Drainer {
    async fn drain(&mut self, st: &Control, scope: &Scope, cluster: &str) {
        loop {
            let _turn = self.live.turn.clone().lock_owned().await;
            let queued = {
                let mut runs = self.live.runs.lock();
                if runs.queued.is_empty() {
                    runs.draining = false;
                    self.done = true;
                    return;
                }
                std::mem::take(&mut runs.queued)
            };
            run_queued(st, scope, cluster, queued).await;
        }
    }
}

/// A drainer that panicked or was cancelled leaves its place to the next
/// RunTask's (the requests it held get an internal error as their replies
/// drop).
impl Drop for Drainer {
    fn drop(&mut self) {
        if !self.done {
            self.live.runs.lock().draining = false;
        }
    }
}

/// Places the RunTasks taken from the queue, in as few transactions as
/// their tokens allow (a transaction writes each key once, so a token
/// repeated in the queue waits for the next round, where it finds the
/// first one's tasks).
async fn run_queued(st: &Control, scope: &Scope, cluster: &str, mut queued: Vec<Queued>) {
    while !queued.is_empty() {
        let mut tokens = std::collections::HashSet::new();
        let (now, later): (Vec<Queued>, Vec<Queued>) = queued.into_iter().partition(|q| {
            q.token
                .as_ref()
                .is_none_or(|t| tokens.insert(t.key.clone()))
        });
        queued = later;
        match run_together(st, scope, cluster, &now).await {
            Ok(answers) => {
                for (q, a) in now.into_iter().zip(answers) {
                    let _ = q.reply.send(a);
                }
            }
            Err(e) => {
                for q in now {
                    let _ = q.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One transaction placing every queued RunTask; each one's answer.
async fn run_together(
    st: &Control,
    scope: &Scope,
    cluster: &str,
    queued: &[Queued],
) -> Result<Vec<RunAnswer>, ControlError> {
    compare_and_swap::<_, ControlError, _>(
        st,
        || "Tasks are being placed in this cluster by other requests; try again.".into(),
        move || async move {
            let mut compares = vec![];
            let mut answers: Vec<Option<RunAnswer>> = queued.iter().map(|_| None).collect();
            let mut placing = vec![];
            for (i, q) in queued.iter().enumerate() {
                if let Some(t) = &q.token {
                    if let Some(seen) = remembered(st, t).await? {
                        answers[i] = Some(seen);
                        continue;
                    }
                    compares.push(typed::unchanged(&t.key, 0));
                }
                placing.push(i);
            }
            if placing.is_empty() {
                return Ok(Attempt::Done(answers.into_iter().flatten().collect()));
            }
            let wants: Vec<Want> = placing
                .iter()
                .map(|&i| Want {
                    launch: &queued[i].launch,
                    only: None,
                })
                .collect();
            let (mut more, mut ops, outcomes) = place_many(st, scope, cluster, &wants).await?;
            compares.append(&mut more);
            for (i, out) in placing.into_iter().zip(outcomes) {
                let q = &queued[i];
                if out.no_instances {
                    answers[i] = Some(Err(no_instances()));
                    continue;
                }
                if let Some(t) = &q.token {
                    ops.push(remember(t, &out.tasks));
                }
                let ran = Ran::placed(out.tasks, out.failures, q.launch.request.count);
                answers[i] = Some(Ok(ran));
            }
            let answers = answers.into_iter().flatten().collect();
            Ok(Attempt::Write(Txn::when(compares, ops), answers))
        },
    )
    .await
}

/// A Fargate RunTask: placed on its own, ordered on the pool's placement key.
async fn run_fargate(
    st: &Control,
    scope: &Scope,
    cluster: &str,
    launch: &Launch,
    token: Option<&HeldToken>,
) -> RunAnswer {
    compare_and_swap::<_, ControlError, _>(
        st,
        || "Tasks are being placed in this cluster by other requests; try again.".into(),
        move || async move {
            let mut compares = vec![];
            if let Some(t) = token {
                if let Some(seen) = remembered(st, t).await? {
                    return seen.map(Attempt::Done);
                }
                compares.push(typed::unchanged(&t.key, 0));
            }
            let mut placed = place(st, scope, cluster, launch, None).await?;
            compares.append(&mut placed.compares);
            let mut ops = placed.ops;
            if let Some(t) = token {
                ops.push(remember(t, &placed.tasks));
            }
            let ran = Ran::placed(placed.tasks, placed.failures, launch.request.count);
            Ok(Attempt::Write(Txn::when(compares, ops), ran))
        },
    )
    .await
}

fn no_instances() -> ControlError {
    EcsError::invalid("No Container Instances were found in your cluster.").into()
}

/// What a clientToken's first RunTask answered, if it was seen: its
/// tasks, or a conflict when it came with another request.
async fn remembered(st: &Control, t: &HeldToken) -> Result<Option<RunAnswer>, ControlError> {
    let Some(kv) = st.store.get(&t.key).await? else {
        return Ok(None);
    };
    let seen: RunToken = typed::decode(&kv)?.value;
    Ok(Some(if seen.fingerprint != t.fingerprint {
        Err(
            EcsError::Conflict("The clientToken was used before with different parameters.".into())
                .into(),
        )
    } else {
        Ok(Ran {
            tasks: RanTasks::Earlier(seen.tasks),
            failures: vec![],
        })
    }))
}

/// The op that remembers a clientToken's tasks until its lease expires.
fn remember(t: &HeldToken, tasks: &[Task]) -> Op {
    Op::Put {
        key: t.key.clone(),
        value: typed::encode(&RunToken {
            fingerprint: t.fingerprint.clone(),
            tasks: tasks.iter().map(|t| t.id.clone()).collect(),
        }),
        lease: Some(t.lease),
    }
}

/// Places one task of a StartTask on each named container instance that
/// can hold it (what this request already put there counts): the ids
/// placed, and a failure for each instance that is missing or full.
pub async fn start_on(
    st: &Control,
    scope: &Scope,
    cluster: &str,
    launch: &Launch,
    given: &[String],
) -> Result<(Vec<String>, Vec<w::Failure>), ControlError> {
    compare_and_swap::<_, ControlError, _>(
        st,
        || "Tasks are being placed in this cluster by other requests; try again.".into(),
        move || async move {
            let mut placing = Placing::begin(st, scope, cluster, cluster).await?;
            let occupancy = Occupancy::load(st, scope, cluster).await?;
            let mut chosen: HashMap<String, (ContainerInstance, sched::Snapshot)> = HashMap::new();
            let mut ids = vec![];
            for g in given {
                let Some(id) = instance_id(scope, cluster, g) else {
                    placing.fail(g, "MISSING");
                    continue;
                };
                if !chosen.contains_key(&id) {
                    let Some(ci) =
                        typed::get::<ContainerInstance>(&*st.store, &scope.instance(cluster, &id))
                            .await?
                    else {
                        placing.fail(g, "MISSING");
                        continue;
                    };
                    let snap = sched::Snapshot::new(vec![occupancy.placeable(scope, &ci.value)]);
                    chosen.insert(id.clone(), (ci.value, snap));
                }
                let Some((ci, snap)) = chosen.get_mut(&id) else {
                    continue;
                };
                let plan = snap.place(&launch.request, 0);
                if plan.placements.is_empty() {
                    for f in &plan.failures {
                        placing.fail(&f.arn, f.reason.as_str());
                    }
                    continue;
                }
                snap.commit(&launch.request, &plan);
                ids.extend(placing.add(launch, ci, None, g).await?.map(|t| t.id));
            }
            let (compares, ops, failures) = placing.finish();
            let txn = Txn::when(compares, ops);
            Ok(Attempt::Write(txn, (ids, failures)))
        },
    )
    .await
}

/// Asks for tasks to stop: desired STOPPED with the stop's code and
/// reason; the agent does the rest. Tasks already asked keep their first
/// reason. Used by StopTask and forced deregistration.
pub async fn request_stop(
    st: &Control,
    scope: &Scope,
    cluster: &str,
    id: &str,
    code: StopCode,
    reason: &str,
    failure: bool,
) -> Result<Option<Task>, ControlError> {
    let key = scope.task(cluster, id);
    let (key, reason) = (&key, reason);
    compare_and_swap::<_, ControlError, _>(
        st,
        || "The task is being changed by another request; try again.".into(),
        move || async move {
            let Some(current) = typed::get::<Task>(&*st.store, key).await? else {
                return Ok(Attempt::Done(None));
            };
            let mut t = current.value;
            // A task already reported STOPPED keeps the stop it had: its
            // own stopCode and reason, and no place in its instance's index
            // (the gateway took it out).
            let state_key = scope.task_state(cluster, id);
            let state = typed::get::<ObservedTask>(&*st.store, &state_key).await?;
            let observed = Task::last_status(state.as_ref().map(|r| &r.value));
            if t.desired_status == DesiredStatus::Stopped || observed == TaskStatus::Stopped {
                return Ok(Attempt::Done(Some(t)));
            }
            t.desired_status = DesiredStatus::Stopped;
            t.stop = Some(StopRequest {
                code,
                reason: reason.to_string(),
                at: st.now(),
                failure,
            });
            t.version += 1;
            let compares = vec![
                typed::unchanged(key, current.mod_revision),
                typed::unchanged(&state_key, state.as_ref().map_or(0, |r| r.mod_revision)),
            ];
            // No agent holds a task still waiting for capacity: it stops now.
            let ops = if t.placed() {
                write_task(scope, &t)
            } else {
                stop_waiting(scope, &t, st.now())
            };
            Ok(Attempt::Write(Txn::when(compares, ops), Some(t)))
        },
    )
    .await
}

/// The ops that record a task that waited for capacity and never ran as
/// STOPPED (its desired record already says why): no agent will report it.
pub(crate) fn stop_waiting(scope: &Scope, t: &Task, at: f64) -> Vec<Op> {
    let report = ObservedTask {
        task_arn: t.arn(scope),
        last_status: TaskStatus::Stopped,
        stopping_at: Some(at),
        execution_stopped_at: Some(at),
        stopped_at: Some(at),
        ..Default::default()
    };
    let mut ops = write_task(scope, t);
    ops.push(typed::put(&scope.task_state(&t.cluster, &t.id), &report));
    ops.push(Op::delete(crate::placement::waiting_key(scope, t)));
    ops
}
