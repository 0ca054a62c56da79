//! CloudWatch's rules for metrics: what PutMetricData, GetMetricStatistics,
//! GetMetricData and ListMetrics accept, statistics by name, and the errors
//! CloudWatch answers in its own words. CloudWatch is served over JSON and
//! awsQuery alike: each error has its JSON shape and its query code (which
//! JSON clients also read, from the `x-amzn-query-error` header). Pure:
//! times are epoch seconds the caller passes.

use berth_wire::cloudwatch as w;

/// A CloudWatch error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{query_code}: {message}")]
pub struct CwError {
    /// The exception's shape, JSON's `__type`.
    pub code: &'static str,
    /// The awsQuery code.
    pub query_code: &'static str,
    pub status: u16,
    pub message: String,
}

impl CwError {
    fn new(code: &'static str, query_code: &'static str, status: u16, message: String) -> Self {
        CwError {
            code,
            query_code,
            status,
            message,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            "InvalidParameterValueException",
            "InvalidParameterValue",
            400,
            message.into(),
        )
    }

    /// "The value V for parameter F is invalid."
    pub fn value(field: &str, value: impl std::fmt::Display) -> Self {
        Self::invalid(format!(
            "The value {value} for parameter {field} is invalid."
        ))
    }

    pub fn missing(field: &str) -> Self {
        Self::new(
            "MissingRequiredParameterException",
            "MissingParameter",
            400,
            format!("The parameter {field} is required."),
        )
    }

    pub fn combination(message: impl Into<String>) -> Self {
        Self::new(
            "InvalidParameterCombinationException",
            "InvalidParameterCombination",
            400,
            message.into(),
        )
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(
            "ValidationException",
            "ValidationError",
            400,
            message.into(),
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("ResourceNotFound", "ResourceNotFound", 404, message.into())
    }

    /// A tagged resource that is not there (TagResource and its kin).
    pub fn no_resource(message: impl Into<String>) -> Self {
        Self::new(
            "ResourceNotFoundException",
            "ResourceNotFoundException",
            404,
            message.into(),
        )
    }

    pub fn limit(message: impl Into<String>) -> Self {
        Self::new("LimitExceededFault", "LimitExceeded", 400, message.into())
    }

    pub fn new_invalid_format(message: impl Into<String>) -> Self {
        Self::new("InvalidFormatFault", "InvalidFormat", 400, message.into())
    }

    pub fn new_concurrent(message: impl Into<String>) -> Self {
        Self::new(
            "ConcurrentModificationException",
            "ConcurrentModificationException",
            429,
            message.into(),
        )
    }

    pub fn next_token() -> Self {
        Self::new(
            "InvalidNextToken",
            "InvalidNextToken",
            400,
            "The service cannot process the NextToken you provided.".into(),
        )
    }
}

pub const MAX_METRICS_PER_PUT: usize = 1000;
pub const MAX_DIMENSIONS: usize = 30;
pub const MAX_VALUES: usize = 150;
pub const MAX_DATAPOINTS: i64 = 1440;
pub const MAX_QUERIES: usize = 500;
/// Accepted datapoints are at most two weeks old and two hours ahead.
pub const PAST: i64 = 14 * 86_400;
pub const FUTURE: i64 = 2 * 3600;
/// Values lie within ±2^360.
fn in_range(v: f64) -> bool {
    v.is_finite() && v.abs() <= 2f64.powi(360)
}

/// A namespace as PutMetricData takes it: 1 to 255 characters, no
/// control characters, not starting with `:`, and (for callers other
/// than Berth itself) not in AWS's own `AWS/` namespaces.
pub fn check_namespace(ns: &str, field: &str, reserved_allowed: bool) -> Result<(), CwError> {
    let bad = ns.is_empty()
        || ns.chars().count() > 255
        || ns.starts_with(':')
        || ns.chars().any(char::is_control)
        || (!reserved_allowed && ns.starts_with("AWS/"));
    if bad {
        return Err(CwError::value(field, ns));
    }
    Ok(())
}

fn check_text(v: &str, field: &str, max: usize) -> Result<(), CwError> {
    if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(CwError::value(field, v));
    }
    Ok(())
}

/// A metric's dimensions, checked and sorted by name.
pub fn check_dimensions(
    dims: Option<&Vec<w::Dimension>>,
    field: &str,
) -> Result<Vec<(String, String)>, CwError> {
    let dims = dims.map(Vec::as_slice).unwrap_or_default();
    if dims.len() > MAX_DIMENSIONS {
        return Err(CwError::invalid(format!(
            "The collection {field} must not have a size greater than {MAX_DIMENSIONS}."
        )));
    }
    let mut out = Vec::with_capacity(dims.len());
    for (i, d) in dims.iter().enumerate() {
        let at = format!("{field}.member.{}", i + 1);
        let name = d
            .name
            .as_deref()
            .ok_or_else(|| CwError::missing(&format!("{at}.Name")))?;
        let value = d
            .value
            .as_deref()
            .ok_or_else(|| CwError::missing(&format!("{at}.Value")))?;
        check_text(name, &format!("{at}.Name"), 255)?;
        check_text(value, &format!("{at}.Value"), 1024)?;
        if out.iter().any(|(n, _): &(String, String)| n == name) {
            return Err(CwError::combination(format!(
                "No metric may have duplicate dimensions: {name} appears more than once in {field}."
            )));
        }
        out.push((name.to_string(), value.to_string()));
    }
    out.sort();
    Ok(out)
}

/// Dimensions as (name, value) pairs, as a stored alarm or query holds them
/// (already checked).
pub fn pairs(dims: Option<&Vec<w::Dimension>>) -> Vec<(String, String)> {
    dims.into_iter()
        .flatten()
        .map(|d| {
            (
                d.name.clone().unwrap_or_default(),
                d.value.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn check_unit(unit: Option<&str>, field: &str) -> Result<String, CwError> {
    match unit {
        None => Ok("None".into()),
        Some(u) if w::enums::STANDARD_UNIT.contains(&u) => Ok(u.to_string()),
        Some(u) => Err(CwError::value(field, u)),
    }
}

/// What one datum of PutMetricData carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// Values and how many times each occurred (one value: count 1).
    Values(Vec<(f64, f64)>),
    /// A statistic set.
    Set {
        count: f64,
        sum: f64,
        min: f64,
        max: f64,
    },
}

/// One checked datum of PutMetricData.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub name: String,
    pub dimensions: Vec<(String, String)>,
    pub unit: String,
    /// Epoch seconds, whole.
    pub timestamp: i64,
    pub high_resolution: bool,
    pub sample: Sample,
}

/// PutMetricData's input as CloudWatch checks it, at `now`: the namespace
/// and each datum (those of `EntityMetricData` too: the entity only
/// relates telemetry, it changes no datapoint). `reserved_allowed` lets
/// Berth publish AWS's own namespaces.
pub fn check_put(
    input: &w::PutMetricDataInput,
    now: f64,
    reserved_allowed: bool,
) -> Result<(String, Vec<Datum>), CwError> {
    let ns = input
        .namespace
        .as_deref()
        .ok_or_else(|| CwError::missing("Namespace"))?;
    check_namespace(ns, "Namespace", reserved_allowed)?;
    let mut given: Vec<(String, &w::MetricDatum)> = input
        .metric_data
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, d)| (format!("MetricData.member.{}", i + 1), d))
        .collect();
    for (e, entity) in input.entity_metric_data.iter().flatten().enumerate() {
        for (i, d) in entity.metric_data.iter().flatten().enumerate() {
            given.push((
                format!(
                    "EntityMetricData.member.{}.MetricData.member.{}",
                    e + 1,
                    i + 1
                ),
                d,
            ));
        }
    }
    if given.is_empty() {
        return Err(CwError::missing("MetricData"));
    }
    if given.len() > MAX_METRICS_PER_PUT {
        return Err(CwError::invalid(format!(
            "The collection MetricData must not have a size greater than {MAX_METRICS_PER_PUT}."
        )));
    }
    let mut out = Vec::with_capacity(given.len());
    let mut late = vec![];
    for (at, d) in given {
        let name = d
            .metric_name
            .as_deref()
            .ok_or_else(|| CwError::missing(&format!("{at}.MetricName")))?;
        check_text(name, &format!("{at}.MetricName"), 255)?;
        let dimensions = check_dimensions(d.dimensions.as_ref(), &format!("{at}.Dimensions"))?;
        let unit = check_unit(d.unit.as_deref(), &format!("{at}.Unit"))?;
        let high_resolution = match d.storage_resolution {
            None | Some(60) => false,
            Some(1) => true,
            Some(r) => return Err(CwError::value(&format!("{at}.StorageResolution"), r)),
        };
        let ts = d.timestamp.unwrap_or(now);
        if !ts.is_finite() || ts < now - PAST as f64 || ts > now + FUTURE as f64 {
            late.push(format!(
                "The parameter {at}.Timestamp must specify a time within the past two weeks."
            ));
            continue;
        }
        let sample = match (&d.value, &d.statistic_values, &d.values) {
            (Some(v), None, None) => {
                if !in_range(*v) {
                    return Err(CwError::value(&format!("{at}.Value"), v));
                }
                Sample::Values(vec![(*v, 1.0)])
            }
            (None, Some(s), None) => {
                let field = |name: &str, v: Option<f64>| {
                    let v = v.ok_or_else(|| {
                        CwError::missing(&format!("{at}.StatisticValues.{name}"))
                    })?;
                    if in_range(v) {
                        Ok(v)
                    } else {
                        Err(CwError::value(&format!("{at}.StatisticValues.{name}"), v))
                    }
                };
                let count = field("SampleCount", s.sample_count)?;
                let sum = field("Sum", s.sum)?;
                let min = field("Minimum", s.minimum)?;
                let max = field("Maximum", s.maximum)?;
                if count <= 0.0 {
                    return Err(CwError::value(
                        &format!("{at}.StatisticValues.SampleCount"),
                        count,
                    ));
                }
                if min > max {
                    return Err(CwError::combination(format!(
                        "The parameter {at}.StatisticValues.Maximum must be greater than {at}.StatisticValues.Minimum."
                    )));
                }
                Sample::Set {
                    count,
                    sum,
                    min,
                    max,
                }
            }
            (None, None, Some(values)) => {
                if values.len() > MAX_VALUES {
                    return Err(CwError::invalid(format!(
                        "The collection {at}.Values must not have a size greater than {MAX_VALUES}."
                    )));
                }
                let counts = d.counts.clone().unwrap_or_else(|| vec![1.0; values.len()]);
                if counts.len() != values.len() {
                    return Err(CwError::combination(format!(
                        "The parameters {at}.Values and {at}.Counts must be of the same size."
                    )));
                }
                let mut pairs = Vec::with_capacity(values.len());
                for (i, (v, c)) in values.iter().zip(&counts).enumerate() {
                    if !in_range(*v) {
                        return Err(CwError::value(&format!("{at}.Values.member.{}", i + 1), v));
                    }
                    if !c.is_finite() || *c < 0.0 {
                        return Err(CwError::value(&format!("{at}.Counts.member.{}", i + 1), c));
                    }
                    pairs.push((*v, *c));
                }
                if pairs.iter().all(|(_, c)| *c == 0.0) {
                    return Err(CwError::combination(format!(
                        "The parameter {at}.Counts must count at least one value."
                    )));
                }
                Sample::Values(pairs)
            }
            (None, None, None) => {
                return Err(CwError::combination(format!(
                    "At least one of the parameters {at}.Value, {at}.StatisticValues and {at}.Values must be specified."
                )))
            }
            _ => {
                return Err(CwError::combination(format!(
                    "The parameters {at}.Value, {at}.StatisticValues and {at}.Values are mutually exclusive and you have specified more than one."
                )))
            }
        };
        out.push(Datum {
            name: name.to_string(),
            dimensions,
            unit,
            timestamp: ts.floor() as i64,
            high_resolution,
            sample,
        });
    }
    if !late.is_empty() {
        return Err(CwError::invalid(late.join("\n")));
    }
    Ok((ns.to_string(), out))
}

/// A statistic by name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    SampleCount,
    Average,
    Sum,
    Minimum,
    Maximum,
    /// `pNN` (0 to 100, decimals allowed), as a fraction.
    Percentile(f64),
}

impl Stat {
    /// A statistic of `Statistics` or a percentile of `ExtendedStatistics`.
    pub fn parse(text: &str) -> Option<Stat> {
        Some(match text {
            "SampleCount" => Stat::SampleCount,
            "Average" => Stat::Average,
            "Sum" => Stat::Sum,
            "Minimum" => Stat::Minimum,
            "Maximum" => Stat::Maximum,
            p => {
                let n = p.strip_prefix('p').or_else(|| p.strip_prefix('P'))?;
                let digits_ok = !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    && n.matches('.').count() <= 1
                    && n.split('.')
                        .next()
                        .is_some_and(|i| !i.is_empty() && i.len() <= 3);
                let v: f64 = n.parse().ok().filter(|_| digits_ok)?;
                if !(0.0..=100.0).contains(&v) {
                    return None;
                }
                Stat::Percentile(v / 100.0)
            }
        })
    }
}

/// `Period` as CloudWatch takes it: 1, 5, 10, 30 or a multiple of 60.
pub fn check_period(period: Option<i32>, field: &str) -> Result<i64, CwError> {
    let p = period.ok_or_else(|| CwError::missing(field))?;
    if p <= 0 || !(matches!(p, 1 | 5 | 10 | 30) || p % 60 == 0) {
        return Err(CwError::value(field, p));
    }
    Ok(i64::from(p))
}

/// `StartTime` and `EndTime`: both given, start before end; returned as
/// whole epoch seconds.
pub fn check_range(start: Option<f64>, end: Option<f64>) -> Result<(i64, i64), CwError> {
    let start = start.ok_or_else(|| CwError::missing("StartTime"))?;
    let end = end.ok_or_else(|| CwError::missing("EndTime"))?;
    if start == end {
        return Err(CwError::invalid(
            "The parameter StartTime must not equal parameter EndTime.",
        ));
    }
    if start > end {
        return Err(CwError::invalid(
            "The parameter StartTime must be less than the parameter EndTime.",
        ));
    }
    Ok((start.floor() as i64, end.ceil() as i64))
}

/// Where a read's first period begins, as CloudWatch rounds StartTime:
/// periods under a minute at an even division of the minute; otherwise
/// the whole minute for data under 15 days old, five minutes up to 63
/// days, the hour beyond. Periods are counted from there, not from the
/// epoch.
pub fn round_start(start: i64, period: i64, now: i64) -> i64 {
    let step = if period < 60 {
        period.max(1)
    } else if now - start < 15 * 86_400 {
        60
    } else if now - start < 63 * 86_400 {
        300
    } else {
        3600
    };
    start.div_euclid(step) * step
}

/// GetMetricStatistics' input, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct StatisticsRequest {
    pub namespace: String,
    pub name: String,
    pub dimensions: Vec<(String, String)>,
    pub start: i64,
    pub end: i64,
    pub period: i64,
    /// `Statistics` then `ExtendedStatistics`, each with its name.
    pub stats: Vec<(String, Stat)>,
    pub unit: Option<String>,
}

pub fn check_statistics(input: &w::GetMetricStatisticsInput) -> Result<StatisticsRequest, CwError> {
    let namespace = input
        .namespace
        .clone()
        .ok_or_else(|| CwError::missing("Namespace"))?;
    check_namespace(&namespace, "Namespace", true)?;
    let name = input
        .metric_name
        .clone()
        .ok_or_else(|| CwError::missing("MetricName"))?;
    check_text(&name, "MetricName", 255)?;
    let dimensions = check_dimensions(input.dimensions.as_ref(), "Dimensions")?;
    let (start, end) = check_range(input.start_time, input.end_time)?;
    let period = check_period(input.period, "Period")?;
    let mut stats = vec![];
    for (i, s) in input.statistics.iter().flatten().enumerate() {
        if !w::enums::STATISTIC.contains(&s.as_str()) {
            return Err(CwError::value(&format!("Statistics.member.{}", i + 1), s));
        }
        stats.push((s.clone(), Stat::parse(s).unwrap_or(Stat::Average)));
    }
    for (i, s) in input.extended_statistics.iter().flatten().enumerate() {
        match Stat::parse(s) {
            Some(p @ Stat::Percentile(_)) => stats.push((s.clone(), p)),
            _ => {
                return Err(CwError::value(
                    &format!("ExtendedStatistics.member.{}", i + 1),
                    s,
                ))
            }
        }
    }
    if stats.is_empty() {
        return Err(CwError::combination(
            "Must specify either Statistics or ExtendedStatistics.",
        ));
    }
    if stats.len() > 10 {
        return Err(CwError::combination(
            "Statistics and ExtendedStatistics together must not name more than 10 statistics.",
        ));
    }
    let unit = match input.unit.as_deref() {
        None => None,
        Some(u) => Some(check_unit(Some(u), "Unit")?),
    };
    let points = (end - start + period - 1) / period;
    if points > MAX_DATAPOINTS {
        return Err(CwError::combination(format!(
            "You have requested up to {} datapoints, which exceeds the limit of 1,440. You may reduce the datapoints requested by increasing Period, or decreasing the time range.",
            group_thousands(points)
        )));
    }
    Ok(StatisticsRequest {
        namespace,
        name,
        dimensions,
        start,
        end,
        period,
        stats,
        unit,
    })
}

fn group_thousands(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// ListMetrics' dimension filters: (name, value or any).
pub fn check_dimension_filters(
    filters: Option<&Vec<w::DimensionFilter>>,
) -> Result<Vec<(String, Option<String>)>, CwError> {
    let filters = filters.map(Vec::as_slice).unwrap_or_default();
    if filters.len() > 10 {
        return Err(CwError::invalid(
            "The collection Dimensions must not have a size greater than 10.",
        ));
    }
    let mut out = vec![];
    for (i, f) in filters.iter().enumerate() {
        let at = format!("Dimensions.member.{}", i + 1);
        let name = f
            .name
            .clone()
            .ok_or_else(|| CwError::missing(&format!("{at}.Name")))?;
        check_text(&name, &format!("{at}.Name"), 255)?;
        if let Some(v) = &f.value {
            check_text(v, &format!("{at}.Value"), 1024)?;
        }
        out.push((name, f.value.clone()));
    }
    Ok(out)
}

/// Tags of an alarm: at most 50, keys of 1 to 128 characters not starting
/// with `aws:`, values of up to 256.
pub fn check_tags(tags: &[w::Tag]) -> Result<(), CwError> {
    if tags.len() > 50 {
        return Err(CwError::validation(
            "The collection Tags must not have a size greater than 50.",
        ));
    }
    for (i, t) in tags.iter().enumerate() {
        let at = format!("Tags.member.{}", i + 1);
        let key = t
            .key
            .as_deref()
            .ok_or_else(|| CwError::missing(&format!("{at}.Key")))?;
        let value = t
            .value
            .as_deref()
            .ok_or_else(|| CwError::missing(&format!("{at}.Value")))?;
        if key.is_empty() || key.chars().count() > 128 || key.starts_with("aws:") {
            return Err(CwError::value(&format!("{at}.Key"), key));
        }
        if value.chars().count() > 256 {
            return Err(CwError::value(&format!("{at}.Value"), value));
        }
    }
    Ok(())
}

/// A GetMetricData query's `Id`: a lowercase letter, then letters,
/// digits and underscores.
pub fn check_query_id(id: &str, field: &str) -> Result<(), CwError> {
    let ok = id.len() <= 255
        && id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(CwError::validation(format!(
            "The value {id} for parameter {field} is not matching the expected pattern ^[a-z][a-zA-Z0-9_]*$."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datum(f: impl FnOnce(&mut w::MetricDatum)) -> w::PutMetricDataInput {
        let mut d = w::MetricDatum {
            metric_name: Some("Latency".into()),
            value: Some(1.5),
            ..Default::default()
        };
        f(&mut d);
        w::PutMetricDataInput {
            namespace: Some("App".into()),
            metric_data: Some(vec![d]),
            ..Default::default()
        }
    }

    const NOW: f64 = 1_800_000_000.0;

    #[test]
    fn put_accepts_values_sets_and_arrays_and_names_what_is_wrong() {
        let (ns, data) = check_put(&datum(|_| {}), NOW, false).expect("ok");
        assert_eq!(ns, "App");
        assert_eq!(data[0].sample, Sample::Values(vec![(1.5, 1.0)]));
        assert_eq!(
            (data[0].unit.as_str(), data[0].timestamp),
            ("None", NOW as i64)
        );
        let (_, data) = check_put(
            &datum(|d| {
                d.value = None;
                d.values = Some(vec![1.0, 2.0]);
                d.counts = Some(vec![3.0, 1.0]);
                d.storage_resolution = Some(1);
                d.dimensions = Some(vec![
                    w::Dimension {
                        name: Some("b".into()),
                        value: Some("2".into()),
                    },
                    w::Dimension {
                        name: Some("a".into()),
                        value: Some("1".into()),
                    },
                ]);
            }),
            NOW,
            false,
        )
        .expect("ok");
        assert!(data[0].high_resolution);
        assert_eq!(data[0].dimensions[0].0, "a");

        let err =
            |f: fn(&mut w::MetricDatum)| check_put(&datum(f), NOW, false).expect_err("refused");
        let e = err(|d| d.timestamp = Some(NOW - 15.0 * 86_400.0));
        assert_eq!(e.query_code, "InvalidParameterValue");
        assert_eq!(e.message, "The parameter MetricData.member.1.Timestamp must specify a time within the past two weeks.");
        let e = err(|d| d.value = None);
        assert_eq!(e.query_code, "InvalidParameterCombination");
        assert!(e.message.contains("MetricData.member.1.Value"));
        let e = err(|d| d.value = Some(f64::NAN));
        assert_eq!(
            e.message,
            "The value NaN for parameter MetricData.member.1.Value is invalid."
        );
        let e = err(|d| d.unit = Some("Parsecs".into()));
        assert_eq!(
            e.message,
            "The value Parsecs for parameter MetricData.member.1.Unit is invalid."
        );
        let e = err(|d| d.storage_resolution = Some(5));
        assert!(e.message.contains("StorageResolution"));
        let e = err(|d| {
            d.value = None;
            d.values = Some(vec![1.0]);
            d.counts = Some(vec![1.0, 2.0]);
        });
        assert!(e.message.contains("Counts"));
        let e = err(|d| d.metric_name = None);
        assert_eq!(
            (e.query_code, e.message.as_str()),
            (
                "MissingParameter",
                "The parameter MetricData.member.1.MetricName is required."
            )
        );
        let mut aws = datum(|_| {});
        aws.namespace = Some("AWS/ECS".into());
        assert_eq!(
            check_put(&aws, NOW, false).expect_err("reserved").message,
            "The value AWS/ECS for parameter Namespace is invalid."
        );
        assert!(check_put(&aws, NOW, true).is_ok());
    }

    #[test]
    fn statistics_requests_are_checked_as_cloudwatch_checks_them() {
        let base = || w::GetMetricStatisticsInput {
            namespace: Some("App".into()),
            metric_name: Some("Latency".into()),
            start_time: Some(NOW - 3600.0),
            end_time: Some(NOW),
            period: Some(60),
            statistics: Some(vec!["Average".into()]),
            extended_statistics: Some(vec!["p99".into(), "p99.9".into()]),
            ..Default::default()
        };
        let r = check_statistics(&base()).expect("ok");
        assert_eq!(r.stats.len(), 3);
        assert_eq!(r.stats[1].1, Stat::Percentile(0.99));
        let mut i = base();
        i.period = Some(1);
        i.start_time = Some(NOW - 86_400.0);
        let e = check_statistics(&i).expect_err("too many");
        assert_eq!(e.message, "You have requested up to 86,400 datapoints, which exceeds the limit of 1,440. You may reduce the datapoints requested by increasing Period, or decreasing the time range.");
        let mut i = base();
        i.period = Some(45);
        assert_eq!(
            check_statistics(&i).expect_err("period").message,
            "The value 45 for parameter Period is invalid."
        );
        let mut i = base();
        i.end_time = i.start_time;
        assert_eq!(
            check_statistics(&i).expect_err("equal").message,
            "The parameter StartTime must not equal parameter EndTime."
        );
        let mut i = base();
        i.statistics = None;
        i.extended_statistics = None;
        assert_eq!(
            check_statistics(&i).expect_err("none").query_code,
            "InvalidParameterCombination"
        );
        let mut i = base();
        i.extended_statistics = Some(vec!["tm99".into()]);
        assert_eq!(
            check_statistics(&i).expect_err("tm").message,
            "The value tm99 for parameter ExtendedStatistics.member.1 is invalid."
        );
        assert_eq!(Stat::parse("p100"), Some(Stat::Percentile(1.0)));
        assert_eq!(Stat::parse("p101"), None);
        assert_eq!(Stat::parse("pxx"), None);
    }

    #[test]
    fn query_ids_follow_cloudwatchs_pattern() {
        assert!(check_query_id("m1", "Id").is_ok());
        let e = check_query_id("5xx", "MetricDataQueries.member.1.Id").expect_err("bad");
        assert_eq!(e.query_code, "ValidationError");
        assert!(e
            .message
            .ends_with("is not matching the expected pattern ^[a-z][a-zA-Z0-9_]*$."));
    }
}

#[cfg(test)]
mod round_start_tests {
    use super::round_start;

    #[test]
    fn start_times_round_as_cloudwatch_rounds_them() {
        let now = 1_800_000_000;
        // 12:32:34 -> 12:32:00 for recent data, whatever the period.
        assert_eq!(round_start(now - 86 + 34, 600, now) % 60, 0);
        assert_eq!(round_start(1_799_999_554, 600, now), 1_799_999_520);
        // Sub-minute periods: an even division of the minute.
        assert_eq!(round_start(1_799_999_557, 10, now), 1_799_999_550);
        // Older data: five minutes, then the hour.
        let old = now - 20 * 86_400;
        assert_eq!(round_start(old + 123, 60, now) % 300, 0);
        let older = now - 70 * 86_400;
        assert_eq!(round_start(older + 1234, 60, now) % 3600, 0);
    }
}
