//! Policy evaluation per request (issue 17, benchmark 9): a principal with
//! ten policies, each asked the mix of questions a user's requests ask (an
//! allowed action the tenth policy grants, an action nothing allows, one an
//! explicit deny refuses). Writes the ten documents to `--docs` so that the
//! peer (moto's IAM evaluator, bench/policy.py) evaluates the same ones, and
//! prints one JSON line with per-evaluation percentiles in microseconds.

use berth_iam::policy::{evaluate, Context, Decision, Policy, PolicyKind, Request};
use clap::Parser;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Evaluations to time.
    #[arg(long, default_value_t = 300_000)]
    n: usize,
    /// Where to write the ten documents (a JSON list).
    #[arg(long)]
    docs: String,
}

fn documents() -> Vec<serde_json::Value> {
    (0..10)
        .map(|i| {
            let actions: Vec<String> = if i == 9 {
                vec![
                    "ecs:RegisterTaskDefinition".into(),
                    "ecs:DescribeTaskDefinition".into(),
                    "ecs:ListTaskDefinitions".into(),
                ]
            } else {
                ["Clusters", "Services", "Tasks"]
                    .iter()
                    .map(|s| format!("ecs:Describe{s}{i}"))
                    .chain(["elasticloadbalancing:Describe*".to_string()])
                    .collect()
            };
            serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": actions, "Resource": "*",
                 "Condition": {"StringEquals": {"aws:RequestedRegion": "us-east-1"}}},
                {"Effect": "Deny", "Action": "ecs:DeleteCluster",
                 "Resource": format!("arn:aws:ecs:*:*:cluster/prod{i}")}
            ]})
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let docs = documents();
    std::fs::write(&args.docs, serde_json::to_string(&docs)?)?;
    let policies: Vec<Policy> = docs
        .iter()
        .map(|d| Policy::parse(&d.to_string(), PolicyKind::Identity))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&Policy> = policies.iter().collect();
    let mut ctx = Context::default();
    for (k, v) in [
        ("aws:PrincipalArn", "arn:aws:iam::000000000000:user/bench"),
        ("aws:PrincipalAccount", "000000000000"),
        ("aws:userid", "AIDAEXAMPLEEXAMPLE01"),
        ("aws:username", "bench"),
        ("aws:RequestedRegion", "us-east-1"),
        ("aws:SecureTransport", "false"),
        ("aws:CurrentTime", "2026-12-06T01:00:00.000Z"),
    ] {
        ctx.set(k, v);
    }
    let asks = [
        (
            "ecs:DescribeTaskDefinition",
            "arn:aws:ecs:us-east-1:000000000000:task-definition/web:3",
            Decision::Allow,
        ),
        (
            "ecs:RunTask",
            "arn:aws:ecs:us-east-1:000000000000:task-definition/web:3",
            Decision::ImplicitDeny,
        ),
        (
            "ecs:DeleteCluster",
            "arn:aws:ecs:us-east-1:000000000000:cluster/prod3",
            Decision::ExplicitDeny,
        ),
    ];
    let mut lat = Vec::with_capacity(args.n);
    for i in 0..args.n {
        let (action, resource, want) = asks[i % asks.len()];
        let req = Request {
            action,
            resource,
            caller: None,
            context: &ctx,
        };
        let t = Instant::now();
        let d = evaluate(&refs, &[], &req);
        lat.push(t.elapsed());
        anyhow::ensure!(
            d == want,
            "{action} on {resource}: {d:?}, expected {want:?}"
        );
    }
    lat.sort();
    let us = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "{}",
        serde_json::json!({"name": "berth", "policies": 10, "evaluations": args.n,
            "p50_us": us(0.5), "p99_us": us(0.99), "p999_us": us(0.999), "max_us": us(1.0)})
    );
    Ok(())
}
