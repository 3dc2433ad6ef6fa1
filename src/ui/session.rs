//! Console sessions and login attempts.
//!
//! A session is a random 256-bit token (the `medic_session` cookie) kept in the store
//! (`Store::session_open`), so that every replica honors it and a logout anywhere ends it
//! everywhere; only the token's SHA-256 is stored. Its CSRF token is derived from the
//! session token ([`csrf_of`]): never stored, different for each session, and useless
//! without the cookie. A session ends after [`IDLE`] without a request, or at logout; a
//! use is written back at most once per [`TOUCH_EVERY`], so that reading pages costs no
//! write each. Failed logins are counted in memory, per replica, per client address and
//! per name over a sliding minute ([`Attempts`]). Time is an argument everywhere, read by
//! the caller from the injected clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::store::{Store, StoreError};

/// How long a session lives without a request.
pub const IDLE: TimeDelta = TimeDelta::hours(12);
/// A session's use is written to the store at most this often.
pub const TOUCH_EVERY: TimeDelta = TimeDelta::minutes(1);
/// Most sessions kept at once; beyond, the least recently used one is ended.
const MAX_SESSIONS: usize = 10_000;
/// Longest cookie value looked up (a token is 64 hex characters).
const MAX_TOKEN: usize = 128;

/// Failed logins allowed per client address, and per name, in [`WINDOW`].
pub const MAX_FAILURES: usize = 5;
pub const WINDOW: TimeDelta = TimeDelta::minutes(1);
/// Most keys whose failures are remembered; beyond, the oldest are forgotten.
const MAX_KEYS: usize = 10_000;

/// 32 random bytes, hex: a session token or a login form's CSRF token.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Whether two tokens are equal, compared in constant time (for equal lengths).
pub fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// What a session is stored under: the hex SHA-256 of its token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The CSRF token of the session whose token is `token`.
pub fn csrf_of(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"medic console csrf\n");
    h.update(token.as_bytes());
    hex::encode(h.finalize())
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no randomness: {0}")]
    Random(#[from] getrandom::Error),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The `[[ui.users]]` name (or the proxy's).
    pub user: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// Opened from a trusted proxy's header rather than a password.
    pub proxy: bool,
}

/// The sessions in force, kept in the store.
#[derive(Clone)]
pub struct Sessions {
    store: Store,
}

impl Sessions {
    pub fn new(store: Store) -> Sessions {
        Sessions { store }
    }

    /// A new session for `user`, opened by a password (`proxy` false) or a trusted proxy:
    /// its token (the cookie's value) and the session.
    pub async fn open(
        &self,
        user: &str,
        proxy: bool,
        now: DateTime<Utc>,
    ) -> Result<(String, Session), OpenError> {
        let token = random_token()?;
        self.store
            .session_open(
                &token_hash(&token),
                user,
                proxy,
                now,
                now + IDLE,
                MAX_SESSIONS,
            )
            .await?;
        let session = Session {
            user: user.to_string(),
            csrf: csrf_of(&token),
            proxy,
        };
        Ok((token, session))
    }

    /// The session of `token`, if it is still alive at `now`; using it keeps it alive.
    pub async fn touch(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StoreError> {
        if token.is_empty() || token.len() > MAX_TOKEN {
            return Ok(None);
        }
        let hash = token_hash(token);
        let Some(stored) = self.store.session(&hash).await? else {
            return Ok(None);
        };
        if now >= stored.expires_at {
            return Ok(None);
        }
        if now - stored.last_seen >= TOUCH_EVERY
            && !self.store.session_touch(&hash, now, now + IDLE).await?
        {
            return Ok(None);
        }
        Ok(Some(Session {
            user: stored.user,
            csrf: csrf_of(token),
            proxy: stored.proxy,
        }))
    }

    /// Ends the session of `token`, on every replica.
    pub async fn close(&self, token: &str) -> Result<(), StoreError> {
        if token.len() <= MAX_TOKEN {
            self.store.session_close(&token_hash(token)).await?;
        }
        Ok(())
    }
}

/// Failed logins per key (a client address, a name) over the last [`WINDOW`].
#[derive(Debug, Default)]
pub struct Attempts {
    failures: Mutex<HashMap<String, VecDeque<DateTime<Utc>>>>,
}

impl Attempts {
    /// Whether any of `keys` already failed [`MAX_FAILURES`] times in the window.
    pub fn limited(&self, keys: &[&str], now: DateTime<Utc>) -> bool {
        let mut map = self.lock();
        keys.iter().any(|k| {
            map.get_mut(*k).is_some_and(|q| {
                prune(q, now);
                q.len() >= MAX_FAILURES
            })
        })
    }

    /// Counts a failure against each of `keys`.
    pub fn failed(&self, keys: &[&str], now: DateTime<Utc>) {
        let mut map = self.lock();
        if map.len() >= MAX_KEYS {
            map.retain(|_, q| {
                prune(q, now);
                !q.is_empty()
            });
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        for k in keys {
            let q = map.entry((*k).to_string()).or_default();
            prune(q, now);
            q.push_back(now);
            while q.len() > MAX_FAILURES {
                q.pop_front();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<DateTime<Utc>>>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn prune(q: &mut VecDeque<DateTime<Utc>>, now: DateTime<Utc>) {
    while q.front().is_some_and(|t| now - *t >= WINDOW) {
        q.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    async fn sessions(dir: &tempfile::TempDir) -> Sessions {
        let url = crate::store::postgres::test_url(&dir.path().join("data/medic.db"));
        let store = Store::open(&url, crate::metrics::StoreMetrics::default()).unwrap();
        Sessions::new(store)
    }

    #[tokio::test]
    async fn a_session_lives_while_used_and_ends_after_12_idle_hours() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(&dir).await;
        let (token, session) = s.open("alice", false, t(0)).await.unwrap();
        assert_eq!(token.len(), 64);
        assert_ne!(token, session.csrf);
        assert_eq!(session.csrf, csrf_of(&token));
        let hour = 3600;
        let seen = s.touch(&token, t(11 * hour)).await.unwrap().unwrap();
        assert_eq!(seen, session);
        assert!(s.touch(&token, t(22 * hour)).await.unwrap().is_some());
        // Used at 22 h: alive until 34 h, not a second longer.
        assert!(s.touch(&token, t(34 * hour - 1)).await.unwrap().is_some());
        assert!(s.touch(&token, t(46 * hour)).await.unwrap().is_none());
        assert!(s.touch("nope", t(0)).await.unwrap().is_none());
        assert!(s.touch("", t(0)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_use_within_a_minute_is_not_written_and_does_not_extend() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(&dir).await;
        let (token, _) = s.open("alice", false, t(0)).await.unwrap();
        // Seen 59 s after the login: not written, so it still ends 12 h after the login.
        assert!(s.touch(&token, t(59)).await.unwrap().is_some());
        assert!(s.touch(&token, t(12 * 3600)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_closed_session_is_gone_and_only_its_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(&dir).await;
        let (token, _) = s.open("alice", true, t(0)).await.unwrap();
        let stored = s.store.session(&token_hash(&token)).await.unwrap().unwrap();
        assert_eq!((stored.user.as_str(), stored.proxy), ("alice", true));
        assert!(s.store.session(&token).await.unwrap().is_none());
        s.close(&token).await.unwrap();
        assert!(s.touch(&token, t(1)).await.unwrap().is_none());
    }

    #[test]
    fn tokens_hash_and_derive_apart() {
        let token = "ab".repeat(32);
        assert_eq!(token_hash(&token).len(), 64);
        assert_ne!(token_hash(&token), csrf_of(&token));
        assert_ne!(csrf_of(&token), csrf_of(&"cd".repeat(32)));
        assert_eq!(csrf_of(&token), csrf_of(&token));
    }

    #[test]
    fn five_failures_a_minute_then_refused_until_the_minute_passes() {
        let a = Attempts::default();
        for i in 0..5 {
            assert!(!a.limited(&["ip:1", "name:bob"], t(i)));
            a.failed(&["ip:1", "name:bob"], t(i));
        }
        assert!(a.limited(&["ip:1"], t(10)));
        assert!(a.limited(&["ip:2", "name:bob"], t(10)));
        assert!(!a.limited(&["ip:2", "name:carol"], t(10)));
        assert!(!a.limited(&["ip:1", "name:bob"], t(65)));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", ""));
    }
}
