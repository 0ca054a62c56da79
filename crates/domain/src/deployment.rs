//! ECS's rolling-deployment arithmetic, as pure functions the service
//! reconciler steps through: the bounds `minimumHealthyPercent` and
//! `maximumPercent` put on a deployment (ecs-reference 3.4), the next step
//! of a rollout from the counts the reconciler observed, and the
//! deployment circuit breaker's failure threshold.

use crate::EcsError;

/// REPLICA or DAEMON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Scheduling {
    Replica,
    Daemon,
}

/// A service's `deploymentConfiguration`, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rolling {
    pub minimum_healthy_percent: u32,
    pub maximum_percent: u32,
}

impl Rolling {
    /// The configuration ECS uses for what the request leaves out: 100 and
    /// 200 for REPLICA, 0 and 100 for DAEMON (one task per instance: there
    /// is no room to start a new task before the old one stops).
    pub fn with_defaults(
        scheduling: Scheduling,
        minimum_healthy_percent: Option<i32>,
        maximum_percent: Option<i32>,
    ) -> Result<Rolling, EcsError> {
        let (min_default, max_default) = match scheduling {
            Scheduling::Replica => (100, 200),
            Scheduling::Daemon => (0, 100),
        };
        let min = minimum_healthy_percent.unwrap_or(min_default);
        let max = maximum_percent.unwrap_or(max_default);
        if !(0..=100).contains(&min) {
            return Err(EcsError::invalid(format!(
                "deploymentConfiguration.minimumHealthyPercent must be between 0 and 100, got {min}."
            )));
        }
        if max < 0 {
            return Err(EcsError::invalid(format!(
                "deploymentConfiguration.maximumPercent must not be negative, got {max}."
            )));
        }
        if max < min {
            return Err(EcsError::invalid(format!(
                "deploymentConfiguration.maximumPercent ({max}) must not be less than minimumHealthyPercent ({min})."
            )));
        }
        Ok(Rolling {
            minimum_healthy_percent: min as u32,
            maximum_percent: max as u32,
        })
    }

    /// How many tasks must stay healthy (rounded up) and how many may run
    /// or be pending at once (rounded down), for `desired` tasks.
    pub fn bounds(&self, desired: u32) -> Bounds {
        let d = u64::from(desired);
        let min = (d * u64::from(self.minimum_healthy_percent)).div_ceil(100);
        let max = d * u64::from(self.maximum_percent) / 100;
        Bounds {
            min_healthy: u32::try_from(min).unwrap_or(u32::MAX),
            max_total: u32::try_from(max).unwrap_or(u32::MAX),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min_healthy: u32,
    pub max_total: u32,
}

/// What a reconciler observed of a service mid-rollout. `new` tasks run
/// the PRIMARY deployment's task definition; `old` ones any other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// The PRIMARY deployment's tasks that count as healthy.
    pub new_healthy: u32,
    /// Its other tasks not yet stopped: pending, starting, not yet healthy.
    pub new_other: u32,
    /// Older deployments' tasks that count as healthy.
    pub old_healthy: u32,
    /// Older deployments' tasks not yet stopped that do not.
    pub old_other: u32,
}

/// One step of a rollout: how many tasks of the new deployment to start
/// and how many old ones to stop now. Applying a step and observing again
/// converges on `desired` new healthy tasks and no old ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    pub start: u32,
    /// Old tasks that are not healthy, stopped first: they carry no load.
    pub stop_old_unhealthy: u32,
    pub stop_old_healthy: u32,
}

/// The next step towards `desired` tasks of the new deployment within
/// `bounds`. Starting is held back by `max_total`; stopping healthy old
/// tasks by `min_healthy`. When the bounds leave no room for either (as
/// with one task, 100 and 100 percent) ECS still makes progress by
/// starting one task over the maximum, and so does this.
pub fn step(desired: u32, bounds: Bounds, o: Observed) -> Step {
    let new = o.new_healthy + o.new_other;
    let old = o.old_healthy + o.old_other;
    let total = new + old;
    let wanted_new = desired.saturating_sub(new);
    let mut start = bounds.max_total.saturating_sub(total).min(wanted_new);
    // Unhealthy old tasks keep nothing up: they go whatever the bounds.
    let stop_old_unhealthy = o.old_other;
    let healthy = o.new_healthy + o.old_healthy;
    let mut stop_old_healthy = healthy
        .saturating_sub(bounds.min_healthy)
        .min(o.old_healthy);
    // Scaling in: old tasks beyond what is desired go even when the new
    // deployment is complete and healthy.
    let surplus = total.saturating_sub(desired.max(bounds.max_total));
    stop_old_healthy = stop_old_healthy.max(surplus.min(o.old_healthy));
    if start == 0
        && stop_old_healthy == 0
        && stop_old_unhealthy == 0
        && wanted_new > 0
        && o.new_other == 0
    {
        start = 1;
    }
    Step {
        start,
        stop_old_unhealthy,
        stop_old_healthy,
    }
}

/// The deployment circuit breaker's default failure threshold: half the
/// desired count, rounded up, at least 3 and at most 200.
pub fn failure_threshold(desired: u32) -> u32 {
    desired.div_ceil(2).clamp(3, 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(min: i32, max: i32) -> Rolling {
        Rolling::with_defaults(Scheduling::Replica, Some(min), Some(max)).expect("valid")
    }

    #[test]
    fn defaults_depend_on_the_scheduling_strategy() {
        assert_eq!(
            Rolling::with_defaults(Scheduling::Replica, None, None),
            Ok(Rolling {
                minimum_healthy_percent: 100,
                maximum_percent: 200
            })
        );
        assert_eq!(
            Rolling::with_defaults(Scheduling::Daemon, None, None),
            Ok(Rolling {
                minimum_healthy_percent: 0,
                maximum_percent: 100
            })
        );
    }

    #[test]
    fn bad_percentages_name_the_field() {
        let err = |min, max| {
            Rolling::with_defaults(Scheduling::Replica, min, max)
                .expect_err("rejected")
                .to_string()
        };
        assert!(err(Some(101), None).contains("minimumHealthyPercent"));
        assert!(err(Some(-1), None).contains("minimumHealthyPercent"));
        assert!(err(None, Some(-5)).contains("maximumPercent"));
        assert!(err(Some(100), Some(90)).contains("maximumPercent (90)"));
        assert!(err(Some(60), Some(50)).contains("maximumPercent (50)"));
        assert!(Rolling::with_defaults(Scheduling::Replica, Some(0), Some(100)).is_ok());
        assert!(Rolling::with_defaults(Scheduling::Replica, Some(100), Some(100)).is_ok());
    }

    #[test]
    fn minimum_rounds_up_and_maximum_rounds_down() {
        assert_eq!(
            replica(50, 150).bounds(3),
            Bounds {
                min_healthy: 2,
                max_total: 4
            }
        );
        assert_eq!(
            replica(100, 200).bounds(20),
            Bounds {
                min_healthy: 20,
                max_total: 40
            }
        );
        assert_eq!(
            replica(0, 100).bounds(0),
            Bounds {
                min_healthy: 0,
                max_total: 0
            }
        );
    }

    /// Steps a rollout of `desired` tasks, with every started task turning
    /// healthy before the next step, until no old task is left; returns the
    /// most tasks that ran at once and the fewest healthy ones.
    fn roll(desired: u32, cfg: Rolling) -> (u32, u32, usize) {
        let bounds = cfg.bounds(desired);
        let mut o = Observed {
            old_healthy: desired,
            ..Observed::default()
        };
        let (mut most, mut fewest, mut steps) = (desired, desired, 0);
        while o.old_healthy + o.old_other > 0 || o.new_healthy < desired {
            let s = step(desired, bounds, o);
            assert!(s != Step::default(), "stuck at {o:?}");
            o.old_healthy -= s.stop_old_healthy;
            o.old_other -= s.stop_old_unhealthy;
            fewest = fewest.min(o.old_healthy + o.new_healthy);
            o.new_other += s.start;
            most = most.max(o.old_healthy + o.old_other + o.new_healthy + o.new_other);
            o.new_healthy += o.new_other;
            o.new_other = 0;
            steps += 1;
            assert!(steps <= 4 * desired as usize + 4, "no convergence");
        }
        (most, fewest, steps)
    }

    #[test]
    fn rollouts_stay_within_their_bounds_and_finish() {
        // 100/200: start all new, then stop all old.
        assert_eq!(roll(20, replica(100, 200)), (40, 20, 2));
        // 50/100: stop half, start half, twice over.
        let (most, fewest, _) = roll(20, replica(50, 100));
        assert_eq!((most, fewest), (20, 10));
        // 100/150 with 3 tasks: one extra at a time.
        let (most, fewest, _) = roll(3, replica(100, 150));
        assert_eq!((most, fewest), (4, 3));
        // One task at 100/100 cannot respect both; it goes one over.
        let (most, fewest, _) = roll(1, replica(100, 100));
        assert_eq!((most, fewest), (2, 1));
    }

    #[test]
    fn unhealthy_old_tasks_go_first_and_scale_in_stops_the_surplus() {
        let b = replica(100, 200).bounds(4);
        let s = step(
            4,
            b,
            Observed {
                old_healthy: 3,
                old_other: 1,
                ..Observed::default()
            },
        );
        assert_eq!(s.stop_old_unhealthy, 1);
        assert_eq!(s.start, 4);
        // Desired went from 6 to 2 with the new deployment done: 4 old go.
        let b = replica(100, 200).bounds(2);
        let s = step(
            2,
            b,
            Observed {
                new_healthy: 2,
                old_healthy: 4,
                ..Observed::default()
            },
        );
        assert_eq!(s.stop_old_healthy, 4);
        assert_eq!(s.start, 0);
    }

    proptest::proptest! {
        /// Every rollout finishes, never runs more than the maximum allows
        /// (one over when the bounds leave no room at all), and never has
        /// fewer healthy tasks than the minimum.
        #[test]
        fn every_rollout_converges_within_its_bounds(desired in 0u32..60, min in 0i32..=100, extra in 0i32..200) {
            let cfg = replica(min, (min + extra).max(100));
            let b = cfg.bounds(desired);
            let (most, fewest, _) = roll(desired, cfg);
            proptest::prop_assert!(most <= b.max_total.max(desired + 1), "{most} > {b:?}");
            proptest::prop_assert!(fewest >= b.min_healthy.min(desired), "{fewest} < {b:?}");
        }
    }

    #[test]
    fn the_circuit_breaker_threshold_is_half_clamped() {
        assert_eq!(failure_threshold(1), 3);
        assert_eq!(failure_threshold(7), 4);
        assert_eq!(failure_threshold(20), 10);
        assert_eq!(failure_threshold(1000), 200);
    }
}
