//! `ferry node`: one node with its embedded state store, running the syncs of its config file
//! on their schedules (or each once, with `--once`), or — with `--listen` — serving the admin
//! API and running the syncs defined through it (see `serve`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use chrono::Utc;
use clap::Args;
use indicatif::MultiProgress;

use ferry_coordinator::notify::{Notifier, NotifierSettings};
use ferry_coordinator::runner::SyncRunner;
use ferry_coordinator::{RunRecord, SyncId};

use crate::config::{Job, NodeConfig, NodeSettings};
use crate::runs::{embedded_runner, failed, print_errors, run_with_progress, summary};

#[derive(Args)]
pub struct NodeArgs {
    /// The node's TOML configuration (tenants, sources, syncs, node settings). With --listen,
    /// only its [node] settings are used.
    #[arg(long, env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    /// Serve the admin API (gRPC, with reflection and health, and the HTTP trigger URLs) on
    /// this address, e.g. 0.0.0.0:7700. Tenants, sources and syncs are then managed through it.
    /// Needs FERRY_OPERATOR_TOKEN (or --operator-token-file) and FERRY_SECRET_KEY (or
    /// FERRY_SECRET_KEY_FILE).
    #[arg(long, env = "FERRY_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// A file holding the operator token (e.g. a mounted Kubernetes Secret), instead of
    /// FERRY_OPERATOR_TOKEN.
    #[arg(long, env = "FERRY_OPERATOR_TOKEN_FILE")]
    operator_token_file: Option<PathBuf>,
    /// The node's public base URL, from which each sync's HTTP trigger URL is made (e.g.
    /// https://ferry.example.com). Without it no trigger URLs are handed out (the endpoint
    /// still answers on the API port).
    #[arg(long, env = "FERRY_PUBLIC_URL")]
    public_url: Option<String>,
    /// HTTP triggers allowed per sync, as COUNT/WINDOW.
    #[arg(long, env = "FERRY_TRIGGER_LIMIT", default_value = "5/1h", value_parser = crate::serve::parse_trigger_limit)]
    trigger_limit: ferry_coordinator::trigger_http::TriggerLimit,
    /// With --listen: join a cluster through these etcd endpoints (comma-separated, e.g.
    /// http://etcd-0:2379,http://etcd-1:2379) instead of keeping state in the embedded store.
    /// The node's id is node.id from the config file (or FERRY_NODE_ID); it must be unique.
    #[arg(long, env = "FERRY_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// With --etcd: this node's id (overrides node.id).
    #[arg(long = "node-id", env = "FERRY_NODE_ID")]
    node_id: Option<String>,
    /// With --etcd: the address other nodes dial this node at, and that `ferry nodes list`
    /// shows, as HOST:PORT (in Kubernetes: the pod IP, from status.podIP, and the port).
    /// Default: the --listen address, which must then not be 0.0.0.0 or ::.
    #[arg(long = "advertise-addr", env = "FERRY_ADVERTISE_ADDR")]
    advertise_addr: Option<String>,
    /// With --etcd: this node's share of the syncs relative to the others (0 takes none).
    #[arg(long, env = "FERRY_CAPACITY", default_value_t = 1)]
    capacity: u32,
    /// With --etcd: the node's lease time to live in seconds; a node that cannot renew it for
    /// half of that stops its syncs, and its syncs move after it expires.
    #[arg(long = "lease-ttl", env = "FERRY_LEASE_TTL", default_value_t = 10)]
    lease_ttl: u64,
    /// With --etcd: a file holding the cluster's shared secret (e.g. a mounted Kubernetes
    /// Secret), instead of FERRY_CLUSTER_SECRET. Every node needs the same one: the links
    /// between nodes carry it. At least 16 characters (e.g. the output of `ferry secret-key`).
    #[arg(long = "cluster-secret-file", env = "FERRY_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// With --listen: serve TLS on the port — the admin API, the links between nodes and the
    /// HTTP trigger URLs alike — with this certificate chain (PEM). Needs --tls-key. A cluster
    /// node with TLS registers https:// and links only with nodes that have TLS too.
    #[arg(long = "tls-cert", env = "FERRY_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// With --tls-cert: its private key (PEM).
    #[arg(long = "tls-key", env = "FERRY_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// With --etcd and --tls-cert: the CA (PEM) that signed the other nodes' certificates,
    /// which links verify them against. Default: the system's roots.
    #[arg(long = "cluster-ca-cert", env = "FERRY_CLUSTER_CA_CERT")]
    cluster_ca_cert: Option<PathBuf>,
    /// With --etcd: while the node drains (SIGTERM, or `ferry nodes drain`), how long its runs
    /// may still take before they are cancelled (each resumes elsewhere from its last commit):
    /// seconds, or with a unit (90s, 10m). Keep it below Kubernetes'
    /// terminationGracePeriodSeconds.
    #[arg(long = "drain-timeout", env = "FERRY_DRAIN_TIMEOUT", default_value = "10m", value_parser = crate::cli::parse_duration)]
    drain_timeout: Duration,
    /// How many syncs run at once on this node (overrides node.max_runs; default 4). Syncs due
    /// or triggered beyond that wait for a slot, in order.
    #[arg(long = "max-runs", env = "FERRY_MAX_RUNS")]
    max_runs: Option<usize>,
    /// Directory of the embedded state store (default: node.data_dir, else ./ferry-data).
    #[arg(long = "data", env = "FERRY_DATA")]
    data: Option<PathBuf>,
    /// Run every sync once, in file order, and exit (non-zero if any run failed).
    #[arg(long)]
    once: bool,
    /// With --once: run only these syncs (by id). Repeatable.
    #[arg(long = "sync")]
    only: Vec<String>,
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    if let Some(listen) = args.listen {
        return serve(args, listen).await;
    }
    if !args.etcd.is_empty() {
        bail!("--etcd joins a cluster served through the admin API: give --listen ADDR too");
    }
    if args.tls_cert.is_some() || args.tls_key.is_some() {
        bail!("--tls-cert and --tls-key are for the admin API's port: give --listen ADDR too");
    }
    let Some(config) = args.config.clone() else {
        bail!(
            "give --config FILE (run the syncs of a file) or --listen ADDR (serve the admin API)"
        );
    };
    let config_path = config;
    let mut cfg = NodeConfig::load(&config_path)?;
    if let Some(max_runs) = args.max_runs {
        cfg.node.max_runs = max_runs;
    }
    let mut jobs = cfg.jobs(&config_path)?;
    if !args.only.is_empty() {
        for id in &args.only {
            if !jobs.iter().any(|j| &j.sync.id == id) {
                bail!("--sync {id}: no such sync in {}", config_path.display());
            }
        }
        jobs.retain(|j| args.only.contains(&j.sync.id));
    }
    let data_dir = args
        .data
        .or(cfg.node.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("ferry-data"));
    let runner = embedded_runner(&cfg.node, &data_dir).await?;
    tracing::info!(node = %cfg.node.id, data = %data_dir.display(), syncs = jobs.len(), "ferry node started (embedded state store)");

    let notifier = Notifier::new(NotifierSettings::default());

    if args.once {
        let bars = MultiProgress::new();
        let mut any_failed = false;
        for job in &jobs {
            let run = run_with_progress(&runner, job, &bars).await?;
            print_errors(&run, 10);
            notify(&notifier, &runner, job, &run).await;
            any_failed |= failed(&run);
        }
        notifier.flush().await;
        if any_failed {
            bail!("at least one run failed (see above)");
        }
        return Ok(());
    }

    let scheduled: Vec<_> = jobs
        .into_iter()
        .filter(|j| !j.schedule.is_manual())
        .collect();
    if scheduled.is_empty() {
        bail!(
            "no sync in {} has a schedule; give one (e.g. schedule = \"hourly\") or use --once",
            config_path.display()
        );
    }
    // The node's run slots: a due sync waits for a permit (first come, first served).
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.node.max_runs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for job in scheduled {
        let runner = Arc::clone(&runner);
        let notifier = notifier.clone();
        let slots = Arc::clone(&slots);
        tasks.spawn(async move {
            // The next time is computed from the last run's start (from the run history
            // after a restart), so ticks missed while a run was still going, or while the node
            // was down, run once, not N times. A sync that never ran: an interval schedule
            // runs at once, a calendar one waits for its next time.
            let mut next = match (last_run_at(&runner, &job).await, job.schedule.interval()) {
                (Some(last), _) => job.schedule.next_after(last),
                (None, Some(_)) => Some(Utc::now()),
                (None, None) => job.schedule.next_after(Utc::now()),
            };
            while let Some(due) = next {
                let wait = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                tokio::time::sleep(wait).await;
                // max: the monotonic timer may wake a hair before the wall clock reaches `due`.
                next = job.schedule.next_after(Utc::now().max(due));
                let Ok(_slot) = slots.acquire().await else {
                    break;
                };
                match runner
                    .run(&job.tenant, &job.source, &job.sync, Default::default())
                    .await
                {
                    Ok(run) => {
                        tracing::info!(sync = %job.sync.id, run = %run.run_id, "{}", summary(&run));
                        notify(&notifier, &runner, &job, &run).await;
                    }
                    Err(e) => tracing::error!(sync = %job.sync.id, error = %e, "sync not run"),
                }
            }
            tracing::warn!(sync = %job.sync.id, schedule = %job.schedule, "the schedule has no further times");
            std::future::pending::<()>().await
        });
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
        _ = tasks.join_next() => tracing::error!("a scheduler task ended unexpectedly"),
    }
    tasks.abort_all();
    // Webhooks still being delivered get a moment, not their whole retry budget.
    let _ = tokio::time::timeout(Duration::from_secs(15), notifier.flush()).await;
    Ok(())
}

/// When the sync's newest recorded run was queued.
async fn last_run_at(runner: &SyncRunner, job: &Job) -> Option<chrono::DateTime<Utc>> {
    let id = SyncId::of_spec(&job.sync).ok()?;
    match runner.store().list_runs(&id, 1).await {
        Ok(runs) => runs.first().map(|run| run.queued_at),
        Err(e) => {
            tracing::warn!(sync = %id, error = %e, "run history unavailable: missed ticks are not caught up");
            None
        }
    }
}

/// Hands a finished run to its tenant's and sync's webhooks; delivery goes on in the
/// background (`Notifier::flush` waits for it).
async fn notify(notifier: &Notifier, runner: &SyncRunner, job: &Job, run: &RunRecord) {
    if job.tenant.webhook.is_none() && job.sync.webhook.is_none() {
        return;
    }
    let recent = match SyncId::of_spec(&job.sync) {
        Ok(id) => runner.store().list_runs(&id, 50).await.unwrap_or_else(|e| {
            tracing::warn!(sync = %id, error = %e, "run history unavailable: no volume check");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    };
    notifier.run_finished(&job.tenant, &job.sync, run, &recent);
}

pub const CLUSTER_SECRET_ENV: &str = "FERRY_CLUSTER_SECRET";

/// `--tls-cert` and `--tls-key`: both or neither, read and checked before anything starts.
fn server_tls(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<Option<ferry_coordinator::admin::tls::ServerTls>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(ferry_coordinator::admin::tls::ServerTls::from_files(
            cert, key,
        )?)),
        (Some(cert), None) => bail!(
            "--tls-cert {} needs --tls-key (FERRY_TLS_KEY): the certificate's private key",
            cert.display()
        ),
        (None, Some(key)) => bail!(
            "--tls-key {} needs --tls-cert (FERRY_TLS_CERT): the certificate it belongs to",
            key.display()
        ),
    }
}

/// The cluster's shared secret: the file if one is named, else the environment. A cluster
/// node refuses to start without it.
fn cluster_secret(
    file: Option<&std::path::Path>,
) -> anyhow::Result<ferry_coordinator::cluster::link::ClusterSecret> {
    use anyhow::Context;
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the cluster secret from {}", path.display()))?,
        None => std::env::var(CLUSTER_SECRET_ENV).unwrap_or_default(),
    };
    if text.trim().is_empty() {
        bail!(
            "a cluster node needs the cluster's shared secret: set {CLUSTER_SECRET_ENV} or give --cluster-secret-file (the same on every node; e.g. the output of `ferry secret-key`)"
        );
    }
    let what = match file {
        Some(path) => format!("the cluster secret in {}", path.display()),
        None => CLUSTER_SECRET_ENV.to_string(),
    };
    ferry_coordinator::cluster::link::ClusterSecret::new(&text).with_context(|| what)
}

/// The address a cluster node registers for its peers to dial: `--advertise-addr` if given,
/// else the `--listen` address. An unspecified address (0.0.0.0, ::) is refused: other nodes
/// cannot dial it.
fn advertised_address(
    listen: std::net::SocketAddr,
    advertise: Option<&str>,
) -> anyhow::Result<String> {
    let Some(given) = advertise.map(str::trim) else {
        if listen.ip().is_unspecified() {
            bail!(
                "--listen {listen} is not an address other nodes can dial: give --advertise-addr HOST:PORT (FERRY_ADVERTISE_ADDR; in Kubernetes the pod IP and the port) or listen on a specific address"
            );
        }
        return Ok(listen.to_string());
    };
    let bad = |why: &str| anyhow::anyhow!("--advertise-addr '{given}': {why}");
    if given.contains("://") {
        return Err(bad("give HOST:PORT, without a scheme"));
    }
    let (host, port) = given
        .rsplit_once(':')
        .ok_or_else(|| bad("give HOST:PORT, e.g. 10.0.3.7:7700"))?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {}
        _ => return Err(bad("the port must be a number from 1 to 65535")),
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() || bare.contains(char::is_whitespace) {
        return Err(bad("give the host (a name or an IP address)"));
    }
    if bare.contains(':') && !host.starts_with('[') {
        return Err(bad("write an IPv6 address in brackets, e.g. [fd00::7]:7700"));
    }
    if bare
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
    {
        return Err(bad("0.0.0.0 and :: cannot be dialed by other nodes"));
    }
    Ok(given.to_string())
}

/// `--listen`: the admin API. A config file, if given, may only hold [node] settings.
async fn serve(args: NodeArgs, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    if args.once || !args.only.is_empty() {
        bail!("--once and --sync run the syncs of a config file; with --listen, trigger syncs through the API");
    }
    let settings = match &args.config {
        Some(path) => {
            let cfg = NodeConfig::load(path)?;
            if !(cfg.tenants.is_empty() && cfg.sources.is_empty() && cfg.syncs.is_empty()) {
                bail!(
                    "{}: with --listen, tenants, sources and syncs are created through the admin API; keep only [node] in the file",
                    path.display()
                );
            }
            cfg.node
        }
        None => NodeSettings::default(),
    };
    let mut settings = settings;
    if let Some(id) = &args.node_id {
        settings.id = id.clone();
    }
    if let Some(max_runs) = args.max_runs {
        settings.max_runs = max_runs;
    }
    if args.etcd.is_empty()
        && (args.node_id.is_some() || args.capacity != 1 || args.advertise_addr.is_some())
    {
        bail!("--node-id, --capacity and --advertise-addr are for a cluster node: give --etcd too");
    }
    let secret = if args.etcd.is_empty() {
        if args.cluster_secret_file.is_some() {
            bail!("--cluster-secret-file is for a cluster node: give --etcd too");
        }
        None
    } else {
        Some(cluster_secret(args.cluster_secret_file.as_deref())?)
    };
    let advertise = match &secret {
        Some(_) => advertised_address(listen, args.advertise_addr.as_deref())?,
        None => String::new(),
    };
    let cluster = secret.map(|secret| crate::serve::ClusterOptions {
        secret,
        advertise,
        etcd: args.etcd.clone(),
        capacity: args.capacity,
        lease_ttl: Duration::from_secs(args.lease_ttl),
        drain_timeout: args.drain_timeout,
    });
    let tls = server_tls(args.tls_cert.as_deref(), args.tls_key.as_deref())?;
    let cluster_ca = match &args.cluster_ca_cert {
        None => None,
        Some(path) if args.etcd.is_empty() || tls.is_none() => bail!(
            "--cluster-ca-cert {} verifies the links of a cluster node with TLS: give --etcd and --tls-cert/--tls-key too",
            path.display()
        ),
        Some(path) => {
            // Checked now, so a bad file stops the start instead of every link.
            ferry_coordinator::admin::tls::read_certificates("--cluster-ca-cert", path)?;
            Some(std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("--cluster-ca-cert {}: {e}", path.display())
            })?)
        }
    };
    let data_dir = args
        .data
        .or(settings.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("ferry-data"));
    crate::serve::run(
        &settings,
        crate::serve::ServeOptions {
            listen,
            data_dir,
            operator_token_file: args.operator_token_file,
            public_url: args.public_url,
            trigger_limit: args.trigger_limit,
            cluster,
            tls,
            cluster_ca,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::advertised_address;

    #[test]
    fn the_advertised_address_is_one_other_nodes_can_dial() {
        let listen = |a: &str| a.parse::<std::net::SocketAddr>().unwrap();
        // Without --advertise-addr: a specific --listen address is advertised as it is.
        assert_eq!(
            advertised_address(listen("10.0.3.7:7700"), None).unwrap(),
            "10.0.3.7:7700"
        );
        assert_eq!(
            advertised_address(listen("[fd00::7]:7700"), None).unwrap(),
            "[fd00::7]:7700"
        );
        // An unspecified --listen needs --advertise-addr.
        for any in ["0.0.0.0:7700", "[::]:7700"] {
            let refused = advertised_address(listen(any), None).unwrap_err().to_string();
            assert!(
                refused.contains("--advertise-addr") && refused.contains(any),
                "{refused}"
            );
            assert_eq!(
                advertised_address(listen(any), Some(" 10.0.3.7:7700 ")).unwrap(),
                "10.0.3.7:7700"
            );
        }
        assert_eq!(
            advertised_address(listen("0.0.0.0:7700"), Some("ferry-1.ferry:7700")).unwrap(),
            "ferry-1.ferry:7700"
        );
        assert_eq!(
            advertised_address(listen("0.0.0.0:7700"), Some("[fd00::7]:7700")).unwrap(),
            "[fd00::7]:7700"
        );
        // --advertise-addr overrides a specific --listen too.
        assert_eq!(
            advertised_address(listen("127.0.0.1:7700"), Some("10.0.3.7:7701")).unwrap(),
            "10.0.3.7:7701"
        );
        for (bad, says) in [
            ("0.0.0.0:7700", "cannot be dialed"),
            ("[::]:7700", "cannot be dialed"),
            ("10.0.3.7", "HOST:PORT"),
            ("10.0.3.7:0", "port"),
            ("10.0.3.7:http", "port"),
            (":7700", "host"),
            ("http://10.0.3.7:7700", "scheme"),
            ("fd00::7:7700", "brackets"),
        ] {
            let refused = advertised_address(listen("0.0.0.0:7700"), Some(bad))
                .unwrap_err()
                .to_string();
            assert!(refused.contains(bad) && refused.contains(says), "{bad}: {refused}");
        }
    }
}
