//! A tenant's send budget on one node: every batch waits here for its records' share of the
//! budget before it is sent (DESIGN.md: Mixpanel's rate limit is per project, so all of a
//! tenant's runs share one budget).
//!
//! - [`RateLimiter`]: a token bucket whose rate can change while runs wait on it.
//! - [`SendGate`]: what one run's import shards hold (unlimited, or a tenant's limiter).
//! - [`SendGates`]: the node's limiters, one per tenant, shared by all its runs there. With a
//!   cluster, the node's share of the budget follows the demand of the other nodes: a
//!   [`DemandListener`] (etcd, in the coordinator) publishes this node's demand and reports the
//!   others' back with [`SendGates::set_others`]. Without one the node has the whole budget.
//!
//! Why not `governor`: its quota is fixed when the limiter is built, so following a changing
//! share means rebuilding it (and forgetting the debt of a batch just sent, letting a fresh
//! burst through on every change); a batch larger than its burst is refused rather than
//! waited for; and its async waits run on `futures-timer`, outside tokio's clock, so tests
//! could not hold the rate with a paused clock. The bucket below is small and keeps its debt.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// The bucket holds at most this much of its rate: a short burst, then the steady rate.
const BURST: Duration = Duration::from_millis(200);

/// A node with any of a tenant's runs gets at least this share of the budget (and at least
/// one record per second), so it never stalls while the other nodes' demand is being read.
const FLOOR_SHARE: f64 = 0.01;

/// Token bucket with debt: a batch waits until the bucket holds `min(records, burst)` tokens
/// and then takes all it needs, so a batch larger than the burst still goes (the bucket goes
/// negative and the next batches wait the debt off). Waiting re-reads the rate, so a changed
/// share applies to batches already waiting. Dropping [`RateLimiter::admit`]'s future stops
/// waiting at once (a cancelled run, the kill switch) and takes nothing.
pub struct RateLimiter {
    bucket: Mutex<Bucket>,
    /// Wakes the batches waiting when the rate changes.
    changed: tokio::sync::Notify,
}

struct Bucket {
    /// Records per second (> 0).
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn burst(&self) -> f64 {
        (self.rate * BURST.as_secs_f64()).max(1.0)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst());
        self.at = now;
    }
}

impl RateLimiter {
    /// A limiter of `rate` records per second (at least one), starting with a full burst.
    pub fn new(rate: f64) -> Self {
        let rate = sane_rate(rate);
        let mut bucket = Bucket {
            rate,
            tokens: 0.0,
            at: Instant::now(),
        };
        bucket.tokens = bucket.burst();
        Self {
            bucket: Mutex::new(bucket),
            changed: tokio::sync::Notify::new(),
        }
    }

    pub fn rate(&self) -> f64 {
        self.bucket.lock().rate
    }

    /// Changes the rate from now on (what was earned so far counts at the old rate).
    pub fn set_rate(&self, rate: f64) {
        let mut b = self.bucket.lock();
        b.refill(Instant::now());
        b.rate = sane_rate(rate);
        b.tokens = b.tokens.min(b.burst());
        self.changed.notify_waiters();
    }

    /// Waits until `records` may be sent, and takes them.
    pub async fn admit(&self, records: u64) {
        let records = records as f64;
        loop {
            // Registered under the lock, so a rate change after it is never missed.
            let changed = self.changed.notified();
            let wait = {
                let mut b = self.bucket.lock();
                b.refill(Instant::now());
                let needed = records.min(b.burst());
                if b.tokens >= needed {
                    b.tokens -= records;
                    return;
                }
                Duration::from_secs_f64((needed - b.tokens) / b.rate)
            };
            // Woken, another batch may have taken the tokens: look again.
            tokio::select! {
                _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
                _ = changed => {}
            }
        }
    }
}

fn sane_rate(rate: f64) -> f64 {
    if rate.is_finite() {
        rate.max(1.0)
    } else {
        1.0
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate())
            .finish()
    }
}

/// What a run's import shards wait on before each batch: nothing, or its tenant's limiter on
/// this node.
#[derive(Clone, Default, Debug)]
pub struct SendGate(Option<Arc<RateLimiter>>);

impl SendGate {
    pub fn unlimited() -> Self {
        Self(None)
    }

    pub fn limited(limiter: Arc<RateLimiter>) -> Self {
        Self(Some(limiter))
    }

    pub fn limiter(&self) -> Option<&Arc<RateLimiter>> {
        self.0.as_ref()
    }

    /// Waits until `records` may be sent (at once when unlimited).
    pub async fn admit(&self, records: u64) {
        if let Some(limiter) = &self.0 {
            limiter.admit(records).await;
        }
    }
}

/// This node's rate for a tenant: the budget split in proportion to runs, `mine` of
/// `mine + others`, never below a small floor while this node has runs.
pub fn share_rate(budget: u32, mine: u32, others: u32) -> f64 {
    let budget = f64::from(budget);
    let floor = (budget * FLOOR_SHARE).max(1.0).min(budget);
    if mine == 0 {
        return budget.max(1.0);
    }
    let share = budget * f64::from(mine) / (f64::from(mine) + f64::from(others));
    share.max(floor)
}

/// Told when this node's demand (its runs per budgeted tenant) changed; reads it with
/// [`SendGates::local_demand`]. The cluster's implementation publishes it and reports the
/// other nodes' demand back through [`SendGates::set_others`].
pub trait DemandListener: Send + Sync {
    fn demand_changed(&self);
}

/// One node's send budgets: a limiter per budgeted tenant, shared by all its runs here.
/// Cloning shares the same limiters.
#[derive(Clone, Default)]
pub struct SendGates {
    inner: Arc<Registry>,
}

#[derive(Default)]
struct Registry {
    tenants: Mutex<HashMap<String, TenantBudget>>,
    listener: Mutex<Option<Arc<dyn DemandListener>>>,
}

struct TenantBudget {
    budget: u32,
    /// This node's runs of the tenant.
    runs: u32,
    /// The other nodes' runs of the tenant, as last read from the cluster.
    others: u32,
    limiter: Arc<RateLimiter>,
}

impl TenantBudget {
    fn apply(&self) {
        self.limiter
            .set_rate(share_rate(self.budget, self.runs, self.others));
    }
}

impl fmt::Debug for SendGates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendGates")
            .field("tenants", &self.local_demand())
            .finish()
    }
}

impl SendGates {
    /// The cluster's listener; without one this node has each tenant's whole budget.
    pub fn set_listener(&self, listener: Arc<dyn DemandListener>) {
        *self.inner.listener.lock() = Some(listener);
    }

    /// A run of `tenant` starts here: its gate, counted as demand until the returned value is
    /// dropped. `budget` is the tenant's send budget (records per second); `None` is unlimited
    /// and counts nothing.
    pub fn join(&self, tenant: &str, budget: Option<u32>) -> TenantRun {
        let Some(budget) = budget.filter(|b| *b > 0) else {
            return TenantRun {
                gates: None,
                tenant: tenant.to_owned(),
                gate: SendGate::unlimited(),
            };
        };
        let gate = {
            let mut tenants = self.inner.tenants.lock();
            let entry = tenants
                .entry(tenant.to_owned())
                .or_insert_with(|| TenantBudget {
                    budget,
                    runs: 0,
                    others: 0,
                    limiter: Arc::new(RateLimiter::new(f64::from(budget))),
                });
            entry.budget = budget;
            entry.runs += 1;
            entry.apply();
            SendGate::limited(entry.limiter.clone())
        };
        self.notify();
        TenantRun {
            gates: Some(self.clone()),
            tenant: tenant.to_owned(),
            gate,
        }
    }

    fn leave(&self, tenant: &str) {
        {
            let mut tenants = self.inner.tenants.lock();
            if let Some(entry) = tenants.get_mut(tenant) {
                entry.runs = entry.runs.saturating_sub(1);
                if entry.runs == 0 {
                    tenants.remove(tenant);
                } else {
                    entry.apply();
                }
            }
        }
        self.notify();
    }

    fn notify(&self) {
        let listener = self.inner.listener.lock().clone();
        if let Some(listener) = listener {
            listener.demand_changed();
        }
    }

    /// This node's runs per budgeted tenant (tenants with none are absent).
    pub fn local_demand(&self) -> Vec<(String, u32)> {
        let mut demand: Vec<(String, u32)> = self
            .inner
            .tenants
            .lock()
            .iter()
            .map(|(t, e)| (t.clone(), e.runs))
            .collect();
        demand.sort();
        demand
    }

    /// The other nodes run `others` of `tenant`'s runs: this node's limiter takes its share.
    pub fn set_others(&self, tenant: &str, others: u32) {
        if let Some(entry) = self.inner.tenants.lock().get_mut(tenant) {
            if entry.others != others {
                entry.others = others;
                entry.apply();
            }
        }
    }

    /// The rate this node sends `tenant`'s records at now (`None`: no budgeted run here).
    pub fn rate(&self, tenant: &str) -> Option<f64> {
        self.inner
            .tenants
            .lock()
            .get(tenant)
            .map(|e| e.limiter.rate())
    }
}

/// One run's membership in its tenant's budget on this node; dropping it ends the run's
/// demand (whatever way the run ends).
pub struct TenantRun {
    gates: Option<SendGates>,
    tenant: String,
    gate: SendGate,
}

impl TenantRun {
    pub fn gate(&self) -> SendGate {
        self.gate.clone()
    }
}

impl Drop for TenantRun {
    fn drop(&mut self) {
        if let Some(gates) = self.gates.take() {
            gates.leave(&self.tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Sends `batch`-record batches through `limiter` from `senders` tasks for `secs` seconds
    /// of (paused, auto-advancing) tokio time; the records admitted.
    async fn admitted_in(limiter: Arc<RateLimiter>, senders: usize, batch: u64, secs: u64) -> u64 {
        let sent = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for _ in 0..senders {
            let (limiter, sent) = (limiter.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    limiter.admit(batch).await;
                    if Instant::now() >= deadline {
                        return;
                    }
                    sent.fetch_add(batch, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        sent.load(Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate_over_seconds_with_many_senders() {
        let limiter = Arc::new(RateLimiter::new(2000.0));
        let sent = admitted_in(limiter, 4, 50, 5).await;
        // 5 s at 2000/s plus the 200 ms burst: 10,400; never more, and not much less.
        assert!(sent <= 10_400, "{sent}");
        assert!(sent >= 9_800, "{sent}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_larger_than_the_burst_goes_and_the_next_waits_its_debt() {
        // Burst 200 ms of 1000/s = 200 records; a 2000-record batch goes at once...
        let limiter = RateLimiter::new(1000.0);
        let start = Instant::now();
        limiter.admit(2000).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        // ...and the next batch waits until the debt is paid and the burst earned again.
        limiter.admit(2000).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1990) && waited <= Duration::from_millis(2300),
            "{waited:?}"
        );
        // Over 10 s, batches of 2000 average the rate.
        let sent = admitted_in(Arc::new(RateLimiter::new(1000.0)), 2, 2000, 10).await;
        assert!((10_000..=12_000).contains(&sent), "{sent}");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_is_cancellable_and_a_cancelled_wait_takes_nothing() {
        let limiter = Arc::new(RateLimiter::new(10.0));
        limiter.admit(1000).await; // 100 s of debt
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                tokio::select! {
                    _ = limiter.admit(5) => "admitted",
                    _ = stopped.wait_for(|s| *s) => "cancelled",
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let asked = Instant::now();
        stop.send(true).unwrap();
        assert_eq!(waiting.await.unwrap(), "cancelled");
        assert!(asked.elapsed() < Duration::from_millis(10));
        // An aborted task stops waiting too.
        let task = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.admit(5).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        // The debt is what the first batch left (the cancelled ones took nothing): 998 records
        // at 10/s from t=0, so one more record goes at 99.9 s, 98.89 s from now.
        let start = Instant::now();
        limiter.admit(1).await;
        let waited = start.elapsed().as_secs_f64();
        assert!((98.8..=99.0).contains(&waited), "{waited}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_rate_applies_to_batches_already_waiting() {
        let limiter = Arc::new(RateLimiter::new(100.0));
        limiter.admit(1000).await; // 10 s of debt at 100/s
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                let start = Instant::now();
                limiter.admit(10).await;
                start.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // 880 records of debt left and 10 to earn: 0.89 s more at 1000/s, not 8.9 s at 100/s.
        limiter.set_rate(1000.0);
        let waited = waiting.await.unwrap();
        assert!(waited >= Duration::from_millis(1850), "{waited:?}");
        assert!(waited <= Duration::from_millis(1950), "{waited:?}");
    }

    #[test]
    fn the_budget_is_split_by_demand_with_a_floor() {
        assert_eq!(share_rate(3000, 1, 0), 3000.0);
        assert_eq!(share_rate(3000, 1, 2), 1000.0);
        assert_eq!(share_rate(3000, 2, 1), 2000.0);
        assert_eq!(share_rate(3000, 3, 9), 750.0);
        // Many other nodes: never below 1% of the budget, nor below one record a second.
        assert_eq!(share_rate(3000, 1, 999), 30.0);
        assert_eq!(share_rate(50, 1, 999), 1.0);
        assert_eq!(share_rate(1, 1, 5), 1.0);
        // The shares of nodes reading the same demand add up to the budget.
        let (a, b, c) = (
            share_rate(2000, 1, 4),
            share_rate(2000, 3, 2),
            share_rate(2000, 1, 4),
        );
        assert!((a + b + c - 2000.0).abs() < 1e-9);
    }

    struct Counting(AtomicU64);
    impl DemandListener for Counting {
        fn demand_changed(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn runs_of_a_tenant_share_one_limiter_and_their_demand_is_counted() {
        let gates = SendGates::default();
        let listener = Arc::new(Counting(AtomicU64::new(0)));
        gates.set_listener(listener.clone());
        let first = gates.join("acme", Some(1000));
        let second = gates.join("acme", Some(1000));
        let free = gates.join("other", None);
        assert!(free.gate().limiter().is_none(), "no budget: unlimited");
        assert!(Arc::ptr_eq(
            first.gate().limiter().unwrap(),
            second.gate().limiter().unwrap()
        ));
        assert_eq!(gates.local_demand(), vec![("acme".to_string(), 2)]);
        assert_eq!(listener.0.load(Ordering::Relaxed), 2);
        assert_eq!(gates.rate("acme"), Some(1000.0));
        // Two runs elsewhere: this node's two runs get half.
        gates.set_others("acme", 2);
        assert_eq!(gates.rate("acme"), Some(500.0));
        // Two senders on one shared limiter hold its rate together.
        let sent = admitted_in(first.gate().limiter().unwrap().clone(), 2, 100, 4).await;
        assert!((1900..=2200).contains(&sent), "{sent}");
        drop(second);
        assert_eq!(gates.rate("acme"), Some(1000.0 / 3.0));
        drop(first);
        assert_eq!(gates.local_demand(), vec![]);
        assert_eq!(gates.rate("acme"), None);
        assert_eq!(listener.0.load(Ordering::Relaxed), 4);
    }
}
