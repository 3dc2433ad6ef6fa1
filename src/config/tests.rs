//! Tests of the configuration as a whole: one fixture file per invalid
//! configuration with the exact errors it gives, then valid configurations
//! parsed to their typed values. (Expansion, units and error formatting
//! have their own tests beside their code.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::routing::matcher::MatchOp;

/// Every invalid fixture in `tests/fixtures/config/` and the exact errors
/// it gives, one line each, when read with an empty environment. The file
/// is named `<name>.toml` in the errors.
const INVALID_FIXTURES: &[(&str, &[&str])] = &[
    (
        "bad-body-limit",
        &[
            r#"bad-body-limit.toml:3:14: server.body_limit: invalid size "1MB": unknown unit "MB" (use B, KiB, MiB or GiB)"#,
        ],
    ),
    (
        "bad-escalation",
        &[
            r#"bad-escalation.toml:4:9: escalation.tiers: set either "notify" (one tier, at once) or "tiers", not both"#,
            r#"bad-escalation.toml:4:57: escalation.tiers[1].after: invalid duration "soon": expected a number at position 1"#,
            r#"bad-escalation.toml:4:75: escalation.tiers[1].notify[0]: unknown channel "nobody": no escalation.channels entry has that name"#,
            r#"bad-escalation.toml:5:12: escalation.renotify: invalid duration "0s": must be greater than zero"#,
            r#"bad-escalation.toml:6:16: escalation.max_attempts: must be at least 1, not 0"#,
            r#"bad-escalation.toml:8:1: escalation.channels[0]: set both "username" and "password", or neither"#,
            r#"bad-escalation.toml:14:7: escalation.channels[0].tls: unknown tls mode "ssl" (use none, opportunistic, starttls or tls)"#,
            r#"bad-escalation.toml:21:20: escalation.channels[1].default_severity: unknown severity "high" (use critical, error, warning or info)"#,
            r#"bad-escalation.toml:22:7: escalation.channels[1].tls: not allowed for a channel of type "pagerduty" (allowed: routing_key, url, default_severity, webhook_secret)"#,
            r#"bad-escalation.toml:26:10: routes[0].verify: verify = "alertmanager" needs [alertmanager] url"#,
            r#"bad-escalation.toml:27:59: routes[0].tiers[1].after: tiers must be in order of "after": 5m comes after a tier at 15m"#,
            r#"bad-escalation.toml:27:86: routes[0].tiers[2]: missing required key "after""#,
            r#"bad-escalation.toml:27:86: routes[0].tiers[2]: "notify" must name at least one channel"#,
            r#"bad-escalation.toml:31:10: routes[1].verify: unknown verification "poll" (use "notification" or "alertmanager")"#,
        ],
    ),
    (
        "bad-channels",
        &[
            r#"bad-channels.toml:2:1: escalation.channels[0]: missing required key "name""#,
            r#"bad-channels.toml:8:8: escalation.channels[1].type: unknown channel type "sms" (use email, webhook, slack, pagerduty or file)"#,
            r#"bad-channels.toml:10:1: escalation.channels[2]: missing required key "type" (email, webhook, slack, pagerduty or file)"#,
            r#"bad-channels.toml:16:7: escalation.channels[3].url: invalid URL "hooks.slack.example/services/T000": expected an http:// or https:// URL"#,
            r#"bad-channels.toml:21:8: escalation.channels[4].smtp: invalid SMTP address "mail.example.com": expected <host>:<port>, like "127.0.0.1:25""#,
            r#"bad-channels.toml:22:8: escalation.channels[4].from: invalid email address "medic": missing '@'"#,
            r#"bad-channels.toml:23:6: escalation.channels[4].to: must list at least one address"#,
            r#"bad-channels.toml:28:15: escalation.channels[5].routing_key: must not be empty"#,
            r#"bad-channels.toml:29:7: escalation.channels[5].url: invalid URL "ftp://events.example": expected an http:// or https:// URL"#,
            r#"bad-channels.toml:30:18: escalation.channels[5].webhook_secret: must not be empty"#,
        ],
    ),
    (
        "bad-duration",
        &[
            r#"bad-duration.toml:4:14: routes[0].verify_for: invalid duration "5 minutez": unknown time unit "minutez" (use ns, us, ms, s, m, h, d or w)"#,
        ],
    ),
    (
        "bad-label-name",
        &[
            r#"bad-label-name.toml:5:25: routes[0].rate_key[1]: invalid label name "pod-name": must match [a-zA-Z_][a-zA-Z0-9_]*"#,
        ],
    ),
    (
        "bad-listen",
        &[
            r#"bad-listen.toml:3:10: server.listen: invalid listen address "localhost:9095": expected <ip>:<port>, like "127.0.0.1:9095""#,
        ],
    ),
    (
        "bad-rate",
        &[
            r#"bad-rate.toml:3:8: limits.rate: invalid rate "60/m": invalid duration "m": expected a number at position 1"#,
        ],
    ),
    (
        "bad-runbook-from",
        &[
            r#"bad-runbook-from.toml:3:16: routes[0].runbook_from: invalid runbook_from "label:medic_runbook": expected "annotation:<name>""#,
            r#"bad-runbook-from.toml:6:16: routes[1].runbook_from: invalid runbook_from "annotation:": the annotation name is empty"#,
        ],
    ),
    (
        "bad-store-url",
        &[
            r#"bad-store-url.toml:3:7: store.url: unsupported store URL "mysql://medic:<redacted>@db/medic": expected sqlite://, postgres:// or postgresql://"#,
        ],
    ),
    (
        "breaker-incomplete",
        &[
            r#"breaker-incomplete.toml:4:11: routes[0].breaker: missing required key "cooldown""#,
            r#"breaker-incomplete.toml:4:24: routes[0].breaker.failures: must be at least 1, not 0"#,
        ],
    ),
    (
        "channel-key-not-allowed",
        &[
            r#"channel-key-not-allowed.toml:6:8: escalation.channels[0].smtp: not allowed for a channel of type "webhook" (allowed: url)"#,
        ],
    ),
    (
        "duplicate-channel-names",
        &[
            r#"duplicate-channel-names.toml:8:8: escalation.channels[1].name: duplicate channel name "ops" (first used on line 3)"#,
        ],
    ),
    (
        "duplicate-route-names",
        &[
            r#"duplicate-route-names.toml:7:8: routes[1].name: duplicate route name "disk" (first used on line 3)"#,
        ],
    ),
    (
        "escalation-to-nobody",
        &[
            r#"escalation-to-nobody.toml:13:10: escalation.notify: the default policy names no channel, so escalations of route "disk" and alerts that no route matches would reach nobody; name a channel in escalation.notify (or escalation.tiers), or set ignore = true on a route to take its alerts on purpose without a runbook or a page"#,
        ],
    ),
    (
        "file-channel-without-path",
        &[
            r#"file-channel-without-path.toml:2:1: escalation.channels[0]: missing required key "path" for a channel of type "file""#,
            r#"file-channel-without-path.toml:5:7: escalation.channels[0].url: not allowed for a channel of type "file" (allowed: path)"#,
            r#"file-channel-without-path.toml:10:8: escalation.channels[1].path: must not be empty"#,
        ],
    ),
    (
        "ignore-with-runbook",
        &[
            r#"ignore-with-runbook.toml:5:11: routes[0].runbook: not allowed with ignore = true (an ignored alert runs nothing and pages nobody)"#,
            r#"ignore-with-runbook.toml:6:9: routes[0].tiers: not allowed with ignore = true (an ignored alert runs nothing and pages nobody)"#,
        ],
    ),
    (
        "route-tiers-empty",
        &[
            r#"route-tiers-empty.toml:5:9: routes[0].tiers: must list at least one tier (to take alerts on purpose without telling anyone, set ignore = true)"#,
        ],
    ),
    (
        "email-missing-to",
        &[
            r#"email-missing-to.toml:2:1: escalation.channels[0]: missing required key "to" for a channel of type "email""#,
        ],
    ),
    (
        "invalid-matcher",
        &[
            r#"invalid-matcher.toml:3:37: routes[0].matchers[1]: invalid matcher "foo": expected an operator (=, !=, =~, !~) after "foo", found end of input (column 4)"#,
        ],
    ),
    (
        "notify-unknown-channel",
        &[
            r#"notify-unknown-channel.toml:3:26: escalation.notify[1]: unknown channel "ops-hook": no escalation.channels entry has that name"#,
        ],
    ),
    (
        "runbook-and-runbook-from",
        &[
            r#"runbook-and-runbook-from.toml:2:1: routes[0]: both "runbook" and "runbook_from" are set; set exactly one"#,
        ],
    ),
    (
        "runbook-missing",
        &[
            r#"runbook-missing.toml:2:1: routes[0]: missing "runbook" or "runbook_from"; set exactly one (or ignore = true to take the alerts on purpose without a runbook)"#,
        ],
    ),
    (
        "runbook-path",
        &[
            r#"runbook-path.toml:3:11: routes[0].runbook: invalid runbook "../x.rhai": must be a file name in runbooks.dir, without '/' or '\'"#,
        ],
    ),
    (
        "several-errors",
        &[
            r#"several-errors.toml:4:11: escalation.notify[0]: unknown channel "nobody": no escalation.channels entry has that name"#,
            r#"several-errors.toml:7:11: routes[0].runbook: invalid runbook "../escape.rhai": must be a file name in runbooks.dir, without '/' or '\'"#,
            r#"several-errors.toml:8:14: routes[0].verify_for: invalid duration "soon": expected a number at position 1"#,
            r#"several-errors.toml:9:13: routes[0].rate_key[0]: invalid label name "instance-name": must match [a-zA-Z_][a-zA-Z0-9_]*"#,
            r#"several-errors.toml:12:10: server.listen: invalid listen address "localhost": expected <ip>:<port>, like "127.0.0.1:9095""#,
            r#"several-errors.toml:13:14: server.body_limit: invalid size 0: must be greater than zero"#,
            r#"several-errors.toml:16:11: runbooks.timeout: invalid duration "0s": must be greater than zero"#,
            r#"several-errors.toml:17:34: runbooks.allowed_commands[1]: must not be empty"#,
            r#"several-errors.toml:20:18: limits.max_concurrent: must be at least 1, not 0"#,
        ],
    ),
    (
        "syntax-error",
        &[r#"syntax-error.toml:3:25: invalid basic string"#],
    ),
    (
        "unknown-route-key",
        &[
            r#"unknown-route-key.toml:4:1: unknown field `matcher`, expected one of `name`, `matchers`, `runbook`, `runbook_from`, `ignore`, `verify_for`, `verify`, `tiers`, `renotify`, `rate`, `rate_key`, `max_in_flight`, `in_flight_key`, `dry_run`, `idempotent`, `breaker`, `maintenance`, `maintenance_action`, `manual_minutes`, `approval`"#,
        ],
    ),
    (
        "unknown-top-level-key",
        &[
            r#"unknown-top-level-key.toml:5:2: unknown field `alerting`, expected one of `server`, `store`, `runbooks`, `limits`, `routes`, `escalation`, `alertmanager`, `prometheus`, `ui`"#,
        ],
    ),
    (
        "unset-env-var",
        &[
            r#"unset-env-var.toml:3:17: server.webhook_token: environment variable MEDIC_TEST_UNSET_TOKEN is not set (write ${MEDIC_TEST_UNSET_TOKEN:-default} to give a default)"#,
        ],
    ),
    (
        "wrong-type",
        &[r#"wrong-type.toml:3:18: invalid type: string "many", expected an integer"#],
    ),
];

const MINUTE: Duration = Duration::from_secs(60);

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

fn read_fixture(name: &str) -> String {
    let path = fixture_dir().join(format!("{name}.toml"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// An environment holding only `vars`.
fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    move |name| {
        vars.iter()
            .find(|(var, _)| var == name)
            .map(|(_, value)| value.clone())
    }
}

fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    Config::parse(Path::new("medic.toml"), text, &env_of(env))
}

fn parse_ok(text: &str, env: &[(&str, &str)]) -> Config {
    parse(text, env).unwrap_or_else(|errors| panic!("unexpected errors:\n{errors}"))
}

/// `text` with an escalation policy that pages a file appended, for tests about
/// something else.
fn paged(text: &str) -> String {
    format!("{text}{TEST_ESCALATION}")
}

/// The error lines of `text`, which must be invalid, with [`paged`]'s escalation.
fn errors(text: &str) -> Vec<String> {
    unpaged_errors(&paged(text))
}

/// The error lines of `text` as it is, which must be invalid.
fn unpaged_errors(text: &str) -> Vec<String> {
    match parse(text, &[]) {
        Ok(config) => panic!("expected errors, parsed {config:#?}"),
        Err(errors) => errors.to_string().lines().map(str::to_owned).collect(),
    }
}

#[test]
fn each_invalid_fixture_gives_its_exact_errors() {
    let mut failures = Vec::new();
    for (name, expected) in INVALID_FIXTURES {
        let file = format!("{name}.toml");
        let actual = match Config::parse(Path::new(&file), &read_fixture(name), &env_of(&[])) {
            Ok(_) => vec!["(no errors)".to_owned()],
            Err(errors) => errors.to_string().lines().map(str::to_owned).collect(),
        };
        if actual != *expected {
            failures.push(format!(
                "{file}\n  expected:\n    {}\n  actual:\n    {}",
                expected.join("\n    "),
                actual.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn every_invalid_fixture_is_tested() {
    let entries = std::fs::read_dir(fixture_dir()).expect("fixture directory is readable");
    for entry in entries {
        let file_name = entry.expect("fixture entry").file_name();
        let file_name = file_name.to_string_lossy();
        let Some(name) = file_name.strip_suffix(".toml") else {
            continue;
        };
        assert!(
            name.starts_with("valid-")
                || INVALID_FIXTURES.iter().any(|(tested, _)| *tested == name),
            "fixture {file_name} is not in INVALID_FIXTURES"
        );
    }
}

#[test]
fn an_empty_file_escalates_to_nobody_and_is_refused() {
    assert_eq!(
        unpaged_errors(""),
        [
            "medic.toml: escalation: the default policy names no channel, so escalations of alerts that no route matches would reach nobody; name a channel in escalation.notify (or escalation.tiers), or set ignore = true on a route to take its alerts on purpose without a runbook or a page"
        ]
    );
}

#[test]
fn a_file_with_only_a_channel_gives_the_defaults() {
    let config = parse_ok(TEST_ESCALATION, &[]);
    assert_eq!(config.source, PathBuf::from("medic.toml"));
    assert_eq!(config.server, ServerConfig::default());
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:9095");
    assert_eq!(config.server.webhook_token, None);
    assert_eq!(config.server.api_token, None);
    assert_eq!(config.server.body_limit, 16 * 1024 * 1024);
    assert_eq!(config.server.request_timeout, Duration::from_secs(5));
    assert_eq!(config.store.url, "sqlite://data/medic.db");
    assert_eq!(config.runbooks.dir, PathBuf::from("runbooks"));
    assert!(config.runbooks.allowed_commands.is_empty());
    assert_eq!(config.runbooks.timeout, 5 * MINUTE);
    assert_eq!(config.limits.max_concurrent, 16);
    assert_eq!(config.limits.rate, None);
    assert!(config.routes.is_empty());
    assert_eq!(config.escalation.notify, ["log"]);
    assert_eq!(config.escalation.retry, RetryConfig::default());
    assert_eq!(
        config.escalation.channels[0].kind,
        ChannelKind::File {
            path: PathBuf::from("escalations.jsonl")
        }
    );
    assert!(config.warnings.is_empty());
}

#[test]
fn comments_and_empty_sections_also_give_the_defaults() {
    let config = parse_ok(
        &paged("# nothing set\n[server]\n[store]\n[runbooks]\n[limits]\n"),
        &[],
    );
    assert_eq!(config.server, ServerConfig::default());
    assert_eq!(config.store, StoreConfig::default());
    assert_eq!(config.runbooks, RunbooksConfig::default());
    assert_eq!(config.limits, LimitsConfig::default());
}

#[test]
fn the_full_example_parses_to_typed_values() {
    let config = parse_ok(&read_fixture("valid-full"), &[]);

    assert_eq!(
        config.server,
        ServerConfig {
            listen: "127.0.0.1:9095".parse().expect("address"),
            webhook_token: Some("hook-secret".to_owned()),
            api_token: None,
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(5),
            external_url: None,
            link_secret: None,
            link_ttl: Duration::from_secs(24 * 3600),
        }
    );
    assert_eq!(config.store.url, "sqlite://data/medic.db");
    assert_eq!(
        config.runbooks,
        RunbooksConfig {
            dir: PathBuf::from("runbooks"),
            allowed_commands: vec![
                "systemctl".to_owned(),
                "/usr/local/bin/cleanup-disk".to_owned()
            ],
            timeout: 5 * MINUTE,
            ..RunbooksConfig::default()
        }
    );
    assert_eq!(
        config.limits,
        LimitsConfig {
            max_concurrent: 16,
            rate: Some(Rate {
                count: 60,
                per: MINUTE
            }),
            ..LimitsConfig::default()
        }
    );

    let [disk, storage] = config.routes.as_slice() else {
        panic!("expected two routes, got {:#?}", config.routes);
    };
    assert_eq!(disk.name, "disk");
    assert_eq!(disk.matchers.len(), 2);
    assert_eq!(disk.matchers[0].name, "alertname");
    assert!(matches!(disk.matchers[0].op, MatchOp::Eq));
    assert_eq!(disk.matchers[0].value, "DiskFull");
    assert_eq!(disk.matchers[1].name, "severity");
    assert!(matches!(disk.matchers[1].op, MatchOp::Re));
    assert_eq!(disk.matchers[1].value, "warning|critical");
    assert_eq!(
        disk.target,
        RunbookTarget::File("disk_full.rhai".to_owned())
    );
    assert_eq!(disk.verify_for, 5 * MINUTE);
    assert_eq!(
        disk.rate,
        Some(Rate {
            count: 3,
            per: 10 * MINUTE
        })
    );
    assert_eq!(disk.rate_key, ["instance"]);
    assert_eq!(disk.max_in_flight, Some(1));
    assert_eq!(disk.in_flight_key, ["service"]);
    assert!(!disk.dry_run);
    assert!(disk.idempotent);
    assert_eq!(
        disk.breaker,
        Some(BreakerConfig {
            failures: 3,
            cooldown: 15 * MINUTE,
            key: vec!["instance".to_owned()],
            count_requested: true,
        })
    );
    assert_eq!(
        disk.location,
        Location {
            line: 22,
            column: 1
        }
    );

    assert_eq!(storage.name, "routes[1]");
    let matchers: Vec<_> = storage
        .matchers
        .iter()
        .map(|m| (m.name.as_str(), m.value.as_str()))
        .collect();
    assert_eq!(matchers, [("team", "storage"), ("env", "prod")]);
    assert_eq!(
        storage.target,
        RunbookTarget::Annotation("medic_runbook".to_owned())
    );
    assert_eq!(storage.verify_for, 5 * MINUTE);
    assert_eq!(storage.rate, None);
    assert!(storage.rate_key.is_empty());
    assert_eq!(storage.max_in_flight, None);
    assert!(storage.in_flight_key.is_empty());
    assert!(!storage.dry_run);
    assert!(!storage.idempotent);
    assert_eq!(storage.breaker, None);
    assert_eq!(
        storage.location,
        Location {
            line: 35,
            column: 1
        }
    );

    assert_eq!(config.escalation.notify, ["oncall-mail", "ops-hook"]);
    let channels: Vec<_> = config
        .escalation
        .channels
        .iter()
        .map(|channel| {
            (
                channel.name.as_str(),
                channel.kind.clone(),
                channel.location.line,
            )
        })
        .collect();
    assert_eq!(
        channels,
        [
            (
                "oncall-mail",
                ChannelKind::Email {
                    smtp: "127.0.0.1:25".to_owned(),
                    from: "medic@example.com".to_owned(),
                    to: vec!["oncall@example.com".to_owned()],
                    tls: SmtpTls::Opportunistic,
                    auth: None,
                },
                42
            ),
            (
                "ops-hook",
                ChannelKind::Webhook {
                    url: "http://127.0.0.1:8080/hook".to_owned()
                },
                49
            ),
            (
                "chat",
                ChannelKind::Slack {
                    url: "https://hooks.slack.example/services/T000/B000/XXXX".to_owned(),
                    signing_secret: Some("slack-signing".to_owned()),
                },
                54
            ),
            (
                "pager",
                ChannelKind::PagerDuty {
                    routing_key: "pd-routing-secret".to_owned(),
                    url: DEFAULT_PAGERDUTY_URL.to_owned(),
                    default_severity: "error".to_owned(),
                    webhook_secret: Some("pd-webhook".to_owned()),
                },
                60
            ),
        ]
    );
}

#[test]
fn the_environment_overrides_defaults_in_the_full_example() {
    let config = parse_ok(
        &read_fixture("valid-full"),
        &[
            ("MEDIC_WEBHOOK_TOKEN", "from-env"),
            ("MEDIC_API_TOKEN", "api-from-env"),
            ("PD_ROUTING_KEY", "pd-from-env"),
        ],
    );
    assert_eq!(config.server.webhook_token.as_deref(), Some("from-env"));
    assert_eq!(config.server.api_token.as_deref(), Some("api-from-env"));
    let pager = config
        .escalation
        .channels
        .last()
        .map(|channel| &channel.kind);
    assert!(
        matches!(pager, Some(ChannelKind::PagerDuty { routing_key, .. }) if routing_key == "pd-from-env"),
        "{pager:?}"
    );
}

#[test]
fn load_reads_the_file() {
    let path = fixture_dir().join("valid-full.toml");
    let config = Config::load(&path).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(config.source, path);
    assert_eq!(config.routes.len(), 2);
}

#[test]
fn load_of_a_missing_file_is_one_error_naming_it() {
    let path = fixture_dir().join("no-such-file.toml");
    let errors = Config::load(&path).expect_err("the file does not exist");
    assert_eq!(
        errors.to_string(),
        format!(
            "{}: cannot read config file: No such file or directory (os error 2)",
            path.display()
        )
    );
}

#[test]
fn every_string_value_is_expanded() {
    let config = parse_ok(
        r#"
            [escalation]
            notify = ["hook"]
            [store]
            url = "postgres://medic:${DB_PASSWORD}@${DB_HOST:-localhost}/medic"
            [runbooks]
            dir = "${RUNBOOKS}"
            allowed_commands = ["${TOOLS}/cleanup", "$$literal"]
            timeout = "${TIMEOUT:-2m}"
            [[routes]]
            name = "${ENVIRONMENT}-disk"
            matchers = ['env="${ENVIRONMENT}"', 'instance=~".*$"']
            runbook = "${RUNBOOK}"
            [[escalation.channels]]
            name = "hook"
            type = "${HOOK_TYPE}"
            url = "http://${HOOK_HOST}/hook"
        "#,
        &[
            ("DB_PASSWORD", "hunter2"),
            ("RUNBOOKS", "/etc/medic/runbooks"),
            ("TOOLS", "/opt/tools"),
            ("ENVIRONMENT", "prod"),
            ("RUNBOOK", "disk.rhai"),
            ("HOOK_TYPE", "webhook"),
            ("HOOK_HOST", "hooks.internal"),
        ],
    );
    assert_eq!(config.store.url, "postgres://medic:hunter2@localhost/medic");
    assert_eq!(config.runbooks.dir, PathBuf::from("/etc/medic/runbooks"));
    assert_eq!(
        config.runbooks.allowed_commands,
        ["/opt/tools/cleanup", "$literal"]
    );
    assert_eq!(config.runbooks.timeout, 2 * MINUTE);
    let route = &config.routes[0];
    assert_eq!(route.name, "prod-disk");
    assert_eq!(route.matchers[0].value, "prod");
    assert_eq!(route.matchers[1].value, ".*$");
    assert_eq!(route.target, RunbookTarget::File("disk.rhai".to_owned()));
    assert_eq!(
        config.escalation.channels[0].kind,
        ChannelKind::Webhook {
            url: "http://hooks.internal/hook".to_owned()
        }
    );
}

#[test]
fn empty_tokens_disable_auth() {
    let config = parse_ok(
        &paged("[server]\nwebhook_token = \"\"\napi_token = \"${EMPTY}\"\n"),
        &[("EMPTY", "")],
    );
    assert_eq!(config.server.webhook_token, None);
    assert_eq!(config.server.api_token, None);
}

#[test]
fn link_secret_is_expanded_and_at_least_32_bytes() {
    let secret = "0123456789abcdef0123456789abcdef";
    let config = parse_ok(
        &paged("[server]\nlink_secret = \"${S}\"\nlink_ttl = \"15m\"\n"),
        &[("S", secret)],
    );
    assert_eq!(config.server.link_secret.as_deref(), Some(secret));
    assert_eq!(config.server.link_ttl, Duration::from_secs(900));
    let unset = parse_ok(&paged("[server]\nlink_secret = \"\"\n"), &[]);
    assert_eq!(unset.server.link_secret, None);
    let short = errors("[server]\nlink_secret = \"too-short\"\n");
    assert!(
        short
            .iter()
            .any(|l| l.contains("server.link_secret") && l.contains("at least 32 bytes (it is 9)")),
        "{short:?}"
    );
    let zero = errors("[server]\nlink_ttl = \"0s\"\n");
    assert!(
        zero.iter().any(|l| l.contains("server.link_ttl")),
        "{zero:?}"
    );
}

#[test]
fn body_limit_takes_bytes_or_a_size_string() {
    let limit = |value: &str| {
        parse_ok(&paged(&format!("[server]\nbody_limit = {value}\n")), &[])
            .server
            .body_limit
    };
    assert_eq!(limit("4096"), 4096);
    assert_eq!(limit("\"4096\""), 4096);
    assert_eq!(limit("\"64KiB\""), 64 * 1024);
    assert_eq!(limit("\"2MiB\""), 2 * 1024 * 1024);
    assert_eq!(
        errors("[server]\nbody_limit = -1\n"),
        ["medic.toml:2:14: server.body_limit: invalid size -1: must be greater than zero"]
    );
    assert_eq!(
        errors("[server]\nbody_limit = true\n"),
        [
            r#"medic.toml:2:14: invalid type: boolean `true`, expected a size: an integer number of bytes or a string like "1MiB""#
        ]
    );
}

#[test]
fn listen_accepts_ipv6_and_port_zero() {
    let listen = |value: &str| {
        parse_ok(&paged(&format!("[server]\nlisten = \"{value}\"\n")), &[])
            .server
            .listen
            .to_string()
    };
    assert_eq!(listen("0.0.0.0:0"), "0.0.0.0:0");
    assert_eq!(listen("[::1]:9095"), "[::1]:9095");
}

#[test]
fn store_urls() {
    let url = |value: &str| {
        parse(&paged(&format!("[store]\nurl = \"{value}\"\n")), &[]).map(|config| config.store.url)
    };
    assert_eq!(
        url("sqlite://data/medic.db").ok().as_deref(),
        Some("sqlite://data/medic.db")
    );
    assert_eq!(
        url("postgres://db/medic").ok().as_deref(),
        Some("postgres://db/medic")
    );
    assert_eq!(
        url("postgresql://db/medic").ok().as_deref(),
        Some("postgresql://db/medic")
    );
    assert_eq!(
        errors("[store]\nurl = \"sqlite://\"\n"),
        [
            r#"medic.toml:2:7: store.url: invalid store URL "sqlite://": missing the database file, like "sqlite://data/medic.db""#
        ]
    );
}

#[test]
fn routes_may_be_written_as_inline_tables() {
    let config = parse_ok(
        &paged("routes = [\n  { runbook = \"a.rhai\" },\n  { runbook = \"b.rhai\", breaker = { failures = 1, cooldown = \"1m\" } },\n]\n"),
        &[],
    );
    let summary: Vec<_> = config
        .routes
        .iter()
        .map(|route| (route.name.as_str(), route.location, route.breaker.is_some()))
        .collect();
    assert_eq!(
        summary,
        [
            ("routes[0]", Location { line: 2, column: 3 }, false),
            ("routes[1]", Location { line: 3, column: 3 }, true),
        ]
    );
    // Matching everything is allowed: no matchers at all.
    assert!(config.routes[0].matchers.is_empty());
}

#[test]
fn breaker_may_be_a_sub_table() {
    let config = parse_ok(
        &paged("[[routes]]\nrunbook = \"a.rhai\"\n[routes.breaker]\nfailures = 2\ncooldown = \"30s\"\nkey = [\"service\"]\n"),
        &[],
    );
    assert_eq!(
        config.routes[0].breaker,
        Some(BreakerConfig {
            failures: 2,
            cooldown: Duration::from_secs(30),
            key: vec!["service".to_owned()],
            count_requested: true,
        })
    );
}

#[test]
fn breaker_count_requested_may_be_turned_off() {
    let config = parse_ok(
        &paged("[[routes]]\nrunbook = \"a.rhai\"\nbreaker = { failures = 2, cooldown = \"1m\", count_requested = false }\n"),
        &[],
    );
    assert!(!config.routes[0].breaker.as_ref().unwrap().count_requested);
}

#[test]
fn report_keys_have_defaults_and_are_checked() {
    let config = parse_ok(&paged("[[routes]]\nrunbook = \"x.rhai\"\n"), &[]);
    assert_eq!(config.limits.relapse_window, Duration::from_secs(3600));
    assert_eq!(config.routes[0].manual_minutes, None);

    let config = parse_ok(
        &paged("[limits]\nrelapse_window = \"30m\"\n[[routes]]\nrunbook = \"x.rhai\"\nmanual_minutes = 15\n"),
        &[],
    );
    assert_eq!(config.limits.relapse_window, Duration::from_secs(1800));
    assert_eq!(config.routes[0].manual_minutes, Some(15));

    assert_eq!(
        errors("[limits]\nrelapse_window = \"soon\"\n[[routes]]\nrunbook = \"x.rhai\"\nmanual_minutes = 0\n"),
        [
            r#"medic.toml:2:18: limits.relapse_window: invalid duration "soon": expected a number at position 1"#,
            "medic.toml:5:18: routes[0].manual_minutes: must be at least 1, not 0",
        ]
    );
}

#[test]
fn route_and_channel_errors_point_at_their_values() {
    assert_eq!(
        errors("[[routes]]\nrunbook = \"x.rhai\"\nmax_in_flight = 0\nrate = \"3/0s\"\nin_flight_key = [\"1st\"]\n"),
        [
            "medic.toml:3:17: routes[0].max_in_flight: must be at least 1, not 0",
            r#"medic.toml:4:8: routes[0].rate: invalid rate "3/0s": invalid duration "0s": must be greater than zero"#,
            r#"medic.toml:5:18: routes[0].in_flight_key[0]: invalid label name "1st": must match [a-zA-Z_][a-zA-Z0-9_]*"#,
        ]
    );
    assert_eq!(
        errors("[[routes]]\nrunbook = \"x.rhai\"\nmax_in_flight = 99999999999\n"),
        ["medic.toml:3:17: routes[0].max_in_flight: 99999999999 is too large"]
    );
    assert_eq!(
        errors("[[routes]]\nrunbook = \"notes.txt\"\n[[routes]]\nrunbook = \".hidden.rhai\"\n"),
        [
            r#"medic.toml:2:11: routes[0].runbook: invalid runbook "notes.txt": must end in ".rhai""#,
            r#"medic.toml:4:11: routes[1].runbook: invalid runbook ".hidden.rhai": must not start with '.'"#,
        ]
    );
}

#[test]
fn debug_output_hides_secrets() {
    let config = parse_ok(
        r#"
            [escalation]
            notify = ["pager"]
            [server]
            webhook_token = "${WEBHOOK_TOKEN}"
            api_token = "api-secret-value"
            link_secret = "${LINK_SECRET}"
            [store]
            url = "postgres://medic:db-secret-value@db/medic"
            [[escalation.channels]]
            name = "pager"
            type = "pagerduty"
            routing_key = "pd-secret-value"
            webhook_secret = "pd-webhook-secret-value"
            [[escalation.channels]]
            name = "chat"
            type = "slack"
            url = "https://hooks.slack.example/services/slack-secret-value"
            signing_secret = "slack-signing-secret-value"
            [[escalation.channels]]
            name = "hook"
            type = "webhook"
            url = "https://user:hook-secret-value@hooks.example/x"
        "#,
        &[
            ("WEBHOOK_TOKEN", "webhook-secret-value"),
            ("LINK_SECRET", "link-secret-value-link-secret-value-0123"),
        ],
    );
    assert!(config.server.link_secret.is_some());
    for debug in [format!("{config:?}"), format!("{config:#?}")] {
        assert!(!debug.contains("secret-value"), "a secret leaked: {debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(
            debug.contains("postgres://medic:<redacted>@db/medic"),
            "{debug}"
        );
        assert!(
            debug.contains("https://user:<redacted>@hooks.example/x"),
            "{debug}"
        );
    }
    // The values themselves are intact.
    assert_eq!(
        config.server.webhook_token.as_deref(),
        Some("webhook-secret-value")
    );
    assert_eq!(
        config.store.url,
        "postgres://medic:db-secret-value@db/medic"
    );
}

#[test]
fn url_passwords_are_redacted() {
    let check = |url: &str, expected: &str| assert_eq!(redact_url_password(url), expected, "{url}");
    check("postgres://u:p@h/db", "postgres://u:<redacted>@h/db");
    check("postgres://u:p@h", "postgres://u:<redacted>@h");
    check("postgres://u@h/db", "postgres://u@h/db");
    check("postgres://h/db?x=a@b", "postgres://h/db?x=a@b");
    check("sqlite://data/medic.db", "sqlite://data/medic.db");
    check("not a url", "not a url");
    check(
        "postgres://u@h/db?sslmode=require&password=p&application_name=medic",
        "postgres://u@h/db?sslmode=require&password=<redacted>&application_name=medic",
    );
    check(
        "postgres://u:p@h/db?password=q",
        "postgres://u:<redacted>@h/db?password=<redacted>",
    );
}

#[test]
fn label_names() {
    for valid in ["a", "_", "instance", "__name__", "job_2", "A"] {
        assert!(is_identifier(valid), "{valid:?}");
    }
    for invalid in ["", "1a", "pod-name", "a.b", "é", " a"] {
        assert!(!is_identifier(invalid), "{invalid:?}");
    }
}

#[test]
fn escalation_policies_channel_options_and_verification() {
    let config = parse_ok(&read_fixture("valid-escalation"), &[]);
    assert_eq!(
        config.server.external_url.as_deref(),
        Some("https://medic.example.com")
    );
    let default = Policy {
        tiers: vec![
            Tier {
                after: Duration::ZERO,
                notify: vec!["oncall-mail".to_owned(), "chat".to_owned()],
            },
            Tier {
                after: 15 * MINUTE,
                notify: vec!["pager".to_owned()],
            },
        ],
        renotify: Some(4 * 60 * MINUTE),
    };
    assert_eq!(config.escalation.policy, default);
    assert_eq!(
        config.escalation.retry,
        RetryConfig {
            initial: Duration::from_millis(200),
            max: MINUTE,
            attempts: 5,
            fall_through_after: 2,
        }
    );
    let mail = config.escalation.channel("oncall-mail").expect("mail");
    assert_eq!(mail.timeout, Duration::from_secs(5));
    assert_eq!(
        mail.kind,
        ChannelKind::Email {
            smtp: "smtp.example.com:587".to_owned(),
            from: "medic@example.com".to_owned(),
            to: vec![
                "oncall@example.com".to_owned(),
                "lead@example.com".to_owned()
            ],
            tls: SmtpTls::StartTls,
            auth: Some(("medic".to_owned(), "mail-secret".to_owned())),
        }
    );
    assert!(!format!("{mail:?}").contains("mail-secret"));
    let pager = config.escalation.channel("pager").expect("pager");
    assert!(
        matches!(&pager.kind, ChannelKind::PagerDuty { default_severity, .. } if default_severity == "warning")
    );
    assert_eq!(pager.timeout, DEFAULT_CHANNEL_TIMEOUT);

    let [db, web, plain] = config.routes.as_slice() else {
        panic!("three routes");
    };
    assert_eq!(db.verify, VerifyMode::Alertmanager);
    assert_eq!(db.verify_for, 2 * MINUTE);
    assert_eq!(
        config.policy_for(Some("db")),
        &Policy {
            tiers: vec![Tier {
                after: Duration::ZERO,
                notify: vec!["pager".to_owned()],
            }],
            renotify: None,
        }
    );
    assert_eq!(web.verify, VerifyMode::Notification);
    // `renotify` alone: the default tiers, repeated every 30m.
    assert_eq!(
        config.policy_for(Some("web")),
        &Policy {
            renotify: Some(30 * MINUTE),
            ..default.clone()
        }
    );
    assert_eq!(plain.policy, None);
    assert_eq!(config.policy_for(Some("plain")), &default);
    assert_eq!(config.policy_for(None), &default);
}

#[test]
fn notify_is_the_default_policy_at_once() {
    let config = parse_ok(
        "[escalation]\nnotify = [\"hook\"]\n[[escalation.channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://h/x\"\n",
        &[],
    );
    assert_eq!(
        config.escalation.policy.tiers,
        [Tier {
            after: Duration::ZERO,
            notify: vec!["hook".to_owned()],
        }]
    );
    assert_eq!(config.escalation.policy.renotify, None);
}

#[test]
fn ignore_is_the_only_way_to_tell_nobody() {
    let config = parse_ok(&read_fixture("valid-ignore"), &[]);
    assert!(config.escalation.channels.is_empty());
    assert!(config.escalation.policy.tiers.is_empty());
    let targets: Vec<_> = config
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.target.clone()))
        .collect();
    assert_eq!(
        targets,
        [
            ("watchdog", RunbookTarget::Ignore),
            ("everything-else", RunbookTarget::Ignore)
        ]
    );
    // Without the catch-all, alerts no route matches would page nobody.
    assert_eq!(
        unpaged_errors("[[routes]]\nmatchers = ['alertname=\"Watchdog\"']\nignore = true\n"),
        [
            "medic.toml: escalation: the default policy names no channel, so escalations of alerts that no route matches would reach nobody; name a channel in escalation.notify (or escalation.tiers), or set ignore = true on a route to take its alerts on purpose without a runbook or a page"
        ]
    );
    // A route with its own tiers and a catch-all ignore need no default policy.
    let config = parse_ok(
        "[[routes]]\nrunbook = \"a.rhai\"\nmatchers = ['team=\"db\"']\ntiers = [{ after = \"0s\", notify = [\"log\"] }]\n[[routes]]\nignore = true\n[[escalation.channels]]\nname = \"log\"\ntype = \"file\"\npath = \"e.jsonl\"\n",
        &[],
    );
    assert!(config.escalation.policy.tiers.is_empty());
    // `ignore = false` is an ordinary route.
    assert_eq!(
        unpaged_errors("[[routes]]\nignore = false\n"),
        [
            "medic.toml: escalation: the default policy names no channel, so escalations of route \"routes[0]\" and alerts that no route matches would reach nobody; name a channel in escalation.notify (or escalation.tiers), or set ignore = true on a route to take its alerts on purpose without a runbook or a page",
            r#"medic.toml:1:1: routes[0]: missing "runbook" or "runbook_from"; set exactly one (or ignore = true to take the alerts on purpose without a runbook)"#,
        ]
    );
}

#[test]
fn the_shipped_config_with_notify_empty_is_refused() {
    // The form the example configuration shipped with: every escalation recorded,
    // nobody told.
    assert_eq!(
        unpaged_errors("[[routes]]\nname = \"disk-full\"\nmatchers = ['alertname=\"DiskFull\"']\nrunbook = \"disk_full.rhai\"\n\n[escalation]\nnotify = []\n"),
        [
            "medic.toml:7:10: escalation.notify: the default policy names no channel, so escalations of route \"disk-full\" and alerts that no route matches would reach nobody; name a channel in escalation.notify (or escalation.tiers), or set ignore = true on a route to take its alerts on purpose without a runbook or a page"
        ]
    );
}

#[test]
fn verify_for_shorter_than_the_group_interval_warns() {
    let config = parse_ok(
        &paged("[[routes]]\nname = \"fast\"\nrunbook = \"a.rhai\"\nverify_for = \"1m\"\n[[routes]]\nname = \"slow\"\nrunbook = \"b.rhai\"\nverify_for = \"5m\"\n"),
        &[],
    );
    let warnings: Vec<String> = config.warnings.iter().map(|w| w.as_warning()).collect();
    assert_eq!(
        warnings,
        [
            r#"medic.toml:4:14: warning: routes[0].verify_for: 1m is shorter than Alertmanager's default group_interval (5m): Alertmanager tells medic that an alert resolved only at the next group_interval, so an alert the runbook fixed may be escalated still_firing; set verify_for to at least the group_interval of its Alertmanager route, or verify = "alertmanager" to ask Alertmanager's API"#
        ]
    );
    // Asking Alertmanager's API does not wait for a notification.
    let config = parse_ok(
        &paged("[alertmanager]\nurl = \"http://127.0.0.1:9093\"\n[[routes]]\nrunbook = \"a.rhai\"\nverify_for = \"1m\"\nverify = \"alertmanager\"\n"),
        &[],
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn offline_purposes_do_not_need_the_secrets_of_serve() {
    let text = paged(
        "[server]\nwebhook_token = \"${MEDIC_WEBHOOK_TOKEN}\"\napi_token = \"${MEDIC_API_TOKEN}\"\n[runbooks.secrets]\nADMIN = \"${ADMIN_TOKEN}\"\n[[escalation.channels]]\nname = \"pager\"\ntype = \"pagerduty\"\nrouting_key = \"${PD_ROUTING_KEY}\"\n",
    );
    let load = |purpose| Config::parse_for(Path::new("medic.toml"), &text, &env_of(&[]), purpose);
    let serve = load(Purpose::Serve).expect_err("serve needs every secret");
    assert_eq!(serve.0.len(), 4, "{serve}");
    // `medic test` and `replay` use the runbooks' secrets, not the server's or the channels'.
    let offline = load(Purpose::Offline).expect_err("runbook secrets are used offline");
    assert_eq!(
        offline.to_string(),
        "medic.toml:5:9: runbooks.secrets.ADMIN: environment variable ADMIN_TOKEN is not set (write ${ADMIN_TOKEN:-default} to give a default)"
    );
    let audit = load(Purpose::Audit).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(audit.server.webhook_token, None);
    assert_eq!(audit.server.api_token, None);
}

/// `medic hash-password` of "hunter2".
const HUNTER2_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$ekXV1QgHAj1v9OT0MliIxw$mT49nieAymqOtZQpL0A6p4D2qJTNcaZaJfvmtbvBjsY";

#[test]
fn ui_users_parse_to_names_hashes_and_roles() {
    let config = parse_ok(
        &paged(&format!(
            r#"
[[ui.users]]
name = "alice"
password_hash = "{HUNTER2_HASH}"
role = "responder"

[[ui.users]]
name = "bob"
password_hash = "${{BOB_HASH}}"
role = "viewer"

[[ui.users]]
name = "carol"
password_hash = '{HUNTER2_HASH}'
role = "admin"
"#
        )),
        &[("BOB_HASH", HUNTER2_HASH)],
    );
    let users: Vec<(&str, &str, Role)> = config
        .ui
        .users
        .iter()
        .map(|u| (u.name.as_str(), u.password_hash.as_str(), u.role))
        .collect();
    assert_eq!(
        users,
        [
            ("alice", HUNTER2_HASH, Role::Responder),
            ("bob", HUNTER2_HASH, Role::Viewer),
            ("carol", HUNTER2_HASH, Role::Admin),
        ]
    );
    assert_eq!(
        config.ui.authenticate("alice", "hunter2").map(|u| u.role),
        Some(Role::Responder)
    );
    assert_eq!(config.ui.authenticate("alice", "hunter3"), None);
    for debug in [format!("{config:?}"), format!("{config:#?}")] {
        assert!(!debug.contains("argon2"), "a password hash leaked: {debug}");
        assert!(debug.contains("\"alice\""), "{debug}");
    }
}

#[test]
fn no_ui_section_means_no_users() {
    assert_eq!(parse_ok(&paged(""), &[]).ui, UiConfig::default());
    assert!(parse_ok(&paged("[ui]\n"), &[]).ui.users.is_empty());
}

#[test]
fn ui_user_errors_name_their_key_and_line() {
    let text = format!(
        r#"[[ui.users]]
name = ""
password_hash = "nope"
role = "root"
[[ui.users]]
name = "alice"
[[ui.users]]
name = "alice"
password_hash = '$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'
role = "admin"
[[ui.users]]
password_hash = "{HUNTER2_HASH}"
role = "Viewer"
[[ui.users]]
name = "dave"
password_hash = '$argon2id$v=19$m=19456,t=2,p=1$ekXV1QgHAj1v9OT0MliIxw'
role = "viewer"
[[ui.users]]
name = "erin"
password_hash = "${{ERIN_HASH}}"
role = "viewer"
"#
    );
    assert_eq!(
        errors(&text),
        [
            "medic.toml:2:8: ui.users[0].name: must not be empty",
            "medic.toml:3:17: ui.users[0].password_hash: invalid password hash: not a PHC string (password hash string missing field); make one with `medic hash-password`",
            r#"medic.toml:4:8: ui.users[0].role: unknown role "root" (use viewer, responder or admin)"#,
            "medic.toml:5:1: ui.users[1]: missing required key \"password_hash\" (make one with `medic hash-password`)",
            "medic.toml:5:1: ui.users[1]: missing required key \"role\" (viewer, responder or admin)",
            r#"medic.toml:8:8: ui.users[2].name: duplicate user name "alice" (first used on line 6)"#,
            r#"medic.toml:9:17: ui.users[2].password_hash: invalid password hash: algorithm "pbkdf2-sha256" is not argon2 (use argon2id); make one with `medic hash-password`"#,
            r#"medic.toml:11:1: ui.users[3]: missing required key "name""#,
            r#"medic.toml:13:8: ui.users[3].role: unknown role "Viewer" (use viewer, responder or admin)"#,
            "medic.toml:16:17: ui.users[4].password_hash: invalid password hash: the salt or the hash is missing; make one with `medic hash-password`",
            "medic.toml:20:17: ui.users[5].password_hash: environment variable ERIN_HASH is not set (write ${ERIN_HASH:-default} to give a default)",
        ]
    );
    // An unknown key is refused, with its position, like everywhere else.
    let error = unpaged_errors("[[ui.users]]\nname = \"a\"\npassword = \"x\"\n");
    assert_eq!(error.len(), 1, "{error:?}");
    assert!(
        error[0].starts_with("medic.toml:3:1: unknown field `password`"),
        "{error:?}"
    );
}

#[test]
fn offline_purposes_leave_out_users_whose_hash_is_unset() {
    let text = paged(&format!(
        "[[ui.users]]\nname = \"a\"\npassword_hash = \"${{A_HASH}}\"\nrole = \"admin\"\n[[ui.users]]\nname = \"b\"\npassword_hash = '{HUNTER2_HASH}'\nrole = \"viewer\"\n"
    ));
    let config = Config::parse_for(
        Path::new("medic.toml"),
        &text,
        &env_of(&[]),
        Purpose::Offline,
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let names: Vec<&str> = config.ui.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["b"]);
}
