//! Phase 1: the configuration file exactly as written.
//!
//! These serde structs mirror the file's keys one to one. Every struct denies
//! unknown keys, so a typo is an error (with its position) rather than a
//! silently ignored setting. Values are kept as close to the text as serde
//! allows: strings stay strings (`Spanned`, so errors can point at them),
//! integers stay `i64`, and nearly every key is optional here. Defaults,
//! `${ENV}` expansion, parsing of durations and the like, and every rule
//! about which keys are required belong to phase 2 (`validate`), which can
//! report all problems at once; a serde error stops at the first.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// A string value with its position in the file.
pub(crate) type Text = Spanned<String>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub server: RawServer,
    pub store: RawStore,
    pub runbooks: RawRunbooks,
    pub limits: RawLimits,
    pub routes: Vec<Spanned<RawRoute>>,
    pub escalation: RawEscalation,
    pub alertmanager: Option<RawService>,
    pub prometheus: Option<RawService>,
    pub ui: RawUi,
}

/// `[ui]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUi {
    #[serde(default)]
    pub users: Vec<Spanned<RawUser>>,
    pub proxy_header: Option<Text>,
    pub proxy_addresses: Option<Spanned<Vec<Text>>>,
    pub proxy_role: Option<Text>,
}

/// One `[[ui.users]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    pub name: Option<Text>,
    pub password_hash: Option<Text>,
    pub role: Option<Text>,
}

/// `[alertmanager]` and `[prometheus]`: an HTTP service medic calls.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub url: Option<Text>,
    pub timeout: Option<Text>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Option<Text>,
    pub webhook_token: Option<Text>,
    pub api_token: Option<Text>,
    pub body_limit: Option<Spanned<RawSize>>,
    pub request_timeout: Option<Text>,
    pub external_url: Option<Text>,
    pub link_secret: Option<Text>,
    pub link_ttl: Option<Text>,
}

/// `[store]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub url: Option<Text>,
    pub lease: Option<Text>,
    pub statement_timeout: Option<Text>,
    pub pool_size: Option<Spanned<Integer>>,
}

/// `[runbooks]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRunbooks {
    pub dir: Option<Text>,
    #[serde(default)]
    pub allowed_commands: Vec<Text>,
    pub timeout: Option<Text>,
    #[serde(default)]
    pub dry_run: bool,
    pub step_timeout: Option<Text>,
    pub exec_path: Option<Text>,
    pub output_limit: Option<Spanned<RawSize>>,
    #[serde(default)]
    pub pass_env: Vec<Text>,
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, Text>,
    pub http_timeout: Option<Text>,
    pub http_max_body: Option<Spanned<RawSize>>,
    #[serde(default)]
    pub http_allowed_hosts: Vec<Text>,
    pub max_operations: Option<Spanned<Integer>>,
    pub max_call_depth: Option<Spanned<Integer>>,
    pub max_expr_depth: Option<Spanned<Integer>>,
    pub max_string_size: Option<Spanned<RawSize>>,
    pub max_array_size: Option<Spanned<Integer>>,
    pub max_map_size: Option<Spanned<Integer>>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_concurrent: Option<Spanned<Integer>>,
    pub rate: Option<Text>,
    pub enabled: Option<bool>,
    pub max_queued: Option<Spanned<Integer>>,
    pub exec_rate: Option<Text>,
    pub http_rate: Option<Text>,
    pub storm_window: Option<Text>,
    pub relapse_window: Option<Text>,
}

/// One `maintenance = [{ ... }]` window of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWindow {
    #[serde(default)]
    pub weekdays: Vec<Text>,
    pub start: Option<Text>,
    pub end: Option<Text>,
    pub timezone: Option<Text>,
}

/// One `[[routes]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub name: Option<Text>,
    #[serde(default)]
    pub matchers: Vec<Text>,
    pub runbook: Option<Text>,
    pub runbook_from: Option<Text>,
    pub ignore: Option<Spanned<bool>>,
    pub verify_for: Option<Text>,
    pub verify: Option<Text>,
    pub tiers: Option<Spanned<Vec<Spanned<RawTier>>>>,
    pub renotify: Option<Text>,
    pub rate: Option<Text>,
    #[serde(default)]
    pub rate_key: Vec<Text>,
    pub max_in_flight: Option<Spanned<Integer>>,
    #[serde(default)]
    pub in_flight_key: Vec<Text>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub idempotent: bool,
    pub breaker: Option<Spanned<RawBreaker>>,
    #[serde(default)]
    pub maintenance: Vec<Spanned<RawWindow>>,
    pub maintenance_action: Option<Text>,
    pub manual_minutes: Option<Spanned<Integer>>,
    pub approval: Option<Spanned<RawApproval>>,
}

/// A route's `approval = { timeout = "15m", approvers = [...] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApproval {
    pub timeout: Option<Text>,
    #[serde(default)]
    pub approvers: Vec<Text>,
}

/// A route's `breaker = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    pub failures: Option<Spanned<Integer>>,
    pub cooldown: Option<Text>,
    #[serde(default)]
    pub key: Vec<Text>,
    pub count_requested: Option<bool>,
}

/// `[escalation]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEscalation {
    pub notify: Option<Spanned<Vec<Text>>>,
    #[serde(default)]
    pub channels: Vec<Spanned<RawChannel>>,
    pub tiers: Option<Spanned<Vec<Spanned<RawTier>>>>,
    pub renotify: Option<Text>,
    pub retry_initial: Option<Text>,
    pub retry_max: Option<Text>,
    pub max_attempts: Option<Spanned<Integer>>,
    pub fall_through_after: Option<Spanned<Integer>>,
}

/// One escalation tier, `{ after = "15m", notify = ["pager"] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTier {
    pub after: Option<Text>,
    #[serde(default)]
    pub notify: Vec<Text>,
}

/// One `[[escalation.channels]]` table, with the keys of every channel type.
///
/// Which keys a type allows is checked in phase 2: serde's internally tagged
/// enums don't combine reliably with `deny_unknown_fields`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChannel {
    pub name: Option<Text>,
    #[serde(rename = "type")]
    pub kind: Option<Text>,
    pub smtp: Option<Text>,
    pub from: Option<Text>,
    pub to: Option<Spanned<Vec<Text>>>,
    pub url: Option<Text>,
    pub routing_key: Option<Text>,
    pub tls: Option<Text>,
    pub username: Option<Text>,
    pub password: Option<Text>,
    pub default_severity: Option<Text>,
    pub path: Option<Text>,
    pub timeout: Option<Text>,
    pub webhook_secret: Option<Text>,
    pub signing_secret: Option<Text>,
}

/// A TOML integer. (A plain `i64` would make serde's type errors say
/// "expected i64" rather than "expected an integer".)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Integer(pub i64);

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Integer, D::Error> {
        deserializer.deserialize_i64(IntegerVisitor)
    }
}

struct IntegerVisitor;

impl Visitor<'_> for IntegerVisitor {
    type Value = Integer;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Integer, E> {
        Ok(Integer(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Integer, E> {
        i64::try_from(value)
            .map(Integer)
            .map_err(|_| E::custom("integer is too large"))
    }
}

/// A byte size as written: a TOML integer (bytes) or a string like `"1MiB"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawSize, D::Error> {
        deserializer.deserialize_any(RawSizeVisitor)
    }
}

struct RawSizeVisitor;

impl Visitor<'_> for RawSizeVisitor {
    type Value = RawSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size: an integer number of bytes or a string like \"1MiB\"")
    }

    fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<RawSize, E> {
        Ok(RawSize::Bytes(bytes))
    }

    fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<RawSize, E> {
        i64::try_from(bytes)
            .map(RawSize::Bytes)
            .map_err(|_| E::custom("size is too large"))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<RawSize, E> {
        Ok(RawSize::Text(text.to_owned()))
    }
}
