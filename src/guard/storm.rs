//! Storm grouping: escalations of one route and reason close together in time form one
//! group, so that on-call gets one notification listing the incidents, not a thousand.

use chrono::{DateTime, Duration, Utc};

/// The newest escalation group of a (route, reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub opened_at: DateTime<Utc>,
    pub size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    /// Join the group: it opened less than `window` ago.
    Join(String),
    /// Open a new group with this escalation as its first member.
    Open,
}

/// Which group a new escalation belongs to.
pub fn assign(latest: Option<&Group>, now: DateTime<Utc>, window: Duration) -> Grouping {
    match latest {
        Some(g) if now - g.opened_at < window => Grouping::Join(g.id.clone()),
        _ => Grouping::Open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn joins_within_the_window_only() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        let g = Group {
            id: "g1".into(),
            opened_at: t0,
            size: 3,
        };
        let w = Duration::seconds(60);
        assert_eq!(assign(None, t0, w), Grouping::Open);
        assert_eq!(
            assign(Some(&g), t0 + Duration::seconds(59), w),
            Grouping::Join("g1".into())
        );
        assert_eq!(
            assign(Some(&g), t0 + Duration::seconds(60), w),
            Grouping::Open
        );
    }
}
