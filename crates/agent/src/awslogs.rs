//! The awslogs log driver, done by the agent: a container's output is
//! copied to its log file as for any container (`logs`), and a shipper
//! sends the file's lines to the server's CloudWatch Logs API
//! (PutLogEvents) from a saved offset. The file is the buffer: nothing is
//! dropped while the server is away (whatever `mode` says), and an agent
//! restart carries on from the offset. Calls are signed with the task's
//! execution role (a session the server issues), or without one with the
//! host's own credentials, as ECS's agent uses the instance role.
//!
//! ECS names the stream `prefix/container/task-id` (`awslogs-stream-prefix`),
//! else it is the container's id; `awslogs-create-group` makes the group
//! (with `logs:CreateLogGroup`); without it a missing group fails the
//! container, in Logs' words.

use crate::{EcsClient, EcsError, ServerAsk};
use berth_wire::ecs as w;
use berth_wire::sigv4::Credentials;
use regex::Regex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What Docker's awslogs driver and ECS accept.
const OPTIONS: [&str; 16] = [
    "awslogs-group",
    "awslogs-region",
    "awslogs-stream-prefix",
    "awslogs-stream",
    "awslogs-create-group",
    "awslogs-create-stream",
    "awslogs-datetime-format",
    "awslogs-multiline-pattern",
    "awslogs-endpoint",
    "awslogs-credentials-endpoint",
    "awslogs-force-flush-interval-seconds",
    "awslogs-max-buffered-events",
    "awslogs-format",
    "mode",
    "max-buffer-size",
    "tag",
];

/// Where one container's output goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub group: String,
    /// None: the container's id, known once it is created.
    pub stream: Option<String>,
    pub create_group: bool,
    /// `awslogs-create-stream` (true unless false): without it the stream
    /// must exist.
    pub create_stream: bool,
    /// A line matching it starts an event; others join the one before.
    pub start: Option<Regex>,
}

fn bad(why: impl std::fmt::Display) -> String {
    format!("CannotStartContainerError: awslogs: {why}")
}

/// The awslogs target of `def` in task `task_id`, if it logs with awslogs;
/// its options as ECS and Docker check them.
pub fn target(
    def: &w::ContainerDefinition,
    task_id: &str,
    region: &str,
) -> Result<Option<Target>, String> {
    let Some(log) = def
        .log_configuration
        .as_ref()
        .filter(|l| l.log_driver.as_deref() == Some("awslogs"))
    else {
        return Ok(None);
    };
    let options = log.options.clone().unwrap_or_default();
    for k in options.keys() {
        if !OPTIONS.contains(&k.as_str()) {
            return Err(bad(format!("unknown log opt '{k}' for awslogs log driver")));
        }
    }
    let group = options
        .get("awslogs-group")
        .ok_or_else(|| bad("the awslogs-group option is required"))?
        .clone();
    berth_domain::logs::check_group_name(&group).map_err(|e| bad(e.message))?;
    if let Some(r) = options.get("awslogs-region").filter(|r| *r != region) {
        return Err(bad(format!(
            "awslogs-region {r}: this host's servers serve region {region}"
        )));
    }
    // Options Docker knows that would change nothing here: refused, not
    // dropped.
    for (k, why) in [
        (
            "awslogs-endpoint",
            "the output goes to this cluster's Logs API",
        ),
        (
            "awslogs-credentials-endpoint",
            "the output is signed with the task's execution role or the host's key",
        ),
        (
            "awslogs-force-flush-interval-seconds",
            "lines are sent as soon as they are read",
        ),
        (
            "awslogs-max-buffered-events",
            "lines wait on disk, unbounded, until they are sent",
        ),
        ("awslogs-format", "events are sent as plain text"),
        (
            "tag",
            "the stream is named by awslogs-stream-prefix or awslogs-stream",
        ),
    ] {
        if options.contains_key(k) {
            return Err(bad(format!("{k} is not supported: {why}")));
        }
    }
    let flag = |k: &str, default: bool| match options.get(k).map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(bad(format!("{k} must be true or false, not {v}"))),
    };
    let create_group = flag("awslogs-create-group", false)?;
    let create_stream = flag("awslogs-create-stream", true)?;
    match options.get("mode").map(String::as_str) {
        None | Some("blocking" | "non-blocking") => {}
        Some(m) => return Err(bad(format!("mode {m}: must be blocking or non-blocking"))),
    }
    if let Some(size) = options.get("max-buffer-size") {
        let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        if digits.is_empty() || digits.parse::<u64>().is_err() {
            return Err(bad(format!("max-buffer-size {size} is not a size")));
        }
    }
    let start =
        match (
            options.get("awslogs-datetime-format"),
            options.get("awslogs-multiline-pattern"),
        ) {
            (Some(_), Some(_)) => return Err(bad(
                "you cannot configure both awslogs-datetime-format and awslogs-multiline-pattern",
            )),
            (Some(f), None) => Some(
                Regex::new(&format!("^{}", strftime_pattern(f)))
                    .map_err(|e| bad(format!("awslogs-datetime-format: {e}")))?,
            ),
            (None, Some(p)) => Some(
                Regex::new(&format!("^{p}"))
                    .map_err(|e| bad(format!("awslogs-multiline-pattern: {e}")))?,
            ),
            (None, None) => None,
        };
    let stream = berth_domain::logs::awslogs_destination(
        &options,
        def.name.as_deref().unwrap_or_default(),
        task_id,
    )
    .and_then(|(_, stream)| stream);
    if let Some(s) = &stream {
        berth_domain::logs::check_stream_name(s).map_err(|e| bad(e.message))?;
    }
    Ok(Some(Target {
        group,
        stream,
        create_group,
        create_stream,
        start,
    }))
}

/// The regular expression Docker makes of an awslogs-datetime-format.
fn strftime_pattern(f: &str) -> String {
    let mut out = String::new();
    let mut chars = f.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push_str(&regex::escape(&c.to_string()));
            continue;
        }
        let part = match chars.next() {
            Some('Y') => r"\d{4}",
            Some('y' | 'm' | 'd' | 'H' | 'I' | 'M' | 'S' | 'U' | 'W') => r"\d{2}",
            Some('e') => r"[ \d]\d",
            Some('j') => r"\d{3}",
            Some('f') => r"\d{6}",
            Some('L') => r"\.\d{3}",
            Some('b' | 'a') => r"[A-Za-z]{3}",
            Some('B' | 'A') => r"[A-Za-z]+",
            Some('p') => r"[AP]M",
            Some('Z') => r"[A-Za-z_]+(?:/[A-Za-z_]+)*",
            Some('z') => r"[+-]\d{4}",
            Some('%') => "%",
            Some(other) => {
                out.push('%');
                out.push(other);
                continue;
            }
            None => "%",
        };
        out.push_str(part);
    }
    out
}

/// What every shipper of this agent shares.
pub struct Shipping {
    /// The servers' Logs API, any of which will do.
    pub servers: Vec<EcsClient>,
    /// The host's own credentials, for tasks without an execution role.
    pub own: Option<Credentials>,
    pub asks: mpsc::UnboundedSender<ServerAsk>,
}

/// A running shipper: tell it the container's output is all in its file
/// (its copy has ended for good), then wait for it.
pub struct Shipper {
    pub done: Arc<watch::Sender<bool>>,
    pub handle: tokio::task::JoinHandle<()>,
}

/// One container's shipping.
pub struct Job {
    pub task_arn: String,
    pub execution_role: bool,
    pub target: Target,
    /// The stream when the target names none: the container's id.
    pub stream: String,
    /// The container's log file, and where the shipped offset is kept.
    pub file: PathBuf,
}

impl Shipping {
    /// Makes the group (if asked to) and the stream, before the container
    /// starts: a failure is the container's.
    pub async fn prepare(&self, job: &Job) -> Result<(), String> {
        let client = self.client(job).await?;
        if job.target.create_group {
            let r: Result<serde_json::Value, _> = client
                .call(
                    "CreateLogGroup",
                    &serde_json::json!({"logGroupName": job.target.group}),
                )
                .await;
            match r {
                Ok(_) => {}
                Err(EcsError::Api { code, .. }) if code == "ResourceAlreadyExistsException" => {}
                Err(e) => return Err(format!("CannotStartContainerError: {e}")),
            }
        }
        if !job.target.create_stream {
            // The stream is the user's to make, as with Docker's driver:
            // until it exists, the shipper retries and says why.
            return Ok(());
        }
        let r: Result<serde_json::Value, _> = client
            .call(
                "CreateLogStream",
                &serde_json::json!({"logGroupName": job.target.group, "logStreamName": job.stream}),
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(EcsError::Api { code, .. }) if code == "ResourceAlreadyExistsException" => Ok(()),
            Err(e) => Err(format!("CannotStartContainerError: {e}")),
        }
    }

    /// A Logs client signing as the job's task may: its execution role's
    /// session, or the host.
    async fn client(&self, job: &Job) -> Result<EcsClient, String> {
        let creds = if job.execution_role {
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.asks
                .send(ServerAsk::Credentials {
                    task_arn: job.task_arn.clone(),
                    execution: true,
                    reply,
                })
                .map_err(|_| "the agent is stopping".to_string())?;
            let c = answer
                .await
                .map_err(|_| "the server connection went".to_string())??;
            Some(Credentials {
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                session_token: Some(c.session_token),
            })
        } else {
            self.own.clone()
        };
        let server = self
            .servers
            .first()
            .ok_or_else(|| "no server to ship logs to".to_string())?;
        Ok(server
            .clone()
            .for_service("logs", berth_wire::logs::TARGET_PREFIX)
            .with_credentials(creds))
    }

    /// Starts shipping `job`'s file.
    pub fn start(self: &Arc<Self>, job: Job) -> Shipper {
        let (done, rx) = watch::channel(false);
        let me = self.clone();
        let handle = tokio::spawn(async move { me.ship(job, rx).await });
        Shipper {
            done: Arc::new(done),
            handle,
        }
    }

    async fn ship(&self, job: Job, mut done: watch::Receiver<bool>) {
        let state = job.file.with_extension("shipped");
        let mut offset: u64 = std::fs::read_to_string(&state)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut client: Option<(EcsClient, std::time::Instant)> = None;
        let mut failures = 0u32;
        // A multi-line event waits for the next one to start, or for five
        // seconds of quiet (as Docker's driver flushes).
        let mut held: Option<std::time::Instant> = None;
        loop {
            let finished = *done.borrow();
            let bytes = read_from(&job.file, offset);
            let quiet = held.is_some_and(|t| t.elapsed() > Duration::from_secs(5));
            let (events, used) = events(&bytes, job.target.start.as_ref(), finished || quiet);
            if events.is_empty() {
                offset += used as u64;
                if finished {
                    return;
                }
                if !bytes.is_empty() && held.is_none() {
                    held = Some(std::time::Instant::now());
                }
                tokio::select! {
                    _ = done.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
            // Execution-role sessions last an hour: a new one every 20 minutes.
            if client
                .as_ref()
                .is_none_or(|(_, at)| at.elapsed() > Duration::from_secs(1200))
            {
                match self.client(&job).await {
                    Ok(c) => client = Some((c, std::time::Instant::now())),
                    Err(e) => {
                        tracing::warn!(task = %job.task_arn, error = %e, "awslogs: no credentials to ship with; retrying");
                        tokio::time::sleep(backoff(&mut failures)).await;
                        continue;
                    }
                }
            }
            held = None;
            let Some((c, _)) = &client else { continue };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let (batch, consumed) = batch(&events, now);
            let body = serde_json::json!({
                "logGroupName": job.target.group,
                "logStreamName": job.stream,
                "logEvents": batch,
            });
            match c.call::<_, serde_json::Value>("PutLogEvents", &body).await {
                Ok(_) => {
                    failures = 0;
                    offset += consumed as u64;
                    let _ = std::fs::write(&state, offset.to_string());
                }
                Err(EcsError::Api { code, message }) => {
                    tracing::warn!(task = %job.task_arn, %code, %message, "awslogs: PutLogEvents refused; retrying");
                    if code == "ExpiredTokenException" || code == "UnrecognizedClientException" {
                        client = None;
                    }
                    tokio::time::sleep(backoff(&mut failures)).await;
                }
                Err(e) => {
                    tracing::debug!(task = %job.task_arn, error = %e, "awslogs: server unreachable; retrying");
                    tokio::time::sleep(backoff(&mut failures)).await;
                }
            }
        }
    }
}

fn backoff(failures: &mut u32) -> Duration {
    *failures = failures.saturating_add(1);
    Duration::from_millis(100u64 << (*failures).min(6)).min(Duration::from_secs(5))
}

fn read_from(path: &std::path::Path, offset: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return vec![];
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return vec![];
    }
    let mut out = vec![];
    // At most 4 MiB at a time: a PutLogEvents takes 1 MiB.
    let _ = f.take(4 * 1024 * 1024).read_to_end(&mut out);
    out
}

/// The events in `bytes`, each with the bytes it ends at: complete lines
/// (and, `flush`ing, the last partial one), joined into multi-line events
/// when `start` says where events begin. An event is complete once the
/// next one starts; the last is held back until then unless flushing.
/// Returns the events and how many bytes may be skipped without one
/// (blank lines at the end).
fn events(bytes: &[u8], start: Option<&Regex>, flush: bool) -> (Vec<(String, usize)>, usize) {
    let end = match bytes.iter().rposition(|b| *b == b'\n') {
        _ if flush => bytes.len(),
        Some(p) => p + 1,
        None => 0,
    };
    let mut out: Vec<(String, usize)> = vec![];
    let mut at = 0usize;
    let mut pending: Option<(String, usize)> = None;
    // More than one PutLogEvents takes is read again next time: not made
    // into events now.
    let mut full = false;
    for line in bytes[..end].split_inclusive(|b| *b == b'\n') {
        if out.len() >= berth_domain::logs::MAX_BATCH_EVENTS {
            full = true;
            break;
        }
        at += line.len();
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        match start {
            None => {
                if !text.is_empty() {
                    out.push((text.to_string(), at));
                } else if let Some(last) = out.last_mut() {
                    last.1 = at;
                }
            }
            Some(re) => {
                if re.is_match(text) || pending.is_none() {
                    if let Some(p) = pending.take() {
                        out.push(p);
                    }
                    pending = Some((text.to_string(), at));
                } else if let Some(p) = pending.as_mut() {
                    p.0.push('\n');
                    p.0.push_str(text);
                    p.1 = at;
                }
            }
        }
    }
    if let Some(p) = pending.filter(|p| !p.0.is_empty()) {
        if flush && !full {
            out.push(p);
        }
    }
    let skip = if out.is_empty() && start.is_none() {
        at
    } else {
        0
    };
    (out, skip)
}

/// The first PutLogEvents' worth of `events`, stamped `now`, and the bytes
/// they cover.
fn batch(events: &[(String, usize)], now: i64) -> (Vec<serde_json::Value>, usize) {
    use berth_domain::logs::{EVENT_OVERHEAD, MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_EVENT_BYTES};
    // The request as JSON stays under a server's smallest body limit too
    // (escapes and each event's member names make it larger than what
    // Logs counts).
    const MAX_BODY: usize = 1_000_000;
    let mut out = vec![];
    let mut size = 0usize;
    let mut body = 0usize;
    let mut consumed = 0usize;
    for (msg, end) in events {
        let mut msg = msg.as_str();
        if msg.len() > MAX_EVENT_BYTES {
            let mut cut = MAX_EVENT_BYTES;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg = &msg[..cut];
        }
        let encoded = serde_json::to_string(msg).map_or(msg.len() * 6, |e| e.len()) + 40;
        if out.len() == MAX_BATCH_EVENTS
            || size + msg.len() + EVENT_OVERHEAD > MAX_BATCH_BYTES
            || (body + encoded > MAX_BODY && !out.is_empty())
        {
            break;
        }
        size += msg.len() + EVENT_OVERHEAD;
        body += encoded;
        out.push(serde_json::json!({"timestamp": now, "message": msg}));
        consumed = *end;
    }
    (out, consumed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn def(options: &[(&str, &str)]) -> w::ContainerDefinition {
        w::ContainerDefinition {
            name: Some("web".into()),
            log_configuration: Some(w::LogConfiguration {
                log_driver: Some("awslogs".into()),
                options: Some(
                    options
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>()
                        .into_iter()
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn options_make_the_stream_ecs_names_and_bad_ones_are_refused() {
        let t = target(
            &def(&[
                ("awslogs-group", "/ecs/app"),
                ("awslogs-region", "us-east-1"),
                ("awslogs-stream-prefix", "ecs"),
            ]),
            "abc",
            "us-east-1",
        )
        .expect("ok")
        .expect("awslogs");
        assert_eq!(t.stream.as_deref(), Some("ecs/web/abc"));
        assert!(!t.create_group);
        let e = target(
            &def(&[("awslogs-group", "g"), ("awslogs-nope", "1")]),
            "a",
            "r",
        )
        .expect_err("unknown");
        assert!(e.contains("unknown log opt 'awslogs-nope'"), "{e}");
        let e = target(&def(&[("awslogs-group", "bad group")]), "a", "r").expect_err("name");
        assert!(e.contains("logGroupName"), "{e}");
        assert!(target(&def(&[("awslogs-region", "r")]), "a", "r").is_err());
        assert!(target(
            &def(&[("awslogs-group", "g"), ("awslogs-region", "eu-west-1")]),
            "a",
            "us-east-1"
        )
        .is_err());
        assert!(target(
            &def(&[("awslogs-group", "g"), ("mode", "sometimes")]),
            "a",
            "r"
        )
        .is_err());
        for k in [
            "awslogs-credentials-endpoint",
            "awslogs-format",
            "tag",
            "awslogs-max-buffered-events",
        ] {
            let e = target(&def(&[("awslogs-group", "g"), (k, "x")]), "a", "r").expect_err(k);
            assert!(e.contains(&format!("{k} is not supported")), "{e}");
        }
        let t = target(
            &def(&[("awslogs-group", "g"), ("awslogs-create-stream", "false")]),
            "a",
            "r",
        )
        .expect("ok")
        .expect("awslogs");
        assert!(!t.create_stream);
        assert!(target(&w::ContainerDefinition::default(), "a", "r")
            .expect("none")
            .is_none());
    }

    #[test]
    fn lines_become_events_and_multiline_patterns_join_them() {
        let (ev, _) = events(b"one\ntwo\nthr", None, false);
        assert_eq!(ev, vec![("one".into(), 4), ("two".into(), 8)]);
        let (ev, _) = events(b"one\ntwo\nthr", None, true);
        assert_eq!(ev.last(), Some(&("thr".to_string(), 11)));
        let t = target(
            &def(&[
                ("awslogs-group", "g"),
                ("awslogs-datetime-format", "%Y-%m-%d %H:%M:%S"),
            ]),
            "a",
            "r",
        )
        .expect("ok")
        .expect("awslogs");
        let text =
            b"2026-12-06 10:00:00 boom\n  at frame 1\n  at frame 2\n2026-12-06 10:00:01 next\n";
        let (ev, _) = events(text, t.start.as_ref(), false);
        assert_eq!(
            ev,
            vec![(
                "2026-12-06 10:00:00 boom\n  at frame 1\n  at frame 2".into(),
                51
            )]
        );
        let (ev, _) = events(text, t.start.as_ref(), true);
        assert_eq!(ev.len(), 2);
        let (b, consumed) = batch(&ev, 7);
        assert_eq!((b.len(), consumed), (2, text.len()));
        assert_eq!(b[0]["timestamp"], 7);
    }

    /// A Logs API that keeps every PutLogEvents message it is sent, and
    /// fails the first `fail` calls (as a server that is away).
    async fn recording_logs_api(fail: usize) -> (String, Arc<parking_lot::Mutex<Vec<String>>>) {
        let got: Arc<parking_lot::Mutex<Vec<String>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let kept = got.clone();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (kept, calls) = (kept.clone(), calls.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (kept, calls) = (kept.clone(), calls.clone());
                            async move {
                                use http_body_util::BodyExt;
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                let status = if n < fail { 503 } else { 200 };
                                if status == 200 {
                                    let v: serde_json::Value =
                                        serde_json::from_slice(&body).unwrap_or_default();
                                    for e in v["logEvents"].as_array().into_iter().flatten() {
                                        kept.lock().push(
                                            e["message"].as_str().unwrap_or_default().to_string(),
                                        );
                                    }
                                }
                                hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/x-amz-json-1.1")
                                    .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                        b"{}",
                                    )))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (url, got)
    }

    /// The end of a container: whatever reached its file before the copy
    /// ended is shipped (a last line without a newline, a multi-line event
    /// still waiting for the next to start), even when the server was
    /// away meanwhile, and the shipper ends then.
    #[tokio::test]
    async fn a_shipper_sends_everything_written_before_its_end_then_ends() {
        let (url, got) = recording_logs_api(2).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("web.log");
        std::fs::write(&file, "first\n").expect("write");
        let (asks, _unused) = mpsc::unbounded_channel();
        let shipping = Arc::new(Shipping {
            servers: vec![EcsClient::new(&url, "us-east-1")],
            own: None,
            asks,
        });
        let target = target(
            &def(&[
                ("awslogs-group", "g"),
                ("awslogs-multiline-pattern", "^[a-z]"),
            ]),
            "t",
            "us-east-1",
        )
        .expect("ok")
        .expect("awslogs");
        let shipper = shipping.start(Job {
            task_arn: "arn:aws:ecs:us-east-1:000000000000:task/c/t".into(),
            execution_role: false,
            target,
            stream: "s".into(),
            file: file.clone(),
        });
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&file)
                .expect("open");
            f.write_all(b"second\n  continued\nlast without newline")
                .expect("append");
        }
        shipper.done.send_replace(true);
        tokio::time::timeout(Duration::from_secs(30), shipper.handle)
            .await
            .expect("the shipper ends once its file is shipped")
            .expect("no panic");
        assert_eq!(
            *got.lock(),
            vec!["first", "second\n  continued", "last without newline"]
        );
        let saved = std::fs::read_to_string(file.with_extension("shipped")).expect("offset");
        assert_eq!(
            saved.trim(),
            std::fs::metadata(&file).expect("meta").len().to_string()
        );
    }
}
