//! Secrets Manager's rules (`secretsmanager` 2017-10-17): names and ARNs
//! with their random suffix, how a secret id names a secret, versions and
//! their staging labels, the recovery window, with Secrets Manager's
//! exceptions and wording ([`SecretsError`]).

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Versions a secret keeps: the staged ones and the newest unstaged.
pub const MAX_VERSIONS: usize = 100;
/// Bytes of a value (SecretString, or SecretBinary decoded).
pub const MAX_VALUE: usize = 65536;
pub const MAX_TAGS: usize = 50;
pub const CURRENT: &str = "AWSCURRENT";
pub const PREVIOUS: &str = "AWSPREVIOUS";
pub const PENDING: &str = "AWSPENDING";
/// The recovery window unless one is given, and its bounds.
pub const DEFAULT_RECOVERY_DAYS: i64 = 30;
pub const RECOVERY_DAYS: std::ops::RangeInclusive<i64> = 7..=30;

/// A Secrets Manager failure: the exception's name and its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SecretsError {
    pub code: &'static str,
    pub message: String,
}

impl SecretsError {
    pub fn new(code: &'static str, message: impl Into<String>) -> SecretsError {
        SecretsError {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> SecretsError {
        SecretsError::new("InvalidParameterException", message)
    }
    pub fn not_found() -> SecretsError {
        SecretsError::new(
            "ResourceNotFoundException",
            "Secrets Manager can't find the specified secret.",
        )
    }
    pub fn marked_for_deletion() -> SecretsError {
        SecretsError::new(
            "InvalidRequestException",
            "You can't perform this operation on the secret because it was marked for deletion.",
        )
    }
    /// A member that must be given.
    pub fn required(field: &str) -> SecretsError {
        SecretsError::new(
            "ValidationException",
            format!(
                "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
            ),
        )
    }
}

/// One version of a secret: its value sealed (a string, or a binary as
/// its base64 text), and its staging labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretVersion {
    pub id: String,
    #[serde(default)]
    pub stages: Vec<String>,
    pub created: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
}

/// A secret and its kept versions, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub name: String,
    /// The six characters after the name in the ARN: a secret deleted and
    /// made again under the same name has another ARN.
    pub suffix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub created: Timestamp,
    pub changed: Timestamp,
    /// When DeleteSecret scheduled it: (asked, deletion date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<(Timestamp, Timestamp)>,
    #[serde(default)]
    pub versions: Vec<SecretVersion>,
}

impl SecretRecord {
    pub fn arn(&self, region: &str, account: &str) -> String {
        format!(
            "arn:aws:secretsmanager:{region}:{account}:secret:{}-{}",
            self.name, self.suffix
        )
    }

    /// Whether it is gone: its recovery window has passed.
    pub fn purged(&self, now: Timestamp) -> bool {
        self.deleted.is_some_and(|(_, at)| at <= now)
    }

    /// The version a request names: by id, by stage, or AWSCURRENT.
    pub fn version(
        &self,
        id: Option<&str>,
        stage: Option<&str>,
    ) -> Result<&SecretVersion, SecretsError> {
        match (id, stage) {
            (Some(id), stage) => {
                let v = self.versions.iter().find(|v| v.id == id).ok_or_else(|| {
                    SecretsError::new(
                        "ResourceNotFoundException",
                        format!("Secrets Manager can't find the specified secret value for VersionId: {id}"),
                    )
                })?;
                if stage.is_some_and(|s| !v.stages.iter().any(|x| x == s)) {
                    return Err(SecretsError::new(
                        "InvalidRequestException",
                        "You provided a VersionStage that is not associated to the provided VersionId.",
                    ));
                }
                Ok(v)
            }
            (None, stage) => {
                let stage = stage.unwrap_or(CURRENT);
                self.versions
                    .iter()
                    .find(|v| v.stages.iter().any(|x| x == stage))
                    .ok_or_else(|| {
                        SecretsError::new(
                            "ResourceNotFoundException",
                            format!("Secrets Manager can't find the specified secret value for staging label: {stage}"),
                        )
                    })
            }
        }
    }

    /// Versions and their stages, as DescribeSecret shows them.
    pub fn stages(&self) -> BTreeMap<String, Vec<String>> {
        self.versions
            .iter()
            .filter(|v| !v.stages.is_empty())
            .map(|v| (v.id.clone(), v.stages.clone()))
            .collect()
    }

    /// Adds a version carrying `stages` (AWSCURRENT when none is named).
    /// A stage moves from the version that had it; AWSCURRENT moving leaves
    /// AWSPREVIOUS on the version that had it. Unstaged versions beyond
    /// the limit go, oldest first.
    pub fn add_version(&mut self, version: SecretVersion) {
        let stages = if version.stages.is_empty() {
            vec![CURRENT.to_string()]
        } else {
            version.stages.clone()
        };
        let id = version.id.clone();
        self.versions.push(SecretVersion {
            stages: vec![],
            ..version
        });
        for s in &stages {
            self.stage(s, &id);
        }
        while self.versions.len() > MAX_VERSIONS {
            match self.versions.iter().position(|v| v.stages.is_empty()) {
                Some(i) => {
                    self.versions.remove(i);
                }
                None => break,
            }
        }
    }

    /// Puts `stage` on version `id`, moving it from any other.
    pub fn stage(&mut self, stage: &str, id: &str) {
        let had_current: Option<String> = (stage == CURRENT)
            .then(|| {
                self.versions
                    .iter()
                    .find(|v| v.id != id && v.stages.iter().any(|s| s == CURRENT))
                    .map(|v| v.id.clone())
            })
            .flatten();
        for v in &mut self.versions {
            if v.id == id {
                if !v.stages.iter().any(|s| s == stage) {
                    v.stages.push(stage.to_string());
                }
            } else {
                v.stages.retain(|s| s != stage);
            }
        }
        if let Some(old) = had_current {
            self.stage(PREVIOUS, &old);
        }
    }

    /// Takes `stage` off version `id`.
    pub fn unstage(&mut self, stage: &str, id: &str) {
        if let Some(v) = self.versions.iter_mut().find(|v| v.id == id) {
            v.stages.retain(|s| s != stage);
        }
    }
}

/// Checks a secret's name: 1 to 512 of ASCII letters, digits and `/_+=.@-`.
pub fn check_name(name: &str) -> Result<(), SecretsError> {
    let ok = (1..=512).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SecretsError::new(
            "ValidationException",
            format!(
                "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@! (name: '{name}')"
            ),
        ))
    }
}

/// How a SecretId names a secret: by name, by full ARN, or by an ARN
/// without its random suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretId {
    Name(String),
    /// The name and the suffix the ARN gave.
    Arn(String, Option<String>),
}

impl SecretId {
    /// Reads a SecretId of this account and region; `None` for an ARN of
    /// another, which names nothing here.
    pub fn parse(given: &str, region: &str, account: &str) -> Option<SecretId> {
        let Some(rest) = given.strip_prefix("arn:") else {
            return Some(SecretId::Name(given.to_string()));
        };
        let tail = rest.strip_prefix(&format!("aws:secretsmanager:{region}:{account}:secret:"))?;
        // A full ARN ends in `-` and six characters; a partial one is the name.
        match tail.rsplit_once('-') {
            Some((name, suffix))
                if suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                Some(SecretId::Arn(name.to_string(), Some(suffix.to_string())))
            }
            _ => Some(SecretId::Arn(tail.to_string(), None)),
        }
    }

    /// The name the secret is stored under.
    pub fn name(&self) -> &str {
        match self {
            SecretId::Name(n) | SecretId::Arn(n, _) => n,
        }
    }

    /// Whether `record` is the secret this id names (an ARN names one
    /// incarnation of a name).
    pub fn names(&self, record: &SecretRecord) -> bool {
        match self {
            SecretId::Arn(_, Some(suffix)) => &record.suffix == suffix,
            _ => true,
        }
    }
}

/// Checks a ClientRequestToken, which becomes the version id.
pub fn check_token(token: &str) -> Result<(), SecretsError> {
    if (32..=64).contains(&token.len()) {
        Ok(())
    } else {
        Err(SecretsError::invalid(
            "ClientRequestToken must be 32-64 characters long.",
        ))
    }
}

/// Checks a value: exactly one of string and binary, within the size limit.
pub fn check_value(string: Option<&str>, binary: Option<&str>) -> Result<(), SecretsError> {
    if string.is_some() && binary.is_some() {
        return Err(SecretsError::invalid(
            "You can't specify both a binary secret value and a string secret value in the same secret.",
        ));
    }
    if let Some(b) = binary {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|_| SecretsError::invalid("SecretBinary is not valid base64."))?;
    }
    let len = string.map_or(0, str::len) + binary.map_or(0, |b| b.len() / 4 * 3);
    if len > MAX_VALUE {
        return Err(SecretsError::invalid(format!(
            "The secret value is larger than the maximum of {MAX_VALUE} bytes."
        )));
    }
    Ok(())
}

/// Checks a tag as Secrets Manager accepts it.
pub fn check_tag(key: &str, value: &str) -> Result<(), SecretsError> {
    if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
        return Err(SecretsError::new(
            "ValidationException",
            format!("Tag key '{key}' must be 1 to 128 characters and its value at most 256."),
        ));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(SecretsError::invalid(
            "Invalid tag key. The 'aws:' prefix is reserved for AWS use.",
        ));
    }
    Ok(())
}

/// Whether a secret passes ListSecrets' filters (`name`, `description`,
/// `tag-key`, `tag-value`, `primary-region`, `all`): each filter's values
/// are prefixes, `!` negates one.
pub fn matches(record: &SecretRecord, region: &str, filters: &[(String, Vec<String>)]) -> bool {
    filters.iter().all(|(key, values)| {
        let fields: Vec<&str> = match key.as_str() {
            "name" => vec![record.name.as_str()],
            "description" => record.description.as_deref().into_iter().collect(),
            "tag-key" => record.tags.keys().map(String::as_str).collect(),
            "tag-value" => record.tags.values().map(String::as_str).collect(),
            "primary-region" => vec![region],
            // No secret here is managed by another AWS service.
            "owning-service" => vec![],
            _ => {
                let mut all = vec![record.name.as_str()];
                all.extend(record.description.as_deref());
                all.extend(record.tags.keys().map(String::as_str));
                all.extend(record.tags.values().map(String::as_str));
                all
            }
        };
        values.iter().any(|v| match v.strip_prefix('!') {
            Some(not) => !fields.iter().any(|f| f.starts_with(not)),
            None => fields.iter().any(|f| f.starts_with(v.as_str())),
        })
    })
}

/// Checks ListSecrets' filters.
pub fn check_filters(filters: &[(String, Vec<String>)]) -> Result<(), SecretsError> {
    const KEYS: &[&str] = &[
        "description",
        "name",
        "tag-key",
        "tag-value",
        "primary-region",
        "owning-service",
        "all",
    ];
    for (key, values) in filters {
        if !KEYS.contains(&key.as_str()) {
            return Err(SecretsError::new(
                "ValidationException",
                format!(
                    "1 validation error detected: Value '{key}' at 'filters.1.member.key' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                    KEYS.join(", ")
                ),
            ));
        }
        if values.is_empty() {
            return Err(SecretsError::invalid(format!(
                "Invalid filter values for key: {key}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SecretRecord {
        SecretRecord {
            name: "prod/db".into(),
            suffix: "AbC123".into(),
            description: Some("the database".into()),
            kms_key_id: None,
            tags: [("team".to_string(), "blue".to_string())].into(),
            created: 0.0,
            changed: 0.0,
            deleted: None,
            versions: vec![],
        }
    }

    fn version(id: &str, stages: &[&str]) -> SecretVersion {
        SecretVersion {
            id: id.into(),
            stages: stages.iter().map(|s| s.to_string()).collect(),
            created: 0.0,
            string: Some(id.into()),
            binary: None,
        }
    }

    #[test]
    fn a_new_current_version_leaves_the_old_one_previous() {
        let mut r = record();
        r.add_version(version("v1", &[]));
        r.add_version(version("v2", &[]));
        r.add_version(version("v3", &[]));
        let stages = r.stages();
        assert_eq!(stages["v3"], [CURRENT]);
        assert_eq!(stages["v2"], [PREVIOUS]);
        assert!(!stages.contains_key("v1"));
        r.add_version(version("v4", &[PENDING]));
        assert_eq!(r.stages()["v4"], [PENDING]);
        assert_eq!(r.version(None, None).expect("current").id, "v3");
        assert_eq!(r.version(None, Some(PENDING)).expect("pending").id, "v4");
        assert_eq!(
            r.version(Some("v3"), Some(PENDING))
                .expect_err("mismatch")
                .code,
            "InvalidRequestException"
        );
        assert!(r.version(Some("v9"), None).is_err());
        r.stage(CURRENT, "v4");
        assert_eq!(r.stages()["v4"], [PENDING, CURRENT]);
        assert_eq!(r.stages()["v3"], [PREVIOUS]);
    }

    #[test]
    fn unstaged_versions_go_beyond_the_limit() {
        let mut r = record();
        for i in 0..(MAX_VERSIONS + 5) {
            r.add_version(version(&format!("v{i}"), &[]));
        }
        assert_eq!(r.versions.len(), MAX_VERSIONS);
        assert_eq!(
            r.version(None, None).expect("current").id,
            format!("v{}", MAX_VERSIONS + 4)
        );
    }

    #[test]
    fn secret_ids_are_names_or_arns_with_or_without_suffix() {
        let r = record();
        assert_eq!(
            r.arn("r", "1"),
            "arn:aws:secretsmanager:r:1:secret:prod/db-AbC123"
        );
        let full = SecretId::parse(&r.arn("r", "1"), "r", "1").expect("ours");
        assert_eq!(full.name(), "prod/db");
        assert!(full.names(&r));
        let partial =
            SecretId::parse("arn:aws:secretsmanager:r:1:secret:prod/db", "r", "1").expect("ours");
        assert_eq!(partial, SecretId::Arn("prod/db".into(), None));
        let other = SecretId::parse("arn:aws:secretsmanager:r:1:secret:prod/db-ZZZZZZ", "r", "1")
            .expect("ours");
        assert!(!other.names(&r));
        assert!(SecretId::parse("arn:aws:secretsmanager:r:2:secret:x", "r", "1").is_none());
        assert_eq!(
            SecretId::parse("plain", "r", "1"),
            Some(SecretId::Name("plain".into()))
        );
    }

    #[test]
    fn names_values_and_filters() {
        assert!(check_name("prod/db_pass+1=@.-").is_ok());
        assert!(check_name("with space").is_err());
        assert!(check_name("").is_err());
        assert!(check_value(Some("a"), Some("YQ==")).is_err());
        assert!(check_value(Some(&"x".repeat(MAX_VALUE + 1)), None).is_err());
        assert!(check_token("short").is_err());
        let r = record();
        let f =
            |k: &str, v: &[&str]| vec![(k.to_string(), v.iter().map(|s| s.to_string()).collect())];
        assert!(matches(&r, "r", &f("name", &["prod/"])));
        assert!(!matches(&r, "r", &f("name", &["dev/"])));
        assert!(matches(&r, "r", &f("name", &["!dev/"])));
        assert!(matches(&r, "r", &f("tag-key", &["te"])));
        assert!(matches(&r, "r", &f("all", &["the"])));
        assert!(check_filters(&f("colour", &["x"])).is_err());
        assert!(!matches(&r, "r", &f("owning-service", &["prod"])));
        assert!(matches(&r, "r", &f("owning-service", &["!rds"])));
    }
}
