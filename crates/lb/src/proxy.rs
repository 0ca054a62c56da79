//! The request path: match a listener's rules, then answer, redirect or
//! forward to a target over a pooled keep-alive connection, with ALB's
//! headers and its 502/503/504 answers.

use crate::table::{Port, Target};
use berth_domain::elb::rules::{redirect_location, RequestView, RouteAction};
use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;
pub type Upstream = Client<HttpConnector, Incoming>;

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

pub fn upstream_client() -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(std::time::Duration::from_secs(60)));
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .build(connector)
}

fn full(status: StatusCode, content_type: Option<&str>, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(c).ok()) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
    }
    resp
}

/// ALB's own error pages.
fn error_page(status: StatusCode) -> Response<Body> {
    let text = format!(
        "<html>\r\n<head><title>{0}</title></head>\r\n<body>\r\n<center><h1>{0}</h1></center>\r\n</body>\r\n</html>\r\n",
        status
    );
    full(status, Some("text/html"), text)
}

/// Keeps a target's in-flight count while a request is on it.
struct InFlight(Arc<Target>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Handles one request that arrived on `port` from `client`.
pub async fn handle(
    port: Option<Arc<Port>>,
    upstream: &Upstream,
    client: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let Some(port) = port else {
        // The listener went away while the connection stayed open.
        return error_page(StatusCode::SERVICE_UNAVAILABLE);
    };
    let host_header = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let host = host_header
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host_header.as_str(), |(h, _)| h)
        .to_string();
    let action = {
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let view = RequestView {
            method: req.method().as_str(),
            path: req.uri().path(),
            host: &host,
            headers: &headers,
        };
        port.routes
            .iter()
            .find(|r| r.matches(&view))
            .map(|r| r.action.clone())
    };
    match action {
        None => error_page(StatusCode::SERVICE_UNAVAILABLE),
        Some(RouteAction::Fixed {
            status,
            content_type,
            body,
        }) => full(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            content_type.as_deref(),
            body,
        ),
        Some(RouteAction::Redirect { config, status }) => {
            let location = redirect_location(
                &config,
                "http",
                &host,
                port.port,
                req.uri().path(),
                req.uri().query().unwrap_or_default(),
            );
            let mut resp = full(
                StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND),
                None,
                Bytes::new(),
            );
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(hyper::header::LOCATION, v);
            }
            resp
        }
        Some(RouteAction::Forward(groups)) => {
            let Some(group) = pick_group(&groups).and_then(|arn| port.groups.get(arn)) else {
                return error_page(StatusCode::SERVICE_UNAVAILABLE);
            };
            let Some(target) = group.pick() else {
                return error_page(StatusCode::SERVICE_UNAVAILABLE);
            };
            target.requests.fetch_add(1, Ordering::Relaxed);
            target.inflight.fetch_add(1, Ordering::Relaxed);
            let guard = InFlight(target.clone());
            prepare(&mut req, &port, client, target.addr, &host_header);
            match tokio::time::timeout(port.idle_timeout, upstream.request(req)).await {
                Ok(Ok(resp)) => {
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    // The guard lives until the body is sent.
                    let body = body.map_frame(move |f| {
                        let _ = &guard;
                        f
                    });
                    Response::from_parts(parts, body.boxed_unsync())
                }
                Ok(Err(e)) => {
                    tracing::debug!(target = %target.addr, error = %e, "target failed");
                    error_page(StatusCode::BAD_GATEWAY)
                }
                Err(_) => error_page(StatusCode::GATEWAY_TIMEOUT),
            }
        }
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
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Points the request at the target and adds ALB's X-Forwarded-* headers.
fn prepare(
    req: &mut Request<Incoming>,
    port: &Port,
    client: SocketAddr,
    target: SocketAddr,
    host: &str,
) {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    if let Ok(uri) = format!("http://{target}{path}").parse::<Uri>() {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = hyper::Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if !headers.contains_key(HOST) {
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(HOST, v);
        }
    }
    let xff = HeaderName::from_static("x-forwarded-for");
    match port.xff.as_str() {
        "remove" => {
            headers.remove(&xff);
        }
        "preserve" => {}
        _ => {
            let ip = client.ip().to_string();
            let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
                Some(prior) if !prior.is_empty() => format!("{prior}, {ip}"),
                _ => ip,
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(xff, v);
            }
        }
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    headers.insert(
        HeaderName::from_static("x-forwarded-port"),
        HeaderValue::from(port.port),
    );
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
