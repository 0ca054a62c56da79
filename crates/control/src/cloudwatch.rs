//! Checked CloudWatch datapoints as the metric store keeps them, and
//! storing them: for the CloudWatch adapter, and for the metrics Berth
//! makes of what its agents sample and of its services.

use crate::Control;
use berth_domain::arn::Scope;
use berth_domain::cloudwatch::{Datum as Checked, Sample};
use berth_metricstore::{Bucket, Datum, MetricId, Owner};

/// A checked datum as the store keeps it.
pub fn stored(namespace: &str, d: Checked) -> Datum {
    Datum {
        metric: MetricId::new(namespace, &d.name, d.dimensions),
        unit: d.unit,
        timestamp: d.timestamp,
        high_resolution: d.high_resolution,
        bucket: match d.sample {
            Sample::Values(v) => Bucket::values(&v),
            Sample::Set {
                count,
                sum,
                min,
                max,
            } => Bucket::set(count, sum, min, max),
        },
    }
}

/// Whose metrics a scope's are.
pub fn owner(scope: &Scope) -> Owner {
    Owner {
        account: scope.account.clone(),
        region: scope.region.clone(),
    }
}

/// Stores Berth's own datapoints in `scope`, on a blocking thread; a
/// failure is logged (a missed sample is not the sender's to retry).
pub async fn publish(ctl: &Control, scope: &Scope, data: Vec<Datum>) {
    let owner = owner(scope);
    let Some(store) = ctl.metric_store.clone() else {
        return;
    };
    if data.is_empty() {
        return;
    }
    match tokio::task::spawn_blocking(move || store.put(&owner, &data)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: cannot store datapoints"),
        Err(e) => tracing::warn!(error = %e, "metrics: the store's thread failed"),
    }
}
