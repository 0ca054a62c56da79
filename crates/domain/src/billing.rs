//! Metering: what tasks and instances cost, as AWS bills them. A Fargate
//! task pays for its task-level vCPU and memory from the moment its image
//! pull starts until it stops, per second with a one-minute minimum; an
//! EC2-mode container instance pays by the hour it is registered, whatever
//! runs on it (the per-task versus per-instance trade of the documents).
//! Pure: callers pass the times.

use serde::{Deserialize, Serialize};

/// Prices in USD. The defaults are the source documents' Tokyo figures
/// for Fargate (0.04045 per vCPU-hour, 0.00442 per GB-hour) and their
/// c6g.large (2 vCPU, 4 GB) for an instance-hour; Spot is AWS's advertised
/// discount of up to 70 %.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prices {
    pub fargate_vcpu_hour: f64,
    pub fargate_gb_hour: f64,
    /// FARGATE_SPOT's price as a share of FARGATE's.
    pub spot_ratio: f64,
    pub instance_hour: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            fargate_vcpu_hour: 0.04045,
            fargate_gb_hour: 0.00442,
            spot_ratio: 0.3,
            instance_hour: 0.0856,
        }
    }
}

/// Fargate bills at least this many seconds per task.
pub const MINIMUM_SECONDS: u64 = 60;

/// What one Fargate task has cost so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCharge {
    /// Seconds billed: the run time rounded up, at least a minute.
    pub seconds: u64,
    pub vcpu: f64,
    pub gb: f64,
    pub vcpu_seconds: f64,
    pub gb_seconds: f64,
    pub usd: f64,
}

/// A Fargate task of `cpu_units` and `memory_mib` that ran from `start`
/// to `end` (epoch seconds; `end` is now while it runs), on Spot or not.
pub fn task_charge(
    prices: &Prices,
    cpu_units: i64,
    memory_mib: i64,
    start: f64,
    end: f64,
    spot: bool,
) -> TaskCharge {
    let ran = (end - start).max(0.0).ceil() as u64;
    let seconds = ran.max(MINIMUM_SECONDS);
    let vcpu = cpu_units as f64 / 1024.0;
    let gb = memory_mib as f64 / 1024.0;
    let (vcpu_seconds, gb_seconds) = (vcpu * seconds as f64, gb * seconds as f64);
    let ratio = if spot { prices.spot_ratio } else { 1.0 };
    let usd = (vcpu_seconds * prices.fargate_vcpu_hour + gb_seconds * prices.fargate_gb_hour)
        / 3600.0
        * ratio;
    TaskCharge {
        seconds,
        vcpu,
        gb,
        vcpu_seconds,
        gb_seconds,
        usd,
    }
}

/// An EC2-mode instance registered from `start` to `end`: its hours, per
/// second (as EC2 bills Linux instances, with the same minute minimum).
pub fn instance_charge(prices: &Prices, start: f64, end: f64) -> (u64, f64) {
    let seconds = ((end - start).max(0.0).ceil() as u64).max(MINIMUM_SECONDS);
    (seconds, seconds as f64 / 3600.0 * prices.instance_hour)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn a_short_task_pays_a_minute_and_a_long_one_each_second() {
        let p = Prices::default();
        let short = task_charge(&p, 256, 512, 100.0, 112.5, false);
        assert_eq!(short.seconds, 60);
        assert!(close(short.vcpu_seconds, 15.0) && close(short.gb_seconds, 30.0));
        assert!(close(short.usd, (15.0 * 0.04045 + 30.0 * 0.00442) / 3600.0));
        let long = task_charge(&p, 1024, 2048, 0.0, 3599.2, false);
        assert_eq!(long.seconds, 3600, "rounded up to the second");
        assert!(close(long.usd, 0.04045 + 2.0 * 0.00442));
        let spot = task_charge(&p, 1024, 2048, 0.0, 3600.0, true);
        assert!(close(spot.usd, (0.04045 + 2.0 * 0.00442) * 0.3));
    }

    #[test]
    fn an_instance_pays_for_the_time_it_is_registered() {
        let p = Prices::default();
        assert_eq!(instance_charge(&p, 0.0, 10.0).0, 60);
        let (s, usd) = instance_charge(&p, 0.0, 7200.0);
        assert_eq!(s, 7200);
        assert!(close(usd, 2.0 * 0.0856));
    }
}

/// What metering keeps of a task once it stopped, so that billing outlives
/// the task's records (they go after the stopped-task retention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskUsage {
    pub id: String,
    pub cluster: String,
    pub family: String,
    #[serde(default)]
    pub service: Option<String>,
    pub launch_type: String,
    #[serde(default)]
    pub capacity_provider: Option<String>,
    pub cpu_units: i64,
    pub memory_mib: i64,
    /// When its image pull started; None if it never got that far (it
    /// then costs nothing).
    #[serde(default)]
    pub started_at: Option<f64>,
    #[serde(default)]
    pub stopped_at: Option<f64>,
}

impl TaskUsage {
    /// Its charge up to `now` (or its stop); None for EC2 and EXTERNAL
    /// tasks, which their instances pay for, and for tasks that never
    /// pulled.
    pub fn charge(&self, prices: &Prices, now: f64) -> Option<TaskCharge> {
        if self.launch_type != "FARGATE" {
            return None;
        }
        let start = self.started_at?;
        Some(task_charge(
            prices,
            self.cpu_units,
            self.memory_mib,
            start,
            self.stopped_at.unwrap_or(now),
            self.capacity_provider.as_deref() == Some("FARGATE_SPOT"),
        ))
    }
}

/// What metering keeps of a deregistered container instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceUsage {
    pub id: String,
    pub cluster: String,
    #[serde(default)]
    pub ec2_instance_id: String,
    pub registered_at: f64,
    #[serde(default)]
    pub deregistered_at: Option<f64>,
}
