//! Approval before a run: an incident of a route with `approval` opens `awaiting_approval`
//! with a deadline (`approval_until`, kept in the row so it survives restarts and any
//! replica honours it), gets its plan once ([`Store::record_plan`], which puts the request
//! in the outbox in the same commit), and then one decision: approved (the approval record
//! is written and it is queued), rejected or timed out (escalated), or withdrawn (the alert
//! resolved; `incidents.rs` resolves it and calls [`Writer::withdraw_approval`]).
//!
//! Each decision is one transaction, conditional on the incident still waiting, so two
//! people (or two replicas) deciding at once make one decision; the loser is told what
//! became of it. Each is audited with who: `approval_requested`, `approved`, `rejected`,
//! `approval_timeout`, `approval_withdrawn`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::db::{params, OptionalExtension};
use super::outbox::Owed;
use super::transition::Move;
use super::writer::Writer;
use super::{
    parse_time, stamp, NotificationKey, NotificationKind, OutboxState, Routed, Store, StoreError,
};
use crate::audit::{Event, NewEntry};
use crate::config::Role;
use crate::incident::{Reason, State};
use crate::plan::Plan;

/// An incident's approval, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approval {
    /// While it waits: when it is escalated `approval_timeout` unless decided.
    pub until: String,
    /// What the run would do, once the dry run made it (shown to the approver).
    pub plan: Option<Plan>,
    /// The approval record: who approved the plan, and when.
    pub approved_by: Option<String>,
    pub approved_at: Option<String>,
}

/// An incident waiting for approval: its deadline, and whether its plan is made.
#[derive(Debug, Clone)]
pub struct Awaiting {
    pub id: String,
    pub until: DateTime<Utc>,
    pub planned: bool,
}

/// What making the plan of a waiting incident needs: its alert and runbook.
#[derive(Debug, Clone)]
pub struct AwaitingPlan {
    pub id: String,
    pub route: Option<String>,
    pub runbook: Option<String>,
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub generator_url: String,
}

/// Where a decision was made; the audit log says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// `POST /api/v1/incidents/{id}/approve|reject` with the API token.
    Api,
    /// The console, as the logged-in person.
    Console,
    /// A Slack button, as the Slack user.
    Slack,
    /// A signed one-click link; its nonce is spent with the decision.
    Link {
        nonce: String,
        expires_at: DateTime<Utc>,
    },
}

impl Via {
    pub fn as_str(&self) -> &'static str {
        match self {
            Via::Api => "api",
            Via::Console => "console",
            Via::Slack => "slack",
            Via::Link { .. } => "link",
        }
    }
}

/// A person's decision on a run that waits for approval.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Yes (the plan runs) or no (escalated `rejected`).
    pub approve: bool,
    pub by: String,
    /// Their console role, when medic knows it (for approvers named by role).
    pub role: Option<Role>,
    pub reason: Option<String>,
    pub via: Via,
}

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// Approved: queued for its run, bound to the plan.
    Approved,
    /// Rejected: escalated `rejected`.
    Rejected,
    /// It does not wait for approval (decided already, timed out, resolved): it is in
    /// this state.
    NotAwaiting(State),
    /// Its plan is not made yet: nothing can be approved before it is shown.
    NoPlanYet,
    /// The route's `approvers` do not list this person.
    NotAnApprover,
    /// The signed link was used before.
    LinkUsed,
    NotFound,
}

impl Store {
    /// Incidents waiting for approval, soonest deadline first.
    pub async fn awaiting_approval(&self, limit: usize) -> Result<Vec<Awaiting>, StoreError> {
        self.inner
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, approval_until, plan IS NOT NULL FROM incidents
                     WHERE state = 'awaiting_approval' ORDER BY approval_until LIMIT ?1",
                )?;
                let rows = stmt.query_map([limit as i64], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, i64>(2)? != 0,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (id, until, planned) = row?;
                    let until = until.as_deref().and_then(parse_time).ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "incident {id}: awaiting approval without a deadline"
                        ))
                    })?;
                    out.push(Awaiting { id, until, planned });
                }
                Ok(out)
            })
            .await
    }

    /// What making the plan of incident `id` needs, while it waits without one.
    pub async fn awaiting_plan(&self, id: &str) -> Result<Option<AwaitingPlan>, StoreError> {
        let id = id.to_string();
        self.inner
            .read(move |c| {
                let row = c
                    .prepare_cached(
                        "SELECT route, runbook, fingerprint, labels, annotations, starts_at, generator_url
                         FROM incidents WHERE id = ?1 AND state = 'awaiting_approval' AND plan IS NULL",
                    )?
                    .query_row([&id], |r| {
                        Ok((
                            r.get::<_, Option<String>>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, String>(5)?,
                            r.get::<_, String>(6)?,
                        ))
                    })
                    .optional()?;
                let Some((route, runbook, fingerprint, labels, annotations, starts_at, generator_url)) = row
                else {
                    return Ok(None);
                };
                let corrupt = |what: &str| StoreError::Corrupt(format!("incident {id}: {what}"));
                Ok(Some(AwaitingPlan {
                    labels: serde_json::from_str(&labels).map_err(|_| corrupt("labels are not JSON"))?,
                    annotations: serde_json::from_str(&annotations)
                        .map_err(|_| corrupt("annotations are not JSON"))?,
                    id: id.clone(),
                    route,
                    runbook,
                    fingerprint,
                    starts_at,
                    generator_url,
                }))
            })
            .await
    }

    /// Stores the plan of incident `id` and, in the same commit, audits the request and
    /// puts it in the outbox: each tier of the route's escalation policy, its channels due
    /// after the tier's delay. False (nothing written) when it no longer waits or another
    /// replica's plan is there already: a plan is made once and never changes.
    pub async fn record_plan(&self, id: &str, plan: Plan) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.inner.write(move |w| w.record_plan(&id, &plan)).await
    }

    /// The approval request of incident `id` ran out unanswered: escalated
    /// `approval_timeout` if it still waits and its deadline has passed (by the store's
    /// clock). False when it no longer waits or is not due.
    pub async fn approval_timed_out(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.inner.write(move |w| w.approval_timed_out(&id)).await
    }

    /// A person decides on incident `id`'s run.
    pub async fn decide(&self, id: &str, decision: Decision) -> Result<Decided, StoreError> {
        let id = id.to_string();
        self.inner.write(move |w| w.decide(&id, &decision)).await
    }
}

/// How an incident stands for a decision.
struct Standing {
    state: State,
    route: Option<String>,
    plan: Option<String>,
    until: Option<String>,
}

impl Writer {
    /// Whether incident `id` waited for approval and has no approval record.
    pub(super) fn lacks_approval(&self, id: &str) -> Result<bool, StoreError> {
        let row: Option<(Option<String>, Option<String>)> = self
            .conn
            .prepare_cached("SELECT approval_until, approved_at FROM incidents WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(matches!(row, Some((Some(_), None))))
    }

    /// When an incident routed `routed` and opened at `now` must be decided on, if its
    /// route asks for approval.
    pub(super) fn approval_deadline(&self, routed: &Routed, now: &str) -> Option<String> {
        let Routed::Runbook { route, .. } = routed else {
            return None;
        };
        let plans = self.cx.plans();
        let approval = plans.approval(Some(route))?;
        let at = parse_time(now).unwrap_or_else(|| self.cx.now());
        let timeout =
            chrono::Duration::from_std(approval.timeout).unwrap_or(chrono::TimeDelta::MAX);
        Some(stamp(at.checked_add_signed(timeout).unwrap_or(at)))
    }

    /// The new incident `id` waits for approval until `until`: its deadline, and the entry
    /// that says so.
    pub(super) fn await_approval(
        &mut self,
        id: &str,
        route: Option<&str>,
        until: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE incidents SET approval_until = ?2 WHERE id = ?1")?
            .execute(params![id, until])?;
        let detail = json!({"from": State::Queued, "to": State::AwaitingApproval, "route": route,
            "approval_until": until,
            "message": "the route asks a person first: nothing runs before its plan is approved"});
        self.append(
            NewEntry::for_incident(Event::StateChanged, id, &detail),
            now,
        )
    }

    fn standing(&self, id: &str) -> Result<Option<Standing>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT state, route, plan, approval_until FROM incidents WHERE id = ?1",
            )?
            .query_row([id], |r| {
                let state: String = r.get(0)?;
                Ok(Standing {
                    state: State::parse(&state).ok_or_else(|| {
                        StoreError::Corrupt(format!("incident {id}: unknown state {state:?}"))
                    })?,
                    route: r.get(1)?,
                    plan: r.get(2)?,
                    until: r.get(3)?,
                })
            })
            .optional()?;
        Ok(row)
    }

    fn record_plan(&mut self, id: &str, plan: &Plan) -> Result<bool, StoreError> {
        let now = stamp(self.cx.now());
        let stored = self
            .conn
            .prepare_cached(
                "UPDATE incidents SET plan = ?2, updated_at = ?3
                 WHERE id = ?1 AND state = 'awaiting_approval' AND plan IS NULL",
            )?
            .execute(params![id, plan.to_json(), now])?;
        if stored == 0 {
            return Ok(false);
        }
        let Some(standing) = self.standing(id)? else {
            return Ok(false);
        };
        let route = standing.route;
        let plans = self.cx.plans();
        let policy = plans.policy(route.as_deref());
        let start = self.cx.now();
        let mut tiers = Vec::with_capacity(policy.tiers.len());
        for (index, tier) in policy.tiers.iter().enumerate() {
            let number = index as u32 + 1;
            let due = stamp(start + tier.after);
            for channel in &tier.notify {
                self.owe(Owed {
                    key: NotificationKey::ApprovalRequest {
                        incident: id.to_string(),
                        tier: number,
                        channel: channel.clone(),
                    },
                    incident: id,
                    kind: NotificationKind::ApprovalRequested,
                    round: 0,
                    tier: number,
                    channel,
                    due: &due,
                    group: None,
                    now: &now,
                })?;
            }
            tiers.push(json!({"tier": number, "notify": tier.notify, "due_at": due}));
        }
        self.batch.outbox_touched |= policy.tiers.iter().any(|t| !t.notify.is_empty());
        let approvers = plans
            .approval(route.as_deref())
            .map(|a| a.approvers.clone())
            .unwrap_or_default();
        let detail = json!({
            "route": route, "runbook": plan.runbook, "sha256": plan.sha256,
            "plan": plan, "plan_digest": plan.digest(), "until": standing.until,
            "approvers": approvers, "tiers": tiers,
        });
        self.append(
            NewEntry::for_incident(Event::ApprovalRequested, id, &detail),
            &now,
        )?;
        Ok(true)
    }

    fn approval_timed_out(&mut self, id: &str) -> Result<bool, StoreError> {
        let now_t = self.cx.now();
        let now = stamp(now_t);
        let Some(standing) = self.standing(id)? else {
            return Ok(false);
        };
        let until = standing.until.as_deref().and_then(parse_time);
        if standing.state != State::AwaitingApproval || until.is_none_or(|u| u > now_t) {
            return Ok(false);
        }
        let timeout = self
            .cx
            .plans()
            .approval(standing.route.as_deref())
            .map(|a| humantime::format_duration(a.timeout).to_string());
        let message = match &timeout {
            Some(t) => format!(
                "nobody approved or rejected the run within the route's approval timeout ({t})"
            ),
            None => "nobody approved or rejected the run before its deadline".to_string(),
        };
        self.append(
            NewEntry::for_incident(
                Event::ApprovalTimeout,
                id,
                &json!({"until": standing.until, "timeout": timeout, "route": standing.route}),
            ),
            &now,
        )?;
        self.cancel_requests(id, "the approval request timed out", &now)?;
        let m = Move {
            reason: Some(Reason::ApprovalTimeout),
            message: Some(&message),
            ..Move::new(State::AwaitingApproval, State::Escalated)
        };
        self.transition(id, m, &now)
    }

    fn decide(&mut self, id: &str, d: &Decision) -> Result<Decided, StoreError> {
        let Some(standing) = self.standing(id)? else {
            return Ok(Decided::NotFound);
        };
        if let Via::Link { nonce, .. } = &d.via {
            let used: Option<i64> = self
                .conn
                .prepare_cached("SELECT 1 FROM used_links WHERE nonce = ?1")?
                .query_row([nonce], |r| r.get(0))
                .optional()?;
            if used.is_some() {
                return Ok(Decided::LinkUsed);
            }
        }
        if standing.state != State::AwaitingApproval {
            return Ok(Decided::NotAwaiting(standing.state));
        }
        let plans = self.cx.plans();
        if let Some(approval) = plans.approval(standing.route.as_deref()) {
            if !approval.allows(&d.by, d.role) {
                return Ok(Decided::NotAnApprover);
            }
        }
        let now = stamp(self.cx.now());
        let mut detail = json!({"by": d.by, "via": d.via.as_str(), "route": standing.route});
        if let Some(r) = &d.reason {
            detail["reason"] = json!(r);
        }
        let decided = if d.approve {
            let Some(text) = &standing.plan else {
                return Ok(Decided::NoPlanYet);
            };
            let plan = Plan::from_json(text)
                .map_err(|e| StoreError::Corrupt(format!("incident {id}: {e}")))?;
            // The approval record first: the move to `queued` is refused without it.
            self.conn
                .prepare_cached(
                    "UPDATE incidents SET approved_by = ?2, approved_at = ?3 WHERE id = ?1",
                )?
                .execute(params![id, d.by, now])?;
            detail["plan_digest"] = json!(plan.digest());
            detail["steps"] = json!(plan.steps.len());
            self.append(NewEntry::for_incident(Event::Approved, id, &detail), &now)?;
            self.cancel_requests(id, "the run was approved", &now)?;
            let m = Move {
                extra: json!({"by": d.by}),
                message: None,
                ..Move::new(State::AwaitingApproval, State::Queued)
            };
            self.transition(id, m, &now)?;
            Decided::Approved
        } else {
            self.append(NewEntry::for_incident(Event::Rejected, id, &detail), &now)?;
            self.cancel_requests(id, "the run was rejected", &now)?;
            let message = match d.reason.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
                Some(why) => format!("rejected by {}: {why}", d.by),
                None => format!("rejected by {} (no reason given)", d.by),
            };
            let m = Move {
                reason: Some(Reason::Rejected),
                message: Some(&message),
                extra: json!({"by": d.by}),
                ..Move::new(State::AwaitingApproval, State::Escalated)
            };
            self.transition(id, m, &now)?;
            Decided::Rejected
        };
        if let Via::Link { nonce, expires_at } = &d.via {
            let action = if d.approve { "approve" } else { "reject" };
            self.conn
                .prepare_cached(
                    "INSERT INTO used_links (nonce, incident_id, action, used_by, used_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![nonce, id, action, d.by, now, stamp(*expires_at)])?;
        }
        Ok(decided)
    }

    /// Cancels the approval request's notifications not sent yet, because of `why`.
    fn cancel_requests(&mut self, id: &str, why: &str, now: &str) -> Result<(), StoreError> {
        let cancelled = self
            .conn
            .prepare_cached(
                "UPDATE outbox SET state = ?3, done_at = ?2
                 WHERE incident_id = ?1 AND kind = ?4 AND state = ?5",
            )?
            .execute(params![
                id,
                now,
                OutboxState::Cancelled.as_str(),
                NotificationKind::ApprovalRequested.as_str(),
                OutboxState::Pending.as_str()
            ])?;
        if cancelled > 0 {
            let detail = json!({"notifications": cancelled, "why": why, "kind": NotificationKind::ApprovalRequested});
            self.append(
                NewEntry::for_incident(Event::NotificationsCancelled, id, &detail),
                now,
            )?;
        }
        Ok(())
    }

    /// The alert of an incident waiting for approval resolved (it is being resolved in
    /// this transaction): the request is withdrawn. What was not sent is cancelled; each
    /// channel that was sent the request is told it is withdrawn.
    pub(super) fn withdraw_approval(&mut self, id: &str, now: &str) -> Result<(), StoreError> {
        self.cancel_requests(id, "the alert resolved: the request is withdrawn", now)?;
        let channels = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT DISTINCT channel FROM outbox WHERE incident_id = ?1 AND kind = ?2 AND state = ?3",
            )?;
            let rows = stmt.query_map(
                params![
                    id,
                    NotificationKind::ApprovalRequested.as_str(),
                    OutboxState::Sent.as_str()
                ],
                |r| r.get::<_, String>(0),
            )?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        for channel in &channels {
            self.owe_withdrawal(id, channel, now)?;
        }
        let detail = json!({"why": "the alert resolved while the run waited for approval: nothing was run",
            "told": channels});
        self.append(
            NewEntry::for_incident(Event::ApprovalWithdrawn, id, &detail),
            now,
        )
    }

    fn owe_withdrawal(&mut self, id: &str, channel: &str, now: &str) -> Result<(), StoreError> {
        self.owe(Owed {
            key: NotificationKey::Withdrawal {
                incident: id.to_string(),
                channel: channel.to_string(),
            },
            incident: id,
            kind: NotificationKind::ApprovalWithdrawn,
            round: 0,
            tier: 0,
            channel,
            due: now,
            group: None,
            now,
        })?;
        self.batch.outbox_touched = true;
        Ok(())
    }

    /// An approval request was delivered to `channel`: if the incident's alert resolved
    /// before it was approved (the request was in flight as it was withdrawn), that
    /// channel is owed the withdrawal too.
    pub(super) fn request_sent(
        &mut self,
        id: &str,
        channel: &str,
        state: State,
        now: &str,
    ) -> Result<(), StoreError> {
        if state != State::Resolved || !self.lacks_approval(id)? {
            return Ok(());
        }
        self.owe_withdrawal(id, channel, now)
    }
}

/// The approval of an incident row: its deadline (`None`: it never waited), its stored
/// plan, and its approval record.
pub(super) fn approval_of(
    id: &str,
    until: Option<String>,
    plan: Option<String>,
    approved_by: Option<String>,
    approved_at: Option<String>,
) -> Result<Option<Approval>, StoreError> {
    let Some(until) = until else {
        return Ok(None);
    };
    let plan = plan
        .map(|p| Plan::from_json(&p))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("incident {id}: {e}")))?;
    Ok(Some(Approval {
        until,
        plan,
        approved_by,
        approved_at,
    }))
}

/// The approved plan a claimed run is bound to: `None` for an incident that never waited
/// for approval; an error for one that waited and has no approval record or no plan (the
/// claim is then refused by the database's state, never run unbound).
pub(super) fn bound_plan(
    id: &str,
    until: Option<&str>,
    plan: Option<&str>,
    approved_at: Option<&str>,
) -> Result<Option<Plan>, StoreError> {
    match (until, approved_at, plan) {
        (None, _, _) => Ok(None),
        (Some(_), Some(_), Some(p)) => Plan::from_json(p)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("incident {id}: {e}"))),
        (Some(_), _, _) => Err(StoreError::Unapproved {
            id: id.to_string(),
            to: State::Remediating,
        }),
    }
}
