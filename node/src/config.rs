//! `ferry node`'s configuration file: the node's own settings and, until the admin API lands,
//! the tenants, sources and syncs it runs. TOML; unknown keys are rejected; every spec is
//! validated at start-up with errors that name the file and the field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ferry_core::schedule::Schedule;
use ferry_core::spec::{SourceSpec, SyncSpec, TenantSpec};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default)]
    pub node: NodeSettings,
    #[serde(default)]
    pub tenants: Vec<TenantSpec>,
    #[serde(default)]
    pub sources: Vec<SourceSpec>,
    #[serde(default)]
    pub syncs: Vec<SyncSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSettings {
    pub id: String,
    /// Where the embedded state store lives (overridden by `--data`).
    pub data_dir: Option<PathBuf>,
    /// Rows per page read from a source.
    pub page_size: usize,
    /// Import shards per running sync.
    pub shards: usize,
    /// Requests in flight per sync.
    pub max_in_flight: usize,
    /// The destination is Ferry's bundled receiver: its extensions (event deletes) may be used.
    pub receiver_extensions: bool,
    /// Runs at once on this node (its run slots); syncs due beyond that wait for a slot.
    pub max_runs: usize,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            id: "node-1".into(),
            data_dir: None,
            page_size: 5000,
            shards: 4,
            max_in_flight: 10,
            receiver_extensions: false,
            max_runs: ferry_coordinator::run_manager::DEFAULT_MAX_RUNS,
        }
    }
}

/// A sync with everything it needs, resolved from the file.
#[derive(Debug, Clone)]
pub struct Job {
    pub tenant: TenantSpec,
    pub source: SourceSpec,
    pub sync: SyncSpec,
    /// When the node runs it (manual: only with `--once`).
    pub schedule: Schedule,
}

impl NodeConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Validates every spec and resolves each sync's tenant and source. All problems are
    /// reported together, each naming its place in the file.
    pub fn jobs(&self, file: &Path) -> anyhow::Result<Vec<Job>> {
        let mut problems = Vec::new();
        let mut tenants = HashMap::new();
        for (i, t) in self.tenants.iter().enumerate() {
            if let Err(e) = t.validate() {
                problems.push(format!("tenants[{i}] ({}): {e}", t.id));
            }
            if tenants.insert(t.id.clone(), t).is_some() {
                problems.push(format!("tenants[{i}]: tenant id '{}' is used twice", t.id));
            }
        }
        let mut sources = HashMap::new();
        for (i, s) in self.sources.iter().enumerate() {
            if let Err(e) = s.validate() {
                problems.push(format!("sources[{i}] ({}): {e}", s.id));
            }
            if !tenants.contains_key(&s.tenant) {
                problems.push(format!(
                    "sources[{i}] ({}): source.tenant: unknown tenant '{}'",
                    s.id, s.tenant
                ));
            }
            if sources
                .insert((s.tenant.clone(), s.id.clone()), s)
                .is_some()
            {
                problems.push(format!(
                    "sources[{i}]: source id '{}' is used twice in tenant '{}'",
                    s.id, s.tenant
                ));
            }
        }
        let mut jobs = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, sync) in self.syncs.iter().enumerate() {
            let place = format!("syncs[{i}] ({})", sync.id);
            if !seen.insert((sync.tenant.clone(), sync.id.clone())) {
                problems.push(format!(
                    "{place}: sync id '{}' is used twice in tenant '{}'",
                    sync.id, sync.tenant
                ));
            }
            match sync.validate() {
                Ok(valid) => {
                    for w in valid.warnings {
                        tracing::warn!(sync = %sync.id, "{w}");
                    }
                }
                Err(e) => problems.push(format!("{place}: {e}")),
            }
            let tenant = tenants.get(&sync.tenant);
            let source = sources.get(&(sync.tenant.clone(), sync.source.clone()));
            if tenant.is_none() {
                problems.push(format!(
                    "{place}: sync.tenant: unknown tenant '{}'",
                    sync.tenant
                ));
            }
            if source.is_none() {
                problems.push(format!(
                    "{place}: sync.source: unknown source '{}' in tenant '{}'",
                    sync.source, sync.tenant
                ));
            }
            // A bad schedule is among the validation problems above.
            let schedule = sync
                .parsed_schedule()
                .unwrap_or_else(|_| Schedule::manual());
            if let (Some(t), Some(s)) = (tenant, source) {
                jobs.push(Job {
                    tenant: (*t).clone(),
                    source: (*s).clone(),
                    sync: sync.clone(),
                    schedule,
                });
            }
        }
        if !problems.is_empty() {
            bail!(
                "{} is not valid:\n  {}",
                file.display(),
                problems.join("\n  ")
            );
        }
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let job = |schedule: &str| {
            let cfg: NodeConfig = toml::from_str(&format!(
                "[[tenants]]\nid='t'\nname='T'\nproject_id=1\ndestination={{base_url='http://127.0.0.1:1'}}\nauth={{project_token='x'}}\n\
                 [[sources]]\nid='s'\ntenant='t'\n[sources.kind.sqlite]\npath='w.db'\n\
                 [[syncs]]\nid='u'\ntenant='t'\nsource='s'\ntable='users'\ntable_type='user_profiles'\nmode='full'\n{schedule}\n\
                 [syncs.mapping]\ndistinct_id_column='id'\n"
            ))
            .unwrap();
            cfg.jobs(Path::new("ferry.toml"))
                .map(|mut jobs| jobs.remove(0).schedule)
        };
        assert_eq!(
            job("schedule = 'every 90s'").unwrap().interval(),
            Some(std::time::Duration::from_secs(90))
        );
        assert!(job("").unwrap().is_manual());
        let cron = job("schedule = '*/5 * * * *'\nschedule_timezone = 'Europe/Berlin'").unwrap();
        assert_eq!(cron.timezone().map(|tz| tz.name()), Some("Europe/Berlin"));
        let err = job("schedule = 'every 5y'").unwrap_err().to_string();
        assert!(
            err.contains("syncs[0] (u): sync.schedule:") && err.contains("unit"),
            "{err}"
        );
        let err = job("schedule = 'daily'\nschedule_timezone = 'Mars/Base'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sync.schedule_timezone"), "{err}");
    }

    #[test]
    fn run_slots_come_from_the_node_section() {
        let cfg: NodeConfig = toml::from_str("[node]\nmax_runs = 2\n").unwrap();
        assert_eq!(cfg.node.max_runs, 2);
        let default: NodeConfig = toml::from_str("").unwrap();
        assert_eq!(default.node.max_runs, 4);
    }

    #[test]
    fn every_problem_is_named_with_its_place() {
        let cfg: NodeConfig = toml::from_str(
            r#"
[[tenants]]
id = "acme"
name = "Acme"
project_id = 0
send_budget = 0
[tenants.destination]
region = "eu"
[tenants.auth.service_account]
user = "sa"
secret = "pw"

[[syncs]]
id = "orders"
tenant = "acme"
source = "missing"
table = "orders"
table_type = "events"
mode = "full"
schedule = "sometimes"
"#,
        )
        .unwrap();
        let err = cfg.jobs(Path::new("ferry.toml")).unwrap_err().to_string();
        assert!(
            err.contains("tenants[0] (acme): tenant.project_id"),
            "{err}"
        );
        assert!(err.contains("tenant.send_budget"), "{err}");
        assert!(
            err.contains("syncs[0] (orders): sync.source: unknown source 'missing'"),
            "{err}"
        );
        assert!(err.contains("sync.schedule"), "{err}");
        assert!(err.contains("sync.mode"), "{err}");
        assert!(
            toml::from_str::<NodeConfig>("[node]\nidd = 1\n").is_err(),
            "unknown keys are rejected"
        );
    }
}
