//! A VPC across hosts (docs/adr/0007-vpc-across-hosts.md): one VXLAN
//! device per host, and a /32 route through it to every awsvpc task on
//! another host, with the neighbour and forwarding entries that send it
//! to that host; proxy ARP on the subnets' bridges so that local tasks
//! send those packets to the host. Plain functions over `ip` and `bridge`
//! (iproute2), brought to the wanted set each time: what is not wanted is
//! removed.

use crate::RuntimeError;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The host's tunnel device.
pub const DEVICE: &str = "berth-vx";
/// Its VXLAN network identifier and UDP port.
pub const VNI: u32 = 4242;
pub const PORT: u16 = 4789;
/// What VXLAN's headers take of the underlay's MTU.
pub const OVERHEAD: u32 = 50;
/// The least a tunnel may carry: IPv4's minimum for a link that must also
/// carry IPv6 one day, and what a task needs for its own headers.
const MIN_MTU: u32 = 1280;

/// The tunnel a host made: its MAC, and the MTU its packets fit in (the
/// underlay device's less VXLAN's headers), which the host's subnets take
/// too so that tasks never need path MTU discovery to reach another host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub mac: String,
    pub mtu: u32,
}

/// A task on another host: its address, and that host's VPC address and
/// tunnel MAC.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub ip: Ipv4Addr,
    pub host: Ipv4Addr,
    pub mac: String,
}

async fn run(program: &str, args: &[&str]) -> Result<String, RuntimeError> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| RuntimeError::Unavailable(format!("{program}: {e}")))?;
    if !out.status.success() {
        return Err(RuntimeError::Rejected(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `commands` (one per line) through `program -batch -`.
async fn batch(program: &str, commands: &str) -> Result<(), RuntimeError> {
    if commands.is_empty() {
        return Ok(());
    }
    crate::docker::feed(
        tokio::process::Command::new(program).args(["-batch", "-"]),
        commands,
        "-batch",
    )
    .await
}

/// Makes the tunnel device on `local` (again, if it was made on another
/// address), sized to the device that carries `local`.
pub async fn ensure_device(local: Ipv4Addr) -> Result<Tunnel, RuntimeError> {
    let addresses = run("ip", &["-o", "-4", "addr", "show"]).await?;
    let underlay = device_with(&addresses, local).ok_or_else(|| {
        RuntimeError::Rejected(format!("no device of this host has the address {local}"))
    })?;
    let link = run("ip", &["-o", "link", "show", "dev", &underlay]).await?;
    let mtu = mtu_of(&link)
        .map(|m| m.saturating_sub(OVERHEAD))
        .filter(|m| *m >= MIN_MTU)
        .ok_or_else(|| {
            RuntimeError::Rejected(format!(
                "{underlay} (which has {local}) leaves less than {MIN_MTU} bytes for the tunnel: {}",
                link.trim()
            ))
        })?;
    let have = run("ip", &["-d", "link", "show", DEVICE]).await.ok();
    let current = have.as_deref().is_some_and(|d| {
        d.contains(&format!("vxlan id {VNI} ")) && d.contains(&format!("local {local} "))
    });
    if have.is_some() && !current {
        run("ip", &["link", "del", DEVICE]).await?;
    }
    if !current {
        let made = run(
            "ip",
            &[
                "link",
                "add",
                DEVICE,
                "type",
                "vxlan",
                "id",
                &VNI.to_string(),
                "local",
                &local.to_string(),
                "dstport",
                &PORT.to_string(),
                "nolearning",
            ],
        )
        .await;
        // Another agent of this host may have made it meanwhile.
        if let Err(e) = made {
            let now = run("ip", &["-d", "link", "show", DEVICE])
                .await
                .unwrap_or_default();
            if !now.contains(&format!("local {local} ")) {
                return Err(e);
            }
        }
    }
    run(
        "ip",
        &["link", "set", DEVICE, "mtu", &mtu.to_string(), "up"],
    )
    .await?;
    // Asked of iproute2, not sysfs: /sys shows the namespace it was
    // mounted in, which need not be this process's.
    let link = run("ip", &["-o", "link", "show", DEVICE]).await?;
    let mac = mac_of(&link)
        .ok_or_else(|| RuntimeError::Unavailable(format!("{DEVICE} has no MAC: {link}")))?;
    Ok(Tunnel { mac, mtu })
}

/// The device that has `ip`, in `ip -o -4 addr show` output.
fn device_with(text: &str, ip: Ipv4Addr) -> Option<String> {
    let wanted = format!("{ip}/");
    text.lines().find_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "inet")?;
        words.get(at + 1)?.starts_with(&wanted).then(|| {
            // "veth0@if12" names the peer too.
            words
                .get(1)
                .map(|d| d.split('@').next().unwrap_or(d).to_string())
        })?
    })
}

/// The MTU in `ip -o link show` output.
fn mtu_of(link: &str) -> Option<u32> {
    let words: Vec<&str> = link.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "mtu")?;
    words.get(at + 1)?.parse().ok()
}

/// The MAC in `ip -o link show` output.
fn mac_of(link: &str) -> Option<String> {
    let words: Vec<&str> = link.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "link/ether")?;
    words.get(at + 1).map(|m| m.to_string())
}

/// The routes through the device now: task address to the host it goes
/// through.
fn parse_routes(text: &str) -> BTreeMap<Ipv4Addr, Ipv4Addr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let ip = words.next()?.trim_end_matches("/32").parse().ok()?;
            let via = words
                .clone()
                .position(|w| w == "via")
                .and_then(|i| words.nth(i + 1))?
                .parse()
                .ok()?;
            Some((ip, via))
        })
        .collect()
}

/// The device's forwarding entries: MAC to host.
fn parse_fdb(text: &str) -> BTreeMap<String, Ipv4Addr> {
    text.lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let mac = words.first()?.to_string();
            let at = words.iter().position(|w| *w == "dst")?;
            let dst = words.get(at + 1)?.parse().ok()?;
            (mac != "00:00:00:00:00:00").then_some((mac, dst))
        })
        .collect()
}

/// The `ip -batch` and `bridge -batch` commands that bring the device
/// from `routes_now` and `fdb_now` to `wanted`.
pub fn plan(
    wanted: &[Route],
    routes_now: &BTreeMap<Ipv4Addr, Ipv4Addr>,
    fdb_now: &BTreeMap<String, Ipv4Addr>,
) -> (String, String) {
    let mut ip = String::new();
    let mut bridge = String::new();
    let hosts: BTreeSet<(Ipv4Addr, &str)> =
        wanted.iter().map(|r| (r.host, r.mac.as_str())).collect();
    for (host, mac) in &hosts {
        ip.push_str(&format!(
            "neigh replace {host} lladdr {mac} dev {DEVICE} nud permanent\n"
        ));
        if fdb_now.get(*mac) != Some(host) {
            bridge.push_str(&format!(
                "fdb replace {mac} dev {DEVICE} dst {host} self permanent\n"
            ));
        }
    }
    for (mac, host) in fdb_now {
        if !hosts.iter().any(|(h, m)| m == mac && h == host) {
            bridge.push_str(&format!("fdb del {mac} dev {DEVICE} dst {host} self\n"));
        }
    }
    let wanted_routes: BTreeMap<Ipv4Addr, Ipv4Addr> =
        wanted.iter().map(|r| (r.ip, r.host)).collect();
    for (task, host) in &wanted_routes {
        if routes_now.get(task) != Some(host) {
            ip.push_str(&format!(
                "route replace {task}/32 via {host} dev {DEVICE} onlink\n"
            ));
        }
    }
    for task in routes_now.keys() {
        if !wanted_routes.contains_key(task) {
            ip.push_str(&format!("route del {task}/32 dev {DEVICE}\n"));
        }
    }
    (ip, bridge)
}

/// Brings the device's routes, neighbours and forwarding entries to
/// `wanted`; `bridges` are the subnets' bridges (interface and CIDR),
/// which answer ARP for the routed addresses and whose traffic through
/// the device is let through and never masqueraded.
pub async fn apply(wanted: &[Route], bridges: &[(String, String)]) -> Result<(), RuntimeError> {
    if run("ip", &["link", "show", DEVICE]).await.is_err() {
        return match wanted.is_empty() {
            true => Ok(()),
            false => Err(RuntimeError::Rejected(format!(
                "no {DEVICE} on this host: its tunnel was never made"
            ))),
        };
    }
    let routes_now = parse_routes(&run("ip", &["-4", "route", "show", "dev", DEVICE]).await?);
    let fdb_now = parse_fdb(&run("bridge", &["fdb", "show", "dev", DEVICE]).await?);
    let (ip, bridge) = plan(wanted, &routes_now, &fdb_now);
    batch("bridge", &bridge).await?;
    batch("ip", &ip).await?;
    for (iface, cidr) in bridges {
        prepare_bridge(iface, cidr).await?;
    }
    Ok(())
}

/// Readies a subnet's bridge for traffic through the tunnel, once there
/// is one: it answers ARP for the addresses routed through it, and what
/// crosses between it and the tunnel is let through and never
/// masqueraded. A bridge of another network namespace than this
/// process's (an engine elsewhere) is left alone.
pub async fn prepare_bridge(iface: &str, cidr: &str) -> Result<(), RuntimeError> {
    let proxy = format!("/proc/sys/net/ipv4/conf/{iface}/proxy_arp");
    if !std::path::Path::new(&proxy).exists() || run("ip", &["link", "show", DEVICE]).await.is_err()
    {
        return Ok(());
    }
    if std::fs::read_to_string(&proxy)
        .map(|v| v.trim() != "1")
        .unwrap_or(false)
    {
        std::fs::write(&proxy, "1")
            .map_err(|e| RuntimeError::Unavailable(format!("{proxy}: {e}")))?;
    }
    crate::docker::ensure_rule(
        "filter",
        "DOCKER-USER",
        &["-i", DEVICE, "-o", iface, "-j", "ACCEPT"].map(String::from),
    )
    .await?;
    crate::docker::ensure_rule(
        "nat",
        "POSTROUTING",
        &["-s", cidr, "-o", DEVICE, "-j", "RETURN"].map(String::from),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_kernel_lists_is_read_back() {
        assert_eq!(
            mac_of("12: berth-vx: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/ether 3e:1f:aa:bb:cc:dd brd ff:ff:ff:ff:ff:ff").as_deref(),
            Some("3e:1f:aa:bb:cc:dd")
        );
        assert_eq!(
            mtu_of("7: bi1a2b3c@if8: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 9001 qdisc noqueue state UP"),
            Some(9001)
        );
        let addrs = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                     7: bi1a2b3c@if8    inet 10.233.4.2/30 scope global bi1a2b3c\\       valid_lft forever\n\
                     9: eth1    inet 10.233.4.22/24 scope global eth1\\       valid_lft forever\n";
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        assert_eq!(
            device_with(addrs, ip("10.233.4.2")).as_deref(),
            Some("bi1a2b3c")
        );
        assert_eq!(
            device_with(addrs, ip("10.233.4.22")).as_deref(),
            Some("eth1")
        );
        assert_eq!(device_with(addrs, ip("10.233.4.20")), None);
        let routes =
            parse_routes("10.128.0.7 via 10.231.5.2 onlink \n10.128.0.9 via 10.231.6.2 onlink \n");
        assert_eq!(routes.len(), 2);
        assert_eq!(
            routes[&"10.128.0.7".parse().expect("ip")],
            "10.231.5.2".parse::<Ipv4Addr>().expect("ip")
        );
        let fdb = parse_fdb(
            "aa:bb:cc:dd:ee:01 dst 10.231.5.2 self permanent\n00:00:00:00:00:00 dst 10.0.0.1 self permanent\n",
        );
        assert_eq!(fdb.len(), 1);
        assert_eq!(
            fdb["aa:bb:cc:dd:ee:01"],
            "10.231.5.2".parse::<Ipv4Addr>().expect("ip")
        );
    }

    #[test]
    fn the_plan_adds_what_is_missing_and_removes_what_is_not_wanted() {
        let r = |ip: &str, host: &str, mac: &str| Route {
            ip: ip.parse().expect("ip"),
            host: host.parse().expect("ip"),
            mac: mac.into(),
        };
        let wanted = vec![
            r("10.128.0.7", "10.0.0.2", "aa:00:00:00:00:02"),
            r("10.128.0.8", "10.0.0.2", "aa:00:00:00:00:02"),
            r("10.128.0.9", "10.0.0.3", "aa:00:00:00:00:03"),
        ];
        let routes_now = BTreeMap::from([
            (
                "10.128.0.7".parse().expect("ip"),
                "10.0.0.2".parse().expect("ip"),
            ),
            (
                "10.128.0.5".parse().expect("ip"),
                "10.0.0.4".parse().expect("ip"),
            ),
        ]);
        let fdb_now = BTreeMap::from([
            (
                "aa:00:00:00:00:02".to_string(),
                "10.0.0.2".parse().expect("ip"),
            ),
            (
                "aa:00:00:00:00:04".to_string(),
                "10.0.0.4".parse().expect("ip"),
            ),
        ]);
        let (ip, bridge) = plan(&wanted, &routes_now, &fdb_now);
        assert!(ip.contains("route replace 10.128.0.8/32 via 10.0.0.2 dev berth-vx onlink\n"));
        assert!(ip.contains("route replace 10.128.0.9/32 via 10.0.0.3 dev berth-vx onlink\n"));
        assert!(!ip.contains("route replace 10.128.0.7/32"), "already there");
        assert!(ip.contains("route del 10.128.0.5/32 dev berth-vx\n"));
        assert!(ip.contains(
            "neigh replace 10.0.0.3 lladdr aa:00:00:00:00:03 dev berth-vx nud permanent\n"
        ));
        assert!(bridge
            .contains("fdb replace aa:00:00:00:00:03 dev berth-vx dst 10.0.0.3 self permanent\n"));
        assert!(!bridge.contains("fdb replace aa:00:00:00:00:02"));
        assert!(bridge.contains("fdb del aa:00:00:00:00:04 dev berth-vx dst 10.0.0.4 self\n"));
        let (ip, bridge) = plan(&[], &BTreeMap::new(), &BTreeMap::new());
        assert!(ip.is_empty() && bridge.is_empty());
    }
}
