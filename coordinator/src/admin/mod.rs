//! The gRPC admin API (`ferry.admin.v1`): tenants and their tokens, sources, syncs and runs,
//! served by `ferry node --listen` together with gRPC reflection and the standard health
//! service. The contract — auth, write-only credentials, versions, codes — is in the proto.
//!
//! Every RPC starts by authenticating its caller ([`auth`]) and scoping the request to one
//! tenant; specs are validated by `ferry_core` and, for syncs, against the real table's columns;
//! credentials are sealed ([`crate::secrets`]) before they reach the [`Catalog`]. Runs go
//! through the node's [`RunManager`].

pub mod auth;
pub mod cluster;
pub mod convert;
pub mod errors;
mod preview;
mod runs;
pub mod server;
mod sources;
pub mod specs;
mod syncs;
mod tenants;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::admin::v1 as pb;
use tonic::service::Routes;
use tonic::Status;

use self::auth::{Authenticator, Principal};
use self::specs::SpecResolver;
use crate::catalog::Catalog;
use crate::records::SyncId;
use crate::run_manager::RunManager;
use crate::schedule::Scheduler;
use crate::store::StateStore;

pub use self::auth::MIN_OPERATOR_TOKEN;

#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// The node's public base URL (`https://ferry.example.com`): each sync's HTTP trigger URL
    /// is made from it. None: no trigger URLs are handed out.
    pub public_base_url: Option<String>,
    /// How long a warehouse call made while serving a request (a connection test, listing
    /// tables, a preview) may take before the request fails.
    pub warehouse_timeout: Duration,
    /// In a cluster: the other nodes, asked for runs that are not this node's (so the API
    /// answers the same from any node). None: one node alone.
    pub peers: Option<crate::cluster::link::Peers>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            public_base_url: None,
            warehouse_timeout: Duration::from_secs(30),
            peers: None,
        }
    }
}

/// What every admin service shares.
pub struct Admin {
    catalog: Arc<dyn Catalog>,
    resolver: SpecResolver,
    store: Arc<dyn StateStore>,
    runs: Arc<RunManager>,
    auth: Authenticator,
    scheduler: Option<Scheduler>,
    settings: AdminSettings,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Admin {
    pub fn new(
        runs: Arc<RunManager>,
        auth: Authenticator,
        scheduler: Option<Scheduler>,
        settings: AdminSettings,
    ) -> Arc<Self> {
        let resolver = runs.resolver().clone();
        Arc::new(Self {
            catalog: resolver.catalog.clone(),
            store: runs.store().clone(),
            resolver,
            runs,
            auth,
            scheduler,
            settings,
        })
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    pub fn run_manager(&self) -> &Arc<RunManager> {
        &self.runs
    }

    /// The caller, and the request's message.
    async fn caller<T>(&self, request: tonic::Request<T>) -> Result<(Principal, T), Status> {
        let principal = self.auth.authenticate_request(&request).await?;
        Ok((principal, request.into_inner()))
    }

    /// Runs a warehouse call with the request timeout.
    async fn within<T, E>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, Status> {
        tokio::time::timeout(self.settings.warehouse_timeout, call)
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "{what}: no answer from the warehouse within {} s",
                    self.settings.warehouse_timeout.as_secs()
                ))
            })
    }

    fn trigger_url(&self, sync: &SyncId) -> String {
        self.settings
            .public_base_url
            .as_deref()
            .map(|base| crate::trigger_http::trigger_url(base, sync))
            .unwrap_or_default()
    }
}

/// Parses a spec-shaped JSON value, naming what it is on failure.
fn parse<T: serde::de::DeserializeOwned>(what: &str, json: serde_json::Value) -> Result<T, Status> {
    serde_json::from_value(json).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

/// A request's `expected_version` (0: no check).
fn expected_version(expected: u64) -> Option<u64> {
    (expected != 0).then_some(expected)
}

/// A tenant-scoped sync id from a request's fields.
fn sync_id(tenant: &str, sync: &str) -> Result<SyncId, Status> {
    if sync.is_empty() {
        return Err(errors::invalid_field("sync", "name the sync"));
    }
    SyncId::new(tenant, sync).map_err(|e| errors::invalid_field("sync", e.to_string()))
}

/// The admin services with gRPC reflection and health, ready to serve. The health service
/// reports each admin service (and the server as a whole, "") as serving.
pub async fn routes(admin: Arc<Admin>) -> Result<Routes, tonic_reflection::server::Error> {
    use pb::runs_server::RunsServer;
    use pb::sources_server::SourcesServer;
    use pb::syncs_server::SyncsServer;
    use pb::tenants_server::TenantsServer;

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<TenantsServer<tenants::TenantsApi>>()
        .await;
    reporter
        .set_serving::<SourcesServer<sources::SourcesApi>>()
        .await;
    reporter.set_serving::<SyncsServer<syncs::SyncsApi>>().await;
    reporter.set_serving::<RunsServer<runs::RunsApi>>().await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ferry_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok(Routes::new(health)
        .add_service(reflection)
        .add_service(TenantsServer::new(tenants::TenantsApi(admin.clone())))
        .add_service(SourcesServer::new(sources::SourcesApi(admin.clone())))
        .add_service(SyncsServer::new(syncs::SyncsApi(admin.clone())))
        .add_service(RunsServer::new(runs::RunsApi(admin))))
}
