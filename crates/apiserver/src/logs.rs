//! `GET /berth/v1/logs/{cluster}/{task id}[?follow=1]`: a task's logs for
//! `berth logs`. The output of containers logging with awslogs is read
//! from this server's Logs store, where the agent shipped it (so it
//! outlives the task and its host); the other containers' output is asked
//! of the agent that runs (or ran) the task, on the agent's own connection,
//! and streamed through. When another server holds that connection, the
//! request goes there. No server ever connects to an address an agent
//! gives.

use crate::gateway::{AgentConnection, LogAsk};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use berth_domain::arn::Scope;
use berth_domain::task::ObservedTask;
use berth_domain::task::Task;
use berth_logstore::{From, LogStore, Owner};
use berth_store::keys::Keys;
use berth_store::typed;
use futures::stream::BoxStream;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

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
    let stored = stored_streams(&st, &scope, &found).await;
    let kept: BTreeSet<String> = stored.iter().map(|s| s.container.clone()).collect();
    let from_store = (!stored.is_empty()).then(|| {
        let store = st.logs.clone().expect("stored streams come from a store");
        let owner = Owner {
            account: scope.account.clone(),
            region: scope.region.clone(),
        };
        let clock = st.clone();
        store_output(
            store,
            owner,
            stored,
            follow,
            Arc::new(move || (clock.now() * 1000.0) as i64),
        )
    });
    let others = found
        .containers
        .iter()
        .any(|(name, _)| !kept.contains(name));
    let from_store = match (from_store, others) {
        (Some(stored), false) => return text(stored),
        (stored, _) => stored,
    };
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
        let agent = futures::stream::unfold(chunks, |mut chunks| async move {
            let chunk = chunks.recv().await?;
            Some((chunk, chunks))
        })
        .filter_map(move |chunk| {
            let chunk = without(&kept, chunk);
            async move { (!chunk.is_empty()).then_some(chunk) }
        });
        let body = match from_store {
            // Without following, the stored output comes first, whole.
            Some(stored) if !follow => stored.chain(agent).boxed(),
            Some(stored) => futures::stream::select(stored, agent).boxed(),
            None => agent.boxed(),
        };
        return text(body);
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

fn text(body: BoxStream<'static, Vec<u8>>) -> Response {
    let body = body.map(|chunk| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(chunk)));
    (
        [("content-type", "text/plain; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response()
}

/// The agent's lines (`name | ...`) of the containers not in `kept`.
fn without(kept: &BTreeSet<String>, chunk: String) -> Vec<u8> {
    if kept.is_empty() {
        return chunk.into_bytes();
    }
    chunk
        .split_inclusive('\n')
        .filter(|line| {
            line.split_once(" | ")
                .is_none_or(|(name, _)| !kept.contains(name))
        })
        .collect::<String>()
        .into_bytes()
}

/// A container whose awslogs stream this server's Logs store holds.
#[derive(Debug, Clone)]
struct Stored {
    container: String,
    group: String,
    stream: String,
}

/// The task's containers logging with awslogs whose streams are in this
/// server's Logs store, in definition order. A stream named by the
/// container's id is found once the agent has reported the id.
async fn stored_streams(st: &AppState, scope: &Scope, task: &Task) -> Vec<Stored> {
    let Some(store) = st.logs.clone() else {
        return vec![];
    };
    let observed =
        typed::get::<ObservedTask>(&*st.store, &scope.task_state(&task.cluster, &task.id))
            .await
            .ok()
            .flatten()
            .map(|v| v.value);
    let wanted: Vec<Stored> = task
        .definition
        .container_definitions
        .iter()
        .flatten()
        .filter_map(|def| {
            let log = def
                .log_configuration
                .as_ref()
                .filter(|l| l.log_driver.as_deref() == Some("awslogs"))?;
            let container = def.name.clone()?;
            let (group, stream) = berth_domain::logs::awslogs_destination(
                &log.options.clone().unwrap_or_default(),
                &container,
                &task.id,
            )?;
            let stream = stream.or_else(|| {
                observed
                    .as_ref()?
                    .containers
                    .iter()
                    .find(|c| c.name == container)?
                    .runtime_id
                    .clone()
            })?;
            Some(Stored {
                container,
                group,
                stream,
            })
        })
        .collect();
    if wanted.is_empty() {
        return wanted;
    }
    let owner = Owner {
        account: scope.account.clone(),
        region: scope.region.clone(),
    };
    let now = (st.now() * 1000.0) as i64;
    tokio::task::spawn_blocking(move || {
        wanted
            .into_iter()
            .filter(|s| {
                store
                    .get(
                        &owner,
                        &s.group,
                        &s.stream,
                        None,
                        None,
                        From::Forward(u64::MAX),
                        1,
                        now,
                    )
                    .is_ok()
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Events read from the store in one go, at most.
const PAGE: usize = 10_000;

/// The stored streams' events after `next` (per stream), each line
/// `container | message`; moves `next` on.
fn read_new(
    store: &LogStore,
    owner: &Owner,
    streams: &[Stored],
    next: &mut [u64],
    now: i64,
) -> Vec<u8> {
    let mut out = vec![];
    for (s, at) in streams.iter().zip(next.iter_mut()) {
        loop {
            let events = match store.get(
                owner,
                &s.group,
                &s.stream,
                None,
                None,
                From::Forward(*at),
                PAGE,
                now,
            ) {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!(error = %e, stream = %s.stream, "logs: stored stream unreadable");
                    break;
                }
            };
            for e in &events {
                out.extend_from_slice(s.container.as_bytes());
                out.extend_from_slice(b" | ");
                out.extend_from_slice(e.message.as_bytes());
                if !e.message.ends_with('\n') {
                    out.push(b'\n');
                }
                *at = e.seq + 1;
            }
            if events.len() < PAGE {
                break;
            }
        }
    }
    out
}

/// The stored streams' output: all of it, then, when `follow`ing, what
/// they gain (polled), without end.
fn store_output(
    store: Arc<LogStore>,
    owner: Owner,
    streams: Vec<Stored>,
    follow: bool,
    now: Arc<dyn Fn() -> i64 + Send + Sync>,
) -> BoxStream<'static, Vec<u8>> {
    let next = vec![0u64; streams.len()];
    let state = Some((store, owner, Arc::new(streams), next, now));
    futures::stream::unfold(state, move |state| async move {
        let (store, owner, streams, mut next, now) = state?;
        let (s, o, st, clock) = (store.clone(), owner.clone(), streams.clone(), now.clone());
        let (out, next) = tokio::task::spawn_blocking(move || {
            let out = read_new(&s, &o, &st, &mut next, clock());
            (out, next)
        })
        .await
        .ok()?;
        if !follow {
            return Some((out, None));
        }
        if out.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Some((out, Some((store, owner, streams, next, now))))
    })
    .filter(|chunk| futures::future::ready(!chunk.is_empty()))
    .boxed()
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
