//! Console sessions and login attempts, kept in memory: a restart logs everyone out.
//!
//! A session is a random 256-bit id (the `medic_session` cookie) with the user's name, its
//! own random CSRF token and when it was last used; it ends after [`IDLE`] without a
//! request, or at logout. Failed logins are counted per client address and per name over a
//! sliding minute ([`Attempts`]). Time is an argument everywhere, read by the caller from
//! the injected clock, so these are plain state machines.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use subtle::ConstantTimeEq as _;

/// How long a session lives without a request.
pub const IDLE: TimeDelta = TimeDelta::hours(12);
/// Most sessions kept at once; beyond, the least recently used one is ended.
const MAX_SESSIONS: usize = 10_000;

/// Failed logins allowed per client address, and per name, in [`WINDOW`].
pub const MAX_FAILURES: usize = 5;
pub const WINDOW: TimeDelta = TimeDelta::minutes(1);
/// Most keys whose failures are remembered; beyond, the oldest are forgotten.
const MAX_KEYS: usize = 10_000;

/// 32 random bytes, hex: a session id or a CSRF token.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Whether two tokens are equal, compared in constant time (for equal lengths).
pub fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The `[[ui.users]]` name.
    pub user: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// Opened from a trusted proxy's header rather than a password.
    pub proxy: bool,
    last_seen: DateTime<Utc>,
}

/// The sessions in force.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for `user`: its id (the cookie's value) and the session.
    pub fn open(
        &self,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, Session), getrandom::Error> {
        self.open_as(user, false, now)
    }

    /// A new session for `user`, opened by a password (`proxy` false) or a trusted proxy.
    pub fn open_as(
        &self,
        user: &str,
        proxy: bool,
        now: DateTime<Utc>,
    ) -> Result<(String, Session), getrandom::Error> {
        let id = random_token()?;
        let session = Session {
            user: user.to_string(),
            csrf: random_token()?,
            proxy,
            last_seen: now,
        };
        let mut map = self.lock();
        map.retain(|_, s| now - s.last_seen < IDLE);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(id, _)| id.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The session `id`, if it is still alive at `now`; using it keeps it alive.
    pub fn touch(&self, id: &str, now: DateTime<Utc>) -> Option<Session> {
        let mut map = self.lock();
        let alive = map.get(id).is_some_and(|s| now - s.last_seen < IDLE);
        if !alive {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        s.last_seen = now;
        Some(s.clone())
    }

    /// Ends session `id`; returns it if it existed.
    pub fn close(&self, id: &str) -> Option<Session> {
        self.lock().remove(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
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

    #[test]
    fn a_session_lives_while_used_and_ends_after_12_idle_hours() {
        let s = Sessions::default();
        let (id, session) = s.open("alice", t(0)).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, session.csrf);
        let hour = 3600;
        assert_eq!(s.touch(&id, t(11 * hour)).unwrap().user, "alice");
        assert!(s.touch(&id, t(22 * hour)).is_some());
        assert!(s.touch(&id, t(34 * hour)).is_none());
        assert!(s.touch(&id, t(34 * hour)).is_none());
        assert!(s.touch("nope", t(0)).is_none());
    }

    #[test]
    fn a_closed_session_is_gone() {
        let s = Sessions::default();
        let (id, _) = s.open("alice", t(0)).unwrap();
        assert_eq!(s.close(&id).unwrap().user, "alice");
        assert!(s.touch(&id, t(1)).is_none());
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
