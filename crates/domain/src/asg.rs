//! Auto Scaling groups and the EC2 launch templates they launch from: the
//! records, what the APIs accept (with Auto Scaling's and EC2's codes and
//! words), which instance a scale-in takes, and the texts of scaling
//! activities. Pure: times are epoch seconds the caller passes.

use base64::Engine;
use berth_wire::autoscaling as w;
use serde::{Deserialize, Serialize};

/// An Auto Scaling error (awsQuery).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AsgError {
    pub code: &'static str,
    pub status: u16,
    pub message: String,
}

impl AsgError {
    pub fn validation(message: impl Into<String>) -> Self {
        AsgError {
            code: "ValidationError",
            status: 400,
            message: message.into(),
        }
    }
    pub fn exists(message: impl Into<String>) -> Self {
        AsgError {
            code: "AlreadyExists",
            status: 400,
            message: message.into(),
        }
    }
    pub fn in_use(message: impl Into<String>) -> Self {
        AsgError {
            code: "ResourceInUse",
            status: 400,
            message: message.into(),
        }
    }
    pub fn contention(message: impl Into<String>) -> Self {
        AsgError {
            code: "ResourceContention",
            status: 500,
            message: message.into(),
        }
    }
    pub fn limit(message: impl Into<String>) -> Self {
        AsgError {
            code: "LimitExceeded",
            status: 400,
            message: message.into(),
        }
    }
    pub fn no_group(name: &str) -> Self {
        Self::validation(format!(
            "AutoScalingGroup name not found - AutoScalingGroup {name} not found"
        ))
    }
    pub fn missing(field: &str) -> Self {
        Self::validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))
    }
}

/// An EC2 error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Ec2Error {
    pub code: &'static str,
    pub message: String,
}

impl Ec2Error {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Ec2Error {
            code,
            message: message.into(),
        }
    }
    pub fn missing(field: &str) -> Self {
        Self::new(
            "MissingParameter",
            format!("The request must contain the parameter {field}"),
        )
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterValue", message)
    }
    pub fn template_not_found() -> Self {
        Self::new(
            "InvalidLaunchTemplateName.NotFoundException",
            "At least one of the launch templates specified in the request does not exist.",
        )
    }
    pub fn template_id_not_found(id: &str) -> Self {
        Self::new(
            "InvalidLaunchTemplateId.NotFound",
            format!("The specified launch template, with template ID {id}, does not exist."),
        )
    }
    pub fn version_not_found(v: &str, id: &str) -> Self {
        Self::new(
            "InvalidLaunchTemplateId.VersionNotFound",
            format!("Could not find launch template version {v} for launch template ID {id}."),
        )
    }
}

/// A launch template (EC2's record; its versions are records of their own).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LaunchTemplate {
    pub id: String,
    pub name: String,
    pub created_by: String,
    pub create_time: f64,
    pub default_version: i64,
    pub latest_version: i64,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

/// One version of a launch template: its data as given (EC2's
/// RequestLaunchTemplateData, whose members the response shape shares).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateVersion {
    pub template_id: String,
    pub template_name: String,
    pub number: i64,
    #[serde(default)]
    pub description: Option<String>,
    pub created_by: String,
    pub create_time: f64,
    pub data: serde_json::Value,
}

impl TemplateVersion {
    /// What a launcher is told of the machine to make.
    pub fn launch_fields(&self) -> LaunchFields {
        let s = |k: &str| {
            self.data
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let user_data = s("UserData").and_then(|u| {
            base64::engine::general_purpose::STANDARD
                .decode(u.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        });
        LaunchFields {
            instance_type: s("InstanceType"),
            image_id: s("ImageId"),
            key_name: s("KeyName"),
            user_data,
        }
    }
}

/// The launch-template fields a launcher gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchFields {
    pub instance_type: Option<String>,
    pub image_id: Option<String>,
    pub key_name: Option<String>,
    /// Decoded from base64.
    pub user_data: Option<String>,
}

/// The ECS cluster an instance joins, as ECS's agent reads it from
/// `/etc/ecs/ecs.config` written by user data (`ECS_CLUSTER=name`);
/// `default` otherwise, as for ECS's agent.
pub fn cluster_of_user_data(user_data: Option<&str>) -> String {
    user_data
        .and_then(|u| {
            u.split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ';')
                .find_map(|w| w.strip_prefix("ECS_CLUSTER="))
                .map(|c| c.trim_end_matches(['>', '\\']).to_string())
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// A launch template's name: 3 to 128 of letters, digits and `()./_-`.
pub fn check_template_name(name: Option<&str>) -> Result<&str, Ec2Error> {
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Ec2Error::missing("LaunchTemplateName"))?;
    let ok = (3..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "()./_-".contains(c));
    if !ok {
        return Err(Ec2Error::new(
            "InvalidLaunchTemplateName.MalformedException",
            "A launch template name must be between 3 and 128 characters, and may contain letters, numbers, and the following characters: - ( ) . / _.'",
        ));
    }
    Ok(name)
}

/// A version selector (`$Latest`, `$Default` or a number) resolved
/// against a template.
pub fn resolve_version(t: &LaunchTemplate, v: Option<&str>) -> Result<i64, Ec2Error> {
    match v.unwrap_or("$Default") {
        "$Default" => Ok(t.default_version),
        "$Latest" => Ok(t.latest_version),
        n => match n.parse::<i64>() {
            Ok(n) if n >= 1 && n <= t.latest_version => Ok(n),
            _ => Err(Ec2Error::version_not_found(n, &t.id)),
        },
    }
}

/// A tag of a group (Auto Scaling's: it may propagate to instances).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTag {
    pub key: String,
    pub value: String,
    pub propagate: bool,
}

/// Which template (and which version selector) a group launches from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    pub id: String,
    pub name: String,
    /// `$Default`, `$Latest` or a number, as given.
    pub version: String,
}

/// An Auto Scaling group as the API writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: String,
    pub arn: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    /// Why the desired capacity last changed, for the activity that
    /// follows ("a user request explicitly set group desired capacity...").
    #[serde(default)]
    pub desired_cause: String,
    pub template: TemplateRef,
    pub zones: Vec<String>,
    #[serde(default)]
    pub vpc_zone_identifier: Option<String>,
    #[serde(default)]
    pub protect_new: bool,
    #[serde(default)]
    pub tags: Vec<GroupTag>,
    pub default_cooldown: i32,
    pub health_check_type: String,
    pub health_check_grace: i32,
    pub termination_policies: Vec<String>,
    #[serde(default)]
    pub default_instance_warmup: Option<i32>,
    #[serde(default)]
    pub suspended: Vec<String>,
    pub created: f64,
    /// Set by DeleteAutoScalingGroup (with ForceDelete, or when empty): the
    /// controller terminates what is left and removes the group.
    #[serde(default)]
    pub deleting: bool,
    #[serde(default)]
    pub service_linked_role_arn: Option<String>,
    #[serde(default)]
    pub max_instance_lifetime: Option<i32>,
    #[serde(default)]
    pub capacity_rebalance: bool,
}

/// The processes SuspendProcesses names.
pub const PROCESSES: &[&str] = &[
    "Launch",
    "Terminate",
    "AddToLoadBalancer",
    "AlarmNotification",
    "AZRebalance",
    "HealthCheck",
    "InstanceRefresh",
    "ReplaceUnhealthy",
    "ScheduledActions",
];

pub const TERMINATION_POLICIES: &[&str] = &[
    "Default",
    "OldestInstance",
    "NewestInstance",
    "OldestLaunchConfiguration",
    "OldestLaunchTemplate",
    "ClosestToNextInstanceHour",
    "AllocationStrategy",
];

impl GroupRecord {
    pub fn suspended(&self, process: &str) -> bool {
        self.suspended.iter().any(|p| p == process)
    }
}

pub fn group_arn(region: &str, account: &str, uuid: &str, name: &str) -> String {
    format!("arn:aws:autoscaling:{region}:{account}:autoScalingGroup:{uuid}:autoScalingGroupName/{name}")
}

/// The group name of a group ARN.
pub fn group_name_of_arn(arn: &str) -> Option<&str> {
    arn.split_once(":autoScalingGroupName/").map(|(_, n)| n)
}

/// Checks a group's name: 1 to 255 characters, no colon.
pub fn check_group_name(name: Option<&str>) -> Result<&str, AsgError> {
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| AsgError::missing("autoScalingGroupName"))?;
    if name.len() > 255 || name.contains(':') {
        return Err(AsgError::validation(format!(
            "1 validation error detected: Value '{name}' at 'autoScalingGroupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\u0020-\\uD7FF\\uE000-\\uFFFD\\uD800\\uDC00-\\uDBFF\\uDFFF\\r\\n\\t]*"
        )));
    }
    Ok(name)
}

/// Checks min, max and desired together; the desired capacity defaults to
/// the minimum.
pub fn check_sizes(min: i32, max: i32, desired: Option<i32>) -> Result<i32, AsgError> {
    if min < 0 || max < 0 {
        return Err(AsgError::validation(
            "MinSize and MaxSize must be greater than or equal to 0.",
        ));
    }
    if max < min {
        return Err(AsgError::validation(format!(
            "Max bound, {max}, must be greater than or equal to min bound, {min}"
        )));
    }
    let desired = desired.unwrap_or(min);
    if desired < min || desired > max {
        return Err(AsgError::validation(format!(
            "Desired capacity:{desired} must be between the specified min size:{min} and max size:{max}"
        )));
    }
    Ok(desired)
}

/// SetDesiredCapacity's bounds check, in Auto Scaling's words.
pub fn check_desired(g: &GroupRecord, desired: i32) -> Result<(), AsgError> {
    if desired > g.max {
        return Err(AsgError::validation(format!(
            "New SetDesiredCapacity value {desired} is above max value {} for the AutoScalingGroup.",
            g.max
        )));
    }
    if desired < g.min {
        return Err(AsgError::validation(format!(
            "New SetDesiredCapacity value {desired} is below min value {} for the AutoScalingGroup.",
            g.min
        )));
    }
    Ok(())
}

/// Checks the group's tags (at most 50, keys 1 to 128 characters, not
/// `aws:`).
pub fn check_tags(tags: &[w::Tag]) -> Result<Vec<GroupTag>, AsgError> {
    if tags.len() > 50 {
        return Err(AsgError::limit(
            "The number of tags exceeds the limit of 50 tags per resource.",
        ));
    }
    tags.iter()
        .map(|t| {
            let key = t.key.clone().unwrap_or_default();
            if key.is_empty() || key.len() > 128 {
                return Err(AsgError::validation(format!(
                    "Tag key '{key}' must be between 1 and 128 characters."
                )));
            }
            if key.starts_with("aws:") {
                return Err(AsgError::validation(
                    "Tag keys starting with 'aws:' are reserved for internal use",
                ));
            }
            Ok(GroupTag {
                key,
                value: t.value.clone().unwrap_or_default(),
                propagate: t.propagate_at_launch.unwrap_or(false),
            })
        })
        .collect()
}

/// Checks TerminationPolicies.
pub fn check_termination_policies(p: &[String]) -> Result<Vec<String>, AsgError> {
    for x in p {
        if !TERMINATION_POLICIES.contains(&x.as_str()) && !x.starts_with("arn:") {
            return Err(AsgError::validation(format!(
                "Invalid termination policy: {x}"
            )));
        }
    }
    Ok(if p.is_empty() {
        vec!["Default".into()]
    } else {
        p.to_vec()
    })
}

/// Instance lifecycle states (a subset of Auto Scaling's).
pub mod state {
    pub const PENDING: &str = "Pending";
    pub const PENDING_WAIT: &str = "Pending:Wait";
    pub const IN_SERVICE: &str = "InService";
    pub const TERMINATING: &str = "Terminating";
    pub const TERMINATING_WAIT: &str = "Terminating:Wait";
    pub const TERMINATING_PROCEED: &str = "Terminating:Proceed";
    pub const TERMINATED: &str = "Terminated";
}

/// An instance of a group, as the group controller finds and moves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: String,
    pub group: String,
    pub zone: String,
    pub lifecycle: String,
    pub health: String,
    pub template: TemplateRef,
    pub template_version: i64,
    #[serde(default)]
    pub instance_type: Option<String>,
    /// The ECS cluster its agent joins.
    pub cluster: String,
    pub launched: f64,
    #[serde(default)]
    pub in_service_at: Option<f64>,
    /// The activity that launched it (or is terminating it).
    pub activity: String,
    /// When a lifecycle hook's wait ends unless completed or extended.
    #[serde(default)]
    pub hook_deadline: Option<f64>,
    /// The hook's result when its wait timed out.
    #[serde(default)]
    pub hook_default: Option<String>,
    /// When it was terminated (it stays listed a minute).
    #[serde(default)]
    pub terminated_at: Option<f64>,
}

impl InstanceRecord {
    pub fn terminating(&self) -> bool {
        self.lifecycle.starts_with("Terminat")
    }
    pub fn counted(&self) -> bool {
        !self.terminating()
    }
}

/// Which of `candidates` (instance, protected) a scale-in takes, `n` of
/// them, by the group's first termination policy: never protected ones;
/// those not yet in service first; then from the zone with the most
/// unprotected instances, the oldest (with NewestInstance, the newest).
pub fn choose_for_scale_in<'a>(
    candidates: &[(&'a InstanceRecord, bool)],
    n: usize,
    policy: &str,
) -> Vec<&'a InstanceRecord> {
    let mut pool: Vec<&InstanceRecord> = candidates
        .iter()
        .filter(|(i, protected)| !protected && i.counted())
        .map(|(i, _)| *i)
        .collect();
    let mut out = vec![];
    while out.len() < n && !pool.is_empty() {
        let mut by_zone: std::collections::BTreeMap<&str, usize> = Default::default();
        for i in &pool {
            *by_zone.entry(i.zone.as_str()).or_default() += 1;
        }
        let busiest = by_zone.values().copied().max().unwrap_or(0);
        let pending = |i: &InstanceRecord| i.lifecycle != state::IN_SERVICE;
        let any_pending = pool.iter().any(|i| pending(i));
        let idx = pool
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                if any_pending {
                    pending(i)
                } else {
                    by_zone[i.zone.as_str()] == busiest
                }
            })
            .min_by(|(_, a), (_, b)| {
                let (x, y) = if policy == "NewestInstance" {
                    (b.launched, a.launched)
                } else {
                    (a.launched, b.launched)
                };
                x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|(k, _)| k);
        let Some(idx) = idx else { break };
        out.push(pool.remove(idx));
    }
    out
}

/// Which zone a new instance goes to: the group's zone with the fewest.
pub fn zone_for_launch(zones: &[String], existing: &[&InstanceRecord]) -> String {
    zones
        .iter()
        .min_by_key(|z| existing.iter().filter(|i| &i.zone == *z).count())
        .cloned()
        .unwrap_or_else(|| "local-1a".into())
}

/// A scaling activity of a group (written by the group controller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityRecord {
    pub id: String,
    pub group: String,
    pub description: String,
    pub cause: String,
    pub start: f64,
    #[serde(default)]
    pub end: Option<f64>,
    /// `PreInService`, `InProgress`, `WaitingForInstanceWarmup`,
    /// `MidLifecycleAction`, `Successful`, `Failed`, `Cancelled`.
    pub status: String,
    #[serde(default)]
    pub status_message: Option<String>,
    pub progress: i32,
    #[serde(default)]
    pub details: Option<String>,
}

/// ISO 8601 with milliseconds and `Z`, as Auto Scaling writes times.
pub fn iso(t: f64) -> String {
    berth_wire::query::format_timestamp(t)
}

/// The cause of a launch or a termination that follows a change of the
/// desired capacity.
pub fn capacity_cause(at: f64, why: &str, from: usize, to: usize, launch: bool) -> String {
    let what = if launch {
        "started"
    } else {
        "taken out of service"
    };
    let dir = if to > from { "increasing" } else { "shrinking" };
    let why = if why.is_empty() {
        String::new()
    } else {
        format!("At {} {why}.  ", iso(at))
    };
    format!(
        "{why}At {} an instance was {what} in response to a difference between desired and actual capacity, {dir} the capacity from {from} to {to}.",
        iso(at)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, zone: &str, launched: f64, lifecycle: &str) -> InstanceRecord {
        InstanceRecord {
            id: id.into(),
            group: "g".into(),
            zone: zone.into(),
            lifecycle: lifecycle.into(),
            health: "Healthy".into(),
            template: TemplateRef {
                id: "lt-1".into(),
                name: "t".into(),
                version: "$Default".into(),
            },
            template_version: 1,
            instance_type: None,
            cluster: "default".into(),
            launched,
            in_service_at: None,
            activity: "a".into(),
            hook_deadline: None,
            hook_default: None,
            terminated_at: None,
        }
    }

    #[test]
    fn sizes_are_checked_in_auto_scaling_words() {
        assert_eq!(check_sizes(1, 3, None), Ok(1));
        assert_eq!(
            check_sizes(2, 1, None).expect_err("refused").message,
            "Max bound, 1, must be greater than or equal to min bound, 2"
        );
        assert!(check_sizes(0, 3, Some(4)).is_err());
    }

    #[test]
    fn scale_in_spares_protected_and_takes_pending_then_busiest_zone_oldest() {
        let a = inst("i-a", "z1", 1.0, state::IN_SERVICE);
        let b = inst("i-b", "z1", 2.0, state::IN_SERVICE);
        let c = inst("i-c", "z2", 0.5, state::IN_SERVICE);
        let d = inst("i-d", "z2", 3.0, state::PENDING);
        let got = choose_for_scale_in(
            &[(&a, false), (&b, false), (&c, true), (&d, false)],
            2,
            "Default",
        );
        let ids: Vec<&str> = got.iter().map(|i| i.id.as_str()).collect();
        // The pending one goes first; then z1, which has the most
        // unprotected instances, loses its oldest.
        assert_eq!(ids, ["i-d", "i-a"]);
        let newest = choose_for_scale_in(&[(&a, false), (&b, false)], 1, "NewestInstance");
        assert_eq!(newest[0].id, "i-b");
        assert!(choose_for_scale_in(&[(&c, true)], 1, "Default").is_empty());
    }

    #[test]
    fn user_data_names_the_cluster() {
        assert_eq!(
            cluster_of_user_data(Some(
                "#!/bin/bash\necho ECS_CLUSTER=prod >> /etc/ecs/ecs.config\n"
            )),
            "prod"
        );
        assert_eq!(cluster_of_user_data(Some("echo 'ECS_CLUSTER=a'")), "a");
        assert_eq!(cluster_of_user_data(None), "default");
    }

    #[test]
    fn versions_resolve_against_the_template() {
        let t = LaunchTemplate {
            id: "lt-1".into(),
            name: "t".into(),
            created_by: "x".into(),
            create_time: 0.0,
            default_version: 1,
            latest_version: 3,
            tags: vec![],
        };
        assert_eq!(resolve_version(&t, None), Ok(1));
        assert_eq!(resolve_version(&t, Some("$Latest")), Ok(3));
        assert_eq!(resolve_version(&t, Some("2")), Ok(2));
        assert!(resolve_version(&t, Some("4")).is_err());
        assert!(check_template_name(Some("ok-name")).is_ok());
        assert!(check_template_name(Some("a")).is_err());
    }

    #[test]
    fn zones_fill_evenly() {
        let a = inst("i-a", "z1", 1.0, state::IN_SERVICE);
        assert_eq!(zone_for_launch(&["z1".into(), "z2".into()], &[&a]), "z2");
    }
}
