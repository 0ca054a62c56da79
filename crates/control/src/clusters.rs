//! Clusters as the cluster manager finds them.

use crate::{Control, ControlError};
use berth_domain::cluster::{Cluster, ClusterStatus};
use berth_domain::{arn, EcsError, Scope};
use berth_store::keys::Keys;
use berth_store::typed;

/// Resolves a `cluster` parameter to an ACTIVE cluster record and its revision.
pub async fn active_cluster(
    st: &Control,
    scope: &Scope,
    cluster: Option<&str>,
) -> Result<(String, typed::Versioned<Cluster>), ControlError> {
    let name = arn::cluster_name(scope, cluster).ok_or(EcsError::ClusterNotFound)?;
    match typed::get::<Cluster>(&*st.store, &scope.cluster(&name)).await? {
        Some(c) if c.value.status == ClusterStatus::Active => Ok((name, c)),
        _ => Err(EcsError::ClusterNotFound.into()),
    }
}

/// What a write that adds to a cluster (a task, a service, a container
/// instance) compares so that it cannot land in a cluster being deleted:
/// the cluster record as it is now, ACTIVE. Such writes also put the
/// cluster's placement key, which DeleteCluster compares, so a deletion
/// that counted the cluster empty fails if anything was added since.
pub async fn still_active(
    st: &Control,
    scope: &Scope,
    cluster: &str,
) -> Result<berth_store::Compare, ControlError> {
    let key = scope.cluster(cluster);
    match typed::get::<Cluster>(&*st.store, &key).await? {
        Some(c) if c.value.status == ClusterStatus::Active => {
            Ok(typed::unchanged(&key, c.mod_revision))
        }
        _ => Err(EcsError::ClusterNotFound.into()),
    }
}

/// How long a deregistered instance stays describable.
pub const INACTIVE_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deregisters container instance `id` of `cluster`: with `force`, its
/// tasks are stopped (with `reason`); without, running tasks refuse it.
/// The record moves to the inactive ones (kept an hour) and its hours are
/// metered. None when the instance is not registered.
pub async fn deregister_instance(
    ctl: &Control,
    scope: &Scope,
    cluster: &str,
    id: &str,
    force: bool,
    reason: &str,
) -> Result<Option<berth_domain::instance::ContainerInstance>, ControlError> {
    use berth_domain::instance::{ContainerInstance, InstanceStatus};
    use berth_domain::task::{DesiredStatus, StopCode, Task, TaskStatus};
    use berth_store::{Op, Txn};
    let key = scope.instance(cluster, id);
    if typed::get::<ContainerInstance>(&*ctl.store, &key)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let on_it: Vec<Task> = {
        let all = crate::placement::ClusterTasks::load(ctl, scope, cluster).await?;
        all.tasks
            .iter()
            .map(|t| &t.value)
            .filter(|t| t.container_instance == id)
            .filter(|t| Task::last_status(all.report(&t.id)) != TaskStatus::Stopped)
            .cloned()
            .collect()
    };
    let running = on_it
        .iter()
        .any(|t| t.desired_status == DesiredStatus::Running);
    if running && !force {
        return Err(EcsError::invalid("Found running tasks on the instance.").into());
    }
    for t in on_it {
        crate::tasks::request_stop(
            ctl,
            scope,
            cluster,
            &t.id,
            StopCode::UserInitiated,
            reason,
            false,
        )
        .await?;
    }
    let gone = scope.inactive_instance(cluster, id);
    let metered = scope.instance_usage(cluster, id);
    let lease = ctl.store.lease_grant(INACTIVE_RETENTION).await?;
    let (key, gone, metered) = (&key, &gone, &metered);
    let record = crate::cas::compare_and_swap(
        ctl,
        || "The container instance is being changed by another request; try again.".into(),
        move || async move {
            let Some(current) = typed::get::<ContainerInstance>(&*ctl.store, key).await? else {
                return Ok(crate::cas::Attempt::Done(None));
            };
            let mut record = current.value;
            record.status = InstanceStatus::Inactive;
            record.version += 1;
            // The hours it was registered stay billed after it goes.
            let usage = berth_domain::billing::InstanceUsage {
                id: record.id.clone(),
                cluster: record.cluster.clone(),
                ec2_instance_id: record.ec2_instance_id.clone(),
                registered_at: record.registered_at,
                deregistered_at: Some(ctl.now()),
            };
            let txn = Txn::when(
                vec![typed::unchanged(key, current.mod_revision)],
                vec![
                    Op::delete(key.as_str()),
                    Op::Put {
                        key: gone.clone(),
                        value: typed::encode(&record),
                        lease: Some(lease.id),
                    },
                    typed::put(metered, &usage),
                ],
            );
            Ok::<_, ControlError>(crate::cas::Attempt::Write(txn, Some(record)))
        },
    )
    .await?;
    tracing::info!(cluster = %cluster, instance = %id, "container instance deregistered");
    Ok(record)
}
