//! One node's links put together: its ractor_cluster `NodeServer` (the secret as cookie), the
//! `NodeLink` service for its port, its agent, the dialer, and [`RemoteAgents`], through which
//! the coordinator and the admin API reach other nodes' agents.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::Client;
use ferry_proto::cluster::v1::node_link_server::NodeLinkServer;
use parking_lot::Mutex;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Status;

use super::actor::{agent_of, AgentActor, AgentState, CANCEL_WAIT};
use super::messages::{AgentMsg, Answer, LiveRun};
use super::peers::{keep_linked, LinkTls};
use super::service::NodeLinkService;
use super::{ClusterSecret, LinkError, PeerRuns};
use crate::cluster::assigner::{all_assignments, Changes};
use crate::records::{RunRecord, SyncId};
use crate::schedule::TriggerReason;

/// The pump tasks of accepted links, closed when the node stops.
#[derive(Default)]
pub struct LinkTasks(Mutex<Vec<JoinHandle<()>>>);

impl LinkTasks {
    pub fn keep(&self, task: JoinHandle<()>) {
        let mut tasks = self.0.lock();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    fn close_all(&self) {
        for task in self.0.lock().drain(..) {
            task.abort();
        }
    }
}

/// A node's end of the cluster's links.
pub struct NodeLinks {
    node_id: String,
    secret: ClusterSecret,
    server: ActorRef<NodeServerMessage>,
    server_task: JoinHandle<()>,
    tasks: Arc<LinkTasks>,
    agent: Option<(ActorRef<AgentMsg>, JoinHandle<()>)>,
    dialer: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    tls: LinkTls,
}

impl NodeLinks {
    /// Starts the node's ractor_cluster server; no link is open yet.
    pub async fn start(node_id: &str, secret: ClusterSecret) -> Result<Self, LinkError> {
        let server = NodeServer::new(
            0,
            secret.expose().to_string(),
            node_id.to_string(),
            "ferry".to_string(),
            None,
            // Links are only the ones Ferry opens (not ractor_cluster's transitive dialing
            // of its own listener addresses).
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (server, server_task) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| LinkError::Start(e.to_string()))?;
        Ok(Self {
            node_id: node_id.to_string(),
            secret,
            server,
            server_task,
            tasks: Arc::default(),
            agent: None,
            dialer: None,
            tls: LinkTls::plain(),
        })
    }

    /// The `NodeLink` service, for the node's port.
    pub fn service(&self) -> NodeLinkServer<NodeLinkService> {
        NodeLinkServer::new(NodeLinkService {
            node_id: self.node_id.clone(),
            secret: self.secret.clone(),
            server: self.server.clone(),
            tasks: self.tasks.clone(),
        })
    }

    pub fn server(&self) -> &ActorRef<NodeServerMessage> {
        &self.server
    }

    /// Starts the node's agent, reachable by peers once linked.
    pub async fn start_agent(&mut self, state: AgentState) -> Result<(), LinkError> {
        let (agent, task) = Actor::spawn(None, AgentActor, state)
            .await
            .map_err(|e| LinkError::Start(e.to_string()))?;
        self.agent = Some((agent, task));
        Ok(())
    }

    /// Dials peers with TLS (when this node's port has it): set before [`Self::keep_linked`].
    pub fn dial_with(&mut self, tls: LinkTls) {
        self.tls = tls;
    }

    /// Keeps links to the live peers (checked every `every`).
    pub fn keep_linked(&mut self, client: Client, every: Duration) {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(keep_linked(
            client,
            self.node_id.clone(),
            self.server.clone(),
            self.secret.clone(),
            self.tls.clone(),
            every,
            stopped,
        ));
        self.dialer = Some((stop, task));
    }

    /// The peers with an authenticated session now.
    pub async fn linked_peers(&self) -> Vec<String> {
        let sessions = self
            .server
            .call(NodeServerMessage::GetSessions, Some(Duration::from_secs(2)))
            .await;
        match sessions {
            Ok(CallResult::Success(sessions)) => {
                let mut names: Vec<String> = sessions
                    .values()
                    .filter_map(|s| s.peer_name.as_ref())
                    .map(|n| n.name.split('@').next().unwrap_or_default().to_string())
                    .collect();
                names.sort();
                names
            }
            _ => Vec::new(),
        }
    }

    /// Closes every link and stops the agent and the server.
    pub async fn stop(mut self) {
        if let Some((stop, task)) = self.dialer.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        if let Some((agent, task)) = self.agent.take() {
            ractor::pg::leave(super::actor::AGENTS.to_string(), vec![agent.get_cell()]);
            agent.stop(None);
            let _ = task.await;
        }
        self.tasks.close_all();
        self.server.stop(None);
        let _ = (&mut self.server_task).await;
    }
}

impl Drop for NodeLinks {
    fn drop(&mut self) {
        if let Some((_, task)) = &self.dialer {
            task.abort();
        }
        self.tasks.close_all();
    }
}

/// Other nodes' agents, reached over the links (and this node's own, locally).
#[derive(Clone)]
pub struct RemoteAgents {
    node_id: String,
    /// Where `assigned_node` reads the coordinator's assignments.
    assignments: Option<Client>,
    /// How long to wait for a node's agent to appear (a link being opened).
    pub find_within: Duration,
    /// How long a call may take (CancelRun waits longer: the run must end).
    pub call_within: Duration,
}

impl RemoteAgents {
    pub fn new(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_string(),
            assignments: None,
            find_within: Duration::from_secs(3),
            call_within: Duration::from_secs(10),
        }
    }

    /// Reads assignments from this etcd (for [`PeerRuns::assigned_node`]).
    pub fn with_assignments(mut self, client: Client) -> Self {
        self.assignments = Some(client);
        self
    }

    fn find_now(&self, node: &str) -> Option<ActorRef<AgentMsg>> {
        agent_of(node, node != self.node_id)
    }

    /// The agent of `node`, waiting a little for its link.
    pub async fn agent(&self, node: &str) -> Result<ActorRef<AgentMsg>, Status> {
        let started = Instant::now();
        loop {
            if let Some(agent) = self.find_now(node) {
                return Ok(agent);
            }
            if started.elapsed() >= self.find_within {
                return Err(Status::unavailable(format!(
                    "node {node} cannot be reached: no link to it (is it running, and does it hold the cluster's secret?)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `message` to `node`'s agent if it is linked now; false if not.
    pub fn tell(&self, node: &str, message: AgentMsg) -> bool {
        match self.find_now(node) {
            Some(agent) => agent.cast(message).is_ok(),
            None => false,
        }
    }

    /// Tells the nodes a placement pass changed: a node that lost a sync stops its run at
    /// once, and every affected node re-reads its assignments. A node not linked now finds
    /// out at its next poll.
    pub fn tell_changes(&self, changes: &Changes) {
        let mut nodes: BTreeSet<&str> = BTreeSet::new();
        for (node, sync) in &changes.removed {
            self.tell(node, AgentMsg::Stop { sync: sync.clone() });
            nodes.insert(node);
        }
        nodes.extend(changes.added.iter().map(|(node, _)| node.as_str()));
        for node in nodes {
            if !self.tell(node, AgentMsg::Reconcile) {
                tracing::debug!(%node, "not linked: the node sees its new assignments at its next poll");
            }
        }
    }

    /// Calls `node`'s agent. `wait_for_link`: give a link being opened the full
    /// `find_within` (an action someone asked for), else at most a second, about one pass
    /// of the dialer (a progress read, which followers repeat every 0.5 s).
    async fn ask<T: Send + 'static>(
        &self,
        node: &str,
        within: Duration,
        wait_for_link: bool,
        message: impl FnOnce(ractor::RpcReplyPort<Answer<T>>) -> AgentMsg,
    ) -> Result<T, Status> {
        let agent = if wait_for_link {
            self.agent(node).await?
        } else {
            let mut brief = self.clone();
            brief.find_within = self.find_within.min(Duration::from_secs(1));
            brief.agent(node).await?
        };
        match agent.call(message, Some(within)).await {
            Ok(CallResult::Success(Ok(answer))) => Ok(answer),
            Ok(CallResult::Success(Err(refused))) => Err(refused.to_status()),
            Ok(CallResult::Timeout) => Err(Status::unavailable(format!(
                "node {node} did not answer within {within:?}"
            ))),
            Ok(CallResult::SenderError) | Err(_) => Err(Status::unavailable(format!(
                "node {node} cannot be reached: its link dropped"
            ))),
        }
    }
}

#[async_trait]
impl PeerRuns for RemoteAgents {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn assigned_node(&self, sync: &SyncId) -> Result<Option<String>, Status> {
        let Some(client) = &self.assignments else {
            return Err(Status::internal("this node does not read assignments"));
        };
        let all = all_assignments(client)
            .await
            .map_err(|e| crate::admin::errors::store(&e))?;
        Ok(all.get(sync).and_then(|nodes| {
            if nodes.contains(&self.node_id) {
                Some(self.node_id.clone())
            } else {
                nodes.iter().next().cloned()
            }
        }))
    }

    async fn start_run(
        &self,
        node: &str,
        sync: &SyncId,
        reason: TriggerReason,
    ) -> Result<String, Status> {
        let sync = sync.clone();
        self.ask(node, self.call_within, true, |reply| AgentMsg::StartRun {
            sync,
            reason,
            reply,
        })
        .await
    }

    async fn live_run(
        &self,
        node: &str,
        sync: &SyncId,
        run_id: &str,
    ) -> Result<Option<LiveRun>, Status> {
        let (sync, run_id) = (sync.clone(), run_id.to_string());
        self.ask(node, self.call_within, false, |reply| {
            AgentMsg::RunProgress {
                sync,
                run_id,
                reply,
            }
        })
        .await
    }

    async fn cancel_run(
        &self,
        node: &str,
        sync: &SyncId,
        run_id: &str,
    ) -> Result<Option<RunRecord>, Status> {
        let (sync, run_id) = (sync.clone(), run_id.to_string());
        self.ask(node, CANCEL_WAIT + self.call_within, true, |reply| {
            AgentMsg::CancelRun {
                sync,
                run_id,
                reply,
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use chrono::Utc;
    use tokio::sync::{oneshot, Notify};

    use super::*;
    use crate::admin::specs::SpecResolver;
    use crate::catalog::Catalog;
    use crate::cluster::link::peers::dial;
    use crate::embedded::{EmbeddedSettings, EmbeddedStore};
    use crate::run_manager::RunManager;
    use crate::runner::RunnerSettings;
    use crate::schedule::{ManualClock, Scheduler, SchedulerSettings, SyncTrigger};
    use crate::secrets::SecretBox;
    use crate::store::StateStore;

    const SECRET: &str = "links-test-secret-0123456789";

    /// A node's links, its agent (on an empty catalog) and its port serving `NodeLink`.
    struct TestNode {
        links: NodeLinks,
        addr: SocketAddr,
        reconciles: Arc<Notify>,
        _stop: oneshot::Sender<()>,
        _dir: tempfile::TempDir,
    }

    async fn node(id: &str, secret: &str) -> TestNode {
        serving(id, secret, None).await
    }

    /// [`node`], its port serving TLS when given.
    async fn serving(
        id: &str,
        secret: &str,
        tls: Option<crate::admin::tls::ServerTls>,
    ) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(EmbeddedStore::open_in(dir.path(), EmbeddedSettings::default()).unwrap());
        let catalog: Arc<dyn Catalog> = store.clone();
        let state: Arc<dyn StateStore> = store;
        let resolver = SpecResolver::new(catalog, SecretBox::from_bytes(&[7; 32]).unwrap());
        let runs = RunManager::new(
            resolver,
            state.clone(),
            RunnerSettings {
                node_id: id.into(),
                ..Default::default()
            },
            None,
        );
        let trigger: Arc<dyn SyncTrigger> = runs.clone();
        let scheduler = Scheduler::new(
            Arc::new(ManualClock::new(Utc::now())),
            trigger,
            state,
            SchedulerSettings::default(),
        );
        let mut links = NodeLinks::start(id, ClusterSecret::new(secret).unwrap())
            .await
            .unwrap();
        let reconciles = Arc::new(Notify::new());
        links
            .start_agent(AgentState {
                node_id: id.into(),
                runs,
                scheduler,
                reconcile: reconciles.clone(),
            })
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let router = tonic::transport::Server::builder().add_service(links.service());
        let stopped = async {
            let _ = stopped.await;
        };
        match tls {
            Some(tls) => {
                tokio::spawn(router.serve_with_incoming_shutdown(tls.incoming(listener), stopped))
            }
            None => tokio::spawn(router.serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                stopped,
            )),
        };
        TestNode {
            links,
            addr,
            reconciles,
            _stop: stop,
            _dir: dir,
        }
    }

    async fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(found) = check() {
                return found;
            }
            assert!(started.elapsed() < within, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn linked_over_grpc_a_peer_agent_takes_messages_and_answers_calls() {
        let a = node("node-a", SECRET).await;
        let b = node("node-b", SECRET).await;
        let secret = ClusterSecret::new(SECRET).unwrap();
        let link = dial(
            a.links.server(),
            "node-a",
            "node-b",
            &b.addr.to_string(),
            &secret,
            &LinkTls::plain(),
        )
        .await
        .unwrap();
        let started = Instant::now();
        let peers = loop {
            let peers = a.links.linked_peers().await;
            if !peers.is_empty() || started.elapsed() > Duration::from_secs(5) {
                break peers;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(peers, ["node-b"], "an authenticated session");

        // B's agent, as seen across the link (a remote member of its group).
        let remote = RemoteAgents::new("node-a");
        let agent = wait_for(
            "node-b's agent across the link",
            Duration::from_secs(5),
            || remote.find_now("node-b"),
        )
        .await;
        assert!(!agent.get_id().is_local(), "reached through the link");

        // A message: B reconciles at once.
        let woke = b.reconciles.notified();
        assert!(remote.tell("node-b", AgentMsg::Reconcile));
        tokio::time::timeout(Duration::from_secs(5), woke)
            .await
            .expect("node-b was told to reconcile");

        // Calls: refusals and answers come back typed.
        let missing = SyncId::new("acme", "missing").unwrap();
        let refused = remote
            .start_run("node-b", &missing, TriggerReason::Api)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
        assert!(refused.message().contains("missing"), "{refused:?}");
        assert_eq!(
            remote.live_run("node-b", &missing, "r1").await.unwrap(),
            None
        );
        let not_running = remote
            .cancel_run("node-b", &missing, "r1")
            .await
            .unwrap_err();
        assert_eq!(not_running.code(), tonic::Code::FailedPrecondition);
        assert!(not_running.message().contains("node-b"), "{not_running:?}");

        // The link drops: B can no longer be asked.
        link.abort();
        b.links.stop().await;
        wait_for("the remote agent to vanish", Duration::from_secs(5), || {
            remote.find_now("node-b").is_none().then_some(())
        })
        .await;
        let mut quick = remote.clone();
        quick.find_within = Duration::from_millis(100);
        let gone = quick
            .start_run("node-b", &missing, TriggerReason::Api)
            .await
            .unwrap_err();
        assert_eq!(gone.code(), tonic::Code::Unavailable);
        assert!(gone.message().contains("node-b"), "{gone:?}");
        a.links.stop().await;
    }

    /// How soon a node takes a newly assigned sync: told over a link at once, or found at its
    /// next 0.5 s poll. Printed; the push must win.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reconcile_told_over_the_link_beats_the_poll() {
        use crate::catalog::contract::{source, sync, tenant};
        use crate::cluster::agent::{AgentSettings, NodeAgent};
        use crate::cluster::connection::testing;
        use crate::cluster::etcd_store::testing::store_on_new_lease;
        use crate::cluster::etcd_store::EtcdStoreSettings;
        use crate::cluster::keys;

        let Some((_etcd, settings)) = testing::start() else {
            return;
        };
        let (store, mut client, _, live) =
            store_on_new_lease(&settings, EtcdStoreSettings::default(), 60).await;
        let store = Arc::new(store);
        let liveness = live.subscribe();
        const SAMPLES: usize = 12;
        store.create_tenant(&tenant("acme")).await.unwrap();
        store.create_source(&source("acme", "pg")).await.unwrap();
        for i in 0..SAMPLES {
            store
                .create_sync(&sync("acme", &format!("s{i}"), "pg"))
                .await
                .unwrap();
        }
        let catalog: Arc<dyn Catalog> = store.clone();
        let state: Arc<dyn StateStore> = store;
        let resolver = SpecResolver::new(catalog.clone(), SecretBox::from_bytes(&[7; 32]).unwrap());
        let runs = RunManager::new(
            resolver,
            state.clone(),
            RunnerSettings {
                node_id: "node-b".into(),
                ..Default::default()
            },
            None,
        );
        let trigger: Arc<dyn SyncTrigger> = runs.clone();
        let scheduler = Scheduler::new(
            Arc::new(ManualClock::new(Utc::now())),
            trigger,
            state,
            SchedulerSettings::default(),
        );
        let agent_settings = AgentSettings::new("node-b");
        assert_eq!(agent_settings.poll, Duration::from_millis(500));
        let agent = NodeAgent::start(
            client.clone(),
            agent_settings,
            catalog,
            runs.clone(),
            scheduler.clone(),
            liveness,
        )
        .unwrap();
        let mut b = NodeLinks::start("node-b", ClusterSecret::new(SECRET).unwrap())
            .await
            .unwrap();
        b.start_agent(AgentState {
            node_id: "node-b".into(),
            runs,
            scheduler,
            reconcile: agent.reconcile_handle(),
        })
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b_addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(b.service())
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let a = node("node-a", SECRET).await;
        let secret = ClusterSecret::new(SECRET).unwrap();
        let _link = dial(
            a.links.server(),
            "node-a",
            "node-b",
            &b_addr.to_string(),
            &secret,
            &LinkTls::plain(),
        )
        .await
        .unwrap();
        let coordinator = RemoteAgents::new("node-a");
        wait_for(
            "node-b's agent across the link",
            Duration::from_secs(5),
            || coordinator.find_now("node-b"),
        )
        .await;

        let assigned = agent.assigned();
        let (mut pushed, mut polled) = (Vec::new(), Vec::new());
        for i in 0..SAMPLES {
            let id = SyncId::new("acme", format!("s{i}")).unwrap();
            let written = Instant::now();
            client
                .put(keys::assignment("node-b", &id), "{}", None)
                .await
                .unwrap();
            let push = i % 2 == 0;
            if push {
                coordinator.tell_changes(&Changes {
                    added: vec![("node-b".into(), id.clone())],
                    removed: Vec::new(),
                });
            }
            let mut watching = assigned.clone();
            tokio::time::timeout(
                Duration::from_secs(5),
                watching.wait_for(|set| set.contains(&id)),
            )
            .await
            .expect("the node took the sync")
            .unwrap();
            let took = written.elapsed();
            if push {
                pushed.push(took)
            } else {
                polled.push(took)
            }
            // Spread the next write over the poll's period (each sample above ended just
            // after a poll or a push).
            tokio::time::sleep(Duration::from_millis((i as u64 * 173) % 500)).await;
        }
        pushed.sort();
        polled.sort();
        let median = |v: &[Duration]| v[v.len() / 2];
        println!(
            "assignment written → taken by the node: told over the link median {:?} (worst {:?}); 0.5 s poll median {:?} (worst {:?})",
            median(&pushed),
            pushed[pushed.len() - 1],
            median(&polled),
            polled[polled.len() - 1]
        );
        assert!(
            median(&pushed) < median(&polled),
            "pushed {pushed:?} vs polled {polled:?}"
        );
        agent.stop().await;
        b.stop().await;
    }

    /// The sessions a node's server holds now: (session number, accepted rather than dialed).
    async fn sessions(links: &NodeLinks) -> Vec<(u64, bool)> {
        match links
            .server()
            .call(NodeServerMessage::GetSessions, Some(Duration::from_secs(2)))
            .await
        {
            Ok(CallResult::Success(map)) => {
                let mut v: Vec<(u64, bool)> =
                    map.values().map(|s| (s.node_id, s.is_server)).collect();
                v.sort();
                v
            }
            _ => Vec::new(),
        }
    }

    async fn wait_sessions(
        what: &str,
        links: &NodeLinks,
        mut check: impl FnMut(&[(u64, bool)]) -> bool,
    ) -> Vec<(u64, bool)> {
        let started = Instant::now();
        loop {
            let now = sessions(links).await;
            if check(&now) {
                return now;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Following the membership records: one link per pair (the smaller id dials), dialed
    /// again when it drops, closed when the peer leaves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peers_from_etcd_get_one_link_redialed_when_dropped_and_closed_when_they_leave() {
        use crate::cluster::connection::testing;
        use crate::cluster::membership::{Membership, MembershipSettings};

        let Some((_etcd, settings)) = testing::start() else {
            return;
        };
        let client = settings.connect().await.unwrap();
        let mut a = node("node-a", SECRET).await;
        let mut b = node("node-b", SECRET).await;
        let mut members = Vec::new();
        for n in [&a, &b] {
            let id = n.links.node_id.clone();
            let m = Membership::start(
                client.clone(),
                MembershipSettings::new(id, n.addr.to_string(), 1),
            )
            .unwrap();
            m.wait_live(Duration::from_secs(5)).await.unwrap();
            members.push(m);
        }
        a.links
            .keep_linked(client.clone(), Duration::from_millis(200));
        b.links
            .keep_linked(client.clone(), Duration::from_millis(200));

        // node-a dialed, node-b accepted; node-b did not dial too.
        let first = wait_sessions("node-a's link", &a.links, |s| !s.is_empty()).await;
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(!first[0].1, "node-a dialed");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let at_b = sessions(&b.links).await;
        assert_eq!(at_b.len(), 1, "one link per pair: {at_b:?}");
        assert!(at_b[0].1, "node-b accepted it");

        // The link drops (node-b's end closes it): node-a dials again.
        b.links.tasks.close_all();
        let again = wait_sessions("a new link", &a.links, |s| {
            s.len() == 1 && s[0].0 != first[0].0
        })
        .await;
        assert!(!again[0].1);

        // node-b leaves the cluster (its port still answers): node-a closes the link and
        // does not dial it again.
        let b_member = members.pop().unwrap();
        b_member.leave().await;
        wait_sessions("the link to the departed node to close", &a.links, |s| {
            s.is_empty()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(sessions(&a.links).await.is_empty(), "not dialed again");
        a.links.stop().await;
        b.links.stop().await;
    }

    /// A private CA and a loopback certificate it signed: (CA PEM, the port's TLS).
    fn loopback_tls(dir: &std::path::Path) -> (String, crate::admin::tls::ServerTls) {
        let ca = ferry_tests::postgres::TestCa::new("links test CA").unwrap();
        let (cert, key) = ca.server_cert(&["localhost", "127.0.0.1"]).unwrap();
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        let tls = crate::admin::tls::ServerTls::from_files(&cert_file, &key_file).unwrap();
        (ca.pem, tls)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_links_verify_the_peer_and_tls_and_plain_nodes_do_not_link() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, tls) = loopback_tls(dir.path());
        let (other_ca, _) = loopback_tls(&{
            let other = dir.path().join("other");
            std::fs::create_dir(&other).unwrap();
            other
        });
        let a = node("node-a", SECRET).await;
        let b = serving("node-b", SECRET, Some(tls)).await;
        let secret = ClusterSecret::new(SECRET).unwrap();
        let at_b = format!("https://127.0.0.1:{}", b.addr.port());
        let trusting = LinkTls::verified_by(Some(ca.into_bytes()));

        // A certificate from another CA: no link, the peer named.
        let untrusted = LinkTls::verified_by(Some(other_ca.into_bytes()));
        let refused = dial(
            a.links.server(),
            "node-a",
            "node-b",
            &at_b,
            &secret,
            &untrusted,
        )
        .await
        .unwrap_err();
        assert!(matches!(refused, LinkError::Dial { .. }), "{refused}");
        assert!(refused.to_string().contains("node-b"), "{refused}");

        // TLS and plain do not mix, whichever side has TLS.
        let plain_to_tls = dial(
            a.links.server(),
            "node-a",
            "node-b",
            &at_b,
            &secret,
            &LinkTls::plain(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(plain_to_tls, LinkError::Mismatch { .. }),
            "{plain_to_tls}"
        );
        let tls_to_plain = dial(
            b.links.server(),
            "node-b",
            "node-a",
            &a.addr.to_string(),
            &secret,
            &trusting,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(tls_to_plain, LinkError::Mismatch { .. }),
            "{tls_to_plain}"
        );
        assert!(
            tls_to_plain.to_string().contains("node-a"),
            "{tls_to_plain}"
        );

        // The right CA: a link, and ractor_cluster's session over it (the secret as cookie).
        let wrong = ClusterSecret::new("not-the-cluster-secret-42").unwrap();
        let refused = dial(
            a.links.server(),
            "node-a",
            "node-b",
            &at_b,
            &wrong,
            &trusting,
        )
        .await
        .unwrap_err();
        assert!(matches!(refused, LinkError::Refused { .. }), "{refused}");
        let link = dial(
            a.links.server(),
            "node-a",
            "node-b",
            &at_b,
            &secret,
            &trusting,
        )
        .await
        .unwrap();
        let started = Instant::now();
        while a.links.linked_peers().await.is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no session over the TLS link"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(a.links.linked_peers().await, ["node-b"]);
        link.abort();
        a.links.stop().await;
        b.links.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_secret_gets_no_link() {
        let a = node("node-a", SECRET).await;
        let b = node("node-b", SECRET).await;

        // The gRPC call is refused before any ractor byte flows.
        let wrong = ClusterSecret::new("not-the-cluster-secret-42").unwrap();
        let refused = dial(
            a.links.server(),
            "node-a",
            "node-b",
            &b.addr.to_string(),
            &wrong,
            &LinkTls::plain(),
        )
        .await
        .unwrap_err();
        assert!(matches!(refused, LinkError::Refused { .. }), "{refused}");
        assert!(refused.to_string().contains("node-b"), "{refused}");

        // A node whose own cookie differs, even if it got the header right, fails
        // ractor_cluster's handshake: no session, and the link closes.
        let c = node("node-c", "another-cluster-secret-99").await;
        let right = ClusterSecret::new(SECRET).unwrap();
        let link = dial(
            c.links.server(),
            "node-c",
            "node-b",
            &b.addr.to_string(),
            &right,
            &LinkTls::plain(),
        )
        .await
        .unwrap();
        wait_for("the refused link to close", Duration::from_secs(5), || {
            link.is_finished().then_some(())
        })
        .await;
        assert!(c.links.linked_peers().await.is_empty());
        assert!(b.links.linked_peers().await.is_empty());
        assert!(RemoteAgents::new("node-c").find_now("node-b").is_none());
    }
}
