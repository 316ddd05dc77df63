//! Synthetic recordings for tests: deterministic, owned by us, and different
//! enough per "species" that a working classifier must tell them apart.

pub use birdsong_audio::wav::{pcm16_mono_header as wav_header, pcm16_samples as pcm16};

/// A mono 16-bit PCM WAV file of integer samples.
pub fn wav_i16(samples: impl IntoIterator<Item = i16>, sample_rate: u32) -> Vec<u8> {
    let data: Vec<u8> = samples.into_iter().flat_map(i16::to_le_bytes).collect();
    let mut out = wav_header(sample_rate, data.len() as u32);
    out.extend_from_slice(&data);
    out
}

pub use birdsong_audio::wav::pcm16_mono as wav_pcm16;

/// A tiny deterministic PRNG (xorshift), so tests need no extra crates.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// A call of synthetic species `species` (0, 1, 2, …): repeated notes whose
/// pitch, sweep and rhythm depend on the species, over faint noise. `seed`
/// varies the noise and timing so that recordings of one species differ.
pub fn synthetic_call(species: usize, seconds: f32, sample_rate: u32, seed: u64) -> Vec<f32> {
    let n = (seconds * sample_rate as f32) as usize;
    let mut noise = Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let base = 1500.0 + 1400.0 * species as f32; // Hz
    let sweep = [800.0, -600.0, 0.0, 1500.0][species % 4];
    let note = [0.12, 0.3, 0.06, 0.2][species % 4]; // seconds
    let period = note * [2.0, 1.6, 3.0, 2.4][species % 4];
    let offset = (seed % 7) as f32 * 0.013;
    let sr = sample_rate as f32;
    let mut phase = 0.0f32;
    (0..n)
        .map(|i| {
            let t = i as f32 / sr;
            let in_period = (t + offset) % period;
            let tone = if in_period < note {
                let frac = in_period / note;
                let freq = base + sweep * frac;
                phase += std::f32::consts::TAU * freq / sr;
                let envelope = (std::f32::consts::PI * frac).sin();
                0.6 * envelope * (phase.sin() + 0.3 * (2.0 * phase).sin())
            } else {
                0.0
            };
            tone + 0.02 * noise.next()
        })
        .collect()
}

/// A WAV file of [`synthetic_call`] at 22 050 Hz.
pub fn synthetic_wav(species: usize, seconds: f32, seed: u64) -> Vec<u8> {
    wav_pcm16(&synthetic_call(species, seconds, 22_050, seed), 22_050)
}

/// A RIFF chunk: id, little-endian size, payload, and the pad byte an odd
/// size needs.
fn riff_chunk(id: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = id.to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// `wav` with `chunk` inserted at `at`, the RIFF size updated.
fn insert_chunk(wav: &[u8], at: usize, chunk: &[u8]) -> Vec<u8> {
    let mut out = wav[..at].to_vec();
    out.extend_from_slice(chunk);
    out.extend_from_slice(&wav[at..]);
    let riff_size = (out.len() - 8) as u32;
    out[4..8].copy_from_slice(&riff_size.to_le_bytes());
    out
}

/// An AudioMoth recording: `wav` (as [`wav_i16`] makes it) with the
/// `LIST`/`INFO` chunk AudioMoth firmware writes between `fmt ` and `data`,
/// holding the comment (`Recorded at 05:30:00 01/05/2024 (UTC+1) by AudioMoth
/// …`) and the artist (`AudioMoth <serial>`) in NUL-padded fields.
pub fn with_audiomoth_header(wav: &[u8], comment: &str, artist: &str) -> Vec<u8> {
    let field = |id: &[u8; 4], text: &str, width: usize| {
        let mut bytes = text.as_bytes().to_vec();
        bytes.resize(width.max(bytes.len() + 1), 0);
        riff_chunk(id, &bytes)
    };
    let mut list = b"INFO".to_vec();
    list.extend_from_slice(&field(b"ICMT", comment, 384));
    list.extend_from_slice(&field(b"IART", artist, 32));
    // After "RIFF", size, "WAVE" and the 24-byte fmt chunk.
    insert_chunk(wav, 36, &riff_chunk(b"LIST", &list))
}

/// A GUANO recording: `wav` with a `guan` chunk holding `guano` (text
/// starting `GUANO|Version:1.0`) after the samples, where Song Meters and
/// most bat detectors put it.
pub fn with_guano(wav: &[u8], guano: &str) -> Vec<u8> {
    insert_chunk(wav, wav.len(), &riff_chunk(b"guan", guano.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn wav_header_is_consistent() {
        let wav = super::synthetic_wav(1, 1.0, 3);
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(wav.len(), 44 + 22_050 * 2);
        let riff = u32::from_le_bytes([wav[4], wav[5], wav[6], wav[7]]);
        assert_eq!(riff as usize, wav.len() - 8);
    }

    #[test]
    fn species_differ_and_seeds_vary() {
        let a = super::synthetic_call(0, 0.5, 22_050, 1);
        let b = super::synthetic_call(1, 0.5, 22_050, 1);
        let c = super::synthetic_call(0, 0.5, 22_050, 2);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|s| s.abs() <= 1.0));
    }
}
