//! Parsing of the configuration's quantities: durations (`"5m"`, humantime
//! syntax), rates (`"3/10m"`) and byte sizes (`"1MiB"`).
//!
//! Each parser returns the whole one-line error message, quoting the input,
//! so that the validator only has to add the file, position and key.

use std::time::Duration;

use super::Rate;

/// Parses a humantime duration (`"250ms"`, `"5m"`, `"1h30m"`). Every
/// duration in the configuration must be greater than zero.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    positive_duration(text).map_err(|reason| format!("invalid duration {text:?}: {reason}"))
}

/// Parses a delay: a humantime duration that may be zero (`"0s"`: at once), like an
/// escalation tier's `after`.
pub(crate) fn parse_delay(text: &str) -> Result<Duration, String> {
    match positive_duration(text) {
        Ok(duration) => Ok(duration),
        Err(reason) if reason == ZERO => Ok(Duration::ZERO),
        Err(reason) => Err(format!("invalid duration {text:?}: {reason}")),
    }
}

/// Parses a rate, `"<count>/<duration>"`, like `"3/10m"`: at most `count`
/// events per `duration`. The duration is required (`"3/m"` is an error).
pub(crate) fn parse_rate(text: &str) -> Result<Rate, String> {
    let invalid = |reason: String| format!("invalid rate {text:?}: {reason}");
    let Some((count, per)) = text.split_once('/') else {
        return Err(invalid(
            "expected \"<count>/<duration>\", like \"3/10m\"".to_owned(),
        ));
    };
    let count = count.trim();
    let count = match count.parse::<u32>() {
        Ok(count) if count >= 1 => count,
        _ => {
            return Err(invalid(format!(
                "count {count:?} must be a whole number of at least 1"
            )))
        }
    };
    let per = per.trim();
    let per = positive_duration(per)
        .map_err(|reason| invalid(format!("invalid duration {per:?}: {reason}")))?;
    Ok(Rate { count, per })
}

/// Parses a byte size: a whole number optionally followed by a unit, one of
/// `B`, `KiB`, `MiB`, `GiB` (`"512"`, `"64KiB"`, `"1 MiB"`). Must be greater
/// than zero.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let invalid = |reason: &str| format!("invalid size {text:?}: {reason}");
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    if number.is_empty() {
        return Err(invalid(
            "expected a whole number of bytes, optionally followed by B, KiB, MiB or GiB",
        ));
    }
    let multiplier: usize = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(invalid(&format!(
                "unknown unit {other:?} (use B, KiB, MiB or GiB)"
            )))
        }
    };
    let bytes = number
        .parse::<usize>()
        .ok()
        .and_then(|number| number.checked_mul(multiplier))
        .ok_or_else(|| invalid("too large"))?;
    if bytes == 0 {
        return Err(invalid("must be greater than zero"));
    }
    Ok(bytes)
}

/// Checks a byte size given as a TOML integer.
pub(crate) fn size_from_bytes(bytes: i64) -> Result<usize, String> {
    if bytes <= 0 {
        return Err(format!("invalid size {bytes}: must be greater than zero"));
    }
    usize::try_from(bytes).map_err(|_| format!("invalid size {bytes}: too large"))
}

/// Why a zero duration is refused where one must be positive.
const ZERO: &str = "must be greater than zero";

/// Parses a duration, giving only the reason when it is invalid.
fn positive_duration(text: &str) -> Result<Duration, String> {
    use humantime::DurationError as E;
    let duration = humantime::parse_duration(text).map_err(|error| match error {
        E::Empty => "empty".to_owned(),
        E::InvalidCharacter(at) => {
            let found = text.get(at..).and_then(|s| s.chars().next());
            match found {
                Some(found) => format!("unexpected character {found:?}"),
                None => "unexpected character".to_owned(),
            }
        }
        E::NumberExpected(at) => format!("expected a number at position {}", at + 1),
        E::UnknownUnit { unit, value, .. } if unit.is_empty() => {
            format!("missing time unit, like \"{value}s\" or \"{value}m\"")
        }
        E::UnknownUnit { unit, .. } => {
            format!("unknown time unit {unit:?} (use ns, us, ms, s, m, h, d or w)")
        }
        E::NumberOverflow => "number is too large".to_owned(),
    })?;
    if duration.is_zero() {
        return Err(ZERO.to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn durations() {
        let check = |text: &str, expected: Result<Duration, &str>| {
            assert_eq!(
                parse_duration(text),
                expected.map_err(str::to_owned),
                "{text:?}"
            );
        };
        check("5s", Ok(5 * SECOND));
        check("5m", Ok(5 * MINUTE));
        check("1h30m", Ok(90 * MINUTE));
        check("1h 30m", Ok(90 * MINUTE));
        check("250ms", Ok(Duration::from_millis(250)));
        check("2d", Ok(48 * 60 * MINUTE));
        check("5 minutes", Ok(5 * MINUTE));
        check("", Err("invalid duration \"\": empty"));
        check(
            "0s",
            Err("invalid duration \"0s\": must be greater than zero"),
        );
        assert_eq!(parse_delay("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_delay("15m"), Ok(15 * MINUTE));
        assert_eq!(
            parse_delay("soon"),
            Err("invalid duration \"soon\": expected a number at position 1".to_owned())
        );
        check(
            "5",
            Err("invalid duration \"5\": missing time unit, like \"5s\" or \"5m\""),
        );
        check(
            "5 minutez",
            Err("invalid duration \"5 minutez\": unknown time unit \"minutez\" (use ns, us, ms, s, m, h, d or w)"),
        );
        check(
            "m",
            Err("invalid duration \"m\": expected a number at position 1"),
        );
        check(
            "5m!",
            Err("invalid duration \"5m!\": unexpected character '!'"),
        );
        check(
            "-5m",
            Err("invalid duration \"-5m\": expected a number at position 1"),
        );
        check(
            "99999999999999999999h",
            Err("invalid duration \"99999999999999999999h\": number is too large"),
        );
    }

    #[test]
    fn rates() {
        let check = |text: &str, expected: Result<(u32, Duration), &str>| {
            assert_eq!(
                parse_rate(text),
                expected
                    .map(|(count, per)| Rate { count, per })
                    .map_err(str::to_owned),
                "{text:?}"
            );
        };
        check("3/10m", Ok((3, 10 * MINUTE)));
        check("60/1m", Ok((60, MINUTE)));
        check(" 60 / 1m ", Ok((60, MINUTE)));
        check("1/1h30m", Ok((1, 90 * MINUTE)));
        check(
            "60",
            Err("invalid rate \"60\": expected \"<count>/<duration>\", like \"3/10m\""),
        );
        check(
            "3/m",
            Err("invalid rate \"3/m\": invalid duration \"m\": expected a number at position 1"),
        );
        check(
            "3/",
            Err("invalid rate \"3/\": invalid duration \"\": empty"),
        );
        check(
            "3/0s",
            Err("invalid rate \"3/0s\": invalid duration \"0s\": must be greater than zero"),
        );
        check(
            "0/1m",
            Err("invalid rate \"0/1m\": count \"0\" must be a whole number of at least 1"),
        );
        check(
            "-1/1m",
            Err("invalid rate \"-1/1m\": count \"-1\" must be a whole number of at least 1"),
        );
        check(
            "many/1m",
            Err("invalid rate \"many/1m\": count \"many\" must be a whole number of at least 1"),
        );
    }

    #[test]
    fn sizes() {
        let check = |text: &str, expected: Result<usize, &str>| {
            assert_eq!(
                parse_size(text),
                expected.map_err(str::to_owned),
                "{text:?}"
            );
        };
        check("512", Ok(512));
        check("512B", Ok(512));
        check("64KiB", Ok(64 * 1024));
        check("1MiB", Ok(1024 * 1024));
        check("1 MiB", Ok(1024 * 1024));
        check("2GiB", Ok(2 * 1024 * 1024 * 1024));
        check(
            "1MB",
            Err("invalid size \"1MB\": unknown unit \"MB\" (use B, KiB, MiB or GiB)"),
        );
        check(
            "1.5MiB",
            Err("invalid size \"1.5MiB\": unknown unit \".5MiB\" (use B, KiB, MiB or GiB)"),
        );
        check(
            "MiB",
            Err("invalid size \"MiB\": expected a whole number of bytes, optionally followed by B, KiB, MiB or GiB"),
        );
        check(
            "0KiB",
            Err("invalid size \"0KiB\": must be greater than zero"),
        );
        check(
            "99999999999999999999GiB",
            Err("invalid size \"99999999999999999999GiB\": too large"),
        );
    }

    #[test]
    fn sizes_in_bytes() {
        assert_eq!(size_from_bytes(1), Ok(1));
        assert_eq!(size_from_bytes(1_048_576), Ok(1_048_576));
        assert_eq!(
            size_from_bytes(0),
            Err("invalid size 0: must be greater than zero".to_owned())
        );
        assert_eq!(
            size_from_bytes(-5),
            Err("invalid size -5: must be greater than zero".to_owned())
        );
    }
}
