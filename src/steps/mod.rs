//! Steps: the only way a runbook touches the world.
//!
//! [`StepHost`] implements the sandbox's [`Host`] for one run. Every step is written to the
//! audit log before it runs (its arguments) and after (exit code or status, duration, an
//! output excerpt), with the configured secrets redacted; if the audit log cannot be
//! written, the step does not run. In a dry run a step is recorded as "would run" and
//! returns a documented synthetic result instead.
//!
//! An approved run is bound to its plan (`binding`): before an `exec`, `http` or `silence`
//! acts, it must be the plan's next step, or the run stops `off_plan` (audited as
//! `step_off_plan`, with the planned and the attempted step).
//!
//! Each kind of step is one file: [`exec`] (allow-listed programs, argv only),
//! [`http`] (bounded HTTP calls), [`alertmanager`] (silences) and [`prometheus`] (queries).

pub mod alertmanager;
pub mod exec;
pub mod http;
pub mod prometheus;
pub mod reaper;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rhai::{Array, Dynamic, Map};
use serde_json::{json, Value};

use crate::audit::{Event, NewEntry};
use crate::clock::Clock;
use crate::config::{Config, ServiceConfig};
use crate::guard::StepKind;
use crate::incident::Reason;
use crate::metrics::{Metrics, StepLabels};
use crate::plan::{Binding, PlannedStep};
use crate::runbook::sandbox::{Cancel, Host, Stop};
use crate::store::Store;

/// How much of a step's output goes into the audit log (the runbook gets all of it, up to
/// `runbooks.output_limit`).
const EXCERPT: usize = 4096;

/// What every run of one loaded configuration shares: the resolved allowlist, an HTTP
/// client, limits, services and the secrets to redact.
pub struct Toolkit {
    pub allow: exec::Allowlist,
    pub exec_limits: exec::ExecLimits,
    pub http: http::HttpStep,
    pub alertmanager: Option<ServiceConfig>,
    pub prometheus: Option<ServiceConfig>,
    pub redactor: Redactor,
    pub client: reqwest::Client,
}

impl Toolkit {
    /// Builds the toolkit for `config`; every problem (an allowed command not found, ...)
    /// is returned, one line each.
    pub fn new(config: &Config) -> Result<Toolkit, Vec<String>> {
        let rb = &config.runbooks;
        let allow = exec::Allowlist::resolve(&rb.allowed_commands, &rb.exec_path)?;
        let mut env = vec![("PATH".to_string(), rb.exec_path.clone())];
        for name in &rb.pass_env {
            if let Ok(value) = std::env::var(name) {
                env.push((name.clone(), value));
            }
        }
        let exec_limits = exec::ExecLimits {
            timeout: rb.step_timeout,
            output_limit: rb.output_limit,
            env,
            ..exec::ExecLimits::default()
        };
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("medic/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| vec![format!("cannot build the HTTP client: {e}")])?;
        let mut secrets: Vec<(String, String)> = rb.secrets.clone();
        if let Some(t) = &config.server.webhook_token {
            secrets.push(("server.webhook_token".into(), t.clone()));
        }
        if let Some(t) = &config.server.api_token {
            secrets.push(("server.api_token".into(), t.clone()));
        }
        Ok(Toolkit {
            allow,
            exec_limits,
            http: http::HttpStep {
                timeout: rb.http_timeout,
                max_body: rb.http_max_body,
                allowed_hosts: rb.http_allowed_hosts.clone(),
            },
            alertmanager: config.alertmanager.clone(),
            prometheus: config.prometheus.clone(),
            redactor: Redactor::new(secrets),
            client,
        })
    }
}

/// Replaces secret values with `<redacted:NAME>` in anything written to the audit log.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<(String, String)>,
}

impl Redactor {
    pub fn new(mut secrets: Vec<(String, String)>) -> Redactor {
        // Very short values would redact ordinary text; longest first so that a secret
        // containing another is replaced whole.
        secrets.retain(|(_, v)| v.len() >= 4);
        secrets.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        Redactor { secrets }
    }

    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (name, value) in &self.secrets {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &format!("<redacted:{name}>"));
            }
        }
        out
    }

    /// Redacts every string inside a JSON value.
    pub fn apply_json(&self, v: Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.apply(&s)),
            Value::Array(a) => Value::Array(a.into_iter().map(|x| self.apply_json(x)).collect()),
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .map(|(k, x)| (k, self.apply_json(x)))
                    .collect(),
            ),
            other => other,
        }
    }
}

/// A text cut to the audit excerpt size, with a marker saying how much was left out.
pub fn excerpt(text: &str) -> String {
    if text.len() <= EXCERPT {
        return text.to_string();
    }
    let mut end = EXCERPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} more bytes]", &text[..end], text.len() - end)
}

/// The steps of one run.
pub struct StepHost {
    pub rt: tokio::runtime::Handle,
    pub store: Store,
    pub incident_id: String,
    pub labels: BTreeMap<String, String>,
    pub toolkit: Arc<Toolkit>,
    pub dry_run: bool,
    pub cancel: Cancel,
    pub metrics: Arc<Metrics>,
    pub guards: Arc<crate::guard::Guards>,
    /// The limits of the configuration the run started with.
    pub limits: Arc<crate::guard::Limits>,
    /// Stamps times (a silence's start) and measures steps' durations.
    pub clock: Clock,
    /// The approved plan this run is held to, when its route asked for approval.
    pub binding: Option<Arc<Binding>>,
}

impl StepHost {
    /// Writes one audit entry about this incident; a step whose record cannot be written
    /// does not run.
    fn record(&self, event: Event, detail: Value) -> Result<(), Stop> {
        let detail = self.toolkit.redactor.apply_json(detail);
        let entry = NewEntry::for_incident(event, &self.incident_id, &detail);
        self.rt
            .block_on(self.store.audit(vec![entry]))
            .map_err(|e| {
                Stop::new(
                    Reason::StepFailed,
                    format!("cannot write the audit log, so the step was not run: {e}"),
                )
            })
    }

    fn count(&self, step: StepKind, result: &'static str) {
        self.metrics
            .steps
            .get_or_create(&StepLabels {
                step: step.as_str(),
                result,
            })
            .inc();
    }

    /// Records a failure and turns it into the run's stop.
    fn fail(&self, step: StepKind, args: Value, reason: Reason, message: String) -> Stop {
        let message = self.toolkit.redactor.apply(&message);
        let _ = self.record(
            Event::StepFailed,
            json!({"step": step, "args": args, "reason": reason, "error": message}),
        );
        self.count(
            step,
            if reason == Reason::Timeout {
                "timeout"
            } else {
                "failed"
            },
        );
        Stop::new(reason, format!("{step}: {message}"))
    }

    /// Holds an approved run to its plan: a step that is not the plan's next (compared as
    /// the plan was stored, secrets redacted) is audited and stops the run before it acts.
    fn bound(&self, kind: StepKind, step: PlannedStep) -> Result<(), Stop> {
        let Some(binding) = &self.binding else {
            return Ok(());
        };
        let step = step.map_text(|t| self.toolkit.redactor.apply(t));
        let Err(off) = binding.check(&step) else {
            return Ok(());
        };
        let _ = self.record(
            Event::StepOffPlan,
            json!({"step": kind, "position": off.position,
                   "planned": off.planned.as_ref().map(ToString::to_string),
                   "attempted": off.attempted.to_string(),
                   "planned_step": off.planned, "attempted_step": off.attempted}),
        );
        self.count(kind, "off_plan");
        Err(Stop::new(Reason::OffPlan, off.to_string()))
    }

    /// Asks the guards whether a step may run (the pause switch, per-step rate limits).
    fn guard(&self, step: StepKind, key: &str, args: &Value) -> Result<(), Stop> {
        match self.guards.step(&self.limits, step, key) {
            Ok(()) => Ok(()),
            Err((reason, limit, message)) => {
                self.metrics
                    .refusals
                    .get_or_create(&crate::metrics::LimitLabel { limit })
                    .inc();
                Err(self.fail(step, args.clone(), reason, message))
            }
        }
    }

    /// A step's way in, once its own checks passed: its guards (`key` is what they count
    /// it under), then its start in the audit log. In a dry run it is recorded as what it
    /// would have done instead, and must not run: the caller returns its synthetic result.
    fn begin(&self, step: StepKind, key: &str, args: &Value) -> Result<Begun, Stop> {
        self.guard(step, key, args)?;
        if self.dry_run {
            self.record(Event::StepWouldRun, json!({"step": step, "args": args}))?;
            self.count(step, "dry_run");
            return Ok(Begun::DryRun);
        }
        self.record(Event::StepStarted, json!({"step": step, "args": args}))?;
        Ok(Begun::Run)
    }
}

/// What [`StepHost::begin`] lets a step do.
#[derive(PartialEq)]
enum Begun {
    /// Run it for real: its start is recorded.
    Run,
    /// Do not run it: it was recorded as a dry run's.
    DryRun,
}

fn map(pairs: Vec<(&str, Dynamic)>) -> Map {
    pairs.into_iter().map(|(k, v)| (k.into(), v)).collect()
}

/// What `exec` returns in a dry run.
pub fn dry_run_exec() -> Map {
    map(vec![
        ("code", Dynamic::from(0_i64)),
        ("stdout", Dynamic::from(String::new())),
        ("stderr", Dynamic::from(String::new())),
        ("duration_ms", Dynamic::from(0_i64)),
        ("dry_run", Dynamic::from(true)),
    ])
}

/// What `http` returns in a dry run.
pub fn dry_run_http() -> Map {
    map(vec![
        ("status", Dynamic::from(200_i64)),
        ("body", Dynamic::from(String::new())),
        ("dry_run", Dynamic::from(true)),
    ])
}

/// What `silence` returns in a dry run.
pub const DRY_RUN_SILENCE: &str = "dry-run";

/// Why `silence` and `query` cannot run without their service configured.
pub const NEEDS_ALERTMANAGER: &str = "needs [alertmanager] url in the config";
pub const NEEDS_PROMETHEUS: &str = "needs [prometheus] url in the config";

/// The length of a silence, as `silence(duration, ...)` gives it: more than zero, at most
/// 7 days.
pub fn silence_length(duration: &str) -> Result<Duration, String> {
    match humantime::parse_duration(duration) {
        Ok(d) if d > Duration::ZERO && d <= Duration::from_secs(7 * 24 * 3600) => Ok(d),
        _ => Err(format!(
            "invalid duration {duration:?}: expected e.g. \"30m\", at most 7 days"
        )),
    }
}

impl Host for StepHost {
    fn exec(&self, program: &str, args: Vec<String>) -> Result<Map, Stop> {
        self.bound(StepKind::Exec, PlannedStep::exec(program, &args))?;
        let shown_args = json!({"program": program, "args": args});
        let Some(path) = self
            .toolkit
            .allow
            .lookup(program)
            .map(|p| p.display().to_string())
        else {
            let err = exec::ExecError::NotAllowed {
                program: program.to_string(),
            };
            return Err(self.fail(
                StepKind::Exec,
                shown_args,
                Reason::StepFailed,
                err.to_string(),
            ));
        };
        let args_json = json!({"program": program, "path": path, "args": args});
        if self.begin(StepKind::Exec, program, &args_json)? == Begun::DryRun {
            return Ok(dry_run_exec());
        }
        let cancelled = self.cancel.cancelled();
        let result = self.rt.block_on(exec::run(
            &self.toolkit.allow,
            program,
            &args,
            &self.toolkit.exec_limits,
            cancelled,
        ));
        match result {
            Ok(out) => {
                let duration_ms = out.duration.as_millis() as i64;
                self.record(
                    Event::StepFinished,
                    json!({
                        "step": StepKind::Exec, "program": program, "code": out.code, "duration_ms": duration_ms,
                        "stdout": excerpt(&out.stdout), "stderr": excerpt(&out.stderr),
                        "stdout_truncated": out.stdout_truncated, "stderr_truncated": out.stderr_truncated,
                    }),
                )?;
                self.count(StepKind::Exec, if out.code == 0 { "ok" } else { "nonzero" });
                Ok(map(vec![
                    ("code", Dynamic::from(out.code)),
                    ("stdout", Dynamic::from(out.stdout)),
                    ("stderr", Dynamic::from(out.stderr)),
                    ("duration_ms", Dynamic::from(duration_ms)),
                    ("stdout_truncated", Dynamic::from(out.stdout_truncated)),
                    ("stderr_truncated", Dynamic::from(out.stderr_truncated)),
                ]))
            }
            Err(e) => {
                let reason = match &e {
                    exec::ExecError::Timeout { .. } => Reason::Timeout,
                    exec::ExecError::Cancelled { .. } => Reason::Interrupted,
                    _ => Reason::StepFailed,
                };
                Err(self.fail(StepKind::Exec, args_json, reason, e.to_string()))
            }
        }
    }

    fn http(&self, method: &str, url: &str, body: &str) -> Result<Map, Stop> {
        self.bound(StepKind::Http, PlannedStep::http(method, url, body))?;
        let args = json!({"method": method, "url": url, "body": excerpt(body)});
        let request = match self.toolkit.http.check(method, url) {
            Ok(r) => r,
            Err(message) => {
                return Err(self.fail(StepKind::Http, args, Reason::StepFailed, message))
            }
        };
        if self.begin(StepKind::Http, &request.host(), &args)? == Begun::DryRun {
            return Ok(dry_run_http());
        }
        let started = self.clock.instant();
        let call = self
            .toolkit
            .http
            .send(&self.toolkit.client, request, body.to_string());
        let cancelled = self.cancel.cancelled();
        let result = self.rt.block_on(async {
            tokio::select! {
                r = call => Some(r),
                _ = cancelled => None,
            }
        });
        let Some(result) = result else {
            return Err(self.fail(
                StepKind::Http,
                args,
                Reason::Interrupted,
                "cancelled".into(),
            ));
        };
        let duration_ms = self
            .clock
            .instant()
            .saturating_duration_since(started)
            .as_millis() as i64;
        match result {
            Ok(resp) => {
                self.record(
                    Event::StepFinished,
                    json!({"step": StepKind::Http, "method": method, "url": url, "status": resp.status,
                           "duration_ms": duration_ms, "body": excerpt(&resp.body), "truncated": resp.truncated}),
                )?;
                self.count(
                    StepKind::Http,
                    if resp.status < 400 {
                        "ok"
                    } else {
                        "error_status"
                    },
                );
                Ok(map(vec![
                    ("status", Dynamic::from(resp.status as i64)),
                    ("body", Dynamic::from(resp.body)),
                    ("truncated", Dynamic::from(resp.truncated)),
                    ("duration_ms", Dynamic::from(duration_ms)),
                ]))
            }
            // No HTTP answer (refused, reset, timed out): a result, not a stop, so a runbook
            // can react to a dead service. `status` 0 says there was no answer.
            Err(e) => {
                let error = match e {
                    http::HttpError::Timeout(t) => {
                        format!(
                            "no answer within runbooks.http_timeout ({})",
                            humantime::format_duration(t)
                        )
                    }
                    other => other.to_string(),
                };
                self.record(
                    Event::StepFinished,
                    json!({"step": StepKind::Http, "method": method, "url": url, "status": 0,
                           "duration_ms": duration_ms, "error": error}),
                )?;
                self.count(StepKind::Http, "no_answer");
                Ok(map(vec![
                    ("status", Dynamic::from(0_i64)),
                    ("body", Dynamic::from(String::new())),
                    ("error", Dynamic::from(error)),
                    ("truncated", Dynamic::from(false)),
                    ("duration_ms", Dynamic::from(duration_ms)),
                ]))
            }
        }
    }

    fn log(&self, message: &str) {
        let _ = self.record(Event::RunbookLog, json!({ "message": excerpt(message) }));
    }

    fn sleep(&self, duration: Duration) -> Result<(), Stop> {
        let args = json!({"seconds": duration.as_secs_f64()});
        if self.begin(StepKind::Sleep, "", &args)? == Begun::DryRun {
            return Ok(());
        }
        let cancelled = self.cancel.cancelled();
        let finished = self.rt.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(duration) => true,
                _ = cancelled => false,
            }
        });
        if !finished {
            return Err(self.fail(
                StepKind::Sleep,
                args,
                Reason::Interrupted,
                "cancelled".into(),
            ));
        }
        self.record(
            Event::StepFinished,
            json!({"step": StepKind::Sleep, "duration_ms": duration.as_millis() as u64}),
        )?;
        self.count(StepKind::Sleep, "ok");
        Ok(())
    }

    fn silence(&self, duration: &str, comment: &str) -> Result<String, Stop> {
        self.bound(StepKind::Silence, PlannedStep::silence(duration, comment))?;
        let args = json!({"duration": duration, "comment": comment, "matchers": self.labels});
        let Some(am) = &self.toolkit.alertmanager else {
            return Err(self.fail(
                StepKind::Silence,
                args,
                Reason::StepFailed,
                NEEDS_ALERTMANAGER.into(),
            ));
        };
        let length = match silence_length(duration) {
            Ok(d) => d,
            Err(message) => {
                return Err(self.fail(StepKind::Silence, args, Reason::StepFailed, message))
            }
        };
        if self.begin(StepKind::Silence, "", &args)? == Begun::DryRun {
            return Ok(DRY_RUN_SILENCE.into());
        }
        let comment = format!("medic incident {}: {comment}", self.incident_id);
        let call = alertmanager::create_silence(
            &self.toolkit.client,
            am,
            &self.labels,
            self.clock.now(),
            length,
            &comment,
        );
        match self.rt.block_on(call) {
            Ok((id, ends_at)) => {
                self.rt
                    .block_on(self.store.record_silence(&self.incident_id, &id, ends_at))
                    .map_err(|e| {
                        Stop::new(
                            Reason::StepFailed,
                            format!("silence {id} created but not recorded: {e}"),
                        )
                    })?;
                self.record(
                    Event::SilenceCreated,
                    json!({"silence_id": id, "ends_at": ends_at.to_rfc3339()}),
                )?;
                self.count(StepKind::Silence, "ok");
                Ok(id)
            }
            Err(e) => Err(self.fail(StepKind::Silence, args, Reason::StepFailed, e)),
        }
    }

    /// The run's deadline is kept on the engine's clock, like its `sleep` (so a paused
    /// test clock holds it too).
    fn now(&self) -> std::time::Instant {
        self.clock.instant().into_std()
    }

    fn query(&self, promql: &str) -> Result<Array, Stop> {
        let args = json!({"query": promql});
        let Some(prom) = &self.toolkit.prometheus else {
            return Err(self.fail(
                StepKind::Query,
                args,
                Reason::StepFailed,
                NEEDS_PROMETHEUS.into(),
            ));
        };
        if self.begin(StepKind::Query, "", &args)? == Begun::DryRun {
            return Ok(Array::new());
        }
        let started = self.clock.instant();
        match self.rt.block_on(prometheus::instant_query(
            &self.toolkit.client,
            prom,
            promql,
        )) {
            Ok(samples) => {
                self.record(
                    Event::StepFinished,
                    json!({"step": StepKind::Query, "results": samples.len(), "duration_ms": self.clock.instant().saturating_duration_since(started).as_millis() as u64,
                           "first": samples.first().map(|s| json!({"labels": s.labels, "value": s.value}))}),
                )?;
                self.count(StepKind::Query, "ok");
                Ok(samples
                    .into_iter()
                    .map(|s| {
                        let labels: Map = s
                            .labels
                            .into_iter()
                            .map(|(k, v)| (k.into(), Dynamic::from(v)))
                            .collect();
                        Dynamic::from_map(map(vec![
                            ("labels", Dynamic::from_map(labels)),
                            ("value", Dynamic::from(s.value)),
                        ]))
                    })
                    .collect())
            }
            Err(e) => Err(self.fail(StepKind::Query, args, Reason::StepFailed, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_replaces_secret_values() {
        let r = Redactor::new(vec![
            ("ADMIN_TOKEN".into(), "s3cr3t-value".into()),
            ("SHORT".into(), "ab".into()),
        ]);
        assert_eq!(
            r.apply("curl -H 'Authorization: Bearer s3cr3t-value' ab"),
            "curl -H 'Authorization: Bearer <redacted:ADMIN_TOKEN>' ab"
        );
        let v = r.apply_json(json!({"args": ["x", "s3cr3t-value"], "n": 1}));
        assert_eq!(v, json!({"args": ["x", "<redacted:ADMIN_TOKEN>"], "n": 1}));
    }

    #[test]
    fn excerpts_are_marked() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(5000);
        let e = excerpt(&long);
        assert!(e.ends_with("…[5904 more bytes]"), "{}", &e[e.len() - 30..]);
    }
}
