//! Why an entry was refused.
//!
//! Every refusal is stored in `job_rejections` as `"<kind>: <detail>"`, so
//! that a user can group them in SQL (`split_part(reason, ':', 1)`) and the
//! summary can count them by kind without parsing free text.

use std::fmt;

/// The reason an input entry did not become a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The content is not audio we can decode (the decoder's own words).
    NotAudio(String),
    /// Zero bytes.
    Empty,
    /// Larger than `BIRDSONG_MAX_FILE_BYTES`.
    TooLarge { size: u64, limit: u64 },
    /// A symbolic or hard link (never followed: it may point anywhere).
    Link(String),
    /// A device, FIFO, socket or other non-regular file.
    Special(String),
    /// An archive entry whose name is absolute or climbs out with `..`.
    UnsafePath(String),
    /// Reading further would expand an archive beyond its limit.
    Expansion(String),
    /// The bytes could not be read (I/O error, corrupt archive).
    Unreadable(String),
    /// A valid entry of a kind ingestion does not handle (encrypted,
    /// sparse, unknown compression).
    Unsupported(String),
}

impl Reason {
    /// The short, stable name of the kind of refusal.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::NotAudio(_) => "not-audio",
            Reason::Empty => "empty",
            Reason::TooLarge { .. } => "too-large",
            Reason::Link(_) => "link",
            Reason::Special(_) => "special-file",
            Reason::UnsafePath(_) => "unsafe-path",
            Reason::Expansion(_) => "expansion-limit",
            Reason::Unreadable(_) => "unreadable",
            Reason::Unsupported(_) => "unsupported",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.kind())?;
        match self {
            Reason::NotAudio(d)
            | Reason::Link(d)
            | Reason::Special(d)
            | Reason::UnsafePath(d)
            | Reason::Expansion(d)
            | Reason::Unreadable(d)
            | Reason::Unsupported(d) => f.write_str(d),
            Reason::Empty => f.write_str("the file is empty"),
            Reason::TooLarge { size, limit } => write!(
                f,
                "{size} bytes is over the {limit}-byte limit (BIRDSONG_MAX_FILE_BYTES)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_starts_with_the_kind() {
        let r = Reason::TooLarge { size: 10, limit: 5 };
        let s = r.to_string();
        assert!(s.starts_with("too-large: "), "{s}");
        assert!(s.contains("10 bytes"), "{s}");
        assert_eq!(
            Reason::UnsafePath("absolute path".into()).to_string(),
            "unsafe-path: absolute path"
        );
    }
}
