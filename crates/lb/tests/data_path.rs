//! The data path against an in-memory store and real sockets: it binds a
//! listener as soon as its record appears, balances over the registered
//! targets, records their request counts, removes a drained target when
//! its delay has passed, and closes the port when the listener goes.

use berth_domain::elb::{
    attributes, HealthCheck, LbSubnet, Listener, LoadBalancer, Registration, RequestCount,
    TargetGroup,
};
use berth_domain::Scope;
use berth_store::keys::ElbKeys;
use berth_store::{typed, MemStore, Op, Store, Txn};
use berth_wire::elbv2 as w;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn backend(name: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        name,
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn put(store: &dyn Store, key: String, value: &impl serde::Serialize) {
    store
        .txn(Txn::when(vec![], vec![typed::put(&key, value)]))
        .await
        .expect("write");
}

async fn get(port: u16) -> Option<String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .ok()?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/")
        .header("host", "lb")
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = send.send_request(req).await.ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_follow_the_store_and_targets_drain() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let scope = Scope::new("000000000000", "us-east-1");
    let (a, b) = (backend("a").await, backend("b").await);
    let mut attrs = attributes::target_group_defaults();
    attrs.insert(attributes::DEREGISTRATION_DELAY.into(), "1".into());
    let tg = TargetGroup {
        name: "tg".into(),
        id: "tg1".into(),
        protocol: "HTTP".into(),
        protocol_version: "HTTP1".into(),
        port: 80,
        target_type: "ip".into(),
        health: HealthCheck {
            enabled: false,
            ..HealthCheck::default()
        },
        created_at: 0.0,
        tags: vec![],
        attributes: attrs,
    };
    let lb = LoadBalancer {
        name: "web".into(),
        id: "lb1".into(),
        scheme: "internal".into(),
        ip_address_type: "ipv4".into(),
        subnets: vec![LbSubnet {
            id: "subnet-a".into(),
            zone: "a".into(),
        }],
        security_groups: vec![],
        created_at: 0.0,
        tags: vec![],
        attributes: attributes::load_balancer_defaults(),
    };
    let port = free_port();
    let listener = Listener {
        id: "l1".into(),
        lb_name: "web".into(),
        lb_id: "lb1".into(),
        port: i32::from(port),
        protocol: "HTTP".into(),
        default_actions: vec![w::Action {
            r#type: Some("forward".into()),
            target_group_arn: Some(tg.arn(&scope)),
            forward_config: Some(w::ForwardActionConfig {
                target_groups: Some(vec![w::TargetGroupTuple {
                    target_group_arn: Some(tg.arn(&scope)),
                    weight: Some(1),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }],
        default_rule_id: "r0".into(),
        rules: vec![],
        tags: vec![],
    };
    let reg = |port: u16| Registration {
        id: "127.0.0.1".into(),
        port: i32::from(port),
        availability_zone: Some("all".into()),
        registered_at: 0.0,
        deregistered_at: None,
        task: None,
    };
    put(&*store, scope.load_balancer("web"), &lb).await;
    put(&*store, scope.target_group("tg"), &tg).await;
    for p in [a, b] {
        put(
            &*store,
            scope.target("tg1", &Registration::key("127.0.0.1", i32::from(p))),
            &reg(p),
        )
        .await;
    }

    let shutdown = CancellationToken::new();
    let config = berth_lb::LbConfig {
        bind: "127.0.0.1".parse().expect("ip"),
        counts_every: Duration::from_millis(100),
        threads: 2,
    };
    let running = tokio::spawn(berth_lb::run(store.clone(), config, shutdown.clone()));
    // The listener is written after the data path started: it follows.
    put(&*store, scope.listener("lb1", "l1"), &listener).await;
    eventually("the listener to answer", || get(port)).await;

    let mut seen = vec![];
    for _ in 0..10 {
        seen.push(get(port).await.expect("an answer"));
    }
    assert_eq!(seen.iter().filter(|s| *s == "a").count(), 5, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| *s == "b").count(), 5, "{seen:?}");

    let counts = || {
        let store = store.clone();
        let scope = scope.clone();
        async move {
            let list = typed::list::<RequestCount>(&*store, &scope.target_requests_of("tg1"))
                .await
                .expect("read");
            let total: u64 = list.iter().map(|(_, c)| c.value.requests).sum();
            (total >= 11).then_some(list.len())
        }
    };
    assert_eq!(eventually("request counts", counts).await, 2);

    // b is deregistered: no new requests, and its record goes after 1 s.
    let b_key = scope.target("tg1", &Registration::key("127.0.0.1", i32::from(b)));
    let mut draining = reg(b);
    draining.deregistered_at = Some(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64(),
    );
    put(&*store, b_key.clone(), &draining).await;
    eventually("b to get no traffic", async || {
        let mut all_a = true;
        for _ in 0..4 {
            all_a &= get(port).await.as_deref() == Some("a");
        }
        all_a.then_some(())
    })
    .await;
    eventually("b's registration to be removed", async || {
        store
            .get(&b_key)
            .await
            .expect("read")
            .is_none()
            .then_some(())
    })
    .await;

    store
        .txn(Txn::when(
            vec![],
            vec![Op::delete(scope.listener("lb1", "l1"))],
        ))
        .await
        .expect("delete");
    eventually("the port to close", async || {
        get(port).await.is_none().then_some(())
    })
    .await;
    shutdown.cancel();
    running.await.expect("stopped");
}
