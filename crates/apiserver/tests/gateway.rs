//! The agent gateway over a real socket: a connected agent shows as
//! agentConnected, heartbeats keep it so, and silence or a goodbye ends it;
//! tasks reach the agent's desired set and leave it once reported STOPPED.

use berth_apiserver::{serve, ApiConfig, AppState};
use berth_store::{MemStore, RangeRequest, Store};
use berth_wire::agent::{
    AgentMessage, ServerMessage, StopCode, TaskReport, TaskStatus, CONNECT_PATH,
};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

mod common;

const TIMEOUT: Duration = Duration::from_millis(800);

async fn call(app: &axum::Router, op: &str, body: Value) -> Value {
    common::call(app, op, body).await.1
}

struct Setup {
    app: axum::Router,
    store: Arc<MemStore>,
    url: String,
    arn: String,
    /// What the instance's host got when it joined.
    host: berth_wire::sigv4::Credentials,
    st: AppState,
    stop: CancellationToken,
}

/// The EC2-style id of the test's host.
const HOST_ID: &str = "i-0gateway";

/// Credentials of a host of `cluster`, as joining gives them.
async fn host_credentials(
    st: &AppState,
    cluster: &str,
    id: &str,
) -> berth_wire::sigv4::Credentials {
    let made = berth_control::join::issue(&st.ctl, cluster, id, None)
        .await
        .expect("host credentials");
    berth_wire::sigv4::Credentials {
        access_key_id: made.access_key_id,
        secret_access_key: made.secret_access_key,
        session_token: None,
    }
}

async fn setup() -> Setup {
    let config = ApiConfig {
        agent_timeout: TIMEOUT,
        ..ApiConfig::default()
    };
    let store = Arc::new(MemStore::new());
    let st = AppState::new(store.clone(), config);
    let app = common::router(st.clone()).await;
    let host = host_credentials(&st, "gw", HOST_ID).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "ws://{}{CONNECT_PATH}",
        listener.local_addr().expect("addr")
    );
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, app.clone(), 2, stop.clone()));
    call(&app, "CreateCluster", json!({"clusterName": "gw"})).await;
    let resources = json!([
        {"name": "CPU", "type": "INTEGER", "integerValue": 1024},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": 1024}
    ]);
    let ci = call(
        &app,
        "RegisterContainerInstance",
        json!({
            "cluster": "gw",
            "totalResources": resources,
            "instanceIdentityDocument": json!({"instanceId": HOST_ID}).to_string(),
        }),
    )
    .await;
    let arn = ci["containerInstance"]["containerInstanceArn"]
        .as_str()
        .expect("arn")
        .to_string();
    Setup {
        app,
        store,
        url,
        arn,
        host,
        st,
        stop,
    }
}

async fn connected(s: &Setup) -> bool {
    let d = call(
        &s.app,
        "DescribeContainerInstances",
        json!({"cluster": "gw", "containerInstances": [s.arn]}),
    )
    .await;
    d["containerInstances"][0]["agentConnected"] == json!(true)
}

/// Waits (up to a generous bound) for the connection state to become `want`.
async fn becomes(s: &Setup, want: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if connected(s).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Ws, m: &AgentMessage) {
    let text = serde_json::to_string(m).expect("encode");
    ws.send(Message::text(text)).await.expect("send");
}

async fn receive(ws: &mut Ws) -> ServerMessage {
    loop {
        match ws.next().await.expect("open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("server message"),
            _ => continue,
        }
    }
}

/// The upgrade request to the gateway, signed with `creds`.
fn signed_upgrade(
    url: &str,
    creds: &berth_wire::sigv4::Credentials,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().expect("request");
    let host = req.uri().authority().expect("authority").to_string();
    let path = req.uri().path().to_string();
    let headers = [("host", host.as_str())];
    for (k, v) in common::signed_as(
        creds,
        "GET",
        &path,
        &headers,
        b"",
        "ecs",
        std::time::SystemTime::now(),
    ) {
        if k != "host" {
            req.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
    }
    req
}

async fn hello(s: &Setup, arn: &str) -> Ws {
    hello_as(s, arn, &s.host).await
}

async fn hello_as(s: &Setup, arn: &str, creds: &berth_wire::sigv4::Credentials) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(signed_upgrade(&s.url, creds))
        .await
        .expect("connect");
    let m = AgentMessage::Hello {
        cluster: "gw".into(),
        container_instance_arn: arn.into(),
        agent_version: "test".into(),
    };
    send(&mut ws, &m).await;
    ws
}

#[tokio::test]
async fn heartbeats_keep_an_agent_connected_and_silence_disconnects_it() {
    let s = setup().await;
    assert!(!connected(&s).await);
    let mut ws = hello(&s, &s.arn).await;
    let ServerMessage::Welcome {
        heartbeat_interval_ms,
        timeout_ms,
    } = receive(&mut ws).await
    else {
        panic!("welcome first");
    };
    assert_eq!(timeout_ms, TIMEOUT.as_millis() as u64);
    assert!(
        matches!(receive(&mut ws).await, ServerMessage::Desired { tasks, .. } if tasks.is_empty())
    );
    assert!(connected(&s).await);

    // Three timeouts' worth of heartbeats: still connected throughout.
    let until = Instant::now() + TIMEOUT * 3;
    while Instant::now() < until {
        send(&mut ws, &AgentMessage::Heartbeat).await;
        tokio::time::sleep(Duration::from_millis(heartbeat_interval_ms)).await;
        assert!(connected(&s).await, "a heartbeating agent dropped");
    }

    // Silence: the server gives up on the agent.
    assert!(becomes(&s, false).await, "a silent agent stayed connected");
    let listed = call(
        &s.app,
        "ListContainerInstances",
        json!({"cluster": "gw", "filter": "agentConnected == false"}),
    )
    .await;
    assert_eq!(listed["containerInstanceArns"], json!([s.arn]));
    s.stop.cancel();
}

#[tokio::test]
async fn a_goodbye_disconnects_at_once_and_strangers_are_refused() {
    let s = setup().await;
    let mut ws = hello(&s, &s.arn).await;
    receive(&mut ws).await;
    assert!(connected(&s).await);
    ws.close(None).await.expect("close");
    assert!(becomes(&s, false).await);

    let base = s
        .arn
        .rfind('/')
        .expect("an instance ARN has a cluster part")
        + 1;
    let stranger = format!("{}{}", &s.arn[..base], "f".repeat(32));
    let mut ws = hello(&s, &stranger).await;
    match receive(&mut ws).await {
        ServerMessage::Refused { message } => {
            assert!(message.contains("is not registered"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    s.stop.cancel();
}

#[tokio::test]
async fn a_connection_carries_only_its_own_host() {
    let s = setup().await;
    // The account root is no host: refused before the upgrade.
    match tokio_tungstenite::connect_async(signed_upgrade(&s.url, &common::root())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403);
        }
        other => panic!(
            "the root's upgrade was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    // Another host of the same cluster cannot speak for this instance.
    let other = host_credentials(&s.st, "gw", "i-0other").await;
    let mut ws = hello_as(&s, &s.arn, &other).await;
    match receive(&mut ws).await {
        ServerMessage::Refused { message } => {
            assert!(message.contains("host i-0other"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!connected(&s).await);
    s.stop.cancel();
}

/// Keys of the per-instance task index, whatever the instance.
async fn indexed(s: &Setup) -> Vec<String> {
    let all = s
        .store
        .range(RangeRequest::prefix(""))
        .await
        .expect("range");
    all.kvs
        .into_iter()
        .map(|kv| kv.key)
        .filter(|k| k.contains("/instance-tasks/"))
        .collect()
}

/// The desired set after the next push, kept as the agent keeps it: a
/// whole set replaces it, changes are applied to it. Says whether the
/// push was a whole set.
async fn next_desired(ws: &mut Ws, set: &mut std::collections::BTreeSet<String>) -> bool {
    loop {
        match receive(ws).await {
            ServerMessage::Desired { tasks, .. } => {
                *set = tasks.into_iter().map(|t| t.task_arn).collect();
                return true;
            }
            ServerMessage::DesiredChanges { tasks, removed, .. } => {
                for arn in removed {
                    set.remove(&arn);
                }
                set.extend(tasks.into_iter().map(|t| t.task_arn));
                return false;
            }
            _ => continue,
        }
    }
}

#[tokio::test]
async fn a_task_reported_stopped_leaves_the_desired_set_and_the_index() {
    let s = setup().await;
    let mut ws = hello(&s, &s.arn).await;
    let mut set = std::collections::BTreeSet::new();
    assert!(next_desired(&mut ws, &mut set).await, "the whole set first");
    assert!(set.is_empty());
    call(
        &s.app,
        "RegisterTaskDefinition",
        json!({"family": "f", "containerDefinitions": [{"name": "c", "image": "i", "memory": 16}]}),
    )
    .await;
    let run = call(
        &s.app,
        "RunTask",
        json!({"cluster": "gw", "taskDefinition": "f"}),
    )
    .await;
    let arn = run["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or_else(|| panic!("not placed: {run}"))
        .to_string();
    // Only what changed comes next, not the whole set again.
    assert!(!next_desired(&mut ws, &mut set).await);
    assert_eq!(set.iter().collect::<Vec<_>>(), vec![&arn]);
    assert_eq!(indexed(&s).await.len(), 1);

    let report = |status: &str| {
        AgentMessage::TaskState(TaskReport {
            task_arn: arn.clone(),
            last_status: TaskStatus::parse(status).expect("a task status"),
            stop_code: (status == "STOPPED").then_some(StopCode::EssentialContainerExited),
            stopped_reason: (status == "STOPPED")
                .then(|| "Essential container in task exited".into()),
            ..TaskReport::default()
        })
    };
    send(&mut ws, &report("RUNNING")).await;
    send(&mut ws, &report("STOPPED")).await;
    next_desired(&mut ws, &mut set).await;
    assert!(set.is_empty(), "{set:?}");
    assert!(
        indexed(&s).await.is_empty(),
        "a STOPPED task left in the index"
    );

    // Stopping it afterwards records the request but does not put it back.
    let stopped = call(&s.app, "StopTask", json!({"cluster": "gw", "task": arn})).await;
    assert_eq!(stopped["task"]["lastStatus"], json!("STOPPED"));
    assert_eq!(stopped["task"]["desiredStatus"], json!("STOPPED"));
    assert!(indexed(&s).await.is_empty());
    // A late report for it is dropped: STOPPED stays STOPPED.
    send(&mut ws, &report("RUNNING")).await;
    send(&mut ws, &AgentMessage::Heartbeat).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let d = call(
        &s.app,
        "DescribeTasks",
        json!({"cluster": "gw", "tasks": [arn]}),
    )
    .await;
    assert_eq!(d["tasks"][0]["lastStatus"], json!("STOPPED"));
    assert_eq!(d["tasks"][0]["stopCode"], json!("EssentialContainerExited"));
    s.stop.cancel();
}
