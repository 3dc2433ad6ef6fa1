use super::*;
use serde_json::json;

fn body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn alert() -> Value {
    json!({
        "status": "firing",
        "labels": {"alertname": "DiskFull", "instance": "db1:9100", "severity": "critical"},
        "annotations": {"summary": "Disk full", "description": "line one\nline two"},
        "startsAt": "2026-11-23T10:00:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
        "fingerprint": "c3f1a2b4d5e6f708"
    })
}

fn payload_with(alerts: Vec<Value>) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"DiskFull\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "medic",
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {"alertname": "DiskFull"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts
    })
}

/// Parses `v` and returns the error message, failing the test on success.
fn err(v: Value) -> String {
    match parse(&body(v)) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.message,
    }
}

fn with(mut v: Value, pointer: &str, new: Value) -> Value {
    *v.pointer_mut(pointer).expect("pointer exists") = new;
    v
}

fn without(mut v: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap()
        .remove(key);
    v
}

#[test]
fn parses_every_field() {
    let p = parse(&body(payload_with(vec![alert()]))).unwrap();
    assert_eq!(p.version, "4");
    assert_eq!(p.receiver, "medic");
    assert_eq!(p.status, Status::Firing);
    assert_eq!(p.group_key, "{}:{alertname=\"DiskFull\"}");
    assert_eq!(p.truncated_alerts, 0);
    assert_eq!(p.external_url, "http://alertmanager:9093");
    assert_eq!(p.group_labels["alertname"], "DiskFull");
    assert_eq!(p.common_labels["alertname"], "DiskFull");
    assert!(p.common_annotations.is_empty());
    let a = &p.alerts[0];
    assert_eq!(a.status, Status::Firing);
    assert_eq!(a.alertname(), "DiskFull");
    assert_eq!(a.labels["instance"], "db1:9100");
    assert_eq!(a.annotations["description"], "line one\nline two");
    assert_eq!(a.starts_at.timestamp_subsec_nanos(), 123456789);
    assert_eq!(a.ends_at, None, "Alertmanager's zero time means no end");
    assert_eq!(a.generator_url, "http://prometheus:9090/graph?g0.expr=up");
    assert_eq!(a.fingerprint, "c3f1a2b4d5e6f708");
    assert!(p.extra.is_empty() && a.extra.is_empty());
}

#[test]
fn keeps_fields_from_newer_alertmanagers() {
    let mut v = payload_with(vec![alert()]);
    v["notification_reason"] = json!("repeat");
    v["routeLabels"] = json!({"team": "db"});
    v["alerts"][0]["silencedBy"] = json!([]);
    let p = parse(&body(v)).unwrap();
    assert_eq!(p.extra["notification_reason"], "repeat");
    assert_eq!(p.extra["routeLabels"]["team"], "db");
    assert_eq!(p.alerts[0].extra["silencedBy"], json!([]));
}

#[test]
fn optional_fields_default() {
    let v = json!({"version": "4", "status": "resolved", "alerts": [{
        "status": "resolved", "labels": {"alertname": "X"}, "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "2026-01-01T00:05:00+01:00"
    }]});
    let p = parse(&body(v)).unwrap();
    assert_eq!(p.receiver, "");
    let a = &p.alerts[0];
    assert_eq!(a.ends_at.unwrap().to_rfc3339(), "2025-12-31T23:05:00+00:00");
    // Computed as Alertmanager would: FNV-1a over {alertname="X"}.
    assert_eq!(a.fingerprint, fingerprint(&a.labels));
    assert_eq!(a.fingerprint.len(), 16);
}

#[test]
fn fingerprint_is_fnv1a_over_sorted_labels() {
    // FNV-1a 64 of nothing is its offset basis.
    assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
    let ls = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let a = fingerprint(&ls(&[("alertname", "X"), ("instance", "a")]));
    assert_eq!(
        a,
        fingerprint(&ls(&[("instance", "a"), ("alertname", "X")]))
    );
    assert_ne!(
        a,
        fingerprint(&ls(&[("alertname", "X"), ("instance", "b")]))
    );
    // The separator keeps name and value apart: {ab="c"} is not {a="bc"}.
    assert_ne!(
        fingerprint(&ls(&[("ab", "c")])),
        fingerprint(&ls(&[("a", "bc")]))
    );
    // The real Alertmanager's fingerprints are compared in tests/alertmanager.rs.
}

#[test]
fn rejects_what_is_not_json() {
    let e = parse(b"{\"version\": ").unwrap_err();
    assert_eq!(e.kind, "json");
    assert!(
        e.message.starts_with("body is not valid JSON: EOF"),
        "{}",
        e.message
    );
    assert_eq!(
        parse(b"[1]").unwrap_err().message,
        "body: expected a JSON object"
    );
}

#[test]
fn names_missing_fields() {
    let p = payload_with(vec![alert()]);
    assert_eq!(
        err(without(p.clone(), "/alerts")),
        ".: missing field `alerts`"
    );
    assert_eq!(
        err(without(p.clone(), "/version")),
        ".: missing field `version`"
    );
    assert_eq!(
        err(without(p.clone(), "/status")),
        ".: missing field `status`"
    );
    assert_eq!(
        err(without(p.clone(), "/alerts/0/labels")),
        "alerts[0]: missing field `labels`"
    );
    assert_eq!(
        err(without(p, "/alerts/0/startsAt")),
        "alerts[0]: missing field `startsAt`"
    );
}

#[test]
fn names_wrong_types() {
    let p = payload_with(vec![alert(), alert()]);
    assert_eq!(
        err(with(p.clone(), "/alerts", json!("many"))),
        "alerts: invalid type: string \"many\", expected a sequence"
    );
    assert_eq!(
        err(with(p.clone(), "/alerts/1/labels/instance", json!(5))),
        "alerts[1].labels.instance: invalid type: integer `5`, expected a string"
    );
    assert_eq!(
        err(with(p.clone(), "/alerts/0/status", json!("burning"))),
        "alerts[0].status: unknown variant `burning`, expected `firing` or `resolved`"
    );
    assert_eq!(
        err(with(p.clone(), "/alerts/0/startsAt", json!("yesterday"))),
        "alerts[0].startsAt: input contains invalid characters"
    );
    assert_eq!(
        err(with(p.clone(), "/truncatedAlerts", json!(-1))),
        "truncatedAlerts: invalid value: integer `-1`, expected u64"
    );
    assert_eq!(
        err(with(p, "/version", json!(4))),
        "version: invalid type: integer `4`, expected a string"
    );
}

#[test]
fn rejects_other_versions_and_empty_deliveries() {
    let p = payload_with(vec![alert()]);
    assert_eq!(
        err(with(p.clone(), "/version", json!("3"))),
        "version: unsupported webhook version \"3\", expected \"4\""
    );
    assert_eq!(
        err(with(p, "/alerts", json!([]))),
        "alerts: must not be empty"
    );
}

/// Parses `v`, which must be accepted, and returns its first alert with its violations.
fn first(v: Value) -> (Alert, Vec<Violation>) {
    let p = parse(&body(v)).expect("a well-formed delivery is accepted");
    let violations = p.invalid.get(&0).cloned().unwrap_or_default();
    (p.alerts[0].clone(), violations)
}

fn sha(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Regression: a newline in a label value refused the whole delivery (400), so
/// Alertmanager resent the group forever and none of its alerts was ever handled.
#[test]
fn control_characters_in_labels_are_data() {
    let p = payload_with(vec![alert()]);
    for value in [
        "a\nrm -rf /",
        "tab\there",
        "cr\r\n",
        "esc\u{1b}[31m",
        "del\u{7f}",
        "\u{85}next line",
    ] {
        let (a, violations) = first(with(p.clone(), "/alerts/0/labels/instance", json!(value)));
        assert!(violations.is_empty(), "{value:?}: {violations:?}");
        assert_eq!(a.labels["instance"], value, "kept byte for byte");
    }
    let (a, violations) = first(with(
        p,
        "/alerts/0/labels",
        json!({"alertname": "X", "line\nbreak": "v"}),
    ));
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(a.labels["line\nbreak"], "v");
}

/// Regression: an alert over a limit refused the whole delivery; now it is accepted
/// bounded, its violation naming the field and the limit, and the other alerts of the
/// delivery are untouched.
#[test]
fn alerts_over_the_limits_are_kept_bounded() {
    let p = payload_with(vec![alert(), alert()]);
    let check = |pointer: &str, v: Value, field: &str, message: &str| {
        let parsed = parse(&body(with(p.clone(), pointer, v))).expect("accepted");
        assert!(
            !parsed.invalid.contains_key(&1),
            "the other alert is untouched"
        );
        let violations = &parsed.invalid[&0];
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field, field);
        assert!(
            violations[0].message.starts_with(message),
            "{field}: got {:?}, want {message:?}",
            violations[0].message
        );
        parsed.alerts[0].clone()
    };

    let big = "x".repeat(MAX_LABEL_VALUE_BYTES + 1);
    let a = check(
            "/alerts/0/labels/instance",
            json!(big),
            "label \"instance\"",
            &format!(
                "16385 bytes, over the limit of 16384 bytes; stored cut to its first 16384 bytes (received: 16385 bytes, sha256 {})",
                sha(&big)
            ),
        );
    assert_eq!(a.labels["instance"], "x".repeat(MAX_LABEL_VALUE_BYTES));
    // The fingerprint is Alertmanager's, of the labels as sent.
    assert_eq!(a.fingerprint, "c3f1a2b4d5e6f708");

    // Cut on a char boundary: 'é' is two bytes, and 16384 falls inside the last one.
    let wide = format!("{}é", "x".repeat(MAX_LABEL_VALUE_BYTES - 1));
    let a = check(
        "/alerts/0/labels/instance",
        json!(wide),
        "label \"instance\"",
        "16385 bytes, over the limit of 16384 bytes; stored cut to its first 16383 bytes",
    );
    assert_eq!(a.labels["instance"], "x".repeat(MAX_LABEL_VALUE_BYTES - 1));

    let a = check(
            "/alerts/0/labels/instance",
            json!("a\u{0}b"),
            "label \"instance\"",
            &format!(
                "contains NUL, which medic never stores or passes on; stored with U+FFFD in its place (received: 3 bytes, sha256 {})",
                sha("a\0b")
            ),
        );
    assert_eq!(a.labels["instance"], "a\u{FFFD}b");

    let a = check(
        "/alerts/0/labels",
        json!({"alertname": "X", "a\u{0}b": "v"}),
        "label name \"a\\0b\"",
        "contains NUL",
    );
    assert_eq!(a.labels.get("a\u{FFFD}b").map(String::as_str), Some("v"));

    let long = "n".repeat(2000);
    let a = check(
        "/alerts/0/labels",
        json!({"alertname": "X", long.clone(): "v"}),
        &format!("label name \"{}\"...", "n".repeat(64)),
        "2000 bytes, over the limit of 1024 bytes; stored cut to its first 1024 bytes",
    );
    assert!(a.labels.contains_key(&"n".repeat(MAX_NAME_BYTES)));

    let many: Map<String, Value> = (0..=MAX_LABELS)
        .map(|i| (format!("l{i:03}"), json!("v")))
        .collect();
    let a = check(
            "/alerts/0/labels",
            Value::Object(many),
            "labels",
            "257 labels, over the limit of 256; stored the first 256 by name and dropped 1 (all of them as JSON: ",
        );
    assert_eq!(a.labels.len(), MAX_LABELS);
    assert!(!a.labels.contains_key("l256"));

    let a = check(
        "/alerts/0/annotations/description",
        json!("d".repeat(MAX_ANNOTATION_VALUE_BYTES + 1)),
        "annotation \"description\"",
        "131073 bytes, over the limit of 131072 bytes",
    );
    assert_eq!(
        a.annotations["description"].len(),
        MAX_ANNOTATION_VALUE_BYTES
    );
    check(
        "/alerts/0/annotations",
        json!({"x": "nul\u{0}"}),
        "annotation \"x\"",
        "contains NUL",
    );
    check(
        "/alerts/0/generatorURL",
        json!("u".repeat(MAX_URL_BYTES + 1)),
        "generatorURL",
        "8193 bytes, over the limit of 8192 bytes",
    );
    check(
        "/alerts/0/labels",
        json!({}),
        "labels",
        "none; an alert needs at least one label",
    );
    check(
        "/alerts/0/labels",
        json!({"alertname": "X", "": "v"}),
        "label name \"\"",
        "a name must not be empty; dropped with its value (value: 1 bytes, sha256 ",
    );
    let a = check(
            "/alerts/0/fingerprint",
            json!("../../etc/passwd"),
            "fingerprint",
            "\"../../etc/passwd\" is not up to 64 letters and digits; medic uses its own fingerprint of the labels, ",
        );
    assert_eq!(a.fingerprint, fingerprint(&a.labels));
}

/// Resends of an invalid alert must find its incident: the fingerprint is that of the
/// labels as received, never of what was stored.
#[test]
fn an_invalid_alert_keeps_the_fingerprint_of_its_full_labels() {
    let p = without(payload_with(vec![alert()]), "/alerts/0/fingerprint");
    let big = "x".repeat(MAX_LABEL_VALUE_BYTES + 10);
    let (a, violations) = first(with(p, "/alerts/0/labels/instance", json!(big.clone())));
    assert_eq!(violations.len(), 1);
    let mut full = a.labels.clone();
    full.insert("instance".into(), big);
    assert_eq!(a.fingerprint, fingerprint(&full));
    assert_ne!(a.fingerprint, fingerprint(&a.labels));
}

/// Regression: more than 10,000 alerts in one delivery refused all of them. The body
/// limit bounds a delivery; the number of alerts in it does not refuse it.
#[test]
fn a_storm_group_is_never_refused_for_its_size() {
    let alerts: Vec<Value> = (0..10_001)
        .map(|i| {
            let mut a = alert();
            a["labels"]["instance"] = json!(format!("host{i}"));
            a["fingerprint"] = json!(format!("f{i}"));
            a
        })
        .collect();
    let p = parse(&body(payload_with(alerts))).unwrap();
    assert_eq!(p.alerts.len(), 10_001);
    assert!(p.invalid.is_empty());
}

#[test]
fn delivery_level_fields_do_not_refuse_either() {
    let mut v = payload_with(vec![alert()]);
    v["commonLabels"] = json!({"instance": "a\u{0}\nb", "": "x"});
    v["externalURL"] = json!("http://am\u{0}:9093");
    let p = parse(&body(v)).unwrap();
    assert!(p.invalid.is_empty());
    assert_eq!(p.common_labels["instance"], "a\u{FFFD}\nb");
    assert_eq!(p.external_url, "http://am\u{FFFD}:9093");
}

#[test]
fn describe_names_every_violation_up_to_a_bound() {
    let v = |i: usize| Violation {
        field: format!("label \"l{i}\""),
        message: "contains NUL".into(),
    };
    assert_eq!(
        describe(&[v(1), v(2)]),
        "the alert breaks medic's limits and was stored bounded, so nothing was run: \
             label \"l1\": contains NUL; label \"l2\": contains NUL"
    );
    let many: Vec<Violation> = (0..20).map(v).collect();
    assert!(describe(&many).ends_with("label \"l7\": contains NUL; and 12 more"));
}
