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
    /// Where health checks go.
    pub check_addr: SocketAddr,
    /// Passing health checks (or checks disabled).
    pub serving: AtomicBool,
    pub inflight: AtomicUsize,
    pub requests: AtomicU64,
    /// Where the health checks stand; kept here so that a check restarted
    /// with new settings goes on from it.
    pub tracker: Mutex<Tracker>,
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
        let serving: Vec<&Arc<Target>> = self
            .targets
            .iter()
            .filter(|t| t.serving.load(Ordering::Relaxed))
            .collect();
        let pool: Vec<&Arc<Target>> = if serving.is_empty() {
            self.targets.iter().collect()
        } else {
            serving
        };
        if pool.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let chosen = match self.algorithm {
            Algorithm::RoundRobin => pool[turn % pool.len()],
            Algorithm::LeastOutstanding => {
                let n = pool.len();
                // Ties go round robin, so equal targets share the load.
                (0..n)
                    .map(|i| pool[(turn + i) % n])
                    .min_by_key(|t| t.inflight.load(Ordering::Relaxed))
                    .unwrap_or(pool[0])
            }
        };
        Some(chosen.clone())
    }
}

/// What one listener port does.
#[derive(Debug)]
pub struct Port {
    pub port: u16,
    /// Rules by priority; the default rule last.
    pub routes: Vec<Route>,
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
    /// Drained registrations to delete: (registration key, mod revision, health key).
    pub drained: Vec<(String, i64, String)>,
    /// The earliest time (epoch seconds) a draining registration ends.
    pub next_drain_end: Option<f64>,
}

/// Targets kept across rebuilds, by (tg id, target key, address).
#[derive(Debug, Default)]
pub struct Targets(Mutex<HashMap<(String, String, SocketAddr), Arc<Target>>>);

impl Targets {
    fn get(
        &self,
        scope: &Scope,
        tg: &str,
        key: &str,
        addr: SocketAddr,
        check: SocketAddr,
    ) -> Arc<Target> {
        let mut map = self.0.lock();
        map.entry((tg.to_string(), key.to_string(), addr))
            .or_insert_with(|| {
                Arc::new(Target {
                    key: key.to_string(),
                    tg_id: tg.to_string(),
                    scope: scope.clone(),
                    addr,
                    check_addr: check,
                    serving: AtomicBool::new(false),
                    inflight: AtomicUsize::new(0),
                    requests: AtomicU64::new(0),
                    tracker: Mutex::new(Tracker::default()),
                })
            })
            .clone()
    }

    /// Forgets targets no table uses any more.
    pub fn retain(&self, used: &std::collections::HashSet<usize>) {
        self.0
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
                let segment = Registration::key(&r.id, r.port);
                table
                    .drained
                    .push((key.clone(), *rev, scope.target_health(tg_id, &segment)));
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
        table.ports.insert(
            port,
            Arc::new(Port {
                port,
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
