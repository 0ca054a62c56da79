//! What the agents' samples of task use become in CloudWatch, as ECS
//! defines its metrics. Pure: the caller passes each task's facts, what
//! it used and when.
//!
//! - `AWS/ECS` `CPUUtilization` and `MemoryUtilization` per service
//!   (`ClusterName`, `ServiceName`): each task's use as a percentage of
//!   what it reserves, one datapoint per task and sample, so a period's
//!   Average is the service's use over its reservation (tasks reserve
//!   alike) and Minimum and Maximum are the least and most loaded task.
//!   Only running tasks publish: a service with none has no datapoints.
//! - `AWS/ECS` per cluster (`ClusterName`, EC2 hosts only): each host's use
//!   and reservation as a percentage of what it registered
//!   (`CPUUtilization`, `MemoryUtilization`, `CPUReservation`,
//!   `MemoryReservation`), one datapoint per host and sample.
//! - `ECS/ContainerInsights` per task (`ClusterName`,
//!   `TaskDefinitionFamily`, `TaskId`), per family and per service: CPU
//!   units and MiB used and reserved, and network bytes per second.
//!
//! A task that reserves no CPU (possible on EC2) is measured against one
//! vCPU, 1,024 units. All are high resolution (per second), so alarms can
//! take periods of 10 seconds.

use crate::cloudwatch::{Datum, Sample};

pub const ECS: &str = "AWS/ECS";
pub const INSIGHTS: &str = "ECS/ContainerInsights";
/// Where ECS publishes CapacityProviderReservation.
pub const MANAGED_SCALING: &str = "AWS/ECS/ManagedScaling";
pub const SQS: &str = "AWS/SQS";
pub const ALB: &str = "AWS/ApplicationELB";
/// The namespaces Berth publishes every ten seconds (high resolution), so
/// target tracking can watch them at periods shorter than a minute.
pub const FREQUENT: &[&str] = &[ECS, INSIGHTS, SQS, ALB];

/// What a task is, for its metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFacts {
    pub cluster: String,
    pub service: Option<String>,
    pub family: String,
    pub task_id: String,
    /// CPU units and MiB it reserves.
    pub cpu: f64,
    pub memory: f64,
}

/// What it used over one sampling interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Used {
    pub cpu_units: f64,
    pub memory_mib: f64,
    /// Bytes received and sent over the interval.
    pub network: Option<(u64, u64)>,
    pub seconds: f64,
}

fn datum(name: &str, dims: &[(&str, &str)], unit: &str, at: i64, v: f64) -> Datum {
    let mut dimensions: Vec<(String, String)> = dims
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    dimensions.sort();
    Datum {
        name: name.into(),
        dimensions,
        unit: unit.into(),
        timestamp: at,
        high_resolution: true,
        sample: Sample::Values(vec![(v, 1.0)]),
    }
}

fn percent(used: f64, of: f64) -> f64 {
    if of > 0.0 {
        used * 100.0 / of
    } else {
        0.0
    }
}

/// A task's datapoints, by namespace, at `at` (epoch seconds).
pub fn task_datapoints(f: &TaskFacts, u: &Used, at: i64) -> Vec<(&'static str, Datum)> {
    let cpu_of = if f.cpu > 0.0 { f.cpu } else { 1024.0 };
    let mut out = vec![];
    if let Some(service) = &f.service {
        let dims = [
            ("ClusterName", f.cluster.as_str()),
            ("ServiceName", service.as_str()),
        ];
        out.push((
            ECS,
            datum(
                "CPUUtilization",
                &dims,
                "Percent",
                at,
                percent(u.cpu_units, cpu_of),
            ),
        ));
        if f.memory > 0.0 {
            out.push((
                ECS,
                datum(
                    "MemoryUtilization",
                    &dims,
                    "Percent",
                    at,
                    percent(u.memory_mib, f.memory),
                ),
            ));
        }
    }
    let mut groups: Vec<Vec<(&str, &str)>> = vec![
        vec![
            ("ClusterName", f.cluster.as_str()),
            ("TaskDefinitionFamily", f.family.as_str()),
            ("TaskId", f.task_id.as_str()),
        ],
        vec![
            ("ClusterName", f.cluster.as_str()),
            ("TaskDefinitionFamily", f.family.as_str()),
        ],
    ];
    if let Some(service) = &f.service {
        groups.push(vec![
            ("ClusterName", f.cluster.as_str()),
            ("ServiceName", service.as_str()),
        ]);
    }
    for dims in &groups {
        out.push((
            INSIGHTS,
            datum("CpuUtilized", dims, "None", at, u.cpu_units),
        ));
        out.push((INSIGHTS, datum("CpuReserved", dims, "None", at, f.cpu)));
        out.push((
            INSIGHTS,
            datum("MemoryUtilized", dims, "Megabytes", at, u.memory_mib),
        ));
        out.push((
            INSIGHTS,
            datum("MemoryReserved", dims, "Megabytes", at, f.memory),
        ));
        if let (Some((rx, tx)), true) = (u.network, u.seconds > 0.0) {
            out.push((
                INSIGHTS,
                datum(
                    "NetworkRxBytes",
                    dims,
                    "Bytes/Second",
                    at,
                    rx as f64 / u.seconds,
                ),
            ));
            out.push((
                INSIGHTS,
                datum(
                    "NetworkTxBytes",
                    dims,
                    "Bytes/Second",
                    at,
                    tx as f64 / u.seconds,
                ),
            ));
        }
    }
    out
}

/// What one EC2 host of a cluster registered, reserves and uses.
#[derive(Debug, Clone, PartialEq)]
pub struct HostUse {
    pub cluster: String,
    pub registered_cpu: f64,
    pub registered_memory: f64,
    pub reserved_cpu: f64,
    pub reserved_memory: f64,
    pub used_cpu: f64,
    pub used_memory: f64,
}

/// A host's contribution to its cluster's AWS/ECS metrics.
pub fn host_datapoints(h: &HostUse, at: i64) -> Vec<Datum> {
    let dims = [("ClusterName", h.cluster.as_str())];
    vec![
        datum(
            "CPUUtilization",
            &dims,
            "Percent",
            at,
            percent(h.used_cpu, h.registered_cpu),
        ),
        datum(
            "MemoryUtilization",
            &dims,
            "Percent",
            at,
            percent(h.used_memory, h.registered_memory),
        ),
        datum(
            "CPUReservation",
            &dims,
            "Percent",
            at,
            percent(h.reserved_cpu, h.registered_cpu),
        ),
        datum(
            "MemoryReservation",
            &dims,
            "Percent",
            at,
            percent(h.reserved_memory, h.registered_memory),
        ),
    ]
}

/// A service's task counts (Container Insights), published whether or not
/// tasks run: scaling out from zero reads them.
/// An Auto Scaling group capacity provider's CapacityProviderReservation.
pub fn provider_reservation(cluster: &str, provider: &str, value: f64, at: i64) -> Datum {
    datum(
        "CapacityProviderReservation",
        &[("CapacityProviderName", provider), ("ClusterName", cluster)],
        "Percent",
        at,
        value,
    )
}

pub fn service_counts(
    cluster: &str,
    service: &str,
    running: u32,
    pending: u32,
    desired: i64,
    at: i64,
) -> Vec<Datum> {
    let dims = [("ClusterName", cluster), ("ServiceName", service)];
    vec![
        datum("RunningTaskCount", &dims, "Count", at, f64::from(running)),
        datum("PendingTaskCount", &dims, "Count", at, f64::from(pending)),
        datum("DesiredTaskCount", &dims, "Count", at, desired as f64),
    ]
}

/// What a target group's targets got since the last look, and how many of
/// them are healthy now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupTraffic {
    /// `targetgroup/NAME/ID`.
    pub target_group: String,
    /// `app/NAME/ID` of the load balancer that forwards to it, if any.
    pub load_balancer: Option<String>,
    pub traffic: crate::elb::RequestCount,
    pub healthy: usize,
    pub unhealthy: usize,
}

const CLASSES: [&str; 4] = [
    "HTTPCode_Target_2XX_Count",
    "HTTPCode_Target_3XX_Count",
    "HTTPCode_Target_4XX_Count",
    "HTTPCode_Target_5XX_Count",
];

/// Traffic metrics under `dims`: RequestCount, the target response codes
/// that occurred, TargetResponseTime (a statistic set: its minimum and
/// maximum are the period's average, as only sums are counted).
fn traffic(dims: &[(&str, &str)], t: &crate::elb::RequestCount, at: i64) -> Vec<Datum> {
    let mut out = vec![datum("RequestCount", dims, "Count", at, t.requests as f64)];
    for (name, n) in CLASSES.iter().zip(t.classes) {
        if n > 0 {
            out.push(datum(name, dims, "Count", at, n as f64));
        }
    }
    if t.answered > 0 {
        let sum = t.response_micros as f64 / 1e6;
        let avg = sum / t.answered as f64;
        let mut d = datum("TargetResponseTime", dims, "Seconds", at, avg);
        d.sample = Sample::Set {
            count: t.answered as f64,
            sum,
            min: avg,
            max: avg,
        };
        out.push(d);
    }
    out
}

/// AWS/ApplicationELB per target group (alone and with its load balancer)
/// at `at`: traffic, RequestCountPerTarget (requests over the healthy
/// targets, or over all when none is healthy), and HealthyHostCount /
/// UnHealthyHostCount (with both dimensions, as ELB has them). Unlike
/// ELB, which is silent without requests, RequestCount is published at
/// zero too, so that scale-in on ALBRequestCountPerTarget happens.
pub fn target_group_datapoints(g: &GroupTraffic, at: i64) -> Vec<Datum> {
    let tg = g.target_group.as_str();
    let mut sets: Vec<Vec<(&str, &str)>> = vec![vec![("TargetGroup", tg)]];
    if let Some(lb) = &g.load_balancer {
        sets.push(vec![("LoadBalancer", lb), ("TargetGroup", tg)]);
    }
    let targets = if g.healthy > 0 {
        g.healthy
    } else {
        g.healthy + g.unhealthy
    };
    let mut out = vec![];
    for dims in &sets {
        out.extend(traffic(dims, &g.traffic, at));
        if targets > 0 {
            out.push(datum(
                "RequestCountPerTarget",
                dims,
                "Count",
                at,
                g.traffic.requests as f64 / targets as f64,
            ));
        }
    }
    if let Some(dims) = sets.get(1) {
        out.push(datum(
            "HealthyHostCount",
            dims,
            "Count",
            at,
            g.healthy as f64,
        ));
        out.push(datum(
            "UnHealthyHostCount",
            dims,
            "Count",
            at,
            g.unhealthy as f64,
        ));
    }
    out
}

/// AWS/ApplicationELB per load balancer: the traffic of all the target
/// groups it forwards to.
pub fn load_balancer_datapoints(lb: &str, t: &crate::elb::RequestCount, at: i64) -> Vec<Datum> {
    traffic(&[("LoadBalancer", lb)], t, at)
}

/// A queue's gauges at `at`: what it holds, and the age in seconds of its
/// oldest message. Unlike AWS's (minutes late, "approximate"), exact and
/// as fresh as the last look.
pub fn queue_gauges(
    queue: &str,
    visible: f64,
    in_flight: f64,
    delayed: f64,
    oldest_age: f64,
    at: i64,
) -> Vec<Datum> {
    let dims = [("QueueName", queue)];
    vec![
        datum(
            "ApproximateNumberOfMessagesVisible",
            &dims,
            "Count",
            at,
            visible,
        ),
        datum(
            "ApproximateNumberOfMessagesNotVisible",
            &dims,
            "Count",
            at,
            in_flight,
        ),
        datum(
            "ApproximateNumberOfMessagesDelayed",
            &dims,
            "Count",
            at,
            delayed,
        ),
        datum(
            "ApproximateAgeOfOldestMessage",
            &dims,
            "Seconds",
            at,
            oldest_age,
        ),
    ]
}

/// What requests did to a queue at `at`: (metric, value) pairs such as
/// NumberOfMessagesSent, summed by CloudWatch per period.
pub fn queue_counters(queue: &str, counters: &[(&str, f64)], at: i64) -> Vec<Datum> {
    let dims = [("QueueName", queue)];
    counters
        .iter()
        .map(|(name, v)| {
            let unit = if *name == "SentMessageSize" {
                "Bytes"
            } else {
                "Count"
            };
            datum(name, &dims, unit, at, *v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(d: &Datum) -> f64 {
        match &d.sample {
            Sample::Values(v) => v[0].0,
            Sample::Set { .. } => f64::NAN,
        }
    }

    #[test]
    fn target_groups_count_per_healthy_target_and_by_class() {
        let g = GroupTraffic {
            target_group: "targetgroup/web/1".into(),
            load_balancer: Some("app/lb/2".into()),
            traffic: crate::elb::RequestCount {
                requests: 30,
                classes: [20, 0, 6, 4],
                answered: 30,
                response_micros: 1_500_000,
                at: 0.0,
            },
            healthy: 3,
            unhealthy: 1,
        };
        let d = target_group_datapoints(&g, 100);
        let find = |name: &str, n: usize| {
            d.iter()
                .find(|x| x.name == name && x.dimensions.len() == n)
                .map(value)
        };
        assert_eq!(find("RequestCountPerTarget", 1), Some(10.0));
        assert_eq!(find("RequestCount", 2), Some(30.0));
        assert_eq!(find("HTTPCode_Target_5XX_Count", 1), Some(4.0));
        assert_eq!(find("HTTPCode_Target_3XX_Count", 1), None);
        assert_eq!(find("HealthyHostCount", 2), Some(3.0));
        assert_eq!(find("HealthyHostCount", 1), None);
        let rt = d
            .iter()
            .find(|x| x.name == "TargetResponseTime")
            .map(|x| &x.sample);
        assert!(
            matches!(rt, Some(Sample::Set { count, sum, .. }) if *count == 30.0 && (*sum - 1.5).abs() < 1e-9)
        );
        // Nothing healthy: requests over every target.
        let none = GroupTraffic {
            healthy: 0,
            unhealthy: 2,
            ..g
        };
        let d = target_group_datapoints(&none, 100);
        assert_eq!(
            d.iter()
                .find(|x| x.name == "RequestCountPerTarget")
                .map(value),
            Some(15.0)
        );
    }

    #[test]
    fn service_utilization_is_use_over_reservation() {
        let f = TaskFacts {
            cluster: "c".into(),
            service: Some("web".into()),
            family: "web".into(),
            task_id: "abc".into(),
            cpu: 256.0,
            memory: 512.0,
        };
        let u = Used {
            cpu_units: 192.0,
            memory_mib: 128.0,
            network: Some((1000, 500)),
            seconds: 10.0,
        };
        let out = task_datapoints(&f, &u, 100);
        let find = |ns: &str, name: &str, n: usize| {
            out.iter()
                .filter(|(s, d)| *s == ns && d.name == name && d.dimensions.len() == n)
                .map(|(_, d)| d)
                .next()
                .cloned()
                .expect("published")
        };
        let cpu = find(ECS, "CPUUtilization", 2);
        assert_eq!(value(&cpu), 75.0);
        assert_eq!(
            cpu.dimensions,
            vec![
                ("ClusterName".into(), "c".into()),
                ("ServiceName".into(), "web".into())
            ]
        );
        assert_eq!(value(&find(ECS, "MemoryUtilization", 2)), 25.0);
        assert_eq!(value(&find(INSIGHTS, "NetworkRxBytes", 3)), 100.0);
        // A task outside any service publishes no service metric.
        let lone = TaskFacts {
            service: None,
            cpu: 0.0,
            ..f
        };
        let out = task_datapoints(&lone, &u, 100);
        assert!(out.iter().all(|(ns, _)| *ns == INSIGHTS));
        let host = host_datapoints(
            &HostUse {
                cluster: "c".into(),
                registered_cpu: 2048.0,
                registered_memory: 4096.0,
                reserved_cpu: 1024.0,
                reserved_memory: 1024.0,
                used_cpu: 512.0,
                used_memory: 2048.0,
            },
            100,
        );
        let by: Vec<f64> = host.iter().map(value).collect();
        assert_eq!(by, vec![25.0, 50.0, 50.0, 25.0]);
    }
}
