//! The command line: one subcommand per job, each in its own file.

mod ablation;
mod demo;
pub mod detect;
pub mod eval;
mod generate;
pub mod run;
mod score;
mod train;

use clap::{Parser, Subcommand};

/// anomalyd: streaming time-series anomaly detection with a denoising autoencoder.
#[derive(Debug, Parser)]
#[command(name = "anomalyd", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `anomalyd=debug`.
    #[arg(long, global = true, env = "ANOMALYD_LOG", default_value = "info")]
    pub log: String,
    /// The job to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The jobs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the self-contained demo on the embedded default model and generated data.
    Demo(demo::DemoArgs),
    /// Write the synthetic multichannel sensor data set (train and labelled test CSV).
    Generate(generate::GenerateArgs),
    /// Train a denoising autoencoder on a CSV or JSON lines file and export it to ONNX.
    Train(train::TrainArgs),
    /// Score every row of a file with a model: the score of the window ending at that row.
    Score(score::ScoreArgs),
    /// Run the daemon's detector over a file: per-row decisions and the alerts the daemon would send.
    Detect(detect::DetectArgs),
    /// Measure detection quality: on a labelled file, or on the NAB benchmark.
    Eval(eval::EvalArgs),
    /// Run the daemon: Kafka records in, alerts, scores and metrics out.
    Run(run::RunArgs),
    /// Check a daemon config file and its model; exits 64 naming the bad key.
    CheckConfig(run::CheckConfigArgs),
    /// Train every loss variant on the synthetic set and compare their detection quality.
    Ablation(ablation::AblationArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Train(args) => train::run(args),
        Command::Score(args) => score::run(args),
        Command::Detect(args) => detect::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Ablation(args) => ablation::run(args),
        Command::Run(args) => run::run(args),
        Command::CheckConfig(args) => run::check_config(args),
    }
}

/// Splits a comma-separated list argument.
/// Encoder widths from `--widths` ("16,32").
fn widths_list(text: &str) -> anyhow::Result<Vec<usize>> {
    use anyhow::Context;
    comma_list(text)
        .iter()
        .map(|w| {
            w.parse::<usize>()
                .with_context(|| format!("--widths: {w:?} is not a whole number"))
        })
        .collect()
}

fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}
