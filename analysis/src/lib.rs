//! Recordings into the window vectors a model reads, for each backbone.
//!
//! A model is trained on one [`Backbone`]'s vectors (the audio crate's features in the
//! worker's windows, log-mel patches of 5-s windows for the spectrogram CNN, or BirdNET
//! embeddings of 3-s windows at 48 kHz) and must be fed the same. The worker, the retrainer and the api's direct classification all cut and
//! analyse recordings through one [`Analyzer`], so the windows a model is trained on,
//! the windows stored for it and the windows it classifies cannot drift apart.
//!
//! Where it sits: above the audio, model and birdnet crates, under the roles that
//! analyse recordings (worker, retrainer, api) and the registry, which refuses to
//! serve a model whose backbone this process cannot run.
//!
//! BirdNET is loaded on first use (a few seconds; it is not part of the project and
//! may not be installed), once per process, and shared by every thread.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use birdsong_audio::{AudioError, AudioInfo, WindowConfig, WindowStream};
use birdsong_birdnet::Birdnet;
pub use birdsong_model::Backbone;

/// Largest overlap of BirdNET windows: a 0.1-s hop, the smallest any windowing takes.
pub const MAX_OVERLAP_S: f64 = 2.9;

/// How recordings are cut for each backbone, and where BirdNET is.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Windows of the acoustic backbone; the mel backbone's take their hop (at most
    /// its 5-s length) and shortest final window.
    pub window: WindowConfig,
    /// Overlap of BirdNET's 3-s windows, in seconds (BirdNET-Analyzer's `--overlap`).
    pub birdnet_overlap_s: f64,
    /// The BirdNET install (see `scripts/birdnet/install.sh`).
    pub birdnet_dir: PathBuf,
    /// Windows of one recording BirdNET's network runs on at once. One is the
    /// default: under tract, batches of 2–8 cost 20–30 % more per window here
    /// (`birdsong-bench backbones --birdnet-batch 1,2,4,8`).
    pub birdnet_batch: usize,
}

impl Settings {
    /// The settings every role reads from the environment (`BIRDSONG_WINDOW_*`,
    /// `BIRDSONG_BIRDNET_*`).
    pub fn from_config(config: &birdsong_common::config::WorkerConfig) -> Self {
        Self {
            window: config.window(),
            birdnet_overlap_s: config.birdnet_overlap_seconds,
            birdnet_dir: config
                .birdnet_dir
                .clone()
                .unwrap_or_else(birdsong_birdnet::install::default_dir),
            birdnet_batch: config.birdnet_batch,
        }
    }
}

/// The backbone a process analyses with while no model says otherwise
/// (`BIRDSONG_BACKBONE`, already validated by the configuration).
pub fn default_backbone(config: &birdsong_common::config::WorkerConfig) -> Backbone {
    config.backbone.parse().unwrap_or(Backbone::Acoustic)
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            window: WindowConfig::default(),
            birdnet_overlap_s: 0.0,
            birdnet_dir: birdsong_birdnet::install::default_dir(),
            birdnet_batch: birdsong_common::config::DEFAULT_BIRDNET_BATCH,
        }
    }
}

/// Why a recording could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The recording itself: not audio, truncated, too short… Retrying will not help.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The backbone cannot run here (BirdNET not installed or not loadable): a
    /// deployment problem, not the recording's.
    #[error("the {backbone} backbone is not available: {message}")]
    Unavailable { backbone: Backbone, message: String },
    /// The backbone failed on a recording that decoded.
    #[error("the {backbone} backbone failed: {message}")]
    Failed { backbone: Backbone, message: String },
}

/// A recording analysed for one backbone.
#[derive(Debug, Clone)]
pub struct Analysed {
    /// What the file is; `duration_s` is the decoded duration.
    pub info: AudioInfo,
    /// Each window's start and end, in seconds.
    pub spans: Vec<(f64, f64)>,
    /// Each window's vector (`backbone.vector_len()` values).
    pub vectors: Vec<Vec<f32>>,
}

/// Analyses recordings for any backbone; shared by every task of a process.
pub struct Analyzer {
    settings: Settings,
    /// BirdNET's windows with the configured overlap.
    birdnet_window: WindowConfig,
    birdnet: OnceLock<Arc<Birdnet>>,
    /// Serialises BirdNET's first load (so two tasks do not both spend seconds on it)
    /// and remembers why it failed.
    loading: Mutex<Option<String>>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("settings", &self.settings)
            .field("birdnet_loaded", &self.birdnet.get().is_some())
            .finish()
    }
}

impl Analyzer {
    /// An analyzer; nothing is loaded until a backbone is first used. An overlap
    /// outside BirdNET's range is clamped to it (the configuration refuses one first).
    pub fn new(settings: Settings) -> Self {
        let overlap = settings.birdnet_overlap_s;
        let overlap = if overlap.is_finite() {
            overlap.clamp(0.0, MAX_OVERLAP_S)
        } else {
            0.0
        };
        let birdnet_window = WindowConfig {
            length_s: birdsong_birdnet::WINDOW_SECONDS,
            hop_s: birdsong_birdnet::WINDOW_SECONDS - overlap,
            min_last_s: birdsong_birdnet::recording::MIN_LAST_S,
        };
        Self {
            settings,
            birdnet_window,
            birdnet: OnceLock::new(),
            loading: Mutex::new(None),
        }
    }

    /// The settings it cuts recordings with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The windows `backbone` is fed: the configured acoustic windows, 5-s mel
    /// patches with the configured hop, or BirdNET's 3-s windows with the configured
    /// overlap.
    pub fn windowing(&self, backbone: Backbone) -> WindowConfig {
        match backbone {
            Backbone::Acoustic => self.settings.window.clone(),
            Backbone::Mel => mel_windows(&self.settings.window),
            Backbone::Birdnet => self.birdnet_window.clone(),
        }
    }

    /// Makes sure `backbone` can run, loading BirdNET if it is the one (blocking,
    /// seconds the first time). A failure is remembered: a process whose BirdNET
    /// install is broken does not retry the load for every recording.
    pub fn ensure(&self, backbone: Backbone) -> Result<(), AnalysisError> {
        match backbone {
            Backbone::Acoustic | Backbone::Mel => Ok(()),
            Backbone::Birdnet => self.birdnet().map(|_| ()),
        }
    }

    fn birdnet(&self) -> Result<&Arc<Birdnet>, AnalysisError> {
        if let Some(b) = self.birdnet.get() {
            return Ok(b);
        }
        let mut failed = self
            .loading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(b) = self.birdnet.get() {
            return Ok(b);
        }
        if let Some(message) = failed.as_ref() {
            return Err(AnalysisError::Unavailable {
                backbone: Backbone::Birdnet,
                message: message.clone(),
            });
        }
        match Birdnet::load(&self.settings.birdnet_dir, self.settings.birdnet_batch) {
            Ok(b) => Ok(self.birdnet.get_or_init(|| Arc::new(b))),
            Err(e) => {
                let message = e.to_string();
                *failed = Some(message.clone());
                Err(AnalysisError::Unavailable {
                    backbone: Backbone::Birdnet,
                    message,
                })
            }
        }
    }

    /// BirdNET's species-layer columns for `labels` (each looked up by its alias in
    /// `aliases` when it has one), the anchor of the `anchored` architecture; loads
    /// BirdNET if needed (blocking). Labels BirdNET lacks have no column.
    pub fn birdnet_anchor(
        &self,
        labels: &[String],
        aliases: &std::collections::BTreeMap<String, String>,
    ) -> Result<birdsong_model::Anchor, AnalysisError> {
        let columns = self.birdnet()?.species().columns_for(labels, aliases);
        birdsong_model::Anchor::birdnet(columns).map_err(|e| AnalysisError::Failed {
            backbone: Backbone::Birdnet,
            message: e.to_string(),
        })
    }

    /// Analyses a file (blocking).
    pub fn analyse_file(&self, backbone: Backbone, path: &Path) -> Result<Analysed, AnalysisError> {
        match backbone {
            Backbone::Acoustic => Ok(acoustic(birdsong_audio::analyze_file(
                path,
                &self.settings.window,
            )?)),
            Backbone::Mel => mel(WindowStream::open(path, &self.windowing(backbone))?),
            Backbone::Birdnet => {
                let birdnet = self.birdnet()?;
                embedded(birdnet.embed_file(path, &self.birdnet_window))
            }
        }
    }

    /// Analyses a seekable reader, e.g. bytes in memory (blocking).
    pub fn analyse_reader<R>(
        &self,
        backbone: Backbone,
        reader: R,
    ) -> Result<Analysed, AnalysisError>
    where
        R: Read + Seek + Send + Sync + 'static,
    {
        self.analyse_reader_in(backbone, &self.windowing(backbone), reader)
    }

    /// Analyses a seekable reader cut into `window` instead of the backbone's usual
    /// windows (the retrainer's overlapping training windows). For BirdNET and mel
    /// patches only the hop and the shortest final window are taken from `window`:
    /// their windows are always 3 s and 5 s.
    pub fn analyse_reader_in<R>(
        &self,
        backbone: Backbone,
        window: &WindowConfig,
        reader: R,
    ) -> Result<Analysed, AnalysisError>
    where
        R: Read + Seek + Send + Sync + 'static,
    {
        match backbone {
            Backbone::Acoustic => Ok(acoustic(birdsong_audio::analyze_reader(reader, window)?)),
            Backbone::Mel => mel(WindowStream::from_reader(reader, &mel_windows(window))?),
            Backbone::Birdnet => {
                let birdnet = self.birdnet()?;
                let window = WindowConfig {
                    length_s: birdsong_birdnet::WINDOW_SECONDS,
                    ..window.clone()
                };
                let stream =
                    WindowStream::from_reader_at(reader, &window, birdsong_birdnet::SAMPLE_RATE)?;
                embedded(birdnet.embed_stream(stream))
            }
        }
    }
}

fn acoustic(analysis: birdsong_audio::Analysis) -> Analysed {
    Analysed {
        spans: analysis
            .windows
            .iter()
            .map(|w| (w.start_s, w.end_s))
            .collect(),
        vectors: analysis
            .windows
            .iter()
            .map(|w| w.features.to_vec())
            .collect(),
        info: analysis.info,
    }
}

/// Mel-patch windows with the hop and shortest final window of `window`: always the
/// patch's 5 s long, never further apart (no audio between two patches goes unheard).
fn mel_windows(window: &WindowConfig) -> WindowConfig {
    let length_s = birdsong_model::spectrogram::PATCH_SECONDS;
    WindowConfig {
        length_s,
        hop_s: window.hop_s.min(length_s),
        min_last_s: window.min_last_s,
    }
}

/// Every window's mel patch.
fn mel(stream: WindowStream) -> Result<Analysed, AnalysisError> {
    let windows = birdsong_model::spectrogram::stream_windows(stream)?;
    Ok(Analysed {
        info: windows.info,
        spans: windows.spans,
        vectors: windows.vectors,
    })
}

fn embedded(
    result: Result<birdsong_birdnet::Embedded, birdsong_birdnet::BirdnetError>,
) -> Result<Analysed, AnalysisError> {
    let embedded = result.map_err(|e| match e {
        birdsong_birdnet::BirdnetError::Audio(e) => AnalysisError::Audio(e),
        e => AnalysisError::Failed {
            backbone: Backbone::Birdnet,
            message: e.to_string(),
        },
    })?;
    let (spans, vectors) = embedded.spans_and_vectors();
    Ok(Analysed {
        spans,
        vectors,
        info: embedded.info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(seconds: f64) -> Vec<u8> {
        let rate = 22_050u32;
        let samples: Vec<f32> = (0..(seconds * f64::from(rate)) as usize)
            .map(|i| 0.3 * (i as f32 * 0.2).sin())
            .collect();
        birdsong_audio::wav::pcm16_mono(&samples, rate)
    }

    #[test]
    fn acoustic_windows_follow_the_settings() {
        let analyzer = Analyzer::new(Settings::default());
        let a = analyzer
            .analyse_reader(Backbone::Acoustic, std::io::Cursor::new(tone(12.0)))
            .unwrap();
        // 0–5, 5–10 and the 2-s tail.
        assert_eq!(a.spans, vec![(0.0, 5.0), (5.0, 10.0), (10.0, 12.0)]);
        assert!(
            a.vectors
                .iter()
                .all(|v| v.len() == Backbone::Acoustic.vector_len())
        );
    }

    #[test]
    fn mel_patches_are_five_seconds_with_the_acoustic_hop() {
        let analyzer = Analyzer::new(Settings {
            window: WindowConfig {
                length_s: 3.0,
                hop_s: 2.5,
                min_last_s: 1.0,
            },
            ..Settings::default()
        });
        let w = analyzer.windowing(Backbone::Mel);
        assert_eq!((w.length_s, w.hop_s, w.min_last_s), (5.0, 2.5, 1.0));
        let a = analyzer
            .analyse_reader(Backbone::Mel, std::io::Cursor::new(tone(12.0)))
            .unwrap();
        // The windows the acoustic backbone cuts with the same length and hop.
        let acoustic = Analyzer::new(Settings {
            window: w.clone(),
            ..Settings::default()
        })
        .analyse_reader(Backbone::Acoustic, std::io::Cursor::new(tone(12.0)))
        .unwrap();
        assert_eq!(a.spans, acoustic.spans);
        assert_eq!(a.spans[1], (2.5, 7.5));
        assert!(
            a.vectors
                .iter()
                .all(|v| v.len() == Backbone::Mel.vector_len())
        );
        // The same vectors as the model crate cuts for a file.
        let direct = birdsong_model::spectrogram::bytes_vectors(
            tone(12.0),
            &analyzer.windowing(Backbone::Mel),
        )
        .unwrap();
        assert_eq!(a.vectors, direct);
        // Windows wider apart than a patch would leave audio unheard: the hop is capped.
        let wide = mel_windows(&WindowConfig {
            length_s: 10.0,
            hop_s: 10.0,
            min_last_s: 1.0,
        });
        assert_eq!((wide.length_s, wide.hop_s), (5.0, 5.0));
    }

    #[test]
    fn birdnet_windows_are_three_seconds_with_the_overlap() {
        let analyzer = Analyzer::new(Settings {
            birdnet_overlap_s: 1.5,
            ..Settings::default()
        });
        let w = analyzer.windowing(Backbone::Birdnet);
        assert_eq!((w.length_s, w.hop_s), (3.0, 1.5));
        for (overlap, hop) in [(3.0, 0.1), (-1.0, 3.0), (f64::NAN, 3.0)] {
            let clamped = Analyzer::new(Settings {
                birdnet_overlap_s: overlap,
                ..Settings::default()
            });
            let w = clamped.windowing(Backbone::Birdnet);
            assert!((w.hop_s - hop).abs() < 1e-9, "{overlap}: {}", w.hop_s);
            assert!(w.plan().is_ok());
        }
    }

    #[test]
    fn a_missing_birdnet_is_unavailable_not_the_recordings_fault() {
        let analyzer = Analyzer::new(Settings {
            birdnet_dir: std::env::temp_dir().join("birdsong-no-birdnet-here"),
            ..Settings::default()
        });
        for _ in 0..2 {
            let err = analyzer
                .analyse_reader(Backbone::Birdnet, std::io::Cursor::new(tone(4.0)))
                .unwrap_err();
            assert!(matches!(err, AnalysisError::Unavailable { .. }), "{err}");
            assert!(err.to_string().contains("install.sh"), "{err}");
        }
        // The acoustic backbone still works.
        assert!(analyzer.ensure(Backbone::Acoustic).is_ok());
    }

    #[test]
    fn birdnet_vectors_when_installed() {
        if birdsong_birdnet::install::for_test().unwrap().is_none() {
            return;
        }
        let analyzer = Analyzer::new(Settings::default());
        let a = analyzer
            .analyse_reader(Backbone::Birdnet, std::io::Cursor::new(tone(7.0)))
            .unwrap();
        // 0–3, 3–6, and the 1-s tail 6–7 (padded by BirdNET).
        assert_eq!(a.spans.len(), 3);
        assert!((a.spans[2].1 - 7.0).abs() < 0.01, "{:?}", a.spans);
        assert!(
            a.vectors
                .iter()
                .all(|v| v.len() == Backbone::Birdnet.vector_len())
        );
        // The level column is the window's RMS (a 0.3 sine: 0.3/√2).
        let rms = a.vectors[0][birdsong_model::BIRDNET_EMBEDDING];
        assert!((rms - 0.3 / 2f32.sqrt()).abs() < 0.01, "{rms}");
    }
}
