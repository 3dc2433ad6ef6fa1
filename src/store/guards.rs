//! Guards kept in the store, for replicas that share it: the shared rate buckets and
//! in-flight caps checked as a run is claimed, circuit breakers, refusals, shedding the
//! queue, and the pause switch.
//!
//! The decisions are `guard`'s (pure state machines that take time as an argument); this
//! file reads and writes their state inside the writer's transaction, so that every
//! replica sees one budget.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use serde_json::{json, Value};

use super::db::{params, OptionalExtension, Row};
use super::transition::Move;
use super::writer::{Writer, MAX_BATCH_WEIGHT};
use super::{stamp, to_json, Refusal, Store, StoreError};
use crate::audit::{Event, NewEntry};
use crate::guard::breaker::Admit;
use crate::guard::{self, BreakerEntry, Limit, Pause, Shared};
use crate::incident::{Reason, State};

/// What a run's shared guards said, in the claim transaction.
pub(super) enum SharedCheck {
    Pass,
    /// Its in-flight cap is full: it stays queued.
    Wait,
    /// Escalated, by this limit.
    Refused(Limit),
}

impl Store {
    /// Escalates queued incidents the guards refused, each with its reason, message and
    /// the limit that refused it, in one commit.
    pub async fn refuse(&self, refusals: Vec<Refusal>) -> Result<(), StoreError> {
        self.inner
            .write_weighted(refusals.len().max(1), move |w| {
                let now = stamp(w.cx.now());
                for r in refusals.iter().cloned() {
                    w.refuse(&r.id, r.reason, r.limit, &r.message, &now)?;
                }
                Ok(())
            })
            .await
    }

    /// Escalates the newest queued incidents beyond `max_queued` (`rate_limited`), at most
    /// a commit's worth per call. Returns how many.
    pub async fn shed_queue(&self, max_queued: usize) -> Result<usize, StoreError> {
        // A bounded share per call (the runner calls again a few times a second), so that a
        // storm's shedding never holds a commit long enough to time deliveries out.
        self.inner.write_weighted(MAX_BATCH_WEIGHT, move |w| {
            let ids: Vec<String> = {
                let mut stmt = w.conn.prepare_cached(
                    "SELECT id FROM incidents WHERE state = 'queued' ORDER BY id DESC LIMIT ?2 OFFSET ?1",
                )?;
                let rows =
                    stmt.query_map(params![max_queued as i64, MAX_BATCH_WEIGHT as i64], |r| r.get(0))?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            let now = stamp(w.cx.now());
            let message = format!("the queue of incidents waiting to run is full (limits.max_queued = {max_queued})");
            for id in &ids {
                w.refuse(id, Reason::RateLimited, Limit::MaxQueued, &message, &now)?;
            }
            Ok(ids.len())
        })
        .await
    }

    /// Every persisted circuit breaker.
    pub async fn breakers(&self) -> Result<Vec<BreakerEntry>, StoreError> {
        self.inner
            .read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, route, key, data FROM breakers ORDER BY route, id",
                )?;
                let rows = stmt.query_map((), breaker_row)?;
                rows.collect()
            })
            .await
    }

    /// Persists a breaker and audits why (`detail`).
    pub async fn save_breaker(&self, entry: BreakerEntry, detail: Value) -> Result<(), StoreError> {
        self.inner
            .write(move |w| {
                let now = stamp(w.cx.now());
                w.store_breaker(&entry, &now)?;
                let mut detail = detail.clone();
                detail["breaker"] = json!(entry.id);
                detail["route"] = json!(entry.route);
                detail["key"] = json!(entry.key);
                detail["state"] = json!(entry.breaker.state);
                w.append(NewEntry::new(Event::BreakerChanged, &detail), &now)
            })
            .await
    }

    /// The persisted pause switch.
    pub async fn pause(&self) -> Result<Option<Pause>, StoreError> {
        self.inner
            .read(|c| {
                let v: Option<String> = c
                    .query_row("SELECT value FROM settings WHERE name = 'pause'", (), |r| {
                        r.get(0)
                    })
                    .optional()?;
                Ok(v.and_then(|v| serde_json::from_str(&v).ok()))
            })
            .await
    }

    /// Sets (or clears) the pause switch and audits who did it.
    pub async fn set_pause(&self, pause: Option<Pause>, by: &str) -> Result<(), StoreError> {
        let by = by.to_string();
        self.inner.write(move |w| {
            let now = stamp(w.cx.now());
            let (event, detail) = match &pause {
                Some(p) => {
                    w.conn
                        .prepare_cached(
                            "INSERT INTO settings (name, value, updated_at) VALUES ('pause', ?1, ?2)
                             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                        )?
                        .execute(params![to_json(p), now])?;
                    (Event::Paused, json!({"by": p.by, "reason": p.reason}))
                }
                None => {
                    w.conn.execute("DELETE FROM settings WHERE name = 'pause'", ())?;
                    (Event::Resumed, json!({ "by": by }))
                }
            };
            w.append(NewEntry::new(event, &detail), &now)
        })
        .await
    }
}

impl Writer {
    /// Applies a run's shared guards, inside the claim's transaction: the in-flight cap,
    /// the breaker (taking its half-open trial), then the rate buckets. A refusal escalates
    /// the incident here.
    pub(super) fn check_shared(
        &mut self,
        id: &str,
        shared: &Shared,
        now_t: DateTime<Utc>,
        now: &str,
    ) -> Result<SharedCheck, StoreError> {
        if let Some((key, max)) = &shared.in_flight {
            let running: i64 = self
                .conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM incidents WHERE state = 'remediating' AND in_flight_key = ?1",
                )?
                .query_row([key], |r| r.get(0))?;
            if running >= i64::from(*max) {
                return Ok(SharedCheck::Wait);
            }
        }
        let refuse = |w: &mut Writer, reason: Reason, limit: Limit, message: &str| {
            w.refuse(id, reason, limit, message, now)
                .map(|_| SharedCheck::Refused(limit))
        };
        if let Some(b) = &shared.breaker {
            let stored = self.load_breaker(&b.id)?;
            let new = stored.is_none();
            let mut entry = stored.unwrap_or_else(|| BreakerEntry {
                id: b.id.clone(),
                route: b.route.clone(),
                key: b.key.clone(),
                breaker: Default::default(),
            });
            let before = entry.breaker.clone();
            if let Admit::Refuse { failures, until } = entry.breaker.admit(id, now_t, b.cooldown) {
                let message = guard::breaker_refusal(&b.route, &failures, until);
                return refuse(self, Reason::CircuitOpen, Limit::Breaker, &message);
            }
            // Stored from its first run on, so that every replica records into the same one.
            if new || entry.breaker != before {
                self.store_breaker(&entry, now)?;
            }
        }
        let now_us = now_t.timestamp_micros();
        for r in &shared.rates {
            let tat: Option<i64> = self
                .conn
                .prepare_cached("SELECT tat_us FROM rate_buckets WHERE key = ?1")?
                .query_row([&r.bucket], |row| row.get(0))
                .optional()?;
            let Some(next) = guard::gcra(tat, now_us, r.rate) else {
                return refuse(self, Reason::RateLimited, r.limit, &r.message);
            };
            self.conn
                .prepare_cached(
                    "INSERT INTO rate_buckets (key, tat_us) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET tat_us = excluded.tat_us",
                )?
                .execute(params![r.bucket, next])?;
        }
        Ok(SharedCheck::Pass)
    }

    /// Escalates a queued incident a guard refused, naming the limit (`refused_by`).
    pub(super) fn refuse(
        &mut self,
        id: &str,
        reason: Reason,
        limit: Limit,
        message: &str,
        now: &str,
    ) -> Result<bool, StoreError> {
        let m = Move {
            reason: Some(reason),
            message: Some(message),
            extra: json!({ "refused_by": limit }),
            ..Move::new(State::Queued, State::Escalated)
        };
        self.transition(id, m, now)
    }

    fn load_breaker(&self, id: &str) -> Result<Option<BreakerEntry>, StoreError> {
        self.conn
            .prepare_cached("SELECT id, route, key, data FROM breakers WHERE id = ?1")?
            .query_row([id], breaker_row)
            .optional()
    }

    fn store_breaker(&mut self, entry: &BreakerEntry, now: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO breakers (id, route, key, state, data, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, data = excluded.data,
                    updated_at = excluded.updated_at",
            )?
            .execute(params![
                entry.id,
                entry.route,
                to_json(&entry.key),
                entry.breaker.state.as_str(),
                to_json(&entry.breaker),
                now
            ])?;
        Ok(())
    }

    /// Records a remediation's result with breaker `id`, read and written in this
    /// transaction (shared guards). Returns the breaker when it changed.
    fn record_breaker(
        &mut self,
        id: &str,
        incident: &str,
        success: bool,
        thresholds: &HashMap<String, u32>,
    ) -> Result<Option<BreakerEntry>, StoreError> {
        let Some(mut entry) = self.load_breaker(id)? else {
            return Ok(None);
        };
        let now_t = self.cx.now();
        let threshold = thresholds.get(&entry.route).copied().unwrap_or(u32::MAX);
        let before = entry.breaker.clone();
        entry.breaker.record(incident, success, now_t, threshold);
        if entry.breaker == before {
            return Ok(None);
        }
        let now = stamp(now_t);
        self.store_breaker(&entry, &now)?;
        let detail = json!({
            "incident": incident, "success": success, "breaker": entry.id, "route": entry.route,
            "key": entry.key, "state": entry.breaker.state,
        });
        self.append(NewEntry::new(Event::BreakerChanged, &detail), &now)?;
        Ok(Some(entry))
    }
}

impl crate::guard::BreakerStore for Store {
    type Error = StoreError;

    async fn record_shared(
        &self,
        id: &str,
        incident: &str,
        success: bool,
        thresholds: HashMap<String, u32>,
    ) -> Result<Option<BreakerEntry>, StoreError> {
        // Read, updated and audited in one transaction.
        let (id, incident) = (id.to_string(), incident.to_string());
        self.inner
            .write(move |w| w.record_breaker(&id, &incident, success, &thresholds))
            .await
    }

    async fn save(&self, entry: BreakerEntry, detail: Value) -> Result<(), StoreError> {
        self.save_breaker(entry, detail).await
    }
}

/// Maps a row of `SELECT id, route, key, data FROM breakers`.
fn breaker_row(r: &Row) -> Result<BreakerEntry, StoreError> {
    let id: String = r.get(0)?;
    let (key, data): (String, String) = (r.get(2)?, r.get(3)?);
    let corrupt = |what: &str| StoreError::Corrupt(format!("breaker {id}: {what}"));
    Ok(BreakerEntry {
        route: r.get(1)?,
        key: serde_json::from_str(&key).map_err(|_| corrupt("key is not JSON"))?,
        breaker: serde_json::from_str(&data).map_err(|_| corrupt("state is not valid"))?,
        id,
    })
}
