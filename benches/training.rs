//! Training speed: seconds per epoch of `anomalyd train`'s loop (Burn, the
//! default backend and recipe) on the default model's data: the generated
//! machines' anomaly-free half, 5 channels, window 64, stride 1, batch 64.
//! Prints one JSON line per epoch (the epoch's training batches, as
//! `EpochRecord::seconds` counts them; validation is not included).
//!
//! `--write DIR` also writes what `benches/pytorch_training.py` needs to
//! train the same network with the same loss on the same windows: the
//! normalised training and validation windows and the frozen feature
//! matrix (f32 little-endian) and their shapes (`shapes.json`).
//! `benches/training.sh` runs both in alternation and prints the ratio.
//! Alone: `cargo bench --bench training -- [--epochs N] [--write DIR]`.

use anomalyd::model::FeatureExtractor;
use anomalyd::recipe::ModelRecipe;
use anomalyd::synthetic::{generate, SyntheticConfig};
use anomalyd::train::{train, TrainOptions};
use std::path::PathBuf;

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn main() -> anyhow::Result<()> {
    let mut epochs = 3;
    let mut write: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--epochs" => epochs = args.next().unwrap_or_default().parse()?,
            "--write" => write = args.next().map(PathBuf::from),
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    // The default model's recipe and data (models/README.md).
    let recipe = ModelRecipe::default();
    let series = generate(&SyntheticConfig::default()).clean_part();
    let data = recipe.prepare(&series)?;
    let network = recipe.network(data.channels.len());
    if let Some(dir) = &write {
        std::fs::create_dir_all(dir)?;
        let features =
            FeatureExtractor::new(recipe.training.loss.perceptual_features, data.window_len);
        std::fs::write(dir.join("train.f32"), f32_bytes(&data.train_windows))?;
        std::fs::write(
            dir.join("validation.f32"),
            f32_bytes(&data.validation_windows),
        )?;
        std::fs::write(dir.join("features.f32"), f32_bytes(features.matrix()))?;
        let shapes = serde_json::json!({
            "channels": data.channels.len(),
            "window_len": data.window_len,
            "train_windows": data.train_count(),
            "validation_windows": data.validation_count(),
            "feature_columns": features.columns(),
            "widths": recipe.widths,
            "kernel_size": recipe.kernel_size,
            "latent_size": recipe.latent_size,
            "batch_size": recipe.training.batch_size,
            "learning_rate": recipe.training.learning_rate,
            "loss": recipe.training.loss,
        });
        std::fs::write(dir.join("shapes.json"), shapes.to_string())?;
    }
    let trained = train(
        &data,
        &network,
        &TrainOptions {
            max_epochs: epochs,
            patience: epochs,
            min_steps: 0,
            progress: false,
            ..recipe.training.clone()
        },
    )
    .map_err(anyhow::Error::msg)?;
    for record in &trained.history {
        println!(
            "{{\"engine\": \"burn {}\", \"epoch\": {}, \"train_windows\": {}, \"seconds\": {:.3}, \"train_loss\": {:.5}, \"validation_loss\": {:.5}}}",
            recipe.training.backend,
            record.epoch,
            data.train_count(),
            record.seconds,
            record.train_loss,
            record.validation_loss
        );
    }
    Ok(())
}
