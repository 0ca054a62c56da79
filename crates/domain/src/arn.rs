//! Scope (account + region) and ECS ARNs in the long format.

use serde::{Deserialize, Serialize};

/// The account and region a request acts in. Every resource lives in one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    pub account: String,
    pub region: String,
}

impl Scope {
    pub fn new(account: impl Into<String>, region: impl Into<String>) -> Self {
        Scope {
            account: account.into(),
            region: region.into(),
        }
    }

    fn prefix(&self) -> String {
        format!("arn:aws:ecs:{}:{}:", self.region, self.account)
    }

    pub fn cluster_arn(&self, name: &str) -> String {
        format!("{}cluster/{name}", self.prefix())
    }
    pub fn task_definition_arn(&self, family: &str, revision: i64) -> String {
        // Listings build many of these; one pass, no intermediate prefix.
        format!(
            "arn:aws:ecs:{}:{}:task-definition/{family}:{revision}",
            self.region, self.account
        )
    }
    pub fn container_instance_arn(&self, cluster: &str, id: &str) -> String {
        format!("{}container-instance/{cluster}/{id}", self.prefix())
    }
    pub fn task_arn(&self, cluster: &str, id: &str) -> String {
        format!("{}task/{cluster}/{id}", self.prefix())
    }
    pub fn container_arn(&self, cluster: &str, task: &str, uuid: &str) -> String {
        format!("{}container/{cluster}/{task}/{uuid}", self.prefix())
    }
    pub fn capacity_provider_arn(&self, name: &str) -> String {
        format!("{}capacity-provider/{name}", self.prefix())
    }
    pub fn service_arn(&self, cluster: &str, name: &str) -> String {
        format!("{}service/{cluster}/{name}", self.prefix())
    }
    pub fn service_deployment_arn(&self, cluster: &str, service: &str, digits: &str) -> String {
        format!(
            "{}service-deployment/{cluster}/{service}/{digits}",
            self.prefix()
        )
    }
    pub fn service_revision_arn(&self, cluster: &str, service: &str, digits: &str) -> String {
        format!(
            "{}service-revision/{cluster}/{service}/{digits}",
            self.prefix()
        )
    }
    /// The account root, the principal of unsigned requests.
    pub fn root_principal(&self) -> String {
        // Every request's context starts with it.
        let mut s = String::with_capacity(self.account.len() + 19);
        s.push_str("arn:aws:iam::");
        s.push_str(&self.account);
        s.push_str(":root");
        s
    }
}

/// An ECS resource named by ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arn {
    Cluster {
        scope: Scope,
        name: String,
    },
    TaskDefinition {
        scope: Scope,
        family: String,
        revision: i64,
    },
    CapacityProvider {
        scope: Scope,
        name: String,
    },
    /// A well-formed ECS ARN of a kind this version does not store yet.
    Other {
        scope: Scope,
        resource: String,
    },
}

impl Arn {
    /// Parses `arn:<partition>:ecs:<region>:<account>:<type>/<rest>`.
    pub fn parse(arn: &str) -> Option<Arn> {
        let mut parts = arn.splitn(6, ':');
        if parts.next()? != "arn" {
            return None;
        }
        let partition = parts.next()?;
        if !partition.starts_with("aws") || parts.next()? != "ecs" {
            return None;
        }
        let region = parts.next()?;
        let account = parts.next()?;
        let resource = parts.next()?;
        if region.is_empty() || account.is_empty() {
            return None;
        }
        let scope = Scope::new(account, region);
        let (kind, rest) = resource.split_once('/')?;
        Some(match kind {
            "cluster" if crate::valid_name(rest) => Arn::Cluster {
                scope,
                name: rest.to_string(),
            },
            "task-definition" => {
                let (family, rev) = rest.rsplit_once(':')?;
                let revision = rev.parse().ok().filter(|r| *r > 0)?;
                if !crate::valid_name(family) {
                    return None;
                }
                Arn::TaskDefinition {
                    scope,
                    family: family.to_string(),
                    revision,
                }
            }
            "capacity-provider" if crate::valid_name(rest) => Arn::CapacityProvider {
                scope,
                name: rest.to_string(),
            },
            _ if !rest.is_empty() => Arn::Other {
                scope,
                resource: resource.to_string(),
            },
            _ => return None,
        })
    }

    pub fn scope(&self) -> &Scope {
        match self {
            Arn::Cluster { scope, .. }
            | Arn::TaskDefinition { scope, .. }
            | Arn::CapacityProvider { scope, .. }
            | Arn::Other { scope, .. } => scope,
        }
    }
}

/// The id a reference to a cluster-scoped resource of `kind` (`task`,
/// `container-instance`) names within `cluster`: a bare id, a long ARN
/// (`<kind>/<cluster>/<id>`) or an old one (`<kind>/<id>`). None if it names
/// another cluster or scope, or is not such a reference at all.
fn cluster_resource_id(scope: &Scope, kind: &str, cluster: &str, given: &str) -> Option<String> {
    let id = in_cluster(scope, kind, cluster, given)?;
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then_some(id)
}

/// The last part of a reference to a resource of `kind` in `cluster`, as
/// given or from its ARN, unchecked.
fn in_cluster(scope: &Scope, kind: &str, cluster: &str, given: &str) -> Option<String> {
    let given = given.trim();
    if !given.starts_with("arn:") {
        return Some(given.to_string());
    }
    let Some(Arn::Other { scope: s, resource }) = Arn::parse(given) else {
        return None;
    };
    if &s != scope {
        return None;
    }
    let rest = resource.strip_prefix(kind)?.strip_prefix('/')?;
    match rest.split_once('/') {
        Some((c, id)) if c == cluster => Some(id.to_string()),
        Some(_) => None,
        None => Some(rest.to_string()),
    }
}

/// The task id a `task` parameter names within `cluster`.
pub fn task_id(scope: &Scope, cluster: &str, given: &str) -> Option<String> {
    cluster_resource_id(scope, "task", cluster, given)
}

/// The cluster and id a full task ARN (`task/<cluster>/<id>`) of `scope` names.
pub fn task_cluster_and_id(scope: &Scope, arn: &str) -> Option<(String, String)> {
    match Arn::parse(arn)? {
        Arn::Other { scope: s, resource } if &s == scope => {
            let (cluster, id) = resource.strip_prefix("task/")?.split_once('/')?;
            (!cluster.is_empty() && !id.is_empty() && !id.contains('/'))
                .then(|| (cluster.to_string(), id.to_string()))
        }
        _ => None,
    }
}

/// The instance id a `containerInstance` parameter names within `cluster`.
pub fn container_instance_id(scope: &Scope, cluster: &str, given: &str) -> Option<String> {
    cluster_resource_id(scope, "container-instance", cluster, given)
}

/// The service name a `service` parameter names within `cluster`: a name,
/// a long ARN (`service/<cluster>/<name>`) or an old one (`service/<name>`).
pub fn service_name(scope: &Scope, cluster: &str, given: &str) -> Option<String> {
    in_cluster(scope, "service", cluster, given).filter(|n| crate::valid_name(n))
}

/// What a service-deployment or service-revision ARN names: the cluster,
/// the service and the deployment's digits.
pub fn service_deployment_parts(
    scope: &Scope,
    kind: &str,
    given: &str,
) -> Option<(String, String, String)> {
    let Some(Arn::Other { scope: s, resource }) = Arn::parse(given.trim()) else {
        return None;
    };
    if &s != scope {
        return None;
    }
    let rest = resource.strip_prefix(kind)?.strip_prefix('/')?;
    let mut parts = rest.splitn(3, '/');
    let (cluster, service, digits) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = crate::valid_name(cluster)
        && crate::valid_name(service)
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| (cluster.to_string(), service.to_string(), digits.to_string()))
}

/// A `cluster` parameter is a name or an ARN; None means `default`.
/// Returns the cluster name, or None if an ARN names another scope or is malformed.
pub fn cluster_name(scope: &Scope, cluster: Option<&str>) -> Option<String> {
    match cluster.map(str::trim) {
        None | Some("") => Some("default".to_string()),
        Some(s) if s.starts_with("arn:") => match Arn::parse(s)? {
            Arn::Cluster { scope: s2, name } if &s2 == scope => Some(name),
            _ => None,
        },
        Some(s) => Some(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_arns() {
        let s = Scope::new("000000000000", "us-east-1");
        assert_eq!(
            Arn::parse(&s.cluster_arn("prod")),
            Some(Arn::Cluster {
                scope: s.clone(),
                name: "prod".into()
            })
        );
        assert_eq!(
            Arn::parse(&s.task_definition_arn("web", 12)),
            Some(Arn::TaskDefinition {
                scope: s.clone(),
                family: "web".into(),
                revision: 12
            })
        );
        assert_eq!(
            Arn::parse("arn:aws:ecs:us-east-1:0:task-definition/web"),
            None
        );
        assert_eq!(Arn::parse("arn:aws:s3:::bucket"), None);
        assert!(matches!(
            Arn::parse("arn:aws:ecs:us-east-1:1:service/c/s"),
            Some(Arn::Other { .. })
        ));
    }

    #[test]
    fn task_references_resolve_to_ids_within_the_cluster() {
        let s = Scope::new("1", "us-east-1");
        let arn = s.task_arn("c", "0123abcd");
        assert_eq!(task_id(&s, "c", &arn).as_deref(), Some("0123abcd"));
        assert_eq!(task_id(&s, "other", &arn), None);
        assert_eq!(task_id(&s, "c", "0123abcd").as_deref(), Some("0123abcd"));
        assert_eq!(
            task_id(&s, "c", "arn:aws:ecs:us-east-1:1:task/0123abcd").as_deref(),
            Some("0123abcd")
        );
        assert_eq!(
            task_id(&s, "c", "arn:aws:ecs:eu-west-1:1:task/c/0123abcd"),
            None
        );
        assert_eq!(task_id(&s, "c", "not/an id"), None);
    }

    #[test]
    fn cluster_name_defaults_and_checks_scope() {
        let s = Scope::new("1", "us-east-1");
        assert_eq!(cluster_name(&s, None).as_deref(), Some("default"));
        assert_eq!(cluster_name(&s, Some("x")).as_deref(), Some("x"));
        assert_eq!(
            cluster_name(&s, Some("arn:aws:ecs:us-east-1:1:cluster/y")).as_deref(),
            Some("y")
        );
        assert_eq!(
            cluster_name(&s, Some("arn:aws:ecs:eu-west-1:1:cluster/y")),
            None
        );
    }
}
