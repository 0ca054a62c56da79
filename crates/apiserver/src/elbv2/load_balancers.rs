//! Load balancers: create, describe, delete, attributes.

use super::{all_listeners, attribute_changes, attribute_pairs, load_balancer, new_id, page, swap};
use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::cas::Attempt;
use berth_domain::elb::{self, attributes, ElbCode, ElbError, LbSubnet, LoadBalancer};
use berth_store::keys::ElbKeys;
use berth_store::{typed, Op, Txn};
use berth_wire::elbv2 as w;

fn subnets(st: &AppState, req: &w::CreateLoadBalancerInput) -> Result<Vec<LbSubnet>, ApiError> {
    // Fixed addresses per subnet belong to network load balancers; an
    // application load balancer that took them would not be at them.
    for m in req.subnet_mappings.iter().flatten() {
        let fixed = [
            ("AllocationId", &m.allocation_id),
            ("PrivateIPv4Address", &m.private_i_pv4_address),
            ("IPv6Address", &m.i_pv6_address),
            ("SourceNatIpv6Prefix", &m.source_nat_ipv6_prefix),
        ];
        if let Some((field, _)) = fixed.iter().find(|(_, v)| v.is_some()) {
            return Err(ElbError::new(
                ElbCode::InvalidConfigurationRequest,
                format!(
                    "SubnetMappings {field} is not supported for load balancers of type 'application'"
                ),
            )
            .into());
        }
    }
    let mut ids: Vec<String> = req.subnets.clone().unwrap_or_default();
    ids.extend(
        req.subnet_mappings
            .iter()
            .flatten()
            .filter_map(|m| m.subnet_id.clone()),
    );
    ids.sort();
    ids.dedup();
    let mut out = vec![];
    let network = st.ctl.networks.current();
    for id in ids {
        let Some(s) = network.subnet(&id) else {
            return Err(ElbError::new(
                ElbCode::SubnetNotFound,
                format!("The subnet ID '{id}' is not valid"),
            )
            .into());
        };
        if out.iter().any(|o: &LbSubnet| o.zone == s.availability_zone) {
            return Err(ElbError::new(
                ElbCode::InvalidConfigurationRequest,
                format!(
                    "A load balancer cannot be attached to multiple subnets in the same Availability Zone: '{}'",
                    s.availability_zone
                ),
            )
            .into());
        }
        out.push(LbSubnet {
            id,
            zone: s.availability_zone.clone(),
        });
    }
    if out.len() < 2 {
        return Err(ElbError::new(
            ElbCode::InvalidConfigurationRequest,
            "At least two subnets in two different Availability Zones must be specified",
        )
        .into());
    }
    Ok(out)
}

pub async fn create_load_balancer(
    st: &AppState,
    ctx: &RequestContext,
    req: w::CreateLoadBalancerInput,
) -> Result<w::CreateLoadBalancerOutput, ApiError> {
    let name = super::required(&req.name, "name")?.to_string();
    elb::validate_name(&name, "Load balancer")?;
    let kind = req.r#type.as_deref().unwrap_or("application");
    if kind != "application" {
        return Err(ElbError::validation(format!(
            "Load balancer type '{kind}' is not supported; Berth runs application load balancers"
        ))
        .into());
    }
    let scheme = req
        .scheme
        .clone()
        .unwrap_or_else(|| "internet-facing".into());
    if scheme != "internet-facing" && scheme != "internal" {
        return Err(ElbError::new(
            ElbCode::InvalidScheme,
            format!("Scheme '{scheme}' must be 'internet-facing' or 'internal'"),
        )
        .into());
    }
    let ip_type = req.ip_address_type.clone().unwrap_or_else(|| "ipv4".into());
    if ip_type != "ipv4" {
        return Err(ElbError::validation(format!(
            "IP address type '{ip_type}' is not supported; Berth's subnets are IPv4"
        ))
        .into());
    }
    let subnets = subnets(st, &req)?;
    let network = st.ctl.networks.current();
    // Without groups a load balancer is in its VPC's default one, as in AWS.
    let vpc = network
        .subnet(&subnets[0].id)
        .map(|s| s.vpc_id.clone())
        .unwrap_or_default();
    if let Some(other) = subnets
        .iter()
        .find(|s| network.subnet(&s.id).is_some_and(|n| n.vpc_id != vpc))
    {
        return Err(ElbError::validation(format!(
            "Subnets: '{}' and '{}' are in different VPCs; a load balancer's subnets must all be in one",
            subnets[0].id, other.id
        ))
        .into());
    }
    let groups = match req.security_groups.clone() {
        Some(g) => g,
        None => network
            .security_groups
            .iter()
            .filter(|g| g.vpc_id == vpc && g.name == "default")
            .map(|g| g.id.clone())
            .collect(),
    };
    if let Some(bad) = groups.iter().find(|g| network.security_group(g).is_none()) {
        return Err(ElbError::new(
            ElbCode::InvalidSecurityGroup,
            format!("One or more security groups are invalid: '{bad}'"),
        )
        .into());
    }
    let tags = req.tags.clone().unwrap_or_default();
    elb::validate_tags(&tags)?;
    let scope = &ctx.scope;
    let key = scope.load_balancer(&name);
    let (name, key, subnets, groups, tags, scheme, vpc) =
        (&name, &key, &subnets, &groups, &tags, &scheme, &vpc);
    let lb = swap(st, || async move {
        let existing = typed::get::<LoadBalancer>(&*st.store, key).await?;
        if let Some(e) = existing {
            // Creating again with the same settings answers with the existing one.
            let same = &e.value.subnets == subnets
                && &e.value.scheme == scheme
                && &e.value.security_groups == groups;
            if same {
                return Ok(Attempt::Done(e.value));
            }
            return Err(ElbError::new(
                ElbCode::DuplicateLoadBalancerName,
                format!("A load balancer with the same name '{name}' exists, but with different settings"),
            )
            .into());
        }
        let lb = LoadBalancer {
            name: name.clone(),
            id: new_id(),
            scheme: scheme.clone(),
            ip_address_type: "ipv4".into(),
            subnets: subnets.clone(),
            security_groups: groups.clone(),
            vpc_id: vpc.clone(),
            created_at: st.now(),
            tags: tags.clone(),
            attributes: attributes::load_balancer_defaults(),
        };
        let txn = Txn::when(vec![typed::unchanged(key, 0)], vec![typed::put(key, &lb)]);
        Ok(Attempt::Write(txn, lb))
    })
    .await?;
    Ok(w::CreateLoadBalancerOutput {
        load_balancers: Some(vec![lb.to_wire(scope, &st.config.lb_hostname)]),
    })
}

pub async fn describe_load_balancers(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeLoadBalancersInput,
) -> Result<w::DescribeLoadBalancersOutput, ApiError> {
    let scope = &ctx.scope;
    let all: Vec<(String, LoadBalancer)> =
        typed::list::<LoadBalancer>(&*st.store, &scope.load_balancers())
            .await?
            .into_iter()
            .map(|(_, lb)| (lb.value.name.clone(), lb.value))
            .collect();
    let arns = req.load_balancer_arns.clone().unwrap_or_default();
    let names = req.names.clone().unwrap_or_default();
    let wanted: Vec<(String, LoadBalancer)> = if !arns.is_empty() {
        let mut out = vec![];
        for arn in &arns {
            let lb = load_balancer(st, scope, arn).await?;
            out.push((lb.value.name.clone(), lb.value));
        }
        out
    } else if !names.is_empty() {
        let mut out = vec![];
        for n in &names {
            match all.iter().find(|(k, _)| k == n) {
                Some(found) => out.push(found.clone()),
                None => return Err(ElbError::lb_not_found().into()),
            }
        }
        out
    } else {
        all
    };
    let (items, next) = page(wanted, req.marker.as_deref(), req.page_size)?;
    Ok(w::DescribeLoadBalancersOutput {
        load_balancers: Some(
            items
                .iter()
                .map(|lb| lb.to_wire(scope, &st.config.lb_hostname))
                .collect(),
        ),
        next_marker: next,
    })
}

pub async fn delete_load_balancer(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DeleteLoadBalancerInput,
) -> Result<w::DeleteLoadBalancerOutput, ApiError> {
    let arn = super::required(&req.load_balancer_arn, "loadBalancerArn")?;
    let scope = &ctx.scope;
    swap(st, || async move {
        // Deleting a load balancer that is gone succeeds, as ELBv2's does.
        let lb = match load_balancer(st, scope, arn).await {
            Ok(lb) => lb,
            Err(berth_control::ControlError::Elb(e)) if e.code == ElbCode::LoadBalancerNotFound => {
                return Ok(Attempt::Done(()))
            }
            Err(e) => return Err(e.into()),
        };
        if lb.value.attributes.get(attributes::DELETION_PROTECTION).map(String::as_str) == Some("true") {
            return Err(ElbError::new(
                ElbCode::OperationNotPermitted,
                format!("Load balancer '{arn}' cannot be deleted because deletion protection is enabled"),
            )
            .into());
        }
        let (routing, listeners) = all_listeners(st, scope).await?;
        let key = scope.load_balancer(&lb.value.name);
        let mut compares = vec![
            typed::unchanged(&key, lb.mod_revision),
            typed::unchanged(&scope.elb_routing(), routing),
        ];
        let mut ops = vec![Op::delete(&key), Op::put(scope.elb_routing(), vec![])];
        for l in listeners.iter().filter(|l| l.value.lb_id == lb.value.id) {
            let lkey = scope.listener(&l.value.lb_id, &l.value.id);
            compares.push(typed::unchanged(&lkey, l.mod_revision));
            ops.push(Op::delete(lkey));
            ops.push(Op::delete(scope.listener_port(l.value.port)));
        }
        Ok(Attempt::Write(Txn::when(compares, ops), ()))
    })
    .await?;
    Ok(w::DeleteLoadBalancerOutput::default())
}

fn lb_attributes(lb: &LoadBalancer) -> Vec<w::LoadBalancerAttribute> {
    attribute_pairs(&lb.attributes)
        .map(|(k, v)| w::LoadBalancerAttribute {
            key: Some(k),
            value: Some(v),
        })
        .collect()
}

pub async fn describe_load_balancer_attributes(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeLoadBalancerAttributesInput,
) -> Result<w::DescribeLoadBalancerAttributesOutput, ApiError> {
    let arn = super::required(&req.load_balancer_arn, "loadBalancerArn")?;
    let lb = load_balancer(st, &ctx.scope, arn).await?;
    Ok(w::DescribeLoadBalancerAttributesOutput {
        attributes: Some(lb_attributes(&lb.value)),
    })
}

pub async fn modify_load_balancer_attributes(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ModifyLoadBalancerAttributesInput,
) -> Result<w::ModifyLoadBalancerAttributesOutput, ApiError> {
    let arn = super::required(&req.load_balancer_arn, "loadBalancerArn")?;
    let changes = attribute_changes(
        req.attributes
            .map(|a| a.into_iter().map(|x| (x.key, x.value)).collect()),
    )?;
    let lb = super::update(st, &ctx.scope, arn, |lb: &mut LoadBalancer| {
        lb.attributes = attributes::modify_load_balancer(&lb.attributes, &changes)?;
        Ok(())
    })
    .await?;
    Ok(w::ModifyLoadBalancerAttributesOutput {
        attributes: Some(lb_attributes(&lb)),
    })
}
