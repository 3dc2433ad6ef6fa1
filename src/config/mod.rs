//! medic's configuration: the TOML file, read in two phases.
//!
//! 1. `raw`: serde structs mirroring the file, denying unknown keys. A TOML
//!    syntax error, an unknown key or a value of the wrong TOML type stops
//!    here, as one error with its position.
//! 2. `validate`: `${ENV}` expansion of every string, then parsing and
//!    checking into the typed values below ([`Config`] and its sections),
//!    collecting *every* problem before failing.
//!
//! This module owns the file format, its defaults and the error messages
//! (see [`ConfigError`]). It does no IO beyond reading the file in
//! [`Config::load`], and checks nothing outside the file: whether a route's
//! runbook exists, for instance, is for the caller, using
//! [`RouteConfig::location`] to point at the route.

mod error;
mod expand;
mod raw;
mod ui;
mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::routing::matcher::Matcher;
use crate::routing::Route;

/// The runbook a route runs is routing's type; validation builds it.
pub use crate::routing::RunbookTarget;
pub use error::{ConfigError, ConfigErrors, Location};
pub use ui::{hash_password, verify_password, Cidr, HashError, Role, UiConfig, UiProxy, UiUser};

/// Default `server.listen`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9095));
/// Default `server.body_limit`: 16 MiB, room for a storm group of thousands of alerts in
/// one delivery. A body over the limit is refused (413) and Alertmanager resends it forever,
/// so the limit must hold the largest group Alertmanager sends (see its `max_alerts`).
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Default `server.request_timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `store.url`.
pub const DEFAULT_STORE_URL: &str = "sqlite://data/medic.db";
/// Default `runbooks.dir`.
pub const DEFAULT_RUNBOOKS_DIR: &str = "runbooks";
/// Default `runbooks.timeout`.
pub const DEFAULT_RUNBOOK_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default `limits.max_concurrent`.
pub const DEFAULT_MAX_CONCURRENT: usize = 16;
/// Default `routes[].verify_for`.
pub const DEFAULT_VERIFY_FOR: Duration = Duration::from_secs(5 * 60);
/// Default `url` of a `pagerduty` channel.
pub const DEFAULT_PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// An `[escalation]` section that pages a file, for unit tests whose configuration is
/// about something else: appended to a file's text, it makes every escalation reach a
/// channel.
#[cfg(test)]
pub(crate) const TEST_ESCALATION: &str = r#"
[escalation]
notify = ["log"]

[[escalation.channels]]
name = "log"
type = "file"
path = "escalations.jsonl"
"#;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub source: PathBuf,
    /// `[server]`
    pub server: ServerConfig,
    /// `[store]`
    pub store: StoreConfig,
    /// `[runbooks]`
    pub runbooks: RunbooksConfig,
    /// `[limits]`
    pub limits: LimitsConfig,
    /// `[[routes]]`, in file order (the order they are tried in).
    pub routes: Vec<RouteConfig>,
    /// `[escalation]`
    pub escalation: EscalationConfig,
    /// `[alertmanager]`: enables the `silence` step (and API verification).
    pub alertmanager: Option<ServiceConfig>,
    /// `[prometheus]`: enables the `query` step.
    pub prometheus: Option<ServiceConfig>,
    /// `[ui]`: the on-call console's users.
    pub ui: UiConfig,
    /// Settings that are valid but probably not what was meant; `medic check` prints
    /// them and still passes.
    pub warnings: Vec<ConfigError>,
}

/// What a configuration is loaded for, which decides the secrets it must have.
///
/// Only `serve` (and `check`, which answers for `serve`) uses the webhook and API
/// tokens, the channels' credentials and the console's users (`ui.*`); the offline
/// commands load the same file without them, so a `${VAR}` in those keys may be unset
/// there (the value, or the user, is left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `medic serve` and `medic check`: every `${VAR}` must be set.
    Serve,
    /// `medic test` and `medic replay`: routes and runbooks (and `runbooks.secrets`),
    /// never the server's tokens or the channels.
    Offline,
    /// `medic audit verify`: only the store.
    Audit,
}

impl Purpose {
    /// Whether an unset `${VAR}` in `key` is fine for this purpose.
    fn may_leave_unset(self, key: &str) -> bool {
        let serve_only = key == "server.webhook_token"
            || key == "server.api_token"
            || key == "server.link_secret"
            || key.starts_with("escalation.channels[")
            || key.starts_with("ui.");
        match self {
            Purpose::Serve => false,
            Purpose::Offline => serve_only,
            Purpose::Audit => serve_only || key.starts_with("runbooks.secrets."),
        }
    }
}

/// An HTTP service medic calls (`[alertmanager]`, `[prometheus]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Base URL, `http://` or `https://`, without a trailing slash.
    pub url: String,
    /// Time limit of one call.
    pub timeout: Duration,
}

/// Default timeout of calls to Alertmanager and Prometheus.
pub const DEFAULT_SERVICE_TIMEOUT: Duration = Duration::from_secs(10);

impl Config {
    /// Reads and validates the file at `path`, expanding `${VAR}` from the
    /// process environment. An unreadable file is one error naming the path.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_for(path, Purpose::Serve)
    }

    /// [`Config::load`] for `purpose`: secrets that it does not use may be unset.
    pub fn load_for(path: &Path, purpose: Purpose) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            ConfigError::for_file(path, format!("cannot read config file: {error}"))
        })?;
        Config::parse_for(path, &text, &|name| std::env::var(name).ok(), purpose)
    }

    /// Validates `text`, the contents of the file `source` (used in errors
    /// only), looking `${VAR}` up with `env`. An empty text gives the
    /// defaults.
    pub fn parse(
        source: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Config::parse_for(source, text, env, Purpose::Serve)
    }

    /// [`Config::parse`] for `purpose`.
    pub fn parse_for(
        source: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        purpose: Purpose,
    ) -> Result<Config, ConfigErrors> {
        let raw: raw::RawConfig =
            toml::from_str(text).map_err(|error| ConfigError::from_toml(source, text, &error))?;
        validate::validate(source, text, &raw, env, purpose)
    }
}

/// `[server]`: the HTTP listener.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Bearer token (or basic-auth password) `/webhook` requires; `None`
    /// when empty or absent, which disables the check.
    pub webhook_token: Option<String>,
    /// Bearer token `/api/*` requires; `None` disables the check.
    pub api_token: Option<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Time limit for handling one request.
    pub request_timeout: Duration,
    /// How people reach medic's API, for links in escalation messages (no trailing
    /// slash); `None`: `http://` and the address medic listens on.
    pub external_url: Option<String>,
    /// The key that signs the one-click links of escalation messages (at least 32 bytes);
    /// `None`: messages carry only the plain incident page link.
    pub link_secret: Option<String>,
    /// How long a signed link works after its message is rendered.
    pub link_ttl: Duration,
}

/// Default `server.link_ttl`.
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(24 * 3600);
/// Shortest `server.link_secret`, in bytes.
pub const MIN_LINK_SECRET: usize = 32;

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: DEFAULT_LISTEN,
            webhook_token: None,
            api_token: None,
            body_limit: DEFAULT_BODY_LIMIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            external_url: None,
            link_secret: None,
            link_ttl: DEFAULT_LINK_TTL,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field(
                "webhook_token",
                &self.webhook_token.as_ref().map(|_| Redacted),
            )
            .field("api_token", &self.api_token.as_ref().map(|_| Redacted))
            .field("body_limit", &self.body_limit)
            .field("request_timeout", &self.request_timeout)
            .field("external_url", &self.external_url)
            .field("link_secret", &self.link_secret.as_ref().map(|_| Redacted))
            .field("link_ttl", &self.link_ttl)
            .finish()
    }
}

/// `[store]`: where incidents and the audit log are kept.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `sqlite://<path>`, `postgres://...` or `postgresql://...`.
    pub url: String,
    /// How long a run's claim lasts unless its replica renews it: a replica that died
    /// mid-run is noticed after this long.
    pub lease: Duration,
    /// PostgreSQL: the longest any one statement may run.
    pub statement_timeout: Duration,
    /// PostgreSQL: read connections per replica.
    pub pool_size: u32,
}

/// Default of `store.lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            url: DEFAULT_STORE_URL.to_owned(),
            lease: DEFAULT_LEASE,
            statement_timeout: Duration::from_secs(5),
            pool_size: 8,
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_url_password(&self.url))
            .finish()
    }
}

/// `[runbooks]`: where runbooks are, what they may run, and their limits.
#[derive(Clone, PartialEq, Eq)]
pub struct RunbooksConfig {
    /// Directory of the `.rhai` files, as written (relative paths are left
    /// for the caller to resolve).
    pub dir: PathBuf,
    /// Programs `exec` may run, as written.
    pub allowed_commands: Vec<String>,
    /// Wall-clock limit of one runbook run.
    pub timeout: Duration,
    /// Record steps as "would run" instead of running them, for every route.
    pub dry_run: bool,
    /// Time limit of one `exec`.
    pub step_timeout: Duration,
    /// The search path that resolves bare names in `allowed_commands`, and the `PATH`
    /// programs get.
    pub exec_path: String,
    /// Bytes kept of each of stdout and stderr of one `exec`.
    pub output_limit: usize,
    /// Environment variables passed from medic's environment to `exec`ed programs
    /// (besides a fixed `PATH`); everything else is cleared.
    pub pass_env: Vec<String>,
    /// Named secrets a runbook reads as `secrets.NAME`; their values are redacted
    /// from the audit log and timelines.
    pub secrets: Vec<(String, String)>,
    /// Time limit of one `http` call.
    pub http_timeout: Duration,
    /// Largest response body an `http` call reads.
    pub http_max_body: usize,
    /// Hosts `http` may call; empty allows any.
    pub http_allowed_hosts: Vec<String>,
    /// Rhai operations one run may perform.
    pub max_operations: u64,
    /// Deepest function-call nesting.
    pub max_call_depth: usize,
    /// Deepest expression nesting.
    pub max_expr_depth: usize,
    /// Longest string a runbook may build, in bytes.
    pub max_string_size: usize,
    /// Largest array a runbook may build.
    pub max_array_size: usize,
    /// Largest map a runbook may build.
    pub max_map_size: usize,
}

/// Defaults of the `[runbooks]` limits.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HTTP_MAX_BODY: usize = 1024 * 1024;
pub const DEFAULT_MAX_OPERATIONS: u64 = 1_000_000;
pub const DEFAULT_MAX_CALL_DEPTH: usize = 32;
pub const DEFAULT_MAX_EXPR_DEPTH: usize = 64;
pub const DEFAULT_MAX_STRING_SIZE: usize = 1024 * 1024;
pub const DEFAULT_MAX_ARRAY_SIZE: usize = 10_000;
pub const DEFAULT_MAX_MAP_SIZE: usize = 10_000;
/// Default `runbooks.exec_path`.
pub const DEFAULT_EXEC_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Default `runbooks.pass_env`.
pub const DEFAULT_PASS_ENV: &[&str] = &["LANG", "TZ"];

impl Default for RunbooksConfig {
    fn default() -> RunbooksConfig {
        RunbooksConfig {
            dir: PathBuf::from(DEFAULT_RUNBOOKS_DIR),
            allowed_commands: Vec::new(),
            timeout: DEFAULT_RUNBOOK_TIMEOUT,
            dry_run: false,
            step_timeout: DEFAULT_STEP_TIMEOUT,
            exec_path: DEFAULT_EXEC_PATH.to_string(),
            output_limit: DEFAULT_OUTPUT_LIMIT,
            pass_env: DEFAULT_PASS_ENV.iter().map(|s| s.to_string()).collect(),
            secrets: Vec::new(),
            http_timeout: DEFAULT_HTTP_TIMEOUT,
            http_max_body: DEFAULT_HTTP_MAX_BODY,
            http_allowed_hosts: Vec::new(),
            max_operations: DEFAULT_MAX_OPERATIONS,
            max_call_depth: DEFAULT_MAX_CALL_DEPTH,
            max_expr_depth: DEFAULT_MAX_EXPR_DEPTH,
            max_string_size: DEFAULT_MAX_STRING_SIZE,
            max_array_size: DEFAULT_MAX_ARRAY_SIZE,
            max_map_size: DEFAULT_MAX_MAP_SIZE,
        }
    }
}

impl fmt::Debug for RunbooksConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secrets: Vec<(&str, Redacted)> = self
            .secrets
            .iter()
            .map(|(k, _)| (k.as_str(), Redacted))
            .collect();
        f.debug_struct("RunbooksConfig")
            .field("dir", &self.dir)
            .field("allowed_commands", &self.allowed_commands)
            .field("timeout", &self.timeout)
            .field("dry_run", &self.dry_run)
            .field("step_timeout", &self.step_timeout)
            .field("exec_path", &self.exec_path)
            .field("output_limit", &self.output_limit)
            .field("pass_env", &self.pass_env)
            .field("secrets", &secrets)
            .field("http_timeout", &self.http_timeout)
            .field("http_max_body", &self.http_max_body)
            .field("http_allowed_hosts", &self.http_allowed_hosts)
            .field("max_operations", &self.max_operations)
            .field("max_call_depth", &self.max_call_depth)
            .field("max_expr_depth", &self.max_expr_depth)
            .field("max_string_size", &self.max_string_size)
            .field("max_array_size", &self.max_array_size)
            .field("max_map_size", &self.max_map_size)
            .finish()
    }
}

/// `[limits]`: limits over all routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Runbook runs at once; at least 1.
    pub max_concurrent: usize,
    /// Runbook runs per window, if limited.
    pub rate: Option<Rate>,
    /// `false` starts medic paused (the kill switch in the config).
    pub enabled: bool,
    /// Incidents that may wait in `queued`; beyond, new ones escalate `rate_limited`.
    pub max_queued: usize,
    /// `exec` calls per window, counted per program.
    pub exec_rate: Option<Rate>,
    /// `http` calls per window, counted per host.
    pub http_rate: Option<Rate>,
    /// Escalations of one route and reason within this window form one group.
    pub storm_window: Duration,
    /// The same fingerprint firing again this soon after an automated fix is a relapse:
    /// the fix did not stick.
    pub relapse_window: Duration,
}

/// Default `limits.max_queued`.
pub const DEFAULT_MAX_QUEUED: usize = 1000;
/// Default `limits.storm_window`.
pub const DEFAULT_STORM_WINDOW: Duration = Duration::from_secs(60);
/// Default `limits.relapse_window`.
pub const DEFAULT_RELAPSE_WINDOW: Duration = Duration::from_secs(3600);

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            rate: None,
            enabled: true,
            max_queued: DEFAULT_MAX_QUEUED,
            exec_rate: None,
            http_rate: None,
            storm_window: DEFAULT_STORM_WINDOW,
            relapse_window: DEFAULT_RELAPSE_WINDOW,
        }
    }
}

/// A weekly time window, in a time zone: `weekdays` (empty: every day), from `start` to
/// `end` (`"HH:MM"`; an `end` before `start` crosses midnight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowConfig {
    pub weekdays: Vec<chrono::Weekday>,
    /// Minutes after midnight.
    pub start: u32,
    /// Minutes after midnight; 1440 for the end of the day.
    pub end: u32,
    pub timezone: chrono_tz::Tz,
}

/// What a route does with an incident inside a maintenance window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAction {
    /// Keep it queued until the window ends.
    Wait,
    /// Escalate it at once (reason `paused`).
    Escalate,
}

/// At most `count` events per `per`, written `"<count>/<duration>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Events allowed per window; at least 1.
    pub count: u32,
    /// The window; greater than zero.
    pub per: Duration,
}

/// One `[[routes]]` entry: which alerts it takes and what to do with them.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// The route's name, or `routes[<index>]` when not given; unique.
    pub name: String,
    /// All must match (empty: matches every alert).
    pub matchers: Vec<Matcher>,
    /// Which runbook to run.
    pub target: RunbookTarget,
    /// How long the alert has, after the runbook ends, to resolve.
    pub verify_for: Duration,
    /// How medic learns that the alert resolved.
    pub verify: VerifyMode,
    /// This route's escalation policy; `None` uses `[escalation]`'s.
    pub policy: Option<Policy>,
    /// Runs per window for this route, if limited.
    pub rate: Option<Rate>,
    /// Labels whose values each get their own `rate`.
    pub rate_key: Vec<String>,
    /// Runs at once for this route, if limited; at least 1.
    pub max_in_flight: Option<u32>,
    /// Labels whose values each get their own `max_in_flight`.
    pub in_flight_key: Vec<String>,
    /// Run the runbook without side effects.
    pub dry_run: bool,
    /// The runbook is safe to run again after an interruption.
    pub idempotent: bool,
    /// Stop running after repeated failures, if set.
    pub breaker: Option<BreakerConfig>,
    /// Times during which the route does not remediate.
    pub maintenance: Vec<WindowConfig>,
    /// What happens to incidents during `maintenance`.
    pub maintenance_action: WindowAction,
    /// How many minutes a person takes to fix this by hand: each automated fix saves
    /// that much toil in the report. `None` when not given.
    pub manual_minutes: Option<u32>,
    /// Ask a person before each run (`approval = { ... }`), see [`ApprovalConfig`].
    pub approval: Option<ApprovalConfig>,
    /// Where the route's table starts in the file.
    pub location: Location,
}

impl RouteConfig {
    /// What routing needs of this route: its name, matchers and runbook.
    pub fn routing(&self) -> Route {
        Route {
            name: self.name.clone(),
            matchers: self.matchers.clone(),
            target: self.target.clone(),
        }
    }
}

/// A route's `approval`: its incidents wait for a person's yes to their plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalConfig {
    /// How long the request waits for an answer before it is escalated `approval_timeout`.
    pub timeout: Duration,
    /// Who may decide: console user names, or roles (`responder`, `admin`: that role or
    /// higher). Empty: anyone who may act on incidents.
    pub approvers: Vec<String>,
}

impl ApprovalConfig {
    /// Whether the person `name` (with console role `role`, if known) may decide.
    pub fn allows(&self, name: &str, role: Option<Role>) -> bool {
        self.approvers.is_empty()
            || self.approvers.iter().any(|a| {
                a == name
                    || Role::parse(a)
                        .ok()
                        .zip(role)
                        .is_some_and(|(needed, has)| has.may(needed))
            })
    }
}

/// A route's circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; at least 1.
    pub failures: u32,
    /// How long it stays open.
    pub cooldown: Duration,
    /// Labels whose values each get their own breaker.
    pub key: Vec<String>,
    /// A run that ends by calling `escalate()` counts as a failure (the default).
    pub count_requested: bool,
}

/// `[escalation]`: who hears about alerts medic could not fix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EscalationConfig {
    /// Channels notified by default; each names one of `channels`.
    pub notify: Vec<String>,
    /// Every defined channel, in file order.
    pub channels: Vec<ChannelConfig>,
    /// The default policy: `tiers`, or else `notify` as one tier, at once.
    pub policy: Policy,
    /// How failed sends are retried.
    pub retry: RetryConfig,
}

impl EscalationConfig {
    /// The channel named `name`.
    pub fn channel(&self, name: &str) -> Option<&ChannelConfig> {
        self.channels.iter().find(|c| c.name == name)
    }
}

impl Config {
    /// The escalation policy of the route named `route` (its own, else the default); the
    /// default for an incident no route took.
    pub fn policy_for(&self, route: Option<&str>) -> &Policy {
        route
            .and_then(|name| self.routes.iter().find(|r| r.name == name))
            .and_then(|r| r.policy.as_ref())
            .unwrap_or(&self.escalation.policy)
    }
}

/// How medic learns that a remediated alert resolved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VerifyMode {
    /// `verify = "notification"`: Alertmanager's resolved notification.
    #[default]
    Notification,
    /// `verify = "alertmanager"`: that, and polling Alertmanager's API v2 for the alert
    /// (for receivers without `send_resolved`).
    Alertmanager,
}

/// An escalation policy: ordered tiers, and how often an unacknowledged incident that
/// keeps firing is escalated again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// In order of `after`. Validation makes sure every policy that can be used has
    /// at least one tier; only the default policy of a configuration in which every
    /// alert is taken by a route with its own policy (or `ignore`) may be empty.
    pub tiers: Vec<Tier>,
    /// Runs the policy again this long after the last round, while the incident is
    /// escalated and not acknowledged; `None`: once.
    pub renotify: Option<Duration>,
}

/// One tier: `after` the escalation, notify these channels (unless acknowledged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub after: Duration,
    /// Channel names; each names one of `escalation.channels`.
    pub notify: Vec<String>,
}

/// Retries of a notification that failed transiently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// The first wait; doubled on each retry, with jitter.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Attempts before giving up on one notification.
    pub attempts: u32,
    /// Failed attempts after which the next tier is notified at once.
    pub fall_through_after: u32,
}

/// Defaults of `escalation.retry_*`.
pub const DEFAULT_RETRY: RetryConfig = RetryConfig {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(5 * 60),
    attempts: 10,
    fall_through_after: 3,
};

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        DEFAULT_RETRY
    }
}

/// Default `timeout` of one notification.
pub const DEFAULT_CHANNEL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `default_severity` of a `pagerduty` channel.
pub const DEFAULT_PAGERDUTY_SEVERITY: &str = "error";
/// PagerDuty's severities.
pub const PAGERDUTY_SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

/// One `[[escalation.channels]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Unique name, used by `notify`.
    pub name: String,
    /// The channel's type and its settings.
    pub kind: ChannelKind,
    /// Time limit of one send.
    pub timeout: Duration,
    /// Where the channel's table starts in the file.
    pub location: Location,
}

/// A channel's type (`type = "..."`) and the settings of that type.
///
/// `Debug` hides the PagerDuty routing key and webhook secret, the Slack webhook URL and
/// signing secret, which are credentials, and any password in a webhook URL.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelKind {
    /// `type = "email"`
    Email {
        /// SMTP server, `host:port`.
        smtp: String,
        /// Sender address.
        from: String,
        /// Recipient addresses; at least one.
        to: Vec<String>,
        /// Transport security.
        tls: SmtpTls,
        /// `username` and `password`, when the server wants a login.
        auth: Option<(String, String)>,
    },
    /// `type = "webhook"`: a JSON POST.
    Webhook {
        /// `http://` or `https://` URL.
        url: String,
    },
    /// `type = "slack"`: a Slack incoming webhook.
    Slack {
        /// `http://` or `https://` URL.
        url: String,
        /// The Slack app's signing secret: when set, messages carry an "Acknowledge"
        /// button, handled on `POST /slack/actions`.
        signing_secret: Option<String>,
    },
    /// `type = "pagerduty"`: PagerDuty Events API v2.
    PagerDuty {
        /// The integration's routing key.
        routing_key: String,
        /// Events endpoint; [`DEFAULT_PAGERDUTY_URL`] unless set.
        url: String,
        /// Severity when the alert's `severity` label is not one of PagerDuty's four.
        default_severity: String,
        /// The v3 webhook subscription's secret: when set, acks and resolutions made in
        /// PagerDuty come back on `POST /pagerduty/webhook`.
        webhook_secret: Option<String>,
    },
    /// `type = "file"`: each notification appended to a file as one JSON line.
    File {
        /// The file; created when missing, relative to medic's working directory.
        path: PathBuf,
    },
}

/// How an `email` channel secures its SMTP connection (`tls = "..."`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SmtpTls {
    /// `"none"`: plain SMTP.
    None,
    /// `"opportunistic"` (default): STARTTLS when the server offers it.
    #[default]
    Opportunistic,
    /// `"starttls"`: STARTTLS, required.
    StartTls,
    /// `"tls"`: TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

impl fmt::Debug for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelKind::Email {
                smtp,
                from,
                to,
                tls,
                auth,
            } => f
                .debug_struct("Email")
                .field("smtp", smtp)
                .field("from", from)
                .field("to", to)
                .field("tls", tls)
                .field("auth", &auth.as_ref().map(|(user, _)| (user, Redacted)))
                .finish(),
            ChannelKind::Webhook { url } => f
                .debug_struct("Webhook")
                .field("url", &redact_url_password(url))
                .finish(),
            ChannelKind::Slack { signing_secret, .. } => f
                .debug_struct("Slack")
                .field("url", &Redacted)
                .field("signing_secret", &signing_secret.as_ref().map(|_| Redacted))
                .finish(),
            ChannelKind::PagerDuty {
                url,
                default_severity,
                webhook_secret,
                ..
            } => f
                .debug_struct("PagerDuty")
                .field("routing_key", &Redacted)
                .field("url", &redact_url_password(url))
                .field("default_severity", default_severity)
                .field("webhook_secret", &webhook_secret.as_ref().map(|_| Redacted))
                .finish(),
            ChannelKind::File { path } => f.debug_struct("File").field("path", path).finish(),
        }
    }
}

/// Stands in for a secret in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `url` with its password replaced by `<redacted>`, for messages and logs: the password
/// of its `user:password@` part and a `password=` query parameter (which PostgreSQL takes
/// too), if any.
pub fn redact_url_password(url: &str) -> String {
    let url = redact_userinfo_password(url);
    let Some((base, query)) = url.split_once('?') else {
        return url;
    };
    let query: Vec<&str> = query
        .split('&')
        .map(|p| match p.starts_with("password=") {
            true => "password=<redacted>",
            false => p,
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

fn redact_userinfo_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:<redacted>@{host}{path}"),
        None => url.to_owned(),
    }
}

/// Whether `name` is `[A-Za-z_][A-Za-z0-9_]*`: a Prometheus label name, or
/// an environment variable name.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
