//! The scorer: loads an ONNX model and its metadata with tract, checks the
//! contract, and scores batches of windows.
//!
//! We depend on `tract-onnx` (not the `tract` facade): it is the crate that
//! reads ONNX, and it also exposes the ONNX protobuf types our exporter
//! writes, so one dependency serves both directions.

use super::error::ModelError;
use crate::model::metadata::{INPUT_NAME, OUTPUT_NAME};
use crate::model::{FeatureExtractor, ModelMetadata};
use crate::window::Window;
use smallvec::SmallVec;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tract_onnx::prelude::*;

/// The score of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowScore {
    /// Higher = more anomalous: the hybrid distance between the window and its
    /// reconstruction (pointwise and perceptual terms with the training weights).
    pub score: f32,
    /// Each channel's share of `score` (they sum to it), in model channel
    /// order; inline up to 8 channels, so a window's score allocates nothing.
    pub channel_contributions: SmallVec<[f32; 8]>,
    /// The reconstruction, normalised (as the model sees the window),
    /// channel-major like the window; [`Scorer::denormalise`] gives a value
    /// in its channel's units. Kept normalised because only a few values are
    /// ever needed in channel units (an alert's evidence), and converting a
    /// whole window back for every score cost more than the rest of the
    /// scoring outside the model.
    pub normalised_reconstruction: BatchPart,
}

/// One window's part of a batch's values, shared with the batch's other
/// windows: one allocation per batch, not per window. It reads as a slice.
/// Holding one keeps the whole batch's values alive (for 64 windows of
/// 5 × 64, 80 KB): the daemon and `detect` drop each batch's scores once
/// its windows are decided.
#[derive(Clone)]
pub struct BatchPart {
    /// The batch's values as the model returned them (an `Arc<[f32]>`
    /// would copy them once more).
    batch: Arc<Vec<f32>>,
    range: std::ops::Range<usize>,
}

impl std::ops::Deref for BatchPart {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.batch[self.range.clone()]
    }
}

impl std::fmt::Debug for BatchPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for BatchPart {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

/// Batch sizes the model is optimised for, largest first. tract picks its
/// matrix-product kernels when it optimises a model, and with a symbolic
/// batch it cannot see how wide the products are and chose narrow kernels.
/// With fixed batches and the batch-folded export the network ran 1.2–1.5×
/// faster at batch 8–512 (BENCHMARKS.md, section 1). A batch of any size
/// runs as chunks of these sizes ([`chunk_size`]).
const PLAN_BATCHES: [usize; 10] = [512, 256, 128, 64, 32, 16, 8, 4, 2, 1];

/// A loaded, optimised, checked model.
pub struct Scorer {
    metadata: ModelMetadata,
    /// One plan per size of [`PLAN_BATCHES`], in that order.
    plans: Vec<Arc<TypedRunnableModel>>,
    features: FeatureExtractor,
}

/// The next chunk of a batch with `remaining` windows left: the largest
/// planned size that fits, or the smallest one that holds them all if it
/// wastes at most an eighth of its windows on padding (31 windows run as 32,
/// not as 16 + 8 + 4 + 2 + 1). Returns the index in [`PLAN_BATCHES`] and
/// how many real windows go in.
fn chunk_size(remaining: usize) -> (usize, usize) {
    let fits = PLAN_BATCHES
        .iter()
        .position(|&size| size <= remaining)
        .expect("remaining >= 1 and the smallest size is 1");
    if fits > 0 {
        let above = PLAN_BATCHES[fits - 1];
        if above - remaining <= above / 8 {
            return (fits - 1, remaining);
        }
    }
    (fits, PLAN_BATCHES[fits])
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("model_version", &self.metadata.model_version)
            .finish()
    }
}

/// The metadata file that belongs to an ONNX file: same path, `.json` extension.
pub fn metadata_path(onnx_path: &Path) -> PathBuf {
    onnx_path.with_extension("json")
}

impl Scorer {
    /// Loads `<name>.onnx` and `<name>.json`, optimises once and checks the contract.
    pub fn load(onnx_path: &Path) -> Result<Self, ModelError> {
        let metadata = ModelMetadata::load(&metadata_path(onnx_path))?;
        let bytes = std::fs::read(onnx_path).map_err(|source| ModelError::Read {
            path: onnx_path.display().to_string(),
            source,
        })?;
        let origin = onnx_path.display().to_string();
        let version = metadata.compute_version(&bytes);
        let scorer = Self::from_parts(&bytes, metadata, &origin)?;
        // Last, so that a broken file gets the more specific message above.
        if version != scorer.metadata.model_version {
            return Err(ModelError::Contract {
                path: origin,
                reason: format!(
                    "its content hashes to {version} but the metadata names {}: the ONNX file or its metadata changed after export",
                    scorer.metadata.model_version
                ),
            });
        }
        Ok(scorer)
    }

    /// Builds a scorer from ONNX bytes and metadata; `origin` names the model in errors.
    pub fn from_parts(
        onnx: &[u8],
        metadata: ModelMetadata,
        origin: &str,
    ) -> Result<Self, ModelError> {
        let onnx_error = |detail: String| ModelError::Onnx {
            path: origin.to_string(),
            detail,
        };
        let contract = |reason: String| ModelError::Contract {
            path: origin.to_string(),
            reason,
        };
        metadata.validate().map_err(contract)?;
        let model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(onnx))
            .map_err(|e| onnx_error(format!("{e:#}")))?;
        check_io_names(&model, origin)?;
        let typed = model
            .clone()
            .into_typed()
            .map_err(|e| onnx_error(format!("{e:#}")))?;
        let channels = metadata.channels.len();
        let window_len = metadata.window_len;
        for (what, fact) in [
            (
                "input",
                typed.input_fact(0).map_err(|e| onnx_error(e.to_string()))?,
            ),
            (
                "output",
                typed
                    .output_fact(0)
                    .map_err(|e| onnx_error(e.to_string()))?,
            ),
        ] {
            let dims: Vec<String> = fact.shape.iter().map(|d| d.to_string()).collect();
            let fixed = fact.shape.as_concrete().is_some();
            let ok = dims.len() == 3
                && !fixed
                && dims[1] == channels.to_string()
                && dims[2] == window_len.to_string();
            if !ok {
                return Err(contract(format!(
                    "{what} shape is [{}], metadata says [batch, {channels}, {window_len}] with a symbolic batch",
                    dims.join(", ")
                )));
            }
        }
        let plans = PLAN_BATCHES
            .iter()
            .map(|&batch| {
                let input = f32::fact([batch, channels, window_len]);
                model
                    .clone()
                    .with_input_fact(0, input.into())
                    .and_then(|fixed| fixed.into_optimized())
                    .and_then(|optimised| optimised.into_runnable())
                    .map_err(|e| onnx_error(format!("batch {batch}: {e:#}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let scorer = Self {
            features: FeatureExtractor::new(metadata.loss.perceptual_features, window_len),
            metadata,
            plans,
        };
        scorer.warm_up(origin)?;
        Ok(scorer)
    }

    /// Runs one all-median window through the model: catches NaN or infinite
    /// weights before the model serves, and warms caches.
    fn warm_up(&self, origin: &str) -> Result<(), ModelError> {
        let zeros = vec![0.0f32; self.window_size()];
        let reconstruction = self.reconstruct_normalised(&zeros, 1)?;
        if reconstruction.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::Contract {
                path: origin.to_string(),
                reason: "a test window reconstructs to NaN or infinity: the weights are not finite"
                    .into(),
            });
        }
        Ok(())
    }

    /// The model's metadata.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    /// The model version (content hash).
    pub fn model_version(&self) -> &str {
        &self.metadata.model_version
    }

    /// Values per window.
    pub fn window_size(&self) -> usize {
        self.metadata.channels.len() * self.metadata.window_len
    }

    /// For each model channel, its index in `available` (e.g. a CSV header);
    /// refuses the input if any model channel is missing.
    pub fn map_channels(&self, available: &[String]) -> Result<Vec<usize>, ModelError> {
        let mut indices = Vec::with_capacity(self.metadata.channels.len());
        let mut missing = Vec::new();
        for channel in &self.metadata.channels {
            match available.iter().position(|a| a == channel) {
                Some(i) => indices.push(i),
                None => missing.push(channel.clone()),
            }
        }
        if missing.is_empty() {
            Ok(indices)
        } else {
            Err(ModelError::ChannelMismatch {
                model_version: self.metadata.model_version.clone(),
                expected: self.metadata.channels.clone(),
                missing,
            })
        }
    }

    /// Normalises a raw channel-major window in place.
    pub fn normalise(&self, window: &mut [f32]) {
        let len = self.metadata.window_len;
        for (channel, norm) in window.chunks_mut(len).zip(&self.metadata.normalisation) {
            for value in channel {
                *value = norm.apply(*value);
            }
        }
    }

    /// A value of `channel` (model channel index), normalised as the model takes it.
    #[inline]
    pub fn normalise_value(&self, channel: usize, value: f32) -> f32 {
        self.metadata.normalisation[channel].apply(value)
    }

    /// A normalised value of `channel` (model channel index) in the channel's units.
    pub fn denormalise(&self, channel: usize, normalised: f32) -> f32 {
        self.metadata.normalisation[channel].invert(normalised)
    }

    /// Runs the network on `count` normalised windows (`[count, channels, window_len]`).
    pub fn reconstruct_normalised(
        &self,
        windows: &[f32],
        count: usize,
    ) -> Result<Vec<f32>, ModelError> {
        let (channels, window_len) = (self.metadata.channels.len(), self.metadata.window_len);
        let size = self.window_size();
        if windows.len() != count * size {
            return Err(ModelError::Run(format!(
                "{} values given for {count} windows of {size}",
                windows.len()
            )));
        }
        // The exported graph keeps a batch's windows apart only for finite
        // values (export::onnx, `Gapped`); decoding and normalisation make
        // every value finite.
        debug_assert!(
            windows.iter().all(|v| v.is_finite()),
            "non-finite value in a window"
        );
        let mut reconstructed = Vec::with_capacity(count * size);
        let mut start = 0;
        while start < count {
            let (plan, taken) = chunk_size(count - start);
            let batch = PLAN_BATCHES[plan];
            let mut chunk = windows[start * size..(start + taken) * size].to_vec();
            chunk.resize(batch * size, 0.0);
            let input = tract_ndarray::Array3::from_shape_vec([batch, channels, window_len], chunk)
                .map_err(|e| ModelError::Run(e.to_string()))?;
            let outputs = self.plans[plan]
                .run(tvec!(Tensor::from(input).into_tvalue()))
                .map_err(|e| ModelError::Run(format!("{e:#}")))?;
            let view = outputs[0]
                .to_plain_array_view::<f32>()
                .map_err(|e| ModelError::Run(e.to_string()))?;
            // tract's outputs are contiguous: one copy, not a generic
            // iteration over a dynamic-rank view (3 % of the network's time).
            match view.as_slice() {
                Some(values) => reconstructed.extend_from_slice(&values[..taken * size]),
                None => reconstructed.extend(view.iter().take(taken * size).copied()),
            }
            start += taken;
        }
        Ok(reconstructed)
    }

    /// Scores `count` normalised windows.
    pub fn score_normalised(
        &self,
        windows: &[f32],
        count: usize,
    ) -> Result<Vec<WindowScore>, ModelError> {
        let reconstruction = Arc::new(self.reconstruct_normalised(windows, count)?);
        let size = self.window_size();
        Ok(windows
            .chunks(size)
            .enumerate()
            .map(|(index, window)| {
                let part = BatchPart {
                    batch: Arc::clone(&reconstruction),
                    range: index * size..(index + 1) * size,
                };
                self.score_one(window, part)
            })
            .collect())
    }

    /// Scores raw windows (in the channels' own units), in one model call.
    pub fn score_windows<'w>(
        &self,
        windows: impl IntoIterator<Item = &'w Window>,
    ) -> Result<Vec<WindowScore>, ModelError> {
        self.score_gathered(windows, true)
    }

    /// Scores windows whose values are normalised already (as
    /// [`normalise`](Self::normalise) or [`normalise_value`](Self::normalise_value)
    /// give them), in one model call.
    pub fn score_normalised_windows<'w>(
        &self,
        windows: impl IntoIterator<Item = &'w Window>,
    ) -> Result<Vec<WindowScore>, ModelError> {
        self.score_gathered(windows, false)
    }

    /// Gathers `windows` into one batch (normalising each if `normalise`) and scores it.
    fn score_gathered<'w>(
        &self,
        windows: impl IntoIterator<Item = &'w Window>,
        normalise: bool,
    ) -> Result<Vec<WindowScore>, ModelError> {
        let windows = windows.into_iter();
        let mut batch = Vec::with_capacity(windows.size_hint().0 * self.window_size());
        let mut count = 0;
        for window in windows {
            let start = batch.len();
            batch.extend_from_slice(&window.values);
            if normalise {
                self.normalise(&mut batch[start..]);
            }
            count += 1;
        }
        self.score_normalised(&batch, count)
    }

    /// The hybrid distance between a normalised window and its reconstruction.
    fn score_one(&self, window: &[f32], reconstructed: BatchPart) -> WindowScore {
        let len = self.metadata.window_len;
        let channels = self.metadata.channels.len() as f32;
        let loss = &self.metadata.loss;
        let mut contributions = SmallVec::with_capacity(self.metadata.channels.len());
        for (x, y) in window.chunks(len).zip(reconstructed.chunks(len)) {
            let squared: f32 =
                x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / len as f32;
            let mut contribution = loss.pointwise_weight * squared;
            if loss.perceptual_weight > 0.0 {
                contribution += loss.perceptual_weight * self.features.distance(x, y);
            }
            contributions.push(contribution / channels);
        }
        WindowScore {
            score: contributions.iter().sum(),
            channel_contributions: contributions,
            normalised_reconstruction: reconstructed,
        }
    }
}

fn check_io_names(model: &InferenceModel, origin: &str) -> Result<(), ModelError> {
    let names = |outlets: TractResult<&[OutletId]>| -> Result<Vec<String>, ModelError> {
        let outlets = outlets.map_err(|e| ModelError::Onnx {
            path: origin.into(),
            detail: e.to_string(),
        })?;
        Ok(outlets
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect())
    };
    let inputs = names(model.input_outlets())?;
    let outputs = names(model.output_outlets())?;
    if inputs != [INPUT_NAME] {
        return Err(ModelError::Contract {
            path: origin.into(),
            reason: format!("graph inputs are {inputs:?}, expected [{INPUT_NAME:?}]"),
        });
    }
    if outputs.len() != 1 {
        return Err(ModelError::Contract {
            path: origin.into(),
            reason: format!("graph has outputs {outputs:?}, expected one ({OUTPUT_NAME:?})"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{chunk_size, PLAN_BATCHES};

    /// Every batch size runs as planned chunks that hold each window once,
    /// padded by at most an eighth of a chunk.
    #[test]
    fn chunks_cover_every_batch_once_with_little_padding() {
        for count in 1..=1_500 {
            let (mut start, mut chunks) = (0, 0);
            while start < count {
                let (plan, taken) = chunk_size(count - start);
                let size = PLAN_BATCHES[plan];
                assert!(taken >= 1 && taken <= size && taken <= count - start);
                assert!(size - taken <= size / 8, "{count}: {taken} in {size}");
                start += taken;
                chunks += 1;
            }
            assert_eq!(start, count);
            assert!(
                chunks <= count.div_ceil(512) + 9,
                "{count}: {chunks} chunks"
            );
        }
        assert_eq!(chunk_size(31), (4, 31), "31 windows run as one chunk of 32");
        assert_eq!(chunk_size(100), (3, 64));
    }
}
