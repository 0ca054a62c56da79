//! SQS against the store: queues are records the API writes; each message
//! is a record of its own under its queue, keyed by a sequence number that
//! grows with time, written by its send (acknowledged only once the store
//! has it, so it survives a crash) and by each receive, which moves its
//! visibility by compare-and-swap so that two receivers never get it at
//! once. Long polls wait on the store's watch of the queue's messages, so
//! a send on any server wakes them. The rules are `berth_domain::sqs`'s.

use crate::{Control, ControlError};
use berth_domain::sqs::{self as rules, AttrValue, MessageRecord, QueueRecord, Receipt, SqsError};
use berth_domain::Scope;
use berth_store::keys::sqs as keys;
use berth_store::typed::{self, Versioned};
use berth_store::{Op, RangeRequest, Txn};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// An SQS failure or the store's.
#[derive(Debug, thiserror::Error)]
pub enum SqsFailure {
    #[error(transparent)]
    Sqs(#[from] SqsError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl From<berth_store::StoreError> for SqsFailure {
    fn from(e: berth_store::StoreError) -> Self {
        SqsFailure::Control(e.into())
    }
}

type Result<T> = std::result::Result<T, SqsFailure>;

/// How many times a write that lost a race is tried again.
const RETRIES: usize = 16;

fn now_ms(ctl: &Control) -> i64 {
    (ctl.clock.now() * 1000.0) as i64
}

/// The next sequence number: later than every one this server gave, and
/// with random low digits so that servers sharing a store do not collide
/// (a collision would still fail the send's create-only write).
fn next_sequence(now_ms: i64) -> String {
    static LAST: parking_lot::Mutex<u128> = parking_lot::Mutex::new(0);
    let nanos = u128::try_from(now_ms).unwrap_or_default() * 1_000_000;
    let candidate = nanos * 1000 + u128::from(rand::random::<u16>() % 1000);
    let mut last = LAST.lock();
    *last = candidate.max(*last + 1);
    rules::sequence(*last)
}

/// A queue by name, or QueueDoesNotExist.
pub async fn queue(ctl: &Control, scope: &Scope, name: &str) -> Result<Versioned<QueueRecord>> {
    typed::get::<QueueRecord>(&*ctl.store, &keys::queue(scope, name))
        .await?
        .ok_or_else(|| SqsError::no_queue().into())
}

/// The queue a URL names, in the caller's account.
pub async fn queue_at(
    ctl: &Control,
    scope: &Scope,
    url: Option<&str>,
) -> Result<Versioned<QueueRecord>> {
    let url = url
        .filter(|u| !u.is_empty())
        .ok_or_else(|| SqsError::missing("QueueUrl"))?;
    let (account, name) =
        rules::parse_queue_url(url).ok_or_else(|| SqsError::invalid_address(url))?;
    if account != scope.account {
        return Err(SqsError::no_queue().into());
    }
    queue(ctl, scope, name).await
}

/// CreateQueue: the queue, new or (same attributes asked) the existing one.
pub async fn create_queue(
    ctl: &Control,
    scope: &Scope,
    name: &str,
    given: &BTreeMap<String, String>,
    tags: &BTreeMap<String, String>,
) -> Result<QueueRecord> {
    rules::check_queue_name(name, given)?;
    let attributes = rules::check_attributes(name, given, None)?;
    rules::check_tags(tags, 0)?;
    if let Some(r) = attributes.get("RedrivePolicy").and_then(|_| {
        QueueRecord {
            name: name.into(),
            attributes: attributes.clone(),
            tags: BTreeMap::new(),
            created: 0,
            modified: 0,
            purged_ms: None,
        }
        .redrive()
    }) {
        check_target(ctl, scope, &r.target_arn, name).await?;
    }
    let key = keys::queue(scope, name);
    for _ in 0..RETRIES {
        let now = now_ms(ctl);
        if let Some(existing) = typed::get::<QueueRecord>(&*ctl.store, &key).await? {
            return match rules::first_difference(&existing.value.attributes, given) {
                Some(attr) => Err(SqsError::queue_exists(&attr).into()),
                None => Ok(existing.value),
            };
        }
        let deleted = keys::deleted(scope, name);
        if let Some(at) = typed::get::<i64>(&*ctl.store, &deleted).await? {
            if now - at.value < rules::PURGE_WAIT_MS {
                return Err(SqsError::deleted_recently(name).into());
            }
        }
        let record = QueueRecord {
            name: name.to_string(),
            attributes: attributes.clone(),
            tags: tags.clone(),
            created: now / 1000,
            modified: now / 1000,
            purged_ms: None,
        };
        let txn = Txn::when(
            vec![typed::unchanged(&key, 0)],
            vec![
                typed::put(&key, &record),
                Op::delete(deleted),
                // Its region's metrics are published with its alarms.
                crate::alarms::watched_region(scope),
            ],
        );
        if ctl.store.txn(txn).await?.succeeded {
            return Ok(record);
        }
    }
    Err(busy())
}

fn busy() -> SqsFailure {
    SqsError::over_limit("Too many concurrent changes to this queue; try again.").into()
}

/// A dead-letter target: an existing queue of the account's region, not
/// the queue itself.
async fn check_target(ctl: &Control, scope: &Scope, arn: &str, source: &str) -> Result<()> {
    let missing = || SqsError::value("RedrivePolicy", arn, "Dead letter target does not exist.");
    match rules::parse_queue_arn(arn) {
        Some((region, account, name))
            if region == scope.region && account == scope.account && name != source =>
        {
            if typed::get::<QueueRecord>(&*ctl.store, &keys::queue(scope, name))
                .await?
                .is_none()
            {
                return Err(missing().into());
            }
            Ok(())
        }
        _ => Err(missing().into()),
    }
}

/// The names of the scope's queues, in name order.
pub async fn queue_names(ctl: &Control, scope: &Scope) -> Result<Vec<String>> {
    Ok(typed::names(&*ctl.store, &keys::queues(scope)).await?)
}

/// Every queue of the scope.
pub async fn queues(ctl: &Control, scope: &Scope) -> Result<Vec<QueueRecord>> {
    Ok(
        typed::list::<QueueRecord>(&*ctl.store, &keys::queues(scope))
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect(),
    )
}

/// Changes a queue's record with `change`, by compare-and-swap.
async fn update(
    ctl: &Control,
    scope: &Scope,
    name: &str,
    mut change: impl FnMut(&mut QueueRecord, i64) -> Result<()>,
) -> Result<QueueRecord> {
    let key = keys::queue(scope, name);
    for _ in 0..RETRIES {
        let q = queue(ctl, scope, name).await?;
        let mut record = q.value.clone();
        let now = now_ms(ctl);
        change(&mut record, now)?;
        if record == q.value {
            return Ok(record);
        }
        record.modified = now / 1000;
        let txn = Txn::when(
            vec![typed::unchanged(&key, q.mod_revision)],
            vec![typed::put(&key, &record)],
        );
        if ctl.store.txn(txn).await?.succeeded {
            return Ok(record);
        }
    }
    Err(busy())
}

/// SetQueueAttributes.
pub async fn set_attributes(
    ctl: &Control,
    scope: &Scope,
    name: &str,
    given: &BTreeMap<String, String>,
) -> Result<()> {
    let current = queue(ctl, scope, name).await?;
    let merged = rules::check_attributes(name, given, Some(&current.value.attributes))?;
    if given.contains_key("RedrivePolicy") {
        if let Some(r) = given
            .get("RedrivePolicy")
            .filter(|p| !p.is_empty())
            .and_then(|_| {
                let mut probe = current.value.clone();
                probe.attributes = merged.clone();
                probe.redrive()
            })
        {
            check_target(ctl, scope, &r.target_arn, name).await?;
        }
    }
    update(ctl, scope, name, |q, _| {
        q.attributes = rules::check_attributes(name, given, Some(&q.attributes))?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// TagQueue.
pub async fn tag(
    ctl: &Control,
    scope: &Scope,
    name: &str,
    tags: &BTreeMap<String, String>,
) -> Result<()> {
    rules::check_tags(tags, 0)?;
    update(ctl, scope, name, |q, _| {
        let mut merged = q.tags.clone();
        merged.extend(tags.clone());
        if merged.len() > rules::MAX_TAGS {
            return Err(SqsError::invalid(format!("Too many tags added for queue {name}.")).into());
        }
        q.tags = merged;
        Ok(())
    })
    .await?;
    Ok(())
}

/// UntagQueue.
pub async fn untag(ctl: &Control, scope: &Scope, name: &str, keys_: &[String]) -> Result<()> {
    update(ctl, scope, name, |q, _| {
        for k in keys_ {
            q.tags.remove(k);
        }
        Ok(())
    })
    .await?;
    Ok(())
}

/// Deletes every record under `prefix` in transactions of `chunk` keys,
/// each only if the key is as read.
async fn delete_under(ctl: &Control, prefix: &str, keep: impl Fn(&[u8]) -> bool) -> Result<usize> {
    let kvs = ctl.store.range(RangeRequest::prefix(prefix)).await?.kvs;
    let mut n = 0;
    for chunk in kvs.chunks(256) {
        let mut compares = vec![];
        let mut ops = vec![];
        for kv in chunk.iter().filter(|kv| !keep(&kv.value)) {
            compares.push(typed::unchanged(&kv.key, kv.mod_revision));
            ops.push(Op::delete(kv.key.clone()));
        }
        if ops.is_empty() {
            continue;
        }
        // A message received meanwhile is still to be deleted: one by one.
        if !ctl
            .store
            .txn(Txn::when(compares, ops.clone()))
            .await?
            .succeeded
        {
            for op in ops {
                ctl.store.txn(Txn::when(vec![], vec![op])).await?;
            }
        }
        n += chunk.len();
    }
    Ok(n)
}

/// DeleteQueue: the queue and its messages; its name is held a minute.
pub async fn delete_queue(ctl: &Control, scope: &Scope, name: &str) -> Result<()> {
    let q = queue(ctl, scope, name).await?;
    let key = keys::queue(scope, name);
    let txn = Txn::when(
        vec![typed::unchanged(&key, q.mod_revision)],
        vec![
            Op::delete(key),
            typed::put(&keys::deleted(scope, name), &now_ms(ctl)),
        ],
    );
    if !ctl.store.txn(txn).await?.succeeded {
        return Err(busy());
    }
    delete_under(ctl, &keys::messages_of(scope, name), |_| false).await?;
    delete_under(ctl, &keys::dedup_of(scope, name), |_| false).await?;
    Ok(())
}

/// PurgeQueue: every message sent before now, once a minute at most.
pub async fn purge(ctl: &Control, scope: &Scope, name: &str) -> Result<()> {
    let mut at = 0;
    update(ctl, scope, name, |q, now| {
        if q.purged_ms.is_some_and(|p| now - p < rules::PURGE_WAIT_MS) {
            return Err(SqsError::purge_in_progress(name).into());
        }
        q.purged_ms = Some(now);
        at = now;
        Ok(())
    })
    .await?;
    delete_under(ctl, &keys::messages_of(scope, name), |v| {
        serde_json::from_slice::<MessageRecord>(v).is_ok_and(|m| m.sent_ms > at)
    })
    .await?;
    Ok(())
}

/// What a queue holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub visible: usize,
    pub in_flight: usize,
    pub delayed: usize,
    /// When the oldest message was sent, in ms.
    pub oldest_ms: Option<i64>,
}

/// Counts a queue's messages, deleting those past retention.
pub async fn counts(ctl: &Control, scope: &Scope, q: &QueueRecord) -> Result<Counts> {
    let now = now_ms(ctl);
    let kvs = ctl
        .store
        .range(RangeRequest::prefix(keys::messages_of(scope, &q.name)))
        .await?
        .kvs;
    let mut c = Counts::default();
    for kv in &kvs {
        let m = typed::decode::<MessageRecord>(kv)?.value;
        if expired(q, &m, now) {
            drop_record(ctl, kv).await?;
            continue;
        }
        if m.in_flight(now) {
            c.in_flight += 1;
        } else if m.delayed(now) {
            c.delayed += 1;
        } else {
            c.visible += 1;
        }
        c.oldest_ms = Some(c.oldest_ms.map_or(m.sent_ms, |o: i64| o.min(m.sent_ms)));
    }
    Ok(c)
}

/// Deletes a record if it is still as read.
async fn drop_record(ctl: &Control, kv: &berth_store::KeyValue) -> Result<()> {
    ctl.store
        .txn(Txn::when(
            vec![typed::unchanged(&kv.key, kv.mod_revision)],
            vec![Op::delete(kv.key.clone())],
        ))
        .await?;
    Ok(())
}

fn expired(q: &QueueRecord, m: &MessageRecord, now: i64) -> bool {
    m.sent_ms + q.retention_ms() <= now
}

/// One message to send, checked.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub body: String,
    pub attributes: BTreeMap<String, AttrValue>,
    pub trace_header: Option<String>,
    pub delay: Option<i64>,
    pub group: Option<String>,
    pub dedup: Option<String>,
}

/// What a send answers.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: String,
    pub sequence: Option<String>,
    pub md5_body: String,
    pub md5_attributes: Option<String>,
}

/// Sends one message to `q` (read at its revision): stored before the
/// answer. A FIFO queue answers a deduplication id it saw within five
/// minutes with the first send's message, storing nothing.
pub async fn send(
    ctl: &Control,
    scope: &Scope,
    name: &str,
    sender: &str,
    msg: Outgoing,
) -> Result<Sent> {
    for _ in 0..RETRIES {
        let q = queue(ctl, scope, name).await?;
        let fifo = q.value.fifo();
        let now = now_ms(ctl);
        let mut compares = vec![typed::unchanged(&keys::queue(scope, name), q.mod_revision)];
        let mut ops = vec![];
        let mut dedup_key = None;
        if let (true, Some(d)) = (fifo, &msg.dedup) {
            let scope_key = if q
                .value
                .attributes
                .get("DeduplicationScope")
                .map(String::as_str)
                == Some("messageGroup")
            {
                format!("{}/{d}", msg.group.clone().unwrap_or_default())
            } else {
                d.clone()
            };
            let key = keys::dedup(scope, name, &scope_key);
            let seen = typed::get::<(i64, String, String)>(&*ctl.store, &key).await?;
            if let Some(s) = &seen {
                let (at, id, seq) = &s.value;
                if now - at < rules::DEDUP_WINDOW_MS {
                    return Ok(Sent {
                        id: id.clone(),
                        sequence: Some(seq.clone()),
                        md5_body: rules::md5_body(&msg.body),
                        md5_attributes: rules::md5_attributes(&msg.attributes),
                    });
                }
            }
            compares.push(typed::unchanged(&key, seen.map_or(0, |s| s.mod_revision)));
            dedup_key = Some(key);
        }
        let sequence = next_sequence(now);
        let id = uuid::Uuid::new_v4().to_string();
        // FIFO queues take no per-message delay (refused earlier), but
        // their own DelaySeconds applies.
        let delay = msg.delay.unwrap_or_else(|| q.value.delay_seconds());
        let record = MessageRecord {
            id: id.clone(),
            body: msg.body.clone(),
            attributes: msg.attributes.clone(),
            trace_header: msg.trace_header.clone(),
            sender: sender.to_string(),
            sent_ms: now,
            visible_ms: now + delay * 1000,
            receive_count: 0,
            first_receive_ms: None,
            receipt: None,
            group_id: msg.group.clone(),
            dedup_id: msg.dedup.clone(),
            sequence: sequence.clone(),
            dead_letter_source: None,
        };
        let key = keys::message(scope, name, &sequence);
        compares.push(typed::unchanged(&key, 0));
        ops.push(typed::put(&key, &record));
        if let Some(k) = dedup_key {
            ops.push(typed::put(&k, &(now, id.clone(), sequence.clone())));
        }
        if ctl.store.txn(Txn::when(compares, ops)).await?.succeeded {
            return Ok(Sent {
                id,
                sequence: fifo.then_some(sequence),
                md5_body: rules::md5_body(&msg.body),
                md5_attributes: rules::md5_attributes(&msg.attributes),
            });
        }
    }
    Err(busy())
}

/// A received message and its receipt handle.
#[derive(Debug, Clone)]
pub struct Received {
    pub message: MessageRecord,
    pub receipt_handle: String,
}

/// ReceiveMessage: up to `max` messages, each hidden for `visibility`
/// seconds; waits up to `wait` seconds for one when there are none.
pub async fn receive(
    ctl: &Control,
    scope: &Scope,
    name: &str,
    max: usize,
    visibility: Option<i64>,
    wait: Option<i64>,
) -> Result<Vec<Received>> {
    let first = queue(ctl, scope, name).await?;
    let wait = wait.unwrap_or_else(|| first.value.wait_time_seconds());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.max(0) as u64);
    let prefix = keys::messages_of(scope, name);
    loop {
        let q = queue(ctl, scope, name).await?.value;
        let (got, revision, next_visible) = receive_once(ctl, scope, &q, max, visibility).await?;
        if !got.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(got);
        }
        // Nothing to take: wait for a send (on any server), for a hidden
        // message to show again, or for the poll to end.
        let mut until = deadline;
        if let Some(v) = next_visible {
            let in_ms = (v - now_ms(ctl)).max(0) as u64;
            until = until.min(tokio::time::Instant::now() + Duration::from_millis(in_ms + 5));
        }
        let mut events = ctl.store.watch(&prefix, revision + 1);
        let woke = async {
            use futures::StreamExt;
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(ev) if ev.kind == berth_store::EventKind::Put => return,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout_at(until, woke).await;
    }
}

/// One pass over a queue: the messages taken, the revision read at, and
/// when the next hidden message shows.
async fn receive_once(
    ctl: &Control,
    scope: &Scope,
    q: &QueueRecord,
    max: usize,
    visibility: Option<i64>,
) -> Result<(Vec<Received>, i64, Option<i64>)> {
    let now = now_ms(ctl);
    let range = ctl
        .store
        .range(RangeRequest::prefix(keys::messages_of(scope, &q.name)))
        .await?;
    let visibility = visibility.unwrap_or_else(|| q.visibility_timeout());
    let redrive = q.redrive();
    let fifo = q.fifo();
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    let mut next_visible: Option<i64> = None;
    let mut out = vec![];
    for kv in &range.kvs {
        if out.len() >= max {
            break;
        }
        let m = typed::decode::<MessageRecord>(kv)?.value;
        let group = m.group_id.clone().unwrap_or_default();
        if expired(q, &m, now) {
            drop_record(ctl, kv).await?;
            continue;
        }
        if m.visible_ms > now {
            next_visible = Some(next_visible.map_or(m.visible_ms, |n: i64| n.min(m.visible_ms)));
            if fifo {
                blocked.insert(group);
            }
            continue;
        }
        if fifo && blocked.contains(&group) {
            continue;
        }
        if let Some(r) = &redrive {
            if m.receive_count >= r.max_receive_count
                && dead_letter(
                    ctl,
                    scope,
                    q,
                    kv.key.as_str(),
                    kv.mod_revision,
                    &m,
                    &r.target_arn,
                )
                .await?
            {
                continue;
            }
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut taken = m.clone();
        taken.visible_ms = now + visibility * 1000;
        taken.receive_count += 1;
        taken.first_receive_ms.get_or_insert(now);
        taken.receipt = Some(token.clone());
        let txn = Txn::when(
            vec![typed::unchanged(&kv.key, kv.mod_revision)],
            vec![typed::put(&kv.key, &taken)],
        );
        if ctl.store.txn(txn).await?.succeeded {
            let receipt_handle = Receipt {
                queue: q.name.clone(),
                sequence: m.sequence.clone(),
                token,
            }
            .encode();
            out.push(Received {
                message: taken,
                receipt_handle,
            });
        } else if fifo {
            // Another receiver took it: the rest of its group waits.
            blocked.insert(group);
        }
    }
    Ok((out, range.revision, next_visible))
}

/// Moves a message that was received too often to the dead-letter queue;
/// false when it could not (the target is gone, or the message changed).
async fn dead_letter(
    ctl: &Control,
    scope: &Scope,
    source: &QueueRecord,
    key: &str,
    revision: i64,
    m: &MessageRecord,
    target_arn: &str,
) -> Result<bool> {
    let Some((_, _, target)) = rules::parse_queue_arn(target_arn) else {
        return Ok(false);
    };
    let Some(dlq) = typed::get::<QueueRecord>(&*ctl.store, &keys::queue(scope, target)).await?
    else {
        return Ok(false);
    };
    let sequence = next_sequence(now_ms(ctl));
    let moved = MessageRecord {
        visible_ms: m.sent_ms,
        receive_count: 0,
        first_receive_ms: None,
        receipt: None,
        sequence: sequence.clone(),
        dead_letter_source: Some(rules::queue_arn(
            &scope.region,
            &scope.account,
            &source.name,
        )),
        ..m.clone()
    };
    let new_key = keys::message(scope, target, &sequence);
    let txn = Txn::when(
        vec![
            typed::unchanged(key, revision),
            typed::unchanged(&keys::queue(scope, target), dlq.mod_revision),
            typed::unchanged(&new_key, 0),
        ],
        vec![Op::delete(key.to_string()), typed::put(&new_key, &moved)],
    );
    Ok(ctl.store.txn(txn).await?.succeeded)
}

/// The message a receipt handle names, at its revision, if that receipt
/// is still its latest.
async fn by_receipt(
    ctl: &Control,
    scope: &Scope,
    name: &str,
    handle: &str,
) -> Result<(String, Option<Versioned<MessageRecord>>, Receipt)> {
    let receipt = Receipt::decode(handle, name)?;
    let key = keys::message(scope, name, &receipt.sequence);
    let m = typed::get::<MessageRecord>(&*ctl.store, &key).await?;
    Ok((key, m, receipt))
}

/// DeleteMessage. A handle from an earlier receive of a message that was
/// received again deletes nothing, as on SQS's standard queues; on a FIFO
/// queue it fails as expired.
pub async fn delete_message(
    ctl: &Control,
    scope: &Scope,
    q: &QueueRecord,
    handle: &str,
) -> Result<()> {
    for _ in 0..RETRIES {
        let (key, m, receipt) = by_receipt(ctl, scope, &q.name, handle).await?;
        let Some(m) = m else {
            return Ok(());
        };
        if m.value.receipt.as_deref() != Some(receipt.token.as_str()) {
            if q.fifo() {
                return Err(expired_handle(handle).into());
            }
            return Ok(());
        }
        let txn = Txn::when(
            vec![typed::unchanged(&key, m.mod_revision)],
            vec![Op::delete(key.clone())],
        );
        if ctl.store.txn(txn).await?.succeeded {
            return Ok(());
        }
    }
    Err(busy())
}

fn expired_handle(handle: &str) -> SqsError {
    SqsError::value("ReceiptHandle", handle, "The receipt handle has expired.")
}

/// ChangeMessageVisibility: hides an in-flight message for `timeout`
/// seconds from now (0 shows it at once); the total stays within 12 hours
/// of its receive.
pub async fn change_visibility(
    ctl: &Control,
    scope: &Scope,
    q: &QueueRecord,
    handle: &str,
    timeout: i64,
) -> Result<()> {
    for _ in 0..RETRIES {
        let now = now_ms(ctl);
        let (key, m, receipt) = by_receipt(ctl, scope, &q.name, handle).await?;
        let Some(m) = m else {
            return Err(SqsError::value(
                "ReceiptHandle",
                handle,
                "Message does not exist or is not available for visibility timeout change.",
            )
            .into());
        };
        if m.value.receipt.as_deref() != Some(receipt.token.as_str()) {
            return Err(expired_handle(handle).into());
        }
        if !m.value.in_flight(now) {
            return Err(SqsError::not_inflight().into());
        }
        let received = m.value.first_receive_ms.unwrap_or(now);
        if now + timeout * 1000 - received > 43_200_000 {
            return Err(SqsError::value(
                "VisibilityTimeout",
                timeout,
                "Total VisibilityTimeout for the message is beyond the limit [43200 seconds]",
            )
            .into());
        }
        let mut changed = m.value.clone();
        changed.visible_ms = now + timeout * 1000;
        let txn = Txn::when(
            vec![typed::unchanged(&key, m.mod_revision)],
            vec![typed::put(&key, &changed)],
        );
        if ctl.store.txn(txn).await?.succeeded {
            return Ok(());
        }
    }
    Err(busy())
}

/// The queues whose redrive policy names `name` as their dead-letter queue.
pub async fn dead_letter_sources(ctl: &Control, scope: &Scope, name: &str) -> Result<Vec<String>> {
    let arn = rules::queue_arn(&scope.region, &scope.account, name);
    Ok(queues(ctl, scope)
        .await?
        .into_iter()
        .filter(|q| q.redrive().is_some_and(|r| r.target_arn == arn))
        .map(|q| q.name)
        .collect())
}

/// Drops deduplication ids older than the window.
async fn forget_dedup(ctl: &Control, scope: &Scope, q: &QueueRecord) -> Result<()> {
    let now = now_ms(ctl);
    delete_under(ctl, &keys::dedup_of(scope, &q.name), |v| {
        serde_json::from_slice::<(i64, String, String)>(v)
            .is_ok_and(|(at, _, _)| now - at < rules::DEDUP_WINDOW_MS)
    })
    .await?;
    Ok(())
}

/// Publishes every queue's AWS/SQS gauges of `scope` and drops what has
/// outlived its retention: run on the leader with the region's alarms, so
/// an alarm on queue depth judges a fresh count.
pub async fn publish_metrics(ctl: &Control, scope: &Scope) -> Result<()> {
    let qs = queues(ctl, scope).await?;
    let mut data = vec![];
    let at = ctl.clock.now() as i64;
    for q in &qs {
        let c = counts(ctl, scope, q).await?;
        if q.fifo() {
            forget_dedup(ctl, scope, q).await?;
        }
        let age = c.oldest_ms.map_or(0, |o| (at * 1000 - o).max(0) / 1000);
        data.extend(
            berth_domain::usage_metrics::queue_gauges(
                &q.name,
                c.visible as f64,
                c.in_flight as f64,
                c.delayed as f64,
                age as f64,
                at,
            )
            .into_iter()
            .map(|d| crate::cloudwatch::stored(berth_domain::usage_metrics::SQS, d)),
        );
    }
    crate::cloudwatch::publish(ctl, scope, data).await;
    Ok(())
}

/// Records what a request did to a queue (AWS/SQS counters).
pub async fn count_activity(ctl: &Control, scope: &Scope, queue: &str, counters: &[(&str, f64)]) {
    let at = ctl.clock.now() as i64;
    let data = berth_domain::usage_metrics::queue_counters(queue, counters, at)
        .into_iter()
        .map(|d| crate::cloudwatch::stored(berth_domain::usage_metrics::SQS, d))
        .collect();
    crate::cloudwatch::publish(ctl, scope, data).await;
}
