//! `ferry receiver`: flags for the common settings, a TOML file for everything.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use ferry_receiver::config::{ProjectConfig, RateLimitConfig, ServiceAccountConfig, StoreMode};
use ferry_receiver::ReceiverConfig;

#[derive(Args)]
pub struct ReceiverArgs {
    /// A TOML file with the full configuration (flags below add to or override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8787 (port 0 picks a free one; the address is printed).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory of the durable store.
    #[arg(long = "data")]
    data: Option<PathBuf>,
    /// `disk` (durable, everything kept) or `memory` (validates fully, keeps counts and keys).
    #[arg(long, value_parser = ["disk", "memory"])]
    store: Option<String>,
    /// A project as ID:TOKEN or ID:TOKEN:SECRET. Repeatable.
    #[arg(long = "project", value_name = "ID:TOKEN[:SECRET]")]
    projects: Vec<String>,
    /// A service account as USER:SECRET, allowed on every project. Repeatable.
    #[arg(long = "service-account", value_name = "USER:SECRET")]
    service_accounts: Vec<String>,
    /// A lookup table that exists in a project, as PROJECT:ID:NAME. Repeatable.
    #[arg(long = "lookup-table", value_name = "PROJECT:ID:NAME")]
    lookup_tables: Vec<String>,
    /// A per-project rate limit as PROJECT:EVENTS_PER_SECOND:BYTES_PER_MINUTE (0 = unlimited).
    #[arg(long = "rate-limit", value_name = "PROJECT:EPS:BPM")]
    rate_limits: Vec<String>,
    /// Seed of the fault draw.
    #[arg(long)]
    fault_seed: Option<u64>,
    /// Share of requests answered 429.
    #[arg(long)]
    fault_429: Option<f64>,
    /// Share of requests answered 502.
    #[arg(long)]
    fault_502: Option<f64>,
    /// Share of requests answered 503.
    #[arg(long)]
    fault_503: Option<f64>,
    /// Answer every request this many milliseconds late, as a destination across the
    /// internet would (the slow fault for every request; not with --fault-slow or --slow-ms).
    #[arg(long = "latency-ms", conflicts_with_all = ["fault_slow", "slow_ms"])]
    latency_ms: Option<u64>,
    /// Share of requests answered late (after --slow-ms).
    #[arg(long)]
    fault_slow: Option<f64>,
    #[arg(long)]
    slow_ms: Option<u64>,
    /// Share of requests held for --timeout-ms, then closed unanswered (nothing stored).
    #[arg(long)]
    fault_timeout: Option<f64>,
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Share of connections closed unanswered before anything is stored.
    #[arg(long)]
    fault_drop: Option<f64>,
    /// Share of connections closed unanswered after the request was stored.
    #[arg(long)]
    fault_drop_after_store: Option<f64>,
}

fn parts(raw: &str, what: &str, min: usize, max: usize) -> anyhow::Result<Vec<String>> {
    let p: Vec<String> = raw.split(':').map(str::to_owned).collect();
    if p.len() < min || p.len() > max || p.iter().any(String::is_empty) {
        bail!("--{what} '{raw}' is not in the expected form (see --help)");
    }
    Ok(p)
}

impl ReceiverArgs {
    fn into_config(self) -> anyhow::Result<ReceiverConfig> {
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                ReceiverConfig::from_toml(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => ReceiverConfig::from_toml("").map_err(anyhow::Error::msg)?,
        };
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if let Some(d) = self.data {
            cfg.data_dir = Some(d);
        }
        if let Some(s) = self.store.as_deref() {
            cfg.store = if s == "memory" {
                StoreMode::Memory
            } else {
                StoreMode::Disk
            };
        }
        for raw in &self.projects {
            let p = parts(raw, "project", 2, 3)?;
            cfg.projects.push(ProjectConfig {
                id: p[0].clone(),
                token: p[1].clone(),
                secret: p.get(2).cloned(),
                group_keys: None,
                lookup_tables: vec![],
                rate_limit: RateLimitConfig::default(),
            });
        }
        for raw in &self.service_accounts {
            let (user, secret) = raw
                .split_once(':')
                .filter(|(u, s)| !u.is_empty() && !s.is_empty())
                .with_context(|| format!("--service-account '{raw}' must be USER:SECRET"))?;
            cfg.service_accounts.push(ServiceAccountConfig {
                user: user.into(),
                secret: secret.into(),
                projects: None,
            });
        }
        for raw in &self.lookup_tables {
            let p = parts(raw, "lookup-table", 3, 3)?;
            let project = cfg
                .projects
                .iter_mut()
                .find(|x| x.id == p[0])
                .with_context(|| format!("--lookup-table '{raw}': unknown project '{}'", p[0]))?;
            project
                .lookup_tables
                .push(ferry_receiver::config::LookupTableDecl {
                    id: p[1].clone(),
                    name: p[2].clone(),
                });
        }
        for raw in &self.rate_limits {
            let p = parts(raw, "rate-limit", 3, 3)?;
            let num = |s: &str| -> anyhow::Result<Option<u64>> {
                let n: u64 = s
                    .parse()
                    .with_context(|| format!("--rate-limit '{raw}': '{s}' is not a number"))?;
                Ok((n > 0).then_some(n))
            };
            let limit = RateLimitConfig {
                events_per_second: num(&p[1])?,
                bytes_per_minute: num(&p[2])?,
            };
            let project = cfg
                .projects
                .iter_mut()
                .find(|x| x.id == p[0])
                .with_context(|| format!("--rate-limit '{raw}': unknown project '{}'", p[0]))?;
            project.rate_limit = limit;
        }
        let f = &mut cfg.faults;
        let overrides = [
            (&mut f.error_429, self.fault_429),
            (&mut f.error_502, self.fault_502),
            (&mut f.error_503, self.fault_503),
            (&mut f.slow, self.fault_slow),
            (&mut f.timeout, self.fault_timeout),
            (&mut f.drop, self.fault_drop),
            (&mut f.drop_after_store, self.fault_drop_after_store),
        ];
        for (slot, value) in overrides {
            if let Some(v) = value {
                *slot = v;
            }
        }
        if let Some(s) = self.fault_seed {
            f.seed = s;
        }
        if let Some(ms) = self.slow_ms {
            f.slow_ms = ms;
        }
        if let Some(ms) = self.timeout_ms {
            f.timeout_ms = ms;
        }
        if let Some(ms) = self.latency_ms {
            f.slow = 1.0;
            f.slow_ms = ms;
        }
        Ok(cfg)
    }
}

pub async fn run(args: ReceiverArgs) -> anyhow::Result<()> {
    let cfg = args.into_config()?;
    let running = ferry_receiver::start(cfg).await?;
    // One line on stdout that scripts can read: where the receiver listens.
    println!("ferry receiver listening on {}", running.base_url());
    let addr = running.addr;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            tracing::info!(%addr, "receiver stopping");
        }
        _ = terminate() => {
            tracing::info!(%addr, "receiver stopping (SIGTERM)");
        }
    }
    running.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        receiver: ReceiverArgs,
    }

    fn config(args: &[&str]) -> anyhow::Result<ReceiverConfig> {
        let cli = Cli::try_parse_from(std::iter::once("receiver").chain(args.iter().copied()))?;
        cli.receiver.into_config()
    }

    #[test]
    fn latency_delays_every_request() {
        let cfg = config(&["--latency-ms", "100"]).unwrap();
        assert_eq!((cfg.faults.slow, cfg.faults.slow_ms), (1.0, 100));
        let none = config(&[]).unwrap();
        assert_eq!(none.faults.slow, 0.0);
        for other in [["--fault-slow", "0.5"], ["--slow-ms", "5"]] {
            let args = ["--latency-ms", "100", other[0], other[1]];
            assert!(config(&args).is_err(), "{args:?} accepted");
        }
    }
}
