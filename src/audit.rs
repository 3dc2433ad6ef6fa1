//! The audit log: an append-only, hash-chained record of every event and decision.
//!
//! This module owns what an entry is, how the chain is computed and how it is verified.
//! It does not write anything: the store appends entries (computing each hash with
//! [`chain_hash`] inside the same transaction as the change it records) and nothing ever
//! updates or deletes one. `medic audit verify` walks the chain with [`Verifier`] and names
//! the first entry that was edited, removed or moved.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. The names appear in the audit log and in incident timelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A webhook delivery was accepted (source address, receiver, group, alert count).
    DeliveryReceived,
    /// A webhook delivery was refused as malformed (source address, reason).
    DeliveryRejected,
    /// A notification repeated what an incident already knew, and was counted.
    AlertDeduplicated,
    /// A notification older than what is known, ignored.
    AlertStale,
    /// A resolution for an alert medic never saw firing.
    AlertResolvedUnknown,
    /// A new incident for a firing alert.
    IncidentOpened,
    /// A route matched the alert and chose its runbook.
    RouteMatched,
    /// No route chose a runbook for the alert.
    RouteMissed,
    /// An incident moved from one state to another.
    StateChanged,
    /// A configuration (and runbook set) was loaded.
    ConfigLoaded,
    /// A reload was refused; the previous configuration stays in force.
    ConfigReloadFailed,
    /// A runbook run began (runbook, its content hash, route, dry-run).
    RunStarted,
    /// A runbook run ended (completed, or stopped with a reason).
    RunFinished,
    /// A step is about to run (its arguments).
    StepStarted,
    /// A step ran (exit code or status, duration, output excerpt).
    StepFinished,
    /// A step failed or was refused (not allowed, timed out, transport error).
    StepFailed,
    /// Dry run: the step that would have run, with its arguments.
    StepWouldRun,
    /// A runbook's `log`, `print` or `debug` line.
    RunbookLog,
    /// A queued incident was put in a storm group of escalations.
    EscalationGrouped,
    /// A circuit breaker changed (opened, half-opened, closed, reset).
    BreakerChanged,
    /// The kill switch: someone paused or resumed automation.
    Paused,
    Resumed,
    /// An Alertmanager silence was created or expired for an incident.
    SilenceCreated,
    SilenceExpired,
    /// The server started or stopped.
    ServerStarted,
    ServerStopped,
    /// An escalation round was planned: its tiers, channels and when each is due.
    EscalationScheduled,
    /// A notification was delivered (channel, tier, attempt).
    NotificationSent,
    /// A notification attempt failed (transient or permanent, the error, what happens next).
    NotificationFailed,
    /// Notifications not sent yet were cancelled (an ack, or the alert resolved).
    NotificationsCancelled,
    /// A failing channel made the next tier due at once.
    EscalationFellThrough,
    /// A person took the incident over.
    IncidentAcknowledged,
    /// The alert resolved while medic waited after a run (the remediation worked).
    VerificationSucceeded,
    /// The alert was still firing when the wait ended.
    VerificationFailed,
    /// Someone logged in to the console (name, client address).
    ConsoleLogin,
    /// A console login was refused: wrong name or password, or too many attempts (the
    /// name tried, client address).
    ConsoleLoginFailed,
    /// Someone logged out of the console (name, client address).
    ConsoleLogout,
    /// A run waits for approval: its plan, deadline and who is asked.
    ApprovalRequested,
    /// A person approved the plan (who, how, the plan's digest).
    Approved,
    /// A person rejected the run (who, how, why).
    Rejected,
    /// Nobody decided on the run before its deadline.
    ApprovalTimeout,
    /// The alert resolved while the run waited for approval: the request was withdrawn.
    ApprovalWithdrawn,
    /// An approved run tried a step that is not in its plan: stopped before it acted.
    StepOffPlan,
}

impl Event {
    /// Every event, in the order declared.
    pub const ALL: [Event; 43] = [
        Event::DeliveryReceived,
        Event::DeliveryRejected,
        Event::AlertDeduplicated,
        Event::AlertStale,
        Event::AlertResolvedUnknown,
        Event::IncidentOpened,
        Event::RouteMatched,
        Event::RouteMissed,
        Event::StateChanged,
        Event::ConfigLoaded,
        Event::ConfigReloadFailed,
        Event::RunStarted,
        Event::RunFinished,
        Event::StepStarted,
        Event::StepFinished,
        Event::StepFailed,
        Event::StepWouldRun,
        Event::RunbookLog,
        Event::EscalationGrouped,
        Event::BreakerChanged,
        Event::Paused,
        Event::Resumed,
        Event::SilenceCreated,
        Event::SilenceExpired,
        Event::ServerStarted,
        Event::ServerStopped,
        Event::EscalationScheduled,
        Event::NotificationSent,
        Event::NotificationFailed,
        Event::NotificationsCancelled,
        Event::EscalationFellThrough,
        Event::IncidentAcknowledged,
        Event::VerificationSucceeded,
        Event::VerificationFailed,
        Event::ConsoleLogin,
        Event::ConsoleLoginFailed,
        Event::ConsoleLogout,
        Event::ApprovalRequested,
        Event::Approved,
        Event::Rejected,
        Event::ApprovalTimeout,
        Event::ApprovalWithdrawn,
        Event::StepOffPlan,
    ];

    /// The event named `s` (as `as_str` names it), if any.
    pub fn parse(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Event::DeliveryReceived => "delivery_received",
            Event::DeliveryRejected => "delivery_rejected",
            Event::AlertDeduplicated => "alert_deduplicated",
            Event::AlertStale => "alert_stale",
            Event::AlertResolvedUnknown => "alert_resolved_unknown",
            Event::IncidentOpened => "incident_opened",
            Event::RouteMatched => "route_matched",
            Event::RouteMissed => "route_missed",
            Event::StateChanged => "state_changed",
            Event::ConfigLoaded => "config_loaded",
            Event::ConfigReloadFailed => "config_reload_failed",
            Event::RunStarted => "run_started",
            Event::RunFinished => "run_finished",
            Event::StepStarted => "step_started",
            Event::StepFinished => "step_finished",
            Event::StepFailed => "step_failed",
            Event::StepWouldRun => "step_would_run",
            Event::RunbookLog => "runbook_log",
            Event::EscalationGrouped => "escalation_grouped",
            Event::BreakerChanged => "breaker_changed",
            Event::Paused => "paused",
            Event::Resumed => "resumed",
            Event::SilenceCreated => "silence_created",
            Event::SilenceExpired => "silence_expired",
            Event::ServerStarted => "server_started",
            Event::ServerStopped => "server_stopped",
            Event::EscalationScheduled => "escalation_scheduled",
            Event::NotificationSent => "notification_sent",
            Event::NotificationFailed => "notification_failed",
            Event::NotificationsCancelled => "notifications_cancelled",
            Event::EscalationFellThrough => "escalation_fell_through",
            Event::IncidentAcknowledged => "incident_acknowledged",
            Event::VerificationSucceeded => "verification_succeeded",
            Event::VerificationFailed => "verification_failed",
            Event::ConsoleLogin => "console_login",
            Event::ConsoleLoginFailed => "console_login_failed",
            Event::ConsoleLogout => "console_logout",
            Event::ApprovalRequested => "approval_requested",
            Event::Approved => "approved",
            Event::Rejected => "rejected",
            Event::ApprovalTimeout => "approval_timeout",
            Event::ApprovalWithdrawn => "approval_withdrawn",
            Event::StepOffPlan => "step_off_plan",
        }
    }
}

/// An entry about to be appended.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub event: Event,
    pub incident_id: Option<String>,
    /// The detail, already serialized: this exact text is stored and hashed.
    pub detail: String,
}

impl NewEntry {
    /// An entry about no particular incident. `detail` is any serializable value.
    pub fn new(event: Event, detail: &impl Serialize) -> Self {
        NewEntry {
            event,
            incident_id: None,
            detail: to_json(detail),
        }
    }

    /// An entry whose detail is already JSON text.
    pub fn raw(event: Event, incident_id: Option<String>, detail: String) -> Self {
        NewEntry {
            event,
            incident_id,
            detail,
        }
    }

    /// An entry in an incident's timeline.
    pub fn for_incident(event: Event, incident_id: &str, detail: &impl Serialize) -> Self {
        NewEntry {
            event,
            incident_id: Some(incident_id.to_string()),
            detail: to_json(detail),
        }
    }
}

/// Serializes a detail. Maps with non-string keys are the only failure serde_json has, and
/// no detail has one; should one appear, the entry still records that it could not.
fn to_json(detail: &impl Serialize) -> String {
    serde_json::to_string(detail)
        .unwrap_or_else(|e| format!("{{\"unserializable_detail\":{:?}}}", e.to_string()))
}

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: i64,
    pub at: String,
    pub event: String,
    pub incident_id: Option<String>,
    /// The detail as the exact JSON text that was hashed.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an entry: SHA-256 over the previous hash and every stored field, each on
/// its own line, so that changing any field, or the order, changes every later hash.
pub fn chain_hash(
    prev_hash: &str,
    seq: i64,
    at: &str,
    event: &str,
    incident_id: Option<&str>,
    detail: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev_hash.as_bytes(),
        seq.to_string().as_bytes(),
        at.as_bytes(),
        event.as_bytes(),
        incident_id.unwrap_or("").as_bytes(),
    ] {
        h.update(part);
        h.update(b"\n");
    }
    h.update(detail.as_bytes());
    hex::encode(h.finalize())
}

/// The first break found in the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("audit entry {seq} ({event} at {at}) was edited: its content does not match its hash")]
    Edited { seq: i64, event: String, at: String },
    #[error("audit entry {seq} ({event} at {at}) does not follow entry {prev}: an entry before it was removed, edited or moved")]
    Unlinked {
        seq: i64,
        prev: i64,
        event: String,
        at: String,
    },
    #[error("audit entry {expected} is missing: the entry after {prev} is {found}")]
    Missing {
        expected: i64,
        prev: i64,
        found: i64,
    },
}

/// Walks entries in `seq` order and checks each link. Feed it page by page.
#[derive(Debug)]
pub struct Verifier {
    last_seq: i64,
    last_hash: String,
    checked: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            last_seq: 0,
            last_hash: GENESIS.to_string(),
            checked: 0,
        }
    }
}

impl Verifier {
    /// Checks the next entry.
    pub fn check(&mut self, e: &Entry) -> Result<(), Broken> {
        if e.seq != self.last_seq + 1 {
            return Err(Broken::Missing {
                expected: self.last_seq + 1,
                prev: self.last_seq,
                found: e.seq,
            });
        }
        let computed = chain_hash(
            &e.prev_hash,
            e.seq,
            &e.at,
            &e.event,
            e.incident_id.as_deref(),
            &e.detail,
        );
        if computed != e.hash {
            return Err(Broken::Edited {
                seq: e.seq,
                event: e.event.clone(),
                at: e.at.clone(),
            });
        }
        if e.prev_hash != self.last_hash {
            return Err(Broken::Unlinked {
                seq: e.seq,
                prev: self.last_seq,
                event: e.event.clone(),
                at: e.at.clone(),
            });
        }
        self.last_seq = e.seq;
        self.last_hash = e.hash.clone();
        self.checked += 1;
        Ok(())
    }

    /// How many entries were checked, and the hash at the head of the chain.
    pub fn summary(&self) -> (u64, &str) {
        (self.checked, &self.last_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_parsed_back_from_its_name() {
        let mut names = std::collections::HashSet::new();
        for e in Event::ALL {
            assert_eq!(Event::parse(e.as_str()), Some(e));
            assert!(names.insert(e.as_str()), "{} twice", e.as_str());
        }
        assert_eq!(Event::parse("no_such_event"), None);
    }

    /// Builds a valid chain of `n` entries.
    fn chain(n: i64) -> Vec<Entry> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let at = format!("2026-11-23T10:00:{seq:02}.000Z");
                let detail = format!("{{\"n\":{seq}}}");
                let hash = chain_hash(&prev, seq, &at, "state_changed", Some("I1"), &detail);
                let e = Entry {
                    seq,
                    at,
                    event: "state_changed".into(),
                    incident_id: Some("I1".into()),
                    detail,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    fn verify(entries: &[Entry]) -> Result<u64, Broken> {
        let mut v = Verifier::default();
        for e in entries {
            v.check(e)?;
        }
        Ok(v.summary().0)
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(5));
        assert_eq!(verify(&[]), Ok(0));
    }

    #[test]
    fn edited_field_is_named() {
        for edit in [
            |e: &mut Entry| e.detail = "{\"n\":99}".into(),
            |e: &mut Entry| e.event = "incident_opened".into(),
            |e: &mut Entry| e.at = "2020-01-01T00:00:00.000Z".into(),
            |e: &mut Entry| e.incident_id = None,
        ] {
            let mut c = chain(5);
            edit(&mut c[2]);
            let err = verify(&c).unwrap_err();
            assert!(matches!(err, Broken::Edited { seq: 3, .. }), "{err}");
        }
    }

    #[test]
    fn rehashed_edit_breaks_the_next_link() {
        // An editor who also recomputes the edited entry's hash is caught by the next one.
        let mut c = chain(5);
        c[2].detail = "{\"n\":99}".into();
        c[2].hash = chain_hash(
            &c[2].prev_hash,
            3,
            &c[2].at,
            &c[2].event,
            Some("I1"),
            &c[2].detail,
        );
        assert_eq!(
            verify(&c).unwrap_err().to_string(),
            "audit entry 4 (state_changed at 2026-11-23T10:00:04.000Z) does not follow entry 3: an entry before it was removed, edited or moved"
        );
    }

    #[test]
    fn removed_entry_is_named() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(
            verify(&c).unwrap_err().to_string(),
            "audit entry 2 is missing: the entry after 1 is 3"
        );
        let mut c = chain(5);
        c.remove(0);
        assert!(matches!(
            verify(&c),
            Err(Broken::Missing { expected: 1, .. })
        ));
    }

    #[test]
    fn reordered_entries_are_caught() {
        // Swapping two entries' content while keeping seq numbers in order.
        let mut c = chain(5);
        let (a, b) = (c[1].clone(), c[2].clone());
        c[1] = Entry { seq: 2, ..b };
        c[2] = Entry { seq: 3, ..a };
        assert!(matches!(verify(&c), Err(Broken::Edited { seq: 2, .. })));
    }
}
