//! What the component tests share: the router with the account root's key
//! made, and ECS calls into it signed with that key, as clients sign.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use berth_apiserver::AppState;
use berth_wire::sigv4;
use http_body_util::BodyExt;
use serde_json::Value;
use std::time::SystemTime;
use tower::ServiceExt;

pub const ROOT_KEY: &str = "AKIACOMPONENTTEST001";
pub const ROOT_SECRET: &str = "componentTestRootSecret00000000000000000";
/// The Host header the signed requests carry.
pub const HOST: &str = "berth.test";

/// The router over `st`, with the root key the calls sign with.
pub async fn router(st: AppState) -> axum::Router {
    st.ctl
        .identity
        .bootstrap_root(
            Some(berth_control::identity::NewCredentials {
                access_key_id: ROOT_KEY.into(),
                secret_access_key: ROOT_SECRET.into(),
            }),
            0.0,
        )
        .await
        .expect("root key");
    berth_apiserver::router(st)
}

pub fn root() -> sigv4::Credentials {
    sigv4::Credentials {
        access_key_id: ROOT_KEY.into(),
        secret_access_key: ROOT_SECRET.into(),
        session_token: None,
    }
}

/// The headers that sign a request with `headers` (all signed) at `now`.
pub fn signed(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    service: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    signed_as(&root(), method, path, headers, body, service, now)
}

/// The same, signed with `creds`.
pub fn signed_as(
    creds: &sigv4::Credentials,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    service: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if !all.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        all.insert(0, ("host", HOST));
    }
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let req = sigv4::Request {
        method,
        path,
        query,
        headers: &all,
    };
    let added = sigv4::sign(&req, body, creds, "us-east-1", service, now);
    all.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(added.into_iter().map(|(k, v)| (k.to_string(), v)))
        .collect()
}

/// Calls ECS operation `op` with a JSON 1.1 body; the status and the
/// decoded answer (`Null` if it is not JSON).
pub async fn call(app: &axum::Router, op: &str, body: Value) -> (StatusCode, Value) {
    call_at(app, op, body, SystemTime::now()).await
}

/// The same, signed at `now` (the server's clock, when it is not the
/// system's).
pub async fn call_at(
    app: &axum::Router,
    op: &str,
    body: Value,
    now: SystemTime,
) -> (StatusCode, Value) {
    let body = body.to_string();
    let target = format!("AmazonEC2ContainerServiceV20141113.{op}");
    let headers = [
        ("x-amz-target", target.as_str()),
        ("content-type", "application/x-amz-json-1.1"),
    ];
    let mut req = Request::post("/");
    for (k, v) in signed("POST", "/", &headers, body.as_bytes(), "ecs", now) {
        req = req.header(k, v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
