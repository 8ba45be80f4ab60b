//! The admin commands of the `ferry` binary (`tenants`, `tokens`, `sources`, `syncs`, `runs`):
//! a client of a node's gRPC admin API, tables for people and `--output json` for scripts.
//!
//! Every command connects to `--endpoint`, sends the token from `--token-file` or
//! `FERRY_TOKEN` as `authorization: Bearer …`, and ends with one of the exit codes of
//! [`ExitKind`] and, on failure, a single `error: …` line on stderr.

mod client;
mod error;
mod input;
mod json;
mod nodes;
mod output;
mod runs;
mod sources;
mod syncs;
mod tenants;
mod webhook;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use client::Client;
pub use error::CliError;
use output::Format;

/// Where the CLI looks for a node unless told otherwise (the port the docs use for `ferry node --listen`).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7700";

const EXIT_CODES: &str = "\
Environment: FERRY_ENDPOINT, FERRY_TOKEN (or FERRY_TOKEN_FILE), FERRY_TENANT, FERRY_OUTPUT, FERRY_TIMEOUT, FERRY_ENDPOINT_CA_CERT.

Exit codes: 0 done; 1 the node refused the request or another error; 2 bad command line or \
input file; 3 no token, a refused token, or not allowed; 4 not found; 5 the node cannot be \
reached or did not answer in time; 6 the followed run failed or was cancelled.";

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Tenants (one analytics project each): create, get, list, update, delete.
    Tenants(Group<tenants::TenantsCommand>),
    /// A tenant's API tokens: create (the token is shown once), list, revoke.
    Tokens(Group<tenants::TokensCommand>),
    /// Warehouse connections: create (tested first), list tables and columns, preview rows.
    Sources(Group<sources::SourcesCommand>),
    /// Syncs: create, update, pause, resume, delete, trigger (and follow), dry run.
    Syncs(Group<syncs::SyncsCommand>),
    /// Runs of a sync: list, get, per-row errors, cancel, follow with a progress bar.
    Runs(Group<runs::RunsCommand>),
    /// The cluster's nodes (operator token): list with their load, get one with its syncs,
    /// drain one (it exits once empty).
    Nodes(Group<nodes::NodesCommand>),
    /// Where each sync is placed in the cluster (operator token).
    Assignments(Group<nodes::AssignmentsCommand>),
}

#[derive(Args)]
#[command(after_help = EXIT_CODES)]
pub struct Group<C: Subcommand> {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: C,
}

/// How to reach the node and how to print; accepted before or after the subcommand.
#[derive(Args, Clone)]
pub struct Connection {
    /// The node's admin API.
    #[arg(long, env = "FERRY_ENDPOINT", default_value = DEFAULT_ENDPOINT, global = true)]
    endpoint: String,
    /// A file holding the bearer token (the operator's or a tenant's); else FERRY_TOKEN is used.
    /// There is no --token flag: a token on the command line shows in `ps` and shell history.
    #[arg(long, env = "FERRY_TOKEN_FILE", global = true, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// The tenant to act in. A tenant token may leave it out (its own tenant is meant); the
    /// operator token must give it.
    #[arg(long, env = "FERRY_TENANT", global = true)]
    tenant: Option<String>,
    /// For an https:// endpoint: a PEM file with the CA that signed the node's (or its
    /// ingress's) certificate, trusted besides the public web's roots.
    #[arg(
        long,
        env = "FERRY_ENDPOINT_CA_CERT",
        global = true,
        value_name = "PATH"
    )]
    endpoint_ca_cert: Option<PathBuf>,
    /// `table` for people, `json` for scripts.
    #[arg(
        long,
        short = 'o',
        value_enum,
        env = "FERRY_OUTPUT",
        default_value = "table",
        global = true
    )]
    output: Format,
    /// How long to wait for each call: seconds, or with a unit (500ms, 30s, 5m). Following a
    /// run is not limited by it.
    #[arg(long, env = "FERRY_TIMEOUT", default_value = "30s", value_parser = parse_duration, global = true)]
    timeout: Duration,
}

impl Connection {
    fn connect(&self) -> Result<Client, CliError> {
        let token = client::read_token(self.token_file.as_ref())?;
        Client::connect(
            &self.endpoint,
            token,
            self.timeout,
            self.endpoint_ca_cert.as_deref(),
        )
    }

    /// The tenant for requests that name one (empty: the token's own).
    fn tenant(&self) -> String {
        self.tenant.clone().unwrap_or_default()
    }
}

/// `30`, `30s`, `500ms`, `5m`, `1h`: a positive duration (also `ferry node --drain-timeout`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 30, 30s, 500ms, 5m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "'{text}': unknown unit '{other}' (use ms, s, m or h)"
            ))
        }
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("'{text}': the timeout must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub async fn run(command: AdminCommand) -> Result<(), CliError> {
    match command {
        AdminCommand::Tenants(g) => tenants::run_tenants(&g.conn, g.command).await,
        AdminCommand::Tokens(g) => tenants::run_tokens(&g.conn, g.command).await,
        AdminCommand::Sources(g) => sources::run(&g.conn, g.command).await,
        AdminCommand::Syncs(g) => syncs::run(&g.conn, g.command).await,
        AdminCommand::Runs(g) => runs::run(&g.conn, g.command).await,
        AdminCommand::Nodes(g) => nodes::run_nodes(&g.conn, g.command).await,
        AdminCommand::Assignments(g) => nodes::run_assignments(&g.conn, g.command).await,
    }
}

/// The process exit code for an error that ended `main`: the admin commands' own codes, else 1.
pub fn exit_code(e: &anyhow::Error) -> std::process::ExitCode {
    match e.downcast_ref::<CliError>() {
        Some(cli) => std::process::ExitCode::from(cli.code()),
        None => std::process::ExitCode::FAILURE,
    }
}

/// Reads a secret from a file (`-`: stdin), trimmed of its final newline.
fn read_secret(path: &std::path::Path, flag: &str) -> Result<String, CliError> {
    let text = if path == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| CliError::usage(format!("{flag} {}: {e}", path.display())))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::Subcommand;
        // Clap checks names, conflicts and requirements only when a command is parsed; this
        // checks every admin subcommand at once.
        AdminCommand::augment_subcommands(clap::Command::new("ferry")).debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5y").unwrap_err().contains("unit"));
    }
}
