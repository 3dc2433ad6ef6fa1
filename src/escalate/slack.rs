//! The `slack` channel: a Slack incoming-webhook message with the key facts.

use super::{http_post, Outgoing, SendError};

/// POSTs the short summary to the incoming webhook at `url`.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    out: &Outgoing<'_>,
) -> Result<(), SendError> {
    http_post(client, url, &out.message.slack(), &[]).await
}
