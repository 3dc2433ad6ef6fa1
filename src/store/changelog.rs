//! The operator's log of incidents: one line per state change, written once the change is
//! committed (a batch that rolls back logs nothing).
//!
//! The writer collects a [`Change`] wherever an incident is opened or moved, adds the
//! channels an escalation tells, and emits them after `COMMIT`. An escalation that tells
//! no channel is a warning: nobody will hear of it.

use crate::incident::{Reason, State};

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

/// Logs each change, oldest first, and forgets them.
pub(crate) fn emit(changes: &mut Vec<Change>) {
    for c in changes.drain(..) {
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
