//! IAM's writes and reads against the store: users and their access keys,
//! customer-managed policies and their versions, what is attached to whom.
//! Every change is a compare-and-swap on the records it touches; a failed
//! check leaves the store as it was.

use crate::cas::{self, Attempt};
use crate::{Control, ControlError};
use berth_iam::keys::{self, AccessKey, KeyOwner, KeyStatus};
use berth_iam::managed;
use berth_iam::policy::PolicyKind;
use berth_iam::records::{
    check_document, Group, IamError, InstanceProfile, ManagedPolicy, PolicyVersion, Role, Tag,
    User, GROUP_INLINE_SIZE, MANAGED_POLICY_SIZE, MAX_ACCESS_KEYS, MAX_ATTACHED,
    MAX_POLICY_VERSIONS, ROLE_INLINE_SIZE, TRUST_POLICY_SIZE, USER_INLINE_SIZE,
};
use berth_store::typed::Versioned;
use berth_store::{keys::iam, typed, Op, Txn};
use serde::{de::DeserializeOwned, Serialize};

/// An IAM failure or the store's.
#[derive(Debug, thiserror::Error)]
pub enum IamFailure {
    #[error(transparent)]
    Iam(#[from] IamError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl From<berth_store::StoreError> for IamFailure {
    fn from(e: berth_store::StoreError) -> Self {
        IamFailure::Control(e.into())
    }
}

type Result<T> = std::result::Result<T, IamFailure>;

fn no_user(name: &str) -> IamFailure {
    IamError::NoSuchEntity(format!("The user with name {name} cannot be found.")).into()
}

async fn swap<T, Fut>(ctl: &Control, attempt: impl FnMut() -> Fut) -> Result<T>
where
    Fut: std::future::Future<Output = Result<Attempt<T>>>,
{
    cas::retry_swap(ctl, attempt).await?.ok_or_else(|| {
        IamFailure::Iam(IamError::ConcurrentModification(
            "The request was rejected because multiple requests to change this object were submitted simultaneously. Wait a few minutes and submit your request again.".into(),
        ))
    })
}

/// The record at `key`, or `missing`'s error.
async fn record<T: DeserializeOwned>(
    ctl: &Control,
    key: &str,
    missing: impl FnOnce() -> IamFailure,
) -> Result<Versioned<T>> {
    typed::get::<T>(&*ctl.store, key).await?.ok_or_else(missing)
}

/// Every record under `prefix`.
async fn records<T: DeserializeOwned>(ctl: &Control, prefix: &str) -> Result<Vec<T>> {
    Ok(typed::list::<T>(&*ctl.store, prefix)
        .await?
        .into_iter()
        .map(|(_, r)| r.value)
        .collect())
}

/// Changes the record at `key` with `change` (which may refuse), by
/// compare-and-swap: the changed record.
async fn change_record<T: Serialize + DeserializeOwned + Clone>(
    ctl: &Control,
    key: &str,
    missing: impl Fn() -> IamFailure,
    change: impl Fn(&mut T) -> std::result::Result<(), IamError>,
) -> Result<T> {
    swap(ctl, || async {
        let current = record::<T>(ctl, key, &missing).await?;
        let mut next = current.value.clone();
        change(&mut next)?;
        let txn = Txn::when(
            vec![typed::unchanged(key, current.mod_revision)],
            vec![typed::put(key, &next)],
        );
        Ok(Attempt::Write(txn, next))
    })
    .await
}

pub async fn user(ctl: &Control, name: &str) -> Result<Versioned<User>> {
    record(ctl, &iam::user(&ctl.config.account, name), || no_user(name)).await
}

pub async fn users(ctl: &Control) -> Result<Vec<User>> {
    records(ctl, &iam::users(&ctl.config.account)).await
}

pub async fn create_user(ctl: &Control, name: &str, path: &str, tags: Vec<Tag>) -> Result<User> {
    let key = iam::user(&ctl.config.account, name);
    let user = User {
        name: name.to_string(),
        id: keys::new_unique_id(&mut rand::rng(), "AIDA"),
        path: path.to_string(),
        created: ctl.now(),
        tags,
        inline: Default::default(),
        attached: vec![],
        groups: vec![],
    };
    let made = ctl
        .store
        .txn(Txn::when(
            vec![typed::unchanged(&key, 0)],
            vec![typed::put(&key, &user)],
        ))
        .await?;
    if !made.succeeded {
        return Err(IamError::EntityAlreadyExists(format!(
            "User with name {name} already exists."
        ))
        .into());
    }
    Ok(user)
}

/// Changes a user with `change`, which may refuse.
pub async fn update_user(
    ctl: &Control,
    name: &str,
    change: impl Fn(&mut User) -> std::result::Result<(), IamError>,
) -> Result<User> {
    let key = iam::user(&ctl.config.account, name);
    change_record(ctl, &key, || no_user(name), change).await
}

/// Renames or moves a user: its record moves to the new name's key, and its
/// access keys follow.
pub async fn rename_user(
    ctl: &Control,
    name: &str,
    new_name: Option<&str>,
    new_path: Option<&str>,
) -> Result<User> {
    let account = ctl.config.account.clone();
    swap(ctl, || async {
        let current = user(ctl, name).await?;
        let mut next = current.value.clone();
        if let Some(p) = new_path {
            next.path = p.to_string();
        }
        let old_key = iam::user(&account, name);
        let mut compares = vec![typed::unchanged(&old_key, current.mod_revision)];
        let mut ops = vec![];
        if let Some(n) = new_name.filter(|n| *n != name) {
            let new_key = iam::user(&account, n);
            if new_key != old_key {
                if ctl.store.get(&new_key).await?.is_some() {
                    return Err(IamError::EntityAlreadyExists(format!(
                        "User with name {n} already exists."
                    ))
                    .into());
                }
                compares.push(typed::unchanged(&new_key, 0));
                ops.push(Op::delete(old_key.clone()));
                for (k, mut key) in keys_of(ctl, name).await? {
                    key.value.owner = KeyOwner::User(n.to_string());
                    compares.push(typed::unchanged(&k, key.mod_revision));
                    ops.push(typed::put(&k, &key.value));
                }
            }
            next.name = n.to_string();
            ops.push(typed::put(&new_key, &next));
        } else {
            ops.push(typed::put(&old_key, &next));
        }
        Ok(Attempt::Write(Txn::when(compares, ops), next))
    })
    .await
}

pub async fn delete_user(ctl: &Control, name: &str) -> Result<()> {
    let key = iam::user(&ctl.config.account, name);
    swap(ctl, || async {
        let current = user(ctl, name).await?;
        let u = &current.value;
        let conflict = |what: &str| {
            Err(
                IamError::DeleteConflict(format!("Cannot delete entity, must {what} first."))
                    .into(),
            )
        };
        if !keys_of(ctl, name).await?.is_empty() {
            return conflict("delete access keys");
        }
        if !u.inline.is_empty() {
            return conflict("delete policies");
        }
        if !u.attached.is_empty() {
            return conflict("detach all policies");
        }
        if !u.groups.is_empty() {
            return conflict("remove users from group");
        }
        let txn = Txn::when(
            vec![typed::unchanged(&key, current.mod_revision)],
            vec![Op::delete(key.clone())],
        );
        Ok(Attempt::Write(txn, ()))
    })
    .await
}

/// A user's access keys with their store keys.
pub async fn keys_of(ctl: &Control, name: &str) -> Result<Vec<(String, Versioned<AccessKey>)>> {
    Ok(typed::list::<AccessKey>(&*ctl.store, &iam::access_keys(&ctl.config.account))
        .await?
        .into_iter()
        .filter(|(_, k)| matches!(&k.value.owner, KeyOwner::User(u) if u.eq_ignore_ascii_case(name)))
        .collect())
}

/// A new access key for a user (at most two): the record and its secret,
/// shown this once.
pub async fn create_access_key(ctl: &Control, name: &str) -> Result<(AccessKey, String)> {
    let (id, secret) = {
        let mut rng = rand::rng();
        (
            keys::new_access_key_id(&mut rng),
            keys::new_secret(&mut rng),
        )
    };
    let account = ctl.config.account.clone();
    swap(ctl, || async {
        let owner = user(ctl, name).await?;
        let existing = keys_of(ctl, name).await?;
        if existing.len() >= MAX_ACCESS_KEYS {
            return Err(IamError::LimitExceeded(format!(
                "Cannot exceed quota for AccessKeysPerUser: {MAX_ACCESS_KEYS}"
            ))
            .into());
        }
        let record = AccessKey {
            access_key_id: id.clone(),
            owner: KeyOwner::User(owner.value.name.clone()),
            status: KeyStatus::Active,
            sealed_secret: ctl.identity.seal(&secret, &id),
            created: ctl.now(),
        };
        let key = iam::access_key(&account, &id);
        let mut compares = vec![
            typed::unchanged(&iam::user(&account, name), owner.mod_revision),
            typed::unchanged(&key, 0),
        ];
        // Two concurrent creations must not make a third key.
        compares.extend(
            existing
                .iter()
                .map(|(k, v)| typed::unchanged(k, v.mod_revision)),
        );
        let txn = Txn::when(compares, vec![typed::put(&key, &record)]);
        Ok(Attempt::Write(txn, (record, secret.clone())))
    })
    .await
}

/// One of a user's keys, or NoSuchEntity.
async fn key_of(ctl: &Control, name: &str, id: &str) -> Result<(String, Versioned<AccessKey>)> {
    keys_of(ctl, name)
        .await?
        .into_iter()
        .find(|(_, k)| k.value.access_key_id == id)
        .ok_or_else(|| {
            IamError::NoSuchEntity(format!("The Access Key with id {id} cannot be found.")).into()
        })
}

pub async fn set_access_key_status(
    ctl: &Control,
    name: &str,
    id: &str,
    status: KeyStatus,
) -> Result<()> {
    swap(ctl, || async {
        let (k, mut key) = key_of(ctl, name, id).await?;
        key.value.status = status;
        let txn = Txn::when(
            vec![typed::unchanged(&k, key.mod_revision)],
            vec![typed::put(&k, &key.value)],
        );
        Ok(Attempt::Write(txn, ()))
    })
    .await
}

pub async fn delete_access_key(ctl: &Control, name: &str, id: &str) -> Result<()> {
    swap(ctl, || async {
        let (k, key) = key_of(ctl, name, id).await?;
        let txn = Txn::when(
            vec![typed::unchanged(&k, key.mod_revision)],
            vec![Op::delete(k.clone())],
        );
        Ok(Attempt::Write(txn, ()))
    })
    .await
}

/// The owner of an access key (`GetAccessKeyLastUsed` answers any key of
/// the account).
pub async fn key_owner(ctl: &Control, id: &str) -> Result<AccessKey> {
    typed::get::<AccessKey>(&*ctl.store, &iam::access_key(&ctl.config.account, id))
        .await?
        .map(|k| k.value)
        .ok_or_else(|| {
            IamError::NoSuchEntity(format!("The Access Key with id {id} cannot be found.")).into()
        })
}

/// A policy ARN of this account: its name.
fn customer_policy_name<'a>(ctl: &Control, arn: &'a str) -> Option<&'a str> {
    arn.strip_prefix(&format!("arn:aws:iam::{}:policy/", ctl.config.account))
        .map(|rest| rest.rsplit('/').next().unwrap_or(rest))
}

fn no_policy(arn: &str) -> IamFailure {
    IamError::NoSuchEntity(format!("Policy {arn} does not exist or is not attachable.")).into()
}

pub async fn policy(ctl: &Control, arn: &str) -> Result<Versioned<ManagedPolicy>> {
    let name = customer_policy_name(ctl, arn).ok_or_else(|| no_policy(arn))?;
    let p = typed::get::<ManagedPolicy>(&*ctl.store, &iam::policy(&ctl.config.account, name))
        .await?
        .ok_or_else(|| no_policy(arn))?;
    if p.value.arn(&ctl.config.account) != arn {
        return Err(no_policy(arn));
    }
    Ok(p)
}

pub async fn policies(ctl: &Control) -> Result<Vec<ManagedPolicy>> {
    records(ctl, &iam::policies(&ctl.config.account)).await
}

pub async fn create_policy(
    ctl: &Control,
    name: &str,
    path: &str,
    document: &str,
    description: Option<String>,
    tags: Vec<Tag>,
) -> Result<ManagedPolicy> {
    check_document(document, PolicyKind::Identity, MANAGED_POLICY_SIZE)?;
    let key = iam::policy(&ctl.config.account, name);
    let now = ctl.now();
    let p = ManagedPolicy {
        name: name.to_string(),
        id: keys::new_unique_id(&mut rand::rng(), "ANPA"),
        path: path.to_string(),
        description,
        created: now,
        updated: now,
        default_version: 1,
        versions: vec![PolicyVersion {
            number: 1,
            document: document.to_string(),
            created: now,
        }],
        next_version: 2,
        tags,
    };
    let made = ctl
        .store
        .txn(Txn::when(
            vec![typed::unchanged(&key, 0)],
            vec![typed::put(&key, &p)],
        ))
        .await?;
    if !made.succeeded {
        return Err(IamError::EntityAlreadyExists(format!(
            "A policy called {name} already exists. Duplicate names are not allowed."
        ))
        .into());
    }
    Ok(p)
}

/// Changes a customer-managed policy with `change`.
pub async fn update_policy<T: Clone>(
    ctl: &Control,
    arn: &str,
    change: impl Fn(&mut ManagedPolicy) -> std::result::Result<T, IamError>,
) -> Result<(ManagedPolicy, T)> {
    swap(ctl, || async {
        let current = policy(ctl, arn).await?;
        let key = iam::policy(&ctl.config.account, &current.value.name);
        let mut next = current.value.clone();
        let out = change(&mut next)?;
        next.updated = ctl.now();
        let txn = Txn::when(
            vec![typed::unchanged(&key, current.mod_revision)],
            vec![typed::put(&key, &next)],
        );
        Ok(Attempt::Write(txn, (next, out)))
    })
    .await
}

pub async fn create_policy_version(
    ctl: &Control,
    arn: &str,
    document: &str,
    set_default: bool,
) -> Result<PolicyVersion> {
    check_document(document, PolicyKind::Identity, MANAGED_POLICY_SIZE)?;
    let now = ctl.now();
    let (_, v) = update_policy(ctl, arn, |p| {
        if p.versions.len() >= MAX_POLICY_VERSIONS {
            return Err(IamError::LimitExceeded(format!(
                "A managed policy can have up to {MAX_POLICY_VERSIONS} versions. Before you create a new version, you must delete an existing version."
            )));
        }
        let v = PolicyVersion {
            number: p.next_version,
            document: document.to_string(),
            created: now,
        };
        p.next_version += 1;
        if set_default {
            p.default_version = v.number;
        }
        p.versions.push(v.clone());
        Ok(v)
    })
    .await?;
    Ok(v)
}

/// `v3` as 3.
pub fn version_number(id: &str) -> std::result::Result<u32, IamError> {
    id.strip_prefix('v')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            IamError::Validation(format!(
                "1 validation error detected: Value '{id}' at 'versionId' failed to satisfy constraint: Member must satisfy regular expression pattern: v[1-9][0-9]*(\\.[A-Za-z0-9-]*)?"
            ))
        })
}

fn no_version(arn: &str, id: &str) -> IamError {
    IamError::NoSuchEntity(format!(
        "Policy {arn} version {id} does not exist or is not attachable."
    ))
}

pub async fn set_default_version(ctl: &Control, arn: &str, id: &str) -> Result<()> {
    let n = version_number(id)?;
    update_policy(ctl, arn, |p| {
        if !p.versions.iter().any(|v| v.number == n) {
            return Err(no_version(arn, id));
        }
        p.default_version = n;
        Ok(())
    })
    .await?;
    Ok(())
}

pub async fn delete_policy_version(ctl: &Control, arn: &str, id: &str) -> Result<()> {
    let n = version_number(id)?;
    update_policy(ctl, arn, |p| {
        if !p.versions.iter().any(|v| v.number == n) {
            return Err(no_version(arn, id));
        }
        if p.default_version == n {
            return Err(IamError::DeleteConflict(
                "Cannot delete the default version of a policy.".into(),
            ));
        }
        p.versions.retain(|v| v.number != n);
        Ok(())
    })
    .await?;
    Ok(())
}

/// How many users and groups a managed policy is attached to.
pub async fn attachment_count(ctl: &Control, arn: &str) -> Result<usize> {
    let users = users(ctl)
        .await?
        .into_iter()
        .filter(|u| u.attached.iter().any(|a| a == arn))
        .count();
    let groups = groups(ctl)
        .await?
        .into_iter()
        .filter(|g| g.attached.iter().any(|a| a == arn))
        .count();
    let roles = roles(ctl)
        .await?
        .into_iter()
        .filter(|r| r.attached.iter().any(|a| a == arn))
        .count();
    Ok(users + groups + roles)
}

pub async fn delete_policy(ctl: &Control, arn: &str) -> Result<()> {
    swap(ctl, || async {
        let current = policy(ctl, arn).await?;
        if attachment_count(ctl, arn).await? > 0 {
            return Err(IamError::DeleteConflict("Cannot delete a policy attached to entities.".into()).into());
        }
        if current.value.versions.len() > 1 {
            return Err(IamError::DeleteConflict(
                "Cannot delete a policy with non-default versions. Delete the other versions first.".into(),
            )
            .into());
        }
        let key = iam::policy(&ctl.config.account, &current.value.name);
        let txn = Txn::when(
            vec![typed::unchanged(&key, current.mod_revision)],
            vec![Op::delete(key.clone())],
        );
        Ok(Attempt::Write(txn, ()))
    })
    .await
}

/// The document a managed policy ARN stands for now: an AWS-managed one, or
/// the default version of one of the account's.
pub async fn managed_document(ctl: &Control, arn: &str) -> Result<String> {
    if let Some(p) = managed::by_arn(arn) {
        return Ok(p.document.to_string());
    }
    let p = policy(ctl, arn).await?;
    Ok(p.value.default_document().unwrap_or_default().to_string())
}

pub async fn attach_user_policy(ctl: &Control, name: &str, arn: &str) -> Result<()> {
    managed_document(ctl, arn).await?;
    let account = ctl.config.account.clone();
    swap(ctl, || async {
        let current = user(ctl, name).await?;
        let mut next = current.value.clone();
        if next.attached.iter().any(|a| a == arn) {
            return Ok(Attempt::Done(()));
        }
        if next.attached.len() >= MAX_ATTACHED {
            return Err(IamError::LimitExceeded(format!(
                "Cannot exceed quota for PoliciesPerUser: {MAX_ATTACHED}"
            ))
            .into());
        }
        next.attached.push(arn.to_string());
        let key = iam::user(&account, name);
        let mut compares = vec![typed::unchanged(&key, current.mod_revision)];
        // A policy deleted meanwhile must not end up attached.
        if let Some(pname) = customer_policy_name(ctl, arn) {
            let p = policy(ctl, arn).await?;
            compares.push(typed::unchanged(
                &iam::policy(&account, pname),
                p.mod_revision,
            ));
        }
        Ok(Attempt::Write(
            Txn::when(compares, vec![typed::put(&key, &next)]),
            (),
        ))
    })
    .await
}

pub async fn detach_user_policy(ctl: &Control, name: &str, arn: &str) -> Result<()> {
    update_user(ctl, name, |u| {
        if !u.attached.iter().any(|a| a == arn) {
            return Err(IamError::NoSuchEntity(format!(
                "Policy {arn} was not found."
            )));
        }
        u.attached.retain(|a| a != arn);
        Ok(())
    })
    .await?;
    Ok(())
}

/// Sets inline policy `policy_name` of `inline` to `document`, keeping the
/// owner's documents within `limit` characters in total (IAM's quota).
fn put_inline(
    inline: &mut std::collections::BTreeMap<String, String>,
    policy_name: &str,
    document: &str,
    limit: usize,
    owner: &str,
) -> std::result::Result<(), IamError> {
    let total: usize = inline
        .iter()
        .filter(|(n, _)| *n != policy_name)
        .map(|(_, d)| berth_iam::policy::packed_size(d))
        .sum::<usize>()
        + berth_iam::policy::packed_size(document);
    if total > limit {
        return Err(IamError::LimitExceeded(format!(
            "Maximum policy size of {limit} bytes exceeded for {owner}"
        )));
    }
    inline.insert(policy_name.to_string(), document.to_string());
    Ok(())
}

pub async fn put_user_policy(
    ctl: &Control,
    name: &str,
    policy_name: &str,
    document: &str,
) -> Result<()> {
    check_document(document, PolicyKind::Identity, USER_INLINE_SIZE)?;
    update_user(ctl, name, |u| {
        put_inline(
            &mut u.inline,
            policy_name,
            document,
            USER_INLINE_SIZE,
            &format!("user {name}"),
        )
    })
    .await?;
    Ok(())
}

pub async fn delete_user_policy(ctl: &Control, name: &str, policy_name: &str) -> Result<()> {
    update_user(ctl, name, |u| {
        u.inline.remove(policy_name).map(|_| ()).ok_or_else(|| {
            IamError::NoSuchEntity(format!(
                "The user policy with name {policy_name} cannot be found."
            ))
        })
    })
    .await?;
    Ok(())
}

fn no_group(name: &str) -> IamFailure {
    IamError::NoSuchEntity(format!("The group with name {name} cannot be found.")).into()
}

pub async fn group(ctl: &Control, name: &str) -> Result<Versioned<Group>> {
    record(ctl, &iam::group(&ctl.config.account, name), || {
        no_group(name)
    })
    .await
}

pub async fn groups(ctl: &Control) -> Result<Vec<Group>> {
    records(ctl, &iam::groups(&ctl.config.account)).await
}

/// The users in a group.
pub async fn members(ctl: &Control, name: &str) -> Result<Vec<User>> {
    Ok(users(ctl)
        .await?
        .into_iter()
        .filter(|u| u.groups.iter().any(|g| g.eq_ignore_ascii_case(name)))
        .collect())
}

pub async fn create_group(ctl: &Control, name: &str, path: &str) -> Result<Group> {
    let key = iam::group(&ctl.config.account, name);
    let g = Group {
        name: name.to_string(),
        id: keys::new_unique_id(&mut rand::rng(), "AGPA"),
        path: path.to_string(),
        created: ctl.now(),
        inline: Default::default(),
        attached: vec![],
    };
    let made = ctl
        .store
        .txn(Txn::when(
            vec![typed::unchanged(&key, 0)],
            vec![typed::put(&key, &g)],
        ))
        .await?;
    if !made.succeeded {
        return Err(IamError::EntityAlreadyExists(format!(
            "Group with name {name} already exists."
        ))
        .into());
    }
    Ok(g)
}

/// Changes a group with `change`, which may refuse.
pub async fn update_group(
    ctl: &Control,
    name: &str,
    change: impl Fn(&mut Group) -> std::result::Result<(), IamError>,
) -> Result<Group> {
    let key = iam::group(&ctl.config.account, name);
    change_record(ctl, &key, || no_group(name), change).await
}

pub async fn delete_group(ctl: &Control, name: &str) -> Result<()> {
    let key = iam::group(&ctl.config.account, name);
    swap(ctl, || async {
        let current = group(ctl, name).await?;
        let conflict = |what: &str| {
            Err(
                IamError::DeleteConflict(format!("Cannot delete entity, must {what} first."))
                    .into(),
            )
        };
        if !members(ctl, name).await?.is_empty() {
            return conflict("remove users from group");
        }
        if !current.value.inline.is_empty() {
            return conflict("delete policies");
        }
        if !current.value.attached.is_empty() {
            return conflict("detach all policies");
        }
        let txn = Txn::when(
            vec![typed::unchanged(&key, current.mod_revision)],
            vec![Op::delete(key.clone())],
        );
        Ok(Attempt::Write(txn, ()))
    })
    .await
}

/// Adds a user to a group (or takes it out): one CAS on the user that also
/// compares the group, so a group deleted meanwhile gains no member.
pub async fn set_membership(
    ctl: &Control,
    group_name: &str,
    user_name: &str,
    member: bool,
) -> Result<()> {
    let account = ctl.config.account.clone();
    swap(ctl, || async {
        let g = group(ctl, group_name).await?;
        let u = user(ctl, user_name).await?;
        let mut next = u.value.clone();
        let is_in = next
            .groups
            .iter()
            .any(|n| n.eq_ignore_ascii_case(group_name));
        match (member, is_in) {
            (true, true) | (false, false) => return Ok(Attempt::Done(())),
            (true, false) => next.groups.push(g.value.name.clone()),
            (false, true) => next.groups.retain(|n| !n.eq_ignore_ascii_case(group_name)),
        }
        let ukey = iam::user(&account, user_name);
        let txn = Txn::when(
            vec![
                typed::unchanged(&ukey, u.mod_revision),
                typed::unchanged(&iam::group(&account, group_name), g.mod_revision),
            ],
            vec![typed::put(&ukey, &next)],
        );
        Ok(Attempt::Write(txn, ()))
    })
    .await
}

pub async fn attach_group_policy(ctl: &Control, name: &str, arn: &str) -> Result<()> {
    managed_document(ctl, arn).await?;
    update_group(ctl, name, |g| {
        if g.attached.iter().any(|a| a == arn) {
            return Ok(());
        }
        if g.attached.len() >= MAX_ATTACHED {
            return Err(IamError::LimitExceeded(format!(
                "Cannot exceed quota for PoliciesPerGroup: {MAX_ATTACHED}"
            )));
        }
        g.attached.push(arn.to_string());
        Ok(())
    })
    .await?;
    Ok(())
}

pub async fn detach_group_policy(ctl: &Control, name: &str, arn: &str) -> Result<()> {
    update_group(ctl, name, |g| {
        if !g.attached.iter().any(|a| a == arn) {
            return Err(IamError::NoSuchEntity(format!(
                "Policy {arn} was not found."
            )));
        }
        g.attached.retain(|a| a != arn);
        Ok(())
    })
    .await?;
    Ok(())
}

pub async fn put_group_policy(
    ctl: &Control,
    name: &str,
    policy_name: &str,
    document: &str,
) -> Result<()> {
    check_document(document, PolicyKind::Identity, GROUP_INLINE_SIZE)?;
    update_group(ctl, name, |g| {
        put_inline(
            &mut g.inline,
            policy_name,
            document,
            GROUP_INLINE_SIZE,
            &format!("group {name}"),
        )
    })
    .await?;
    Ok(())
}

pub async fn delete_group_policy(ctl: &Control, name: &str, policy_name: &str) -> Result<()> {
    update_group(ctl, name, |g| {
        g.inline.remove(policy_name).map(|_| ()).ok_or_else(|| {
            IamError::NoSuchEntity(format!(
                "The group policy with name {policy_name} cannot be found."
            ))
        })
    })
    .await?;
    Ok(())
}

fn no_role(name: &str) -> IamFailure {
    IamError::NoSuchEntity(format!("The role with name {name} cannot be found.")).into()
}

pub async fn role(ctl: &Control, name: &str) -> Result<Versioned<Role>> {
    record(ctl, &iam::role(&ctl.config.account, name), || no_role(name)).await
}

pub async fn roles(ctl: &Control) -> Result<Vec<Role>> {
    records(ctl, &iam::roles(&ctl.config.account)).await
}

/// A trust policy as IAM checks it: the grammar, the size, and every IAM
/// principal of this account it names must exist.
pub async fn check_trust(ctl: &Control, document: &str) -> Result<()> {
    let policy = check_document(document, PolicyKind::Trust, TRUST_POLICY_SIZE)?;
    let own = format!("arn:aws:iam::{}:", ctl.config.account);
    for s in &policy.statements {
        for e in s.principals.iter().flat_map(|p| &p.entries) {
            let berth_iam::policy::PrincipalEntry::Aws(v) = e else {
                continue;
            };
            let invalid = || {
                IamFailure::Iam(IamError::MalformedPolicyDocument(format!(
                    "Invalid principal in policy: \"AWS\":\"{v}\""
                )))
            };
            let account_id = v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit());
            if account_id || v.ends_with(":root") && v.starts_with("arn:aws:iam::") {
                continue;
            }
            let Some(rest) = v.strip_prefix(&own) else {
                if v.starts_with("arn:aws:iam::") || v.starts_with("arn:aws:sts::") {
                    continue;
                }
                return Err(invalid());
            };
            let exists = if let Some(u) = rest.strip_prefix("user/") {
                user(ctl, u.rsplit('/').next().unwrap_or(u)).await.is_ok()
            } else if let Some(r) = rest.strip_prefix("role/") {
                role(ctl, r.rsplit('/').next().unwrap_or(r)).await.is_ok()
            } else {
                false
            };
            if !exists {
                return Err(invalid());
            }
        }
    }
    Ok(())
}

pub fn check_max_session(seconds: i32) -> std::result::Result<(), IamError> {
    if (3600..=43200).contains(&seconds) {
        Ok(())
    } else {
        Err(IamError::Validation(format!(
            "1 validation error detected: Value '{seconds}' at 'maxSessionDuration' failed to satisfy constraint: Member must have value greater than or equal to 3600 and less than or equal to 43200"
        )))
    }
}

pub async fn create_role(
    ctl: &Control,
    name: &str,
    path: &str,
    trust: &str,
    description: Option<String>,
    max_session: i32,
    tags: Vec<Tag>,
) -> Result<Role> {
    check_max_session(max_session)?;
    check_trust(ctl, trust).await?;
    let key = iam::role(&ctl.config.account, name);
    let r = Role {
        name: name.to_string(),
        id: keys::new_unique_id(&mut rand::rng(), "AROA"),
        path: path.to_string(),
        created: ctl.now(),
        trust: trust.to_string(),
        description,
        max_session,
        inline: Default::default(),
        attached: vec![],
        tags,
        instance_profiles: vec![],
    };
    let made = ctl
        .store
        .txn(Txn::when(
            vec![typed::unchanged(&key, 0)],
            vec![typed::put(&key, &r)],
        ))
        .await?;
    if !made.succeeded {
        return Err(IamError::EntityAlreadyExists(format!(
            "Role with name {name} already exists."
        ))
        .into());
    }
    Ok(r)
}

/// Changes a role with `change`, which may refuse.
pub async fn update_role(
    ctl: &Control,
    name: &str,
    change: impl Fn(&mut Role) -> std::result::Result<(), IamError>,
) -> Result<Role> {
    let key = iam::role(&ctl.config.account, name);
    change_record(ctl, &key, || no_role(name), change).await
}

pub async fn delete_role(ctl: &Control, name: &str) -> Result<()> {
    let key = iam::role(&ctl.config.account, name);
    swap(ctl, || async {
        let current = role(ctl, name).await?;
        current.value.unprotected()?;
        let conflict = |what: &str| {
            Err(
                IamError::DeleteConflict(format!("Cannot delete entity, must {what} first."))
                    .into(),
            )
        };
        if !current.value.inline.is_empty() {
            return conflict("delete policies");
        }
        if !current.value.attached.is_empty() {
            return conflict("detach all policies");
        }
        if !current.value.instance_profiles.is_empty() {
            return conflict("remove roles from instance profile");
        }
        let txn = Txn::when(
            vec![typed::unchanged(&key, current.mod_revision)],
            vec![Op::delete(key.clone())],
        );
        Ok(Attempt::Write(txn, ()))
    })
    .await
}

fn no_profile(name: &str) -> IamFailure {
    IamError::NoSuchEntity(format!("Instance Profile {name} cannot be found.")).into()
}

pub async fn instance_profile(ctl: &Control, name: &str) -> Result<Versioned<InstanceProfile>> {
    let key = iam::instance_profile(&ctl.config.account, name);
    record(ctl, &key, || no_profile(name)).await
}

pub async fn instance_profiles(ctl: &Control) -> Result<Vec<InstanceProfile>> {
    records(ctl, &iam::instance_profiles(&ctl.config.account)).await
}

pub async fn create_instance_profile(
    ctl: &Control,
    name: &str,
    path: &str,
    tags: Vec<Tag>,
) -> Result<InstanceProfile> {
    let key = iam::instance_profile(&ctl.config.account, name);
    let p = InstanceProfile {
        name: name.to_string(),
        id: keys::new_unique_id(&mut rand::rng(), "AIPA"),
        path: path.to_string(),
        created: ctl.now(),
        roles: vec![],
        tags,
    };
    let made = ctl
        .store
        .txn(Txn::when(
            vec![typed::unchanged(&key, 0)],
            vec![typed::put(&key, &p)],
        ))
        .await?;
    if !made.succeeded {
        return Err(IamError::EntityAlreadyExists(format!(
            "Instance Profile {name} already exists."
        ))
        .into());
    }
    Ok(p)
}

/// Makes the service-linked role of `service` (CreateServiceLinkedRole):
/// its name, path, trust and policy are the service's.
pub async fn create_service_linked_role(
    ctl: &Control,
    service: &str,
    suffix: Option<&str>,
    description: Option<String>,
) -> Result<Role> {
    let Some(slr) = managed::SERVICE_LINKED_ROLES
        .iter()
        .find(|s| s.service == service)
    else {
        return Err(IamError::InvalidInput(format!(
            "Service name {service} is not a valid service name or does not support service-linked roles."
        ))
        .into());
    };
    if suffix.is_some() {
        return Err(
            IamError::InvalidInput(format!("Custom suffix is not allowed for {service}")).into(),
        );
    }
    let key = iam::role(&ctl.config.account, slr.role);
    let r = Role {
        name: slr.role.to_string(),
        id: keys::new_unique_id(&mut rand::rng(), "AROA"),
        path: slr.path(),
        created: ctl.now(),
        trust: slr.trust(),
        description: description
            .or_else(|| (!slr.description.is_empty()).then(|| slr.description.to_string())),
        max_session: 3600,
        inline: Default::default(),
        attached: vec![slr.policy_arn()],
        tags: vec![],
        instance_profiles: vec![],
    };
    let made = ctl
        .store
        .txn(Txn::when(
            vec![typed::unchanged(&key, 0)],
            vec![typed::put(&key, &r)],
        ))
        .await?;
    if !made.succeeded {
        return Err(IamError::InvalidInput(format!(
            "Service role name {} has been taken in this account, please try a different suffix.",
            slr.role
        ))
        .into());
    }
    Ok(r)
}

pub async fn delete_instance_profile(ctl: &Control, name: &str) -> Result<()> {
    let key = iam::instance_profile(&ctl.config.account, name);
    swap(ctl, || async {
        let current = instance_profile(ctl, name).await?;
        if !current.value.roles.is_empty() {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must remove roles from instance profile first.".into(),
            )
            .into());
        }
        let txn = Txn::when(
            vec![typed::unchanged(&key, current.mod_revision)],
            vec![Op::delete(key.clone())],
        );
        Ok(Attempt::Write(txn, ()))
    })
    .await
}

/// Puts `role` into the instance profile `profile` (`add`) or takes it
/// out: both records change in one write.
pub async fn set_profile_role(
    ctl: &Control,
    profile: &str,
    role_name: &str,
    add: bool,
) -> Result<()> {
    let account = ctl.config.account.clone();
    swap(ctl, || async {
        let p = instance_profile(ctl, profile).await?;
        let r = role(ctl, role_name).await?;
        let (mut pv, mut rv) = (p.value.clone(), r.value.clone());
        let holds = pv.roles.iter().any(|x| x.eq_ignore_ascii_case(role_name));
        if add {
            if holds || !pv.roles.is_empty() {
                return Err(IamError::LimitExceeded(
                    "Cannot exceed quota for InstanceSessionsPerInstanceProfile: 1".into(),
                )
                .into());
            }
            pv.roles.push(rv.name.clone());
            rv.instance_profiles.push(pv.name.clone());
        } else {
            if !holds {
                return Err(IamError::NoSuchEntity(format!(
                    "The role with name {role_name} cannot be found in instance profile {profile}."
                ))
                .into());
            }
            pv.roles.retain(|x| !x.eq_ignore_ascii_case(role_name));
            rv.instance_profiles
                .retain(|x| !x.eq_ignore_ascii_case(profile));
        }
        let (pk, rk) = (
            iam::instance_profile(&account, profile),
            iam::role(&account, role_name),
        );
        let txn = Txn::when(
            vec![
                typed::unchanged(&pk, p.mod_revision),
                typed::unchanged(&rk, r.mod_revision),
            ],
            vec![typed::put(&pk, &pv), typed::put(&rk, &rv)],
        );
        Ok(Attempt::Write(txn, ()))
    })
    .await
}

pub async fn attach_role_policy(ctl: &Control, name: &str, arn: &str) -> Result<()> {
    managed_document(ctl, arn).await?;
    update_role(ctl, name, |r| {
        r.unprotected()?;
        if r.attached.iter().any(|a| a == arn) {
            return Ok(());
        }
        if r.attached.len() >= MAX_ATTACHED {
            return Err(IamError::LimitExceeded(format!(
                "Cannot exceed quota for PoliciesPerRole: {MAX_ATTACHED}"
            )));
        }
        r.attached.push(arn.to_string());
        Ok(())
    })
    .await?;
    Ok(())
}

pub async fn detach_role_policy(ctl: &Control, name: &str, arn: &str) -> Result<()> {
    update_role(ctl, name, |r| {
        r.unprotected()?;
        if !r.attached.iter().any(|a| a == arn) {
            return Err(IamError::NoSuchEntity(format!(
                "Policy {arn} was not found."
            )));
        }
        r.attached.retain(|a| a != arn);
        Ok(())
    })
    .await?;
    Ok(())
}

pub async fn put_role_policy(
    ctl: &Control,
    name: &str,
    policy_name: &str,
    document: &str,
) -> Result<()> {
    check_document(document, PolicyKind::Identity, ROLE_INLINE_SIZE)?;
    update_role(ctl, name, |r| {
        r.unprotected()?;
        put_inline(
            &mut r.inline,
            policy_name,
            document,
            ROLE_INLINE_SIZE,
            &format!("role {name}"),
        )
    })
    .await?;
    Ok(())
}

pub async fn delete_role_policy(ctl: &Control, name: &str, policy_name: &str) -> Result<()> {
    update_role(ctl, name, |r| {
        r.unprotected()?;
        r.inline.remove(policy_name).map(|_| ()).ok_or_else(|| {
            IamError::NoSuchEntity(format!(
                "The role policy with name {policy_name} cannot be found."
            ))
        })
    })
    .await?;
    Ok(())
}

/// New temporary credentials: the record as stored (under a lease that
/// ends a minute after they expire), the secret and the session token.
pub async fn create_session(
    ctl: &Control,
    owner: berth_iam::SessionOwner,
    seconds: u32,
    terms: berth_iam::SessionTerms,
) -> Result<(berth_iam::Session, String, String)> {
    let lease = ctl
        .store
        .lease_grant(std::time::Duration::from_secs(u64::from(seconds) + 60))
        .await?;
    create_session_under(ctl, owner, seconds, terms, lease.id).await
}

/// [`create_session`] under a lease the caller holds (and may revoke to
/// end the session early); it must outlast the session.
pub async fn create_session_under(
    ctl: &Control,
    owner: berth_iam::SessionOwner,
    seconds: u32,
    terms: berth_iam::SessionTerms,
    lease: berth_store::LeaseId,
) -> Result<(berth_iam::Session, String, String)> {
    let (id, secret, token) = {
        let mut rng = rand::rng();
        (
            keys::new_temporary_key_id(&mut rng),
            keys::new_secret(&mut rng),
            keys::new_session_token(&mut rng),
        )
    };
    let record = berth_iam::Session {
        access_key_id: id.clone(),
        owner,
        sealed_secret: ctl.identity.seal(&secret, &id),
        token_hash: berth_wire::sigv4::hex_sha256(token.as_bytes()),
        expires: ctl.now() + f64::from(seconds),
        policy: terms.policy,
        managed_policies: terms.managed_policies,
        tags: terms.tags,
        transitive_tag_keys: terms.transitive_tag_keys,
    };
    let key = iam::session(&ctl.config.account, &id);
    ctl.store
        .txn(Txn::when(
            vec![typed::unchanged(&key, 0)],
            vec![Op::Put {
                key: key.clone(),
                value: typed::encode(&record),
                lease: Some(lease),
            }],
        ))
        .await?;
    Ok((record, secret, token))
}
