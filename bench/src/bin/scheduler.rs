//! The pure scheduler at cluster scale: N instances, then R requests of C
//! tasks each (one task group per request), every request with binpack on
//! memory, distinctInstance and a memberOf expression that half of the
//! instances satisfy. Each plan is committed before the next request, as
//! the API does. Prints one JSON line.

use anyhow::{ensure, Context};
use berth_scheduler::{
    Constraint, Instance, InstanceStatus, Query, Request, Resource, Snapshot, Strategy,
};
use clap::Parser;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    instances: usize,
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    #[arg(long, default_value_t = 10)]
    count: usize,
}

const TYPES: [&str; 4] = ["t3.large", "m5.large", "c5.large", "m5.xlarge"];
const MEMBER_OF: &str = "attribute:ecs.instance-type =~ m5.* and attribute:ecs.os-type == linux";

fn cluster(n: usize) -> Vec<Instance> {
    (0..n)
        .map(|k| {
            let mut attributes = BTreeMap::new();
            attributes.insert(
                "ecs.instance-type".to_string(),
                Some(TYPES[k % 4].to_string()),
            );
            attributes.insert(
                "ecs.availability-zone".to_string(),
                Some(format!("us-east-1{}", ["a", "b", "c"][k % 3])),
            );
            attributes.insert("ecs.os-type".to_string(), Some("linux".to_string()));
            // Instances start unevenly used, so binpack has an order to follow.
            let used = (k * 7919 % 16) as i64 * 512;
            Instance {
                arn: Arc::from(format!(
                    "arn:aws:ecs:us-east-1:000000000000:container-instance/bench/{k:032x}"
                )),
                ec2_instance_id: format!("i-{k:017x}"),
                status: InstanceStatus::Active,
                agent_connected: true,
                agent_version: "1.0.0".into(),
                registered_at: 1_700_000_000,
                attributes,
                cpu_free: 8192 - used / 4,
                memory_free: 32_768 - used,
                tcp_ports_taken: [22u16, 2375, 2376, 51678, 51679].into_iter().collect(),
                udp_ports_taken: BTreeSet::new(),
                dynamic_ports_free: 16_383,
                running_tasks: 0,
                groups: HashMap::new(),
            }
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut snapshot = Snapshot::new(cluster(args.instances));
    let member_of = Query::parse(MEMBER_OF).context("memberOf")?;
    let requests: Vec<Request> = (0..args.requests)
        .map(|r| Request {
            group: format!("service:svc-{r}"),
            count: args.count,
            cpu: 128,
            memory: [256, 512, 384][r % 3],
            dynamic_ports: 1,
            constraints: vec![
                Constraint::DistinctInstance,
                Constraint::MemberOf(member_of.clone()),
            ],
            strategies: vec![Strategy::Binpack(Resource::Memory)],
            ..Default::default()
        })
        .collect();
    let mut per_request = Vec::with_capacity(requests.len());
    let mut placed = 0usize;
    let start = Instant::now();
    for (r, req) in requests.iter().enumerate() {
        let t = Instant::now();
        let plan = snapshot.place(req, r as u64);
        snapshot.commit(req, &plan);
        per_request.push(t.elapsed().as_secs_f64() * 1e6);
        placed += plan.placements.len();
    }
    let secs = start.elapsed().as_secs_f64();
    ensure!(
        placed == args.requests * args.count,
        "only {placed} of {} tasks placed",
        args.requests * args.count
    );
    per_request.sort_by(f64::total_cmp);
    let q = |p: f64| per_request[((per_request.len() - 1) as f64 * p) as usize];
    println!(
        "{}",
        serde_json::json!({
            "instances": args.instances,
            "placements": placed,
            "seconds": secs,
            "placements_per_sec": placed as f64 / secs,
            "request_p50_us": q(0.5),
            "request_p99_us": q(0.99),
        })
    );
    Ok(())
}
