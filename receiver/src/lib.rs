//! Ferry's receiver: a local server that speaks Mixpanel's ingestion and export APIs and
//! enforces the same documented rules (shared with the pipeline through `ferry_core::ingest`),
//! so a client that passes here would pass against Mixpanel. Extensions that Mixpanel does not
//! have live under `/ferry/v1/` and are marked as such. See `receiver/README.md`.

pub mod auth;
pub mod body;
pub mod config;
pub mod faults;
pub mod reply;
mod routes;
pub mod stats;
pub mod store;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

pub use config::ReceiverConfig;
use faults::{FaultInjector, RateLimiter};
use stats::Stats;
use store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("invalid receiver configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the receiver's store: {0}")]
    Store(#[from] StoreError),
}

/// Shared state of a running receiver.
pub struct App {
    pub config: ReceiverConfig,
    pub store: Store,
    pub stats: Stats,
    pub faults: FaultInjector,
    pub limits: RateLimiter,
}

/// Marks a response that must not be sent: the connection is closed instead (a fault).
#[derive(Clone, Copy)]
struct DropConnection;

#[derive(Debug)]
struct DroppedOnPurpose;

impl std::fmt::Display for DroppedOnPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DroppedOnPurpose {}

/// A receiver serving in the background. Dropping it does not stop it; call `shutdown`.
pub struct RunningReceiver {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningReceiver {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Resolves when the accept loop ends (it runs until `shutdown`).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Validates the configuration, opens the store and starts serving.
pub async fn start(config: ReceiverConfig) -> Result<RunningReceiver, ReceiverError> {
    config.validate().map_err(ReceiverError::Config)?;
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ReceiverError::Bind {
                addr: config.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ReceiverError::Bind {
            addr: config.listen,
            source,
        })?;
    let store = Store::open(config.store, config.data_dir.as_deref(), &config.projects)?;
    let limits = RateLimiter::new(config.projects.iter().map(|p| (p.id.clone(), p.rate_limit)));
    let app = Arc::new(App {
        faults: FaultInjector::new(config.faults.clone()),
        store,
        stats: Stats::default(),
        limits,
        config,
    });
    let router = routes::router(app.clone());
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "receiver accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let router = router.clone();
                        async move {
                            let response = router
                                .oneshot(req.map(axum::body::Body::new))
                                .await
                                .unwrap_or_else(|e: Infallible| match e {});
                            if response.extensions().get::<DropConnection>().is_some() {
                                return Err(DroppedOnPurpose);
                            }
                            Ok(response)
                        }
                    },
                );
                // A service error makes hyper close the connection without answering.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    tracing::info!(%addr, store = ?app.config.store, "receiver listening");
    Ok(RunningReceiver {
        addr,
        app,
        stop,
        task,
    })
}
