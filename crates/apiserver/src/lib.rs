//! Berth's front door: one HTTP listener for every AWS-style API.
//!
//! `POST /` is dispatched by protocol: AWS JSON 1.1 requests by their
//! `X-Amz-Target` prefix (ECS today; Application Auto Scaling and Logs
//! later), awsQuery requests (form-encoded `Action`) by the SigV4 service of
//! their credential scope (STS and ELBv2), or by the action's name when
//! the request is unsigned. Each request is decoded
//! into the operation's generated input shape, handled against the store,
//! and encoded back; every failure leaves as the protocol's error shape with
//! a request id. `GET /health` answers liveness, `GET /metrics` Prometheus.
//!
//! This crate is the only home of axum (the load balancer's proxy, in
//! berth-lb, is the other hyper server). It holds no state of its own beyond
//! caches that can be rebuilt; everything durable is in the store.

/// Declares a JSON 1.1 service's served operations once: the dispatch
/// table and the list of implemented names (for docs/api-coverage.md's
/// test) come from one place. `$model` lists every operation the service's
/// model defines, so that the others are answered as not implemented yet.
macro_rules! json_operations {
    ($service:literal, $model:expr; $($name:literal => $handler:path),* $(,)?) => {
        /// The operations Berth serves.
        pub const IMPLEMENTED: &[&str] = &[$($name),*];

        /// Decodes the input, runs the handler, encodes the output.
        pub async fn dispatch(st: &AppState, ctx: &RequestContext, op: &str, body: &[u8]) -> Result<Vec<u8>, ApiError> {
            match op {
                $($name => {
                    let input = berth_wire::json::decode(body)?;
                    let output = $handler(st, ctx, input).await?;
                    Ok(berth_wire::json::encode(&output))
                })*
                other if $model.contains(&other) => Err(ApiError::UnknownOperation(format!(
                    concat!("Berth does not implement the ", $service, " operation {} yet; see docs/api-coverage.md."), other
                ))),
                other => Err(ApiError::UnknownOperation(format!("Unknown operation {other}"))),
            }
        }
    };
}

/// The same for a service served over JSON 1.0 and awsQuery alike
/// (CloudWatch, SQS): both decode into the model's JSON types, run the
/// same handler and answer in the protocol they came in. `$bad` turns a
/// form that does not fit the model into the service's own error.
macro_rules! dual_operations {
    ($service:literal, $model:path, $bad:expr; $($name:literal => $handler:path),* $(,)?) => {
        /// The operations Berth serves.
        pub const IMPLEMENTED: &[&str] = &[$($name),*];

        fn unknown(op: &str) -> ApiError {
            if $model.operations.iter().any(|(n, _, _)| *n == op) {
                ApiError::UnknownOperation(format!(
                    concat!("Berth does not implement the ", $service, " operation {} yet; see docs/api-coverage.md."), op
                ))
            } else {
                ApiError::UnknownOperation(format!("Unknown operation {op}"))
            }
        }

        /// A JSON 1.0 request: decoded, handled, answered in JSON.
        pub(crate) async fn dispatch_json(st: &AppState, ctx: &RequestContext, op: &str, body: &[u8]) -> Result<Vec<u8>, ApiError> {
            match op {
                $($name => {
                    let input = berth_wire::json::decode(body)?;
                    let output = $handler(st, ctx, input).await?;
                    Ok(berth_wire::json::encode(&output))
                })*
                other => Err(unknown(other)),
            }
        }

        /// An awsQuery request: the form decoded into the same types,
        /// answered in XML.
        pub(crate) async fn dispatch_query(st: &AppState, ctx: &RequestContext, action: &str, params: &berth_wire::query::QueryParams) -> Result<Vec<u8>, ApiError> {
            match action {
                $($name => {
                    let input = $model.decode(action, params).map_err(|e| ApiError::from($bad(e.to_string())))?;
                    let output = $handler(st, ctx, input).await?;
                    Ok($model.respond(action, &output, &ctx.request_id).into_bytes())
                })*
                other => Err(unknown(other)),
            }
        }
    };
}

/// The same for a service served over awsQuery only (Auto Scaling, EC2):
/// the form decoded into the model's types, answered in XML.
macro_rules! query_operations {
    ($service:literal, $model:path, $bad:expr; $($name:literal => $handler:path),* $(,)?) => {
        /// The operations Berth serves.
        pub const IMPLEMENTED: &[&str] = &[$($name),*];

        pub(crate) async fn dispatch(st: &AppState, ctx: &RequestContext, action: &str, params: &berth_wire::query::QueryParams) -> Result<Vec<u8>, ApiError> {
            match action {
                $($name => {
                    let input = $model.decode(action, params).map_err(|e| ApiError::from($bad(e.to_string())))?;
                    let output = $handler(st, ctx, input).await?;
                    Ok($model.respond(action, &output, &ctx.request_id).into_bytes())
                })*
                other if $model.operations.iter().any(|(n, _, _)| *n == other) => Err(ApiError::UnknownOperation(format!(
                    concat!("Berth does not implement the ", $service, " operation {} yet; see docs/api-coverage.md."), other
                ))),
                other => Err(ApiError::UnknownOperation(format!("The action {other} is not valid for this web service."))),
            }
        }
    };
}

mod asg;
mod auth;
mod authz;
mod autoscaling;
mod billing;
mod cloudwatch;
mod context;
mod cwlogs;
mod ec2;
mod ec2_vpc;
pub(crate) mod ecs;
mod elbv2;
mod error;
mod front;
mod gateway;
mod hub;
mod iam;
mod join;
mod logs;
mod metrics;
mod registry;
mod secretsmanager;
mod serve;
mod sqs;
mod ssm;
mod sts;

use berth_control::{Control, ControlConfig};
use berth_store::Store;
use std::sync::Arc;

/// Auto Scaling operations Berth serves.
pub use asg::IMPLEMENTED as ASG_IMPLEMENTED;
pub use auth::AuthMode;
/// CloudWatch Logs operations Berth serves.
pub use autoscaling::IMPLEMENTED as AUTOSCALING_IMPLEMENTED;
pub use cloudwatch::IMPLEMENTED as CLOUDWATCH_IMPLEMENTED;
pub use context::RequestContext;
pub use cwlogs::IMPLEMENTED as LOGS_IMPLEMENTED;
/// EC2 operations Berth serves.
pub use ec2::IMPLEMENTED as EC2_IMPLEMENTED;
/// ECS operations Berth serves (the rest of the model answers UnknownOperationException).
pub use ecs::IMPLEMENTED as ECS_IMPLEMENTED;
/// ELBv2 operations Berth serves.
pub use elbv2::IMPLEMENTED as ELBV2_IMPLEMENTED;
pub use error::ApiError;
/// IAM operations Berth serves.
pub use iam::IMPLEMENTED as IAM_IMPLEMENTED;
/// Secrets Manager operations Berth serves.
pub use secretsmanager::IMPLEMENTED as SECRETS_MANAGER_IMPLEMENTED;
pub use serve::{serve, serve_tls};
/// SQS operations Berth serves.
pub use sqs::IMPLEMENTED as SQS_IMPLEMENTED;
/// SSM (Parameter Store) operations Berth serves.
pub use ssm::IMPLEMENTED as SSM_IMPLEMENTED;

/// Settings of the API server.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Account every request acts in until IAM maps access keys to accounts.
    pub account_id: String,
    /// Region for requests whose SigV4 scope names none (unsigned requests).
    pub default_region: String,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Ceiling for Fargate containers' stopTimeout, in seconds.
    pub fargate_max_stop_timeout: i32,
    /// An agent silent for this long counts as disconnected.
    pub agent_timeout: std::time::Duration,
    /// How long a task role's credentials last; agents ask for new ones
    /// halfway through, so a task's containers always hold some that last
    /// more than SDKs' fifteen minutes of advance refresh.
    pub task_credentials_lifetime: std::time::Duration,
    /// The period, in seconds, target tracking policies watch ECS's
    /// predefined metrics at: 60 as AWS (20 for the high-resolution
    /// types); Berth's default is 10, as its agents sample.
    pub target_tracking_period: i32,
    /// The subnets and security groups awsvpc tasks may use.
    pub network: berth_domain::network::NetworkConfig,
    /// What metering charges (`berth billing`).
    pub prices: berth_domain::billing::Prices,
    /// The host name load balancers report as their DNSName: where their
    /// listeners' ports are reached.
    pub lb_hostname: String,
    /// Whether requests must be signed by a known access key.
    pub auth: AuthMode,
    /// The key secrets are sealed with in the store.
    pub secrets_key: berth_control::SecretsKey,
    /// The URL other servers reach this one at, for what only the server
    /// holding an agent's connection can answer (its logs); None when this
    /// server has no peers to tell.
    pub advertise_url: Option<String>,
    /// What other servers' certificates are checked against when this one
    /// passes them a request (their advertise URL is https).
    pub peer_tls: Option<Arc<berth_tls::ClientConfig>>,
    /// How the hidden Fargate pool grows through the launcher.
    pub fargate_pool: berth_control::PoolScaling,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            account_id: "000000000000".into(),
            default_region: "us-east-1".into(),
            body_limit: 2 * 1024 * 1024,
            fargate_max_stop_timeout: berth_domain::taskdef::FARGATE_MAX_STOP_TIMEOUT,
            agent_timeout: std::time::Duration::from_secs(5),
            task_credentials_lifetime: std::time::Duration::from_secs(6 * 3600),
            target_tracking_period: 10,
            network: berth_domain::network::NetworkConfig::local_default(),
            prices: berth_domain::billing::Prices::default(),
            lb_hostname: "localhost".into(),
            auth: AuthMode::Iam,
            secrets_key: berth_control::SecretsKey::random(),
            advertise_url: None,
            peer_tls: None,
            fargate_pool: Default::default(),
        }
    }
}

/// Shared state of every handler: the cluster manager's context, which
/// handlers call into, and what the adapters keep of their own (settings,
/// metrics, caches that can be rebuilt).
#[derive(Clone)]
pub struct AppState {
    pub ctl: Control,
    pub config: Arc<ApiConfig>,
    metrics: Arc<metrics::Metrics>,
    locks: Arc<ecs::FamilyLocks>,
    described: Arc<ecs::DescribeCache>,
    /// The one store watch the agent connections share.
    hub: Arc<hub::Hub>,
    /// The agents connected to this server.
    links: Arc<gateway::Links>,
    /// CloudWatch Logs' data, when this server keeps it.
    logs: Option<Arc<berth_logstore::LogStore>>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: ApiConfig) -> Self {
        let ctl = Control::new(
            store,
            ControlConfig {
                network: config.network.clone(),
                account: config.account_id.clone(),
                secrets_key: config.secrets_key.clone(),
                fargate_pool: config.fargate_pool,
            },
        );
        Self::with_control(ctl, config)
    }

    /// Handlers over an existing cluster-manager context (one shared with
    /// the controllers, or on another clock).
    pub fn with_control(ctl: Control, config: ApiConfig) -> Self {
        AppState {
            metrics: Arc::new(metrics::Metrics::new(&ctl.metrics)),
            ctl,
            config: Arc::new(config),
            locks: Arc::new(ecs::FamilyLocks::default()),
            described: Arc::new(ecs::DescribeCache::default()),
            hub: Arc::new(hub::Hub::default()),
            links: Arc::new(gateway::Links::default()),
            logs: None,
        }
    }

    /// The same handlers keeping CloudWatch Logs' data in `logs`.
    pub fn with_logs(mut self, logs: Arc<berth_logstore::LogStore>) -> Self {
        self.logs = Some(logs);
        self
    }
}

/// Handlers pass their state wherever the cluster manager's context is
/// asked for, and read the store through it: the adapter's state is that
/// context plus the adapter's own parts, so it derefs to it.
impl std::ops::Deref for AppState {
    type Target = Control;
    fn deref(&self) -> &Control {
        &self.ctl
    }
}

/// The router with every route of the front door.
pub fn router(state: AppState) -> axum::Router {
    front::router(state)
}
