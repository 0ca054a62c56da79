//! Load balancer and target group attributes: the keys ALB knows, their
//! defaults, and what each accepts.

use super::ElbError;
use std::collections::BTreeMap;

pub const DEREGISTRATION_DELAY: &str = "deregistration_delay.timeout_seconds";
pub const ALGORITHM: &str = "load_balancing.algorithm.type";
pub const IDLE_TIMEOUT: &str = "idle_timeout.timeout_seconds";
pub const DELETION_PROTECTION: &str = "deletion_protection.enabled";
pub const XFF_MODE: &str = "routing.http.xff_header_processing.mode";

/// What a value may be.
enum Accepts {
    Int(i64, i64),
    Bool,
    OneOf(&'static [&'static str]),
    Text,
}

/// (key, default, what it accepts)
type Spec = (&'static str, &'static str, Accepts);

const TARGET_GROUP: &[Spec] = &[
    (DEREGISTRATION_DELAY, "300", Accepts::Int(0, 3600)),
    (
        ALGORITHM,
        "round_robin",
        Accepts::OneOf(&["round_robin", "least_outstanding_requests"]),
    ),
    ("slow_start.duration_seconds", "0", Accepts::Int(0, 900)),
    ("stickiness.enabled", "false", Accepts::Bool),
    (
        "stickiness.type",
        "lb_cookie",
        Accepts::OneOf(&["lb_cookie", "app_cookie"]),
    ),
    (
        "stickiness.lb_cookie.duration_seconds",
        "86400",
        Accepts::Int(1, 604_800),
    ),
    (
        "load_balancing.cross_zone.enabled",
        "use_load_balancer_configuration",
        Accepts::OneOf(&["true", "false", "use_load_balancer_configuration"]),
    ),
];

const LOAD_BALANCER: &[Spec] = &[
    (IDLE_TIMEOUT, "60", Accepts::Int(1, 4000)),
    (DELETION_PROTECTION, "false", Accepts::Bool),
    ("routing.http2.enabled", "true", Accepts::Bool),
    ("access_logs.s3.enabled", "false", Accepts::Bool),
    ("access_logs.s3.bucket", "", Accepts::Text),
    ("access_logs.s3.prefix", "", Accepts::Text),
    (
        "routing.http.drop_invalid_header_fields.enabled",
        "false",
        Accepts::Bool,
    ),
    (
        XFF_MODE,
        "append",
        Accepts::OneOf(&["append", "preserve", "remove"]),
    ),
    (
        "routing.http.preserve_host_header.enabled",
        "false",
        Accepts::Bool,
    ),
    (
        "client_keep_alive.seconds",
        "3600",
        Accepts::Int(60, 604_800),
    ),
];

fn defaults(specs: &[Spec]) -> BTreeMap<String, String> {
    specs
        .iter()
        .map(|(k, d, _)| (k.to_string(), d.to_string()))
        .collect()
}

pub fn target_group_defaults() -> BTreeMap<String, String> {
    defaults(TARGET_GROUP)
}

pub fn load_balancer_defaults() -> BTreeMap<String, String> {
    defaults(LOAD_BALANCER)
}

fn apply(
    specs: &[Spec],
    what: &str,
    current: &BTreeMap<String, String>,
    changes: &[(String, String)],
) -> Result<BTreeMap<String, String>, ElbError> {
    let mut out = current.clone();
    for (key, value) in changes {
        let Some((_, _, accepts)) = specs.iter().find(|(k, _, _)| k == key) else {
            return Err(ElbError::validation(format!(
                "{what} attribute key '{key}' is not recognized"
            )));
        };
        let ok = match accepts {
            Accepts::Int(lo, hi) => value.parse::<i64>().is_ok_and(|n| (*lo..=*hi).contains(&n)),
            Accepts::Bool => value == "true" || value == "false",
            Accepts::OneOf(values) => values.contains(&value.as_str()),
            Accepts::Text => true,
        };
        if !ok {
            let expected = match accepts {
                Accepts::Int(lo, hi) => format!("an integer from {lo} to {hi}"),
                Accepts::Bool => "true or false".into(),
                Accepts::OneOf(values) => format!("one of {}", values.join(", ")),
                Accepts::Text => String::new(),
            };
            return Err(ElbError::validation(format!(
                "{what} attribute '{key}' has an invalid value '{value}': expected {expected}"
            )));
        }
        out.insert(key.clone(), value.clone());
    }
    Ok(out)
}

/// The target group's attributes after `changes`, or the first bad one.
pub fn modify_target_group(
    current: &BTreeMap<String, String>,
    changes: &[(String, String)],
) -> Result<BTreeMap<String, String>, ElbError> {
    apply(TARGET_GROUP, "Target group", current, changes)
}

pub fn modify_load_balancer(
    current: &BTreeMap<String, String>,
    changes: &[(String, String)],
) -> Result<BTreeMap<String, String>, ElbError> {
    apply(LOAD_BALANCER, "Load balancer", current, changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_change_and_others_are_refused() {
        let tg = target_group_defaults();
        assert_eq!(tg[DEREGISTRATION_DELAY], "300");
        let set = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let changed = modify_target_group(&tg, &set(DEREGISTRATION_DELAY, "5")).expect("present");
        assert_eq!(changed[DEREGISTRATION_DELAY], "5");
        assert!(modify_target_group(&tg, &set(DEREGISTRATION_DELAY, "3601")).is_err());
        assert!(modify_target_group(&tg, &set(ALGORITHM, "random")).is_err());
        assert!(modify_target_group(&tg, &set("nope", "1")).is_err());
        let lb = load_balancer_defaults();
        assert!(modify_load_balancer(&lb, &set(IDLE_TIMEOUT, "0")).is_err());
        assert_eq!(
            modify_load_balancer(&lb, &set(DELETION_PROTECTION, "true")).expect("present")
                [DELETION_PROTECTION],
            "true"
        );
    }
}
