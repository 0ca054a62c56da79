//! Fixed-rate latency probe for the load balancer benchmark: `connections`
//! keep-alive HTTP/1.1 connections, each on its own thread, together
//! sending `rate` requests/s, each timed from its write to the last byte of
//! its response in microseconds. hey reports percentiles in tenths of a
//! millisecond, too coarse for the half-millisecond this is compared with.
//!
//! A thread sleeps until its next request is due (the kernel's timers, not
//! a runtime's millisecond wheel), so requests arrive spread out rather
//! than in bursts. Prints one JSON object.

use anyhow::{bail, Context};
use clap::Parser;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Where to send requests.
    #[arg(long)]
    addr: SocketAddr,
    /// Requests per second, over all connections.
    #[arg(long)]
    rate: f64,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 16)]
    connections: usize,
}

/// Reads one response with a Content-Length body; returns its status.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])?;
    let status: u16 = head.get(9..12).context("status line")?.parse()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .context("no Content-Length")?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..head_end + length);
    Ok(status)
}

/// One connection's share: its latencies in µs, and its failures.
fn run(args: &Args, me: usize, start: Instant) -> (Vec<u32>, u64) {
    let period = Duration::from_secs_f64(args.connections as f64 / args.rate);
    // Connections take turns, spread over one period.
    let offset = period.mul_f64(me as f64 / args.connections as f64);
    let end = start + Duration::from_secs_f64(args.seconds);
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", args.addr);
    let (mut latencies, mut failed) = (Vec::new(), 0);
    let mut stream = None;
    let mut buf = Vec::with_capacity(8192);
    for i in 0u32.. {
        let due = start + offset + period * i;
        if due >= end {
            break;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let conn = match &mut stream {
            Some(s) => s,
            None => match TcpStream::connect(args.addr) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    buf.clear();
                    stream.insert(s)
                }
                Err(_) => {
                    failed += 1;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let answer = conn
            .write_all(request.as_bytes())
            .map_err(anyhow::Error::from)
            .and_then(|()| read_response(conn, &mut buf));
        match answer {
            Ok(status) if (200..300).contains(&status) => {
                latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32)
            }
            Ok(_) => failed += 1,
            Err(_) => {
                failed += 1;
                stream = None;
            }
        }
    }
    (latencies, failed)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let start = Instant::now() + Duration::from_millis(50);
    let (mut all, mut failed) = (Vec::new(), 0);
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..args.connections)
            .map(|me| {
                let args = &args;
                s.spawn(move || run(args, me, start))
            })
            .collect();
        for r in runs {
            if let Ok((latencies, f)) = r.join() {
                all.extend(latencies);
                failed += f;
            }
        }
    });
    if all.is_empty() {
        bail!("no request succeeded");
    }
    all.sort_unstable();
    let at = |q: f64| f64::from(all[((all.len() - 1) as f64 * q).round() as usize]) / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "requests": all.len() as u64 + failed,
            "failed": failed,
            "rps": all.len() as f64 / args.seconds,
            "p50_ms": at(0.50),
            "p90_ms": at(0.90),
            "p99_ms": at(0.99),
            "p999_ms": at(0.999),
            "max_ms": at(1.0),
        })
    );
    Ok(())
}
