//! `restrict`: BirdNET's own species layer, restricted to a species list, as a model
//! artifact (for users with no labels yet, and as the baseline a trained head must
//! beat on the same embeddings).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use birdsong_model::FeatureSet;
use birdsong_model::fixed::{LinearLayer, linear_artifact};
use clap::Args;

#[derive(Args)]
pub(crate) struct RestrictArgs {
    /// Species to keep, comma-separated: common names, scientific names or BirdNET's
    /// full labels, as your labels name them (the model reports these names). Where
    /// your name is not BirdNET's, write `YOUR NAME=BIRDNET NAME` (e.g.
    /// `Grey Kingbird=Tyrannus dominicensis`).
    #[arg(long, value_delimiter = ',', conflicts_with = "species_list")]
    species: Vec<String>,
    /// A file with one species per line (`#` starts a comment), instead of --species;
    /// e.g. the species column of a manifest.
    #[arg(long)]
    species_list: Option<PathBuf>,
    /// Detection threshold on BirdNET's score (the sigmoid of its logit) for every
    /// species; calibrate later on labelled recordings with `calibrate`.
    #[arg(long, default_value_t = birdsong_model::DEFAULT_THRESHOLD)]
    threshold: f32,
    /// BirdNET install (default: $BIRDSONG_BIRDNET_DIR, else
    /// ~/.local/share/birdsong/birdnet).
    #[arg(long)]
    birdnet_dir: Option<PathBuf>,
    /// Version string recorded in the artifact.
    #[arg(long)]
    model_version: Option<String>,
    /// Directory to write the artifact to.
    #[arg(long)]
    out: PathBuf,
}

pub(crate) fn run_restrict(args: RestrictArgs) -> Result<()> {
    let mut names: Vec<String> = args.species.iter().map(|s| s.trim().to_string()).collect();
    if let Some(path) = &args.species_list {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        names.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
                .filter(|l| !l.is_empty()),
        );
    }
    names.retain(|n| !n.is_empty());
    names.sort();
    names.dedup();
    if names.is_empty() {
        bail!("no species given: use --species or --species-list");
    }
    let dir = args
        .birdnet_dir
        .clone()
        .unwrap_or_else(birdsong_birdnet::install::default_dir);
    let birdnet = birdsong_birdnet::Birdnet::load(&dir, 1).context("loading BirdNET")?;
    let layer = birdnet.species();
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    for entry in &names {
        let (name, lookup) = match entry.split_once('=') {
            Some((name, lookup)) => (name.trim(), lookup.trim()),
            None => (entry.as_str(), entry.as_str()),
        };
        match layer.find(lookup) {
            Some(index) => found.push((name.to_string(), index)),
            None => missing.push(entry.clone()),
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "not among BirdNET's {} species, left out (train a head on your labels for them): {}",
            layer.labels().len(),
            missing.join(", ")
        );
    }
    if found.is_empty() {
        bail!("none of the species is among BirdNET's");
    }
    let width = FeatureSet::Birdnet.width();
    let k = found.len();
    let mut weights = vec![0f32; width * k];
    let mut bias = Vec::with_capacity(k);
    for (c, (_, index)) in found.iter().enumerate() {
        let (column, b) = layer
            .column(*index)
            .context("a species index out of BirdNET's range")?;
        for (row, w) in column.into_iter().enumerate() {
            weights[row * k + c] = w;
        }
        bias.push(b);
    }
    let mut artifact = linear_artifact(LinearLayer {
        classes: found.iter().map(|(n, _)| n.clone()).collect(),
        weights,
        bias,
        features: FeatureSet::Birdnet,
        threshold: args.threshold,
        source: format!(
            "BirdNET V2.4 species layer (onnx sha256 {}), restricted to {} species; \
             CC BY-NC-SA 4.0",
            birdnet.onnx_sha256(),
            k
        ),
    })?;
    if let Some(version) = args.model_version {
        artifact.set_version(version);
    }
    artifact
        .save_dir(&args.out)
        .with_context(|| format!("writing the artifact to {}", args.out.display()))?;
    for (name, index) in &found {
        eprintln!("{name} → {}", layer.labels()[*index]);
    }
    eprintln!(
        "BirdNET restricted to {k} species written to {}",
        args.out.display()
    );
    Ok(())
}
