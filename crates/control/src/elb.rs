//! The load balancer's records as the cluster manager changes them:
//! found by ARN, changed by compare-and-swap, targets registered and
//! drained. The ELBv2 adapter and the services behind target groups
//! (`service_lb`) both write through here.

use crate::cas::{retry_swap, Attempt};
use crate::{Control, ControlError};
use berth_domain::elb::{
    ElbArn, ElbCode, ElbError, Listener, LoadBalancer, Registration, TargetGroup,
};
use berth_domain::Scope;
use berth_store::keys::ElbKeys;
use berth_store::typed::{self, Versioned};
use berth_store::{Op, StoreError, Txn};
use std::future::Future;

/// ELBv2's limit of targets per target group.
const MAX_TARGETS: usize = 1000;

/// Runs a read-modify-write until it applies; ELBv2 calls losing every
/// race PriorRequestNotComplete.
pub async fn swap<T, E, Fut>(st: &Control, attempt: impl FnMut() -> Fut) -> Result<T, E>
where
    E: From<StoreError> + From<ElbError>,
    Fut: Future<Output = Result<Attempt<T>, E>>,
{
    retry_swap(st, attempt).await?.ok_or_else(|| {
        ElbError::new(
            ElbCode::PriorRequestNotComplete,
            "A previous request on this resource has not completed; try again.",
        )
        .into()
    })
}

/// A record the API finds by its ARN and changes in place: a load
/// balancer or a target group.
pub trait ByArn: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync {
    /// The record's key and id, if `arn` names one of this kind.
    fn locate(scope: &Scope, arn: &str) -> Option<(String, String)>;
    fn id(&self) -> &str;
    fn not_found() -> ElbError;
}

impl ByArn for LoadBalancer {
    fn locate(scope: &Scope, arn: &str) -> Option<(String, String)> {
        match ElbArn::parse(scope, arn)? {
            ElbArn::LoadBalancer { name, id } => Some((scope.load_balancer(&name), id)),
            _ => None,
        }
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn not_found() -> ElbError {
        ElbError::lb_not_found()
    }
}

impl ByArn for TargetGroup {
    fn locate(scope: &Scope, arn: &str) -> Option<(String, String)> {
        match ElbArn::parse(scope, arn)? {
            ElbArn::TargetGroup { name, id } => Some((scope.target_group(&name), id)),
            _ => None,
        }
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn not_found() -> ElbError {
        ElbError::tg_not_found()
    }
}

/// The record `arn` names, with its key; a record of that name with
/// another id (deleted and created again) is not it.
pub async fn by_arn<T: ByArn>(
    st: &Control,
    scope: &Scope,
    arn: &str,
) -> Result<(String, Versioned<T>), ControlError> {
    if let Some((key, id)) = T::locate(scope, arn) {
        if let Some(record) = typed::get::<T>(&*st.store, &key).await? {
            if record.value.id() == id {
                return Ok((key, record));
            }
        }
    }
    Err(T::not_found().into())
}

pub async fn load_balancer(
    st: &Control,
    scope: &Scope,
    arn: &str,
) -> Result<Versioned<LoadBalancer>, ControlError> {
    Ok(by_arn(st, scope, arn).await?.1)
}

pub async fn target_group(
    st: &Control,
    scope: &Scope,
    arn: &str,
) -> Result<Versioned<TargetGroup>, ControlError> {
    Ok(by_arn(st, scope, arn).await?.1)
}

/// Changes a load balancer or target group by compare-and-swap; `change`
/// runs on each try's fresh read.
pub async fn update<T: ByArn>(
    st: &Control,
    scope: &Scope,
    arn: &str,
    change: impl Fn(&mut T) -> Result<(), ElbError>,
) -> Result<T, ControlError> {
    let change = &change;
    swap::<_, ControlError, _>(st, || async move {
        let (key, current) = by_arn::<T>(st, scope, arn).await?;
        let mut next = current.value.clone();
        change(&mut next)?;
        let txn = Txn::when(
            vec![typed::unchanged(&key, current.mod_revision)],
            vec![typed::put(&key, &next)],
        );
        Ok(Attempt::Write(txn, next))
    })
    .await
}

/// A listener by its ARN, with its key.
pub async fn listener(
    st: &Control,
    scope: &Scope,
    arn: &str,
) -> Result<(String, Versioned<Listener>), ControlError> {
    if let Some(ElbArn::Listener { lb_id, id, .. }) = ElbArn::parse(scope, arn) {
        let key = scope.listener(&lb_id, &id);
        if let Some(l) = typed::get::<Listener>(&*st.store, &key).await? {
            return Ok((key, l));
        }
    }
    Err(ElbError::listener_not_found().into())
}

/// The routing key's revision (0 before any listener was written).
pub async fn routing_revision(st: &Control, scope: &Scope) -> Result<i64, ControlError> {
    Ok(st
        .store
        .get(&scope.elb_routing())
        .await?
        .map_or(0, |kv| kv.mod_revision))
}

/// Every listener of the scope and the routing revision they were read at.
pub async fn all_listeners(
    st: &Control,
    scope: &Scope,
) -> Result<(i64, Vec<Versioned<Listener>>), ControlError> {
    let routing = routing_revision(st, scope).await?;
    let listeners = typed::list::<Listener>(&*st.store, &scope.listeners())
        .await?
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    Ok((routing, listeners))
}

/// The load balancers (ARNs) whose listeners forward to each target group (ARN).
pub fn group_users(
    scope: &Scope,
    listeners: &[Versioned<Listener>],
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for l in listeners {
        let lb = l.value.lb_arn(scope);
        for tg in l.value.target_groups() {
            let users = out.entry(tg).or_default();
            if !users.contains(&lb) {
                users.push(lb.clone());
            }
        }
    }
    out
}

/// Registers targets (or takes a draining one back), leaving those
/// already registered as they are.
pub async fn write_registrations(
    st: &Control,
    scope: &Scope,
    tg: &TargetGroup,
    targets: &[(String, i32, Option<String>)],
    task: Option<&str>,
) -> Result<(), ControlError> {
    swap::<_, ControlError, _>(st, || async move {
        let held = typed::list::<Registration>(&*st.store, &scope.targets_of(&tg.id)).await?;
        let mut compares = vec![];
        let mut ops = vec![];
        let mut count = held.iter().filter(|(_, r)| !r.value.draining()).count();
        for (id, port, zone) in targets {
            let key = scope.target(&tg.id, &Registration::key(id, *port));
            let current = held.iter().find(|(k, _)| k == &key).map(|(_, r)| r);
            if current.is_some_and(|r| !r.value.draining()) {
                continue;
            }
            count += 1;
            if count > MAX_TARGETS {
                return Err(ElbError::new(
                    ElbCode::TooManyTargets,
                    format!("A target group can have at most {MAX_TARGETS} targets"),
                )
                .into());
            }
            compares.push(typed::unchanged(
                &key,
                current.map_or(0, |r| r.mod_revision),
            ));
            ops.push(typed::put(
                &key,
                &Registration {
                    id: id.clone(),
                    port: *port,
                    availability_zone: zone.clone(),
                    registered_at: st.now(),
                    deregistered_at: None,
                    task: task.map(str::to_string),
                },
            ));
        }
        if ops.is_empty() {
            return Ok(Attempt::Done(()));
        }
        Ok(Attempt::Write(Txn::when(compares, ops), ()))
    })
    .await
}

/// Starts draining registered targets (`{id}:{port}`), or removes them at
/// once when the group's deregistration delay is 0. Returns the ones that
/// were not registered; nothing is written if any is missing.
pub async fn drain(
    st: &Control,
    scope: &Scope,
    tg: &TargetGroup,
    targets: &[String],
) -> Result<Vec<String>, ControlError> {
    let immediate = tg.deregistration_delay() == 0;
    swap::<_, ControlError, _>(st, || async move {
        let mut missing = vec![];
        let mut compares = vec![];
        let mut ops = vec![];
        for t in targets {
            let key = scope.target(&tg.id, t);
            let Some(r) = typed::get::<Registration>(&*st.store, &key).await? else {
                missing.push(t.clone());
                continue;
            };
            if r.value.draining() {
                continue;
            }
            compares.push(typed::unchanged(&key, r.mod_revision));
            if immediate {
                ops.push(Op::delete(&key));
                ops.extend(scope.target_observed(&tg.id, t).map(Op::delete));
            } else {
                let mut next = r.value.clone();
                next.deregistered_at = Some(st.now());
                ops.push(typed::put(&key, &next));
            }
        }
        if !missing.is_empty() || ops.is_empty() {
            return Ok(Attempt::Done(missing));
        }
        Ok(Attempt::Write(Txn::when(compares, ops), missing))
    })
    .await
}

/// What the leader last read of each target's traffic record, per scope,
/// to publish the differences. A scope seen for the first time (a new
/// leader) only sets its baseline.
#[derive(Default)]
pub struct Traffic(parking_lot::Mutex<std::collections::HashMap<Scope, TrafficSeen>>);

#[derive(Default)]
struct TrafficSeen {
    by_key: std::collections::HashMap<String, berth_domain::elb::RequestCount>,
}

/// Publishes the scope's AWS/ApplicationELB metrics: each target group's
/// traffic since the last look (from the records the data paths add to),
/// per target, per target group and per load balancer, and its healthy
/// and unhealthy targets now.
pub async fn publish_metrics(
    ctl: &Control,
    scope: &Scope,
    seen: &Traffic,
) -> Result<(), ControlError> {
    use berth_domain::elb::{HealthRecord, RequestCount};
    use berth_domain::usage_metrics::{self as um, GroupTraffic};
    let groups = typed::list::<TargetGroup>(&*ctl.store, &scope.target_groups()).await?;
    if groups.is_empty() {
        return Ok(());
    }
    let (_, listeners) = all_listeners(ctl, scope).await?;
    let users = group_users(scope, &listeners);
    let lbs: std::collections::HashMap<String, String> =
        typed::list::<LoadBalancer>(&*ctl.store, &scope.load_balancers())
            .await?
            .into_iter()
            .map(|(_, lb)| (lb.value.arn(scope), lb.value.dimension()))
            .collect();
    let at = ctl.clock.now() as i64;
    let mut current: Vec<(String, RequestCount)> = vec![];
    let mut out = vec![];
    let mut per_lb: std::collections::BTreeMap<String, RequestCount> = Default::default();
    let mut first_look = false;
    let mut staged = vec![];
    for (_, tg) in &groups {
        let tg = &tg.value;
        let regs = typed::list::<Registration>(&*ctl.store, &scope.targets_of(&tg.id)).await?;
        if regs.is_empty() {
            continue;
        }
        let health: std::collections::HashMap<String, String> =
            typed::list::<HealthRecord>(&*ctl.store, &scope.target_healths_of(&tg.id))
                .await?
                .into_iter()
                .map(|(k, h)| {
                    (
                        k.rsplit('/').next().unwrap_or_default().to_string(),
                        h.value.state,
                    )
                })
                .collect();
        let (mut healthy, mut unhealthy) = (0, 0);
        for (_, r) in regs.iter().filter(|(_, r)| !r.value.draining()) {
            match health
                .get(&Registration::key(&r.value.id, r.value.port))
                .map(String::as_str)
            {
                Some("healthy") => healthy += 1,
                Some("unhealthy") => unhealthy += 1,
                _ => {}
            }
        }
        let counts =
            typed::list::<RequestCount>(&*ctl.store, &scope.target_requests_of(&tg.id)).await?;
        staged.push((tg.clone(), healthy, unhealthy, counts));
    }
    {
        let mut all = seen.0.lock();
        let entry = all.entry(scope.clone()).or_insert_with(|| {
            first_look = true;
            TrafficSeen::default()
        });
        for (tg, healthy, unhealthy, counts) in staged {
            let mut sum = RequestCount::default();
            for (key, c) in counts {
                let delta = match entry.by_key.get(&key) {
                    Some(prev) => c.value.since(prev),
                    None if first_look => RequestCount::default(),
                    None => c.value.clone(),
                };
                sum = sum.add(&delta);
                current.push((key, c.value));
            }
            let lb = users
                .get(&tg.arn(scope))
                .and_then(|u| u.first())
                .and_then(|arn| lbs.get(arn))
                .cloned();
            if let Some(lb) = &lb {
                let e = per_lb.entry(lb.clone()).or_default();
                *e = e.add(&sum);
            }
            out.extend(um::target_group_datapoints(
                &GroupTraffic {
                    target_group: tg.dimension(),
                    load_balancer: lb,
                    traffic: sum,
                    healthy,
                    unhealthy,
                },
                at,
            ));
        }
        entry.by_key = current.into_iter().collect();
    }
    for (lb, t) in &per_lb {
        out.extend(um::load_balancer_datapoints(lb, t, at));
    }
    let data = out
        .into_iter()
        .map(|d| crate::cloudwatch::stored(um::ALB, d))
        .collect();
    crate::cloudwatch::publish(ctl, scope, data).await;
    Ok(())
}
