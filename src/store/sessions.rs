//! Console sessions in the database, so that every replica knows them (`console_sessions`,
//! migration 10), and the removal of what can never be used again: expired sessions and
//! the used nonces of expired signed links (`used_links`).
//!
//! A session row is keyed by the SHA-256 of the cookie's token (the token itself is never
//! stored: a copy of the database opens no session). The console decides what a session
//! is and when it ends (`ui::session`); this file only keeps the rows.

use chrono::{DateTime, Utc};

use super::db::{params, OptionalExtension};
use super::{parse_time, stamp, Store, StoreError};

/// A console session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// The `[[ui.users]]` (or proxy) name.
    pub user: String,
    /// Opened from a trusted proxy's header rather than a password.
    pub proxy: bool,
    pub last_seen: DateTime<Utc>,
    /// When it ends unless used again.
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Stores a new session for `user`, keyed by `token_hash`, opened at `now` and alive
    /// until `expires_at`. Keeps at most `max` sessions: beyond, the least recently used
    /// are removed.
    pub async fn session_open(
        &self,
        token_hash: &str,
        user: &str,
        proxy: bool,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        max: usize,
    ) -> Result<(), StoreError> {
        let (hash, user) = (token_hash.to_string(), user.to_string());
        let (now, expires) = (stamp(now), stamp(expires_at));
        self.inner
            .write(move |w| {
                let count: i64 = w
                    .conn
                    .prepare_cached("SELECT COUNT(*) FROM console_sessions")?
                    .query_row((), |r| r.get(0))?;
                let over = count + 1 - max as i64;
                if over > 0 {
                    w.conn
                        .prepare_cached(
                            "DELETE FROM console_sessions WHERE token_hash IN
                             (SELECT token_hash FROM console_sessions ORDER BY last_seen LIMIT ?1)",
                        )?
                        .execute([over])?;
                }
                w.conn
                    .prepare_cached(
                        "INSERT INTO console_sessions (token_hash, user_name, via_proxy, created_at, last_seen, expires_at)
                         VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                    )?
                    .execute(params![hash, user, i64::from(proxy), now, expires])?;
                Ok(())
            })
            .await
    }

    /// The session keyed by `token_hash`, if there is one (expired or not: the caller
    /// judges).
    pub async fn session(&self, token_hash: &str) -> Result<Option<StoredSession>, StoreError> {
        let hash = token_hash.to_string();
        self.inner
            .read(move |c| {
                let row: Option<(String, i64, String, String)> = c
                    .prepare_cached(
                        "SELECT user_name, via_proxy, last_seen, expires_at FROM console_sessions
                         WHERE token_hash = ?1",
                    )?
                    .query_row([&hash], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()?;
                let Some((user, proxy, last_seen, expires_at)) = row else {
                    return Ok(None);
                };
                let time = |s: &str| {
                    parse_time(s).ok_or_else(|| {
                        StoreError::Corrupt(format!("a console session of {user}: time {s:?}"))
                    })
                };
                Ok(Some(StoredSession {
                    proxy: proxy != 0,
                    last_seen: time(&last_seen)?,
                    expires_at: time(&expires_at)?,
                    user,
                }))
            })
            .await
    }

    /// Records a use of the session at `now`: it lives until `expires_at`. False when it
    /// no longer exists (logged out, or expired, meanwhile).
    pub async fn session_touch(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let hash = token_hash.to_string();
        let (now, expires) = (stamp(now), stamp(expires_at));
        self.inner
            .write(move |w| {
                let n = w
                    .conn
                    .prepare_cached(
                        "UPDATE console_sessions SET last_seen = ?2, expires_at = ?3
                         WHERE token_hash = ?1 AND expires_at > ?2",
                    )?
                    .execute(params![hash, now, expires])?;
                Ok(n > 0)
            })
            .await
    }

    /// Ends the session keyed by `token_hash`, on every replica. False when there was none.
    pub async fn session_close(&self, token_hash: &str) -> Result<bool, StoreError> {
        let hash = token_hash.to_string();
        self.inner
            .write(move |w| {
                let n = w
                    .conn
                    .prepare_cached("DELETE FROM console_sessions WHERE token_hash = ?1")?
                    .execute([&hash])?;
                Ok(n > 0)
            })
            .await
    }

    /// Removes at most `batch` sessions that expired before `before`; returns how many.
    pub async fn sweep_sessions(
        &self,
        before: DateTime<Utc>,
        batch: usize,
    ) -> Result<usize, StoreError> {
        self.sweep(
            "DELETE FROM console_sessions WHERE token_hash IN
             (SELECT token_hash FROM console_sessions WHERE expires_at < ?1 LIMIT ?2)",
            before,
            batch,
        )
        .await
    }

    /// Removes at most `batch` used nonces of signed links that expired before `before`:
    /// such a link is refused as expired before its nonce is looked at, so its row can
    /// never matter again. Returns how many.
    pub async fn sweep_used_links(
        &self,
        before: DateTime<Utc>,
        batch: usize,
    ) -> Result<usize, StoreError> {
        self.sweep(
            "DELETE FROM used_links WHERE nonce IN
             (SELECT nonce FROM used_links WHERE expires_at < ?1 LIMIT ?2)",
            before,
            batch,
        )
        .await
    }

    /// How many nonces of used links are kept (for tests and metrics).
    pub async fn used_links_count(&self) -> Result<u64, StoreError> {
        self.inner
            .read(|c| {
                let n: i64 = c.query_row("SELECT COUNT(*) FROM used_links", (), |r| r.get(0))?;
                Ok(n as u64)
            })
            .await
    }

    /// Records a used link's nonce that expires at `expires_at` (for tests).
    #[cfg(test)]
    pub(crate) async fn put_used_link(
        &self,
        nonce: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (nonce, expires) = (nonce.to_string(), stamp(expires_at));
        self.inner
            .write(move |w| {
                let now = stamp(w.cx.now());
                w.conn
                    .prepare_cached(
                        "INSERT INTO used_links (nonce, incident_id, action, used_by, used_at, expires_at)
                         VALUES (?1, 'I1', 'ack', 'test', ?2, ?3)",
                    )?
                    .execute(params![nonce, now, expires])?;
                Ok(())
            })
            .await
    }

    async fn sweep(
        &self,
        sql: &'static str,
        before: DateTime<Utc>,
        batch: usize,
    ) -> Result<usize, StoreError> {
        let before = stamp(before);
        self.inner
            .write(move |w| {
                w.conn
                    .prepare_cached(sql)?
                    .execute(params![before, batch as i64])
            })
            .await
    }
}
