//! SQLite backend (WAL, `synchronous=FULL`), kept as an append-only log.
//!
//! Like etcd, the current key space lives in memory: get and range are
//! served from it, and transactions are evaluated against it. The database
//! holds one table, `log`, with one row per change (put or tombstone). Its
//! rowid is `revision * SEQ_SPAN + seq`, so rows are appended in revision
//! order, a watch reads a rowid range, and a commit touches only the tail
//! pages of one b-tree: the smallest write-ahead log SQLite can produce for
//! a durable change. Opening the store replays the log into memory.
//!
//! One writer thread owns the write connection and commits in groups: it
//! takes every request waiting in its queue, applies them in memory, appends
//! their rows, commits once, and only then answers. One fsync is shared by
//! the whole group, and no caller hears "ok" before its write is on disk.
//! Every check that can reject a request runs before its rows are written,
//! so a request never needs undoing on its own; a SQLite failure fails the
//! whole group and nothing of it is acknowledged.
//!
//! The newest events (up to `RECENT_BYTES`) are also kept in memory, in
//! order, for watchers: one at the head reads them there, and only one
//! that has fallen further behind reads the log.
//!
//! Compaction (etcd semantics) moves the compact revision at once; the rows
//! it frees (replaced values and tombstones older than the compact revision)
//! are deleted a few hundred per group, so that it never stalls writers.
//!
//! SQLite's automatic checkpoint would copy the whole WAL into the database
//! inside some unlucky commit. Instead a background thread does the copying
//! and the writer finishes the last few frames between groups, after which
//! SQLite restarts the WAL from its beginning (ADR 0002).

use crate::apply::{apply, TxnState};
use crate::lease::{self, LeaseClock};
use crate::watch::{self, History};
use crate::*;
use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags};
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::{oneshot, watch as tokio_watch};

/// Largest number of requests committed together.
const MAX_GROUP: usize = 1024;
/// Bytes of the newest events kept in memory for watchers.
const RECENT_BYTES: usize = 32 << 20;
const READERS: usize = 4;
/// Row ids leave room for this many changes per revision.
const SEQ_SPAN: i64 = MAX_TXN_OPS as i64;
/// Freed rows deleted per group.
const PURGE_PER_GROUP: usize = 256;
/// New WAL frames (pages) the background thread copies and flushes at a
/// time: small flushes keep the disk free for the commits' own syncs.
const CHECKPOINT_STEP: i32 = 256;
/// WAL size (frames) from which the writer starts the WAL over as soon as
/// the background thread has caught up.
const CHECKPOINT_START: i32 = 4096;
/// Frames left uncopied that the writer is willing to copy itself.
const CHECKPOINT_FINISH: i32 = 64;
/// WAL size at which the writer stops waiting for the background thread.
const CHECKPOINT_FORCE: i32 = 65_536;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (k, v) VALUES ('revision', 0), ('compacted', 0), ('schema', 2);
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    create_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER
);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl_ms INTEGER NOT NULL);
";

/// Schema 1 kept the current key space in a `kv` table beside a `history`
/// table. Its current state becomes the log; its history is compacted away.
const MIGRATE_FROM_1: &str = "
CREATE TABLE log (
    id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    create_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER
);
INSERT INTO log (id, kind, key, value, create_rev, version, lease)
    SELECT mod_rev * {SEQ_SPAN} + row_number() OVER (PARTITION BY mod_rev ORDER BY key) - 1,
           0, key, value, create_rev, version, lease
    FROM kv;
UPDATE meta SET v = (SELECT v FROM meta WHERE k = 'revision') WHERE k = 'compacted';
UPDATE meta SET v = 2 WHERE k = 'schema';
DROP TABLE kv;
DROP TABLE history;
";

const PUT: i64 = 0;
const DELETE: i64 = 1;

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
    /// Shared values, so that a read copies them after letting go of the
    /// lock: a range over 160,000 task records copied them with it held
    /// for half a second, and every commit (which applies its group here)
    /// waited that long.
    kvs: BTreeMap<String, Arc<KeyValue>>,
    revision: Revision,
    /// The keys attached to each lease: revoking one (an agent's
    /// connection when it goes) must not scan the whole key space, or a
    /// thousand hosts dropping at once stall every write for seconds.
    leased: HashMap<LeaseId, HashSet<String>>,
}

impl Cache {
    fn new(kvs: BTreeMap<String, KeyValue>, revision: Revision) -> Cache {
        let mut leased: HashMap<LeaseId, HashSet<String>> = HashMap::new();
        for kv in kvs.values() {
            if let Some(l) = kv.lease {
                leased.entry(l).or_default().insert(kv.key.clone());
            }
        }
        Cache {
            kvs: kvs.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
            revision,
            leased,
        }
    }

    fn apply(&mut self, e: Event) {
        let old = match e.kind {
            EventKind::Put => {
                if let Some(l) = e.kv.lease {
                    self.leased.entry(l).or_default().insert(e.kv.key.clone());
                }
                let new_lease = e.kv.lease;
                self.kvs
                    .insert(e.kv.key.clone(), Arc::new(e.kv))
                    .filter(|old| old.lease != new_lease)
            }
            EventKind::Delete => self.kvs.remove(&e.kv.key),
        };
        if let Some((l, key)) = old.and_then(|o| Some((o.lease?, o.key.clone()))) {
            if let Some(keys) = self.leased.get_mut(&l) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.leased.remove(&l);
                }
            }
        }
    }
}

/// A committed value, copied after the lock is let go.
fn cached(cache: &parking_lot::RwLock<Cache>, key: &str) -> Option<KeyValue> {
    let kv = cache.read().kvs.get(key).cloned();
    kv.map(Arc::unwrap_or_clone)
}

/// The newest committed events, oldest first. Watchers are nearly always
/// at the head of the log: they read here rather than each decoding every
/// new row of the log again on a reader connection.
struct Recent {
    events: std::collections::VecDeque<Event>,
    /// Every event of every revision from this one on is in `events`.
    from: Revision,
    compacted: Revision,
    bytes: usize,
    limit: usize,
}

impl Recent {
    fn push(&mut self, e: Event) {
        self.bytes += event_bytes(&e);
        self.events.push_back(e);
    }

    /// Drops the oldest revisions, whole, until the events fit.
    fn trim(&mut self) {
        while self.bytes > self.limit {
            let Some(rev) = self.events.front().map(|e| e.kv.mod_revision) else {
                break;
            };
            while let Some(e) = self.events.front() {
                if e.kv.mod_revision != rev {
                    break;
                }
                self.bytes -= event_bytes(e);
                self.events.pop_front();
            }
            self.from = rev + 1;
        }
    }

    /// Events under `prefix` with `from <= revision < to`, or None when
    /// memory no longer holds all of them.
    fn between(
        &self,
        prefix: &str,
        from: Revision,
        to: Revision,
    ) -> Option<Result<Vec<Event>, StoreError>> {
        if from < self.from {
            return None;
        }
        if from < self.compacted {
            return Some(Err(StoreError::Compacted {
                requested: from,
                compacted: self.compacted,
            }));
        }
        let start = self.events.partition_point(|e| e.kv.mod_revision < from);
        Some(Ok(self
            .events
            .range(start..)
            .take_while(|e| e.kv.mod_revision < to)
            .filter(|e| e.kv.key.starts_with(prefix))
            .cloned()
            .collect()))
    }
}

fn event_bytes(e: &Event) -> usize {
    e.kv.key.len() + e.kv.value.len() + std::mem::size_of::<Event>()
}

struct Inner {
    writer: mpsc::SyncSender<WriteCmd>,
    cache: Arc<parking_lot::RwLock<Cache>>,
    recent: Arc<parking_lot::RwLock<Recent>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    revisions: tokio_watch::Sender<Revision>,
    leases: LeaseClock,
    /// Held until the store is dropped; see `hold_exclusively`.
    _lock: std::fs::File,
}

/// The durable embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// Locks `<store>.lock` for as long as the store is open. The store's
/// cache and revision counter belong to one process, so a second server
/// on the same file would serve stale reads and lose writes: it must
/// refuse to start instead.
fn hold_exclusively(path: &Path) -> Result<std::fs::File, String> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another process has this store open (it holds {}); a SQLite store belongs to one \
             server: stop that one, or share an etcd store between servers",
            lock_path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(format!("cannot lock {}: {e}", lock_path.display()))
        }
    }
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

fn row_id(revision: Revision, seq: usize) -> i64 {
    revision * SEQ_SPAN + seq as i64
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let old: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'kv'",
        [],
        |r| r.get(0),
    )?;
    if old {
        let sql = MIGRATE_FROM_1.replace("{SEQ_SPAN}", &SEQ_SPAN.to_string());
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {sql} COMMIT;"))?;
        tracing::info!(
            "store: converted schema 1 to the log layout; history before now is compacted"
        );
    }
    Ok(())
}

/// What replaying the log yields: the key space, and the rows it no longer
/// needs once compaction passes them.
struct Replayed {
    kvs: BTreeMap<String, KeyValue>,
    freed: BinaryHeap<Reverse<(Revision, String)>>,
}

fn replay(conn: &Connection) -> Result<Replayed, StoreError> {
    let mut kvs: BTreeMap<String, KeyValue> = BTreeMap::new();
    let mut freed = BinaryHeap::new();
    let mut stmt = conn
        .prepare("SELECT id, kind, key, value, create_rev, version, lease FROM log ORDER BY id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let kind: i64 = r.get(1)?;
        let key: String = r.get(2)?;
        let revision = id / SEQ_SPAN;
        let prev = if kind == PUT {
            let kv = KeyValue {
                key: key.clone(),
                value: r.get(3)?,
                create_revision: r.get(4)?,
                mod_revision: revision,
                version: r.get(5)?,
                lease: r.get(6)?,
            };
            kvs.insert(key.clone(), kv)
        } else {
            freed.push(Reverse((revision, key.clone())));
            kvs.remove(&key)
        };
        if let Some(prev) = prev {
            freed.push(Reverse((prev.mod_revision, key)));
        }
    }
    Ok(Replayed { kvs, freed })
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`. Must be called inside
    /// a tokio runtime. Leases that survive a restart get a fresh TTL.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let open_error = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        let lock = hold_exclusively(&path).map_err(open_error)?;
        let rw = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = open_conn(&path, rw).map_err(|e| open_error(e.to_string()))?;
        migrate(&conn)?;
        conn.execute_batch(SCHEMA)?;
        let revision = meta(&conn, "revision")?;
        let compacted = meta(&conn, "compacted")?;
        let Replayed { kvs, freed } = replay(&conn)?;
        let cache = Arc::new(parking_lot::RwLock::new(Cache::new(kvs, revision)));
        // Older history stays on disk.
        let recent = Arc::new(parking_lot::RwLock::new(Recent {
            events: Default::default(),
            from: revision + 1,
            compacted,
            bytes: 0,
            limit: RECENT_BYTES,
        }));
        let leases: Vec<(LeaseId, i64)> = conn
            .prepare("SELECT id, ttl_ms FROM leases")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;

        let ro = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let readers = (0..READERS)
            .map(|_| open_conn(&path, ro).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let checkpointer = Checkpointer::start(open_conn(&path, rw)?, &path)
            .map_err(|e| open_error(e.to_string()))?;
        // Replaces SQLite's automatic checkpoint, see `Checkpointer`.
        conn.wal_hook(Some(|_, frames| {
            WAL_FRAMES.with(|f| f.set(frames));
            Ok(())
        }));

        let (tx, rx) = mpsc::sync_channel(4 * MAX_GROUP);
        let revisions = tokio_watch::channel(revision).0;
        let inner = Arc::new(Inner {
            writer: tx,
            cache: cache.clone(),
            recent: recent.clone(),
            readers,
            next_reader: AtomicUsize::new(0),
            revisions: revisions.clone(),
            leases: LeaseClock::default(),
            _lock: lock,
        });
        for &(id, ttl_ms) in &leases {
            inner
                .leases
                .start(id, Duration::from_millis(ttl_ms.max(0) as u64));
        }
        let writer = Writer {
            conn,
            revision,
            compacted,
            revisions,
            cache,
            recent,
            leases: leases.iter().map(|(id, _)| *id).collect(),
            freed,
            group: Group::default(),
            checkpointer,
        };
        std::thread::Builder::new()
            .name("berth-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| open_error(e.to_string()))?;
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
            // One read transaction so the compact revision and the rows agree.
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

#[async_trait]
impl History for SqliteStore {
    async fn events_between(
        &self,
        prefix: &str,
        from: Revision,
        to: Revision,
    ) -> Result<Vec<Event>, StoreError> {
        if let Some(events) = self.inner.recent.read().between(prefix, from, to) {
            return events;
        }
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
                "SELECT id, kind, key, value, create_rev, version, lease FROM log \
                 WHERE id >= ?1 AND id < ?2 ORDER BY id",
            )?;
            let mut rows = stmt.query(params![row_id(from, 0), row_id(to, 0)])?;
            let mut out = vec![];
            while let Some(r) = rows.next()? {
                let key: String = r.get(2)?;
                if !key.starts_with(&prefix) {
                    continue;
                }
                let id: i64 = r.get(0)?;
                let kind: i64 = r.get(1)?;
                out.push(Event {
                    kind: if kind == PUT {
                        EventKind::Put
                    } else {
                        EventKind::Delete
                    },
                    kv: KeyValue {
                        key,
                        value: r.get(3)?,
                        create_revision: r.get(4)?,
                        mod_revision: id / SEQ_SPAN,
                        version: r.get(5)?,
                        lease: r.get(6)?,
                    },
                });
            }
            Ok(out)
        })
        .await
    }
}

thread_local! {
    /// Frames in the WAL after the last commit on this thread's connection,
    /// as SQLite's WAL hook reports them; only the writer thread commits.
    static WAL_FRAMES: Cell<i32> = const { Cell::new(0) };
}

/// Keeps the WAL short without stalling commits. SQLite reuses the WAL
/// from its start only when a write begins after every frame has been
/// copied into the database; copying while commits keep appending never
/// gets there on its own. So a background connection copies the WAL into
/// the database a little at a time, trailing the writer, and once the WAL
/// is long enough the writer copies the few frames left, between groups.
/// Flushing each small step (rather than one big sync when the checkpoint
/// completes) is what keeps the commits' own fsyncs from queueing behind
/// tens of megabytes of database writes.
struct Checkpointer {
    ask: mpsc::Sender<()>,
    /// Frames the background round had copied when it finished.
    done: mpsc::Receiver<i32>,
    copying: bool,
    /// Frames of the current WAL already in the database file.
    copied: i32,
}

impl Checkpointer {
    fn start(conn: Connection, path: &Path) -> std::io::Result<Self> {
        // SQLite syncs the database file only when a checkpoint completes,
        // which under load happens in the writer; this handle flushes each
        // step's pages in the background instead.
        let db = std::fs::File::open(path)?;
        let (ask, asked) = mpsc::channel::<()>();
        let (report, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("berth-store-checkpoint".into())
            .spawn(move || {
                while asked.recv().is_ok() {
                    let copied = conn
                        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i32>(2))
                        .unwrap_or_else(|e| {
                            tracing::warn!(error = %e, "store: background checkpoint failed");
                            -1
                        });
                    if let Err(e) = db.sync_data() {
                        tracing::warn!(error = %e, "store: syncing the database file failed");
                    }
                    if report.send(copied).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Checkpointer {
            ask,
            done,
            copying: false,
            copied: 0,
        })
    }

    /// Called by the writer after each commit.
    fn after_commit(&mut self, conn: &Connection) {
        let frames = WAL_FRAMES.with(Cell::get);
        if frames < self.copied {
            // The WAL started over.
            self.copied = 0;
        }
        if self.copying {
            match self.done.try_recv() {
                Ok(copied) => {
                    self.copying = false;
                    self.copied = copied.max(0);
                }
                Err(_) => {
                    if frames >= CHECKPOINT_FORCE {
                        finish_checkpoint(conn);
                    }
                    return;
                }
            }
        }
        let behind = frames - self.copied;
        if frames >= CHECKPOINT_START && behind <= CHECKPOINT_FINISH {
            finish_checkpoint(conn);
            self.copied = 0;
        } else if behind >= CHECKPOINT_STEP || frames >= CHECKPOINT_START {
            self.copying = self.ask.send(()).is_ok();
        }
    }
}

/// Copies what is left of the WAL from the writer's own connection; the next
/// write transaction then starts the WAL over.
fn finish_checkpoint(conn: &Connection) {
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i32>(1)?, r.get::<_, i32>(2)?))
    });
    match result {
        Ok((log, copied)) if log == copied => WAL_FRAMES.with(|f| f.set(0)),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "store: checkpoint failed"),
    }
}

struct Writer {
    conn: Connection,
    revision: Revision,
    compacted: Revision,
    revisions: tokio_watch::Sender<Revision>,
    cache: Arc<parking_lot::RwLock<Cache>>,
    recent: Arc<parking_lot::RwLock<Recent>>,
    leases: HashSet<LeaseId>,
    /// Rows that only history needs: deleted once compaction passes them.
    freed: BinaryHeap<Reverse<(Revision, String)>>,
    /// What the group being committed changes, kept aside until it commits.
    group: Group,
    checkpointer: Checkpointer,
}

/// The changes of the group being committed: the latest state of each key
/// they touched, so that transactions read their predecessors' writes, and
/// everything else the writer's own state takes on if the commit succeeds.
#[derive(Default)]
struct Group {
    events: Vec<Event>,
    /// Index in `events` of the last change to each key.
    latest: HashMap<String, usize>,
    freed: Vec<(Revision, String)>,
    /// Freed rows this group deletes (returned to the heap if it fails).
    purged: Vec<(Revision, String)>,
    granted: HashSet<LeaseId>,
    revoked: HashSet<LeaseId>,
    compacted: Option<Revision>,
}

/// Whether the lease exists as of the group's changes so far.
fn lease_live(committed: &HashSet<LeaseId>, group: &Group, id: LeaseId) -> bool {
    (committed.contains(&id) || group.granted.contains(&id)) && !group.revoked.contains(&id)
}

impl Group {
    fn get(&self, key: &str) -> Option<Option<KeyValue>> {
        let e = &self.events[*self.latest.get(key)?];
        Some(match e.kind {
            EventKind::Put => Some(e.kv.clone()),
            EventKind::Delete => None,
        })
    }
}

/// An answer held back until the group's commit succeeded.
enum Pending {
    Txn(Reply<TxnResult>, Result<TxnResult, StoreError>),
    Unit(Reply<()>, Result<(), StoreError>),
    Bool(Reply<bool>, Result<bool, StoreError>),
}

impl Pending {
    fn sqlite_error(&self) -> Option<&rusqlite::Error> {
        match self {
            Pending::Txn(_, Err(StoreError::Sqlite(e)))
            | Pending::Unit(_, Err(StoreError::Sqlite(e)))
            | Pending::Bool(_, Err(StoreError::Sqlite(e))) => Some(e),
            _ => None,
        }
    }

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
            Pending::Txn(r, out) => r.send(out).map_err(|_| ()),
            Pending::Unit(r, out) => r.send(out).map_err(|_| ()),
            Pending::Bool(r, out) => r.send(out).map_err(|_| ()),
        };
    }
}

fn clone_err(e: &rusqlite::Error) -> rusqlite::Error {
    crate::copy_sqlite(e, "group commit failed: ")
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
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "store: cannot begin a write transaction");
            for cmd in batch {
                fail_cmd(cmd, &e);
            }
            return;
        }
        let mut pending = Vec::with_capacity(batch.len());
        let mut failed = None;
        let mut cmds = batch.into_iter();
        for cmd in cmds.by_ref() {
            let p = self.apply_one(cmd);
            let broken = p.sqlite_error().map(clone_err);
            pending.push(p);
            if broken.is_some() {
                failed = broken;
                break;
            }
        }
        if let Some(e) = &failed {
            for cmd in cmds {
                fail_cmd(cmd, e);
            }
        }
        let result = match failed {
            Some(e) => Err(e),
            None => self.purge().and_then(|()| {
                if self.revision != start_revision {
                    self.conn.execute(
                        "UPDATE meta SET v = ?1 WHERE k = 'revision'",
                        [self.revision],
                    )?;
                }
                self.conn.execute_batch("COMMIT")
            }),
        };
        let group = std::mem::take(&mut self.group);
        match result {
            Ok(()) => {
                if let Some(c) = group.compacted {
                    self.compacted = self.compacted.max(c);
                }
                {
                    let mut recent = self.recent.write();
                    for e in &group.events {
                        recent.push(e.clone());
                    }
                    recent.compacted = self.compacted;
                    recent.trim();
                }
                {
                    let mut cache = self.cache.write();
                    for e in group.events {
                        cache.apply(e);
                    }
                    cache.revision = self.revision;
                }
                // Publish before answering: a caller that reads the revision
                // right after its write must see at least its own.
                if self.revision != start_revision {
                    self.revisions.send_replace(self.revision);
                }
                self.freed.extend(group.freed.into_iter().map(Reverse));
                self.leases.extend(group.granted);
                self.leases.retain(|id| !group.revoked.contains(id));
                for p in pending {
                    p.answer();
                }
                self.checkpointer.after_commit(&self.conn);
            }
            Err(e) => {
                tracing::error!(error = %e, "store: group commit failed; no write of this group is acknowledged");
                let _ = self.conn.execute_batch("ROLLBACK");
                self.revision = start_revision;
                self.freed.extend(group.purged.into_iter().map(Reverse));
                for p in pending {
                    p.fail(&e);
                }
            }
        }
    }

    /// Deletes rows that compaction has passed and no state needs.
    fn purge(&mut self) -> rusqlite::Result<()> {
        let compacted = self.group.compacted.unwrap_or(0).max(self.compacted);
        while self.group.purged.len() < PURGE_PER_GROUP {
            match self.freed.peek() {
                Some(Reverse((rev, _))) if *rev < compacted => {}
                _ => break,
            }
            let Some(Reverse((rev, key))) = self.freed.pop() else {
                break;
            };
            self.conn
                .prepare_cached("DELETE FROM log WHERE id >= ?1 AND id < ?2 AND key = ?3")?
                .execute(params![row_id(rev, 0), row_id(rev + 1, 0), key])?;
            self.group.purged.push((rev, key));
        }
        Ok(())
    }

    /// Applies one request to the group. A rejected request changes nothing;
    /// a SQLite error fails the whole group.
    fn apply_one(&mut self, cmd: WriteCmd) -> Pending {
        match cmd {
            WriteCmd::Txn(txn, reply) => {
                let next = self.revision + 1;
                let out = self.run_txn(next, &txn).map(|(succeeded, changed)| {
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
            WriteCmd::Compact(rev, reply) => Pending::Unit(reply, self.compact(rev)),
            WriteCmd::LeaseGrant(id, ttl, reply) => Pending::Unit(reply, self.grant(id, ttl)),
            WriteCmd::LeaseRevoke(id, reply) => Pending::Bool(reply, self.revoke(id)),
        }
    }

    fn compact(&mut self, rev: Revision) -> Result<(), StoreError> {
        if rev > self.revision {
            return Err(StoreError::FutureRevision {
                requested: rev,
                current: self.revision,
            });
        }
        if rev > self.group.compacted.unwrap_or(0).max(self.compacted) {
            self.conn
                .execute("UPDATE meta SET v = ?1 WHERE k = 'compacted'", [rev])?;
            self.group.compacted = Some(rev);
        }
        Ok(())
    }

    fn grant(&mut self, id: LeaseId, ttl: Duration) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO leases (id, ttl_ms) VALUES (?1, ?2)",
            params![id, ttl.as_millis() as i64],
        )?;
        self.group.revoked.remove(&id);
        self.group.granted.insert(id);
        Ok(())
    }

    fn run_txn(&mut self, next: Revision, txn: &Txn) -> Result<(bool, bool), StoreError> {
        let mut st = SqlTxn {
            conn: &self.conn,
            revision: next,
            group: &mut self.group,
            cache: &self.cache,
            leases: &self.leases,
        };
        apply(&mut st, next, txn)
    }

    /// Deletes the lease and every key attached to it, at one revision.
    fn revoke(&mut self, id: LeaseId) -> Result<bool, StoreError> {
        if !lease_live(&self.leases, &self.group, id) {
            return Ok(false);
        }
        let mut keys: BTreeSet<String> = self
            .cache
            .read()
            .leased
            .get(&id)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default();
        for (key, &i) in &self.group.latest {
            let e = &self.group.events[i];
            if e.kind == EventKind::Put && e.kv.lease == Some(id) {
                keys.insert(key.clone());
            } else {
                keys.remove(key);
            }
        }
        let txn = Txn {
            success: keys.into_iter().map(Op::delete).collect(),
            ..Default::default()
        };
        let next = self.revision + 1;
        let (_, changed) = self.run_txn(next, &txn)?;
        if changed {
            self.revision = next;
        }
        self.conn
            .execute("DELETE FROM leases WHERE id = ?1", [id])?;
        self.group.granted.remove(&id);
        self.group.revoked.insert(id);
        Ok(true)
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
    group: &'c mut Group,
    cache: &'c parking_lot::RwLock<Cache>,
    leases: &'c HashSet<LeaseId>,
}

impl TxnState for SqlTxn<'_> {
    fn read(&mut self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        // The group's own writes first, then the committed key space, which
        // equals what the log holds before this group.
        if let Some(state) = self.group.get(key) {
            return Ok(state);
        }
        Ok(cached(self.cache, key))
    }

    fn lease_exists(&mut self, id: LeaseId) -> Result<bool, StoreError> {
        Ok(lease_live(self.leases, self.group, id))
    }

    fn record(
        &mut self,
        seq: usize,
        event: Event,
        replaced: Option<Revision>,
    ) -> Result<(), StoreError> {
        let kind = match event.kind {
            EventKind::Put => PUT,
            EventKind::Delete => DELETE,
        };
        let kv = &event.kv;
        self.conn
            .prepare_cached(
                "INSERT INTO log (id, kind, key, value, create_rev, version, lease) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                row_id(self.revision, seq),
                kind,
                kv.key,
                kv.value,
                kv.create_revision,
                kv.version,
                kv.lease
            ])?;
        if let Some(rev) = replaced {
            self.group.freed.push((rev, kv.key.clone()));
        }
        if kind == DELETE {
            self.group.freed.push((self.revision, kv.key.clone()));
        }
        self.group
            .latest
            .insert(kv.key.clone(), self.group.events.len());
        self.group.events.push(event);
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(cached(&self.inner.cache, key))
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        let (found, more, revision) = {
            let cache = self.inner.cache.read();
            let (found, more) = range_in(&cache.kvs, &req);
            (found, more, cache.revision)
        };
        Ok(RangeResponse {
            kvs: found.into_iter().map(Arc::unwrap_or_clone).collect(),
            more,
            revision,
        })
    }

    async fn last(&self, prefix: &str) -> Result<Option<KeyValue>, StoreError> {
        let found = crate::last_in(&self.inner.cache.read().kvs, prefix);
        Ok(found.map(Arc::unwrap_or_clone))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, rev: Revision, bytes: usize) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.into(),
                value: vec![0; bytes],
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                lease: None,
            },
        }
    }

    /// Memory gives up old revisions whole, and a read reaching before
    /// what it holds is sent to the log rather than answered short.
    #[test]
    fn recent_events_drop_whole_revisions_and_refuse_what_they_no_longer_hold() {
        let mut r = Recent {
            events: Default::default(),
            from: 1,
            compacted: 0,
            bytes: 0,
            limit: 3000,
        };
        for (key, rev) in [("/a/1", 1), ("/b/1", 1), ("/a/2", 2), ("/a/3", 3)] {
            r.push(event(key, rev, 900));
        }
        r.trim();
        assert_eq!(r.from, 2);
        assert!(r.between("/", 1, 4).is_none());
        let got = r
            .between("/a/", 2, 4)
            .expect("held")
            .expect("not compacted");
        let keys: Vec<&str> = got.iter().map(|e| e.kv.key.as_str()).collect();
        assert_eq!(keys, ["/a/2", "/a/3"]);
        let upto = r
            .between("/a/", 2, 3)
            .expect("held")
            .expect("not compacted");
        assert_eq!(upto.len(), 1);
        r.compacted = 3;
        assert!(matches!(
            r.between("/", 2, 4),
            Some(Err(StoreError::Compacted {
                requested: 2,
                compacted: 3
            }))
        ));
    }

    async fn put(s: &SqliteStore, key: &str, value: &[u8]) -> Revision {
        let txn = Txn {
            success: vec![Op::put(key, value.to_vec())],
            ..Default::default()
        };
        s.txn(txn).await.expect("put").revision
    }

    fn rows(path: &Path) -> i64 {
        let conn = Connection::open(path).expect("open");
        conn.query_row("SELECT count(*) FROM log", [], |r| r.get(0))
            .expect("count")
    }

    #[tokio::test]
    async fn compaction_deletes_rows_no_state_needs_and_reopen_agrees() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.db");
        let s = SqliteStore::open(&path).expect("open");
        for i in 0..1000 {
            put(&s, "/a", format!("a{i}").as_bytes()).await;
        }
        put(&s, "/b", b"b").await;
        let txn = Txn {
            success: vec![Op::delete("/b")],
            ..Default::default()
        };
        let deleted_at = s.txn(txn).await.expect("delete").revision;
        s.compact(deleted_at).await.expect("compact");
        // Freed rows go a few hundred per group, so a few more groups clear them.
        for i in 0..5 {
            put(&s, "/c", format!("c{i}").as_bytes()).await;
        }
        // /a's last put, /b's tombstone (at the compact revision, still
        // history) and the five puts of /c after it.
        assert_eq!(rows(&path), 7);
        drop(s);
        let s = SqliteStore::open(&path).expect("reopen");
        assert_eq!(s.get("/a").await.expect("get").expect("a").value, b"a999");
        assert!(s.get("/b").await.expect("get").is_none());
        let c = s.get("/c").await.expect("get").expect("c");
        assert_eq!((c.value.as_slice(), c.version), (&b"c4"[..], 5));
        assert_eq!(s.current_revision().await.expect("rev"), deleted_at + 5);
    }

    #[tokio::test]
    async fn schema_1_becomes_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.db");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
                 INSERT INTO meta VALUES ('revision', 5), ('compacted', 0), ('schema', 1);
                 CREATE TABLE kv (key TEXT NOT NULL UNIQUE, value BLOB NOT NULL,
                     create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL,
                     version INTEGER NOT NULL, lease INTEGER);
                 INSERT INTO kv VALUES ('/x', x'31', 1, 4, 2, NULL), ('/y', x'32', 4, 4, 1, NULL),
                     ('/z', x'33', 5, 5, 1, NULL);
                 CREATE TABLE history (id INTEGER PRIMARY KEY, rev INTEGER NOT NULL,
                     seq INTEGER NOT NULL, kind INTEGER NOT NULL, key TEXT NOT NULL,
                     value BLOB NOT NULL, create_rev INTEGER NOT NULL, version INTEGER NOT NULL,
                     lease INTEGER);
                 CREATE TABLE leases (id INTEGER PRIMARY KEY, ttl_ms INTEGER NOT NULL);",
            )
            .expect("schema 1");
        }
        let s = SqliteStore::open(&path).expect("open");
        let x = s.get("/x").await.expect("get").expect("x");
        assert_eq!(
            (x.value, x.create_revision, x.mod_revision, x.version),
            (b"1".to_vec(), 1, 4, 2)
        );
        let all = s.range(RangeRequest::prefix("/")).await.expect("range");
        assert_eq!(all.kvs.len(), 3);
        assert_eq!(s.current_revision().await.expect("rev"), 5);
        use futures::StreamExt;
        let mut w = s.watch("/", 1);
        assert!(matches!(
            w.next().await,
            Some(Err(StoreError::Compacted { compacted: 5, .. }))
        ));
        assert_eq!(put(&s, "/y", b"3").await, 6);
        drop(s);
        let s = SqliteStore::open(&path).expect("reopen");
        let y = s.get("/y").await.expect("get").expect("y");
        assert_eq!((y.value, y.version, y.mod_revision), (b"3".to_vec(), 2, 6));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_sustained_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.db");
        let s = SqliteStore::open(&path).expect("open");
        let value = vec![7u8; 16 * 1024];
        // About eight times the WAL size at which copying starts, from
        // writers that never pause: without starting over the WAL would hold
        // all of it.
        let per_task = 8 * CHECKPOINT_START as usize / 4 / 16 + 1;
        let mut tasks = vec![];
        for t in 0..16 {
            let (s, value) = (s.clone(), value.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..per_task {
                    put(&s, &format!("/w/{t}/{}", i % 50), &value).await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        let wal = std::fs::metadata(dir.path().join("berth.db-wal"))
            .expect("wal")
            .len();
        assert!(
            wal < 4 * CHECKPOINT_START as u64 * 4096,
            "the WAL grew to {wal} bytes"
        );
        drop(s);
        let s = SqliteStore::open(&path).expect("reopen");
        let all = s.range(RangeRequest::prefix("/w/")).await.expect("range");
        assert_eq!(all.kvs.len(), 16 * 50);
        assert!(all.kvs.iter().all(|kv| kv.value == value));
    }
}
