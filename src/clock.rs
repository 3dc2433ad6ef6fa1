//! The one source of time: what time it is (UTC, for what is stored and shown) and
//! tokio's monotonic instant (for timers and timeouts).
//!
//! Every component reads time through the [`Clock`] the composition root hands it, never
//! through `Utc::now()` directly, so a test can run the whole engine on
//! `tokio::time::pause` and move time forward instead of sleeping: a clock made by
//! [`Clock::following_tokio`] reads UTC as a fixed start plus however far tokio's clock has
//! moved since. The one exception is a step's child process, whose timeout and kill grace
//! are measured on tokio's own timers (`steps::exec`), not through this clock.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::runtime::Handle;
use tokio::time::Instant;

/// Where time comes from. Cheap to clone; every clone reads the same time.
#[derive(Clone)]
pub struct Clock {
    source: Source,
}

#[derive(Clone)]
enum Source {
    /// The system's wall clock and tokio's clock: production.
    System,
    /// UTC advances with tokio's clock of one runtime, from a fixed start.
    FollowsTokio(Arc<Following>),
}

struct Following {
    /// The runtime whose clock this follows, so that threads outside it (the store's
    /// writer) read the same, possibly paused, time.
    runtime: Handle,
    start_utc: DateTime<Utc>,
    start: Instant,
}

impl Clock {
    /// The real clock.
    pub fn system() -> Clock {
        Clock {
            source: Source::System,
        }
    }

    /// A clock whose UTC time starts at `start_utc` and then moves with the current tokio
    /// runtime's clock (which a test pauses and advances). Must be called inside a runtime.
    pub fn following_tokio(start_utc: DateTime<Utc>) -> Clock {
        let runtime = Handle::current();
        Clock {
            source: Source::FollowsTokio(Arc::new(Following {
                runtime,
                start_utc,
                start: Instant::now(),
            })),
        }
    }

    /// The current time in UTC.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.source {
            Source::System => Utc::now(),
            Source::FollowsTokio(f) => {
                let elapsed = self.instant().saturating_duration_since(f.start);
                f.start_utc + chrono::Duration::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)
            }
        }
    }

    /// tokio's monotonic now (paused in tests), from any thread.
    pub fn instant(&self) -> Instant {
        match &self.source {
            Source::System => Instant::now(),
            Source::FollowsTokio(f) => {
                let _inside = f.runtime.enter();
                Instant::now()
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::System => f.write_str("Clock::system"),
            Source::FollowsTokio(x) => write!(f, "Clock::following_tokio({})", x.start_utc),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn utc_moves_with_paused_tokio_time_only() {
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = Clock::following_tokio(start);
        assert_eq!(clock.now(), start);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start + chrono::Duration::seconds(90));
    }

    #[tokio::test(start_paused = true)]
    async fn another_thread_reads_the_same_paused_time() {
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = Clock::following_tokio(start);
        tokio::time::advance(Duration::from_secs(3600)).await;
        let other = clock.clone();
        let seen = std::thread::spawn(move || other.now()).join().unwrap();
        assert_eq!(seen, start + chrono::Duration::hours(1));
    }
}
