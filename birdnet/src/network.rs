//! BirdNET's convolutional network, from the two spectrograms to the 1024-value
//! embedding, run by tract.
//!
//! The installed graph is cut at the two power nodes that end the front-end (computed
//! in Rust, see [`crate::frontend`]) and at the embedding, so the float64 DFT never runs
//! and BirdNET's own 6 522-species layer is left to [`crate::SpeciesLayer`]. The plan is
//! built for a fixed batch of windows: tract optimises fixed shapes best.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::EMBEDDING_SIZE;
use crate::error::{BirdnetError, Result};
use crate::frontend::{FRAMES, MELS};
use crate::graph::unexpected;

/// Nodes whose outputs are the two spectrograms.
const SPECTROGRAM_NODES: [&str; 2] = ["n66_Pow", "n125_Pow"];
/// The graph's embedding output.
const EMBEDDING_OUTPUT: &str = "embedding";

/// The optimised network for batches of `batch` windows.
pub(crate) struct Network {
    plan: Arc<TypedRunnableModel>,
    batch: usize,
}

impl Network {
    pub(crate) fn build(path: &Path, proto: &ModelProto, batch: usize) -> Result<Self> {
        let mut model = tract_onnx::onnx()
            .model_for_proto_model(proto)
            .map_err(|e| unexpected(path, format!("{e:#}")))?;
        model
            .set_input_names(SPECTROGRAM_NODES)
            .map_err(|e| unexpected(path, format!("{e:#}")))?;
        model
            .select_outputs_by_name([EMBEDDING_OUTPUT])
            .map_err(|e| unexpected(path, format!("{e:#}")))?;
        for input in 0..SPECTROGRAM_NODES.len() {
            model
                .set_input_fact(
                    input,
                    InferenceFact::dt_shape(f32::datum_type(), [batch, FRAMES, MELS]),
                )
                .map_err(BirdnetError::runtime)?;
        }
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(BirdnetError::runtime)?;
        Ok(Self { plan, batch })
    }

    /// Windows per run.
    pub(crate) fn batch(&self) -> usize {
        self.batch
    }

    /// Embeddings of one full batch: `low` and `high` hold `batch` spectrograms each.
    pub(crate) fn run(&self, low: Vec<f32>, high: Vec<f32>) -> Result<Vec<f32>> {
        let shape = [self.batch, FRAMES, MELS];
        let low = Tensor::from_shape(&shape, &low).map_err(BirdnetError::runtime)?;
        let high = Tensor::from_shape(&shape, &high).map_err(BirdnetError::runtime)?;
        let outputs = self
            .plan
            .run(tvec![low.into(), high.into()])
            .map_err(BirdnetError::runtime)?;
        let embedding = outputs
            .first()
            .ok_or_else(|| BirdnetError::runtime("the network returned no output"))?;
        let values = embedding
            .to_plain_array_view::<f32>()
            .map_err(BirdnetError::runtime)?;
        if values.len() != self.batch * EMBEDDING_SIZE {
            return Err(BirdnetError::runtime(format!(
                "the network returned {} values for {} windows",
                values.len(),
                self.batch
            )));
        }
        Ok(values.iter().copied().collect())
    }
}
