//! A model recipe: every setting that turns training data into a model artefact
//! (prepare windows → train in Burn → export ONNX → score validation with tract).

use crate::export::{Artefact, ArtefactInputs};
use crate::model::{LossConfig, NetworkConfig, PerceptualFeatures};
use crate::series::Series;
use crate::serve::ModelError;
use crate::train::{prepare, train, PreparedData, TrainOptions, TrainedModel, TrainingBackend};

/// Why a recipe made no model.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The data gives no training windows.
    #[error("{0}")]
    Data(String),
    /// The recipe's network shape is invalid.
    #[error("{0}")]
    Network(String),
    /// Training failed.
    #[error("training: {0}")]
    Training(String),
    /// The trained network could not be exported or served.
    #[error(transparent)]
    Export(#[from] ModelError),
}

/// Every knob of a training run, with the shipped defaults.
#[derive(Debug, Clone)]
pub struct ModelRecipe {
    /// Model name (file stem).
    pub name: String,
    /// Samples per window.
    pub window_len: usize,
    /// Stride between training windows.
    pub train_stride: usize,
    /// Stride suggested for streaming use, stored in the metadata.
    pub default_stride: usize,
    /// Latest fraction of each entity's rows held out for validation.
    pub validation_fraction: f64,
    /// Encoder convolution widths.
    pub widths: Vec<usize>,
    /// Convolution kernel size (odd).
    pub kernel_size: usize,
    /// Latent code size.
    pub latent_size: usize,
    /// Loss, optimiser schedule, seed and backend.
    pub training: TrainOptions,
}

/// The default loss: the full hybrid with multi-scale differences, chosen by
/// the ablation in models/README.md (best overall F1 and best on noise bursts,
/// the hardest kind; the spectral extractor did worse on every kind).
pub fn default_loss() -> LossConfig {
    LossConfig {
        pointwise_weight: 1.0,
        perceptual_weight: 0.5,
        sparsity_weight: 0.01,
        perceptual_features: PerceptualFeatures::Differences,
        noise_std: 0.2,
        mask_probability: 0.05,
    }
}

impl Default for ModelRecipe {
    fn default() -> Self {
        Self {
            name: "model".into(),
            window_len: 64,
            train_stride: 1,
            default_stride: 8,
            validation_fraction: 0.2,
            widths: vec![16, 32],
            kernel_size: 5,
            latent_size: 16,
            training: TrainOptions::default(),
        }
    }
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            loss: default_loss(),
            batch_size: 64,
            learning_rate: 2e-3,
            max_epochs: 40,
            patience: 5,
            min_steps: 500,
            seed: 42,
            backend: TrainingBackend::Flex,
            progress: false,
        }
    }
}

/// A trained and exported model with its training history.
pub struct BuiltModel {
    /// ONNX bytes and metadata.
    pub artefact: Artefact,
    /// The Burn network and per-epoch losses.
    pub trained: TrainedModel,
}

impl ModelRecipe {
    /// The training windows of `series`, split for validation.
    pub fn prepare(&self, series: &[Series]) -> Result<PreparedData, RecipeError> {
        prepare(
            series,
            self.window_len,
            self.train_stride,
            self.validation_fraction,
        )
        .map_err(RecipeError::Data)
    }

    /// The network this recipe shapes for `channels` channels.
    pub fn network(&self, channels: usize) -> NetworkConfig {
        NetworkConfig {
            channels,
            window_len: self.window_len,
            widths: self.widths.clone(),
            kernel_size: self.kernel_size,
            latent_size: self.latent_size,
        }
    }

    /// Trains on `series` (all entities share the channels) and exports the artefact.
    pub fn build(&self, series: &[Series], source: &str) -> Result<BuiltModel, RecipeError> {
        let data = self.prepare(series)?;
        let network = self.network(data.channels.len());
        network.validate().map_err(RecipeError::Network)?;
        tracing::info!(
            channels = ?data.channels,
            train_windows = data.train_count(),
            validation_windows = data.validation_count(),
            backend = %self.training.backend,
            "training"
        );
        let trained = train(&data, &network, &self.training).map_err(RecipeError::Training)?;
        let backend = self.training.backend.to_string();
        let artefact = Artefact::build(
            &trained,
            &data,
            &ArtefactInputs {
                name: &self.name,
                network: &network,
                loss: &self.training.loss,
                default_stride: self.default_stride,
                source,
                seed: self.training.seed,
                backend: &backend,
            },
        )?;
        Ok(BuiltModel { artefact, trained })
    }
}
