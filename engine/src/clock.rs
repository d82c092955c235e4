//! Time as the engine sees it: whole Unix seconds, and a clock that tests can freeze.
//! Grant windows are half-open `[starts_at, expires_at)`; flooring a request's time to the second keeps that exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Seconds since the Unix epoch (UTC).
pub type UnixTime = i64;

/// Where "now" comes from. The proxy uses [`Clock::system`]; tests and policy suites freeze it.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock that only moves when told to (shared between clones).
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock::System
    }

    /// A frozen clock set to `t`.
    pub fn frozen(t: UnixTime) -> Self {
        Clock::Manual(Arc::new(AtomicI64::new(t)))
    }

    /// The current time in whole seconds.
    pub fn now(&self) -> UnixTime {
        match self {
            Clock::System => now_system(),
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock to `t`; does nothing on the system clock.
    pub fn set(&self, t: UnixTime) {
        if let Clock::Manual(c) = self {
            c.store(t, Ordering::SeqCst);
        }
    }

    /// Moves a manual clock forward by `secs`; does nothing on the system clock.
    pub fn advance(&self, secs: i64) {
        if let Clock::Manual(c) = self {
            c.fetch_add(secs, Ordering::SeqCst);
        }
    }
}

/// The system time in whole seconds since the epoch (0 if the system clock is before 1970).
pub fn now_system() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Formats a Unix time as RFC 3339 (UTC), e.g. `2026-11-23T10:00:00Z`.
pub fn to_rfc3339(t: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Parses RFC 3339 (`2026-11-23T10:00:00Z`, any offset) into a Unix time.
pub fn parse_rfc3339(s: &str) -> Result<UnixTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|d| d.unix_timestamp())
        .map_err(|e| format!("invalid RFC 3339 time `{s}`: {e}"))
}

/// The longest duration accepted anywhere: 100 years. Longer ones are surely typos, and every `now + d` on a Unix
/// time stays far from overflow.
pub const MAX_DURATION_SECS: i64 = 100 * 366 * 86_400;

/// Parses a duration such as `30m`, `1h`, `90s`, `2h30m` into whole seconds (at most [`MAX_DURATION_SECS`]).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let d =
        humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration `{s}`: {e}"))?;
    i64::try_from(d.as_secs())
        .ok()
        .filter(|secs| *secs <= MAX_DURATION_SECS)
        .ok_or_else(|| format!("duration `{s}` is too long (at most 100 years)"))
}

/// `secs` in the units people write, e.g. `1h`, `1h 30m`, `4days 2h`: for messages about durations.
pub fn format_secs(secs: i64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs.unsigned_abs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_said_in_units_people_write() {
        assert_eq!(format_secs(3600), "1h");
        assert_eq!(format_secs(5400), "1h 30m");
        assert_eq!(format_secs(45), "45s");
    }

    #[test]
    fn durations_are_whole_seconds_up_to_a_hundred_years() {
        assert_eq!(parse_duration("2h30m"), Ok(9000));
        assert_eq!(parse_duration("500ms"), Ok(0));
        assert!(parse_duration("36600d").is_ok());
        for too_long in ["36601d", "10000000000000000000s", "9223372036854775808s"] {
            let e = parse_duration(too_long).unwrap_err();
            assert!(e.contains("too long"), "{too_long}: {e}");
        }
    }

    #[test]
    fn frozen_clock_moves_only_when_told() {
        let c = Clock::frozen(100);
        let c2 = c.clone();
        assert_eq!(c.now(), 100);
        c2.advance(5);
        assert_eq!(c.now(), 105);
        c.set(7);
        assert_eq!(c2.now(), 7);
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = parse_rfc3339("2026-11-23T10:00:00Z").unwrap();
        assert_eq!(to_rfc3339(t), "2026-11-23T10:00:00Z");
        assert!(parse_rfc3339("yesterday").is_err());
        assert_eq!(parse_duration("2h30m").unwrap(), 9000);
    }
}
