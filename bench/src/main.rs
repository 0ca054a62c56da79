//! Drives one ECS operation at an endpoint with N concurrent keep-alive
//! clients for a fixed time and prints one JSON line of results. The same
//! requests go to every target (Berth, moto_server...), signed with a
//! credential scope so that multi-service emulators route them to ECS.

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

mod raw;

use berth_bench::sign::Signer;

#[derive(Parser, Clone)]
struct Args {
    /// Endpoint, e.g. http://127.0.0.1:8750
    #[arg(long)]
    target: String,
    /// Label for the results line.
    #[arg(long)]
    name: String,
    /// register | describe | list
    #[arg(long)]
    op: String,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Seconds of load after a short warm-up.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Prefix for family names, so runs do not see each other's data.
    #[arg(long, default_value = "bench")]
    run: String,
}

const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn call(client: &HttpClient, target: &str, op: &str, body: &Value) -> anyhow::Result<Value> {
    let bytes = send(client, target, op, Bytes::from(body.to_string())).await?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// One request; the body is serialized once by the caller and the answer is
/// only checked for success, so that the load generator spends as little as
/// possible of the CPU it shares with the server under test.
async fn send(client: &HttpClient, target: &str, op: &str, body: Bytes) -> anyhow::Result<Bytes> {
    let url = format!("{target}/");
    let amz_target = format!("{TARGET_PREFIX}.{op}");
    let headers = [
        ("x-amz-target", amz_target.as_str()),
        ("content-type", "application/x-amz-json-1.1"),
    ];
    let mut req = hyper::Request::post(&url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    for (k, v) in Signer::from_env().headers("POST", &url, &headers, &body) {
        req = req.header(k, v);
    }
    let req = req.body(Full::new(body))?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{op}: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(bytes)
}

fn task_definition(family: &str) -> Value {
    json!({
        "family": family,
        "containerDefinitions": [{
            "name": "web", "image": "busybox", "memory": 128, "cpu": 128,
            "portMappings": [{"containerPort": 80}],
            "environment": [{"name": "MODE", "value": "bench"}],
            "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 10}
        }]
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http();
    let shared = format!("{}-shared", args.run);
    if args.op != "register" {
        // Reads run against a family with a realistic number of revisions.
        for _ in 0..20 {
            call(
                &client,
                &args.target,
                "RegisterTaskDefinition",
                &task_definition(&shared),
            )
            .await
            .context("setup")?;
        }
    }
    let warmup = Duration::from_millis(500);
    let run_for = Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut tasks = vec![];
    for i in 0..args.clients {
        let args = args.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let (op, body) = match args.op.as_str() {
                // Each client registers its own family: services in one account register in parallel.
                "register" => (
                    "RegisterTaskDefinition",
                    task_definition(&format!("{}-c{i}", args.run)),
                ),
                "describe" => ("DescribeTaskDefinition", json!({"taskDefinition": shared})),
                "list" => (
                    "ListTaskDefinitions",
                    json!({"familyPrefix": shared, "maxResults": 10}),
                ),
                other => panic!("unknown --op {other}"),
            };
            // Signed once per client and replayed: a signature is good for
            // five minutes, and the server verifies it on every request.
            let body = body.to_string();
            let amz_target = format!("{TARGET_PREFIX}.{op}");
            let fixed = [
                ("x-amz-target", amz_target.as_str()),
                ("content-type", "application/x-amz-json-1.1"),
            ];
            let url = format!("{}/", args.target.trim_end_matches('/'));
            let mut headers: Vec<(&str, String)> =
                fixed.iter().map(|(k, v)| (*k, v.to_string())).collect();
            headers.extend(
                Signer::from_env()
                    .headers("POST", &url, &fixed, body.as_bytes())
                    .into_iter()
                    .filter(|(k, _)| *k != "host"),
            );
            let mut conn =
                raw::RawConn::new(&args.target, &headers, body.as_bytes()).expect("target");
            let mut lat = vec![];
            let mut errors = 0u64;
            loop {
                let t = Instant::now();
                let since = t.duration_since(start);
                if since >= warmup + run_for {
                    break;
                }
                let ok = conn.call().await.is_ok();
                if since >= warmup {
                    if ok {
                        lat.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = vec![];
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let out = json!({
        "name": args.name, "op": args.op, "clients": args.clients,
        "requests": all.len(), "errors": errors,
        "rps": all.len() as f64 / run_for.as_secs_f64(),
        "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
    });
    println!("{out}");
    Ok(())
}
