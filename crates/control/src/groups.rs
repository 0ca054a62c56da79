//! Auto Scaling groups and EC2 launch templates against the store: what
//! the APIs write (templates and their versions, groups with their bounds
//! and desired capacity, protection, termination and lifecycle-action
//! requests, hooks) and the group controller that makes a group's
//! instances follow its desired capacity through a [`Launcher`]: it
//! launches, sees an instance InService once its agent registers with the
//! instance id, fails a launch that never registers, picks instances to
//! terminate (never protected ones), holds them in Terminating:Wait for a
//! termination hook, and stops them, recording every step as an activity.

use crate::launcher::{LaunchRequest, Launcher};
use crate::{Control, ControlError};
use berth_domain::asg::{
    self as rules, state, ActivityRecord, AsgError, Ec2Error, GroupRecord, InstanceRecord,
    LaunchTemplate, TemplateRef, TemplateVersion,
};
use berth_domain::instance::ContainerInstance;
use berth_domain::Scope;
use berth_store::keys::autoscaling as keys;
use berth_store::keys::ec2 as ec2_keys;
use berth_store::keys::Keys;
use berth_store::typed::{self, Versioned};
use berth_store::{Op, RangeRequest, Txn};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// An Auto Scaling or EC2 failure, or the store's.
#[derive(Debug, thiserror::Error)]
pub enum GroupFailure {
    #[error(transparent)]
    Asg(#[from] AsgError),
    #[error(transparent)]
    Ec2(#[from] Ec2Error),
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl From<berth_store::StoreError> for GroupFailure {
    fn from(e: berth_store::StoreError) -> Self {
        GroupFailure::Control(e.into())
    }
}

impl GroupFailure {
    /// For callers outside the Auto Scaling API, where only the store's
    /// failures can arise.
    pub fn into_control(self) -> ControlError {
        match self {
            GroupFailure::Control(e) => e,
            e => ControlError::Internal(e.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, GroupFailure>;

const RETRIES: usize = 16;

fn busy() -> GroupFailure {
    AsgError::contention("You already have a pending update to an Auto Scaling resource (for example, a group, instance, or load balancer).").into()
}

fn short_hex(n: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..n].to_string()
}

// ---- launch templates ----

/// A template by id or name (EC2's errors when neither finds one).
pub async fn template(
    ctl: &Control,
    scope: &Scope,
    id: Option<&str>,
    name: Option<&str>,
) -> Result<Versioned<LaunchTemplate>> {
    let id = match (id.filter(|i| !i.is_empty()), name.filter(|n| !n.is_empty())) {
        (Some(id), _) => id.to_string(),
        (None, Some(name)) => {
            typed::get::<String>(&*ctl.store, &ec2_keys::template_name(scope, name))
                .await?
                .map(|v| v.value)
                .ok_or_else(Ec2Error::template_not_found)?
        }
        (None, None) => {
            return Err(Ec2Error::missing("LaunchTemplateId or LaunchTemplateName").into())
        }
    };
    typed::get::<LaunchTemplate>(&*ctl.store, &ec2_keys::template(scope, &id))
        .await?
        .ok_or_else(|| Ec2Error::template_id_not_found(&id).into())
}

/// CreateLaunchTemplate: the template and its version 1.
pub async fn create_template(
    ctl: &Control,
    scope: &Scope,
    name: &str,
    data: serde_json::Value,
    description: Option<String>,
    tags: Vec<(String, String)>,
    created_by: &str,
) -> Result<(LaunchTemplate, TemplateVersion)> {
    let now = ctl.now();
    let t = LaunchTemplate {
        id: format!("lt-{}", short_hex(17)),
        name: name.to_string(),
        created_by: created_by.to_string(),
        create_time: now,
        default_version: 1,
        latest_version: 1,
        tags,
    };
    let v = TemplateVersion {
        template_id: t.id.clone(),
        template_name: t.name.clone(),
        number: 1,
        description,
        created_by: created_by.to_string(),
        create_time: now,
        data,
    };
    let name_key = ec2_keys::template_name(scope, name);
    let txn = Txn::when(
        vec![typed::unchanged(&name_key, 0)],
        vec![
            typed::put(&name_key, &t.id),
            typed::put(&ec2_keys::template(scope, &t.id), &t),
            typed::put(&ec2_keys::version(scope, &t.id, 1), &v),
        ],
    );
    if !ctl.store.txn(txn).await?.succeeded {
        return Err(Ec2Error::new(
            "InvalidLaunchTemplateName.AlreadyExistsException",
            "Launch template name already in use.",
        )
        .into());
    }
    Ok((t, v))
}

/// CreateLaunchTemplateVersion: a new latest version, from `source`'s
/// data with `data`'s members over it when a source is given.
#[allow(clippy::too_many_arguments)]
pub async fn create_version(
    ctl: &Control,
    scope: &Scope,
    id: Option<&str>,
    name: Option<&str>,
    source: Option<&str>,
    data: serde_json::Value,
    description: Option<String>,
    created_by: &str,
) -> Result<(LaunchTemplate, TemplateVersion)> {
    for _ in 0..RETRIES {
        let t = template(ctl, scope, id, name).await?;
        let mut merged = data.clone();
        if let Some(s) = source {
            let n = rules::resolve_version(&t.value, Some(s))?;
            let base = typed::get::<TemplateVersion>(
                &*ctl.store,
                &ec2_keys::version(scope, &t.value.id, n),
            )
            .await?
            .map(|v| v.value.data)
            .unwrap_or_default();
            if let (Some(b), Some(d)) = (base.as_object(), data.as_object()) {
                let mut m = b.clone();
                for (k, v) in d {
                    m.insert(k.clone(), v.clone());
                }
                merged = serde_json::Value::Object(m);
            }
        }
        let mut next = t.value.clone();
        next.latest_version += 1;
        let v = TemplateVersion {
            template_id: next.id.clone(),
            template_name: next.name.clone(),
            number: next.latest_version,
            description: description.clone(),
            created_by: created_by.to_string(),
            create_time: ctl.now(),
            data: merged,
        };
        let key = ec2_keys::template(scope, &next.id);
        let txn = Txn::when(
            vec![typed::unchanged(&key, t.mod_revision)],
            vec![
                typed::put(&key, &next),
                typed::put(&ec2_keys::version(scope, &next.id, v.number), &v),
            ],
        );
        if ctl.store.txn(txn).await?.succeeded {
            return Ok((next, v));
        }
    }
    Err(Ec2Error::new(
        "ConcurrentTagAccess",
        "Too many concurrent changes to this launch template; try again.",
    )
    .into())
}

/// Every template of the scope.
pub async fn templates(ctl: &Control, scope: &Scope) -> Result<Vec<LaunchTemplate>> {
    Ok(
        typed::list::<LaunchTemplate>(&*ctl.store, &ec2_keys::templates(scope))
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect(),
    )
}

/// The versions of a template, all or those `asked` (`$Latest`,
/// `$Default`, numbers).
pub async fn versions(
    ctl: &Control,
    scope: &Scope,
    t: &LaunchTemplate,
    asked: &[String],
) -> Result<Vec<TemplateVersion>> {
    let all: Vec<TemplateVersion> =
        typed::list::<TemplateVersion>(&*ctl.store, &ec2_keys::versions_of(scope, &t.id))
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect();
    if asked.is_empty() {
        return Ok(all);
    }
    let mut out = vec![];
    for a in asked {
        let n = rules::resolve_version(t, Some(a))?;
        if let Some(v) = all.iter().find(|v| v.number == n) {
            out.push(v.clone());
        }
    }
    Ok(out)
}

/// ModifyLaunchTemplate: its default version.
pub async fn set_default_version(
    ctl: &Control,
    scope: &Scope,
    id: Option<&str>,
    name: Option<&str>,
    version: &str,
) -> Result<LaunchTemplate> {
    for _ in 0..RETRIES {
        let t = template(ctl, scope, id, name).await?;
        let n = rules::resolve_version(&t.value, Some(version))?;
        let mut next = t.value.clone();
        next.default_version = n;
        let key = ec2_keys::template(scope, &next.id);
        let txn = Txn::when(
            vec![typed::unchanged(&key, t.mod_revision)],
            vec![typed::put(&key, &next)],
        );
        if ctl.store.txn(txn).await?.succeeded {
            return Ok(next);
        }
    }
    Err(busy())
}

/// DeleteLaunchTemplate: the template and its versions.
pub async fn delete_template(
    ctl: &Control,
    scope: &Scope,
    id: Option<&str>,
    name: Option<&str>,
) -> Result<LaunchTemplate> {
    let t = template(ctl, scope, id, name).await?;
    let mut ops = vec![
        Op::delete(ec2_keys::template(scope, &t.value.id)),
        Op::delete(ec2_keys::template_name(scope, &t.value.name)),
    ];
    for kv in ctl
        .store
        .range(RangeRequest::prefix(ec2_keys::versions_of(
            scope,
            &t.value.id,
        )))
        .await?
        .kvs
    {
        ops.push(Op::delete(kv.key));
    }
    let txn = Txn::when(
        vec![typed::unchanged(
            &ec2_keys::template(scope, &t.value.id),
            t.mod_revision,
        )],
        ops,
    );
    if !ctl.store.txn(txn).await?.succeeded {
        return Err(busy());
    }
    Ok(t.value)
}

// ---- groups ----

/// The hidden group whose instances are the Fargate pool's launched
/// hosts: the group controller launches and retires them like any
/// group's, but no API shows it or lets it be named.
pub const POOL_GROUP: &str = "berth:fargate-pool";

pub async fn group(ctl: &Control, scope: &Scope, name: &str) -> Result<Versioned<GroupRecord>> {
    typed::get::<GroupRecord>(&*ctl.store, &keys::group(scope, name))
        .await?
        .filter(|g| !g.value.deleting && name != POOL_GROUP)
        .ok_or_else(|| AsgError::no_group(name).into())
}

pub async fn groups(ctl: &Control, scope: &Scope) -> Result<Vec<GroupRecord>> {
    Ok(
        typed::list::<GroupRecord>(&*ctl.store, &keys::groups(scope))
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .filter(|g| g.name != POOL_GROUP)
            .collect(),
    )
}

/// The template a group launches from, checked: it exists and its version
/// resolves.
pub async fn template_ref(
    ctl: &Control,
    scope: &Scope,
    spec: Option<&berth_wire::autoscaling::LaunchTemplateSpecification>,
) -> Result<TemplateRef> {
    let spec = spec.ok_or_else(|| {
        AsgError::validation(
            "Valid requests must contain either LaunchTemplate, LaunchConfigurationName, InstanceId or MixedInstancesPolicy parameter.",
        )
    })?;
    let t = template(
        ctl,
        scope,
        spec.launch_template_id.as_deref(),
        spec.launch_template_name.as_deref(),
    )
    .await
    .map_err(|e| match e {
        GroupFailure::Ec2(_) => GroupFailure::Asg(AsgError::validation(format!(
            "You must use a valid fully-formed launch template. The specified launch template, with template {}, does not exist.",
            spec.launch_template_id.as_deref().map_or_else(
                || format!("name {}", spec.launch_template_name.as_deref().unwrap_or_default()),
                |i| format!("ID {i}")
            )
        ))),
        e => e,
    })?;
    let version = spec.version.clone().unwrap_or_else(|| "$Default".into());
    rules::resolve_version(&t.value, Some(&version)).map_err(|e| {
        AsgError::validation(format!(
            "You must use a valid fully-formed launch template. {}",
            e.message
        ))
    })?;
    Ok(TemplateRef {
        id: t.value.id,
        name: t.value.name,
        version,
    })
}

/// The zones a group's subnets (VPCZoneIdentifier) or zones name.
pub fn zones_of(
    ctl: &Control,
    zones: Option<&[String]>,
    subnets: Option<&str>,
) -> std::result::Result<Vec<String>, AsgError> {
    let mut out: Vec<String> = zones.map(<[String]>::to_vec).unwrap_or_default();
    if let Some(s) = subnets.filter(|s| !s.is_empty()) {
        for id in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let subnet = ctl
                .config
                .network
                .subnets
                .iter()
                .find(|x| x.id == id)
                .ok_or_else(|| {
                    AsgError::validation(format!("The subnet ID '{id}' does not exist"))
                })?;
            if !out.contains(&subnet.availability_zone) {
                out.push(subnet.availability_zone.clone());
            }
        }
    }
    if out.is_empty() {
        return Err(AsgError::validation(
            "At least one Availability Zone or VPC Subnet is required.",
        ));
    }
    Ok(out)
}

/// CreateAutoScalingGroup: the record, checked (its instances follow).
pub async fn create_group(ctl: &Control, scope: &Scope, g: GroupRecord) -> Result<()> {
    if g.name == POOL_GROUP {
        return Err(AsgError::validation(format!(
            "The Auto Scaling group name {POOL_GROUP} is reserved by Berth for its Fargate pool."
        ))
        .into());
    }
    let key = keys::group(scope, &g.name);
    if let Some(existing) = typed::get::<GroupRecord>(&*ctl.store, &key).await? {
        if existing.value.deleting {
            return Err(AsgError::validation(format!(
                "AutoScalingGroup {} is pending delete; wait for it to finish.",
                g.name
            ))
            .into());
        }
        return Err(AsgError::exists(format!(
            "AutoScalingGroup by this name already exists - A group with the name {} already exists",
            g.name
        ))
        .into());
    }
    let txn = Txn::when(
        vec![typed::unchanged(&key, 0)],
        vec![typed::put(&key, &g), crate::alarms::watched_region(scope)],
    );
    if !ctl.store.txn(txn).await?.succeeded {
        return Err(AsgError::exists(format!(
            "AutoScalingGroup by this name already exists - A group with the name {} already exists",
            g.name
        ))
        .into());
    }
    Ok(())
}

/// Changes a group by compare-and-swap with `change`.
pub async fn update_group(
    ctl: &Control,
    scope: &Scope,
    name: &str,
    change: impl FnMut(&mut GroupRecord) -> Result<()>,
) -> Result<GroupRecord> {
    group(ctl, scope, name).await?;
    change_group(ctl, scope, name, change).await
}

/// Changes any group record, the Fargate pool's hidden one included, by
/// compare-and-swap with `change`.
pub(crate) async fn change_group(
    ctl: &Control,
    scope: &Scope,
    name: &str,
    mut change: impl FnMut(&mut GroupRecord) -> Result<()>,
) -> Result<GroupRecord> {
    let key = keys::group(scope, name);
    for _ in 0..RETRIES {
        let g = typed::get::<GroupRecord>(&*ctl.store, &key)
            .await?
            .filter(|g| !g.value.deleting)
            .ok_or_else(|| AsgError::no_group(name))?;
        let mut next = g.value.clone();
        change(&mut next)?;
        if next == g.value {
            return Ok(next);
        }
        let txn = Txn::when(
            vec![typed::unchanged(&key, g.mod_revision)],
            vec![typed::put(&key, &next)],
        );
        if ctl.store.txn(txn).await?.succeeded {
            return Ok(next);
        }
    }
    Err(busy())
}

/// Sets a group's desired capacity, with why (for its activities).
pub fn set_desired(g: &mut GroupRecord, desired: i32, why: String) {
    if g.desired != desired {
        g.desired_cause = why;
        g.desired = desired;
    }
}

/// The instances of a group, with whether each is protected.
pub async fn instances(
    ctl: &Control,
    scope: &Scope,
    group: &str,
) -> Result<Vec<(Versioned<InstanceRecord>, bool)>> {
    let protected: HashMap<String, bool> =
        typed::list::<bool>(&*ctl.store, &keys::protections_of(scope, group))
            .await?
            .into_iter()
            .map(|(k, v)| {
                (
                    k.rsplit('/').next().unwrap_or_default().to_string(),
                    v.value,
                )
            })
            .collect();
    Ok(
        typed::list::<InstanceRecord>(&*ctl.store, &keys::instances_of(scope, group))
            .await?
            .into_iter()
            .map(|(_, v)| {
                let p = protected.get(&v.value.id).copied().unwrap_or(false);
                (v, p)
            })
            .collect(),
    )
}

/// DeleteAutoScalingGroup: a group with instances only with `force`; its
/// instances are then terminated and the group goes with the last.
pub async fn delete_group(ctl: &Control, scope: &Scope, name: &str, force: bool) -> Result<()> {
    let live = instances(ctl, scope, name)
        .await?
        .into_iter()
        .filter(|(i, _)| i.value.lifecycle != state::TERMINATED)
        .count();
    if live > 0 && !force {
        return Err(AsgError::in_use(
            "You cannot delete an AutoScalingGroup while there are instances or pending Spot instance request(s) still in the group.",
        )
        .into());
    }
    update_group(ctl, scope, name, |g| {
        g.deleting = true;
        set_desired(g, 0, "a user request deleted the group".into());
        g.min = 0;
        Ok(())
    })
    .await?;
    Ok(())
}

/// The instance `id` of any group: its group and record.
pub async fn find_instance(
    ctl: &Control,
    scope: &Scope,
    id: &str,
) -> Result<Option<(GroupRecord, InstanceRecord, bool)>> {
    for g in groups(ctl, scope).await? {
        for (i, protected) in instances(ctl, scope, &g.name).await? {
            if i.value.id == id {
                return Ok(Some((g, i.value, protected)));
            }
        }
    }
    Ok(None)
}

/// What TerminateInstanceInAutoScalingGroup asked: the controller
/// terminates the instance with this activity.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TerminationAsked {
    pub activity: String,
    pub at: f64,
    pub cause: String,
}

/// TerminateInstanceInAutoScalingGroup: asks for the instance to go (and
/// the desired capacity to drop with it if `decrement`); the activity the
/// controller will run, as the API answers it.
pub async fn terminate_instance(
    ctl: &Control,
    scope: &Scope,
    id: &str,
    decrement: bool,
) -> Result<ActivityRecord> {
    for _ in 0..RETRIES {
        let Some((g, inst, _)) = find_instance(ctl, scope, id).await? else {
            return Err(AsgError::validation(format!(
                "Instance Id not found - No managed instance found for instance ID: {id}"
            ))
            .into());
        };
        if inst.terminating() {
            return Err(
                AsgError::validation(format!("The instance {id} is already terminating.")).into(),
            );
        }
        let gkey = keys::group(scope, &g.name);
        let read = typed::get::<GroupRecord>(&*ctl.store, &gkey)
            .await?
            .ok_or_else(|| AsgError::no_group(&g.name))?;
        let mut next = read.value.clone();
        let now = ctl.now();
        let cause = if decrement {
            if next.desired <= next.min {
                return Err(AsgError::validation(format!(
                    "Currently, desiredSize equals minSize ({}). Terminating instance without replacement will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size.",
                    next.min
                ))
                .into());
            }
            let was = next.desired;
            next.desired -= 1;
            format!(
                "At {} instance {id} was taken out of service in response to a user request, shrinking the capacity from {was} to {}.",
                rules::iso(now),
                next.desired
            )
        } else {
            format!(
                "At {} instance {id} was taken out of service in response to a user request.",
                rules::iso(now)
            )
        };
        let activity = ActivityRecord {
            id: uuid::Uuid::new_v4().to_string(),
            group: g.name.clone(),
            description: format!("Terminating EC2 instance: {id}"),
            cause: cause.clone(),
            start: now,
            end: None,
            status: "InProgress".into(),
            status_message: None,
            progress: 0,
            details: None,
        };
        let asked = TerminationAsked {
            activity: activity.id.clone(),
            at: now,
            cause,
        };
        let txn = Txn::when(
            vec![typed::unchanged(&gkey, read.mod_revision)],
            vec![
                typed::put(&gkey, &next),
                typed::put(&keys::termination(scope, &g.name, id), &asked),
            ],
        );
        if ctl.store.txn(txn).await?.succeeded {
            return Ok(activity);
        }
    }
    Err(busy())
}

/// SetInstanceProtection.
pub async fn set_protection(
    ctl: &Control,
    scope: &Scope,
    group_name: &str,
    ids: &[String],
    protected: bool,
) -> Result<()> {
    group(ctl, scope, group_name).await?;
    let known: HashSet<String> = instances(ctl, scope, group_name)
        .await?
        .into_iter()
        .filter(|(i, _)| i.value.counted())
        .map(|(i, _)| i.value.id)
        .collect();
    let mut ops = vec![];
    for id in ids {
        if !known.contains(id) {
            return Err(AsgError::validation(format!(
                "The instance {id} is not part of Auto Scaling group {group_name}."
            ))
            .into());
        }
        ops.push(typed::put(
            &keys::protection(scope, group_name, id),
            &protected,
        ));
    }
    ctl.store.txn(Txn::when(vec![], ops)).await?;
    Ok(())
}

/// A lifecycle hook (the API's record).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hook {
    pub name: String,
    pub group: String,
    pub transition: String,
    pub heartbeat_timeout: i32,
    pub default_result: String,
    #[serde(default)]
    pub metadata: Option<String>,
}

/// What CompleteLifecycleAction or RecordLifecycleActionHeartbeat said of
/// an instance in a wait state.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActionAsked {
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub heartbeat: Option<f64>,
}

pub async fn hooks(ctl: &Control, scope: &Scope, group: &str) -> Result<Vec<Hook>> {
    Ok(
        typed::list::<Hook>(&*ctl.store, &keys::hooks_of(scope, group))
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect(),
    )
}

pub async fn put_hook(ctl: &Control, scope: &Scope, h: Hook) -> Result<()> {
    group(ctl, scope, &h.group).await?;
    ctl.store
        .txn(Txn::when(
            vec![],
            vec![typed::put(&keys::hook(scope, &h.group, &h.name), &h)],
        ))
        .await?;
    Ok(())
}

pub async fn delete_hook(ctl: &Control, scope: &Scope, group_name: &str, name: &str) -> Result<()> {
    group(ctl, scope, group_name).await?;
    let key = keys::hook(scope, group_name, name);
    if ctl.store.get(&key).await?.is_none() {
        return Err(AsgError::validation(format!(
            "No Lifecycle Hook found with name {name} for group {group_name}"
        ))
        .into());
    }
    ctl.store
        .txn(Txn::when(vec![], vec![Op::delete(key)]))
        .await?;
    Ok(())
}

/// CompleteLifecycleAction (`result`) or RecordLifecycleActionHeartbeat.
pub async fn lifecycle_action(
    ctl: &Control,
    scope: &Scope,
    group_name: &str,
    hook: &str,
    instance: &str,
    result: Option<String>,
) -> Result<()> {
    group(ctl, scope, group_name).await?;
    let waiting = instances(ctl, scope, group_name)
        .await?
        .into_iter()
        .any(|(i, _)| i.value.id == instance && i.value.lifecycle.ends_with(":Wait"));
    let hooked = typed::get::<Hook>(&*ctl.store, &keys::hook(scope, group_name, hook))
        .await?
        .is_some();
    if !waiting || !hooked {
        return Err(AsgError::validation(format!(
            "No active Lifecycle Action found with instance ID {instance}"
        ))
        .into());
    }
    let key = keys::action(scope, group_name, instance);
    let mut asked = typed::get::<ActionAsked>(&*ctl.store, &key)
        .await?
        .map(|v| v.value)
        .unwrap_or_default();
    match result {
        Some(r) => asked.result = Some(r),
        None => asked.heartbeat = Some(ctl.now()),
    }
    ctl.store
        .txn(Txn::when(vec![], vec![typed::put(&key, &asked)]))
        .await?;
    Ok(())
}

/// A group's activities, newest first.
pub async fn activities(ctl: &Control, scope: &Scope, group: &str) -> Result<Vec<ActivityRecord>> {
    let mut out: Vec<ActivityRecord> =
        typed::list::<ActivityRecord>(&*ctl.store, &keys::activities_of(scope, group))
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect();
    out.reverse();
    Ok(out)
}

// ---- the group controller ----

/// What the group controller needs besides the store: the launcher (none:
/// launches fail, saying so), how long a launch may take to register, and
/// what it keeps between rounds.
pub struct GroupRuntime {
    pub launcher: Option<Arc<dyn Launcher>>,
    pub launch_timeout: Duration,
    /// Launches and terminations under way (their launcher calls run in
    /// tasks of their own).
    busy: Mutex<HashSet<String>>,
    /// When a group may launch again after a failed launch, and how many
    /// failed in a row.
    backoff: Mutex<HashMap<(Scope, String), (f64, u32)>>,
}

impl std::fmt::Debug for GroupRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupRuntime")
            .field("launcher", &self.launcher.as_ref().map(|l| l.name()))
            .field("launch_timeout", &self.launch_timeout)
            .finish()
    }
}

impl GroupRuntime {
    pub fn new(launcher: Option<Arc<dyn Launcher>>, launch_timeout: Duration) -> Self {
        GroupRuntime {
            launcher,
            launch_timeout,
            busy: Mutex::new(HashSet::new()),
            backoff: Mutex::new(HashMap::new()),
        }
    }
}

/// How long a Terminated instance stays listed.
const TERMINATED_SHOWN: f64 = 60.0;

/// Writes an activity (new or changed).
fn activity_op(scope: &Scope, a: &ActivityRecord) -> Op {
    typed::put(
        &keys::activity(scope, &a.group, (a.start * 1000.0) as i64, &a.id),
        a,
    )
}

async fn read_activity(
    ctl: &Control,
    scope: &Scope,
    group: &str,
    id: &str,
) -> Result<Option<ActivityRecord>> {
    Ok(activities(ctl, scope, group)
        .await?
        .into_iter()
        .find(|a| a.id == id))
}

/// Ends an activity with `status` (and a message).
async fn finish_activity(
    ctl: &Control,
    scope: &Scope,
    group: &str,
    id: &str,
    status: &str,
    message: Option<String>,
) -> Result<Option<Op>> {
    Ok(read_activity(ctl, scope, group, id).await?.map(|mut a| {
        a.status = status.into();
        a.status_message = message;
        a.end = Some(ctl.now());
        a.progress = 100;
        activity_op(scope, &a)
    }))
}

/// Container instances by the EC2 instance id their agents registered.
async fn registered(ctl: &Control, scope: &Scope) -> Result<HashMap<String, ContainerInstance>> {
    Ok(
        typed::list::<ContainerInstance>(&*ctl.store, &scope.instances_all())
            .await?
            .into_iter()
            .map(|(_, v)| (v.value.ec2_instance_id.clone(), v.value))
            .collect(),
    )
}

/// Writes `next` over instance record `read` (and `extra` ops) if it is
/// unchanged; whether it was.
async fn move_instance(
    ctl: &Control,
    scope: &Scope,
    read: &Versioned<InstanceRecord>,
    next: &InstanceRecord,
    extra: Vec<Op>,
) -> Result<bool> {
    let key = keys::instance(scope, &next.group, &next.id);
    let mut ops = vec![typed::put(&key, next)];
    ops.extend(extra);
    Ok(ctl
        .store
        .txn(Txn::when(
            vec![typed::unchanged(&key, read.mod_revision)],
            ops,
        ))
        .await?
        .succeeded)
}

/// One round of a group: instances registered become InService, launches
/// that never register fail, waits end, terminations proceed, and the
/// count moves toward the desired capacity. When to look again, if
/// something is under way.
pub async fn reconcile(
    ctl: &Control,
    rt: &Arc<GroupRuntime>,
    scope: &Scope,
    name: &str,
) -> Result<Option<Duration>> {
    let gkey = keys::group(scope, name);
    let Some(g) = typed::get::<GroupRecord>(&*ctl.store, &gkey).await? else {
        return Ok(None);
    };
    let g = g.value;
    let now = ctl.now();
    let by_ec2 = registered(ctl, scope).await?;
    let hooks = hooks(ctl, scope, name).await?;
    let terminating_hook = hooks
        .iter()
        .find(|h| h.transition == "autoscaling:EC2_INSTANCE_TERMINATING")
        .cloned();
    let asked_terminations: HashMap<String, TerminationAsked> =
        typed::list::<TerminationAsked>(&*ctl.store, &keys::terminations_of(scope, name))
            .await?
            .into_iter()
            .map(|(k, v)| {
                (
                    k.rsplit('/').next().unwrap_or_default().to_string(),
                    v.value,
                )
            })
            .collect();
    let actions: HashMap<String, ActionAsked> =
        typed::list::<ActionAsked>(&*ctl.store, &keys::actions_of(scope, name))
            .await?
            .into_iter()
            .map(|(k, v)| {
                (
                    k.rsplit('/').next().unwrap_or_default().to_string(),
                    v.value,
                )
            })
            .collect();
    let mut again: Option<Duration> = None;
    let mut soon = |d: Duration| {
        again = Some(again.map_or(d, |a: Duration| a.min(d)));
    };
    let list = instances(ctl, scope, name).await?;
    for (read, _) in &list {
        let i = &read.value;
        let mut next = i.clone();
        match i.lifecycle.as_str() {
            state::PENDING => {
                if by_ec2.contains_key(&i.id) {
                    next.lifecycle = state::IN_SERVICE.into();
                    next.in_service_at = Some(now);
                    let done =
                        finish_activity(ctl, scope, name, &i.activity, "Successful", None).await?;
                    move_instance(ctl, scope, read, &next, done.into_iter().collect()).await?;
                } else if now - i.launched > rt.launch_timeout.as_secs_f64() {
                    let msg = format!(
                        "Instance {} did not register its agent within {} seconds of its launch; it was terminated.",
                        i.id,
                        rt.launch_timeout.as_secs()
                    );
                    let failed =
                        finish_activity(ctl, scope, name, &i.activity, "Failed", Some(msg)).await?;
                    next.lifecycle = state::TERMINATING.into();
                    move_instance(ctl, scope, read, &next, failed.into_iter().collect()).await?;
                    soon(Duration::from_millis(200));
                } else {
                    soon(Duration::from_secs(1));
                }
            }
            state::TERMINATING_WAIT => {
                let asked = actions.get(&i.id);
                let deadline = asked
                    .and_then(|a| a.heartbeat)
                    .map(|h| {
                        h + f64::from(
                            terminating_hook
                                .as_ref()
                                .map_or(3600, |h| h.heartbeat_timeout),
                        )
                    })
                    .unwrap_or(i.hook_deadline.unwrap_or(now));
                let deadline = deadline.max(i.hook_deadline.unwrap_or(0.0));
                let released = asked.and_then(|a| a.result.as_ref()).is_some() || g.deleting;
                if released || now >= deadline {
                    next.lifecycle = state::TERMINATING_PROCEED.into();
                    move_instance(ctl, scope, read, &next, vec![]).await?;
                    soon(Duration::from_millis(100));
                } else {
                    soon(Duration::from_secs_f64((deadline - now).clamp(0.2, 5.0)));
                }
            }
            state::TERMINATING | state::TERMINATING_PROCEED => {
                let ci = by_ec2.get(&i.id).cloned();
                start_terminate(ctl, rt, scope, read.clone(), ci);
                soon(Duration::from_secs(1));
            }
            state::TERMINATED => {
                if i.terminated_at.is_none_or(|t| now - t > TERMINATED_SHOWN) {
                    ctl.store
                        .txn(Txn::when(
                            vec![typed::unchanged(
                                &keys::instance(scope, name, &i.id),
                                read.mod_revision,
                            )],
                            vec![
                                Op::delete(keys::instance(scope, name, &i.id)),
                                Op::delete(keys::protection(scope, name, &i.id)),
                                Op::delete(keys::termination(scope, name, &i.id)),
                                Op::delete(keys::action(scope, name, &i.id)),
                            ],
                        ))
                        .await?;
                } else {
                    soon(Duration::from_secs(10));
                }
            }
            _ => {}
        }
    }
    // Terminations users asked for.
    let list = instances(ctl, scope, name).await?;
    for (read, _) in &list {
        if let Some(asked) = asked_terminations.get(&read.value.id) {
            if read.value.counted() {
                begin_termination(
                    ctl,
                    scope,
                    &g,
                    read,
                    terminating_hook.as_ref(),
                    asked.activity.clone(),
                    asked.cause.clone(),
                    "Terminating EC2 instance",
                )
                .await?;
                soon(Duration::from_millis(100));
            }
        }
    }
    let list = instances(ctl, scope, name).await?;
    let counted: Vec<&(Versioned<InstanceRecord>, bool)> =
        list.iter().filter(|(i, _)| i.value.counted()).collect();
    let desired = if g.deleting {
        0
    } else {
        g.desired.max(0) as usize
    };
    if counted.len() < desired && !g.suspended("Launch") && !g.deleting {
        let wait = rt
            .backoff
            .lock()
            .get(&(scope.clone(), name.to_string()))
            .map(|(t, _)| *t)
            .unwrap_or(0.0);
        if now < wait {
            soon(Duration::from_secs_f64((wait - now).max(0.2)));
        } else {
            let existing: Vec<&InstanceRecord> = counted.iter().map(|(i, _)| &i.value).collect();
            let from = counted.len();
            let mut zones_taken: Vec<InstanceRecord> =
                existing.iter().map(|i| (*i).clone()).collect();
            for k in 0..(desired - from) {
                let refs: Vec<&InstanceRecord> = zones_taken.iter().collect();
                let zone = rules::zone_for_launch(&g.zones, &refs);
                let launched = launch_one(ctl, rt, scope, &g, zone, from + k).await?;
                zones_taken.push(launched);
            }
            soon(Duration::from_secs(1));
        }
    } else if counted.len() > desired && !g.suspended("Terminate") {
        let candidates: Vec<(&InstanceRecord, bool)> = counted
            .iter()
            .map(|(i, p)| (&i.value, *p && !g.deleting))
            .collect();
        let policy = g
            .termination_policies
            .first()
            .map_or("Default", String::as_str);
        let chosen: Vec<String> =
            rules::choose_for_scale_in(&candidates, counted.len() - desired, policy)
                .into_iter()
                .map(|i| i.id.clone())
                .collect();
        let from = counted.len();
        for (k, id) in chosen.iter().enumerate() {
            if let Some((read, _)) = list.iter().find(|(i, _)| &i.value.id == id) {
                let cause =
                    rules::capacity_cause(now, &g.desired_cause, from - k, from - k - 1, false);
                begin_termination(
                    ctl,
                    scope,
                    &g,
                    read,
                    terminating_hook.as_ref(),
                    uuid::Uuid::new_v4().to_string(),
                    cause,
                    "Terminating EC2 instance",
                )
                .await?;
            }
        }
        if !chosen.is_empty() {
            soon(Duration::from_millis(100));
        }
    }
    if g.deleting
        && list
            .iter()
            .all(|(i, _)| i.value.lifecycle == state::TERMINATED)
    {
        let mut ops = vec![Op::delete(gkey.clone())];
        for prefix in keys::all_of(scope, name) {
            for kv in ctl.store.range(RangeRequest::prefix(prefix)).await?.kvs {
                ops.push(Op::delete(kv.key));
            }
        }
        ctl.store.txn(Txn::when(vec![], ops)).await?;
        return Ok(None);
    }
    Ok(again)
}

/// Takes an instance out of service: Terminating (or Terminating:Wait when
/// a termination hook holds it), with its activity.
#[allow(clippy::too_many_arguments)]
async fn begin_termination(
    ctl: &Control,
    scope: &Scope,
    g: &GroupRecord,
    read: &Versioned<InstanceRecord>,
    hook: Option<&Hook>,
    activity: String,
    cause: String,
    what: &str,
) -> Result<()> {
    let now = ctl.now();
    // ForceDelete abandons lifecycle actions: nothing is held.
    let hook = hook.filter(|_| !g.deleting);
    let mut next = read.value.clone();
    let a = ActivityRecord {
        id: activity.clone(),
        group: g.name.clone(),
        description: format!("{what}: {}", next.id),
        cause,
        start: now,
        end: None,
        status: if hook.is_some() {
            "MidLifecycleAction".into()
        } else {
            "InProgress".into()
        },
        status_message: None,
        progress: 0,
        details: None,
    };
    next.activity = activity;
    match hook {
        Some(h) => {
            next.lifecycle = state::TERMINATING_WAIT.into();
            next.hook_deadline = Some(now + f64::from(h.heartbeat_timeout));
            next.hook_default = Some(h.default_result.clone());
        }
        None => next.lifecycle = state::TERMINATING.into(),
    }
    move_instance(ctl, scope, read, &next, vec![activity_op(scope, &a)]).await?;
    Ok(())
}

/// Starts one instance: its record (Pending), its protection and its
/// activity, then the launcher in a task of its own.
async fn launch_one(
    ctl: &Control,
    rt: &Arc<GroupRuntime>,
    scope: &Scope,
    g: &GroupRecord,
    zone: String,
    from: usize,
) -> Result<InstanceRecord> {
    let now = ctl.now();
    let pool = g.name == POOL_GROUP;
    // The Fargate pool's hosts have no launch template: they join the
    // pool, with the launcher's own settings.
    let t = if pool {
        Ok(Versioned {
            value: LaunchTemplate::default(),
            mod_revision: 0,
        })
    } else {
        template(ctl, scope, Some(&g.template.id), None).await
    };
    let id = format!("i-{}", short_hex(17));
    let (version, fields) = match &t {
        Ok(_) if pool => (0, Default::default()),
        Ok(t) => {
            let n = rules::resolve_version(&t.value, Some(&g.template.version))
                .unwrap_or(t.value.default_version);
            let v = typed::get::<TemplateVersion>(
                &*ctl.store,
                &ec2_keys::version(scope, &t.value.id, n),
            )
            .await?
            .map(|v| v.value.launch_fields())
            .unwrap_or_default();
            (n, v)
        }
        Err(_) => (0, Default::default()),
    };
    let cluster = if pool {
        berth_domain::instance::FARGATE_POOL.to_string()
    } else {
        rules::cluster_of_user_data(fields.user_data.as_deref())
    };
    let activity = ActivityRecord {
        id: uuid::Uuid::new_v4().to_string(),
        group: g.name.clone(),
        description: format!("Launching a new EC2 instance: {id}"),
        cause: rules::capacity_cause(now, &g.desired_cause, from, from + 1, true),
        start: now,
        end: None,
        status: "PreInService".into(),
        status_message: None,
        progress: 30,
        details: Some(format!(
            "{{\"Subnet ID\":\"\",\"Availability Zone\":\"{zone}\"}}"
        )),
    };
    let record = InstanceRecord {
        id: id.clone(),
        group: g.name.clone(),
        zone: zone.clone(),
        lifecycle: state::PENDING.into(),
        health: "Healthy".into(),
        template: g.template.clone(),
        template_version: version,
        instance_type: fields.instance_type.clone(),
        cluster: cluster.clone(),
        launched: now,
        in_service_at: None,
        activity: activity.id.clone(),
        hook_deadline: None,
        hook_default: None,
        terminated_at: None,
    };
    let ikey = keys::instance(scope, &g.name, &id);
    ctl.store
        .txn(Txn::when(
            vec![typed::unchanged(&ikey, 0)],
            vec![
                typed::put(&ikey, &record),
                typed::put(&keys::protection(scope, &g.name, &id), &g.protect_new),
                activity_op(scope, &activity),
            ],
        ))
        .await?;
    let problem = match (&rt.launcher, &t) {
        (None, _) => Some("No launcher is configured on this server (berth server --launcher), so no instance can be started.".to_string()),
        (_, Err(_)) => Some(format!("The launch template {} does not exist.", g.template.id)),
        _ => None,
    };
    let token = match problem {
        Some(_) => None,
        None => Some(
            crate::join::create_token(
                ctl,
                &cluster,
                &format!("Auto Scaling group {} instance {id}", g.name),
                rt.launch_timeout.as_secs_f64().max(60.0),
            )
            .await
            .map(|(_, token)| token)
            .map_err(|e| e.to_string()),
        ),
    };
    let req = LaunchRequest {
        group: g.name.clone(),
        instance_id: id.clone(),
        cluster,
        fargate: pool,
        zone,
        region: scope.region.clone(),
        join_token: match &token {
            Some(Ok(t)) => t.clone(),
            _ => String::new(),
        },
        fields,
        tags: g
            .tags
            .iter()
            .filter(|t| t.propagate)
            .map(|t| (t.key.clone(), t.value.clone()))
            .chain([("aws:autoscaling:groupName".to_string(), g.name.clone())])
            .collect(),
    };
    let problem = problem.or_else(|| match &token {
        Some(Err(e)) => Some(format!("cannot issue the instance's join token: {e}")),
        _ => None,
    });
    let (ctl2, rt2, scope2, gname, record2) = (
        ctl.clone(),
        rt.clone(),
        scope.clone(),
        g.name.clone(),
        record.clone(),
    );
    rt.busy.lock().insert(id.clone());
    tokio::spawn(async move {
        let outcome = match (problem, &rt2.launcher) {
            (Some(p), _) => Err(p),
            (None, Some(l)) => l.launch(&req).await,
            (None, None) => Err("no launcher".into()),
        };
        let key = (scope2.clone(), gname.clone());
        match outcome {
            Ok(()) => {
                rt2.backoff.lock().remove(&key);
                if let Ok(Some(mut a)) =
                    read_activity(&ctl2, &scope2, &gname, &record2.activity).await
                {
                    a.status = "InProgress".into();
                    a.progress = 50;
                    let _ = ctl2
                        .store
                        .txn(Txn::when(vec![], vec![activity_op(&scope2, &a)]))
                        .await;
                }
            }
            Err(why) => {
                tracing::warn!(group = %gname, instance = %record2.id, error = %why, "launch failed");
                {
                    let mut b = rt2.backoff.lock();
                    let n = b.get(&key).map_or(0, |(_, n)| *n) + 1;
                    let wait = (10.0 * 2f64.powi(n.min(5) as i32 - 1)).min(300.0);
                    b.insert(key, (ctl2.now() + wait, n));
                }
                let mut ops = vec![];
                if let Ok(Some(op)) = finish_activity(
                    &ctl2,
                    &scope2,
                    &gname,
                    &record2.activity,
                    "Failed",
                    Some(why),
                )
                .await
                {
                    ops.push(op);
                }
                let ikey = keys::instance(&scope2, &gname, &record2.id);
                if let Ok(Some(read)) = typed::get::<InstanceRecord>(&*ctl2.store, &ikey).await {
                    let mut next = read.value.clone();
                    next.lifecycle = state::TERMINATED.into();
                    next.terminated_at = Some(ctl2.now());
                    let _ = move_instance(&ctl2, &scope2, &read, &next, ops).await;
                }
            }
        }
        rt2.busy.lock().remove(&record2.id);
    });
    Ok(record)
}

/// Stops an instance through the launcher in a task of its own (once at a
/// time), then deregisters its container instance and marks it Terminated.
fn start_terminate(
    ctl: &Control,
    rt: &Arc<GroupRuntime>,
    scope: &Scope,
    read: Versioned<InstanceRecord>,
    ci: Option<ContainerInstance>,
) {
    let id = read.value.id.clone();
    if !rt.busy.lock().insert(id.clone()) {
        return;
    }
    let (ctl, rt, scope) = (ctl.clone(), rt.clone(), scope.clone());
    tokio::spawn(async move {
        let i = &read.value;
        let outcome = match &rt.launcher {
            Some(l) => l.terminate(&i.id, ci.as_ref().map(|c| c.id.as_str())).await,
            None => Ok(()),
        };
        match outcome {
            Ok(()) => {
                if let Some(c) = &ci {
                    // The machine is gone, its agent with it: the host-loss
                    // controller records its tasks STOPPED (their services
                    // replace them); then the instance is deregistered.
                    for _ in 0..60 {
                        let left =
                            match crate::placement::ClusterTasks::load(&ctl, &scope, &c.cluster)
                                .await
                            {
                                Ok(all) => all.tasks.iter().any(|t| {
                                    t.value.container_instance == c.id
                                        && berth_domain::task::Task::last_status(
                                            all.report(&t.value.id),
                                        ) != berth_domain::task::TaskStatus::Stopped
                                }),
                                Err(_) => false,
                            };
                        if !left {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    if let Err(e) = crate::clusters::deregister_instance(
                        &ctl,
                        &scope,
                        &c.cluster,
                        &c.id,
                        true,
                        "Container instance deregistered because its EC2 instance was terminated",
                    )
                    .await
                    {
                        tracing::warn!(instance = %i.id, error = %e, "cannot deregister a terminated instance");
                    }
                }
                let mut ops = vec![];
                if let Ok(Some(op)) =
                    finish_activity(&ctl, &scope, &i.group, &i.activity, "Successful", None).await
                {
                    // A launch that failed keeps its Failed activity.
                    let failed = read_activity(&ctl, &scope, &i.group, &i.activity)
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|a| a.status == "Failed");
                    if !failed {
                        ops.push(op);
                    }
                }
                if let Ok(Some(now_read)) = typed::get::<InstanceRecord>(
                    &*ctl.store,
                    &keys::instance(&scope, &i.group, &i.id),
                )
                .await
                {
                    let mut next = now_read.value.clone();
                    next.lifecycle = state::TERMINATED.into();
                    next.terminated_at = Some(ctl.now());
                    let _ = move_instance(&ctl, &scope, &now_read, &next, ops).await;
                }
            }
            Err(why) => {
                tracing::warn!(instance = %i.id, error = %why, "terminate failed; retrying");
                if let Ok(Some(mut a)) = read_activity(&ctl, &scope, &i.group, &i.activity).await {
                    a.status_message = Some(format!(
                        "The launcher could not terminate the instance: {why}"
                    ));
                    let _ = ctl
                        .store
                        .txn(Txn::when(vec![], vec![activity_op(&scope, &a)]))
                        .await;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
        rt.busy.lock().remove(&id);
    });
}

/// Every (scope, group) the controller starts with.
pub async fn all_groups(ctl: &Control) -> Result<Vec<(Scope, String)>> {
    let mut out = vec![];
    for scope in crate::alarms::regions(ctl).await.map_err(|e| match e {
        crate::alarms::AlarmFailure::Control(c) => GroupFailure::Control(c),
        crate::alarms::AlarmFailure::Cw(e) => GroupFailure::Asg(AsgError::validation(e.message)),
    })? {
        for g in typed::names(&*ctl.store, &keys::groups(&scope)).await? {
            out.push((scope.clone(), keys::name_of(&g)));
        }
    }
    Ok(out)
}

/// The group a store key belongs to (`.../autoscaling/{kind}/{group}...`).
pub fn group_of_key(key: &str) -> Option<(Scope, String)> {
    let rest = key.strip_prefix("/berth/v1/")?;
    let mut parts = rest.split('/');
    let (account, region, service, kind, group) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if service != "autoscaling" || group.is_empty() {
        return None;
    }
    let _ = kind;
    Some((Scope::new(account, region), keys::name_of(group)))
}

/// The cluster whose agent a group's instance record (an event's key and
/// value) runs, for waking that cluster's managed scaling when the
/// instance moves (a termination hook holding it, for managed draining).
pub fn cluster_of_instance_event(ev: &berth_store::Event) -> Option<(Scope, String)> {
    let rest = ev.kv.key.strip_prefix("/berth/v1/")?;
    let mut parts = rest.split('/');
    let (account, region, service, kind) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if service != "autoscaling" || kind != "instances" || ev.kind != berth_store::EventKind::Put {
        return None;
    }
    let i = typed::decode::<InstanceRecord>(&ev.kv).ok()?;
    Some((Scope::new(account, region), i.value.cluster))
}

/// The groups of a scope, for waking them when container instances
/// change.
pub async fn group_names(ctl: &Control, scope: &Scope) -> Result<Vec<String>> {
    Ok(typed::names(&*ctl.store, &keys::groups(scope))
        .await?
        .into_iter()
        .map(|n| keys::name_of(&n))
        .collect())
}

/// Tags as the API shows them, by group.
pub fn tag_views(groups: &[GroupRecord]) -> BTreeMap<String, Vec<rules::GroupTag>> {
    groups
        .iter()
        .map(|g| (g.name.clone(), g.tags.clone()))
        .collect()
}
