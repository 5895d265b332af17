//! `anomalyd demo`: the self-contained main job. Generates the synthetic
//! sensor set, streams its labelled half row by row through window assembly
//! and the embedded default model, and reports what stands out.
//!
//! Today the demo runs the offline path; the Kafka daemon demo (embedded
//! broker, alerts topic, metrics) replaces it when the daemon lands.

use crate::evaluate::quality;
use crate::evaluate::synthetic::LabelledScores;
use crate::model::ModelMetadata;
use crate::series::timestamp::format_timestamp;
use crate::serve::Scorer;
use crate::synthetic::{generate, SyntheticConfig};
use crate::window::{Window, WindowAssembler};
use clap::Args;
use std::path::PathBuf;

/// The default model, embedded so the demo needs no files.
const DEFAULT_ONNX: &[u8] = include_bytes!("../../models/default.onnx");
/// The default model's metadata.
const DEFAULT_METADATA: &str = include_str!("../../models/default.json");

/// Options of `anomalyd demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Use this model instead of the embedded default (its channels must be generator channels).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Seed of the generated data. The default model was trained on the clean
    /// first half of seed 7's machines; another seed makes other machines,
    /// which that model has never seen.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Number of top-scoring windows to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

/// Loads the embedded default model.
pub fn default_scorer() -> anyhow::Result<Scorer> {
    let metadata = ModelMetadata::from_json(DEFAULT_METADATA, "embedded models/default.json")?;
    Ok(Scorer::from_parts(
        DEFAULT_ONNX,
        metadata,
        "embedded models/default.onnx",
    )?)
}

/// One scored window, remembered for the report.
struct Scored {
    entity: String,
    window: Window,
    score: f32,
    top_channel: usize,
    /// The sample of the top channel furthest from its reconstruction: (index, actual, expected).
    worst_sample: (usize, f32, f32),
    label: String,
}

/// Runs `anomalyd demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let scorer = match &args.model {
        Some(path) => Scorer::load(path)?,
        None => default_scorer()?,
    };
    let metadata = scorer.metadata();
    let channels = metadata.channels.len();
    let data = generate(&SyntheticConfig {
        channels,
        seed: args.seed,
        ..Default::default()
    });
    let test = data.test_part();
    println!(
        "anomalyd demo: model {} ({} channels x {} samples), {} entities, {} rows each, stride {}",
        scorer.model_version(),
        channels,
        metadata.window_len,
        test.len(),
        test[0].len(),
        metadata.default_stride
    );

    // Stream each entity's rows in time order, as the daemon will.
    let started = std::time::Instant::now();
    let mut scored = Vec::new();
    for series in &test {
        let columns = scorer.map_channels(&series.channels)?;
        let labels = series.labels.as_ref().expect("generated data is labelled");
        let mut assembler =
            WindowAssembler::new(channels, metadata.window_len, metadata.default_stride);
        let mut windows = Vec::new();
        let mut window_labels = Vec::new();
        let mut row_values = vec![0.0f32; channels];
        for row in 0..series.len() {
            for (slot, &column) in row_values.iter_mut().zip(&columns) {
                *slot = series.row(row)[column];
            }
            if let Some(window) = assembler.push(series.timestamps[row], &row_values) {
                let start = row + 1 - metadata.window_len;
                let mut kinds: Vec<&str> = labels[start..=row]
                    .iter()
                    .filter(|l| !l.is_empty())
                    .map(|s| s.as_str())
                    .collect();
                kinds.dedup();
                window_labels.push(kinds.join("+"));
                windows.push(window);
            }
        }
        for (batch, batch_labels) in windows.chunks(256).zip(window_labels.chunks(256)) {
            for ((window, score), label) in batch
                .iter()
                .zip(scorer.score_windows(batch)?)
                .zip(batch_labels)
            {
                let top_channel = score
                    .channel_contributions
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                let len = metadata.window_len;
                let actual = &window.values[top_channel * len..(top_channel + 1) * len];
                let expected = &score.reconstruction[top_channel * len..(top_channel + 1) * len];
                let worst = (0..len)
                    .max_by(|&a, &b| {
                        (actual[a] - expected[a])
                            .abs()
                            .total_cmp(&(actual[b] - expected[b]).abs())
                    })
                    .unwrap_or(len - 1);
                scored.push(Scored {
                    entity: series.entity.clone(),
                    window: window.clone(),
                    score: score.score,
                    top_channel,
                    worst_sample: (worst, actual[worst], expected[worst]),
                    label: label.clone(),
                });
            }
        }
    }
    let elapsed = started.elapsed();

    // The quality table comes from the windows just streamed: no second scoring pass.
    let quality = quality(&LabelledScores {
        scores: scored.iter().map(|s| s.score).collect(),
        labels: scored
            .iter()
            .map(|s| {
                let mut kinds: Vec<String> = s
                    .label
                    .split('+')
                    .filter(|k| !k.is_empty())
                    .map(String::from)
                    .collect();
                kinds.sort();
                kinds.dedup();
                kinds
            })
            .collect(),
    });
    println!("\nhow well each anomaly kind stands out (windows containing it vs clean windows):");
    println!(
        "  {:<20} {:>8} {:>8} {:>9}",
        "anomaly", "AUC-PR", "best F1", "windows"
    );
    for q in &quality {
        println!(
            "  {:<20} {:>8.3} {:>8.3} {:>9}",
            q.kind, q.auc_pr, q.best_f1, q.positives
        );
    }

    scored.sort_by(|a, b| b.score.total_cmp(&a.score));
    println!("\ntop {} windows by score:", args.top);
    println!(
        "  {:<11} {:<20} {:>8}  {:<12} {:<20} {:>9} {:>9}  label",
        "entity", "window end", "score", "top channel", "worst sample at", "actual", "expected"
    );
    let step_ms = (test[0].timestamps[1] - test[0].timestamps[0]).max(1);
    for s in scored.iter().take(args.top) {
        let (index, actual, expected) = s.worst_sample;
        let at = s.window.end_ms - (metadata.window_len - 1 - index) as i64 * step_ms;
        println!(
            "  {:<11} {:<20} {:>8.4}  {:<12} {:<20} {:>9.2} {:>9.2}  {}",
            s.entity,
            format_timestamp(s.window.end_ms),
            s.score,
            metadata.channels[s.top_channel],
            format_timestamp(at),
            actual,
            expected,
            if s.label.is_empty() {
                "(normal)"
            } else {
                &s.label
            }
        );
    }
    let normal: Vec<f32> = scored
        .iter()
        .filter(|s| s.label.is_empty())
        .map(|s| s.score)
        .collect();
    println!(
        "\nscored {} windows in {:.0} ms ({:.0} windows/s); normal windows score {:.4} on average, the model's validation median is {:.4}",
        scored.len(),
        elapsed.as_secs_f64() * 1e3,
        scored.len() as f64 / elapsed.as_secs_f64(),
        normal.iter().sum::<f32>() / normal.len().max(1) as f32,
        metadata.validation_scores.quantiles.iter().find(|q| q.q == 0.5).map(|q| q.score).unwrap_or(f32::NAN)
    );
    Ok(())
}
