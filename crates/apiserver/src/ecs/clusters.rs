//! Cluster operations and capacity providers.

use super::{compare_and_swap, Attempt};
use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::clusters::active_cluster;
use berth_domain::cluster::{self, Cluster, ClusterCounts, ClusterInclude, ClusterStatus};
use berth_domain::{arn, capacity, paging, tags, valid_name, EcsError, Scope};
use berth_store::keys::Keys;
use berth_store::{typed, Txn};
use berth_wire::ecs as w;

pub(crate) async fn counts(
    st: &AppState,
    scope: &Scope,
    name: &str,
) -> Result<ClusterCounts, ApiError> {
    let tasks = berth_control::placement::ClusterTasks::load(st, scope, name).await?;
    let (mut running, mut pending) = (0, 0);
    for t in &tasks.tasks {
        match berth_domain::task::Task::last_status(tasks.report(&t.value.id)) {
            berth_domain::task::TaskStatus::Stopped => {}
            s if s.is_pending() => pending += 1,
            _ => running += 1,
        }
    }
    let store = &*st.store;
    Ok(ClusterCounts {
        registered_instances: typed::count(store, &scope.instances_of(name)).await? as i32,
        running_tasks: running,
        pending_tasks: pending,
        active_services: typed::count(store, &scope.services_of(name)).await? as i32,
    })
}

async fn view(
    st: &AppState,
    scope: &Scope,
    c: &Cluster,
    include: ClusterInclude,
) -> Result<w::Cluster, ApiError> {
    let counts = counts(st, scope, &c.name).await?;
    Ok(c.to_wire(scope, counts, include))
}

const EVERYTHING: ClusterInclude = ClusterInclude {
    tags: true,
    settings: true,
    statistics: false,
    configurations: true,
    attachments: false,
};

/// Berth has no Cloud Map yet; the namespace is kept as given.
fn connect_defaults(
    r: &w::ClusterServiceConnectDefaultsRequest,
) -> w::ClusterServiceConnectDefaults {
    w::ClusterServiceConnectDefaults {
        namespace: r.namespace.clone(),
    }
}

/// The names of every capacity provider of the account's region: the
/// built-in ones and those made with CreateCapacityProvider.
async fn provider_names(st: &AppState, scope: &Scope) -> Result<Vec<String>, ApiError> {
    let mut names: Vec<String> = capacity::BUILT_IN.iter().map(|n| n.to_string()).collect();
    names.extend(
        berth_control::capacity_providers::list(st, scope)
            .await?
            .into_iter()
            .map(|p| p.name),
    );
    Ok(names)
}

async fn account_setting(
    st: &AppState,
    ctx: &RequestContext,
    name: &str,
) -> Result<String, ApiError> {
    super::settings::effective(st, ctx, &ctx.principal, name).await
}

pub async fn create_cluster(
    st: &AppState,
    ctx: &RequestContext,
    req: w::CreateClusterRequest,
) -> Result<w::CreateClusterResponse, ApiError> {
    let name = req.cluster_name.clone().unwrap_or_else(|| "default".into());
    if !valid_name(&name) {
        return Err(EcsError::invalid(format!(
            "Invalid cluster name '{name}'. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed."
        ))
        .into());
    }
    let tag_list = req.tags.clone().unwrap_or_default();
    tags::validate(&tag_list)?;
    let insights = account_setting(st, ctx, "containerInsights").await?;
    let settings = cluster::merge_settings(
        &cluster::default_settings(&insights),
        &req.settings.clone().unwrap_or_default(),
    )?;
    let providers = req.capacity_providers.clone().unwrap_or_default();
    let strategy = req
        .default_capacity_provider_strategy
        .clone()
        .unwrap_or_default();
    let known = provider_names(st, &ctx.scope).await?;
    capacity::validate_cluster_providers(&providers, &strategy, |p| known.iter().any(|k| k == p))?;

    let key = ctx.scope.cluster(&name);
    let (name, key, req) = (&name, &key, &req);
    let (settings, providers, strategy, tag_list) = (&settings, &providers, &strategy, &tag_list);
    let (record, created) = compare_and_swap(
        st,
        || format!("Cluster {name} is being changed by another request; try again."),
        move || async move {
            let existing = typed::get::<Cluster>(&*st.store, key).await?;
            let rev = existing.as_ref().map_or(0, |e| e.mod_revision);
            if let Some(c) = existing.filter(|c| c.value.status == ClusterStatus::Active) {
                // CreateCluster is idempotent: an ACTIVE cluster is returned as it is.
                return Ok(Attempt::Done((c.value, false)));
            }
            let record = Cluster {
                name: name.clone(),
                status: ClusterStatus::Active,
                settings: settings.clone(),
                configuration: req.configuration.clone(),
                service_connect_defaults: req
                    .service_connect_defaults
                    .as_ref()
                    .map(connect_defaults),
                capacity_providers: providers.clone(),
                default_strategy: strategy.clone(),
                tags: tag_list.clone(),
                created_at: st.now(),
            };
            let txn = Txn::when(
                vec![typed::unchanged(key, rev)],
                vec![typed::put(key, &record)],
            );
            Ok(Attempt::Write(txn, (record, true)))
        },
    )
    .await?;
    if created {
        tracing::info!(cluster = %name, "cluster created");
    }
    Ok(w::CreateClusterResponse {
        cluster: Some(view(st, &ctx.scope, &record, EVERYTHING).await?),
    })
}

pub async fn describe_clusters(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeClustersRequest,
) -> Result<w::DescribeClustersResponse, ApiError> {
    let include = ClusterInclude::parse(req.include.as_deref())?;
    let wanted = req
        .clusters
        .clone()
        .unwrap_or_else(|| vec!["default".into()]);
    if wanted.len() > 100 {
        return Err(EcsError::invalid("clusters can contain at most 100 names or ARNs.").into());
    }
    let mut clusters = vec![];
    let mut failures = vec![];
    for c in wanted {
        let missing_arn = if c.starts_with("arn:") {
            c.clone()
        } else {
            ctx.scope.cluster_arn(&c)
        };
        let record = match arn::cluster_name(&ctx.scope, Some(&c)) {
            Some(name) => typed::get::<Cluster>(&*st.store, &ctx.scope.cluster(&name)).await?,
            None => None,
        };
        match record {
            Some(r) => clusters.push(view(st, &ctx.scope, &r.value, include).await?),
            None => failures.push(w::Failure {
                arn: Some(missing_arn),
                reason: Some("MISSING".into()),
                detail: None,
            }),
        }
    }
    Ok(w::DescribeClustersResponse {
        clusters: Some(clusters),
        failures: Some(failures),
    })
}

pub async fn list_clusters(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ListClustersRequest,
) -> Result<w::ListClustersResponse, ApiError> {
    let limit = paging::max_results(req.max_results, 100)?;
    let after = paging::resume("ListClusters", req.next_token.as_deref())?;
    let all = typed::list::<Cluster>(&*st.store, &ctx.scope.clusters()).await?;
    let active = all
        .into_iter()
        .filter(|(_, c)| c.value.status == ClusterStatus::Active)
        .map(|(k, c)| (k, ctx.scope.cluster_arn(&c.value.name)))
        .collect();
    let (arns, next) = paging::page("ListClusters", active, after.as_deref(), limit);
    Ok(w::ListClustersResponse {
        cluster_arns: Some(arns),
        next_token: next,
    })
}

/// Applies `change` to an ACTIVE cluster with compare-and-swap, retrying on conflict.
async fn modify_cluster(
    st: &AppState,
    ctx: &RequestContext,
    cluster: Option<&str>,
    change: impl Fn(&mut Cluster) -> Result<(), EcsError>,
) -> Result<Cluster, ApiError> {
    let change = &change;
    compare_and_swap(
        st,
        || "The cluster is being changed by another request; try again.".into(),
        move || async move {
            let (name, current) = active_cluster(st, &ctx.scope, cluster).await?;
            let mut updated = current.value.clone();
            change(&mut updated)?;
            let key = ctx.scope.cluster(&name);
            let txn = Txn::when(
                vec![typed::unchanged(&key, current.mod_revision)],
                vec![typed::put(&key, &updated)],
            );
            Ok(Attempt::Write(txn, updated))
        },
    )
    .await
}

pub async fn update_cluster(
    st: &AppState,
    ctx: &RequestContext,
    req: w::UpdateClusterRequest,
) -> Result<w::UpdateClusterResponse, ApiError> {
    let settings = req.settings.clone().unwrap_or_default();
    let c = modify_cluster(st, ctx, req.cluster.as_deref(), |c| {
        c.settings = cluster::merge_settings(&c.settings, &settings)?;
        if let Some(conf) = &req.configuration {
            c.configuration = Some(conf.clone());
        }
        if let Some(d) = &req.service_connect_defaults {
            c.service_connect_defaults = Some(connect_defaults(d));
        }
        Ok(())
    })
    .await?;
    Ok(w::UpdateClusterResponse {
        cluster: Some(view(st, &ctx.scope, &c, EVERYTHING).await?),
    })
}

pub async fn update_cluster_settings(
    st: &AppState,
    ctx: &RequestContext,
    req: w::UpdateClusterSettingsRequest,
) -> Result<w::UpdateClusterSettingsResponse, ApiError> {
    let Some(settings) = req.settings.clone() else {
        return Err(EcsError::invalid("settings is required.").into());
    };
    let c = modify_cluster(st, ctx, req.cluster.as_deref(), |c| {
        c.settings = cluster::merge_settings(&c.settings, &settings)?;
        Ok(())
    })
    .await?;
    let include = ClusterInclude {
        settings: true,
        ..Default::default()
    };
    Ok(w::UpdateClusterSettingsResponse {
        cluster: Some(view(st, &ctx.scope, &c, include).await?),
    })
}

pub async fn delete_cluster(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DeleteClusterRequest,
) -> Result<w::DeleteClusterResponse, ApiError> {
    let Some(cluster) = req.cluster.as_deref().filter(|c| !c.is_empty()) else {
        return Err(EcsError::invalid("cluster is required.").into());
    };
    let scope = &ctx.scope;
    let deleted = compare_and_swap(
        st,
        || "The cluster is being changed by another request; try again.".into(),
        move || async move {
            let (name, current) = active_cluster(st, scope, Some(cluster)).await?;
            // Read before counting: whatever is added to the cluster
            // afterwards moves this key (and whatever is added after the
            // deletion finds the cluster INACTIVE at its commit), so the
            // emptiness below still holds when the transaction applies.
            let contents = scope.placement(&name);
            let contents_rev = st
                .store
                .get(&contents)
                .await?
                .map_or(0, |kv| kv.mod_revision);
            let counts = counts(st, scope, &name).await?;
            if counts.registered_instances > 0 {
                return Err(EcsError::ClusterContainsContainerInstances.into());
            }
            if counts.active_services > 0 {
                return Err(EcsError::ClusterContainsServices.into());
            }
            if counts.running_tasks + counts.pending_tasks > 0 {
                return Err(EcsError::ClusterContainsTasks.into());
            }
            let mut updated = current.value.clone();
            updated.status = ClusterStatus::Inactive;
            let key = scope.cluster(&name);
            let txn = Txn::when(
                vec![
                    typed::unchanged(&key, current.mod_revision),
                    typed::unchanged(&contents, contents_rev),
                ],
                vec![typed::put(&key, &updated)],
            );
            Ok(Attempt::Write(txn, updated))
        },
    )
    .await?;
    tracing::info!(cluster = %deleted.name, "cluster deleted");
    Ok(w::DeleteClusterResponse {
        cluster: Some(view(st, scope, &deleted, EVERYTHING).await?),
    })
}

pub async fn put_cluster_capacity_providers(
    st: &AppState,
    ctx: &RequestContext,
    req: w::PutClusterCapacityProvidersRequest,
) -> Result<w::PutClusterCapacityProvidersResponse, ApiError> {
    let Some(providers) = req.capacity_providers.clone() else {
        return Err(EcsError::invalid("capacityProviders is required.").into());
    };
    let Some(strategy) = req.default_capacity_provider_strategy.clone() else {
        return Err(EcsError::invalid("defaultCapacityProviderStrategy is required.").into());
    };
    let known = provider_names(st, &ctx.scope).await?;
    capacity::validate_cluster_providers(&providers, &strategy, |p| known.iter().any(|k| k == p))?;
    let c = modify_cluster(st, ctx, req.cluster.as_deref(), |c| {
        c.capacity_providers = providers.clone();
        c.default_strategy = strategy.clone();
        Ok(())
    })
    .await?;
    Ok(w::PutClusterCapacityProvidersResponse {
        cluster: Some(view(st, &ctx.scope, &c, EVERYTHING).await?),
    })
}

pub async fn describe_capacity_providers(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeCapacityProvidersRequest,
) -> Result<w::DescribeCapacityProvidersResponse, ApiError> {
    let limit = paging::max_results(req.max_results, 10)?;
    let after = paging::resume("DescribeCapacityProviders", req.next_token.as_deref())?;
    let include_tags = req
        .include
        .as_ref()
        .is_some_and(|i| i.iter().any(|x| x == "TAGS"));
    let mut failures = vec![];
    let mut found = vec![];
    let custom = berth_control::capacity_providers::list(st, &ctx.scope).await?;
    let lookup = |n: &str| {
        capacity::built_in(&ctx.scope, n).or_else(|| {
            custom
                .iter()
                .find(|p| p.name == n)
                .map(|p| p.view(&ctx.scope, true))
        })
    };
    match &req.capacity_providers {
        Some(names) => {
            for n in names {
                let name = match arn::Arn::parse(n) {
                    Some(arn::Arn::CapacityProvider { scope, name }) if scope == ctx.scope => {
                        Some(name)
                    }
                    Some(_) => None,
                    None if !n.starts_with("arn:") => Some(n.clone()),
                    None => None,
                };
                match name.and_then(|n| lookup(&n)) {
                    Some(p) => found.push(p),
                    None => failures.push(w::Failure {
                        arn: Some(if n.starts_with("arn:") {
                            n.clone()
                        } else {
                            ctx.scope.capacity_provider_arn(n)
                        }),
                        reason: Some("MISSING".into()),
                        detail: None,
                    }),
                }
            }
        }
        None => {
            found.extend(
                capacity::BUILT_IN
                    .iter()
                    .filter_map(|n| capacity::built_in(&ctx.scope, n)),
            );
            found.extend(custom.iter().map(|p| p.view(&ctx.scope, true)));
        }
    }
    let keyed = found
        .into_iter()
        .map(|mut p| {
            if !include_tags {
                p.tags = None;
            }
            (p.name.clone().unwrap_or_default(), p)
        })
        .collect();
    let (providers, next) =
        paging::page("DescribeCapacityProviders", keyed, after.as_deref(), limit);
    Ok(w::DescribeCapacityProvidersResponse {
        capacity_providers: Some(providers),
        failures: Some(failures),
        next_token: next,
    })
}

/// A custom provider's name from a name or an ARN of this scope.
fn provider_name(scope: &Scope, given: Option<&str>) -> Result<String, EcsError> {
    let given = given
        .filter(|n| !n.is_empty())
        .ok_or_else(|| EcsError::invalid("capacityProvider is required."))?;
    Ok(match arn::Arn::parse(given) {
        Some(arn::Arn::CapacityProvider { scope: s, name }) if &s == scope => name,
        _ => given.to_string(),
    })
}

pub async fn create_capacity_provider(
    st: &AppState,
    ctx: &RequestContext,
    req: w::CreateCapacityProviderRequest,
) -> Result<w::CreateCapacityProviderResponse, ApiError> {
    if req
        .name
        .as_deref()
        .is_some_and(|n| capacity::BUILT_IN.contains(&n))
    {
        return Err(EcsError::invalid(
            "The capacity provider name cannot start with 'aws', 'ecs', or 'fargate'. Specify a different name and try again.",
        )
        .into());
    }
    let p = berth_control::capacity_providers::create(st, &ctx.scope, &req).await?;
    Ok(w::CreateCapacityProviderResponse {
        capacity_provider: Some(p.view(&ctx.scope, true)),
    })
}

pub async fn update_capacity_provider(
    st: &AppState,
    ctx: &RequestContext,
    req: w::UpdateCapacityProviderRequest,
) -> Result<w::UpdateCapacityProviderResponse, ApiError> {
    let name = provider_name(&ctx.scope, req.name.as_deref())?;
    let given = capacity::asg_provider(
        req.managed_instances_provider.is_some(),
        req.cluster.is_some(),
        req.auto_scaling_group_provider.as_ref(),
    )?;
    let p = berth_control::capacity_providers::update(st, &ctx.scope, &name, given).await?;
    Ok(w::UpdateCapacityProviderResponse {
        capacity_provider: Some(p.view(&ctx.scope, true)),
    })
}

pub async fn delete_capacity_provider(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DeleteCapacityProviderRequest,
) -> Result<w::DeleteCapacityProviderResponse, ApiError> {
    let name = provider_name(&ctx.scope, req.capacity_provider.as_deref())?;
    let p = berth_control::capacity_providers::delete(st, &ctx.scope, &name).await?;
    let mut view = p.view(&ctx.scope, true);
    view.status = Some("INACTIVE".into());
    view.update_status = Some("DELETE_COMPLETE".into());
    Ok(w::DeleteCapacityProviderResponse {
        capacity_provider: Some(view),
    })
}
