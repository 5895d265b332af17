//! `anomalyd eval labelled`: detection quality of a model on a labelled CSV file.

use crate::evaluate::{quality, score_labelled};
use crate::series::{read_series, ReadOptions};
use crate::serve::Scorer;
use clap::Args;
use std::path::PathBuf;

/// Options of `anomalyd eval labelled`.
#[derive(Debug, Args)]
pub struct LabelledArgs {
    /// The model's ONNX file.
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled CSV (e.g. `test.csv` from `anomalyd generate`).
    #[arg(long)]
    pub input: PathBuf,
    /// Column with the label (empty = normal).
    #[arg(long, default_value = "anomaly")]
    pub label_column: String,
    /// Column naming the entity.
    #[arg(long, default_value = "entity")]
    pub entity_column: String,
    /// Evaluate every n-th window.
    #[arg(long, default_value_t = 4)]
    pub stride: usize,
}

/// Runs `anomalyd eval labelled`.
pub fn run(args: LabelledArgs) -> anyhow::Result<()> {
    let scorer = Scorer::load(&args.model)?;
    let series = read_series(
        &args.input,
        &ReadOptions {
            entity_column: Some(args.entity_column.clone()),
            label_column: Some(args.label_column.clone()),
            channels: Some(scorer.metadata().channels.clone()),
            ..Default::default()
        },
    )?;
    let scored = score_labelled(&scorer, &series, args.stride)?;
    println!(
        "{:<20} {:>9} {:>9} {:>8} {:>8}",
        "anomaly", "positive", "negative", "AUC-PR", "best F1"
    );
    for q in quality(&scored) {
        println!(
            "{:<20} {:>9} {:>9} {:>8.3} {:>8.3}",
            q.kind, q.positives, q.negatives, q.auc_pr, q.best_f1
        );
    }
    Ok(())
}
