//! `berth service ...`: services for humans, over the ECS API the server
//! serves to everyone else. `deploy` follows a rollout live and says how
//! it ended through its exit status.

use anyhow::{bail, Context};
use berth_agent::EcsClient;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Every service of `cluster`, described, in name order.
async fn all_services(ecs: &EcsClient, cluster: &str) -> anyhow::Result<Vec<Value>> {
    let mut arns: Vec<String> = vec![];
    let mut token: Option<String> = None;
    loop {
        let mut req = json!({"cluster": cluster, "maxResults": 100});
        if let Some(t) = &token {
            req["nextToken"] = json!(t);
        }
        let page: Value = ecs.call("ListServices", &req).await?;
        arns.extend(
            page["serviceArns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(String::from)),
        );
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    let mut out = vec![];
    for chunk in arns.chunks(10) {
        let d: Value = ecs
            .call(
                "DescribeServices",
                &json!({"cluster": cluster, "services": chunk}),
            )
            .await?;
        out.extend(d["services"].as_array().cloned().unwrap_or_default());
    }
    out.sort_by(|a, b| a["serviceName"].as_str().cmp(&b["serviceName"].as_str()));
    Ok(out)
}

fn short_td(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

pub async fn ls(server: &str, region: &str, cluster: &str) -> anyhow::Result<()> {
    let ecs = EcsClient::new(server, region).with_credentials(crate::creds::client_credentials());
    let services = all_services(&ecs, cluster).await?;
    println!(
        "{:<24} {:<9} {:>7} {:>7} {:>7}  {:<24} ROLLOUT",
        "NAME", "STATUS", "DESIRED", "RUNNING", "PENDING", "TASK DEFINITION"
    );
    for s in &services {
        let primary = &s["deployments"][0];
        println!(
            "{:<24} {:<9} {:>7} {:>7} {:>7}  {:<24} {}",
            s["serviceName"].as_str().unwrap_or_default(),
            s["status"].as_str().unwrap_or_default(),
            s["desiredCount"].as_i64().unwrap_or(0),
            s["runningCount"].as_i64().unwrap_or(0),
            s["pendingCount"].as_i64().unwrap_or(0),
            short_td(s["taskDefinition"].as_str().unwrap_or_default()),
            primary["rolloutState"].as_str().unwrap_or("-"),
        );
    }
    Ok(())
}

async fn describe(ecs: &EcsClient, cluster: &str, name: &str) -> anyhow::Result<Value> {
    let d: Value = ecs
        .call(
            "DescribeServices",
            &json!({"cluster": cluster, "services": [name]}),
        )
        .await?;
    match d["services"].get(0) {
        Some(s) => Ok(s.clone()),
        None => bail!("service {name} not found in cluster {cluster}"),
    }
}

fn clock(epoch: f64) -> String {
    let secs = epoch.rem_euclid(86_400.0);
    format!(
        "{:02}:{:02}:{:06.3}Z",
        (secs / 3600.0) as u32,
        ((secs % 3600.0) / 60.0) as u32,
        secs % 60.0
    )
}

pub async fn events(
    server: &str,
    region: &str,
    cluster: &str,
    name: &str,
    limit: usize,
) -> anyhow::Result<()> {
    let ecs = EcsClient::new(server, region).with_credentials(crate::creds::client_credentials());
    let s = describe(&ecs, cluster, name).await?;
    let events = s["events"].as_array().cloned().unwrap_or_default();
    for e in events.iter().take(limit).rev() {
        println!(
            "{}  {}",
            clock(e["createdAt"].as_f64().unwrap_or_default()),
            e["message"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// How a rollout ended.
pub enum Outcome {
    Completed,
    Failed(String),
    TimedOut,
}

pub async fn deploy(
    server: &str,
    region: &str,
    cluster: &str,
    name: &str,
    task_definition: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let ecs = EcsClient::new(server, region).with_credentials(crate::creds::client_credentials());
    let mut req = json!({"cluster": cluster, "service": name});
    match task_definition {
        Some(td) => req["taskDefinition"] = json!(td),
        None => req["forceNewDeployment"] = json!(true),
    }
    let updated: Value = ecs
        .call("UpdateService", &req)
        .await
        .context("UpdateService")?;
    let ours = updated["service"]["deployments"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let td = updated["service"]["taskDefinition"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!(
        "deploying {} to service {name}: deployment {ours}",
        short_td(&td)
    );
    let start = Instant::now();
    let mut seen_events: std::collections::HashSet<String> = updated["service"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["id"].as_str().map(String::from))
        .collect();
    let mut last_line = String::new();
    loop {
        let s = describe(&ecs, cluster, name).await?;
        let events = s["events"].as_array().cloned().unwrap_or_default();
        for e in events.iter().rev() {
            let id = e["id"].as_str().unwrap_or_default().to_string();
            if seen_events.insert(id) {
                println!(
                    "  {:>6.1}s  {}",
                    start.elapsed().as_secs_f64(),
                    e["message"].as_str().unwrap_or_default()
                );
            }
        }
        let deployments = s["deployments"].as_array().cloned().unwrap_or_default();
        let mine = deployments.iter().find(|d| d["id"] == json!(ours));
        let others: i64 = deployments
            .iter()
            .filter(|d| d["id"] != json!(ours))
            .map(|d| {
                d["runningCount"].as_i64().unwrap_or(0) + d["pendingCount"].as_i64().unwrap_or(0)
            })
            .sum();
        if let Some(d) = mine {
            let line = format!(
                "new: {}/{} running, {} pending, {} failed; old: {} left; {}",
                d["runningCount"],
                d["desiredCount"],
                d["pendingCount"],
                d["failedTasks"],
                others,
                d["rolloutState"].as_str().unwrap_or_default()
            );
            if line != last_line {
                println!("  {:>6.1}s  {line}", start.elapsed().as_secs_f64());
                last_line = line;
            }
        }
        let primary = &deployments.first().cloned().unwrap_or_default();
        if primary["id"] != json!(ours) {
            let why = primary["rolloutStateReason"]
                .as_str()
                .unwrap_or("another deployment replaced it")
                .to_string();
            return Ok(Outcome::Failed(format!("rolled back: {why}")));
        }
        match primary["rolloutState"].as_str() {
            Some("COMPLETED") if deployments.len() == 1 => {
                println!(
                    "deployment {ours} completed in {:.1}s",
                    start.elapsed().as_secs_f64()
                );
                return Ok(Outcome::Completed);
            }
            Some("FAILED") => {
                return Ok(Outcome::Failed(
                    primary["rolloutStateReason"]
                        .as_str()
                        .unwrap_or("failed")
                        .to_string(),
                ))
            }
            _ => {}
        }
        if start.elapsed() > timeout {
            return Ok(Outcome::TimedOut);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
