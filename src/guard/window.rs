//! Maintenance windows: weekly time ranges, in a time zone, during which a route does not
//! remediate.

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::config::WindowConfig;

/// Whether `now` falls inside `w`. A window whose end is before its start crosses midnight
/// and belongs to the weekday it starts on.
pub fn contains(w: &WindowConfig, now: DateTime<Utc>) -> bool {
    let local = now.with_timezone(&w.timezone);
    let minute = local.hour() * 60 + local.minute();
    let day = local.weekday();
    let on = |d: chrono::Weekday| w.weekdays.is_empty() || w.weekdays.contains(&d);
    if w.start < w.end {
        on(day) && minute >= w.start && minute < w.end
    } else {
        (on(day) && minute >= w.start) || (on(day.pred()) && minute < w.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Weekday};

    fn window(days: &[Weekday], start: u32, end: u32, tz: chrono_tz::Tz) -> WindowConfig {
        WindowConfig {
            weekdays: days.to_vec(),
            start,
            end,
            timezone: tz,
        }
    }

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        // 2026-11-23 is a Monday.
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }

    #[test]
    fn weekday_hours_in_utc() {
        let w = window(&[Weekday::Mon], 2 * 60, 4 * 60, chrono_tz::UTC);
        assert!(!contains(&w, at(23, 1, 59)));
        assert!(contains(&w, at(23, 2, 0)));
        assert!(contains(&w, at(23, 3, 59)));
        assert!(!contains(&w, at(23, 4, 0)));
        assert!(!contains(&w, at(24, 3, 0)), "Tuesday is not in the window");
    }

    #[test]
    fn time_zones_apply() {
        // 02:00-04:00 in Berlin (UTC+1 in November) is 01:00-03:00 UTC.
        let w = window(&[], 2 * 60, 4 * 60, chrono_tz::Europe::Berlin);
        assert!(contains(&w, at(23, 1, 30)));
        assert!(!contains(&w, at(23, 3, 30)));
    }

    #[test]
    fn windows_may_cross_midnight() {
        let w = window(&[Weekday::Sat], 22 * 60, 6 * 60, chrono_tz::UTC);
        assert!(contains(&w, at(28, 23, 0)), "Saturday night");
        assert!(
            contains(&w, at(29, 5, 0)),
            "early Sunday belongs to Saturday's window"
        );
        assert!(!contains(&w, at(29, 7, 0)));
        assert!(
            !contains(&w, at(28, 5, 0)),
            "early Saturday belongs to Friday, not in the list"
        );
        let all_day = window(&[Weekday::Sun], 0, 24 * 60, chrono_tz::UTC);
        assert!(contains(&all_day, at(29, 23, 59)));
    }
}
