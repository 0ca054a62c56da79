//! Routing, protocol detection and response encoding.

use crate::{context::RequestContext, error::ApiError, registry, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_wire::{json, query};
use std::time::Instant;
use tracing::Instrument;

pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        // awsQuery requests may come as GET with the parameters in the
        // query string (presigned STS URLs do).
        .route("/", post(root).get(root))
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
        .route(
            "/berth/v1/join-tokens",
            post(crate::join::create).get(crate::join::list),
        )
        .route(
            "/berth/v1/join-tokens/{id}",
            axum::routing::delete(crate::join::revoke),
        )
        .route("/berth/v1/join", post(crate::join::join_host))
        .with_state(state)
}

async fn health(State(st): State<AppState>) -> impl IntoResponse {
    let body = match st.config.auth {
        crate::AuthMode::Iam => r#"{"status":"ok","auth":"iam"}"#,
        crate::AuthMode::Off => {
            r#"{"status":"ok","auth":"off","warning":"authentication is off: anyone who can reach this server can run containers on its hosts"}"#
        }
    };
    ([(header::CONTENT_TYPE, "application/json")], body)
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

/// How a request's answer is encoded: the protocol it came in.
enum Protocol {
    Json {
        content_type: &'static str,
        query_compatible: bool,
    },
    Query {
        namespace: &'static str,
    },
}

/// JSON 1.1, for requests refused before their service is known.
const JSON: Protocol = Protocol::Json {
    content_type: registry::JSON_1_1,
    query_compatible: false,
};

/// What the front door made of a request: the service and operation (for
/// spans and metrics), how to answer, and the answer.
struct Handled {
    service: &'static str,
    operation: String,
    protocol: Protocol,
    result: Result<Vec<u8>, ApiError>,
}

impl Handled {
    fn refused(protocol: Protocol, operation: String, e: ApiError) -> Handled {
        Handled {
            service: "unknown",
            operation,
            protocol,
            result: Err(e),
        }
    }
}

async fn root(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    peer: Option<axum::Extension<crate::serve::PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut ctx = RequestContext::from_request(
        &headers,
        uri.query(),
        &st.config.account_id,
        &st.config.default_region,
        st.config.auth == crate::AuthMode::Iam,
    );
    if let Some(axum::Extension(p)) = peer {
        ctx.source_ip = p.ip;
        ctx.secure = p.secure;
    }
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
    let request = Incoming {
        method: &method,
        uri: &uri,
        headers: &headers,
        target: target.as_deref(),
        // A GET's query string is its form.
        form: form || (method == Method::GET && uri.query().is_some()),
        body: body.as_deref(),
    };
    let handled = handle(&st, &mut ctx, &request).await;
    let (service, operation, protocol, result) = (
        handled.service,
        handled.operation,
        handled.protocol,
        handled.result,
    );
    let response = match (&protocol, result) {
        (Protocol::Json { content_type, .. }, Ok(bytes)) => {
            json_response(StatusCode::OK, &ctx.request_id, content_type, None, bytes)
        }
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
                Protocol::Json {
                    content_type,
                    query_compatible,
                } => {
                    let mut resp = json_response(
                        status,
                        &ctx.request_id,
                        content_type,
                        Some(code),
                        json::encode_error(code, &message),
                    );
                    if *query_compatible {
                        let (_, query_code, _) = e.query_parts();
                        let fault = if status.as_u16() < 500 {
                            "Sender"
                        } else {
                            "Receiver"
                        };
                        if let Ok(v) = HeaderValue::from_str(&format!("{query_code};{fault}")) {
                            resp.headers_mut().insert("x-amzn-query-error", v);
                        }
                    }
                    resp
                }
                Protocol::Query { namespace } => {
                    let (status, code, message) = e.query_parts();
                    let status =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    let xml = if *namespace == berth_wire::ec2::XML_NAMESPACE {
                        query::ec2_error(code, &message, &ctx.request_id)
                    } else {
                        query::error(
                            namespace,
                            code,
                            &message,
                            status.as_u16() < 500,
                            &ctx.request_id,
                        )
                    };
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

/// What the front door reads of a request.
struct Incoming<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    target: Option<&'a str>,
    /// awsQuery: a form body, or a GET with a query string.
    form: bool,
    /// None when it exceeded the limit.
    body: Option<&'a [u8]>,
}

/// Checks who is calling a service that signs as `signing_name`, and
/// records the caller in the context.
async fn authenticated(
    st: &AppState,
    ctx: &mut RequestContext,
    req: &Incoming<'_>,
    body: &[u8],
    signing_name: &str,
) -> Result<(), ApiError> {
    let caller = crate::auth::authenticate(
        st,
        ctx,
        req.method,
        req.uri,
        req.headers,
        body,
        signing_name,
    )
    .await?;
    if let Some(caller) = caller {
        ctx.principal = caller.principal_arn.clone();
        ctx.caller = Some(caller);
    }
    Ok(())
}

/// Finds the request's service in the registry, checks its caller and runs
/// its adapter.
async fn handle(st: &AppState, ctx: &mut RequestContext, req: &Incoming<'_>) -> Handled {
    let unknown = || "unknown".to_string();
    if let Some(bad) = &ctx.bad_region {
        let protocol = if req.form {
            Protocol::Query {
                namespace: crate::sts::NAMESPACE,
            }
        } else {
            JSON
        };
        let e = ApiError::Ecs(berth_domain::EcsError::invalid(format!(
            "Invalid region '{bad}' in the SigV4 credential scope."
        )));
        return Handled::refused(protocol, unknown(), e);
    }
    if let Some(t) = req.target {
        let found =
            json::split_target(t).and_then(|(prefix, op)| Some((registry::by_target(prefix)?, op)));
        let Some(((service, wire), op)) = found else {
            let e = ApiError::UnknownOperation(format!("Unknown operation {t}"));
            return Handled::refused(JSON, unknown(), e);
        };
        let protocol = || Protocol::Json {
            content_type: wire.content_type,
            query_compatible: wire.query_compatible,
        };
        let Some(body) = req.body else {
            let e = ApiError::TooLarge(st.config.body_limit);
            return Handled::refused(protocol(), unknown(), e);
        };
        if let Err(e) = authenticated(st, ctx, req, body, service.signing_name).await {
            return Handled::refused(protocol(), unknown(), e);
        }
        // The signature covers the body as sent; the service reads it
        // inflated (botocore gzips large PutMetricData bodies).
        let inflated = match inflate(req.headers, body, st.config.body_limit) {
            Ok(b) => b,
            Err(e) => return Handled::refused(protocol(), op.to_string(), e),
        };
        let body = inflated.as_deref().unwrap_or(body);
        if let Some(caller) = ctx.caller.as_ref().filter(|c| crate::authz::limited(c)) {
            let ask = match wire.ask {
                registry::Asker::Now(ask) => ask(ctx, &caller.principal, st.now(), op, body),
                registry::Asker::Stored(ask) => {
                    ask(st, ctx, &caller.principal, st.now(), op, body).await
                }
            };
            if let Err(e) = crate::authz::check(st, ctx, ask).await {
                return Handled::refused(protocol(), op.to_string(), e);
            }
            // Boxed: it reads task definitions, and its future would
            // otherwise be built for every request.
            if service.label == "ecs" && crate::authz::passes_roles(op) {
                if let Err(e) = Box::pin(crate::authz::check_pass_role(st, ctx, op, body)).await {
                    return Handled::refused(protocol(), op.to_string(), e);
                }
            }
        }
        let ctx = &*ctx;
        let span = tracing::info_span!("api", service = service.label, operation = op, request_id = %ctx.request_id);
        let result = (wire.dispatch)(st, ctx, op, body).instrument(span).await;
        // Only modeled names become metric labels.
        let (label, operation) = if (service.knows)(op) {
            (service.label, op.to_string())
        } else {
            ("unknown", unknown())
        };
        return Handled {
            service: label,
            operation,
            protocol: protocol(),
            result,
        };
    }
    if !req.form {
        let e = ApiError::UnknownOperation("Missing X-Amz-Target header".into());
        return Handled::refused(JSON, unknown(), e);
    }
    let inflated = match req
        .body
        .map(|b| inflate(req.headers, b, st.config.body_limit))
    {
        Some(Err(e)) => {
            let protocol = Protocol::Query {
                namespace: crate::sts::NAMESPACE,
            };
            return Handled::refused(protocol, unknown(), e);
        }
        Some(Ok(b)) => b,
        None => None,
    };
    let params = if *req.method == Method::GET {
        query::QueryParams::parse(req.uri.query().unwrap_or_default().as_bytes())
    } else {
        inflated
            .as_deref()
            .or(req.body)
            .map(query::QueryParams::parse)
            .unwrap_or_default()
    };
    let action = params.action().unwrap_or_default().to_string();
    let found = registry::by_query(ctx.service.as_deref(), &action);
    let namespace = found.map_or(crate::sts::NAMESPACE, |(_, ns, _)| ns);
    let protocol = Protocol::Query { namespace };
    let Some(body) = req.body else {
        return Handled::refused(protocol, action, ApiError::TooLarge(st.config.body_limit));
    };
    let Some((service, _, dispatch)) = found else {
        // Who is asking comes before what they ask for.
        let signing_name = ctx.service.clone().unwrap_or_default();
        if let Err(e) = authenticated(st, ctx, req, body, &signing_name).await {
            return Handled::refused(protocol, action, e);
        }
        let msg = format!("The action {action} is not valid for this web service.");
        return Handled::refused(protocol, action, ApiError::UnknownOperation(msg));
    };
    if let Err(e) = authenticated(st, ctx, req, body, service.signing_name).await {
        return Handled::refused(protocol, action, e);
    }
    // Anyone may ask who they are, or for a session of themselves (AWS
    // requires no permission for either).
    let free = service.action_prefix == "sts"
        && matches!(action.as_str(), "GetCallerIdentity" | "GetSessionToken");
    if let (Some(caller), false) = (
        ctx.caller.as_ref().filter(|c| crate::authz::limited(c)),
        free,
    ) {
        let ask = crate::authz::query(
            ctx,
            &caller.principal,
            st.now(),
            service.action_prefix,
            &action,
            &params,
        );
        if let Err(e) = crate::authz::check(st, ctx, ask).await {
            return Handled::refused(protocol, action, e);
        }
    }
    let ctx = &*ctx;
    let span = tracing::info_span!("api", service = service.label, operation = %action, request_id = %ctx.request_id);
    let result = dispatch(st, ctx, &action, &params).instrument(span).await;
    // Only modeled names become metric labels.
    let operation = if (service.knows)(&action) {
        action
    } else {
        unknown()
    };
    Handled {
        service: service.label,
        operation,
        protocol,
        result,
    }
}

fn json_response(
    status: StatusCode,
    request_id: &str,
    content_type: &'static str,
    error: Option<&str>,
    body: Vec<u8>,
) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    if let Some(code) = error.and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert("x-amzn-errortype", code);
    }
    resp
}

/// A gzip-encoded body, inflated (within the body limit); None when the
/// body is not encoded.
fn inflate(headers: &HeaderMap, body: &[u8], limit: usize) -> Result<Option<Vec<u8>>, ApiError> {
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().eq_ignore_ascii_case("gzip")));
    if !gzip {
        return Ok(None);
    }
    use std::io::Read;
    let mut out = vec![];
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::Serialization(format!("The gzip-encoded body cannot be read: {e}"))
        })?;
    if out.len() > limit {
        return Err(ApiError::TooLarge(limit));
    }
    Ok(Some(out))
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
