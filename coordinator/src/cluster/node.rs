//! One node of a cluster, put together: its lease and registration ([`Membership`]), the state
//! store and catalog on etcd ([`EtcdStore`]), the admin API port (the same server a single
//! node runs, with scheduling left to the agent), its candidacy for coordinator ([`Election`])
//! with the placement loop ([`assigner::run`]), and the agent running what is assigned here
//! ([`NodeAgent`]), fronted by its remotable agent and linked to its peers over the same port
//! ([`super::link`]). `ferry node --listen ADDR --etcd URL,...` starts this.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::agent::{AgentSettings, NodeAgent};
use super::assigner;
use super::budget;
use super::connection::EtcdSettings;
use super::drain::{self, DrainRecord, Drained};
use super::election::{Election, Role};
use super::etcd_store::{EtcdStore, EtcdStoreSettings};
use super::link::actor::AgentState;
use super::link::peers::LinkTls;
use super::link::{ClusterSecret, LinkError, NodeLinks, Peers, RemoteAgents};
use super::membership::{Liveness, Membership, MembershipSettings};
use crate::admin::server::{start, RunningServer, ServeError, ServerConfig};
use crate::catalog::Catalog;
use crate::store::{StateStore, StoreError};

#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub etcd: EtcdSettings,
    /// The node's id, address (where peers and clients reach its port), capacity and lease TTL.
    pub membership: MembershipSettings,
    /// How often the coordinator re-places syncs.
    pub placement_tick: Duration,
    /// How often a node re-reads its assignments.
    pub agent_poll: Duration,
    /// How long to wait for the first registration before giving up (etcd unreachable).
    pub join_timeout: Duration,
    /// While draining, how long runs in progress may still take before they are cancelled
    /// (unless the drain request names its own).
    pub drain_timeout: Duration,
    /// The cluster's shared secret, which links between nodes carry (required).
    pub secret: Option<ClusterSecret>,
    /// How often the node checks its links to its peers (dialing new or dropped ones).
    pub link_check: Duration,
    /// TLS on the links (a node whose port has TLS dials its peers with TLS).
    pub link_tls: LinkTls,
}

impl ClusterSettings {
    pub fn new(etcd: EtcdSettings, membership: MembershipSettings) -> Self {
        Self {
            etcd,
            membership,
            placement_tick: Duration::from_secs(1),
            agent_poll: Duration::from_millis(500),
            join_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(600),
            secret: None,
            link_check: Duration::from_secs(1),
            link_tls: LinkTls::plain(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no lease from etcd at {endpoints} within {waited:?}: is etcd running and reachable?")]
    NotJoined { endpoints: String, waited: Duration },
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("a cluster node needs the cluster's shared secret (--cluster-secret-file or FERRY_CLUSTER_SECRET): the links between nodes carry it")]
    NoSecret,
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// A running cluster node.
pub struct ClusterNode {
    server: RunningServer,
    membership: Membership,
    election: Election,
    placement: JoinHandle<()>,
    agent: NodeAgent,
    links: NodeLinks,
    client: etcd_client::Client,
    node_id: String,
    drain: tokio::sync::watch::Receiver<Option<DrainRecord>>,
    drain_follower: JoinHandle<()>,
    drain_timeout: Duration,
    poll: Duration,
}

impl ClusterNode {
    /// Joins the cluster and starts serving. `config.runner.node_id` is set to the node's id.
    pub async fn start(
        settings: ClusterSettings,
        mut config: ServerConfig,
    ) -> Result<Self, ClusterError> {
        let node_id = settings.membership.node_id.clone();
        let secret = settings.secret.clone().ok_or(ClusterError::NoSecret)?;
        let client = settings.etcd.connect().await?;
        let membership = Membership::start(client.clone(), settings.membership.clone())?;
        if membership.wait_live(settings.join_timeout).await.is_none() {
            return Err(ClusterError::NotJoined {
                endpoints: settings.etcd.endpoints.join(","),
                waited: settings.join_timeout,
            });
        }
        let store = Arc::new(EtcdStore::new(
            client.clone(),
            EtcdStoreSettings::default(),
            membership.liveness(),
        ));
        let state: Arc<dyn StateStore> = store.clone();
        let catalog: Arc<dyn Catalog> = store;
        config.schedule_catalog = false;
        config.runner.node_id = node_id.clone();
        // Ends with the membership.
        budget::share(
            client.clone(),
            node_id.clone(),
            membership.liveness(),
            config.runner.send_gates.clone(),
            budget::REFRESH,
        );
        config.cluster = Some(crate::admin::cluster::ClusterInfo::Etcd {
            client: Box::new(client.clone()),
            node_id: node_id.clone(),
        });
        let mut links = NodeLinks::start(&node_id, secret).await?;
        let link_service = links.service();
        config.peer_services = Some(Box::new(move |routes| routes.add_service(link_service)));
        let agents = RemoteAgents::new(&node_id).with_assignments(client.clone());
        config.admin.peers = Some(Peers(Arc::new(agents.clone())));
        let server = start(config, state, catalog.clone()).await?;
        membership.follow_load(server.run_manager().slot_use());
        let election = Election::start(
            settings.etcd.connect_for_waiting().await?,
            node_id.clone(),
            membership.liveness(),
        )?;
        let placement = tokio::spawn(assigner::run_telling(
            client.clone(),
            catalog.clone(),
            node_id.clone(),
            election.role(),
            settings.placement_tick,
            move |changes| agents.tell_changes(changes),
        ));
        let mut agent_settings = AgentSettings::new(node_id.clone());
        agent_settings.poll = settings.agent_poll;
        let (drain, drain_follower) = drain::follow(
            client.clone(),
            node_id.clone(),
            membership.liveness(),
            settings.agent_poll,
        );
        let agent = NodeAgent::start(
            client.clone(),
            agent_settings,
            catalog,
            server.run_manager().clone(),
            server.scheduler().clone(),
            membership.liveness(),
        )?;
        links
            .start_agent(AgentState {
                node_id: node_id.clone(),
                runs: server.run_manager().clone(),
                scheduler: server.scheduler().clone(),
                reconcile: agent.reconcile_handle(),
            })
            .await?;
        links.dial_with(settings.link_tls.clone());
        links.keep_linked(client.clone(), settings.link_check);
        tracing::info!(node = %node_id, addr = %server.addr, "joined the cluster");
        Ok(Self {
            server,
            membership,
            election,
            placement,
            agent,
            links,
            client,
            node_id,
            drain,
            drain_follower,
            drain_timeout: settings.drain_timeout,
            poll: settings.agent_poll,
        })
    }

    /// Marks this node draining (what SIGTERM does on a cluster node).
    pub async fn drain(&self, requested_by: &str) -> Result<(), ClusterError> {
        drain::request_drain(&self.client, &self.node_id, 0, requested_by).await?;
        Ok(())
    }

    /// Resolves once this node was asked to drain (by [`Self::drain`] or the admin API's
    /// `DrainNode`) and then holds no syncs and runs nothing: then call [`Self::stop`]. Runs
    /// still going at the drain deadline are cancelled. Never resolves while not draining.
    pub async fn drained(&self) -> Drained {
        let mut drain = self.drain.clone();
        if drain.wait_for(Option::is_some).await.is_err() {
            return std::future::pending().await;
        }
        self.agent.drain();
        drain::until_drained(
            &self.client,
            &self.node_id,
            self.server.run_manager(),
            drain,
            self.drain_timeout,
            self.poll,
        )
        .await
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub fn liveness(&self) -> tokio::sync::watch::Receiver<Liveness> {
        self.membership.liveness()
    }

    pub fn role(&self) -> tokio::sync::watch::Receiver<Role> {
        self.election.role()
    }

    /// Leaves gracefully: stops taking syncs, cancels this node's runs (each records where it
    /// got to), hands the coordinator role over, closes the port and revokes the lease, so
    /// this node's syncs move at once instead of after a lease TTL.
    pub async fn stop(self) -> Result<(), ClusterError> {
        self.agent.stop().await;
        // Before the port closes: open links would hold its graceful shutdown.
        self.links.stop().await;
        self.drain_follower.abort();
        self.placement.abort();
        self.election.resign().await;
        let served = self.server.stop().await;
        self.membership.leave().await;
        Ok(served?)
    }
}
