//! The task metadata endpoint's documents (v4, and v3 for older SDKs), in
//! the JSON shapes ECS documents: made from what the agent knows of a task
//! (its desired record and latest report) and what the engine says of its
//! containers. Fields ECS would leave null are left out.

use berth_runtime::ContainerInfo;
use berth_wire::agent::{DesiredTask, TaskReport};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Which version of the endpoint is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V3,
    V4,
}

/// What the endpoint keeps of a task: the driver's latest view.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub desired: DesiredTask,
    pub report: TaskReport,
    /// The cluster's name (the Fargate pool's hosts run every cluster's
    /// tasks, so not the host's).
    pub cluster: String,
}

/// `2026-12-06T23:59:59Z`.
pub fn rfc3339_seconds(epoch: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch.max(0) as u64);
    let s = berth_wire::sigv4::format_amz_date(t);
    // 20261206T235959Z
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    )
}

/// `2026-12-06T23:59:59.123456789Z`, as Go formats times.
pub fn rfc3339(epoch: f64) -> String {
    let whole = epoch.max(0.0).floor();
    let nanos = ((epoch - whole) * 1e9).round().min(999_999_999.0) as u64;
    let seconds = rfc3339_seconds(whole as i64);
    format!("{}.{nanos:09}Z", seconds.trim_end_matches('Z'))
}

fn put(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(k.into(), v);
    }
}

/// The task document: the task's fields and every container's.
pub fn task(s: &Snapshot, infos: &HashMap<String, ContainerInfo>, version: Version) -> Value {
    let d = &s.desired;
    let def = &d.definition;
    let mut m = Map::new();
    // Fargate reports the cluster's ARN, EC2 its name.
    let cluster = if d.launch_type == "FARGATE" {
        let prefix = d.task_arn.split(":task/").next().unwrap_or_default();
        format!("{prefix}:cluster/{}", s.cluster)
    } else {
        s.cluster.clone()
    };
    m.insert("Cluster".into(), json!(cluster));
    m.insert("TaskARN".into(), json!(d.task_arn));
    put(&mut m, "Family", def.family.clone().map(Value::from));
    put(
        &mut m,
        "Revision",
        def.revision.map(|r| Value::from(r.to_string())),
    );
    m.insert("DesiredStatus".into(), json!(d.desired_status.as_str()));
    m.insert("KnownStatus".into(), json!(s.report.last_status.as_str()));
    let cpu = def.cpu.as_deref().and_then(|c| c.parse::<f64>().ok());
    let memory = def.memory.as_deref().and_then(|c| c.parse::<i64>().ok());
    if cpu.is_some() || memory.is_some() {
        let mut limits = Map::new();
        put(&mut limits, "CPU", cpu.map(|c| json!(c / 1024.0)));
        put(&mut limits, "Memory", memory.map(Value::from));
        m.insert("Limits".into(), Value::Object(limits));
    }
    put(
        &mut m,
        "PullStartedAt",
        s.report.pull_started_at.map(|t| json!(rfc3339(t))),
    );
    put(
        &mut m,
        "PullStoppedAt",
        s.report.pull_stopped_at.map(|t| json!(rfc3339(t))),
    );
    put(
        &mut m,
        "AvailabilityZone",
        d.availability_zone.clone().map(Value::from),
    );
    if version == Version::V4 {
        m.insert("LaunchType".into(), json!(d.launch_type));
        // Berth's own: what keeps the task apart from others on its host,
        // as the task's berth.isolation attribute says.
        put(
            &mut m,
            "Isolation",
            s.report.isolation.clone().map(Value::from),
        );
        put(
            &mut m,
            "ServiceName",
            d.service_name.clone().map(Value::from),
        );
    }
    let containers: Vec<Value> = def
        .container_definitions
        .iter()
        .flatten()
        .filter_map(|c| c.name.as_deref())
        .map(|name| container(s, name, infos.get(name), version))
        .collect();
    m.insert("Containers".into(), Value::Array(containers));
    Value::Object(m)
}

/// One container's document.
pub fn container(
    s: &Snapshot,
    name: &str,
    info: Option<&ContainerInfo>,
    version: Version,
) -> Value {
    let d = &s.desired;
    let def = d
        .definition
        .container_definitions
        .iter()
        .flatten()
        .find(|c| c.name.as_deref() == Some(name));
    let report = s.report.containers.iter().find(|c| c.name == name);
    let mut m = Map::new();
    put(
        &mut m,
        "DockerId",
        info.map(|i| json!(i.id))
            .or_else(|| report.and_then(|r| r.runtime_id.clone()).map(Value::from)),
    );
    m.insert("Name".into(), json!(name));
    put(&mut m, "DockerName", info.map(|i| json!(i.name)));
    put(
        &mut m,
        "Image",
        def.and_then(|c| c.image.clone()).map(Value::from),
    );
    put(
        &mut m,
        "ImageID",
        info.map(|i| &i.image_id)
            .filter(|i| !i.is_empty())
            .map(|i| json!(i)),
    );
    put(&mut m, "Labels", info.map(|i| json!(i.labels)));
    m.insert("DesiredStatus".into(), json!(d.desired_status.as_str()));
    m.insert(
        "KnownStatus".into(),
        json!(report.map_or("PENDING", |r| r.last_status.as_str())),
    );
    let mut limits = Map::new();
    limits.insert("CPU".into(), json!(def.and_then(|c| c.cpu).unwrap_or(0)));
    put(
        &mut limits,
        "Memory",
        def.and_then(|c| c.memory.or(c.memory_reservation))
            .map(Value::from),
    );
    m.insert("Limits".into(), Value::Object(limits));
    put(
        &mut m,
        "CreatedAt",
        info.and_then(|i| i.created_at).map(|t| json!(rfc3339(t))),
    );
    put(
        &mut m,
        "StartedAt",
        info.and_then(|i| i.started_at).map(|t| json!(rfc3339(t))),
    );
    put(
        &mut m,
        "FinishedAt",
        info.and_then(|i| i.finished_at).map(|t| json!(rfc3339(t))),
    );
    put(
        &mut m,
        "ExitCode",
        report.and_then(|r| r.exit_code).map(Value::from),
    );
    m.insert("Type".into(), json!("NORMAL"));
    m.insert("Networks".into(), networks(s, info, version));
    if version == Version::V4 {
        let log = def.and_then(|c| c.log_configuration.as_ref());
        put(
            &mut m,
            "LogDriver",
            log.and_then(|l| l.log_driver.clone()).map(Value::from),
        );
        put(
            &mut m,
            "LogOptions",
            log.and_then(|l| l.options.as_ref()).map(|o| json!(o)),
        );
        put(
            &mut m,
            "ContainerARN",
            d.container_arns
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, arn)| json!(arn)),
        );
        if let Some(r) = report.filter(|r| !r.network_bindings.is_empty()) {
            let ports: Vec<Value> = r
                .network_bindings
                .iter()
                .map(|b| {
                    json!({
                        "ContainerPort": b.container_port,
                        "Protocol": b.protocol.clone().unwrap_or_else(|| "tcp".into()),
                        "HostPort": b.host_port,
                        "HostIp": b.bind_ip,
                    })
                })
                .collect();
            m.insert("Ports".into(), Value::Array(ports));
        }
        if let Some(h) = report.and_then(|r| r.health_status) {
            m.insert("Health".into(), json!({"status": h.as_str()}));
        }
    }
    Value::Object(m)
}

fn networks(s: &Snapshot, info: Option<&ContainerInfo>, version: Version) -> Value {
    if let Some(n) = &s.desired.network {
        let mut m = Map::new();
        m.insert("NetworkMode".into(), json!("awsvpc"));
        m.insert("IPv4Addresses".into(), json!([n.ip]));
        if version == Version::V4 {
            m.insert("AttachmentIndex".into(), json!(0));
            put(
                &mut m,
                "MACAddress",
                s.report.mac_address.clone().map(Value::from),
            );
            m.insert("IPv4SubnetCIDRBlock".into(), json!(n.cidr));
            let prefix = n.cidr.split('/').nth(1).unwrap_or("32");
            m.insert(
                "SubnetGatewayIpv4Address".into(),
                json!(format!("{}/{prefix}", n.gateway)),
            );
        }
        return json!([Value::Object(m)]);
    }
    let mode = s
        .desired
        .definition
        .network_mode
        .clone()
        .unwrap_or_else(|| "bridge".into());
    let addresses: Vec<&str> = info
        .map(|i| {
            i.networks
                .iter()
                .filter(|a| !a.ip.is_empty())
                .map(|a| a.ip.as_str())
                .collect()
        })
        .unwrap_or_default();
    if addresses.is_empty() && mode != "host" {
        return json!([]);
    }
    json!([{"NetworkMode": mode, "IPv4Addresses": addresses}])
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_wire::agent::{ContainerReport, ContainerStatus, DesiredNetwork, TaskStatus};
    use berth_wire::ecs as w;

    fn snapshot() -> Snapshot {
        let mut desired = crate::spec::tests::task(vec![w::ContainerDefinition {
            name: Some("web".into()),
            image: Some("nginx:1".into()),
            cpu: Some(256),
            memory: Some(128),
            ..Default::default()
        }]);
        desired.container_arns =
            vec![("web".into(), "arn:aws:ecs:us-east-1:0:container/c/u".into())];
        desired.availability_zone = Some("local-1a".into());
        Snapshot {
            desired,
            report: TaskReport {
                task_arn: "arn:aws:ecs:us-east-1:0:task/c/abc123".into(),
                last_status: TaskStatus::Running,
                containers: vec![ContainerReport {
                    name: "web".into(),
                    runtime_id: Some("d0c".into()),
                    last_status: ContainerStatus::Running,
                    ..Default::default()
                }],
                pull_started_at: Some(1_700_000_000.5),
                ..Default::default()
            },
            cluster: "c".into(),
        }
    }

    #[test]
    fn documents_have_ecs_fields_and_v3_leaves_out_v4s() {
        let s = snapshot();
        let v4 = task(&s, &HashMap::new(), Version::V4);
        assert_eq!(v4["Cluster"], "c");
        assert_eq!(v4["TaskARN"], "arn:aws:ecs:us-east-1:0:task/c/abc123");
        assert_eq!(v4["Family"], "web");
        assert_eq!(v4["Revision"], "3");
        assert_eq!(v4["KnownStatus"], "RUNNING");
        assert_eq!(v4["Limits"], json!({"CPU": 0.5, "Memory": 256}));
        assert_eq!(v4["PullStartedAt"], "2023-11-14T22:13:20.500000000Z");
        assert_eq!(v4["LaunchType"], "EC2");
        let c = &v4["Containers"][0];
        assert_eq!(c["DockerId"], "d0c");
        assert_eq!(c["Limits"], json!({"CPU": 256, "Memory": 128}));
        assert_eq!(c["ContainerARN"], "arn:aws:ecs:us-east-1:0:container/c/u");
        assert_eq!(c["Type"], "NORMAL");
        let v3 = task(&s, &HashMap::new(), Version::V3);
        assert!(v3.get("LaunchType").is_none());
        assert!(v3["Containers"][0].get("ContainerARN").is_none());
    }

    #[test]
    fn an_awsvpc_task_shows_its_interface_and_fargate_its_cluster_arn() {
        let mut s = snapshot();
        s.desired.launch_type = "FARGATE".into();
        s.desired.network = Some(DesiredNetwork {
            name: "berth-subnet-a".into(),
            subnet_id: "subnet-a".into(),
            cidr: "10.0.0.0/24".into(),
            gateway: "10.0.0.1".into(),
            ip: "10.0.0.9".into(),
            ingress: vec![],
            egress: None,
        });
        s.report.mac_address = Some("02:42:0a:00:00:09".into());
        let v4 = task(&s, &HashMap::new(), Version::V4);
        assert_eq!(v4["Cluster"], "arn:aws:ecs:us-east-1:0:cluster/c");
        let n = &v4["Containers"][0]["Networks"][0];
        assert_eq!(n["NetworkMode"], "awsvpc");
        assert_eq!(n["IPv4Addresses"], json!(["10.0.0.9"]));
        assert_eq!(n["SubnetGatewayIpv4Address"], "10.0.0.1/24");
        assert_eq!(n["MACAddress"], "02:42:0a:00:00:09");
    }
}
