//! The model artefact's metadata file (`models/<name>.json`): the contract between training and serving.

use super::features::PerceptualFeatures;
use super::network_config::NetworkConfig;
use super::normalise::ChannelNormalisation;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The metadata format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the ONNX graph input.
pub const INPUT_NAME: &str = "window";
/// Name of the ONNX graph output.
pub const OUTPUT_NAME: &str = "reconstruction";

/// Everything a scorer needs besides the ONNX graph, and a record of how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMetadata {
    /// Version of this file's layout; a scorer refuses any other.
    pub format_version: u32,
    /// Short model name (the file stem).
    pub name: String,
    /// Content hash of the ONNX bytes and this metadata (without this field
    /// and `created_at`), as `sha256:<16 hex digits>`; used as the model version.
    pub model_version: String,
    /// When the model was made (RFC 3339, UTC).
    pub created_at: String,
    /// Channel names in the order of the model's input channels.
    pub channels: Vec<String>,
    /// Samples per window.
    pub window_len: usize,
    /// Stride suggested for streaming use (windows are scored every `default_stride` samples).
    pub default_stride: usize,
    /// Network shape.
    pub network: NetworkConfig,
    /// Per-channel normalisation, in channel order.
    pub normalisation: Vec<ChannelNormalisation>,
    /// The training loss, whose distance also defines the serving score.
    pub loss: LossConfig,
    /// What the model was trained on and how training went.
    pub training: TrainingSummary,
    /// Distribution of serving scores on the validation windows.
    pub validation_scores: ScoreDistribution,
}

/// Weights and settings of the hybrid denoising loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// Weight `a` of the pointwise mean squared error.
    pub pointwise_weight: f32,
    /// Weight `b` of the perceptual (frozen-feature) distance.
    pub perceptual_weight: f32,
    /// Weight `c` of the L1 penalty on the latent code.
    pub sparsity_weight: f32,
    /// The frozen feature extractor.
    pub perceptual_features: PerceptualFeatures,
    /// Standard deviation of the Gaussian corruption, in normalised units (0 = none).
    pub noise_std: f32,
    /// Probability that a sample is masked (set to the channel median) (0 = none).
    pub mask_probability: f32,
}

/// A record of the training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSummary {
    /// Where the data came from (file name).
    pub source: String,
    /// Number of entities in the data.
    pub entities: usize,
    /// Rows used for training and for validation.
    pub train_rows: usize,
    /// Rows held out (the latest part of each entity's series).
    pub validation_rows: usize,
    /// Windows in each split.
    pub train_windows: usize,
    /// Validation windows.
    pub validation_windows: usize,
    /// First and last timestamp of the data (epoch ms).
    pub time_range_ms: [i64; 2],
    /// Seed of every random choice.
    pub seed: u64,
    /// Burn backend used.
    pub backend: String,
    /// Epochs run, and the epoch whose weights were kept (1-based).
    pub epochs_run: usize,
    /// The epoch with the best validation loss (1-based).
    pub best_epoch: usize,
    /// Validation loss at that epoch (`null`: trained without validation).
    pub best_validation_loss: Option<f32>,
    /// Wall-clock training time.
    pub seconds: f64,
}

/// Quantiles of serving scores on validation windows: the raw material of calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreDistribution {
    /// Number of validation windows scored.
    pub count: usize,
    /// Mean score.
    pub mean: f32,
    /// `(q, score)` pairs for increasing `q`.
    pub quantiles: Vec<ScoreQuantile>,
}

/// One quantile of the validation scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreQuantile {
    /// Probability in [0, 1].
    pub q: f64,
    /// Score at that probability.
    pub score: f32,
}

/// Why a metadata file was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The file could not be read.
    #[error("cannot read model metadata {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not metadata JSON.
    #[error("model metadata {path} is not valid: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The JSON error (names the field and line).
        source: serde_json::Error,
    },
    /// The file has another format version.
    #[error("model metadata {path} has format_version {found}, this anomalyd reads version {expected}: re-export the model with this version")]
    Version {
        /// The file.
        path: String,
        /// The version found.
        found: u32,
        /// The version supported.
        expected: u32,
    },
    /// The fields disagree with each other.
    #[error("model metadata {path} is inconsistent: {reason}")]
    Inconsistent {
        /// The file.
        path: String,
        /// What disagrees.
        reason: String,
    },
}

impl ModelMetadata {
    /// Reads and checks a metadata file.
    pub fn load(path: &Path) -> Result<Self, MetadataError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| MetadataError::Read {
            path: display.clone(),
            source,
        })?;
        Self::from_json(&text, &display)
    }

    /// Parses and checks metadata text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, MetadataError> {
        // Read the version first, so an old or future file gets the version
        // message rather than a confusing "unknown field".
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: Option<u32>,
        }
        let version: VersionOnly =
            serde_json::from_str(text).map_err(|source| MetadataError::Parse {
                path: origin.to_string(),
                source,
            })?;
        match version.format_version {
            Some(FORMAT_VERSION) => {}
            Some(found) => {
                return Err(MetadataError::Version {
                    path: origin.to_string(),
                    found,
                    expected: FORMAT_VERSION,
                })
            }
            None => {
                return Err(MetadataError::Inconsistent {
                    path: origin.to_string(),
                    reason: "format_version is missing".into(),
                })
            }
        }
        let metadata: ModelMetadata =
            serde_json::from_str(text).map_err(|source| MetadataError::Parse {
                path: origin.to_string(),
                source,
            })?;
        metadata
            .validate()
            .map_err(|reason| MetadataError::Inconsistent {
                path: origin.to_string(),
                reason,
            })?;
        Ok(metadata)
    }

    /// Cross-field checks; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        self.network.validate()?;
        if self.channels.is_empty() {
            return Err("channels is empty".into());
        }
        let mut seen = std::collections::HashSet::new();
        for channel in &self.channels {
            if channel.is_empty() {
                return Err("channels contains an empty name".into());
            }
            if !seen.insert(channel) {
                return Err(format!("channels lists {channel:?} twice"));
            }
        }
        if self.network.channels != self.channels.len() {
            return Err(format!(
                "network.channels is {} but channels lists {} names",
                self.network.channels,
                self.channels.len()
            ));
        }
        if self.network.window_len != self.window_len {
            return Err(format!(
                "network.window_len is {} but window_len is {}",
                self.network.window_len, self.window_len
            ));
        }
        if self.default_stride == 0 {
            return Err("default_stride must be at least 1".into());
        }
        if self.normalisation.len() != self.channels.len() {
            return Err(format!(
                "normalisation has {} entries for {} channels",
                self.normalisation.len(),
                self.channels.len()
            ));
        }
        for (channel, norm) in self.channels.iter().zip(&self.normalisation) {
            if &norm.channel != channel {
                return Err(format!(
                    "normalisation entry {:?} is out of order: expected {channel:?}",
                    norm.channel
                ));
            }
            if !(norm.center.is_finite() && norm.scale.is_finite() && norm.scale > 0.0) {
                return Err(format!(
                    "normalisation of {channel:?} needs a finite center and a finite scale > 0"
                ));
            }
        }
        let weights = [
            self.loss.pointwise_weight,
            self.loss.perceptual_weight,
            self.loss.sparsity_weight,
        ];
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err("loss weights must be finite and >= 0".into());
        }
        Ok(())
    }

    /// The canonical bytes hashed into `model_version`: the metadata without
    /// the version and creation time, so the same training gives the same version.
    pub fn hashed_content(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.model_version.clear();
        copy.created_at.clear();
        copy.training.seconds = 0.0;
        serde_json::to_vec(&copy).expect("metadata serialises")
    }

    /// Computes the model version from the ONNX bytes and this metadata.
    pub fn compute_version(&self, onnx: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(onnx);
        hasher.update(self.hashed_content());
        let digest = hasher.finalize();
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}
