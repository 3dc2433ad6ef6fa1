//! Slack's Approve and Reject buttons on an approval request (`action_id` `approve` or
//! `reject`, `value` the incident id; see `escalate::message::approval`): a click decides
//! in the name of the Slack user, through the store's one decision (`Store::decide`). On a
//! route with `approvers`, the Slack user's name must be one of them (a listed name, or a
//! `[[ui.users]]` user of that name with a listed role).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::slack::{reply, user_name};
use super::{error, Context};
use crate::store::{Decided, Decision, Via};

/// The answer to an approve or reject click in `payload`, or `None` when it holds neither.
pub(super) async fn decide(ctx: &Context, payload: &Value) -> Option<Response> {
    let (approve, id) = payload["actions"].as_array()?.iter().find_map(|a| {
        let approve = match a["action_id"].as_str()? {
            "approve" => true,
            "reject" => false,
            _ => return None,
        };
        Some((approve, a["value"].as_str()?.to_string()))
    })?;
    let by = user_name(payload);
    let role = ctx.config.get().config.ui.user(&by).map(|u| u.role);
    let decision = Decision {
        approve,
        by: by.clone(),
        role,
        reason: (!approve).then(|| "rejected in Slack".to_string()),
        via: Via::Slack,
    };
    let text = match ctx.store.decide(&id, decision).await {
        Ok(Decided::Approved) => {
            tracing::info!(incident = %id, by = %by, "run approved in Slack");
            format!(":white_check_mark: {by} approved the plan of incident {id}: medic runs it, bound to that plan.")
        }
        Ok(Decided::Rejected) => {
            tracing::info!(incident = %id, by = %by, "run rejected in Slack");
            format!(":no_entry: {by} rejected the run of incident {id}: nothing runs, and it is escalated.")
        }
        Ok(Decided::NotAwaiting(state)) => format!(
            "Incident {id} is {}: it no longer waits for a decision.",
            state.as_str()
        ),
        Ok(Decided::NoPlanYet) => {
            format!("Incident {id}'s plan is not made yet: try again in a moment.")
        }
        Ok(Decided::NotAnApprover) => {
            format!("{by} may not decide on incident {id}: its route's approvers do not list them.")
        }
        Ok(Decided::NotFound) => format!("medic knows no incident {id}."),
        Ok(Decided::LinkUsed) => "That was already decided.".to_string(),
        Err(e) => {
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store: {e}"),
            ))
        }
    };
    Some(reply(text))
}
