//! Task placement as a pure function: a [`Snapshot`] of the cluster's
//! container instances and a [`Request`] for some identical tasks go in, a
//! [`Plan`] comes out. The caller commits the plan with a compare-and-swap
//! on the instances it read and re-plans on conflict; nothing here does I/O
//! or reads a clock, so placement can be property-tested and benchmarked on
//! its own.
//!
//! Placement follows ECS: first the instances that can hold the task
//! (agent connected, `requiresAttributes`, cpu, memory, ports), then the
//! constraints (`distinctInstance`, `memberOf` in the cluster query
//! language, [`query`]), then the strategies in order (`binpack`, `spread`,
//! `random`), each narrowing the candidates to its best ones; what is left
//! is chosen at random.

mod place;
pub mod query;

pub use place::{Failure, Placement, Plan, Reason, Snapshot};
pub use query::{Query, QueryError, Subjects};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use thiserror::Error;

/// A container instance as placement sees it: what it is and what it has
/// left.
#[derive(Debug, Clone)]
pub struct Instance {
    pub arn: Arc<str>,
    pub ec2_instance_id: String,
    pub status: InstanceStatus,
    pub agent_connected: bool,
    pub agent_version: String,
    /// Seconds since the epoch.
    pub registered_at: i64,
    /// Attribute name to value; attributes may have no value.
    pub attributes: BTreeMap<String, Option<String>>,
    /// CPU units not reserved by a task.
    pub cpu_free: i64,
    /// MiB not reserved by a task.
    pub memory_free: i64,
    /// Host ports reserved at registration or bound by a task.
    pub tcp_ports_taken: BTreeSet<u16>,
    pub udp_ports_taken: BTreeSet<u16>,
    /// Ports left in the dynamic host port range.
    pub dynamic_ports_free: u32,
    /// Tasks on the instance that are not stopped.
    pub running_tasks: u32,
    /// How many of those tasks are in each task group.
    pub groups: HashMap<String, u32>,
}

/// Only ACTIVE instances take new tasks; DRAINING ones keep theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStatus {
    Active,
    Draining,
    Inactive,
}

/// `count` identical tasks to place.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The task group (`family:<name>` or `service:<name>`) that spread and
    /// distinctInstance count by.
    pub group: String,
    pub count: usize,
    /// CPU units and MiB each task reserves.
    pub cpu: i64,
    pub memory: i64,
    /// Fixed host ports each task binds.
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    /// Host ports each task takes from the dynamic range.
    pub dynamic_ports: u32,
    /// Attributes the instance must have (with this value, when given).
    pub requires_attributes: Vec<(String, Option<String>)>,
    pub constraints: Vec<Constraint>,
    pub strategies: Vec<Strategy>,
}

#[derive(Debug, Clone)]
pub enum Constraint {
    /// Each task of the group on a different instance.
    DistinctInstance,
    MemberOf(Query),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// The instance with the least of this resource left that still fits.
    Binpack(Resource),
    /// Even numbers of the group's tasks per value of the field.
    Spread(SpreadField),
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpreadField {
    Instance,
    Attribute(String),
}

/// A placement constraint or strategy that cannot be used; the message names
/// the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlacementError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("{0}")]
    Invalid(String),
}

impl Constraint {
    /// From the wire's `{type, expression}`.
    pub fn parse(kind: &str, expression: Option<&str>) -> Result<Constraint, PlacementError> {
        let expression = expression.filter(|e| !e.trim().is_empty());
        match (kind, expression) {
            ("distinctInstance", None) => Ok(Constraint::DistinctInstance),
            ("distinctInstance", Some(_)) => Err(PlacementError::Invalid(
                "A distinctInstance placement constraint cannot have an expression.".into(),
            )),
            ("memberOf", Some(e)) => Ok(Constraint::MemberOf(Query::parse(e)?)),
            ("memberOf", None) => Err(PlacementError::Invalid(
                "A memberOf placement constraint requires an expression.".into(),
            )),
            (other, _) => Err(PlacementError::Invalid(format!(
                "Invalid placement constraint type '{other}': use distinctInstance or memberOf."
            ))),
        }
    }
}

impl Strategy {
    /// From the wire's `{type, field}`.
    pub fn parse(kind: &str, field: Option<&str>) -> Result<Strategy, PlacementError> {
        let invalid = |m: String| Err(PlacementError::Invalid(m));
        match kind {
            "random" => Ok(Strategy::Random),
            "binpack" => match field.map(str::to_ascii_lowercase).as_deref() {
                Some("cpu") => Ok(Strategy::Binpack(Resource::Cpu)),
                Some("memory") => Ok(Strategy::Binpack(Resource::Memory)),
                _ => invalid(format!(
                    "Invalid field '{}' for the binpack placement strategy: use cpu or memory.",
                    field.unwrap_or_default()
                )),
            },
            "spread" => match field {
                Some("instanceId" | "host") => Ok(Strategy::Spread(SpreadField::Instance)),
                Some(f) => match f.strip_prefix("attribute:") {
                    Some(name) if !name.is_empty() => {
                        Ok(Strategy::Spread(SpreadField::Attribute(name.to_string())))
                    }
                    _ => invalid(format!(
                        "Invalid field '{f}' for the spread placement strategy: use instanceId, host or attribute:<name>."
                    )),
                },
                None => invalid(
                    "The spread placement strategy requires a field: instanceId, host or attribute:<name>.".into(),
                ),
            },
            other => invalid(format!(
                "Invalid placement strategy type '{other}': use random, spread or binpack."
            )),
        }
    }
}

impl Subjects for Instance {
    fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.attributes.get(name).map(|v| v.as_deref())
    }
    fn agent_connected(&self) -> bool {
        self.agent_connected
    }
    fn agent_version(&self) -> &str {
        &self.agent_version
    }
    fn ec2_instance_id(&self) -> &str {
        &self.ec2_instance_id
    }
    fn registered_at(&self) -> i64 {
        self.registered_at
    }
    fn running_tasks_count(&self) -> u32 {
        self.running_tasks
    }
    fn task_groups(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        Box::new(
            self.groups
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(g, _)| g.as_str()),
        )
    }
}
