//! Export of a trained model: the ONNX graph and the metadata file beside it.

pub mod artefact;
pub mod onnx;

pub use artefact::{write_artefact, Artefact, ArtefactInputs};
pub use onnx::export_onnx;
