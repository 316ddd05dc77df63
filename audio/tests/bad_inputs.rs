//! A corpus of bad and unusual inputs: each gives the right error or the
//! right windows, never a panic. Everything is generated on the fly.

mod common;

use std::io::Cursor;

use birdsong_audio::{
    AudioError, FEATURE_COUNT, WindowConfig, WindowStream, analyze_bytes, analyze_reader, probe,
    probe_reader,
};

fn cfg() -> WindowConfig {
    WindowConfig::default()
}

/// A WAV header with arbitrary (possibly lying) fields, then `data`.
fn raw_wav(
    rate: u32,
    channels: u16,
    bits: u16,
    data_len: u32,
    riff_len: u32,
    data: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&riff_len.to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    let block = u32::from(channels) * u32::from(bits / 8);
    v.extend_from_slice(&rate.wrapping_mul(block).to_le_bytes());
    v.extend_from_slice(&(block as u16).to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    v.extend_from_slice(data);
    v
}

fn pcm16(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| ((s * 32767.0) as i16).to_le_bytes())
        .collect()
}

fn spans(a: &birdsong_audio::Analysis) -> Vec<(f64, f64)> {
    a.windows
        .iter()
        .map(|w| {
            (
                (w.start_s * 1e3).round() / 1e3,
                (w.end_s * 1e3).round() / 1e3,
            )
        })
        .collect()
}

#[test]
fn zero_bytes_is_not_audio() {
    let e = analyze_bytes(Vec::new(), &cfg()).unwrap_err();
    assert!(matches!(e, AudioError::NotAudio), "{e:?}");
    assert!(e.is_permanent());
}

#[test]
fn random_bytes_are_not_audio() {
    // Several seeds: random data can contain MP3 sync words.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..8 {
        let bytes: Vec<u8> = (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        match analyze_bytes(bytes, &cfg()) {
            Err(AudioError::NotAudio | AudioError::Corrupt(_) | AudioError::TooShort { .. }) => {}
            other => panic!("random bytes gave {other:?}"),
        }
    }
}

#[test]
fn text_file_named_wav_is_not_audio() {
    let dir = std::env::temp_dir().join(format!("bs-audio-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notes.wav");
    std::fs::write(
        &path,
        "field notes: cardinal at 6:40, two wrens\n".repeat(50),
    )
    .unwrap();
    let e = probe(&path).unwrap_err();
    assert!(matches!(e, AudioError::NotAudio), "{e:?}");
    assert_eq!(
        e.to_string(),
        "not an audio file (no known audio format recognised in the content)"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_file_is_an_io_error_worth_retrying() {
    let e = probe(std::path::Path::new("/nonexistent/birdsong/x.wav")).unwrap_err();
    assert!(matches!(e, AudioError::Io(_)), "{e:?}");
    assert!(!e.is_permanent());
}

#[test]
fn truncated_mp3_reports_where() {
    let mp3 = std::fs::read(common::fixtures_dir().join("r44_stereo.mp3")).unwrap();
    let cut = mp3[..mp3.len() / 2 + 77].to_vec();
    match analyze_bytes(cut, &cfg()) {
        Err(AudioError::Truncated { at_s, .. }) => {
            assert!((2.0..4.0).contains(&at_s), "truncated at {at_s}");
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    let e = analyze_bytes(mp3[..mp3.len() / 3].to_vec(), &cfg()).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn wav_announcing_more_data_than_present_is_truncated() {
    let data = pcm16(&common::chirp(3.0, 22_050));
    let wav = raw_wav(22_050, 1, 16, 10 * 22_050 * 2, 36 + 10 * 22_050 * 2, &data);
    match analyze_bytes(wav, &cfg()) {
        Err(AudioError::Truncated { at_s, .. }) => assert!((at_s - 3.0).abs() < 0.01, "{at_s}"),
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn wav_announcing_less_data_reads_what_it_announces() {
    let data = pcm16(&common::chirp(3.0, 22_050));
    let wav = raw_wav(22_050, 1, 16, 22_050 * 2, 36 + 22_050 * 2, &data);
    let a = analyze_bytes(wav, &cfg()).unwrap();
    assert_eq!(spans(&a), vec![(0.0, 1.0)]);
    assert!((a.info.duration_s - 1.0).abs() < 1e-9);
}

#[test]
fn streaming_wav_with_unknown_length_reads_to_the_end() {
    let data = pcm16(&common::chirp(7.0, 22_050));
    let wav = raw_wav(22_050, 1, 16, u32::MAX, u32::MAX, &data);
    let a = analyze_bytes(wav, &cfg()).unwrap();
    assert_eq!(spans(&a), vec![(0.0, 5.0), (5.0, 7.0)]);
}

#[test]
fn wav_with_riff_size_smaller_than_its_chunks_is_corrupt() {
    let data = pcm16(&common::chirp(2.0, 22_050));
    let wav = raw_wav(22_050, 1, 16, data.len() as u32, 12, &data);
    match analyze_bytes(wav, &cfg()) {
        Err(AudioError::Corrupt(_)) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn wav_with_odd_trailing_byte_still_decodes() {
    let mut data = pcm16(&common::chirp(2.0, 22_050));
    data.push(7);
    let wav = raw_wav(
        22_050,
        1,
        16,
        data.len() as u32,
        36 + data.len() as u32,
        &data,
    );
    let a = analyze_bytes(wav, &cfg()).unwrap();
    assert_eq!(spans(&a), vec![(0.0, 2.0)]);
}

#[test]
fn zero_and_one_hertz_are_invalid_sample_rates() {
    for rate in [0u32, 1] {
        let data = vec![0u8; 2000];
        let wav = raw_wav(rate, 1, 16, 2000, 2036, &data);
        match analyze_bytes(wav, &cfg()) {
            Err(AudioError::InvalidSampleRate(r)) => assert_eq!(r, rate),
            other => panic!("{rate} Hz gave {other:?}"),
        }
    }
}

#[test]
fn zero_channels_is_reported() {
    let wav = raw_wav(22_050, 0, 16, 1000, 1036, &[0u8; 1000]);
    let e = analyze_bytes(wav, &cfg()).unwrap_err();
    assert!(matches!(e, AudioError::ZeroChannels), "{e:?}");
    assert_eq!(e.to_string(), "the audio declares zero channels");
}

#[test]
fn absurd_channel_count_is_refused_before_parsing() {
    // Found by the fuzz target: 65 535 channels overflowed symphonia's
    // 16-bit block-align computation (a panic in debug builds).
    let wav = raw_wav(22_050, u16::MAX, 16, 1000, 1036, &[0u8; 1000]);
    let e = analyze_bytes(wav, &cfg()).unwrap_err();
    assert!(matches!(e, AudioError::TooManyChannels(65_535)), "{e:?}");
    let wav = raw_wav(22_050, 65, 16, 1000, 1036, &[0u8; 1000]);
    assert!(matches!(
        analyze_bytes(wav, &cfg()),
        Err(AudioError::TooManyChannels(65))
    ));
    // Found by the fuzz target later: the same header behind 17 bytes of an
    // MP3 frame header, where symphonia's probe still finds it.
    let mut hidden = vec![
        0xff, 0xf3, 0x80, 0xc4, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'X', b'i', b'n', b'g',
    ];
    hidden.extend(raw_wav(22_050, 59_393, 16, 1000, 1036, &[0u8; 1000]));
    let e = analyze_bytes(hidden, &cfg()).unwrap_err();
    assert!(matches!(e, AudioError::TooManyChannels(59_393)), "{e:?}");
}

#[test]
fn header_only_wav_is_too_short() {
    let wav = raw_wav(22_050, 1, 16, 0, 36, &[]);
    let e = analyze_bytes(wav, &cfg()).unwrap_err();
    assert!(matches!(e, AudioError::TooShort { .. }), "{e:?}");
}

#[test]
fn eight_channels_are_downmixed() {
    // Channel c carries the chirp scaled by (c + 1) / 8: the mean is the
    // chirp scaled by 4.5 / 8, so features match a mono file of that mix.
    let mono = common::chirp(3.0, 44_100);
    let mut inter = Vec::with_capacity(mono.len() * 8);
    for &s in &mono {
        for c in 0..8 {
            inter.push(s * (c as f32 + 1.0) / 8.0);
        }
    }
    let eight = common::wav_bytes(&inter, 44_100, 8, true);
    let mix: Vec<f32> = mono.iter().map(|s| s * 4.5 / 8.0).collect();
    let one = common::wav_bytes(&mix, 44_100, 1, true);
    let a8 = analyze_bytes(eight, &cfg()).unwrap();
    let a1 = analyze_bytes(one, &cfg()).unwrap();
    assert_eq!(a8.info.channels, 8);
    assert_eq!(spans(&a8), vec![(0.0, 3.0)]);
    for i in 0..FEATURE_COUNT {
        let (x, y) = (a8.windows[0].features[i], a1.windows[0].features[i]);
        assert!(
            (x - y).abs() <= 1e-4 * y.abs().max(1.0),
            "feature {i}: {x} vs {y}"
        );
    }
}

#[test]
fn ultrasonic_384khz_is_resampled() {
    // A 3 kHz tone at 384 kHz: after resampling, the spectral centroid of
    // a pure tone sits at the tone.
    let rate = 384_000;
    let n = 3 * rate as usize;
    let tone: Vec<f32> = (0..n)
        .map(|i| {
            (0.5 * (2.0 * std::f64::consts::PI * 3000.0 * i as f64 / f64::from(rate)).sin()) as f32
        })
        .collect();
    let a = analyze_bytes(common::wav_bytes(&tone, rate, 1, false), &cfg()).unwrap();
    assert_eq!(a.info.sample_rate, rate);
    assert_eq!(spans(&a), vec![(0.0, 3.0)]);
    let centroid = a.windows[0].features[80];
    assert!((centroid - 3000.0).abs() < 60.0, "centroid {centroid}");
}

#[test]
fn wav_named_mp3_is_detected_by_content() {
    let dir = std::env::temp_dir().join(format!("bs-audio-named-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("recording.mp3");
    std::fs::write(
        &path,
        common::wav_bytes(&common::chirp(2.0, 22_050), 22_050, 1, false),
    )
    .unwrap();
    let info = probe(&path).unwrap();
    assert_eq!(info.format, "wav");
    assert_eq!(info.codec, "pcm_s16le");
    assert!((info.duration_s - 2.0).abs() < 1e-9);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn non_finite_float_samples_fail_that_file_cleanly() {
    let mut s = common::chirp(2.0, 22_050);
    s[1000] = f32::NAN;
    s[2000] = f32::INFINITY;
    let e = analyze_bytes(common::wav_bytes(&s, 22_050, 1, true), &cfg()).unwrap_err();
    assert!(matches!(e, AudioError::Corrupt(_)), "{e:?}");
}

#[test]
fn two_hour_recording_streams_in_bounded_memory() {
    // 2 h at 22.05 kHz mono, synthesised while it is read (never in memory).
    let seconds = 2.0 * 3600.0;
    let wav = common::SyntheticWav::new(seconds, 22_050, 1);
    let info = probe_reader(common::SyntheticWav::new(seconds, 22_050, 1)).unwrap();
    assert!((info.duration_s - seconds).abs() < 1e-6);
    let mut stream = WindowStream::from_reader(wav, &cfg()).unwrap();
    let mut n = 0usize;
    let mut max_buffered = 0usize;
    let mut last_end = 0.0;
    while let Some(w) = stream.next_window().unwrap() {
        assert!((w.start_s - 5.0 * n as f64).abs() < 1e-9);
        assert!(w.features.iter().all(|v| v.is_finite()));
        last_end = w.end_s;
        max_buffered = max_buffered.max(stream.buffered_samples());
        n += 1;
    }
    assert_eq!(n, 1440);
    assert!((last_end - seconds).abs() < 1e-9);
    // One window (110 250 samples) plus at most one decoded chunk.
    assert!(max_buffered < 110_250 + 16_384, "buffered {max_buffered}");
    assert!((stream.final_info().duration_s - seconds).abs() < 1e-6);
}

#[test]
fn reader_and_bytes_agree() {
    let bytes = common::wav_bytes(&common::chirp(6.5, 48_000), 48_000, 1, false);
    let a = analyze_bytes(bytes.clone(), &cfg()).unwrap();
    let b = analyze_reader(Cursor::new(bytes), &cfg()).unwrap();
    assert_eq!(spans(&a), vec![(0.0, 5.0), (5.0, 6.5)]);
    for (x, y) in a.windows.iter().zip(&b.windows) {
        assert_eq!(x.features, y.features);
    }
}

#[test]
fn fuzz_regressions_do_not_panic() {
    // Inputs that once crashed the fuzz target, kept as files.
    let dir = common::fixtures_dir().join("fuzz");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let _ = probe_reader(Cursor::new(bytes.clone()));
        let _ = analyze_bytes(bytes.clone(), &cfg());
        let _ = birdsong_audio::clip_features_bytes(bytes);
        n += 1;
    }
    assert!(n >= 1);
}

#[test]
fn pcm_8_and_32_bit_integer_wavs_decode() {
    let signal = common::chirp(2.0, 22_050);
    let float = analyze_bytes(common::wav_bytes(&signal, 22_050, 1, true), &cfg()).unwrap();
    // 32-bit signed integer PCM: as precise as float for this signal.
    let data32: Vec<u8> = signal
        .iter()
        .flat_map(|s| ((f64::from(*s) * 2_147_483_647.0) as i32).to_le_bytes())
        .collect();
    let len = data32.len() as u32;
    let a32 = analyze_bytes(raw_wav(22_050, 1, 32, len, 36 + len, &data32), &cfg()).unwrap();
    assert_eq!(a32.info.codec, "pcm_s32le");
    for (x, y) in a32.windows[0]
        .features
        .iter()
        .zip(&float.windows[0].features)
    {
        assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{x} vs {y}");
    }
    // 8-bit unsigned PCM: coarse (48 dB of range), but the same sound.
    let data8: Vec<u8> = signal
        .iter()
        .map(|s| (f64::from(*s) * 127.0 + 128.0).round() as u8)
        .collect();
    let len = data8.len() as u32;
    let a8 = analyze_bytes(raw_wav(22_050, 1, 8, len, 36 + len, &data8), &cfg()).unwrap();
    assert_eq!(a8.info.codec, "pcm_u8");
    assert!((a8.info.duration_s - 2.0).abs() < 1e-9);
    let (c8, cf) = (a8.windows[0].features[80], float.windows[0].features[80]);
    assert!((c8 - cf).abs() < 0.1 * cf, "centroid {c8} vs {cf}");
}
