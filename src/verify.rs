//! Verification: after a runbook ends normally, did the alert resolve?
//!
//! The incident waits in `verifying` until its `verify_until`, a timer kept in the store
//! (so it survives restarts). Alertmanager's resolved notification usually ends the wait:
//! ingest resolves the incident, outcome `auto_remediated`. For routes with
//! `verify = "alertmanager"`, this task also asks Alertmanager's API v2 whether the alert
//! is still active (for receivers without `send_resolved`), and takes "no longer listed"
//! as resolved. When the time is up and the alert still fires, the incident is escalated
//! `still_firing`.
//!
//! Every verification ends in the store's `Writer::verification_ended`, inside the
//! transaction that resolves or escalates: the single place where its success or failure
//! is recorded (and where a route's circuit breaker counts it).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::{ServiceConfig, VerifyMode};
use crate::guard::{Guards, Limits};
use crate::metrics::Metrics;
use crate::metrics::ResultLabel;
use crate::snapshot::Current;
use crate::store::{Store, Verifying};

/// How often timers are checked.
const TICK: Duration = Duration::from_millis(250);
/// How often one incident's alert is looked up in Alertmanager.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// Incidents looked at per tick.
const BATCH: usize = 1000;

/// What Alertmanager says about an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Listed and active (or suppressed, or not processed yet): still firing.
    Firing,
    /// Not listed as active: resolved.
    Gone,
}

/// What the verifier works with, handed to it by the composition root.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub guards: Arc<Guards>,
    pub metrics: Arc<Metrics>,
    pub config: Current,
    pub clock: Clock,
}

/// Runs until `stop` completes.
pub async fn run(ctx: Context, stop: impl Future<Output = ()>) {
    let mut polled: HashMap<String, Instant> = HashMap::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(TICK) => {}
        }
        let waiting = match ctx.store.verifying(BATCH).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read verification timers; will retry");
                continue;
            }
        };
        polled.retain(|id, _| waiting.iter().any(|v| &v.id == id));
        for v in waiting {
            check(&ctx, &v, &mut polled).await;
        }
    }
}

async fn check(ctx: &Context, v: &Verifying, polled: &mut HashMap<String, Instant>) {
    let loaded = ctx.config.get();
    let route = v
        .route
        .as_deref()
        .and_then(|name| loaded.config.routes.iter().find(|r| r.name == name));
    let am = loaded
        .config
        .alertmanager
        .as_ref()
        .filter(|_| route.is_some_and(|r| r.verify == VerifyMode::Alertmanager));
    let expired = v.verify_until <= ctx.clock.now();
    if let Some(am) = am {
        let due = polled
            .get(&v.id)
            .is_none_or(|at| ctx.clock.instant().saturating_duration_since(*at) >= POLL_EVERY);
        if due || expired {
            polled.insert(v.id.clone(), ctx.clock.instant());
            match alert_state(&loaded.toolkit.client, am, &v.fingerprint, &v.labels).await {
                Ok(Seen::Gone) => {
                    let how = "Alertmanager no longer lists the alert as active";
                    match ctx.store.verification_resolved(&v.id, how).await {
                        Ok(true) => {
                            count(ctx, "resolved");
                            tracing::info!(incident = %v.id, "verified through Alertmanager: the alert resolved");
                            record_breaker(ctx, &loaded.limits, v, true).await;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(incident = %v.id, error = %e, "cannot record a verification")
                        }
                    }
                    return;
                }
                Ok(Seen::Firing) => {}
                Err(e) => {
                    tracing::warn!(incident = %v.id, error = %e, "cannot ask Alertmanager about an alert; the timer still runs")
                }
            }
        }
    }
    if !expired {
        return;
    }
    let verify_for = route
        .map(|r| humantime::format_duration(r.verify_for).to_string())
        .unwrap_or_else(|| "the verification time".into());
    let message = format!("the alert was still firing {verify_for} after the runbook ended");
    match ctx.store.verification_failed(&v.id, &message).await {
        Ok(true) => {
            count(ctx, "still_firing");
            tracing::warn!(incident = %v.id, "escalated: the alert is still firing after the runbook");
            record_breaker(ctx, &loaded.limits, v, false).await;
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(incident = %v.id, error = %e, "cannot escalate a verification; will retry")
        }
    }
}

fn count(ctx: &Context, result: &'static str) {
    ctx.metrics
        .verifications
        .get_or_create(&ResultLabel { result })
        .inc();
}

/// Asks Alertmanager's API v2 whether the alert (its fingerprint, else exactly its labels)
/// is still active.
pub async fn alert_state(
    client: &reqwest::Client,
    am: &ServiceConfig,
    fingerprint: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Seen, String> {
    let mut query: Vec<(&str, String)> = vec![
        ("active", "true".into()),
        ("silenced", "true".into()),
        ("inhibited", "true".into()),
        ("unprocessed", "true".into()),
    ];
    for (name, value) in labels {
        let value = value.replace('\\', "\\\\").replace('"', "\\\"");
        query.push(("filter", format!("{name}=\"{value}\"")));
    }
    let resp = client
        .get(format!("{}/api/v2/alerts", am.url))
        .query(&query)
        .timeout(am.timeout)
        .send()
        .await
        .map_err(|e| format!("Alertmanager {}: {e}", am.url))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!("Alertmanager answered {status}: {}", text.trim()));
    }
    let alerts: Value = resp
        .json()
        .await
        .map_err(|e| format!("Alertmanager's answer is not JSON: {e}"))?;
    Ok(seen(&alerts, fingerprint, labels))
}

/// Reads Alertmanager's list of alerts for this one.
fn seen(alerts: &Value, fingerprint: &str, labels: &BTreeMap<String, String>) -> Seen {
    let same = |a: &Value| {
        if let Some(f) = a["fingerprint"].as_str() {
            return f == fingerprint;
        }
        let theirs: Option<BTreeMap<String, String>> =
            serde_json::from_value(a["labels"].clone()).ok();
        theirs.as_ref() == Some(labels)
    };
    let firing = alerts.as_array().into_iter().flatten().any(|a| {
        same(a)
            && matches!(
                a["status"]["state"].as_str(),
                Some("active" | "suppressed" | "unprocessed") | None
            )
    });
    if firing {
        Seen::Firing
    } else {
        Seen::Gone
    }
}

/// A verification's result counts for the route's circuit breaker, if it has one.
async fn record_breaker(ctx: &Context, limits: &Limits, v: &Verifying, success: bool) {
    let Some(route) = v.route.as_deref() else {
        return;
    };
    if let Some(breaker) = limits.breaker_for(route, &v.labels) {
        let now = ctx.clock.now();
        crate::guard::record_breaker(
            &ctx.guards,
            limits,
            &ctx.store,
            &breaker,
            &v.id,
            success,
            now,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels() -> BTreeMap<String, String> {
        [("alertname", "Down"), ("instance", "a:1")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect()
    }

    #[test]
    fn alertmanager_lists_decide() {
        let check = |alerts: Value, expected: Seen| {
            assert_eq!(seen(&alerts, "f1", &labels()), expected, "{alerts}");
        };
        check(json!([]), Seen::Gone);
        check(
            json!([{"fingerprint": "f1", "status": {"state": "active"}}]),
            Seen::Firing,
        );
        check(
            json!([{"fingerprint": "f1", "status": {"state": "suppressed"}}]),
            Seen::Firing,
        );
        check(
            json!([{"fingerprint": "f2", "status": {"state": "active"}}]),
            Seen::Gone,
        );
        // Without a fingerprint, exactly the same labels.
        check(
            json!([{"labels": {"alertname": "Down", "instance": "a:1"}, "status": {"state": "active"}}]),
            Seen::Firing,
        );
        check(
            json!([{"labels": {"alertname": "Down", "instance": "a:1", "x": "y"}}]),
            Seen::Gone,
        );
    }
}
