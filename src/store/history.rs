//! Looking back at incidents, for postmortems: a storm group and its incidents, the
//! incidents just before and after one firing of a fingerprint, recent incidents of a
//! route or an alert, several incidents with their timelines in one read, and the
//! breaker changes a run's end caused.
//!
//! Every read is bounded. "Recent" is a range of incident ids: ids are ULIDs made from the
//! store's clock when the incident opened, so id order is creation order and a time range
//! is a range of the primary key.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::db::{params, OptionalExtension, ToVal, Val};
use super::reads::{incident_row, INCIDENT_COLUMNS};
use super::{parse_time, Incident, Store, StoreError, TimelineEntry};
use crate::incident::Reason;

/// A storm group as stored: escalations of one route and reason close in time.
#[derive(Debug, Clone)]
pub struct StormGroup {
    pub id: String,
    pub route: String,
    pub reason: String,
    pub opened_at: String,
    /// How many incidents joined it.
    pub size: u64,
    /// Its first incident.
    pub leader: String,
}

/// Which recent incidents to read (see [`Store::recent_incidents`]).
#[derive(Debug, Clone)]
pub struct Recent {
    pub route: Option<String>,
    pub alertname: Option<String>,
    /// Escalated for one of these reasons (any, when empty).
    pub reasons: Vec<Reason>,
    /// Opened at or after this time ...
    pub from: DateTime<Utc>,
    /// ... and at or before this one.
    pub to: DateTime<Utc>,
}

/// A circuit breaker's change, from the audit log.
#[derive(Debug, Clone)]
pub struct BreakerChange {
    pub seq: i64,
    pub at: String,
    pub detail: Value,
}

/// The smallest incident id opened at `t` or later.
fn id_floor(t: DateTime<Utc>) -> String {
    ulid::Ulid::from_parts(t.timestamp_millis().max(0) as u64, 0).to_string()
}

impl Recent {
    /// The `WHERE` clause and its arguments.
    fn clause(&self) -> (String, Vec<Val>) {
        let mut sql = String::from("id >= ?1 AND id < ?2");
        let mut args = vec![
            Val::Text(id_floor(self.from)),
            Val::Text(id_floor(self.to + chrono::Duration::milliseconds(1))),
        ];
        if let Some(route) = &self.route {
            args.push(route.to_val());
            sql.push_str(&format!(" AND route = ?{}", args.len()));
        }
        if let Some(name) = &self.alertname {
            args.push(name.to_val());
            sql.push_str(&format!(" AND alertname = ?{}", args.len()));
        }
        if !self.reasons.is_empty() {
            let mut marks = Vec::new();
            for r in &self.reasons {
                args.push(Val::Text(r.as_str().to_string()));
                marks.push(format!("?{}", args.len()));
            }
            sql.push_str(&format!(" AND reason IN ({})", marks.join(", ")));
        }
        (sql, args)
    }
}

impl Store {
    /// Storm group `group`, and the ids of its incidents (at most `limit`: its first
    /// incident, then in id order). Read through the primary key when the group's incidents
    /// opened within a day of it (as good as always), else by a scan of the incidents.
    pub async fn storm_group(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Option<(StormGroup, Vec<String>)>, StoreError> {
        let group = group.to_string();
        self.inner
            .read(move |c| {
                let found = c
                    .prepare_cached(
                        "SELECT id, route, reason, opened_at, size, leader FROM escalation_groups
                         WHERE id = ?1",
                    )?
                    .query_row([&group], |r| {
                        Ok(StormGroup {
                            id: r.get(0)?,
                            route: r.get(1)?,
                            reason: r.get(2)?,
                            opened_at: r.get(3)?,
                            size: r.get::<_, i64>(4)?.max(0) as u64,
                            leader: r.get(5)?,
                        })
                    })
                    .optional()?;
                let Some(g) = found else { return Ok(None) };
                // Its incidents escalated within its window, so they opened before it ended:
                // first look among those opened the day around it (a range of the primary
                // key), and only if some are missing, through every incident.
                let expected = g.size.min(limit as u64) as usize;
                if let Some(opened) = parse_time(&g.opened_at) {
                    let lo = id_floor(opened - chrono::Duration::days(1));
                    let hi = id_floor(opened + chrono::Duration::days(1));
                    let ids = c
                        .prepare_cached(
                            "SELECT id FROM incidents WHERE id >= ?4 AND id < ?5 AND escalation_group = ?1
                             ORDER BY CASE WHEN id = ?2 THEN 0 ELSE 1 END, id LIMIT ?3",
                        )?
                        .query_map(params![g.id, g.leader, limit as i64, lo, hi], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()?;
                    if ids.len() >= expected {
                        return Ok(Some((g, ids)));
                    }
                }
                let ids = c
                    .prepare_cached(
                        "SELECT id FROM incidents WHERE escalation_group = ?1
                         ORDER BY CASE WHEN id = ?2 THEN 0 ELSE 1 END, id LIMIT ?3",
                    )?
                    .query_map(params![g.id, g.leader, limit as i64], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()?;
                Ok(Some((g, ids)))
            })
            .await
    }

    /// The incidents of `fingerprint` that fired just before and just after the one whose
    /// alert started at `starts_at` (as stored), without timelines.
    pub async fn neighbours(
        &self,
        fingerprint: &str,
        starts_at: &str,
    ) -> Result<(Option<Incident>, Option<Incident>), StoreError> {
        let (fp, at) = (fingerprint.to_string(), starts_at.to_string());
        self.inner
            .read(move |c| {
                let one = |sql: &str| -> Result<Option<Incident>, StoreError> {
                    match c
                        .prepare_cached(sql)?
                        .query_row(params![fp, at], incident_row)
                        .optional()?
                    {
                        Some(found) => found.map(Some),
                        None => Ok(None),
                    }
                };
                let before = one(&format!(
                    "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE fingerprint = ?1 AND starts_at < ?2
                     ORDER BY starts_at DESC LIMIT 1"
                ))?;
                let after = one(&format!(
                    "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE fingerprint = ?1 AND starts_at > ?2
                     ORDER BY starts_at LIMIT 1"
                ))?;
                Ok((before, after))
            })
            .await
    }

    /// Incidents matching `recent`, newest first, at most `limit`, without timelines.
    pub async fn recent_incidents(
        &self,
        recent: Recent,
        limit: usize,
    ) -> Result<Vec<Incident>, StoreError> {
        self.inner
            .read(move |c| {
                let (clause, args) = recent.clause();
                let sql = format!(
                    "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE {clause} ORDER BY id DESC LIMIT {limit}"
                );
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query_map(args, incident_row)?;
                rows.map(|r| r.and_then(|r| r)).collect()
            })
            .await
    }

    /// How many incidents match `recent`.
    pub async fn count_recent(&self, recent: Recent) -> Result<u64, StoreError> {
        self.inner
            .read(move |c| {
                let (clause, args) = recent.clause();
                let n: i64 = c
                    .prepare_cached(&format!("SELECT COUNT(*) FROM incidents WHERE {clause}"))?
                    .query_row(args, |r| r.get(0))?;
                Ok(n.max(0) as u64)
            })
            .await
    }

    /// The incidents `ids` with their timelines, in that order; an unknown id is left out.
    pub async fn incidents_with_timelines(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<Incident>, StoreError> {
        self.inner
            .read(move |c| {
                let mut out = Vec::with_capacity(ids.len());
                for id in &ids {
                    let found = c
                        .prepare_cached(&format!(
                            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1"
                        ))?
                        .query_row([id], incident_row)
                        .optional()?;
                    let Some(incident) = found else { continue };
                    let mut incident = incident?;
                    let mut stmt = c.prepare_cached(
                        "SELECT seq, at, event, detail FROM audit WHERE incident_id = ?1 ORDER BY seq",
                    )?;
                    let timeline = stmt
                        .query_map([id], |r| {
                            let detail: String = r.get(3)?;
                            Ok(TimelineEntry {
                                seq: r.get(0)?,
                                at: r.get(1)?,
                                event: r.get(2)?,
                                detail: serde_json::from_str(&detail)
                                    .unwrap_or(Value::String(detail)),
                            })
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    incident.timeline = Some(timeline);
                    out.push(incident);
                }
                Ok(out)
            })
            .await
    }

    /// The circuit breaker changes among the `within` audit entries after `after`
    /// (the entry that ended a run or its verification: the breaker records that result
    /// just after it).
    pub async fn breaker_changes(
        &self,
        after: i64,
        within: i64,
    ) -> Result<Vec<BreakerChange>, StoreError> {
        self.inner
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT seq, at, detail FROM audit
                     WHERE seq > ?1 AND seq <= ?2 AND event = 'breaker_changed' ORDER BY seq",
                )?;
                let rows = stmt.query_map(params![after, after.saturating_add(within)], |r| {
                    let detail: String = r.get(2)?;
                    Ok(BreakerChange {
                        seq: r.get(0)?,
                        at: r.get(1)?,
                        detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Status;
    use crate::clock::Clock;
    use crate::guard::Limit;
    use crate::metrics::StoreMetrics;
    use crate::store::{Delivery, Refusal, Routed};

    fn firing(instance: &str) -> Delivery {
        let alert = crate::store::tests::alert(instance, Status::Firing, 0);
        Delivery {
            received_at: Utc::now(),
            source: "127.0.0.1:5000".into(),
            receiver: "medic".into(),
            status: Status::Firing,
            group_key: "{}".into(),
            external_url: String::new(),
            truncated_alerts: 0,
            extra: serde_json::Map::new(),
            alerts: vec![(
                alert,
                Routed::Runbook {
                    route: "disk".into(),
                    runbook: "disk_full.rhai".into(),
                },
            )],
        }
    }

    /// Regression guard for the fast path of `storm_group`: an incident that opened two
    /// days before the storm it joined (it waited, queued, until a guard refused it) is
    /// still one of the storm's.
    #[tokio::test]
    async fn a_storm_finds_an_incident_that_opened_long_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::store::postgres::test_url(&dir.path().join("data/medic.db"));
        let store = Store::open(&url, StoreMetrics::default()).unwrap();
        let t0: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().unwrap();
        store.set_clock(Clock::following_tokio(t0));
        store.ingest(firing("old")).await.unwrap();
        store.set_clock(Clock::following_tokio(t0 + chrono::Duration::days(2)));
        store.ingest(firing("new")).await.unwrap();
        let id = |instance: &'static str| {
            let store = store.clone();
            async move {
                let all = store
                    .incidents(crate::store::IncidentFilter {
                        limit: 10,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                all.into_iter()
                    .find(|i| i.labels["instance"] == instance)
                    .unwrap()
                    .id
            }
        };
        let (old, new) = (id("old").await, id("new").await);
        for who in [&new, &old] {
            let refusal = Refusal {
                id: who.clone(),
                reason: Reason::RateLimited,
                limit: Limit::RouteRate,
                message: "over the route's rate".into(),
            };
            store.refuse(vec![refusal]).await.unwrap();
        }
        let group = store
            .incident(&new)
            .await
            .unwrap()
            .unwrap()
            .escalation_group;
        let group = group.expect("grouped");
        let (g, ids) = store.storm_group(&group, 10).await.unwrap().unwrap();
        assert_eq!((g.size, g.leader.as_str()), (2, new.as_str()));
        assert_eq!(
            ids,
            vec![new.clone(), old.clone()],
            "the first incident first"
        );
        let (_, first) = store.storm_group(&group, 1).await.unwrap().unwrap();
        assert_eq!(first, vec![new]);
    }

    #[test]
    fn an_id_floor_sorts_between_the_ids_of_its_millisecond_and_the_one_before() {
        let t: DateTime<Utc> = "2026-11-23T10:00:00.005Z".parse().unwrap();
        let floor = id_floor(t);
        let before = ulid::Ulid::from_parts(t.timestamp_millis() as u64 - 1, u128::MAX >> 48);
        let same = ulid::Ulid::from_parts(t.timestamp_millis() as u64, 12345);
        assert!(before.to_string() < floor);
        assert!(floor <= same.to_string());
    }
}
