//! `ferry-redshift-standin CONFIG.toml`: serves the Redshift Data API stand-in until stopped.
//! The TOML file is a [`StandinConfig`](ferry_redshift_standin::StandinConfig).

use anyhow::{bail, Context, Result};

#[tokio::main]
async fn main() -> Result<()> {
    let Some(path) = std::env::args().nth(1) else {
        bail!("usage: ferry-redshift-standin CONFIG.toml");
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let config: ferry_redshift_standin::StandinConfig =
        toml::from_str(&text).with_context(|| format!("parsing {path}"))?;
    let standin = ferry_redshift_standin::start(config).await?;
    println!("redshift data api stand-in listening on {}", standin.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
