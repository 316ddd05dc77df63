//! `birdsong-model`: train, evaluate and run species classifiers from the command line.
//!
//! ```text
//! birdsong-model train    --manifest data/xc3/manifest.csv --audio-root data/xc3 --out models/v1 --seed 1
//! birdsong-model evaluate --model models/v1 --manifest data/xc3/manifest.csv --audio-root data/xc3 --split test
//! birdsong-model predict  --model models/v1 recording.mp3 other.wav
//! ```
//!
//! It is a thin shell over the `birdsong_model` library (the same code the worker and the
//! retrainer run) and the `birdsong_audio` feature extractor, one module per subcommand,
//! built only with the crate's `cli` feature.

mod calibrate;
mod cross_validate;
mod data;
mod evaluate;
mod features;
mod predict;
mod recipe;
mod restrict;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

use calibrate::{CalibrateArgs, run_calibrate};
use cross_validate::{CrossValidateArgs, run_cross_validate};
use evaluate::{EvaluateArgs, run_evaluate};
use features::{FeaturesArgs, run_features};
use predict::{PredictArgs, run_predict};
use restrict::{RestrictArgs, run_restrict};
use train::{TrainArgs, run_train};

#[derive(Parser)]
#[command(
    name = "birdsong-model",
    version,
    about = "Train, evaluate and run birdsong species classifiers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on the manifest's training recordings and write its artifact.
    Train(TrainArgs),
    /// Score a model on the manifest's recordings of one split; prints metrics JSON.
    Evaluate(EvaluateArgs),
    /// Choose a model's per-species detection thresholds on one split of the manifest
    /// (recordings it was not trained on) and write them into its artifact.
    Calibrate(CalibrateArgs),
    /// Classify audio files; prints one JSON line per window and one per file.
    Predict(PredictArgs),
    /// Estimate a recipe's quality by k-fold cross-validation over recordings of one
    /// split (to compare recipes without touching the test split); prints JSON.
    CrossValidate(CrossValidateArgs),
    /// Write the windows' features of one split as CSV (recording, label and every
    /// named feature), to train other tools on exactly the same inputs. Keep it out of
    /// the repository when the audio is licensed.
    Features(FeaturesArgs),
    /// Write BirdNET's own species layer, restricted to a species list, as a model on
    /// the BirdNET backbone (needs scripts/birdnet/install.sh; CC BY-NC-SA 4.0).
    Restrict(RestrictArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Train(args) => run_train(args),
        Command::Evaluate(args) => run_evaluate(args),
        Command::Calibrate(args) => run_calibrate(args),
        Command::Predict(args) => run_predict(args),
        Command::CrossValidate(args) => run_cross_validate(args),
        Command::Features(args) => run_features(args),
        Command::Restrict(args) => run_restrict(args),
    }
}

#[cfg(test)]
mod tests {
    use birdsong_model::TrainConfig;

    use super::*;

    /// A `train` command line with every required option.
    const TRAIN: [&str; 8] = [
        "birdsong-model",
        "train",
        "--manifest",
        "m",
        "--audio-root",
        "r",
        "--out",
        "o",
    ];

    fn recipe_of(args: &[&str]) -> TrainConfig {
        let cli = Cli::try_parse_from(TRAIN.iter().chain(args)).unwrap();
        match cli.command {
            Command::Train(train) => train.recipe.config(None),
            _ => unreachable!("parsed a train command"),
        }
    }

    #[test]
    fn recipes_are_the_librarys_and_options_override_them() {
        assert_eq!(recipe_of(&[]), TrainConfig::default());
        assert_eq!(
            recipe_of(&["--recipe", "reference"]),
            TrainConfig::reference()
        );
        let mixed = recipe_of(&["--recipe", "reference", "--members", "3", "--seed", "4"]);
        assert_eq!(
            mixed,
            TrainConfig {
                members: 3,
                seed: 4,
                ..TrainConfig::reference()
            }
        );
        assert!(Cli::try_parse_from(TRAIN.iter().chain(&["--recipe", "keras"])).is_err());
    }
}
