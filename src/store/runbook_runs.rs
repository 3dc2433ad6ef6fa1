//! One runbook's record, for its page in the console: its newest runs and how its runs
//! ended, counted in the database over every incident it ran for (index
//! `incidents_runbook`, migration 10), not over a window of the newest incidents.

use super::db::params;
use super::reads::{incident_row, INCIDENT_COLUMNS};
use super::{Incident, Store, StoreError};

/// A runbook's runs: incidents whose runbook it is and that it ran for (a run refused by
/// a guard, or an alert that resolved first, is no run).
#[derive(Debug, Clone, Default)]
pub struct RunbookRecord {
    /// Incidents it ran for.
    pub runs: u64,
    /// Of those, the ones whose run is over (not queued again, running or verifying).
    pub finished: u64,
    /// Of those, the ones it fixed (`auto_remediated`).
    pub auto_remediated: u64,
    /// The newest runs, newest first.
    pub last: Vec<Incident>,
}

impl Store {
    /// The record of `runbook`, with its `last` newest runs.
    pub async fn runbook_record(
        &self,
        runbook: &str,
        last: usize,
    ) -> Result<RunbookRecord, StoreError> {
        let runbook = runbook.to_string();
        self.inner
            .read(move |c| {
                let (runs, finished, fixed): (i64, i64, i64) = c
                    .prepare_cached(
                        "SELECT COUNT(*),
                            COALESCE(SUM(CASE WHEN state IN ('queued', 'remediating', 'verifying') THEN 0 ELSE 1 END), 0),
                            COALESCE(SUM(CASE WHEN outcome = 'auto_remediated' THEN 1 ELSE 0 END), 0)
                         FROM incidents WHERE runbook = ?1 AND attempts > 0",
                    )?
                    .query_row([&runbook], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE runbook = ?1 AND attempts > 0
                     ORDER BY id DESC LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![runbook, last as i64], incident_row)?;
                let last = rows.map(|r| r.and_then(|r| r)).collect::<Result<_, _>>()?;
                Ok(RunbookRecord {
                    runs: runs as u64,
                    finished: finished as u64,
                    auto_remediated: fixed as u64,
                    last,
                })
            })
            .await
    }
}
