//! Assembles the model artefact (ONNX + metadata), scores the validation
//! windows through tract for the score distribution, and writes both files.

use super::onnx::export_onnx;
use crate::model::metadata::{ScoreDistribution, ScoreQuantile, TrainingSummary, FORMAT_VERSION};
use crate::model::normalise::quantile_sorted;
use crate::model::{LossConfig, ModelMetadata, NetworkConfig};
use crate::serve::{ModelError, Scorer};
use crate::train::{PreparedData, TrainedModel};
use std::path::{Path, PathBuf};

/// Quantiles of validation scores stored for calibration.
const QUANTILES: [f64; 9] = [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999];

/// Fewest validation windows the quantiles are written from: the 0.99
/// quantile of 17 windows is the largest of them, and as a threshold it
/// flagged two thirds of a file's normal rows. Below this the list is
/// empty (`count` still says how many there were).
pub const MIN_QUANTILE_WINDOWS: usize = 100;

/// A model ready to be written: ONNX bytes and finished metadata.
pub struct Artefact {
    /// The ONNX file's bytes.
    pub onnx: Vec<u8>,
    /// The metadata, with its version and score distribution filled in.
    pub metadata: ModelMetadata,
}

/// What the exporter needs to know besides the trained network.
pub struct ArtefactInputs<'a> {
    /// Model name (file stem).
    pub name: &'a str,
    /// The network's shape.
    pub network: &'a NetworkConfig,
    /// The loss it was trained with.
    pub loss: &'a LossConfig,
    /// Suggested streaming stride.
    pub default_stride: usize,
    /// Data source name.
    pub source: &'a str,
    /// Seed used.
    pub seed: u64,
    /// Backend used.
    pub backend: &'a str,
}

impl Artefact {
    /// Exports the network, then scores the validation windows through tract
    /// (the serving path) to record their distribution.
    pub fn build(
        trained: &TrainedModel,
        data: &PreparedData,
        inputs: &ArtefactInputs,
    ) -> Result<Self, ModelError> {
        let onnx = export_onnx(&trained.network, inputs.network, env!("CARGO_PKG_VERSION"));
        let mut metadata = ModelMetadata {
            format_version: FORMAT_VERSION,
            name: inputs.name.to_string(),
            model_version: String::new(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            channels: data.channels.clone(),
            window_len: data.window_len,
            default_stride: inputs.default_stride,
            network: inputs.network.clone(),
            normalisation: data.normalisation.clone(),
            loss: inputs.loss.clone(),
            training: TrainingSummary {
                source: inputs.source.to_string(),
                entities: data.entities,
                train_rows: data.train_rows,
                validation_rows: data.validation_rows,
                train_windows: data.train_count(),
                validation_windows: data.validation_count(),
                time_range_ms: data.time_range_ms,
                seed: inputs.seed,
                backend: inputs.backend.to_string(),
                epochs_run: trained.history.len(),
                best_epoch: trained.best_epoch,
                best_validation_loss: Some(trained.best_validation_loss)
                    .filter(|loss| loss.is_finite()),
                seconds: trained.seconds,
            },
            validation_scores: ScoreDistribution {
                count: 0,
                mean: 0.0,
                quantiles: Vec::new(),
            },
        };
        let scorer = Scorer::from_parts(&onnx, metadata.clone(), "freshly exported model")?;
        let mut scores: Vec<f64> = Vec::with_capacity(data.validation_count());
        let size = data.window_size();
        for chunk in data.validation_windows.chunks(size * 256) {
            let count = chunk.len() / size;
            scores.extend(
                scorer
                    .score_normalised(chunk, count)?
                    .iter()
                    .map(|s| s.score as f64),
            );
        }
        scores.sort_by(|a, b| a.total_cmp(b));
        let quantiles = if scores.len() >= MIN_QUANTILE_WINDOWS {
            QUANTILES
                .iter()
                .map(|&q| ScoreQuantile {
                    q,
                    score: quantile_sorted(&scores, q) as f32,
                })
                .collect()
        } else {
            Vec::new()
        };
        metadata.validation_scores = ScoreDistribution {
            count: scores.len(),
            mean: if scores.is_empty() {
                0.0
            } else {
                (scores.iter().sum::<f64>() / scores.len() as f64) as f32
            },
            quantiles,
        };
        metadata.model_version = metadata.compute_version(&onnx);
        Ok(Self { onnx, metadata })
    }
}

/// Writes `<dir>/<name>.onnx` and `<dir>/<name>.json`; returns the ONNX path.
pub fn write_artefact(artefact: &Artefact, dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let onnx_path = dir.join(format!("{}.onnx", artefact.metadata.name));
    let json = serde_json::to_string_pretty(&artefact.metadata).expect("metadata serialises");
    std::fs::write(&onnx_path, &artefact.onnx)?;
    std::fs::write(onnx_path.with_extension("json"), json + "\n")?;
    Ok(onnx_path)
}
