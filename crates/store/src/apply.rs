//! Transaction semantics, written once for every backend so that they agree
//! by construction (the property test checks the backends' storage of it).

use crate::{Compare, Event, EventKind, KeyValue, LeaseId, Op, Revision, StoreError, Txn};

/// What a backend offers a transaction while it runs inside the backend's
/// own atomic section (a mutex for MemStore, a SQLite savepoint).
pub(crate) trait TxnState {
    fn read(&mut self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    fn write(&mut self, kv: &KeyValue) -> Result<(), StoreError>;
    fn remove(&mut self, key: &str) -> Result<(), StoreError>;
    fn lease_exists(&mut self, id: LeaseId) -> Result<bool, StoreError>;
    /// Appends an event to the history; `seq` orders events within a revision.
    fn record(&mut self, seq: usize, event: &Event) -> Result<(), StoreError>;
}

/// Evaluates and applies `txn` at `revision` (the revision it will have if
/// it writes). Returns (succeeded, changed anything).
pub(crate) fn apply(
    state: &mut impl TxnState,
    revision: Revision,
    txn: &Txn,
) -> Result<(bool, bool), StoreError> {
    let mut succeeded = true;
    for cmp in &txn.compares {
        let holds = match cmp {
            Compare::ModRevision {
                key,
                revision: want,
            } => state.read(key)?.map(|kv| kv.mod_revision).unwrap_or(0) == *want,
            Compare::Value { key, value } => state.read(key)?.is_some_and(|kv| &kv.value == value),
        };
        if !holds {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    for op in ops {
        if let Op::Put {
            lease: Some(id), ..
        } = op
        {
            if !state.lease_exists(*id)? {
                return Err(StoreError::LeaseNotFound(*id));
            }
        }
    }
    let mut seq = 0;
    for op in ops {
        match op {
            Op::Put { key, value, lease } => {
                let prev = state.read(key)?;
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                    mod_revision: revision,
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                    lease: *lease,
                };
                state.write(&kv)?;
                state.record(
                    seq,
                    &Event {
                        kind: EventKind::Put,
                        kv,
                    },
                )?;
                seq += 1;
            }
            Op::Delete { key } => {
                if let Some(prev) = state.read(key)? {
                    state.remove(key)?;
                    let kv = KeyValue {
                        key: key.clone(),
                        value: vec![],
                        create_revision: prev.create_revision,
                        mod_revision: revision,
                        version: 0,
                        lease: None,
                    };
                    state.record(
                        seq,
                        &Event {
                            kind: EventKind::Delete,
                            kv,
                        },
                    )?;
                    seq += 1;
                }
            }
        }
    }
    Ok((succeeded, seq > 0))
}
