//! Routing, protocol detection and response encoding.

use crate::{context::RequestContext, ecs, error::ApiError, sts, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_wire::{json, query};
use std::time::Instant;
use tracing::Instrument;

pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/", post(root))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route(
            berth_wire::agent::CONNECT_PATH,
            get(crate::gateway::connect),
        )
        .route(
            "/berth/v1/logs/{cluster}/{task}",
            get(crate::logs::task_logs),
        )
        .route("/berth/v1/billing", get(crate::billing::report))
        .with_state(state)
}

async fn health() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(),
    )
}

enum Protocol {
    Json,
    Query { namespace: &'static str },
}

async fn root(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let ctx =
        RequestContext::from_headers(&headers, &st.config.account_id, &st.config.default_region);
    let started = Instant::now();
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));

    // None means the body exceeded the limit.
    let body = axum::body::to_bytes(body, st.config.body_limit).await.ok();

    let (service, operation, protocol, result) = match (&target, form) {
        (_, _) if ctx.bad_region.is_some() => (
            "unknown",
            "unknown".to_string(),
            if form {
                Protocol::Query {
                    namespace: sts::NAMESPACE,
                }
            } else {
                Protocol::Json
            },
            Err(ApiError::Ecs(berth_domain::EcsError::invalid(format!(
                "Invalid region '{}' in the SigV4 credential scope.",
                ctx.bad_region.clone().unwrap_or_default()
            )))),
        ),
        (Some(t), _) => {
            let (service, op, result) = match (json::split_target(t), &body) {
                (_, None) => (
                    "unknown",
                    "unknown".to_string(),
                    Err(ApiError::TooLarge(st.config.body_limit)),
                ),
                (Some((prefix, op)), Some(b)) if prefix == berth_wire::ecs::TARGET_PREFIX => {
                    let span = tracing::info_span!("api", service = "ecs", operation = op, request_id = %ctx.request_id);
                    let r = ecs::dispatch(&st, &ctx, op, b).instrument(span).await;
                    // Only modeled names become metric labels.
                    let service = if berth_wire::ecs::OPERATIONS.contains(&op) {
                        "ecs"
                    } else {
                        "unknown"
                    };
                    (service, op.to_string(), r)
                }
                _ => (
                    "unknown",
                    "unknown".to_string(),
                    Err(ApiError::UnknownOperation(format!("Unknown operation {t}"))),
                ),
            };
            (service, op, Protocol::Json, result)
        }
        (None, true) => {
            let params = body
                .as_ref()
                .map(|b| query::QueryParams::parse(b))
                .unwrap_or_default();
            let action = params.action().unwrap_or_default().to_string();
            let service = match ctx.service.as_deref() {
                Some("sts") => "sts",
                Some("elasticloadbalancing") => "elbv2",
                Some(_) => "unknown",
                None if sts::ACTIONS.contains(&action.as_str()) => "sts",
                None if berth_wire::elbv2::OPERATION_SHAPES
                    .iter()
                    .any(|(n, _, _)| *n == action) =>
                {
                    "elbv2"
                }
                None => "unknown",
            };
            let namespace = if service == "elbv2" {
                berth_wire::elbv2::XML_NAMESPACE
            } else {
                sts::NAMESPACE
            };
            let protocol = Protocol::Query { namespace };
            if body.is_none() {
                (
                    "unknown",
                    action,
                    protocol,
                    Err(ApiError::TooLarge(st.config.body_limit)),
                )
            } else if service == "sts" {
                let span = tracing::info_span!("api", service = "sts", operation = %action, request_id = %ctx.request_id);
                let r = sts::dispatch(&ctx, &action, &params).instrument(span).await;
                ("sts", action, protocol, r)
            } else if service == "elbv2" {
                let span = tracing::info_span!("api", service = "elbv2", operation = %action, request_id = %ctx.request_id);
                let r = crate::elbv2::dispatch(&st, &ctx, &action, &params)
                    .instrument(span)
                    .await;
                // Only modeled names become metric labels.
                let label = if berth_wire::elbv2::OPERATION_SHAPES
                    .iter()
                    .any(|(n, _, _)| *n == action)
                {
                    action
                } else {
                    "unknown".to_string()
                };
                ("elbv2", label, protocol, r)
            } else {
                let msg = format!("The action {action} is not valid for this web service.");
                (
                    "unknown",
                    action,
                    protocol,
                    Err(ApiError::UnknownOperation(msg)),
                )
            }
        }
        (None, false) => (
            "unknown",
            "unknown".to_string(),
            Protocol::Json,
            Err(ApiError::UnknownOperation(
                "Missing X-Amz-Target header".into(),
            )),
        ),
    };

    let response = match (&protocol, result) {
        (Protocol::Json, Ok(bytes)) => json_response(StatusCode::OK, &ctx.request_id, None, bytes),
        (Protocol::Query { .. }, Ok(bytes)) => xml_response(StatusCode::OK, &ctx.request_id, bytes),
        (protocol, Err(e)) => {
            let (status, code, message) = e.parts();
            if status >= 500 {
                tracing::error!(request_id = %ctx.request_id, operation = %operation, error = %e, "request failed");
            } else {
                tracing::debug!(request_id = %ctx.request_id, operation = %operation, code, %message, "request rejected");
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            match protocol {
                Protocol::Json => json_response(
                    status,
                    &ctx.request_id,
                    Some(code),
                    json::encode_error(code, &message),
                ),
                Protocol::Query { namespace } => {
                    let code = match e {
                        ApiError::UnknownOperation(_) => "InvalidAction",
                        _ => code,
                    };
                    let xml = query::error(
                        namespace,
                        code,
                        &message,
                        status.as_u16() < 500,
                        &ctx.request_id,
                    );
                    xml_response(status, &ctx.request_id, xml.into_bytes())
                }
            }
        }
    };
    st.metrics.observe(
        service,
        &operation,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

fn json_response(
    status: StatusCode,
    request_id: &str,
    error: Option<&str>,
    body: Vec<u8>,
) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(json::CONTENT_TYPE),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    if let Some(code) = error.and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert("x-amzn-errortype", code);
    }
    resp
}

fn xml_response(status: StatusCode, request_id: &str, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}
