//! `GET /berth/v1/billing[?cluster=NAME]`: what Fargate tasks and EC2-mode
//! container instances have cost, per task, service and cluster, as
//! `berth billing` shows it. Stopped tasks come from their usage records
//! (written when they were recorded STOPPED, kept after the tasks go);
//! tasks that still run are charged up to now.

use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_control::placement::ClusterTasks;
use berth_domain::billing::{instance_charge, InstanceUsage, Prices, TaskUsage};
use berth_domain::cluster::Cluster;
use berth_domain::instance::ContainerInstance;
use berth_domain::Scope;
use berth_store::keys::Keys;
use berth_store::typed;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Deserialize)]
pub(crate) struct Filter {
    cluster: Option<String>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Report {
    prices: Prices,
    at: f64,
    clusters: Vec<ClusterLine>,
    services: Vec<ServiceLine>,
    tasks: Vec<TaskLine>,
    instances: Vec<InstanceLine>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct ClusterLine {
    cluster: String,
    fargate_tasks: usize,
    fargate_usd: f64,
    instances: usize,
    instances_usd: f64,
    total_usd: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceLine {
    cluster: String,
    service: String,
    tasks: usize,
    vcpu_seconds: f64,
    gb_seconds: f64,
    usd: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskLine {
    cluster: String,
    task_arn: String,
    family: String,
    service: Option<String>,
    capacity_provider: Option<String>,
    cpu: i64,
    memory: i64,
    started_at: f64,
    stopped_at: Option<f64>,
    seconds: u64,
    vcpu_seconds: f64,
    gb_seconds: f64,
    usd: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InstanceLine {
    cluster: String,
    container_instance_arn: String,
    ec2_instance_id: String,
    registered_at: f64,
    deregistered_at: Option<f64>,
    seconds: u64,
    usd: f64,
}

pub(crate) async fn report(
    State(st): State<AppState>,
    req: crate::auth::OwnRequest,
    Query(filter): Query<Filter>,
) -> Response {
    let ctx = match crate::auth::own_route(&st, &req, "ce:GetCostAndUsage").await {
        Ok(ctx) => ctx,
        Err(refused) => return refused,
    };
    match build(&st, &ctx.scope, filter.cluster.as_deref()).await {
        Ok(r) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&r).unwrap_or_default(),
        )
            .into_response(),
        Err((status, message)) => (status, format!("{message}\n")).into_response(),
    }
}

async fn build(
    st: &AppState,
    scope: &Scope,
    only: Option<&str>,
) -> Result<Report, (StatusCode, String)> {
    let failed = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "billing: store read failed");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error".to_string(),
        )
    };
    let clusters: Vec<String> = typed::list::<Cluster>(&*st.store, &scope.clusters())
        .await
        .map_err(|e| failed(&e))?
        .into_iter()
        .map(|(_, c)| c.value.name)
        .filter(|n| only.is_none_or(|o| o == n))
        .collect();
    if let (Some(o), true) = (only, clusters.is_empty()) {
        return Err((StatusCode::NOT_FOUND, format!("cluster {o} not found")));
    }
    let (prices, at) = (st.config.prices, st.now());
    let mut out = Report {
        prices,
        at,
        ..Default::default()
    };
    for cluster in clusters {
        let mut usage: BTreeMap<String, TaskUsage> =
            typed::list::<TaskUsage>(&*st.store, &scope.usages_of(&cluster))
                .await
                .map_err(|e| failed(&e))?
                .into_iter()
                .map(|(_, u)| (u.value.id.clone(), u.value))
                .collect();
        // Tasks not recorded STOPPED yet have no usage record: they are
        // charged from their records, up to now.
        let tasks = ClusterTasks::load(st, scope, &cluster)
            .await
            .map_err(|e| failed(&e))?;
        for t in &tasks.tasks {
            usage
                .entry(t.value.id.clone())
                .or_insert_with(|| t.value.usage(tasks.report(&t.value.id)));
        }
        let mut line = ClusterLine {
            cluster: cluster.clone(),
            ..Default::default()
        };
        let mut services: BTreeMap<String, ServiceLine> = BTreeMap::new();
        for u in usage.values() {
            let Some(c) = u.charge(&prices, at) else {
                continue;
            };
            line.fargate_tasks += 1;
            line.fargate_usd += c.usd;
            if let Some(s) = &u.service {
                let e = services.entry(s.clone()).or_insert_with(|| ServiceLine {
                    cluster: cluster.clone(),
                    service: s.clone(),
                    tasks: 0,
                    vcpu_seconds: 0.0,
                    gb_seconds: 0.0,
                    usd: 0.0,
                });
                e.tasks += 1;
                e.vcpu_seconds += c.vcpu_seconds;
                e.gb_seconds += c.gb_seconds;
                e.usd += c.usd;
            }
            out.tasks.push(TaskLine {
                cluster: cluster.clone(),
                task_arn: scope.task_arn(&cluster, &u.id),
                family: u.family.clone(),
                service: u.service.clone(),
                capacity_provider: u.capacity_provider.clone(),
                cpu: u.cpu_units,
                memory: u.memory_mib,
                started_at: u.started_at.unwrap_or(at),
                stopped_at: u.stopped_at,
                seconds: c.seconds,
                vcpu_seconds: c.vcpu_seconds,
                gb_seconds: c.gb_seconds,
                usd: c.usd,
            });
        }
        let live = typed::list::<ContainerInstance>(&*st.store, &scope.instances_of(&cluster))
            .await
            .map_err(|e| failed(&e))?
            .into_iter()
            .map(|(_, ci)| InstanceUsage {
                id: ci.value.id.clone(),
                cluster: cluster.clone(),
                ec2_instance_id: ci.value.ec2_instance_id.clone(),
                registered_at: ci.value.registered_at,
                deregistered_at: None,
            });
        let gone = typed::list::<InstanceUsage>(&*st.store, &scope.instance_usages_of(&cluster))
            .await
            .map_err(|e| failed(&e))?
            .into_iter()
            .map(|(_, u)| u.value);
        for i in live.chain(gone) {
            let (seconds, usd) =
                instance_charge(&prices, i.registered_at, i.deregistered_at.unwrap_or(at));
            line.instances += 1;
            line.instances_usd += usd;
            out.instances.push(InstanceLine {
                cluster: cluster.clone(),
                container_instance_arn: scope.container_instance_arn(&cluster, &i.id),
                ec2_instance_id: i.ec2_instance_id,
                registered_at: i.registered_at,
                deregistered_at: i.deregistered_at,
                seconds,
                usd,
            });
        }
        line.total_usd = line.fargate_usd + line.instances_usd;
        out.services.extend(services.into_values());
        out.clusters.push(line);
    }
    out.tasks
        .sort_by(|a, b| a.started_at.total_cmp(&b.started_at));
    Ok(out)
}
