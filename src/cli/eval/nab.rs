//! `anomalyd eval nab`: runs the detector over the NAB corpus and scores it.

use crate::evaluate::nab::report::{summarise, write_report, write_results};
use crate::evaluate::nab::run::{run_corpus, NabOptions};
use crate::evaluate::nab::Corpus;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

/// Options of `anomalyd eval nab`.
#[derive(Debug, Args)]
pub struct NabArgs {
    /// The NAB folder (with `data/`, `labels/` and `config/`).
    #[arg(long)]
    pub data: PathBuf,
    /// Where results, summary and report are written.
    #[arg(long)]
    pub out: PathBuf,
    /// Detector name in the results folder and file names.
    #[arg(long, default_value = "anomalyd")]
    pub detector: String,
    /// Files processed at once (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// A JSON file with calibration and alert settings (see config/README.md);
    /// default: the built-in defaults.
    #[arg(long)]
    pub detector_config: Option<PathBuf>,
    /// Samples per window of each file's model.
    #[arg(long)]
    pub window: Option<usize>,
    /// Maximum training epochs per file.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Encoder convolution widths of each file's model, comma-separated
    /// (default: the shipped network's, as `anomalyd train`).
    #[arg(long)]
    pub widths: Option<String>,
    /// Convolution kernel size (odd) of each file's model (default: as `anomalyd train`).
    #[arg(long)]
    pub kernel_size: Option<usize>,
    /// Latent code size of each file's model (default: as `anomalyd train`).
    #[arg(long)]
    pub latent_size: Option<usize>,
    /// Retrain each file's model every N rows after the prefix, on its latest
    /// `--retrain-rows` past rows (default: never).
    #[arg(long)]
    pub retrain_every: Option<usize>,
    /// Rows a retrained model learns from.
    #[arg(long, default_value_t = 750)]
    pub retrain_rows: usize,
    /// Let alerts open during each file's probationary period (by default
    /// the detector only learns there, as NAB's rules expect).
    #[arg(long)]
    pub alerts_in_probation: bool,
    /// Only the first N files (sorted by path), for a quick look; the scores are then not NAB scores.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Runs `anomalyd eval nab`.
pub fn run(args: NabArgs) -> anyhow::Result<()> {
    // Every option is checked before the corpus is read.
    let options = options(&args)?;
    let mut corpus = Corpus::load(&args.data)?;
    if let Some(limit) = args.limit {
        corpus.files.truncate(limit);
    }
    let started = Instant::now();
    let bar = ProgressBar::new(corpus.files.len() as u64).with_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} files, eta {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let runs = run_corpus(&corpus, &options, |done, file| {
        bar.set_position(done as u64);
        bar.set_message(file.to_string());
    })?;
    bar.finish_and_clear();
    let summary = summarise(
        &corpus,
        &runs,
        &args.detector,
        started.elapsed().as_secs_f64(),
        options.workers,
        settings(&options),
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    write_results(&args.out, &args.detector, &corpus, &runs)?;
    write_report(&args.out, &summary, &corpus, &runs)?;
    let markdown = summary.markdown();
    std::fs::write(args.out.join("summary.md"), &markdown)?;
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    if args.limit.is_some() {
        println!("(--limit: a subset of the corpus; these are not NAB scores)\n");
    }
    println!("{markdown}");
    println!(
        "results: {}\nreport:  {}",
        args.out.join("results").display(),
        args.out.join("report/index.html").display()
    );
    Ok(())
}

/// The run's options: the defaults, changed by `args`.
fn options(args: &NabArgs) -> anyhow::Result<NabOptions> {
    let mut options = NabOptions::default();
    if let Some(workers) = args.workers {
        options.workers = workers.max(1);
    }
    options.retrain_every = args.retrain_every.filter(|&n| n > 0);
    options.retrain_rows = args.retrain_rows;
    options.probation_silence = !args.alerts_in_probation;
    let recipe = &mut options.recipe;
    if let Some(window) = args.window {
        recipe.window_len = window;
    }
    if let Some(epochs) = args.epochs {
        recipe.training.max_epochs = epochs;
    }
    if let Some(widths) = &args.widths {
        recipe.widths = super::super::widths_list(widths)?;
    }
    if let Some(kernel_size) = args.kernel_size {
        recipe.kernel_size = kernel_size;
    }
    if let Some(latent_size) = args.latent_size {
        recipe.latent_size = latent_size;
    }
    if let Some(path) = &args.detector_config {
        options.detector = super::read_detector_config(path)?;
    }
    Ok(options)
}

/// The settings written into the summary beside the scores.
fn settings(options: &NabOptions) -> serde_json::Value {
    let recipe = &options.recipe;
    serde_json::json!({
        "window_len": recipe.window_len,
        "max_epochs": recipe.training.max_epochs,
        "patience": recipe.training.patience,
        "widths": recipe.widths,
        "kernel_size": recipe.kernel_size,
        "latent_size": recipe.latent_size,
        "seed": recipe.training.seed,
        "retrain_every": options.retrain_every,
        "retrain_rows": options.retrain_rows,
        "probation_silence": options.probation_silence,
        "loss": recipe.training.loss,
        "detector": options.detector,
    })
}
