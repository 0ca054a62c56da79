//! Berth's load balancer data path: the listeners, routing and health
//! checks behind the ELBv2 API.
//!
//! It watches the store, and whenever a scope's `elbv2/` records (or its
//! container instances, which instance targets resolve through) change, it
//! rebuilds that scope's routing table and swaps it in. Listener ports are
//! bound as listeners appear and closed as they go; connections already
//! open keep being served through the new table, so a change never drops
//! them. Health checks write what they find back to the store; drained
//! registrations are deleted once their deregistration delay has passed.
//!
//! This crate is the only home of the proxy's hyper server and client.

mod h1;
mod health;
mod proxy;
mod table;

use berth_domain::elb::RequestCount;
use berth_domain::Scope;
use berth_store::keys::{ElbKeys, Keys};
use berth_store::{typed, Compare, Op, RangeRequest, Store, Txn};
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use table::{Port, Table, Targets};

use tokio_util::sync::CancellationToken;

/// Settings of the data path.
#[derive(Debug, Clone)]
pub struct LbConfig {
    /// The address listener ports are bound on.
    pub bind: IpAddr,
    /// How often request counts are written while they change.
    pub counts_every: Duration,
    /// Threads serving connections.
    pub threads: usize,
}

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig {
            bind: IpAddr::from([0, 0, 0, 0]),
            counts_every: Duration::from_secs(10),
            threads: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        }
    }
}

/// What request handlers share: the current ports.
struct Shared {
    ports: RwLock<HashMap<u16, Arc<Port>>>,
}

/// Runs the data path until `shutdown`.
pub async fn run(store: Arc<dyn Store>, config: LbConfig, shutdown: CancellationToken) {
    let shared = Arc::new(Shared {
        ports: RwLock::new(HashMap::new()),
    });
    let workers = match Workers::start(shared.clone(), config.threads) {
        Ok(w) => Arc::new(w),
        Err(e) => {
            tracing::error!(error = %e, "load balancer cannot start its threads");
            return;
        }
    };
    let mut lb = DataPath {
        store: store.clone(),
        config: config.clone(),
        shared,
        workers,
        targets: Targets::default(),
        tables: HashMap::new(),
        checker: health::Checker::new(store.clone()),
        listeners: HashMap::new(),
        shutdown: shutdown.clone(),
    };
    let mut counts = tokio::time::interval(config.counts_every);
    counts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let from = match store.current_revision().await {
            Ok(r) => r + 1,
            Err(e) => {
                tracing::warn!(error = %e, "load balancer cannot read the store");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Watch first, then read, so nothing written in between is missed.
        let mut events = store.watch("/berth/v1/", from);
        let mut dirty: HashSet<Scope> = match discover(&*store).await {
            Ok(s) => s.into_iter().chain(lb.tables.keys().cloned()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "load balancer cannot list its scopes");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            if !dirty.is_empty() {
                lb.reload(std::mem::take(&mut dirty)).await;
            }
            let wake = lb.next_wake();
            tokio::select! {
                _ = shutdown.cancelled() => {
                    lb.stop();
                    return;
                }
                _ = tokio::time::sleep(wake) => {
                    dirty.extend(lb.tables.iter().filter(|(_, t)| t.next_drain_end.is_some()).map(|(s, _)| s.clone()));
                }
                _ = counts.tick() => lb.record_counts().await,
                e = events.next() => match e {
                    Some(Ok(ev)) => {
                        dirty.extend(lb.affected(&ev.kv.key));
                        // Take whatever else is already there, so a burst of
                        // writes is one rebuild.
                        while let Some(Some(Ok(ev))) = futures::FutureExt::now_or_never(events.next()) {
                            dirty.extend(lb.affected(&ev.kv.key));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "load balancer watch restarts");
                        break;
                    }
                    None => break,
                },
            }
        }
    }
}

struct DataPath {
    store: Arc<dyn Store>,
    config: LbConfig,
    shared: Arc<Shared>,
    workers: Arc<Workers>,
    targets: Targets,
    tables: HashMap<Scope, Table>,
    checker: health::Checker,
    listeners: HashMap<u16, CancellationToken>,
    shutdown: CancellationToken,
}

/// The account and region of a key, and its service and kind.
fn parts(key: &str) -> Option<(Scope, &str, &str)> {
    let rest = key.strip_prefix("/berth/v1/")?;
    let mut p = rest.splitn(5, '/');
    let (account, region, service, kind) = (p.next()?, p.next()?, p.next()?, p.next()?);
    Some((Scope::new(account, region), service, kind))
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl DataPath {
    /// The scope a change matters to, if any.
    fn affected(&self, key: &str) -> Option<Scope> {
        let (scope, service, kind) = parts(key)?;
        match (service, kind) {
            // Written by the health checks themselves; routing reads the
            // targets' own state.
            ("elbv2", "target-health" | "target-requests") => None,
            ("elbv2", _) => Some(scope),
            ("ecs", "container-instances") if self.tables.contains_key(&scope) => Some(scope),
            _ => None,
        }
    }

    async fn reload(&mut self, scopes: HashSet<Scope>) {
        for scope in scopes {
            match self.load(&scope).await {
                Ok(t)
                    if t.ports.is_empty() && t.next_drain_end.is_none() && t.drained.is_empty() =>
                {
                    self.tables.remove(&scope);
                }
                Ok(t) => {
                    self.tables.insert(scope, t);
                }
                Err(e) => tracing::warn!(error = %e, "load balancer cannot read its configuration"),
            }
        }
        self.apply().await;
    }

    async fn load(&self, scope: &Scope) -> Result<Table, berth_store::StoreError> {
        let records = self
            .store
            .range(RangeRequest::prefix(format!("{}/", scope.elb_base())))
            .await?
            .kvs;
        let instances: Vec<berth_domain::instance::ContainerInstance> =
            berth_store::typed::list(&*self.store, &scope.instances_all())
                .await?
                .into_iter()
                .map(|(_, i)| i.value)
                .collect();
        Ok(table::build(
            scope,
            &records,
            &instances,
            &self.targets,
            now(),
        ))
    }

    /// Swaps the tables in: ports, listeners, health checks, drained targets.
    async fn apply(&mut self) {
        let mut ports: HashMap<u16, Arc<Port>> = HashMap::new();
        let mut checks = vec![];
        let mut used = HashSet::new();
        for table in self.tables.values() {
            for (port, p) in &table.ports {
                if ports.insert(*port, p.clone()).is_some() {
                    tracing::warn!(
                        port,
                        "two accounts or regions have a listener on one port; one wins"
                    );
                }
                for g in p.groups.values() {
                    used.extend(g.targets.iter().map(|t| Arc::as_ptr(t) as usize));
                }
            }
            checks.extend(table.checks.iter().cloned());
        }
        let wanted: HashSet<u16> = ports.keys().copied().collect();
        *self.shared.ports.write() = ports;
        self.listeners.retain(|port, token| {
            let keep = wanted.contains(port);
            if !keep {
                token.cancel();
            }
            keep
        });
        for port in wanted {
            if !self.listeners.contains_key(&port) {
                let token = self.shutdown.child_token();
                self.listeners.insert(port, token.clone());
                tokio::spawn(listen(
                    self.workers.clone(),
                    SocketAddr::new(self.config.bind, port),
                    token,
                ));
            }
        }
        self.checker.sync(&checks);
        self.targets.retain(&used);
        let drained: Vec<(String, i64, [String; 2])> = self
            .tables
            .values_mut()
            .flat_map(|t| std::mem::take(&mut t.drained))
            .collect();
        for (key, rev, [health, requests]) in drained {
            let txn = Txn::when(
                vec![Compare::ModRevision {
                    key: key.clone(),
                    revision: rev,
                }],
                vec![Op::delete(key), Op::delete(health), Op::delete(requests)],
            );
            if let Err(e) = self.store.txn(txn).await {
                tracing::warn!(error = %e, "cannot remove a drained target");
            }
        }
    }

    /// When to look again without a change: when the next drain ends.
    fn next_wake(&self) -> Duration {
        let now = now();
        self.tables
            .values()
            .filter_map(|t| t.next_drain_end)
            .map(|end| Duration::from_secs_f64((end - now).max(0.0) + 0.05))
            .min()
            .unwrap_or(Duration::from_secs(3600))
    }

    /// Writes the request counts that changed since they were last written.
    /// Adds what each target got since the last write to its record, by
    /// compare-and-swap (other data paths add theirs to the same record),
    /// only while the registration exists.
    async fn record_counts(&self) {
        let at = now();
        for t in self.targets.all() {
            let counted = t.counted(at);
            let pending = counted.since(&t.recorded.lock());
            if pending.requests == 0 && pending.answered == 0 {
                continue;
            }
            match self.add_counts(&t, &pending).await {
                Ok(true) => *t.recorded.lock() = counted,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot record request counts"),
            }
        }
    }

    /// Whether `pending` was added (false: the registration is gone, or
    /// another writer won; the counts wait for the next round).
    async fn add_counts(
        &self,
        t: &table::Target,
        pending: &RequestCount,
    ) -> Result<bool, berth_store::StoreError> {
        let reg_key = t.scope.target(&t.tg_id, &t.key);
        let Some(reg) = self.store.get(&reg_key).await? else {
            return Ok(false);
        };
        let key = t.scope.target_requests(&t.tg_id, &t.key);
        let current = typed::get::<RequestCount>(&*self.store, &key).await?;
        let (sum, revision) = match current {
            Some(c) => (c.value.add(pending), c.mod_revision),
            None => (RequestCount::default().add(pending), 0),
        };
        let txn = Txn::when(
            vec![
                typed::unchanged(&reg_key, reg.mod_revision),
                typed::unchanged(&key, revision),
            ],
            vec![typed::put(&key, &sum)],
        );
        Ok(self.store.txn(txn).await?.succeeded)
    }

    fn stop(&mut self) {
        for token in self.listeners.values() {
            token.cancel();
        }
    }
}

/// Every scope that has load balancer records: one short read per scope.
async fn discover(store: &dyn Store) -> Result<Vec<Scope>, berth_store::StoreError> {
    let mut out = vec![];
    let mut after: Option<String> = None;
    loop {
        let page = store
            .range(RangeRequest {
                prefix: "/berth/v1/".into(),
                start_after: after.clone(),
                limit: Some(1),
            })
            .await?;
        let Some(first) = page.kvs.first() else {
            return Ok(out);
        };
        // Account-wide records (the network, IAM) are in no region's
        // scope: step over them.
        let Some((scope, _, _)) = parts(&first.key) else {
            after = Some(first.key.clone());
            continue;
        };
        let elb = store
            .range(RangeRequest {
                prefix: format!("{}/", scope.elb_base()),
                start_after: None,
                limit: Some(1),
            })
            .await?;
        // Past every key of this scope.
        after = Some(format!(
            "/berth/v1/{}/{}/\u{10FFFF}",
            scope.account, scope.region
        ));
        if !elb.kvs.is_empty() {
            out.push(scope);
        }
    }
}

/// Accepts connections on one listener port until `token` is cancelled;
/// connections already open are served to their end.
async fn listen(workers: Arc<Workers>, addr: SocketAddr, token: CancellationToken) {
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "load balancer cannot listen; retrying");
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    tracing::info!(%addr, "load balancer listening");
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted.and_then(|(s, remote)| Ok((s.into_std()?, remote))) {
            Ok((stream, remote)) => workers.hand(stream, addr.port(), remote),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An accepted connection on its way to a worker.
struct Accepted {
    stream: std::net::TcpStream,
    port: u16,
    remote: SocketAddr,
}

/// The threads that serve connections, each on its own single-threaded
/// runtime with its own pool of connections to targets. A connection and
/// its requests stay on one thread: tokio's work-stealing runtime wakes a
/// second worker for each request that wakes an idle one, which costs a
/// proxy as much as it cost the API (docs/architecture.md, `serve.rs`).
struct Workers {
    handoff: Vec<tokio::sync::mpsc::UnboundedSender<Accepted>>,
    open: Arc<[AtomicUsize]>,
}

impl Workers {
    fn start(shared: Arc<Shared>, threads: usize) -> std::io::Result<Workers> {
        let threads = threads.max(1);
        let open: Arc<[AtomicUsize]> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
        let mut handoff = Vec::with_capacity(threads);
        for me in 0..threads {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let (shared, open) = (shared.clone(), open.clone());
            std::thread::Builder::new()
                .name(format!("berth-lb-{me}"))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(serve(rx, shared, open, me)),
                        Err(e) => tracing::error!(error = %e, "load balancer thread cannot start"),
                    }
                })?;
            handoff.push(tx);
        }
        Ok(Workers { handoff, open })
    }

    /// Gives a connection to the thread with the fewest open.
    fn hand(&self, stream: std::net::TcpStream, port: u16, remote: SocketAddr) {
        let least = (0..self.handoff.len())
            .min_by_key(|&i| self.open[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.open[least].fetch_add(1, Ordering::Relaxed);
        if self.handoff[least]
            .send(Accepted {
                stream,
                port,
                remote,
            })
            .is_err()
        {
            self.open[least].fetch_sub(1, Ordering::Relaxed);
            tracing::error!("a load balancer thread is gone");
        }
    }
}

/// Serves the connections handed to thread `me`.
async fn serve(
    mut handed: tokio::sync::mpsc::UnboundedReceiver<Accepted>,
    shared: Arc<Shared>,
    open: Arc<[AtomicUsize]>,
    me: usize,
) {
    let upstream = proxy::upstream_client();
    let pool = Arc::new(h1::Pool::default());
    let sweeping = pool.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(10));
        loop {
            every.tick().await;
            sweeping.sweep();
        }
    });
    while let Some(a) = handed.recv().await {
        let stream = match tokio::net::TcpStream::from_std(a.stream) {
            Ok(s) => s,
            Err(e) => {
                open[me].fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot serve an accepted connection");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let peer = proxy::Peer::new(a.remote);
        let (shared, open, upstream, pool, port) = (
            shared.clone(),
            open.clone(),
            upstream.clone(),
            pool.clone(),
            a.port,
        );
        tokio::spawn(async move {
            if let h1::Outcome::Fallback { io, h2 } =
                h1::serve(stream, port, &shared, &pool, &peer).await
            {
                let svc = hyper::service::service_fn(move |req| {
                    let cfg = shared.ports.read().get(&port).cloned();
                    let (upstream, peer) = (upstream.clone(), peer.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            proxy::handle(cfg, &upstream, &peer, req).await,
                        )
                    }
                });
                let io = TokioIo::new(io);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .writev(false)
                        .serve_connection(io, svc)
                        .await;
                }
            }
            open[me].fetch_sub(1, Ordering::Relaxed);
        });
    }
}
