//! `features`: the windows' vectors of one split as CSV, on either backbone: the
//! librosa-style features, or BirdNET's embedding and level, for analyses outside
//! birdsong (the same vectors the retrainer trains heads on).

use std::path::PathBuf;

use anyhow::{Context, Result};
use birdsong_audio::WindowConfig;
use clap::Args;

use crate::data::{DataArgs, extract, read_manifest};

#[derive(Args)]
pub(crate) struct FeaturesArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Split of the manifest to export.
    #[arg(long)]
    split: String,
    /// Hop between windows in seconds.
    #[arg(long, default_value_t = 5.0)]
    hop_s: f64,
    /// Backbone whose vectors to export: `acoustic`, `mel` (each 5-s window's 32 × 216
    /// log-mel patch, band-major, and its level) or `birdnet` (its 1 024-d embedding
    /// and the window's level, on 3-s windows).
    #[arg(long, default_value_t = birdsong_model::Backbone::Acoustic)]
    backbone: birdsong_model::Backbone,
    /// CSV file to write.
    #[arg(long)]
    out: PathBuf,
}

pub(crate) fn run_features(args: FeaturesArgs) -> Result<()> {
    let rows = read_manifest(&args.data.manifest, &args.split)?;
    let config = WindowConfig {
        hop_s: args.hop_s,
        ..WindowConfig::default()
    };
    let recordings = extract(&rows, &args.data, &config, args.backbone)?;
    let mut writer = csv::Writer::from_path(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut header = vec!["recording".to_string(), "label".to_string()];
    match args.backbone {
        birdsong_model::Backbone::Acoustic => {
            header.extend(birdsong_audio::FEATURE_NAMES.iter().map(|n| n.to_string()))
        }
        birdsong_model::Backbone::Birdnet => {
            header.extend((0..birdsong_model::BIRDNET_EMBEDDING).map(|i| format!("embedding_{i}")));
            header.push("level".into());
        }
        birdsong_model::Backbone::Mel => {
            use birdsong_model::spectrogram::{MEL_BANDS, PATCH_FRAMES};
            header.extend(
                (0..MEL_BANDS)
                    .flat_map(|b| (0..PATCH_FRAMES).map(move |t| format!("band_{b}_frame_{t}"))),
            );
            header.push("level".into());
        }
    }
    writer.write_record(&header)?;
    for r in &recordings {
        for w in &r.windows {
            let mut record = vec![r.id.clone(), r.label.clone()];
            record.extend(w.iter().map(|v| v.to_string()));
            writer.write_record(&record)?;
        }
    }
    writer.flush()?;
    Ok(())
}
