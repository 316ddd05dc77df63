//! What evaluations and calibrations produce: plain serialisable types,
//! stored in the artifact and printed by the command line. Kept apart from
//! the code that computes them ([`mod@crate::evaluate`], [`crate::detection`]) so
//! that the artifact can hold them without depending on inference.

use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// Precision the thresholds are chosen for unless a caller says otherwise.
pub const DEFAULT_TARGET_PRECISION: f64 = 0.9;

/// Threshold of a species whose held-out windows cannot settle one (too few positive
/// windows, or a model with no calibration).
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// Per-species decision thresholds and how they were chosen; stored in the artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// The precision each species' threshold was chosen to reach.
    pub target_precision: f64,
    /// One threshold per class, in class order.
    pub values: Vec<f32>,
    /// How each threshold was set, in class order: `"precision"` (the lowest reaching
    /// the target), `"best_f1"` (the target was out of reach; the threshold with the
    /// best F1), or `"default"` (too few positive windows).
    pub rules: Vec<String>,
    /// Windows the thresholds were chosen on.
    pub windows: usize,
}

impl Thresholds {
    /// The same threshold for every class.
    pub fn uniform(classes: usize, value: f32) -> Self {
        Self {
            target_precision: DEFAULT_TARGET_PRECISION,
            values: vec![value; classes],
            rules: vec!["default".into(); classes],
            windows: 0,
        }
    }
}

/// Window-level and recording-level metrics of one evaluation set.
///
/// Window metrics say how well single 5-second windows are classified (what a detection
/// row means); recording metrics say how well whole files are classified from the mean
/// probability over their windows (what a file summary means).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Every window scored against its recording's label.
    pub window: Metrics,
    /// Every recording scored by the mean probability over its windows.
    pub recording: Metrics,
    /// Recordings left out because they had no windows.
    pub skipped_recordings: usize,
    /// Detections at the model's thresholds, average precision per species, and how
    /// often background recordings' and quiet windows get a detection (evaluations
    /// stored before detections existed have none).
    #[serde(default)]
    pub detection: Option<DetectionMetrics>,
}

/// Windows this far below their recording's loudest are left out of detection metrics
/// as positives (whether the bird calls in them is unknown), the same for every model.
pub const EVALUATION_QUIET_MARGIN_DB: f32 = 20.0;

/// Detection figures of one species.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeciesDetection {
    pub species: String,
    /// Area under the precision-recall curve of its score over the windows (the
    /// threshold-free ranking quality); `None` without positive windows.
    pub average_precision: Option<f64>,
    /// Its threshold.
    pub threshold: f32,
    /// Precision and recall of its detections at that threshold.
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// Positive windows in the set.
    pub positives: usize,
}

/// How detections (scores above thresholds) fare on a labelled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionMetrics {
    /// Mean of the species' average precisions (those with positive windows).
    pub mean_average_precision: Option<f64>,
    /// Micro-averaged precision and recall of the detections at the thresholds.
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// Share of negative windows (background, quiet, unknown species) with at least
    /// one detection.
    pub negative_windows_detected: Option<f64>,
    pub per_species: Vec<SpeciesDetection>,
    /// Windows scored (quiet windows of labelled recordings left out).
    pub windows: usize,
}

/// How a model answers recordings of species it does not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenSet {
    /// Area under the ROC curve separating windows of the known species' recordings
    /// from windows of the unknown ones by their top score (1 = perfectly, 0.5 =
    /// chance).
    pub auroc: Option<f64>,
    /// Share of the unknown recordings' windows with at least one detection.
    pub unknown_windows_detected: Option<f64>,
    /// The same for the known recordings' windows (for comparison).
    pub known_windows_detected: Option<f64>,
    /// Detections (windows with at least one) per hour of the unknown audio.
    pub false_detections_per_hour: Option<f64>,
    /// Median top score of the unknown and the known windows.
    pub unknown_median_top_score: Option<f32>,
    pub known_median_top_score: Option<f32>,
    pub unknown_windows: usize,
    pub known_windows: usize,
}
