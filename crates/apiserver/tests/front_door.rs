//! Component tests: the router over a MemStore, no sockets.

use axum::http::StatusCode;
use berth_apiserver::{ApiConfig, AppState};
use berth_domain::Scope;
use berth_store::keys::Keys;
use berth_store::{MemStore, Op, Store, Txn};
use serde_json::json;
use std::sync::Arc;

mod common;
use common::call;

async fn app() -> (axum::Router, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    (
        common::router(AppState::new(store.clone(), ApiConfig::default())).await,
        store,
    )
}

async fn put(store: &Arc<dyn Store>, key: String, value: &[u8]) {
    store
        .txn(Txn {
            success: vec![Op::put(key, value.to_vec())],
            ..Default::default()
        })
        .await
        .expect("put");
}

/// Registers an instance in `cluster` and marks its agent connected, as
/// the gateway would while an agent holds its connection.
async fn instance_with_agent(app: &axum::Router, store: &Arc<dyn Store>, cluster: &str) -> String {
    let scope = Scope::new("000000000000", "us-east-1");
    let (_, ci) = call(
        app,
        "RegisterContainerInstance",
        json!({"cluster": cluster, "totalResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": 1024},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": 512}]}),
    )
    .await;
    let arn = ci["containerInstance"]["containerInstanceArn"]
        .as_str()
        .expect("arn")
        .to_string();
    let id = arn.rsplit('/').next().expect("id").to_string();
    put(
        store,
        scope.agent_connection(cluster, &id),
        br#"{"connected_at":0,"agent_version":"test"}"#,
    )
    .await;
    arn
}

#[tokio::test]
async fn delete_cluster_refuses_while_it_holds_work() {
    let (app, store) = app().await;
    let scope = Scope::new("000000000000", "us-east-1");
    call(&app, "CreateCluster", json!({"clusterName": "busy"})).await;
    let key = format!("{}x", scope.services_of("busy"));
    put(&store, key.clone(), b"{}").await;
    let (status, body) = call(&app, "DeleteCluster", json!({"cluster": "busy"})).await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("ClusterContainsServicesException")
        )
    );
    store
        .txn(Txn {
            success: vec![Op::delete(key)],
            ..Default::default()
        })
        .await
        .expect("delete");

    let arn = instance_with_agent(&app, &store, "busy").await;
    let (status, body) = call(&app, "DeleteCluster", json!({"cluster": "busy"})).await;
    assert_eq!(
        body["__type"], "ClusterContainsContainerInstancesException",
        "{status}"
    );
    call(
        &app,
        "RegisterTaskDefinition",
        json!({"family": "f", "containerDefinitions": [{"name": "c", "image": "i", "memory": 64}]}),
    )
    .await;
    let (status, run) = call(
        &app,
        "RunTask",
        json!({"cluster": "busy", "taskDefinition": "f"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let task = run["tasks"][0]["taskArn"]
        .as_str()
        .expect("task")
        .to_string();
    let (_, body) = call(
        &app,
        "DeregisterContainerInstance",
        json!({"cluster": "busy", "containerInstance": arn}),
    )
    .await;
    assert_eq!(body["message"], "Found running tasks on the instance.");
    let (status, _) = call(
        &app,
        "DeregisterContainerInstance",
        json!({"cluster": "busy", "containerInstance": arn, "force": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, d) = call(
        &app,
        "DescribeTasks",
        json!({"cluster": "busy", "tasks": [task]}),
    )
    .await;
    assert_eq!(d["tasks"][0]["desiredStatus"], "STOPPED");
    assert_eq!(
        d["tasks"][0]["stoppedReason"],
        "Container instance deregistration forced by user"
    );
    // Asked to stop, but no agent has reported it stopped: still a task.
    let (_, body) = call(&app, "DeleteCluster", json!({"cluster": "busy"})).await;
    assert_eq!(body["__type"], "ClusterContainsTasksException");
    let id = task.rsplit('/').next().expect("id");
    put(
        &store,
        scope.task_state("busy", id),
        format!(r#"{{"taskArn":"{task}","lastStatus":"STOPPED"}}"#).as_bytes(),
    )
    .await;
    let (status, body) = call(&app, "DeleteCluster", json!({"cluster": "busy"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cluster"]["status"], "INACTIVE");
}

/// A placement planned while its cluster was ACTIVE does not commit once
/// the cluster is deleted: its transaction compares the cluster record,
/// so no task is left behind in an INACTIVE cluster.
#[tokio::test]
async fn a_placement_planned_before_its_cluster_was_deleted_never_lands() {
    use berth_control::launch::{prepare, LaunchInput};
    use berth_control::{placement::place, Control, ControlConfig};
    let (app, store) = app().await;
    let scope = Scope::new("000000000000", "us-east-1");
    call(&app, "CreateCluster", json!({"clusterName": "race"})).await;
    call(
        &app,
        "RegisterTaskDefinition",
        json!({"family": "web", "containerDefinitions": [{"name": "c", "image": "busybox", "memory": 16}]}),
    )
    .await;
    let instance = instance_with_agent(&app, &store, "race").await;
    let ctl = Control::new(store.clone(), ControlConfig::default());
    let launch = prepare(
        &ctl,
        &scope,
        LaunchInput {
            task_definition: Some("web"),
            launch_type: "EC2",
            count: 1,
            ..Default::default()
        },
    )
    .await
    .expect("launch");
    let placed = place(&ctl, &scope, "race", &launch, None)
        .await
        .expect("plan");
    assert_eq!(placed.tasks.len(), 1, "the plan places the task");
    let (status, body) = call(
        &app,
        "DeregisterContainerInstance",
        json!({"cluster": "race", "containerInstance": instance, "force": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(&app, "DeleteCluster", json!({"cluster": "race"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let landed = store
        .txn(Txn::when(placed.compares, placed.ops))
        .await
        .expect("txn");
    assert!(
        !landed.succeeded,
        "a task was committed into a deleted cluster"
    );
    let (status, body) = call(&app, "ListTasks", json!({"cluster": "race"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn cluster_and_instance_counts_follow_the_tasks() {
    let (app, store) = app().await;
    let scope = Scope::new("000000000000", "us-east-1");
    call(&app, "CreateCluster", json!({"clusterName": "c"})).await;
    let arn = instance_with_agent(&app, &store, "c").await;
    call(
        &app,
        "RegisterTaskDefinition",
        json!({"family": "f", "containerDefinitions": [{"name": "c", "image": "i", "cpu": 256, "memory": 100,
               "portMappings": [{"containerPort": 80, "hostPort": 8080}]}]}),
    )
    .await;
    let (_, run) = call(
        &app,
        "RunTask",
        json!({"cluster": "c", "taskDefinition": "f"}),
    )
    .await;
    let task = run["tasks"][0]["taskArn"]
        .as_str()
        .expect("task")
        .to_string();
    assert_eq!(run["tasks"][0]["lastStatus"], "PROVISIONING");
    put(
        &store,
        scope.task_state("c", task.rsplit('/').next().expect("id")),
        format!(r#"{{"taskArn":"{task}","lastStatus":"RUNNING"}}"#).as_bytes(),
    )
    .await;
    put(&store, format!("{}s", scope.services_of("c")), b"{}").await;
    let (_, body) = call(&app, "DescribeClusters", json!({"clusters": ["c"]})).await;
    assert_eq!(body["clusters"][0]["runningTasksCount"], 1);
    assert_eq!(body["clusters"][0]["pendingTasksCount"], 0);
    assert_eq!(body["clusters"][0]["activeServicesCount"], 1);
    let (_, d) = call(
        &app,
        "DescribeContainerInstances",
        json!({"cluster": "c", "containerInstances": [arn]}),
    )
    .await;
    let ci = &d["containerInstances"][0];
    assert_eq!(ci["runningTasksCount"], 1);
    let remaining = &ci["remainingResources"];
    assert_eq!(remaining[0]["integerValue"], 1024 - 256);
    assert_eq!(remaining[1]["integerValue"], 512 - 100);
    assert!(remaining[2]["stringSetValue"]
        .as_array()
        .expect("ports")
        .contains(&json!("8080")));
    // The port is taken and memory is short: the next two fail with ECS's reasons.
    let (_, again) = call(
        &app,
        "RunTask",
        json!({"cluster": "c", "taskDefinition": "f"}),
    )
    .await;
    assert_eq!(again["tasks"], json!([]));
    assert_eq!(again["failures"][0]["reason"], "RESOURCE:PORTS");
}

#[tokio::test]
async fn concurrent_registrations_of_one_family_are_gapless() {
    let (app, _) = app().await;
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
    let (app, store) = app().await;
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
    // Each service's table is its own section.
    let section = |heading: &str| -> String {
        let start = doc
            .find(&format!("## {heading}"))
            .unwrap_or_else(|| panic!("docs/api-coverage.md has no {heading} section"));
        let rest = &doc[start + 3..];
        rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
    };
    let elbv2: Vec<&str> = berth_wire::elbv2::OPERATION_SHAPES
        .iter()
        .map(|(op, _, _)| *op)
        .collect();
    let services: [(&str, &[&str], &[&str]); 11] = [
        (
            "ECS",
            berth_wire::ecs::OPERATIONS,
            berth_apiserver::ECS_IMPLEMENTED,
        ),
        ("ELBv2", &elbv2, berth_apiserver::ELBV2_IMPLEMENTED),
        (
            "IAM",
            berth_wire::iam::OPERATIONS,
            berth_apiserver::IAM_IMPLEMENTED,
        ),
        (
            "SSM",
            berth_wire::ssm::OPERATIONS,
            berth_apiserver::SSM_IMPLEMENTED,
        ),
        (
            "Secrets Manager",
            berth_wire::secretsmanager::OPERATIONS,
            berth_apiserver::SECRETS_MANAGER_IMPLEMENTED,
        ),
        (
            "CloudWatch Logs",
            berth_wire::logs::OPERATIONS,
            berth_apiserver::LOGS_IMPLEMENTED,
        ),
        (
            "CloudWatch (",
            berth_wire::cloudwatch::OPERATIONS,
            berth_apiserver::CLOUDWATCH_IMPLEMENTED,
        ),
        (
            "Application Auto Scaling",
            berth_wire::application_autoscaling::OPERATIONS,
            berth_apiserver::AUTOSCALING_IMPLEMENTED,
        ),
        (
            "SQS",
            berth_wire::sqs::OPERATIONS,
            berth_apiserver::SQS_IMPLEMENTED,
        ),
        (
            "Auto Scaling (",
            berth_wire::autoscaling::OPERATIONS,
            berth_apiserver::ASG_IMPLEMENTED,
        ),
        (
            "EC2 (",
            berth_wire::ec2::OPERATIONS,
            berth_apiserver::EC2_IMPLEMENTED,
        ),
    ];
    for (heading, operations, implemented) in services {
        let table = section(heading);
        for op in operations {
            let line = table
                .lines()
                .find(|l| l.starts_with(&format!("| {op} |")))
                .unwrap_or_else(|| panic!("docs/api-coverage.md has no {heading} row for {op}"));
            let supported = line.contains("| supported |") || line.contains("| partial |");
            assert_eq!(
                supported,
                implemented.contains(op),
                "docs/api-coverage.md {heading} row for {op} disagrees with the code: {line}"
            );
        }
    }
}

/// Placement runs on a snapshot kept from the store's watch: concurrent
/// RunTasks never oversubscribe an instance, and what a stopped task held
/// is free again once its STOPPED report is in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placements_on_the_live_snapshot_never_oversubscribe_and_see_stops() {
    let (app, store) = app().await;
    let scope = Scope::new("000000000000", "us-east-1");
    call(&app, "CreateCluster", json!({"clusterName": "live"})).await;
    instance_with_agent(&app, &store, "live").await;
    call(
        &app,
        "RegisterTaskDefinition",
        json!({"family": "half", "containerDefinitions": [{"name": "c", "image": "i", "memory": 256}]}),
    )
    .await;
    let runs = (0..8).map(|_| {
        let app = app.clone();
        async move {
            call(
                &app,
                "RunTask",
                json!({"cluster": "live", "taskDefinition": "half"}),
            )
            .await
            .1
        }
    });
    let answers = futures::future::join_all(runs).await;
    let placed: Vec<String> = answers
        .iter()
        .flat_map(|a| a["tasks"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["taskArn"].as_str().map(String::from))
        .collect();
    assert_eq!(
        placed.len(),
        2,
        "512 MiB holds two tasks of 256: {answers:?}"
    );
    for a in answers.iter().filter(|a| a["tasks"] == json!([])) {
        assert_eq!(a["failures"][0]["reason"], "RESOURCE:MEMORY", "{a}");
    }
    // One stops: its memory is free for the next placement.
    let id = placed[0].rsplit('/').next().expect("id");
    put(
        &store,
        scope.task_state("live", id),
        format!(
            r#"{{"taskArn":"{}","lastStatus":"STOPPED","stoppedAt":1}}"#,
            placed[0]
        )
        .as_bytes(),
    )
    .await;
    let (_, next) = call(
        &app,
        "RunTask",
        json!({"cluster": "live", "taskDefinition": "half"}),
    )
    .await;
    assert_eq!(next["tasks"].as_array().map(Vec::len), Some(1), "{next}");
    let (_, full) = call(
        &app,
        "RunTask",
        json!({"cluster": "live", "taskDefinition": "half"}),
    )
    .await;
    assert_eq!(full["failures"][0]["reason"], "RESOURCE:MEMORY", "{full}");
}

/// A MemStore whose transactions take a while to commit, as a disk's
/// do, so that RunTasks arriving together queue for the next placement
/// turn instead of each finding it free.
struct SlowCommits(MemStore);

#[async_trait::async_trait]
impl Store for SlowCommits {
    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<berth_store::KeyValue>, berth_store::StoreError> {
        self.0.get(key).await
    }
    async fn range(
        &self,
        req: berth_store::RangeRequest,
    ) -> Result<berth_store::RangeResponse, berth_store::StoreError> {
        self.0.range(req).await
    }
    async fn last(
        &self,
        prefix: &str,
    ) -> Result<Option<berth_store::KeyValue>, berth_store::StoreError> {
        self.0.last(prefix).await
    }
    async fn txn(&self, txn: Txn) -> Result<berth_store::TxnResult, berth_store::StoreError> {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.0.txn(txn).await
    }
    async fn current_revision(&self) -> Result<berth_store::Revision, berth_store::StoreError> {
        self.0.current_revision().await
    }
    fn watch(&self, prefix: &str, from: berth_store::Revision) -> berth_store::WatchStream {
        self.0.watch(prefix, from)
    }
    async fn compact(
        &self,
        revision: berth_store::Revision,
    ) -> Result<(), berth_store::StoreError> {
        self.0.compact(revision).await
    }
    async fn lease_grant(
        &self,
        ttl: std::time::Duration,
    ) -> Result<berth_store::Lease, berth_store::StoreError> {
        self.0.lease_grant(ttl).await
    }
    async fn lease_keep_alive(
        &self,
        id: berth_store::LeaseId,
    ) -> Result<std::time::Duration, berth_store::StoreError> {
        self.0.lease_keep_alive(id).await
    }
    async fn lease_revoke(&self, id: berth_store::LeaseId) -> Result<(), berth_store::StoreError> {
        self.0.lease_revoke(id).await
    }
}

/// RunTasks queued for one placement turn are placed together in one
/// transaction: they never oversubscribe an instance, and a clientToken
/// that comes twice in the queue still places once (with other
/// parameters it is a conflict, not a second task).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_tasks_queued_for_one_turn_place_together_and_a_token_once() {
    let store: Arc<dyn Store> = Arc::new(SlowCommits(MemStore::new()));
    let app = common::router(AppState::new(store.clone(), ApiConfig::default())).await;
    call(&app, "CreateCluster", json!({"clusterName": "tok"})).await;
    instance_with_agent(&app, &store, "tok").await;
    for family in ["a", "b"] {
        call(
            &app,
            "RegisterTaskDefinition",
            json!({"family": family, "containerDefinitions": [{"name": "c", "image": "i", "memory": 8}]}),
        )
        .await;
    }
    // 40 calls without a token, then 12 with one (every third with
    // another definition), each asking for 8 of the instance's 512 MiB.
    // The first takes the turn alone; the rest queue behind its commit.
    let runs = (0..52).map(|i| {
        let app = app.clone();
        let token = i >= 40;
        let family = if token && i % 3 == 2 { "b" } else { "a" };
        let mut body = json!({"cluster": "tok", "taskDefinition": family});
        if token {
            body["clientToken"] = json!("same");
        }
        async move {
            let (status, body) = call(&app, "RunTask", body).await;
            (token, family, status, body)
        }
    });
    let answers = futures::future::join_all(runs).await;
    let first = answers
        .iter()
        .find(|(token, _, s, _)| *token && *s == 200)
        .map(|(_, f, _, b)| (*f, b["tasks"][0]["taskArn"].clone()))
        .expect("a call with the token placed");
    let mut untokened = 0;
    for (token, family, status, body) in &answers {
        if !token {
            assert_eq!(*status, 200, "{body}");
            untokened += body["tasks"].as_array().map_or(0, Vec::len);
        } else if *family == first.0 {
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body["tasks"][0]["taskArn"], first.1, "{body}");
        } else {
            assert_eq!(*status, 400, "{body}");
            assert_eq!(body["__type"], "ConflictException", "{body}");
        }
    }
    assert_eq!(untokened, 40, "{answers:?}");
    let (_, listed) = call(
        &app,
        "ListTasks",
        json!({"cluster": "tok", "maxResults": 100}),
    )
    .await;
    assert_eq!(
        listed["taskArns"].as_array().map(Vec::len),
        Some(41),
        "{listed}"
    );
}
