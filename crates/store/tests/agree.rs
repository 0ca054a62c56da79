//! MemStore and SQLite agree on random operation sequences: same results,
//! same revisions, same history.

use berth_store::*;
use futures::StreamExt;
use proptest::prelude::*;
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Action {
    Put(u8, u8),
    Delete(u8),
    /// Put guarded by the key's mod revision: the current one, or a stale guess.
    Cas(u8, u8, bool),
    Multi(Vec<(u8, Option<u8>)>),
    Get(u8),
    Range(u8, Option<usize>),
    Compact,
    /// Restart the store (SQLite replays its log; memory has nothing to do).
    Reopen,
}

fn key(k: u8) -> String {
    format!("/p/{}/{}", k % 3, k)
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (0..12u8, any::<u8>()).prop_map(|(k, v)| Action::Put(k, v)),
        (0..12u8).prop_map(Action::Delete),
        (0..12u8, any::<u8>(), any::<bool>()).prop_map(|(k, v, fresh)| Action::Cas(k, v, fresh)),
        prop::collection::vec((0..12u8, prop::option::of(any::<u8>())), 1..4)
            .prop_map(Action::Multi),
        (0..12u8).prop_map(Action::Get),
        (0..4u8, prop::option::of(1..5usize)).prop_map(|(p, l)| Action::Range(p, l)),
        Just(Action::Compact),
        Just(Action::Reopen),
    ]
}

async fn run(
    mut s: Arc<dyn Store>,
    // Given the open store, which it closes first (a file belongs to one
    // open store at a time), returns the reopened one.
    reopen: impl Fn(Arc<dyn Store>) -> Arc<dyn Store>,
    actions: &[Action],
) -> (Vec<String>, Vec<Event>) {
    let mut out = vec![];
    for a in actions {
        let line = match a {
            Action::Put(k, v) => format!(
                "{:?}",
                s.txn(Txn {
                    success: vec![Op::put(key(*k), vec![*v])],
                    ..Default::default()
                })
                .await
            ),
            Action::Delete(k) => format!(
                "{:?}",
                s.txn(Txn {
                    success: vec![Op::delete(key(*k))],
                    ..Default::default()
                })
                .await
            ),
            Action::Cas(k, v, fresh) => {
                let rev = match s.get(&key(*k)).await.expect("get") {
                    Some(kv) if *fresh => kv.mod_revision,
                    Some(kv) => kv.mod_revision - 1,
                    None if *fresh => 0,
                    None => 1,
                };
                let t = Txn {
                    compares: vec![Compare::ModRevision {
                        key: key(*k),
                        revision: rev,
                    }],
                    success: vec![Op::put(key(*k), vec![*v])],
                    failure: vec![Op::put("/p/failures", vec![*v])],
                };
                format!("{:?}", s.txn(t).await)
            }
            Action::Multi(ops) => {
                let ops = ops
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => Op::put(key(*k), vec![*v]),
                        None => Op::delete(key(*k)),
                    })
                    .collect();
                format!(
                    "{:?}",
                    s.txn(Txn {
                        success: ops,
                        ..Default::default()
                    })
                    .await
                )
            }
            Action::Get(k) => format!("{:?}", s.get(&key(*k)).await),
            Action::Range(p, limit) => {
                let prefix = if *p == 3 {
                    "/p/".to_string()
                } else {
                    format!("/p/{p}/")
                };
                format!(
                    "{:?}",
                    s.range(RangeRequest {
                        prefix,
                        start_after: None,
                        limit: *limit
                    })
                    .await
                )
            }
            Action::Compact => {
                let rev = s.current_revision().await.expect("rev");
                format!("{:?}", s.compact(rev / 2).await.map_err(|e| e.to_string()))
            }
            Action::Reopen => {
                s = reopen(s);
                format!("{:?}", s.current_revision().await)
            }
        };
        out.push(line);
    }
    // A sentinel write marks the end, so reading history knows where to stop.
    s.txn(Txn {
        success: vec![Op::put("/p/~end", vec![])],
        ..Default::default()
    })
    .await
    .expect("sentinel");
    let mut history = vec![];
    let mut from = 1;
    let mut w = loop {
        let mut w = s.watch("/p/", from);
        match w.next().await {
            Some(Err(StoreError::Compacted { compacted, .. })) => from = compacted,
            Some(Ok(first)) => {
                history.push(first);
                break w;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    while history.last().is_some_and(|e| e.kv.key != "/p/~end") {
        history.push(w.next().await.expect("event").expect("ok"));
    }
    (out, history)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    #[test]
    fn memstore_and_sqlite_agree(actions in prop::collection::vec(action(), 1..40)) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let (mem, sql) = rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("db");
            // A dropped store's background work (lease expiry) may hold it
            // for a moment longer; its file is free once that ends.
            let open = || -> Arc<dyn Store> {
                for _ in 0..500 {
                    match SqliteStore::open(&path) {
                        Ok(s) => return Arc::new(s),
                        Err(StoreError::Open { reason, .. }) if reason.contains("another process") => {
                            std::thread::sleep(std::time::Duration::from_millis(10))
                        }
                        Err(e) => panic!("open: {e}"),
                    }
                }
                panic!("the dropped store never let go of its file")
            };
            let a = run(Arc::new(MemStore::new()), |s| s, &actions).await;
            let b = run(open(), |s| { drop(s); open() }, &actions).await;
            (a, b)
        });
        prop_assert_eq!(mem, sql);
    }
}
