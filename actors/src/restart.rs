//! The SyncSupervisor's restart policy. ractor has no restart strategies, so the supervisor
//! applies this one itself: restart the whole pipeline (one-for-all) after a failure, waiting
//! 1 s doubling to 10 min; a pipeline that stayed healthy for 60 s resets the delay; more than
//! `max_burst` failures in a row without a healthy period gives up and fails the run.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub healthy_after: Duration,
    pub max_burst: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600),
            healthy_after: Duration::from_secs(60),
            max_burst: 8,
        }
    }
}

/// What to do after the pipeline failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RestartAfter(Duration),
    GiveUp,
}

#[derive(Debug, Clone)]
pub struct RestartState {
    policy: RestartPolicy,
    failures_in_burst: u32,
}

impl RestartState {
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            failures_in_burst: 0,
        }
    }

    /// Records a failure of a pipeline that had been running for `ran_for`.
    pub fn on_failure(&mut self, ran_for: Duration) -> Decision {
        if ran_for >= self.policy.healthy_after {
            self.failures_in_burst = 0;
        }
        self.failures_in_burst += 1;
        if self.failures_in_burst > self.policy.max_burst {
            return Decision::GiveUp;
        }
        let factor = 2u32.saturating_pow(self.failures_in_burst - 1);
        Decision::RestartAfter(
            self.policy
                .initial
                .saturating_mul(factor)
                .min(self.policy.max),
        )
    }

    pub fn failures_in_burst(&self) -> u32 {
        self.failures_in_burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_resets_and_gives_up() {
        let policy = RestartPolicy {
            max_burst: 12,
            ..Default::default()
        };
        let mut s = RestartState::new(policy);
        let quick = Duration::from_secs(1);
        let delays: Vec<_> = (0..11).map(|_| s.on_failure(quick)).collect();
        assert_eq!(delays[0], Decision::RestartAfter(Duration::from_secs(1)));
        assert_eq!(delays[1], Decision::RestartAfter(Duration::from_secs(2)));
        assert_eq!(delays[9], Decision::RestartAfter(Duration::from_secs(512)));
        assert_eq!(
            delays[10],
            Decision::RestartAfter(Duration::from_secs(600)),
            "capped at 10 min"
        );
        assert_eq!(
            s.on_failure(Duration::from_secs(61)),
            Decision::RestartAfter(Duration::from_secs(1)),
            "healthy run resets"
        );
        let mut s = RestartState::new(RestartPolicy {
            max_burst: 2,
            ..Default::default()
        });
        s.on_failure(quick);
        s.on_failure(quick);
        assert_eq!(s.on_failure(quick), Decision::GiveUp);
    }
}
