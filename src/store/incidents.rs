//! Incidents: opening, deduplicating and resolving them as deliveries arrive, the end of
//! a verification, and acknowledgements.
//!
//! The ingest job commits one webhook delivery: for each alert it asks `incident::decide`
//! what the notification means and carries the answer out in the same transaction, with
//! its audit entries. The newest incident of each alert is looked up for the whole batch
//! at once where the database allows ([`prefetch_latest`]). State changes go through
//! `transition.rs`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use serde_json::value::RawValue;

use super::changelog::{latest_of, Change};
use super::db::{params, Db, OptionalExtension};
use super::transition::{Closing, Move, NewIncident, StateWrite};
use super::writer::Writer;
use super::{
    parse_time, stamp, stamp_exact, Ack, AlertEffect, Delivery, LinkAck, Routed, Store, StoreError,
    Verifying,
};
use crate::alert::Alert;
use crate::audit::{Event, NewEntry};
use crate::incident::{self, AckVia, Action, Latest, Outcome, Reason, State};

/// The newest incident of a fingerprint, as read from its row.
pub(super) struct LatestRow {
    pub id: String,
    pub state: String,
    pub starts_at: String,
    pub last_seen_at: String,
}

/// Looks up the newest incident of every alert a batch's deliveries are about, in one
/// statement where the database offers one (else nothing: each is read when needed). Valid
/// until a job that is not a delivery runs (it may change an incident) or a job rolls
/// back; each answer is used once.
pub(super) fn prefetch_latest(
    conn: &dyn Db,
    fingerprints: &[&str],
) -> Result<HashMap<String, Option<LatestRow>>, StoreError> {
    let mut found = HashMap::new();
    if fingerprints.is_empty() {
        return Ok(found);
    }
    let Some(rows) = conn.latest_incidents(fingerprints)? else {
        return Ok(found);
    };
    for fp in fingerprints {
        found.insert(fp.to_string(), None);
    }
    for r in rows {
        let row = LatestRow {
            id: r.get(1)?,
            state: r.get(2)?,
            starts_at: r.get(3)?,
            last_seen_at: r.get(4)?,
        };
        found.insert(r.get(0)?, Some(row));
    }
    Ok(found)
}

impl Store {
    /// Commits a delivery: its audit entries and the incidents its alerts open, join or
    /// resolve. Returns only once the commit is durable.
    pub async fn ingest(&self, delivery: Delivery) -> Result<Vec<AlertEffect>, StoreError> {
        // Render the JSON here, on the caller's thread; the writer only binds it.
        let prepared = Prepared::new(delivery);
        let weight = prepared.alerts.len().max(1);
        let fingerprints = prepared
            .alerts
            .iter()
            .map(|a| a.alert.fingerprint.clone())
            .collect();
        self.inner
            .submit(weight, fingerprints, move |w| w.ingest(&prepared))
            .await
    }

    /// Incidents in `verifying`, soonest deadline first.
    pub async fn verifying(&self, limit: usize) -> Result<Vec<Verifying>, StoreError> {
        struct Row {
            id: String,
            route: Option<String>,
            fingerprint: String,
            labels: String,
            verify_until: Option<String>,
            updated_at: String,
        }
        let plans = self.inner.settings.plans();
        let now = self.inner.now();
        self.inner
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, route, fingerprint, labels, verify_until, updated_at FROM incidents
                     WHERE state = 'verifying' ORDER BY verify_until LIMIT ?1",
                )?;
                let rows = stmt.query_map([limit as i64], |r| {
                    Ok(Row {
                        id: r.get(0)?,
                        route: r.get(1)?,
                        fingerprint: r.get(2)?,
                        labels: r.get(3)?,
                        verify_until: r.get(4)?,
                        updated_at: r.get(5)?,
                    })
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let row = row?;
                    // Verifying since before timers were stored: from its last change.
                    let until = match row.verify_until.as_deref().and_then(parse_time) {
                        Some(t) => t,
                        None => {
                            parse_time(&row.updated_at).unwrap_or(now)
                                + plans.verify_for(row.route.as_deref())
                        }
                    };
                    let id = row.id;
                    out.push(Verifying {
                        labels: serde_json::from_str(&row.labels).map_err(|_| {
                            StoreError::Corrupt(format!("incident {id}: labels are not JSON"))
                        })?,
                        id,
                        route: row.route,
                        fingerprint: row.fingerprint,
                        verify_until: until,
                    });
                }
                Ok(out)
            })
            .await
    }

    /// The wait after a run ended and the alert still fires: escalates `still_firing` with
    /// `message` (and schedules its notifications in the same commit). False when the
    /// incident was no longer verifying.
    pub async fn verification_failed(&self, id: &str, message: &str) -> Result<bool, StoreError> {
        let (id, message) = (id.to_string(), message.to_string());
        self.inner
            .write(move |w| {
                let now = stamp(w.cx.now());
                if w.state_of(&id)? != Some(State::Verifying) {
                    return Ok(false);
                }
                w.verification_ended(&id, false, &message, &now)?;
                let m = Move {
                    reason: Some(Reason::StillFiring),
                    message: Some(&message),
                    ..Move::new(State::Verifying, State::Escalated)
                };
                w.transition(&id, m, &now)
            })
            .await
    }

    /// The alert of a verifying incident is gone (`how` says how medic knows): resolved,
    /// `auto_remediated`. False when the incident was no longer verifying.
    pub async fn verification_resolved(&self, id: &str, how: &str) -> Result<bool, StoreError> {
        let (id, how) = (id.to_string(), how.to_string());
        self.inner
            .write(move |w| {
                let now = stamp(w.cx.now());
                if w.state_of(&id)? != Some(State::Verifying) {
                    return Ok(false);
                }
                let r = Resolution {
                    outcome: Outcome::AutoRemediated,
                    ends_at: None,
                    note: Some(&how),
                    delivery: false,
                };
                w.resolve(&id, State::Verifying, r, &now)?;
                Ok(true)
            })
            .await
    }

    /// A person (`by`, if given) takes an escalated incident over, through `via`: →
    /// `acknowledged`, and the notifications of later tiers are cancelled.
    pub async fn ack(&self, id: &str, by: Option<String>, via: AckVia) -> Result<Ack, StoreError> {
        let id = id.to_string();
        self.inner.write(move |w| w.ack(&id, by.clone(), via)).await
    }

    /// [`Store::ack`] through a signed one-click link: refused with
    /// [`LinkAck::AlreadyUsed`] when the link's `nonce` was used before, else the nonce is
    /// recorded in the same transaction as the acknowledgement (and only if it
    /// acknowledged: a link that changed nothing can still be used).
    pub async fn ack_by_link(
        &self,
        id: &str,
        by: &str,
        nonce: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<LinkAck, StoreError> {
        let (id, by, nonce) = (id.to_string(), by.to_string(), nonce.to_string());
        let expires_at = stamp(expires_at);
        self.inner
            .write(move |w| w.ack_by_link(&id, &by, &nonce, &expires_at))
            .await
    }
}

impl Writer {
    fn ingest(&mut self, d: &Prepared) -> Result<Vec<AlertEffect>, StoreError> {
        self.append(
            NewEntry::raw(Event::DeliveryReceived, None, d.received.clone()),
            &d.now,
        )?;
        let mut effects = Vec::with_capacity(d.alerts.len());
        for alert in &d.alerts {
            effects.push(self.ingest_alert(alert, &d.now)?);
        }
        Ok(effects)
    }

    fn ingest_alert(&mut self, p: &PreparedAlert, now: &str) -> Result<AlertEffect, StoreError> {
        let a = &p.alert;
        let latest = self.latest(&a.fingerprint)?;
        match incident::decide(latest.as_ref(), a.status, a.starts_at, a.ends_at) {
            Action::Open => {
                let relapse_of = match &latest {
                    Some(l) if l.state == State::Resolved => self.relapse_of(&l.id, now)?,
                    _ => None,
                };
                Ok(AlertEffect::Opened(self.open(p, relapse_of, now)?))
            }
            Action::Duplicate { id } => {
                self.conn
                    .prepare_cached(
                        "UPDATE incidents SET deliveries = deliveries + 1, last_seen_at = ?2, annotations = ?3,
                            external_url = ?4
                         WHERE id = ?1",
                    )?
                    .execute(params![id, now, p.annotations.get(), p.external_url])?;
                let detail = details::Notification {
                    status: a.status,
                    starts_at: &p.starts_at,
                    why: None,
                    extra: &a.extra,
                };
                self.append(
                    NewEntry::for_incident(Event::AlertDeduplicated, &id, &detail),
                    now,
                )?;
                Ok(AlertEffect::Deduplicated)
            }
            Action::Resolve { id, outcome } => {
                let from = latest.map(|l| l.state).unwrap_or(State::Queued);
                let r = Resolution {
                    outcome,
                    ends_at: a.ends_at,
                    note: None,
                    delivery: true,
                };
                self.resolve(&id, from, r, now)?;
                Ok(AlertEffect::Resolved { id, outcome })
            }
            Action::Supersede { id, outcome } => {
                let from = latest.map(|l| l.state).unwrap_or(State::Queued);
                let note = "a newer firing arrived; this period's resolution was never delivered";
                let r = Resolution {
                    outcome,
                    ends_at: None,
                    note: Some(note),
                    delivery: true,
                };
                self.resolve(&id, from, r, now)?;
                // Closed as fixed by its runbook and firing again: the fix did not stick.
                let relapse_of = match outcome {
                    Outcome::AutoRemediated => {
                        let route = self.route_of(&id)?.unwrap_or_default();
                        Some((id, route))
                    }
                    _ => None,
                };
                Ok(AlertEffect::Superseded(self.open(p, relapse_of, now)?))
            }
            Action::Stale { id, why } => {
                let detail = details::Notification {
                    status: a.status,
                    starts_at: &p.starts_at,
                    why: Some(why),
                    extra: &a.extra,
                };
                self.append(NewEntry::for_incident(Event::AlertStale, &id, &detail), now)?;
                Ok(AlertEffect::Stale)
            }
            Action::UnknownResolved => {
                let detail = json!({
                    "fingerprint": a.fingerprint, "alertname": a.alertname(), "labels": p.labels,
                    "starts_at": p.starts_at,
                });
                self.append(NewEntry::new(Event::AlertResolvedUnknown, &detail), now)?;
                Ok(AlertEffect::UnknownResolved)
            }
        }
    }

    /// The newest incident of `fingerprint`: looked up for the whole batch when it started
    /// (PostgreSQL, see [`prefetch_latest`]), once; else read now.
    fn latest(&mut self, fingerprint: &str) -> Result<Option<Latest>, StoreError> {
        let row = match self.batch.prefetched.remove(fingerprint) {
            Some(found) => found,
            None => self
                .conn
                .prepare_cached(
                    "SELECT id, state, starts_at, last_seen_at FROM incidents WHERE fingerprint = ?1
                     ORDER BY starts_at DESC LIMIT 1",
                )?
                .query_row([fingerprint], |r| {
                    Ok(LatestRow {
                        id: r.get(0)?,
                        state: r.get(1)?,
                        starts_at: r.get(2)?,
                        last_seen_at: r.get(3)?,
                    })
                })
                .optional()?,
        };
        let Some(LatestRow {
            id,
            state,
            starts_at,
            last_seen_at,
        }) = row
        else {
            return Ok(None);
        };
        Ok(Some(Latest {
            state: State::parse(&state).ok_or_else(|| {
                StoreError::Corrupt(format!("incident {id}: unknown state {state:?}"))
            })?,
            starts_at: parse_time(&starts_at).ok_or_else(|| {
                StoreError::Corrupt(format!("incident {id}: bad starts_at {starts_at:?}"))
            })?,
            last_seen_at: parse_time(&last_seen_at).ok_or_else(|| {
                StoreError::Corrupt(format!("incident {id}: bad last_seen_at {last_seen_at:?}"))
            })?,
            id,
        }))
    }

    /// Whether an alert firing again `now` relapses after closed incident `id`: resolved
    /// `auto_remediated` no longer than `limits.relapse_window` ago. Its id and route if so.
    fn relapse_of(&self, id: &str, now: &str) -> Result<Option<(String, String)>, StoreError> {
        let row: Option<(Option<String>, Option<String>, String)> = self
            .conn
            .prepare_cached(
                "SELECT outcome, resolved_at, COALESCE(route, '') FROM incidents WHERE id = ?1",
            )?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((outcome, resolved_at, route)) = row else {
            return Ok(None);
        };
        if outcome.as_deref() != Some(Outcome::AutoRemediated.as_str()) {
            return Ok(None);
        }
        let (Some(fixed), Some(now)) =
            (resolved_at.as_deref().and_then(parse_time), parse_time(now))
        else {
            return Ok(None);
        };
        // A fix stamped after `now` (replicas' clocks apart) was moments ago.
        let within = match (now - fixed).to_std() {
            Ok(since) => since <= self.cx.relapse_window(),
            Err(_) => true,
        };
        Ok(within.then(|| (id.to_string(), route)))
    }

    /// Opens an incident for a new firing period and records how it was routed;
    /// `relapse_of`: the automated fix (incident and route) it fires again after.
    fn open(
        &mut self,
        p: &PreparedAlert,
        relapse_of: Option<(String, String)>,
        now: &str,
    ) -> Result<State, StoreError> {
        let a = &p.alert;
        let id = self.cx.new_id();
        // What the incident is from its first row: queued for its runbook, taken on purpose
        // (ignored), or escalated at once (no runbook, or content over medic's limits).
        let first = FirstState::of(&p.routed);
        let FirstState {
            state,
            reason,
            route,
            runbook,
            why,
        } = first;
        // A route that asks first: the incident waits for a person's approval of its plan.
        let approval_until = self.approval_deadline(&p.routed, now);
        let state = match approval_until {
            Some(_) => State::AwaitingApproval,
            None => state,
        };
        // An alert escalated as it opens gets its storm group and first round in the same row.
        let group = match reason {
            Some(reason) => Some(self.assign_group(&id, route.unwrap_or(""), reason, now)?),
            None => None,
        };
        let row = NewIncident {
            fingerprint: &a.fingerprint,
            alertname: a.alertname(),
            labels: p.labels.get(),
            annotations: p.annotations.get(),
            generator_url: &a.generator_url,
            starts_at: &p.starts_at,
            state,
            reason,
            route,
            runbook,
            message: why,
            external_url: &p.external_url,
            escalation_group: group.as_ref().map(|(g, _)| g.id.as_str()),
        };
        self.write_state(&id, StateWrite::Open(&row), now)?;
        let relapse = relapse_of.as_ref().map(|(fixed, _)| fixed.as_str());
        let opened = details::IncidentOpened {
            fingerprint: &a.fingerprint,
            alertname: a.alertname(),
            labels: &p.labels,
            annotations: &p.annotations,
            starts_at: &p.starts_at,
            generator_url: &a.generator_url,
            state: State::Queued,
            relapse_of: relapse,
            extra: &a.extra,
        };
        self.append(
            NewEntry::for_incident(Event::IncidentOpened, &id, &opened),
            now,
        )?;
        self.batch.changes.push(Change {
            reason,
            relapse_of,
            ..Change::new(
                &id,
                a.alertname().to_string(),
                a.fingerprint.clone(),
                route.unwrap_or_default().to_string(),
                None,
                state,
            )
        });
        match &p.routed {
            Routed::Runbook { route, runbook } => {
                let detail = details::RouteMatched { route, runbook };
                self.append(
                    NewEntry::for_incident(Event::RouteMatched, &id, &detail),
                    now,
                )?;
                if let Some(until) = &approval_until {
                    self.await_approval(&id, Some(route), until, now)?;
                }
            }
            Routed::Ignore { route } => {
                let detail = json!({"from": State::Queued, "to": State::Ignored, "route": route,
                    "message": "the route ignores this alert: nothing is run and nobody is told"});
                self.append(
                    NewEntry::for_incident(Event::StateChanged, &id, &detail),
                    now,
                )?;
            }
            Routed::NoRunbook { why } | Routed::Invalid { why, .. } => {
                if matches!(p.routed, Routed::NoRunbook { .. }) {
                    self.append(
                        NewEntry::for_incident(Event::RouteMissed, &id, &json!({ "why": why })),
                        now,
                    )?;
                }
                let mut detail =
                    json!({"from": State::Queued, "to": State::Escalated, "reason": reason});
                if route.is_some() {
                    detail["route"] = json!(route);
                }
                if matches!(p.routed, Routed::Invalid { .. }) {
                    detail["message"] = json!(why);
                }
                self.append(
                    NewEntry::for_incident(Event::StateChanged, &id, &detail),
                    now,
                )?;
                if let (Some((group, first)), Some(reason)) = (group, reason) {
                    self.audit_grouping(&id, route.unwrap_or(""), reason, &group, first, now)?;
                    self.schedule_escalation(&id, Some(group), now)?;
                }
            }
        }
        Ok(state)
    }

    /// Resolves incident `id`, which is in `from`: through the one checked transition,
    /// after the end of its verification (if it was verifying), and followed by the
    /// announcement of the end to the channels told of its escalation.
    fn resolve(
        &mut self,
        id: &str,
        from: State,
        r: Resolution<'_>,
        now: &str,
    ) -> Result<(), StoreError> {
        if from == State::Verifying {
            let how = r
                .note
                .unwrap_or("Alertmanager sent the resolved notification");
            self.verification_ended(id, true, how, now)?;
        }
        let mut extra = json!({ "outcome": r.outcome });
        if let Some(t) = r.ends_at {
            extra["ends_at"] = json!(stamp_exact(t));
        }
        if let Some(note) = r.note {
            extra["note"] = json!(note);
        }
        let m = Move {
            extra,
            closing: Some(Closing {
                outcome: r.outcome,
                delivery: r.delivery,
            }),
            ..Move::new(from, State::Resolved)
        };
        if !self.transition(id, m, now)? {
            // `from` was read in this transaction: another state means a bug, not a race.
            return Err(StoreError::Corrupt(format!(
                "incident {id}: expected {} to resolve it, found another state",
                from.as_str()
            )));
        }
        if matches!(from, State::Escalated | State::Acknowledged) {
            self.announce_resolution(id, now)?;
        }
        if from == State::AwaitingApproval {
            self.withdraw_approval(id, now)?;
        }
        Ok(())
    }

    /// The end of a verification: `success` when the alert resolved while medic waited
    /// after a run, not when the wait ran out. Every verification ends here, inside the
    /// transaction that resolves or escalates the incident: this is where a route's
    /// circuit breaker records its success or failure.
    fn verification_ended(
        &mut self,
        id: &str,
        success: bool,
        how: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        let event = if success {
            Event::VerificationSucceeded
        } else {
            Event::VerificationFailed
        };
        let route = self.route_of(id)?;
        let detail = json!({"route": route, "how": how});
        self.append(NewEntry::for_incident(event, id, &detail), now)
    }

    fn ack(&mut self, id: &str, by: Option<String>, via: AckVia) -> Result<Ack, StoreError> {
        let row: Option<(String, Option<String>)> = self
            .conn
            .prepare_cached("SELECT state, acked_by FROM incidents WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((state, acked_by)) = row else {
            return Ok(Ack::NotFound);
        };
        let state = State::parse(&state).ok_or_else(|| {
            StoreError::Corrupt(format!("incident {id}: unknown state {state:?}"))
        })?;
        match state {
            State::Acknowledged => return Ok(Ack::Already(acked_by)),
            State::Escalated => {}
            other => return Ok(Ack::NotEscalated(other)),
        }
        let now = stamp(self.cx.now());
        let m = Move {
            extra: json!({ "by": by, "via": via }),
            ..Move::new(State::Escalated, State::Acknowledged)
        };
        if self.transition(id, m, &now)? {
            if let Some(change) = latest_of(&mut self.batch.changes, id) {
                change.via = Some(via);
            }
        }
        self.conn
            .prepare_cached("UPDATE incidents SET acked_by = ?2 WHERE id = ?1")?
            .execute(params![id, by])?;
        self.append(
            NewEntry::for_incident(
                Event::IncidentAcknowledged,
                id,
                &json!({ "by": by, "via": via }),
            ),
            &now,
        )?;
        self.cancel_pending(id, "acknowledged", &now)?;
        Ok(Ack::Acknowledged)
    }

    fn ack_by_link(
        &mut self,
        id: &str,
        by: &str,
        nonce: &str,
        expires_at: &str,
    ) -> Result<LinkAck, StoreError> {
        let used: Option<i64> = self
            .conn
            .prepare_cached("SELECT 1 FROM used_links WHERE nonce = ?1")?
            .query_row([nonce], |r| r.get(0))
            .optional()?;
        if used.is_some() {
            return Ok(LinkAck::AlreadyUsed);
        }
        let ack = self.ack(id, Some(by.to_string()), AckVia::Link)?;
        if ack == Ack::Acknowledged {
            let now = stamp(self.cx.now());
            self.conn
                .prepare_cached(
                    "INSERT INTO used_links (nonce, incident_id, action, used_by, used_at, expires_at)
                     VALUES (?1, ?2, 'ack', ?3, ?4, ?5)",
                )?
                .execute(params![nonce, id, by, now, expires_at])?;
        }
        Ok(LinkAck::Ack(ack))
    }
}

/// How an incident is resolved: its outcome, the alert's end, a note, and whether a
/// notification (a delivery) said so.
struct Resolution<'a> {
    outcome: Outcome,
    ends_at: Option<DateTime<Utc>>,
    note: Option<&'a str>,
    delivery: bool,
}

/// The audit details written on the intake path, as typed structs: serialized straight to
/// text, with no intermediate JSON tree.
mod details {
    use serde::Serialize;
    use serde_json::value::RawValue;
    use serde_json::{Map, Value};

    use crate::alert::Status;
    use crate::incident::State;

    #[derive(Serialize)]
    pub struct DeliveryReceived<'a> {
        pub source: &'a str,
        pub receiver: &'a str,
        pub status: Status,
        pub group_key: &'a str,
        pub alerts: usize,
        pub truncated_alerts: u64,
        pub external_url: &'a str,
        #[serde(skip_serializing_if = "Map::is_empty")]
        pub extra: &'a Map<String, Value>,
    }

    #[derive(Serialize)]
    pub struct IncidentOpened<'a> {
        pub fingerprint: &'a str,
        pub alertname: &'a str,
        pub labels: &'a RawValue,
        pub annotations: &'a RawValue,
        pub starts_at: &'a str,
        pub generator_url: &'a str,
        pub state: State,
        /// The incident whose automated fix this firing follows too soon: a relapse.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub relapse_of: Option<&'a str>,
        #[serde(skip_serializing_if = "Map::is_empty")]
        pub extra: &'a Map<String, Value>,
    }

    #[derive(Serialize)]
    pub struct RouteMatched<'a> {
        pub route: &'a str,
        pub runbook: &'a str,
    }

    /// A notification that changed nothing (a duplicate or a stale one).
    #[derive(Serialize)]
    pub struct Notification<'a> {
        pub status: Status,
        pub starts_at: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub why: Option<&'a str>,
        #[serde(skip_serializing_if = "Map::is_empty")]
        pub extra: &'a Map<String, Value>,
    }
}

/// What an incident is from its first row, as its routing says.
struct FirstState<'a> {
    state: State,
    reason: Option<Reason>,
    route: Option<&'a str>,
    runbook: Option<&'a str>,
    /// Why it was escalated as it opened.
    why: Option<&'a str>,
}

impl FirstState<'_> {
    fn of(routed: &Routed) -> FirstState<'_> {
        let first = FirstState {
            state: State::Queued,
            reason: None,
            route: None,
            runbook: None,
            why: None,
        };
        match routed {
            Routed::Runbook { route, runbook } => FirstState {
                route: Some(route),
                runbook: Some(runbook),
                ..first
            },
            Routed::Ignore { route } => FirstState {
                state: State::Ignored,
                route: Some(route),
                ..first
            },
            Routed::NoRunbook { why } => FirstState {
                state: State::Escalated,
                reason: Some(Reason::NoRunbook),
                why: Some(why),
                ..first
            },
            Routed::Invalid { route, why } => FirstState {
                state: State::Escalated,
                reason: Some(Reason::InvalidAlert),
                route: route.as_deref(),
                why: Some(why),
                ..first
            },
        }
    }
}

/// A delivery with its JSON and timestamps rendered on the caller's thread, so that the one
/// writer thread only binds text.
struct Prepared {
    now: String,
    /// The `delivery_received` detail.
    received: String,
    alerts: Vec<PreparedAlert>,
}

struct PreparedAlert {
    alert: Alert,
    routed: Routed,
    /// Alertmanager's external URL, from the delivery.
    external_url: String,
    starts_at: String,
    labels: Box<RawValue>,
    annotations: Box<RawValue>,
}

impl Prepared {
    fn new(d: Delivery) -> Prepared {
        let received = details::DeliveryReceived {
            source: &d.source,
            receiver: &d.receiver,
            status: d.status,
            group_key: &d.group_key,
            alerts: d.alerts.len(),
            truncated_alerts: d.truncated_alerts,
            external_url: &d.external_url,
            extra: &d.extra,
        };
        let received = serde_json::to_string(&received).unwrap_or_else(|_| "{}".into());
        let alerts = d
            .alerts
            .into_iter()
            .map(|(alert, routed)| PreparedAlert {
                external_url: d.external_url.clone(),
                starts_at: stamp_exact(alert.starts_at),
                labels: raw_json(&alert.labels),
                annotations: raw_json(&alert.annotations),
                alert,
                routed,
            })
            .collect();
        Prepared {
            now: stamp(d.received_at),
            received,
            alerts,
        }
    }
}

/// A string map as JSON text (maps of strings always serialize).
fn raw_json(map: &std::collections::BTreeMap<String, String>) -> Box<RawValue> {
    serde_json::value::to_raw_value(map)
        .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("valid JSON"))
}
