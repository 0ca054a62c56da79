//! Sampling what running tasks use: every `--stats-interval` each running
//! container's CPU time, memory and network counters are read from the
//! runtime (one-shot, from its cgroup), and each task's use since its
//! previous sample goes to the server, which makes CloudWatch's metrics of
//! it. A task is reported once all its running containers have a previous
//! sample (a container that just started has no interval yet). A task on
//! a kernel of its own is read as a whole, from its sandbox.

use berth_runtime::{ContainerRuntime, Stats};
use berth_wire::agent::{ContainerStatus, TaskReport, TaskStatus, TaskUsage};
use std::collections::HashMap;
use std::time::Instant;

/// A container's counters when last read.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    cpu_ns: u64,
    network: Option<(u64, u64)>,
}

/// The previous reading of each container.
#[derive(Default)]
pub struct Sampler {
    last: HashMap<String, Reading>,
}

/// One container's use between two readings.
#[derive(Debug, PartialEq)]
struct Between {
    /// CPU units used on average.
    units: f64,
    /// Bytes received and sent.
    network: Option<(u64, u64)>,
    seconds: f64,
}

fn between(before: &Reading, now: &Reading) -> Option<Between> {
    let seconds = now.at.duration_since(before.at).as_secs_f64();
    if seconds <= 0.0 {
        return None;
    }
    // A counter that went back means the container restarted in place.
    let cpu = now.cpu_ns.checked_sub(before.cpu_ns)?;
    let units = cpu as f64 / (seconds * 1e9) * 1024.0;
    let network = match (before.network, now.network) {
        (Some((r0, t0)), Some((r1, t1))) => Some((r1.saturating_sub(r0), t1.saturating_sub(t0))),
        _ => None,
    };
    Some(Between {
        units,
        network,
        seconds,
    })
}

impl Sampler {
    /// One round over the running tasks in `reports`.
    pub async fn round(
        &mut self,
        runtime: &dyn ContainerRuntime,
        reports: &[TaskReport],
    ) -> Vec<TaskUsage> {
        let mut out = vec![];
        let mut seen = HashMap::new();
        for r in reports
            .iter()
            .filter(|r| r.last_status == TaskStatus::Running)
        {
            let mut usage = TaskUsage {
                task_arn: r.task_arn.clone(),
                cpu_units: 0.0,
                memory_mib: 0.0,
                network: None,
                seconds: 0.0,
            };
            let mut complete = true;
            let ids: Vec<&String> = match &r.sandbox {
                Some(sandbox) => vec![sandbox],
                None => r
                    .containers
                    .iter()
                    .filter(|c| c.last_status == ContainerStatus::Running)
                    .filter_map(|c| c.runtime_id.as_ref())
                    .collect(),
            };
            for id in ids {
                let Ok(Stats {
                    cpu_total_ns,
                    memory_bytes,
                    network,
                    ..
                }) = runtime.stats(id).await
                else {
                    complete = false;
                    continue;
                };
                let now = Reading {
                    at: Instant::now(),
                    cpu_ns: cpu_total_ns,
                    network,
                };
                usage.memory_mib += memory_bytes as f64 / (1024.0 * 1024.0);
                match self.last.get(id).and_then(|before| between(before, &now)) {
                    Some(Between {
                        units,
                        network: net,
                        seconds,
                    }) => {
                        usage.cpu_units += units;
                        usage.seconds = usage.seconds.max(seconds);
                        if let Some((rx, tx)) = net {
                            let (r0, t0) = usage.network.unwrap_or((0, 0));
                            usage.network = Some((r0 + rx, t0 + tx));
                        }
                    }
                    None => complete = false,
                }
                seen.insert(id.clone(), now);
            }
            if complete && usage.seconds > 0.0 {
                out.push(usage);
            }
        }
        // Containers that are gone are forgotten.
        self.last = seen;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cpu_units_are_cpu_time_over_wall_time_in_1024ths_of_a_core() {
        let t0 = Instant::now();
        let before = Reading {
            at: t0,
            cpu_ns: 1_000_000_000,
            network: Some((100, 50)),
        };
        let now = Reading {
            at: t0 + Duration::from_secs(10),
            cpu_ns: 6_000_000_000,
            network: Some((1100, 250)),
        };
        let b = between(&before, &now).expect("an interval");
        assert!((b.units - 512.0).abs() < 1e-9, "half a core: {}", b.units);
        assert_eq!(b.network, Some((1000, 200)));
        assert_eq!(b.seconds, 10.0);
        // A restarted container's counter went back: no interval.
        let restarted = Reading { cpu_ns: 10, ..now };
        assert!(between(
            &now,
            &Reading {
                at: t0 + Duration::from_secs(20),
                ..restarted
            }
        )
        .is_none());
    }

    #[tokio::test]
    async fn a_task_on_a_kernel_of_its_own_is_read_from_its_sandbox() {
        use berth_runtime::fake::FakeRuntime;
        use berth_wire::agent::ContainerReport;
        let rt = FakeRuntime::new();
        rt.cache("img");
        let spec = berth_runtime::ContainerSpec {
            name: "sandbox".into(),
            image: "img".into(),
            ..Default::default()
        };
        let sandbox = rt.create(&spec).await.expect("created");
        rt.start(&sandbox).await.expect("started");
        // Its container's own id is not one the runtime can read: only
        // the sandbox is.
        let report = TaskReport {
            task_arn: "t".into(),
            last_status: TaskStatus::Running,
            containers: vec![ContainerReport {
                name: "app".into(),
                runtime_id: Some("joined".into()),
                last_status: ContainerStatus::Running,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut sampler = Sampler::default();
        assert!(sampler
            .round(&rt, std::slice::from_ref(&report))
            .await
            .is_empty());
        assert!(sampler
            .round(&rt, std::slice::from_ref(&report))
            .await
            .is_empty());
        let sandboxed = TaskReport {
            sandbox: Some(sandbox),
            ..report
        };
        assert!(sampler
            .round(&rt, std::slice::from_ref(&sandboxed))
            .await
            .is_empty());
        tokio::time::sleep(Duration::from_millis(5)).await;
        let out = sampler.round(&rt, &[sandboxed]).await;
        assert_eq!(out.len(), 1, "a complete reading from the sandbox");
        assert_eq!(out[0].task_arn, "t");
    }
}
