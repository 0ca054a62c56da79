//! awsvpc networking's model (issue 5): the subnets and security groups
//! Berth's configuration defines, what RunTask's and CreateService's
//! `networkConfiguration.awsvpcConfiguration` may name, and address
//! allocation within a subnet. Pure; the apiserver and the agent use it.

use crate::EcsError;
use berth_wire::ecs as w;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Subnets and security groups per awsvpcConfiguration, as ECS allows.
pub const MAX_SUBNETS: usize = 16;
pub const MAX_SECURITY_GROUPS: usize = 5;

/// An IPv4 block, `a.b.c.d/n`, kept as its network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = s.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        let mask = Cidr::mask(prefix);
        (u32::from(addr) & !mask == 0).then_some(Cidr {
            network: addr,
            prefix,
        })
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Cidr::mask(self.prefix) == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The last address of the block (its broadcast address).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !Cidr::mask(self.prefix))
    }

    /// The address the host takes on the subnet's bridge: the first one,
    /// as a VPC's router is.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Tags of an EC2 resource, by key.
pub type Tags = BTreeMap<String, String>;

/// A VPC: the block its subnets are cut from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpcConfig {
    pub id: String,
    pub cidr: String,
    #[serde(default)]
    pub is_default: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

/// One subnet of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetConfig {
    pub id: String,
    pub cidr: String,
    pub availability_zone: String,
    /// Empty only in a bootstrap file, which puts it in the default VPC.
    #[serde(default)]
    pub vpc_id: String,
    #[serde(default)]
    pub default_for_az: bool,
    #[serde(default)]
    pub map_public_ip_on_launch: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

/// A rule of a security group: traffic allowed in (ingress) or out
/// (egress), from or to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// `sgr-...`; given when the rule is stored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// `tcp`, `udp`, `icmp`, `-1` (all), or another protocol's number.
    pub protocol: String,
    /// Ports for tcp and udp; the ICMP type and code for icmp (-1: any).
    #[serde(default)]
    pub from_port: i32,
    #[serde(default)]
    pub to_port: i32,
    /// The peer: a CIDR block...
    #[serde(default)]
    pub cidr: Option<String>,
    /// ... an IPv6 block (kept; tasks have no IPv6 addresses to match) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr_ipv6: Option<String>,
    /// ... or the tasks of a security group.
    #[serde(default)]
    pub source_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Rule {
    /// Whether two rules allow the same thing (EC2's duplicate test:
    /// protocol, ports and peer).
    pub fn same_as(&self, other: &Rule) -> bool {
        self.protocol == other.protocol
            && self.ports() == other.ports()
            && self.cidr == other.cidr
            && self.cidr_ipv6 == other.cidr_ipv6
            && self.source_group == other.source_group
    }

    /// The port (or ICMP type and code) range that matters for the
    /// protocol: none for all protocols or a bare protocol number.
    pub fn ports(&self) -> Option<(i32, i32)> {
        matches!(self.protocol.as_str(), "tcp" | "udp" | "icmp")
            .then_some((self.from_port, self.to_port))
    }
}

/// What a new group lets out: everything, as in EC2.
pub fn allow_all_egress() -> Vec<Rule> {
    vec![Rule {
        id: String::new(),
        protocol: "-1".into(),
        from_port: 0,
        to_port: 0,
        cidr: Some("0.0.0.0/0".into()),
        cidr_ipv6: None,
        source_group: None,
        description: None,
    }]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroupConfig {
    pub id: String,
    /// Unique within its VPC; `default` is each VPC's own group.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub vpc_id: String,
    #[serde(default)]
    pub ingress: Vec<Rule>,
    /// Everything out, as EC2 gives a new group, unless said otherwise.
    #[serde(default = "allow_all_egress")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

/// The default VPC of [`NetworkConfig::local_default`].
pub const DEFAULT_VPC: &str = "vpc-local";

/// A VPC's or subnet's block: a network address with a /16 to /28 prefix.
fn block(cidr: &str) -> Result<Cidr, String> {
    let c = Cidr::parse(cidr).ok_or_else(|| format!("{cidr:?} is not a network address/prefix"))?;
    if !(16..=28).contains(&c.prefix) {
        return Err(format!(
            "{cidr}: the prefix must be /16 to /28, as in a VPC"
        ));
    }
    Ok(c)
}

/// A rule's protocol and ports as EC2 allows them (the protocol already
/// in its stored spelling: `tcp`, `udp`, `icmp`, `-1` or a number).
pub fn check_rule(r: &Rule) -> Result<(), String> {
    match r.protocol.as_str() {
        "tcp" | "udp" => {
            if !(0..=65535).contains(&r.from_port) || !(0..=65535).contains(&r.to_port) {
                return Err(format!(
                    "ports {}-{} are not between 0 and 65535",
                    r.from_port, r.to_port
                ));
            }
            if r.from_port > r.to_port {
                return Err(format!(
                    "fromPort {} is above toPort {}",
                    r.from_port, r.to_port
                ));
            }
        }
        "icmp" => {
            if !(-1..=255).contains(&r.from_port) || !(-1..=255).contains(&r.to_port) {
                return Err(format!(
                    "ICMP type {} and code {} must be -1 or between 0 and 255",
                    r.from_port, r.to_port
                ));
            }
        }
        "-1" => {}
        n if n.parse::<u8>().is_ok() => {}
        other => return Err(format!("unknown protocol {other:?}")),
    }
    Ok(())
}

/// How a `subnet-ips/` value names a warm address's holder (a host), not a
/// task: `warm:{host cluster}/{host}`.
pub const WARM_HOLDER: &str = "warm:";

/// An address held warm for a host: a namespace at it is ready on the host
/// before any task is placed there, so a task that takes it skips making
/// one (the slowest part of an awsvpc start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmAddress {
    pub subnet_id: String,
    pub ip: String,
}

/// The name of the bridge network hosts make for `subnet` of the network
/// in `namespace` ([`NetworkConfig::namespace`]).
pub fn bridge_name(namespace: &str, subnet: &str) -> String {
    if namespace.is_empty() {
        format!("berth-{subnet}")
    } else {
        format!("berth-{namespace}-{subnet}")
    }
}

/// The networks Berth offers awsvpc tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfig {
    /// What hosts name this network's subnet bridges with, so that two
    /// networks on one Docker engine (two installations of Berth, or two
    /// accounts) never share a bridge and its addresses. Set when a
    /// store's network is first written; empty in stores written before,
    /// whose bridges keep their old names.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default)]
    pub vpcs: Vec<VpcConfig>,
    #[serde(default)]
    pub subnets: Vec<SubnetConfig>,
    #[serde(default)]
    pub security_groups: Vec<SecurityGroupConfig>,
}

fn id_ok(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 64
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// A rule's ports as the agent takes them: tcp and udp port ranges; for
/// icmp the type and the code, where 65535 stands for any; all ports for
/// everything else. None for a rule no agent could apply.
fn wire_ports(r: &Rule) -> Option<(u16, u16)> {
    let any = |v: i32| {
        if v < 0 {
            Some(u16::MAX)
        } else {
            u16::try_from(v).ok()
        }
    };
    match r.protocol.as_str() {
        "tcp" | "udp" => Some((
            u16::try_from(r.from_port).ok()?,
            u16::try_from(r.to_port).ok()?,
        )),
        "icmp" if r.from_port < 0 => Some((u16::MAX, u16::MAX)),
        "icmp" => Some((any(r.from_port)?, any(r.to_port)?)),
        _ => Some((0, 65535)),
    }
}

impl NetworkConfig {
    /// What a task in `groups` lets in: every ingress rule of every
    /// group, a source group standing for the address of each of its
    /// members (`members`: group id to the addresses of the tasks in it),
    /// sorted and without repeats. Groups the configuration does not
    /// define add nothing, so an unknown one denies rather than allows.
    pub fn ingress_of(
        &self,
        groups: &[String],
        members: &std::collections::HashMap<String, Vec<Ipv4Addr>>,
    ) -> Vec<berth_wire::agent::AllowedIngress> {
        self.allowed(groups, members, false)
    }

    /// What a task in `groups` may send: its groups' egress rules, as
    /// [`NetworkConfig::ingress_of`] reads ingress ones (the peer is the
    /// destination).
    pub fn egress_of(
        &self,
        groups: &[String],
        members: &std::collections::HashMap<String, Vec<Ipv4Addr>>,
    ) -> Vec<berth_wire::agent::AllowedIngress> {
        self.allowed(groups, members, true)
    }

    fn allowed(
        &self,
        groups: &[String],
        members: &std::collections::HashMap<String, Vec<Ipv4Addr>>,
        egress: bool,
    ) -> Vec<berth_wire::agent::AllowedIngress> {
        let mut out = BTreeSet::new();
        for g in groups {
            let Some(group) = self.security_groups.iter().find(|s| &s.id == g) else {
                continue;
            };
            let rules = if egress {
                &group.egress
            } else {
                &group.ingress
            };
            for r in rules {
                let Some((from_port, to_port)) = wire_ports(r) else {
                    continue;
                };
                let peers: Vec<String> = match (&r.cidr, &r.source_group) {
                    (Some(c), _) => vec![c.clone()],
                    (None, Some(sg)) => members
                        .get(sg)
                        .into_iter()
                        .flatten()
                        .map(|ip| format!("{ip}/32"))
                        .collect(),
                    (None, None) => vec![],
                };
                for source in peers {
                    out.insert(berth_wire::agent::AllowedIngress {
                        protocol: r.protocol.clone(),
                        from_port,
                        to_port,
                        source,
                    });
                }
            }
        }
        out.into_iter().collect()
    }

    /// What Berth offers when no configuration is given: the default VPC
    /// `vpc-local` (10.128.0.0/16) with one /20 subnet per local zone
    /// (`subnet-local-1a` 10.128.0.0/20 in local-1a, and so on for
    /// local-1b and local-1c), its default group `sg-default`, which lets
    /// in traffic from its own members only, as a VPC's default group
    /// does, and `sg-allow-all`, which lets in everything from anywhere.
    pub fn local_default() -> NetworkConfig {
        let group = |id: &str, name: &str, description: &str, peer: Rule| SecurityGroupConfig {
            id: id.into(),
            name: name.into(),
            description: description.into(),
            vpc_id: DEFAULT_VPC.into(),
            ingress: vec![peer],
            egress: allow_all_egress(),
            tags: Tags::new(),
        };
        let all_from = |cidr: Option<&str>, group: Option<&str>| Rule {
            id: String::new(),
            protocol: "-1".into(),
            from_port: 0,
            to_port: 0,
            cidr: cidr.map(String::from),
            cidr_ipv6: None,
            source_group: group.map(String::from),
            description: None,
        };
        NetworkConfig {
            namespace: String::new(),
            vpcs: vec![VpcConfig {
                id: DEFAULT_VPC.into(),
                cidr: "10.128.0.0/16".into(),
                is_default: true,
                tags: Tags::new(),
            }],
            subnets: ["a", "b", "c"]
                .iter()
                .enumerate()
                .map(|(i, z)| SubnetConfig {
                    id: format!("subnet-local-1{z}"),
                    cidr: format!("10.128.{}.0/20", i * 16),
                    availability_zone: format!("local-1{z}"),
                    vpc_id: DEFAULT_VPC.into(),
                    default_for_az: true,
                    map_public_ip_on_launch: false,
                    tags: Tags::new(),
                })
                .collect(),
            security_groups: vec![
                group(
                    "sg-default",
                    "default",
                    "default VPC security group",
                    all_from(None, Some("sg-default")),
                ),
                group(
                    "sg-allow-all",
                    "allow-all",
                    "everything from anywhere",
                    all_from(Some("0.0.0.0/0"), None),
                ),
            ],
        }
    }

    /// Checks a configuration: ids shaped like EC2's (`vpc-...`,
    /// `subnet-...`, `sg-...`) and unique; CIDRs valid, /16 to /28 as in
    /// a VPC, and not overlapping (VPCs share one routing domain, so
    /// theirs must not overlap either); subnets inside their VPC; group
    /// names unique per VPC; rules naming known groups.
    pub fn validate(&self) -> Result<(), String> {
        let mut vpcs: Vec<(String, Cidr)> = vec![];
        for v in &self.vpcs {
            if !id_ok(&v.id, "vpc-") {
                return Err(format!(
                    "vpc id {:?} must look like vpc-<letters and digits>",
                    v.id
                ));
            }
            let c = block(&v.cidr).map_err(|e| format!("vpc {}: {e}", v.id))?;
            for (other, oc) in &vpcs {
                if other == &v.id {
                    return Err(format!("vpc {} is defined twice", v.id));
                }
                if oc.overlaps(&c) {
                    return Err(format!("vpcs {other} and {} overlap", v.id));
                }
            }
            vpcs.push((v.id.clone(), c));
        }
        let mut seen: Vec<(String, Cidr)> = vec![];
        for s in &self.subnets {
            if !id_ok(&s.id, "subnet-") {
                return Err(format!(
                    "subnet id {:?} must look like subnet-<letters and digits>",
                    s.id
                ));
            }
            let c = block(&s.cidr).map_err(|e| format!("subnet {}: {e}", s.id))?;
            if s.availability_zone.is_empty() {
                return Err(format!("subnet {}: availabilityZone is required", s.id));
            }
            if !s.vpc_id.is_empty() {
                match vpcs.iter().find(|(id, _)| id == &s.vpc_id) {
                    None => return Err(format!("subnet {}: no vpc {}", s.id, s.vpc_id)),
                    Some((_, v)) if !(v.contains(c.network) && v.contains(c.last())) => {
                        return Err(format!("subnet {} is outside vpc {}", s.id, s.vpc_id))
                    }
                    Some(_) => {}
                }
            }
            for (other, oc) in &seen {
                if other == &s.id {
                    return Err(format!("subnet {} is defined twice", s.id));
                }
                if oc.overlaps(&c) {
                    return Err(format!("subnets {other} and {} overlap", s.id));
                }
            }
            seen.push((s.id.clone(), c));
        }
        let groups: BTreeSet<&str> = self.security_groups.iter().map(|g| g.id.as_str()).collect();
        if groups.len() != self.security_groups.len() {
            return Err("a security group is defined twice".into());
        }
        let mut names = BTreeSet::new();
        for g in &self.security_groups {
            if !id_ok(&g.id, "sg-") {
                return Err(format!(
                    "security group id {:?} must look like sg-<letters and digits>",
                    g.id
                ));
            }
            if !g.vpc_id.is_empty() && !vpcs.iter().any(|(id, _)| id == &g.vpc_id) {
                return Err(format!("{}: no vpc {}", g.id, g.vpc_id));
            }
            if !g.name.is_empty() && !names.insert((g.vpc_id.as_str(), g.name.as_str())) {
                return Err(format!(
                    "{}: the name {:?} is taken in its vpc",
                    g.id, g.name
                ));
            }
            for r in g.ingress.iter().chain(&g.egress) {
                check_rule(r).map_err(|e| format!("{}: {e}", g.id))?;
                match (&r.cidr, &r.source_group) {
                    (Some(c), None) if Cidr::parse(c).is_some() => {}
                    (None, Some(sg)) if groups.contains(sg.as_str()) => {}
                    _ => {
                        return Err(format!(
                            "{}: each rule names either a valid cidr or a defined sourceGroup",
                            g.id
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    pub fn subnet(&self, id: &str) -> Option<&SubnetConfig> {
        self.subnets.iter().find(|s| s.id == id)
    }

    pub fn security_group(&self, id: &str) -> Option<&SecurityGroupConfig> {
        self.security_groups.iter().find(|g| g.id == id)
    }

    /// What an awsvpc task asks for, checked as ECS checks it. `awsvpc`
    /// says whether the task definition's networkMode is awsvpc.
    pub fn awsvpc(
        &self,
        awsvpc: bool,
        given: Option<&w::NetworkConfiguration>,
        launch_type: &str,
    ) -> Result<Option<AwsVpc>, EcsError> {
        let config = given.and_then(|n| n.awsvpc_configuration.as_ref());
        match (awsvpc, config) {
            (false, None) => return Ok(None),
            (false, Some(_)) => {
                return Err(EcsError::invalid(
                    "Network Configuration is not valid for the given networkMode of this task definition.",
                ))
            }
            (true, None) => {
                return Err(EcsError::invalid(
                    "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
                ))
            }
            (true, Some(_)) => {}
        }
        let c = config.ok_or_else(|| EcsError::invalid("awsvpcConfiguration is required."))?;
        let subnets = c.subnets.clone().unwrap_or_default();
        if subnets.is_empty() {
            return Err(EcsError::invalid("subnets can not be empty."));
        }
        if subnets.len() > MAX_SUBNETS {
            return Err(EcsError::invalid(format!(
                "awsvpcConfiguration.subnets: at most {MAX_SUBNETS} subnets."
            )));
        }
        for s in &subnets {
            if self.subnet(s).is_none() {
                return Err(EcsError::invalid(format!(
                    "Error retrieving subnet information for [{s}]: The subnet ID '{s}' does not exist."
                )));
            }
        }
        let groups = c.security_groups.clone().unwrap_or_default();
        if groups.len() > MAX_SECURITY_GROUPS {
            return Err(EcsError::invalid(format!(
                "awsvpcConfiguration.securityGroups: at most {MAX_SECURITY_GROUPS} security groups."
            )));
        }
        for g in &groups {
            if self.security_group(g).is_none() {
                return Err(EcsError::invalid(format!(
                    "Error retrieving security group information for [{g}]: The security group '{g}' does not exist."
                )));
            }
        }
        let public = match c.assign_public_ip.as_deref() {
            None | Some("DISABLED") => false,
            Some("ENABLED") if launch_type == "FARGATE" => true,
            Some("ENABLED") => {
                return Err(EcsError::invalid(
                    "Assign public IP is not supported for this launch type.",
                ))
            }
            Some(other) => {
                crate::one_of(
                    other,
                    &["ENABLED", "DISABLED"],
                    "awsvpcConfiguration.assignPublicIp",
                )?;
                false
            }
        };
        Ok(Some(AwsVpc {
            subnets,
            security_groups: groups,
            assign_public_ip: public,
        }))
    }
}

/// A checked awsvpcConfiguration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsVpc {
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub assign_public_ip: bool,
}

/// The lowest free address of `subnet` for a task: as in a VPC, the
/// network address, the next three (router, DNS, reserved) and the last
/// are never handed out.
pub fn allocate(subnet: &Cidr, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let first = u32::from(subnet.network) + 4;
    let last = u32::from(subnet.last()).checked_sub(1)?;
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| !taken.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_groups_stand_for_their_members_and_unknown_groups_allow_nothing() {
        let config: NetworkConfig = serde_json::from_value(serde_json::json!({
            "subnets": [],
            "securityGroups": [
                {"id": "sg-web", "ingress": [{"protocol": "tcp", "fromPort": 80, "toPort": 80, "cidr": "0.0.0.0/0"}]},
                {"id": "sg-db", "ingress": [
                    {"protocol": "tcp", "fromPort": 5432, "toPort": 5432, "sourceGroup": "sg-web"},
                    {"protocol": "-1", "sourceGroup": "sg-db"}]}
            ]
        }))
        .expect("config");
        let members = std::collections::HashMap::from([
            (
                "sg-web".to_string(),
                vec![Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6)],
            ),
            ("sg-db".to_string(), vec![Ipv4Addr::new(10, 0, 0, 9)]),
        ]);
        let got: Vec<(String, u16, u16, String)> = config
            .ingress_of(&["sg-db".into(), "sg-nope".into()], &members)
            .into_iter()
            .map(|a| (a.protocol, a.from_port, a.to_port, a.source))
            .collect();
        assert_eq!(
            got,
            vec![
                ("-1".into(), 0, 65535, "10.0.0.9/32".into()),
                ("tcp".into(), 5432, 5432, "10.0.0.5/32".into()),
                ("tcp".into(), 5432, 5432, "10.0.0.6/32".into()),
            ]
        );
        assert!(config.ingress_of(&["sg-nope".into()], &members).is_empty());
        assert_eq!(
            config
                .ingress_of(&["sg-web".into(), "sg-web".into()], &members)
                .len(),
            1
        );
    }

    fn config() -> NetworkConfig {
        serde_json::from_value(serde_json::json!({
            "subnets": [
                {"id": "subnet-a", "cidr": "10.20.1.0/24", "availabilityZone": "local-1a"},
                {"id": "subnet-b", "cidr": "10.20.2.0/28", "availabilityZone": "local-1b"}
            ],
            "securityGroups": [
                {"id": "sg-web", "ingress": [{"protocol": "tcp", "fromPort": 80, "toPort": 80, "cidr": "0.0.0.0/0"}]},
                {"id": "sg-db", "ingress": [{"protocol": "tcp", "fromPort": 5432, "toPort": 5432, "sourceGroup": "sg-web"}]}
            ]
        }))
        .expect("config")
    }

    #[test]
    fn cidrs_parse_and_compare() {
        let c = Cidr::parse("10.20.1.0/24").expect("valid");
        assert!(c.contains("10.20.1.200".parse().expect("ip")));
        assert!(!c.contains("10.20.2.1".parse().expect("ip")));
        assert_eq!(c.last().to_string(), "10.20.1.255");
        assert_eq!(c.gateway().to_string(), "10.20.1.1");
        assert_eq!(Cidr::parse("10.20.1.5/24"), None, "host bits set");
        assert_eq!(Cidr::parse("10.20.1.0/33"), None);
        assert!(c.overlaps(&Cidr::parse("10.20.0.0/16").expect("valid")));
    }

    #[test]
    fn configurations_are_checked() {
        assert_eq!(config().validate(), Ok(()));
        assert_eq!(NetworkConfig::local_default().validate(), Ok(()));
        let mut bad = config();
        bad.subnets[1].cidr = "10.20.1.128/25".into();
        assert!(bad.validate().expect_err("overlap").contains("overlap"));
        let mut bad = config();
        bad.security_groups[1].ingress[0].source_group = Some("sg-nope".into());
        assert!(bad.validate().is_err());
        let mut bad = config();
        bad.subnets[0].id = "net-a".into();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn awsvpc_configurations_get_ecs_errors() {
        let c = config();
        let nc =
            |subnets: &[&str], groups: &[&str], public: Option<&str>| w::NetworkConfiguration {
                awsvpc_configuration: Some(w::AwsVpcConfiguration {
                    subnets: Some(subnets.iter().map(|s| s.to_string()).collect()),
                    security_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
                    assign_public_ip: public.map(String::from),
                }),
            };
        let err = |awsvpc, given: Option<&w::NetworkConfiguration>, lt| {
            c.awsvpc(awsvpc, given, lt)
                .expect_err("rejected")
                .to_string()
        };
        assert!(err(true, None, "EC2").contains("must be provided when networkMode 'awsvpc'"));
        assert!(err(false, Some(&nc(&["subnet-a"], &[], None)), "EC2")
            .contains("not valid for the given networkMode"));
        assert_eq!(
            err(true, Some(&nc(&[], &[], None)), "EC2"),
            "subnets can not be empty."
        );
        assert!(err(true, Some(&nc(&["subnet-x"], &[], None)), "EC2")
            .contains("The subnet ID 'subnet-x' does not exist"));
        assert!(err(true, Some(&nc(&["subnet-a"], &["sg-x"], None)), "EC2")
            .contains("'sg-x' does not exist"));
        assert!(
            err(true, Some(&nc(&["subnet-a"], &[], Some("ENABLED"))), "EC2")
                .contains("Assign public IP")
        );
        let ok = c
            .awsvpc(
                true,
                Some(&nc(&["subnet-a", "subnet-b"], &["sg-web"], Some("ENABLED"))),
                "FARGATE",
            )
            .expect("valid")
            .expect("awsvpc");
        assert_eq!(ok.subnets, vec!["subnet-a", "subnet-b"]);
        assert!(ok.assign_public_ip);
        assert_eq!(c.awsvpc(false, None, "EC2"), Ok(None));
    }

    #[test]
    fn allocation_skips_what_a_vpc_reserves_and_what_is_taken() {
        let c = Cidr::parse("10.20.2.0/28").expect("valid");
        let mut taken = BTreeSet::new();
        let mut got = vec![];
        while let Some(ip) = allocate(&c, &taken) {
            taken.insert(ip);
            got.push(ip.to_string());
        }
        assert_eq!(got.first().map(String::as_str), Some("10.20.2.4"));
        assert_eq!(got.last().map(String::as_str), Some("10.20.2.14"));
        assert_eq!(got.len(), 11, "16 addresses less the 5 a VPC reserves");
    }
}
