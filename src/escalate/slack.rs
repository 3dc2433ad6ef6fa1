//! The `slack` channel: a Slack incoming-webhook message with the key facts, and an
//! "Acknowledge" button when the channel has a `signing_secret` (the click comes back on
//! `POST /slack/actions`, see `callbacks::slack`).

use super::{http_post, Outgoing, SendError};

/// POSTs the short summary to the incoming webhook at `url`, with the button when
/// `ack_button`.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    ack_button: bool,
    out: &Outgoing<'_>,
) -> Result<(), SendError> {
    let body = if ack_button {
        out.message.slack_with_ack()
    } else {
        out.message.slack()
    };
    http_post(client, url, &body, &[]).await
}
