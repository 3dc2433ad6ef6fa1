//! Removing what the console can never use again, periodically and in bounded batches:
//! sessions that expired, and the used nonces of signed links that expired.
//!
//! A signed link is refused as expired before its nonce is looked at, so once it expired
//! its `used_links` row only takes room. Rows go [`LINK_GRACE`] after their link's expiry,
//! not at once: a replica whose clock is behind would still take the link as alive, and
//! must still find it used. Each batch is its own short write, so the sweep never holds
//! the store's writer (or, on PostgreSQL, every replica's) for long.

use std::future::Future;
use std::time::Duration;

use chrono::TimeDelta;

use crate::clock::Clock;
use crate::store::{Store, StoreError};

/// How often the sweep runs.
pub const EVERY: Duration = Duration::from_secs(60);
/// Rows removed per write.
pub const BATCH: usize = 500;
/// Writes per table per sweep; what is left waits for the next sweep.
pub const MAX_BATCHES: usize = 20;
/// How long after its link expired a used nonce is kept.
pub const LINK_GRACE: TimeDelta = TimeDelta::hours(1);

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub sessions: usize,
    pub links: usize,
}

/// Runs the sweep every [`EVERY`] until `stop` completes.
pub async fn run(store: Store, clock: Clock, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        match sweep_once(&store, &clock, BATCH, MAX_BATCHES).await {
            Ok(s) if s == Swept::default() => {}
            Ok(s) => tracing::debug!(
                sessions = s.sessions,
                links = s.links,
                "expired console sessions and used links removed"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove expired sessions and used links; will retry")
            }
        }
    }
}

/// One sweep at the clock's time: at most `max_batches` writes of at most `batch` rows
/// per table.
pub async fn sweep_once(
    store: &Store,
    clock: &Clock,
    batch: usize,
    max_batches: usize,
) -> Result<Swept, StoreError> {
    let now = clock.now();
    let mut swept = Swept::default();
    for _ in 0..max_batches {
        let n = store.sweep_sessions(now, batch).await?;
        swept.sessions += n;
        if n < batch {
            break;
        }
    }
    let links_before = now.checked_sub_signed(LINK_GRACE).unwrap_or(now);
    for _ in 0..max_batches {
        let n = store.sweep_used_links(links_before, batch).await?;
        swept.links += n;
        if n < batch {
            break;
        }
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn start() -> DateTime<Utc> {
        "2026-11-23T10:00:00Z".parse().unwrap()
    }

    /// A store on a clock that follows tokio's paused clock, from [`start`].
    fn store(dir: &tempfile::TempDir, clock: &Clock) -> Store {
        let url = crate::store::postgres::test_url(&dir.path().join("data/medic.db"));
        Store::open_with_clock(&url, crate::metrics::StoreMetrics::default(), clock.clone())
            .unwrap()
    }

    /// Keeps the runtime from idling, so the paused clock moves only when a test moves it.
    fn busy() -> tokio::task::JoinHandle<()> {
        tokio::spawn(async {
            loop {
                std::thread::sleep(Duration::from_micros(500));
                tokio::task::yield_now().await;
            }
        })
    }

    async fn advance_to(clock: &Clock, at: DateTime<Utc>) {
        let d = (at - clock.now()).to_std().unwrap();
        tokio::time::advance(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn used_links_go_an_hour_after_they_expire_in_bounded_batches() {
        let busy = busy();
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::following_tokio(start());
        let store = store(&dir, &clock);
        let hour = TimeDelta::hours(1);
        // Five links that expire at 11:00, one at 13:00.
        for i in 0..5 {
            store
                .put_used_link(&format!("early{i}"), start() + hour)
                .await
                .unwrap();
        }
        store
            .put_used_link("late", start() + hour * 3)
            .await
            .unwrap();

        // 11:59:59: expired, but within the grace: kept.
        advance_to(&clock, start() + hour * 2 - TimeDelta::seconds(1)).await;
        let swept = sweep_once(&store, &clock, 2, 2).await.unwrap();
        assert_eq!(swept.links, 0);
        assert_eq!(store.used_links_count().await.unwrap(), 6);

        // 12:00:01: two writes of two, then the last one at the next sweep.
        advance_to(&clock, start() + hour * 2 + TimeDelta::seconds(1)).await;
        assert_eq!(sweep_once(&store, &clock, 2, 2).await.unwrap().links, 4);
        assert_eq!(store.used_links_count().await.unwrap(), 2);
        assert_eq!(sweep_once(&store, &clock, 2, 2).await.unwrap().links, 1);
        assert_eq!(store.used_links_count().await.unwrap(), 1);
        // The link still alive is never touched.
        assert_eq!(sweep_once(&store, &clock, 2, 2).await.unwrap().links, 0);
        assert_eq!(store.used_links_count().await.unwrap(), 1);
        busy.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn expired_sessions_go_at_once() {
        let busy = busy();
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::following_tokio(start());
        let store = store(&dir, &clock);
        let sessions = super::super::session::Sessions::new(store.clone());
        let (token, _) = sessions.open("alice", false, clock.now()).await.unwrap();
        let hash = super::super::session::token_hash(&token);
        let idle = super::super::session::IDLE;
        advance_to(&clock, start() + idle - TimeDelta::seconds(1)).await;
        assert_eq!(
            sweep_once(&store, &clock, 10, 10).await.unwrap().sessions,
            0
        );
        assert!(store.session(&hash).await.unwrap().is_some());
        advance_to(&clock, start() + idle + TimeDelta::seconds(1)).await;
        assert_eq!(
            sweep_once(&store, &clock, 10, 10).await.unwrap().sessions,
            1
        );
        assert!(store.session(&hash).await.unwrap().is_none());
        busy.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_worker_sweeps_every_minute() {
        let busy = busy();
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::following_tokio(start());
        let store = store(&dir, &clock);
        store.put_used_link("n1", start()).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(run(store.clone(), clock.clone(), async {
            let _ = stopped.await;
        }));
        // Past the grace: a sweep (within a minute) removes the row.
        tokio::time::advance(Duration::from_secs(3600)).await;
        let mut minutes = 0;
        while store.used_links_count().await.unwrap() != 0 {
            assert!(minutes < 3, "not swept within {minutes} minutes");
            tokio::time::advance(EVERY).await;
            minutes += 1;
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while store.used_links_count().await.unwrap() != 0
                && std::time::Instant::now() < deadline
            {
                tokio::task::yield_now().await;
            }
        }
        let _ = stop.send(());
        worker.await.unwrap();
        busy.abort();
    }
}
