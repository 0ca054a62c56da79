//! CloudWatch metrics (`monitoring`, 2010-08-01), over AWS JSON 1.0 as
//! current SDKs send it (`GraniteServiceVersion20100801.*`) and awsQuery as
//! older clients do: both decode into the model's JSON types, run the same
//! handler and encode in the protocol they came in. Datapoints live in the
//! metric store (`berth_metricstore`, called on a blocking thread); the
//! rules are `berth_domain::cloudwatch`'s and the metric math
//! `berth_domain::metric_math`'s.

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::alarms::{self, AlarmFailure};
use berth_control::cloudwatch::{statistic, stored, Query};
use berth_domain::alarms as alarm_rules;
use berth_domain::cloudwatch::{self as rules, CwError, Stat};
use berth_metricstore::{Datum, MetricId, MetricStore, Owner, Window};
use berth_wire::cloudwatch as w;
use std::collections::BTreeMap;
use std::sync::Arc;

dual_operations! { "CloudWatch", w::MODEL, CwError::invalid;
    "PutMetricData" => put_metric_data,
    "GetMetricStatistics" => get_metric_statistics,
    "GetMetricData" => get_metric_data,
    "ListMetrics" => list_metrics,
    "PutMetricAlarm" => put_metric_alarm,
    "DescribeAlarms" => describe_alarms,
    "DescribeAlarmsForMetric" => describe_alarms_for_metric,
    "DeleteAlarms" => delete_alarms,
    "SetAlarmState" => set_alarm_state,
    "DescribeAlarmHistory" => describe_alarm_history,
    "EnableAlarmActions" => enable_alarm_actions,
    "DisableAlarmActions" => disable_alarm_actions,
    "TagResource" => tag_resource,
    "UntagResource" => untag_resource,
    "ListTagsForResource" => list_tags_for_resource,
}

type Out<T> = Result<T, ApiError>;

impl From<AlarmFailure> for ApiError {
    fn from(e: AlarmFailure) -> Self {
        match e {
            AlarmFailure::Cw(e) => ApiError::CloudWatch(e),
            AlarmFailure::Control(e) => e.into(),
        }
    }
}

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
        start: berth_domain::cloudwatch::round_start(r.start, r.period, now),
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

/// The queries as the cluster manager runs them: (id, label, query).
fn queries_for_run(queries: &[(String, String, bool, Query)]) -> Vec<(String, String, Query)> {
    queries
        .iter()
        .map(|(id, label, _, q)| (id.clone(), label.clone(), q.clone()))
        .collect()
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
    if input.label_options.is_some() {
        return Err(CwError::invalid(
            "The parameter LabelOptions is not supported by Berth's CloudWatch (dynamic labels are not expanded).",
        )
        .into());
    }
    if let Some(i) = given.iter().position(|q| q.account_id.is_some()) {
        return Err(CwError::invalid(format!(
            "The parameter MetricDataQueries.member.{}.AccountId is not supported: Berth has no linked accounts.",
            i + 1
        ))
        .into());
    }
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
    let owner = owner(ctx);
    let mut by_id = match berth_control::cloudwatch::run_queries(
        st,
        &owner,
        &queries_for_run(&queries),
        (start, end),
        period,
    )
    .await?
    {
        Ok(found) => found,
        Err((id, why)) => {
            let at = queries.iter().position(|(q, ..)| *q == id).unwrap_or(0) + 1;
            return Err(CwError::validation(format!(
                "Error in expression {id} (MetricDataQueries.member.{at}.Expression): {why}"
            ))
            .into());
        }
    };
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
    // There are no linked accounts: another account's metrics are none.
    if input
        .owning_account
        .as_ref()
        .is_some_and(|a| *a != ctx.scope.account)
    {
        return Ok(w::ListMetricsOutput {
            metrics: Some(vec![]),
            next_token: None,
            owning_accounts: None,
        });
    }
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
    let (page, next) = paged("ListMetrics", &all, input.next_token.as_deref(), LIST_PAGE)?;
    let page: Vec<w::Metric> = page
        .into_iter()
        .map(|m| w::Metric {
            namespace: Some(m.namespace),
            metric_name: Some(m.name),
            dimensions: Some(
                m.dimensions
                    .into_iter()
                    .map(|(k, v)| w::Dimension {
                        name: Some(k),
                        value: Some(v),
                    })
                    .collect(),
            ),
        })
        .collect();
    Ok(w::ListMetricsOutput {
        metrics: Some(page),
        next_token: next,
        owning_accounts: None,
    })
}

/// Most alarms a region may have, as CloudWatch's default quota.
const MAX_ALARMS: usize = 10_000;

async fn put_metric_alarm(
    st: &AppState,
    ctx: &RequestContext,
    input: w::PutMetricAlarmInput,
) -> Out<Empty> {
    let checked = alarm_rules::check_put(&input)?;
    let name = checked.alarm_name.clone().unwrap_or_default();
    if alarms::get(st, &ctx.scope, &name).await?.is_none() {
        let count = berth_store::typed::count(
            &*st.store,
            &berth_store::keys::cloudwatch::alarms(&ctx.scope),
        )
        .await?;
        if count >= MAX_ALARMS {
            return Err(CwError::limit(format!(
                "The maximum allowed number of alarms ({MAX_ALARMS}) has been reached."
            ))
            .into());
        }
    }
    alarms::put(st, &ctx.scope, checked).await?;
    Ok(Empty {})
}

fn page_size(max: Option<i32>, default: usize, field: &str) -> Result<usize, CwError> {
    match max {
        None => Ok(default),
        Some(n) if (1..=100).contains(&n) => Ok(n as usize),
        Some(n) => Err(CwError::value(field, n)),
    }
}

/// A page of `items` from `NextToken` (how many earlier pages gave).
fn paged<T: Clone>(
    listing: &str,
    items: &[T],
    token: Option<&str>,
    size: usize,
) -> Result<(Vec<T>, Option<String>), CwError> {
    berth_domain::paging::by_offset(listing, items, token, size).ok_or_else(CwError::next_token)
}

async fn describe_alarms(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeAlarmsInput,
) -> Out<w::DescribeAlarmsOutput> {
    let size = page_size(input.max_records, 50, "MaxRecords")?;
    if input.alarm_names.is_some() && input.alarm_name_prefix.is_some() {
        return Err(CwError::combination(
            "The parameters AlarmNames and AlarmNamePrefix are mutually exclusive.",
        )
        .into());
    }
    if input.alarm_names.as_ref().is_some_and(|n| n.len() > 100) {
        return Err(CwError::invalid(
            "The collection AlarmNames must not have a size greater than 100.",
        )
        .into());
    }
    if let Some(v) = &input.state_value {
        if !w::enums::STATE_VALUE.contains(&v.as_str()) {
            return Err(CwError::value("StateValue", v).into());
        }
    }
    for (i, t) in input.alarm_types.iter().flatten().enumerate() {
        if !w::enums::ALARM_TYPE.contains(&t.as_str()) {
            return Err(CwError::value(&format!("AlarmTypes.member.{}", i + 1), t).into());
        }
    }
    if input.children_of_alarm_name.is_some() || input.parents_of_alarm_name.is_some() {
        return Err(CwError::invalid(
            "ChildrenOfAlarmName and ParentsOfAlarmName name composite alarms, which Berth's CloudWatch does not have.",
        )
        .into());
    }
    // Without AlarmTypes, only metric alarms are asked for.
    let metric_alarms = input
        .alarm_types
        .as_ref()
        .is_none_or(|t| t.iter().any(|x| x == "MetricAlarm"));
    let all = alarms::list(st, &ctx.scope).await?;
    let views: Vec<w::MetricAlarm> = all
        .iter()
        .filter(|_| metric_alarms)
        .filter(|(r, _)| {
            let name = r.input.alarm_name.as_deref().unwrap_or_default();
            input
                .alarm_names
                .as_ref()
                .is_none_or(|n| n.iter().any(|x| x == name))
                && input
                    .alarm_name_prefix
                    .as_deref()
                    .is_none_or(|p| name.starts_with(p))
        })
        .filter(|(_, s)| input.state_value.as_deref().is_none_or(|v| s.value == v))
        .filter(|(r, _)| {
            input.action_prefix.as_deref().is_none_or(|p| {
                [
                    &r.input.alarm_actions,
                    &r.input.ok_actions,
                    &r.input.insufficient_data_actions,
                ]
                .iter()
                .any(|l| l.iter().flatten().any(|a| a.starts_with(p)))
            })
        })
        .map(|(r, s)| alarm_rules::view(r, s))
        .collect();
    let (page, next) = paged("DescribeAlarms", &views, input.next_token.as_deref(), size)?;
    Ok(w::DescribeAlarmsOutput {
        metric_alarms: Some(page),
        composite_alarms: Some(vec![]),
        log_alarms: None,
        next_token: next,
    })
}

async fn describe_alarms_for_metric(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeAlarmsForMetricInput,
) -> Out<w::DescribeAlarmsForMetricOutput> {
    let ns = input
        .namespace
        .clone()
        .ok_or_else(|| CwError::missing("Namespace"))?;
    let name = input
        .metric_name
        .clone()
        .ok_or_else(|| CwError::missing("MetricName"))?;
    let dims = input
        .dimensions
        .as_ref()
        .map(|d| rules::check_dimensions(Some(d), "Dimensions"))
        .transpose()?;
    let all = alarms::list(st, &ctx.scope).await?;
    let found = all
        .iter()
        .filter(|(r, _)| {
            let a = &r.input;
            let have: Vec<(String, String)> =
                berth_domain::cloudwatch::pairs(a.dimensions.as_ref());
            a.namespace.as_deref() == Some(ns.as_str())
                && a.metric_name.as_deref() == Some(name.as_str())
                && dims.as_ref().is_none_or(|d| *d == have)
                && input
                    .statistic
                    .as_ref()
                    .is_none_or(|s| a.statistic.as_ref() == Some(s))
                && input
                    .extended_statistic
                    .as_ref()
                    .is_none_or(|s| a.extended_statistic.as_ref() == Some(s))
                && input.period.is_none_or(|p| a.period == Some(p))
                && input
                    .unit
                    .as_ref()
                    .is_none_or(|u| a.unit.as_ref() == Some(u))
        })
        .map(|(r, s)| alarm_rules::view(r, s))
        .collect();
    Ok(w::DescribeAlarmsForMetricOutput {
        metric_alarms: Some(found),
    })
}

async fn delete_alarms(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DeleteAlarmsInput,
) -> Out<Empty> {
    let names = input.alarm_names.unwrap_or_default();
    if names.len() > 100 {
        return Err(CwError::invalid(
            "The collection AlarmNames must not have a size greater than 100.",
        )
        .into());
    }
    alarms::delete(st, &ctx.scope, &names).await?;
    Ok(Empty {})
}

async fn set_alarm_state(
    st: &AppState,
    ctx: &RequestContext,
    input: w::SetAlarmStateInput,
) -> Out<Empty> {
    let (name, value, reason, data) = alarm_rules::check_set_state(&input)?;
    alarms::set_state(st, &ctx.scope, &name, &value, &reason, data).await?;
    Ok(Empty {})
}

async fn describe_alarm_history(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeAlarmHistoryInput,
) -> Out<w::DescribeAlarmHistoryOutput> {
    let size = page_size(input.max_records, 100, "MaxRecords")?;
    if let Some(t) = &input.history_item_type {
        if !w::enums::HISTORY_ITEM_TYPE.contains(&t.as_str()) {
            return Err(CwError::value("HistoryItemType", t).into());
        }
    }
    let descending = match input.scan_by.as_deref() {
        None | Some("TimestampDescending") => true,
        Some("TimestampAscending") => false,
        Some(o) => return Err(CwError::value("ScanBy", o).into()),
    };
    for (i, t) in input.alarm_types.iter().flatten().enumerate() {
        if !w::enums::ALARM_TYPE.contains(&t.as_str()) {
            return Err(CwError::value(&format!("AlarmTypes.member.{}", i + 1), t).into());
        }
    }
    // Only metric alarms exist here, and they have no contributors.
    let metric_alarms = input
        .alarm_types
        .as_ref()
        .is_none_or(|t| t.iter().any(|x| x == "MetricAlarm"));
    let mut items = if metric_alarms && input.alarm_contributor_id.is_none() {
        alarms::history(st, &ctx.scope, input.alarm_name.as_deref()).await?
    } else {
        vec![]
    };
    items.retain(|i| {
        input
            .history_item_type
            .as_ref()
            .is_none_or(|t| &i.kind == t)
            && input.start_date.is_none_or(|s| i.at >= s)
            && input.end_date.is_none_or(|e| i.at <= e)
    });
    if descending {
        items.reverse();
    }
    let views: Vec<w::AlarmHistoryItem> = items
        .into_iter()
        .map(|i| w::AlarmHistoryItem {
            alarm_name: Some(i.alarm),
            alarm_type: Some("MetricAlarm".into()),
            timestamp: Some(i.at),
            history_item_type: Some(i.kind),
            history_summary: Some(i.summary),
            history_data: Some(i.data),
            ..Default::default()
        })
        .collect();
    let (page, next) = paged(
        "DescribeAlarmHistory",
        &views,
        input.next_token.as_deref(),
        size,
    )?;
    Ok(w::DescribeAlarmHistoryOutput {
        alarm_history_items: Some(page),
        next_token: next,
    })
}

async fn actions_enabled(
    st: &AppState,
    ctx: &RequestContext,
    names: Vec<String>,
    on: bool,
) -> Out<Empty> {
    if names.len() > 100 {
        return Err(CwError::invalid(
            "The collection AlarmNames must not have a size greater than 100.",
        )
        .into());
    }
    for name in names {
        match alarms::change(st, &ctx.scope, &name, |r| {
            r.input.actions_enabled = Some(on)
        })
        .await
        {
            // Names that are not alarms are passed over, as CloudWatch does.
            Err(AlarmFailure::Cw(e)) if e.status == 404 => {}
            other => {
                other?;
            }
        }
    }
    Ok(Empty {})
}

async fn enable_alarm_actions(
    st: &AppState,
    ctx: &RequestContext,
    input: w::EnableAlarmActionsInput,
) -> Out<Empty> {
    actions_enabled(st, ctx, input.alarm_names.unwrap_or_default(), true).await
}

async fn disable_alarm_actions(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DisableAlarmActionsInput,
) -> Out<Empty> {
    actions_enabled(st, ctx, input.alarm_names.unwrap_or_default(), false).await
}

/// The alarm a tagging request's ARN names, in this account and region.
fn alarm_of_arn(ctx: &RequestContext, arn: Option<&str>) -> Result<String, CwError> {
    let arn = arn.ok_or_else(|| CwError::missing("ResourceARN"))?;
    let prefix = format!(
        "arn:aws:cloudwatch:{}:{}:alarm:",
        ctx.scope.region, ctx.scope.account
    );
    arn.strip_prefix(&prefix)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .ok_or_else(|| CwError::no_resource(format!("{arn} not found")))
}

async fn change_tags(
    st: &AppState,
    ctx: &RequestContext,
    arn: Option<&str>,
    f: impl Fn(&mut Vec<w::Tag>),
) -> Out<Vec<w::Tag>> {
    let name = alarm_of_arn(ctx, arn)?;
    let r = alarms::change(st, &ctx.scope, &name, |r| {
        let mut tags = r.input.tags.clone().unwrap_or_default();
        f(&mut tags);
        r.input.tags = Some(tags);
    })
    .await
    .map_err(|e| match e {
        AlarmFailure::Cw(e) if e.status == 404 => AlarmFailure::Cw(CwError::no_resource(format!(
            "{} not found",
            arn.unwrap_or_default()
        ))),
        other => other,
    })?;
    Ok(r.input.tags.unwrap_or_default())
}

async fn tag_resource(
    st: &AppState,
    ctx: &RequestContext,
    input: w::TagResourceInput,
) -> Out<w::TagResourceOutput> {
    let given = input.tags.clone().ok_or_else(|| CwError::missing("Tags"))?;
    rules::check_tags(&given)?;
    // Checked against what the alarm has before anything is written.
    let name = alarm_of_arn(ctx, input.resource_arn.as_deref())?;
    if let Some(found) = alarms::get(st, &ctx.scope, &name).await? {
        let mut merged = found.value.input.tags.clone().unwrap_or_default();
        merge_tags(&mut merged, &given);
        rules::check_tags(&merged)?;
    }
    change_tags(st, ctx, input.resource_arn.as_deref(), |tags| {
        merge_tags(tags, &given)
    })
    .await?;
    Ok(w::TagResourceOutput {})
}

fn merge_tags(tags: &mut Vec<w::Tag>, given: &[w::Tag]) {
    for t in given {
        match tags.iter_mut().find(|x| x.key == t.key) {
            Some(x) => x.value = t.value.clone(),
            None => tags.push(t.clone()),
        }
    }
}

async fn untag_resource(
    st: &AppState,
    ctx: &RequestContext,
    input: w::UntagResourceInput,
) -> Out<w::UntagResourceOutput> {
    let keys = input
        .tag_keys
        .clone()
        .ok_or_else(|| CwError::missing("TagKeys"))?;
    change_tags(st, ctx, input.resource_arn.as_deref(), |tags| {
        tags.retain(|t| !keys.iter().any(|k| Some(k) == t.key.as_ref()))
    })
    .await?;
    Ok(w::UntagResourceOutput {})
}

async fn list_tags_for_resource(
    st: &AppState,
    ctx: &RequestContext,
    input: w::ListTagsForResourceInput,
) -> Out<w::ListTagsForResourceOutput> {
    let name = alarm_of_arn(ctx, input.resource_arn.as_deref())?;
    let found = alarms::get(st, &ctx.scope, &name).await?.ok_or_else(|| {
        CwError::no_resource(format!(
            "{} not found",
            input.resource_arn.as_deref().unwrap_or_default()
        ))
    })?;
    Ok(w::ListTagsForResourceOutput {
        tags: Some(found.value.input.tags.unwrap_or_default()),
    })
}
