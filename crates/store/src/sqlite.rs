//! SQLite backend (WAL, `synchronous=FULL`).
//!
//! One writer thread owns the write connection and commits transactions in
//! groups: it takes every request waiting in its queue, applies each inside
//! its own savepoint (so one failing transaction does not undo the others),
//! commits once, and only then answers. One fsync is shared by the whole
//! group, which is what makes thousands of durable writes per second possible
//! on one disk, and no caller hears "ok" before its write is on disk.
//! Rows hold whole records (often kilobytes), so the tables are rowid
//! tables: SQLite advises WITHOUT ROWID only for rows far smaller than a
//! page, and history is appended in rowid order.
//!
//! Like etcd, the current key space is also kept in memory: the writer
//! applies each group's changes to it after the commit succeeded and before
//! answering, and get/range are served from it. SQLite is the durable copy
//! (read back at open) and the source of watch history, which is read
//! through a small pool of read connections that WAL lets run beside the
//! writer.

use crate::apply::{apply, TxnState};
use crate::lease::{self, LeaseClock};
use crate::watch::{self, History};
use crate::*;
use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::{oneshot, watch as tokio_watch};

/// Largest number of requests committed together.
const MAX_GROUP: usize = 1024;
const READERS: usize = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (k, v) VALUES ('revision', 0), ('compacted', 0), ('schema', 1);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT NOT NULL UNIQUE, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER
);
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY, rev INTEGER NOT NULL, seq INTEGER NOT NULL, kind INTEGER NOT NULL,
    key TEXT NOT NULL, value BLOB NOT NULL, create_rev INTEGER NOT NULL, version INTEGER NOT NULL,
    lease INTEGER
);
CREATE INDEX IF NOT EXISTS history_rev ON history (rev);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl_ms INTEGER NOT NULL);
";

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum WriteCmd {
    Txn(Txn, Reply<TxnResult>),
    Compact(Revision, Reply<()>),
    LeaseGrant(LeaseId, Duration, Reply<()>),
    /// Answers whether the lease existed.
    LeaseRevoke(LeaseId, Reply<bool>),
}

/// The committed key space and the revision it is at, updated together.
#[derive(Default)]
struct Cache {
    kvs: std::collections::BTreeMap<String, KeyValue>,
    revision: Revision,
}

struct Inner {
    writer: mpsc::SyncSender<WriteCmd>,
    cache: Arc<parking_lot::RwLock<Cache>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    revisions: tokio_watch::Sender<Revision>,
    leases: LeaseClock,
}

/// The durable embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

fn open_conn(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn meta(conn: &Connection, key: &str) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT v FROM meta WHERE k = ?1", [key], |r| r.get(0))?)
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`. Must be called inside
    /// a tokio runtime. Leases that survive a restart get a fresh TTL.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let rw = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = open_conn(&path, rw).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        conn.execute_batch(SCHEMA)?;
        let revision = meta(&conn, "revision")?;
        let mut kvs = std::collections::BTreeMap::new();
        {
            let mut stmt = conn.prepare(&format!("SELECT {KV_COLS} FROM kv"))?;
            for kv in stmt.query_map([], row_kv)? {
                let kv = kv?;
                kvs.insert(kv.key.clone(), kv);
            }
        }
        let cache = Arc::new(parking_lot::RwLock::new(Cache { kvs, revision }));
        let leases: Vec<(LeaseId, i64)> = conn
            .prepare("SELECT id, ttl_ms FROM leases")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;

        let ro = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let readers = (0..READERS)
            .map(|_| open_conn(&path, ro).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;

        let (tx, rx) = mpsc::sync_channel(4 * MAX_GROUP);
        let revisions = tokio_watch::channel(revision).0;
        let inner = Arc::new(Inner {
            writer: tx,
            cache: cache.clone(),
            readers,
            next_reader: AtomicUsize::new(0),
            revisions: revisions.clone(),
            leases: LeaseClock::default(),
        });
        for (id, ttl_ms) in leases {
            inner
                .leases
                .start(id, Duration::from_millis(ttl_ms.max(0) as u64));
        }
        std::thread::Builder::new()
            .name("berth-store-writer".into())
            .spawn(move || {
                Writer {
                    conn,
                    revision,
                    revisions,
                    cache,
                    changes: Group::default(),
                }
                .run(rx)
            })
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        lease::spawn_expiry(
            Arc::downgrade(&inner),
            |i| &i.leases,
            |i, id| async move {
                let store = SqliteStore { inner: i };
                if let Err(e) = store.revoke(id).await {
                    tracing::warn!(lease = id, error = %e, "could not revoke expired lease");
                }
            },
        );
        Ok(SqliteStore { inner })
    }

    async fn send<T>(&self, make: impl FnOnce(Reply<T>) -> WriteCmd) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let writer = self.inner.writer.clone();
        let cmd = make(tx);
        // The queue is bounded; a full queue blocks, so hand it to the blocking pool.
        match writer.try_send(cmd) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(cmd)) => {
                tokio::task::spawn_blocking(move || writer.send(cmd))
                    .await
                    .map_err(|_| StoreError::Closed)?
                    .map_err(|_| StoreError::Closed)?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let i = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            let conn = inner.readers[i].lock();
            // One read transaction so the revision and the rows agree.
            let tx = conn.unchecked_transaction()?;
            let out = f(&tx);
            tx.finish()?;
            out
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    async fn revoke(&self, id: LeaseId) -> Result<bool, StoreError> {
        self.inner.leases.forget(id);
        self.send(|r| WriteCmd::LeaseRevoke(id, r)).await
    }
}

fn row_kv(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: r.get(0)?,
        value: r.get(1)?,
        create_revision: r.get(2)?,
        mod_revision: r.get(3)?,
        version: r.get(4)?,
        lease: r.get(5)?,
    })
}

const KV_COLS: &str = "key, value, create_rev, mod_rev, version, lease";

#[async_trait]
impl History for SqliteStore {
    async fn events_between(
        &self,
        prefix: &str,
        from: Revision,
        to: Revision,
    ) -> Result<Vec<Event>, StoreError> {
        let prefix = prefix.to_string();
        self.read(move |conn| {
            let compacted = meta(conn, "compacted")?;
            if from < compacted {
                return Err(StoreError::Compacted {
                    requested: from,
                    compacted,
                });
            }
            let mut stmt = conn.prepare_cached(
                "SELECT kind, key, value, create_rev, version, lease, rev FROM history \
                     WHERE rev >= ?1 AND rev < ?2 ORDER BY rev, seq",
            )?;
            let rows = stmt.query_map(params![from, to], |r| {
                let kind: i64 = r.get(0)?;
                Ok(Event {
                    kind: if kind == 0 {
                        EventKind::Put
                    } else {
                        EventKind::Delete
                    },
                    kv: KeyValue {
                        key: r.get(1)?,
                        value: r.get(2)?,
                        create_revision: r.get(3)?,
                        version: r.get(4)?,
                        lease: r.get(5)?,
                        mod_revision: r.get(6)?,
                    },
                })
            })?;
            let mut out = vec![];
            for e in rows {
                let e = e?;
                if e.kv.key.starts_with(&prefix) {
                    out.push(e);
                }
            }
            Ok(out)
        })
        .await
    }
}

struct Writer {
    conn: Connection,
    revision: Revision,
    revisions: tokio_watch::Sender<Revision>,
    cache: Arc<parking_lot::RwLock<Cache>>,
    /// Changes of the current group, applied to the cache once it commits.
    changes: Group,
}

/// The changes of the group being committed, and the latest state of each
/// key they touched, so that transactions read their predecessors' writes
/// without going back to SQLite.
#[derive(Default)]
struct Group {
    events: Vec<Event>,
    /// Index in `events` of the last change to each key.
    latest: std::collections::HashMap<String, usize>,
}

impl Group {
    fn push(&mut self, e: Event) {
        self.latest.insert(e.kv.key.clone(), self.events.len());
        self.events.push(e);
    }

    /// The key's state after this group's changes so far, if it changed.
    fn get(&self, key: &str) -> Option<Option<KeyValue>> {
        let e = &self.events[*self.latest.get(key)?];
        Some(match e.kind {
            EventKind::Put => Some(e.kv.clone()),
            EventKind::Delete => None,
        })
    }

    /// Forgets the changes after the first `n` (a rolled-back transaction).
    fn truncate(&mut self, n: usize) {
        if n < self.events.len() {
            self.events.truncate(n);
            self.latest.clear();
            for (i, e) in self.events.iter().enumerate() {
                self.latest.insert(e.kv.key.clone(), i);
            }
        }
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    fn take(&mut self) -> Vec<Event> {
        self.latest.clear();
        std::mem::take(&mut self.events)
    }
}

/// An answer held back until the group's commit succeeded.
enum Pending {
    Txn(Reply<TxnResult>, Result<TxnResult, StoreError>),
    Unit(Reply<()>, Result<(), StoreError>),
    Bool(Reply<bool>, Result<bool, StoreError>),
}

impl Pending {
    fn fail(self, e: &rusqlite::Error) {
        let err = || StoreError::Sqlite(clone_err(e));
        let _ = match self {
            Pending::Txn(r, _) => r.send(Err(err())).map_err(|_| ()),
            Pending::Unit(r, _) => r.send(Err(err())).map_err(|_| ()),
            Pending::Bool(r, _) => r.send(Err(err())).map_err(|_| ()),
        };
    }
    fn answer(self) {
        let _ = match self {
            Pending::Txn(r, v) => r.send(v).map_err(|_| ()),
            Pending::Unit(r, v) => r.send(v).map_err(|_| ()),
            Pending::Bool(r, v) => r.send(v).map_err(|_| ()),
        };
    }
}

fn clone_err(e: &rusqlite::Error) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
        Some(format!("group commit failed: {e}")),
    )
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<WriteCmd>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            self.commit_group(batch);
        }
    }

    fn commit_group(&mut self, batch: Vec<WriteCmd>) {
        let start_revision = self.revision;
        let mut pending = Vec::with_capacity(batch.len());
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "store: cannot begin a write transaction");
            for cmd in batch {
                fail_cmd(cmd, &e);
            }
            return;
        }
        for cmd in batch {
            pending.push(self.apply_one(cmd));
        }
        let result = self
            .conn
            .execute(
                "UPDATE meta SET v = ?1 WHERE k = 'revision'",
                [self.revision],
            )
            .and_then(|_| self.conn.execute_batch("COMMIT"));
        match result {
            Ok(()) => {
                {
                    let mut cache = self.cache.write();
                    for e in self.changes.take() {
                        match e.kind {
                            EventKind::Put => {
                                cache.kvs.insert(e.kv.key.clone(), e.kv);
                            }
                            EventKind::Delete => {
                                cache.kvs.remove(&e.kv.key);
                            }
                        }
                    }
                    cache.revision = self.revision;
                }
                // Publish before answering: a caller that reads the revision
                // right after its write must see at least its own.
                if self.revision != start_revision {
                    self.revisions.send_replace(self.revision);
                }
                for p in pending {
                    p.answer();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store: group commit failed; no write of this group is acknowledged");
                let _ = self.conn.execute_batch("ROLLBACK");
                self.revision = start_revision;
                self.changes.take();
                for p in pending {
                    p.fail(&e);
                }
            }
        }
    }

    /// Runs one request inside a savepoint so its failure undoes only itself.
    fn apply_one(&mut self, cmd: WriteCmd) -> Pending {
        let before = self.revision;
        let changes_before = self.changes.len();
        let sp = self.conn.execute_batch("SAVEPOINT one");
        macro_rules! guarded {
            ($body:expr) => {{
                let out = sp.map_err(StoreError::from).and_then(|_| $body);
                let end = if out.is_ok() { "RELEASE one" } else { "ROLLBACK TO one; RELEASE one" };
                if let Err(e) = self.conn.execute_batch(end) {
                    tracing::error!(error = %e, "store: savepoint end failed");
                }
                if out.is_err() {
                    self.revision = before;
                    self.changes.truncate(changes_before);
                }
                out
            }};
        }
        match cmd {
            WriteCmd::Txn(txn, reply) => {
                let next = self.revision + 1;
                let out = guarded!({
                    let mut st = SqlTxn {
                        conn: &self.conn,
                        revision: next,
                        changes: &mut self.changes,
                        cache: &self.cache,
                    };
                    apply(&mut st, next, &txn)
                });
                let out = out.map(|(succeeded, changed)| {
                    if changed {
                        self.revision = next;
                    }
                    TxnResult {
                        succeeded,
                        revision: self.revision,
                    }
                });
                Pending::Txn(reply, out)
            }
            WriteCmd::Compact(rev, reply) => {
                let current = self.revision;
                let out = guarded!({
                    if rev > current {
                        Err(StoreError::FutureRevision {
                            requested: rev,
                            current,
                        })
                    } else {
                        let compacted = meta(&self.conn, "compacted")?;
                        if rev > compacted {
                            self.conn
                                .execute("DELETE FROM history WHERE rev < ?1", [rev])?;
                            self.conn
                                .execute("UPDATE meta SET v = ?1 WHERE k = 'compacted'", [rev])?;
                        }
                        Ok(())
                    }
                });
                Pending::Unit(reply, out)
            }
            WriteCmd::LeaseGrant(id, ttl, reply) => {
                let out = guarded!({
                    self.conn.execute(
                        "INSERT INTO leases (id, ttl_ms) VALUES (?1, ?2)",
                        params![id, ttl.as_millis() as i64],
                    )?;
                    Ok(())
                });
                Pending::Unit(reply, out)
            }
            WriteCmd::LeaseRevoke(id, reply) => {
                let next = self.revision + 1;
                let out = guarded!({
                    let existed = self
                        .conn
                        .execute("DELETE FROM leases WHERE id = ?1", [id])?
                        > 0;
                    let keys: Vec<String> = self
                        .conn
                        .prepare_cached("SELECT key FROM kv WHERE lease = ?1 ORDER BY key")?
                        .query_map([id], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    let txn = Txn {
                        success: keys.into_iter().map(Op::delete).collect(),
                        ..Default::default()
                    };
                    let mut st = SqlTxn {
                        conn: &self.conn,
                        revision: next,
                        changes: &mut self.changes,
                        cache: &self.cache,
                    };
                    let (_, changed) = apply(&mut st, next, &txn)?;
                    Ok((existed, changed))
                });
                let out = out.map(|(existed, changed)| {
                    if changed {
                        self.revision = next;
                    }
                    existed
                });
                Pending::Bool(reply, out)
            }
        }
    }
}

fn fail_cmd(cmd: WriteCmd, e: &rusqlite::Error) {
    let err = || StoreError::Sqlite(clone_err(e));
    let _ = match cmd {
        WriteCmd::Txn(_, r) => r.send(Err(err())).map_err(|_| ()),
        WriteCmd::Compact(_, r) | WriteCmd::LeaseGrant(_, _, r) => {
            r.send(Err(err())).map_err(|_| ())
        }
        WriteCmd::LeaseRevoke(_, r) => r.send(Err(err())).map_err(|_| ()),
    };
}

struct SqlTxn<'c> {
    conn: &'c Connection,
    revision: Revision,
    changes: &'c mut Group,
    cache: &'c parking_lot::RwLock<Cache>,
}

impl TxnState for SqlTxn<'_> {
    fn read(&mut self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        // The group's own writes first, then the committed key space in
        // memory, which equals what SQLite holds before this group.
        if let Some(state) = self.changes.get(key) {
            return Ok(state);
        }
        Ok(self.cache.read().kvs.get(key).cloned())
    }
    fn write(&mut self, kv: &KeyValue) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO kv (key, value, create_rev, mod_rev, version, lease) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, create_rev = excluded.create_rev, \
                 mod_rev = excluded.mod_rev, version = excluded.version, lease = excluded.lease",
            )?
            .execute(params![kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease])?;
        Ok(())
    }
    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM kv WHERE key = ?1")?
            .execute([key])?;
        Ok(())
    }
    fn lease_exists(&mut self, id: LeaseId) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM leases WHERE id = ?1")?
            .query_row([id], |_| Ok(()))
            .optional()?
            .is_some())
    }
    fn record(&mut self, seq: usize, event: &Event) -> Result<(), StoreError> {
        let kind = match event.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        };
        self.conn
            .prepare_cached(
                "INSERT INTO history (rev, seq, kind, key, value, create_rev, version, lease) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                self.revision,
                seq as i64,
                kind,
                event.kv.key,
                event.kv.value,
                event.kv.create_revision,
                event.kv.version,
                event.kv.lease
            ])?;
        self.changes.push(event.clone());
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.inner.cache.read().kvs.get(key).cloned())
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        let cache = self.inner.cache.read();
        Ok(range_in(&cache.kvs, &req, cache.revision))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        self.send(|r| WriteCmd::Txn(txn, r)).await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(*self.inner.revisions.borrow())
    }

    fn watch(&self, prefix: &str, from: Revision) -> WatchStream {
        watch::stream(
            Arc::new(self.clone()),
            self.inner.revisions.subscribe(),
            prefix.to_string(),
            from,
        )
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.send(|r| WriteCmd::Compact(revision, r)).await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<Lease, StoreError> {
        let id = lease::new_id();
        self.send(|r| WriteCmd::LeaseGrant(id, ttl, r)).await?;
        self.inner.leases.start(id, ttl);
        Ok(Lease { id, ttl })
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<Duration, StoreError> {
        self.inner
            .leases
            .refresh(id)
            .ok_or(StoreError::LeaseNotFound(id))
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<(), StoreError> {
        if self.revoke(id).await? {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound(id))
        }
    }
}
