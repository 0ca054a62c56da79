//! The service controller over an in-memory store, with no agent: what it
//! does when a service's tasks cannot be placed, and that deleting such a
//! service still ends INACTIVE.

mod common;

use berth_apiserver::{ApiConfig, AppState};
use berth_control::controller::{run, ControllerConfig};
use berth_control::{Clock, Control, ControlConfig, TokioClock};
use berth_store::MemStore;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// Paused time as the server's clock reads it: both start together and
    /// move with tokio's clock, so signatures are dated as the server
    /// expects (a test may skip hours ahead).
    static CLOCK: TokioClock = TokioClock::new();
}

async fn call(app: &axum::Router, op: &str, body: Value) -> (axum::http::StatusCode, Value) {
    let now = CLOCK.with(|c| c.now());
    let at = std::time::UNIX_EPOCH + Duration::from_secs_f64(now);
    common::call_at(app, op, body, at).await
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> Option<Value>) -> Value {
    for _ in 0..200 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn service(app: &axum::Router, name: &str) -> Value {
    let (_, d) = call(app, "DescribeServices", json!({"services": [name]})).await;
    d["services"][0].clone()
}

fn said(s: &Value) -> Vec<String> {
    s["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect()
}

/// On paused time: the controller's waits and the records' timestamps both
/// follow tokio's clock, so the test takes no real time waiting.
#[tokio::test(start_paused = true)]
async fn a_service_that_cannot_place_says_why_and_can_be_deleted() {
    let ctl = Control::new(Arc::new(MemStore::new()), ControlConfig::default())
        .with_clock(Arc::new(TokioClock::new()));
    let st = AppState::with_control(ctl, ApiConfig::default());
    let app = common::router(st.clone()).await;
    let stop = CancellationToken::new();
    let controller = tokio::spawn(run(
        st.ctl.clone(),
        ControllerConfig::default(),
        stop.clone(),
    ));
    call(&app, "CreateCluster", json!({})).await;
    call(
        &app,
        "RegisterTaskDefinition",
        json!({"family": "web", "containerDefinitions": [{"name": "c", "image": "busybox", "memory": 16}]}),
    )
    .await;
    let (status, created) = call(
        &app,
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let s = wait_for("the unable-to-place event", async || {
        let s = service(&app, "web").await;
        said(&s)
            .iter()
            .any(|m| m.contains("No Container Instances were found"))
            .then_some(s)
    })
    .await;
    assert_eq!(
        (s["runningCount"].clone(), s["pendingCount"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(s["deployments"][0]["rolloutState"], "IN_PROGRESS");
    assert_eq!(
        said(&s)[0],
        "(service web) was unable to place a task because no container instance met all of its requirements. Reason: No Container Instances were found in your cluster."
    );
    // Said once, not on every reconcile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(said(&service(&app, "web").await).len(), 1);

    let (status, _) = call(
        &app,
        "DeleteService",
        json!({"service": "web", "force": true}),
    )
    .await;
    assert_eq!(status, 200);
    wait_for("INACTIVE", async || {
        let s = service(&app, "web").await;
        (s["status"] == "INACTIVE").then_some(s)
    })
    .await;
    let (_, listed) = call(&app, "ListServices", json!({})).await;
    assert_eq!(listed["serviceArns"], json!([]));
    stop.cancel();
    controller.await.expect("controller");
}
