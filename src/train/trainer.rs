//! The training loop: Adam on mini-batches of corrupted windows, early stopping on validation loss.

use super::corrupt::corrupt;
use super::data::PreparedData;
use super::loss::{scalar, HybridLoss};
use super::network::Autoencoder;
use crate::model::{LossConfig, NetworkConfig};
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// The Burn CPU backend to train on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TrainingBackend {
    /// `burn-flex`, Burn's current pure-Rust CPU backend (the default: faster here, see models/README.md).
    Flex,
    /// `burn-ndarray`, deprecated upstream in favour of flex; kept for comparison.
    Ndarray,
}

impl TrainingBackend {
    /// The device (without autodiff), or why this build cannot train on it.
    pub fn device(self) -> Result<Device, String> {
        match self {
            TrainingBackend::Flex => Ok(Device::flex()),
            TrainingBackend::Ndarray => ndarray_device(),
        }
    }
}

#[cfg(feature = "ndarray")]
#[allow(deprecated)] // `Device::ndarray` is deprecated upstream; we keep it to measure it.
fn ndarray_device() -> Result<Device, String> {
    Ok(Device::ndarray())
}

#[cfg(not(feature = "ndarray"))]
fn ndarray_device() -> Result<Device, String> {
    Err("this anomalyd was built without the ndarray backend: rebuild with `--features ndarray`, or use --backend flex".into())
}

impl std::fmt::Display for TrainingBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrainingBackend::Flex => "flex",
            TrainingBackend::Ndarray => "ndarray",
        })
    }
}

/// How to train, whatever the network's shape: the loss, the optimiser's
/// schedule, the seed and the backend. Its defaults are the shipped
/// recipe's ([`crate::recipe::ModelRecipe`]).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Loss weights and corruption.
    pub loss: LossConfig,
    /// Windows per mini-batch.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Upper bound on epochs.
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation loss...
    pub patience: usize,
    /// ...but never before this many optimiser steps, and run more epochs
    /// than `max_epochs` if that is what it takes: on a small file an epoch
    /// is a handful of steps, and epochs alone would stop before the network
    /// has learnt anything.
    pub min_steps: usize,
    /// Seed of initialisation, shuffling and corruption.
    pub seed: u64,
    /// Burn backend.
    pub backend: TrainingBackend,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// Losses of one epoch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean total training loss over the epoch's batches (corrupted inputs).
    pub train_loss: f32,
    /// Total validation loss (clean inputs, as served).
    pub validation_loss: f32,
    /// Validation pointwise term.
    pub validation_pointwise: f32,
    /// Validation perceptual term.
    pub validation_perceptual: f32,
    /// Validation sparsity term.
    pub validation_sparsity: f32,
    /// Seconds spent in this epoch's training batches.
    pub seconds: f64,
}

/// The result of training: the best network (inference mode) and its history.
pub struct TrainedModel {
    /// Weights of the epoch with the lowest validation loss.
    pub network: Autoencoder,
    /// One record per epoch run.
    pub history: Vec<EpochRecord>,
    /// The epoch whose weights were kept (1-based).
    pub best_epoch: usize,
    /// Its validation loss (NaN without validation windows).
    pub best_validation_loss: f32,
    /// Optimiser steps run.
    pub steps: usize,
    /// Wall-clock seconds for the whole run.
    pub seconds: f64,
}

/// Trains a network on prepared windows.
pub fn train(
    data: &PreparedData,
    network: &NetworkConfig,
    options: &TrainOptions,
) -> Result<TrainedModel, String> {
    let started = Instant::now();
    let device = options.backend.device()?.autodiff();
    let mut network = seeded_network(network, options, &device);
    let inference_device = device.clone().without_autodiff();
    let loss = HybridLoss::new(&options.loss, data.window_len, &device);
    let validation_loss_fn = HybridLoss::new(&options.loss, data.window_len, &inference_device);
    let mut optimizer = AdamConfig::new().init();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let channels = data.channels.len();
    let mut order: Vec<usize> = (0..data.train_count()).collect();
    let steps_per_epoch = data.train_count().div_ceil(options.batch_size).max(1);
    let max_epochs = options
        .max_epochs
        .max(options.min_steps.div_ceil(steps_per_epoch));
    // Without validation windows there is no early stopping: every epoch
    // runs and the last weights are kept.
    let has_validation = data.validation_count() > 0;

    let mut log = EpochLog {
        bar: progress_bar(options.progress, max_epochs),
        history: Vec::new(),
        best: None,
        has_validation,
        patience: options.patience,
        min_steps: options.min_steps,
    };
    let mut steps = 0usize;
    for epoch in 1..=max_epochs {
        let epoch_started = Instant::now();
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0f64;
        let mut batches = 0usize;
        for batch_indices in order.chunks(options.batch_size) {
            let batch = batch_indices.len();
            let (clean, corrupted) = batch_windows(data, batch_indices, options, &mut rng);
            let shape = [batch, channels, data.window_len];
            let clean = Tensor::<3>::from_data(TensorData::new(clean, shape), &device);
            let input = Tensor::<3>::from_data(TensorData::new(corrupted, shape), &device);
            let (reconstruction, latent) = network.forward(input);
            let terms = loss.terms(reconstruction, clean, latent);
            let gradients = terms.total.backward();
            loss_sum += scalar(terms.total.clone()) as f64;
            batches += 1;
            let gradients = GradientsParams::from_grads(gradients, &network);
            network = optimizer.step(options.learning_rate, network, gradients);
        }
        steps += batches;
        let train_seconds = epoch_started.elapsed().as_secs_f64();
        let validation = if has_validation {
            validate(
                &network.valid(),
                &validation_loss_fn,
                data,
                &inference_device,
            )
        } else {
            [f32::NAN; 4]
        };
        let train_loss = (loss_sum / batches.max(1) as f64) as f32;
        let record = EpochRecord::new(epoch, train_loss, validation, train_seconds);
        if log.record(record, || network.valid(), steps) {
            break;
        }
    }
    log.bar.finish_and_clear();
    let (best_epoch, best_validation_loss, network) = log.best.expect("at least one epoch ran");
    Ok(TrainedModel {
        network,
        history: log.history,
        best_epoch,
        best_validation_loss,
        steps,
        seconds: started.elapsed().as_secs_f64(),
    })
}

impl EpochRecord {
    fn new(epoch: usize, train_loss: f32, validation: [f32; 4], seconds: f64) -> Self {
        let [validation_loss, validation_pointwise, validation_perceptual, validation_sparsity] =
            validation;
        Self {
            epoch,
            train_loss,
            validation_loss,
            validation_pointwise,
            validation_perceptual,
            validation_sparsity,
            seconds,
        }
    }
}

/// The network with its initial weights drawn from `options.seed`.
///
/// Burn's seed is process-wide: two trainings on two threads would
/// interleave their draws and neither would be reproducible. Seeding and
/// drawing the initial weights happen under one lock; the weights are
/// drawn there, not lazily at the first forward pass, which is after it.
fn seeded_network(network: &NetworkConfig, options: &TrainOptions, device: &Device) -> Autoencoder {
    static SEEDED_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = SEEDED_INIT.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(options.seed);
    Autoencoder::new(network, device).draw_weights()
}

/// The epochs so far: their records, the best one with its weights, and
/// the progress bar.
struct EpochLog {
    bar: ProgressBar,
    history: Vec<EpochRecord>,
    best: Option<(usize, f32, Autoencoder)>,
    /// Without validation windows every epoch is the best and none stops early.
    has_validation: bool,
    patience: usize,
    min_steps: usize,
}

impl EpochLog {
    /// Records an epoch, keeps its weights (`valid`) if it is the best so
    /// far (every epoch is, without validation), and says whether to stop:
    /// no better validation loss for `patience` epochs, `min_steps` done.
    fn record(
        &mut self,
        record: EpochRecord,
        valid: impl FnOnce() -> Autoencoder,
        steps: usize,
    ) -> bool {
        let epoch = record.epoch;
        tracing::debug!(?record, "epoch done");
        self.bar.set_message(format!(
            "train {:.4} validation {:.4}",
            record.train_loss, record.validation_loss
        ));
        self.bar.inc(1);
        let improved = !self.has_validation
            || self
                .best
                .as_ref()
                .is_none_or(|(_, best_loss, _)| record.validation_loss < *best_loss);
        if improved {
            self.best = Some((epoch, record.validation_loss, valid()));
        }
        self.history.push(record);
        let best_epoch = self.best.as_ref().map(|b| b.0).unwrap_or(epoch);
        let stop =
            self.has_validation && epoch - best_epoch >= self.patience && steps >= self.min_steps;
        if stop {
            tracing::info!(
                epoch,
                best_epoch,
                steps,
                "early stop: no better validation loss for {} epochs",
                self.patience
            );
        }
        stop
    }
}

/// The epochs' progress bar (hidden unless `show`).
fn progress_bar(show: bool, max_epochs: usize) -> ProgressBar {
    let progress = if show {
        ProgressBar::new(max_epochs as u64)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} epoch {pos}/{len} [{bar:30}] {elapsed} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    progress
}

/// A batch's clean windows and their corrupted copy (noise and masking):
/// the denoising target and input.
fn batch_windows(
    data: &PreparedData,
    indices: &[usize],
    options: &TrainOptions,
    rng: &mut ChaCha8Rng,
) -> (Vec<f32>, Vec<f32>) {
    let window_size = data.window_size();
    let mut clean = Vec::with_capacity(indices.len() * window_size);
    for &i in indices {
        clean.extend_from_slice(&data.train_windows[i * window_size..(i + 1) * window_size]);
    }
    let mut corrupted = clean.clone();
    corrupt(
        &mut corrupted,
        options.loss.noise_std,
        options.loss.mask_probability,
        rng,
    );
    (clean, corrupted)
}

/// Validation loss terms `[total, pointwise, perceptual, sparsity]`, averaged over windows.
fn validate(
    network: &Autoencoder,
    loss: &HybridLoss,
    data: &PreparedData,
    device: &Device,
) -> [f32; 4] {
    const CHUNK: usize = 512;
    let window_size = data.window_size();
    let count = data.validation_count();
    let mut sums = [0.0f64; 4];
    for start in (0..count).step_by(CHUNK) {
        let end = (start + CHUNK).min(count);
        let values = data.validation_windows[start * window_size..end * window_size].to_vec();
        let clean = Tensor::<3>::from_data(
            TensorData::new(values, [end - start, data.channels.len(), data.window_len]),
            device,
        );
        let (reconstruction, latent) = network.forward(clean.clone());
        let terms = loss.terms(reconstruction, clean, latent);
        let weight = (end - start) as f64;
        for (sum, term) in sums.iter_mut().zip([
            terms.total,
            terms.pointwise,
            terms.perceptual,
            terms.sparsity,
        ]) {
            *sum += scalar(term) as f64 * weight;
        }
    }
    sums.map(|s| (s / count as f64) as f32)
}
