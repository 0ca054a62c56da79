//! Feasibility, constraints and strategies over a snapshot.

use crate::{
    Constraint, Instance, InstanceStatus, Request, Resource, SpreadField, Strategy, Subjects,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

/// How many memberOf expressions keep an index of their own.
const MAX_SUBSETS: usize = 64;

/// The instances of one cluster, indexed for placement.
#[derive(Debug, Default)]
pub struct Snapshot {
    instances: Vec<Instance>,
    by_arn: HashMap<Arc<str>, usize>,
    all: Ordered,
    // The instances that satisfy a static memberOf expression, ordered the
    // same way, built the first time a binpack request uses the expression,
    // so binpack does not step over every instance the expression excludes
    // (bench/scheduler.sh: 119,000 placements/s without, 178,000 with). A
    // cache: plans do not depend on it.
    subsets: Mutex<Vec<Subset>>,
}

/// One `place` call's working state: what it has planned so far, and
/// what it worked out once about each instance. Looked up per task and per
/// instance instead, a 10,000-task service over 1,000 instances took 18 s
/// to plan (bench/cluster.sh).
struct Planned {
    /// This plan's tasks on each instance, by position.
    on: Vec<u32>,
    /// The instances this plan uses, in the order it first used them.
    used: Vec<usize>,
    /// ACTIVE, agent connected, and with the required attributes: worked
    /// out when first asked, since binpack looks at only a few instances.
    fits: Vec<std::cell::Cell<Option<bool>>>,
    /// The request's group's tasks on each instance before this plan; only
    /// for requests that spread.
    group: Vec<i64>,
    /// For each spread-by-attribute strategy, by its position in the
    /// request: each instance's value as a small number, and how many
    /// values there are.
    values: Vec<Option<(Vec<usize>, usize)>>,
}

/// Instances ordered by one resource's free amount, so binpack can start at
/// the smallest amount that fits instead of looking at every instance.
///
/// Each order is split into bands by the bit length of the *other*
/// resource's free amount: binpack on memory skips the bands with too
/// little cpu without visiting them. With one plain order, instances whose
/// cpu ran out but whose memory did not (the usual end state of binpack on
/// memory) piled up at the front of the walk and had to be stepped over on
/// every placement.
#[derive(Debug, Clone, Default)]
struct Ordered {
    /// (band of memory free, cpu free, position)
    by_cpu: BTreeSet<(u8, i64, usize)>,
    /// (band of cpu free, memory free, position)
    by_memory: BTreeSet<(u8, i64, usize)>,
}

/// 0 for nothing left, else the bit length: 1, 2-3, 4-7, ...
fn band(free: i64) -> u8 {
    if free <= 0 {
        0
    } else {
        (64 - free.leading_zeros()) as u8
    }
}

impl Ordered {
    fn insert(&mut self, i: usize, inst: &Instance) {
        self.by_cpu
            .insert((band(inst.memory_free), inst.cpu_free, i));
        self.by_memory
            .insert((band(inst.cpu_free), inst.memory_free, i));
    }

    fn remove(&mut self, i: usize, inst: &Instance) {
        self.by_cpu
            .remove(&(band(inst.memory_free), inst.cpu_free, i));
        self.by_memory
            .remove(&(band(inst.cpu_free), inst.memory_free, i));
    }

    /// Calls `visit(free, position)` in increasing order of free `r` within
    /// each band that can hold `other` of the other resource, starting at
    /// `need`; a band ends early when `visit` returns false.
    fn walk(&self, r: Resource, need: i64, other: i64, mut visit: impl FnMut(i64, usize) -> bool) {
        let set = match r {
            Resource::Cpu => &self.by_cpu,
            Resource::Memory => &self.by_memory,
        };
        for b in band(other)..=64 {
            for &(_, free, i) in set.range((b, need, 0)..=(b, i64::MAX, usize::MAX)) {
                if !visit(free, i) {
                    break;
                }
            }
        }
    }
}

#[derive(Debug)]
struct Subset {
    expression: String,
    member: Vec<bool>,
    ordered: Ordered,
}

impl Clone for Snapshot {
    fn clone(&self) -> Snapshot {
        Snapshot {
            instances: self.instances.clone(),
            by_arn: self.by_arn.clone(),
            all: self.all.clone(),
            subsets: Mutex::default(),
        }
    }
}

/// Where the tasks of a request go. Fewer placements than requested means
/// the rest fit nowhere; `failures` then says why, per instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub placements: Vec<Placement>,
    pub failures: Vec<Failure>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub instance: Arc<str>,
    position: usize,
}

/// Why an instance could not take a task, as RunTask reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub arn: Arc<str>,
    pub reason: Reason,
    /// For [`Reason::Attribute`], the first required attribute the
    /// instance lacks (`name`, or `name=value` when a value is required).
    pub missing: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Agent,
    Attribute,
    Cpu,
    Memory,
    Ports,
    MemberOf,
    DistinctInstance,
}

impl Reason {
    /// The text ECS puts in `failures[].reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Agent => "AGENT",
            Reason::Attribute => "ATTRIBUTE",
            Reason::Cpu => "RESOURCE:CPU",
            Reason::Memory => "RESOURCE:MEMORY",
            Reason::Ports => "RESOURCE:PORTS",
            Reason::MemberOf => "MemberOf placement constraint unsatisfied.",
            Reason::DistinctInstance => "DistinctInstance placement constraint unsatisfied.",
        }
    }
}

/// An instance plus the tasks of the request already placed on it in this
/// plan, as the query language sees it.
struct View<'a> {
    instance: &'a Instance,
    group: &'a str,
    placed: u32,
}

impl Subjects for View<'_> {
    fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.instance.attribute(name)
    }
    fn agent_connected(&self) -> bool {
        self.instance.agent_connected
    }
    fn agent_version(&self) -> &str {
        &self.instance.agent_version
    }
    fn ec2_instance_id(&self) -> &str {
        &self.instance.ec2_instance_id
    }
    fn registered_at(&self) -> i64 {
        self.instance.registered_at
    }
    fn running_tasks_count(&self) -> u32 {
        self.instance.running_tasks + self.placed
    }
    fn task_groups(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        let extra = (self.placed > 0).then_some(self.group);
        Box::new(self.instance.task_groups().chain(extra))
    }
}

/// A small deterministic generator (SplitMix64): plans are reproducible
/// from their seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % n as u64) as usize
    }
}

impl Snapshot {
    pub fn new(instances: Vec<Instance>) -> Snapshot {
        let mut s = Snapshot {
            by_arn: instances
                .iter()
                .enumerate()
                .map(|(i, inst)| (inst.arn.clone(), i))
                .collect(),
            instances,
            ..Default::default()
        };
        for (i, inst) in s.instances.iter().enumerate() {
            s.all.insert(i, inst);
        }
        s
    }

    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    pub fn get(&self, arn: &str) -> Option<&Instance> {
        self.by_arn.get(arn).map(|&i| &self.instances[i])
    }

    /// Instances that could take tasks at all (ACTIVE); with none, RunTask
    /// answers that the cluster has no container instances.
    pub fn active(&self) -> impl Iterator<Item = &Instance> {
        self.instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Active)
    }

    /// Adds an instance, or replaces the one with its ARN, keeping the
    /// indexes current: a snapshot kept alive and fed each host's change
    /// costs the hosts that changed, not all of them.
    pub fn upsert(&mut self, inst: Instance) {
        match self.by_arn.get(&inst.arn) {
            Some(&i) => {
                let regrouped = {
                    let old = &self.instances[i];
                    old.attributes != inst.attributes || old.status != inst.status
                };
                self.update(i, |old| *old = inst);
                if regrouped {
                    // Which memberOf subsets it belongs to may have changed.
                    self.subsets_mut().clear();
                }
            }
            None => {
                let i = self.instances.len();
                self.by_arn.insert(inst.arn.clone(), i);
                self.all.insert(i, &inst);
                self.instances.push(inst);
                self.subsets_mut().clear();
            }
        }
    }

    /// Takes an instance out; the last one moves into its place.
    pub fn remove(&mut self, arn: &str) {
        let Some(i) = self.by_arn.remove(arn) else {
            return;
        };
        let last = self.instances.len() - 1;
        self.all.remove(i, &self.instances[i]);
        if i != last {
            self.all.remove(last, &self.instances[last]);
            self.instances.swap(i, last);
            self.all.insert(i, &self.instances[i]);
            self.by_arn.insert(self.instances[i].arn.clone(), i);
        }
        self.instances.pop();
        self.subsets_mut().clear();
    }

    fn subsets_mut(&mut self) -> &mut Vec<Subset> {
        self.subsets
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes instance `i` and keeps every order it is in current.
    fn update(&mut self, i: usize, change: impl FnOnce(&mut Instance)) {
        let subsets = self
            .subsets
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let mut orders: Vec<&mut Ordered> = std::iter::once(&mut self.all)
            .chain(
                subsets
                    .iter_mut()
                    .filter(|s| s.member[i])
                    .map(|s| &mut s.ordered),
            )
            .collect();
        let inst = &mut self.instances[i];
        for o in orders.iter_mut() {
            o.remove(i, inst);
        }
        change(inst);
        for o in orders.iter_mut() {
            o.insert(i, inst);
        }
    }

    /// Runs `walk` over the ordered index of the instances that satisfy
    /// the request's first static memberOf expression, or of all of them.
    fn with_ordered<T>(&self, req: &Request, walk: impl FnOnce(&Ordered) -> T) -> T {
        let query = req.constraints.iter().find_map(|c| match c {
            Constraint::MemberOf(q) if q.is_static() => Some(q),
            _ => None,
        });
        let Some(query) = query else {
            return walk(&self.all);
        };
        let mut subsets = self.subsets.lock().unwrap_or_else(PoisonError::into_inner);
        let found = subsets.iter().position(|s| s.expression == query.source());
        let at = match found {
            Some(at) => at,
            None => {
                if subsets.len() >= MAX_SUBSETS {
                    subsets.remove(0);
                }
                let member: Vec<bool> = self.instances.iter().map(|i| query.matches(i)).collect();
                let mut ordered = Ordered::default();
                for (i, inst) in self
                    .instances
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| member[*i])
                {
                    ordered.insert(i, inst);
                }
                subsets.push(Subset {
                    expression: query.source().to_string(),
                    member,
                    ordered,
                });
                subsets.len() - 1
            }
        };
        walk(&subsets[at].ordered)
    }

    /// Places `req.count` tasks. The same snapshot, request and seed always
    /// give the same plan.
    pub fn place(&self, req: &Request, seed: u64) -> Plan {
        let mut rng = Rng(seed);
        let mut planned = self.prepare(req);
        let mut plan = Plan::default();
        for _ in 0..req.count {
            let Some(i) = self.pick(req, &planned, &mut rng) else {
                plan.failures = self.explain(req, &planned.on);
                break;
            };
            if planned.on[i] == 0 {
                planned.used.push(i);
            }
            planned.on[i] += 1;
            plan.placements.push(Placement {
                instance: self.instances[i].arn.clone(),
                position: i,
            });
        }
        plan
    }

    /// What does not change while one request is planned, worked out once.
    fn prepare(&self, req: &Request) -> Planned {
        let n = self.instances.len();
        let values = req
            .strategies
            .iter()
            .map(|s| match s {
                Strategy::Spread(SpreadField::Attribute(name)) => {
                    let mut index: HashMap<Option<&str>, usize> = HashMap::new();
                    let of: Vec<usize> = self
                        .instances
                        .iter()
                        .map(|inst| {
                            let value = inst.attribute(name).map(|v| v.unwrap_or(""));
                            let next = index.len();
                            *index.entry(value).or_insert(next)
                        })
                        .collect();
                    Some((of, index.len()))
                }
                _ => None,
            })
            .collect();
        let spreads = req
            .strategies
            .iter()
            .any(|s| matches!(s, Strategy::Spread(_)));
        Planned {
            on: vec![0; n],
            used: Vec::new(),
            fits: vec![std::cell::Cell::new(None); n],
            group: if spreads {
                self.instances
                    .iter()
                    .map(|inst| i64::from(inst.groups.get(&req.group).copied().unwrap_or(0)))
                    .collect()
            } else {
                Vec::new()
            },
            values,
        }
    }

    /// Reserves what a plan from [`Snapshot::place`] placed, so the next
    /// plan sees it.
    pub fn commit(&mut self, req: &Request, plan: &Plan) {
        for p in &plan.placements {
            let i = match self.instances.get(p.position) {
                Some(inst) if inst.arn == p.instance => p.position,
                _ => match self.by_arn.get(&p.instance) {
                    Some(&i) => i,
                    None => continue,
                },
            };
            self.update(i, |inst| {
                inst.cpu_free -= req.cpu;
                inst.memory_free -= req.memory;
                inst.tcp_ports_taken.extend(&req.tcp_ports);
                inst.udp_ports_taken.extend(&req.udp_ports);
                inst.dynamic_ports_free = inst.dynamic_ports_free.saturating_sub(req.dynamic_ports);
                inst.running_tasks += 1;
                *inst.groups.entry(req.group.clone()).or_default() += 1;
            });
        }
    }

    /// Whether instance `i`, with `placed` of this request's tasks already
    /// planned on it, can take one more; the first rule it breaks if not.
    fn check(&self, i: usize, placed: u32, req: &Request) -> Result<(), Reason> {
        self.check_static(i, req)?;
        self.check_planned(i, placed, req)
    }

    /// The rules that do not depend on what the plan has placed.
    fn check_static(&self, i: usize, req: &Request) -> Result<(), Reason> {
        let inst = &self.instances[i];
        if !inst.agent_connected {
            return Err(Reason::Agent);
        }
        if self.missing_attribute(i, req).is_some() {
            return Err(Reason::Attribute);
        }
        Ok(())
    }

    /// The first attribute the task requires that instance `i` lacks.
    fn missing_attribute<'r>(
        &self,
        i: usize,
        req: &'r Request,
    ) -> Option<&'r (String, Option<String>)> {
        let inst = &self.instances[i];
        let has = |(name, value): &&(String, Option<String>)| match inst.attributes.get(name) {
            None => false,
            Some(v) => value.is_none() || v == value,
        };
        req.requires_attributes.iter().find(|a| !has(a))
    }

    /// The rules that do: resources, ports and constraints.
    fn check_planned(&self, i: usize, placed: u32, req: &Request) -> Result<(), Reason> {
        let inst = &self.instances[i];
        let n = i64::from(placed) + 1;
        if inst.cpu_free < req.cpu * n {
            return Err(Reason::Cpu);
        }
        if inst.memory_free < req.memory * n {
            return Err(Reason::Memory);
        }
        let fixed = !req.tcp_ports.is_empty() || !req.udp_ports.is_empty();
        let clash = req
            .tcp_ports
            .iter()
            .any(|p| inst.tcp_ports_taken.contains(p))
            || req
                .udp_ports
                .iter()
                .any(|p| inst.udp_ports_taken.contains(p));
        let dynamic = u64::from(req.dynamic_ports) * (u64::from(placed) + 1);
        if clash || (fixed && placed > 0) || u64::from(inst.dynamic_ports_free) < dynamic {
            return Err(Reason::Ports);
        }
        for c in &req.constraints {
            match c {
                Constraint::DistinctInstance => {
                    if placed > 0 || inst.groups.get(&req.group).is_some_and(|n| *n > 0) {
                        return Err(Reason::DistinctInstance);
                    }
                }
                Constraint::MemberOf(q) => {
                    let view = View {
                        instance: inst,
                        group: &req.group,
                        placed,
                    };
                    if !q.matches(&view) {
                        return Err(Reason::MemberOf);
                    }
                }
            }
        }
        Ok(())
    }

    fn eligible(&self, i: usize, p: &Planned, req: &Request) -> bool {
        let fits = p.fits[i].get().unwrap_or_else(|| {
            let fits = self.instances[i].status == InstanceStatus::Active
                && self.check_static(i, req).is_ok();
            p.fits[i].set(Some(fits));
            fits
        });
        fits && self.check_planned(i, p.on[i], req).is_ok()
    }

    fn pick(&self, req: &Request, p: &Planned, rng: &mut Rng) -> Option<usize> {
        let (candidates, first) = match req.strategies.first() {
            Some(Strategy::Binpack(r)) => (self.tightest(req, *r, p), 1),
            _ => {
                let all = (0..self.instances.len())
                    .filter(|&i| self.eligible(i, p, req))
                    .collect();
                (all, 0)
            }
        };
        if candidates.is_empty() {
            return None;
        }
        let mut candidates = candidates;
        for (k, s) in req.strategies.iter().enumerate().skip(first) {
            if candidates.len() <= 1 {
                break;
            }
            candidates = self.narrow(candidates, k, s, req, p, rng);
        }
        Some(candidates[rng.below(candidates.len())])
    }

    /// The eligible instances with the least of `r` left, found by walking
    /// the index from the smallest amount that fits. Instances this plan
    /// already uses are out of order in the index and are looked at apart.
    fn tightest(&self, req: &Request, r: Resource, p: &Planned) -> Vec<usize> {
        let (need, other) = match r {
            Resource::Cpu => (req.cpu, req.memory),
            Resource::Memory => (req.memory, req.cpu),
        };
        let mut best: Option<i64> = None;
        let mut ties = Vec::new();
        fn consider(best: &mut Option<i64>, ties: &mut Vec<usize>, free: i64, i: usize) {
            match *best {
                Some(b) if free > b => {}
                Some(b) if free == b => ties.push(i),
                _ => {
                    *best = Some(free);
                    ties.clear();
                    ties.push(i);
                }
            }
        }
        self.with_ordered(req, |ordered| {
            ordered.walk(r, need, other, |free, i| {
                if best.is_some_and(|b| free > b) {
                    return false;
                }
                if p.on[i] == 0 && self.eligible(i, p, req) {
                    consider(&mut best, &mut ties, free, i);
                }
                true
            })
        });
        for &i in &p.used {
            if self.eligible(i, p, req) {
                let free = self.free(i, r) - need * i64::from(p.on[i]);
                consider(&mut best, &mut ties, free, i);
            }
        }
        ties
    }

    fn free(&self, i: usize, r: Resource) -> i64 {
        match r {
            Resource::Cpu => self.instances[i].cpu_free,
            Resource::Memory => self.instances[i].memory_free,
        }
    }

    /// Keeps the candidates that `s`, the request's `k`th strategy, likes
    /// best.
    fn narrow(
        &self,
        candidates: Vec<usize>,
        k: usize,
        s: &Strategy,
        req: &Request,
        p: &Planned,
        rng: &mut Rng,
    ) -> Vec<usize> {
        let on = |i: usize| p.on[i];
        let group_on = |i: usize| p.group[i] + i64::from(p.on[i]);
        let keep_min = |score: &dyn Fn(usize) -> i64| {
            let best = candidates.iter().map(|&i| score(i)).min().unwrap_or(0);
            candidates
                .iter()
                .copied()
                .filter(|&i| score(i) == best)
                .collect()
        };
        match s {
            Strategy::Random => vec![candidates[rng.below(candidates.len())]],
            Strategy::Binpack(r) => {
                let need = match r {
                    Resource::Cpu => req.cpu,
                    Resource::Memory => req.memory,
                };
                keep_min(&|i| self.free(i, *r) - need * i64::from(on(i)))
            }
            Strategy::Spread(SpreadField::Instance) => keep_min(&group_on),
            Strategy::Spread(SpreadField::Attribute(_)) => {
                let Some((of, values)) = p.values.get(k).and_then(Option::as_ref) else {
                    return candidates;
                };
                // The group's tasks per value, over every instance: a zone
                // whose instances are full still counts its tasks.
                let mut per_value = vec![0i64; *values];
                for (i, &v) in of.iter().enumerate() {
                    per_value[v] += group_on(i);
                }
                keep_min(&|i| per_value[of[i]])
            }
        }
    }

    /// Each ACTIVE instance's reason for refusing one more task.
    fn explain(&self, req: &Request, on: &[u32]) -> Vec<Failure> {
        (0..self.instances.len())
            .filter(|&i| self.instances[i].status == InstanceStatus::Active)
            .filter_map(|i| {
                self.check(i, on[i], req).err().map(|reason| Failure {
                    arn: self.instances[i].arn.clone(),
                    reason,
                    // Named only here: the checks above run for every
                    // instance of every placement.
                    missing: (reason == Reason::Attribute)
                        .then(|| self.missing_attribute(i, req))
                        .flatten()
                        .map(|(name, value)| match value {
                            Some(v) => format!("{name}={v}"),
                            None => name.clone(),
                        }),
                })
            })
            .collect()
    }
}
