//! Prometheus metrics of the front door.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    operation: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    service: String,
    operation: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<OpLabels, Histogram>,
}

impl Metrics {
    /// The front door's metrics, with the cluster manager's beside them.
    pub fn new(control: &berth_control::ControlMetrics) -> Self {
        let mut registry = Registry::default();
        control.register(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ])
        });
        registry.register(
            "berth_api_requests",
            "API requests by operation and HTTP status",
            requests.clone(),
        );
        registry.register(
            "berth_api_request_duration_seconds",
            "API request latency",
            duration.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
        }
    }

    /// Records one request. Unknown operation names are folded into
    /// "unknown" by the caller so label cardinality stays bounded.
    pub fn observe(&self, service: &str, operation: &str, status: u16, took: Duration) {
        let operation = if service == "unknown" {
            "unknown"
        } else {
            operation
        };
        self.requests
            .get_or_create(&RequestLabels {
                service: service.into(),
                operation: operation.into(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&OpLabels {
                service: service.into(),
                operation: operation.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("could not encode metrics");
        }
        out
    }
}
