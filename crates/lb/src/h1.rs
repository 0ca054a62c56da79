//! HTTP/1.1 on the common path, without hyper: a request's head is parsed
//! in place, rewritten into one buffer (hop-by-hop headers out, ALB's
//! X-Forwarded-* in) and written to a pooled connection to the target; the
//! response's head is rewritten the same way and its body is copied through
//! in its own framing (length or chunked), so no request or response object
//! is built and no second task or channel is woken per request.
//!
//! Whatever is unusual goes to hyper instead, with the bytes read so far:
//! HTTP/2, HTTP/1.0, Upgrade, Expect, requests that are not origin-form,
//! ambiguous framing, heads that do not parse. hyper answers those as it
//! answered every request before.

use crate::proxy::{self, Answer, Decision, InFlight, Peer};
use crate::table::{Port, Target};
use crate::Shared;
use bytes::{Buf, BytesMut};
use hyper::StatusCode;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A head longer than this goes to hyper, which refuses it.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// ALB's default idle timeout, for a connection whose listener is gone.
const DEFAULT_IDLE: Duration = Duration::from_secs(60);
const POOL_IDLE: Duration = Duration::from_secs(30);
const POOL_PER_TARGET: usize = 1024;

/// Idle keep-alive connections to targets, one pool per worker thread.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>>,
}

impl Pool {
    /// The most recently used idle connection to `addr`.
    fn take(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.lock();
        let conns = idle.get_mut(&addr)?;
        while let Some((conn, since)) = conns.pop() {
            if since.elapsed() < POOL_IDLE {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, addr: SocketAddr, conn: TcpStream) {
        let mut idle = self.idle.lock();
        let conns = idle.entry(addr).or_default();
        if conns.len() < POOL_PER_TARGET {
            conns.push((conn, Instant::now()));
        }
    }

    /// Closes connections idle too long, and forgets targets with none.
    pub fn sweep(&self) {
        self.idle.lock().retain(|_, conns| {
            conns.retain(|(_, since)| since.elapsed() < POOL_IDLE);
            !conns.is_empty()
        });
    }
}

/// How a connection ended here.
pub enum Outcome {
    Done,
    /// For hyper to serve from here on, HTTP/2 or not.
    Fallback {
        io: Rewind,
        h2: bool,
    },
}

/// A client connection with the bytes already read from it put back in
/// front, for hyper to read again.
pub struct Rewind {
    prefix: BytesMut,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if !me.prefix.is_empty() {
            let n = me.prefix.len().min(buf.remaining());
            buf.put_slice(&me.prefix[..n]);
            me.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Where a message body ends.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunks),
    /// At the end of the connection (responses only).
    Close,
}

impl Framing {
    /// How many of `bytes` belong to the body, and whether they end it.
    fn take(&mut self, bytes: &[u8]) -> Result<(usize, bool), BadChunk> {
        match self {
            Framing::Length(left) => {
                let n = (*left).min(bytes.len() as u64);
                *left -= n;
                Ok((n as usize, *left == 0))
            }
            Framing::Chunked(chunks) => chunks.feed(bytes),
            Framing::Close => Ok((bytes.len(), false)),
        }
    }
}

#[derive(Debug, PartialEq)]
struct BadChunk;

/// Follows chunked coding (RFC 9112 7.1) through bytes that are passed on
/// as they are, to find where the body ends.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Chunks {
    #[default]
    Size,
    /// The size so far, from at least one hex digit.
    Digits(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    Trailer,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

impl Chunks {
    fn feed(&mut self, bytes: &[u8]) -> Result<(usize, bool), BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            *self = match *self {
                Chunks::Size => match hex(b) {
                    Some(d) => Chunks::Digits(d),
                    None => return Err(BadChunk),
                },
                Chunks::Digits(n) => match (hex(b), b) {
                    (Some(d), _) if n >> 60 == 0 => Chunks::Digits(n << 4 | d),
                    (Some(_), _) => return Err(BadChunk),
                    (None, b';' | b' ' | b'\t') => Chunks::Extension(n),
                    (None, b'\r') => Chunks::SizeLf(n),
                    (None, _) => return Err(BadChunk),
                },
                Chunks::Extension(n) => match b {
                    b'\r' => Chunks::SizeLf(n),
                    b'\n' => return Err(BadChunk),
                    _ => Chunks::Extension(n),
                },
                Chunks::SizeLf(n) => match (b, n) {
                    (b'\n', 0) => Chunks::Trailer,
                    (b'\n', n) => Chunks::Data(n),
                    _ => return Err(BadChunk),
                },
                Chunks::Data(n) => {
                    // Skip the chunk's data in one step.
                    let skip = n.min((bytes.len() - i) as u64);
                    i += skip as usize;
                    *self = match n - skip {
                        0 => Chunks::DataCr,
                        left => Chunks::Data(left),
                    };
                    continue;
                }
                Chunks::DataCr if b == b'\r' => Chunks::DataLf,
                Chunks::DataLf if b == b'\n' => Chunks::Size,
                Chunks::Trailer => match b {
                    b'\r' => Chunks::EndLf,
                    _ => Chunks::TrailerLine,
                },
                Chunks::TrailerLine => match b {
                    b'\r' => Chunks::TrailerLf,
                    _ => Chunks::TrailerLine,
                },
                Chunks::TrailerLf if b == b'\n' => Chunks::Trailer,
                Chunks::EndLf if b == b'\n' => {
                    *self = Chunks::Done;
                    return Ok((i + 1, true));
                }
                Chunks::Done => return Ok((i, true)),
                _ => return Err(BadChunk),
            };
            i += 1;
        }
        Ok((i, *self == Chunks::Done))
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

/// A request head as far as the fast path needs it.
struct Head {
    /// Bytes of the head.
    len: usize,
    body: Framing,
    /// The client asked to close after this request.
    close: bool,
    /// A HEAD request (its response has no body).
    is_head: bool,
    decision: Decision,
}

enum Parsed {
    Partial,
    Fallback,
    Complete(Head),
}

/// Buffers a connection reuses from request to request.
#[derive(Default)]
struct Scratch {
    /// The request head for the target, then the response head for the client.
    out: Vec<u8>,
    /// Bytes read from the target.
    reply: BytesMut,
}

/// Serves HTTP/1.1 requests on a client connection that arrived on `port`,
/// until it closes or hyper has to take it over.
pub async fn serve(
    mut client: TcpStream,
    port: u16,
    shared: &Shared,
    pool: &Pool,
    peer: &Peer,
) -> Outcome {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut scratch = Scratch::default();
    let idle_of = |cfg: &Option<Arc<Port>>| cfg.as_ref().map_or(DEFAULT_IDLE, |p| p.idle_timeout);
    // HTTP/2 without TLS opens with its preface (`PRI * HTTP/2.0`).
    while buf.len() < 3 && b"PRI".starts_with(&buf) {
        let idle = idle_of(&shared.ports.read().get(&port).cloned());
        if !matches!(
            timeout(idle, read_more(&mut client, &mut buf)).await,
            Ok(Ok(1..))
        ) {
            return Outcome::Done;
        }
    }
    if buf.starts_with(b"PRI") {
        return fallback(client, buf, true);
    }
    loop {
        let cfg = shared.ports.read().get(&port).cloned();
        let idle = idle_of(&cfg);
        let head = loop {
            if !buf.is_empty() {
                match examine(&buf, cfg.as_deref(), peer, &mut scratch.out) {
                    Parsed::Complete(head) => break head,
                    Parsed::Partial if buf.len() < MAX_HEAD => {}
                    Parsed::Partial | Parsed::Fallback => return fallback(client, buf, false),
                }
            }
            if !matches!(
                timeout(idle, read_more(&mut client, &mut buf)).await,
                Ok(Ok(1..))
            ) {
                return Outcome::Done;
            }
        };
        buf.advance(head.len);
        let Head {
            mut body,
            close,
            is_head,
            decision,
            ..
        } = head;
        let keep = match decision {
            Decision::Answer(answer) => {
                // A body wholly read can be skipped; otherwise the
                // connection ends with the answer.
                let skipped = match body {
                    Framing::Length(n) if n as usize <= buf.len() => {
                        buf.advance(n as usize);
                        true
                    }
                    _ => false,
                };
                let close = close || !skipped;
                write_answer(&answer, close, is_head, &mut scratch.out);
                client.write_all(&scratch.out).await.is_ok() && !close
            }
            Decision::Forward(target) => {
                let exchange = Exchange {
                    client: &mut client,
                    buf: &mut buf,
                    scratch: &mut scratch,
                    pool,
                    idle,
                };
                exchange.run(target, &mut body, close, is_head).await
            }
        };
        if !keep {
            return Outcome::Done;
        }
    }
}

fn fallback(client: TcpStream, buf: BytesMut, h2: bool) -> Outcome {
    Outcome::Fallback {
        io: Rewind {
            prefix: buf,
            inner: client,
        },
        h2,
    }
}

/// Reads what is there, making room first (a read into no room would look
/// like the end of the stream).
async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    stream.read_buf(buf).await
}

/// Which side of a copy failed.
enum Side {
    From,
    To,
}

/// Copies a body in `framing` from `from` (starting with what `buf` holds)
/// to `to`, preceded by `pending`, in as few writes as the reads allow.
async fn relay(
    framing: &mut Framing,
    from: &mut TcpStream,
    buf: &mut BytesMut,
    to: &mut TcpStream,
    pending: &mut Vec<u8>,
    idle: Duration,
) -> Result<(), Side> {
    loop {
        let (n, done) = framing.take(buf).map_err(|_| Side::From)?;
        pending.extend_from_slice(&buf[..n]);
        buf.advance(n);
        if !pending.is_empty() {
            to.write_all(pending).await.map_err(|_| Side::To)?;
            pending.clear();
        }
        if done {
            return Ok(());
        }
        match timeout(idle, read_more(from, buf)).await {
            Ok(Ok(0)) if matches!(framing, Framing::Close) => return Ok(()),
            Ok(Ok(1..)) => {}
            _ => return Err(Side::From),
        }
    }
}

/// One request forwarded to a target and its response copied back.
struct Exchange<'a> {
    client: &'a mut TcpStream,
    buf: &'a mut BytesMut,
    scratch: &'a mut Scratch,
    pool: &'a Pool,
    idle: Duration,
}

/// Why a request got no response from its target.
struct Failed(StatusCode);

impl Exchange<'_> {
    /// Whether the client connection stays open.
    async fn run(self, target: Arc<Target>, body: &mut Framing, close: bool, head: bool) -> bool {
        let flight = InFlight::start(target.clone());
        // The body joins the head when it has all arrived, so the request
        // can be sent again if a kept-alive connection turns out closed.
        let whole = match body.take(self.buf) {
            Ok((n, done)) => {
                self.scratch.out.extend_from_slice(&self.buf[..n]);
                self.buf.advance(n);
                done
            }
            Err(BadChunk) => {
                return refuse(
                    self.client,
                    self.scratch,
                    StatusCode::BAD_REQUEST,
                    true,
                    head,
                )
                .await;
            }
        };
        let Exchange {
            client,
            buf,
            scratch,
            pool,
            idle,
        } = self;
        let mut conn = match send(&target, body, whole, client, buf, scratch, pool, idle).await {
            Ok(conn) => conn,
            // A body not wholly read leaves the connection out of step.
            Err(Failed(status)) => {
                return refuse(client, scratch, status, close || !whole, head).await
            }
        };
        let (mut framing, reusable, close) = loop {
            match examine_reply(&scratch.reply, head, close, &mut scratch.out) {
                Reply::Final {
                    len,
                    body,
                    reusable,
                    close,
                } => {
                    flight.answered(status_of(&scratch.reply));
                    scratch.reply.advance(len);
                    break (body, reusable, close);
                }
                Reply::Interim(len) => {
                    if client.write_all(&scratch.out).await.is_err() {
                        return false;
                    }
                    scratch.reply.advance(len);
                    if !scratch.reply.is_empty() {
                        continue;
                    }
                }
                Reply::Partial if scratch.reply.len() < MAX_HEAD => {}
                Reply::Partial | Reply::Invalid => {
                    let close = close || !whole;
                    return refuse(client, scratch, StatusCode::BAD_GATEWAY, close, head).await;
                }
            }
            let status = match timeout(idle, read_more(&mut conn, &mut scratch.reply)).await {
                Ok(Ok(1..)) => continue,
                Ok(_) => StatusCode::BAD_GATEWAY,
                Err(_) => StatusCode::GATEWAY_TIMEOUT,
            };
            // Part of a head may have come: the connection is out of step.
            return refuse(client, scratch, status, true, head).await;
        };
        let copied = relay(
            &mut framing,
            &mut conn,
            &mut scratch.reply,
            client,
            &mut scratch.out,
            idle,
        )
        .await;
        if copied.is_err() {
            scratch.out.clear();
            scratch.reply.clear();
            return false;
        }
        if reusable && scratch.reply.is_empty() {
            pool.put(target.addr, conn);
        }
        scratch.reply.clear();
        !close
    }
}

/// The status code of a response head (`HTTP/1.1 200 OK`), 0 if unreadable.
fn status_of(head: &[u8]) -> u16 {
    head.get(9..12)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// Answers with ALB's error page; whether the client connection stays open.
async fn refuse(
    client: &mut TcpStream,
    scratch: &mut Scratch,
    status: StatusCode,
    close: bool,
    head: bool,
) -> bool {
    write_answer(&proxy::error_page(status), close, head, &mut scratch.out);
    client.write_all(&scratch.out).await.is_ok() && !close
}

/// Sends the request in `scratch.out` (and the rest of its body from the
/// client unless `whole`) and waits for the first bytes of the response.
/// A kept-alive connection the target closed meanwhile is replaced once.
#[allow(clippy::too_many_arguments)]
async fn send(
    target: &Target,
    body: &mut Framing,
    whole: bool,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    scratch: &mut Scratch,
    pool: &Pool,
    idle: Duration,
) -> Result<TcpStream, Failed> {
    let mut pooled = pool.take(target.addr);
    loop {
        let reused = pooled.is_some();
        let mut conn = match pooled.take() {
            Some(conn) => conn,
            None => match timeout(idle, TcpStream::connect(target.addr)).await {
                Ok(Ok(conn)) => {
                    let _ = conn.set_nodelay(true);
                    conn
                }
                Ok(Err(e)) => {
                    tracing::debug!(target = %target.addr, error = %e, "target failed");
                    return Err(Failed(StatusCode::BAD_GATEWAY));
                }
                Err(_) => return Err(Failed(StatusCode::GATEWAY_TIMEOUT)),
            },
        };
        scratch.reply.clear();
        let mut sent = conn.write_all(&scratch.out).await.is_ok();
        if sent && !whole {
            scratch.out.clear();
            match relay(body, client, buf, &mut conn, &mut scratch.out, idle).await {
                Ok(()) => {}
                Err(Side::From) => return Err(Failed(StatusCode::BAD_REQUEST)),
                Err(Side::To) => sent = false,
            }
        }
        if sent {
            match timeout(idle, read_more(&mut conn, &mut scratch.reply)).await {
                Ok(Ok(1..)) => return Ok(conn),
                Ok(_) => {}
                Err(_) => return Err(Failed(StatusCode::GATEWAY_TIMEOUT)),
            }
        }
        if !(reused && whole) {
            tracing::debug!(target = %target.addr, "target closed the connection");
            return Err(Failed(StatusCode::BAD_GATEWAY));
        }
    }
}

fn is(name: &str, lower: &str) -> bool {
    name.eq_ignore_ascii_case(lower)
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

fn content_length(value: &[u8]) -> Option<u64> {
    let v = trim(value);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses a request head in `bytes`, decides what the request gets and,
/// if it goes to a target, writes the head for the target into `out`.
fn examine(bytes: &[u8], port: Option<&Port>, peer: &Peer, out: &mut Vec<u8>) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Fallback,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Fallback;
    };
    if !target.starts_with('/') || method == "CONNECT" {
        return Parsed::Fallback;
    }
    let headers: &[httparse::Header] = req.headers;
    let (mut host, mut length, mut chunked, mut close) = (None, None, false, false);
    for h in headers {
        let name = h.name;
        if is(name, "host") {
            match (host, std::str::from_utf8(h.value)) {
                (None, Ok(v)) => host = Some(v.trim()),
                _ => return Parsed::Fallback,
            }
        } else if is(name, "content-length") {
            match (length, content_length(h.value)) {
                (None, Some(n)) => length = Some(n),
                (Some(l), Some(n)) if l == n => {}
                _ => return Parsed::Fallback,
            }
        } else if is(name, "transfer-encoding") {
            if chunked || !trim(h.value).eq_ignore_ascii_case(b"chunked") {
                return Parsed::Fallback;
            }
            chunked = true;
        } else if is(name, "connection") {
            for token in h.value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    // Upgrades, and headers named as hop-by-hop.
                    return Parsed::Fallback;
                }
            }
        } else if is(name, "upgrade") || is(name, "expect") {
            return Parsed::Fallback;
        }
    }
    let Some(host) = host else {
        return Parsed::Fallback;
    };
    if chunked && length.is_some() {
        return Parsed::Fallback;
    }
    let body = if chunked {
        Framing::Chunked(Chunks::default())
    } else {
        Framing::Length(length.unwrap_or(0))
    };
    let decision = match port {
        None => Decision::Answer(proxy::error_page(StatusCode::SERVICE_UNAVAILABLE)),
        Some(port) => {
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let gather = || {
                headers
                    .iter()
                    .filter_map(|h| {
                        let value = std::str::from_utf8(h.value).ok()?;
                        Some((h.name.to_ascii_lowercase(), value.to_string()))
                    })
                    .collect()
            };
            let decision =
                proxy::decide(port, method, path, query, proxy::strip_port(host), gather);
            if let Decision::Forward(_) = decision {
                rewrite(method, target, headers, port, peer, out);
            }
            decision
        }
    };
    Parsed::Complete(Head {
        len,
        body,
        close,
        is_head: method == "HEAD",
        decision,
    })
}

/// Headers that describe one connection, dropped on the way through.
/// Transfer-Encoding stays: bodies pass through in their own framing.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    ]
    .iter()
    .any(|h| is(name, h))
}

/// The request head for the target: the client's, without hop-by-hop
/// headers, with ALB's X-Forwarded-For (by the port's mode), -Proto, -Port.
fn rewrite(
    method: &str,
    target: &str,
    headers: &[httparse::Header],
    port: &Port,
    peer: &Peer,
    out: &mut Vec<u8>,
) {
    out.clear();
    for part in [method.as_bytes(), b" ", target.as_bytes(), b" HTTP/1.1\r\n"] {
        out.extend_from_slice(part);
    }
    let xff = port.xff.as_str();
    let mut prior: Vec<&[u8]> = Vec::new();
    for h in headers {
        let name = h.name;
        if hop_by_hop(name) || is(name, "x-forwarded-proto") || is(name, "x-forwarded-port") {
            continue;
        }
        if is(name, "x-forwarded-for") && xff != "preserve" {
            if !trim(h.value).is_empty() {
                prior.push(trim(h.value));
            }
            continue;
        }
        for part in [name.as_bytes(), b": ", h.value, b"\r\n"] {
            out.extend_from_slice(part);
        }
    }
    if xff != "preserve" && xff != "remove" {
        out.extend_from_slice(b"X-Forwarded-For: ");
        for p in &prior {
            out.extend_from_slice(p);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(peer.ip.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"X-Forwarded-Proto: http\r\nX-Forwarded-Port: ");
    out.extend_from_slice(port.port_header.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

enum Reply {
    Partial,
    Invalid,
    /// A 1xx response, passed on before the final one.
    Interim(usize),
    Final {
        len: usize,
        body: Framing,
        /// The target's connection can serve another request.
        reusable: bool,
        /// The client's connection ends with this response.
        close: bool,
    },
}

fn push_status(out: &mut Vec<u8>, code: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Parses a response head in `bytes` and writes the head for the client
/// into `out`.
fn examine_reply(bytes: &[u8], head: bool, client_close: bool, out: &mut Vec<u8>) -> Reply {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Reply::Partial,
        Err(_) => return Reply::Invalid,
    };
    let (Some(version), Some(code)) = (resp.version, resp.code) else {
        return Reply::Invalid;
    };
    if code == 101 {
        // Only an upgrade asked for may be agreed to, and those go to hyper.
        return Reply::Invalid;
    }
    out.clear();
    push_status(out, code, resp.reason.unwrap_or_default());
    // HTTP/1.0 closes unless it says keep-alive.
    let mut target_close = version == 0;
    let (mut length, mut chunked, mut coded) = (None, false, false);
    for h in resp.headers.iter() {
        let name = h.name;
        if is(name, "connection") {
            for token in h.value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    target_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    target_close = false;
                }
            }
            continue;
        }
        if hop_by_hop(name) {
            continue;
        }
        if is(name, "content-length") {
            match (length, content_length(h.value)) {
                (None, Some(n)) => length = Some(n),
                (Some(l), Some(n)) if l == n => {}
                _ => return Reply::Invalid,
            }
        } else if is(name, "transfer-encoding") {
            coded = true;
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| trim(last).eq_ignore_ascii_case(b"chunked"));
        }
        for part in [name.as_bytes(), b": ", h.value, b"\r\n"] {
            out.extend_from_slice(part);
        }
    }
    if coded && length.is_some() {
        // Framed two ways: which one the client would follow is unknowable.
        return Reply::Invalid;
    }
    if (100..200).contains(&code) {
        out.extend_from_slice(b"\r\n");
        return Reply::Interim(len);
    }
    let body = if head || code == 204 || code == 304 {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(Chunks::default())
    } else if coded || length.is_none() {
        Framing::Close
    } else {
        Framing::Length(length.unwrap_or(0))
    };
    let close = client_close || matches!(body, Framing::Close);
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Reply::Final {
        len,
        reusable: !(target_close || matches!(body, Framing::Close)),
        body,
        close,
    }
}

/// An answer of the load balancer's own, as bytes in `out`.
fn write_answer(answer: &Answer, close: bool, head: bool, out: &mut Vec<u8>) {
    out.clear();
    let status = answer.status;
    push_status(
        out,
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
    );
    if let Some(ct) = &answer.content_type {
        for part in [b"Content-Type: ", ct.as_bytes(), b"\r\n"] {
            out.extend_from_slice(part);
        }
    }
    if let Some(location) = &answer.location {
        for part in [b"Location: ", location.as_bytes(), b"\r\n"] {
            out.extend_from_slice(part);
        }
    }
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let length = answer.body.len().to_string();
    for part in [
        b"Content-Length: ",
        length.as_bytes(),
        b"\r\nDate: ",
        date.as_bytes(),
        b"\r\n",
    ] {
        out.extend_from_slice(part);
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(&answer.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(input: &[&[u8]]) -> Result<Vec<(usize, bool)>, BadChunk> {
        let mut c = Chunks::default();
        input.iter().map(|b| c.feed(b)).collect()
    }

    #[test]
    fn chunked_bodies_end_where_their_last_chunk_does() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - b"GET / HTTP/1.1".len();
        assert_eq!(chunks(&[body]), Ok(vec![(end, true)]));
        // Byte by byte, the same end.
        let mut c = Chunks::default();
        let mut taken = 0;
        for (i, b) in body.iter().enumerate() {
            let (n, done) = c.feed(std::slice::from_ref(b)).expect("valid");
            taken += n;
            if done {
                assert_eq!(i + 1, end);
                break;
            }
        }
        assert_eq!(taken, end);
        // Trailers, and a chunk split across reads.
        assert_eq!(
            chunks(&[b"a\r\n01234", b"56789\r\n0\r\nX-T: 1\r\n", b"\r\n"]),
            Ok(vec![(8, false), (18, false), (2, true)])
        );
        assert_eq!(chunks(&[b"A\r\n"]), Ok(vec![(3, false)]));
    }

    #[test]
    fn broken_chunks_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"4\nWiki",
            b"4\r\nWikiX",
            b"\r\n",
            b"11111111111111111\r\n",
        ] {
            assert_eq!(
                chunks(&[bad]),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn port(xff: &str) -> Port {
        Port {
            port: 8080,
            port_header: hyper::header::HeaderValue::from_static("8080"),
            routes: vec![],
            matches_headers: false,
            groups: HashMap::new(),
            idle_timeout: Duration::from_secs(60),
            xff: xff.into(),
        }
    }

    fn peer() -> Peer {
        Peer::new(SocketAddr::from(([10, 0, 0, 9], 5555)))
    }

    fn rewritten(xff: &str, head: &[u8]) -> String {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(head).expect("parses").is_complete());
        let mut out = vec![];
        let (method, target) = (req.method.expect("method"), req.path.expect("path"));
        rewrite(method, target, req.headers, &port(xff), &peer(), &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn requests_lose_hop_by_hop_headers_and_gain_forwarded_ones() {
        let head = b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            rewritten("append", head),
            "POST /a?b=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 8080\r\n\r\n"
        );
        assert!(rewritten("preserve", head).contains("X-Forwarded-For: 1.2.3.4\r\n"));
        assert!(!rewritten("remove", head).contains("X-Forwarded-For"));
        assert!(rewritten("append", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .contains("\r\nX-Forwarded-For: 10.0.0.9\r\n"));
    }

    fn examined(head: &[u8]) -> Parsed {
        examine(head, None, &peer(), &mut vec![])
    }

    #[test]
    fn unusual_requests_go_to_hyper() {
        for head in [
            &b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"[..],
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close, x-secret\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(examined(head), Parsed::Fallback),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        assert!(matches!(examined(b"GET / HTTP/1.1\r\nHo"), Parsed::Partial));
        let Parsed::Complete(h) = examined(
            b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 7\r\n\r\n",
        ) else {
            panic!("a plain request is the fast path's");
        };
        assert!(h.close && h.is_head && matches!(h.body, Framing::Length(7)));
    }

    fn reply(head: &[u8], head_req: bool) -> (Reply, String) {
        let mut out = vec![];
        let r = examine_reply(head, head_req, false, &mut out);
        (r, String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn responses_keep_their_framing() {
        let (r, out) = reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n5\r\n",
            false,
        );
        assert!(matches!(
            r,
            Reply::Final {
                body: Framing::Chunked(_),
                reusable: true,
                close: false,
                ..
            }
        ));
        assert_eq!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        // Without a length it ends with the connection, which the client
        // is told of.
        let (r, out) = reply(b"HTTP/1.0 200 OK\r\n\r\n", false);
        assert!(matches!(
            r,
            Reply::Final {
                body: Framing::Close,
                reusable: false,
                close: true,
                ..
            }
        ));
        assert!(out.ends_with("Connection: close\r\n\r\n"));
        let (r, _) = reply(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true);
        assert!(matches!(
            r,
            Reply::Final {
                body: Framing::Length(0),
                reusable: true,
                ..
            }
        ));
        let (r, _) = reply(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            false,
        );
        assert!(matches!(
            r,
            Reply::Final {
                body: Framing::Length(2),
                reusable: false,
                close: false,
                ..
            }
        ));
        let (r, out) = reply(b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n", false);
        assert!(matches!(r, Reply::Interim(_)));
        assert_eq!(out, "HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n");
        assert!(matches!(
            reply(b"HTTP/1.1 101 Switching\r\n\r\n", false).0,
            Reply::Invalid
        ));
        assert!(matches!(
            reply(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .0,
            Reply::Invalid
        ));
    }
}
