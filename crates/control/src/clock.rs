//! Where the cluster manager reads the time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time, as records carry it (seconds since the epoch, with
/// millisecond precision). Injected so that tests can move time on.
pub trait Clock: Send + Sync {
    fn now(&self) -> f64;
}

fn epoch_secs(t: SystemTime) -> f64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

/// The system's clock: what servers use, since records written by one
/// server are read by another.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        epoch_secs(SystemTime::now())
    }
}

/// Wall-clock time that moves with tokio's clock: it starts at the system
/// time of its creation and advances as `tokio::time::Instant` does, so a
/// test with paused time moves both with `tokio::time::advance`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start_epoch: f64,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        TokioClock {
            start_epoch: epoch_secs(SystemTime::now()),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> f64 {
        let ms = self.start.elapsed().as_millis() as f64 / 1000.0;
        ((self.start_epoch + ms) * 1000.0).round() / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_moves_with_paused_time() {
        let c = TokioClock::new();
        let before = c.now();
        tokio::time::advance(std::time::Duration::from_secs(90)).await;
        let moved = c.now() - before;
        assert!((moved - 90.0).abs() < 0.01, "moved {moved}");
    }
}
