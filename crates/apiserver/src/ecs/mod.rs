//! ECS operations (AWS JSON 1.1, `AmazonEC2ContainerServiceV20141113.*`).

mod clusters;
mod instances;
pub(crate) mod services;
mod settings;
mod tags;
mod taskdefs;
pub(crate) mod tasks;

use crate::{context::RequestContext, error::ApiError, AppState};

pub(crate) use berth_control::cas::Attempt;
pub use taskdefs::{DescribeCache, FamilyLocks};

json_operations! { "ECS", berth_wire::ecs::OPERATIONS;
    "CreateCluster" => clusters::create_cluster,
    "DescribeClusters" => clusters::describe_clusters,
    "ListClusters" => clusters::list_clusters,
    "UpdateCluster" => clusters::update_cluster,
    "UpdateClusterSettings" => clusters::update_cluster_settings,
    "DeleteCluster" => clusters::delete_cluster,
    "PutClusterCapacityProviders" => clusters::put_cluster_capacity_providers,
    "DescribeCapacityProviders" => clusters::describe_capacity_providers,
    "CreateCapacityProvider" => clusters::create_capacity_provider,
    "UpdateCapacityProvider" => clusters::update_capacity_provider,
    "DeleteCapacityProvider" => clusters::delete_capacity_provider,
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
    "UpdateTaskProtection" => tasks::update_task_protection,
    "GetTaskProtection" => tasks::get_task_protection,
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

/// The cluster manager's compare-and-swap loop with the adapter's error
/// type, so that an attempt can fail with any of the API's errors.
pub(crate) async fn compare_and_swap<T, Fut>(
    st: &AppState,
    busy: impl FnOnce() -> String,
    attempt: impl FnMut() -> Fut,
) -> Result<T, ApiError>
where
    Fut: std::future::Future<Output = Result<Attempt<T>, ApiError>>,
{
    berth_control::cas::compare_and_swap(st, busy, attempt).await
}
