//! Calendar time in UTC, to the second, for run names and records: UTC so that names sort the
//! same on every machine and no time-zone database is needed.

use std::time::{SystemTime, UNIX_EPOCH};

/// A moment in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        Stamp::from_system_time(SystemTime::now())
    }

    /// The moment `time` (times before 1970 become 1970-01-01).
    pub fn from_system_time(time: SystemTime) -> Stamp {
        let secs = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Stamp::from_unix(secs)
    }

    /// The moment `secs` seconds after 1970-01-01T00:00:00Z.
    pub fn from_unix(secs: u64) -> Stamp {
        let days = (secs / 86_400) as i64;
        let rest = (secs % 86_400) as u32;
        // Howard Hinnant's `civil_from_days`.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Stamp {
            year,
            month,
            day,
            hour: rest / 3_600,
            minute: rest % 3_600 / 60,
            second: rest % 60,
        }
    }

    /// `2026-11-29T22:10:05Z` (RFC 3339; sorts chronologically as text).
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `2026-11-29T2210`: to the minute, without the colons Windows forbids in file names.
    pub fn compact(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_moments() {
        assert_eq!(Stamp::from_unix(0).rfc3339(), "1970-01-01T00:00:00Z");
        // `date -u -d @1795990205`
        let s = Stamp::from_unix(1_795_990_205);
        assert_eq!(s.rfc3339(), "2026-11-29T22:10:05Z");
        assert_eq!(s.compact(), "2026-11-29T2210");
        // A leap day and the last second of a year.
        assert_eq!(
            Stamp::from_unix(951_782_400).rfc3339(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            Stamp::from_unix(1_735_689_599).rfc3339(),
            "2024-12-31T23:59:59Z"
        );
    }
}
