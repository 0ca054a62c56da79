//! Clusters: the stored record and its wire view.

use crate::{EcsError, Scope, Timestamp};
use berth_wire::ecs as w;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClusterStatus {
    Active,
    /// Deleted: still describable, not listed, re-creatable.
    Inactive,
}

impl ClusterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterStatus::Active => "ACTIVE",
            ClusterStatus::Inactive => "INACTIVE",
        }
    }
}

/// A cluster as stored (the desired state users write).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub status: ClusterStatus,
    #[serde(default)]
    pub settings: Vec<w::ClusterSetting>,
    #[serde(default)]
    pub configuration: Option<w::ClusterConfiguration>,
    #[serde(default)]
    pub service_connect_defaults: Option<w::ClusterServiceConnectDefaults>,
    #[serde(default)]
    pub capacity_providers: Vec<String>,
    #[serde(default)]
    pub default_strategy: Vec<w::CapacityProviderStrategyItem>,
    #[serde(default)]
    pub tags: Vec<w::Tag>,
    pub created_at: Timestamp,
}

/// Counts derived from the cluster's tasks, services and instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterCounts {
    pub registered_instances: i32,
    pub running_tasks: i32,
    pub pending_tasks: i32,
    pub active_services: i32,
}

/// Which optional parts of a cluster DescribeClusters returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterInclude {
    pub tags: bool,
    pub settings: bool,
    pub statistics: bool,
    pub configurations: bool,
    pub attachments: bool,
}

impl ClusterInclude {
    pub fn parse(include: Option<&[String]>) -> Result<Self, EcsError> {
        let mut out = ClusterInclude::default();
        for f in include.unwrap_or_default() {
            match f.as_str() {
                "TAGS" => out.tags = true,
                "SETTINGS" => out.settings = true,
                "STATISTICS" => out.statistics = true,
                "CONFIGURATIONS" => out.configurations = true,
                "ATTACHMENTS" => out.attachments = true,
                other => {
                    return Err(EcsError::invalid(format!(
                        "Invalid value '{other}' for include. Valid values: ATTACHMENTS, CONFIGURATIONS, SETTINGS, STATISTICS, TAGS"
                    )))
                }
            }
        }
        Ok(out)
    }
}

/// Default settings of a new cluster: Container Insights follows the account setting.
pub fn default_settings(container_insights: &str) -> Vec<w::ClusterSetting> {
    vec![w::ClusterSetting {
        name: Some("containerInsights".into()),
        value: Some(container_insights.into()),
    }]
}

/// Validates cluster settings and merges them over `current`.
pub fn merge_settings(
    current: &[w::ClusterSetting],
    new: &[w::ClusterSetting],
) -> Result<Vec<w::ClusterSetting>, EcsError> {
    let mut out = current.to_vec();
    for s in new {
        let name = s.name.as_deref().unwrap_or_default();
        if !w::enums::CLUSTER_SETTING_NAME.contains(&name) {
            return Err(EcsError::invalid(format!(
                "Invalid cluster setting name '{name}'. Valid values: containerInsights"
            )));
        }
        let value = s.value.as_deref().unwrap_or_default();
        if !["enabled", "disabled", "enhanced"].contains(&value) {
            return Err(EcsError::invalid(format!(
                "Invalid value '{value}' for cluster setting {name}. Valid values: enabled, disabled, enhanced"
            )));
        }
        out.retain(|c| c.name.as_deref() != Some(name));
        out.push(s.clone());
    }
    Ok(out)
}

impl Cluster {
    pub fn to_wire(
        &self,
        scope: &Scope,
        counts: ClusterCounts,
        include: ClusterInclude,
    ) -> w::Cluster {
        let active = self.status == ClusterStatus::Active;
        w::Cluster {
            cluster_arn: Some(scope.cluster_arn(&self.name)),
            cluster_name: Some(self.name.clone()),
            status: Some(self.status.as_str().into()),
            registered_container_instances_count: Some(counts.registered_instances),
            running_tasks_count: Some(counts.running_tasks),
            pending_tasks_count: Some(counts.pending_tasks),
            active_services_count: Some(counts.active_services),
            capacity_providers: Some(if active {
                self.capacity_providers.clone()
            } else {
                vec![]
            }),
            default_capacity_provider_strategy: Some(if active {
                self.default_strategy.clone()
            } else {
                vec![]
            }),
            statistics: Some(if include.statistics {
                statistics(counts)
            } else {
                vec![]
            }),
            tags: Some(if include.tags {
                self.tags.clone()
            } else {
                vec![]
            }),
            settings: include.settings.then(|| self.settings.clone()),
            configuration: if include.configurations {
                self.configuration.clone()
            } else {
                None
            },
            service_connect_defaults: self.service_connect_defaults.clone(),
            attachments: include.attachments.then(Vec::new),
            ..Default::default()
        }
    }
}

fn statistics(c: ClusterCounts) -> Vec<w::KeyValuePair> {
    // Berth has one launch type in each bucket until Fargate arrives; the
    // names are the ones ECS reports.
    [
        ("runningEC2TasksCount", c.running_tasks),
        ("runningFargateTasksCount", 0),
        ("pendingEC2TasksCount", c.pending_tasks),
        ("pendingFargateTasksCount", 0),
        ("activeEC2ServiceCount", c.active_services),
        ("activeFargateServiceCount", 0),
        ("drainingEC2ServiceCount", 0),
        ("drainingFargateServiceCount", 0),
    ]
    .into_iter()
    .map(|(k, v)| w::KeyValuePair {
        name: Some(k.into()),
        value: Some(v.to_string()),
    })
    .collect()
}
