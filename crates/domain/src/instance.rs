//! Container instances: the stored record, what registration accepts, and
//! the attribute rules.

use crate::{EcsError, Scope, Timestamp};
use berth_wire::ecs as w;
use serde::{Deserialize, Serialize};

/// Custom attributes (not `ecs.*` or `com.amazonaws.ecs.*`) per instance.
pub use berth_wire::agent::FARGATE_POOL;

pub const MAX_CUSTOM_ATTRIBUTES: usize = 10;
/// Reserved host ports per instance, the agent's defaults included.
pub const MAX_RESERVED_PORTS: usize = 100;
/// The attribute an agent reports the address its host ports are reached
/// at in: where a load balancer sends an instance target's traffic.
pub const HOST_ADDRESS: &str = "berth.host-address";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    Active,
    /// Takes no new tasks; its service tasks are replaced elsewhere.
    Draining,
    /// Deregistered: describable for a while, never listed.
    Inactive,
}

impl InstanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Active => "ACTIVE",
            InstanceStatus::Draining => "DRAINING",
            InstanceStatus::Inactive => "INACTIVE",
        }
    }
}

/// A registered container instance (the registration and what users set
/// on it; the agent's liveness and the tasks on it are kept apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerInstance {
    /// 32 hex digits, the last part of the ARN.
    pub id: String,
    pub cluster: String,
    pub ec2_instance_id: String,
    pub status: InstanceStatus,
    pub registered_at: Timestamp,
    /// Increases with every change users or the agent make.
    pub version: i64,
    #[serde(default)]
    pub version_info: Option<w::VersionInfo>,
    /// CPU, MEMORY, PORTS and PORTS_UDP, always present, plus any others.
    pub resources: Vec<w::Resource>,
    /// Name-sorted; names are unique.
    #[serde(default)]
    pub attributes: Vec<w::Attribute>,
    #[serde(default)]
    pub tags: Vec<w::Tag>,
}

/// What an EC2 instance identity document says about a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: String,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub image_id: Option<String>,
    pub architecture: Option<String>,
}

/// Reads `instanceIdentityDocument`. Without one (ECS Anywhere hosts send
/// none), the host gets a managed-instance id from `fallback_id`.
pub fn identity(document: Option<&str>, fallback_id: &str) -> Result<Identity, EcsError> {
    let Some(doc) = document.filter(|d| !d.trim().is_empty()) else {
        return Ok(Identity {
            instance_id: format!("mi-{}", &fallback_id[..17.min(fallback_id.len())]),
            ..Default::default()
        });
    };
    let bad = || {
        EcsError::invalid(
            "instanceIdentityDocument must be a JSON object with an instanceId (the EC2 instance identity document).",
        )
    };
    let v: serde_json::Value = serde_json::from_str(doc).map_err(|_| bad())?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let instance_id = field("instanceId")
        .filter(|i| !i.is_empty())
        .ok_or_else(bad)?;
    Ok(Identity {
        instance_id,
        instance_type: field("instanceType"),
        availability_zone: field("availabilityZone"),
        image_id: field("imageId"),
        architecture: field("architecture"),
    })
}

fn attribute(name: &str, value: Option<String>) -> w::Attribute {
    w::Attribute {
        name: Some(name.to_string()),
        value,
        ..Default::default()
    }
}

/// The attributes ECS derives from the identity document.
pub fn identity_attributes(id: &Identity) -> Vec<w::Attribute> {
    [
        ("ecs.instance-type", &id.instance_type),
        ("ecs.availability-zone", &id.availability_zone),
        ("ecs.ami-id", &id.image_id),
        ("ecs.cpu-architecture", &id.architecture),
    ]
    .into_iter()
    .filter_map(|(n, v)| v.clone().map(|v| attribute(n, Some(v))))
    .collect()
}

fn integer(name: &str, v: i32) -> w::Resource {
    w::Resource {
        name: Some(name.into()),
        r#type: Some("INTEGER".into()),
        integer_value: Some(v),
        long_value: Some(i64::from(v)),
        double_value: Some(f64::from(v)),
        string_set_value: None,
    }
}

fn string_set(name: &str, v: Vec<String>) -> w::Resource {
    w::Resource {
        name: Some(name.into()),
        r#type: Some("STRINGSET".into()),
        integer_value: Some(0),
        long_value: Some(0),
        double_value: Some(0.0),
        string_set_value: Some(v),
    }
}

/// Checks `totalResources` and returns them in the shape ECS answers with:
/// CPU, MEMORY, PORTS and PORTS_UDP first (zero or empty when not given),
/// every value field filled.
pub fn resources(given: Option<&[w::Resource]>) -> Result<Vec<w::Resource>, EcsError> {
    let given = given.unwrap_or_default();
    let mut cpu = 0;
    let mut memory = 0;
    let mut ports: Vec<String> = vec![];
    let mut ports_udp: Vec<String> = vec![];
    let mut others = vec![];
    let mut seen = std::collections::HashSet::new();
    for r in given {
        let name = r.name.as_deref().unwrap_or_default();
        if name.is_empty() {
            return Err(EcsError::invalid(
                "totalResources: every resource needs a name.",
            ));
        }
        if !seen.insert(name) {
            return Err(EcsError::invalid(format!(
                "totalResources: resource {name} is given more than once."
            )));
        }
        let kind = r.r#type.as_deref().unwrap_or_default();
        let number = |field: &str| -> Result<i32, EcsError> {
            let v = r
                .integer_value
                .or(r.long_value.and_then(|l| i32::try_from(l).ok()))
                .unwrap_or(0);
            if kind != "INTEGER" || v < 0 {
                return Err(EcsError::invalid(format!(
                    "totalResources: {field} must be of type INTEGER with a value of 0 or more."
                )));
            }
            Ok(v)
        };
        let port_set = |field: &str| -> Result<Vec<String>, EcsError> {
            let set = r.string_set_value.clone().unwrap_or_default();
            if kind != "STRINGSET" {
                return Err(EcsError::invalid(format!(
                    "totalResources: {field} must be of type STRINGSET."
                )));
            }
            for p in &set {
                if !p.parse::<u16>().is_ok_and(|n| n > 0) {
                    return Err(EcsError::invalid(format!(
                        "totalResources: {field} contains '{p}', which is not a port number (1-65535)."
                    )));
                }
            }
            Ok(set)
        };
        match name {
            "CPU" => cpu = number("CPU")?,
            "MEMORY" => memory = number("MEMORY")?,
            "PORTS" => ports = port_set("PORTS")?,
            "PORTS_UDP" => ports_udp = port_set("PORTS_UDP")?,
            _ => {
                if !["INTEGER", "LONG", "DOUBLE", "STRINGSET"].contains(&kind) {
                    return Err(EcsError::invalid(format!(
                        "totalResources: resource {name} has type '{kind}'; use INTEGER, LONG, DOUBLE or STRINGSET."
                    )));
                }
                others.push(r.clone());
            }
        }
    }
    if ports.len() + ports_udp.len() > MAX_RESERVED_PORTS {
        return Err(EcsError::invalid(format!(
            "totalResources: at most {MAX_RESERVED_PORTS} reserved ports per container instance."
        )));
    }
    let mut out = vec![
        integer("CPU", cpu),
        integer("MEMORY", memory),
        string_set("PORTS", ports),
        string_set("PORTS_UDP", ports_udp),
    ];
    out.extend(others);
    Ok(out)
}

fn reserved(name: &str) -> bool {
    name.starts_with("ecs.") || name.starts_with("com.amazonaws.ecs.")
}

/// Checks one attribute's name and value as ECS does.
pub fn validate_attribute(a: &w::Attribute) -> Result<(), EcsError> {
    let name = a.name.as_deref().unwrap_or_default();
    let name_ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_/\\.".contains(c));
    if !name_ok {
        return Err(EcsError::invalid(format!(
            "Attribute name '{name}' is invalid: 1-128 letters, numbers, hyphens, underscores, slashes, back slashes or periods."
        )));
    }
    if let Some(value) = &a.value {
        let value_ok = !value.is_empty()
            && value.len() <= 128
            && value.trim() == value
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@/\\: ".contains(c));
        if !value_ok {
            return Err(EcsError::invalid(format!(
                "Attribute value '{value}' of {name} is invalid: 1-128 letters, numbers, hyphens, underscores, periods, at signs, slashes, back slashes, colons or spaces, not starting or ending with a space."
            )));
        }
    }
    Ok(())
}

impl ContainerInstance {
    pub fn arn(&self, scope: &Scope) -> String {
        scope.container_instance_arn(&self.cluster, &self.id)
    }

    /// Where this host's published ports are reached (loopback when the
    /// agent did not say: agent and load balancer share a machine).
    pub fn host_address(&self) -> &str {
        self.attribute(HOST_ADDRESS)
            .and_then(|a| a.value.as_deref())
            .unwrap_or("127.0.0.1")
    }

    pub fn attribute(&self, name: &str) -> Option<&w::Attribute> {
        self.attributes
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }

    /// Sets attributes (a name given twice keeps the last value), keeping
    /// the custom ones within ECS's limit.
    pub fn put_attributes(&mut self, attrs: &[w::Attribute]) -> Result<(), EcsError> {
        for a in attrs {
            validate_attribute(a)?;
            let name = a.name.clone().unwrap_or_default();
            let plain = w::Attribute {
                name: Some(name.clone()),
                value: a.value.clone(),
                ..Default::default()
            };
            match self
                .attributes
                .iter_mut()
                .find(|x| x.name.as_deref() == Some(&name))
            {
                Some(existing) => *existing = plain,
                None => self.attributes.push(plain),
            }
        }
        self.attributes.sort_by(|a, b| a.name.cmp(&b.name));
        let custom = self
            .attributes
            .iter()
            .filter(|a| !reserved(a.name.as_deref().unwrap_or_default()))
            .count();
        if custom > MAX_CUSTOM_ATTRIBUTES {
            return Err(EcsError::AttributeLimitExceeded(format!(
                "A container instance can have at most {MAX_CUSTOM_ATTRIBUTES} custom attributes."
            )));
        }
        Ok(())
    }

    pub fn delete_attributes(&mut self, names: &[String]) {
        self.attributes
            .retain(|a| !names.iter().any(|n| a.name.as_deref() == Some(n)));
    }

    pub fn cpu(&self) -> i32 {
        self.resource("CPU")
            .and_then(|r| r.integer_value)
            .unwrap_or(0)
    }

    pub fn memory(&self) -> i32 {
        self.resource("MEMORY")
            .and_then(|r| r.integer_value)
            .unwrap_or(0)
    }

    /// Host ports reserved at registration, by protocol.
    pub fn reserved_ports(&self, udp: bool) -> Vec<u16> {
        let name = if udp { "PORTS_UDP" } else { "PORTS" };
        self.resource(name)
            .and_then(|r| r.string_set_value.as_ref())
            .map(|s| s.iter().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }

    fn resource(&self, name: &str) -> Option<&w::Resource> {
        self.resources
            .iter()
            .find(|r| r.name.as_deref() == Some(name))
    }

    /// What is left once `used` is taken: CPU and MEMORY less the tasks'
    /// reservations, PORTS and PORTS_UDP plus the ports tasks hold.
    pub fn remaining(&self, used: &crate::task::Usage) -> Vec<w::Resource> {
        let left =
            |total: i32, used: i64| (i64::from(total) - used).clamp(0, i64::from(i32::MAX)) as i32;
        let ports = |udp: bool, taken: &std::collections::BTreeSet<u16>| {
            let mut all: Vec<u16> = self.reserved_ports(udp);
            all.extend(taken);
            all.sort_unstable();
            all.dedup();
            all.iter().map(u16::to_string).collect()
        };
        self.resources
            .iter()
            .map(|r| match r.name.as_deref() {
                Some("CPU") => integer("CPU", left(self.cpu(), used.cpu)),
                Some("MEMORY") => integer("MEMORY", left(self.memory(), used.memory)),
                Some("PORTS") => string_set("PORTS", ports(false, &used.tcp_ports)),
                Some("PORTS_UDP") => string_set("PORTS_UDP", ports(true, &used.udp_ports)),
                _ => r.clone(),
            })
            .collect()
    }

    /// The wire view. `agent_connected` and what the tasks use are observed
    /// state, passed in by the caller.
    pub fn view(
        &self,
        scope: &Scope,
        agent_connected: bool,
        used: &crate::task::Usage,
        include_tags: bool,
    ) -> w::ContainerInstance {
        w::ContainerInstance {
            container_instance_arn: Some(self.arn(scope)),
            ec2_instance_id: Some(self.ec2_instance_id.clone()),
            version: Some(self.version),
            version_info: self.version_info.clone(),
            remaining_resources: Some(self.remaining(used)),
            registered_resources: Some(self.resources.clone()),
            status: Some(self.status.as_str().into()),
            agent_connected: Some(agent_connected),
            running_tasks_count: Some(used.running as i32),
            pending_tasks_count: Some(used.pending as i32),
            attributes: Some(self.attributes.clone()),
            registered_at: Some(self.registered_at),
            attachments: Some(vec![]),
            tags: include_tags.then(|| self.tags.clone()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, kind: &str, int: Option<i32>, set: Option<Vec<&str>>) -> w::Resource {
        w::Resource {
            name: Some(name.into()),
            r#type: Some(kind.into()),
            integer_value: int,
            string_set_value: set.map(|s| s.into_iter().map(String::from).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn resources_are_completed_and_checked() {
        let out = resources(Some(&[
            res("CPU", "INTEGER", Some(2048), None),
            res("PORTS", "STRINGSET", None, Some(vec!["22", "51678"])),
        ]))
        .expect("valid");
        let names: Vec<_> = out
            .iter()
            .map(|r| r.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["CPU", "MEMORY", "PORTS", "PORTS_UDP"]);
        assert_eq!(out[0].long_value, Some(2048));
        assert_eq!(out[1].integer_value, Some(0));
        for (bad, says) in [
            (
                res("CPU", "STRINGSET", None, None),
                "CPU must be of type INTEGER",
            ),
            (
                res("MEMORY", "INTEGER", Some(-1), None),
                "MEMORY must be of type INTEGER",
            ),
            (
                res("PORTS", "STRINGSET", None, Some(vec!["http"])),
                "'http'",
            ),
            (
                res("PORTS_UDP", "INTEGER", Some(1), None),
                "PORTS_UDP must be of type STRINGSET",
            ),
            (res("GPU", "BLOB", None, None), "type 'BLOB'"),
            (res("", "INTEGER", None, None), "needs a name"),
        ] {
            let e = resources(Some(&[bad])).expect_err(says).to_string();
            assert!(e.contains(says), "{e}");
        }
        let many: Vec<String> = (1..=101).map(|p| p.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(resources(Some(&[res("PORTS", "STRINGSET", None, Some(many))])).is_err());
    }

    #[test]
    fn identity_documents_give_the_instance_id_and_attributes() {
        let doc = r#"{"instanceId":"i-0abc","instanceType":"m5.large","availabilityZone":"us-east-1b","architecture":"x86_64"}"#;
        let id = identity(Some(doc), "0123456789abcdef0123").expect("doc");
        assert_eq!(id.instance_id, "i-0abc");
        let attrs = identity_attributes(&id);
        assert_eq!(attrs.len(), 3);
        assert_eq!(
            identity(None, "0123456789abcdef0123")
                .expect("none")
                .instance_id,
            "mi-0123456789abcdef0"
        );
        assert!(identity(Some("{}"), "x").is_err());
        assert!(identity(Some("not json"), "x").is_err());
    }

    #[test]
    fn attributes_follow_ecs_rules_and_limits() {
        let mut ci = ContainerInstance {
            id: "x".into(),
            cluster: "c".into(),
            ec2_instance_id: "i-1".into(),
            status: InstanceStatus::Active,
            registered_at: 0.0,
            version: 1,
            version_info: None,
            resources: vec![],
            attributes: vec![],
            tags: vec![],
        };
        let a = |n: &str, v: Option<&str>| w::Attribute {
            name: Some(n.into()),
            value: v.map(String::from),
            ..Default::default()
        };
        ci.put_attributes(&[a("stack", Some("prod")), a("ecs.os-type", Some("linux"))])
            .expect("ok");
        ci.put_attributes(&[a("stack", Some("dev"))])
            .expect("overwrite");
        assert_eq!(
            ci.attribute("stack").and_then(|x| x.value.clone()),
            Some("dev".into())
        );
        for bad in [
            a("", None),
            a("has space", None),
            a("ok", Some(" lead")),
            a("ok", Some("a|b")),
        ] {
            assert!(ci.clone().put_attributes(&[bad]).is_err());
        }
        let eleven: Vec<_> = (0..10).map(|n| a(&format!("k{n}"), None)).collect();
        let e = ci.clone().put_attributes(&eleven).expect_err("11 custom");
        assert_eq!(e.code(), "AttributeLimitExceededException");
        ci.delete_attributes(&["stack".into()]);
        assert!(ci.attribute("stack").is_none());
        assert!(ci.attribute("ecs.os-type").is_some());
    }
}
