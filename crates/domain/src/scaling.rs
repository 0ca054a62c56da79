//! Application Auto Scaling for ECS services: scalable targets, target
//! tracking and step scaling policies, what a policy decides when its
//! alarm fires (with cooldowns, bounds and suspension), and scaling
//! activities, with Application Auto Scaling's errors in its words. Pure:
//! the caller passes the time and what the service runs.

use berth_wire::application_autoscaling as w;
use serde::{Deserialize, Serialize};

pub const NAMESPACE: &str = "ecs";
pub const DIMENSION: &str = "ecs:service:DesiredCount";
/// ECS's default cooldowns, seconds.
pub const DEFAULT_COOLDOWN: i32 = 300;

/// An Application Auto Scaling error: its `__type` and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AasError {
    pub code: &'static str,
    pub message: String,
}

impl AasError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        AasError {
            code,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationException", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("ObjectNotFoundException", message)
    }

    pub fn no_target(resource: &str) -> Self {
        Self::not_found(format!(
            "No scalable target registered for service namespace: ecs, resource ID: {resource}, scalable dimension: {DIMENSION}"
        ))
    }

    fn enum_value(field: &str, value: &str, allowed: &[&str]) -> Self {
        Self::validation(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        ))
    }
}

/// The service a resource id names: `service/<cluster>/<service>`.
pub fn service_of(resource_id: &str) -> Option<(&str, &str)> {
    let rest = resource_id.strip_prefix("service/")?;
    let (cluster, service) = rest.split_once('/')?;
    (!cluster.is_empty() && !service.is_empty() && !service.contains('/'))
        .then_some((cluster, service))
}

/// The (namespace, resource id, dimension) every request names, checked:
/// only ECS services' desired count scale here, so the resource id is what
/// tells targets apart.
pub fn check_key(
    namespace: Option<&str>,
    resource_id: Option<&str>,
    dimension: Option<&str>,
) -> Result<String, AasError> {
    let ns = namespace.ok_or_else(|| AasError::validation("ServiceNamespace is required"))?;
    if !w::enums::SERVICE_NAMESPACE.contains(&ns) {
        return Err(AasError::enum_value(
            "serviceNamespace",
            ns,
            w::enums::SERVICE_NAMESPACE,
        ));
    }
    if ns != NAMESPACE {
        return Err(AasError::validation(format!(
            "Berth scales ECS services only; service namespace {ns} is not served."
        )));
    }
    let resource = resource_id.ok_or_else(|| AasError::validation("ResourceId is required"))?;
    if service_of(resource).is_none() {
        return Err(AasError::validation(format!(
            "Unsupported resource ID format: {resource}. It must be service/<cluster-name>/<service-name>."
        )));
    }
    let dim = dimension.ok_or_else(|| AasError::validation("ScalableDimension is required"))?;
    if dim != DIMENSION {
        if w::enums::SCALABLE_DIMENSION.contains(&dim) {
            return Err(AasError::validation(format!(
                "Unsupported scalable dimension {dim} for service namespace ecs."
            )));
        }
        return Err(AasError::enum_value("scalableDimension", dim, &[DIMENSION]));
    }
    Ok(resource.to_string())
}

/// A registered scalable target (written by the API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub resource_id: String,
    pub min: i32,
    pub max: i32,
    pub role_arn: String,
    pub suspended: Suspended,
    pub arn: String,
    pub created: f64,
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspended {
    pub scale_in: bool,
    pub scale_out: bool,
    pub scheduled: bool,
}

impl TargetRecord {
    pub fn view(&self) -> w::ScalableTarget {
        w::ScalableTarget {
            service_namespace: Some(NAMESPACE.into()),
            resource_id: Some(self.resource_id.clone()),
            scalable_dimension: Some(DIMENSION.into()),
            min_capacity: Some(self.min),
            max_capacity: Some(self.max),
            role_arn: Some(self.role_arn.clone()),
            creation_time: Some(self.created),
            suspended_state: Some(w::SuspendedState {
                dynamic_scaling_in_suspended: Some(self.suspended.scale_in),
                dynamic_scaling_out_suspended: Some(self.suspended.scale_out),
                scheduled_scaling_suspended: Some(self.suspended.scheduled),
            }),
            scalable_target_arn: Some(self.arn.clone()),
            predicted_capacity: None,
        }
    }
}

/// The service-linked role Application Auto Scaling acts with on ECS.
pub fn service_role(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/aws-service-role/ecs.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_ECSService")
}

/// RegisterScalableTarget's input applied to the existing target (None:
/// a new one, which needs both capacities).
pub fn register(
    existing: Option<&TargetRecord>,
    input: &w::RegisterScalableTargetRequest,
    resource: &str,
    account: &str,
    region: &str,
    now: f64,
) -> Result<TargetRecord, AasError> {
    let (min, max) =
        match (existing, input.min_capacity, input.max_capacity) {
            (None, Some(min), Some(max)) => (min, max),
            (None, _, _) => return Err(AasError::validation(
                "MinCapacity and MaxCapacity are required for registering a new scalable target",
            )),
            (Some(t), min, max) => (min.unwrap_or(t.min), max.unwrap_or(t.max)),
        };
    if min < 0 {
        return Err(AasError::validation(
            "MinCapacity must be greater than or equal to 0",
        ));
    }
    if max < 0 {
        return Err(AasError::validation(
            "MaxCapacity must be greater than or equal to 0",
        ));
    }
    if min > max {
        return Err(AasError::validation(format!(
            "Minimum capacity cannot be greater than maximum capacity ({min} > {max})"
        )));
    }
    if let Some(role) = &input.role_arn {
        if !role.starts_with("arn:aws:iam::") || !role.contains(":role/") {
            return Err(AasError::validation(format!("Invalid RoleARN: {role}")));
        }
    }
    let mut suspended = existing.map(|t| t.suspended).unwrap_or_default();
    if let Some(s) = &input.suspended_state {
        if let Some(v) = s.dynamic_scaling_in_suspended {
            suspended.scale_in = v;
        }
        if let Some(v) = s.dynamic_scaling_out_suspended {
            suspended.scale_out = v;
        }
        if let Some(v) = s.scheduled_scaling_suspended {
            suspended.scheduled = v;
        }
    }
    let mut tags = existing.map(|t| t.tags.clone()).unwrap_or_default();
    if let (None, Some(given)) = (existing, &input.tags) {
        check_tags(given)?;
        tags = given.clone();
    }
    Ok(TargetRecord {
        resource_id: resource.to_string(),
        min,
        max,
        role_arn: input
            .role_arn
            .clone()
            .or_else(|| existing.map(|t| t.role_arn.clone()))
            .unwrap_or_else(|| service_role(account)),
        suspended,
        arn: existing.map(|t| t.arn.clone()).unwrap_or_else(|| {
            format!(
                "arn:aws:application-autoscaling:{region}:{account}:scalable-target/{}",
                &uuid_like(resource, now)
            )
        }),
        created: existing.map_or(now, |t| t.created),
        tags,
    })
}

/// A stable-looking id for a new target's ARN.
fn uuid_like(resource: &str, now: f64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in resource.bytes().chain(now.to_bits().to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("0e{h:016x}{:012x}", h.rotate_left(17) & 0xffff_ffff_ffff)
}

pub fn check_tags(tags: &std::collections::BTreeMap<String, String>) -> Result<(), AasError> {
    if tags.len() > 50 {
        return Err(AasError::new(
            "TooManyTagsException",
            "A resource can have at most 50 tags.",
        ));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 || k.starts_with("aws:") {
            return Err(AasError::validation(format!("Invalid tag key: {k}")));
        }
        if v.chars().count() > 256 {
            return Err(AasError::validation(format!(
                "Invalid tag value for key {k}"
            )));
        }
    }
    Ok(())
}

/// What a policy watches: a CloudWatch metric (namespace, name,
/// dimensions, statistic, unit, period) or metric math queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Watched {
    Metric {
        namespace: String,
        name: String,
        dimensions: Vec<(String, String)>,
        statistic: String,
        unit: Option<String>,
        period: i32,
    },
    Math(Vec<w::TargetTrackingMetricDataQuery>),
}

/// A scaling policy (written by the API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub name: String,
    pub resource_id: String,
    pub arn: String,
    pub kind: String,
    #[serde(default)]
    pub target_tracking: Option<w::TargetTrackingScalingPolicyConfiguration>,
    #[serde(default)]
    pub step: Option<w::StepScalingPolicyConfiguration>,
    /// Target tracking: the alarms it owns (name, ARN).
    #[serde(default)]
    pub alarms: Vec<(String, String)>,
    pub created: f64,
}

impl PolicyRecord {
    pub fn view(&self) -> w::ScalingPolicy {
        w::ScalingPolicy {
            policy_arn: Some(self.arn.clone()),
            policy_name: Some(self.name.clone()),
            service_namespace: Some(NAMESPACE.into()),
            resource_id: Some(self.resource_id.clone()),
            scalable_dimension: Some(DIMENSION.into()),
            policy_type: Some(self.kind.clone()),
            step_scaling_policy_configuration: self.step.clone(),
            target_tracking_scaling_policy_configuration: self.target_tracking.clone(),
            alarms: Some(
                self.alarms
                    .iter()
                    .map(|(n, a)| w::Alarm {
                        alarm_name: Some(n.clone()),
                        alarm_arn: Some(a.clone()),
                    })
                    .collect(),
            ),
            creation_time: Some(self.created),
            predictive_scaling_policy_configuration: None,
        }
    }

    /// The alarm action of its target-tracking alarms.
    pub fn alarm_action(&self) -> String {
        format!("{}:createdBy/{}", self.arn, self.arn_id())
    }

    fn arn_id(&self) -> &str {
        self.arn
            .split(":scalingPolicy:")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .unwrap_or_default()
    }
}

/// A policy's ARN: the service is `autoscaling`, as AWS writes it.
pub fn policy_arn(region: &str, account: &str, id: &str, resource: &str, name: &str) -> String {
    format!("arn:aws:autoscaling:{region}:{account}:scalingPolicy:{id}:resource/ecs/{resource}:policyName/{name}")
}

/// (policy id, resource id, policy name) of a policy ARN, or of its alarm
/// action (`...:createdBy/<id>`).
pub fn parse_policy_arn(arn: &str) -> Option<(String, String, String)> {
    let rest = arn.split(":scalingPolicy:").nth(1)?;
    let (id, rest) = rest.split_once(":resource/ecs/")?;
    let (resource, rest) = rest.split_once(":policyName/")?;
    let name = rest.split(":createdBy/").next()?;
    Some((id.to_string(), resource.to_string(), name.to_string()))
}

/// PutScalingPolicy's configuration checked: the policy's kind and what
/// its metric is (target tracking), or its steps (step scaling).
pub fn check_policy(
    input: &w::PutScalingPolicyRequest,
) -> Result<(String, Option<Watched>), AasError> {
    let name = input
        .policy_name
        .as_deref()
        .ok_or_else(|| AasError::validation("PolicyName is required"))?;
    if name.is_empty() || name.chars().count() > 256 || name.contains(':') || name.contains('/') {
        return Err(AasError::validation(format!(
            "1 validation error detected: Value '{name}' at 'policyName' failed to satisfy constraint: Member must satisfy regular expression pattern: \\p{{Print}}+ without ':' or '/'"
        )));
    }
    let kinds = ["PredictiveScaling", "StepScaling", "TargetTrackingScaling"];
    let kind = input
        .policy_type
        .clone()
        .unwrap_or_else(|| "StepScaling".into());
    if !kinds.contains(&kind.as_str()) {
        return Err(AasError::enum_value("policyType", &kind, &kinds));
    }
    match kind.as_str() {
        "TargetTrackingScaling" => {
            if input.step_scaling_policy_configuration.is_some() {
                return Err(AasError::validation(
                    "StepScalingPolicyConfiguration is not allowed for a TargetTrackingScaling policy",
                ));
            }
            let c = input.target_tracking_scaling_policy_configuration.as_ref().ok_or_else(|| {
                AasError::validation("TargetTrackingScalingPolicyConfiguration is required for a TargetTrackingScaling policy")
            })?;
            let target = c
                .target_value
                .ok_or_else(|| AasError::validation("TargetValue is required"))?;
            if !target.is_finite() || target <= 0.0 {
                return Err(AasError::validation(format!(
                    "TargetValue must be greater than 0; got {target}"
                )));
            }
            for (v, field) in [
                (c.scale_in_cooldown, "ScaleInCooldown"),
                (c.scale_out_cooldown, "ScaleOutCooldown"),
            ] {
                if v.is_some_and(|v| v < 0) {
                    return Err(AasError::validation(format!(
                        "{field} must be greater than or equal to 0"
                    )));
                }
            }
            let watched = match (&c.predefined_metric_specification, &c.customized_metric_specification) {
                (Some(p), None) => predefined(p, input.resource_id.as_deref().unwrap_or_default())?,
                (None, Some(m)) => customized(m)?,
                (Some(_), Some(_)) => {
                    return Err(AasError::validation(
                        "Only one of PredefinedMetricSpecification or CustomizedMetricSpecification may be specified",
                    ))
                }
                (None, None) => {
                    return Err(AasError::validation(
                        "One of PredefinedMetricSpecification or CustomizedMetricSpecification must be specified",
                    ))
                }
            };
            Ok((kind, Some(watched)))
        }
        "StepScaling" => {
            if input.target_tracking_scaling_policy_configuration.is_some() {
                return Err(AasError::validation(
                    "TargetTrackingScalingPolicyConfiguration is not allowed for a StepScaling policy",
                ));
            }
            let c = input
                .step_scaling_policy_configuration
                .as_ref()
                .ok_or_else(|| {
                    AasError::validation(
                        "StepScalingPolicyConfiguration is required for a StepScaling policy",
                    )
                })?;
            check_steps(c)?;
            Ok((kind, None))
        }
        _ => Err(AasError::validation(
            "PredictiveScaling policies are not supported by Berth: it forecasts nothing.",
        )),
    }
}

fn predefined(p: &w::PredefinedMetricSpecification, resource: &str) -> Result<Watched, AasError> {
    let t = p
        .predefined_metric_type
        .as_deref()
        .ok_or_else(|| AasError::validation("PredefinedMetricType is required"))?;
    let (cluster, service) = service_of(resource).unwrap_or_default();
    let dims = vec![
        ("ClusterName".to_string(), cluster.to_string()),
        ("ServiceName".to_string(), service.to_string()),
    ];
    let metric = |name: &str, period: i32| Watched::Metric {
        namespace: "AWS/ECS".into(),
        name: name.into(),
        dimensions: dims.clone(),
        statistic: "Average".into(),
        unit: Some("Percent".into()),
        period,
    };
    match t {
        "ECSServiceAverageCPUUtilization" => Ok(metric("CPUUtilization", 60)),
        "ECSServiceAverageMemoryUtilization" => Ok(metric("MemoryUtilization", 60)),
        // Berth's agents sample every 10 s by default: the high-resolution
        // types watch 20-second periods, as ECS's do.
        "ECSServiceAverageCPUUtilizationHighResolution" => Ok(metric("CPUUtilization", 20)),
        "ECSServiceAverageMemoryUtilizationHighResolution" => Ok(metric("MemoryUtilization", 20)),
        "ALBRequestCountPerTarget" => {
            let label = p.resource_label.as_deref().ok_or_else(|| {
                AasError::validation("ResourceLabel is required for the predefined metric type ALBRequestCountPerTarget")
            })?;
            let tg = label.split_once("/targetgroup/").map(|(_, tg)| format!("targetgroup/{tg}")).ok_or_else(|| {
                AasError::validation(format!("Invalid ResourceLabel {label}: app/<load-balancer-name>/<id>/targetgroup/<target-group-name>/<id>"))
            })?;
            Ok(Watched::Metric {
                namespace: "AWS/ApplicationELB".into(),
                name: "RequestCountPerTarget".into(),
                dimensions: vec![("TargetGroup".into(), tg)],
                statistic: "Sum".into(),
                unit: None,
                period: 60,
            })
        }
        other if w::enums::METRIC_TYPE.contains(&other) => Err(AasError::validation(format!(
            "Unsupported predefined metric type {other} for ECS services"
        ))),
        other => Err(AasError::enum_value(
            "predefinedMetricType",
            other,
            w::enums::METRIC_TYPE,
        )),
    }
}

fn customized(m: &w::CustomizedMetricSpecification) -> Result<Watched, AasError> {
    if let Some(metrics) = &m.metrics {
        if m.metric_name.is_some()
            || m.namespace.is_some()
            || m.statistic.is_some()
            || m.dimensions.is_some()
        {
            return Err(AasError::validation(
                "Metrics and MetricName, Namespace, Dimensions or Statistic are mutually exclusive",
            ));
        }
        let returned = metrics
            .iter()
            .filter(|q| q.return_data.unwrap_or(true))
            .count();
        if returned != 1 {
            return Err(AasError::validation(
                "Exactly one of the metrics must return data (ReturnData)",
            ));
        }
        for q in metrics {
            let id = q.id.as_deref().unwrap_or_default();
            if id.is_empty() || !id.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                return Err(AasError::validation(format!(
                    "Invalid metric Id {id}: it must start with a lowercase letter"
                )));
            }
            if let Some(e) = &q.expression {
                crate::metric_math::Expression::parse(e).map_err(|why| {
                    AasError::validation(format!("Invalid expression {id}: {why}"))
                })?;
            }
        }
        return Ok(Watched::Math(metrics.clone()));
    }
    let name = m
        .metric_name
        .clone()
        .ok_or_else(|| AasError::validation("MetricName is required"))?;
    let namespace = m
        .namespace
        .clone()
        .ok_or_else(|| AasError::validation("Namespace is required"))?;
    let statistic = m
        .statistic
        .clone()
        .ok_or_else(|| AasError::validation("Statistic is required"))?;
    if !w::enums::METRIC_STATISTIC.contains(&statistic.as_str()) {
        return Err(AasError::enum_value(
            "statistic",
            &statistic,
            w::enums::METRIC_STATISTIC,
        ));
    }
    Ok(Watched::Metric {
        namespace,
        name,
        dimensions: m
            .dimensions
            .iter()
            .flatten()
            .map(|d| {
                (
                    d.name.clone().unwrap_or_default(),
                    d.value.clone().unwrap_or_default(),
                )
            })
            .collect(),
        statistic,
        unit: m.unit.clone(),
        period: 60,
    })
}

/// Step adjustments: no gaps, no overlaps, at most one open bound each
/// way, as Application Auto Scaling checks them.
pub fn check_steps(c: &w::StepScalingPolicyConfiguration) -> Result<(), AasError> {
    let types = [
        "ChangeInCapacity",
        "PercentChangeInCapacity",
        "ExactCapacity",
    ];
    let t = c
        .adjustment_type
        .as_deref()
        .ok_or_else(|| AasError::validation("AdjustmentType is required"))?;
    if !types.contains(&t) {
        return Err(AasError::enum_value("adjustmentType", t, &types));
    }
    if let Some(a) = c.metric_aggregation_type.as_deref() {
        if !["Average", "Minimum", "Maximum"].contains(&a) {
            return Err(AasError::enum_value(
                "metricAggregationType",
                a,
                &["Average", "Minimum", "Maximum"],
            ));
        }
    }
    if c.min_adjustment_magnitude.is_some() && t != "PercentChangeInCapacity" {
        return Err(AasError::validation(
            "MinAdjustmentMagnitude is only supported with the PercentChangeInCapacity adjustment type",
        ));
    }
    if c.cooldown.is_some_and(|v| v < 0) {
        return Err(AasError::validation(
            "Cooldown must be greater than or equal to 0",
        ));
    }
    let steps = c.step_adjustments.as_deref().unwrap_or_default();
    if steps.is_empty() {
        return Err(AasError::validation(
            "StepAdjustments must contain at least one step",
        ));
    }
    let mut bounds: Vec<(f64, f64)> = vec![];
    for s in steps {
        if s.scaling_adjustment.is_none() {
            return Err(AasError::validation(
                "ScalingAdjustment is required for each step",
            ));
        }
        let lo = s.metric_interval_lower_bound.unwrap_or(f64::NEG_INFINITY);
        let hi = s.metric_interval_upper_bound.unwrap_or(f64::INFINITY);
        if lo.is_infinite() && hi.is_infinite() && steps.len() > 1 {
            return Err(AasError::validation(
                "A step with neither bound must be the only step",
            ));
        }
        if lo >= hi {
            return Err(AasError::validation(format!(
                "The lower bound ({lo}) of a step must be less than its upper bound ({hi})"
            )));
        }
        bounds.push((lo, hi));
    }
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    if bounds.iter().filter(|b| b.0.is_infinite()).count() > 1
        || bounds.iter().filter(|b| b.1.is_infinite()).count() > 1
    {
        return Err(AasError::validation(
            "At most one step may have a null lower bound, and at most one a null upper bound",
        ));
    }
    for pair in bounds.windows(2) {
        if pair[0].1 > pair[1].0 {
            return Err(AasError::validation("Step adjustments must not overlap"));
        }
        if pair[0].1 < pair[1].0 {
            return Err(AasError::validation(
                "Step adjustments must not have gaps between them",
            ));
        }
    }
    let (first, last) = (bounds[0], bounds[bounds.len() - 1]);
    if first.0 < 0.0 && !first.0.is_infinite() {
        return Err(AasError::validation(
            "A step with a negative lower bound needs a step with a null lower bound below it",
        ));
    }
    if last.1 > 0.0 && !last.1.is_infinite() {
        return Err(AasError::validation(
            "A step with a positive upper bound needs a step with a null upper bound above it",
        ));
    }
    Ok(())
}

/// The capacity a step policy asks for: the step that `value - threshold`
/// falls in (a step above zero includes its lower bound, one at or below
/// zero its upper bound), applied to `current`. None when no step covers
/// it.
pub fn step_capacity(
    c: &w::StepScalingPolicyConfiguration,
    value: f64,
    threshold: f64,
    current: i32,
) -> Option<i32> {
    let diff = value - threshold;
    let step = c.step_adjustments.iter().flatten().find(|s| {
        let lo = s.metric_interval_lower_bound.unwrap_or(f64::NEG_INFINITY);
        let hi = s.metric_interval_upper_bound.unwrap_or(f64::INFINITY);
        if hi <= 0.0 {
            diff > lo && diff <= hi
        } else {
            diff >= lo && diff < hi
        }
    })?;
    let adj = step.scaling_adjustment?;
    Some(match c.adjustment_type.as_deref() {
        Some("ExactCapacity") => adj,
        Some("PercentChangeInCapacity") => {
            let raw = f64::from(current) * f64::from(adj) / 100.0;
            let mut change = if raw > 1.0 {
                raw.floor()
            } else if raw > 0.0 {
                1.0
            } else if raw > -1.0 && raw < 0.0 {
                -1.0
            } else {
                raw.ceil()
            } as i32;
            if let Some(min) = c.min_adjustment_magnitude {
                if change.abs() < min && change != 0 {
                    change = min * change.signum();
                }
            }
            current + change
        }
        _ => current + adj,
    })
}

/// What a target tracking policy asks for, from the metric's latest value:
/// proportional, rounded up (never too little when adding, never too much
/// when removing).
pub fn tracking_capacity(current: i32, metric: f64, target: f64) -> i32 {
    if current == 0 {
        return (metric / target).ceil().max(0.0) as i32;
    }
    (f64::from(current) * metric / target).ceil().max(0.0) as i32
}

/// A scheduled action (written by the API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledRecord {
    pub name: String,
    pub resource_id: String,
    pub arn: String,
    pub schedule: String,
    pub timezone: Option<String>,
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub min: Option<i32>,
    pub max: Option<i32>,
    pub created: f64,
}

impl ScheduledRecord {
    pub fn view(&self) -> w::ScheduledAction {
        w::ScheduledAction {
            scheduled_action_name: Some(self.name.clone()),
            scheduled_action_arn: Some(self.arn.clone()),
            service_namespace: Some(NAMESPACE.into()),
            schedule: Some(self.schedule.clone()),
            timezone: self.timezone.clone(),
            resource_id: Some(self.resource_id.clone()),
            scalable_dimension: Some(DIMENSION.into()),
            start_time: self.start,
            end_time: self.end,
            scalable_target_action: Some(w::ScalableTargetAction {
                min_capacity: self.min,
                max_capacity: self.max,
            }),
            creation_time: Some(self.created),
        }
    }
}

/// When a scheduled action last fired (written by the scheduler).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduledState {
    pub fired: Option<f64>,
}

/// PutScheduledAction's input checked (the time zone is the caller's to
/// look up): the record to keep.
pub fn check_scheduled(
    input: &w::PutScheduledActionRequest,
    resource: &str,
    arn: String,
    now: f64,
) -> Result<(ScheduledRecord, crate::schedule::Schedule), AasError> {
    let name = input
        .scheduled_action_name
        .clone()
        .ok_or_else(|| AasError::validation("ScheduledActionName is required"))?;
    if name.is_empty() || name.chars().count() > 256 || name.contains(':') || name.contains('/') {
        return Err(AasError::validation(format!(
            "1 validation error detected: Value '{name}' at 'scheduledActionName' failed to satisfy constraint: Member must satisfy regular expression pattern: (?!((^[ ]+.*)|(.*([\\u0000-\\u001f]|[\\u007f-\\u009f]|[:/|])+.*)|(.*[ ]+$))).+"
        )));
    }
    let text = input
        .schedule
        .clone()
        .ok_or_else(|| AasError::validation("Schedule is required"))?;
    let schedule = crate::schedule::Schedule::parse(&text)
        .map_err(|why| AasError::validation(format!("Invalid schedule: {why}")))?;
    let action = input.scalable_target_action.clone().unwrap_or_default();
    if action.min_capacity.is_none() && action.max_capacity.is_none() {
        return Err(AasError::validation(
            "ScalableTargetAction must specify MinCapacity, MaxCapacity or both",
        ));
    }
    for (v, f) in [
        (action.min_capacity, "MinCapacity"),
        (action.max_capacity, "MaxCapacity"),
    ] {
        if v.is_some_and(|v| v < 0) {
            return Err(AasError::validation(format!(
                "{f} must be greater than or equal to 0"
            )));
        }
    }
    if let (Some(min), Some(max)) = (action.min_capacity, action.max_capacity) {
        if min > max {
            return Err(AasError::validation(format!(
                "Minimum capacity cannot be greater than maximum capacity ({min} > {max})"
            )));
        }
    }
    if let (Some(a), Some(b)) = (input.start_time, input.end_time) {
        if a >= b {
            return Err(AasError::validation("StartTime must be before EndTime"));
        }
    }
    Ok((
        ScheduledRecord {
            name,
            resource_id: resource.to_string(),
            arn,
            schedule: text,
            timezone: input.timezone.clone(),
            start: input.start_time,
            end: input.end_time,
            min: action.min_capacity,
            max: action.max_capacity,
            created: now,
        },
        schedule,
    ))
}

/// A scheduled action's ARN.
pub fn scheduled_arn(region: &str, account: &str, id: &str, resource: &str, name: &str) -> String {
    format!("arn:aws:autoscaling:{region}:{account}:scheduledAction:{id}:resource/ecs/{resource}:scheduledActionName/{name}")
}

/// Why a policy did not scale (Application Auto Scaling's codes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotScaled {
    pub code: String,
    pub current: i32,
    pub min: i32,
    pub max: i32,
}

/// One scaling activity (written by the scaler).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    pub id: String,
    pub resource_id: String,
    pub description: String,
    pub cause: String,
    pub start: f64,
    pub end: f64,
    pub status: String,
    pub message: String,
    #[serde(default)]
    pub not_scaled: Option<NotScaled>,
}

impl Activity {
    pub fn view(&self) -> w::ScalingActivity {
        w::ScalingActivity {
            activity_id: Some(self.id.clone()),
            service_namespace: Some(NAMESPACE.into()),
            resource_id: Some(self.resource_id.clone()),
            scalable_dimension: Some(DIMENSION.into()),
            description: Some(self.description.clone()),
            cause: Some(self.cause.clone()),
            start_time: Some(self.start),
            end_time: Some(self.end),
            status_code: Some(self.status.clone()),
            status_message: Some(self.message.clone()),
            details: None,
            not_scaled_reasons: self.not_scaled.as_ref().map(|n| {
                vec![w::NotScaledReason {
                    code: Some(n.code.clone()),
                    current_capacity: Some(n.current),
                    min_capacity: Some(n.min),
                    max_capacity: Some(n.max),
                }]
            }),
        }
    }
}

/// When the target last scaled, for cooldowns (written by the scaler).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cooldowns {
    /// When the last scale-out happened and what it set.
    pub out: Option<(f64, i32)>,
    pub scale_in: Option<f64>,
}

/// The decision for one firing: the capacity to set, or why not.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Set(i32),
    Not(NotScaled),
    /// Blocked for a reason that is not one of the not-scaled codes
    /// (cooldown, suspension, a deployment, other policies); no activity.
    Held(&'static str),
}

/// Bounds, direction, suspension and cooldowns applied to what a policy
/// asked for.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    t: &TargetRecord,
    current: i32,
    wanted: i32,
    cooldown_out: f64,
    cooldown_in: f64,
    last: &Cooldowns,
    deploying: bool,
    now: f64,
) -> Decision {
    let wanted = wanted.clamp(t.min, t.max);
    let not = |code: &str| {
        Decision::Not(NotScaled {
            code: code.into(),
            current,
            min: t.min,
            max: t.max,
        })
    };
    if wanted == current {
        return if current >= t.max {
            not("AlreadyAtMaxCapacity")
        } else if current <= t.min {
            not("AlreadyAtMinCapacity")
        } else {
            not("AlreadyAtDesiredCapacity")
        };
    }
    if wanted > current {
        if t.suspended.scale_out {
            return Decision::Held("dynamic scaling out is suspended");
        }
        if let Some((at, set)) = last.out {
            if now - at < cooldown_out && wanted <= set {
                return Decision::Held("in the scale-out cooldown");
            }
        }
        return Decision::Set(wanted);
    }
    if t.suspended.scale_in {
        return Decision::Held("dynamic scaling in is suspended");
    }
    if deploying {
        return Decision::Held("a deployment is in progress");
    }
    if last.scale_in.is_some_and(|at| now - at < cooldown_in) {
        return Decision::Held("in the scale-in cooldown");
    }
    // A scale-out ends the scale-in cooldown, but scale-in waits out the
    // scale-out's own cooldown so what was added gets a chance.
    if last.out.is_some_and(|(at, _)| now - at < cooldown_out) {
        return Decision::Held("in the scale-out cooldown");
    }
    Decision::Set(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(
        t: &str,
        list: &[(Option<f64>, Option<f64>, i32)],
    ) -> w::StepScalingPolicyConfiguration {
        w::StepScalingPolicyConfiguration {
            adjustment_type: Some(t.into()),
            step_adjustments: Some(
                list.iter()
                    .map(|(lo, hi, a)| w::StepAdjustment {
                        metric_interval_lower_bound: *lo,
                        metric_interval_upper_bound: *hi,
                        scaling_adjustment: Some(*a),
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn steps_are_checked_and_chosen_on_the_distance_from_the_threshold() {
        let c = steps(
            "ChangeInCapacity",
            &[(Some(0.0), Some(10.0), 1), (Some(10.0), None, 3)],
        );
        check_steps(&c).expect("valid");
        assert_eq!(step_capacity(&c, 55.0, 50.0, 2), Some(3));
        assert_eq!(step_capacity(&c, 60.0, 50.0, 2), Some(5));
        assert_eq!(step_capacity(&c, 40.0, 50.0, 2), None);
        let gap = steps(
            "ChangeInCapacity",
            &[(Some(0.0), Some(10.0), 1), (Some(20.0), None, 3)],
        );
        assert!(check_steps(&gap).expect_err("gap").message.contains("gaps"));
        let overlap = steps(
            "ChangeInCapacity",
            &[(Some(0.0), Some(10.0), 1), (Some(5.0), None, 3)],
        );
        assert!(check_steps(&overlap)
            .expect_err("overlap")
            .message
            .contains("overlap"));
        let open_top = steps("ChangeInCapacity", &[(Some(0.0), Some(10.0), 1)]);
        assert!(check_steps(&open_top)
            .expect_err("top")
            .message
            .contains("positive upper bound"));
        let down = steps("ChangeInCapacity", &[(None, Some(0.0), -1)]);
        check_steps(&down).expect("valid");
        assert_eq!(step_capacity(&down, 50.0, 50.0, 3), Some(2));
        let pct = steps("PercentChangeInCapacity", &[(Some(0.0), None, 25)]);
        assert_eq!(step_capacity(&pct, 60.0, 50.0, 4), Some(5));
        assert_eq!(
            step_capacity(&pct, 60.0, 50.0, 2),
            Some(3),
            "under one rounds to one"
        );
        let mut magnitude = pct.clone();
        magnitude.min_adjustment_magnitude = Some(2);
        assert_eq!(step_capacity(&magnitude, 60.0, 50.0, 4), Some(6));
        let exact = steps("ExactCapacity", &[(Some(0.0), None, 7)]);
        assert_eq!(step_capacity(&exact, 60.0, 50.0, 1), Some(7));
    }

    fn target() -> TargetRecord {
        TargetRecord {
            resource_id: "service/c/web".into(),
            min: 1,
            max: 10,
            role_arn: service_role("000000000000"),
            suspended: Suspended::default(),
            arn: "arn".into(),
            created: 0.0,
            tags: Default::default(),
        }
    }

    #[test]
    fn decisions_respect_bounds_cooldowns_and_deployments() {
        let t = target();
        assert_eq!(tracking_capacity(2, 90.0, 70.0), 3);
        assert_eq!(tracking_capacity(0, 150.0, 70.0), 3);
        assert_eq!(tracking_capacity(4, 30.0, 70.0), 2);
        let none = Cooldowns::default();
        assert_eq!(
            decide(&t, 2, 30, 300.0, 300.0, &none, false, 1000.0),
            Decision::Set(10)
        );
        assert!(
            matches!(decide(&t, 10, 12, 300.0, 300.0, &none, false, 1000.0), Decision::Not(n) if n.code == "AlreadyAtMaxCapacity")
        );
        assert!(
            matches!(decide(&t, 1, 0, 300.0, 300.0, &none, false, 1000.0), Decision::Not(n) if n.code == "AlreadyAtMinCapacity")
        );
        let out = Cooldowns {
            out: Some((900.0, 4)),
            scale_in: None,
        };
        assert!(
            matches!(decide(&t, 4, 4, 300.0, 300.0, &out, false, 1000.0), Decision::Not(n) if n.code == "AlreadyAtDesiredCapacity")
        );
        assert!(matches!(
            decide(&t, 3, 4, 300.0, 300.0, &out, false, 1000.0),
            Decision::Held(_)
        ));
        assert_eq!(
            decide(&t, 4, 6, 300.0, 300.0, &out, false, 1000.0),
            Decision::Set(6)
        );
        assert!(matches!(
            decide(&t, 4, 2, 300.0, 300.0, &none, true, 1000.0),
            Decision::Held("a deployment is in progress")
        ));
        let inn = Cooldowns {
            out: None,
            scale_in: Some(900.0),
        };
        assert!(matches!(
            decide(&t, 4, 2, 300.0, 300.0, &inn, false, 1000.0),
            Decision::Held(_)
        ));
        assert_eq!(
            decide(&t, 4, 2, 300.0, 300.0, &inn, false, 1300.0),
            Decision::Set(2)
        );
        let mut s = target();
        s.suspended.scale_out = true;
        assert!(matches!(
            decide(&s, 2, 5, 0.0, 0.0, &none, false, 0.0),
            Decision::Held(_)
        ));
        assert_eq!(parse_policy_arn("arn:aws:autoscaling:us-east-1:1:scalingPolicy:abc:resource/ecs/service/c/web:policyName/cpu:createdBy/abc"),
            Some(("abc".into(), "service/c/web".into(), "cpu".into())));
    }
}
