//! SQS's rules: queue names and attributes, messages and their attributes,
//! batches, receipt handles, the MD5 digests clients check, and the errors
//! SQS answers in its own words. SQS is served over JSON and awsQuery: an
//! error has its JSON shape name and its legacy query code, which JSON
//! clients read from `x-amzn-query-error`. Pure: times are milliseconds
//! the caller passes.

use base64::Engine;
use md5::{Digest, Md5};
use std::collections::BTreeMap;

/// An SQS error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{query_code}: {message}")]
pub struct SqsError {
    /// The exception's shape, JSON's `__type`.
    pub code: &'static str,
    /// The awsQuery code (`AWS.SimpleQueueService.NonExistentQueue`).
    pub query_code: &'static str,
    pub status: u16,
    pub message: String,
}

impl SqsError {
    fn new(code: &'static str, query_code: &'static str, status: u16, message: String) -> Self {
        SqsError {
            code,
            query_code,
            status,
            message,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            "InvalidParameterValue",
            "InvalidParameterValue",
            400,
            message.into(),
        )
    }

    /// "Value V for parameter F is invalid. Reason: R."
    pub fn value(field: &str, value: impl std::fmt::Display, reason: &str) -> Self {
        Self::invalid(format!(
            "Value {value} for parameter {field} is invalid. Reason: {reason}"
        ))
    }

    pub fn missing(field: &str) -> Self {
        Self::new(
            "MissingParameter",
            "MissingParameter",
            400,
            format!("The request must contain the parameter {field}."),
        )
    }

    pub fn no_queue() -> Self {
        Self::new(
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
            400,
            "The specified queue does not exist.".into(),
        )
    }

    pub fn queue_exists(attribute: &str) -> Self {
        Self::new(
            "QueueNameExists",
            "QueueAlreadyExists",
            400,
            format!("A queue already exists with the same name and a different value for attribute {attribute}"),
        )
    }

    pub fn deleted_recently(name: &str) -> Self {
        Self::new(
            "QueueDeletedRecently",
            "AWS.SimpleQueueService.QueueDeletedRecently",
            400,
            format!("You must wait 60 seconds after deleting a queue before you can create another with the same name: {name}."),
        )
    }

    pub fn purge_in_progress(name: &str) -> Self {
        Self::new(
            "PurgeQueueInProgress",
            "AWS.SimpleQueueService.PurgeQueueInProgress",
            403,
            format!("Only one PurgeQueue operation on {name} is allowed every 60 seconds."),
        )
    }

    pub fn attribute_name(name: &str) -> Self {
        Self::new(
            "InvalidAttributeName",
            "InvalidAttributeName",
            400,
            format!("Unknown Attribute {name}."),
        )
    }

    pub fn attribute_value(name: &str) -> Self {
        Self::new(
            "InvalidAttributeValue",
            "InvalidAttributeValue",
            400,
            format!("Invalid value for the parameter {name}."),
        )
    }

    pub fn receipt_handle(handle: &str) -> Self {
        Self::new(
            "ReceiptHandleIsInvalid",
            "ReceiptHandleIsInvalid",
            400,
            format!("The input receipt handle \"{handle}\" is not a valid receipt handle."),
        )
    }

    pub fn not_inflight() -> Self {
        Self::new(
            "MessageNotInflight",
            "AWS.SimpleQueueService.MessageNotInflight",
            400,
            "The message referred to isn't in flight.".into(),
        )
    }

    pub fn contents(message: impl Into<String>) -> Self {
        Self::new(
            "InvalidMessageContents",
            "InvalidMessageContents",
            400,
            message.into(),
        )
    }

    pub fn empty_batch(action: &str) -> Self {
        Self::new(
            "EmptyBatchRequest",
            "AWS.SimpleQueueService.EmptyBatchRequest",
            400,
            format!("There should be at least one {action}BatchRequestEntry in the request."),
        )
    }

    pub fn too_many_entries(n: usize) -> Self {
        Self::new(
            "TooManyEntriesInBatchRequest",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            400,
            format!("Maximum number of entries per request are 10. You have sent {n}."),
        )
    }

    pub fn ids_not_distinct(id: &str) -> Self {
        Self::new(
            "BatchEntryIdsNotDistinct",
            "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
            400,
            format!("Id {id} repeated."),
        )
    }

    pub fn batch_entry_id(id: &str) -> Self {
        Self::new(
            "InvalidBatchEntryId",
            "AWS.SimpleQueueService.InvalidBatchEntryId",
            400,
            format!("A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long. Invalid id: {id}"),
        )
    }

    pub fn batch_too_long(bytes: usize, limit: usize) -> Self {
        Self::new(
            "BatchRequestTooLong",
            "AWS.SimpleQueueService.BatchRequestTooLong",
            400,
            format!(
                "Batch requests cannot be longer than {limit} bytes. You have sent {bytes} bytes."
            ),
        )
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation",
            400,
            message.into(),
        )
    }

    pub fn over_limit(message: impl Into<String>) -> Self {
        Self::new("OverLimit", "OverLimit", 403, message.into())
    }

    pub fn invalid_address(url: &str) -> Self {
        Self::new(
            "InvalidAddress",
            "InvalidAddress",
            404,
            format!("The address {url} is not valid for this endpoint."),
        )
    }

    pub fn next_token() -> Self {
        Self::invalid("Invalid or expired next token.")
    }
}

/// The ARN of queue `name`.
pub fn queue_arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:sqs:{region}:{account}:{name}")
}

/// (region, account, name) of a queue's ARN.
pub fn parse_queue_arn(arn: &str) -> Option<(&str, &str, &str)> {
    let mut p = arn.split(':');
    match (
        p.next(),
        p.next(),
        p.next(),
        p.next(),
        p.next(),
        p.next(),
        p.next(),
    ) {
        (Some("arn"), Some(_), Some("sqs"), Some(region), Some(account), Some(name), None)
            if !name.is_empty() =>
        {
            Some((region, account, name))
        }
        _ => None,
    }
}

/// (account, name) of a queue URL (`http(s)://host/ACCOUNT/NAME`): the
/// host is whatever the caller reached Berth at, so it is not checked.
pub fn parse_queue_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split_once('/').map(|(_, p)| p)?;
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut parts = path.trim_end_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(account), Some(name), None) if !account.is_empty() && !name.is_empty() => {
            Some((account, name))
        }
        _ => None,
    }
}

/// The most messages one ReceiveMessage returns, and a batch's entries.
pub const MAX_BATCH: usize = 10;
/// SendMessageBatch's total payload.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// How long a FIFO queue remembers a deduplication id, in ms.
pub const DEDUP_WINDOW_MS: i64 = 5 * 60 * 1000;
/// PurgeQueue once per this many ms; the same wait before a deleted
/// queue's name is free.
pub const PURGE_WAIT_MS: i64 = 60_000;
pub const MAX_TAGS: usize = 50;

/// The attributes users set, with SQS's bounds and defaults: (name,
/// minimum, maximum, default).
const NUMERIC: &[(&str, i64, i64, i64)] = &[
    ("DelaySeconds", 0, 900, 0),
    ("MaximumMessageSize", 1024, 1_048_576, 1_048_576),
    ("MessageRetentionPeriod", 60, 1_209_600, 345_600),
    ("ReceiveMessageWaitTimeSeconds", 0, 20, 0),
    ("VisibilityTimeout", 0, 43_200, 30),
    ("KmsDataKeyReusePeriodSeconds", 60, 86_400, 300),
];

/// Attributes only a FIFO queue has.
const FIFO_ONLY: &[&str] = &[
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
];
const TEXT: &[&str] = &[
    "Policy",
    "RedrivePolicy",
    "RedriveAllowPolicy",
    "KmsMasterKeyId",
    "SqsManagedSseEnabled",
];
/// What GetQueueAttributes computes rather than stores.
const COMPUTED: &[&str] = &[
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
];

/// A queue's record: written by CreateQueue, SetQueueAttributes, the tag
/// operations and PurgeQueue.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueRecord {
    pub name: String,
    /// Every settable attribute, defaults filled in, as SQS shows them.
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Epoch seconds.
    pub created: i64,
    pub modified: i64,
    /// When PurgeQueue last ran, in ms: messages sent before it are gone.
    #[serde(default)]
    pub purged_ms: Option<i64>,
}

impl QueueRecord {
    pub fn fifo(&self) -> bool {
        self.name.ends_with(".fifo")
    }
    fn number(&self, name: &str) -> i64 {
        self.attributes
            .get(name)
            .and_then(|v| v.parse().ok())
            .or_else(|| NUMERIC.iter().find(|n| n.0 == name).map(|n| n.3))
            .unwrap_or_default()
    }
    pub fn visibility_timeout(&self) -> i64 {
        self.number("VisibilityTimeout")
    }
    pub fn delay_seconds(&self) -> i64 {
        self.number("DelaySeconds")
    }
    pub fn maximum_message_size(&self) -> i64 {
        self.number("MaximumMessageSize")
    }
    pub fn retention_ms(&self) -> i64 {
        self.number("MessageRetentionPeriod") * 1000
    }
    pub fn wait_time_seconds(&self) -> i64 {
        self.number("ReceiveMessageWaitTimeSeconds")
    }
    pub fn content_based_dedup(&self) -> bool {
        self.attributes
            .get("ContentBasedDeduplication")
            .is_some_and(|v| v == "true")
    }
    pub fn redrive(&self) -> Option<Redrive> {
        self.attributes
            .get("RedrivePolicy")
            .and_then(|p| parse_redrive(p).ok())
    }
}

/// A queue's dead-letter settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    pub target_arn: String,
    pub max_receive_count: i64,
}

fn parse_redrive(text: &str) -> Result<Redrive, SqsError> {
    let bad = |reason: &str| SqsError::value("RedrivePolicy", text, reason);
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|_| bad("Redrive policy is not a valid JSON map."))?;
    let arn = v
        .get("deadLetterTargetArn")
        .and_then(|a| a.as_str())
        .ok_or_else(|| {
            bad("Redrive policy does not contain mandatory attribute: deadLetterTargetArn.")
        })?;
    let count = match v.get("maxReceiveCount") {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        None => {
            return Err(bad(
                "Redrive policy does not contain mandatory attribute: maxReceiveCount.",
            ))
        }
        _ => None,
    }
    .filter(|n| (1..=1000).contains(n))
    .ok_or_else(|| {
        bad("Invalid value for maxReceiveCount: the value must be between 1 and 1000.")
    })?;
    if parse_queue_arn(arn).is_none() {
        return Err(bad("Invalid value for deadLetterTargetArn."));
    }
    Ok(Redrive {
        target_arn: arn.to_string(),
        max_receive_count: count,
    })
}

/// The checked name of a queue to create.
pub fn check_queue_name(name: &str, attributes: &BTreeMap<String, String>) -> Result<(), SqsError> {
    let fifo_asked = attributes.get("FifoQueue").map(String::as_str);
    let fifo = name.ends_with(".fifo");
    let stem = name.strip_suffix(".fifo").unwrap_or(name);
    let valid_chars = !stem.is_empty()
        && name.len() <= 80
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if fifo || fifo_asked == Some("true") {
        if !valid_chars || !fifo {
            return Err(SqsError::invalid("The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length."));
        }
        if fifo_asked != Some("true") {
            return Err(SqsError::invalid(
                "The FifoQueue attribute must be set to true for a queue whose name ends with .fifo.",
            ));
        }
    } else if !valid_chars {
        return Err(SqsError::invalid(
            "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
        ));
    }
    Ok(())
}

/// Checks the attributes CreateQueue or SetQueueAttributes sets on a queue
/// named `name` and returns them merged onto `current` (defaults when
/// creating). The dead-letter queue's existence is the caller's to check.
pub fn check_attributes(
    name: &str,
    given: &BTreeMap<String, String>,
    current: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, SqsError> {
    let fifo = name.ends_with(".fifo");
    let mut out = match current {
        Some(c) => c.clone(),
        None => defaults(fifo),
    };
    for (k, v) in given {
        if let Some((_, min, max, _)) = NUMERIC.iter().find(|n| n.0 == k) {
            let n: i64 = v.trim().parse().map_err(|_| SqsError::attribute_value(k))?;
            if n < *min || n > *max {
                return Err(SqsError::attribute_value(k));
            }
            out.insert(k.clone(), n.to_string());
        } else if k == "FifoQueue" {
            match (v.as_str(), current) {
                ("true", None) if fifo => {}
                ("false", None) if !fifo => {}
                (v, Some(_)) if v == out.get("FifoQueue").map_or("false", |s| s.as_str()) => {}
                (_, Some(_)) => return Err(SqsError::attribute_name(k)),
                _ => return Err(SqsError::attribute_value(k)),
            }
            if fifo {
                out.insert(k.clone(), "true".into());
            }
        } else if FIFO_ONLY.contains(&k.as_str()) {
            if !fifo {
                return Err(SqsError::attribute_name(k));
            }
            let ok = match k.as_str() {
                "ContentBasedDeduplication" => matches!(v.as_str(), "true" | "false"),
                "DeduplicationScope" => matches!(v.as_str(), "messageGroup" | "queue"),
                _ => matches!(v.as_str(), "perQueue" | "perMessageGroupId"),
            };
            if !ok {
                return Err(SqsError::attribute_value(k));
            }
            out.insert(k.clone(), v.clone());
        } else if TEXT.contains(&k.as_str()) {
            match k.as_str() {
                "RedrivePolicy" if v.is_empty() => {
                    out.remove(k);
                    continue;
                }
                "RedrivePolicy" => {
                    let r = parse_redrive(v)?;
                    if r.target_arn.ends_with(".fifo") != fifo {
                        return Err(SqsError::value(
                            "RedrivePolicy",
                            v,
                            "Dead-letter queue must be same type of queue as the source.",
                        ));
                    }
                }
                "Policy" | "RedriveAllowPolicy" if v.is_empty() => {
                    out.remove(k);
                    continue;
                }
                "Policy" | "RedriveAllowPolicy"
                    if !serde_json::from_str::<serde_json::Value>(v)
                        .is_ok_and(|p| p.is_object()) =>
                {
                    return Err(SqsError::attribute_value(k));
                }
                "SqsManagedSseEnabled" if !matches!(v.as_str(), "true" | "false") => {
                    return Err(SqsError::attribute_value(k));
                }
                _ => {}
            }
            out.insert(k.clone(), v.clone());
        } else {
            return Err(SqsError::attribute_name(k));
        }
    }
    Ok(out)
}

fn defaults(fifo: bool) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = NUMERIC
        .iter()
        .filter(|n| n.0 != "KmsDataKeyReusePeriodSeconds")
        .map(|n| (n.0.to_string(), n.3.to_string()))
        .collect();
    out.insert("SqsManagedSseEnabled".into(), "true".into());
    if fifo {
        out.insert("FifoQueue".into(), "true".into());
        out.insert("ContentBasedDeduplication".into(), "false".into());
        out.insert("DeduplicationScope".into(), "queue".into());
        out.insert("FifoThroughputLimit".into(), "perQueue".into());
    }
    out
}

/// Which attributes CreateQueue on an existing queue compares: those it
/// was given, against what the queue has.
pub fn first_difference(
    existing: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> Option<String> {
    wanted
        .iter()
        .find(|(k, v)| existing.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
}

/// The attribute names GetQueueAttributes asks for, checked: `All` or
/// known names.
pub fn check_attribute_names(names: &[String], fifo: bool) -> Result<Vec<String>, SqsError> {
    let mut out = vec![];
    for n in names {
        let known = n == "All"
            || NUMERIC.iter().any(|x| x.0 == n)
            || TEXT.contains(&n.as_str())
            || COMPUTED.contains(&n.as_str())
            || n == "FifoQueue"
            || (fifo && FIFO_ONLY.contains(&n.as_str()));
        if !known {
            return Err(SqsError::attribute_name(n));
        }
        out.push(n.clone());
    }
    Ok(out)
}

/// Tags as TagQueue and CreateQueue take them.
pub fn check_tags(tags: &BTreeMap<String, String>, current: usize) -> Result<(), SqsError> {
    if tags.len() + current > MAX_TAGS {
        return Err(SqsError::invalid("Too many tags added for queue."));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(SqsError::invalid(format!(
                "Tag key {k} is invalid: 1 to 128 characters."
            )));
        }
        if v.chars().count() > 256 {
            return Err(SqsError::invalid(format!(
                "Tag value for key {k} is longer than 256 characters."
            )));
        }
    }
    Ok(())
}

/// A message attribute as stored (the wire's value).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttrValue {
    pub data_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// Base64, as the wire carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
}

/// A message: written by SendMessage, then by each receive (its
/// visibility and count) until DeleteMessage removes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MessageRecord {
    pub id: String,
    pub body: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, AttrValue>,
    /// AWSTraceHeader, the one system attribute senders set.
    #[serde(default)]
    pub trace_header: Option<String>,
    pub sender: String,
    pub sent_ms: i64,
    /// When it can next be received: the send's delay, then each receive's
    /// visibility timeout.
    pub visible_ms: i64,
    #[serde(default)]
    pub receive_count: i64,
    #[serde(default)]
    pub first_receive_ms: Option<i64>,
    /// Changes with each receive: only the latest receipt handle holds.
    #[serde(default)]
    pub receipt: Option<String>,
    #[serde(default)]
    pub group_id: Option<String>,
    #[serde(default)]
    pub dedup_id: Option<String>,
    /// FIFO queues' sequence number; also the message's key.
    pub sequence: String,
    /// Set when the message was moved here from a source queue's redrive.
    #[serde(default)]
    pub dead_letter_source: Option<String>,
}

impl MessageRecord {
    pub fn in_flight(&self, now_ms: i64) -> bool {
        self.receive_count > 0 && self.visible_ms > now_ms
    }
    pub fn delayed(&self, now_ms: i64) -> bool {
        self.receive_count == 0 && self.visible_ms > now_ms
    }
    /// The size SQS counts against MaximumMessageSize: the body and each
    /// attribute's name, type and value.
    pub fn size(&self) -> usize {
        size_of(&self.body, &self.attributes)
    }
}

fn size_of(body: &str, attrs: &BTreeMap<String, AttrValue>) -> usize {
    body.len()
        + attrs
            .iter()
            .map(|(k, v)| {
                k.len()
                    + v.data_type.len()
                    + v.string.as_ref().map_or(0, String::len)
                    + v.binary
                        .as_ref()
                        .map_or(0, |b| b64(b).map_or(0, |b| b.len()))
            })
            .sum::<usize>()
}

fn b64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Checks a message body: present, and only the characters XML 1.0 allows.
pub fn check_body(body: Option<&str>) -> Result<&str, SqsError> {
    let body = body
        .filter(|b| !b.is_empty())
        .ok_or_else(|| SqsError::missing("MessageBody"))?;
    if let Some(c) = body.chars().find(|c| {
        !matches!(*c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
    }) {
        return Err(SqsError::contents(format!(
            "Invalid binary character '#x{:X}' was found in the message body, the set of allowed characters is #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF",
            c as u32
        )));
    }
    Ok(body)
}

/// Checks message attributes as sent (name, type, value) and returns them
/// as stored.
pub fn check_message_attributes(
    given: &BTreeMap<String, berth_wire::sqs::MessageAttributeValue>,
) -> Result<BTreeMap<String, AttrValue>, SqsError> {
    if given.len() > 10 {
        return Err(SqsError::invalid(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [10].",
            given.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (name, v) in given {
        let lower = name.to_ascii_lowercase();
        let name_ok = !name.is_empty()
            && name.len() <= 256
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && !lower.starts_with("aws.")
            && !lower.starts_with("amazon.");
        if !name_ok {
            return Err(SqsError::invalid(format!(
                "Message (user) attribute name '{name}' is invalid."
            )));
        }
        let data_type = v.data_type.clone().unwrap_or_default();
        let base = data_type.split('.').next().unwrap_or_default();
        if data_type.is_empty() {
            return Err(SqsError::invalid(format!(
                "The message attribute '{name}' must contain non-empty message attribute type."
            )));
        }
        if !matches!(base, "String" | "Number" | "Binary") || data_type.len() > 256 {
            return Err(SqsError::invalid(format!(
                "The type of message (user) attribute '{name}' is invalid. You must use only the following supported type prefixes: Binary, Number, String."
            )));
        }
        if v.string_list_values.as_ref().is_some_and(|l| !l.is_empty())
            || v.binary_list_values.as_ref().is_some_and(|l| !l.is_empty())
        {
            return Err(SqsError::unsupported(
                "Message attribute list values in SendMessage operation are not supported.",
            ));
        }
        let value = if base == "Binary" {
            let b = v.binary_value.clone().filter(|b| !b.is_empty());
            match b {
                Some(b) if b64(&b).is_some() => AttrValue {
                    data_type,
                    string: None,
                    binary: Some(b),
                },
                _ => {
                    return Err(SqsError::invalid(format!(
                        "Message (user) attribute '{name}' must contain a non-empty value of type 'Binary'."
                    )))
                }
            }
        } else {
            let s = v.string_value.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
                SqsError::invalid(format!(
                    "Message (user) attribute '{name}' must contain a non-empty value of type '{base}'."
                ))
            })?;
            if base == "Number" && !is_number(&s) {
                return Err(SqsError::invalid(format!(
                    "Could not cast message attribute '{name}' value to number."
                )));
            }
            AttrValue {
                data_type,
                string: Some(s),
                binary: None,
            }
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

fn is_number(s: &str) -> bool {
    let t = s.trim();
    !t.is_empty() && t.parse::<f64>().is_ok_and(f64::is_finite)
}

/// The size check of a message for its queue.
pub fn check_size(
    body: &str,
    attrs: &BTreeMap<String, AttrValue>,
    limit: i64,
) -> Result<(), SqsError> {
    if size_of(body, attrs) as i64 > limit {
        return Err(SqsError::invalid(format!(
            "One or more parameters are invalid. Reason: Message must be shorter than {limit} bytes."
        )));
    }
    Ok(())
}

/// Checks DelaySeconds of one message against its queue.
pub fn check_delay(delay: Option<i32>, fifo: bool) -> Result<Option<i64>, SqsError> {
    match delay {
        None => Ok(None),
        Some(d) if !(0..=900).contains(&d) => Err(SqsError::value(
            "DelaySeconds",
            d,
            "DelaySeconds must be >= 0 and <= 900.",
        )),
        Some(d) if fifo && d > 0 => Err(SqsError::value(
            "DelaySeconds",
            d,
            "The request include parameter that is not valid for this queue type.",
        )),
        Some(d) => Ok(Some(d as i64)),
    }
}

/// The FIFO fields of a send: (group id, deduplication id). Standard
/// queues take a group id (fair queues) but no deduplication id.
pub fn check_fifo_fields(
    fifo: bool,
    content_dedup: bool,
    body: &str,
    group: Option<&str>,
    dedup: Option<&str>,
) -> Result<(Option<String>, Option<String>), SqsError> {
    let ok = |s: &str| !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic());
    if let Some(g) = group {
        if !ok(g) {
            return Err(SqsError::value("MessageGroupId", g, "MessageGroupId can only include alphanumeric and punctuation characters. 1 to 128 in length."));
        }
    }
    if !fifo {
        if let Some(d) = dedup {
            return Err(SqsError::value(
                "MessageDeduplicationId",
                d,
                "The request include parameter that is not valid for this queue type.",
            ));
        }
        return Ok((group.map(str::to_string), None));
    }
    let group = group.ok_or_else(|| SqsError::missing("MessageGroupId"))?;
    let dedup = match dedup {
        Some(d) if !ok(d) => {
            return Err(SqsError::value("MessageDeduplicationId", d, "MessageDeduplicationId can only include alphanumeric and punctuation characters. 1 to 128 in length."))
        }
        Some(d) => d.to_string(),
        None if content_dedup => {
            let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
            hex(digest.as_ref())
        }
        None => return Err(SqsError::invalid("The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly")),
    };
    Ok((Some(group.to_string()), Some(dedup)))
}

/// Checks a batch's entry ids: present, distinct, at most ten, well formed.
pub fn check_batch_ids<'a>(
    action: &str,
    ids: impl ExactSizeIterator<Item = Option<&'a str>>,
) -> Result<(), SqsError> {
    let n = ids.len();
    if n == 0 {
        return Err(SqsError::empty_batch(action));
    }
    if n > MAX_BATCH {
        return Err(SqsError::too_many_entries(n));
    }
    let mut seen = std::collections::BTreeSet::new();
    for id in ids {
        let id = id.ok_or_else(|| SqsError::missing(&format!("{action}BatchRequestEntry.N.Id")))?;
        if id.is_empty()
            || id.len() > 80
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(SqsError::batch_entry_id(id));
        }
        if !seen.insert(id) {
            return Err(SqsError::ids_not_distinct(id));
        }
    }
    Ok(())
}

/// Checks a visibility timeout given to ReceiveMessage or
/// ChangeMessageVisibility.
pub fn check_visibility(v: i32) -> Result<i64, SqsError> {
    if !(0..=43_200).contains(&v) {
        return Err(SqsError::value(
            "VisibilityTimeout",
            v,
            "Must be >= 0 and <= 43200, if provided.",
        ));
    }
    Ok(v as i64)
}

/// Checks ReceiveMessage's counts: (max messages, wait seconds).
pub fn check_receive(
    max: Option<i32>,
    wait: Option<i32>,
) -> Result<(usize, Option<i64>), SqsError> {
    let max = max.unwrap_or(1);
    if !(1..=10).contains(&max) {
        return Err(SqsError::value(
            "MaxNumberOfMessages",
            max,
            "Must be between 1 and 10, if provided.",
        ));
    }
    if let Some(w) = wait {
        if !(0..=20).contains(&w) {
            return Err(SqsError::value(
                "WaitTimeSeconds",
                w,
                "Must be >= 0 and <= 20, if provided.",
            ));
        }
    }
    Ok((max as usize, wait.map(i64::from)))
}

/// A receipt handle: which message, and which receive of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub queue: String,
    pub sequence: String,
    pub token: String,
}

impl Receipt {
    pub fn encode(&self) -> String {
        let raw = format!("{}\n{}\n{}", self.queue, self.sequence, self.token);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// The receipt of `handle` for queue `queue`, or ReceiptHandleIsInvalid.
    pub fn decode(handle: &str, queue: &str) -> Result<Receipt, SqsError> {
        let bad = || SqsError::receipt_handle(handle);
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(handle.trim())
            .map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let mut parts = text.split('\n');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(q), Some(seq), Some(token), None)
                if q == queue && !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Ok(Receipt {
                    queue: q.to_string(),
                    sequence: seq.to_string(),
                    token: token.to_string(),
                })
            }
            _ => Err(bad()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// MD5OfMessageBody.
pub fn md5_body(body: &str) -> String {
    hex(&Md5::digest(body.as_bytes()))
}

/// MD5OfMessageAttributes, as SDKs recompute it: for each attribute in
/// name order, the name, the data type (each as a 4-byte big-endian length
/// and the bytes), a transport byte (1 text, 2 binary) and the value
/// (length and bytes). None without attributes.
pub fn md5_attributes(attrs: &BTreeMap<String, AttrValue>) -> Option<String> {
    if attrs.is_empty() {
        return None;
    }
    fn field(h: &mut Md5, bytes: &[u8]) {
        h.update((bytes.len() as u32).to_be_bytes());
        h.update(bytes);
    }
    let mut h = Md5::new();
    for (name, v) in attrs {
        field(&mut h, name.as_bytes());
        field(&mut h, v.data_type.as_bytes());
        match (&v.string, &v.binary) {
            (_, Some(b)) => {
                h.update([2]);
                field(&mut h, &b64(b).unwrap_or_default());
            }
            (Some(s), None) => {
                h.update([1]);
                field(&mut h, s.as_bytes());
            }
            (None, None) => {}
        }
    }
    Some(hex(&h.finalize()))
}

/// The oldest-first order of messages: their sequence numbers, which are
/// also their keys, sort as numbers because they have equal width.
pub fn sequence(nanos: u128) -> String {
    format!("{nanos:026}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_urls_and_arns_parse() {
        assert_eq!(
            parse_queue_url("http://127.0.0.1:8750/000000000000/jobs"),
            Some(("000000000000", "jobs"))
        );
        assert_eq!(
            parse_queue_url("http://169.254.170.2/1/a.fifo"),
            Some(("1", "a.fifo"))
        );
        assert_eq!(parse_queue_url("http://h/1"), None);
        assert_eq!(parse_queue_url("http://h/1/a/b"), None);
        assert_eq!(
            parse_queue_arn("arn:aws:sqs:us-east-1:123:dlq"),
            Some(("us-east-1", "123", "dlq"))
        );
        assert_eq!(parse_queue_arn("arn:aws:sns:us-east-1:123:dlq"), None);
    }

    #[test]
    fn names_follow_the_queue_type() {
        let none = BTreeMap::new();
        let fifo: BTreeMap<_, _> = [("FifoQueue".to_string(), "true".to_string())].into();
        assert!(check_queue_name("jobs-1_a", &none).is_ok());
        assert!(check_queue_name("a.fifo", &fifo).is_ok());
        assert!(check_queue_name("a b", &none).is_err());
        assert!(check_queue_name(&"a".repeat(81), &none).is_err());
        assert!(check_queue_name("a", &fifo).is_err());
        assert!(check_queue_name("a.fifo", &none).is_err());
    }

    #[test]
    fn attributes_are_bounded_and_defaulted() {
        let given: BTreeMap<_, _> = [("VisibilityTimeout".to_string(), "45".to_string())].into();
        let a = check_attributes("q", &given, None).expect("valid");
        assert_eq!(a["VisibilityTimeout"], "45");
        assert_eq!(a["MessageRetentionPeriod"], "345600");
        let bad: BTreeMap<_, _> = [("VisibilityTimeout".to_string(), "43201".to_string())].into();
        assert_eq!(
            check_attributes("q", &bad, None)
                .expect_err("refused")
                .message,
            "Invalid value for the parameter VisibilityTimeout."
        );
        let unknown: BTreeMap<_, _> = [("Colour".to_string(), "red".to_string())].into();
        assert_eq!(
            check_attributes("q", &unknown, None)
                .expect_err("refused")
                .code,
            "InvalidAttributeName"
        );
        let fifo_only: BTreeMap<_, _> =
            [("ContentBasedDeduplication".to_string(), "true".to_string())].into();
        assert!(check_attributes("q", &fifo_only, None).is_err());
        let redrive: BTreeMap<_, _> = [(
            "RedrivePolicy".to_string(),
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:1:dlq","maxReceiveCount":"3"}"#
                .to_string(),
        )]
        .into();
        let a = check_attributes("q", &redrive, None).expect("valid");
        let r = QueueRecord {
            name: "q".into(),
            attributes: a,
            tags: BTreeMap::new(),
            created: 0,
            modified: 0,
            purged_ms: None,
        };
        assert_eq!(r.redrive().map(|r| r.max_receive_count), Some(3));
        let to_fifo: BTreeMap<_, _> = [(
            "RedrivePolicy".to_string(),
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:1:d.fifo","maxReceiveCount":3}"#
                .to_string(),
        )]
        .into();
        assert!(check_attributes("q", &to_fifo, None).is_err());
    }

    #[test]
    fn digests_match_what_sdks_compute() {
        // botocore's and the Java SDK's documented example digests.
        assert_eq!(md5_body("hello"), "5d41402abc4b2a76b9719d911017c592");
        let attrs: BTreeMap<_, _> = [(
            "k".to_string(),
            AttrValue {
                data_type: "String".into(),
                string: Some("v".into()),
                binary: None,
            },
        )]
        .into();
        // 00000001 'k' 00000006 'String' 01 00000001 'v'
        let mut raw = vec![];
        raw.extend_from_slice(&1u32.to_be_bytes());
        raw.push(b'k');
        raw.extend_from_slice(&6u32.to_be_bytes());
        raw.extend_from_slice(b"String");
        raw.push(1);
        raw.extend_from_slice(&1u32.to_be_bytes());
        raw.push(b'v');
        assert_eq!(md5_attributes(&attrs), Some(hex(&Md5::digest(&raw))));
        assert_eq!(md5_attributes(&BTreeMap::new()), None);
    }

    #[test]
    fn receipts_round_trip_and_refuse_others() {
        let r = Receipt {
            queue: "jobs".into(),
            sequence: sequence(42),
            token: "t1".into(),
        };
        let h = r.encode();
        assert_eq!(Receipt::decode(&h, "jobs"), Ok(r));
        assert_eq!(
            Receipt::decode(&h, "other").expect_err("refused").code,
            "ReceiptHandleIsInvalid"
        );
        assert!(Receipt::decode("garbage!", "jobs").is_err());
    }

    #[test]
    fn batches_need_distinct_well_formed_ids() {
        let ids = |v: &[&'static str]| v.iter().map(|s| Some(*s)).collect::<Vec<_>>();
        assert!(check_batch_ids("SendMessage", ids(&["a", "b"]).into_iter()).is_ok());
        assert_eq!(
            check_batch_ids("SendMessage", ids(&[]).into_iter())
                .expect_err("refused")
                .code,
            "EmptyBatchRequest"
        );
        assert_eq!(
            check_batch_ids("SendMessage", ids(&["a", "a"]).into_iter())
                .expect_err("refused")
                .code,
            "BatchEntryIdsNotDistinct"
        );
        assert_eq!(
            check_batch_ids("SendMessage", ids(&["a b"]).into_iter())
                .expect_err("refused")
                .code,
            "InvalidBatchEntryId"
        );
        assert_eq!(
            check_batch_ids("SendMessage", ids(&["a"; 11]).into_iter())
                .expect_err("refused")
                .code,
            "TooManyEntriesInBatchRequest"
        );
    }

    #[test]
    fn bodies_refuse_characters_xml_cannot_carry() {
        assert!(check_body(Some("ok\n")).is_ok());
        assert_eq!(
            check_body(Some("")).expect_err("refused").code,
            "MissingParameter"
        );
        assert_eq!(
            check_body(Some("a\u{1}")).expect_err("refused").code,
            "InvalidMessageContents"
        );
    }

    #[test]
    fn fifo_sends_need_a_group_and_a_deduplication_id() {
        assert!(check_fifo_fields(true, false, "b", None, Some("d")).is_err());
        assert!(check_fifo_fields(true, false, "b", Some("g"), None).is_err());
        let (g, d) = check_fifo_fields(true, true, "b", Some("g"), None).expect("content dedup");
        assert_eq!(g.as_deref(), Some("g"));
        assert_eq!(d.map(|d| d.len()), Some(64));
        assert!(check_fifo_fields(false, false, "b", None, Some("d")).is_err());
    }
}
