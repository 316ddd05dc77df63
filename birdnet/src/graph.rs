//! Reading the constants the Rust front-end and the species layer need out of the
//! installed ONNX graph.
//!
//! The installer's conversion is reproducible (it checks its output against a reference
//! build byte for byte), so the tensors have fixed names; each is still checked for its
//! shape and type, and anything else is refused as [`BirdnetError::UnexpectedGraph`]
//! rather than run with wrong constants.

use std::collections::HashMap;
use std::path::Path;

use tract_onnx::pb::{ModelProto, TensorProto};
use tract_onnx::prelude::*;

use crate::error::{BirdnetError, Result};

/// The graph's initializers by name.
pub(crate) struct Initializers<'a> {
    path: &'a Path,
    by_name: HashMap<&'a str, &'a TensorProto>,
    /// Node name → (inputs, outputs), to check that a tensor feeds where we think.
    nodes: HashMap<&'a str, (&'a [String], &'a [String])>,
}

impl<'a> Initializers<'a> {
    pub(crate) fn new(path: &'a Path, proto: &'a ModelProto) -> Result<Self> {
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| unexpected(path, "the file holds no graph"))?;
        Ok(Self {
            path,
            by_name: graph
                .initializer
                .iter()
                .map(|t| (t.name.as_str(), t))
                .collect(),
            nodes: graph
                .node
                .iter()
                .map(|n| (n.name.as_str(), (n.input.as_slice(), n.output.as_slice())))
                .collect(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        self.path
    }

    /// The float32 initializer `name`, which must have `shape`.
    pub(crate) fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let proto = self
            .by_name
            .get(name)
            .ok_or_else(|| unexpected(self.path, format!("constant {name} is missing")))?;
        let tensor = tract_onnx::tensor::load_tensor(
            &tract_onnx::data_resolver::FopenDataResolver,
            proto,
            None,
        )
        .map_err(|e| unexpected(self.path, format!("constant {name}: {e}")))?;
        if tensor.datum_type() != f32::datum_type() || tensor.shape() != shape {
            return Err(unexpected(
                self.path,
                format!(
                    "constant {name} is {:?} {:?}, expected f32 {shape:?}",
                    tensor.datum_type(),
                    tensor.shape()
                ),
            ));
        }
        let values = tensor
            .to_plain_array_view::<f32>()
            .map_err(|e| unexpected(self.path, format!("constant {name}: {e}")))?;
        Ok(values.iter().copied().collect())
    }

    /// Checks that node `node` reads tensor `input` at position `at`.
    pub(crate) fn expect_input(&self, node: &str, at: usize, input: &str) -> Result<()> {
        match self.nodes.get(node) {
            Some((inputs, _)) if inputs.get(at).is_some_and(|i| i == input) => Ok(()),
            Some(_) => Err(unexpected(
                self.path,
                format!("node {node} does not read {input} as input {at}"),
            )),
            None => Err(unexpected(self.path, format!("node {node} is missing"))),
        }
    }
}

pub(crate) fn unexpected(path: &Path, reason: impl Into<String>) -> BirdnetError {
    BirdnetError::UnexpectedGraph {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}
