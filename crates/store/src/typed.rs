//! JSON records on top of the byte store, with the mod revision each was
//! read at so that every update can be a compare-and-swap.

use crate::{Compare, KeyValue, Op, RangeRequest, Store, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A decoded record and the mod revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub mod_revision: i64,
}

pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<Versioned<T>, StoreError> {
    let value = serde_json::from_slice(&kv.value).map_err(|e| StoreError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(Versioned {
        value,
        mod_revision: kv.mod_revision,
    })
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Records are plain data with string keys; serialization cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub async fn get<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<Versioned<T>>, StoreError> {
    store.get(key).await?.as_ref().map(decode).transpose()
}

/// Every record under `prefix`, in key order.
pub async fn list<T: DeserializeOwned>(
    store: &dyn Store,
    prefix: &str,
) -> Result<Vec<(String, Versioned<T>)>, StoreError> {
    let resp = store.range(RangeRequest::prefix(prefix)).await?;
    resp.kvs
        .iter()
        .map(|kv| Ok((kv.key.clone(), decode(kv)?)))
        .collect()
}

/// The keys under `prefix`, without it, in key order.
pub async fn names(store: &dyn Store, prefix: &str) -> Result<Vec<String>, StoreError> {
    let resp = store.range(RangeRequest::prefix(prefix)).await?;
    Ok(resp
        .kvs
        .into_iter()
        .filter_map(|kv| kv.key.strip_prefix(prefix).map(str::to_string))
        .collect())
}

/// Counts keys under `prefix`.
pub async fn count(store: &dyn Store, prefix: &str) -> Result<usize, StoreError> {
    Ok(store.range(RangeRequest::prefix(prefix)).await?.kvs.len())
}

pub fn put<T: Serialize>(key: &str, value: &T) -> Op {
    Op::put(key, encode(value))
}

/// The key still has the revision it was read at (0: still absent).
pub fn unchanged(key: &str, mod_revision: i64) -> Compare {
    Compare::ModRevision {
        key: key.to_string(),
        revision: mod_revision,
    }
}
