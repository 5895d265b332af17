//! `anomalyd demo`: the full daemon (the same code as `anomalyd run`)
//! against an in-process Kafka-protocol broker (librdkafka's mock cluster),
//! fed the synthetic sensor set at an accelerated rate. It prints alerts as
//! they open and resolve, serves `/metrics`, and ends with which injected
//! anomalies were caught or missed and how many false alarms there were.

pub mod feed;
pub mod summary;
pub mod view;

use crate::daemon::admin::metrics::Metrics;
use crate::daemon::config::{ConfigError, DaemonConfig};
use crate::daemon::{Daemon, DaemonError};
use crate::model::ModelMetadata;
use crate::series::timestamp::format_timestamp;
use crate::series::Series;
use crate::serve::{ModelError, Scorer};
use crate::synthetic::{generate, SyntheticConfig};
use rdkafka::mocking::MockCluster;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The embedded broker, or a client of it, failed.
    #[error("the embedded broker: {0}")]
    Broker(#[from] rdkafka::error::KafkaError),
    /// The demo's daemon configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The model cannot serve.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The daemon could not start, or stopped with an error.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The signal handlers could not be installed.
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
}

/// The input topic of the demo.
pub const INPUT_TOPIC: &str = "sensor-readings";
/// Partitions of the demo's input topic.
const INPUT_PARTITIONS: i32 = 6;

/// What `anomalyd demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// A model file instead of the embedded default.
    pub model: Option<PathBuf>,
    /// Seed of the synthetic data.
    pub seed: u64,
    /// Records per second.
    pub rate: f64,
    /// Admin listener address.
    pub admin: SocketAddr,
    /// Keep running after the summary until Ctrl-C.
    pub linger: bool,
    /// Detector settings instead of the defaults.
    pub detector: Option<crate::detect::DetectorConfig>,
}

/// The daemon's configuration for the demo broker.
fn demo_config(brokers: &str, admin: SocketAddr) -> Result<DaemonConfig, ConfigError> {
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "anomalyd-demo"
input_topics = ["{INPUT_TOPIC}"]
alerts_topic = "anomalyd-alerts"
scores_topic = "anomalyd-scores"
dead_letter_topic = "anomalyd-dead-letter"
commit_interval_ms = 500

[admin]
listen = "{admin}"

[shutdown]
grace_period_s = 10

# The synthetic machines follow daily cycles: calibrate on a week of
# 15-minute samples instead of the default 100 windows (measured on seed 7:
# 1 false alarm instead of 9, the same 40 of 42 anomalies caught).
[detector.calibration]
method = "likelihood"
warm_up = 672
"#
    );
    DaemonConfig::from_toml(&text, "demo config", &|_| None)
}

/// Runs the demo.
pub fn run(options: DemoOptions) -> Result<(), DemoError> {
    let started = Instant::now();
    let scorer = load_scorer(&options)?;
    let metadata = scorer.metadata().clone();
    let data = generate(&SyntheticConfig {
        channels: metadata.channels.len(),
        seed: options.seed,
        ..Default::default()
    });
    let series = data.series.clone();

    let cluster = MockCluster::new(1)?;
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic(INPUT_TOPIC, INPUT_PARTITIONS, 1)?;
    let mut config = demo_config(&brokers, options.admin)?;
    // The embedded broker cannot create topics on request: make the state topic here.
    cluster.create_topic(&config.state.topic, INPUT_PARTITIONS, 1)?;
    for topic in ["anomalyd-alerts", "anomalyd-scores", "anomalyd-dead-letter"] {
        cluster.create_topic(topic, 1, 1)?;
    }
    if let Some(detector) = &options.detector {
        config.detector = detector.clone();
    }
    let daemon = start_daemon(&options, config.clone(), scorer)?;
    daemon.handle_signals().map_err(DemoError::Signals)?;

    let records = series.iter().map(|s| s.len()).sum::<usize>() + feed::MALFORMED.len();
    print_banner(
        &options, &config, &brokers, &daemon, &metadata, &series, records,
    );
    let alerts = view::AlertView::start(&brokers, "anomalyd-alerts")?;
    let mut next_report = records / 4;
    let produced = feed::stream(&brokers, INPUT_TOPIC, &series, options.rate, |sent| {
        if sent >= next_report && sent < records {
            println!("  .. {sent} / {records} records streamed");
            next_report += records / 4;
        }
    })?;
    let metrics = daemon.metrics.clone();
    wait_until_scored(&metrics, produced);
    if !options.linger {
        daemon.controller().shutdown();
    }
    let events = alerts.finish();

    let injected = summary::injected(&data.test_part());
    let step_ms = series[0].timestamps[1] - series[0].timestamps[0];
    let slack_ms = metadata.window_len as i64 * step_ms;
    let verdict = summary::judge(&injected, &events, slack_ms);
    summary::print(&metrics, produced, &events, &injected, &verdict);
    if options.linger {
        println!(
            "\nstill running: broker {brokers}, metrics http://{}/metrics; Ctrl-C to stop",
            daemon.admin_address
        );
    }
    let finished = daemon.wait();
    println!(
        "\ndaemon stopped ({}), demo took {:.1} s",
        match &finished {
            Ok(()) => "everything in flight finished and committed".to_string(),
            Err(error) => format!("{error:#}"),
        },
        started.elapsed().as_secs_f64()
    );
    drop(cluster);
    Ok(finished?)
}

/// `--model`, or the embedded default model.
fn load_scorer(options: &DemoOptions) -> Result<Scorer, ModelError> {
    Ok(match &options.model {
        Some(path) => Scorer::load(path)?,
        None => crate::serve::embedded::default_scorer()?,
    })
}

/// Starts the daemon; when `--admin`'s port is taken, on a free port.
fn start_daemon(
    options: &DemoOptions,
    mut config: DaemonConfig,
    scorer: Scorer,
) -> Result<Daemon, DemoError> {
    match Daemon::start(config.clone(), scorer) {
        Ok(daemon) => Ok(daemon),
        Err(error) if options.admin.port() != 0 => {
            eprintln!("({error:#}; using a free port instead)");
            config.admin.listen.set_port(0);
            Ok(Daemon::start(config, load_scorer(options)?)?)
        }
        Err(error) => Err(error.into()),
    }
}

/// What the demo runs: broker, topics, metrics, model and data.
fn print_banner(
    options: &DemoOptions,
    config: &DaemonConfig,
    brokers: &str,
    daemon: &Daemon,
    metadata: &ModelMetadata,
    series: &[Series],
    records: usize,
) {
    let step_ms = series[0].timestamps[1] - series[0].timestamps[0];
    println!("anomalyd demo");
    println!("  embedded Kafka broker  {brokers}   (e.g. kcat -b {brokers} -C -t anomalyd-alerts)");
    println!(
        "  topics                 {INPUT_TOPIC} ({INPUT_PARTITIONS} partitions) -> anomalyd-alerts, anomalyd-scores, anomalyd-dead-letter"
    );
    println!(
        "  metrics                http://{}/metrics   (also /healthz, /readyz)",
        daemon.admin_address
    );
    println!(
        "  model                  {} ({} channels x {} samples)",
        metadata.model_version,
        metadata.channels.len(),
        metadata.window_len
    );
    println!(
        "  data                   {} machines x {} samples ({} to {}, every {} min), anomalies injected in the second half; {} malformed records mixed in",
        series.len(),
        series[0].len(),
        format_timestamp(series[0].timestamps[0]),
        format_timestamp(*series[0].timestamps.last().expect("rows")),
        step_ms / 60_000,
        feed::MALFORMED.len()
    );
    println!(
        "  streaming {records} records at {:.0}/s; the first {} windows of each machine calibrate (warm-up)\n",
        options.rate,
        config.detector.calibration.warm_up()
    );
}

/// Waits (at most 2 minutes) until the daemon has read every record and
/// the count of scored windows stops moving.
fn wait_until_scored(metrics: &Metrics, produced: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while (metrics.records_consumed.get() as usize) < produced && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut last = u64::MAX;
    while metrics.windows_scored.get() != last && Instant::now() < deadline {
        last = metrics.windows_scored.get();
        std::thread::sleep(Duration::from_millis(700));
    }
}
