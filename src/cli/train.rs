//! `anomalyd train`: trains a model on a file and writes the ONNX artefact, metadata and loss curve.

use super::comma_list;
use crate::export::write_artefact;
use crate::model::PerceptualFeatures;
use crate::recipe::{default_loss, ModelRecipe};
use crate::series::{read_series, ReadOptions};
use crate::train::curve;
use crate::train::TrainingBackend;
use clap::Args;
use std::path::PathBuf;

/// Options of `anomalyd train`. Defaults are those of the shipped model.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training data: CSV with a header (timestamp + numeric columns) or JSON lines (`.jsonl`).
    #[arg(long)]
    pub input: PathBuf,
    /// Folder to write `<name>.onnx`, `<name>.json`, `<name>.loss.csv` and `<name>.loss.svg` to.
    #[arg(long, default_value = "models")]
    pub out_dir: PathBuf,
    /// Model name (file stem).
    #[arg(long, default_value = "model")]
    pub name: String,
    /// Channels to use, comma-separated, in model order (default: every
    /// numeric column but one named like a label: anomaly, label, target, ...).
    #[arg(long)]
    pub channels: Option<String>,
    /// Timestamp column.
    #[arg(long, default_value = "timestamp")]
    pub timestamp_column: String,
    /// Column naming the entity; windows never span two entities.
    #[arg(long)]
    pub entity_column: Option<String>,
    /// Samples per window (a multiple of 2^number of widths).
    #[arg(long, default_value_t = 64)]
    pub window_len: usize,
    /// Stride between training windows.
    #[arg(long, default_value_t = 1)]
    pub train_stride: usize,
    /// Stride suggested for streaming, stored in the metadata.
    #[arg(long, default_value_t = 8)]
    pub default_stride: usize,
    /// Latest fraction of each entity's rows used for validation (time-ordered
    /// split); 0 = none: no early stopping, the last weights are kept.
    #[arg(long, default_value_t = 0.2)]
    pub validation_fraction: f64,
    /// Encoder convolution widths, comma-separated.
    #[arg(long, default_value = "16,32")]
    pub widths: String,
    /// Convolution kernel size (odd).
    #[arg(long, default_value_t = 5)]
    pub kernel_size: usize,
    /// Latent code size.
    #[arg(long, default_value_t = 16)]
    pub latent_size: usize,
    /// Weight a of the pointwise MSE term.
    #[arg(long, default_value_t = default_loss().pointwise_weight)]
    pub pointwise_weight: f32,
    /// Weight b of the perceptual term.
    #[arg(long, default_value_t = default_loss().perceptual_weight)]
    pub perceptual_weight: f32,
    /// Weight c of the latent L1 sparsity term.
    #[arg(long, default_value_t = default_loss().sparsity_weight)]
    pub sparsity_weight: f32,
    /// Frozen feature extractor of the perceptual term.
    #[arg(long, value_enum, default_value_t = default_loss().perceptual_features)]
    pub perceptual_features: PerceptualFeatures,
    /// Std of the Gaussian corruption in normalised units (0 = off).
    #[arg(long, default_value_t = default_loss().noise_std)]
    pub noise_std: f32,
    /// Probability of masking a sample (0 = off).
    #[arg(long, default_value_t = default_loss().mask_probability)]
    pub mask_probability: f32,
    /// Windows per mini-batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub learning_rate: f64,
    /// Maximum epochs.
    #[arg(long, default_value_t = 40)]
    pub max_epochs: usize,
    /// Early stopping: epochs without a better validation loss.
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Fewest optimiser steps (mini-batches) before early stopping; more
    /// epochs than --max-epochs run if that is what it takes.
    #[arg(long, default_value_t = 500)]
    pub min_steps: usize,
    /// Seed of initialisation, shuffling and corruption.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Burn CPU backend.
    #[arg(long, value_enum, default_value_t = TrainingBackend::Flex)]
    pub backend: TrainingBackend,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `anomalyd train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let recipe = recipe(&args)?;
    let series = read_series(
        &args.input,
        &ReadOptions {
            timestamp_column: args.timestamp_column.clone(),
            entity_column: args.entity_column.clone(),
            channels: args.channels.as_deref().map(comma_list),
            label_column: None,
        },
    )?;
    let source = args
        .input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let built = recipe.build(&series, &source)?;
    let onnx_path = write_artefact(&built.artefact, &args.out_dir)?;
    let curve_csv = args.out_dir.join(format!("{}.loss.csv", args.name));
    let curve_svg = args.out_dir.join(format!("{}.loss.svg", args.name));
    curve::write_csv(&built.trained.history, &curve_csv)?;
    curve::write_svg(
        &built.trained.history,
        &format!("{}: hybrid loss per epoch", args.name),
        &curve_svg,
    )?;
    print_summary(&built, &onnx_path, &curve_csv, &curve_svg);
    Ok(())
}

/// The recipe the arguments describe, checked.
fn recipe(args: &TrainArgs) -> anyhow::Result<ModelRecipe> {
    if !(0.0..1.0).contains(&args.validation_fraction) {
        anyhow::bail!(
            "--validation-fraction must be in [0, 1), got {}",
            args.validation_fraction
        );
    }
    if args.batch_size == 0
        || args.max_epochs == 0
        || args.train_stride == 0
        || args.default_stride == 0
    {
        anyhow::bail!(
            "--batch-size, --max-epochs, --train-stride and --default-stride must be at least 1"
        );
    }
    let widths = super::widths_list(&args.widths)?;
    Ok(ModelRecipe {
        name: args.name.clone(),
        window_len: args.window_len,
        train_stride: args.train_stride,
        default_stride: args.default_stride,
        validation_fraction: args.validation_fraction,
        widths,
        kernel_size: args.kernel_size,
        latent_size: args.latent_size,
        training: crate::train::TrainOptions {
            loss: crate::model::LossConfig {
                pointwise_weight: args.pointwise_weight,
                perceptual_weight: args.perceptual_weight,
                sparsity_weight: args.sparsity_weight,
                perceptual_features: args.perceptual_features,
                noise_std: args.noise_std,
                mask_probability: args.mask_probability,
            },
            batch_size: args.batch_size,
            learning_rate: args.learning_rate,
            max_epochs: args.max_epochs,
            patience: args.patience,
            min_steps: args.min_steps,
            seed: args.seed,
            backend: args.backend,
            progress: !args.quiet,
        },
    })
}

/// What was trained and where it was written.
fn print_summary(
    built: &crate::recipe::BuiltModel,
    onnx_path: &std::path::Path,
    curve_csv: &std::path::Path,
    curve_svg: &std::path::Path,
) {
    let metadata = &built.artefact.metadata;
    let per_epoch: f64 = built.trained.history.iter().map(|r| r.seconds).sum::<f64>()
        / built.trained.history.len() as f64;
    println!(
        "model      {} ({})",
        onnx_path.display(),
        metadata.model_version
    );
    println!("channels   {}", metadata.channels.join(", "));
    println!(
        "windows    {} train, {} validation ({} x {})",
        metadata.training.train_windows,
        metadata.training.validation_windows,
        metadata.channels.len(),
        metadata.window_len
    );
    match metadata.training.best_validation_loss {
        Some(loss) => println!(
            "training   {} epochs, {} optimiser steps (best epoch {}), validation loss {loss:.5}, {:.1} s ({:.2} s/epoch on {})",
            metadata.training.epochs_run,
            built.trained.steps,
            metadata.training.best_epoch,
            metadata.training.seconds,
            per_epoch,
            metadata.training.backend
        ),
        None => println!(
            "training   {} epochs, {} optimiser steps, no validation split: no early stopping, the last weights kept; {:.1} s on {}",
            metadata.training.epochs_run,
            built.trained.steps,
            metadata.training.seconds,
            metadata.training.backend
        ),
    }
    let scores = &metadata.validation_scores;
    if scores.quantiles.is_empty() {
        println!(
            "quantiles  not written: {} validation windows, fewer than the {} they need; the detector calibrates each entity online (calibration.warm_up)",
            scores.count,
            crate::export::artefact::MIN_QUANTILE_WINDOWS
        );
    }
    println!(
        "loss curve {} and {}",
        curve_csv.display(),
        curve_svg.display()
    );
}
