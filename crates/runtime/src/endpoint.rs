//! The task endpoint (169.254.170.2:80: role credentials, task metadata,
//! Berth's APIs) routed on the host to the agent that runs the task. Each
//! task address gets its own NAT rule to its agent's port on the host's
//! loopback, so several agents can share one engine, and a task reaches
//! only the agent that knows it. What the rules are is decided here,
//! purely; `docker.rs` applies them with the host's iptables.

use std::net::Ipv4Addr;

/// Where tasks reach the endpoint, as ECS defines it.
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
pub const PORT: u16 = 80;

/// The nat chain holding one rule per task address.
pub const CHAIN: &str = "BERTH-TASK-ENDPOINT";

/// Connections to the endpoint, then `then`.
fn to_endpoint(then: &[&str]) -> Vec<String> {
    let mut out = args(&[
        "-d",
        &format!("{ADDRESS}/32"),
        "-p",
        "tcp",
        "--dport",
        &PORT.to_string(),
    ]);
    out.extend(args(then));
    out
}

/// The jump into [`CHAIN`] from PREROUTING: traffic from containers.
pub fn jump() -> Vec<String> {
    to_endpoint(&["-j", CHAIN])
}

/// What sends `source`'s connections to the endpoint to 127.0.0.1:`port`.
pub fn rule(source: Ipv4Addr, port: u16) -> Vec<String> {
    args(&[
        "-s",
        &format!("{source}/32"),
        "-p",
        "tcp",
        "-j",
        "DNAT",
        "--to-destination",
        &format!("127.0.0.1:{port}"),
    ])
}

/// What sends the host's own connections to the endpoint (those of
/// host-network tasks) to 127.0.0.1:`port`, in the nat OUTPUT chain: one
/// rule for the host, since such tasks have no address of their own (the
/// agent tells them apart by the process behind each connection).
pub fn host_rule(port: u16) -> Vec<String> {
    to_endpoint(&["-j", "REDIRECT", "--to-ports", &port.to_string()])
}

/// The host rules in `listing` (`iptables -t nat -S OUTPUT`) to ports
/// other than `port`, as the arguments that delete them.
pub fn other_host_rules(listing: &str, port: u16) -> Vec<Vec<String>> {
    let wanted = host_rule(port);
    let to = format!("{ADDRESS}/32");
    listing
        .lines()
        .filter_map(|l| l.strip_prefix("-A OUTPUT "))
        .map(|rest| {
            rest.split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|r| {
            r.windows(2).any(|w| w[0] == "-d" && w[1] == to)
                && r.iter().any(|a| a == "REDIRECT")
                && *r != wanted
        })
        .collect()
}

/// Guards that come with letting bridges route to loopback
/// (`route_localnet`): nothing from outside reaches the host's loopback
/// unless a DNAT rule sent it there (filter INPUT), and a task with no rule
/// yet (its agent has not caught up with its address) is refused at once
/// rather than sent off the host towards a link-local address (filter
/// FORWARD); SDKs retry a refused connection.
pub fn guards() -> Vec<(&'static str, Vec<String>)> {
    vec![
        (
            "INPUT",
            args(&[
                "!",
                "-i",
                "lo",
                "-d",
                "127.0.0.0/8",
                "-m",
                "conntrack",
                "!",
                "--ctstate",
                "RELATED,ESTABLISHED,DNAT",
                "-j",
                "DROP",
            ]),
        ),
        (
            "FORWARD",
            args(&[
                "-d",
                &format!("{ADDRESS}/32"),
                "-p",
                "tcp",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ]),
        ),
    ]
}

/// The rules in `listing` (`iptables -S CHAIN`) that send `source`
/// anywhere but `port`: left by an agent that ran the address's last task,
/// or by this agent before it restarted on another port. Each is returned
/// as the arguments that delete it.
pub fn stale(listing: &str, source: Ipv4Addr, port: u16) -> Vec<Vec<String>> {
    let wanted = rule(source, port);
    let from = format!("{source}/32");
    listing
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("-A {CHAIN} ")))
        .map(|rest| {
            rest.split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|r| r.windows(2).any(|w| w[0] == "-s" && w[1] == from) && *r != wanted)
        .collect()
}

/// The rules in `listing` by the agent port they send to, each as the
/// arguments that delete it: rules of agents that have gone (nothing
/// listens on their port any more) are swept by the next agent to route.
pub fn by_port(listing: &str) -> std::collections::BTreeMap<u16, Vec<Vec<String>>> {
    let mut out: std::collections::BTreeMap<u16, Vec<Vec<String>>> = Default::default();
    for rest in listing
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("-A {CHAIN} ")))
    {
        let r: Vec<String> = rest.split_whitespace().map(String::from).collect();
        let port = r
            .iter()
            .find_map(|a| a.strip_prefix("127.0.0.1:"))
            .and_then(|p| p.parse().ok());
        if let Some(port) = port {
            out.entry(port).or_default().push(r);
        }
    }
    out
}

/// Whether `listing` has exactly the rule for `source` and `port`.
pub fn present(listing: &str, source: Ipv4Addr, port: u16) -> bool {
    let wanted = rule(source, port).join(" ");
    listing
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("-A {CHAIN} ")))
        .any(|rest| rest.split_whitespace().collect::<Vec<_>>().join(" ") == wanted)
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_keeps_one_rule_to_the_port_of_its_agent() {
        let ip = Ipv4Addr::new(172, 17, 0, 5);
        let listing = format!(
            "-N {CHAIN}\n\
             -A {CHAIN} -s 172.17.0.5/32 -p tcp -j DNAT --to-destination 127.0.0.1:40000\n\
             -A {CHAIN} -s 172.17.0.6/32 -p tcp -j DNAT --to-destination 127.0.0.1:41000\n\
             -A {CHAIN} -s 172.17.0.5/32 -p tcp -j DNAT --to-destination 127.0.0.1:42000\n"
        );
        assert!(present(&listing, ip, 42000));
        assert!(!present(&listing, ip, 41000));
        let old = stale(&listing, ip, 42000);
        assert_eq!(old.len(), 1);
        assert_eq!(old[0], rule(ip, 40000));
        // 172.17.0.50 is another address, not a longer spelling of .5.
        assert!(stale(&listing, Ipv4Addr::new(172, 17, 0, 50), 1).is_empty());
        assert_eq!(stale(&listing, ip, 1).len(), 2);
        let output = "-P OUTPUT ACCEPT\n-A OUTPUT -d 169.254.170.2/32 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 4000\n\
             -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n\
             -A OUTPUT -d 169.254.170.2/32 -p tcp --dport 80 -j REDIRECT --to-ports 5000\n";
        assert_eq!(other_host_rules(output, 5000).len(), 1);
        assert_eq!(other_host_rules(output, 6000).len(), 2);
        let ports = by_port(&listing);
        assert_eq!(
            ports.keys().copied().collect::<Vec<_>>(),
            vec![40000, 41000, 42000]
        );
        assert_eq!(
            ports[&41000],
            vec![rule(Ipv4Addr::new(172, 17, 0, 6), 41000)]
        );
    }
}
