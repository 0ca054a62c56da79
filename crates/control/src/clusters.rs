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
