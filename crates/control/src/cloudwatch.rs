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

/// One query of GetMetricData or of an alarm's metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Metric {
        metric: MetricId,
        stat: berth_domain::cloudwatch::Stat,
        unit: Option<String>,
        period: i64,
    },
    Expression(String),
}

/// A statistic of a bucket; None when it cannot be told (a percentile of
/// data published as statistic sets).
pub fn statistic(b: &Bucket, stat: berth_domain::cloudwatch::Stat) -> Option<f64> {
    use berth_domain::cloudwatch::Stat;
    match stat {
        Stat::SampleCount => Some(b.count),
        Stat::Average => Some(b.average()),
        Stat::Sum => Some(b.sum),
        Stat::Minimum => Some(b.min),
        Stat::Maximum => Some(b.max),
        Stat::Percentile(q) => b.sketch.as_ref()?.quantile(q),
    }
}

/// A metric's statistic per period over `[start, end)`.
pub async fn series(
    ctl: &Control,
    owner: &Owner,
    metric: &MetricId,
    stat: berth_domain::cloudwatch::Stat,
    unit: Option<&str>,
    (start, end, period): (i64, i64, i64),
) -> Result<berth_domain::metric_math::Series, crate::ControlError> {
    let Some(store) = ctl.metric_store.clone() else {
        return Ok(Default::default());
    };
    let now = ctl.clock.now() as i64;
    let window = berth_metricstore::Window {
        start: berth_domain::cloudwatch::round_start(start, period, now),
        end,
        period,
        resolution: berth_metricstore::MetricStore::resolution_for(period, start, now),
    };
    let (o, m, u) = (owner.clone(), metric.clone(), unit.map(String::from));
    let points = tokio::task::spawn_blocking(move || store.points(&o, &m, u.as_deref(), window))
        .await
        .map_err(|e| crate::ControlError::Internal(e.to_string()))?
        .map_err(|e| crate::ControlError::Internal(e.to_string()))?;
    Ok(points
        .iter()
        .filter_map(|p| statistic(&p.bucket, stat).map(|v| (p.timestamp, v)))
        .collect())
}

/// Runs queries (id, label, query) over `[start, end)`: the metrics'
/// series, then the expressions on the grid of the finest period. The
/// inner error names the expression that failed and why.
pub async fn run_queries(
    ctl: &Control,
    owner: &Owner,
    queries: &[(String, String, Query)],
    (start, end): (i64, i64),
    grid_period: i64,
) -> Result<
    Result<std::collections::HashMap<String, berth_domain::metric_math::Series>, (String, String)>,
    crate::ControlError,
> {
    let mut metrics = vec![];
    for (id, label, q) in queries {
        if let Query::Metric {
            metric,
            stat,
            unit,
            period,
        } = q
        {
            let s = series(
                ctl,
                owner,
                metric,
                *stat,
                unit.as_deref(),
                (start, end, *period),
            )
            .await?;
            metrics.push((id.clone(), label.clone(), s));
        }
    }
    let expressions: Vec<(String, String)> = queries
        .iter()
        .filter_map(|(id, _, q)| match q {
            Query::Expression(e) => Some((id.clone(), e.clone())),
            Query::Metric { .. } => None,
        })
        .collect();
    let period = grid_period.max(1);
    let first = berth_domain::cloudwatch::round_start(start, period, ctl.clock.now() as i64);
    let grid: Vec<i64> = (0..)
        .map(|i| first + i * period)
        .take_while(|t| *t < end)
        .collect();
    let computed = match berth_domain::metric_math::evaluate_all(&metrics, &expressions, &grid) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let mut out: std::collections::HashMap<String, berth_domain::metric_math::Series> =
        metrics.into_iter().map(|(id, _, s)| (id, s)).collect();
    out.extend(computed);
    Ok(Ok(out))
}
