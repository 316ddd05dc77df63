//! When a recording was made, read from its file name.
//!
//! Recorders name files by their start time: AudioMoth `20240501_053000.WAV`, Song
//! Meter `SMM01234_20240501_053000.wav` (a prefix, then date and time), and many tools
//! `20240501T053000`. Without that time, `recorded_at` stays empty, "species per site
//! per day" has no days and "detections by hour" shows when the job ran. The name
//! carries no time zone: it is read as UTC, AudioMoth's default (a Song Meter set to
//! local time is off by the site's offset). A time found once is kept: a later upload
//! of the same bytes under another name does not change it.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

/// The start time in `name` (a file name, with or without directories and extension):
/// the last `YYYYMMDD_HHMMSS`, `YYYYMMDD-HHMMSS` or `YYYYMMDDTHHMMSS` in it that is a
/// real date and time (years 1990–2100), read as UTC. `None` when there is none.
pub fn from_file_name(name: &str) -> Option<DateTime<Utc>> {
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

fn parse_at(s: &[u8]) -> Option<DateTime<Utc>> {
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
    Some(NaiveDateTime::new(date, time).and_utc())
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
}
