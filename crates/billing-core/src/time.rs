//! Time as the domain sees it: UTC instants at microsecond precision, obtained from the
//! [`crate::ports::Clock`] port.

use std::fmt;

/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the first and last instants RFC 3339 can
/// write.
const EARLIEST_RFC3339_SECS: i64 = -62_167_219_200;
const LATEST_RFC3339_SECS: i64 = 253_402_300_799;

/// A UTC instant, microseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    /// The instant `secs` seconds after the Unix epoch (saturating).
    pub const fn from_secs(secs: i64) -> Timestamp {
        Timestamp(secs.saturating_mul(1_000_000))
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch, rounded down (towards the past).
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// `secs` seconds later (saturating).
    pub const fn plus_secs(self, secs: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1_000_000)))
    }

    /// `secs` seconds earlier (saturating).
    pub const fn minus_secs(self, secs: i64) -> Timestamp {
        Timestamp(self.0.saturating_sub(secs.saturating_mul(1_000_000)))
    }

    /// RFC 3339 in UTC with second precision, e.g. `2026-01-15T10:30:00Z` (the seed documents'
    /// format).
    pub fn to_rfc3339(self) -> String {
        let secs = self.as_secs();
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }

    /// The first instant of this instant's minute.
    pub const fn minute_start(self) -> Timestamp {
        Timestamp(self.0 - self.0.rem_euclid(60_000_000))
    }

    /// Parses RFC 3339 (`2026-01-15T10:30:00Z`, `2026-01-15T12:30:00.25+02:00`): a full date
    /// and time with seconds, an optional fraction (to microseconds; more digits are
    /// refused, not rounded) and a `Z` or `±HH:MM` offset. Years 0000 to 9999.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let b = text.as_bytes();
        let digits = |from: usize, len: usize| -> Option<i64> {
            let part = b.get(from..from + len)?;
            part.iter()
                .all(u8::is_ascii_digit)
                .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
        };
        let punct = |at: usize, want: &[u8]| b.get(at).is_some_and(|c| want.contains(c));
        if !(punct(4, b"-")
            && punct(7, b"-")
            && punct(10, b"Tt")
            && punct(13, b":")
            && punct(16, b":"))
        {
            return None;
        }
        let year = digits(0, 4)?;
        let month = u32::try_from(digits(5, 2)?).ok()?;
        let day = u32::try_from(digits(8, 2)?).ok()?;
        let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
        let days = days_from_civil(year, month, day);
        // A date that does not round-trip (month 13, 31 April, 29 February 2027) is refused.
        if civil_from_days(days) != (year, month, day) || hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let mut at = 19;
        let mut micros = 0i64;
        if punct(at, b".") {
            let count = b[at + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if count == 0 || count > 6 {
                return None;
            }
            micros = digits(at + 1, count)? * 10i64.pow(6 - u32::try_from(count).ok()?);
            at += 1 + count;
        }
        let offset_secs = match b.get(at..)? {
            b"Z" | b"z" => 0,
            [sign @ (b'+' | b'-'), ..] if b.len() == at + 6 && punct(at + 3, b":") => {
                let (h, m) = (digits(at + 1, 2)?, digits(at + 4, 2)?);
                if h > 23 || m > 59 {
                    return None;
                }
                let secs = h * 3600 + m * 60;
                if *sign == b'+' { secs } else { -secs }
            }
            _ => return None,
        };
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
        // Outside years 0000 to 9999 in UTC (an offset can carry a date there) the instant
        // has no RFC 3339 form to be written back in.
        if !(EARLIEST_RFC3339_SECS..=LATEST_RFC3339_SECS).contains(&secs) {
            return None;
        }
        Some(Timestamp(secs * 1_000_000 + micros))
    }

    /// Parses a day (`2026-11-01`, its first instant in UTC) or an RFC 3339 instant (see
    /// [`Timestamp::parse_rfc3339`]): how a statement's period is written.
    ///
    /// ```
    /// use billing_core::time::Timestamp;
    /// assert_eq!(
    ///     Timestamp::parse_day_or_instant("2026-11-01"),
    ///     Timestamp::parse_rfc3339("2026-11-01T00:00:00Z"),
    /// );
    /// assert!(Timestamp::parse_day_or_instant("2026-02-30").is_none());
    /// ```
    pub fn parse_day_or_instant(text: &str) -> Option<Timestamp> {
        if text.len() == 10 {
            Timestamp::parse_rfc3339(&format!("{text}T00:00:00Z"))
        } else {
            Timestamp::parse_rfc3339(text)
        }
    }

    /// The first instant of this instant's calendar month (UTC).
    pub fn month_start(self) -> Timestamp {
        let days = self.as_secs().div_euclid(86_400);
        let (y, m, _) = civil_from_days(days);
        Timestamp::from_secs(days_from_civil(y, m, 1) * 86_400)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y, m as u32, d as u32)
}

/// (year, month, day) to days since 1970-01-01, the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp::from_secs(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp::from_secs(1_768_473_000).to_rfc3339(),
            "2026-01-15T10:30:00Z"
        );
        assert_eq!(
            Timestamp::from_secs(951_782_400).to_rfc3339(),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn month_start_is_first_of_month() {
        let t = Timestamp::from_secs(1_768_473_000);
        assert_eq!(t.month_start().to_rfc3339(), "2026-01-01T00:00:00Z");
        for days in [-1000i64, 0, 59, 60, 365, 10_000, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn parses_rfc3339() {
        let parse = Timestamp::parse_rfc3339;
        assert_eq!(
            parse("2026-01-15T10:30:00Z"),
            Some(Timestamp::from_secs(1_768_473_000))
        );
        assert_eq!(
            parse("2026-01-15t10:30:00z"),
            Some(Timestamp::from_secs(1_768_473_000))
        );
        assert_eq!(
            parse("2026-01-15T12:30:00+02:00"),
            Some(Timestamp::from_secs(1_768_473_000))
        );
        assert_eq!(
            parse("2026-01-15T05:00:00-05:30"),
            Some(Timestamp::from_secs(1_768_473_000))
        );
        assert_eq!(
            parse("2026-01-15T10:30:00.25Z"),
            Some(Timestamp::from_micros(1_768_473_000_250_000))
        );
        assert_eq!(
            parse("2000-02-29T00:00:00Z"),
            Some(Timestamp::from_secs(951_782_400))
        );
        assert_eq!(
            parse("1969-12-31T23:59:59Z"),
            Some(Timestamp::from_secs(-1))
        );
        assert_eq!(
            parse("0070-03-27T01:44:31.6-00:03").map(|t| t.to_rfc3339()),
            Some("0070-03-27T01:47:31Z".to_owned())
        );
        for bad in [
            "",
            "2026-01-15",
            "2026-01-15T10:30Z",
            "2026-01-15T10:30:00",
            "2026-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-15T24:00:00Z",
            "2026-01-15T10:60:00Z",
            "2026-01-15T10:30:60Z",
            "2026-01-15T10:30:00.Z",
            "2026-01-15T10:30:00.1234567Z",
            "2026-01-15T10:30:00+2:00",
            "2026-01-15T10:30:00Zjunk",
            "+026-01-15T10:30:00Z",
            "2026-01-15 10:30:00Z",
            "2026-01-15T10:30:00+24:00",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn minute_start_floors() {
        let t = Timestamp::from_micros(1_768_473_059_999_999);
        assert_eq!(t.minute_start(), Timestamp::from_secs(1_768_473_000));
        assert_eq!(t.minute_start().minute_start(), t.minute_start());
    }
}
