//! `anomalyd demo`: the daemon on an embedded Kafka-protocol broker, fed the
//! synthetic sensor set; see [`crate::demo`].

use crate::demo::DemoOptions;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Options of `anomalyd demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Use this model instead of the embedded default (its channels must be generator channels).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Seed of the generated data. The default model was trained on the clean
    /// first half of seed 7's machines; another seed makes machines it has never seen.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Records per second streamed into the input topic (the 28 days of
    /// 15-minute samples of 6 machines are 16,128 records).
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Admin listener (/metrics, /healthz, /readyz); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub admin: SocketAddr,
    /// Calibration and alert settings (JSON, the keys of config/detector.json)
    /// instead of the daemon's defaults.
    #[arg(long)]
    pub detector_config: Option<PathBuf>,
    /// Keep the broker and daemon running after the summary until Ctrl-C
    /// (to look at the topics and metrics at leisure).
    #[arg(long)]
    pub linger: bool,
}

/// Runs `anomalyd demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let options = DemoOptions {
        model: args.model,
        seed: args.seed,
        rate: args.rate,
        admin: args.admin,
        linger: args.linger,
        detector: args
            .detector_config
            .as_deref()
            .map(crate::cli::eval::read_detector_config)
            .transpose()?,
    };
    // A daemon error as itself, so that a fatal one keeps its exit code.
    crate::demo::run(options).map_err(|error| match error {
        crate::demo::DemoError::Daemon(daemon) => anyhow::Error::new(daemon),
        other => other.into(),
    })
}
