//! Tasks on their way to RUNNING, so that the host's background work
//! (booting the namespaces and sandboxes of warm addresses) waits for them
//! instead of taking the CPU from them: on a small host a warm sandbox's
//! boot alongside a task's start nearly doubles that start.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How many tasks of this host are starting.
#[derive(Clone)]
pub struct Starts(Arc<watch::Sender<usize>>);

/// One task starting, until dropped.
pub struct Starting(Starts);

impl Default for Starts {
    fn default() -> Self {
        Starts(Arc::new(watch::channel(0).0))
    }
}

impl Starts {
    pub fn begin(&self) -> Starting {
        self.0.send_modify(|n| *n += 1);
        Starting(self.clone())
    }

    /// Returns once no task is starting, or after `at_most`: under a
    /// steady stream of starts, background work still gets done.
    pub async fn quiet(&self, at_most: Duration) {
        let mut rx = self.0.subscribe();
        let _ = tokio::time::timeout(at_most, rx.wait_for(|n| *n == 0)).await;
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        self.0 .0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test(start_paused = true)]
    async fn background_work_waits_for_starts_and_no_longer() {
        let starts = Starts::default();
        // Nothing starting: at once.
        assert!(starts
            .quiet(Duration::from_secs(2))
            .now_or_never()
            .is_some());

        let a = starts.begin();
        let b = starts.begin();
        let waiting = tokio::spawn({
            let starts = starts.clone();
            async move { starts.quiet(Duration::from_secs(2)).await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished(), "one task is still starting");
        drop(b);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(waiting.is_finished());

        // Starts that never end hold it back only so long.
        let _c = starts.begin();
        let t0 = tokio::time::Instant::now();
        starts.quiet(Duration::from_secs(2)).await;
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
    }
}
