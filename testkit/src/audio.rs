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
