//! The operator's log of incidents: one line per state change, written once the change is
//! committed (a batch that rolls back logs nothing), and the counters of what automation
//! achieved, taken from the same changes.
//!
//! The writer collects a [`Change`] wherever an incident is opened or moved, adds the
//! channels an escalation tells, and hands them after `COMMIT` to a thread of their own
//! ([`Log`]), which writes the lines: the writer and the deliveries it answers never wait
//! on the log. An escalation that tells no channel is a warning: nobody will hear of it.
//! Before that, still on the writer, [`count`] adds the batch's changes to
//! `crate::metrics::AutomationMetrics`, so a caller answered after the commit finds them
//! counted.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::incident::{AckVia, Outcome, Reason, State};
use crate::metrics::AutomationMetrics;

/// Batches of changes waiting for the log thread; past this the writer waits for it.
const PENDING_BATCHES: usize = 1024;

/// The thread that logs committed changes, in commit order. Dropping it (when the writer
/// stops) waits until every change handed to it is logged.
pub(crate) struct Log {
    tx: Option<mpsc::SyncSender<Vec<Change>>>,
    thread: Option<JoinHandle<()>>,
}

impl Log {
    pub(crate) fn start() -> Log {
        let (tx, rx) = mpsc::sync_channel::<Vec<Change>>(PENDING_BATCHES);
        let thread = std::thread::Builder::new()
            .name("medic-changelog".into())
            .spawn(move || {
                for batch in rx {
                    emit(batch);
                }
            });
        match thread {
            Ok(thread) => Log {
                tx: Some(tx),
                thread: Some(thread),
            },
            // No thread: the writer logs the lines itself.
            Err(_) => Log {
                tx: None,
                thread: None,
            },
        }
    }

    /// Logs a committed batch's changes, and forgets them.
    pub(crate) fn committed(&self, changes: &mut Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let batch = std::mem::take(changes);
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::SendError(batch)) = tx.send(batch) {
                    emit(batch);
                }
            }
            None => emit(batch),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One committed state change, as the log shows it.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub id: String,
    pub alertname: String,
    pub fingerprint: String,
    pub route: String,
    /// `None` when the incident was just opened.
    pub from: Option<State>,
    pub to: State,
    pub reason: Option<Reason>,
    /// For an escalation: the channels its notifications go to (`None` when it is covered
    /// by its storm group's summary instead).
    pub channels: Option<Vec<String>>,
    /// For a resolution: its outcome, and how long after its opening it came.
    pub resolved: Option<(Outcome, Option<Duration>)>,
    /// For an ack: where it came from.
    pub via: Option<AckVia>,
    /// For an opening: the same alert fired again soon after an automated fix; the fixed
    /// incident's id and route.
    pub relapse_of: Option<(String, String)>,
}

impl Change {
    /// A change of incident `id` (of `alertname`, `fingerprint`, `route`) to `to`, with
    /// nothing beside it yet.
    pub(crate) fn new(
        id: &str,
        alertname: String,
        fingerprint: String,
        route: String,
        from: Option<State>,
        to: State,
    ) -> Change {
        Change {
            id: id.to_string(),
            alertname,
            fingerprint,
            route,
            from,
            to,
            reason: None,
            channels: None,
            resolved: None,
            via: None,
            relapse_of: None,
        }
    }
}

/// The latest change of incident `id` in `changes`, to add what came with it.
pub(crate) fn latest_of<'a>(changes: &'a mut [Change], id: &str) -> Option<&'a mut Change> {
    changes.iter_mut().rev().find(|c| c.id == id)
}

/// Adds a committed batch's changes to the counters of what automation achieved.
pub(crate) fn count(metrics: &AutomationMetrics, changes: &[Change]) {
    for c in changes {
        match c.to {
            State::Escalated => {
                if let Some(reason) = c.reason {
                    let nobody = c.channels.as_ref().is_some_and(Vec::is_empty);
                    metrics.escalated(&c.route, reason, nobody);
                }
            }
            State::Resolved => {
                if let Some((outcome, open_for)) = c.resolved {
                    metrics.resolved(&c.route, outcome, open_for);
                }
            }
            State::Acknowledged => {
                if let Some(via) = c.via {
                    metrics.acked(&c.route, via);
                }
            }
            _ => {}
        }
        if let Some((_, route)) = &c.relapse_of {
            metrics.relapsed(route);
        }
    }
}

/// Notes the channels incident `id`'s latest change (an escalation) tells.
pub(crate) fn told<'a>(
    changes: &mut [Change],
    id: &str,
    channels: impl Iterator<Item = &'a String>,
) {
    if let Some(c) = latest_of(changes, id) {
        let told = c.channels.get_or_insert_with(Vec::new);
        for channel in channels {
            if !told.contains(channel) {
                told.push(channel.clone());
            }
        }
    }
}

/// Logs each change, oldest first.
fn emit(changes: Vec<Change>) {
    for c in changes {
        let from = c.from.map(State::as_str);
        let reason = c.reason.map(Reason::as_str);
        let to = c.to.as_str();
        match (c.to, &c.channels) {
            (State::Escalated, Some(channels)) if channels.is_empty() => tracing::warn!(
                incident = %c.id, alertname = %c.alertname, fingerprint = %c.fingerprint,
                route = %c.route, from, state = to, reason,
                "incident escalated, but no channel is told: nobody will hear of it"
            ),
            (State::Escalated, Some(channels)) => tracing::info!(
                incident = %c.id, alertname = %c.alertname, fingerprint = %c.fingerprint,
                route = %c.route, from, state = to, reason, channels = %channels.join(","),
                "incident escalated"
            ),
            (State::Escalated, None) => tracing::info!(
                incident = %c.id, alertname = %c.alertname, fingerprint = %c.fingerprint,
                route = %c.route, from, state = to, reason,
                "incident escalated; its storm group's summary tells on-call"
            ),
            _ if c.from.is_none() => match &c.relapse_of {
                Some((fixed, _)) => tracing::info!(
                    incident = %c.id, alertname = %c.alertname, fingerprint = %c.fingerprint,
                    route = %c.route, state = to, reason, relapse_of = %fixed, "incident opened"
                ),
                None => tracing::info!(
                    incident = %c.id, alertname = %c.alertname, fingerprint = %c.fingerprint,
                    route = %c.route, state = to, reason, "incident opened"
                ),
            },
            _ => tracing::info!(
                incident = %c.id, alertname = %c.alertname, fingerprint = %c.fingerprint,
                route = %c.route, from, state = to, reason, "incident state changed"
            ),
        }
    }
}
