//! Who is calling: SigV4 signatures checked against the access keys in the
//! store, and the account root's key made on first start.
//!
//! Verifying costs one HMAC over the string to sign plus hashing the body:
//! keys are kept in memory once read, each with the signing keys derived
//! for it (four HMACs each, per day, region and service), and a watch on
//! the keys' prefix drops a kept key as soon as it changes, so a deleted or
//! deactivated key stops working at once on every server.

use crate::ControlError;
use berth_iam::keys::{self, AccessKey, KeyOwner, KeyStatus};
use berth_iam::policy::{Policy, PolicyKind};
use berth_iam::records::{Tag, User};
use berth_iam::seal::Sealer;
use berth_iam::Principal;
use berth_store::{keys::iam, typed, Compare, Store, Txn};
use berth_wire::sigv4::{self, ParseError, SigningKey};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How far a request's `X-Amz-Date` may be from the server's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// AWS's message for a signature that does not match.
pub const MISMATCH_MESSAGE: &str = "The request signature we calculated does not match the signature you provided. \
     Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
/// AWS's message for an unknown or inactive key.
pub const UNKNOWN_KEY_MESSAGE: &str = "The security token included in the request is invalid.";

/// Why a request is not authenticated. Each adapter answers it in its
/// protocol's words (JSON services and query services differ).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No signature at all.
    #[error("Missing Authentication Token")]
    Missing,
    /// A signature that cannot be read.
    #[error("{0}")]
    Incomplete(String),
    /// A readable signature that cannot be right: wrong service or region
    /// in its scope, a date too far from now, an expired presigned URL.
    #[error("{0}")]
    Invalid(String),
    /// The signature does not match the request.
    #[error("{MISMATCH_MESSAGE}")]
    Mismatch,
    /// The access key is unknown or inactive, or its session token is wrong.
    #[error("{UNKNOWN_KEY_MESSAGE}")]
    UnknownKey,
    /// Temporary credentials past their expiry.
    #[error("{EXPIRED_TOKEN_MESSAGE}")]
    ExpiredToken,
}

/// AWS's message for expired temporary credentials.
pub const EXPIRED_TOKEN_MESSAGE: &str = "The security token included in the request is expired";

impl From<ParseError> for AuthFailure {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::Missing => AuthFailure::Missing,
            ParseError::Incomplete(m) => AuthFailure::Incomplete(m),
            ParseError::Invalid(m) => AuthFailure::Invalid(m),
        }
    }
}

/// An authenticated request's caller: what its access key says, built once
/// per key and shared by the key's requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller(pub Arc<CallerInfo>);

impl std::ops::Deref for Caller {
    type Target = CallerInfo;
    fn deref(&self) -> &CallerInfo {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallerInfo {
    pub principal: Principal,
    /// The principal's ARN, as policies and error messages name it.
    pub principal_arn: String,
    pub access_key: String,
    /// Who owns the key it signed with (GetSessionToken makes sessions of
    /// the same owner); `None` for temporary credentials.
    pub key_owner: Option<KeyOwner>,
    /// The session policies temporary credentials were issued with: together
    /// they limit what the principal's own policies allow.
    pub session_policy: Option<Arc<Vec<Policy>>>,
    /// The principal's tags (a user's; a role session's role and session
    /// tags): `aws:PrincipalTag/*`.
    pub tags: Arc<Vec<Tag>>,
    /// A role session's transitive session tag keys.
    pub transitive_tag_keys: Arc<Vec<String>>,
    /// The condition keys that describe the principal
    /// ([`Principal::context`]), which every request's context builds on.
    pub context: Arc<berth_iam::policy::Context>,
}

/// New credentials, shown to their owner once.
#[derive(Clone)]
pub struct NewCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for NewCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewCredentials({}, ..)", self.access_key_id)
    }
}

/// The session policies that limit temporary credentials, if any.
type SessionPolicies = Option<Arc<Vec<Policy>>>;

/// A key as verification uses it: its owner, its secret and the signing
/// keys derived so far.
struct KnownKey {
    secret: String,
    status: KeyStatus,
    /// Temporary credentials: the token's hash, the expiry, the policies.
    session: Option<(String, f64, SessionPolicies)>,
    /// What a request signed with it carries.
    caller: Arc<CallerInfo>,
    /// Signing keys by scope (`date/region/service`); a key is used in few.
    signing: Mutex<Vec<(String, SigningKey)>>,
}

/// What a key's record gives before its caller is built.
struct KnownKeyParts {
    principal: Principal,
    secret: String,
    status: KeyStatus,
    key_owner: Option<KeyOwner>,
    session: Option<(String, f64, SessionPolicies)>,
    tags: Vec<Tag>,
    transitive_tag_keys: Vec<String>,
}

/// Signing keys kept per access key; older scopes (yesterday's) fall out.
const SIGNING_KEYS_KEPT: usize = 8;

impl KnownKey {
    /// Completes a key's record with the caller its requests get.
    fn new(mut k: KnownKeyParts, access_key: &str) -> KnownKey {
        let session_policy = k.session.as_ref().and_then(|(_, _, p)| p.clone());
        let context = Arc::new(k.principal.context(&k.tags));
        let tags = Arc::new(std::mem::take(&mut k.tags));
        let transitive_tag_keys = Arc::new(std::mem::take(&mut k.transitive_tag_keys));
        let caller = Arc::new(CallerInfo {
            principal_arn: k.principal.arn(),
            principal: k.principal,
            access_key: access_key.to_string(),
            key_owner: k.key_owner,
            session_policy,
            tags,
            transitive_tag_keys,
            context,
        });
        KnownKey {
            secret: k.secret,
            status: k.status,
            session: k.session,
            caller,
            signing: Mutex::default(),
        }
    }

    fn signing_key(&self, scope: &sigv4::Signature) -> SigningKey {
        let mut kept = self.signing.lock();
        if let Some((_, k)) = kept.iter().find(|(s, _)| scope_is(s, scope)) {
            return k.clone();
        }
        let name = scope.scope();
        let k = SigningKey::derive(&self.secret, scope.date(), scope.region(), scope.service());
        if kept.len() >= SIGNING_KEYS_KEPT {
            kept.remove(0);
        }
        kept.push((name, k.clone()));
        k
    }
}

/// The account's access keys as the front door checks them.
pub struct Identity {
    store: Arc<dyn Store>,
    account: String,
    sealer: Sealer,
    known: RwLock<HashMap<String, Arc<KnownKey>>>,
    /// Users' parsed policies by name.
    policy_sets: RwLock<HashMap<String, Arc<Vec<Policy>>>>,
    /// Whether the watch that invalidates `known` is running; without it
    /// every lookup reads the store.
    following: AtomicBool,
    /// Bumped by every change the watch sees, so that a lookup that read
    /// the store before a change does not keep what it read.
    generation: AtomicU64,
    /// Its key in the threads' own caches.
    id: u64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub fn new(store: Arc<dyn Store>, account: &str, sealer: Sealer) -> Identity {
        Identity {
            store,
            account: account.to_string(),
            sealer,
            known: RwLock::default(),
            policy_sets: RwLock::default(),
            following: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            id: IDENTITIES.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// A secret sealed for the store, bound to `context` (its key id).
    pub fn seal(&self, secret: &str, context: &str) -> String {
        self.sealer.seal(secret, context, rand::random())
    }

    /// A secret [`Identity::seal`] sealed for `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, berth_iam::seal::SealError> {
        self.sealer.open(sealed, context)
    }

    /// The identity policies of a principal, parsed: a user's inline and
    /// attached ones, and those of its groups. Kept until anything under IAM changes.
    pub async fn policies(&self, principal: &Principal) -> Result<Arc<Vec<Policy>>, ControlError> {
        // Asked on every request of every limited caller: a user's name is
        // looked up as it is, without a copy.
        let name: std::borrow::Cow<'_, str> = match principal {
            Principal::User { name, .. } => name.as_str().into(),
            Principal::AssumedRole { role, .. } => format!("role/{role}").into(),
            Principal::Root { .. } => return Ok(Arc::new(vec![])),
            Principal::Instance { cluster, .. } => format!("instance/{cluster}").into(),
        };
        let name = name.as_ref();
        let following = self.following.load(Ordering::Acquire);
        if following {
            // As with keys: this thread's own copy first (see
            // `check_on_this_thread`), then the shared one.
            let generation = self.generation.load(Ordering::Acquire);
            let mine = THREAD_POLICIES.with(|kept| {
                kept.borrow()
                    .get(name)
                    .filter(|(owner, g, _)| *owner == self.id && *g == generation)
                    .map(|(_, _, set)| set.clone())
            });
            if let Some(set) = mine {
                return Ok(set);
            }
            let shared = self.policy_sets.read().get(name).cloned();
            if let Some(set) = shared {
                let copy = Arc::new((*set).clone());
                THREAD_POLICIES.with(|kept| {
                    let mut kept = kept.borrow_mut();
                    if kept.len() >= THREAD_KEYS_KEPT {
                        kept.clear();
                    }
                    kept.insert(name.to_string(), (self.id, generation, copy.clone()));
                });
                return Ok(copy);
            }
        }
        Box::pin(self.read_policies(name, following)).await
    }

    /// [`Identity::policies`] from the store: `name` is the cache's key.
    async fn read_policies(
        &self,
        name: &str,
        following: bool,
    ) -> Result<Arc<Vec<Policy>>, ControlError> {
        let generation = self.generation.load(Ordering::Acquire);
        let (mut docs, mut attached, groups): (Vec<String>, Vec<String>, Vec<String>) =
            if let Some(cluster) = name.strip_prefix("instance/") {
                // A host's agent: the container instance role's fixed policy.
                let doc = berth_iam::join::instance_policy(&self.account, cluster);
                (vec![doc], vec![], vec![])
            } else if let Some(role) = name.strip_prefix("role/") {
                let Some(r) = typed::get::<berth_iam::records::Role>(
                    &*self.store,
                    &iam::role(&self.account, role),
                )
                .await?
                else {
                    return Ok(Arc::new(vec![]));
                };
                (
                    r.value.inline.values().cloned().collect(),
                    r.value.attached,
                    vec![],
                )
            } else {
                let Some(user) =
                    typed::get::<User>(&*self.store, &iam::user(&self.account, name)).await?
                else {
                    return Ok(Arc::new(vec![]));
                };
                (
                    user.value.inline.values().cloned().collect(),
                    user.value.attached,
                    user.value.groups,
                )
            };
        for g in &groups {
            if let Some(group) =
                typed::get::<berth_iam::records::Group>(&*self.store, &iam::group(&self.account, g))
                    .await?
            {
                docs.extend(group.value.inline.values().cloned());
                attached.extend(group.value.attached.iter().cloned());
            }
        }
        for arn in &attached {
            if let Some(p) = berth_iam::managed::by_arn(arn) {
                docs.push(p.document.to_string());
            } else if let Some(pname) = arn
                .strip_prefix(&format!("arn:aws:iam::{}:policy/", self.account))
                .map(|r| r.rsplit('/').next().unwrap_or(r))
            {
                if let Some(p) = typed::get::<berth_iam::records::ManagedPolicy>(
                    &*self.store,
                    &iam::policy(&self.account, pname),
                )
                .await?
                {
                    if let Some(d) = p.value.default_document() {
                        docs.push(d.to_string());
                    }
                }
            }
        }
        // Stored documents were checked when written; one that no longer
        // parses grants nothing.
        let parsed: Vec<Policy> = docs
            .iter()
            .filter_map(|d| Policy::parse(d, PolicyKind::Identity).ok())
            .collect();
        let set = Arc::new(parsed);
        if following && self.generation.load(Ordering::Acquire) == generation {
            self.policy_sets
                .write()
                .insert(name.to_string(), set.clone());
        }
        Ok(set)
    }

    /// Checks a request's signature. `service` is the signing name of the
    /// service the request was routed to; `body` the bytes as received.
    pub async fn authenticate(
        &self,
        req: &sigv4::Request<'_>,
        body: &[u8],
        service: &str,
        now: SystemTime,
    ) -> Result<Caller, AuthFailure> {
        let sig = sigv4::parse(req)?;
        self.authenticate_parsed(req, &sig, body, service, now)
            .await
    }

    /// [`Identity::authenticate`] for a request whose signature the front
    /// door has already read (it reads the scope to route the request).
    pub async fn authenticate_parsed(
        &self,
        req: &sigv4::Request<'_>,
        sig: &sigv4::Signature,
        body: &[u8],
        service: &str,
        now: SystemTime,
    ) -> Result<Caller, AuthFailure> {
        if sig.service() != service {
            return Err(AuthFailure::Invalid(format!(
                "Credential should be scoped to correct service: '{service}'. "
            )));
        }
        check_time(sig, now)?;
        if !keys::plausible_key_id(sig.access_key()) {
            return Err(AuthFailure::UnknownKey);
        }
        if let Some(checked) = self.check_on_this_thread(req, sig, body, now) {
            return checked;
        }
        let generation = self.generation.load(Ordering::Acquire);
        let key = self
            .lookup(sig.access_key())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot read access keys");
                AuthFailure::UnknownKey
            })?
            .ok_or(AuthFailure::UnknownKey)?;
        let checked = check_key(&key, &key.signing_key(sig), req, sig, body, now)
            .map(|()| Caller(key.caller.clone()));
        if self.following.load(Ordering::Acquire) {
            self.keep_on_this_thread(sig.access_key(), key, generation);
        }
        checked
    }

    /// The check of a request whose key this thread keeps, as it was when
    /// the store last changed: no lock, and no count that other threads
    /// write. An HTTP thread serves a connection's every request, and
    /// counters shared between cores cost more than the signature's
    /// arithmetic. `None` when the thread does not keep the key.
    fn check_on_this_thread(
        &self,
        req: &sigv4::Request<'_>,
        sig: &sigv4::Signature,
        body: &[u8],
        now: SystemTime,
    ) -> Option<Result<Caller, AuthFailure>> {
        if !self.following.load(Ordering::Acquire) {
            return None;
        }
        let generation = self.generation.load(Ordering::Acquire);
        THREAD_KEYS.with(|kept| {
            let mut kept = kept.borrow_mut();
            let k = kept.get_mut(sig.access_key())?;
            if k.owner != self.id || k.generation != generation {
                return None;
            }
            let signing = match k.signing.iter().find(|(s, _)| scope_is(s, sig)) {
                Some((_, signing)) => signing.clone(),
                None => {
                    let signing = k.key.signing_key(sig);
                    if k.signing.len() >= SIGNING_KEYS_KEPT {
                        k.signing.remove(0);
                    }
                    k.signing.push((sig.scope(), signing.clone()));
                    signing
                }
            };
            Some(
                check_key(&k.key, &signing, req, sig, body, now).map(|()| Caller(k.caller.clone())),
            )
        })
    }

    /// Keeps a key for this thread's next requests, as of `generation`.
    fn keep_on_this_thread(&self, id: &str, key: Arc<KnownKey>, generation: u64) {
        THREAD_KEYS.with(|kept| {
            let mut kept = kept.borrow_mut();
            if kept.len() >= THREAD_KEYS_KEPT {
                kept.clear();
            }
            // The thread's own copy of the caller, so that the count of
            // its requests' references is written by this thread alone.
            let mut caller = (*key.caller).clone();
            caller.context = Arc::new((*caller.context).clone());
            kept.insert(
                id.to_string(),
                ThreadKey {
                    owner: self.id,
                    generation,
                    caller: Arc::new(caller),
                    signing: vec![],
                    key,
                },
            );
        });
    }

    async fn lookup(&self, id: &str) -> Result<Option<Arc<KnownKey>>, ControlError> {
        let following = self.following.load(Ordering::Acquire);
        if following {
            if let Some(k) = self.known.read().get(id) {
                return Ok(Some(k.clone()));
            }
        }
        // The store's futures are large; boxed, they are built only on a
        // miss instead of being carried in every request's future.
        Box::pin(self.read_key(id, following)).await
    }

    /// An access key as the store holds it, kept while the watch follows.
    async fn read_key(
        &self,
        id: &str,
        following: bool,
    ) -> Result<Option<Arc<KnownKey>>, ControlError> {
        let generation = self.generation.load(Ordering::Acquire);
        if id.starts_with("ASIA") {
            let known = self.session(id).await?;
            if let (Some(k), true) = (&known, following) {
                if self.generation.load(Ordering::Acquire) == generation {
                    self.known.write().insert(id.to_string(), k.clone());
                }
            }
            return Ok(known);
        }
        let Some(kv) = self.store.get(&iam::access_key(&self.account, id)).await? else {
            return Ok(None);
        };
        let record: AccessKey = typed::decode(&kv)?.value;
        let secret = self.sealer.open(&record.sealed_secret, id).map_err(|e| {
            ControlError::Internal(format!(
                "access key {id}: {e} (is the secrets key the one it was stored with?)"
            ))
        })?;
        let mut tags = vec![];
        let principal = match &record.owner {
            KeyOwner::Root => Principal::Root {
                account: self.account.clone(),
            },
            KeyOwner::User(name) => match self.user_principal(name).await? {
                Some((p, t)) => {
                    tags = t;
                    p
                }
                None => return Ok(None),
            },
            KeyOwner::Instance { cluster, instance } => Principal::Instance {
                account: self.account.clone(),
                cluster: cluster.clone(),
                instance: instance.clone(),
            },
        };
        let known = Arc::new(KnownKey::new(
            KnownKeyParts {
                principal,
                secret,
                status: record.status,
                key_owner: Some(record.owner),
                session: None,
                tags,
                transitive_tag_keys: vec![],
            },
            id,
        ));
        if following && self.generation.load(Ordering::Acquire) == generation {
            self.known.write().insert(id.to_string(), known.clone());
        }
        Ok(Some(known))
    }

    /// The principal of a user and its tags, if the user still exists.
    async fn user_principal(
        &self,
        name: &str,
    ) -> Result<Option<(Principal, Vec<Tag>)>, ControlError> {
        let user = typed::get::<User>(&*self.store, &iam::user(&self.account, name)).await?;
        Ok(user.map(|u| {
            (
                Principal::User {
                    account: self.account.clone(),
                    name: u.value.name,
                    id: u.value.id,
                    path: u.value.path,
                },
                u.value.tags,
            )
        }))
    }

    /// Temporary credentials as verification uses them.
    async fn session(&self, id: &str) -> Result<Option<Arc<KnownKey>>, ControlError> {
        let Some(kv) = self.store.get(&iam::session(&self.account, id)).await? else {
            return Ok(None);
        };
        let record: berth_iam::Session = typed::decode(&kv)?.value;
        let secret = self
            .sealer
            .open(&record.sealed_secret, id)
            .map_err(|e| ControlError::Internal(format!("session {id}: {e}")))?;
        let mut tags: Vec<Tag> = vec![];
        let principal = match &record.owner {
            berth_iam::SessionOwner::Role { role, session } => {
                let Some(r) = typed::get::<berth_iam::records::Role>(
                    &*self.store,
                    &iam::role(&self.account, role),
                )
                .await?
                else {
                    return Ok(None);
                };
                // A role session's principal tags: the role's, overridden
                // by the session's own.
                tags = r.value.tags.clone();
                for t in &record.tags {
                    tags.retain(|x| !x.key.eq_ignore_ascii_case(&t.key));
                    tags.push(t.clone());
                }
                Principal::AssumedRole {
                    account: self.account.clone(),
                    role: r.value.name,
                    role_id: r.value.id,
                    session: session.clone(),
                }
            }
            berth_iam::SessionOwner::Same(KeyOwner::Root) => Principal::Root {
                account: self.account.clone(),
            },
            berth_iam::SessionOwner::Same(KeyOwner::Instance { cluster, instance }) => {
                Principal::Instance {
                    account: self.account.clone(),
                    cluster: cluster.clone(),
                    instance: instance.clone(),
                }
            }
            berth_iam::SessionOwner::Same(KeyOwner::User(name)) => {
                match self.user_principal(name).await? {
                    Some((p, t)) => {
                        tags = t;
                        p
                    }
                    None => return Ok(None),
                }
            }
        };
        // The inline and the managed session policies limit the session
        // together; stored documents were checked when issued.
        let policies: Vec<Policy> = record
            .policy
            .iter()
            .chain(&record.managed_policies)
            .filter_map(|d| Policy::parse(d, PolicyKind::Identity).ok())
            .collect();
        let given = record.policy.is_some() || !record.managed_policies.is_empty();
        let policy = given.then(|| Arc::new(policies));
        Ok(Some(Arc::new(KnownKey::new(
            KnownKeyParts {
                principal,
                secret,
                status: KeyStatus::Active,
                key_owner: None,
                session: Some((record.token_hash, record.expires, policy)),
                tags,
                transitive_tag_keys: record.transitive_tag_keys,
            },
            id,
        ))))
    }

    /// Keeps what is kept true to the store until `stop`: a change to an
    /// access key drops that key; any change under IAM (a user, a policy,
    /// an attachment) drops every policy set and every key (a user's
    /// rename or deletion changes its keys' principal).
    pub async fn follow(self: Arc<Self>, stop: CancellationToken) {
        let prefix = iam::base(&self.account);
        let keys_prefix = iam::access_keys(&self.account);
        let sessions_prefix = iam::sessions(&self.account);
        loop {
            let from = match self.store.current_revision().await {
                Ok(r) => r + 1,
                Err(e) => {
                    tracing::warn!(error = %e, "access keys: cannot read the store; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            let mut events = self.store.watch(&prefix, from);
            self.known.write().clear();
            self.policy_sets.write().clear();
            self.following.store(true, Ordering::Release);
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    b = berth_store::next_batch(&mut events) => b,
                };
                let Some((batch, broken)) = next else {
                    break;
                };
                self.generation.fetch_add(1, Ordering::AcqRel);
                let mut known = self.known.write();
                for ev in &batch {
                    match ev
                        .kv
                        .key
                        .strip_prefix(&keys_prefix)
                        .or_else(|| ev.kv.key.strip_prefix(&sessions_prefix))
                    {
                        Some(id) => {
                            known.remove(id);
                        }
                        None => known.clear(),
                    }
                }
                drop(known);
                self.policy_sets.write().clear();
                // Again, now that the kept keys are dropped: a thread that
                // read the first count and then a key about to be dropped
                // must not keep that key as current.
                self.generation.fetch_add(1, Ordering::AcqRel);
                if broken {
                    break;
                }
            }
            // The watch ended (compaction, a lost connection): stop
            // trusting what is kept until a new watch runs.
            self.following.store(false, Ordering::Release);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Makes the account root's access key if the store has none: `given`
    /// (id and secret) or a new one. Returns the credentials it made, or
    /// `None` when a root key already existed (made by an earlier start or
    /// another server).
    pub async fn bootstrap_root(
        &self,
        given: Option<NewCredentials>,
        now: f64,
    ) -> Result<Option<NewCredentials>, ControlError> {
        let marker = iam::root_key(&self.account);
        if self.store.get(&marker).await?.is_some() {
            return Ok(None);
        }
        let creds = given.unwrap_or_else(|| {
            let mut rng = rand::rng();
            NewCredentials {
                access_key_id: keys::new_access_key_id(&mut rng),
                secret_access_key: keys::new_secret(&mut rng),
            }
        });
        if !keys::plausible_key_id(&creds.access_key_id) || creds.secret_access_key.is_empty() {
            return Err(ControlError::Internal(format!(
                "the root access key id {:?} must be 16 to 128 letters and digits, with a secret",
                creds.access_key_id
            )));
        }
        let record = AccessKey {
            access_key_id: creds.access_key_id.clone(),
            owner: KeyOwner::Root,
            status: KeyStatus::Active,
            sealed_secret: self.sealer.seal(
                &creds.secret_access_key,
                &creds.access_key_id,
                rand::random(),
            ),
            created: now,
        };
        let key = iam::access_key(&self.account, &creds.access_key_id);
        let made = self
            .store
            .txn(Txn::when(
                vec![
                    Compare::ModRevision {
                        key: marker.clone(),
                        revision: 0,
                    },
                    Compare::ModRevision {
                        key: key.clone(),
                        revision: 0,
                    },
                ],
                vec![
                    berth_store::Op::put(marker, creds.access_key_id.clone().into_bytes()),
                    typed::put(&key, &record),
                ],
            ))
            .await?;
        Ok(made.succeeded.then_some(creds))
    }
}

/// Whether a request was signed with `key` (whose signing key for the
/// request's scope is `signing`), and the key may still be used.
fn check_key(
    key: &KnownKey,
    signing: &SigningKey,
    req: &sigv4::Request<'_>,
    sig: &sigv4::Signature,
    body: &[u8],
    now: SystemTime,
) -> Result<(), AuthFailure> {
    if key.status != KeyStatus::Active {
        return Err(AuthFailure::UnknownKey);
    }
    match (&key.session, sig.security_token()) {
        // Long-term keys carry no session; a token with one is a
        // forgery or a mix-up, refused as AWS does.
        (None, Some(_)) | (Some(_), None) => return Err(AuthFailure::UnknownKey),
        (Some((hash, expires, _)), Some(token)) => {
            let given = sigv4::hex_sha256(token.as_bytes());
            if keys::same_secret(given.as_bytes(), hash.as_bytes()) {
                let now_s = now
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                if now_s >= *expires {
                    return Err(AuthFailure::ExpiredToken);
                }
            } else {
                return Err(AuthFailure::UnknownKey);
            }
        }
        (None, None) => {}
    }
    let payload = sigv4::payload_hash(req, body).ok_or(AuthFailure::Mismatch)?;
    if !sigv4::verify(signing, req, sig, payload.as_str()) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let canonical = sigv4::canonical_request(req, sig.signed_headers(), payload.as_str());
            tracing::debug!(canonical = %canonical, "signature mismatch");
        }
        return Err(AuthFailure::Mismatch);
    }
    Ok(())
}

/// Whether a kept signing key's scope (`date/region/service/...`) is the
/// request's.
fn scope_is(kept: &str, sig: &sigv4::Signature) -> bool {
    let mut p = kept.split('/');
    p.next() == Some(sig.date())
        && p.next() == Some(sig.region())
        && p.next() == Some(sig.service())
}

/// A key as one thread keeps it.
struct ThreadKey {
    /// The [`Identity`] it belongs to (tests run several in one thread).
    owner: u64,
    /// The store's changes seen when it was read: any later one drops it.
    generation: u64,
    key: Arc<KnownKey>,
    caller: Arc<CallerInfo>,
    signing: Vec<(String, SigningKey)>,
}

/// Keys kept per thread; past this many (a flood of distinct keys) the
/// thread starts over.
const THREAD_KEYS_KEPT: usize = 256;

thread_local! {
    static THREAD_KEYS: std::cell::RefCell<HashMap<String, ThreadKey>> =
        std::cell::RefCell::new(HashMap::new());
    /// Policy sets by name, with their [`Identity`] and generation.
    static THREAD_POLICIES: std::cell::RefCell<HashMap<String, (u64, u64, PolicySet)>> =
        std::cell::RefCell::new(HashMap::new());
}

type PolicySet = Arc<Vec<Policy>>;

/// Tells [`Identity`] values apart in [`THREAD_KEYS`].
static IDENTITIES: AtomicU64 = AtomicU64::new(0);

fn check_time(sig: &sigv4::Signature, now: SystemTime) -> Result<(), AuthFailure> {
    let at = sigv4::parse_amz_date(sig.amz_date())
        .ok_or_else(|| AuthFailure::Invalid(format!("Invalid X-Amz-Date '{}'", sig.amz_date())))?;
    if at > now + MAX_SKEW {
        return Err(AuthFailure::Invalid(format!(
            "Signature not yet current: {} is still later than {} ({} + 5 min.)",
            sig.amz_date(),
            sigv4::format_amz_date(now + MAX_SKEW),
            sigv4::format_amz_date(now)
        )));
    }
    match sig.expires {
        // A presigned URL lives from its date for its X-Amz-Expires.
        Some(expires) => {
            if now > at + Duration::from_secs(expires) {
                return Err(AuthFailure::Invalid(format!(
                    "Request has expired: it was signed at {} for {expires} seconds; it is now {}",
                    sig.amz_date(),
                    sigv4::format_amz_date(now)
                )));
            }
        }
        None => {
            if at + MAX_SKEW < now {
                return Err(AuthFailure::Invalid(format!(
                    "Signature expired: {} is now earlier than {} ({} - 5 min.)",
                    sig.amz_date(),
                    sigv4::format_amz_date(now - MAX_SKEW),
                    sigv4::format_amz_date(now)
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::MemStore;
    use std::time::UNIX_EPOCH;

    fn identity(store: Arc<dyn Store>) -> Identity {
        Identity::new(
            store,
            "123456789012",
            Sealer::new(&[3; berth_iam::seal::KEY_LEN]).expect("key"),
        )
    }

    fn signed(
        creds: &NewCredentials,
        service: &str,
        at: SystemTime,
        body: &[u8],
    ) -> Vec<(String, String)> {
        let headers = vec![
            ("host", "berth:8750"),
            ("content-type", "application/x-amz-json-1.1"),
        ];
        let req = sigv4::Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
        };
        let c = sigv4::Credentials {
            access_key_id: creds.access_key_id.clone(),
            secret_access_key: creds.secret_access_key.clone(),
            session_token: None,
        };
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in sigv4::sign(&req, body, &c, "us-east-1", service, at) {
            all.push((k.to_string(), v));
        }
        all
    }

    async fn check(
        id: &Identity,
        headers: &[(String, String)],
        body: &[u8],
        now: SystemTime,
    ) -> Result<Caller, AuthFailure> {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let req = sigv4::Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
        };
        id.authenticate(&req, body, "ecs", now).await
    }

    #[tokio::test]
    async fn the_root_key_is_made_once_and_verifies_only_its_own_signatures() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let id = identity(store.clone());
        let creds = id
            .bootstrap_root(None, 0.0)
            .await
            .expect("ok")
            .expect("made");
        assert!(creds.access_key_id.starts_with("AKIA"));
        assert!(id.bootstrap_root(None, 0.0).await.expect("ok").is_none());
        let stored = store
            .get(&iam::access_key("123456789012", &creds.access_key_id))
            .await
            .expect("read")
            .expect("stored");
        assert!(!String::from_utf8_lossy(&stored.value).contains(&creds.secret_access_key));

        let now = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        let h = signed(&creds, "ecs", now, b"{}");
        let caller = check(&id, &h, b"{}", now).await.expect("verified");
        assert_eq!(caller.principal.arn(), "arn:aws:iam::123456789012:root");
        assert_eq!(
            check(&id, &h, b"{\"a\":1}", now).await,
            Err(AuthFailure::Mismatch)
        );

        let later = now + Duration::from_secs(301);
        let Err(AuthFailure::Invalid(m)) = check(&id, &h, b"{}", later).await else {
            panic!("stale")
        };
        assert!(m.starts_with("Signature expired: "), "{m}");
        assert!(m.ends_with(" - 5 min.)"), "{m}");
        let earlier = now - Duration::from_secs(301);
        let Err(AuthFailure::Invalid(m)) = check(&id, &h, b"{}", earlier).await else {
            panic!("future")
        };
        assert!(m.starts_with("Signature not yet current: "), "{m}");

        let wrong = NewCredentials {
            access_key_id: creds.access_key_id.clone(),
            secret_access_key: "not the secret".into(),
        };
        let h = signed(&wrong, "ecs", now, b"{}");
        assert_eq!(check(&id, &h, b"{}", now).await, Err(AuthFailure::Mismatch));
        let unknown = NewCredentials {
            access_key_id: "AKIAUNKNOWNUNKNOWN00".into(),
            secret_access_key: "x".into(),
        };
        let h = signed(&unknown, "ecs", now, b"{}");
        assert_eq!(
            check(&id, &h, b"{}", now).await,
            Err(AuthFailure::UnknownKey)
        );
        let h = signed(&creds, "sts", now, b"{}");
        let Err(AuthFailure::Invalid(m)) = check(&id, &h, b"{}", now).await else {
            panic!("scope")
        };
        assert_eq!(m, "Credential should be scoped to correct service: 'ecs'. ");
    }

    #[tokio::test]
    async fn a_changed_key_is_dropped_from_what_is_kept() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let id = Arc::new(identity(store.clone()));
        let stop = CancellationToken::new();
        tokio::spawn(id.clone().follow(stop.clone()));
        while !id.following.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        let creds = id
            .bootstrap_root(None, 0.0)
            .await
            .expect("ok")
            .expect("made");
        let now = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        let h = signed(&creds, "ecs", now, b"");
        check(&id, &h, b"", now).await.expect("verified");
        assert_eq!(id.known.read().len(), 1);
        // The thread keeps it too, and answers from it from now on: the
        // change below must reach that copy as well.
        assert!(THREAD_KEYS.with(|k| k.borrow().contains_key(&creds.access_key_id)));
        check(&id, &h, b"", now).await.expect("verified again");
        let key = iam::access_key("123456789012", &creds.access_key_id);
        let mut record: AccessKey =
            typed::decode(&store.get(&key).await.expect("read").expect("kept"))
                .expect("decodes")
                .value;
        record.status = KeyStatus::Inactive;
        store
            .txn(Txn::when(vec![], vec![typed::put(&key, &record)]))
            .await
            .expect("written");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while check(&id, &h, b"", now).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "still accepted");
            tokio::task::yield_now().await;
        }
        assert_eq!(check(&id, &h, b"", now).await, Err(AuthFailure::UnknownKey));
        stop.cancel();
    }

    #[tokio::test]
    async fn temporary_credentials_need_their_token_and_expire() {
        let ctl = crate::Control::new(Arc::new(MemStore::new()), crate::ControlConfig::default());
        let owner = berth_iam::SessionOwner::Same(KeyOwner::Root);
        let (record, secret, token) =
            crate::iam::create_session(&ctl, owner, 900, Default::default())
                .await
                .expect("made");
        let creds = |token: Option<String>| sigv4::Credentials {
            access_key_id: record.access_key_id.clone(),
            secret_access_key: secret.clone(),
            session_token: token,
        };
        let at = |secs: f64| UNIX_EPOCH + Duration::from_secs_f64(secs);
        let ask = |c: sigv4::Credentials, now: SystemTime| {
            let ctl = ctl.clone();
            async move {
                let headers = vec![("host", "h")];
                let req = sigv4::Request {
                    method: "POST",
                    path: "/",
                    query: "",
                    headers: &headers,
                };
                let added = sigv4::sign(&req, b"", &c, "us-east-1", "ecs", now);
                let mut all: Vec<(&str, &str)> = headers.clone();
                for (k, v) in &added {
                    all.push((k, v));
                }
                let req = sigv4::Request {
                    headers: &all,
                    ..req
                };
                ctl.identity.authenticate(&req, b"", "ecs", now).await
            }
        };
        let before = at(record.expires - 1.0);
        let caller = ask(creds(Some(token.clone())), before)
            .await
            .expect("valid");
        assert_eq!(caller.principal.arn(), "arn:aws:iam::000000000000:root");
        assert!(caller.key_owner.is_none());
        assert_eq!(ask(creds(None), before).await, Err(AuthFailure::UnknownKey));
        assert_eq!(
            ask(creds(Some(format!("{token}x"))), before).await,
            Err(AuthFailure::UnknownKey)
        );
        let after = at(record.expires + 1.0);
        assert_eq!(
            ask(creds(Some(token)), after).await,
            Err(AuthFailure::ExpiredToken)
        );
    }
}
