//! etcd as the store, so that several processes (`berth server` replicas,
//! a standalone `berth lb`) share one: etcd's v3 API through its JSON
//! gateway (`POST /v3/...` on the client URL, keys and values in base64,
//! 64-bit numbers as strings), which needs no gRPC stack or protoc.
//!
//! etcd's revisions start at 1 with nothing written; the trait's start at 0
//! (docs/adr/0001). Every revision crossing this module is shifted by one,
//! so callers see the same numbers from every backend. Leases, their
//! expiry, compaction and watches are etcd's own.

use crate::{
    Compare, Event, EventKind, KeyValue, Lease, LeaseId, Op, RangeRequest, RangeResponse, Revision,
    Store, StoreError, Txn, TxnResult, WatchStream,
};
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long one request may take before the endpoint counts as down.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A store in an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port` of each member.
    endpoints: Vec<String>,
    /// The member last reached, tried first.
    current: AtomicUsize,
    /// The newest revision any answer carried (the trait's numbering): a
    /// watch "from now" starts after it, since `watch` cannot ask etcd.
    seen: AtomicI64,
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn unb64(v: &Value) -> Result<Vec<u8>, StoreError> {
    match v.as_str() {
        None => Ok(vec![]),
        Some(s) => B64
            .decode(s)
            .map_err(|e| StoreError::Etcd(format!("bad base64 from etcd: {e}"))),
    }
}

/// A 64-bit number as the gateway writes it (a string; absent when 0).
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// etcd's revision as the trait's.
fn ours(etcd: i64) -> Revision {
    (etcd - 1).max(0)
}

/// The trait's revision as etcd's (0 stays 0: "the key does not exist").
fn theirs(rev: Revision) -> i64 {
    if rev > 0 {
        rev + 1
    } else {
        0
    }
}

/// The first key after every key starting with `prefix` (etcd's range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every key: etcd's "\0" range end.
    vec![0]
}

fn key_value(v: &Value) -> Result<KeyValue, StoreError> {
    let key = unb64(&v["key"])?;
    let key = String::from_utf8(key).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        reason: "key is not UTF-8".into(),
    })?;
    let lease = int(&v["lease"]);
    Ok(KeyValue {
        key,
        value: unb64(&v["value"])?,
        create_revision: ours(int(&v["create_revision"])),
        mod_revision: ours(int(&v["mod_revision"])),
        version: int(&v["version"]),
        lease: (lease != 0).then_some(lease),
    })
}

fn op_json(op: &Op) -> Value {
    match op {
        Op::Put { key, value, lease } => {
            let mut put = json!({"key": b64(key.as_bytes()), "value": b64(value)});
            if let Some(lease) = lease {
                put["lease"] = json!(lease.to_string());
            }
            json!({"request_put": put})
        }
        Op::Delete { key } => json!({"request_delete_range": {"key": b64(key.as_bytes())}}),
    }
}

fn compare_json(c: &Compare) -> Value {
    match c {
        Compare::ModRevision { key, revision } => json!({
            "target": "MOD", "result": "EQUAL", "key": b64(key.as_bytes()),
            "mod_revision": theirs(*revision).to_string(),
        }),
        // etcd fails a value compare on a missing key, as the trait asks.
        Compare::Value { key, value } => json!({
            "target": "VALUE", "result": "EQUAL", "key": b64(key.as_bytes()), "value": b64(value),
        }),
    }
}

impl EtcdStore {
    /// Connects to the members in `endpoints` (`host:port`, comma-separated)
    /// and checks that one answers.
    pub async fn connect(endpoints: &str) -> Result<EtcdStore, StoreError> {
        let endpoints: Vec<String> = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| format!("http://{}", e.trim_start_matches("http://")))
            .collect();
        if endpoints.is_empty() {
            return Err(StoreError::Etcd("no etcd endpoint given".into()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        let store = EtcdStore {
            inner: Arc::new(Inner {
                client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
                endpoints,
                current: AtomicUsize::new(0),
                seen: AtomicI64::new(0),
            }),
        };
        store.current_revision().await?;
        Ok(store)
    }

    /// Sends a request to a member, trying the others when it cannot be
    /// reached; the answer's body.
    async fn send(&self, path: &str, body: &Value) -> Result<Incoming, StoreError> {
        let inner = &self.inner;
        let body = Bytes::from(body.to_string());
        let n = inner.endpoints.len();
        let first = inner.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for i in 0..n {
            let at = (first + i) % n;
            let req = hyper::Request::post(format!("{}{path}", inner.endpoints[at]))
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
                .map_err(|e| StoreError::Etcd(e.to_string()))?;
            match tokio::time::timeout(CALL_TIMEOUT, inner.client.request(req)).await {
                Ok(Ok(resp)) => {
                    inner.current.store(at, Ordering::Relaxed);
                    let status = resp.status();
                    let body = resp.into_body();
                    if status.is_success() {
                        return Ok(body);
                    }
                    let error = read_json(body).await?;
                    return Err(StoreError::Etcd(
                        error["message"]
                            .as_str()
                            .or(error["error"].as_str())
                            .unwrap_or("etcd refused the request")
                            .to_string(),
                    ));
                }
                Ok(Err(e)) => last = format!("{}: {e}", inner.endpoints[at]),
                Err(_) => last = format!("{}: no answer in {CALL_TIMEOUT:?}", inner.endpoints[at]),
            }
        }
        Err(StoreError::Etcd(format!("cannot reach etcd ({last})")))
    }

    /// One unary call: its JSON answer, with the revision it carries noted.
    async fn call(&self, path: &str, body: Value) -> Result<Value, StoreError> {
        let v = read_json(self.send(path, &body).await?).await?;
        self.note(&v["header"]);
        Ok(v)
    }

    fn note(&self, header: &Value) {
        let rev = ours(int(&header["revision"]));
        self.inner.seen.fetch_max(rev, Ordering::Relaxed);
    }
}

async fn read_json(body: Incoming) -> Result<Value, StoreError> {
    let bytes = tokio::time::timeout(CALL_TIMEOUT, body.collect())
        .await
        .map_err(|_| StoreError::Etcd("etcd's answer stalled".into()))?
        .map_err(|e| StoreError::Etcd(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Etcd(format!("etcd's answer: {e}")))
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let v = self
            .call("/v3/kv/range", json!({"key": b64(key.as_bytes())}))
            .await?;
        match v["kvs"].as_array().and_then(|kvs| kvs.first()) {
            Some(kv) => Ok(Some(key_value(kv)?)),
            None => Ok(None),
        }
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        let start = match &req.start_after {
            Some(after) if after.as_str() >= req.prefix.as_str() => {
                let mut k = after.as_bytes().to_vec();
                k.push(0);
                k
            }
            _ => req.prefix.as_bytes().to_vec(),
        };
        let mut body = json!({
            "key": b64(&start),
            "range_end": b64(&prefix_end(req.prefix.as_bytes())),
        });
        if let Some(limit) = req.limit {
            if limit == 0 {
                // etcd reads 0 as "no limit".
                let revision = self.current_revision().await?;
                return Ok(RangeResponse {
                    kvs: vec![],
                    more: false,
                    revision,
                });
            }
            body["limit"] = json!(limit.to_string());
        }
        let v = self.call("/v3/kv/range", body).await?;
        let kvs = v["kvs"]
            .as_array()
            .map(|kvs| kvs.iter().map(key_value).collect::<Result<Vec<_>, _>>())
            .transpose()?
            .unwrap_or_default();
        Ok(RangeResponse {
            kvs,
            more: v["more"].as_bool().unwrap_or(false),
            revision: ours(int(&v["header"]["revision"])),
        })
    }

    async fn last(&self, prefix: &str) -> Result<Option<KeyValue>, StoreError> {
        let body = json!({
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "limit": "1",
            "sort_order": "DESCEND",
            "sort_target": "KEY",
        });
        let v = self.call("/v3/kv/range", body).await?;
        match v["kvs"].as_array().and_then(|kvs| kvs.first()) {
            Some(kv) => Ok(Some(key_value(kv)?)),
            None => Ok(None),
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let body = json!({
            "compare": txn.compares.iter().map(compare_json).collect::<Vec<_>>(),
            "success": txn.success.iter().map(op_json).collect::<Vec<_>>(),
            "failure": txn.failure.iter().map(op_json).collect::<Vec<_>>(),
        });
        match self.call("/v3/kv/txn", body).await {
            Ok(v) => Ok(TxnResult {
                succeeded: v["succeeded"].as_bool().unwrap_or(false),
                revision: ours(int(&v["header"]["revision"])),
            }),
            Err(StoreError::Etcd(message)) => Err(if message.contains("lease not found") {
                let lease = txn
                    .success
                    .iter()
                    .chain(&txn.failure)
                    .find_map(|op| match op {
                        Op::Put {
                            lease: Some(id), ..
                        } => Some(*id),
                        _ => None,
                    })
                    .unwrap_or(0);
                StoreError::LeaseNotFound(lease)
            } else if message.contains("duplicate key") || message.contains("too many operations") {
                StoreError::InvalidTxn(message)
            } else {
                StoreError::Etcd(message)
            }),
            Err(e) => Err(e),
        }
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        // A range over one key that cannot exist: only the header matters.
        let v = self
            .call(
                "/v3/kv/range",
                json!({"key": b64(b"\0"), "count_only": true}),
            )
            .await?;
        Ok(ours(int(&v["header"]["revision"])))
    }

    fn watch(&self, prefix: &str, from: Revision) -> WatchStream {
        let from = if from > 0 {
            from
        } else {
            self.inner.seen.load(Ordering::Relaxed) + 1
        };
        let request = json!({"create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "start_revision": theirs(from).to_string(),
        }});
        let state = Watching::Start {
            store: self.clone(),
            request,
            from,
        };
        futures::stream::unfold(state, next_event).boxed()
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let body = json!({"revision": theirs(revision.max(1)).to_string()});
        match self.call("/v3/kv/compaction", body).await {
            Ok(_) => Ok(()),
            // Compacted already: what was asked for holds.
            Err(StoreError::Etcd(m)) if m.contains("has been compacted") => Ok(()),
            Err(StoreError::Etcd(m)) if m.contains("future revision") => {
                Err(StoreError::FutureRevision {
                    requested: revision,
                    current: self.current_revision().await?,
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<Lease, StoreError> {
        // etcd counts whole seconds (and raises a TTL below its minimum).
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let v = self
            .call("/v3/lease/grant", json!({"TTL": secs.to_string()}))
            .await?;
        Ok(Lease {
            id: int(&v["ID"]),
            ttl: Duration::from_secs(int(&v["TTL"]).max(secs) as u64),
        })
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<Duration, StoreError> {
        // The gateway's keep-alive is a stream; its first answer is enough.
        let mut body = self
            .send("/v3/lease/keepalive", &json!({"ID": id.to_string()}))
            .await?;
        let mut buf = BytesMut::new();
        loop {
            if let Some(v) = next_json(&mut buf)? {
                let ttl = int(&v["result"]["TTL"]);
                self.note(&v["result"]["header"]);
                return if ttl > 0 {
                    Ok(Duration::from_secs(ttl as u64))
                } else {
                    Err(StoreError::LeaseNotFound(id))
                };
            }
            match tokio::time::timeout(CALL_TIMEOUT, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        buf.extend_from_slice(data);
                    }
                }
                Ok(Some(Err(e))) => return Err(StoreError::Etcd(e.to_string())),
                Ok(None) => return Err(StoreError::Etcd("etcd ended a keep-alive".into())),
                Err(_) => return Err(StoreError::Etcd("etcd's keep-alive stalled".into())),
            }
        }
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<(), StoreError> {
        match self
            .call("/v3/lease/revoke", json!({"ID": id.to_string()}))
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Etcd(m)) if m.contains("lease not found") => {
                Err(StoreError::LeaseNotFound(id))
            }
            Err(e) => Err(e),
        }
    }
}

/// The next whole JSON message of a gateway stream (one per line).
fn next_json(buf: &mut BytesMut) -> Result<Option<Value>, StoreError> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let line = buf.split_to(end + 1);
    let line = &line[..end];
    if line.iter().all(u8::is_ascii_whitespace) {
        return next_json(buf);
    }
    serde_json::from_slice(line)
        .map(Some)
        .map_err(|e| StoreError::Etcd(format!("etcd's watch stream: {e}")))
}

enum Watching {
    Start {
        store: EtcdStore,
        request: Value,
        from: Revision,
    },
    Streaming {
        body: Incoming,
        buf: BytesMut,
        events: VecDeque<Event>,
        /// Where the watch started, for a compaction's error.
        from: Revision,
    },
    Done,
}

async fn next_event(mut state: Watching) -> Option<(Result<Event, StoreError>, Watching)> {
    loop {
        state = match state {
            Watching::Done => return None,
            Watching::Start {
                store,
                request,
                from,
            } => match store.send("/v3/watch", &request).await {
                Ok(body) => Watching::Streaming {
                    body,
                    buf: BytesMut::new(),
                    events: VecDeque::new(),
                    from,
                },
                Err(e) => return Some((Err(e), Watching::Done)),
            },
            Watching::Streaming {
                mut body,
                mut buf,
                mut events,
                from,
            } => {
                if let Some(event) = events.pop_front() {
                    return Some((
                        Ok(event),
                        Watching::Streaming {
                            body,
                            buf,
                            events,
                            from,
                        },
                    ));
                }
                match next_json(&mut buf) {
                    Err(e) => return Some((Err(e), Watching::Done)),
                    Ok(Some(message)) => {
                        let result = &message["result"];
                        if result["canceled"].as_bool().unwrap_or(false) {
                            let compacted = int(&result["compact_revision"]);
                            let error = if compacted > 0 {
                                StoreError::Compacted {
                                    requested: from,
                                    compacted: ours(compacted),
                                }
                            } else {
                                StoreError::Etcd(
                                    result["cancel_reason"]
                                        .as_str()
                                        .unwrap_or("etcd cancelled the watch")
                                        .to_string(),
                                )
                            };
                            return Some((Err(error), Watching::Done));
                        }
                        if let Some(error) = message["error"].as_object() {
                            let reason = error
                                .get("message")
                                .and_then(Value::as_str)
                                .unwrap_or("etcd ended the watch");
                            return Some((Err(StoreError::Etcd(reason.into())), Watching::Done));
                        }
                        for e in result["events"].as_array().into_iter().flatten() {
                            let kind = match e["type"].as_str() {
                                Some("DELETE") => EventKind::Delete,
                                _ => EventKind::Put,
                            };
                            match key_value(&e["kv"]) {
                                Ok(kv) => events.push_back(Event { kind, kv }),
                                Err(err) => return Some((Err(err), Watching::Done)),
                            }
                        }
                        Watching::Streaming {
                            body,
                            buf,
                            events,
                            from,
                        }
                    }
                    Ok(None) => match body.frame().await {
                        Some(Ok(frame)) => {
                            if let Some(data) = frame.data_ref() {
                                buf.extend_from_slice(data);
                            }
                            Watching::Streaming {
                                body,
                                buf,
                                events,
                                from,
                            }
                        }
                        Some(Err(e)) => {
                            return Some((Err(StoreError::Etcd(e.to_string())), Watching::Done))
                        }
                        None => {
                            return Some((
                                Err(StoreError::Etcd("etcd ended the watch".into())),
                                Watching::Done,
                            ))
                        }
                    },
                }
            }
        };
    }
}
