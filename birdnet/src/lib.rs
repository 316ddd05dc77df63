//! BirdNET V2.4 run in Rust: a 1024-value embedding for every 3-s window, and BirdNET's
//! own species layer.
//!
//! BirdNET (Cornell Lab of Ornithology and Chemnitz University of Technology) is a
//! convolutional network trained on thousands of species; its embedding separates bird
//! sounds far better than hand-made features, and a small head trained on it learns a
//! user's species from a few recordings. birdsong does not ship it: its licence is
//! CC BY-NC-SA 4.0, so a user who accepts that installs it with
//! `scripts/birdnet/install.sh`, which converts it to ONNX outside the repository.
//! This crate reads that install ([`install`]), computes BirdNET's spectrograms in Rust
//! ([`frontend`]) and runs the rest of the network with tract.
//!
//! Where it sits: beside the audio crate, under the model library's users. The worker
//! embeds windows with it when the model in service was trained on BirdNET embeddings;
//! the retrainer and the model CLI embed labelled recordings with it; the registry
//! builds "BirdNET restricted to a species list" models from its [`SpeciesLayer`].
//!
//! ```no_run
//! use birdsong_birdnet::{Birdnet, install};
//! let birdnet = Birdnet::load(&install::default_dir(), 1)?;
//! let window = vec![0.0f32; birdsong_birdnet::WINDOW_SAMPLES];
//! let embeddings = birdnet.embed(&[&window[..]])?;
//! assert_eq!(embeddings[0].len(), birdsong_birdnet::EMBEDDING_SIZE);
//! # Ok::<(), birdsong_birdnet::BirdnetError>(())
//! ```

mod error;
pub mod frontend;
mod graph;
pub mod install;
mod network;
pub mod recording;
mod species;

use std::path::Path;

pub use error::{BirdnetError, Result};
pub use install::Install;
pub use recording::{Embedded, EmbeddedWindow, window_config};
pub use species::SpeciesLayer;

use crate::frontend::Frontend;
use crate::graph::Initializers;
use crate::network::Network;

/// BirdNET's input rate.
pub const SAMPLE_RATE: u32 = 48_000;
/// BirdNET's window: 3 s at 48 kHz. Shorter input is padded with silence.
pub const WINDOW_SAMPLES: usize = 144_000;
/// Window length in seconds.
pub const WINDOW_SECONDS: f64 = 3.0;
/// Values per embedding (the network's global average pool).
pub const EMBEDDING_SIZE: usize = 1024;

/// A loaded BirdNET: immutable and `Send + Sync`, shared by every thread of a worker.
pub struct Birdnet {
    frontend: Frontend,
    network: Network,
    /// A one-window plan for what is left of a recording after its full batches, so
    /// a short last batch is not padded (present when `network`'s batch is above one).
    single: Option<Network>,
    species: SpeciesLayer,
    onnx_sha256: String,
}

impl std::fmt::Debug for Birdnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Birdnet")
            .field("onnx_sha256", &self.onnx_sha256)
            .field("batch", &self.network.batch())
            .finish_non_exhaustive()
    }
}

impl Birdnet {
    /// Loads the install in `dir` with a network planned for `batch` windows per run
    /// (one is fastest per window on the machines measured; with more, what a
    /// recording has left after its full batches runs one window at a time on a
    /// second plan rather than padded). Takes a few seconds per
    /// plan: tract optimises the whole graph.
    pub fn load(dir: &Path, batch: usize) -> Result<Self> {
        let install = Install::open(dir)?;
        Self::from_install(&install, batch)
    }

    /// Builds from an already verified install.
    pub fn from_install(install: &Install, batch: usize) -> Result<Self> {
        use tract_onnx::prelude::Framework;
        let path = install.onnx_path.as_path();
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut install.onnx.as_slice())
            .map_err(|e| graph::unexpected(path, format!("{e:#}")))?;
        let constants = Initializers::new(path, &proto)?;
        let frontend = Frontend::from_graph(&constants)?;
        let species = SpeciesLayer::from_graph(&constants, &install.labels)?;
        let batch = batch.max(1);
        let network = Network::build(path, &proto, batch)?;
        let single = if batch > 1 {
            Some(Network::build(path, &proto, 1)?)
        } else {
            None
        };
        Ok(Self {
            frontend,
            network,
            single,
            species,
            onnx_sha256: install.onnx_sha256.clone(),
        })
    }

    /// The embeddings of `windows` (each at most [`WINDOW_SAMPLES`] samples at
    /// [`SAMPLE_RATE`]; shorter ones are padded with silence, longer ones cut), in order.
    pub fn embed(&self, windows: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let batch = self.network.batch();
        let mut out = Vec::with_capacity(windows.len());
        for chunk in windows.chunks(batch) {
            match &self.single {
                Some(single) if chunk.len() < batch => {
                    for window in chunk {
                        self.embed_with(single, std::slice::from_ref(window), &mut out)?;
                    }
                }
                _ => self.embed_with(&self.network, chunk, &mut out)?,
            }
        }
        Ok(out)
    }

    /// Runs `network` on `chunk` (at most its batch; a short chunk is filled with
    /// copies of its first window) and appends the chunk's embeddings to `out`.
    fn embed_with(
        &self,
        network: &Network,
        chunk: &[&[f32]],
        out: &mut Vec<Vec<f32>>,
    ) -> Result<()> {
        let batch = network.batch();
        let one = frontend::FRAMES * frontend::MELS;
        let mut low = Vec::with_capacity(batch * one);
        let mut high = Vec::with_capacity(batch * one);
        let mut padded = vec![0f32; WINDOW_SAMPLES];
        for window in chunk {
            let n = window.len().min(WINDOW_SAMPLES);
            padded[..n].copy_from_slice(&window[..n]);
            padded[n..].fill(0.0);
            self.frontend.spectrograms(&padded, &mut low, &mut high);
        }
        for _ in chunk.len()..batch {
            low.extend_from_within(..one);
            high.extend_from_within(..one);
        }
        let values = network.run(low, high)?;
        out.extend(
            values
                .chunks_exact(EMBEDDING_SIZE)
                .take(chunk.len())
                .map(<[f32]>::to_vec),
        );
        Ok(())
    }

    /// Windows per network run.
    pub fn batch(&self) -> usize {
        self.network.batch()
    }

    /// BirdNET's own output layer and species list.
    pub fn species(&self) -> &SpeciesLayer {
        &self.species
    }

    /// SHA-256 of the network file: which BirdNET made an embedding.
    pub fn onnx_sha256(&self) -> &str {
        &self.onnx_sha256
    }

    /// The front-end alone (for benchmarks and parity tests).
    pub fn frontend(&self) -> &Frontend {
        &self.frontend
    }
}

#[cfg(test)]
mod send_check {
    #[test]
    fn birdnet_is_shared_across_threads() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<super::Birdnet>();
    }
}
