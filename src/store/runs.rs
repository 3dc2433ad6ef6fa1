//! Runs: the queue of incidents waiting for their runbook, claiming them, their leases,
//! how they end, runs a dead process left behind, and the silences runs created.
//!
//! A run starts only by moving its incident from `queued` to `remediating` here (the
//! claim), with a lease this process renews while it runs; its end moves the incident only
//! if this process still holds it.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::db::{params, OptionalExtension};
use super::guards::SharedCheck;
use super::transition::Move;
use super::writer::Writer;
use super::{stamp, Claim, Claimed, Queued, RunResult, Store, StoreError};
use crate::audit::{Event, NewEntry};
use crate::guard::Shared;
use crate::incident::{Reason, State};

/// Describes a claimed run for its `run_started` audit entry.
pub(super) type Describe = Box<dyn Fn(&Claim) -> Value + Send>;

impl Store {
    /// Up to `limit` queued incidents, oldest first, as the guards see them (a read).
    pub async fn queued(&self, limit: usize) -> Result<Vec<Queued>, StoreError> {
        self.inner.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, route, labels FROM incidents WHERE state = 'queued' ORDER BY id LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, String>(2)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, route, labels) = row?;
                let labels = serde_json::from_str(&labels)
                    .map_err(|_| StoreError::Corrupt(format!("incident {id}: labels are not JSON")))?;
                out.push(Queued { id, route, labels });
            }
            Ok(out)
        })
        .await
    }
    /// Claims the given queued incidents (queued → remediating), writing each one's
    /// `run_started` entry (`started`) in the same commit. Incidents no longer queued are
    /// skipped.
    pub async fn claim(
        &self,
        ids: Vec<String>,
        started: impl Fn(&Claim) -> Value + Send + 'static,
    ) -> Result<Vec<Claim>, StoreError> {
        let ids = ids.into_iter().map(|id| (id, None)).collect();
        Ok(self.claim_runs(ids, Box::new(started)).await?.claims)
    }

    /// [`Store::claim`] with the shared guards of each run checked in the same transaction:
    /// a run whose in-flight cap is full stays queued; one refused by its breaker or a rate
    /// bucket is escalated, and listed in [`Claimed::refused`].
    pub async fn claim_checked(
        &self,
        ids: Vec<(String, Option<Shared>)>,
        started: impl Fn(&Claim) -> Value + Send + 'static,
    ) -> Result<Claimed, StoreError> {
        self.claim_runs(ids, Box::new(started)).await
    }

    async fn claim_runs(
        &self,
        ids: Vec<(String, Option<Shared>)>,
        started: Describe,
    ) -> Result<Claimed, StoreError> {
        self.inner
            .write_weighted(ids.len().max(1), move |w| w.claim(&ids, &started))
            .await
    }

    /// Records how the run of incident `id` ended: its `run_finished` entry (`finished`)
    /// and the state change, in one commit. Returns the new state, or `None` when the
    /// incident had already moved on (its alert resolved during the run).
    pub async fn finish_run(
        &self,
        id: &str,
        result: RunResult,
        finished: Value,
    ) -> Result<Option<State>, StoreError> {
        let id = id.to_string();
        self.inner
            .write(move |w| w.finish_run(&id, result.clone(), &finished))
            .await
    }

    /// Extends the leases on runs `ids`, which this process is running (see
    /// `store.lease`); returns how many it still holds. A run whose end could not be
    /// recorded is not renewed: its lease runs out and it is recovered like any other.
    pub async fn renew_leases(&self, ids: Vec<String>) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.inner
            .write(move |w| {
                let until = stamp(w.cx.now() + w.cx.lease);
                let mut held = 0;
                for id in &ids {
                    held += w
                        .conn
                        .prepare_cached(
                            "UPDATE incidents SET lease_until = ?3
                         WHERE id = ?1 AND state = 'remediating' AND lease_owner = ?2",
                        )?
                        .execute(params![id, w.cx.owner, until])?;
                }
                Ok(held)
            })
            .await
    }

    /// Incidents left `remediating` by a process that died: whose lease ran out (with
    /// SQLite, at start-up, every one). Each is requeued once if its route is idempotent
    /// (`routes[].idempotent`, listed in `idempotent_routes`) and it ran only once, else
    /// escalated `interrupted`. Returns what was done to each.
    pub async fn recover_interrupted(
        &self,
        idempotent_routes: Vec<String>,
    ) -> Result<Vec<(String, State)>, StoreError> {
        self.inner
            .write(move |w| w.recover_interrupted(&idempotent_routes))
            .await
    }

    /// Remembers a silence created for an incident, to expire it when the incident ends.
    pub async fn record_silence(
        &self,
        incident_id: &str,
        silence_id: &str,
        ends_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (incident_id, silence_id) = (incident_id.to_string(), silence_id.to_string());
        self.inner.write(move |w| {
            w.conn
                .prepare_cached(
                    "INSERT INTO silences (silence_id, incident_id, ends_at, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                )?
                .execute(params![silence_id, incident_id, stamp(ends_at), stamp(w.cx.now())])?;
            Ok(())
        })
        .await
    }

    /// Silences whose incident has ended and that were not expired yet: (incident, silence).
    pub async fn silences_to_expire(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT s.incident_id, s.silence_id FROM silences s JOIN incidents i ON i.id = s.incident_id
                 WHERE s.expired_at IS NULL AND i.is_open = 0 LIMIT 100",
            )?;
            let rows = stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    /// Marks a silence expired and audits it.
    pub async fn silence_expired(
        &self,
        incident_id: &str,
        silence_id: &str,
    ) -> Result<(), StoreError> {
        let (incident_id, silence_id) = (incident_id.to_string(), silence_id.to_string());
        self.inner.write(move |w| {
            let now = stamp(w.cx.now());
            w.conn
                .prepare_cached("UPDATE silences SET expired_at = ?2 WHERE silence_id = ?1 AND expired_at IS NULL")?
                .execute(params![silence_id, now])?;
            let detail = json!({ "silence_id": silence_id });
            w.append(NewEntry::for_incident(Event::SilenceExpired, &incident_id, &detail), &now)
        })
        .await
    }
}

impl Writer {
    fn claim(
        &mut self,
        ids: &[(String, Option<Shared>)],
        started: &Describe,
    ) -> Result<Claimed, StoreError> {
        let now_t = self.cx.now();
        let now = stamp(now_t);
        let mut claimed = Claimed::default();
        for (id, shared) in ids {
            let row = self
                .conn
                .prepare_cached(
                    "SELECT fingerprint, alertname, labels, annotations, starts_at, generator_url, route, runbook, attempts,
                        approval_until, plan, approved_at
                     FROM incidents WHERE id = ?1 AND state = 'queued'",
                )?
                .query_row([id], |r| {
                    Ok(QueuedRow {
                        fingerprint: r.get(0)?,
                        alertname: r.get(1)?,
                        labels: r.get(2)?,
                        annotations: r.get(3)?,
                        starts_at: r.get(4)?,
                        generator_url: r.get(5)?,
                        route: r.get(6)?,
                        runbook: r.get(7)?,
                        attempts: r.get(8)?,
                        approval_until: r.get(9)?,
                        plan: r.get(10)?,
                        approved_at: r.get(11)?,
                    })
                })
                .optional()?;
            let Some(row) = row else {
                continue;
            };
            // An incident that waited for approval runs only bound to its approved plan.
            let plan = super::approvals::bound_plan(
                id,
                row.approval_until.as_deref(),
                row.plan.as_deref(),
                row.approved_at.as_deref(),
            )?;
            let mut in_flight_key = None;
            if let Some(shared) = shared {
                match self.check_shared(id, shared, now_t, &now)? {
                    SharedCheck::Pass => in_flight_key = shared.in_flight.as_ref().map(|k| &k.0),
                    SharedCheck::Wait => continue,
                    SharedCheck::Refused(limit) => {
                        claimed.refused.push((id.clone(), limit));
                        continue;
                    }
                }
            }
            let attempt = row.attempts as u32 + 1;
            let until = stamp(now_t + self.cx.lease);
            self.conn
                .prepare_cached(
                    "UPDATE incidents SET attempts = ?2, lease_owner = ?3, lease_until = ?4, in_flight_key = ?5
                     WHERE id = ?1",
                )?
                .execute(params![id, attempt, self.cx.owner, until, in_flight_key])?;
            let started_run = Move {
                extra: json!({ "attempt": attempt }),
                ..Move::new(State::Queued, State::Remediating)
            };
            self.transition(id, started_run, &now)?;
            let corrupt = |what: &str| StoreError::Corrupt(format!("incident {id}: {what}"));
            let claim = Claim {
                labels: serde_json::from_str(&row.labels)
                    .map_err(|_| corrupt("labels are not JSON"))?,
                annotations: serde_json::from_str(&row.annotations)
                    .map_err(|_| corrupt("annotations are not JSON"))?,
                runbook: row
                    .runbook
                    .ok_or_else(|| corrupt("queued without a runbook"))?,
                id: id.clone(),
                fingerprint: row.fingerprint,
                alertname: row.alertname,
                starts_at: row.starts_at,
                generator_url: row.generator_url,
                route: row.route,
                attempt,
                plan,
            };
            let detail = started(&claim);
            self.append(NewEntry::for_incident(Event::RunStarted, id, &detail), &now)?;
            claimed.claims.push(claim);
        }
        Ok(claimed)
    }

    fn finish_run(
        &mut self,
        id: &str,
        result: RunResult,
        finished: &Value,
    ) -> Result<Option<State>, StoreError> {
        let now = stamp(self.cx.now());
        self.append(
            NewEntry::for_incident(Event::RunFinished, id, finished),
            &now,
        )?;
        // A run whose lease ran out was taken over (escalated, or run again elsewhere):
        // its end changes nothing.
        let holder: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT lease_owner FROM incidents WHERE id = ?1 AND state = 'remediating'",
            )?
            .query_row([id], |r| r.get(0))
            .optional()?
            .flatten();
        if holder.as_deref().is_some_and(|h| h != self.cx.owner) {
            return Ok(None);
        }
        let (to, reason, message) = match &result {
            RunResult::Completed => (State::Verifying, None, None),
            RunResult::Escalated { reason, message } => {
                (State::Escalated, Some(*reason), Some(message.as_str()))
            }
            RunResult::Requeue { message } => (State::Queued, None, Some(message.as_str())),
        };
        let m = Move {
            reason,
            message,
            ..Move::new(State::Remediating, to)
        };
        let moved = self.transition(id, m, &now)?;
        Ok(moved.then_some(to))
    }

    fn recover_interrupted(
        &mut self,
        idempotent: &[String],
    ) -> Result<Vec<(String, State)>, StoreError> {
        let now = stamp(self.cx.now());
        let rows = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, route, attempts, lease_owner FROM incidents
                 WHERE state = 'remediating' AND (lease_until IS NULL OR lease_until < ?1) ORDER BY id",
            )?;
            let rows = stmt.query_map([&now], |r| {
                Ok(LeftRun {
                    id: r.get(0)?,
                    route: r.get(1)?,
                    attempts: r.get(2)?,
                    holder: r.get(3)?,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let mut out = Vec::new();
        for LeftRun {
            id,
            route,
            attempts,
            holder,
        } in rows
        {
            let rerun = attempts < 2 && route.as_ref().is_some_and(|r| idempotent.contains(r));
            // Whose run it was: this process's past self, or a replica that stopped renewing.
            let extra = match holder {
                Some(h) if h != self.cx.owner => json!({ "lease_owner": h }),
                _ => Value::Null,
            };
            if rerun {
                let message =
                    "medic stopped during the run; the route is idempotent, so it runs once more";
                let m = Move {
                    message: Some(message),
                    extra: extra.clone(),
                    ..Move::new(State::Remediating, State::Queued)
                };
                self.transition(&id, m, &now)?;
                out.push((id, State::Queued));
            } else {
                let message = if attempts >= 2 {
                    "medic stopped during the run again; not re-running a second time"
                } else {
                    "medic stopped during the run; steps may have partly run, so it is not re-run"
                };
                let m = Move {
                    reason: Some(Reason::Interrupted),
                    message: Some(message),
                    extra,
                    ..Move::new(State::Remediating, State::Escalated)
                };
                self.transition(&id, m, &now)?;
                out.push((id, State::Escalated));
            }
        }
        Ok(out)
    }
}

/// A queued incident as a claim reads it.
struct QueuedRow {
    fingerprint: String,
    alertname: String,
    labels: String,
    annotations: String,
    starts_at: String,
    generator_url: String,
    route: Option<String>,
    runbook: Option<String>,
    attempts: i64,
    approval_until: Option<String>,
    plan: Option<String>,
    approved_at: Option<String>,
}

/// A run left `remediating` whose lease ran out.
struct LeftRun {
    id: String,
    route: Option<String>,
    attempts: i64,
    /// Who held its lease.
    holder: Option<String>,
}
