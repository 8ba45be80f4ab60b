//! The coordinator election, on etcd's election API, with the node's own lease.
//!
//! A node campaigns while it is live. Winning a campaign is not enough: etcd can report a win
//! for a candidate whose lease expired while it waited (the candidate's key vanished, and the
//! wait for the keys before it ended too). So leadership counts only after a keep-alive of the
//! lease succeeds *after* the win and etcd's `leader` names this node's key. A leader steps
//! down the moment its membership reports the lease lost (the kill switch), its key vanishes,
//! or it resigns. When a leader dies, its lease expires within one TTL, its key goes with it,
//! and the next candidate's campaign returns: a new leader within about one lease TTL.

use std::time::Duration;

use etcd_client::{Client, EventType, LeaderKey, ResignOptions, WatchOptions, WatchStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::connection::store_error;
use super::keys;
use super::membership::Liveness;
use crate::store::StoreError;

/// This node's part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Confirmed leader: `key` is its election key, attached to `lease`.
    Leader {
        lease: i64,
        key: String,
    },
}

impl Role {
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }
}

/// This node's candidacy: a background task campaigning whenever the node is live.
pub struct Election {
    role: watch::Receiver<Role>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Election {
    /// Campaigns as `node_id` with the lease `liveness` reports. `client` should be one without
    /// a request timeout ([`super::connection::EtcdSettings::connect_for_waiting`]): a campaign
    /// waits as long as another node leads.
    pub fn start(
        client: Client,
        node_id: impl Into<String>,
        liveness: watch::Receiver<Liveness>,
    ) -> Result<Self, StoreError> {
        let node_id = node_id.into();
        keys::check_node_id(&node_id)?;
        let (role_tx, role) = watch::channel(Role::Follower);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let candidate = Candidate {
            client,
            node_id,
            liveness,
            role: role_tx,
            shutdown: shutdown_rx,
        };
        Ok(Self {
            role,
            shutdown,
            task: Some(tokio::spawn(candidate.run())),
        })
    }

    /// Follows this node's role. Act as coordinator only while it is [`Role::Leader`].
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Steps down (resigning, so another node takes over at once) and stops campaigning.
    pub async fn resign(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The node id of the current leader, or `None` when there is none.
pub async fn current_leader(client: &Client) -> Result<Option<String>, StoreError> {
    match client.clone().leader(keys::ELECTION).await {
        Ok(resp) => Ok(resp
            .kv()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
        // etcd answers "election: no leader" as an error.
        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("no leader") => Ok(None),
        Err(e) => Err(store_error("asking for the coordinator", e)),
    }
}

/// Follows who leads, as etcd's `observe` reports each new leader (it waits while there is
/// none). The task ends when the receiver is dropped.
pub fn observe(client: Client) -> watch::Receiver<Option<String>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut client = client;
        loop {
            if tx.is_closed() {
                return;
            }
            match client.observe(keys::ELECTION).await {
                Ok(mut stream) => loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        message = stream.message() => match message {
                            Ok(Some(resp)) => {
                                let leader = resp
                                    .kv()
                                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
                                tx.send_replace(leader);
                            }
                            Ok(None) | Err(_) => break,
                        },
                    }
                },
                Err(e) => tracing::debug!(error = %e, "observing the election; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    rx
}

struct Candidate {
    client: Client,
    node_id: String,
    liveness: watch::Receiver<Liveness>,
    role: watch::Sender<Role>,
    shutdown: watch::Receiver<bool>,
}

/// Why a leader stopped leading.
#[derive(Debug)]
enum StepDown {
    Shutdown,
    LeaseLost,
    KeyGone,
}

const RETRY: Duration = Duration::from_millis(500);

impl Candidate {
    async fn run(mut self) {
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            let Some(lease) = self.live_lease().await else {
                return;
            };
            let leader = tokio::select! {
                won = self.client.campaign(keys::ELECTION, self.node_id.as_str(), lease) => won,
                // Dropping the campaign cancels it; etcd then withdraws the candidate.
                _ = self.liveness.changed() => continue,
                _ = self.shutdown.changed() => return,
            };
            let leader = match leader.map(|mut r| r.take_leader()) {
                Ok(Some(leader)) => leader,
                Ok(None) => {
                    tracing::warn!("a campaign returned no leader key");
                    self.pause().await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "campaign failed; retrying");
                    self.pause().await;
                    continue;
                }
            };
            let key = String::from_utf8_lossy(leader.key()).into_owned();
            match self.confirm(lease, &key).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(node = %self.node_id, lease, "won a campaign with a lease that had ended; campaigning again");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(node = %self.node_id, error = %e, "leadership not confirmed; campaigning again");
                    self.resign(&leader).await;
                    self.pause().await;
                    continue;
                }
            }
            tracing::info!(node = %self.node_id, lease, "coordinator: leading");
            self.role.send_replace(Role::Leader {
                lease,
                key: key.clone(),
            });
            let why = self.hold(lease, &leader).await;
            self.role.send_replace(Role::Follower);
            tracing::info!(node = %self.node_id, reason = ?why, "coordinator: stepped down");
            match why {
                StepDown::Shutdown => {
                    self.resign(&leader).await;
                    return;
                }
                // The lease (and so the key) is gone or going; a resign would only wait on etcd.
                StepDown::LeaseLost | StepDown::KeyGone => {}
            }
        }
    }

    /// Waits until the node is live; `None` on shutdown.
    async fn live_lease(&mut self) -> Option<i64> {
        loop {
            if let Some(lease) = self.liveness.borrow_and_update().lease() {
                return Some(lease);
            }
            tokio::select! {
                changed = self.liveness.changed() => if changed.is_err() { return None },
                _ = self.shutdown.changed() => return None,
            }
        }
    }

    async fn pause(&mut self) {
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = self.shutdown.changed() => {}
        }
    }

    /// The win counts only if the lease is still alive (a keep-alive succeeds now, after the
    /// win) and etcd names this candidate's key as the leader.
    async fn confirm(&mut self, lease: i64, key: &str) -> Result<bool, StoreError> {
        let renewed =
            tokio::time::timeout(Duration::from_secs(5), self.client.lease_keep_alive(lease)).await;
        match renewed {
            Ok(Ok(_)) => {}
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) if e.contains("not found") => {
                return Ok(false)
            }
            Ok(Err(e)) => return Err(store_error("confirming the lease after a win", e)),
            Err(_) => {
                return Err(StoreError::Unavailable(
                    "confirming the lease after a win: no answer".into(),
                ))
            }
        }
        let leader =
            tokio::time::timeout(Duration::from_secs(5), self.client.leader(keys::ELECTION))
                .await
                .map_err(|_| StoreError::Unavailable("asking for the leader: no answer".into()))?;
        match leader {
            Ok(resp) => Ok(resp.kv().is_some_and(|kv| kv.key() == key.as_bytes())),
            Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("no leader") => {
                Ok(false)
            }
            Err(e) => Err(store_error("asking for the leader", e)),
        }
    }

    /// Leads until shutdown, the lease's loss, or the key's deletion.
    async fn hold(&mut self, lease: i64, leader: &LeaderKey) -> StepDown {
        let mut watch: Option<WatchStream> = None;
        loop {
            if watch.is_none() {
                // Replaying from the key's creation: a deletion between the win and now is seen.
                let options = WatchOptions::new().with_start_revision(leader.rev());
                match self
                    .client
                    .watch(leader.key().to_vec(), Some(options))
                    .await
                {
                    Ok(stream) => watch = Some(stream),
                    Err(e) => tracing::debug!(error = %e, "watching the leader key; retrying"),
                }
            }
            tokio::select! {
                _ = self.shutdown.changed() => return StepDown::Shutdown,
                changed = self.liveness.changed() => {
                    if changed.is_err() || self.liveness.borrow_and_update().lease() != Some(lease) {
                        return StepDown::LeaseLost;
                    }
                }
                event = next_watch(&mut watch) => match event {
                    WatchEvent::Deleted => return StepDown::KeyGone,
                    WatchEvent::Other => {}
                    WatchEvent::Broken => {
                        watch = None;
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY) => {}
                            _ = self.shutdown.changed() => return StepDown::Shutdown,
                        }
                    }
                },
            }
        }
    }

    async fn resign(&mut self, leader: &LeaderKey) {
        let resign = self
            .client
            .resign(Some(ResignOptions::new().with_leader(leader.clone())));
        match tokio::time::timeout(Duration::from_secs(2), resign).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "resign failed; the key ends with the lease"),
            Err(_) => tracing::debug!("resign got no answer; the key ends with the lease"),
        }
    }
}

enum WatchEvent {
    Deleted,
    Other,
    Broken,
}

async fn next_watch(watch: &mut Option<WatchStream>) -> WatchEvent {
    let Some(stream) = watch else {
        return std::future::pending().await;
    };
    match stream.message().await {
        Ok(Some(resp)) if resp.canceled() => WatchEvent::Broken,
        Ok(Some(resp)) => {
            if resp
                .events()
                .iter()
                .any(|e| e.event_type() == EventType::Delete)
            {
                WatchEvent::Deleted
            } else {
                WatchEvent::Other
            }
        }
        Ok(None) | Err(_) => WatchEvent::Broken,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::cluster::connection::testing;
    use crate::cluster::membership::{Membership, MembershipSettings};

    async fn wait_role(role: &mut watch::Receiver<Role>, leader: bool, within: Duration) -> bool {
        tokio::time::timeout(within, role.wait_for(|r| r.is_leader() == leader))
            .await
            .is_ok()
    }

    /// A candidate on a lease the test controls (its liveness is whatever the test sends).
    async fn manual_candidate(
        settings: &crate::cluster::connection::EtcdSettings,
        node: &str,
        ttl: i64,
    ) -> (Election, i64, watch::Sender<Liveness>, Client) {
        let mut client = settings.connect_for_waiting().await.unwrap();
        let lease = client.lease_grant(ttl, None).await.unwrap().id();
        let (tx, rx) = watch::channel(Liveness::Live { lease });
        let election = Election::start(client.clone(), node, rx).unwrap();
        (election, lease, tx, client)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_leader_and_a_successor_within_a_lease_ttl_when_it_dies() {
        let Some((_etcd, settings)) = testing::start() else {
            return;
        };
        let ttl = Duration::from_secs(3);
        let client = settings.connect_for_waiting().await.unwrap();
        let start = |node: &str| {
            let mut s = MembershipSettings::new(node, "127.0.0.1:1", 1);
            s.ttl = ttl;
            let member = Membership::start(client.clone(), s).unwrap();
            let election = Election::start(client.clone(), node, member.liveness()).unwrap();
            (member, election)
        };
        let (member_a, election_a) = start("node-a");
        let mut role_a = election_a.role();
        assert!(wait_role(&mut role_a, true, Duration::from_secs(5)).await);
        let (member_b, election_b) = start("node-b");
        member_b.wait_live(Duration::from_secs(5)).await.unwrap();
        let mut role_b = election_b.role();
        assert!(
            !wait_role(&mut role_b, true, Duration::from_secs(1)).await,
            "two leaders"
        );
        assert_eq!(
            current_leader(&client).await.unwrap().as_deref(),
            Some("node-a")
        );
        let observed = observe(client.clone());

        // node-a dies: no more renewals, nothing revoked or resigned.
        drop(election_a);
        drop(member_a);
        let died = Instant::now();
        assert!(
            wait_role(&mut role_b, true, ttl + Duration::from_secs(2)).await,
            "no successor"
        );
        let takeover = died.elapsed();
        println!("coordinator takeover after the leader died: {takeover:?} (lease TTL {ttl:?})");
        // The lease ends within the TTL of its last renewal, plus etcd's 0.5 s expiry check;
        // the margin is for a loaded machine.
        assert!(
            takeover <= ttl + Duration::from_secs(2),
            "takeover took {takeover:?}"
        );
        assert_eq!(
            current_leader(&client).await.unwrap().as_deref(),
            Some("node-b")
        );
        let mut observed = observed;
        tokio::time::timeout(
            Duration::from_secs(2),
            observed.wait_for(|l| l.as_deref() == Some("node-b")),
        )
        .await
        .expect("observe reports the new leader")
        .unwrap();
        drop(member_b);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_kill_switch_steps_a_leader_down_and_resigning_hands_over_at_once() {
        let Some((_etcd, settings)) = testing::start() else {
            return;
        };
        let (a, lease_a, liveness_a, mut client) = manual_candidate(&settings, "node-a", 30).await;
        let mut role_a = a.role();
        assert!(wait_role(&mut role_a, true, Duration::from_secs(5)).await);
        let (b, _lease_b, _liveness_b, _) = manual_candidate(&settings, "node-b", 30).await;
        let mut role_b = b.role();

        liveness_a.send(Liveness::Lost).unwrap();
        assert!(
            wait_role(&mut role_a, false, Duration::from_millis(500)).await,
            "a leader whose lease is lost stops leading at once"
        );
        // Its key lives as long as its lease: nobody else leads yet.
        assert!(!wait_role(&mut role_b, true, Duration::from_millis(700)).await);

        // Back with the same lease, it campaigns again and is confirmed; then it resigns.
        liveness_a.send(Liveness::Live { lease: lease_a }).unwrap();
        assert!(wait_role(&mut role_a, true, Duration::from_secs(5)).await);
        let resigned = Instant::now();
        a.resign().await;
        assert!(wait_role(&mut role_b, true, Duration::from_secs(2)).await);
        println!("handover on resign: {:?}", resigned.elapsed());
        assert_eq!(
            current_leader(&client).await.unwrap().as_deref(),
            Some("node-b")
        );
        client.lease_revoke(lease_a).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_win_on_a_lease_that_expired_while_waiting_is_not_trusted() {
        let Some((_etcd, settings)) = testing::start() else {
            return;
        };
        let (a, _lease_a, _liveness_a, _) = manual_candidate(&settings, "node-a", 30).await;
        let mut role_a = a.role();
        assert!(wait_role(&mut role_a, true, Duration::from_secs(5)).await);
        // node-b waits in its campaign on a lease nobody renews, and its liveness still says
        // live (a membership that has not noticed yet).
        let (b, lease_b, _liveness_b, client) = manual_candidate(&settings, "node-b", 2).await;
        let mut role_b = b.role();
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let ttl = client
            .clone()
            .lease_time_to_live(lease_b, None)
            .await
            .unwrap()
            .ttl();
        assert!(ttl <= 0, "node-b's lease expired (ttl {ttl})");

        a.resign().await;
        assert!(
            !wait_role(&mut role_b, true, Duration::from_secs(2)).await,
            "a candidate whose lease ended must not lead"
        );
        assert_eq!(current_leader(&client).await.unwrap(), None);
    }
}
