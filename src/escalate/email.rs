//! The `email` channel: one mail over SMTP (lettre), with a plain-text and an HTML part.
//!
//! The connection is plain, STARTTLS when offered, STARTTLS required, or TLS from the
//! first byte, with an optional login. The SMTP server's verdict decides the retry: a 5xx
//! reply (a rejected recipient, say) is permanent, a 4xx, a timeout or a refused
//! connection is transient. The mail's `Message-ID` derives from the notification's
//! idempotency key, and a resolution replies to its escalation's mail.

use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Outgoing, SendError};
use crate::config::SmtpTls;
use crate::store::NotificationKind;

/// An `email` channel's settings.
pub struct Email<'a> {
    pub smtp: &'a str,
    pub from: &'a str,
    pub to: &'a [String],
    pub tls: SmtpTls,
    pub auth: Option<&'a (String, String)>,
    pub timeout: Duration,
}

pub async fn send(mail: &Email<'_>, out: &Outgoing<'_>) -> Result<(), SendError> {
    let message = build(mail, out)?;
    let (host, port) = mail
        .smtp
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| SendError::Invalid(format!("invalid SMTP address {:?}", mail.smtp)))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tls = |host: &str| {
        TlsParameters::new(host.to_string())
            .map_err(|e| SendError::Invalid(format!("TLS settings for {host}: {e}")))
    };
    if mail.tls != SmtpTls::Tls {
        return converse(host, port, mail, &message, tls).await;
    }
    // TLS from the first byte: lettre's transport opens the connection.
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(Tls::Wrapper(tls(host)?))
        .timeout(Some(mail.timeout));
    if let Some((user, password)) = mail.auth {
        transport = transport.credentials(Credentials::new(user.clone(), password.clone()));
    }
    transport
        .build()
        .send(message)
        .await
        .map(drop)
        .map_err(classify)
}

/// One SMTP conversation over a connection opened here, with Nagle's algorithm off: the
/// end of the message (`.`) is a small write after a large one, which would otherwise wait
/// for the server's delayed ACK (tens of milliseconds per mail).
async fn converse(
    host: &str,
    port: u16,
    mail: &Email<'_>,
    message: &lettre::Message,
    tls: impl Fn(&str) -> Result<TlsParameters, SendError>,
) -> Result<(), SendError> {
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| SendError::Connect(format!("{host}:{port}: {e}")))?;
    tcp.set_nodelay(true)
        .map_err(|e| SendError::Connect(e.to_string()))?;
    let hello = ClientId::default();
    let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
        .await
        .map_err(classify)?;
    let offered = conn.can_starttls();
    match mail.tls {
        SmtpTls::StartTls if !offered => {
            conn.abort().await;
            return Err(SendError::Invalid(format!(
                "{host}:{port} does not offer STARTTLS, and tls = \"starttls\" requires it"
            )));
        }
        SmtpTls::StartTls | SmtpTls::Opportunistic if offered => {
            conn.starttls(tls(host)?, &hello).await.map_err(classify)?;
        }
        _ => {}
    }
    if let Some((user, password)) = mail.auth {
        let credentials = Credentials::new(user.clone(), password.clone());
        conn.auth(DEFAULT_MECHANISMS, &credentials)
            .await
            .map_err(classify)?;
    }
    let sent = conn
        .send(message.envelope(), &message.formatted())
        .await
        .map_err(classify);
    if sent.is_ok() {
        let _ = conn.quit().await;
    } else {
        conn.abort().await;
    }
    sent.map(drop)
}

/// The mail for `out`: subject, addresses, identity headers, and both parts.
pub fn build(mail: &Email<'_>, out: &Outgoing<'_>) -> Result<lettre::Message, SendError> {
    let parse = |a: &str| {
        a.parse::<Mailbox>()
            .map_err(|e| SendError::Invalid(format!("address {a:?}: {e}")))
    };
    let m = out.message;
    let domain = mail
        .from
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or("medic");
    let id = |key: &str| format!("<{}@{domain}>", key.replace('/', "."));
    let mut builder = lettre::Message::builder()
        .from(parse(mail.from)?)
        .subject(&m.title)
        .message_id(Some(id(out.key)))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Medic-Incident"),
            out.incident.id.clone(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Medic-Kind"),
            m.kind.as_str().to_string(),
        ));
    if let Some(reason) = out.incident.reason {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Medic-Reason"),
            reason.as_str().to_string(),
        ));
    }
    // Thread a resolution under the first escalation mail, a withdrawal under the request.
    let first = match m.kind {
        NotificationKind::Resolved => Some(format!("{}/1/1/{}", out.incident.id, out.channel)),
        NotificationKind::ApprovalWithdrawn => {
            Some(format!("{}/approval/1/{}", out.incident.id, out.channel))
        }
        _ => None,
    };
    if let Some(first) = first {
        let first = id(&first);
        builder = builder.in_reply_to(first.clone()).references(first);
    }
    for to in mail.to {
        builder = builder.to(parse(to)?);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(m.text(), m.html()))
        .map_err(|e| SendError::Invalid(format!("cannot build the mail: {e}")))
}

fn classify(e: lettre::transport::smtp::Error) -> SendError {
    let code = e.status().map(|c| c.to_string());
    if e.is_permanent() {
        SendError::Smtp {
            code,
            message: e.to_string(),
            permanent: true,
        }
    } else if e.is_timeout() {
        SendError::Timeout
    } else if e.is_transient() {
        SendError::Smtp {
            code,
            message: e.to_string(),
            permanent: false,
        }
    } else {
        SendError::Connect(e.to_string())
    }
}
