//! The EC2 networking API (issue 20): VPCs, subnets, zones, security
//! groups and their rules, the interfaces of awsvpc tasks, tags. Decode,
//! apply one of `berth_domain::vpc`'s rules through
//! `berth_control::network`, encode. Registered in `ec2.rs`.

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::network::{self as net, NetworkFailure};
use berth_domain::asg::Ec2Error;
use berth_domain::network::{NetworkConfig, Rule, SecurityGroupConfig, SubnetConfig, Tags};
use berth_domain::vpc;
use berth_store::keys::Keys;
use berth_store::RangeRequest;
use berth_wire::ec2 as w;
use std::collections::HashMap;

type Out<T> = Result<T, ApiError>;

impl From<NetworkFailure> for ApiError {
    fn from(e: NetworkFailure) -> Self {
        match e {
            NetworkFailure::Ec2(e) => ApiError::Ec2(e),
            NetworkFailure::Control(e) => e.into(),
        }
    }
}

fn tag_list(tags: &Tags) -> Option<Vec<w::Tag>> {
    (!tags.is_empty()).then(|| {
        tags.iter()
            .map(|(k, v)| w::Tag {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect()
    })
}

/// Refuses the first request member Berth does not serve (IPv6 blocks,
/// IPAM pools, tenancy, Outposts...) rather than ignoring it.
fn refuse_unserved(members: &[(&str, bool)]) -> Result<(), Ec2Error> {
    match members.iter().find(|(_, given)| *given) {
        Some((field, _)) => Err(Ec2Error::new(
            "InvalidParameterValue",
            format!("{field} is not supported by Berth; see docs/api-coverage.md."),
        )),
        None => Ok(()),
    }
}

fn s(v: &str) -> Vec<String> {
    vec![v.to_string()]
}

fn b(v: bool) -> Vec<String> {
    s(if v { "true" } else { "false" })
}

/// Describe's selection: the ids asked for (each must exist) and filters.
fn select<'a, T>(
    all: impl Iterator<Item = &'a T>,
    ids: Option<&[String]>,
    id_of: impl Fn(&T) -> &str,
    missing: impl Fn(&str) -> Ec2Error,
    filters: Option<&[w::Filter]>,
    tags_of: impl Fn(&T) -> &Tags,
    attr: impl Fn(&T, &str) -> Option<Vec<String>>,
) -> Result<Vec<&'a T>, Ec2Error>
where
    T: 'a,
{
    let all: Vec<&T> = all.collect();
    let ids = ids.unwrap_or_default();
    if let Some(id) = ids
        .iter()
        .find(|i| !all.iter().any(|t| id_of(t) == i.as_str()))
    {
        return Err(missing(id));
    }
    let mut out = vec![];
    for t in all {
        if !ids.is_empty() && !ids.iter().any(|i| i == id_of(t)) {
            continue;
        }
        if vpc::matches(filters.unwrap_or_default(), tags_of(t), &|n| attr(t, n))? {
            out.push(t);
        }
    }
    Ok(out)
}

/// One page of `items`: MaxResults (5 to 1000) and NextToken (an offset).
fn page<T>(
    items: Vec<T>,
    max: Option<i32>,
    token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), Ec2Error> {
    let start = match token.filter(|t| !t.is_empty()) {
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|s| *s <= items.len())
            .ok_or_else(|| {
                Ec2Error::new("InvalidNextToken", format!("The token '{t}' is invalid"))
            })?,
        None => 0,
    };
    let max = match max {
        Some(m) if !(5..=1000).contains(&m) => {
            return Err(Ec2Error::invalid(format!(
                "Value ( {m} ) for parameter maxResults is invalid. Parameter must be between 5 and 1000."
            )))
        }
        Some(m) => m as usize,
        None => usize::MAX,
    };
    let end = start.saturating_add(max).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((
        items.into_iter().skip(start).take(end - start).collect(),
        next,
    ))
}

fn arn(ctx: &RequestContext, st: &AppState, kind: &str, id: &str) -> String {
    format!(
        "arn:aws:ec2:{}:{}:{kind}/{id}",
        ctx.scope.region, st.config.account_id
    )
}

// ---- VPCs ----

fn vpc_view(st: &AppState, v: &berth_domain::network::VpcConfig) -> w::Vpc {
    w::Vpc {
        cidr_block: Some(v.cidr.clone()),
        cidr_block_association_set: Some(vec![w::VpcCidrBlockAssociation {
            association_id: Some(format!(
                "vpc-cidr-assoc-{}",
                v.id.trim_start_matches("vpc-")
            )),
            cidr_block: Some(v.cidr.clone()),
            cidr_block_state: Some(w::VpcCidrBlockState {
                state: Some("associated".into()),
                ..Default::default()
            }),
        }]),
        dhcp_options_id: Some("default".into()),
        instance_tenancy: Some("default".into()),
        is_default: Some(v.is_default),
        owner_id: Some(st.config.account_id.clone()),
        state: Some("available".into()),
        tags: tag_list(&v.tags),
        vpc_id: Some(v.id.clone()),
        ..Default::default()
    }
}

pub(crate) async fn create_vpc(
    st: &AppState,
    _ctx: &RequestContext,
    input: w::CreateVpcRequest,
) -> Out<w::CreateVpcResult> {
    refuse_unserved(&[
        (
            "AmazonProvidedIpv6CidrBlock",
            input.amazon_provided_ipv6_cidr_block == Some(true),
        ),
        ("Ipv6CidrBlock", input.ipv6_cidr_block.is_some()),
        ("Ipv6IpamPoolId", input.ipv6_ipam_pool_id.is_some()),
        ("Ipv6NetmaskLength", input.ipv6_netmask_length.is_some()),
        ("Ipv6Pool", input.ipv6_pool.is_some()),
        ("Ipv4IpamPoolId", input.ipv4_ipam_pool_id.is_some()),
        ("Ipv4NetmaskLength", input.ipv4_netmask_length.is_some()),
        (
            "VpcEncryptionControl",
            input.vpc_encryption_control.is_some(),
        ),
        (
            "InstanceTenancy",
            input
                .instance_tenancy
                .as_deref()
                .is_some_and(|t| t != "default"),
        ),
    ])?;
    let tags = vpc::tags_of(input.tag_specifications.as_deref(), "vpc")?;
    let v = st
        .ctl
        .networks
        .change(|cfg| {
            vpc::create_vpc(
                cfg,
                input.cidr_block.as_deref(),
                tags.clone(),
                &mut net::new_id,
            )
        })
        .await?;
    Ok(w::CreateVpcResult {
        vpc: Some(vpc_view(st, &v)),
    })
}

pub(crate) async fn describe_vpcs(
    st: &AppState,
    _ctx: &RequestContext,
    input: w::DescribeVpcsRequest,
) -> Out<w::DescribeVpcsResult> {
    let cfg = st.ctl.networks.current();
    let found = select(
        cfg.vpcs.iter(),
        input.vpc_ids.as_deref(),
        |v| &v.id,
        |id| {
            Ec2Error::new(
                "InvalidVpcID.NotFound",
                format!("The vpc ID '{id}' does not exist"),
            )
        },
        input.filters.as_deref(),
        |v| &v.tags,
        |v, n| match n {
            "vpc-id" => Some(s(&v.id)),
            "cidr" | "cidr-block-association.cidr-block" | "cidrBlock" => Some(s(&v.cidr)),
            "is-default" | "isDefault" => Some(b(v.is_default)),
            "state" => Some(s("available")),
            "owner-id" => Some(s(&st.config.account_id)),
            "dhcp-options-id" => Some(s("default")),
            _ => None,
        },
    )?;
    let (items, next) = page(
        found.into_iter().map(|v| vpc_view(st, v)).collect(),
        input.max_results,
        input.next_token.as_deref(),
    )?;
    Ok(w::DescribeVpcsResult {
        vpcs: Some(items),
        next_token: next,
    })
}

pub(crate) async fn delete_vpc(
    st: &AppState,
    _ctx: &RequestContext,
    input: w::DeleteVpcRequest,
) -> Out<()> {
    let id = input
        .vpc_id
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Ec2Error::missing("vpcId"))?;
    st.ctl
        .networks
        .change(|cfg| vpc::delete_vpc(cfg, &id))
        .await?;
    Ok(())
}

// ---- subnets and zones ----

/// How many addresses each subnet has handed out (to tasks or held warm).
async fn held(st: &AppState, ctx: &RequestContext) -> Out<HashMap<String, usize>> {
    let scope = &ctx.scope;
    let prefix = scope.subnet_ips();
    let kvs = st
        .store
        .range(RangeRequest::prefix(prefix.as_str()))
        .await
        .map_err(berth_control::ControlError::from)?
        .kvs;
    let mut out = HashMap::new();
    for kv in kvs {
        if let Some((subnet, _)) = kv.key[prefix.len()..].split_once('/') {
            *out.entry(subnet.to_string()).or_default() += 1;
        }
    }
    Ok(out)
}

fn subnet_view(
    st: &AppState,
    ctx: &RequestContext,
    sn: &SubnetConfig,
    held: &HashMap<String, usize>,
) -> w::Subnet {
    let size = berth_domain::network::Cidr::parse(&sn.cidr)
        .map(|c| 1u64 << (32 - c.prefix as u32))
        .unwrap_or(0);
    let free = size
        .saturating_sub(5)
        .saturating_sub(held.get(&sn.id).copied().unwrap_or(0) as u64);
    w::Subnet {
        assign_ipv6_address_on_creation: Some(false),
        availability_zone: Some(sn.availability_zone.clone()),
        availability_zone_id: Some(sn.availability_zone.clone()),
        available_ip_address_count: Some(free.min(i32::MAX as u64) as i32),
        cidr_block: Some(sn.cidr.clone()),
        default_for_az: Some(sn.default_for_az),
        map_public_ip_on_launch: Some(sn.map_public_ip_on_launch),
        owner_id: Some(st.config.account_id.clone()),
        state: Some("available".into()),
        subnet_arn: Some(arn(ctx, st, "subnet", &sn.id)),
        subnet_id: Some(sn.id.clone()),
        tags: tag_list(&sn.tags),
        vpc_id: Some(sn.vpc_id.clone()),
        ..Default::default()
    }
}

pub(crate) async fn create_subnet(
    st: &AppState,
    ctx: &RequestContext,
    input: w::CreateSubnetRequest,
) -> Out<w::CreateSubnetResult> {
    refuse_unserved(&[
        ("Ipv6CidrBlock", input.ipv6_cidr_block.is_some()),
        ("Ipv6IpamPoolId", input.ipv6_ipam_pool_id.is_some()),
        ("Ipv6Native", input.ipv6_native == Some(true)),
        ("Ipv6NetmaskLength", input.ipv6_netmask_length.is_some()),
        ("Ipv4IpamPoolId", input.ipv4_ipam_pool_id.is_some()),
        ("Ipv4NetmaskLength", input.ipv4_netmask_length.is_some()),
        ("OutpostArn", input.outpost_arn.is_some()),
    ])?;
    let tags = vpc::tags_of(input.tag_specifications.as_deref(), "subnet")?;
    let zones = net::zones(&st.ctl, &ctx.scope).await?;
    let zone = input
        .availability_zone
        .as_deref()
        .or(input.availability_zone_id.as_deref());
    let sn = st
        .ctl
        .networks
        .change(|cfg| {
            vpc::create_subnet(
                cfg,
                input.vpc_id.as_deref(),
                input.cidr_block.as_deref(),
                zone,
                &zones,
                tags.clone(),
                &mut net::new_id,
            )
        })
        .await?;
    Ok(w::CreateSubnetResult {
        subnet: Some(subnet_view(st, ctx, &sn, &HashMap::new())),
    })
}

pub(crate) async fn describe_subnets(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeSubnetsRequest,
) -> Out<w::DescribeSubnetsResult> {
    let cfg = st.ctl.networks.current();
    let found = select(
        cfg.subnets.iter(),
        input.subnet_ids.as_deref(),
        |v| &v.id,
        |id| {
            Ec2Error::new(
                "InvalidSubnetID.NotFound",
                format!("The subnet ID '{id}' does not exist"),
            )
        },
        input.filters.as_deref(),
        |v| &v.tags,
        |v, n| match n {
            "subnet-id" | "subnetId" => Some(s(&v.id)),
            "vpc-id" | "vpcId" => Some(s(&v.vpc_id)),
            "cidr-block" | "cidr" | "cidrBlock" => Some(s(&v.cidr)),
            "availability-zone" | "availabilityZone" | "availability-zone-id" => {
                Some(s(&v.availability_zone))
            }
            "default-for-az" | "defaultForAz" => Some(b(v.default_for_az)),
            "map-public-ip-on-launch" => Some(b(v.map_public_ip_on_launch)),
            "state" => Some(s("available")),
            "owner-id" => Some(s(&st.config.account_id)),
            _ => None,
        },
    )?;
    let held = held(st, ctx).await?;
    let (items, next) = page(
        found
            .into_iter()
            .map(|v| subnet_view(st, ctx, v, &held))
            .collect(),
        input.max_results,
        input.next_token.as_deref(),
    )?;
    Ok(w::DescribeSubnetsResult {
        subnets: Some(items),
        next_token: next,
    })
}

pub(crate) async fn delete_subnet(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DeleteSubnetRequest,
) -> Out<()> {
    let id = input
        .subnet_id
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Ec2Error::missing("subnetId"))?;
    let in_use = net::subnet_in_use(&st.ctl, &ctx.scope, &id).await?;
    st.ctl
        .networks
        .change(|cfg| vpc::delete_subnet(cfg, &id, in_use))
        .await?;
    Ok(())
}

pub(crate) async fn describe_availability_zones(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeAvailabilityZonesRequest,
) -> Out<w::DescribeAvailabilityZonesResult> {
    let zones = net::zones(&st.ctl, &ctx.scope).await?;
    let region = ctx.scope.region.clone();
    let mut names = input.zone_names.clone().unwrap_or_default();
    names.extend(input.zone_ids.clone().unwrap_or_default());
    static NONE: Tags = Tags::new();
    let found = select(
        zones.iter(),
        Some(&names),
        |z| z.as_str(),
        |z| {
            Ec2Error::invalid(format!(
                "The zone '{z}' does not exist in the region {region}."
            ))
        },
        input.filters.as_deref(),
        |_| &NONE,
        |z, n| match n {
            "zone-name" | "zone-id" => Some(s(z)),
            "region-name" => Some(s(&region)),
            "state" => Some(s("available")),
            "zone-type" => Some(s("availability-zone")),
            "opt-in-status" => Some(s("opt-in-not-required")),
            "group-name" | "network-border-group" => Some(s(&region)),
            _ => None,
        },
    )?;
    Ok(w::DescribeAvailabilityZonesResult {
        availability_zones: Some(
            found
                .into_iter()
                .map(|z| w::AvailabilityZone {
                    group_name: Some(region.clone()),
                    network_border_group: Some(region.clone()),
                    opt_in_status: Some("opt-in-not-required".into()),
                    region_name: Some(region.clone()),
                    state: Some("available".into()),
                    zone_id: Some(z.clone()),
                    zone_name: Some(z.clone()),
                    zone_type: Some("availability-zone".into()),
                    messages: Some(vec![]),
                    ..Default::default()
                })
                .collect(),
        ),
    })
}

// ---- security groups ----

/// A group's rules of one direction as EC2 shows them: one permission
/// per protocol and port range, with its peers.
fn permissions(st: &AppState, rules: &[Rule]) -> Vec<w::IpPermission> {
    let mut out: Vec<w::IpPermission> = vec![];
    for r in rules {
        let (from, to) = match r.ports() {
            Some((f, t)) => (Some(f), Some(t)),
            None => (None, None),
        };
        let at = match out.iter().position(|p| {
            p.ip_protocol.as_deref() == Some(&r.protocol) && p.from_port == from && p.to_port == to
        }) {
            Some(i) => i,
            None => {
                out.push(w::IpPermission {
                    ip_protocol: Some(r.protocol.clone()),
                    from_port: from,
                    to_port: to,
                    ip_ranges: Some(vec![]),
                    ipv6_ranges: Some(vec![]),
                    prefix_list_ids: Some(vec![]),
                    user_id_group_pairs: Some(vec![]),
                });
                out.len() - 1
            }
        };
        let p = &mut out[at];
        if let Some(c) = &r.cidr {
            p.ip_ranges.get_or_insert_with(Vec::new).push(w::IpRange {
                cidr_ip: Some(c.clone()),
                description: r.description.clone(),
            });
        }
        if let Some(c) = &r.cidr_ipv6 {
            p.ipv6_ranges
                .get_or_insert_with(Vec::new)
                .push(w::Ipv6Range {
                    cidr_ipv6: Some(c.clone()),
                    description: r.description.clone(),
                });
        }
        if let Some(g) = &r.source_group {
            p.user_id_group_pairs
                .get_or_insert_with(Vec::new)
                .push(w::UserIdGroupPair {
                    group_id: Some(g.clone()),
                    user_id: Some(st.config.account_id.clone()),
                    description: r.description.clone(),
                    ..Default::default()
                });
        }
    }
    out
}

fn group_view(st: &AppState, ctx: &RequestContext, g: &SecurityGroupConfig) -> w::SecurityGroup {
    w::SecurityGroup {
        description: Some(g.description.clone()),
        group_id: Some(g.id.clone()),
        group_name: Some(g.name.clone()),
        ip_permissions: Some(permissions(st, &g.ingress)),
        ip_permissions_egress: Some(permissions(st, &g.egress)),
        owner_id: Some(st.config.account_id.clone()),
        security_group_arn: Some(arn(ctx, st, "security-group", &g.id)),
        tags: tag_list(&g.tags),
        vpc_id: Some(g.vpc_id.clone()),
    }
}

fn rule_view(
    st: &AppState,
    ctx: &RequestContext,
    g: &SecurityGroupConfig,
    r: &Rule,
    egress: bool,
) -> w::SecurityGroupRule {
    let (from, to) = r.ports().unwrap_or((-1, -1));
    w::SecurityGroupRule {
        cidr_ipv4: r.cidr.clone(),
        cidr_ipv6: r.cidr_ipv6.clone(),
        description: r.description.clone(),
        from_port: Some(from),
        group_id: Some(g.id.clone()),
        group_owner_id: Some(st.config.account_id.clone()),
        ip_protocol: Some(r.protocol.clone()),
        is_egress: Some(egress),
        referenced_group_info: r
            .source_group
            .as_ref()
            .map(|id| w::ReferencedSecurityGroup {
                group_id: Some(id.clone()),
                user_id: Some(st.config.account_id.clone()),
                ..Default::default()
            }),
        security_group_rule_arn: Some(arn(ctx, st, "security-group-rule", &r.id)),
        security_group_rule_id: Some(r.id.clone()),
        tags: Some(vec![]),
        to_port: Some(to),
        ..Default::default()
    }
}

pub(crate) async fn create_security_group(
    st: &AppState,
    ctx: &RequestContext,
    input: w::CreateSecurityGroupRequest,
) -> Out<w::CreateSecurityGroupResult> {
    let tags = vpc::tags_of(input.tag_specifications.as_deref(), "security-group")?;
    let g = st
        .ctl
        .networks
        .change(|cfg| {
            vpc::create_group(
                cfg,
                input.group_name.as_deref(),
                input.description.as_deref(),
                input.vpc_id.as_deref(),
                tags.clone(),
                &mut net::new_id,
            )
        })
        .await?;
    Ok(w::CreateSecurityGroupResult {
        security_group_arn: Some(arn(ctx, st, "security-group", &g.id)),
        tags: tag_list(&g.tags),
        group_id: Some(g.id),
    })
}

fn group_attr(g: &SecurityGroupConfig, n: &str, account: &str) -> Option<Vec<String>> {
    let rules = |rules: &[Rule], f: &dyn Fn(&Rule) -> Option<String>| {
        rules.iter().filter_map(f).collect::<Vec<_>>()
    };
    Some(match n {
        "group-id" => s(&g.id),
        "group-name" => s(&g.name),
        "vpc-id" => s(&g.vpc_id),
        "description" => s(&g.description),
        "owner-id" => s(account),
        "ip-permission.cidr" => rules(&g.ingress, &|r| r.cidr.clone()),
        "ip-permission.ipv6-cidr" => rules(&g.ingress, &|r| r.cidr_ipv6.clone()),
        "ip-permission.group-id" => rules(&g.ingress, &|r| r.source_group.clone()),
        "ip-permission.protocol" => rules(&g.ingress, &|r| Some(r.protocol.clone())),
        "ip-permission.from-port" => rules(&g.ingress, &|r| r.ports().map(|p| p.0.to_string())),
        "ip-permission.to-port" => rules(&g.ingress, &|r| r.ports().map(|p| p.1.to_string())),
        "egress.ip-permission.cidr" => rules(&g.egress, &|r| r.cidr.clone()),
        "egress.ip-permission.group-id" => rules(&g.egress, &|r| r.source_group.clone()),
        "egress.ip-permission.protocol" => rules(&g.egress, &|r| Some(r.protocol.clone())),
        _ => return None,
    })
}

pub(crate) async fn describe_security_groups(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeSecurityGroupsRequest,
) -> Out<w::DescribeSecurityGroupsResult> {
    let cfg = st.ctl.networks.current();
    let account = st.config.account_id.clone();
    let mut found = select(
        cfg.security_groups.iter(),
        input.group_ids.as_deref(),
        |g| &g.id,
        vpc::not_found_group,
        input.filters.as_deref(),
        |g| &g.tags,
        |g, n| group_attr(g, n, &account),
    )?;
    // GroupNames name groups of the default VPC.
    if let Some(names) = input.group_names.as_deref().filter(|n| !n.is_empty()) {
        for n in names {
            vpc::find_group(&cfg, None, Some(n))?;
        }
        let default = cfg
            .vpcs
            .iter()
            .find(|v| v.is_default)
            .map(|v| v.id.as_str());
        found.retain(|g| Some(g.vpc_id.as_str()) == default && names.contains(&g.name));
    }
    let (items, next) = page(
        found.into_iter().map(|g| group_view(st, ctx, g)).collect(),
        input.max_results,
        input.next_token.as_deref(),
    )?;
    Ok(w::DescribeSecurityGroupsResult {
        security_groups: Some(items),
        next_token: next,
    })
}

pub(crate) async fn delete_security_group(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DeleteSecurityGroupRequest,
) -> Out<w::DeleteSecurityGroupResult> {
    let cfg = st.ctl.networks.current();
    let at = vpc::find_group(&cfg, input.group_id.as_deref(), input.group_name.as_deref())?;
    let id = cfg.security_groups[at].id.clone();
    let in_use = net::group_in_use(&st.ctl, &ctx.scope, &id).await?;
    st.ctl
        .networks
        .change(|cfg| {
            let at = vpc::find_group(cfg, Some(&id), None)?;
            vpc::delete_group(cfg, at, in_use)
        })
        .await?;
    Ok(w::DeleteSecurityGroupResult {
        group_id: Some(id),
        r#return: Some(true),
    })
}

/// The permissions of an Authorize/Revoke request: `IpPermissions`, or
/// the older top-level form (one protocol, ports, and a CIDR or a source
/// group by name).
struct Asked {
    group_id: Option<String>,
    group_name: Option<String>,
    perms: Vec<w::IpPermission>,
    flat: w::IpPermission,
    flat_group: Option<String>,
}

impl Asked {
    fn permissions(&self) -> Vec<w::IpPermission> {
        let mut perms = self.perms.clone();
        if self.flat.ip_protocol.is_some()
            || self.flat.ip_ranges.is_some()
            || self.flat_group.is_some()
        {
            let mut p = self.flat.clone();
            if p.ip_protocol.is_none() {
                p.ip_protocol = Some("-1".into());
            }
            if let Some(name) = &self.flat_group {
                p.user_id_group_pairs = Some(vec![w::UserIdGroupPair {
                    group_name: Some(name.clone()),
                    ..Default::default()
                }]);
            }
            perms.push(p);
        }
        perms
    }
}

/// An Authorize/Revoke request's [`Asked`]; a source group of another
/// account is refused (Berth has one).
macro_rules! asked {
    ($st:expr, $i:ident, $group_name:expr) => {{
        if let Some(owner) = $i
            .source_security_group_owner_id
            .as_deref()
            .filter(|o| *o != $st.config.account_id)
        {
            return Err(Ec2Error::invalid(format!(
                "SourceSecurityGroupOwnerId {owner} is not this account ({})",
                $st.config.account_id
            ))
            .into());
        }
        Asked {
            group_id: $i.group_id,
            group_name: $group_name,
            perms: $i.ip_permissions.unwrap_or_default(),
            flat: flat($i.ip_protocol, $i.from_port, $i.to_port, $i.cidr_ip),
            flat_group: $i.source_security_group_name,
        }
    }};
}

fn flat(
    protocol: Option<String>,
    from: Option<i32>,
    to: Option<i32>,
    cidr: Option<String>,
) -> w::IpPermission {
    w::IpPermission {
        ip_protocol: protocol,
        from_port: from,
        to_port: to,
        ip_ranges: cidr.map(|c| {
            vec![w::IpRange {
                cidr_ip: Some(c),
                description: None,
            }]
        }),
        ..Default::default()
    }
}

async fn authorize(
    st: &AppState,
    ctx: &RequestContext,
    asked: Asked,
    egress: bool,
) -> Out<Vec<w::SecurityGroupRule>> {
    let perms = asked.permissions();
    let (group, rules) = st
        .ctl
        .networks
        .change(|cfg| {
            let at = vpc::find_group(cfg, asked.group_id.as_deref(), asked.group_name.as_deref())?;
            let vpc_id = cfg.security_groups[at].vpc_id.clone();
            let rules = vpc::rules_of(cfg, &vpc_id, &perms)?;
            let added = vpc::authorize(cfg, at, egress, rules, &mut net::new_id)?;
            Ok((cfg.security_groups[at].clone(), added))
        })
        .await?;
    Ok(rules
        .iter()
        .map(|r| rule_view(st, ctx, &group, r, egress))
        .collect())
}

async fn revoke(
    st: &AppState,
    ctx: &RequestContext,
    asked: Asked,
    ids: Vec<String>,
    egress: bool,
) -> Out<Vec<w::RevokedSecurityGroupRule>> {
    let perms = asked.permissions();
    let revoked = st
        .ctl
        .networks
        .change(|cfg| {
            let at = vpc::find_group(cfg, asked.group_id.as_deref(), asked.group_name.as_deref())?;
            let vpc_id = cfg.security_groups[at].vpc_id.clone();
            let rules = if perms.is_empty() {
                if ids.is_empty() {
                    return Err(Ec2Error::missing("ipPermissions"));
                }
                vec![]
            } else {
                vpc::rules_of(cfg, &vpc_id, &perms)?
            };
            let g = &cfg.security_groups[at];
            let list = if egress { &g.egress } else { &g.ingress };
            let gone: Vec<Rule> = list
                .iter()
                .filter(|o| ids.contains(&o.id) || rules.iter().any(|r| r.same_as(o)))
                .cloned()
                .collect();
            let group = g.clone();
            vpc::revoke(cfg, at, egress, &rules, &ids)?;
            Ok((group, gone))
        })
        .await?;
    let (group, gone) = revoked;
    Ok(gone
        .iter()
        .map(|r| {
            let v = rule_view(st, ctx, &group, r, egress);
            w::RevokedSecurityGroupRule {
                cidr_ipv4: v.cidr_ipv4,
                cidr_ipv6: v.cidr_ipv6,
                description: v.description,
                from_port: v.from_port,
                group_id: v.group_id,
                ip_protocol: v.ip_protocol,
                is_egress: v.is_egress,
                security_group_rule_id: v.security_group_rule_id,
                to_port: v.to_port,
                referenced_group_id: r.source_group.clone(),
                ..Default::default()
            }
        })
        .collect())
}

pub(crate) async fn authorize_security_group_ingress(
    st: &AppState,
    ctx: &RequestContext,
    i: w::AuthorizeSecurityGroupIngressRequest,
) -> Out<w::AuthorizeSecurityGroupIngressResult> {
    refuse_unserved(&[("TagSpecifications", i.tag_specifications.is_some())])?;
    let asked = asked!(st, i, i.group_name);
    let rules = authorize(st, ctx, asked, false).await?;
    Ok(w::AuthorizeSecurityGroupIngressResult {
        r#return: Some(true),
        security_group_rules: Some(rules),
    })
}

pub(crate) async fn authorize_security_group_egress(
    st: &AppState,
    ctx: &RequestContext,
    i: w::AuthorizeSecurityGroupEgressRequest,
) -> Out<w::AuthorizeSecurityGroupEgressResult> {
    refuse_unserved(&[("TagSpecifications", i.tag_specifications.is_some())])?;
    let asked = asked!(st, i, None);
    let rules = authorize(st, ctx, asked, true).await?;
    Ok(w::AuthorizeSecurityGroupEgressResult {
        r#return: Some(true),
        security_group_rules: Some(rules),
    })
}

pub(crate) async fn revoke_security_group_ingress(
    st: &AppState,
    ctx: &RequestContext,
    i: w::RevokeSecurityGroupIngressRequest,
) -> Out<w::RevokeSecurityGroupIngressResult> {
    let asked = asked!(st, i, i.group_name);
    let gone = revoke(
        st,
        ctx,
        asked,
        i.security_group_rule_ids.unwrap_or_default(),
        false,
    )
    .await?;
    Ok(w::RevokeSecurityGroupIngressResult {
        r#return: Some(true),
        revoked_security_group_rules: Some(gone),
        unknown_ip_permissions: None,
    })
}

pub(crate) async fn revoke_security_group_egress(
    st: &AppState,
    ctx: &RequestContext,
    i: w::RevokeSecurityGroupEgressRequest,
) -> Out<w::RevokeSecurityGroupEgressResult> {
    let asked = asked!(st, i, None);
    let gone = revoke(
        st,
        ctx,
        asked,
        i.security_group_rule_ids.unwrap_or_default(),
        true,
    )
    .await?;
    Ok(w::RevokeSecurityGroupEgressResult {
        r#return: Some(true),
        revoked_security_group_rules: Some(gone),
        unknown_ip_permissions: None,
    })
}

pub(crate) async fn describe_security_group_rules(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeSecurityGroupRulesRequest,
) -> Out<w::DescribeSecurityGroupRulesResult> {
    let cfg = st.ctl.networks.current();
    let ids = input.security_group_rule_ids.unwrap_or_default();
    let mut out = vec![];
    let none = Tags::new();
    for g in &cfg.security_groups {
        for (egress, rules) in [(false, &g.ingress), (true, &g.egress)] {
            for r in rules {
                if !ids.is_empty() && !ids.contains(&r.id) {
                    continue;
                }
                let attr = |n: &str| match n {
                    "group-id" => Some(s(&g.id)),
                    "security-group-rule-id" => Some(s(&r.id)),
                    "is-egress" => Some(b(egress)),
                    _ => None,
                };
                if vpc::matches(input.filters.as_deref().unwrap_or_default(), &none, &attr)? {
                    out.push(rule_view(st, ctx, g, r, egress));
                }
            }
        }
    }
    if let Some(id) = ids.iter().find(|i| {
        !out.iter()
            .any(|r| r.security_group_rule_id.as_ref() == Some(i))
    }) {
        return Err(Ec2Error::new(
            "InvalidSecurityGroupRuleId.NotFound",
            format!("The security group rule ID '{id}' does not exist"),
        )
        .into());
    }
    let (items, next) = page(out, input.max_results, input.next_token.as_deref())?;
    Ok(w::DescribeSecurityGroupRulesResult {
        security_group_rules: Some(items),
        next_token: next,
    })
}

// ---- network interfaces ----

pub(crate) async fn describe_network_interfaces(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeNetworkInterfacesRequest,
) -> Out<w::DescribeNetworkInterfacesResult> {
    let cfg = st.ctl.networks.current();
    let tasks = net::interfaces(&st.ctl, &ctx.scope).await?;
    let views: Vec<(w::NetworkInterface, Tags)> = tasks
        .iter()
        .filter_map(|(ip, t)| eni_view(st, ctx, &cfg, ip, t))
        .collect();
    let found = select(
        views.iter(),
        input.network_interface_ids.as_deref(),
        |(v, _)| v.network_interface_id.as_deref().unwrap_or_default(),
        |id| {
            Ec2Error::new(
                "InvalidNetworkInterfaceID.NotFound",
                format!("The networkInterface ID '{id}' does not exist"),
            )
        },
        input.filters.as_deref(),
        |(_, tags)| tags,
        |(v, _), n| {
            let one = |x: &Option<String>| Some(x.iter().cloned().collect::<Vec<_>>());
            match n {
                "network-interface-id" => one(&v.network_interface_id),
                "subnet-id" => one(&v.subnet_id),
                "vpc-id" => one(&v.vpc_id),
                "availability-zone" => one(&v.availability_zone),
                "private-ip-address" | "addresses.private-ip-address" => one(&v.private_ip_address),
                "description" => one(&v.description),
                "status" => one(&v.status),
                "interface-type" => one(&v.interface_type),
                "requester-managed" => Some(b(true)),
                "owner-id" => one(&v.owner_id),
                "group-id" => Some(
                    v.groups
                        .iter()
                        .flatten()
                        .filter_map(|g| g.group_id.clone())
                        .collect(),
                ),
                "group-name" => Some(
                    v.groups
                        .iter()
                        .flatten()
                        .filter_map(|g| g.group_name.clone())
                        .collect(),
                ),
                "attachment.status" => Some(s("attached")),
                _ => None,
            }
        },
    )?;
    let (items, next) = page(
        found.into_iter().map(|(v, _)| v.clone()).collect(),
        input.max_results,
        input.next_token.as_deref(),
    )?;
    Ok(w::DescribeNetworkInterfacesResult {
        network_interfaces: Some(items),
        next_token: next,
    })
}

/// A task's interface, as EC2 shows the ENI ECS made for it.
fn eni_view(
    st: &AppState,
    ctx: &RequestContext,
    cfg: &NetworkConfig,
    ip: &str,
    t: &berth_domain::task::Task,
) -> Option<(w::NetworkInterface, Tags)> {
    let n = t.network.as_ref()?;
    let subnet = cfg.subnet(&n.subnet_id);
    let attachment = format!(
        "arn:aws:ecs:{}:{}:attachment/{}",
        ctx.scope.region, st.config.account_id, n.attachment_id
    );
    let view = w::NetworkInterface {
        attachment: Some(w::NetworkInterfaceAttachment {
            attachment_id: Some(format!(
                "ela-attach-{}",
                n.eni_id.trim_start_matches("eni-")
            )),
            delete_on_termination: Some(true),
            device_index: Some(1),
            status: Some("attached".into()),
            instance_owner_id: Some("amazon-aws".into()),
            ..Default::default()
        }),
        availability_zone: subnet.map(|s| s.availability_zone.clone()),
        description: Some(attachment),
        groups: Some(
            n.security_groups
                .iter()
                .map(|g| w::GroupIdentifier {
                    group_id: Some(g.clone()),
                    group_name: cfg.security_group(g).map(|x| x.name.clone()),
                })
                .collect(),
        ),
        interface_type: Some("interface".into()),
        network_interface_id: Some(n.eni_id.clone()),
        owner_id: Some(st.config.account_id.clone()),
        private_ip_address: Some(ip.to_string()),
        private_ip_addresses: Some(vec![w::NetworkInterfacePrivateIpAddress {
            primary: Some(true),
            private_ip_address: Some(ip.to_string()),
            ..Default::default()
        }]),
        requester_id: Some("amazon-ecs".into()),
        requester_managed: Some(true),
        source_dest_check: Some(true),
        status: Some("in-use".into()),
        subnet_id: Some(n.subnet_id.clone()),
        tag_set: Some(vec![]),
        vpc_id: subnet.map(|s| s.vpc_id.clone()),
        ..Default::default()
    };
    Some((view, Tags::new()))
}

// ---- tags and account ----

pub(crate) async fn create_tags(
    st: &AppState,
    _ctx: &RequestContext,
    input: w::CreateTagsRequest,
) -> Out<()> {
    let ids = input.resources.unwrap_or_default();
    let tags = input.tags.unwrap_or_default();
    st.ctl
        .networks
        .change(|cfg| vpc::create_tags(cfg, &ids, &tags))
        .await?;
    Ok(())
}

pub(crate) async fn delete_tags(
    st: &AppState,
    _ctx: &RequestContext,
    input: w::DeleteTagsRequest,
) -> Out<()> {
    let ids = input.resources.unwrap_or_default();
    let tags = input.tags.unwrap_or_default();
    st.ctl
        .networks
        .change(|cfg| vpc::delete_tags(cfg, &ids, &tags))
        .await?;
    Ok(())
}

pub(crate) async fn describe_tags(
    st: &AppState,
    _ctx: &RequestContext,
    input: w::DescribeTagsRequest,
) -> Out<w::DescribeTagsResult> {
    let cfg = st.ctl.networks.current();
    let mut all: Vec<(String, &str, String, String)> = vec![];
    let mut add = |id: &str, kind: &'static str, tags: &Tags| {
        for (k, v) in tags {
            all.push((id.to_string(), kind, k.clone(), v.clone()));
        }
    };
    for v in &cfg.vpcs {
        add(&v.id, "vpc", &v.tags);
    }
    for sn in &cfg.subnets {
        add(&sn.id, "subnet", &sn.tags);
    }
    for g in &cfg.security_groups {
        add(&g.id, "security-group", &g.tags);
    }
    let none = Tags::new();
    let mut out = vec![];
    for (id, kind, k, v) in all {
        let attr = |n: &str| match n {
            "resource-id" => Some(s(&id)),
            "resource-type" => Some(s(kind)),
            "key" => Some(s(&k)),
            "value" => Some(s(&v)),
            _ => None,
        };
        if vpc::matches(input.filters.as_deref().unwrap_or_default(), &none, &attr)? {
            out.push(w::TagDescription {
                key: Some(k),
                resource_id: Some(id),
                resource_type: Some(kind.to_string()),
                value: Some(v),
            });
        }
    }
    let (items, next) = page(out, input.max_results, input.next_token.as_deref())?;
    Ok(w::DescribeTagsResult {
        tags: Some(items),
        next_token: next,
    })
}

pub(crate) async fn describe_account_attributes(
    st: &AppState,
    _ctx: &RequestContext,
    input: w::DescribeAccountAttributesRequest,
) -> Out<w::DescribeAccountAttributesResult> {
    let cfg = st.ctl.networks.current();
    let default_vpc = cfg
        .vpcs
        .iter()
        .find(|v| v.is_default)
        .map(|v| v.id.clone())
        .unwrap_or_else(|| "none".into());
    let all = [
        ("supported-platforms", "VPC".to_string()),
        ("default-vpc", default_vpc),
        ("max-instances", "1000".into()),
        ("vpc-max-security-groups-per-interface", "5".into()),
        ("max-elastic-ips", "0".into()),
        ("vpc-max-elastic-ips", "0".into()),
    ];
    let names = input.attribute_names.unwrap_or_default();
    Ok(w::DescribeAccountAttributesResult {
        account_attributes: Some(
            all.iter()
                .filter(|(n, _)| names.is_empty() || names.iter().any(|x| x == n))
                .map(|(n, v)| w::AccountAttribute {
                    attribute_name: Some(n.to_string()),
                    attribute_values: Some(vec![w::AccountAttributeValue {
                        attribute_value: Some(v.clone()),
                    }]),
                })
                .collect(),
        ),
    })
}
