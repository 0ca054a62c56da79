//! A task on its own kernel: gVisor's `runsc` behind Docker, one sandbox
//! per task.
//!
//! Docker hands each container to an OCI runtime by name. Berth registers
//! [`RUNTIME`] with the engine: a small script that runs `berth oci-runsc`
//! ([`shim_main`]), which puts the containers of one task into one gVisor
//! sandbox and then runs `runsc`. Docker cannot say which sandbox a
//! container belongs to (Debian's engine predates container annotations),
//! so the agent marks each container's environment with [`MARK_ENV`]: `root`
//! for the task's pause container, which boots the sandbox, and the pause
//! container's id for the task's own containers, which join it. The shim
//! turns the mark into the annotations runsc reads and strips it, so the
//! container never sees it.
//!
//! Two things differ between runc's contract, which Docker's shim expects,
//! and runsc's for a container that joins a sandbox:
//! - its process lives in the sandbox, not under the shim, so the pid the
//!   shim is given must be a child of the shim's that ends with the
//!   container: a waiter ([`waiter`]) that runs `runsc wait` and exits with
//!   the container's status;
//! - runsc takes the container's standard streams when it is started, not
//!   when it is created, and Docker only hands them over at create. The
//!   waiter keeps them from the create and performs the start itself when
//!   the shim's `start` asks it to over a socket.
//!
//! Networking: the sandbox runs its own network stack (gVisor's netstack)
//! on the task's interface. Debian's runsc refuses to start it on current
//! kernels: it decides whether it is in the host's network namespace by
//! whether `/proc/sys/net/core/rmem_default` exists, which it does in
//! every namespace now. The shim runs `runsc create` in a mount namespace
//! of its own with `/proc/sys/net` hidden, which is what that check looks
//! at and nothing else needs (and `runsc start`, where the network is set up). The host's stack (`--network=host`) is not
//! an option: this runsc returns EAGAIN from a blocking `read` on a socket
//! with nothing yet to read, which breaks ordinary clients. Since netstack
//! takes packets off the interface before the namespace's own packet
//! filter sees them, a sandboxed task's security groups are enforced on
//! the host side of its interface instead ([`crate::firewall`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// The runtime's name in the engine.
pub const RUNTIME: &str = "berth-runsc";
/// The environment variable that tells the shim where a container goes.
pub const MARK_ENV: &str = "BERTH_SANDBOX";
/// [`MARK_ENV`]'s value for the container that boots a task's sandbox.
pub const ROOT: &str = "root";
/// Where the registered script lives: it names the berth binary, which
/// may move between starts, while the engine's configuration stays put.
pub const SCRIPT: &str = "/var/lib/berth/runtimes/berth-runsc";
/// Tells a waiter the cgroup of the container it stands in for
/// (cgroupfs style paths only).
const CGROUP_ENV: &str = "BERTH_RUNSC_CGROUP";
/// Waiters' sockets, one per container that joins a sandbox.
const SOCKETS: &str = "/run/berth-runsc";

/// Flags runsc runs every container with: ptrace is the platform that
/// works without nested virtualisation.
const RUNSC_FLAGS: [&str; 1] = ["--platform=ptrace"];

/// runsc with `/proc/sys/net` hidden, for the commands that set up the
/// sandbox's network (`create`, and `start`, where this runsc does it).
fn runsc_hidden_net(runsc_path: &Path, argv: &[String]) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs /proc/sys/net && exec \"$0\" \"$@\"",
    ])
    .arg(runsc_path)
    .args(RUNSC_FLAGS)
    .args(argv);
    c
}

/// Keeps a runsc that boots no sandbox from waiting on the kernel at start.
///
/// Every runsc, whatever its command, registers for expedited memory
/// barriers as it starts (gVisor's `hostmm`), and that call waits for an
/// RCU grace period: about 20 ms of the 25 a `runsc state` takes here, paid
/// by each create, start and wait of a container that joins a sandbox, and
/// by the gofer its create spawns. Only a Sentry uses those barriers, and
/// runsc does without them where the kernel lacks the call, so the
/// commands that boot no Sentry are told it does not exist. Applies to
/// this process and everything it then runs; best effort, since without
/// it runsc only starts slower.
fn without_membarrier() {
    let Ok(arch) = seccompiler::TargetArch::try_from(std::env::consts::ARCH) else {
        return;
    };
    let filter = seccompiler::SeccompFilter::new(
        [(libc::SYS_membarrier, vec![])].into(),
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    );
    let Ok(program) = filter.and_then(seccompiler::BpfProgram::try_from) else {
        return;
    };
    let _ = seccompiler::apply_filter(&program);
}

/// runc's global flags that take a value.
const GLOBAL_WITH_VALUE: [&str; 4] = ["--root", "--log", "--log-format", "--criu"];

/// What the shim must do with a container, from its mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// No mark: a container of its own sandbox.
    Alone,
    /// Boots a task's sandbox.
    Root,
    /// Joins the sandbox of this container id.
    Join(String),
}

/// Takes the mark out of an OCI process's `env`.
fn take_mark(process: &mut serde_json::Value) -> Option<String> {
    let env = process.get_mut("env")?.as_array_mut()?;
    let prefix = format!("{MARK_ENV}=");
    let mut mark = None;
    env.retain(|e| match e.as_str().and_then(|s| s.strip_prefix(&prefix)) {
        Some(v) => {
            mark = Some(v.to_string());
            false
        }
        None => true,
    });
    mark
}

/// Rewrites a bundle's `config.json` for runsc: the mark becomes the
/// sandbox annotations and leaves the environment.
pub fn rewrite_spec(spec: &mut serde_json::Value) -> Placement {
    let Some(mark) = spec.get_mut("process").and_then(take_mark) else {
        return Placement::Alone;
    };
    let placement = if mark == ROOT {
        Placement::Root
    } else {
        Placement::Join(mark)
    };
    let annotations = spec.as_object_mut().map(|o| {
        o.entry("annotations")
            .or_insert_with(|| serde_json::json!({}))
    });
    if let Some(serde_json::Value::Object(a)) = annotations {
        match &placement {
            Placement::Root => {
                a.insert("io.kubernetes.cri.container-type".into(), "sandbox".into());
            }
            Placement::Join(id) => {
                a.insert(
                    "io.kubernetes.cri.container-type".into(),
                    "container".into(),
                );
                a.insert("io.kubernetes.cri.sandbox-id".into(), id.clone().into());
            }
            Placement::Alone => {}
        }
    }
    placement
}

/// A runc command line split into its global flags, the command, and the
/// command's own arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub global: Vec<String>,
    pub command: String,
    pub args: Vec<String>,
}

impl Invocation {
    pub fn parse(argv: &[String]) -> Option<Invocation> {
        let mut i = 0;
        while i < argv.len() {
            let a = &argv[i];
            if !a.starts_with('-') {
                return Some(Invocation {
                    global: argv[..i].to_vec(),
                    command: a.clone(),
                    args: argv[i + 1..].to_vec(),
                });
            }
            i += if GLOBAL_WITH_VALUE.contains(&a.as_str()) {
                2
            } else {
                1
            };
        }
        None
    }

    /// The value of the command's option `names` (`--x v` or `--x=v`).
    fn option(&self, names: &[&str]) -> Option<(usize, String)> {
        let mut i = 0;
        while i < self.args.len() {
            let a = &self.args[i];
            for n in names {
                if a == n {
                    return self.args.get(i + 1).map(|v| (i + 1, v.clone()));
                }
                if let Some(v) = a.strip_prefix(&format!("{n}=")) {
                    return Some((i, v.to_string()));
                }
            }
            i += 1;
        }
        None
    }

    fn set_option(&mut self, at: usize, names: &[&str], value: &str) {
        let a = &self.args[at];
        self.args[at] = match names.iter().find(|n| a.starts_with(&format!("{n}="))) {
            Some(n) => format!("{n}={value}"),
            None => value.to_string(),
        };
    }

    /// The container id: the last argument.
    fn id(&self) -> Option<&str> {
        self.args.last().map(String::as_str)
    }

    fn to_argv(&self) -> Vec<String> {
        let mut v = self.global.clone();
        v.push(self.command.clone());
        v.extend(self.args.iter().cloned());
        v
    }
}

fn socket_path(id: &str) -> PathBuf {
    Path::new(SOCKETS).join(format!("{id}.sock"))
}

fn runsc(runsc: &Path, global: &[String]) -> Command {
    let mut c = Command::new(runsc);
    c.args(RUNSC_FLAGS).args(global);
    c
}

fn exit_code(s: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code()
        .or_else(|| s.signal().map(|n| 128 + n))
        .unwrap_or(1)
}

fn fail(what: impl std::fmt::Display) -> i32 {
    eprintln!("berth-runsc: {what}");
    1
}

fn edit_json(
    path: &Path,
    edit: impl FnOnce(&mut serde_json::Value) -> Placement,
) -> std::io::Result<Placement> {
    let text = std::fs::read(path)?;
    let mut v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let placement = edit(&mut v);
    std::fs::write(path, serde_json::to_vec(&v)?)?;
    Ok(placement)
}

/// `berth oci-runsc --runsc PATH -- RUNC-ARGS...`: what the engine runs in
/// place of runc. Returns the exit code.
pub fn shim_main(runsc_path: &Path, argv: &[String]) -> i32 {
    let parsed = Invocation::parse(argv);
    // A create may boot a sandbox: it decides once it has read the bundle.
    if parsed.as_ref().is_none_or(|i| i.command != "create") {
        without_membarrier();
    }
    let Some(mut inv) = parsed else {
        // `--version` and the like.
        return match runsc(runsc_path, &[]).args(argv).status() {
            Ok(s) => exit_code(s),
            Err(e) => fail(e),
        };
    };
    match inv.command.as_str() {
        "create" => {
            let bundle = inv
                .option(&["--bundle", "-b"])
                .map_or_else(|| PathBuf::from("."), |(_, b)| PathBuf::from(b));
            let mut cgroup = None;
            let placement = match edit_json(&bundle.join("config.json"), |spec| {
                cgroup = spec
                    .pointer("/linux/cgroupsPath")
                    .and_then(|p| p.as_str())
                    .filter(|p| p.starts_with('/'))
                    .map(String::from);
                rewrite_spec(spec)
            }) {
                Ok(p) => p,
                Err(e) => return fail(format!("reading the bundle: {e}")),
            };
            if let Placement::Join(_) = placement {
                without_membarrier();
                return create_joining(runsc_path, inv, cgroup.as_deref());
            }
            use std::os::unix::process::CommandExt;
            let e = runsc_hidden_net(runsc_path, &inv.to_argv()).exec();
            return fail(format!("running unshare: {e}"));
        }
        "exec" => {
            if let Some((_, p)) = inv.option(&["--process", "-p"]) {
                if let Err(e) = edit_json(Path::new(&p), |v| {
                    take_mark(v);
                    Placement::Alone
                }) {
                    return fail(format!("reading the process: {e}"));
                }
            }
        }
        "start" => {
            if let Some(id) = inv.id() {
                let sock = socket_path(id);
                if sock.exists() {
                    return start_joining(&sock);
                }
            }
            use std::os::unix::process::CommandExt;
            let e = runsc_hidden_net(runsc_path, &inv.to_argv()).exec();
            return fail(format!("running unshare: {e}"));
        }
        "delete" => {
            if let Some(id) = inv.id() {
                // A container created and never started: its waiter goes.
                if let Ok(mut s) = UnixStream::connect(socket_path(id)) {
                    let _ = s.write_all(b"delete\n");
                }
            }
        }
        _ => {}
    }
    let args = inv.to_argv();
    inv.args.clear();
    use std::os::unix::process::CommandExt;
    let e = runsc(runsc_path, &[]).args(args).exec();
    fail(format!("running {}: {e}", runsc_path.display()))
}

/// `create` of a container that joins a sandbox: runsc creates it, and a
/// waiter that holds its streams stands in for its process.
fn create_joining(runsc_path: &Path, mut inv: Invocation, cgroup: Option<&str>) -> i32 {
    let Some(id) = inv.id().map(String::from) else {
        return fail("create without a container id");
    };
    let Some((at, pid_file)) = inv.option(&["--pid-file"]) else {
        return fail("create without --pid-file");
    };
    inv.set_option(at, &["--pid-file"], &format!("{pid_file}.runsc"));
    // A joining container sets up no network: runsc as it is.
    match runsc(runsc_path, &[]).args(inv.to_argv()).status() {
        Ok(s) if s.success() => {}
        Ok(s) => return exit_code(s),
        Err(e) => return fail(e),
    }
    if let Err(e) = std::fs::create_dir_all(SOCKETS) {
        return fail(format!("{SOCKETS}: {e}"));
    }
    let sock = socket_path(&id);
    let _ = std::fs::remove_file(&sock);
    let me = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    use std::os::unix::process::CommandExt;
    // The waiter keeps this process's streams, which are the container's;
    // its own group, so the engine's signals to the shim's children do not
    // reach it before the container ends.
    let mut waiter = Command::new(me);
    if let Some(path) = cgroup {
        waiter.env(CGROUP_ENV, path);
    }
    let waiter = waiter
        .arg("oci-runsc")
        .arg("--runsc")
        .arg(runsc_path)
        .arg("--wait")
        .arg("--")
        .args(&inv.global)
        .arg(&id)
        .process_group(0)
        .spawn();
    let waiter = match waiter {
        Ok(w) => w,
        Err(e) => return fail(format!("starting the waiter: {e}")),
    };
    // The shim's `start` may come at once: only answer once the waiter
    // listens.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        if std::time::Instant::now() > deadline {
            return fail("the waiter did not come up");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if let Err(e) = std::fs::write(&pid_file, waiter.id().to_string()) {
        return fail(format!("{pid_file}: {e}"));
    }
    0
}

/// The shim's `start` of a container that joins a sandbox: its waiter
/// starts it with the container's streams.
fn start_joining(sock: &Path) -> i32 {
    let mut s = match UnixStream::connect(sock) {
        Ok(s) => s,
        Err(e) => return fail(format!("reaching the waiter: {e}")),
    };
    if let Err(e) = s.write_all(b"start\n") {
        return fail(e);
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    match answer.trim().parse::<i32>() {
        Ok(code) => code,
        Err(_) => fail(format!("the waiter said {answer:?}")),
    }
}

/// The waiter of a container that joins a sandbox (`global` are runsc's
/// global flags): starts it when asked, then waits for it and exits with
/// its status. Returns the exit code.
pub fn waiter(runsc_path: &Path, global: &[String], id: &str) -> i32 {
    let sock = socket_path(id);
    let listener = match UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => return fail(format!("{}: {e}", sock.display())),
    };
    // The engine reads and changes a container's resources through the
    // cgroup of the pid it was given: this process's, which must then be
    // the container's own rather than the engine's. Joined once the create
    // can answer, since a move between cgroups waits on the kernel (an RCU
    // grace period) while the engine has its own work to do before the
    // start; the start is only read after it.
    if let Some(path) = std::env::var_os(CGROUP_ENV) {
        join_cgroup(&path.to_string_lossy());
    }
    // A container deleted without a start would leave its waiter behind
    // if the shim's delete never came through here.
    let (g, i, r) = (global.to_vec(), id.to_string(), runsc_path.to_path_buf());
    let sock_gone = sock.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(2));
        let state = runsc(&r, &g)
            .arg("state")
            .arg(&i)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(state, Ok(s) if s.success()) {
            let _ = std::fs::remove_file(&sock_gone);
            std::process::exit(137);
        }
    });
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut line = String::new();
        let _ = BufReader::new(&conn).read_line(&mut line);
        match line.trim() {
            "start" => {
                let started = runsc(runsc_path, global).arg("start").arg(id).status();
                let code = match started {
                    Ok(s) => exit_code(s),
                    Err(e) => fail(e),
                };
                let _ = conn.write_all(code.to_string().as_bytes());
                drop(conn);
                if code != 0 {
                    let _ = std::fs::remove_file(&sock);
                    return code;
                }
                break;
            }
            "delete" => {
                let _ = std::fs::remove_file(&sock);
                return 137;
            }
            _ => {}
        }
    }
    let _ = std::fs::remove_file(&sock);
    drop(listener);
    // The streams stay with the container now; the waiter's own output
    // must not land in its logs.
    let out = runsc(runsc_path, global)
        .arg("wait")
        .arg(id)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) => serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .ok()
            .and_then(|v| v.get("exitStatus").and_then(|s| s.as_i64()))
            .map_or(255, |s| (s & 0xff) as i32),
        Err(_) => 255,
    }
}

/// Moves this process into cgroup `path` of every hierarchy that has it.
fn join_cgroup(path: &str) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let me = std::process::id().to_string();
    for line in mounts.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if !matches!(right.split_whitespace().next(), Some("cgroup" | "cgroup2")) {
            continue;
        }
        let Some(point) = left.split_whitespace().nth(4) else {
            continue;
        };
        let dir = Path::new(point).join(path.trim_start_matches('/'));
        if dir.is_dir() {
            let _ = std::fs::write(dir.join("cgroup.procs"), &me);
        }
    }
}

/// The engine's configuration file, where runtimes are registered.
pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// Where the engine writes its process id.
const DAEMON_PID: &str = "/var/run/docker.pid";

/// The script the engine runs for [`RUNTIME`].
pub fn script(runsc: &Path, shim: &Path) -> String {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    format!(
        "#!/bin/sh\n# Written by the berth agent: the engine's {RUNTIME} runtime.\nexec {} oci-runsc --runsc {} -- \"$@\"\n",
        quote(shim),
        quote(runsc)
    )
}

/// Checks that `runsc` runs and writes [`SCRIPT`] to run it through `shim`,
/// unless it already says exactly that.
pub fn install_script(runsc: &Path, shim: &Path) -> Result<(), String> {
    let version = Command::new(runsc)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "{}: {e} (Debian's runsc package provides gVisor)",
                runsc.display()
            )
        })?;
    if !version.status.success() {
        return Err(format!(
            "{} --version failed: {}",
            runsc.display(),
            String::from_utf8_lossy(&version.stderr).trim()
        ));
    }
    let want = script(runsc, shim);
    let path = Path::new(SCRIPT);
    if std::fs::read_to_string(path).is_ok_and(|have| have == want) {
        return Ok(());
    }
    let dir = path.parent().expect("the script has a directory");
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Agents of one engine may start together: each writes whole, and the
    // rename lands one of them.
    let tmp = dir.join(format!(".{RUNTIME}.{}", std::process::id()));
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(&tmp, want)
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `config` (the engine's daemon.json) with [`RUNTIME`] registered;
/// everything else in it is kept.
pub fn with_runtime(config: &str) -> Result<String, String> {
    let mut v: serde_json::Value = if config.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(config).map_err(|e| format!("{DAEMON_JSON}: {e}"))?
    };
    let o = v
        .as_object_mut()
        .ok_or_else(|| format!("{DAEMON_JSON} is not a JSON object"))?;
    let runtimes = o.entry("runtimes").or_insert_with(|| serde_json::json!({}));
    let runtimes = runtimes
        .as_object_mut()
        .ok_or_else(|| format!("{DAEMON_JSON}: runtimes is not an object"))?;
    runtimes.insert(RUNTIME.into(), serde_json::json!({ "path": SCRIPT }));
    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())
}

/// Registers [`RUNTIME`] in the local engine's daemon.json and has the
/// engine reload it (SIGHUP reloads runtimes without a restart).
pub fn register_with_engine() -> Result<(), String> {
    let have = match std::fs::read_to_string(DAEMON_JSON) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{DAEMON_JSON}: {e}")),
    };
    let want = with_runtime(&have)?;
    if let Some(dir) = Path::new(DAEMON_JSON).parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(DAEMON_JSON, want).map_err(|e| format!("{DAEMON_JSON}: {e}"))?;
    let pid = std::fs::read_to_string(DAEMON_PID)
        .map_err(|e| format!("{DAEMON_PID}: {e}: is the engine local?"))?;
    let status = Command::new("kill")
        .args(["-HUP", pid.trim()])
        .status()
        .map_err(|e| format!("signalling the engine: {e}"))?;
    if !status.success() {
        return Err(format!("could not signal the engine (pid {})", pid.trim()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_mark_becomes_annotations_and_leaves_the_environment() {
        let mut root = json!({"process": {"env": ["PATH=/bin", "BERTH_SANDBOX=root"]}});
        assert_eq!(rewrite_spec(&mut root), Placement::Root);
        assert_eq!(root["process"]["env"], json!(["PATH=/bin"]));
        assert_eq!(
            root["annotations"]["io.kubernetes.cri.container-type"],
            "sandbox"
        );
        let mut joining =
            json!({"process": {"env": ["BERTH_SANDBOX=abc", "A=1"]}, "annotations": {"x": "y"}});
        assert_eq!(rewrite_spec(&mut joining), Placement::Join("abc".into()));
        assert_eq!(joining["process"]["env"], json!(["A=1"]));
        assert_eq!(
            joining["annotations"]["io.kubernetes.cri.sandbox-id"],
            "abc"
        );
        assert_eq!(joining["annotations"]["x"], "y");
        let mut alone = json!({"process": {"env": ["A=1"]}});
        assert_eq!(rewrite_spec(&mut alone), Placement::Alone);
        assert!(alone.get("annotations").is_none());
    }

    #[test]
    fn runc_command_lines_split_into_global_flags_command_and_options() {
        let inv = Invocation::parse(&argv(
            "--root /r --log /l.json --log-format json --systemd-cgroup create --bundle /b --pid-file /p.pid id1",
        ))
        .expect("parsed");
        assert_eq!(
            inv.global,
            argv("--root /r --log /l.json --log-format json --systemd-cgroup")
        );
        assert_eq!(inv.command, "create");
        assert_eq!(
            inv.option(&["--bundle", "-b"]).map(|x| x.1),
            Some("/b".into())
        );
        assert_eq!(inv.id(), Some("id1"));
        let mut inv = Invocation::parse(&argv("create --pid-file=/p id2")).expect("parsed");
        let (at, _) = inv.option(&["--pid-file"]).expect("pid file");
        inv.set_option(at, &["--pid-file"], "/p.runsc");
        assert_eq!(inv.to_argv(), argv("create --pid-file=/p.runsc id2"));
        assert_eq!(Invocation::parse(&argv("--version")), None);
    }

    #[test]
    fn registering_keeps_the_rest_of_the_engine_configuration() {
        let out = with_runtime(r#"{"debug": true, "runtimes": {"other": {"path": "/x"}}}"#)
            .expect("merged");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["debug"], true);
        assert_eq!(v["runtimes"]["other"]["path"], "/x");
        assert_eq!(v["runtimes"][RUNTIME]["path"], SCRIPT);
        let v: serde_json::Value =
            serde_json::from_str(&with_runtime("").expect("fresh")).expect("json");
        assert_eq!(v["runtimes"][RUNTIME]["path"], SCRIPT);
        assert!(with_runtime("[1]").is_err());
        let s = script(Path::new("/usr/bin/runsc"), Path::new("/opt/it's/berth"));
        assert!(s.contains(r"exec '/opt/it'\''s/berth' oci-runsc --runsc '/usr/bin/runsc' -- "));
    }
}
