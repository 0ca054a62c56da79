//! The launchers an Auto Scaling group starts machines with
//! ([`berth_control::launcher::Launcher`]):
//!
//! - [`NetnsLauncher`]: a real `berth agent` in a fresh network namespace
//!   of this machine, joined to it by a veth pair, reaching the server
//!   through the host end of the pair. A second host in every way but the
//!   hardware: for the demo and for CI. Its tasks run on this machine's
//!   engine, so terminating it also removes the containers its agent
//!   started (a terminated machine takes its containers with it).
//! - [`ExecLauncher`]: an operator's script, run with the launch's
//!   details in its environment, that boots a machine anywhere (a VM, a
//!   box over SSH, a cloud CLI) which then runs `berth agent`.

use berth_control::launcher::{LaunchRequest, Launcher};
use berth_runtime::ContainerRuntime;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;

/// Runs a command; Err with its stderr when it fails.
async fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// An EC2 host's network namespace, its link and the forwarding rule.
struct Link {
    ns: String,
    outside: String,
    forward: Vec<String>,
    host: Ipv4Addr,
    addr: Ipv4Addr,
}

/// Starts agents in network namespaces of this machine.
pub struct NetnsLauncher {
    berth: PathBuf,
    /// Where the server listens; agents reach it through the host end of
    /// their link (a loopback or wildcard address is forwarded to
    /// 127.0.0.1).
    server: (IpAddr, u16),
    https: bool,
    dir: PathBuf,
    runtime: Arc<dyn ContainerRuntime>,
    agent_args: Vec<String>,
}

impl NetnsLauncher {
    /// `berth` is the binary to run as the agent; `dir` holds each
    /// launch's state and logs; `agent_args` are added to every agent's
    /// command line.
    pub fn new(
        berth: PathBuf,
        server: (IpAddr, u16),
        https: bool,
        dir: PathBuf,
        runtime: Arc<dyn ContainerRuntime>,
        agent_args: Vec<String>,
    ) -> Self {
        NetnsLauncher {
            berth,
            server,
            https,
            dir,
            runtime,
            agent_args,
        }
    }

    fn names(instance_id: &str) -> (String, String, String) {
        let tail: String = instance_id
            .chars()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        (
            format!("berth-{instance_id}"),
            format!("bv{tail}o"),
            format!("bv{tail}i"),
        )
    }

    /// A /30 of 10.234.0.0/16 no interface of this machine uses.
    async fn free_link() -> Result<(Ipv4Addr, Ipv4Addr), String> {
        let out = Command::new("ip")
            .args(["-4", "-o", "addr", "show"])
            .output()
            .await
            .map_err(|e| format!("ip: {e}"))?;
        let used = String::from_utf8_lossy(&out.stdout).to_string();
        for _ in 0..64 {
            let n: u16 = rand_u16() & 0x3fff;
            let base = u32::from(Ipv4Addr::new(10, 234, 0, 0)) + u32::from(n) * 4;
            let host = Ipv4Addr::from(base + 1);
            let inside = Ipv4Addr::from(base + 2);
            if !used.contains(&format!("{host}/")) && !used.contains(&format!("{inside}/")) {
                return Ok((host, inside));
            }
        }
        Err("no free address for the instance's link".into())
    }

    /// The namespace and link of an EC2 host: the agent inside reaches
    /// the server at the host end, forwarded to `to`:`port`.
    async fn link(&self, instance_id: &str, to: &str, port: &str) -> Result<Link, String> {
        let (ns, outside, inside) = Self::names(instance_id);
        let (host, addr) = Self::free_link().await?;
        let forward: Vec<String> = [
            "PREROUTING",
            "-i",
            &outside,
            "-p",
            "tcp",
            "-d",
            &host.to_string(),
            "--dport",
            port,
            "-j",
            "DNAT",
            "--to-destination",
            &format!("{to}:{port}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let setup = async {
            run("ip", &["netns", "add", &ns]).await?;
            run(
                "ip",
                &[
                    "link", "add", &outside, "type", "veth", "peer", "name", &inside,
                ],
            )
            .await?;
            run("ip", &["link", "set", &inside, "netns", &ns]).await?;
            run(
                "ip",
                &["addr", "add", &format!("{host}/30"), "dev", &outside],
            )
            .await?;
            run("ip", &["link", "set", &outside, "up"]).await?;
            let in_ns = |args: &[&str]| {
                let mut all = vec!["netns", "exec", ns.as_str(), "ip"];
                all.extend_from_slice(args);
                all.into_iter().map(str::to_string).collect::<Vec<_>>()
            };
            for args in [
                in_ns(&["addr", "add", &format!("{addr}/30"), "dev", &inside]),
                in_ns(&["link", "set", &inside, "up"]),
                in_ns(&["link", "set", "lo", "up"]),
                in_ns(&["route", "add", "default", "via", &host.to_string()]),
            ] {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                run("ip", &refs).await?;
            }
            // Connections to the host end are forwarded to the server's
            // loopback listener.
            std::fs::write(
                format!("/proc/sys/net/ipv4/conf/{outside}/route_localnet"),
                "1",
            )
            .map_err(|e| format!("route_localnet: {e}"))?;
            let mut args: Vec<&str> = vec!["-t", "nat", "-A"];
            args.extend(forward.iter().map(String::as_str));
            run("iptables", &args).await?;
            Ok::<(), String>(())
        };
        if let Err(e) = setup.await {
            Self::undo_network(&ns, &outside, Some(&forward)).await;
            return Err(e);
        }
        Ok(Link {
            ns,
            outside,
            forward,
            host,
            addr,
        })
    }

    fn state_dir(&self, instance_id: &str) -> PathBuf {
        self.dir.join(instance_id)
    }

    async fn undo_network(ns: &str, outside: &str, forward: Option<&[String]>) {
        if let Some(rule) = forward {
            let mut args: Vec<&str> = vec!["-t", "nat", "-D"];
            args.extend(rule.iter().map(String::as_str));
            let _ = run("iptables", &args).await;
        }
        let _ = run("ip", &["link", "del", outside]).await;
        let _ = run("ip", &["netns", "del", ns]).await;
    }
}

fn rand_u16() -> u16 {
    // Seeded from the clock and the process: addresses only need to differ.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (t ^ (t >> 16) ^ std::process::id()) as u16
}

#[async_trait::async_trait]
impl Launcher for NetnsLauncher {
    fn name(&self) -> &'static str {
        "netns"
    }

    async fn launch(&self, req: &LaunchRequest) -> Result<(), String> {
        let dir = self.state_dir(&req.instance_id);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let port = self.server.1.to_string();
        let to = match self.server.0 {
            ip if ip.is_loopback() || ip.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
            ip => ip.to_string(),
        };
        let scheme = if self.https { "https" } else { "http" };
        // A Fargate pool host runs in this machine's own namespace: its
        // tasks' awsvpc plumbing (bridges, their sysctls, iptables) must
        // see what the engine sees, which an agent in a namespace of its
        // own does not. It is a host of its own in every other way.
        let (net, server) = if req.fargate {
            (None, format!("{scheme}://{to}:{port}"))
        } else {
            let net = self.link(&req.instance_id, &to, &port).await?;
            let server = format!("{scheme}://{}:{port}", net.host);
            (Some(net), server)
        };
        let log =
            std::fs::File::create(dir.join("agent.log")).map_err(|e| format!("agent.log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = match &net {
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &n.ns]).arg(&self.berth);
                c
            }
            None => Command::new(&self.berth),
        };
        cmd.args(["agent", "--server", &server])
            .args(if req.fargate {
                ["--capacity", "fargate"]
            } else {
                ["--cluster", req.cluster.as_str()]
            })
            .arg("--data-dir")
            .arg(dir.join("agent"))
            .args(["--instance-id", &req.instance_id])
            .args(["--availability-zone", &req.zone])
            .args(["--region", &req.region])
            .args(["--token", &req.join_token]);
        if !req.fargate {
            // The server's own isolation settings are for the Fargate
            // pool's hosts; an EC2 host would refuse them.
            cmd.env_remove("BERTH_ISOLATION").env_remove("BERTH_RUNSC");
        }
        if let Some(t) = &req.fields.instance_type {
            cmd.args(["--attribute", &format!("ecs.instance-type={t}")]);
        }
        cmd.args(&self.agent_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            // A machine outlives the server that launched it.
            .process_group(0)
            .kill_on_drop(false);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if let Some(n) = &net {
                    Self::undo_network(&n.ns, &n.outside, Some(&n.forward)).await;
                }
                return Err(format!("cannot start the agent: {e}"));
            }
        };
        // What was set up, kept with it so that terminate (from this server
        // or the next leader) can undo it.
        let record = match &net {
            Some(n) => serde_json::json!({
                "ns": n.ns, "outside": n.outside, "forward": n.forward,
                "pid": child.id(), "host": n.host.to_string(), "address": n.addr.to_string(),
            }),
            None => serde_json::json!({ "pid": child.id() }),
        };
        std::fs::write(dir.join("launch.json"), record.to_string())
            .map_err(|e| format!("launch.json: {e}"))?;
        // Reap it when it exits, so it does not linger as a zombie.
        tokio::spawn(async move {
            let mut child = child;
            let _ = child.wait().await;
        });
        match &net {
            Some(n) => {
                tracing::info!(instance = %req.instance_id, ns = %n.ns, addr = %n.addr, "launched a host in a network namespace")
            }
            None => {
                tracing::info!(instance = %req.instance_id, "launched a Fargate pool host on this machine")
            }
        }
        Ok(())
    }

    async fn terminate(
        &self,
        instance_id: &str,
        container_instance: Option<&str>,
    ) -> Result<(), String> {
        let dir = self.state_dir(instance_id);
        let Ok(text) = std::fs::read_to_string(dir.join("launch.json")) else {
            return Ok(());
        };
        let rec: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if let Some(pid) = rec["pid"].as_u64() {
            let group = format!("-{pid}");
            let _ = run("kill", &["-TERM", "--", &group]).await;
            for _ in 0..50 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = run("kill", &["-KILL", "--", &group]).await;
        }
        // The machine's containers go with it.
        if let Some(ci) = container_instance {
            if let Ok(list) = self.runtime.list("berth.instance", ci).await {
                for c in list {
                    let _ = self.runtime.stop(&c.id, Duration::from_secs(1)).await;
                    let _ = self.runtime.remove(&c.id).await;
                }
            }
        }
        let forward: Option<Vec<String>> = rec["forward"].as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        });
        if let Some(ns) = rec["ns"].as_str() {
            Self::undo_network(
                ns,
                rec["outside"].as_str().unwrap_or_default(),
                forward.as_deref(),
            )
            .await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        tracing::info!(instance = %instance_id, "terminated a host in a network namespace");
        Ok(())
    }
}

/// Runs an operator's script to start and stop machines.
pub struct ExecLauncher {
    script: PathBuf,
    /// The server URL the machine's agent should use.
    server: String,
    timeout: Duration,
}

impl ExecLauncher {
    pub fn new(script: PathBuf, server: String, timeout: Duration) -> Self {
        ExecLauncher {
            script,
            server,
            timeout,
        }
    }

    async fn call(&self, action: &str, env: Vec<(&str, String)>) -> Result<(), String> {
        let mut cmd = Command::new(&self.script);
        cmd.arg(action)
            .env("BERTH_ACTION", action)
            .env("BERTH_SERVER", &self.server)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.script.display()))?;
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(r) => r.map_err(|e| e.to_string())?,
            Err(_) => {
                return Err(format!(
                    "the launcher script did not finish within {} seconds",
                    self.timeout.as_secs()
                ))
            }
        };
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr
            .trim()
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Err(format!(
            "the launcher script exited with {}: {tail}",
            out.status
                .code()
                .map_or("a signal".into(), |c| c.to_string())
        ))
    }
}

#[async_trait::async_trait]
impl Launcher for ExecLauncher {
    fn name(&self) -> &'static str {
        "exec"
    }

    async fn launch(&self, req: &LaunchRequest) -> Result<(), String> {
        let f = &req.fields;
        let tags: serde_json::Map<String, serde_json::Value> = req
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        self.call(
            "launch",
            vec![
                ("BERTH_GROUP", req.group.clone()),
                ("BERTH_INSTANCE_ID", req.instance_id.clone()),
                ("BERTH_CLUSTER", req.cluster.clone()),
                (
                    "BERTH_CAPACITY",
                    if req.fargate { "fargate" } else { "ec2" }.to_string(),
                ),
                ("BERTH_REGION", req.region.clone()),
                ("BERTH_AVAILABILITY_ZONE", req.zone.clone()),
                ("BERTH_JOIN_TOKEN", req.join_token.clone()),
                (
                    "BERTH_INSTANCE_TYPE",
                    f.instance_type.clone().unwrap_or_default(),
                ),
                ("BERTH_IMAGE_ID", f.image_id.clone().unwrap_or_default()),
                ("BERTH_KEY_NAME", f.key_name.clone().unwrap_or_default()),
                ("BERTH_USER_DATA", f.user_data.clone().unwrap_or_default()),
                ("BERTH_TAGS", serde_json::Value::Object(tags).to_string()),
            ],
        )
        .await
    }

    async fn terminate(
        &self,
        instance_id: &str,
        container_instance: Option<&str>,
    ) -> Result<(), String> {
        self.call(
            "terminate",
            vec![
                ("BERTH_INSTANCE_ID", instance_id.to_string()),
                (
                    "BERTH_CONTAINER_INSTANCE",
                    container_instance.unwrap_or_default().to_string(),
                ),
            ],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("launch.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("written");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    fn req() -> LaunchRequest {
        LaunchRequest {
            group: "g".into(),
            instance_id: "i-0123456789abcdef0".into(),
            cluster: "c".into(),
            fargate: false,
            zone: "local-1a".into(),
            region: "us-east-1".into(),
            join_token: "tok".into(),
            fields: berth_domain::asg::LaunchFields {
                instance_type: Some("t3.micro".into()),
                ..Default::default()
            },
            tags: vec![("team".into(), "a".into())],
        }
    }

    #[tokio::test]
    async fn the_script_gets_the_launch_in_its_environment() {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("env");
        let s = script(
            dir.path(),
            &format!(
                "env | grep ^BERTH_ | sort > {}; echo \"$1\" >> {}",
                out.display(),
                out.display()
            ),
        );
        let l = ExecLauncher::new(s, "http://10.0.0.1:8750".into(), Duration::from_secs(10));
        l.launch(&req()).await.expect("launched");
        let env = std::fs::read_to_string(&out).expect("env");
        for want in [
            "BERTH_INSTANCE_ID=i-0123456789abcdef0",
            "BERTH_SERVER=http://10.0.0.1:8750",
            "BERTH_JOIN_TOKEN=tok",
            "BERTH_INSTANCE_TYPE=t3.micro",
            "BERTH_TAGS={\"team\":\"a\"}",
            "launch",
        ] {
            assert!(env.contains(want), "{want} missing from {env}");
        }
    }

    #[tokio::test]
    async fn a_failing_or_hanging_script_is_an_error_that_says_why() {
        let dir = tempfile::tempdir().expect("dir");
        let s = script(dir.path(), "echo 'no capacity in rack 3' >&2; exit 3");
        let l = ExecLauncher::new(s, "u".into(), Duration::from_secs(10));
        let e = l.launch(&req()).await.expect_err("failed");
        assert!(
            e.contains("exited with 3") && e.contains("no capacity in rack 3"),
            "{e}"
        );
        let s = script(dir.path(), "sleep 30");
        let l = ExecLauncher::new(s, "u".into(), Duration::from_millis(300));
        let e = l.terminate("i-1", None).await.expect_err("timed out");
        assert!(e.contains("did not finish within"), "{e}");
    }
}
