//! AudioMoth's comment, the `ICMT` text of the `LIST`/`INFO` chunk its
//! firmware writes into every WAV header, and its `IART` artist field.
//!
//! The firmware (OpenAcousticDevices AudioMoth-Firmware-Basic, `setHeaderComment`)
//! writes `Recorded at 05:30:00 01/05/2024 (UTC+1) by AudioMoth 24F319055FDF1D8D
//! at medium gain …`: the time is the recorder's clock shifted to the configured
//! zone, day before month, and the zone is `(UTC)`, `(UTC+H)`, `(UTC-H)` or with
//! minutes `(UTC+5:30)` (a zone of minutes only is written `(UTC+0:30)` or, by some
//! versions, `(UTC-0:30)`). The earliest firmware wrote no zone: its clock was
//! UTC. With a deployment ID set, `by AudioMoth <serial>` becomes `during
//! deployment <id>`, and the serial is only in `IART` (`AudioMoth <serial>`).

use chrono::{FixedOffset, NaiveDateTime, TimeDelta};

use super::guano::MAX_OFFSET_MINUTES;
use crate::recorded::StartTime;

/// The start time in an AudioMoth comment, `None` when the text is not one.
pub fn parse_time(comment: &str) -> Option<StartTime> {
    let rest = comment.trim_start().strip_prefix("Recorded at ")?;
    let stamp = rest.get(..19)?;
    let local = NaiveDateTime::parse_from_str(stamp, "%H:%M:%S %d/%m/%Y").ok()?;
    let after = rest.get(19..)?.trim_start();
    let offset = match after.strip_prefix("(UTC") {
        Some(zone) => parse_zone(zone.split_once(')')?.0)?,
        None => FixedOffset::east_opt(0)?,
    };
    // The clock shown is UTC plus the offset; the instant is the other way.
    let utc = local.checked_sub_signed(TimeDelta::seconds(i64::from(offset.local_minus_utc())))?;
    Some(StartTime::Zoned(utc.and_utc().with_timezone(&offset)))
}

/// What follows `(UTC` up to `)`: empty, or `+H`, `-H`, `+H:MM`, `-H:MM`.
fn parse_zone(zone: &str) -> Option<FixedOffset> {
    if zone.is_empty() {
        return FixedOffset::east_opt(0);
    }
    let (sign, digits) = match zone.split_at_checked(1)? {
        ("+", rest) => (1, rest),
        ("-", rest) => (-1, rest),
        _ => return None,
    };
    let (hours, minutes) = digits.split_once(':').unwrap_or((digits, "0"));
    let number = |s: &str| -> Option<i32> {
        (!s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (hours, minutes) = (number(hours)?, number(minutes)?);
    if minutes >= 60 || hours * 60 + minutes > MAX_OFFSET_MINUTES {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// The recorder's serial: `by AudioMoth <serial>` in the comment, else
/// `AudioMoth <serial>` in the artist field.
pub fn serial(comment: Option<&str>, artist: Option<&str>) -> Option<String> {
    let from_comment = comment.and_then(|c| {
        let (_, after) = c.split_once(" by AudioMoth ")?;
        Some(
            after
                .split(|ch: char| ch.is_whitespace() || ch == '.')
                .next()?
                .to_string(),
        )
    });
    let from_artist = artist.and_then(|a| {
        let serial = a.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        Some(serial.strip_prefix("AudioMoth ")?.trim().to_string())
    });
    from_comment
        .into_iter()
        .chain(from_artist)
        .find(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether these fields were written by an AudioMoth.
pub fn is_audiomoth(comment: Option<&str>, artist: Option<&str>) -> bool {
    artist.is_some_and(|a| a.trim_start().starts_with("AudioMoth"))
        || comment
            .is_some_and(|c| c.trim_start().starts_with("Recorded at ") && c.contains("AudioMoth"))
}
