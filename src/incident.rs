//! Incidents: one firing alert (one fingerprint, one firing period) and what was done about it.
//!
//! This module owns the incident's vocabulary (states, reasons, outcomes) and the pure rule
//! that decides what an incoming alert notification does to the incidents already known for
//! its fingerprint. It does no IO: the store asks [`decide`] and persists the answer in the
//! same transaction, so concurrent deliveries of one alert can never open two incidents.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ingest::payload::Status;

/// Where an incident stands. Names are the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Remediating,
    Verifying,
    Resolved,
    Escalated,
    Acknowledged,
    Ignored,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Queued,
        State::Remediating,
        State::Verifying,
        State::Resolved,
        State::Escalated,
        State::Acknowledged,
        State::Ignored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Remediating => "remediating",
            State::Verifying => "verifying",
            State::Resolved => "resolved",
            State::Escalated => "escalated",
            State::Acknowledged => "acknowledged",
            State::Ignored => "ignored",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// An open incident still belongs to a firing alert; a closed one is history.
    pub fn is_open(self) -> bool {
        !matches!(self, State::Resolved | State::Ignored)
    }
}

/// Why an incident was escalated. Names are the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    NoRunbook,
    RunbookError,
    StepFailed,
    Timeout,
    StillFiring,
    RateLimited,
    CircuitOpen,
    Paused,
    Interrupted,
    Requested,
    /// The alert's content breaks medic's limits (a NUL, too many labels, a value over the
    /// limit): it was stored bounded and nothing was run for it.
    InvalidAlert,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::NoRunbook,
        Reason::RunbookError,
        Reason::StepFailed,
        Reason::Timeout,
        Reason::StillFiring,
        Reason::RateLimited,
        Reason::CircuitOpen,
        Reason::Paused,
        Reason::Interrupted,
        Reason::Requested,
        Reason::InvalidAlert,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoRunbook => "no_runbook",
            Reason::RunbookError => "runbook_error",
            Reason::StepFailed => "step_failed",
            Reason::Timeout => "timeout",
            Reason::StillFiring => "still_firing",
            Reason::RateLimited => "rate_limited",
            Reason::CircuitOpen => "circuit_open",
            Reason::Paused => "paused",
            Reason::Interrupted => "interrupted",
            Reason::Requested => "requested",
            Reason::InvalidAlert => "invalid_alert",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// How a resolved incident ended. Names are the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    AutoRemediated,
    ResolvedAfterEscalation,
    ResolvedBeforeAction,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::AutoRemediated => "auto_remediated",
            Outcome::ResolvedAfterEscalation => "resolved_after_escalation",
            Outcome::ResolvedBeforeAction => "resolved_before_action",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::AutoRemediated,
            Outcome::ResolvedAfterEscalation,
            Outcome::ResolvedBeforeAction,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    /// The outcome of an incident in `state` whose alert has just resolved.
    pub fn on_resolution(state: State) -> Outcome {
        match state {
            // Nothing ran yet: the alert went away on its own.
            State::Queued | State::Ignored | State::Resolved => Outcome::ResolvedBeforeAction,
            // medic acted and the alert resolved after it.
            State::Remediating | State::Verifying => Outcome::AutoRemediated,
            State::Escalated | State::Acknowledged => Outcome::ResolvedAfterEscalation,
        }
    }
}

/// What the store knows of the newest incident of one fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    pub id: String,
    pub state: State,
    /// The alert's `startsAt` for that incident's firing period.
    pub starts_at: DateTime<Utc>,
}

/// What an incoming notification does. Computed by [`decide`], carried out by the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A new firing period: open an incident.
    Open,
    /// The same alert state again (a resend or a retried delivery): count it on `id`.
    Duplicate { id: String },
    /// The alert of open incident `id` resolved.
    Resolve { id: String, outcome: Outcome },
    /// A firing with a newer `startsAt` while `id` is still open: its resolution was never
    /// delivered. Close `id` and open a new incident for the new firing period.
    Supersede { id: String, outcome: Outcome },
    /// Older than what is known (an out-of-order or late retry): record, change nothing.
    Stale { id: String, why: &'static str },
    /// A resolution for a firing period medic never saw: record, change nothing.
    UnknownResolved,
}

/// Decides what a notification (`status`, `starts_at`) does, given the newest incident
/// known for its fingerprint. Never reopens a closed incident.
pub fn decide(latest: Option<&Latest>, status: Status, starts_at: DateTime<Utc>) -> Action {
    let Some(latest) = latest else {
        return match status {
            Status::Firing => Action::Open,
            Status::Resolved => Action::UnknownResolved,
        };
    };
    let id = latest.id.clone();
    let open = latest.state.is_open();
    let outcome = Outcome::on_resolution(latest.state);
    match (status, starts_at.cmp(&latest.starts_at), open) {
        // Older than the newest period we know: whatever it says is history.
        (_, std::cmp::Ordering::Less, _) => Action::Stale {
            id,
            why: "startsAt is older than the incident's",
        },
        (Status::Firing, std::cmp::Ordering::Equal, true) => Action::Duplicate { id },
        (Status::Firing, std::cmp::Ordering::Equal, false) => Action::Stale {
            id,
            why: "firing arrived after its own resolution",
        },
        (Status::Firing, std::cmp::Ordering::Greater, true) => Action::Supersede { id, outcome },
        (Status::Firing, std::cmp::Ordering::Greater, false) => Action::Open,
        (Status::Resolved, _, true) => Action::Resolve { id, outcome },
        (Status::Resolved, std::cmp::Ordering::Equal, false) => Action::Duplicate { id },
        (Status::Resolved, std::cmp::Ordering::Greater, false) => Action::UnknownResolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, minute, 0).unwrap()
    }

    fn latest(state: State, minute: u32) -> Latest {
        Latest {
            id: "I1".into(),
            state,
            starts_at: t(minute),
        }
    }

    fn check(latest: Option<Latest>, status: Status, minute: u32, expected: Action) {
        assert_eq!(
            decide(latest.as_ref(), status, t(minute)),
            expected,
            "latest={latest:?} status={status:?} startsAt=:{minute}"
        );
    }

    use Status::{Firing, Resolved};

    #[test]
    fn first_sight() {
        check(None, Firing, 5, Action::Open);
        check(None, Resolved, 5, Action::UnknownResolved);
    }

    #[test]
    fn resends_join_the_open_incident() {
        for state in [
            State::Queued,
            State::Remediating,
            State::Verifying,
            State::Escalated,
            State::Acknowledged,
        ] {
            check(
                Some(latest(state, 5)),
                Firing,
                5,
                Action::Duplicate { id: "I1".into() },
            );
        }
    }

    #[test]
    fn resolution_moves_the_incident_on() {
        let cases = [
            (State::Queued, Outcome::ResolvedBeforeAction),
            (State::Remediating, Outcome::AutoRemediated),
            (State::Verifying, Outcome::AutoRemediated),
            (State::Escalated, Outcome::ResolvedAfterEscalation),
            (State::Acknowledged, Outcome::ResolvedAfterEscalation),
        ];
        for (state, outcome) in cases {
            let id = "I1".to_string();
            check(
                Some(latest(state, 5)),
                Resolved,
                5,
                Action::Resolve { id, outcome },
            );
        }
        // A resolution for a newer period still ends the open one: it is over too.
        check(
            Some(latest(State::Queued, 5)),
            Resolved,
            9,
            Action::Resolve {
                id: "I1".into(),
                outcome: Outcome::ResolvedBeforeAction,
            },
        );
    }

    #[test]
    fn firing_after_resolution_opens_a_new_incident() {
        check(Some(latest(State::Resolved, 5)), Firing, 9, Action::Open);
    }

    #[test]
    fn stale_notifications_never_reopen() {
        // The retried firing of the period that already resolved.
        check(
            Some(latest(State::Resolved, 5)),
            Firing,
            5,
            Action::Stale {
                id: "I1".into(),
                why: "firing arrived after its own resolution",
            },
        );
        // Anything older than the newest known period.
        for state in [State::Resolved, State::Queued, State::Escalated] {
            for status in [Firing, Resolved] {
                check(
                    Some(latest(state, 5)),
                    status,
                    1,
                    Action::Stale {
                        id: "I1".into(),
                        why: "startsAt is older than the incident's",
                    },
                );
            }
        }
        // The same resolution again is a duplicate, not a change.
        check(
            Some(latest(State::Resolved, 5)),
            Resolved,
            5,
            Action::Duplicate { id: "I1".into() },
        );
        // A resolution of a later period we never saw firing.
        check(
            Some(latest(State::Resolved, 5)),
            Resolved,
            9,
            Action::UnknownResolved,
        );
    }

    #[test]
    fn newer_firing_supersedes_an_open_incident() {
        check(
            Some(latest(State::Escalated, 5)),
            Firing,
            9,
            Action::Supersede {
                id: "I1".into(),
                outcome: Outcome::ResolvedAfterEscalation,
            },
        );
    }

    #[test]
    fn names_round_trip() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert!(!State::Resolved.is_open() && !State::Ignored.is_open());
        assert!(State::Escalated.is_open());
    }
}
