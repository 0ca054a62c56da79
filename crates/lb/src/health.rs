//! Health checks: one loop per target of a used target group, probing at
//! the group's interval and recording each change of state in the store
//! (the observed half of a target, which only the data path writes).

use crate::table::{Check, Target};
use berth_domain::elb::health::{parse_matcher, success, Probe, Tracker};
use berth_domain::elb::HealthCheck;
use berth_store::keys::ElbKeys;
use berth_store::{typed, Store, Txn};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type Probes = Client<HttpConnector, Empty<Bytes>>;

/// The running check loops, by target.
pub struct Checker {
    store: Arc<dyn Store>,
    client: Probes,
    /// By the target's identity (its Arc's address).
    running: HashMap<usize, (HealthCheck, CancellationToken)>,
}

impl Checker {
    pub fn new(store: Arc<dyn Store>) -> Self {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(HttpConnector::new());
        Checker {
            store,
            client,
            running: HashMap::new(),
        }
    }

    /// Runs a loop for every check and stops the loops of targets that are
    /// gone, or whose settings changed (those start again with their state).
    pub fn sync(&mut self, checks: &[Check]) {
        let wanted: HashMap<usize, &Check> = checks
            .iter()
            .map(|c| (Arc::as_ptr(&c.target) as usize, c))
            .collect();
        self.running.retain(|ptr, (health, token)| {
            let keep = wanted.get(ptr).is_some_and(|c| &c.health == health);
            if !keep {
                token.cancel();
            }
            keep
        });
        for (ptr, check) in wanted {
            if self.running.contains_key(&ptr) {
                continue;
            }
            let token = CancellationToken::new();
            self.running
                .insert(ptr, (check.health.clone(), token.clone()));
            tokio::spawn(run(
                self.store.clone(),
                self.client.clone(),
                check.clone(),
                token,
            ));
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for (_, token) in self.running.values() {
            token.cancel();
        }
    }
}

async fn run(store: Arc<dyn Store>, client: Probes, check: Check, token: CancellationToken) {
    let Check { target, health } = check;
    let matcher = parse_matcher(&health.matcher).unwrap_or_else(|_| vec![(200, 200)]);
    let first = target.tracker.lock().clone();
    if first == Tracker::default() {
        record(&*store, &target, &first).await;
    }
    loop {
        let probe = probe(&client, &target, &health, &matcher).await;
        let changed = {
            let mut t = target.tracker.lock();
            let changed = t.observe(probe, health.healthy_threshold, health.unhealthy_threshold);
            target.serving.store(t.serving(), Ordering::Relaxed);
            changed.then(|| t.clone())
        };
        if let Some(t) = changed {
            tracing::info!(target = %target.addr, state = ?t.state, "target health changed");
            record(&*store, &target, &t).await;
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(health.interval_seconds.max(1) as u64)) => {}
        }
    }
}

async fn probe(
    client: &Probes,
    target: &Target,
    health: &HealthCheck,
    matcher: &[(u16, u16)],
) -> Probe {
    let uri = format!("http://{}{}", target.check_addr, health.path);
    let Ok(req) = hyper::Request::get(uri)
        .header(hyper::header::USER_AGENT, "ELB-HealthChecker/2.0")
        .body(Empty::<Bytes>::new())
    else {
        return Probe::Failed;
    };
    let timeout = Duration::from_secs(health.timeout_seconds.max(1) as u64);
    let answer = tokio::time::timeout(timeout, async {
        let resp = client.request(req).await?;
        let status = resp.status().as_u16();
        // Read the body so the target sees a complete exchange.
        let _ = resp.into_body().collect().await;
        Ok::<u16, hyper_util::client::legacy::Error>(status)
    })
    .await;
    match answer {
        Err(_) => Probe::Timeout,
        Ok(Err(_)) => Probe::Failed,
        Ok(Ok(status)) if success(matcher, status) => Probe::Ok,
        Ok(Ok(status)) => Probe::Code(status),
    }
}

/// Writes what the checks found, unless the target was deregistered
/// meanwhile (its registration is gone).
async fn record(store: &dyn Store, target: &Target, tracker: &Tracker) {
    let scope = &target.scope;
    let registration = scope.target(&target.tg_id, &target.key);
    let key = scope.target_health(&target.tg_id, &target.key);
    // Written only while the registration exists: the compare "absent"
    // fails exactly then, and the failure branch writes.
    let txn = Txn {
        compares: vec![berth_store::Compare::ModRevision {
            key: registration,
            revision: 0,
        }],
        success: vec![],
        failure: vec![typed::put(&key, &tracker.record())],
    };
    if let Err(e) = store.txn(txn).await {
        tracing::warn!(target = %target.addr, error = %e, "cannot record target health");
    }
}
