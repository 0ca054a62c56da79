//! Placement against an independent oracle: every plan is replayed task by
//! task, and each choice must fit, honour every constraint and be among the
//! best candidates by the strategies in order. A plan that stops early must
//! leave no candidate at all.

use berth_scheduler::{
    Constraint, Instance, InstanceStatus, Plan, Query, Reason, Request, Resource, Snapshot,
    SpreadField, Strategy,
};
use proptest::prelude::*;
use proptest::strategy::Strategy as _;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// memberOf expressions, each with its meaning written out independently:
/// (instance, this request's tasks already planned on it, group) -> bool.
type Meaning = fn(&Instance, u32, &str) -> bool;

fn attr<'a>(i: &'a Instance, name: &str) -> Option<&'a str> {
    i.attributes.get(name).map(|v| v.as_deref().unwrap_or(""))
}

const MEMBER_OF: &[(&str, Meaning)] = &[
    ("attribute:zone == a", |i, _, _| {
        attr(i, "zone") == Some("a")
    }),
    ("attribute:type =~ m5.*", |i, _, _| {
        attr(i, "type").is_some_and(|t| t.starts_with("m5."))
    }),
    (
        "attribute:zone in [a, b] and attribute:gpu exists",
        |i, _, _| matches!(attr(i, "zone"), Some("a" | "b")) && attr(i, "gpu").is_some(),
    ),
    ("not(task:group == g1)", |i, n, g| {
        i.groups.get("g1").copied().unwrap_or(0) == 0 && !(g == "g1" && n > 0)
    }),
    (
        "runningTasksCount < 3 || attribute:type == t2.small",
        |i, n, _| i.running_tasks + n < 3 || attr(i, "type") == Some("t2.small"),
    ),
];

#[derive(Debug, Clone)]
struct Case {
    instances: Vec<Instance>,
    requests: Vec<(Request, Vec<usize>)>,
    seed: u64,
}

fn instance() -> impl proptest::strategy::Strategy<Value = Instance> {
    (
        (0..3usize, 0..3usize, any::<bool>(), 0..10u8, 0..10u8),
        (
            0..33i64,
            0..33i64,
            proptest::collection::btree_set(prop_oneof![Just(80u16), Just(443), Just(8080)], 0..3),
        ),
        (0..4u32, 0..4u32, 0..4u32, 0..3u32),
    )
        .prop_map(
            |((zone, kind, gpu, status, connected), (cpu, mem, tcp), (dynamic, g1, g2, extra))| {
                let mut attributes = BTreeMap::new();
                attributes.insert("zone".to_string(), Some(["a", "b", "c"][zone].to_string()));
                attributes.insert(
                    "type".to_string(),
                    Some(["t2.small", "m5.large", "m5.xlarge"][kind].to_string()),
                );
                if gpu {
                    attributes.insert("gpu".to_string(), None);
                }
                let groups: HashMap<String, u32> = [("g1".to_string(), g1), ("g2".to_string(), g2)]
                    .into_iter()
                    .collect();
                Instance {
                    arn: Arc::from(""),
                    ec2_instance_id: String::new(),
                    status: match status {
                        0 => InstanceStatus::Draining,
                        1 => InstanceStatus::Inactive,
                        _ => InstanceStatus::Active,
                    },
                    agent_connected: connected != 0,
                    agent_version: "1.0.0".into(),
                    registered_at: 0,
                    attributes,
                    cpu_free: cpu * 128,
                    memory_free: mem * 256,
                    tcp_ports_taken: tcp,
                    udp_ports_taken: BTreeSet::new(),
                    dynamic_ports_free: dynamic,
                    running_tasks: g1 + g2 + extra,
                    groups,
                }
            },
        )
}

fn strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
    prop_oneof![
        Just(Strategy::Binpack(Resource::Cpu)),
        Just(Strategy::Binpack(Resource::Memory)),
        Just(Strategy::Spread(SpreadField::Instance)),
        Just(Strategy::Spread(SpreadField::Attribute("zone".into()))),
        Just(Strategy::Random),
    ]
}

/// A request plus the memberOf expressions it uses (indices into MEMBER_OF).
fn request() -> impl proptest::strategy::Strategy<Value = (Request, Vec<usize>)> {
    (
        (0..2usize, 1..11usize, 0..9i64, 0..9i64),
        (any::<bool>(), any::<bool>(), 0..3u32, 0..3usize),
        (
            any::<bool>(),
            proptest::collection::vec(0..MEMBER_OF.len(), 0..2),
            proptest::collection::vec(strategy(), 0..3),
        ),
    )
        .prop_map(
            |(
                (group, count, cpu, mem),
                (p80, p8080, dynamic, needs),
                (distinct, member_of, strategies),
            )| {
                let mut constraints: Vec<Constraint> = member_of
                    .iter()
                    .map(|&m| Constraint::MemberOf(Query::parse(MEMBER_OF[m].0).expect("query")))
                    .collect();
                if distinct {
                    constraints.push(Constraint::DistinctInstance);
                }
                let req = Request {
                    group: ["g1", "g2"][group].to_string(),
                    count,
                    cpu: cpu * 128,
                    memory: mem * 256,
                    tcp_ports: [(p80, 80u16), (p8080, 8080)]
                        .into_iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, p)| p)
                        .collect(),
                    udp_ports: vec![],
                    dynamic_ports: dynamic,
                    requires_attributes: match needs {
                        0 => vec![],
                        1 => vec![("gpu".to_string(), None)],
                        _ => vec![("zone".to_string(), Some("b".to_string()))],
                    },
                    constraints,
                    strategies,
                };
                (req, member_of)
            },
        )
}

fn case() -> impl proptest::strategy::Strategy<Value = Case> {
    (
        proptest::collection::vec(instance(), 0..16),
        proptest::collection::vec(request(), 1..4),
        any::<u64>(),
    )
        .prop_map(|(mut instances, requests, seed)| {
            for (n, i) in instances.iter_mut().enumerate() {
                i.arn = Arc::from(format!("arn:instance/{n}"));
            }
            Case {
                instances,
                requests,
                seed,
            }
        })
}

/// The oracle's own feasibility rules.
fn fits(i: &Instance, n: u32, req: &Request, member_of: &[usize]) -> bool {
    let n64 = i64::from(n);
    let fixed = !req.tcp_ports.is_empty();
    i.status == InstanceStatus::Active
        && i.agent_connected
        && req
            .requires_attributes
            .iter()
            .all(|(k, v)| match (i.attributes.get(k), v) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(have), Some(want)) => have.as_deref() == Some(want.as_str()),
            })
        && i.cpu_free >= req.cpu * (n64 + 1)
        && i.memory_free >= req.memory * (n64 + 1)
        && !(fixed && n > 0)
        && req.tcp_ports.iter().all(|p| !i.tcp_ports_taken.contains(p))
        && i64::from(i.dynamic_ports_free) >= i64::from(req.dynamic_ports) * (n64 + 1)
        && req.constraints.iter().all(|c| match c {
            Constraint::DistinctInstance => {
                n == 0 && i.groups.get(&req.group).copied().unwrap_or(0) == 0
            }
            Constraint::MemberOf(_) => true,
        })
        && member_of
            .iter()
            .all(|&m| (MEMBER_OF[m].1)(i, n, &req.group))
}

/// The candidates the strategies may choose from, in order, up to the first
/// random one (which may pick any).
fn best(instances: &[Instance], on: &[u32], req: &Request, mut set: Vec<usize>) -> Vec<usize> {
    let group =
        |i: usize| i64::from(instances[i].groups.get(&req.group).copied().unwrap_or(0) + on[i]);
    for s in &req.strategies {
        let score: Box<dyn Fn(usize) -> i64> = match s {
            Strategy::Random => break,
            Strategy::Binpack(Resource::Cpu) => {
                Box::new(|i| instances[i].cpu_free - req.cpu * i64::from(on[i]))
            }
            Strategy::Binpack(Resource::Memory) => {
                Box::new(|i| instances[i].memory_free - req.memory * i64::from(on[i]))
            }
            Strategy::Spread(SpreadField::Instance) => Box::new(group),
            Strategy::Spread(SpreadField::Attribute(a)) => Box::new(move |i| {
                (0..instances.len())
                    .filter(|&j| attr(&instances[j], a) == attr(&instances[i], a))
                    .map(group)
                    .sum()
            }),
        };
        let min = set.iter().map(|&i| score(i)).min().unwrap_or(0);
        set.retain(|&i| score(i) == min);
    }
    set
}

fn check_plan(instances: &[Instance], req: &Request, member_of: &[usize], plan: &Plan) {
    let pos: HashMap<&str, usize> = instances
        .iter()
        .enumerate()
        .map(|(n, i)| (&*i.arn, n))
        .collect();
    let mut on = vec![0u32; instances.len()];
    for p in &plan.placements {
        let chosen = pos[&*p.instance];
        let feasible: Vec<usize> = (0..instances.len())
            .filter(|&i| fits(&instances[i], on[i], req, member_of))
            .collect();
        assert!(
            feasible.contains(&chosen),
            "placed on an instance that cannot take it: {chosen}"
        );
        let allowed = best(instances, &on, req, feasible);
        assert!(
            allowed.contains(&chosen),
            "{chosen} is not among the best {allowed:?} for {:?}",
            req.strategies
        );
        on[chosen] += 1;
    }
    if plan.placements.len() < req.count {
        let left: Vec<usize> = (0..instances.len())
            .filter(|&i| fits(&instances[i], on[i], req, member_of))
            .collect();
        assert!(
            left.is_empty(),
            "stopped early with candidates {left:?} left"
        );
        let active = instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Active)
            .count();
        assert_eq!(
            plan.failures.len(),
            active,
            "one failure per active instance"
        );
    } else {
        assert!(plan.failures.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn plans_fit_honour_constraints_follow_strategies_and_never_oversubscribe(case in case()) {
        let mut snapshot = Snapshot::new(case.instances.clone());
        for (k, (req, member_of)) in case.requests.iter().enumerate() {
            let plan = snapshot.place(req, case.seed.wrapping_add(k as u64));
            check_plan(snapshot.instances(), req, member_of, &plan);
            prop_assert_eq!(&plan, &snapshot.place(req, case.seed.wrapping_add(k as u64)), "same seed, same plan");
            snapshot.commit(req, &plan);
            for i in snapshot.instances() {
                prop_assert!(i.cpu_free >= 0 && i.memory_free >= 0, "oversubscribed: {:?}", i);
            }
        }
    }

    /// A snapshot kept up to date host by host (added, changed, removed;
    /// placed on in between so that its caches are warm) plans exactly as
    /// one built afresh from the same hosts.
    #[test]
    fn a_snapshot_kept_by_upserts_and_removals_plans_as_one_built_afresh(
        case in case(),
        changes in proptest::collection::vec((any::<proptest::sample::Index>(), instance(), any::<bool>()), 0..12),
    ) {
        let mut kept = Snapshot::new(vec![]);
        for i in &case.instances {
            kept.upsert(i.clone());
        }
        let (req, _) = &case.requests[0];
        for (n, (at, mut inst, remove)) in changes.into_iter().enumerate() {
            let _ = kept.place(req, case.seed);
            if case.instances.is_empty() {
                inst.arn = Arc::from(format!("arn:instance/new{n}"));
                kept.upsert(inst);
                continue;
            }
            let target = at.get(&case.instances).arn.clone();
            if remove {
                kept.remove(&target);
            } else {
                inst.arn = target;
                kept.upsert(inst);
            }
        }
        let afresh = Snapshot::new(kept.instances().to_vec());
        for (k, (req, _)) in case.requests.iter().enumerate() {
            let seed = case.seed.wrapping_add(k as u64);
            prop_assert_eq!(kept.place(req, seed), afresh.place(req, seed));
        }
    }
}

fn host(n: usize, zone: &str, cpu: i64, memory: i64) -> Instance {
    let mut attributes = BTreeMap::new();
    attributes.insert("ecs.availability-zone".to_string(), Some(zone.to_string()));
    Instance {
        arn: Arc::from(format!("arn:instance/{n}")),
        ec2_instance_id: format!("i-{n}"),
        status: InstanceStatus::Active,
        agent_connected: true,
        agent_version: "1.0.0".into(),
        registered_at: 0,
        attributes,
        cpu_free: cpu,
        memory_free: memory,
        tcp_ports_taken: [22u16].into_iter().collect(),
        udp_ports_taken: BTreeSet::new(),
        dynamic_ports_free: 100,
        running_tasks: 0,
        groups: HashMap::new(),
    }
}

fn names(plan: &Plan) -> Vec<String> {
    plan.placements
        .iter()
        .map(|p| p.instance.to_string())
        .collect()
}

#[test]
fn binpack_fills_the_tightest_instance_first() {
    let snap = Snapshot::new(vec![
        host(0, "a", 4096, 4096),
        host(1, "a", 4096, 1024),
        host(2, "b", 4096, 2048),
    ]);
    let req = Request {
        group: "family:web".into(),
        count: 4,
        memory: 512,
        strategies: vec![Strategy::Binpack(Resource::Memory)],
        ..Default::default()
    };
    assert_eq!(
        names(&snap.place(&req, 1)),
        [
            "arn:instance/1",
            "arn:instance/1",
            "arn:instance/2",
            "arn:instance/2"
        ]
    );
}

#[test]
fn spread_over_zones_then_instances_balances_both() {
    let hosts = vec![
        host(0, "a", 4096, 4096),
        host(1, "a", 4096, 4096),
        host(2, "b", 4096, 4096),
    ];
    let req = Request {
        group: "service:web".into(),
        count: 4,
        memory: 128,
        strategies: vec![
            Strategy::Spread(SpreadField::Attribute("ecs.availability-zone".into())),
            Strategy::Spread(SpreadField::Instance),
        ],
        ..Default::default()
    };
    for seed in 0..20 {
        let plan = Snapshot::new(hosts.clone()).place(&req, seed);
        let mut per: HashMap<String, usize> = HashMap::new();
        for n in names(&plan) {
            *per.entry(n).or_default() += 1;
        }
        // Two tasks in each zone; zone a's two on different instances.
        assert_eq!(per.get("arn:instance/2"), Some(&2), "seed {seed}: {per:?}");
        assert_eq!(per.get("arn:instance/0"), Some(&1), "seed {seed}: {per:?}");
        assert_eq!(per.get("arn:instance/1"), Some(&1), "seed {seed}: {per:?}");
    }
}

#[test]
fn failures_give_each_instance_its_first_broken_rule() {
    let mut off = host(0, "a", 4096, 4096);
    off.agent_connected = false;
    let small_cpu = host(1, "a", 128, 4096);
    let small_mem = host(2, "a", 4096, 64);
    let mut port = host(3, "a", 4096, 4096);
    port.tcp_ports_taken.insert(80);
    let zone_b = host(4, "b", 4096, 4096);
    let mut busy = host(5, "a", 4096, 4096);
    busy.groups.insert("service:web".into(), 1);
    let mut draining = host(6, "a", 4096, 4096);
    draining.status = InstanceStatus::Draining;
    let snap = Snapshot::new(vec![
        off, small_cpu, small_mem, port, zone_b, busy, draining,
    ]);
    let req = Request {
        group: "service:web".into(),
        count: 1,
        cpu: 256,
        memory: 128,
        tcp_ports: vec![80],
        constraints: vec![
            Constraint::DistinctInstance,
            Constraint::MemberOf(Query::parse("attribute:ecs.availability-zone == a").expect("q")),
        ],
        ..Default::default()
    };
    let plan = snap.place(&req, 7);
    assert!(plan.placements.is_empty());
    let got: Vec<(String, &str)> = plan
        .failures
        .iter()
        .map(|f| (f.arn.to_string(), f.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("arn:instance/0".to_string(), "AGENT"),
            ("arn:instance/1".to_string(), "RESOURCE:CPU"),
            ("arn:instance/2".to_string(), "RESOURCE:MEMORY"),
            ("arn:instance/3".to_string(), "RESOURCE:PORTS"),
            (
                "arn:instance/4".to_string(),
                "MemberOf placement constraint unsatisfied."
            ),
            (
                "arn:instance/5".to_string(),
                "DistinctInstance placement constraint unsatisfied."
            ),
        ]
    );
    assert_eq!(Reason::Attribute.as_str(), "ATTRIBUTE");
    assert!(plan.failures.iter().all(|f| f.missing.is_none()));
}

#[test]
fn a_missing_attribute_is_named() {
    let mut arm = host(0, "a", 4096, 4096);
    arm.attributes
        .insert("ecs.cpu-architecture".into(), Some("arm64".into()));
    arm.attributes
        .insert("ecs.capability.task-eni".into(), None);
    let plain = host(1, "a", 4096, 4096);
    let req = Request {
        count: 1,
        cpu: 256,
        memory: 128,
        requires_attributes: vec![
            ("ecs.capability.task-eni".into(), None),
            ("ecs.cpu-architecture".into(), Some("x86_64".into())),
        ],
        ..Default::default()
    };
    let plan = Snapshot::new(vec![arm, plain]).place(&req, 1);
    assert!(plan.placements.is_empty());
    let got: Vec<(&str, &str)> = plan
        .failures
        .iter()
        .map(|f| (f.reason.as_str(), f.missing.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        got,
        [
            ("ATTRIBUTE", "ecs.cpu-architecture=x86_64"),
            ("ATTRIBUTE", "ecs.capability.task-eni"),
        ]
    );
}

#[test]
fn strategies_and_constraints_parse_from_the_wire_or_say_what_is_wrong() {
    assert_eq!(
        Strategy::parse("binpack", Some("MEMORY")),
        Ok(Strategy::Binpack(Resource::Memory))
    );
    assert_eq!(
        Strategy::parse("spread", Some("host")),
        Ok(Strategy::Spread(SpreadField::Instance))
    );
    assert_eq!(
        Strategy::parse("spread", Some("attribute:ecs.availability-zone")),
        Ok(Strategy::Spread(SpreadField::Attribute(
            "ecs.availability-zone".into()
        )))
    );
    assert_eq!(Strategy::parse("random", None), Ok(Strategy::Random));
    for (kind, field, says) in [
        ("binpack", Some("disk"), "binpack"),
        ("spread", None, "requires a field"),
        ("spread", Some("zone"), "'zone'"),
        ("pack", None, "'pack'"),
    ] {
        let e = Strategy::parse(kind, field).expect_err(kind).to_string();
        assert!(e.contains(says), "{e}");
    }
    assert!(matches!(
        Constraint::parse("distinctInstance", None),
        Ok(Constraint::DistinctInstance)
    ));
    assert!(matches!(
        Constraint::parse("memberOf", Some("attribute:a exists")),
        Ok(Constraint::MemberOf(_))
    ));
    for (kind, expr, says) in [
        ("memberOf", None, "requires an expression"),
        ("memberOf", Some("bogus == 1"), "unknown subject 'bogus'"),
        (
            "distinctInstance",
            Some("attribute:a exists"),
            "cannot have an expression",
        ),
        ("sameZone", None, "'sameZone'"),
    ] {
        let e = Constraint::parse(kind, expr)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(says), "{kind}: {e}");
    }
}
