//! Security groups on the host: a task's ingress and egress rules as the
//! packet filter of its own network namespace. Rules there see every packet that
//! reaches the task's interface, from other tasks, other subnets or the
//! host alike, as a security group sees what reaches an ENI; and they live
//! and die with the namespace, so no rule outlasts its task or can hit the
//! next task to get the address.

/// Traffic one rule lets through: in from its peer (ingress) or out to
/// it (egress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `tcp`, `udp`, `icmp`, `-1` for every protocol, or a protocol
    /// number (ports then do not apply).
    pub protocol: String,
    /// Ports for tcp and udp; for icmp the type and the code, 65535
    /// standing for any.
    pub from_port: u16,
    pub to_port: u16,
    /// The peer, as a CIDR block.
    pub peer: String,
}

/// A task's security groups as the kernel applies them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub ingress: Vec<Rule>,
    /// None: everything may go out (a server that sends no egress rules).
    pub egress: Option<Vec<Rule>>,
}

/// Where a task's agent-side endpoints answer (task metadata and
/// credentials, `endpoint::ADDRESS`): reached whatever the egress rules
/// say, as ECS's endpoints are not subject to security groups.
const ENDPOINT: &str = "169.254.170.2/32";

/// The lines of `chain` that accept what `rules` allow; `side` is `-s`
/// (peers are sources) or `-d` (peers are destinations).
fn accepts(chain: &str, side: &str, rules: &[Rule]) -> String {
    let mut out = String::new();
    for r in rules {
        let peer = &r.peer;
        match r.protocol.as_str() {
            "tcp" | "udp" => out.push_str(&format!(
                "-A {chain} {side} {peer} -p {p} -m {p} --dport {}:{} -j ACCEPT\n",
                r.from_port,
                r.to_port,
                p = r.protocol
            )),
            "icmp" => {
                let kind = match (r.from_port, r.to_port) {
                    (u16::MAX, _) => String::new(),
                    (t, u16::MAX) => format!(" -m icmp --icmp-type {t}"),
                    (t, c) => format!(" -m icmp --icmp-type {t}/{c}"),
                };
                out.push_str(&format!(
                    "-A {chain} {side} {peer} -p icmp{kind} -j ACCEPT\n"
                ));
            }
            "-1" => out.push_str(&format!("-A {chain} {side} {peer} -j ACCEPT\n")),
            n if n.parse::<u8>().is_ok() => {
                out.push_str(&format!("-A {chain} {side} {peer} -p {n} -j ACCEPT\n"))
            }
            // Anything else allows nothing rather than everything.
            _ => {}
        }
    }
    out
}

/// The filter table of a task's namespace, for `iptables-restore` (which
/// replaces the table in one step): loopback and replies to the task's own
/// connections always pass, then what a rule allows, and nothing else; out
/// of the task the same with the egress rules, when there are any.
pub fn filter_table(f: &Filter) -> String {
    let output = if f.egress.is_some() { "DROP" } else { "ACCEPT" };
    let mut out = format!(
        "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT {output} [0:0]\n\
         -A INPUT -i lo -j ACCEPT\n\
         -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
    );
    out.push_str(&accepts("INPUT", "-s", &f.ingress));
    if let Some(egress) = &f.egress {
        out.push_str(&format!(
            "-A OUTPUT -o lo -j ACCEPT\n\
             -A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
             -A OUTPUT -d {ENDPOINT} -j ACCEPT\n"
        ));
        out.push_str(&accepts("OUTPUT", "-d", egress));
    }
    out.push_str("COMMIT\n");
    out
}

/// What a bridge-mode task's container lets in (docs/networking.md): of
/// its bridge's subnet (`ip`/`prefix_len`), only the host (`gateway`, which
/// also carries what reaches published ports through the engine's proxy),
/// its own task's containers (`peers`) and, from anyone, its published
/// container ports (`ports`: port and `tcp` or `udp`); from beyond the
/// bridge everything, which the host's own rules decide. Nothing out is
/// held back.
pub fn bridge_filter(
    ip: std::net::Ipv4Addr,
    prefix_len: u8,
    gateway: &str,
    peers: &[std::net::Ipv4Addr],
    ports: &[(u16, String)],
) -> Filter {
    let all = |peer: String| Rule {
        protocol: "-1".into(),
        from_port: 0,
        to_port: 0,
        peer,
    };
    let bits = u32::from(ip);
    let len = u32::from(prefix_len.min(32));
    // The world less the subnet: for each of the subnet's prefix bits,
    // the block that agrees with it up to that bit and differs at it.
    let mut ingress: Vec<Rule> = (0..len)
        .map(|i| {
            let keep = if i == 0 { 0 } else { u32::MAX << (32 - i) };
            let block = (bits & keep) | ((!bits) & (1 << (31 - i)));
            all(format!("{}/{}", std::net::Ipv4Addr::from(block), i + 1))
        })
        .collect();
    if !gateway.is_empty() {
        ingress.push(all(format!("{gateway}/32")));
    }
    ingress.extend(peers.iter().map(|p| all(format!("{p}/32"))));
    ingress.extend(ports.iter().map(|(port, protocol)| Rule {
        protocol: protocol.clone(),
        from_port: *port,
        to_port: *port,
        peer: "0.0.0.0/0".into(),
    }));
    Filter {
        ingress,
        egress: None,
    }
}

/// The host's chain that holds a sandboxed task's ingress rules, by its
/// address (the chain name must stay under iptables' 28 characters).
pub fn host_chain(ip: std::net::Ipv4Addr) -> String {
    format!("BERTH-SG-{:08X}", u32::from(ip))
}

/// The host's chain that holds a sandboxed task's egress rules.
pub fn host_egress_chain(ip: std::net::Ipv4Addr) -> String {
    format!("BERTH-EG-{:08X}", u32::from(ip))
}

/// The host's filter table hooks that see traffic to a task's address:
/// bridged and routed packets (bridged ones through br_netfilter), and the
/// host's own.
pub const HOST_HOOKS: [&str; 2] = ["FORWARD", "OUTPUT"];

/// The host's hook that sees what a sandboxed task sends to other tasks
/// and beyond the host (what it sends the host itself, such as its
/// endpoints, goes through INPUT and is not filtered).
pub const HOST_EGRESS_HOOK: &str = "FORWARD";

/// `iptables-restore --noflush` input that fills a sandboxed task's
/// chains on the host (its network stack lives in its sandbox, which takes
/// packets off its interface before its namespace's filter sees them):
/// replies to the task's own connections pass, then what a rule allows,
/// and nothing else; the egress chain passes everything when there are no
/// egress rules to apply.
pub fn host_table(ingress: &str, egress: &str, f: &Filter) -> String {
    let mut out = format!(
        "*filter\n:{ingress} - [0:0]\n:{egress} - [0:0]\n\
         -A {ingress} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
    );
    out.push_str(&accepts(ingress, "-s", &f.ingress));
    out.push_str(&format!("-A {ingress} -j DROP\n"));
    match &f.egress {
        Some(rules) => {
            out.push_str(&format!(
                "-A {egress} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
            ));
            out.push_str(&accepts(egress, "-d", rules));
            out.push_str(&format!("-A {egress} -j DROP\n"));
        }
        None => out.push_str(&format!("-A {egress} -j ACCEPT\n")),
    }
    out.push_str("COMMIT\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_task_lets_in_its_own_the_host_its_published_ports_and_the_world_beyond() {
        let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().expect("ip");
        let f = bridge_filter(
            ip("172.17.0.5"),
            16,
            "172.17.0.1",
            &[ip("172.17.0.6")],
            &[(8080, "tcp".into())],
        );
        assert_eq!(f.egress, None);
        let blocks: Vec<(u32, u32)> = f
            .ingress
            .iter()
            .filter(|r| r.protocol == "-1")
            .map(|r| {
                let (a, l) = r.peer.split_once('/').expect("cidr");
                let l: u32 = l.parse().expect("len");
                let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
                (u32::from(ip(a)) & mask, mask)
            })
            .collect();
        let covers = |a: &str| {
            blocks
                .iter()
                .filter(|(net, mask)| u32::from(ip(a)) & mask == *net)
                .count()
        };
        // The world beyond the bridge, once each; the bridge itself only
        // at the host's and the task's own addresses.
        for outside in [
            "0.0.0.1",
            "10.0.0.1",
            "172.16.255.255",
            "172.18.0.0",
            "255.255.255.255",
        ] {
            assert_eq!(covers(outside), 1, "{outside}");
        }
        for inside in ["172.17.0.2", "172.17.0.7", "172.17.255.254"] {
            assert_eq!(covers(inside), 0, "{inside}");
        }
        assert_eq!(covers("172.17.0.1"), 1);
        assert_eq!(covers("172.17.0.6"), 1);
        assert!(f.ingress.iter().any(|r| r.protocol == "tcp"
            && r.from_port == 8080
            && r.to_port == 8080
            && r.peer == "0.0.0.0/0"));
        assert!(filter_table(&f).contains(":INPUT DROP"));
    }

    fn rule(protocol: &str, from_port: u16, to_port: u16, peer: &str) -> Rule {
        Rule {
            protocol: protocol.into(),
            from_port,
            to_port,
            peer: peer.into(),
        }
    }

    #[test]
    fn rules_become_one_table_that_denies_the_rest() {
        let f = Filter {
            ingress: vec![
                rule("tcp", 80, 80, "0.0.0.0/0"),
                rule("-1", 0, 0, "10.128.0.7/32"),
                rule("icmp", 8, u16::MAX, "0.0.0.0/0"),
                rule("icmp", u16::MAX, u16::MAX, "10.0.0.0/8"),
                rule("47", 0, 65535, "10.0.0.0/8"),
                rule("bogus", 0, 0, "0.0.0.0/0"),
            ],
            egress: None,
        };
        let t = filter_table(&f);
        assert!(t.starts_with("*filter\n:INPUT DROP"));
        assert!(t.contains(":OUTPUT ACCEPT"));
        assert!(t.contains("-A INPUT -s 0.0.0.0/0 -p tcp -m tcp --dport 80:80 -j ACCEPT\n"));
        assert!(t.contains("-A INPUT -s 10.128.0.7/32 -j ACCEPT\n"));
        assert!(t.contains("-A INPUT -s 0.0.0.0/0 -p icmp -m icmp --icmp-type 8 -j ACCEPT\n"));
        assert!(t.contains("-A INPUT -s 10.0.0.0/8 -p icmp -j ACCEPT\n"));
        assert!(t.contains("-A INPUT -s 10.0.0.0/8 -p 47 -j ACCEPT\n"));
        assert!(!t.contains("bogus"));
        assert!(!t.contains("-A OUTPUT"));
        assert!(t.ends_with("COMMIT\n"));
        assert_eq!(
            filter_table(&Filter::default()).matches("-A INPUT").count(),
            2
        );
    }

    #[test]
    fn egress_rules_close_the_way_out_but_for_replies_and_the_endpoints() {
        let f = Filter {
            ingress: vec![],
            egress: Some(vec![rule("tcp", 443, 443, "10.0.0.0/8")]),
        };
        let t = filter_table(&f);
        assert!(t.contains(":OUTPUT DROP"));
        assert!(t.contains("-A OUTPUT -o lo -j ACCEPT\n"));
        assert!(t.contains("-A OUTPUT -d 169.254.170.2/32 -j ACCEPT\n"));
        assert!(t.contains("-A OUTPUT -d 10.0.0.0/8 -p tcp -m tcp --dport 443:443 -j ACCEPT\n"));
    }

    #[test]
    fn a_sandboxed_task_gets_host_chains_that_deny_the_rest() {
        let ip = "10.128.0.7".parse().expect("ip");
        let (chain, out) = (host_chain(ip), host_egress_chain(ip));
        assert_eq!(chain, "BERTH-SG-0A800007");
        assert_eq!(out, "BERTH-EG-0A800007");
        let t = host_table(
            &chain,
            &out,
            &Filter {
                ingress: vec![rule("udp", 53, 53, "10.0.0.0/8")],
                egress: None,
            },
        );
        assert!(t.starts_with("*filter\n:BERTH-SG-0A800007 - [0:0]\n:BERTH-EG-0A800007 - [0:0]\n"));
        assert!(t.contains(
            "-A BERTH-SG-0A800007 -s 10.0.0.0/8 -p udp -m udp --dport 53:53 -j ACCEPT\n"
        ));
        assert!(t.contains("-A BERTH-SG-0A800007 -j DROP\n"));
        assert!(t.ends_with("-A BERTH-EG-0A800007 -j ACCEPT\nCOMMIT\n"));
        let t = host_table(
            &chain,
            &out,
            &Filter {
                ingress: vec![],
                egress: Some(vec![rule("tcp", 80, 80, "10.128.0.9/32")]),
            },
        );
        assert!(t.contains(
            "-A BERTH-EG-0A800007 -d 10.128.0.9/32 -p tcp -m tcp --dport 80:80 -j ACCEPT\n"
        ));
        assert!(t.ends_with("-A BERTH-EG-0A800007 -j DROP\nCOMMIT\n"));
    }
}
