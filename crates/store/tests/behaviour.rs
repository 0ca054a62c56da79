//! The Store contract, checked against every backend.

use berth_store::*;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

async fn put(s: &dyn Store, k: &str, v: &str) -> TxnResult {
    s.txn(Txn {
        success: vec![Op::put(k, v.as_bytes().to_vec())],
        ..Default::default()
    })
    .await
    .expect("put")
}

async fn contract(s: Arc<dyn Store>) {
    assert_eq!(s.current_revision().await.expect("rev"), 0);
    assert_eq!(
        put(&*s, "/a/1", "x").await,
        TxnResult {
            succeeded: true,
            revision: 1
        }
    );
    put(&*s, "/a/2", "y").await;
    let r = put(&*s, "/a/1", "z").await;
    assert_eq!(r.revision, 3);

    let kv = s.get("/a/1").await.expect("get").expect("present");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 3, 2));
    assert_eq!(kv.value, b"z");
    assert!(s.get("/nope").await.expect("get").is_none());

    // CAS: stale revision fails and runs the failure branch atomically.
    let stale = Txn {
        compares: vec![Compare::ModRevision {
            key: "/a/1".into(),
            revision: 1,
        }],
        success: vec![Op::put("/a/1", b"lost".to_vec())],
        failure: vec![Op::put("/b/conflicts", b"1".to_vec())],
    };
    let r = s.txn(stale).await.expect("txn");
    assert!(!r.succeeded);
    assert_eq!(s.get("/a/1").await.expect("get").expect("kv").value, b"z");
    assert!(s.get("/b/conflicts").await.expect("get").is_some());

    // Create-if-absent via revision 0, and value compares.
    let create = Txn::when(
        vec![Compare::ModRevision {
            key: "/a/3".into(),
            revision: 0,
        }],
        vec![Op::put("/a/3", b"new".to_vec()), Op::delete("/a/2")],
    );
    let r = s.txn(create.clone()).await.expect("txn");
    assert!(r.succeeded);
    assert!(!s.txn(create).await.expect("txn").succeeded);
    assert!(s.get("/a/2").await.expect("get").is_none());
    let by_value = Txn::when(
        vec![Compare::Value {
            key: "/a/3".into(),
            value: b"new".to_vec(),
        }],
        vec![],
    );
    assert!(s.txn(by_value).await.expect("txn").succeeded);

    // A transaction that changes nothing does not advance the revision.
    let before = s.current_revision().await.expect("rev");
    let noop = s
        .txn(Txn {
            success: vec![Op::delete("/missing")],
            ..Default::default()
        })
        .await
        .expect("txn");
    assert_eq!(noop.revision, before);

    // Range with prefix, limit and continuation.
    for i in 0..5 {
        put(&*s, &format!("/r/{i}"), "v").await;
    }
    put(&*s, "/r0", "outside").await;
    let page = s
        .range(RangeRequest {
            prefix: "/r/".into(),
            start_after: None,
            limit: Some(2),
        })
        .await
        .expect("range");
    assert_eq!(
        page.kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["/r/0", "/r/1"]
    );
    assert!(page.more);
    let rest = s
        .range(RangeRequest {
            prefix: "/r/".into(),
            start_after: Some("/r/1".into()),
            limit: Some(10),
        })
        .await
        .expect("range");
    assert_eq!(rest.kvs.len(), 3);
    assert!(!rest.more);
    assert_eq!(rest.revision, s.current_revision().await.expect("rev"));

    // The greatest key under a prefix, never one beside it.
    let last = s.last("/r/").await.expect("last").expect("present");
    assert_eq!(
        (last.key.as_str(), last.value.as_slice()),
        ("/r/4", &b"v"[..])
    );
    assert_eq!(s.last("/r").await.expect("last").expect("kv").key, "/r0");
    assert!(s.last("/none/").await.expect("last").is_none());
}

/// `big_txn`: operations in one transaction the backend accepts (etcd's
/// default limit is 128).
async fn watch_contract(s: Arc<dyn Store>, big_txn: usize) {
    put(&*s, "/w/1", "a").await; // rev 1
    put(&*s, "/other", "b").await; // rev 2
    let mut w = s.watch("/w/", 1);
    let live = s.watch("/w/", 0);
    s.txn(Txn {
        success: vec![Op::put("/w/2", b"c".to_vec()), Op::delete("/w/1")],
        ..Default::default()
    })
    .await
    .expect("txn"); // rev 3

    let e1 = w.next().await.expect("event").expect("ok");
    assert_eq!(
        (e1.kind, e1.kv.key.as_str(), e1.kv.mod_revision),
        (EventKind::Put, "/w/1", 1)
    );
    let e2 = w.next().await.expect("event").expect("ok");
    assert_eq!(
        (e2.kind, e2.kv.key.as_str(), e2.kv.mod_revision),
        (EventKind::Put, "/w/2", 3)
    );
    let e3 = w.next().await.expect("event").expect("ok");
    assert_eq!(
        (e3.kind, e3.kv.key.as_str(), e3.kv.mod_revision),
        (EventKind::Delete, "/w/1", 3)
    );

    let live: Vec<_> = live.take(2).collect().await;
    assert_eq!(live.len(), 2, "a watch from now sees revision 3");

    // Compaction: events before the compact revision are gone.
    s.compact(3).await.expect("compact");
    let mut old = s.watch("/w/", 2);
    match old.next().await {
        Some(Err(StoreError::Compacted {
            requested: 2,
            compacted: 3,
        })) => {}
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(old.next().await.is_none(), "a compacted watch ends");
    let mut ok = s.watch("/w/", 3);
    assert_eq!(
        ok.next().await.expect("event").expect("ok").kv.mod_revision,
        3
    );
    assert!(matches!(
        s.compact(99).await,
        Err(StoreError::FutureRevision { .. })
    ));

    // A revision's events are ready together, however many: a reader
    // that takes what is ready never sees half a transaction.
    let mut whole = s.watch("/many/", 0);
    let ops = (0..big_txn)
        .map(|i| Op::put(format!("/many/{i:04}"), b"x".to_vec()))
        .collect();
    s.txn(Txn {
        success: ops,
        ..Default::default()
    })
    .await
    .expect("big txn");
    let (batch, ended) = berth_store::next_batch(&mut whole).await.expect("a batch");
    assert_eq!((batch.len(), ended), (big_txn, false));
}

/// `ttl`: the shortest the backend keeps (etcd counts whole seconds).
async fn lease_contract(s: Arc<dyn Store>, ttl: Duration) {
    let lease = s.lease_grant(ttl).await.expect("grant");
    s.txn(Txn {
        success: vec![Op::Put {
            key: "/l/alive".into(),
            value: b"1".to_vec(),
            lease: Some(lease.id),
        }],
        ..Default::default()
    })
    .await
    .expect("put with lease");
    assert_eq!(
        s.get("/l/alive").await.expect("get").expect("kv").lease,
        Some(lease.id)
    );
    let bad = s
        .txn(Txn {
            success: vec![Op::Put {
                key: "/l/x".into(),
                value: vec![],
                lease: Some(12345),
            }],
            ..Default::default()
        })
        .await;
    assert!(matches!(bad, Err(StoreError::LeaseNotFound(12345))));
    assert!(
        s.get("/l/x").await.expect("get").is_none(),
        "a rejected txn writes nothing"
    );

    // Keep-alives hold it past its TTL; then it expires and takes its key.
    // Renewed at a quarter of the TTL, so that a test machine stalled for
    // a moment does not let it lapse.
    for _ in 0..8 {
        tokio::time::sleep(ttl / 4).await;
        s.lease_keep_alive(lease.id).await.expect("alive");
    }
    assert!(s.get("/l/alive").await.expect("get").is_some());
    let mut w = s.watch("/l/", 0);
    let gone = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("the lease expires")
        .expect("event")
        .expect("ok");
    assert_eq!(gone.kind, EventKind::Delete);
    assert!(
        s.get("/l/alive").await.expect("get").is_none(),
        "expired lease deletes its keys"
    );
    assert!(matches!(
        s.lease_keep_alive(lease.id).await,
        Err(StoreError::LeaseNotFound(_))
    ));

    let l2 = s.lease_grant(Duration::from_secs(60)).await.expect("grant");
    s.txn(Txn {
        success: vec![Op::Put {
            key: "/l/2".into(),
            value: vec![],
            lease: Some(l2.id),
        }],
        ..Default::default()
    })
    .await
    .expect("put");
    s.lease_revoke(l2.id).await.expect("revoke");
    assert!(s.get("/l/2").await.expect("get").is_none());
    assert!(matches!(
        s.lease_revoke(l2.id).await,
        Err(StoreError::LeaseNotFound(_))
    ));

    // A key put again without its lease, or under another, is no longer
    // the lease's to take.
    let put = |key: &str, lease: Option<i64>| Op::Put {
        key: key.into(),
        value: vec![],
        lease,
    };
    let l3 = s.lease_grant(Duration::from_secs(60)).await.expect("grant");
    let l4 = s.lease_grant(Duration::from_secs(60)).await.expect("grant");
    s.txn(Txn {
        success: ["/l/3a", "/l/3b", "/l/3c", "/l/3d"]
            .into_iter()
            .map(|k| put(k, Some(l3.id)))
            .collect(),
        ..Default::default()
    })
    .await
    .expect("put");
    s.txn(Txn {
        success: vec![
            put("/l/3a", None),
            Op::delete("/l/3b"),
            put("/l/3c", Some(l4.id)),
        ],
        ..Default::default()
    })
    .await
    .expect("put");
    s.lease_revoke(l3.id).await.expect("revoke");
    let alive = |k: &'static str| {
        let s = s.clone();
        async move { s.get(k).await.expect("get").is_some() }
    };
    assert!(alive("/l/3a").await && alive("/l/3c").await);
    assert!(!alive("/l/3b").await && !alive("/l/3d").await);
    s.lease_revoke(l4.id).await.expect("revoke");
    assert!(alive("/l/3a").await && !alive("/l/3c").await);
}

fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SqliteStore::open(dir.path().join("berth.db")).expect("open");
    (dir, Arc::new(s))
}

#[tokio::test]
async fn memstore_contract() {
    contract(Arc::new(MemStore::new())).await;
}
#[tokio::test]
async fn sqlite_contract() {
    let (_d, s) = sqlite();
    contract(s).await;
}
#[tokio::test]
async fn memstore_watch_in_revision_order() {
    watch_contract(Arc::new(MemStore::new()), 600).await;
}
#[tokio::test]
async fn sqlite_watch_in_revision_order() {
    let (_d, s) = sqlite();
    watch_contract(s, 600).await;
}
#[tokio::test]
async fn memstore_leases_expire() {
    lease_contract(Arc::new(MemStore::new()), Duration::from_millis(300)).await;
}
#[tokio::test]
async fn sqlite_leases_expire() {
    let (_d, s) = sqlite();
    lease_contract(s, Duration::from_millis(300)).await;
}

/// A single-member etcd of its own on free ports, killed when dropped.
struct Etcd {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn etcd() -> (Etcd, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("127.0.0.1:{client}");
    let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log");
    let bin = std::env::var("BERTH_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
    let child = std::process::Command::new(&bin)
        .args(["--data-dir", &dir.path().join("data").display().to_string()])
        .args(["--listen-client-urls", &format!("http://{endpoint}")])
        .args(["--advertise-client-urls", &format!("http://{endpoint}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
        ])
        // Short ticks: leases as short as a second (etcd's floor follows them).
        .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
        .args(["--max-txn-ops", "1024"])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {bin} (scripts/setup.sh installs etcd-server): {e}")
        });
    let guard = Etcd {
        child,
        _dir: dir,
        endpoint,
    };
    for _ in 0..200 {
        if let Ok(s) = EtcdStore::connect(&guard.endpoint).await {
            return (guard, Arc::new(s));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("etcd did not start at {}", guard.endpoint);
}

#[tokio::test]
async fn etcd_contract() {
    let (_e, s) = etcd().await;
    contract(s).await;
}
#[tokio::test]
async fn etcd_watch_in_revision_order() {
    let (_e, s) = etcd().await;
    watch_contract(s, 128).await;
}
#[tokio::test]
async fn etcd_leases_expire() {
    let (_e, s) = etcd().await;
    lease_contract(s, Duration::from_secs(1)).await;
}

/// A member that is down is skipped for one that answers; none answering
/// is an error that names etcd.
#[tokio::test]
async fn etcd_fails_over_between_members() {
    let (e, _) = etcd().await;
    let down = format!("127.0.0.1:{}", free_port());
    let s = EtcdStore::connect(&format!("{down},{}", e.endpoint))
        .await
        .expect("one member answers");
    put(&s, "/f/1", "x").await;
    assert_eq!(s.get("/f/1").await.expect("get").expect("kv").value, b"x");
    match EtcdStore::connect(&down).await {
        Err(StoreError::Etcd(m)) => assert!(m.contains("cannot reach etcd"), "{m}"),
        other => panic!("expected an etcd error, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_sqlite_store_open_elsewhere_refuses_a_second_opener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berth.db");
    let first = SqliteStore::open(&path).expect("open");
    match SqliteStore::open(&path) {
        Err(StoreError::Open { reason, .. }) => {
            assert!(
                reason.contains("another process has this store open"),
                "{reason}"
            )
        }
        other => panic!("a second open succeeded: {:?}", other.map(|_| ())),
    }
    drop(first);
    SqliteStore::open(&path).expect("free once the first is closed");
}

#[tokio::test]
async fn sqlite_reopen_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berth.db");
    {
        let s = SqliteStore::open(&path).expect("open");
        for i in 0..50 {
            put(&s, &format!("/k/{i:03}"), &format!("v{i}")).await;
        }
        s.compact(10).await.expect("compact");
    }
    let s = SqliteStore::open(&path).expect("reopen");
    assert_eq!(s.current_revision().await.expect("rev"), 50);
    let all = s.range(RangeRequest::prefix("/k/")).await.expect("range");
    assert_eq!(all.kvs.len(), 50);
    assert_eq!(all.kvs[49].value, b"v49");
    let mut w = s.watch("/k/", 5);
    assert!(matches!(
        w.next().await,
        Some(Err(StoreError::Compacted { compacted: 10, .. }))
    ));
    let mut w = s.watch("/k/", 10);
    assert_eq!(w.next().await.expect("event").expect("ok").kv.key, "/k/009");
    assert_eq!(put(&s, "/k/new", "x").await.revision, 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_cas_never_loses_an_increment() {
    let (_d, s) = sqlite();
    concurrent_cas(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_concurrent_cas_never_loses_an_increment() {
    let (_e, s) = etcd().await;
    concurrent_cas(s).await;
}

/// 16 writers incrementing one counter by compare-and-swap.
async fn concurrent_cas(s: Arc<dyn Store>) {
    let mut tasks = vec![];
    for _ in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                loop {
                    let cur = s.get("/counter").await.expect("get");
                    let (n, rev) = cur.map_or((0, 0), |kv| {
                        (
                            String::from_utf8(kv.value)
                                .expect("utf8")
                                .parse::<i64>()
                                .expect("int"),
                            kv.mod_revision,
                        )
                    });
                    let t = Txn::when(
                        vec![Compare::ModRevision {
                            key: "/counter".into(),
                            revision: rev,
                        }],
                        vec![Op::put("/counter", (n + 1).to_string().into_bytes())],
                    );
                    if s.txn(t).await.expect("txn").succeeded {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let kv = s.get("/counter").await.expect("get").expect("kv");
    assert_eq!(kv.value, b"320");
    assert_eq!(kv.version, 320);
}
