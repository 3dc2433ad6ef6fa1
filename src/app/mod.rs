//! The composition root: the one place that builds medic's engine and starts it.
//!
//! It opens the store, binds the listener, builds the shared pieces (the configuration in
//! force, the guards, the metrics, the runner's wake-up, the escalation channels' health,
//! the clock), and hands each worker a narrow context of its own, defined in the worker's
//! module: `runner::Context`, `verify::Context`, `approval::Context`, `escalate::Context`,
//! `reload::Context`,
//! and for the HTTP side `ingest::Context`, `api::Context`, `ui::Context`,
//! `callbacks::Context` and
//! `server::Context`. Nothing
//! imports this module back; the workers never reach for a shared object.
//!
//! [`run`] takes a bound listener and a shutdown future, so tests start the whole engine
//! in-process on port 0 (with a clock of their own). It serves until the future completes,
//! then stops accepting, lets requests in flight finish (bounded by a deadline), stops the
//! workers, and closes the store, which commits everything already acknowledged.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;

use crate::audit::{Event, NewEntry};
use crate::clock::Clock;
use crate::escalate::Health;
use crate::guard::Guards;
use crate::loaded::Loaded;
use crate::metrics::Metrics;
use crate::runner::Wake;
use crate::snapshot::Current;
use crate::store::{Store, StoreError};
use crate::{api, approval, callbacks, escalate, ingest, reload, runner, server, ui, verify};

/// How long a stop waits for requests in flight before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the engine is built from: a checked configuration, an open store, the metrics the
/// store already reports to, and where time comes from.
pub struct Engine {
    pub loaded: Loaded,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

impl Engine {
    /// An engine on the real clock.
    pub fn new(loaded: Loaded, store: Store, metrics: Arc<Metrics>) -> Engine {
        Engine {
            loaded,
            store,
            metrics,
            clock: Clock::system(),
        }
    }
}

/// Why `medic serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the store {url}")]
    Store {
        /// The store's URL, its password hidden.
        url: String,
        source: StoreError,
    },
    #[error("writing the audit log")]
    Audit(#[source] StoreError),
    #[error("{config}: server.listen: cannot listen on {listen}")]
    Listen {
        config: String,
        listen: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving")]
    Serve(#[source] std::io::Error),
}

/// `medic serve`: opens the store and the listener that `loaded` names, then runs the
/// engine until `shutdown` completes.
pub async fn serve(
    loaded: Loaded,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    // What a step leaves behind is re-parented to medic, so it can be ended and collected.
    if let Err(e) = crate::steps::reaper::become_subreaper() {
        tracing::warn!(error = %e, "cannot become a child subreaper: processes that escape a step's session (setsid) may outlive it");
    }
    let metrics = Arc::new(Metrics::default());
    let store = Store::connect(&loaded.config.store, metrics.store.clone()).map_err(|source| {
        StartError::Store {
            url: crate::config::redact_url_password(&loaded.config.store.url),
            source,
        }
    })?;
    store
        .audit(vec![loaded.audit_entry("start")])
        .await
        .map_err(StartError::Audit)?;
    let listen = loaded.config.server.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Listen {
            config: loaded.config.source.display().to_string(),
            listen,
            source,
        })?;
    run(listener, Engine::new(loaded, store, metrics), shutdown)
        .await
        .map_err(StartError::Serve)
}

/// Serves `engine` on `listener` until `shutdown` completes, then stops gracefully.
pub async fn run(
    listener: TcpListener,
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Engine {
        loaded,
        store,
        metrics,
        clock,
    } = engine;
    let addr = listener.local_addr()?;

    // The shared pieces, built once.
    let guards = Arc::new(Guards::new(Vec::new(), None));
    // Replicas on one database share rates, caps and breakers through it.
    guards.set_shared(store.is_shared());
    let config = Current::new(loaded, &guards, &store);
    // The store stamps what it writes (deadlines, leases, due notifications, renotify
    // rounds) with the same clock as everything else.
    store.set_clock(clock.clone());
    let wake = Arc::new(Wake::default());
    let health = Arc::new(Health::default());

    // Each worker's context: only what it uses.
    let runner = runner::Context {
        store: store.clone(),
        guards: guards.clone(),
        wake: wake.clone(),
        metrics: metrics.clone(),
        config: config.clone(),
        clock: clock.clone(),
    };
    let verifier = verify::Context {
        store: store.clone(),
        guards: guards.clone(),
        metrics: metrics.clone(),
        config: config.clone(),
        clock: clock.clone(),
    };
    let approver = approval::Context {
        store: store.clone(),
        config: config.clone(),
        clock: clock.clone(),
    };
    let sender = escalate::Context {
        store: store.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        config: config.clone(),
        clock: clock.clone(),
        listening: Some(addr),
    };
    let reloader = reload::Context {
        config: config.clone(),
        guards: guards.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        wake: wake.clone(),
    };
    let ingest = Arc::new(ingest::Context {
        config: config.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        guards: guards.clone(),
        wake: wake.clone(),
        clock: clock.clone(),
    });
    let api = Arc::new(api::Context {
        store: store.clone(),
        guards: guards.clone(),
        metrics: metrics.clone(),
        wake: wake.clone(),
        clock: clock.clone(),
        config: config.clone(),
    });
    let console = ui::Context {
        store: store.clone(),
        clock: clock.clone(),
        config: config.clone(),
        guards: guards.clone(),
        metrics: metrics.clone(),
        wake: wake.clone(),
    };
    let callbacks = Arc::new(callbacks::Context {
        store: store.clone(),
        config: config.clone(),
        clock: clock.clone(),
    });
    let ops = Arc::new(server::Context {
        config: config.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        guards: guards.clone(),
        escalation: health,
    });

    if let Err(e) = runner.restore_guards().await {
        tracing::error!(error = %e, "cannot read breakers and the pause switch from the store");
        return Err(std::io::Error::other(e.to_string()));
    }
    let loaded = config.get();
    let started = NewEntry::new(
        Event::ServerStarted,
        &json!({"version": env!("CARGO_PKG_VERSION"), "listen": addr.to_string(),
               "config": loaded.config.source.display().to_string()}),
    );
    if let Err(e) = store.audit(vec![started]).await {
        tracing::error!(error = %e, "cannot write to the store at start-up");
        return Err(std::io::Error::other(e.to_string()));
    }
    let watch = reload::start(reloader);
    let c = &loaded.config;
    tracing::info!(
        addr = %addr,
        config = %c.source.display(),
        store = %crate::config::redact_url_password(&c.store.url),
        routes = c.routes.len(),
        channels = c.escalation.channels.len(),
        runbooks = loaded.catalog.len(),
        "listening"
    );
    drop(loaded);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    // Headers must arrive within `server.request_timeout`, as the body must.
    let timeouts = config.clone();
    let server = tokio::spawn(server::serve(
        listener,
        server::router(ops, ingest, api, console, callbacks),
        move || timeouts.get().config.server.request_timeout,
        stopped(),
    ));
    let runner = tokio::spawn(runner::run(runner, stopped()));
    let verifier = tokio::spawn(verify::run(verifier, stopped()));
    let approver = tokio::spawn(approval::run(approver, stopped()));
    let sender = tokio::spawn(escalate::run(sender, stopped()));
    let reloader = tokio::spawn(reload::watch(watch, stopped()));
    shutdown.await;
    tracing::info!("stopping: no new connections; finishing requests in flight, cancelling runs");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "server error while stopping"),
        Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
        Err(_) => tracing::warn!(
            grace = ?SHUTDOWN_GRACE,
            "requests still in flight after the grace period were abandoned (none was acknowledged)"
        ),
    }
    if let Err(e) = runner.await {
        tracing::error!(error = %e, "the runner failed while stopping");
    }
    let _ = reloader.await;
    let _ = verifier.await;
    let _ = approver.await;
    if let Err(e) = sender.await {
        tracing::error!(error = %e, "the escalation sender failed while stopping");
    }
    let stopped = NewEntry::new(Event::ServerStopped, &json!({"listen": addr.to_string()}));
    if let Err(e) = store.audit(vec![stopped]).await {
        tracing::warn!(error = %e, "could not record the stop in the audit log");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
