//! `anomalyd eval labelled`: the daemon's detector over a labelled file
//! (`anomalyd detect`'s path), measured against the labels.

use crate::cli::detect::{create, describe, summary_text, DetectInput};
use crate::evaluate::labelled::report::{markdown, write_report, Context};
use crate::evaluate::labelled::score::measure;
use crate::evaluate::labelled::Collector;
use crate::offline::output::FileResults;
use crate::offline::Detection;
use clap::Args;
use std::path::PathBuf;

/// Options of `anomalyd eval labelled`.
#[derive(Debug, Args)]
pub struct LabelledArgs {
    /// Input, model and detector, as for `anomalyd detect`.
    #[command(flatten)]
    pub input: DetectInput,
    /// The label column: 0/1, true/false, or anomaly kinds (empty or `normal` = normal).
    #[arg(long, default_value = "anomaly")]
    pub label_column: String,
    /// The label values that mean normal, comma-separated (every other value
    /// is an anomaly); needed only when the values could mean either.
    #[arg(long, value_delimiter = ',')]
    pub normal_values: Option<Vec<String>>,
    /// Rows after an event's start within which an alert still catches it.
    #[arg(long, default_value_t = 10)]
    pub tolerance: usize,
    /// Folder for `summary.json`, `rows.csv`, `alerts.jsonl` and `report/index.html`.
    #[arg(long, default_value = "eval-labelled")]
    pub out: PathBuf,
}

/// Runs `anomalyd eval labelled`.
pub fn run(args: LabelledArgs) -> anyhow::Result<()> {
    let mut prepared = args.input.prepare(Some(&args.label_column))?;
    std::fs::create_dir_all(&args.out)?;
    eprintln!("{}", describe(&prepared));
    let channels = prepared.scorer.metadata().channels.clone();
    let mut files = FileResults::new(
        create(&args.out.join("rows.csv"))?,
        Some(create(&args.out.join("alerts.jsonl"))?),
        &channels,
    )?;
    let mut collector = Collector::new(&mut files, channels.len());
    let progress = args.input.progress(&prepared.table);
    let warm_up = prepared.settings.detector.calibration.warm_up();
    let threshold = prepared.settings.detector.alerts.threshold;
    let summary = Detection::new(&prepared.scorer, prepared.settings.clone()).run(
        &mut prepared.table,
        &mut prepared.decoder,
        &mut collector,
        &progress,
    )?;
    progress.finish_and_clear();
    let Collector {
        entities, labels, ..
    } = collector;
    files.finish()?;
    eprint!("{}", summary_text(&summary, warm_up));
    let rule = labels
        .rule(&args.label_column, args.normal_values.as_deref())
        .map_err(anyhow::Error::msg)?;
    let kinds = labels.kinds_by_id(&rule);
    let quality = measure(&entities, &kinds, args.tolerance);
    let context = Context {
        input: prepared.table.name(),
        model_version: prepared.scorer.model_version(),
        label_rule: &rule.description,
        threshold,
        channels: &channels,
    };
    let text = markdown(&quality, &context, entities.len());
    println!("{text}");
    let json = serde_json::json!({
        "input": context.input,
        "model_version": context.model_version,
        "labels": rule.description,
        "threshold": threshold,
        "detection": summary,
        "quality": quality,
    });
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    let report = args.out.join("report");
    write_report(&report, &text, &quality, &entities, &kinds, &context)?;
    println!(
        "wrote {}/summary.json, rows.csv, alerts.jsonl and {}",
        args.out.display(),
        report.join("index.html").display()
    );
    Ok(())
}
