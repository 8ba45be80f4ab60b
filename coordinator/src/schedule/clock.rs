//! Time for the scheduler: the system's wall clock, or a clock tests move by hand.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::watch;

/// Wall-clock time and a way to wait for it.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    /// Resolves at or after `deadline` — possibly earlier, so callers re-check `now()`.
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()>;
}

/// The system clock. Sleeps last at most a minute, so a wall clock that jumps (NTP, a
/// suspended VM) is noticed within that time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

const MAX_SLEEP: Duration = Duration::from_secs(60);

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let wait = (deadline - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_SLEEP);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that only moves when told to ([`ManualClock::advance`], [`ManualClock::set`]);
/// sleepers wake when it passes their deadline. For tests of anything scheduled.
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
    moved: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
            moved: watch::Sender::new(start),
        }
    }

    pub fn advance(&self, by: chrono::Duration) {
        let now = {
            let mut now = self.now.lock();
            *now += by;
            *now
        };
        self.moved.send_replace(now);
    }

    /// Moves to `to` (forward or back).
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock() = to;
        self.moved.send_replace(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let mut moved = self.moved.subscribe();
        Box::pin(async move {
            // An error means the clock is gone: nothing will ever move it, so never wake.
            if moved.wait_for(|now| *now >= deadline).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_past_their_deadline() {
        let start = Utc::now();
        let clock = ManualClock::new(start);
        let sleeper = tokio::spawn(clock.sleep_until(start + chrono::Duration::minutes(10)));
        clock.advance(chrono::Duration::minutes(9));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished(), "woke before its deadline");
        clock.advance(chrono::Duration::minutes(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("the sleeper woke")
            .unwrap();
        assert_eq!(clock.now(), start + chrono::Duration::minutes(10));
        // A deadline already passed resolves at once.
        tokio::time::timeout(Duration::from_secs(5), clock.sleep_until(start))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn system_clock_sleeps_until_the_deadline() {
        let clock = SystemClock;
        let before = std::time::Instant::now();
        clock
            .sleep_until(clock.now() + chrono::Duration::milliseconds(50))
            .await;
        assert!(before.elapsed() >= Duration::from_millis(45));
    }
}
