//! Listeners and their rules. A listener and its rules are one record, and
//! every write of one bumps the routing key, so the checks on target
//! groups (they exist; one load balancer each) hold when it commits.

use super::{
    all_listeners, group_users, listener, load_balancer, new_id, page, routing_revision, swap,
    target_group,
};
use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::cas::Attempt;
use berth_domain::elb::{self, rules, ElbArn, ElbCode, ElbError, Listener, Rule};
use berth_domain::Scope;
use berth_store::keys::ElbKeys;
use berth_store::typed::{self, Versioned};
use berth_store::{Compare, Op, Txn};
use berth_wire::elbv2 as w;

const MAX_LISTENERS: usize = 50;
const MAX_RULES: usize = 100;

fn check_protocol(protocol: &str) -> Result<(), ElbError> {
    match protocol {
        "HTTP" => Ok(()),
        "HTTPS" => Err(ElbError::new(
            ElbCode::UnsupportedProtocol,
            "Protocol 'HTTPS' is not supported: Berth's load balancer does not terminate TLS yet",
        )),
        other => Err(ElbError::new(
            ElbCode::UnsupportedProtocol,
            format!("Protocol '{other}' is not supported by an application load balancer"),
        )),
    }
}

/// Normalises actions and checks the target groups they forward to: each
/// exists and no other load balancer uses it. Returns the actions and the
/// compares that keep those target groups as read.
async fn checked_actions(
    st: &AppState,
    scope: &Scope,
    lb_id: &str,
    actions: &[w::Action],
    listeners: &[Versioned<Listener>],
) -> Result<(Vec<w::Action>, Vec<Compare>), ApiError> {
    let actions = rules::normalize_actions(actions)?;
    let others: Vec<Versioned<Listener>> = listeners
        .iter()
        .filter(|l| l.value.lb_id != lb_id)
        .cloned()
        .collect();
    let users = group_users(scope, &others);
    let mut compares = vec![];
    for arn in actions.iter().flat_map(rules::forwarded_groups) {
        let tg = target_group(st, scope, &arn).await?;
        if users.contains_key(&arn) {
            return Err(ElbError::new(
                ElbCode::TargetGroupAssociationLimit,
                format!("The following target groups cannot be associated with more than one load balancer: {arn}"),
            )
            .into());
        }
        compares.push(typed::unchanged(
            &scope.target_group(&tg.value.name),
            tg.mod_revision,
        ));
    }
    Ok((actions, compares))
}

/// The transaction that writes a listener, comparing what it was checked against.
fn write(
    scope: &Scope,
    routing: i64,
    old_rev: i64,
    next: &Listener,
    mut compares: Vec<Compare>,
    mut ops: Vec<Op>,
) -> Txn {
    let key = scope.listener(&next.lb_id, &next.id);
    compares.push(typed::unchanged(&key, old_rev));
    compares.push(typed::unchanged(&scope.elb_routing(), routing));
    ops.push(typed::put(&key, next));
    ops.push(Op::put(scope.elb_routing(), vec![]));
    Txn::when(compares, ops)
}

pub async fn create_listener(
    st: &AppState,
    ctx: &RequestContext,
    req: w::CreateListenerInput,
) -> Result<w::CreateListenerOutput, ApiError> {
    let lb_arn = super::required(&req.load_balancer_arn, "loadBalancerArn")?;
    let protocol = req.protocol.clone().unwrap_or_else(|| "HTTP".into());
    check_protocol(&protocol)?;
    let port = req
        .port
        .ok_or_else(|| ElbError::validation("A listener must have a port"))?;
    elb::validate_port(port, "port")?;
    let tags = req.tags.clone().unwrap_or_default();
    elb::validate_tags(&tags)?;
    let scope = &ctx.scope;
    let (req, protocol, tags) = (&req, &protocol, &tags);
    let listener = swap(st, || async move {
        let lb = load_balancer(st, scope, lb_arn).await?;
        let (routing, listeners) = all_listeners(st, scope).await?;
        let (actions, mut compares) = checked_actions(
            st,
            scope,
            &lb.value.id,
            req.default_actions.as_deref().unwrap_or_default(),
            &listeners,
        )
        .await?;
        if let Some(taken) = listeners.iter().find(|l| l.value.port == port) {
            let ours = taken.value.lb_id == lb.value.id;
            if ours && taken.value.default_actions == actions && &taken.value.protocol == protocol {
                return Ok(Attempt::Done(taken.value.clone()));
            }
            let message = if ours {
                "A listener already exists on this port for this load balancer".to_string()
            } else {
                format!(
                    "Port {port} is already used by load balancer '{}': Berth's load balancers share this host's ports",
                    taken.value.lb_name
                )
            };
            return Err(ElbError::new(ElbCode::DuplicateListener, message).into());
        }
        if listeners.iter().filter(|l| l.value.lb_id == lb.value.id).count() >= MAX_LISTENERS {
            return Err(ElbError::new(
                ElbCode::TooManyListeners,
                format!("A load balancer can have at most {MAX_LISTENERS} listeners"),
            )
            .into());
        }
        let next = Listener {
            id: new_id(),
            lb_name: lb.value.name.clone(),
            lb_id: lb.value.id.clone(),
            port,
            protocol: protocol.clone(),
            default_actions: actions,
            default_rule_id: new_id(),
            rules: vec![],
            tags: tags.clone(),
        };
        let port_key = scope.listener_port(port);
        compares.push(typed::unchanged(&port_key, 0));
        compares.push(typed::unchanged(&scope.load_balancer(&lb.value.name), lb.mod_revision));
        let ops = vec![Op::put(&port_key, scope.listener(&next.lb_id, &next.id).into_bytes())];
        Ok(Attempt::Write(write(scope, routing, 0, &next, compares, ops), next))
    })
    .await?;
    Ok(w::CreateListenerOutput {
        listeners: Some(vec![listener.to_wire(scope)]),
    })
}

pub async fn describe_listeners(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeListenersInput,
) -> Result<w::DescribeListenersOutput, ApiError> {
    let scope = &ctx.scope;
    let arns = req.listener_arns.clone().unwrap_or_default();
    let found: Vec<Listener> = if !arns.is_empty() {
        let mut out = vec![];
        for arn in &arns {
            out.push(listener(st, scope, arn).await?.1.value);
        }
        out
    } else if let Some(lb_arn) = &req.load_balancer_arn {
        let lb = load_balancer(st, scope, lb_arn).await?;
        typed::list::<Listener>(&*st.store, &scope.listeners_of(&lb.value.id))
            .await?
            .into_iter()
            .map(|(_, l)| l.value)
            .collect()
    } else {
        return Err(ElbError::validation(
            "You must specify either listener ARNs or a load balancer ARN",
        )
        .into());
    };
    let keyed = found.into_iter().map(|l| (l.arn(scope), l)).collect();
    let (items, next) = page(keyed, req.marker.as_deref(), req.page_size)?;
    Ok(w::DescribeListenersOutput {
        listeners: Some(items.iter().map(|l| l.to_wire(scope)).collect()),
        next_marker: next,
    })
}

pub async fn modify_listener(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ModifyListenerInput,
) -> Result<w::ModifyListenerOutput, ApiError> {
    let arn = super::required(&req.listener_arn, "listenerArn")?;
    if let Some(p) = &req.protocol {
        check_protocol(p)?;
    }
    if let Some(port) = req.port {
        elb::validate_port(port, "port")?;
    }
    let scope = &ctx.scope;
    let req = &req;
    let listener = swap(st, || async move {
        let (_, current) = listener(st, scope, arn).await?;
        let (routing, listeners) = all_listeners(st, scope).await?;
        let mut next = current.value.clone();
        let mut compares = vec![];
        let mut ops = vec![];
        if let Some(actions) = &req.default_actions {
            let (actions, c) = checked_actions(st, scope, &next.lb_id, actions, &listeners).await?;
            next.default_actions = actions;
            compares.extend(c);
        }
        if let Some(p) = &req.protocol {
            next.protocol = p.clone();
        }
        if let Some(port) = req.port.filter(|p| *p != next.port) {
            if listeners.iter().any(|l| l.value.port == port) {
                return Err(ElbError::new(
                    ElbCode::DuplicateListener,
                    format!("A listener already exists on port {port}"),
                )
                .into());
            }
            let new_key = scope.listener_port(port);
            compares.push(typed::unchanged(&new_key, 0));
            ops.push(Op::delete(scope.listener_port(next.port)));
            ops.push(Op::put(
                &new_key,
                scope.listener(&next.lb_id, &next.id).into_bytes(),
            ));
            next.port = port;
        }
        Ok(Attempt::Write(
            write(scope, routing, current.mod_revision, &next, compares, ops),
            next,
        ))
    })
    .await?;
    Ok(w::ModifyListenerOutput {
        listeners: Some(vec![listener.to_wire(scope)]),
    })
}

pub async fn delete_listener(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DeleteListenerInput,
) -> Result<w::DeleteListenerOutput, ApiError> {
    let arn = super::required(&req.listener_arn, "listenerArn")?;
    let scope = &ctx.scope;
    swap(st, || async move {
        let (key, current) = listener(st, scope, arn).await?;
        let txn = Txn::when(
            vec![typed::unchanged(&key, current.mod_revision)],
            vec![
                Op::delete(&key),
                Op::delete(scope.listener_port(current.value.port)),
                Op::put(scope.elb_routing(), vec![]),
            ],
        );
        Ok(Attempt::Write(txn, ()))
    })
    .await?;
    Ok(w::DeleteListenerOutput::default())
}

/// A rule by its ARN: the listener holding it and the rule's id.
async fn rule(
    st: &AppState,
    scope: &Scope,
    arn: &str,
) -> Result<(Versioned<Listener>, String), ApiError> {
    if let Some(ElbArn::Rule {
        lb_name,
        lb_id,
        listener: lid,
        id,
    }) = ElbArn::parse(scope, arn)
    {
        let larn = ElbArn::Listener {
            lb_name,
            lb_id,
            id: lid,
        }
        .to_string(scope);
        if let Ok((_, l)) = listener(st, scope, &larn).await {
            if l.value.default_rule_id == id || l.value.rules.iter().any(|r| r.id == id) {
                return Ok((l, id));
            }
        }
    }
    Err(ElbError::rule_not_found().into())
}

fn check_priority(priority: i32) -> Result<(), ElbError> {
    if (1..=50000).contains(&priority) {
        Ok(())
    } else {
        Err(ElbError::validation(format!(
            "1 validation error detected: Value '{priority}' at 'priority' failed to satisfy constraint: Member must have value between 1 and 50000"
        )))
    }
}

fn priority_in_use(priority: i32) -> ApiError {
    ElbError::new(
        ElbCode::PriorityInUse,
        format!("Priority '{priority}' is currently in use"),
    )
    .into()
}

fn one_rule(l: &Listener, scope: &Scope, id: &str) -> Vec<w::Rule> {
    l.rules_to_wire(scope)
        .into_iter()
        .filter(|r| r.rule_arn.as_deref() == Some(l.rule_arn(scope, id).as_str()))
        .collect()
}

pub async fn create_rule(
    st: &AppState,
    ctx: &RequestContext,
    req: w::CreateRuleInput,
) -> Result<w::CreateRuleOutput, ApiError> {
    let arn = super::required(&req.listener_arn, "listenerArn")?;
    let priority = req
        .priority
        .ok_or_else(|| ElbError::validation("A rule must have a priority"))?;
    check_priority(priority)?;
    let conditions = rules::normalize_conditions(req.conditions.as_deref().unwrap_or_default())?;
    let tags = req.tags.clone().unwrap_or_default();
    elb::validate_tags(&tags)?;
    let scope = &ctx.scope;
    let (req, conditions, tags) = (&req, &conditions, &tags);
    let (l, id) = swap(st, || async move {
        let (_, current) = listener(st, scope, arn).await?;
        let (routing, listeners) = all_listeners(st, scope).await?;
        if current.value.rules.iter().any(|r| r.priority == priority) {
            return Err(priority_in_use(priority));
        }
        if current.value.rules.len() >= MAX_RULES {
            return Err(ElbError::new(
                ElbCode::TooManyRules,
                format!("A listener can have at most {MAX_RULES} rules"),
            )
            .into());
        }
        let (actions, compares) = checked_actions(
            st,
            scope,
            &current.value.lb_id,
            req.actions.as_deref().unwrap_or_default(),
            &listeners,
        )
        .await?;
        let mut next = current.value.clone();
        let id = new_id();
        next.rules.push(Rule {
            id: id.clone(),
            priority,
            conditions: conditions.clone(),
            actions,
            tags: tags.clone(),
        });
        let txn = write(
            scope,
            routing,
            current.mod_revision,
            &next,
            compares,
            vec![],
        );
        Ok(Attempt::Write(txn, (next, id)))
    })
    .await?;
    Ok(w::CreateRuleOutput {
        rules: Some(one_rule(&l, scope, &id)),
    })
}

pub async fn describe_rules(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeRulesInput,
) -> Result<w::DescribeRulesOutput, ApiError> {
    let scope = &ctx.scope;
    let arns = req.rule_arns.clone().unwrap_or_default();
    let found: Vec<w::Rule> = if !arns.is_empty() {
        let mut out = vec![];
        for arn in &arns {
            let (l, id) = rule(st, scope, arn).await?;
            out.extend(one_rule(&l.value, scope, &id));
        }
        out
    } else if let Some(larn) = &req.listener_arn {
        listener(st, scope, larn)
            .await?
            .1
            .value
            .rules_to_wire(scope)
    } else {
        return Err(
            ElbError::validation("You must specify either rule ARNs or a listener ARN").into(),
        );
    };
    // Rules page in the order DescribeRules gives them (by priority).
    let keyed = found
        .into_iter()
        .enumerate()
        .map(|(i, r)| (format!("{i:06}"), r))
        .collect();
    let (items, next) = page(keyed, req.marker.as_deref(), req.page_size)?;
    Ok(w::DescribeRulesOutput {
        rules: Some(items),
        next_marker: next,
    })
}

pub async fn modify_rule(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ModifyRuleInput,
) -> Result<w::ModifyRuleOutput, ApiError> {
    let arn = super::required(&req.rule_arn, "ruleArn")?;
    let conditions = req
        .conditions
        .as_deref()
        .map(rules::normalize_conditions)
        .transpose()?;
    let scope = &ctx.scope;
    let (req, conditions) = (&req, &conditions);
    let (l, id) = swap(st, || async move {
        let (current, id) = rule(st, scope, arn).await?;
        let (routing, listeners) = all_listeners(st, scope).await?;
        let mut next = current.value.clone();
        let mut compares = vec![];
        let actions = match &req.actions {
            Some(a) => {
                let (a, c) = checked_actions(st, scope, &next.lb_id, a, &listeners).await?;
                compares = c;
                Some(a)
            }
            None => None,
        };
        if id == next.default_rule_id {
            if conditions.is_some() {
                return Err(ElbError::new(
                    ElbCode::OperationNotPermitted,
                    "The default rule cannot have conditions",
                )
                .into());
            }
            if let Some(a) = actions {
                next.default_actions = a;
            }
        } else if let Some(r) = next.rules.iter_mut().find(|r| r.id == id) {
            if let Some(c) = conditions {
                r.conditions = c.clone();
            }
            if let Some(a) = actions {
                r.actions = a;
            }
        }
        let txn = write(
            scope,
            routing,
            current.mod_revision,
            &next,
            compares,
            vec![],
        );
        Ok(Attempt::Write(txn, (next, id)))
    })
    .await?;
    Ok(w::ModifyRuleOutput {
        rules: Some(one_rule(&l, scope, &id)),
    })
}

pub async fn delete_rule(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DeleteRuleInput,
) -> Result<w::DeleteRuleOutput, ApiError> {
    let arn = super::required(&req.rule_arn, "ruleArn")?;
    let scope = &ctx.scope;
    swap(st, || async move {
        let (current, id) = rule(st, scope, arn).await?;
        if id == current.value.default_rule_id {
            return Err(ElbError::new(
                ElbCode::OperationNotPermitted,
                "The default rule cannot be deleted",
            )
            .into());
        }
        let routing = routing_revision(st, scope).await?;
        let mut next = current.value.clone();
        next.rules.retain(|r| r.id != id);
        let txn = write(scope, routing, current.mod_revision, &next, vec![], vec![]);
        Ok(Attempt::Write(txn, ()))
    })
    .await?;
    Ok(w::DeleteRuleOutput::default())
}

pub async fn set_rule_priorities(
    st: &AppState,
    ctx: &RequestContext,
    req: w::SetRulePrioritiesInput,
) -> Result<w::SetRulePrioritiesOutput, ApiError> {
    let pairs = req.rule_priorities.clone().unwrap_or_default();
    if pairs.is_empty() {
        return Err(ElbError::validation("At least one rule priority must be specified").into());
    }
    for p in &pairs {
        check_priority(p.priority.unwrap_or_default())?;
    }
    let scope = &ctx.scope;
    let pairs = &pairs;
    let (l, ids) = swap(st, || async move {
        let mut holder: Option<Versioned<Listener>> = None;
        let mut ids = vec![];
        for p in pairs {
            let (l, id) = rule(st, scope, p.rule_arn.as_deref().unwrap_or_default()).await?;
            if holder.as_ref().is_some_and(|h| h.value.id != l.value.id) {
                return Err(ElbError::validation(
                    "The rules of one SetRulePriorities call must belong to one listener",
                )
                .into());
            }
            if id == l.value.default_rule_id {
                return Err(ElbError::new(
                    ElbCode::OperationNotPermitted,
                    "The priority of the default rule cannot be set",
                )
                .into());
            }
            ids.push((id, p.priority.unwrap_or_default()));
            holder = Some(l);
        }
        let Some(current) = holder else {
            return Err(ElbError::rule_not_found().into());
        };
        let mut next = current.value.clone();
        for (id, priority) in &ids {
            if let Some(r) = next.rules.iter_mut().find(|r| &r.id == id) {
                r.priority = *priority;
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = next.rules.iter().find(|r| !seen.insert(r.priority)) {
            return Err(priority_in_use(dup.priority));
        }
        let routing = routing_revision(st, scope).await?;
        let txn = write(scope, routing, current.mod_revision, &next, vec![], vec![]);
        Ok(Attempt::Write(txn, (next, ids)))
    })
    .await?;
    Ok(w::SetRulePrioritiesOutput {
        rules: Some(
            ids.iter()
                .flat_map(|(id, _)| one_rule(&l, scope, id))
                .collect(),
        ),
    })
}
