//! Routing: which runbook, if any, answers an alert.
//!
//! Routes are tried in config order and the first whose matchers all match wins, as in
//! Alertmanager. A route names its runbook, or lets the alert name it in an annotation
//! (`runbook_from = "annotation:medic_runbook"`), in which case only a runbook that exists
//! can be chosen. A route with `ignore = true` takes the alert without a runbook
//! ([`Decision::Ignore`]). Routing does no IO: it reads labels and a runbook catalog and answers.

pub mod matcher;

use std::collections::BTreeMap;

use matcher::Matcher;

/// What routing decided for one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `route` chose `runbook` (a file name in the runbook directory).
    Runbook { route: String, runbook: String },
    /// No runbook: `why` says what routing saw, for the incident's timeline.
    NoRunbook { why: String },
    /// `route` takes the alert on purpose without remediating or paging (`ignore = true`).
    Ignore { route: String },
    /// The alert breaks medic's content limits (`why` names the label and the limit): it is
    /// stored bounded, nothing is run, and it is escalated `invalid_alert`. `route` is the
    /// route its (bounded) labels matched, whose escalation policy applies.
    Invalid { route: Option<String>, why: String },
}

/// The runbook a route runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunbookTarget {
    /// `runbook = "<file>.rhai"`: a file name in `runbooks.dir`.
    File(String),
    /// `runbook_from = "annotation:<name>"`: the alert's annotation of this
    /// name gives the runbook's file name.
    Annotation(String),
    /// `ignore = true`: no runbook. The alert is taken on purpose: nothing is run and
    /// nobody is told (the incident is opened `ignored`).
    Ignore,
}

/// One route as routing sees it: the rest of a route (verification, limits, breaker...)
/// belongs to its configuration.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// All must match (empty: matches every alert).
    pub matchers: Vec<Matcher>,
    pub target: RunbookTarget,
}

/// The compiled routes, ready to answer.
#[derive(Debug, Clone, Default)]
pub struct Router {
    rules: Vec<Route>,
}

impl Router {
    /// The routes, in the order they are tried.
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Router {
        Router {
            rules: routes.into_iter().collect(),
        }
    }

    /// Routes an alert. `exists` says whether a runbook file name is loaded.
    pub fn route(
        &self,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
        exists: &dyn Fn(&str) -> bool,
    ) -> Decision {
        let mut passed_over = Vec::new();
        for rule in &self.rules {
            if !rule.matchers.iter().all(|m| m.matches(labels)) {
                continue;
            }
            match &rule.target {
                RunbookTarget::Ignore => {
                    return Decision::Ignore {
                        route: rule.name.clone(),
                    }
                }
                RunbookTarget::File(runbook) if exists(runbook) => {
                    return Decision::Runbook {
                        route: rule.name.clone(),
                        runbook: runbook.clone(),
                    }
                }
                RunbookTarget::File(runbook) => {
                    return Decision::NoRunbook {
                        why: format!(
                            "route {:?} names runbook {runbook:?}, which is not loaded",
                            rule.name
                        ),
                    }
                }
                RunbookTarget::Annotation(key) => match annotations.get(key) {
                    // Without the annotation this route does not apply; later ones may.
                    None => passed_over.push(format!(
                        "route {:?} matched but the alert has no {key:?} annotation",
                        rule.name
                    )),
                    Some(requested) => {
                        return match resolve_named(requested, exists) {
                            Some(runbook) => Decision::Runbook {
                                route: rule.name.clone(),
                                runbook,
                            },
                            None => Decision::NoRunbook {
                                why: format!(
                                    "route {:?}: annotation {key:?} names runbook {:?}, which does not exist",
                                    rule.name,
                                    shorten(requested)
                                ),
                            },
                        };
                    }
                },
            }
        }
        let mut why = String::from("no route matched the alert");
        for p in passed_over {
            why.push_str("; ");
            why.push_str(&p);
        }
        Decision::NoRunbook { why }
    }
}

/// The runbook an annotation names: its exact file name, or the name without `.rhai`.
/// Anything else (paths, empty, unknown names) chooses nothing.
fn resolve_named(requested: &str, exists: &dyn Fn(&str) -> bool) -> Option<String> {
    let requested = requested.trim();
    if requested.is_empty() || requested.contains(['/', '\\']) || requested.starts_with('.') {
        return None;
    }
    if requested.ends_with(".rhai") {
        return exists(requested).then(|| requested.to_string());
    }
    let file = format!("{requested}.rhai");
    exists(&file).then_some(file)
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(80).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route named `name` whose matchers are those of `matchers`, each one entry as in
    /// the config's `matchers = [...]`.
    fn route(name: &str, matchers: &[&str], target: RunbookTarget) -> Route {
        Route {
            name: name.into(),
            matchers: matchers
                .iter()
                .flat_map(|m| matcher::parse_matchers(m).expect("valid matchers"))
                .collect(),
            target,
        }
    }

    fn file(name: &str) -> RunbookTarget {
        RunbookTarget::File(name.into())
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const RUNBOOKS: &[&str] = &["disk_full.rhai", "restart.rhai", "catch_all.rhai"];

    fn check(
        r: &Router,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
        expected: Decision,
    ) {
        let exists = |name: &str| RUNBOOKS.contains(&name);
        assert_eq!(
            r.route(&map(labels), &map(annotations), &exists),
            expected,
            "labels={labels:?} annotations={annotations:?}"
        );
    }

    fn runbook(route: &str, runbook: &str) -> Decision {
        Decision::Runbook {
            route: route.into(),
            runbook: runbook.into(),
        }
    }

    /// Three routes: one that names its runbook, one that lets the alert name it, a fallback.
    fn routes() -> Router {
        Router::new([
            route(
                "disk",
                &[r#"alertname="DiskFull""#, r#"severity=~"warning|critical""#],
                file("disk_full.rhai"),
            ),
            route(
                "by-annotation",
                &[r#"team="db""#],
                RunbookTarget::Annotation("medic_runbook".into()),
            ),
            route(
                "fallback",
                &[r#"{env="prod", alertname!~"Watchdog|InfoInhibitor"}"#],
                file("catch_all.rhai"),
            ),
        ])
    }

    #[test]
    fn first_matching_route_wins() {
        let r = routes();
        check(
            &r,
            &[
                ("alertname", "DiskFull"),
                ("severity", "critical"),
                ("env", "prod"),
            ],
            &[],
            runbook("disk", "disk_full.rhai"),
        );
        // severity regex is anchored: "criticalish" does not match, so the fallback wins.
        check(
            &r,
            &[
                ("alertname", "DiskFull"),
                ("severity", "criticalish"),
                ("env", "prod"),
            ],
            &[],
            runbook("fallback", "catch_all.rhai"),
        );
        check(
            &r,
            &[("alertname", "Watchdog"), ("env", "prod")],
            &[],
            Decision::NoRunbook {
                why: "no route matched the alert".into(),
            },
        );
    }

    #[test]
    fn annotation_may_name_an_existing_runbook() {
        let r = routes();
        let labels = [("alertname", "PgDown"), ("team", "db")];
        check(
            &r,
            &labels,
            &[("medic_runbook", "restart.rhai")],
            runbook("by-annotation", "restart.rhai"),
        );
        check(
            &r,
            &labels,
            &[("medic_runbook", "restart")],
            runbook("by-annotation", "restart.rhai"),
        );
        for bad in [
            "../../etc/passwd",
            "nope.rhai",
            "",
            ".hidden.rhai",
            "/abs/restart.rhai",
        ] {
            let Decision::NoRunbook { why } =
                r.route(&map(&labels), &map(&[("medic_runbook", bad)]), &|n| {
                    RUNBOOKS.contains(&n)
                })
            else {
                panic!("{bad:?} must not choose a runbook");
            };
            assert!(why.contains("which does not exist"), "{why}");
        }
        // Without the annotation the route does not apply and the next is tried.
        check(
            &r,
            &[("alertname", "PgDown"), ("team", "db"), ("env", "prod")],
            &[],
            runbook("fallback", "catch_all.rhai"),
        );
        check(
            &r,
            &labels,
            &[],
            Decision::NoRunbook {
                why: "no route matched the alert; route \"by-annotation\" matched but the alert has no \"medic_runbook\" annotation".into(),
            },
        );
    }

    #[test]
    fn missing_file_is_no_runbook() {
        let r = Router::new([route("x", &[], file("gone.rhai"))]);
        check(
            &r,
            &[("alertname", "A")],
            &[],
            Decision::NoRunbook {
                why: "route \"x\" names runbook \"gone.rhai\", which is not loaded".into(),
            },
        );
    }

    #[test]
    fn route_without_matchers_matches_everything() {
        let r = Router::new([route("routes[0]", &[], file("restart.rhai"))]);
        check(
            &r,
            &[("alertname", "Anything")],
            &[],
            runbook("routes[0]", "restart.rhai"),
        );
    }

    #[test]
    fn an_ignore_route_takes_the_alert_without_a_runbook() {
        let r = Router::new([
            route(
                "watchdog",
                &[r#"alertname="Watchdog""#],
                RunbookTarget::Ignore,
            ),
            route("routes[1]", &[], file("restart.rhai")),
        ]);
        check(
            &r,
            &[("alertname", "Watchdog")],
            &[],
            Decision::Ignore {
                route: "watchdog".into(),
            },
        );
        check(
            &r,
            &[("alertname", "ServiceDown")],
            &[],
            runbook("routes[1]", "restart.rhai"),
        );
    }
}
