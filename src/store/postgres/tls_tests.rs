//! TLS against the test server: what each `sslmode` does to a real session. Run with
//! `MEDIC_TEST_STORE=postgres`, like the other PostgreSQL tests; the server must offer TLS
//! (`scripts/test.sh` turns it on), or these tests fail saying so.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Utc;
use serde_json::Map;

use super::*;
use crate::alert::{Alert, Status};
use crate::store::{AlertEffect, Delivery, IncidentFilter, Routed, Store};

/// A new database on the test server, or `None` when the PostgreSQL tests are not on.
/// Fails, rather than skips, when the server does not offer TLS.
fn database() -> Option<String> {
    if std::env::var("MEDIC_TEST_STORE").as_deref() != Ok("postgres") {
        return None;
    }
    let url = scratch_database().expect("a database on the PostgreSQL test server");
    let conn = connect(&format!("{url}?sslmode=disable")).expect("a connection without TLS");
    let ssl: String = conn.rows("SHOW ssl", &[]).unwrap()[0].get(0).unwrap();
    assert_eq!(
        ssl, "on",
        "the PostgreSQL test server does not offer TLS (ssl = {ssl}): these tests need it; \
         scripts/test.sh turns it on"
    );
    Some(url)
}

fn connect(url: &str) -> Result<PgConn, StoreError> {
    let manager = Manager::new(url, &Options::default())?;
    manager
        .open()
        .map_err(|e| StoreError::Unavailable(describe(&*e)))
}

/// Whether the connection's own session is encrypted, as the server sees it.
fn encrypted(conn: &PgConn) -> bool {
    let rows = conn
        .rows(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap();
    rows[0].get::<_, i64>(0).unwrap() == 1
}

fn testdata(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/store/postgres/testdata")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn sslmode_require_encrypts_the_session() {
    let Some(url) = database() else { return };
    let conn = connect(&format!("{url}?sslmode=require")).unwrap();
    assert!(encrypted(&conn), "sslmode=require gave a session in clear");
}

#[test]
fn sslmode_disable_is_in_clear() {
    let Some(url) = database() else { return };
    let conn = connect(&format!("{url}?sslmode=disable")).unwrap();
    assert!(
        !encrypted(&conn),
        "sslmode=disable gave an encrypted session"
    );
}

/// The default, `prefer`, takes TLS when the server offers it, as libpq does.
#[test]
fn sslmode_prefer_is_the_default_and_takes_tls() {
    let Some(url) = database() else { return };
    assert!(encrypted(&connect(&url).unwrap()));
    assert!(encrypted(
        &connect(&format!("{url}?sslmode=prefer")).unwrap()
    ));
}

/// The whole store over TLS: it opens (migrates), ingests and reads, and every connection
/// it holds, its writer's and its readers', is encrypted.
#[test]
fn the_store_opens_and_ingests_over_tls() {
    let Some(url) = database() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Store::open(&format!("{url}?sslmode=require"), StoreMetrics::default()).unwrap();
    rt.block_on(async {
        let effects = store.ingest(delivery("aaaa")).await.unwrap();
        assert!(
            matches!(effects[..], [AlertEffect::Opened(_)]),
            "{effects:?}"
        );
        let listed = store
            .incidents(IncidentFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        store.ping().await.unwrap();
    });

    let admin = connect(&format!("{url}?sslmode=disable")).unwrap();
    let rows = admin
        .rows(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    let (all, tls): (i64, i64) = (rows[0].get(0).unwrap(), rows[0].get(1).unwrap());
    assert!(
        all >= 2,
        "the store holds {all} connection(s), expected a writer and a reader"
    );
    assert_eq!(
        tls,
        all,
        "{} of the store's connections are in clear",
        all - tls
    );
    rt.block_on(store.close());
}

#[test]
fn verify_full_refuses_a_server_the_root_did_not_sign() {
    let Some(url) = database() else { return };
    // A password in the URL (the server trusts local users and ignores it) must not show.
    let url = url.replacen("postgres@", "postgres:s3cret@", 1);
    let root = testdata("unrelated-ca.pem");
    let err = Store::open(
        &format!("{url}?sslmode=verify-full&sslrootcert={root}"),
        StoreMetrics::default(),
    )
    .err()
    .expect("a server the root did not sign is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("certificate") && msg.contains("UnknownIssuer"),
        "not a clear error: {msg}"
    );
    assert!(!msg.contains("s3cret"), "the password shows: {msg}");
}

/// `verify-ca` with the server's own certificate as the root, where the test can read it
/// (a local server with a self-signed certificate, as Debian's is): the chain checks out,
/// and the address, which that certificate does not name, does not matter.
#[test]
fn verify_ca_takes_a_server_its_root_signed() {
    let Some(url) = database() else { return };
    let conn = connect(&format!("{url}?sslmode=disable")).unwrap();
    let file: String = conn.rows("SHOW ssl_cert_file", &[]).unwrap()[0]
        .get(0)
        .unwrap();
    let Ok(pem) = std::fs::read_to_string(&file) else {
        return;
    };
    // Only a self-signed certificate is its own root.
    if pem.matches("BEGIN CERTIFICATE").count() != 1 {
        return;
    }
    let verified = connect(&format!("{url}?sslmode=verify-ca&sslrootcert={file}"));
    match verified {
        Ok(conn) => assert!(encrypted(&conn)),
        // Issued by a CA the test does not have: nothing to learn here.
        Err(e) if e.to_string().contains("UnknownIssuer") => {}
        Err(e) => panic!("verify-ca with the server's own certificate: {e}"),
    }
}

fn delivery(fingerprint: &str) -> Delivery {
    let labels: BTreeMap<String, String> = [("alertname", "DiskFull"), ("instance", fingerprint)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let alert = Alert {
        status: Status::Firing,
        labels,
        annotations: BTreeMap::new(),
        starts_at: Utc::now(),
        ends_at: None,
        generator_url: String::new(),
        fingerprint: fingerprint.to_string(),
        extra: Map::new(),
    };
    Delivery {
        received_at: Utc::now(),
        source: "127.0.0.1:5000".into(),
        receiver: "medic".into(),
        status: Status::Firing,
        group_key: "{}".into(),
        external_url: String::new(),
        truncated_alerts: 0,
        extra: Map::new(),
        alerts: vec![(
            alert,
            Routed::Runbook {
                route: "disk".into(),
                runbook: "disk_full.rhai".into(),
            },
        )],
    }
}
