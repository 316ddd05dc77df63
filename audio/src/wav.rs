//! Writing 16-bit PCM WAV, the one format every player and every tool
//! reads.
//!
//! The library decodes many formats but writes only this one: the API
//! serves a window's audio as WAV for playback, and tests generate their
//! recordings with it. Long files can be streamed: [`pcm16_mono_header`]
//! takes the data length up front, [`pcm16_samples`] encodes any slice.

/// The 44-byte header of a mono 16-bit PCM WAV file with `data_len` bytes
/// of samples following it.
pub fn pcm16_mono_header(sample_rate: u32, data_len: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(44);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&36u32.saturating_add(data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&sample_rate.saturating_mul(2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out
}

/// Samples in [-1, 1] (clipped beyond) as 16-bit little-endian PCM,
/// truncated toward zero (the bytes of the project's generated test
/// recordings, and so their content hashes, depend on this).
pub fn pcm16_samples(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16).to_le_bytes())
        .collect()
}

/// A whole mono 16-bit PCM WAV file of `samples`. Data beyond the 4 GiB a
/// RIFF size field can express is not representable; callers bound the
/// length (the API serves at most 30 s).
pub fn pcm16_mono(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    let data = pcm16_samples(samples);
    let mut out = pcm16_mono_header(sample_rate, u32::try_from(data.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_decodes_back_to_the_same_samples() {
        let samples: Vec<f32> = (0..2205).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
        let bytes = pcm16_mono(&samples, 22_050);
        assert_eq!(bytes.len(), 44 + 2 * samples.len());
        let mut decoder = crate::decode::Decoder::open(Box::new(std::io::Cursor::new(bytes)))
            .expect("our own WAV opens");
        let info = decoder.info().clone();
        assert_eq!((info.sample_rate, info.channels), (22_050, 1));
        let mut pcm = Vec::new();
        while decoder.next_into(&mut pcm).expect("our own WAV decodes") {}
        assert_eq!(pcm.len(), samples.len());
        for (a, b) in pcm.iter().zip(&samples) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}
