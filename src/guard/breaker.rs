//! The circuit breaker: a small state machine with time passed in.
//!
//! Closed → open after `failures` consecutive failed remediations → half-open once
//! `cooldown` has passed, letting one trial run through → closed if the trial succeeds,
//! open again if it fails. No IO and no clock: `now` is an argument, so every transition
//! is tested exhaustively, and the state is plain data the store persists.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Most failures remembered (named when the breaker refuses).
const REMEMBERED: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// The value of `medic_breaker_state`: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        }
    }
}

/// One breaker's state, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    pub state: State,
    pub consecutive_failures: u32,
    pub opened_at: Option<DateTime<Utc>>,
    /// The incidents whose failures count now (newest last).
    pub failures: Vec<String>,
    /// The incident running as the half-open trial.
    pub trial: Option<String>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            consecutive_failures: 0,
            opened_at: None,
            failures: Vec::new(),
            trial: None,
        }
    }
}

/// The breaker's answer to a run that wants to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Allow,
    /// Allowed as the half-open trial.
    Trial,
    /// Refused: the breaker is open (or half-open with its trial in flight).
    Refuse {
        failures: Vec<String>,
        until: Option<DateTime<Utc>>,
    },
}

impl Breaker {
    /// May `incident` run now? Moves open → half-open when the cooldown has passed.
    pub fn admit(&mut self, incident: &str, now: DateTime<Utc>, cooldown: Duration) -> Admit {
        match self.state {
            State::Closed => Admit::Allow,
            State::Open => {
                let until = self.opened_at.map(|t| t + cooldown);
                if until.is_some_and(|u| now >= u) {
                    self.state = State::HalfOpen;
                    self.trial = Some(incident.to_string());
                    Admit::Trial
                } else {
                    Admit::Refuse {
                        failures: self.failures.clone(),
                        until,
                    }
                }
            }
            State::HalfOpen if self.trial.is_none() => {
                self.trial = Some(incident.to_string());
                Admit::Trial
            }
            State::HalfOpen => Admit::Refuse {
                failures: self.failures.clone(),
                until: None,
            },
        }
    }

    /// Records a remediation's result. Returns true when the state changed.
    pub fn record(
        &mut self,
        incident: &str,
        success: bool,
        now: DateTime<Utc>,
        threshold: u32,
    ) -> bool {
        let before = self.state;
        let is_trial = self.trial.as_deref() == Some(incident);
        match (self.state, success) {
            (State::Closed, true) => {
                self.consecutive_failures = 0;
                self.failures.clear();
            }
            (State::Closed, false) => {
                self.consecutive_failures += 1;
                self.remember(incident);
                if self.consecutive_failures >= threshold {
                    self.state = State::Open;
                    self.opened_at = Some(now);
                }
            }
            (State::HalfOpen, true) if is_trial => *self = Breaker::default(),
            (State::HalfOpen, false) if is_trial => {
                self.consecutive_failures += 1;
                self.remember(incident);
                self.state = State::Open;
                self.opened_at = Some(now);
                self.trial = None;
            }
            // Results of runs admitted before the breaker opened change nothing now,
            // except that more failures are remembered.
            (_, false) => self.remember(incident),
            (_, true) => {}
        }
        self.state != before
    }

    /// Closes the breaker by hand.
    pub fn reset(&mut self) {
        *self = Breaker::default();
    }

    fn remember(&mut self, incident: &str) {
        if !self.failures.iter().any(|f| f == incident) {
            self.failures.push(incident.to_string());
        }
        let extra = self.failures.len().saturating_sub(REMEMBERED);
        self.failures.drain(..extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap() + Duration::minutes(minute)
    }

    const COOLDOWN: i64 = 15;

    fn admit(b: &mut Breaker, id: &str, minute: i64) -> Admit {
        b.admit(id, t(minute), Duration::minutes(COOLDOWN))
    }

    #[test]
    fn opens_after_n_consecutive_failures() {
        let mut b = Breaker::default();
        assert!(!b.record("i1", false, t(0), 3));
        assert!(!b.record("i2", false, t(1), 3));
        assert_eq!(admit(&mut b, "i3", 2), Admit::Allow);
        assert!(b.record("i3", false, t(2), 3), "the third failure opens it");
        assert_eq!(b.state, State::Open);
        assert_eq!(
            admit(&mut b, "i4", 3),
            Admit::Refuse {
                failures: vec!["i1".into(), "i2".into(), "i3".into()],
                until: Some(t(2 + COOLDOWN))
            }
        );
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut b = Breaker::default();
        b.record("i1", false, t(0), 3);
        b.record("i2", false, t(1), 3);
        b.record("i3", true, t(2), 3);
        b.record("i4", false, t(3), 3);
        b.record("i5", false, t(4), 3);
        assert_eq!(b.state, State::Closed);
        assert_eq!(b.consecutive_failures, 2);
    }

    #[test]
    fn half_opens_after_the_cooldown_and_closes_on_a_good_trial() {
        let mut b = Breaker::default();
        b.record("i1", false, t(0), 1);
        assert!(matches!(
            admit(&mut b, "i2", COOLDOWN - 1),
            Admit::Refuse { .. }
        ));
        assert_eq!(admit(&mut b, "trial", COOLDOWN), Admit::Trial);
        assert_eq!(b.state, State::HalfOpen);
        // Only one trial at a time.
        assert!(matches!(
            admit(&mut b, "other", COOLDOWN),
            Admit::Refuse { .. }
        ));
        assert!(b.record("trial", true, t(COOLDOWN + 1), 1));
        assert_eq!(b, Breaker::default());
        assert_eq!(admit(&mut b, "next", COOLDOWN + 2), Admit::Allow);
    }

    #[test]
    fn a_failed_trial_opens_it_again() {
        let mut b = Breaker::default();
        b.record("i1", false, t(0), 1);
        assert_eq!(admit(&mut b, "trial", COOLDOWN), Admit::Trial);
        assert!(b.record("trial", false, t(COOLDOWN + 1), 1));
        assert_eq!(b.state, State::Open);
        assert_eq!(
            b.opened_at,
            Some(t(COOLDOWN + 1)),
            "the cooldown starts again"
        );
        assert!(matches!(
            admit(&mut b, "x", COOLDOWN + 2),
            Admit::Refuse { .. }
        ));
        assert_eq!(admit(&mut b, "y", 2 * COOLDOWN + 1), Admit::Trial);
    }

    #[test]
    fn late_results_of_older_runs_do_not_close_it() {
        let mut b = Breaker::default();
        b.record("i1", false, t(0), 1);
        admit(&mut b, "trial", COOLDOWN);
        assert!(!b.record("old-run", true, t(COOLDOWN), 1));
        assert_eq!(b.state, State::HalfOpen);
    }

    #[test]
    fn remembers_the_last_failures_only() {
        let mut b = Breaker::default();
        for i in 0..25 {
            b.record(&format!("i{i}"), false, t(i), 100);
        }
        assert_eq!(b.failures.len(), REMEMBERED);
        assert_eq!(b.failures.last().unwrap(), "i24");
        b.reset();
        assert_eq!(b, Breaker::default());
    }
}
