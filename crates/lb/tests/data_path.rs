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

async fn bound() -> (tokio::net::TcpListener, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, port)
}

async fn backend(name: &'static str) -> u16 {
    let (listener, port) = bound().await;
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

/// A load balancer with one listener forwarding to one target group of
/// `ip` targets without health checks.
struct Fixture {
    lb: LoadBalancer,
    tg: TargetGroup,
    listener: Listener,
    port: u16,
}

fn reg(port: u16) -> Registration {
    Registration {
        id: "127.0.0.1".into(),
        port: i32::from(port),
        availability_zone: Some("all".into()),
        registered_at: 0.0,
        deregistered_at: None,
        task: None,
    }
}

fn fixture(scope: &Scope) -> Fixture {
    let mut attrs = attributes::target_group_defaults();
    attrs.insert(attributes::DEREGISTRATION_DELAY.into(), "1".into());
    let tg = TargetGroup {
        name: "tg".into(),
        id: "tg1".into(),
        protocol: "HTTP".into(),
        protocol_version: "HTTP1".into(),
        port: 80,
        target_type: "ip".into(),
        vpc_id: "vpc-local".into(),
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
        vpc_id: "vpc-local".into(),
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
            target_group_arn: Some(tg.arn(scope)),
            forward_config: Some(w::ForwardActionConfig {
                target_groups: Some(vec![w::TargetGroupTuple {
                    target_group_arn: Some(tg.arn(scope)),
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
    Fixture {
        lb,
        tg,
        listener,
        port,
    }
}

/// Writes the fixture's records with `targets` registered; the listener
/// too unless `listener` is false.
async fn write(store: &dyn Store, scope: &Scope, f: &Fixture, targets: &[u16], listener: bool) {
    put(store, scope.load_balancer("web"), &f.lb).await;
    put(store, scope.target_group("tg"), &f.tg).await;
    for &p in targets {
        put(
            store,
            scope.target("tg1", &Registration::key("127.0.0.1", i32::from(p))),
            &reg(p),
        )
        .await;
    }
    if listener {
        put(store, scope.listener("lb1", "l1"), &f.listener).await;
    }
}

fn start(store: &Arc<dyn Store>) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let config = berth_lb::LbConfig {
        bind: "127.0.0.1".parse().expect("ip"),
        counts_every: Duration::from_millis(100),
        threads: 2,
    };
    let running = tokio::spawn(berth_lb::run(store.clone(), config, shutdown.clone()));
    (shutdown, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_follow_the_store_and_targets_drain() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let scope = Scope::new("000000000000", "us-east-1");
    let (a, b) = (backend("a").await, backend("b").await);
    let f = fixture(&scope);
    let port = f.port;
    write(&*store, &scope, &f, &[a, b], false).await;
    let (shutdown, running) = start(&store);
    // The listener is written after the data path started: it follows.
    put(&*store, scope.listener("lb1", "l1"), &f.listener).await;
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

/// Echoes the request's body and X-Forwarded-For; `/chunked` answers in
/// chunks of unknown length.
async fn echo() -> u16 {
    use http_body_util::combinators::BoxBody;
    let (listener, port) = bound().await;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let xff = req.headers().get("x-forwarded-for").cloned();
                        let body: BoxBody<Bytes, hyper::Error> = if req.uri().path() == "/chunked" {
                            let frames =
                                ["he", "llo"].map(|s| Ok(hyper::body::Frame::data(Bytes::from(s))));
                            BoxBody::new(http_body_util::StreamBody::new(futures::stream::iter(
                                frames,
                            )))
                        } else {
                            let got = req.into_body().collect().await?.to_bytes();
                            BoxBody::new(Full::new(got).map_err(|never| match never {}))
                        };
                        let mut resp = hyper::Response::new(body);
                        if let Some(xff) = xff {
                            resp.headers_mut().insert("x-xff", xff);
                        }
                        Ok::<_, hyper::Error>(resp)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

/// Answers each connection's first request and closes it without saying
/// so, as a target whose keep-alive timeout just ran out does; `/eof`
/// gets an HTTP/1.0 body that ends with the connection.
async fn one_shot() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (listener, port) = bound().await;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = vec![];
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer: &[u8] = if head.starts_with(b"GET /eof ") {
                    b"HTTP/1.0 200 OK\r\n\r\nuntil-eof"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                };
                let _ = stream.write_all(answer).await;
            });
        }
    });
    port
}

/// Writes `request` to the port and reads until the connection closes.
async fn raw(port: u16, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = vec![];
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the connection to close")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

fn in_order(text: &str, parts: &[&str]) {
    let mut from = 0;
    for part in parts {
        match text[from..].find(part) {
            Some(i) => from += i + part.len(),
            None => panic!("{part:?} not after byte {from} of {text:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_messages_pass_through_in_their_framing() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let (echoing, closing) = (
        Scope::new("000000000000", "us-east-1"),
        Scope::new("111111111111", "us-east-1"),
    );
    let (e, f) = (fixture(&echoing), fixture(&closing));
    write(&*store, &echoing, &e, &[echo().await], true).await;
    write(&*store, &closing, &f, &[one_shot().await], true).await;
    let (shutdown, running) = start(&store);
    eventually("the listeners to answer", async || {
        (get(e.port).await.is_some() && get(f.port).await.is_some()).then_some(())
    })
    .await;

    // Pipelined on one connection: a GET with a prior X-Forwarded-For, a
    // chunked upload, and a response in chunks that closes the connection.
    let out = raw(
        e.port,
        b"GET /one HTTP/1.1\r\nHost: lb\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n\
          GET /chunked HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
    )
    .await;
    in_order(
        &out,
        &[
            "HTTP/1.1 200 OK\r\n",
            "x-xff: 1.2.3.4, 127.0.0.1\r\n",
            "HTTP/1.1 200 OK\r\n",
            "content-length: 7\r\n",
            "abcdefg",
            "HTTP/1.1 200 OK\r\n",
            "transfer-encoding: chunked\r\n",
            "Connection: close\r\n\r\n",
            "2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
        ],
    );
    assert!(out.ends_with("0\r\n\r\n"), "{out:?}");

    // A body over many reads.
    let big = "x".repeat(1 << 20);
    let out = raw(
        e.port,
        format!(
            "PUT /big HTTP/1.1\r\nHost: lb\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        )
        .as_bytes(),
    )
    .await;
    let (_, body) = out.split_once("\r\n\r\n").expect("a head");
    assert_eq!(body.len(), big.len());

    // HTTP/1.0 goes to hyper, which answers it and closes.
    let out = raw(e.port, b"GET /ten HTTP/1.0\r\nHost: lb\r\n\r\n").await;
    assert!(out.contains(" 200 OK\r\n"), "{out:?}");

    // The target closes each connection after one answer: requests that
    // find a pooled connection closed are sent again on a new one.
    let out = raw(
        f.port,
        b"GET / HTTP/1.1\r\nHost: lb\r\n\r\nGET / HTTP/1.1\r\nHost: lb\r\n\r\nGET / HTTP/1.1\r\nHost: lb\r\n\r\n\
          GET /eof HTTP/1.1\r\nHost: lb\r\n\r\n",
    )
    .await;
    in_order(
        &out,
        &[
            "200 OK",
            "\r\n\r\nok",
            "200 OK",
            "\r\n\r\nok",
            "200 OK",
            "\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof",
        ],
    );
    assert!(!out.contains("502"), "{out:?}");
    shutdown.cancel();
    running.await.expect("stopped");
}
