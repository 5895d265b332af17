//! `anomalyd eval`: measuring detection quality, on a labelled file or on NAB.

mod labelled;
mod nab;

use clap::{Args, Subcommand};

/// Options of `anomalyd eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// What to evaluate on.
    #[command(subcommand)]
    pub target: EvalTarget,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum EvalTarget {
    /// A model's AUC-PR and best F1 on a labelled CSV file (e.g. the synthetic test half).
    Labelled(labelled::LabelledArgs),
    /// The Numenta Anomaly Benchmark: a fresh model per file, every row streamed, NAB scores.
    Nab(nab::NabArgs),
}

/// Runs `anomalyd eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    match args.target {
        EvalTarget::Labelled(args) => labelled::run(args),
        EvalTarget::Nab(args) => nab::run(args),
    }
}

/// Reads and checks detector settings (the JSON of `config/detector.json`).
pub fn read_detector_config(
    path: &std::path::Path,
) -> anyhow::Result<crate::detect::DetectorConfig> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = serde_json::from_str::<crate::detect::DetectorConfig>(&text)
        .with_context(|| format!("{}: invalid detector settings", path.display()))?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: detector settings: {e}", path.display()))?;
    Ok(config)
}
