//! What the agent reads off its host: CPUs, memory, architecture.

pub struct Facts {
    pub cpus: i32,
    pub memory_mib: i64,
    /// As EC2 names it: `x86_64` or `arm64`.
    pub architecture: &'static str,
}

pub fn facts() -> Result<Facts, String> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as i32)
        .unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| format!("cannot read /proc/meminfo: {e}"))?;
    let memory_mib = mem_total_mib(&meminfo).ok_or("no MemTotal in /proc/meminfo")?;
    let architecture = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "x86_64",
    };
    Ok(Facts {
        cpus,
        memory_mib,
        architecture,
    })
}

fn mem_total_mib(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn mem_total_is_read_in_mib() {
        let m = "MemTotal:       24594816 kB\nMemFree:  100 kB\n";
        assert_eq!(super::mem_total_mib(m), Some(24018));
        assert_eq!(super::mem_total_mib("MemFree: 1 kB"), None);
    }
}
