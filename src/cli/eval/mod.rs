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
