//! Parameter Store's rules (SSM `2014-11-06`): parameter names and
//! hierarchies, types, tiers, versions and labels, filters, with SSM's
//! exceptions and wording ([`SsmError`]). The record keeps a parameter's
//! versions together: at most [`MAX_VERSIONS`] of at most 8 KB each, well
//! under what one store write may carry.

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Versions a parameter keeps; the oldest goes when a new one is written.
pub const MAX_VERSIONS: usize = 100;
/// Labels one version may carry.
pub const MAX_LABELS: usize = 10;
/// Levels of a hierarchy (`/a/b/c` has three).
pub const MAX_LEVELS: usize = 15;
/// Characters of a name, without the ARN's prefix.
pub const MAX_NAME: usize = 1011;
/// Bytes of a Standard value; Advanced allows [`MAX_ADVANCED_VALUE`].
pub const MAX_STANDARD_VALUE: usize = 4096;
pub const MAX_ADVANCED_VALUE: usize = 8192;
/// Tags of one parameter.
pub const MAX_TAGS: usize = 50;
/// The KMS key a SecureString is sealed under unless another is named.
pub const DEFAULT_KEY_ID: &str = "alias/aws/ssm";
pub const TYPES: &[&str] = &["String", "StringList", "SecureString"];
pub const DATA_TYPES: &[&str] = &["text", "aws:ec2:image", "aws:ssm:integration"];

/// An SSM failure: the exception's name and its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SsmError {
    pub code: &'static str,
    pub message: String,
}

impl SsmError {
    pub fn new(code: &'static str, message: impl Into<String>) -> SsmError {
        SsmError {
            code,
            message: message.into(),
        }
    }
    pub fn validation(message: impl Into<String>) -> SsmError {
        SsmError::new("ValidationException", message)
    }
    /// AWS answers with no message at all; naming the parameter saves the
    /// reader a search.
    pub fn not_found(name: &str) -> SsmError {
        SsmError::new("ParameterNotFound", format!("Parameter {name} not found."))
    }
    pub fn version_not_found(name: &str, version: &str) -> SsmError {
        SsmError::new(
            "ParameterVersionNotFound",
            format!(
                "Systems Manager could not find version {version} of {name}. Verify the version and try again."
            ),
        )
    }
    /// A member that must be given.
    pub fn required(field: &str) -> SsmError {
        SsmError::validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))
    }
}

/// One version of a parameter. A SecureString's value is sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParameterVersion {
    pub version: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_pattern: Option<String>,
    pub tier: String,
    pub data_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    pub modified: Timestamp,
    /// The principal ARN that wrote it (`LastModifiedUser`).
    pub modified_by: String,
}

/// A parameter: its name as first written, its kept versions (oldest
/// first, the last is current) and its tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParameterRecord {
    pub name: String,
    pub versions: Vec<ParameterVersion>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl ParameterRecord {
    pub fn current(&self) -> &ParameterVersion {
        self.versions
            .last()
            .expect("a stored parameter has a version")
    }

    /// The version `selector` names (`3` or a label), if kept.
    pub fn select(&self, selector: &Selector) -> Option<&ParameterVersion> {
        match selector {
            Selector::Latest => self.versions.last(),
            Selector::Version(v) => self.versions.iter().find(|p| p.version == *v),
            Selector::Label(l) => self.versions.iter().find(|p| p.labels.contains(l)),
        }
    }
}

/// What follows a name's `:` in GetParameter(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Latest,
    Version(i64),
    Label(String),
}

impl Selector {
    /// `:3` or `:label`, as the response's `Selector` shows it.
    pub fn shown(&self) -> Option<String> {
        match self {
            Selector::Latest => None,
            Selector::Version(v) => Some(format!(":{v}")),
            Selector::Label(l) => Some(format!(":{l}")),
        }
    }
}

const INVALID_NAME: &str = "Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). If formed as a path, it can consist of sub-paths divided by slash symbol; each sub-path can be formed as a mix of letters, numbers and the following 3 symbols .-_";

/// The key a name is stored under: `/a` and `a` are one parameter, a
/// hierarchy keeps its path without the leading slash.
pub fn key_of(name: &str) -> &str {
    name.strip_prefix('/').unwrap_or(name)
}

/// The ARN of a parameter of `account` in `region`.
pub fn arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:ssm:{region}:{account}:parameter/{}", key_of(name))
}

/// A name as written in a request, or the ARN of a parameter of this
/// account and region: the name. Anything else is not a parameter here.
pub fn name_of<'a>(given: &'a str, region: &str, account: &str) -> Option<&'a str> {
    match given.strip_prefix("arn:") {
        None => Some(given),
        Some(_) => {
            let prefix = format!("arn:aws:ssm:{region}:{account}:parameter");
            let rest = given.strip_prefix(&prefix)?;
            // `parameter/a` names `a`, `parameter/a/b` names `/a/b`.
            let tail = rest.strip_prefix('/')?;
            if tail.contains('/') {
                Some(rest)
            } else {
                Some(tail)
            }
        }
    }
}

/// Checks a name as PutParameter sees it: the characters, the hierarchy,
/// and the prefixes AWS reserves.
pub fn check_name(name: &str) -> Result<(), SsmError> {
    check_name_syntax(name, "name")?;
    let bare = key_of(name).to_ascii_lowercase();
    if bare.starts_with("aws") || bare.starts_with("ssm") {
        if name.to_ascii_lowercase().starts_with("/aws/") {
            return Err(SsmError::new(
                "AccessDeniedException",
                format!("No access to reserved parameter name: {name}."),
            ));
        }
        return Err(SsmError::validation(INVALID_NAME));
    }
    Ok(())
}

/// The characters and shape of a name or path, read by any operation.
fn check_name_syntax(name: &str, field: &str) -> Result<(), SsmError> {
    if name.is_empty() {
        return Err(SsmError::validation(format!(
            "1 validation error detected: Value '' at '{field}' failed to satisfy constraint: Member must have length greater than or equal to 1"
        )));
    }
    if name.chars().count() > MAX_NAME {
        return Err(SsmError::validation(format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: Member must have length less than or equal to {MAX_NAME}"
        )));
    }
    if name.contains('/') && !name.starts_with('/') {
        return Err(SsmError::validation(
            "Parameter name must be a fully qualified name.",
        ));
    }
    let segments: Vec<&str> = key_of(name).split('/').collect();
    let ok = segments.iter().all(|s| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    });
    if !ok {
        return Err(SsmError::validation(INVALID_NAME));
    }
    if segments.len() > MAX_LEVELS {
        return Err(SsmError::new(
            "HierarchyLevelLimitExceededException",
            format!(
                "Parameter name: hierarchy level exceeded. The maximum is {MAX_LEVELS} levels; {name} has {}.",
                segments.len()
            ),
        ));
    }
    Ok(())
}

/// A name with an optional `:version` or `:label`, as GetParameter(s)
/// read it.
pub fn parse_selector(given: &str) -> Result<(&str, Selector), SsmError> {
    let (name, selector) = match given.rsplit_once(':') {
        // An ARN's colons belong to it; only a colon after its last `/`
        // or after `parameter` can start a selector.
        Some((n, s)) if !s.contains('/') => {
            if n.starts_with("arn:") && n.matches(':').count() < 5 {
                (given, Selector::Latest)
            } else if let Ok(v) = s.parse::<i64>() {
                (n, Selector::Version(v))
            } else {
                (n, Selector::Label(s.to_string()))
            }
        }
        _ => (given, Selector::Latest),
    };
    if let Selector::Label(l) = &selector {
        if l.is_empty() {
            return Err(SsmError::validation(format!(
                "Invalid parameter name. Please ensure that the parameter name, version or label in {given} is valid."
            )));
        }
    }
    Ok((name, selector))
}

/// Checks a path for GetParametersByPath: `/` or a hierarchy.
pub fn check_path(path: &str) -> Result<(), SsmError> {
    if path == "/" {
        return Ok(());
    }
    if !path.starts_with('/') {
        return Err(SsmError::validation(
            "The parameter doesn't meet the parameter name requirements. The parameter name must begin with a forward slash \"/\".",
        ));
    }
    check_name_syntax(path.trim_end_matches('/'), "path")
}

/// Whether `key` (a stored name, see [`key_of`]) is under `path`: one level
/// below it, or any depth when `recursive`.
pub fn under_path(key: &str, path: &str, recursive: bool) -> bool {
    let base = key_of(path.trim_end_matches('/'));
    // `/a` and `a` are one parameter, one level below `/`.
    let rest = if base.is_empty() {
        key
    } else {
        match key.strip_prefix(base).and_then(|r| r.strip_prefix('/')) {
            Some(r) => r,
            None => return false,
        }
    };
    recursive || !rest.contains('/')
}

/// The labels LabelParameterVersion cannot attach, and why not.
pub fn label_is_valid(label: &str) -> bool {
    let lower = label.to_ascii_lowercase();
    !label.is_empty()
        && label.len() <= 100
        && !lower.starts_with("aws")
        && !lower.starts_with("ssm")
        && !label.starts_with(|c: char| c.is_ascii_digit())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Checks a value against the tier's size and the parameter's pattern.
pub fn check_value(
    value: &str,
    tier: &str,
    pattern: Option<&str>,
    kind: &str,
) -> Result<(), SsmError> {
    if value.is_empty() {
        return Err(SsmError::validation(
            "1 validation error detected: Value '' at 'value' failed to satisfy constraint: Member must have length greater than or equal to 1.",
        ));
    }
    let max = if tier == "Advanced" {
        MAX_ADVANCED_VALUE
    } else {
        MAX_STANDARD_VALUE
    };
    if value.len() > max {
        let hint = if tier == "Advanced" {
            String::new()
        } else {
            " To create a larger parameter value, upgrade the parameter to use the advanced-parameter tier.".into()
        };
        return Err(SsmError::validation(format!(
            "{tier} tier parameters support a maximum parameter value of {max} characters.{hint}"
        )));
    }
    if let Some(p) = pattern {
        let re = compile_pattern(p)?;
        // A StringList's pattern applies to each item.
        let items: Vec<&str> = if kind == "StringList" {
            value.split(',').collect()
        } else {
            vec![value]
        };
        if !items.iter().all(|v| re.is_match(v)) {
            return Err(SsmError::new(
                "ParameterPatternMismatchException",
                format!("Parameter value, cannot be validated against allowedPattern: {p}"),
            ));
        }
    }
    Ok(())
}

/// An AllowedPattern as a regular expression matching the whole value.
pub fn compile_pattern(p: &str) -> Result<regex::Regex, SsmError> {
    if p.len() > 1024 {
        return Err(SsmError::validation(
            "1 validation error detected: Value at 'allowedPattern' failed to satisfy constraint: Member must have length less than or equal to 1024",
        ));
    }
    regex::Regex::new(&format!("^(?:{p})$")).map_err(|_| {
        SsmError::new(
            "InvalidAllowedPatternException",
            format!("The allowed pattern {p} is not a valid regular expression."),
        )
    })
}

/// Checks a tier: Intelligent-Tiering picks Standard when the value fits.
pub fn tier_for(
    asked: Option<&str>,
    value: &str,
    previous: Option<&str>,
) -> Result<String, SsmError> {
    match asked {
        None => Ok(previous.unwrap_or("Standard").to_string()),
        Some("Standard") => {
            if previous == Some("Advanced") {
                return Err(SsmError::validation(
                    "This parameter uses the advanced-parameter tier. You can't downgrade a parameter from the advanced-parameter tier to the standard-parameter tier. If necessary, you can delete the advanced parameter and recreate it as a standard parameter.",
                ));
            }
            Ok("Standard".into())
        }
        Some("Advanced") => Ok("Advanced".into()),
        Some("Intelligent-Tiering") => Ok(
            if value.len() > MAX_STANDARD_VALUE || previous == Some("Advanced") {
                "Advanced"
            } else {
                "Standard"
            }
            .into(),
        ),
        Some(other) => Err(SsmError::validation(format!(
            "1 validation error detected: Value '{other}' at 'tier' failed to satisfy constraint: Member must satisfy enum value set: [Standard, Advanced, Intelligent-Tiering]"
        ))),
    }
}

/// Checks a member against its enum, in the model's words.
pub fn one_of(value: &str, allowed: &[&str], field: &str) -> Result<(), SsmError> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(SsmError::validation(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
        allowed.join(", ")
    )))
}

/// A tag key and value as SSM accepts them.
pub fn check_tag(key: &str, value: &str) -> Result<(), SsmError> {
    let ok = |s: &str, min: usize, max: usize| {
        (min..=max).contains(&s.chars().count())
            && s.chars()
                .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
    };
    if !ok(key, 1, 128) || key.to_ascii_lowercase().starts_with("aws:") {
        return Err(SsmError::validation(format!(
            "1 validation error detected: Value '{key}' at 'tags.key' failed to satisfy constraint: Member must satisfy regular expression pattern: ^(?!^(?i)aws:)(?=^[\\p{{L}}\\p{{Z}}\\p{{N}}_.:/=+\\-@]*$).*$"
        )));
    }
    if !ok(value, 0, 256) {
        return Err(SsmError::validation(format!(
            "1 validation error detected: Value '{value}' at 'tags.value' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[\\p{{L}}\\p{{Z}}\\p{{N}}_.:/=+\\-@]*$"
        )));
    }
    Ok(())
}

/// A DescribeParameters / GetParametersByPath filter (`ParameterFilters`).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub key: String,
    pub option: String,
    pub values: Vec<String>,
}

/// Checks filters: their keys, options and values, for DescribeParameters
/// (`by_path` false) or GetParametersByPath.
pub fn check_filters(filters: &[Filter], by_path: bool) -> Result<(), SsmError> {
    for f in filters {
        let key = f.key.as_str();
        let tag = key.starts_with("tag:");
        let known = matches!(
            key,
            "Name" | "Type" | "KeyId" | "Path" | "Tier" | "Label" | "DataType"
        ) || tag;
        if !known {
            return Err(SsmError::new(
                "InvalidFilterKey",
                format!("The following filter key is not valid: {key}. Valid filter keys include: [Path, Name, Type, KeyId, Tier, Label, DataType, tag:<key>]."),
            ));
        }
        if by_path && matches!(key, "Name" | "Path" | "Tier") {
            return Err(SsmError::new(
                "InvalidFilterKey",
                format!("The following filter key is not valid: {key}. Valid filter keys include: [Type, KeyId, Label, DataType, tag:<key>]."),
            ));
        }
        let options: &[&str] = match key {
            "Name" => &["Equals", "BeginsWith", "Contains"],
            "Path" => &["OneLevel", "Recursive"],
            _ if tag => &["Equals"],
            _ => &["Equals", "BeginsWith"],
        };
        if !options.contains(&f.option.as_str()) {
            return Err(SsmError::new(
                "InvalidFilterOption",
                format!(
                    "The following filter option is not valid: {}. Valid options include: [{}].",
                    f.option,
                    options.join(", ")
                ),
            ));
        }
        if f.values.is_empty() && !tag {
            return Err(SsmError::new(
                "InvalidFilterValue",
                format!("The following filter values are missing : null for filter key {key}."),
            ));
        }
        if f.values.len() > 50 {
            return Err(SsmError::new(
                "InvalidFilterValue",
                format!("Filter {key} can have at most 50 values."),
            ));
        }
    }
    Ok(())
}

/// Whether a parameter passes every filter.
pub fn matches(record: &ParameterRecord, filters: &[Filter]) -> bool {
    let p = record.current();
    let shown = format!("/{}", key_of(&record.name));
    filters.iter().all(|f| {
        let test = |what: &str| -> bool {
            f.values.iter().any(|v| match f.option.as_str() {
                "BeginsWith" => what.starts_with(v.as_str()),
                "Contains" => what.contains(v.as_str()),
                _ => what == v,
            })
        };
        match f.key.as_str() {
            "Name" => {
                let values_slashed = f.option != "Contains";
                f.values.iter().any(|v| {
                    let v = if values_slashed {
                        format!("/{}", key_of(v))
                    } else {
                        v.clone()
                    };
                    match f.option.as_str() {
                        "BeginsWith" => shown.starts_with(&v),
                        "Contains" => shown.contains(&v),
                        _ => shown == v,
                    }
                })
            }
            "Path" => f
                .values
                .iter()
                .any(|v| under_path(key_of(&record.name), v, f.option == "Recursive")),
            "Type" => test(&p.kind),
            "KeyId" => p.key_id.as_deref().is_some_and(test),
            "Tier" => test(&p.tier),
            "DataType" => test(&p.data_type),
            "Label" => record
                .versions
                .iter()
                .any(|v| v.labels.iter().any(|l| test(l))),
            key => match key.strip_prefix("tag:") {
                Some(k) => record
                    .tags
                    .get(k)
                    .is_some_and(|v| f.values.is_empty() || test(v)),
                None => false,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_hierarchy_rules() {
        assert!(check_name("db-password").is_ok());
        assert!(check_name("/prod/db/password").is_ok());
        assert_eq!(
            check_name("prod/db").expect_err("refused").message,
            "Parameter name must be a fully qualified name."
        );
        assert_eq!(
            check_name("/a b").expect_err("refused").message,
            INVALID_NAME
        );
        assert_eq!(
            check_name("/a//b").expect_err("refused").message,
            INVALID_NAME
        );
        assert_eq!(
            check_name("ssm-thing").expect_err("refused").code,
            "ValidationException"
        );
        assert_eq!(
            check_name("/aws/x").expect_err("refused").code,
            "AccessDeniedException"
        );
        let deep = "/a".repeat(16);
        assert_eq!(
            check_name(&deep).expect_err("refused").code,
            "HierarchyLevelLimitExceededException"
        );
        assert!(check_name(&"/a".repeat(15)).is_ok());
        assert!(check_name("")
            .expect_err("refused")
            .message
            .contains("'name'"));
    }

    #[test]
    fn a_single_level_name_is_the_same_with_or_without_its_slash() {
        assert_eq!(key_of("/a"), key_of("a"));
        assert_eq!(arn("r", "1", "/a/b"), "arn:aws:ssm:r:1:parameter/a/b");
        assert_eq!(arn("r", "1", "a"), "arn:aws:ssm:r:1:parameter/a");
        assert_eq!(
            name_of("arn:aws:ssm:r:1:parameter/a/b", "r", "1"),
            Some("/a/b")
        );
        assert_eq!(name_of("arn:aws:ssm:r:1:parameter/a", "r", "1"), Some("a"));
        assert_eq!(name_of("arn:aws:ssm:r:2:parameter/a", "r", "1"), None);
        assert_eq!(name_of("/a", "r", "1"), Some("/a"));
    }

    #[test]
    fn selectors_are_versions_or_labels() {
        assert_eq!(
            parse_selector("/a/b").expect("accepted"),
            ("/a/b", Selector::Latest)
        );
        assert_eq!(
            parse_selector("/a/b:3").expect("accepted"),
            ("/a/b", Selector::Version(3))
        );
        assert_eq!(
            parse_selector("/a/b:prod").expect("accepted"),
            ("/a/b", Selector::Label("prod".into()))
        );
        assert_eq!(
            parse_selector("arn:aws:ssm:r:1:parameter/a:2").expect("accepted"),
            ("arn:aws:ssm:r:1:parameter/a", Selector::Version(2))
        );
        assert_eq!(
            parse_selector("arn:aws:ssm:r:1:parameter/a").expect("accepted"),
            ("arn:aws:ssm:r:1:parameter/a", Selector::Latest)
        );
        assert!(parse_selector("/a:").is_err());
    }

    #[test]
    fn paths_hold_one_level_unless_recursive() {
        assert!(under_path("a/b", "/a", false));
        assert!(under_path("a/b", "/a/", false));
        assert!(!under_path("a/b/c", "/a", false));
        assert!(under_path("a/b/c", "/a", true));
        assert!(!under_path("ab/c", "/a", true));
        assert!(under_path("plain", "/", false));
        assert!(!under_path("a/b", "/", false));
        assert!(under_path("a/b/c", "/", true));
        assert!(check_path("a").is_err());
        assert!(check_path("/a/").is_ok());
    }

    #[test]
    fn values_are_checked_against_tier_and_pattern() {
        assert!(check_value(&"x".repeat(4096), "Standard", None, "String").is_ok());
        let e = check_value(&"x".repeat(4097), "Standard", None, "String").expect_err("refused");
        assert!(e.message.contains("4096"));
        assert!(check_value(&"x".repeat(8192), "Advanced", None, "String").is_ok());
        assert!(check_value("", "Standard", None, "String").is_err());
        assert!(check_value("123", "Standard", Some("[0-9]+"), "String").is_ok());
        let e = check_value("12a", "Standard", Some("[0-9]+"), "String").expect_err("refused");
        assert_eq!(e.code, "ParameterPatternMismatchException");
        assert!(check_value("1,2", "Standard", Some("[0-9]"), "StringList").is_ok());
        assert_eq!(
            compile_pattern("(").expect_err("refused").code,
            "InvalidAllowedPatternException"
        );
        assert_eq!(
            tier_for(Some("Intelligent-Tiering"), &"x".repeat(5000), None).expect("accepted"),
            "Advanced"
        );
        assert!(tier_for(Some("Standard"), "x", Some("Advanced")).is_err());
        assert_eq!(
            tier_for(None, "x", Some("Advanced")).expect("accepted"),
            "Advanced"
        );
    }

    #[test]
    fn labels_cannot_look_like_versions_or_reserved_words() {
        assert!(label_is_valid("prod"));
        assert!(!label_is_valid("1prod"));
        assert!(!label_is_valid("aws-x"));
        assert!(!label_is_valid("a b"));
        assert!(!label_is_valid(""));
    }

    fn record(name: &str, kind: &str, tags: &[(&str, &str)]) -> ParameterRecord {
        ParameterRecord {
            name: name.into(),
            versions: vec![ParameterVersion {
                version: 1,
                kind: kind.into(),
                value: "v".into(),
                key_id: None,
                description: None,
                allowed_pattern: None,
                tier: "Standard".into(),
                data_type: "text".into(),
                policies: None,
                labels: vec!["live".into()],
                modified: 0.0,
                modified_by: String::new(),
            }],
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn filters_select_by_name_type_path_label_and_tag() {
        let r = record("/app/db/url", "String", &[("team", "blue")]);
        let f = |key: &str, option: &str, values: &[&str]| Filter {
            key: key.into(),
            option: option.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        assert!(matches(&r, &[f("Name", "BeginsWith", &["/app"])]));
        assert!(matches(&r, &[f("Name", "BeginsWith", &["app/db"])]));
        assert!(matches(&r, &[f("Name", "Contains", &["db"])]));
        assert!(!matches(&r, &[f("Name", "Equals", &["/app"])]));
        assert!(matches(&r, &[f("Type", "Equals", &["String"])]));
        assert!(!matches(&r, &[f("Type", "Equals", &["SecureString"])]));
        assert!(matches(&r, &[f("Path", "Recursive", &["/app"])]));
        assert!(!matches(&r, &[f("Path", "OneLevel", &["/app"])]));
        assert!(matches(&r, &[f("Label", "Equals", &["live"])]));
        assert!(matches(&r, &[f("tag:team", "Equals", &["blue"])]));
        assert!(matches(&r, &[f("tag:team", "Equals", &[])]));
        assert!(!matches(&r, &[f("tag:owner", "Equals", &[])]));
        assert!(check_filters(&[f("Colour", "Equals", &["x"])], false).is_err());
        assert!(check_filters(&[f("Name", "Equals", &["x"])], true).is_err());
        assert!(check_filters(&[f("Name", "OneLevel", &["x"])], false).is_err());
        assert!(check_filters(&[f("Type", "Equals", &[])], false).is_err());
    }
}
