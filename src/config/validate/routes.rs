//! `[[routes]]`: which alerts a route takes, what it runs, its windows and breaker,
//! and the check that every escalation reaches someone.

use std::ops::Range;

use toml::Spanned;

use super::{UniqueNames, Validator};
use crate::config::raw::{RawBreaker, RawConfig, RawRoute, RawWindow};
use crate::config::units::{parse_duration, parse_rate};
use crate::config::{
    is_identifier, BreakerConfig, Config, RouteConfig, RunbookTarget, WindowAction, WindowConfig,
    DEFAULT_VERIFY_FOR,
};
use crate::config::{Policy, VerifyMode};
use crate::routing::matcher::parse_matchers;

/// Alertmanager's default `group_interval`: how long it waits before it tells a receiver
/// that an alert of a group already notified changed (resolved, for one).
const AM_DEFAULT_GROUP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5 * 60);

impl Validator<'_> {
    fn window(&mut self, key: &str, spanned: &Spanned<RawWindow>) -> Option<WindowConfig> {
        let raw = spanned.get_ref();
        let weekdays = self.list(&format!("{key}.weekdays"), &raw.weekdays, |d| {
            d.parse::<chrono::Weekday>().map_err(|_| {
                format!("invalid weekday {d:?}: use mon, tue, wed, thu, fri, sat, sun")
            })
        });
        let clock = |text: &str| -> Result<u32, String> {
            let bad = || format!("invalid time {text:?}: expected HH:MM, 00:00 to 24:00");
            let (h, m) = text.split_once(':').ok_or_else(bad)?;
            let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if m >= 60 || h > 24 || (h == 24 && m != 0) {
                return Err(bad());
            }
            Ok(h * 60 + m)
        };
        let start = self.optional(&format!("{key}.start"), raw.start.as_ref(), 0, clock);
        let end = self.optional(&format!("{key}.end"), raw.end.as_ref(), 24 * 60, clock);
        let timezone = self.optional(&format!("{key}.timezone"), raw.timezone.as_ref(), chrono_tz::UTC, |tz| {
            tz.parse::<chrono_tz::Tz>()
                .map_err(|_| format!("unknown time zone {tz:?}: use an IANA name such as \"Europe/Berlin\" or \"UTC\""))
        });
        if start == end {
            self.error(
                key,
                spanned.span(),
                "start and end are equal: the window would be empty",
            );
            return None;
        }
        Some(WindowConfig {
            weekdays,
            start,
            end,
            timezone,
        })
    }

    pub(super) fn routes(&mut self, raw: &[Spanned<RawRoute>]) -> Vec<RouteConfig> {
        let mut names = UniqueNames::default();
        let mut routes = Vec::new();
        for (index, spanned) in raw.iter().enumerate() {
            let route = spanned.get_ref();
            let name = route
                .name
                .as_ref()
                .and_then(|name| {
                    self.unique_name(&format!("routes[{index}].name"), name, "route", &mut names)
                })
                .unwrap_or_else(|| format!("routes[{index}]"));
            if let Some(route) = self.route(index, spanned.span(), route, name) {
                routes.push(route);
            }
        }
        routes
    }

    /// One route; `None` when it names no valid runbook (already reported).
    fn route(
        &mut self,
        index: usize,
        span: Range<usize>,
        raw: &RawRoute,
        name: String,
    ) -> Option<RouteConfig> {
        let prefix = format!("routes[{index}]");
        let key = |field: &str| format!("{prefix}.{field}");

        let mut matchers = Vec::new();
        for (i, text) in raw.matchers.iter().enumerate() {
            let parsed = self.parse(&key(&format!("matchers[{i}]")), text, |text| {
                parse_matchers(text).map_err(|error| format!("invalid matcher {text:?}: {error}"))
            });
            matchers.extend(parsed.into_iter().flatten());
        }

        let ignore = raw.ignore.as_ref().is_some_and(|i| *i.get_ref());
        if ignore {
            let contradictions = [
                ("runbook", raw.runbook.as_ref().map(Spanned::span)),
                ("runbook_from", raw.runbook_from.as_ref().map(Spanned::span)),
                ("tiers", raw.tiers.as_ref().map(Spanned::span)),
                ("renotify", raw.renotify.as_ref().map(Spanned::span)),
                ("verify_for", raw.verify_for.as_ref().map(Spanned::span)),
                ("verify", raw.verify.as_ref().map(Spanned::span)),
            ];
            for (field, field_span) in contradictions {
                if let Some(field_span) = field_span {
                    self.error(
                        &key(field),
                        field_span,
                        "not allowed with ignore = true (an ignored alert runs nothing and pages nobody)",
                    );
                }
            }
        }
        let target = match (&raw.runbook, &raw.runbook_from) {
            _ if ignore => Some(RunbookTarget::Ignore),
            (Some(file), None) => self
                .parse(&key("runbook"), file, check_runbook_file)
                .map(RunbookTarget::File),
            (None, Some(from)) => self
                .parse(&key("runbook_from"), from, parse_runbook_from)
                .map(RunbookTarget::Annotation),
            (Some(_), Some(_)) => {
                self.error(
                    &prefix,
                    span.clone(),
                    "both \"runbook\" and \"runbook_from\" are set; set exactly one",
                );
                None
            }
            (None, None) => {
                self.error(
                    &prefix,
                    span.clone(),
                    "missing \"runbook\" or \"runbook_from\"; set exactly one (or ignore = true to take the alerts on purpose without a runbook)",
                );
                None
            }
        };

        let verify_for = self.optional(
            &key("verify_for"),
            raw.verify_for.as_ref(),
            DEFAULT_VERIFY_FOR,
            parse_duration,
        );
        let verify = match &raw.verify {
            None => VerifyMode::Notification,
            Some(text) => {
                let mode = self.parse(&key("verify"), text, |mode| match mode {
                    "notification" => Ok(VerifyMode::Notification),
                    "alertmanager" => Ok(VerifyMode::Alertmanager),
                    other => Err(format!(
                        "unknown verification {other:?} (use \"notification\" or \"alertmanager\")"
                    )),
                });
                if mode == Some(VerifyMode::Alertmanager) && !self.has_alertmanager {
                    self.error(
                        &key("verify"),
                        text.span(),
                        "verify = \"alertmanager\" needs [alertmanager] url",
                    );
                }
                mode.unwrap_or_default()
            }
        };
        if let Some(text) = &raw.verify_for {
            if !ignore
                && verify == VerifyMode::Notification
                && verify_for < AM_DEFAULT_GROUP_INTERVAL
            {
                self.warning(
                    &key("verify_for"),
                    text.span(),
                    format!(
                        "{} is shorter than Alertmanager's default group_interval (5m): Alertmanager tells medic that an alert resolved only at the next group_interval, so an alert the runbook fixed may be escalated still_firing; set verify_for to at least the group_interval of its Alertmanager route, or verify = \"alertmanager\" to ask Alertmanager's API",
                        humantime::format_duration(verify_for)
                    ),
                );
            }
        }
        let renotify = raw
            .renotify
            .as_ref()
            .and_then(|text| self.parse(&key("renotify"), text, parse_duration));
        if let Some(tiers) = raw.tiers.as_ref().filter(|t| t.get_ref().is_empty()) {
            self.error(
                &key("tiers"),
                tiers.span(),
                "must list at least one tier (to take alerts on purpose without telling anyone, set ignore = true)",
            );
        }
        let policy = match &raw.tiers {
            Some(tiers) => Some(Policy {
                tiers: self.tiers(&key("tiers"), tiers),
                renotify,
            }),
            // `renotify` alone repeats the default tiers.
            None => renotify.map(|renotify| Policy {
                tiers: self.default_tiers.clone(),
                renotify: Some(renotify),
            }),
        };
        let rate = raw
            .rate
            .as_ref()
            .and_then(|rate| self.parse(&key("rate"), rate, parse_rate));
        let rate_key = self.list(&key("rate_key"), &raw.rate_key, check_label_name);
        let max_in_flight = raw
            .max_in_flight
            .as_ref()
            .and_then(|value| self.positive(&key("max_in_flight"), value));
        let in_flight_key = self.list(&key("in_flight_key"), &raw.in_flight_key, check_label_name);
        let breaker = raw
            .breaker
            .as_ref()
            .and_then(|breaker| self.breaker(&key("breaker"), breaker));
        let maintenance = raw
            .maintenance
            .iter()
            .enumerate()
            .filter_map(|(i, w)| self.window(&key(&format!("maintenance[{i}]")), w))
            .collect();
        let maintenance_action = self.optional(
            &key("maintenance_action"),
            raw.maintenance_action.as_ref(),
            WindowAction::Wait,
            |a| match a {
                "wait" => Ok(WindowAction::Wait),
                "escalate" => Ok(WindowAction::Escalate),
                other => Err(format!(
                    "unknown action {other:?}: use \"wait\" or \"escalate\""
                )),
            },
        );

        let manual_minutes = raw
            .manual_minutes
            .as_ref()
            .and_then(|value| self.positive(&key("manual_minutes"), value));

        let approval = raw
            .approval
            .as_ref()
            .and_then(|a| self.approval(&key("approval"), a, raw));
        Some(RouteConfig {
            name,
            matchers,
            target: target?,
            verify_for,
            verify,
            policy,
            rate,
            rate_key,
            max_in_flight,
            in_flight_key,
            dry_run: raw.dry_run,
            idempotent: raw.idempotent,
            breaker,
            maintenance,
            maintenance_action,
            manual_minutes,
            approval,
            location: self.location(&span),
        })
    }

    /// Reports every way an escalation could reach no channel. Taking an alert without
    /// telling anyone is only ever written down: `ignore = true` on a route.
    pub(super) fn everyone_reaches_someone(&mut self, raw: &RawConfig, config: &Config) {
        let escalation = &raw.escalation;
        let notify = escalation.notify.as_ref();
        let tiers = escalation.tiers.as_ref();
        let default_names_nobody = notify.is_none_or(|n| n.get_ref().is_empty())
            && tiers.is_none_or(|t| t.get_ref().is_empty());
        // A policy that names channels with mistakes is reported where they are.
        if !default_names_nobody || !config.escalation.policy.tiers.is_empty() {
            return;
        }
        let mut users: Vec<String> = raw
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                let r = r.get_ref();
                r.tiers.is_none() && !r.ignore.as_ref().is_some_and(|i| *i.get_ref())
            })
            .map(|(index, r)| {
                let name = r.get_ref().name.as_ref();
                format!(
                    "route {:?}",
                    name.map_or_else(|| format!("routes[{index}]"), |n| n.get_ref().clone())
                )
            })
            .collect();
        let catch_all = raw.routes.iter().any(|r| {
            let r = r.get_ref();
            r.matchers.is_empty()
                && (r.runbook.is_some() || r.ignore.as_ref().is_some_and(|i| *i.get_ref()))
        });
        if !catch_all {
            users.push("alerts that no route matches".to_owned());
        }
        let Some(last) = users.pop() else { return };
        let who = match users.as_slice() {
            [] => last,
            some => format!("{} and {last}", some.join(", ")),
        };
        let message = format!(
            "the default policy names no channel, so escalations of {who} would reach nobody; name a channel in escalation.notify (or escalation.tiers), or set ignore = true on a route to take its alerts on purpose without a runbook or a page"
        );
        match (notify, tiers) {
            (Some(n), _) => self.error("escalation.notify", n.span(), message),
            (None, Some(t)) => self.error("escalation.tiers", t.span(), message),
            (None, None) => self.error_at("escalation", None, message),
        }
    }

    fn breaker(&mut self, prefix: &str, spanned: &Spanned<RawBreaker>) -> Option<BreakerConfig> {
        let raw = spanned.get_ref();
        let failures = match &raw.failures {
            Some(failures) => self.positive(&format!("{prefix}.failures"), failures),
            None => {
                self.error(prefix, spanned.span(), "missing required key \"failures\"");
                None
            }
        };
        let cooldown = match &raw.cooldown {
            Some(cooldown) => self.parse(&format!("{prefix}.cooldown"), cooldown, parse_duration),
            None => {
                self.error(prefix, spanned.span(), "missing required key \"cooldown\"");
                None
            }
        };
        let key = self.list(&format!("{prefix}.key"), &raw.key, check_label_name);
        Some(BreakerConfig {
            failures: failures?,
            cooldown: cooldown?,
            key,
            count_requested: raw.count_requested.unwrap_or(true),
        })
    }
}

/// A runbook file name: a plain `*.rhai` name inside `runbooks.dir`.
fn check_runbook_file(name: &str) -> Result<String, String> {
    let problem = if name.contains('\0') {
        "contains a NUL character"
    } else if name.contains(['/', '\\']) {
        "must be a file name in runbooks.dir, without '/' or '\\'"
    } else if name.starts_with('.') {
        "must not start with '.'"
    } else if !name.ends_with(".rhai") {
        "must end in \".rhai\""
    } else {
        return Ok(name.to_owned());
    };
    Err(format!("invalid runbook {name:?}: {problem}"))
}

/// `annotation:<name>`, giving `<name>`.
fn parse_runbook_from(text: &str) -> Result<String, String> {
    match text.strip_prefix("annotation:") {
        Some("") => Err(format!(
            "invalid runbook_from {text:?}: the annotation name is empty"
        )),
        Some(annotation) => Ok(annotation.to_owned()),
        None => Err(format!(
            "invalid runbook_from {text:?}: expected \"annotation:<name>\""
        )),
    }
}

fn check_label_name(name: &str) -> Result<String, String> {
    if is_identifier(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "invalid label name {name:?}: must match [a-zA-Z_][a-zA-Z0-9_]*"
        ))
    }
}
