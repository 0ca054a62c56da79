//! The serving loop over real sockets: how connections are spread over the
//! HTTP threads and how shutdown drains them.

use axum::routing::get;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Reports which HTTP thread served the request; `/slow` takes its time.
fn probe() -> axum::Router {
    let who = || async { std::thread::current().name().unwrap_or("?").to_string() };
    axum::Router::new().route("/who", get(who)).route(
        "/slow",
        get(move || async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            who().await
        }),
    )
}

/// One keep-alive HTTP/1.1 GET; returns the status line and the body.
async fn get_on(conn: &mut TcpStream, path: &str) -> (String, String) {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let n = conn.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed mid-response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_string)
            })
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        if body.len() >= length {
            let status = head.lines().next().unwrap_or_default().to_string();
            return (status, body[..length].to_string());
        }
    }
}

async fn start(
    threads: usize,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let server = tokio::spawn(berth_apiserver::serve(
        listener,
        probe(),
        threads,
        stop.clone(),
    ));
    (addr, stop, server)
}

#[tokio::test]
async fn connections_go_to_the_least_busy_thread_and_stay_there() {
    let (addr, stop, server) = start(2).await;
    let mut conns = Vec::new();
    let mut first = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        let (status, who) = get_on(&mut c, "/who").await;
        assert!(status.contains("200"), "{status}");
        first.push(who);
        conns.push(c);
    }
    // Every connection was open when the next arrived, so they alternate.
    assert_eq!(
        first,
        [
            "berth-http-0",
            "berth-http-1",
            "berth-http-0",
            "berth-http-1"
        ]
    );
    for (c, who) in conns.iter_mut().zip(&first) {
        assert_eq!(&get_on(c, "/who").await.1, who, "a connection moved thread");
    }
    // Closing thread 0's connections makes it the least busy again.
    conns.remove(2);
    conns.remove(0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(get_on(&mut c, "/who").await.1, "berth-http-0");
    stop.cancel();
    server.await.expect("join").expect("serve");
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_and_stops_listening() {
    let (addr, stop, server) = start(2).await;
    let mut busy = TcpStream::connect(addr).await.expect("connect");
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    get_on(&mut idle, "/who").await;
    let slow = tokio::spawn(async move { get_on(&mut busy, "/slow").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    let (status, _) = slow.await.expect("slow request");
    assert!(status.contains("200"), "in-flight request lost: {status}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns once drained")
        .expect("join")
        .expect("serve");
    // The idle keep-alive connection was closed, and nothing listens now.
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).await.expect("read"), 0);
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}
