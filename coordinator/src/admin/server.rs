//! One node's API port: the admin services, gRPC reflection and health, and the per-sync HTTP
//! trigger (`PUT /v1/tenants/{tenant}/syncs/{sync}/trigger`, HTTP/1.1) on a single listener,
//! with the run manager and the scheduler behind them, all behind TLS when configured
//! ([`super::tls`]). `ferry node --listen` starts this; tests start it in-process.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::auth::{Authenticator, OperatorTokenError};
use super::specs::SpecResolver;
use super::{routes, Admin, AdminSettings};
use crate::catalog::Catalog;
use crate::notify::{Notifier, NotifierSettings};
use crate::run_manager::RunManager;
use crate::runner::RunnerSettings;
use crate::schedule::{Clock, Scheduler, SchedulerSettings, SyncTrigger, SystemClock};
use crate::secrets::SecretBox;
use crate::store::StateStore;
use crate::trigger_http::{self, TriggerHttp, TriggerLimit};

pub struct ServerConfig {
    pub listen: SocketAddr,
    pub operator_token: String,
    pub secrets: SecretBox,
    pub runner: RunnerSettings,
    pub admin: AdminSettings,
    pub trigger_limit: TriggerLimit,
    pub notifier: NotifierSettings,
    pub scheduler: SchedulerSettings,
    /// The scheduler's and the trigger limit's time (tests move it by hand).
    pub clock: Arc<dyn Clock>,
    /// Schedule every stored sync on this node (one node alone). In a cluster it is off: the
    /// node's agent schedules only the syncs the coordinator assigned to it
    /// ([`crate::cluster::agent`]), through [`RunningServer::scheduler`].
    pub schedule_catalog: bool,
    /// What the `Cluster` service shows: None, this node alone (embedded).
    pub cluster: Option<super::cluster::ClusterInfo>,
    /// How many runs go at once on this node; further triggers wait for a slot.
    pub max_runs: usize,
    /// Adds more gRPC services on the same port: a cluster node's links to its peers
    /// ([`crate::cluster::link`]).
    pub peer_services:
        Option<Box<dyn FnOnce(tonic::service::Routes) -> tonic::service::Routes + Send>>,
    /// TLS for everything on the port (None: plain HTTP/2 and HTTP/1.1).
    pub tls: Option<super::tls::ServerTls>,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, operator_token: String, secrets: SecretBox) -> Self {
        Self {
            listen,
            operator_token,
            secrets,
            runner: RunnerSettings::default(),
            admin: AdminSettings::default(),
            trigger_limit: TriggerLimit::default(),
            notifier: NotifierSettings::default(),
            scheduler: SchedulerSettings::default(),
            clock: Arc::new(SystemClock),
            schedule_catalog: true,
            cluster: None,
            max_runs: crate::run_manager::DEFAULT_MAX_RUNS,
            peer_services: None,
            tls: None,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("secrets", &self.secrets)
            .field("admin", &self.admin)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    OperatorToken(#[from] OperatorTokenError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the stored syncs cannot be read: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the API server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A serving node's API port.
pub struct RunningServer {
    pub addr: SocketAddr,
    runs: Arc<RunManager>,
    scheduler_handle: Scheduler,
    stop_scheduler: oneshot::Sender<()>,
    stop_server: oneshot::Sender<()>,
    scheduler: JoinHandle<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    pub fn run_manager(&self) -> &Arc<RunManager> {
        &self.runs
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler_handle
    }

    /// Stops starting runs, cancels the running ones and waits for them to be recorded, then
    /// closes the port.
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.stop_scheduler.send(());
        let _ = self.scheduler.await;
        self.runs.shutdown().await;
        let _ = self.stop_server.send(());
        match self.server.await {
            Ok(result) => Ok(result?),
            Err(e) => {
                tracing::error!(error = %e, "the API server task ended abnormally");
                Ok(())
            }
        }
    }
}

/// Starts serving: opens the listener, schedules every stored sync, and returns once the port
/// accepts connections.
pub async fn start(
    mut config: ServerConfig,
    store: Arc<dyn StateStore>,
    catalog: Arc<dyn Catalog>,
) -> Result<RunningServer, ServeError> {
    let auth = Authenticator::new(Some(&config.operator_token), catalog.clone())?;
    let resolver = SpecResolver::new(catalog.clone(), config.secrets.clone());
    let runs = RunManager::with_slots(
        resolver,
        store.clone(),
        config.runner.clone(),
        Some(Notifier::new(config.notifier.clone())),
        config.max_runs,
    );
    let trigger: Arc<dyn SyncTrigger> = runs.clone();
    let scheduler = Scheduler::new(
        config.clock.clone(),
        trigger.clone(),
        store,
        config.scheduler.clone(),
    );
    let mut scheduled = 0;
    let stored = if config.schedule_catalog {
        catalog.list_all_syncs().await?
    } else {
        Vec::new()
    };
    for sync in stored {
        let record = sync.value;
        let Ok(id) = record.sync_id() else { continue };
        match ferry_core::schedule::Schedule::from_spec(record.schedule(), record.timezone()) {
            Ok(schedule) => {
                scheduler.upsert(id, schedule, record.paused).await;
                scheduled += 1;
            }
            Err(e) => tracing::error!(sync = %id, error = %e, "stored schedule not understood"),
        }
    }
    let admin = Admin::new(
        runs.clone(),
        auth.clone(),
        config.schedule_catalog.then(|| scheduler.clone()),
        config.admin.clone(),
    );
    let http_trigger = trigger_http::router(
        TriggerHttp::new(
            trigger,
            Arc::new(auth),
            config.clock.clone(),
            config.trigger_limit,
        )
        .with_scheduler(scheduler.clone())
        .with_peers(config.admin.peers.clone()),
    );
    let cluster_admin = admin.clone();
    let mut api = routes(admin).await?;
    if let Some(add) = config.peer_services.take() {
        api = add(api);
    }
    let merged = std::mem::take(api.axum_router_mut()).merge(http_trigger);
    *api.axum_router_mut() = merged;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    // Alone, the node shows itself at the address it bound (the port, when asked for :0).
    let cluster = config
        .cluster
        .clone()
        .unwrap_or_else(|| super::cluster::ClusterInfo::Embedded {
            node_id: config.runner.node_id.clone(),
            address: addr.to_string(),
            started_at: chrono::Utc::now(),
        });
    let api = api.add_service(ferry_proto::admin::v1::cluster_server::ClusterServer::new(
        super::cluster::ClusterApi::new(cluster_admin, cluster),
    ));
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        // HTTP/1.1 for the trigger URL; gRPC arrives over HTTP/2 on the same port.
        .accept_http1(true)
        .add_routes(api);
    let stopped = async {
        let _ = server_stopped.await;
    };
    let server = match &config.tls {
        Some(tls) => {
            tokio::spawn(router.serve_with_incoming_shutdown(tls.incoming(listener), stopped))
        }
        None => tokio::spawn(router.serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            stopped,
        )),
    };
    let (stop_scheduler, scheduler_stopped) = oneshot::channel::<()>();
    let scheduler_task = {
        let scheduler = scheduler.clone();
        tokio::spawn(async move {
            scheduler
                .run(async {
                    let _ = scheduler_stopped.await;
                })
                .await
        })
    };
    tracing::info!(%addr, scheduled, tls = config.tls.is_some(), "admin API listening (gRPC with reflection and health; HTTP trigger URLs)");
    Ok(RunningServer {
        addr,
        runs,
        scheduler_handle: scheduler,
        stop_scheduler,
        stop_server,
        scheduler: scheduler_task,
        server,
    })
}
