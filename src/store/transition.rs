//! The one place an incident's state is written.
//!
//! Every change of an incident's `state` column, its first (the row `open` inserts, in
//! `incidents.rs`) included, goes through [`Writer::write_state`], which checks the move against
//! the table of `crate::incident` ([`State::can_move_to`], [`State::can_open_as`]) and
//! refuses any other with [`StoreError::IllegalMove`], writing nothing. A move is
//! conditional on the state the incident is in now: it changes nothing when the incident
//! moved on meanwhile (a resolution during a run, another replica's claim).
//!
//! An incident that waited for approval is refused any move into a state that
//! [`State::needs_approval_record`] (queued, remediating) without its approval record
//! ([`StoreError::Unapproved`]): the one gate between `awaiting_approval` and a run.
//!
//! [`Writer::transition`] is a move with what comes with it: the audit entry, the log line,
//! the verification timer and, for an escalation, its storm group and notifications, all
//! in the same transaction.

use serde_json::{json, Value};

use super::changelog::Change;
use super::db::{params, OptionalExtension};
use super::writer::Writer;
use super::{parse_time, stamp, StoreError};
use crate::audit::{Event, NewEntry};
use crate::incident::{Outcome, Reason, State};

/// A conditional state change: `from` → `to`, with why, and extra audit detail.
pub(super) struct Move<'a> {
    pub from: State,
    pub to: State,
    pub reason: Option<Reason>,
    pub message: Option<&'a str>,
    pub extra: Value,
    /// For a move to `resolved`: how it ended.
    pub closing: Option<Closing>,
}

impl Move<'_> {
    pub(super) fn new(from: State, to: State) -> Self {
        Move {
            from,
            to,
            reason: None,
            message: None,
            extra: Value::Null,
            closing: None,
        }
    }
}

/// What a resolution writes beside the state: its outcome, and whether a notification (a
/// delivery) said so.
pub(super) struct Closing {
    pub outcome: Outcome,
    pub delivery: bool,
}

/// A new incident's first row.
pub(super) struct NewIncident<'a> {
    pub fingerprint: &'a str,
    pub alertname: &'a str,
    pub labels: &'a str,
    pub annotations: &'a str,
    pub generator_url: &'a str,
    pub starts_at: &'a str,
    pub state: State,
    pub reason: Option<Reason>,
    pub route: Option<&'a str>,
    pub runbook: Option<&'a str>,
    pub message: Option<&'a str>,
    pub external_url: &'a str,
    /// Escalated as it opens: its storm group (and its first round starts now).
    pub escalation_group: Option<&'a str>,
}

/// A write of an incident's state.
pub(super) enum StateWrite<'a> {
    /// The incident's first row.
    Open(&'a NewIncident<'a>),
    /// A move of an incident that exists, with what it sets beside the state.
    Move {
        m: &'a Move<'a>,
        verify_until: Option<&'a str>,
    },
}

/// Who an incident is, as a move reads it back (for the log and the metrics).
pub(super) struct Moved {
    pub route: String,
    pub alertname: String,
    pub fingerprint: String,
    /// When it was opened.
    pub created_at: String,
}

impl Writer {
    /// The one place an incident's `state` is written: checks the move against the
    /// transition table, then inserts the first row or moves the incident if it is still
    /// in `from`. `None` when it is not (nothing changed). An illegal move is an error, and
    /// nothing is written.
    pub(super) fn write_state(
        &mut self,
        id: &str,
        write: StateWrite<'_>,
        now: &str,
    ) -> Result<Option<Moved>, StoreError> {
        let (from, to) = match &write {
            StateWrite::Open(row) => (None, row.state),
            StateWrite::Move { m, .. } => (Some(m.from), m.to),
        };
        let allowed = match from {
            None => to.can_open_as(),
            Some(from) => from.can_move_to(to),
        };
        if !allowed {
            return Err(StoreError::IllegalMove {
                id: id.to_string(),
                from,
                to,
            });
        }
        // Whatever move leads there: an incident that waited for approval is queued or
        // run only with its approval record.
        if from.is_some() && to.needs_approval_record() && self.lacks_approval(id)? {
            return Err(StoreError::Unapproved {
                id: id.to_string(),
                to,
            });
        }
        match write {
            StateWrite::Open(row) => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO incidents (id, fingerprint, alertname, labels, annotations, generator_url,
                            starts_at, state, is_open, reason, route, runbook, deliveries, created_at, updated_at, last_seen_at,
                            message, external_url, escalation_group, escalated_at, round, round_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?18, ?9, ?10, ?11, 1, ?12, ?12, ?12, ?13, ?14, ?15, ?16, ?17, ?16)",
                    )?
                    .execute(params![
                        id,
                        row.fingerprint,
                        row.alertname,
                        row.labels,
                        row.annotations,
                        row.generator_url,
                        row.starts_at,
                        to.as_str(),
                        row.reason.map(Reason::as_str),
                        row.route,
                        row.runbook,
                        now,
                        row.message,
                        row.external_url,
                        row.escalation_group,
                        row.escalation_group.map(|_| now),
                        i64::from(row.escalation_group.is_some()),
                        i64::from(to.is_open()),
                    ])?;
                Ok(Some(Moved {
                    route: row.route.unwrap_or_default().to_string(),
                    alertname: row.alertname.to_string(),
                    fingerprint: row.fingerprint.to_string(),
                    created_at: now.to_string(),
                }))
            }
            StateWrite::Move { m, verify_until } => {
                let closing = m.closing.as_ref();
                let moved = self
                    .conn
                    .prepare_cached(
                        "UPDATE incidents SET state = ?3, is_open = ?8, reason = COALESCE(?4, reason),
                            message = COALESCE(?5, message), updated_at = ?6, verify_until = ?7,
                            outcome = COALESCE(?9, outcome), resolved_at = COALESCE(?10, resolved_at),
                            last_seen_at = COALESCE(?10, last_seen_at), deliveries = deliveries + ?11
                         WHERE id = ?1 AND state = ?2
                         RETURNING COALESCE(route, ''), alertname, fingerprint, created_at",
                    )?
                    .query_row(
                        params![
                            id,
                            m.from.as_str(),
                            m.to.as_str(),
                            m.reason.map(Reason::as_str),
                            m.message,
                            now,
                            verify_until,
                            i64::from(m.to.is_open()),
                            closing.map(|c| c.outcome.as_str()),
                            closing.map(|_| now),
                            i64::from(closing.is_some_and(|c| c.delivery)),
                        ],
                        |r| {
                            Ok(Moved {
                                route: r.get(0)?,
                                alertname: r.get(1)?,
                                fingerprint: r.get(2)?,
                                created_at: r.get(3)?,
                            })
                        },
                    )
                    .optional()?;
                Ok(moved)
            }
        }
    }

    /// Moves one incident's state, conditionally on where it is now, and audits the change.
    /// Returns false (and changes nothing) when the incident is not in `from`.
    pub(super) fn transition(
        &mut self,
        id: &str,
        m: Move<'_>,
        now: &str,
    ) -> Result<bool, StoreError> {
        // Entering `verifying` starts the verification timer; leaving it stops it.
        let verify_until = match m.to {
            State::Verifying => {
                let route = self.route_of(id)?;
                let verify_for = self.cx.plans().verify_for(route.as_deref());
                let at = parse_time(now).unwrap_or_else(|| self.cx.now());
                Some(stamp(at + verify_for))
            }
            _ => None,
        };
        let write = StateWrite::Move {
            m: &m,
            verify_until: verify_until.as_deref(),
        };
        let Some(moved) = self.write_state(id, write, now)? else {
            return Ok(false);
        };
        let Move {
            from,
            to,
            reason,
            message,
            extra,
            closing,
        } = m;
        // A resolution: its outcome and how long the incident was open, for the metrics.
        let resolved = closing.map(|c| {
            let open_for = parse_time(&moved.created_at)
                .zip(parse_time(now))
                .and_then(|(opened, closed)| (closed - opened).to_std().ok());
            (c.outcome, open_for)
        });
        let change = Change {
            reason,
            resolved,
            ..Change::new(
                id,
                moved.alertname,
                moved.fingerprint,
                moved.route.clone(),
                Some(from),
                to,
            )
        };
        self.batch.changes.push(change);
        let mut detail = json!({"from": from, "to": to});
        if let Some(until) = &verify_until {
            detail["verify_until"] = json!(until);
        }
        if let Some(r) = reason {
            detail["reason"] = json!(r);
        }
        if let Some(m) = message {
            detail["message"] = json!(m);
        }
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                detail[k] = v;
            }
        }
        self.append(
            NewEntry::for_incident(Event::StateChanged, id, &detail),
            now,
        )?;
        if to == State::Escalated {
            let group = match reason {
                Some(reason) => Some(self.group_escalation(id, &moved.route, reason, now)?),
                None => None,
            };
            // The notifications are committed with the escalation: none is ever lost.
            self.escalate(id, group, now)?;
        }
        Ok(true)
    }

    pub(super) fn state_of(&self, id: &str) -> Result<Option<State>, StoreError> {
        let state: Option<String> = self
            .conn
            .prepare_cached("SELECT state FROM incidents WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        state
            .map(|s| {
                State::parse(&s).ok_or_else(|| {
                    StoreError::Corrupt(format!("incident {id}: unknown state {s:?}"))
                })
            })
            .transpose()
    }

    pub(super) fn route_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT route FROM incidents WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?
            .flatten())
    }
}
