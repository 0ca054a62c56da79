//! Parameter Store's writes and reads against the store. A parameter is one
//! record holding its kept versions; every change is a compare-and-swap on
//! it, so a failed check leaves the store as it was. SecureString values
//! are sealed with the server's secrets key, bound to the parameter and
//! version, and opened only for a caller that asks for decryption.

use crate::cas::{self, Attempt};
use crate::{Control, ControlError};
use berth_domain::ssm::{
    self, check_name, check_value, key_of, tier_for, ParameterRecord, ParameterVersion, SsmError,
    DEFAULT_KEY_ID, MAX_TAGS, MAX_VERSIONS,
};
use berth_domain::{Scope, Timestamp};
use berth_store::keys::ssm as keys;
use berth_store::typed::{self, Versioned};
use berth_store::{Op, Txn};
use std::collections::BTreeMap;

/// An SSM failure or the store's.
#[derive(Debug, thiserror::Error)]
pub enum SsmFailure {
    #[error(transparent)]
    Ssm(#[from] SsmError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl From<berth_store::StoreError> for SsmFailure {
    fn from(e: berth_store::StoreError) -> Self {
        SsmFailure::Control(e.into())
    }
}

type Result<T> = std::result::Result<T, SsmFailure>;

async fn swap<T, Fut>(ctl: &Control, attempt: impl FnMut() -> Fut) -> Result<T>
where
    Fut: std::future::Future<Output = Result<Attempt<T>>>,
{
    cas::retry_swap(ctl, attempt).await?.ok_or_else(|| {
        SsmError::new(
            "TooManyUpdates",
            "There are concurrent updates for the resource that you're trying to update. Please try again.",
        )
        .into()
    })
}

/// What PutParameter asks for; `None` keeps what the last version had.
#[derive(Debug, Clone, Default)]
pub struct Put {
    pub name: String,
    pub value: String,
    pub kind: Option<String>,
    pub description: Option<String>,
    pub key_id: Option<String>,
    pub overwrite: bool,
    pub allowed_pattern: Option<String>,
    pub tags: Vec<(String, String)>,
    pub tier: Option<String>,
    pub data_type: Option<String>,
}

/// What sealing a SecureString binds it to: another parameter's or
/// version's sealed value copied here does not open.
fn seal_context(scope: &Scope, key: &str, version: i64) -> String {
    format!("ssm:{}:{}:{key}:{version}", scope.account, scope.region)
}

/// Writes a new version (the first makes the parameter): its number and tier.
pub async fn put(
    ctl: &Control,
    scope: &Scope,
    principal: &str,
    now: Timestamp,
    req: Put,
) -> Result<(i64, String)> {
    check_name(&req.name)?;
    if req.overwrite && !req.tags.is_empty() {
        return Err(SsmError::validation(
            "Invalid request: tags and overwrite can't be used together. To create a parameter with tags, please remove overwrite flag. To update tags for an existing parameter, please use AddTagsToResource or RemoveTagsFromResource.",
        )
        .into());
    }
    if let Some(kind) = &req.kind {
        ssm::one_of(kind, ssm::TYPES, "type")?;
    }
    if let Some(d) = &req.data_type {
        if !ssm::DATA_TYPES.contains(&d.as_str()) {
            return Err(SsmError::validation(format!(
                "The following data type is not supported: {d} (Data type names are all lowercase.)"
            ))
            .into());
        }
    }
    if let Some(p) = &req.allowed_pattern {
        ssm::compile_pattern(p)?;
    }
    check_tags(&req.tags)?;
    let key = key_of(&req.name).to_string();
    let store_key = keys::parameter(scope, &key);
    swap(ctl, || async {
        let current = typed::get::<ParameterRecord>(&*ctl.store, &store_key).await?;
        let previous = current.as_ref().map(|c| c.value.current().clone());
        if previous.is_some() && !req.overwrite {
            return Err(SsmError::new(
                "ParameterAlreadyExists",
                "The parameter already exists. To overwrite this value, set the overwrite option in the request to true.",
            )
            .into());
        }
        let Some(kind) = req
            .kind
            .clone()
            .or_else(|| previous.as_ref().map(|p| p.kind.clone()))
        else {
            return Err(
                SsmError::validation("A parameter type is required when you create a parameter.")
                    .into(),
            );
        };
        let secure = kind == "SecureString";
        if req.key_id.is_some() && !secure {
            return Err(SsmError::validation(format!(
                "KeyId applies to SecureString parameters only; this parameter's type is {kind}."
            ))
            .into());
        }
        let tier = tier_for(
            req.tier.as_deref(),
            &req.value,
            previous.as_ref().map(|p| p.tier.as_str()),
        )?;
        let allowed_pattern = req
            .allowed_pattern
            .clone()
            .or_else(|| previous.as_ref().and_then(|p| p.allowed_pattern.clone()));
        check_value(&req.value, &tier, allowed_pattern.as_deref(), &kind)?;
        let mut record = match &current {
            Some(c) => c.value.clone(),
            None => ParameterRecord {
                name: req.name.clone(),
                versions: vec![],
                tags: req.tags.iter().cloned().collect(),
            },
        };
        let version = previous.as_ref().map_or(1, |p| p.version + 1);
        if record.versions.len() >= MAX_VERSIONS {
            let oldest = &record.versions[0];
            if !oldest.labels.is_empty() {
                return Err(SsmError::new(
                    "ParameterMaxVersionLimitExceeded",
                    format!(
                        "You attempted to create a new version of {} by calling the PutParameter API with the overwrite flag. Version {}, the oldest version, can't be deleted because it has a label associated with it. Move the label to another version of the parameter, and try again.",
                        req.name, oldest.version
                    ),
                )
                .into());
            }
            record.versions.remove(0);
        }
        let key_id = secure.then(|| {
            req.key_id
                .clone()
                .or_else(|| previous.as_ref().and_then(|p| p.key_id.clone()))
                .unwrap_or_else(|| DEFAULT_KEY_ID.to_string())
        });
        let value = if secure {
            ctl.identity
                .seal(&req.value, &seal_context(scope, &key, version))
        } else {
            req.value.clone()
        };
        record.versions.push(ParameterVersion {
            version,
            kind,
            value,
            key_id,
            description: req
                .description
                .clone()
                .or_else(|| previous.as_ref().and_then(|p| p.description.clone())),
            allowed_pattern,
            tier: tier.clone(),
            data_type: req
                .data_type
                .clone()
                .or_else(|| previous.as_ref().map(|p| p.data_type.clone()))
                .unwrap_or_else(|| "text".into()),
            policies: None,
            labels: vec![],
            modified: now,
            modified_by: principal.to_string(),
        });
        let txn = Txn::when(
            vec![typed::unchanged(
                &store_key,
                current.as_ref().map_or(0, |c| c.mod_revision),
            )],
            vec![typed::put(&store_key, &record)],
        );
        Ok(Attempt::Write(txn, (version, tier)))
    })
    .await
}

fn check_tags(tags: &[(String, String)]) -> Result<()> {
    for (k, v) in tags {
        ssm::check_tag(k, v)?;
    }
    if tags.len() > MAX_TAGS {
        return Err(too_many_tags().into());
    }
    Ok(())
}

fn too_many_tags() -> SsmError {
    SsmError::new(
        "TooManyTagsError",
        format!("A parameter can have at most {MAX_TAGS} tags."),
    )
}

/// The parameter `name` names, if it exists.
pub async fn get(
    ctl: &Control,
    scope: &Scope,
    name: &str,
) -> Result<Option<Versioned<ParameterRecord>>> {
    Ok(typed::get::<ParameterRecord>(&*ctl.store, &keys::parameter(scope, key_of(name))).await?)
}

/// Every parameter whose stored name starts with `under` (`""` for all),
/// in name order.
pub async fn list(ctl: &Control, scope: &Scope, under: &str) -> Result<Vec<ParameterRecord>> {
    let prefix = format!("{}{under}", keys::parameters(scope));
    Ok(typed::list::<ParameterRecord>(&*ctl.store, &prefix)
        .await?
        .into_iter()
        .map(|(_, r)| r.value)
        .collect())
}

/// The value of a version as the caller reads it: a SecureString opened
/// when `decrypt`, else its sealed form (what AWS returns: ciphertext).
pub fn value(
    ctl: &Control,
    scope: &Scope,
    record: &ParameterRecord,
    version: &ParameterVersion,
    decrypt: bool,
) -> Result<String> {
    if version.kind != "SecureString" || !decrypt {
        return Ok(version.value.clone());
    }
    let context = seal_context(scope, key_of(&record.name), version.version);
    ctl.identity.open(&version.value, &context).map_err(|e| {
        SsmFailure::Control(ControlError::Internal(format!(
            "cannot open SecureString {}: {e}",
            record.name
        )))
    })
}

/// Deletes a parameter with all its versions and tags.
pub async fn delete(ctl: &Control, scope: &Scope, name: &str) -> Result<()> {
    let store_key = keys::parameter(scope, key_of(name));
    swap(ctl, || async {
        let Some(current) = typed::get::<ParameterRecord>(&*ctl.store, &store_key).await? else {
            return Err(SsmError::not_found(name).into());
        };
        let txn = Txn::when(
            vec![typed::unchanged(&store_key, current.mod_revision)],
            vec![Op::delete(store_key.clone())],
        );
        Ok(Attempt::Write(txn, ()))
    })
    .await
}

/// Changes a parameter with `change` (which may refuse) by compare-and-swap;
/// `missing` when it does not exist.
pub async fn change<T>(
    ctl: &Control,
    scope: &Scope,
    name: &str,
    missing: impl Fn() -> SsmError,
    change: impl Fn(&mut ParameterRecord) -> std::result::Result<T, SsmError>,
) -> Result<T> {
    let store_key = keys::parameter(scope, key_of(name));
    swap(ctl, || async {
        let Some(current) = typed::get::<ParameterRecord>(&*ctl.store, &store_key).await? else {
            return Err(missing().into());
        };
        let mut next = current.value.clone();
        let answer = change(&mut next)?;
        if next == current.value {
            return Ok(Attempt::Done(answer));
        }
        let txn = Txn::when(
            vec![typed::unchanged(&store_key, current.mod_revision)],
            vec![typed::put(&store_key, &next)],
        );
        Ok(Attempt::Write(txn, answer))
    })
    .await
}

/// Adds tags to a parameter, replacing values of keys it has.
pub fn add_tags(
    record: &mut ParameterRecord,
    tags: &[(String, String)],
) -> std::result::Result<(), SsmError> {
    for (k, v) in tags {
        ssm::check_tag(k, v)?;
    }
    let mut next: BTreeMap<String, String> = record.tags.clone();
    next.extend(tags.iter().cloned());
    if next.len() > MAX_TAGS {
        return Err(too_many_tags());
    }
    record.tags = next;
    Ok(())
}

/// Attaches `labels` to `version` (the latest when `None`), moving any
/// that another version had: the labels that cannot be labels, and the
/// version.
pub fn label(
    record: &mut ParameterRecord,
    version: Option<i64>,
    labels: &[String],
) -> std::result::Result<(Vec<String>, i64), SsmError> {
    let version = version.unwrap_or_else(|| record.current().version);
    let name = record.name.clone();
    let Some(at) = record.versions.iter().position(|v| v.version == version) else {
        return Err(SsmError::version_not_found(&name, &version.to_string()));
    };
    let (valid, invalid): (Vec<&String>, Vec<&String>) =
        labels.iter().partition(|l| ssm::label_is_valid(l));
    let mut now: Vec<String> = record.versions[at].labels.clone();
    for l in &valid {
        if !now.contains(l) {
            now.push((*l).clone());
        }
    }
    if now.len() > ssm::MAX_LABELS {
        return Err(SsmError::new(
            "ParameterVersionLabelLimitExceeded",
            format!(
                "A parameter version can have maximum {} labels. Move one or more labels to another version and try again.",
                ssm::MAX_LABELS
            ),
        ));
    }
    for (i, v) in record.versions.iter_mut().enumerate() {
        if i == at {
            v.labels = now.clone();
        } else {
            v.labels.retain(|l| !valid.contains(&l));
        }
    }
    Ok((invalid.into_iter().cloned().collect(), version))
}

/// Detaches `labels` from `version`: those removed, and those it did not have.
pub fn unlabel(
    record: &mut ParameterRecord,
    version: i64,
    labels: &[String],
) -> std::result::Result<(Vec<String>, Vec<String>), SsmError> {
    let name = record.name.clone();
    let Some(v) = record.versions.iter_mut().find(|v| v.version == version) else {
        return Err(SsmError::version_not_found(&name, &version.to_string()));
    };
    let (removed, invalid): (Vec<String>, Vec<String>) =
        labels.iter().cloned().partition(|l| v.labels.contains(l));
    v.labels.retain(|l| !removed.contains(l));
    Ok((removed, invalid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(versions: i64) -> ParameterRecord {
        ParameterRecord {
            name: "/a".into(),
            versions: (1..=versions)
                .map(|version| ParameterVersion {
                    version,
                    kind: "String".into(),
                    value: format!("v{version}"),
                    key_id: None,
                    description: None,
                    allowed_pattern: None,
                    tier: "Standard".into(),
                    data_type: "text".into(),
                    policies: None,
                    labels: vec![],
                    modified: 0.0,
                    modified_by: String::new(),
                })
                .collect(),
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn a_label_moves_to_the_version_it_is_put_on() {
        let mut r = record(3);
        let (invalid, v) = label(&mut r, Some(1), &["prod".into(), "9x".into()]).expect("accepted");
        assert_eq!((invalid, v), (vec!["9x".to_string()], 1));
        assert_eq!(r.versions[0].labels, ["prod"]);
        let (_, v) = label(&mut r, None, &["prod".into()]).expect("accepted");
        assert_eq!(v, 3);
        assert!(r.versions[0].labels.is_empty());
        assert_eq!(r.versions[2].labels, ["prod"]);
        assert_eq!(
            label(&mut r, Some(7), &["x".into()])
                .expect_err("refused")
                .code,
            "ParameterVersionNotFound"
        );
        let many: Vec<String> = (0..11).map(|i| format!("l{i}")).collect();
        assert_eq!(
            label(&mut r, Some(2), &many).expect_err("refused").code,
            "ParameterVersionLabelLimitExceeded"
        );
        let (removed, invalid) =
            unlabel(&mut r, 3, &["prod".into(), "other".into()]).expect("accepted");
        assert_eq!(
            (removed, invalid),
            (vec!["prod".to_string()], vec!["other".to_string()])
        );
        assert!(r.versions[2].labels.is_empty());
    }

    #[test]
    fn tags_merge_up_to_the_limit() {
        let mut r = record(1);
        add_tags(&mut r, &[("a".into(), "1".into())]).expect("accepted");
        add_tags(
            &mut r,
            &[("a".into(), "2".into()), ("b".into(), "3".into())],
        )
        .expect("accepted");
        assert_eq!(r.tags.get("a").map(String::as_str), Some("2"));
        let many: Vec<(String, String)> =
            (0..49).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(
            add_tags(&mut r, &many).expect_err("refused").code,
            "TooManyTagsError"
        );
        assert_eq!(r.tags.len(), 2);
    }
}
