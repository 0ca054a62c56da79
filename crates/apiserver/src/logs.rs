//! `GET /berth/v1/logs/{cluster}/{task id}[?follow=1]`: a task's logs, read
//! from the agent that runs (or ran) it and streamed through. Berth's own
//! route for `berth logs`; the CloudWatch Logs API comes later.

use crate::gateway::AgentConnection;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use berth_domain::task::Task;
use berth_store::keys::Keys;
use berth_store::typed;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;

fn plain(status: StatusCode, message: String) -> Response {
    (status, format!("{message}\n")).into_response()
}

pub(crate) async fn task_logs(
    State(st): State<AppState>,
    Path((cluster, task)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let scope =
        match crate::auth::own_route(&st, &method, &uri, &headers, "logs:GetLogEvents").await {
            Ok(ctx) => ctx.scope,
            Err(refused) => return refused,
        };
    let query = uri.query().map(str::to_string);
    let Some(id) = berth_domain::arn::task_id(&scope, &cluster, &task) else {
        return plain(
            StatusCode::BAD_REQUEST,
            format!("'{task}' is not a task id or ARN"),
        );
    };
    let found = match typed::get::<Task>(&*st.store, &scope.task(&cluster, &id)).await {
        Ok(Some(t)) => t.value,
        Ok(None) => {
            return plain(
                StatusCode::NOT_FOUND,
                format!("task {id} not found in cluster {cluster}"),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "logs: store read failed");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into());
        }
    };
    let key = scope.agent_connection(found.host_cluster(), &found.container_instance);
    let agent = match typed::get::<AgentConnection>(&*st.store, &key).await {
        Ok(Some(a)) => a.value,
        Ok(None) => {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the agent of container instance {} is not connected",
                    found.container_instance
                ),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "logs: store read failed");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into());
        }
    };
    let Some(base) = agent.logs_url else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "that agent does not serve logs".into(),
        );
    };
    let follow = query.is_some_and(|q| q.contains("follow=1"));
    let url = format!(
        "{base}/v1/logs/{id}{}",
        if follow { "?follow=1" } else { "" }
    );
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return plain(
            StatusCode::BAD_GATEWAY,
            format!("the agent's logs address {base} is not a URL"),
        );
    };
    let client: Client<_, Empty<bytes::Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    match client.get(uri).await {
        Ok(resp) => {
            let status = resp.status();
            let body = Body::new(resp.into_body().map_err(axum::Error::new));
            (
                status,
                [("content-type", "text/plain; charset=utf-8")],
                body,
            )
                .into_response()
        }
        Err(e) => plain(
            StatusCode::BAD_GATEWAY,
            format!("cannot reach the agent at {base}: {e}"),
        ),
    }
}
