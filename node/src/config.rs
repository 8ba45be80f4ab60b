//! `ferry node`'s configuration file: the node's own settings and, until the admin API lands,
//! the tenants, sources and syncs it runs. TOML; unknown keys are rejected; every spec is
//! validated at start-up with errors that name the file and the field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
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
        }
    }
}

/// A sync with everything it needs, resolved from the file.
#[derive(Debug, Clone)]
pub struct Job {
    pub tenant: TenantSpec,
    pub source: SourceSpec,
    pub sync: SyncSpec,
    pub every: Option<Duration>,
}

/// `hourly`, `daily`, `weekly`, or `every N[s|m|h|d]`; cron expressions arrive with the
/// scheduler of the admin API. `None`: only on demand (`--once`).
pub fn parse_schedule(text: &str) -> Result<Duration, String> {
    let t = text.trim().to_ascii_lowercase();
    match t.as_str() {
        "hourly" => return Ok(Duration::from_secs(3600)),
        "daily" => return Ok(Duration::from_secs(86_400)),
        "weekly" => return Ok(Duration::from_secs(7 * 86_400)),
        _ => {}
    }
    let Some(rest) = t.strip_prefix("every ") else {
        return Err(format!("'{text}' is not a schedule this node understands: use hourly, daily, weekly or 'every N[s|m|h|d]'"));
    };
    let rest = rest.trim();
    let split = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (n, unit) = rest.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{text}': expected a number after 'every'"))?;
    let secs = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => n,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60,
        "h" | "hour" | "hours" => n * 3600,
        "d" | "day" | "days" => n * 86_400,
        other => {
            return Err(format!(
                "'{text}': unknown unit '{other}' (use s, m, h or d)"
            ))
        }
    };
    if secs == 0 {
        return Err(format!("'{text}': the interval must be positive"));
    }
    Ok(Duration::from_secs(secs))
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
            let every = match sync.schedule.as_deref().map(parse_schedule) {
                Some(Ok(d)) => Some(d),
                Some(Err(e)) => {
                    problems.push(format!("{place}: sync.schedule: {e}"));
                    None
                }
                None => None,
            };
            if let (Some(t), Some(s)) = (tenant, source) {
                jobs.push(Job {
                    tenant: (*t).clone(),
                    source: (*s).clone(),
                    sync: sync.clone(),
                    every,
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
        assert_eq!(parse_schedule("hourly"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_schedule("every 90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_schedule("every 2 h"), Ok(Duration::from_secs(7200)));
        assert!(parse_schedule("*/5 * * * *")
            .unwrap_err()
            .contains("hourly"));
        assert!(parse_schedule("every 0s").is_err());
        assert!(parse_schedule("every 5y").unwrap_err().contains("unit"));
    }

    #[test]
    fn every_problem_is_named_with_its_place() {
        let cfg: NodeConfig = toml::from_str(
            r#"
[[tenants]]
id = "acme"
name = "Acme"
project_id = 0
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
