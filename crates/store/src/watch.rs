//! Watch streams over a backend's history, shared by every backend.
//!
//! A watcher walks the history in windows of whole revisions, so a revision's
//! events are never split, and sleeps on the backend's revision channel when
//! it has caught up. It never trusts a notification's payload: it re-reads.

use crate::{Event, Revision, StoreError, WatchStream};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::watch;

/// How many revisions one history read covers at most.
const WINDOW: Revision = 1024;

#[async_trait]
pub(crate) trait History: Send + Sync + 'static {
    /// Events under `prefix` with `from <= revision < to`, in order.
    /// Fails with `Compacted` when `from` is at or below the compact revision.
    async fn events_between(
        &self,
        prefix: &str,
        from: Revision,
        to: Revision,
    ) -> Result<Vec<Event>, StoreError>;
}

pub(crate) fn stream(
    history: Arc<dyn History>,
    mut revisions: watch::Receiver<Revision>,
    prefix: String,
    from: Revision,
) -> WatchStream {
    // "From now" is bound when watch() is called, not when the task first
    // runs, or a write made right after the call could be missed.
    let mut next = if from <= 0 {
        *revisions.borrow_and_update() + 1
    } else {
        from
    };
    let s = async_stream(move |tx| async move {
        loop {
            let current = *revisions.borrow_and_update();
            if next > current {
                if revisions.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let to = (next + WINDOW).min(current + 1);
            match history.events_between(&prefix, next, to).await {
                Ok(events) => {
                    // A window goes to the reader whole, so that what it
                    // finds ready holds every event of each revision it
                    // has begun (see `next_batch`).
                    if !events.is_empty() && tx.send(Ok(events)).await.is_err() {
                        return;
                    }
                    next = to;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    Box::pin(s)
}

/// A stream fed by a task, a window of events at a time; the task ends
/// when the stream is dropped.
fn async_stream<F, Fut>(f: F) -> impl futures::Stream<Item = Result<Event, StoreError>> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Vec<Event>, StoreError>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    let ready = std::collections::VecDeque::new();
    futures::stream::unfold((rx, ready), |(mut rx, mut ready)| async move {
        loop {
            if let Some(e) = ready.pop_front() {
                return Some((Ok(e), (rx, ready)));
            }
            match rx.recv().await? {
                Ok(events) => ready.extend(events),
                Err(e) => return Some((Err(e), (rx, ready))),
            }
        }
    })
}
