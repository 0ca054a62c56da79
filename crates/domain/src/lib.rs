//! Berth's ECS domain: who and where a request acts ([`Scope`]), ARNs,
//! the stored records, and the validation rules ECS applies, with ECS's
//! exceptions and wording ([`EcsError`]).
//!
//! Pure: no I/O, no clock (callers pass `now`), no store. Depends only on
//! `berth-wire`, whose shapes are used directly for user documents such as
//! task definitions, which ECS returns as they were registered.

pub mod alarms;
pub mod arn;
pub mod asg;
pub mod billing;
pub mod capacity;
pub mod cloudwatch;
pub mod cluster;
pub mod deployment;
pub mod elb;
pub mod error;
pub mod instance;
pub mod logs;
pub mod metric_math;
pub mod network;
pub mod paging;
pub mod scaling;
pub mod schedule;
pub mod secrets;
pub mod service;
pub mod settings;
pub mod sqs;
pub mod ssm;
pub mod tags;
pub mod task;
pub mod taskdef;
pub mod usage_metrics;
pub mod vpc;

pub use arn::{Arn, Scope};
pub use error::EcsError;

/// Seconds since the Unix epoch, with fractions: the JSON 1.1 timestamp.
pub type Timestamp = f64;

/// ECS names (clusters, families, containers, capacity providers):
/// 1 to 255 letters, digits, hyphens and underscores.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks that a request parameter is one of its allowed values, with the
/// message every operation uses (`InvalidParameterException`).
pub fn one_of(value: &str, allowed: &[&str], field: &str) -> Result<(), EcsError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(EcsError::invalid(format!(
            "Invalid value '{value}' for {field}. Valid values: {}",
            allowed.join(", ")
        )))
    }
}
