//! Turning the paths on the command line into a stream of candidate
//! recordings.
//!
//! The walk runs on one blocking thread and hands [`Event`]s to the async
//! side through a bounded channel: when uploads are slower than reading, the
//! walk simply waits, so memory stays bounded by the channel capacity times
//! the in-memory entry limit, whatever the size of the input.
//!
//! What a file *is* comes from its first bytes, never its name: a zip, gzip
//! or tar signature makes it an archive to stream through ([`crate::archive`]);
//! anything else is a candidate recording that the decoder will accept or
//! refuse later. Links are never followed and special files never opened,
//! because either could make ingestion read something the user did not
//! mean to ingest.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;
use tokio::sync::mpsc;

use crate::archive;
use crate::progress::Stats;
use crate::reject::Reason;

/// Size limits applied while reading inputs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest recording accepted (`BIRDSONG_MAX_FILE_BYTES`).
    pub max_file_bytes: u64,
    /// Largest expansion of an archive, as a multiple of its size on disk.
    pub max_expansion_ratio: u64,
    /// Absolute cap on what one archive may expand to, if any.
    pub max_archive_bytes: Option<u64>,
    /// Archive entries up to this size are held in memory; larger ones are
    /// spilled to a file in the temporary directory.
    pub memory_entry_bytes: u64,
}

impl Limits {
    /// How many bytes an archive of `compressed` bytes may expand to.
    pub fn expansion_budget(&self, compressed: u64) -> u64 {
        let by_ratio = compressed.saturating_mul(self.max_expansion_ratio.max(1));
        match self.max_archive_bytes {
            Some(cap) => by_ratio.min(cap),
            None => by_ratio,
        }
    }
}

/// Where the bytes of a candidate recording are.
#[derive(Debug)]
pub enum Payload {
    /// A regular file on disk, read (and hashed) by the uploader.
    Disk(PathBuf),
    /// An archive entry read into memory, hashed on the way in.
    Memory { bytes: Bytes, sha256: String },
    /// An archive entry too large for memory, copied into the temporary
    /// directory and hashed on the way in.
    Spilled { file: NamedTempFile, sha256: String },
}

/// A candidate recording.
#[derive(Debug)]
pub struct Entry {
    /// Its name in the job (`tasks.source_path`): the absolute path, or
    /// `<archive>!/<entry>` inside an archive. Unique within a job.
    pub path: String,
    /// Its path relative to the ingested root, for CSV labels.
    pub relative: String,
    /// The folder it sits in, for folder labels.
    pub folder: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    pub payload: Payload,
    /// Input bytes to count as done on the progress bar once it is handled.
    pub credit: u64,
}

/// What the walk found.
#[derive(Debug)]
pub enum Event {
    Entry(Entry),
    Rejected {
        path: String,
        reason: Reason,
    },
    /// Handled by an earlier run of the same job.
    AlreadyDone {
        path: String,
    },
}

/// Why the walk stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The consumer went away (the ingest failed elsewhere).
    #[error("the ingest stopped before the inputs were all read")]
    Closed,
    #[error("cannot write to the temporary directory {dir}: {source}")]
    Temp { dir: String, source: io::Error },
}

/// One path from the command line, resolved.
#[derive(Debug, Clone)]
pub struct Root {
    /// Canonical absolute path.
    pub path: PathBuf,
    pub is_dir: bool,
}

/// The state of one walk over the inputs.
pub struct Walker<'a> {
    pub limits: Limits,
    /// `source_path`s an earlier run of this job already made tasks for.
    pub done: &'a HashSet<String>,
    pub temp_dir: &'a Path,
    pub stats: &'a Stats,
    pub tx: mpsc::Sender<Event>,
}

/// The first bytes of a file, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Zip,
    Gzip,
    Tar,
    Other,
}

/// Recognises archives by their signature.
pub fn sniff(head: &[u8]) -> Sniffed {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Sniffed::Zip
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Sniffed::Gzip
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Sniffed::Tar
    } else {
        Sniffed::Other
    }
}

/// Total size of the regular files under the roots (for the progress bar's
/// ETA). Links are not followed, as in the walk itself.
pub fn total_bytes(roots: &[Root]) -> u64 {
    fn dir_bytes(dir: &Path) -> u64 {
        let Ok(rd) = fs::read_dir(dir) else { return 0 };
        rd.flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
                _ => 0,
            })
            .sum()
    }
    roots
        .iter()
        .map(|r| {
            if r.is_dir {
                dir_bytes(&r.path)
            } else {
                fs::metadata(&r.path).map_or(0, |m| m.len())
            }
        })
        .sum()
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Walker<'_> {
    /// Walks every root in order.
    pub fn run(&self, roots: &[Root]) -> Result<(), SourceError> {
        for root in roots {
            if root.is_dir {
                self.walk_dir(&root.path, "")?;
            } else {
                let folder = root.path.parent().map(file_name);
                self.file(&root.path, &file_name(&root.path), true, folder)?;
            }
        }
        Ok(())
    }

    pub(crate) fn send(&self, event: Event) -> Result<(), SourceError> {
        self.tx
            .blocking_send(event)
            .map_err(|_| SourceError::Closed)
    }

    pub(crate) fn reject(&self, path: String, reason: Reason) -> Result<(), SourceError> {
        self.send(Event::Rejected { path, reason })
    }

    pub(crate) fn credit(&self, bytes: u64) {
        self.stats.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    fn walk_dir(&self, dir: &Path, relative: &str) -> Result<(), SourceError> {
        let mut children: Vec<fs::DirEntry> = match fs::read_dir(dir) {
            Ok(rd) => rd.flatten().collect(),
            Err(e) => {
                return self.reject(
                    display(dir),
                    Reason::Unreadable(format!("cannot list the folder: {e}")),
                );
            }
        };
        children.sort_by_key(|c| c.file_name());
        let folder = file_name(dir);
        for child in children {
            let path = child.path();
            let name = child.file_name().to_string_lossy().into_owned();
            let child_relative = if relative.is_empty() {
                name
            } else {
                format!("{relative}/{name}")
            };
            let kind = match child.file_type() {
                Ok(kind) => kind,
                Err(e) => {
                    self.reject(display(&path), Reason::Unreadable(e.to_string()))?;
                    continue;
                }
            };
            if kind.is_symlink() {
                let target = fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                self.reject(
                    display(&path),
                    Reason::Link(format!(
                        "symbolic link to {target} (links are not followed)"
                    )),
                )?;
            } else if kind.is_dir() {
                self.walk_dir(&path, &child_relative)?;
            } else if kind.is_file() {
                self.file(&path, &child_relative, false, Some(folder.clone()))?;
            } else {
                self.reject(display(&path), Reason::Special(special_kind(&kind)))?;
            }
        }
        Ok(())
    }

    /// A regular file: an archive to stream through, or a candidate.
    fn file(
        &self,
        path: &Path,
        relative: &str,
        is_root: bool,
        folder: Option<String>,
    ) -> Result<(), SourceError> {
        let shown = display(path);
        let size = match fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) => {
                return self.reject(shown, Reason::Unreadable(e.to_string()));
            }
        };
        if self.done.contains(&shown) {
            self.credit(size);
            return self.send(Event::AlreadyDone { path: shown });
        }
        let mut head = Vec::with_capacity(512);
        let sniffed = File::open(path)
            .and_then(|f| f.take(512).read_to_end(&mut head))
            .map(|_| sniff(&head));
        let sniffed = match sniffed {
            Ok(s) => s,
            Err(e) => {
                self.credit(size);
                return self.reject(shown, Reason::Unreadable(e.to_string()));
            }
        };
        // Entries of an archive named on the command line are relative to
        // the archive; inside a folder, to the folder.
        let base = if is_root { "" } else { relative };
        let archive = archive::Archive {
            path,
            shown: &shown,
            relative_base: base,
            folder: folder.as_deref(),
            size,
        };
        match sniffed {
            Sniffed::Zip => archive::read_zip(self, &archive),
            Sniffed::Gzip => archive::read_tar(self, &archive, true),
            Sniffed::Tar => archive::read_tar(self, &archive, false),
            Sniffed::Other => {
                let reason = if size == 0 {
                    Some(Reason::Empty)
                } else if size > self.limits.max_file_bytes {
                    Some(Reason::TooLarge {
                        size,
                        limit: self.limits.max_file_bytes,
                    })
                } else {
                    None
                };
                if let Some(reason) = reason {
                    self.credit(size);
                    return self.reject(shown, reason);
                }
                self.send(Event::Entry(Entry {
                    path: shown,
                    relative: relative.to_string(),
                    folder,
                    size,
                    payload: Payload::Disk(path.to_path_buf()),
                    credit: size,
                }))
            }
        }
    }

    /// Reads one archive entry of (declared) `expected` bytes into memory
    /// or a temporary file, hashing it on the way. Returns the payload and
    /// its actual size, or why it was refused.
    pub(crate) fn read_entry(
        &self,
        reader: &mut dyn Read,
        expected: u64,
    ) -> Result<Result<(Payload, u64), Reason>, SourceError> {
        let temp_error = |source| SourceError::Temp {
            dir: display(self.temp_dir),
            source,
        };
        enum Sink {
            Memory(Vec<u8>),
            File(NamedTempFile),
        }
        let mut sink = if expected > self.limits.memory_entry_bytes {
            Sink::File(NamedTempFile::new_in(self.temp_dir).map_err(temp_error)?)
        } else {
            // `expected` is at most the in-memory limit here.
            Sink::Memory(Vec::with_capacity(usize::try_from(expected).unwrap_or(0)))
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Ok(Err(Reason::Unreadable(format!(
                        "reading the entry failed after {total} bytes: {e}"
                    ))));
                }
            };
            total += n as u64;
            if total > self.limits.max_file_bytes {
                return Ok(Err(Reason::TooLarge {
                    size: total,
                    limit: self.limits.max_file_bytes,
                }));
            }
            if total > expected {
                return Ok(Err(Reason::Unreadable(format!(
                    "the entry holds more than the {expected} bytes its header declares"
                ))));
            }
            let chunk = &buf[..n];
            hasher.update(chunk);
            match &mut sink {
                Sink::Memory(v) => v.extend_from_slice(chunk),
                Sink::File(f) => f.write_all(chunk).map_err(temp_error)?,
            }
        }
        if total == 0 {
            return Ok(Err(Reason::Empty));
        }
        let sha256 = hex::encode(hasher.finalize());
        let payload = match sink {
            Sink::Memory(v) => Payload::Memory {
                bytes: Bytes::from(v),
                sha256,
            },
            Sink::File(mut f) => {
                f.flush().map_err(temp_error)?;
                Payload::Spilled { file: f, sha256 }
            }
        };
        Ok(Ok((payload, total)))
    }
}

fn special_kind(kind: &fs::FileType) -> String {
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    };
    format!("{what} (only regular files are read)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_recognised_by_content() {
        assert_eq!(sniff(b"PK\x03\x04rest"), Sniffed::Zip);
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Sniffed::Gzip);
        let mut tar = vec![0u8; 512];
        tar[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(sniff(&tar), Sniffed::Tar);
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), Sniffed::Other);
        assert_eq!(sniff(b""), Sniffed::Other);
    }

    #[test]
    fn budget_is_the_smaller_of_ratio_and_cap() {
        let l = Limits {
            max_file_bytes: 10,
            max_expansion_ratio: 100,
            max_archive_bytes: None,
            memory_entry_bytes: 1,
        };
        assert_eq!(l.expansion_budget(1000), 100_000);
        let capped = Limits {
            max_archive_bytes: Some(5000),
            ..l
        };
        assert_eq!(capped.expansion_budget(1000), 5000);
        assert_eq!(l.expansion_budget(u64::MAX), u64::MAX);
    }
}
