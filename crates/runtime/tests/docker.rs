//! The Docker driver against the real engine (scripts/docker.sh starts
//! one; scripts/test-images.sh builds the image). Every container carries a
//! label unique to its test and is removed at the end.

use berth_runtime::docker::DockerRuntime;
use berth_runtime::{
    ContainerRuntime, ContainerSpec, ContainerState, EventKind, LogStream, MountSource, MountSpec,
    PortSpec, Protocol, PullBehavior, Pulled, RuntimeError, Ulimit,
};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const IMAGE: &str = "berth-test/busybox:latest";
const LABEL: &str = "berth.test";

async fn engine() -> DockerRuntime {
    let rt = DockerRuntime::connect(None)
        .await
        .expect("a Docker Engine on /var/run/docker.sock (scripts/docker.sh starts one)");
    assert_eq!(
        rt.pull(IMAGE, PullBehavior::PreferCached).await.ok(),
        Some(Pulled::Cached),
        "{IMAGE} is missing: run scripts/test-images.sh"
    );
    rt
}

fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

fn spec(tag: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        name: tag.to_string(),
        image: IMAGE.to_string(),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        labels: BTreeMap::from([(LABEL.to_string(), tag.to_string())]),
        ..Default::default()
    }
}

async fn cleanup(rt: &DockerRuntime, tag: &str) {
    for c in rt.list(LABEL, tag).await.expect("list") {
        rt.remove(&c.id).await.expect("remove");
    }
}

#[tokio::test]
async fn pull_behaviors_use_the_cache_or_fail_as_ecs_does() {
    let rt = engine().await;
    // No registry is reachable: pulls fail, and each behavior decides
    // whether the cached copy may stand in.
    assert_eq!(
        rt.pull(IMAGE, PullBehavior::Default).await.ok(),
        Some(Pulled::Cached)
    );
    let always = rt.pull(IMAGE, PullBehavior::Always).await;
    match always {
        Err(e @ RuntimeError::CannotPull(_)) => {
            assert!(
                e.to_string().starts_with("CannotPullContainerError: "),
                "{e}"
            )
        }
        other => panic!("always must go to the registry and fail: {other:?}"),
    }
    for behavior in [PullBehavior::PreferCached, PullBehavior::Default] {
        let missing = rt.pull("127.0.0.1:9/berth/none:1", behavior).await;
        assert!(
            matches!(missing, Err(RuntimeError::CannotPull(_))),
            "{behavior:?}: {missing:?}"
        );
    }
}

#[tokio::test]
async fn a_container_runs_with_its_spec_reports_events_and_logs_and_stops() {
    let rt = engine().await;
    let tag = unique("life");
    let mut events = rt.events(LABEL, &tag);
    let mut s = spec(
        &tag,
        "echo out-$GREETING; echo err >&2; echo kept > /data/file; \
         trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
    );
    s.env = vec![("GREETING".into(), "hello".into())];
    s.memory_bytes = Some(64 << 20);
    s.memory_reservation_bytes = Some(32 << 20);
    s.cpu_shares = Some(256);
    s.ports = vec![PortSpec {
        container_port: 8080,
        host_port: None,
        protocol: Protocol::Tcp,
    }];
    s.ulimits = vec![Ulimit {
        name: "nofile".into(),
        soft: 1024,
        hard: 2048,
    }];
    let host_dir = tempfile::tempdir().expect("tempdir");
    s.mounts = vec![MountSpec {
        source: MountSource::HostPath(host_dir.path().display().to_string()),
        target: "/data".into(),
        read_only: false,
    }];
    let id = rt.create(&s).await.expect("create");
    rt.start(&id).await.expect("start");

    let first = events.next().await.expect("event").expect("ok");
    assert_eq!(
        (first.id.as_str(), &first.kind),
        (id.as_str(), &EventKind::Started)
    );
    assert_eq!(
        first.labels.get(LABEL),
        Some(&tag),
        "labels travel with events"
    );

    let info = rt.inspect(&id).await.expect("inspect").expect("exists");
    assert_eq!(info.state, ContainerState::Running);
    assert_eq!(info.name, tag);
    assert!(info.started_at.is_some());
    let bound = &info.ports[0];
    assert_eq!(
        (bound.container_port, bound.protocol),
        (8080, Protocol::Tcp)
    );
    assert!(bound.host_port >= 1024, "a dynamic host port: {bound:?}");

    let stats = rt.stats(&id).await.expect("stats");
    assert_eq!(stats.memory_limit_bytes, 64 << 20, "the hard limit applies");

    // Output arrives in its own stream.
    let mut out = String::new();
    let mut err = String::new();
    let mut logs = rt.logs(&id, true);
    while !(out.contains("out-hello") && err.contains("err")) {
        let chunk = logs.next().await.expect("log").expect("ok");
        let text = String::from_utf8_lossy(&chunk.bytes).to_string();
        match chunk.stream {
            LogStream::Stdout => out.push_str(&text),
            LogStream::Stderr => err.push_str(&text),
        }
    }

    assert_eq!(
        std::fs::read_to_string(host_dir.path().join("file")).expect("written through the mount"),
        "kept\n"
    );
    assert_eq!(rt.list(LABEL, &tag).await.expect("list").len(), 1);
    rt.stop(&id, Duration::from_secs(10)).await.expect("stop");
    let died = loop {
        let e = events.next().await.expect("event").expect("ok");
        if let EventKind::Died { exit_code } = e.kind {
            break exit_code;
        }
    };
    assert_eq!(died, Some(0), "the trap ran: SIGTERM came first");
    let info = rt.inspect(&id).await.expect("inspect").expect("exists");
    assert_eq!(
        (info.state, info.exit_code),
        (ContainerState::Exited, Some(0))
    );
    assert!(info.finished_at.is_some());
    rt.stop(&id, Duration::from_secs(1))
        .await
        .expect("stopping a stopped container is fine");
    cleanup(&rt, &tag).await;
    assert_eq!(rt.inspect(&id).await.expect("inspect"), None);
    rt.remove(&id).await.expect("removing twice is fine");
}

#[tokio::test]
async fn stop_kills_a_container_that_ignores_sigterm_after_the_timeout() {
    let rt = engine().await;
    let tag = unique("kill");
    let id = rt
        .create(&spec(&tag, "trap '' TERM; while true; do sleep 0.1; done"))
        .await
        .expect("create");
    rt.start(&id).await.expect("start");
    rt.stop(&id, Duration::from_secs(1)).await.expect("stop");
    let info = rt.inspect(&id).await.expect("inspect").expect("exists");
    assert_eq!(info.exit_code, Some(137), "SIGKILL (128 + 9)");
    cleanup(&rt, &tag).await;
}

#[tokio::test]
async fn the_engine_refuses_bad_specs_and_reports_missing_containers() {
    let rt = engine().await;
    let tag = unique("bad");
    let id = rt.create(&spec(&tag, "true")).await.expect("create");
    let again = rt.create(&spec(&tag, "true")).await;
    assert!(
        matches!(again, Err(RuntimeError::Rejected(ref m)) if m.contains("already in use")),
        "{again:?}"
    );
    let mut missing_image = spec(&format!("{tag}-x"), "true");
    missing_image.image = "berth-test/not-built:1".into();
    assert!(rt.create(&missing_image).await.is_err());
    assert_eq!(
        rt.inspect("no-such-container").await.expect("inspect"),
        None
    );
    assert!(matches!(
        rt.start("no-such-container").await,
        Err(RuntimeError::NotFound(_))
    ));
    rt.remove(&id).await.expect("remove");
}

/// awsvpc's building blocks: a bridge network for a subnet, a pause
/// container holding a namespace at a fixed address, and a container that
/// joins it and sees that address as its own.
#[tokio::test]
async fn a_pause_container_holds_a_namespace_at_a_fixed_address_that_others_join() {
    use berth_runtime::{NetworkMode, NetworkSpec};
    let rt = engine().await;
    rt.ensure_pause_image().await.expect("pause image");
    // Twice is fine.
    rt.ensure_pause_image().await.expect("pause image again");
    let tag = unique("awsvpc");
    let octet = 100 + (std::process::id() % 100);
    let net = NetworkSpec {
        name: tag.clone(),
        cidr: format!("10.219.{octet}.0/24"),
        gateway: format!("10.219.{octet}.1"),
        labels: BTreeMap::from([(LABEL.to_string(), tag.clone())]),
    };
    rt.ensure_network(&net).await.expect("network");
    rt.ensure_network(&net)
        .await
        .expect("the same network again");
    let clash = NetworkSpec {
        cidr: "10.218.0.0/24".into(),
        ..net.clone()
    };
    assert!(matches!(
        rt.ensure_network(&clash).await,
        Err(RuntimeError::Rejected(_))
    ));
    let ip = format!("10.219.{octet}.7");
    let pause = ContainerSpec {
        name: format!("{tag}-pause"),
        image: berth_runtime::pause::IMAGE.to_string(),
        labels: BTreeMap::from([(LABEL.to_string(), tag.clone())]),
        network_mode: NetworkMode::Attached {
            network: tag.clone(),
            ip: ip.clone(),
        },
        ..Default::default()
    };
    let pid = rt.create(&pause).await.expect("create pause");
    rt.start(&pid).await.expect("start pause");
    let info = rt.inspect(&pid).await.expect("inspect").expect("exists");
    assert_eq!(info.state, ContainerState::Running);
    assert_eq!(info.networks.len(), 1);
    assert_eq!(
        (
            info.networks[0].network.as_str(),
            info.networks[0].ip.as_str()
        ),
        (tag.as_str(), ip.as_str())
    );
    assert_eq!(info.networks[0].mac.len(), 17, "{:?}", info.networks[0]);
    let mut app = spec(
        &format!("{tag}-app"),
        "ip -4 addr show eth0 | grep -o 'inet [0-9.]*'",
    );
    app.labels = BTreeMap::from([(LABEL.to_string(), tag.clone())]);
    app.network_mode = NetworkMode::Container(pid.clone());
    let aid = rt.create(&app).await.expect("create app");
    rt.start(&aid).await.expect("start app");
    let mut out = String::new();
    for _ in 0..100 {
        let done = rt
            .inspect(&aid)
            .await
            .expect("inspect")
            .expect("exists")
            .state
            == ContainerState::Exited;
        if done {
            let chunks: Vec<_> = rt.logs(&aid, false).collect().await;
            out = chunks
                .into_iter()
                .filter_map(Result::ok)
                .map(|c| String::from_utf8_lossy(&c.bytes).to_string())
                .collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(out.trim(), format!("inet {ip}"));
    rt.stop(&pid, Duration::ZERO).await.expect("stop pause");
    cleanup(&rt, &tag).await;
    rt.remove_network(&tag).await.expect("remove network");
    rt.remove_network(&tag)
        .await
        .expect("removing a missing network is fine");
}
