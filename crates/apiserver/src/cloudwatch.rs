//! CloudWatch metrics (`monitoring`, 2010-08-01), over AWS JSON 1.0 as
//! current SDKs send it (`GraniteServiceVersion20100801.*`) and awsQuery as
//! older clients do: both decode into the model's JSON types, run the same
//! handler and encode in the protocol they came in. Datapoints live in the
//! metric store (`berth_metricstore`, called on a blocking thread); the
//! rules are `berth_domain::cloudwatch`'s and the metric math
//! `berth_domain::metric_math`'s.

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::cloudwatch::stored;
use berth_domain::cloudwatch::{self as rules, CwError, Stat};
use berth_domain::metric_math;
use berth_metricstore::{Bucket, Datum, MetricId, MetricStore, Owner, Point, Window};
use berth_wire::cloudwatch as w;
use berth_wire::query::QueryParams;
use std::collections::BTreeMap;
use std::sync::Arc;

macro_rules! operations {
    ($($name:literal => $handler:path),* $(,)?) => {
        /// The operations Berth serves.
        pub const IMPLEMENTED: &[&str] = &[$($name),*];

        /// A JSON 1.0 request: decoded, handled, answered in JSON.
        pub(crate) async fn dispatch_json(st: &AppState, ctx: &RequestContext, op: &str, body: &[u8]) -> Result<Vec<u8>, ApiError> {
            match op {
                $($name => {
                    let input = berth_wire::json::decode(body)?;
                    let output = $handler(st, ctx, input).await?;
                    Ok(berth_wire::json::encode(&output))
                })*
                other => Err(unknown(other)),
            }
        }

        /// An awsQuery request: the form decoded into the same types,
        /// answered in XML.
        pub(crate) async fn dispatch_query(st: &AppState, ctx: &RequestContext, action: &str, params: &QueryParams) -> Result<Vec<u8>, ApiError> {
            match action {
                $($name => {
                    let input = w::MODEL.decode(action, params).map_err(|e| CwError::invalid(e.to_string()))?;
                    let output = $handler(st, ctx, input).await?;
                    Ok(w::MODEL.respond(action, &output, &ctx.request_id).into_bytes())
                })*
                other => Err(unknown(other)),
            }
        }
    };
}

operations! {
    "PutMetricData" => put_metric_data,
    "GetMetricStatistics" => get_metric_statistics,
    "GetMetricData" => get_metric_data,
    "ListMetrics" => list_metrics,
}

fn unknown(op: &str) -> ApiError {
    if w::OPERATIONS.contains(&op) {
        ApiError::UnknownOperation(format!(
            "Berth does not implement the CloudWatch operation {op} yet; see docs/api-coverage.md."
        ))
    } else {
        ApiError::UnknownOperation(format!("Unknown operation {op}"))
    }
}

type Out<T> = Result<T, ApiError>;

/// What operations without an output answer.
#[derive(serde::Serialize)]
pub(crate) struct Empty {}

fn store(st: &AppState) -> Result<Arc<MetricStore>, ApiError> {
    st.metric_store
        .clone()
        .ok_or_else(|| ApiError::Internal("this server keeps no metric store".into()))
}

/// Runs `f` on the metric store on a blocking thread.
async fn with_store<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&MetricStore) -> berth_metricstore::Result<T> + Send + 'static,
) -> Out<T> {
    let store = store(st)?;
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn owner(ctx: &RequestContext) -> Owner {
    berth_control::cloudwatch::owner(&ctx.scope)
}

async fn put_metric_data(
    st: &AppState,
    ctx: &RequestContext,
    input: w::PutMetricDataInput,
) -> Out<Empty> {
    let (ns, data) = rules::check_put(&input, st.now(), false)?;
    let data: Vec<Datum> = data.into_iter().map(|d| stored(&ns, d)).collect();
    let owner = owner(ctx);
    with_store(st, move |s| s.put(&owner, &data)).await?;
    Ok(Empty {})
}

/// A statistic of a bucket; None when it cannot be told (a percentile of
/// data published as statistic sets).
fn statistic(b: &Bucket, stat: Stat) -> Option<f64> {
    match stat {
        Stat::SampleCount => Some(b.count),
        Stat::Average => Some(b.average()),
        Stat::Sum => Some(b.sum),
        Stat::Minimum => Some(b.min),
        Stat::Maximum => Some(b.max),
        Stat::Percentile(q) => b.sketch.as_ref()?.quantile(q),
    }
}

fn metric_id(namespace: &str, name: &str, dims: Vec<(String, String)>) -> MetricId {
    MetricId::new(namespace, name, dims)
}

async fn get_metric_statistics(
    st: &AppState,
    ctx: &RequestContext,
    input: w::GetMetricStatisticsInput,
) -> Out<w::GetMetricStatisticsOutput> {
    let r = rules::check_statistics(&input)?;
    let now = st.now() as i64;
    let window = Window {
        start: r.start,
        end: r.end,
        period: r.period,
        resolution: MetricStore::resolution_for(r.period, r.start, now),
    };
    let metric = metric_id(&r.namespace, &r.name, r.dimensions.clone());
    let owner = owner(ctx);
    let unit = r.unit.clone();
    let points = with_store(st, move |s| {
        s.points(&owner, &metric, unit.as_deref(), window)
    })
    .await?;
    let datapoints = points
        .iter()
        .map(|p| {
            let mut d = w::Datapoint {
                timestamp: Some(p.timestamp as f64),
                unit: Some(p.unit.clone()),
                ..Default::default()
            };
            let mut extended = BTreeMap::new();
            for (name, stat) in &r.stats {
                let v = statistic(&p.bucket, *stat);
                match stat {
                    Stat::SampleCount => d.sample_count = v,
                    Stat::Average => d.average = v,
                    Stat::Sum => d.sum = v,
                    Stat::Minimum => d.minimum = v,
                    Stat::Maximum => d.maximum = v,
                    Stat::Percentile(_) => {
                        if let Some(v) = v {
                            extended.insert(name.clone(), v);
                        }
                    }
                }
            }
            if !extended.is_empty() {
                d.extended_statistics = Some(extended);
            }
            d
        })
        .collect();
    Ok(w::GetMetricStatisticsOutput {
        datapoints: Some(datapoints),
        label: Some(r.name),
    })
}

/// One checked query of GetMetricData.
enum Query {
    Metric {
        metric: MetricId,
        stat: Stat,
        unit: Option<String>,
        period: i64,
    },
    Expression(String),
}

/// GetMetricData's datapoints per request, by default and at most.
const MAX_DATAPOINTS: i64 = 100_800;

async fn get_metric_data(
    st: &AppState,
    ctx: &RequestContext,
    input: w::GetMetricDataInput,
) -> Out<w::GetMetricDataOutput> {
    let given = input
        .metric_data_queries
        .clone()
        .ok_or_else(|| CwError::missing("MetricDataQueries"))?;
    if given.is_empty() || given.len() > rules::MAX_QUERIES {
        return Err(CwError::invalid(format!(
            "The collection MetricDataQueries must have between 1 and {} members.",
            rules::MAX_QUERIES
        ))
        .into());
    }
    let (start, end) = rules::check_range(input.start_time, input.end_time)?;
    let limit = match input.max_datapoints {
        None => MAX_DATAPOINTS,
        Some(n) if n > 0 => i64::from(n),
        Some(n) => return Err(CwError::value("MaxDatapoints", n).into()),
    };
    let descending = match input.scan_by.as_deref() {
        None | Some("TimestampDescending") => true,
        Some("TimestampAscending") => false,
        Some(other) => return Err(CwError::value("ScanBy", other).into()),
    };
    let mut queries: Vec<(String, String, bool, Query)> = vec![];
    for (i, q) in given.iter().enumerate() {
        let at = format!("MetricDataQueries.member.{}", i + 1);
        let id =
            q.id.clone()
                .ok_or_else(|| CwError::missing(&format!("{at}.Id")))?;
        rules::check_query_id(&id, &format!("{at}.Id"))?;
        if queries.iter().any(|(other, ..)| *other == id) {
            return Err(CwError::validation(format!(
                "The values for parameter id in MetricDataQueries are not unique: {id} appears more than once."
            ))
            .into());
        }
        let returned = q.return_data.unwrap_or(true);
        let (label, query) = match (&q.metric_stat, &q.expression) {
            (Some(ms), None) => {
                let m = ms
                    .metric
                    .as_ref()
                    .ok_or_else(|| CwError::missing(&format!("{at}.MetricStat.Metric")))?;
                let ns = m.namespace.clone().ok_or_else(|| {
                    CwError::missing(&format!("{at}.MetricStat.Metric.Namespace"))
                })?;
                rules::check_namespace(&ns, &format!("{at}.MetricStat.Metric.Namespace"), true)?;
                let name = m.metric_name.clone().ok_or_else(|| {
                    CwError::missing(&format!("{at}.MetricStat.Metric.MetricName"))
                })?;
                let dims = rules::check_dimensions(
                    m.dimensions.as_ref(),
                    &format!("{at}.MetricStat.Metric.Dimensions"),
                )?;
                let period =
                    rules::check_period(ms.period, &format!("{at}.MetricStat.Period"))?;
                let stat_text = ms
                    .stat
                    .clone()
                    .ok_or_else(|| CwError::missing(&format!("{at}.MetricStat.Stat")))?;
                let stat = Stat::parse(&stat_text).ok_or_else(|| {
                    CwError::value(&format!("{at}.MetricStat.Stat"), &stat_text)
                })?;
                (
                    q.label.clone().unwrap_or_else(|| name.clone()),
                    Query::Metric {
                        metric: metric_id(&ns, &name, dims),
                        stat,
                        unit: ms.unit.clone(),
                        period,
                    },
                )
            }
            (None, Some(e)) => (q.label.clone().unwrap_or_else(|| id.clone()), Query::Expression(e.clone())),
            (None, None) => {
                return Err(CwError::combination(format!(
                    "Exactly one of the parameters {at}.MetricStat and {at}.Expression must be specified."
                ))
                .into())
            }
            (Some(_), Some(_)) => {
                return Err(CwError::combination(format!(
                    "The parameters {at}.MetricStat and {at}.Expression are mutually exclusive and you have specified both."
                ))
                .into())
            }
        };
        queries.push((id, label, returned, query));
    }
    // Expressions run on the finest period of the request's metrics (or
    // their own), on one grid.
    let period = given
        .iter()
        .filter_map(|q| q.period.map(i64::from))
        .chain(queries.iter().filter_map(|(.., q)| match q {
            Query::Metric { period, .. } => Some(*period),
            Query::Expression(_) => None,
        }))
        .min()
        .unwrap_or(60)
        .max(1);
    let first = start.div_euclid(period) * period;
    let grid: Vec<i64> = (0..)
        .map(|i| first + i * period)
        .take_while(|t| *t < end)
        .collect();
    let now = st.now() as i64;
    let owner = owner(ctx);
    let mut metrics = vec![];
    for (id, label, _, q) in &queries {
        if let Query::Metric {
            metric,
            stat,
            unit,
            period,
        } = q
        {
            let window = Window {
                start,
                end,
                period: *period,
                resolution: MetricStore::resolution_for(*period, start, now),
            };
            let (o, m, u) = (owner.clone(), metric.clone(), unit.clone());
            let points: Vec<Point> =
                with_store(st, move |s| s.points(&o, &m, u.as_deref(), window)).await?;
            let stat = *stat;
            let series: metric_math::Series = points
                .iter()
                .filter_map(|p| statistic(&p.bucket, stat).map(|v| (p.timestamp, v)))
                .collect();
            metrics.push((id.clone(), label.clone(), series));
        }
    }
    let expressions: Vec<(String, String)> = queries
        .iter()
        .filter_map(|(id, _, _, q)| match q {
            Query::Expression(e) => Some((id.clone(), e.clone())),
            Query::Metric { .. } => None,
        })
        .collect();
    let computed =
        metric_math::evaluate_all(&metrics, &expressions, &grid).map_err(|(id, why)| {
            let at = queries.iter().position(|(q, ..)| *q == id).unwrap_or(0) + 1;
            CwError::validation(format!(
                "Error in expression {id} (MetricDataQueries.member.{at}.Expression): {why}"
            ))
        })?;
    let mut by_id: BTreeMap<String, metric_math::Series> =
        metrics.into_iter().map(|(id, _, s)| (id, s)).collect();
    by_id.extend(computed);
    // Pages: `NextToken` is how many datapoints earlier pages gave.
    let skip: i64 = match input.next_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => berth_domain::paging::resume("GetMetricData", Some(t))
            .ok()
            .flatten()
            .and_then(|k| k.parse().ok())
            .ok_or_else(CwError::next_token)?,
    };
    let mut seen = 0i64;
    let mut results = vec![];
    let mut more = false;
    for (id, label, returned, _) in &queries {
        if !returned {
            continue;
        }
        let series = by_id.remove(id).unwrap_or_default();
        let mut points: Vec<(i64, f64)> = series.into_iter().collect();
        if descending {
            points.reverse();
        }
        let mut kept = vec![];
        for p in points {
            if seen >= skip && seen < skip + limit {
                kept.push(p);
            } else if seen >= skip + limit {
                more = true;
            }
            seen += 1;
        }
        results.push(w::MetricDataResult {
            id: Some(id.clone()),
            label: Some(label.clone()),
            timestamps: Some(kept.iter().map(|(t, _)| *t as f64).collect()),
            values: Some(kept.iter().map(|(_, v)| *v).collect()),
            status_code: Some(if more { "PartialData" } else { "Complete" }.into()),
            messages: Some(vec![]),
        });
    }
    Ok(w::GetMetricDataOutput {
        metric_data_results: Some(results),
        next_token: more
            .then(|| berth_domain::paging::token("GetMetricData", &(skip + limit).to_string())),
        messages: Some(vec![]),
    })
}

/// ListMetrics' page size, as CloudWatch's.
const LIST_PAGE: usize = 500;

async fn list_metrics(
    st: &AppState,
    ctx: &RequestContext,
    input: w::ListMetricsInput,
) -> Out<w::ListMetricsOutput> {
    if let Some(ns) = &input.namespace {
        rules::check_namespace(ns, "Namespace", true)?;
    }
    let filters = rules::check_dimension_filters(input.dimensions.as_ref())?;
    let active_since = match input.recently_active.as_deref() {
        None => None,
        Some("PT3H") => Some(st.now() as i64 - 3 * 3600),
        Some(other) => return Err(CwError::value("RecentlyActive", other).into()),
    };
    // Metrics with no datapoint in two weeks drop out, as CloudWatch's do.
    let since = active_since.unwrap_or(st.now() as i64 - rules::PAST);
    let owner = owner(ctx);
    let (ns, name) = (input.namespace.clone(), input.metric_name.clone());
    let all = with_store(st, move |s| {
        Ok(s.list(
            &owner,
            ns.as_deref(),
            name.as_deref(),
            &filters,
            Some(since),
        ))
    })
    .await?;
    let skip = match input.next_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => berth_domain::paging::resume("ListMetrics", Some(t))
            .ok()
            .flatten()
            .and_then(|k| k.parse::<usize>().ok())
            .ok_or_else(CwError::next_token)?,
    };
    let page: Vec<w::Metric> = all
        .iter()
        .skip(skip)
        .take(LIST_PAGE)
        .map(|m| w::Metric {
            namespace: Some(m.namespace.clone()),
            metric_name: Some(m.name.clone()),
            dimensions: Some(
                m.dimensions
                    .iter()
                    .map(|(k, v)| w::Dimension {
                        name: Some(k.clone()),
                        value: Some(v.clone()),
                    })
                    .collect(),
            ),
        })
        .collect();
    let more = skip + page.len() < all.len();
    Ok(w::ListMetricsOutput {
        metrics: Some(page),
        next_token: more
            .then(|| berth_domain::paging::token("ListMetrics", &(skip + LIST_PAGE).to_string())),
        owning_accounts: None,
    })
}
