//! Running a runbook offline: a [`Host`] that never runs a command nor touches the
//! network, and the config loaded without looking anything up on this machine.
//!
//! [`OfflineHost`] applies the checks the real steps make before they act (the command
//! allowlist, the URL and host rules, a configured Alertmanager or Prometheus), then
//! answers from a test's mocks or, for a dry run, with the steps' documented synthetic
//! results. `sleep` returns at once and moves the run's clock forward, so time limits hold
//! as they would. Everything the runbook did is recorded, with the runbook line of each
//! call, for `medic test` to compare and `medic replay` to print.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rhai::{Array, Dynamic, Map, AST};

use super::spec::{Answer, Mock};
use crate::config::{Config, RouteConfig};
use crate::incident::Reason;
use crate::loaded::{missing_runbooks, Problem};
use crate::routing::Router;
use crate::runbook::sandbox::{call_site, CallSite, Cancel, Host, RunEnd, Sandbox, Stop};
use crate::runbook::Catalog;
use crate::steps::{self, exec::ExecError, http::HttpStep};

/// The kinds of step a runbook can call: the guards' own.
pub use crate::guard::StepKind;

/// One step call: `exec` [program, args...], `http` [method, url, body], `sleep`
/// [seconds], `silence` [duration, comment], `query` [promql].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub kind: StepKind,
    pub args: Vec<String>,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        for (i, a) in self.args.iter().enumerate() {
            // An http call without a body reads better without `''`.
            if self.kind == StepKind::Http && i == 2 && a.is_empty() {
                continue;
            }
            write!(f, " {}", show_arg(a))?;
        }
        Ok(())
    }
}

/// An argument as shown in reports: bare when that is unambiguous, else quoted.
pub fn show_arg(s: &str) -> Cow<'_, str> {
    let plain = |c: char| !c.is_whitespace() && !c.is_control() && !matches!(c, '"' | '\'' | '\\');
    if !s.is_empty() && s.chars().all(plain) {
        Cow::Borrowed(s)
    } else if !s.contains('\'') && !s.chars().any(char::is_control) {
        Cow::Owned(format!("'{s}'"))
    } else {
        Cow::Owned(serde_json::to_string(s).unwrap_or_default())
    }
}

/// Seconds as tests write them: `1`, `0.5`.
pub fn fmt_seconds(seconds: f64) -> String {
    if seconds.fract() == 0.0 && seconds.abs() < 1e15 {
        format!("{}", seconds as i64)
    } else {
        format!("{seconds}")
    }
}

/// A runbook line, `file:line:col`, for reports. A call in an imported module names the
/// module's file, beside the runbook (`import "helpers"` is `helpers.rhai`).
pub fn place(runbook: &Path, at: &CallSite) -> String {
    let file = match &at.source {
        Some(module) => {
            let dir = runbook.parent().unwrap_or(Path::new(""));
            dir.join(format!("{module}.rhai")).display().to_string()
        }
        None => runbook.display().to_string(),
    };
    format!("{file}:{}:{}", at.line, at.column)
}

/// What became of a step call.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Answered: by the mock with this index, or (sleep) at once.
    Answered {
        mock: Option<usize>,
        summary: String,
    },
    /// A dry run: recorded, not run, with the synthetic result.
    WouldRun { summary: String },
    /// Refused by the checks the real step makes first; the run stops.
    Failed(Stop),
    /// No mock answers this call; the run stops. `used_up` are mocks that matched but
    /// had answered their `times` already.
    Unmocked { used_up: Vec<usize> },
}

/// One thing a runbook did.
#[derive(Debug, Clone)]
pub enum Event {
    Step {
        call: Call,
        at: Option<CallSite>,
        outcome: Outcome,
    },
    Log {
        message: String,
        at: Option<CallSite>,
    },
}

/// Everything a run did, in order.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub events: Vec<Event>,
    /// Where a runbook function stopped the run (`escalate`, a refused step, ...).
    pub stopped_at: Option<CallSite>,
    /// How many times each mock answered.
    pub used: Vec<u32>,
}

impl Record {
    pub fn steps(&self) -> impl Iterator<Item = (&Call, Option<&CallSite>, &Outcome)> {
        self.events.iter().filter_map(|e| match e {
            Event::Step { call, at, outcome } => Some((call, at.as_ref(), outcome)),
            Event::Log { .. } => None,
        })
    }

    pub fn logs(&self) -> impl Iterator<Item = (&str, Option<&CallSite>)> {
        self.events.iter().filter_map(|e| match e {
            Event::Log { message, at } => Some((message.as_str(), at.as_ref())),
            Event::Step { .. } => None,
        })
    }

    /// The first call no mock answered.
    pub fn unmocked(&self) -> Option<(&Call, Option<&CallSite>, &[usize])> {
        self.steps().find_map(|(call, at, outcome)| match outcome {
            Outcome::Unmocked { used_up } => Some((call, at, used_up.as_slice())),
            _ => None,
        })
    }
}

/// The checks a real step makes before it acts, offline.
#[derive(Debug, Clone)]
pub struct Checks {
    /// `None`: any program (a runbook tested without a config).
    allowed_commands: Option<Vec<String>>,
    http: HttpStep,
    alertmanager: bool,
    prometheus: bool,
}

impl Checks {
    /// No config: any program, any host, and `silence` and `query` are available.
    pub fn none() -> Checks {
        let defaults = crate::config::RunbooksConfig::default();
        Checks {
            allowed_commands: None,
            http: HttpStep {
                timeout: defaults.http_timeout,
                max_body: defaults.http_max_body,
                allowed_hosts: Vec::new(),
            },
            alertmanager: true,
            prometheus: true,
        }
    }

    /// The config's rules. Programs are allowed by the name the config lists them under
    /// (which is how runbooks call them); they are not looked up on this machine.
    pub fn of(config: &Config) -> Checks {
        let rb = &config.runbooks;
        Checks {
            allowed_commands: Some(rb.allowed_commands.clone()),
            http: HttpStep {
                timeout: rb.http_timeout,
                max_body: rb.http_max_body,
                allowed_hosts: rb.http_allowed_hosts.clone(),
            },
            alertmanager: config.alertmanager.is_some(),
            prometheus: config.prometheus.is_some(),
        }
    }
}

/// Where step results come from.
#[derive(Debug, Clone)]
pub enum Answers {
    /// A test's mocks: each call takes the first mock that matches and has answers left.
    Mocks(Vec<Mock>),
    /// The documented dry-run results; nothing needs a mock.
    DryRun,
}

/// The host of an offline run.
pub struct OfflineHost {
    checks: Checks,
    answers: Answers,
    record: Rc<RefCell<Record>>,
    slept: Cell<Duration>,
}

impl OfflineHost {
    pub fn new(checks: Checks, answers: Answers) -> (OfflineHost, Rc<RefCell<Record>>) {
        let record = Rc::new(RefCell::new(Record {
            used: match &answers {
                Answers::Mocks(m) => vec![0; m.len()],
                Answers::DryRun => Vec::new(),
            },
            ..Record::default()
        }));
        let host = OfflineHost {
            checks,
            answers,
            record: record.clone(),
            slept: Cell::new(Duration::ZERO),
        };
        (host, record)
    }

    fn push(&self, call: Call, outcome: Outcome) {
        self.record.borrow_mut().events.push(Event::Step {
            call,
            at: call_site(),
            outcome,
        });
    }

    /// Answers `call`: refused by `check`, synthetic in a dry run, else from a mock.
    fn answer<T>(
        &self,
        call: Call,
        check: Result<(), Stop>,
        dry: impl FnOnce() -> (T, String),
        mocked: impl FnOnce(&Answer) -> (T, String),
    ) -> Result<T, Stop> {
        if let Err(stop) = check {
            self.push(call, Outcome::Failed(stop.clone()));
            return Err(stop);
        }
        let mocks = match &self.answers {
            Answers::DryRun => {
                let (value, summary) = dry();
                self.push(call, Outcome::WouldRun { summary });
                return Ok(value);
            }
            Answers::Mocks(m) => m,
        };
        let mut used_up = Vec::new();
        let mut found = None;
        {
            let record = self.record.borrow();
            for (i, m) in mocks.iter().enumerate() {
                if m.call.matches(&call) {
                    if m.times.is_some_and(|t| record.used[i] >= t) {
                        used_up.push(i);
                    } else {
                        found = Some(i);
                        break;
                    }
                }
            }
        }
        match found {
            Some(i) => {
                self.record.borrow_mut().used[i] += 1;
                let (value, summary) = mocked(&mocks[i].answer);
                self.push(
                    call,
                    Outcome::Answered {
                        mock: Some(i),
                        summary,
                    },
                );
                Ok(value)
            }
            None => {
                let message = format!("no mock answers {call}");
                self.push(call, Outcome::Unmocked { used_up });
                Err(Stop::new(Reason::StepFailed, message))
            }
        }
    }
}

fn map(pairs: Vec<(&str, Dynamic)>) -> Map {
    pairs.into_iter().map(|(k, v)| (k.into(), v)).collect()
}

fn first_line(s: &str) -> String {
    let line = s.trim().lines().next().unwrap_or("");
    let mut cut: String = line.chars().take(80).collect();
    if cut.len() < line.len() || s.trim().lines().nth(1).is_some() {
        cut.push('…');
    }
    cut
}

impl Host for OfflineHost {
    fn exec(&self, program: &str, args: Vec<String>) -> Result<Map, Stop> {
        let check = match &self.checks.allowed_commands {
            Some(list) if !list.iter().any(|c| c == program) => {
                let e = ExecError::NotAllowed {
                    program: program.to_string(),
                };
                Err(Stop::new(Reason::StepFailed, format!("exec: {e}")))
            }
            _ => Ok(()),
        };
        let mut all = vec![program.to_string()];
        all.extend(args);
        let call = Call {
            kind: StepKind::Exec,
            args: all,
        };
        self.answer(
            call,
            check,
            || (steps::dry_run_exec(), "code 0".to_string()),
            |a| match a {
                Answer::Exec {
                    code,
                    stdout,
                    stderr,
                } => {
                    let mut summary = format!("code {code}");
                    if !stdout.trim().is_empty() {
                        summary.push_str(&format!(", stdout {}", show_arg(&first_line(stdout))));
                    }
                    if !stderr.trim().is_empty() {
                        summary.push_str(&format!(", stderr {}", show_arg(&first_line(stderr))));
                    }
                    let value = map(vec![
                        ("code", Dynamic::from(*code)),
                        ("stdout", Dynamic::from(stdout.clone())),
                        ("stderr", Dynamic::from(stderr.clone())),
                        ("duration_ms", Dynamic::from(0_i64)),
                        ("stdout_truncated", Dynamic::from(false)),
                        ("stderr_truncated", Dynamic::from(false)),
                    ]);
                    (value, summary)
                }
                _ => unreachable!("an exec mock answers exec"),
            },
        )
    }

    fn http(&self, method: &str, url: &str, body: &str) -> Result<Map, Stop> {
        let check = self
            .checks
            .http
            .check(method, url)
            .map(|_| ())
            .map_err(|m| Stop::new(Reason::StepFailed, format!("http: {m}")));
        let call = Call {
            kind: StepKind::Http,
            args: vec![
                method.to_ascii_uppercase(),
                url.to_string(),
                body.to_string(),
            ],
        };
        self.answer(
            call,
            check,
            || (steps::dry_run_http(), "status 200".to_string()),
            |a| match a {
                Answer::Http {
                    status: 0, error, ..
                } => (
                    map(vec![
                        ("status", Dynamic::from(0_i64)),
                        ("body", Dynamic::from(String::new())),
                        ("error", Dynamic::from(error.clone())),
                        ("truncated", Dynamic::from(false)),
                        ("duration_ms", Dynamic::from(0_i64)),
                    ]),
                    format!("no answer ({error})"),
                ),
                Answer::Http { status, body, .. } => {
                    let mut summary = format!("status {status}");
                    if !body.trim().is_empty() {
                        summary.push_str(&format!(", body {}", show_arg(&first_line(body))));
                    }
                    let value = map(vec![
                        ("status", Dynamic::from(*status)),
                        ("body", Dynamic::from(body.clone())),
                        ("truncated", Dynamic::from(false)),
                        ("duration_ms", Dynamic::from(0_i64)),
                    ]);
                    (value, summary)
                }
                _ => unreachable!("an http mock answers http"),
            },
        )
    }

    fn log(&self, message: &str) {
        self.record.borrow_mut().events.push(Event::Log {
            message: message.to_string(),
            at: call_site(),
        });
    }

    fn sleep(&self, duration: Duration) -> Result<(), Stop> {
        self.slept.set(self.slept.get() + duration);
        let call = Call {
            kind: StepKind::Sleep,
            args: vec![fmt_seconds(duration.as_secs_f64())],
        };
        let outcome = match self.answers {
            Answers::DryRun => Outcome::WouldRun {
                summary: "returns at once".into(),
            },
            Answers::Mocks(_) => Outcome::Answered {
                mock: None,
                summary: "mocked time".into(),
            },
        };
        self.push(call, outcome);
        Ok(())
    }

    fn silence(&self, duration: &str, comment: &str) -> Result<String, Stop> {
        let check = if !self.checks.alertmanager {
            Err(steps::NEEDS_ALERTMANAGER.to_string())
        } else {
            steps::silence_length(duration).map(|_| ())
        }
        .map_err(|m| Stop::new(Reason::StepFailed, format!("silence: {m}")));
        let call = Call {
            kind: StepKind::Silence,
            args: vec![duration.to_string(), comment.to_string()],
        };
        self.answer(
            call,
            check,
            || {
                let id = steps::DRY_RUN_SILENCE.to_string();
                (id.clone(), format!("id {id}"))
            },
            |a| match a {
                Answer::Silence(id) => (id.clone(), format!("id {}", show_arg(id))),
                _ => unreachable!("a silence mock answers silence"),
            },
        )
    }

    fn query(&self, promql: &str) -> Result<Array, Stop> {
        let check = if self.checks.prometheus {
            Ok(())
        } else {
            Err(Stop::new(
                Reason::StepFailed,
                format!("query: {}", steps::NEEDS_PROMETHEUS),
            ))
        };
        let call = Call {
            kind: StepKind::Query,
            args: vec![promql.to_string()],
        };
        self.answer(
            call,
            check,
            || (Array::new(), "no samples".to_string()),
            |a| match a {
                Answer::Query(samples) => {
                    let value = samples
                        .iter()
                        .map(|s| {
                            let labels: Map = s
                                .labels
                                .iter()
                                .map(|(k, v)| (k.into(), Dynamic::from(v.clone())))
                                .collect();
                            Dynamic::from_map(map(vec![
                                ("labels", Dynamic::from_map(labels)),
                                ("value", Dynamic::from(s.value)),
                            ]))
                        })
                        .collect();
                    (value, format!("{} sample(s)", samples.len()))
                }
                _ => unreachable!("a query mock answers query"),
            },
        )
    }

    fn now(&self) -> Instant {
        Instant::now() + self.slept.get()
    }

    fn stopping(&self, _stop: &Stop) {
        self.record.borrow_mut().stopped_at = call_site();
    }
}

/// Runs `ast` with `vars` on an [`OfflineHost`]; how it ended and what it did.
pub fn run(
    sandbox: &Sandbox,
    ast: &AST,
    vars: Vec<(&str, Dynamic)>,
    checks: Checks,
    answers: Answers,
) -> (RunEnd, Record) {
    let (host, record) = OfflineHost::new(checks, answers);
    let end = sandbox.run(ast, vars, Box::new(host), Cancel::default());
    let record = record.borrow().clone();
    (end, record)
}

/// A config loaded for offline use: validated, routes compiled, every runbook compiled,
/// every route's runbook present; allowed commands are not looked up on this machine.
pub struct Offline {
    pub config: Config,
    pub router: Router,
    pub catalog: Catalog,
    pub sandbox: Sandbox,
}

impl Offline {
    pub fn load(path: &Path) -> Result<Offline, Vec<Problem>> {
        // Offline: the server's tokens and the channels' secrets need not be set.
        let config = Config::load_for(path, crate::config::Purpose::Offline)
            .map_err(|errs| errs.0.iter().map(Problem::from).collect::<Vec<_>>())?;
        let sandbox = Sandbox::new(&config.runbooks);
        let (catalog, errors) = Catalog::load(&config.runbooks.dir, &sandbox);
        let mut problems: Vec<Problem> =
            errors.into_iter().map(|e| Problem(e.to_string())).collect();
        problems.extend(missing_runbooks(&config, &catalog));
        if !problems.is_empty() {
            return Err(problems);
        }
        let router = Router::new(config.routes.iter().map(RouteConfig::routing));
        Ok(Offline {
            config,
            router,
            catalog,
            sandbox,
        })
    }

    /// Whether a route (by name) or the whole config runs dry.
    pub fn dry_run(&self, route: &str) -> bool {
        self.config.runbooks.dry_run
            || self
                .config
                .routes
                .iter()
                .any(|r| r.name == route && r.dry_run)
    }

    /// The runbook file's path, for reports.
    pub fn runbook_path(&self, name: &str) -> PathBuf {
        self.catalog
            .get(name)
            .map(|r| super::spec::normalize(&r.path))
            .unwrap_or_else(|| self.config.runbooks.dir.join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_only_when_needed() {
        assert_eq!(show_arg("nginx.service"), "nginx.service");
        assert_eq!(show_arg("~is-.*"), "~is-.*");
        assert_eq!(show_arg(""), "''");
        assert_eq!(show_arg("a b"), "'a b'");
        assert_eq!(show_arg("{\"a\":1}"), "'{\"a\":1}'");
        assert_eq!(show_arg("it's\n"), "\"it's\\n\"");
    }

    #[test]
    fn seconds_read_as_written() {
        assert_eq!(fmt_seconds(1.0), "1");
        assert_eq!(fmt_seconds(0.5), "0.5");
        assert_eq!(
            fmt_seconds(Duration::from_secs_f64(0.1).as_secs_f64()),
            "0.1"
        );
    }
}
