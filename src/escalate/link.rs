//! Signed one-click links: a token that lets whoever holds it do one action on one
//! incident, once, until it expires, without logging in.
//!
//! A token is `base64url(payload) "." base64url(HMAC-SHA256(key, payload))`, no padding.
//! The payload is the format version, the incident id, the action, the person the message
//! went to (its channel), the expiry (Unix seconds) and a random 128-bit nonce, one per
//! line. [`verify`] checks the signature in constant time before it reads anything, then
//! the action and the expiry; that a nonce is used only once is the store's job
//! (`Store::ack_by_link`). Pure: time is an argument.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The payload's format version.
const VERSION: &str = "1";
/// Longest token read (anything longer is refused before decoding).
const MAX_TOKEN: usize = 1024;

/// What a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Ack,
    /// Approve the plan of a run that waits for approval.
    Approve,
    /// Reject a run that waits for approval.
    Reject,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Ack, Action::Approve, Action::Reject];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Ack => "ack",
            Action::Approve => "approve",
            Action::Reject => "reject",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub incident: String,
    pub action: Action,
    /// Whom the message went to: its channel's name.
    pub person: String,
    pub expires: DateTime<Utc>,
    /// Random, hex: what makes the link usable once.
    pub nonce: String,
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the link is not one medic made")]
    Malformed,
    #[error("the link's signature does not match: it was changed or signed with another key")]
    Tampered,
    #[error("the link expired")]
    Expired,
    #[error("the link is for another action")]
    WrongAction,
}

impl Link {
    /// A new link with a fresh random nonce.
    pub fn new(
        incident: &str,
        action: Action,
        person: &str,
        expires: DateTime<Utc>,
    ) -> Result<Link, getrandom::Error> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce)?;
        Ok(Link {
            incident: incident.to_string(),
            action,
            person: person.to_string(),
            expires,
            nonce: hex::encode(nonce),
        })
    }

    fn payload(&self) -> String {
        // A newline in a field would shift the others: such fields are flattened (ids
        // and channel names never hold one).
        let clean = |s: &str| s.replace(['\n', '\r'], " ");
        format!(
            "{VERSION}\n{}\n{}\n{}\n{}\n{}",
            clean(&self.incident),
            self.action.as_str(),
            clean(&self.person),
            self.expires.timestamp(),
            self.nonce
        )
    }

    /// The token for this link, signed with `key`.
    pub fn sign(&self, key: &[u8]) -> String {
        let payload = self.payload();
        let tag = mac(key, payload.as_bytes()).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }
}

fn mac(key: &[u8], payload: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(payload);
    m
}

/// The link `token` carries, if `key` signed it, it is for `action` and it has not expired
/// at `now`.
pub fn verify(
    key: &[u8],
    token: &str,
    action: Action,
    now: DateTime<Utc>,
) -> Result<Link, Refused> {
    if token.len() > MAX_TOKEN {
        return Err(Refused::Malformed);
    }
    let (payload, tag) = token.split_once('.').ok_or(Refused::Malformed)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| Refused::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| Refused::Malformed)?;
    mac(key, &payload)
        .verify_slice(&tag)
        .map_err(|_| Refused::Tampered)?;
    let text = String::from_utf8(payload).map_err(|_| Refused::Malformed)?;
    let fields: Vec<&str> = text.split('\n').collect();
    let [version, incident, act, person, expires, nonce] = fields[..] else {
        return Err(Refused::Malformed);
    };
    if version != VERSION || nonce.is_empty() {
        return Err(Refused::Malformed);
    }
    // Any other action, known to this medic or not, is not what was asked.
    if act != action.as_str() {
        return Err(Refused::WrongAction);
    }
    let expires = expires
        .parse::<i64>()
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .ok_or(Refused::Malformed)?;
    if now >= expires {
        return Err(Refused::Expired);
    }
    Ok(Link {
        incident: incident.to_string(),
        action,
        person: person.to_string(),
        expires,
        nonce: nonce.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn link() -> Link {
        Link::new(
            "01INC",
            Action::Ack,
            "oncall-mail",
            now() + TimeDelta::hours(24),
        )
        .unwrap()
    }

    #[test]
    fn a_signed_link_verifies_to_what_it_says() {
        let l = link();
        let token = l.sign(KEY);
        assert!(token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')));
        assert_eq!(verify(KEY, &token, Action::Ack, now()), Ok(l.clone()));
        assert_eq!(l.nonce.len(), 32);
        assert_ne!(l.nonce, link().nonce, "each link has its own nonce");
    }

    #[test]
    fn a_changed_token_or_another_key_is_refused() {
        let token = link().sign(KEY);
        let (payload, tag) = token.split_once('.').unwrap();
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let other = URL_SAFE_NO_PAD.encode(text.replace("01INC", "01OTHER"));
        let check =
            |t: &str, want| assert_eq!(verify(KEY, t, Action::Ack, now()), Err(want), "{t}");
        check(&format!("{other}.{tag}"), Refused::Tampered);
        let mut flipped = tag.as_bytes().to_vec();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        check(
            &format!("{payload}.{}", String::from_utf8(flipped).unwrap()),
            Refused::Tampered,
        );
        check(&format!("{payload}."), Refused::Tampered);
        check(payload, Refused::Malformed);
        check("", Refused::Malformed);
        check("%%%.%%%", Refused::Malformed);
        assert_eq!(
            verify(
                b"another key, just as long as the first",
                &token,
                Action::Ack,
                now()
            ),
            Err(Refused::Tampered)
        );
    }

    #[test]
    fn an_expired_link_is_refused() {
        let token = link().sign(KEY);
        let at = |h| now() + TimeDelta::hours(h);
        assert!(verify(KEY, &token, Action::Ack, at(23)).is_ok());
        assert_eq!(
            verify(KEY, &token, Action::Ack, at(24)),
            Err(Refused::Expired)
        );
        assert_eq!(
            verify(KEY, &token, Action::Ack, at(48)),
            Err(Refused::Expired)
        );
    }

    #[test]
    fn a_link_for_another_action_is_refused() {
        let l = link();
        let payload = l.payload().replace("\nack\n", "\nresolve\n");
        let tag = mac(KEY, payload.as_bytes()).finalize().into_bytes();
        let token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        );
        // Properly signed, but for another action.
        assert_eq!(
            verify(KEY, &token, Action::Ack, now()),
            Err(Refused::WrongAction)
        );
        assert_eq!(Action::parse("ack"), Some(Action::Ack));
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
    }

    #[test]
    fn an_approve_link_is_not_a_reject_link_nor_an_ack_link() {
        let l = Link::new(
            "01INC",
            Action::Approve,
            "mail",
            now() + TimeDelta::hours(1),
        )
        .unwrap();
        let token = l.sign(KEY);
        assert_eq!(verify(KEY, &token, Action::Approve, now()), Ok(l));
        for other in [Action::Reject, Action::Ack] {
            assert_eq!(
                verify(KEY, &token, other, now()),
                Err(Refused::WrongAction),
                "{other:?}"
            );
        }
    }
}
