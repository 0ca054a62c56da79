//! Prometheus metrics of the cluster manager: per controller, how many
//! keys wait, how long reconciles take and how many fail; and whether this
//! process leads. The front door registers them beside its own.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: String,
}

/// One per process, shared by every controller through [`crate::Control`].
#[derive(Clone)]
pub struct ControlMetrics {
    queue_depth: Family<ControllerLabel, Gauge>,
    in_flight: Family<ControllerLabel, Gauge>,
    duration: Family<ControllerLabel, Histogram>,
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ControllerLabel, Counter>,
    leader: Gauge,
    leader_changes: Counter,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        ControlMetrics {
            queue_depth: Family::default(),
            in_flight: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
                ])
            }),
            reconciles: Family::default(),
            errors: Family::default(),
            leader: Gauge::default(),
            leader_changes: Counter::default(),
        }
    }
}

fn label(controller: &str) -> ControllerLabel {
    ControllerLabel {
        controller: controller.to_string(),
    }
}

impl ControlMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "berth_controller_queue_depth",
            "Keys waiting for a reconcile, per controller",
            self.queue_depth.clone(),
        );
        registry.register(
            "berth_controller_in_flight",
            "Reconciles running, per controller",
            self.in_flight.clone(),
        );
        registry.register(
            "berth_controller_reconcile_duration_seconds",
            "How long reconciles take, per controller",
            self.duration.clone(),
        );
        registry.register(
            "berth_controller_reconciles",
            "Reconciles finished, per controller",
            self.reconciles.clone(),
        );
        registry.register(
            "berth_controller_reconcile_errors",
            "Reconciles that failed and were requeued with backoff, per controller",
            self.errors.clone(),
        );
        registry.register(
            "berth_leader",
            "1 while this server holds the leader lease and runs the controllers",
            self.leader.clone(),
        );
        registry.register(
            "berth_leader_changes",
            "Times this server became leader",
            self.leader_changes.clone(),
        );
    }

    pub(crate) fn depth(&self, controller: &str, waiting: usize, running: usize) {
        self.queue_depth
            .get_or_create(&label(controller))
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.in_flight
            .get_or_create(&label(controller))
            .set(i64::try_from(running).unwrap_or(i64::MAX));
    }

    pub(crate) fn reconciled(&self, controller: &str, took: Duration, failed: bool) {
        let l = label(controller);
        self.duration.get_or_create(&l).observe(took.as_secs_f64());
        self.reconciles.get_or_create(&l).inc();
        if failed {
            self.errors.get_or_create(&l).inc();
        }
    }

    pub(crate) fn leading(&self, yes: bool) {
        self.leader.set(i64::from(yes));
        if yes {
            self.leader_changes.inc();
        }
    }

    /// Whether this process leads now.
    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }
}
