//! Join tokens and joining, Berth's own routes (signed as ECS, answered in
//! ECS's JSON error shape):
//!
//! - `POST /berth/v1/join-tokens?cluster=NAME|capacity=fargate[&expiresIn=S][&description=D]`
//!   issues a token (`berth:CreateJoinToken`);
//! - `GET /berth/v1/join-tokens` lists them (`berth:ListJoinTokens`);
//! - `DELETE /berth/v1/join-tokens/{id}` revokes one (`berth:RevokeJoinToken`);
//! - `POST /berth/v1/join` with `{"token", "cluster", "instanceId"}`: a new
//!   host's agent trades a token for credentials of its own. Not signed:
//!   the token is the credential.

use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use berth_control::join::{self, JoinFailure};
use berth_domain::instance::FARGATE_POOL;
use berth_domain::EcsError;
use serde::{Deserialize, Serialize};

fn json<T: Serialize>(value: &T) -> Response {
    (
        [("content-type", berth_wire::json::CONTENT_TYPE)],
        serde_json::to_vec(value).unwrap_or_default(),
    )
        .into_response()
}

fn error(status: u16, code: &str, message: &str) -> Response {
    (
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST),
        [("content-type", berth_wire::json::CONTENT_TYPE)],
        berth_wire::json::encode_error(code, message),
    )
        .into_response()
}

fn api_error(e: ApiError) -> Response {
    if let ApiError::Store(_) | ApiError::Internal(_) = &e {
        tracing::error!(error = %e, "join tokens");
    }
    let (status, code, message) = e.parts();
    error(status, code, &message)
}

fn failure(e: JoinFailure) -> Response {
    match e {
        JoinFailure::Refused(r) => error(403, "AccessDeniedException", &r.to_string()),
        other @ JoinFailure::OtherCluster { .. } => {
            error(403, "AccessDeniedException", &other.to_string())
        }
        JoinFailure::Invalid(m) => error(400, "InvalidParameterException", &m),
        JoinFailure::Control(c) => api_error(c.into()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateParams {
    cluster: Option<String>,
    capacity: Option<String>,
    expires_in: Option<f64>,
    description: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenView {
    id: String,
    cluster: String,
    description: String,
    created_at: String,
    expires_at: String,
    status: &'static str,
    uses: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

fn view(t: &berth_iam::join::JoinToken, now: f64, token: Option<String>) -> TokenView {
    TokenView {
        id: t.id.clone(),
        cluster: t.cluster.clone(),
        description: t.description.clone(),
        created_at: berth_domain::elb::iso8601(t.created),
        expires_at: berth_domain::elb::iso8601(t.expires),
        status: t.status(now),
        uses: t.uses,
        token,
    }
}

pub(crate) async fn create(
    State(st): State<AppState>,
    Query(p): Query<CreateParams>,
    req: crate::auth::OwnRequest,
) -> Response {
    let ctx = match crate::auth::own_route(&st, &req, "berth:CreateJoinToken").await {
        Ok(ctx) => ctx,
        Err(refused) => return refused,
    };
    let cluster = match (p.cluster.as_deref(), p.capacity.as_deref()) {
        (None, Some("fargate")) => FARGATE_POOL.to_string(),
        (None, Some(other)) => {
            return error(
                400,
                "InvalidParameterException",
                &format!("capacity must be 'fargate', not '{other}'"),
            )
        }
        (Some(_), Some(_)) => {
            return error(
                400,
                "InvalidParameterException",
                "give either cluster or capacity, not both",
            )
        }
        (Some(FARGATE_POOL), None) => {
            return error(
                400,
                "InvalidParameterException",
                "the Fargate pool is joined with capacity=fargate",
            )
        }
        (c, None) => match berth_control::clusters::active_cluster(&st, &ctx.scope, c).await {
            Ok((name, _)) => name,
            Err(e) => return api_error(e.into()),
        },
    };
    let lifetime = p.expires_in.unwrap_or(join::DEFAULT_LIFETIME_S);
    match join::create_token(
        &st,
        &cluster,
        p.description.as_deref().unwrap_or_default(),
        lifetime,
    )
    .await
    {
        Ok((record, token)) => {
            tracing::info!(id = %record.id, cluster = %record.cluster, "join token issued");
            json(&view(&record, st.now(), Some(token)))
        }
        Err(e) => failure(e),
    }
}

pub(crate) async fn list(State(st): State<AppState>, req: crate::auth::OwnRequest) -> Response {
    if let Err(refused) = crate::auth::own_route(&st, &req, "berth:ListJoinTokens").await {
        return refused;
    }
    match join::tokens(&st).await {
        Ok(all) => {
            let now = st.now();
            let views: Vec<TokenView> = all.iter().map(|t| view(t, now, None)).collect();
            json(&serde_json::json!({ "tokens": views }))
        }
        Err(e) => failure(e),
    }
}

pub(crate) async fn revoke(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: crate::auth::OwnRequest,
) -> Response {
    if let Err(refused) = crate::auth::own_route(&st, &req, "berth:RevokeJoinToken").await {
        return refused;
    }
    match join::revoke_token(&st, &id).await {
        Ok(t) => {
            tracing::info!(id = %t.id, "join token revoked");
            json(&view(&t, st.now(), None))
        }
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinRequest {
    token: String,
    cluster: String,
    instance_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinAnswer {
    cluster: String,
    access_key_id: String,
    secret_access_key: String,
}

pub(crate) async fn join_host(State(st): State<AppState>, body: Bytes) -> Response {
    let req: JoinRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return api_error(ApiError::Ecs(EcsError::invalid(format!(
                "a join names token, cluster and instanceId: {e}"
            ))))
        }
    };
    match join::join(&st, &req.token, &req.cluster, &req.instance_id).await {
        Ok(creds) => {
            tracing::info!(cluster = %req.cluster, instance = %req.instance_id, "host joined");
            json(&JoinAnswer {
                cluster: req.cluster,
                access_key_id: creds.access_key_id,
                secret_access_key: creds.secret_access_key,
            })
        }
        Err(e) => {
            tracing::warn!(cluster = %req.cluster, instance = %req.instance_id, reason = %e, "join refused");
            failure(e)
        }
    }
}
