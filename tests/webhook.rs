//! The webhook endpoint through real HTTP against the real binary: what it accepts, how it
//! deduplicates, and how it refuses a body that is not a version-4 webhook (each refusal
//! clear, nothing stored, the server still healthy). What alerts *contain* never refuses a
//! delivery: see tests/alert_content.rs. Also the HTTP server itself: the API's token on
//! every path under `/api`, and connections that never finish their headers.

use crate::common;

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
    let app = medic::app::Engine::new(loaded, store.clone(), metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(medic::app::run(listener, app, async {
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

/// The head of a raw `POST /webhook` with the token and a JSON content type, then `extra`
/// header lines (each ending in CRLF); the connection closes after the answer.
fn webhook_head(extra: &str) -> String {
    format!(
        "POST /webhook HTTP/1.1\r\nhost: medic\r\nauthorization: Bearer {WEBHOOK_TOKEN}\r\n\
         content-type: application/json\r\nconnection: close\r\n{extra}\r\n"
    )
}

/// A valid webhook body of exactly `size` bytes: JSON with trailing white space.
fn padded_body(instance: &str, size: usize) -> Vec<u8> {
    let mut b = serde_json::to_vec(&body(vec![alert("ServiceDown", instance, "firing")])).unwrap();
    assert!(b.len() <= size, "a webhook body takes {} bytes", b.len());
    b.resize(size, b' ');
    b
}

/// `bytes` in HTTP/1.1 chunked encoding, in chunks of `chunk` bytes, with the last chunk.
fn chunked(bytes: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in bytes.chunks(chunk) {
        out.extend(format!("{:x}\r\n", part.len()).into_bytes());
        out.extend(part);
        out.extend(b"\r\n");
    }
    out.extend(b"0\r\n\r\n");
    out
}

/// Reads one HTTP response from `c`: its status, its head as text, its body as JSON. The
/// wait is bounded for the test only; what arrived by then is what is returned.
async fn read_response(c: &mut tokio::net::TcpStream) -> (u16, String, Value) {
    use tokio::io::AsyncReadExt;

    fn split(got: &[u8]) -> Option<(String, &[u8])> {
        let end = got.windows(4).position(|w| w == b"\r\n\r\n")?;
        Some((
            String::from_utf8_lossy(&got[..end]).into_owned(),
            &got[end + 4..],
        ))
    }
    fn complete(got: &[u8]) -> bool {
        let Some((head, rest)) = split(got) else {
            return false;
        };
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse::<usize>().ok());
        length.is_some_and(|n| rest.len() >= n)
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        while !complete(&got) {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let Some((head, rest)) = split(&got) else {
        return (0, String::from_utf8_lossy(&got).into_owned(), Value::Null);
    };
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (
        status,
        head,
        serde_json::from_slice(rest).unwrap_or(Value::Null),
    )
}

/// Sends `request` on a new connection and reads the response.
async fn exchange(m: &Medic, request: &[u8]) -> (u16, String, Value) {
    use tokio::io::AsyncWriteExt;

    let mut c = tokio::net::TcpStream::connect(&m.addr).await.unwrap();
    c.write_all(request).await.unwrap();
    read_response(&mut c).await
}

async fn metrics_text(m: &Medic) -> String {
    client()
        .get(m.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A body sent without a length (chunked) is held to the limit as it arrives: one of
/// exactly the limit is taken, one byte more is answered 413 with the JSON error. The
/// checks that need no body come first: credentials, then the content type, then a
/// declared length over the limit; and they are the webhook's, not other methods'.
#[tokio::test]
async fn a_chunked_body_is_held_to_the_limit_and_checks_run_before_the_body() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = default_config(dir).replace("api_token = ", "body_limit = 1024\napi_token = ");
    let m = Medic::start_in(dir, &config);
    let chunked_head = webhook_head("transfer-encoding: chunked\r\n");

    let mut at_limit = chunked_head.clone().into_bytes();
    at_limit.extend(chunked(&padded_body("c1", 1024), 300));
    let (status, head, reply) = exchange(&m, &at_limit).await;
    assert_eq!(status, 200, "{head}\n{reply}");
    assert_eq!(reply["opened"], 1);

    let mut over = chunked_head.into_bytes();
    over.extend(chunked(&padded_body("c2", 1025), 300));
    let (status, head, reply) = exchange(&m, &over).await;
    assert_eq!(status, 413, "{head}\n{reply}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(
        reply,
        json!({"error": "body exceeds the limit of 1024 bytes"})
    );

    // Declared over the limit, nothing of the body sent: still 401 without credentials,
    // 415 for another content type, and 413 only with both right.
    let declared = "content-length: 1025\r\n";
    let no_token =
        webhook_head(declared).replace(&format!("authorization: Bearer {WEBHOOK_TOKEN}\r\n"), "");
    let (status, head, reply) = exchange(&m, no_token.as_bytes()).await;
    assert_eq!(status, 401, "{head}\n{reply}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer realm=\"medic\""),
        "{head}"
    );
    assert_eq!(reply["error"], "missing or wrong credentials");
    let text = webhook_head(declared).replace("application/json", "text/plain");
    let (status, _, reply) = exchange(&m, text.as_bytes()).await;
    assert_eq!(status, 415, "{reply}");
    let (status, _, reply) = exchange(&m, webhook_head(declared).as_bytes()).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(
        reply,
        json!({"error": "body exceeds the limit of 1024 bytes"})
    );
    // Another method is answered 405, credentials or not.
    let r = client().get(m.url("/webhook")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);

    let metrics = metrics_text(&m).await;
    for line in [
        "medic_webhook_rejected_total{reason=\"body_too_large\"} 2",
        "medic_webhook_rejected_total{reason=\"unauthorized\"} 1",
        "medic_webhook_rejected_total{reason=\"content_type\"} 1",
        "medic_webhook_deliveries_total{outcome=\"rejected\"} 3",
        "medic_webhook_deliveries_total{outcome=\"unauthorized\"} 1",
        "medic_webhook_deliveries_total{outcome=\"accepted\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    assert_eq!(
        incidents(&m).await.len(),
        1,
        "only the body within the limit is stored"
    );
}

/// `server.request_timeout` bounds the whole body, not each wait for more of it: a body
/// that stops arriving, and one that keeps coming a byte at a time, are both answered 408.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config =
        default_config(dir).replace("api_token = ", "request_timeout = \"1s\"\napi_token = ");
    let m = Medic::start_in(dir, &config);
    let head = webhook_head("content-length: 100000\r\n");

    // Part of the body, then nothing.
    let mut stalled = head.clone().into_bytes();
    stalled.extend(b"{\"version\": ");
    let (status, answer_head, reply) = exchange(&m, &stalled).await;
    assert_eq!(status, 408, "{answer_head}\n{reply}");
    assert_eq!(reply, json!({"error": "the body did not arrive in time"}));

    // A byte every 100 ms, for longer than the answer is waited for: only a deadline for
    // the whole body answers it.
    let c = tokio::net::TcpStream::connect(&m.addr).await.unwrap();
    let (mut reader, mut writer) = c.into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..600 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut got = Vec::new();
    {
        use tokio::io::AsyncReadExt;
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
    }
    trickle.abort();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got:?}");

    let metrics = metrics_text(&m).await;
    for line in [
        "medic_webhook_rejected_total{reason=\"timeout\"} 2",
        "medic_webhook_deliveries_total{outcome=\"rejected\"} 2",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    // The server is still fine for everyone else.
    assert_eq!(
        post_webhook(&m, &body(vec![alert("ServiceDown", "t:1", "firing")]))
            .await
            .0,
        200
    );
}

/// `server.body_limit` is read per delivery: a reload that raises it takes effect for the
/// next one, and the 413 names the limit in force.
#[tokio::test]
async fn a_reload_that_raises_the_body_limit_takes_effect() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = default_config(dir).replace("api_token = ", "body_limit = 2048\napi_token = ");
    let m = Medic::start_in(dir, &config);
    let post = |bytes: Vec<u8>| {
        client()
            .post(m.url("/webhook"))
            .bearer_auth(WEBHOOK_TOKEN)
            .header("content-type", "application/json")
            .body(bytes)
            .send()
    };
    let r = post(padded_body("r1", 4096)).await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "body exceeds the limit of 2048 bytes");

    let raised = config.replace("body_limit = 2048", "body_limit = 16384");
    eventually(
        std::time::Duration::from_secs(30),
        "the raised body limit to take effect",
        || async {
            // Written again until it is in force: an edit made before the reloader took the
            // file's first stamp would not be seen as one.
            std::fs::write(&m.config, &raised).unwrap();
            (post(padded_body("r1", 4096)).await.ok()?.status().as_u16() == 200).then_some(())
        },
    )
    .await;
    let r = post(padded_body("r2", 16385)).await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "body exceeds the limit of 16384 bytes");
}
