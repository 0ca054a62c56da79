//! `berth token create|ls|revoke`: join tokens, with which new hosts'
//! agents join a cluster or the Fargate pool (`berth agent --token`).

use anyhow::Context;
use serde_json::Value;

fn client(server: &str, region: &str) -> berth_agent::EcsClient {
    berth_agent::EcsClient::new(server, region).with_credentials(crate::creds::client_credentials())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// RFC 3986 percent-encoding, as SigV4's canonical query string wants it.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Issues a token and prints it (alone on stdout, so scripts can take
/// it), its id and expiry on stderr.
pub fn create(
    server: &str,
    region: &str,
    target: (&str, &str),
    expires_in: f64,
    description: &str,
) -> anyhow::Result<()> {
    let mut path = format!(
        "/berth/v1/join-tokens?{}={}&expiresIn={expires_in}",
        target.0,
        encode(target.1)
    );
    if !description.is_empty() {
        path.push_str(&format!("&description={}", encode(description)));
    }
    let made: Value = runtime()?
        .block_on(client(server, region).own_route("POST", &path, None))
        .with_context(|| format!("cannot issue a join token at {server}"))?;
    println!("{}", made["token"].as_str().unwrap_or_default());
    eprintln!(
        "join token {} for {}, valid until {}: berth agent --token <token>",
        made["id"].as_str().unwrap_or_default(),
        made["cluster"].as_str().unwrap_or_default(),
        made["expiresAt"].as_str().unwrap_or_default()
    );
    Ok(())
}

pub fn list(server: &str, region: &str, json: bool) -> anyhow::Result<()> {
    let all: Value = runtime()?
        .block_on(client(server, region).get_json("/berth/v1/join-tokens"))
        .with_context(|| format!("cannot list join tokens at {server}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "{:<8} {:<24} {:<8} {:>5} {:<24} DESCRIPTION",
        "ID", "CLUSTER", "STATUS", "USES", "EXPIRES"
    );
    for t in all["tokens"].as_array().into_iter().flatten() {
        let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
        println!(
            "{:<8} {:<24} {:<8} {:>5} {:<24} {}",
            s("id"),
            s("cluster"),
            s("status"),
            t["uses"].as_u64().unwrap_or_default(),
            s("expiresAt"),
            s("description")
        );
    }
    Ok(())
}

pub fn revoke(server: &str, region: &str, id: &str) -> anyhow::Result<()> {
    let _: Value = runtime()?
        .block_on(client(server, region).own_route(
            "DELETE",
            &format!("/berth/v1/join-tokens/{}", encode(id)),
            None,
        ))
        .with_context(|| format!("cannot revoke join token {id} at {server}"))?;
    eprintln!("join token {id} revoked");
    Ok(())
}
