//! The plain sections: `[server]`, `[store]`, `[runbooks]`, `[limits]` and the
//! services medic asks (`[alertmanager]`, `[prometheus]`).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{check_http_url, Validator};

/// Below this, `store.retention` is warned about.
const MIN_QUIET_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);
use crate::config::raw::{RawLimits, RawRunbooks, RawServer, RawService, RawStore};
use crate::config::units::{parse_duration, parse_rate};
use crate::config::{
    is_identifier, redact_url_password, LimitsConfig, RunbooksConfig, ServerConfig, ServiceConfig,
    StoreConfig, DEFAULT_BODY_LIMIT, DEFAULT_LINK_TTL, DEFAULT_LISTEN, DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_QUEUED, DEFAULT_RELAPSE_WINDOW, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RUNBOOKS_DIR,
    DEFAULT_RUNBOOK_TIMEOUT, DEFAULT_SERVICE_TIMEOUT, DEFAULT_STORE_URL, DEFAULT_STORM_WINDOW,
    MIN_LINK_SECRET,
};

impl Validator<'_> {
    pub(super) fn server(&mut self, raw: &RawServer) -> ServerConfig {
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
            link_secret: raw.link_secret.as_ref().and_then(|secret| {
                self.parse("server.link_secret", secret, |s| match s.len() {
                    0 => Ok(None),
                    n if n < MIN_LINK_SECRET => Err(format!(
                        "must be at least {MIN_LINK_SECRET} bytes (it is {n})"
                    )),
                    _ => Ok(Some(s.to_owned())),
                })
                .flatten()
            }),
            link_ttl: self.optional(
                "server.link_ttl",
                raw.link_ttl.as_ref(),
                DEFAULT_LINK_TTL,
                |text| match parse_duration(text)? {
                    d if d.is_zero() => Err("must be longer than 0s".to_owned()),
                    d => Ok(d),
                },
            ),
        }
    }

    pub(super) fn store(&mut self, raw: &RawStore) -> StoreConfig {
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
            retention: self.retention(raw),
        }
    }

    /// `store.retention`: any duration; a short one is allowed (tests, soaks) but warned.
    fn retention(&mut self, raw: &RawStore) -> Option<std::time::Duration> {
        let text = raw.retention.as_ref()?;
        let retention = self.parse("store.retention", text, parse_duration)?;
        if retention < MIN_QUIET_RETENTION {
            self.warning(
                "store.retention",
                text.span(),
                format!(
                    "closed incidents are removed {} after they close: a delivery Alertmanager retries later than that opens a new incident for an alert medic already handled",
                    humantime::format_duration(retention)
                ),
            );
        }
        Some(retention)
    }

    pub(super) fn runbooks(&mut self, raw: &RawRunbooks) -> RunbooksConfig {
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

    pub(super) fn service(&mut self, section: &str, raw: &RawService) -> Option<ServiceConfig> {
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

    pub(super) fn limits(&mut self, raw: &RawLimits) -> LimitsConfig {
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
            relapse_window: self.optional(
                "limits.relapse_window",
                raw.relapse_window.as_ref(),
                DEFAULT_RELAPSE_WINDOW,
                parse_duration,
            ),
        }
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
