//! The model artefact: its metadata contract, normalisation, network shape and frozen features.

pub mod features;
pub mod metadata;
pub mod network_config;
pub mod normalise;

pub use features::{FeatureExtractor, PerceptualFeatures};
pub use metadata::{LossConfig, ModelMetadata, FORMAT_VERSION};
pub use network_config::NetworkConfig;
pub use normalise::ChannelNormalisation;
