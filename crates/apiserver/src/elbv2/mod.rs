//! ELBv2 operations (awsQuery, `elasticloadbalancing` 2015-12-01): the
//! control plane of Berth's load balancer. Requests are decoded into the
//! model's generated shapes, checked with `berth_domain::elb`'s rules and
//! written with compare-and-swap; the data path (`berth-lb`) reads what is
//! written here and reports target health back.

mod listeners;
mod load_balancers;
mod tags;
mod target_groups;
pub(crate) mod targets;

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::cas::Attempt;
use berth_domain::elb::ElbError;
use berth_wire::elbv2::MODEL;
use berth_wire::query::QueryParams;

pub(crate) use berth_control::elb::{
    all_listeners, by_arn, group_users, listener, load_balancer, routing_revision, target_group,
    update,
};

macro_rules! operations {
    ($($name:literal => $handler:path),* $(,)?) => {
        /// The ELBv2 operations Berth serves.
        pub const IMPLEMENTED: &[&str] = &[$($name),*];

        /// Decodes the form, runs the handler, encodes the XML response.
        pub async fn dispatch(st: &AppState, ctx: &RequestContext, action: &str, params: &QueryParams) -> Result<Vec<u8>, ApiError> {
            match action {
                $($name => {
                    let input = MODEL.decode(action, params)?;
                    let output = $handler(st, ctx, input).await?;
                    Ok(MODEL.respond(action, &output, &ctx.request_id).into_bytes())
                })*
                other if berth_wire::elbv2::OPERATION_SHAPES.iter().any(|(n, _, _)| *n == other) => Err(ApiError::UnknownOperation(format!(
                    "Berth does not implement the ELBv2 action {other} yet; see docs/api-coverage.md."
                ))),
                other => Err(ApiError::UnknownOperation(format!("The action {other} is not valid for this web service."))),
            }
        }
    };
}

operations! {
    "CreateLoadBalancer" => load_balancers::create_load_balancer,
    "DescribeLoadBalancers" => load_balancers::describe_load_balancers,
    "DeleteLoadBalancer" => load_balancers::delete_load_balancer,
    "DescribeLoadBalancerAttributes" => load_balancers::describe_load_balancer_attributes,
    "ModifyLoadBalancerAttributes" => load_balancers::modify_load_balancer_attributes,
    "CreateTargetGroup" => target_groups::create_target_group,
    "DescribeTargetGroups" => target_groups::describe_target_groups,
    "ModifyTargetGroup" => target_groups::modify_target_group,
    "DeleteTargetGroup" => target_groups::delete_target_group,
    "DescribeTargetGroupAttributes" => target_groups::describe_target_group_attributes,
    "ModifyTargetGroupAttributes" => target_groups::modify_target_group_attributes,
    "CreateListener" => listeners::create_listener,
    "DescribeListeners" => listeners::describe_listeners,
    "ModifyListener" => listeners::modify_listener,
    "DeleteListener" => listeners::delete_listener,
    "CreateRule" => listeners::create_rule,
    "DescribeRules" => listeners::describe_rules,
    "ModifyRule" => listeners::modify_rule,
    "DeleteRule" => listeners::delete_rule,
    "SetRulePriorities" => listeners::set_rule_priorities,
    "RegisterTargets" => targets::register_targets,
    "DeregisterTargets" => targets::deregister_targets,
    "DescribeTargetHealth" => targets::describe_target_health,
    "AddTags" => tags::add_tags,
    "RemoveTags" => tags::remove_tags,
    "DescribeTags" => tags::describe_tags,
}

/// A new resource id: 16 hex digits, as ELBv2's ARNs end.
pub(crate) fn new_id() -> String {
    berth_domain::elb::short_id(&uuid::Uuid::new_v4().simple().to_string())
}

/// One page of a listing sorted by name: `Marker` is the last name given.
pub(crate) fn page<T>(
    items: Vec<(String, T)>,
    marker: Option<&str>,
    page_size: Option<i32>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let size = page_size.unwrap_or(400);
    if !(1..=400).contains(&size) {
        return Err(ElbError::validation(format!(
            "1 validation error detected: Value '{size}' at 'pageSize' failed to satisfy constraint: Member must have value between 1 and 400"
        ))
        .into());
    }
    let rest: Vec<(String, T)> = items
        .into_iter()
        .filter(|(k, _)| marker.is_none_or(|m| k.as_str() > m))
        .collect();
    let more = rest.len() > size as usize;
    let page: Vec<(String, T)> = rest.into_iter().take(size as usize).collect();
    let next = more.then(|| page.last().map(|(k, _)| k.clone())).flatten();
    Ok((page.into_iter().map(|(_, v)| v).collect(), next))
}

/// Name-value pairs of a Modify*Attributes request.
pub(crate) fn attribute_changes(
    attrs: Option<Vec<(Option<String>, Option<String>)>>,
) -> Result<Vec<(String, String)>, ApiError> {
    let attrs = attrs.unwrap_or_default();
    if attrs.is_empty() {
        return Err(ElbError::validation("At least one attribute must be specified").into());
    }
    Ok(attrs
        .into_iter()
        .map(|(k, v)| (k.unwrap_or_default(), v.unwrap_or_default()))
        .collect())
}

/// Attributes as the wire lists them.
pub(crate) fn attribute_pairs(
    attrs: &std::collections::BTreeMap<String, String>,
) -> impl Iterator<Item = (String, String)> + '_ {
    attrs.iter().map(|(k, v)| (k.clone(), v.clone()))
}

/// A string parameter that must be there.
pub(crate) fn required<'a>(value: &'a Option<String>, field: &str) -> Result<&'a str, ApiError> {
    value.as_deref().filter(|v| !v.is_empty()).ok_or_else(|| {
        ElbError::validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))
        .into()
    })
}

/// The cluster manager's ELBv2 compare-and-swap loop with the adapter's
/// error type (PriorRequestNotComplete when every try loses).
pub(crate) async fn swap<T, Fut>(st: &AppState, attempt: impl FnMut() -> Fut) -> Result<T, ApiError>
where
    Fut: std::future::Future<Output = Result<Attempt<T>, ApiError>>,
{
    berth_control::elb::swap(st, attempt).await
}
