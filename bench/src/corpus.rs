//! The recordings a benchmark runs on.
//!
//! Two workloads, as the pipeline issue names them: many short MP3 clips
//! (the shape of a bulk archive of recorder snippets) and the real xc3
//! recordings (long, 32-48 kHz, stereo and mono). The clips are made from
//! the shared 10-second reference clips; each copy gets a distinct ID3v2
//! tag in front of the same audio so that content addressing sees N
//! different recordings, not one recording N times.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// A set of recordings on disk.
pub struct Corpus {
    pub name: String,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    /// Kept alive while the corpus is in use.
    _temp: Option<tempfile::TempDir>,
}

pub fn audio_files(dir: &Path, ext: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case(ext))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// An ID3v2.3 tag holding one user text frame; the decoder skips it.
fn id3_tag(text: &str) -> Vec<u8> {
    let mut frame_body = vec![0u8]; // ISO-8859-1
    frame_body.extend_from_slice(b"birdsong-bench\0");
    frame_body.extend_from_slice(text.as_bytes());
    let mut frames = b"TXXX".to_vec();
    frames.extend_from_slice(&(frame_body.len() as u32).to_be_bytes());
    frames.extend_from_slice(&[0, 0]);
    frames.extend_from_slice(&frame_body);
    let size = frames.len() as u32;
    let syncsafe = [
        ((size >> 21) & 0x7f) as u8,
        ((size >> 14) & 0x7f) as u8,
        ((size >> 7) & 0x7f) as u8,
        (size & 0x7f) as u8,
    ];
    let mut tag = b"ID3\x03\x00\x00".to_vec();
    tag.extend_from_slice(&syncsafe);
    tag.extend_from_slice(&frames);
    tag
}

/// `count` distinct 10-second MP3 clips made from `shared/reference/clips`.
pub fn clips(shared: &Path, count: usize) -> anyhow::Result<Corpus> {
    let sources = audio_files(&shared.join("reference/clips"), "mp3")?;
    if sources.is_empty() {
        bail!(
            "no MP3 clips under {}",
            shared.join("reference/clips").display()
        );
    }
    let bodies = sources
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let temp = tempfile::tempdir().context("creating the clip folder")?;
    let mut files = Vec::with_capacity(count);
    for i in 0..count {
        let mut bytes = id3_tag(&format!("copy {i}"));
        bytes.extend_from_slice(&bodies[i % bodies.len()]);
        let path = temp.path().join(format!("clip-{i:05}.mp3"));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }
    Ok(Corpus {
        name: format!("{count} MP3 clips of 10 s"),
        dir: temp.path().to_path_buf(),
        files,
        _temp: Some(temp),
    })
}

/// The real recordings of `shared/data/xc3`; with `copies` above 1, that
/// many distinct copies of each (an ID3 tag in front, as for the clips), so
/// that a run on many workers is long enough for its tail (the longest
/// recording, 197 s) not to dominate while keeping xc3's mix of lengths.
pub fn xc3(shared: &Path, copies: usize) -> anyhow::Result<Corpus> {
    let dir = shared.join("data/xc3");
    let files = audio_files(&dir, "mp3")?;
    if files.is_empty() {
        bail!("no recordings under {}", dir.display());
    }
    if copies <= 1 {
        return Ok(Corpus {
            name: format!("xc3 ({} MP3 recordings)", files.len()),
            dir,
            files,
            _temp: None,
        });
    }
    let temp = tempfile::tempdir().context("creating the xc3 copies folder")?;
    let mut copied = Vec::with_capacity(files.len() * copies);
    for file in &files {
        let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let relative = file.strip_prefix(&dir).unwrap_or(file.as_path());
        for c in 0..copies {
            let path = temp.path().join(format!("copy-{c:03}")).join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            let mut bytes = id3_tag(&format!("copy {c}"));
            bytes.extend_from_slice(&body);
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
            copied.push(path);
        }
    }
    copied.sort();
    Ok(Corpus {
        name: format!("xc3 × {copies} ({} MP3 recordings)", files.len() * copies),
        dir: temp.path().to_path_buf(),
        files: copied,
        _temp: Some(temp),
    })
}
