//! Hot reload: the runbook files are watched, the config file is polled (its directory may
//! also hold the busy database), and SIGHUP asks too.
//!
//! A reload loads and checks everything again, exactly as `medic check` does. If anything
//! is wrong, the previous configuration and runbooks stay in force, and why is logged,
//! audited and shown in `/metrics` (`medic_config_reload_success` 0 and
//! `medic_config_reload_failures_total`). Runs in flight finish on the version they
//! started with. `server.listen`, the `[store]` section and `limits.max_concurrent` only change with a restart.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde_json::json;
use tokio::sync::mpsc;

use crate::audit::{Event, NewEntry};
use crate::guard::Guards;
use crate::loaded::{Loaded, Problem};
use crate::metrics::Metrics;
use crate::runner::Wake;
use crate::snapshot::Current;
use crate::store::Store;

/// Edits arrive as bursts of events (write, rename, chmod): wait this long for quiet.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// How often the config file's modification time and size are compared.
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// What identifies a version of the config file without reading it.
fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// What a reload works with, handed to it by the composition root.
#[derive(Clone)]
pub struct Context {
    pub config: Current,
    /// Reconfigured with the configuration they are put in force with.
    pub guards: Arc<Guards>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Wakes the runner after a reload (a route may have changed).
    pub wake: Arc<Wake>,
}

/// The file watches, registered before the server says it is listening, so that no edit
/// made after start-up is missed.
pub struct Watch {
    ctx: Context,
    watcher: Option<notify::RecommendedWatcher>,
    watched: Vec<PathBuf>,
    filter: Arc<std::sync::RwLock<Relevant>>,
    rx: mpsc::UnboundedReceiver<()>,
    /// The config file as it was when the watch began, before the server listens: an edit
    /// made once the server answers is always seen as a change.
    config_stamp: Option<(std::time::SystemTime, u64)>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

/// Registers the watches for the config file and runbook directory.
pub fn start(ctx: Context) -> Watch {
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let loaded = ctx.config.get();
    let watched = watched_dirs(&loaded);
    let filter = Relevant::new(&loaded);
    let filter = Arc::new(std::sync::RwLock::new(filter));
    let f = filter.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let relevant = f
                .read()
                .map(|f| event.paths.iter().any(|p| f.matches(p)))
                .unwrap_or(true);
            if relevant && !matches!(event.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch files; reload with SIGHUP instead");
            None
        }
    };
    if let Some(w) = watcher.as_mut() {
        for dir in &watched {
            if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; reload with SIGHUP instead");
            }
        }
    }
    let config_stamp = file_stamp(&loaded.config.source);
    Watch {
        ctx,
        watcher,
        watched,
        filter,
        rx,
        config_stamp,
        #[cfg(unix)]
        hup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
    }
}

/// Reloads on file changes and SIGHUP until `stop` completes.
pub async fn watch(w: Watch, stop: impl Future<Output = ()>) {
    let Watch {
        ctx,
        mut watcher,
        mut watched,
        filter,
        mut rx,
        mut config_stamp,
        #[cfg(unix)]
        mut hup,
    } = w;
    let config_path = ctx.config.get().config.source.clone();
    let mut poll = tokio::time::interval(CONFIG_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        let trigger = tokio::select! {
            _ = &mut stop => break,
            Some(()) = rx.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                "file change"
            }
            _ = hangup => "SIGHUP",
            _ = poll.tick() => {
                let now = file_stamp(&config_path);
                if now == config_stamp {
                    continue;
                }
                tokio::time::sleep(DEBOUNCE).await;
                "config file change"
            }
        };
        config_stamp = file_stamp(&config_path);
        if reload(&ctx, &config_path, trigger).await.is_ok() {
            // The runbook directory may have moved: watch the new one.
            let loaded = ctx.config.get();
            let now = watched_dirs(&loaded);
            if now != watched {
                if let Some(w) = watcher.as_mut() {
                    for dir in &watched {
                        let _ = w.unwatch(dir);
                    }
                    for dir in &now {
                        let _ = w.watch(dir, RecursiveMode::NonRecursive);
                    }
                }
                watched = now;
            }
            if let Ok(mut f) = filter.write() {
                *f = Relevant::new(&loaded);
            }
        }
    }
}

/// Loads the config at `path` again and puts it in force if it is entirely valid.
pub async fn reload(ctx: &Context, path: &Path, trigger: &str) -> Result<(), Vec<Problem>> {
    let p = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || Loaded::load(&p))
        .await
        .unwrap_or_else(|e| Err(vec![Problem(format!("reload panicked: {e}"))]));
    match result {
        Ok(new) => {
            let old = ctx.config.get();
            if new.config.server.listen != old.config.server.listen
                || !new.config.store.same_connection(&old.config.store)
                || new.config.limits.max_concurrent != old.config.limits.max_concurrent
            {
                tracing::warn!(
                    "changes to server.listen, the [store] section (but its retention) and limits.max_concurrent take effect at the next restart"
                );
            }
            let entry = new.audit_entry(trigger);
            ctx.config.replace(new, &ctx.guards);
            ctx.metrics.config_reload_success.set(1);
            if let Err(e) = ctx.store.audit(vec![entry]).await {
                tracing::error!(error = %e, "reloaded, but cannot write the audit log");
            }
            tracing::info!(trigger, "configuration and runbooks reloaded");
            ctx.wake.wake();
            Ok(())
        }
        Err(problems) => {
            ctx.metrics.config_reload_success.set(0);
            ctx.metrics.config_reload_failures.inc();
            for p in &problems {
                tracing::error!(problem = %p, trigger, "reload refused; the previous configuration stays in force");
            }
            let detail = json!({
                "file": path.display().to_string(),
                "trigger": trigger,
                "problems": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            });
            if let Err(e) = ctx
                .store
                .audit(vec![NewEntry::new(Event::ConfigReloadFailed, &detail)])
                .await
            {
                tracing::error!(error = %e, "cannot write the audit log");
            }
            Err(problems)
        }
    }
}

/// The directories to watch: the runbooks'.
fn watched_dirs(loaded: &Loaded) -> Vec<PathBuf> {
    vec![loaded.config.runbooks.dir.clone()]
}

/// Which changed paths matter: `*.rhai` files in the runbook directory.
struct Relevant {
    runbooks: PathBuf,
}

impl Relevant {
    fn new(loaded: &Loaded) -> Relevant {
        Relevant {
            runbooks: std::fs::canonicalize(&loaded.config.runbooks.dir)
                .unwrap_or_else(|_| loaded.config.runbooks.dir.clone()),
        }
    }

    /// Cheap checks first: the database may live in a watched directory and write often.
    fn matches(&self, path: &Path) -> bool {
        if path.extension().is_none_or(|e| e != "rhai") {
            return false;
        }
        let in_runbooks = path.parent().is_some_and(|p| {
            std::fs::canonicalize(p)
                .map(|p| p == self.runbooks)
                .unwrap_or(false)
                || p == self.runbooks
        });
        in_runbooks && path.extension().is_some_and(|e| e == "rhai")
    }
}
