//! The zone a Sensor's zone-less times are read in: UTC, a fixed offset, or an IANA zone
//! (`Europe/Berlin`) whose offset follows daylight saving, from chrono-tz's copy of the
//! IANA database.

use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// The zone of times written without one (RFC 3164 syslog, OSSEC's alerts.log, naive
/// JSON times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalZone {
    /// UTC or an offset that never changes.
    Fixed(FixedOffset),
    /// A named zone, whose offset is the one in force at the time being read.
    Named(Tz),
}

impl Default for LocalZone {
    fn default() -> Self {
        LocalZone::Fixed(Utc.fix())
    }
}

impl fmt::Display for LocalZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalZone::Fixed(offset) => write!(f, "{offset}"),
            LocalZone::Named(zone) => f.write_str(zone.name()),
        }
    }
}

impl LocalZone {
    /// The instant a wall-clock time of this zone stands for.
    ///
    /// Around a daylight-saving change a wall-clock time can be ambiguous (the hour
    /// repeated in autumn) or missing (the hour skipped in spring). An ambiguous time is
    /// read as its first occurrence, the one a log written in order reaches first. A
    /// missing time is read with the offset in force before the change, as a clock that
    /// has not been turned forward yet would have written it: `02:30` on the spring day
    /// in Berlin is 01:30 UTC.
    pub fn to_utc(self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self {
            LocalZone::Fixed(offset) => local.checked_sub_offset(offset).map(|t| t.and_utc()),
            LocalZone::Named(zone) => match zone.from_local_datetime(&local) {
                chrono::LocalResult::Single(t) => Some(t.to_utc()),
                chrono::LocalResult::Ambiguous(first, _) => Some(first.to_utc()),
                chrono::LocalResult::None => {
                    // No zone changes its offset twice within a day, so the offset a
                    // day earlier is the one from before the change.
                    let before = local.checked_sub_signed(TimeDelta::days(1))?;
                    let offset = zone.offset_from_utc_datetime(&before).fix();
                    local.checked_sub_offset(offset).map(|t| t.and_utc())
                }
            },
        }
    }

    /// The calendar year at `now` in this zone: RFC 3164 times have none.
    pub fn year_at(self, now: DateTime<Utc>) -> i32 {
        match self {
            LocalZone::Fixed(offset) => now.with_timezone(&offset).year(),
            LocalZone::Named(zone) => now.with_timezone(&zone).year(),
        }
    }
}

/// Reads a Sensor's `timezone`: `UTC`, `Z`, a fixed offset (`+01:00`, `-0530`) or an IANA
/// zone name (`Europe/Berlin`, as in the tz database, case as written there).
pub fn parse_timezone(text: &str) -> Option<LocalZone> {
    if let Some(offset) = parse_offset(text) {
        return Some(LocalZone::Fixed(offset));
    }
    text.parse::<Tz>().ok().map(LocalZone::Named)
}

fn parse_offset(text: &str) -> Option<FixedOffset> {
    if matches!(text, "UTC" | "utc" | "Z" | "z") {
        return Some(Utc.fix());
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn utc(zone: LocalZone, text: &str) -> String {
        zone.to_utc(local(text)).unwrap().to_rfc3339()
    }

    #[test]
    fn zones_are_utc_offsets_or_iana_names() {
        assert_eq!(parse_timezone("UTC"), Some(LocalZone::Fixed(Utc.fix())));
        assert_eq!(
            parse_timezone("+01:00"),
            FixedOffset::east_opt(3600).map(LocalZone::Fixed)
        );
        assert_eq!(
            parse_timezone("-0530"),
            FixedOffset::west_opt(5 * 3600 + 1800).map(LocalZone::Fixed)
        );
        assert_eq!(
            parse_timezone("Europe/Berlin"),
            Some(LocalZone::Named(Tz::Europe__Berlin))
        );
        for bad in ["Europe/Nowhere", "+24:00", "+1", "", "+01:60", "CEST"] {
            assert_eq!(parse_timezone(bad), None, "{bad}");
        }
    }

    #[test]
    fn berlin_follows_daylight_saving() {
        let berlin = parse_timezone("Europe/Berlin").unwrap();
        assert_eq!(
            utc(berlin, "2024-01-15 12:00:00"),
            "2024-01-15T11:00:00+00:00"
        );
        assert_eq!(
            utc(berlin, "2024-07-15 12:00:00"),
            "2024-07-15T10:00:00+00:00"
        );
        // Spring, 31 March 2024: 02:00 CET became 03:00 CEST.
        assert_eq!(
            utc(berlin, "2024-03-31 01:59:59"),
            "2024-03-31T00:59:59+00:00"
        );
        assert_eq!(
            utc(berlin, "2024-03-31 02:30:00"),
            "2024-03-31T01:30:00+00:00"
        );
        assert_eq!(
            utc(berlin, "2024-03-31 03:00:00"),
            "2024-03-31T01:00:00+00:00"
        );
        // Autumn, 27 October 2024: 03:00 CEST became 02:00 CET; 02:30 happened twice.
        assert_eq!(
            utc(berlin, "2024-10-27 01:59:59"),
            "2024-10-26T23:59:59+00:00"
        );
        assert_eq!(
            utc(berlin, "2024-10-27 02:30:00"),
            "2024-10-27T00:30:00+00:00"
        );
        assert_eq!(
            utc(berlin, "2024-10-27 03:00:00"),
            "2024-10-27T02:00:00+00:00"
        );
    }

    #[test]
    fn the_year_is_the_zones_own() {
        let now: DateTime<Utc> = "2024-12-31T23:30:00Z".parse().unwrap();
        assert_eq!(LocalZone::default().year_at(now), 2024);
        assert_eq!(parse_timezone("Europe/Berlin").unwrap().year_at(now), 2025);
    }
}
