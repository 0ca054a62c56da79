//! Serving the router: connections are accepted on the caller's runtime and
//! each is handed to one of several HTTP threads, each running its own
//! single-threaded runtime.
//!
//! A connection and every request on it stay on one thread. Under tokio's
//! work-stealing runtime, each request that woke an idle worker also woke a
//! second one to look for work to steal; that futex or eventfd round trip
//! cost a one-client ListTaskDefinitions 16% of its throughput on two cores
//! (docs/benchmarks.md, run J). A new connection goes to the thread with the
//! fewest open connections, so load spreads evenly, which letting every
//! thread race to accept did not do.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for in-flight requests before it drops them.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` with `threads` HTTP threads until `shutdown`
/// is cancelled, then stops accepting, lets in-flight requests finish (up
/// to [`DRAIN`]) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    threads: usize,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_tls(listener, app, threads, shutdown, None).await
}

/// [`serve`], speaking TLS with `tls` when given (the handshake runs on the
/// connection's HTTP thread, so a slow client holds up no other).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    threads: usize,
    shutdown: CancellationToken,
    tls: Option<Arc<berth_tls::ServerConfig>>,
) -> io::Result<()> {
    let threads = threads.max(1);
    let tls = tls.map(berth_tls::TlsAcceptor::from);
    let open: Arc<[AtomicUsize]> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
    let mut handoff = Vec::with_capacity(threads);
    let mut finished = Vec::with_capacity(threads);
    for i in 0..threads {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done, finished_rx) = tokio::sync::oneshot::channel();
        let (app, open, stop) = (app.clone(), open.clone(), shutdown.clone());
        let tls = tls.clone();
        std::thread::Builder::new()
            .name(format!("berth-http-{i}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| rt.block_on(connections(rx, app, open, i, stop, tls)));
                let _ = done.send(result);
            })?;
        handoff.push(tx);
        finished.push(finished_rx);
    }

    let mut failed = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted.and_then(|(s, _)| s.into_std()) {
            Ok(stream) => stream,
            // Out of file descriptors, or a connection reset before it was
            // accepted: the listener itself is fine, so back off and go on.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let least = (0..threads)
            .min_by_key(|&i| open[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        // Counted here, not when the thread picks it up, so a burst of
        // connections spreads instead of all going to the same thread.
        open[least].fetch_add(1, Ordering::Relaxed);
        if handoff[least].send(stream).is_err() {
            // The thread is gone (its error is collected below); a server
            // silently serving on fewer threads would be hard to notice.
            failed = Some(io::Error::other(format!("HTTP thread {least} stopped")));
            break;
        }
    }
    drop(listener);
    drop(handoff);
    for rx in finished {
        let result = rx
            .await
            .unwrap_or_else(|_| Err(io::Error::other("HTTP thread panicked")));
        if let Err(e) = result {
            failed.get_or_insert(e);
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Where a connection came from, and whether it is TLS, on each of its
/// requests (aws:SourceIp, aws:SecureTransport).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr {
    pub ip: Option<std::net::IpAddr>,
    pub secure: bool,
}

/// How long a client may take over the TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Serves the connections handed to HTTP thread `me` until the acceptor
/// hangs up, then drains them.
async fn connections(
    mut handed: mpsc::UnboundedReceiver<std::net::TcpStream>,
    app: Router,
    open: Arc<[AtomicUsize]>,
    me: usize,
    stop: CancellationToken,
    tls: Option<berth_tls::TlsAcceptor>,
) -> io::Result<()> {
    let running = TaskTracker::new();
    while let Some(stream) = handed.recv().await {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                open[me].fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot serve an accepted connection");
                continue;
            }
        };
        // Responses are written whole; Nagle would only delay them.
        stream.set_nodelay(true).ok();
        // Policies may ask where a request came from (aws:SourceIp).
        let peer = PeerAddr {
            ip: stream.peer_addr().ok().map(|a| a.ip()),
            secure: tls.is_some(),
        };
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer);
                req
            },
        ));
        let (open, stop, tls) = (open.clone(), stop.clone(), tls.clone());
        running.spawn(async move {
            let ended = match tls {
                None => serve_connection(TokioIo::new(stream), service, &stop).await,
                Some(tls) => match tokio::time::timeout(HANDSHAKE, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), service, &stop).await,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        Ok(())
                    }
                },
            };
            if let Err(e) = ended {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            open[me].fetch_sub(1, Ordering::Relaxed);
        });
    }
    running.close();
    if tokio::time::timeout(DRAIN, running.wait()).await.is_err() {
        tracing::warn!("shutdown: dropped requests still running after {DRAIN:?}");
    }
    Ok(())
}

/// One connection's requests until it closes, or until `stop`: then the
/// request in flight finishes and the connection closes (an idle
/// keep-alive one at once).
async fn serve_connection<I, S>(io: I, service: S, stop: &CancellationToken) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send,
    S::ResBody: 'static + Send,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Upgrades: agents hold a WebSocket to the gateway.
    let conn = http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        ended = conn.as_mut() => ended,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}
