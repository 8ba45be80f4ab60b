//! `ferry node --listen ADDR`: the node serves the admin API (with reflection and health) and
//! the per-sync HTTP trigger on one port, keeps tenants, sources and syncs in its embedded
//! state store, and runs the syncs on their schedules.
//!
//! Needs two secrets from its environment: the operator token (`FERRY_OPERATOR_TOKEN`, or a
//! file with `--operator-token-file`, e.g. a mounted Kubernetes Secret) and the key that seals
//! stored credentials (`FERRY_SECRET_KEY`, or the file `FERRY_SECRET_KEY_FILE`; `ferry
//! secret-key` prints a new one). It refuses to start without either.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ferry_coordinator::admin::server::{start, ServerConfig};
use ferry_coordinator::admin::{AdminSettings, MIN_OPERATOR_TOKEN};
use ferry_coordinator::catalog::Catalog;
use ferry_coordinator::cluster::connection::EtcdSettings;
use ferry_coordinator::cluster::link::peers::LinkTls;
use ferry_coordinator::cluster::membership::MembershipSettings;
use ferry_coordinator::cluster::node::{ClusterNode, ClusterSettings};
use ferry_coordinator::secrets::SecretBox;
use ferry_coordinator::trigger_http::TriggerLimit;
use ferry_coordinator::{EmbeddedSettings, EmbeddedStore, StateStore};

use crate::config::NodeSettings;
use crate::runs::runner_settings;

pub const OPERATOR_TOKEN_ENV: &str = "FERRY_OPERATOR_TOKEN";

/// How the API port is served.
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub operator_token_file: Option<PathBuf>,
    pub public_url: Option<String>,
    pub trigger_limit: TriggerLimit,
    /// Join a cluster on etcd instead of keeping state in the embedded store.
    pub cluster: Option<ClusterOptions>,
    /// TLS on the port (`--tls-cert`, `--tls-key`); a cluster node's links then use TLS too.
    pub tls: Option<ferry_coordinator::admin::tls::ServerTls>,
    /// The CA (PEM) that links verify peers against (`--cluster-ca-cert`; None: system roots).
    pub cluster_ca: Option<Vec<u8>>,
}

/// `--etcd` and its companions.
pub struct ClusterOptions {
    /// The cluster's shared secret, carried by the links between nodes.
    pub secret: ferry_coordinator::cluster::link::ClusterSecret,
    /// The address peers dial this node at and `nodes list` shows (HOST:PORT).
    pub advertise: String,
    pub etcd: Vec<String>,
    pub capacity: u32,
    pub lease_ttl: Duration,
    /// How long a draining node's runs may still take.
    pub drain_timeout: Duration,
}

/// The operator token: the file if one is named, else the environment.
fn operator_token(file: Option<&Path>) -> anyhow::Result<String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the operator token from {}", path.display()))?,
        None => std::env::var(OPERATOR_TOKEN_ENV).unwrap_or_default(),
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!(
            "no operator token: set {OPERATOR_TOKEN_ENV} or give --operator-token-file (at least {MIN_OPERATOR_TOKEN} random characters, e.g. the output of `ferry secret-key`)"
        );
    }
    Ok(token)
}

pub async fn run(settings: &NodeSettings, options: ServeOptions) -> anyhow::Result<()> {
    let secrets = SecretBox::from_env()?;
    let token = operator_token(options.operator_token_file.as_deref())?;
    if let Some(cluster) = &options.cluster {
        return run_cluster_node(settings, &options, cluster, token, secrets).await;
    }
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("creating {}", options.data_dir.display()))?;
    let dir = options.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || {
        EmbeddedStore::open_in(&dir, EmbeddedSettings::default())
    })
    .await
    .context("opening the state store")?
    .with_context(|| format!("opening the state store in {}", options.data_dir.display()))?;
    let store = Arc::new(store);
    let mut config = ServerConfig::new(options.listen, token, secrets);
    config.runner = runner_settings(settings);
    config.max_runs = settings.max_runs.max(1);
    config.trigger_limit = options.trigger_limit;
    config.tls = options.tls;
    config.admin = AdminSettings {
        public_base_url: options.public_url,
        ..AdminSettings::default()
    };
    tracing::info!(
        node = %settings.id,
        data = %options.data_dir.display(),
        secret_key = %config.secrets.key_id(),
        "ferry node starting (embedded state store, admin API)"
    );
    let state: Arc<dyn StateStore> = store.clone();
    let catalog: Arc<dyn Catalog> = store;
    let server = start(config, state, catalog).await?;
    // A machine-readable line for scripts and tests (the port, when --listen asked for :0).
    println!("ferry node: admin API listening on {}", server.addr);
    wait_for_stop().await;
    tracing::info!("stopping: cancelling running runs");
    server.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

/// `--listen --etcd`: a cluster node. State and catalog live in etcd; the elected
/// coordinator places syncs on nodes; this node runs what is placed on it.
async fn run_cluster_node(
    settings: &NodeSettings,
    options: &ServeOptions,
    cluster: &ClusterOptions,
    token: String,
    secrets: SecretBox,
) -> anyhow::Result<()> {
    let mut config = ServerConfig::new(options.listen, token, secrets);
    config.runner = runner_settings(settings);
    config.max_runs = settings.max_runs.max(1);
    config.trigger_limit = options.trigger_limit;
    config.tls = options.tls.clone();
    config.admin = AdminSettings {
        public_base_url: options.public_url.clone(),
        ..AdminSettings::default()
    };
    // Peers dial a node with TLS at https://.
    let advertise = match &options.tls {
        Some(_) => format!("https://{}", cluster.advertise),
        None => cluster.advertise.clone(),
    };
    let mut membership = MembershipSettings::new(&settings.id, advertise, cluster.capacity);
    membership.ttl = cluster.lease_ttl;
    let mut cluster_settings =
        ClusterSettings::new(EtcdSettings::new(cluster.etcd.iter().cloned()), membership);
    cluster_settings.drain_timeout = cluster.drain_timeout;
    cluster_settings.secret = Some(cluster.secret.clone());
    cluster_settings.link_tls = match &options.tls {
        Some(_) => LinkTls::verified_by(options.cluster_ca.clone()),
        None => LinkTls::plain(),
    };
    tracing::info!(
        node = %settings.id,
        etcd = %cluster.etcd.join(","),
        secret_key = %config.secrets.key_id(),
        "ferry node starting (cluster on etcd, admin API)"
    );
    let node = ClusterNode::start(cluster_settings, config).await?;
    println!("ferry node: admin API listening on {}", node.addr());
    // SIGTERM (a Kubernetes rolling update) drains the node: it takes no more syncs, lets its
    // runs end (until --drain-timeout), then leaves. A second signal stops at once. A drain
    // asked through the API (`ferry nodes drain`) ends the same way.
    tokio::select! {
        outcome = node.drained() => {
            tracing::info!(?outcome, "drained: leaving the cluster");
        }
        _ = wait_for_stop() => {
            tracing::info!(timeout = ?cluster.drain_timeout, "stop signal: draining (a second signal stops at once)");
            if let Err(e) = node.drain("SIGTERM").await {
                tracing::error!(error = %e, "the drain could not be recorded; stopping at once");
            } else {
                tokio::select! {
                    outcome = node.drained() => tracing::info!(?outcome, "drained: leaving the cluster"),
                    _ = wait_for_stop() => tracing::warn!("second stop signal: stopping at once"),
                }
            }
        }
    }
    tracing::info!("stopping: cancelling running runs, leaving the cluster");
    node.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C, or SIGTERM (how Kubernetes stops a pod).
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "SIGTERM cannot be watched; stop with Ctrl-C"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `5/1h`, `10/30m`, `3/90s`: triggers allowed per sync in a sliding window.
pub fn parse_trigger_limit(text: &str) -> Result<TriggerLimit, String> {
    let hint = || format!("'{text}' is not a trigger limit: write it as COUNT/WINDOW, e.g. 5/1h");
    let (count, window) = text.trim().split_once('/').ok_or_else(hint)?;
    let max: u32 = count.trim().parse().map_err(|_| hint())?;
    let window = window.trim();
    let split = window
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(window.len());
    let (n, unit) = window.split_at(split);
    let n: u64 = if n.is_empty() {
        1
    } else {
        n.parse().map_err(|_| hint())?
    };
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(hint()),
    };
    if max == 0 || secs == 0 {
        return Err(format!(
            "'{text}': the count and the window must be positive"
        ));
    }
    Ok(TriggerLimit {
        max,
        window: Duration::from_secs(secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_limits() {
        let limit = parse_trigger_limit("5/1h").unwrap();
        assert_eq!((limit.max, limit.window), (5, Duration::from_secs(3600)));
        assert_eq!(
            parse_trigger_limit("10/h").unwrap().window,
            Duration::from_secs(3600)
        );
        assert_eq!(
            parse_trigger_limit("3/90s").unwrap().window,
            Duration::from_secs(90)
        );
        for bad in ["5", "x/1h", "5/1y", "0/1h", "5/0s"] {
            assert!(parse_trigger_limit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_operator_token_comes_from_a_file_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  from-the-file-0123456789\n").unwrap();
        assert_eq!(
            operator_token(Some(&file)).unwrap(),
            "from-the-file-0123456789"
        );
        std::fs::write(&file, "\n").unwrap();
        let err = operator_token(Some(&file)).unwrap_err().to_string();
        assert!(err.contains(OPERATOR_TOKEN_ENV), "{err}");
    }
}
