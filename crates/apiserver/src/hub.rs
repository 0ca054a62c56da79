//! One store watch shared by every agent connection of this server. Each
//! connection used to hold three watches of its own, and on the SQLite
//! store every watch reads each new revision's history itself: at a
//! thousand hosts every commit cost three thousand reads. The hub watches
//! once and hands each batch of events to every connection, which keeps
//! the ones it cares about.

use berth_store::{Event, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Batches a slow connection may fall behind by before it must start over
/// from a whole desired set.
const BACKLOG: usize = 4096;

/// What a connection receives: the events of one or more revisions, or
/// `None` when the hub's own watch had to start again and anything may
/// have changed.
pub(crate) type Batch = Option<Arc<Vec<Event>>>;

pub(crate) struct Hub {
    tx: broadcast::Sender<Batch>,
    started: std::sync::Once,
    /// True once the hub's watch covers every revision after the store's
    /// revision at the time; subscribers wait for it before reading.
    ready: tokio::sync::watch::Sender<bool>,
    stop: CancellationToken,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            tx: broadcast::channel(BACKLOG).0,
            started: std::sync::Once::new(),
            ready: tokio::sync::watch::channel(false).0,
            stop: CancellationToken::new(),
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Hub {
    /// Every change from now on. Subscribe before reading the state the
    /// changes apply to, so that nothing falls between the two.
    pub(crate) async fn subscribe(&self, store: &Arc<dyn Store>) -> broadcast::Receiver<Batch> {
        let rx = self.tx.subscribe();
        self.started.call_once(|| {
            tokio::spawn(run(
                store.clone(),
                self.tx.clone(),
                self.ready.clone(),
                self.stop.clone(),
            ));
        });
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|r| *r).await;
        rx
    }
}

async fn run(
    store: Arc<dyn Store>,
    tx: broadcast::Sender<Batch>,
    ready: tokio::sync::watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut again = false;
    loop {
        // The revision first, then the watch from the next one: whoever
        // reads state after this point hears of every later change.
        let from = match store.current_revision().await {
            Ok(r) => r + 1,
            Err(e) => {
                tracing::warn!(error = %e, "agent gateway cannot read the store");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        let mut events = store.watch("/berth/v1/", from);
        if again {
            tracing::warn!("agent gateway's watch restarted; every agent gets its whole set again");
            let _ = tx.send(None);
        }
        ready.send_replace(true);
        again = true;
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                b = berth_store::next_batch(&mut events) => b,
            };
            let Some((batch, broken)) = next else {
                break;
            };
            // Nobody listening is fine: connections come and go.
            let _ = tx.send(Some(Arc::new(batch)));
            if broken {
                break;
            }
        }
    }
}
