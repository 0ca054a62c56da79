//! The runner: one driver per task, created and told what the server wants
//! whenever a desired set arrives; runtime events routed to the driver of
//! the task they concern; containers that belong to no desired task removed.

use crate::spec::{CONTAINER_LABEL, OWNER_LABEL, TASK_LABEL};
use crate::task::{Ctx, Driver, Input};
use berth_wire::agent::DesiredTask;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::mpsc;

struct Runner {
    ctx: Ctx,
    // Unbounded: a driver stopping a container (up to its stopTimeout)
    // must not hold up the runner, and a task sees a handful of inputs.
    drivers: HashMap<String, mpsc::UnboundedSender<Input>>,
    adopted: bool,
}

/// Container name to id, per task ARN, for the containers of this agent
/// that the runtime has.
async fn existing(ctx: &Ctx) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    match ctx.runtime.list(OWNER_LABEL, &ctx.instance).await {
        Ok(list) => {
            for c in list {
                if let (Some(task), Some(name)) =
                    (c.labels.get(TASK_LABEL), c.labels.get(CONTAINER_LABEL))
                {
                    out.entry(task.clone())
                        .or_default()
                        .insert(name.clone(), c.id);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list this agent's containers"),
    }
    out
}

impl Runner {
    async fn converge(&mut self, tasks: Vec<DesiredTask>) {
        let wanted: HashSet<String> = tasks.iter().map(|t| t.task_arn.clone()).collect();
        let mut found = HashMap::new();
        if !self.adopted {
            // First set since the agent started: adopt what runs, clean up
            // the rest.
            self.adopted = true;
            found = existing(&self.ctx).await;
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
            if let Some(tx) = self.drivers.get(&arn) {
                if tx.send(Input::Desired(Box::new(t.clone()))).is_ok() {
                    continue;
                }
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let saved = self.ctx.reporter.get(&arn);
            let containers = found.remove(&arn).unwrap_or_default();
            if saved.is_some() || !containers.is_empty() {
                tracing::info!(task = %arn, containers = containers.len(), "adopting task");
            }
            let driver = Driver::new(self.ctx.clone(), t, saved, containers, rx);
            tokio::spawn(driver.run());
            self.drivers.insert(arn, tx);
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

/// Runs until `desired` closes.
pub async fn run(ctx: Ctx, mut desired: mpsc::UnboundedReceiver<Vec<DesiredTask>>) {
    let mut events = ctx.runtime.events(OWNER_LABEL, &ctx.instance);
    let mut runner = Runner {
        ctx,
        drivers: HashMap::new(),
        adopted: false,
    };
    loop {
        tokio::select! {
            set = desired.recv() => match set {
                Some(mut set) => {
                    // Only the latest set matters.
                    while let Ok(newer) = desired.try_recv() {
                        set = newer;
                    }
                    runner.converge(set).await;
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
