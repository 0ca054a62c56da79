//! TagResource, UntagResource and ListTagsForResource.

use super::{compare_and_swap, Attempt};
use crate::{context::RequestContext, error::ApiError, AppState};
use berth_domain::arn::Arn;
use berth_domain::cluster::{Cluster, ClusterStatus};
use berth_domain::service::Service;
use berth_domain::taskdef::StoredTaskDefinition;
use berth_domain::{tags, EcsError};
use berth_store::keys::Keys;
use berth_store::{typed, Txn};
use berth_wire::ecs as w;

/// A taggable record: where it lives and how to reach its tags.
enum Taggable {
    Cluster(String, Box<typed::Versioned<Cluster>>),
    TaskDefinition(String, Box<typed::Versioned<StoredTaskDefinition>>),
    Service(String, Box<typed::Versioned<Service>>),
}

async fn find(
    st: &AppState,
    ctx: &RequestContext,
    arn: Option<&str>,
) -> Result<Taggable, ApiError> {
    let arn = arn.unwrap_or_default();
    if arn.is_empty() {
        return Err(EcsError::invalid("resourceArn is required.").into());
    }
    let parsed = Arn::parse(arn).ok_or_else(|| {
        EcsError::invalid(format!("Invalid resourceArn '{arn}': not an ECS ARN."))
    })?;
    if parsed.scope() != &ctx.scope {
        return Err(EcsError::invalid(format!(
            "The resourceArn '{arn}' is not in this account and region ({}, {}).",
            ctx.scope.account, ctx.scope.region
        ))
        .into());
    }
    match parsed {
        Arn::Cluster { name, .. } => {
            let key = ctx.scope.cluster(&name);
            match typed::get::<Cluster>(&*st.store, &key).await? {
                Some(c) if c.value.status == ClusterStatus::Active => {
                    Ok(Taggable::Cluster(key, Box::new(c)))
                }
                _ => Err(EcsError::ClusterNotFound.into()),
            }
        }
        Arn::TaskDefinition {
            family, revision, ..
        } => match super::taskdefs::stored(st, &ctx.scope, &family, revision).await? {
            Some(d) => Ok(Taggable::TaskDefinition(
                ctx.scope.taskdef(&family, revision),
                Box::new(d),
            )),
            None => Err(EcsError::ResourceNotFound(format!(
                "The specified resource {arn} could not be found."
            ))
            .into()),
        },
        Arn::CapacityProvider { name, .. }
            if berth_domain::capacity::BUILT_IN.contains(&name.as_str()) =>
        {
            Err(EcsError::invalid(format!(
                "The built-in capacity provider {name} cannot be tagged."
            ))
            .into())
        }
        Arn::Other { resource, .. } if resource.starts_with("service/") => {
            let found = match resource.split('/').nth(1) {
                Some(cluster) => {
                    super::services::find(st, &ctx.scope, cluster, Some(arn), false).await?
                }
                None => None,
            };
            match found {
                Some(f) => Ok(Taggable::Service(f.key, Box::new(f.service))),
                None => Err(EcsError::ServiceNotFound.into()),
            }
        }
        Arn::CapacityProvider { .. } | Arn::Other { .. } => Err(EcsError::ResourceNotFound(
            format!("The specified resource {arn} could not be found."),
        )
        .into()),
    }
}

/// Rewrites a resource's tags with compare-and-swap.
async fn retag(
    st: &AppState,
    ctx: &RequestContext,
    arn: Option<&str>,
    change: impl Fn(&[w::Tag]) -> Result<Vec<w::Tag>, EcsError>,
) -> Result<(), ApiError> {
    let change = &change;
    compare_and_swap(
        st,
        || "The resource is being changed by another request; try again.".into(),
        move || async move {
            let (key, rev, value) = match find(st, ctx, arn).await? {
                Taggable::Cluster(key, mut c) => {
                    c.value.tags = change(&c.value.tags)?;
                    (key, c.mod_revision, typed::encode(&c.value))
                }
                Taggable::TaskDefinition(key, mut d) => {
                    d.value.tags = change(&d.value.tags)?;
                    (key, d.mod_revision, typed::encode(&d.value))
                }
                Taggable::Service(key, mut s) => {
                    s.value.tags = change(&s.value.tags)?;
                    s.value.version += 1;
                    (key, s.mod_revision, typed::encode(&s.value))
                }
            };
            let txn = Txn::when(
                vec![typed::unchanged(&key, rev)],
                vec![berth_store::Op::put(key.clone(), value)],
            );
            Ok(Attempt::Write(txn, ()))
        },
    )
    .await
}

pub async fn tag_resource(
    st: &AppState,
    ctx: &RequestContext,
    req: w::TagResourceRequest,
) -> Result<w::TagResourceResponse, ApiError> {
    let new = req.tags.clone().unwrap_or_default();
    if new.is_empty() {
        return Err(EcsError::invalid("tags must contain at least one tag.").into());
    }
    tags::validate(&new)?;
    retag(st, ctx, req.resource_arn.as_deref(), |cur| {
        tags::merge(cur, &new)
    })
    .await?;
    Ok(w::TagResourceResponse {})
}

pub async fn untag_resource(
    st: &AppState,
    ctx: &RequestContext,
    req: w::UntagResourceRequest,
) -> Result<w::UntagResourceResponse, ApiError> {
    let keys = req.tag_keys.clone().unwrap_or_default();
    if keys.is_empty() {
        return Err(EcsError::invalid("tagKeys must contain at least one key.").into());
    }
    retag(st, ctx, req.resource_arn.as_deref(), |cur| {
        Ok(tags::remove(cur, &keys))
    })
    .await?;
    Ok(w::UntagResourceResponse {})
}

pub async fn list_tags_for_resource(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ListTagsForResourceRequest,
) -> Result<w::ListTagsForResourceResponse, ApiError> {
    let tags = match find(st, ctx, req.resource_arn.as_deref()).await? {
        Taggable::Cluster(_, c) => c.value.tags,
        Taggable::TaskDefinition(_, d) => d.value.tags,
        Taggable::Service(_, s) => s.value.tags,
    };
    Ok(w::ListTagsForResourceResponse { tags: Some(tags) })
}
