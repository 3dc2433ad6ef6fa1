//! Reading incidents: the list the API pages through, one incident with its timeline
//! (its audit entries), and counts by state. Reads run on the read connections, beside
//! the writer.

use serde_json::Value;

use super::db::{OptionalExtension, Row, ToVal};
use super::{stamp_exact, Incident, IncidentFilter, Store, StoreError, TimelineEntry};
use crate::incident::{Outcome, Reason, State};

impl Store {
    /// Incidents matching `filter`, newest first, without timelines.
    pub async fn incidents(&self, filter: IncidentFilter) -> Result<Vec<Incident>, StoreError> {
        let f = filter;
        self.inner
            .read(move |c| {
                let mut sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE 1=1");
                let mut args: Vec<String> = Vec::new();
                if let Some(state) = f.state {
                    args.push(state.as_str().to_string());
                    sql.push_str(&format!(" AND state = ?{}", args.len()));
                }
                if let Some(name) = f.alertname {
                    args.push(name);
                    sql.push_str(&format!(" AND alertname = ?{}", args.len()));
                }
                if let Some(route) = f.route {
                    args.push(route);
                    sql.push_str(&format!(" AND route = ?{}", args.len()));
                }
                if let Some(reason) = f.reason {
                    args.push(reason.as_str().to_string());
                    sql.push_str(&format!(" AND reason = ?{}", args.len()));
                }
                // Stored start times are fixed-width UTC text: text order is time order.
                if let Some(since) = f.since {
                    args.push(stamp_exact(since));
                    sql.push_str(&format!(" AND starts_at >= ?{}", args.len()));
                }
                if let Some(until) = f.until {
                    args.push(stamp_exact(until));
                    sql.push_str(&format!(" AND starts_at < ?{}", args.len()));
                }
                sql.push_str(&format!(
                    " ORDER BY id DESC LIMIT {} OFFSET {}",
                    f.limit, f.offset
                ));
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query_map(
                    args.iter().map(ToVal::to_val).collect::<Vec<_>>(),
                    incident_row,
                )?;
                rows.map(|r| r.and_then(|r| r)).collect()
            })
            .await
    }

    /// Whether the signed link with this `nonce` was used.
    pub async fn link_used(&self, nonce: &str) -> Result<bool, StoreError> {
        let nonce = nonce.to_string();
        self.inner
            .read(move |c| {
                let found: Option<i64> = c
                    .prepare_cached("SELECT 1 FROM used_links WHERE nonce = ?1")?
                    .query_row([&nonce], |r| r.get(0))
                    .optional()?;
                Ok(found.is_some())
            })
            .await
    }

    /// One incident with its timeline.
    pub async fn incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        let id = id.to_string();
        self.inner
            .read(move |c| {
                let found = c
                    .prepare_cached(&format!(
                        "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1"
                    ))?
                    .query_row([&id], incident_row)
                    .optional()?;
                let Some(incident) = found else {
                    return Ok(None);
                };
                let mut incident = incident?;
                let mut stmt = c.prepare_cached(
                    "SELECT seq, at, event, detail FROM audit WHERE incident_id = ?1 ORDER BY seq",
                )?;
                let timeline = stmt
                    .query_map([&id], |r| {
                        let detail: String = r.get(3)?;
                        Ok(TimelineEntry {
                            seq: r.get(0)?,
                            at: r.get(1)?,
                            event: r.get(2)?,
                            detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                incident.timeline = Some(timeline);
                Ok(Some(incident))
            })
            .await
    }

    /// How many incidents are in each state.
    pub async fn count_by_state(&self) -> Result<Vec<(State, u64)>, StoreError> {
        self.inner
            .read(|c| {
                let mut stmt =
                    c.prepare_cached("SELECT state, COUNT(*) FROM incidents GROUP BY state")?;
                let rows =
                    stmt.query_map((), |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
                let mut out = Vec::new();
                for row in rows {
                    let (state, n) = row?;
                    let state = State::parse(&state).ok_or_else(|| {
                        StoreError::Corrupt(format!("unknown incident state {state:?}"))
                    })?;
                    out.push((state, n as u64));
                }
                Ok(out)
            })
            .await
    }
}

pub(super) const INCIDENT_COLUMNS: &str =
    "id, fingerprint, alertname, labels, annotations, state, reason, outcome, route, runbook,
    generator_url, starts_at, updated_at, last_seen_at, resolved_at, deliveries, attempts, message,
    external_url, verify_until, escalated_at, acked_by, escalation_group,
    approval_until, plan, approved_by, approved_at";

/// Maps an incident row; the inner result reports values this build cannot read.
pub(super) fn incident_row(r: &Row) -> Result<Result<Incident, StoreError>, StoreError> {
    let id: String = r.get(0)?;
    let labels: String = r.get(3)?;
    let annotations: String = r.get(4)?;
    let state: String = r.get(5)?;
    let reason: Option<String> = r.get(6)?;
    let outcome: Option<String> = r.get(7)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("incident {id}: {what}"));
    let build = || -> Result<Incident, StoreError> {
        Ok(Incident {
            fingerprint: r.get(1)?,
            alertname: r.get(2)?,
            labels: serde_json::from_str(&labels).map_err(|_| corrupt("labels are not JSON"))?,
            annotations: serde_json::from_str(&annotations)
                .map_err(|_| corrupt("annotations are not JSON"))?,
            state: State::parse(&state).ok_or_else(|| corrupt("unknown state"))?,
            reason: match reason {
                Some(r) => Some(Reason::parse(&r).ok_or_else(|| corrupt("unknown reason"))?),
                None => None,
            },
            outcome: match outcome {
                Some(o) => Some(Outcome::parse(&o).ok_or_else(|| corrupt("unknown outcome"))?),
                None => None,
            },
            route: r.get(8)?,
            runbook: r.get(9)?,
            generator_url: r.get(10)?,
            started_at: r.get(11)?,
            updated_at: r.get(12)?,
            last_seen_at: r.get(13)?,
            resolved_at: r.get(14)?,
            deliveries: r.get::<_, i64>(15)? as u64,
            attempts: r.get::<_, i64>(16)? as u32,
            message: r.get(17)?,
            external_url: r.get(18)?,
            verify_until: r.get(19)?,
            escalated_at: r.get(20)?,
            acknowledged_by: r.get(21)?,
            escalation_group: r.get(22)?,
            approval: super::approvals::approval_of(
                &id,
                r.get(23)?,
                r.get(24)?,
                r.get(25)?,
                r.get(26)?,
            )?,
            timeline: None,
            id: id.clone(),
        })
    };
    Ok(build())
}
