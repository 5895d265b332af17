//! Serving: the tract scorer that turns windows into scores, channel contributions and reconstructions.

pub mod error;
pub mod scorer;

pub use error::ModelError;
pub mod embedded;
pub use scorer::{metadata_path, BatchPart, Scorer, WindowScore};
