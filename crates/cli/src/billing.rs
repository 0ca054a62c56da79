//! `berth billing`: the server's metering (`GET /berth/v1/billing`) as
//! tables: each Fargate task with its size, billed seconds and cost; each
//! service; each container instance; and each cluster's total, so the
//! per-task (Fargate) and per-instance (EC2) ways of paying sit side by side.

use anyhow::Context;
use serde_json::Value;

pub fn show(server: &str, region: &str, cluster: Option<&str>, json: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let path = match cluster {
        Some(c) => format!("/berth/v1/billing?cluster={c}"),
        None => "/berth/v1/billing".to_string(),
    };
    let ecs = berth_agent::EcsClient::new(server, region)
        .with_credentials(crate::creds::client_credentials());
    let report: Value = rt
        .block_on(ecs.get_json(&path))
        .with_context(|| format!("billing from {server}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print!("{}", render(&report));
    Ok(())
}

fn usd(v: &Value) -> String {
    format!("{:.6}", v.as_f64().unwrap_or(0.0))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn render(r: &Value) -> String {
    let list = |k: &str| r[k].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    let mut tasks = vec![header(&[
        "TASK", "CLUSTER", "FAMILY", "SERVICE", "PROVIDER", "VCPU", "GB", "BILLED S", "USD",
    ])];
    for t in list("tasks") {
        let arn = text(&t["taskArn"]);
        tasks.push(vec![
            arn.rsplit('/').next().unwrap_or_default().to_string(),
            text(&t["cluster"]),
            text(&t["family"]),
            text(&t["service"]),
            match &t["capacityProvider"] {
                Value::Null => "FARGATE (launch type)".into(),
                p => text(p),
            },
            format!("{}", t["cpu"].as_f64().unwrap_or(0.0) / 1024.0),
            format!("{}", t["memory"].as_f64().unwrap_or(0.0) / 1024.0),
            format!(
                "{}{}",
                text(&t["seconds"]),
                if t["stoppedAt"].is_null() {
                    " (running)"
                } else {
                    ""
                }
            ),
            usd(&t["usd"]),
        ]);
    }
    out.push_str("Fargate tasks (per task: vCPU and GB, per second, one minute at least)\n");
    out.push_str(&table(&tasks));
    let mut services = vec![header(&[
        "SERVICE", "CLUSTER", "TASKS", "VCPU-S", "GB-S", "USD",
    ])];
    for s in list("services") {
        services.push(vec![
            text(&s["service"]),
            text(&s["cluster"]),
            text(&s["tasks"]),
            format!("{:.0}", s["vcpuSeconds"].as_f64().unwrap_or(0.0)),
            format!("{:.0}", s["gbSeconds"].as_f64().unwrap_or(0.0)),
            usd(&s["usd"]),
        ]);
    }
    out.push_str("\nServices\n");
    out.push_str(&table(&services));
    let mut instances = vec![header(&[
        "INSTANCE", "CLUSTER", "EC2 ID", "BILLED S", "USD",
    ])];
    for i in list("instances") {
        let arn = text(&i["containerInstanceArn"]);
        instances.push(vec![
            arn.rsplit('/').next().unwrap_or_default().to_string(),
            text(&i["cluster"]),
            text(&i["ec2InstanceId"]),
            format!(
                "{}{}",
                text(&i["seconds"]),
                if i["deregisteredAt"].is_null() {
                    " (registered)"
                } else {
                    ""
                }
            ),
            usd(&i["usd"]),
        ]);
    }
    out.push_str("\nEC2 container instances (per instance-hour, whatever runs on them)\n");
    out.push_str(&table(&instances));
    let mut clusters = vec![header(&[
        "CLUSTER",
        "FARGATE TASKS",
        "FARGATE USD",
        "INSTANCES",
        "INSTANCES USD",
        "TOTAL USD",
    ])];
    for c in list("clusters") {
        clusters.push(vec![
            text(&c["cluster"]),
            text(&c["fargateTasks"]),
            usd(&c["fargateUsd"]),
            text(&c["instances"]),
            usd(&c["instancesUsd"]),
            usd(&c["totalUsd"]),
        ]);
    }
    out.push_str("\nClusters\n");
    out.push_str(&table(&clusters));
    let p = &r["prices"];
    out.push_str(&format!(
        "\nPrices: {} USD per vCPU-hour, {} USD per GB-hour (FARGATE_SPOT x{}), {} USD per instance-hour.\n",
        text(&p["fargateVcpuHour"]),
        text(&p["fargateGbHour"]),
        text(&p["spotRatio"]),
        text(&p["instanceHour"]),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up_and_name_what_runs() {
        let r = serde_json::json!({
            "prices": {"fargateVcpuHour": 0.04045, "fargateGbHour": 0.00442, "spotRatio": 0.3, "instanceHour": 0.0856},
            "tasks": [{"taskArn": "arn:aws:ecs:r:a:task/c/abc", "cluster": "c", "family": "web",
                       "service": "web", "capacityProvider": "FARGATE_SPOT", "cpu": 256, "memory": 512,
                       "seconds": 60, "stoppedAt": null, "usd": 0.000061}],
            "services": [{"service": "web", "cluster": "c", "tasks": 1, "vcpuSeconds": 15.0, "gbSeconds": 30.0, "usd": 0.000061}],
            "instances": [],
            "clusters": [{"cluster": "c", "fargateTasks": 1, "fargateUsd": 0.000061, "instances": 0, "instancesUsd": 0.0, "totalUsd": 0.000061}]
        });
        let out = render(&r);
        assert!(
            out.contains(
                "abc   c        web     web      FARGATE_SPOT  0.25  0.5  60 (running)  0.000061"
            ),
            "{out}"
        );
        assert!(out.contains("Prices: 0.04045 USD per vCPU-hour"));
    }
}
