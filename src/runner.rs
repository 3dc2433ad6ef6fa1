//! The runner: takes queued incidents from the store and runs their runbooks.
//!
//! It claims incidents (queued → remediating, in the store, so that resends of an alert
//! can never start a second run), runs each on tokio's blocking pool under a global
//! concurrency cap, and records how each run ended: remediating → verifying when the
//! runbook ended normally, → escalated with a reason when it was stopped. Runs use the
//! configuration they started with, even if a reload happens meanwhile.
//!
//! Each run holds a lease in the store, renewed while it runs (`store.lease`). Incidents
//! left `remediating` under a lease that ran out — a dead process, or a dead replica — are
//! escalated `interrupted` (or run once more, for routes marked `idempotent`); the runner
//! looks for them at start-up and then every half lease. At shutdown, runs in flight are
//! cancelled at their next step and the same rule applies.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::guard::Guards;
use crate::guard::{Candidate, Decision, Limit, Ticket};
use crate::incident::Reason;
use crate::loaded::Loaded;
use crate::metrics::LimitLabel;
use crate::metrics::Metrics;
use crate::metrics::RunLabels;
use crate::plan::Binding;
use crate::runbook::sandbox::{Cancel, RunEnd, Stop};
use crate::runbook::scope::{self, AlertView, IncidentView};
use crate::snapshot::{Current, Snapshot};
use crate::steps::StepHost;
use crate::store::{Claim, Refusal, RunResult, Store};

/// How often the runner looks for work when nobody woke it.
const POLL: Duration = Duration::from_secs(1);
/// How often the queue's bound is enforced.
const SHED_EVERY: Duration = Duration::from_millis(250);
/// How long a stop waits for cancelled runs to record their end.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Wakes the runner when new work may be queued.
#[derive(Debug, Default)]
pub struct Wake(Notify);

impl Wake {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// What the runner works with, handed to it by the composition root.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub guards: Arc<Guards>,
    /// Wakes the runner when an incident may have been queued.
    pub wake: Arc<Wake>,
    pub metrics: Arc<Metrics>,
    pub config: Current,
    pub clock: Clock,
}

impl Context {
    /// Loads what the guards keep in the store (breakers, the pause switch) and applies
    /// `limits.enabled = false`. Called at start-up, and every second when replicas share
    /// the store (another may have paused medic or tripped a breaker).
    pub async fn restore_guards(&self) -> Result<(), crate::store::StoreError> {
        let loaded = self.config.get();
        let breakers = self.store.breakers().await?;
        let mut paused = self.store.pause().await?;
        if !loaded.config.limits.enabled && paused.is_none() {
            paused = Some(crate::guard::Pause {
                by: "config (limits.enabled = false)".into(),
                at: self.clock.now(),
                reason: "automation is disabled in the configuration".into(),
            });
        }
        self.metrics.paused.set(i64::from(paused.is_some()));
        self.guards.restore(breakers, paused);
        Ok(())
    }
}

/// Runs until `stop` completes, then cancels runs in flight and waits for them.
pub async fn run(ctx: Context, stop: impl std::future::Future<Output = ()>) {
    recover(&ctx).await;
    let max = ctx.config.get().config.limits.max_concurrent;
    let slots = Arc::new(Semaphore::new(max));
    let mut runs: JoinSet<()> = JoinSet::new();
    // Runs in flight: their task, how to cancel them, and their incident (whose lease they hold).
    let mut cancels: Vec<(tokio::task::Id, Cancel, String)> = Vec::new();
    // Timers on the injected clock's instant (tokio's), so a test on paused time drives them.
    let clock = ctx.clock.clone();
    let since = |at: tokio::time::Instant| clock.instant().saturating_duration_since(at);
    let mut last_housekeeping = clock.instant();
    let mut last_renew = clock.instant();
    let mut last_recover = clock.instant();
    let mut last_shed = clock.instant() - SHED_EVERY;
    tokio::pin!(stop);
    // Look for work at once: incidents may have been queued while medic was down.
    ctx.wake.wake();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ctx.wake.0.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            Some(done) = runs.join_next_with_id() => {
                let id = match &done { Ok((id, ())) => *id, Err(e) => e.id() };
                cancels.retain(|(t, _, _)| *t != id);
                if let Err(e) = done {
                    tracing::error!(error = %e, "a runbook task failed");
                }
            }
        }
        if since(last_housekeeping) >= POLL {
            last_housekeeping = clock.instant();
            expire_silences(&ctx).await;
            // Processes that escaped a step and that no running step may still own.
            tokio::spawn(crate::steps::reaper::sweep_orphans(
                ctx.config.get().toolkit.exec_limits.kill_grace,
            ));
            if ctx.guards.is_shared() {
                if let Err(e) = ctx.restore_guards().await {
                    tracing::warn!(error = %e, "cannot read the shared breakers and pause switch");
                }
            }
        }
        // The store's lease, fixed when it opened: a reload that changes `store.lease` must
        // not pace renewals by a lease the store does not use.
        let lease = ctx.store.lease();
        if since(last_renew) >= lease / 3 {
            last_renew = clock.instant();
            let running = cancels.iter().map(|(_, _, id)| id.clone()).collect();
            if let Err(e) = ctx.store.renew_leases(running).await {
                tracing::error!(error = %e, "cannot renew the leases of running runbooks");
            }
        }
        if since(last_recover) >= lease / 2 {
            last_recover = clock.instant();
            recover(&ctx).await;
        }
        // Beyond the queue's bound, the newest queued incidents escalate rather than pile up.
        // Checked a few times a second, not on every wake: in a storm, wakes are many.
        if since(last_shed) >= SHED_EVERY {
            last_shed = clock.instant();
            let max_queued = ctx.config.get().config.limits.max_queued;
            match ctx.store.shed_queue(max_queued).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(
                        incidents = n,
                        max_queued,
                        "queue full: escalated the newest incidents as rate_limited"
                    );
                    ctx.metrics
                        .refusals
                        .get_or_create(&LimitLabel {
                            limit: Limit::MaxQueued,
                        })
                        .inc_by(n as u64);
                }
                Err(e) => tracing::error!(error = %e, "cannot check the queue bound"),
            }
        }
        let free = slots.available_permits();
        if free == 0 {
            continue;
        }
        let tickets = match admit(&ctx, free).await {
            Ok((t, more)) => {
                if more {
                    // A full page was decided: look again at once rather than at the next tick.
                    ctx.wake.wake();
                }
                t
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read queued incidents; will retry");
                continue;
            }
        };
        if tickets.is_empty() {
            continue;
        }
        let loaded = ctx.config.get();
        let describe = move |claim: &Claim| run_started(&loaded, claim);
        let ids = tickets
            .iter()
            .map(|(id, t)| (id.clone(), t.shared.clone()))
            .collect();
        let claims = match ctx.store.claim_checked(ids, describe).await {
            Ok(c) => {
                if !c.refused.is_empty() {
                    // Shared guards refused some as they were claimed: the queue moved, so
                    // look again at once rather than at the next tick.
                    ctx.wake.wake();
                }
                for (id, limit) in &c.refused {
                    ctx.metrics
                        .refusals
                        .get_or_create(&LimitLabel { limit: *limit })
                        .inc();
                    tracing::info!(incident = %id, limit = limit.as_str(), "refused by a shared guard; escalated");
                }
                c.claims
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot claim queued incidents; will retry");
                for t in tickets.values() {
                    ctx.guards.release(t);
                }
                continue;
            }
        };
        let mut tickets = tickets;
        for claim in claims {
            let Some(ticket) = tickets.remove(&claim.id) else {
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                ctx.guards.release(&ticket);
                break;
            };
            let cancel = Cancel::default();
            let ctx = ctx.clone();
            let c = cancel.clone();
            let incident = claim.id.clone();
            let handle = runs.spawn(async move {
                let _permit = permit;
                run_one(&ctx, claim, ticket, c).await;
            });
            cancels.push((handle.id(), cancel, incident));
        }
        // Admitted but not claimed (the alert resolved meanwhile): give the slots back.
        for t in tickets.values() {
            ctx.guards.release(t);
        }
    }
    if !runs.is_empty() {
        tracing::info!(runs = runs.len(), "cancelling runbook runs in flight");
    }
    for (_, c, _) in &cancels {
        c.cancel();
    }
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while runs.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(runs = runs.len(), "runs did not stop within the grace period; they are left remediating and will be recovered at next start");
    }
}

/// Asks the guards about the oldest queued incidents; refusals are escalated at once, in
/// one commit; admitted ones come back with their tickets (at most `free`).
/// Also says whether a full page was refused, so the caller looks again at once.
async fn admit(
    ctx: &Context,
    free: usize,
) -> Result<(std::collections::HashMap<String, Ticket>, bool), crate::store::StoreError> {
    // Look further than `free`: some at the front may have to wait (in-flight caps).
    let page = free * 4 + 32;
    let queued = ctx.store.queued(page).await?;
    let full = queued.len() == page;
    let snapshot = ctx.config.get();
    let now = ctx.clock.now();
    let mut admitted = std::collections::HashMap::new();
    let mut refusals = Vec::new();
    for q in queued {
        if admitted.len() >= free {
            break;
        }
        let candidate = Candidate {
            id: q.id.clone(),
            route: q.route.clone(),
            labels: q.labels,
        };
        match ctx.guards.admit(&snapshot.limits, &candidate, now) {
            Decision::Run(ticket) => {
                admitted.insert(q.id, ticket);
            }
            Decision::Wait(_) => {}
            Decision::Refuse {
                reason,
                limit,
                message,
            } => {
                ctx.metrics
                    .refusals
                    .get_or_create(&LimitLabel { limit })
                    .inc();
                tracing::info!(incident = %q.id, limit = limit.as_str(), %message, "refused by a guard; escalating");
                refusals.push(Refusal {
                    id: q.id,
                    reason,
                    limit,
                    message,
                });
            }
        }
    }
    let refused = !refusals.is_empty();
    if refused {
        ctx.store.refuse(refusals).await?;
    }
    Ok((admitted, full && refused))
}

/// Start-up recovery of runs a dead process left behind.
async fn recover(ctx: &Context) {
    let loaded = ctx.config.get();
    let idempotent: Vec<String> = loaded
        .config
        .routes
        .iter()
        .filter(|r| r.idempotent)
        .map(|r| r.name.clone())
        .collect();
    match ctx.store.recover_interrupted(idempotent).await {
        Ok(done) if !done.is_empty() => {
            tracing::warn!(
                incidents = done.len(),
                "runs interrupted by a previous stop were recovered"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot recover interrupted runs"),
    }
}

/// Expires the Alertmanager silences of incidents that have ended.
async fn expire_silences(ctx: &Context) {
    let loaded = ctx.config.get();
    let Some(am) = &loaded.config.alertmanager else {
        return;
    };
    let Ok(pending) = ctx.store.silences_to_expire().await else {
        return;
    };
    for (incident, silence) in pending {
        match crate::steps::alertmanager::expire_silence(&loaded.toolkit.client, am, &silence).await
        {
            Ok(()) => {
                let _ = ctx.store.silence_expired(&incident, &silence).await;
            }
            Err(e) => {
                tracing::warn!(silence = %silence, error = %e, "cannot expire a silence; will retry")
            }
        }
    }
}

/// The `run_started` detail of a claimed run, written with the claim.
fn run_started(loaded: &Loaded, claim: &Claim) -> serde_json::Value {
    let route = claim
        .route
        .as_deref()
        .and_then(|name| loaded.config.routes.iter().find(|r| r.name == name));
    let dry_run = loaded.config.runbooks.dry_run || route.is_some_and(|r| r.dry_run);
    match loaded.catalog.get(&claim.runbook) {
        Some(runbook) => {
            let mut detail = json!({
                "runbook": runbook.name, "sha256": runbook.hash, "route": claim.route,
                "dry_run": dry_run, "attempt": claim.attempt,
            });
            if let Some(plan) = &claim.plan {
                detail["bound_to_plan"] = json!(plan.digest());
            }
            detail
        }
        None => {
            json!({"runbook": claim.runbook, "route": claim.route, "attempt": claim.attempt, "error": "runbook not loaded"})
        }
    }
}

/// Runs one claimed incident's runbook and records the end.
async fn run_one(ctx: &Context, claim: Claim, ticket: Ticket, cancel: Cancel) {
    let loaded: Arc<Snapshot> = ctx.config.get();
    let started = ctx.clock.instant();
    ctx.metrics.runs_in_flight.inc();
    let route = claim
        .route
        .as_deref()
        .and_then(|name| loaded.config.routes.iter().find(|r| r.name == name));
    let dry_run = loaded.config.runbooks.dry_run || route.is_some_and(|r| r.dry_run);
    let idempotent = route.is_some_and(|r| r.idempotent);

    let end = match loaded.catalog.get(&claim.runbook) {
        None => RunEnd::Stopped(Stop::new(
            Reason::RunbookError,
            format!(
                "runbook {:?} is not loaded (removed or broken by a reload?)",
                claim.runbook
            ),
        )),
        // Bound to an approved plan: only the runbook the plan was made from may run it.
        Some(runbook)
            if claim
                .plan
                .as_ref()
                .is_some_and(|p| p.sha256 != runbook.hash) =>
        {
            RunEnd::Stopped(Stop::new(
                Reason::OffPlan,
                format!(
                    "runbook {:?} changed after its plan was made and approved: nothing was run",
                    claim.runbook
                ),
            ))
        }
        Some(runbook) => {
            let host = StepHost {
                rt: tokio::runtime::Handle::current(),
                store: ctx.store.clone(),
                incident_id: claim.id.clone(),
                labels: claim.labels.clone(),
                toolkit: loaded.toolkit.clone(),
                dry_run,
                cancel: cancel.clone(),
                metrics: ctx.metrics.clone(),
                guards: ctx.guards.clone(),
                limits: loaded.limits.clone(),
                clock: ctx.clock.clone(),
                binding: claim.plan.as_ref().map(|p| Arc::new(Binding::new(p))),
            };
            let alert = AlertView {
                labels: &claim.labels,
                annotations: &claim.annotations,
                fingerprint: &claim.fingerprint,
                starts_at: &claim.starts_at,
                generator_url: &claim.generator_url,
            };
            let incident = IncidentView {
                id: &claim.id,
                route: claim.route.as_deref().unwrap_or_default(),
                runbook: &claim.runbook,
                attempt: claim.attempt,
                dry_run,
            };
            let vars = scope::vars(&alert, &incident, &loaded.config.runbooks.secrets);
            let sandbox = loaded.sandbox.clone();
            let ast = runbook.ast.clone();
            let c = cancel.clone();
            tokio::task::spawn_blocking(move || sandbox.run(&ast, vars, Box::new(host), c))
                .await
                .unwrap_or_else(|e| {
                    RunEnd::Stopped(Stop::new(
                        Reason::RunbookError,
                        format!("the run panicked: {e}"),
                    ))
                })
        }
    };

    let (result, label) = match &end {
        RunEnd::Completed => (RunResult::Completed, "completed"),
        RunEnd::Stopped(stop)
            if stop.reason == Reason::Interrupted && idempotent && claim.attempt < 2 =>
        {
            (
                RunResult::Requeue {
                    message: format!(
                        "{}; the route is idempotent, so it runs once more",
                        stop.message
                    ),
                },
                "requeued",
            )
        }
        RunEnd::Stopped(stop) => (
            RunResult::Escalated {
                reason: stop.reason,
                message: stop.message.clone(),
            },
            stop.reason.as_str(),
        ),
    };
    let elapsed = ctx.clock.instant().saturating_duration_since(started);
    let detail = match &end {
        RunEnd::Completed => {
            json!({"result": "completed", "duration_ms": elapsed.as_millis() as u64})
        }
        RunEnd::Stopped(s) => {
            json!({"result": "stopped", "reason": s.reason, "message": loaded.toolkit.redactor.apply(&s.message),
                                     "duration_ms": elapsed.as_millis() as u64})
        }
    };
    match ctx.store.finish_run(&claim.id, result, detail).await {
        Ok(Some(state)) => {
            tracing::info!(incident = %claim.id, runbook = %claim.runbook, state = state.as_str(), result = label, "run finished")
        }
        Ok(None) => {
            tracing::info!(incident = %claim.id, "run finished after the incident moved on (its alert resolved)")
        }
        Err(e) => {
            tracing::error!(incident = %claim.id, error = %e, "cannot record the end of a run; it will be recovered at next start")
        }
    }
    if label == "requeued" {
        ctx.wake.wake();
    }
    ctx.guards.release(&ticket);
    // A run that failed counts against its breaker now; a completed one counts as a
    // success only once its alert resolves (see ingest). A runbook that gave up and
    // called `escalate()` failed too, unless its route's breaker says otherwise.
    let count_requested = route
        .and_then(|r| r.breaker.as_ref())
        .is_none_or(|b| b.count_requested);
    let failed = matches!(&end, RunEnd::Stopped(s) if counts_as_failure(s.reason, count_requested));
    if let (true, Some(breaker)) = (failed, ticket.breaker.as_deref()) {
        let now = ctx.clock.now();
        crate::guard::record_breaker(
            &ctx.guards,
            &loaded.limits,
            &ctx.store,
            breaker,
            &claim.id,
            false,
            now,
        )
        .await;
    }
    ctx.metrics
        .runs
        .get_or_create(&RunLabels {
            route: claim.route.clone().unwrap_or_default(),
            result: label,
        })
        .inc();
    ctx.metrics.run_seconds.observe(elapsed.as_secs_f64());
    ctx.metrics.runs_in_flight.dec();
}

/// Whether a run stopped for `reason` counts as a failure against its route's breaker.
/// `interrupted`, `paused` and the guards' refusals say nothing about the fix.
fn counts_as_failure(reason: Reason, count_requested: bool) -> bool {
    match reason {
        Reason::RunbookError | Reason::StepFailed | Reason::Timeout => true,
        Reason::Requested => count_requested,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requested_escalation_counts_against_the_breaker_unless_the_route_opts_out() {
        assert!(counts_as_failure(Reason::Requested, true));
        assert!(!counts_as_failure(Reason::Requested, false));
        for r in [Reason::RunbookError, Reason::StepFailed, Reason::Timeout] {
            assert!(counts_as_failure(r, false), "{r:?}");
        }
        for r in [
            Reason::Interrupted,
            Reason::Paused,
            Reason::CircuitOpen,
            Reason::OffPlan,
        ] {
            assert!(!counts_as_failure(r, true), "{r:?}");
        }
    }
}
