//! Berth's versioned key-value store.
//!
//! The [`Store`] trait is shaped like etcd's v3 API so that an etcd backend
//! can be added without touching callers: one global revision that every
//! write transaction advances by one; per-key create/mod revisions and
//! version; get and prefix range with limit and continuation; transactions
//! that compare mod revisions (or values) and apply several puts/deletes
//! atomically; watches from a revision that deliver every event in revision
//! order; leases with a TTL whose expiry deletes the keys attached to them.
//!
//! Backends: [`MemStore`] (tests, `memory://`), [`SqliteStore`] (the
//! default; an acknowledged write is fsynced, so `kill -9` never loses it)
//! and [`EtcdStore`] (`etcd://`, shared by several processes).
//! Values are opaque bytes; [`typed`] adds JSON records and [`keys`] is the
//! one place that knows the key layout (docs/adr/0001-store-key-layout.md).
//!
//! This crate is the only home of rusqlite and of the etcd client. It knows
//! nothing of HTTP or of AWS wire shapes.

mod apply;
mod etcd;
mod lease;
mod mem;
mod sqlite;
mod watch;

pub mod keys;
pub mod typed;

use async_trait::async_trait;
use futures::stream::BoxStream;
use std::time::Duration;

pub use etcd::EtcdStore;
pub use mem::MemStore;
pub use sqlite::SqliteStore;

/// The store's logical clock. Revision 0 means "nothing written yet"; the
/// first write transaction produces revision 1.
pub type Revision = i64;

/// Identifies a lease. Never 0.
pub type LeaseId = i64;

/// One key with its value and its revision metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// Revision of the transaction that last wrote the key.
    pub mod_revision: Revision,
    /// Number of writes since creation; 1 when created.
    pub version: i64,
    /// Lease the key is attached to; the key is deleted when the lease expires.
    pub lease: Option<LeaseId>,
}

/// A condition of a transaction, evaluated atomically with its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod revision equals `revision`; 0 means "the key does not exist".
    ModRevision { key: String, revision: Revision },
    /// The key exists and holds exactly `value`.
    Value { key: String, value: Vec<u8> },
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    /// Deleting a missing key is not an error and produces no event.
    Delete { key: String },
}

impl Op {
    pub fn put(key: impl Into<String>, value: Vec<u8>) -> Self {
        Op::Put {
            key: key.into(),
            value,
            lease: None,
        }
    }
    pub fn delete(key: impl Into<String>) -> Self {
        Op::Delete { key: key.into() }
    }
}

/// If every compare holds, `success` is applied, otherwise `failure`; either
/// way atomically and at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    /// A transaction that applies `ops` only if every compare holds.
    pub fn when(compares: Vec<Compare>, ops: Vec<Op>) -> Self {
        Txn {
            compares,
            success: ops,
            failure: vec![],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The store revision after the transaction: its own revision if it
    /// changed anything, otherwise the revision it was evaluated at.
    pub revision: Revision,
}

/// Keys starting with `prefix`, in key order, after `start_after` if given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub prefix: String,
    /// Continuation: only keys strictly greater than this one.
    pub start_after: Option<String>,
    /// At most this many keys; `None` for all.
    pub limit: Option<usize>,
}

impl RangeRequest {
    pub fn prefix(prefix: impl Into<String>) -> Self {
        RangeRequest {
            prefix: prefix.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// True when `limit` cut the result short.
    pub more: bool,
    /// The revision the range was read at.
    pub revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change seen by a watcher. For a delete, `kv.value` is empty and
/// `kv.mod_revision` is the revision of the delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// Operations one transaction may carry.
pub const MAX_TXN_OPS: usize = 1 << 20;

/// A lease as granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A watch asked for history that compaction removed; re-list and watch
    /// from the revision of the list.
    #[error("required revision {requested} has been compacted (compact revision {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// A compaction asked for a revision the store has not reached.
    #[error("compaction to future revision {requested} (current {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// As in etcd, a transaction touches each key at most once.
    #[error("invalid transaction: {0}")]
    InvalidTxn(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store file {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("stored record at {key} is not valid: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the store is shut down")]
    Closed,
    /// etcd could not be reached, or refused a request.
    #[error("etcd: {0}")]
    Etcd(String),
}

/// The same failure for each of several requests that shared one write
/// (a batch of placements): rusqlite's errors are not `Clone`, so SQLite's
/// keeps its code and message.
impl Clone for StoreError {
    fn clone(&self) -> Self {
        match self {
            StoreError::Compacted {
                requested,
                compacted,
            } => StoreError::Compacted {
                requested: *requested,
                compacted: *compacted,
            },
            StoreError::FutureRevision { requested, current } => StoreError::FutureRevision {
                requested: *requested,
                current: *current,
            },
            StoreError::LeaseNotFound(id) => StoreError::LeaseNotFound(*id),
            StoreError::InvalidTxn(m) => StoreError::InvalidTxn(m.clone()),
            StoreError::Sqlite(e) => StoreError::Sqlite(copy_sqlite(e, "")),
            StoreError::Open { path, reason } => StoreError::Open {
                path: path.clone(),
                reason: reason.clone(),
            },
            StoreError::Corrupt { key, reason } => StoreError::Corrupt {
                key: key.clone(),
                reason: reason.clone(),
            },
            StoreError::Closed => StoreError::Closed,
            StoreError::Etcd(m) => StoreError::Etcd(m.clone()),
        }
    }
}

/// A copy of SQLite's error with its code and message, `context` first.
pub(crate) fn copy_sqlite(e: &rusqlite::Error, context: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        e.sqlite_error()
            .copied()
            .unwrap_or_else(|| rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR)),
        Some(format!("{context}{e}")),
    )
}

/// A stream of every event under a prefix, from a revision, in revision order.
pub type WatchStream = BoxStream<'static, Result<Event, StoreError>>;

/// The next events of a watch: the first to come and every one ready
/// right after it, since a transaction's events come together; and
/// whether the watch ended or failed after them. None when it ended or
/// failed before giving any.
pub async fn next_batch(events: &mut WatchStream) -> Option<(Vec<Event>, bool)> {
    use futures::{FutureExt, StreamExt};
    let first = events.next().await?.ok()?;
    let mut batch = vec![first];
    while let Some(next) = events.next().now_or_never() {
        match next {
            Some(Ok(ev)) => batch.push(ev),
            _ => return Some((batch, true)),
        }
    }
    Some((batch, false))
}

/// The versioned key-value store every other component talks to.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError>;
    /// The greatest key starting with `prefix`, without reading the keys
    /// before it (the latest of a family's zero-padded revisions).
    async fn last(&self, prefix: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Applies a transaction. When it returns Ok, the write is durable.
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError>;
    async fn current_revision(&self) -> Result<Revision, StoreError>;
    /// Every event under `prefix` with revision >= `from` (0: from now on),
    /// in order, without gaps; the events of one revision become ready
    /// together (what [`next_batch`] relies on). Yields
    /// [`StoreError::Compacted`] and ends if `from` is older than the
    /// compact revision.
    fn watch(&self, prefix: &str, from: Revision) -> WatchStream;
    /// Forgets history before `revision` (etcd semantics: events at
    /// `revision` and later stay); watches from older revisions fail.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
    async fn lease_grant(&self, ttl: Duration) -> Result<Lease, StoreError>;
    /// Restarts the lease's TTL; returns it.
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<Duration, StoreError>;
    /// Ends the lease now and deletes its keys (one revision).
    async fn lease_revoke(&self, id: LeaseId) -> Result<(), StoreError>;
}

/// A prefix range over an ordered in-memory key space, shared by every
/// backend that serves reads from memory: the values found, and whether
/// the limit left some out.
pub(crate) fn range_in<V: Clone>(
    kvs: &std::collections::BTreeMap<String, V>,
    req: &RangeRequest,
) -> (Vec<V>, bool) {
    let start = match &req.start_after {
        Some(after) if after.as_str() >= req.prefix.as_str() => {
            std::ops::Bound::Excluded(after.clone())
        }
        _ => std::ops::Bound::Included(req.prefix.clone()),
    };
    let limit = req.limit.unwrap_or(usize::MAX);
    let mut iter = kvs
        .range((start, std::ops::Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(&req.prefix))
        .map(|(_, kv)| kv.clone());
    let found: Vec<V> = iter.by_ref().take(limit).collect();
    let more = iter.next().is_some();
    (found, more)
}

/// The value of the greatest key under `prefix` in an ordered in-memory
/// key space.
pub(crate) fn last_in<V: Clone>(
    kvs: &std::collections::BTreeMap<String, V>,
    prefix: &str,
) -> Option<V> {
    use std::ops::Bound;
    // Every key under `prefix` sorts below the prefix with its last
    // character's successor, and every key from `prefix` to there is under it.
    let end = prefix.chars().last().and_then(|c| {
        let next = char::from_u32(u32::from(c) + 1)?;
        Some(format!("{}{next}", &prefix[..prefix.len() - c.len_utf8()]))
    });
    match end {
        Some(end) => kvs
            .range::<str, _>((Bound::Included(prefix), Bound::Excluded(end.as_str())))
            .next_back()
            .map(|(_, v)| v.clone()),
        None => kvs
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .last()
            .map(|(_, v)| v.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: vec![],
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: None,
        }
    }

    #[test]
    fn last_in_finds_the_greatest_key_under_the_prefix_only() {
        let map: std::collections::BTreeMap<_, _> =
            ["/a", "/a/0001", "/a/0002", "/a/0010", "/a0", "/b"]
                .iter()
                .map(|k| (k.to_string(), kv(k)))
                .collect();
        assert_eq!(last_in(&map, "/a/").map(|k| k.key), Some("/a/0010".into()));
        assert_eq!(last_in(&map, "/b").map(|k| k.key), Some("/b".into()));
        assert_eq!(last_in(&map, "/c/").map(|k| k.key), None);
        assert_eq!(last_in(&map, "").map(|k| k.key), Some("/b".into()));
    }

    #[test]
    fn range_in_honours_prefix_continuation_and_limit() {
        let map: std::collections::BTreeMap<_, _> = ["/a", "/a/1", "/a/2", "/a/3", "/b"]
            .iter()
            .map(|k| (k.to_string(), kv(k)))
            .collect();
        let (found, more) = range_in(
            &map,
            &RangeRequest {
                prefix: "/a/".into(),
                start_after: Some("/a/1".into()),
                limit: Some(1),
            },
        );
        assert_eq!(
            found.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["/a/2"]
        );
        assert!(more);
        let (found, _) = range_in(
            &map,
            &RangeRequest {
                prefix: "/a/".into(),
                start_after: Some("/".into()),
                limit: None,
            },
        );
        assert_eq!(
            found.len(),
            3,
            "a continuation before the prefix starts at the prefix"
        );
    }
}
