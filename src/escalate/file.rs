//! The `file` channel: each notification appended to a file as one JSON line.
//!
//! The line is the webhook channel's document (incident, timeline, reason, what to do,
//! links, idempotency key), so whatever reads the file sees the same story. It works
//! on any machine with no service to set up: the shipped configuration pages into it
//! until a real channel is configured, and a log shipper or `tail -f` can follow it.

use std::path::Path;

use tokio::io::AsyncWriteExt;

use super::{Outgoing, SendError};

/// Appends the message's document to `path` as one line, creating the file (and its
/// directory) when missing, and waits until it is on disk.
pub async fn send(path: &Path, out: &Outgoing<'_>) -> Result<(), SendError> {
    let document = out
        .message
        .document(out.incident, out.key, out.tier, out.round);
    let mut line = serde_json::to_vec(&document)
        .map_err(|e| SendError::Invalid(format!("cannot encode the notification: {e}")))?;
    line.push(b'\n');
    let failed = |e: std::io::Error| SendError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await.map_err(failed)?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(failed)?;
    // Opened for appending: each line goes at the end of the file.
    file.write_all(&line).await.map_err(failed)?;
    file.sync_data().await.map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escalate::message::Message;
    use crate::incident::{Reason, State};
    use crate::store::{Incident, NotificationKind};

    fn incident() -> Incident {
        Incident {
            id: "01INC".into(),
            fingerprint: "f1".into(),
            alertname: "DatabaseDown".into(),
            labels: [("alertname".to_string(), "DatabaseDown".to_string())]
                .into_iter()
                .collect(),
            annotations: Default::default(),
            state: State::Escalated,
            reason: Some(Reason::NoRunbook),
            outcome: None,
            route: None,
            runbook: None,
            generator_url: String::new(),
            started_at: "2026-11-23T10:00:00Z".into(),
            updated_at: "2026-11-23T10:00:00Z".into(),
            last_seen_at: "2026-11-23T10:00:00Z".into(),
            resolved_at: None,
            deliveries: 1,
            attempts: 0,
            message: Some("no route matched the alert".into()),
            external_url: String::new(),
            verify_until: None,
            escalated_at: Some("2026-11-23T10:00:00Z".into()),
            acknowledged_by: None,
            approval: None,
            escalation_group: None,
            timeline: Some(Vec::new()),
        }
    }

    async fn send_to(path: &Path, key: &str) -> Result<(), SendError> {
        let incident = incident();
        let message = Message::new(&incident, NotificationKind::Escalated, "http://medic");
        let out = Outgoing {
            message: &message,
            incident: &incident,
            key,
            channel: "escalations",
            tier: 1,
            round: 1,
            group: None,
        };
        send(path, &out).await
    }

    #[tokio::test]
    async fn each_notification_is_one_json_line_appended_to_a_file_it_creates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/escalations.jsonl");
        send_to(&path, "01INC/1/1/escalations").await.unwrap();
        send_to(&path, "01INC/2/1/escalations").await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["key"], "01INC/1/1/escalations");
        assert_eq!(lines[1]["key"], "01INC/2/1/escalations");
        assert_eq!(lines[0]["reason"], "no_runbook");
        assert_eq!(lines[0]["incident"]["alertname"], "DatabaseDown");
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_written_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be.
        let error = send_to(dir.path(), "k").await.unwrap_err();
        assert!(!error.is_permanent(), "{error}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot write {}: ", dir.path().display())),
            "{error}"
        );
    }
}
