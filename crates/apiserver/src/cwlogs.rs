//! CloudWatch Logs (AWS JSON 1.1, `Logs_20140328.*`): decode, call the log
//! store (`berth_logstore`, on a blocking thread: it does file I/O),
//! encode. The rules are `berth_domain::logs`'. Times are epoch ms.

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_domain::logs::{self as rules, LogsError, Pattern};
use berth_logstore::{Error as StoreFailure, From, LogStore, Owner};
use berth_wire::logs as w;
use std::collections::BTreeMap;
use std::sync::Arc;

json_operations! { "CloudWatch Logs", w::OPERATIONS;
    "CreateLogGroup" => create_log_group,
    "DeleteLogGroup" => delete_log_group,
    "DescribeLogGroups" => describe_log_groups,
    "PutRetentionPolicy" => put_retention_policy,
    "DeleteRetentionPolicy" => delete_retention_policy,
    "CreateLogStream" => create_log_stream,
    "DeleteLogStream" => delete_log_stream,
    "DescribeLogStreams" => describe_log_streams,
    "PutLogEvents" => put_log_events,
    "GetLogEvents" => get_log_events,
    "FilterLogEvents" => filter_log_events,
    "TagResource" => tag_resource,
    "UntagResource" => untag_resource,
    "ListTagsForResource" => list_tags_for_resource,
    "TagLogGroup" => tag_log_group,
    "UntagLogGroup" => untag_log_group,
    "ListTagsLogGroup" => list_tags_log_group,
}

type Out<T> = Result<T, ApiError>;

/// What operations without an output answer: `{}`.
#[derive(serde::Serialize)]
pub(crate) struct Empty {}

impl std::convert::From<StoreFailure> for ApiError {
    fn from(e: StoreFailure) -> Self {
        match e {
            StoreFailure::Logs(e) => ApiError::Logs(e),
            StoreFailure::Io(m) => ApiError::Internal(m),
        }
    }
}

fn store(st: &AppState) -> Result<Arc<LogStore>, LogsError> {
    st.logs.clone().ok_or_else(|| {
        LogsError::new(
            "ServiceUnavailableException",
            "This server keeps no log store.",
        )
    })
}

/// Runs `f` on the log store on a blocking thread.
async fn with_store<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&LogStore) -> Result<T, StoreFailure> + Send + 'static,
) -> Out<T> {
    let store = store(st)?;
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

fn owner(ctx: &RequestContext) -> Owner {
    Owner {
        account: ctx.scope.account.clone(),
        region: ctx.scope.region.clone(),
    }
}

fn now_ms(st: &AppState) -> i64 {
    (st.now() * 1000.0) as i64
}

fn required<'a>(v: &'a Option<String>, field: &str) -> Result<&'a str, LogsError> {
    v.as_deref().ok_or_else(|| LogsError::required(field))
}

/// The group a request names by `logGroupName` or `logGroupIdentifier`
/// (exactly one of them).
fn group_of(
    ctx: &RequestContext,
    name: &Option<String>,
    identifier: &Option<String>,
) -> Result<String, LogsError> {
    match (name, identifier) {
        (Some(_), Some(_)) => Err(LogsError::invalid(
            "LogGroup name and LogGroup ARN are mutually exclusive parameters.",
        )),
        (Some(n), None) => {
            rules::check_group_name(n)?;
            Ok(n.clone())
        }
        (None, Some(id)) => rules::group_of_identifier(id, &ctx.scope.region, &ctx.scope.account)
            .map(String::from)
            .ok_or_else(LogsError::no_group),
        (None, None) => Err(LogsError::invalid(
            "Should provide either name or ARN of the log group",
        )),
    }
}

fn limit(v: Option<i32>, max: i32, default: i32) -> Result<usize, LogsError> {
    match v {
        None => Ok(default as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(LogsError::invalid(format!(
            "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value {} {}",
            if n < 1 { "greater than or equal to" } else { "less than or equal to" },
            if n < 1 { 1 } else { max }
        ))),
    }
}

fn bad_token() -> LogsError {
    LogsError::invalid("The specified nextToken is invalid.")
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), LogsError> {
    if tags.len() > 50 {
        return Err(LogsError::new(
            "TooManyTagsException",
            "A resource can have no more than 50 tags.",
        ));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 || k.starts_with("aws:") {
            return Err(LogsError::invalid(format!(
                "1 validation error detected: Value '{k}' at 'tags' failed to satisfy constraint: Map keys must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: ^([\\p{{L}}\\p{{Z}}\\p{{N}}_.:/=+\\-@]+)$]"
            )));
        }
        if v.chars().count() > 256 {
            return Err(LogsError::invalid(format!(
                "1 validation error detected: Value '{v}' at 'tags' failed to satisfy constraint: Map values must have length less than or equal to 256"
            )));
        }
    }
    Ok(())
}

async fn create_log_group(
    st: &AppState,
    ctx: &RequestContext,
    i: w::CreateLogGroupRequest,
) -> Out<Empty> {
    let name = required(&i.log_group_name, "logGroupName")?.to_string();
    rules::check_group_name(&name)?;
    if i.kms_key_id.is_some() {
        return Err(LogsError::invalid(
            "Berth does not encrypt log groups with KMS keys (kmsKeyId).",
        )
        .into());
    }
    if i.deletion_protection_enabled == Some(true) {
        return Err(LogsError::invalid(
            "Berth does not protect log groups from deletion (deletionProtectionEnabled).",
        )
        .into());
    }
    if let Some(class) = i.log_group_class.as_deref().filter(|c| *c != "STANDARD") {
        return Err(LogsError::invalid(format!(
            "Berth keeps log groups of the STANDARD class only, not {class}."
        ))
        .into());
    }
    let tags = i.tags.unwrap_or_default();
    check_tags(&tags)?;
    let (o, now) = (owner(ctx), now_ms(st));
    with_store(st, move |s| s.create_group(&o, &name, tags, now)).await?;
    Ok(Empty {})
}

async fn delete_log_group(
    st: &AppState,
    ctx: &RequestContext,
    i: w::DeleteLogGroupRequest,
) -> Out<Empty> {
    let name = required(&i.log_group_name, "logGroupName")?.to_string();
    rules::check_group_name(&name)?;
    let o = owner(ctx);
    with_store(st, move |s| s.delete_group(&o, &name)).await?;
    Ok(Empty {})
}

fn group_view(ctx: &RequestContext, g: berth_logstore::GroupInfo) -> w::LogGroup {
    let (r, a) = (&ctx.scope.region, &ctx.scope.account);
    let arn = rules::group_arn(r, a, &g.name);
    w::LogGroup {
        log_group_arn: Some(arn.trim_end_matches(":*").to_string()),
        arn: Some(arn),
        creation_time: Some(g.created),
        log_group_class: Some("STANDARD".into()),
        metric_filter_count: Some(0),
        retention_in_days: g.retention_days,
        stored_bytes: Some(g.stored_bytes as i64),
        deletion_protection_enabled: Some(false),
        log_group_name: Some(g.name),
        ..Default::default()
    }
}

async fn describe_log_groups(
    st: &AppState,
    ctx: &RequestContext,
    i: w::DescribeLogGroupsRequest,
) -> Out<w::DescribeLogGroupsResponse> {
    let max = limit(i.limit, 50, 50)?;
    if i.log_group_name_prefix.is_some() && i.log_group_name_pattern.is_some() {
        return Err(LogsError::invalid(
            "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.",
        )
        .into());
    }
    // One account, and every group is of the STANDARD class.
    if let Some(other) = i
        .account_identifiers
        .iter()
        .flatten()
        .find(|a| **a != ctx.scope.account)
    {
        return Err(LogsError::invalid(format!(
            "Account {other} is not linked to this account (accountIdentifiers)."
        ))
        .into());
    }
    let other_class = i
        .log_group_class
        .as_deref()
        .is_some_and(|c| c != "STANDARD");
    let prefix = i.log_group_name_prefix.clone().unwrap_or_default();
    let pattern = i.log_group_name_pattern.clone();
    let o = owner(ctx);
    let all = with_store(st, move |s| Ok(s.groups(&o, &prefix))).await?;
    let mut groups: Vec<_> = all
        .into_iter()
        .filter(|g| pattern.as_deref().is_none_or(|p| g.name.contains(p)) && !other_class)
        .collect();
    if let Some(ids) = &i.log_group_identifiers {
        let wanted: Vec<&str> = ids
            .iter()
            .filter_map(|id| rules::group_of_identifier(id, &ctx.scope.region, &ctx.scope.account))
            .collect();
        groups.retain(|g| wanted.contains(&g.name.as_str()));
    }
    let listing = "DescribeLogGroups";
    let start =
        berth_domain::paging::resume(listing, i.next_token.as_deref()).map_err(|_| bad_token())?;
    let skip = start.as_deref().map_or(0, |after| {
        groups
            .iter()
            .take_while(|g| g.name.as_str() <= after)
            .count()
    });
    let page: Vec<_> = groups.into_iter().skip(skip).take(max + 1).collect();
    let next_token =
        (page.len() > max).then(|| berth_domain::paging::token(listing, &page[max - 1].name));
    Ok(w::DescribeLogGroupsResponse {
        log_groups: Some(
            page.into_iter()
                .take(max)
                .map(|g| group_view(ctx, g))
                .collect(),
        ),
        next_token,
    })
}

async fn put_retention_policy(
    st: &AppState,
    ctx: &RequestContext,
    i: w::PutRetentionPolicyRequest,
) -> Out<Empty> {
    let name = required(&i.log_group_name, "logGroupName")?.to_string();
    rules::check_group_name(&name)?;
    let days = i
        .retention_in_days
        .ok_or_else(|| LogsError::required("retentionInDays"))?;
    rules::check_retention(days)?;
    let (o, now) = (owner(ctx), now_ms(st));
    with_store(st, move |s| {
        s.update_group(&o, &name, |g| g.retention_days = Some(days))?;
        s.expire(now);
        Ok(())
    })
    .await?;
    Ok(Empty {})
}

async fn delete_retention_policy(
    st: &AppState,
    ctx: &RequestContext,
    i: w::DeleteRetentionPolicyRequest,
) -> Out<Empty> {
    let name = required(&i.log_group_name, "logGroupName")?.to_string();
    rules::check_group_name(&name)?;
    let o = owner(ctx);
    with_store(st, move |s| {
        s.update_group(&o, &name, |g| g.retention_days = None)
    })
    .await?;
    Ok(Empty {})
}

async fn create_log_stream(
    st: &AppState,
    ctx: &RequestContext,
    i: w::CreateLogStreamRequest,
) -> Out<Empty> {
    let group = required(&i.log_group_name, "logGroupName")?.to_string();
    rules::check_group_name(&group)?;
    let stream = required(&i.log_stream_name, "logStreamName")?.to_string();
    rules::check_stream_name(&stream)?;
    let (o, now) = (owner(ctx), now_ms(st));
    with_store(st, move |s| s.create_stream(&o, &group, &stream, now)).await?;
    Ok(Empty {})
}

async fn delete_log_stream(
    st: &AppState,
    ctx: &RequestContext,
    i: w::DeleteLogStreamRequest,
) -> Out<Empty> {
    let group = required(&i.log_group_name, "logGroupName")?.to_string();
    rules::check_group_name(&group)?;
    let stream = required(&i.log_stream_name, "logStreamName")?.to_string();
    rules::check_stream_name(&stream)?;
    let o = owner(ctx);
    with_store(st, move |s| s.delete_stream(&o, &group, &stream)).await?;
    Ok(Empty {})
}

async fn describe_log_streams(
    st: &AppState,
    ctx: &RequestContext,
    i: w::DescribeLogStreamsRequest,
) -> Out<w::DescribeLogStreamsResponse> {
    let group = group_of(ctx, &i.log_group_name, &i.log_group_identifier)?;
    let max = limit(i.limit, 50, 50)?;
    let by_time = match i.order_by.as_deref() {
        None | Some("LogStreamName") => false,
        Some("LastEventTime") => true,
        Some(other) => {
            return Err(LogsError::invalid(format!(
                "1 validation error detected: Value '{other}' at 'orderBy' failed to satisfy constraint: Member must satisfy enum value set: [LogStreamName, LastEventTime]"
            ))
            .into())
        }
    };
    if by_time && i.log_stream_name_prefix.is_some() {
        return Err(LogsError::invalid(
            "Cannot order by LastEventTime with a logStreamNamePrefix.",
        )
        .into());
    }
    let prefix = i.log_stream_name_prefix.clone().unwrap_or_default();
    let (o, g) = (owner(ctx), group.clone());
    let mut streams = with_store(st, move |s| s.streams(&o, &g, &prefix)).await?;
    if by_time {
        streams.sort_by_key(|s| (s.last_event.unwrap_or(s.created), s.name.clone()));
    }
    if i.descending == Some(true) {
        streams.reverse();
    }
    let listing = format!("DescribeLogStreams\n{group}");
    let skip = match i.next_token.as_deref() {
        None => 0,
        Some(t) => {
            let after = berth_domain::paging::resume(&listing, Some(t))
                .map_err(|_| bad_token())?
                .ok_or_else(bad_token)?;
            streams
                .iter()
                .position(|s| s.name == after)
                .map(|p| p + 1)
                .ok_or_else(bad_token)?
        }
    };
    let page: Vec<_> = streams.into_iter().skip(skip).take(max + 1).collect();
    let next_token =
        (page.len() > max).then(|| berth_domain::paging::token(&listing, &page[max - 1].name));
    let (r, a) = (&ctx.scope.region, &ctx.scope.account);
    Ok(w::DescribeLogStreamsResponse {
        log_streams: Some(
            page.into_iter()
                .take(max)
                .map(|s| w::LogStream {
                    arn: Some(rules::stream_arn(r, a, &group, &s.name)),
                    creation_time: Some(s.created),
                    first_event_timestamp: s.first_event,
                    last_event_timestamp: s.last_event,
                    last_ingestion_time: s.last_ingestion,
                    stored_bytes: Some(s.stored_bytes as i64),
                    log_stream_name: Some(s.name),
                    upload_sequence_token: None,
                })
                .collect(),
        ),
        next_token,
    })
}

async fn put_log_events(
    st: &AppState,
    ctx: &RequestContext,
    i: w::PutLogEventsRequest,
) -> Out<w::PutLogEventsResponse> {
    let group = required(&i.log_group_name, "logGroupName")?.to_string();
    rules::check_group_name(&group)?;
    let stream = required(&i.log_stream_name, "logStreamName")?.to_string();
    rules::check_stream_name(&stream)?;
    if i.entity.is_some() {
        return Err(LogsError::invalid(
            "Berth does not associate log events with entities (entity).",
        )
        .into());
    }
    let events = i
        .log_events
        .ok_or_else(|| LogsError::required("logEvents"))?;
    let mut batch: Vec<(i64, String)> = Vec::with_capacity(events.len());
    for (n, e) in events.into_iter().enumerate() {
        let ts = e
            .timestamp
            .ok_or_else(|| LogsError::required(&format!("logEvents.{}.member.timestamp", n + 1)))?;
        let message = e
            .message
            .ok_or_else(|| LogsError::required(&format!("logEvents.{}.member.message", n + 1)))?;
        if message.is_empty() {
            return Err(LogsError::invalid(format!(
                "1 validation error detected: Value '' at 'logEvents.{}.member.message' failed to satisfy constraint: Member must have length greater than or equal to 1",
                n + 1
            ))
            .into());
        }
        batch.push((ts, message));
    }
    let (o, now) = (owner(ctx), now_ms(st));
    let rejected = with_store(st, move |s| {
        let retention = s.group_info(&o, &group)?.retention_days;
        let sizes: Vec<(i64, usize)> = batch.iter().map(|(t, m)| (*t, m.len())).collect();
        let ((from, to), rejected) = rules::check_batch(&sizes, now, retention)?;
        let kept: Vec<(i64, &str)> = batch[from..to]
            .iter()
            .map(|(t, m)| (*t, m.as_str()))
            .collect();
        // The stream must exist even when nothing is kept.
        s.put(&o, &group, &stream, &kept, now)?;
        Ok(rejected)
    })
    .await?;
    let info = (rejected != rules::Rejected::default()).then(|| w::RejectedLogEventsInfo {
        too_new_log_event_start_index: rejected.too_new_start.map(|n| n as i32),
        too_old_log_event_end_index: rejected.too_old_end.map(|n| n as i32),
        expired_log_event_end_index: rejected.expired_end.map(|n| n as i32),
    });
    Ok(w::PutLogEventsResponse {
        next_sequence_token: None,
        rejected_log_events_info: info,
        rejected_entity_info: None,
    })
}

/// GetLogEvents' tokens: `f/` or `b/` and a position in the stream, as
/// 56 digits (AWS's tokens look the same).
fn position_token(forward: bool, at: u64) -> String {
    format!("{}/{at:056}", if forward { "f" } else { "b" })
}

fn parse_position(t: &str) -> Result<(bool, u64), LogsError> {
    let (dir, n) = t.split_once('/').ok_or_else(bad_token)?;
    let at = n.parse().map_err(|_| bad_token())?;
    match dir {
        "f" => Ok((true, at)),
        "b" => Ok((false, at)),
        _ => Err(bad_token()),
    }
}

async fn get_log_events(
    st: &AppState,
    ctx: &RequestContext,
    i: w::GetLogEventsRequest,
) -> Out<w::GetLogEventsResponse> {
    let group = group_of(ctx, &i.log_group_name, &i.log_group_identifier)?;
    let stream = required(&i.log_stream_name, "logStreamName")?.to_string();
    rules::check_stream_name(&stream)?;
    let max = limit(i.limit, 10_000, 10_000)?;
    let given = i.next_token.as_deref().map(parse_position).transpose()?;
    let from = match given {
        Some((true, at)) => From::Forward(at),
        Some((false, at)) => From::Backward(at),
        None if i.start_from_head == Some(true) => From::Forward(0),
        None => From::Backward(u64::MAX),
    };
    let (start, end) = (i.start_time, i.end_time);
    let (o, now) = (owner(ctx), now_ms(st));
    let events = with_store(st, move |s| {
        s.get(&o, &group, &stream, start, end, from, max, now)
    })
    .await?;
    // At either end, the token given comes back.
    let (forward, backward) = match (events.first(), events.last()) {
        (Some(first), Some(last)) => (
            position_token(true, last.seq + 1),
            position_token(false, first.seq),
        ),
        _ => {
            let same = i.next_token.clone();
            let at = match from {
                From::Forward(at) => at,
                From::Backward(at) => at.min(u64::MAX / 2),
            };
            (
                same.clone().unwrap_or_else(|| position_token(true, at)),
                same.unwrap_or_else(|| position_token(false, at)),
            )
        }
    };
    Ok(w::GetLogEventsResponse {
        events: Some(
            events
                .into_iter()
                .map(|e| w::OutputLogEvent {
                    timestamp: Some(e.timestamp),
                    ingestion_time: Some(e.ingestion),
                    message: Some(e.message),
                })
                .collect(),
        ),
        next_forward_token: Some(forward),
        next_backward_token: Some(backward),
    })
}

async fn filter_log_events(
    st: &AppState,
    ctx: &RequestContext,
    i: w::FilterLogEventsRequest,
) -> Out<w::FilterLogEventsResponse> {
    let group = group_of(ctx, &i.log_group_name, &i.log_group_identifier)?;
    let max = limit(i.limit, 10_000, 10_000)?;
    let names = i.log_stream_names.clone().unwrap_or_default();
    if !names.is_empty() && i.log_stream_name_prefix.is_some() {
        return Err(LogsError::invalid(
            "logStreamNames and logStreamNamePrefix are mutually exclusive parameters.",
        )
        .into());
    }
    if names.len() > 100 {
        return Err(LogsError::invalid(
            "1 validation error detected: Value at 'logStreamNames' failed to satisfy constraint: Member must have length less than or equal to 100",
        )
        .into());
    }
    let pattern = Pattern::parse(i.filter_pattern.as_deref().unwrap_or_default())?;
    // The token is the last event of the page before: its time and id.
    let after = match i.next_token.as_deref() {
        None => None,
        Some(t) => {
            let (ts, id) = t.split_once('/').ok_or_else(bad_token)?;
            Some((ts.parse::<i64>().map_err(|_| bad_token())?, id.to_string()))
        }
    };
    let prefix = i.log_stream_name_prefix.clone();
    // Unlike GetLogEvents', FilterLogEvents' endTime is included.
    let (start, end) = (i.start_time, i.end_time.map(|e| e.saturating_add(1)));
    let (o, now) = (owner(ctx), now_ms(st));
    let (found, more, searched) = with_store(st, move |s| {
        s.filter(
            &o,
            &group,
            &names,
            prefix.as_deref(),
            start,
            end,
            &pattern,
            after,
            max,
            now,
        )
    })
    .await?;
    let next_token = more
        .then(|| found.last())
        .flatten()
        .map(|f| format!("{}/{}", f.event.timestamp, f.event_id));
    Ok(w::FilterLogEventsResponse {
        events: Some(
            found
                .into_iter()
                .map(|f| w::FilteredLogEvent {
                    event_id: Some(f.event_id),
                    ingestion_time: Some(f.event.ingestion),
                    log_stream_name: Some(f.stream),
                    message: Some(f.event.message),
                    timestamp: Some(f.event.timestamp),
                })
                .collect(),
        ),
        next_token,
        searched_log_streams: Some(
            searched
                .into_iter()
                .map(|n| w::SearchedLogStream {
                    log_stream_name: Some(n),
                    searched_completely: Some(!more),
                })
                .collect(),
        ),
    })
}

/// The group a tagging ARN names (`logGroupArn`, without `:*`).
fn tagged_group(ctx: &RequestContext, arn: &str) -> Result<String, LogsError> {
    rules::group_of_identifier(arn, &ctx.scope.region, &ctx.scope.account)
        .filter(|_| arn.starts_with("arn:"))
        .filter(|n| !n.contains(":log-stream:"))
        .map(String::from)
        .ok_or_else(|| {
            LogsError::new(
                "ResourceNotFoundException",
                format!("The specified resource does not exist: {arn}"),
            )
        })
}

async fn tag(
    st: &AppState,
    ctx: &RequestContext,
    group: String,
    tags: BTreeMap<String, String>,
) -> Out<Empty> {
    check_tags(&tags)?;
    let o = owner(ctx);
    with_store(st, move |s| {
        let current = s.group_info(&o, &group)?.tags;
        let mut next = current.clone();
        next.extend(tags);
        check_tags(&next)?;
        s.update_group(&o, &group, |g| g.tags = next)
    })
    .await?;
    Ok(Empty {})
}

async fn untag(
    st: &AppState,
    ctx: &RequestContext,
    group: String,
    keys: Vec<String>,
) -> Out<Empty> {
    let o = owner(ctx);
    with_store(st, move |s| {
        s.update_group(&o, &group, |g| g.tags.retain(|k, _| !keys.contains(k)))
    })
    .await?;
    Ok(Empty {})
}

async fn tags_of(
    st: &AppState,
    ctx: &RequestContext,
    group: String,
) -> Out<BTreeMap<String, String>> {
    let o = owner(ctx);
    with_store(st, move |s| Ok(s.group_info(&o, &group)?.tags)).await
}

async fn tag_resource(st: &AppState, ctx: &RequestContext, i: w::TagResourceRequest) -> Out<Empty> {
    let group = tagged_group(ctx, required(&i.resource_arn, "resourceArn")?)?;
    let tags = i.tags.ok_or_else(|| LogsError::required("tags"))?;
    tag(st, ctx, group, tags).await
}

async fn untag_resource(
    st: &AppState,
    ctx: &RequestContext,
    i: w::UntagResourceRequest,
) -> Out<Empty> {
    let group = tagged_group(ctx, required(&i.resource_arn, "resourceArn")?)?;
    let keys = i.tag_keys.ok_or_else(|| LogsError::required("tagKeys"))?;
    untag(st, ctx, group, keys).await
}

async fn list_tags_for_resource(
    st: &AppState,
    ctx: &RequestContext,
    i: w::ListTagsForResourceRequest,
) -> Out<w::ListTagsForResourceResponse> {
    let group = tagged_group(ctx, required(&i.resource_arn, "resourceArn")?)?;
    Ok(w::ListTagsForResourceResponse {
        tags: Some(tags_of(st, ctx, group).await?),
    })
}

async fn tag_log_group(
    st: &AppState,
    ctx: &RequestContext,
    i: w::TagLogGroupRequest,
) -> Out<Empty> {
    let group = required(&i.log_group_name, "logGroupName")?.to_string();
    rules::check_group_name(&group)?;
    let tags = i.tags.ok_or_else(|| LogsError::required("tags"))?;
    tag(st, ctx, group, tags).await
}

async fn untag_log_group(
    st: &AppState,
    ctx: &RequestContext,
    i: w::UntagLogGroupRequest,
) -> Out<Empty> {
    let group = required(&i.log_group_name, "logGroupName")?.to_string();
    rules::check_group_name(&group)?;
    let keys = i.tags.ok_or_else(|| LogsError::required("tags"))?;
    untag(st, ctx, group, keys).await
}

async fn list_tags_log_group(
    st: &AppState,
    ctx: &RequestContext,
    i: w::ListTagsLogGroupRequest,
) -> Out<w::ListTagsLogGroupResponse> {
    let group = required(&i.log_group_name, "logGroupName")?.to_string();
    rules::check_group_name(&group)?;
    Ok(w::ListTagsLogGroupResponse {
        tags: Some(tags_of(st, ctx, group).await?),
    })
}
