//! The retention worker: while `store.retention` is set, removes what is older than it.
//!
//! Every [`PASS_EVERY`] it runs a pass: batches of [`Store::prune`] (each one short job on
//! the store's writer, see `store/retention.rs` for what is removed and why) until a batch
//! finds nothing more, or another replica holds the retention lease. Between batches it
//! yields, so deliveries queued behind a batch are committed before the next one. The
//! retention is read from the configuration in force at each pass: a reload changes it.
//!
//! It reports what it removed (log, `medic_retention_*` metrics), the age of the oldest
//! audit entry kept, and, once per incident, which incident holds back the pruning of the
//! audit log (an incident still kept keeps its entries and every later one).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::snapshot::Current;
use crate::store::{HeldBack, Prune, Pruned, Store};

/// How often a pass starts. An incident is removed within this (and the time the passes
/// before it take) of becoming eligible.
pub const PASS_EVERY: Duration = Duration::from_secs(15);

/// What the worker works with, handed to it by the composition root.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub config: Current,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub batches: u64,
    pub incidents: u64,
    pub audit_entries: u64,
    /// The last checkpoint written: the seq of the last audit entry removed.
    pub checkpoint: Option<i64>,
    pub held_back: Option<HeldBack>,
    /// Another replica prunes (it holds the lease).
    pub elsewhere: Option<String>,
    /// The longest batch, from submitting it to its commit (real time, waiting for the
    /// writer included).
    pub longest_batch: Duration,
    /// The longest a batch's work held the writer (its commit aside): how long a delivery
    /// queued behind it waited for it.
    pub longest_hold: Duration,
}

/// Runs until `stop` completes.
pub async fn run(ctx: Context, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(PASS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The incident last reported as holding the log back, so it is said once.
    let mut reported: Option<String> = None;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let Some(retention) = ctx.config.get().config.store.retention else {
            continue;
        };
        let done = tokio::select! {
            _ = &mut stop => return,
            done = pass(&ctx, retention) => done,
        };
        report(&ctx, &done, &mut reported).await;
    }
}

/// One pass: batches until nothing more can go. Stops at the first error (logged): the
/// next pass tries again.
pub async fn pass(ctx: &Context, retention: Duration) -> Pass {
    let mut done = Pass::default();
    loop {
        let started = std::time::Instant::now();
        let batch = ctx.store.prune(retention).await;
        done.longest_batch = done.longest_batch.max(started.elapsed());
        match batch {
            Ok(Prune::Elsewhere { holder }) => {
                done.elsewhere = Some(holder);
                return done;
            }
            Ok(Prune::Pruned(p)) => {
                done.batches += 1;
                done.longest_hold = done.longest_hold.max(p.took);
                ctx.metrics
                    .retention
                    .batch_seconds
                    .observe(p.took.as_secs_f64());
                add(&mut done, &p);
                ctx.metrics.retention.incidents_removed.inc_by(p.incidents);
                ctx.metrics
                    .retention
                    .audit_entries_removed
                    .inc_by(p.audit_entries);
                if p.is_done() {
                    done.held_back = p.held_back;
                    return done;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention: a batch failed; the next pass tries again");
                return done;
            }
        }
        // Deliveries queued behind this batch go first.
        tokio::task::yield_now().await;
    }
}

fn add(done: &mut Pass, p: &Pruned) {
    done.incidents += p.incidents;
    done.audit_entries += p.audit_entries;
    done.checkpoint = p.checkpoint.or(done.checkpoint);
}

/// Logs a pass and sets the age of the oldest entry kept.
async fn report(ctx: &Context, done: &Pass, reported: &mut Option<String>) {
    if done.incidents + done.audit_entries > 0 {
        tracing::info!(
            incidents = done.incidents,
            audit_entries = done.audit_entries,
            checkpoint = done.checkpoint,
            batches = done.batches,
            longest_batch_ms = done.longest_batch.as_millis() as u64,
            longest_hold_ms = done.longest_hold.as_millis() as u64,
            "retention: removed closed incidents and the oldest audit entries"
        );
    }
    match &done.held_back {
        Some(h) if reported.as_deref() != Some(h.incident.as_str()) => {
            tracing::warn!(
                incident = %h.incident,
                seq = h.seq,
                at = %h.at,
                "retention: the audit log's oldest entries are kept because incident {} is (still open, or closed for less than the retention); its entries and every later one stay until it goes",
                h.incident
            );
            *reported = Some(h.incident.clone());
        }
        Some(_) => {}
        None => *reported = None,
    }
    if let Ok(Some((_, at))) = ctx.store.oldest_audit_entry().await {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&at) {
            let age = ctx.clock.now().signed_duration_since(t).num_seconds();
            ctx.metrics
                .retention
                .audit_oldest_age_seconds
                .set(age.max(0));
        }
    }
}
