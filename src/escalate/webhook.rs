//! The `webhook` channel: the whole incident as one JSON document, POSTed.

use super::{http_post, Outgoing, SendError};

/// POSTs the message's document (incident, timeline, reason, links) to `url`.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    out: &Outgoing<'_>,
) -> Result<(), SendError> {
    let body = out
        .message
        .document(out.incident, out.key, out.tier, out.round);
    http_post(client, url, &body, &[("Idempotency-Key", out.key)]).await
}
