//! Tags on load balancers, target groups, listeners and rules. Tags live
//! in the record they belong to, so a change is one compare-and-swap.

use super::{by_arn, listener, swap};
use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::cas::Attempt;
use berth_domain::elb::{self, ElbArn, ElbError};
use berth_domain::Scope;
use berth_store::keys::ElbKeys;
use berth_store::{typed, Txn};
use berth_wire::elbv2 as w;

type Change<'a> = &'a (dyn Fn(&[w::Tag]) -> Result<Vec<w::Tag>, ElbError> + Sync);

/// Reads a resource's tags and, with `change`, writes them changed.
async fn tags_of(
    st: &AppState,
    scope: &Scope,
    arn: &str,
    change: Option<Change<'_>>,
) -> Result<Vec<w::Tag>, ApiError> {
    let parsed = ElbArn::parse(scope, arn).ok_or_else(|| {
        ElbError::validation(format!(
            "'{arn}' is not a valid load balancer, target group, listener or rule ARN"
        ))
    })?;
    swap(st, || async {
        // `$($tags)+`: where in the record its tags are.
        macro_rules! update {
            ($key:expr, $record:expr, $($tags:tt)+) => {{
                let (key, mut record) = ($key, $record);
                let Some(change) = change else {
                    return Ok(Attempt::Done(record.value.$($tags)+.clone()));
                };
                let next = change(&record.value.$($tags)+)?;
                let rev = record.mod_revision;
                record.value.$($tags)+ = next.clone();
                let txn = Txn::when(
                    vec![typed::unchanged(&key, rev)],
                    vec![typed::put(&key, &record.value)],
                );
                Ok(Attempt::Write(txn, next))
            }};
        }
        match &parsed {
            ElbArn::LoadBalancer { .. } => {
                let (key, lb) = by_arn::<elb::LoadBalancer>(st, scope, arn).await?;
                update!(key, lb, tags)
            }
            ElbArn::TargetGroup { .. } => {
                let (key, tg) = by_arn::<elb::TargetGroup>(st, scope, arn).await?;
                update!(key, tg, tags)
            }
            ElbArn::Listener { .. } => {
                let (key, l) = listener(st, scope, arn).await?;
                update!(key, l, tags)
            }
            ElbArn::Rule {
                lb_id,
                listener: lid,
                id,
                ..
            } => {
                let key = scope.listener(lb_id, lid);
                let l = typed::get::<elb::Listener>(&*st.store, &key)
                    .await?
                    .ok_or_else(ElbError::rule_not_found)?;
                let Some(i) = l.value.rules.iter().position(|r| &r.id == id) else {
                    // The default rule carries no tags of its own here.
                    if &l.value.default_rule_id == id && change.is_none() {
                        return Ok(Attempt::Done(vec![]));
                    }
                    return Err(ElbError::rule_not_found().into());
                };
                update!(key, l, rules[i].tags)
            }
        }
    })
    .await
}

fn arns(given: &Option<Vec<String>>) -> Result<&[String], ApiError> {
    let arns = given.as_deref().unwrap_or_default();
    if arns.is_empty() || arns.len() > 20 {
        return Err(
            ElbError::validation("Between 1 and 20 resource ARNs must be specified").into(),
        );
    }
    Ok(arns)
}

pub async fn add_tags(
    st: &AppState,
    ctx: &RequestContext,
    req: w::AddTagsInput,
) -> Result<w::AddTagsOutput, ApiError> {
    let new = req.tags.clone().unwrap_or_default();
    if new.is_empty() {
        return Err(ElbError::validation("At least one tag must be specified").into());
    }
    let change = |current: &[w::Tag]| elb::merge_tags(current, &new);
    for arn in arns(&req.resource_arns)? {
        tags_of(st, &ctx.scope, arn, Some(&change)).await?;
    }
    Ok(w::AddTagsOutput::default())
}

pub async fn remove_tags(
    st: &AppState,
    ctx: &RequestContext,
    req: w::RemoveTagsInput,
) -> Result<w::RemoveTagsOutput, ApiError> {
    let keys = req.tag_keys.clone().unwrap_or_default();
    if keys.is_empty() {
        return Err(ElbError::validation("At least one tag key must be specified").into());
    }
    let change = |current: &[w::Tag]| {
        Ok(current
            .iter()
            .filter(|t| !keys.iter().any(|k| Some(k) == t.key.as_ref()))
            .cloned()
            .collect())
    };
    for arn in arns(&req.resource_arns)? {
        tags_of(st, &ctx.scope, arn, Some(&change)).await?;
    }
    Ok(w::RemoveTagsOutput::default())
}

pub async fn describe_tags(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeTagsInput,
) -> Result<w::DescribeTagsOutput, ApiError> {
    let mut out = vec![];
    for arn in arns(&req.resource_arns)? {
        out.push(w::TagDescription {
            resource_arn: Some(arn.clone()),
            tags: Some(tags_of(st, &ctx.scope, arn, None).await?),
        });
    }
    Ok(w::DescribeTagsOutput {
        tag_descriptions: Some(out),
    })
}
