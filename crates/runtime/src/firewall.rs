//! Security groups on the host: a task's ingress rules as the packet
//! filter of its own network namespace. Rules there see every packet that
//! reaches the task's interface, from other tasks, other subnets or the
//! host alike, as a security group sees what reaches an ENI; and they live
//! and die with the namespace, so no rule outlasts its task or can hit the
//! next task to get the address.

/// Traffic one rule lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressRule {
    /// `tcp`, `udp`, or `-1` for every protocol (ports then do not apply).
    pub protocol: String,
    pub from_port: u16,
    pub to_port: u16,
    /// Where from, as a CIDR block.
    pub source: String,
}

/// The lines of `chain` that accept what `rules` allow.
fn accepts(chain: &str, rules: &[IngressRule]) -> String {
    let mut out = String::new();
    for r in rules {
        let source = &r.source;
        match r.protocol.as_str() {
            "tcp" | "udp" => out.push_str(&format!(
                "-A {chain} -s {source} -p {p} -m {p} --dport {}:{} -j ACCEPT\n",
                r.from_port,
                r.to_port,
                p = r.protocol
            )),
            "-1" => out.push_str(&format!("-A {chain} -s {source} -j ACCEPT\n")),
            // The server only sends the protocols above; anything else
            // allows nothing rather than everything.
            _ => {}
        }
    }
    out
}

/// The filter table of a task's namespace, for `iptables-restore` (which
/// replaces the table in one step): loopback and replies to the task's own
/// connections always pass, then what a rule allows, and nothing else.
pub fn filter_table(rules: &[IngressRule]) -> String {
    let mut out = String::from(
        "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A INPUT -i lo -j ACCEPT\n\
         -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n",
    );
    out.push_str(&accepts("INPUT", rules));
    out.push_str("COMMIT\n");
    out
}

/// The host's chain that holds a sandboxed task's ingress rules, by its
/// address (the chain name must stay under iptables' 28 characters).
pub fn host_chain(ip: std::net::Ipv4Addr) -> String {
    format!("BERTH-SG-{:08X}", u32::from(ip))
}

/// The host's filter table hooks that see traffic to a task's address:
/// bridged and routed packets (bridged ones through br_netfilter), and the
/// host's own.
pub const HOST_HOOKS: [&str; 2] = ["FORWARD", "OUTPUT"];

/// `iptables-restore --noflush` input that fills a sandboxed task's chain
/// on the host (its network stack lives in its sandbox, which takes
/// packets off its interface before its namespace's filter sees them):
/// replies to the task's own connections pass, then what a rule allows,
/// and nothing else.
pub fn host_table(chain: &str, rules: &[IngressRule]) -> String {
    let mut out = format!(
        "*filter\n:{chain} - [0:0]\n\
         -A {chain} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
    );
    out.push_str(&accepts(chain, rules));
    out.push_str(&format!("-A {chain} -j DROP\nCOMMIT\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_become_one_table_that_denies_the_rest() {
        let t = filter_table(&[
            IngressRule {
                protocol: "tcp".into(),
                from_port: 80,
                to_port: 80,
                source: "0.0.0.0/0".into(),
            },
            IngressRule {
                protocol: "-1".into(),
                from_port: 0,
                to_port: 0,
                source: "10.128.0.7/32".into(),
            },
            IngressRule {
                protocol: "icmp".into(),
                from_port: 0,
                to_port: 0,
                source: "0.0.0.0/0".into(),
            },
        ]);
        assert!(t.starts_with("*filter\n:INPUT DROP"));
        assert!(t.contains("-A INPUT -s 0.0.0.0/0 -p tcp -m tcp --dport 80:80 -j ACCEPT\n"));
        assert!(t.contains("-A INPUT -s 10.128.0.7/32 -j ACCEPT\n"));
        assert!(!t.contains("icmp"));
        assert!(t.ends_with("COMMIT\n"));
        assert_eq!(filter_table(&[]).matches("-A INPUT").count(), 2);
    }

    #[test]
    fn a_sandboxed_task_gets_a_host_chain_that_denies_the_rest() {
        let chain = host_chain("10.128.0.7".parse().expect("ip"));
        assert_eq!(chain, "BERTH-SG-0A800007");
        let t = host_table(
            &chain,
            &[IngressRule {
                protocol: "udp".into(),
                from_port: 53,
                to_port: 53,
                source: "10.0.0.0/8".into(),
            }],
        );
        assert!(t.starts_with("*filter\n:BERTH-SG-0A800007 - [0:0]\n"));
        assert!(t.contains(
            "-A BERTH-SG-0A800007 -s 10.0.0.0/8 -p udp -m udp --dport 53:53 -j ACCEPT\n"
        ));
        assert!(t.ends_with("-A BERTH-SG-0A800007 -j DROP\nCOMMIT\n"));
    }
}
