//! The `ferry` binary: one executable for every role.

mod cli;
mod config;
mod node_cmd;
mod quickstart;
mod receiver_cmd;
mod runs;
mod serve;

use clap::{Parser, Subcommand};

/// Syncs and the receiver allocate and free per row and per event from several threads; glibc's
/// malloc cost over a quarter of their CPU and kept freed pages (see README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Keep a Mixpanel project in step with your warehouse"
)]
struct Cli {
    /// Log format: `text` for people, `json` for a cluster's log pipeline.
    #[arg(long, global = true, env = "FERRY_LOG_FORMAT", default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Demo everything on this machine: a SQLite warehouse, a receiver, an embedded node, one
    /// sync of each table type. Under a minute; leaves its data in a folder.
    Quickstart(quickstart::QuickstartArgs),
    /// Run a node with an embedded state store: the syncs of a config file, or (--listen) the
    /// admin API and the syncs defined through it.
    Node(node_cmd::NodeArgs),
    /// Run a local Mixpanel-compatible ingestion and export server (for dry runs and tests).
    Receiver(receiver_cmd::ReceiverArgs),
    /// Print a new random key for sealing stored credentials (FERRY_SECRET_KEY), or a token.
    SecretKey,
    #[command(flatten)]
    Admin(cli::AdminCommand),
}

fn init_logging(format: &str, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| default_level.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `ferry secret-key`: the key on stdout (for `$(...)` and files), how to use it on stderr.
fn print_secret_key() {
    println!(
        "{}",
        ferry_coordinator::secrets::SecretBox::generate_base64()
    );
    eprintln!(
        "Give this to every node as FERRY_SECRET_KEY (or in a file named by FERRY_SECRET_KEY_FILE, \
         e.g. a Kubernetes Secret). Keep it: stored credentials cannot be read without it. \
         A second run prints another, usable as FERRY_OPERATOR_TOKEN."
    );
}

fn main() -> std::process::ExitCode {
    // rustls is linked with both ring and aws-lc-rs (ractor_cluster's tokio-rustls), so a
    // builder without a named provider would panic: make ring the process default once. Err
    // only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // The quickstart talks to people through its own output; keep the logs to warnings.
    let level = if matches!(cli.command, Command::Quickstart(_) | Command::Admin(_)) {
        "warn"
    } else {
        "info"
    };
    init_logging(&cli.log_format, level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Quickstart(args) => quickstart::run(args).await,
            Command::Node(args) => node_cmd::run(args).await,
            Command::Receiver(args) => receiver_cmd::run(args).await,
            Command::SecretKey => {
                print_secret_key();
                Ok(())
            }
            Command::Admin(command) => cli::run(command).await.map_err(anyhow::Error::from),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            cli::exit_code(&e)
        }
    }
}
