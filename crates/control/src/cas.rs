//! Read-modify-write against the store: compare-and-swap, retried.

use crate::Control;
use berth_domain::EcsError;
use berth_store::{StoreError, Txn};
use std::future::Future;

/// How many times a read-modify-write re-reads and retries a
/// compare-and-swap that lost to a concurrent writer before giving up.
const CAS_RETRIES: usize = 32;

/// What one try of a read-modify-write decided.
pub enum Attempt<T> {
    /// Nothing to write (the record is already as wanted): the answer.
    Done(T),
    /// The transaction to commit, and the answer if it applies.
    Write(Txn, T),
}

/// Runs a read-modify-write until its transaction applies. Each try reads
/// again what its transaction compares, so a loser sees the winner's write;
/// after `CAS_RETRIES` lost races the caller gets ECS's UpdateInProgress
/// with `busy`'s message. Generic in its error so that an adapter's
/// attempts may fail with the adapter's own errors.
pub async fn compare_and_swap<T, E, Fut>(
    ctl: &Control,
    busy: impl FnOnce() -> String,
    attempt: impl FnMut() -> Fut,
) -> Result<T, E>
where
    E: From<StoreError> + From<EcsError>,
    Fut: Future<Output = Result<Attempt<T>, E>>,
{
    retry_swap(ctl, attempt)
        .await?
        .ok_or_else(|| EcsError::UpdateInProgress(busy()).into())
}

/// The retry loop of [`compare_and_swap`]; None when every try lost, for
/// callers whose protocol words contention its own way.
pub async fn retry_swap<T, E, Fut>(
    ctl: &Control,
    mut attempt: impl FnMut() -> Fut,
) -> Result<Option<T>, E>
where
    E: From<StoreError>,
    Fut: Future<Output = Result<Attempt<T>, E>>,
{
    for n in 0..CAS_RETRIES {
        match attempt().await? {
            Attempt::Done(answer) => return Ok(Some(answer)),
            Attempt::Write(txn, answer) => {
                if ctl.store.txn(txn).await?.succeeded {
                    return Ok(Some(answer));
                }
            }
        }
        backoff(n).await;
    }
    Ok(None)
}

/// A short random pause before retrying a lost compare-and-swap, so that
/// contenders spread out instead of colliding again.
async fn backoff(attempt: usize) {
    let max = 1u64 << attempt.min(6);
    let ms = rand::random::<u64>() % (max + 1);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}
