//! Manifests, feature extraction in parallel, progress and prediction files:
//! what every subcommand reads its recordings with.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result, bail};
use birdsong_audio::{WindowConfig, analyze_file};
use birdsong_birdnet::Birdnet;
use birdsong_model::{
    Artifact, Backbone, Classifier, Recording, Spectrogram, SpectrogramRecording,
};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

#[derive(Args)]
pub(crate) struct DataArgs {
    /// CSV with at least the columns path, species, split (other columns are ignored).
    #[arg(long)]
    pub(crate) manifest: PathBuf,
    /// Directory the manifest's paths are relative to.
    #[arg(long)]
    pub(crate) audio_root: PathBuf,
    /// Feature-extraction threads (default: available cores).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// BirdNET install, for models on the `birdnet` feature set (default:
    /// $BIRDSONG_BIRDNET_DIR, else ~/.local/share/birdsong/birdnet).
    #[arg(long)]
    pub(crate) birdnet_dir: Option<PathBuf>,
}

/// BirdNET, loaded once per process on first use.
pub(crate) fn birdnet(data: &DataArgs) -> Result<&'static Birdnet> {
    birdnet_in(data.birdnet_dir.as_deref())
}

/// BirdNET from `dir` (default: $BIRDSONG_BIRDNET_DIR, else
/// ~/.local/share/birdsong/birdnet), loaded once per process on first use.
pub(crate) fn birdnet_in(dir: Option<&Path>) -> Result<&'static Birdnet> {
    static LOADED: OnceLock<Birdnet> = OnceLock::new();
    if let Some(b) = LOADED.get() {
        return Ok(b);
    }
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(birdsong_birdnet::install::default_dir);
    let loaded = Birdnet::load(&dir, 1).context("loading BirdNET")?;
    Ok(LOADED.get_or_init(|| loaded))
}

/// The windows a backbone is fed, given the acoustic windows asked for: BirdNET's are
/// always 3 s long, with the asked hop when that is shorter (training windows overlap);
/// mel patches are the standard 5 s ones, which the model crate checks.
pub(crate) fn backbone_windows(backbone: Backbone, config: &WindowConfig) -> Result<WindowConfig> {
    Ok(match backbone {
        Backbone::Acoustic | Backbone::Mel => config.clone(),
        Backbone::Birdnet => {
            let overlap = (birdsong_birdnet::WINDOW_SECONDS - config.hop_s).max(0.0);
            birdsong_birdnet::window_config(overlap)?
        }
    })
}

/// One file's window vectors for `backbone`.
fn vectors(
    path: &Path,
    backbone: Backbone,
    data: &DataArgs,
    config: &WindowConfig,
) -> Result<Vec<Vec<f32>>> {
    Ok(match backbone {
        Backbone::Mel => birdsong_model::spectrogram::file_vectors(path, config)?,
        Backbone::Acoustic => analyze_file(path, config)?
            .windows
            .into_iter()
            .map(|w| w.features.to_vec())
            .collect(),
        Backbone::Birdnet => birdnet(data)?
            .embed_file(path, config)?
            .windows
            .iter()
            .map(|w| w.vector())
            .collect(),
    })
}

/// Synthetic background (see `negatives::synthetic_clips`) as one background
/// recording of `backbone` vectors: what training adds itself for the acoustic
/// backbone.
pub(crate) fn synthetic_background(
    backbone: Backbone,
    data: &DataArgs,
    config: &WindowConfig,
) -> Result<Recording> {
    let mut windows = Vec::new();
    for wav in birdsong_model::negatives::synthetic_clips() {
        match backbone {
            Backbone::Acoustic => windows.extend(
                birdsong_audio::analyze_bytes(wav, config)?
                    .windows
                    .into_iter()
                    .map(|w| w.features.to_vec()),
            ),
            Backbone::Mel => {
                windows.extend(birdsong_model::spectrogram::bytes_vectors(wav, config)?)
            }
            Backbone::Birdnet => windows.extend(
                birdnet(data)?
                    .embed_bytes(wav, config)?
                    .windows
                    .iter()
                    .map(|w| w.vector()),
            ),
        }
    }
    Ok(Recording {
        id: "synthetic background".into(),
        label: birdsong_model::BACKGROUND_LABELS[0].into(),
        windows,
    })
}

/// One manifest row; columns other than these are ignored.
#[derive(Deserialize)]
pub(crate) struct ManifestRow {
    pub(crate) path: String,
    pub(crate) species: String,
    pub(crate) split: String,
}

/// A buffered writer on a new file at `path`.
pub(crate) fn create_file(path: &Path) -> Result<std::io::BufWriter<std::fs::File>> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(std::io::BufWriter::new(file))
}

/// One JSON line per recording: its fold (in cross-validation), label and every
/// window's probabilities.
pub(crate) fn write_predictions(
    out: &mut impl Write,
    fold: Option<usize>,
    classifier: &Classifier,
    recordings: &[Recording],
) -> Result<()> {
    for r in recordings {
        let probabilities = classifier.score_recordings(&[&r.windows])?;
        let line = serde_json::json!({
            "fold": fold,
            "recording": r.id,
            "label": r.label,
            "classes": classifier.classes(),
            "windows": probabilities,
        });
        serde_json::to_writer(&mut *out, &line)?;
        writeln!(out)?;
    }
    Ok(())
}

pub(crate) fn load_classifier(dir: &Path) -> Result<Classifier> {
    let artifact = Artifact::load_dir_any_backbone(dir)
        .with_context(|| format!("loading the model in {}", dir.display()))?;
    Classifier::from_artifact(&artifact)
        .with_context(|| format!("loading the model in {}", dir.display()))
}

pub(crate) fn read_manifest(path: &Path, split: &str) -> Result<Vec<ManifestRow>> {
    let mut reader = csv::Reader::from_path(path)
        .with_context(|| format!("opening manifest {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, row) in reader.deserialize::<ManifestRow>().enumerate() {
        let row = row.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
        if row.split == split {
            rows.push(row);
        }
    }
    if rows.is_empty() {
        bail!("{} has no rows with split {split:?}", path.display());
    }
    Ok(rows)
}

/// Extracts the windows of every manifest row for `backbone`, in parallel, failing on
/// the first file that cannot be analysed (a silently smaller dataset would skew every
/// number). `config` is the acoustic windowing; see [`backbone_windows`].
pub(crate) fn extract(
    rows: &[ManifestRow],
    data: &DataArgs,
    config: &WindowConfig,
    backbone: Backbone,
) -> Result<Vec<Recording>> {
    let config = &backbone_windows(backbone, config)?;
    if backbone == Backbone::Birdnet {
        birdnet(data)?;
    }
    let bar = progress_bar(
        rows.len() as u64,
        "{elapsed_precise} [{bar:30}] {pos}/{len} files analysed",
    );
    let results = parallel_map(rows, data.threads, |row| {
        let path = data.audio_root.join(&row.path);
        let windows = vectors(&path, backbone, data, config)
            .with_context(|| format!("analysing {}", path.display()));
        bar.inc(1);
        windows.map(|windows| Recording {
            id: row.path.clone(),
            label: row.species.clone(),
            windows,
        })
    });
    bar.finish_and_clear();
    let recordings = results.into_iter().collect::<Result<Vec<_>>>()?;
    let mut per_species: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &recordings {
        *per_species.entry(r.label.as_str()).or_default() += r.windows.len();
    }
    eprintln!(
        "{} recordings, windows per species: {per_species:?}",
        recordings.len()
    );
    Ok(recordings)
}

/// Extracts every audio file under `dir` (by extension, recursively), labelled with
/// its folder's name: recordings for the open-set figures.
pub(crate) fn extract_folder(
    dir: &Path,
    data: &DataArgs,
    config: &WindowConfig,
    backbone: Backbone,
) -> Result<Vec<Recording>> {
    const AUDIO: [&str; 6] = ["mp3", "wav", "flac", "ogg", "m4a", "aiff"];
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| AUDIO.contains(&e.to_ascii_lowercase().as_str()))
            {
                files.push(path);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("no audio files under {}", dir.display());
    }
    let rows: Vec<ManifestRow> = files
        .iter()
        .map(|p| ManifestRow {
            path: p.display().to_string(),
            species: p
                .parent()
                .and_then(|f| f.file_name())
                .map(|f| format!("unknown: {}", f.to_string_lossy()))
                .unwrap_or_else(|| "unknown".into()),
            split: String::new(),
        })
        .collect();
    let absolute = DataArgs {
        manifest: data.manifest.clone(),
        audio_root: PathBuf::from("/"),
        threads: data.threads,
        birdnet_dir: data.birdnet_dir.clone(),
    };
    extract(&rows, &absolute, config, backbone)
}

/// The band power of every manifest row's whole recording, in parallel (the spectrogram
/// CNN's training input: each file decoded once, in chunks, and only its spectrogram
/// kept).
pub(crate) fn extract_spectrograms(
    rows: &[ManifestRow],
    data: &DataArgs,
) -> Result<Vec<SpectrogramRecording>> {
    let bar = progress_bar(
        rows.len() as u64,
        "{elapsed_precise} [{bar:30}] {pos}/{len} spectrograms",
    );
    let results = parallel_map(rows, data.threads, |row| {
        let path = data.audio_root.join(&row.path);
        let spectrogram =
            Spectrogram::of_file(&path).with_context(|| format!("analysing {}", path.display()));
        bar.inc(1);
        spectrogram.map(|spectrogram| SpectrogramRecording {
            id: row.path.clone(),
            label: row.species.clone(),
            spectrogram,
        })
    });
    bar.finish_and_clear();
    let recordings = results.into_iter().collect::<Result<Vec<_>>>()?;
    let frames: usize = recordings.iter().map(|r| r.spectrogram.frames()).sum();
    eprintln!(
        "{} spectrograms, {frames} frames ({:.0} MB)",
        recordings.len(),
        (frames * birdsong_model::spectrogram::MEL_BANDS * 4) as f64 / 1e6
    );
    Ok(recordings)
}

/// Maps `f` over `items` on scoped threads (work-stealing by index), keeping input order.
pub(crate) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: Option<usize>,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .clamp(1, items.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    if let Ok(mut slots) = results.lock() {
                        slots[i] = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

pub(crate) fn progress_bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
