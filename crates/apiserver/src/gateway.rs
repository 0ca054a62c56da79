//! The agent gateway: each agent holds one WebSocket here
//! (`berth_wire::agent`). While its heartbeats keep coming, a key under a
//! lease says the agent is connected; when they stop, the lease runs out
//! and the key goes, so `agentConnected` turns false without anyone having
//! to notice the silence.

use crate::context::RequestContext;
use crate::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use berth_domain::instance::ContainerInstance;
use berth_domain::{arn, Arn, Scope};
use berth_store::keys::Keys;
use berth_store::{typed, Op, Txn};
use berth_wire::agent::{AgentMessage, ServerMessage};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The observed record of a connected agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AgentConnection {
    pub connected_at: f64,
    pub agent_version: String,
}

pub(crate) async fn connect(
    State(st): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let ctx =
        RequestContext::from_headers(&headers, &st.config.account_id, &st.config.default_region);
    ws.on_upgrade(move |socket| async move {
        let mut socket = socket;
        if let Err(why) = session(&st, &ctx.scope, &mut socket).await {
            tracing::info!(reason = %why, "agent connection ended");
            let refused = ServerMessage::Refused { message: why };
            let _ = socket.send(text(&refused)).await;
        }
    })
}

fn text(m: &ServerMessage) -> Message {
    Message::Text(serde_json::to_string(m).unwrap_or_default().into())
}

/// Waits for the agent's next message, or None on close or silence.
async fn next(socket: &mut WebSocket, within: Duration) -> Result<Option<AgentMessage>, String> {
    loop {
        let frame = match tokio::time::timeout(within, socket.recv()).await {
            Err(_) => return Err(format!("no heartbeat for {within:?}")),
            Ok(None) | Ok(Some(Err(_))) => return Ok(None),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame {
            Message::Text(t) => {
                return serde_json::from_str(t.as_str())
                    .map(Some)
                    .map_err(|e| format!("bad message from the agent: {e}"))
            }
            Message::Close(_) => return Ok(None),
            // Pings are answered by the WebSocket layer.
            _ => continue,
        }
    }
}

/// Which instance `arn` names, if it is a live instance of `cluster`.
async fn instance(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    arn: &str,
) -> Result<(String, String), String> {
    let unknown = || format!("container instance {arn} is not registered in cluster {cluster}");
    let name = arn::cluster_name(scope, Some(cluster)).ok_or_else(unknown)?;
    let Some(Arn::Other { scope: s, resource }) = Arn::parse(arn) else {
        return Err(unknown());
    };
    let id = resource
        .strip_prefix(&format!("container-instance/{name}/"))
        .filter(|_| &s == scope)
        .ok_or_else(unknown)?
        .to_string();
    let found = typed::get::<ContainerInstance>(&*st.store, &scope.instance(&name, &id))
        .await
        .map_err(|e| e.to_string())?;
    found.map(|_| (name, id)).ok_or_else(unknown)
}

async fn session(st: &AppState, scope: &Scope, socket: &mut WebSocket) -> Result<(), String> {
    let timeout = st.config.agent_timeout;
    let (cluster, arn, agent_version) = match next(socket, timeout).await? {
        Some(AgentMessage::Hello {
            cluster,
            container_instance_arn,
            agent_version,
        }) => (cluster, container_instance_arn, agent_version),
        Some(other) => return Err(format!("expected hello first, got {other:?}")),
        None => return Ok(()),
    };
    let (cluster, id) = instance(st, scope, &cluster, &arn).await?;
    let key = scope.agent_connection(&cluster, &id);
    let lease = st
        .store
        .lease_grant(timeout)
        .await
        .map_err(|e| e.to_string())?;
    let record = AgentConnection {
        connected_at: crate::now(),
        agent_version,
    };
    st.store
        .txn(Txn::when(
            vec![],
            vec![Op::Put {
                key: key.clone(),
                value: typed::encode(&record),
                lease: Some(lease.id),
            }],
        ))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(cluster = %cluster, instance = %id, "agent connected");

    let interval = (timeout / 4).max(Duration::from_millis(100));
    let welcome = ServerMessage::Welcome {
        heartbeat_interval_ms: interval.as_millis() as u64,
        timeout_ms: timeout.as_millis() as u64,
    };
    // Nothing can be placed on an instance until tasks exist, so the first
    // desired set is empty; its revision lets the agent resume from it.
    let revision = st
        .store
        .current_revision()
        .await
        .map_err(|e| e.to_string())?;
    let desired = ServerMessage::Desired {
        revision,
        tasks: vec![],
    };
    let mut result = Ok(());
    for m in [welcome, desired] {
        if socket.send(text(&m)).await.is_err() {
            result = Err("the agent went away".to_string());
        }
    }
    while result.is_ok() {
        match next(socket, timeout).await {
            Ok(Some(AgentMessage::Heartbeat)) => {
                if st.store.lease_keep_alive(lease.id).await.is_err() {
                    result = Err("the connection's lease ran out".into());
                }
            }
            Ok(Some(other)) => result = Err(format!("unexpected message {other:?}")),
            Ok(None) => break,
            Err(e) => result = Err(e),
        }
    }
    // A clean goodbye or a broken connection: the agent is gone now, not
    // when the lease would have run out. A newer connection of the same
    // agent holds its own lease, which this does not touch.
    if let Err(e) = st.store.lease_revoke(lease.id).await {
        tracing::warn!(error = %e, "could not revoke an agent connection's lease");
    }
    tracing::info!(cluster = %cluster, instance = %id, "agent disconnected");
    result
}
