//! Guard decisions with time under test control: `tokio::time::pause` drives the rate
//! limiters' clock; breakers and windows take `now` as an argument.

use std::time::Duration;

use chrono::TimeZone;

use super::*;

/// The guards with the limits of the configuration in force, as the engine holds them
/// (the limits in its configuration snapshot).
struct Under {
    guards: Guards,
    limits: Limits,
}

impl Under {
    fn new(cfg: Config, breakers: Vec<BreakerEntry>) -> Under {
        let guards = Guards::new(breakers, None);
        let limits = guards.limits(Arc::new(cfg));
        Under { guards, limits }
    }

    fn admit(&self, c: &Candidate, now: DateTime<Utc>) -> Decision {
        self.guards.admit(&self.limits, c, now)
    }

    fn record(
        &self,
        id: &str,
        incident: &str,
        success: bool,
        now: DateTime<Utc>,
    ) -> Option<(BreakerEntry, bool)> {
        self.guards.record(&self.limits, id, incident, success, now)
    }

    fn step(&self, kind: StepKind, key: &str) -> Result<(), (Reason, Limit, String)> {
        self.guards.step(&self.limits, kind, key)
    }

    /// A reload: the limits of a new configuration.
    fn reconfigure(&mut self, cfg: Config) {
        self.limits = self.guards.limits(Arc::new(cfg));
    }
}

impl std::ops::Deref for Under {
    type Target = Guards;

    fn deref(&self) -> &Guards {
        &self.guards
    }
}

fn guards(toml: &str) -> Under {
    let cfg = Config::parse(
        std::path::Path::new("t.toml"),
        &format!("{toml}{}", crate::config::TEST_ESCALATION),
        &|_| None,
    )
    .expect("config");
    Under::new(cfg, Vec::new())
}

fn cand(id: &str, route: &str, labels: &[(&str, &str)]) -> Candidate {
    Candidate {
        id: id.into(),
        route: Some(route.into()),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
}

fn refused(d: &Decision) -> (Limit, Reason, String) {
    match d {
        Decision::Refuse {
            reason,
            limit,
            message,
        } => (*limit, *reason, message.clone()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

const ROUTE_RATE: &str = r#"
[[routes]]
name = "disk"
runbook = "d.rhai"
rate = "3/10m"
rate_key = ["instance"]
"#;

#[tokio::test(start_paused = true)]
async fn route_rate_refuses_exactly_past_its_budget_and_recovers() {
    let g = guards(ROUTE_RATE);
    let a = |i: u32| cand(&format!("a{i}"), "disk", &[("instance", "a")]);
    for i in 0..3 {
        assert!(matches!(g.admit(&a(i), now()), Decision::Run(_)), "run {i}");
    }
    let (limit, reason, msg) = refused(&g.admit(&a(3), now()));
    assert_eq!((limit, reason), (Limit::RouteRate, Reason::RateLimited));
    assert_eq!(
        msg,
        "route \"disk\" allows 3/10m runs per instance=a (routes.rate)"
    );
    // Another instance has its own budget.
    assert!(matches!(
        g.admit(&cand("b0", "disk", &[("instance", "b")]), now()),
        Decision::Run(_)
    ));
    // One run's worth comes back after a third of the window, all of it after the window.
    tokio::time::advance(Duration::from_secs(199)).await;
    assert!(matches!(g.admit(&a(4), now()), Decision::Refuse { .. }));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(matches!(g.admit(&a(5), now()), Decision::Run(_)));
    assert!(matches!(g.admit(&a(6), now()), Decision::Refuse { .. }));
    tokio::time::advance(Duration::from_secs(600)).await;
    for i in 7..10 {
        assert!(matches!(g.admit(&a(i), now()), Decision::Run(_)), "run {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn global_rate_counts_every_route() {
    let g = guards("[limits]\nrate = \"2/1m\"\n[[routes]]\nname = \"r\"\nrunbook = \"r.rhai\"\n");
    assert!(matches!(
        g.admit(&cand("1", "r", &[]), now()),
        Decision::Run(_)
    ));
    assert!(matches!(
        g.admit(&cand("2", "other", &[]), now()),
        Decision::Run(_)
    ));
    let (limit, _, msg) = refused(&g.admit(&cand("3", "r", &[]), now()));
    assert_eq!(limit, Limit::GlobalRate);
    assert_eq!(msg, "medic allows 2/1m runbook runs in all (limits.rate)");
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(matches!(
        g.admit(&cand("4", "r", &[]), now()),
        Decision::Run(_)
    ));
}

#[tokio::test]
async fn in_flight_cap_makes_incidents_wait_per_key() {
    let g = guards("[[routes]]\nname = \"svc\"\nrunbook = \"r.rhai\"\nmax_in_flight = 1\nin_flight_key = [\"service\"]\n");
    let Decision::Run(t1) = g.admit(&cand("1", "svc", &[("service", "db")]), now()) else {
        panic!()
    };
    assert!(matches!(
        g.admit(&cand("2", "svc", &[("service", "db")]), now()),
        Decision::Wait(Limit::MaxInFlight)
    ));
    assert!(matches!(
        g.admit(&cand("3", "svc", &[("service", "web")]), now()),
        Decision::Run(_)
    ));
    g.release(&t1);
    assert!(matches!(
        g.admit(&cand("2", "svc", &[("service", "db")]), now()),
        Decision::Run(_)
    ));
}

const BREAKER: &str = r#"
[[routes]]
name = "restart"
runbook = "r.rhai"
breaker = { failures = 2, cooldown = "15m", key = ["instance"] }
"#;

#[tokio::test]
async fn breaker_opens_half_opens_and_closes() {
    let g = guards(BREAKER);
    let c = |id: &str| cand(id, "restart", &[("instance", "a")]);
    let t = |min: i64| now() + chrono::Duration::minutes(min);
    for id in ["i1", "i2"] {
        let Decision::Run(ticket) = g.admit(&c(id), t(0)) else {
            panic!()
        };
        let bid = ticket.breaker.clone().unwrap();
        g.record(&bid, id, false, t(1));
    }
    let (limit, reason, msg) = refused(&g.admit(&c("i3"), t(2)));
    assert_eq!((limit, reason), (Limit::Breaker, Reason::CircuitOpen));
    assert!(msg.contains("incidents i1, i2"), "{msg}");
    // Another instance has its own breaker.
    assert!(matches!(
        g.admit(&cand("b1", "restart", &[("instance", "b")]), t(2)),
        Decision::Run(_)
    ));
    // After the cooldown one trial goes through; others wait for its result.
    let Decision::Run(trial) = g.admit(&c("trial"), t(16)) else {
        panic!("trial")
    };
    assert!(matches!(g.admit(&c("i4"), t(16)), Decision::Refuse { .. }));
    let (entry, changed) = g
        .record(trial.breaker.as_deref().unwrap(), "trial", true, t(17))
        .unwrap();
    assert!(changed);
    assert_eq!(entry.breaker.state, breaker::State::Closed);
    assert_eq!(entry.key.get("instance").map(String::as_str), Some("a"));
    assert!(matches!(g.admit(&c("i5"), t(18)), Decision::Run(_)));
    assert_eq!(g.breakers().len(), 2);
}

#[tokio::test]
async fn breaker_state_is_restored_from_what_the_store_kept() {
    let cfg = Config::parse(
        std::path::Path::new("t.toml"),
        &format!("{BREAKER}{}", crate::config::TEST_ESCALATION),
        &|_| None,
    )
    .unwrap();
    let id = breaker_id("restart", "instance=a");
    let kept = BreakerEntry {
        id: id.clone(),
        route: "restart".into(),
        key: [("instance".to_string(), "a".to_string())]
            .into_iter()
            .collect(),
        breaker: Breaker {
            state: breaker::State::Open,
            consecutive_failures: 2,
            opened_at: Some(now()),
            failures: vec!["x".into(), "y".into()],
            trial: None,
        },
    };
    let g = Under::new(cfg, vec![kept]);
    let (limit, _, _) = refused(&g.admit(&cand("z", "restart", &[("instance", "a")]), now()));
    assert_eq!(limit, Limit::Breaker);
    assert_eq!(g.reset(&id).unwrap().breaker.state, breaker::State::Closed);
    assert!(matches!(
        g.admit(&cand("z", "restart", &[("instance", "a")]), now()),
        Decision::Run(_)
    ));
}

#[tokio::test]
async fn pause_refuses_runs_and_steps() {
    let g = guards("[limits]\nexec_rate = \"2/1m\"\n");
    g.set_paused(Some(Pause {
        by: "alice".into(),
        at: now(),
        reason: "deploy".into(),
    }));
    let (limit, reason, msg) = refused(&g.admit(&cand("1", "any", &[]), now()));
    assert_eq!((limit, reason), (Limit::Paused, Reason::Paused));
    assert!(msg.contains("by alice") && msg.contains("deploy"), "{msg}");
    assert_eq!(
        g.step(StepKind::Exec, "systemctl").unwrap_err().0,
        Reason::Paused
    );
    g.set_paused(None);
    assert!(matches!(
        g.admit(&cand("1", "any", &[]), now()),
        Decision::Run(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn step_rates_count_per_program_and_host() {
    let g = guards("[limits]\nexec_rate = \"2/1m\"\nhttp_rate = \"1/1m\"\n");
    assert!(g.step(StepKind::Exec, "systemctl").is_ok());
    assert!(g.step(StepKind::Exec, "systemctl").is_ok());
    let (reason, limit, msg) = g.step(StepKind::Exec, "systemctl").unwrap_err();
    assert_eq!((reason, limit), (Reason::RateLimited, Limit::ExecRate));
    assert_eq!(
        msg,
        "exec of systemctl refused: limits.exec_rate allows 2/1m per program"
    );
    assert!(
        g.step(StepKind::Exec, "df").is_ok(),
        "another program has its own budget"
    );
    assert!(g.step(StepKind::Http, "admin:8080").is_ok());
    assert!(g.step(StepKind::Http, "admin:8080").is_err());
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(g.step(StepKind::Http, "admin:8080").is_ok());
}

#[tokio::test]
async fn maintenance_windows_wait_or_escalate() {
    let toml = r#"
[[routes]]
name = "waits"
runbook = "r.rhai"
maintenance = [{ weekdays = ["mon"], start = "09:00", end = "11:00", timezone = "UTC" }]

[[routes]]
name = "escalates"
runbook = "r.rhai"
maintenance = [{ start = "09:00", end = "11:00" }]
maintenance_action = "escalate"
"#;
    let g = guards(toml);
    // 2026-11-23 10:00 UTC is a Monday, inside both windows.
    assert!(matches!(
        g.admit(&cand("1", "waits", &[]), now()),
        Decision::Wait(Limit::MaintenanceWindow)
    ));
    let (limit, reason, msg) = refused(&g.admit(&cand("2", "escalates", &[]), now()));
    assert_eq!((limit, reason), (Limit::Maintenance, Reason::Paused));
    assert!(
        msg.contains("maintenance window (09:00-11:00 UTC)"),
        "{msg}"
    );
    let later = now() + chrono::Duration::hours(2);
    assert!(matches!(
        g.admit(&cand("1", "waits", &[]), later),
        Decision::Run(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_rate_windows() {
    let mut g = guards(ROUTE_RATE);
    let a = |i: u32| cand(&format!("a{i}"), "disk", &[("instance", "a")]);
    for i in 0..3 {
        assert!(matches!(g.admit(&a(i), now()), Decision::Run(_)));
    }
    let cfg = Config::parse(
        std::path::Path::new("t.toml"),
        &format!("{ROUTE_RATE}{}", crate::config::TEST_ESCALATION),
        &|_| None,
    )
    .unwrap();
    g.reconfigure(cfg);
    assert!(
        matches!(g.admit(&a(3), now()), Decision::Refuse { .. }),
        "a reload must not refill the budget"
    );
}

#[test]
fn gcra_allows_the_burst_then_one_per_interval() {
    use crate::guard::gcra;
    let rate = Rate {
        count: 3,
        per: std::time::Duration::from_secs(600),
    };
    let mut tat = None;
    for _ in 0..3 {
        tat = Some(gcra(tat, 0, rate).expect("within the burst"));
    }
    assert_eq!(gcra(tat, 0, rate), None, "the fourth at once is refused");
    assert_eq!(
        gcra(tat, 199_000_000, rate),
        None,
        "still refused just before a slot frees"
    );
    assert!(
        gcra(tat, 200_000_000, rate).is_some(),
        "one more after a third of the window"
    );
}

#[test]
fn step_kinds_keep_their_names_in_the_audit_log_and_metrics() {
    let names: Vec<_> = StepKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(names, ["exec", "http", "sleep", "silence", "query"]);
    for kind in StepKind::ALL {
        assert_eq!(serde_json::json!(kind), kind.as_str());
        assert_eq!(kind.to_string(), kind.as_str());
    }
}

#[tokio::test(start_paused = true)]
async fn only_exec_and_http_steps_have_rates() {
    let g = guards("[limits]\nexec_rate = \"1/1m\"\nhttp_rate = \"1/1m\"\n");
    for kind in [StepKind::Sleep, StepKind::Silence, StepKind::Query] {
        assert!(g.step(kind, "").is_ok());
        assert!(g.step(kind, "").is_ok(), "{kind} has no rate");
    }
}

/// The names of the limits are what the audit log (`refused_by`), the metrics, the logs and
/// the messages have always said: as a string, displayed and serialized.
#[test]
fn limits_are_named_as_before() {
    let table = [
        (Limit::Paused, "paused"),
        (Limit::MaintenanceWindow, "maintenance window"),
        (Limit::Maintenance, "maintenance"),
        (Limit::MaxInFlight, "max_in_flight"),
        (Limit::Breaker, "breaker"),
        (Limit::RouteRate, "route_rate"),
        (Limit::GlobalRate, "global_rate"),
        (Limit::MaxQueued, "max_queued"),
        (Limit::ExecRate, "exec_rate"),
        (Limit::HttpRate, "http_rate"),
    ];
    assert_eq!(table.map(|(l, _)| l), Limit::ALL, "every limit, in order");
    for (limit, name) in table {
        assert_eq!(limit.as_str(), name);
        assert_eq!(limit.to_string(), name);
        assert_eq!(
            serde_json::to_value(limit).unwrap(),
            serde_json::json!(name)
        );
        assert_eq!(
            serde_json::json!({ "refused_by": limit }).to_string(),
            format!(r#"{{"refused_by":"{name}"}}"#)
        );
    }
}
