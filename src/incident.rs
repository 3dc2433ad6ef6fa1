//! Incidents: one firing alert (one fingerprint, one firing period) and what was done about it.
//!
//! This module owns the incident's vocabulary (states, reasons, outcomes) and the pure rule
//! that decides what an incoming alert notification does to the incidents already known for
//! its fingerprint. It does no IO: the store asks [`decide`] and persists the answer in the
//! same transaction, so concurrent deliveries of one alert can never open two incidents.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::alert::Status;

/// Where an incident stands. Names are the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    /// Its route asks a person first: it waits for an approval of its plan.
    AwaitingApproval,
    Remediating,
    Verifying,
    Resolved,
    Escalated,
    Acknowledged,
    Ignored,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Queued,
        State::AwaitingApproval,
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
            State::AwaitingApproval => "awaiting_approval",
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

    /// Whether an incident may open in this state (see [`MOVES`]).
    pub fn can_open_as(self) -> bool {
        MOVES.contains(&(None, self))
    }

    /// Whether an incident in this state may move to `to` (see [`MOVES`]).
    pub fn can_move_to(self, to: State) -> bool {
        MOVES.contains(&(Some(self), to))
    }

    /// Whether an incident that waited for approval needs its approval record to enter
    /// this state: only an approved incident is queued for its runbook or runs it,
    /// whichever move leads there.
    pub fn needs_approval_record(self) -> bool {
        matches!(self, State::Queued | State::Remediating)
    }
}

/// Every state change an incident may make, `None` standing for "not opened yet". The
/// store checks each write of an incident's state against this table and refuses any
/// other move. A closed incident (resolved, ignored) never moves again.
pub const MOVES: &[(Option<State>, State)] = {
    use State::*;
    &[
        // Opened: queued for its runbook, ignored on purpose, or escalated at once.
        (None, Queued),
        (None, Ignored),
        (None, Escalated),
        // Opened for a route that asks first: it waits for a person's decision.
        (None, AwaitingApproval),
        // Approved (queued for its run), rejected or unanswered (escalated), or its alert
        // resolved while it waited.
        (Some(AwaitingApproval), Queued),
        (Some(AwaitingApproval), Escalated),
        (Some(AwaitingApproval), Resolved),
        // Claimed for a run, refused by a guard, or its alert resolved first.
        (Some(Queued), Remediating),
        (Some(Queued), Escalated),
        (Some(Queued), Resolved),
        // The run ended (or was interrupted and runs once more), or the alert resolved.
        (Some(Remediating), Verifying),
        (Some(Remediating), Escalated),
        (Some(Remediating), Queued),
        (Some(Remediating), Resolved),
        // The wait after a run: the alert resolved, or still fires.
        (Some(Verifying), Resolved),
        (Some(Verifying), Escalated),
        // A person takes it over; the alert resolves.
        (Some(Escalated), Acknowledged),
        (Some(Escalated), Resolved),
        (Some(Acknowledged), Resolved),
    ]
};

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
    /// A person said no to the run its route asked approval for.
    Rejected,
    /// Nobody answered the approval request within the route's `approval.timeout`.
    ApprovalTimeout,
    /// The approved run tried a step that was not in the plan the approver saw; it was
    /// stopped before that step acted.
    OffPlan,
}

impl Reason {
    pub const ALL: [Reason; 14] = [
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
        Reason::Rejected,
        Reason::ApprovalTimeout,
        Reason::OffPlan,
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
            Reason::Rejected => "rejected",
            Reason::ApprovalTimeout => "approval_timeout",
            Reason::OffPlan => "off_plan",
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
            State::Queued | State::AwaitingApproval | State::Ignored | State::Resolved => {
                Outcome::ResolvedBeforeAction
            }
            // medic acted and the alert resolved after it.
            State::Remediating | State::Verifying => Outcome::AutoRemediated,
            State::Escalated | State::Acknowledged => Outcome::ResolvedAfterEscalation,
        }
    }
}

/// Where a person's acknowledgement came from: audited with the ack and counted in
/// `medic_acks_total{via}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AckVia {
    /// The console's Acknowledge button.
    Console,
    /// `POST /api/v1/incidents/{id}/ack`.
    Api,
    /// A signed one-click link from a message.
    Link,
    /// Slack's interactive button.
    Slack,
    /// PagerDuty's webhook (`incident.acknowledged`, `incident.resolved`).
    Pagerduty,
}

impl AckVia {
    pub const ALL: [AckVia; 5] = [
        AckVia::Console,
        AckVia::Api,
        AckVia::Link,
        AckVia::Slack,
        AckVia::Pagerduty,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AckVia::Console => "console",
            AckVia::Api => "api",
            AckVia::Link => "link",
            AckVia::Slack => "slack",
            AckVia::Pagerduty => "pagerduty",
        }
    }

    pub fn parse(s: &str) -> Option<AckVia> {
        AckVia::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What the store knows of the newest incident of one fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    pub id: String,
    pub state: State,
    /// The alert's `startsAt` for that incident's firing period.
    pub starts_at: DateTime<Utc>,
    /// When medic last heard of the alert (its newest delivery).
    pub last_seen_at: DateTime<Utc>,
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

/// Decides what a notification (`status`, `starts_at`, and for a resolution `ends_at`)
/// does, given the newest incident known for its fingerprint. Never reopens a closed
/// incident.
///
/// A notification belongs to the incident when its firing period overlaps the incident's.
/// Alertmanager merges the copies of one alert from a high-availability Prometheus pair and
/// keeps the earliest `startsAt`, so a later notification of the same firing period may carry
/// an older `startsAt` than the one medic first saw: while the incident is open (or was
/// ignored), such a firing is the same period, a duplicate. The incident keeps the start it
/// was opened with: it is the period's identity in the store (one incident per fingerprint
/// and start) and what medic already showed on-call. Only a resolution whose `endsAt` is
/// before the incident began is about an older period: stale.
pub fn decide(
    latest: Option<&Latest>,
    status: Status,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
) -> Action {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let Some(latest) = latest else {
        return match status {
            Status::Firing => Action::Open,
            Status::Resolved => Action::UnknownResolved,
        };
    };
    let id = latest.id.clone();
    let outcome = Outcome::on_resolution(latest.state);
    // A resolution ended before the incident began: it is about an older firing period.
    // Without `endsAt`, only its `startsAt` can say so.
    let ended_before = match ends_at {
        Some(end) => end < latest.starts_at,
        None => starts_at < latest.starts_at,
    };
    let stale_resolution = || Action::Stale {
        id: latest.id.clone(),
        why: "the resolution ended before the incident began",
    };
    match (status, starts_at.cmp(&latest.starts_at), latest.state) {
        // The incident is still open: this firing period, whatever the `startsAt`
        // Alertmanager kept for it, unless a newer period began.
        (Status::Firing, Less | Equal, s) if s.is_open() => Action::Duplicate { id },
        // A newer `startsAt` is a new period only if it began after medic last heard the
        // alert firing: then its resolution may have been lost between. One that began
        // while medic already knew the alert was firing overlaps the open incident: the
        // same period, as another Prometheus of an HA pair (through an Alertmanager that
        // had not yet merged the earlier copy) saw it.
        (Status::Firing, Greater, s) if s.is_open() && starts_at <= latest.last_seen_at => {
            Action::Duplicate { id }
        }
        (Status::Firing, Greater, s) if s.is_open() => Action::Supersede { id, outcome },
        (Status::Resolved, _, s) if s.is_open() => match ended_before {
            true => stale_resolution(),
            false => Action::Resolve { id, outcome },
        },
        // Ignored on purpose: closed, but its alert still fires; resends and the resolution
        // of its period are counted on it, a newer period opens (and is routed) anew.
        (Status::Firing, Less | Equal, State::Ignored) => Action::Duplicate { id },
        (Status::Resolved, Less | Equal, State::Ignored) => match ended_before {
            true => stale_resolution(),
            false => Action::Duplicate { id },
        },
        // Resolved: what fired in its period is history.
        (Status::Firing, Equal, _) => Action::Stale {
            id,
            why: "firing arrived after its own resolution",
        },
        (Status::Firing, Less, _) => Action::Stale {
            id,
            why: "startsAt is older than the incident's",
        },
        (Status::Resolved, Less | Equal, _) => match ended_before {
            true => stale_resolution(),
            false => Action::Duplicate { id },
        },
        (Status::Firing, Greater, _) => Action::Open,
        (Status::Resolved, Greater, _) => Action::UnknownResolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The whole transition table, as a grid: each row a state an incident is in (`new`:
    /// not opened yet), each letter whether it may move to the state of that column.
    #[test]
    fn the_transition_table() {
        use State::*;
        let columns = [
            Queued,
            AwaitingApproval,
            Remediating,
            Verifying,
            Resolved,
            Escalated,
            Acknowledged,
            Ignored,
        ];
        // Columns: queued, awaiting_approval, remediating, verifying, resolved, escalated,
        // acknowledged, ignored.
        let grid: [(Option<State>, &str); 9] = [
            (None, "y y . . . y . y"),
            (Some(Queued), ". . y . y y . ."),
            (Some(AwaitingApproval), "y . . . y y . ."),
            (Some(Remediating), "y . . y y y . ."),
            (Some(Verifying), ". . . . y y . ."),
            (Some(Resolved), ". . . . . . . ."),
            (Some(Escalated), ". . . . y . y ."),
            (Some(Acknowledged), ". . . . y . . ."),
            (Some(Ignored), ". . . . . . . ."),
        ];
        assert_eq!(columns, State::ALL);
        for (from, row) in grid {
            let cells: Vec<&str> = row.split(' ').collect();
            assert_eq!(cells.len(), columns.len());
            for (to, cell) in columns.into_iter().zip(cells) {
                let allowed = match from {
                    None => to.can_open_as(),
                    Some(from) => from.can_move_to(to),
                };
                assert_eq!(allowed, cell == "y", "{from:?} -> {to:?}");
            }
        }
        // Nothing closed ever moves, and nothing moves to where it already is.
        for s in State::ALL {
            assert!(!s.can_move_to(s), "{s:?} -> {s:?}");
            if !s.is_open() {
                assert!(State::ALL.iter().all(|&to| !s.can_move_to(to)), "{s:?}");
            }
        }
    }

    /// The states an incident that waited for approval can reach when every move into a
    /// state that [`State::needs_approval_record`] is refused: what it can do without one.
    fn reachable_without_approval() -> Vec<State> {
        let mut seen = vec![State::AwaitingApproval];
        let mut todo = vec![State::AwaitingApproval];
        while let Some(from) = todo.pop() {
            for &(f, to) in MOVES {
                if f == Some(from) && !to.needs_approval_record() && !seen.contains(&to) {
                    seen.push(to);
                    todo.push(to);
                }
            }
        }
        seen
    }

    /// No path from `awaiting_approval` runs without an approval record: every way to
    /// `remediating` (the run) or `verifying` (after it) goes through a state that needs
    /// the record, and with those refused neither is reachable, whatever moves are added
    /// to the table (a re-run from `escalated`, say). With them allowed, the run is
    /// reachable: the gate, not a missing move, is what holds it.
    #[test]
    fn no_path_from_awaiting_approval_runs_without_an_approval_record() {
        let reachable = reachable_without_approval();
        for ran in [State::Remediating, State::Verifying] {
            assert!(!reachable.contains(&ran), "{ran:?} in {reachable:?}");
        }
        let mut closed = reachable.clone();
        closed.sort_by_key(|s| s.as_str());
        use State::*;
        assert_eq!(
            closed,
            [Acknowledged, AwaitingApproval, Escalated, Resolved],
            "without approval: rejected, timed out or resolved, then a person's"
        );
        // Every state whose entry needs the record leads to the run, and only through it
        // can the run be reached.
        assert!(Remediating.needs_approval_record() && Queued.needs_approval_record());
        assert!(AwaitingApproval.can_move_to(Queued) && Queued.can_move_to(Remediating));
        for (from, to) in MOVES {
            if *to == Remediating {
                assert!(
                    from.is_some_and(State::needs_approval_record),
                    "a run starts from {from:?}, which needs no approval record"
                );
            }
        }
        // Waiting is open, and its resolution means nothing ran.
        assert!(AwaitingApproval.is_open());
        assert_eq!(
            Outcome::on_resolution(AwaitingApproval),
            Outcome::ResolvedBeforeAction
        );
    }

    fn t(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, minute, 0).unwrap()
    }

    fn latest(state: State, minute: u32) -> Latest {
        Latest {
            id: "I1".into(),
            state,
            starts_at: t(minute),
            // Heard of once, when it opened (a minute after it began).
            last_seen_at: t(minute + 1),
        }
    }

    fn check(latest: Option<Latest>, status: Status, minute: u32, expected: Action) {
        // A resolution ends when it is sent, after its start; a firing has no end.
        let ends = (status == Status::Resolved).then_some(minute + 1);
        check_ends(latest, status, minute, ends, expected);
    }

    fn check_ends(
        latest: Option<Latest>,
        status: Status,
        minute: u32,
        ends: Option<u32>,
        expected: Action,
    ) {
        assert_eq!(
            decide(latest.as_ref(), status, t(minute), ends.map(t)),
            expected,
            "latest={latest:?} status={status:?} startsAt=:{minute} endsAt={ends:?}"
        );
    }

    use Status::{Firing, Resolved};

    #[test]
    fn first_sight() {
        check(None, Firing, 5, Action::Open);
        check(None, Resolved, 5, Action::UnknownResolved);
    }

    /// [`check`] against `I1` in each of `states`, begun at :05.
    fn check_each(states: &[State], status: Status, minute: u32, expected: Action) {
        for &state in states {
            check(Some(latest(state, 5)), status, minute, expected.clone());
        }
    }

    fn duplicate() -> Action {
        Action::Duplicate { id: "I1".into() }
    }

    fn resolve(outcome: Outcome) -> Action {
        Action::Resolve {
            id: "I1".into(),
            outcome,
        }
    }

    fn stale(why: &'static str) -> Action {
        Action::Stale {
            id: "I1".into(),
            why,
        }
    }

    fn supersede(outcome: Outcome) -> Action {
        Action::Supersede {
            id: "I1".into(),
            outcome,
        }
    }

    use State::{Acknowledged, AwaitingApproval, Escalated, Queued, Remediating, Verifying};

    /// Every state of an open incident.
    const OPEN: [State; 6] = [
        Queued,
        AwaitingApproval,
        Remediating,
        Verifying,
        Escalated,
        Acknowledged,
    ];

    #[test]
    fn resends_join_the_open_incident() {
        check_each(&OPEN, Firing, 5, duplicate());
    }

    #[test]
    fn resolution_moves_the_incident_on() {
        let cases = [
            (Queued, Outcome::ResolvedBeforeAction),
            (AwaitingApproval, Outcome::ResolvedBeforeAction),
            (Remediating, Outcome::AutoRemediated),
            (Verifying, Outcome::AutoRemediated),
            (Escalated, Outcome::ResolvedAfterEscalation),
            (Acknowledged, Outcome::ResolvedAfterEscalation),
        ];
        for (state, outcome) in cases {
            check(Some(latest(state, 5)), Resolved, 5, resolve(outcome));
        }
        // A resolution for a newer period still ends the open one: it is over too.
        check_each(
            &[Queued],
            Resolved,
            9,
            resolve(Outcome::ResolvedBeforeAction),
        );
    }

    #[test]
    fn firing_after_resolution_opens_a_new_incident() {
        check_each(&[State::Resolved], Firing, 9, Action::Open);
    }

    #[test]
    fn stale_notifications_never_reopen() {
        let resolved = [State::Resolved];
        // The retried firing of the period that already resolved.
        let why = "firing arrived after its own resolution";
        check_each(&resolved, Firing, 5, stale(why));
        // A firing older than a period that resolved.
        check_each(
            &resolved,
            Firing,
            1,
            stale("startsAt is older than the incident's"),
        );
        // A resolution that ended before the incident began is about an older period.
        for state in [State::Resolved, Queued, Escalated, State::Ignored] {
            let why = "the resolution ended before the incident began";
            check_ends(Some(latest(state, 5)), Resolved, 1, Some(3), stale(why));
        }
        // The same resolution again is a duplicate, not a change.
        check_each(&resolved, Resolved, 5, duplicate());
        // A resolution of a later period we never saw firing.
        check_each(&resolved, Resolved, 9, Action::UnknownResolved);
    }

    #[test]
    fn newer_firing_supersedes_an_open_incident() {
        let outcome = Outcome::ResolvedAfterEscalation;
        check_each(&[Escalated], Firing, 9, supersede(outcome));
    }

    #[test]
    fn ha_prometheus_newer_starts_at_while_known_firing_is_the_same_firing_period() {
        // An Alertmanager that had only the later Prometheus's copy: its startsAt (:6) is
        // newer than the incident's (:5) but not newer than the last time medic heard the
        // alert firing (:6): the periods overlap, no false resolution and no second run.
        let states = [Queued, Remediating, Verifying, Escalated];
        check_each(&states, Firing, 6, duplicate());
        // Begun after medic last heard it firing: a new period whose resolution was lost.
        let outcome = Outcome::ResolvedAfterEscalation;
        check_each(&[Escalated], Firing, 7, supersede(outcome));
    }

    #[test]
    fn ha_prometheus_older_starts_at_is_the_same_firing_period() {
        // Alertmanager kept the earlier startsAt of the pair: same period, a duplicate; the
        // incident keeps the start it opened with.
        check_each(&OPEN, Firing, 3, duplicate());
    }

    #[test]
    fn ha_prometheus_resolution_with_older_starts_at_resolves_the_open_incident() {
        let at = |state| Some(latest(state, 5));
        let outcome = Outcome::ResolvedAfterEscalation;
        check_ends(at(Escalated), Resolved, 3, Some(9), resolve(outcome));
        // Ended exactly when the incident began: still its period.
        let outcome = Outcome::AutoRemediated;
        check_ends(at(Verifying), Resolved, 3, Some(5), resolve(outcome));
        // Without endsAt, only startsAt can tell: an older one is stale.
        let why = "the resolution ended before the incident began";
        check_ends(at(Escalated), Resolved, 3, None, stale(why));
        // Repeated after the incident resolved: a duplicate, not stale.
        check_ends(at(State::Resolved), Resolved, 3, Some(9), duplicate());
    }

    #[test]
    fn ignored_incident_counts_its_period_and_opens_a_newer_one() {
        let ignored = || Some(latest(State::Ignored, 5));
        check(ignored(), Firing, 5, duplicate());
        check(ignored(), Firing, 3, duplicate());
        check(ignored(), Resolved, 5, duplicate());
        check_ends(ignored(), Resolved, 3, Some(9), duplicate());
        check(ignored(), Firing, 9, Action::Open);
        check(ignored(), Resolved, 9, Action::UnknownResolved);
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
