//! Container instances and their attributes.

use super::{compare_and_swap, Attempt};
use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::clusters::{active_cluster, still_active};
use berth_control::placement::Occupancy;
use berth_domain::arn::container_instance_id as instance_id;
use berth_domain::instance::{self, ContainerInstance, InstanceStatus};
use berth_domain::{paging, tags, EcsError, Scope};
use berth_scheduler::Query;
use berth_store::keys::Keys;
use berth_store::{typed, Op, Txn};
use berth_wire::ecs as w;

/// The only attribute target ECS has.
const TARGET_TYPE: &str = "container-instance";

/// The `containerInstances` of a request, 1 to `max` of them.
pub(crate) fn references(given: Option<&[String]>, max: usize) -> Result<Vec<String>, EcsError> {
    let given = given.unwrap_or_default();
    if given.is_empty() || given.len() > max {
        return Err(EcsError::invalid(format!(
            "containerInstances must name between 1 and {max} container instances."
        )));
    }
    Ok(given.to_vec())
}

fn missing(arn: String) -> w::Failure {
    w::Failure {
        arn: Some(arn),
        reason: Some("MISSING".into()),
        detail: None,
    }
}

/// The ARN to report for a reference that names nothing.
fn missing_arn(scope: &Scope, cluster: &str, given: &str) -> String {
    if given.starts_with("arn:") {
        given.to_string()
    } else {
        scope.container_instance_arn(cluster, given)
    }
}

/// The wire view of an instance as this server sees it now: its agent's
/// connection and what its tasks hold, from `observed` (read once per
/// request for the whole cluster).
fn view(
    scope: &Scope,
    ci: &ContainerInstance,
    observed: &Occupancy,
    include_tags: bool,
) -> w::ContainerInstance {
    let agent = ci.status != InstanceStatus::Inactive && observed.connected(&ci.id);
    let used = observed.usage(&ci.id).cloned().unwrap_or_default();
    ci.view(scope, agent, &used, include_tags)
}

pub async fn register_container_instance(
    st: &AppState,
    ctx: &RequestContext,
    req: w::RegisterContainerInstanceRequest,
) -> Result<w::RegisterContainerInstanceResponse, ApiError> {
    // Fargate hosts join the hidden pool, which is no cluster.
    let cluster = match req.cluster.as_deref() {
        Some(instance::FARGATE_POOL) => instance::FARGATE_POOL.to_string(),
        given => active_cluster(st, &ctx.scope, given).await?.0,
    };
    let host = host_of(ctx, &cluster)?;
    let resources = instance::resources(req.total_resources.as_deref())?;
    let tag_list = req.tags.clone().unwrap_or_default();
    tags::validate(&tag_list)?;
    let fresh_id = uuid::Uuid::new_v4().simple().to_string();
    let identity = instance::identity(req.instance_identity_document.as_deref(), &fresh_id)?;
    if let Some(host) = host {
        if identity.instance_id != host {
            return Err(denied(format!(
                "the caller's credentials are those of instance {host}, which cannot register as {}",
                identity.instance_id
            )));
        }
    }
    let id = match req.container_instance_arn.as_deref() {
        Some(given) => instance_id(&ctx.scope, &cluster, given).ok_or_else(|| {
            EcsError::invalid(format!(
                "containerInstanceArn '{given}' does not name a container instance of cluster {cluster}."
            ))
        })?,
        None => fresh_id,
    };
    let mut attributes = instance::identity_attributes(&identity);
    attributes.extend(req.attributes.clone().unwrap_or_default());
    let key = ctx.scope.instance(&cluster, &id);
    let (key, cluster, req, id) = (&key, &cluster, &req, &id);
    let (resources, attributes, identity, tag_list) =
        (&resources, &attributes, &identity, &tag_list);
    let reregistering = req.container_instance_arn.is_some();
    let record = compare_and_swap(
        st,
        || "The container instance is being changed by another request; try again.".into(),
        move || async move {
            let existing = typed::get::<ContainerInstance>(&*st.store, key).await?;
            let rev = existing.as_ref().map_or(0, |e| e.mod_revision);
            let mut record = match existing {
                // An agent that restarts registers again with its ARN and
                // keeps its id, registration time, status and attributes.
                Some(e) => {
                    if host.is_some_and(|h| h != e.value.ec2_instance_id) {
                        return Err(denied(format!(
                            "container instance {} belongs to another host",
                            e.value.id
                        )));
                    }
                    let mut r = e.value;
                    r.version += 1;
                    r.ec2_instance_id = identity.instance_id.clone();
                    r
                }
                None if reregistering => {
                    return Err(EcsError::invalid(format!(
                        "Container instance {} is not registered in cluster {cluster}; register without containerInstanceArn.",
                        req.container_instance_arn.as_deref().unwrap_or_default()
                    ))
                    .into())
                }
                None => ContainerInstance {
                    id: id.clone(),
                    cluster: cluster.clone(),
                    ec2_instance_id: identity.instance_id.clone(),
                    status: InstanceStatus::Active,
                    registered_at: st.now(),
                    version: 1,
                    version_info: None,
                    resources: vec![],
                    attributes: vec![],
                    tags: vec![],
                },
            };
            record.resources = resources.clone();
            record.version_info = req.version_info.clone().or(record.version_info);
            record.put_attributes(attributes)?;
            if !tag_list.is_empty() {
                record.tags = tags::merge(&record.tags, tag_list)?;
            }
            let mut compares = vec![typed::unchanged(key, rev)];
            let mut ops = vec![typed::put(key, &record)];
            if cluster != instance::FARGATE_POOL {
                compares.push(still_active(st, &ctx.scope, cluster).await?);
                ops.push(Op::put(ctx.scope.placement(cluster), vec![]));
            }
            Ok(Attempt::Write(Txn::when(compares, ops), record))
        },
    )
    .await?;
    tracing::info!(cluster = %record.cluster, instance = %record.id, ec2 = %record.ec2_instance_id, "container instance registered");
    let observed = Occupancy::load(st, &ctx.scope, &record.cluster).await?;
    Ok(w::RegisterContainerInstanceResponse {
        container_instance: Some(view(&ctx.scope, &record, &observed, true)),
    })
}

fn denied(message: String) -> ApiError {
    ApiError::Denied(crate::authz::Denied(message))
}

/// The host the caller's credentials are bound to, when they are a
/// container instance's (which may register only itself, in its own
/// cluster). Only such a host may join the Fargate pool: its tasks are
/// every cluster's, with their environment, so no ECS caller, not even
/// the account root, can put a host there.
fn host_of<'a>(ctx: &'a RequestContext, cluster: &str) -> Result<Option<&'a str>, ApiError> {
    let Some(caller) = &ctx.caller else {
        return Ok(None);
    };
    match &caller.principal {
        berth_iam::Principal::Instance {
            cluster: own,
            instance,
            ..
        } => {
            if own != cluster {
                return Err(denied(format!(
                    "the caller's credentials are for {own}, not {cluster}"
                )));
            }
            Ok(Some(instance))
        }
        _ if cluster == instance::FARGATE_POOL => Err(denied(format!(
            "only a host that joined with a Fargate capacity token can register into {}",
            instance::FARGATE_POOL
        ))),
        _ => Ok(None),
    }
}

pub async fn deregister_container_instance(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DeregisterContainerInstanceRequest,
) -> Result<w::DeregisterContainerInstanceResponse, ApiError> {
    let (cluster, _) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    let given = req.container_instance.clone().unwrap_or_default();
    let not_found = || {
        EcsError::invalid(format!(
            "Container instance '{given}' not found in cluster {cluster}."
        ))
    };
    let id = instance_id(&ctx.scope, &cluster, &given).ok_or_else(not_found)?;
    if typed::get::<ContainerInstance>(&*st.store, &ctx.scope.instance(&cluster, &id))
        .await?
        .is_none()
    {
        return Err(not_found().into());
    }
    let record = berth_control::clusters::deregister_instance(
        st,
        &ctx.scope,
        &cluster,
        &id,
        req.force.unwrap_or(false),
        "Container instance deregistration forced by user",
    )
    .await?
    .ok_or_else(not_found)?;
    let observed = Occupancy::load(st, &ctx.scope, &cluster).await?;
    Ok(w::DeregisterContainerInstanceResponse {
        container_instance: Some(view(&ctx.scope, &record, &observed, true)),
    })
}

/// An instance of `cluster` by id, live or recently deregistered.
async fn find(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    id: &str,
) -> Result<Option<ContainerInstance>, ApiError> {
    if let Some(live) =
        typed::get::<ContainerInstance>(&*st.store, &scope.instance(cluster, id)).await?
    {
        return Ok(Some(live.value));
    }
    Ok(
        typed::get::<ContainerInstance>(&*st.store, &scope.inactive_instance(cluster, id))
            .await?
            .map(|r| r.value),
    )
}

pub async fn describe_container_instances(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeContainerInstancesRequest,
) -> Result<w::DescribeContainerInstancesResponse, ApiError> {
    let (cluster, _) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    let mut include_tags = false;
    for i in req.include.clone().unwrap_or_default() {
        match i.as_str() {
            "TAGS" => include_tags = true,
            "CONTAINER_INSTANCE_HEALTH" => {}
            other => {
                return Err(EcsError::invalid(format!(
                    "Invalid value '{other}' for include. Valid values: TAGS, CONTAINER_INSTANCE_HEALTH"
                ))
                .into())
            }
        }
    }
    let wanted = references(req.container_instances.as_deref(), 100)?;
    let observed = Occupancy::load(st, &ctx.scope, &cluster).await?;
    let mut found = vec![];
    let mut failures = vec![];
    for given in wanted {
        let record = match instance_id(&ctx.scope, &cluster, &given) {
            Some(id) => find(st, &ctx.scope, &cluster, &id).await?,
            None => None,
        };
        match record {
            Some(r) => found.push(view(&ctx.scope, &r, &observed, include_tags)),
            None => failures.push(missing(missing_arn(&ctx.scope, &cluster, &given))),
        }
    }
    Ok(w::DescribeContainerInstancesResponse {
        container_instances: Some(found),
        failures: Some(failures),
    })
}

pub async fn list_container_instances(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ListContainerInstancesRequest,
) -> Result<w::ListContainerInstancesResponse, ApiError> {
    let (cluster, _) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    let limit = paging::max_results(req.max_results, 100)?;
    let status = match req.status.as_deref() {
        None => None,
        Some("ACTIVE") => Some(InstanceStatus::Active),
        Some("DRAINING") => Some(InstanceStatus::Draining),
        // Berth registers in one step, so these never hold anything.
        Some("REGISTERING" | "DEREGISTERING" | "REGISTRATION_FAILED") => {
            return Ok(w::ListContainerInstancesResponse {
                container_instance_arns: Some(vec![]),
                next_token: None,
            })
        }
        Some(other) => {
            return Err(EcsError::invalid(format!(
                "Invalid value '{other}' for status. Valid values: ACTIVE, DRAINING, REGISTERING, DEREGISTERING, REGISTRATION_FAILED"
            ))
            .into())
        }
    };
    let filter = match req.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        Some(f) => Some(Query::parse(f).map_err(|e| EcsError::invalid(e.to_string()))?),
        None => None,
    };
    let listing = format!("ListContainerInstances/{cluster}");
    let after = paging::resume(&listing, req.next_token.as_deref())?;
    let all =
        typed::list::<ContainerInstance>(&*st.store, &ctx.scope.instances_of(&cluster)).await?;
    // The query language sees what placement sees: attributes, the agent's
    // connection, running tasks and their groups.
    let observed = match filter {
        Some(_) => Occupancy::load(st, &ctx.scope, &cluster).await?,
        None => Occupancy::default(),
    };
    let chosen = all
        .into_iter()
        .filter(|(_, r)| status.is_none_or(|s| r.value.status == s))
        .filter(|(_, r)| {
            filter
                .as_ref()
                .is_none_or(|q| q.matches(&observed.placeable(&ctx.scope, &r.value)))
        })
        .map(|(k, r)| (k, r.value.arn(&ctx.scope)))
        .collect();
    let (arns, next) = paging::page(&listing, chosen, after.as_deref(), limit);
    Ok(w::ListContainerInstancesResponse {
        container_instance_arns: Some(arns),
        next_token: next,
    })
}

pub async fn update_container_instances_state(
    st: &AppState,
    ctx: &RequestContext,
    req: w::UpdateContainerInstancesStateRequest,
) -> Result<w::UpdateContainerInstancesStateResponse, ApiError> {
    let (cluster, _) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    let status = match req.status.as_deref() {
        Some("ACTIVE") => InstanceStatus::Active,
        Some("DRAINING") => InstanceStatus::Draining,
        other => {
            return Err(EcsError::invalid(format!(
            "Invalid value '{}' for status: a container instance can be set to ACTIVE or DRAINING.",
            other.unwrap_or_default()
        ))
            .into())
        }
    };
    let wanted = references(req.container_instances.as_deref(), 10)?;
    let observed = Occupancy::load(st, &ctx.scope, &cluster).await?;
    let mut done = vec![];
    let mut failures = vec![];
    for given in wanted {
        let Some(id) = instance_id(&ctx.scope, &cluster, &given) else {
            failures.push(missing(missing_arn(&ctx.scope, &cluster, &given)));
            continue;
        };
        let key = ctx.scope.instance(&cluster, &id);
        let key = &key;
        let changed = compare_and_swap(
            st,
            || "The container instance is being changed by another request; try again.".into(),
            move || async move {
                let Some(current) = typed::get::<ContainerInstance>(&*st.store, key).await? else {
                    return Ok(Attempt::Done(None));
                };
                if current.value.status == status {
                    return Ok(Attempt::Done(Some(current.value)));
                }
                let mut record = current.value;
                record.status = status;
                record.version += 1;
                let txn = Txn::when(
                    vec![typed::unchanged(key, current.mod_revision)],
                    vec![typed::put(key, &record)],
                );
                Ok(Attempt::Write(txn, Some(record)))
            },
        )
        .await?;
        match changed {
            Some(r) => done.push(view(&ctx.scope, &r, &observed, false)),
            None => failures.push(missing(missing_arn(&ctx.scope, &cluster, &given))),
        }
    }
    Ok(w::UpdateContainerInstancesStateResponse {
        container_instances: Some(done),
        failures: Some(failures),
    })
}

/// Groups attribute requests by target, checking what every one needs.
fn by_target(
    scope: &Scope,
    cluster: &str,
    attrs: &[w::Attribute],
) -> Result<Vec<(String, Vec<w::Attribute>)>, ApiError> {
    if attrs.is_empty() || attrs.len() > 10 {
        return Err(
            EcsError::invalid("attributes must contain between 1 and 10 attributes.").into(),
        );
    }
    let mut groups: Vec<(String, Vec<w::Attribute>)> = vec![];
    for a in attrs {
        match a.target_type.as_deref() {
            None | Some(TARGET_TYPE) => {}
            Some(other) => {
                return Err(EcsError::invalid(format!(
                    "Invalid value '{other}' for targetType: the only target type is container-instance."
                ))
                .into())
            }
        }
        let target = a.target_id.as_deref().unwrap_or_default();
        if target.is_empty() {
            return Err(EcsError::invalid(format!(
                "Attribute {} needs a targetId (a container instance id or ARN).",
                a.name.as_deref().unwrap_or_default()
            ))
            .into());
        }
        let id = instance_id(scope, cluster, target).ok_or_else(|| {
            EcsError::TargetNotFound(format!("Could not find {target} in cluster {cluster}."))
        })?;
        match groups.iter_mut().find(|(t, _)| *t == id) {
            Some((_, v)) => v.push(a.clone()),
            None => groups.push((id, vec![a.clone()])),
        }
    }
    Ok(groups)
}

/// Applies `change` to each target's attributes, one compare-and-swap per
/// target; an unknown target fails the request before anything changes.
async fn change_attributes(
    st: &AppState,
    ctx: &RequestContext,
    cluster: Option<&str>,
    attrs: &[w::Attribute],
    change: impl Fn(&mut ContainerInstance, &[w::Attribute]) -> Result<(), EcsError>,
) -> Result<Vec<w::Attribute>, ApiError> {
    let (cluster, _) = active_cluster(st, &ctx.scope, cluster).await?;
    let groups = by_target(&ctx.scope, &cluster, attrs)?;
    // Every target is checked before any is written, so a request that
    // fails for one changes none.
    for (id, group) in &groups {
        let key = ctx.scope.instance(&cluster, id);
        let mut probe = typed::get::<ContainerInstance>(&*st.store, &key)
            .await?
            .map(|r| r.value)
            .ok_or_else(|| {
                EcsError::TargetNotFound(format!(
                    "Could not find {} in cluster {cluster}.",
                    ctx.scope.container_instance_arn(&cluster, id)
                ))
            })?;
        change(&mut probe, group)?;
    }
    let change = &change;
    for (id, group) in &groups {
        let key = ctx.scope.instance(&cluster, id);
        let (key, group) = (&key, group);
        compare_and_swap(
            st,
            || "The container instance is being changed by another request; try again.".into(),
            move || async move {
                let Some(current) = typed::get::<ContainerInstance>(&*st.store, key).await? else {
                    return Err(EcsError::TargetNotFound(format!("Could not find {id}.")).into());
                };
                let mut record = current.value;
                change(&mut record, group)?;
                record.version += 1;
                let txn = Txn::when(
                    vec![typed::unchanged(key, current.mod_revision)],
                    vec![typed::put(key, &record)],
                );
                Ok(Attempt::Write(txn, ()))
            },
        )
        .await?;
    }
    Ok(attrs
        .iter()
        .map(|a| w::Attribute {
            target_type: Some(TARGET_TYPE.into()),
            ..a.clone()
        })
        .collect())
}

pub async fn put_attributes(
    st: &AppState,
    ctx: &RequestContext,
    req: w::PutAttributesRequest,
) -> Result<w::PutAttributesResponse, ApiError> {
    let attrs = req.attributes.clone().unwrap_or_default();
    let done = change_attributes(st, ctx, req.cluster.as_deref(), &attrs, |ci, group| {
        ci.put_attributes(group)
    })
    .await?;
    Ok(w::PutAttributesResponse {
        attributes: Some(done),
    })
}

pub async fn delete_attributes(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DeleteAttributesRequest,
) -> Result<w::DeleteAttributesResponse, ApiError> {
    let attrs = req.attributes.clone().unwrap_or_default();
    let done = change_attributes(st, ctx, req.cluster.as_deref(), &attrs, |ci, group| {
        let names: Vec<String> = group.iter().filter_map(|a| a.name.clone()).collect();
        ci.delete_attributes(&names);
        Ok(())
    })
    .await?;
    Ok(w::DeleteAttributesResponse {
        attributes: Some(done),
    })
}

pub async fn list_attributes(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ListAttributesRequest,
) -> Result<w::ListAttributesResponse, ApiError> {
    let (cluster, _) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    if req.target_type.as_deref() != Some(TARGET_TYPE) {
        return Err(EcsError::invalid(format!(
            "Invalid value '{}' for targetType: the only target type is container-instance.",
            req.target_type.as_deref().unwrap_or_default()
        ))
        .into());
    }
    if req.attribute_value.is_some() && req.attribute_name.is_none() {
        return Err(
            EcsError::invalid("attributeValue can only be given with attributeName.").into(),
        );
    }
    let limit = paging::max_results(req.max_results, 100)?;
    let listing = format!("ListAttributes/{cluster}");
    let after = paging::resume(&listing, req.next_token.as_deref())?;
    let all =
        typed::list::<ContainerInstance>(&*st.store, &ctx.scope.instances_of(&cluster)).await?;
    let mut items = vec![];
    for (key, r) in all {
        let arn = r.value.arn(&ctx.scope);
        for a in &r.value.attributes {
            let name = a.name.clone().unwrap_or_default();
            if req.attribute_name.as_ref().is_some_and(|n| *n != name)
                || req
                    .attribute_value
                    .as_ref()
                    .is_some_and(|v| a.value.as_ref() != Some(v))
            {
                continue;
            }
            items.push((
                format!("{key}/{name}"),
                w::Attribute {
                    name: Some(name),
                    value: a.value.clone(),
                    target_type: Some(TARGET_TYPE.into()),
                    target_id: Some(arn.clone()),
                },
            ));
        }
    }
    let (attributes, next) = paging::page(&listing, items, after.as_deref(), limit);
    Ok(w::ListAttributesResponse {
        attributes: Some(attributes),
        next_token: next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_references_resolve_to_ids_within_the_cluster() {
        let scope = Scope::new("000000000000", "us-east-1");
        let id = "0123456789abcdef0123456789abcdef";
        let long = scope.container_instance_arn("prod", id);
        let old = format!("arn:aws:ecs:us-east-1:000000000000:container-instance/{id}");
        assert_eq!(instance_id(&scope, "prod", &long).as_deref(), Some(id));
        assert_eq!(instance_id(&scope, "prod", &old).as_deref(), Some(id));
        assert_eq!(instance_id(&scope, "prod", id).as_deref(), Some(id));
        assert_eq!(
            instance_id(&scope, "dev", &long),
            None,
            "another cluster's instance"
        );
        let other = Scope::new("111111111111", "us-east-1").container_instance_arn("prod", id);
        assert_eq!(
            instance_id(&scope, "prod", &other),
            None,
            "another account's instance"
        );
        assert_eq!(instance_id(&scope, "prod", "../x"), None);
        assert_eq!(
            instance_id(
                &scope,
                "prod",
                "arn:aws:ecs:us-east-1:000000000000:cluster/prod"
            ),
            None
        );
    }
}
