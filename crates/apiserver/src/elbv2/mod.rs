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

use crate::ecs::{retry_swap, Attempt};
use crate::{context::RequestContext, error::ApiError, AppState};
use berth_domain::elb::{ElbArn, ElbCode, ElbError, Listener, LoadBalancer, TargetGroup};
use berth_domain::Scope;
use berth_store::keys::ElbKeys;
use berth_store::typed::{self, Versioned};
use berth_store::Txn;
use berth_wire::elbv2::MODEL;
use berth_wire::query::QueryParams;
use std::future::Future;

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

/// Runs a read-modify-write until it applies; ELBv2 calls losing every
/// race PriorRequestNotComplete.
pub(crate) async fn swap<T, Fut>(st: &AppState, attempt: impl FnMut() -> Fut) -> Result<T, ApiError>
where
    Fut: Future<Output = Result<Attempt<T>, ApiError>>,
{
    retry_swap(st, attempt).await?.ok_or_else(|| {
        ElbError::new(
            ElbCode::PriorRequestNotComplete,
            "A previous request on this resource has not completed; try again.",
        )
        .into()
    })
}

/// A new resource id: 16 hex digits, as ELBv2's ARNs end.
pub(crate) fn new_id() -> String {
    berth_domain::elb::short_id(&uuid::Uuid::new_v4().simple().to_string())
}

/// A record the API finds by its ARN and changes in place: a load
/// balancer or a target group.
pub(crate) trait ByArn:
    Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync
{
    /// The record's key and id, if `arn` names one of this kind.
    fn locate(scope: &Scope, arn: &str) -> Option<(String, String)>;
    fn id(&self) -> &str;
    fn not_found() -> ElbError;
}

impl ByArn for LoadBalancer {
    fn locate(scope: &Scope, arn: &str) -> Option<(String, String)> {
        match ElbArn::parse(scope, arn)? {
            ElbArn::LoadBalancer { name, id } => Some((scope.load_balancer(&name), id)),
            _ => None,
        }
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn not_found() -> ElbError {
        ElbError::lb_not_found()
    }
}

impl ByArn for TargetGroup {
    fn locate(scope: &Scope, arn: &str) -> Option<(String, String)> {
        match ElbArn::parse(scope, arn)? {
            ElbArn::TargetGroup { name, id } => Some((scope.target_group(&name), id)),
            _ => None,
        }
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn not_found() -> ElbError {
        ElbError::tg_not_found()
    }
}

/// The record `arn` names, with its key; a record of that name with
/// another id (deleted and created again) is not it.
async fn by_arn<T: ByArn>(
    st: &AppState,
    scope: &Scope,
    arn: &str,
) -> Result<(String, Versioned<T>), ApiError> {
    if let Some((key, id)) = T::locate(scope, arn) {
        if let Some(record) = typed::get::<T>(&*st.store, &key).await? {
            if record.value.id() == id {
                return Ok((key, record));
            }
        }
    }
    Err(T::not_found().into())
}

pub(crate) async fn load_balancer(
    st: &AppState,
    scope: &Scope,
    arn: &str,
) -> Result<Versioned<LoadBalancer>, ApiError> {
    Ok(by_arn(st, scope, arn).await?.1)
}

pub(crate) async fn target_group(
    st: &AppState,
    scope: &Scope,
    arn: &str,
) -> Result<Versioned<TargetGroup>, ApiError> {
    Ok(by_arn(st, scope, arn).await?.1)
}

/// Changes a load balancer or target group by compare-and-swap; `change`
/// runs on each try's fresh read.
pub(crate) async fn update<T: ByArn>(
    st: &AppState,
    scope: &Scope,
    arn: &str,
    change: impl Fn(&mut T) -> Result<(), ElbError>,
) -> Result<T, ApiError> {
    let change = &change;
    swap(st, || async move {
        let (key, current) = by_arn::<T>(st, scope, arn).await?;
        let mut next = current.value.clone();
        change(&mut next)?;
        let txn = Txn::when(
            vec![typed::unchanged(&key, current.mod_revision)],
            vec![typed::put(&key, &next)],
        );
        Ok(Attempt::Write(txn, next))
    })
    .await
}

/// A listener by its ARN, with its key.
pub(crate) async fn listener(
    st: &AppState,
    scope: &Scope,
    arn: &str,
) -> Result<(String, Versioned<Listener>), ApiError> {
    if let Some(ElbArn::Listener { lb_id, id, .. }) = ElbArn::parse(scope, arn) {
        let key = scope.listener(&lb_id, &id);
        if let Some(l) = typed::get::<Listener>(&*st.store, &key).await? {
            return Ok((key, l));
        }
    }
    Err(ElbError::listener_not_found().into())
}

/// The routing key's revision (0 before any listener was written).
pub(crate) async fn routing_revision(st: &AppState, scope: &Scope) -> Result<i64, ApiError> {
    Ok(st
        .store
        .get(&scope.elb_routing())
        .await?
        .map_or(0, |kv| kv.mod_revision))
}

/// Every listener of the scope and the routing revision they were read at.
pub(crate) async fn all_listeners(
    st: &AppState,
    scope: &Scope,
) -> Result<(i64, Vec<Versioned<Listener>>), ApiError> {
    let routing = routing_revision(st, scope).await?;
    let listeners = typed::list::<Listener>(&*st.store, &scope.listeners())
        .await?
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    Ok((routing, listeners))
}

/// The load balancers (ARNs) whose listeners forward to each target group (ARN).
pub(crate) fn group_users(
    scope: &Scope,
    listeners: &[Versioned<Listener>],
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for l in listeners {
        let lb = l.value.lb_arn(scope);
        for tg in l.value.target_groups() {
            let users = out.entry(tg).or_default();
            if !users.contains(&lb) {
                users.push(lb.clone());
            }
        }
    }
    out
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
