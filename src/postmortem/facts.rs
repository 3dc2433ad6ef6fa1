//! The facts of a draft, gathered from the store's reads: the incident, or its storm
//! group's incidents, with their timelines; the breaker changes their results caused; and
//! what history says about them: a relapse after an automated fix, the same step failing
//! in recent incidents of the route, an alert with no runbook that keeps firing.
//!
//! Every read is bounded (members of a storm, incidents looked back at, audit entries
//! searched for breaker changes), so a draft costs the same on a store of any size.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::case::{parse_at, Case};
use crate::config::Config;
use crate::incident::{Outcome, Reason};
use crate::store::{Incident, Recent, Store, StoreError, StormGroup};

/// How far back "recent incidents" go.
pub const LOOKBACK: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most incidents of a storm a draft covers one by one.
pub const MAX_MEMBERS: usize = 200;
/// Most incidents of a draft whose history (relapses, breakers) is looked up.
const MAX_LOOKED_UP: usize = 50;
/// Most earlier failures of a route whose timelines are read, per failing step.
const MAX_HISTORY: usize = 20;
/// How many audit entries after a run's end are searched for the breaker change it caused.
const BREAKER_WITHIN: i64 = 1000;

/// What a draft takes from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `[limits] relapse_window`.
    pub relapse_window: Duration,
    /// How far back recent incidents go.
    pub lookback: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            relapse_window: config.limits.relapse_window,
            lookback: LOOKBACK,
        }
    }
}

/// Everything a draft says, gathered once.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The incident, or the storm's incidents (its first one first).
    pub cases: Vec<Case>,
    pub storm: Option<Storm>,
    pub relapses: Vec<Relapse>,
    pub repeated: Vec<Repeated>,
    pub unrouted: Option<Unrouted>,
    pub settings: Settings,
    /// When the facts were read (for what is still open).
    pub now: DateTime<Utc>,
}

/// The storm group a draft covers.
#[derive(Debug, Clone)]
pub struct Storm {
    pub group: StormGroup,
    /// How many of its incidents the draft covers ([`MAX_MEMBERS`] at most).
    pub listed: usize,
}

/// The same fingerprint firing again soon after an automated fix.
#[derive(Debug, Clone, PartialEq)]
pub struct Relapse {
    /// The incident medic fixed, and when its alert resolved.
    pub fixed: String,
    pub fixed_at: DateTime<Utc>,
    /// The incident of the alert firing again, and when it opened.
    pub again: String,
    pub again_at: DateTime<Utc>,
    /// The store recorded it (`relapse_of` in the new incident's opening), rather than the
    /// draft finding it by the relapse window in force.
    pub recorded: bool,
}

/// A step that failed here and in other recent incidents of the same route.
#[derive(Debug, Clone, PartialEq)]
pub struct Repeated {
    pub route: String,
    pub runbook: Option<String>,
    /// The step (`exec /usr/bin/systemctl`).
    pub key: String,
    /// The other incidents that stopped at it, newest first.
    pub others: Vec<String>,
    /// Only the newest earlier failures of the route were looked at: there may be more.
    pub capped: bool,
    /// Looked back to when.
    pub since: DateTime<Utc>,
}

/// An alert no runbook handles, and how often it fired lately.
#[derive(Debug, Clone, PartialEq)]
pub struct Unrouted {
    pub alertname: String,
    /// Incidents escalated `no_runbook` since `since` (this one included).
    pub count: u64,
    pub since: DateTime<Utc>,
}

/// The reasons of a run that stopped at a failure.
const RUN_FAILURES: [Reason; 4] = [
    Reason::StepFailed,
    Reason::Timeout,
    Reason::RunbookError,
    Reason::Requested,
];

/// When incident `id` was opened (its ULID's time), else `fallback`.
fn opened(id: &str, fallback: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    ulid::Ulid::from_string(id)
        .ok()
        .map(|u| DateTime::<Utc>::from(u.datetime()))
        .or(fallback)
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The facts about incident `id` (and its storm, if it is in one with others), or `None`
/// when there is no such incident.
pub async fn gather(
    store: &Store,
    id: &str,
    settings: Settings,
    now: DateTime<Utc>,
) -> Result<Option<Facts>, StoreError> {
    let Some(first) = store.incident(id).await? else {
        return Ok(None);
    };
    let mut storm = None;
    let mut incidents = Vec::new();
    if let Some(g) = &first.escalation_group {
        if let Some((group, ids)) = store.storm_group(g, MAX_MEMBERS).await? {
            if ids.len() >= 2 {
                incidents = store.incidents_with_timelines(ids).await?;
                storm = Some(Storm {
                    listed: incidents.len(),
                    group,
                });
            }
        }
    }
    if incidents.len() < 2 {
        storm = None;
        incidents = vec![first];
    }
    let mut cases: Vec<Case> = incidents.into_iter().map(Case::read).collect();
    for case in cases.iter_mut().take(MAX_LOOKED_UP) {
        breakers(store, case).await?;
    }
    let relapses = relapses(store, &cases, &settings).await?;
    let repeated = repeated(store, &cases, &settings, now).await?;
    let unrouted = unrouted(store, &cases, &settings, now).await?;
    Ok(Some(Facts {
        cases,
        storm,
        relapses,
        repeated,
        unrouted,
        settings,
        now,
    }))
}

/// The breaker changes that `case`'s results caused: the store records a result against
/// the route's breaker just after the run (or its verification) ends, and audits the change
/// with the incident's id.
async fn breakers(store: &Store, case: &mut Case) -> Result<(), StoreError> {
    let mut seen = BTreeSet::new();
    for seq in case.result_seqs.clone() {
        for change in store.breaker_changes(seq, BREAKER_WITHIN).await? {
            let ours = change.detail.get("incident").and_then(|v| v.as_str())
                == Some(case.incident.id.as_str());
            if ours && seen.insert(change.seq) {
                case.breakers.push(change);
            }
        }
    }
    Ok(())
}

/// Relapses around the draft's incidents: the alert fired again soon after an automated
/// fix, before this incident (this one is the relapse) or after it (this one's fix did not
/// stick). What the store recorded comes first: it names the fix in a relapse's
/// `incident_opened` entry (`relapse_of`), as the metrics count it, by the relapse window in
/// force then. Where the record names none (older records), the rule is applied with the
/// window in force now: the new incident opened at most `relapse_window` after the fixed
/// one resolved.
async fn relapses(
    store: &Store,
    cases: &[Case],
    settings: &Settings,
) -> Result<Vec<Relapse>, StoreError> {
    let window = chrono(settings.relapse_window);
    let mut out: Vec<Relapse> = Vec::new();
    let relapse = |fixed: &Incident, again: &Incident, recorded: bool| {
        if fixed.outcome != Some(Outcome::AutoRemediated) {
            return None;
        }
        let fixed_at = fixed.resolved_at.as_deref().and_then(parse_at)?;
        let again_at = opened(&again.id, parse_at(&again.started_at))?;
        // A fix stamped after the new firing opened (replicas' clocks apart) was moments ago.
        (recorded || again_at - fixed_at <= window).then(|| Relapse {
            fixed: fixed.id.clone(),
            fixed_at,
            again: again.id.clone(),
            again_at,
            recorded,
        })
    };
    for case in cases.iter().take(MAX_LOOKED_UP) {
        let i = &case.incident;
        let (before, after) = store.neighbours(&i.fingerprint, &i.started_at).await?;
        // This one opened as a relapse: of the fix its opening names.
        let mut found = Vec::new();
        match recorded_relapse(case) {
            Some(fixed) => {
                if let Some(f) = store.incident(&fixed).await? {
                    found.push(relapse(&f, i, true));
                }
            }
            None => found.push(before.as_ref().and_then(|b| relapse(b, i, false))),
        }
        // The next firing opened as a relapse of this one.
        if let Some(next) = &after {
            let next = match store.incident(&next.id).await? {
                Some(n) => Case::read(n),
                None => continue,
            };
            match recorded_relapse(&next) {
                Some(fixed) if fixed == i.id => found.push(relapse(i, &next.incident, true)),
                Some(_) => {}
                None => found.push(relapse(i, &next.incident, false)),
            }
        }
        for r in found.into_iter().flatten() {
            if !out.iter().any(|o| o.fixed == r.fixed && o.again == r.again) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// The fix this incident's opening names as the one it relapsed after, if any.
fn recorded_relapse(case: &Case) -> Option<String> {
    case.timeline()
        .iter()
        .find(|e| e.event == "incident_opened")?
        .detail
        .get("relapse_of")?
        .as_str()
        .map(str::to_string)
}

/// For each step the draft's incidents failed at, the other recent incidents of the same
/// route that stopped at the same step.
async fn repeated(
    store: &Store,
    cases: &[Case],
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Vec<Repeated>, StoreError> {
    let here: BTreeSet<&str> = cases.iter().map(|c| c.incident.id.as_str()).collect();
    let mut asked: BTreeSet<(String, String)> = BTreeSet::new();
    let mut out = Vec::new();
    for case in cases {
        let (Some(route), Some(step)) = (&case.incident.route, case.failing_step()) else {
            continue;
        };
        if !asked.insert((route.clone(), step.key.clone())) {
            continue;
        }
        let Some(from) = opened(&case.incident.id, case.received) else {
            continue;
        };
        let since = from.min(now) - chrono(settings.lookback);
        let recent = Recent {
            route: Some(route.clone()),
            alertname: None,
            reasons: RUN_FAILURES.to_vec(),
            from: since,
            to: now,
        };
        let ids: Vec<String> = store
            .recent_incidents(recent, MAX_HISTORY + here.len())
            .await?
            .into_iter()
            .map(|i| i.id)
            .filter(|id| !here.contains(id.as_str()))
            .take(MAX_HISTORY)
            .collect();
        let looked_at = ids.len();
        let others: Vec<String> = store
            .incidents_with_timelines(ids)
            .await?
            .into_iter()
            .map(Case::read)
            .filter(|c| c.failing_step().map(|s| &s.key) == Some(&step.key))
            .map(|c| c.incident.id)
            .collect();
        if !others.is_empty() {
            out.push(Repeated {
                route: route.clone(),
                runbook: case.incident.runbook.clone(),
                key: step.key.clone(),
                others,
                capped: looked_at == MAX_HISTORY,
                since,
            });
        }
    }
    Ok(out)
}

/// An alert of the draft that no runbook handles, with how many times it was escalated
/// `no_runbook` lately, when that is more than once.
async fn unrouted(
    store: &Store,
    cases: &[Case],
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Option<Unrouted>, StoreError> {
    let Some(case) = cases
        .iter()
        .find(|c| c.incident.reason == Some(Reason::NoRunbook))
    else {
        return Ok(None);
    };
    let Some(from) = opened(&case.incident.id, case.received) else {
        return Ok(None);
    };
    let since = from.min(now) - chrono(settings.lookback);
    let recent = Recent {
        route: None,
        alertname: Some(case.incident.alertname.clone()),
        reasons: vec![Reason::NoRunbook],
        from: since,
        to: now,
    };
    let count = store.count_recent(recent).await?;
    Ok((count >= 2).then(|| Unrouted {
        alertname: case.incident.alertname.clone(),
        count,
        since,
    }))
}
