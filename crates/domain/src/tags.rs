//! Resource tags: ECS's limits and merge rules.

use crate::EcsError;
use berth_wire::ecs::Tag;

pub const MAX_TAGS: usize = 50;

fn valid_chars(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
}

/// Checks tags as given in a request (keys 1-128, values 0-256, no `aws:`
/// prefix, allowed characters, no duplicate keys).
pub fn validate(tags: &[Tag]) -> Result<(), EcsError> {
    let mut seen = std::collections::HashSet::new();
    for t in tags {
        let key = t.key.as_deref().unwrap_or_default();
        let value = t.value.as_deref().unwrap_or_default();
        if key.is_empty() || key.chars().count() > 128 {
            return Err(EcsError::invalid(
                "Tag keys must be between 1 and 128 characters in length.",
            ));
        }
        if value.chars().count() > 256 {
            return Err(EcsError::invalid(format!(
                "Tag value for key '{key}' must be at most 256 characters in length."
            )));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(EcsError::invalid(format!(
                "Tag key '{key}' is not allowed: the aws: prefix is reserved for AWS use."
            )));
        }
        if !valid_chars(key) || !valid_chars(value) {
            return Err(EcsError::invalid(format!(
                "Tag '{key}' contains invalid characters. Allowed: letters, numbers, spaces and _ . : / = + - @"
            )));
        }
        if !seen.insert(key) {
            return Err(EcsError::invalid(format!("Duplicate tag key '{key}'.")));
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(EcsError::invalid(format!(
            "A resource can have at most {MAX_TAGS} tags."
        )));
    }
    Ok(())
}

/// Adds or overwrites `new` on `current`, enforcing the per-resource limit.
pub fn merge(current: &[Tag], new: &[Tag]) -> Result<Vec<Tag>, EcsError> {
    validate(new)?;
    let mut out = current.to_vec();
    for t in new {
        match out.iter_mut().find(|c| c.key == t.key) {
            Some(c) => c.value = t.value.clone(),
            None => out.push(t.clone()),
        }
    }
    if out.len() > MAX_TAGS {
        return Err(EcsError::invalid(format!(
            "A resource can have at most {MAX_TAGS} tags; this request would give it {}.",
            out.len()
        )));
    }
    Ok(out)
}

/// Removes the given keys; unknown keys are ignored, as ECS does.
pub fn remove(current: &[Tag], keys: &[String]) -> Vec<Tag> {
    current
        .iter()
        .filter(|t| !keys.iter().any(|k| t.key.as_deref() == Some(k)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(k: &str, v: &str) -> Tag {
        Tag {
            key: Some(k.into()),
            value: Some(v.into()),
        }
    }

    #[test]
    fn merge_overwrites_and_limits() {
        let cur = vec![tag("a", "1")];
        let out = merge(&cur, &[tag("a", "2"), tag("b", "3")]).expect("ok");
        assert_eq!(out, vec![tag("a", "2"), tag("b", "3")]);
        let many: Vec<Tag> = (0..50).map(|i| tag(&format!("k{i}"), "v")).collect();
        assert!(merge(&many, &[tag("one-more", "v")]).is_err());
        assert!(merge(&many, &[tag("k1", "changed")]).is_ok());
    }

    #[test]
    fn validate_rejects_reserved_long_and_bad_chars() {
        assert!(validate(&[tag("aws:x", "v")]).is_err());
        assert!(validate(&[tag("AWS:x", "v")]).is_err());
        assert!(validate(&[tag(&"k".repeat(129), "v")]).is_err());
        assert!(validate(&[tag("k", &"v".repeat(257))]).is_err());
        assert!(validate(&[tag("", "v")]).is_err());
        assert!(validate(&[tag("k#", "v")]).is_err());
        assert!(validate(&[tag("team name", "a/b=c+d@e:f.g_h-i")]).is_ok());
    }

    #[test]
    fn remove_ignores_unknown_keys() {
        assert_eq!(
            remove(&[tag("a", "1"), tag("b", "2")], &["b".into(), "zz".into()]),
            vec![tag("a", "1")]
        );
    }
}
