//! Ingest: the `POST /webhook` endpoint that takes Alertmanager's deliveries.
//!
//! The path of one delivery: check credentials, content type and size; parse and check the
//! body ([`payload`]); route each alert (pure, [`crate::routing`]); hand the whole delivery
//! to the store, which commits it in the next group commit; answer 200 only after that
//! commit is durable. Anything that goes wrong is answered so that Alertmanager does the
//! right thing: 4xx for a body it should not resend as is, 503 when a retry will help.
//! What an alert contains never refuses a delivery: an alert over medic's limits is stored
//! bounded and escalated `invalid_alert`, and the others of its delivery go on as usual.
//!
//! The checks that need none of the body are layers in front of the handler ([`route`],
//! `intake.rs`): credentials, content type, and the body's limits in size (tower-http's
//! `RequestBodyLimit`) and time, read from the config in force for each delivery so that a
//! reload applies to the next one.

mod intake;
pub mod payload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::{Extension, Json};
use http_body_util::{BodyExt as _, LengthLimitError};
use serde_json::{json, Value};
use tower::ServiceBuilder;

use crate::audit::{Event, NewEntry};
use crate::clock::Clock;
use crate::guard::{Guards, Limits};
use crate::metrics::Metrics;
use crate::metrics::{ReasonLabel, StatusLabel};
use crate::routing::Decision;
use crate::runner::Wake;
use crate::snapshot::{Current, Snapshot};
use crate::store::{AlertEffect, Delivery, Store};

/// What a delivery is handled with, handed to ingest by the composition root.
pub struct Context {
    pub config: Current,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// For the breakers that a resolution after a run closes.
    pub guards: Arc<Guards>,
    /// Wakes the runner when a delivery queued an incident.
    pub wake: Arc<Wake>,
    pub clock: Clock,
}

/// `POST /webhook`: the handler behind its layers, outermost first. The layers run only for
/// a `POST` (`route_layer`): another method is answered 405, whatever its credentials.
pub fn route<S: Clone + Send + Sync + 'static>(ctx: Arc<Context>) -> MethodRouter<S> {
    let layers = ServiceBuilder::new()
        .layer(from_fn_with_state(ctx.clone(), intake::observe))
        .layer(from_fn_with_state(ctx.clone(), intake::credentials))
        .layer(from_fn_with_state(ctx.clone(), intake::content_type))
        .layer(from_fn_with_state(ctx.clone(), intake::limits));
    post(webhook).route_layer(layers).with_state(ctx)
}

/// How a delivery ended, for `medic_webhook_deliveries_total{outcome}`: carried on the
/// answer back to the outermost layer, which counts it.
#[derive(Clone, Copy)]
struct Outcome(&'static str);

/// The config, routes and runbooks in force when the delivery arrived: every layer and step
/// of one delivery uses this one version, whatever a reload does meanwhile.
#[derive(Clone)]
struct InForce(Arc<Snapshot>);

fn answer(outcome: &'static str, status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(Outcome(outcome));
    response
}

fn error(outcome: &'static str, status: StatusCode, message: impl Into<String>) -> Response {
    answer(outcome, status, json!({ "error": message.into() }))
}

/// Counts a refused delivery in `medic_webhook_rejected_total{reason}`.
fn count_rejected(ctx: &Context, reason: &'static str) {
    ctx.metrics
        .rejected
        .get_or_create(&ReasonLabel { reason })
        .inc();
}

/// A 4xx: a body Alertmanager should not resend as is, counted by `reason`.
fn refuse(
    ctx: &Context,
    reason: &'static str,
    status: StatusCode,
    message: impl Into<String>,
) -> Response {
    count_rejected(ctx, reason);
    error("rejected", status, message)
}

fn too_large(ctx: &Context, limit: usize) -> Response {
    refuse(
        ctx,
        "body_too_large",
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body exceeds the limit of {limit} bytes"),
    )
}

/// The handler behind the layers: read the body, parse it, route each alert, store the
/// delivery, answer.
async fn webhook(
    State(ctx): State<Arc<Context>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(InForce(loaded)): Extension<InForce>,
    body: Body,
) -> Response {
    let server = &loaded.config.server;
    let bytes = match read_body(&ctx, server.body_limit, body).await {
        Ok(bytes) => bytes,
        Err(refused) => return *refused,
    };
    let parsed = match parse(&ctx, peer, &bytes) {
        Ok(parsed) => parsed,
        Err(refused) => return *refused,
    };
    let (delivery, tally) = route_alerts(&ctx, &loaded, peer, parsed);
    match store(&ctx, server.request_timeout, peer, delivery).await {
        Ok(effects) => stored(&ctx, &loaded.limits, tally, &effects).await,
        Err(unavailable) => *unavailable,
    }
}

/// Reads the whole body, which the `limits` layer bounds in size and time. Its errors are
/// told apart by type, through the error's sources: over the limit (413), too late (408),
/// or anything else the connection did (400).
async fn read_body(ctx: &Context, limit: usize, body: Body) -> Result<Bytes, Box<Response>> {
    let e = match body.collect().await {
        Ok(collected) => return Ok(collected.to_bytes()),
        Err(e) => e,
    };
    Err(Box::new(if caused_by::<LengthLimitError>(&e) {
        too_large(ctx, limit)
    } else if caused_by::<intake::TooLate>(&e) {
        refuse(
            ctx,
            "timeout",
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        )
    } else {
        refuse(
            ctx,
            "body",
            StatusCode::BAD_REQUEST,
            format!("cannot read the body: {e}"),
        )
    }))
}

/// Whether `E` is `error` or one of its sources.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<E>())
}

/// Parses and checks the body ([`payload`]). One that is not a version-4 webhook is
/// answered 400 with the error naming the field, and audited.
fn parse(ctx: &Context, peer: SocketAddr, bytes: &[u8]) -> Result<payload::Payload, Box<Response>> {
    payload::parse(bytes).map_err(|e| {
        tracing::warn!(source = %peer, error = %e.message, "webhook rejected");
        let entry = NewEntry::new(
            Event::DeliveryRejected,
            &json!({"source": peer.to_string(), "reason": e.kind, "error": truncate(&e.message, 512)}),
        );
        // Best effort: a refused body must not wait on, or fail because of, the store.
        let store = ctx.store.clone();
        tokio::spawn(async move {
            let _ = store.audit(vec![entry]).await;
        });
        Box::new(refuse(ctx, e.kind, StatusCode::BAD_REQUEST, e.message))
    })
}

/// What the answer counts of a delivery, kept aside while the store has the delivery.
struct Tally {
    statuses: Vec<&'static str>,
    invalid: usize,
    /// For breakers: a resolution after medic's run is a successful remediation.
    breakers: Vec<Option<String>>,
}

/// Routes each alert (pure, [`crate::routing`]); an alert over medic's limits is escalated
/// `invalid_alert` instead ([`invalid_alert`]).
fn route_alerts(
    ctx: &Context,
    loaded: &Snapshot,
    peer: SocketAddr,
    parsed: payload::Payload,
) -> (Delivery, Tally) {
    if parsed.truncated_alerts > 0 {
        // Alertmanager's `max_alerts` left these out of the delivery: medic never sees them.
        tracing::warn!(source = %peer, truncated_alerts = parsed.truncated_alerts, group_key = %parsed.group_key,
            "Alertmanager left alerts out of this delivery (its webhook max_alerts); medic cannot handle what it is not sent");
    }
    let exists = |name: &str| loaded.catalog.contains(name);
    let mut invalid = parsed.invalid;
    let alerts = parsed
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let routed = loaded.router.route(&a.labels, &a.annotations, &exists);
            let routed = match invalid.remove(&i) {
                Some(violations) => invalid_alert(routed, &violations),
                None => routed,
            };
            (a, routed)
        })
        .collect::<Vec<_>>();
    let tally = tally(&loaded.limits, peer, &alerts);
    let delivery = Delivery {
        received_at: ctx.clock.now(),
        source: peer.to_string(),
        receiver: parsed.receiver,
        status: parsed.status,
        group_key: parsed.group_key,
        external_url: parsed.external_url,
        truncated_alerts: parsed.truncated_alerts,
        extra: parsed.extra,
        alerts,
    };
    (delivery, tally)
}

/// How many alerts are invalid, each alert's status, and the breaker a resolution closes.
fn tally(limits: &Limits, peer: SocketAddr, alerts: &[(payload::Alert, Decision)]) -> Tally {
    let invalid = alerts
        .iter()
        .filter(|(_, r)| matches!(r, Decision::Invalid { .. }))
        .count();
    if invalid > 0 {
        tracing::warn!(source = %peer, alerts = invalid, "alerts over medic's limits stored bounded, to be escalated invalid_alert");
    }
    let breakers = alerts
        .iter()
        .map(|(a, routed)| match routed {
            Decision::Runbook { route, .. } if a.status == payload::Status::Resolved => {
                limits.breaker_for(route, &a.labels)
            }
            _ => None,
        })
        .collect();
    Tally {
        statuses: alerts.iter().map(|(a, _)| a.status.as_str()).collect(),
        invalid,
        breakers,
    }
}

/// Hands the delivery to the store, which commits it in its next group commit. 503 when it
/// fails or does not commit within `timeout`, so that Alertmanager retries.
async fn store(
    ctx: &Context,
    timeout: Duration,
    peer: SocketAddr,
    delivery: Delivery,
) -> Result<Vec<AlertEffect>, Box<Response>> {
    let unavailable = |message: String| {
        Box::new(error(
            "unavailable",
            StatusCode::SERVICE_UNAVAILABLE,
            message,
        ))
    };
    match tokio::time::timeout(timeout, ctx.store.ingest(delivery)).await {
        Ok(Ok(effects)) => Ok(effects),
        Ok(Err(e)) => {
            tracing::error!(source = %peer, error = %e, "webhook not stored; answering 503 so Alertmanager retries");
            Err(unavailable(format!("cannot store the delivery: {e}")))
        }
        Err(_) => {
            tracing::error!(source = %peer, "webhook commit timed out; answering 503 so Alertmanager retries");
            Err(unavailable("the store did not commit in time".into()))
        }
    }
}

/// The delivery is durable: count what it did, record remediations that worked for their
/// breakers, wake the runner if an incident was queued, and answer 200.
async fn stored(ctx: &Context, limits: &Limits, tally: Tally, effects: &[AlertEffect]) -> Response {
    let opened = count_effects(ctx, &tally, effects);
    for (effect, breaker) in effects.iter().zip(&tally.breakers) {
        if let (
            AlertEffect::Resolved {
                id,
                outcome: crate::incident::Outcome::AutoRemediated,
            },
            Some(b),
        ) = (effect, breaker)
        {
            let now = ctx.clock.now();
            crate::guard::record_breaker(&ctx.guards, limits, &ctx.store, b, id, true, now).await;
        }
    }
    let queued = effects.iter().any(|e| {
        matches!(
            e,
            AlertEffect::Opened(crate::incident::State::Queued)
                | AlertEffect::Superseded(crate::incident::State::Queued)
        )
    });
    if queued {
        ctx.wake.wake();
    }
    let body = json!({"status": "stored", "alerts": effects.len(), "opened": opened});
    answer("accepted", StatusCode::OK, body)
}

/// The alert metrics of a committed delivery; returns how many incidents it opened.
fn count_effects(ctx: &Context, tally: &Tally, effects: &[AlertEffect]) -> u64 {
    let m = &ctx.metrics;
    m.alerts_invalid.inc_by(tally.invalid as u64);
    for &status in &tally.statuses {
        m.alerts_received
            .get_or_create(&StatusLabel { status })
            .inc();
    }
    let mut opened = 0;
    for effect in effects {
        match effect {
            AlertEffect::Opened(_) | AlertEffect::Superseded(_) => opened += 1,
            AlertEffect::Deduplicated => {
                m.alerts_deduplicated.inc();
            }
            AlertEffect::Stale => {
                m.alerts_stale.inc();
            }
            AlertEffect::Resolved { .. } | AlertEffect::UnknownResolved => {}
        }
    }
    m.incidents_opened.inc_by(opened);
    opened
}

/// An alert over medic's limits is escalated `invalid_alert`, whatever runbook routing chose
/// for its bounded labels: the route it matched only lends its escalation policy, and nothing
/// is run for it. The one exception is a route that ignores the alert: `ignore = true` is the
/// config's written choice that nobody is told about these alerts, so it is kept (an ignore
/// route has no policy of its own to lend). `medic replay` shows the same.
pub fn invalid_alert(routed: Decision, violations: &[payload::Violation]) -> Decision {
    let route = match routed {
        Decision::Ignore { route } => return Decision::Ignore { route },
        Decision::Runbook { route, .. } => Some(route),
        Decision::Invalid { route, .. } => route,
        Decision::NoRunbook { .. } => None,
    };
    Decision::Invalid {
        route,
        why: payload::describe(violations),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_alert_is_escalated_on_its_route_unless_the_route_ignores_it() {
        let v = [payload::Violation {
            field: "label \"big\"".into(),
            message: "over the limit of 16384 bytes".into(),
        }];
        let routed = Decision::Runbook {
            route: "disk".into(),
            runbook: "disk.rhai".into(),
        };
        match invalid_alert(routed, &v) {
            Decision::Invalid { route, why } => {
                assert_eq!(route.as_deref(), Some("disk"));
                assert!(why.contains("label \"big\""), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let unrouted = Decision::NoRunbook {
            why: "no route".into(),
        };
        assert!(matches!(
            invalid_alert(unrouted, &v),
            Decision::Invalid { route: None, .. }
        ));
        let ignored = Decision::Ignore {
            route: "watchdog".into(),
        };
        assert!(
            matches!(invalid_alert(ignored, &v), Decision::Ignore { route } if route == "watchdog")
        );
    }
}
