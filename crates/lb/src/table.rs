//! The routing table: what every listener port does, built from one
//! scope's ELBv2 records. Targets are shared objects kept across rebuilds,
//! so their health and counters survive a configuration change.

use berth_domain::elb::attributes::{ALGORITHM, IDLE_TIMEOUT, XFF_MODE};
use berth_domain::elb::health::Tracker;
use berth_domain::elb::rules::Route;
use berth_domain::elb::{HealthCheck, Listener, LoadBalancer, Registration, TargetGroup};
use berth_domain::instance::ContainerInstance;
use berth_domain::Scope;
use berth_store::keys::ElbKeys;
use berth_store::KeyValue;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One registered target as the data path sees it.
#[derive(Debug)]
pub struct Target {
    /// `{id}:{port}`, the registration's key segment.
    pub key: String,
    pub tg_id: String,
    pub scope: Scope,
    pub addr: SocketAddr,
    /// `addr` as a request URI's authority.
    pub authority: hyper::http::uri::Authority,
    /// Where health checks go.
    pub check_addr: SocketAddr,
    /// Passing health checks (or checks disabled).
    pub serving: AtomicBool,
    pub inflight: AtomicUsize,
    pub requests: AtomicU64,
    /// Responses by status class (2xx to 5xx).
    pub classes: [AtomicU64; 4],
    /// Responses whose head came back, and the microseconds it took.
    pub answered: AtomicU64,
    pub response_micros: AtomicU64,
    /// What of the counts above has been added to the store.
    pub recorded: Mutex<berth_domain::elb::RequestCount>,
    /// Where the health checks stand; kept here so that a check restarted
    /// with new settings goes on from it.
    pub tracker: Mutex<Tracker>,
}

impl Target {
    /// Everything counted so far, at `at`.
    pub fn counted(&self, at: f64) -> berth_domain::elb::RequestCount {
        use std::sync::atomic::Ordering::Relaxed;
        berth_domain::elb::RequestCount {
            requests: self.requests.load(Relaxed),
            classes: std::array::from_fn(|i| self.classes[i].load(Relaxed)),
            answered: self.answered.load(Relaxed),
            response_micros: self.response_micros.load(Relaxed),
            at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastOutstanding,
}

/// A target group with its routable (registered, not draining) targets.
#[derive(Debug)]
pub struct Group {
    pub algorithm: Algorithm,
    pub targets: Vec<Arc<Target>>,
    next: AtomicUsize,
}

impl Group {
    /// The next target: among those passing health checks, or among all
    /// when none is (ALB fails open rather than refuse every request).
    pub fn pick(&self) -> Option<Arc<Target>> {
        let healthy = |t: &&Arc<Target>| t.serving.load(Ordering::Relaxed);
        let serving = self.targets.iter().filter(healthy).count();
        let fail_open = serving == 0;
        let n = if fail_open {
            self.targets.len()
        } else {
            serving
        };
        if n == 0 {
            return None;
        }
        // The candidates, from the turn's offset, without allocating.
        let candidates = || {
            let turn = self.next.fetch_add(1, Ordering::Relaxed);
            self.targets
                .iter()
                .filter(move |t| fail_open || healthy(t))
                .cycle()
                .skip(turn % n)
                .take(n)
        };
        let chosen = match self.algorithm {
            Algorithm::RoundRobin => candidates().next(),
            // Ties go to the first from the offset, so equal targets share the load.
            Algorithm::LeastOutstanding => {
                candidates().min_by_key(|t| t.inflight.load(Ordering::Relaxed))
            }
        };
        chosen.cloned()
    }
}

/// What one listener port does.
#[derive(Debug)]
pub struct Port {
    pub port: u16,
    /// `port` as the X-Forwarded-Port header.
    pub port_header: hyper::header::HeaderValue,
    /// Rules by priority; the default rule last.
    pub routes: Vec<Route>,
    /// Whether any rule looks at headers (else requests' headers are not
    /// gathered for matching).
    pub matches_headers: bool,
    pub groups: HashMap<String, Arc<Group>>,
    pub idle_timeout: Duration,
    /// `append`, `preserve` or `remove`.
    pub xff: String,
}

/// A target to health-check, with its group's settings.
#[derive(Debug, Clone)]
pub struct Check {
    pub target: Arc<Target>,
    pub health: HealthCheck,
}

/// Everything one scope's records say.
#[derive(Debug, Default)]
pub struct Table {
    pub ports: HashMap<u16, Arc<Port>>,
    /// Targets of groups that listeners use, with health checks enabled.
    pub checks: Vec<Check>,
    /// Drained registrations to delete: the registration's key and mod
    /// revision, and the keys of what the data path observed of it.
    pub drained: Vec<(String, i64, [String; 2])>,
    /// The earliest time (epoch seconds) a draining registration ends.
    pub next_drain_end: Option<f64>,
}

/// Targets kept across rebuilds, by (tg id, target key, address).
#[derive(Debug, Default)]
pub struct Targets {
    map: Mutex<HashMap<(String, String, SocketAddr), Arc<Target>>>,
}

impl Targets {
    fn get(
        &self,
        scope: &Scope,
        tg: &str,
        key: &str,
        addr: SocketAddr,
        check: SocketAddr,
    ) -> Arc<Target> {
        let mut map = self.map.lock();
        map.entry((tg.to_string(), key.to_string(), addr))
            .or_insert_with(|| {
                Arc::new(Target {
                    key: key.to_string(),
                    tg_id: tg.to_string(),
                    scope: scope.clone(),
                    addr,
                    authority: hyper::http::uri::Authority::try_from(addr.to_string().as_str())
                        .unwrap_or_else(|_| hyper::http::uri::Authority::from_static("127.0.0.1")),
                    check_addr: check,
                    serving: AtomicBool::new(false),
                    inflight: AtomicUsize::new(0),
                    requests: AtomicU64::new(0),
                    classes: Default::default(),
                    answered: AtomicU64::new(0),
                    response_micros: AtomicU64::new(0),
                    recorded: Mutex::new(Default::default()),
                    tracker: Mutex::new(Tracker::default()),
                })
            })
            .clone()
    }

    /// Every target kept, for their request counts.
    pub fn all(&self) -> Vec<Arc<Target>> {
        self.map.lock().values().cloned().collect()
    }

    /// Forgets targets no table uses any more.
    pub fn retain(&self, used: &std::collections::HashSet<usize>) {
        self.map
            .lock()
            .retain(|_, t| used.contains(&(Arc::as_ptr(t) as usize)));
    }
}

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match serde_json::from_slice(&kv.value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key = %kv.key, error = %e, "load balancer skips a record it cannot read");
            None
        }
    }
}

/// Builds a scope's table from its `elbv2/` records and its container
/// instances (for instance targets' addresses), at `now`.
pub fn build(
    scope: &Scope,
    records: &[KeyValue],
    instances: &[ContainerInstance],
    targets: &Targets,
    now: f64,
) -> Table {
    let (lbs_p, tgs_p, listeners_p, targets_p) = (
        scope.load_balancers(),
        scope.target_groups(),
        scope.listeners(),
        scope.targets(),
    );
    let mut lbs: HashMap<String, LoadBalancer> = HashMap::new();
    let mut tgs: HashMap<String, TargetGroup> = HashMap::new();
    let mut listeners: Vec<Listener> = vec![];
    let mut regs: HashMap<String, Vec<(String, i64, Registration)>> = HashMap::new();
    for kv in records {
        if kv.key.starts_with(&lbs_p) {
            if let Some(lb) = decode::<LoadBalancer>(kv) {
                lbs.insert(lb.id.clone(), lb);
            }
        } else if kv.key.starts_with(&tgs_p) {
            if let Some(tg) = decode::<TargetGroup>(kv) {
                tgs.insert(tg.arn(scope), tg);
            }
        } else if kv.key.starts_with(&listeners_p) {
            listeners.extend(decode::<Listener>(kv));
        } else if let Some(rest) = kv.key.strip_prefix(&targets_p) {
            if let (Some((tg_id, _)), Some(r)) = (rest.split_once('/'), decode::<Registration>(kv))
            {
                regs.entry(tg_id.to_string()).or_default().push((
                    kv.key.clone(),
                    kv.mod_revision,
                    r,
                ));
            }
        }
    }
    let address_of = |r: &Registration, tg: &TargetGroup| -> Option<String> {
        if tg.target_type == "ip" {
            Some(r.id.clone())
        } else {
            instances
                .iter()
                .find(|i| i.ec2_instance_id == r.id)
                .map(|i| i.host_address().to_string())
        }
    };
    let mut table = Table::default();
    // Draining registrations: those whose delay has passed are deleted,
    // the others end later and are not routed to meanwhile.
    for (tg_id, list) in &regs {
        let delay = tgs
            .values()
            .find(|t| &t.id == tg_id)
            .map_or(0, TargetGroup::deregistration_delay);
        for (key, rev, r) in list {
            let Some(at) = r.deregistered_at else {
                continue;
            };
            if r.drained(delay, now) {
                let observed = scope.target_observed(tg_id, &Registration::key(&r.id, r.port));
                table.drained.push((key.clone(), *rev, observed));
            } else {
                let end = at + delay as f64;
                table.next_drain_end = Some(table.next_drain_end.map_or(end, |e: f64| e.min(end)));
            }
        }
    }
    let mut groups: HashMap<String, Arc<Group>> = HashMap::new();
    let mut checked: std::collections::HashSet<usize> = std::collections::HashSet::new();
    for l in &listeners {
        let Some(lb) = lbs.get(&l.lb_id) else {
            continue;
        };
        let Ok(port) = u16::try_from(l.port) else {
            continue;
        };
        for arn in l.target_groups() {
            if groups.contains_key(&arn) {
                continue;
            }
            let Some(tg) = tgs.get(&arn) else { continue };
            let mut live = vec![];
            for (_, _, r) in regs.get(&tg.id).map(Vec::as_slice).unwrap_or_default() {
                if r.draining() {
                    continue;
                }
                let segment = Registration::key(&r.id, r.port);
                let Some(host) = address_of(r, tg) else {
                    continue;
                };
                let (Ok(addr), Ok(check)) = (
                    format!("{host}:{}", r.port).parse::<SocketAddr>(),
                    format!("{host}:{}", tg.check_port(r.port)).parse::<SocketAddr>(),
                ) else {
                    continue;
                };
                let t = targets.get(scope, &tg.id, &segment, addr, check);
                if !tg.health.enabled {
                    t.serving.store(true, Ordering::Relaxed);
                } else if checked.insert(Arc::as_ptr(&t) as usize) {
                    table.checks.push(Check {
                        target: t.clone(),
                        health: tg.health.clone(),
                    });
                }
                live.push(t);
            }
            let algorithm = if tg.attributes.get(ALGORITHM).map(String::as_str)
                == Some("least_outstanding_requests")
            {
                Algorithm::LeastOutstanding
            } else {
                Algorithm::RoundRobin
            };
            groups.insert(
                arn.clone(),
                Arc::new(Group {
                    algorithm,
                    targets: live,
                    next: AtomicUsize::new(0),
                }),
            );
        }
        let mut rules: Vec<&berth_domain::elb::Rule> = l.rules.iter().collect();
        rules.sort_by_key(|r| r.priority);
        let mut routes: Vec<Route> = rules
            .iter()
            .map(|r| Route::compile(&r.conditions, &r.actions))
            .collect();
        routes.push(Route::compile(&[], &l.default_actions));
        let port_groups = l
            .target_groups()
            .into_iter()
            .filter_map(|arn| groups.get(&arn).map(|g| (arn, g.clone())))
            .collect();
        let idle = lb
            .attributes
            .get(IDLE_TIMEOUT)
            .and_then(|v| v.parse().ok())
            .unwrap_or(60);
        let matches_headers = routes
            .iter()
            .flat_map(|r| &r.conditions)
            .any(|c| matches!(c, berth_domain::elb::rules::Match::Header(..)));
        table.ports.insert(
            port,
            Arc::new(Port {
                port,
                port_header: hyper::header::HeaderValue::from(port),
                matches_headers,
                routes,
                groups: port_groups,
                idle_timeout: Duration::from_secs(idle),
                xff: lb
                    .attributes
                    .get(XFF_MODE)
                    .cloned()
                    .unwrap_or_else(|| "append".into()),
            }),
        );
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_domain::elb::{attributes, LbSubnet};
    use berth_wire::elbv2 as w;

    fn kv(key: String, value: &impl serde::Serialize) -> KeyValue {
        KeyValue {
            key,
            value: serde_json::to_vec(value).expect("json"),
            create_revision: 1,
            mod_revision: 7,
            version: 1,
            lease: None,
        }
    }

    fn records(scope: &Scope, regs: &[Registration], algorithm: &str) -> Vec<KeyValue> {
        let lb = LoadBalancer {
            name: "web".into(),
            id: "lb1".into(),
            scheme: "internal".into(),
            ip_address_type: "ipv4".into(),
            subnets: vec![LbSubnet {
                id: "subnet-a".into(),
                zone: "a".into(),
            }],
            security_groups: vec![],
            vpc_id: "vpc-local".into(),
            created_at: 0.0,
            tags: vec![],
            attributes: attributes::load_balancer_defaults(),
        };
        let mut tg_attrs = attributes::target_group_defaults();
        tg_attrs.insert(attributes::ALGORITHM.into(), algorithm.into());
        tg_attrs.insert(attributes::DEREGISTRATION_DELAY.into(), "10".into());
        let tg = TargetGroup {
            name: "tg".into(),
            id: "tg1".into(),
            protocol: "HTTP".into(),
            protocol_version: "HTTP1".into(),
            port: 80,
            target_type: "ip".into(),
            vpc_id: "vpc-local".into(),
            health: HealthCheck::default(),
            created_at: 0.0,
            tags: vec![],
            attributes: tg_attrs,
        };
        let forward = w::Action {
            r#type: Some("forward".into()),
            forward_config: Some(w::ForwardActionConfig {
                target_groups: Some(vec![w::TargetGroupTuple {
                    target_group_arn: Some(tg.arn(scope)),
                    weight: Some(1),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let listener = Listener {
            id: "l1".into(),
            lb_name: "web".into(),
            lb_id: "lb1".into(),
            port: 8081,
            protocol: "HTTP".into(),
            default_actions: vec![forward],
            default_rule_id: "r0".into(),
            rules: vec![],
            tags: vec![],
        };
        let mut out = vec![
            kv(scope.load_balancer("web"), &lb),
            kv(scope.target_group("tg"), &tg),
            kv(scope.listener("lb1", "l1"), &listener),
        ];
        for r in regs {
            out.push(kv(
                scope.target("tg1", &Registration::key(&r.id, r.port)),
                r,
            ));
        }
        out
    }

    fn reg(ip: &str, deregistered_at: Option<f64>) -> Registration {
        Registration {
            id: ip.into(),
            port: 80,
            availability_zone: None,
            registered_at: 0.0,
            deregistered_at,
            task: None,
        }
    }

    #[test]
    fn the_table_routes_live_targets_and_finds_drained_ones() {
        let scope = Scope::new("000000000000", "us-east-1");
        let regs = [
            reg("10.0.0.1", None),
            reg("10.0.0.2", Some(95.0)),
            reg("10.0.0.3", Some(80.0)),
        ];
        let targets = Targets::default();
        let t = build(
            &scope,
            &records(&scope, &regs, "round_robin"),
            &[],
            &targets,
            100.0,
        );
        let port = &t.ports[&8081];
        let group = port.groups.values().next().expect("a group");
        assert_eq!(group.targets.len(), 1);
        assert_eq!(group.targets[0].addr.to_string(), "10.0.0.1:80");
        assert_eq!(t.checks.len(), 1);
        // 10.0.0.3's 10 s delay ended at 90; 10.0.0.2's ends at 105.
        assert_eq!(t.drained.len(), 1);
        assert!(t.drained[0].0.ends_with("10.0.0.3:80"));
        assert_eq!(t.next_drain_end, Some(105.0));
        // A rebuild keeps the same target object (its health, its counts).
        let again = build(
            &scope,
            &records(&scope, &regs, "round_robin"),
            &[],
            &targets,
            100.0,
        );
        let g2 = again.ports[&8081].groups.values().next().expect("a group");
        assert!(Arc::ptr_eq(&group.targets[0], &g2.targets[0]));
    }

    #[test]
    fn picks_go_round_robin_or_to_the_least_busy_and_fail_open() {
        let scope = Scope::new("000000000000", "us-east-1");
        let regs = [reg("10.0.0.1", None), reg("10.0.0.2", None)];
        let pick = |algorithm: &str| {
            let t = build(
                &scope,
                &records(&scope, &regs, algorithm),
                &[],
                &Targets::default(),
                0.0,
            );
            let g = t.ports[&8081]
                .groups
                .values()
                .next()
                .expect("a group")
                .clone();
            g
        };
        let g = pick("round_robin");
        // None passes its checks yet: every target gets traffic.
        let seen: Vec<String> = (0..4)
            .map(|_| g.pick().expect("a target").addr.to_string())
            .collect();
        assert_eq!(seen[0], seen[2]);
        assert_ne!(seen[0], seen[1]);
        g.targets[1].serving.store(true, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(g.pick().expect("a target").addr.to_string(), "10.0.0.2:80");
        }

        let g = pick("least_outstanding_requests");
        for t in &g.targets {
            t.serving.store(true, Ordering::Relaxed);
        }
        g.targets[0].inflight.store(5, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(g.pick().expect("a target").addr.to_string(), "10.0.0.2:80");
        }
    }
}
