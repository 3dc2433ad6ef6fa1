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
