//! Application Auto Scaling against the store: scalable targets and
//! policies the API writes (target tracking policies own their two
//! CloudWatch alarms), and the scaler the alarm evaluator calls when an
//! alarm's action names a policy: it decides with the domain's rules and
//! sets the service's desired count by compare-and-swap, recording a
//! scaling activity and a service event.

use crate::alarms::{self, AlarmFailure};
use crate::cas::Attempt;
use crate::{Control, ControlError};
use berth_domain::alarms::AlarmRecord;
use berth_domain::scaling::{
    self as rules, AasError, Activity, Cooldowns, Decision, PolicyRecord, ScheduledRecord,
    ScheduledState, TargetRecord, Watched, DEFAULT_COOLDOWN,
};
use berth_domain::service::{RolloutState, Service, ServiceStatus};
use berth_domain::Scope;
use berth_store::keys::scaling as keys;
use berth_store::keys::Keys;
use berth_store::typed;
use berth_store::{Op, Txn};
use berth_wire::application_autoscaling as w;
use berth_wire::cloudwatch as cw;

/// An Application Auto Scaling failure or the store's.
#[derive(Debug, thiserror::Error)]
pub enum ScalingFailure {
    #[error(transparent)]
    Aas(#[from] AasError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl From<berth_store::StoreError> for ScalingFailure {
    fn from(e: berth_store::StoreError) -> Self {
        ScalingFailure::Control(e.into())
    }
}

impl From<AlarmFailure> for ScalingFailure {
    fn from(e: AlarmFailure) -> Self {
        match e {
            AlarmFailure::Cw(e) => ScalingFailure::Aas(AasError::validation(e.message)),
            AlarmFailure::Control(e) => ScalingFailure::Control(e),
        }
    }
}

type Result<T> = std::result::Result<T, ScalingFailure>;

async fn swap<T, Fut>(ctl: &Control, attempt: impl FnMut() -> Fut) -> Result<T>
where
    Fut: std::future::Future<Output = Result<crate::cas::Attempt<T>>>,
{
    crate::cas::retry_swap(ctl, attempt).await?.ok_or_else(|| {
        AasError::new(
            "ConcurrentUpdateException",
            "You already have a pending update to an Application Auto Scaling resource.",
        )
        .into()
    })
}

/// The ECS service a target scales: its record, if it is ACTIVE.
async fn service(
    ctl: &Control,
    scope: &Scope,
    resource: &str,
) -> Result<Option<typed::Versioned<Service>>> {
    let Some((cluster, name)) = rules::service_of(resource) else {
        return Ok(None);
    };
    Ok(
        typed::get::<Service>(&*ctl.store, &scope.service(cluster, name))
            .await?
            .filter(|s| s.value.status == ServiceStatus::Active),
    )
}

/// RegisterScalableTarget: registers or updates, then moves the service's
/// desired count into [min, max] at once.
pub async fn register(
    ctl: &Control,
    scope: &Scope,
    input: &w::RegisterScalableTargetRequest,
) -> Result<TargetRecord> {
    let resource = rules::check_key(
        input.service_namespace.as_deref(),
        input.resource_id.as_deref(),
        input.scalable_dimension.as_deref(),
    )?;
    if service(ctl, scope, &resource).await?.is_none() {
        return Err(AasError::validation(format!("ECS service doesn't exist: {resource}")).into());
    }
    let key = keys::target(scope, &resource);
    let now = ctl.clock.now();
    let target = swap(ctl, || async {
        let existing = typed::get::<TargetRecord>(&*ctl.store, &key).await?;
        let next = rules::register(
            existing.as_ref().map(|e| &e.value),
            input,
            &resource,
            &scope.account,
            &scope.region,
            now,
        )?;
        if existing.as_ref().is_some_and(|e| e.value == next) {
            return Ok(Attempt::Done(next));
        }
        let revision = existing.map_or(0, |e| e.mod_revision);
        Ok(Attempt::Write(
            Txn::when(
                vec![typed::unchanged(&key, revision)],
                vec![typed::put(&key, &next)],
            ),
            next,
        ))
    })
    .await?;
    if let Some(svc) = service(ctl, scope, &resource).await? {
        let current = svc.value.desired_count as i32;
        let clamped = current.clamp(target.min, target.max);
        if clamped != current {
            let cause = format!(
                "scalable target registered with minimum capacity {} and maximum capacity {}",
                target.min, target.max
            );
            apply(ctl, scope, &target, clamped, &cause).await?;
        }
    }
    Ok(target)
}

/// The registered target of `resource`; ObjectNotFound when there is none.
async fn registered(ctl: &Control, scope: &Scope, resource: &str) -> Result<TargetRecord> {
    target(ctl, scope, resource)
        .await?
        .ok_or_else(|| AasError::no_target(resource).into())
}

pub async fn target(ctl: &Control, scope: &Scope, resource: &str) -> Result<Option<TargetRecord>> {
    Ok(
        typed::get::<TargetRecord>(&*ctl.store, &keys::target(scope, resource))
            .await?
            .map(|v| v.value),
    )
}

pub async fn targets(ctl: &Control, scope: &Scope) -> Result<Vec<TargetRecord>> {
    Ok(
        typed::list::<TargetRecord>(&*ctl.store, &keys::targets(scope))
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect(),
    )
}

pub async fn policies(ctl: &Control, scope: &Scope) -> Result<Vec<PolicyRecord>> {
    Ok(
        typed::list::<PolicyRecord>(&*ctl.store, &keys::policies(scope))
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect(),
    )
}

/// DeregisterScalableTarget: the target, its policies and their alarms.
pub async fn deregister(ctl: &Control, scope: &Scope, resource: &str) -> Result<()> {
    let key = keys::target(scope, resource);
    let Some(found) = typed::get::<TargetRecord>(&*ctl.store, &key).await? else {
        return Err(AasError::no_target(resource).into());
    };
    let owned =
        typed::list::<PolicyRecord>(&*ctl.store, &keys::policies_of(scope, resource)).await?;
    let alarms: Vec<String> = owned
        .iter()
        .flat_map(|(_, p)| p.value.alarms.iter().map(|(n, _)| n.clone()))
        .collect();
    remove_alarms(ctl, scope, &alarms).await?;
    let mut ops = vec![
        Op::delete(key.clone()),
        Op::delete(keys::cooldowns(scope, resource)),
    ];
    ops.extend(owned.into_iter().map(|(k, _)| Op::delete(k)));
    let txn = Txn::when(vec![typed::unchanged(&key, found.mod_revision)], ops);
    if !ctl.store.txn(txn).await?.succeeded {
        return Err(AasError::new(
            "ConcurrentUpdateException",
            "You already have a pending update to an Application Auto Scaling resource.",
        )
        .into());
    }
    Ok(())
}

/// Deletes the alarms that exist of `names`.
async fn remove_alarms(ctl: &Control, scope: &Scope, names: &[String]) -> Result<()> {
    let mut present = vec![];
    for n in names {
        if alarms::get(ctl, scope, n).await?.is_some() {
            present.push(n.clone());
        }
    }
    if !present.is_empty() {
        alarms::delete(ctl, scope, &present).await?;
    }
    Ok(())
}

/// The alarm a target tracking policy owns, as AWS makes it.
fn tracking_alarm(
    policy: &PolicyRecord,
    watched: &Watched,
    high: bool,
    name: &str,
    target: f64,
    math_period: i32,
) -> cw::PutMetricAlarmInput {
    let (n, threshold, op) = if high {
        (3, target, "GreaterThanThreshold")
    } else {
        (15, target * 0.9, "LessThanThreshold")
    };
    let mut a = cw::PutMetricAlarmInput {
        alarm_name: Some(name.to_string()),
        alarm_description: Some(format!(
            "DO NOT EDIT OR DELETE. For TargetTrackingScaling policy {}.",
            policy.arn
        )),
        actions_enabled: Some(true),
        alarm_actions: Some(vec![policy.alarm_action()]),
        evaluation_periods: Some(n),
        datapoints_to_alarm: Some(n),
        threshold: Some(threshold),
        comparison_operator: Some(op.into()),
        treat_missing_data: Some("missing".into()),
        ..Default::default()
    };
    match watched {
        Watched::Metric {
            namespace,
            name,
            dimensions,
            statistic,
            unit,
            period,
        } => {
            a.namespace = Some(namespace.clone());
            a.metric_name = Some(name.clone());
            a.dimensions = Some(
                dimensions
                    .iter()
                    .map(|(k, v)| cw::Dimension {
                        name: Some(k.clone()),
                        value: Some(v.clone()),
                    })
                    .collect(),
            );
            a.statistic = Some(statistic.clone());
            a.unit = unit.clone();
            a.period = Some(*period);
        }
        Watched::Math(queries) => {
            a.metrics = Some(
                queries
                    .iter()
                    .map(|q| cw::MetricDataQuery {
                        id: q.id.clone(),
                        expression: q.expression.clone(),
                        label: q.label.clone(),
                        return_data: q.return_data,
                        metric_stat: q.metric_stat.as_ref().map(|ms| cw::MetricStat {
                            metric: ms.metric.as_ref().map(|m| cw::Metric {
                                namespace: m.namespace.clone(),
                                metric_name: m.metric_name.clone(),
                                dimensions: m.dimensions.as_ref().map(|d| {
                                    d.iter()
                                        .map(|x| cw::Dimension {
                                            name: x.name.clone(),
                                            value: x.value.clone(),
                                        })
                                        .collect()
                                }),
                            }),
                            period: Some(math_period),
                            stat: ms.stat.clone(),
                            unit: ms.unit.clone(),
                        }),
                        period: q.expression.as_ref().map(|_| math_period),
                        ..Default::default()
                    })
                    .collect(),
            );
        }
    }
    a
}

/// PutScalingPolicy: creates or replaces a policy; a target tracking one
/// gets (or keeps) its AlarmHigh and, unless scale-in is disabled, its
/// AlarmLow. `tracking_period` is the period the metrics Berth publishes
/// itself are watched at (60 as AWS; Berth defaults to 10).
/// A high-resolution predefined metric is there only when the service's
/// `monitoring` collects it at 20 seconds, as ECS requires.
async fn high_resolution_collected(
    ctl: &Control,
    scope: &Scope,
    resource: &str,
    input: &w::PutScalingPolicyRequest,
) -> Result<()> {
    let Some(t) = input
        .target_tracking_scaling_policy_configuration
        .as_ref()
        .and_then(|c| c.predefined_metric_specification.as_ref())
        .and_then(|p| p.predefined_metric_type.as_deref())
    else {
        return Ok(());
    };
    let metric = match t {
        "ECSServiceAverageCPUUtilizationHighResolution" => "CPUUtilization",
        "ECSServiceAverageMemoryUtilizationHighResolution" => "MemoryUtilization",
        _ => return Ok(()),
    };
    let Some(("service", rest)) = resource.split_once('/') else {
        return Ok(());
    };
    let Some((cluster, service)) = rest.split_once('/') else {
        return Ok(());
    };
    let svc =
        typed::get::<berth_domain::service::Service>(&*ctl.store, &scope.service(cluster, service))
            .await?;
    if svc.is_some_and(|s| s.value.resolution(metric) == 20) {
        return Ok(());
    }
    Err(AasError::validation(format!(
        "The predefined metric type {t} needs {metric} collected at 20-second resolution: set the service's monitoring configuration (metricConfigurations with metricNames [{metric}] and resolutionSeconds 20) with UpdateService first."
    ))
    .into())
}

pub async fn put_policy(
    ctl: &Control,
    scope: &Scope,
    input: &w::PutScalingPolicyRequest,
    tracking_period: i32,
) -> Result<PolicyRecord> {
    let resource = rules::check_key(
        input.service_namespace.as_deref(),
        input.resource_id.as_deref(),
        input.scalable_dimension.as_deref(),
    )?;
    registered(ctl, scope, &resource).await?;
    let (kind, watched) = rules::check_policy(input)?;
    high_resolution_collected(ctl, scope, &resource, input).await?;
    let name = input.policy_name.clone().unwrap_or_default();
    let key = keys::policy(scope, &resource, &name);
    let existing = typed::get::<PolicyRecord>(&*ctl.store, &key).await?;
    let id = existing
        .as_ref()
        .and_then(|e| rules::parse_policy_arn(&e.value.arn).map(|(id, ..)| id))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut record = PolicyRecord {
        name: name.clone(),
        resource_id: resource.clone(),
        arn: rules::policy_arn(&scope.region, &scope.account, &id, &resource, &name),
        kind: kind.clone(),
        target_tracking: input.target_tracking_scaling_policy_configuration.clone(),
        step: input.step_scaling_policy_configuration.clone(),
        alarms: vec![],
        created: existing
            .as_ref()
            .map_or(ctl.clock.now(), |e| e.value.created),
    };
    let old_alarms: Vec<String> = existing
        .as_ref()
        .map(|e| e.value.alarms.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    if let (Some(mut watched), Some(tt)) = (watched, &record.target_tracking) {
        // Berth publishes its own metrics every ten seconds: policies on
        // them watch at the tracking period; others at AWS's minute. Not
        // sums, though: a target such as ALBRequestCountPerTarget's is
        // per minute, and a shorter period would change its meaning.
        let frequent = |ns: &str, stat: &str| {
            berth_domain::usage_metrics::FREQUENT.contains(&ns)
                && !matches!(stat, "Sum" | "SampleCount")
        };
        let math_period = match &mut watched {
            Watched::Metric {
                period,
                namespace,
                statistic,
                ..
            } => {
                if frequent(namespace, statistic) {
                    *period = if *period < 60 {
                        (*period).min(tracking_period)
                    } else {
                        tracking_period
                    };
                }
                60
            }
            Watched::Math(queries) => {
                let all_frequent = queries.iter().all(|q| {
                    q.metric_stat.as_ref().is_none_or(|ms| {
                        frequent(
                            ms.metric
                                .as_ref()
                                .and_then(|m| m.namespace.as_deref())
                                .unwrap_or_default(),
                            ms.stat.as_deref().unwrap_or_default(),
                        )
                    })
                });
                if all_frequent {
                    tracking_period
                } else {
                    60
                }
            }
        };
        let target = tt.target_value.unwrap_or_default();
        let suffix = uuid::Uuid::new_v4().to_string();
        let named = |which: &str| {
            old_alarms
                .iter()
                .find(|n| n.contains(&format!("-{which}-")))
                .cloned()
                .unwrap_or_else(|| format!("TargetTracking-{resource}-{which}-{suffix}"))
        };
        let mut wanted = vec![(named("AlarmHigh"), true)];
        if !tt.disable_scale_in.unwrap_or(false) {
            wanted.push((named("AlarmLow"), false));
        }
        for (alarm, high) in &wanted {
            let a = tracking_alarm(&record, &watched, *high, alarm, target, math_period);
            let a =
                berth_domain::alarms::check_put(&a).map_err(|e| AasError::validation(e.message))?;
            alarms::put(ctl, scope, a).await?;
            record.alarms.push((
                alarm.clone(),
                berth_domain::alarms::arn(&scope.region, &scope.account, alarm),
            ));
        }
        let gone: Vec<String> = old_alarms
            .iter()
            .filter(|n| !wanted.iter().any(|(w, _)| w == *n))
            .cloned()
            .collect();
        remove_alarms(ctl, scope, &gone).await?;
    } else {
        remove_alarms(ctl, scope, &old_alarms).await?;
    }
    ctl.store
        .txn(Txn::when(vec![], vec![typed::put(&key, &record)]))
        .await?;
    Ok(record)
}

/// DeleteScalingPolicy: the policy and the alarms it owns.
pub async fn delete_policy(ctl: &Control, scope: &Scope, resource: &str, name: &str) -> Result<()> {
    let key = keys::policy(scope, resource, name);
    let Some(found) = typed::get::<PolicyRecord>(&*ctl.store, &key).await? else {
        return Err(AasError::not_found(format!(
            "No scaling policy found for service namespace: ecs, resource ID: {resource}, scalable dimension: {}, policy name: {name}",
            rules::DIMENSION
        ))
        .into());
    };
    let owned: Vec<String> = found.value.alarms.iter().map(|(n, _)| n.clone()).collect();
    remove_alarms(ctl, scope, &owned).await?;
    ctl.store
        .txn(Txn::when(
            vec![typed::unchanged(&key, found.mod_revision)],
            vec![Op::delete(key.clone())],
        ))
        .await?;
    Ok(())
}

/// A target's activities, newest first.
pub async fn activities(
    ctl: &Control,
    scope: &Scope,
    resource: Option<&str>,
) -> Result<Vec<Activity>> {
    let prefix = match resource {
        Some(r) => keys::activities_of(scope, r),
        None => keys::activities(scope),
    };
    let mut out: Vec<Activity> = typed::list::<Activity>(&*ctl.store, &prefix)
        .await?
        .into_iter()
        .map(|(_, v)| v.value)
        .collect();
    out.sort_by(|a, b| b.start.total_cmp(&a.start));
    Ok(out)
}

/// Activities kept per target.
const MAX_ACTIVITIES: usize = 200;

async fn record_activity(ctl: &Control, scope: &Scope, a: &Activity) -> Result<()> {
    let key = keys::activity(scope, &a.resource_id, (a.start * 1000.0) as i64, &a.id[..8]);
    let mut ops = vec![typed::put(&key, a)];
    let names = typed::names(&*ctl.store, &keys::activities_of(scope, &a.resource_id)).await?;
    if names.len() >= MAX_ACTIVITIES {
        let excess = names.len() + 1 - MAX_ACTIVITIES;
        ops.extend(
            names
                .iter()
                .take(excess)
                .map(|n| Op::delete(format!("{}{n}", keys::activities_of(scope, &a.resource_id)))),
        );
    }
    ctl.store.txn(Txn::when(vec![], ops)).await?;
    Ok(())
}

/// Sets the service's desired count (an UpdateService by Application Auto
/// Scaling) with a service event, and records the activity.
async fn apply(
    ctl: &Control,
    scope: &Scope,
    t: &TargetRecord,
    count: i32,
    cause: &str,
) -> Result<()> {
    let start = ctl.clock.now();
    let Some((cluster, name)) = rules::service_of(&t.resource_id) else {
        return Ok(());
    };
    let key = scope.service(cluster, name);
    let set = swap(ctl, || async {
        let Some(found) = typed::get::<Service>(&*ctl.store, &key).await? else {
            return Ok(Attempt::Done(false));
        };
        let mut svc = found.value.clone();
        if svc.status != ServiceStatus::Active {
            return Ok(Attempt::Done(false));
        }
        if svc.desired_count == count as u32 {
            return Ok(Attempt::Done(true));
        }
        svc.desired_count = count as u32;
        svc.steady = false;
        svc.version += 1;
        svc.say(
            start,
            uuid::Uuid::new_v4().to_string(),
            &format!("desired count set to {count} by Application Auto Scaling: {cause}."),
        );
        let txn = Txn::when(
            vec![typed::unchanged(&key, found.mod_revision)],
            vec![
                typed::put(&key, &svc),
                Op::put(scope.placement(cluster), vec![]),
            ],
        );
        Ok(Attempt::Write(txn, true))
    })
    .await?;
    let end = ctl.clock.now();
    let activity = Activity {
        id: uuid::Uuid::new_v4().to_string(),
        resource_id: t.resource_id.clone(),
        description: format!("Setting desired count to {count}."),
        cause: cause.to_string(),
        start,
        end,
        status: if set { "Successful" } else { "Failed" }.into(),
        message: if set {
            format!(
                "Successfully set desired count to {count}. Change successfully fulfilled by ecs."
            )
        } else {
            format!("Failed to set desired count to {count}: the service is not ACTIVE.")
        },
        not_scaled: None,
    };
    record_activity(ctl, scope, &activity).await
}

/// Values of an alarm state's reason data: the newest datapoint, and the
/// evaluated datapoints.
fn datapoints(reason_data: Option<&str>) -> (Option<f64>, Vec<f64>) {
    let v: serde_json::Value = reason_data
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    let newest = v["recentDatapoints"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(serde_json::Value::as_f64);
    let evaluated = v["evaluatedDatapoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["value"].as_f64())
        .collect();
    (newest, evaluated)
}

/// What the alarm evaluator runs for an action naming a policy: decides
/// and scales. Ok with what happened; Err when the action cannot run.
pub async fn run_action(
    ctl: Control,
    scope: Scope,
    call: alarms::ActionCall,
) -> std::result::Result<String, String> {
    if !call.arn.contains(":scalingPolicy:") || !call.arn.contains(":resource/ecs/") {
        return Err("Berth runs Application Auto Scaling policy actions only".into());
    }
    run(
        &ctl,
        &scope,
        &call.arn,
        &call.alarm,
        &call.state,
        call.reason_data.as_deref(),
    )
    .await
    .map_err(|e| match e {
        ScalingFailure::Aas(e) => e.message,
        ScalingFailure::Control(e) => e.to_string(),
    })
}

async fn run(
    ctl: &Control,
    scope: &Scope,
    arn: &str,
    alarm: &str,
    state: &str,
    reason_data: Option<&str>,
) -> Result<String> {
    let (id, resource, name) = rules::parse_policy_arn(arn)
        .ok_or_else(|| AasError::validation(format!("{arn} is not a scaling policy ARN")))?;
    let policy = typed::get::<PolicyRecord>(&*ctl.store, &keys::policy(scope, &resource, &name))
        .await?
        .map(|v| v.value)
        .filter(|p| rules::parse_policy_arn(&p.arn).is_some_and(|(i, ..)| i == id))
        .ok_or_else(|| {
            AasError::not_found(format!(
                "No scaling policy found for the action's ARN {arn}"
            ))
        })?;
    let t = registered(ctl, scope, &resource).await?;
    let Some(svc) = service(ctl, scope, &resource).await? else {
        return Err(AasError::validation(format!("ECS service doesn't exist: {resource}")).into());
    };
    let current = svc.value.desired_count as i32;
    let deploying = svc.value.primary().rollout_state == RolloutState::InProgress
        && svc.value.deployments.len() > 1;
    let cooldown_key = keys::cooldowns(scope, &resource);
    let last = typed::get::<Cooldowns>(&*ctl.store, &cooldown_key)
        .await?
        .map(|v| v.value)
        .unwrap_or_default();
    let now = ctl.clock.now();
    let (newest, evaluated) = datapoints(reason_data);
    let (wanted, out_cd, in_cd) =
        match (policy.kind.as_str(), &policy.target_tracking, &policy.step) {
            ("TargetTrackingScaling", Some(tt), _) => {
                let Some(metric) = newest else {
                    return Ok("no datapoint to scale on".into());
                };
                let target_value = tt.target_value.unwrap_or(1.0);
                let high = alarm.contains("-AlarmHigh-");
                let wanted = rules::tracking_capacity(current, metric, target_value);
                if !high {
                    if tt.disable_scale_in.unwrap_or(false) || wanted >= current {
                        return Ok("nothing to remove".into());
                    }
                    // Scale in only when every policy that may scale in agrees.
                    let all = policies(ctl, scope).await?;
                    let states = alarms::list(ctl, scope).await?;
                    let others_agree = all
                        .iter()
                        .filter(|p| p.resource_id == resource && p.name != policy.name)
                        .filter(|p| {
                            p.target_tracking
                                .as_ref()
                                .is_some_and(|c| !c.disable_scale_in.unwrap_or(false))
                        })
                        .all(|p| {
                            p.alarms
                                .iter()
                                .filter(|(n, _)| n.contains("-AlarmLow-"))
                                .all(|(n, _)| {
                                    states.iter().any(|(r, s)| {
                                        r.input.alarm_name.as_deref() == Some(n.as_str())
                                            && s.value == berth_domain::alarms::ALARM
                                    })
                                })
                        });
                    if !others_agree {
                        return Ok("another policy does not agree to scale in".into());
                    }
                } else if wanted <= current && current < t.max {
                    return Ok("the metric asks for no more capacity".into());
                }
                (
                    wanted,
                    f64::from(tt.scale_out_cooldown.unwrap_or(DEFAULT_COOLDOWN)),
                    f64::from(tt.scale_in_cooldown.unwrap_or(DEFAULT_COOLDOWN)),
                )
            }
            ("StepScaling", _, Some(step)) => {
                let alarm_record: Option<AlarmRecord> =
                    alarms::get(ctl, scope, alarm).await?.map(|v| v.value);
                let threshold = alarm_record.and_then(|r| r.input.threshold).unwrap_or(0.0);
                if evaluated.is_empty() {
                    return Ok("the alarm's state has no datapoints to scale on".into());
                }
                let value = match step.metric_aggregation_type.as_deref() {
                    Some("Minimum") => evaluated.iter().copied().fold(f64::INFINITY, f64::min),
                    Some("Maximum") => evaluated.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    _ => evaluated.iter().sum::<f64>() / evaluated.len() as f64,
                };
                let Some(wanted) = rules::step_capacity(step, value, threshold, current) else {
                    return Ok(format!("no step adjustment covers {value}"));
                };
                let cd = f64::from(step.cooldown.unwrap_or(DEFAULT_COOLDOWN));
                (wanted, cd, cd)
            }
            _ => return Ok("the policy cannot scale".into()),
        };
    let cause = format!(
        "monitor alarm {alarm} in state {state} triggered policy {}",
        policy.name
    );
    match rules::decide(&t, current, wanted, out_cd, in_cd, &last, deploying, now) {
        Decision::Set(n) => {
            apply(ctl, scope, &t, n, &cause).await?;
            let mut next = last.clone();
            if n > current {
                next.out = Some((now, n));
                next.scale_in = None;
            } else {
                next.scale_in = Some(now);
            }
            ctl.store
                .txn(Txn::when(vec![], vec![typed::put(&cooldown_key, &next)]))
                .await?;
            Ok(format!("desired count set from {current} to {n}"))
        }
        Decision::Not(reason) => {
            let activity = Activity {
                id: uuid::Uuid::new_v4().to_string(),
                resource_id: resource.clone(),
                description: format!("Setting desired count to {}.", wanted.clamp(t.min, t.max)),
                cause,
                start: now,
                end: now,
                status: "Failed".into(),
                message: format!(
                    "Failed to set desired count to {}",
                    wanted.clamp(t.min, t.max)
                ),
                not_scaled: Some(reason.clone()),
            };
            record_activity(ctl, scope, &activity).await?;
            Ok(format!("not scaled: {}", reason.code))
        }
        Decision::Held(why) => Ok(format!("not scaled: {why}")),
    }
}

/// Changes a target's tags with `f`, checked before anything is written.
pub async fn change_tags(
    ctl: &Control,
    scope: &Scope,
    resource: &str,
    f: impl Fn(&mut std::collections::BTreeMap<String, String>),
) -> Result<()> {
    let key = keys::target(scope, resource);
    swap(ctl, || async {
        let Some(found) = typed::get::<TargetRecord>(&*ctl.store, &key).await? else {
            return Err(AasError::no_target(resource).into());
        };
        let mut t = found.value.clone();
        f(&mut t.tags);
        rules::check_tags(&t.tags)?;
        if t == found.value {
            return Ok(Attempt::Done(()));
        }
        Ok(Attempt::Write(
            Txn::when(
                vec![typed::unchanged(&key, found.mod_revision)],
                vec![typed::put(&key, &t)],
            ),
            (),
        ))
    })
    .await
}

/// A time zone of the system's database, as a schedule reads it.
struct TzZone(jiff::tz::TimeZone);

impl berth_domain::schedule::Zone for TzZone {
    fn civil(&self, epoch: i64) -> berth_domain::schedule::Civil {
        let dt = jiff::Timestamp::from_second(epoch)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(self.0.clone())
            .datetime();
        berth_domain::schedule::Civil {
            year: i32::from(dt.year()),
            month: dt.month() as u8,
            day: dt.day() as u8,
            hour: dt.hour() as u8,
            minute: dt.minute() as u8,
            second: dt.second() as u8,
        }
    }

    fn epoch(&self, c: berth_domain::schedule::Civil) -> i64 {
        jiff::civil::DateTime::new(
            c.year as i16,
            c.month as i8,
            c.day as i8,
            c.hour as i8,
            c.minute as i8,
            c.second as i8,
            0,
        )
        .and_then(|dt| dt.to_zoned(self.0.clone()))
        .map_or(0, |z| z.timestamp().as_second())
    }
}

/// The zone a scheduled action names (UTC when none), from the system's
/// time zone database.
fn zone(name: Option<&str>) -> std::result::Result<TzZone, AasError> {
    match name {
        None | Some("UTC") | Some("Etc/UTC") => Ok(TzZone(jiff::tz::TimeZone::UTC)),
        Some(n) => jiff::tz::TimeZone::get(n).map(TzZone).map_err(|_| {
            AasError::validation(format!(
                "Invalid Timezone: {n} is not an IANA time zone name"
            ))
        }),
    }
}

/// PutScheduledAction: creates or replaces a scheduled action.
pub async fn put_scheduled(
    ctl: &Control,
    scope: &Scope,
    input: &w::PutScheduledActionRequest,
) -> Result<ScheduledRecord> {
    let resource = rules::check_key(
        input.service_namespace.as_deref(),
        input.resource_id.as_deref(),
        input.scalable_dimension.as_deref(),
    )?;
    registered(ctl, scope, &resource).await?;
    zone(input.timezone.as_deref())?;
    let name = input.scheduled_action_name.clone().unwrap_or_default();
    let key = keys::scheduled_action(scope, &resource, &name);
    let existing = typed::get::<ScheduledRecord>(&*ctl.store, &key).await?;
    let arn = existing.as_ref().map_or_else(
        || {
            rules::scheduled_arn(
                &scope.region,
                &scope.account,
                &uuid::Uuid::new_v4().to_string(),
                &resource,
                &name,
            )
        },
        |e| e.value.arn.clone(),
    );
    let now = ctl.clock.now();
    let (mut record, _) = rules::check_scheduled(input, &resource, arn, now)?;
    if let Some(e) = &existing {
        record.created = e.value.created;
    }
    // A replaced action starts its schedule again. The region is listed
    // for the evaluator, which fires schedules as it judges alarms.
    ctl.store
        .txn(Txn::when(
            vec![],
            vec![
                typed::put(&key, &record),
                Op::delete(keys::scheduled_state(scope, &resource, &name)),
                crate::alarms::watched_region(scope),
            ],
        ))
        .await?;
    Ok(record)
}

pub async fn scheduled(ctl: &Control, scope: &Scope) -> Result<Vec<ScheduledRecord>> {
    Ok(
        typed::list::<ScheduledRecord>(&*ctl.store, &keys::scheduled(scope))
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect(),
    )
}

pub async fn delete_scheduled(
    ctl: &Control,
    scope: &Scope,
    resource: &str,
    name: &str,
) -> Result<()> {
    let key = keys::scheduled_action(scope, resource, name);
    if typed::get::<ScheduledRecord>(&*ctl.store, &key)
        .await?
        .is_none()
    {
        return Err(AasError::not_found(format!(
            "No scheduled action found for service namespace: ecs, resource ID: {resource}, scalable dimension: {}, scheduled action name: {name}",
            rules::DIMENSION
        ))
        .into());
    }
    ctl.store
        .txn(Txn::when(
            vec![],
            vec![
                Op::delete(key),
                Op::delete(keys::scheduled_state(scope, resource, name)),
            ],
        ))
        .await?;
    Ok(())
}

/// Fires the scheduled actions of `scope` that are due: each sets its
/// target's minimum and maximum, and the service's desired count moves
/// into the new range. A schedule that was due several times while no
/// server ran fires once.
pub async fn run_scheduled(ctl: &Control, scope: &Scope) -> Result<usize> {
    let now = ctl.clock.now();
    let mut fired = 0;
    for a in scheduled(ctl, scope).await? {
        let Ok(schedule) = berth_domain::schedule::Schedule::parse(&a.schedule) else {
            continue;
        };
        let Ok(z) = zone(a.timezone.as_deref()) else {
            continue;
        };
        let state_key = keys::scheduled_state(scope, &a.resource_id, &a.name);
        let state = typed::get::<ScheduledState>(&*ctl.store, &state_key)
            .await?
            .map(|v| v.value)
            .unwrap_or_default();
        let start = a.start.unwrap_or(a.created) as i64;
        let after = state.fired.map_or(a.created as i64 - 1, |f| f as i64);
        let Some(due) = schedule.next(&z, start, after) else {
            continue;
        };
        if (due as f64) > now || a.end.is_some_and(|e| (due as f64) > e) {
            continue;
        }
        let Some(t) = target(ctl, scope, &a.resource_id).await? else {
            continue;
        };
        let next_state = ScheduledState { fired: Some(now) };
        ctl.store
            .txn(Txn::when(vec![], vec![typed::put(&state_key, &next_state)]))
            .await?;
        fired += 1;
        if t.suspended.scheduled {
            continue;
        }
        let key = keys::target(scope, &a.resource_id);
        let (min, max) = (a.min, a.max);
        let updated = swap(ctl, || async {
            let Some(found) = typed::get::<TargetRecord>(&*ctl.store, &key).await? else {
                return Ok(Attempt::Done(None));
            };
            let mut t = found.value.clone();
            t.min = min.unwrap_or(t.min);
            t.max = max.unwrap_or(t.max).max(t.min);
            Ok(Attempt::Write(
                Txn::when(
                    vec![typed::unchanged(&key, found.mod_revision)],
                    vec![typed::put(&key, &t)],
                ),
                Some(t),
            ))
        })
        .await?;
        let Some(t) = updated else { continue };
        let cause = format!("scheduled action name {} was triggered", a.name);
        let activity = Activity {
            id: uuid::Uuid::new_v4().to_string(),
            resource_id: t.resource_id.clone(),
            description: format!(
                "Setting min capacity to {} and max capacity to {}",
                t.min, t.max
            ),
            cause: cause.clone(),
            start: now,
            end: ctl.clock.now(),
            status: "Successful".into(),
            message: format!(
                "Successfully set min capacity to {} and max capacity to {}",
                t.min, t.max
            ),
            not_scaled: None,
        };
        record_activity(ctl, scope, &activity).await?;
        if let Some(svc) = service(ctl, scope, &t.resource_id).await? {
            let current = svc.value.desired_count as i32;
            let clamped = current.clamp(t.min, t.max);
            if clamped != current {
                apply(ctl, scope, &t, clamped, &cause).await?;
            }
        }
    }
    Ok(fired)
}
