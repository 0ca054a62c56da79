//! Task lifecycle requests: RunTask's commit with its idempotency token,
//! StartTask's on named instances, and stop requests.

use crate::cas::{compare_and_swap, Attempt};
use crate::launch::Launch;
use crate::placement::{place, write_task, Occupancy, Placing};
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

/// How long a RunTask clientToken is remembered.
const TOKEN_RETENTION: Duration = Duration::from_secs(3600);

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

/// Places and records `launch.request.count` tasks of a RunTask in
/// `cluster`: the ids placed, and why the rest were not. Re-plans when
/// another placement commits first.
pub async fn run(
    st: &Control,
    scope: &Scope,
    cluster: &str,
    launch: &Launch,
    token: Option<&ClientToken>,
) -> Result<(Vec<String>, Vec<w::Failure>), ControlError> {
    let token_key = token.map(|t| scope.run_token(cluster, &t.token));
    let token_lease = match &token_key {
        Some(_) => Some(st.store.lease_grant(TOKEN_RETENTION).await?),
        None => None,
    };
    let print = token.map(|t| t.fingerprint.as_str()).unwrap_or_default();
    let token_key = &token_key;
    let token_lease = &token_lease;
    let _turn = crate::placement::turn(st, scope, cluster, launch).await?;
    let (ids, failures) = compare_and_swap::<_, ControlError, _>(
        st,
        || "Tasks are being placed in this cluster by other requests; try again.".into(),
        move || async move {
            let mut compares = vec![];
            if let Some(k) = token_key {
                if let Some(kv) = st.store.get(k).await? {
                    let seen: RunToken = typed::decode(&kv)?.value;
                    if seen.fingerprint != print {
                        return Err(EcsError::Conflict(
                            "The clientToken was used before with different parameters.".into(),
                        )
                        .into());
                    }
                    return Ok(Attempt::Done((seen.tasks, vec![])));
                }
                compares.push(typed::unchanged(k, 0));
            }
            let mut placed = place(st, scope, cluster, launch, None).await?;
            if placed.no_instances {
                return Err(EcsError::invalid(
                    "No Container Instances were found in your cluster.",
                )
                .into());
            }
            compares.append(&mut placed.compares);
            let mut ops = placed.ops;
            let ids = placed.ids;
            let failures = if ids.len() < launch.request.count {
                placed.failures
            } else {
                vec![]
            };
            if let (Some(k), Some(lease)) = (token_key, token_lease) {
                ops.push(Op::Put {
                    key: k.clone(),
                    value: typed::encode(&RunToken {
                        fingerprint: print.to_string(),
                        tasks: ids.clone(),
                    }),
                    lease: Some(lease.id),
                });
            }
            Ok(Attempt::Write(Txn::when(compares, ops), (ids, failures)))
        },
    )
    .await?;
    if !ids.is_empty() {
        tracing::info!(cluster = %cluster, tasks = ids.len(), family = %launch.family, "tasks placed");
    }
    Ok((ids, failures))
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
            let mut placing = Placing::begin(st, scope, cluster, cluster, launch).await?;
            let occupancy = Occupancy::load(st, scope, cluster).await?;
            let mut chosen: HashMap<String, (ContainerInstance, sched::Snapshot)> = HashMap::new();
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
                placing.add(ci, None, g).await?;
            }
            let (compares, ops, ids, failures) = placing.finish();
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
            Ok(Attempt::Write(
                Txn::when(compares, write_task(scope, &t).to_vec()),
                Some(t),
            ))
        },
    )
    .await
}
