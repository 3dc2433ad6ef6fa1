//! The HTTP server: the shared state, the routes, and a graceful stop.
//!
//! [`run`] takes a bound listener and a shutdown future, so tests start the whole server
//! in-process on port 0. It serves until the future completes, then stops accepting, lets
//! requests in flight finish (bounded by a deadline), and closes the store, which commits
//! everything already acknowledged.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::audit::{Event, NewEntry};
use crate::loaded::Loaded;
use crate::metrics::Metrics;
use crate::store::{Plans, Store};

/// How long a stop waits for requests in flight before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What every request handler shares.
pub struct App {
    loaded: RwLock<Arc<Loaded>>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Wakes the runner when an incident may have been queued.
    pub wake: crate::runner::Wake,
    /// Rate limits, breakers, caps, windows and the pause switch.
    pub guards: Arc<crate::guard::Guards>,
    /// Which escalation channels keep failing.
    pub escalation: crate::escalate::Health,
    /// The address the server listens on, once bound.
    listening: std::sync::OnceLock<SocketAddr>,
}

impl App {
    pub fn new(loaded: Loaded, store: Store, metrics: Arc<Metrics>) -> Arc<App> {
        let guards = crate::guard::Guards::new(Arc::new(loaded.config.clone()), Vec::new(), None);
        // Replicas on one database share rates, caps and breakers through it.
        guards.set_shared(store.is_shared());
        store.set_storm_window(loaded.config.limits.storm_window);
        store.set_plans(Plans::from_config(&loaded.config));
        Arc::new(App {
            loaded: RwLock::new(Arc::new(loaded)),
            store,
            metrics,
            wake: Default::default(),
            guards: Arc::new(guards),
            escalation: Default::default(),
            listening: Default::default(),
        })
    }

    /// Loads what the guards keep in the store (breakers, the pause switch) and applies
    /// `limits.enabled = false`. Called at start-up, and every second when replicas share
    /// the store (another may have paused medic or tripped a breaker).
    pub async fn restore_guards(&self) -> Result<(), crate::store::StoreError> {
        let loaded = self.loaded();
        let breakers = self.store.breakers().await?;
        let mut paused = self.store.pause().await?;
        if !loaded.config.limits.enabled && paused.is_none() {
            paused = Some(crate::guard::Pause {
                by: "config (limits.enabled = false)".into(),
                at: chrono::Utc::now(),
                reason: "automation is disabled in the configuration".into(),
            });
        }
        self.metrics.paused.set(i64::from(paused.is_some()));
        self.guards.restore(breakers, paused);
        Ok(())
    }

    /// medic's external URL, for links in messages: `server.external_url`, else the
    /// address it listens on.
    pub fn medic_url(&self) -> String {
        crate::escalate::message::medic_url(&self.loaded().config, self.listening.get().copied())
    }

    /// Puts a newly loaded configuration in force. Runs in flight keep the one they took.
    pub fn replace_loaded(&self, loaded: Loaded) {
        self.guards.reconfigure(Arc::new(loaded.config.clone()));
        self.store
            .set_storm_window(loaded.config.limits.storm_window);
        self.store.set_plans(Plans::from_config(&loaded.config));
        *self
            .loaded
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(loaded);
    }

    /// The loaded config, routes and runbooks in force now. Holders keep the version they took.
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The HTTP routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/webhook", crate::ingest::route(app.clone()))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api", crate::api::router())
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::api::require_token,
        ))
        .with_state(app)
}

/// Serves `app` on `listener` until `shutdown` completes, then stops gracefully.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    if let Err(e) = app.restore_guards().await {
        tracing::error!(error = %e, "cannot read breakers and the pause switch from the store");
        return Err(std::io::Error::other(e.to_string()));
    }
    let _ = app.listening.set(addr);
    let loaded = app.loaded();
    let started = NewEntry::new(
        Event::ServerStarted,
        &json!({"version": env!("CARGO_PKG_VERSION"), "listen": addr.to_string(),
               "config": loaded.config.source.display().to_string()}),
    );
    if let Err(e) = app.store.audit(vec![started]).await {
        tracing::error!(error = %e, "cannot write to the store at start-up");
        return Err(std::io::Error::other(e.to_string()));
    }
    let watch = crate::reload::start(app.clone());
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

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    // Headers must arrive within `server.request_timeout`, as the body must.
    let timeouts = app.clone();
    let server = tokio::spawn(serve(
        listener,
        router(app.clone()),
        move || timeouts.loaded().config.server.request_timeout,
        stopped(),
    ));
    let runner = tokio::spawn(crate::runner::run(app.clone(), stopped()));
    let verifier = tokio::spawn(crate::verify::run(app.clone(), stopped()));
    let sender = tokio::spawn(crate::escalate::run(app.clone(), stopped()));
    let reloader = tokio::spawn(crate::reload::watch(watch, stopped()));
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
    if let Err(e) = sender.await {
        tracing::error!(error = %e, "the escalation sender failed while stopping");
    }
    let stopped = NewEntry::new(Event::ServerStopped, &json!({"listen": addr.to_string()}));
    if let Err(e) = app.store.audit(vec![stopped]).await {
        tracing::warn!(error = %e, "could not record the stop in the audit log");
    }
    app.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Serves `router` on `listener` over HTTP/1.1 until `shutdown` completes, then stops
/// accepting and waits for the connections open to finish their requests.
///
/// Each connection must send a request's complete headers within `header_read_timeout()`
/// (asked per connection, so a reload applies to new ones), or it is closed: a client that
/// opens connections and sends a few bytes on each cannot hold them forever. Handlers see
/// the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: impl Fn() -> Duration + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Each connection holds a clone; `closed()` resolves when the last one is gone.
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(axum::body::Body::new)
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(service);
        let timeout = header_read_timeout();
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stop.wait_for(|s| *s), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(open);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let loaded = app.loaded();
    let paused = app.guards.paused();
    match app.store.ping().await {
        Ok(()) => {
            // A failing channel does not make medic unready (it still remediates and
            // queues notifications), but it is shown.
            let failing: Vec<_> = app
                .escalation
                .failing(loaded.config.escalation.retry.fall_through_after)
                .into_iter()
                .map(|(channel, failures)| json!({"channel": channel, "consecutive_failures": failures}))
                .collect();
            (
                StatusCode::OK,
                axum::Json(json!({"ready": true, "runbooks": loaded.catalog.len(), "routes": loaded.config.routes.len(),
                                  "failing_channels": failing, "paused": paused})),
            )
                .into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ready": false, "error": format!("store: {e}")})),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut worst: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for b in app.guards.breakers() {
        let v = worst.entry(b.route.clone()).or_insert(0);
        *v = (*v).max(b.breaker.state.gauge());
    }
    for (route, v) in worst {
        app.metrics
            .breaker_state
            .get_or_create(&crate::metrics::RouteLabel { route })
            .set(v);
    }
    app.metrics
        .paused
        .set(i64::from(app.guards.paused().is_some()));
    match app.store.count_by_state().await {
        Ok(counts) => app.metrics.set_incident_counts(&counts),
        Err(e) => tracing::warn!(error = %e, "cannot count incidents for /metrics"),
    }
    match app.store.outbox_counts().await {
        Ok(c) => {
            app.metrics.outbox_pending.set(c.pending as i64);
            app.metrics.outbox_failed.set(c.failed as i64);
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the outbox for /metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
