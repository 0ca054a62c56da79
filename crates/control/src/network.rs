//! The account's VPC network (issue 20): one record in the store, kept in
//! memory from a watch so that placement, launches and the agents' pushes
//! read it without a store round trip, and changed only through
//! [`Networks::change`], which applies one of `berth_domain::vpc`'s rules
//! and commits with compare-and-swap. A change shows on every server as
//! soon as its watch sees it; the agent gateway watches the record too
//! and pushes hosts their tasks' new rules.

use crate::{Control, ControlError};
use berth_domain::asg::Ec2Error;
use berth_domain::elb::LoadBalancer;
use berth_domain::instance::ContainerInstance;
use berth_domain::network::{NetworkConfig, WARM_HOLDER};
use berth_domain::task::Task;
use berth_domain::Scope;
use berth_store::keys::{ElbKeys, Keys};
use berth_store::typed;
use berth_store::{RangeRequest, Store, Txn};
use parking_lot::RwLock;
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// An EC2 failure, or the store's.
#[derive(Debug, thiserror::Error)]
pub enum NetworkFailure {
    #[error(transparent)]
    Ec2(#[from] Ec2Error),
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl From<berth_store::StoreError> for NetworkFailure {
    fn from(e: berth_store::StoreError) -> Self {
        NetworkFailure::Control(e.into())
    }
}

const RETRIES: usize = 16;

/// A new EC2 id: `prefix` and 17 hex digits.
pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..17]
    )
}

/// The network as this server last read it.
pub struct Networks {
    store: Arc<dyn Store>,
    key: String,
    /// The record's mod revision (0 before it is in the store) and value.
    current: RwLock<(i64, Arc<NetworkConfig>)>,
}

impl std::fmt::Debug for Networks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Networks").field("key", &self.key).finish()
    }
}

impl Networks {
    /// Starts from `initial` (the server's bootstrap network) until the
    /// store's record is read.
    pub fn new(store: Arc<dyn Store>, account: &str, initial: NetworkConfig) -> Networks {
        Networks {
            store,
            key: berth_store::keys::ec2::network(account),
            current: RwLock::new((0, Arc::new(initial))),
        }
    }

    /// The network now.
    pub fn current(&self) -> Arc<NetworkConfig> {
        self.current.read().1.clone()
    }

    fn keep(&self, revision: i64, cfg: NetworkConfig) {
        let mut current = self.current.write();
        // A watch event older than a change this server just made must
        // not bring the older network back.
        if revision >= current.0 {
            *current = (revision, Arc::new(cfg));
        }
    }

    /// Reads the store's record into memory.
    pub async fn load(&self) -> Result<(), ControlError> {
        if let Some(v) = typed::get::<NetworkConfig>(&*self.store, &self.key).await? {
            self.keep(v.mod_revision, v.value);
        }
        Ok(())
    }

    /// Reads the store's record unless what is in memory is at least as
    /// new as `revision` (0: read it whatever is in memory).
    pub async fn catch_up(&self, revision: i64) -> Result<(), ControlError> {
        let kept = self.current.read().0;
        if revision == 0 || kept < revision {
            self.load().await?;
        }
        Ok(())
    }

    /// Puts the initial network in the store unless one is there: the
    /// first start of a store decides it, later ones use what the EC2 API
    /// made of it. Says whether this call wrote it.
    pub async fn bootstrap(&self) -> Result<bool, ControlError> {
        let mut cfg = (*self.current()).clone();
        berth_domain::vpc::settle(&mut cfg, &mut new_id).map_err(ControlError::Internal)?;
        if cfg.namespace.is_empty() {
            cfg.namespace = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        }
        cfg.validate().map_err(ControlError::Internal)?;
        let txn = Txn::when(
            vec![typed::unchanged(&self.key, 0)],
            vec![typed::put(&self.key, &cfg)],
        );
        let wrote = self.store.txn(txn).await?.succeeded;
        self.load().await?;
        Ok(wrote)
    }

    /// Applies `f` to the network and commits the result; `f` may run
    /// again when another change commits first. A refusal commits nothing.
    pub async fn change<T>(
        &self,
        mut f: impl FnMut(&mut NetworkConfig) -> Result<T, Ec2Error>,
    ) -> Result<T, NetworkFailure> {
        for _ in 0..RETRIES {
            let (revision, mut cfg) =
                match typed::get::<NetworkConfig>(&*self.store, &self.key).await? {
                    Some(v) => (v.mod_revision, v.value),
                    None => (0, (*self.current()).clone()),
                };
            let out = f(&mut cfg)?;
            cfg.validate()
                .map_err(|e| ControlError::Internal(format!("a network change broke it: {e}")))?;
            let txn = Txn::when(
                vec![typed::unchanged(&self.key, revision)],
                vec![typed::put(&self.key, &cfg)],
            );
            let done = self.store.txn(txn).await?;
            if done.succeeded {
                self.keep(done.revision, cfg);
                return Ok(out);
            }
        }
        Err(Ec2Error::new(
            "IncorrectState",
            "Another change to the network is in progress; try again.",
        )
        .into())
    }

    /// Keeps the network in memory true to the store until `stop`.
    pub async fn follow(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let from = match self.store.current_revision().await {
                Ok(r) => r + 1,
                Err(e) => {
                    tracing::warn!(error = %e, "network: cannot read the store; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            let mut events = self.store.watch(&self.key, from);
            // Whatever changed before the watch began.
            if let Err(e) = self.load().await {
                tracing::warn!(error = %e, "network: cannot read it");
            }
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    b = berth_store::next_batch(&mut events) => b,
                };
                let Some((batch, broken)) = next else { break };
                for ev in batch {
                    if ev.kv.key != self.key {
                        continue;
                    }
                    match typed::decode::<NetworkConfig>(&ev.kv) {
                        Ok(v) => self.keep(v.mod_revision, v.value),
                        Err(e) => tracing::warn!(error = %e, "network: unreadable record"),
                    }
                }
                if broken {
                    break;
                }
            }
        }
    }
}

/// The addresses of each security group's members: every awsvpc task that
/// holds an address (the `subnet-ips/` keys name them), in any cluster;
/// and for a load balancer's groups, the address its traffic to targets
/// leaves from: the host's own on each subnet of its VPC (the first
/// address, on the subnet's bridge), as the load balancer runs in the
/// server on the host.
pub async fn members(
    ctl: &Control,
    scope: &Scope,
) -> Result<HashMap<String, Vec<Ipv4Addr>>, ControlError> {
    members_of(ctl, scope, &interfaces(ctl, scope).await?).await
}

/// [`members`] from the address holders [`interfaces`] read, for a caller
/// that needs them for more than this.
pub async fn members_of(
    ctl: &Control,
    scope: &Scope,
    held: &[(String, Task)],
) -> Result<HashMap<String, Vec<Ipv4Addr>>, ControlError> {
    let mut out: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
    for (_, t) in held {
        let Some(n) = &t.network else { continue };
        let Ok(ip) = n.ip.parse() else { continue };
        for g in &n.security_groups {
            out.entry(g.clone()).or_default().push(ip);
        }
    }
    let network = ctl.networks.current();
    let lbs = typed::list::<LoadBalancer>(&*ctl.store, &scope.load_balancers()).await?;
    for (_, lb) in lbs {
        let lb = lb.value;
        let Some(vpc) = lb
            .subnets
            .first()
            .and_then(|s| network.subnet(&s.id))
            .map(|s| s.vpc_id.clone())
        else {
            continue;
        };
        let gateways: Vec<Ipv4Addr> = network
            .subnets
            .iter()
            .filter(|s| s.vpc_id == vpc)
            .filter_map(|s| berth_domain::network::Cidr::parse(&s.cidr))
            .map(|c| c.gateway())
            .collect();
        for g in &lb.security_groups {
            out.entry(g.clone()).or_default().extend(&gateways);
        }
    }
    Ok(out)
}

/// The tasks that hold an address under `prefix` (warm addresses are
/// held for no task yet), with the address.
async fn holders(
    ctl: &Control,
    scope: &Scope,
    prefix: &str,
) -> Result<Vec<(String, Task)>, ControlError> {
    let _ = scope;
    let held = ctl.store.range(RangeRequest::prefix(prefix)).await?;
    let mut out = vec![];
    for kv in held.kvs {
        let Ok(task_key) = String::from_utf8(kv.value) else {
            continue;
        };
        if task_key.starts_with(WARM_HOLDER) {
            continue;
        }
        if let Some(t) = typed::get::<Task>(&*ctl.store, &task_key).await? {
            let ip = kv.key.rsplit('/').next().unwrap_or_default().to_string();
            out.push((ip, t.value));
        }
    }
    Ok(out)
}

/// Whether a task holds an address of the subnet.
pub async fn subnet_in_use(
    ctl: &Control,
    scope: &Scope,
    subnet: &str,
) -> Result<bool, ControlError> {
    Ok(!holders(ctl, scope, &scope.subnet_ips_of(subnet))
        .await?
        .is_empty())
}

/// Whether a task or a load balancer is in the group.
pub async fn group_in_use(ctl: &Control, scope: &Scope, group: &str) -> Result<bool, ControlError> {
    if members(ctl, scope).await?.contains_key(group) {
        return Ok(true);
    }
    let lbs = typed::list::<LoadBalancer>(&*ctl.store, &scope.load_balancers()).await?;
    Ok(lbs
        .iter()
        .any(|(_, lb)| lb.value.security_groups.iter().any(|g| g == group)))
}

/// The network interfaces of awsvpc tasks: (address, task) for every
/// address a task holds.
pub async fn interfaces(ctl: &Control, scope: &Scope) -> Result<Vec<(String, Task)>, ControlError> {
    holders(ctl, scope, &scope.subnet_ips()).await
}

/// The zones Berth has: those of the local default network, of its
/// subnets, and of every registered host.
pub async fn zones(ctl: &Control, scope: &Scope) -> Result<Vec<String>, ControlError> {
    let mut out: BTreeSet<String> = ["local-1a", "local-1b", "local-1c"]
        .iter()
        .map(|z| z.to_string())
        .collect();
    out.extend(
        ctl.networks
            .current()
            .subnets
            .iter()
            .map(|s| s.availability_zone.clone()),
    );
    let hosts = typed::list::<ContainerInstance>(&*ctl.store, &scope.instances_all()).await?;
    for (_, h) in hosts {
        let zone = h
            .value
            .attributes
            .iter()
            .find(|a| a.name.as_deref() == Some("ecs.availability-zone"))
            .and_then(|a| a.value.clone());
        out.extend(zone);
    }
    Ok(out.into_iter().collect())
}

/// A host's VPC tunnel, as it registered it: its VPC address and MAC.
fn tunnel_of(host: &ContainerInstance) -> Option<(String, String)> {
    let get = |name: &str| {
        host.attributes
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
            .and_then(|a| a.value.clone())
    };
    Some((
        get(berth_wire::agent::VPC_ADDRESS_ATTRIBUTE)?,
        get(berth_wire::agent::VPC_MAC_ATTRIBUTE)?,
    ))
}

/// The VPC address of host `instance` of `cluster`'s tunnel; None when it
/// has none.
pub async fn tunnel_address(
    ctl: &Control,
    scope: &Scope,
    cluster: &str,
    instance: &str,
) -> Result<Option<String>, ControlError> {
    let own =
        typed::get::<ContainerInstance>(&*ctl.store, &scope.instance(cluster, instance)).await?;
    Ok(own
        .and_then(|o| tunnel_of(&o.value))
        .map(|(address, _)| address))
}

/// The routes the host whose tunnel is at `own_address` needs to the
/// awsvpc tasks on other hosts (docs/adr/0007), from the address holders
/// [`interfaces`] read. Hosts at its own VPC address are the same machine
/// (agents sharing an engine), whose tasks share its bridges and need no
/// route.
pub async fn routes_from(
    ctl: &Control,
    scope: &Scope,
    own_address: &str,
    held: &[(String, Task)],
) -> Result<Vec<berth_wire::agent::VpcRoute>, ControlError> {
    let mut hosts: HashMap<(String, String), Option<(String, String)>> = HashMap::new();
    let mut out = vec![];
    for (ip, t) in held {
        let host_cluster = if t.launch_type == "FARGATE" {
            berth_domain::instance::FARGATE_POOL.to_string()
        } else {
            t.cluster.clone()
        };
        let key = (host_cluster, t.container_instance.clone());
        if !hosts.contains_key(&key) {
            let host =
                typed::get::<ContainerInstance>(&*ctl.store, &scope.instance(&key.0, &key.1))
                    .await?;
            hosts.insert(key.clone(), host.and_then(|h| tunnel_of(&h.value)));
        }
        let Some(Some((address, mac))) = hosts.get(&key) else {
            continue;
        };
        if address == own_address {
            continue;
        }
        out.push(berth_wire::agent::VpcRoute {
            ip: ip.clone(),
            host: address.clone(),
            mac: mac.clone(),
        });
    }
    out.sort();
    Ok(out)
}
