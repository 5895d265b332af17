//! `anomalyd run` and `anomalyd check-config`: the daemon from a config file.

use crate::daemon::config::{ConfigError, DaemonConfig};
use crate::daemon::failure::{Fatal, FatalKind};
use crate::daemon::Daemon;
use crate::serve::Scorer;
use clap::Args;
use std::path::PathBuf;

/// A configuration that was refused: the process exits with status 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadConfig(pub String);

/// Options of `anomalyd run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The TOML config (every key: config/anomalyd.toml).
    #[arg(long, short)]
    pub config: PathBuf,
}

/// Options of `anomalyd check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The TOML config to check.
    pub config: PathBuf,
}

fn load(path: &std::path::Path) -> anyhow::Result<DaemonConfig> {
    DaemonConfig::load(path).map_err(|error| match error {
        ConfigError::Read { .. } => anyhow::Error::new(error),
        other => anyhow::Error::new(BadConfig(other.to_string())),
    })
}

/// Loads the configured model (or the embedded default), refusing a bad one.
pub fn load_model(config: &DaemonConfig) -> anyhow::Result<Scorer> {
    Ok(match &config.model.path {
        Some(path) => Scorer::load(path)?,
        None => crate::serve::embedded::default_scorer()?,
    })
}

/// Runs `anomalyd check-config`: parses and validates, loads the model, prints a summary.
pub fn check_config(args: CheckConfigArgs) -> anyhow::Result<()> {
    let config = load(&args.config)?;
    crate::daemon::clients::check(&config).map_err(|e| BadConfig(format!("{e:#}")))?;
    let scorer = load_model(&config).map_err(|e| BadConfig(format!("model: {e:#}")))?;
    println!("{}: OK", args.config.display());
    println!("{}", config.describe());
    println!(
        "model version {} ({} channels x {} samples)",
        scorer.model_version(),
        scorer.metadata().channels.len(),
        scorer.metadata().window_len
    );
    Ok(())
}

/// Runs `anomalyd run` until SIGTERM or SIGINT; SIGHUP reloads the model.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = load(&args.config)?;
    crate::daemon::clients::check(&config).map_err(|e| BadConfig(format!("{e:#}")))?;
    let scorer = load_model(&config).map_err(|error| {
        anyhow::Error::new(Fatal::new(FatalKind::Model, format!("model: {error:#}")))
    })?;
    tracing::info!("config {}:\n{}", args.config.display(), config.describe());
    let daemon = Daemon::start(config, scorer)?;
    daemon.handle_signals()?;
    daemon.wait()?;
    tracing::info!("anomalyd stopped: everything in flight finished and committed");
    Ok(())
}
