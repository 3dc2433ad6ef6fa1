//! Answering in Slack's thread: once a button's action is handled, its result ("acknowledged
//! by jdoe", or why nothing was done) is posted to the payload's `response_url`, where
//! everyone in the channel sees it, as `{"response_type": "in_channel",
//! "replace_original": false, "text": ...}`.
//!
//! The post runs in the background, after the action is committed: the HTTP answer to Slack
//! (due within three seconds) never waits for it, and a post that fails or times out is
//! logged and undoes nothing. Bounded: [`TIMEOUT`] for the whole post, the text cut at
//! [`MAX_TEXT`] characters, at most [`MAX_ANSWER`] bytes of Slack's answer read. The URL
//! comes from a payload whose signature was checked, and must be `http(s)`.

use std::time::Duration;

use axum::response::Response;
use serde_json::{json, Value};

use super::Context;

/// The longest a post to `response_url` may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The longest text posted, in characters (Slack shows up to 3000 in a section).
pub const MAX_TEXT: usize = 3000;
/// The most of Slack's answer read (for the log).
pub const MAX_ANSWER: usize = 512;

/// Where (and how) to answer one interaction.
pub(super) struct Thread {
    url: Option<reqwest::Url>,
    client: reqwest::Client,
}

impl Thread {
    /// The thread of `payload`: its `response_url`, if it has a usable one.
    pub(super) fn of(ctx: &Context, payload: &Value) -> Thread {
        let url = payload["response_url"]
            .as_str()
            .and_then(|u| reqwest::Url::parse(u).ok())
            .filter(|u| matches!(u.scheme(), "https" | "http"));
        if url.is_none() && payload.get("response_url").is_some() {
            tracing::warn!(
                "Slack interaction with an unusable response_url: not answered in its thread"
            );
        }
        Thread {
            url,
            client: ctx.config.get().toolkit.client.clone(),
        }
    }

    /// The HTTP answer to Slack saying `text`, and the same text posted to the thread in
    /// the background.
    pub(super) fn reply(&self, text: String) -> Response {
        if let Some(url) = &self.url {
            let (client, url, body) = (self.client.clone(), url.clone(), message(&text));
            tokio::spawn(async move {
                match tokio::time::timeout(TIMEOUT, post(&client, url, &body)).await {
                    Ok(Ok(())) => tracing::debug!("answered in Slack's thread"),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot answer in Slack's thread (the action stands)")
                    }
                    Err(_) => tracing::warn!(
                        timeout = ?TIMEOUT,
                        "cannot answer in Slack's thread: timed out (the action stands)"
                    ),
                }
            });
        }
        super::slack::reply(text)
    }
}

/// What is posted to the thread.
fn message(text: &str) -> Value {
    let text: String = text.chars().take(MAX_TEXT).collect();
    json!({
        "response_type": "in_channel",
        "replace_original": false,
        "text": text,
    })
}

async fn post(client: &reqwest::Client, url: reqwest::Url, body: &Value) -> Result<(), String> {
    let mut response = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let mut answer = Vec::new();
    while answer.len() < MAX_ANSWER {
        match response.chunk().await {
            Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
            _ => break,
        }
    }
    answer.truncate(MAX_ANSWER);
    Err(format!(
        "answered HTTP {}: {}",
        status.as_u16(),
        String::from_utf8_lossy(&answer).trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_in_the_channel_beside_the_original_and_bounded() {
        let m = message(&"é".repeat(MAX_TEXT + 10));
        assert_eq!(m["response_type"], "in_channel");
        assert_eq!(m["replace_original"], false);
        assert_eq!(m["text"].as_str().unwrap().chars().count(), MAX_TEXT);
    }
}
