//! Ingest: the `POST /webhook` endpoint that takes Alertmanager's deliveries.
//!
//! The path of one delivery: check credentials, content type and size; parse and check the
//! body ([`payload`]); route each alert (pure, [`crate::routing`]); hand the whole delivery
//! to the store, which commits it in the next group commit; answer 200 only after that
//! commit is durable. Anything that goes wrong is answered so that Alertmanager does the
//! right thing: 4xx for a body it should not resend as is, 503 when a retry will help.
//! What an alert contains never refuses a delivery: an alert over medic's limits is stored
//! bounded and escalated `invalid_alert`, and the others of its delivery go on as usual.

pub mod payload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::json;

use crate::audit::{Event, NewEntry};
use crate::metrics::{OutcomeLabel, ReasonLabel, StatusLabel};
use crate::routing::Decision;
use crate::server::App;
use crate::store::{AlertEffect, Delivery};

/// `POST /webhook`.
pub async fn webhook(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let (outcome, response) = handle(&app, peer, &headers, body).await;
    let m = &app.metrics;
    m.deliveries.get_or_create(&OutcomeLabel { outcome }).inc();
    m.webhook_seconds.observe(started.elapsed().as_secs_f64());
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn handle(
    app: &App,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> (&'static str, Response) {
    let loaded = app.loaded();
    let server = &loaded.config.server;
    let reject = |reason: &'static str| {
        app.metrics
            .rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    };

    if let Some(token) = &server.webhook_token {
        if !crate::auth::bearer_or_basic_ok(headers, token) {
            reject("unauthorized");
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong credentials");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"medic\""),
            );
            return ("unauthorized", r);
        }
    }
    if !is_json(headers) {
        reject("content_type");
        let given = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        return (
            "rejected",
            error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type must be application/json, got {given:?}"),
            ),
        );
    }
    let limit = server.body_limit;
    let too_large = || {
        reject("body_too_large");
        (
            "rejected",
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body exceeds the limit of {limit} bytes"),
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let bytes =
        match tokio::time::timeout(server.request_timeout, axum::body::to_bytes(body, limit)).await
        {
            Err(_) => {
                reject("timeout");
                return (
                    "rejected",
                    error(
                        StatusCode::REQUEST_TIMEOUT,
                        "the body did not arrive in time",
                    ),
                );
            }
            Ok(Err(e)) => {
                // to_bytes fails with a length-limit error when the body runs past `limit`.
                if std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                    || e.to_string().contains("length limit")
                {
                    return too_large();
                }
                reject("body");
                return (
                    "rejected",
                    error(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the body: {e}"),
                    ),
                );
            }
            Ok(Ok(b)) => b,
        };

    let parsed = match payload::parse(&bytes) {
        Ok(p) => p,
        Err(e) => {
            reject(e.kind);
            tracing::warn!(source = %peer, error = %e.message, "webhook rejected");
            let entry = NewEntry::new(
                Event::DeliveryRejected,
                &json!({"source": peer.to_string(), "reason": e.kind, "error": truncate(&e.message, 512)}),
            );
            // Best effort: a refused body must not wait on, or fail because of, the store.
            let store = app.store.clone();
            tokio::spawn(async move {
                let _ = store.audit(vec![entry]).await;
            });
            return ("rejected", error(StatusCode::BAD_REQUEST, e.message));
        }
    };

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
    let invalid_alerts = alerts
        .iter()
        .filter(|(_, r)| matches!(r, Decision::Invalid { .. }))
        .count();
    if invalid_alerts > 0 {
        tracing::warn!(source = %peer, alerts = invalid_alerts, "alerts over medic's limits stored bounded, to be escalated invalid_alert");
    }
    let statuses: Vec<&'static str> = alerts.iter().map(|(a, _)| a.status.as_str()).collect();
    // For breakers: a resolution after medic's run is a successful remediation.
    let breakers: Vec<Option<String>> = alerts
        .iter()
        .map(|(a, routed)| match routed {
            Decision::Runbook { route, .. } if a.status == payload::Status::Resolved => {
                app.guards.breaker_for(route, &a.labels)
            }
            _ => None,
        })
        .collect();
    let delivery = Delivery {
        received_at: Utc::now(),
        source: peer.to_string(),
        receiver: parsed.receiver,
        status: parsed.status,
        group_key: parsed.group_key,
        external_url: parsed.external_url,
        truncated_alerts: parsed.truncated_alerts,
        extra: parsed.extra,
        alerts,
    };

    let effects = match tokio::time::timeout(server.request_timeout, app.store.ingest(delivery))
        .await
    {
        Ok(Ok(effects)) => effects,
        Ok(Err(e)) => {
            tracing::error!(source = %peer, error = %e, "webhook not stored; answering 503 so Alertmanager retries");
            return (
                "unavailable",
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot store the delivery: {e}"),
                ),
            );
        }
        Err(_) => {
            tracing::error!(source = %peer, "webhook commit timed out; answering 503 so Alertmanager retries");
            return (
                "unavailable",
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store did not commit in time",
                ),
            );
        }
    };

    let m = &app.metrics;
    m.alerts_invalid.inc_by(invalid_alerts as u64);
    for status in statuses {
        m.alerts_received
            .get_or_create(&StatusLabel { status })
            .inc();
    }
    let mut opened = 0;
    for effect in &effects {
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
    for (effect, breaker) in effects.iter().zip(&breakers) {
        if let (
            AlertEffect::Resolved {
                id,
                outcome: crate::incident::Outcome::AutoRemediated,
            },
            Some(b),
        ) = (effect, breaker)
        {
            crate::runner::record_breaker(app, b, id, true).await;
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
        app.wake.wake();
    }
    let body = json!({"status": "stored", "alerts": effects.len(), "opened": opened});
    ("accepted", (StatusCode::OK, Json(body)).into_response())
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

/// `application/json`, with or without parameters such as `charset`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
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
