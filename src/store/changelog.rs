//! The operator's log of incidents: one line per state change, written once the change is
//! committed (a batch that rolls back logs nothing).
//!
//! The writer collects a [`Change`] wherever an incident is opened or moved, adds the
//! channels an escalation tells, and hands them after `COMMIT` to a thread of their own
//! ([`Log`]), which writes the lines: the writer and the deliveries it answers never wait
//! on the log. An escalation that tells no channel is a warning: nobody will hear of it.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::incident::{Reason, State};

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
}

/// Notes the channels incident `id`'s latest change (an escalation) tells.
pub(crate) fn told<'a>(
    changes: &mut [Change],
    id: &str,
    channels: impl Iterator<Item = &'a String>,
) {
    if let Some(c) = changes.iter_mut().rev().find(|c| c.id == id) {
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
            _ if c.from.is_none() => tracing::info!(
                incident = %c.id, alertname = %c.alertname, fingerprint = %c.fingerprint,
                route = %c.route, state = to, reason, "incident opened"
            ),
            _ => tracing::info!(
                incident = %c.id, alertname = %c.alertname, fingerprint = %c.fingerprint,
                route = %c.route, from, state = to, reason, "incident state changed"
            ),
        }
    }
}
