//! Services as the cluster manager counts them: a service's tasks as
//! its reconciles see them, and new deployment ids.

use crate::placement::ClusterTasks;
use berth_domain::service::{Counts, Member, Service};
use std::collections::HashSet;

/// A service's tasks, stopped ones included, as its reconciles see
/// them; `draining` names the DRAINING instances.
pub fn members<'a>(
    tasks: &'a ClusterTasks,
    svc: &Service,
    draining: &HashSet<&str>,
) -> Vec<Member<'a>> {
    tasks
        .tasks
        .iter()
        .filter(|t| t.value.service.as_deref() == Some(svc.name.as_str()))
        .map(|t| Member {
            task: &t.value,
            report: tasks.report(&t.value.id),
            on_draining: draining.contains(t.value.container_instance.as_str()),
            lb: None,
        })
        .collect()
}

/// A service's task counts, from one read of its cluster's tasks.
pub fn counts_of(tasks: &ClusterTasks, svc: &Service) -> Counts {
    Counts::from_members(svc, &members(tasks, svc, &HashSet::new()))
}

/// The 19 digits of a new deployment id.
pub fn deployment_digits() -> u64 {
    rand::random::<u64>() % 9_000_000_000_000_000_000 + 1_000_000_000_000_000_000
}
