//! Task cgroups: the cpu and memory that a task's containers share (ECS's
//! task-level limits; the ECS agent's `/ecs/<task>` cgroup). Each container
//! is created under its task's cgroup (the engine's cgroup parent), so the
//! kernel bounds the sum, not each container alone. This module makes the
//! parent and writes its limits: for an engine on the cgroupfs driver, a
//! directory under `berth` in each hierarchy (cgroup v1) or in the unified
//! one (v2); for an engine on the systemd driver (a stock Debian 12 or
//! Ubuntu host: cgroup v2, systemd), a transient slice `berth-<task>.slice`
//! that systemd makes with the limits as its properties, since systemd
//! owns that tree and resets what others write in it.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

/// The directory under each hierarchy that holds Berth's task cgroups.
pub const PARENT: &str = "berth";

/// CFS period for task cpu quotas, as the ECS agent uses.
const CPU_PERIOD_US: i64 = 100_000;

/// Task-level limits, in ECS units: cpu units (1024 per vCPU) and MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskLimits {
    pub cpu_units: Option<i64>,
    pub memory_mib: Option<i64>,
}

/// Where the engine's cgroups live and how they are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One hierarchy per controller: `<root>/memory`, `<root>/cpu`, ...
    V1(PathBuf),
    /// The unified hierarchy at `<root>`.
    V2(PathBuf),
    /// Slices systemd makes, on cgroup v2 (`unified`) or v1.
    Systemd { unified: bool },
}

/// The systemd properties that give a slice a task's limits. CPUWeight
/// and CPUQuota apply on both cgroup versions; memory is MemoryMax on v2
/// and MemoryLimit on v1.
pub fn systemd_properties(limits: TaskLimits, unified: bool) -> Vec<(&'static str, u64)> {
    let mut out = vec![];
    if let Some(mib) = limits.memory_mib {
        let key = if unified { "MemoryMax" } else { "MemoryLimit" };
        out.push((key, (mib.max(0) as u64) * 1024 * 1024));
    }
    if let Some(units) = limits.cpu_units {
        out.push(("CPUWeight", weight(units) as u64));
        // CPU time per second of wall time, in microseconds.
        out.push(("CPUQuotaPerSecUSec", (quota_us(units) as u64) * 10));
    }
    out
}

/// The slice of task `task` (systemd reads dashes as nesting, so it sits
/// in `berth.slice`).
pub fn slice_name(task: &str) -> String {
    format!("berth-{}.slice", task.replace('-', "_"))
}

/// `busctl` arguments that start `slice` as a transient unit with
/// `properties`.
pub fn start_slice_args(slice: &str, properties: &[(&str, u64)]) -> Vec<String> {
    let mut args: Vec<String> = [
        "call",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        slice,
        "fail",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(properties.len().to_string());
    for (k, v) in properties {
        args.extend([k.to_string(), "t".into(), v.to_string()]);
    }
    args.push("0".into());
    args
}

/// `systemctl` arguments that change a running slice's limits.
pub fn set_slice_args(slice: &str, properties: &[(&str, u64)]) -> Vec<String> {
    let mut args = vec!["set-property".to_string(), "--runtime".into(), slice.into()];
    for (k, v) in properties {
        // systemctl spells the quota as a percentage of one CPU.
        match *k {
            "CPUQuotaPerSecUSec" => args.push(format!("CPUQuota={}%", v.div_ceil(10_000))),
            _ => args.push(format!("{k}={v}")),
        }
    }
    args
}

fn run(program: &str, args: &[String]) -> io::Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// `what` in `path`, or an error naming the file (sysfs errors say little).
fn write(path: &Path, what: &str) -> io::Result<()> {
    std::fs::write(path, what)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn rmdir(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Docker's conversion from cpu shares (2..262144) to a v2 cpu weight
/// (1..10000), so that a task's weight matches what `--cpu-shares` gives.
fn weight(shares: i64) -> i64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

fn quota_us(units: i64) -> i64 {
    // The kernel refuses quotas under 1 ms.
    (units * CPU_PERIOD_US / 1024).max(1000)
}

impl Layout {
    /// The layout under `root` (normally `/sys/fs/cgroup`) for an engine
    /// that reports `driver` and `version` (`docker info`); `None` when
    /// Berth cannot drive it.
    pub fn detect(root: &Path, driver: &str, version: &str) -> Option<Layout> {
        if driver == "systemd" {
            return match version {
                "1" | "2" => Some(Layout::Systemd {
                    unified: version == "2",
                }),
                _ => None,
            };
        }
        if driver != "cgroupfs" {
            return None;
        }
        match version {
            "1" if root.join("memory").is_dir() => Some(Layout::V1(root.to_path_buf())),
            "2" if root.join("cgroup.controllers").is_file() => {
                Some(Layout::V2(root.to_path_buf()))
            }
            _ => None,
        }
    }

    /// The cgroup parent to create a task's containers under.
    pub fn parent(task: &str) -> String {
        format!("/{PARENT}/{task}")
    }

    /// The cgroup parent for task `task` in this layout.
    pub fn parent_of(&self, task: &str) -> String {
        match self {
            Layout::Systemd { .. } => slice_name(task),
            _ => Layout::parent(task),
        }
    }

    /// Creates the task's cgroup (again, if it exists) with `limits` and
    /// returns the cgroup parent for its containers.
    pub fn create(&self, task: &str, limits: TaskLimits) -> io::Result<String> {
        match self {
            Layout::Systemd { unified } => {
                let slice = slice_name(task);
                let properties = systemd_properties(limits, *unified);
                // Started again (a task's cgroup is made once per start
                // attempt, a warm sandbox's before its task): the running
                // slice takes the limits instead.
                if run("busctl", &start_slice_args(&slice, &properties)).is_err() {
                    run("systemctl", &set_slice_args(&slice, &properties))?;
                }
                return Ok(slice);
            }
            Layout::V1(root) => {
                let memory = root.join("memory").join(PARENT).join(task);
                std::fs::create_dir_all(&memory)?;
                if let Some(mib) = limits.memory_mib {
                    write(
                        &memory.join("memory.limit_in_bytes"),
                        &(mib * 1024 * 1024).to_string(),
                    )?;
                }
                let cpu = root.join("cpu").join(PARENT).join(task);
                std::fs::create_dir_all(&cpu)?;
                if let Some(units) = limits.cpu_units {
                    write(&cpu.join("cpu.shares"), &units.max(2).to_string())?;
                    write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&cpu.join("cpu.cfs_quota_us"), &quota_us(units).to_string())?;
                }
            }
            Layout::V2(root) => {
                // Limits on a cgroup need its parent to hand the controllers
                // down, level by level.
                let berth = root.join(PARENT);
                std::fs::create_dir_all(&berth)?;
                for dir in [root.as_path(), berth.as_path()] {
                    for controller in ["+cpu", "+memory"] {
                        write(&dir.join("cgroup.subtree_control"), controller)?;
                    }
                }
                let group = berth.join(task);
                std::fs::create_dir_all(&group)?;
                if let Some(mib) = limits.memory_mib {
                    write(&group.join("memory.max"), &(mib * 1024 * 1024).to_string())?;
                }
                if let Some(units) = limits.cpu_units {
                    write(
                        &group.join("cpu.max"),
                        &format!("{} {CPU_PERIOD_US}", quota_us(units)),
                    )?;
                    write(&group.join("cpu.weight"), &weight(units).to_string())?;
                }
            }
        }
        Ok(Layout::parent(task))
    }

    /// Removes the task's cgroup once its containers are gone. The engine
    /// made the task's directory in every v1 hierarchy; each goes.
    pub fn remove(&self, task: &str) -> io::Result<()> {
        match self {
            Layout::Systemd { .. } => {
                let slice = slice_name(task);
                // A slice that is gone already is no error.
                let _ = run("systemctl", &["stop".to_string(), slice]);
                Ok(())
            }
            Layout::V1(root) => {
                for entry in std::fs::read_dir(root)? {
                    let hierarchy = entry?.path();
                    // Combined mounts (cpu,cpuacct) also appear as symlinks.
                    if hierarchy.is_symlink() {
                        continue;
                    }
                    rmdir(&hierarchy.join(PARENT).join(task))?;
                }
                Ok(())
            }
            Layout::V2(root) => rmdir(&root.join(PARENT).join(task)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(p).expect("written")
    }

    /// A cgroup's files go with its directory in the kernel's filesystem;
    /// in a plain one they have to go first.
    fn clear_files(dir: &Path) {
        for e in std::fs::read_dir(dir).expect("dir").flatten() {
            if e.path().is_file() {
                std::fs::remove_file(e.path()).expect("file");
            }
        }
    }

    #[test]
    fn v1_limits_go_to_the_memory_and_cpu_hierarchies() {
        let root = tempfile::tempdir().expect("tmp");
        for h in ["memory", "cpu", "pids"] {
            std::fs::create_dir(root.path().join(h)).expect("hierarchy");
        }
        let layout = Layout::detect(root.path(), "cgroupfs", "1").expect("v1");
        let parent = layout
            .create(
                "abc",
                TaskLimits {
                    cpu_units: Some(256),
                    memory_mib: Some(64),
                },
            )
            .expect("create");
        assert_eq!(parent, "/berth/abc");
        let memory = root.path().join("memory/berth/abc");
        assert_eq!(read(memory.join("memory.limit_in_bytes")), "67108864");
        let cpu = root.path().join("cpu/berth/abc");
        assert_eq!(read(cpu.join("cpu.shares")), "256");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "25000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        // The engine adds the task's directory to the other hierarchies.
        std::fs::create_dir_all(root.path().join("pids/berth/abc")).expect("engine's");
        clear_files(&memory);
        clear_files(&cpu);
        layout.remove("abc").expect("remove");
        for h in ["memory", "cpu", "pids"] {
            assert!(!root.path().join(h).join("berth/abc").exists(), "{h}");
        }
        layout.remove("abc").expect("removing twice is fine");
    }

    #[test]
    fn v2_limits_hand_the_controllers_down_and_use_cpu_max() {
        let root = tempfile::tempdir().expect("tmp");
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory").expect("root");
        let layout = Layout::detect(root.path(), "cgroupfs", "2").expect("v2");
        let parent = layout
            .create(
                "t1",
                TaskLimits {
                    cpu_units: Some(2048),
                    memory_mib: None,
                },
            )
            .expect("create");
        assert_eq!(parent, "/berth/t1");
        // A plain directory keeps only the last write; the kernel's file
        // accumulates them.
        assert_eq!(
            read(root.path().join("berth/cgroup.subtree_control")),
            "+memory"
        );
        let group = root.path().join("berth/t1");
        assert_eq!(read(group.join("cpu.max")), "200000 100000");
        assert_eq!(read(group.join("cpu.weight")), "79");
        assert!(!group.join("memory.max").exists(), "no memory limit given");
        clear_files(&group);
        layout.remove("t1").expect("remove");
        assert!(!group.exists());
    }

    #[test]
    fn the_layout_follows_the_engines_driver_and_version() {
        let root = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(root.path().join("memory")).expect("hierarchy");
        assert_eq!(
            Layout::detect(root.path(), "systemd", "2"),
            Some(Layout::Systemd { unified: true })
        );
        assert_eq!(
            Layout::detect(root.path(), "systemd", "1"),
            Some(Layout::Systemd { unified: false })
        );
        assert!(Layout::detect(root.path(), "cgroupfs", "2").is_none());
        assert!(Layout::detect(root.path(), "cgroupfs", "1").is_some());
        assert!(Layout::detect(root.path(), "other", "2").is_none());
    }

    #[test]
    fn systemd_slices_carry_the_limits_as_properties() {
        let limits = TaskLimits {
            cpu_units: Some(512),
            memory_mib: Some(1024),
        };
        let props = systemd_properties(limits, true);
        assert_eq!(
            props,
            vec![
                ("MemoryMax", 1024 * 1024 * 1024),
                ("CPUWeight", 20),
                ("CPUQuotaPerSecUSec", 500_000)
            ]
        );
        assert_eq!(systemd_properties(limits, false)[0].0, "MemoryLimit");
        let slice = slice_name("warm-1f");
        assert_eq!(slice, "berth-warm_1f.slice");
        assert_eq!(
            Layout::Systemd { unified: true }.parent_of("abc"),
            "berth-abc.slice"
        );
        assert_eq!(
            Layout::V2(PathBuf::from("/x")).parent_of("abc"),
            "/berth/abc"
        );
        let start = start_slice_args(&slice, &props);
        assert_eq!(
            start[4..].join(" "),
            "StartTransientUnit ssa(sv)a(sa(sv)) berth-warm_1f.slice fail 3 \
             MemoryMax t 1073741824 CPUWeight t 20 CPUQuotaPerSecUSec t 500000 0"
        );
        assert_eq!(
            set_slice_args(&slice, &props).join(" "),
            "set-property --runtime berth-warm_1f.slice MemoryMax=1073741824 CPUWeight=20 CPUQuota=50%"
        );
    }

    #[test]
    fn shares_become_weights_as_docker_converts_them() {
        assert_eq!(weight(2), 1);
        assert_eq!(weight(1024), 39);
        assert_eq!(weight(262_144), 10000);
        assert_eq!(quota_us(1), 1000);
        assert_eq!(quota_us(512), 50_000);
    }
}
