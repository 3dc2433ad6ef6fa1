//! Metrics: what `/metrics` exposes, in Prometheus text format.
//!
//! Every name starts with `medic_`; labels are low-cardinality (an outcome, a status, a
//! reason, a state), never an alert's fingerprint or labels. Other modules get the handles
//! they update (cheap clones) and never touch the registry. What automation achieved
//! (outcomes, escalations, recovery, acks, relapses) is [`automation`]'s, counted by the store.

pub mod automation;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::guard::Limit;
use crate::incident::State;

pub use automation::AutomationMetrics;

/// How a webhook delivery can end (`medic_webhook_deliveries_total{outcome}`): 200, a 4xx
/// for the body, 401, 503.
pub const DELIVERY_OUTCOMES: [&str; 4] = ["accepted", "rejected", "unauthorized", "unavailable"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: Limit,
}

/// A limit is labelled with its name ([`Limit::as_str`]).
impl EncodeLabelValue for Limit {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// A runbook run: its route (a configured name; empty for none) and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub route: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// A configured channel's name (a handful per config).
    pub channel: String,
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

/// The store's own instruments.
#[derive(Clone)]
pub struct StoreMetrics {
    /// Seconds from the start of a group commit to its durable end.
    pub commit_seconds: Histogram,
    /// Jobs (deliveries, audit appends) committed together.
    pub batch_size: Histogram,
    /// What the committed state changes achieved, counted after each commit.
    pub automation: AutomationMetrics,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            commit_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 14)),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            automation: AutomationMetrics::default(),
        }
    }
}

/// Every instrument medic exposes, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    /// Webhook deliveries by outcome: accepted, rejected, unauthorized, unavailable.
    pub deliveries: Family<OutcomeLabel, Counter>,
    /// Alerts received in accepted deliveries, by status.
    pub alerts_received: Family<StatusLabel, Counter>,
    /// Alerts that repeated what an incident already knew.
    pub alerts_deduplicated: Counter,
    /// Alerts older than what is known, ignored.
    pub alerts_stale: Counter,
    /// Alerts over medic's content limits: stored bounded and escalated `invalid_alert`.
    pub alerts_invalid: Counter,
    /// Deliveries refused, by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Incidents opened.
    pub incidents_opened: Counter,
    /// Incidents by state, refreshed from the store at each scrape.
    pub incidents: Family<StateLabel, Gauge>,
    /// Seconds from a delivery's arrival to its answer.
    pub webhook_seconds: Histogram,
    pub store: StoreMetrics,
    /// Runbook runs by route and how they ended: `completed`, `requeued` or the
    /// escalation reason.
    pub runs: Family<RunLabels, Counter>,
    /// Runbook runs in progress.
    pub runs_in_flight: Gauge,
    /// Seconds per runbook run.
    pub run_seconds: Histogram,
    /// Steps by kind and result.
    pub steps: Family<StepLabels, Counter>,
    /// 1 when the last config reload succeeded (or none was tried), 0 when it failed.
    pub config_reload_success: Gauge,
    /// Reloads refused.
    pub config_reload_failures: Counter,
    /// Runs and steps refused by a guard, by the limit that refused.
    pub refusals: Family<LimitLabel, Counter>,
    /// Per route: the most open of its breakers (0 closed, 1 half-open, 2 open).
    pub breaker_state: Family<RouteLabel, Gauge>,
    /// 1 while automation is paused.
    pub paused: Gauge,
    /// Notification attempts by channel, kind and result.
    pub notifications: Family<NotificationLabels, Counter>,
    /// Seconds per notification attempt.
    pub notification_seconds: Histogram,
    /// 1 for a channel whose recent attempts all failed.
    pub channel_failing: Family<ChannelLabel, Gauge>,
    /// Notifications waiting in the outbox (due or not), refreshed at each scrape.
    pub outbox_pending: Gauge,
    /// Notifications given up on, refreshed at each scrape.
    pub outbox_failed: Gauge,
    /// Seconds the oldest notification due and not yet delivered has waited (0: none),
    /// refreshed at each scrape.
    pub outbox_oldest_due_seconds: Gauge,
    /// Verifications medic ended itself, by result: `resolved` (Alertmanager's API no
    /// longer lists the alert), `still_firing`. (A resolved notification ends one in ingest.)
    pub verifications: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("medic");
        let m = Metrics {
            deliveries: Family::default(),
            alerts_received: Family::default(),
            alerts_deduplicated: Counter::default(),
            alerts_stale: Counter::default(),
            alerts_invalid: Counter::default(),
            rejected: Family::default(),
            incidents_opened: Counter::default(),
            incidents: Family::default(),
            webhook_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            store: StoreMetrics::default(),
            runs: Family::default(),
            runs_in_flight: Gauge::default(),
            run_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            steps: Family::default(),
            config_reload_success: Gauge::default(),
            config_reload_failures: Counter::default(),
            refusals: Family::default(),
            breaker_state: Family::default(),
            paused: Gauge::default(),
            notifications: Family::default(),
            notification_seconds: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
            channel_failing: Family::default(),
            outbox_pending: Gauge::default(),
            outbox_failed: Gauge::default(),
            outbox_oldest_due_seconds: Gauge::default(),
            verifications: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "guard_refusals",
            "Runbook runs and steps refused by a guard, by limit",
            m.refusals.clone(),
        );
        registry.register(
            "breaker_state",
            "Per route, the most open circuit breaker: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        registry.register("paused", "1 while automation is paused", m.paused.clone());
        m.config_reload_success.set(1);
        registry.register("runbook_runs", "Runbook runs by result", m.runs.clone());
        registry.register(
            "runbook_runs_in_flight",
            "Runbook runs in progress",
            m.runs_in_flight.clone(),
        );
        registry.register(
            "runbook_run_duration_seconds",
            "Seconds per runbook run",
            m.run_seconds.clone(),
        );
        registry.register(
            "runbook_steps",
            "Runbook steps by kind and result",
            m.steps.clone(),
        );
        registry.register(
            "config_reload_success",
            "1 if the last configuration reload succeeded, else 0",
            m.config_reload_success.clone(),
        );
        registry.register(
            "config_reload_failures",
            "Configuration reloads refused",
            m.config_reload_failures.clone(),
        );
        registry.register(
            "escalation_notifications",
            "Notification attempts by channel, kind (escalated, resolved) and result",
            m.notifications.clone(),
        );
        registry.register(
            "escalation_notification_duration_seconds",
            "Seconds per notification attempt",
            m.notification_seconds.clone(),
        );
        registry.register(
            "escalation_channel_failing",
            "1 while a channel's recent attempts all fail",
            m.channel_failing.clone(),
        );
        registry.register(
            "escalation_outbox_pending",
            "Notifications waiting in the outbox",
            m.outbox_pending.clone(),
        );
        registry.register(
            "escalation_outbox_failed",
            "Notifications given up on",
            m.outbox_failed.clone(),
        );
        registry.register(
            "escalation_outbox_oldest_due_seconds",
            "Seconds the oldest notification due and not yet delivered has waited (0: none)",
            m.outbox_oldest_due_seconds.clone(),
        );
        registry.register(
            "verifications",
            "Verifications ended by medic's own checks, by result (resolved through the Alertmanager API, still_firing)",
            m.verifications.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by outcome",
            m.deliveries.clone(),
        );
        registry.register(
            "alerts_received",
            "Alerts received in accepted deliveries, by status",
            m.alerts_received.clone(),
        );
        registry.register(
            "alerts_deduplicated",
            "Alert notifications that joined an existing incident",
            m.alerts_deduplicated.clone(),
        );
        registry.register(
            "alerts_stale",
            "Alert notifications older than what is known, ignored",
            m.alerts_stale.clone(),
        );
        registry.register(
            "alerts_invalid",
            "Alerts over medic's content limits, stored bounded and escalated invalid_alert",
            m.alerts_invalid.clone(),
        );
        registry.register(
            "webhook_rejected",
            "Webhook deliveries refused, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "incidents_opened",
            "Incidents opened",
            m.incidents_opened.clone(),
        );
        registry.register("incidents", "Incidents by state", m.incidents.clone());
        registry.register(
            "webhook_duration_seconds",
            "Seconds from a delivery's arrival to its answer",
            m.webhook_seconds.clone(),
        );
        registry.register(
            "store_commit_duration_seconds",
            "Seconds per durable group commit",
            m.store.commit_seconds.clone(),
        );
        registry.register(
            "store_commit_batch_size",
            "Writes committed together in one transaction",
            m.store.batch_size.clone(),
        );
        m.store.automation.register(&mut registry);
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: option_env!("MEDIC_GIT_COMMIT").unwrap_or("unknown"),
            })
            .set(1);
        registry.register(
            "build_info",
            "1, labelled with the version and commit medic was built from",
            build,
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Sets the incidents-by-state gauge from fresh counts (states absent count 0).
    pub fn set_incident_counts(&self, counts: &[(State, u64)]) {
        for state in State::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            self.incidents
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(n as i64);
        }
    }

    /// Creates, at zero, the series that the shipped alerting rules take the `increase` of
    /// (webhook outcomes, and per route of `routes`): a counter's first increment is seen
    /// only from a zero before it.
    pub fn known_routes<'a>(&self, routes: impl IntoIterator<Item = &'a str>) {
        for outcome in DELIVERY_OUTCOMES {
            let _ = self.deliveries.get_or_create(&OutcomeLabel { outcome });
        }
        self.store.automation.known_routes(routes);
    }

    pub fn set_channel_failing(&self, channel: &str, failing: bool) {
        self.channel_failing
            .get_or_create(&ChannelLabel {
                channel: channel.to_string(),
            })
            .set(i64::from(failing));
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_starts_with_medic() {
        let m = Metrics::default();
        m.deliveries
            .get_or_create(&OutcomeLabel {
                outcome: "accepted",
            })
            .inc();
        m.set_incident_counts(&[(State::Queued, 3)]);
        let text = m.render();
        assert!(
            text.contains("medic_webhook_deliveries_total{outcome=\"accepted\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("medic_incidents{state=\"queued\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("medic_incidents{state=\"resolved\"} 0"),
            "{text}"
        );
        let build = format!(
            "medic_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            option_env!("MEDIC_GIT_COMMIT").unwrap_or("unknown")
        );
        assert!(text.contains(&build), "{text}");
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.starts_with("medic_"), "{line}");
        }
    }
}
