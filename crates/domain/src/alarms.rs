//! CloudWatch metric alarms: what PutMetricAlarm accepts, the records
//! (the alarm as users set it, and its state as the evaluator finds it,
//! each with its own writer), and the state machine: M out of N
//! datapoints, the four ways of treating missing data, and the reasons
//! CloudWatch gives. Pure: the caller passes the datapoints and the time.

use crate::cloudwatch::{self as cw, CwError, Stat};
use berth_wire::cloudwatch as w;
use serde::{Deserialize, Serialize};

pub const OK: &str = "OK";
pub const ALARM: &str = "ALARM";
pub const INSUFFICIENT_DATA: &str = "INSUFFICIENT_DATA";

/// The alarm as users set it (PutMetricAlarm, SetAlarmState, actions
/// enabled, tags): written by the API only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmRecord {
    /// What PutMetricAlarm was given, defaults filled in.
    pub input: w::PutMetricAlarmInput,
    pub arn: String,
    /// Epoch seconds.
    pub configuration_updated: f64,
    /// A state set by SetAlarmState, for the evaluator to adopt once.
    #[serde(default)]
    pub forced: Option<Forced>,
    /// Increases with every change; the state names the one it judged.
    pub generation: u64,
}

/// SetAlarmState's request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forced {
    pub value: String,
    pub reason: String,
    pub reason_data: Option<String>,
    pub seq: u64,
}

/// The alarm's state as the evaluator found it: written by the evaluator
/// only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmState {
    pub value: String,
    pub reason: String,
    #[serde(default)]
    pub reason_data: Option<String>,
    /// When it was last judged, and when its value last changed (epoch
    /// seconds).
    pub updated: f64,
    pub transitioned: f64,
    /// The last SetAlarmState adopted.
    #[serde(default)]
    pub forced_seq: u64,
    /// When actions last ran (Auto Scaling actions run again each minute
    /// while the alarm stays in the state).
    #[serde(default)]
    pub actions_at: Option<f64>,
}

impl AlarmState {
    /// A new alarm's: INSUFFICIENT_DATA.
    pub fn initial(at: f64) -> AlarmState {
        AlarmState {
            value: INSUFFICIENT_DATA.into(),
            reason: "Unchecked: Initial alarm creation".into(),
            reason_data: None,
            updated: at,
            transitioned: at,
            forced_seq: 0,
            actions_at: None,
        }
    }
}

fn text_len(v: &str, field: &str, min: usize, max: usize) -> Result<(), CwError> {
    let n = v.chars().count();
    if n < min || n > max {
        return Err(CwError::value(field, v));
    }
    Ok(())
}

/// Action ARNs: at most five per state, each an ARN.
fn check_actions(list: &Option<Vec<String>>, field: &str) -> Result<(), CwError> {
    let list = list.as_deref().unwrap_or_default();
    if list.len() > 5 {
        return Err(CwError::invalid(format!(
            "The collection {field} must not have a size greater than 5."
        )));
    }
    for (i, a) in list.iter().enumerate() {
        let parts: Vec<&str> = a.splitn(6, ':').collect();
        if parts.len() < 6 || parts[0] != "arn" || parts[2].is_empty() {
            return Err(CwError::validation(format!(
                "Invalid arn syntax: {a} ({field}.member.{})",
                i + 1
            )));
        }
    }
    Ok(())
}

/// What an alarm watches and how it judges it.
#[derive(Debug, Clone, PartialEq)]
pub struct Criteria {
    pub period: i64,
    pub evaluation_periods: usize,
    pub datapoints_to_alarm: usize,
    pub threshold: f64,
    pub comparison: String,
    pub treat_missing: String,
}

impl Criteria {
    pub fn of(input: &w::PutMetricAlarmInput) -> Criteria {
        let n = input.evaluation_periods.unwrap_or(1).max(1) as usize;
        let period = match &input.metrics {
            Some(metrics) => metrics
                .iter()
                .filter_map(|q| q.metric_stat.as_ref().and_then(|m| m.period).or(q.period))
                .min()
                .unwrap_or(60),
            None => input.period.unwrap_or(60),
        };
        Criteria {
            period: i64::from(period.max(1)),
            evaluation_periods: n,
            datapoints_to_alarm: input.datapoints_to_alarm.map_or(n, |m| m.max(1) as usize),
            threshold: input.threshold.unwrap_or(0.0),
            comparison: input.comparison_operator.clone().unwrap_or_default(),
            treat_missing: input
                .treat_missing_data
                .clone()
                .unwrap_or_else(|| "missing".into()),
        }
    }

    fn breaches(&self, v: f64) -> bool {
        match self.comparison.as_str() {
            "GreaterThanOrEqualToThreshold" => v >= self.threshold,
            "GreaterThanThreshold" => v > self.threshold,
            "LessThanThreshold" => v < self.threshold,
            _ => v <= self.threshold,
        }
    }

    fn relation(&self, breaching: bool) -> &'static str {
        match (self.comparison.as_str(), breaching) {
            ("GreaterThanOrEqualToThreshold", true) => "greater than or equal to",
            ("GreaterThanOrEqualToThreshold", false) => "not greater than or equal to",
            ("GreaterThanThreshold", true) => "greater than",
            ("GreaterThanThreshold", false) => "not greater than",
            ("LessThanThreshold", true) => "less than",
            ("LessThanThreshold", false) => "not less than",
            (_, true) => "less than or equal to",
            (_, false) => "not less than or equal to",
        }
    }
}

/// PutMetricAlarm's input as CloudWatch checks it, with defaults filled
/// in (ActionsEnabled, TreatMissingData, DatapointsToAlarm).
pub fn check_put(input: &w::PutMetricAlarmInput) -> Result<w::PutMetricAlarmInput, CwError> {
    let mut a = input.clone();
    let name = a
        .alarm_name
        .clone()
        .ok_or_else(|| CwError::missing("AlarmName"))?;
    text_len(&name, "AlarmName", 1, 255)?;
    if let Some(d) = &a.alarm_description {
        text_len(d, "AlarmDescription", 0, 1024)?;
    }
    check_actions(&a.ok_actions, "OKActions")?;
    check_actions(&a.alarm_actions, "AlarmActions")?;
    check_actions(&a.insufficient_data_actions, "InsufficientDataActions")?;
    // What Berth does not evaluate is refused, never ignored.
    for (given, field) in [
        (a.threshold_metric_id.is_some(), "ThresholdMetricId"),
        (a.evaluation_criteria.is_some(), "EvaluationCriteria"),
        (a.evaluation_window.is_some(), "EvaluationWindow"),
        (a.warm_up_configuration.is_some(), "WarmUpConfiguration"),
        (a.action_configuration.is_some(), "ActionConfiguration"),
        (a.evaluation_interval.is_some(), "EvaluationInterval"),
    ] {
        if given {
            return Err(CwError::invalid(format!(
                "The parameter {field} is not supported by Berth's CloudWatch (anomaly detection, PromQL and evaluation windows are not evaluated)."
            )));
        }
    }
    let op = a
        .comparison_operator
        .clone()
        .ok_or_else(|| CwError::missing("ComparisonOperator"))?;
    match op.as_str() {
        "GreaterThanOrEqualToThreshold" | "GreaterThanThreshold" | "LessThanThreshold"
        | "LessThanOrEqualToThreshold" => {}
        o if w::enums::COMPARISON_OPERATOR.contains(&o) => {
            return Err(CwError::invalid(format!(
                "The value {o} for parameter ComparisonOperator needs an anomaly detection band, which Berth's CloudWatch does not evaluate."
            )))
        }
        o => return Err(CwError::value("ComparisonOperator", o)),
    }
    if a.threshold.is_none() {
        return Err(CwError::missing("Threshold"));
    }
    let n = a
        .evaluation_periods
        .ok_or_else(|| CwError::missing("EvaluationPeriods"))?;
    if n < 1 {
        return Err(CwError::value("EvaluationPeriods", n));
    }
    if let Some(m) = a.datapoints_to_alarm {
        if m < 1 || m > n {
            return Err(CwError::validation(format!(
                "DatapointsToAlarm must be between 1 and EvaluationPeriods ({n}); got {m}."
            )));
        }
    }
    match a.treat_missing_data.as_deref() {
        None => a.treat_missing_data = Some("missing".into()),
        Some("missing" | "notBreaching" | "breaching" | "ignore") => {}
        Some(t) => return Err(CwError::value("TreatMissingData", t)),
    }
    match a.evaluate_low_sample_count_percentile.as_deref() {
        None | Some("evaluate") => {}
        Some("ignore") => {
            return Err(CwError::invalid(
                "EvaluateLowSampleCountPercentile ignore is not supported by Berth's CloudWatch: percentile alarms are evaluated whatever their sample count.",
            ))
        }
        Some(v) => return Err(CwError::value("EvaluateLowSampleCountPercentile", v)),
    }
    if let Some(u) = &a.unit {
        if !w::enums::STANDARD_UNIT.contains(&u.as_str()) {
            return Err(CwError::value("Unit", u));
        }
    }
    let single = a.metric_name.is_some()
        || a.namespace.is_some()
        || a.statistic.is_some()
        || a.extended_statistic.is_some()
        || a.dimensions.is_some()
        || a.period.is_some();
    let period = match (&a.metrics, single) {
        (Some(_), true) => {
            return Err(CwError::combination(
                "Metrics list and the parameters MetricName, Namespace, Statistic, ExtendedStatistic, Dimensions and Period are mutually exclusive.",
            ))
        }
        (None, _) => {
            let ns = a.namespace.clone().ok_or_else(|| CwError::missing("Namespace"))?;
            cw::check_namespace(&ns, "Namespace", true)?;
            let metric = a
                .metric_name
                .clone()
                .ok_or_else(|| CwError::missing("MetricName"))?;
            text_len(&metric, "MetricName", 1, 255)?;
            let dims = cw::check_dimensions(a.dimensions.as_ref(), "Dimensions")?;
            a.dimensions = Some(
                dims.into_iter()
                    .map(|(k, v)| w::Dimension {
                        name: Some(k),
                        value: Some(v),
                    })
                    .collect(),
            );
            match (&a.statistic, &a.extended_statistic) {
                (Some(s), None) if w::enums::STATISTIC.contains(&s.as_str()) => {}
                (Some(s), None) => return Err(CwError::value("Statistic", s)),
                (None, Some(p)) if matches!(Stat::parse(p), Some(Stat::Percentile(_))) => {}
                (None, Some(p)) => return Err(CwError::value("ExtendedStatistic", p)),
                (None, None) => {
                    return Err(CwError::combination(
                        "One of the parameters Statistic or ExtendedStatistic must be specified.",
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(CwError::combination(
                        "The parameters Statistic and ExtendedStatistic are mutually exclusive and you have specified both.",
                    ))
                }
            }
            let p = a.period.ok_or_else(|| CwError::missing("Period"))?;
            check_alarm_period(p, "Period")?
        }
        (Some(metrics), false) => {
            if metrics.is_empty() || metrics.len() > 10 {
                return Err(CwError::validation(
                    "The collection Metrics must have between 1 and 10 members.",
                ));
            }
            let returned = metrics.iter().filter(|q| q.return_data.unwrap_or(true)).count();
            if returned != 1 {
                return Err(CwError::validation(
                    "Exactly one element of the metrics list should return data.",
                ));
            }
            let mut shortest = i64::MAX;
            for (i, q) in metrics.iter().enumerate() {
                let at = format!("Metrics.member.{}", i + 1);
                let id = q.id.clone().ok_or_else(|| CwError::missing(&format!("{at}.Id")))?;
                if q.account_id.is_some() {
                    return Err(CwError::invalid(format!(
                        "The parameter {at}.AccountId is not supported: Berth has no linked accounts."
                    )));
                }
                cw::check_query_id(&id, &format!("{at}.Id"))?;
                match (&q.metric_stat, &q.expression) {
                    (Some(ms), None) => {
                        let m = ms.metric.as_ref().ok_or_else(|| {
                            CwError::missing(&format!("{at}.MetricStat.Metric"))
                        })?;
                        let ns = m.namespace.clone().ok_or_else(|| {
                            CwError::missing(&format!("{at}.MetricStat.Metric.Namespace"))
                        })?;
                        cw::check_namespace(&ns, &format!("{at}.MetricStat.Metric.Namespace"), true)?;
                        if m.metric_name.is_none() {
                            return Err(CwError::missing(&format!(
                                "{at}.MetricStat.Metric.MetricName"
                            )));
                        }
                        cw::check_dimensions(
                            m.dimensions.as_ref(),
                            &format!("{at}.MetricStat.Metric.Dimensions"),
                        )?;
                        let stat = ms.stat.clone().ok_or_else(|| {
                            CwError::missing(&format!("{at}.MetricStat.Stat"))
                        })?;
                        if Stat::parse(&stat).is_none() {
                            return Err(CwError::value(&format!("{at}.MetricStat.Stat"), stat));
                        }
                        let p = ms
                            .period
                            .ok_or_else(|| CwError::missing(&format!("{at}.MetricStat.Period")))?;
                        shortest = shortest.min(check_alarm_period(p, &format!("{at}.MetricStat.Period"))?);
                    }
                    (None, Some(e)) => {
                        crate::metric_math::Expression::parse(e).map_err(|why| {
                            CwError::validation(format!(
                                "Error in expression {id} ({at}.Expression): {why}"
                            ))
                        })?;
                        if let Some(p) = q.period {
                            shortest = shortest.min(check_alarm_period(p, &format!("{at}.Period"))?);
                        }
                    }
                    _ => {
                        return Err(CwError::combination(format!(
                            "Exactly one of the parameters {at}.MetricStat and {at}.Expression must be specified."
                        )))
                    }
                }
            }
            if shortest == i64::MAX {
                return Err(CwError::validation(
                    "The metrics list must contain at least one MetricStat, or an expression with a Period.",
                ));
            }
            shortest
        }
    };
    if period * i64::from(n) > 86_400 {
        return Err(CwError::validation(
            "The evaluation period of the alarm (Period multiplied by EvaluationPeriods) must not exceed one day.",
        ));
    }
    a.actions_enabled = Some(a.actions_enabled.unwrap_or(true));
    if let Some(tags) = &a.tags {
        crate::cloudwatch::check_tags(tags)?;
    }
    Ok(a)
}

/// An alarm's period: 10, 20 or 30 seconds (high resolution), or a
/// multiple of 60.
fn check_alarm_period(p: i32, field: &str) -> Result<i64, CwError> {
    if p <= 0 || !(matches!(p, 10 | 20 | 30) || p % 60 == 0) {
        return Err(CwError::value(field, p));
    }
    Ok(i64::from(p))
}

/// What one evaluation decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub value: String,
    pub reason: String,
    pub reason_data: String,
}

/// How CloudWatch writes a datapoint's time in a reason: dd/mm/yy
/// hh:mm:ss, UTC.
fn when(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{d:02}/{m:02}/{:02} {:02}:{:02}:{:02}",
        y % 100,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since the epoch as (year, month, day) (proleptic Gregorian).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn iso(ts: i64) -> String {
    let (y, m, d) = civil(ts.div_euclid(86_400));
    let s = ts.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000+0000",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// Judges the last N periods (oldest first; None where there is no
/// datapoint) against the criteria, from the `current` state.
/// `statistic` names what was computed, for the reason's data.
pub fn evaluate(
    c: &Criteria,
    points: &[(i64, Option<f64>)],
    current: &str,
    statistic: &str,
    now: i64,
) -> Outcome {
    let n = c.evaluation_periods;
    let m = c.datapoints_to_alarm;
    let present: Vec<(i64, f64)> = points
        .iter()
        .filter_map(|(t, v)| v.map(|v| (*t, v)))
        .collect();
    let substitute = match c.treat_missing.as_str() {
        "breaching" => Some(true),
        "notBreaching" => Some(false),
        _ => None,
    };
    let mut breaching = 0usize;
    let mut fine = 0usize;
    for (_, v) in points {
        match (v, substitute) {
            (Some(v), _) => {
                if c.breaches(*v) {
                    breaching += 1
                } else {
                    fine += 1
                }
            }
            (None, Some(true)) => breaching += 1,
            (None, Some(false)) => fine += 1,
            (None, None) => {}
        }
    }
    let recent: Vec<String> = present.iter().rev().map(|(_, v)| number(*v)).collect();
    let evaluated: Vec<String> = present
        .iter()
        .rev()
        .map(|(t, v)| format!("{{\"timestamp\":\"{}\",\"value\":{}}}", iso(*t), number(*v)))
        .collect();
    let start = points.first().map_or(now, |(t, _)| *t);
    let data = |extra: &str| {
        format!(
            "{{\"version\":\"1.0\",\"queryDate\":\"{}\",\"startDate\":\"{}\",\"statistic\":\"{statistic}\",\"period\":{},\"recentDatapoints\":[{}],\"threshold\":{}{extra}}}",
            iso(now),
            iso(start),
            c.period,
            recent.join(","),
            number(c.threshold),
        )
    };
    let listed = |only_breaching: Option<bool>| -> String {
        present
            .iter()
            .rev()
            .filter(|(_, v)| only_breaching.is_none_or(|b| c.breaches(*v) == b))
            .map(|(t, v)| format!("{} ({})", number(*v), when(*t)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let evaluated_data = data(&format!(
        ",\"evaluatedDatapoints\":[{}]",
        evaluated.join(",")
    ));
    if breaching >= m {
        let how = c.relation(true);
        let reason = if m == n && breaching == n {
            format!(
                "Threshold Crossed: {n} datapoint{} [{}] {} {how} the threshold ({}).",
                if n == 1 { "" } else { "s" },
                listed(None),
                if n == 1 { "was" } else { "were" },
                number(c.threshold)
            )
        } else {
            format!(
                "Threshold Crossed: {breaching} out of the last {n} datapoints [{}] {} {how} the threshold ({}) (minimum {m} datapoint{} for OK -> ALARM transition).",
                listed(Some(true)),
                if breaching == 1 { "was" } else { "were" },
                number(c.threshold),
                if m == 1 { "" } else { "s" }
            )
        };
        return Outcome {
            value: ALARM.into(),
            reason,
            reason_data: evaluated_data,
        };
    }
    let all_missing = present.is_empty();
    match c.treat_missing.as_str() {
        "missing" if all_missing => {
            return Outcome {
                value: INSUFFICIENT_DATA.into(),
                reason: format!(
                    "Insufficient Data: {n} datapoint{} {} unknown.",
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "was" } else { "were" }
                ),
                reason_data: data(""),
            }
        }
        "ignore" if all_missing => {
            return Outcome {
                value: current.into(),
                reason: "Missing data treated as ignore: the state is kept.".into(),
                reason_data: data(""),
            }
        }
        _ => {}
    }
    // ALARM is out of reach once more than N - M datapoints are fine.
    if fine > n - m || substitute.is_some() {
        let how = c.relation(false);
        let reason = format!(
            "Threshold Crossed: {fine} out of the last {n} datapoints [{}] {} {how} the threshold ({}) (minimum {} datapoint{} for ALARM -> OK transition).",
            listed(Some(false)),
            if fine == 1 { "was" } else { "were" },
            number(c.threshold),
            n - m + 1,
            if n - m + 1 == 1 { "" } else { "s" }
        );
        return Outcome {
            value: OK.into(),
            reason,
            reason_data: evaluated_data,
        };
    }
    // Too few datapoints to decide either way: the state stays.
    Outcome {
        value: current.into(),
        reason: format!(
            "Insufficient datapoints to decide: {} of the last {n} periods have data.",
            present.len()
        ),
        reason_data: evaluated_data,
    }
}

/// The wire view of an alarm and its state.
pub fn view(r: &AlarmRecord, s: &AlarmState) -> w::MetricAlarm {
    let a = &r.input;
    w::MetricAlarm {
        alarm_name: a.alarm_name.clone(),
        alarm_arn: Some(r.arn.clone()),
        alarm_description: a.alarm_description.clone(),
        alarm_configuration_updated_timestamp: Some(r.configuration_updated),
        actions_enabled: a.actions_enabled,
        ok_actions: Some(a.ok_actions.clone().unwrap_or_default()),
        alarm_actions: Some(a.alarm_actions.clone().unwrap_or_default()),
        insufficient_data_actions: Some(a.insufficient_data_actions.clone().unwrap_or_default()),
        state_value: Some(s.value.clone()),
        state_reason: Some(s.reason.clone()),
        state_reason_data: s.reason_data.clone(),
        state_updated_timestamp: Some(s.updated),
        state_transitioned_timestamp: Some(s.transitioned),
        metric_name: a.metric_name.clone(),
        namespace: a.namespace.clone(),
        statistic: a.statistic.clone(),
        extended_statistic: a.extended_statistic.clone(),
        dimensions: a
            .metrics
            .is_none()
            .then(|| a.dimensions.clone().unwrap_or_default()),
        period: a.period,
        unit: a.unit.clone(),
        evaluation_periods: a.evaluation_periods,
        datapoints_to_alarm: a.datapoints_to_alarm,
        threshold: a.threshold,
        comparison_operator: a.comparison_operator.clone(),
        treat_missing_data: a.treat_missing_data.clone(),
        evaluate_low_sample_count_percentile: a.evaluate_low_sample_count_percentile.clone(),
        metrics: a.metrics.clone(),
        ..Default::default()
    }
}

/// The alarm's ARN.
pub fn arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:cloudwatch:{region}:{account}:alarm:{name}")
}

/// SetAlarmState's value and reason, checked.
pub fn check_set_state(
    input: &w::SetAlarmStateInput,
) -> Result<(String, String, String, Option<String>), CwError> {
    let name = input
        .alarm_name
        .clone()
        .ok_or_else(|| CwError::missing("AlarmName"))?;
    let value = input
        .state_value
        .clone()
        .ok_or_else(|| CwError::missing("StateValue"))?;
    if ![OK, ALARM, INSUFFICIENT_DATA].contains(&value.as_str()) {
        return Err(CwError::value("StateValue", value));
    }
    let reason = input
        .state_reason
        .clone()
        .ok_or_else(|| CwError::missing("StateReason"))?;
    text_len(&reason, "StateReason", 0, 1023)?;
    if let Some(d) = &input.state_reason_data {
        if serde_json::from_str::<serde_json::Value>(d).is_err() {
            return Err(CwError::new_invalid_format(
                "StateReasonData is not valid JSON.",
            ));
        }
    }
    Ok((name, value, reason, input.state_reason_data.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn criteria(n: usize, m: usize, missing: &str) -> Criteria {
        Criteria {
            period: 60,
            evaluation_periods: n,
            datapoints_to_alarm: m,
            threshold: 70.0,
            comparison: "GreaterThanThreshold".into(),
            treat_missing: missing.into(),
        }
    }

    const T: i64 = 1_800_000_000;

    fn points(values: &[Option<f64>]) -> Vec<(i64, Option<f64>)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (T + 60 * i as i64, *v))
            .collect()
    }

    #[test]
    fn m_out_of_n_and_missing_data() {
        let c = criteria(3, 3, "missing");
        let hot = evaluate(
            &c,
            &points(&[Some(80.0), Some(85.1), Some(90.0)]),
            OK,
            "Average",
            T + 180,
        );
        assert_eq!(hot.value, ALARM);
        assert_eq!(
            hot.reason,
            "Threshold Crossed: 3 datapoints [90.0 (15/01/27 08:02:00), 85.1 (15/01/27 08:01:00), 80.0 (15/01/27 08:00:00)] were greater than the threshold (70.0)."
        );
        assert!(
            hot.reason_data.contains("\"statistic\":\"Average\"")
                && hot.reason_data.contains("\"threshold\":70.0")
        );
        let cool = evaluate(
            &c,
            &points(&[Some(80.0), Some(85.0), Some(10.0)]),
            ALARM,
            "Average",
            T + 180,
        );
        assert_eq!(cool.value, OK);
        assert!(
            cool.reason.contains("1 out of the last 3 datapoints [10.0"),
            "{}",
            cool.reason
        );
        let none = evaluate(&c, &points(&[None, None, None]), OK, "Average", T + 180);
        assert_eq!(
            (none.value.as_str(), none.reason.as_str()),
            (
                INSUFFICIENT_DATA,
                "Insufficient Data: 3 datapoints were unknown."
            )
        );
        // Two breaching, one missing: ALARM may still come; the state stays.
        let open = evaluate(
            &c,
            &points(&[Some(80.0), Some(85.0), None]),
            OK,
            "Average",
            T + 180,
        );
        assert_eq!(open.value, OK);
        // Missing data as breaching, or as not breaching.
        assert_eq!(
            evaluate(
                &criteria(3, 3, "breaching"),
                &points(&[Some(80.0), None, None]),
                OK,
                "Average",
                T
            )
            .value,
            ALARM
        );
        assert_eq!(
            evaluate(
                &criteria(3, 3, "notBreaching"),
                &points(&[None, None, None]),
                ALARM,
                "Average",
                T
            )
            .value,
            OK
        );
        assert_eq!(
            evaluate(
                &criteria(3, 3, "ignore"),
                &points(&[None, None, None]),
                ALARM,
                "Average",
                T
            )
            .value,
            ALARM
        );
        // 2 out of 3.
        let two = evaluate(
            &criteria(3, 2, "missing"),
            &points(&[Some(80.0), Some(10.0), Some(90.0)]),
            OK,
            "Average",
            T,
        );
        assert_eq!(two.value, ALARM);
        assert!(two.reason.contains("2 out of the last 3 datapoints [90.0 (15/01/27 08:02:00), 80.0 (15/01/27 08:00:00)] were greater than the threshold (70.0) (minimum 2 datapoints for OK -> ALARM transition)."), "{}", two.reason);
    }

    fn input() -> w::PutMetricAlarmInput {
        w::PutMetricAlarmInput {
            alarm_name: Some("cpu-high".into()),
            namespace: Some("AWS/ECS".into()),
            metric_name: Some("CPUUtilization".into()),
            statistic: Some("Average".into()),
            period: Some(60),
            evaluation_periods: Some(3),
            threshold: Some(70.0),
            comparison_operator: Some("GreaterThanThreshold".into()),
            ..Default::default()
        }
    }

    #[test]
    fn put_metric_alarm_is_checked_and_completed() {
        let a = check_put(&input()).expect("ok");
        assert_eq!(a.treat_missing_data.as_deref(), Some("missing"));
        assert_eq!(a.actions_enabled, Some(true));
        let c = Criteria::of(&a);
        assert_eq!(
            (c.evaluation_periods, c.datapoints_to_alarm, c.period),
            (3, 3, 60)
        );
        let err = |f: fn(&mut w::PutMetricAlarmInput)| {
            let mut i = input();
            f(&mut i);
            check_put(&i).expect_err("refused")
        };
        assert_eq!(
            err(|i| i.period = Some(45)).message,
            "The value 45 for parameter Period is invalid."
        );
        assert_eq!(
            err(|i| i.threshold = None).message,
            "The parameter Threshold is required."
        );
        assert!(err(|i| i.datapoints_to_alarm = Some(4))
            .message
            .contains("DatapointsToAlarm"));
        assert!(err(|i| i.evaluation_periods = Some(2000))
            .message
            .contains("one day"));
        assert!(err(|i| i.alarm_actions = Some(vec!["not-an-arn".into()]))
            .message
            .contains("Invalid arn syntax"));
        assert!(
            err(|i| i.comparison_operator = Some("LessThanLowerThreshold".into()))
                .message
                .contains("anomaly detection")
        );
        assert!(err(|i| i.extended_statistic = Some("p99".into()))
            .message
            .contains("mutually exclusive"));
        assert!(err(|i| {
            i.metrics = Some(vec![]);
        })
        .message
        .contains("mutually exclusive"));
        let mut math = input();
        math.namespace = None;
        math.metric_name = None;
        math.statistic = None;
        math.period = None;
        math.metrics = Some(vec![
            w::MetricDataQuery {
                id: Some("v".into()),
                metric_stat: Some(w::MetricStat {
                    metric: Some(w::Metric {
                        namespace: Some("AWS/SQS".into()),
                        metric_name: Some("ApproximateNumberOfMessagesVisible".into()),
                        ..Default::default()
                    }),
                    period: Some(60),
                    stat: Some("Average".into()),
                    ..Default::default()
                }),
                return_data: Some(false),
                ..Default::default()
            },
            w::MetricDataQuery {
                id: Some("e".into()),
                expression: Some("v / 2".into()),
                ..Default::default()
            },
        ]);
        assert_eq!(Criteria::of(&check_put(&math).expect("math")).period, 60);
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(when(T), "15/01/27 08:00:00");
    }
}
