//! The request path: match a listener's rules, then answer, redirect or
//! forward to a target over a pooled keep-alive connection, with ALB's
//! headers and its 502/503/504 answers. It runs for every request, so it
//! allocates as little as it can: headers are gathered only for listeners
//! whose rules look at them, the action is borrowed from the table, and the
//! target's response streams through unboxed.

use crate::table::{Port, Target};
use berth_domain::elb::rules::{redirect_location, RequestView, RouteAction};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::http::uri::{PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Connections to targets, pooled and kept alive; one per worker thread.
pub type Upstream = Client<HttpConnector, Incoming>;

pub fn upstream_client() -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(std::time::Duration::from_secs(60)));
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        // Requests and responses here are small: one copied buffer per
        // write beats a vector of slices.
        .http1_writev(false)
        .build(connector)
}

/// A response body: a target's, streamed while the request counts as in
/// flight on it, or one the load balancer wrote itself.
pub enum Body {
    Target { body: Incoming, _flight: InFlight },
    Own(Full<Bytes>),
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Target { body, .. } => Pin::new(body).poll_frame(cx),
            Body::Own(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Target { body, .. } => body.is_end_stream(),
            Body::Own(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Target { body, .. } => body.size_hint(),
            Body::Own(full) => full.size_hint(),
        }
    }
}

/// An answer the load balancer gives itself.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub location: Option<HeaderValue>,
    pub body: Bytes,
}

impl Answer {
    fn new(status: StatusCode, content_type: Option<&str>, body: impl Into<Bytes>) -> Answer {
        Answer {
            status,
            content_type: content_type.and_then(|c| HeaderValue::from_str(c).ok()),
            location: None,
            body: body.into(),
        }
    }

    fn response(self) -> Response<Body> {
        let mut resp = Response::new(Body::Own(Full::new(self.body)));
        *resp.status_mut() = self.status;
        if let Some(ct) = self.content_type {
            resp.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
        }
        if let Some(location) = self.location {
            resp.headers_mut().insert(hyper::header::LOCATION, location);
        }
        resp
    }
}

/// ALB's own error pages.
pub fn error_page(status: StatusCode) -> Answer {
    let text = format!(
        "<html>\r\n<head><title>{0}</title></head>\r\n<body>\r\n<center><h1>{0}</h1></center>\r\n</body>\r\n</html>\r\n",
        status
    );
    Answer::new(status, Some("text/html"), text)
}

/// Keeps a target's in-flight count while a request is on it, and counts
/// its answer.
pub struct InFlight(Arc<Target>, std::time::Instant);

impl InFlight {
    pub fn start(target: Arc<Target>) -> Self {
        target.requests.fetch_add(1, Ordering::Relaxed);
        target.inflight.fetch_add(1, Ordering::Relaxed);
        InFlight(target, std::time::Instant::now())
    }

    /// The target's response head came with `status`: counted by class,
    /// with the time since the request went.
    pub fn answered(&self, status: u16) {
        let t = &self.0;
        if let Some(c) = (status / 100)
            .checked_sub(2)
            .and_then(|i| t.classes.get(usize::from(i)))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
        t.answered.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(self.1.elapsed().as_micros()).unwrap_or(u64::MAX);
        t.response_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Who a connection is from: its address, and that address as the value
/// X-Forwarded-For gets.
#[derive(Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub ip: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        Peer {
            ip: HeaderValue::from_str(&addr.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            addr,
        }
    }
}

/// The request's host without its port.
fn host_of(req: &Request<Incoming>) -> &str {
    strip_port(
        req.headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or_default(),
    )
}

pub fn strip_port(host: &str) -> &str {
    host.rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

/// What a request gets: an answer from the load balancer, or a target.
pub enum Decision {
    Answer(Answer),
    Forward(Arc<Target>),
}

/// Matches a request against the port's rules, in priority order. The
/// headers are gathered only if a rule looks at them.
pub fn decide(
    port: &Port,
    method: &str,
    path: &str,
    query: &str,
    host: &str,
    headers: impl FnOnce() -> Vec<(String, String)>,
) -> Decision {
    let headers = if port.matches_headers {
        headers()
    } else {
        vec![]
    };
    let view = RequestView {
        method,
        path,
        host,
        headers: &headers,
    };
    let Some(route) = port.routes.iter().find(|r| r.matches(&view)) else {
        return Decision::Answer(error_page(StatusCode::SERVICE_UNAVAILABLE));
    };
    match &route.action {
        RouteAction::Fixed {
            status,
            content_type,
            body,
        } => Decision::Answer(Answer::new(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            content_type.as_deref(),
            body.clone(),
        )),
        RouteAction::Redirect { config, status } => {
            let location = redirect_location(config, "http", host, port.port, path, query);
            let mut answer = Answer::new(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::FOUND),
                None,
                Bytes::new(),
            );
            answer.location = HeaderValue::from_str(&location).ok();
            Decision::Answer(answer)
        }
        RouteAction::Forward(groups) => match pick_group(groups)
            .and_then(|arn| port.groups.get(arn))
            .and_then(|g| g.pick())
        {
            Some(target) => Decision::Forward(target),
            None => Decision::Answer(error_page(StatusCode::SERVICE_UNAVAILABLE)),
        },
    }
}

/// Handles one request that arrived on `port` from `client` over HTTP/2,
/// or over HTTP/1 when [`crate::h1`] hands a connection over.
pub async fn handle(
    port: Option<Arc<Port>>,
    upstream: &Upstream,
    client: &Peer,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let Some(port) = port else {
        // The listener went away while the connection stayed open.
        return error_page(StatusCode::SERVICE_UNAVAILABLE).response();
    };
    let decision = decide(
        &port,
        req.method().as_str(),
        req.uri().path(),
        req.uri().query().unwrap_or_default(),
        host_of(&req),
        || {
            req.headers()
                .iter()
                .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect()
        },
    );
    let target = match decision {
        Decision::Answer(answer) => return answer.response(),
        Decision::Forward(target) => target,
    };
    let flight = InFlight::start(target.clone());
    prepare(&mut req, &port, client, &target);
    match tokio::time::timeout(port.idle_timeout, upstream.request(req)).await {
        Ok(Ok(resp)) => {
            flight.answered(resp.status().as_u16());
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(
                parts,
                Body::Target {
                    body,
                    _flight: flight,
                },
            )
        }
        Ok(Err(e)) => {
            tracing::debug!(target = %target.addr, error = %e, "target failed");
            error_page(StatusCode::BAD_GATEWAY).response()
        }
        Err(_) => error_page(StatusCode::GATEWAY_TIMEOUT).response(),
    }
}

/// A target group by weight (weight 0 never gets traffic).
fn pick_group(groups: &[(String, u32)]) -> Option<&String> {
    if groups.len() == 1 {
        return groups.first().filter(|(_, w)| *w > 0).map(|(a, _)| a);
    }
    let total: u32 = groups.iter().map(|(_, w)| *w).sum();
    if total == 0 {
        return None;
    }
    let mut roll = rand::random::<u32>() % total;
    for (arn, weight) in groups {
        if roll < *weight {
            return Some(arn);
        }
        roll -= weight;
    }
    None
}

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    // Most messages carry none of them; only look further when one is there.
    if headers.contains_key(hyper::header::CONNECTION)
        || headers.contains_key(hyper::header::TRANSFER_ENCODING)
        || headers.contains_key(hyper::header::TE)
        || headers.contains_key(hyper::header::UPGRADE)
        || headers.contains_key("keep-alive")
        || headers.contains_key("proxy-connection")
        || headers.contains_key(hyper::header::TRAILER)
        || headers.contains_key(hyper::header::PROXY_AUTHENTICATE)
        || headers.contains_key(hyper::header::PROXY_AUTHORIZATION)
    {
        for name in HOP_BY_HOP {
            headers.remove(*name);
        }
    }
}

/// Points the request at the target and adds ALB's X-Forwarded-* headers.
fn prepare(req: &mut Request<Incoming>, port: &Port, client: &Peer, target: &Target) {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    // An HTTP/2 request names its host in the URI's authority only.
    if !req.headers().contains_key(HOST) {
        if let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(HOST, v);
        }
    }
    if let Ok(uri) = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(target.authority.clone())
        .path_and_query(path)
        .build()
    {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = hyper::Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    match port.xff.as_str() {
        "remove" => {
            headers.remove(X_FORWARDED_FOR);
        }
        "preserve" => {}
        _ => {
            let value = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(prior) if !prior.is_empty() => {
                    HeaderValue::from_str(&format!("{prior}, {}", client.addr.ip())).ok()
                }
                _ => Some(client.ip.clone()),
            };
            if let Some(v) = value {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    headers.insert(X_FORWARDED_PORT, port.port_header.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_pick_groups() {
        let groups = vec![("a".to_string(), 0), ("b".to_string(), 5)];
        for _ in 0..50 {
            assert_eq!(pick_group(&groups).map(String::as_str), Some("b"));
        }
        assert_eq!(pick_group(&[("a".to_string(), 0)]), None);
        let even = vec![("a".to_string(), 1), ("b".to_string(), 1)];
        let a = (0..1000)
            .filter(|_| pick_group(&even).map(String::as_str) == Some("a"))
            .count();
        assert!((350..650).contains(&a), "{a} of 1000");
    }
}
