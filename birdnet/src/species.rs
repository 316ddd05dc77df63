//! BirdNET's own species layer: `logits = embedding · W + b` over its 6 522 species.
//!
//! It is a single linear layer on the embedding, so "BirdNET restricted to a species
//! list" is that layer's columns for those species, a model like any head trained on
//! embeddings: the worker stores the same embeddings and the same result rows for both.

use crate::EMBEDDING_SIZE;
use crate::error::Result;
use crate::graph::{Initializers, unexpected};

/// The graph's species layer: weights (row-major `EMBEDDING_SIZE × species`) and bias.
const WEIGHTS: &str = "c188";
const BIAS: &str = "c189";

/// BirdNET's output layer with its labels.
#[derive(Debug, Clone)]
pub struct SpeciesLayer {
    labels: Vec<String>,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl SpeciesLayer {
    pub(crate) fn from_graph(graph: &Initializers<'_>, labels: &[String]) -> Result<Self> {
        graph.expect_input("n404_MatMul", 1, WEIGHTS)?;
        graph.expect_input("n405_Add", 1, BIAS)?;
        let n = labels.len();
        let weights = graph
            .f32(WEIGHTS, &[EMBEDDING_SIZE, n])
            .map_err(|_| unexpected_labels(graph, n))?;
        let bias = graph.f32(BIAS, &[n])?;
        Ok(Self {
            labels: labels.to_vec(),
            weights,
            bias,
        })
    }

    /// Labels, `Scientific name_Common name`, in output order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Index of a species by its common name, scientific name or full label (ignoring
    /// letter case and `_`/space differences).
    pub fn find(&self, name: &str) -> Option<usize> {
        let key = normalise(name);
        self.labels.iter().position(|label| {
            normalise(label) == key
                || label
                    .split_once('_')
                    .is_some_and(|(sci, common)| normalise(sci) == key || normalise(common) == key)
        })
    }

    /// The weights and bias of output `index`: `EMBEDDING_SIZE` weights.
    pub fn column(&self, index: usize) -> Option<(Vec<f32>, f32)> {
        let n = self.labels.len();
        let bias = *self.bias.get(index)?;
        let weights = (0..EMBEDDING_SIZE)
            .map(|row| self.weights[row * n + index])
            .collect();
        Some((weights, bias))
    }

    /// The columns of the species among `labels` that BirdNET knows, each looked up by
    /// its alias when `aliases` has one (a user's "Grey Kingbird" is BirdNET's
    /// "Gray Kingbird"), else by the label itself; the others are left out.
    pub fn columns_for(
        &self,
        labels: &[String],
        aliases: &std::collections::BTreeMap<String, String>,
    ) -> Vec<(String, Vec<f32>, f32)> {
        labels
            .iter()
            .filter_map(|label| {
                let name = aliases.get(label).unwrap_or(label);
                let (weights, bias) = self.column(self.find(name)?)?;
                Some((label.clone(), weights, bias))
            })
            .collect()
    }

    /// BirdNET's logit for output `index` on one embedding.
    pub fn logit(&self, embedding: &[f32], index: usize) -> Option<f32> {
        let (weights, bias) = self.column(index)?;
        Some(
            weights
                .iter()
                .zip(embedding)
                .map(|(w, e)| w * e)
                .sum::<f32>()
                + bias,
        )
    }
}

fn unexpected_labels(graph: &Initializers<'_>, n: usize) -> crate::BirdnetError {
    unexpected(
        graph.path(),
        format!("its species layer does not have the {n} outputs labels.txt lists"),
    )
}

fn normalise(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c == '_' || c == '-' {
                ' '
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
