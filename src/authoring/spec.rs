//! The runbook test file: TOML, read in two phases like the config.
//!
//! A raw serde layer denies unknown keys and keeps the position of every test, mock and
//! pattern; validation turns it into [`TestFile`] (compiled patterns, known reasons, one
//! kind of step per mock), collecting every problem as a `file:line:col: key: message`
//! [`ConfigError`]. The format is documented in `docs/testing-runbooks.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::offline::{fmt_seconds, show_arg, Call, StepKind};
use crate::config::{ConfigError, Location};
use crate::incident::Reason;

/// A validated test file.
#[derive(Debug, Clone)]
pub struct TestFile {
    pub path: PathBuf,
    pub target: Target,
    pub tests: Vec<TestCase>,
}

/// What a file tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One runbook, run without a config: any program may be run, any URL called.
    Runbook(PathBuf),
    /// A config: each test's alert is routed, and the config's limits apply.
    Config(PathBuf),
}

/// One test: an alert, what the steps answer, and what must happen.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    /// Where the test starts in its file.
    pub location: Location,
    pub dry_run: bool,
    pub secrets: Vec<(String, String)>,
    pub alert: TestAlert,
    pub mocks: Vec<Mock>,
    pub expect: Expect,
}

#[derive(Debug, Clone)]
pub struct TestAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub fingerprint: Option<String>,
    pub starts_at: String,
    pub generator_url: String,
}

/// The `starts_at` of a test alert that gives none.
pub const DEFAULT_STARTS_AT: &str = "2024-01-01T00:00:00Z";

/// A value as written in a test: exact, or a regular expression (`~` then the regex),
/// which must match the whole value.
#[derive(Debug, Clone)]
pub enum Pattern {
    Exact(String),
    Regex { source: String, re: regex::Regex },
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        let Some(source) = text.strip_prefix('~') else {
            return Ok(Pattern::Exact(text.to_string()));
        };
        // Checked alone first: `a)|(b` must not become valid once wrapped.
        regex::Regex::new(source)
            .and_then(|_| regex::Regex::new(&format!("^(?:{source})$")))
            .map(|re| Pattern::Regex {
                source: source.to_string(),
                re,
            })
            .map_err(|e| {
                // regex's messages draw a caret over the pattern; keep the last line only.
                let text = e.to_string();
                let why = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                format!(
                    "invalid regex {source:?}: {}",
                    why.trim().trim_start_matches("error: ")
                )
            })
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(s) => s == value,
            Pattern::Regex { re, .. } => re.is_match(value),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(s) => f.write_str(&show_arg(s)),
            Pattern::Regex { source, .. } => f.write_str(&show_arg(&format!("~{source}"))),
        }
    }
}

/// A step as a test names it: its kind and a pattern for each argument. For `http`, a
/// missing body pattern matches any body.
#[derive(Debug, Clone)]
pub struct StepPattern {
    pub kind: StepKind,
    pub args: Vec<Pattern>,
}

impl StepPattern {
    pub fn matches(&self, call: &Call) -> bool {
        if self.kind != call.kind {
            return false;
        }
        let n = if self.kind == StepKind::Http && self.args.len() == 2 {
            2
        } else {
            call.args.len()
        };
        self.args.len() == n && self.args.iter().zip(&call.args).all(|(p, a)| p.matches(a))
    }
}

impl fmt::Display for StepPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// A mocked step: the calls it answers, how often, and the answer.
#[derive(Debug, Clone)]
pub struct Mock {
    pub call: StepPattern,
    /// `None`: any number of calls (at least one).
    pub times: Option<u32>,
    pub answer: Answer,
    /// `tests[i].mocks[j]`, for reports.
    pub key: String,
    pub location: Option<Location>,
}

/// What a mocked step returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Exec {
        code: i64,
        stdout: String,
        stderr: String,
    },
    /// `status` 0 means no answer came; `error` says why.
    Http {
        status: i64,
        body: String,
        error: String,
    },
    Query(Vec<Sample>),
    Silence(String),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// What a test expects.
#[derive(Debug, Clone)]
pub struct Expect {
    pub route: Option<String>,
    pub runbook: Option<String>,
    /// When given, exactly these steps in this order.
    pub steps: Option<Vec<StepPattern>>,
    /// When given, exactly these log lines in this order.
    pub logs: Option<Vec<Pattern>>,
    pub end: ExpectedEnd,
}

#[derive(Debug, Clone)]
pub enum ExpectedEnd {
    /// The runbook ended normally: the incident waits for the alert to resolve.
    Verifying,
    Escalated {
        reason: Reason,
        message: Option<Pattern>,
    },
}

impl fmt::Display for ExpectedEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedEnd::Verifying => f.write_str("verifying"),
            ExpectedEnd::Escalated { reason, message } => {
                write!(f, "escalated ({})", reason.as_str())?;
                if let Some(m) = message {
                    write!(f, " with message {m}")?;
                }
                Ok(())
            }
        }
    }
}

// ---- the raw layer -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    runbook: Option<Spanned<String>>,
    config: Option<Spanned<String>>,
    #[serde(default)]
    tests: Vec<Spanned<RawTest>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    name: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    alert: RawAlert,
    #[serde(default)]
    mocks: Vec<Spanned<RawMock>>,
    expect: RawExpect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlert {
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    fingerprint: Option<String>,
    starts_at: Option<String>,
    generator_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMock {
    exec: Option<Vec<Spanned<Arg>>>,
    http: Option<Vec<Spanned<Arg>>>,
    query: Option<Spanned<Arg>>,
    silence: Option<Vec<Spanned<Arg>>>,
    times: Option<Spanned<i64>>,
    code: Option<i64>,
    stdout: Option<String>,
    stderr: Option<String>,
    status: Option<Spanned<i64>>,
    body: Option<String>,
    error: Option<String>,
    result: Option<Vec<Sample>>,
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    route: Option<Spanned<String>>,
    runbook: Option<Spanned<String>>,
    steps: Option<Vec<Spanned<Vec<Spanned<Arg>>>>>,
    logs: Option<Vec<Spanned<String>>>,
    result: Spanned<String>,
    reason: Option<Spanned<String>>,
    message: Option<Spanned<String>>,
}

/// One element of a step array: text, or a number (for `sleep`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Arg {
    Text(String),
    Int(i64),
    Float(f64),
}

impl Arg {
    fn text(&self) -> String {
        match self {
            Arg::Text(s) => s.clone(),
            Arg::Int(i) => i.to_string(),
            Arg::Float(f) => fmt_seconds(*f),
        }
    }
}

// ---- validation ----------------------------------------------------------------------

struct Errors<'a> {
    file: &'a Path,
    text: &'a str,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    fn at(&mut self, span: Option<std::ops::Range<usize>>, key: &str, message: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.to_path_buf(),
            location: span.map(|s| Location::from_offset(self.text, s.start)),
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn loc(&self, span: std::ops::Range<usize>) -> Location {
        Location::from_offset(self.text, span.start)
    }
}

/// Reads and validates the test file at `path`; every problem, with its position.
pub fn load(path: &Path) -> Result<TestFile, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![ConfigError::for_file(path, format!("cannot read: {e}"))])?;
    parse(path, &text)
}

/// Validates `text`, the contents of the test file `path`.
pub fn parse(path: &Path, text: &str) -> Result<TestFile, Vec<ConfigError>> {
    let raw: RawFile =
        toml::from_str(text).map_err(|e| vec![ConfigError::from_toml(path, text, &e)])?;
    let mut errors = Errors {
        file: path,
        text,
        list: Vec::new(),
    };
    let base = path.parent().unwrap_or(Path::new(""));
    let target = match (&raw.runbook, &raw.config) {
        (Some(r), None) => Some(Target::Runbook(normalize(&base.join(r.get_ref())))),
        (None, Some(c)) => Some(Target::Config(normalize(&base.join(c.get_ref())))),
        (Some(_), Some(c)) => {
            errors.at(
                Some(c.span()),
                "config",
                "give either `runbook` or `config`, not both",
            );
            None
        }
        (None, None) => {
            errors.at(
                None,
                "",
                "names nothing to test: add `runbook = \"path/to/runbook.rhai\"` or `config = \"path/to/medic.toml\"` (relative to this file)",
            );
            None
        }
    };
    let with_config = matches!(target, Some(Target::Config(_)));
    if raw.tests.is_empty() {
        errors.at(None, "tests", "no tests: add at least one [[tests]]");
    }
    let mut tests = Vec::new();
    let mut names = BTreeMap::new();
    for (i, t) in raw.tests.into_iter().enumerate() {
        let location = errors.loc(t.span());
        let key = format!("tests[{i}]");
        let t = t.into_inner();
        if t.name.trim().is_empty() {
            errors.at(None, &format!("{key}.name"), "must not be empty");
        } else if let Some(first) = names.insert(t.name.clone(), location) {
            errors.list.push(ConfigError {
                file: path.to_path_buf(),
                location: Some(location),
                key: format!("{key}.name"),
                message: format!(
                    "{:?} is also the name of the test at line {}",
                    t.name, first.line
                ),
            });
        }
        let mocks = t
            .mocks
            .into_iter()
            .enumerate()
            .filter_map(|(j, m)| mock(&mut errors, &format!("{key}.mocks[{j}]"), m))
            .collect();
        let Some(expect) = expect(&mut errors, &format!("{key}.expect"), t.expect, with_config)
        else {
            continue;
        };
        tests.push(TestCase {
            name: t.name,
            location,
            dry_run: t.dry_run,
            secrets: t.secrets.into_iter().collect(),
            alert: TestAlert {
                labels: t.alert.labels,
                annotations: t.alert.annotations,
                fingerprint: t.alert.fingerprint,
                starts_at: t
                    .alert
                    .starts_at
                    .unwrap_or_else(|| DEFAULT_STARTS_AT.to_string()),
                generator_url: t.alert.generator_url.unwrap_or_default(),
            },
            mocks,
            expect,
        });
    }
    match target {
        Some(target) if errors.list.is_empty() => Ok(TestFile {
            path: path.to_path_buf(),
            target,
            tests,
        }),
        _ => {
            errors.list.sort_by_key(|e| e.location);
            Err(errors.list)
        }
    }
}

fn pattern(errors: &mut Errors, key: &str, value: &Spanned<String>) -> Option<Pattern> {
    Pattern::parse(value.get_ref())
        .map_err(|e| errors.at(Some(value.span()), key, e))
        .ok()
}

fn arg_pattern(errors: &mut Errors, key: &str, value: &Spanned<Arg>) -> Option<Pattern> {
    Pattern::parse(&value.get_ref().text())
        .map_err(|e| errors.at(Some(value.span()), key, e))
        .ok()
}

/// The argument patterns of a step of `kind`, checked for their number.
fn step_args(
    errors: &mut Errors,
    key: &str,
    kind: StepKind,
    args: &[Spanned<Arg>],
    span: Option<std::ops::Range<usize>>,
) -> Option<StepPattern> {
    let (min, max, shape) = match kind {
        StepKind::Exec => (1, usize::MAX, "[program, args...]"),
        StepKind::Http => (2, 3, "[method, url] or [method, url, body]"),
        StepKind::Sleep => (1, 1, "[seconds]"),
        StepKind::Silence => (2, 2, "[duration, comment]"),
        StepKind::Query => (1, 1, "[promql]"),
    };
    if args.len() < min || args.len() > max {
        errors.at(
            span,
            key,
            format!("{} takes {shape}, got {} values", kind.as_str(), args.len()),
        );
        return None;
    }
    let mut patterns = Vec::new();
    for (n, a) in args.iter().enumerate() {
        let mut p = arg_pattern(errors, &format!("{key}[{n}]"), a)?;
        if kind == StepKind::Http && n == 0 {
            if let Pattern::Exact(m) = &p {
                p = Pattern::Exact(m.to_ascii_uppercase());
            }
        }
        if kind == StepKind::Sleep {
            if let Arg::Text(t) = a.get_ref() {
                if let Ok(f) = t.parse::<f64>() {
                    p = Pattern::Exact(fmt_seconds(f));
                }
            }
        }
        patterns.push(p);
    }
    Some(StepPattern {
        kind,
        args: patterns,
    })
}

fn mock(errors: &mut Errors, key: &str, m: Spanned<RawMock>) -> Option<Mock> {
    let span = m.span();
    let location = Some(errors.loc(span.clone()));
    let m = m.into_inner();
    let given: Vec<&str> = [
        ("exec", m.exec.is_some()),
        ("http", m.http.is_some()),
        ("query", m.query.is_some()),
        ("silence", m.silence.is_some()),
    ]
    .into_iter()
    .filter_map(|(n, g)| g.then_some(n))
    .collect();
    if given.len() != 1 {
        errors.at(
            Some(span),
            key,
            format!(
                "a mock answers one kind of step: give exactly one of exec, http, query, silence (got {})",
                if given.is_empty() { "none".to_string() } else { given.join(", ") }
            ),
        );
        return None;
    }
    let kind = StepKind::parse(given[0]).expect("a known kind");
    // Fields that belong to other kinds of step are mistakes, not defaults.
    let fields = [
        ("code", m.code.is_some(), StepKind::Exec),
        ("stdout", m.stdout.is_some(), StepKind::Exec),
        ("stderr", m.stderr.is_some(), StepKind::Exec),
        ("status", m.status.is_some(), StepKind::Http),
        ("body", m.body.is_some(), StepKind::Http),
        ("error", m.error.is_some(), StepKind::Http),
        ("result", m.result.is_some(), StepKind::Query),
        ("id", m.id.is_some(), StepKind::Silence),
    ];
    let mut ok = true;
    for (field, present, owner) in fields {
        if present && owner != kind {
            errors.at(
                Some(span.clone()),
                &format!("{key}.{field}"),
                format!(
                    "`{field}` answers {} steps, but this mock answers {}",
                    owner.as_str(),
                    kind.as_str()
                ),
            );
            ok = false;
        }
    }
    let times = match &m.times {
        None => None,
        Some(t) if *t.get_ref() >= 1 && *t.get_ref() <= u32::MAX as i64 => {
            Some(*t.get_ref() as u32)
        }
        Some(t) => {
            errors.at(Some(t.span()), &format!("{key}.times"), "must be 1 or more");
            ok = false;
            None
        }
    };
    let call = match kind {
        StepKind::Exec => step_args(
            errors,
            &format!("{key}.exec"),
            kind,
            m.exec.as_deref().unwrap_or_default(),
            Some(span.clone()),
        ),
        StepKind::Http => step_args(
            errors,
            &format!("{key}.http"),
            kind,
            m.http.as_deref().unwrap_or_default(),
            Some(span.clone()),
        ),
        StepKind::Silence => step_args(
            errors,
            &format!("{key}.silence"),
            kind,
            m.silence.as_deref().unwrap_or_default(),
            Some(span.clone()),
        ),
        StepKind::Query => m.query.as_ref().and_then(|q| {
            step_args(
                errors,
                &format!("{key}.query"),
                kind,
                std::slice::from_ref(q),
                Some(span.clone()),
            )
        }),
        StepKind::Sleep => None,
    };
    let answer = match kind {
        StepKind::Exec => Answer::Exec {
            code: m.code.unwrap_or(0),
            stdout: m.stdout.unwrap_or_default(),
            stderr: m.stderr.unwrap_or_default(),
        },
        StepKind::Http => {
            let status = m.status.as_ref().map_or(200, |s| *s.get_ref());
            if status != 0 && !(100..=599).contains(&status) {
                let at = m.status.as_ref().map(|s| s.span());
                errors.at(
                    at,
                    &format!("{key}.status"),
                    "must be an HTTP status (100-599), or 0 for no answer",
                );
                ok = false;
            }
            if status != 0 && m.error.is_some() {
                errors.at(
                    Some(span.clone()),
                    &format!("{key}.error"),
                    "`error` is for `status = 0` (no answer came)",
                );
                ok = false;
            }
            Answer::Http {
                status,
                body: m.body.unwrap_or_default(),
                error: m.error.unwrap_or_else(|| {
                    if status == 0 {
                        "connection refused".to_string()
                    } else {
                        String::new()
                    }
                }),
            }
        }
        StepKind::Query => Answer::Query(m.result.unwrap_or_default()),
        StepKind::Silence => Answer::Silence(m.id.unwrap_or_else(|| "silence-1".to_string())),
        StepKind::Sleep => unreachable!("sleep is never mocked"),
    };
    let call = call?;
    ok.then(|| Mock {
        call,
        times,
        answer,
        key: key.to_string(),
        location,
    })
}

fn expect(errors: &mut Errors, key: &str, e: RawExpect, with_config: bool) -> Option<Expect> {
    let mut ok = true;
    for (field, value) in [("route", &e.route), ("runbook", &e.runbook)] {
        if let (Some(v), false) = (value, with_config) {
            errors.at(
                Some(v.span()),
                &format!("{key}.{field}"),
                "only a test file with `config` routes its alerts",
            );
            ok = false;
        }
    }
    let mut steps = None;
    if let Some(list) = &e.steps {
        let mut out = Vec::new();
        for (n, step) in list.iter().enumerate() {
            let k = format!("{key}.steps[{n}]");
            let items = step.get_ref();
            let kind = items.first().and_then(|a| match a.get_ref() {
                Arg::Text(t) => StepKind::parse(t),
                _ => None,
            });
            let Some(kind) = kind else {
                errors.at(
                    Some(step.span()),
                    &k,
                    "a step starts with its kind: \"exec\", \"http\", \"sleep\", \"silence\" or \"query\"",
                );
                ok = false;
                continue;
            };
            match step_args(errors, &k, kind, &items[1..], Some(step.span())) {
                Some(p) => out.push(p),
                None => ok = false,
            }
        }
        steps = Some(out);
    }
    let mut logs = None;
    if let Some(list) = &e.logs {
        let mut out = Vec::new();
        for (n, l) in list.iter().enumerate() {
            match pattern(errors, &format!("{key}.logs[{n}]"), l) {
                Some(p) => out.push(p),
                None => ok = false,
            }
        }
        logs = Some(out);
    }
    let end = match e.result.get_ref().as_str() {
        "verifying" => {
            for (field, value) in [("reason", &e.reason), ("message", &e.message)] {
                if let Some(v) = value {
                    errors.at(
                        Some(v.span()),
                        &format!("{key}.{field}"),
                        "only an escalated result has a reason and a message",
                    );
                    ok = false;
                }
            }
            Some(ExpectedEnd::Verifying)
        }
        "escalated" => {
            let reason = match &e.reason {
                None => {
                    errors.at(
                        Some(e.result.span()),
                        &format!("{key}.reason"),
                        "an escalated result needs its `reason`",
                    );
                    None
                }
                Some(r) => match Reason::parse(r.get_ref()) {
                    Some(reason) => Some(reason),
                    None => {
                        let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
                        errors.at(
                            Some(r.span()),
                            &format!("{key}.reason"),
                            format!(
                                "unknown reason {:?}; one of {}",
                                r.get_ref(),
                                names.join(", ")
                            ),
                        );
                        None
                    }
                },
            };
            let message = match &e.message {
                None => Some(None),
                Some(m) => pattern(errors, &format!("{key}.message"), m).map(Some),
            };
            match (reason, message) {
                (Some(reason), Some(message)) => Some(ExpectedEnd::Escalated { reason, message }),
                _ => None,
            }
        }
        other => {
            errors.at(
                Some(e.result.span()),
                &format!("{key}.result"),
                format!("unknown result {other:?}: \"verifying\" (the runbook ended normally) or \"escalated\""),
            );
            None
        }
    };
    let end = end?;
    ok.then(|| Expect {
        route: e.route.map(Spanned::into_inner),
        runbook: e.runbook.map(Spanned::into_inner),
        steps,
        logs,
        end,
    })
}

/// `a/b/../c` → `a/c`, without touching the file system (so that reports show short paths).
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

/// A call as a test file would mock it, for "add a mock" hints.
pub fn mock_hint(call: &Call) -> String {
    let quoted = |s: &String| serde_json::to_string(s).unwrap_or_default();
    match call.kind {
        StepKind::Exec => format!(
            "[[tests.mocks]]\nexec = [{}]\ncode = 0\nstdout = \"\"",
            call.args.iter().map(quoted).collect::<Vec<_>>().join(", ")
        ),
        StepKind::Http => {
            let mut args: Vec<String> = call.args.iter().take(2).map(quoted).collect();
            if call.args.get(2).is_some_and(|b| !b.is_empty()) {
                args.push(quoted(&call.args[2]));
            }
            format!(
                "[[tests.mocks]]\nhttp = [{}]\nstatus = 200\nbody = \"\"",
                args.join(", ")
            )
        }
        StepKind::Query => format!(
            "[[tests.mocks]]\nquery = {}\nresult = [{{ labels = {{}}, value = 1.0 }}]",
            quoted(&call.args[0])
        ),
        StepKind::Silence => format!(
            "[[tests.mocks]]\nsilence = [{}]\nid = \"silence-1\"",
            call.args.iter().map(quoted).collect::<Vec<_>>().join(", ")
        ),
        StepKind::Sleep => String::new(),
    }
}

#[cfg(test)]
mod tests;
