//! The one runtime every controller runs on: a keyed work queue that
//! never runs one key twice at once and coalesces duplicates, requeues
//! with exponential backoff and jitter on error, a span per reconcile
//! (controller, key, reason), bounded channels, every spawned reconcile
//! tracked and waited for on shutdown, and time from tokio's clock so
//! tests can pause it.
//!
//! A controller is a [`Reconciler`]: given a key, it reads the current
//! state, changes what should change, and says when to look again. Its
//! event sources (store watches, timers) only [`Queue::enqueue`] keys;
//! they never carry the state itself (level-triggered).

use crate::metrics::ControlMetrics;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Keys waiting to be enqueued at most; a full queue makes senders wait,
/// which slows the event sources rather than growing memory.
const QUEUE_CAPACITY: usize = 4096;

/// What a reconcile asks of the runtime once it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do until something changes (or the periodic resync).
    AwaitChange,
    /// Look again after this long, even if nothing changes: something
    /// changes with time alone (a grace period ending).
    RequeueAfter(Duration),
}

/// Why a key is being reconciled, for the reconcile's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Something it depends on changed.
    Changed,
    /// The periodic resync.
    Resync,
    /// It asked to be looked at again after a while.
    Requeued,
    /// Its last reconcile failed.
    Backoff,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Changed => "changed",
            Reason::Resync => "resync",
            Reason::Requeued => "requeued",
            Reason::Backoff => "backoff",
        }
    }
}

/// A controller: reconciles one key at a time, level-triggered.
pub trait Reconciler: Send + Sync + 'static {
    type Key: Clone + Eq + Hash + Debug + Send + Sync + 'static;
    /// Its name in spans, logs and metrics.
    fn name(&self) -> &'static str;
    fn reconcile<'a>(
        &'a self,
        key: &'a Self::Key,
    ) -> BoxFuture<'a, Result<Action, crate::ControlError>>;
}

/// How failed reconciles are retried: `base * 2^(failures-1)`, capped at
/// `max`, with up to half of it taken off at random so that keys failing
/// together do not retry together.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay after `failures` consecutive failures (at least 1), with
    /// `jitter` in [0, 1) taking off up to half of it.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max);
        full.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0)
    }
}

/// Where event sources put keys to reconcile.
#[derive(Clone)]
pub struct Queue<K> {
    tx: mpsc::Sender<(K, Reason)>,
}

impl<K> Queue<K> {
    /// Asks for `key` to be reconciled. Waits while the queue is full;
    /// false once the runtime has stopped.
    pub async fn enqueue(&self, key: K, reason: Reason) -> bool {
        self.tx.send((key, reason)).await.is_ok()
    }
}

/// What the runtime has observed of its controller, for tests and metrics.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub reconciles: u64,
    pub errors: u64,
}

/// A controller on the runtime: its queue and the task that drives it.
pub struct Running<K> {
    pub queue: Queue<K>,
    pub stats: Arc<parking_lot::Mutex<Stats>>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts `controller` on the runtime. Every key in `initial` is
/// reconciled first; every key seen is reconciled again each `resync`.
/// Stops when `shutdown` is cancelled, after the reconciles under way end.
pub fn start<R: Reconciler>(
    controller: Arc<R>,
    initial: Vec<R::Key>,
    resync: Duration,
    backoff: Backoff,
    shutdown: CancellationToken,
    metrics: &ControlMetrics,
) -> Running<R::Key> {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let stats = Arc::new(parking_lot::Mutex::new(Stats::default()));
    let task = tokio::spawn(drive(
        controller,
        initial,
        rx,
        resync,
        backoff,
        shutdown,
        Observers {
            stats: stats.clone(),
            metrics: metrics.clone(),
        },
    ));
    Running {
        queue: Queue { tx },
        stats,
        task,
    }
}

/// Where the runtime tells what it does: the tests' stats and Prometheus.
struct Observers {
    stats: Arc<parking_lot::Mutex<Stats>>,
    metrics: ControlMetrics,
}

/// The runtime's own state: what runs, what waits, and when to wake.
struct State<K> {
    known: HashSet<K>,
    running: HashSet<K>,
    /// Keys asked for while they ran: run once more when they finish.
    again: HashMap<K, Reason>,
    /// Consecutive failures per key.
    failures: HashMap<K, u32>,
    /// Wake-ups in time order; `due` holds each key's earliest.
    timers: BTreeMap<(Instant, u64), (K, Reason)>,
    due: HashMap<K, (Instant, u64)>,
    seq: u64,
}

impl<K: Clone + Eq + Hash> State<K> {
    /// One wake-up per key: a later one is covered by an earlier one,
    /// whose reconcile says again when it wants the next.
    fn wake_at(&mut self, key: K, at: Instant, reason: Reason) {
        if let Some(old) = self.due.get(&key) {
            if old.0 <= at {
                return;
            }
            self.timers.remove(old);
        }
        self.seq += 1;
        let slot = (at, self.seq);
        self.timers.insert(slot, (key.clone(), reason));
        self.due.insert(key, slot);
    }
}

async fn drive<R: Reconciler>(
    controller: Arc<R>,
    initial: Vec<R::Key>,
    mut rx: mpsc::Receiver<(R::Key, Reason)>,
    resync: Duration,
    backoff: Backoff,
    shutdown: CancellationToken,
    Observers { stats, metrics }: Observers,
) {
    let name = controller.name();
    let mut st = State {
        known: HashSet::new(),
        running: HashSet::new(),
        again: HashMap::new(),
        failures: HashMap::new(),
        timers: BTreeMap::new(),
        due: HashMap::new(),
        seq: 0,
    };
    type Outcome = Result<Action, crate::ControlError>;
    let mut tasks: JoinSet<(R::Key, Outcome, Duration)> = JoinSet::new();
    let spawn = |tasks: &mut JoinSet<_>, key: R::Key, reason: Reason| {
        let c = controller.clone();
        let span = tracing::info_span!("reconcile", controller = name, key = ?key, reason = reason.as_str());
        tasks.spawn(
            async move {
                let began = Instant::now();
                let r = c.reconcile(&key).await;
                (key, r, began.elapsed())
            }
            .instrument(span),
        );
    };
    let mut pending: Vec<(R::Key, Reason)> =
        initial.into_iter().map(|k| (k, Reason::Changed)).collect();
    let mut tick = tokio::time::interval_at(Instant::now() + resync, resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        for (key, reason) in pending.drain(..) {
            st.known.insert(key.clone());
            if st.running.contains(&key) {
                st.again.entry(key).or_insert(reason);
            } else {
                st.running.insert(key.clone());
                spawn(&mut tasks, key, reason);
            }
        }
        metrics.depth(name, rx.len() + st.again.len(), st.running.len());
        let next_timer = st.timers.keys().next().map(|(at, _)| *at);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            got = rx.recv() => match got {
                Some(item) => pending.push(item),
                None => break,
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok((key, outcome, took)) = done else {
                    // A reconcile panicked: its key is unknown here, and
                    // the periodic resync will take it up again.
                    tracing::error!(controller = name, "a reconcile panicked");
                    continue;
                };
                st.running.remove(&key);
                let now = Instant::now();
                metrics.reconciled(name, took, outcome.is_err());
                {
                    let mut s = stats.lock();
                    s.reconciles += 1;
                    if outcome.is_err() {
                        s.errors += 1;
                    }
                }
                match outcome {
                    Ok(Action::AwaitChange) => {
                        st.failures.remove(&key);
                    }
                    Ok(Action::RequeueAfter(after)) => {
                        st.failures.remove(&key);
                        st.wake_at(key.clone(), now + after, Reason::Requeued);
                    }
                    Err(e) => {
                        let n = st.failures.entry(key.clone()).or_insert(0);
                        *n = n.saturating_add(1);
                        let delay = backoff.delay(*n, rand::random::<f64>());
                        tracing::warn!(controller = name, key = ?key, error = %e, retry_in = ?delay, "reconcile failed");
                        st.wake_at(key.clone(), now + delay, Reason::Backoff);
                    }
                }
                if let Some(reason) = st.again.remove(&key) {
                    pending.push((key, reason));
                }
            }
            _ = sleep_until(next_timer), if next_timer.is_some() => {
                let now = Instant::now();
                while let Some((slot, _)) = st.timers.first_key_value() {
                    if slot.0 > now {
                        break;
                    }
                    let slot = *slot;
                    if let Some((key, reason)) = st.timers.remove(&slot) {
                        st.due.remove(&key);
                        pending.push((key, reason));
                    }
                }
            }
            _ = tick.tick() => {
                pending.extend(st.known.iter().map(|k| (k.clone(), Reason::Resync)));
            }
        }
    }
    // Reconciles under way finish; none starts.
    while tasks.join_next().await.is_some() {}
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Records each reconcile; fails a key while `fail` says so; holds a
    /// key's reconcile until released so that overlap can be seen.
    struct Recorder {
        runs: parking_lot::Mutex<Vec<(u32, Instant)>>,
        running: AtomicUsize,
        max_running: AtomicUsize,
        fail_first: AtomicUsize,
        hold: Duration,
        action: Action,
    }

    impl Recorder {
        fn new(hold: Duration, fail_first: usize, action: Action) -> Arc<Self> {
            Arc::new(Recorder {
                runs: parking_lot::Mutex::new(vec![]),
                running: AtomicUsize::new(0),
                max_running: AtomicUsize::new(0),
                fail_first: AtomicUsize::new(fail_first),
                hold,
                action,
            })
        }
        fn runs_of(&self, key: u32) -> Vec<Instant> {
            self.runs
                .lock()
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, at)| *at)
                .collect()
        }
    }

    impl Reconciler for Recorder {
        type Key = u32;
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn reconcile<'a>(
            &'a self,
            key: &'a u32,
        ) -> BoxFuture<'a, Result<Action, crate::ControlError>> {
            Box::pin(async move {
                let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_running.fetch_max(now, Ordering::SeqCst);
                self.runs.lock().push((*key, Instant::now()));
                tokio::time::sleep(self.hold).await;
                self.running.fetch_sub(1, Ordering::SeqCst);
                let failing = self
                    .fail_first
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    return Err(crate::ControlError::Ecs(berth_domain::EcsError::invalid(
                        "boom",
                    )));
                }
                Ok(self.action)
            })
        }
    }

    const LONG: Duration = Duration::from_secs(3600);

    /// A recorder on the runtime, and what stops it.
    struct Harness {
        running: Running<u32>,
        stop: CancellationToken,
    }

    fn run(r: &Arc<Recorder>, initial: Vec<u32>, resync: Duration, backoff: Backoff) -> Harness {
        let stop = CancellationToken::new();
        let running = start(
            r.clone(),
            initial,
            resync,
            backoff,
            stop.clone(),
            &ControlMetrics::default(),
        );
        Harness { running, stop }
    }

    impl Harness {
        /// Stops the runtime and waits for it to end.
        async fn end(self) {
            self.stop.cancel();
            self.running.task.await.expect("runtime");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_key_never_runs_twice_at_once_and_duplicates_coalesce() {
        let r = Recorder::new(Duration::from_secs(1), 0, Action::AwaitChange);
        let h = run(&r, vec![], LONG, Backoff::default());
        for _ in 0..10 {
            assert!(h.running.queue.enqueue(7, Reason::Changed).await);
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        // The first run, then one more for everything asked while it ran.
        assert_eq!(r.runs_of(7).len(), 2);
        assert_eq!(r.max_running.load(Ordering::SeqCst), 1);
        h.end().await;
    }

    #[tokio::test(start_paused = true)]
    async fn different_keys_run_side_by_side() {
        let r = Recorder::new(Duration::from_secs(1), 0, Action::AwaitChange);
        let h = run(&r, vec![1, 2, 3], LONG, Backoff::default());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(r.max_running.load(Ordering::SeqCst), 3);
        h.end().await;
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_then_recover() {
        let r = Recorder::new(Duration::ZERO, 3, Action::AwaitChange);
        let backoff = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        let h = run(&r, vec![5], LONG, backoff);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let runs = r.runs_of(5);
        // Three failures, then a success that asks for nothing more.
        assert_eq!(runs.len(), 4, "{runs:?}");
        let gaps: Vec<f64> = runs
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        for (gap, full) in gaps.iter().zip([1.0, 2.0, 4.0]) {
            assert!(*gap >= full / 2.0 - 0.01 && *gap <= full + 0.01, "{gaps:?}");
        }
        assert_eq!(h.running.stats.lock().errors, 3);
        h.end().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_requeue_comes_back_after_its_delay_and_resync_covers_every_key() {
        let r = Recorder::new(
            Duration::ZERO,
            0,
            Action::RequeueAfter(Duration::from_secs(5)),
        );
        let h = run(&r, vec![1], Duration::from_secs(60), Backoff::default());
        tokio::time::sleep(Duration::from_millis(16_500)).await;
        // At 0, 5, 10 and 15 s.
        assert_eq!(r.runs_of(1).len(), 4);
        h.end().await;

        let r = Recorder::new(Duration::ZERO, 0, Action::AwaitChange);
        let h = run(&r, vec![1, 2], Duration::from_secs(10), Backoff::default());
        tokio::time::sleep(Duration::from_millis(25_500)).await;
        assert_eq!(r.runs_of(1).len(), 3);
        assert_eq!(r.runs_of(2).len(), 3);
        h.end().await;
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_the_reconciles_under_way() {
        let r = Recorder::new(Duration::from_secs(3), 0, Action::AwaitChange);
        let h = run(&r, vec![1], LONG, Backoff::default());
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.end().await;
        assert_eq!(
            r.running.load(Ordering::SeqCst),
            0,
            "a reconcile was cut off"
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_at_most_half_jitter() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay(3, 0.0), Duration::from_millis(400));
        assert_eq!(b.delay(10, 0.0), Duration::from_secs(1));
        let jittered = b.delay(2, 0.999_999);
        assert!(jittered >= Duration::from_millis(100) && jittered < Duration::from_millis(101));
    }
}
