//! Join tokens and the hosts that join with them. An operator issues a
//! token for a cluster (or the Fargate pool); a new host's agent presents
//! it once and gets an access key of its own, owned by its instance
//! (`KeyOwner::Instance`), which is all it signs with from then on. A host
//! that joins again gets a new key and its old one stops working.

use crate::cas::{self, Attempt};
use crate::identity::NewCredentials;
use crate::{Control, ControlError};

use berth_iam::join::{self, JoinRefusal, JoinToken};
use berth_iam::keys::{self, AccessKey, KeyOwner, KeyStatus};
use berth_store::{keys::iam, typed, Op, Txn};

/// How long a token lives unless told otherwise (as `kubeadm`'s do).
pub const DEFAULT_LIFETIME_S: f64 = 24.0 * 3600.0;
/// The longest a token may live: a token is for joining, not for keeping.
pub const MAX_LIFETIME_S: f64 = 365.0 * 24.0 * 3600.0;

#[derive(Debug, thiserror::Error)]
pub enum JoinFailure {
    /// The token does not let anyone join.
    #[error(transparent)]
    Refused(#[from] JoinRefusal),
    /// The token is for another cluster than the host asked to join.
    #[error("the join token {id} is for {token_cluster}, not {asked}")]
    OtherCluster {
        id: String,
        token_cluster: String,
        asked: String,
    },
    /// A request that cannot be right (a bad instance id, say).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl From<berth_store::StoreError> for JoinFailure {
    fn from(e: berth_store::StoreError) -> Self {
        JoinFailure::Control(e.into())
    }
}

/// Issues a token for `cluster`, living `lifetime_s`: the record and the
/// token, which is shown this once.
pub async fn create_token(
    ctl: &Control,
    cluster: &str,
    description: &str,
    lifetime_s: f64,
) -> Result<(JoinToken, String), JoinFailure> {
    if !(lifetime_s > 0.0 && lifetime_s <= MAX_LIFETIME_S) {
        return Err(JoinFailure::Invalid(format!(
            "expiresIn must be between 1 second and {} days",
            MAX_LIFETIME_S as u64 / 86400
        )));
    }
    if description.len() > 256 {
        return Err(JoinFailure::Invalid(
            "description must be at most 256 characters".into(),
        ));
    }
    let (record, token) = JoinToken::new(
        &mut rand::rng(),
        cluster,
        description,
        ctl.now(),
        lifetime_s,
    );
    let key = iam::join_token(&ctl.config.account, &record.id);
    let made = ctl
        .store
        .txn(Txn::when(
            vec![typed::unchanged(&key, 0)],
            vec![typed::put(&key, &record)],
        ))
        .await?;
    if !made.succeeded {
        return Err(JoinFailure::Invalid(
            "a token with that id exists; try again".into(),
        ));
    }
    Ok((record, token))
}

/// Every token, oldest first, with the number of hosts that joined with it.
pub async fn tokens(ctl: &Control) -> Result<Vec<JoinToken>, JoinFailure> {
    let account = &ctl.config.account;
    let mut all: Vec<JoinToken> = typed::list::<JoinToken>(&*ctl.store, &iam::join_tokens(account))
        .await?
        .into_iter()
        .map(|(_, t)| t.value)
        .collect();
    for t in &mut all {
        let uses = ctl
            .store
            .range(berth_store::RangeRequest::prefix(iam::join_token_uses(
                account, &t.id,
            )))
            .await?;
        t.uses = uses.kvs.len() as u64;
    }
    all.sort_by(|a, b| a.created.total_cmp(&b.created));
    Ok(all)
}

/// Revokes a token: hosts can no longer join with it (those that joined
/// keep their own credentials). Revoking twice is no error.
pub async fn revoke_token(ctl: &Control, id: &str) -> Result<JoinToken, JoinFailure> {
    if !join::plausible_id(id) {
        return Err(JoinFailure::Invalid(format!("no join token {id}")));
    }
    let key = iam::join_token(&ctl.config.account, id);
    let revoked = cas::retry_swap(ctl, || async {
        let Some(t) = typed::get::<JoinToken>(&*ctl.store, &key).await? else {
            return Err(JoinFailure::Invalid(format!("no join token {id}")));
        };
        let mut record = t.value;
        if record.revoked.is_some() {
            return Ok(Attempt::Done(record));
        }
        record.revoked = Some(ctl.now());
        let txn = Txn::when(
            vec![typed::unchanged(&key, t.mod_revision)],
            vec![typed::put(&key, &record)],
        );
        Ok(Attempt::Write(txn, record))
    })
    .await;
    match revoked {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(JoinFailure::Invalid(
            "the token is being changed by another request; try again".into(),
        )),
        Err(e) => Err(e),
    }
}

/// Whether `id` can name a host: EC2's `i-` ids and the like, one store
/// key segment.
fn plausible_instance(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A host joins `cluster` as `instance` with `token`: its new credentials.
pub async fn join(
    ctl: &Control,
    token: &str,
    cluster: &str,
    instance: &str,
) -> Result<NewCredentials, JoinFailure> {
    let (id, secret) = join::parse(token)?;
    if !plausible_instance(instance) {
        return Err(JoinFailure::Invalid(format!(
            "instanceId '{instance}' must be 1 to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    let account = ctl.config.account.clone();
    let token_key = iam::join_token(&account, id);
    let Some(record) = typed::get::<JoinToken>(&*ctl.store, &token_key).await? else {
        return Err(JoinRefusal::Unknown.into());
    };
    record.value.admits(secret, ctl.now())?;
    if record.value.cluster != cluster {
        return Err(JoinFailure::OtherCluster {
            id: id.to_string(),
            token_cluster: record.value.cluster,
            asked: cluster.to_string(),
        });
    }
    issue(ctl, cluster, instance, Some((&token_key, id))).await
}

/// New credentials for `instance` of `cluster`, replacing any it had;
/// `token` (its key and id) records a use of the token it joined with (and
/// fails the write if the token changed meanwhile, revoked say).
pub async fn issue(
    ctl: &Control,
    cluster: &str,
    instance: &str,
    token: Option<(&str, &str)>,
) -> Result<NewCredentials, JoinFailure> {
    let account = ctl.config.account.clone();
    let (key_id, secret) = {
        let mut rng = rand::rng();
        (
            keys::new_access_key_id(&mut rng),
            keys::new_secret(&mut rng),
        )
    };
    let index = iam::instance_key(&account, cluster, instance);
    let made = cas::retry_swap(ctl, || async {
        let mut compares = vec![];
        let mut ops = vec![];
        // The token must be as it was read (not revoked meanwhile); joins
        // only compare it, so that many hosts joining at once do not take
        // turns writing one record.
        if let Some((tk, id)) = token {
            let Some(t) = typed::get::<JoinToken>(&*ctl.store, tk).await? else {
                return Err(JoinRefusal::Unknown.into());
            };
            if t.value.revoked.is_some() {
                return Err(JoinRefusal::Revoked(t.value.id).into());
            }
            compares.push(typed::unchanged(tk, t.mod_revision));
            ops.push(Op::put(
                format!("{}{instance}", iam::join_token_uses(&account, id)),
                cluster.as_bytes().to_vec(),
            ));
        }
        let previous = ctl.store.get(&index).await?;
        compares.push(typed::unchanged(
            &index,
            previous.as_ref().map_or(0, |kv| kv.mod_revision),
        ));
        if let Some(old) = previous {
            let old = String::from_utf8_lossy(&old.value).to_string();
            ops.push(Op::delete(iam::access_key(&account, &old)));
        }
        let record = AccessKey {
            access_key_id: key_id.clone(),
            owner: KeyOwner::Instance {
                cluster: cluster.to_string(),
                instance: instance.to_string(),
            },
            status: KeyStatus::Active,
            sealed_secret: ctl.identity.seal(&secret, &key_id),
            created: ctl.now(),
        };
        let key = iam::access_key(&account, &key_id);
        compares.push(typed::unchanged(&key, 0));
        ops.push(typed::put(&key, &record));
        ops.push(Op::put(index.clone(), key_id.clone().into_bytes()));
        Ok(Attempt::Write(Txn::when(compares, ops), ()))
    })
    .await;
    match made {
        Ok(Some(())) => Ok(NewCredentials {
            access_key_id: key_id,
            secret_access_key: secret,
        }),
        Ok(None) => Err(JoinFailure::Invalid(
            "the host is joining through another request; try again".into(),
        )),
        Err(e) => Err(e),
    }
}
