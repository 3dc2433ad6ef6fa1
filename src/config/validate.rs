//! Phase 2: from the raw file (`raw`) to the typed [`Config`].
//!
//! Every string is `${ENV}`-expanded first, then parsed and checked. Each
//! problem is recorded with its position and dotted key, and validation goes
//! on, so that one run reports every problem in the file; they are sorted
//! into file order at the end. A value that is wrong is replaced by its
//! default (or left out) so that the checks after it can still run; the
//! resulting `Config` is only returned when nothing was wrong.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::expand::{expand, ExpandError};
use super::raw::{
    Integer, RawBreaker, RawChannel, RawConfig, RawEscalation, RawLimits, RawRoute, RawRunbooks,
    RawServer, RawService, RawSize, RawStore, RawTier, RawWindow, Text,
};
use super::units::{parse_delay, parse_duration, parse_rate, parse_size, size_from_bytes};
use super::{
    is_identifier, redact_url_password, BreakerConfig, ChannelConfig, ChannelKind, Config,
    ConfigError, ConfigErrors, EscalationConfig, LimitsConfig, Location, RouteConfig,
    RunbookTarget, RunbooksConfig, ServerConfig, ServiceConfig, StoreConfig, WindowAction,
    WindowConfig, DEFAULT_BODY_LIMIT, DEFAULT_LISTEN, DEFAULT_MAX_CONCURRENT, DEFAULT_MAX_QUEUED,
    DEFAULT_PAGERDUTY_URL, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RUNBOOKS_DIR, DEFAULT_RUNBOOK_TIMEOUT,
    DEFAULT_SERVICE_TIMEOUT, DEFAULT_STORE_URL, DEFAULT_STORM_WINDOW, DEFAULT_VERIFY_FOR,
};
use super::{
    Policy, Purpose, RetryConfig, SmtpTls, Tier, VerifyMode, DEFAULT_CHANNEL_TIMEOUT,
    DEFAULT_PAGERDUTY_SEVERITY, PAGERDUTY_SEVERITIES,
};
use crate::routing::matcher::parse_matchers;

/// Alertmanager's default `group_interval`: how long it waits before it tells a receiver
/// that an alert of a group already notified changed (resolved, for one).
const AM_DEFAULT_GROUP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Validates `raw`, parsed from `text`, the contents of `source`.
pub(crate) fn validate(
    source: &Path,
    text: &str,
    raw: &RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    purpose: Purpose,
) -> Result<Config, ConfigErrors> {
    let mut validator = Validator {
        source,
        text,
        env,
        purpose,
        errors: Vec::new(),
        warnings: Vec::new(),
        channel_names: UniqueNames::default(),
        has_alertmanager: raw.alertmanager.as_ref().is_some_and(|a| a.url.is_some()),
        default_tiers: Vec::new(),
    };
    // Channels first: routes' tiers name them.
    let escalation = validator.escalation(&raw.escalation);
    let mut config = Config {
        source: source.to_path_buf(),
        server: validator.server(&raw.server),
        store: validator.store(&raw.store),
        runbooks: validator.runbooks(&raw.runbooks),
        limits: validator.limits(&raw.limits),
        routes: validator.routes(&raw.routes),
        escalation,
        alertmanager: raw
            .alertmanager
            .as_ref()
            .and_then(|s| validator.service("alertmanager", s)),
        prometheus: raw
            .prometheus
            .as_ref()
            .and_then(|s| validator.service("prometheus", s)),
        warnings: Vec::new(),
    };
    validator.everyone_reaches_someone(raw, &config);
    config.warnings = validator.warnings;
    let mut errors = validator.errors;
    if errors.is_empty() {
        Ok(config)
    } else {
        // Stable: errors at the same place keep the order they were found in.
        errors.sort_by_key(|error| error.location);
        Err(ConfigErrors(errors))
    }
}

/// Walks the raw configuration, collecting errors.
struct Validator<'a> {
    source: &'a Path,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// What the config is for: which unset secrets are fine.
    purpose: Purpose,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    /// Every named escalation channel (known once `escalation` ran).
    channel_names: UniqueNames,
    /// Whether `[alertmanager] url` is set (for `verify = "alertmanager"`).
    has_alertmanager: bool,
    /// The default policy's tiers (known once `escalation` ran).
    default_tiers: Vec<Tier>,
}

impl Validator<'_> {
    // ----- sections -----

    fn server(&mut self, raw: &RawServer) -> ServerConfig {
        ServerConfig {
            listen: self.optional(
                "server.listen",
                raw.listen.as_ref(),
                DEFAULT_LISTEN,
                parse_listen_address,
            ),
            webhook_token: self.token("server.webhook_token", raw.webhook_token.as_ref()),
            api_token: self.token("server.api_token", raw.api_token.as_ref()),
            body_limit: match &raw.body_limit {
                Some(size) => self.size("server.body_limit", size),
                None => DEFAULT_BODY_LIMIT,
            },
            request_timeout: self.optional(
                "server.request_timeout",
                raw.request_timeout.as_ref(),
                DEFAULT_REQUEST_TIMEOUT,
                parse_duration,
            ),
            external_url: raw.external_url.as_ref().and_then(|url| {
                self.parse("server.external_url", url, check_http_url)
                    .map(|url| url.trim_end_matches('/').to_owned())
            }),
        }
    }

    fn store(&mut self, raw: &RawStore) -> StoreConfig {
        let url = self.optional(
            "store.url",
            raw.url.as_ref(),
            DEFAULT_STORE_URL.to_owned(),
            check_store_url,
        );
        let d = StoreConfig::default();
        StoreConfig {
            url,
            lease: self.optional("store.lease", raw.lease.as_ref(), d.lease, parse_duration),
            statement_timeout: self.optional(
                "store.statement_timeout",
                raw.statement_timeout.as_ref(),
                d.statement_timeout,
                parse_duration,
            ),
            pool_size: raw
                .pool_size
                .as_ref()
                .and_then(|value| self.positive::<u32>("store.pool_size", value))
                .unwrap_or(d.pool_size),
        }
    }

    fn runbooks(&mut self, raw: &RawRunbooks) -> RunbooksConfig {
        let dir = self.optional(
            "runbooks.dir",
            raw.dir.as_ref(),
            PathBuf::from(DEFAULT_RUNBOOKS_DIR),
            |text| match text {
                "" => Err("must not be empty".to_owned()),
                _ => Ok(PathBuf::from(text)),
            },
        );
        let allowed_commands = self.list(
            "runbooks.allowed_commands",
            &raw.allowed_commands,
            |command| {
                if command.is_empty() {
                    Err("must not be empty".to_owned())
                } else if command.contains('\0') {
                    Err(format!(
                        "invalid command {command:?}: contains a NUL character"
                    ))
                } else {
                    Ok(command.to_owned())
                }
            },
        );
        let timeout = self.optional(
            "runbooks.timeout",
            raw.timeout.as_ref(),
            DEFAULT_RUNBOOK_TIMEOUT,
            parse_duration,
        );
        let d = RunbooksConfig::default();
        let step_timeout = self.optional(
            "runbooks.step_timeout",
            raw.step_timeout.as_ref(),
            d.step_timeout,
            parse_duration,
        );
        let http_timeout = self.optional(
            "runbooks.http_timeout",
            raw.http_timeout.as_ref(),
            d.http_timeout,
            parse_duration,
        );
        let pass_env = if raw.pass_env.is_empty() {
            d.pass_env.clone()
        } else {
            self.list("runbooks.pass_env", &raw.pass_env, |name| {
                if name.is_empty() || name.contains(['=', '\0']) {
                    Err(format!("invalid environment variable name {name:?}"))
                } else {
                    Ok(name.to_owned())
                }
            })
        };
        let mut secrets = Vec::new();
        for (name, value) in &raw.secrets {
            let key = format!("runbooks.secrets.{name}");
            if !is_identifier(name) {
                self.error(
                    &key,
                    value.span(),
                    format!("invalid secret name {name:?}: use letters, digits and _"),
                );
                continue;
            }
            if let Some(v) = self.string(&key, value) {
                secrets.push((name.clone(), v));
            }
        }
        let http_allowed_hosts = self.list(
            "runbooks.http_allowed_hosts",
            &raw.http_allowed_hosts,
            |h| {
                if h.is_empty() || h.contains(['/', ' ', '\0']) {
                    Err(format!(
                        "invalid host {h:?}: write a host name, optionally with :port"
                    ))
                } else {
                    Ok(h.to_ascii_lowercase())
                }
            },
        );
        RunbooksConfig {
            dir,
            allowed_commands,
            timeout,
            dry_run: raw.dry_run,
            step_timeout,
            exec_path: self.optional("runbooks.exec_path", raw.exec_path.as_ref(), d.exec_path.clone(), |p| {
                if p.split(':').any(|d| !d.starts_with('/')) {
                    Err(format!("invalid search path {p:?}: a colon-separated list of absolute directories"))
                } else {
                    Ok(p.to_owned())
                }
            }),
            output_limit: self.optional_size(
                "runbooks.output_limit",
                raw.output_limit.as_ref(),
                d.output_limit,
            ),
            pass_env,
            secrets,
            http_timeout,
            http_max_body: self.optional_size(
                "runbooks.http_max_body",
                raw.http_max_body.as_ref(),
                d.http_max_body,
            ),
            http_allowed_hosts,
            max_operations: self.optional_positive(
                "runbooks.max_operations",
                raw.max_operations.as_ref(),
                d.max_operations,
            ),
            max_call_depth: self.optional_positive(
                "runbooks.max_call_depth",
                raw.max_call_depth.as_ref(),
                d.max_call_depth,
            ),
            max_expr_depth: self.optional_positive(
                "runbooks.max_expr_depth",
                raw.max_expr_depth.as_ref(),
                d.max_expr_depth,
            ),
            max_string_size: self.optional_size(
                "runbooks.max_string_size",
                raw.max_string_size.as_ref(),
                d.max_string_size,
            ),
            max_array_size: self.optional_positive(
                "runbooks.max_array_size",
                raw.max_array_size.as_ref(),
                d.max_array_size,
            ),
            max_map_size: self.optional_positive(
                "runbooks.max_map_size",
                raw.max_map_size.as_ref(),
                d.max_map_size,
            ),
        }
    }

    fn service(&mut self, section: &str, raw: &RawService) -> Option<ServiceConfig> {
        let Some(url) = raw.url.as_ref() else {
            // An empty section (or only a timeout) leaves the service off.
            return None;
        };
        let url = self.parse(&format!("{section}.url"), url, check_http_url)?;
        let timeout = self.optional(
            &format!("{section}.timeout"),
            raw.timeout.as_ref(),
            DEFAULT_SERVICE_TIMEOUT,
            parse_duration,
        );
        Some(ServiceConfig {
            url: url.trim_end_matches('/').to_owned(),
            timeout,
        })
    }

    fn optional_size(
        &mut self,
        key: &str,
        value: Option<&Spanned<RawSize>>,
        default: usize,
    ) -> usize {
        match value {
            Some(v) => self.size(key, v),
            None => default,
        }
    }

    fn optional_positive<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        value: Option<&Spanned<Integer>>,
        default: T,
    ) -> T {
        value.and_then(|v| self.positive(key, v)).unwrap_or(default)
    }

    fn limits(&mut self, raw: &RawLimits) -> LimitsConfig {
        LimitsConfig {
            max_concurrent: raw
                .max_concurrent
                .as_ref()
                .and_then(|value| self.positive("limits.max_concurrent", value))
                .unwrap_or(DEFAULT_MAX_CONCURRENT),
            rate: raw
                .rate
                .as_ref()
                .and_then(|rate| self.parse("limits.rate", rate, parse_rate)),
            enabled: raw.enabled.unwrap_or(true),
            max_queued: raw
                .max_queued
                .as_ref()
                .and_then(|value| self.positive("limits.max_queued", value))
                .unwrap_or(DEFAULT_MAX_QUEUED),
            exec_rate: raw
                .exec_rate
                .as_ref()
                .and_then(|rate| self.parse("limits.exec_rate", rate, parse_rate)),
            http_rate: raw
                .http_rate
                .as_ref()
                .and_then(|rate| self.parse("limits.http_rate", rate, parse_rate)),
            storm_window: self.optional(
                "limits.storm_window",
                raw.storm_window.as_ref(),
                DEFAULT_STORM_WINDOW,
                parse_duration,
            ),
        }
    }

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

    fn routes(&mut self, raw: &[Spanned<RawRoute>]) -> Vec<RouteConfig> {
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
            location: self.location(&span),
        })
    }

    /// Reports every way an escalation could reach no channel. Taking an alert without
    /// telling anyone is only ever written down: `ignore = true` on a route.
    fn everyone_reaches_someone(&mut self, raw: &RawConfig, config: &Config) {
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

    fn escalation(&mut self, raw: &RawEscalation) -> EscalationConfig {
        let mut names = UniqueNames::default();
        let mut channels = Vec::new();
        for (index, spanned) in raw.channels.iter().enumerate() {
            let prefix = format!("escalation.channels[{index}]");
            let channel = spanned.get_ref();
            let name = match &channel.name {
                Some(name) => {
                    self.unique_name(&format!("{prefix}.name"), name, "channel", &mut names)
                }
                None => {
                    self.error(&prefix, spanned.span(), "missing required key \"name\"");
                    None
                }
            };
            let kind = self.channel_kind(&prefix, spanned.span(), channel);
            let timeout = self.optional(
                &format!("{prefix}.timeout"),
                channel.timeout.as_ref(),
                DEFAULT_CHANNEL_TIMEOUT,
                parse_duration,
            );
            if let (Some(name), Some(kind)) = (name, kind) {
                channels.push(ChannelConfig {
                    name,
                    kind,
                    timeout,
                    location: self.location(&spanned.span()),
                });
            }
        }
        // Checked against every named channel, even one with other errors,
        // so that a mistake in a channel is not reported twice.
        let raw_notify: &[Text] = raw.notify.as_ref().map_or(&[], |n| n.get_ref());
        let notify = self.list("escalation.notify", raw_notify, |name| {
            check_channel(&names, name)
        });
        self.channel_names = names;
        let tiers = match &raw.tiers {
            Some(tiers) => {
                if !raw_notify.is_empty() {
                    self.error(
                        "escalation.tiers",
                        tiers.span(),
                        "set either \"notify\" (one tier, at once) or \"tiers\", not both",
                    );
                }
                self.tiers("escalation.tiers", tiers)
            }
            None if notify.is_empty() => Vec::new(),
            None => vec![Tier {
                after: std::time::Duration::ZERO,
                notify: notify.clone(),
            }],
        };
        self.default_tiers = tiers.clone();
        let renotify = raw
            .renotify
            .as_ref()
            .and_then(|text| self.parse("escalation.renotify", text, parse_duration));
        let d = RetryConfig::default();
        let retry = RetryConfig {
            initial: self.optional(
                "escalation.retry_initial",
                raw.retry_initial.as_ref(),
                d.initial,
                parse_duration,
            ),
            max: self.optional(
                "escalation.retry_max",
                raw.retry_max.as_ref(),
                d.max,
                parse_duration,
            ),
            attempts: self.optional_positive(
                "escalation.max_attempts",
                raw.max_attempts.as_ref(),
                d.attempts,
            ),
            fall_through_after: self.optional_positive(
                "escalation.fall_through_after",
                raw.fall_through_after.as_ref(),
                d.fall_through_after,
            ),
        };
        EscalationConfig {
            notify,
            channels,
            policy: Policy { tiers, renotify },
            retry,
        }
    }

    /// An escalation policy's tiers: each names known channels, in order of `after`.
    fn tiers(&mut self, key: &str, raw: &Spanned<Vec<Spanned<RawTier>>>) -> Vec<Tier> {
        let mut tiers: Vec<Tier> = Vec::new();
        for (index, spanned) in raw.get_ref().iter().enumerate() {
            let prefix = format!("{key}[{index}]");
            let tier = spanned.get_ref();
            let after = match &tier.after {
                Some(after) => self.parse(&format!("{prefix}.after"), after, parse_delay),
                None => {
                    self.error(&prefix, spanned.span(), "missing required key \"after\"");
                    None
                }
            };
            if tier.notify.is_empty() {
                self.error(
                    &prefix,
                    spanned.span(),
                    "\"notify\" must name at least one channel",
                );
            }
            let names = std::mem::take(&mut self.channel_names);
            let notify = self.list(&format!("{prefix}.notify"), &tier.notify, |name| {
                check_channel(&names, name)
            });
            self.channel_names = names;
            let Some(after) = after else { continue };
            if let Some(previous) = tiers.last().filter(|t| t.after > after) {
                self.error(
                    &format!("{prefix}.after"),
                    tier.after
                        .as_ref()
                        .map(Spanned::span)
                        .unwrap_or(spanned.span()),
                    format!(
                        "tiers must be in order of \"after\": {} comes after a tier at {}",
                        humantime::format_duration(after),
                        humantime::format_duration(previous.after)
                    ),
                );
            }
            tiers.push(Tier { after, notify });
        }
        tiers
    }

    /// A channel's type and settings. Keys that the type does not allow are
    /// reported, as are the ones it requires and are missing.
    fn channel_kind(
        &mut self,
        prefix: &str,
        span: Range<usize>,
        raw: &RawChannel,
    ) -> Option<ChannelKind> {
        let Some(type_text) = &raw.kind else {
            self.error(
                prefix,
                span,
                "missing required key \"type\" (email, webhook, slack, pagerduty or file)",
            );
            return None;
        };
        let type_key = format!("{prefix}.type");
        let type_name = self.string(&type_key, type_text)?;
        let Some(channel_type) = ChannelType::parse(&type_name) else {
            self.error(
                &type_key,
                type_text.span(),
                format!(
                    "unknown channel type {type_name:?} (use email, webhook, slack, pagerduty or file)"
                ),
            );
            return None;
        };

        let allowed = channel_type.allowed_keys();
        let present = [
            ("smtp", raw.smtp.as_ref().map(Spanned::span)),
            ("from", raw.from.as_ref().map(Spanned::span)),
            ("to", raw.to.as_ref().map(Spanned::span)),
            ("url", raw.url.as_ref().map(Spanned::span)),
            ("routing_key", raw.routing_key.as_ref().map(Spanned::span)),
            ("tls", raw.tls.as_ref().map(Spanned::span)),
            ("username", raw.username.as_ref().map(Spanned::span)),
            ("password", raw.password.as_ref().map(Spanned::span)),
            (
                "default_severity",
                raw.default_severity.as_ref().map(Spanned::span),
            ),
            ("path", raw.path.as_ref().map(Spanned::span)),
        ];
        let mut misplaced = false;
        for (key, key_span) in present {
            if let Some(key_span) = key_span {
                if !allowed.contains(&key) {
                    misplaced = true;
                    self.error(
                        &format!("{prefix}.{key}"),
                        key_span,
                        format!(
                            "not allowed for a channel of type {type_name:?} (allowed: {})",
                            allowed.join(", ")
                        ),
                    );
                }
            }
        }

        let table = ChannelTable {
            prefix,
            span,
            type_name: &type_name,
        };
        let kind = match channel_type {
            ChannelType::Email => self.email_channel(&table, raw),
            ChannelType::Webhook => self
                .http_url(&table, raw)
                .map(|url| ChannelKind::Webhook { url }),
            ChannelType::Slack => self
                .http_url(&table, raw)
                .map(|url| ChannelKind::Slack { url }),
            ChannelType::PagerDuty => self.pagerduty_channel(&table, raw),
            ChannelType::File => self
                .required(&table, "path", raw.path.as_ref())
                .and_then(|path| {
                    self.parse(&table.key("path"), path, |path| match path {
                        "" => Err("must not be empty".to_owned()),
                        p if p.contains('\0') => {
                            Err(format!("invalid path {p:?}: contains a NUL character"))
                        }
                        p => Ok(PathBuf::from(p)),
                    })
                })
                .map(|path| ChannelKind::File { path }),
        };
        kind.filter(|_| !misplaced)
    }

    fn email_channel(&mut self, table: &ChannelTable, raw: &RawChannel) -> Option<ChannelKind> {
        let smtp = self
            .required(table, "smtp", raw.smtp.as_ref())
            .and_then(|smtp| self.parse(&table.key("smtp"), smtp, check_smtp_address));
        let from = self
            .required(table, "from", raw.from.as_ref())
            .and_then(|from| self.parse(&table.key("from"), from, check_email_address));
        let to = self.required(table, "to", raw.to.as_ref()).and_then(|to| {
            let addresses = to.get_ref();
            if addresses.is_empty() {
                self.error(
                    &table.key("to"),
                    to.span(),
                    "must list at least one address",
                );
                return None;
            }
            let checked = self.list(&table.key("to"), addresses, check_email_address);
            (checked.len() == addresses.len()).then_some(checked)
        });
        let tls = self.optional(
            &table.key("tls"),
            raw.tls.as_ref(),
            SmtpTls::default(),
            |tls| match tls {
                "none" => Ok(SmtpTls::None),
                "opportunistic" => Ok(SmtpTls::Opportunistic),
                "starttls" => Ok(SmtpTls::StartTls),
                "tls" => Ok(SmtpTls::Tls),
                other => Err(format!(
                    "unknown tls mode {other:?} (use none, opportunistic, starttls or tls)"
                )),
            },
        );
        let username = raw
            .username
            .as_ref()
            .and_then(|u| self.string(&table.key("username"), u));
        let password = raw
            .password
            .as_ref()
            .and_then(|p| self.string(&table.key("password"), p));
        let auth = match (username, password) {
            (Some(user), Some(password)) if !user.is_empty() => Some((user, password)),
            // An empty user (an unset `${SMTP_USER:-}`) means no login.
            (Some(user), _) if user.is_empty() => None,
            (None, None) => None,
            _ => {
                self.error(
                    table.prefix,
                    table.span.clone(),
                    "set both \"username\" and \"password\", or neither",
                );
                None
            }
        };
        Some(ChannelKind::Email {
            smtp: smtp?,
            from: from?,
            to: to?,
            tls,
            auth,
        })
    }

    /// The required `url` of a webhook or slack channel.
    fn http_url(&mut self, table: &ChannelTable, raw: &RawChannel) -> Option<String> {
        let url = self.required(table, "url", raw.url.as_ref())?;
        self.parse(&table.key("url"), url, check_http_url)
    }

    fn pagerduty_channel(&mut self, table: &ChannelTable, raw: &RawChannel) -> Option<ChannelKind> {
        let routing_key = self
            .required(table, "routing_key", raw.routing_key.as_ref())
            .and_then(|key| {
                self.parse(&table.key("routing_key"), key, |key| match key {
                    "" => Err("must not be empty".to_owned()),
                    _ => Ok(key.to_owned()),
                })
            });
        let url = match &raw.url {
            Some(url) => self.parse(&table.key("url"), url, check_http_url),
            None => Some(DEFAULT_PAGERDUTY_URL.to_owned()),
        };
        let default_severity = self.optional(
            &table.key("default_severity"),
            raw.default_severity.as_ref(),
            DEFAULT_PAGERDUTY_SEVERITY.to_owned(),
            |severity| {
                if PAGERDUTY_SEVERITIES.contains(&severity) {
                    Ok(severity.to_owned())
                } else {
                    Err(format!(
                        "unknown severity {severity:?} (use critical, error, warning or info)"
                    ))
                }
            },
        );
        Some(ChannelKind::PagerDuty {
            routing_key: routing_key?,
            url: url?,
            default_severity,
        })
    }

    /// `value`, or `None` after reporting that the channel lacks `key`.
    fn required<'r, T>(
        &mut self,
        table: &ChannelTable,
        key: &str,
        value: Option<&'r Spanned<T>>,
    ) -> Option<&'r Spanned<T>> {
        if value.is_none() {
            self.error(
                table.prefix,
                table.span.clone(),
                format!(
                    "missing required key {key:?} for a channel of type {:?}",
                    table.type_name
                ),
            );
        }
        value
    }

    /// A route's or channel's name: not empty, and not used before.
    fn unique_name(
        &mut self,
        key: &str,
        name: &Text,
        what: &str,
        names: &mut UniqueNames,
    ) -> Option<String> {
        let checked = self.parse(key, name, |name| match name {
            "" => Err("must not be empty".to_owned()),
            _ => Ok(name.to_owned()),
        })?;
        let location = self.location(&name.span());
        if let Some(first) = names.first_use(&checked, location) {
            self.error(
                key,
                name.span(),
                format!(
                    "duplicate {what} name {checked:?} (first used on line {})",
                    first.line
                ),
            );
        }
        Some(checked)
    }

    // ----- values -----

    /// A secret: `None` when absent or empty after expansion.
    fn token(&mut self, key: &str, value: Option<&Text>) -> Option<String> {
        let token = self.string(key, value?)?;
        (!token.is_empty()).then_some(token)
    }

    fn size(&mut self, key: &str, value: &Spanned<RawSize>) -> usize {
        let checked = match value.get_ref() {
            RawSize::Bytes(bytes) => size_from_bytes(*bytes),
            RawSize::Text(text) => match self.expand(key, value.span(), text) {
                Some(text) => parse_size(&text),
                None => return DEFAULT_BODY_LIMIT,
            },
        };
        checked.unwrap_or_else(|message| {
            self.error(key, value.span(), message);
            DEFAULT_BODY_LIMIT
        })
    }

    /// An integer of at least 1 that fits `T`.
    fn positive<T: TryFrom<i64>>(&mut self, key: &str, value: &Spanned<Integer>) -> Option<T> {
        let Integer(number) = *value.get_ref();
        let checked = if number < 1 {
            Err(format!("must be at least 1, not {number}"))
        } else {
            T::try_from(number).map_err(|_| format!("{number} is too large"))
        };
        checked
            .map_err(|message| self.error(key, value.span(), message))
            .ok()
    }

    /// `value` expanded and converted with `parse`, or `default` when it is
    /// absent or wrong.
    fn optional<T>(
        &mut self,
        key: &str,
        value: Option<&Text>,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        value
            .and_then(|value| self.parse(key, value, parse))
            .unwrap_or(default)
    }

    /// Each element of an array, expanded and converted with `parse`; the
    /// wrong ones are reported (as `key[index]`) and left out.
    fn list<T>(
        &mut self,
        key: &str,
        values: &[Text],
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        values
            .iter()
            .enumerate()
            .filter_map(|(index, value)| self.parse(&format!("{key}[{index}]"), value, &parse))
            .collect()
    }

    /// `value` expanded and converted with `parse`.
    fn parse<T>(
        &mut self,
        key: &str,
        value: &Text,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let expanded = self.string(key, value)?;
        parse(&expanded)
            .map_err(|message| self.error(key, value.span(), message))
            .ok()
    }

    /// `value` expanded.
    fn string(&mut self, key: &str, value: &Text) -> Option<String> {
        self.expand(key, value.span(), value.get_ref())
    }

    /// `text`, found at `span`, expanded.
    fn expand(&mut self, key: &str, span: Range<usize>, text: &str) -> Option<String> {
        match expand(text, self.env) {
            Ok(expanded) => Some(expanded),
            // A secret this purpose does not use: left out, without complaint.
            Err(ExpandError::Unset(_)) if self.purpose.may_leave_unset(key) => None,
            Err(error) => {
                self.error(key, span, error.to_string());
                None
            }
        }
    }

    // ----- reporting -----

    fn location(&self, span: &Range<usize>) -> Location {
        Location::from_offset(self.text, span.start)
    }

    fn error(&mut self, key: &str, span: Range<usize>, message: impl Into<String>) {
        let location = self.location(&span);
        self.error_at(key, Some(location), message);
    }

    fn error_at(&mut self, key: &str, location: Option<Location>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.source.to_path_buf(),
            location,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn warning(&mut self, key: &str, span: Range<usize>, message: impl Into<String>) {
        let location = self.location(&span);
        self.warnings.push(ConfigError {
            file: self.source.to_path_buf(),
            location: Some(location),
            key: key.to_owned(),
            message: message.into(),
        });
    }
}

/// The names seen so far, and where each was first used.
#[derive(Default)]
struct UniqueNames(HashMap<String, Location>);

impl UniqueNames {
    /// Records `name` as used at `location`, unless it was used before:
    /// then gives where it was first used.
    fn first_use(&mut self, name: &str, location: Location) -> Option<Location> {
        match self.0.get(name) {
            Some(first) => Some(*first),
            None => {
                self.0.insert(name.to_owned(), location);
                None
            }
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// The channel types and the keys each allows besides `name` and `type`.
#[derive(Debug, Clone, Copy)]
enum ChannelType {
    Email,
    Webhook,
    Slack,
    PagerDuty,
    File,
}

impl ChannelType {
    fn parse(name: &str) -> Option<ChannelType> {
        match name {
            "email" => Some(ChannelType::Email),
            "webhook" => Some(ChannelType::Webhook),
            "slack" => Some(ChannelType::Slack),
            "pagerduty" => Some(ChannelType::PagerDuty),
            "file" => Some(ChannelType::File),
            _ => None,
        }
    }

    fn allowed_keys(self) -> &'static [&'static str] {
        match self {
            ChannelType::Email => &["smtp", "from", "to", "tls", "username", "password"],
            ChannelType::Webhook | ChannelType::Slack => &["url"],
            ChannelType::PagerDuty => &["routing_key", "url", "default_severity"],
            ChannelType::File => &["path"],
        }
    }
}

/// The channel table being validated, for error reporting.
struct ChannelTable<'a> {
    /// `escalation.channels[<index>]`
    prefix: &'a str,
    /// The whole table.
    span: Range<usize>,
    /// Its `type`, as written.
    type_name: &'a str,
}

impl ChannelTable<'_> {
    /// The dotted key of one of the table's keys.
    fn key(&self, field: &str) -> String {
        format!("{}.{field}", self.prefix)
    }
}

// ----- checks of single values -----

/// A channel name that `names` defines.
fn check_channel(names: &UniqueNames, name: &str) -> Result<String, String> {
    if names.contains(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "unknown channel {name:?}: no escalation.channels entry has that name"
        ))
    }
}

/// `<ip>:<port>`; host names are not resolved.
fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("invalid listen address {text:?}: expected <ip>:<port>, like \"127.0.0.1:9095\"")
    })
}

/// `sqlite://<file>`, `postgres://...` or `postgresql://...`.
fn check_store_url(url: &str) -> Result<String, String> {
    let supported = ["sqlite://", "postgres://", "postgresql://"];
    if url == "sqlite://" {
        Err(format!(
            "invalid store URL {url:?}: missing the database file, like \"sqlite://data/medic.db\""
        ))
    } else if supported.iter().any(|scheme| url.starts_with(scheme)) {
        Ok(url.to_owned())
    } else {
        Err(format!(
            "unsupported store URL {:?}: expected sqlite://, postgres:// or postgresql://",
            redact_url_password(url)
        ))
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

/// `host:port`.
fn check_smtp_address(address: &str) -> Result<String, String> {
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(address.to_owned())
    } else {
        Err(format!(
            "invalid SMTP address {address:?}: expected <host>:<port>, like \"127.0.0.1:25\""
        ))
    }
}

fn check_email_address(address: &str) -> Result<String, String> {
    if address.contains('@') {
        Ok(address.to_owned())
    } else {
        Err(format!("invalid email address {address:?}: missing '@'"))
    }
}

fn check_http_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() => Ok(url.to_owned()),
        _ => Err(format!(
            "invalid URL {:?}: expected an http:// or https:// URL",
            redact_url_password(url)
        )),
    }
}
