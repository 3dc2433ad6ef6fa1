//! The plan of a run that waits for approval, and the binding of the approved run to it.
//!
//! A [`Plan`] is what a dry run of the runbook did: each step that acts on the world
//! (`exec` with its program and argv, `http` with its method, URL and body, `silence` with
//! its duration and comment), in order, and how the dry run ended. It is made once, when
//! the incident opens, stored with the incident, shown to the approver, and never changed.
//!
//! A [`Binding`] holds the approved run to it: before each acting step, the step is
//! compared with the plan's step of the same position ([`Binding::check`]); any other
//! program, argument, method, URL, body or duration, or a step beyond the plan, is
//! [`OffPlan`], and the step does not act. A run may end before the plan's end: doing
//! less than was approved is allowed. `sleep`, `log` and `query` change nothing and are
//! not part of the plan.
//!
//! Pure data: no IO, and no dependency on the modules that make or enforce a plan.

use std::fmt;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Most steps a plan keeps; a run that gets further is off plan at the first step beyond.
pub const MAX_STEPS: usize = 100;

/// One step of a plan: what the run would do, exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlannedStep {
    /// `exec(program, args)`: the program as the runbook names it, and its argv.
    Exec { program: String, args: Vec<String> },
    /// `http(method, url, body)`: the method in upper case.
    Http {
        method: String,
        url: String,
        body: String,
    },
    /// `silence(duration, comment)`, for the alert's own labels.
    Silence { duration: String, comment: String },
}

impl PlannedStep {
    /// An `exec` step.
    pub fn exec(program: &str, args: &[String]) -> PlannedStep {
        PlannedStep::Exec {
            program: program.to_string(),
            args: args.to_vec(),
        }
    }

    /// An `http` step; the method is compared in upper case.
    pub fn http(method: &str, url: &str, body: &str) -> PlannedStep {
        PlannedStep::Http {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            body: body.to_string(),
        }
    }

    /// A `silence` step.
    pub fn silence(duration: &str, comment: &str) -> PlannedStep {
        PlannedStep::Silence {
            duration: duration.to_string(),
            comment: comment.to_string(),
        }
    }

    /// The step with every text passed through `f` (the audit log's redaction of
    /// secrets): plans are stored and shown redacted, and compared that way.
    pub fn map_text(&self, f: impl Fn(&str) -> String) -> PlannedStep {
        match self {
            PlannedStep::Exec { program, args } => PlannedStep::Exec {
                program: f(program),
                args: args.iter().map(|a| f(a)).collect(),
            },
            PlannedStep::Http { method, url, body } => PlannedStep::Http {
                method: f(method),
                url: f(url),
                body: f(body),
            },
            PlannedStep::Silence { duration, comment } => PlannedStep::Silence {
                duration: f(duration),
                comment: f(comment),
            },
        }
    }
}

/// An argument as a plan shows it: bare when that is unambiguous, else JSON-quoted, so a
/// space or a newline inside an argument cannot pass for two arguments.
fn shown(s: &str) -> String {
    let plain = |c: char| !c.is_whitespace() && !c.is_control() && !matches!(c, '"' | '\'' | '\\');
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

impl fmt::Display for PlannedStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlannedStep::Exec { program, args } => {
                write!(f, "exec {}", shown(program))?;
                for a in args {
                    write!(f, " {}", shown(a))?;
                }
                Ok(())
            }
            PlannedStep::Http { method, url, body } => {
                write!(f, "http {} {}", shown(method), shown(url))?;
                if !body.is_empty() {
                    write!(f, " body {}", shown(body))?;
                }
                Ok(())
            }
            PlannedStep::Silence { duration, comment } => {
                write!(f, "silence {} {}", shown(duration), shown(comment))
            }
        }
    }
}

/// How the dry run that made a plan ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlanEnd {
    /// The runbook ran to its end.
    Completed,
    /// It stopped: `reason` as an escalation names it, and why.
    Stopped { reason: String, message: String },
}

/// What a run would do, as a dry run of its runbook found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The runbook's file name.
    pub runbook: String,
    /// SHA-256 of the runbook's source the plan was made from.
    pub sha256: String,
    /// The steps that act, in order (at most [`MAX_STEPS`]).
    pub steps: Vec<PlannedStep>,
    /// Whether the dry run took more steps than the plan keeps.
    #[serde(default)]
    pub truncated: bool,
    pub end: PlanEnd,
}

impl Plan {
    /// The plan as stored: JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "null".into())
    }

    /// A stored plan, read back.
    pub fn from_json(text: &str) -> Result<Plan, String> {
        serde_json::from_str(text).map_err(|e| format!("the stored plan cannot be read: {e}"))
    }

    /// A short fingerprint of the plan (SHA-256 of its JSON, hex): what an approval names,
    /// so the audit log ties each decision to exactly what was shown.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(self.to_json().as_bytes()))
    }

    /// The plan's steps, one line each, numbered from 1, and its end.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}. {s}", i + 1))
            .collect();
        if self.steps.is_empty() {
            out.push("(no step that acts: the runbook would only log, sleep or query)".into());
        }
        if self.truncated {
            out.push(format!(
                "(the dry run went on beyond {MAX_STEPS} steps: a step beyond them is off plan)"
            ));
        }
        out.push(self.end_line());
        out
    }

    /// How the dry run ended, in words.
    pub fn end_line(&self) -> String {
        match &self.end {
            PlanEnd::Completed => {
                "then the runbook ends, and medic waits for the alert to resolve".into()
            }
            PlanEnd::Stopped { reason, message } => {
                format!("then the dry run stopped ({reason}): {message}")
            }
        }
    }
}

/// A step the approved run tried that the plan does not have at its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffPlan {
    /// The step's position, from 1.
    pub position: usize,
    /// What the plan has there (`None`: the plan had ended).
    pub planned: Option<PlannedStep>,
    pub attempted: PlannedStep,
}

impl fmt::Display for OffPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.planned {
            Some(p) => write!(
                f,
                "step {} is not the approved plan's: planned `{p}`, attempted `{}`; it was not run",
                self.position, self.attempted
            ),
            None => write!(
                f,
                "step {} goes beyond the approved plan ({} steps): attempted `{}`; it was not run",
                self.position,
                self.position - 1,
                self.attempted
            ),
        }
    }
}

/// The approved plan, holding one run to it: each acting step in turn.
#[derive(Debug)]
pub struct Binding {
    steps: Vec<PlannedStep>,
    next: Mutex<usize>,
}

impl Binding {
    pub fn new(plan: &Plan) -> Binding {
        Binding {
            steps: plan.steps.clone(),
            next: Mutex::new(0),
        }
    }

    /// Whether `attempted` (redacted as the plan is) is the plan's next step. A step that
    /// is off plan does not advance the plan: the run stops there.
    pub fn check(&self, attempted: &PlannedStep) -> Result<(), Box<OffPlan>> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let planned = self.steps.get(*next);
        if planned == Some(attempted) {
            *next += 1;
            return Ok(());
        }
        Err(Box::new(OffPlan {
            position: *next + 1,
            planned: planned.cloned(),
            attempted: attempted.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn plan(steps: Vec<PlannedStep>) -> Plan {
        Plan {
            runbook: "fix.rhai".into(),
            sha256: "ab".into(),
            steps,
            truncated: false,
            end: PlanEnd::Completed,
        }
    }

    #[test]
    fn the_run_follows_the_plan_in_order() {
        let restart = PlannedStep::exec("systemctl", &args(&["restart", "nginx"]));
        let ping = PlannedStep::http("get", "http://web1/health", "");
        let b = Binding::new(&plan(vec![restart.clone(), ping.clone()]));
        assert_eq!(b.check(&restart), Ok(()));
        assert_eq!(
            b.check(&PlannedStep::http("GET", "http://web1/health", "")),
            Ok(())
        );
        // Beyond the plan.
        let more = b.check(&restart).unwrap_err();
        assert_eq!(more.position, 3);
        assert_eq!(more.planned, None);
        assert_eq!(
            more.to_string(),
            "step 3 goes beyond the approved plan (2 steps): attempted `exec systemctl restart nginx`; it was not run"
        );
    }

    #[test]
    fn another_program_argument_url_or_body_is_off_plan() {
        let planned = vec![
            PlannedStep::exec("systemctl", &args(&["restart", "nginx"])),
            PlannedStep::http("POST", "http://lb/drain", "{\"host\":\"web1\"}"),
        ];
        let cases = [
            PlannedStep::exec("systemctl", &args(&["restart", "postgres"])),
            PlannedStep::exec("systemctl", &args(&["restart", "nginx", "--force"])),
            PlannedStep::exec("systemctl", &args(&["restart nginx"])),
            PlannedStep::exec("reboot", &[]),
            PlannedStep::http("POST", "http://lb/drain", ""),
        ];
        for attempted in cases {
            let b = Binding::new(&plan(planned.clone()));
            let off = b.check(&attempted).unwrap_err();
            assert_eq!(off.position, 1);
            assert_eq!(off.planned.as_ref(), Some(&planned[0]));
            // Refused once, refused again: an off-plan step does not move the plan on.
            assert!(b.check(&attempted).is_err());
        }
        let b = Binding::new(&plan(planned.clone()));
        b.check(&planned[0]).unwrap();
        let off = b
            .check(&PlannedStep::http(
                "POST",
                "http://lb/drain",
                "{\"host\":\"web2\"}",
            ))
            .unwrap_err();
        assert_eq!(
            off.to_string(),
            "step 2 is not the approved plan's: planned `http POST http://lb/drain body \"{\\\"host\\\":\\\"web1\\\"}\"`, attempted `http POST http://lb/drain body \"{\\\"host\\\":\\\"web2\\\"}\"`; it was not run"
        );
    }

    #[test]
    fn arguments_cannot_pass_for_others_when_shown() {
        let one = PlannedStep::exec("echo", &args(&["a b"]));
        let two = PlannedStep::exec("echo", &args(&["a", "b"]));
        assert_ne!(one.to_string(), two.to_string());
        assert_eq!(one.to_string(), "exec echo \"a b\"");
        assert_eq!(
            PlannedStep::exec("echo", &args(&["x\ny"])).to_string(),
            "exec echo \"x\\ny\""
        );
    }

    #[test]
    fn plans_round_trip_as_stored() {
        let p = Plan {
            end: PlanEnd::Stopped {
                reason: "requested".into(),
                message: "no".into(),
            },
            truncated: true,
            ..plan(vec![
                PlannedStep::exec("x", &args(&["1"])),
                PlannedStep::silence("30m", "fixing"),
            ])
        };
        assert_eq!(Plan::from_json(&p.to_json()), Ok(p.clone()));
        assert_eq!(p.digest().len(), 64);
        assert!(Plan::from_json("{\"runbook\": 1}").is_err());
        let lines = p.lines();
        assert_eq!(lines[0], "1. exec x 1");
        assert_eq!(lines[1], "2. silence 30m fixing");
        assert!(lines[3].contains("stopped (requested): no"), "{lines:?}");
    }

    #[test]
    fn redaction_applies_to_every_text() {
        let s = PlannedStep::http("POST", "http://x/?t=SECRET", "SECRET");
        let r = s.map_text(|t| t.replace("SECRET", "<redacted:T>"));
        assert_eq!(
            r,
            PlannedStep::http("POST", "http://x/?t=<redacted:T>", "<redacted:T>")
        );
    }
}
