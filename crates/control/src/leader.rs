//! One leader among the servers that share a store. Every server serves
//! the APIs and accepts agents; only the one holding the leader key runs
//! the controllers. The key lives under a lease that the leader keeps
//! alive; when the leader dies the lease runs out, the key goes, and the
//! servers watching it campaign again. Controllers are level-triggered and
//! every write they make is a compare-and-swap, so the new leader resumes
//! from the store: a short overlap with a leader that has not yet noticed
//! its loss can cost a conflict and a retry, never a double placement.

use crate::Control;
use berth_store::{typed, EventKind, Op, Txn};
use futures::StreamExt;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The key whose holder leads; its value names the holder.
pub const LEADER_KEY: &str = "/berth/leader";

/// How an election runs.
#[derive(Debug, Clone)]
pub struct Election {
    /// This server's name in the leader key (its API address, say).
    pub id: String,
    /// The lease's TTL: how long a dead leader goes unnoticed at most.
    pub ttl: Duration,
}

/// Runs `lead` each time this server becomes leader, with a token that is
/// cancelled when it stops being leader (its lease lost) or on `shutdown`;
/// returns after `shutdown`, having stepped down so another takes over at
/// once.
pub async fn run<F, Fut>(ctl: Control, election: Election, shutdown: CancellationToken, lead: F)
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut retry = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match campaign(&ctl, &election).await {
            Ok(Some(lease)) => {
                retry = Duration::from_millis(100);
                tracing::info!(id = %election.id, "leading: the controllers run here");
                ctl.metrics.leading(true);
                let term = shutdown.child_token();
                let work = tokio::spawn(lead(term.clone()));
                hold(&ctl, &election, lease, &term).await;
                term.cancel();
                work.await.ok();
                ctl.metrics.leading(false);
                // Stepping down (on shutdown, or when the lease is already
                // gone) frees the key now rather than after the TTL.
                ctl.store.lease_revoke(lease).await.ok();
                if !shutdown.is_cancelled() {
                    tracing::warn!(id = %election.id, "lost the leader lease; following");
                }
            }
            Ok(None) => {
                retry = Duration::from_millis(100);
                follow(&ctl, &shutdown).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "leader election cannot reach the store");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// One attempt to take the key: the lease it is held under if won.
async fn campaign(
    ctl: &Control,
    election: &Election,
) -> Result<Option<berth_store::LeaseId>, berth_store::StoreError> {
    let lease = ctl.store.lease_grant(election.ttl).await?;
    let won = ctl
        .store
        .txn(Txn::when(
            vec![typed::unchanged(LEADER_KEY, 0)],
            vec![Op::Put {
                key: LEADER_KEY.into(),
                value: election.id.clone().into_bytes(),
                lease: Some(lease.id),
            }],
        ))
        .await;
    match won {
        Ok(r) if r.succeeded => Ok(Some(lease.id)),
        other => {
            ctl.store.lease_revoke(lease.id).await.ok();
            other.map(|_| None)
        }
    }
}

/// Keeps the lease alive until it is lost or `term` ends. Keep-alives go
/// three times per TTL, so one slow round trip does not cost the lease; a
/// failure is retried until the TTL would have passed since the last
/// success, which is when the others may already have taken over.
async fn hold(
    ctl: &Control,
    election: &Election,
    lease: berth_store::LeaseId,
    term: &CancellationToken,
) {
    let every = election.ttl / 3;
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = term.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match ctl.store.lease_keep_alive(lease).await {
            Ok(_) => renewed = tokio::time::Instant::now(),
            Err(berth_store::StoreError::LeaseNotFound(_)) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the leader lease");
                // Step down before the lease can run out under us: past
                // this point another server may lead.
                if renewed.elapsed() + every >= election.ttl {
                    return;
                }
            }
        }
    }
}

/// Waits until the leader key is gone (or cannot be watched), then returns
/// so the caller campaigns again.
async fn follow(ctl: &Control, shutdown: &CancellationToken) {
    let Ok(rev) = ctl.store.current_revision().await else {
        return;
    };
    // Gone between the campaign and now: campaign again at once.
    match ctl.store.get(LEADER_KEY).await {
        Ok(Some(_)) => {}
        _ => return,
    }
    let mut events = ctl.store.watch(LEADER_KEY, rev + 1);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.next() => match ev {
                Some(Ok(ev)) if ev.kv.key == LEADER_KEY && ev.kind == EventKind::Delete => return,
                Some(Ok(_)) => {}
                // The store's trouble: look again shortly rather than spin.
                Some(Err(_)) | None => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return;
                }
            }
        }
    }
}

/// Runs `lead` as the only server a store has (SQLite and memory stores
/// belong to one process, which leads without an election).
pub async fn sole<F, Fut>(ctl: Control, shutdown: CancellationToken, lead: F)
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    ctl.metrics.leading(true);
    lead(shutdown).await;
    ctl.metrics.leading(false);
}

/// Who leads now, if anyone.
pub async fn current(ctl: &Control) -> Result<Option<String>, berth_store::StoreError> {
    Ok(ctl
        .store
        .get(LEADER_KEY)
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ControlConfig;
    use berth_store::MemStore;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const TTL: Duration = Duration::from_secs(3);

    /// A server's election on the shared store: how many terms it began,
    /// whether one runs now, and how to end it with or without a goodbye.
    struct Candidate {
        terms: Arc<AtomicUsize>,
        leading: Arc<AtomicUsize>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn candidate(store: &Arc<MemStore>, id: &str) -> Candidate {
        let ctl = Control::new(store.clone(), ControlConfig::default());
        let (terms, leading) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let stop = CancellationToken::new();
        let (t, l) = (terms.clone(), leading.clone());
        let task = tokio::spawn(run(
            ctl,
            Election {
                id: id.into(),
                ttl: TTL,
            },
            stop.clone(),
            move |term: CancellationToken| {
                let (t, l) = (t.clone(), l.clone());
                async move {
                    t.fetch_add(1, Ordering::SeqCst);
                    l.fetch_add(1, Ordering::SeqCst);
                    term.cancelled().await;
                    l.fetch_sub(1, Ordering::SeqCst);
                }
            },
        ));
        Candidate {
            terms,
            leading,
            stop,
            task,
        }
    }

    fn leaders(cs: &[&Candidate]) -> usize {
        cs.iter().map(|c| c.leading.load(Ordering::SeqCst)).sum()
    }

    #[tokio::test(start_paused = true)]
    async fn exactly_one_leads_and_a_dead_leader_is_replaced_within_its_ttl() {
        let store = Arc::new(MemStore::new());
        let a = candidate(&store, "a");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (b, c) = (candidate(&store, "b"), candidate(&store, "c"));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(leaders(&[&a, &b, &c]), 1);
        assert_eq!(
            a.leading.load(Ordering::SeqCst),
            1,
            "the first stays leader"
        );

        // Killed: no goodbye, no more keep-alives. Another leads once the
        // lease runs out, and only one does.
        a.task.abort();
        let died = tokio::time::Instant::now();
        while leaders(&[&b, &c]) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            died.elapsed() <= TTL + Duration::from_millis(500),
            "{:?}",
            died.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(leaders(&[&b, &c]), 1);
        assert_eq!(
            b.terms.load(Ordering::SeqCst) + c.terms.load(Ordering::SeqCst),
            1
        );

        // Stopped: it steps down, and the last one takes over at once.
        let (next, last) = if b.leading.load(Ordering::SeqCst) == 1 {
            (b, c)
        } else {
            (c, b)
        };
        next.stop.cancel();
        next.task.await.expect("stops");
        let stepped = tokio::time::Instant::now();
        while leaders(&[&last]) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            stepped.elapsed() < Duration::from_secs(1),
            "{:?}",
            stepped.elapsed()
        );
        let held = current(&Control::new(store.clone(), ControlConfig::default())).await;
        assert!(matches!(held, Ok(Some(_))), "{held:?}");
        last.stop.cancel();
        last.task.await.expect("stops");
        assert_eq!(last.leading.load(Ordering::SeqCst), 0);
    }
}
