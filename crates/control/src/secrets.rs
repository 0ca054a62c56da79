//! Secrets Manager's writes and reads against the store. A secret is one
//! record holding its versions; every change is a compare-and-swap on it,
//! so a refused request leaves the store as it was. Values are sealed with
//! the server's secrets key, bound to the secret's ARN and the version id.
//! A secret scheduled for deletion is written under a store lease that
//! ends after its recovery window; until the store drops it, reads treat a
//! secret past its deletion date as gone.

use crate::cas::{self, Attempt};
use crate::{Control, ControlError};
use berth_domain::secrets::{SecretId, SecretRecord, SecretVersion, SecretsError, MAX_TAGS};
use berth_domain::{Scope, Timestamp};
use berth_store::keys::secrets as keys;
use berth_store::typed::{self, Versioned};
use berth_store::{Op, Txn};
use rand::Rng;
use std::time::Duration;

/// A Secrets Manager failure or the store's.
#[derive(Debug, thiserror::Error)]
pub enum SecretsFailure {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl From<berth_store::StoreError> for SecretsFailure {
    fn from(e: berth_store::StoreError) -> Self {
        SecretsFailure::Control(e.into())
    }
}

type Result<T> = std::result::Result<T, SecretsFailure>;

async fn swap<T, Fut>(ctl: &Control, attempt: impl FnMut() -> Fut) -> Result<T>
where
    Fut: std::future::Future<Output = Result<Attempt<T>>>,
{
    cas::retry_swap(ctl, attempt).await?.ok_or_else(|| {
        SecretsError::new(
            "InternalServiceError",
            "The secret is being changed by other requests; try again.",
        )
        .into()
    })
}

/// A value to store as a new version.
#[derive(Debug, Clone, Default)]
pub struct NewValue {
    pub string: Option<String>,
    /// SecretBinary as its base64 text.
    pub binary: Option<String>,
    /// ClientRequestToken: the version's id, and what makes a retry safe.
    pub token: Option<String>,
    /// Staging labels; AWSCURRENT when empty.
    pub stages: Vec<String>,
}

impl NewValue {
    pub fn is_empty(&self) -> bool {
        self.string.is_none() && self.binary.is_none()
    }
}

fn seal_context(arn: &str, version: &str) -> String {
    format!("{arn}:{version}")
}

/// The version `value` makes, sealed for `record`.
fn sealed_version(
    ctl: &Control,
    scope: &Scope,
    record: &SecretRecord,
    value: &NewValue,
    now: Timestamp,
) -> SecretVersion {
    let id = value
        .token
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let context = seal_context(&record.arn(&scope.region, &scope.account), &id);
    SecretVersion {
        stages: value.stages.clone(),
        created: now,
        string: value
            .string
            .as_ref()
            .map(|s| ctl.identity.seal(s, &context)),
        binary: value
            .binary
            .as_ref()
            .map(|b| ctl.identity.seal(b, &context)),
        id,
    }
}

/// A version's value, opened: (SecretString, SecretBinary as base64).
pub fn value(
    ctl: &Control,
    scope: &Scope,
    record: &SecretRecord,
    version: &SecretVersion,
) -> Result<(Option<String>, Option<String>)> {
    let context = seal_context(&record.arn(&scope.region, &scope.account), &version.id);
    let open = |sealed: &Option<String>| -> Result<Option<String>> {
        sealed
            .as_ref()
            .map(|s| {
                ctl.identity.open(s, &context).map_err(|e| {
                    SecretsFailure::Control(ControlError::Internal(format!(
                        "cannot open a version of secret {}: {e}",
                        record.name
                    )))
                })
            })
            .transpose()
    };
    Ok((open(&version.string)?, open(&version.binary)?))
}

/// Whether `version` holds exactly `value` (a retried request).
fn same_value(
    ctl: &Control,
    scope: &Scope,
    record: &SecretRecord,
    version: &SecretVersion,
    value: &NewValue,
) -> Result<bool> {
    let (string, binary) = self::value(ctl, scope, record, version)?;
    Ok(string == value.string && binary == value.binary)
}

/// The secret an id names, as stored (a purged one is not returned).
pub async fn find(
    ctl: &Control,
    scope: &Scope,
    id: &SecretId,
    now: Timestamp,
) -> Result<Versioned<SecretRecord>> {
    typed::get::<SecretRecord>(&*ctl.store, &keys::secret(scope, id.name()))
        .await?
        .filter(|r| !r.value.purged(now) && id.names(&r.value))
        .ok_or_else(|| SecretsError::not_found().into())
}

/// Every secret not yet purged, in name order.
pub async fn list(ctl: &Control, scope: &Scope, now: Timestamp) -> Result<Vec<SecretRecord>> {
    Ok(typed::list::<SecretRecord>(&*ctl.store, &keys::all(scope))
        .await?
        .into_iter()
        .map(|(_, r)| r.value)
        .filter(|r| !r.purged(now))
        .collect())
}

/// What CreateSecret asks for.
#[derive(Debug, Clone, Default)]
pub struct Create {
    pub name: String,
    pub description: Option<String>,
    pub kms_key_id: Option<String>,
    pub tags: Vec<(String, String)>,
    pub value: NewValue,
}

fn suffix() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..6)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

/// Makes a secret (with a first version when a value is given): the
/// record and that version's id. A retry with the same
/// ClientRequestToken and value answers as the first call did.
pub async fn create(
    ctl: &Control,
    scope: &Scope,
    now: Timestamp,
    req: Create,
) -> Result<(SecretRecord, Option<String>)> {
    let key = keys::secret(scope, &req.name);
    let suffix = suffix();
    swap(ctl, || async {
        let current = typed::get::<SecretRecord>(&*ctl.store, &key).await?;
        if let Some(c) = current.as_ref().filter(|c| !c.value.purged(now)) {
            let existing = &c.value;
            if existing.deleted.is_some() {
                return Err(SecretsError::new(
                    "InvalidRequestException",
                    "You can't create this secret because a secret with this name is already scheduled for deletion.",
                )
                .into());
            }
            if let Some(token) = &req.value.token {
                if let Some(v) = existing.versions.iter().find(|v| &v.id == token) {
                    if same_value(ctl, scope, existing, v, &req.value)? {
                        return Ok(Attempt::Done((existing.clone(), Some(token.clone()))));
                    }
                }
            }
            return Err(SecretsError::new(
                "ResourceExistsException",
                format!(
                    "The operation failed because the secret {} already exists.",
                    req.name
                ),
            )
            .into());
        }
        let mut record = SecretRecord {
            name: req.name.clone(),
            suffix: suffix.clone(),
            description: req.description.clone(),
            kms_key_id: req.kms_key_id.clone(),
            tags: req.tags.iter().cloned().collect(),
            created: now,
            changed: now,
            deleted: None,
            versions: vec![],
        };
        let version = (!req.value.is_empty()).then(|| {
            let v = sealed_version(ctl, scope, &record, &req.value, now);
            let id = v.id.clone();
            record.add_version(v);
            id
        });
        let txn = Txn::when(
            vec![typed::unchanged(
                &key,
                current.as_ref().map_or(0, |c| c.mod_revision),
            )],
            vec![typed::put(&key, &record)],
        );
        Ok(Attempt::Write(txn, (record, version)))
    })
    .await
}

/// Changes the secret `id` names with `change` (which may refuse): the
/// changed record and `change`'s answer. A secret scheduled for deletion
/// refuses every change but `allow_deleted` ones.
pub async fn change<T>(
    ctl: &Control,
    scope: &Scope,
    now: Timestamp,
    id: &SecretId,
    allow_deleted: bool,
    change: impl Fn(&mut SecretRecord) -> Result<T>,
) -> Result<(SecretRecord, T)> {
    swap(ctl, || async {
        let current = find(ctl, scope, id, now).await?;
        if current.value.deleted.is_some() && !allow_deleted {
            return Err(SecretsError::marked_for_deletion().into());
        }
        let mut next = current.value.clone();
        let answer = change(&mut next)?;
        if next == current.value {
            return Ok(Attempt::Done((next, answer)));
        }
        let key = keys::secret(scope, &next.name);
        let txn = Txn::when(
            vec![typed::unchanged(&key, current.mod_revision)],
            vec![typed::put(&key, &next)],
        );
        Ok(Attempt::Write(txn, (next, answer)))
    })
    .await
}

/// Adds a version holding `value` to the secret `id` names: the version's
/// id and stages. A retry with the same ClientRequestToken and value
/// answers as the first call did; another value under a used token is
/// refused.
pub async fn put_value(
    ctl: &Control,
    scope: &Scope,
    now: Timestamp,
    id: &SecretId,
    value: &NewValue,
) -> Result<(SecretRecord, (String, Vec<String>))> {
    change(ctl, scope, now, id, false, |r| {
        add_value(ctl, scope, r, value, now)
    })
    .await
}

/// Adds `value` as a version of `r` (inside a [`change`]): its id and
/// stages, or those of the version a retry with the same token made.
pub fn add_value(
    ctl: &Control,
    scope: &Scope,
    r: &mut SecretRecord,
    value: &NewValue,
    now: Timestamp,
) -> Result<(String, Vec<String>)> {
    if let Some(token) = &value.token {
        if let Some(v) = r.versions.iter().find(|v| &v.id == token) {
            if same_value(ctl, scope, r, v, value)? {
                return Ok((v.id.clone(), v.stages.clone()));
            }
            return Err(SecretsError::new(
                "ResourceExistsException",
                format!(
                    "You can't use ClientRequestToken {token} because that value is already in use for a version of secret {}.",
                    r.arn(&scope.region, &scope.account)
                ),
            )
            .into());
        }
    }
    let v = sealed_version(ctl, scope, r, value, now);
    let vid = v.id.clone();
    r.add_version(v);
    r.changed = now;
    let stages = r
        .versions
        .iter()
        .find(|v| v.id == vid)
        .map(|v| v.stages.clone())
        .unwrap_or_default();
    Ok((vid, stages))
}

fn marked_deleted() -> SecretsError {
    SecretsError::new(
        "InvalidRequestException",
        "You tried to perform the operation on a secret that's currently marked deleted.",
    )
}

/// Schedules the secret's deletion after `days`, or deletes it now when
/// `force`: the record and its deletion date.
pub async fn delete(
    ctl: &Control,
    scope: &Scope,
    now: Timestamp,
    id: &SecretId,
    days: i64,
    force: bool,
) -> Result<(SecretRecord, Timestamp)> {
    // Checked before a lease is granted, so that a refused request leaves
    // no lease behind; the compare-and-swap below checks again.
    let found = find(ctl, scope, id, now).await?;
    if found.value.deleted.is_some() && !force {
        return Err(marked_deleted().into());
    }
    let lease = if force {
        None
    } else {
        // A little past the window, so that a read at the deletion date
        // finds the record and answers from its date.
        let ttl = Duration::from_secs(u64::try_from(days).unwrap_or(0) * 86_400 + 3600);
        Some(ctl.store.lease_grant(ttl).await?)
    };
    swap(ctl, || async {
        let current = find(ctl, scope, id, now).await?;
        let key = keys::secret(scope, &current.value.name);
        if current.value.deleted.is_some() && !force {
            return Err(marked_deleted().into());
        }
        let compare = vec![typed::unchanged(&key, current.mod_revision)];
        let Some(lease) = lease else {
            let txn = Txn::when(compare, vec![Op::delete(key.clone())]);
            return Ok(Attempt::Write(txn, (current.value, now)));
        };
        let at = now + days as f64 * 86_400.0;
        let mut next = current.value.clone();
        next.deleted = Some((now, at));
        let txn = Txn::when(
            compare,
            vec![Op::Put {
                key: key.clone(),
                value: typed::encode(&next),
                lease: Some(lease.id),
            }],
        );
        Ok(Attempt::Write(txn, (next, at)))
    })
    .await
}

/// Merges tags into a secret's.
pub fn add_tags(record: &mut SecretRecord, tags: &[(String, String)]) -> Result<()> {
    let mut next = record.tags.clone();
    next.extend(tags.iter().cloned());
    if next.len() > MAX_TAGS {
        return Err(SecretsError::new(
            "LimitExceededException",
            format!("A secret can have at most {MAX_TAGS} tags."),
        )
        .into());
    }
    record.tags = next;
    Ok(())
}
