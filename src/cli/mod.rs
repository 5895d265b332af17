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

/// Splits a comma-separated list argument.
fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// One line for a command's error: the error, then each cause whose text
/// it does not already hold (many errors name their source in their own
/// message, and `{:#}` would print it twice).
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::error_line;
    use anyhow::Context;

    #[test]
    fn an_error_line_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read x.csv: {source}")]
        struct Read {
            source: std::io::Error,
        }
        let named: anyhow::Error = Read { source: io }.into();
        assert_eq!(error_line(&named), "cannot read x.csv: no such file");
        let wrapped = Err::<(), _>(named).context("loading the data").unwrap_err();
        assert_eq!(
            error_line(&wrapped),
            "loading the data: cannot read x.csv: no such file"
        );
        let plain = Err::<(), _>(std::io::Error::other("disk full"))
            .context("writing scores")
            .unwrap_err();
        assert_eq!(error_line(&plain), "writing scores: disk full");
    }
}
