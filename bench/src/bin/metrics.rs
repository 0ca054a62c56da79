//! CloudWatch's data path under load, at any endpoint (Berth, moto_server):
//!
//! - `put`: N keep-alive clients send PutMetricData (JSON 1.0, as current
//!   botocore does) of `--batch` datapoints each, every request a new
//!   signed body with its own timestamps and values, for `--seconds`;
//!   prints datapoints accepted per second.
//! - `day`: loads a day of 10-second datapoints of `--metrics` metrics,
//!   then asks GetMetricData for one metric's day in 1-minute periods
//!   (1,440 datapoints) from one client for `--seconds`; prints latency
//!   percentiles.
//!
//! One JSON line of results per run.

use anyhow::{bail, Context};
use berth_bench::sign::Signer;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Parser, Clone)]
struct Args {
    #[arg(long)]
    target: String,
    #[arg(long)]
    name: String,
    /// put | day
    #[arg(long)]
    op: String,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    #[arg(long, default_value_t = 10)]
    metrics: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Namespace prefix, so runs do not see each other's data.
    #[arg(long, default_value = "Bench")]
    run: String,
}

const TARGET_PREFIX: &str = "GraniteServiceVersion20100801";

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn send(
    client: &HttpClient,
    signer: &Signer,
    target: &str,
    op: &str,
    body: Vec<u8>,
) -> anyhow::Result<Bytes> {
    let url = format!("{target}/");
    let amz_target = format!("{TARGET_PREFIX}.{op}");
    let headers = [
        ("x-amz-target", amz_target.as_str()),
        ("content-type", "application/x-amz-json-1.0"),
        ("x-amzn-query-mode", "true"),
    ];
    let mut req = hyper::Request::post(&url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    for (k, v) in signer.headers("POST", &url, &headers, &body) {
        req = req.header(k, v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{op}: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(bytes)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A PutMetricData body: `n` datapoints over `metrics` metrics, at times
/// spread backwards from `end` by `step` seconds.
fn put_body(ns: &str, metrics: usize, n: usize, end: f64, step: f64, seed: usize) -> Vec<u8> {
    let data: Vec<Value> = (0..n)
        .map(|i| {
            let k = seed.wrapping_mul(31).wrapping_add(i);
            json!({
                "MetricName": format!("Latency{}", k % metrics),
                "Dimensions": [{"Name": "Service", "Value": "web"}, {"Name": "Zone", "Value": format!("z{}", k % 3)}],
                "Timestamp": end - step * (i / metrics) as f64,
                "Value": (k % 997) as f64 / 10.0,
                "Unit": "Milliseconds",
            })
        })
        .collect();
    serde_json::to_vec(&json!({"Namespace": ns, "MetricData": data})).unwrap_or_default()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let signer = Signer::from_env().for_service("monitoring");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let ns = format!("{}/{}", args.run, args.name);
    match args.op.as_str() {
        "put" => {
            // A warm-up request makes the namespace's series.
            send(
                &client,
                &signer,
                &args.target,
                "PutMetricData",
                put_body(&ns, args.metrics, args.batch, now(), 1.0, 0),
            )
            .await
            .context("warm-up")?;
            let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
            let started = Instant::now();
            let mut workers = vec![];
            for c in 0..args.clients {
                let (client, signer, target, ns, a) = (
                    client.clone(),
                    signer.clone(),
                    args.target.clone(),
                    ns.clone(),
                    args.clone(),
                );
                workers.push(tokio::spawn(async move {
                    let (mut sent, mut errors, mut seed) = (0usize, 0usize, c * 1_000_003);
                    while Instant::now() < deadline {
                        seed += 1;
                        let body = put_body(&ns, a.metrics, a.batch, now(), 1.0, seed);
                        match send(&client, &signer, &target, "PutMetricData", body).await {
                            Ok(_) => sent += a.batch,
                            Err(e) => {
                                errors += 1;
                                if errors == 1 {
                                    eprintln!("{e:#}");
                                }
                            }
                        }
                    }
                    (sent, errors)
                }));
            }
            let (mut sent, mut errors) = (0, 0);
            for w in workers {
                let (s, e) = w.await?;
                sent += s;
                errors += e;
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{}",
                json!({"name": args.name, "op": "put", "clients": args.clients, "batch": args.batch,
                       "datapoints": sent, "seconds": secs, "datapoints_per_s": sent as f64 / secs, "errors": errors})
            );
        }
        "day" => {
            // A day of 10-second datapoints of each metric, 1,000 a request.
            let end = (now() / 60.0).floor() * 60.0;
            let total = args.metrics * 8640;
            let load = Instant::now();
            let mut i = 0;
            while i < total {
                let n = (total - i).min(1000);
                let data: Vec<Value> = (i..i + n)
                    .map(|k| {
                        json!({"MetricName": format!("Day{}", k % args.metrics),
                               "Timestamp": end - 10.0 * (k / args.metrics) as f64 - 5.0,
                               "Value": (k % 101) as f64, "StorageResolution": 60})
                    })
                    .collect();
                let body = serde_json::to_vec(&json!({"Namespace": ns, "MetricData": data}))?;
                send(&client, &signer, &args.target, "PutMetricData", body)
                    .await
                    .context("loading a day")?;
                i += n;
            }
            let load_secs = load.elapsed().as_secs_f64();
            let query = json!({
                "StartTime": end - 86_400.0, "EndTime": end,
                "MetricDataQueries": [{"Id": "m", "MetricStat": {
                    "Metric": {"Namespace": ns, "MetricName": "Day0"}, "Period": 60, "Stat": "Average"}}]
            });
            let body = serde_json::to_vec(&query)?;
            let first = send(
                &client,
                &signer,
                &args.target,
                "GetMetricData",
                body.clone(),
            )
            .await?;
            let v: Value = serde_json::from_slice(&first)?;
            let points = v["MetricDataResults"][0]["Values"]
                .as_array()
                .map_or(0, Vec::len);
            let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
            let mut lat = vec![];
            while Instant::now() < deadline {
                let t = Instant::now();
                send(
                    &client,
                    &signer,
                    &args.target,
                    "GetMetricData",
                    body.clone(),
                )
                .await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat.sort_by(f64::total_cmp);
            println!(
                "{}",
                json!({"name": args.name, "op": "day", "metrics": args.metrics, "load_datapoints": total,
                       "load_seconds": load_secs, "points_returned": points, "requests": lat.len(),
                       "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99), "max_ms": lat.last().copied().unwrap_or(0.0)})
            );
        }
        other => bail!("unknown --op {other}"),
    }
    Ok(())
}
