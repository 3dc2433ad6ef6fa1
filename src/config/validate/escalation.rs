//! `[escalation]`: the channels, the default policy's tiers and the retry settings.

use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use super::{check_http_url, UniqueNames, Validator};
use crate::config::raw::{RawChannel, RawEscalation, RawTier, Text};
use crate::config::units::{parse_delay, parse_duration};
use crate::config::{ChannelConfig, ChannelKind, EscalationConfig, DEFAULT_PAGERDUTY_URL};
use crate::config::{
    Policy, RetryConfig, SmtpTls, Tier, DEFAULT_CHANNEL_TIMEOUT, DEFAULT_PAGERDUTY_SEVERITY,
    PAGERDUTY_SEVERITIES,
};

impl Validator<'_> {
    pub(super) fn escalation(&mut self, raw: &RawEscalation) -> EscalationConfig {
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
    pub(super) fn tiers(&mut self, key: &str, raw: &Spanned<Vec<Spanned<RawTier>>>) -> Vec<Tier> {
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
            (
                "webhook_secret",
                raw.webhook_secret.as_ref().map(Spanned::span),
            ),
            (
                "signing_secret",
                raw.signing_secret.as_ref().map(Spanned::span),
            ),
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
            ChannelType::Slack => {
                let url = self.http_url(&table, raw);
                let signing_secret =
                    self.optional_secret(&table, "signing_secret", raw.signing_secret.as_ref());
                url.map(|url| ChannelKind::Slack {
                    url,
                    signing_secret,
                })
            }
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
        let webhook_secret =
            self.optional_secret(table, "webhook_secret", raw.webhook_secret.as_ref());
        Some(ChannelKind::PagerDuty {
            routing_key: routing_key?,
            url: url?,
            default_severity,
            webhook_secret,
        })
    }

    /// An optional secret (`webhook_secret`, `signing_secret`): not empty when set.
    fn optional_secret(
        &mut self,
        table: &ChannelTable,
        key: &str,
        value: Option<&Text>,
    ) -> Option<String> {
        value.and_then(|secret| {
            self.parse(&table.key(key), secret, |secret| match secret {
                "" => Err("must not be empty".to_owned()),
                _ => Ok(secret.to_owned()),
            })
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
            ChannelType::Webhook => &["url"],
            ChannelType::Slack => &["url", "signing_secret"],
            ChannelType::PagerDuty => &["routing_key", "url", "default_severity", "webhook_secret"],
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
