//! `medic test`: runs the tests of test files and says, for each, what differed.
//!
//! A file's runbook (or config) is loaded once; each test builds its alert, is routed when
//! the file names a config, runs offline on the test's mocks, and is then compared with
//! what it expects: the route, the steps, the log lines and the end. A problem with the
//! file itself (TOML, a missing runbook, a runbook that does not compile) is one failure,
//! reported with its file and line.

use crate::incident::Reason;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::AST;

use super::diff::{align, Op};
use super::offline::{self, place, Answers, Checks, Offline, Record};
use super::spec::{self, mock_hint, ExpectedEnd, Pattern, StepPattern, Target, TestCase, TestFile};
use crate::config::{Location, RunbooksConfig};
use crate::ingest::payload;
use crate::routing::Decision;
use crate::runbook::sandbox::{CallSite, RunEnd, Sandbox, Stop};
use crate::runbook::scope::{self, AlertView, IncidentView};

/// What one test file gave.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: PathBuf,
    /// Problems with the file itself: if any, no test ran, and the file counts as one
    /// failure.
    pub problems: Vec<String>,
    pub tests: Vec<TestReport>,
}

/// What one test gave.
#[derive(Debug, Clone)]
pub struct TestReport {
    pub name: String,
    pub location: Location,
    /// Each failure is a block of lines; none means the test passed.
    pub failures: Vec<String>,
    pub duration: Duration,
}

impl TestReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl FileReport {
    pub fn passed(&self) -> usize {
        self.tests.iter().filter(|t| t.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.tests.iter().filter(|t| !t.passed()).count() + usize::from(!self.problems.is_empty())
    }

    /// The report as `medic test` prints it.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", self.path.display());
        for p in &self.problems {
            let _ = writeln!(out, "  FAIL  {p}");
        }
        for t in &self.tests {
            if t.passed() {
                let _ = writeln!(out, "  PASS  {}", t.name);
                continue;
            }
            let _ = writeln!(
                out,
                "  FAIL  {}  ({}:{})",
                t.name,
                self.path.display(),
                t.location.line
            );
            for f in &t.failures {
                for line in f.lines() {
                    let _ = writeln!(out, "        {line}");
                }
            }
        }
        out
    }
}

/// The test files under `paths`: files as given, directories searched for `*.toml`
/// (sorted, subdirectories included). A path that does not exist is a problem.
pub fn collect(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<FileReport>) {
    let mut files = Vec::new();
    let mut missing = Vec::new();
    for p in paths {
        if p.is_dir() {
            let before = files.len();
            walk(p, &mut files);
            files[before..].sort();
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            missing.push(FileReport {
                path: p.clone(),
                problems: vec![format!("{}: no such file or directory", p.display())],
                tests: Vec::new(),
            });
        }
    }
    (files, missing)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
}

/// What a file's tests run against.
enum Subject {
    Runbook {
        path: PathBuf,
        name: String,
        ast: Arc<AST>,
        sandbox: Box<Sandbox>,
    },
    Config(Box<Offline>),
}

/// Runs the tests of the file at `path` whose name `filter` matches (all without one).
pub fn run_file(path: &Path, filter: Option<&regex::Regex>) -> FileReport {
    let mut report = FileReport {
        path: path.to_path_buf(),
        problems: Vec::new(),
        tests: Vec::new(),
    };
    let file = match spec::load(path) {
        Ok(f) => f,
        Err(errors) => {
            report.problems = errors.iter().map(|e| e.to_string()).collect();
            return report;
        }
    };
    let subject = match prepare(&file) {
        Ok(s) => s,
        Err(problems) => {
            report.problems = problems;
            return report;
        }
    };
    for test in &file.tests {
        if filter.is_some_and(|f| !f.is_match(&test.name)) {
            continue;
        }
        let started = Instant::now();
        let failures = run_test(&subject, test);
        report.tests.push(TestReport {
            name: test.name.clone(),
            location: test.location,
            failures,
            duration: started.elapsed(),
        });
    }
    report
}

fn prepare(file: &TestFile) -> Result<Subject, Vec<String>> {
    let named_in = |what: &Path| format!("{} (named in {})", what.display(), file.path.display());
    match &file.target {
        Target::Runbook(path) => {
            let source = std::fs::read_to_string(path)
                .map_err(|e| vec![format!("{}: cannot read: {e}", named_in(path))])?;
            let cfg = RunbooksConfig {
                dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
                ..RunbooksConfig::default()
            };
            let sandbox = Sandbox::new(&cfg);
            let ast = sandbox.compile(&source).map_err(|e| {
                let at = e
                    .position
                    .map(|(l, c)| format!(":{l}:{c}"))
                    .unwrap_or_default();
                vec![format!("{}{at}: {}", path.display(), e.message)]
            })?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(Subject::Runbook {
                path: path.clone(),
                name,
                ast: Arc::new(ast),
                sandbox: Box::new(sandbox),
            })
        }
        Target::Config(path) => {
            if !path.is_file() {
                return Err(vec![format!("{}: no such file", named_in(path))]);
            }
            Offline::load(path)
                .map(|o| Subject::Config(Box::new(o)))
                .map_err(|problems| problems.iter().map(|p| p.to_string()).collect())
        }
    }
}

/// How a test's run ended, with what routing decided.
struct Ran {
    route: Option<String>,
    runbook: Option<String>,
    runbook_path: PathBuf,
    end: RunEnd,
    record: Record,
}

impl Ran {
    /// A test whose alert runs no runbook: it stopped at routing, for `reason`.
    fn not_run(route: Option<String>, reason: Reason, why: String, test: &TestCase) -> Ran {
        Ran {
            route,
            runbook: None,
            runbook_path: PathBuf::new(),
            end: RunEnd::Stopped(Stop::new(reason, why)),
            record: Record {
                used: vec![0; test.mocks.len()],
                ..Record::default()
            },
        }
    }
}

fn execute(subject: &Subject, test: &TestCase) -> Ran {
    let alert = &test.alert;
    let fingerprint = alert
        .fingerprint
        .clone()
        .unwrap_or_else(|| payload::fingerprint(&alert.labels));
    let view = AlertView {
        labels: &alert.labels,
        annotations: &alert.annotations,
        fingerprint: &fingerprint,
        starts_at: &alert.starts_at,
        generator_url: &alert.generator_url,
    };
    let answers = |dry_run: bool| {
        if dry_run {
            Answers::DryRun
        } else {
            Answers::Mocks(test.mocks.clone())
        }
    };
    match subject {
        Subject::Runbook {
            path,
            name,
            ast,
            sandbox,
        } => {
            let incident = IncidentView {
                id: "test",
                route: "",
                runbook: name,
                attempt: 1,
                dry_run: test.dry_run,
            };
            let vars = scope::vars(&view, &incident, &test.secrets);
            let (end, record) =
                offline::run(sandbox, ast, vars, Checks::none(), answers(test.dry_run));
            Ran {
                route: None,
                runbook: Some(name.clone()),
                runbook_path: path.clone(),
                end,
                record,
            }
        }
        Subject::Config(o) => {
            let exists = |name: &str| o.catalog.contains(name);
            match o.router.route(&alert.labels, &alert.annotations, &exists) {
                // Nothing runs: the test sees the route, if any, and why it stopped.
                Decision::Ignore { route } => {
                    let why =
                        format!("route {route:?} ignores the alert: nothing runs, nobody is told");
                    Ran::not_run(Some(route), Reason::NoRunbook, why, test)
                }
                Decision::Invalid { route, why } => {
                    Ran::not_run(route, Reason::InvalidAlert, why, test)
                }
                Decision::NoRunbook { why } => Ran::not_run(None, Reason::NoRunbook, why, test),
                Decision::Runbook { route, runbook } => {
                    let dry_run = test.dry_run || o.dry_run(&route);
                    let incident = IncidentView {
                        id: "test",
                        route: &route,
                        runbook: &runbook,
                        attempt: 1,
                        dry_run,
                    };
                    // The config's secrets, with the test's on top.
                    let mut secrets = o.config.runbooks.secrets.clone();
                    secrets.retain(|(k, _)| !test.secrets.iter().any(|(t, _)| t == k));
                    secrets.extend(test.secrets.iter().cloned());
                    let vars = scope::vars(&view, &incident, &secrets);
                    let ast = o
                        .catalog
                        .get(&runbook)
                        .map(|r| r.ast.clone())
                        .expect("routing only chooses loaded runbooks");
                    let (end, record) = offline::run(
                        &o.sandbox,
                        &ast,
                        vars,
                        Checks::of(&o.config),
                        answers(dry_run),
                    );
                    Ran {
                        runbook_path: o.runbook_path(&runbook),
                        route: Some(route),
                        runbook: Some(runbook),
                        end,
                        record,
                    }
                }
            }
        }
    }
}

fn run_test(subject: &Subject, test: &TestCase) -> Vec<String> {
    let ran = execute(subject, test);
    let rb = ran.runbook_path.as_path();
    let mut failures = Vec::new();
    let expect = &test.expect;

    if let Some(want) = &expect.route {
        if ran.route.as_deref() != Some(want.as_str()) {
            failures.push(format!("route: expected {want:?}, got {}", got_route(&ran)));
        }
    }
    if let Some(want) = &expect.runbook {
        if ran.runbook.as_deref() != Some(want.as_str()) {
            failures.push(format!(
                "runbook: expected {want:?}, got {}",
                ran.runbook
                    .as_deref()
                    .map(|r| format!("{r:?}"))
                    .unwrap_or_else(|| got_route(&ran))
            ));
        }
    }

    let unmocked = ran.record.unmocked();
    if let Some((call, site, used_up)) = unmocked {
        let mut text = format!("no mock answers {call}");
        if let Some(site) = site {
            let _ = write!(text, ", called at {}", place(rb, site));
        }
        for &i in used_up {
            if let Some(m) = test.mocks.get(i) {
                let _ = write!(
                    text,
                    "\n({} matches it but has answered all its times = {})",
                    m.key,
                    m.times.unwrap_or(0)
                );
            }
        }
        let _ = write!(text, "\nadd a mock to the test, e.g.:");
        for line in mock_hint(call).lines() {
            let _ = write!(text, "\n    {line}");
        }
        failures.push(text);
    }

    if let Some(want) = &expect.steps {
        let calls: Vec<_> = ran
            .record
            .steps()
            .map(|(call, site, _)| (call, site))
            .collect();
        let shown: Vec<_> = calls.iter().map(|(c, s)| (c.to_string(), *s)).collect();
        let same = |p: &StepPattern, j: usize| p.matches(calls[j].0);
        failures.extend(diff("steps", want, &shown, same, &ran));
    }
    if let Some(want) = &expect.logs {
        let logs: Vec<_> = ran.record.logs().collect();
        let shown: Vec<_> = logs.iter().map(|(m, s)| (show(m), *s)).collect();
        let same = |p: &Pattern, j: usize| p.matches(logs[j].0);
        failures.extend(diff("log lines", want, &shown, same, &ran));
    }

    // A run stopped for want of a mock says nothing about its end or the other mocks.
    if unmocked.is_none() {
        let ok = match (&expect.end, &ran.end) {
            (ExpectedEnd::Verifying, RunEnd::Completed) => true,
            (ExpectedEnd::Escalated { reason, message }, RunEnd::Stopped(stop)) => {
                stop.reason == *reason && message.as_ref().is_none_or(|m| m.matches(&stop.message))
            }
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "result: expected {}\n        got {}",
                expect.end,
                describe_end(&ran, rb)
            ));
        }
        for (i, m) in test.mocks.iter().enumerate() {
            let used = ran.record.used.get(i).copied().unwrap_or(0);
            let where_ = m
                .location
                .map(|l| format!(" (line {})", l.line))
                .unwrap_or_default();
            match m.times {
                None if used == 0 => {
                    failures.push(format!("{} was never used: {}{where_}", m.key, m.call))
                }
                Some(t) if used < t => failures.push(format!(
                    "{} answered {used} of its times = {t} calls: {}{where_}",
                    m.key, m.call
                )),
                _ => {}
            }
        }
    }
    failures
}

/// `what` expected (patterns) against what was done (shown, with its call site), as a
/// diff with the runbook line of each thing done; `None` when they agree.
fn diff<P: fmt::Display>(
    what: &str,
    want: &[P],
    actual: &[(String, Option<&CallSite>)],
    same: impl Fn(&P, usize) -> bool,
    ran: &Ran,
) -> Option<String> {
    let indexes: Vec<usize> = (0..actual.len()).collect();
    let ops = align(want, &indexes, |p, &j| same(p, j));
    if ops.iter().all(|op| matches!(op, Op::Same(..))) {
        return None;
    }
    let rb = ran.runbook_path.as_path();
    let at = |j: usize| actual[j].1.map(|s| place(rb, s)).unwrap_or_default();
    let lines: Vec<(char, String, String)> = ops
        .iter()
        .map(|op| match *op {
            Op::Same(_, j) => (' ', actual[j].0.clone(), at(j)),
            Op::Missing(i) => ('-', want[i].to_string(), String::new()),
            Op::Extra(j) => ('+', actual[j].0.clone(), at(j)),
        })
        .collect();
    let mut text = format!("{what} differ (- expected, + actual):");
    text.push_str(&table(&lines));
    text.push('\n');
    text.push_str(&divergence(&ops, |j| actual[j].1, ran, rb));
    Some(text)
}

fn got_route(ran: &Ran) -> String {
    match (&ran.route, &ran.end) {
        (Some(r), _) => format!("{r:?}"),
        (None, RunEnd::Stopped(s)) => format!("no runbook ({})", s.message),
        (None, RunEnd::Completed) => "no route".to_string(),
    }
}

/// A log line as shown in a diff.
fn show(message: &str) -> String {
    super::offline::show_arg(message).into_owned()
}

/// Lines of a diff, with the runbook position of what was done in a column.
fn table(lines: &[(char, String, String)]) -> String {
    let width = lines
        .iter()
        .map(|(_, t, _)| t.chars().count())
        .max()
        .unwrap_or(0)
        .min(72);
    let mut out = String::new();
    for (mark, text, at) in lines {
        if at.is_empty() {
            let _ = write!(out, "\n  {mark} {text}");
        } else {
            let _ = write!(out, "\n  {mark} {text:<width$}   {at}");
        }
    }
    out
}

/// Where the runbook first did something other than expected: the runbook line of the
/// first thing it did from there, or how it ended if it did nothing more.
fn divergence<'a>(
    ops: &[Op],
    site: impl Fn(usize) -> Option<&'a CallSite>,
    ran: &Ran,
    rb: &Path,
) -> String {
    let Some(first) = ops.iter().position(|op| !matches!(op, Op::Same(..))) else {
        return String::new();
    };
    let next = ops[first..].iter().find_map(|op| match op {
        Op::Extra(j) | Op::Same(_, j) => Some(*j),
        Op::Missing(_) => None,
    });
    match next {
        Some(j) => match site(j) {
            Some(s) => format!("diverged at {}", place(rb, s)),
            None => "diverged at a `print` (Rhai does not say where)".to_string(),
        },
        None => format!("diverged where the run ended: {}", describe_end(ran, rb)),
    }
}

/// How a run ended, with the runbook line where a runbook function stopped it.
fn describe_end(ran: &Ran, rb: &Path) -> String {
    match &ran.end {
        RunEnd::Completed => "verifying (the runbook ended normally)".to_string(),
        RunEnd::Stopped(stop) => {
            let at = ran
                .record
                .stopped_at
                .as_ref()
                .map(|s| format!(" at {}", place(rb, s)))
                .unwrap_or_default();
            format!("escalated ({}){at}: {}", stop.reason.as_str(), stop.message)
        }
    }
}
