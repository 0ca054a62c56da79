//! Authentication at the front door: every route that acts for a caller
//! checks the request's SigV4 signature here, unless the server runs with
//! `--auth off`.

use crate::AppState;
use axum::http::{HeaderMap, Method, Uri};
use berth_control::identity::{AuthFailure, Caller};
use berth_wire::sigv4;
use std::time::{Duration, UNIX_EPOCH};

/// Whether requests must be signed by a known key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every request is authenticated (SigV4) as a principal of the account.
    Iam,
    /// Nobody is asked who they are: for throwaway setups only.
    Off,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Iam => "iam",
            AuthMode::Off => "off",
        }
    }
}

/// The caller of a request to a service signing as `service`: `None` when
/// authentication is off.
pub(crate) async fn authenticate(
    st: &AppState,
    ctx: &crate::context::RequestContext,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    service: &str,
) -> Result<Option<Caller>, AuthFailure> {
    if st.config.auth == AuthMode::Off {
        return Ok(None);
    }
    let sig = ctx.signature.as_ref().map_err(|e| e.clone())?;
    // The signature covers its signed headers; the payload hash may be
    // claimed in another. The long Authorization header is the one that
    // needs no reading as text. A header that is not text cannot have been
    // signed as botocore signs; leaving it out makes the request fail.
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(headers.len());
    pairs.extend(
        headers
            .iter()
            .filter(|(k, _)| *k != axum::http::header::AUTHORIZATION)
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
    );
    let req = sigv4::Request {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or_default(),
        headers: &pairs,
    };
    let now = UNIX_EPOCH + Duration::from_secs_f64(st.now().max(0.0));
    st.identity
        .authenticate_parsed(&req, sig, body, service, now)
        .await
        .map(Some)
}

/// What authenticating a request to one of Berth's own routes reads of it.
pub(crate) struct OwnRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub peer: Option<crate::serve::PeerAddr>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for OwnRequest {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(OwnRequest {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            peer: parts.extensions.get::<crate::serve::PeerAddr>().copied(),
        })
    }
}

/// The context of a GET to one of Berth's own routes (billing, logs, the
/// agent gateway), which sign as ECS: the caller checked, or the answer
/// that refuses it (JSON, as ECS errors are).
pub(crate) async fn own_route(
    st: &AppState,
    req: &OwnRequest,
    action: &str,
) -> Result<crate::context::RequestContext, axum::response::Response> {
    use axum::response::IntoResponse;
    let (method, uri, headers) = (&req.method, &req.uri, &req.headers);
    let mut ctx = crate::context::RequestContext::from_request(
        headers,
        uri.query(),
        &st.config.account_id,
        &st.config.default_region,
        st.config.auth == crate::AuthMode::Iam,
    );
    if let Some(p) = req.peer {
        ctx.source_ip = p.ip;
        ctx.secure = p.secure;
    }
    let refused = match authenticate(st, &ctx, method, uri, headers, b"", "ecs").await {
        Ok(caller) => {
            if let Some(c) = caller {
                ctx.principal = c.principal_arn.clone();
                ctx.caller = Some(c);
            }
            let ask = ctx
                .caller
                .as_ref()
                .filter(|c| crate::authz::limited(c))
                .map(|c| crate::authz::Ask {
                    action: action.to_string(),
                    resources: vec![],
                    context: crate::authz::base_context(&ctx, &c.principal, st.now()),
                });
            match ask {
                None => return Ok(ctx),
                Some(ask) => match crate::authz::check(st, &ctx, ask).await {
                    Ok(()) => return Ok(ctx),
                    Err(e) => e,
                },
            }
        }
        Err(f) => crate::ApiError::Auth(f),
    };
    let (status, code, message) = refused.parts();
    let status =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::FORBIDDEN);
    Err((
        status,
        [("content-type", berth_wire::json::CONTENT_TYPE)],
        berth_wire::json::encode_error(code, &message),
    )
        .into_response())
}
