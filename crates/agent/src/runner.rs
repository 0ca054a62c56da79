//! The runner: one driver per task, created and told what the server wants
//! whenever a desired set arrives; runtime events routed to the driver of
//! the task they concern; containers that belong to no desired task removed.

use crate::spec::{CONTAINER_LABEL, OWNER_LABEL, PAUSE_NAME, TASK_LABEL, WARM_LABEL};
use crate::task::{Ctx, Driver, Input, WarmPause};
use berth_wire::agent::{DesiredNetwork, DesiredTask};
use futures::future::FutureExt;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// What the server wants of this host: its tasks, and the addresses to
/// keep namespaces ready at.
pub struct Desired {
    pub tasks: Vec<DesiredTask>,
    pub warm: Vec<DesiredNetwork>,
    /// Routes to other hosts' awsvpc tasks; None: as they are.
    pub routes: Option<Vec<berth_wire::agent::VpcRoute>>,
}

struct Runner {
    ctx: Ctx,
    // Unbounded: a driver stopping a container (up to its stopTimeout)
    // must not hold up the runner, and a task sees a handful of inputs.
    drivers: HashMap<String, mpsc::UnboundedSender<Input>>,
    adopted: bool,
    /// Pause containers at warm addresses no task has taken yet, by
    /// address: made (or being made) in the background.
    warm: HashMap<String, Warm>,
    /// The routes last set on the host, once set.
    routed: Option<Vec<berth_wire::agent::VpcRoute>>,
}

/// Container name to id, per task ARN, for the containers of this agent
/// that the runtime has; and the warm pause containers, by address.
async fn existing(
    ctx: &Ctx,
) -> (
    HashMap<String, HashMap<String, String>>,
    HashMap<String, String>,
) {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut warm = HashMap::new();
    match ctx.runtime.list(OWNER_LABEL, &ctx.instance).await {
        Ok(list) => {
            for c in list {
                if let (Some(task), Some(name)) =
                    (c.labels.get(TASK_LABEL), c.labels.get(CONTAINER_LABEL))
                {
                    out.entry(task.clone())
                        .or_default()
                        .insert(name.clone(), c.id);
                } else if let Some(ip) = c.labels.get(WARM_LABEL) {
                    warm.insert(ip.clone(), c.id);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list this agent's containers"),
    }
    (out, warm)
}

/// Whether this host's warm namespaces are sandboxes: a Fargate host
/// that gives tasks a kernel of their own.
fn sandboxed(ctx: &Ctx) -> bool {
    matches!(ctx.isolation, crate::Isolation::Gvisor { .. })
        && ctx.cluster == berth_domain::instance::FARGATE_POOL
}

/// Removes a warm pause container, and the cgroup a warm sandbox was
/// booted in.
pub(crate) async fn remove_warm(rt: &dyn berth_runtime::ContainerRuntime, id: &str) {
    let cgroup = match rt.inspect(id).await {
        Ok(Some(info)) => info.labels.get(crate::spec::WARM_CGROUP_LABEL).cloned(),
        _ => None,
    };
    let _ = rt.stop(id, Duration::ZERO).await;
    let _ = rt.remove(id).await;
    if let Some(name) = cgroup {
        let _ = rt.remove_task_cgroup(&name).await;
    }
}

/// The longest a warm namespace waits for starting tasks before it is
/// made anyway.
const WARM_DEFERRAL: Duration = Duration::from_secs(2);

/// Makes a warm pause container at `net`'s address, filter shut; its id.
/// On a sandboxed host it boots the sandbox the next task there joins, in
/// a cgroup of its own that gets that task's limits.
///
/// It first lets the host's starting tasks run (up to [`WARM_DEFERRAL`]),
/// unless a task at its address is already waiting for it (`hurry`).
async fn make_warm(ctx: Ctx, net: DesiredNetwork, hurry: Arc<Notify>) -> Option<String> {
    tokio::select! {
        _ = ctx.starts.quiet(WARM_DEFERRAL) => {}
        _ = hurry.notified() => {}
    }
    let rt = &ctx.runtime;
    let s = if sandboxed(&ctx) {
        let name = format!("warm-{:016x}", rand::random::<u64>());
        let parent = rt
            .task_cgroup(&name, berth_runtime::TaskLimits::default())
            .await
            .ok()
            .flatten();
        crate::spec::warm_sandbox_spec(
            &net,
            &ctx.instance,
            &ctx.cluster,
            parent.as_deref().map(|p| (p, name.as_str())),
        )
    } else {
        crate::spec::warm_pause_spec(&net, &ctx.instance, &ctx.cluster)
    };
    let id = match crate::task::create_pause(&**rt, Some(&net), &s).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(address = %net.ip, error = %e, "warm namespace not made; tasks there make their own");
            return None;
        }
    };
    let ready = async {
        rt.start(&id).await?;
        // Nothing in or out until a task takes it.
        let closed = berth_runtime::firewall::Filter {
            ingress: vec![],
            egress: Some(vec![]),
        };
        rt.apply_filter(&id, &closed).await
    };
    match ready.await {
        Ok(()) => Some(id),
        Err(e) => {
            // A started container holds the address: a task there makes
            // its own namespace, which needs the address free.
            tracing::warn!(address = %net.ip, error = %e, "warm namespace not made; tasks there make their own");
            remove_warm(&**rt, &id).await;
            None
        }
    }
}

impl Runner {
    /// Brings the host's routes to other hosts' tasks to `routes`, when
    /// they changed; a failure leaves them to the next push.
    async fn route_vpc(&mut self, mut routes: Vec<berth_wire::agent::VpcRoute>) {
        routes.sort();
        if self.routed.as_ref() == Some(&routes) {
            return;
        }
        let parsed: Vec<berth_runtime::overlay::Route> = routes
            .iter()
            .filter_map(|r| {
                Some(berth_runtime::overlay::Route {
                    ip: r.ip.parse().ok()?,
                    host: r.host.parse().ok()?,
                    mac: r.mac.clone(),
                })
            })
            .collect();
        match self.ctx.runtime.vpc_routes(&parsed).await {
            Ok(()) => {
                tracing::debug!(routes = parsed.len(), "VPC routes set");
                self.routed = Some(routes);
            }
            Err(e) => tracing::warn!(error = %e, "VPC routes not set; the next push tries again"),
        }
    }

    async fn converge(&mut self, desired: Desired) {
        let Desired { tasks, warm, .. } = desired;
        let wanted: HashSet<String> = tasks.iter().map(|t| t.task_arn.clone()).collect();
        let mut found = HashMap::new();
        if !self.adopted {
            // First set since the agent started: adopt what runs, clean up
            // the rest.
            self.adopted = true;
            let (tasks_found, warm_found) = existing(&self.ctx).await;
            found = tasks_found;
            self.warm = warm_found
                .into_iter()
                .map(|(ip, id)| (ip, Warm::ready(id)))
                .collect();
            for (arn, containers) in &found {
                if wanted.contains(arn) {
                    continue;
                }
                tracing::info!(task = %arn, "removing containers of a task the server no longer wants");
                for id in containers.values() {
                    let _ = self.ctx.runtime.stop(id, Duration::from_secs(10)).await;
                    let _ = self.ctx.runtime.remove(id).await;
                }
                let _ = self
                    .ctx
                    .runtime
                    .remove_task_cgroup(crate::spec::task_id(arn))
                    .await;
            }
            for r in self.ctx.reporter.all() {
                if !wanted.contains(&r.task_arn) {
                    self.ctx.reporter.forget(&r.task_arn);
                }
            }
        }
        for t in tasks {
            let arn = t.task_arn.clone();
            // A task at a warm address takes the namespace made for it.
            let taken = t
                .network
                .as_ref()
                .and_then(|n| self.warm.remove(&n.ip))
                .map(Warm::take);
            if let Some(tx) = self.drivers.get(&arn) {
                if tx.send(Input::Desired(Box::new(t.clone()))).is_ok() {
                    continue;
                }
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let saved = self.ctx.reporter.get(&arn);
            let mut containers = found.remove(&arn).unwrap_or_default();
            if saved.is_some() || !containers.is_empty() {
                tracing::info!(task = %arn, containers = containers.len(), "adopting task");
            }
            let warm_pause = match (containers.contains_key(PAUSE_NAME), taken) {
                (false, Some(w)) => match w.clone().now_or_never() {
                    // Made already: the driver adopts it as its own.
                    Some(Some(id)) => {
                        containers.insert(PAUSE_NAME.to_string(), id);
                        None
                    }
                    Some(None) => None,
                    None => Some(w),
                },
                _ => None,
            };
            let driver = Driver::new(self.ctx.clone(), t, saved, containers, warm_pause, rx);
            tokio::spawn(driver.run());
            self.drivers.insert(arn, tx);
        }
        // Warm addresses the server no longer holds for this host go;
        // new ones get their namespace, in the background.
        let keep: HashSet<&str> = warm.iter().map(|n| n.ip.as_str()).collect();
        let stale: Vec<String> = self
            .warm
            .keys()
            .filter(|ip| !keep.contains(ip.as_str()))
            .cloned()
            .collect();
        for ip in stale {
            if let Some(w) = self.warm.remove(&ip) {
                let rt = self.ctx.runtime.clone();
                tokio::spawn(async move {
                    // Not hurried: no task waits for it.
                    if let Some(id) = w.made.await {
                        remove_warm(&*rt, &id).await;
                    }
                });
            }
        }
        for net in warm {
            if !self.warm.contains_key(&net.ip) {
                let ip = net.ip.clone();
                let hurry = Arc::new(Notify::new());
                let made = make_warm(self.ctx.clone(), net, hurry.clone())
                    .boxed()
                    .shared();
                // Started now, not when first awaited.
                tokio::spawn(made.clone());
                self.warm.insert(ip, Warm { made, hurry });
            }
        }
        self.drivers.retain(|arn, tx| {
            if wanted.contains(arn) {
                return true;
            }
            let _ = tx.send(Input::Forget);
            false
        });
    }

    fn route(&self, e: berth_runtime::Event) {
        if let Some(tx) = e
            .labels
            .get(TASK_LABEL)
            .and_then(|arn| self.drivers.get(arn))
        {
            let _ = tx.send(Input::Event(e));
        }
    }

    fn resync(&self) {
        for tx in self.drivers.values() {
            let _ = tx.send(Input::Resync);
        }
    }
}

/// A warm address's namespace, and how to tell its making that a task
/// waits for it now.
struct Warm {
    made: WarmPause,
    hurry: Arc<Notify>,
}

impl Warm {
    fn ready(id: String) -> Warm {
        Warm {
            made: futures::future::ready(Some(id)).boxed().shared(),
            hurry: Arc::default(),
        }
    }

    /// Its namespace for the task at its address, which has no reason
    /// left to wait for other tasks' starts.
    fn take(self) -> WarmPause {
        self.hurry.notify_one();
        self.made
    }
}

/// Runs until `desired` closes.
pub async fn run(ctx: Ctx, mut desired: mpsc::UnboundedReceiver<Desired>) {
    let mut events = ctx.runtime.events(OWNER_LABEL, &ctx.instance);
    let mut runner = Runner {
        ctx,
        drivers: HashMap::new(),
        adopted: false,
        warm: HashMap::new(),
        routed: None,
    };
    loop {
        tokio::select! {
            set = desired.recv() => match set {
                Some(mut set) => {
                    // Only the latest set matters.
                    while let Ok(newer) = desired.try_recv() {
                        set = newer;
                    }
                    let routes = set.routes.clone();
                    runner.converge(set).await;
                    if let Some(r) = routes {
                        runner.route_vpc(r).await;
                    }
                }
                None => return,
            },
            e = events.next() => match e {
                Some(Ok(e)) => runner.route(e),
                other => {
                    if let Some(Err(e)) = other {
                        tracing::warn!(error = %e, "runtime events ended; subscribing again");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    events = runner.ctx.runtime.events(OWNER_LABEL, &runner.ctx.instance);
                    runner.resync();
                }
            },
        }
    }
}
