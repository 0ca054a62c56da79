//! SQS (`sqs`, 2012-11-05) over AWS JSON 1.0 as current SDKs send it
//! (`AmazonSQS.*`) and awsQuery as older clients do: decode, check with
//! `berth_domain::sqs`, call `berth_control::sqs`, encode. Queue URLs point
//! where the caller reached this server (its Host header), so a URL a task
//! got through its endpoint works from inside the task; a request is
//! matched to its queue by the URL's path alone.

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::sqs::{self as ctl, Outgoing, Received, SqsFailure};
use berth_domain::sqs::{self as rules, MessageRecord, QueueRecord, SqsError};
use berth_wire::sqs as w;
use std::collections::BTreeMap;

dual_operations! { "SQS", w::MODEL, SqsError::invalid;
    "CreateQueue" => create_queue,
    "GetQueueUrl" => get_queue_url,
    "ListQueues" => list_queues,
    "DeleteQueue" => delete_queue,
    "PurgeQueue" => purge_queue,
    "GetQueueAttributes" => get_queue_attributes,
    "SetQueueAttributes" => set_queue_attributes,
    "SendMessage" => send_message,
    "SendMessageBatch" => send_message_batch,
    "ReceiveMessage" => receive_message,
    "DeleteMessage" => delete_message,
    "DeleteMessageBatch" => delete_message_batch,
    "ChangeMessageVisibility" => change_message_visibility,
    "ChangeMessageVisibilityBatch" => change_message_visibility_batch,
    "TagQueue" => tag_queue,
    "UntagQueue" => untag_queue,
    "ListQueueTags" => list_queue_tags,
    "ListDeadLetterSourceQueues" => list_dead_letter_source_queues,
}

type Out<T> = Result<T, ApiError>;

impl From<SqsFailure> for ApiError {
    fn from(e: SqsFailure) -> Self {
        match e {
            SqsFailure::Sqs(e) => ApiError::Sqs(e),
            SqsFailure::Control(e) => e.into(),
        }
    }
}

/// What operations without an output answer.
#[derive(serde::Serialize)]
pub(crate) struct Empty {}

fn url(ctx: &RequestContext, name: &str) -> String {
    let scheme = if ctx.secure { "https" } else { "http" };
    let host = ctx.host.as_deref().unwrap_or("localhost");
    format!("{scheme}://{host}/{}/{name}", ctx.scope.account)
}

/// Who sent a message: the caller's user id, as `aws:userid` has it.
fn sender(ctx: &RequestContext) -> String {
    ctx.caller
        .as_ref()
        .map(|c| c.principal.user_id())
        .unwrap_or_else(|| ctx.scope.account.clone())
}

async fn create_queue(
    st: &AppState,
    ctx: &RequestContext,
    input: w::CreateQueueRequest,
) -> Out<w::CreateQueueResult> {
    let name = input
        .queue_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| SqsError::missing("QueueName"))?;
    let attrs = input.attributes.unwrap_or_default();
    let tags = input.tags.unwrap_or_default();
    ctl::create_queue(st, &ctx.scope, &name, &attrs, &tags).await?;
    Ok(w::CreateQueueResult {
        queue_url: Some(url(ctx, &name)),
    })
}

async fn get_queue_url(
    st: &AppState,
    ctx: &RequestContext,
    input: w::GetQueueUrlRequest,
) -> Out<w::GetQueueUrlResult> {
    let name = input
        .queue_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| SqsError::missing("QueueName"))?;
    if input
        .queue_owner_aws_account_id
        .is_some_and(|a| a != ctx.scope.account)
    {
        return Err(SqsError::no_queue().into());
    }
    ctl::queue(st, &ctx.scope, &name).await?;
    Ok(w::GetQueueUrlResult {
        queue_url: Some(url(ctx, &name)),
    })
}

/// A page of names after NextToken (the last name of the page before).
fn page(
    listing: &str,
    names: Vec<String>,
    token: Option<&str>,
    max: Option<i32>,
) -> Result<(Vec<String>, Option<String>), SqsError> {
    let max = match max {
        None => None,
        Some(n) if (1..=1000).contains(&n) => Some(n as usize),
        Some(n) => {
            return Err(SqsError::value(
                "MaxResults",
                n,
                "MaxResults must be an integer between 1 and 1000.",
            ))
        }
    };
    let after = berth_domain::paging::resume(listing, token).map_err(|_| SqsError::next_token())?;
    let mut rest: Vec<String> = names
        .into_iter()
        .filter(|n| after.as_deref().is_none_or(|a| n.as_str() > a))
        .collect();
    // Without MaxResults SQS answers up to 1,000 and no token.
    let Some(max) = max else {
        rest.truncate(1000);
        return Ok((rest, None));
    };
    let more = rest.len() > max;
    rest.truncate(max);
    let next = more
        .then(|| rest.last().map(|l| berth_domain::paging::token(listing, l)))
        .flatten();
    Ok((rest, next))
}

async fn list_queues(
    st: &AppState,
    ctx: &RequestContext,
    input: w::ListQueuesRequest,
) -> Out<w::ListQueuesResult> {
    let prefix = input.queue_name_prefix.unwrap_or_default();
    let names: Vec<String> = ctl::queue_names(st, &ctx.scope)
        .await?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    let (names, next_token) = page(
        "ListQueues",
        names,
        input.next_token.as_deref(),
        input.max_results,
    )?;
    Ok(w::ListQueuesResult {
        queue_urls: (!names.is_empty()).then(|| names.iter().map(|n| url(ctx, n)).collect()),
        next_token,
    })
}

async fn queue(st: &AppState, ctx: &RequestContext, url: Option<&str>) -> Out<QueueRecord> {
    Ok(ctl::queue_at(st, &ctx.scope, url).await?.value)
}

async fn delete_queue(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DeleteQueueRequest,
) -> Out<Empty> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    ctl::delete_queue(st, &ctx.scope, &q.name).await?;
    Ok(Empty {})
}

async fn purge_queue(
    st: &AppState,
    ctx: &RequestContext,
    input: w::PurgeQueueRequest,
) -> Out<Empty> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    ctl::purge(st, &ctx.scope, &q.name).await?;
    Ok(Empty {})
}

async fn get_queue_attributes(
    st: &AppState,
    ctx: &RequestContext,
    input: w::GetQueueAttributesRequest,
) -> Out<w::GetQueueAttributesResult> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    let asked = rules::check_attribute_names(&input.attribute_names.unwrap_or_default(), q.fifo())?;
    let all = asked.iter().any(|a| a == "All");
    let wants = |n: &str| all || asked.iter().any(|a| a == n);
    let mut out: BTreeMap<String, String> = q
        .attributes
        .iter()
        .filter(|(k, _)| wants(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    .iter()
    .any(|n| wants(n))
    {
        let c = ctl::counts(st, &ctx.scope, &q).await?;
        for (name, n) in [
            ("ApproximateNumberOfMessages", c.visible),
            ("ApproximateNumberOfMessagesNotVisible", c.in_flight),
            ("ApproximateNumberOfMessagesDelayed", c.delayed),
        ] {
            if wants(name) {
                out.insert(name.into(), n.to_string());
            }
        }
    }
    let scope = &ctx.scope;
    for (name, value) in [
        ("CreatedTimestamp", q.created.to_string()),
        ("LastModifiedTimestamp", q.modified.to_string()),
        (
            "QueueArn",
            rules::queue_arn(&scope.region, &scope.account, &q.name),
        ),
    ] {
        if wants(name) {
            out.insert(name.into(), value);
        }
    }
    Ok(w::GetQueueAttributesResult {
        attributes: (!out.is_empty()).then_some(out),
    })
}

async fn set_queue_attributes(
    st: &AppState,
    ctx: &RequestContext,
    input: w::SetQueueAttributesRequest,
) -> Out<Empty> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    let attrs = input
        .attributes
        .ok_or_else(|| SqsError::missing("Attributes"))?;
    ctl::set_attributes(st, &ctx.scope, &q.name, &attrs).await?;
    Ok(Empty {})
}

/// One message of SendMessage or a batch entry, checked against its queue.
#[allow(clippy::too_many_arguments)]
fn outgoing(
    q: &QueueRecord,
    body: Option<&str>,
    attributes: Option<&BTreeMap<String, w::MessageAttributeValue>>,
    system: Option<&BTreeMap<String, w::MessageSystemAttributeValue>>,
    delay: Option<i32>,
    group: Option<&str>,
    dedup: Option<&str>,
) -> Result<Outgoing, SqsError> {
    let body = rules::check_body(body)?;
    let attributes = rules::check_message_attributes(attributes.unwrap_or(&BTreeMap::new()))?;
    rules::check_size(body, &attributes, q.maximum_message_size())?;
    let delay = rules::check_delay(delay, q.fifo())?;
    let (group, dedup) =
        rules::check_fifo_fields(q.fifo(), q.content_based_dedup(), body, group, dedup)?;
    let mut trace_header = None;
    for (name, v) in system.into_iter().flatten() {
        if name != "AWSTraceHeader" || v.data_type.as_deref() != Some("String") {
            return Err(SqsError::invalid(format!(
                "Message system attribute name '{name}' is invalid."
            )));
        }
        trace_header = v.string_value.clone();
    }
    Ok(Outgoing {
        body: body.to_string(),
        attributes,
        trace_header,
        delay,
        group,
        dedup,
    })
}

async fn send_message(
    st: &AppState,
    ctx: &RequestContext,
    input: w::SendMessageRequest,
) -> Out<w::SendMessageResult> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    let msg = outgoing(
        &q,
        input.message_body.as_deref(),
        input.message_attributes.as_ref(),
        input.message_system_attributes.as_ref(),
        input.delay_seconds,
        input.message_group_id.as_deref(),
        input.message_deduplication_id.as_deref(),
    )?;
    let size = msg.body.len() as f64;
    let sent = ctl::send(st, &ctx.scope, &q.name, &sender(ctx), msg).await?;
    ctl::count_activity(
        st,
        &ctx.scope,
        &q.name,
        &[("NumberOfMessagesSent", 1.0), ("SentMessageSize", size)],
    )
    .await;
    Ok(w::SendMessageResult {
        message_id: Some(sent.id),
        md5_of_message_body: Some(sent.md5_body),
        md5_of_message_attributes: sent.md5_attributes,
        sequence_number: sent.sequence,
        ..Default::default()
    })
}

fn failed(id: &str, e: &SqsError) -> w::BatchResultErrorEntry {
    w::BatchResultErrorEntry {
        id: Some(id.to_string()),
        code: Some(e.query_code.to_string()),
        message: Some(e.message.clone()),
        sender_fault: Some(e.status < 500),
    }
}

async fn send_message_batch(
    st: &AppState,
    ctx: &RequestContext,
    input: w::SendMessageBatchRequest,
) -> Out<w::SendMessageBatchResult> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    let entries = input.entries.unwrap_or_default();
    rules::check_batch_ids("SendMessage", entries.iter().map(|e| e.id.as_deref()))?;
    let total: usize = entries
        .iter()
        .map(|e| e.message_body.as_ref().map_or(0, String::len))
        .sum();
    if total > rules::MAX_BATCH_BYTES {
        return Err(SqsError::batch_too_long(total, rules::MAX_BATCH_BYTES).into());
    }
    let (mut ok, mut bad) = (vec![], vec![]);
    let (mut sent_n, mut bytes) = (0.0, 0.0);
    for e in &entries {
        let id = e.id.clone().unwrap_or_default();
        let msg = outgoing(
            &q,
            e.message_body.as_deref(),
            e.message_attributes.as_ref(),
            e.message_system_attributes.as_ref(),
            e.delay_seconds,
            e.message_group_id.as_deref(),
            e.message_deduplication_id.as_deref(),
        );
        let msg = match msg {
            Ok(m) => m,
            Err(err) => {
                bad.push(failed(&id, &err));
                continue;
            }
        };
        let size = msg.body.len() as f64;
        match ctl::send(st, &ctx.scope, &q.name, &sender(ctx), msg).await {
            Ok(sent) => {
                sent_n += 1.0;
                bytes += size;
                ok.push(w::SendMessageBatchResultEntry {
                    id: Some(id),
                    message_id: Some(sent.id),
                    md5_of_message_body: Some(sent.md5_body),
                    md5_of_message_attributes: sent.md5_attributes,
                    sequence_number: sent.sequence,
                    ..Default::default()
                })
            }
            Err(SqsFailure::Sqs(err)) => bad.push(failed(&id, &err)),
            Err(e) => return Err(e.into()),
        }
    }
    if sent_n > 0.0 {
        ctl::count_activity(
            st,
            &ctx.scope,
            &q.name,
            &[("NumberOfMessagesSent", sent_n), ("SentMessageSize", bytes)],
        )
        .await;
    }
    Ok(w::SendMessageBatchResult {
        successful: Some(ok),
        failed: Some(bad),
    })
}

/// The system attributes a receiver asked for, from a message.
fn system_attributes(
    ctx: &RequestContext,
    m: &MessageRecord,
    asked: &[String],
) -> BTreeMap<String, String> {
    let all = asked.iter().any(|a| a == "All");
    let wants = |n: &str| all || asked.iter().any(|a| a == n);
    let mut out = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let (true, Some(v)) = (wants(k), v) {
            out.insert(k.to_string(), v);
        }
    };
    put("SenderId", Some(m.sender.clone()));
    put("SentTimestamp", Some(m.sent_ms.to_string()));
    put("ApproximateReceiveCount", Some(m.receive_count.to_string()));
    put(
        "ApproximateFirstReceiveTimestamp",
        m.first_receive_ms.map(|t| t.to_string()),
    );
    put("AWSTraceHeader", m.trace_header.clone());
    put("MessageGroupId", m.group_id.clone());
    if m.dedup_id.is_some() {
        put("MessageDeduplicationId", m.dedup_id.clone());
        put("SequenceNumber", Some(m.sequence.clone()));
    }
    put("DeadLetterQueueSourceArn", m.dead_letter_source.clone());
    let _ = ctx;
    out
}

/// The message attributes a receiver asked for (`All`, `.*` prefixes or
/// names).
fn message_attributes(
    m: &MessageRecord,
    asked: &[String],
) -> BTreeMap<String, berth_domain::sqs::AttrValue> {
    m.attributes
        .iter()
        .filter(|(name, _)| {
            asked.iter().any(|a| {
                a == "All"
                    || a == ".*"
                    || a == *name
                    || a.strip_suffix(".*")
                        .is_some_and(|p| name.starts_with(&format!("{p}.")))
            })
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

async fn receive_message(
    st: &AppState,
    ctx: &RequestContext,
    input: w::ReceiveMessageRequest,
) -> Out<w::ReceiveMessageResult> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    let (max, wait) = rules::check_receive(input.max_number_of_messages, input.wait_time_seconds)?;
    let visibility = input
        .visibility_timeout
        .map(rules::check_visibility)
        .transpose()?;
    let mut asked = input.attribute_names.unwrap_or_default();
    asked.extend(input.message_system_attribute_names.unwrap_or_default());
    let asked_user = input.message_attribute_names.unwrap_or_default();
    let got: Vec<Received> = ctl::receive(st, &ctx.scope, &q.name, max, visibility, wait).await?;
    let counter = if got.is_empty() {
        ("NumberOfEmptyReceives", 1.0)
    } else {
        ("NumberOfMessagesReceived", got.len() as f64)
    };
    ctl::count_activity(st, &ctx.scope, &q.name, &[counter]).await;
    let messages = got
        .into_iter()
        .map(|r| {
            let m = &r.message;
            let attrs = message_attributes(m, &asked_user);
            let system = system_attributes(ctx, m, &asked);
            w::Message {
                message_id: Some(m.id.clone()),
                receipt_handle: Some(r.receipt_handle.clone()),
                md5_of_body: Some(rules::md5_body(&m.body)),
                body: Some(m.body.clone()),
                md5_of_message_attributes: rules::md5_attributes(&attrs),
                message_attributes: (!attrs.is_empty()).then(|| {
                    attrs
                        .into_iter()
                        .map(|(k, v)| {
                            (
                                k,
                                w::MessageAttributeValue {
                                    data_type: Some(v.data_type),
                                    string_value: v.string,
                                    binary_value: v.binary,
                                    ..Default::default()
                                },
                            )
                        })
                        .collect()
                }),
                attributes: (!system.is_empty()).then_some(system),
            }
        })
        .collect::<Vec<_>>();
    Ok(w::ReceiveMessageResult {
        messages: (!messages.is_empty()).then_some(messages),
    })
}

fn handle(h: Option<&str>) -> Result<&str, SqsError> {
    h.filter(|h| !h.is_empty())
        .ok_or_else(|| SqsError::missing("ReceiptHandle"))
}

async fn delete_message(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DeleteMessageRequest,
) -> Out<Empty> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    let h = handle(input.receipt_handle.as_deref())?;
    ctl::delete_message(st, &ctx.scope, &q, h).await?;
    ctl::count_activity(st, &ctx.scope, &q.name, &[("NumberOfMessagesDeleted", 1.0)]).await;
    Ok(Empty {})
}

async fn delete_message_batch(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DeleteMessageBatchRequest,
) -> Out<w::DeleteMessageBatchResult> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    let entries = input.entries.unwrap_or_default();
    rules::check_batch_ids("DeleteMessage", entries.iter().map(|e| e.id.as_deref()))?;
    let (mut ok, mut bad) = (vec![], vec![]);
    for e in &entries {
        let id = e.id.clone().unwrap_or_default();
        let result = match handle(e.receipt_handle.as_deref()) {
            Ok(h) => ctl::delete_message(st, &ctx.scope, &q, h).await,
            Err(err) => Err(err.into()),
        };
        match result {
            Ok(()) => ok.push(w::DeleteMessageBatchResultEntry { id: Some(id) }),
            Err(SqsFailure::Sqs(err)) => bad.push(failed(&id, &err)),
            Err(e) => return Err(e.into()),
        }
    }
    if !ok.is_empty() {
        ctl::count_activity(
            st,
            &ctx.scope,
            &q.name,
            &[("NumberOfMessagesDeleted", ok.len() as f64)],
        )
        .await;
    }
    Ok(w::DeleteMessageBatchResult {
        successful: Some(ok),
        failed: Some(bad),
    })
}

fn visibility_of(v: Option<i32>) -> Result<i64, SqsError> {
    rules::check_visibility(v.ok_or_else(|| SqsError::missing("VisibilityTimeout"))?)
}

async fn change_message_visibility(
    st: &AppState,
    ctx: &RequestContext,
    input: w::ChangeMessageVisibilityRequest,
) -> Out<Empty> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    let h = handle(input.receipt_handle.as_deref())?;
    let timeout = visibility_of(input.visibility_timeout)?;
    ctl::change_visibility(st, &ctx.scope, &q, h, timeout).await?;
    Ok(Empty {})
}

async fn change_message_visibility_batch(
    st: &AppState,
    ctx: &RequestContext,
    input: w::ChangeMessageVisibilityBatchRequest,
) -> Out<w::ChangeMessageVisibilityBatchResult> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    let entries = input.entries.unwrap_or_default();
    rules::check_batch_ids(
        "ChangeMessageVisibility",
        entries.iter().map(|e| e.id.as_deref()),
    )?;
    let (mut ok, mut bad) = (vec![], vec![]);
    for e in &entries {
        let id = e.id.clone().unwrap_or_default();
        let result = match (
            handle(e.receipt_handle.as_deref()),
            visibility_of(e.visibility_timeout),
        ) {
            (Ok(h), Ok(t)) => ctl::change_visibility(st, &ctx.scope, &q, h, t).await,
            (Err(err), _) | (_, Err(err)) => Err(err.into()),
        };
        match result {
            Ok(()) => ok.push(w::ChangeMessageVisibilityBatchResultEntry { id: Some(id) }),
            Err(SqsFailure::Sqs(err)) => bad.push(failed(&id, &err)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(w::ChangeMessageVisibilityBatchResult {
        successful: Some(ok),
        failed: Some(bad),
    })
}

async fn tag_queue(st: &AppState, ctx: &RequestContext, input: w::TagQueueRequest) -> Out<Empty> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    let tags = input
        .tags
        .filter(|t| !t.is_empty())
        .ok_or_else(|| SqsError::missing("Tags"))?;
    ctl::tag(st, &ctx.scope, &q.name, &tags).await?;
    Ok(Empty {})
}

async fn untag_queue(
    st: &AppState,
    ctx: &RequestContext,
    input: w::UntagQueueRequest,
) -> Out<Empty> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    let keys = input
        .tag_keys
        .filter(|t| !t.is_empty())
        .ok_or_else(|| SqsError::missing("TagKeys"))?;
    ctl::untag(st, &ctx.scope, &q.name, &keys).await?;
    Ok(Empty {})
}

async fn list_queue_tags(
    st: &AppState,
    ctx: &RequestContext,
    input: w::ListQueueTagsRequest,
) -> Out<w::ListQueueTagsResult> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    Ok(w::ListQueueTagsResult {
        tags: (!q.tags.is_empty()).then_some(q.tags),
    })
}

async fn list_dead_letter_source_queues(
    st: &AppState,
    ctx: &RequestContext,
    input: w::ListDeadLetterSourceQueuesRequest,
) -> Out<w::ListDeadLetterSourceQueuesResult> {
    let q = queue(st, ctx, input.queue_url.as_deref()).await?;
    let names = ctl::dead_letter_sources(st, &ctx.scope, &q.name).await?;
    let (names, next_token) = page(
        "ListDeadLetterSourceQueues",
        names,
        input.next_token.as_deref(),
        input.max_results,
    )?;
    Ok(w::ListDeadLetterSourceQueuesResult {
        queue_urls: Some(names.iter().map(|n| url(ctx, n)).collect()),
        next_token,
    })
}
