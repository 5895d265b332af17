//! Measuring detection quality: ranking metrics, the detector on a labelled
//! file (`labelled`), NAB, and the loss ablation (`synthetic`: a model's
//! window scores per anomaly kind).

pub mod ablation;
pub mod html;
pub mod labelled;
pub mod metrics;
pub mod nab;
pub mod synthetic;

pub use synthetic::{quality, score_labelled, Quality};
