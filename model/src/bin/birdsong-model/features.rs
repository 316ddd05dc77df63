//! `features`: the windows' feature vectors of one split as CSV.

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
    let recordings = extract(
        &rows,
        &args.data,
        &config,
        birdsong_model::Backbone::Acoustic,
    )?;
    let mut writer = csv::Writer::from_path(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut header = vec!["recording".to_string(), "label".to_string()];
    header.extend(birdsong_audio::FEATURE_NAMES.iter().map(|n| n.to_string()));
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
