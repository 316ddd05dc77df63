//! When a recording was made: the start times sources give, the time zone an
//! ingest says its recorders were set to, and the instant that results.
//!
//! Recorders name files by their start time: AudioMoth `20240501_053000.WAV`, Song
//! Meter `SMM01234_20240501_053000.wav` (a prefix, then date and time), and many tools
//! `20240501T053000`. Without that time, `recorded_at` stays empty, "species per site
//! per day" has no days and "detections by hour" shows when the job ran. The name
//! carries no time zone: it is read in the ingest's time zone ([`TimeZone`]) and as
//! UTC, AudioMoth's default, when none was given (a Song Meter set to local time is
//! then off by the site's offset). A WAV header's time ([`crate::wav_metadata`])
//! usually names its zone and beats the name.

use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};

/// A recording's start as a source gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTime {
    /// An instant, with the UTC offset of the clock that stamped it
    /// (AudioMoth's `(UTC+1)`, GUANO's `+01:00`; `Z` and `(UTC)` are 0).
    Zoned(DateTime<FixedOffset>),
    /// A clock reading of unknown zone (file names, GUANO without an offset).
    Local(NaiveDateTime),
}

/// The zone an ingest's recorders kept time in, applied to start times that
/// name none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeZone {
    /// A fixed offset: `+01:00`, `-0500`, `UTC+5:30`, `UTC`, `Z`.
    Fixed(FixedOffset),
    /// An IANA name (`Europe/Berlin`): the offset then follows daylight saving
    /// time. PostgreSQL's time zone database converts it when the file is
    /// registered, so no zone table is compiled into the binaries; callers
    /// check the name with [`crate::jobs::known_time_zone`] first.
    Named(String),
}

impl std::fmt::Display for TimeZone {
    /// `+01:00`-style offsets and IANA names, as [`FromStr`] reads them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimeZone::Fixed(offset) => write!(f, "{offset}"),
            TimeZone::Named(name) => f.write_str(name),
        }
    }
}

/// A time zone that is neither an offset nor a plausible IANA name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid time zone {0:?}: use an offset such as +01:00 or -05:00 (UTC+1 also works), or an IANA name such as Europe/Berlin"
)]
pub struct TimeZoneError(pub String);

impl FromStr for TimeZone {
    type Err = TimeZoneError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let invalid = || TimeZoneError(s.to_string());
        if s.eq_ignore_ascii_case("utc") || s.eq_ignore_ascii_case("z") {
            return FixedOffset::east_opt(0)
                .map(TimeZone::Fixed)
                .ok_or_else(invalid);
        }
        // `UTC+1` means an hour east, as AudioMoth writes it (POSIX and the
        // `Etc/GMT+1` zone name say the opposite; neither is accepted here).
        let offset = s
            .strip_prefix("UTC")
            .or_else(|| s.strip_prefix("utc"))
            .unwrap_or(s);
        if offset.starts_with(['+', '-']) {
            return crate::wav_metadata::parse_offset(offset)
                .map(TimeZone::Fixed)
                .ok_or_else(invalid);
        }
        let plausible = (1..=64).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'));
        if plausible {
            Ok(TimeZone::Named(s.to_string()))
        } else {
            Err(invalid())
        }
    }
}

/// When a recording started, in the form the `audio_files` columns take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The instant, and the offset of the recorder's clock when known.
    Instant {
        utc: DateTime<Utc>,
        offset_minutes: Option<i32>,
    },
    /// A clock reading in a named zone, for the database to convert.
    InZone { local: NaiveDateTime, zone: String },
}

/// Applies the ingest's zone to a start time that has none. A zoned time keeps
/// its own offset; a local time without an ingest zone is read as UTC with an
/// unknown offset.
pub fn resolve(time: StartTime, zone: Option<&TimeZone>) -> Option<Resolved> {
    match (time, zone) {
        (StartTime::Zoned(t), _) => Some(Resolved::Instant {
            utc: t.to_utc(),
            offset_minutes: Some(t.offset().local_minus_utc() / 60),
        }),
        (StartTime::Local(t), None) => Some(Resolved::Instant {
            utc: t.and_utc(),
            offset_minutes: None,
        }),
        (StartTime::Local(t), Some(TimeZone::Fixed(offset))) => {
            let seconds = offset.local_minus_utc();
            let utc = t.checked_sub_signed(TimeDelta::seconds(i64::from(seconds)))?;
            Some(Resolved::Instant {
                utc: utc.and_utc(),
                offset_minutes: Some(seconds / 60),
            })
        }
        (StartTime::Local(t), Some(TimeZone::Named(name))) => Some(Resolved::InZone {
            local: t,
            zone: name.clone(),
        }),
    }
}

/// The start time in `name`, read as UTC; see [`local_from_file_name`].
pub fn from_file_name(name: &str) -> Option<DateTime<Utc>> {
    local_from_file_name(name).map(|t| t.and_utc())
}

/// The start time in `name` (a file name, with or without directories and extension):
/// the last `YYYYMMDD_HHMMSS`, `YYYYMMDD-HHMMSS` or `YYYYMMDDTHHMMSS` in it that is a
/// real date and time (years 1990–2100), a clock reading without a zone. `None`
/// when there is none.
pub fn local_from_file_name(name: &str) -> Option<NaiveDateTime> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let bytes = base.as_bytes();
    const LEN: usize = 15; // 8 digits, a separator, 6 digits
    if bytes.len() < LEN {
        return None;
    }
    (0..=bytes.len() - LEN)
        .rev()
        .filter(|&i| {
            // Not the middle of a longer run of digits.
            let before = i.checked_sub(1).map(|j| bytes[j]);
            let after = bytes.get(i + LEN);
            !before.is_some_and(|b| b.is_ascii_digit()) && !after.is_some_and(u8::is_ascii_digit)
        })
        .find_map(|i| parse_at(&bytes[i..i + LEN]))
}

fn parse_at(s: &[u8]) -> Option<NaiveDateTime> {
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        s[range.clone()]
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(&s[range]).ok()?.parse().ok())
            .flatten()
    };
    if !matches!(s[8], b'_' | b'-' | b'T') {
        return None;
    }
    let year = i32::try_from(digits(0..4)?).ok()?;
    if !(1990..=2100).contains(&year) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year, digits(4..6)?, digits(6..8)?)?;
    let time = NaiveTime::from_hms_opt(digits(9..11)?, digits(11..13)?, digits(13..15)?)?;
    Some(NaiveDateTime::new(date, time))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Option<String> {
        from_file_name(s).map(|t| t.to_rfc3339())
    }

    #[test]
    fn recorder_names_give_their_start_time() {
        let t = Some("2024-05-01T05:30:00+00:00".to_string());
        assert_eq!(at("20240501_053000.WAV"), t);
        assert_eq!(at("SMM01234_20240501_053000.wav"), t);
        assert_eq!(at("site3/SMM01234_20240501_053000.wav"), t);
        assert_eq!(at("C:\\data\\20240501T053000.flac"), t);
        assert_eq!(at("S4A09876_20240501-053000_extra.mp3"), t);
    }

    #[test]
    fn names_without_a_real_time_give_none() {
        for name in [
            "XC123456.mp3",
            "recording.wav",
            "20241301_053000.wav", // month 13
            "20240501_256000.wav", // hour 25
            "18000101_000000.wav", // outside 1990-2100
            "120240501_053000.wav",
            "20240501_0530001.wav",
            "20240501 053000.wav",
            "",
        ] {
            assert_eq!(at(name), None, "{name}");
        }
    }

    #[test]
    fn time_zones_are_offsets_or_iana_names() {
        let fixed = |minutes: i32| -> Result<TimeZone, TimeZoneError> {
            Ok(TimeZone::Fixed(
                FixedOffset::east_opt(minutes * 60).unwrap(),
            ))
        };
        assert_eq!("+01:00".parse(), fixed(60));
        assert_eq!("-05:00".parse(), fixed(-300));
        assert_eq!("+0530".parse(), fixed(330));
        assert_eq!("UTC+1".parse(), fixed(60));
        assert_eq!("UTC-3:30".parse(), fixed(-210));
        assert_eq!(" UTC ".parse(), fixed(0));
        assert_eq!("Z".parse(), fixed(0));
        assert_eq!(
            "Europe/Berlin".parse(),
            Ok(TimeZone::Named("Europe/Berlin".into()))
        );
        for text in ["+01:00", "-05:30", "+00:00", "Europe/Berlin"] {
            assert_eq!(text.parse::<TimeZone>().unwrap().to_string(), text);
        }
        assert_eq!(
            "America/Argentina/Buenos_Aires".parse(),
            Ok(TimeZone::Named("America/Argentina/Buenos_Aires".into()))
        );
        for bad in [
            "",
            "+25:00",
            "+01:60",
            "1:00",
            "Europe/Berlin; DROP",
            "/etc/passwd",
            "é",
        ] {
            assert!(bad.parse::<TimeZone>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_zone_applies_only_to_times_without_one() {
        let local =
            NaiveDateTime::parse_from_str("2024-05-01 05:30:00", "%Y-%m-%d %H:%M:%S").unwrap();
        let plus_two: TimeZone = "+02:00".parse().unwrap();
        let instant = |utc: &str, offset_minutes: Option<i32>| {
            Some(Resolved::Instant {
                utc: DateTime::parse_from_rfc3339(utc).unwrap().to_utc(),
                offset_minutes,
            })
        };
        assert_eq!(
            resolve(StartTime::Local(local), None),
            instant("2024-05-01T05:30:00Z", None)
        );
        assert_eq!(
            resolve(StartTime::Local(local), Some(&plus_two)),
            instant("2024-05-01T03:30:00Z", Some(120))
        );
        let zoned = DateTime::parse_from_rfc3339("2024-05-01T05:30:00-05:00").unwrap();
        assert_eq!(
            resolve(StartTime::Zoned(zoned), Some(&plus_two)),
            instant("2024-05-01T10:30:00Z", Some(-300))
        );
        assert_eq!(
            resolve(
                StartTime::Local(local),
                Some(&TimeZone::Named("Europe/Berlin".into()))
            ),
            Some(Resolved::InZone {
                local,
                zone: "Europe/Berlin".into()
            })
        );
    }
}
