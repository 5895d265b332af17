//! Offline training in Burn: windows, denoising corruption, the hybrid loss and the training loop.

pub mod corrupt;
pub mod curve;
pub mod data;
pub mod loss;
pub mod network;
pub mod trainer;

pub use data::{prepare, PreparedData};
pub use network::Autoencoder;
pub use trainer::{train, EpochRecord, TrainOptions, TrainedModel, TrainingBackend};
