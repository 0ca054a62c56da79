//! `GET /berth/v1/logs/{cluster}/{task id}[?follow=1]`: a task's logs,
//! asked of the agent that runs (or ran) it on the agent's own connection
//! and streamed through; when another server holds that connection, the
//! request goes there. No server ever connects to an address an agent
//! gives. Berth's own route for `berth logs`; the CloudWatch Logs API comes
//! later.

use crate::gateway::{AgentConnection, LogAsk};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::{HeaderMap, Uri};
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
    req: crate::auth::OwnRequest,
) -> Response {
    let scope = match crate::auth::own_route(&st, &req, "logs:GetLogEvents").await {
        Ok(ctx) => ctx.scope,
        Err(refused) => return refused,
    };
    let query = req.uri.query();
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
    let follow = query.is_some_and(|q| q.split('&').any(|p| p == "follow=1"));
    let (out, chunks) = tokio::sync::mpsc::unbounded_channel();
    let ask = LogAsk {
        task_id: id.clone(),
        follow,
        out,
    };
    if st
        .links
        .ask(found.host_cluster(), &found.container_instance, ask)
        .is_ok()
    {
        let body = futures::stream::unfold(chunks, |mut chunks| async move {
            let chunk = chunks.recv().await?;
            Some((
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from(chunk)),
                chunks,
            ))
        });
        return (
            [("content-type", "text/plain; charset=utf-8")],
            Body::from_stream(body),
        )
            .into_response();
    }
    // Not connected here: the server that holds the agent's connection
    // answers, if there is one.
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
    let holder = agent
        .server
        .filter(|s| Some(s) != st.config.advertise_url.as_ref())
        .filter(|_| !req.headers.contains_key(FORWARDED));
    let Some(holder) = holder else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the agent of container instance {} is connected to another server, which cannot be reached from here",
                found.container_instance
            ),
        );
    };
    let tls = st
        .config
        .peer_tls
        .clone()
        .unwrap_or_else(berth_tls::plain_client_config);
    forward(&holder, &req.uri, &req.headers, tls).await
}

/// Marks a request one server passed to another, which answers it itself.
const FORWARDED: &str = "x-berth-forwarded";

/// Passes the caller's request as it came to the server `holder`, which
/// checks its signature again (the Host header it was signed with goes
/// along), and streams the answer back.
async fn forward(
    holder: &str,
    uri: &Uri,
    headers: &HeaderMap,
    tls: std::sync::Arc<berth_tls::ClientConfig>,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", holder.trim_end_matches('/'));
    let mut req = hyper::Request::get(&url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let Ok(req) = req
        .header(FORWARDED, "1")
        .body(Empty::<bytes::Bytes>::new())
    else {
        return plain(
            StatusCode::BAD_GATEWAY,
            format!("the server URL {holder} is not a URL"),
        );
    };
    let client: Client<_, Empty<bytes::Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(berth_tls::https_connector(tls));
    match client.request(req).await {
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
            format!("cannot reach the server {holder} that holds the agent's connection: {e}"),
        ),
    }
}
