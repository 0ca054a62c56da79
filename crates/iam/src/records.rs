//! IAM's records as the store keeps them, their ARNs, IAM's errors and the
//! checks its API makes of names, paths and documents.

use crate::policy::{packed_size, Policy, PolicyKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// An IAM user with what is attached to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub name: String,
    /// `AIDA...`
    pub id: String,
    pub path: String,
    pub created: f64,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Inline policies by name: the documents as given.
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    /// Managed policies' ARNs.
    #[serde(default)]
    pub attached: Vec<String>,
    /// The groups the user is in, by name.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// An IAM group: its members are named in their user records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub name: String,
    /// `AGPA...`
    pub id: String,
    pub path: String,
    pub created: f64,
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    #[serde(default)]
    pub attached: Vec<String>,
}

impl Group {
    pub fn arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:group{}{}", self.path, self.name)
    }
}

/// An IAM role: who may assume it (its trust policy) and what it may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    pub name: String,
    /// `AROA...`
    pub id: String,
    pub path: String,
    pub created: f64,
    /// The trust policy as given.
    pub trust: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Seconds a session of the role may last (3600 to 43200).
    pub max_session: i32,
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    #[serde(default)]
    pub attached: Vec<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Names of the instance profiles that hold the role (kept with the
    /// profiles' own record, in the same writes).
    #[serde(default)]
    pub instance_profiles: Vec<String>,
}

/// An instance profile: what hands a role to a host (EC2 hands it to an
/// instance; Berth's hosts join with tokens, so here it is a record that
/// IAM's clients and tools can manage and read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceProfile {
    pub name: String,
    /// `AIPA...`
    pub id: String,
    pub path: String,
    pub created: f64,
    /// The role it holds: at most one, as in AWS.
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl InstanceProfile {
    pub fn arn(&self, account: &str) -> String {
        format!(
            "arn:aws:iam::{account}:instance-profile{}{}",
            self.path, self.name
        )
    }
}

impl Role {
    pub fn arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:role{}{}", self.path, self.name)
    }

    /// Refuses a change to a service-linked role, which only its service
    /// may change, as IAM does.
    pub fn unprotected(&self) -> Result<(), IamError> {
        if crate::managed::is_service_linked(&self.path) {
            return Err(IamError::UnmodifiableEntity(format!(
                "Cannot perform the operation on the protected role '{}' - this role is only modifiable by AWS",
                self.name
            )));
        }
        Ok(())
    }
}

impl User {
    pub fn arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:user{}{}", self.path, self.name)
    }
}

/// One version of a customer-managed policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyVersion {
    /// `v1`, `v2`, ...
    pub number: u32,
    pub document: String,
    pub created: f64,
}

impl PolicyVersion {
    pub fn id(&self) -> String {
        format!("v{}", self.number)
    }
}

/// A customer-managed policy with its versions (at most five).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedPolicy {
    pub name: String,
    /// `ANPA...`
    pub id: String,
    pub path: String,
    #[serde(default)]
    pub description: Option<String>,
    pub created: f64,
    pub updated: f64,
    pub default_version: u32,
    pub versions: Vec<PolicyVersion>,
    /// The number the next version gets: numbers are never reused.
    pub next_version: u32,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl ManagedPolicy {
    pub fn arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:policy{}{}", self.path, self.name)
    }

    pub fn default_document(&self) -> Option<&str> {
        self.versions
            .iter()
            .find(|v| v.number == self.default_version)
            .map(|v| v.document.as_str())
    }
}

/// Versions a managed policy may have at once.
pub const MAX_POLICY_VERSIONS: usize = 5;
/// Access keys a user may have at once.
pub const MAX_ACCESS_KEYS: usize = 2;
/// Managed policies attached to one user, group or role.
pub const MAX_ATTACHED: usize = 10;
/// IAM's default quotas on document sizes, without whitespace.
pub const MANAGED_POLICY_SIZE: usize = 6144;
pub const USER_INLINE_SIZE: usize = 2048;
pub const GROUP_INLINE_SIZE: usize = 5120;
pub const ROLE_INLINE_SIZE: usize = 10240;
pub const TRUST_POLICY_SIZE: usize = 2048;

/// A failed IAM request, with IAM's code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IamError {
    #[error("{0}")]
    NoSuchEntity(String),
    #[error("{0}")]
    EntityAlreadyExists(String),
    #[error("{0}")]
    DeleteConflict(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    InvalidInput(String),
    /// A member that breaks the model's constraints.
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    ConcurrentModification(String),
    /// STS: a session policy over its packed size.
    #[error("{0}")]
    PackedPolicyTooLarge(String),
    /// A service-linked role, which only its service may change.
    #[error("{0}")]
    UnmodifiableEntity(String),
}

impl IamError {
    pub fn code(&self) -> &'static str {
        match self {
            IamError::NoSuchEntity(_) => "NoSuchEntity",
            IamError::EntityAlreadyExists(_) => "EntityAlreadyExists",
            IamError::DeleteConflict(_) => "DeleteConflict",
            IamError::LimitExceeded(_) => "LimitExceeded",
            IamError::MalformedPolicyDocument(_) => "MalformedPolicyDocument",
            IamError::InvalidInput(_) => "InvalidInput",
            IamError::Validation(_) => "ValidationError",
            IamError::ConcurrentModification(_) => "ConcurrentModification",
            IamError::PackedPolicyTooLarge(_) => "PackedPolicyTooLarge",
            IamError::UnmodifiableEntity(_) => "UnmodifiableEntity",
        }
    }

    /// A member the request must carry.
    pub fn missing(field: &str) -> IamError {
        IamError::Validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))
    }
}

const NAME_PATTERN: &str = r"[\w+=,.@-]+";

fn constraint(value: &str, field: &str, what: &str) -> IamError {
    IamError::Validation(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {what}"
    ))
}

/// A user, group, role or policy name: `[\w+=,.@-]+`, at most `max`.
pub fn check_name(value: &str, field: &str, max: usize) -> Result<(), IamError> {
    if value.is_empty() || value.chars().count() > max {
        return Err(constraint(
            value,
            field,
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    if !value
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || "+=,.@-".contains(c))
    {
        return Err(constraint(
            value,
            field,
            &format!("Member must satisfy regular expression pattern: {NAME_PATTERN}"),
        ));
    }
    Ok(())
}

/// A path: `/`, or `/` ... `/` of printable ASCII, at most 512.
pub fn check_path(value: &str, field: &str) -> Result<(), IamError> {
    let ok = value.len() <= 512
        && value.starts_with('/')
        && value.ends_with('/')
        && value.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(constraint(
            value,
            field,
            r"Member must satisfy regular expression pattern: (\u002F)|(\u002F[\u0021-\u007E]+\u002F)",
        ))
    }
}

/// A document as IAM checks it: the JSON and the grammar, then its size.
pub fn check_document(text: &str, kind: PolicyKind, limit: usize) -> Result<Policy, IamError> {
    let policy = Policy::parse(text, kind).map_err(|m| IamError::MalformedPolicyDocument(m.0))?;
    let size = packed_size(text);
    if size > limit {
        return Err(IamError::LimitExceeded(format!(
            "Cannot exceed quota for PolicySize: {limit}"
        )));
    }
    Ok(policy)
}

/// Tags as given, checked as IAM does (at most 50, keys 1-128, values
/// 0-256, no duplicate keys).
pub fn check_tags(tags: &[Tag]) -> Result<(), IamError> {
    if tags.len() > 50 {
        return Err(IamError::LimitExceeded(
            "The number of tags has reached the maximum limit.".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for t in tags {
        if t.key.is_empty() || t.key.chars().count() > 128 {
            return Err(constraint(
                &t.key,
                "tags.member.key",
                "Member must have length between 1 and 128",
            ));
        }
        if t.value.chars().count() > 256 {
            return Err(constraint(
                &t.value,
                "tags.member.value",
                "Member must have length less than or equal to 256",
            ));
        }
        if !seen.insert(t.key.to_lowercase()) {
            return Err(IamError::InvalidInput(format!(
                "Duplicate tag keys found. Please note that Tag keys are case insensitive. ({})",
                t.key
            )));
        }
    }
    Ok(())
}

/// `tags` with `new` merged in (a key given again takes the new value).
pub fn merge_tags(tags: &[Tag], new: &[Tag]) -> Vec<Tag> {
    let mut out: Vec<Tag> = tags
        .iter()
        .filter(|t| !new.iter().any(|n| n.key.eq_ignore_ascii_case(&t.key)))
        .cloned()
        .collect();
    out.extend_from_slice(new);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_follow_the_model() {
        assert!(check_name("ana.b+c=d,e@f-g_h", "userName", 64).is_ok());
        let e = check_name("bad name", "userName", 64).expect_err("space");
        assert_eq!(e.code(), "ValidationError");
        assert!(e.to_string().contains("at 'userName'"));
        assert!(check_name(&"a".repeat(65), "userName", 64).is_err());
        assert!(check_path("/", "path").is_ok());
        assert!(check_path("/team/dev/", "path").is_ok());
        assert!(check_path("team", "path").is_err());
        assert!(check_path("/a b/", "path").is_err());
    }

    #[test]
    fn documents_are_checked_for_grammar_and_size() {
        let doc = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*"}}"#;
        assert!(check_document(doc, PolicyKind::Identity, USER_INLINE_SIZE).is_ok());
        let e = check_document(doc, PolicyKind::Identity, 10).expect_err("too big");
        assert_eq!(e.code(), "LimitExceeded");
        let e = check_document("{", PolicyKind::Identity, 100).expect_err("bad");
        assert_eq!(e.code(), "MalformedPolicyDocument");
    }

    #[test]
    fn tags_merge_by_key() {
        let t = |k: &str, v: &str| Tag {
            key: k.into(),
            value: v.into(),
        };
        let merged = merge_tags(&[t("a", "1"), t("b", "2")], &[t("B", "3")]);
        assert_eq!(merged, vec![t("a", "1"), t("B", "3")]);
        assert!(check_tags(&[t("a", "1"), t("A", "2")]).is_err());
    }
}
