//! CloudWatch alarms against the store: the alarm records the API writes
//! (PutMetricAlarm, SetAlarmState, actions enabled, tags, deletion), each
//! a compare-and-swap on its one record; the states and history the
//! evaluator writes; and the evaluator itself, which judges every alarm of
//! a region against the metric store as its periods end, adopts states
//! SetAlarmState asked for, and runs actions on transitions (and again
//! each minute for Auto Scaling actions while the state holds).

use crate::cas::{self, Attempt};
use crate::cloudwatch::{owner, run_queries, Query};
use crate::{Control, ControlError};
use berth_domain::alarms::{self as rules, AlarmRecord, AlarmState, Criteria, Forced};
use berth_domain::cloudwatch::{CwError, Stat};
use berth_domain::Scope;
use berth_metricstore::MetricId;
use berth_store::keys::cloudwatch as keys;
use berth_store::typed;
use berth_store::{Op, Txn};
use berth_wire::cloudwatch as w;
use std::collections::HashMap;

/// A CloudWatch failure or the store's.
#[derive(Debug, thiserror::Error)]
pub enum AlarmFailure {
    #[error(transparent)]
    Cw(#[from] CwError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl From<berth_store::StoreError> for AlarmFailure {
    fn from(e: berth_store::StoreError) -> Self {
        AlarmFailure::Control(e.into())
    }
}

type Result<T> = std::result::Result<T, AlarmFailure>;

async fn swap<T, Fut>(ctl: &Control, attempt: impl FnMut() -> Fut) -> Result<T>
where
    Fut: std::future::Future<Output = Result<Attempt<T>>>,
{
    cas::retry_swap(ctl, attempt).await?.ok_or_else(|| {
        CwError::new_concurrent("The alarm is being changed by another request; try again.").into()
    })
}

/// One history item, as DescribeAlarmHistory shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistoryItem {
    pub alarm: String,
    /// Epoch seconds.
    pub at: f64,
    /// ConfigurationUpdate, StateUpdate or Action.
    pub kind: String,
    pub summary: String,
    pub data: String,
}

fn history_op(scope: &Scope, item: &HistoryItem) -> Op {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let key = keys::history_item(scope, &item.alarm, (item.at * 1000.0) as i64, &unique[..8]);
    typed::put(&key, item)
}

/// Writes (or replaces) an alarm from a checked PutMetricAlarm input.
pub async fn put(ctl: &Control, scope: &Scope, input: w::PutMetricAlarmInput) -> Result<()> {
    let name = input.alarm_name.clone().unwrap_or_default();
    let key = keys::alarm(scope, &name);
    let now = ctl.clock.now();
    swap(ctl, || async {
        let current = typed::get::<AlarmRecord>(&*ctl.store, &key).await?;
        let (generation, forced, revision, tags) = match &current {
            Some(c) => (
                c.value.generation + 1,
                c.value.forced.clone(),
                c.mod_revision,
                c.value.input.tags.clone(),
            ),
            None => (1, None, 0, None),
        };
        let mut input = input.clone();
        // PutMetricAlarm's tags apply when it creates the alarm; later
        // ones change tags with TagResource, as CloudWatch's do.
        if current.is_some() {
            input.tags = tags;
        }
        let record = AlarmRecord {
            input,
            arn: rules::arn(&scope.region, &scope.account, &name),
            configuration_updated: now,
            forced,
            generation,
        };
        let kind = if current.is_some() {
            "Update"
        } else {
            "Create"
        };
        let item = HistoryItem {
            alarm: name.clone(),
            at: now,
            kind: "ConfigurationUpdate".into(),
            summary: format!(
                "Alarm \"{name}\" {}",
                if current.is_some() {
                    "updated"
                } else {
                    "created"
                }
            ),
            data: serde_json::json!({
                "version": "1.0",
                "type": kind,
                (if current.is_some() { "updatedAlarm" } else { "createdAlarm" }):
                    serde_json::to_value(&record.input).unwrap_or_default(),
            })
            .to_string(),
        };
        let txn = Txn::when(
            vec![typed::unchanged(&key, revision)],
            vec![
                typed::put(&key, &record),
                history_op(scope, &item),
                watched_region(scope),
            ],
        );
        Ok(Attempt::Write(txn, ()))
    })
    .await
}

/// An alarm's record, if it exists.
pub async fn get(
    ctl: &Control,
    scope: &Scope,
    name: &str,
) -> Result<Option<typed::Versioned<AlarmRecord>>> {
    Ok(typed::get::<AlarmRecord>(&*ctl.store, &keys::alarm(scope, name)).await?)
}

/// Every alarm of the region with its state (a new alarm's is
/// INSUFFICIENT_DATA from its creation), by name.
pub async fn list(ctl: &Control, scope: &Scope) -> Result<Vec<(AlarmRecord, AlarmState)>> {
    let records = typed::list::<AlarmRecord>(&*ctl.store, &keys::alarms(scope)).await?;
    let states: HashMap<String, AlarmState> =
        typed::list::<AlarmState>(&*ctl.store, &keys::alarm_states(scope))
            .await?
            .into_iter()
            .map(|(k, v)| (key_name(&k), v.value))
            .collect();
    Ok(records
        .into_iter()
        .map(|(k, r)| {
            let r = r.value;
            let state = states
                .get(&key_name(&k))
                .cloned()
                .unwrap_or_else(|| AlarmState::initial(r.configuration_updated));
            (r, state)
        })
        .collect())
}

fn key_name(key: &str) -> String {
    keys::name_of(key.rsplit('/').next().unwrap_or_default())
}

/// Deletes alarms: all of them, or none when one does not exist.
pub async fn delete(ctl: &Control, scope: &Scope, names: &[String]) -> Result<()> {
    let now = ctl.clock.now();
    swap(ctl, || async {
        let mut compares = vec![];
        let mut ops = vec![];
        for name in names {
            let key = keys::alarm(scope, name);
            let Some(found) = typed::get::<AlarmRecord>(&*ctl.store, &key).await? else {
                return Err(CwError::not_found(format!("{name} not found")).into());
            };
            compares.push(typed::unchanged(&key, found.mod_revision));
            ops.push(Op::delete(key));
            ops.push(history_op(
                scope,
                &HistoryItem {
                    alarm: name.clone(),
                    at: now,
                    kind: "ConfigurationUpdate".into(),
                    summary: format!("Alarm \"{name}\" deleted"),
                    data: serde_json::json!({"version": "1.0", "type": "Delete",
                        "deletedAlarm": serde_json::to_value(&found.value.input).unwrap_or_default()})
                    .to_string(),
                },
            ));
        }
        Ok(Attempt::Write(Txn::when(compares, ops), ()))
    })
    .await
}

/// Changes one alarm's record with `f`; ResourceNotFound when it is not
/// there.
pub async fn change(
    ctl: &Control,
    scope: &Scope,
    name: &str,
    f: impl Fn(&mut AlarmRecord),
) -> Result<AlarmRecord> {
    let key = keys::alarm(scope, name);
    swap(ctl, || async {
        let Some(found) = typed::get::<AlarmRecord>(&*ctl.store, &key).await? else {
            return Err(CwError::not_found(format!("Alarm {name} not found")).into());
        };
        let mut r = found.value.clone();
        f(&mut r);
        if r == found.value {
            return Ok(Attempt::Done(r));
        }
        r.generation += 1;
        let txn = Txn::when(
            vec![typed::unchanged(&key, found.mod_revision)],
            vec![typed::put(&key, &r)],
        );
        Ok(Attempt::Write(txn, r))
    })
    .await
}

/// SetAlarmState: the evaluator adopts the state at its next round, and
/// the alarm's own evaluation returns it to what the data say after that.
pub async fn set_state(
    ctl: &Control,
    scope: &Scope,
    name: &str,
    value: &str,
    reason: &str,
    data: Option<String>,
) -> Result<()> {
    change(ctl, scope, name, |r| {
        let seq = r.forced.as_ref().map_or(1, |f| f.seq + 1);
        r.forced = Some(Forced {
            value: value.to_string(),
            reason: reason.to_string(),
            reason_data: data.clone(),
            seq,
        });
    })
    .await?;
    Ok(())
}

/// History items of the region (one alarm's when named), oldest first.
pub async fn history(
    ctl: &Control,
    scope: &Scope,
    alarm: Option<&str>,
) -> Result<Vec<HistoryItem>> {
    let prefix = match alarm {
        Some(a) => keys::history_of(scope, a),
        None => keys::history(scope),
    };
    let mut items: Vec<HistoryItem> = typed::list::<HistoryItem>(&*ctl.store, &prefix)
        .await?
        .into_iter()
        .map(|(_, v)| v.value)
        .collect();
    items.sort_by(|a, b| a.at.total_cmp(&b.at));
    Ok(items)
}

/// History is kept two weeks, as CloudWatch keeps it.
const HISTORY_SECS: f64 = 14.0 * 86_400.0;

/// What an alarm's action does when it runs; the evaluator calls it and
/// records what it says. Application Auto Scaling and EC2 Auto Scaling
/// register theirs; an action nobody handles is recorded as failed.
pub type ActionRunner = std::sync::Arc<
    dyn Fn(
            Control,
            Scope,
            ActionCall,
        ) -> futures::future::BoxFuture<'static, std::result::Result<String, String>>
        + Send
        + Sync,
>;

/// One action to run: its ARN, and the alarm whose state calls it.
#[derive(Debug, Clone)]
pub struct ActionCall {
    pub arn: String,
    pub alarm: String,
    pub state: String,
    pub reason_data: Option<String>,
}

/// Auto Scaling's actions run again every minute while the state holds.
fn repeats(arn: &str) -> bool {
    arn.starts_with("arn:aws:autoscaling:")
}

/// The last N periods of the alarm's data that have ended by `now`
/// (oldest first, None where there is no datapoint), and the statistic's
/// name.
async fn datapoints(
    ctl: &Control,
    scope: &Scope,
    r: &AlarmRecord,
    c: &Criteria,
    now: i64,
) -> std::result::Result<(Vec<(i64, Option<f64>)>, String), AlarmFailure> {
    let end = now.div_euclid(c.period) * c.period;
    let start = end - c.period * c.evaluation_periods as i64;
    let a = &r.input;
    let (queries, wanted, stat_name) = match &a.metrics {
        None => {
            let stat_name = a
                .statistic
                .clone()
                .or_else(|| a.extended_statistic.clone())
                .unwrap_or_default();
            let stat = Stat::parse(&stat_name).unwrap_or(Stat::Average);
            let dims = berth_domain::cloudwatch::pairs(a.dimensions.as_ref());
            let q = Query::Metric {
                metric: MetricId::new(
                    a.namespace.as_deref().unwrap_or_default(),
                    a.metric_name.as_deref().unwrap_or_default(),
                    dims,
                ),
                stat,
                unit: a.unit.clone(),
                period: c.period,
            };
            (
                vec![("m".to_string(), String::new(), q)],
                "m".to_string(),
                stat_name,
            )
        }
        Some(metrics) => {
            let mut queries = vec![];
            let mut wanted = String::new();
            for q in metrics {
                let id = q.id.clone().unwrap_or_default();
                if q.return_data.unwrap_or(true) {
                    wanted = id.clone();
                }
                let query = match (&q.metric_stat, &q.expression) {
                    (Some(ms), _) => {
                        let m = ms.metric.clone().unwrap_or_default();
                        Query::Metric {
                            metric: MetricId::new(
                                m.namespace.as_deref().unwrap_or_default(),
                                m.metric_name.as_deref().unwrap_or_default(),
                                berth_domain::cloudwatch::pairs(m.dimensions.as_ref()),
                            ),
                            stat: ms
                                .stat
                                .as_deref()
                                .and_then(Stat::parse)
                                .unwrap_or(Stat::Average),
                            unit: ms.unit.clone(),
                            period: i64::from(ms.period.unwrap_or(60)),
                        }
                    }
                    (None, e) => Query::Expression(e.clone().unwrap_or_default()),
                };
                queries.push((id, q.label.clone().unwrap_or_default(), query));
            }
            (queries, wanted, "Expression".to_string())
        }
    };
    let series = match run_queries(ctl, &owner(scope), &queries, (start, end), c.period).await? {
        Ok(mut s) => s.remove(&wanted).unwrap_or_default(),
        // An expression that fails to evaluate has no datapoints.
        Err(_) => Default::default(),
    };
    let points = (0..c.evaluation_periods as i64)
        .map(|i| {
            let t = start + i * c.period;
            (t, series.get(&t).copied())
        })
        .collect();
    Ok((points, stat_name))
}

/// The evaluator's memory of when it last judged each alarm (so alarms are
/// judged as their periods end, without writing every round), and of when
/// it last dropped old history in each region.
#[derive(Default)]
pub struct Evaluated {
    judged: parking_lot::Mutex<HashMap<(Scope, String), (i64, u64)>>,
    pruned: parking_lot::Mutex<HashMap<Scope, f64>>,
}

/// Judges every alarm of `scope` that is due at `now`; returns how many
/// changed state.
pub async fn evaluate_region(
    ctl: &Control,
    scope: &Scope,
    evaluated: &Evaluated,
    actions: Option<&ActionRunner>,
) -> Result<usize> {
    let now_f = ctl.clock.now();
    let now = now_f as i64;
    let records = typed::list::<AlarmRecord>(&*ctl.store, &keys::alarms(scope)).await?;
    let states = typed::list::<AlarmState>(&*ctl.store, &keys::alarm_states(scope)).await?;
    let mut by_name: HashMap<String, typed::Versioned<AlarmState>> =
        states.into_iter().map(|(k, v)| (key_name(&k), v)).collect();
    let mut changed = 0;
    let names: std::collections::HashSet<String> =
        records.iter().map(|(k, _)| key_name(k)).collect();
    // States of alarms that are gone.
    for (name, s) in by_name.iter().filter(|(n, _)| !names.contains(*n)) {
        let key = keys::alarm_state(scope, name);
        let txn = Txn::when(
            vec![typed::unchanged(&key, s.mod_revision)],
            vec![Op::delete(key.clone())],
        );
        ctl.store.txn(txn).await?;
    }
    for (_, record) in records {
        let r = record.value;
        let name = r.input.alarm_name.clone().unwrap_or_default();
        let c = Criteria::of(&r.input);
        let state_key = keys::alarm_state(scope, &name);
        let (mut state, revision) = match by_name.remove(&name) {
            Some(v) => (v.value, v.mod_revision),
            None => (AlarmState::initial(r.configuration_updated), 0),
        };
        // Judged once per period end (at least once a minute for long
        // periods), or at once when the alarm changed.
        let step = c.period.min(60);
        let slot = now.div_euclid(step);
        let key = (scope.clone(), name.clone());
        let seen = evaluated.judged.lock().get(&key).copied();
        let forced = r.forced.as_ref().filter(|f| f.seq > state.forced_seq);
        let due = seen.is_none_or(|(s, g)| s != slot || g != r.generation) || forced.is_some();
        let repeat_due = state.value == rules::ALARM
            && state.actions_at.is_some_and(|t| now_f - t >= 60.0)
            && r.input.actions_enabled == Some(true)
            && r.input.alarm_actions.iter().flatten().any(|a| repeats(a));
        if !due && !repeat_due {
            continue;
        }
        evaluated.judged.lock().insert(key, (slot, r.generation));
        let before = state.clone();
        let old_value = state.value.clone();
        if let Some(f) = forced {
            state.value = f.value.clone();
            state.reason = f.reason.clone();
            state.reason_data = f.reason_data.clone();
            state.forced_seq = f.seq;
            state.updated = now_f;
        } else if due {
            let (points, stat) = datapoints(ctl, scope, &r, &c, now).await?;
            let out = rules::evaluate(&c, &points, &state.value, &stat, now);
            state.value = out.value;
            state.reason = out.reason;
            state.reason_data = Some(out.reason_data);
            if state.value != old_value || state.reason != before.reason {
                state.updated = now_f;
            }
        }
        let transitioned = state.value != old_value;
        let mut ops = vec![];
        if transitioned {
            changed += 1;
            state.transitioned = now_f;
            ops.push(history_op(
                scope,
                &HistoryItem {
                    alarm: name.clone(),
                    at: now_f,
                    kind: "StateUpdate".into(),
                    summary: format!("Alarm updated from {old_value} to {}", state.value),
                    data: serde_json::json!({
                        "version": "1.0",
                        "oldState": {"stateValue": old_value, "stateReason": before.reason},
                        "newState": {"stateValue": state.value, "stateReason": state.reason,
                                      "stateReasonData": state.reason_data.as_deref()
                                          .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())},
                    })
                    .to_string(),
                },
            ));
        }
        let run = (transitioned || (repeat_due && state.value == rules::ALARM))
            && r.input.actions_enabled == Some(true);
        if run {
            let list = match state.value.as_str() {
                rules::ALARM => r.input.alarm_actions.clone(),
                rules::OK => r.input.ok_actions.clone(),
                _ => r.input.insufficient_data_actions.clone(),
            }
            .unwrap_or_default();
            let list: Vec<String> = if transitioned {
                list
            } else {
                list.into_iter().filter(|a| repeats(a)).collect()
            };
            for arn in list {
                let call = ActionCall {
                    arn: arn.clone(),
                    alarm: name.clone(),
                    state: state.value.clone(),
                    reason_data: state.reason_data.clone(),
                };
                let result = match actions {
                    Some(run) => run(ctl.clone(), scope.clone(), call).await,
                    None => Err("no service runs this action here".to_string()),
                };
                let summary = match &result {
                    Ok(done) => format!("Successfully executed action {arn}: {done}"),
                    Err(why) => {
                        format!("Failed to execute action {arn}. Received error: \"{why}\"")
                    }
                };
                ops.push(history_op(
                    scope,
                    &HistoryItem {
                        alarm: name.clone(),
                        at: now_f,
                        kind: "Action".into(),
                        summary,
                        data: serde_json::json!({"actionState": if result.is_ok() {"Succeeded"} else {"Failed"},
                                                 "notificationResource": arn,
                                                 "stateUpdateTimestamp": (state.transitioned * 1000.0) as i64})
                        .to_string(),
                    },
                ));
            }
            state.actions_at = Some(now_f);
        }
        if state == before && revision != 0 {
            continue;
        }
        ops.insert(0, typed::put(&state_key, &state));
        let txn = Txn::when(vec![typed::unchanged(&state_key, revision)], ops);
        // Lost to another evaluator (a leader change): the next round
        // judges again from what it wrote.
        ctl.store.txn(txn).await?;
    }
    // History past its two weeks, looked for once an hour.
    let prune = evaluated
        .pruned
        .lock()
        .get(scope)
        .is_none_or(|t| now_f - t >= 3600.0);
    if prune {
        let all = typed::list::<HistoryItem>(&*ctl.store, &keys::history(scope)).await?;
        let old: Vec<Op> = all
            .into_iter()
            .filter(|(_, i)| now_f - i.value.at > HISTORY_SECS)
            .map(|(k, _)| Op::delete(k))
            .collect();
        if !old.is_empty() {
            ctl.store.txn(Txn::when(vec![], old)).await?;
        }
        evaluated.pruned.lock().insert(scope.clone(), now_f);
    }
    Ok(changed)
}

/// Marks the scope's region as one the alarm controller visits (its
/// alarms, scheduled actions, queue depths and load balancer traffic):
/// an op for the transaction that creates the first such thing.
pub fn watched_region(scope: &Scope) -> Op {
    Op::put(keys::region(&scope.account, &scope.region), vec![])
}

/// The regions the alarm controller visits.
pub async fn regions(ctl: &Control) -> Result<Vec<Scope>> {
    let account = &ctl.config.account;
    Ok(typed::names(&*ctl.store, &keys::regions(account))
        .await?
        .into_iter()
        .map(|r| Scope::new(account, &r))
        .collect())
}
