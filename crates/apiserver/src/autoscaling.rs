//! Application Auto Scaling (AWS JSON 1.1, `AnyScaleFrontendService.*`)
//! for ECS services: decode, call `berth_control::scaling`, encode. The
//! rules are `berth_domain::scaling`'s; policies act through the CloudWatch
//! alarms the evaluator judges.

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::scaling::{self, ScalingFailure};
use berth_domain::scaling::{self as rules, AasError};
use berth_wire::application_autoscaling as w;

json_operations! { "Application Auto Scaling", w::OPERATIONS;
    "RegisterScalableTarget" => register_scalable_target,
    "DescribeScalableTargets" => describe_scalable_targets,
    "DeregisterScalableTarget" => deregister_scalable_target,
    "PutScalingPolicy" => put_scaling_policy,
    "DescribeScalingPolicies" => describe_scaling_policies,
    "DeleteScalingPolicy" => delete_scaling_policy,
    "DescribeScalingActivities" => describe_scaling_activities,
    "PutScheduledAction" => put_scheduled_action,
    "DescribeScheduledActions" => describe_scheduled_actions,
    "DeleteScheduledAction" => delete_scheduled_action,
    "TagResource" => tag_resource,
    "UntagResource" => untag_resource,
    "ListTagsForResource" => list_tags_for_resource,
}

type Out<T> = Result<T, ApiError>;

impl From<ScalingFailure> for ApiError {
    fn from(e: ScalingFailure) -> Self {
        match e {
            ScalingFailure::Aas(e) => ApiError::Aas(e),
            ScalingFailure::Control(e) => e.into(),
        }
    }
}

fn namespace_only(ns: Option<&str>) -> Result<(), AasError> {
    match ns {
        None => Err(AasError::validation("ServiceNamespace is required")),
        Some(n) if !w::enums::SERVICE_NAMESPACE.contains(&n) => Err(AasError::validation(format!(
            "1 validation error detected: Value '{n}' at 'serviceNamespace' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            w::enums::SERVICE_NAMESPACE.join(", ")
        ))),
        Some(_) => Ok(()),
    }
}

/// Whether a describe request's filters (names, resource id, dimension)
/// keep an item named `name` of `resource`.
fn kept(
    names: Option<&Vec<String>>,
    name: &str,
    resource_filter: Option<&String>,
    resource: &str,
    dimension: Option<&str>,
) -> bool {
    names.is_none_or(|n| n.iter().any(|x| x == name))
        && resource_filter.is_none_or(|r| r == resource)
        && dimension.is_none_or(|d| d == rules::DIMENSION)
}

/// A page of `items` from NextToken (how many earlier pages gave).
fn paged<T: Clone>(
    listing: &str,
    items: &[T],
    token: Option<&str>,
    max: Option<i32>,
) -> Result<(Vec<T>, Option<String>), AasError> {
    let size = match max {
        None => 50,
        Some(n) if (1..=50).contains(&n) => n as usize,
        Some(n) => {
            return Err(AasError::validation(format!(
                "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 50"
            )))
        }
    };
    berth_domain::paging::by_offset(listing, items, token, size)
        .ok_or_else(|| AasError::new("InvalidNextTokenException", "Invalid token"))
}

async fn register_scalable_target(
    st: &AppState,
    ctx: &RequestContext,
    input: w::RegisterScalableTargetRequest,
) -> Out<w::RegisterScalableTargetResponse> {
    let t = scaling::register(st, &ctx.scope, &input).await?;
    Ok(w::RegisterScalableTargetResponse {
        scalable_target_arn: Some(t.arn),
    })
}

async fn describe_scalable_targets(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeScalableTargetsRequest,
) -> Out<w::DescribeScalableTargetsResponse> {
    namespace_only(input.service_namespace.as_deref())?;
    let mine = input.service_namespace.as_deref() == Some(rules::NAMESPACE);
    let all: Vec<w::ScalableTarget> = scaling::targets(st, &ctx.scope)
        .await?
        .into_iter()
        .filter(|_| mine)
        .filter(|t| {
            input
                .resource_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&t.resource_id))
        })
        .filter(|_| {
            input
                .scalable_dimension
                .as_deref()
                .is_none_or(|d| d == rules::DIMENSION)
        })
        .map(|t| t.view())
        .collect();
    let (page, next) = paged(
        "DescribeScalableTargets",
        &all,
        input.next_token.as_deref(),
        input.max_results,
    )?;
    Ok(w::DescribeScalableTargetsResponse {
        scalable_targets: Some(page),
        next_token: next,
    })
}

async fn deregister_scalable_target(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DeregisterScalableTargetRequest,
) -> Out<w::DeregisterScalableTargetResponse> {
    let resource = rules::check_key(
        input.service_namespace.as_deref(),
        input.resource_id.as_deref(),
        input.scalable_dimension.as_deref(),
    )?;
    scaling::deregister(st, &ctx.scope, &resource).await?;
    Ok(w::DeregisterScalableTargetResponse {})
}

async fn put_scaling_policy(
    st: &AppState,
    ctx: &RequestContext,
    input: w::PutScalingPolicyRequest,
) -> Out<w::PutScalingPolicyResponse> {
    let p = scaling::put_policy(st, &ctx.scope, &input, st.config.target_tracking_period).await?;
    let alarms = p.view().alarms;
    Ok(w::PutScalingPolicyResponse {
        policy_arn: Some(p.arn),
        alarms,
    })
}

async fn describe_scaling_policies(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeScalingPoliciesRequest,
) -> Out<w::DescribeScalingPoliciesResponse> {
    namespace_only(input.service_namespace.as_deref())?;
    let mine = input.service_namespace.as_deref() == Some(rules::NAMESPACE);
    let all: Vec<w::ScalingPolicy> = scaling::policies(st, &ctx.scope)
        .await?
        .into_iter()
        .filter(|_| mine)
        .filter(|p| {
            kept(
                input.policy_names.as_ref(),
                &p.name,
                input.resource_id.as_ref(),
                &p.resource_id,
                input.scalable_dimension.as_deref(),
            )
        })
        .map(|p| p.view())
        .collect();
    let (page, next) = paged(
        "DescribeScalingPolicies",
        &all,
        input.next_token.as_deref(),
        input.max_results,
    )?;
    Ok(w::DescribeScalingPoliciesResponse {
        scaling_policies: Some(page),
        next_token: next,
    })
}

async fn delete_scaling_policy(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DeleteScalingPolicyRequest,
) -> Out<w::DeleteScalingPolicyResponse> {
    let resource = rules::check_key(
        input.service_namespace.as_deref(),
        input.resource_id.as_deref(),
        input.scalable_dimension.as_deref(),
    )?;
    let name = input
        .policy_name
        .ok_or_else(|| AasError::validation("PolicyName is required"))?;
    scaling::delete_policy(st, &ctx.scope, &resource, &name).await?;
    Ok(w::DeleteScalingPolicyResponse {})
}

async fn describe_scaling_activities(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeScalingActivitiesRequest,
) -> Out<w::DescribeScalingActivitiesResponse> {
    namespace_only(input.service_namespace.as_deref())?;
    let mine = input.service_namespace.as_deref() == Some(rules::NAMESPACE);
    let include_not_scaled = input.include_not_scaled_activities.unwrap_or(false);
    let all: Vec<w::ScalingActivity> =
        scaling::activities(st, &ctx.scope, input.resource_id.as_deref())
            .await?
            .into_iter()
            .filter(|_| mine)
            .filter(|_| {
                input
                    .scalable_dimension
                    .as_deref()
                    .is_none_or(|d| d == rules::DIMENSION)
            })
            .filter(|a| include_not_scaled || a.not_scaled.is_none())
            .map(|a| a.view())
            .collect();
    let (page, next) = paged(
        "DescribeScalingActivities",
        &all,
        input.next_token.as_deref(),
        input.max_results,
    )?;
    Ok(w::DescribeScalingActivitiesResponse {
        scaling_activities: Some(page),
        next_token: next,
    })
}

/// The registered target a scalable target ARN names.
async fn target_of_arn(
    st: &AppState,
    ctx: &RequestContext,
    arn: Option<&str>,
) -> Result<rules::TargetRecord, ApiError> {
    let arn = arn.ok_or_else(|| AasError::validation("ResourceARN is required"))?;
    scaling::targets(st, &ctx.scope)
        .await?
        .into_iter()
        .find(|t| t.arn == arn)
        .ok_or_else(|| {
            AasError::new(
                "ResourceNotFoundException",
                format!("No scalable target found for ARN {arn}"),
            )
            .into()
        })
}

async fn tag_resource(
    st: &AppState,
    ctx: &RequestContext,
    input: w::TagResourceRequest,
) -> Out<w::TagResourceResponse> {
    let t = target_of_arn(st, ctx, input.resource_arn.as_deref()).await?;
    let given = input
        .tags
        .ok_or_else(|| AasError::validation("Tags is required"))?;
    scaling::change_tags(st, &ctx.scope, &t.resource_id, |tags| {
        tags.extend(given.clone());
    })
    .await?;
    Ok(w::TagResourceResponse {})
}

async fn untag_resource(
    st: &AppState,
    ctx: &RequestContext,
    input: w::UntagResourceRequest,
) -> Out<w::UntagResourceResponse> {
    let t = target_of_arn(st, ctx, input.resource_arn.as_deref()).await?;
    let keys = input
        .tag_keys
        .ok_or_else(|| AasError::validation("TagKeys is required"))?;
    scaling::change_tags(st, &ctx.scope, &t.resource_id, |tags| {
        tags.retain(|k, _| !keys.contains(k));
    })
    .await?;
    Ok(w::UntagResourceResponse {})
}

async fn list_tags_for_resource(
    st: &AppState,
    ctx: &RequestContext,
    input: w::ListTagsForResourceRequest,
) -> Out<w::ListTagsForResourceResponse> {
    let t = target_of_arn(st, ctx, input.resource_arn.as_deref()).await?;
    Ok(w::ListTagsForResourceResponse { tags: Some(t.tags) })
}

async fn put_scheduled_action(
    st: &AppState,
    ctx: &RequestContext,
    input: w::PutScheduledActionRequest,
) -> Out<w::PutScheduledActionResponse> {
    scaling::put_scheduled(st, &ctx.scope, &input).await?;
    Ok(w::PutScheduledActionResponse {})
}

async fn describe_scheduled_actions(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeScheduledActionsRequest,
) -> Out<w::DescribeScheduledActionsResponse> {
    namespace_only(input.service_namespace.as_deref())?;
    let mine = input.service_namespace.as_deref() == Some(rules::NAMESPACE);
    let all: Vec<w::ScheduledAction> = scaling::scheduled(st, &ctx.scope)
        .await?
        .into_iter()
        .filter(|_| mine)
        .filter(|a| {
            kept(
                input.scheduled_action_names.as_ref(),
                &a.name,
                input.resource_id.as_ref(),
                &a.resource_id,
                input.scalable_dimension.as_deref(),
            )
        })
        .map(|a| a.view())
        .collect();
    let (page, next) = paged(
        "DescribeScheduledActions",
        &all,
        input.next_token.as_deref(),
        input.max_results,
    )?;
    Ok(w::DescribeScheduledActionsResponse {
        scheduled_actions: Some(page),
        next_token: next,
    })
}

async fn delete_scheduled_action(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DeleteScheduledActionRequest,
) -> Out<w::DeleteScheduledActionResponse> {
    let resource = rules::check_key(
        input.service_namespace.as_deref(),
        input.resource_id.as_deref(),
        input.scalable_dimension.as_deref(),
    )?;
    let name = input
        .scheduled_action_name
        .ok_or_else(|| AasError::validation("ScheduledActionName is required"))?;
    scaling::delete_scheduled(st, &ctx.scope, &resource, &name).await?;
    Ok(w::DeleteScheduledActionResponse {})
}
