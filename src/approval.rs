//! The approval worker: makes the plan of each incident that waits for approval, and
//! escalates `approval_timeout` the ones nobody decided on in time.
//!
//! The plan is a dry run of the runbook, as `medic replay` makes one
//! (`authoring::offline`: every step checked as the real step checks it, then answered
//! with its documented dry-run result, nothing run or sent), on the configuration in
//! force, with the alert the incident holds. The store keeps it with the incident and, in
//! the same commit, puts the request in the outbox ([`Store::record_plan`]): the sender
//! delivers it through the route's escalation channels with the plan and the decision
//! links. The deadline is the store's (`approval_until`): any replica, after any restart,
//! escalates an incident whose deadline passed; the store's conditional write makes that
//! happen once.

use std::future::Future;
use std::time::Duration;

use crate::authoring::offline::{self, Answers, Checks, Event, StepKind};
use crate::clock::Clock;
use crate::loaded::Loaded;
use crate::plan::{Plan, PlanEnd, PlannedStep, MAX_STEPS};
use crate::runbook::sandbox::RunEnd;
use crate::runbook::scope::{self, AlertView, IncidentView};
use crate::snapshot::Current;
use crate::store::{AwaitingPlan, Store};

/// How often waiting incidents are looked at.
const TICK: Duration = Duration::from_millis(250);
/// Incidents looked at per tick.
const BATCH: usize = 500;

/// What the approval worker works with, handed to it by the composition root.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub config: Current,
    pub clock: Clock,
}

/// Runs until `stop` completes.
pub async fn run(ctx: Context, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(TICK) => {}
        }
        let waiting = match ctx.store.awaiting_approval(BATCH).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the incidents waiting for approval; will retry");
                continue;
            }
        };
        for w in waiting {
            if !w.planned {
                request(&ctx, &w.id).await;
            }
            if w.until <= ctx.clock.now() {
                time_out(&ctx, &w.id).await;
            }
        }
    }
}

/// Makes incident `id`'s plan and records it with its request.
async fn request(ctx: &Context, id: &str) {
    let waiting = match ctx.store.awaiting_plan(id).await {
        Ok(Some(w)) => w,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(incident = %id, error = %e, "cannot read an incident to plan; will retry");
            return;
        }
    };
    let loaded = ctx.config.get();
    let plan = match tokio::task::spawn_blocking(move || make_plan(&loaded, &waiting)).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(incident = %id, error = %e, "the dry run that makes a plan panicked; will retry");
            return;
        }
    };
    let steps = plan.steps.len();
    match ctx.store.record_plan(id, plan).await {
        Ok(true) => {
            tracing::info!(incident = %id, steps, "approval requested: the plan is made and sent")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(incident = %id, error = %e, "cannot record a plan; will retry")
        }
    }
}

async fn time_out(ctx: &Context, id: &str) {
    match ctx.store.approval_timed_out(id).await {
        Ok(true) => {
            tracing::warn!(incident = %id, "nobody decided on the run in time: escalated approval_timeout")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(incident = %id, error = %e, "cannot escalate an approval timeout; will retry")
        }
    }
}

/// The plan of `w`: a dry run of its runbook on `loaded`, its acting steps redacted as the
/// audit log redacts them. The runbook sees the incident as its real run will (`dry_run`
/// false, first attempt): only the steps' results are made up.
pub fn make_plan(loaded: &Loaded, w: &AwaitingPlan) -> Plan {
    let name = w.runbook.clone().unwrap_or_default();
    let Some(runbook) = loaded.catalog.get(&name) else {
        return Plan {
            runbook: name.clone(),
            sha256: String::new(),
            steps: Vec::new(),
            truncated: false,
            end: PlanEnd::Stopped {
                reason: "runbook_error".into(),
                message: format!("runbook {name:?} is not loaded: the run would stop at once"),
            },
        };
    };
    let alert = AlertView {
        labels: &w.labels,
        annotations: &w.annotations,
        fingerprint: &w.fingerprint,
        starts_at: &w.starts_at,
        generator_url: &w.generator_url,
    };
    let incident = IncidentView {
        id: &w.id,
        route: w.route.as_deref().unwrap_or_default(),
        runbook: &name,
        attempt: 1,
        dry_run: false,
    };
    let vars = scope::vars(&alert, &incident, &loaded.config.runbooks.secrets);
    let (end, record) = offline::run(
        &loaded.sandbox,
        &runbook.ast,
        vars,
        Checks::of(&loaded.config),
        Answers::DryRun,
    );
    let redact = |t: &str| loaded.toolkit.redactor.apply(t);
    let mut steps: Vec<PlannedStep> = record
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Step { call, .. } => acting(call.kind, &call.args),
            Event::Log { .. } => None,
        })
        .map(|s| s.map_text(redact))
        .collect();
    let truncated = steps.len() > MAX_STEPS;
    steps.truncate(MAX_STEPS);
    let end = match end {
        RunEnd::Completed => PlanEnd::Completed,
        RunEnd::Stopped(stop) => PlanEnd::Stopped {
            reason: stop.reason.as_str().to_string(),
            message: redact(&stop.message),
        },
    };
    Plan {
        runbook: name,
        sha256: runbook.hash.clone(),
        steps,
        truncated,
        end,
    }
}

/// The plan's step for a dry run's call, if the call acts on the world.
fn acting(kind: StepKind, args: &[String]) -> Option<PlannedStep> {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    match kind {
        StepKind::Exec => Some(PlannedStep::exec(arg(0), args.get(1..).unwrap_or_default())),
        StepKind::Http => Some(PlannedStep::http(arg(0), arg(1), arg(2))),
        StepKind::Silence => Some(PlannedStep::silence(arg(0), arg(1))),
        StepKind::Sleep | StepKind::Query => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn loaded(dir: &std::path::Path, runbook: &str) -> Loaded {
        std::fs::create_dir_all(dir.join("runbooks")).unwrap();
        std::fs::write(dir.join("runbooks/fix.rhai"), runbook).unwrap();
        let text = format!(
            r#"
[runbooks]
dir = "{}"
allowed_commands = ["true", "echo"]
http_allowed_hosts = ["lb.example"]

[runbooks.secrets]
TOKEN = "s3cr3t-token"

[escalation]
notify = ["f"]

[[escalation.channels]]
name = "f"
type = "file"
path = "x.jsonl"

[[routes]]
name = "fix"
matchers = ['alertname="X"']
runbook = "fix.rhai"
approval = {{ timeout = "5m" }}
"#,
            dir.join("runbooks").display()
        );
        let config =
            crate::config::Config::parse(&dir.join("medic.toml"), &text, &|_| None).unwrap();
        Loaded::from_config(config).unwrap()
    }

    fn waiting() -> AwaitingPlan {
        let labels: BTreeMap<String, String> = [("alertname", "X"), ("instance", "web1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AwaitingPlan {
            id: "01INC".into(),
            route: Some("fix".into()),
            runbook: Some("fix.rhai".into()),
            fingerprint: "f".into(),
            labels,
            annotations: BTreeMap::new(),
            starts_at: "2026-11-23T10:00:00Z".into(),
            generator_url: String::new(),
        }
    }

    #[test]
    fn the_plan_is_the_dry_run_of_the_acting_steps_with_secrets_redacted() {
        let tmp = tempfile::tempdir().unwrap();
        let l = loaded(
            tmp.path(),
            r#"
            log("starting");
            let r = exec("true", ["check", alert.labels.instance]);
            sleep(1);
            if r.stdout == "" {
                http("post", "http://lb.example/drain?token=" + secrets.TOKEN, "{}");
            }
            exec("echo", ["restart", incident.id, `dry=${incident.dry_run}`]);
            "#,
        );
        let plan = make_plan(&l, &waiting());
        assert_eq!(plan.runbook, "fix.rhai");
        assert_eq!(plan.sha256, l.catalog.get("fix.rhai").unwrap().hash);
        assert_eq!(plan.end, PlanEnd::Completed);
        let shown: Vec<String> = plan.steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "exec true check web1",
                "http POST http://lb.example/drain?token=<redacted:TOKEN> body {}",
                "exec echo restart 01INC dry=false",
            ]
        );
    }

    #[test]
    fn a_stopped_dry_run_is_the_plan_s_end() {
        let tmp = tempfile::tempdir().unwrap();
        let l = loaded(tmp.path(), r#"exec("true", []); exec("rm", ["-rf", "/"]);"#);
        let plan = make_plan(&l, &waiting());
        assert_eq!(plan.steps.len(), 2);
        match &plan.end {
            PlanEnd::Stopped { reason, message } => {
                assert_eq!(reason, "step_failed");
                assert!(
                    message.contains("not in runbooks.allowed_commands"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        let mut gone = waiting();
        gone.runbook = Some("gone.rhai".into());
        let plan = make_plan(&l, &gone);
        assert!(plan.steps.is_empty());
        assert!(
            plan.end_line().contains("not loaded"),
            "{}",
            plan.end_line()
        );
    }

    #[test]
    fn a_long_dry_run_is_cut_and_marked() {
        let tmp = tempfile::tempdir().unwrap();
        let l = loaded(tmp.path(), r#"for i in 0..150 { exec("true", [`${i}`]); }"#);
        let plan = make_plan(&l, &waiting());
        assert_eq!(plan.steps.len(), MAX_STEPS);
        assert!(plan.truncated);
    }
}
