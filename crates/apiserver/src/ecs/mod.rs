//! ECS operations (AWS JSON 1.1, `AmazonEC2ContainerServiceV20141113.*`).

mod clusters;
mod instances;
pub(crate) mod services;
mod settings;
mod tags;
mod taskdefs;
pub(crate) mod tasks;

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_domain::EcsError;
use berth_store::Txn;
use berth_wire::json;
use std::future::Future;

pub use taskdefs::{DescribeCache, FamilyLocks};

/// How many times a handler re-reads and retries a compare-and-swap that
/// lost to a concurrent writer before giving up with UpdateInProgress.
const CAS_RETRIES: usize = 32;

/// Declares the served operations once: the dispatch table and the list of
/// implemented names (for docs/api-coverage.md's test) come from one place.
macro_rules! operations {
    ($($name:literal => $handler:path),* $(,)?) => {
        /// The ECS operations Berth serves.
        pub const IMPLEMENTED: &[&str] = &[$($name),*];

        /// Decodes the input, runs the handler, encodes the output.
        pub async fn dispatch(st: &AppState, ctx: &RequestContext, op: &str, body: &[u8]) -> Result<Vec<u8>, ApiError> {
            match op {
                $($name => {
                    let input = json::decode(body)?;
                    let output = $handler(st, ctx, input).await?;
                    Ok(json::encode(&output))
                })*
                other if berth_wire::ecs::OPERATIONS.contains(&other) => Err(ApiError::UnknownOperation(format!(
                    "Berth does not implement the ECS operation {other} yet; see docs/api-coverage.md."
                ))),
                other => Err(ApiError::UnknownOperation(format!("Unknown operation {other}"))),
            }
        }
    };
}

operations! {
    "CreateCluster" => clusters::create_cluster,
    "DescribeClusters" => clusters::describe_clusters,
    "ListClusters" => clusters::list_clusters,
    "UpdateCluster" => clusters::update_cluster,
    "UpdateClusterSettings" => clusters::update_cluster_settings,
    "DeleteCluster" => clusters::delete_cluster,
    "PutClusterCapacityProviders" => clusters::put_cluster_capacity_providers,
    "DescribeCapacityProviders" => clusters::describe_capacity_providers,
    "RegisterTaskDefinition" => taskdefs::register_task_definition,
    "DescribeTaskDefinition" => taskdefs::describe_task_definition,
    "ListTaskDefinitions" => taskdefs::list_task_definitions,
    "ListTaskDefinitionFamilies" => taskdefs::list_task_definition_families,
    "DeregisterTaskDefinition" => taskdefs::deregister_task_definition,
    "DeleteTaskDefinitions" => taskdefs::delete_task_definitions,
    "TagResource" => tags::tag_resource,
    "UntagResource" => tags::untag_resource,
    "ListTagsForResource" => tags::list_tags_for_resource,
    "PutAccountSetting" => settings::put_account_setting,
    "PutAccountSettingDefault" => settings::put_account_setting_default,
    "DeleteAccountSetting" => settings::delete_account_setting,
    "ListAccountSettings" => settings::list_account_settings,
    "RegisterContainerInstance" => instances::register_container_instance,
    "DeregisterContainerInstance" => instances::deregister_container_instance,
    "DescribeContainerInstances" => instances::describe_container_instances,
    "ListContainerInstances" => instances::list_container_instances,
    "UpdateContainerInstancesState" => instances::update_container_instances_state,
    "PutAttributes" => instances::put_attributes,
    "DeleteAttributes" => instances::delete_attributes,
    "ListAttributes" => instances::list_attributes,
    "RunTask" => tasks::run_task,
    "StartTask" => tasks::start_task,
    "StopTask" => tasks::stop_task,
    "DescribeTasks" => tasks::describe_tasks,
    "ListTasks" => tasks::list_tasks,
    "CreateService" => services::create_service,
    "UpdateService" => services::update_service,
    "DeleteService" => services::delete_service,
    "DescribeServices" => services::describe_services,
    "ListServices" => services::list_services,
    "ListServiceDeployments" => services::list_service_deployments,
    "DescribeServiceDeployments" => services::describe_service_deployments,
    "DescribeServiceRevisions" => services::describe_service_revisions,
    "StopServiceDeployment" => services::stop_service_deployment,
}

/// What one try of a read-modify-write decided.
pub(crate) enum Attempt<T> {
    /// Nothing to write (the record is already as wanted): the answer.
    Done(T),
    /// The transaction to commit, and the answer if it applies.
    Write(Txn, T),
}

/// Runs a read-modify-write until its transaction applies. Each try reads
/// again what its transaction compares, so a loser sees the winner's write;
/// after `CAS_RETRIES` lost races the caller gets UpdateInProgress with
/// `busy`'s message.
pub(crate) async fn compare_and_swap<T, Fut>(
    st: &AppState,
    busy: impl FnOnce() -> String,
    attempt: impl FnMut() -> Fut,
) -> Result<T, ApiError>
where
    Fut: Future<Output = Result<Attempt<T>, ApiError>>,
{
    retry_swap(st, attempt)
        .await?
        .ok_or_else(|| EcsError::UpdateInProgress(busy()).into())
}

/// The retry loop of [`compare_and_swap`]; None when every try lost, for
/// callers whose protocol words contention its own way.
pub(crate) async fn retry_swap<T, Fut>(
    st: &AppState,
    mut attempt: impl FnMut() -> Fut,
) -> Result<Option<T>, ApiError>
where
    Fut: Future<Output = Result<Attempt<T>, ApiError>>,
{
    for n in 0..CAS_RETRIES {
        match attempt().await? {
            Attempt::Done(answer) => return Ok(Some(answer)),
            Attempt::Write(txn, answer) => {
                if st.store.txn(txn).await?.succeeded {
                    return Ok(Some(answer));
                }
            }
        }
        backoff(n).await;
    }
    Ok(None)
}

/// A short random pause before retrying a lost compare-and-swap, so that
/// contenders spread out instead of colliding again.
async fn backoff(attempt: usize) {
    let max = 1u64 << attempt.min(6);
    let ms = rand::random::<u64>() % (max + 1);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}
