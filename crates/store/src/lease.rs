//! Lease deadlines, kept in memory by every backend (as etcd does, a restart
//! gives every surviving lease a fresh TTL) and an expiry loop.

use crate::LeaseId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Default)]
pub(crate) struct LeaseClock {
    deadlines: Mutex<HashMap<LeaseId, (Duration, Instant)>>,
}

impl LeaseClock {
    pub(crate) fn start(&self, id: LeaseId, ttl: Duration) {
        self.deadlines
            .lock()
            .insert(id, (ttl, Instant::now() + ttl));
    }

    /// Restarts the TTL; None if the lease is unknown (expired or revoked).
    pub(crate) fn refresh(&self, id: LeaseId) -> Option<Duration> {
        let mut map = self.deadlines.lock();
        let entry = map.get_mut(&id)?;
        entry.1 = Instant::now() + entry.0;
        Some(entry.0)
    }

    pub(crate) fn forget(&self, id: LeaseId) {
        self.deadlines.lock().remove(&id);
    }

    pub(crate) fn expired(&self) -> Vec<LeaseId> {
        let now = Instant::now();
        self.deadlines
            .lock()
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Revokes expired leases until the store is dropped. `revoke` gets a weak
/// handle so this loop never keeps a store alive.
pub(crate) fn spawn_expiry<S, F, Fut>(
    store: std::sync::Weak<S>,
    clock: fn(&S) -> &LeaseClock,
    revoke: F,
) where
    S: Send + Sync + 'static,
    F: Fn(std::sync::Arc<S>, LeaseId) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(s) = store.upgrade() else { return };
            for id in clock(&s).expired() {
                revoke(s.clone(), id).await;
            }
        }
    });
}

/// A fresh random lease id (never 0, positive so it reads well in logs).
pub(crate) fn new_id() -> LeaseId {
    (rand::random::<u64>() >> 2) as LeaseId + 1
}
