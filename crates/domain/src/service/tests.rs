use super::*;
use crate::task::{DesiredStatus, Reservation, StopCode, StopRequest};

const TUNING: Tuning = Tuning { settle_secs: 5.0 };

fn service(desired: u32) -> Service {
    Service {
        name: "web".into(),
        cluster: "default".into(),
        status: ServiceStatus::Active,
        scheduling: Scheduling::Replica,
        desired_count: desired,
        launch_type: "EC2".into(),
        capacity_provider_strategy: vec![],
        task_definition_arn: "td:1".into(),
        rolling: Rolling::with_defaults(Scheduling::Replica, None, None).expect("defaults"),
        circuit_breaker: None,
        monitoring: None,
        placement_constraints: vec![],
        placement_strategy: vec![],
        health_check_grace_period_seconds: 0,
        load_balancers: vec![],
        role_arn: None,
        network_configuration: None,
        propagate_tags: "NONE".into(),
        enable_ecs_managed_tags: false,
        enable_execute_command: false,
        tags: vec![],
        created_at: 0.0,
        created_by: "root".into(),
        client_token: None,
        deployments: vec![Deployment::new("td:1", 0.0, 1)],
        events: vec![],
        steady: false,
        deleted_at: None,
        daemon_desired: 0,
        unplaceable_reported_at: None,
        version: 1,
    }
}

fn task(id: &str, deployment: &str, instance: &str) -> Task {
    Task {
        id: id.into(),
        cluster: "default".into(),
        task_definition_arn: "td:1".into(),
        family: "td".into(),
        definition: w::TaskDefinition::default(),
        containers: vec![],
        overrides: None,
        container_instance: instance.into(),
        capacity_provider: None,
        availability_zone: Some(format!("az-{instance}")),
        launch_type: "EC2".into(),
        group: "service:web".into(),
        started_by: Some(deployment.into()),
        service: Some("web".into()),
        tags: vec![],
        created_at: 0.0,
        desired_status: DesiredStatus::Running,
        stop: None,
        reservation: Reservation::default(),
        enable_execute_command: false,
        protected_until: None,
        network: None,
        deactivation: None,
        version: 1,
    }
}

fn report(status: &str, started_at: f64) -> ObservedTask {
    ObservedTask {
        task_arn: "arn".into(),
        last_status: TaskStatus::parse(status).expect("a task status"),
        started_at: Some(started_at),
        stopped_at: (status == "STOPPED").then_some(started_at + 100.0),
        ..Default::default()
    }
}

fn ids() -> impl FnMut() -> (String, u64) {
    let mut n = 100;
    move || {
        n += 1;
        (format!("event-{n}"), n)
    }
}

fn members<'a>(items: &'a [(Task, Option<ObservedTask>)]) -> Vec<Member<'a>> {
    items
        .iter()
        .map(|(t, r)| Member {
            task: t,
            report: r.as_ref(),
            on_draining: false,
            lb: None,
        })
        .collect()
}

#[test]
fn a_new_service_starts_its_desired_count() {
    let s = service(3);
    let p = plan(&s, &[], TUNING, 10.0, ids());
    assert_eq!(p.start, 3);
    assert!(p.stop.is_empty());
}

#[test]
fn a_stopped_task_is_replaced_at_once() {
    let s = service(2);
    let d = s.primary().id.clone();
    let items = vec![
        (task("a", &d, "i1"), Some(report("RUNNING", 0.0))),
        (task("b", &d, "i2"), Some(report("STOPPED", 0.0))),
    ];
    let p = plan(&s, &members(&items), TUNING, 200.0, ids());
    assert_eq!(p.start, 1);
    let counts = Counts::from_members(&s, &members(&items));
    assert_eq!(
        counts.of(&d).failed,
        1,
        "a task that stopped by itself failed"
    );
}

#[test]
fn steady_state_is_announced_once_and_completes_the_deployment() {
    let s = service(1);
    let d = s.primary().id.clone();
    let items = vec![(task("a", &d, "i1"), Some(report("RUNNING", 0.0)))];
    // Not yet settled.
    let p = plan(&s, &members(&items), TUNING, 2.0, ids());
    assert_eq!((p.start, p.stop.len()), (0, 0));
    assert_eq!(p.recheck_after, Some(3.0));
    // Settled: completed and steady.
    let p = plan(&s, &members(&items), TUNING, 6.0, ids());
    let next = p.update.expect("changed");
    assert_eq!(next.primary().rollout_state, RolloutState::Completed);
    assert!(next.steady);
    let said: Vec<&str> = next.events.iter().map(|e| e.message.as_str()).collect();
    assert!(
        said.contains(&"(service web) has reached a steady state."),
        "{said:?}"
    );
    // Again: nothing to say.
    let p = plan(&next, &members(&items), TUNING, 7.0, ids());
    assert_eq!(p.update, None);
}

#[test]
fn a_rolling_update_starts_new_tasks_then_stops_the_old_ones() {
    let mut s = service(2);
    let old = s.primary().id.clone();
    s.deployments[0].rollout_state = RolloutState::Completed;
    s.deploy("td:2", 50.0, 7);
    let new = s.primary().id.clone();
    assert_eq!(s.deployments[0].sources, vec![old.clone()]);
    let mut items = vec![
        (task("a", &old, "i1"), Some(report("RUNNING", 0.0))),
        (task("b", &old, "i2"), Some(report("RUNNING", 0.0))),
    ];
    let p = plan(&s, &members(&items), TUNING, 51.0, ids());
    assert_eq!((p.start, p.stop.len()), (2, 0), "100/200: all new first");
    items.push((task("c", &new, "i1"), Some(report("RUNNING", 52.0))));
    items.push((task("d", &new, "i2"), Some(report("RUNNING", 52.0))));
    let p = plan(&s, &members(&items), TUNING, 53.0, ids());
    assert!(p.stop.is_empty(), "the new tasks have not settled yet");
    let p = plan(&s, &members(&items), TUNING, 58.0, ids());
    let stopped: Vec<&str> = p.stop.iter().map(|s| s.task.as_str()).collect();
    assert_eq!(stopped, vec!["a", "b"]);
    assert!(p.stop.iter().all(|s| !s.failure));
    // The old ones gone: the deployment completes and the old one goes INACTIVE.
    items[0].1 = Some(report("STOPPED", 0.0));
    items[1].1 = Some(report("STOPPED", 0.0));
    for (t, _) in items.iter_mut().take(2) {
        t.stop = Some(StopRequest {
            code: StopCode::ServiceSchedulerInitiated,
            reason: "scale".into(),
            at: 58.0,
            failure: false,
        });
    }
    let p = plan(&s, &members(&items), TUNING, 59.0, ids());
    let next = p.update.expect("changed");
    assert_eq!(next.primary().rollout_state, RolloutState::Completed);
    assert!(!next.deployments[1].active);
    let counts = Counts::from_members(&s, &members(&items));
    assert_eq!(
        counts.of(&old).failed,
        0,
        "scheduler stops are not failures"
    );
}

#[test]
fn the_circuit_breaker_fails_the_deployment_and_rolls_back() {
    let mut s = service(2);
    s.circuit_breaker = Some(CircuitBreaker { rollback: true });
    let good = s.primary().id.clone();
    s.deployments[0].rollout_state = RolloutState::Completed;
    s.deploy("td:bad", 50.0, 9);
    let bad = s.primary().id.clone();
    let mut items = vec![
        (task("a", &good, "i1"), Some(report("RUNNING", 0.0))),
        (task("b", &good, "i2"), Some(report("RUNNING", 0.0))),
    ];
    for id in ["x", "y", "z"] {
        items.push((task(id, &bad, "i1"), Some(report("STOPPED", 51.0))));
    }
    let p = plan(&s, &members(&items), TUNING, 52.0, ids());
    assert_eq!(p.start, 0);
    let next = p.update.expect("changed");
    assert_eq!(next.task_definition_arn, "td:1", "rolled back");
    assert_eq!(next.primary().rollback_of.as_deref(), Some(bad.as_str()));
    let failed = next.deployment(&bad).expect("kept");
    assert_eq!(failed.rollout_state, RolloutState::Failed);
    assert_eq!(next.deployment_status(failed).0, "ROLLBACK_IN_PROGRESS");
    let said: Vec<&str> = next.events.iter().map(|e| e.message.as_str()).collect();
    assert!(said
        .iter()
        .any(|m| m.contains("deployment failed: tasks failed to start")));
    assert!(said
        .iter()
        .any(|m| m.contains(&format!("rolling back to deployment {good}"))));
    // The rollback deployment's tasks: the old healthy ones are not its
    // own, so it starts two and, once they settle, the old ones go.
    let p = plan(&next, &members(&items), TUNING, 53.0, ids());
    assert_eq!(p.start, 2);
}

#[test]
fn without_rollback_a_failed_deployment_stays_primary() {
    let mut s = service(1);
    s.circuit_breaker = Some(CircuitBreaker { rollback: false });
    let d = s.primary().id.clone();
    let items: Vec<_> = ["x", "y", "z"]
        .iter()
        .map(|id| (task(id, &d, "i1"), Some(report("STOPPED", 1.0))))
        .collect();
    let next = plan(&s, &members(&items), TUNING, 5.0, ids())
        .update
        .expect("changed");
    assert_eq!(next.primary().rollout_state, RolloutState::Failed);
    assert_eq!(next.deployment_status(next.primary()).0, "STOPPED");
}

#[test]
fn scale_in_stops_where_the_service_is_densest() {
    let s = service(2);
    let d = s.primary().id.clone();
    let items = vec![
        (task("a", &d, "i1"), Some(report("RUNNING", 0.0))),
        (task("b", &d, "i1"), Some(report("RUNNING", 0.0))),
        (task("c", &d, "i2"), Some(report("RUNNING", 0.0))),
        (task("e", &d, "i2"), Some(report("PENDING", 0.0))),
    ];
    let p = plan(&s, &members(&items), TUNING, 100.0, ids());
    let stopped: Vec<&str> = p.stop.iter().map(|s| s.task.as_str()).collect();
    assert_eq!(
        stopped,
        vec!["e", "a"],
        "pending first, then the crowded zone"
    );
}

#[test]
fn scale_in_passes_over_protected_tasks_until_their_protection_ends() {
    let s = service(1);
    let d = s.primary().id.clone();
    let mut a = task("a", &d, "i1");
    a.protected_until = Some(500.0);
    let mut b = task("b", &d, "i2");
    b.protected_until = Some(300.0);
    let c = task("c", &d, "i2");
    let items = vec![
        (a.clone(), Some(report("RUNNING", 0.0))),
        (b.clone(), Some(report("RUNNING", 0.0))),
        (c, Some(report("RUNNING", 0.0))),
    ];
    let p = plan(&s, &members(&items), TUNING, 100.0, ids());
    let stopped: Vec<&str> = p.stop.iter().map(|s| s.task.as_str()).collect();
    assert_eq!(stopped, vec!["c"], "only the unprotected task goes");
    assert_eq!(
        p.recheck_after,
        Some(200.0),
        "looked at again when b's ends"
    );
    // All protected: nothing stops yet; once b's protection ends, b goes.
    let items = vec![
        (a, Some(report("RUNNING", 0.0))),
        (b, Some(report("RUNNING", 0.0))),
    ];
    assert!(plan(&s, &members(&items), TUNING, 100.0, ids())
        .stop
        .is_empty());
    let later = plan(&s, &members(&items), TUNING, 301.0, ids());
    assert_eq!(
        later
            .stop
            .iter()
            .map(|s| s.task.as_str())
            .collect::<Vec<_>>(),
        vec!["b"]
    );
}

#[test]
fn a_task_on_a_draining_instance_is_replaced_before_it_stops() {
    let s = service(1);
    let d = s.primary().id.clone();
    let items = vec![(task("a", &d, "i1"), Some(report("RUNNING", 0.0)))];
    let mut m = members(&items);
    m[0].on_draining = true;
    let p = plan(&s, &m, TUNING, 100.0, ids());
    assert_eq!((p.start, p.stop.len()), (1, 0));
}

#[test]
fn unhealthy_tasks_are_replaced_after_the_grace_period() {
    let mut s = service(1);
    s.health_check_grace_period_seconds = 30;
    let d = s.primary().id.clone();
    let mut t = task("a", &d, "i1");
    t.definition.container_definitions = Some(vec![w::ContainerDefinition {
        name: Some("app".into()),
        health_check: Some(w::HealthCheck::default()),
        ..Default::default()
    }]);
    let mut r = report("RUNNING", 0.0);
    r.health_status = Some(HealthStatus::Unhealthy);
    let items = vec![(t, Some(r))];
    let p = plan(&s, &members(&items), TUNING, 10.0, ids());
    assert!(p.stop.is_empty(), "within the grace period");
    let p = plan(&s, &members(&items), TUNING, 31.0, ids());
    assert_eq!(p.stop.len(), 1);
    assert!(p.stop[0].failure);
    assert_eq!(p.start, 1);
}

#[test]
fn a_deleted_service_stops_everything_then_goes_inactive() {
    let mut s = service(2);
    s.status = ServiceStatus::Draining;
    let d = s.primary().id.clone();
    let mut items = vec![(task("a", &d, "i1"), Some(report("RUNNING", 0.0)))];
    let p = plan(&s, &members(&items), TUNING, 100.0, ids());
    assert_eq!((p.start, p.stop.len()), (0, 1));
    items[0].1 = Some(report("STOPPED", 0.0));
    let next = plan(&s, &members(&items), TUNING, 101.0, ids())
        .update
        .expect("changed");
    assert_eq!(next.status, ServiceStatus::Inactive);
}

#[test]
fn tasks_that_keep_dying_are_started_more_slowly() {
    let s = service(1);
    let d = s.primary().id.clone();
    let mut items: Vec<_> = ["x", "y", "z"]
        .iter()
        .map(|id| {
            let mut r = report("STOPPED", 10.0);
            r.stopped_at = Some(11.0);
            (task(id, &d, "i1"), Some(r))
        })
        .collect();
    for (t, _) in items.iter_mut() {
        t.created_at = 9.0;
    }
    let p = plan(&s, &members(&items), TUNING, 12.0, ids());
    assert_eq!(p.start, 0);
    assert_eq!(p.recheck_after, Some(2.0));
    let p = plan(&s, &members(&items), TUNING, 14.5, ids());
    assert_eq!(p.start, 1);
}

#[test]
fn deployment_configuration_keeps_what_an_update_leaves_out() {
    let (r, cb) = deployment_configuration(
        Scheduling::Replica,
        Some(&w::DeploymentConfiguration {
            minimum_healthy_percent: Some(50),
            deployment_circuit_breaker: Some(w::DeploymentCircuitBreaker {
                enable: Some(true),
                rollback: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }),
        None,
    )
    .expect("valid");
    assert_eq!((r.minimum_healthy_percent, r.maximum_percent), (50, 200));
    let (r2, cb2) = deployment_configuration(
        Scheduling::Replica,
        Some(&w::DeploymentConfiguration {
            maximum_percent: Some(150),
            ..Default::default()
        }),
        Some((r, cb)),
    )
    .expect("valid");
    assert_eq!((r2.minimum_healthy_percent, r2.maximum_percent), (50, 150));
    assert_eq!(cb2, Some(CircuitBreaker { rollback: true }));
    let err = deployment_configuration(
        Scheduling::Replica,
        Some(&w::DeploymentConfiguration {
            maximum_percent: Some(90),
            minimum_healthy_percent: Some(100),
            ..Default::default()
        }),
        None,
    )
    .expect_err("max below min");
    assert!(err.to_string().contains("maximumPercent"));
}

#[test]
fn service_references_parse() {
    let scope = Scope::new("000000000000", "us-east-1");
    assert_eq!(
        crate::arn::service_name(&scope, "c", "web").as_deref(),
        Some("web")
    );
    let arn = scope.service_arn("c", "web");
    assert_eq!(
        crate::arn::service_name(&scope, "c", &arn).as_deref(),
        Some("web")
    );
    assert_eq!(crate::arn::service_name(&scope, "other", &arn), None);
    let d = scope.service_deployment_arn("c", "web", "0000000000000000007");
    assert_eq!(
        crate::arn::service_deployment_parts(&scope, "service-deployment", &d),
        Some(("c".into(), "web".into(), "0000000000000000007".into()))
    );
}

#[test]
fn scale_in_keeps_what_remains_spread() {
    let s = service(2);
    let d = s.primary().id.clone();
    let items: Vec<_> = [
        ("a", "i1"),
        ("b", "i1"),
        ("c", "i1"),
        ("e", "i2"),
        ("f", "i2"),
    ]
    .iter()
    .map(|(id, i)| (task(id, &d, i), Some(report("RUNNING", 0.0))))
    .collect();
    let p = plan(&s, &members(&items), TUNING, 100.0, ids());
    let stopped: Vec<&str> = p.stop.iter().map(|s| s.task.as_str()).collect();
    let left_on_i1 = ["a", "b", "c"]
        .iter()
        .filter(|t| !stopped.contains(t))
        .count();
    assert_eq!((stopped.len(), left_on_i1), (3, 1), "{stopped:?}");
}

fn daemon() -> Service {
    let mut s = service(0);
    s.scheduling = Scheduling::Daemon;
    s.rolling = Rolling::with_defaults(Scheduling::Daemon, None, None).expect("defaults");
    s
}

#[test]
fn a_daemon_runs_one_task_on_each_eligible_instance() {
    let s = daemon();
    let d = s.primary().id.clone();
    let eligible: std::collections::BTreeSet<String> =
        ["i1", "i2", "i3"].iter().map(|s| s.to_string()).collect();
    let items = vec![
        (task("a", &d, "i1"), Some(report("RUNNING", 0.0))),
        (task("b", &d, "i1"), Some(report("RUNNING", 0.0))),
        (task("c", &d, "i9"), Some(report("RUNNING", 0.0))),
    ];
    let p = plan_daemon(&s, &members(&items), &eligible, TUNING, 100.0, ids());
    let stopped: Vec<&str> = p.stop.iter().map(|s| s.task.as_str()).collect();
    assert_eq!(
        stopped,
        vec!["b", "c"],
        "a second task, and one on an instance that left"
    );
    assert_eq!(p.start_on, vec!["i2".to_string(), "i3".to_string()]);
    assert_eq!(p.update.expect("changed").daemon_desired, 3);
}

#[test]
fn a_daemon_rollout_stops_the_old_task_before_starting_the_new_one() {
    let mut s = daemon();
    let old = s.primary().id.clone();
    s.deployments[0].rollout_state = RolloutState::Completed;
    s.deploy("td:2", 10.0, 5);
    let eligible: std::collections::BTreeSet<String> = ["i1".to_string()].into();
    let mut items = vec![(task("a", &old, "i1"), Some(report("RUNNING", 0.0)))];
    let p = plan_daemon(&s, &members(&items), &eligible, TUNING, 11.0, ids());
    assert_eq!((p.stop.len(), p.start_on.len()), (1, 0));
    items[0].1 = Some(report("STOPPED", 0.0));
    let p = plan_daemon(&s, &members(&items), &eligible, TUNING, 12.0, ids());
    assert_eq!(p.start_on, vec!["i1".to_string()]);
    let new = s.primary().id.clone();
    items.push((task("b", &new, "i1"), Some(report("RUNNING", 12.0))));
    let next = plan_daemon(&s, &members(&items), &eligible, TUNING, 20.0, ids())
        .update
        .expect("changed");
    assert_eq!(next.primary().rollout_state, RolloutState::Completed);
    assert!(!next.deployments[1].active);
    assert!(next.steady);
}

#[test]
fn binpack_scale_in_empties_the_sparsest_instance() {
    let mut s = service(3);
    s.placement_strategy = vec![w::PlacementStrategy {
        r#type: Some("binpack".into()),
        field: Some("memory".into()),
    }];
    let d = s.primary().id.clone();
    let items: Vec<_> = [("a", "i1"), ("b", "i1"), ("c", "i1"), ("e", "i2")]
        .iter()
        .map(|(id, i)| (task(id, &d, i), Some(report("RUNNING", 0.0))))
        .collect();
    let p = plan(&s, &members(&items), TUNING, 100.0, ids());
    let stopped: Vec<&str> = p.stop.iter().map(|s| s.task.as_str()).collect();
    assert_eq!(stopped, vec!["e"]);
}

#[test]
fn behind_a_load_balancer_a_task_is_healthy_once_its_targets_are() {
    let mut s = service(1);
    s.health_check_grace_period_seconds = 30;
    let items = vec![(
        task("a", &s.primary().id, "i1"),
        Some(report("RUNNING", 0.0)),
    )];
    let at = |lb: &LbHealth, now: f64| {
        let m = Member {
            task: &items[0].0,
            report: items[0].1.as_ref(),
            on_draining: false,
            lb: Some(lb),
        };
        health(&m, 30.0, TUNING, now)
    };
    // Past the settle time, but its target is still being checked.
    assert_eq!(at(&LbHealth::Pending, 100.0), Health::Starting);
    assert_eq!(at(&LbHealth::Healthy, 1.0), Health::Healthy);
    let failing = LbHealth::Unhealthy {
        target_group: "arn:tg".into(),
    };
    // Failures within the grace period are ignored.
    assert_eq!(at(&failing, 10.0), Health::Starting);
    assert_eq!(at(&failing, 31.0), Health::Unhealthy);

    let mut ms = members(&items);
    ms[0].lb = Some(&failing);
    let p = plan(&s, &ms, TUNING, 31.0, ids());
    assert_eq!(p.stop.len(), 1);
    assert_eq!(
        p.stop[0].reason,
        "Task failed ELB health checks in (target-group arn:tg)"
    );
    assert!(p.stop[0].failure);
    // It is replaced at once.
    assert_eq!(p.start, 1);
}

#[test]
fn a_task_draining_from_its_load_balancer_is_already_leaving() {
    let s = service(1);
    let mut t = task("a", &s.primary().id, "i1");
    t.deactivation = Some(crate::task::Deactivation {
        until: 50.0,
        stop: StopRequest {
            code: StopCode::ServiceSchedulerInitiated,
            reason: "scale-in".into(),
            at: 40.0,
            failure: false,
        },
    });
    let items = vec![(t, Some(report("RUNNING", 0.0)))];
    let p = plan(&s, &members(&items), TUNING, 45.0, ids());
    assert!(p.stop.is_empty());
    assert_eq!(p.start, 1);
    let view = items[0].0.view(
        &Scope::new("000000000000", "us-east-1"),
        items[0].1.as_ref(),
        false,
    );
    assert_eq!(view.last_status.as_deref(), Some("DEACTIVATING"));
    assert_eq!(view.desired_status.as_deref(), Some("STOPPED"));
}

#[test]
fn each_deployment_keeps_the_load_balancers_it_began_with() {
    let mut s = service(2);
    let lb = w::LoadBalancer {
        target_group_arn: Some("arn:aws:elasticloadbalancing:r:1:targetgroup/web/abc".into()),
        container_name: Some("c".into()),
        container_port: Some(80),
        ..Default::default()
    };
    s.load_balancers = vec![lb.clone()];
    s.deploy("arn:td:2", 10.0, 2);
    s.load_balancers = vec![];
    s.deploy("arn:td:3", 20.0, 3);
    assert_eq!(s.deployments[1].load_balancers, vec![lb]);
    assert!(s.deployments[0].load_balancers.is_empty());
}

#[test]
fn monitoring_configurations_are_checked_as_ecs_checks_them() {
    let m = |configs: Vec<(Vec<&str>, Option<i32>)>| w::MonitoringConfiguration {
        metric_configurations: Some(
            configs
                .into_iter()
                .map(|(names, r)| w::MetricConfiguration {
                    metric_names: Some(names.into_iter().map(String::from).collect()),
                    resolution_seconds: r,
                })
                .collect(),
        ),
    };
    assert!(check_monitoring(&m(vec![(
        vec!["CPUUtilization", "MemoryUtilization"],
        Some(20)
    )]))
    .is_ok());
    assert!(check_monitoring(&m(vec![(vec!["CPUUtilization"], Some(30))])).is_err());
    assert!(check_monitoring(&m(vec![(vec![], Some(20))])).is_err());
    assert!(check_monitoring(&m(vec![(vec!["GPUUtilization"], Some(20))])).is_err());
    assert!(check_monitoring(&m(vec![
        (vec!["CPUUtilization"], Some(20)),
        (vec!["CPUUtilization"], Some(60))
    ]))
    .is_err());
    let mut s = service(1);
    assert_eq!(s.resolution("CPUUtilization"), 60);
    s.monitoring = Some(m(vec![(vec!["CPUUtilization"], Some(20))]));
    assert_eq!(
        (
            s.resolution("CPUUtilization"),
            s.resolution("MemoryUtilization")
        ),
        (20, 60)
    );
}
