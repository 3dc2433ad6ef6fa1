//! Escalation: telling a person, reliably, about what medic could not fix.
//!
//! The decision to escalate never happens here: the store commits an escalation and its
//! notifications (one per tier and channel, each due `after` its tier's delay) in the same
//! transaction, so an escalation is never lost. This module is the sender that drains that
//! outbox, in stages, like Alertmanager's notify pipeline:
//!
//! 1. **due**: the store lists the notifications due now (a notification already in
//!    flight is not taken twice; the idempotency key means none is owed twice);
//! 2. **render**: [`message::Message`] turns the incident and its timeline into what
//!    on-call reads;
//! 3. **send**: one small file per channel ([`email`], [`webhook`], [`slack`],
//!    [`pagerduty`], [`file`]), bounded by the channel's timeout, each error typed as transient or
//!    permanent ([`SendError`]);
//! 4. **record**: the attempt is audited; a transient failure is retried with exponential
//!    backoff and jitter, a permanent one is not; a channel that keeps failing, or cannot
//!    deliver, makes the next tier due at once so the page is not swallowed.
//!
//! It also starts the renotify rounds of incidents that stay escalated and unacknowledged.

pub mod email;
pub mod file;
pub mod link;
pub mod message;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::config::{ChannelConfig, ChannelKind, RetryConfig};
use crate::metrics::Metrics;
use crate::metrics::NotificationLabels;
use crate::snapshot::Current;
use crate::store::{Attempt, Incident, Notification, NotificationKind, Store};
use message::Message;

/// How often the sender looks at the outbox when nothing woke it.
const POLL: Duration = Duration::from_secs(1);
/// How often renotify rounds are looked for.
const RENOTIFY_EVERY: Duration = Duration::from_secs(1);
/// Notifications sent at once.
const MAX_IN_FLIGHT: usize = 32;
/// Notifications taken from the outbox per look.
const BATCH: usize = 128;
/// The shortest wait while sends are in flight.
const IN_FLIGHT_TICK: Duration = Duration::from_millis(20);
/// How long a stop waits for sends in flight.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Most of an HTTP error body kept in an error message.
const ERROR_BODY: usize = 512;

/// Why a send failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("timed out")]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("answered HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Http { status: u16, body: String },
    #[error("SMTP: {message}")]
    Smtp {
        code: Option<String>,
        message: String,
        permanent: bool,
    },
    /// The channel's settings or the message cannot work (a bad address, ...).
    #[error("{0}")]
    Invalid(String),
    /// A file could not be written (full disk, permissions): worth another try.
    #[error("cannot write {path}: {message}")]
    File { path: String, message: String },
}

impl SendError {
    /// A permanent error fails the same way every time: no retry.
    pub fn is_permanent(&self) -> bool {
        match self {
            SendError::Timeout | SendError::Connect(_) | SendError::File { .. } => false,
            // 408 and 429 ask to come back; other 4xx say the request itself is wrong.
            SendError::Http { status, .. } => {
                (400..500).contains(status) && *status != 408 && *status != 429
            }
            SendError::Smtp { permanent, .. } => *permanent,
            SendError::Invalid(_) => true,
        }
    }
}

/// One notification about to go out: the rendered message and its identity.
pub struct Outgoing<'a> {
    pub message: &'a Message,
    pub incident: &'a Incident,
    /// The idempotency key.
    pub key: &'a str,
    pub channel: &'a str,
    pub tier: u32,
    pub round: u32,
    /// The storm group, for a group's summary.
    pub group: Option<&'a str>,
}

/// POSTs `body` as JSON and classifies the answer.
pub(crate) async fn http_post(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Result<(), SendError> {
    let mut request = client.post(url).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            SendError::Timeout
        } else {
            SendError::Connect(without_url(&e))
        }
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let mut body = response.text().await.unwrap_or_default();
    if body.len() > ERROR_BODY {
        let mut end = ERROR_BODY;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
    }
    Err(SendError::Http {
        status: status.as_u16(),
        body: body.trim().to_string(),
    })
}

/// A transport error without its URL (a Slack or PagerDuty URL may hold a secret).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Sends `out` through `channel`, bounded by its timeout.
pub async fn send(
    client: &reqwest::Client,
    channel: &ChannelConfig,
    out: &Outgoing<'_>,
) -> Result<(), SendError> {
    let sending = async {
        match &channel.kind {
            ChannelKind::Email {
                smtp,
                from,
                to,
                tls,
                auth,
            } => {
                let mail = email::Email {
                    smtp,
                    from,
                    to,
                    tls: *tls,
                    auth: auth.as_ref(),
                    timeout: channel.timeout,
                };
                email::send(&mail, out).await
            }
            ChannelKind::Webhook { url } => webhook::send(client, url, out).await,
            ChannelKind::Slack {
                url,
                signing_secret,
            } => slack::send(client, url, signing_secret.is_some(), out).await,
            ChannelKind::PagerDuty {
                routing_key,
                url,
                default_severity,
                ..
            } => pagerduty::send(client, url, routing_key, default_severity, out).await,
            ChannelKind::File { path } => file::send(path, out).await,
        }
    };
    tokio::time::timeout(channel.timeout, sending)
        .await
        .unwrap_or(Err(SendError::Timeout))
}

/// The wait before retry number `attempt` (1 for the first retry): exponential, capped,
/// with full jitter in its upper half so that retries of many notifications spread out.
pub fn backoff(retry: &RetryConfig, attempt: u32, jitter: f64) -> Duration {
    let exp = retry
        .initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(retry.max);
    capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A number in [0, 1) for jitter; needs no cryptographic quality. Not from the clock (a
/// paused clock would give every retry the same jitter): a randomly keyed hash of a count.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    static DRAWN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(DRAWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Which channels keep failing: consecutive failed attempts per channel, for `/readyz` and
/// `/metrics`. A success resets a channel.
#[derive(Debug, Default)]
pub struct Health {
    failures: Mutex<HashMap<String, u32>>,
}

impl Health {
    fn record(&self, channel: &str, ok: bool) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            f.remove(channel);
            0
        } else {
            let n = f.entry(channel.to_string()).or_default();
            *n += 1;
            *n
        }
    }

    /// Channels whose last `threshold` attempts or more all failed, by name.
    pub fn failing(&self, threshold: u32) -> Vec<(String, u32)> {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, u32)> = f
            .iter()
            .filter(|(_, n)| **n >= threshold)
            .map(|(c, n)| (c.clone(), *n))
            .collect();
        out.sort();
        out
    }
}

/// What the sender works with, handed to it by the composition root.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Which channels keep failing, shared with `/readyz`.
    pub health: Arc<Health>,
    pub config: Current,
    pub clock: Clock,
    /// The address medic listens on, for links in messages when `server.external_url`
    /// is not set.
    pub listening: Option<SocketAddr>,
}

impl Context {
    /// medic's external URL, for links in messages: `server.external_url`, else the
    /// address it listens on.
    fn medic_url(&self) -> String {
        message::medic_url(&self.config.get().config, self.listening)
    }
}

/// Runs the sender until `stop` completes; sends in flight get a short grace.
pub async fn run(ctx: Context, stop: impl Future<Output = ()>) {
    let wake = ctx.store.outbox_wake();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // Notifications in flight, and those whose attempt was recorded since the last look:
    // an id leaves `taken` only before a fresh read of the outbox, one that sees its record.
    let mut taken: HashSet<i64> = HashSet::new();
    let finished: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut sends: JoinSet<()> = JoinSet::new();
    let mut last_renotify = ctx.clock.instant();
    tokio::pin!(stop);
    loop {
        let mut wait = match ctx.store.outbox_next_due().await {
            Ok(Some(due)) => (due - ctx.clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(POLL),
            _ => POLL,
        };
        if !sends.is_empty() {
            // The due notification may be one in flight: do not spin on it (a finished
            // send wakes the loop anyway).
            wait = wait.max(IN_FLIGHT_TICK);
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            Some(_) = sends.join_next(), if !sends.is_empty() => continue,
        }
        if ctx.clock.instant().saturating_duration_since(last_renotify) >= RENOTIFY_EVERY {
            last_renotify = ctx.clock.instant();
            match ctx.store.renotify_due().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(incidents = n, "escalated incidents renotified"),
                Err(e) => tracing::warn!(error = %e, "cannot start renotify rounds; will retry"),
            }
        }
        for id in lock(&finished).drain(..) {
            taken.remove(&id);
        }
        let due = match ctx.store.outbox_due(ctx.clock.now(), BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox; will retry");
                continue;
            }
        };
        for n in due {
            if !taken.insert(n.id) {
                continue; // in flight, or its record is not read back yet
            }
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let (ctx, finished) = (ctx.clone(), finished.clone());
            sends.spawn(async move {
                let id = n.id;
                deliver(&ctx, n).await;
                lock(&finished).push(id);
                drop(permit);
            });
        }
    }
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while sends.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            sends = sends.len(),
            "notifications still sending at stop; they stay in the outbox and are sent at next start"
        );
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One attempt at one notification, recorded.
async fn deliver(ctx: &Context, n: Notification) {
    let loaded = ctx.config.get();
    let retry = loaded.config.escalation.retry;
    let started = ctx.clock.instant();
    let result = match (
        loaded.config.escalation.channel(&n.channel),
        ctx.store.incident(&n.incident_id).await,
    ) {
        (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot read an incident to notify; will retry");
            return;
        }
        (_, Ok(None)) => Err(SendError::Invalid(format!(
            "incident {} does not exist",
            n.incident_id
        ))),
        (None, Ok(Some(_))) => Err(SendError::Invalid(format!(
            "channel {:?} is no longer configured",
            n.channel
        ))),
        (Some(channel), Ok(Some(incident))) => {
            let medic_url = ctx.medic_url();
            let mut message = Message::new(&incident, n.kind, &medic_url);
            if let (NotificationKind::Escalated, Some(key)) =
                (n.kind, &loaded.config.server.link_secret)
            {
                let ttl = chrono::Duration::from_std(loaded.config.server.link_ttl)
                    .unwrap_or(chrono::Duration::hours(24));
                match link::Link::new(
                    &incident.id,
                    link::Action::Ack,
                    &n.channel,
                    ctx.clock.now() + ttl,
                ) {
                    Ok(l) => {
                        message.add_ack_link(format!("{medic_url}/ui/a/{}", l.sign(key.as_bytes())))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no randomness: the message goes without its ack link")
                    }
                }
            }
            if n.kind == NotificationKind::ApprovalRequested {
                decision_links(
                    &mut message,
                    &loaded.config,
                    &incident,
                    &n.channel,
                    ctx.clock.now(),
                    &medic_url,
                );
            }
            // A storm group's summary lists the group's incidents still escalated.
            if let Some(gid) = &n.group {
                if let Ok((size, incidents)) =
                    ctx.store.group_members(gid, message::GROUP_LISTED).await
                {
                    message.title = format!(
                        "{} (+{} more incidents)",
                        message.title,
                        size.saturating_sub(1)
                    );
                    message.group = Some(message::Group {
                        id: gid.to_string(),
                        size,
                        incidents,
                    });
                }
            }
            let key = n.key.to_string();
            let out = Outgoing {
                message: &message,
                incident: &incident,
                key: &key,
                channel: &n.channel,
                tier: n.tier,
                round: n.round,
                group: n.group.as_deref(),
            };
            send(&loaded.toolkit.client, channel, &out).await
        }
    };
    let elapsed = ctx.clock.instant().saturating_duration_since(started);
    let attempt = match &result {
        Ok(()) => Attempt::Sent,
        Err(e) => {
            let permanent = e.is_permanent();
            let made = n.attempts + 1;
            let retry_at = (!permanent && made < retry.attempts).then(|| {
                let wait = backoff(&retry, made, jitter());
                ctx.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default()
            });
            Attempt::Failed {
                error: loaded.toolkit.redactor.apply(&e.to_string()),
                permanent,
                fall_through: permanent || retry_at.is_none() || made >= retry.fall_through_after,
                retry_at,
            }
        }
    };
    let label = match &result {
        Ok(()) => "sent",
        Err(e) if e.is_permanent() => "permanent_failure",
        Err(_) => "transient_failure",
    };
    let failures = ctx.health.record(&n.channel, result.is_ok());
    let m = &ctx.metrics;
    m.notifications
        .get_or_create(&NotificationLabels {
            channel: n.channel.clone(),
            kind: n.kind.as_str(),
            result: label,
        })
        .inc();
    m.notification_seconds.observe(elapsed.as_secs_f64());
    m.set_channel_failing(&n.channel, failures >= retry.fall_through_after);
    match &result {
        Ok(()) => {
            tracing::info!(incident = %n.incident_id, channel = %n.channel, kind = n.kind.as_str(), tier = n.tier, ms = elapsed.as_millis() as u64, "notification sent")
        }
        Err(e) => {
            tracing::warn!(incident = %n.incident_id, channel = %n.channel, attempt = n.attempts + 1, error = %e, permanent = e.is_permanent(), "notification failed")
        }
    }
    if let Err(e) = ctx.store.outbox_attempt(n.id, attempt).await {
        // Not recorded: it stays due and is tried again (a receiver may see it twice,
        // with the same idempotency key).
        tracing::error!(error = %e, "cannot record a notification attempt");
    }
}

/// Adds the signed approve and reject links to an approval request, when links are signed
/// (`server.link_secret`) and the route names no `approvers`: a link carries no person,
/// only the channel it was sent to, so on a route that names who may decide, people decide
/// in the console, in Slack or through the API.
fn decision_links(
    message: &mut Message,
    config: &crate::config::Config,
    incident: &Incident,
    channel: &str,
    now: chrono::DateTime<chrono::Utc>,
    medic_url: &str,
) {
    let Some(key) = &config.server.link_secret else {
        return;
    };
    let route = incident.route.as_deref();
    let named = config
        .routes
        .iter()
        .find(|r| Some(r.name.as_str()) == route)
        .and_then(|r| r.approval.as_ref())
        .is_some_and(|a| !a.approvers.is_empty());
    if named {
        return;
    }
    let ttl =
        chrono::Duration::from_std(config.server.link_ttl).unwrap_or(chrono::Duration::hours(24));
    let sign = |action: link::Action| {
        link::Link::new(&incident.id, action, channel, now + ttl).map(|l| {
            format!(
                "{medic_url}/ui/{}/{}",
                action.as_str(),
                l.sign(key.as_bytes())
            )
        })
    };
    match (sign(link::Action::Approve), sign(link::Action::Reject)) {
        (Ok(a), Ok(r)) => message.add_decision_links(a, r),
        _ => tracing::warn!("no randomness: the approval request goes without its links"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_errors_say_whether_to_retry() {
        let http = |status| SendError::Http {
            status,
            body: String::new(),
        };
        for (status, permanent) in [
            (400, true),
            (401, true),
            (403, true),
            (404, true),
            (408, false),
            (429, false),
            (500, false),
            (502, false),
            (503, false),
        ] {
            assert_eq!(http(status).is_permanent(), permanent, "{status}");
        }
        assert!(!SendError::Timeout.is_permanent());
        assert!(!SendError::Connect("refused".into()).is_permanent());
        assert!(SendError::Invalid("bad address".into()).is_permanent());
        let smtp = |permanent| SendError::Smtp {
            code: None,
            message: String::new(),
            permanent,
        };
        assert!(smtp(true).is_permanent() && !smtp(false).is_permanent());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let retry = RetryConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            attempts: 10,
            fall_through_after: 3,
        };
        let s = Duration::from_secs;
        assert_eq!(backoff(&retry, 1, 1.0), s(1));
        assert_eq!(backoff(&retry, 2, 1.0), s(2));
        assert_eq!(backoff(&retry, 3, 1.0), s(4));
        assert_eq!(backoff(&retry, 6, 1.0), s(30));
        assert_eq!(backoff(&retry, 60, 1.0), s(30));
        assert_eq!(backoff(&retry, 3, 0.0), s(2));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn health_names_channels_that_keep_failing() {
        let h = Health::default();
        for _ in 0..3 {
            h.record("pager", false);
        }
        h.record("mail", false);
        assert_eq!(h.failing(3), [("pager".to_string(), 3)]);
        h.record("pager", true);
        assert!(h.failing(1).iter().all(|(c, _)| c != "pager"));
    }
}
