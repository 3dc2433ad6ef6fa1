//! What automation achieved, as metrics: how incidents ended, why they were escalated, how
//! long recovery took, acks, relapses, and escalations that told nobody.
//!
//! The store counts these once a commit is durable, from the state changes the commit made
//! (`store/changelog.rs`): a batch that rolls back counts nothing, and each change counts
//! once, in the process (replica) that made it. Labels are a route's name (from the
//! configuration; empty for an alert no route took) and medic's own enums; never an
//! alert's name, labels or fingerprint. The methods take those enums, so no other value can
//! become a label.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::incident::{AckVia, Outcome, Reason};

/// Upper bounds of `medic_time_to_recovery_seconds`: from a fix verified in seconds to a
/// person's fix the next day.
pub const RECOVERY_BUCKETS: [f64; 15] = [
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
    43200.0, 86400.0,
];

/// Who recovered a resolved incident, for `medic_time_to_recovery_seconds{path}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecoveryPath {
    /// medic's runbook: outcome `auto_remediated`.
    Automated,
    /// A person, after medic escalated: outcome `resolved_after_escalation`.
    AfterEscalation,
}

impl RecoveryPath {
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryPath::Automated => "automated",
            RecoveryPath::AfterEscalation => "after_escalation",
        }
    }

    /// The path of an outcome; `None` for an alert that resolved before anything was done
    /// (nobody recovered it).
    pub fn of(outcome: Outcome) -> Option<RecoveryPath> {
        match outcome {
            Outcome::AutoRemediated => Some(RecoveryPath::Automated),
            Outcome::ResolvedAfterEscalation => Some(RecoveryPath::AfterEscalation),
            Outcome::ResolvedBeforeAction => None,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    route: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    route: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    route: String,
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AckLabels {
    route: String,
    via: &'static str,
}

fn recovery_histogram() -> Histogram {
    Histogram::new(RECOVERY_BUCKETS)
}

/// The instruments of what automation achieved. Cheap to clone: clones share their series.
#[derive(Clone)]
pub struct AutomationMetrics {
    resolved: Family<OutcomeLabels, Counter>,
    escalations: Family<ReasonLabels, Counter>,
    unnotified: Family<RouteLabels, Counter>,
    recovery: Family<PathLabels, Histogram, fn() -> Histogram>,
    acks: Family<AckLabels, Counter>,
    relapses: Family<RouteLabels, Counter>,
}

impl Default for AutomationMetrics {
    fn default() -> Self {
        AutomationMetrics {
            resolved: Family::default(),
            escalations: Family::default(),
            unnotified: Family::default(),
            recovery: Family::new_with_constructor(recovery_histogram),
            acks: Family::default(),
            relapses: Family::default(),
        }
    }
}

impl AutomationMetrics {
    /// Registers every instrument (under the registry's `medic` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "incidents_resolved",
            "Incidents resolved, by route and outcome (auto_remediated, resolved_after_escalation, resolved_before_action)",
            self.resolved.clone(),
        );
        registry.register(
            "escalations",
            "Incidents escalated to a person, by route and reason",
            self.escalations.clone(),
        );
        registry.register(
            "escalations_unnotified",
            "Escalations committed with no channel to tell: nobody hears of them",
            self.unnotified.clone(),
        );
        registry.register(
            "time_to_recovery_seconds",
            "Seconds from an incident's opening to its resolution, by route and who recovered it (automated, after_escalation)",
            self.recovery.clone(),
        );
        registry.register(
            "acks",
            "Escalated incidents acknowledged by a person, by route and where the ack came from",
            self.acks.clone(),
        );
        registry.register(
            "relapses",
            "Alerts firing again within limits.relapse_window after an automated fix: fixes that did not stick, by the route of the fix",
            self.relapses.clone(),
        );
    }

    /// Creates, at zero, the series of `routes` (and of no route) that alerting rules take
    /// the `increase` of: a counter's first increment is seen only from a zero before it.
    pub fn known_routes<'a>(&self, routes: impl IntoIterator<Item = &'a str>) {
        for route in std::iter::once("").chain(routes) {
            let route = route.to_string();
            let _ = self.unnotified.get_or_create(&RouteLabels {
                route: route.clone(),
            });
            let _ = self.relapses.get_or_create(&RouteLabels {
                route: route.clone(),
            });
            let _ = self.resolved.get_or_create(&OutcomeLabels {
                route,
                outcome: Outcome::AutoRemediated.as_str(),
            });
        }
    }

    /// An incident of `route` resolved with `outcome`, `open_for` after it was opened.
    pub fn resolved(&self, route: &str, outcome: Outcome, open_for: Option<Duration>) {
        self.resolved
            .get_or_create(&OutcomeLabels {
                route: route.to_string(),
                outcome: outcome.as_str(),
            })
            .inc();
        if let (Some(path), Some(open_for)) = (RecoveryPath::of(outcome), open_for) {
            self.recovery
                .get_or_create(&PathLabels {
                    route: route.to_string(),
                    path: path.as_str(),
                })
                .observe(open_for.as_secs_f64());
        }
    }

    /// An incident of `route` was escalated for `reason`; `told_nobody` when no channel
    /// was told of it.
    pub fn escalated(&self, route: &str, reason: Reason, told_nobody: bool) {
        self.escalations
            .get_or_create(&ReasonLabels {
                route: route.to_string(),
                reason: reason.as_str(),
            })
            .inc();
        if told_nobody {
            self.unnotified
                .get_or_create(&RouteLabels {
                    route: route.to_string(),
                })
                .inc();
        }
    }

    /// A person acknowledged an escalated incident of `route`, through `via`.
    pub fn acked(&self, route: &str, via: AckVia) {
        self.acks
            .get_or_create(&AckLabels {
                route: route.to_string(),
                via: via.as_str(),
            })
            .inc();
    }

    /// An alert fired again soon after `route`'s runbook fixed it.
    pub fn relapsed(&self, route: &str) {
        self.relapses
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(m: &AutomationMetrics) -> String {
        let mut registry = Registry::with_prefix("medic");
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    /// Every sample line's labels, as `name{labels}`.
    fn series(text: &str) -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.rsplit_once(' ').map_or(l, |(s, _)| s).to_string())
            .collect()
    }

    #[test]
    fn each_event_lands_in_its_series() {
        let m = AutomationMetrics::default();
        m.resolved(
            "disk",
            Outcome::AutoRemediated,
            Some(Duration::from_secs(40)),
        );
        m.resolved(
            "disk",
            Outcome::ResolvedAfterEscalation,
            Some(Duration::from_secs(4000)),
        );
        m.resolved(
            "disk",
            Outcome::ResolvedBeforeAction,
            Some(Duration::from_secs(1)),
        );
        m.escalated("disk", Reason::StepFailed, false);
        m.escalated("", Reason::NoRunbook, true);
        m.acked("disk", AckVia::Slack);
        m.relapsed("disk");
        let text = rendered(&m);
        for line in [
            r#"medic_incidents_resolved_total{route="disk",outcome="auto_remediated"} 1"#,
            r#"medic_incidents_resolved_total{route="disk",outcome="resolved_before_action"} 1"#,
            r#"medic_escalations_total{route="disk",reason="step_failed"} 1"#,
            r#"medic_escalations_total{route="",reason="no_runbook"} 1"#,
            r#"medic_escalations_unnotified_total{route=""} 1"#,
            r#"medic_acks_total{route="disk",via="slack"} 1"#,
            r#"medic_relapses_total{route="disk"} 1"#,
            r#"medic_time_to_recovery_seconds_bucket{le="30.0",route="disk",path="automated"} 0"#,
            r#"medic_time_to_recovery_seconds_bucket{le="60.0",route="disk",path="automated"} 1"#,
            r#"medic_time_to_recovery_seconds_bucket{le="3600.0",route="disk",path="after_escalation"} 0"#,
            r#"medic_time_to_recovery_seconds_bucket{le="7200.0",route="disk",path="after_escalation"} 1"#,
            r#"medic_time_to_recovery_seconds_count{route="disk",path="automated"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // An alert that resolved before any action was recovered by nobody: no path.
        assert!(!text.contains("path=\"resolved_before_action\""), "{text}");
        assert_eq!(
            text.matches("medic_time_to_recovery_seconds_count").count(),
            2,
            "{text}"
        );
        // Nothing escalated to a channel counts as unnotified.
        assert!(
            !text.contains(r#"medic_escalations_unnotified_total{route="disk"}"#),
            "{text}"
        );
    }

    /// However many alerts pass, the series are bounded by routes × enum values: an alert's
    /// content never becomes a label.
    #[test]
    fn series_stay_bounded_by_routes_and_enums() {
        let m = AutomationMetrics::default();
        let routes = ["disk", "restart", ""];
        for i in 0..3000u64 {
            let route = routes[(i % 3) as usize];
            let outcome = [
                Outcome::AutoRemediated,
                Outcome::ResolvedAfterEscalation,
                Outcome::ResolvedBeforeAction,
            ][(i % 7 % 3) as usize];
            m.resolved(route, outcome, Some(Duration::from_millis(i * 977)));
            let n = i as usize;
            m.escalated(route, Reason::ALL[n % Reason::ALL.len()], i % 13 == 0);
            m.acked(route, AckVia::ALL[n % AckVia::ALL.len()]);
            m.relapsed(route);
        }
        let text = rendered(&m);
        let all = series(&text);
        let count = |prefix: &str| all.iter().filter(|s| s.starts_with(prefix)).count();
        assert_eq!(count("medic_incidents_resolved_total{"), 3 * 3);
        assert_eq!(count("medic_escalations_total{"), 3 * Reason::ALL.len());
        assert_eq!(count("medic_escalations_unnotified_total{"), 3);
        assert_eq!(count("medic_acks_total{"), 3 * AckVia::ALL.len());
        assert_eq!(count("medic_relapses_total{"), 3);
        // Two paths per route, each with its buckets (+Inf included), a sum and a count.
        assert_eq!(
            count("medic_time_to_recovery_seconds_bucket{"),
            3 * 2 * (RECOVERY_BUCKETS.len() + 1)
        );
        for s in &all {
            let labels = s.split_once('{').map_or("", |(_, l)| l);
            for pair in labels.trim_end_matches('}').split(',') {
                let (name, value) = pair.split_once('=').unwrap();
                let value = value.trim_matches('"');
                let allowed = match name {
                    "route" => routes.contains(&value),
                    "outcome" => Outcome::parse(value).is_some(),
                    "reason" => Reason::parse(value).is_some(),
                    "via" => AckVia::parse(value).is_some(),
                    "path" => ["automated", "after_escalation"].contains(&value),
                    "le" => true,
                    other => panic!("unexpected label {other} in {s}"),
                };
                assert!(allowed, "{name}={value} in {s}");
            }
        }
    }
}
