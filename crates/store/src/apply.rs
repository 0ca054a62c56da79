//! Transaction semantics, written once for every backend so that they agree
//! by construction (the property test checks the backends' storage of it).

use crate::{
    Compare, Event, EventKind, KeyValue, LeaseId, Op, Revision, StoreError, Txn, MAX_TXN_OPS,
};
use std::collections::HashSet;

/// What a backend offers a transaction while it runs inside the backend's
/// own atomic section. Every check that can reject a transaction runs before
/// the first `record`, so a backend never has to undo part of one.
pub(crate) trait TxnState {
    fn read(&mut self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    fn lease_exists(&mut self, id: LeaseId) -> Result<bool, StoreError>;
    /// Applies one change. `seq` orders the changes within a revision;
    /// `replaced` is the mod revision of the key's previous state, if any.
    fn record(
        &mut self,
        seq: usize,
        event: Event,
        replaced: Option<Revision>,
    ) -> Result<(), StoreError>;
}

fn key_of(op: &Op) -> &str {
    match op {
        Op::Put { key, .. } | Op::Delete { key } => key,
    }
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
    if ops.len() > MAX_TXN_OPS {
        return Err(StoreError::InvalidTxn(format!(
            "{} operations, at most {MAX_TXN_OPS}",
            ops.len()
        )));
    }
    // Most transactions carry one operation; only more can repeat a key.
    let mut seen = HashSet::with_capacity(if ops.len() > 1 { ops.len() } else { 0 });
    for op in ops {
        if ops.len() > 1 && !seen.insert(key_of(op)) {
            return Err(StoreError::InvalidTxn(format!(
                "duplicate key {} in one transaction",
                key_of(op)
            )));
        }
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
                let event = Event {
                    kind: EventKind::Put,
                    kv,
                };
                state.record(seq, event, prev.map(|p| p.mod_revision))?;
                seq += 1;
            }
            Op::Delete { key } => {
                if let Some(prev) = state.read(key)? {
                    let kv = KeyValue {
                        key: key.clone(),
                        value: vec![],
                        create_revision: prev.create_revision,
                        mod_revision: revision,
                        version: 0,
                        lease: None,
                    };
                    let event = Event {
                        kind: EventKind::Delete,
                        kv,
                    };
                    state.record(seq, event, Some(prev.mod_revision))?;
                    seq += 1;
                }
            }
        }
    }
    Ok((succeeded, seq > 0))
}
