//! One lease per node, and the node's registration under it.
//!
//! Liveness is etcd's: a node is in the cluster while its lease lives. The lease is kept alive
//! every TTL/3. If no keep-alive has succeeded for TTL/2 the node reports itself
//! [`Liveness::Lost`] — the kill switch: whoever runs syncs on this node stops them all at once,
//! while the lease (and so every claim on it) still has at least TTL/2 to live, so no other node
//! can have claimed those syncs yet. Once etcd answers again, the node revokes the old lease
//! (its claims vanish now rather than at expiry), takes a new one and registers again.
//!
//! "Succeeded" is counted from when the keep-alive was *sent*: etcd extends the lease from when
//! it receives it, which is later, so the node always trips before its lease can end.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use etcd_client::{Client, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

use super::connection::store_error;
use super::keys;
use crate::run_manager::SlotUse;
use crate::store::StoreError;

/// Whether this node may act as a member of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The node holds this lease and renewed it less than TTL/2 ago.
    Live { lease: i64 },
    /// No lease the node can trust: not registered yet, or the kill switch tripped. Everything
    /// that runs a sync must stop; nothing may be claimed.
    Lost,
}

impl Liveness {
    pub fn lease(self) -> Option<i64> {
        match self {
            Liveness::Live { lease } => Some(lease),
            Liveness::Lost => None,
        }
    }
}

/// What `/ferry/v1/nodes/<node>` holds: how to reach the node and how much it can take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    /// Where peers and clients reach the node's gRPC port.
    pub address: String,
    /// Relative weight for placement (e.g. how many syncs it can run at once); 0 takes none.
    pub capacity: u32,
    /// How many syncs it runs now (each in one of its run slots).
    pub load: u32,
    /// How many triggered runs wait for one of its run slots.
    #[serde(default)]
    pub waiting: u32,
    pub lease: i64,
    pub registered_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct MembershipSettings {
    pub node_id: String,
    pub address: String,
    pub capacity: u32,
    /// The lease's time to live (whole seconds; etcd rounds nothing down for us).
    pub ttl: Duration,
}

impl MembershipSettings {
    pub fn new(node_id: impl Into<String>, address: impl Into<String>, capacity: u32) -> Self {
        Self {
            node_id: node_id.into(),
            address: address.into(),
            capacity,
            ttl: Duration::from_secs(10),
        }
    }

    pub fn keep_alive_every(&self) -> Duration {
        self.ttl / 3
    }

    /// How long without a successful keep-alive before the kill switch trips.
    pub fn lost_after(&self) -> Duration {
        self.ttl / 2
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX)
    }

    fn validate(&self) -> Result<(), StoreError> {
        keys::check_node_id(&self.node_id)?;
        if self.ttl < Duration::from_secs(2) || self.ttl.subsec_nanos() != 0 {
            return Err(StoreError::Invalid(format!(
                "lease TTL {:?}: must be whole seconds, at least 2",
                self.ttl
            )));
        }
        Ok(())
    }
}

/// What a node reports as its load: runs going and runs waiting for a slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeLoad {
    pub running: u32,
    pub waiting: u32,
}

impl From<SlotUse> for NodeLoad {
    fn from(used: SlotUse) -> Self {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            running: count(used.running),
            waiting: count(used.waiting),
        }
    }
}

/// This node's membership: a background task holding the lease.
pub struct Membership {
    liveness: watch::Receiver<Liveness>,
    load: watch::Sender<NodeLoad>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Membership {
    /// Starts holding a lease and registering under it, in the background: the node is
    /// [`Liveness::Lost`] until the first registration lands (see [`Self::wait_live`]).
    pub fn start(client: Client, settings: MembershipSettings) -> Result<Self, StoreError> {
        settings.validate()?;
        let (liveness_tx, liveness) = watch::channel(Liveness::Lost);
        let (load, load_rx) = watch::channel(NodeLoad::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let holder = LeaseHolder {
            client: client.clone(),
            settings: settings.clone(),
            liveness: liveness_tx,
            load: load_rx.clone(),
            shutdown: shutdown_rx,
        };
        let publisher = tokio::spawn(publish_load(client, settings, liveness.clone(), load_rx));
        let holder = tokio::spawn(holder.run());
        Ok(Self {
            liveness,
            load,
            shutdown,
            tasks: vec![holder, publisher],
        })
    }

    /// Follows this node's liveness: [`Liveness::Lost`] is the kill switch.
    pub fn liveness(&self) -> watch::Receiver<Liveness> {
        self.liveness.clone()
    }

    /// Waits until the node is registered; its lease, or `None` after `within`.
    pub async fn wait_live(&self, within: Duration) -> Option<i64> {
        let mut rx = self.liveness.clone();
        let live = tokio::time::timeout(within, rx.wait_for(|l| l.lease().is_some()))
            .await
            .ok()?
            .ok()?;
        live.lease()
    }

    /// Publishes how many syncs this node runs and how many wait (in its node record).
    pub fn set_load(&self, load: NodeLoad) {
        self.load.send_replace(load);
    }

    /// Publishes the run manager's slot use as it changes, until either side goes away.
    pub fn follow_load(&self, mut slots: watch::Receiver<SlotUse>) {
        let load = self.load.clone();
        tokio::spawn(async move {
            loop {
                let now = NodeLoad::from(*slots.borrow_and_update());
                if load.send(now).is_err() {
                    return;
                }
                if slots.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Leaves the cluster: stops renewing and revokes the lease, so the node's record and
    /// every claim it holds vanish now instead of at expiry. Call it after the node's syncs
    /// stopped.
    pub async fn leave(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // Dropped without `leave`: stop renewing; the lease expires on its own.
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// All registered (live) nodes.
pub async fn list_nodes(client: &Client) -> Result<Vec<NodeRecord>, StoreError> {
    let resp = client
        .clone()
        .get(keys::NODES, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| store_error("listing nodes", e))?;
    resp.kvs()
        .iter()
        .map(|kv| {
            serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                reason: e.to_string(),
            })
        })
        .collect()
}

struct LeaseHolder {
    client: Client,
    settings: MembershipSettings,
    liveness: watch::Sender<Liveness>,
    load: watch::Receiver<NodeLoad>,
    shutdown: watch::Receiver<bool>,
}

/// Why holding a lease ended.
enum Ended {
    Shutdown,
    Lost(String),
}

impl LeaseHolder {
    async fn run(mut self) {
        let mut previous: Option<i64> = None;
        loop {
            if *self.shutdown.borrow() {
                break;
            }
            let asked_at = Instant::now();
            let lease = match self.register(previous).await {
                Ok(lease) => lease,
                Err(e) => {
                    tracing::warn!(node = %self.settings.node_id, error = %e, "cannot register with etcd; retrying");
                    let retry = self.settings.keep_alive_every().min(Duration::from_secs(1));
                    if self.sleep_or_shutdown(retry).await {
                        break;
                    }
                    continue;
                }
            };
            previous = Some(lease);
            tracing::info!(node = %self.settings.node_id, lease, "registered");
            self.liveness.send_replace(Liveness::Live { lease });
            match self.keep_alive(lease, asked_at).await {
                Ended::Shutdown => break,
                Ended::Lost(reason) => {
                    self.liveness.send_replace(Liveness::Lost);
                    tracing::error!(node = %self.settings.node_id, lease, %reason, "kill switch: lease lost; stopping this node's syncs");
                }
            }
        }
        self.liveness.send_replace(Liveness::Lost);
        if let Some(lease) = previous {
            let revoke = self.client.lease_revoke(lease);
            match tokio::time::timeout(Duration::from_secs(2), revoke).await {
                Ok(Ok(_)) => {
                    tracing::info!(node = %self.settings.node_id, lease, "left the cluster")
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease, error = %e, "lease not revoked on leaving; it expires on its own")
                }
                Err(_) => tracing::warn!(
                    lease,
                    "lease not revoked on leaving (etcd did not answer); it expires on its own"
                ),
            }
        }
    }

    /// True if shutdown was asked for while sleeping.
    async fn sleep_or_shutdown(&mut self, pause: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(pause) => *self.shutdown.borrow(),
            _ = self.shutdown.changed() => true,
        }
    }

    /// A new lease and the node record on it. The previous lease, if any, is revoked first:
    /// the node stopped its syncs when it lost it, so its claims may go now.
    async fn register(&mut self, previous: Option<i64>) -> Result<i64, StoreError> {
        if let Some(old) = previous {
            match self.client.lease_revoke(old).await {
                Ok(_) => {}
                // Already expired: etcd no longer knows it.
                Err(e) if e.to_string().contains("lease not found") => {}
                Err(e) => return Err(store_error("revoking the previous lease", e)),
            }
        }
        let grant = self
            .client
            .lease_grant(self.settings.ttl_secs(), None)
            .await
            .map_err(|e| store_error("granting a lease", e))?;
        let lease = grant.id();
        let record = NodeRecord {
            node_id: self.settings.node_id.clone(),
            address: self.settings.address.clone(),
            capacity: self.settings.capacity,
            load: self.load.borrow().running,
            waiting: self.load.borrow().waiting,
            lease,
            registered_at: Utc::now(),
        };
        put_record(&mut self.client, &record).await?;
        Ok(lease)
    }

    /// Renews `lease` every TTL/3 until shutdown, the lease's end, or TTL/2 without a
    /// renewal. `granted_at` is no later than when the lease was asked for.
    async fn keep_alive(&mut self, lease: i64, granted_at: Instant) -> Ended {
        let lost_after = self.settings.lost_after();
        let mut renewed_at = granted_at;
        let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
        // When each keep-alive in flight was sent; etcd answers them in order.
        let mut in_flight: VecDeque<Instant> = VecDeque::new();
        let mut tick = tokio::time::interval(self.settings.keep_alive_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = renewed_at + lost_after;
            tokio::select! {
                _ = self.shutdown.changed() => return Ended::Shutdown,
                _ = tokio::time::sleep_until(deadline) => {
                    return Ended::Lost(format!("no keep-alive succeeded for {lost_after:?}"));
                }
                _ = tick.tick() => {
                    let sent = Instant::now();
                    match stream.as_mut() {
                        Some((keeper, _)) => match timeout_at(deadline, keeper.keep_alive()).await {
                            Ok(Ok(())) => in_flight.push_back(sent),
                            _ => {
                                stream = None;
                                in_flight.clear();
                            }
                        },
                        // (Re)open the stream; its first answer is a renewal.
                        None => match timeout_at(deadline, self.client.lease_keep_alive(lease)).await {
                            Ok(Ok(opened)) => {
                                renewed_at = renewed_at.max(sent);
                                stream = Some(opened);
                            }
                            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) if e.contains("not found") => {
                                return Ended::Lost(format!("etcd no longer knows lease {lease}"));
                            }
                            Ok(Err(e)) => tracing::debug!(lease, error = %e, "keep-alive stream not opened"),
                            Err(_) => {} // the deadline passed: the next turn trips the switch
                        },
                    }
                }
                message = next_message(&mut stream) => match message {
                    Ok(Some(resp)) => {
                        let sent = in_flight.pop_front();
                        if resp.ttl() <= 0 {
                            return Ended::Lost(format!("etcd reports lease {lease} expired"));
                        }
                        if let Some(sent) = sent {
                            renewed_at = renewed_at.max(sent);
                        }
                    }
                    Ok(None) | Err(_) => {
                        stream = None;
                        in_flight.clear();
                    }
                },
            }
        }
    }
}

/// The next keep-alive answer; never resolves without a stream.
async fn next_message(
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<Option<etcd_client::LeaseKeepAliveResponse>, etcd_client::Error> {
    match stream {
        Some((_, answers)) => answers.message().await,
        None => std::future::pending().await,
    }
}

async fn put_record(client: &mut Client, record: &NodeRecord) -> Result<(), StoreError> {
    let value = serde_json::to_vec(record)
        .map_err(|e| StoreError::Backend(format!("encoding the node record: {e}")))?;
    client
        .put(
            keys::node(&record.node_id),
            value,
            Some(PutOptions::new().with_lease(record.lease)),
        )
        .await
        .map_err(|e| store_error("registering the node", e))
        .map(drop)
}

/// Rewrites the node record when its load changes (registration writes the load it has).
async fn publish_load(
    mut client: Client,
    settings: MembershipSettings,
    mut liveness: watch::Receiver<Liveness>,
    mut load: watch::Receiver<NodeLoad>,
) {
    loop {
        tokio::select! {
            changed = load.changed() => if changed.is_err() { return },
            changed = liveness.changed() => if changed.is_err() { return },
        }
        let Some(lease) = liveness.borrow_and_update().lease() else {
            continue;
        };
        let current = *load.borrow_and_update();
        let key = keys::node(&settings.node_id);
        let record = match client.get(key.as_str(), None).await {
            Ok(resp) => resp
                .kvs()
                .first()
                .and_then(|kv| serde_json::from_slice::<NodeRecord>(kv.value()).ok()),
            Err(_) => None,
        };
        match record {
            Some(mut record)
                if record.lease == lease
                    && (record.load, record.waiting) != (current.running, current.waiting) =>
            {
                record.load = current.running;
                record.waiting = current.waiting;
                if let Err(e) = put_record(&mut client, &record).await {
                    tracing::debug!(error = %e, "node load not published; the next change retries");
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use super::*;
    use crate::cluster::connection::testing;

    fn settings(node: &str, ttl_secs: u64) -> MembershipSettings {
        let mut s = MembershipSettings::new(node, format!("127.0.0.1:7{node}"), 4);
        s.ttl = Duration::from_secs(ttl_secs);
        s
    }

    async fn record_of(client: &Client, node: &str) -> Option<NodeRecord> {
        list_nodes(client)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.node_id == node)
    }

    async fn wait_lost(liveness: &mut watch::Receiver<Liveness>, within: Duration) -> Duration {
        let start = StdInstant::now();
        tokio::time::timeout(within, liveness.wait_for(|l| *l == Liveness::Lost))
            .await
            .expect("the kill switch did not trip in time")
            .unwrap();
        start.elapsed()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn registration_is_visible_load_is_published_and_leaving_removes_it() {
        let Some((_etcd, etcd_settings)) = testing::start() else {
            return;
        };
        let client = etcd_settings.connect().await.unwrap();
        let member = Membership::start(client.clone(), settings("11", 4)).unwrap();
        let lease = member.wait_live(Duration::from_secs(5)).await.unwrap();
        let record = record_of(&client, "11").await.unwrap();
        assert_eq!(
            (
                record.address.as_str(),
                record.capacity,
                record.lease,
                record.load
            ),
            ("127.0.0.1:711", 4, lease, 0)
        );

        member.set_load(NodeLoad {
            running: 3,
            waiting: 2,
        });
        let mut load = (0, 0);
        for _ in 0..50 {
            let record = record_of(&client, "11").await.unwrap();
            load = (record.load, record.waiting);
            if load == (3, 2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(load, (3, 2));

        // The run manager's slot use, followed as it changes.
        let (slots, slot_use) = watch::channel(SlotUse {
            running: 1,
            waiting: 4,
        });
        member.follow_load(slot_use);
        let published = |want: (u32, u32)| {
            let client = client.clone();
            async move {
                for _ in 0..50 {
                    let record = record_of(&client, "11").await.unwrap();
                    if (record.load, record.waiting) == want {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                false
            }
        };
        assert!(published((1, 4)).await);
        slots.send_replace(SlotUse {
            running: 2,
            waiting: 0,
        });
        assert!(published((2, 0)).await);

        member.leave().await;
        assert_eq!(
            record_of(&client, "11").await,
            None,
            "leaving revokes the lease at once"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_down_trips_the_kill_switch_before_the_lease_can_end_and_recovery_takes_a_new_lease(
    ) {
        let Some((mut etcd, etcd_settings)) = testing::start() else {
            return;
        };
        let client = etcd_settings.connect().await.unwrap();
        let s = settings("21", 3);
        let member = Membership::start(client.clone(), s.clone()).unwrap();
        let first = member.wait_live(Duration::from_secs(5)).await.unwrap();
        let mut liveness = member.liveness();
        // Let a few renewals happen, so the switch is measured from a steady state.
        tokio::time::sleep(s.ttl).await;
        assert_eq!(
            *liveness.borrow_and_update(),
            Liveness::Live { lease: first }
        );

        etcd.kill().unwrap();
        let tripped = wait_lost(&mut liveness, s.ttl).await;
        println!(
            "kill switch tripped {tripped:?} after etcd died (TTL {:?})",
            s.ttl
        );
        assert!(
            tripped <= s.lost_after() + Duration::from_millis(500),
            "tripped after {tripped:?}; the lease could end {:?} after the last renewal",
            s.ttl
        );

        etcd.restart().unwrap();
        let second = member.wait_live(Duration::from_secs(10)).await.unwrap();
        assert_ne!(second, first, "a new lease after recovery");
        assert_eq!(record_of(&client, "21").await.unwrap().lease, second);
        let old = client
            .clone()
            .lease_time_to_live(first, None)
            .await
            .unwrap();
        assert!(
            old.ttl() <= 0,
            "the old lease was revoked: ttl {}",
            old.ttl()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paused_etcd_trips_the_kill_switch_too() {
        let Some((etcd, etcd_settings)) = testing::start() else {
            return;
        };
        let client = etcd_settings.connect().await.unwrap();
        let s = settings("31", 2);
        let member = Membership::start(client.clone(), s.clone()).unwrap();
        let first = member.wait_live(Duration::from_secs(5)).await.unwrap();
        let mut liveness = member.liveness();
        liveness.borrow_and_update();

        // SIGSTOP: the connection stays open but nothing answers, as in a partition.
        etcd.pause().unwrap();
        let tripped = wait_lost(&mut liveness, s.ttl * 2).await;
        etcd.resume().unwrap();
        assert!(
            tripped <= s.lost_after() + Duration::from_millis(500),
            "tripped after {tripped:?}"
        );
        let second = member.wait_live(Duration::from_secs(10)).await.unwrap();
        assert_ne!(second, first);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_that_stops_renewing_vanishes_after_its_ttl() {
        let Some((_etcd, etcd_settings)) = testing::start() else {
            return;
        };
        let client = etcd_settings.connect().await.unwrap();
        let s = settings("41", 2);
        let member = Membership::start(client.clone(), s.clone()).unwrap();
        member.wait_live(Duration::from_secs(5)).await.unwrap();
        // The process "dies": renewals stop, nothing is revoked.
        drop(member);
        let died = StdInstant::now();
        assert!(record_of(&client, "41").await.is_some());
        while record_of(&client, "41").await.is_some() {
            assert!(
                died.elapsed() < s.ttl + Duration::from_secs(2),
                "the node record outlived its lease"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "node record gone {:?} after renewals stopped (TTL {:?})",
            died.elapsed(),
            s.ttl
        );
    }

    #[test]
    fn settings_are_checked() {
        let mut s = MembershipSettings::new("a/b", "x", 1);
        assert!(s.validate().is_err());
        s.node_id = "n".into();
        s.ttl = Duration::from_millis(2500);
        assert!(s.validate().is_err());
        s.ttl = Duration::from_secs(10);
        assert!(s.validate().is_ok());
        assert_eq!(
            (s.keep_alive_every(), s.lost_after()),
            (Duration::from_secs(10) / 3, Duration::from_secs(5))
        );
    }
}
