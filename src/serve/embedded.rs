//! The default model, embedded in the binary so the demo and a config
//! without `model.path` need no files.

use super::{ModelError, Scorer};
use crate::model::ModelMetadata;

/// The default model's ONNX bytes (`models/default.onnx`).
pub const DEFAULT_ONNX: &[u8] = include_bytes!("../../models/default.onnx");
/// The default model's metadata (`models/default.json`).
pub const DEFAULT_METADATA: &str = include_str!("../../models/default.json");

/// Loads the embedded default model.
pub fn default_scorer() -> Result<Scorer, ModelError> {
    let metadata = ModelMetadata::from_json(DEFAULT_METADATA, "embedded models/default.json")?;
    Scorer::from_parts(DEFAULT_ONNX, metadata, "embedded models/default.onnx")
}
