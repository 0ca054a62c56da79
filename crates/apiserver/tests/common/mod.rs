//! What the component tests share: an ECS call straight into the router.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Calls ECS operation `op` with a JSON 1.1 body; the status and the
/// decoded answer (`Null` if it is not JSON).
pub async fn call(app: &axum::Router, op: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::post("/")
        .header(
            "X-Amz-Target",
            format!("AmazonEC2ContainerServiceV20141113.{op}"),
        )
        .header("Content-Type", "application/x-amz-json-1.1")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
