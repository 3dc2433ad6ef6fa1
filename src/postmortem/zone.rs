//! The reader's time zone, and how a draft writes times and durations in it.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// An IANA time zone (`Europe/Paris`, `UTC`), the one a draft's times are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(Tz);

/// A time zone name that is not in the IANA database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0:?}: expected an IANA name such as Europe/Paris or UTC")]
pub struct UnknownZone(pub String);

impl Zone {
    pub const UTC: Zone = Zone(Tz::UTC);

    /// The zone named `name` (an IANA name, as in `TZ`; a leading `:` is allowed).
    pub fn parse(name: &str) -> Result<Zone, UnknownZone> {
        let trimmed = name.trim().trim_start_matches(':');
        trimmed
            .parse::<Tz>()
            .map(Zone)
            .map_err(|_| UnknownZone(name.to_string()))
    }

    /// The local zone: `TZ` when it names one, else the system's, else UTC.
    pub fn local() -> Zone {
        if let Some(z) = std::env::var("TZ").ok().and_then(|v| Zone::parse(&v).ok()) {
            return z;
        }
        iana_time_zone::get_timezone()
            .ok()
            .and_then(|name| Zone::parse(&name).ok())
            .unwrap_or(Zone::UTC)
    }

    /// Its IANA name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// `t` in this zone: `2026-11-23 11:02:00 +01:00`.
    pub fn time(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.0)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    }
}

impl Zone {
    /// The day of `t` in this zone: `2026-11-23`.
    pub fn date(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.0).format("%Y-%m-%d").to_string()
    }
}

/// A duration as a person reads it: `850 ms`, `42s`, `7m 5s`, `2h 3m`, `3d 4h`. Negative
/// durations (clocks of two machines that disagree) keep their sign.
pub fn duration(d: chrono::Duration) -> String {
    if d < chrono::Duration::zero() {
        return format!("-{}", duration(-d));
    }
    let ms = d.num_milliseconds();
    let s = d.num_seconds();
    match s {
        _ if ms == 0 => "0s".to_string(),
        _ if ms < 1000 => format!("{ms} ms"),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_by_iana_name_only() {
        assert_eq!(Zone::parse("Europe/Paris").unwrap().name(), "Europe/Paris");
        assert_eq!(Zone::parse(":UTC").unwrap(), Zone::UTC);
        let e = Zone::parse("Mars/Olympus").unwrap_err();
        assert!(e.to_string().contains("\"Mars/Olympus\""), "{e}");
    }

    #[test]
    fn times_carry_their_offset_in_the_zone() {
        let t: DateTime<Utc> = "2026-11-23T10:02:00Z".parse().unwrap();
        let paris = Zone::parse("Europe/Paris").unwrap();
        assert_eq!(paris.time(t), "2026-11-23 11:02:00 +01:00");
        let summer: DateTime<Utc> = "2026-07-01T10:02:00Z".parse().unwrap();
        assert_eq!(paris.time(summer), "2026-07-01 12:02:00 +02:00");
        assert_eq!(Zone::UTC.time(t), "2026-11-23 10:02:00 +00:00");
    }

    #[test]
    fn durations_read_like_a_person_writes_them() {
        let cases = [
            (chrono::Duration::zero(), "0s"),
            (chrono::Duration::milliseconds(850), "850 ms"),
            (chrono::Duration::seconds(42), "42s"),
            (chrono::Duration::seconds(7 * 60), "7m 0s"),
            (chrono::Duration::seconds(7 * 60 + 5), "7m 5s"),
            (chrono::Duration::seconds(2 * 3600 + 3 * 60 + 59), "2h 3m"),
            (chrono::Duration::seconds(3 * 86_400 + 4 * 3600), "3d 4h"),
            (chrono::Duration::seconds(-90), "-1m 30s"),
        ];
        for (d, want) in cases {
            assert_eq!(duration(d), want, "{d:?}");
        }
    }
}
