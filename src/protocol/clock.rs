//! Wall-clock timestamps in the wire format: RFC 3339, UTC, milliseconds, `Z`.
//!
//! Formatting is `humantime`'s: it runs once per server message, and the
//! crate's formatter (a fixed byte buffer, one write) measured 60 ns against
//! 149 ns for the hand-written `format!` it replaced (benches/hot_paths.rs,
//! `rfc3339_millis`; docs/PERFORMANCE.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch, now.
pub fn unix_seconds() -> u64 {
    unix_millis() / 1000
}

/// `2025-01-08T10:30:00.000Z` for the current time.
pub fn now_rfc3339() -> String {
    format_rfc3339_millis(unix_millis())
}

/// The last instant `humantime` formats (9999-12-31T23:59:59.999Z); later
/// ones are clamped to it rather than fail.
const LAST_FORMATTABLE_MILLIS: u64 = 253_402_300_799_999;

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_rfc3339_millis(millis: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(millis.min(LAST_FORMATTABLE_MILLIS));
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_millis(1_736_332_200_123),
            "2025-01-08T10:30:00.123Z"
        );
        // Leap day.
        assert_eq!(
            format_rfc3339_millis(1_709_164_800_000),
            "2024-02-29T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339_millis(4_102_444_799_999),
            "2099-12-31T23:59:59.999Z"
        );
        // Whole seconds keep their `.000`.
        assert_eq!(
            format_rfc3339_millis(1_736_332_200_000),
            "2025-01-08T10:30:00.000Z"
        );
    }

    #[test]
    fn instants_past_year_9999_are_clamped_not_a_panic() {
        assert_eq!(
            format_rfc3339_millis(LAST_FORMATTABLE_MILLIS),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(format_rfc3339_millis(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
