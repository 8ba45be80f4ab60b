//! Faults on demand: a seeded draw per request, and per-project rolling-window rate limits.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{FaultConfig, RateLimitConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Status429,
    Status502,
    Status503,
    Slow(Duration),
    Timeout(Duration),
    Drop,
    DropAfterStore,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Status429 => "429",
            Fault::Status502 => "502",
            Fault::Status503 => "503",
            Fault::Slow(_) => "slow",
            Fault::Timeout(_) => "timeout",
            Fault::Drop => "drop",
            Fault::DropAfterStore => "drop_after_store",
        }
    }
}

pub struct FaultInjector {
    state: Mutex<(FaultConfig, StdRng)>,
}

impl FaultInjector {
    pub fn new(config: FaultConfig) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        Self {
            state: Mutex::new((config, rng)),
        }
    }

    /// Replaces the configuration and reseeds, so the sequence of faults restarts.
    pub fn set(&self, config: FaultConfig) {
        let rng = StdRng::seed_from_u64(config.seed);
        *self.state.lock() = (config, rng);
    }

    pub fn config(&self) -> FaultConfig {
        self.state.lock().0.clone()
    }

    /// Draws the fault for one request.
    pub fn draw(&self) -> Fault {
        let mut guard = self.state.lock();
        let (config, rng) = &mut *guard;
        if config.shares().iter().all(|s| *s == 0.0) {
            return Fault::None;
        }
        let roll: f64 = rng.random();
        let kinds = [
            Fault::Status429,
            Fault::Status502,
            Fault::Status503,
            Fault::Slow(Duration::from_millis(config.slow_ms)),
            Fault::Timeout(Duration::from_millis(config.timeout_ms)),
            Fault::Drop,
            Fault::DropAfterStore,
        ];
        let mut edge = 0.0;
        for (share, kind) in config.shares().into_iter().zip(kinds) {
            edge += share;
            if roll < edge {
                return kind;
            }
        }
        Fault::None
    }
}

/// A rolling window: the sum of amounts taken within the last `span`.
struct Window {
    span: Duration,
    limit: u64,
    taken: VecDeque<(Instant, u64)>,
    total: u64,
}

impl Window {
    fn new(span: Duration, limit: u64) -> Self {
        Self {
            span,
            limit,
            taken: VecDeque::new(),
            total: 0,
        }
    }

    fn evict(&mut self, now: Instant) {
        while let Some((at, amount)) = self.taken.front().copied() {
            if now.duration_since(at) < self.span {
                break;
            }
            self.taken.pop_front();
            self.total -= amount;
        }
    }

    /// A request larger than the whole limit still passes when the window is empty; otherwise
    /// a client whose batches exceed the limit could never make progress.
    fn fits(&self, amount: u64) -> bool {
        self.total == 0 || self.total + amount <= self.limit
    }

    fn take(&mut self, now: Instant, amount: u64) {
        self.taken.push_back((now, amount));
        self.total += amount;
    }
}

#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, (Option<Window>, Option<Window>)>>,
}

impl RateLimiter {
    pub fn new(limits: impl IntoIterator<Item = (String, RateLimitConfig)>) -> Self {
        let windows = limits
            .into_iter()
            .map(|(project, l)| {
                let events = l
                    .events_per_second
                    .map(|n| Window::new(Duration::from_secs(1), n));
                let bytes = l
                    .bytes_per_minute
                    .map(|n| Window::new(Duration::from_secs(60), n));
                (project, (events, bytes))
            })
            .collect();
        Self {
            windows: Mutex::new(windows),
        }
    }

    /// Takes `events` and `bytes` from the project's budget, or refuses (429) taking nothing.
    pub fn admit(&self, project: &str, events: u64, bytes: u64) -> bool {
        let mut all = self.windows.lock();
        let Some((ev, by)) = all.get_mut(project) else {
            return true;
        };
        let now = Instant::now();
        for w in [ev.as_mut(), by.as_mut()].into_iter().flatten() {
            w.evict(now);
        }
        let fits =
            ev.as_ref().is_none_or(|w| w.fits(events)) && by.as_ref().is_none_or(|w| w.fits(bytes));
        if fits {
            if let Some(w) = ev.as_mut() {
                w.take(now, events);
            }
            if let Some(w) = by.as_mut() {
                w.take(now, bytes);
            }
        }
        fits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_seeded_and_follow_the_shares() {
        let cfg = FaultConfig {
            seed: 7,
            error_429: 0.25,
            drop: 0.25,
            ..Default::default()
        };
        let a = FaultInjector::new(cfg.clone());
        let b = FaultInjector::new(cfg);
        let seq_a: Vec<_> = (0..1000).map(|_| a.draw()).collect();
        let seq_b: Vec<_> = (0..1000).map(|_| b.draw()).collect();
        assert_eq!(seq_a, seq_b);
        let n429 = seq_a.iter().filter(|f| **f == Fault::Status429).count();
        let ndrop = seq_a.iter().filter(|f| **f == Fault::Drop).count();
        assert!((200..300).contains(&n429), "{n429}");
        assert!((200..300).contains(&ndrop), "{ndrop}");
        assert_eq!(
            FaultInjector::new(FaultConfig::default()).draw(),
            Fault::None
        );
    }

    #[test]
    fn rolling_window_refuses_then_recovers() {
        let rl = RateLimiter::new([(
            "p".to_string(),
            RateLimitConfig {
                events_per_second: Some(100),
                bytes_per_minute: None,
            },
        )]);
        assert!(rl.admit("p", 60, 0));
        assert!(rl.admit("p", 40, 0));
        assert!(!rl.admit("p", 1, 0));
        assert!(rl.admit("other", 1_000_000, 0));
        std::thread::sleep(Duration::from_millis(1050));
        assert!(rl.admit("p", 100, 0));
    }
}
