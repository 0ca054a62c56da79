//! The EC2 networking API's rules (issue 20): VPCs, subnets, security
//! groups and their rules, tags and filters, as changes to a
//! [`NetworkConfig`]. Pure: the cluster manager reads the network, applies
//! one of these, and commits it with compare-and-swap; a rejected change
//! returns EC2's error and leaves the network as it was.

use crate::asg::Ec2Error;
use crate::network::{
    allow_all_egress, check_rule, Cidr, NetworkConfig, Rule, SecurityGroupConfig, SubnetConfig,
    Tags, VpcConfig,
};
use berth_wire::ec2 as w;
use std::collections::BTreeSet;

/// Rules per direction of one group (EC2's default quota).
pub const MAX_RULES: usize = 60;
/// Tags per resource.
pub const MAX_TAGS: usize = 50;

/// Makes new ids: `prefix` followed by EC2's 17 hex digits.
pub type NewId<'a> = &'a mut dyn FnMut(&str) -> String;

fn not_found_vpc(id: &str) -> Ec2Error {
    Ec2Error::new(
        "InvalidVpcID.NotFound",
        format!("The vpc ID '{id}' does not exist"),
    )
}

fn not_found_subnet(id: &str) -> Ec2Error {
    Ec2Error::new(
        "InvalidSubnetID.NotFound",
        format!("The subnet ID '{id}' does not exist"),
    )
}

pub fn not_found_group(id: &str) -> Ec2Error {
    Ec2Error::new(
        "InvalidGroup.NotFound",
        format!("The security group '{id}' does not exist"),
    )
}

fn invalid_cidr(cidr: &str, field: &str) -> Ec2Error {
    Ec2Error::invalid(format!(
        "Value ({cidr}) for parameter {field} is invalid. This is not a valid CIDR block."
    ))
}

/// Gives a network read from a bootstrap file what the API would have:
/// a default VPC covering subnets that name none, a `default` group in
/// every VPC, names for unnamed groups, and ids for rules.
pub fn settle(cfg: &mut NetworkConfig, new_id: NewId) -> Result<(), String> {
    let homeless = cfg.subnets.iter().any(|s| s.vpc_id.is_empty())
        || cfg.security_groups.iter().any(|g| g.vpc_id.is_empty());
    if homeless && !cfg.vpcs.iter().any(|v| v.is_default) {
        let blocks: Vec<Cidr> = cfg
            .subnets
            .iter()
            .filter(|s| s.vpc_id.is_empty())
            .filter_map(|s| Cidr::parse(&s.cidr))
            .collect();
        let cidr = covering(&blocks).unwrap_or(Cidr {
            network: std::net::Ipv4Addr::new(10, 128, 0, 0),
            prefix: 16,
        });
        if cidr.prefix < 16 {
            return Err(format!(
                "the subnets that name no vpc span {cidr}, wider than a VPC's /16: name their vpcs"
            ));
        }
        cfg.vpcs.push(VpcConfig {
            id: crate::network::DEFAULT_VPC.into(),
            cidr: cidr.to_string(),
            is_default: true,
            tags: Tags::new(),
        });
    }
    let default = cfg.vpcs.iter().find(|v| v.is_default).map(|v| v.id.clone());
    let mut first_in_zone = BTreeSet::new();
    for s in &mut cfg.subnets {
        if s.vpc_id.is_empty() {
            s.vpc_id = default.clone().unwrap_or_default();
            s.default_for_az = first_in_zone.insert(s.availability_zone.clone());
        }
    }
    for g in &mut cfg.security_groups {
        if g.vpc_id.is_empty() {
            g.vpc_id = default.clone().unwrap_or_default();
        }
        if g.name.is_empty() {
            g.name = if g.id == "sg-default" {
                "default".into()
            } else {
                g.id.clone()
            };
        }
        if g.description.is_empty() {
            g.description = format!("{} (from the bootstrap file)", g.name);
        }
        for r in g.ingress.iter_mut().chain(g.egress.iter_mut()) {
            if r.id.is_empty() {
                r.id = new_id("sgr-");
            }
            // A file's "all protocols" rule may carry ports; EC2 keeps none.
            if r.protocol == "-1" {
                (r.from_port, r.to_port) = (0, 0);
            }
        }
    }
    for v in cfg.vpcs.clone() {
        let has_default = cfg
            .security_groups
            .iter()
            .any(|g| g.vpc_id == v.id && g.name == "default");
        if !has_default {
            let g = default_group(&v.id, new_id);
            cfg.security_groups.push(g);
        }
    }
    Ok(())
}

/// The smallest block that holds every one of `blocks`.
fn covering(blocks: &[Cidr]) -> Option<Cidr> {
    let first = blocks.first()?;
    let mut prefix = first.prefix;
    let net = u32::from(first.network);
    for b in blocks {
        prefix = prefix.min(b.prefix);
        let diff = net ^ u32::from(b.network);
        prefix = prefix.min(diff.leading_zeros() as u8);
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    Some(Cidr {
        network: std::net::Ipv4Addr::from(net & mask),
        prefix,
    })
}

/// A VPC's own group: members reach each other, everything goes out.
fn default_group(vpc: &str, new_id: NewId) -> SecurityGroupConfig {
    let id = new_id("sg-");
    SecurityGroupConfig {
        ingress: vec![Rule {
            id: new_id("sgr-"),
            protocol: "-1".into(),
            from_port: 0,
            to_port: 0,
            cidr: None,
            cidr_ipv6: None,
            source_group: Some(id.clone()),
            description: None,
        }],
        egress: vec![all_out(new_id)],
        id,
        name: "default".into(),
        description: "default VPC security group".into(),
        vpc_id: vpc.into(),
        tags: Tags::new(),
    }
}

fn all_out(new_id: NewId) -> Rule {
    let mut all = allow_all_egress();
    let mut r = all.remove(0);
    r.id = new_id("sgr-");
    r
}

/// Tags as given in a request (`TagSpecification`s for `resource_type`,
/// or a `Tag` list), checked as EC2 checks them.
pub fn tags_of(
    specs: Option<&[w::TagSpecification]>,
    resource_type: &str,
) -> Result<Tags, Ec2Error> {
    let mut out = Tags::new();
    for s in specs.unwrap_or_default() {
        match s.resource_type.as_deref() {
            Some(t) if t == resource_type => {}
            other => {
                return Err(Ec2Error::invalid(format!(
                    "'{}' is not a valid taggable resource type for this operation.",
                    other.unwrap_or("")
                )))
            }
        }
        for t in s.tags.as_deref().unwrap_or_default() {
            put_tag(&mut out, t)?;
        }
    }
    Ok(out)
}

fn put_tag(tags: &mut Tags, t: &w::Tag) -> Result<(), Ec2Error> {
    let key = t.key.clone().unwrap_or_default();
    if key.is_empty() || key.len() > 128 {
        return Err(Ec2Error::invalid(
            "Tag keys must be between 1 and 128 characters long (Tag.Key).",
        ));
    }
    if key.starts_with("aws:") {
        return Err(Ec2Error::invalid(
            "Tag keys starting with 'aws:' are reserved for internal use",
        ));
    }
    let value = t.value.clone().unwrap_or_default();
    if value.len() > 256 {
        return Err(Ec2Error::invalid(format!(
            "Tag value for key '{key}' is longer than 256 characters (Tag.Value)."
        )));
    }
    tags.insert(key, value);
    if tags.len() > MAX_TAGS {
        return Err(Ec2Error::new(
            "TagLimitExceeded",
            format!("The maximum number of tags per resource is {MAX_TAGS}"),
        ));
    }
    Ok(())
}

fn no_overlap(cfg: &NetworkConfig, c: &Cidr, skip_vpc: Option<&str>) -> Result<(), Ec2Error> {
    for v in &cfg.vpcs {
        if Some(v.id.as_str()) == skip_vpc {
            continue;
        }
        if Cidr::parse(&v.cidr).is_some_and(|o| o.overlaps(c)) {
            return Err(Ec2Error::new(
                "InvalidVpc.Range",
                format!(
                    "The CIDR '{c}' overlaps {} ({}): Berth's VPCs share one routing domain, so their blocks must not overlap.",
                    v.id, v.cidr
                ),
            ));
        }
    }
    Ok(())
}

/// CreateVpc: a VPC and its default group.
pub fn create_vpc(
    cfg: &mut NetworkConfig,
    cidr: Option<&str>,
    tags: Tags,
    new_id: NewId,
) -> Result<VpcConfig, Ec2Error> {
    let cidr = cidr.filter(|c| !c.is_empty()).ok_or_else(|| {
        Ec2Error::new(
            "MissingParameter",
            "Either 'cidrBlock' or 'ipv4IpamPoolId' should be provided.",
        )
    })?;
    let c = Cidr::parse(cidr).ok_or_else(|| invalid_cidr(cidr, "cidrBlock"))?;
    if !(16..=28).contains(&c.prefix) {
        return Err(Ec2Error::new(
            "InvalidVpc.Range",
            format!("The CIDR '{cidr}' is invalid."),
        ));
    }
    no_overlap(cfg, &c, None)?;
    let vpc = VpcConfig {
        id: new_id("vpc-"),
        cidr: c.to_string(),
        is_default: false,
        tags,
    };
    let group = default_group(&vpc.id, new_id);
    cfg.vpcs.push(vpc.clone());
    cfg.security_groups.push(group);
    Ok(vpc)
}

/// DeleteVpc: only once its subnets and groups (but its default one) are
/// gone, as in EC2.
pub fn delete_vpc(cfg: &mut NetworkConfig, id: &str) -> Result<(), Ec2Error> {
    if !cfg.vpcs.iter().any(|v| v.id == id) {
        return Err(not_found_vpc(id));
    }
    let busy = cfg.subnets.iter().any(|s| s.vpc_id == id)
        || cfg
            .security_groups
            .iter()
            .any(|g| g.vpc_id == id && g.name != "default");
    if busy {
        return Err(Ec2Error::new(
            "DependencyViolation",
            format!("The vpc '{id}' has dependencies and cannot be deleted."),
        ));
    }
    cfg.vpcs.retain(|v| v.id != id);
    cfg.security_groups.retain(|g| g.vpc_id != id);
    Ok(())
}

/// CreateSubnet: a block of its VPC that overlaps no other subnet, in a
/// zone Berth has (`zones`); without a zone, the one of those with the
/// fewest subnets of the VPC.
pub fn create_subnet(
    cfg: &mut NetworkConfig,
    vpc_id: Option<&str>,
    cidr: Option<&str>,
    zone: Option<&str>,
    zones: &[String],
    tags: Tags,
    new_id: NewId,
) -> Result<SubnetConfig, Ec2Error> {
    let vpc_id = vpc_id
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Ec2Error::missing("vpcId"))?;
    let cidr = cidr
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Ec2Error::missing("cidrBlock"))?;
    let vpc = cfg
        .vpcs
        .iter()
        .find(|v| v.id == vpc_id)
        .ok_or_else(|| not_found_vpc(vpc_id))?;
    let c = Cidr::parse(cidr).ok_or_else(|| invalid_cidr(cidr, "cidrBlock"))?;
    let range = || {
        Ec2Error::new(
            "InvalidSubnet.Range",
            format!("The CIDR '{cidr}' is invalid."),
        )
    };
    let v = Cidr::parse(&vpc.cidr).ok_or_else(range)?;
    if !((16..=28).contains(&c.prefix) && v.contains(c.network) && v.contains(c.last())) {
        return Err(range());
    }
    if cfg
        .subnets
        .iter()
        .filter_map(|s| Cidr::parse(&s.cidr))
        .any(|o| o.overlaps(&c))
    {
        return Err(Ec2Error::new(
            "InvalidSubnet.Conflict",
            format!("The CIDR '{cidr}' conflicts with another subnet"),
        ));
    }
    let zone = match zone.filter(|z| !z.is_empty()) {
        Some(z) if zones.iter().any(|k| k == z) => z.to_string(),
        Some(z) => {
            return Err(Ec2Error::invalid(format!(
                "Value ({z}) for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: {}.",
                zones.join(", ")
            )))
        }
        None => zones
            .iter()
            .min_by_key(|z| {
                cfg.subnets
                    .iter()
                    .filter(|s| s.vpc_id == vpc_id && &&s.availability_zone == z)
                    .count()
            })
            .cloned()
            .ok_or_else(|| Ec2Error::invalid("Berth knows no availability zone yet: start a host first."))?,
    };
    let subnet = SubnetConfig {
        id: new_id("subnet-"),
        cidr: c.to_string(),
        availability_zone: zone,
        vpc_id: vpc_id.to_string(),
        default_for_az: false,
        map_public_ip_on_launch: false,
        tags,
    };
    cfg.subnets.push(subnet.clone());
    Ok(subnet)
}

/// DeleteSubnet: `in_use` when a task holds one of its addresses.
pub fn delete_subnet(cfg: &mut NetworkConfig, id: &str, in_use: bool) -> Result<(), Ec2Error> {
    if cfg.subnet(id).is_none() {
        return Err(not_found_subnet(id));
    }
    if in_use {
        return Err(Ec2Error::new(
            "DependencyViolation",
            format!("The subnet '{id}' has dependencies and cannot be deleted."),
        ));
    }
    cfg.subnets.retain(|s| s.id != id);
    Ok(())
}

/// CreateSecurityGroup: in the given VPC or the default one.
pub fn create_group(
    cfg: &mut NetworkConfig,
    name: Option<&str>,
    description: Option<&str>,
    vpc_id: Option<&str>,
    tags: Tags,
    new_id: NewId,
) -> Result<SecurityGroupConfig, Ec2Error> {
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Ec2Error::missing("groupName"))?;
    let description = description
        .filter(|d| !d.is_empty())
        .ok_or_else(|| Ec2Error::missing("groupDescription"))?;
    if name.len() > 255 || description.len() > 255 {
        return Err(Ec2Error::invalid(
            "Value for groupName and groupDescription must be at most 255 characters.",
        ));
    }
    if name == "default" {
        return Err(Ec2Error::new(
            "InvalidGroup.Reserved",
            "The security group 'default' is reserved",
        ));
    }
    if name.starts_with("sg-") {
        return Err(Ec2Error::invalid(
            "Group names may not be in the format sg-*",
        ));
    }
    let vpc_id = match vpc_id.filter(|v| !v.is_empty()) {
        Some(v) if cfg.vpcs.iter().any(|x| x.id == v) => v.to_string(),
        Some(v) => return Err(not_found_vpc(v)),
        None => cfg
            .vpcs
            .iter()
            .find(|v| v.is_default)
            .map(|v| v.id.clone())
            .ok_or_else(|| Ec2Error::new("VPCIdNotSpecified", "No default VPC for this user"))?,
    };
    if cfg
        .security_groups
        .iter()
        .any(|g| g.vpc_id == vpc_id && g.name == name)
    {
        return Err(Ec2Error::new(
            "InvalidGroup.Duplicate",
            format!("The security group '{name}' already exists for VPC '{vpc_id}'"),
        ));
    }
    let group = SecurityGroupConfig {
        id: new_id("sg-"),
        name: name.to_string(),
        description: description.to_string(),
        vpc_id,
        ingress: vec![],
        egress: vec![all_out(new_id)],
        tags,
    };
    cfg.security_groups.push(group.clone());
    Ok(group)
}

/// A group by id, or by name in the default VPC (EC2's `GroupName`).
pub fn find_group(
    cfg: &NetworkConfig,
    id: Option<&str>,
    name: Option<&str>,
) -> Result<usize, Ec2Error> {
    match (id.filter(|i| !i.is_empty()), name.filter(|n| !n.is_empty())) {
        (Some(id), _) => cfg
            .security_groups
            .iter()
            .position(|g| g.id == id)
            .ok_or_else(|| not_found_group(id)),
        (None, Some(name)) => {
            let default = cfg
                .vpcs
                .iter()
                .find(|v| v.is_default)
                .map(|v| v.id.as_str());
            cfg.security_groups
                .iter()
                .position(|g| Some(g.vpc_id.as_str()) == default && g.name == name)
                .ok_or_else(|| {
                    Ec2Error::new(
                        "InvalidGroup.NotFound",
                        format!(
                            "The security group '{name}' does not exist in default VPC '{}'",
                            default.unwrap_or("none")
                        ),
                    )
                })
        }
        (None, None) => Err(Ec2Error::missing("groupId")),
    }
}

/// DeleteSecurityGroup: never a VPC's default group; not while another
/// group's rule names it or `in_use` (tasks or load balancers in it).
pub fn delete_group(cfg: &mut NetworkConfig, at: usize, in_use: bool) -> Result<(), Ec2Error> {
    let g = &cfg.security_groups[at];
    if g.name == "default" {
        return Err(Ec2Error::new(
            "CannotDelete",
            format!(
                "the specified group: \"{}\" name: \"default\" cannot be deleted by a user",
                g.id
            ),
        ));
    }
    let referenced = cfg.security_groups.iter().any(|o| {
        o.id != g.id
            && o.ingress
                .iter()
                .chain(&o.egress)
                .any(|r| r.source_group.as_deref() == Some(&g.id))
    });
    if referenced || in_use {
        return Err(Ec2Error::new(
            "DependencyViolation",
            format!("resource {} has a dependent object", g.id),
        ));
    }
    cfg.security_groups.remove(at);
    Ok(())
}

/// An EC2 protocol as Berth stores it: `tcp`, `udp`, `icmp`, `-1` or a
/// number.
fn protocol(p: Option<&str>) -> Result<String, Ec2Error> {
    let p = p
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Ec2Error::missing("ipProtocol"))?;
    Ok(match p.to_ascii_lowercase().as_str() {
        "tcp" | "6" => "tcp".into(),
        "udp" | "17" => "udp".into(),
        "icmp" | "1" => "icmp".into(),
        "-1" | "all" => "-1".into(),
        n if n.parse::<u8>().is_ok() => n.parse::<u8>().map(|n| n.to_string()).unwrap_or_default(),
        _ => {
            return Err(Ec2Error::invalid(format!(
                "Invalid value '{p}' for IP protocol. Unknown protocol."
            )))
        }
    })
}

/// The rules a request's permissions stand for: one per peer. Group peers
/// are resolved by id, or by name within `vpc`.
pub fn rules_of(
    cfg: &NetworkConfig,
    vpc: &str,
    perms: &[w::IpPermission],
) -> Result<Vec<Rule>, Ec2Error> {
    let mut out = vec![];
    for p in perms {
        let protocol = protocol(p.ip_protocol.as_deref())?;
        let (from_port, to_port) = match protocol.as_str() {
            "tcp" | "udp" => match (p.from_port, p.to_port) {
                (Some(f), Some(t)) => (f, t),
                _ => {
                    return Err(Ec2Error::invalid(
                        "Invalid value 'Must specify both from and to ports with TCP/UDP.' for portRange.",
                    ))
                }
            },
            "icmp" => (p.from_port.unwrap_or(-1), p.to_port.unwrap_or(-1)),
            _ => (0, 0),
        };
        let base = Rule {
            id: String::new(),
            protocol,
            from_port,
            to_port,
            cidr: None,
            cidr_ipv6: None,
            source_group: None,
            description: None,
        };
        check_rule(&base).map_err(|e| {
            Ec2Error::invalid(format!(
                "Invalid value for portRange (FromPort, ToPort): {e}."
            ))
        })?;
        let mut peers = 0;
        for r in p.ip_ranges.as_deref().unwrap_or_default() {
            let c = r.cidr_ip.as_deref().unwrap_or_default();
            if Cidr::parse(c).is_none() {
                return Err(Ec2Error::invalid(format!("CIDR block {c} is malformed")));
            }
            peers += 1;
            out.push(Rule {
                cidr: Some(c.to_string()),
                description: r.description.clone(),
                ..base.clone()
            });
        }
        for r in p.ipv6_ranges.as_deref().unwrap_or_default() {
            let c = r.cidr_ipv6.as_deref().unwrap_or_default();
            let ok = c.split_once('/').is_some_and(|(a, n)| {
                a.parse::<std::net::Ipv6Addr>().is_ok() && n.parse::<u8>().is_ok_and(|n| n <= 128)
            });
            if !ok {
                return Err(Ec2Error::invalid(format!("CIDR block {c} is malformed")));
            }
            peers += 1;
            out.push(Rule {
                cidr_ipv6: Some(c.to_string()),
                description: r.description.clone(),
                ..base.clone()
            });
        }
        if let Some(pl) = p.prefix_list_ids.as_deref().unwrap_or_default().first() {
            let id = pl.prefix_list_id.clone().unwrap_or_default();
            return Err(Ec2Error::new(
                "InvalidPrefixListId.NotFound",
                format!("The prefix list '{id}' does not exist."),
            ));
        }
        for g in p.user_id_group_pairs.as_deref().unwrap_or_default() {
            let at = match (g.group_id.as_deref(), g.group_name.as_deref()) {
                (Some(id), _) if !id.is_empty() => cfg
                    .security_groups
                    .iter()
                    .position(|x| x.id == id)
                    .ok_or_else(|| not_found_group(id))?,
                (_, Some(name)) if !name.is_empty() => cfg
                    .security_groups
                    .iter()
                    .position(|x| x.vpc_id == vpc && x.name == name)
                    .ok_or_else(|| not_found_group(name))?,
                _ => return Err(Ec2Error::missing("groupId")),
            };
            let peer = &cfg.security_groups[at];
            if peer.vpc_id != vpc {
                return Err(Ec2Error::invalid(format!(
                    "You have specified two resources that belong to different networks: {} is in {}, not {vpc}.",
                    peer.id, peer.vpc_id
                )));
            }
            peers += 1;
            out.push(Rule {
                source_group: Some(peer.id.clone()),
                description: g.description.clone(),
                ..base.clone()
            });
        }
        if peers == 0 {
            return Err(Ec2Error::missing(
                "ipPermissions (IpRanges, Ipv6Ranges or UserIdGroupPairs)",
            ));
        }
    }
    if out.is_empty() {
        return Err(Ec2Error::missing("ipPermissions"));
    }
    Ok(out)
}

/// How EC2 names a rule in its duplicate message.
fn describe(r: &Rule) -> String {
    let peer = r
        .cidr
        .clone()
        .or_else(|| r.cidr_ipv6.clone())
        .or_else(|| r.source_group.clone())
        .unwrap_or_default();
    match r.ports() {
        Some((f, t)) => format!(
            "peer: {peer}, {}, from port: {f}, to port: {t}, ALLOW",
            r.protocol.to_ascii_uppercase()
        ),
        None if r.protocol == "-1" => format!("peer: {peer}, ALL, ALLOW"),
        None => format!("peer: {peer}, {}, ALLOW", r.protocol),
    }
}

/// Authorize...: adds the rules, none of which may be there already.
/// Returns them with their new ids.
pub fn authorize(
    cfg: &mut NetworkConfig,
    at: usize,
    egress: bool,
    rules: Vec<Rule>,
    new_id: NewId,
) -> Result<Vec<Rule>, Ec2Error> {
    let g = &mut cfg.security_groups[at];
    let list = if egress {
        &mut g.egress
    } else {
        &mut g.ingress
    };
    let mut added: Vec<Rule> = vec![];
    for mut r in rules {
        if list.iter().chain(&added).any(|o| o.same_as(&r)) {
            return Err(Ec2Error::new(
                "InvalidPermission.Duplicate",
                format!("the specified rule \"{}\" already exists", describe(&r)),
            ));
        }
        r.id = new_id("sgr-");
        added.push(r);
    }
    if list.len() + added.len() > MAX_RULES {
        return Err(Ec2Error::new(
            "RulesPerSecurityGroupLimitExceeded",
            "The maximum number of rules per security group has been reached.",
        ));
    }
    list.extend(added.iter().cloned());
    Ok(added)
}

/// Revoke...: removes rules given as permissions or by id; every one must
/// be there.
pub fn revoke(
    cfg: &mut NetworkConfig,
    at: usize,
    egress: bool,
    rules: &[Rule],
    ids: &[String],
) -> Result<(), Ec2Error> {
    let g = &mut cfg.security_groups[at];
    let group = g.id.clone();
    let list = if egress {
        &mut g.egress
    } else {
        &mut g.ingress
    };
    for id in ids {
        if !list.iter().any(|r| &r.id == id) {
            return Err(Ec2Error::new(
                "InvalidSecurityGroupRuleId.NotFound",
                format!(
                    "The security group rule ID '{id}' does not exist in security group '{group}'"
                ),
            ));
        }
    }
    for r in rules {
        if !list.iter().any(|o| o.same_as(r)) {
            return Err(Ec2Error::new(
                "InvalidPermission.NotFound",
                "The specified rule does not exist in this security group.",
            ));
        }
    }
    list.retain(|o| !ids.contains(&o.id) && !rules.iter().any(|r| r.same_as(o)));
    Ok(())
}

/// The tags of a resource by id, to change them.
fn tags_mut<'a>(cfg: &'a mut NetworkConfig, id: &str) -> Result<&'a mut Tags, Ec2Error> {
    let found = if id.starts_with("vpc-") {
        cfg.vpcs
            .iter_mut()
            .find(|v| v.id == id)
            .map(|v| &mut v.tags)
    } else if id.starts_with("subnet-") {
        cfg.subnets
            .iter_mut()
            .find(|s| s.id == id)
            .map(|s| &mut s.tags)
    } else if id.starts_with("sg-") {
        cfg.security_groups
            .iter_mut()
            .find(|g| g.id == id)
            .map(|g| &mut g.tags)
    } else {
        return Err(Ec2Error::new(
            "InvalidID",
            format!("The ID '{id}' is not valid"),
        ));
    };
    found.ok_or_else(|| {
        if id.starts_with("vpc-") {
            not_found_vpc(id)
        } else if id.starts_with("subnet-") {
            not_found_subnet(id)
        } else {
            not_found_group(id)
        }
    })
}

/// CreateTags: on every resource, or on none.
pub fn create_tags(
    cfg: &mut NetworkConfig,
    ids: &[String],
    tags: &[w::Tag],
) -> Result<(), Ec2Error> {
    if ids.is_empty() {
        return Err(Ec2Error::missing("resourceIdSet"));
    }
    if tags.is_empty() {
        return Err(Ec2Error::missing("tagSet"));
    }
    for id in ids {
        let t = tags_mut(cfg, id)?;
        for tag in tags {
            put_tag(t, tag)?;
        }
    }
    Ok(())
}

/// DeleteTags: a tag given with a value goes only if its value matches;
/// no tags at all removes every tag.
pub fn delete_tags(
    cfg: &mut NetworkConfig,
    ids: &[String],
    tags: &[w::Tag],
) -> Result<(), Ec2Error> {
    if ids.is_empty() {
        return Err(Ec2Error::missing("resourceIdSet"));
    }
    for id in ids {
        let t = tags_mut(cfg, id)?;
        if tags.is_empty() {
            t.clear();
        }
        for tag in tags {
            let key = tag.key.clone().unwrap_or_default();
            let matches = match &tag.value {
                Some(v) => t.get(&key) == Some(v),
                None => true,
            };
            if matches {
                t.remove(&key);
            }
        }
    }
    Ok(())
}

/// EC2's filters: every filter must match (a filter matches when any of
/// its values does; `*` and `?` are wildcards). `attr` gives a resource's
/// values for a filter name, None for a name the resource has no filter
/// of; `tag:Key`, `tag-key` and `tag-value` work on every resource.
pub fn matches(
    filters: &[w::Filter],
    tags: &Tags,
    attr: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<bool, Ec2Error> {
    for f in filters {
        let name = f.name.as_deref().unwrap_or_default();
        let have: Vec<String> = if let Some(key) = name.strip_prefix("tag:") {
            tags.get(key).cloned().into_iter().collect()
        } else if name == "tag-key" {
            tags.keys().cloned().collect()
        } else if name == "tag-value" {
            tags.values().cloned().collect()
        } else {
            attr(name).ok_or_else(|| {
                Ec2Error::new(
                    "InvalidParameterValue",
                    format!("The filter '{name}' is invalid"),
                )
            })?
        };
        let wanted = f.values.as_deref().unwrap_or_default();
        if !wanted.iter().any(|p| have.iter().any(|h| wildcard(p, h))) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `*` any run of characters, `?` any one; `\\` escapes.
fn wildcard(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|i| go(&p[1..], &t[i..])),
            Some('?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some('\\') if p.len() > 1 => t.first() == Some(&p[1]) && go(&p[2..], &t[1..]),
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> impl FnMut(&str) -> String {
        let mut n = 0;
        move |p: &str| {
            n += 1;
            format!("{p}{n:017x}")
        }
    }

    fn perm(proto: &str, from: i32, to: i32, cidr: &str) -> w::IpPermission {
        w::IpPermission {
            ip_protocol: Some(proto.into()),
            from_port: Some(from),
            to_port: Some(to),
            ip_ranges: Some(vec![w::IpRange {
                cidr_ip: Some(cidr.into()),
                description: None,
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn a_bootstrap_file_gets_a_default_vpc_and_groups() {
        let mut cfg: NetworkConfig = serde_json::from_value(serde_json::json!({
            "subnets": [
                {"id": "subnet-a", "cidr": "10.20.1.0/24", "availabilityZone": "z1"},
                {"id": "subnet-b", "cidr": "10.20.2.0/24", "availabilityZone": "z1"}
            ],
            "securityGroups": [{"id": "sg-web", "ingress": [{"protocol": "tcp", "fromPort": 80, "toPort": 80, "cidr": "0.0.0.0/0"}]}]
        }))
        .expect("config");
        let mut id = ids();
        settle(&mut cfg, &mut id).expect("settles");
        assert_eq!(cfg.vpcs[0].cidr, "10.20.0.0/22");
        assert!(cfg.vpcs[0].is_default);
        assert!(cfg.subnets[0].default_for_az && !cfg.subnets[1].default_for_az);
        let web = &cfg.security_groups[0];
        assert_eq!((web.name.as_str(), web.egress.len()), ("sg-web", 1));
        assert!(web.ingress[0].id.starts_with("sgr-"));
        assert!(cfg.security_groups.iter().any(|g| g.name == "default"));
        assert_eq!(cfg.validate(), Ok(()));

        let mut wide: NetworkConfig = serde_json::from_value(serde_json::json!({
            "subnets": [
                {"id": "subnet-a", "cidr": "10.20.1.0/24", "availabilityZone": "z1"},
                {"id": "subnet-b", "cidr": "192.168.2.0/24", "availabilityZone": "z1"}
            ]
        }))
        .expect("config");
        assert!(settle(&mut wide, &mut id).is_err());
    }

    #[test]
    fn vpcs_and_subnets_get_ec2_errors_and_change_nothing_when_refused() {
        let mut cfg = NetworkConfig::local_default();
        let mut id = ids();
        let zones = vec!["local-1a".to_string(), "local-1b".to_string()];
        let err = |r: Result<(), Ec2Error>| r.expect_err("refused").code;
        let before = cfg.clone();
        assert_eq!(
            err(create_vpc(&mut cfg, Some("10.128.5.0/24"), Tags::new(), &mut id).map(drop)),
            "InvalidVpc.Range"
        );
        assert_eq!(
            err(create_vpc(&mut cfg, Some("10.0.0.0/8"), Tags::new(), &mut id).map(drop)),
            "InvalidVpc.Range"
        );
        assert_eq!(
            err(create_vpc(&mut cfg, Some("10.1.0.1/16"), Tags::new(), &mut id).map(drop)),
            "InvalidParameterValue"
        );
        assert_eq!(
            err(create_vpc(&mut cfg, None, Tags::new(), &mut id).map(drop)),
            "MissingParameter"
        );
        assert_eq!(cfg, before);

        let vpc = create_vpc(&mut cfg, Some("10.50.0.0/16"), Tags::new(), &mut id).expect("vpc");
        assert!(cfg
            .security_groups
            .iter()
            .any(|g| g.vpc_id == vpc.id && g.name == "default"));
        let v = Some(vpc.id.as_str());
        let before = cfg.clone();
        assert_eq!(
            err(create_subnet(
                &mut cfg,
                v,
                Some("10.51.0.0/24"),
                None,
                &zones,
                Tags::new(),
                &mut id
            )
            .map(drop)),
            "InvalidSubnet.Range"
        );
        assert_eq!(
            err(create_subnet(
                &mut cfg,
                v,
                Some("10.50.0.0/29"),
                None,
                &zones,
                Tags::new(),
                &mut id
            )
            .map(drop)),
            "InvalidSubnet.Range"
        );
        assert_eq!(
            err(create_subnet(
                &mut cfg,
                v,
                Some("10.50.0.0/24"),
                Some("mars-1a"),
                &zones,
                Tags::new(),
                &mut id
            )
            .map(drop)),
            "InvalidParameterValue"
        );
        assert_eq!(
            err(create_subnet(
                &mut cfg,
                Some("vpc-nope"),
                Some("10.50.0.0/24"),
                None,
                &zones,
                Tags::new(),
                &mut id
            )
            .map(drop)),
            "InvalidVpcID.NotFound"
        );
        assert_eq!(cfg, before);
        let s = create_subnet(
            &mut cfg,
            v,
            Some("10.50.0.0/24"),
            None,
            &zones,
            Tags::new(),
            &mut id,
        )
        .expect("subnet");
        assert_eq!(s.availability_zone, "local-1a");
        let t = create_subnet(
            &mut cfg,
            v,
            Some("10.50.1.0/24"),
            None,
            &zones,
            Tags::new(),
            &mut id,
        )
        .expect("subnet");
        assert_eq!(
            t.availability_zone, "local-1b",
            "the zone with the fewest subnets"
        );
        assert_eq!(
            err(create_subnet(
                &mut cfg,
                v,
                Some("10.50.0.128/25"),
                None,
                &zones,
                Tags::new(),
                &mut id
            )
            .map(drop)),
            "InvalidSubnet.Conflict"
        );

        assert_eq!(err(delete_vpc(&mut cfg, &vpc.id)), "DependencyViolation");
        assert_eq!(
            err(delete_subnet(&mut cfg, &s.id, true)),
            "DependencyViolation"
        );
        delete_subnet(&mut cfg, &s.id, false).expect("deleted");
        delete_subnet(&mut cfg, &t.id, false).expect("deleted");
        assert_eq!(
            err(delete_subnet(&mut cfg, &t.id, false)),
            "InvalidSubnetID.NotFound"
        );
        delete_vpc(&mut cfg, &vpc.id).expect("deleted with its default group");
        assert!(!cfg.security_groups.iter().any(|g| g.vpc_id == vpc.id));
    }

    #[test]
    fn rules_are_added_and_removed_as_ec2_does() {
        let mut cfg = NetworkConfig::local_default();
        let mut id = ids();
        let err = |r: Result<(), Ec2Error>| r.expect_err("refused");
        let g = create_group(
            &mut cfg,
            Some("web"),
            Some("web tier"),
            None,
            Tags::new(),
            &mut id,
        )
        .expect("group");
        assert_eq!(g.vpc_id, "vpc-local");
        assert_eq!(
            err(create_group(
                &mut cfg,
                Some("web"),
                Some("again"),
                None,
                Tags::new(),
                &mut id
            )
            .map(drop))
            .code,
            "InvalidGroup.Duplicate"
        );
        assert_eq!(
            err(create_group(
                &mut cfg,
                Some("default"),
                Some("x"),
                None,
                Tags::new(),
                &mut id
            )
            .map(drop))
            .code,
            "InvalidGroup.Reserved"
        );
        assert_eq!(
            err(create_group(&mut cfg, Some("x"), None, None, Tags::new(), &mut id).map(drop)).code,
            "MissingParameter"
        );
        let at = find_group(&cfg, Some(&g.id), None).expect("found");
        assert_eq!(find_group(&cfg, None, Some("web")), Ok(at));

        let rules = rules_of(&cfg, "vpc-local", &[perm("6", 80, 80, "0.0.0.0/0")]).expect("rules");
        assert_eq!(rules[0].protocol, "tcp");
        let added = authorize(&mut cfg, at, false, rules.clone(), &mut id).expect("added");
        assert!(added[0].id.starts_with("sgr-"));
        let dup = err(authorize(&mut cfg, at, false, rules.clone(), &mut id).map(drop));
        assert_eq!(dup.code, "InvalidPermission.Duplicate");
        assert_eq!(dup.message, "the specified rule \"peer: 0.0.0.0/0, TCP, from port: 80, to port: 80, ALLOW\" already exists");
        for (p, code) in [
            (perm("tcp", 90, 80, "0.0.0.0/0"), "InvalidParameterValue"),
            (perm("tcp", 80, 70000, "0.0.0.0/0"), "InvalidParameterValue"),
            (perm("bogus", 80, 80, "0.0.0.0/0"), "InvalidParameterValue"),
            (perm("tcp", 80, 80, "10.0.0.1/8"), "InvalidParameterValue"),
        ] {
            assert_eq!(err(rules_of(&cfg, "vpc-local", &[p]).map(drop)).code, code);
        }
        let unknown = w::IpPermission {
            ip_protocol: Some("-1".into()),
            user_id_group_pairs: Some(vec![w::UserIdGroupPair {
                group_id: Some("sg-nope".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            err(rules_of(&cfg, "vpc-local", &[unknown]).map(drop)).code,
            "InvalidGroup.NotFound"
        );

        let before = cfg.clone();
        let missing =
            rules_of(&cfg, "vpc-local", &[perm("tcp", 81, 81, "0.0.0.0/0")]).expect("rules");
        assert_eq!(
            err(revoke(&mut cfg, at, false, &missing, &[])).code,
            "InvalidPermission.NotFound"
        );
        assert_eq!(cfg, before);
        revoke(&mut cfg, at, false, &rules, &[]).expect("revoked");
        assert!(cfg.security_groups[at].ingress.is_empty());
        let egress = cfg.security_groups[at].egress[0].id.clone();
        revoke(&mut cfg, at, true, &[], &[egress]).expect("revoked by id");
        assert!(cfg.security_groups[at].egress.is_empty());

        // A group another group's rule names cannot go; the default one never.
        let other = create_group(
            &mut cfg,
            Some("db"),
            Some("db tier"),
            None,
            Tags::new(),
            &mut id,
        )
        .expect("group");
        let o = find_group(&cfg, Some(&other.id), None).expect("found");
        let from_web = w::IpPermission {
            ip_protocol: Some("tcp".into()),
            from_port: Some(5432),
            to_port: Some(5432),
            user_id_group_pairs: Some(vec![w::UserIdGroupPair {
                group_id: Some(g.id.clone()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let r = rules_of(&cfg, "vpc-local", &[from_web]).expect("rules");
        authorize(&mut cfg, o, false, r, &mut id).expect("added");
        assert_eq!(
            err(delete_group(&mut cfg, at, false)).code,
            "DependencyViolation"
        );
        let d = find_group(&cfg, Some("sg-default"), None).expect("found");
        assert_eq!(err(delete_group(&mut cfg, d, false)).code, "CannotDelete");
        assert_eq!(
            err(delete_group(&mut cfg, o, true)).code,
            "DependencyViolation"
        );
        delete_group(&mut cfg, o, false).expect("deleted");
    }

    #[test]
    fn filters_and_tags() {
        let mut cfg = NetworkConfig::local_default();
        let tag = |k: &str, v: Option<&str>| w::Tag {
            key: Some(k.into()),
            value: v.map(String::from),
        };
        create_tags(
            &mut cfg,
            &["subnet-local-1a".into()],
            &[tag("Name", Some("front"))],
        )
        .expect("tagged");
        assert_eq!(
            create_tags(&mut cfg, &["subnet-nope".into()], &[tag("a", Some("b"))])
                .expect_err("unknown")
                .code,
            "InvalidSubnetID.NotFound"
        );
        let s = cfg.subnet("subnet-local-1a").expect("subnet").clone();
        let attr = |n: &str| match n {
            "availability-zone" => Some(vec![s.availability_zone.clone()]),
            _ => None,
        };
        let f = |n: &str, v: &str| w::Filter {
            name: Some(n.into()),
            values: Some(vec![v.into()]),
        };
        assert_eq!(matches(&[f("tag:Name", "fr*")], &s.tags, &attr), Ok(true));
        assert_eq!(matches(&[f("tag:Name", "back")], &s.tags, &attr), Ok(false));
        assert_eq!(
            matches(
                &[f("availability-zone", "local-1?"), f("tag-key", "Name")],
                &s.tags,
                &attr
            ),
            Ok(true)
        );
        assert_eq!(
            matches(&[f("bogus", "x")], &s.tags, &attr)
                .expect_err("bad")
                .code,
            "InvalidParameterValue"
        );
        delete_tags(
            &mut cfg,
            &["subnet-local-1a".into()],
            &[tag("Name", Some("other"))],
        )
        .expect("kept");
        assert_eq!(cfg.subnet("subnet-local-1a").expect("s").tags.len(), 1);
        delete_tags(&mut cfg, &["subnet-local-1a".into()], &[tag("Name", None)]).expect("gone");
        assert!(cfg.subnet("subnet-local-1a").expect("s").tags.is_empty());
    }
}
