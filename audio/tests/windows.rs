//! Window cutting, the streaming pipeline's consistency with the plan and
//! with direct feature extraction, silence, and the mel spectrogram.

mod common;

use birdsong_audio::window::WindowPlan;
use birdsong_audio::{
    ANALYSIS_SAMPLE_RATE, AudioError, FEATURE_COUNT, FeatureExtractor, MIN_RECORDING_S,
    WindowConfig, WindowStream, analyze_bytes, mel_spectrogram_db,
};

const SR: usize = ANALYSIS_SAMPLE_RATE as usize;

fn secs(spans: &[(usize, usize)]) -> Vec<(f64, f64)> {
    spans
        .iter()
        .map(|&(a, b)| (a as f64 / SR as f64, b as f64 / SR as f64))
        .collect()
}

fn plan(length_s: f64, hop_s: f64, min_last_s: f64) -> WindowPlan {
    WindowConfig {
        length_s,
        hop_s,
        min_last_s,
    }
    .plan()
    .unwrap()
}

#[test]
fn default_windows_are_5s_without_overlap_and_drop_a_short_tail() {
    let p = WindowConfig::default().plan().unwrap();
    let total = |s: f64| (s * SR as f64) as usize;
    assert_eq!(
        secs(&p.spans(total(12.3)).unwrap()),
        vec![(0.0, 5.0), (5.0, 10.0), (10.0, 12.3)]
    );
    // A 0.5 s tail is under min_last_s (1 s): dropped.
    assert_eq!(
        secs(&p.spans(total(10.5)).unwrap()),
        vec![(0.0, 5.0), (5.0, 10.0)]
    );
    assert_eq!(
        secs(&p.spans(total(11.0)).unwrap()),
        vec![(0.0, 5.0), (5.0, 10.0), (10.0, 11.0)]
    );
    // Shorter than one window: one window, even under min_last_s.
    assert_eq!(secs(&p.spans(total(0.5)).unwrap()), vec![(0.0, 0.5)]);
    assert_eq!(secs(&p.spans(total(5.0)).unwrap()), vec![(0.0, 5.0)]);
}

#[test]
fn shorter_than_the_minimum_is_too_short() {
    let p = WindowConfig::default().plan().unwrap();
    let n = (MIN_RECORDING_S * SR as f64) as usize - 1;
    assert!(matches!(p.spans(n), Err(AudioError::TooShort { .. })));
    assert!(matches!(p.spans(0), Err(AudioError::TooShort { .. })));
    assert_eq!(p.spans(n + 1).unwrap().len(), 1);
}

#[test]
fn overlapping_windows_stop_once_the_end_is_covered() {
    let p = plan(5.0, 2.5, 1.0);
    let spans = secs(&p.spans(12 * SR).unwrap());
    // [10, 12] would only repeat audio that [7.5, 12] already covers.
    assert_eq!(
        spans,
        vec![(0.0, 5.0), (2.5, 7.5), (5.0, 10.0), (7.5, 12.0)]
    );
}

#[test]
fn hop_longer_than_window_leaves_gaps() {
    let p = plan(2.0, 5.0, 1.0);
    assert_eq!(
        secs(&p.spans(12 * SR).unwrap()),
        vec![(0.0, 2.0), (5.0, 7.0), (10.0, 12.0)]
    );
}

#[test]
fn invalid_configs_are_rejected() {
    for (l, h, m) in [
        (0.0, 5.0, 1.0),
        (0.01, 5.0, 1.0),
        (5.0, 0.0, 1.0),
        (5.0, 0.001, 1.0),
        (f64::NAN, 5.0, 1.0),
        (5.0, 5.0, -1.0),
        (1e6, 5.0, 1.0),
    ] {
        let e = WindowConfig {
            length_s: l,
            hop_s: h,
            min_last_s: m,
        }
        .plan()
        .unwrap_err();
        assert!(
            matches!(e, AudioError::InvalidConfig(_)),
            "{l} {h} {m}: {e:?}"
        );
        let bytes = common::wav_bytes(&common::chirp(1.0, 22_050), 22_050, 1, false);
        let cfg = WindowConfig {
            length_s: l,
            hop_s: h,
            min_last_s: m,
        };
        assert!(matches!(
            analyze_bytes(bytes, &cfg),
            Err(AudioError::InvalidConfig(_))
        ));
    }
}

#[test]
fn streaming_produces_exactly_the_planned_windows() {
    for (seconds, cfg) in [
        (12.3, WindowConfig::default()),
        (10.4, WindowConfig::default()),
        (0.7, WindowConfig::default()),
        (
            9.0,
            WindowConfig {
                length_s: 3.0,
                hop_s: 1.0,
                min_last_s: 0.5,
            },
        ),
        (
            9.2,
            WindowConfig {
                length_s: 1.0,
                hop_s: 2.5,
                min_last_s: 0.5,
            },
        ),
    ] {
        let pcm = common::chirp(seconds, 22_050);
        let expected = cfg.plan().unwrap().spans(pcm.len()).unwrap();
        let a = analyze_bytes(common::wav_bytes(&pcm, 22_050, 1, true), &cfg).unwrap();
        let got: Vec<(usize, usize)> = a
            .windows
            .iter()
            .map(|w| {
                (
                    (w.start_s * SR as f64).round() as usize,
                    (w.end_s * SR as f64).round() as usize,
                )
            })
            .collect();
        assert_eq!(got, expected, "{seconds} s with {cfg:?}");
    }
}

#[test]
fn window_features_are_the_features_of_the_window_samples() {
    // A float WAV at the analysis rate: samples reach the extractor as is.
    let pcm = common::chirp(11.0, 22_050);
    let a = analyze_bytes(
        common::wav_bytes(&pcm, 22_050, 1, true),
        &WindowConfig::default(),
    )
    .unwrap();
    let mut ex = FeatureExtractor::new();
    assert_eq!(a.windows.len(), 3);
    for w in &a.windows {
        let s = (w.start_s * SR as f64).round() as usize;
        let e = (w.end_s * SR as f64).round() as usize;
        assert_eq!(w.features, ex.features(&pcm[s..e]).unwrap());
    }
}

#[test]
fn silent_window_gets_librosas_silence_vector() {
    // 5 s call, 5 s of digital silence, 5 s call. librosa's trim keeps an
    // all-zero signal whole (levels are relative to its own maximum), and
    // its features are then well defined: mel power floored at 1e-10
    // (-100 dB) gives mfcc0 = -100 * sqrt(128) and every other value 0.
    let mut pcm = common::chirp(5.0, 22_050);
    pcm.extend(std::iter::repeat_n(0.0, 5 * SR));
    pcm.extend(common::chirp(5.0, 22_050));
    let a = analyze_bytes(
        common::wav_bytes(&pcm, 22_050, 1, true),
        &WindowConfig::default(),
    )
    .unwrap();
    assert_eq!(a.windows.len(), 3);
    let silent = &a.windows[1].features;
    let mfcc0 = -100.0 * 128f32.sqrt();
    // float32 accumulation: librosa itself gives -1131.37097 (exact -1131.37085).
    assert!((silent[0] - mfcc0).abs() < 1e-2, "{}", silent[0]);
    for (i, v) in silent.iter().enumerate().skip(1) {
        if i != 40 && i != 60 {
            assert!(v.abs() < 1e-4, "feature {i} = {v}");
        }
    }
    assert!((silent[40] - mfcc0).abs() < 1e-2 && (silent[60] - mfcc0).abs() < 1e-2);
    assert!(a.windows[0].features[0] > mfcc0 + 100.0);
}

#[test]
fn stream_iterator_stops_after_an_error() {
    let mp3 = std::fs::read(common::fixtures_dir().join("r44_stereo.mp3")).unwrap();
    let cut = mp3[..mp3.len() * 9 / 10].to_vec();
    let cfg = WindowConfig {
        length_s: 1.0,
        hop_s: 1.0,
        min_last_s: 0.5,
    };
    let items: Vec<_> = WindowStream::from_bytes(cut, &cfg).unwrap().collect();
    let (ok, err): (Vec<_>, Vec<_>) = items.iter().partition(|r| r.is_ok());
    assert_eq!(err.len(), 1, "{items:?}");
    assert!(items.last().unwrap().is_err(), "the error comes last");
    assert!(
        ok.len() >= 4,
        "windows before the break are delivered: {}",
        ok.len()
    );
}

#[test]
fn mel_spectrogram_has_128_bands_in_db_below_max() {
    let pcm = common::chirp(5.0, 22_050);
    let m = mel_spectrogram_db(&pcm);
    assert_eq!(m.shape(), &[128, 1 + pcm.len() / 512]);
    let max = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = m.iter().copied().fold(f32::INFINITY, f32::min);
    assert_eq!(max, 0.0);
    assert!(min >= -80.0);
    // The chirp sweeps 500 Hz-3.5 kHz (bands ~18-86), so the maximum is
    // there; the top band (~10 kHz) holds only the -50 dB noise.
    let band_max = |b: usize| m.row(b).iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let loudest = (15..90).map(band_max).fold(f32::NEG_INFINITY, f32::max);
    assert_eq!(loudest, 0.0);
    assert!(band_max(127) < -30.0, "{}", band_max(127));
    // The streaming form gives the same matrix.
    let bytes = common::wav_bytes(&pcm, 22_050, 1, true);
    let mut s = WindowStream::from_bytes(bytes, &WindowConfig::default()).unwrap();
    let (start, end, m2) = s.next_mel().unwrap().unwrap();
    assert_eq!((start, end), (0.0, 5.0));
    assert_eq!(m, m2);
}

#[test]
fn feature_vector_has_223_finite_values_and_version() {
    let mut ex = FeatureExtractor::new();
    let v = ex.features(&common::chirp(2.0, 22_050)).unwrap();
    assert_eq!(v.len(), FEATURE_COUNT);
    assert_eq!(FEATURE_COUNT, 223);
    assert!(v.iter().all(|x| x.is_finite()));
    assert!(matches!(ex.features(&[]), Err(AudioError::EmptyAfterTrim)));
    assert_eq!(birdsong_audio::FEATURE_VERSION, "bs-features-2");
    assert_eq!(
        birdsong_audio::PREFIX_FEATURE_VERSIONS,
        &[("bs-features-1", birdsong_audio::LIBROSA_FEATURE_COUNT)]
    );
}
