//! The webhook endpoint through real HTTP against the real binary: what it accepts, how it
//! deduplicates, and how it refuses a body that is not a version-4 webhook (each refusal
//! clear, nothing stored, the server still healthy). What alerts *contain* never refuses a
//! delivery: see tests/alert_content.rs. Also the HTTP server itself: the API's token on
//! every path under `/api`, and connections that never finish their headers.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn stores_deduplicates_and_resolves() {
    let m = Medic::start();
    let firing = body(vec![alert("ServiceDown", "web1:80", "firing")]);
    let (status, reply) = post_webhook(&m, &firing).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["opened"], 1);
    // Alertmanager resends the same alert: joined, counted, never duplicated.
    for _ in 0..3 {
        assert_eq!(post_webhook(&m, &firing).await.0, 200);
    }
    // The runbook runs (it only logs) and the incident waits for verification.
    let list = eventually(
        std::time::Duration::from_secs(20),
        "the runbook to run",
        || async {
            let l = incidents(&m).await;
            (l.len() == 1 && l[0]["state"] == "verifying").then_some(l)
        },
    )
    .await;
    let inc = &list[0];
    assert_eq!(inc["runbook"], "restart.rhai");
    assert_eq!(inc["route"], "restart");
    assert_eq!(inc["deliveries"], 4);
    assert_eq!(inc["alertname"], "ServiceDown");
    assert_eq!(inc["labels"]["instance"], "web1:80");
    assert_eq!(inc["annotations"]["description"], "multi\nline");
    assert!(inc["started_at"]
        .as_str()
        .unwrap()
        .starts_with("2026-11-23T10:00:00"));

    let resolved = body(vec![alert("ServiceDown", "web1:80", "resolved")]);
    assert_eq!(post_webhook(&m, &resolved).await.0, 200);
    let id = inc["id"].as_str().unwrap();
    let one = api(&m, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(one["state"], "resolved");
    assert_eq!(one["outcome"], "auto_remediated");
    let timeline = one["timeline"].as_array().unwrap();
    let intake: Vec<&str> = timeline
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .filter(|e| ["incident_opened", "route_matched", "alert_deduplicated"].contains(e))
        .collect();
    assert_eq!(
        intake,
        [
            "incident_opened",
            "route_matched",
            "alert_deduplicated",
            "alert_deduplicated",
            "alert_deduplicated"
        ]
    );
    let last = timeline.last().unwrap();
    assert_eq!(last["event"], "state_changed");
    assert_eq!(last["detail"]["to"], "resolved");

    // An alert no route takes is recorded for escalation.
    let other = body(vec![alert("DiskFull", "db1:9100", "firing")]);
    assert_eq!(post_webhook(&m, &other).await.0, 200);
    let esc = api(&m, "/api/v1/incidents?state=escalated").await;
    assert_eq!(esc["incidents"][0]["reason"], "no_runbook");
    assert_eq!(esc["incidents"][0]["alertname"], "DiskFull");
    let only = api(&m, "/api/v1/incidents?alertname=DiskFull&limit=5").await;
    assert_eq!(only["incidents"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn keeps_fields_from_newer_alertmanagers() {
    let m = Medic::start();
    let mut b = body(vec![alert("ServiceDown", "web2:80", "firing")]);
    b["notification_reason"] = json!("repeat_interval");
    b["routeLabels"] = json!({"team": "web"});
    b["alerts"][0]["silencedBy"] = json!([]);
    assert_eq!(post_webhook(&m, &b).await.0, 200);
    let id = incidents(&m).await[0]["id"].as_str().unwrap().to_string();
    let one = api(&m, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(
        one["timeline"][0]["detail"]["extra"]["silencedBy"],
        json!([])
    );
    let (code, out, _) = m.run_cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn basic_auth_with_the_token_as_password() {
    let m = Medic::start();
    let r = client()
        .post(m.url("/webhook"))
        .basic_auth("alertmanager", Some(WEBHOOK_TOKEN))
        .json(&body(vec![alert("ServiceDown", "web3:80", "firing")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// Sends raw bytes with the given content type and token; returns (status, error text).
async fn raw(
    m: &Medic,
    bytes: Vec<u8>,
    content_type: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let mut req = client().post(m.url("/webhook")).body(bytes);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["error"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn refuses_bad_input_clearly_and_stores_nothing() {
    let m = Medic::start();
    let json_ct = Some("application/json");
    let tok = Some(WEBHOOK_TOKEN);
    let good = body(vec![alert("ServiceDown", "web1:80", "firing")]);
    let with = |pointer: &str, v: Value| {
        let mut b = good.clone();
        *b.pointer_mut(pointer).unwrap() = v;
        serde_json::to_vec(&b).unwrap()
    };
    let mut no_alerts = good.clone();
    no_alerts.as_object_mut().unwrap().remove("alerts");
    let mut no_starts_at = good.clone();
    no_starts_at["alerts"][0]
        .as_object_mut()
        .unwrap()
        .remove("startsAt");

    // (case, body, content type, token, expected status, expected error prefix)
    type Case<'a> = (
        &'a str,
        Vec<u8>,
        Option<&'a str>,
        Option<&'a str>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "invalid JSON",
            b"{\"version\": \"4\",".to_vec(),
            json_ct,
            tok,
            400,
            "body is not valid JSON",
        ),
        (
            "wrong version",
            with("/version", json!("3")),
            json_ct,
            tok,
            400,
            "version: unsupported webhook version \"3\", expected \"4\"",
        ),
        (
            "missing alerts",
            serde_json::to_vec(&no_alerts).unwrap(),
            json_ct,
            tok,
            400,
            ".: missing field `alerts`",
        ),
        (
            "wrong type",
            with("/alerts/0/labels", json!(["a"])),
            json_ct,
            tok,
            400,
            "alerts[0].labels: invalid type: sequence, expected a map",
        ),
        (
            "no alerts",
            with("/alerts", json!([])),
            json_ct,
            tok,
            400,
            "alerts: must not be empty",
        ),
        (
            "missing startsAt",
            serde_json::to_vec(&no_starts_at).unwrap(),
            json_ct,
            tok,
            400,
            "alerts[0]: missing field `startsAt`",
        ),
        (
            "a label value that is not a string",
            with("/alerts/0/labels/instance", json!(5)),
            json_ct,
            tok,
            400,
            "alerts[0].labels.instance: invalid type: integer `5`, expected a string",
        ),
        (
            "wrong token",
            serde_json::to_vec(&good).unwrap(),
            json_ct,
            Some("nope"),
            401,
            "missing or wrong credentials",
        ),
        (
            "missing token",
            serde_json::to_vec(&good).unwrap(),
            json_ct,
            None,
            401,
            "missing or wrong credentials",
        ),
        (
            "wrong content type",
            serde_json::to_vec(&good).unwrap(),
            Some("text/plain"),
            tok,
            415,
            "Content-Type must be application/json, got \"text/plain\"",
        ),
        (
            "no content type",
            serde_json::to_vec(&good).unwrap(),
            None,
            tok,
            415,
            "Content-Type must be application/json, got \"none\"",
        ),
    ];
    for (name, bytes, ct, token, want_status, want_error) in cases {
        let (status, error) = raw(&m, bytes, ct, token).await;
        assert_eq!(status, want_status, "{name}: {error}");
        assert!(
            error.starts_with(want_error),
            "{name}: got {error:?}, want {want_error:?}"
        );
        // Still healthy after each.
        let h = client().get(m.url("/healthz")).send().await.unwrap();
        assert_eq!(h.status().as_u16(), 200, "{name}");
    }
    // A body over the limit (16 MiB by default) is refused from its declared length, before
    // it is sent; raw TCP, since a client still sending would see the connection close.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(&m.addr).await.unwrap();
        let head = format!(
            "POST /webhook HTTP/1.1\r\nhost: medic\r\nauthorization: Bearer {WEBHOOK_TOKEN}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{{\"version\": ",
            (16 << 20) + 1
        );
        c.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0; 4096];
        let n = c.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(
            answer.contains("body exceeds the limit of 16777216 bytes"),
            "{answer}"
        );
    }
    assert!(
        incidents(&m).await.is_empty(),
        "nothing may be stored from bad input"
    );

    let metrics = client()
        .get(m.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "medic_webhook_rejected_total{reason=\"unauthorized\"} 2",
        "medic_webhook_rejected_total{reason=\"content_type\"} 2",
        "medic_webhook_rejected_total{reason=\"body_too_large\"} 1",
        "medic_webhook_rejected_total{reason=\"schema\"} 5",
        "medic_webhook_deliveries_total{outcome=\"rejected\"} 10",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    // The server is still fully usable afterwards.
    assert_eq!(post_webhook(&m, &good).await.0, 200);
}

#[tokio::test]
async fn api_requires_its_token() {
    let m = Medic::start();
    let r = client()
        .get(m.url("/api/v1/incidents"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client()
        .get(m.url("/api/v1/incidents"))
        .bearer_auth(WEBHOOK_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client()
        .get(m.url("/api/v1/incidents?state=sleepy"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = client()
        .get(m.url("/api/v1/incidents/nope"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn operations_endpoints() {
    let m = Medic::start();
    assert_eq!(
        post_webhook(&m, &body(vec![alert("ServiceDown", "w:1", "firing")]))
            .await
            .0,
        200
    );
    let ready = client().get(m.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let text = client()
        .get(m.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "medic_webhook_deliveries_total{outcome=\"accepted\"} 1",
        "medic_alerts_received_total{status=\"firing\"} 1",
        "medic_incidents{state=\"queued\"}",
        "medic_store_commit_duration_seconds_bucket",
        "medic_store_commit_batch_size_bucket",
        "medic_webhook_duration_seconds_bucket",
    ] {
        assert!(text.contains(name), "missing {name:?} in\n{text}");
    }
}

#[tokio::test]
async fn sigterm_stops_cleanly() {
    let mut m = Medic::start();
    assert_eq!(
        post_webhook(&m, &body(vec![alert("ServiceDown", "w:2", "firing")]))
            .await
            .0,
        200
    );
    assert_eq!(m.stop(), Some(0), "{}", m.log_text());
    assert!(m.log_text().contains("\"stopped\""), "{}", m.log_text());
    let (code, out, _) = m.run_cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audit log intact"), "{out}");
}

/// The server in-process (as `medic serve` runs it), so the test can break its store.
#[tokio::test]
async fn store_failure_answers_503_so_alertmanager_retries() {
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("runbooks")).unwrap();
    std::fs::write(dir.join("runbooks/restart.rhai"), "log(\"x\");").unwrap();
    let config =
        medic::config::Config::parse(&dir.join("medic.toml"), &default_config(dir), &|_| None)
            .unwrap();
    let loaded = medic::loaded::Loaded::from_config(config).unwrap();
    let metrics = Arc::new(medic::metrics::Metrics::default());
    let store = medic::store::Store::open(&loaded.config.store.url, metrics.store.clone()).unwrap();
    let app = medic::server::App::new(loaded, store.clone(), metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(medic::server::run(listener, app, async {
        let _ = stopped.await;
    }));
    let url = |p: &str| format!("http://{addr}{p}");
    let b = body(vec![alert("ServiceDown", "s1", "firing")]);
    let post = || {
        client()
            .post(url("/webhook"))
            .bearer_auth(WEBHOOK_TOKEN)
            .json(&b)
            .send()
    };

    assert_eq!(post().await.unwrap().status().as_u16(), 200);
    // The store goes away (in production: a full disk, a lost database).
    store.close().await;
    let r = post().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["error"],
        "cannot store the delivery: the store is shut down"
    );
    let ready = client().get(url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert_eq!(
        client()
            .get(url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Regression: a path under `/api/` that does not exist answered 404 to anyone, telling a
/// caller without the token which paths exist. It answers 401 like the others, and 404 only
/// after authentication.
#[tokio::test]
async fn unknown_api_paths_answer_401_without_the_token() {
    let m = Medic::start();
    for path in [
        "/api/v1/nope",
        "/api/v2/incidents",
        "/api/",
        "/api",
        "/api/v1/incidents/x/y",
    ] {
        let r = client().get(m.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "GET {path} without the token");
        let r = client()
            .post(m.url(path))
            .bearer_auth(WEBHOOK_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "POST {path} with the wrong token");
        let r = client()
            .get(m.url(path))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "GET {path} with the token");
    }
    let r = client()
        .get(m.url("/api/v1/nope"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "no such API path");
    // Outside /api, unknown paths are not the API's business.
    let r = client().get(m.url("/nope")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

/// Regression: a connection that sent part of a request's headers and then nothing was
/// held open forever, so a few clients could use up the server's connections. The server
/// runs in-process on a paused clock: the test waits on time, never on the wall clock.
#[tokio::test(start_paused = true)]
async fn partial_headers_are_timed_out() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(medic::server::serve(
        listener,
        router,
        || Duration::from_secs(5),
        async {
            let _ = stopped.await;
        },
    ));

    // A whole request is served.
    let mut whole = tokio::net::TcpStream::connect(addr).await.unwrap();
    whole
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    whole.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

    // Half a request line, half the headers: then silence.
    for partial in [
        &b"POST /webh"[..],
        b"POST /webhook HTTP/1.1\r\nhost: x\r\nauthoriz",
    ] {
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(partial).await.unwrap();
        let mut buf = Vec::new();
        // Up to two minutes of paused time, a second at a time: the server's socket events
        // are handled between the steps, so its header timer is surely running before the
        // clock has moved far past it. On the paused clock this takes no real time.
        let mut closed = false;
        for _ in 0..120 {
            let read =
                tokio::time::timeout(Duration::from_secs(1), slow.read_to_end(&mut buf)).await;
            if matches!(read, Ok(Ok(_)) | Ok(Err(_))) {
                closed = true;
                break;
            }
        }
        assert!(
            closed,
            "the server still holds a connection that sent {:?}",
            String::from_utf8_lossy(partial)
        );
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// The same through the real binary: `server.request_timeout` bounds the headers too.
#[tokio::test]
async fn the_server_closes_a_connection_that_never_finishes_its_headers() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config =
        default_config(dir).replace("api_token = ", "request_timeout = \"1s\"\napi_token = ");
    let m = Medic::start_in(dir, &config);
    let mut slow = tokio::net::TcpStream::connect(&m.addr).await.unwrap();
    slow.write_all(b"POST /webhook HTTP/1.1\r\nhost: medic\r\ncontent-ty")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // A bound for the test only, far above the configured second.
    let read = tokio::time::timeout(Duration::from_secs(60), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection is still open");
    // The server is still fine for everyone else.
    assert_eq!(
        post_webhook(&m, &body(vec![alert("ServiceDown", "w:9", "firing")]))
            .await
            .0,
        200
    );
}
