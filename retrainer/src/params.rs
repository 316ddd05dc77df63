//! The hyper-parameters a retrain request may set.
//!
//! A request's `params` object overrides a recipe of `birdsong-model` key by
//! key: `TrainConfig::cnn()` (the spectrogram CNN) unless the request names
//! another architecture or the acoustic features, then `TrainConfig::default()`
//! (the MLP). The CNN is the default because it named the most recordings and
//! detected by far the fewest windows of species it was not trained on, on
//! both shared sets (README, "Which model to train"). Anything unknown or out
//! of range fails the run before any data is read: a typo such as `epoch` must
//! not silently train with the default and promote the result.

use std::collections::BTreeMap;

use birdsong_model::{
    ANCHORED, ARCHITECTURES, CNN, FeatureSet, MAX_CONTEXT_WINDOWS, MAX_MEMBERS, Stopping,
    TrainConfig,
};
use serde_json::Value;

use crate::gate::GateMetric;

/// Keys a request may set, with what they mean (shown in errors).
pub const KEYS: &[(&str, &str)] = &[
    ("epochs", "epochs to train, 1 to 100000 (default 60)"),
    ("seed", "seed of initialisation and shuffling (default 0)"),
    (
        "learning_rate",
        "Adam learning rate, > 0 and <= 1 (default 0.001)",
    ),
    (
        "batch_size",
        "windows per minibatch, 1 to 4096 (default 32)",
    ),
    (
        "l2",
        "L2 penalty, >= 0 (default 1e-5; 1.6e-5 for the other architectures)",
    ),
    (
        "patience",
        "early stopping on the validation split after N epochs without improvement",
    ),
    ("input_noise", "Gaussian input noise, 0 to 10 (default 0)"),
    (
        "average_last_epochs",
        "average the weights of the last N epochs, at most epochs, not with patience (default 0: off)",
    ),
    (
        "class_weighting",
        "balance classes in the loss (default false; true for the other architectures)",
    ),
    (
        "balance_recordings",
        "weigh every recording the same (default false)",
    ),
    (
        "architecture",
        "network architecture: mlp, linear, shallow, cnn (a convolutional network on each 5-s window's log-mel patch, trained on random crops of the recordings with its own recipe: 60 epochs, one network, L2 1e-5; implies features mel), or anchored (a linear head on BirdNET's embedding trained from BirdNET's own species layer and served averaged with it; implies features birdnet and members 1) (default cnn; mlp with features bands_no_median, bands, all or librosa, anchored with features birdnet)",
    ),
    (
        "crops_per_second",
        "with cnn: crops drawn per epoch for each second of training audio, > 0 and <= 10 (default 0.2)",
    ),
    (
        "mix_probability",
        "with cnn: share of crops mixed with another recording's quiet stretch, 0 to 1 (default 0.5)",
    ),
    (
        "species_mix_probability",
        "with cnn: share of crops another species' call is mixed into, both species labelled present, 0 to 1 (default 0)",
    ),
    (
        "band_medians",
        "with cnn: subtract each band's median from every patch, so steady background reads as zero (default false)",
    ),
    (
        "learning_rate_decay",
        "with cnn: the learning rate's course over the planned epochs, constant or cosine (a half cosine down to zero) (default constant)",
    ),
    (
        "familiar_quantile",
        "with cnn: a window's score for a species counts only within this quantile of the species' training calls' distances to its other recordings in the network's embedding, 0 < q <= 1, or null to serve the bare scores (default 0.8)",
    ),
    (
        "birdnet_names",
        "with anchored: an object mapping labels to BirdNET's common or scientific name where they differ, e.g. {\"Grey Kingbird\": \"Gray Kingbird\"}",
    ),
    (
        "members",
        "networks trained from different seeds and averaged, 1 to 16, each a full training run (default 1; 5 for the other architectures)",
    ),
    (
        "features",
        "features the network reads: bands_no_median, bands, all or librosa (the built-in acoustic backbone), mel (log-mel patches, read by cnn), or birdnet (BirdNET V2.4 embeddings of 3-s windows; needs scripts/birdnet/install.sh on the retrainer and the workers) (default mel; bands_no_median for the other architectures but anchored)",
    ),
    (
        "train_hop_s",
        "hop between training windows in seconds, 0.1 to 3600; holdout and validation keep the workers' windows (default: the recommended recipe's)",
    ),
    (
        "context_windows",
        "neighbouring windows each side averaged into a window's served scores, 0 to 10 (default 0; 1 for the other architectures)",
    ),
    (
        "gate_metric",
        "metric of the promotion gate (default recording_macro_f1)",
    ),
    (
        "refit",
        "once judged on the holdout, train the recipe again on every labelled recording (validation and holdout too) and serve that model with the judged one's thresholds and figures (default true)",
    ),
];

/// What a run trains with and how it judges the result.
#[derive(Debug, Clone, PartialEq)]
pub struct RunParams {
    pub train: TrainConfig,
    pub gate_metric: GateMetric,
    /// For the anchored architecture: BirdNET's name of each label that differs.
    pub birdnet_names: BTreeMap<String, String>,
    /// Serve a refit on every labelled recording (see `birdsong_model::refit`).
    pub refit: bool,
}

/// Reads a request's `params` (a JSON object, or null for the defaults).
pub fn parse(params: &Value) -> Result<RunParams, String> {
    let mut out = RunParams {
        train: TrainConfig::cnn(),
        gate_metric: GateMetric::default(),
        birdnet_names: BTreeMap::new(),
        refit: true,
    };
    let map = match params {
        Value::Null => return Ok(out),
        Value::Object(map) => map,
        _ => return Err("params must be a JSON object".into()),
    };
    // The CNN's recipe unless the request asks for another architecture or for
    // features the CNN does not read; the other keys override the recipe chosen.
    if !uses_cnn_recipe(map) {
        out.train = TrainConfig::default();
    }
    for (key, value) in map {
        match key.as_str() {
            "epochs" => out.train.epochs = int(key, value, 1, 100_000)? as usize,
            "seed" => out.train.seed = int(key, value, 0, u64::MAX)?,
            "learning_rate" => {
                out.train.learning_rate = float(key, value, |v| v > 0.0 && v <= 1.0)?
            }
            "batch_size" => out.train.batch_size = int(key, value, 1, 4096)? as usize,
            "l2" => out.train.l2 = float(key, value, |v| v >= 0.0)?,
            "patience" => {
                out.train.stopping = Stopping::EarlyStopping {
                    patience: int(key, value, 1, 100_000)? as usize,
                }
            }
            "input_noise" => {
                out.train.input_noise = float(key, value, |v| (0.0..=10.0).contains(&v))? as f32
            }
            "average_last_epochs" => {
                out.train.average_last_epochs = int(key, value, 0, 100_000)? as usize
            }
            "members" => out.train.members = int(key, value, 1, MAX_MEMBERS as u64)? as usize,
            "context_windows" => {
                out.train.context_windows = int(key, value, 0, MAX_CONTEXT_WINDOWS as u64)? as usize
            }
            "train_hop_s" => out.train.train_hop_s = float(key, value, |v| v > 0.0)?,
            "class_weighting" => out.train.class_weighting = boolean(key, value)?,
            "balance_recordings" => out.train.balance_recordings = boolean(key, value)?,
            "architecture" => {
                let name = value
                    .as_str()
                    .ok_or_else(|| format!("{key} must be a string"))?;
                if !ARCHITECTURES.contains(&name) {
                    return Err(format!(
                        "unknown architecture {name:?} (known: {})",
                        ARCHITECTURES.join(", ")
                    ));
                }
                out.train.architecture = name.to_string();
            }
            "features" => {
                let name = value
                    .as_str()
                    .ok_or_else(|| format!("{key} must be a string"))?;
                out.train.features = name.parse()?;
            }
            "birdnet_names" => {
                let names = value
                    .as_object()
                    .ok_or_else(|| format!("{key} must be an object of label: BirdNET name"))?;
                for (label, name) in names {
                    let name = name
                        .as_str()
                        .ok_or_else(|| format!("{key}: the name of {label:?} must be a string"))?;
                    out.birdnet_names.insert(label.clone(), name.to_string());
                }
            }
            "band_medians" => {
                let Some(spectrogram) = out.train.spectrogram.as_mut() else {
                    return Err(format!("{key} is a setting of the cnn architecture"));
                };
                spectrogram.band_medians = boolean(key, value)?;
            }
            "learning_rate_decay" => {
                let Some(spectrogram) = out.train.spectrogram.as_mut() else {
                    return Err(format!("{key} is a setting of the cnn architecture"));
                };
                let name = value
                    .as_str()
                    .ok_or_else(|| format!("{key} must be a string: constant or cosine"))?;
                spectrogram.learning_rate_decay = name.parse()?;
            }
            "familiar_quantile" => {
                let Some(spectrogram) = out.train.spectrogram.as_mut() else {
                    return Err(format!("{key} is a setting of the cnn architecture"));
                };
                spectrogram.familiar_quantile = if value.is_null() {
                    None
                } else {
                    Some(float(key, value, |v| v > 0.0 && v <= 1.0)?)
                };
            }
            "crops_per_second" | "mix_probability" | "species_mix_probability" => {
                let Some(spectrogram) = out.train.spectrogram.as_mut() else {
                    return Err(format!("{key} is a setting of the cnn architecture"));
                };
                let share = |v: f64| (0.0..=1.0).contains(&v);
                match key.as_str() {
                    "crops_per_second" => {
                        spectrogram.crops_per_second = float(key, value, |v| v > 0.0 && v <= 10.0)?;
                    }
                    "mix_probability" => spectrogram.mix_probability = float(key, value, share)?,
                    _ => spectrogram.species_mix_probability = float(key, value, share)?,
                }
            }
            "refit" => out.refit = boolean(key, value)?,
            "gate_metric" => {
                let name = value
                    .as_str()
                    .ok_or_else(|| format!("{key} must be a string"))?;
                out.gate_metric = name.parse()?;
            }
            other => {
                let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "unknown parameter {other:?} (known: {})",
                    known.join(", ")
                ));
            }
        }
    }
    // On BirdNET's embedding the anchored head is the best measured model
    // (README, "Detections and species the model does not know"), so it is the
    // default there.
    if out.train.features == FeatureSet::Birdnet && !map.contains_key("architecture") {
        out.train.architecture = ANCHORED.to_string();
    }
    // An anchored head is one network on BirdNET's embedding unless told otherwise
    // (the model crate refuses other combinations).
    if out.train.architecture == ANCHORED {
        if !map.contains_key("members") {
            out.train.members = 1;
        }
        if !map.contains_key("features") {
            out.train.features = FeatureSet::Birdnet;
        }
    }
    // Combinations (averaging more epochs than trained, averaging with early
    // stopping) are the model crate's to judge.
    out.train.validate().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Whether a request starts from the CNN's recipe: when it names the CNN, the mel
/// patches, or neither an architecture nor features.
fn uses_cnn_recipe(map: &serde_json::Map<String, Value>) -> bool {
    match (
        map.get("architecture").and_then(Value::as_str),
        map.get("features").and_then(Value::as_str),
    ) {
        (Some(architecture), _) => architecture == CNN,
        (None, Some(features)) => features == FeatureSet::Mel.name(),
        (None, None) => true,
    }
}

fn int(key: &str, value: &Value, min: u64, max: u64) -> Result<u64, String> {
    value
        .as_u64()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| format!("{key} must be an integer from {min} to {max}, not {value}"))
}

fn float(key: &str, value: &Value, ok: impl Fn(f64) -> bool) -> Result<f64, String> {
    value
        .as_f64()
        .filter(|v| v.is_finite() && ok(*v))
        .ok_or_else(|| format!("{key} is out of range: {value}"))
}

fn boolean(key: &str, value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("{key} must be true or false, not {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use birdsong_model::{LearningRateDecay, RECOMMENDED_CONTEXT_WINDOWS};
    use serde_json::json;

    #[test]
    fn defaults_without_params() {
        let p = parse(&Value::Null).unwrap();
        assert_eq!(p.train, TrainConfig::cnn());
        assert_eq!(p.gate_metric, GateMetric::RecordingMacroF1);
        assert_eq!(parse(&json!({})).unwrap(), p);
        // Keys that are not the architecture or the features keep the CNN's recipe.
        let p = parse(&json!({"epochs": 4, "seed": 2})).unwrap();
        assert_eq!(p.train.architecture, CNN);
        assert_eq!((p.train.epochs, p.train.members), (4, 1));
    }

    #[test]
    fn naming_another_architecture_or_acoustic_features_starts_from_the_mlp_recipe() {
        let mlp = parse(&json!({"architecture": "mlp"})).unwrap();
        assert_eq!(mlp.train, TrainConfig::default());
        let bands = parse(&json!({"features": "bands_no_median"})).unwrap();
        assert_eq!(bands.train, TrainConfig::default());
        let librosa = parse(&json!({"features": "librosa"})).unwrap();
        assert_eq!(
            (librosa.train.architecture.as_str(), librosa.train.members),
            ("mlp", TrainConfig::default().members)
        );
        let shallow = parse(&json!({"architecture": "shallow"})).unwrap();
        assert_eq!(shallow.train.epochs, TrainConfig::default().epochs);
    }

    #[test]
    fn a_refit_is_the_default_and_can_be_turned_off() {
        assert!(parse(&Value::Null).unwrap().refit);
        assert!(!parse(&json!({"refit": false})).unwrap().refit);
        let err = parse(&json!({"refit": "no"})).unwrap_err();
        assert!(err.contains("refit must be true or false"), "{err}");
    }

    #[test]
    fn documented_defaults_are_the_recipes() {
        let (cnn, other) = (TrainConfig::cnn(), TrainConfig::default());
        // "(default X)" or "(default X; Y for the other architectures)".
        let documented = |key: &str| -> (f64, f64) {
            let (_, help) = KEYS.iter().find(|(k, _)| *k == key).unwrap();
            let start = help.find("(default ").unwrap() + "(default ".len();
            let end = start + help[start..].find(')').unwrap();
            let text = &help[start..end];
            match text.split_once("; ") {
                Some((first, rest)) => (
                    first.parse().unwrap(),
                    rest.trim_end_matches(" for the other architectures")
                        .parse()
                        .unwrap(),
                ),
                None => (text.parse().unwrap(), text.parse().unwrap()),
            }
        };
        assert_eq!(documented("l2"), (cnn.l2, other.l2));
        assert_eq!(
            documented("learning_rate"),
            (cnn.learning_rate, other.learning_rate)
        );
        assert_eq!(
            documented("epochs"),
            (cnn.epochs as f64, other.epochs as f64)
        );
        assert_eq!(
            documented("batch_size"),
            (cnn.batch_size as f64, other.batch_size as f64)
        );
        assert_eq!(
            documented("members"),
            (cnn.members as f64, other.members as f64)
        );
        assert_eq!(
            documented("context_windows"),
            (cnn.context_windows as f64, other.context_windows as f64)
        );
        assert!(
            KEYS.iter()
                .any(|(k, help)| *k == "members" && help.contains(&format!("1 to {MAX_MEMBERS}")))
        );
    }

    #[test]
    fn overrides_are_applied() {
        let p = parse(
            &json!({"epochs": 5, "seed": 7, "learning_rate": 0.01, "patience": 3,
                              "gate_metric": "window_macro_f1", "members": 2}),
        )
        .unwrap();
        assert_eq!(p.train.members, 2);
        assert_eq!(p.train.epochs, 5);
        assert_eq!(p.train.seed, 7);
        assert_eq!(p.train.learning_rate, 0.01);
        assert_eq!(p.train.stopping, Stopping::EarlyStopping { patience: 3 });
        assert_eq!(p.gate_metric, GateMetric::WindowMacroF1);
    }

    #[test]
    fn anchored_means_one_head_on_birdnet_with_name_mappings() {
        let p = parse(&json!({"architecture": "anchored",
                              "birdnet_names": {"Grey Kingbird": "Gray Kingbird"}}))
        .unwrap();
        assert_eq!(p.train.architecture, ANCHORED);
        assert_eq!(p.train.context_windows, RECOMMENDED_CONTEXT_WINDOWS);
        assert_eq!(p.train.members, 1);
        assert_eq!(p.train.features, FeatureSet::Birdnet);
        assert_eq!(p.birdnet_names["Grey Kingbird"], "Gray Kingbird");
        // Explicit values stand (and the model crate refuses what cannot train).
        let p = parse(&json!({"architecture": "anchored", "members": 3})).unwrap();
        assert_eq!(p.train.members, 3);
        // The default on BirdNET's embedding; another architecture when asked for.
        let p = parse(&json!({"features": "birdnet"})).unwrap();
        assert_eq!(
            (p.train.architecture.as_str(), p.train.members),
            (ANCHORED, 1)
        );
        let p = parse(&json!({"features": "birdnet", "architecture": "shallow"})).unwrap();
        assert_eq!(p.train.architecture, "shallow");
        assert!(parse(&json!({"birdnet_names": ["Gray Kingbird"]})).is_err());
        assert!(parse(&json!({"birdnet_names": {"Grey Kingbird": 3}})).is_err());
    }

    #[test]
    fn cnn_starts_from_its_own_recipe() {
        let p = parse(&json!({"architecture": "cnn"})).unwrap();
        assert_eq!(p.train, TrainConfig::cnn());
        assert_eq!(
            parse(&json!({"features": "mel"})).unwrap().train,
            TrainConfig::cnn()
        );
        let p = parse(&json!({"architecture": "cnn", "epochs": 4, "members": 2,
                              "crops_per_second": 0.5, "mix_probability": 0,
                              "species_mix_probability": 0.25, "band_medians": true}))
        .unwrap();
        assert_eq!((p.train.epochs, p.train.members), (4, 2));
        let s = p.train.spectrogram.unwrap();
        assert_eq!((s.crops_per_second, s.mix_probability), (0.5, 0.0));
        assert_eq!(s.species_mix_probability, 0.25);
        assert!(s.band_medians);
        assert!(
            parse(&json!({"band_medians": true}))
                .unwrap()
                .train
                .spectrogram
                .unwrap()
                .band_medians
        );
        assert!(parse(&json!({"architecture": "mlp", "band_medians": true})).is_err());
        assert!(parse(&json!({"architecture": "cnn", "band_medians": 1})).is_err());
        // The learning rate's course: by name, for the cnn only.
        let decay = |params: Value| {
            parse(&params).map(|p| p.train.spectrogram.unwrap().learning_rate_decay)
        };
        assert_eq!(
            decay(json!({"learning_rate_decay": "cosine"})),
            Ok(LearningRateDecay::Cosine)
        );
        assert_eq!(
            decay(json!({"learning_rate_decay": "constant"})),
            Ok(LearningRateDecay::Constant)
        );
        let err = decay(json!({"learning_rate_decay": "linear"})).unwrap_err();
        assert!(err.contains("constant` or `cosine"), "{err}");
        assert!(decay(json!({"learning_rate_decay": 1})).is_err());
        assert!(parse(&json!({"architecture": "mlp", "learning_rate_decay": "cosine"})).is_err());
        // The familiarity gate: on by default, another quantile, or off with null.
        let quantile =
            |params: Value| parse(&params).map(|p| p.train.spectrogram.unwrap().familiar_quantile);
        assert_eq!(
            quantile(json!({})).unwrap(),
            Some(birdsong_model::FAMILIAR_QUANTILE)
        );
        assert_eq!(
            quantile(json!({"familiar_quantile": 0.9})).unwrap(),
            Some(0.9)
        );
        assert_eq!(quantile(json!({"familiar_quantile": null})).unwrap(), None);
        for bad in [json!(0), json!(1.5), json!("0.8")] {
            assert!(quantile(json!({"familiar_quantile": bad})).is_err());
        }
        assert!(parse(&json!({"architecture": "mlp", "familiar_quantile": 0.8})).is_err());
        // Its settings mean nothing to the other architectures, and it reads mel patches only.
        let e = parse(&json!({"features": "bands", "crops_per_second": 0.5})).unwrap_err();
        assert!(e.contains("cnn"), "{e}");
        assert!(parse(&json!({"architecture": "cnn", "features": "bands"})).is_err());
        assert!(parse(&json!({"architecture": "mlp", "features": "mel"})).is_err());
        assert!(parse(&json!({"architecture": "cnn", "mix_probability": 1.5})).is_err());
        assert!(parse(&json!({"architecture": "cnn", "species_mix_probability": -0.1})).is_err());
        assert!(parse(&json!({"architecture": "mlp", "species_mix_probability": 0.5})).is_err());
    }

    #[test]
    fn unknown_and_out_of_range_are_refused() {
        let e = parse(&json!({"epoch": 5})).unwrap_err();
        assert!(e.contains("unknown parameter \"epoch\""), "{e}");
        assert!(parse(&json!({"epochs": 0})).is_err());
        assert!(parse(&json!({"epochs": "5"})).is_err());
        assert!(parse(&json!({"learning_rate": -1.0})).is_err());
        assert!(parse(&json!({"architecture": "transformer"})).is_err());
        assert!(parse(&json!({"gate_metric": "loss"})).is_err());
        assert!(parse(&json!([1])).is_err());
        assert!(parse(&json!({"epochs": 10, "average_last_epochs": 11})).is_err());
        assert!(parse(&json!({"average_last_epochs": 5, "patience": 3})).is_err());
        let p = parse(&json!({"features": "librosa"})).unwrap();
        assert_eq!(p.train.features, birdsong_model::FeatureSet::Librosa);
        assert!(parse(&json!({"features": "mfcc"})).is_err());
        assert!(parse(&json!({"features": 3})).is_err());
        for members in [json!(0), json!(17), json!(2.5), json!("3")] {
            let e = parse(&json!({ "members": members })).unwrap_err();
            assert!(e.contains("members"), "{e}");
        }
        let p = parse(&json!({"average_last_epochs": 20})).unwrap();
        assert_eq!(p.train.average_last_epochs, 20);
        let p = parse(&json!({"train_hop_s": 2.5})).unwrap();
        assert_eq!(p.train.train_hop_s, 2.5);
        for hop in [json!(0.0), json!(0.01), json!(-1), json!("2.5")] {
            let e = parse(&json!({ "train_hop_s": hop })).unwrap_err();
            assert!(e.contains("train_hop_s") || e.contains("hop"), "{e}");
        }
    }
}
