//! Simulated hosts for the cluster manager's scale and failover benchmarks:
//! N agents in one process, each registering as a container instance
//! through the ECS API and holding its own WebSocket to a server's gateway,
//! speaking the real agent protocol (`berth_wire::agent`): hello,
//! heartbeats, and a RUNNING report for every task pushed to it (STOPPED
//! when told to stop), without Docker. It is a load driver, not a stand-in
//! for the agent in any test.
//!
//! Then it measures, printing one JSON line per figure:
//! - `runtask`: at each level of running tasks, RunTask from 32 clients
//!   (count 10): call latency, placements/s as answered, and placements/s
//!   end to end (until every placed task was pushed to its host and
//!   reported RUNNING); the server's RSS and CPU over the window.
//! - `service`: a service of `--service-tasks` tasks, from CreateService
//!   to all RUNNING.
//! - `silent`: a host with service tasks falls silent (no heartbeat, no
//!   report, connection left open, as in a partition); the time until the
//!   service is whole again on the other hosts.
//! - `failover`: with `--servers` listing several, time until writes
//!   succeed again and until a service scale-up is acted on, after the
//!   caller kills the leader (the tool waits for `--kill-file` to appear).

use anyhow::{bail, Context};
use berth_bench::sign::Signer;
use berth_wire::agent::{
    AgentMessage, ContainerReport, ContainerStatus, DesiredStatus, ServerMessage, TaskReport,
    TaskStatus, CONNECT_PATH,
};
use bytes::Bytes;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Clone)]
struct Args {
    /// The servers' API URLs, comma-separated; hosts spread over them.
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    #[arg(long, default_value = "sim")]
    cluster: String,
    #[arg(long, default_value_t = 10)]
    hosts: usize,
    /// Running-task levels at which RunTask is measured (filled by RunTask).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    levels: Vec<usize>,
    /// RunTask calls per measurement window.
    #[arg(long, default_value_t = 320)]
    calls: usize,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// Tasks of the service measured from CreateService to all RUNNING; 0 skips it.
    #[arg(long, default_value_t = 0)]
    service_tasks: usize,
    /// Times a host falls silent, each measured; 0 skips it.
    #[arg(long, default_value_t = 0)]
    silent_trials: usize,
    /// Failover: wait for this file to appear (the caller kills the leader
    /// and then creates it), then measure recovery.
    #[arg(long)]
    kill_file: Option<String>,
    /// The server process whose RSS and CPU are reported.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A label for the result lines.
    #[arg(long, default_value = "berth")]
    label: String,
}

const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
/// Each simulated host's size: room for a few hundred bench tasks.
const HOST_CPU: i64 = 65536;
const HOST_MEMORY: i64 = 262_144;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// An ECS API client that moves to the next server when one cannot be reached.
#[derive(Clone)]
struct Api {
    http: HttpClient,
    servers: Arc<Vec<String>>,
    at: Arc<AtomicUsize>,
    signer: Signer,
}

impl Api {
    fn new(servers: Vec<String>) -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        Api {
            http: Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build(connector),
            servers: Arc::new(servers),
            at: Arc::new(AtomicUsize::new(0)),
            signer: Signer::from_env(),
        }
    }

    /// The same servers, signing as `signer`.
    fn signing_as(&self, signer: Signer) -> Self {
        Api {
            signer,
            ..self.clone()
        }
    }

    /// One of Berth's own routes on the current server: signed, or (for
    /// the join, whose token is the credential) with a JSON body.
    async fn own(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let i = self.at.load(Ordering::Relaxed) % self.servers.len();
        let url = format!("{}{path}", self.servers[i]);
        let mut req = hyper::Request::builder().method(method).uri(&url);
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                b.to_string()
            }
            None => {
                for (k, v) in self.signer.headers(method, &url, &[], b"") {
                    req = req.header(k, v);
                }
                String::new()
            }
        };
        let resp = self
            .http
            .request(req.body(Full::new(Bytes::from(bytes)))?)
            .await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// One call to the current server; an unreachable one moves the
    /// client on and is an error (the caller retries if it wants).
    async fn call(&self, op: &str, body: &Value) -> anyhow::Result<Value> {
        let i = self.at.load(Ordering::Relaxed) % self.servers.len();
        let url = format!("{}/", self.servers[i]);
        let body = body.to_string();
        let amz_target = format!("{TARGET_PREFIX}.{op}");
        let headers = [
            ("x-amz-target", amz_target.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
        ];
        let mut req = hyper::Request::post(&url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        for (k, v) in self.signer.headers("POST", &url, &headers, body.as_bytes()) {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let resp = match tokio::time::timeout(Duration::from_secs(30), self.http.request(req)).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.at.fetch_add(1, Ordering::Relaxed);
                bail!("{op}: {e}");
            }
            Err(_) => {
                self.at.fetch_add(1, Ordering::Relaxed);
                bail!("{op}: timed out");
            }
        };
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{op}: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// What every simulated host shares: tasks RUNNING per family, and each
/// host's switch to fall silent.
#[derive(Default)]
struct Sim {
    running: parking_lot::Mutex<HashMap<String, HashSet<String>>>,
    connected: AtomicUsize,
}

impl Sim {
    fn running_of(&self, family: &str) -> usize {
        self.running.lock().get(family).map_or(0, HashSet::len)
    }
}

struct Host {
    arn: String,
    /// Signs as the host, with what it got when it joined.
    signer: Signer,
    silent: AtomicBool,
    /// Task ARN -> family, of what it reported RUNNING.
    tasks: parking_lot::Mutex<HashMap<String, String>>,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The EC2-style id of simulated host `n`.
fn instance_id(n: usize) -> String {
    format!("i-sim{n:013}")
}

/// Joins host `n` with `token`, as `berth agent --token` does: what it
/// signs with from then on.
async fn join(api: &Api, token: &str, cluster: &str, n: usize) -> anyhow::Result<Signer> {
    let body = json!({"token": token, "cluster": cluster, "instanceId": instance_id(n)});
    let mut tries = 0;
    let got = loop {
        match api.own("POST", "/berth/v1/join", Some(&body)).await {
            Ok(v) => break v,
            Err(e) if tries < 50 => {
                tries += 1;
                tracing_free_log(&format!("join {n}: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let text = |k: &str| got[k].as_str().map(String::from).context("join answer");
    Ok(Signer::with(berth_wire::sigv4::Credentials {
        access_key_id: text("accessKeyId")?,
        secret_access_key: text("secretAccessKey")?,
        session_token: None,
    }))
}

async fn register(api: &Api, cluster: &str, n: usize) -> anyhow::Result<String> {
    let body = json!({
        "cluster": cluster,
        "instanceIdentityDocument": json!({
            "instanceId": instance_id(n),
            "instanceType": "sim.large",
            "availabilityZone": format!("local-1{}", ["a", "b", "c"][n % 3]),
            "region": "us-east-1",
            "architecture": "x86_64",
        }).to_string(),
        "totalResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": HOST_CPU},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": HOST_MEMORY},
            {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22"]},
            {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []},
        ],
        "attributes": [{"name": "ecs.os-type", "value": "linux"}],
        "versionInfo": {"agentVersion": "sim", "dockerVersion": "none"},
    });
    let mut tries = 0;
    loop {
        match api.call("RegisterContainerInstance", &body).await {
            Ok(v) => {
                return v["containerInstance"]["containerInstanceArn"]
                    .as_str()
                    .map(String::from)
                    .context("no containerInstanceArn");
            }
            Err(e) if tries < 50 => {
                tries += 1;
                tracing_free_log(&format!("register {n}: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn tracing_free_log(m: &str) {
    eprintln!("{m}");
}

fn report(arn: &str, d: &berth_wire::agent::DesiredTask, stopped: bool) -> AgentMessage {
    let at = now();
    let (status, container) = if stopped {
        (TaskStatus::Stopped, ContainerStatus::Stopped)
    } else {
        (TaskStatus::Running, ContainerStatus::Running)
    };
    AgentMessage::TaskState(TaskReport {
        task_arn: arn.to_string(),
        last_status: status,
        containers: d
            .container_arns
            .iter()
            .map(|(name, _)| ContainerReport {
                name: name.clone(),
                runtime_id: Some(format!("sim-{}", &arn[arn.len().saturating_sub(12)..])),
                last_status: container,
                exit_code: stopped.then_some(0),
                ..Default::default()
            })
            .collect(),
        pull_started_at: Some(at),
        pull_stopped_at: Some(at),
        started_at: Some(at),
        stopped_at: stopped.then_some(at),
        ..Default::default()
    })
}

fn gateway(server: &str) -> String {
    format!(
        "ws://{}{CONNECT_PATH}",
        server.trim_start_matches("http://").trim_end_matches('/')
    )
}

/// One host's connection loop: connects to its server (the next one when
/// it goes), beats, and answers every push.
async fn host_loop(
    sim: Arc<Sim>,
    host: Arc<Host>,
    cluster: String,
    servers: Arc<Vec<String>>,
    first: usize,
) {
    let mut at = first;
    loop {
        // A partitioned host cannot reach any server: it stays away until
        // it heals, rather than coming back at once with a new connection.
        while host.silent.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let server = &servers[at % servers.len()];
        if let Err(e) = connection(&sim, &host, &cluster, server).await {
            tracing_free_log(&format!("host {}: {e}", host.arn));
        }
        at += 1;
        tokio::time::sleep(Duration::from_millis(100 + rand::random::<u64>() % 100)).await;
    }
}

async fn connection(sim: &Sim, host: &Host, cluster: &str, server: &str) -> anyhow::Result<()> {
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(gateway(
            server,
        ))?;
    let url = gateway(server).replacen("ws://", "http://", 1);
    for (k, v) in host.signer.headers("GET", &url, &[], b"") {
        request.headers_mut().insert(k, v.parse()?);
    }
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(berth_wire::agent::SOCKET_READ_BUFFER);
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), false).await?;
    let (mut tx, mut rx) = ws.split();
    let send = |m: &AgentMessage| Message::text(serde_json::to_string(m).unwrap_or_default());
    tx.send(send(&AgentMessage::Hello {
        cluster: cluster.into(),
        container_instance_arn: host.arn.clone(),
        agent_version: "sim".into(),
    }))
    .await?;
    let mut beat = tokio::time::interval(Duration::from_secs(3600));
    let mut welcomed = false;
    let result = async {
        loop {
            tokio::select! {
                _ = beat.tick(), if welcomed => {
                    if !host.silent.load(Ordering::Relaxed) {
                        tx.send(send(&AgentMessage::Heartbeat)).await?;
                    }
                }
                frame = rx.next() => {
                    let text = match frame {
                        None | Some(Ok(Message::Close(_))) => return Ok(()),
                        Some(Err(e)) => bail!("{e}"),
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(_)) => continue,
                    };
                    match serde_json::from_str::<ServerMessage>(text.as_str())? {
                        ServerMessage::Welcome { heartbeat_interval_ms, .. } => {
                            beat = tokio::time::interval(Duration::from_millis(heartbeat_interval_ms.max(50)));
                            welcomed = true;
                            sim.connected.fetch_add(1, Ordering::Relaxed);
                        }
                        message @ (ServerMessage::Desired { .. } | ServerMessage::DesiredChanges { .. }) => {
                            if host.silent.load(Ordering::Relaxed) {
                                continue;
                            }
                            let (tasks, removed, whole) = match message {
                                ServerMessage::Desired { tasks, .. } => (tasks, vec![], true),
                                ServerMessage::DesiredChanges { tasks, removed, .. } => (tasks, removed, false),
                                _ => continue,
                            };
                            let mut out = vec![];
                            {
                                let mut mine = host.tasks.lock();
                                let mut running = sim.running.lock();
                                let pushed: HashSet<&str> = tasks.iter().map(|t| t.task_arn.as_str()).collect();
                                let gone: HashSet<&str> = removed.iter().map(String::as_str).collect();
                                // Gone from the set: the server recorded them STOPPED.
                                mine.retain(|arn, family| {
                                    let keep = if whole { pushed.contains(arn.as_str()) } else { !gone.contains(arn.as_str()) };
                                    if !keep {
                                        if let Some(s) = running.get_mut(family) { s.remove(arn); }
                                    }
                                    keep
                                });
                                for d in &tasks {
                                    let family = d.definition.family.clone().unwrap_or_default();
                                    let known = mine.contains_key(&d.task_arn);
                                    if d.desired_status == DesiredStatus::Running && !known {
                                        mine.insert(d.task_arn.clone(), family.clone());
                                        running.entry(family).or_default().insert(d.task_arn.clone());
                                        out.push(report(&d.task_arn, d, false));
                                    } else if d.desired_status == DesiredStatus::Stopped && known {
                                        mine.remove(&d.task_arn);
                                        if let Some(s) = running.get_mut(&family) { s.remove(&d.task_arn); }
                                        out.push(report(&d.task_arn, d, true));
                                    }
                                }
                            }
                            for m in &out {
                                tx.feed(send(m)).await?;
                            }
                            tx.flush().await?;
                        }
                        ServerMessage::Refused { message } => bail!("refused: {message}"),
                        // Simulated hosts keep no logs: every request ends at once, empty.
                        ServerMessage::Logs { request, .. } => {
                            let done = AgentMessage::Logs { request, data: String::new(), end: true };
                            tx.send(send(&done)).await?;
                        }
                        ServerMessage::LogsDone { .. } | ServerMessage::Secrets { .. } | ServerMessage::Credentials { .. } => {}
                    }
                }
            }
        }
    }
    .await;
    if welcomed {
        sim.connected.fetch_sub(1, Ordering::Relaxed);
    }
    result
}

/// The server's resident memory (MiB) and CPU seconds so far.
fn server_usage(pid: Option<u32>) -> Option<(f64, f64)> {
    let pid = pid?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some((rss_kib / 1024.0, ticks / 100.0))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn wait_running(sim: &Sim, family: &str, want: usize, limit: Duration) -> Option<Duration> {
    let began = Instant::now();
    while began.elapsed() < limit {
        if sim.running_of(family) >= want {
            return Some(began.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// `calls` RunTask calls of `count` tasks each from `clients` clients: the
/// latencies (ms) and tasks placed.
async fn run_tasks(
    api: &Api,
    cluster: &str,
    family: &str,
    calls: usize,
    clients: usize,
    count: usize,
) -> (Vec<f64>, usize, usize) {
    let left = Arc::new(AtomicUsize::new(calls));
    let mut workers = vec![];
    for _ in 0..clients {
        let (api, left) = (api.clone(), left.clone());
        let body = json!({"cluster": cluster, "taskDefinition": family, "count": count});
        workers.push(tokio::spawn(async move {
            let (mut lat, mut placed, mut failed) = (vec![], 0usize, 0usize);
            while left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let began = Instant::now();
                match api.call("RunTask", &body).await {
                    Ok(v) => {
                        lat.push(began.elapsed().as_secs_f64() * 1000.0);
                        placed += v["tasks"].as_array().map_or(0, Vec::len);
                        failed += v["failures"].as_array().map_or(0, Vec::len);
                    }
                    Err(e) => {
                        failed += count;
                        tracing_free_log(&format!("RunTask: {e}"));
                    }
                }
            }
            (lat, placed, failed)
        }));
    }
    let (mut lat, mut placed, mut failed) = (vec![], 0, 0);
    for w in workers {
        if let Ok((l, p, f)) = w.await {
            lat.extend(l);
            placed += p;
            failed += f;
        }
    }
    lat.sort_by(f64::total_cmp);
    (lat, placed, failed)
}

fn register_family(family: &str) -> Value {
    json!({
        "family": family,
        "containerDefinitions": [{"name": "c", "image": "sim", "cpu": 1, "memory": 6, "essential": true}]
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.servers.is_empty() {
        bail!("--servers: give at least one");
    }
    let api = Api::new(args.servers.clone());
    api.call("CreateCluster", &json!({"clusterName": args.cluster}))
        .await?;
    for f in ["fill", "measure", "svc"] {
        api.call("RegisterTaskDefinition", &register_family(f))
            .await?;
    }
    // Every host joins with one token, as a fleet's launch template would.
    let token = api
        .own(
            "POST",
            &format!(
                "/berth/v1/join-tokens?cluster={}&expiresIn=7200",
                args.cluster
            ),
            None,
        )
        .await?["token"]
        .as_str()
        .context("no join token")?
        .to_string();
    let sim = Arc::new(Sim::default());
    let servers = Arc::new(args.servers.clone());
    let began = Instant::now();
    let mut hosts = vec![];
    // Registration goes a few dozen at a time, as a fleet booting would.
    for chunk in (0..args.hosts).collect::<Vec<_>>().chunks(50) {
        let mut regs = vec![];
        for &n in chunk {
            let (api, cluster, token) = (api.clone(), args.cluster.clone(), token.clone());
            regs.push(tokio::spawn(async move {
                let signer = join(&api, &token, &cluster, n).await?;
                let arn = register(&api.signing_as(signer.clone()), &cluster, n).await?;
                anyhow::Ok((arn, signer))
            }));
        }
        for (r, &n) in regs.into_iter().zip(chunk) {
            let (arn, signer) = r.await??;
            let host = Arc::new(Host {
                arn,
                signer,
                silent: AtomicBool::new(false),
                tasks: Default::default(),
            });
            tokio::spawn(host_loop(
                sim.clone(),
                host.clone(),
                args.cluster.clone(),
                servers.clone(),
                n,
            ));
            hosts.push(host);
        }
    }
    while sim.connected.load(Ordering::Relaxed) < args.hosts {
        if began.elapsed() > Duration::from_secs(300) {
            bail!(
                "only {} of {} hosts connected",
                sim.connected.load(Ordering::Relaxed),
                args.hosts
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{}",
        json!({"label": args.label, "kind": "hosts", "hosts": args.hosts, "connect_seconds": began.elapsed().as_secs_f64()})
    );

    for &level in &args.levels {
        // Fill to the level with RunTask itself.
        let fill_began = Instant::now();
        loop {
            let have = sim.running_of("fill") + sim.running_of("measure");
            if have >= level {
                break;
            }
            let before = sim.running_of("fill");
            let calls = (level - have).div_ceil(args.count);
            let (_, placed, failed) =
                run_tasks(&api, &args.cluster, "fill", calls, args.clients, args.count).await;
            if placed == 0 {
                bail!("filling to {level}: nothing placed ({failed} failures)");
            }
            wait_running(&sim, "fill", before + placed, Duration::from_secs(300))
                .await
                .with_context(|| format!("filling to {level}: placed tasks never all RUNNING"))?;
        }
        let running_before = sim.running_of("fill") + sim.running_of("measure");
        let fill_seconds = fill_began.elapsed().as_secs_f64();
        let before = server_usage(args.server_pid);
        let measured_before = sim.running_of("measure");
        let window = Instant::now();
        let (lat, placed, failed) = run_tasks(
            &api,
            &args.cluster,
            "measure",
            args.calls,
            args.clients,
            args.count,
        )
        .await;
        let answered = window.elapsed();
        let all = wait_running(
            &sim,
            "measure",
            measured_before + placed,
            Duration::from_secs(300),
        )
        .await;
        let e2e = window.elapsed();
        let after = server_usage(args.server_pid);
        let (rss, cpu) = match (before, after) {
            (Some((_, c0)), Some((r1, c1))) => (Some(r1), Some((c1 - c0) / e2e.as_secs_f64())),
            _ => (None, None),
        };
        println!(
            "{}",
            json!({
                "label": args.label, "kind": "runtask", "hosts": args.hosts, "running_before": running_before,
                "level": level, "fill_seconds": fill_seconds, "calls": lat.len(), "count": args.count,
                "clients": args.clients, "placed": placed, "failed": failed,
                "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99), "max_ms": percentile(&lat, 1.0),
                "placements_per_sec_answered": placed as f64 / answered.as_secs_f64(),
                "placements_per_sec_running": if all.is_some() { placed as f64 / e2e.as_secs_f64() } else { 0.0 },
                "all_running": all.is_some(), "server_rss_mib": rss, "server_cpu_cores": cpu,
            })
        );
    }

    if args.service_tasks > 0 {
        let began = Instant::now();
        api.call(
            "CreateService",
            &json!({
                "cluster": args.cluster, "serviceName": "svc", "taskDefinition": "svc",
                "desiredCount": args.service_tasks,
            }),
        )
        .await?;
        let all = wait_running(&sim, "svc", args.service_tasks, Duration::from_secs(600)).await;
        println!(
            "{}",
            json!({
                "label": args.label, "kind": "service", "hosts": args.hosts, "tasks": args.service_tasks,
                "seconds_to_all_running": all.map(|d| d.as_secs_f64()), "since_create": began.elapsed().as_secs_f64(),
                "server_rss_mib": server_usage(args.server_pid).map(|u| u.0),
            })
        );
    }

    if args.silent_trials > 0 {
        let desired = args.hosts.clamp(2, 20) * 2;
        if args.service_tasks == 0 {
            api.call("CreateService", &json!({
                "cluster": args.cluster, "serviceName": "svc", "taskDefinition": "svc",
                "desiredCount": desired, "placementStrategy": [{"type": "spread", "field": "instanceId"}],
            })).await?;
        }
        let desired = if args.service_tasks > 0 {
            args.service_tasks
        } else {
            desired
        };
        wait_running(&sim, "svc", desired, Duration::from_secs(120))
            .await
            .context("service never whole")?;
        let mut times = vec![];
        for trial in 0..args.silent_trials {
            // A host that runs some of the service's tasks goes quiet.
            let Some(victim) = hosts.iter().find(|h| {
                !h.silent.load(Ordering::Relaxed) && h.tasks.lock().values().any(|f| f == "svc")
            }) else {
                break;
            };
            let lost: Vec<String> = victim
                .tasks
                .lock()
                .iter()
                .filter(|(_, f)| *f == "svc")
                .map(|(a, _)| a.clone())
                .collect();
            victim.silent.store(true, Ordering::Relaxed);
            let cut = Instant::now();
            // Whole again: `desired` tasks RUNNING on hosts that still speak.
            let whole = loop {
                let alive: usize = hosts
                    .iter()
                    .filter(|h| !h.silent.load(Ordering::Relaxed))
                    .map(|h| h.tasks.lock().values().filter(|f| *f == "svc").count())
                    .sum();
                if alive >= desired {
                    break Some(cut.elapsed());
                }
                if cut.elapsed() > Duration::from_secs(120) {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            println!(
                "{}",
                json!({
                    "label": args.label, "kind": "silent", "trial": trial, "hosts": args.hosts,
                    "tasks_lost": lost.len(), "seconds_to_replaced": whole.map(|d| d.as_secs_f64()),
                })
            );
            if let Some(d) = whole {
                times.push(d.as_secs_f64());
            }
            // Heal: the host speaks again, and its stale copies are forgotten on the next push.
            {
                let mut mine = victim.tasks.lock();
                let mut running = sim.running.lock();
                for a in &lost {
                    mine.remove(a);
                    if let Some(s) = running.get_mut("svc") {
                        s.remove(a);
                    }
                }
            }
            victim.silent.store(false, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{}",
            json!({
                "label": args.label, "kind": "silent_summary", "hosts": args.hosts, "trials": times.len(),
                "p50_s": percentile(&times, 0.5), "p99_s": percentile(&times, 0.99), "max_s": percentile(&times, 1.0),
            })
        );
    }

    if let Some(kill_file) = &args.kill_file {
        failover(&args, &api, &sim, kill_file).await?;
    }
    Ok(())
}

/// Waits for the caller to kill the leader (it creates `kill_file` after
/// the kill), keeping a stream of writes going, then measures how long
/// writes failed and how long until the service controller acted again.
async fn failover(args: &Args, api: &Api, sim: &Arc<Sim>, kill_file: &str) -> anyhow::Result<()> {
    let base = 2 * args.hosts;
    api.call("CreateService", &json!({
        "cluster": args.cluster, "serviceName": "fo", "taskDefinition": "svc", "desiredCount": base,
    })).await?;
    wait_running(sim, "svc", base, Duration::from_secs(120))
        .await
        .context("service never whole")?;
    let acked = Arc::new(parking_lot::Mutex::new(Vec::<(String, f64)>::new()));
    let failures = Arc::new(parking_lot::Mutex::new(Vec::<f64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut writers = vec![];
    for w in 0..4 {
        let (api, acked, failures, stop) =
            (api.clone(), acked.clone(), failures.clone(), stop.clone());
        let cluster = args.cluster.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let call = if n % 2 == 0 {
                    api.call(
                        "RegisterTaskDefinition",
                        &register_family(&format!("stream{w}")),
                    )
                    .await
                    .map(|v| {
                        format!(
                            "td:{}",
                            v["taskDefinition"]["taskDefinitionArn"]
                                .as_str()
                                .unwrap_or_default()
                        )
                    })
                } else {
                    api.call(
                        "RunTask",
                        &json!({"cluster": cluster, "taskDefinition": "measure"}),
                    )
                    .await
                    .map(|v| {
                        format!(
                            "task:{}",
                            v["tasks"][0]["taskArn"].as_str().unwrap_or_default()
                        )
                    })
                };
                match call {
                    Ok(id) => acked.lock().push((id, t0.elapsed().as_secs_f64())),
                    Err(_) => {
                        failures.lock().push(t0.elapsed().as_secs_f64());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    while !std::path::Path::new(kill_file).exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = t0.elapsed().as_secs_f64();
    // The controller acts again: a scale-up is carried out.
    let scaled = loop {
        if api
            .call(
                "UpdateService",
                &json!({"cluster": args.cluster, "service": "fo", "desiredCount": base + 10}),
            )
            .await
            .is_ok()
        {
            break t0.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let acted = wait_running(sim, "svc", base + 10, Duration::from_secs(60))
        .await
        .map(|d| scaled + d.as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.ok();
    }
    let acked = acked.lock().clone();
    let first_ok_after = acked
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| *t > killed)
        .fold(f64::INFINITY, f64::min);
    let last_fail = failures.lock().iter().copied().fold(killed, f64::max);
    // Every acknowledged write is there: task definitions described, tasks found.
    let mut missing = 0;
    for (id, _) in &acked {
        let (op, body) = match id.split_once(':') {
            Some(("td", arn)) => ("DescribeTaskDefinition", json!({"taskDefinition": arn})),
            Some(("task", arn)) => (
                "DescribeTasks",
                json!({"cluster": args.cluster, "tasks": [arn]}),
            ),
            _ => continue,
        };
        let ok = match api.call(op, &body).await {
            Ok(v) => {
                op == "DescribeTaskDefinition"
                    || v["tasks"].as_array().is_some_and(|t| t.len() == 1)
            }
            Err(_) => false,
        };
        if !ok {
            missing += 1;
        }
    }
    // No task placed twice: every RUNNING report is of a distinct task, on one host.
    let running = sim.running_of("measure");
    println!(
        "{}",
        json!({
            "label": args.label, "kind": "failover", "hosts": args.hosts, "acked_writes": acked.len(),
            "missing_acked": missing, "failed_calls": failures.lock().len(),
            "writes_back_after_s": (last_fail - killed).max(first_ok_after - killed).max(0.0),
            "first_write_ok_after_s": first_ok_after - killed,
            "controller_acted_after_s": acted.map(|at| at - killed),
            "scale_accepted_after_s": scaled - killed,
            "service_whole": acted.is_some(), "measure_tasks_running": running,
            "hosts_connected": sim.connected.load(Ordering::Relaxed),
        })
    );
    Ok(())
}
