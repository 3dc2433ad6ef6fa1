//! The command line: `medic serve`, `medic check`, `medic audit verify`.
//!
//! Parses arguments, sets up logging, and calls into the library. This is the edge of the
//! program: errors become messages on stderr and exit codes here, and nowhere else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::audit::Verifier;
use crate::config::Config;
use crate::loaded::Loaded;
use crate::metrics::Metrics;
use crate::server::App;
use crate::store::Store;

const DEFAULT_CONFIG: &str = "config/medic.toml";

/// medic: self-healing alert remediation for Prometheus Alertmanager.
#[derive(Debug, Parser)]
#[command(name = "medic", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine: receive Alertmanager webhooks, keep incidents, serve the API.
    /// Stops cleanly on SIGINT or SIGTERM.
    Serve {
        /// The configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate the configuration and runbooks; print one line per problem and exit 1
    /// if there is any.
    Check {
        /// The configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Audit log commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Re-check the audit log's hash chain; exit 1 naming the first broken entry.
    Verify {
        /// The configuration file (for the store's location).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("medic: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => serve(&config).await,
            Command::Check { config } => Ok(check(&config)),
            Command::Audit {
                command: AuditCommand::Verify { config },
            } => verify(&config).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("medic: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn check(path: &Path) -> ExitCode {
    match Loaded::load(path) {
        Ok(loaded) => {
            println!(
                "{}: ok ({} routes, {} runbooks)",
                path.display(),
                loaded.config.routes.len(),
                loaded.catalog.len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems {
                println!("{p}");
            }
            eprintln!("{}: {} problem(s)", path.display(), problems.len());
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match Loaded::load(path) {
        Ok(e) => e,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            anyhow::bail!(
                "{}: {} problem(s); not starting",
                path.display(),
                problems.len()
            );
        }
    };
    if loaded.config.server.webhook_token.is_none() {
        tracing::warn!(
            "server.webhook_token is not set: /webhook accepts unauthenticated deliveries"
        );
    }
    let metrics = Arc::new(Metrics::default());
    let store = Store::open(&loaded.config.store.url, metrics.store.clone())
        .with_context(|| format!("opening the store {}", loaded.config.store.url))?;
    let entry = loaded.audit_entry("start");
    store
        .audit(vec![entry])
        .await
        .context("writing the audit log")?;
    let listen = loaded.config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "{}: server.listen: cannot listen on {listen}",
                path.display()
            )
        })?;
    let app = App::new(loaded, store, metrics);
    crate::server::run(listener, app, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

async fn verify(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = Store::open(&config.store.url, Default::default())
        .with_context(|| format!("opening the store {}", config.store.url))?;
    let mut verifier = Verifier::default();
    let mut after = 0;
    loop {
        let page = store.audit_page(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for entry in &page {
            if let Err(broken) = verifier.check(entry) {
                println!("{broken}");
                eprintln!("audit log BROKEN");
                store.close().await;
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    store.close().await;
    let (n, head) = verifier.summary();
    println!("audit log intact: {n} entries, head {head}");
    Ok(ExitCode::SUCCESS)
}
