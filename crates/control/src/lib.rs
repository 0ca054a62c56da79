//! Berth's cluster manager: the layer every protocol adapter (ECS, ELBv2,
//! and the APIs that follow) calls instead of holding logic of its own.
//!
//! It prepares launches (task-definition resolution, launch type and
//! capacity-provider choice, the scheduler's request built once), places
//! tasks and commits the plan with compare-and-swap, allocates awsvpc
//! addresses, remembers RunTask's idempotency tokens, asks tasks to stop,
//! ties services to their target groups, and runs every controller.
//!
//! It must not depend on axum, hyper or any protocol adapter: adapters
//! decode, call this crate, and encode; [`ControlError`] is mapped to each
//! protocol's errors by the adapter, in one place. Time comes from the
//! [`Clock`] in the [`Control`] context so that component tests can run on
//! paused time.

pub mod alarms;
pub mod capacity_providers;
pub mod cas;
pub mod clock;
pub mod cloudwatch;
pub mod clusters;
pub mod controller;
pub mod elb;
mod error;
pub mod groups;
pub mod iam;
pub mod identity;
pub mod join;
pub mod launch;
pub mod launcher;
pub mod leader;
pub mod live;
pub mod managed_scaling;
pub mod metrics;
pub mod network;
pub mod placement;
pub mod runtime;
pub mod scaling;
pub mod secrets;
pub mod service_lb;
pub mod services;
pub mod sqs;
pub mod ssm;
pub mod task_role;
pub mod task_secrets;
pub mod taskdefs;
pub mod tasks;

use berth_domain::network::NetworkConfig;
use berth_store::Store;
use std::sync::Arc;

pub use clock::{Clock, SystemClock, TokioClock};
pub use error::ControlError;
pub use metrics::ControlMetrics;

/// What the cluster manager needs to know of its deployment.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The network a new store starts with (the EC2 API changes it).
    pub network: NetworkConfig,
    /// The account every resource belongs to.
    pub account: String,
    /// The key secrets are sealed with at rest.
    pub secrets_key: SecretsKey,
    /// How the hidden Fargate pool grows through the launcher.
    pub fargate_pool: PoolScaling,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            network: NetworkConfig::local_default(),
            account: "000000000000".into(),
            secrets_key: SecretsKey::random(),
            fargate_pool: PoolScaling::default(),
        }
    }
}

/// The Fargate pool's own scaling: hosts launched through the server's
/// launcher when FARGATE tasks cannot be placed (they wait in
/// PROVISIONING meanwhile), retired when idle. Off while `max` is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PoolScaling {
    /// At most this many launched hosts.
    pub max: usize,
    /// An empty launched host goes after this long.
    pub idle: std::time::Duration,
}

impl PoolScaling {
    pub fn on(&self) -> bool {
        self.max > 0
    }
}

/// The key that seals secrets in the store: kept outside it (a file in the
/// data dir, or given by flag), never logged.
#[derive(Clone)]
pub struct SecretsKey(pub [u8; berth_iam::seal::KEY_LEN]);

impl SecretsKey {
    pub fn random() -> SecretsKey {
        SecretsKey(rand::random())
    }
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

/// The cluster manager's context: the store it reads and commits to, its
/// configuration, its clock and its metrics. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    pub store: Arc<dyn Store>,
    pub config: Arc<ControlConfig>,
    pub clock: Arc<dyn Clock>,
    pub metrics: ControlMetrics,
    /// Every cluster's placement state, kept from the store's watch.
    pub live: Arc<live::Live>,
    /// The account's access keys, as requests are checked against them.
    pub identity: Arc<identity::Identity>,
    /// The account's VPCs, subnets and security groups, kept from the store.
    pub networks: Arc<network::Networks>,
    /// The lease RunTask clientTokens are kept under now, and when it was
    /// granted ([`tasks::token_lease`]).
    token_lease: Arc<parking_lot::Mutex<Option<(berth_store::LeaseId, tokio::time::Instant)>>>,
    /// CloudWatch's datapoints (what the agents sample, what users
    /// publish), when this server keeps them.
    pub metric_store: Option<Arc<berth_metricstore::MetricStore>>,
}

impl Control {
    pub fn new(store: Arc<dyn Store>, config: ControlConfig) -> Self {
        let sealer = berth_iam::seal::Sealer::new(&config.secrets_key.0)
            .expect("a secrets key has the sealer's length");
        Control {
            identity: Arc::new(identity::Identity::new(
                store.clone(),
                &config.account,
                sealer,
            )),
            networks: Arc::new(network::Networks::new(
                store.clone(),
                &config.account,
                config.network.clone(),
            )),
            store,
            config: Arc::new(config),
            clock: Arc::new(SystemClock),
            metrics: ControlMetrics::default(),
            live: Arc::new(live::Live::default()),
            token_lease: Arc::default(),
            metric_store: None,
        }
    }

    /// The same context with placement on a thread of its own
    /// ([`live::Live::on_own_thread`]), as a server runs it.
    /// The same context keeping CloudWatch's datapoints in `metrics`.
    pub fn with_metric_store(mut self, metrics: Arc<berth_metricstore::MetricStore>) -> Self {
        self.metric_store = Some(metrics);
        self
    }

    pub fn with_placement_thread(mut self) -> std::io::Result<Self> {
        self.live = Arc::new(live::Live::on_own_thread()?);
        Ok(self)
    }

    /// The same context on another clock (paused time in tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Seconds since the epoch, as records and ECS timestamps carry them.
    pub fn now(&self) -> f64 {
        self.clock.now()
    }
}
