//! Walking a RIFF/WAVE file's chunks by seeking, reading only the small ones
//! that carry metadata.
//!
//! A field recording is often gigabytes of `data` with a few hundred bytes of
//! metadata before or after it (the GUANO spec lets a writer put its chunk at
//! the end, so that it can stream samples first). Reading the whole file to
//! find them would cost as much as decoding it, so the walk reads each chunk
//! header (8 bytes) and seeks past every chunk it does not want. The file is
//! untrusted: sizes are checked against limits before anything is allocated,
//! the number of chunks walked is bounded, and a file that ends early ends the
//! walk instead of failing it when nothing wanted was cut.

use std::io::{self, Read, Seek, SeekFrom};

use super::WavMetadataError;

/// The largest metadata chunk read. GUANO blocks are a few hundred bytes (the
/// Anabat embedding caps them at 64 KiB) and an AudioMoth `LIST` chunk is
/// under 1 KiB; a larger one is skipped rather than loaded.
pub const MAX_METADATA_CHUNK: u32 = 1024 * 1024;

/// At most this many chunks are looked at: real files have a handful, and a
/// crafted file with millions of empty chunks must not keep a worker seeking.
const MAX_CHUNKS: usize = 1024;

/// The metadata chunks of a WAVE file, as raw bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Chunks {
    /// The `guan` chunk's payload (GUANO text).
    pub guano: Option<Vec<u8>>,
    /// The `INFO` sub-chunks of `LIST` chunks: (id, text), in file order.
    pub info: Vec<([u8; 4], Vec<u8>)>,
}

/// Reads the metadata chunks of a RIFF/WAVE stream positioned anywhere;
/// `Ok(None)` when it is not RIFF/WAVE (FLAC, MP3, RF64 …).
pub fn read_chunks<R: Read + Seek>(reader: &mut R) -> Result<Option<Chunks>, WavMetadataError> {
    reader.seek(SeekFrom::Start(0))?;
    let mut header = [0u8; 12];
    if !read_full(reader, &mut header)? || &header[0..4] != b"RIFF" || &header[8..12] != b"WAVE" {
        return Ok(None);
    }
    let mut chunks = Chunks::default();
    let mut position: u64 = 12;
    for _ in 0..MAX_CHUNKS {
        let mut head = [0u8; 8];
        reader.seek(SeekFrom::Start(position))?;
        if !read_full(reader, &mut head)? {
            // End of file (or a partial header after the last chunk, as a
            // recorder that lost power leaves): nothing more to find.
            break;
        }
        let id = [head[0], head[1], head[2], head[3]];
        let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let body = position + 8;
        match &id {
            b"guan" if chunks.guano.is_none() => {
                chunks.guano = read_body(reader, &id, size)?;
            }
            b"LIST" => {
                if let Some(list) = read_body(reader, &id, size)? {
                    parse_list(&list, &mut chunks.info);
                }
            }
            _ => {}
        }
        // Chunks are word-aligned: an odd size is followed by a pad byte.
        position = body + u64::from(size) + u64::from(size % 2);
    }
    Ok(Some(chunks))
}

/// The payload of the chunk whose header was just read, or `None` when it is
/// larger than [`MAX_METADATA_CHUNK`]. A payload cut short by the end of the
/// file is an error: the metadata in it cannot be trusted.
fn read_body<R: Read>(
    reader: &mut R,
    id: &[u8; 4],
    size: u32,
) -> Result<Option<Vec<u8>>, WavMetadataError> {
    if size > MAX_METADATA_CHUNK {
        return Ok(None);
    }
    let mut body = vec![0u8; size as usize];
    if read_full(reader, &mut body)? {
        Ok(Some(body))
    } else {
        Err(WavMetadataError::Truncated {
            chunk: String::from_utf8_lossy(id).into_owned(),
        })
    }
}

/// The sub-chunks of a `LIST` chunk of type `INFO` (other list types, such
/// as `adtl` cue labels, are ignored). A sub-chunk running past the list's
/// end ends the parse: what came before it is kept.
fn parse_list(list: &[u8], info: &mut Vec<([u8; 4], Vec<u8>)>) {
    let Some((kind, mut rest)) = list.split_first_chunk::<4>() else {
        return;
    };
    if kind != b"INFO" {
        return;
    }
    while let Some((head, after)) = rest.split_first_chunk::<8>() {
        let id = [head[0], head[1], head[2], head[3]];
        let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let Some(text) = after.get(..size) else {
            return;
        };
        info.push((id, text.to_vec()));
        let next = size.saturating_add(size % 2);
        rest = after.get(next..).unwrap_or_default();
    }
}

/// Fills `buf`; `Ok(false)` when the stream ends first.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}
