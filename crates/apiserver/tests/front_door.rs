//! Component tests: the router over a MemStore, no sockets.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use berth_apiserver::{router, ApiConfig, AppState};
use berth_domain::Scope;
use berth_store::keys::Keys;
use berth_store::{MemStore, Op, Store, Txn};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

async fn call(app: &axum::Router, op: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::post("/")
        .header(
            "X-Amz-Target",
            format!("AmazonEC2ContainerServiceV20141113.{op}"),
        )
        .header("Content-Type", "application/x-amz-json-1.1")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn app() -> (axum::Router, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    (
        router(AppState::new(store.clone(), ApiConfig::default())),
        store,
    )
}

#[tokio::test]
async fn delete_cluster_refuses_while_it_holds_work() {
    let (app, store) = app();
    let scope = Scope::new("000000000000", "us-east-1");
    call(&app, "CreateCluster", json!({"clusterName": "busy"})).await;
    for (prefix, code) in [
        (
            scope.instances_of("busy"),
            "ClusterContainsContainerInstancesException",
        ),
        (
            scope.services_of("busy"),
            "ClusterContainsServicesException",
        ),
        (scope.tasks_of("busy"), "ClusterContainsTasksException"),
    ] {
        let key = format!("{prefix}x");
        store
            .txn(Txn {
                success: vec![Op::put(key.clone(), b"{}".to_vec())],
                ..Default::default()
            })
            .await
            .expect("put");
        let (status, body) = call(&app, "DeleteCluster", json!({"cluster": "busy"})).await;
        assert_eq!(
            (status, body["__type"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code))
        );
        store
            .txn(Txn {
                success: vec![Op::delete(key)],
                ..Default::default()
            })
            .await
            .expect("delete");
    }
    let (status, body) = call(&app, "DeleteCluster", json!({"cluster": "busy"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["cluster"]["status"], "INACTIVE");
}

#[tokio::test]
async fn cluster_counts_come_from_the_store() {
    let (app, store) = app();
    let scope = Scope::new("000000000000", "us-east-1");
    call(&app, "CreateCluster", json!({"clusterName": "c"})).await;
    let ops = vec![
        Op::put(format!("{}a", scope.tasks_of("c")), b"{}".to_vec()),
        Op::put(format!("{}b", scope.tasks_of("c")), b"{}".to_vec()),
        Op::put(format!("{}s", scope.services_of("c")), b"{}".to_vec()),
    ];
    store
        .txn(Txn {
            success: ops,
            ..Default::default()
        })
        .await
        .expect("put");
    let (_, body) = call(&app, "DescribeClusters", json!({"clusters": ["c"]})).await;
    assert_eq!(body["clusters"][0]["runningTasksCount"], 2);
    assert_eq!(body["clusters"][0]["activeServicesCount"], 1);
}

#[tokio::test]
async fn concurrent_registrations_of_one_family_are_gapless() {
    let (app, _) = app();
    let mut handles = vec![];
    for _ in 0..40 {
        let app = app.clone();
        handles.push(tokio::spawn(async move {
            let (status, body) = call(
                &app,
                "RegisterTaskDefinition",
                json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 8}]}),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            body["taskDefinition"]["revision"].as_i64().expect("revision")
        }));
    }
    let mut revs = vec![];
    for h in handles {
        revs.push(h.await.expect("join"));
    }
    revs.sort();
    assert_eq!(revs, (1..=40).collect::<Vec<_>>());
}

#[tokio::test]
async fn store_failure_is_a_server_exception() {
    // A record that does not decode is a server-side fault, not the client's.
    let (app, store) = app();
    let scope = Scope::new("000000000000", "us-east-1");
    store
        .txn(Txn {
            success: vec![Op::put(scope.cluster("broken"), b"not json".to_vec())],
            ..Default::default()
        })
        .await
        .expect("put");
    let (status, body) = call(&app, "DescribeClusters", json!({"clusters": ["broken"]})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["__type"], "ServerException");
    assert!(
        !body["message"].as_str().expect("message").contains("json"),
        "details stay in the log"
    );
}

#[test]
fn api_coverage_doc_matches_the_code() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/api-coverage.md"
    ))
    .expect("doc");
    for op in berth_wire::ecs::OPERATIONS {
        let line = doc
            .lines()
            .find(|l| l.starts_with(&format!("| {op} |")))
            .unwrap_or_else(|| panic!("docs/api-coverage.md has no row for {op}"));
        let supported = line.contains("| supported |") || line.contains("| partial |");
        assert_eq!(
            supported,
            berth_apiserver::ECS_IMPLEMENTED.contains(op),
            "docs/api-coverage.md row for {op} disagrees with the code: {line}"
        );
    }
}
