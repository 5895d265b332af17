//! Measuring detection quality: ranking metrics, labelled evaluation and the loss ablation.

pub mod ablation;
pub mod metrics;
pub mod nab;
pub mod synthetic;

pub use synthetic::{quality, score_labelled, Quality};
