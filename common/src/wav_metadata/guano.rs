//! GUANO, the metadata block bat and bird recorders (Wildlife Acoustics Song
//! Meters, Pettersson, Titley, …) write into a `guan` chunk.
//!
//! The format (guano-md.org, version 1.0): UTF-8 text, one `Key: value` per
//! line, `GUANO|Version` first, keys split from values at the first colon,
//! whitespace around both trimmed, unknown keys ignored. `Timestamp` is the
//! recording's start, ISO 8601 with or without a UTC offset; real files stray
//! from the spec's strict subset (Song Meters write `2020-10-17 13:05:00+1:00`,
//! with a space and a one-digit hour), so the reader accepts both separators
//! and both offset widths.

use std::collections::BTreeMap;

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};

use crate::recorded::StartTime;

/// The fields of a GUANO block, by key (first occurrence of a key wins).
/// `None` when the text is not GUANO (no `GUANO|Version` field).
pub fn parse_fields(text: &str) -> Option<BTreeMap<String, String>> {
    let mut fields = BTreeMap::new();
    for line in text.split('\n') {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim_matches(is_space);
        if key.is_empty() {
            continue;
        }
        fields
            .entry(key.to_string())
            .or_insert_with(|| value.trim_matches(is_space).to_string());
    }
    fields.contains_key("GUANO|Version").then_some(fields)
}

/// The spec's whitespace: "the non-printing ASCII bytes including null, CR,
/// LF, space, tab". Writers pad fixed-size blocks with spaces or NULs.
fn is_space(c: char) -> bool {
    c.is_whitespace() || c.is_ascii_control()
}

/// `Loc Position`: WGS84 latitude and longitude separated by whitespace (a
/// comma is tolerated), each within its range.
pub fn parse_position(value: &str) -> Option<(f64, f64)> {
    let mut parts = value
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty());
    let lat: f64 = parts.next()?.parse().ok()?;
    let lon: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
}

/// `Timestamp`: `YYYY-MM-DD`, `T` or a space, `HH:MM[:SS[.fraction]]`, then
/// `Z`, an offset (`+04:00`, `+1:00`, `-0530`) or nothing (a local time of
/// unknown zone).
pub fn parse_timestamp(value: &str) -> Option<StartTime> {
    let value = value.trim();
    let (date, rest) = (value.get(..10)?, value.get(10..)?);
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    // The zone starts at a trailing `Z` or at the first sign after the time.
    let (time, zone) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let time = time.trim_end();
    let time = NaiveTime::parse_from_str(time, "%H:%M:%S%.f")
        .or_else(|_| NaiveTime::parse_from_str(time, "%H:%M"))
        .ok()?;
    let local = NaiveDateTime::new(date, time);
    match zone {
        None => Some(StartTime::Local(local)),
        Some(zone) => {
            let offset = parse_offset(zone)?;
            local
                .and_local_timezone(offset)
                .single()
                .map(StartTime::Zoned)
        }
    }
}

/// The widest UTC offset in use anywhere (ISO 8601 allows ±18 hours).
pub const MAX_OFFSET_MINUTES: i32 = 18 * 60;

/// `Z`, or a sign, one or two hour digits and optionally minutes (`:MM` or
/// `MM`), within ±18 hours.
pub fn parse_offset(zone: &str) -> Option<FixedOffset> {
    let zone = zone.trim();
    if zone.eq_ignore_ascii_case("z") {
        return FixedOffset::east_opt(0);
    }
    let (sign, digits) = match zone.split_at_checked(1)? {
        ("+", rest) => (1, rest),
        ("-", rest) => (-1, rest),
        _ => return None,
    };
    let (hours, minutes) = match digits.split_once(':') {
        Some((h, m)) => (h, m),
        None if digits.len() == 4 => digits.split_at_checked(2)?,
        None => (digits, "0"),
    };
    let all_digits =
        |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(hours) || !all_digits(minutes) {
        return None;
    }
    let (hours, minutes): (i32, i32) = (hours.parse().ok()?, minutes.parse().ok()?);
    if minutes >= 60 || hours * 60 + minutes > MAX_OFFSET_MINUTES {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}
