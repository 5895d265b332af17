//! Why a model was refused or could not score.

use crate::model::metadata::MetadataError;

/// A model that cannot serve, with what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The metadata file is missing, unreadable or inconsistent.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The ONNX file could not be read.
    #[error("cannot read model file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The ONNX bytes are not a model tract can load and optimise.
    #[error("model file {path} is not a usable ONNX model ({detail}); re-export it with `anomalyd train`")]
    Onnx {
        /// The file.
        path: String,
        /// tract's explanation.
        detail: String,
    },
    /// The ONNX graph disagrees with its metadata.
    #[error("model file {path} does not match its metadata: {reason}")]
    Contract {
        /// The file.
        path: String,
        /// What disagrees.
        reason: String,
    },
    /// The data's channels are not the model's.
    #[error("channel mismatch: the model {model_version} needs channels {expected:?}; the input is missing {missing:?}")]
    ChannelMismatch {
        /// The model version.
        model_version: String,
        /// The model's channels, in order.
        expected: Vec<String>,
        /// Channels the input lacks.
        missing: Vec<String>,
    },
    /// tract failed while running a batch.
    #[error("scoring failed: {0}")]
    Run(String),
}
