//! In-memory backend: the reference every higher test uses, and `memory://`.

use crate::apply::{apply, TxnState};
use crate::lease::{self, LeaseClock};
use crate::watch::{self, History};
use crate::*;
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch as tokio_watch;

#[derive(Default)]
struct State {
    kvs: BTreeMap<String, KeyValue>,
    history: Vec<(Revision, Event)>,
    revision: Revision,
    /// Compact revision: history before it is gone (etcd semantics).
    compacted: Revision,
    leases: HashSet<LeaseId>,
}

struct Inner {
    state: Mutex<State>,
    revisions: tokio_watch::Sender<Revision>,
    leases: LeaseClock,
}

/// The in-memory store. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct MemStore {
    inner: Arc<Inner>,
}

impl MemStore {
    /// Must be called inside a tokio runtime (it starts the lease expiry loop).
    pub fn new() -> Self {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            revisions: tokio_watch::channel(0).0,
            leases: LeaseClock::default(),
        });
        lease::spawn_expiry(
            Arc::downgrade(&inner),
            |i| &i.leases,
            |i, id| async move {
                MemStore { inner: i }.revoke_now(id);
            },
        );
        MemStore { inner }
    }

    fn commit(&self, txn: &Txn) -> Result<TxnResult, StoreError> {
        let mut guard = self.inner.state.lock();
        let state = &mut *guard;
        let next = state.revision + 1;
        let mut scratch = Scratch {
            base: &state.kvs,
            overlay: BTreeMap::new(),
            events: vec![],
            leases: &state.leases,
        };
        let (succeeded, changed) = apply(&mut scratch, next, txn)?;
        let Scratch {
            overlay, events, ..
        } = scratch;
        if changed {
            for (k, v) in overlay {
                match v {
                    Some(kv) => state.kvs.insert(k, kv),
                    None => state.kvs.remove(&k),
                };
            }
            state.history.extend(events.into_iter().map(|e| (next, e)));
            state.revision = next;
            self.inner.revisions.send_replace(next);
        }
        Ok(TxnResult {
            succeeded,
            revision: state.revision,
        })
    }

    fn revoke_now(&self, id: LeaseId) {
        self.inner.leases.forget(id);
        let keys: Vec<String> = {
            let mut state = self.inner.state.lock();
            if !state.leases.remove(&id) {
                return;
            }
            state
                .kvs
                .values()
                .filter(|kv| kv.lease == Some(id))
                .map(|kv| kv.key.clone())
                .collect()
        };
        if !keys.is_empty() {
            let txn = Txn {
                success: keys.into_iter().map(Op::delete).collect(),
                ..Default::default()
            };
            // Deletes without compares cannot fail in memory.
            let _ = self.commit(&txn);
        }
    }
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes go to an overlay so a failed transaction leaves no trace.
struct Scratch<'a> {
    base: &'a BTreeMap<String, KeyValue>,
    overlay: BTreeMap<String, Option<KeyValue>>,
    events: Vec<Event>,
    leases: &'a HashSet<LeaseId>,
}

impl TxnState for Scratch<'_> {
    fn read(&mut self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(match self.overlay.get(key) {
            Some(v) => v.clone(),
            None => self.base.get(key).cloned(),
        })
    }
    fn lease_exists(&mut self, id: LeaseId) -> Result<bool, StoreError> {
        Ok(self.leases.contains(&id))
    }
    fn record(
        &mut self,
        _seq: usize,
        event: Event,
        _replaced: Option<Revision>,
    ) -> Result<(), StoreError> {
        let state = match event.kind {
            EventKind::Put => Some(event.kv.clone()),
            EventKind::Delete => None,
        };
        self.overlay.insert(event.kv.key.clone(), state);
        self.events.push(event);
        Ok(())
    }
}

#[async_trait]
impl History for Inner {
    async fn events_between(
        &self,
        prefix: &str,
        from: Revision,
        to: Revision,
    ) -> Result<Vec<Event>, StoreError> {
        let state = self.state.lock();
        if from < state.compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compacted: state.compacted,
            });
        }
        let start = state.history.partition_point(|(r, _)| *r < from);
        Ok(state.history[start..]
            .iter()
            .take_while(|(r, _)| *r < to)
            .filter(|(_, e)| e.kv.key.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect())
    }
}

#[async_trait]
impl Store for MemStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.inner.state.lock().kvs.get(key).cloned())
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        let state = self.inner.state.lock();
        let (kvs, more) = range_in(&state.kvs, &req);
        Ok(RangeResponse {
            kvs,
            more,
            revision: state.revision,
        })
    }

    async fn last(&self, prefix: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(crate::last_in(&self.inner.state.lock().kvs, prefix))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        self.commit(&txn)
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.state.lock().revision)
    }

    fn watch(&self, prefix: &str, from: Revision) -> WatchStream {
        watch::stream(
            self.inner.clone(),
            self.inner.revisions.subscribe(),
            prefix.to_string(),
            from,
        )
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut state = self.inner.state.lock();
        if revision > state.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: state.revision,
            });
        }
        if revision > state.compacted {
            state.compacted = revision;
            let keep = state.history.partition_point(|(r, _)| *r < revision);
            state.history.drain(..keep);
        }
        Ok(())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<Lease, StoreError> {
        let id = lease::new_id();
        self.inner.state.lock().leases.insert(id);
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
        if !self.inner.state.lock().leases.contains(&id) {
            return Err(StoreError::LeaseNotFound(id));
        }
        self.revoke_now(id);
        Ok(())
    }
}
