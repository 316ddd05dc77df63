//! Streaming through tar, tar.gz and zip archives without unpacking them.
//!
//! An archive is untrusted input, so nothing in it is ever written under its
//! own name: entries are read into memory, or into an anonymous temporary
//! file when large, and are refused outright when they are links, devices,
//! absolute paths, climb out with `..`, exceed the file size limit, or would
//! expand the archive beyond a multiple of its size on disk (a compression
//! bomb). Refusals are per entry; the rest of the archive is still read,
//! except where reading on would itself break a limit (a tar stream cannot
//! skip an entry without decompressing it).
//!
//! Tar is read strictly sequentially (gzip is a stream). Zip is read from
//! its central directory, one entry at a time, so a refused entry costs
//! nothing.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;
use tar::EntryType;

use crate::reject::Reason;
use crate::source::{Entry, Event, SourceError, Walker};

/// An archive found by the walk.
pub struct Archive<'a> {
    pub path: &'a Path,
    /// Its name as shown in rejections and task paths.
    pub shown: &'a str,
    /// Relative path of the archive inside the ingested folder, or empty
    /// when the archive itself was named on the command line.
    pub relative_base: &'a str,
    /// The folder holding the archive (label of its top-level entries).
    pub folder: Option<&'a str>,
    /// Size on disk.
    pub size: u64,
}

impl Archive<'_> {
    fn entry_path(&self, name: &str) -> String {
        format!("{}!/{name}", self.shown)
    }

    fn relative(&self, name: &str) -> String {
        if self.relative_base.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.relative_base)
        }
    }

    /// The entry's own folder inside the archive, else the archive's.
    fn folder(&self, name: &str) -> Option<String> {
        match name.rsplit_once('/') {
            Some((dir, _)) => dir.rsplit('/').next().map(str::to_string),
            None => self.folder.map(str::to_string),
        }
    }
}

/// Checks an entry name and returns it normalised (`a/./b` → `a/b`).
pub fn safe_name(raw: &str) -> Result<String, Reason> {
    if raw.contains('\0') {
        return Err(Reason::UnsafePath("the name contains a NUL byte".into()));
    }
    let bytes = raw.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if raw.starts_with('/') || raw.starts_with('\\') || drive {
        return Err(Reason::UnsafePath(
            "absolute path (entries must be relative to the archive)".into(),
        ));
    }
    let parts: Vec<&str> = raw
        .split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(Reason::UnsafePath(
            "the path climbs out of the archive with ..".into(),
        ));
    }
    if parts.is_empty() {
        return Err(Reason::UnsafePath("the entry has no name".into()));
    }
    Ok(parts.join("/"))
}

/// Counts the compressed bytes read, for the progress bar.
struct Counting<'a, R> {
    inner: R,
    global: &'a AtomicU64,
    local: &'a Cell<u64>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.global.fetch_add(n as u64, Ordering::Relaxed);
        self.local.set(self.local.get() + n as u64);
        Ok(n)
    }
}

/// The error [`Capped`] returns once the budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("the archive expands beyond {0} bytes")]
struct ExpansionExceeded(u64);

/// Refuses to yield more than `limit` expanded bytes.
struct Capped<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.limit - self.read;
        if left == 0 {
            // At the limit: fine if the stream ends here, an error if not.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(ExpansionExceeded(self.limit))),
            };
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        Ok(n)
    }
}

fn is_expansion(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<ExpansionExceeded>())
}

/// The checks every archive entry passes before its bytes are read: a
/// refused entry type, an unsafe name, or an entry an earlier run of the
/// same ingest already handled. Returns the entry's safe name and path when
/// it should be read.
fn admit(
    w: &Walker<'_>,
    archive: &Archive<'_>,
    raw: &str,
    refused: Option<Reason>,
) -> Result<Option<(String, String)>, SourceError> {
    if let Some(reason) = refused {
        w.reject(archive.entry_path(raw), reason)?;
        return Ok(None);
    }
    let name = match safe_name(raw) {
        Ok(name) => name,
        Err(reason) => {
            w.reject(archive.entry_path(raw), reason)?;
            return Ok(None);
        }
    };
    let path = archive.entry_path(&name);
    if w.done.contains(&path) {
        w.send(Event::AlreadyDone { path })?;
        return Ok(None);
    }
    Ok(Some((name, path)))
}

/// Streams the entries of a tar or tar.gz file.
pub fn read_tar(w: &Walker<'_>, archive: &Archive<'_>, gzip: bool) -> Result<(), SourceError> {
    let file = match File::open(archive.path) {
        Ok(f) => f,
        Err(e) => {
            w.credit(archive.size);
            return w.reject(archive.shown.into(), Reason::Unreadable(e.to_string()));
        }
    };
    let consumed = Cell::new(0u64);
    let counting = Counting {
        inner: BufReader::new(file),
        global: &w.stats.bytes_done,
        local: &consumed,
    };
    let budget = w.limits.expansion_budget(archive.size);
    let stream: Box<dyn Read + '_> = if gzip {
        Box::new(MultiGzDecoder::new(counting))
    } else {
        Box::new(counting)
    };
    let mut tar = tar::Archive::new(Capped {
        inner: stream,
        read: 0,
        limit: budget,
    });
    let result = tar_entries(w, archive, &mut tar, budget, gzip);
    w.credit(archive.size.saturating_sub(consumed.get()));
    result
}

fn tar_entries<R: Read>(
    w: &Walker<'_>,
    archive: &Archive<'_>,
    tar: &mut tar::Archive<R>,
    budget: u64,
    gzip: bool,
) -> Result<(), SourceError> {
    let ratio = w.limits.max_expansion_ratio;
    let expansion = format!(
        "beyond its limit of {budget} bytes ({ratio}x its {} bytes on disk, or the \
         --max-archive-bytes cap); the rest of the archive was not read",
        archive.size
    );
    let entries = match tar.entries() {
        Ok(entries) => entries,
        Err(e) => return w.reject(archive.shown.into(), Reason::Unreadable(e.to_string())),
    };
    for (seen, entry) in entries.enumerate() {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let reason = if is_expansion(&e) {
                    Reason::Expansion(format!("the archive expands {expansion}"))
                } else if seen == 0 && gzip {
                    Reason::Unsupported(format!(
                        "gzip-compressed data that is not a tar archive ({e})"
                    ))
                } else {
                    Reason::Unreadable(format!("corrupt archive after {seen} entries: {e}"))
                };
                return w.reject(archive.shown.into(), reason);
            }
        };
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() || kind.is_pax_global_extensions() {
            continue;
        }
        let refused = match kind {
            EntryType::Regular | EntryType::Continuous => None,
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                Some(Reason::Link(format!(
                    "symbolic link to {target} (links are not followed)"
                )))
            }
            EntryType::Link => Some(Reason::Link("hard link (links are not followed)".into())),
            EntryType::Char => Some(Reason::Special("a character device".into())),
            EntryType::Block => Some(Reason::Special("a block device".into())),
            EntryType::Fifo => Some(Reason::Special("a FIFO".into())),
            EntryType::GNUSparse => Some(Reason::Unsupported("a sparse file".into())),
            other => Some(Reason::Unsupported(format!("tar entry type {other:?}"))),
        };
        let Some((name, path)) = admit(w, archive, &raw, refused)? else {
            continue;
        };
        let size = entry.size();
        if size == 0 {
            w.reject(path, Reason::Empty)?;
            continue;
        }
        if size > w.limits.max_file_bytes {
            w.reject(
                path,
                Reason::TooLarge {
                    size,
                    limit: w.limits.max_file_bytes,
                },
            )?;
            continue;
        }
        if entry.raw_file_position().saturating_add(size) > budget {
            // Skipping the entry would decompress it all the same.
            return w.reject(
                path,
                Reason::Expansion(format!("the entry would expand the archive {expansion}")),
            );
        }
        match w.read_entry(&mut entry, size)? {
            Ok((payload, size)) => w.send(Event::Entry(Entry {
                relative: archive.relative(&name),
                folder: archive.folder(&name),
                path,
                size,
                payload,
                credit: 0,
            }))?,
            Err(reason) => {
                let fatal = matches!(reason, Reason::Unreadable(_));
                w.reject(path, reason)?;
                if fatal {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Reads the entries of a zip file one at a time.
pub fn read_zip(w: &Walker<'_>, archive: &Archive<'_>) -> Result<(), SourceError> {
    let opened = File::open(archive.path)
        .map_err(|e| e.to_string())
        .and_then(|f| zip::ZipArchive::new(BufReader::new(f)).map_err(|e| e.to_string()));
    let mut zip = match opened {
        Ok(zip) => zip,
        Err(e) => {
            w.credit(archive.size);
            return w.reject(
                archive.shown.into(),
                Reason::Unreadable(format!("not a readable zip archive: {e}")),
            );
        }
    };
    let budget = w.limits.expansion_budget(archive.size);
    let ratio = w.limits.max_expansion_ratio.max(1);
    let mut expanded = 0u64;
    let mut credited = 0u64;
    for index in 0..zip.len() {
        let (raw, is_dir, is_link, mode, encrypted, size, packed) = match zip.by_index_raw(index) {
            Ok(f) => (
                f.name().to_string(),
                f.is_dir(),
                f.is_symlink(),
                f.unix_mode(),
                f.encrypted(),
                f.size(),
                f.compressed_size(),
            ),
            Err(e) => {
                w.reject(
                    archive.entry_path(&format!("#{index}")),
                    Reason::Unreadable(e.to_string()),
                )?;
                continue;
            }
        };
        let packed_credit = packed.min(archive.size.saturating_sub(credited));
        credited += packed_credit;
        w.credit(packed_credit);
        if is_dir {
            continue;
        }
        const S_IFMT: u32 = 0o170000;
        const S_IFREG: u32 = 0o100000;
        let refused = if is_link {
            Some(Reason::Link(
                "symbolic link (links are not followed)".into(),
            ))
        } else if let Some(m) = mode
            && m & S_IFMT != 0
            && m & S_IFMT != S_IFREG
        {
            Some(Reason::Special(format!(
                "not a regular file (mode {:o})",
                m & S_IFMT
            )))
        } else {
            None
        };
        let Some((name, path)) = admit(w, archive, &raw, refused)? else {
            continue;
        };
        let reason = if encrypted {
            Some(Reason::Unsupported("an encrypted entry".into()))
        } else if size == 0 {
            Some(Reason::Empty)
        } else if size > w.limits.max_file_bytes {
            Some(Reason::TooLarge {
                size,
                limit: w.limits.max_file_bytes,
            })
        } else if size > packed.max(1).saturating_mul(ratio) {
            Some(Reason::Expansion(format!(
                "the entry expands from {packed} to {size} bytes, more than {ratio}x"
            )))
        } else if expanded.saturating_add(size) > budget {
            Some(Reason::Expansion(format!(
                "the entry would expand the archive beyond its limit of {budget} bytes \
                 ({ratio}x its {} bytes on disk, or the --max-archive-bytes cap)",
                archive.size
            )))
        } else {
            None
        };
        if let Some(reason) = reason {
            w.reject(path, reason)?;
            continue;
        }
        let read = match zip.by_index(index) {
            Ok(mut f) => w.read_entry(&mut (&mut f).take(size.saturating_add(1)), size)?,
            Err(e) => Err(Reason::Unsupported(e.to_string())),
        };
        match read {
            Ok((payload, actual)) => {
                expanded += actual;
                w.send(Event::Entry(Entry {
                    relative: archive.relative(&name),
                    folder: archive.folder(&name),
                    path,
                    size: actual,
                    payload,
                    credit: 0,
                }))?;
            }
            Err(reason) => w.reject(path, reason)?,
        }
    }
    w.credit(archive.size.saturating_sub(credited));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [
            "../evil.wav",
            "a/../../b.wav",
            "/abs.wav",
            "\\x.wav",
            "C:x.wav",
            "./",
            "",
        ] {
            assert!(
                matches!(safe_name(bad), Err(Reason::UnsafePath(_))),
                "{bad:?} accepted"
            );
        }
        assert_eq!(safe_name("./a//b/./c.wav").unwrap(), "a/b/c.wav");
        assert_eq!(safe_name("a\\b.wav").unwrap(), "a/b.wav");
    }

    #[test]
    fn capped_reader_stops_at_the_limit() {
        let mut ok = Capped {
            inner: &b"12345"[..],
            read: 0,
            limit: 5,
        };
        let mut out = Vec::new();
        assert_eq!(ok.read_to_end(&mut out).unwrap(), 5);
        let mut over = Capped {
            inner: &b"123456"[..],
            read: 0,
            limit: 5,
        };
        let err = over.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(is_expansion(&err), "{err}");
    }

    #[test]
    fn entry_folders_and_relative_paths() {
        let a = Archive {
            path: Path::new("/x/Robin/batch.zip"),
            shown: "/x/Robin/batch.zip",
            relative_base: "Robin/batch.zip",
            folder: Some("Robin"),
            size: 1,
        };
        assert_eq!(a.folder("Wren/a.wav").as_deref(), Some("Wren"));
        assert_eq!(a.folder("a.wav").as_deref(), Some("Robin"));
        assert_eq!(a.relative("a.wav"), "Robin/batch.zip/a.wav");
        assert_eq!(a.entry_path("a.wav"), "/x/Robin/batch.zip!/a.wav");
    }
}
