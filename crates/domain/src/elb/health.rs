//! Health checks: the settings ALB accepts, the success-code matcher, and
//! the per-target state machine the data path runs each probe through.

use super::{ElbError, HealthCheck, HealthRecord};

/// Checks health-check settings (after defaults are filled in).
pub fn validate(h: &HealthCheck) -> Result<(), ElbError> {
    let range = |v: i32, lo: i32, hi: i32, field: &str| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(ElbError::validation(format!(
                "1 validation error detected: Value '{v}' at '{field}' failed to satisfy constraint: Member must have value between {lo} and {hi}"
            )))
        }
    };
    range(h.interval_seconds, 5, 300, "healthCheckIntervalSeconds")?;
    range(h.timeout_seconds, 2, 120, "healthCheckTimeoutSeconds")?;
    range(h.healthy_threshold, 2, 10, "healthyThresholdCount")?;
    range(h.unhealthy_threshold, 2, 10, "unhealthyThresholdCount")?;
    if h.timeout_seconds >= h.interval_seconds {
        return Err(ElbError::validation(format!(
            "Health check timeout '{}' must be smaller than the interval '{}'",
            h.timeout_seconds, h.interval_seconds
        )));
    }
    if h.protocol != "HTTP" {
        return Err(ElbError::validation(format!(
            "Health check protocol '{}' is not supported; Berth checks over HTTP",
            h.protocol
        )));
    }
    if h.port != "traffic-port" && h.port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(ElbError::validation(format!(
            "Health check port '{}' must be 'traffic-port' or a number from 1 to 65535",
            h.port
        )));
    }
    if !h.path.starts_with('/') || h.path.len() > 1024 {
        return Err(ElbError::validation(format!(
            "Health check path '{}' must begin with '/' and be at most 1024 characters",
            h.path
        )));
    }
    parse_matcher(&h.matcher)?;
    Ok(())
}

/// Success codes: `200`, `200,202`, `200-299`; each from 200 to 499.
pub fn parse_matcher(text: &str) -> Result<Vec<(u16, u16)>, ElbError> {
    let bad = || {
        ElbError::validation(format!(
            "Health check matcher HTTP code '{text}' must be values from 200 to 499, as '200', '200,202' or '200-299'"
        ))
    };
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (200..=499).contains(c))
            .ok_or_else(bad)
    };
    text.split(',')
        .map(|part| match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (code(lo)?, code(hi)?);
                if lo > hi {
                    Err(bad())
                } else {
                    Ok((lo, hi))
                }
            }
            None => code(part).map(|c| (c, c)),
        })
        .collect()
}

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Ok,
    /// The target answered with a code outside the matcher.
    Code(u16),
    Timeout,
    /// The connection failed or the answer was not HTTP.
    Failed,
}

/// Where a target stands, from consecutive probes and the thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    pub state: State,
    successes: i32,
    failures: i32,
    last: Option<Probe>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Initial,
    Healthy,
    Unhealthy,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            state: State::Initial,
            successes: 0,
            failures: 0,
            last: None,
        }
    }
}

impl Tracker {
    /// Takes a probe's outcome; true when the state changed.
    pub fn observe(&mut self, probe: Probe, healthy: i32, unhealthy: i32) -> bool {
        self.last = Some(probe);
        let before = self.state;
        if probe == Probe::Ok {
            self.successes += 1;
            self.failures = 0;
            if self.state != State::Healthy && self.successes >= healthy {
                self.state = State::Healthy;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.state != State::Unhealthy && self.failures >= unhealthy {
                self.state = State::Unhealthy;
            }
        }
        before != self.state
    }

    /// Whether traffic should go to the target: healthy, or still initial
    /// with no probe failed (ALB routes to new targets only once healthy,
    /// so initial does not count).
    pub fn serving(&self) -> bool {
        self.state == State::Healthy
    }

    /// The record DescribeTargetHealth reads.
    pub fn record(&self) -> HealthRecord {
        let (state, reason, description) = match self.state {
            State::Healthy => ("healthy", None, None),
            State::Initial => (
                "initial",
                Some("Elb.InitialHealthChecking"),
                Some("Initial health checks in progress".to_string()),
            ),
            State::Unhealthy => match self.last {
                Some(Probe::Code(c)) => (
                    "unhealthy",
                    Some("Target.ResponseCodeMismatch"),
                    Some(format!("Health checks failed with these codes: [{c}]")),
                ),
                Some(Probe::Timeout) => (
                    "unhealthy",
                    Some("Target.Timeout"),
                    Some("Request timed out".to_string()),
                ),
                _ => (
                    "unhealthy",
                    Some("Target.FailedHealthChecks"),
                    Some("Health checks failed".to_string()),
                ),
            },
        };
        HealthRecord {
            state: state.into(),
            reason: reason.map(str::to_string),
            description,
        }
    }
}

/// Whether a status code is a success for `matcher`.
pub fn success(matcher: &[(u16, u16)], status: u16) -> bool {
    matcher.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_move_the_state() {
        let mut t = Tracker::default();
        assert!(!t.observe(Probe::Ok, 2, 3));
        assert!(t.observe(Probe::Ok, 2, 3));
        assert_eq!(t.state, State::Healthy);
        assert!(!t.observe(Probe::Code(500), 2, 3));
        assert!(!t.observe(Probe::Timeout, 2, 3));
        // A success in between starts the count again.
        assert!(!t.observe(Probe::Ok, 2, 3));
        assert!(!t.observe(Probe::Code(500), 2, 3));
        assert!(!t.observe(Probe::Code(500), 2, 3));
        assert!(t.observe(Probe::Code(503), 2, 3));
        assert_eq!(t.state, State::Unhealthy);
        let r = t.record();
        assert_eq!(r.reason.as_deref(), Some("Target.ResponseCodeMismatch"));
        assert_eq!(
            r.description.as_deref(),
            Some("Health checks failed with these codes: [503]")
        );
    }

    #[test]
    fn matcher_forms() {
        assert_eq!(parse_matcher("200").expect("present"), vec![(200, 200)]);
        assert_eq!(
            parse_matcher("200,202-204").expect("present"),
            vec![(200, 200), (202, 204)]
        );
        assert!(parse_matcher("199").is_err());
        assert!(parse_matcher("300-200").is_err());
        assert!(parse_matcher("abc").is_err());
        assert!(success(&parse_matcher("200-299").expect("present"), 204));
        assert!(!success(&parse_matcher("200").expect("present"), 301));
    }

    #[test]
    fn settings_are_checked() {
        assert!(validate(&HealthCheck::default()).is_ok());
        let with = |f: fn(&mut HealthCheck)| {
            let mut h = HealthCheck::default();
            f(&mut h);
            validate(&h)
        };
        assert!(with(|h| h.interval_seconds = 4).is_err());
        assert!(with(|h| h.timeout_seconds = 30).is_err());
        assert!(with(|h| h.healthy_threshold = 11).is_err());
        assert!(with(|h| h.path = "health".into()).is_err());
        assert!(with(|h| h.port = "0".into()).is_err());
        assert!(with(|h| h.port = "8081".into()).is_ok());
    }
}
