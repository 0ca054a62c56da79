//! The load balancer's domain (ELBv2, application type): its records,
//! ARNs, the validation rules with ELBv2's error codes and wording
//! ([`ElbError`]), request routing ([`rules`]) and health checking
//! ([`health`]). Pure, like the rest of this crate.

pub mod attributes;
pub mod health;
pub mod rules;

use crate::{Scope, Timestamp};
use berth_wire::elbv2 as w;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The default VPC, which records made before load balancers and target
/// groups kept a VPC of their own are in.
pub const VPC_ID: &str = "vpc-local";

fn default_vpc() -> String {
    VPC_ID.into()
}
/// The hosted zone id ALB reports for its DNS name.
pub const HOSTED_ZONE_ID: &str = "Z35SXDOTRQ7X7K";

macro_rules! codes {
    ($($name:ident),* $(,)?) => {
        /// The ELBv2 error codes Berth returns.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ElbCode { $($name),* }

        impl ElbCode {
            pub const ALL: &[ElbCode] = &[$(ElbCode::$name),*];

            /// The code on the wire (awsQuery drops the `Exception` suffix).
            pub fn as_str(&self) -> &'static str {
                match self { $(ElbCode::$name => stringify!($name)),* }
            }
        }
    };
}

codes! {
    ValidationError,
    LoadBalancerNotFound,
    TargetGroupNotFound,
    ListenerNotFound,
    RuleNotFound,
    DuplicateLoadBalancerName,
    DuplicateTargetGroupName,
    DuplicateListener,
    DuplicateTagKeys,
    PriorityInUse,
    InvalidTarget,
    InvalidConfigurationRequest,
    InvalidLoadBalancerAction,
    InvalidScheme,
    InvalidSecurityGroup,
    SubnetNotFound,
    ResourceInUse,
    TargetGroupAssociationLimit,
    TooManyTags,
    TooManyActions,
    TooManyRules,
    TooManyTargets,
    TooManyListeners,
    UnsupportedProtocol,
    OperationNotPermitted,
    IncompatibleProtocols,
    PriorRequestNotComplete,
}

/// An ELBv2 client fault, with the message as ELBv2 words it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ElbError {
    pub code: ElbCode,
    pub message: String,
}

impl ElbError {
    pub fn new(code: ElbCode, message: impl Into<String>) -> Self {
        ElbError {
            code,
            message: message.into(),
        }
    }
    pub fn validation(message: impl Into<String>) -> Self {
        ElbError::new(ElbCode::ValidationError, message)
    }
    pub fn lb_not_found() -> Self {
        ElbError::new(
            ElbCode::LoadBalancerNotFound,
            "One or more load balancers not found",
        )
    }
    pub fn tg_not_found() -> Self {
        ElbError::new(
            ElbCode::TargetGroupNotFound,
            "One or more target groups not found",
        )
    }
    pub fn listener_not_found() -> Self {
        ElbError::new(ElbCode::ListenerNotFound, "One or more listeners not found")
    }
    pub fn rule_not_found() -> Self {
        ElbError::new(ElbCode::RuleNotFound, "One or more rules not found")
    }
}

/// Which kind of resource an ARN names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElbArn {
    LoadBalancer {
        name: String,
        id: String,
    },
    TargetGroup {
        name: String,
        id: String,
    },
    Listener {
        lb_name: String,
        lb_id: String,
        id: String,
    },
    Rule {
        lb_name: String,
        lb_id: String,
        listener: String,
        id: String,
    },
}

fn prefix(scope: &Scope) -> String {
    format!(
        "arn:aws:elasticloadbalancing:{}:{}:",
        scope.region, scope.account
    )
}

impl ElbArn {
    /// Reads an ARN of this scope; anything else is not one of ours.
    pub fn parse(scope: &Scope, arn: &str) -> Option<ElbArn> {
        let rest = arn.strip_prefix(&prefix(scope))?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|s| s.is_empty()) {
            return None;
        }
        match parts.as_slice() {
            ["loadbalancer", "app", name, id] => Some(ElbArn::LoadBalancer {
                name: name.to_string(),
                id: id.to_string(),
            }),
            ["targetgroup", name, id] => Some(ElbArn::TargetGroup {
                name: name.to_string(),
                id: id.to_string(),
            }),
            ["listener", "app", lb_name, lb_id, id] => Some(ElbArn::Listener {
                lb_name: lb_name.to_string(),
                lb_id: lb_id.to_string(),
                id: id.to_string(),
            }),
            ["listener-rule", "app", lb_name, lb_id, listener, id] => Some(ElbArn::Rule {
                lb_name: lb_name.to_string(),
                lb_id: lb_id.to_string(),
                listener: listener.to_string(),
                id: id.to_string(),
            }),
            _ => None,
        }
    }

    pub fn to_string(&self, scope: &Scope) -> String {
        let p = prefix(scope);
        match self {
            ElbArn::LoadBalancer { name, id } => format!("{p}loadbalancer/app/{name}/{id}"),
            ElbArn::TargetGroup { name, id } => format!("{p}targetgroup/{name}/{id}"),
            ElbArn::Listener { lb_name, lb_id, id } => {
                format!("{p}listener/app/{lb_name}/{lb_id}/{id}")
            }
            ElbArn::Rule {
                lb_name,
                lb_id,
                listener,
                id,
            } => format!("{p}listener-rule/app/{lb_name}/{lb_id}/{listener}/{id}"),
        }
    }
}

/// Load balancer and target group names: 1 to 32 letters, digits and
/// hyphens, not beginning or ending with a hyphen.
pub fn validate_name(name: &str, what: &str) -> Result<(), ElbError> {
    if name.is_empty() || name.len() > 32 {
        return Err(ElbError::validation(format!(
            "{what} name '{name}' must be between 1 and 32 characters long"
        )));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ElbError::validation(format!(
            "{what} name '{name}' can only contain characters that are alphanumeric characters or hyphens(-)"
        )));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(ElbError::validation(format!(
            "{what} name '{name}' cannot begin or end with a hyphen"
        )));
    }
    if what == "Load balancer" && name.starts_with("internal-") {
        return Err(ElbError::validation(format!(
            "Load balancer name '{name}' cannot begin with 'internal-'"
        )));
    }
    Ok(())
}

/// A port given as a number, 1 to 65535.
pub fn validate_port(port: i32, field: &str) -> Result<(), ElbError> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(ElbError::validation(format!(
            "1 validation error detected: Value '{port}' at '{field}' failed to satisfy constraint: Member must have value between 1 and 65535"
        )))
    }
}

/// A subnet a load balancer has a node in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbSubnet {
    pub id: String,
    pub zone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub name: String,
    /// 16 hex digits, the last part of the ARN.
    pub id: String,
    /// `internet-facing` or `internal`.
    pub scheme: String,
    pub ip_address_type: String,
    pub subnets: Vec<LbSubnet>,
    pub security_groups: Vec<String>,
    /// The VPC of its subnets.
    #[serde(default = "default_vpc")]
    pub vpc_id: String,
    pub created_at: Timestamp,
    #[serde(default)]
    pub tags: Vec<w::Tag>,
    /// Every attribute, defaults included.
    pub attributes: BTreeMap<String, String>,
}

impl LoadBalancer {
    /// Its `LoadBalancer` dimension in AWS/ApplicationELB: `app/NAME/ID`.
    pub fn dimension(&self) -> String {
        format!("app/{}/{}", self.name, self.id)
    }

    pub fn arn(&self, scope: &Scope) -> String {
        ElbArn::LoadBalancer {
            name: self.name.clone(),
            id: self.id.clone(),
        }
        .to_string(scope)
    }

    pub fn to_wire(&self, scope: &Scope, dns_name: &str) -> w::LoadBalancer {
        w::LoadBalancer {
            load_balancer_arn: Some(self.arn(scope)),
            load_balancer_name: Some(self.name.clone()),
            dns_name: Some(dns_name.to_string()),
            canonical_hosted_zone_id: Some(HOSTED_ZONE_ID.into()),
            created_time: Some(iso8601(self.created_at)),
            scheme: Some(self.scheme.clone()),
            vpc_id: Some(self.vpc_id.clone()),
            state: Some(w::LoadBalancerState {
                code: Some("active".into()),
                reason: None,
            }),
            r#type: Some("application".into()),
            availability_zones: Some(
                self.subnets
                    .iter()
                    .map(|s| w::AvailabilityZone {
                        zone_name: Some(s.zone.clone()),
                        subnet_id: Some(s.id.clone()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            security_groups: Some(self.security_groups.clone()),
            ip_address_type: Some(self.ip_address_type.clone()),
            ..Default::default()
        }
    }
}

/// How a target group checks its targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub enabled: bool,
    pub protocol: String,
    /// `traffic-port` or a port number.
    pub port: String,
    pub path: String,
    pub interval_seconds: i32,
    pub timeout_seconds: i32,
    pub healthy_threshold: i32,
    pub unhealthy_threshold: i32,
    /// Success codes: `200`, `200,202` or `200-299`.
    pub matcher: String,
}

impl Default for HealthCheck {
    /// ALB's defaults for an HTTP target group of instance or ip targets.
    fn default() -> Self {
        HealthCheck {
            enabled: true,
            protocol: "HTTP".into(),
            port: "traffic-port".into(),
            path: "/".into(),
            interval_seconds: 30,
            timeout_seconds: 5,
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: "200".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetGroup {
    pub name: String,
    pub id: String,
    pub protocol: String,
    pub protocol_version: String,
    pub port: i32,
    /// `instance` or `ip`.
    pub target_type: String,
    #[serde(default = "default_vpc")]
    pub vpc_id: String,
    pub health: HealthCheck,
    pub created_at: Timestamp,
    #[serde(default)]
    pub tags: Vec<w::Tag>,
    pub attributes: BTreeMap<String, String>,
}

impl TargetGroup {
    /// Its `TargetGroup` dimension in AWS/ApplicationELB:
    /// `targetgroup/NAME/ID`.
    pub fn dimension(&self) -> String {
        format!("targetgroup/{}/{}", self.name, self.id)
    }

    pub fn arn(&self, scope: &Scope) -> String {
        ElbArn::TargetGroup {
            name: self.name.clone(),
            id: self.id.clone(),
        }
        .to_string(scope)
    }

    /// The port health checks go to for a target registered at `port`.
    pub fn check_port(&self, port: i32) -> i32 {
        self.health.port.parse().unwrap_or(port)
    }

    /// Seconds a deregistered target keeps its in-flight requests.
    pub fn deregistration_delay(&self) -> u64 {
        self.attributes
            .get(attributes::DEREGISTRATION_DELAY)
            .and_then(|v| v.parse().ok())
            .unwrap_or(300)
    }

    pub fn to_wire(&self, scope: &Scope, load_balancers: Vec<String>) -> w::TargetGroup {
        let h = &self.health;
        w::TargetGroup {
            target_group_arn: Some(self.arn(scope)),
            target_group_name: Some(self.name.clone()),
            protocol: Some(self.protocol.clone()),
            protocol_version: Some(self.protocol_version.clone()),
            port: Some(self.port),
            vpc_id: Some(self.vpc_id.clone()),
            health_check_enabled: Some(h.enabled),
            health_check_protocol: Some(h.protocol.clone()),
            health_check_port: Some(h.port.clone()),
            health_check_path: Some(h.path.clone()),
            health_check_interval_seconds: Some(h.interval_seconds),
            health_check_timeout_seconds: Some(h.timeout_seconds),
            healthy_threshold_count: Some(h.healthy_threshold),
            unhealthy_threshold_count: Some(h.unhealthy_threshold),
            matcher: Some(w::Matcher {
                http_code: Some(h.matcher.clone()),
                grpc_code: None,
            }),
            load_balancer_arns: Some(load_balancers),
            target_type: Some(self.target_type.clone()),
            ip_address_type: Some("ipv4".into()),
            ..Default::default()
        }
    }
}

/// A listener rule other than the default one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    /// 1 to 50000, unique within the listener; lower is evaluated first.
    pub priority: i32,
    pub conditions: Vec<w::RuleCondition>,
    pub actions: Vec<w::Action>,
    #[serde(default)]
    pub tags: Vec<w::Tag>,
}

/// A listener with its rules: one record, so a rule's priority is unique
/// by compare-and-swap on the listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    pub id: String,
    pub lb_name: String,
    pub lb_id: String,
    pub port: i32,
    pub protocol: String,
    pub default_actions: Vec<w::Action>,
    pub default_rule_id: String,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub tags: Vec<w::Tag>,
}

impl Listener {
    pub fn arn(&self, scope: &Scope) -> String {
        ElbArn::Listener {
            lb_name: self.lb_name.clone(),
            lb_id: self.lb_id.clone(),
            id: self.id.clone(),
        }
        .to_string(scope)
    }

    pub fn rule_arn(&self, scope: &Scope, rule: &str) -> String {
        ElbArn::Rule {
            lb_name: self.lb_name.clone(),
            lb_id: self.lb_id.clone(),
            listener: self.id.clone(),
            id: rule.to_string(),
        }
        .to_string(scope)
    }

    pub fn lb_arn(&self, scope: &Scope) -> String {
        ElbArn::LoadBalancer {
            name: self.lb_name.clone(),
            id: self.lb_id.clone(),
        }
        .to_string(scope)
    }

    pub fn to_wire(&self, scope: &Scope) -> w::Listener {
        w::Listener {
            listener_arn: Some(self.arn(scope)),
            load_balancer_arn: Some(self.lb_arn(scope)),
            port: Some(self.port),
            protocol: Some(self.protocol.clone()),
            default_actions: Some(self.default_actions.clone()),
            ..Default::default()
        }
    }

    /// Every rule as DescribeRules lists them: by priority, the default last.
    pub fn rules_to_wire(&self, scope: &Scope) -> Vec<w::Rule> {
        let mut rules: Vec<&Rule> = self.rules.iter().collect();
        rules.sort_by_key(|r| r.priority);
        let mut out: Vec<w::Rule> = rules
            .into_iter()
            .map(|r| w::Rule {
                rule_arn: Some(self.rule_arn(scope, &r.id)),
                priority: Some(r.priority.to_string()),
                conditions: Some(r.conditions.clone()),
                actions: Some(r.actions.clone()),
                is_default: Some(false),
                ..Default::default()
            })
            .collect();
        out.push(w::Rule {
            rule_arn: Some(self.rule_arn(scope, &self.default_rule_id)),
            priority: Some("default".into()),
            conditions: Some(vec![]),
            actions: Some(self.default_actions.clone()),
            is_default: Some(true),
            ..Default::default()
        });
        out
    }

    /// The target groups this listener's actions forward to.
    pub fn target_groups(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .default_actions
            .iter()
            .chain(self.rules.iter().flat_map(|r| r.actions.iter()))
            .flat_map(rules::forwarded_groups)
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// A target registered with a target group (desired state: written by
/// RegisterTargets, DeregisterTargets and the service controller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// An instance id (`i-...`) or an IPv4 address.
    pub id: String,
    pub port: i32,
    #[serde(default)]
    pub availability_zone: Option<String>,
    pub registered_at: Timestamp,
    /// Set by DeregisterTargets: draining until the deregistration delay
    /// has passed, then the record goes.
    #[serde(default)]
    pub deregistered_at: Option<Timestamp>,
    /// The task whose service registered it, when ECS did.
    #[serde(default)]
    pub task: Option<String>,
}

impl Registration {
    /// The store key segment: the same target on two ports is two targets.
    pub fn key(id: &str, port: i32) -> String {
        format!("{id}:{port}")
    }

    pub fn draining(&self) -> bool {
        self.deregistered_at.is_some()
    }

    /// Whether its draining is over at `now`.
    pub fn drained(&self, delay_secs: u64, now: Timestamp) -> bool {
        self.deregistered_at
            .is_some_and(|at| now >= at + delay_secs as f64)
    }
}

/// What the load balancer's health checks last found (observed state:
/// written only by the data path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// `initial`, `healthy` or `unhealthy`.
    pub state: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// What the load balancer has sent a target and what came back, counted
/// since the registration began (observed: each data path adds what it
/// counted since its last write, by compare-and-swap, so several `berth
/// lb` processes add up). The leader turns the differences into the
/// AWS/ApplicationELB metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestCount {
    pub requests: u64,
    /// Responses from the target by status class: 2xx, 3xx, 4xx, 5xx.
    #[serde(default)]
    pub classes: [u64; 4],
    /// Responses whose head came back, and the microseconds from sending
    /// the request to the head, summed (TargetResponseTime).
    #[serde(default)]
    pub answered: u64,
    #[serde(default)]
    pub response_micros: u64,
    /// When the count was last added to.
    pub at: Timestamp,
}

impl RequestCount {
    /// This count plus `other`'s (a data path's counts since its last write).
    pub fn add(&self, other: &RequestCount) -> RequestCount {
        let mut classes = self.classes;
        for (c, o) in classes.iter_mut().zip(other.classes) {
            *c += o;
        }
        RequestCount {
            requests: self.requests + other.requests,
            classes,
            answered: self.answered + other.answered,
            response_micros: self.response_micros + other.response_micros,
            at: other.at,
        }
    }

    /// What was counted between `earlier` and this count (zero if the
    /// registration began again in between).
    pub fn since(&self, earlier: &RequestCount) -> RequestCount {
        if self.requests < earlier.requests {
            return self.clone();
        }
        let mut classes = self.classes;
        for (c, e) in classes.iter_mut().zip(earlier.classes) {
            *c = c.saturating_sub(e);
        }
        RequestCount {
            requests: self.requests - earlier.requests,
            classes,
            answered: self.answered.saturating_sub(earlier.answered),
            response_micros: self.response_micros.saturating_sub(earlier.response_micros),
            at: self.at,
        }
    }
}

/// A target's health as DescribeTargetHealth reports it.
pub fn target_health(
    tg: &TargetGroup,
    registration: &Registration,
    in_use: bool,
    observed: Option<&HealthRecord>,
) -> w::TargetHealth {
    let th = |state: &str, reason: Option<&str>, description: Option<&str>| w::TargetHealth {
        state: Some(state.into()),
        reason: reason.map(str::to_string),
        description: description.map(str::to_string),
    };
    if registration.draining() {
        return th(
            "draining",
            Some("Target.DeregistrationInProgress"),
            Some("Target deregistration is in progress"),
        );
    }
    if !in_use {
        return th(
            "unused",
            Some("Target.NotInUse"),
            Some("Target group is not configured to receive traffic from the load balancer"),
        );
    }
    if !tg.health.enabled {
        return th(
            "unavailable",
            Some("Target.HealthCheckDisabled"),
            Some("Health checks are disabled"),
        );
    }
    match observed {
        Some(h) => th(&h.state, h.reason.as_deref(), h.description.as_deref()),
        None => th(
            "initial",
            Some("Elb.RegistrationInProgress"),
            Some("Target registration is in progress"),
        ),
    }
}

/// 16 lowercase hex digits from a random source (a UUID's simple form).
pub fn short_id(uuid_simple: &str) -> String {
    uuid_simple.chars().take(16).collect()
}

/// ISO 8601 with milliseconds, UTC, as awsQuery timestamps are written.
pub fn iso8601(ts: Timestamp) -> String {
    let ms_total = (ts * 1000.0).round() as i64;
    let (secs, ms) = (ms_total.div_euclid(1000), ms_total.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
    }
    // Written digit by digit: IAM's aws:CurrentTime is one per request.
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 3, ms);
    String::from_utf8_lossy(&b).into_owned()
}

/// Checks tags as ELBv2 does: at most 50, keys unique, 1-128 and 0-256 characters.
pub fn validate_tags(tags: &[w::Tag]) -> Result<(), ElbError> {
    if tags.len() > 50 {
        return Err(ElbError::new(
            ElbCode::TooManyTags,
            "The quota for the number of tags that can be assigned to a resource has been reached",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in tags {
        let key = t.key.as_deref().unwrap_or_default();
        if key.is_empty() || key.len() > 128 {
            return Err(ElbError::validation(
                "Tag keys must be between 1 and 128 characters long",
            ));
        }
        if t.value.as_deref().unwrap_or_default().len() > 256 {
            return Err(ElbError::validation(
                "Tag values must be at most 256 characters long",
            ));
        }
        if !seen.insert(key) {
            return Err(ElbError::new(
                ElbCode::DuplicateTagKeys,
                format!("Tag key '{key}' is specified more than once"),
            ));
        }
    }
    Ok(())
}

/// Adds or replaces tags by key.
pub fn merge_tags(current: &[w::Tag], new: &[w::Tag]) -> Result<Vec<w::Tag>, ElbError> {
    validate_tags(new)?;
    let mut out: Vec<w::Tag> = current
        .iter()
        .filter(|c| !new.iter().any(|n| n.key == c.key))
        .cloned()
        .collect();
    out.extend(new.iter().cloned());
    validate_tags(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_round_trip() {
        let scope = Scope::new("123456789012", "us-east-1");
        for arn in [
            ElbArn::LoadBalancer {
                name: "web".into(),
                id: "50dc6c495c0c9188".into(),
            },
            ElbArn::TargetGroup {
                name: "tg".into(),
                id: "73e2d6bc24d8a067".into(),
            },
            ElbArn::Listener {
                lb_name: "web".into(),
                lb_id: "50dc6c495c0c9188".into(),
                id: "f2f7dc8efc522ab2".into(),
            },
            ElbArn::Rule {
                lb_name: "web".into(),
                lb_id: "50dc6c495c0c9188".into(),
                listener: "f2f7dc8efc522ab2".into(),
                id: "9683b2d02a6cabee".into(),
            },
        ] {
            let text = arn.to_string(&scope);
            assert_eq!(ElbArn::parse(&scope, &text), Some(arn));
        }
        assert_eq!(
            ElbArn::parse(
                &scope,
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tg"
            ),
            None
        );
        let other = Scope::new("123456789012", "eu-west-1");
        assert_eq!(
            ElbArn::parse(
                &other,
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tg/1"
            ),
            None
        );
    }

    #[test]
    fn names_follow_elbv2_rules() {
        assert!(validate_name("web-1", "Target group").is_ok());
        for bad in ["", "-web", "web-", "web_1", &"a".repeat(33)] {
            assert_eq!(
                validate_name(bad, "Target group")
                    .expect_err("refused")
                    .code,
                ElbCode::ValidationError
            );
        }
        assert!(validate_name("internal-x", "Load balancer").is_err());
    }

    #[test]
    fn iso8601_writes_utc_with_millis() {
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000.25), "2023-11-14T22:13:20.250Z");
        assert_eq!(iso8601(951_782_400.0), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(253_402_300_800.0), "10000-01-01T00:00:00.000Z");
    }

    #[test]
    fn health_reports_draining_unused_and_initial_before_checks() {
        let tg = TargetGroup {
            name: "t".into(),
            id: "1".into(),
            protocol: "HTTP".into(),
            protocol_version: "HTTP1".into(),
            port: 80,
            target_type: "ip".into(),
            vpc_id: "vpc-local".into(),
            health: HealthCheck::default(),
            created_at: 0.0,
            tags: vec![],
            attributes: BTreeMap::new(),
        };
        let mut r = Registration {
            id: "10.0.0.1".into(),
            port: 80,
            availability_zone: None,
            registered_at: 0.0,
            deregistered_at: None,
            task: None,
        };
        let state = |h: w::TargetHealth| (h.state.expect("present"), h.reason.unwrap_or_default());
        assert_eq!(
            state(target_health(&tg, &r, true, None)),
            ("initial".into(), "Elb.RegistrationInProgress".into())
        );
        assert_eq!(state(target_health(&tg, &r, false, None)).0, "unused");
        let seen = HealthRecord {
            state: "healthy".into(),
            reason: None,
            description: None,
        };
        assert_eq!(
            state(target_health(&tg, &r, true, Some(&seen))).0,
            "healthy"
        );
        r.deregistered_at = Some(10.0);
        assert_eq!(
            state(target_health(&tg, &r, true, Some(&seen))).0,
            "draining"
        );
        assert!(!r.drained(300, 309.0));
        assert!(r.drained(300, 310.0));
    }

    #[test]
    fn tags_merge_and_refuse_duplicates() {
        let tag = |k: &str, v: &str| w::Tag {
            key: Some(k.into()),
            value: Some(v.into()),
        };
        let merged =
            merge_tags(&[tag("a", "1"), tag("b", "2")], &[tag("a", "3")]).expect("present");
        assert_eq!(merged, vec![tag("b", "2"), tag("a", "3")]);
        assert_eq!(
            validate_tags(&[tag("a", "1"), tag("a", "2")])
                .expect_err("refused")
                .code,
            ElbCode::DuplicateTagKeys
        );
    }
}
