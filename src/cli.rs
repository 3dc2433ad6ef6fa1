//! The command line: `medic serve`, `medic check`, `medic test`, `medic replay`,
//! `medic audit verify`, `medic audit export`, `medic hash-password`, `medic backup`,
//! `medic migrate --status`,
//! `medic completions`, `medic man`, `medic postmortem`.
//!
//! Parses arguments, sets up logging, and calls into the library. This is the edge of the
//! program: errors become messages on stderr and exit codes here, and nowhere else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::{Config, Purpose};
use crate::loaded::Loaded;
use crate::store::Store;

mod audit;

const DEFAULT_CONFIG: &str = "config/medic.toml";

/// medic: self-healing alert remediation for Prometheus Alertmanager.
#[derive(Debug, Parser)]
#[command(name = "medic", version = crate::packaging::VERSION, about, long_about = None)]
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
    /// Run runbook tests: each test's alert runs its runbook offline against mocked steps
    /// (no command runs, nothing goes on the network, `sleep` returns at once) and is
    /// compared with what the test expects. Prints each test's result, a diff for each
    /// failure, and ends with "N passed, N failed"; exit 1 on any failure. The format is in
    /// docs/testing-runbooks.md.
    Test {
        /// Test files, or directories searched for `*.toml` test files.
        #[arg(default_value = "runbooks/tests")]
        paths: Vec<PathBuf>,
        /// Run only the tests whose name matches this regular expression.
        #[arg(long, value_name = "REGEX", value_parser = parse_regex)]
        run: Option<regex::Regex>,
        /// Also write a JUnit XML report to FILE.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Show what an Alertmanager webhook body would make medic do: routes each alert with
    /// the config and runs its runbook as a dry run, printing the steps it would take, its
    /// log lines and how it would end. Nothing is run, stored or sent.
    Replay {
        /// The configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The webhook body (JSON), or `-` for standard input.
        file: PathBuf,
    },
    /// Read a password (one line) on standard input and print its argon2id hash, for
    /// `password_hash` in a `[[ui.users]]` entry of the configuration. The line's ending
    /// is not part of the password; an empty password is refused.
    HashPassword,
    /// Print a blameless postmortem draft of an incident, in Markdown, on standard output:
    /// summary, impact window, detection and response times, the timeline from the audit
    /// log, what went well, what went wrong, and suggested action items. An incident of a
    /// storm group gets one draft covering the group. Exit 1 for an unknown incident.
    Postmortem {
        /// The configuration file (for the store and `limits.relapse_window`).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The time zone of the draft's times, an IANA name such as Europe/Paris
        /// (default: the local zone, else UTC).
        #[arg(long, value_name = "ZONE", value_parser = parse_zone)]
        tz: Option<crate::postmortem::Zone>,
        /// The incident's id.
        incident_id: String,
    },
    /// Audit log commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Copy the SQLite store to PATH, consistently, also while `medic serve` runs.
    ///
    /// One snapshot, copied with SQLite's online backup while medic keeps committing;
    /// checked, written as a single file and renamed into place once whole. PostgreSQL is
    /// refused: back it up with pg_dump or a base backup (docs/operating.md, "Backups").
    Backup {
        /// The configuration file (for the store's location).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Where to write the copy (a new file; see --force).
        path: PathBuf,
        /// Replace PATH if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Show the store's schema version and what this medic would apply, without applying.
    ///
    /// Lists the migrations this medic would apply at its next start. Migrations run when
    /// `medic serve` starts; a database newer than this medic is refused (exit 1 here).
    /// See docs/upgrading.md.
    Migrate {
        /// The configuration file (for the store's location).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Show the status (the only action: migrations are applied by `serve`).
        #[arg(long, required = true)]
        status: bool,
    },
    /// Print the shell completion script for SHELL on standard output.
    Completions {
        #[arg(value_enum)]
        shell: crate::packaging::Shell,
    },
    /// Print the man page medic(1) (roff) on standard output.
    ///
    /// With --dir, write it and one page per subcommand (medic-serve.1, ...) into a
    /// directory instead, e.g. /usr/local/share/man/man1.
    Man {
        /// Write medic.1 and medic-<command>.1 into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Re-check the audit log's hash chain; exit 1 naming the first broken entry. When
    /// retention removed the oldest entries, the chain is checked from the checkpoint that
    /// accounts for them.
    Verify {
        /// The configuration file (for the store's location).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Check an export (`medic audit export`) on its own instead of the store.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Write the audit entries with their hashes as JSON lines on standard output, oldest
    /// first, from one snapshot of the store: an archive `audit verify --file` checks on
    /// its own. A summary (how many, the head hash) goes to standard error.
    Export {
        /// The configuration file (for the store's location).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Stop at the first entry written at or after this time: YYYY-MM-DD (midnight,
        /// UTC) or an RFC 3339 time.
        #[arg(long, value_name = "DATE", value_parser = audit::parse_until)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Start after entry SEQ (the last one of the previous archive).
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: i64,
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
            tracing::error!("medic: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `serve` reports its errors in the log, in the log's format; the tools print them.
    let logged = matches!(cli.command, Command::Serve { .. });
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => serve(&config).await,
            Command::Check { config } => Ok(check(&config)),
            Command::Test { paths, run, junit } => Ok(test(&paths, run.as_ref(), junit.as_deref())),
            Command::Replay { config, file } => replay(&config, &file),
            Command::HashPassword => hash_password(),
            Command::Postmortem {
                config,
                tz,
                incident_id,
            } => postmortem(&config, tz, &incident_id).await,
            Command::Backup {
                config,
                path,
                force,
            } => Ok(crate::operate::backup(&config, &path, force)?),
            Command::Migrate { config, .. } => Ok(crate::operate::migrate_status(&config)?),
            Command::Completions { shell } => {
                Ok(crate::packaging::print_completions(shell, Cli::command()))
            }
            Command::Man { dir } => {
                Ok(crate::packaging::write_man(Cli::command(), dir.as_deref())?)
            }
            Command::Audit {
                command: AuditCommand::Verify { config, file },
            } => match file {
                Some(file) => audit::verify_file(&file),
                None => audit::verify(&config).await,
            },
            Command::Audit {
                command:
                    AuditCommand::Export {
                        config,
                        until,
                        after,
                    },
            } => audit::export(&config, until, after).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) if logged => {
            tracing::error!(error = %format!("{e:#}"), "medic: {e:#}");
            ExitCode::FAILURE
        }
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
            for w in &loaded.config.warnings {
                println!("{}", w.as_warning());
            }
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

fn parse_zone(s: &str) -> Result<crate::postmortem::Zone, String> {
    crate::postmortem::Zone::parse(s).map_err(|e| e.to_string())
}

fn parse_regex(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| e.to_string())
}

fn test(paths: &[PathBuf], run: Option<&regex::Regex>, junit: Option<&Path>) -> ExitCode {
    use crate::authoring::{harness, junit as junit_xml};
    let (files, mut reports) = harness::collect(paths);
    for r in &reports {
        print!("{}", r.render());
    }
    for file in files {
        let r = harness::run_file(&file, run);
        if r.tests.is_empty() && r.problems.is_empty() {
            continue; // --run selected none of its tests
        }
        print!("{}", r.render());
        reports.push(r);
    }
    let passed: usize = reports.iter().map(|r| r.passed()).sum();
    let mut failed: usize = reports.iter().map(|r| r.failed()).sum();
    if let Some(path) = junit {
        if let Err(e) = std::fs::write(path, junit_xml::report(&reports)) {
            eprintln!(
                "medic: cannot write the JUnit report {}: {e}",
                path.display()
            );
            failed += usize::from(failed == 0);
        }
    }
    if passed + failed == 0 {
        eprintln!("medic: no test found");
    }
    println!("\n{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn replay(config: &Path, file: &Path) -> anyhow::Result<ExitCode> {
    use std::io::Read as _;
    let offline = match crate::authoring::offline::Offline::load(config) {
        Ok(o) => o,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            anyhow::bail!("{}: {} problem(s)", config.display(), problems.len());
        }
    };
    // As `POST /webhook` would: at most server.body_limit bytes.
    let limit = offline.config.server.body_limit;
    let mut body = Vec::new();
    let name = if file == Path::new("-") {
        std::io::stdin()
            .take(limit as u64 + 1)
            .read_to_end(&mut body)
            .context("reading standard input")?;
        "<stdin>".to_string()
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut body))
            .with_context(|| format!("reading {}", file.display()))?;
        file.display().to_string()
    };
    if body.len() > limit {
        anyhow::bail!(
            "{name}: larger than server.body_limit ({limit} bytes); medic would answer 413"
        );
    }
    match crate::authoring::replay::replay(&offline, &body) {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{name}: {e}");
            eprintln!("medic would answer 400");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The longest password `hash-password` reads, in bytes.
const MAX_PASSWORD: u64 = 4096;

fn hash_password() -> anyhow::Result<ExitCode> {
    use std::io::{BufRead as _, IsTerminal as _, Read as _};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("medic: type the password (it is shown as you type) and press Enter");
    }
    let mut line = String::new();
    stdin
        .lock()
        .take(MAX_PASSWORD + 1)
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.len() as u64 > MAX_PASSWORD {
        anyhow::bail!("the password is longer than {MAX_PASSWORD} bytes");
    }
    if password.is_empty() {
        anyhow::bail!("the password is empty: write it on standard input, on one line");
    }
    let hash = crate::config::hash_password(password)?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}

async fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    // The signal handlers are in place before anything else, so a SIGTERM that comes as soon
    // as the server answers (or even before) is a clean stop, never the default action.
    let shutdown = shutdown_signal();
    let loaded = match Loaded::load(path) {
        Ok(e) => e,
        Err(problems) => {
            // Logged, so that `--log-format json` holds for them too.
            for p in &problems {
                tracing::error!(config = %path.display(), problem = %p, "{p}");
            }
            anyhow::bail!(
                "{}: {} problem(s); not starting",
                path.display(),
                problems.len()
            );
        }
    };
    for w in &loaded.config.warnings {
        tracing::warn!("{}", w.as_warning());
    }
    if loaded.config.server.webhook_token.is_none() {
        tracing::warn!(
            "server.webhook_token is not set: /webhook accepts unauthenticated deliveries"
        );
    }
    crate::app::serve(loaded, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Registers for SIGINT and SIGTERM now (not when first polled); the future completes on
/// either.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(int) => tracing::info!("SIGINT received"),
            _ = wait(term) => tracing::info!("SIGTERM received"),
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupt received");
    }
}

async fn postmortem(
    path: &Path,
    tz: Option<crate::postmortem::Zone>,
    id: &str,
) -> anyhow::Result<ExitCode> {
    use crate::postmortem::{draft, Settings, Zone};
    // Only the store and `[limits]` matter: secrets need not be set.
    let config = Config::load_for(path, Purpose::Audit).map_err(|e| anyhow::anyhow!("{e}"))?;
    let zone = tz.unwrap_or_else(Zone::local);
    let store = Store::connect(&config.store, Default::default()).with_context(|| {
        format!(
            "opening the store {}",
            crate::config::redact_url_password(&config.store.url)
        )
    })?;
    let settings = Settings::from_config(&config);
    let written = draft(&store, id, settings, &zone, chrono::Utc::now()).await;
    store.close().await;
    match written.with_context(|| format!("reading incident {id:?}"))? {
        Some(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("medic: no incident {id:?} in the store");
            Ok(ExitCode::FAILURE)
        }
    }
}
