//! One store watch shared by every agent connection of this server, and
//! routed: each connection says which key prefixes it cares about, and the
//! hub hands it only the changes under them. Each connection used to hold
//! three watches of its own (on SQLite every watch reads each new
//! revision's history itself), and then every connection was woken by
//! every batch and looked at each of its events: at a thousand hosts each
//! commit cost a thousand wake-ups, most for nothing.

use berth_store::{Event, EventKind, Store};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Changes a slow connection may fall behind by before it must start over
/// from a whole desired set.
const BACKLOG: usize = 1024;

/// What a subscriber wants of the changes under one of its prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Each key that changed, after the prefix, and whether it was put.
    Entries,
    /// Only that something changed.
    Any,
}

/// What a subscriber receives for one batch of the store's changes.
#[derive(Debug, Default)]
pub(crate) struct Change {
    /// Keys under an `Entries` prefix: (key after the prefix, put).
    pub(crate) entries: Vec<(String, bool)>,
    /// Something under an `Any` prefix changed, or anything may have (the
    /// hub's watch started over, or this subscriber fell behind).
    pub(crate) whole: bool,
    /// The store revision of the batch's last event.
    pub(crate) revision: i64,
}

struct Subscriber {
    tx: mpsc::Sender<Change>,
    /// Set when a change could not be queued; the next one says whole.
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
struct Routes {
    /// Prefix -> the subscribers under it and what each wants.
    by_prefix: HashMap<String, Vec<(u64, Route)>>,
    subscribers: HashMap<u64, Subscriber>,
}

pub(crate) struct Hub {
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU64,
    started: std::sync::Once,
    /// True once the hub's watch covers every revision after the store's
    /// revision at the time; subscribers wait for it before reading.
    ready: tokio::sync::watch::Sender<bool>,
    stop: CancellationToken,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            routes: Arc::default(),
            next_id: AtomicU64::new(0),
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

/// A subscriber's end; dropping it takes its routes out.
pub(crate) struct Subscription {
    rx: mpsc::Receiver<Change>,
    lagged: Arc<AtomicBool>,
    id: u64,
    prefixes: Vec<String>,
    routes: Arc<Mutex<Routes>>,
}

impl Subscription {
    /// The next change, merged with every one already queued behind it;
    /// None when the hub has stopped.
    pub(crate) async fn next(&mut self) -> Option<Change> {
        let mut change = self.rx.recv().await?;
        while let Ok(more) = self.rx.try_recv() {
            change.entries.extend(more.entries);
            change.whole |= more.whole;
            change.revision = change.revision.max(more.revision);
        }
        change.whole |= self.lagged.swap(false, Ordering::AcqRel);
        Some(change)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut routes = self.routes.lock();
        routes.subscribers.remove(&self.id);
        for p in &self.prefixes {
            if let Some(subs) = routes.by_prefix.get_mut(p) {
                subs.retain(|(id, _)| *id != self.id);
                if subs.is_empty() {
                    routes.by_prefix.remove(p);
                }
            }
        }
    }
}

impl Hub {
    /// Every change from now on under `prefixes` (each ending in '/').
    /// Subscribe before reading the state the changes apply to, so that
    /// nothing falls between the two.
    pub(crate) async fn subscribe(
        &self,
        store: &Arc<dyn Store>,
        prefixes: Vec<(String, Route)>,
    ) -> Subscription {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut routes = self.routes.lock();
            routes.subscribers.insert(
                id,
                Subscriber {
                    tx,
                    lagged: lagged.clone(),
                },
            );
            for (p, route) in &prefixes {
                routes
                    .by_prefix
                    .entry(p.clone())
                    .or_default()
                    .push((id, *route));
            }
        }
        self.started.call_once(|| {
            tokio::spawn(run(
                store.clone(),
                self.routes.clone(),
                self.ready.clone(),
                self.stop.clone(),
            ));
        });
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|r| *r).await;
        Subscription {
            rx,
            lagged,
            id,
            prefixes: prefixes.into_iter().map(|(p, _)| p).collect(),
            routes: self.routes.clone(),
        }
    }
}

/// Sorts one batch out to the subscribers whose prefixes its keys fall
/// under, and queues one change for each of them.
fn route(routes: &Routes, batch: &[Event]) {
    let mut out: HashMap<u64, Change> = HashMap::new();
    for ev in batch {
        let key = ev.kv.key.as_str();
        // Every '/' of the key ends a prefix it may be under.
        for (at, _) in key.match_indices('/') {
            let prefix = &key[..=at];
            let Some(subs) = routes.by_prefix.get(prefix) else {
                continue;
            };
            for (id, r) in subs {
                let change = out.entry(*id).or_default();
                change.revision = ev.kv.mod_revision;
                match r {
                    Route::Entries => change
                        .entries
                        .push((key[prefix.len()..].to_string(), ev.kind == EventKind::Put)),
                    Route::Any => change.whole = true,
                }
            }
        }
    }
    for (id, change) in out {
        if let Some(s) = routes.subscribers.get(&id) {
            send(s, change);
        }
    }
}

fn send(s: &Subscriber, change: Change) {
    if s.tx.try_send(change).is_err() {
        s.lagged.store(true, Ordering::Release);
        // Wake it even so: an empty change carries the flag.
        let _ = s.tx.try_send(Change::default());
    }
}

async fn run(
    store: Arc<dyn Store>,
    routes: Arc<Mutex<Routes>>,
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
            let routes = routes.lock();
            for s in routes.subscribers.values() {
                s.lagged.store(true, Ordering::Release);
                let _ = s.tx.try_send(Change::default());
            }
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
            route(&routes.lock(), &batch);
            if broken {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::KeyValue;

    fn ev(key: &str, rev: i64, put: bool) -> Event {
        Event {
            kind: if put {
                EventKind::Put
            } else {
                EventKind::Delete
            },
            kv: KeyValue {
                key: key.into(),
                value: vec![],
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                lease: None,
            },
        }
    }

    fn subscriber(
        routes: &mut Routes,
        id: u64,
        prefixes: &[(&str, Route)],
    ) -> mpsc::Receiver<Change> {
        let (tx, rx) = mpsc::channel(BACKLOG);
        routes.subscribers.insert(
            id,
            Subscriber {
                tx,
                lagged: Arc::default(),
            },
        );
        for (p, r) in prefixes {
            routes
                .by_prefix
                .entry(p.to_string())
                .or_default()
                .push((id, *r));
        }
        rx
    }

    #[test]
    fn each_subscriber_gets_only_what_is_under_its_prefixes() {
        let mut routes = Routes::default();
        let mut a = subscriber(
            &mut routes,
            1,
            &[("/i/a/", Route::Entries), ("/ips/", Route::Any)],
        );
        let mut b = subscriber(
            &mut routes,
            2,
            &[("/i/ab/", Route::Entries), ("/ips/", Route::Any)],
        );
        route(
            &routes,
            &[
                ev("/i/a/t1", 5, true),
                ev("/i/ab/t2", 6, false),
                ev("/other/x", 7, true),
            ],
        );
        let got = a.try_recv().expect("a has a change");
        assert_eq!(
            (got.entries, got.whole, got.revision),
            (vec![("t1".into(), true)], false, 5)
        );
        let got = b.try_recv().expect("b has a change");
        assert_eq!(
            (got.entries, got.whole, got.revision),
            (vec![("t2".into(), false)], false, 6)
        );
        route(&routes, &[ev("/other/y", 8, true)]);
        assert!(
            a.try_recv().is_err() && b.try_recv().is_err(),
            "nobody wakes for keys of nobody"
        );
        route(&routes, &[ev("/ips/s1/10.0.0.2", 9, true)]);
        assert!(a.try_recv().expect("a").whole && b.try_recv().expect("b").whole);
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_told_to_start_over() {
        let mut routes = Routes::default();
        let mut rx = subscriber(&mut routes, 1, &[("/i/a/", Route::Entries)]);
        for n in 0..=BACKLOG as i64 {
            route(&routes, &[ev("/i/a/t", n, true)]);
        }
        assert!(routes.subscribers[&1].lagged.load(Ordering::Acquire));
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, BACKLOG);
    }
}
